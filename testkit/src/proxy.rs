//! A fault-injecting HTTP/1.1 reverse proxy on 127.0.0.1, put between the
//! coordinator and a worker so that a test can make chosen worker calls fail
//! in chosen ways.
//!
//! Requests are numbered in arrival order (0, 1, 2, ... across connections),
//! and a rule set with [`Proxy::set_rule`] picks a [`Fault`] for each number;
//! the default rule passes everything through. The proxy takes one request per
//! connection, answers with `connection: close`, and reads upstream's whole
//! answer before giving it on, so a streamed answer arrives all at once.
//!
//! ```no_run
//! use fanout_testkit::proxy::{Fault, Proxy};
//! # let worker_url = String::new();
//! let proxy = Proxy::start(&worker_url);
//! // The second call fails; the others go through.
//! proxy.set_rule(|n| if n == 1 { Fault::Status(503) } else { Fault::Pass });
//! ```

use crate::client::{header, read_head, read_status, request_body, response_body, LIMIT};
use crate::site::reason;
use serde_json::Value;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// What the proxy does with one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forwards the request and gives back upstream's answer (status, end-to-end headers, body).
    Pass,
    /// Answers this status with `{"error":{"kind":"proxy","message":"injected <code>"}}`
    /// without contacting upstream.
    Status(u16),
    /// Reads the request and never answers; the connection stays open for up
    /// to 60 s, or until the client closes it or the proxy is dropped.
    Hang,
    /// Reads the request and closes the connection without an answer. Std has
    /// no stable `SO_LINGER`, so the client sees the connection end, not a reset.
    Reset,
    /// Forwards, then sends the `content-length` of upstream's whole body with
    /// only the first half of it, and closes.
    Truncate,
    /// Forwards, then overwrites up to 8 bytes in the middle of the body so it
    /// is no longer JSON; the length does not change.
    CorruptJson,
    /// Forwards, then drops the first of the answer's `records` (or `results`).
    /// `fix_stats` lowers `stats.rows_in` and `stats.rows_out` to match, so only
    /// a check against what was sent can tell.
    DropItem {
        /// Make the transform answer's counts agree with its records.
        fix_stats: bool,
    },
    /// Forwards, then repeats the first record (or result) right after itself.
    DuplicateItem {
        /// Make the transform answer's counts agree with its records.
        fix_stats: bool,
    },
    /// Forwards, then appends a record made from the last one with every
    /// string replaced by `"injected"` (or a copy of the last result).
    AddItem {
        /// Make the transform answer's counts agree with its records.
        fix_stats: bool,
    },
    /// Closes the connection at once, the request unread, so the kernel resets
    /// it. For a refused connection, drop the [`Proxy`].
    Down,
    /// Forwards the request (upstream acts on it), then closes the connection
    /// without an answer: a write that happened, whose answer was lost.
    Lost,
    /// Forwards the request after this many milliseconds: a slow answer.
    Delay(u64),
}

/// How long [`Fault::Hang`] holds a connection at most.
const HANG: Duration = Duration::from_secs(60);

type Rule = Arc<dyn Fn(usize) -> Fault + Send + Sync>;

/// What a managed host allows one request: [`Proxy::start_limited`] answers
/// like the host when a request or its answer passes them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostLimits {
    /// The largest request or answer body (413 for a request, 502 for an answer).
    pub max_body: usize,
    /// The longest a request may take (504 after it).
    pub max_time: Duration,
}

struct Shared {
    upstream: SocketAddr,
    limits: Option<HostLimits>,
    rule: Mutex<Rule>,
    arrived: AtomicUsize,
    applied: Mutex<Vec<(usize, Fault)>>,
    stopped: AtomicBool,
}

/// A running proxy. Dropping it closes its port, so later connections are refused.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// Starts a proxy to `upstream` (`http://127.0.0.1:PORT`, no path) on a free loopback port.
    pub fn start(upstream: &str) -> Proxy {
        Proxy::start_with(upstream, None)
    }

    /// A proxy that also holds every request to a managed host's `limits`
    /// (the faults set with [`Proxy::set_rule`] still apply).
    pub fn start_limited(upstream: &str, limits: HostLimits) -> Proxy {
        Proxy::start_with(upstream, Some(limits))
    }

    fn start_with(upstream: &str, limits: Option<HostLimits>) -> Proxy {
        let upstream: SocketAddr = upstream
            .strip_prefix("http://")
            .and_then(|a| a.trim_end_matches('/').parse().ok())
            .filter(|a: &SocketAddr| a.ip().is_loopback())
            .unwrap_or_else(|| panic!("upstream must be http://127.0.0.1:PORT, not {upstream:?}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let shared = Arc::new(Shared {
            upstream,
            limits,
            rule: Mutex::new(Arc::new(|_| Fault::Pass)),
            arrived: AtomicUsize::new(0),
            applied: Mutex::new(Vec::new()),
            stopped: AtomicBool::new(false),
        });
        let state = shared.clone();
        let acceptor = thread::spawn(move || {
            for stream in listener.incoming() {
                if state.stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let state = state.clone();
                    thread::spawn(move || {
                        let _ = serve(stream, &state);
                    });
                }
            }
        });
        Proxy { addr, shared, acceptor: Some(acceptor) }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sets what to do with request number `n` (from 0) for requests that arrive from now on.
    pub fn set_rule(&self, rule: impl Fn(usize) -> Fault + Send + Sync + 'static) {
        *self.shared.rule.lock().unwrap() = Arc::new(rule);
    }

    /// How many requests have arrived so far.
    pub fn requests(&self) -> usize {
        self.shared.arrived.load(Ordering::SeqCst)
    }

    /// The fault chosen for each request so far, by request number.
    pub fn faults(&self) -> Vec<(usize, Fault)> {
        let mut applied = self.shared.applied.lock().unwrap().clone();
        applied.sort_unstable_by_key(|(n, _)| *n);
        applied
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        // The acceptor is blocked in `accept`: a connection wakes it to see the
        // flag. Joining it means the port is closed once `drop` returns.
        if TcpStream::connect(self.addr).is_ok() {
            if let Some(acceptor) = self.acceptor.take() {
                let _ = acceptor.join();
            }
        }
    }
}

struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Upstream's answer, read in full.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn serve(client: TcpStream, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(LIMIT))?;
    client.set_write_timeout(Some(LIMIT))?;
    // A request has arrived once its first byte has; a connection closed
    // before that is no request and gets no number.
    if client.peek(&mut [0])? == 0 {
        return Ok(());
    }
    let n = shared.arrived.fetch_add(1, Ordering::SeqCst);
    let rule = shared.rule.lock().unwrap().clone();
    let fault = rule(n);
    shared.applied.lock().unwrap().push((n, fault));
    if fault == Fault::Down {
        // Closed with the request unread, the connection is reset by the kernel.
        return Ok(());
    }
    let started = Instant::now();
    let req = read_request(&client)?;
    if let Some(limits) = shared.limits {
        if req.body.len() > limits.max_body {
            return error(&client, 413, &format!("the request body is over the host's {} bytes", limits.max_body));
        }
    }
    match fault {
        Fault::Status(code) => error(&client, code, &format!("injected {code}")),
        Fault::Hang => hang(&client, shared),
        Fault::Reset => Ok(()),
        Fault::Lost => {
            let _ = forward(shared.upstream, &req);
            Ok(())
        }
        _ => {
            if let Fault::Delay(ms) = fault {
                thread::sleep(Duration::from_millis(ms));
            }
            let time = shared.limits.map_or(LIMIT, |l| l.max_time.saturating_sub(started.elapsed()));
            let mut got = match forward_within(shared.upstream, &req, time) {
                Ok(got) => got,
                Err(e) if shared.limits.is_some() && started.elapsed() >= time => {
                    return error(&client, 504, &format!("the host cut the request at {} ms: {e}", time.as_millis()))
                }
                Err(e) => return error(&client, 502, &format!("upstream: {e}")),
            };
            if let Some(limits) = shared.limits.filter(|l| started.elapsed() > l.max_time) {
                return error(&client, 504, &format!("the host cut the request at {} ms", limits.max_time.as_millis()));
            }
            if let Some(limits) = shared.limits.filter(|l| got.body.len() > l.max_body) {
                return error(&client, 502, &format!("the answer body is over the host's {} bytes", limits.max_body));
            }
            // An answer to HEAD has no body, but tells the length of the one GET would get.
            let head_length = req
                .method
                .eq_ignore_ascii_case("HEAD")
                .then(|| header(&got.headers, "content-length").and_then(|v| v.parse().ok()).unwrap_or(0));
            match fault {
                Fault::Truncate => {
                    let length = head_length.unwrap_or(got.body.len());
                    return answer(&client, got.status, &got.headers, length, &got.body[..got.body.len() / 2]);
                }
                Fault::CorruptJson => corrupt(&mut got.body),
                _ => {
                    if let Some(body) = edit_items(&got.body, fault) {
                        got.body = body;
                    }
                }
            }
            answer(&client, got.status, &got.headers, head_length.unwrap_or(got.body.len()), &got.body)
        }
    }
}

fn read_request(client: &TcpStream) -> std::io::Result<Request> {
    let mut r = BufReader::new(client);
    let (line, headers) = read_head(&mut r)?;
    let mut words = line.split_whitespace();
    let (Some(method), Some(target)) = (words.next(), words.next()) else {
        return Err(std::io::Error::other(format!("bad request line {line:?}")));
    };
    let (method, target) = (method.to_owned(), target.to_owned());
    let mut body = Vec::new();
    request_body(&mut r, &headers).read_to_end(&mut body)?;
    Ok(Request { method, target, headers, body })
}

/// Whether header `name` is passed on: it is neither hop-by-hop nor one the proxy sets itself.
fn end_to_end(name: &str) -> bool {
    !matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "host"
    )
}

/// Sends `req` to upstream with a `content-length` body and reads the whole de-chunked answer.
fn forward(upstream: SocketAddr, req: &Request) -> std::io::Result<Answer> {
    forward_within(upstream, req, LIMIT)
}

/// [`forward`], each read and write within `time`.
fn forward_within(upstream: SocketAddr, req: &Request, time: Duration) -> std::io::Result<Answer> {
    let time = time.max(Duration::from_millis(1));
    let mut stream = TcpStream::connect_timeout(&upstream, time)?;
    stream.set_read_timeout(Some(time))?;
    stream.set_write_timeout(Some(time))?;
    // The client's Host is kept: a signed request (S3's SigV4) signs the host it was sent to.
    let host = header(&req.headers, "host").map_or_else(|| upstream.to_string(), str::to_owned);
    let mut head = format!(
        "{} {} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\ncontent-length: {}\r\n",
        req.method,
        req.target,
        req.body.len()
    );
    for (k, v) in req.headers.iter().filter(|(k, _)| end_to_end(k)) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(&req.body)?;
    let mut r = BufReader::new(stream);
    let (status, headers) = read_status(&mut r)?;
    let mut body = Vec::new();
    response_body(r, &req.method, status, &headers).read_to_end(&mut body)?;
    Ok(Answer { status, headers, body })
}

/// Answers with `status`, the end-to-end `headers`, `content-length: length`, and `body`.
fn answer(
    mut client: &TcpStream,
    status: u16,
    headers: &[(String, String)],
    length: usize,
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (k, v) in headers.iter().filter(|(k, _)| end_to_end(k)) {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("content-length: {length}\r\nconnection: close\r\n\r\n"));
    client.write_all(head.as_bytes())?;
    client.write_all(body)?;
    client.flush()
}

/// Answers `status` with a JSON error body in the components' shape, of kind `proxy`.
fn error(client: &TcpStream, status: u16, message: &str) -> std::io::Result<()> {
    let body = serde_json::json!({"error": {"kind": "proxy", "message": message}}).to_string();
    let headers = [("content-type".to_owned(), "application/json".to_owned())];
    answer(client, status, &headers, body.len(), body.as_bytes())
}

/// Holds the connection without answering until the client closes it, the
/// proxy is dropped, or [`HANG`] has passed; whatever the client sends is dropped.
fn hang(mut client: &TcpStream, shared: &Shared) -> std::io::Result<()> {
    client.set_read_timeout(Some(Duration::from_millis(50)))?;
    let deadline = Instant::now() + HANG;
    let mut sink = [0; 1024];
    while Instant::now() < deadline && !shared.stopped.load(Ordering::SeqCst) {
        match client.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// Overwrites up to 8 bytes in the middle of `body`. Whatever they land in, a
/// string, a number or between values, a `"` followed by a bare `x`, or
/// unbalanced closers, leave text that no JSON parser accepts.
fn corrupt(body: &mut [u8]) {
    const GARBAGE: &[u8] = b"}}]]{{\"x";
    let n = GARBAGE.len().min(body.len());
    let at = (body.len() - n) / 2;
    body[at..at + n].copy_from_slice(&GARBAGE[..n]);
}

/// Applies an item fault to a JSON transform answer (`records`) or scrape
/// answer (`results`); `None` when `body` is neither (NDJSON, an error, ...) or
/// holds no item. The answer is re-serialised, keeping the order of keys.
fn edit_items(body: &[u8], fault: Fault) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let key = ["records", "results"].into_iter().find(|k| doc.get(k).is_some_and(Value::is_array))?;
    let items = doc[key].as_array_mut()?;
    let first = items.first()?.clone();
    let (change, fix_stats): (i64, bool) = match fault {
        Fault::DropItem { fix_stats } => {
            items.remove(0);
            (-1, fix_stats)
        }
        Fault::DuplicateItem { fix_stats } => {
            items.insert(1, first);
            (1, fix_stats)
        }
        Fault::AddItem { fix_stats } => {
            let mut extra = items.last()?.clone();
            if key == "records" {
                replace_strings(&mut extra);
            }
            items.push(extra);
            (1, fix_stats)
        }
        _ => return None,
    };
    if fix_stats {
        if let Some(stats) = doc.get_mut("stats") {
            for count in ["rows_in", "rows_out"] {
                if let Some(v) = stats.get_mut(count) {
                    if let Some(n) = v.as_i64() {
                        *v = (n + change).into();
                    }
                }
            }
        }
    }
    serde_json::to_vec(&doc).ok()
}

fn replace_strings(v: &mut Value) {
    match v {
        Value::String(s) => *s = "injected".to_owned(),
        Value::Array(items) => items.iter_mut().for_each(replace_strings),
        Value::Object(fields) => fields.values_mut().for_each(replace_strings),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::one_shot;
    use crate::client::{get, request, request_chunked};
    use crate::site::Site;
    use serde_json::json;
    use std::io::ErrorKind;

    fn transform_answer() -> Value {
        json!({
            "records": [{"id": "1", "n": 1}, {"id": "2", "n": 2}, {"id": "3", "n": 3}],
            "errors": [],
            "stats": {"rows_in": 4, "rows_out": 3, "rows_filtered": 1, "rows_errored": 0}
        })
    }

    /// A site serving a transform answer at `t.json`, a scrape answer at
    /// `s.json` and an answer without records at `empty.json`, and a proxy to it.
    fn site_and_proxy() -> (Site, Proxy) {
        let site = Site::start();
        site.put("t.json", "application/json", transform_answer().to_string());
        let scrape = json!({"results": [{"index": 0, "url": "/a"}, {"index": 1, "url": "/b"}]});
        site.put("s.json", "application/json", scrape.to_string());
        site.put("empty.json", "application/json", json!({"records": [], "stats": {"rows_in": 0}}).to_string());
        let proxy = Proxy::start(&site.url(""));
        (site, proxy)
    }

    #[test]
    fn pass_is_the_same_as_direct() {
        let (site, proxy) = site_and_proxy();
        for path in ["/files/t.json", "/status/404", "/flaky/k/5?retry_after=7"] {
            let (direct, proxied) = (get(&site.url(path)), get(&proxy.url(path)));
            assert_eq!(proxied.status, direct.status, "{path}");
            assert_eq!(proxied.header("content-type"), direct.header("content-type"), "{path}");
            assert_eq!(proxied.header("retry-after"), direct.header("retry-after"), "{path}");
            assert_eq!(proxied.body, direct.body, "{path}");
        }
        assert_eq!(get(&proxy.url("/flaky/k/5?retry_after=7")).header("retry-after"), Some("7"));
        let head = request("HEAD", &proxy.url("/files/t.json"), &[], b"").unwrap();
        assert_eq!(head.header("content-length"), Some(transform_answer().to_string().len().to_string().as_str()));
        assert_eq!(proxy.requests(), 5);
        assert_eq!(proxy.faults(), (0..5).map(|n| (n, Fault::Pass)).collect::<Vec<_>>());
    }

    #[test]
    fn requests_go_upstream_unchanged_but_for_framing() {
        let (upstream, server) = one_shot(|s| {
            s.write_all(b"HTTP/1.1 201 Created\r\ncontent-type: text/plain\r\nx-worker: 7\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        });
        let proxy = Proxy::start(&upstream);
        let pieces = ["a,b\n", "1,2\n"].map(|p| p.as_bytes().to_vec());
        let resp = request_chunked("PUT", &proxy.url("/t?line_offset=3"), &[("x-fanout-spec", "{}")], pieces).unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (201, "abcde"));
        assert_eq!((resp.header("content-length"), resp.header("x-worker")), (Some("5"), Some("7")));
        assert_eq!(resp.header("transfer-encoding"), None);
        let (line, headers, body) = server.join().unwrap();
        assert_eq!(line, "PUT /t?line_offset=3 HTTP/1.1");
        assert_eq!(header(&headers, "x-fanout-spec"), Some("{}"));
        assert_eq!((header(&headers, "content-length"), header(&headers, "transfer-encoding")), (Some("8"), None));
        assert_eq!(body, b"a,b\n1,2\n");
    }

    #[test]
    fn status_answers_without_upstream() {
        let (site, proxy) = site_and_proxy();
        proxy.set_rule(|n| if n == 0 { Fault::Status(503) } else { Fault::Pass });
        let resp = get(&proxy.url("/files/t.json"));
        assert_eq!(resp.status, 503);
        assert_eq!(resp.json(), json!({"error": {"kind": "proxy", "message": "injected 503"}}));
        assert_eq!(site.hits("/files/t.json"), 0);
        assert_eq!(get(&proxy.url("/files/t.json")).status, 200);
        assert_eq!(site.hits("/files/t.json"), 1);
    }

    #[test]
    fn broken_answers() {
        let (_site, proxy) = site_and_proxy();
        let whole = transform_answer().to_string().into_bytes();
        proxy.set_rule(|n| [Fault::Truncate, Fault::CorruptJson, Fault::Reset, Fault::Down][n]);
        let err = request("GET", &proxy.url("/files/t.json"), &[], b"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnexpectedEof);
        let corrupt = get(&proxy.url("/files/t.json"));
        assert_eq!((corrupt.status, corrupt.body.len()), (200, whole.len()));
        assert!(serde_json::from_slice::<Value>(&corrupt.body).is_err(), "{}", corrupt.text());
        assert_eq!(corrupt.body[..10], whole[..10]);
        assert!(request("GET", &proxy.url("/files/t.json"), &[], b"").is_err(), "reset");
        assert!(request("GET", &proxy.url("/files/t.json"), &[], b"").is_err(), "down");
        let url = proxy.url("/");
        drop(proxy);
        assert_eq!(request("GET", &url, &[], b"").unwrap_err().kind(), ErrorKind::ConnectionRefused);
    }

    #[test]
    fn hang_never_answers() {
        let (_site, proxy) = site_and_proxy();
        proxy.set_rule(|_| Fault::Hang);
        let mut stream = TcpStream::connect(proxy.addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        stream.write_all(b"GET /files/t.json HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
        let err = stream.read(&mut [0; 64]).unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut), "{err}");
        assert_eq!(proxy.faults(), [(0, Fault::Hang)]);
    }

    #[test]
    fn item_faults_change_the_records() {
        let (_site, proxy) = site_and_proxy();
        let rules = [
            Fault::DropItem { fix_stats: false },
            Fault::DropItem { fix_stats: true },
            Fault::DuplicateItem { fix_stats: true },
            Fault::AddItem { fix_stats: false },
            Fault::AddItem { fix_stats: true },
        ];
        proxy.set_rule(move |n| rules[n % rules.len()]);
        let fetch = |path: &str| get(&proxy.url(path)).json();
        let stats = |v: &Value| (v["stats"]["rows_in"].clone(), v["stats"]["rows_out"].clone());

        let dropped = fetch("/files/t.json");
        assert_eq!(dropped["records"], json!([{"id": "2", "n": 2}, {"id": "3", "n": 3}]));
        assert_eq!(stats(&dropped), (json!(4), json!(3)));
        let fixed = fetch("/files/t.json");
        assert_eq!(fixed["records"].as_array().unwrap().len(), 2);
        assert_eq!(stats(&fixed), (json!(3), json!(2)));
        assert_eq!(fixed["stats"]["rows_filtered"], 1);
        let doubled = fetch("/files/t.json");
        assert_eq!(doubled["records"][0], doubled["records"][1]);
        assert_eq!(doubled["records"].as_array().unwrap().len(), 4);
        assert_eq!(stats(&doubled), (json!(5), json!(4)));
        let added = fetch("/files/t.json");
        assert_eq!(added["records"][3], json!({"id": "injected", "n": 3}));
        assert_eq!(stats(&added), (json!(4), json!(3)));
        let results = fetch("/files/s.json")["results"].clone();
        assert_eq!(results, json!([{"index": 0, "url": "/a"}, {"index": 1, "url": "/b"}, {"index": 1, "url": "/b"}]));

        let empty = get(&proxy.url("/files/empty.json"));
        assert_eq!(empty.json(), json!({"records": [], "stats": {"rows_in": 0}}));
    }
}
