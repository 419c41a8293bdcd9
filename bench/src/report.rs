//! The report: `benchmarks.md`, every run's numbers in tables under a header
//! that says where, when and how they were measured, with the charts.

use crate::durable::{Durable, CONCURRENCY, MEMORY_FLAG};
use crate::jobs::{Job, Mode};
use crate::measure::{total_rss, Proc, MB, MIB};
use crate::plan::{IN_FLIGHT, PER_REPLICA, SLOW_MS};
use crate::scrape::{Route, ScrapeRun};
use crate::Suite;
use std::fmt::Write;

/// The charts, in the directory next to the report.
pub const CHARTS: [(&str, &str); 3] = [
    ("throughput-vs-concurrency.png", "Transform job throughput against worker concurrency"),
    ("memory-vs-job-size.png", "Peak memory against job size"),
    ("scrape-vs-latency.png", "Scrape pages/s at 0 ms and 50 ms latency"),
];

/// `1234567` as `1,234,567`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / MIB)
}

/// Each process's peak memory, or CPU time: `coordinator 45 MiB, worker 52 MiB`.
fn each(procs: &[Proc], what: fn(&Proc) -> String) -> String {
    procs.iter().map(|p| format!("{} {}", p.name, what(p))).collect::<Vec<_>>().join(", ")
}

fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn head(out: &mut String, cells: &[&str]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(cells.len()));
}

/// The whole report, its charts linked from `charts_dir` (relative to the report).
pub fn markdown(suite: &Suite, charts_dir: &str) -> String {
    let mut out = String::new();
    let m = &suite.machine;
    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `{}` (the same as `{}`); do not edit by hand.\n",
        suite.script_command(),
        suite.cargo_command()
    );
    if suite.plan.quick {
        let _ = writeln!(out, "**Quick mode**: smaller jobs for development. The full suite is `scripts/bench.sh`.\n");
    }
    head(&mut out, &["", ""]);
    row(&mut out, &["machine".into(), format!("{} CPUs, {}", m.cpus, m.cpu_model)]);
    row(&mut out, &["date".into(), m.date.clone()]);
    row(&mut out, &["commit".into(), m.commit.clone()]);
    row(&mut out, &["runtime".into(), m.wasmtime.clone()]);
    row(&mut out, &["command".into(), format!("`{}`", suite.script_command())]);
    let _ = writeln!(out);
    headlines(&mut out, suite);
    let _ = writeln!(out, "## Charts\n");
    for (file, alt) in CHARTS {
        let _ = writeln!(out, "![{alt}]({charts_dir}/{file})\n");
    }
    extraction(&mut out, suite);
    core(&mut out, &suite.jobs);
    jobs(&mut out, &suite.jobs);
    memory(&mut out, &suite.jobs);
    scrape(&mut out, &suite.scrapes.by_latency, &suite.scrapes.split, &suite.scrapes.replicas);
    durable(&mut out, &suite.durable);
    method(&mut out);
    out
}

/// The numbers the README quotes.
fn headlines(out: &mut String, suite: &Suite) {
    let _ = writeln!(out, "## Headlines\n");
    let e = &suite.extraction;
    let _ = writeln!(
        out,
        "* Extraction inside the scrape component: {:.1} MB/s, {:.2} of native ({:.1} MB/s).",
        e.wasm_mb_s,
        e.wasm_mb_s / e.native_mb_s,
        e.native_mb_s
    );
    if let Some(job) = suite.jobs.last() {
        let best = job.runs.iter().min_by(|a, b| a.secs.total_cmp(&b.secs));
        if let Some(best) = best {
            let _ = writeln!(
                out,
                "* {} rows through the coordinator: at best {:.2} s ({}, concurrency {}), {:.2} times the native \
                 core's {:.2} s; one direct `/transform` call takes {:.2} s.",
                thousands(job.rows),
                best.secs,
                best.mode.label(),
                best.concurrency,
                best.secs / job.native.secs,
                job.native.secs,
                job.direct.secs
            );
        }
    }
    if let (Some(first), Some(last), Some(&c)) = (suite.jobs.first(), suite.jobs.last(), suite.plan.concurrency.last())
    {
        if let (Some(a), Some(b)) = (first.run(Mode::Streamed, c), last.run(Mode::Streamed, c)) {
            let _ = writeln!(
                out,
                "* Peak memory of all runtime processes, streamed body at concurrency {c}: {} at {} rows, {} at {} \
                 rows; one direct call grows from {} to {}.",
                mib(total_rss(&a.procs)),
                thousands(first.rows),
                mib(total_rss(&b.procs)),
                thousands(last.rows),
                mib(total_rss(&first.direct.procs)),
                mib(total_rss(&last.direct.procs))
            );
        }
    }
    let slow = suite.scrapes.by_latency.iter().rfind(|r| r.latency_ms == SLOW_MS && r.route != Route::Direct);
    if let Some(r) = slow {
        let bound = r.bound().unwrap_or(f64::NAN);
        let _ = writeln!(
            out,
            "* Scrape of {} pages at {SLOW_MS} ms latency through the coordinator: {} pages/s, {:.2} of the \
             {} pages/s bound.",
            thousands(r.pages),
            thousands(r.pages_per_sec() as usize),
            r.pages_per_sec() / bound,
            thousands(bound as usize)
        );
    }
    if let (Some(one), Some(most)) = (suite.scrapes.replicas.first(), suite.scrapes.replicas.last()) {
        let _ = writeln!(
            out,
            "* Scrape at {SLOW_MS} ms through worker replicas behind HAProxy, {PER_REPLICA} pages in flight each: \
             {} pages/s with 1, {} with {} ({:.2} times as many).",
            thousands(one.pages_per_sec() as usize),
            thousands(most.pages_per_sec() as usize),
            most.in_flight() / PER_REPLICA,
            most.pages_per_sec() / one.pages_per_sec()
        );
    }
    if let Some(t) = suite.durable.transforms.last() {
        let _ = writeln!(
            out,
            "* {} rows as a durable job (`/jobs`, input in the bucket, every component within 64 MiB): {:.2} s from \
             submit to manifest, {:.2} times `/coordinate/transform` in source-URL mode ({:.2} s; the median of {} \
             runs); the coordinator's CPU {:.1}% of the workers'.",
            thousands(t.rows),
            t.jobs_secs,
            t.ratio(),
            t.coordinate_secs,
            t.ratios.len(),
            100.0 * t.coordinator_share()
        );
    }
    let d = &suite.durable.scrape;
    let _ = writeln!(
        out,
        "* Scrape of {} pages at {SLOW_MS} ms as a durable job: {} pages/s, {:.2} of the {} pages/s bound \
         (`/coordinate/scrape`, same job: {:.2}).",
        thousands(d.pages),
        thousands(d.pages_per_sec() as usize),
        d.pages_per_sec() / d.bound(),
        thousands(d.bound() as usize),
        d.coordinate_pages_per_sec() / d.bound()
    );
    let _ = writeln!(out);
}

fn extraction(out: &mut String, suite: &Suite) {
    let e = &suite.extraction;
    let _ = writeln!(out, "## Extraction: native and inside the scrape component\n");
    let _ = writeln!(
        out,
        "Decoding and extracting 40 KB fixture pages with links and one selection; the component reports the \
         bytes and time of that same step, so fetching does not count.\n"
    );
    head(out, &["", "MB/s", "of native"]);
    row(out, &["native".into(), format!("{:.1}", e.native_mb_s), "1.00".into()]);
    row(
        out,
        &["in the component".into(), format!("{:.1}", e.wasm_mb_s), format!("{:.2}", e.wasm_mb_s / e.native_mb_s)],
    );
    let _ = writeln!(out);
}

fn core(out: &mut String, jobs: &[Job]) {
    let _ = writeln!(out, "## Transform: the native core and the component\n");
    let _ = writeln!(
        out,
        "The `vat` preset over generated sales rows. Native: one thread, best of three, in a process of its own. \
         Inside the component: the transform time it reports for one `/transform` call. One call: the same call \
         from the first byte sent to the last byte received, best of three.\n"
    );
    head(
        out,
        &[
            "rows",
            "CSV in → JSON out",
            "native",
            "inside the component",
            "speed of native",
            "one call",
            "speed of native",
        ],
    );
    for j in jobs {
        let rate =
            |secs: f64| format!("{:.1} MB/s, {} rows/s", j.mb_per_sec(secs), thousands(j.rows_per_sec(secs) as usize));
        row(
            out,
            &[
                thousands(j.rows),
                format!("{:.1} MB → {:.1} MB", j.csv_bytes as f64 / MB, j.native.out_bytes as f64 / MB),
                rate(j.native.secs),
                rate(j.direct.inside_secs),
                format!("{:.2}", j.native.secs / j.direct.inside_secs),
                rate(j.direct.secs),
                format!("{:.2}", j.native.secs / j.direct.secs),
            ],
        );
    }
    let _ = writeln!(out);
}

fn jobs(out: &mut String, jobs: &[Job]) {
    let _ = writeln!(out, "## Transform jobs through the coordinator\n");
    let _ = writeln!(
        out,
        "Wall time from the first byte sent to the last byte received. Every coordinator run has fresh runtime \
         processes; peak memory (`VmHWM`) and CPU time count from the request on. \"Time vs native\" is the run's \
         wall time over the native core's.\n"
    );
    for j in jobs {
        let _ = writeln!(
            out,
            "### {} rows ({:.1} MB of CSV → {:.1} MB of JSON)\n",
            thousands(j.rows),
            j.csv_bytes as f64 / MB,
            j.native.out_bytes as f64 / MB
        );
        head(
            out,
            &[
                "run",
                "wall",
                "rows/s",
                "MB/s",
                "time vs native",
                "peak RSS, all processes",
                "peak RSS each",
                "CPU each",
            ],
        );
        let native = Proc { name: "native", peak_rss: j.native.peak_rss, cpu_secs: j.native.secs };
        let mut runs: Vec<(String, f64, &[Proc])> = vec![
            ("native core, 1 thread".into(), j.native.secs, std::slice::from_ref(&native)),
            ("one `/transform` call".into(), j.direct.secs, &j.direct.procs),
        ];
        runs.extend(j.runs.iter().map(|r| {
            (format!("coordinator, {}, concurrency {}", r.mode.label(), r.concurrency), r.secs, r.procs.as_slice())
        }));
        for (label, secs, procs) in runs {
            row(
                out,
                &[
                    label,
                    format!("{secs:.2} s"),
                    thousands(j.rows_per_sec(secs) as usize),
                    format!("{:.1}", j.mb_per_sec(secs)),
                    format!("{:.2}", secs / j.native.secs),
                    mib(total_rss(procs)),
                    each(procs, |p| mib(p.peak_rss)),
                    each(procs, |p| format!("{:.2} s", p.cpu_secs)),
                ],
            );
        }
        let _ = writeln!(out);
    }
}

fn memory(out: &mut String, jobs: &[Job]) {
    let _ = writeln!(out, "## Peak memory against job size\n");
    let _ = writeln!(
        out,
        "Peak RSS of all the runtime processes of a run (the native core: its one process, input included).\n"
    );
    let mut cells = vec!["run".to_owned()];
    cells.extend(jobs.iter().map(|j| format!("{} rows", thousands(j.rows))));
    head(out, &cells.iter().map(String::as_str).collect::<Vec<_>>());
    let mut line = |label: String, rss: &dyn Fn(&Job) -> Option<u64>| {
        let mut cells = vec![label];
        cells.extend(jobs.iter().map(|j| rss(j).map_or_else(String::new, mib)));
        row(out, &cells);
    };
    line("native core".into(), &|j| Some(j.native.peak_rss));
    line("one `/transform` call".into(), &|j| Some(total_rss(&j.direct.procs)));
    let Some(first) = jobs.first() else { return };
    for r in &first.runs {
        let (mode, c) = (r.mode, r.concurrency);
        line(format!("coordinator, {}, concurrency {c}", mode.label()), &|j| {
            j.run(mode, c).map(|r| total_rss(&r.procs))
        });
    }
    let _ = writeln!(out);
}

fn scrape_row(out: &mut String, r: &ScrapeRun) {
    let bound = r.bound().map_or_else(
        || "(CPU-bound)".to_owned(),
        |b| format!("{:.2} of {}", r.pages_per_sec() / b, thousands(b as usize)),
    );
    row(
        out,
        &[
            thousands(r.pages),
            format!("{} ms", r.latency_ms),
            r.label(),
            format!("{:.2} s", r.secs),
            thousands(r.pages_per_sec() as usize),
            bound,
            each(&r.procs, |p| mib(p.peak_rss)),
            each(&r.procs, |p| format!("{:.2} s", p.cpu_secs)),
        ],
    );
}

fn scrape(out: &mut String, by_latency: &[ScrapeRun], split: &[ScrapeRun], replicas: &[ScrapeRun]) {
    let columns = ["pages", "latency", "run", "wall", "pages/s", "of the bound", "peak RSS each", "CPU each"];
    let _ = writeln!(out, "## Scrape\n");
    let _ = writeln!(
        out,
        "Fixture pages of 40 KB, standard fields, {IN_FLIGHT} pages in flight in total, served at once or after \
         {SLOW_MS} ms each; the bound is in-flight / latency. Each run has fresh runtime processes.\n"
    );
    head(out, &columns);
    by_latency.iter().for_each(|r| scrape_row(out, r));
    let _ = writeln!(out);
    if let Some(first) = split.first() {
        let _ = writeln!(
            out,
            "### {} pages at {SLOW_MS} ms, the pages in flight spread over worker calls\n",
            thousands(first.pages)
        );
        head(out, &columns);
        split.iter().for_each(|r| scrape_row(out, r));
        let _ = writeln!(out);
    }
    if let Some(first) = replicas.first() {
        let _ = writeln!(
            out,
            "### {} pages at {SLOW_MS} ms through 1, 2 and 4 worker replicas behind HAProxy\n\n\
             Each replica allowed {PER_REPLICA} pages in flight (`FANOUT_SCRAPE_CONCURRENCY`), the coordinator \
             making one call a replica at once to the balanced address: the bound grows with the replicas. \
             `vs 1 replica` is the pages/s against the one-replica run's, in the same run.\n",
            thousands(first.pages)
        );
        head(out, &columns);
        replicas.iter().for_each(|r| scrape_row(out, r));
        let _ = writeln!(out);
        let one = first.pages_per_sec();
        let ratios: Vec<String> =
            replicas.iter().map(|r| format!("{}: {:.2}", r.label(), r.pages_per_sec() / one)).collect();
        let _ = writeln!(out, "vs 1 replica: {}\n", ratios.join("; "));
    }
}

fn durable(out: &mut String, d: &Durable) {
    let _ = writeln!(out, "## Durable jobs\n");
    let _ = writeln!(
        out,
        "The `vat` job over rows already in the bucket (SeaweedFS on loopback), from `POST /jobs/transform` to the \
         tick that writes the manifest, one tick at a time, against `POST /coordinate/transform` in source-URL mode \
         reading the same object through a presigned URL, both at concurrency {CONCURRENCY}, in the same run. The \
         durable runs have every component under `{MEMORY_FLAG}` (64 MiB per instance). CPU is each process's from \
         the request on; the bucket's server is measured too, since a durable job writes its output there. Each \
         size runs both routes {} times; the row is the run with the median ratio, and `ratios` lists every \
         run's.\n\n\
         The bucket's server shares the machine's two cores with the workers, and SeaweedFS gzips every object it \
         is sent that compresses well (the CSV, the parts), so each ranged read of the CSV decompresses a 4 MiB \
         chunk and each part is compressed as it is written: its CPU is about twice the workers' here, and the \
         ratio moves with it from run to run. An S3 service's CPU is not on the machine that runs the workers.\n",
        d.transforms.first().map_or(0, |t| t.ratios.len())
    );
    head(
        out,
        &[
            "rows",
            "units",
            "/coordinate",
            "/jobs",
            "ratio",
            "ratios",
            "coordinator CPU",
            "worker CPU",
            "coordinator / workers",
            "bucket CPU",
            "ticks",
            "longest tick",
            "slowest call",
            "largest answer",
        ],
    );
    for t in &d.transforms {
        row(
            out,
            &[
                thousands(t.rows),
                t.units.to_string(),
                format!("{:.2} s", t.coordinate_secs),
                format!("{:.2} s", t.jobs_secs),
                format!("{:.2}x", t.ratio()),
                t.ratios.iter().map(|r| format!("{r:.2}x")).collect::<Vec<_>>().join(", "),
                format!("{:.2} s", t.jobs_procs[0].cpu_secs),
                format!("{:.2} s", t.jobs_procs[1].cpu_secs),
                format!("{:.1}%", 100.0 * t.coordinator_share()),
                format!("{:.2} s", t.jobs_procs[2].cpu_secs),
                t.ticks.count.to_string(),
                format!("{:.1} s", t.ticks.longest_secs),
                format!("{} ms", t.ticks.slowest_call_ms),
                format!("{} B", thousands(t.ticks.largest_answer)),
            ],
        );
    }
    let s = &d.scrape;
    let _ = writeln!(
        out,
        "\nA scrape of {} pages of 40 KB at {SLOW_MS} ms as a durable job, {IN_FLIGHT} pages in flight (2 calls of 25), \
         batches of {}, every component within 64 MiB: {:.2} s = {} pages/s, **{:.2} of the {} pages/s bound**; \
         {} ticks, the longest {:.1} s, the slowest worker call {} ms, the largest answer {} bytes; {}. The same job \
         through `/coordinate/scrape`, in the same run: {:.2} s, {:.2} of the bound.\n",
        thousands(s.pages),
        thousands(s.batch_size),
        s.secs,
        thousands(s.pages_per_sec() as usize),
        s.pages_per_sec() / s.bound(),
        thousands(s.bound() as usize),
        s.ticks.count,
        s.ticks.longest_secs,
        s.ticks.slowest_call_ms,
        thousands(s.ticks.largest_answer),
        each(&s.procs, |p| format!("CPU {:.2} s", p.cpu_secs)),
        s.coordinate_secs,
        s.coordinate_pages_per_sec() / s.bound(),
    );
}

fn method(out: &mut String) {
    let _ = writeln!(out, "## How\n");
    let _ = writeln!(
        out,
        "Data is generated the same on every run (`testkit::data::sales`, pages from the fixture site). Components \
         run under `wasmtime serve` on loopback, each run with fresh processes; peak memory is `VmHWM` from \
         `/proc`, reset when the request starts (runtime processes) or read by the process itself (the native \
         core, which this benchmark runs as a child of its own; on one thread, its CPU time is its wall time). Every answer is checked: row counts, `complete` \
         status and byte counts against the native answer; pages scraped."
    );
}
