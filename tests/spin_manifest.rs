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

/// The settings component `name` reads, as spin.toml gives them by default: each component variable is
/// `{{ the application variable of the same name }}`, whose default this is.
fn settings(m: &Value, name: &str) -> BTreeMap<String, String> {
    let component_vars = component(m, name)["variables"].as_table().expect("the component has variables");
    component_vars
        .iter()
        .map(|(k, v)| {
            assert_eq!(v.as_str(), Some(format!("{{{{ {k} }}}}").as_str()), "{name}: {k} is the application's {k}");
            (k.clone(), m["variables"][k.as_str()]["default"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// Every setting is an application variable, handed to every component, so that `spin up --variable`,
/// `SPIN_VARIABLE_*`, a SpinKube Secret or the managed host's variables reach it; credentials are secrets.
#[test]
fn every_setting_is_a_variable_of_every_component() {
    let m = manifest();
    let want: Vec<String> = fanout::config::Config::settings().iter().map(|s| s.to_ascii_lowercase()).collect();
    let mut declared: Vec<String> = m["variables"].as_table().unwrap().keys().cloned().collect();
    let mut sorted = want.clone();
    sorted.sort();
    declared.sort();
    assert_eq!(declared, sorted, "spin.toml's [variables] against the settings the components read");
    for name in ["scrape", "transform", "coordinator"] {
        let got: Vec<String> = settings(&m, name).into_keys().collect();
        assert_eq!(got, sorted, "component {name}'s variables");
    }
    for (k, v) in m["variables"].as_table().unwrap() {
        let secret = v.get("secret").and_then(Value::as_bool).unwrap_or(false);
        let credential =
            k.ends_with("token") || k.starts_with("fanout_s3_") && k.ends_with("_key") || k.ends_with("_key_id");
        assert_eq!(secret, credential, "{k}: secret = {secret}");
    }
}

#[test]
fn the_coordinator_reaches_the_workers_by_name_whatever_the_listen_address() {
    let m = manifest();
    let env = settings(&m, "coordinator");
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
        [("fanout_scrape_url", "scrape", "/scrape"), ("fanout_transform_url", "transform", "/transform")]
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

/// The README's `POST /scrape` example runs under spin.toml's limits.
#[test]
fn the_readme_asks_for_no_more_than_spin_tomls_limits() {
    let scrape = settings(&manifest(), "scrape");
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
    let limit: u64 = scrape["fanout_scrape_concurrency"].parse().unwrap();
    assert!(asked <= limit, "the README asks for concurrency {asked}, over spin.toml's {limit}");
}
