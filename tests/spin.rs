//! The bundle under `spin up -f spin.toml`, as SpinKube and the managed Spin
//! host run it: one process for the three components, the coordinator reaching
//! its workers by service chaining (`*.spin.internal`), every setting a Spin
//! variable. Skipped, with a line saying why, where no Spin CLI is available
//! (see `fanout_testkit::spin`).

mod common;

use common::TestBucket;
use fanout_testkit::client::request;
use fanout_testkit::s3::{S3Server, ACCESS_KEY_ID, BUCKET, SECRET_ACCESS_KEY};
use fanout_testkit::spin::Spin;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const TOKEN: &str = "spin-test-token";

fn bearer() -> [(&'static str, &'static str); 1] {
    [("authorization", "Bearer spin-test-token")]
}

/// The token set only as a variable guards every component, and the
/// coordinator sends it on to the workers it reaches by name; a limit set
/// only as `SPIN_VARIABLE_*` holds too.
#[test]
fn settings_reach_every_component_as_spin_variables() {
    let Some(spin) = Spin::up(
        "settings_reach_every_component_as_spin_variables",
        &[("fanout_token", TOKEN)],
        &[("SPIN_VARIABLE_FANOUT_MAX_REQUEST_BYTES", "4096")],
    ) else {
        return;
    };
    let csv = b"id,amount\n1,2.5\n2,4\n";
    for path in ["/transform", "/coordinate/transform", "/scrape?url=http://127.0.0.1:1/"] {
        let resp = request("POST", &spin.url(path), &[("content-type", "text/csv")], csv).unwrap();
        assert_eq!(resp.status, 401, "{path} without the token: {}", resp.text());
    }
    let headers = [bearer()[0], ("content-type", "text/csv")];
    let resp = request("POST", &spin.url("/transform"), &headers, csv).unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["records"], json!([{"id": "1", "amount": "2.5"}, {"id": "2", "amount": "4"}]));
    // Through the coordinator: the worker it reaches by service chaining wants the token too.
    let resp = request("POST", &spin.url("/coordinate/transform"), &headers, csv).unwrap();
    assert_eq!(resp.status, 200, "{}\n{}", resp.text(), spin.log());
    let v = resp.json();
    assert_eq!(v["records"], json!([{"id": "1", "amount": "2.5"}, {"id": "2", "amount": "4"}]), "{v}");
    assert_eq!(v["summary"]["invocations"], 1, "{v}");
    let big = vec![b'x'; 5000];
    let resp = request("POST", &spin.url("/transform"), &headers, &big).unwrap();
    assert_eq!(resp.status, 413, "{}", resp.text());
}

/// A durable job whose bucket, keys and private hosts are set only as
/// variables (the secret key through `SPIN_VARIABLE_*`, as a SpinKube Secret
/// would give it): submitted, ticked to its end, its records in the bucket.
#[test]
fn a_durable_job_runs_with_its_bucket_set_as_spin_variables() {
    let s3 = S3Server::start();
    let rows = 500;
    let mut csv = String::from("id,amount,region\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},{}.5,{}\n", i % 90, ["north", "south"][i % 2]));
    }
    TestBucket::of(&s3).put("in/spin.csv", csv.as_bytes());
    let private = s3.host_port();
    let endpoint = s3.endpoint();
    let Some(spin) = Spin::up(
        "a_durable_job_runs_with_its_bucket_set_as_spin_variables",
        &[
            ("fanout_token", TOKEN),
            ("fanout_s3_endpoint", &endpoint),
            ("fanout_s3_bucket", BUCKET),
            ("fanout_s3_access_key_id", ACCESS_KEY_ID),
            ("fanout_private_hosts", &private),
            ("fanout_min_chunk_bytes", "1"),
        ],
        &[("SPIN_VARIABLE_FANOUT_S3_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)],
    ) else {
        return;
    };
    let job = json!({"source": format!("s3://{BUCKET}/in/spin.csv"), "spec": {"columns": ["id", "region"]}, "chunk_bytes": 2048});
    let resp = request(
        "POST",
        &spin.url("/jobs/transform"),
        &[bearer()[0], ("content-type", "application/json")],
        job.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(resp.status, 201, "{}\n{}", resp.text(), spin.log());
    let id = resp.json()["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let status: Value = loop {
        let resp = request("POST", &spin.url(&format!("/jobs/{id}/tick")), &bearer(), b"").unwrap();
        assert_eq!(resp.status, 200, "{}\n{}", resp.text(), spin.log());
        let status = resp.json();
        if status["finished"] == true {
            break status;
        }
        assert!(Instant::now() < deadline, "the job did not finish: {status}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["status"], "succeeded", "{status}");
    let manifest: Value =
        serde_json::from_slice(&TestBucket::of(&s3).get(&format!("jobs/{id}/manifest.json")).unwrap()).unwrap();
    let mut ids = Vec::new();
    for part in manifest["parts"].as_array().unwrap() {
        let body = TestBucket::of(&s3).get(part["key"].as_str().unwrap()).unwrap();
        for line in body.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let record: Value = serde_json::from_slice(line).unwrap();
            ids.push(record["id"].as_str().unwrap().parse::<usize>().unwrap());
        }
    }
    assert_eq!(ids, (0..rows).collect::<Vec<_>>(), "every row once, in order");
    assert!(manifest["parts"].as_array().unwrap().len() > 1, "the job was split: {manifest}");
}
