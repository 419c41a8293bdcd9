//! The coordinator when things go wrong, all under wasmtime serve: worker
//! calls that fail, hang, break off or come back subtly wrong (through the
//! test kit's fault-injecting proxy), workers that are down, failure
//! thresholds, deadlines, a caller that goes away, records too large to send,
//! streamed inputs and `on_error: fail`.
//!
//! Every test checks the accounting, not just the happy part of the answer:
//! each data row (or URL) comes back exactly once, as a record, a filtered
//! row, or an error record (a chunk that failed is one error record for all
//! its rows), `summary.rows_in = rows_out + rows_filtered + rows_errored`, and
//! `summary.status` says how the job ended. Every job is timed, and every wait
//! is bounded.

use fanout_testkit::client::{post, request, request_chunked, stream_lines, Response};
use fanout_testkit::component::Component;
use fanout_testkit::proxy::{Fault, Proxy};
use fanout_testkit::site::Site;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------
// Inputs

/// A sales CSV of `rows` data rows, one line each, row `i` on line `i + 1`
/// with `id` `i`. Under the `vat` preset, every 10th row has a negative amount
/// and is filtered out ([`filtered_ids`]), and every 37th has an amount that
/// is not a number and is an error record.
fn sales(rows: u64) -> String {
    let mut csv = String::from("id,amount,date,category,region\n");
    for i in 1..=rows {
        let amount = match i {
            _ if i % 37 == 0 => "n/a".to_owned(),
            _ if i % 10 == 0 => "-1.00".to_owned(),
            _ => format!("{}.{:02}", i * 37 % 900 + 1, i % 100),
        };
        let region = ["north", "south", "east"][(i % 3) as usize];
        csv.push_str(&format!("{i},{amount},2026-03-{:02}, Cat{} ,{region}\n", i % 28 + 1, i % 4));
    }
    csv
}

/// The ids of the rows of [`sales`] that the `vat` preset filters out.
fn filtered_ids(rows: u64) -> Vec<u64> {
    (1..=rows).filter(|i| i % 10 == 0 && i % 37 != 0).collect()
}

/// `id` then a note, rows `1..=rows`, with `bad_id` (if any) written as `x`, so
/// that `{"type": "integer"}` fails on line `bad_id + 1`.
fn ids(rows: u64, bad_id: Option<u64>) -> String {
    let mut csv = String::from("id,note\n");
    for i in 1..=rows {
        match bad_id {
            Some(b) if b == i => csv.push_str("x,bad\n"),
            _ => csv.push_str(&format!("{i},n{i}\n")),
        }
    }
    csv
}

/// URLs of fixture pages `ids`, each answered after `delay_ms`.
fn pages(site: &Site, ids: impl IntoIterator<Item = u64>, delay_ms: u64) -> Vec<String> {
    ids.into_iter().map(|i| site.url(&format!("/page/{i}?delay_ms={delay_ms}"))).collect()
}

/// How many requests fixture pages `0..count` have had, in all.
fn page_hits(site: &Site, count: u64) -> usize {
    (0..count).map(|i| site.hits(&format!("/page/{i}"))).sum()
}

// ---------------------------------------------------------------------------
// Components

/// A transform worker.
fn transform_worker(env: &[(&str, &str)]) -> Component {
    Component::serve("transform", env)
}

/// A scrape worker that may fetch the loopback fixture site.
fn scrape_worker() -> Component {
    Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")])
}

/// A proxy in front of `worker`, passing everything until told otherwise.
fn proxy_to(worker: &Component) -> Proxy {
    Proxy::start(&worker.url(""))
}

/// A coordinator sending transform chunks to `base` (a worker or a proxy:
/// `http://127.0.0.1:PORT`), with chunks as small as asked for, and `env` on top.
fn transform_coordinator(base: &str, env: &[(&str, &str)]) -> Component {
    let url = format!("{base}/transform");
    let mut all = vec![("FANOUT_TRANSFORM_URL", url.as_str()), ("FANOUT_MIN_CHUNK_BYTES", "1")];
    all.extend_from_slice(env);
    Component::serve("coordinator", &all)
}

/// A coordinator sending scrape batches to `base`, with `env` on top.
fn scrape_coordinator(base: &str, env: &[(&str, &str)]) -> Component {
    let url = format!("{base}/scrape");
    let mut all = vec![("FANOUT_SCRAPE_URL", url.as_str())];
    all.extend_from_slice(env);
    Component::serve("coordinator", &all)
}

// ---------------------------------------------------------------------------
// Requests

/// `POST /coordinate/transform?QUERY` with a CSV body and extra `headers`.
fn transform(c: &Component, query: &str, headers: &[(&str, &str)], csv: &str) -> Response {
    let mut all = vec![("content-type", "text/csv")];
    all.extend_from_slice(headers);
    let url = c.url(&format!("/coordinate/transform?{query}"));
    request("POST", &url, &all, csv.as_bytes()).unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", c.log()))
}

/// `POST /coordinate/scrape` with a JSON job.
fn scrape(c: &Component, job: &Value) -> Response {
    let url = c.url("/coordinate/scrape");
    request("POST", &url, &[("content-type", "application/json")], job.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", c.log()))
}

/// Runs `f`, and fails if it took `limit` or longer.
fn within<T>(limit: Duration, what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    let took = started.elapsed();
    assert!(took < limit, "{what} took {took:?}, more than {limit:?}");
    out
}

/// The JSON body of a 200 answer; fails showing the body and the coordinator's log otherwise.
fn ok_json(resp: &Response, c: &Component) -> Value {
    assert_eq!(resp.status, 200, "{}\ncoordinator log:\n{}", resp.text(), c.log());
    json_of(resp, c)
}

/// The body as JSON; fails showing the body and the coordinator's log when it
/// is not (an answer that broke off, say).
fn json_of(resp: &Response, c: &Component) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}\ncoordinator log:\n{}", resp.text(), c.log()))
}

// ---------------------------------------------------------------------------
// Accounting

/// The rows an error record stands for: a chunk-level record (`worker`,
/// `not_attempted`, `too_large`) says "the N rows on lines A to B"; any other
/// stands for the one row on its line. Rows are one line each in these tests,
/// so a chunk-level record covers exactly lines A to B.
fn error_lines(e: &Value) -> Vec<u64> {
    let line = e["line"].as_u64().unwrap_or_else(|| panic!("an error record without a line: {e}"));
    match e["kind"].as_str() {
        Some("worker" | "not_attempted" | "too_large") => {
            let msg = e["message"].as_str().unwrap_or_default();
            let words: Vec<&str> = msg.split_whitespace().collect();
            let parsed = match words.as_slice() {
                ["the", n, "rows", "on", "lines", a, "to", b, ..] => {
                    (n.parse::<u64>().ok(), a.parse::<u64>().ok(), b.parse::<u64>().ok())
                }
                _ => (None, None, None),
            };
            let (Some(n), Some(a), Some(b)) = parsed else {
                panic!("a chunk error record that does not say which rows it stands for: {e}");
            };
            assert_eq!(a, line, "{e}");
            assert_eq!(b - a + 1, n, "rows are one line each here: {e}");
            (a..=b).collect()
        }
        _ => vec![line],
    }
}

/// The `id`s of a transform answer's records, in answer order.
fn record_ids(v: &Value) -> Vec<u64> {
    let records = v["records"].as_array().unwrap_or_else(|| panic!("no records array: {v}"));
    records
        .iter()
        .map(|r| match &r["id"] {
            Value::Number(id) => id.as_u64(),
            Value::String(id) => id.parse().ok(),
            _ => None,
        })
        .map(|id| id.unwrap_or_else(|| panic!("a record without a numeric id: {v}")))
        .collect()
}

/// Checks that a JSON transform answer accounts for each of the `rows` data
/// rows of a CSV whose row `i` is on line `i + 1` with `id` `i` exactly once:
/// as a record, as one of `filtered` (ids), or inside an error record; and
/// that the summary agrees with the stats and with itself. Returns the ids of
/// the records, in answer order.
fn assert_rows_accounted(v: &Value, rows: u64, filtered: &[u64]) -> Vec<u64> {
    let (stats, summary) = (&v["stats"], &v["summary"]);
    let n = |s: &Value, k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} is not a count in {s}\n{v}"));
    for k in ["rows_in", "rows_out", "rows_filtered", "rows_errored"] {
        assert_eq!(n(summary, k), n(stats, k), "summary.{k} differs from stats.{k}: {v}");
    }
    assert_eq!(n(summary, "rows_in"), rows, "rows_in is not every row sent: {summary}");
    assert_eq!(
        n(summary, "rows_in"),
        n(summary, "rows_out") + n(summary, "rows_filtered") + n(summary, "rows_errored"),
        "the counts do not add up: {summary}"
    );
    assert_eq!(n(summary, "rows_filtered"), filtered.len() as u64, "{summary}");
    let ids = record_ids(v);
    assert_eq!(ids.len() as u64, n(summary, "rows_out"), "{summary}");
    let errors = v["errors"].as_array().unwrap_or_else(|| panic!("no errors array: {v}"));
    let mut seen: Vec<u64> = ids.iter().map(|id| id + 1).collect();
    seen.extend(filtered.iter().map(|id| id + 1));
    let mut error_rows = 0;
    let mut not_attempted = 0;
    for e in errors {
        let lines = error_lines(e);
        error_rows += lines.len() as u64;
        if e["kind"] == "not_attempted" {
            not_attempted += lines.len() as u64;
        }
        seen.extend(lines);
    }
    assert_eq!(error_rows, n(summary, "rows_errored"), "error records do not cover the errored rows: {v}");
    assert_eq!(
        not_attempted,
        n(summary, "rows_not_attempted"),
        "error records of kind not_attempted cover {not_attempted} rows, summary.rows_not_attempted says otherwise: {v}"
    );
    seen.sort_unstable();
    let expected: Vec<u64> = (2..rows + 2).collect();
    if seen != expected {
        let set: BTreeSet<u64> = seen.iter().copied().collect();
        let missing: Vec<u64> = expected.iter().copied().filter(|l| !set.contains(l)).collect();
        let twice: Vec<u64> = seen.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).collect();
        panic!("rows not accounted exactly once: lines missing {missing:?}, lines twice {twice:?}\n{v}");
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "records out of file order: {ids:?}");
    ids
}

/// Checks that a JSON scrape answer holds one result for each of `urls`, in
/// order, and that its summary counts them.
fn assert_urls_accounted(v: &Value, urls: &[String]) {
    let results = v["results"].as_array().unwrap_or_else(|| panic!("no results array: {v}"));
    assert_eq!(results.len(), urls.len(), "{v}");
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i, "{r}");
        assert_eq!(r["url"], urls[i].as_str(), "{r}");
        assert!(r.get("page").is_some() != r.get("error").is_some(), "a result is a page or an error: {r}");
    }
    let s = &v["summary"];
    let pages = results.iter().filter(|r| r.get("page").is_some()).count();
    let not_attempted = results.iter().filter(|r| r["error"]["kind"] == "not_attempted").count();
    assert_eq!(s["urls"], urls.len(), "{s}");
    assert_eq!(s["results"], urls.len(), "{s}");
    assert_eq!(s["pages"], pages, "{s}");
    assert_eq!(s["errors"], urls.len() - pages, "{s}");
    assert_eq!(s["not_attempted"], not_attempted, "{s}");
}

/// A scrape result without what changes from run to run (fetch and parse times).
fn steady(result: &Value) -> Value {
    let mut r = result.clone();
    if let Some(page) = r.get_mut("page").and_then(Value::as_object_mut) {
        page.remove("fetch_ms");
        page.remove("parse_us");
    }
    r
}

/// The message of a panic caught by [`catch_unwind`].
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or("(no message)".to_owned(), |s| (*s).to_owned()),
    }
}

// ---------------------------------------------------------------------------
// 1. One bad worker call, retried

/// The faults met by the first worker call of a job, one job each.
const FIRST_CALL_FAULTS: [Fault; 11] = [
    Fault::Status(500),
    Fault::Status(503),
    Fault::Hang,
    Fault::Reset,
    Fault::Truncate,
    Fault::CorruptJson,
    Fault::DropItem { fix_stats: false },
    Fault::DropItem { fix_stats: true },
    Fault::DuplicateItem { fix_stats: true },
    Fault::AddItem { fix_stats: false },
    Fault::AddItem { fix_stats: true },
];

/// Runs the 300-row vat job through a fresh coordinator and proxy to `worker`
/// whose first call meets `fault`, and checks it against `reference` (the
/// worker's answer for the whole file).
fn check_first_call_fault(worker: &Component, fault: Fault, csv: &str, reference: &Value) -> Result<(), String> {
    let proxy = proxy_to(worker);
    proxy.set_rule(move |n| if n == 0 { fault } else { Fault::Pass });
    let c = transform_coordinator(&proxy.url(""), &[("FANOUT_WORKER_TIMEOUT_MS", "1500")]);
    catch_unwind(AssertUnwindSafe(|| {
        let resp = within(Duration::from_secs(15), &format!("the job with {fault:?}"), || {
            transform(&c, "preset=vat&chunk_bytes=1000", &[], csv)
        });
        let v = ok_json(&resp, &c);
        let s = &v["summary"];
        assert_eq!(s["status"], "complete", "{s}");
        assert!(s["chunks"].as_u64().unwrap() > 5, "too few chunks to tell: {s}");
        assert_rows_accounted(&v, 300, &filtered_ids(300));
        assert_eq!(v["records"], reference["records"], "records differ from the fault-free answer");
        assert_eq!(v["errors"], reference["errors"], "error records differ from the fault-free answer");
        assert_eq!(v["stats"], reference["stats"], "stats differ from the fault-free answer");
        assert!(s["retries"].as_u64().unwrap() >= 1, "the faulty call was not retried: {s}");
        assert_eq!(s["invocations"], s["chunks"].as_u64().unwrap() + s["retries"].as_u64().unwrap(), "{s}");
        assert_eq!(proxy.requests() as u64, s["invocations"].as_u64().unwrap(), "{s}");
        if matches!(
            fault,
            Fault::CorruptJson | Fault::DropItem { .. } | Fault::DuplicateItem { .. } | Fault::AddItem { .. }
        ) {
            assert!(s["rejected_answers"].as_u64().unwrap() >= 1, "the altered answer was not refused: {s}");
        }
        if fault == Fault::Hang {
            assert!(s["timeouts"].as_u64().unwrap() >= 1, "the hung call did not time out: {s}");
        }
    }))
    .map_err(|p| format!("{fault:?}: {}\ncoordinator log:\n{}", panic_message(p), c.log()))
}

#[test]
fn a_fault_in_the_first_worker_call_is_retried_and_the_answer_is_as_without_it() {
    let worker = transform_worker(&[]);
    let csv = sales(300);
    let reference = post(&worker.url("/transform?preset=vat"), "text/csv", csv.as_bytes());
    assert_eq!(reference.status, 200, "{}", reference.text());
    let reference = reference.json();
    assert_eq!(reference["stats"]["rows_errored"], 8, "the reference should have error records: {reference}");

    // Without a fault, through the same kind of coordinator and proxy: the same answer, no retry.
    let proxy = proxy_to(&worker);
    let c = transform_coordinator(&proxy.url(""), &[("FANOUT_WORKER_TIMEOUT_MS", "1500")]);
    let v = ok_json(&transform(&c, "preset=vat&chunk_bytes=1000", &[], &csv), &c);
    assert_rows_accounted(&v, 300, &filtered_ids(300));
    assert_eq!(
        (&v["records"], &v["errors"], &v["stats"]),
        (&reference["records"], &reference["errors"], &reference["stats"]),
        "without a fault, the coordinator's answer differs from the worker's for the whole file"
    );
    assert_eq!((v["summary"]["retries"].as_u64(), v["summary"]["rejected_answers"].as_u64()), (Some(0), Some(0)));

    // Each fault with its own coordinator, all at once: the hung call's 1.5 s dominates.
    let failures: Vec<String> = thread::scope(|s| {
        let runs: Vec<_> = FIRST_CALL_FAULTS
            .iter()
            .map(|&fault| {
                let (worker, csv, reference) = (&worker, &csv, &reference);
                (fault, s.spawn(move || check_first_call_fault(worker, fault, csv, reference)))
            })
            .collect();
        runs.into_iter()
            .filter_map(|(fault, run)| match run.join() {
                Ok(checked) => checked.err(),
                // Only the set-up is outside the check's own catch: a component that did not start.
                Err(p) => Some(format!("{fault:?}: {}", panic_message(p))),
            })
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} faults were not handled:\n\n{}",
        failures.len(),
        FIRST_CALL_FAULTS.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------
// 2. Every call bad

#[test]
fn a_fault_in_every_call_gives_up_after_the_attempts_and_reports_every_row() {
    let worker = transform_worker(&[]);
    let csv = ids(60, None);
    for fault in [Fault::DropItem { fix_stats: true }, Fault::Status(500)] {
        let proxy = proxy_to(&worker);
        proxy.set_rule(move |_| fault);
        let c = transform_coordinator(&proxy.url(""), &[("FANOUT_WORKER_ATTEMPTS", "2")]);
        let resp = within(Duration::from_secs(10), &format!("the job with {fault:?} always"), || {
            transform(&c, "chunk_bytes=100", &[], &csv)
        });
        let v = ok_json(&resp, &c);
        let s = &v["summary"];
        assert_eq!(v["records"], json!([]), "{fault:?}: {v}");
        assert_rows_accounted(&v, 60, &[]);
        assert_eq!(s["rows_errored"], 60, "{fault:?}: {s}");
        let chunks = s["chunks"].as_u64().unwrap();
        assert!(chunks > 3, "{s}");
        assert_eq!(s["chunks_failed"], chunks, "{fault:?}: {s}");
        let errors = v["errors"].as_array().unwrap();
        assert_eq!(errors.len() as u64, chunks, "one error record per chunk: {v}");
        for e in errors {
            assert_eq!(e["kind"], "worker", "{fault:?}: {e}");
            let msg = e["message"].as_str().unwrap();
            assert!(msg.contains("gave up after 2 attempts"), "{fault:?}: {e}");
            match fault {
                Fault::Status(_) => assert!(msg.contains("500"), "{e}"),
                _ => assert!(msg.contains("refused"), "{e}"),
            }
        }
        assert_eq!(proxy.requests() as u64, 2 * chunks, "{fault:?}: not 2 calls per chunk: {s}");
        assert_eq!((s["invocations"].as_u64(), s["retries"].as_u64()), (Some(2 * chunks), Some(chunks)), "{s}");
        let rejected = if fault == Fault::Status(500) { 0 } else { 2 * chunks };
        assert_eq!(s["rejected_answers"], rejected, "{fault:?}: {s}");
        // Every chunk failed, but no threshold was set: the job ran to its end.
        assert_eq!(s["status"], "complete", "{s}");
    }
}

// ---------------------------------------------------------------------------
// 3. A worker that is down

/// A worker whose request limit is smaller than the coordinator's refuses every chunk
/// with a 413: each is reported once, as too large, and never sent again.
#[test]
fn a_chunk_the_worker_refuses_as_too_large_is_reported_once() {
    let worker = transform_worker(&[("FANOUT_MAX_REQUEST_BYTES", "50")]);
    let proxy = proxy_to(&worker);
    let c = transform_coordinator(&proxy.url(""), &[("FANOUT_WORKER_ATTEMPTS", "3")]);
    let resp = within(Duration::from_secs(10), "a job whose chunks the worker refuses", || {
        transform(&c, "chunk_bytes=100", &[], &ids(60, None))
    });
    let v = ok_json(&resp, &c);
    assert_rows_accounted(&v, 60, &[]);
    let chunks = v["summary"]["chunks"].as_u64().unwrap();
    assert_eq!(proxy.requests() as u64, chunks, "one call per chunk, no retries: {}", v["summary"]);
    for e in v["errors"].as_array().unwrap() {
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains("refused the request as too large (413)"), "{e}");
        assert!(!msg.contains("gave up"), "{e}");
    }
}

#[test]
fn a_worker_that_is_down_leaves_every_row_and_url_accounted_as_a_worker_error() {
    // Transform: a worker port that refuses connections.
    let site = Site::start();
    let gone = Proxy::start(&site.url(""));
    let base = gone.url("");
    drop(gone);
    let c = transform_coordinator(&base, &[("FANOUT_WORKER_ATTEMPTS", "2")]);
    let csv = ids(40, None);
    let resp = within(Duration::from_secs(10), "a transform job with its worker down", || {
        transform(&c, "chunk_bytes=100", &[], &csv)
    });
    let v = ok_json(&resp, &c);
    assert_rows_accounted(&v, 40, &[]);
    assert_eq!(v["summary"]["rows_errored"], 40, "{v}");
    for e in v["errors"].as_array().unwrap() {
        assert_eq!(e["kind"], "worker", "{e}");
        assert!(e["message"].as_str().unwrap().contains("gave up after 2 attempts"), "{e}");
    }

    // Scrape: a worker whose connections are reset before it reads a byte.
    let down = Proxy::start(&site.url(""));
    down.set_rule(|_| Fault::Down);
    let c = scrape_coordinator(&down.url(""), &[("FANOUT_WORKER_ATTEMPTS", "2")]);
    let urls = pages(&site, 0..7, 0);
    let resp = within(Duration::from_secs(10), "a scrape job with its worker down", || {
        scrape(&c, &json!({"urls": urls, "batch_size": 2}))
    });
    let v = ok_json(&resp, &c);
    assert_urls_accounted(&v, &urls);
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["error"]["kind"], "worker", "{r}");
    }
    assert_eq!(v["summary"]["batches_failed"], 4, "{}", v["summary"]);
    assert_eq!(down.requests(), 8, "2 attempts for each of 4 batches");
    assert_eq!(page_hits(&site, 7), 0, "no page was fetched");
}

// ---------------------------------------------------------------------------
// 4. Scrape answers with results missing or extra

#[test]
fn scrape_answers_with_results_missing_or_extra_are_refused_and_retried() {
    let site = Site::start();
    let worker = scrape_worker();
    let proxy = proxy_to(&worker);
    let c = scrape_coordinator(&proxy.url(""), &[]);
    let urls = pages(&site, 0..12, 0);
    let job = json!({"urls": urls, "batch_size": 3});

    let v = ok_json(&scrape(&c, &job), &c);
    assert_urls_accounted(&v, &urls);
    let reference: Vec<Value> = v["results"].as_array().unwrap().iter().map(steady).collect();
    for (i, r) in reference.iter().enumerate() {
        assert_eq!(r["page"]["title"], format!("Page {i}"), "{r}");
    }

    for fault in [
        Fault::DuplicateItem { fix_stats: false },
        Fault::DropItem { fix_stats: false },
        Fault::AddItem { fix_stats: false },
    ] {
        let first = proxy.requests();
        proxy.set_rule(move |n| if n == first { fault } else { Fault::Pass });
        let resp = within(Duration::from_secs(10), &format!("the scrape job with {fault:?}"), || scrape(&c, &job));
        let v = ok_json(&resp, &c);
        assert_urls_accounted(&v, &urls);
        let results: Vec<Value> = v["results"].as_array().unwrap().iter().map(steady).collect();
        assert_eq!(results, reference, "{fault:?}: the results differ from the fault-free ones");
        let s = &v["summary"];
        assert_eq!(s["status"], "complete", "{s}");
        assert_eq!((s["retries"].as_u64(), s["rejected_answers"].as_u64()), (Some(1), Some(1)), "{fault:?}: {s}");
        assert_eq!(s["invocations"], 5, "4 batches and one retry: {s}");
    }
}

// ---------------------------------------------------------------------------
// 5. Failure thresholds

#[test]
fn a_transform_job_stops_once_more_rows_fail_than_tolerated() {
    let site = Site::start();
    let failing = Proxy::start(&site.url(""));
    failing.set_rule(|_| Fault::Status(500));
    let c = transform_coordinator(&failing.url(""), &[("FANOUT_WORKER_ATTEMPTS", "1")]);
    let csv = ids(200, None);
    let resp = within(Duration::from_secs(10), "a job over its failure threshold", || {
        transform(&c, "chunk_bytes=60&concurrency=1&tolerated_failures=0", &[], &csv)
    });
    let v = ok_json(&resp, &c);
    let s = &v["summary"];
    assert_eq!(s["status"], "stopped", "{s}");
    assert!(s["reason"].as_str().is_some_and(|r| r.contains("tolerated")), "{s}");
    assert_rows_accounted(&v, 200, &[]);
    let chunks = s["chunks"].as_u64().unwrap();
    assert!(chunks >= 20, "{s}");
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors[0]["kind"], "worker", "the first chunk failed: {}", errors[0]);
    let not_attempted = errors.iter().filter(|e| e["kind"] == "not_attempted").count() as u64;
    assert!(not_attempted >= chunks - 2, "{not_attempted} chunks not attempted of {chunks}: {v}");
    for e in errors.iter().filter(|e| e["kind"] == "not_attempted") {
        assert!(e["message"].as_str().unwrap().contains("tolerated"), "{e}");
    }
    assert!(failing.requests() <= 2, "{} worker calls for {chunks} chunks", failing.requests());
    assert_eq!(s["invocations"], failing.requests(), "{s}");
}

#[test]
fn a_scrape_job_stops_once_a_larger_share_of_urls_fails_than_tolerated() {
    let site = Site::start();
    let worker = scrape_worker();
    let c = scrape_coordinator(&worker.url(""), &[]);
    let urls: Vec<String> = (0..20).map(|i| site.url(&format!("/status/404?i={i}"))).collect();
    let job = json!({"urls": urls, "batch_size": 1, "concurrency": 1, "tolerated_failure_percent": 10});
    let resp = within(Duration::from_secs(10), "a scrape job over its failure share", || scrape(&c, &job));
    let v = ok_json(&resp, &c);
    assert_urls_accounted(&v, &urls);
    let s = &v["summary"];
    assert_eq!(s["status"], "stopped", "{s}");
    assert!(s["reason"].as_str().is_some_and(|r| r.contains("tolerated")), "{s}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results[0]["error"]["kind"], "http_status", "{}", results[0]);
    // The total is known (a JSON list of 20): 10% of it is 2, so the third failure stops the job.
    assert_eq!(s["reason"], "3 of 20 items failed (15.0%), more than the 10% tolerated", "{s}");
    assert_eq!(s["not_attempted"], 17, "{s}");
    assert_eq!(site.hits("/status/404"), 3, "pages fetched for a job that stopped at the third");
}

// ---------------------------------------------------------------------------
// 6. The job's deadline

#[test]
fn a_scrape_job_stops_at_its_deadline_with_every_url_accounted() {
    let site = Site::start();
    let worker = scrape_worker();
    let c = scrape_coordinator(&worker.url(""), &[]);
    let urls = pages(&site, 0..40, 400);
    let job = json!({"urls": urls, "batch_size": 2, "concurrency": 1, "deadline_ms": 1500});
    let resp = within(Duration::from_secs(4), "a job with a 1.5 s deadline", || scrape(&c, &job));
    let v = ok_json(&resp, &c);
    assert_urls_accounted(&v, &urls);
    let s = &v["summary"];
    assert_eq!(s["status"], "stopped", "{s}");
    assert!(s["reason"].as_str().is_some_and(|r| r.contains("deadline")), "{s}");
    let results = v["results"].as_array().unwrap();
    let done = results.iter().take_while(|r| r.get("page").is_some()).count();
    assert!(done >= 2, "about 3 batches fit in the deadline, but {done} pages were done: {s}");
    for r in &results[done..] {
        assert_eq!(r["error"]["kind"], "not_attempted", "after the deadline: {r}");
    }
    assert!(s["not_attempted"].as_u64().unwrap() >= 30, "{s}");
}

// ---------------------------------------------------------------------------
// 7. Batches end before the call waiting for them gives up

#[test]
fn each_batch_ends_before_the_worker_call_times_out_so_slow_pages_are_not_retried() {
    let site = Site::start();
    let worker = scrape_worker();
    let c = scrape_coordinator(&worker.url(""), &[("FANOUT_WORKER_TIMEOUT_MS", "3000")]);
    let urls = pages(&site, 0..4, 6000);
    let resp = within(Duration::from_millis(4500), "a batch of pages slower than the worker timeout", || {
        scrape(&c, &json!({"urls": urls, "batch_size": 4}))
    });
    let v = ok_json(&resp, &c);
    assert_urls_accounted(&v, &urls);
    for r in v["results"].as_array().unwrap() {
        assert_eq!(r["error"]["kind"], "timeout", "the worker's own per-URL timeout: {r}");
    }
    let s = &v["summary"];
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(
        (s["invocations"].as_u64(), s["retries"].as_u64(), s["timeouts"].as_u64()),
        (Some(1), Some(0), Some(0)),
        "{s}"
    );
    for i in 0..4 {
        assert_eq!(site.hits(&format!("/page/{i}")), 1, "page {i} fetched once");
    }
}

// ---------------------------------------------------------------------------
// 8. A caller that goes away

#[test]
fn a_caller_that_goes_away_stops_the_job() {
    let site = Site::start();
    let worker = scrape_worker();
    let c = scrape_coordinator(&worker.url(""), &[]);
    let urls = pages(&site, 0..200, 300);
    let job = json!({"urls": urls, "batch_size": 2, "concurrency": 2});
    let headers = [("content-type", "application/json"), ("accept", "application/x-ndjson")];
    let mut lines = stream_lines("POST", &c.url("/coordinate/scrape"), &headers, job.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("POST /coordinate/scrape: {e}\n{}", c.log()));
    assert_eq!(lines.status, 200, "{}", c.log());
    let first: Vec<Value> = within(Duration::from_secs(5), "the first two lines", || {
        lines.by_ref().take(2).map(|l| serde_json::from_str(&l.expect("a line")).expect("NDJSON")).collect()
    });
    assert_eq!(first.len(), 2, "{first:?}");
    for line in &first {
        assert!(line.get("index").is_some() || line.get("progress").is_some(), "{line}");
    }
    drop(lines);

    thread::sleep(Duration::from_secs(2));
    let settled = page_hits(&site, 200);
    thread::sleep(Duration::from_secs(2));
    let later = page_hits(&site, 200);
    assert_eq!(later, settled, "pages were still being fetched 2 s after the caller left\n{}", c.log());
    assert!(settled < 60, "{settled} of 200 pages fetched for a caller that left after two lines");
    // Ending the job means cancelling its calls in flight, which must not trap the component.
    assert!(!c.log().contains("wasm backtrace"), "the coordinator trapped:\n{}", c.log());
}

// ---------------------------------------------------------------------------
// 9. A record too large for one worker request

#[test]
fn a_record_over_the_request_limit_is_an_error_record_and_never_sent() {
    let worker = transform_worker(&[]);
    let proxy = proxy_to(&worker);
    let c = transform_coordinator(&proxy.url(""), &[("FANOUT_MAX_REQUEST_BYTES", "4000")]);
    let big = "B".repeat(10_000);
    let mut csv = String::from("id,note\n");
    for i in 1..=40u64 {
        if i == 17 {
            csv.push_str(&format!("{i},\"{big}\"\n"));
        } else {
            csv.push_str(&format!("{i},\"n, {i}\"\n"));
        }
    }
    let resp = within(Duration::from_secs(10), "a job with an oversized record", || {
        transform(&c, "chunk_bytes=100", &[], &csv)
    });
    let v = ok_json(&resp, &c);
    let ids = assert_rows_accounted(&v, 40, &[]);
    assert_eq!(ids, (1..=40).filter(|&i| i != 17).collect::<Vec<_>>());
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{v}");
    assert_eq!((&errors[0]["kind"], &errors[0]["line"]), (&json!("too_large"), &json!(18)), "{}", errors[0]);
    assert!(errors[0]["message"].as_str().unwrap().contains("lines 18 to 18"), "{}", errors[0]);
    let s = &v["summary"];
    assert_eq!(s["status"], "complete", "{s}");
    let chunks = s["chunks"].as_u64().unwrap();
    assert_eq!(s["chunks_failed"], 1, "{s}");
    // The oversized record is a chunk of its own that no worker call carried.
    assert_eq!(s["invocations"], chunks - 1, "{s}");
    assert_eq!(proxy.requests() as u64, chunks - 1, "the proxy saw a call for the oversized record: {s}");
}

// ---------------------------------------------------------------------------
// 10. Streamed inputs

#[test]
fn a_streamed_csv_larger_than_a_worker_request_is_split_and_complete() {
    let limit = [("FANOUT_MAX_REQUEST_BYTES", "262144")];
    let worker = transform_worker(&limit);
    let c = transform_coordinator(&worker.url(""), &limit);
    let mut csv = String::from("id,amount,note\n");
    let mut rows = 0u64;
    while csv.len() < 2_000_000 {
        rows += 1;
        csv.push_str(&format!("{rows},{}.{:02},a note of some length for row {rows}\n", rows % 1000, rows % 100));
    }
    let pieces: Vec<Vec<u8>> = csv.as_bytes().chunks(64 * 1024).map(<[u8]>::to_vec).collect();
    let url = c.url("/coordinate/transform?chunk_bytes=100000");
    let resp = within(Duration::from_secs(10), "a 2 MB streamed job", || {
        request_chunked("POST", &url, &[("content-type", "text/csv")], pieces)
            .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", c.log()))
    });
    let v = ok_json(&resp, &c);
    let ids = assert_rows_accounted(&v, rows, &[]);
    assert_eq!(ids.len() as u64, rows, "{}", v["summary"]);
    let s = &v["summary"];
    assert_eq!(s["status"], "complete", "{s}");
    assert_eq!(s["bytes"], csv.len() - "id,amount,note\n".len(), "{s}");
    assert!(s["chunks"].as_u64().unwrap() >= 20, "{s}");
    assert_eq!(s["retries"], 0, "no chunk is over the workers' limit: {s}");
}

/// Checks a 413 answer: a JSON error that names the limit of 10000 bytes.
fn assert_too_large(resp: &Response, c: &Component) {
    let v = json_of(resp, c);
    assert_eq!(v["error"]["kind"], "payload_too_large", "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| m.contains("10000")), "{v}");
}

/// Checks a streamed job cut short by `FANOUT_MAX_JOB_BYTES`: a 413 with a JSON
/// error, or, when the answer had already started, a failed summary with
/// every row read accounted once and none made up.
fn assert_cut_short(resp: &Response, rows_sent: u64, c: &Component) {
    match resp.status {
        413 => assert_too_large(resp, c),
        200 => {
            let v = json_of(resp, c);
            let s = &v["summary"];
            assert_eq!(s["status"], "failed", "{s}");
            let rows_in = s["rows_in"].as_u64().unwrap();
            assert!(rows_in <= rows_sent, "{s}");
            let ids = assert_rows_accounted(&v, rows_in, &[]);
            assert!(ids.iter().all(|&id| id <= rows_in), "{ids:?}");
        }
        other => panic!("{other}: {}\ncoordinator log:\n{}", resp.text(), c.log()),
    }
}

#[test]
fn a_job_over_the_byte_limit_is_refused_with_413() {
    let worker = transform_worker(&[]);
    let c = transform_coordinator(&worker.url(""), &[("FANOUT_MAX_JOB_BYTES", "10000")]);
    let csv = ids(5000, None);
    assert!(csv.len() > 50_000);
    // With a content-length: refused before any of it is read.
    let resp = transform(&c, "chunk_bytes=1000", &[], &csv);
    assert_eq!(resp.status, 413, "{}", resp.text());
    assert_too_large(&resp, &c);
    // Chunked: refused once it grows past the limit.
    let pieces: Vec<Vec<u8>> = csv.as_bytes().chunks(4096).map(<[u8]>::to_vec).collect();
    let url = c.url("/coordinate/transform?chunk_bytes=1000");
    let resp = within(Duration::from_secs(10), "a chunked job over the byte limit", || {
        request_chunked("POST", &url, &[("content-type", "text/csv")], pieces)
            .unwrap_or_else(|e| panic!("POST {url}: {e}\n{}", c.log()))
    });
    assert_cut_short(&resp, 5000, &c);
}

#[test]
fn a_plain_text_url_list_is_read_line_by_line() {
    let site = Site::start();
    let worker = scrape_worker();
    let c = scrape_coordinator(&worker.url(""), &[]);
    let urls = pages(&site, 0..8, 0);
    let body = format!(
        "# the fixture pages\n{}\n\n   \n{}\n# the rest\n{}\n",
        urls[..3].join("\n"),
        urls[3..5].join("\r\n"),
        urls[5..].join("\n\n")
    );
    let job = r#"{"batch_size": 3, "select": {"h": "body > h1"}}"#;
    let headers = [("content-type", "text/plain"), ("x-fanout-job", job)];
    let resp = request("POST", &c.url("/coordinate/scrape"), &headers, body.as_bytes()).unwrap();
    let v = ok_json(&resp, &c);
    assert_urls_accounted(&v, &urls);
    for (i, r) in v["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(r["page"]["title"], format!("Page {i}"), "{r}");
        assert_eq!(r["page"]["select"]["h"], format!("Heading {i}"), "{r}");
    }
    let s = &v["summary"];
    assert_eq!((s["status"].as_str(), s["batches"].as_u64()), (Some("complete"), Some(3)), "{s}");
}

#[test]
fn a_url_list_cut_mid_line_keeps_every_url_and_a_too_long_line_is_one_error() {
    let site = Site::start();
    let worker = scrape_worker();
    let c = scrape_coordinator(&worker.url(""), &[]);
    let urls = pages(&site, 0..30, 0);
    let body = format!("{}\n", urls.join("\r\n"));
    let pieces: Vec<Vec<u8>> = body.as_bytes().chunks(7).map(<[u8]>::to_vec).collect();
    let url = c.url("/coordinate/scrape");
    let headers = [("content-type", "text/plain"), ("x-fanout-job", r#"{"batch_size": 4}"#)];
    let v = ok_json(&request_chunked("POST", &url, &headers, pieces).unwrap(), &c);
    assert_urls_accounted(&v, &urls);
    assert_eq!(v["summary"]["status"], "complete", "{}", v["summary"]);

    // A line over 64 KiB (the last one without a line break, too) is one error result at its place;
    // the URLs around it are scraped.
    for end in ["\n", ""] {
        let long = format!("http://127.0.0.1/{}", "a".repeat(70_000));
        let body = format!("{}\n{long}\n{}\n{long}{end}", urls[..5].join("\n"), urls[5]);
        let pieces: Vec<Vec<u8>> = body.as_bytes().chunks(4096).map(<[u8]>::to_vec).collect();
        let v = ok_json(&request_chunked("POST", &url, &headers, pieces).unwrap(), &c);
        let results = v["results"].as_array().unwrap();
        assert_eq!(results.len(), 8, "{}", v["summary"]);
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r["index"], i);
            if i == 5 || i == 7 {
                assert_eq!(r["error"]["kind"], "invalid_url", "{r}");
                let line = if i == 5 { 6 } else { 8 };
                let says = format!("line {line} of the URL list is longer than 65536 bytes");
                assert!(r["error"]["message"].as_str().unwrap().contains(&says), "{r}");
                assert!(r["url"].as_str().unwrap().len() < 200, "the result does not carry the whole line");
            } else {
                assert!(r["page"].is_object(), "{r}");
            }
        }
    }

    // Lines of control characters take six times their length as JSON: batches are sized by that, so
    // none is refused as too large and the valid URL among them is scraped.
    let junk = "\u{1}".repeat(60_000);
    let body = format!("{}\n{}\n", vec![junk; 49].join("\n"), urls[0]);
    let headers = [("content-type", "text/plain"), ("x-fanout-job", r#"{"batch_size": 50}"#)];
    let v = ok_json(&request("POST", &url, &headers, body.as_bytes()).unwrap(), &c);
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 50, "{}", v["summary"]);
    for r in &results[..49] {
        assert_eq!(r["error"]["kind"], "invalid_url", "{}", r["error"]["message"].as_str().unwrap_or("").len());
    }
    assert!(results[49]["page"].is_object(), "{}", results[49]["error"]);
}

#[test]
fn a_url_list_file_is_fetched_and_batched() {
    let site = Site::start();
    let worker = scrape_worker();
    let c = scrape_coordinator(&worker.url(""), &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let urls = pages(&site, 0..10, 0);
    site.put("urls.txt", "text/plain", format!("# list\n{}\n", urls.join("\n")));
    let job = json!({"urls_source": site.url("/files/urls.txt"), "batch_size": 4});
    let v = ok_json(&scrape(&c, &job), &c);
    assert_urls_accounted(&v, &urls);
    for (i, r) in v["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(r["page"]["title"], format!("Page {i}"), "{r}");
    }
    let s = &v["summary"];
    assert_eq!((s["status"].as_str(), s["batches"].as_u64()), (Some("complete"), Some(3)), "{s}");
    assert_eq!(site.hits("/files/urls.txt"), 1);
}

// ---------------------------------------------------------------------------
// 11. on_error: fail

const STRICT_IDS: &str = r#"{"columns": [{"from": "id", "type": "integer"}], "on_error": "fail"}"#;

#[test]
fn on_error_fail_in_the_first_chunk_is_a_422_naming_the_line() {
    let worker = transform_worker(&[]);
    let c = transform_coordinator(&worker.url(""), &[]);
    let resp = transform(&c, "chunk_bytes=30", &[("x-fanout-spec", STRICT_IDS)], &ids(60, Some(2)));
    assert_eq!(resp.status, 422, "{}\ncoordinator log:\n{}", resp.text(), c.log());
    let msg = json_of(&resp, &c)["error"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(msg.contains("line 3"), "{msg}");
}

/// The bytes of the data lines of `csv` from line `from` on (the header is line 1).
fn bytes_from_line(csv: &str, from: u64) -> u64 {
    csv.split_inclusive('\n').skip(from as usize - 1).map(|l| l.len() as u64).sum()
}

/// Runs a strict job over `csv` (60 rows of [`ids`]) whose only bad row is on
/// line 41, and checks that the answer fails there: the chunks before the one
/// holding it come back as records, that chunk as a `worker` error record
/// naming the line, every later one as a `not_attempted` error record, and
/// nothing after it as a record.
fn assert_strict_job_fails_at_line_41(c: &Component, query: &str, csv: &str) {
    let resp = within(Duration::from_secs(10), "a strict job with a bad row", || {
        transform(c, query, &[("x-fanout-spec", STRICT_IDS)], csv)
    });
    let v = ok_json(&resp, c);
    let s = &v["summary"];
    assert_eq!(s["status"], "failed", "{s}");
    assert!(s["reason"].as_str().is_some_and(|r| r.contains("line 41")), "{s}");
    let errors = v["errors"].as_array().unwrap();
    assert!(!errors.is_empty(), "{v}");
    let first_failed_line = errors[0]["line"].as_u64().unwrap();
    assert!(first_failed_line <= 41 && first_failed_line > 2, "{}", errors[0]);
    assert!(errors[0]["message"].as_str().unwrap().contains("line 41"), "the failing chunk says why: {}", errors[0]);
    assert_eq!(
        record_ids(&v),
        (1..first_failed_line - 1).collect::<Vec<_>>(),
        "the records are not exactly the rows before the failing chunk (on line {first_failed_line})\n{v}\n\
         coordinator log:\n{}",
        c.log()
    );
    // The failing chunk was attempted: it is a worker failure; the chunks after it were cut short.
    assert_eq!(errors[0]["kind"], "worker", "the failing chunk: {}", errors[0]);
    for e in &errors[1..] {
        assert_eq!(e["kind"], "not_attempted", "a chunk after the failing one: {e}");
    }
    assert_rows_accounted(&v, 60, &[]);
    let failing_rows = error_lines(&errors[0]).len() as u64;
    assert_eq!(
        s["rows_not_attempted"],
        62 - first_failed_line - failing_rows,
        "the rows after the failing chunk (lines {first_failed_line} and on, less its {failing_rows}): {v}"
    );
    assert_eq!(s["bytes"], bytes_from_line(csv, 2), "{s}");
    assert_eq!(
        s["bytes_not_processed"],
        bytes_from_line(csv, first_failed_line),
        "the bytes from line {first_failed_line} on were not processed: {s}"
    );
}

#[test]
fn on_error_fail_in_a_later_chunk_fails_the_answer_after_the_rows_before_it() {
    let worker = transform_worker(&[]);
    let c = transform_coordinator(&worker.url(""), &[]);
    // One call at a time: no chunk after the failing one is answered before it.
    assert_strict_job_fails_at_line_41(&c, "chunk_bytes=30&concurrency=1", &ids(60, Some(40)));
}

#[test]
fn on_error_fail_in_a_slow_chunk_leaves_no_record_after_the_bad_row() {
    // Calls run at once (8), and the bad row carries 2 MB, so its chunk is
    // answered (422) well after the small chunks that follow it: their records
    // must still not come out after the job failed.
    let worker = transform_worker(&[]);
    let c = transform_coordinator(&worker.url(""), &[]);
    let big = "y".repeat(2_000_000);
    let csv = ids(60, Some(40)).replace("x,bad\n", &format!("x,{big}\n"));
    assert_strict_job_fails_at_line_41(&c, "chunk_bytes=30", &csv);
}
