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
    /// A value to extract from every page, NAME=CSS: the text of the first match, or NAME=CSS@ATTR:
    /// that attribute, e.g. --select title=h1 --select image=img.main@src (repeatable).
    #[arg(long, value_name = "NAME=CSS[@ATTR]", value_parser = crate::parse_env)]
    select: Vec<(String, String)>,
    /// Take every match of each --select, as a list, e.g. --select links=a@href --select-all.
    #[arg(long)]
    select_all: bool,
    /// Obey each site's robots.txt, e.g. --robots.
    #[arg(long)]
    robots: bool,
    /// The User-Agent sent, e.g. --user-agent 'acme-bot/1.0 (+https://acme.example/bot)'.
    #[arg(long, value_name = "TEXT")]
    user_agent: Option<String>,
    /// Time allowed for one page, redirects included, in seconds, e.g. --timeout 5 (default 10).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Pages fetched at once from one host, across the whole job, e.g. --per-host 2 (default 8).
    #[arg(long, value_name = "N")]
    per_host: Option<u64>,
    /// Seconds between the starts of two requests to one host, across the whole job, e.g. --delay 0.5.
    #[arg(long, value_name = "SECONDS")]
    delay: Option<f64>,
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

impl ScrapeArgs {
    /// The job's `select`: each `--select` in its short form, or the full one for an attribute or every match.
    fn select(&self) -> Map<String, Value> {
        let spec = |css: &str| -> Value {
            let (css, attr) = split_attr(css);
            match (attr, self.select_all) {
                (None, false) => json!(css),
                (attr, all) => json!({ "css": css, "attr": attr, "all": all }),
            }
        };
        self.select.iter().map(|(name, css)| (name.clone(), spec(css))).collect()
    }

    /// The job's `options`.
    fn options(&self) -> Result<Map<String, Value>> {
        let mut options = Map::new();
        let mut put = |key: &str, value: Value| drop(options.insert(key.into(), value));
        if self.links {
            put("links", json!(true));
        }
        if self.robots {
            put("robots", json!(true));
        }
        if let Some(agent) = &self.user_agent {
            put("user_agent", json!(agent));
        }
        if let Some(seconds) = self.timeout {
            if !(seconds > 0.0 && seconds <= 86_400.0) {
                anyhow::bail!("--timeout {seconds} is not a number of seconds between 0 and 86400");
            }
            put("timeout_ms", json!((seconds * 1000.0).ceil() as u64));
        }
        if let Some(n) = self.per_host {
            put("per_host", json!(n));
        }
        if let Some(seconds) = self.delay {
            if !(0.0..=60.0).contains(&seconds) {
                anyhow::bail!("--delay {seconds} is not a number of seconds between 0 and 60");
            }
            put("delay_ms", json!((seconds * 1000.0).round() as u64));
        }
        Ok(options)
    }
}

/// `CSS@ATTR` as the selector and the attribute; an `@` followed by anything but an attribute name is CSS.
fn split_attr(css: &str) -> (&str, Option<&str>) {
    match css.rsplit_once('@') {
        Some((css, attr))
            if !css.is_empty()
                && !attr.is_empty()
                && attr.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':')) =>
        {
            (css, Some(attr))
        }
        _ => (css, None),
    }
}

pub fn run(args: ScrapeArgs) -> Result<i32> {
    let mut job = args.job.options();
    if !args.select.is_empty() {
        job.insert("select".into(), args.select().into());
    }
    let options = args.options()?;
    if !options.is_empty() {
        job.insert("options".into(), options.into());
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
    if args.allow_private_hosts && !coordinator.served() {
        eprintln!(
            "fanout: --allow-private-hosts applies to a bundle this command serves; the running one keeps its own \
             setting (fanout up --allow-private-hosts)"
        );
    }
    let header = ascii_json(&Value::Object(job));
    let headers = [("x-fanout-job", header)];
    let url = coordinator.url("coordinate/scrape");
    // An empty list draws the same refusal of the job's fields as the whole one.
    let response = coordinator.post_refusable(url, "text/plain", &headers, Payload::File(file), || Ok(Vec::new()))?;
    let mut progress = Progress::new(Some(urls), Unit::Urls, out.on_terminal());
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

#[cfg(test)]
mod tests {
    use super::split_attr;

    #[test]
    fn an_attribute_follows_the_last_at_sign() {
        assert_eq!(split_attr("img.main@src"), ("img.main", Some("src")));
        assert_eq!(split_attr("a[href$='@x.org']"), ("a[href$='@x.org']", None));
        assert_eq!(split_attr("h1"), ("h1", None));
        assert_eq!(split_attr("@src"), ("@src", None));
        assert_eq!(split_attr("meta@data-x"), ("meta", Some("data-x")));
    }
}
