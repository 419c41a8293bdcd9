//! `fanout scrape URLS_FILE`: a list of URLs through `/coordinate/scrape`,
//! streamed as the body one URL a line, the rest of the job in `x-fanout-job`.

use crate::answer;
use crate::job::{Outcome, Payload};
use crate::output::Output;
use crate::progress::{Progress, Unit};
use crate::{open, JobArgs};
use anyhow::{Context, Result};
use clap::Args;
use fanout::fanout::plan;
use serde_json::{json, Map, Value};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;

#[derive(Args)]
pub struct ScrapeArgs {
    /// A file of URLs, one a line; blank lines and lines starting with # are skipped. E.g. urls.txt.
    urls_file: PathBuf,
    /// A value to extract from every page, NAME=CSS: the text of the first match,
    /// e.g. --select title=h1 --select price=.price (repeatable).
    #[arg(long, value_name = "NAME=CSS", value_parser = crate::parse_env)]
    select: Vec<(String, String)>,
    /// Collect every page's links, e.g. --links.
    #[arg(long)]
    links: bool,
    /// URLs per worker call, e.g. --batch-size 100 (default: the coordinator's, 50).
    #[arg(long, value_name = "N")]
    batch_size: Option<u64>,
    /// Let a bundle the CLI serves fetch pages on loopback and private hosts, e.g. a test site
    /// on localhost: --allow-private-hosts.
    #[arg(long)]
    allow_private_hosts: bool,
    #[command(flatten)]
    durable: crate::durable::DurableArgs,
    #[command(flatten)]
    job: JobArgs,
}

pub fn run(args: ScrapeArgs) -> Result<i32> {
    let mut job = args.job.options();
    if !args.select.is_empty() {
        let select: Map<String, Value> = args.select.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        job.insert("select".into(), select.into());
    }
    if args.links {
        job.insert("options".into(), json!({ "links": true }));
    }
    if let Some(n) = args.batch_size {
        job.insert("batch_size".into(), n.into());
    }
    if args.durable.job {
        return crate::durable::scrape(&args.durable, &args.job, &args.urls_file, job, args.allow_private_hosts);
    }
    let file = open(&args.urls_file)?;
    let urls = count_urls(&args)?;
    let mut out = Output::create(args.job.output.as_deref(), &args.urls_file)?;
    let coordinator = args.job.coordinator(false, args.allow_private_hosts)?;
    let header = ascii_json(&Value::Object(job));
    let headers = [("x-fanout-job", header)];
    let url = coordinator.url("coordinate/scrape");
    // An empty list draws the same refusal of the job's fields as the whole one.
    let response = coordinator.post_refusable(url, "text/plain", &headers, Payload::File(file), || Ok(Vec::new()))?;
    let mut progress = Progress::new(Some(urls), Unit::Urls);
    let mut side = args.job.side_output()?;
    let summary = answer::pages(response, urls, args.job.format()?, &mut out, &mut side, &mut progress);
    progress.finish();
    let summary = summary?;
    out.finish()?;
    let outcome = Outcome::of_pages(&summary);
    eprintln!("fanout: {}", outcome.message);
    Ok(outcome.code)
}

/// The URLs in the list, counted as the coordinator counts them: its answer must have a result for each.
fn count_urls(args: &ScrapeArgs) -> Result<u64> {
    let mut n = 0;
    for line in BufReader::new(open(&args.urls_file)?).split(b'\n') {
        let line = line.with_context(|| format!("cannot read {}", args.urls_file.display()))?;
        n += u64::from(plan::url_of_line(&line).is_some());
    }
    Ok(n)
}

/// `value` as JSON with every non-ASCII character escaped, as a header value must be.
fn ascii_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        }
    }
    out
}
