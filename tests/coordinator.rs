//! The coordinator wired to real workers, all under wasmtime serve: jobs are
//! split as they stream in, run concurrently, retried and merged in order, and
//! nothing is lost when a worker fails. Faults injected between coordinator
//! and workers are in `coordinator_faults.rs`.

use fanout_testkit::client::{post, post_json, request, stream_lines, Response};
use fanout_testkit::component::Component;
use fanout_testkit::site::Site;
use serde_json::{json, Value};

/// A transform worker and a coordinator wired to it, splitting small files into many chunks.
fn transform_bundle(extra: &[(&str, &str)]) -> (Component, Component) {
    let worker = Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let url = worker.url("/transform");
    let mut env = vec![("FANOUT_TRANSFORM_URL", url.as_str())];
    env.extend_from_slice(extra);
    if !extra.iter().any(|(k, _)| *k == "FANOUT_MIN_CHUNK_BYTES") {
        env.push(("FANOUT_MIN_CHUNK_BYTES", "1"));
    }
    let coordinator = Component::serve("coordinator", &env);
    (worker, coordinator)
}

fn post_csv(c: &Component, query: &str, headers: &[(&str, &str)], csv: &[u8]) -> Response {
    let mut all = vec![("content-type", "text/csv")];
    all.extend_from_slice(headers);
    request("POST", &c.url(&format!("/coordinate/transform{query}")), &all, csv).unwrap()
}

/// Checks the accounting every transform answer keeps, and returns its summary.
fn accounted(v: &Value, rows: u64) -> &Value {
    let s = &v["summary"];
    assert_eq!(s["rows_in"], rows, "{s}");
    let sum = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(sum("rows_out") + sum("rows_filtered") + sum("rows_errored"), rows, "{s}");
    assert_eq!(v["stats"]["rows_in"], rows);
    s
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

/// `per_host` holds for the whole job and may be larger than a batch's concurrency: batches of one host
/// then run side by side, up to it (a batch takes of its host only what it fetches at once).
#[test]
fn a_job_wide_per_host_lets_batches_of_one_host_run_side_by_side_up_to_it() {
    let site = Site::start();
    let worker = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let c = Component::serve("coordinator", &[("FANOUT_SCRAPE_URL", &worker.url("/scrape"))]);
    let urls: Vec<String> = (0..40).map(|i| site.url(&format!("/page/side-{i}?delay_ms=300"))).collect();
    let job = json!({"urls": urls, "batch_size": 10, "concurrency": 8, "options": {"concurrency": 5, "per_host": 12}});
    let resp = post_json(&c.url("/coordinate/scrape"), &job);
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json()["summary"]["pages"], 40);
    // Two batches of five at once (a third would pass 12), never more.
    assert_eq!(site.peak(), 10, "the most pages the site had at once");
}

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
        &json!({ "urls": urls, "batch_size": 4, "select": {"h": "body > h1"}, "options": {"attempts": 1} }),
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
    let s = &v["summary"];
    assert_eq!((s["urls"].as_u64(), s["results"].as_u64()), (Some(23), Some(23)), "{s}");
    assert_eq!((s["pages"].as_u64(), s["errors"].as_u64()), (Some(20), Some(3)), "{s}");
    assert_eq!((s["batches"].as_u64(), s["invocations"].as_u64()), (Some(6), Some(6)), "{s}");
    assert_eq!(s["status"], "complete");
}

#[test]
fn scrape_ndjson_streams_batches_as_they_finish_with_progress_and_a_summary() {
    let site = Site::start();
    let worker = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let scrape_url = worker.url("/scrape");
    let c = Component::serve("coordinator", &[("FANOUT_SCRAPE_URL", &scrape_url)]);
    let urls: Vec<String> = (0..24).map(|i| site.url(&format!("/page/{i}?delay_ms=120"))).collect();
    let job = json!({ "urls": urls, "batch_size": 2, "concurrency": 1 });
    let lines = stream_lines(
        "POST",
        &c.url("/coordinate/scrape"),
        &[("content-type", "application/json"), ("accept", "application/x-ndjson")],
        job.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(lines.status, 200);
    assert_eq!(lines.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = lines.map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    let progress: Vec<&Value> = lines.iter().filter_map(|l| l.get("progress")).collect();
    assert!(progress.len() >= 2, "a 1.5 s job reports progress every 500 ms: {progress:?}");
    for p in &progress {
        assert_eq!(p["total"], 24, "{p}");
        assert!(p["done"].as_u64().unwrap() <= 24 && p["elapsed_ms"].is_u64() && p["pages_per_s"].is_u64(), "{p}");
    }
    assert!(progress.windows(2).all(|w| w[0]["done"].as_u64() <= w[1]["done"].as_u64()));
    let mut indexes: Vec<u64> = lines.iter().filter_map(|l| l["index"].as_u64()).collect();
    indexes.sort_unstable();
    assert_eq!(indexes, (0..24).collect::<Vec<_>>());
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["pages"], 24, "{summary}");
    assert_eq!(summary["status"], "complete");
}

#[test]
fn transform_job_is_chunked_and_merged_with_file_line_numbers() {
    let (_worker, c) = transform_bundle(&[]);
    let mut csv = String::from("id,note\n");
    for i in 1..=200 {
        match i {
            50 => csv.push_str("50\n"),
            120 => csv.push_str("120,\"spans\ntwo lines\"\n"),
            _ => csv.push_str(&format!("{i},n{i}\n")),
        }
    }
    let resp = post_csv(&c, "?chunk_bytes=300", &[], csv.as_bytes());
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
    let s = accounted(&v, 200);
    assert!(s["chunks"].as_u64().unwrap() > 5, "{s}");
    assert_eq!(s["chunks"], s["invocations"]);
    assert_eq!(s["status"], "complete");
}

#[test]
fn a_body_sent_in_pieces_is_split_as_it_arrives() {
    let (_worker, c) = transform_bundle(&[]);
    let csv = sales(3000);
    let whole = post_csv(&c, "?chunk_bytes=100000000&preset=vat", &[], csv.as_bytes());
    assert_eq!(whole.status, 400, "chunks over the workers' request limit are refused: {}", whole.text());
    let pieces: Vec<Vec<u8>> = csv.as_bytes().chunks(777).map(<[u8]>::to_vec).collect();
    let resp = fanout_testkit::client::request_chunked(
        "POST",
        &c.url("/coordinate/transform?chunk_bytes=5000&preset=vat"),
        &[("content-type", "text/csv")],
        pieces,
    )
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    accounted(&v, 3000);
    assert_eq!(v["records"].as_array().unwrap().len(), 2700);
    assert!(v["summary"]["chunks"].as_u64().unwrap() >= 20, "{}", v["summary"]);
}

#[test]
fn failing_workers_are_retried_and_then_reported_per_item() {
    let site = Site::start();
    // A "worker" that always answers 503: each chunk is tried three times, then
    // its rows come back as one error record that says so.
    let c = Component::serve(
        "coordinator",
        &[
            ("FANOUT_TRANSFORM_URL", &site.url("/status/503")),
            ("FANOUT_WORKER_ATTEMPTS", "3"),
            ("FANOUT_MIN_CHUNK_BYTES", "1"),
        ],
    );
    let resp = post_csv(&c, "?chunk_bytes=4", &[], b"id\n1\n2\n3\n4\n5\n");
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
    let s = accounted(&v, 5);
    assert_eq!(s["chunks_failed"].as_u64(), Some(errors.len() as u64));
    assert_eq!(s["retries"].as_u64(), Some(2 * errors.len() as u64));

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
    assert_eq!(v["summary"]["errors"], 5);
}

#[test]
fn answers_that_are_not_what_was_asked_are_retried_then_reported() {
    let site = Site::start();
    // The fixture's flaky route answers 503 twice, then 200 with an HTML page:
    // every later attempt succeeds at the HTTP level, and the coordinator still
    // refuses an answer that is not a scrape response, keeping the URL as an error.
    let c = Component::serve(
        "coordinator",
        &[("FANOUT_SCRAPE_URL", &site.url("/flaky/w/2")), ("FANOUT_WORKER_ATTEMPTS", "4")],
    );
    let resp = post_json(&c.url("/coordinate/scrape"), &json!({ "urls": ["https://example.com/"] }));
    assert_eq!(resp.status, 200);
    assert_eq!(site.hits("/flaky/w/2"), 4);
    let v = resp.json();
    let err = &v["results"][0]["error"];
    assert_eq!(err["kind"], "worker");
    assert!(err["message"].as_str().unwrap().contains("not a scrape answer"), "{err}");
    assert_eq!(v["summary"]["rejected_answers"], 2, "{}", v["summary"]);
}

#[test]
fn bad_jobs_are_refused_before_fan_out() {
    let site = Site::start();
    let c = Component::serve(
        "coordinator",
        // No transform worker: empty is unset, whatever default the host gives.
        &[
            ("FANOUT_SCRAPE_URL", &site.url("/status/500")),
            ("FANOUT_SCRAPE_CONCURRENCY", "16"),
            ("FANOUT_TRANSFORM_URL", ""),
        ],
    );
    for (job, needle) in [
        (json!({"urls": [], "batch_size": 0}), "batch_size"),
        (json!({"urls": [], "batch_size": 4294967297u64}), "batch_size"),
        (json!({"urls": [], "select": {"x": "a >"}}), "select.x"),
        (json!({"urls": [], "unknown": 1}), "unknown"),
        (json!({"urls": [], "options": {"concurrency": 32}}), "FANOUT_SCRAPE_CONCURRENCY"),
        (json!({"urls": [], "concurrency": 1000}), "FANOUT_WORKER_CONCURRENCY"),
        (json!({"urls": [], "deadline_ms": "soon"}), "deadline_ms"),
        (json!({"urls": [], "urls_source": "http://x/"}), "not both"),
        (json!({"urls_source": "file:///etc/passwd"}), "urls_source"),
    ] {
        let resp = post_json(&c.url("/coordinate/scrape"), &job);
        assert!(resp.status == 400 || resp.status == 403, "{job}: {}", resp.text());
        let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{job}: {msg}");
    }
    let resp = post_csv(&c, "?chunk_bytes=1", &[], b"id\n1\n");
    assert_eq!(resp.status, 500, "no transform worker is configured: {}", resp.text());
    assert_eq!(site.hits("/status/500"), 0, "no worker was called");

    // A worker URL that does not parse is the operator's mistake, for either job.
    let c = Component::serve(
        "coordinator",
        &[("FANOUT_SCRAPE_URL", "not a url"), ("FANOUT_TRANSFORM_URL", "http//missing-colon/transform")],
    );
    let resp = post_json(&c.url("/coordinate/scrape"), &json!({"urls": ["https://example.com/"]}));
    assert_eq!((resp.status, &resp.json()["error"]["kind"]), (500, &json!("config")), "{}", resp.text());
    let resp = post_csv(&c, "", &[], b"id\n1\n");
    assert_eq!((resp.status, &resp.json()["error"]["kind"]), (500, &json!("config")), "{}", resp.text());

    // Tiny chunks would make one worker call per row.
    let (_worker, c) = transform_bundle(&[("FANOUT_MIN_CHUNK_BYTES", "65536")]);
    let resp = post_csv(&c, "?chunk_bytes=1", &[], b"id\n1\n");
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("FANOUT_MIN_CHUNK_BYTES"), "{}", resp.text());
}

#[test]
fn transform_specs_reach_every_chunk_and_aggregates_merge_exactly() {
    let (worker, c) = transform_bundle(&[]);
    let transform_url = worker.url("/transform");
    let csv = sales(500);
    // Records: the vat preset over many chunks equals the worker over the whole file.
    let whole = post(&format!("{transform_url}?preset=vat"), "text/csv", csv.as_bytes()).json();
    let fanned = post_csv(&c, "?preset=vat&chunk_bytes=700", &[], csv.as_bytes()).json();
    assert!(fanned["summary"]["chunks"].as_u64().unwrap() > 10);
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
    let whole = request("POST", &transform_url, &headers, csv.as_bytes()).unwrap().json();
    let fanned = post_csv(&c, "?chunk_bytes=900", &[("x-fanout-spec", spec)], csv.as_bytes()).json();
    assert_eq!(fanned["groups"], whole["groups"], "{fanned}");
    assert_eq!(fanned["groups"].as_array().unwrap().len(), 4);
    accounted(&fanned, 500);
    // The same groups as NDJSON lines, then the summary line.
    let ndjson = post_csv(
        &c,
        "?chunk_bytes=900",
        &[("x-fanout-spec", spec), ("accept", "application/x-ndjson")],
        csv.as_bytes(),
    );
    let lines: Vec<Value> = ndjson.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let groups: Vec<Value> = lines.iter().filter_map(|l| l.get("group").cloned()).collect();
    assert_eq!(Value::Array(groups), whole["groups"]);
    assert_eq!(lines.last().unwrap()["summary"]["rows_in"], 500);
}

#[test]
fn transform_job_mistakes_fail_before_fan_out_and_strict_jobs_fail_whole() {
    let site = Site::start();
    let c = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", &site.url("/status/500"))]);
    for (headers, body, needle) in [
        (vec![("x-fanout-spec", r#"{"columns": ["nope"]}"#)], &b"id\n1\n"[..], "columns[0].from"),
        (vec![("x-fanout-spec", r#"{"dialect": {"delimiter": ";;"}}"#)], b"id\n1\n", "dialect.delimiter"),
        (vec![], b"", "empty"),
    ] {
        let resp = post_csv(&c, "", &headers, body);
        assert_eq!(resp.status, 400, "{}", resp.text());
        assert!(resp.json()["error"]["message"].as_str().unwrap().contains(needle), "{}", resp.text());
    }
    assert_eq!(site.hits("/status/500"), 0, "no worker was called");

    let (_worker, c) = transform_bundle(&[]);
    let spec = r#"{"columns": [{"from": "id", "type": "integer"}], "on_error": "fail"}"#;
    let resp = post_csv(&c, "?chunk_bytes=4", &[("x-fanout-spec", spec)], b"id\n1\n2\n3\nx\n5\n");
    // The bad row's chunk is not the first, so records are out before it fails the job.
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["summary"]["status"], "failed", "{v}");
    assert!(v["summary"]["reason"].as_str().unwrap().contains("line 5: column \"id\": \"x\" is not an integer"), "{v}");
    accounted(&v, 5);
    let resp = post_csv(&c, "?chunk_bytes=4", &[("x-fanout-spec", spec)], b"id\nx\n2\n3\n");
    assert_eq!(resp.status, 422, "{}", resp.text());
    let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("line 2: column \"id\": \"x\" is not an integer"), "{msg}");
}

#[test]
fn crlf_files_keep_their_line_numbers_through_the_coordinator() {
    let (_worker, c) = transform_bundle(&[]);
    let csv = b"id,v\r\n1,a\r\nbad\r\n3,c\r\n\r\n4,d\r\nalso,bad,row\r\n";
    for chunk_bytes in [1, 8, 1000] {
        let resp = post_csv(&c, &format!("?chunk_bytes={chunk_bytes}"), &[], csv);
        assert_eq!(resp.status, 200, "{}", resp.text());
        let v = resp.json();
        let lines: Vec<u64> = v["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
        assert_eq!(lines, [3, 7], "chunks of {chunk_bytes} bytes: {v}");
        accounted(&v, 5);
    }
}

#[test]
fn source_url_jobs_read_ranges_and_equal_one_invocation() {
    let site = Site::start();
    let csv = sales(2000);
    site.put("sales.csv", "text/csv", csv.clone());
    let (worker, c) = transform_bundle(&[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let whole = post(&format!("{}?preset=vat", worker.url("/transform")), "text/csv", csv.as_bytes()).json();
    // `/files/` answers HEAD; `/nohead/` refuses it, so the size comes from a ranged GET.
    for route in ["/files/sales.csv", "/nohead/sales.csv"] {
        let job = json!({ "source": site.url(route), "spec": {"preset": "vat"}, "chunk_bytes": 4000 });
        let resp = post_json(&c.url("/coordinate/transform"), &job);
        assert_eq!(resp.status, 200, "{}", resp.text());
        let v = resp.json();
        assert_eq!(v["records"], whole["records"], "{route}");
        assert_eq!(v["stats"], whole["stats"], "{route}");
        let s = &v["summary"];
        assert_eq!(s["bytes"].as_u64(), Some(csv.len() as u64), "{s}");
        assert_eq!(s["chunks"].as_u64(), Some((csv.len() as u64).div_ceil(4000)), "{s}");
        assert_eq!(s["status"], "complete");
    }
    // Sources obey the egress rules, and the spec is checked against the file's header first.
    let blocked = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", &worker.url("/transform"))]);
    let resp = post_json(&blocked.url("/coordinate/transform"), &json!({"source": site.url("/files/sales.csv")}));
    assert_eq!(resp.status, 403, "{}", resp.text());
    let resp = post_json(
        &c.url("/coordinate/transform"),
        &json!({"source": site.url("/files/sales.csv"), "spec": {"columns": ["nope"]}}),
    );
    assert_eq!(resp.status, 400, "{}", resp.text());
    let resp = post_json(&c.url("/coordinate/transform"), &json!({"source": site.url("/files/missing.csv")}));
    assert_eq!(resp.status, 502, "{}", resp.text());
    // A server that answers other bytes than the range asked for is not believed, by either component.
    let resp = post_json(&c.url("/coordinate/transform"), &json!({"source": site.url("/shifted/sales.csv")}));
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(resp.text().contains("when asked for 0-65535"), "{}", resp.text());
    let range_job = json!({"source": site.url("/shifted/sales.csv"), "start": 100, "end": 4000});
    let resp = post_json(&worker.url("/transform"), &range_job);
    assert_eq!(resp.status, 502, "{}", resp.text());
    assert!(resp.text().contains("when asked for"), "{}", resp.text());
    let resp = post_json(&c.url("/coordinate/transform"), &json!({"source": site.url("/files/sales.csv"), "chunk": 5}));
    assert_eq!(resp.status, 400, "{}", resp.text());
    assert!(resp.text().contains("unknown field"), "{}", resp.text());
}

#[test]
fn a_source_that_is_not_the_file_planned_fails_the_job_instead_of_losing_rows() {
    let site = Site::start();
    let csv = sales(3000);
    site.put("sales.csv", "text/csv", csv.clone());
    let (worker, c) = transform_bundle(&[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let n = csv.len();
    // HEAD says 30% less (or more) than the file holds, or the file is rewritten while it is read.
    let routes = [format!("/headsays/{}/sales.csv", n * 7 / 10), format!("/headsays/{}/sales.csv", n + 500)];
    for route in routes.iter().map(String::as_str).chain(["/changing/sales.csv"]) {
        let job = json!({ "source": site.url(route), "spec": {"preset": "vat"}, "chunk_bytes": 4000 });
        let resp = post_json(&c.url("/coordinate/transform"), &job);
        // The first range's worker finds out: the job fails before any output, saying why.
        assert_eq!(resp.status, 412, "{route}: {}", resp.text());
        let says =
            if route.starts_with("/changing") { "changed since the job was planned" } else { "bytes now but was" };
        assert!(resp.text().contains(says), "{route}: {}", resp.text());
        assert_eq!(resp.json()["error"]["kind"], "source_changed", "{route}: {}", resp.text());
        // The worker itself answers 412 for a range of a file that is not the one pinned.
        let range_job =
            json!({"source": site.url(route), "start": 0, "end": 4000, "pin": {"size": n, "etag": "\"v1\""}});
        let resp = post_json(&worker.url("/transform"), &range_job);
        assert_eq!(resp.status, 412, "{route}: {}", resp.text());
        assert!(resp.text().contains("source_changed"), "{route}: {}", resp.text());
    }
    // The file as it is, pinned, reads whole.
    let job = json!({ "source": site.url("/files/sales.csv"), "spec": {"preset": "vat"}, "chunk_bytes": 4000 });
    let v = post_json(&c.url("/coordinate/transform"), &job).json();
    assert_eq!(v["summary"]["status"], "complete", "{}", v["summary"]);
    assert_eq!(v["stats"]["rows_in"], 3000);
}

#[test]
fn missing_values_are_left_out_of_every_metric_through_one_call_and_many_chunks() {
    let (worker, c) = transform_bundle(&[]);
    let csv = "id,region,qty,price,day,note\n\
               1,north,2,1.5,2026-01-02,a\n\
               2,north,NA,2.5,2026-01-03,NA\n\
               3,south,4,NA,NA,b\n\
               4,NA,1,0.5,2026-01-01,c\n\
               5,south,NA,NA,2026-01-05,d\n\
               6,north,3,1.25,NA,e\n";
    let spec = concat!(
        r#"{"dialect": {"null_values": ["NA"]}, "columns": ["region", {"from": "qty", "type": "integer"}, "#,
        r#"{"from": "price", "type": "float"}, {"from": "day", "type": "date"}, "note"], "#,
        r#""aggregate": {"group_by": ["region"], "metrics": [{"op": "rows"}, {"op": "count", "column": "qty"}, "#,
        r#"{"op": "sum", "column": "qty"}, {"op": "mean", "column": "price"}, {"op": "min", "column": "day"}, "#,
        r#"{"op": "max", "column": "price"}, {"op": "count", "column": "note"}]}}"#
    );
    // Worked out by hand: NA is missing, never an error, never a value.
    let expected = json!({
        "north": {"rows": 3, "count_qty": 2, "sum_qty": 5, "mean_price": 1.75, "min_day": "2026-01-02", "max_price": 2.5, "count_note": 2},
        "south": {"rows": 2, "count_qty": 1, "sum_qty": 4, "mean_price": null, "min_day": "2026-01-05", "max_price": null, "count_note": 2},
        "null": {"rows": 1, "count_qty": 1, "sum_qty": 1, "mean_price": 0.5, "min_day": "2026-01-01", "max_price": 0.5, "count_note": 1},
    });
    let headers = [("content-type", "text/csv"), ("x-fanout-spec", spec)];
    let one = request("POST", &worker.url("/transform"), &headers, csv.as_bytes()).unwrap();
    let many = post_csv(&c, "?chunk_bytes=30", &[("x-fanout-spec", spec)], csv.as_bytes());
    for (how, resp) in [("one call", one), ("many chunks", many)] {
        assert_eq!(resp.status, 200, "{how}: {}", resp.text());
        let v = resp.json();
        assert_eq!(v["stats"]["rows_errored"], 0, "{how}: {v}");
        let mut got = serde_json::Map::new();
        for g in v["groups"].as_array().unwrap() {
            let mut g = g.as_object().unwrap().clone();
            let region = g.remove("region").unwrap();
            got.insert(region.as_str().unwrap_or("null").to_owned(), Value::Object(g));
        }
        assert_eq!(Value::Object(got), expected, "{how}");
    }
    // Records: a missing string is null, not the text "NA".
    let records = post_csv(
        &c,
        "?chunk_bytes=30",
        &[("x-fanout-spec", r#"{"dialect": {"null_values": ["NA"]}}"#)],
        csv.as_bytes(),
    )
    .json();
    assert_eq!(records["records"][1]["note"], Value::Null, "{records}");
    assert_eq!(records["records"][1]["qty"], Value::Null);
    assert_eq!(records["records"][0]["note"], "a");
}
