//! spin.toml is run under Spin elsewhere, never here: these checks keep it
//! consistent with what the components need, so that `spin up` (on any
//! `--listen` address) runs the documented examples.

use std::collections::BTreeMap;
use toml::Value;

fn manifest() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/spin.toml")).unwrap();
    text.parse().expect("spin.toml is TOML")
}

fn component<'a>(m: &'a Value, name: &str) -> &'a Value {
    &m["component"][name]
}

fn environment(m: &Value, name: &str) -> BTreeMap<String, String> {
    component(m, name)
        .get("environment")
        .and_then(Value::as_table)
        .map(|t| t.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned())).collect())
        .unwrap_or_default()
}

#[test]
fn the_coordinator_reaches_the_workers_by_name_whatever_the_listen_address() {
    let m = manifest();
    let env = environment(&m, "coordinator");
    let allowed: Vec<&str> = component(&m, "coordinator")["allowed_outbound_hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let routes: Vec<(&str, &str)> = m["trigger"]["http"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["route"].as_str().unwrap(), t["component"].as_str().unwrap()))
        .collect();
    for (variable, worker, path) in
        [("FANOUT_SCRAPE_URL", "scrape", "/scrape"), ("FANOUT_TRANSFORM_URL", "transform", "/transform")]
    {
        let url = url::Url::parse(&env[variable]).unwrap();
        // Local service chaining: a component by name, no address to get wrong.
        assert_eq!(url.host_str(), Some(format!("{worker}.spin.internal").as_str()), "{variable}");
        assert_eq!(url.path(), path, "{variable}: the worker answers on this path only");
        let origin = format!("{}://{}", url.scheme(), url.host_str().unwrap());
        assert!(allowed.contains(&origin.as_str()), "{origin} must be in the coordinator's allowed_outbound_hosts");
        assert!(component(&m, worker).get("source").is_some(), "component {worker} exists");
        assert!(routes.contains(&(path, worker)), "{path} is routed to {worker}");
    }
}

#[test]
fn scrape_jobs_are_checked_against_the_scrape_workers_own_limits() {
    let m = manifest();
    let (coordinator, scrape) = (environment(&m, "coordinator"), environment(&m, "scrape"));
    for (variable, value) in &scrape {
        assert_eq!(coordinator.get(variable), Some(value), "the coordinator checks scrape jobs with {variable}");
    }
    // The README's POST /scrape example asks for this concurrency.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let asked: u64 = readme
        .split("\"concurrency\": ")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let limit: u64 = scrape["FANOUT_SCRAPE_CONCURRENCY"].parse().unwrap();
    assert!(asked <= limit, "the README asks for concurrency {asked}, over spin.toml's {limit}");
}
