//! Durable jobs through the real components under wasmtime serve, with a real
//! S3-compatible server (SeaweedFS) holding their state and results: the
//! answers equal the streaming coordinator's, ticks are idempotent, and
//! nothing is lost to bucket faults, lost answers or ticks sent at once.

mod common;

use common::TestBucket;
use fanout::fanout::jobs::state::Manifest;
use fanout_testkit::client::{get, post_json, request, Response};
use fanout_testkit::component::Component;
use fanout_testkit::proxy::{Fault, Proxy};
use fanout_testkit::s3::{S3Server, BUCKET};
use fanout_testkit::site::Site;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// A bucket, a fixture site, both workers and a coordinator, wired together.
struct Bundle {
    s3: S3Server,
    site: Site,
    // Kept alive for the bundle's life.
    _transform: Component,
    _scrape: Component,
    coordinator: Component,
}

impl Bundle {
    /// Workers may reach the site and the bucket (and nothing else private); the
    /// coordinator reaches the bucket at `endpoint` (default: the server itself).
    fn start(extra: &[(&str, &str)]) -> Bundle {
        Bundle::start_via(extra, |s3| s3.endpoint())
    }

    fn start_via(extra: &[(&str, &str)], endpoint: impl Fn(&S3Server) -> String) -> Bundle {
        let s3 = S3Server::start();
        let site = Site::start();
        let endpoint = endpoint(&s3);
        let host = |url: &str| url.trim_start_matches("http://").trim_end_matches('/').to_owned();
        let private = format!("{},{}", host(&site.url("")), host(&endpoint));
        let worker_env = [("FANOUT_PRIVATE_HOSTS", private.as_str()), ("FANOUT_S3_ENDPOINT", endpoint.as_str())];
        let transform = Component::serve("transform", &worker_env);
        let scrape = Component::serve("scrape", &worker_env);
        let (t, sc) = (transform.url("/transform"), scrape.url("/scrape"));
        let s3_env = s3.coordinator_env(&endpoint);
        let mut env: Vec<(&str, &str)> = vec![
            ("FANOUT_TRANSFORM_URL", &t),
            ("FANOUT_SCRAPE_URL", &sc),
            ("FANOUT_PRIVATE_HOSTS", &private),
            ("FANOUT_MIN_CHUNK_BYTES", "1"),
        ];
        env.extend(s3_env.iter().map(|(k, v)| (*k, v.as_str())));
        env.extend_from_slice(extra);
        let coordinator = Component::serve("coordinator", &env);
        Bundle { s3, site, _transform: transform, _scrape: scrape, coordinator }
    }

    fn object(&self, key: &str) -> Option<Vec<u8>> {
        TestBucket::of(&self.s3).get(key)
    }

    fn upload(&self, key: &str, body: &[u8]) {
        TestBucket::of(&self.s3).put(key, body)
    }

    fn submit(&self, kind: &str, job: &Value) -> String {
        let resp = post_json(&self.coordinator.url(&format!("/jobs/{kind}")), job);
        assert_eq!(resp.status, 201, "{}", resp.text());
        let v = resp.json();
        let id = v["id"].as_str().unwrap().to_owned();
        assert_eq!(v["status_url"], format!("/jobs/{id}"));
        assert_eq!(v["manifest_key"], format!("jobs/{id}/manifest.json"));
        id
    }

    /// Ticks job `id` until it is finished, as a driver does: a tick that
    /// fails because the bucket does (502) is sent again. Its last status.
    fn run(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let resp = request("POST", &self.coordinator.url(&format!("/jobs/{id}/tick")), &[], b"").unwrap();
            assert!(
                resp.status == 200 || (resp.status == 502 && resp.text().contains("the bucket")),
                "{}",
                resp.text()
            );
            assert!(Instant::now() < deadline, "job {id} did not finish");
            if resp.status == 502 {
                continue;
            }
            let status = resp.json();
            if status["finished"] == true {
                return status;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {status}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn manifest(&self, id: &str) -> Manifest {
        serde_json::from_slice(&self.object(&format!("jobs/{id}/manifest.json")).expect("the manifest")).unwrap()
    }

    /// Every line of the listed objects, in order.
    fn lines(&self, keys: impl IntoIterator<Item = String>) -> Vec<Value> {
        keys.into_iter()
            .flat_map(|key| {
                let body = self.object(&key).unwrap_or_else(|| panic!("{key} is listed but missing"));
                body.split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_slice(l).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

fn sales(rows: usize) -> String {
    let mut csv = String::from("id,amount,date,category,region,product\n");
    for i in 1..=rows {
        let amount = if i % 10 == 0 { "-1.00".to_owned() } else { format!("{}.{:02}", i * 37 % 900, i % 100) };
        let amount = if i % 97 == 0 { "n/a".to_owned() } else { amount };
        let region = ["north", "south", "east"][i % 3];
        csv.push_str(&format!("{i},{amount},2026-03-{:02},Cat{},{region},p{}\n", i % 28 + 1, i % 4, i % 2));
    }
    csv
}

/// Error records as a durable job writes them: its units count lines from their first record (all
/// but the first), where the streaming coordinator gives the file's lines; `byte` says where each is.
fn unit_lines(errors: &Value, first_unit_end: u64) -> Value {
    let errors = errors.as_array().unwrap().iter().map(|e| {
        let mut e = e.clone();
        if e["byte"].as_u64().unwrap() >= first_unit_end {
            e.as_object_mut().unwrap().remove("line");
        }
        e
    });
    Value::Array(errors.collect())
}

/// Asserts that `got` holds `want`'s items, naming the first difference rather than printing both.
fn same(got: &[Value], want: &Value, what: &str) {
    let want = want.as_array().unwrap_or_else(|| panic!("{what}: not an array"));
    if let Some(i) = got.iter().zip(want).position(|(g, w)| g != w) {
        panic!("{what}: item {i} differs: {} against {}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "{what}: the counts differ");
}

fn coordinate(b: &Bundle, job: &Value) -> Value {
    let resp = post_json(&b.coordinator.url("/coordinate/transform"), job);
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

/// A job's parts, read in order, hold what the streaming coordinator answers
/// for the same job, and its error objects the same error records.
#[test]
fn a_transform_job_writes_what_the_coordinator_answers() {
    let b = Bundle::start(&[]);
    b.site.put("sales.csv", "text/csv", sales(3000));
    let job = json!({"source": b.site.url("/files/sales.csv"), "spec": {"preset": "vat"}, "chunk_bytes": 16384});
    let streamed = coordinate(&b, &job);
    let id = b.submit("transform", &job);
    let status = b.run(&id);
    assert_eq!(status["status"], "succeeded", "{status}");
    let m = b.manifest(&id);
    assert!(m.parts.len() > 5, "{} parts", m.parts.len());
    same(&b.lines(m.parts.iter().map(|p| p.key.clone())), &streamed["records"], "records");
    let errors = unit_lines(&Value::Array(b.lines(m.errors.iter().map(|p| p.key.clone()))), 16384);
    same(errors.as_array().unwrap(), &unit_lines(&streamed["errors"], 16384), "error records");
    for key in ["rows_in", "rows_out", "rows_filtered", "rows_errored", "bytes", "chunks"] {
        assert_eq!(m.summary[key], streamed["summary"][key], "{key}: {}", m.summary);
    }
    assert_eq!(status["items"]["rows_in"], 3000);
    // The listed sums are the objects'.
    for p in &m.parts {
        let body = b.object(&p.key).unwrap();
        assert_eq!(fanout::fanout::jobs::receipt::ObjectSum::of(&body).sha256, p.sha256);
    }
    // A tick on a finished job changes nothing.
    let again = request("POST", &b.coordinator.url(&format!("/jobs/{id}/tick")), &[], b"").unwrap().json();
    assert_eq!(again, status);
    assert_eq!(get(&b.coordinator.url(&format!("/jobs/{id}"))).json(), status);
}

/// A source in the job's own bucket, and an aggregate merged exactly from the parts' partial state.
#[test]
fn an_aggregate_job_over_an_object_in_the_bucket() {
    let b = Bundle::start(&[]);
    let csv = sales(5000);
    b.upload("in/sales.csv", csv.as_bytes());
    b.site.put("sales.csv", "text/csv", csv);
    let spec = json!({"columns": ["region", {"from": "amount", "type": "float"}],
        "aggregate": {"group_by": ["region"], "metrics": [{"op": "count"}, {"name": "total", "op": "sum", "column": "amount"}]}});
    let streamed =
        coordinate(&b, &json!({"source": b.site.url("/files/sales.csv"), "spec": spec, "chunk_bytes": 20000}));
    let id = b.submit(
        "transform",
        &json!({"source": format!("s3://{BUCKET}/in/sales.csv"), "spec": spec, "chunk_bytes": 20000}),
    );
    assert_eq!(b.run(&id)["status"], "succeeded");
    let m = b.manifest(&id);
    let result: Value = serde_json::from_slice(&b.object(&m.result.as_ref().unwrap().key).unwrap()).unwrap();
    assert_eq!(result["groups"], streamed["groups"]);
    assert_eq!(m.summary["rows_errored"], streamed["summary"]["rows_errored"]);
}

/// A scrape job: every URL a result, in order, pages and errors, as the coordinator answers.
#[test]
fn a_scrape_job_writes_every_result_in_order() {
    let b = Bundle::start(&[]);
    let urls: Vec<String> = (0..37)
        .map(|i| match i % 9 {
            4 => b.site.url("/status/404"),
            7 => "not a url".to_owned(),
            _ => b.site.url(&format!("/page/{i}")),
        })
        .collect();
    let job = json!({"urls": urls, "batch_size": 5, "select": {"h": "body > h1"}, "options": {"attempts": 1}});
    let id = b.submit("scrape", &job);
    let status = b.run(&id);
    assert_eq!((status["status"].as_str(), status["items"]["results"].as_u64()), (Some("succeeded"), Some(37)));
    let m = b.manifest(&id);
    assert_eq!(m.parts.len(), 8);
    let results = b.lines(m.parts.iter().map(|p| p.key.clone()));
    assert_eq!(results.len(), 37);
    for (i, r) in results.iter().enumerate() {
        assert_eq!((r["index"].as_u64(), r["url"].as_str()), (Some(i as u64), Some(urls[i].as_str())), "{r}");
        match i % 9 {
            4 => assert_eq!(r["error"]["kind"], "http_status", "{r}"),
            7 => assert_eq!(r["error"]["kind"], "invalid_url", "{r}"),
            _ => assert_eq!(r["page"]["select"]["h"], format!("Heading {i}"), "{r}"),
        }
    }
    assert_eq!((m.summary["pages"].as_u64(), m.summary["errors"].as_u64()), (Some(29), Some(8)), "{}", m.summary);

    // The same list as a file of lines in the bucket.
    let text: String = urls.iter().map(|u| format!("{u}\n")).collect::<String>() + "# the end\n";
    b.upload("in/urls.txt", text.as_bytes());
    let id = b.submit("scrape", &json!({"urls_source": format!("s3://{BUCKET}/in/urls.txt"), "batch_size": 10}));
    b.run(&id);
    let again = b.lines(b.manifest(&id).parts.iter().map(|p| p.key.clone()));
    let urls_of = |rs: &[Value]| rs.iter().map(|r| r["url"].clone()).collect::<Vec<_>>();
    assert_eq!(urls_of(&again), urls_of(&results));
}

/// The job routes' errors, and what a tick token may do.
#[test]
fn job_routes_refuse_what_they_should() {
    let b = Bundle::start(&[("FANOUT_TOKEN", "s3cret"), ("FANOUT_TICK_TOKEN", "ticker")]);
    let auth = [("authorization", "Bearer s3cret"), ("content-type", "application/json")];
    let call = |method: &str, path: &str, headers: &[(&str, &str)], body: &Value| -> Response {
        request(method, &b.coordinator.url(path), headers, body.to_string().as_bytes()).unwrap()
    };
    b.site.put("s.csv", "text/csv", sales(50));
    let job = json!({"source": b.site.url("/files/s.csv")});
    assert_eq!(call("POST", "/jobs/transform", &[], &job).status, 401);
    let made = call("POST", "/jobs/transform", &auth, &job);
    assert_eq!(made.status, 201, "{}", made.text());
    let id = made.json()["id"].as_str().unwrap().to_owned();
    // The tick token ticks, and does nothing else.
    assert_eq!(call("POST", &format!("/jobs/{id}/tick?token=ticker"), &[], &json!({})).status, 200);
    assert_eq!(call("GET", "/jobs/tick?token=ticker", &[], &json!({})).status, 200);
    assert_eq!(call("GET", &format!("/jobs/{id}?token=ticker"), &[], &json!({})).status, 401);
    assert_eq!(call("POST", "/jobs/transform?token=ticker", &[], &job).status, 401);
    assert_eq!(call("POST", &format!("/jobs/{id}/tick?token=s3cret"), &[], &json!({})).status, 401);
    for (method, path, body, status, needle) in [
        ("GET", "/jobs/0123456789abcdef0123456789abcdef".to_owned(), json!({}), 404, "no job"),
        ("GET", "/jobs/../plan.json".to_owned(), json!({}), 404, ""),
        (
            "POST",
            "/jobs/transform".to_owned(),
            json!({"source": b.site.url("/files/s.csv"), "window_bytes": 5}),
            400,
            "window_bytes",
        ),
        ("POST", "/jobs/transform".to_owned(), json!({"source": "s3://other/x.csv"}), 400, "bucket"),
        (
            "POST",
            "/jobs/transform".to_owned(),
            json!({"source": b.site.url("/files/s.csv"), "spec": {"columns": ["nope"]}}),
            400,
            "nope",
        ),
        (
            "POST",
            "/jobs/transform".to_owned(),
            json!({"source": b.site.url("/files/s.csv"), "audit_percent": 101}),
            400,
            "audit_percent",
        ),
        ("POST", "/jobs/scrape".to_owned(), json!({"urls": ["https://a/"], "audit_percent": 5}), 400, "audit_percent"),
        ("POST", "/jobs/scrape".to_owned(), json!({}), 400, "urls"),
        ("PUT", format!("/jobs/{id}"), json!({}), 405, ""),
    ] {
        let resp = call(method, &path, &auth, &body);
        assert_eq!(resp.status, status, "{method} {path}: {}", resp.text());
        assert!(resp.text().contains(needle), "{method} {path}: {}", resp.text());
    }
    let finished = call("POST", &format!("/jobs/{id}/tick"), &auth, &json!({})).json();
    assert_eq!(finished["finished"], true, "{finished}");
    assert_eq!(call("DELETE", &format!("/jobs/{id}"), &auth, &json!({})).status, 409, "a finished job");
    // Cancel before any tick: 200 with the status, again 200, and no unit runs.
    let id = call("POST", "/jobs/transform", &auth, &job).json()["id"].as_str().unwrap().to_owned();
    let cancelled = call("DELETE", &format!("/jobs/{id}"), &auth, &json!({}));
    assert_eq!(cancelled.status, 200, "{}", cancelled.text());
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert_eq!(call("DELETE", &format!("/jobs/{id}"), &auth, &json!({})).status, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let s = call("POST", &format!("/jobs/{id}/tick"), &auth, &json!({})).json();
        if s["finished"] == true || Instant::now() > deadline {
            break s;
        }
    };
    assert_eq!((status["status"].as_str(), status["finished"].as_bool()), (Some("cancelled"), Some(true)), "{status}");
    assert_eq!(
        (status["calls"]["invocations"].as_u64(), status["units"]["failed"].as_u64()),
        (Some(0), Some(1)),
        "{status}"
    );
    assert_eq!(call("DELETE", &format!("/jobs/{id}"), &auth, &json!({})).status, 409);
}

/// Faults of the bucket (a fault proxy in front of it, for the coordinator and
/// the workers alike): 500s and 503s, writes whose answer is lost, slow
/// answers. The job still writes exactly what the coordinator answers.
#[test]
fn bucket_faults_lose_nothing() {
    let proxy = std::cell::OnceCell::new();
    let b = Bundle::start_via(&[("FANOUT_SOURCE_TIMEOUT_MS", "5000")], |s3| {
        let p = Proxy::start(&s3.endpoint());
        let url = p.url("");
        proxy.set(p).ok();
        url.trim_end_matches('/').to_owned()
    });
    let proxy = proxy.into_inner().unwrap();
    // The workers write through the proxy's address too.
    b.site.put("sales.csv", "text/csv", sales(2000));
    let job = json!({"source": b.site.url("/files/sales.csv"), "spec": {"preset": "vat"}, "chunk_bytes": 8192});
    let streamed = coordinate(&b, &job);
    let id = b.submit("transform", &job);
    proxy.set_rule(|n| match n % 11 {
        3 => Fault::Status(503),
        5 => Fault::Lost,
        7 => Fault::Status(500),
        9 => Fault::Delay(300),
        _ => Fault::Pass,
    });
    let status = b.run(&id);
    proxy.set_rule(|_| Fault::Pass);
    assert_eq!(status["status"], "succeeded", "{status}");
    let faults = proxy.faults();
    assert!(faults.iter().filter(|(_, f)| *f == Fault::Lost).count() > 3, "{} requests", faults.len());
    let m = b.manifest(&id);
    same(&b.lines(m.parts.iter().map(|p| p.key.clone())), &streamed["records"], "records");
    let errors = unit_lines(&Value::Array(b.lines(m.errors.iter().map(|p| p.key.clone()))), 8192);
    same(errors.as_array().unwrap(), &unit_lines(&streamed["errors"], 8192), "error records");
    assert_eq!(m.summary["chunks_failed"], 0, "{}", m.summary);
}

/// Faults between the coordinator and a worker: answers lost after the worker
/// wrote its unit, 503s, a worker that hangs. Units are retried, and a unit
/// whose answer was lost is concluded from its receipt, not run twice.
#[test]
fn lost_and_failed_worker_answers_lose_nothing() {
    let s3 = S3Server::start();
    let site = Site::start();
    let site_host = site.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let private = format!("{site_host},{}", s3.host_port());
    let worker =
        Component::serve("transform", &[("FANOUT_PRIVATE_HOSTS", &private), ("FANOUT_S3_ENDPOINT", &s3.endpoint())]);
    let proxy = Proxy::start(&worker.url(""));
    let url = proxy.url("/transform");
    let s3_env = s3.coordinator_env(&s3.endpoint());
    let mut env: Vec<(&str, &str)> = vec![
        ("FANOUT_TRANSFORM_URL", &url),
        ("FANOUT_PRIVATE_HOSTS", &private),
        ("FANOUT_MIN_CHUNK_BYTES", "1"),
        ("FANOUT_WORKER_TIMEOUT_MS", "2000"),
        ("FANOUT_LEASE_MS", "3000"),
    ];
    env.extend(s3_env.iter().map(|(k, v)| (*k, v.as_str())));
    let coordinator = Component::serve("coordinator", &env);
    site.put("sales.csv", "text/csv", sales(1500));
    let job = json!({"source": site.url("/files/sales.csv"), "spec": {"preset": "vat"}, "chunk_bytes": 4096});
    let streamed = post_json(&coordinator.url("/coordinate/transform"), &job).json();
    let before = proxy.requests();
    proxy.set_rule(move |n| match (n - before) % 7 {
        1 => Fault::Lost,
        3 => Fault::Status(503),
        _ if n - before == 5 => Fault::Hang,
        _ => Fault::Pass,
    });
    let b = Bundle { s3, site, _transform: worker, _scrape: Component::serve("scrape", &[]), coordinator };
    let id = b.submit("transform", &job);
    let status = b.run(&id);
    assert_eq!(status["status"], "succeeded", "{status}");
    let m = b.manifest(&id);
    same(&b.lines(m.parts.iter().map(|p| p.key.clone())), &streamed["records"], "records");
    assert_eq!(m.summary["chunks_failed"], 0, "{}", m.summary);
    let lost = proxy.faults().iter().filter(|(_, f)| *f == Fault::Lost).count() as u64;
    assert!(lost > 0 && m.summary["retries"].as_u64().unwrap() > 0, "{}", m.summary);
}

/// Many ticks at once advance the same job: each unit runs once at a time,
/// and the parts are what one tick at a time writes.
#[test]
fn ticks_sent_at_once_run_each_unit_once() {
    let b = Bundle::start(&[("FANOUT_WORKER_CONCURRENCY", "2")]);
    b.site.put("sales.csv", "text/csv", sales(4000));
    let job = json!({"source": b.site.url("/files/sales.csv"), "spec": {"preset": "vat"}, "chunk_bytes": 4096});
    let streamed = coordinate(&b, &job);
    let id = b.submit("transform", &job);
    let url = b.coordinator.url(&format!("/jobs/{id}/tick"));
    let all = b.coordinator.url("/jobs/tick");
    let statuses: Vec<Value> = std::thread::scope(|scope| {
        let ticks: Vec<_> = (0..6)
            .map(|i| {
                let (url, all) = (&url, &all);
                scope.spawn(move || loop {
                    let target = if i % 2 == 0 { url.as_str() } else { all.as_str() };
                    let resp = request("POST", target, &[], b"").unwrap();
                    assert_eq!(resp.status, 200, "{}", resp.text());
                    let v = resp.json();
                    let status =
                        if i % 2 == 0 { v } else { v["jobs"].get(0).cloned().unwrap_or(json!({"finished": true})) };
                    if status["finished"] == true {
                        return status;
                    }
                })
            })
            .collect();
        ticks.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(statuses.iter().filter(|s| s.get("id").is_some()).all(|s| s["status"] == "succeeded"), "{statuses:?}");
    let m = b.manifest(&id);
    same(&b.lines(m.parts.iter().map(|p| p.key.clone())), &streamed["records"], "records");
    assert_eq!(m.summary["invocations"], m.summary["chunks"], "one call per unit: {}", m.summary);
}

/// A worker writes a durable job's unit only to the bucket it is configured
/// with: a caller who sends it a sink elsewhere (a public URL, another bucket)
/// is refused before anything is read or written.
#[test]
fn workers_write_only_to_their_own_bucket() {
    let b = Bundle::start(&[]);
    b.site.put("s.csv", "text/csv", sales(10));
    let sink = |base: &str| {
        let object = |name: &str| json!({"create": format!("{base}/{name}?X-Amz-Signature=00"), "read": format!("{base}/{name}")});
        json!({"unit": 0, "part": object("p"), "errors": object("e"), "receipt": object("r")})
    };
    let job = |sink: Value| json!({"source": b.site.url("/files/s.csv"), "start": 0, "end": 100, "sink": sink});
    for (target, why) in [
        ("https://attacker.example/upload".to_owned(), "not in the bucket"),
        (format!("{}/other-bucket", b.site.url("").trim_end_matches('/')), "not in the bucket"),
    ] {
        let resp = post_json(&b._transform.url("/transform"), &job(sink(&target)));
        assert_eq!(resp.status, 403, "{target}: {}", resp.text());
        assert!(resp.text().contains(why) && !resp.text().contains("Signature=00"), "{}", resp.text());
    }
    let unconfigured = Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let resp = post_json(&unconfigured.url("/transform"), &job(sink(&b.s3.endpoint())));
    assert_eq!(resp.status, 403, "{}", resp.text());
    assert!(resp.text().contains("FANOUT_S3_ENDPOINT"), "{}", resp.text());
}
