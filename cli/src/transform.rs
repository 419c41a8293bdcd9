//! `fanout transform INPUT`: a CSV file through `/coordinate/transform`
//! (source-URL mode from a loopback file server, or `--stream`ed as the body),
//! or through the same chunking and merging in this process (`--local`).
//! Standard input, pipes, gzip files and other encodings are streamed as the
//! body ([`crate::input`]); a URL is handed to the coordinator to read.

use crate::answer::{self, Table, TableAnswer, TableSink};
use crate::files::FileServer;
use crate::input::{self, Input};
use crate::job::{Answer, Outcome, Payload, Refused};
use crate::output::Output;
use crate::progress::{Progress, Unit, Update};
use crate::{open, JobArgs};
use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use fanout::config::Config;
use fanout::fanout::local;
use fanout::fanout::options::JobOptions;
use fanout::framing;
use fanout::transform::spec::{self, Spec};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Args)]
#[command(group(ArgGroup::new("spec_from")))]
pub struct TransformArgs {
    /// The CSV file: a path (a .gz file is decompressed, a .tsv file read with tabs), - for
    /// standard input, or an http(s):// or s3:// URL the coordinator reads, e.g. sales.csv.
    input: String,
    /// A preset spec by name, e.g. --preset vat (see docs/transform.md).
    #[arg(long, group = "spec_from", value_name = "NAME")]
    preset: Option<String>,
    /// A spec in a JSON file, e.g. --spec summary.json.
    #[arg(long, group = "spec_from", value_name = "SPEC.json")]
    spec: Option<PathBuf>,
    /// A spec given as JSON text, e.g. --spec-json '{"preset": "vat", "on_error": "fail"}'.
    /// Without a spec every column is kept as a string.
    #[arg(long, group = "spec_from", value_name = "JSON")]
    spec_json: Option<String>,
    /// The field delimiter, one character (tab or \t for tabs), e.g. --delimiter ';'.
    /// Default: the spec's, or a tab for a .tsv or .tab file.
    #[arg(long, value_name = "CHAR")]
    delimiter: Option<String>,
    /// The input's encoding when it is not UTF-8, a WHATWG label, e.g. --encoding latin1.
    #[arg(long, value_name = "LABEL")]
    encoding: Option<String>,
    /// CSV bytes per worker call, e.g. --chunk-bytes 4194304 (default: the coordinator's, 1 MiB).
    #[arg(long, value_name = "BYTES")]
    chunk_bytes: Option<u64>,
    /// Send the file as the request body instead of serving it to the workers in byte ranges,
    /// e.g. --stream.
    #[arg(long, conflicts_with = "local")]
    stream: bool,
    /// Run the spec in this process, chunked and merged as the coordinator does, with the
    /// same output: to develop a spec without a server (--endpoint is not used). E.g. --local.
    #[arg(long, conflicts_with = "job")]
    local: bool,
    #[command(flatten)]
    durable: crate::durable::DurableArgs,
    #[command(flatten)]
    job: JobArgs,
}

/// The spec as given, checked by the same parser the components use.
struct GivenSpec {
    json: Value,
    spec: Spec,
}

impl TransformArgs {
    fn spec(&self) -> Result<GivenSpec> {
        let (text, from) = match (&self.preset, &self.spec, &self.spec_json) {
            (Some(name), _, _) => (serde_json::json!({ "preset": name }).to_string(), "--preset".to_owned()),
            (_, Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the spec file {}", path.display()))?;
                (text, path.display().to_string())
            }
            (_, _, Some(text)) => (text.clone(), "--spec-json".to_owned()),
            (None, None, None) => ("{}".to_owned(), "the default".to_owned()),
        };
        spec::parse(text.as_bytes()).map_err(|m| anyhow::anyhow!("the spec ({from}) is not valid: {m}"))?;
        let mut json: Value =
            serde_json::from_str(&text).with_context(|| format!("the spec ({from}) is not valid JSON"))?;
        if let Some((delimiter, flag)) = self.delimiter()? {
            let dialect = json
                .as_object_mut()
                .context("the spec is not a JSON object")?
                .entry("dialect")
                .or_insert_with(|| serde_json::json!({}));
            let dialect = dialect.as_object_mut().context("the spec's dialect is not a JSON object")?;
            match dialect.get("delimiter").and_then(Value::as_str) {
                Some(given) if given != delimiter && flag => {
                    bail!("the spec's dialect.delimiter is {given:?} but --delimiter says {delimiter:?}")
                }
                Some(_) => {}
                None => drop(dialect.insert("delimiter".into(), delimiter.into())),
            }
        }
        let spec = spec::parse(json.to_string().as_bytes())
            .map_err(|m| anyhow::anyhow!("the spec ({from}) is not valid: {m}"))?;
        Ok(GivenSpec { json, spec })
    }

    /// The delimiter to read with, and whether `--delimiter` gave it (else the file's extension did).
    fn delimiter(&self) -> Result<Option<(String, bool)>> {
        match self.delimiter.as_deref() {
            Some("tab" | "\\t") => Ok(Some(("\t".into(), true))),
            Some(d) if d.chars().count() == 1 => Ok(Some((d.to_owned(), true))),
            Some(d) => bail!("--delimiter {d:?} is not one character (tab or \\t for a tab)"),
            None => {
                let name = self.input.strip_suffix(".gz").unwrap_or(&self.input).to_ascii_lowercase();
                Ok((name.ends_with(".tsv") || name.ends_with(".tab")).then(|| ("\t".into(), false)))
            }
        }
    }
}

pub fn run(args: TransformArgs) -> Result<i32> {
    let given = args.spec()?;
    let encoding = args.encoding.as_deref().map(input::encoding).transpose()?;
    let input = Input::open(&args.input, encoding)?;
    let mut options = args.job.options();
    if let Some(n) = args.chunk_bytes {
        options.insert("chunk_bytes".into(), n.into());
    }
    if args.durable.job {
        if let Input::Stream { name, .. } = &input {
            bail!("a durable job reads a file as it is stored, or a URL: save {name} (decompressed, as UTF-8) to a file first");
        }
        return crate::durable::transform(&args.durable, &args.job, Path::new(&args.input), given.json, options);
    }
    if args.local {
        return run_local(&args, &given.spec, input);
    }
    let shape = shape(&given.spec);
    let format = args.job.format()?;
    let mut out = Output::create(args.job.output.as_deref(), Path::new(&args.input))?;
    let coordinator = args.job.coordinator(true, false)?;
    // Kept until the answer is read: workers read their ranges until the end.
    let mut server = None;
    let (answer, size) = match input {
        Input::Url(url) => (post_source(&coordinator, url, &given, &options)?, None),
        Input::Stream { reader, size, .. } => (post_body(&coordinator, Body::Stream(reader), &given, &options)?, size),
        Input::File { path, size } if args.stream || !coordinator.is_local() => {
            if !args.stream {
                eprintln!("fanout: the coordinator is not on this machine: sending the file as the request body");
            }
            (post_body(&coordinator, Body::File(&path), &given, &options)?, Some(size))
        }
        Input::File { path, size } => {
            let served = server.insert(FileServer::start(&path).context("cannot serve the file on loopback")?);
            match post_source(&coordinator, served.url(), &given, &options) {
                // The coordinator may not read from loopback (FANOUT_ALLOW_PRIVATE_HOSTS): send the file instead.
                Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 403) => {
                    eprintln!(
                        "fanout: the coordinator may not read files on this machine (its FANOUT_ALLOW_PRIVATE_HOSTS); \
                         sending the file as the request body"
                    );
                    (post_body(&coordinator, Body::File(&path), &given, &options)?, Some(size))
                }
                other => (other?, Some(size)),
            }
        }
    };
    let mut side = args.job.side_output()?;
    let mut progress = Progress::new(size, Unit::Bytes, out.on_terminal());
    let summary = answer::table(answer, shape, format, &mut out, &mut side, &mut progress);
    progress.finish();
    drop(server);
    let summary = summary?;
    out.finish()?;
    side.flush()?;
    let outcome = Outcome::of_table(&summary);
    eprintln!("fanout: {}", outcome.message);
    Ok(outcome.code)
}

/// What the answer to `spec` holds: records, groups, or a partial aggregate.
fn shape(spec: &Spec) -> Table {
    match &spec.aggregate {
        None => Table::Records,
        Some(a) if a.partial => Table::Partial,
        Some(_) => Table::Groups,
    }
}

/// A job whose source the coordinator reads itself, in byte ranges.
fn post_source(
    coordinator: &crate::job::Coordinator,
    source: String,
    given: &GivenSpec,
    options: &serde_json::Map<String, Value>,
) -> Result<Answer> {
    let mut job = options.clone();
    job.insert("source".into(), source.into());
    job.insert("spec".into(), given.json.clone());
    let body = serde_json::to_vec(&job).expect("values serialise");
    coordinator.post(coordinator.url("coordinate/transform"), "application/json", &[], Payload::Bytes(body))
}

/// What a CSV body is read from.
enum Body<'a> {
    File(&'a Path),
    Stream(Box<dyn Read + Send>),
}

/// The CSV as the request body, the spec and options in the query.
fn post_body(
    coordinator: &crate::job::Coordinator,
    body: Body<'_>,
    given: &GivenSpec,
    options: &serde_json::Map<String, Value>,
) -> Result<Answer> {
    let mut url = coordinator.url("coordinate/transform");
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("spec", &given.json.to_string());
        for (k, v) in options {
            query.append_pair(k, &v.to_string());
        }
    }
    match body {
        Body::File(path) => {
            let file = open(path)?;
            coordinator.post_refusable(url, "text/csv", &[], Payload::File(file), || header_line(path))
        }
        Body::Stream(reader) => {
            // A stream is read once: its first line is kept for the probe that asks why a job was refused.
            let first = Arc::new(Mutex::new(Vec::new()));
            let reader = FirstLine { inner: reader, line: first.clone(), done: false };
            let probe = move || Ok(std::mem::take(&mut *first.lock().expect("not poisoned")));
            coordinator.post_refusable(url, "text/csv", &[], Payload::Stream(Box::new(reader)), probe)
        }
    }
}

/// The file's first line, where the header is.
fn header_line(path: &Path) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    BufReader::new(open(path)?).take(64 * 1024).read_until(b'\n', &mut line)?;
    Ok(line)
}

/// A reader that keeps a copy of its first line (at most 64 KiB).
struct FirstLine {
    inner: Box<dyn Read + Send>,
    line: Arc<Mutex<Vec<u8>>>,
    done: bool,
}

impl Read for FirstLine {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if !self.done {
            let mut line = self.line.lock().expect("not poisoned");
            let end = buf[..n].iter().position(|&b| b == b'\n').map_or(n, |i| i + 1);
            let room = (64 * 1024usize).saturating_sub(line.len());
            line.extend_from_slice(&buf[..end.min(room)]);
            self.done = end < n || line.ends_with(b"\n") || line.len() >= 64 * 1024 || n == 0;
        }
        Ok(n)
    }
}

fn run_local(args: &TransformArgs, spec: &Spec, input: Input) -> Result<i32> {
    let (reader, size): (Box<dyn Read + Send>, _) = match input {
        Input::File { path, size } => (Box::new(open(&path)?), Some(size)),
        Input::Stream { reader, size, .. } => (reader, size),
        Input::Url(url) => bail!("--local reads local files and standard input, not {url}"),
    };
    let format = args.job.format()?;
    let shape = shape(spec);
    let options = JobOptions {
        tolerated_failures: args.job.tolerated_failures,
        tolerated_failure_percent: args.job.tolerated_failure_percent,
        deadline_ms: args.job.deadline_ms,
        ..JobOptions::default()
    };
    // The limits a coordinator configured by this environment would apply.
    let config = Config::from_lookup(|k| std::env::var(k).ok()).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let mut out = Output::create(args.job.output.as_deref(), Path::new(&args.input))?;
    let mut side = args.job.side_output()?;
    // The run writes what a coordinator answers (NDJSON), read into the output as a coordinator's answer is.
    let mut progress = Progress::new(size, Unit::Bytes, out.on_terminal());
    let mut sink = TableSink::new(TableAnswer::new(shape, format)?, &mut out, &mut side);
    let report = local::transform(
        spec,
        BufReader::new(reader),
        framing::Format::Ndjson,
        &config,
        args.chunk_bytes,
        &options,
        &mut sink,
        |r| progress.update(&Update::of_report(r)),
    );
    progress.finish();
    let report = report.with_context(|| format!("cannot transform {}", args.input))?;
    sink.end()?;
    out.finish()?;
    side.flush()?;
    let c = &report.counters;
    let status = serde_json::to_value(&report.status).expect("statuses serialise");
    let done = format!(
        "{}, {} failed, in {:.1} s (local)",
        crate::job::count(c.items_done, "row"),
        c.items_failed,
        report.elapsed_ms as f64 / 1000.0
    );
    let failures = (c.items_failed > 0).then(|| format!("{} failed", crate::job::count(c.items_failed, "row")));
    let outcome = Outcome::of(status.as_str().unwrap_or("?"), report.reason.as_deref(), failures, done);
    eprintln!("fanout: {}", outcome.message);
    Ok(outcome.code)
}
