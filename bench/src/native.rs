//! The native core over a whole file, one thread. It runs in a child process
//! (this executable again, with a hidden command) so that its peak memory is
//! read from `/proc` like the runtime processes', undisturbed by the suite's own.

use anyhow::{bail, ensure, Context, Result};
use fanout::framing::Format;
use fanout::transform::engine::{read_header, run_to_end, Placement, Progress, Transformer};
use fanout::transform::program::Program;
use fanout::transform::spec::{self, Spec};
use fanout_testkit::component::peak_rss;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The hidden command that makes this executable the child.
pub const CHILD_COMMAND: &str = "native-transform";
/// Runs timed in the child; the best counts, as the other runs get a warm loopback and page cache too.
const REPEATS: usize = 3;

/// What the child measured.
pub struct Native {
    /// The best wall time of [`REPEATS`] runs.
    pub secs: f64,
    /// The JSON answer's length.
    pub out_bytes: u64,
    /// The child's peak resident set, the whole input included (the core works on one slice).
    pub peak_rss: u64,
}

/// Times the `vat` preset over the CSV in `file`, in a child process.
pub fn run(file: &Path) -> Result<Native> {
    let exe = std::env::current_exe().context("cannot find this executable to run the native core")?;
    let out = Command::new(&exe)
        .arg(CHILD_COMMAND)
        .arg(file)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot start {} {CHILD_COMMAND}", exe.display()))?;
    if !out.status.success() {
        bail!("the native run over {} failed ({})", file.display(), out.status);
    }
    let v: Value = serde_json::from_slice(&out.stdout).context("the native run's answer is not JSON")?;
    let field = |k: &str| v[k].as_f64().with_context(|| format!("the native run's answer has no {k}: {v}"));
    Ok(Native { secs: field("secs")?, out_bytes: field("out_bytes")? as u64, peak_rss: field("peak_rss")? as u64 })
}

/// The child: `native-transform FILE` prints what [`run`] reads, as one JSON line.
pub fn child(args: &[String]) -> Result<()> {
    let [file] = args else { bail!("usage: fanout-bench {CHILD_COMMAND} FILE") };
    let data = std::fs::read(file).with_context(|| format!("cannot read {file}"))?;
    let vat = vat();
    let (mut secs, mut out_bytes) = (f64::MAX, 0);
    for _ in 0..REPEATS {
        let (s, out) = transform(&vat, &data);
        secs = secs.min(s);
        out_bytes = out;
    }
    let peak_rss = peak_rss(std::process::id());
    // Checked after the peak is read: holding the whole answer at once would count against it.
    let whole = run_to_end(&vat, &data, Format::Json).expect("the vat preset runs over the generated rows");
    ensure!(
        whole.len().abs_diff(out_bytes as usize) < 16,
        "the answer made in pieces ({out_bytes} bytes) is not the whole answer ({} bytes)",
        whole.len()
    );
    println!("{}", json!({"secs": secs, "out_bytes": out_bytes, "peak_rss": peak_rss}));
    Ok(())
}

fn vat() -> Spec {
    spec::parse(br#"{"preset": "vat"}"#).expect("the vat preset parses")
}

/// Parse, convert, filter and serialise `data`, the answer made in 64 KiB pieces as
/// the component sends it: the wall time and the answer's length.
fn transform(vat: &Spec, data: &[u8]) -> (f64, u64) {
    let header = read_header(&vat.dialect, data).expect("the generated rows have a header");
    let program = Program::compile(vat, &header.names).expect("the vat preset fits the generated columns");
    let placement = Placement { line_offset: header.lines, ..Placement::default() };
    let started = Instant::now();
    let mut t = Transformer::new(vat, &program, &data[header.data_start..], Format::Json, placement)
        .expect("the transformer starts");
    let mut piece = Vec::with_capacity(80 * 1024);
    let mut out = 0u64;
    loop {
        piece.clear();
        let progress = t.fill(&mut piece, 64 * 1024).expect("the generated rows transform");
        out += piece.len() as u64;
        if progress == Progress::Done {
            return (started.elapsed().as_secs_f64(), out);
        }
    }
}
