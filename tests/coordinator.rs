//! The coordinator wired to real workers, all under wasmtime serve: jobs are
//! split, run concurrently, retried and merged in order, and nothing is lost
//! when a worker fails.

use fanout_testkit::client::{post, post_json};
use fanout_testkit::component::Component;
use fanout_testkit::site::Site;
use serde_json::{json, Value};

#[test]
fn scrape_job_is_batched_and_merged_in_order() {
    let site = Site::start();
    let worker = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let scrape_url = worker.url("/scrape");
    let c = Component::serve("coordinator", &[("FANOUT_SCRAPE_URL", &scrape_url), ("FANOUT_WORKER_CONCURRENCY", "3")]);
    let urls: Vec<String> = (0..23)
        .map(|i| {
            if i % 7 == 3 {
                site.url("/status/500")
            } else {
                site.url(&format!("/page/{i}?delay_ms={}", (23 - i) * 5))
            }
        })
        .collect();
    let resp = post_json(
        &c.url("/coordinate/scrape"),
        &json!({ "urls": urls, "batch_size": 4, "select": {"h": "body > h1"} }),
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 23);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["url"], urls[i]);
        if i % 7 == 3 {
            assert_eq!(r["error"]["kind"], "http_status", "{r}");
        } else {
            assert_eq!(r["page"]["title"], format!("Page {i}"), "{r}");
            assert_eq!(r["page"]["select"]["h"], format!("Heading {i}"), "{r}");
        }
    }
    assert_eq!(v["stats"], json!({"urls": 23, "pages": 20, "errors": 3, "invocations": 6}));
}

#[test]
fn transform_job_is_chunked_and_merged_with_file_line_numbers() {
    let worker = Component::serve("transform", &[]);
    let transform_url = worker.url("/transform");
    let c = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", &transform_url)]);
    let mut csv = String::from("id,note\n");
    for i in 1..=200 {
        match i {
            50 => csv.push_str("50\n"),
            120 => csv.push_str("120,\"spans\ntwo lines\"\n"),
            _ => csv.push_str(&format!("{i},n{i}\n")),
        }
    }
    let resp = post(&c.url("/coordinate/transform?chunk_bytes=300"), "text/csv", csv.as_bytes());
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    let records = v["records"].as_array().unwrap();
    assert_eq!(records.len(), 199);
    let ids: Vec<u32> = records.iter().map(|r| r["id"].as_str().unwrap().parse().unwrap()).collect();
    assert_eq!(ids, (1..=200).filter(|&i| i != 50).collect::<Vec<_>>());
    assert_eq!(records.iter().find(|r| r["id"] == "120").unwrap()["note"], "spans\ntwo lines");
    assert_eq!(
        v["errors"],
        json!([{"line": 51, "kind": "field_count", "message": "row has 1 fields but the header has 2"}])
    );
    assert_eq!(v["stats"], json!({"rows_in": 200, "rows_out": 199, "rows_filtered": 0, "rows_errored": 1}));
    assert!(v["invocations"].as_u64().unwrap() > 5, "{}", v["invocations"]);
}

#[test]
fn failing_workers_are_retried_and_then_reported_per_item() {
    let site = Site::start();
    // A "worker" that always answers 503: each chunk is tried three times, then
    // its rows come back as one error record that says so.
    let c = Component::serve(
        "coordinator",
        &[("FANOUT_TRANSFORM_URL", &site.url("/status/503")), ("FANOUT_WORKER_ATTEMPTS", "3")],
    );
    let resp = post(&c.url("/coordinate/transform?chunk_bytes=8"), "text/csv", b"id\n1\n2\n3\n4\n5\n");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["records"], json!([]));
    assert_eq!(v["stats"], json!({"rows_in": 5, "rows_out": 0, "rows_filtered": 0, "rows_errored": 5}));
    let errors = v["errors"].as_array().unwrap();
    let covered: u64 = errors
        .iter()
        .map(|e| e["message"].as_str().unwrap().split_whitespace().nth(1).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(covered, 5, "{errors:?}");
    for e in errors {
        assert_eq!(e["kind"], "worker");
        assert!(e["message"].as_str().unwrap().contains("503"), "{e}");
        assert!(e["message"].as_str().unwrap().contains("after 3 attempts"), "{e}");
    }
    assert_eq!(site.hits("/status/503"), 3 * errors.len());

    // A worker that is not there at all: every URL still comes back, as an error.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let c = Component::serve(
        "coordinator",
        &[("FANOUT_SCRAPE_URL", &format!("http://{dead}/scrape")), ("FANOUT_WORKER_ATTEMPTS", "2")],
    );
    let urls: Vec<String> = (0..5).map(|i| format!("https://example.com/{i}")).collect();
    let resp = post_json(&c.url("/coordinate/scrape"), &json!({ "urls": urls, "batch_size": 2 }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    let kinds: Vec<&Value> = v["results"].as_array().unwrap().iter().map(|r| &r["error"]["kind"]).collect();
    assert_eq!(kinds, vec![&json!("worker"); 5]);
    assert_eq!(v["stats"]["errors"], 5);
}

#[test]
fn retries_stop_at_the_first_success_and_its_answer_is_still_checked() {
    let site = Site::start();
    // The fixture's flaky route answers 503 twice, then 200 with an HTML page:
    // the third attempt succeeds at the HTTP level, and the coordinator still
    // refuses an answer that is not a scrape response, keeping the URL as an error.
    let c = Component::serve(
        "coordinator",
        &[("FANOUT_SCRAPE_URL", &site.url("/flaky/w/2")), ("FANOUT_WORKER_ATTEMPTS", "5")],
    );
    let resp = post_json(&c.url("/coordinate/scrape"), &json!({ "urls": ["https://example.com/"] }));
    assert_eq!(resp.status, 200);
    assert_eq!(site.hits("/flaky/w/2"), 3);
    let err = &resp.json()["results"][0]["error"];
    assert_eq!(err["kind"], "worker");
    assert!(err["message"].as_str().unwrap().contains("not a scrape response"), "{err}");
}

#[test]
fn bad_scrape_jobs_are_refused_before_fan_out() {
    let c = Component::serve("coordinator", &[("FANOUT_SCRAPE_URL", "http://127.0.0.1:9/scrape")]);
    for (job, needle) in [
        (json!({"urls": [], "batch_size": 0}), "batch_size"),
        (json!({"urls": [], "select": {"x": "a >"}}), "select.x"),
        (json!({"urls": [], "unknown": 1}), "unknown"),
    ] {
        let resp = post_json(&c.url("/coordinate/scrape"), &job);
        assert_eq!(resp.status, 400, "{}", resp.text());
        let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{msg}");
    }
}

fn sales(rows: usize) -> String {
    let mut csv = String::from("id,amount,date,category,region,product\n");
    for i in 1..=rows {
        let amount = if i % 10 == 0 { "-1.00".to_owned() } else { format!("{}.{:02}", i * 37 % 900, i % 100) };
        let region = ["north", "south", "east"][i % 3];
        csv.push_str(&format!("{i},{amount},2026-03-{:02},Cat{},{region},p{}\n", i % 28 + 1, i % 4, i % 2));
    }
    csv
}

#[test]
fn transform_specs_reach_every_chunk_and_aggregates_merge_exactly() {
    let worker = Component::serve("transform", &[]);
    let transform_url = worker.url("/transform");
    let c = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", &transform_url)]);
    let csv = sales(500);
    // Records: the vat preset over many chunks equals the worker over the whole file.
    let whole = post(&format!("{transform_url}?preset=vat"), "text/csv", csv.as_bytes()).json();
    let fanned = post(&c.url("/coordinate/transform?preset=vat&chunk_bytes=700"), "text/csv", csv.as_bytes()).json();
    assert!(fanned["invocations"].as_u64().unwrap() > 10);
    assert_eq!(fanned["records"], whole["records"]);
    assert_eq!(fanned["stats"], whole["stats"]);
    assert_eq!(fanned["stats"]["rows_filtered"], 50);
    // Aggregates: partial states from every chunk merge to exactly the whole file's groups.
    // One line: a header value cannot hold line breaks.
    let spec = concat!(
        r#"{"preset": "sales-summary", "aggregate": {"group_by": ["region", "product"], "#,
        r#""metrics": [{"name": "total", "op": "sum", "column": "amount"}, {"op": "count"}, {"op": "mean", "column": "amount"}], "#,
        r#""sort": [{"by": "total", "desc": true}], "limit": 4}}"#
    );
    let headers = [("content-type", "text/csv"), ("x-fanout-spec", spec)];
    let whole = fanout_testkit::client::request("POST", &transform_url, &headers, csv.as_bytes()).unwrap().json();
    let fanned = fanout_testkit::client::request(
        "POST",
        &c.url("/coordinate/transform?chunk_bytes=900"),
        &headers,
        csv.as_bytes(),
    )
    .unwrap()
    .json();
    assert_eq!(fanned["groups"], whole["groups"], "{fanned}");
    assert_eq!(fanned["groups"].as_array().unwrap().len(), 4);
}

#[test]
fn transform_job_mistakes_fail_before_fan_out_and_strict_jobs_fail_whole() {
    let site = Site::start();
    let c = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", &site.url("/status/500"))]);
    let headers = [("content-type", "text/csv"), ("x-fanout-spec", r#"{"columns": ["nope"]}"#)];
    let resp = fanout_testkit::client::request("POST", &c.url("/coordinate/transform"), &headers, b"id\n1\n").unwrap();
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.json()["error"]["message"].as_str().unwrap().contains("columns[0].from"));
    assert_eq!(site.hits("/status/500"), 0, "no worker was called");

    let worker = Component::serve("transform", &[]);
    let transform_url = worker.url("/transform");
    let c = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", &transform_url)]);
    let spec = r#"{"columns": [{"from": "id", "type": "integer"}], "on_error": "fail"}"#;
    let headers = [("content-type", "text/csv"), ("x-fanout-spec", spec)];
    let csv = b"id\n1\n2\n3\nx\n5\n";
    let resp =
        fanout_testkit::client::request("POST", &c.url("/coordinate/transform?chunk_bytes=4"), &headers, csv).unwrap();
    assert_eq!(resp.status, 422, "{}", resp.text());
    let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("line 5: column \"id\": \"x\" is not an integer"), "{msg}");
}

#[test]
fn crlf_files_keep_their_line_numbers_through_the_coordinator() {
    let worker = Component::serve("transform", &[]);
    let transform_url = worker.url("/transform");
    let c = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", &transform_url)]);
    let csv = b"id,v\r\n1,a\r\nbad\r\n3,c\r\n\r\n4,d\r\nalso,bad,row\r\n";
    for chunk_bytes in [1, 8, 1000] {
        let resp = post(&c.url(&format!("/coordinate/transform?chunk_bytes={chunk_bytes}")), "text/csv", csv);
        assert_eq!(resp.status, 200, "{}", resp.text());
        let v = resp.json();
        let lines: Vec<u64> = v["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, [3, 7], "chunks of {chunk_bytes} bytes: {v}");
        assert_eq!(v["stats"]["rows_in"], 5);
    }
}
