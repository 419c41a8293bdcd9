//! Worker replicas behind a real load balancer (HAProxy), as a Kubernetes
//! Service or a managed host's route puts them: the coordinator is given the
//! balanced address, its calls land on any replica, and a replica that dies
//! mid-job costs retries, not rows. Skipped, with a line saying why, where
//! HAProxy is absent (see `fanout_testkit::balancer`).

use fanout_testkit::balancer::Balancer;
use fanout_testkit::client::{post_json, stream_lines};
use fanout_testkit::component::Component;
use fanout_testkit::site::Site;
use serde_json::{json, Value};

/// `count` replicas of worker `name`, reaching `site` and nothing else private.
fn replicas(name: &str, count: usize, site: &Site) -> Vec<Component> {
    let private = site.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    (0..count).map(|_| Component::serve(name, &[("FANOUT_PRIVATE_HOSTS", &private)])).collect()
}

fn backends(replicas: &[Component]) -> Vec<String> {
    replicas.iter().map(|r| r.url("").trim_start_matches("http://").to_owned()).collect()
}

fn coordinator(transform: &str, scrape: &str, site: &Site) -> Component {
    let private = site.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    Component::serve(
        "coordinator",
        &[
            ("FANOUT_TRANSFORM_URL", transform),
            ("FANOUT_SCRAPE_URL", scrape),
            ("FANOUT_PRIVATE_HOSTS", &private),
            ("FANOUT_MIN_CHUNK_BYTES", "1024"),
        ],
    )
}

/// `v` without timings and the peak of bytes held, which differ from run to run.
fn untimed(v: &mut Value) {
    match v {
        Value::Object(fields) => {
            fields.retain(|k, _| {
                !k.ends_with("_ms")
                    && !k.ends_with("_us")
                    && !k.ends_with("_per_s")
                    && k != "timing"
                    && k != "peak_held_bytes"
            });
            fields.values_mut().for_each(untimed);
        }
        Value::Array(items) => items.iter_mut().for_each(untimed),
        _ => {}
    }
}

/// Three replicas of each worker behind HAProxy give the answers one worker of each gives.
#[test]
fn replicas_behind_a_balancer_answer_as_one_worker() {
    let site = Site::start();
    site.put("sales.csv", "text/csv", fanout_testkit::data::sales(20_000));
    let (transforms, scrapes) = (replicas("transform", 3, &site), replicas("scrape", 3, &site));
    let Some(tlb) = Balancer::start("replicas_behind_a_balancer_answer_as_one_worker", &backends(&transforms)) else {
        return;
    };
    let slb = Balancer::start("replicas_behind_a_balancer_answer_as_one_worker", &backends(&scrapes)).unwrap();
    let balanced = coordinator(&tlb.url("/transform"), &slb.url("/scrape"), &site);
    let single = coordinator(&transforms[0].url("/transform"), &scrapes[0].url("/scrape"), &site);
    let urls: Vec<String> = (0..40).map(|i| site.url(&format!("/page/{i}"))).chain([site.url("/status/404")]).collect();
    let jobs = [
        (
            "/coordinate/transform",
            json!({"source": site.url("/files/sales.csv"), "spec": {"preset": "vat"}, "chunk_bytes": 16384}),
        ),
        ("/coordinate/scrape", json!({"urls": urls, "batch_size": 4})),
    ];
    for (route, job) in jobs {
        let answers: Vec<Value> = [&balanced, &single]
            .iter()
            .map(|c| {
                let resp = post_json(&c.url(route), &job);
                assert_eq!(resp.status, 200, "{route}: {}", resp.text());
                let mut v = resp.json();
                untimed(&mut v);
                v
            })
            .collect();
        assert_eq!(answers[0]["summary"]["status"], "complete", "{route}: {}", answers[0]["summary"]);
        assert!(answers[0]["summary"]["invocations"].as_u64().unwrap() > 3, "{route}: spread over the replicas");
        assert!(answers[0] == answers[1], "{route}: balanced and single answers differ");
    }
}

/// A replica killed with SIGKILL while a job's calls are in flight: the calls it held fail, are tried
/// again through the balancer on the replicas left, and every row comes back once, in order.
#[test]
fn a_replica_killed_mid_job_loses_nothing() {
    let site = Site::start();
    let rows = 150_000;
    site.put("sales.csv", "text/csv", fanout_testkit::data::sales(rows));
    let mut transforms: Vec<Option<Component>> = replicas("transform", 3, &site).into_iter().map(Some).collect();
    let backends: Vec<String> =
        transforms.iter().flatten().map(|r| r.url("").trim_start_matches("http://").to_owned()).collect();
    let Some(lb) = Balancer::start("a_replica_killed_mid_job_loses_nothing", &backends) else { return };
    let c = coordinator(&lb.url("/transform"), "http://127.0.0.1:9/scrape", &site);
    let job = json!({"source": site.url("/files/sales.csv"), "spec": {"columns": ["id"]}, "chunk_bytes": 32768, "concurrency": 3});
    let mut lines = stream_lines(
        "POST",
        &c.url("/coordinate/transform"),
        &[("content-type", "application/json"), ("accept", "application/x-ndjson")],
        job.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(lines.status, 200);
    let mut ids = Vec::new();
    let mut last = Value::Null;
    for line in lines.by_ref() {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if let Some(record) = v.get("record") {
            ids.push(record["id"].as_str().unwrap().parse::<usize>().unwrap());
            if ids.len() == 1 {
                // Calls are in flight on every replica now: one dies.
                drop(transforms[1].take());
            }
        } else if v.get("summary").is_some() {
            last = v;
        }
    }
    assert_eq!(last["summary"]["status"], "complete", "{last}");
    assert_eq!(last["stats"]["rows_in"], rows, "{last}");
    assert_eq!(ids, (1..=rows).collect::<Vec<_>>(), "every row once, in order");
    assert!(transforms[1].is_none(), "the replica was killed mid-job");
}
