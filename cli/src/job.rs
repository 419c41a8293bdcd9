//! Jobs sent to a coordinator over HTTP: where the coordinator is (a given
//! endpoint, the local bundle, or one started for the job), the request, and
//! what its answer's summary means for the exit code.

use crate::bundle::{self, Bundle};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;
use url::Url;

/// The most of an error answer read, for its message.
const MAX_ERROR_BYTES: u64 = 64 * 1024;

/// Where the local bundle is looked for, and `fanout up` listens, unless `FANOUT_LOCAL_ADDR` says otherwise.
pub const DEFAULT_LOCAL_ADDR: &str = "127.0.0.1:3000";

/// No data for this long on a job's connection means the coordinator is gone:
/// it writes a progress line at least every half second.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// The coordinator a job goes to, and the bundle started for it, if one was.
pub struct Coordinator {
    base: Url,
    /// Sent as `Authorization: Bearer`: the one given, or the served bundle's own.
    token: Option<String>,
    /// Kept to be stopped when the job is done.
    bundle: Option<Bundle>,
    /// The client of [`Coordinator::call`], made on its first use.
    http: std::cell::OnceCell<crate::bucket::Http>,
}

/// Where a job goes.
pub struct Target<'a> {
    /// The coordinator given; `None` for the local bundle.
    pub endpoint: Option<&'a Url>,
    /// Where the local bundle is looked for.
    pub local: SocketAddr,
    /// The token for the coordinator given.
    pub token: Option<String>,
    /// The runtime of a bundle served for the job.
    pub runtime: bundle::Runtime,
    /// What a bundle served for the job may read on private hosts.
    pub private_sources: bool,
    pub private_pages: bool,
    /// More configuration for a bundle served for the job: every component's, the coordinator's.
    pub env: Vec<(String, String)>,
    pub coordinator_env: Vec<(String, String)>,
}

impl Coordinator {
    /// The endpoint given; otherwise the local bundle, served for this job (and
    /// stopped after) when nothing answers there. A bundle served for a job
    /// has a random token, so that no one else can use it meanwhile.
    pub fn find(target: Target) -> Result<Coordinator> {
        if let Some(url) = target.endpoint {
            return Ok(Coordinator::at(url.clone(), target.token));
        }
        let local = target.local;
        let base = Url::parse(&format!("http://{local}/")).expect("an address makes a URL");
        if TcpStream::connect_timeout(&local, Duration::from_millis(300)).is_ok() {
            return Ok(Coordinator::at(base, target.token));
        }
        eprintln!("fanout: nothing answers at {local}; serving the local bundle for this job");
        let token = crate::random_token().context("cannot make a token for the bundle")?;
        let options = bundle::Options {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            runtime: target.runtime,
            private_sources: target.private_sources,
            private_pages: target.private_pages,
            token: Some(token.clone()),
            env: target.env,
            coordinator_env: target.coordinator_env,
            echo_logs: false,
        };
        let bundle = Bundle::start(&options)?;
        let base = Url::parse(&format!("{}/", bundle.coordinator())).context("the bundle's address")?;
        Ok(Coordinator { base, token: Some(token), bundle: Some(bundle), http: std::cell::OnceCell::new() })
    }

    /// The coordinator at `base`, called with `token`.
    pub fn at(mut base: Url, token: Option<String>) -> Coordinator {
        // A coordinator under a path prefix keeps it: its routes are relative to it.
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Coordinator { base, token, bundle: None, http: std::cell::OnceCell::new() }
    }

    /// Sends a small JSON request to `route` and reads its JSON answer; any
    /// status but 2xx is a [`Refused`].
    pub fn call(&self, method: &str, route: &str, body: Option<Value>) -> Result<Value> {
        let http = match self.http.get() {
            Some(http) => http,
            None => {
                let made = crate::bucket::Http::new(self.is_local())?;
                self.http.get_or_init(|| made)
            }
        };
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(token) = &self.token {
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let url = self.url(route);
        let body = body.map(|b| serde_json::to_vec(&b).expect("values serialise"));
        let (status, _, answer) = http
            .send(method, url.as_str(), &headers, body, READ_TIMEOUT)
            .with_context(|| format!("cannot reach the coordinator at {}", self.base))?;
        let value: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let message = value["error"]["message"]
                .as_str()
                .map_or_else(|| String::from_utf8_lossy(&answer).into_owned(), str::to_owned);
            return Err(Refused { status, message }.into());
        }
        if value.is_null() {
            bail!("the coordinator's answer to {method} {url} is not JSON");
        }
        Ok(value)
    }

    /// Whether this job started the bundle it goes to.
    pub fn served(&self) -> bool {
        self.bundle.is_some()
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

    /// The URL of `route` (`coordinate/transform`) on this coordinator.
    pub fn url(&self, route: &str) -> Url {
        self.base.join(route).expect("routes are relative paths")
    }

    /// POSTs a job and returns the 200 answer, to be read as it streams in;
    /// any other status is a [`Refused`].
    ///
    /// The request body is sent while the answer is read (the coordinator
    /// answers a CSV body while it is still arriving): an async client on a
    /// runtime thread of its own does both at once, which a blocking client,
    /// sending the whole body first, cannot.
    pub fn post(&self, url: Url, content_type: &str, headers: &[(&str, String)], body: Payload) -> Result<Answer> {
        let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if self.is_local() {
            // A proxy from the environment cannot reach this machine's loopback.
            client = client.no_proxy();
        }
        let client = client.build().context("cannot set up the HTTP client")?;
        let mut request =
            client.post(url).header("content-type", content_type).header("accept", "application/x-ndjson");
        request = match body {
            Payload::Bytes(bytes) => request.body(bytes),
            Payload::File(file) => request.body(reqwest::Body::wrap_stream(read_in_pieces(file))),
            Payload::Stream(reader) => request.body(reqwest::Body::wrap_stream(read_in_pieces(reader))),
        };
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the HTTP client's runtime")?;
        let sent = runtime.block_on(async { tokio::time::timeout(READ_TIMEOUT, request.send()).await });
        let response = match sent {
            Err(_) => bail!("the coordinator at {} did not answer within {} s", self.base, READ_TIMEOUT.as_secs()),
            Ok(Err(e)) => {
                // The innermost cause says what happened ("Connection refused"); the outer ones repeat the URL.
                let mut cause: &dyn std::error::Error = &e;
                while let Some(inner) = cause.source() {
                    cause = inner;
                }
                if e.is_connect() {
                    bail!("cannot reach the coordinator at {}: {cause}", self.base);
                }
                return Err(Broken(format!("the connection to the coordinator at {} broke: {cause}", self.base)).into());
            }
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let mut answer = Answer { runtime, response, piece: Vec::new(), at: 0 };
        if status == 200 {
            return Ok(answer);
        }
        let mut text = String::new();
        let _ = (&mut answer).take(MAX_ERROR_BYTES).read_to_string(&mut text);
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        Err(Refused { status, message: message.split_whitespace().collect::<Vec<_>>().join(" ") }.into())
    }
}

impl Coordinator {
    /// [`Coordinator::post`] of a body the coordinator may refuse part-way.
    ///
    /// A coordinator that refuses a job (a spec that does not fit the header,
    /// an option over its limit, a bad row under `on_error: fail`) answers at
    /// once and closes the connection, which a client still sending often
    /// sees as a broken connection, the answer unread. Then the same request
    /// with the `probe` body (the header, an empty list) gets the refusal again
    /// when it does not depend on the rest of the body.
    pub fn post_refusable(
        &self,
        url: Url,
        content_type: &str,
        headers: &[(&str, String)],
        body: Payload,
        probe: impl FnOnce() -> Result<Vec<u8>>,
    ) -> Result<Answer> {
        let sent = match self.post(url.clone(), content_type, headers, body) {
            Err(e) if e.downcast_ref::<Broken>().is_some() => e,
            other => return other,
        };
        match probe().and_then(|p| self.post(url, content_type, headers, Payload::Bytes(p))) {
            Err(refused) if refused.downcast_ref::<Refused>().is_some() => Err(refused),
            _ => Err(sent.context(
                "the coordinator closed the connection while the body was being sent, as it does when it refuses a \
                 job part-way (on_error: fail meeting a bad row, say)",
            )),
        }
    }
}

/// The connection broke before an answer came.
#[derive(Debug)]
pub struct Broken(String);

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Broken {}

/// A request body.
pub enum Payload {
    /// Small and whole: a JSON job.
    Bytes(Vec<u8>),
    /// A file, sent as it is read.
    File(File),
    /// Bytes read once, in order (standard input, a pipe, a decompressed file), sent as they come.
    Stream(Box<dyn Read + Send>),
}

/// `file` in pieces. The reads block, which is fine on the client's own
/// runtime thread: a local file answers at once, and a pipe is what the job waits for.
fn read_in_pieces<R: Read + Send + 'static>(file: R) -> impl futures::Stream<Item = std::io::Result<Vec<u8>>> {
    futures::stream::unfold(file, |mut file| async move {
        let mut piece = vec![0; 256 * 1024];
        match file.read(&mut piece) {
            Ok(0) => None,
            Ok(n) => {
                piece.truncate(n);
                Some((Ok(piece), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    })
}

/// A coordinator's answer, read as it arrives.
pub struct Answer {
    runtime: tokio::runtime::Runtime,
    response: reqwest::Response,
    piece: Vec<u8>,
    at: usize,
}

impl Read for Answer {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.piece.len() {
            let next = self.runtime.block_on(async { tokio::time::timeout(READ_TIMEOUT, self.response.chunk()).await });
            match next {
                Err(_) => {
                    let message = format!("the coordinator sent nothing for {} s", READ_TIMEOUT.as_secs());
                    return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, message));
                }
                Ok(Err(e)) => return Err(std::io::Error::other(e)),
                Ok(Ok(None)) => return Ok(0),
                Ok(Ok(Some(piece))) => {
                    self.piece.clear();
                    self.piece.extend_from_slice(&piece);
                    self.at = 0;
                }
            }
        }
        let n = buf.len().min(self.piece.len() - self.at);
        buf[..n].copy_from_slice(&self.piece[self.at..self.at + n]);
        self.at += n;
        Ok(n)
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

/// `n` and `noun`, plural unless `n` is 1: "1 row", "2 rows", "0 URLs".
pub fn count(n: u64, noun: &str) -> String {
    match n {
        1 => format!("1 {noun}"),
        _ => format!("{n} {noun}s"),
    }
}

/// How a job ended, for the exit code and the last line on stderr.
pub struct Outcome {
    /// 0: every item succeeded; 2: some items failed; 1: the job failed as a whole.
    pub code: i32,
    pub message: String,
}

impl Outcome {
    /// The outcome a job's summary says; `failures` says what failed, if
    /// anything did, and `done` what was done.
    pub fn of(status: &str, reason: Option<&str>, failures: Option<String>, done: String) -> Outcome {
        match (status, failures) {
            ("complete", None) => Outcome { code: 0, message: format!("complete: {done}") },
            ("complete", Some(failures)) => Outcome { code: 2, message: format!("complete with {failures}: {done}") },
            (other, _) => Outcome {
                code: 1,
                message: format!("the job {other}: {}: {done}", reason.unwrap_or("no reason given")),
            },
        }
    }

    /// The outcome of a transform job's summary.
    pub fn of_table(summary: &Value) -> Outcome {
        let n = |k: &str| summary[k].as_u64().unwrap_or(0);
        let done = format!(
            "{} in, {} out, {} filtered, {} with errors in {:.1} s",
            count(n("rows_in"), "row"),
            n("rows_out"),
            n("rows_filtered"),
            n("rows_errored"),
            n("elapsed_ms") as f64 / 1000.0
        );
        // Source ranges that got no answer are bytes, their rows unknown.
        let failures = match (n("rows_errored"), n("bytes_not_processed")) {
            (0, 0) => None,
            (rows, 0) => Some(format!("{} failed", count(rows, "row"))),
            (0, bytes) => Some(format!("{} of the source not processed", count(bytes, "byte"))),
            (rows, bytes) => {
                Some(format!("{} failed and {} of the source not processed", count(rows, "row"), count(bytes, "byte")))
            }
        };
        Outcome::of(summary["status"].as_str().unwrap_or("?"), summary["reason"].as_str(), failures, done)
    }

    /// The outcome of a scrape job's summary.
    pub fn of_pages(summary: &Value) -> Outcome {
        let n = |k: &str| summary[k].as_u64().unwrap_or(0);
        let done = format!(
            "{}, {}, {} in {:.1} s",
            count(n("urls"), "URL"),
            count(n("pages"), "page"),
            count(n("errors"), "error"),
            n("elapsed_ms") as f64 / 1000.0
        );
        let failures = (n("errors") > 0).then(|| format!("{} failed", count(n("errors"), "URL")));
        Outcome::of(summary["status"].as_str().unwrap_or("?"), summary["reason"].as_str(), failures, done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_singular_for_one() {
        assert_eq!(count(1, "row"), "1 row");
        assert_eq!(count(0, "URL"), "0 URLs");
        assert_eq!(count(2, "whole unit"), "2 whole units");
        let one = Outcome::of_table(&serde_json::json!({"status": "complete", "rows_in": 1, "rows_errored": 1}));
        assert!(one.message.contains("1 row failed: 1 row in, 0 out"), "{}", one.message);
        let pages = Outcome::of_pages(&serde_json::json!({"status": "complete", "urls": 1, "pages": 1}));
        assert!(pages.message.contains("1 URL, 1 page, 0 errors"), "{}", pages.message);
    }
}
