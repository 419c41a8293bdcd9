//! Durable jobs from a terminal: `fanout transform ... --job`, `fanout scrape
//! ... --job`, and `fanout job status|resume|cancel|fetch ID`.
//!
//! A local file is uploaded into the deployment's bucket first (a multipart
//! upload, with progress); the job is made on the coordinator (`POST
//! /jobs/...`) and driven by ticks until it is finished, with the progress
//! bar. Ctrl-C stops the ticking, not the job: it is resumed with `fanout job
//! resume ID`. `fanout job fetch` streams the parts back into one file,
//! checking each part's SHA-256 against the manifest.

use crate::answer::{CsvRows, Format};
use crate::bucket::Store;
use crate::bundle::Env;
use crate::job::{count, Coordinator, Outcome};
use crate::output::Output;
use crate::progress::{Progress, Unit, Update};
use crate::{signals, JobArgs};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fanout::fanout::jobs::receipt::ObjectSum;
use fanout::fanout::jobs::state::Manifest;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `--job` and where its input goes: shared by `transform` and `scrape`.
#[derive(Args, Clone)]
pub struct DurableArgs {
    /// Run it as a durable job: state and results in the deployment's bucket, advanced by
    /// ticks from this command (Ctrl-C leaves it resumable). E.g. --job.
    #[arg(long)]
    pub job: bool,
    /// The deployment's bucket, where a local input is uploaded and the results are, e.g.
    /// --bucket fanout (credentials and endpoint: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_REGION, AWS_ENDPOINT_URL).
    #[arg(long, env = "FANOUT_S3_BUCKET", value_name = "NAME")]
    pub bucket: Option<String>,
}

impl DurableArgs {
    fn store(&self) -> Result<Store> {
        let bucket = self.bucket.as_deref().context("a durable job needs the deployment's bucket: --bucket NAME")?;
        Store::from_env(bucket)
    }
}

/// `fanout job ...`.
#[derive(Subcommand)]
pub enum JobCommand {
    /// Print a job's status (JSON), e.g. fanout job status 3f2a...
    Status(IdArgs),
    /// Tick a job until it is finished, with its progress, e.g. fanout job resume 3f2a...
    Resume(IdArgs),
    /// Cancel a job: no unit starts after it, e.g. fanout job cancel 3f2a...
    Cancel(IdArgs),
    /// Write a finished job's results into one file, its parts checked, e.g.
    /// fanout job fetch 3f2a... -o sales.json
    Fetch(FetchArgs),
}

#[derive(Args)]
pub struct IdArgs {
    /// The job's id, as `--job` printed it.
    id: String,
    /// The coordinator, e.g. --endpoint https://fanout.example.org (default: the local bundle at FANOUT_LOCAL_ADDR).
    #[arg(long, env = "FANOUT_ENDPOINT", value_parser = crate::parse_endpoint)]
    endpoint: Option<url::Url>,
    /// The coordinator's token (its FANOUT_TOKEN), e.g. --token "$FANOUT_TOKEN".
    #[arg(long, env = "FANOUT_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Args)]
pub struct FetchArgs {
    /// The job's id.
    id: String,
    /// The bucket the job is in, e.g. --bucket fanout.
    #[arg(long, env = "FANOUT_S3_BUCKET", value_name = "NAME")]
    bucket: String,
    /// Write to this file instead of stdout, e.g. -o out.json.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// json: one document, as the HTTP API answers; ndjson: one record (or result) a line, the error
    /// records and the summary on stderr; csv: a transform job's records or groups as rows, the rest on
    /// stderr. Default: -o's extension (.csv, .ndjson, .jsonl, .json), else json. E.g. --format csv.
    #[arg(long, value_enum)]
    format: Option<Format>,
}

impl IdArgs {
    fn coordinator(&self) -> Result<Coordinator> {
        let local = crate::local_addr()?;
        let base = match &self.endpoint {
            Some(url) => url.clone(),
            None => url::Url::parse(&format!("http://{local}/")).expect("an address makes a URL"),
        };
        Ok(Coordinator::at(base, self.token.clone()))
    }
}

/// Runs `fanout job ...`.
pub fn command(command: JobCommand) -> Result<i32> {
    match command {
        JobCommand::Status(args) => {
            let status = args.coordinator()?.call("GET", &format!("jobs/{}", args.id), None)?;
            println!("{status:#}");
            Ok(0)
        }
        JobCommand::Resume(args) => {
            let status = drive(&args.coordinator()?, &args.id)?;
            Ok(finished(&status))
        }
        JobCommand::Cancel(args) => {
            let status = args.coordinator()?.call("DELETE", &format!("jobs/{}", args.id), None)?;
            println!("{status:#}");
            Ok(0)
        }
        JobCommand::Fetch(args) => fetch(&args),
    }
}

/// A transform job: `input` (a local file, uploaded first; or an `http(s)://` or `s3://` URL) through `spec`.
pub fn transform(
    durable: &DurableArgs,
    args: &JobArgs,
    input: &Path,
    spec: Value,
    mut options: Map<String, Value>,
) -> Result<i32> {
    let text = input.to_string_lossy();
    let source = if ["http://", "https://", "s3://"].iter().any(|p| text.starts_with(p)) {
        text.into_owned()
    } else {
        upload(&durable.store()?, input)?
    };
    options.insert("source".into(), source.into());
    options.insert("spec".into(), spec);
    submit_and_drive(durable, args, "jobs/transform", options, false)
}

/// A scrape job: the URLs of a local file (uploaded first), or an `http(s)://` or `s3://` list;
/// `private_pages` lets a bundle served for it fetch pages on private hosts.
pub fn scrape(
    durable: &DurableArgs,
    args: &JobArgs,
    input: &Path,
    mut job: Map<String, Value>,
    private_pages: bool,
) -> Result<i32> {
    let text = input.to_string_lossy();
    if ["http://", "https://", "s3://"].iter().any(|p| text.starts_with(p)) {
        job.insert("urls_source".into(), text.into_owned().into());
    } else {
        // Uploaded, so that a list of any size makes a job without a large request.
        let key = upload(&durable.store()?, input)?;
        job.insert("urls_source".into(), key.into());
    }
    submit_and_drive(durable, args, "jobs/scrape", job, private_pages)
}

/// Uploads `input` to `uploads/{random}/{name}`, with progress; its `s3://` URI.
fn upload(store: &Store, input: &Path) -> Result<String> {
    let file = crate::open(input)?;
    let size = file.metadata().with_context(|| format!("cannot read {}", input.display()))?.len();
    let name = input.file_name().map_or("input".into(), |n| n.to_string_lossy().into_owned());
    let key = format!("uploads/{}/{name}", crate::random_token().context("cannot make a name for the upload")?);
    eprintln!("fanout: uploading {} ({size} bytes) to {}", input.display(), store.uri(&key));
    let mut progress = Progress::new(Some(size), Unit::Bytes, false);
    let started = std::time::Instant::now();
    store.upload(&key, file, |sent| {
        progress.update(&Update {
            bytes_done: Some(sent),
            bytes_total: Some(size),
            elapsed_ms: started.elapsed().as_millis() as u64,
            ..Update::default()
        })
    })?;
    progress.finish();
    Ok(store.uri(&key))
}

fn submit_and_drive(
    durable: &DurableArgs,
    args: &JobArgs,
    route: &str,
    body: Map<String, Value>,
    private_pages: bool,
) -> Result<i32> {
    let env = match &durable.bucket {
        // A bundle served for the job keeps its state in the same bucket.
        Some(_) => bundle_env(&durable.store()?),
        None => (Vec::new(), Vec::new()),
    };
    let coordinator = args.coordinator_with(true, private_pages, env)?;
    let made = coordinator.call("POST", route, Some(Value::Object(body)))?;
    let id = made["id"].as_str().context("the coordinator's answer has no job id")?.to_owned();
    eprintln!("fanout: job {id}; if this stops, resume it with: fanout job resume {id}");
    let status = drive(&coordinator, &id)?;
    Ok(finished(&status))
}

/// A bundle the CLI serves keeps its state in the CLI's bucket: where it is, for every component
/// (workers write there, and only there), and its keys, for the coordinator alone.
fn bundle_env(store: &Store) -> (Env, Env) {
    let c = store.config();
    let mut all =
        vec![("FANOUT_S3_BUCKET".to_owned(), c.bucket.clone()), ("FANOUT_S3_REGION".to_owned(), c.region.clone())];
    if let Some(endpoint) = &c.endpoint {
        all.push(("FANOUT_S3_ENDPOINT".to_owned(), endpoint.as_str().trim_end_matches('/').to_owned()));
        // A bucket on this machine is the one private host the workers need.
        if let (Some(host), Some(port)) = (endpoint.host_str(), endpoint.port_or_known_default()) {
            all.push(("FANOUT_PRIVATE_HOSTS".to_owned(), format!("{host}:{port}")));
        }
    }
    let keys = vec![
        ("FANOUT_S3_ACCESS_KEY_ID".to_owned(), c.access_key_id.clone()),
        ("FANOUT_S3_SECRET_ACCESS_KEY".to_owned(), c.secret_access_key.clone()),
    ];
    (all, keys)
}

/// Ticks job `id` until it is finished, showing its progress; its last status.
/// Ctrl-C stops here, and leaves the job to be resumed.
fn drive(coordinator: &Coordinator, id: &str) -> Result<Value> {
    let hint = format!("fanout: job {id} is not finished; resume it with: fanout job resume {id}");
    let _on_signal = signals::on_signal(move || eprintln!("{hint}"));
    let first = coordinator.call("GET", &format!("jobs/{id}"), None)?;
    let unit = if first["kind"] == "scrape" { Unit::Urls } else { Unit::Bytes };
    let mut progress = Progress::new(None, unit, false);
    let mut last = first;
    let mut failed_in_a_row = 0;
    while last["finished"] != true {
        let before = last["units"]["done"].clone();
        last = match coordinator.call("POST", &format!("jobs/{id}/tick"), None) {
            Ok(status) => {
                failed_in_a_row = 0;
                status
            }
            // A tick is idempotent: one the bucket or the network failed is sent again, a few times.
            Err(e) if failed_in_a_row < TICK_RETRIES && worth_another_tick(&e) => {
                failed_in_a_row += 1;
                eprintln!("fanout: a tick failed ({e:#}); again in {failed_in_a_row} s");
                std::thread::sleep(Duration::from_secs(failed_in_a_row.into()));
                continue;
            }
            Err(e) => return Err(e),
        };
        progress.update(&update_of(&last));
        if last["units"]["done"] == before && last["finished"] != true {
            // Nothing moved: the units left are another tick's, or wait for a lease to run out.
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    progress.finish();
    Ok(last)
}

/// How many ticks in a row may fail transiently before `drive` gives up (the job stays resumable).
const TICK_RETRIES: u8 = 5;

/// Whether a failed tick is worth sending again: the coordinator could not be
/// reached, or it answered that the bucket or a gateway failed. Refusals and
/// misconfigurations (4xx, 500) are not.
fn worth_another_tick(error: &anyhow::Error) -> bool {
    match error.downcast_ref::<crate::job::Refused>() {
        Some(refused) => matches!(refused.status, 502..=504),
        None => true,
    }
}

/// The progress a job's status shows.
fn update_of(status: &Value) -> Update {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (items, elapsed) = (&status["items"], n(&status["elapsed_ms"]));
    let rate = |count: u64| count * 1000 / elapsed.max(1);
    match status["kind"].as_str() {
        Some("scrape") => Update {
            done: n(&items["results"]),
            total: items["urls"].as_u64(),
            failed: n(&items["errors"]),
            pages: Some(n(&items["pages"])),
            pages_per_s: Some(rate(n(&items["pages"]))),
            elapsed_ms: elapsed,
            ..Update::default()
        },
        _ => Update {
            done: n(&status["units"]["done"]),
            total: status["units"]["total"].as_u64(),
            failed: n(&items["rows_errored"]) + n(&status["units"]["failed"]),
            rows: Some(n(&items["rows_in"])),
            rows_per_s: Some(rate(n(&items["rows_in"]))),
            bytes_done: status["bytes"]["done"].as_u64(),
            bytes_total: status["bytes"]["total"].as_u64(),
            elapsed_ms: elapsed,
            ..Update::default()
        },
    }
}

/// Prints a finished job's manifest key and says how it ended; the exit code.
fn finished(status: &Value) -> i32 {
    println!("{}", status["manifest_key"].as_str().unwrap_or_default());
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let items = &status["items"];
    let (done, failures) = match status["kind"].as_str() {
        Some("scrape") => (
            format!(
                "{}, {}, {}",
                count(n(&items["urls"]), "URL"),
                count(n(&items["pages"]), "page"),
                count(n(&items["errors"]), "error")
            ),
            (n(&items["errors"]) > 0).then(|| format!("{} failed", count(n(&items["errors"]), "URL"))),
        ),
        _ => (
            format!(
                "{} in, {} out, {} filtered, {} with errors",
                count(n(&items["rows_in"]), "row"),
                n(&items["rows_out"]),
                n(&items["rows_filtered"]),
                n(&items["rows_errored"])
            ),
            match (n(&items["rows_errored"]), n(&status["units"]["failed"])) {
                (0, 0) => None,
                (rows, 0) => Some(format!("{} failed", count(rows, "row"))),
                (rows, units) => Some(format!("{} and {} failed", count(rows, "row"), count(units, "whole unit"))),
            },
        ),
    };
    let done = format!("{done} in {:.1} s", n(&status["elapsed_ms"]) as f64 / 1000.0);
    let state = match status["status"].as_str() {
        Some("succeeded") => "complete",
        Some(other) => other,
        None => "?",
    };
    let outcome = Outcome::of(state, status["reason"].as_str(), failures, done);
    eprintln!("fanout: {}", outcome.message);
    outcome.code
}

/// `fanout job fetch`: the parts, in order, into one document (or NDJSON), each checked.
fn fetch(args: &FetchArgs) -> Result<i32> {
    let store = Store::from_env(&args.bucket)?;
    let key = format!("jobs/{}/manifest.json", args.id);
    let manifest =
        store.get(&key)?.with_context(|| format!("{} is not there: is the job finished?", store.uri(&key)))?;
    let manifest: Manifest = serde_json::from_slice(&manifest).context("the manifest is not one fanout writes")?;
    let mut out = Output::create(args.output.as_deref(), Path::new(""))?;
    let scrape = manifest.summary.get("urls").is_some();
    let read = |stored: &fanout::fanout::jobs::state::Stored| -> Result<Vec<u8>> {
        let body = store
            .get(&stored.key)?
            .with_context(|| format!("{} is in the manifest but not in the bucket", stored.key))?;
        let sum = ObjectSum::of(&body);
        if sum.sha256 != stored.sha256 || sum.bytes != stored.bytes {
            bail!("{} is not what the manifest says (sha256 {}, {} bytes)", stored.key, sum.sha256, sum.bytes);
        }
        Ok(body)
    };
    let lines =
        |body: &[u8]| body.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect::<Vec<_>>();
    let format = args.format.or_else(|| args.output.as_deref().and_then(Format::of_path)).unwrap_or(Format::Json);
    if format == Format::Csv && scrape {
        bail!("a scrape job's results have no CSV form: use --format json or ndjson");
    }
    let mut csv = CsvRows::default();
    let mut item = |out: &mut Output, line: &[u8]| -> Result<()> {
        match format {
            Format::Csv => {
                let value: &RawValue = serde_json::from_slice(line).context("a part holds a line that is not JSON")?;
                csv.write(out, value)
            }
            _ => write_line(out, None, line),
        }
    };
    match format {
        Format::Ndjson | Format::Csv => {
            // One record (result, group, the partial state) a line or row; the error records and the summary to stderr.
            let mut side = std::io::stderr();
            if manifest.result.is_none() {
                for part in &manifest.parts {
                    for line in lines(&read(part)?) {
                        item(&mut out, &line)?;
                    }
                }
            }
            for errors in &manifest.errors {
                for line in lines(&read(errors)?) {
                    write_line(&mut side, Some("error"), &line)?;
                }
            }
            if let Some(stored) = &manifest.result {
                let result: Value =
                    serde_json::from_slice(&read(stored)?).with_context(|| format!("{} is not JSON", stored.key))?;
                match (&result["groups"], &result["partial"]) {
                    (Value::Array(groups), _) => {
                        for group in groups {
                            item(&mut out, group.to_string().as_bytes())?;
                        }
                    }
                    (_, Value::Object(_)) if format == Format::Csv => {
                        bail!("a partial aggregate has no CSV form: use --format json or ndjson")
                    }
                    (_, partial @ Value::Object(_)) => writeln!(out, "{partial}")?,
                    _ => bail!("{} has neither groups nor a partial state", stored.key),
                }
            }
            writeln!(side, "{}", json!({ "summary": manifest.summary }))?;
        }
        Format::Json => {
            let field = if scrape { "results" } else { "records" };
            match &manifest.result {
                // An aggregate's result is one object: its groups (or partial state) are the document's start.
                Some(result) => {
                    let body = read(result)?;
                    let body = String::from_utf8_lossy(&body);
                    let inner = body.trim().strip_prefix('{').and_then(|b| b.strip_suffix('}')).unwrap_or("");
                    write!(out, "{{{inner}")?;
                }
                None => {
                    write!(out, "{{\"{field}\":[")?;
                    let mut first = true;
                    for part in &manifest.parts {
                        for line in lines(&read(part)?) {
                            if !std::mem::take(&mut first) {
                                out.write_all(b",")?;
                            }
                            out.write_all(&line)?;
                        }
                    }
                    write!(out, "]")?;
                }
            }
            if !scrape {
                write!(out, ",\"errors\":[")?;
                let mut first = true;
                for errors in &manifest.errors {
                    for line in lines(&read(errors)?) {
                        if !std::mem::take(&mut first) {
                            out.write_all(b",")?;
                        }
                        out.write_all(&line)?;
                    }
                }
                write!(out, "]")?;
            }
            writeln!(out, ",\"summary\":{}}}", manifest.summary)?;
        }
    }
    out.finish()?;
    eprintln!("fanout: {} parts of job {} written, each checked against the manifest", manifest.parts.len(), args.id);
    Ok(0)
}

fn write_line(out: &mut impl Write, wrap: Option<&str>, line: &[u8]) -> Result<()> {
    match wrap {
        Some(key) => {
            write!(out, "{{\"{key}\":")?;
            out.write_all(line)?;
            out.write_all(b"}\n")?;
        }
        None => {
            out.write_all(line)?;
            out.write_all(b"\n")?;
        }
    }
    Ok(())
}
