//! The managed Spin host's limits, in a test: every component runs under
//! `wasmtime serve -W max-memory-size=134217728` (128 MiB per instance) behind
//! a front proxy that cuts any request at 30 s and refuses a request or answer
//! body over 10 MiB, the coordinator's calls to the workers included. Through
//! it, a 5,000,000-row transform job and a 10,000-page scrape complete as
//! durable jobs; and a job whose coordinator is killed with SIGKILL mid-tick
//! and started again still completes with every row exactly once.

mod common;

use common::TestBucket;
use fanout_testkit::client::request;
use fanout_testkit::component::Component;
use fanout_testkit::data;
use fanout_testkit::proxy::{HostLimits, Proxy};
use fanout_testkit::s3::{S3Server, BUCKET};
use fanout_testkit::site::Site;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const HOST: HostLimits = HostLimits { max_body: 10 << 20, max_time: Duration::from_secs(30) };
const MEMORY: &str = "-Wmax-memory-size=134217728";

/// The bundle as a managed host runs it: each component behind its own front.
struct Hosted {
    s3: S3Server,
    site: Site,
    _workers: [Component; 2],
    _worker_fronts: [Proxy; 2],
    coordinator: Component,
    front: Proxy,
}

impl Hosted {
    fn start() -> Hosted {
        let s3 = S3Server::start();
        let site = Site::start();
        let site_host = site.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
        let private = format!("{site_host},{}", s3.host_port());
        let endpoint = s3.endpoint();
        let env = [("FANOUT_PRIVATE_HOSTS", private.as_str()), ("FANOUT_S3_ENDPOINT", endpoint.as_str())];
        let transform = Component::serve_with("transform", &env, &[MEMORY]);
        let scrape = Component::serve_with("scrape", &env, &[MEMORY]);
        let (t, sc) = (Proxy::start_limited(&transform.url(""), HOST), Proxy::start_limited(&scrape.url(""), HOST));
        let (t_url, sc_url) = (t.url("/transform"), sc.url("/scrape"));
        let s3_env = s3.coordinator_env(&s3.endpoint());
        let mut env: Vec<(&str, &str)> = vec![
            ("FANOUT_TRANSFORM_URL", &t_url),
            ("FANOUT_SCRAPE_URL", &sc_url),
            ("FANOUT_PRIVATE_HOSTS", &private),
            // A tick that dies holds its units for a lease: short here, so the test is short.
            ("FANOUT_LEASE_MS", "4000"),
        ];
        env.extend(s3_env.iter().map(|(k, v)| (*k, v.as_str())));
        let coordinator = Component::serve_with("coordinator", &env, &[MEMORY]);
        let front = Proxy::start_limited(&coordinator.url(""), HOST);
        Hosted { s3, site, _workers: [transform, scrape], _worker_fronts: [t, sc], coordinator, front }
    }

    fn object(&self, key: &str) -> Vec<u8> {
        TestBucket::of(&self.s3).get(key).unwrap_or_else(|| panic!("{key} is not in the bucket"))
    }

    /// Sends `method path` through the front, as a caller of the managed host does.
    fn call(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        let started = Instant::now();
        let resp = request(
            method,
            &self.front.url(path),
            &[("content-type", "application/json")],
            body.to_string().as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        assert!(resp.body.len() < 1 << 20, "{method} {path}: an answer of {} bytes", resp.body.len());
        assert!(started.elapsed() < HOST.max_time, "{method} {path} took {:?}", started.elapsed());
        let value = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
        (resp.status, value)
    }

    /// Ticks `id` until it is finished: the last status.
    fn run(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let (status, body) = self.call("POST", &format!("/jobs/{id}/tick"), &json!({}));
            assert_eq!(status, 200, "{body}");
            if body["finished"] == true {
                return body;
            }
            assert!(Instant::now() < deadline, "{body}");
        }
    }
}

/// The ids of the records of every part, in order.
fn record_ids(h: &Hosted, manifest: &Value) -> Vec<u64> {
    let mut ids = Vec::new();
    for part in manifest["parts"].as_array().unwrap() {
        let body = h.object(part["key"].as_str().unwrap());
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let digits = line.strip_prefix(b"{\"id\":").expect("a vat record starts with its id");
            let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap();
            ids.push(std::str::from_utf8(&digits[..end]).unwrap().parse().unwrap());
        }
    }
    ids
}

/// The ids of the rows the `vat` preset keeps (a positive amount), in order.
fn kept_ids(csv: &[u8]) -> Vec<u64> {
    csv.split(|&b| b == b'\n')
        .skip(1)
        .filter(|l| !l.is_empty())
        .filter_map(|line| {
            let mut fields = line.split(|&b| b == b',');
            let id: u64 = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
            let amount: f64 = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
            (amount > 0.0).then_some(id)
        })
        .collect()
}

fn check_every_row_once(h: &Hosted, id: &str, kept: &[u64], rows: u64) {
    let manifest: Value = serde_json::from_slice(&h.object(&format!("jobs/{id}/manifest.json"))).unwrap();
    let s = &manifest["summary"];
    assert_eq!(
        (s["rows_in"].as_u64(), s["rows_errored"].as_u64(), s["chunks_failed"].as_u64()),
        (Some(rows), Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(s["rows_out"].as_u64().unwrap() + s["rows_filtered"].as_u64().unwrap(), rows, "{s}");
    let ids = record_ids(h, &manifest);
    assert_eq!(ids.len(), kept.len(), "records");
    if let Some(i) = ids.iter().zip(kept).position(|(a, b)| a != b) {
        panic!("record {i} is row {}, where row {} was expected", ids[i], kept[i]);
    }
}

#[test]
fn five_million_rows_within_the_managed_hosts_limits_and_after_a_crash() {
    const ROWS: u64 = 5_000_000;
    let mut h = Hosted::start();
    let csv = data::sales(ROWS as usize);
    let kept = kept_ids(&csv);
    TestBucket::of(&h.s3).put("in/sales.csv", &csv);
    drop(csv);
    let job = json!({"source": format!("s3://{BUCKET}/in/sales.csv"), "spec": {"preset": "vat"}});

    let (status, made) = h.call("POST", "/jobs/transform", &job);
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let done = h.run(&id);
    assert_eq!(done["status"], "succeeded", "{done}");
    check_every_row_once(&h, &id, &kept, ROWS);

    // Again, with the coordinator killed in the middle of a tick and started again.
    let (_, made) = h.call("POST", "/jobs/transform", &job);
    let id = made["id"].as_str().unwrap().to_owned();
    let (front, path) = (h.front.url(""), format!("/jobs/{id}/tick"));
    let ticking = std::thread::spawn(move || request("POST", &format!("{front}{path}"), &[], b"").map(|r| r.status));
    std::thread::sleep(Duration::from_millis(1500));
    h.coordinator.restart();
    let cut = ticking.join().unwrap();
    assert!(cut.as_ref().map_or(true, |&s| s != 200), "the tick was cut: {cut:?}");
    let done = h.run(&id);
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(done["calls"]["invocations"].as_u64().unwrap() >= done["units"]["total"].as_u64().unwrap(), "{done}");
    check_every_row_once(&h, &id, &kept, ROWS);
}

#[test]
fn ten_thousand_pages_within_the_managed_hosts_limits() {
    let h = Hosted::start();
    let urls: Vec<String> = (0..10_000).map(|i| h.site.url(&format!("/page/{i}?pad=40000&delay_ms=50"))).collect();
    let (status, made) = h.call("POST", "/jobs/scrape", &json!({"urls": urls, "select": {"h": "h1"}}));
    assert_eq!(status, 201, "{made}");
    let id = made["id"].as_str().unwrap().to_owned();
    let done = h.run(&id);
    assert_eq!((done["status"].as_str(), done["items"]["pages"].as_u64()), (Some("succeeded"), Some(10_000)), "{done}");
    let manifest: Value = serde_json::from_slice(&h.object(&format!("jobs/{id}/manifest.json"))).unwrap();
    let mut next = 0;
    for part in manifest["parts"].as_array().unwrap() {
        for line in h.object(part["key"].as_str().unwrap()).split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let r: Value = serde_json::from_slice(line).unwrap();
            assert_eq!(
                (r["index"].as_u64(), &r["page"]["select"]["h"]),
                (Some(next), &json!(format!("Heading {next}")))
            );
            next += 1;
        }
    }
    assert_eq!(next, 10_000);
}
