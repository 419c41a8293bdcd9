//! Coordinator benchmark: whole jobs through the coordinator and its workers
//! under wasmtime serve, side by side with the native core and with one direct
//! worker call over the same data. Run with `scripts/bench.sh coordinator`.
//!
//! 1. Transform: the `vat` preset over generated sales rows (1,000,000 and
//!    5,000,000 by default; `FANOUT_BENCH_ROWS=N,M` to choose, `0` for none), measured as
//!    * the native core, one thread, over the whole file;
//!    * one `POST /transform` of the whole file;
//!    * `POST /coordinate/transform` with the file as a streamed body, and as
//!      a source URL the workers read in ranges, at worker concurrency 1, 2, 4, 8.
//!
//!    Wall time is from the first byte sent to the last byte received. Every
//!    run has fresh runtime processes, whose peak resident set is reported.
//! 2. Scrape: 10,000 pages of 40 KB served after 50 ms each, through
//!    `/coordinate/scrape` with 50 pages in flight in total (spread over 1, 2,
//!    4 or 8 worker calls at once, two batches each); the bound is in-flight / latency.
//!    Then the same pages served at once (standard fields, 2 calls of 25): a job bound by CPU.

use fanout::framing::Format;
use fanout::transform::engine::{read_header, Placement, Progress, Transformer};
use fanout::transform::program::Program;
use fanout::transform::spec;
use fanout_testkit::client::{request_counted, Counted};
use fanout_testkit::component::Component;
use fanout_testkit::site::Site;
use serde_json::{json, Value};
use std::time::Instant;

const MB: f64 = 1e6;
const MIB: f64 = 1024.0 * 1024.0;

fn summary(answer: &Counted) -> Value {
    let tail = String::from_utf8_lossy(&answer.tail);
    let at = tail.rfind("\"summary\":").expect("the answer ends with its summary");
    let v: Value = serde_json::Deserializer::from_str(&tail[at + 10..]).into_iter().next().unwrap().unwrap();
    v
}

/// The native core over the whole file, one thread, the answer made in 64 KiB pieces.
fn native(data: &[u8]) -> (f64, u64) {
    let vat = spec::parse(br#"{"preset": "vat"}"#).unwrap();
    let header = read_header(&vat.dialect, data).unwrap();
    let program = Program::compile(&vat, &header.names).unwrap();
    let placement = Placement { line_offset: header.lines, range_start: None };
    let started = Instant::now();
    let mut t = Transformer::new(&vat, &program, &data[header.data_start..], Format::Json, placement).unwrap();
    let mut piece = Vec::with_capacity(80 * 1024);
    let mut out = 0u64;
    loop {
        piece.clear();
        let progress = t.fill(&mut piece, 64 * 1024).unwrap();
        out += piece.len() as u64;
        if progress == Progress::Done {
            break;
        }
    }
    (started.elapsed().as_secs_f64(), out)
}

struct Run {
    label: String,
    secs: f64,
    /// Each runtime process: its name, peak resident set and CPU seconds.
    procs: Vec<(&'static str, u64, f64)>,
}

/// A runtime process being measured: its peak memory and CPU time from now on.
struct Measured<'a> {
    name: &'static str,
    c: &'a Component,
    cpu: f64,
}

impl<'a> Measured<'a> {
    fn start(name: &'static str, c: &'a Component) -> Measured<'a> {
        c.reset_peak_rss();
        Measured { name, c, cpu: c.cpu_secs() }
    }

    fn end(&self) -> (&'static str, u64, f64) {
        (self.name, self.c.peak_rss(), self.c.cpu_secs() - self.cpu)
    }
}

fn print_row(r: &Run, bytes: usize, rows: usize, native: f64) {
    let total: u64 = r.procs.iter().map(|p| p.1).sum();
    let each: Vec<String> =
        r.procs.iter().map(|(n, rss, cpu)| format!("{n} {:.0} MiB {cpu:.2} s", *rss as f64 / MIB)).collect();
    println!(
        "  {:<44} {:6.2} s {:6.1} MB/s {:9.0} rows/s {:5.2}x native | peak RSS {:4.0} MiB | {}",
        r.label,
        r.secs,
        bytes as f64 / MB / r.secs,
        rows as f64 / r.secs,
        r.secs / native,
        total as f64 / MIB,
        each.join(", ")
    );
}

fn transform(rows: usize, site: &Site) {
    let data = fanout_testkit::data::sales(rows);
    let (native_secs, out_bytes) = native(&data);
    println!(
        "transform: vat preset, {rows} rows, {:.1} MB of CSV -> {:.1} MB of JSON",
        data.len() as f64 / MB,
        out_bytes as f64 / MB
    );
    println!(
        "  {:<34} {:7.2} s {:7.1} MB/s {:10.0} rows/s",
        "native core, 1 thread",
        native_secs,
        data.len() as f64 / MB / native_secs,
        rows as f64 / native_secs
    );

    let limit = (data.len() + 1024).to_string();
    let worker = Component::serve("transform", &[("FANOUT_MAX_REQUEST_BYTES", &limit)]);
    let measured = Measured::start("worker", &worker);
    let started = Instant::now();
    let direct =
        request_counted("POST", &worker.url("/transform?preset=vat"), &[("content-type", "text/csv")], &data).unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(direct.status, 200);
    print_row(
        &Run { label: "one /transform call".into(), secs, procs: vec![measured.end()] },
        data.len(),
        rows,
        native_secs,
    );
    drop(worker);

    let name = format!("sales-{rows}.csv");
    site.put(&name, "text/csv", data.clone());
    for source in [false, true] {
        for concurrency in [1, 2, 4, 8] {
            let worker = Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
            let url = worker.url("/transform");
            let coordinator = Component::serve(
                "coordinator",
                &[
                    ("FANOUT_TRANSFORM_URL", &url),
                    ("FANOUT_ALLOW_PRIVATE_HOSTS", "true"),
                    ("FANOUT_MAX_JOB_BYTES", "1000000000000"),
                ],
            );
            let measured = [Measured::start("coordinator", &coordinator), Measured::start("worker", &worker)];
            let started = Instant::now();
            let answer = if source {
                let job = json!({"source": site.url(&format!("/files/{name}")), "spec": {"preset": "vat"}, "concurrency": concurrency});
                request_counted("POST", &coordinator.url("/coordinate/transform"), &[("content-type", "application/json")], job.to_string().as_bytes())
            } else {
                let path = format!("/coordinate/transform?preset=vat&concurrency={concurrency}");
                request_counted("POST", &coordinator.url(&path), &[("content-type", "text/csv")], &data)
            }
            .unwrap();
            let secs = started.elapsed().as_secs_f64();
            assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.head[..answer.head.len().min(500)]));
            let s = summary(&answer);
            assert_eq!(s["rows_in"].as_u64(), Some(rows as u64), "{s}");
            assert_eq!(s["status"], "complete", "{s}");
            assert!(
                answer.bytes.abs_diff(out_bytes) < 2048,
                "the merged records are the native answer's: {} vs {out_bytes}",
                answer.bytes
            );
            let label = format!(
                "coordinator, {}, concurrency {concurrency}",
                if source { "source URL" } else { "streamed body" }
            );
            let procs = measured.iter().map(Measured::end).collect();
            print_row(&Run { label, secs, procs }, data.len(), rows, native_secs);
        }
    }
}

fn scrape(site: &Site) {
    let (pages, latency_ms, in_flight) = (10_000usize, 50u64, 50usize);
    println!("scrape: {pages} pages of 40 KB, {latency_ms} ms latency, {in_flight} pages in flight in total");
    let urls: Vec<String> =
        (0..pages).map(|i| site.url(&format!("/page/{i}?pad=40000&delay_ms={latency_ms}"))).collect();
    for calls in [1usize, 2, 4, 8] {
        let per_call = in_flight / calls;
        let scraper = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
        let url = scraper.url("/scrape");
        let coordinator = Component::serve("coordinator", &[("FANOUT_SCRAPE_URL", &url)]);
        // Two batches per call: a batch's last pages leave slots idle until the next batch starts.
        let job = json!({"urls": urls, "batch_size": pages / (2 * calls), "concurrency": calls,
            "options": {"concurrency": per_call, "per_host": per_call}});
        let measured = [Measured::start("coordinator", &coordinator), Measured::start("worker", &scraper)];
        let started = Instant::now();
        let answer = request_counted(
            "POST",
            &coordinator.url("/coordinate/scrape"),
            &[("content-type", "application/json")],
            job.to_string().as_bytes(),
        )
        .unwrap();
        let secs = started.elapsed().as_secs_f64();
        let s = summary(&answer);
        assert_eq!(s["pages"].as_u64(), Some(pages as u64), "{s}");
        let rate = pages as f64 / secs;
        let bound = (per_call * calls) as f64 * 1000.0 / latency_ms as f64;
        let procs: Vec<String> = measured
            .iter()
            .map(Measured::end)
            .map(|(n, rss, cpu)| format!("{n} {:.0} MiB {cpu:.2} s", rss as f64 / MIB))
            .collect();
        println!(
            "  {calls} calls x {per_call:>2} pages: {secs:6.2} s = {rate:5.0} pages/s, {:.2} of the {bound:.0} pages/s bound | {}",
            rate / bound,
            procs.join(", ")
        );
    }
    cpu_bound_scrape(site, pages);
}

/// The same pages served at once, standard fields only: a job bound by CPU, not by latency.
fn cpu_bound_scrape(site: &Site, pages: usize) {
    let urls: Vec<String> = (0..pages).map(|i| site.url(&format!("/page/{i}?pad=40000"))).collect();
    let scraper = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let url = scraper.url("/scrape");
    let coordinator = Component::serve("coordinator", &[("FANOUT_SCRAPE_URL", &url)]);
    let job =
        json!({"urls": urls, "batch_size": 500, "concurrency": 2, "options": {"concurrency": 25, "per_host": 25}});
    let measured = [Measured::start("coordinator", &coordinator), Measured::start("worker", &scraper)];
    let started = Instant::now();
    let answer = request_counted(
        "POST",
        &coordinator.url("/coordinate/scrape"),
        &[("content-type", "application/json")],
        job.to_string().as_bytes(),
    )
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(summary(&answer)["pages"].as_u64(), Some(pages as u64));
    let procs: Vec<String> =
        measured.iter().map(Measured::end).map(|(n, _, cpu)| format!("{n} {cpu:.2} s CPU")).collect();
    println!(
        "scrape, CPU-bound: {pages} pages of 40 KB at 0 ms, 2 calls x 25: {secs:.2} s = {:.0} pages/s | {}",
        pages as f64 / secs,
        procs.join(", ")
    );
}

fn main() {
    let sizes: Vec<usize> = std::env::var("FANOUT_BENCH_ROWS")
        .ok()
        .map(|v| v.split(',').map(|n| n.trim().parse().expect("FANOUT_BENCH_ROWS holds row counts")).collect())
        .unwrap_or_else(|| vec![1_000_000, 5_000_000]);
    let site = Site::start();
    // FANOUT_BENCH_ROWS=0 runs the scrape benchmark alone.
    for rows in sizes.into_iter().filter(|&n| n > 0) {
        transform(rows, &site);
    }
    if std::env::var("FANOUT_BENCH_SKIP_SCRAPE").is_err() {
        scrape(&site);
    }
}
