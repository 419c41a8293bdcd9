//! Transform jobs: the `vat` preset over generated sales rows, measured as the
//! native core, one `POST /transform` call, and `POST /coordinate/transform`
//! with the rows as a streamed body and as a source URL the workers read in
//! ranges, at each worker concurrency.
//!
//! Wall time is from the first byte sent to the last byte received. Every
//! coordinator run has fresh runtime processes, whose peak resident set and CPU
//! time are measured from the request on, not from start-up.

use crate::measure::{describe, summary, total_rss, Measured, Proc, MB, MIB};
use crate::native::{self, Native};
use anyhow::{Context, Result};
use fanout_testkit::client::{request_counted, Counted};
use fanout_testkit::component::Component;
use fanout_testkit::site::Site;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

/// Calls of the one `/transform` call run, in one runtime process; the best counts, as for the native core.
const DIRECT_REPEATS: usize = 3;

/// How the coordinator gets the rows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// In the request body, cut into chunks as it arrives.
    Streamed,
    /// As a URL the workers read in byte ranges.
    Source,
}

impl Mode {
    pub fn label(self) -> &'static str {
        match self {
            Mode::Streamed => "streamed body",
            Mode::Source => "source URL",
        }
    }
}

/// One coordinator job.
pub struct Coordinated {
    pub mode: Mode,
    pub concurrency: usize,
    pub secs: f64,
    pub procs: Vec<Proc>,
}

/// The best of the one `/transform` calls.
pub struct Direct {
    pub secs: f64,
    /// The time the component spent transforming, as it reports (`process_us`): no body in or answer out.
    pub inside_secs: f64,
    pub procs: Vec<Proc>,
}

/// Every run over one job size.
pub struct Job {
    pub rows: usize,
    pub csv_bytes: usize,
    pub native: Native,
    pub direct: Direct,
    pub runs: Vec<Coordinated>,
}

impl Job {
    pub fn rows_per_sec(&self, secs: f64) -> f64 {
        self.rows as f64 / secs
    }

    pub fn mb_per_sec(&self, secs: f64) -> f64 {
        self.csv_bytes as f64 / MB / secs
    }

    pub fn run(&self, mode: Mode, concurrency: usize) -> Option<&Coordinated> {
        self.runs.iter().find(|r| r.mode == mode && r.concurrency == concurrency)
    }
}

/// Runs every measurement over `rows` generated rows; `scratch` holds the file the native core reads.
pub fn measure(rows: usize, concurrency: &[usize], site: &Site, scratch: &Path) -> Result<Job> {
    let data = fanout_testkit::data::sales(rows);
    let file = scratch.join(format!("sales-{rows}.csv"));
    std::fs::write(&file, &data).with_context(|| format!("cannot write {}", file.display()))?;
    let native = native::run(&file)?;
    std::fs::remove_file(&file).with_context(|| format!("cannot remove {}", file.display()))?;
    println!(
        "transform: vat preset, {rows} rows, {:.1} MB of CSV -> {:.1} MB of JSON",
        data.len() as f64 / MB,
        native.out_bytes as f64 / MB
    );
    let direct = direct(&data, native.out_bytes);
    let mut job = Job { rows, csv_bytes: data.len(), native, direct, runs: Vec::new() };
    let native_proc = Proc { name: "native", peak_rss: job.native.peak_rss, cpu_secs: job.native.secs };
    print_row(&job, "native core, 1 thread", job.native.secs, &[native_proc]);
    print_row(&job, "one /transform call, inside the component", job.direct.inside_secs, &[]);
    print_row(&job, "one /transform call", job.direct.secs, &job.direct.procs);

    let name = format!("sales-{rows}.csv");
    site.put(&name, "text/csv", data.clone());
    let source = site.url(&format!("/files/{name}"));
    for mode in [Mode::Streamed, Mode::Source] {
        for &c in concurrency {
            let run = coordinated(&data, rows, job.native.out_bytes, mode, c, &source);
            print_row(&job, &format!("coordinator, {}, concurrency {c}", mode.label()), run.secs, &run.procs);
            job.runs.push(run);
        }
    }
    Ok(job)
}

fn print_row(job: &Job, label: &str, secs: f64, procs: &[Proc]) {
    let memory = if procs.is_empty() {
        String::new()
    } else {
        format!(" | peak RSS {:4.0} MiB | {}", total_rss(procs) as f64 / MIB, describe(procs))
    };
    println!(
        "  {label:<52} {secs:6.2} s {:6.1} MB/s {:9.0} rows/s {:5.2}x native{memory}",
        job.mb_per_sec(secs),
        job.rows_per_sec(secs),
        secs / job.native.secs,
    );
}

/// One `POST /transform` of the whole file, [`DIRECT_REPEATS`] times in one fresh runtime process.
fn direct(data: &[u8], native_bytes: u64) -> Direct {
    let limit = (data.len() + 1024).to_string();
    let worker = Component::serve("transform", &[("FANOUT_MAX_REQUEST_BYTES", &limit)]);
    let mut best: Option<Direct> = None;
    for _ in 0..DIRECT_REPEATS {
        let measured = Measured::start("worker", &worker);
        let started = Instant::now();
        let answer =
            request_counted("POST", &worker.url("/transform?preset=vat"), &[("content-type", "text/csv")], data)
                .expect("the transform worker answers");
        let secs = started.elapsed().as_secs_f64();
        assert_ok(&answer);
        // The same records as the native answer: only the timing at the end differs.
        assert!(
            answer.bytes.abs_diff(native_bytes) < 16,
            "the component's answer ({} bytes) is the native one ({native_bytes} bytes)",
            answer.bytes
        );
        let run = Direct { secs, inside_secs: process_secs(&answer), procs: vec![measured.end()] };
        if best.as_ref().is_none_or(|b| run.secs < b.secs) {
            best = Some(run);
        }
    }
    best.expect("at least one call ran")
}

/// The component's own time for the transform, from `"process_us":N` at the end of its answer.
fn process_secs(answer: &Counted) -> f64 {
    let tail = String::from_utf8_lossy(&answer.tail);
    let at = tail.rfind("\"process_us\":").expect("the answer ends with its timing") + 13;
    let us: String = tail[at..].chars().take_while(char::is_ascii_digit).collect();
    us.parse::<f64>().expect("process_us is a number") / 1e6
}

fn assert_ok(answer: &Counted) {
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.head[..answer.head.len().min(500)]));
}

/// One `POST /coordinate/transform` job with fresh coordinator and worker processes.
fn coordinated(
    data: &[u8],
    rows: usize,
    native_bytes: u64,
    mode: Mode,
    concurrency: usize,
    source: &str,
) -> Coordinated {
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
    let answer = match mode {
        Mode::Source => {
            let job = json!({"source": source, "spec": {"preset": "vat"}, "concurrency": concurrency});
            let json = [("content-type", "application/json")];
            request_counted("POST", &coordinator.url("/coordinate/transform"), &json, job.to_string().as_bytes())
        }
        Mode::Streamed => {
            let path = format!("/coordinate/transform?preset=vat&concurrency={concurrency}");
            request_counted("POST", &coordinator.url(&path), &[("content-type", "text/csv")], data)
        }
    }
    .expect("the coordinator answers");
    let secs = started.elapsed().as_secs_f64();
    assert_ok(&answer);
    let s = summary(&answer);
    assert_eq!(s["rows_in"].as_u64(), Some(rows as u64), "{s}");
    assert_eq!(s["status"], "complete", "{s}");
    assert!(
        answer.bytes.abs_diff(native_bytes) < 2048,
        "the merged records are the native answer's: {} vs {native_bytes} bytes",
        answer.bytes
    );
    Coordinated { mode, concurrency, secs, procs: measured.iter().map(Measured::end).collect() }
}
