//! deploy/spinkube/ is applied to clusters elsewhere, never here: these checks
//! keep its manifests valid against the `SpinApp` CRD's schema (kept beside the
//! repository in `../shared/spinkube/`; the schema check is skipped, with a
//! line saying so, where it is absent) and consistent with spin.toml: they name
//! only its components and variables, take every credential from a Secret,
//! probe each component's health route, and leave autoscaled workers to an HPA.

use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A YAML node as JSON (what Kubernetes makes of it).
fn json(y: &Yaml) -> Value {
    match y {
        Yaml::Real(r) => r.parse::<f64>().map(Value::from).unwrap_or(Value::Null),
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::from(s.as_str()),
        Yaml::Boolean(b) => Value::from(*b),
        Yaml::Array(a) => Value::Array(a.iter().map(json).collect()),
        Yaml::Hash(h) => Value::Object(
            h.iter().map(|(k, v)| (k.as_str().expect("keys are strings").to_owned(), json(v))).collect::<Map<_, _>>(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("unsupported YAML: {other:?}"),
    }
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.iter().map(json).filter(|d| !d.is_null()).collect()
}

/// Every resource of deploy/spinkube/.
fn manifests() -> Vec<Value> {
    let mut files: Vec<_> = std::fs::read_dir(root().join("deploy/spinkube"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files.iter().flat_map(|f| documents(f)).collect()
}

fn of_kind<'a>(all: &'a [Value], kind: &str) -> Vec<&'a Value> {
    all.iter().filter(|d| d["kind"] == kind).collect()
}

/// The errors of `v` against the OpenAPI v3 schema `schema`, at `at`.
fn check(v: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
    let ty = schema["type"].as_str();
    let ok = match (ty, v) {
        (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_))
        | (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (None, _) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64(),
        (Some("number"), Value::Number(_)) => true,
        _ => schema["x-kubernetes-int-or-string"] == true && (v.is_string() || v.is_i64()),
    };
    if !ok {
        errors.push(format!("{at}: {v} is not of type {}", ty.unwrap_or("?")));
        return;
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errors.push(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    match v {
        Value::Object(fields) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if !fields.contains_key(required.as_str().unwrap()) {
                    errors.push(format!("{at}: {required} is required"));
                }
            }
            // An object whose fields the schema leaves to Kubernetes (`metadata`: its own ObjectMeta).
            if schema["properties"].is_null() && schema["additionalProperties"].is_null() {
                return;
            }
            let properties = schema["properties"].as_object();
            for (k, field) in fields {
                match (properties.and_then(|p| p.get(k)), &schema["additionalProperties"]) {
                    (Some(s), _) => check(field, s, &format!("{at}.{k}"), errors),
                    (None, extra) if extra.is_object() => check(field, extra, &format!("{at}.{k}"), errors),
                    (None, _) if schema["x-kubernetes-preserve-unknown-fields"] == true => {}
                    (None, _) => errors.push(format!("{at}: the schema has no field {k}")),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check(item, &schema["items"], &format!("{at}[{i}]"), errors);
            }
        }
        _ => {}
    }
}

#[test]
fn spinapps_use_only_what_the_crd_allows() {
    let crd = root().join("../shared/spinkube/core.spinkube.dev_spinapps.yaml");
    if !crd.exists() {
        eprintln!("skipped spinapps_use_only_what_the_crd_allows: no SpinApp CRD at {}", crd.display());
        return;
    }
    let crd = documents(&crd).remove(0);
    let version = &crd["spec"]["versions"][0];
    let schema = &version["schema"]["openAPIV3Schema"];
    let api_version = format!("{}/{}", crd["spec"]["group"].as_str().unwrap(), version["name"].as_str().unwrap());
    let all = manifests();
    let apps = of_kind(&all, "SpinApp");
    assert_eq!(apps.len(), 3, "the coordinator and each worker");
    for app in apps {
        assert_eq!(app["apiVersion"], api_version.as_str());
        let mut errors = Vec::new();
        check(app, schema, app["metadata"]["name"].as_str().unwrap(), &mut errors);
        assert!(errors.is_empty(), "{errors:#?}");
    }
}

#[test]
fn spinapps_name_spin_tomls_components_and_variables_and_credentials_come_from_secrets() {
    let spin: toml::Value = std::fs::read_to_string(root().join("spin.toml")).unwrap().parse().unwrap();
    let variables = spin["variables"].as_table().unwrap();
    let all = manifests();
    let secrets: Vec<(String, Vec<String>)> = of_kind(&all, "Secret")
        .iter()
        .map(|s| {
            let keys = s["stringData"].as_object().into_iter().chain(s["data"].as_object()).flat_map(|m| m.keys());
            (s["metadata"]["name"].as_str().unwrap().to_owned(), keys.cloned().collect())
        })
        .collect();
    let mut deployed = Vec::new();
    for app in of_kind(&all, "SpinApp") {
        let name = app["metadata"]["name"].as_str().unwrap();
        let spec = &app["spec"];
        let components: Vec<&str> =
            spec["components"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(components.len(), 1, "{name}: one component a SpinApp, so that each scales on its own");
        let component = components[0];
        assert!(spin["component"].get(component).is_some(), "{name}: spin.toml has no component {component}");
        deployed.push(component);
        for v in spec["variables"].as_array().unwrap() {
            let var = v["name"].as_str().unwrap();
            let declared = variables.get(var).unwrap_or_else(|| panic!("{name}: spin.toml has no variable {var}"));
            let from_secret = &v["valueFrom"]["secretKeyRef"];
            if declared.get("secret").and_then(toml::Value::as_bool) == Some(true) {
                assert!(
                    v.get("value").is_none() && from_secret.is_object(),
                    "{name}: {var} is a credential: from a Secret"
                );
            }
            if from_secret.is_object() {
                let (secret, key) = (from_secret["name"].as_str().unwrap(), from_secret["key"].as_str().unwrap());
                let found = secrets.iter().any(|(s, keys)| s == secret && keys.iter().any(|k| k == key));
                assert!(found, "{name}: {var} reads {secret}/{key}, which deploy/spinkube/ does not define");
            }
        }
        let health = if component == "coordinator" { "/healthz".to_owned() } else { format!("/healthz/{component}") };
        for probe in ["readiness", "liveness"] {
            assert_eq!(spec["checks"][probe]["httpGet"]["path"], health.as_str(), "{name}: its {probe} probe");
        }
        let routed = spin["trigger"]["http"].as_array().unwrap().iter().any(|t| {
            t["component"].as_str() == Some(component)
                && (t["route"].as_str() == Some(health.as_str()) || t["route"].as_str() == Some("/..."))
        });
        assert!(routed, "{name}: spin.toml routes no health check to {component}");
        assert!(spec["resources"]["limits"]["memory"].is_string(), "{name}: a memory limit");
        if component != "coordinator" {
            // Autoscaled: the replica count is the HPA's, which targets the Deployment the operator makes.
            assert_eq!(spec["enableAutoscaling"], true, "{name}");
            assert!(spec.get("replicas").is_none(), "{name}: replicas and autoscaling");
            let hpa = of_kind(&all, "HorizontalPodAutoscaler")
                .into_iter()
                .find(|h| h["spec"]["scaleTargetRef"]["name"] == name);
            assert!(hpa.is_some_and(|h| h["spec"]["scaleTargetRef"]["kind"] == "Deployment"), "{name}: no HPA");
        }
    }
    deployed.sort();
    assert_eq!(deployed, ["coordinator", "scrape", "transform"]);
}

/// The coordinator reaches the workers through their Services, not by service chaining (they are other
/// apps there), and every worker URL names a SpinApp of the manifests.
#[test]
fn the_coordinator_is_pointed_at_the_workers_services() {
    let all = manifests();
    let apps = of_kind(&all, "SpinApp");
    let names: Vec<&str> = apps.iter().map(|a| a["metadata"]["name"].as_str().unwrap()).collect();
    let coordinator = apps.iter().find(|a| a["spec"]["components"][0] == "coordinator").unwrap();
    for (var, path) in [("fanout_scrape_url", "/scrape"), ("fanout_transform_url", "/transform")] {
        let v = coordinator["spec"]["variables"].as_array().unwrap().iter().find(|v| v["name"] == var);
        let url = url::Url::parse(v.unwrap_or_else(|| panic!("no {var}"))["value"].as_str().unwrap()).unwrap();
        assert!(names.contains(&url.host_str().unwrap()), "{var}: {url} is not a Service of the manifests");
        assert_eq!(url.path(), path, "{var}");
    }
}
