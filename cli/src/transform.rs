//! `fanout transform CSV_FILE`: a CSV file through `/coordinate/transform`
//! (source-URL mode from a loopback file server, or `--stream`ed as the body),
//! or through the same chunking and merging in this process (`--local`).

use crate::answer::{self, Table};
use crate::files::FileServer;
use crate::job::{Answer, Outcome, Payload, Refused};
use crate::output::Output;
use crate::progress::{Progress, Unit, Update};
use crate::{open, JobArgs};
use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use fanout::config::Config;
use fanout::fanout::local;
use fanout::fanout::options::JobOptions;
use fanout::framing;
use fanout::transform::spec::{self, Spec};
use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Args)]
#[command(group(ArgGroup::new("spec_from").required(true)))]
pub struct TransformArgs {
    /// The CSV file, e.g. sales.csv.
    csv_file: PathBuf,
    /// A preset spec by name, e.g. --preset vat (see docs/transform.md).
    #[arg(long, group = "spec_from", value_name = "NAME")]
    preset: Option<String>,
    /// A spec in a JSON file, e.g. --spec summary.json.
    #[arg(long, group = "spec_from", value_name = "SPEC.json")]
    spec: Option<PathBuf>,
    /// A spec given as JSON text, e.g. --spec-json '{"preset": "vat", "on_error": "fail"}'.
    #[arg(long, group = "spec_from", value_name = "JSON")]
    spec_json: Option<String>,
    /// CSV bytes per worker call, e.g. --chunk-bytes 4194304 (default: the coordinator's, 1 MiB).
    #[arg(long, value_name = "BYTES")]
    chunk_bytes: Option<u64>,
    /// Send the file as the request body instead of serving it to the workers in byte ranges,
    /// e.g. --stream (needed for files with line breaks inside quoted fields).
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
            _ => unreachable!("clap requires one of --preset, --spec and --spec-json"),
        };
        let spec = spec::parse(text.as_bytes()).map_err(|m| anyhow::anyhow!("the spec ({from}) is not valid: {m}"))?;
        let json = serde_json::from_str(&text).with_context(|| format!("the spec ({from}) is not valid JSON"))?;
        Ok(GivenSpec { json, spec })
    }
}

pub fn run(args: TransformArgs) -> Result<i32> {
    let given = args.spec()?;
    if args.durable.job {
        let mut options = args.job.options();
        if let Some(n) = args.chunk_bytes {
            options.insert("chunk_bytes".into(), n.into());
        }
        return crate::durable::transform(&args.durable, &args.job, &args.csv_file, given.json, options);
    }
    let file = open(&args.csv_file)?;
    let size = file.metadata().with_context(|| format!("cannot read {}", args.csv_file.display()))?.len();
    if args.local {
        return run_local(&args, &given.spec, file, size);
    }
    let shape = match &given.spec.aggregate {
        None => Table::Records,
        Some(a) if a.partial => Table::Partial,
        Some(_) => Table::Groups,
    };
    let mut out = Output::create(args.job.output.as_deref(), &args.csv_file)?;
    let coordinator = args.job.coordinator(true, false)?;
    let stream = args.stream || !coordinator.is_local();
    if !args.stream && stream {
        eprintln!("fanout: the coordinator is not on this machine: sending the file as the request body");
    }
    // The job's options, the same for a source job's body and a CSV body's query.
    let mut options = args.job.options();
    if let Some(n) = args.chunk_bytes {
        options.insert("chunk_bytes".into(), n.into());
    }
    // Kept until the answer is read: workers read their ranges until the end.
    let mut server = None;
    let answer = if stream {
        post_body(&coordinator, &args.csv_file, &given, &options)?
    } else {
        let served = server.insert(FileServer::start(&args.csv_file).context("cannot serve the file on loopback")?);
        let mut job = options.clone();
        job.insert("source".into(), served.url().into());
        job.insert("spec".into(), given.json.clone());
        let body = serde_json::to_vec(&job).expect("values serialise");
        match coordinator.post(coordinator.url("coordinate/transform"), "application/json", &[], Payload::Bytes(body)) {
            // The coordinator may not read from loopback (FANOUT_ALLOW_PRIVATE_HOSTS): send the file instead.
            Err(e) if e.downcast_ref::<Refused>().is_some_and(|r| r.status == 403) => {
                eprintln!("fanout: the coordinator may not read files on loopback ({e}); sending the file as the request body");
                post_body(&coordinator, &args.csv_file, &given, &options)?
            }
            other => other?,
        }
    };
    let mut progress = Progress::new(Some(size), Unit::Bytes);
    let summary = answer::table(answer, shape, args.job.format, &mut out, &mut progress);
    progress.finish();
    drop(server);
    let summary = summary?;
    out.finish()?;
    let outcome = Outcome::of_table(&summary);
    eprintln!("fanout: {}", outcome.message);
    Ok(outcome.code)
}

/// The file as the request body, the spec and options in the query.
fn post_body(
    coordinator: &crate::job::Coordinator,
    csv_file: &Path,
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
    let file = open(csv_file)?;
    coordinator.post_refusable(url, "text/csv", &[], Payload::File(file), || header_line(csv_file))
}

/// The file's first line, where the header is.
fn header_line(path: &Path) -> Result<Vec<u8>> {
    let mut line = Vec::new();
    BufReader::new(open(path)?).take(64 * 1024).read_until(b'\n', &mut line)?;
    Ok(line)
}

fn run_local(args: &TransformArgs, spec: &Spec, file: std::fs::File, size: u64) -> Result<i32> {
    let format = match args.job.format {
        answer::Format::Json => framing::Format::Json,
        answer::Format::Ndjson => framing::Format::Ndjson,
    };
    let options = JobOptions {
        tolerated_failures: args.job.tolerated_failures,
        tolerated_failure_percent: args.job.tolerated_failure_percent,
        deadline_ms: args.job.deadline_ms,
        ..JobOptions::default()
    };
    // The limits a coordinator configured by this environment would apply.
    let config = Config::from_lookup(|k| std::env::var(k).ok()).map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    let mut out = Output::create(args.job.output.as_deref(), &args.csv_file)?;
    let mut progress = Progress::new(Some(size), Unit::Bytes);
    let report =
        local::transform(spec, BufReader::new(file), format, &config, args.chunk_bytes, &options, &mut out, |r| {
            progress.update(&Update::of_report(r))
        });
    progress.finish();
    let report = report.with_context(|| format!("cannot transform {}", args.csv_file.display()))?;
    out.finish()?;
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
