//! The benchmark suite: every benchmark side by side in one run, written to
//! `docs/benchmarks.md` with PNG charts in `docs/benchmarks/` (quick mode:
//! `out/`, which git ignores, so development runs never replace the report).
//!
//! Run with `scripts/bench.sh [--quick] [--out DIR]`, which builds the
//! components and finds wasmtime first. Benchmarks are not tests: `cargo test`
//! does not build this crate.

mod chart;
mod durable;
mod extraction;
mod jobs;
mod machine;
mod measure;
mod native;
mod plan;
mod report;
mod scrape;

use anyhow::{bail, Context, Result};
use fanout_testkit::site::Site;
use machine::Machine;
use plan::Plan;
use std::path::{Path, PathBuf};
use std::time::Instant;

const USAGE: &str = "usage: fanout-bench [--quick] [--out DIR]

  --quick    smaller jobs (under two minutes on two cores), written to out/ by default
  --out DIR  write DIR/benchmarks.md and its charts in DIR/benchmarks/ (default: docs/)

Needs the built components (scripts/build.sh) and wasmtime: scripts/bench.sh sees to both.";

/// Everything one run measured, and where.
pub struct Suite {
    pub plan: Plan,
    /// The arguments the suite ran with, for the report to say how to run it again.
    pub args: Vec<String>,
    pub machine: Machine,
    pub extraction: extraction::Extraction,
    pub jobs: Vec<jobs::Job>,
    pub scrapes: scrape::Scrapes,
    pub durable: durable::Durable,
}

impl Suite {
    pub fn script_command(&self) -> String {
        std::iter::once("scripts/bench.sh").chain(self.args.iter().map(String::as_str)).collect::<Vec<_>>().join(" ")
    }

    pub fn cargo_command(&self) -> String {
        let base = "cargo run --release -p fanout-bench";
        if self.args.is_empty() {
            base.to_owned()
        } else {
            format!("{base} -- {}", self.args.join(" "))
        }
    }
}

/// What the command line asked for; `None` when it asked for the usage.
struct Options {
    quick: bool,
    out: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Result<Option<Options>> {
        let mut options = Options { quick: false, out: None };
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--out" => options.out = Some(args.next().context("--out needs a directory")?.into()),
                "-h" | "--help" => return Ok(None),
                other => bail!("unknown argument {other:?}\n\n{USAGE}"),
            }
        }
        Ok(Some(options))
    }
}

/// A directory for the generated files, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("fanout-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(native::CHILD_COMMAND) {
        return native::child(&args[1..]);
    }
    let Some(options) = Options::parse(&args)? else {
        println!("{USAGE}");
        return Ok(());
    };
    // Before minutes of measuring: a missing font would only show when drawing.
    chart::load_font()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("the bench crate is in the workspace")?;
    let out = options.out.unwrap_or_else(|| root.join(if options.quick { "out" } else { "docs" }));
    let plan = if options.quick { Plan::quick() } else { Plan::full() };
    let started = Instant::now();
    let scratch = Scratch::new()?;
    let site = Site::start();
    let machine = Machine::describe(root);
    println!("{} CPUs, {}; {}; commit {}\n", machine.cpus, machine.cpu_model, machine.wasmtime, machine.commit);

    let extraction = extraction::measure(&site);
    let jobs = plan
        .job_rows
        .iter()
        .map(|&rows| jobs::measure(rows, &plan.concurrency, &site, &scratch.0))
        .collect::<Result<Vec<_>>>()?;
    let scrapes = scrape::measure(&plan, &site);
    let durable = durable::measure(&plan.durable_rows, plan.durable_repeats, plan.durable_pages, &site)?;
    let suite = Suite { plan, args, machine, extraction, jobs, scrapes, durable };
    let report = write(&suite, &out)?;
    println!("\nwrote {} and its charts in {:.0} s", report.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Writes `benchmarks.md` in `out` and the charts in `out/benchmarks/`; returns the report's path.
fn write(suite: &Suite, out: &Path) -> Result<PathBuf> {
    let charts = out.join("benchmarks");
    std::fs::create_dir_all(&charts).with_context(|| format!("cannot create {}", charts.display()))?;
    let [throughput, memory, scrape] = report::CHARTS.map(|(file, _)| charts.join(file));
    let largest = suite.jobs.last().context("the plan has no transform jobs")?;
    chart::throughput(&throughput, largest, &suite.plan.concurrency)?;
    chart::memory(&memory, &suite.jobs, &suite.plan.concurrency)?;
    chart::scrape(&scrape, &suite.scrapes.by_latency)?;
    let path = out.join("benchmarks.md");
    std::fs::write(&path, report::markdown(suite, "benchmarks"))
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}
