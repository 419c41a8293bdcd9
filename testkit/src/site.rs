//! A local fixture web site, served on 127.0.0.1 from a thread per connection.
//!
//! Routes (`GET`, and `HEAD` where the table says so):
//!
//! | path | answer |
//! | --- | --- |
//! | `/page/<id>?pad=N&delay_ms=M` | an HTML page titled `Page <id>`, padded by N bytes, after M ms |
//! | `/status/<code>` | that status with a small HTML body |
//! | `/flaky/<key>/<n>?retry_after=S` | 503 with `Retry-After: S` (default 0) for the first n requests for key, then a page |
//! | `/big/<bytes>` | an HTML page of that many bytes, sent in 16 KiB pieces |
//! | `/cut/<bytes>` | promises `bytes` of HTML, sends half of them and closes: a body that breaks off |
//! | `/hang` | never answers (holds the connection for 60 s) |
//! | `/text` | a `text/plain` body |
//! | `/nested/<depth>` | a hostile page: `depth` nested `<div>`s around 64 KiB of text |
//! | `/files/<name>` | content put with [`Site::put`], honouring `Range: bytes=a-b` and `If-Match` (its `ETag` changes with each put); `HEAD` gives its length and `accept-ranges: bytes` |
//! | `/headsays/<n>/<name>` | the same, but `HEAD` says the file is `n` bytes (a size that is wrong, or out of date) |
//! | `/changing/<name>` | the same, but its `ETag` is new at every request (a file being rewritten) |
//! | `/nohead/<name>` | the same as `/files/<name>`, but `HEAD` is 405 (a server that does not allow it) |
//! | `/whole/<name>` | the same content, ignoring `Range` (a server without range support) |
//! | `/redirect/<n>?delay_ms=M&to=<path>` | a chain of n relative redirects ending at `to`, each after M ms |
//! | `/redirect-to?url=<url>` | one redirect to `url`, as given |
//! | `/loop/a`, `/loop/b` | redirects to each other |
//! | `/gzip/<id>`, `/deflate/<id>` | page `<id>` with that content-encoding |
//! | `/corrupt-gzip` | `content-encoding: gzip` over bytes that are not gzip |
//! | `/latin1`, `/latin1-meta` | a windows-1252 page, its charset in the header or in a `<meta>` |
//! | `/echo-ua` | a page whose title is the request's `User-Agent` |
//! | `/robots.txt` | what [`Site::set_robots`] set, a redirect set by [`Site::redirect_robots`], else 404 |
//!
//! [`Site::hits`] counts the requests each path received; [`Site::peak`] is
//! the most `/page/` requests the site was working on at once.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

#[derive(Default)]
struct State {
    /// Shared, so that serving a file of hundreds of MB copies no bytes under the lock.
    files: HashMap<String, (String, Arc<Vec<u8>>)>,
    hits: HashMap<String, usize>,
    /// The status and body (or `Location`) of `/robots.txt`.
    robots: Option<(u16, String)>,
    in_flight: usize,
    peak: usize,
}

/// A running fixture site. It stops accepting when dropped... or when the process ends.
pub struct Site {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl Site {
    /// Starts the site on a free loopback port.
    pub fn start() -> Site {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                thread::spawn(move || {
                    let _ = serve(stream, &state);
                });
            }
        });
        Site { addr, state }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Serves `body` at `/files/<name>` with the given content type.
    pub fn put(&self, name: &str, content_type: &str, body: impl Into<Vec<u8>>) {
        self.state.lock().unwrap().files.insert(name.to_owned(), (content_type.to_owned(), Arc::new(body.into())));
    }

    /// Serves `text` at `/robots.txt`.
    pub fn set_robots(&self, text: &str) {
        self.state.lock().unwrap().robots = Some((200, text.to_owned()));
    }

    /// Makes `/robots.txt` redirect to `location`.
    pub fn redirect_robots(&self, location: &str) {
        self.state.lock().unwrap().robots = Some((301, location.to_owned()));
    }

    /// The most `/page/` requests the site was working on at once.
    pub fn peak(&self) -> usize {
        self.state.lock().unwrap().peak
    }

    /// How many requests `path` (without query) has received.
    pub fn hits(&self, path: &str) -> usize {
        self.state.lock().unwrap().hits.get(path).copied().unwrap_or(0)
    }
}

/// The HTML of fixture page `id`, padded with about `pad` bytes of text.
pub fn page_html(id: &str, pad: usize) -> String {
    let mut html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Page {id}</title>\
         <meta name=\"description\" content=\"Fixture page {id}\">\
         <meta property=\"og:title\" content=\"OG {id}\"><link rel=\"canonical\" href=\"/page/{id}\"></head>\
         <body><h1>Heading {id}</h1><ul><li><a href=\"/page/{id}-next\">next</a></li></ul>"
    );
    let para = "<p>Lorem ipsum dolor sit amet, consectetur adipiscing elit &amp; more.</p>\n";
    while html.len() < pad {
        html.push_str(para);
    }
    html.push_str("</body></html>");
    html
}

struct Req {
    method: String,
    path: String,
    query: HashMap<String, String>,
    headers: HashMap<String, String>,
}

fn read_request(stream: &TcpStream) -> std::io::Result<Option<Req>> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("GET").to_owned();
    let target = words.next().unwrap_or("/").to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let query =
        query.split('&').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
    Ok(Some(Req { method, path: path.to_owned(), query, headers }))
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    respond_head(stream, status, extra, content_type, body.len())?;
    stream.write_all(body)?;
    stream.flush()
}

/// Sends only the head of an answer whose body is `len` bytes: the whole answer to a `HEAD`.
fn respond_head(
    stream: &mut TcpStream,
    status: u16,
    extra: &[(&str, String)],
    content_type: &str,
    len: usize,
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {len}\r\nconnection: close\r\n",
        reason(status),
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

const HTML: &str = "text/html; charset=utf-8";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("writing to memory");
    e.finish().expect("writing to memory")
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("writing to memory");
    e.finish().expect("writing to memory")
}

/// "Café – crème brûlée €", in windows-1252.
const LATIN1_TEXT: &[u8] = b"Caf\xe9 \x96 cr\xe8me br\xfbl\xe9e \x80";

fn serve(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let Some(req) = read_request(&stream)? else {
        return Ok(());
    };
    *state.lock().unwrap().hits.entry(req.path.clone()).or_default() += 1;
    let num = |k: &str| req.query.get(k).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["page", id] => {
            {
                let mut s = state.lock().unwrap();
                s.in_flight += 1;
                s.peak = s.peak.max(s.in_flight);
            }
            thread::sleep(Duration::from_millis(num("delay_ms")));
            // Counted out before answering, so a client that sends its next
            // request as soon as this one is answered never looks concurrent.
            state.lock().unwrap().in_flight -= 1;
            respond(&mut stream, 200, &[], HTML, page_html(id, num("pad") as usize).as_bytes())
        }
        ["status", code] => {
            let code = code.parse().unwrap_or(500);
            respond(&mut stream, code, &[], HTML, format!("<title>Status {code}</title>").as_bytes())
        }
        ["flaky", key, n] => {
            let seen = *state.lock().unwrap().hits.get(&req.path).unwrap_or(&0);
            if seen <= n.parse().unwrap_or(0) {
                respond(
                    &mut stream,
                    503,
                    &[("retry-after", num("retry_after").to_string())],
                    HTML,
                    b"<title>busy</title>",
                )
            } else {
                respond(&mut stream, 200, &[], HTML, page_html(key, 0).as_bytes())
            }
        }
        ["big", bytes] => {
            let total: usize = bytes.parse().unwrap_or(0);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {HTML}\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes())?;
            let piece = vec![b' '; 16 * 1024];
            let mut sent = 0;
            while sent < total {
                let n = piece.len().min(total - sent);
                stream.write_all(&piece[..n])?;
                sent += n;
            }
            stream.flush()
        }
        ["cut", bytes] => {
            // Promises `bytes` and sends half, then closes: a body that breaks off.
            let total: usize = bytes.parse().unwrap_or(0);
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: {HTML}\r\ncontent-length: {total}\r\nconnection: close\r\n\r\n"
            );
            stream.write_all(head.as_bytes())?;
            stream.write_all(&vec![b' '; total / 2])?;
            stream.flush()
        }
        ["hang"] => {
            thread::sleep(Duration::from_secs(60));
            Ok(())
        }
        ["text"] => respond(&mut stream, 200, &[], "text/plain", b"plain text, not HTML"),
        ["nested", depth] => {
            let depth: usize = depth.parse().unwrap_or(0);
            let page = format!(
                "<title>Nested</title>{}{}{}",
                "<div>".repeat(depth),
                "words ".repeat(64 * 1024 / 6),
                "</div>".repeat(depth)
            );
            respond(&mut stream, 200, &[], HTML, page.as_bytes())
        }
        ["redirect", n] => {
            let n: u32 = n.parse().unwrap_or(0);
            let to = req.query.get("to").cloned().unwrap_or_else(|| "/page/end".into());
            let delay = num("delay_ms");
            thread::sleep(Duration::from_millis(delay));
            let location = if n <= 1 { to } else { format!("../redirect/{}?delay_ms={delay}&to={to}", n - 1) };
            respond(&mut stream, 302, &[("location", location)], HTML, b"")
        }
        ["redirect-to"] => {
            let url = req.query.get("url").cloned().unwrap_or_default();
            respond(&mut stream, 301, &[("location", url)], HTML, b"")
        }
        ["loop", which] => {
            let other = if *which == "a" { "b" } else { "a" };
            respond(&mut stream, 307, &[("location", format!("/loop/{other}"))], HTML, b"")
        }
        ["gzip", id] => {
            respond(&mut stream, 200, &[("content-encoding", "gzip".into())], HTML, &gzip(page_html(id, 0).as_bytes()))
        }
        ["deflate", id] => respond(
            &mut stream,
            200,
            &[("content-encoding", "deflate".into())],
            HTML,
            &deflate(page_html(id, 0).as_bytes()),
        ),
        ["corrupt-gzip"] => respond(&mut stream, 200, &[("content-encoding", "gzip".into())], HTML, b"not gzip at all"),
        ["latin1"] => {
            let mut body = b"<title>".to_vec();
            body.extend_from_slice(LATIN1_TEXT);
            body.extend_from_slice(b"</title>");
            respond(&mut stream, 200, &[], "text/html; charset=iso-8859-1", &body)
        }
        ["latin1-meta"] => {
            let mut body = b"<html><head><meta charset=\"windows-1252\"><title>".to_vec();
            body.extend_from_slice(LATIN1_TEXT);
            body.extend_from_slice(b"</title></head></html>");
            respond(&mut stream, 200, &[], "text/html", &body)
        }
        ["echo-ua"] => {
            let ua = req.headers.get("user-agent").cloned().unwrap_or_default();
            respond(&mut stream, 200, &[], HTML, format!("<title>{ua}</title>").as_bytes())
        }
        ["robots.txt"] => match state.lock().unwrap().robots.clone() {
            Some((200, text)) => respond(&mut stream, 200, &[], "text/plain", text.as_bytes()),
            Some((status, location)) => respond(&mut stream, status, &[("location", location)], "text/plain", b""),
            None => respond(&mut stream, 404, &[], "text/plain", b"no robots.txt"),
        },
        ["whole", name] => match state.lock().unwrap().files.get(*name).cloned() {
            Some((content_type, body)) => respond(&mut stream, 200, &[], &content_type, &body),
            None => respond(&mut stream, 404, &[], HTML, b"<title>Not Found</title>"),
        },
        [route @ ("files" | "nohead" | "shifted" | "changing"), name] => {
            serve_file(&mut stream, &req, state, route, name, None)
        }
        ["headsays", says, name] => serve_file(&mut stream, &req, state, "headsays", name, says.parse().ok()),
        _ => respond(&mut stream, 404, &[], HTML, b"<title>Not Found</title>"),
    }
}

/// A file put with [`Site::put`], as `route` serves it; `head_says` is the length a lying `HEAD` gives.
fn serve_file(
    stream: &mut TcpStream,
    req: &Req,
    state: &Mutex<State>,
    route: &str,
    name: &str,
    head_says: Option<usize>,
) -> std::io::Result<()> {
    let head = req.method == "HEAD";
    if head && route == "nohead" {
        return respond_head(stream, 405, &[("allow", "GET".into())], "text/plain", 0);
    }
    let (file, hits) = {
        let state = state.lock().unwrap();
        (state.files.get(name).cloned(), state.hits.get(&req.path).copied().unwrap_or(0))
    };
    let Some((content_type, body)) = file else {
        return if head {
            respond_head(stream, 404, &[], HTML, 0)
        } else {
            respond(stream, 404, &[], HTML, b"<title>Not Found</title>")
        };
    };
    // `/changing/` is a new version at every request.
    let etag = match route {
        "changing" => format!("\"v{hits}\""),
        _ => format!("\"{:x}-{:x}\"", body.len(), Arc::as_ptr(&body) as usize),
    };
    if req.headers.get("if-match").is_some_and(|m| m.trim() != "*" && m.trim() != etag) {
        return respond(stream, 412, &[("etag", etag)], "text/plain", b"precondition failed");
    }
    if head {
        let headers = [("accept-ranges", "bytes".into()), ("etag", etag)];
        return respond_head(stream, 200, &headers, &content_type, head_says.unwrap_or(body.len()));
    }
    match req.headers.get("range").and_then(|r| parse_range(r, body.len())) {
        None if req.headers.contains_key("range") => respond(
            stream,
            416,
            &[("content-range", format!("bytes */{}", body.len()))],
            "text/plain",
            b"range not satisfiable",
        ),
        None => respond(stream, 200, &[("accept-ranges", "bytes".into()), ("etag", etag)], &content_type, &body),
        Some((a, b)) => {
            // `/shifted/` answers one byte later than asked, as a server that miscounts would.
            let a = if route == "shifted" { (a + 1).min(b) } else { a };
            let headers = [("content-range", format!("bytes {a}-{b}/{}", body.len())), ("etag", etag)];
            respond(stream, 206, &headers, &content_type, &body[a..=b])
        }
    }
}

/// Parses `bytes=a-b` or `bytes=a-` against a body of `len` bytes into inclusive bounds.
fn parse_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let a: usize = a.parse().ok()?;
    let b: usize = if b.is_empty() { len.checked_sub(1)? } else { b.parse::<usize>().ok()?.min(len.checked_sub(1)?) };
    (a <= b).then_some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{get, request};

    #[test]
    fn head_gives_the_length_and_nohead_refuses() {
        let site = Site::start();
        site.put("a.csv", "text/csv", "id\n1\n2\n");
        let head = request("HEAD", &site.url("/files/a.csv"), &[], b"").unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.header("content-length"), Some("7"));
        assert_eq!(head.header("accept-ranges"), Some("bytes"));
        assert_eq!(head.header("content-type"), Some("text/csv"));
        assert!(head.body.is_empty());
        assert_eq!(request("HEAD", &site.url("/files/missing"), &[], b"").unwrap().status, 404);

        let refused = request("HEAD", &site.url("/nohead/a.csv"), &[], b"").unwrap();
        assert_eq!((refused.status, refused.header("allow")), (405, Some("GET")));
        assert_eq!(get(&site.url("/nohead/a.csv")).body, b"id\n1\n2\n");
        let part = request("GET", &site.url("/nohead/a.csv"), &[("range", "bytes=3-4")], b"").unwrap();
        assert_eq!(
            (part.status, part.header("content-range"), part.text().as_str()),
            (206, Some("bytes 3-4/7"), "1\n")
        );
        assert_eq!(site.hits("/files/a.csv"), 1);
    }
}
