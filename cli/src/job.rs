//! Jobs sent to a coordinator over HTTP: where the coordinator is (a given
//! endpoint, the local bundle, or one started for the job), the request, and
//! what its answer's summary means for the exit code.

use crate::bundle::{self, Bundle};
use anyhow::{anyhow, Context, Result};
use reqwest::blocking::{Body, Client, Response};
use serde_json::Value;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;
use url::Url;

/// The most of an error answer read, for its message.
const MAX_ERROR_BYTES: u64 = 64 * 1024;

/// Where the local bundle is looked for, and `fanout up` listens, unless `FANOUT_LOCAL_ADDR` says otherwise.
pub const DEFAULT_LOCAL_ADDR: &str = "127.0.0.1:3000";

/// The coordinator a job goes to, and the bundle started for it, if one was.
pub struct Coordinator {
    pub base: Url,
    /// Kept to be stopped when the job is done.
    _bundle: Option<Bundle>,
}

impl Coordinator {
    /// `endpoint` when given; otherwise the local bundle at `local`, started
    /// for this job (and stopped after) when nothing answers there.
    pub fn find(
        endpoint: Option<&Url>,
        local: SocketAddr,
        runtime: bundle::Runtime,
        private_pages: bool,
    ) -> Result<Coordinator> {
        if let Some(url) = endpoint {
            return Ok(Coordinator { base: url.clone(), _bundle: None });
        }
        let base = Url::parse(&format!("http://{local}/")).expect("an address makes a URL");
        if TcpStream::connect_timeout(&local, Duration::from_millis(300)).is_ok() {
            return Ok(Coordinator { base, _bundle: None });
        }
        eprintln!("fanout: nothing answers at {local}; serving the local bundle for this job");
        let options = bundle::Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            runtime,
            // The CLI serves local files to the coordinator and workers on loopback.
            private_sources: true,
            private_pages,
            env: Vec::new(),
            echo_logs: false,
        };
        let bundle = Bundle::start(&options)?;
        bundle.stop_on_signal(130)?;
        let base = Url::parse(bundle.coordinator()).context("the bundle's address")?;
        Ok(Coordinator { base, _bundle: Some(bundle) })
    }

    /// Whether the coordinator runs on this machine, so that a file served on loopback reaches it.
    pub fn is_local(&self) -> bool {
        match self.base.host() {
            Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        }
    }

    /// The URL of `route` (`/coordinate/transform`) on this coordinator.
    pub fn url(&self, route: &str) -> Url {
        self.base.join(route.trim_start_matches('/')).expect("routes are relative paths")
    }

    /// POSTs a job and returns the 200 answer, streaming; any other status is a [`Refused`].
    pub fn post(&self, url: Url, content_type: &str, headers: &[(&str, String)], body: Body) -> Result<Response> {
        // No overall time limit: a job takes as long as it takes; the coordinator has its own deadline.
        let client = Client::builder().timeout(None).build().context("cannot set up the HTTP client")?;
        let mut request =
            client.post(url).header("content-type", content_type).header("accept", "application/x-ndjson").body(body);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let response = request.send().map_err(|e| {
            // The innermost cause says what happened ("Connection refused"); the outer ones repeat the URL.
            let mut cause: &dyn std::error::Error = &e;
            while let Some(inner) = cause.source() {
                cause = inner;
            }
            anyhow!("cannot reach the coordinator at {}: {cause}", self.base)
        })?;
        let status = response.status().as_u16();
        if status == 200 {
            return Ok(response);
        }
        let mut text = String::new();
        let _ = response.take(MAX_ERROR_BYTES).read_to_string(&mut text);
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(Refused { status, message: message.split_whitespace().collect::<Vec<_>>().join(" ") }.into())
    }
}

/// The coordinator answered with an error status: the job failed before it started.
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the coordinator refused the job ({}): {}", self.status, self.message)
    }
}

impl std::error::Error for Refused {}

/// How a job ended, for the exit code and the last line on stderr.
pub struct Outcome {
    /// 0: every item succeeded; 2: some items failed; 1: the job failed as a whole.
    pub code: i32,
    pub message: String,
}

impl Outcome {
    /// The outcome a job's summary says; `failed` counts the items that failed,
    /// `done` describes what was done.
    pub fn of(status: &str, reason: Option<&str>, failed: u64, noun: &str, done: String) -> Outcome {
        match status {
            "complete" if failed == 0 => Outcome { code: 0, message: format!("complete: {done}") },
            "complete" => Outcome { code: 2, message: format!("complete with {failed} {noun} failed: {done}") },
            other => Outcome {
                code: 1,
                message: format!("the job {other}: {}: {done}", reason.unwrap_or("no reason given")),
            },
        }
    }

    /// The outcome of a transform job's summary.
    pub fn of_table(summary: &Value) -> Outcome {
        let n = |k: &str| summary[k].as_u64().unwrap_or(0);
        let mut done = format!(
            "{} rows in, {} out, {} filtered, {} with errors",
            n("rows_in"),
            n("rows_out"),
            n("rows_filtered"),
            n("rows_errored")
        );
        let mut failed = n("rows_errored");
        if n("bytes_not_processed") > 0 {
            done.push_str(&format!(", {} bytes of the source not processed", n("bytes_not_processed")));
            failed += 1;
        }
        done.push_str(&format!(" in {:.1} s", n("elapsed_ms") as f64 / 1000.0));
        Outcome::of(summary["status"].as_str().unwrap_or("?"), summary["reason"].as_str(), failed, "rows", done)
    }

    /// The outcome of a scrape job's summary.
    pub fn of_pages(summary: &Value) -> Outcome {
        let n = |k: &str| summary[k].as_u64().unwrap_or(0);
        let done = format!(
            "{} URLs, {} pages, {} errors in {:.1} s",
            n("urls"),
            n("pages"),
            n("errors"),
            n("elapsed_ms") as f64 / 1000.0
        );
        Outcome::of(summary["status"].as_str().unwrap_or("?"), summary["reason"].as_str(), n("errors"), "URLs", done)
    }
}
