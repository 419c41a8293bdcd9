//! A small blocking HTTP/1.1 client: one request per connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The time limit for each read and write: generous, since it only guards against hung tests.
pub(crate) const LIMIT: Duration = Duration::from_secs(120);

/// A response read in full.
#[derive(Clone, Debug)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// The body parsed as JSON; panics with the body's text when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method url` with `headers` and `body`, and reads the whole response.
///
/// `url` must be `http://127.0.0.1:PORT/path`. A body that ends before its
/// `content-length` or last chunk is an error (`UnexpectedEof`), not a short body.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Response> {
    read_response(method, send(method, url, headers, body)?)
}

/// Like [`request`], but sends the body with `transfer-encoding: chunked`, one
/// chunk per piece, as a streaming caller would.
///
/// Empty pieces are skipped, since an empty chunk would end the body. Pieces
/// are taken one at a time, so an iterator that sleeps paces the upload.
pub fn request_chunked(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    pieces: impl IntoIterator<Item = Vec<u8>>,
) -> std::io::Result<Response> {
    let mut stream = open(method, url, headers, "transfer-encoding: chunked\r\n")?;
    let send = || -> std::io::Result<()> {
        for piece in pieces.into_iter().filter(|p| !p.is_empty()) {
            // One write per chunk, so Nagle's algorithm does not hold back its tail.
            let mut chunk = format!("{:x}\r\n", piece.len()).into_bytes();
            chunk.extend_from_slice(&piece);
            chunk.extend_from_slice(b"\r\n");
            stream.write_all(&chunk)?;
        }
        stream.write_all(b"0\r\n\r\n")
    };
    // As in `request`: the server may have answered without reading everything.
    let _ = send();
    read_response(method, stream)
}

/// `GET url`.
pub fn get(url: &str) -> Response {
    request("GET", url, &[], b"").unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// `POST url` with a body of the given content type.
pub fn post(url: &str, content_type: &str, body: &[u8]) -> Response {
    request("POST", url, &[("content-type", content_type)], body).unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// `POST url` with a JSON body.
pub fn post_json(url: &str, body: &serde_json::Value) -> Response {
    post(url, "application/json", body.to_string().as_bytes())
}

/// A response whose body is read a line at a time, as it arrives.
///
/// Made by [`stream_lines`]. Dropping it closes the connection, which is how a
/// test plays a caller that goes away in the middle of a streamed answer.
pub struct Lines {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    body: BufReader<Body<BufReader<TcpStream>>>,
    /// Set after an error, so that a caller skipping errors does not spin on a broken connection.
    failed: bool,
}

impl Lines {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl Iterator for Lines {
    /// A line of the de-chunked body without its line ending; the last line
    /// need not end in one. An error ends the iteration.
    type Item = std::io::Result<String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let mut line = String::new();
        match self.body.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                let end = line.trim_end_matches(['\r', '\n']).len();
                line.truncate(end);
                Some(Ok(line))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// A large answer, counted as it streams in rather than kept.
#[derive(Clone, Debug)]
pub struct Counted {
    /// The status code.
    pub status: u16,
    /// The body's length.
    pub bytes: u64,
    /// Its first bytes (at most 64 KiB).
    pub head: Vec<u8>,
    /// Its last bytes (at most 64 KiB).
    pub tail: Vec<u8>,
}

/// Sends `body` and reads the answer at the same time, as a streaming client
/// does (a server may answer while it is still reading), counting the answer
/// instead of keeping it: for benchmarks and jobs of hundreds of megabytes.
pub fn request_counted(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Counted> {
    const KEEP: usize = 64 * 1024;
    let mut stream = open(method, url, headers, &format!("content-length: {}\r\n", body.len()))?;
    let reader = stream.try_clone()?;
    std::thread::scope(|scope| {
        // As in `request`: the server may have answered without reading everything.
        scope.spawn(move || stream.write_all(body));
        let mut r = BufReader::new(reader);
        let (status, headers) = read_status(&mut r)?;
        let mut answer = response_body(r, method, status, &headers);
        let (mut head, mut tail, mut bytes) = (Vec::new(), Vec::new(), 0u64);
        let mut buf = vec![0; 256 * 1024];
        loop {
            let n = answer.read(&mut buf)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            if head.len() < KEEP {
                head.extend_from_slice(&buf[..n.min(KEEP - head.len())]);
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > 2 * KEEP {
                tail.drain(..tail.len() - KEEP);
            }
        }
        if tail.len() > KEEP {
            tail.drain(..tail.len() - KEEP);
        }
        Ok(Counted { status, bytes, head, tail })
    })
}

/// Sends `method url` with `headers` and `body`, reads the status and headers,
/// and leaves the body to be read line by line (NDJSON progress, say).
pub fn stream_lines(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Lines> {
    let mut r = BufReader::new(send(method, url, headers, body)?);
    let (status, headers) = read_status(&mut r)?;
    let body = BufReader::new(response_body(r, method, status, &headers));
    Ok(Lines { status, headers, body, failed: false })
}

/// Sends a request with a `content-length` body and returns the connection, ready for the answer.
fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<TcpStream> {
    let length = if !body.is_empty() || method == "POST" || method == "PUT" {
        format!("content-length: {}\r\n", body.len())
    } else {
        String::new()
    };
    let mut stream = open(method, url, headers, &length)?;
    // A server may answer (413, say) and close before reading the whole body.
    let _ = stream.write_all(body);
    Ok(stream)
}

/// Connects to `url`'s authority and sends the request head; `framing` is the
/// body's `content-length` or `transfer-encoding` header line, or nothing.
fn open(method: &str, url: &str, headers: &[(&str, &str)], framing: &str) -> std::io::Result<TcpStream> {
    let rest = url.strip_prefix("http://").expect("the test client speaks plain http");
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(LIMIT))?;
    stream.set_write_timeout(Some(LIMIT))?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {authority}\r\nconnection: close\r\n{framing}");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    Ok(stream)
}

fn read_response(method: &str, stream: TcpStream) -> std::io::Result<Response> {
    let mut r = BufReader::new(stream);
    let (status, headers) = read_status(&mut r)?;
    let mut body = Vec::new();
    response_body(r, method, status, &headers).read_to_end(&mut body)?;
    Ok(Response { status, headers, body })
}

pub(crate) fn read_status(r: &mut impl BufRead) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let (line, headers) = read_head(r)?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    Ok((status, headers))
}

/// The first value of header `name` (lower case) in `headers`.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Reads a message head: the start line (without its line ending) and the
/// headers, names lower case, in order.
pub(crate) fn read_head(r: &mut impl BufRead) -> std::io::Result<(String, Vec<(String, String)>)> {
    let mut start = String::new();
    r.read_line(&mut start)?;
    let start = start.trim_end().to_owned();
    let mut headers = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    Ok((start, headers))
}

/// The body of a request with `headers`: one with neither `content-length`
/// nor chunked encoding has none.
pub(crate) fn request_body<R: BufRead>(r: R, headers: &[(String, String)]) -> Body<R> {
    Body::new(r, headers, Framing::Length(0))
}

/// The body of the response to `method` with `status` and `headers`. Answers to
/// `HEAD`, and 1xx, 204 and 304 answers, have none whatever their headers say;
/// others without `content-length` or chunked encoding end with the connection.
pub(crate) fn response_body<R: BufRead>(r: R, method: &str, status: u16, headers: &[(String, String)]) -> Body<R> {
    if method.eq_ignore_ascii_case("HEAD") || status < 200 || status == 204 || status == 304 {
        Body { r, framing: Framing::Length(0) }
    } else {
        Body::new(r, headers, Framing::Close)
    }
}

/// A message body as a reader: de-chunked, and ending exactly where the
/// message does. A connection that ends early is an `UnexpectedEof` error, so a
/// truncated body can never pass for a whole one.
pub(crate) struct Body<R> {
    r: R,
    framing: Framing,
}

enum Framing {
    /// This many bytes are left.
    Length(u64),
    /// Everything up to the end of the connection.
    Close,
    /// A chunk-size line comes next.
    ChunkSize,
    /// This many bytes of the current chunk are left, then its line ending.
    ChunkData(u64),
    /// The body is over.
    Done,
}

impl<R: BufRead> Body<R> {
    fn new(r: R, headers: &[(String, String)], otherwise: Framing) -> Body<R> {
        let framing = if header(headers, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            Framing::ChunkSize
        } else if let Some(n) = header(headers, "content-length").and_then(|v| v.parse().ok()) {
            Framing::Length(n)
        } else {
            otherwise
        };
        Body { r, framing }
    }
}

fn early_end() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the connection ended inside the body")
}

impl<R: BufRead> Read for Body<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Each turn either returns or moves past a chunk boundary, and each
        // boundary consumes input, so this ends when the input does.
        loop {
            match self.framing {
                Framing::Done | Framing::Length(0) => return Ok(0),
                Framing::Close => return self.r.read(buf),
                Framing::Length(left) | Framing::ChunkData(left @ 1..) => {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let n = self.r.read(&mut buf[..want])?;
                    if n == 0 {
                        return Err(early_end());
                    }
                    self.framing = match self.framing {
                        Framing::Length(_) => Framing::Length(left - n as u64),
                        _ => Framing::ChunkData(left - n as u64),
                    };
                    return Ok(n);
                }
                Framing::ChunkData(0) => {
                    let mut crlf = String::new();
                    if self.r.read_line(&mut crlf)? == 0 {
                        return Err(early_end());
                    }
                    self.framing = Framing::ChunkSize;
                }
                Framing::ChunkSize => {
                    let mut line = String::new();
                    if self.r.read_line(&mut line)? == 0 {
                        return Err(early_end());
                    }
                    let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                        .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
                    if size == 0 {
                        // Trailers, up to the blank line that ends the message.
                        loop {
                            line.clear();
                            if self.r.read_line(&mut line)? == 0 || line.trim().is_empty() {
                                break;
                            }
                        }
                        self.framing = Framing::Done;
                    } else {
                        self.framing = Framing::ChunkData(size);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::site::Site;
    use std::net::TcpListener;
    use std::sync::mpsc;
    use std::thread::{self, JoinHandle};

    /// What a [`one_shot`] server read: the request line, headers and de-chunked body.
    pub(crate) type Seen = (String, Vec<(String, String)>, Vec<u8>);

    /// A server for one connection: it reads the request, lets `reply` write
    /// whatever it likes, and hands back what it read.
    pub(crate) fn one_shot(
        reply: impl FnOnce(&mut TcpStream) -> std::io::Result<()> + Send + 'static,
    ) -> (String, JoinHandle<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let (line, headers) = read_head(&mut r).unwrap();
            let mut body = Vec::new();
            request_body(&mut r, &headers).read_to_end(&mut body).unwrap();
            reply(&mut stream).unwrap();
            (line, headers, body)
        });
        (url, server)
    }

    #[test]
    fn chunked_requests_arrive_whole() {
        let (url, server) =
            one_shot(|s| s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"));
        let pieces = ["id,n\n", "", "1,2\n", "3,4\n"].map(|p| p.as_bytes().to_vec());
        let resp = request_chunked("POST", &format!("{url}/t?x=1"), &[("x-test", "yes")], pieces).unwrap();
        assert_eq!((resp.status, resp.text().as_str()), (200, "ok"));
        let (line, headers, body) = server.join().unwrap();
        assert_eq!(line, "POST /t?x=1 HTTP/1.1");
        assert_eq!(header(&headers, "transfer-encoding"), Some("chunked"));
        assert_eq!(header(&headers, "x-test"), Some("yes"));
        assert_eq!(body, b"id,n\n1,2\n3,4\n");
    }

    #[test]
    fn lines_arrive_as_sent_and_dropping_closes() {
        let (sent_first, first_sent) = mpsc::channel();
        let (read_first, first_read) = mpsc::channel::<()>();
        let (url, server) = one_shot(move |s| {
            // The first line is split across chunks; the second waits until the
            // client has read the first, which proves it was not buffered whole.
            s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{\"a\r\n5\r\n\":1}\n\r\n")?;
            sent_first.send(()).unwrap();
            first_read.recv_timeout(Duration::from_secs(10)).unwrap();
            s.write_all(b"8\r\n{\"b\":2}\n\r\n")?;
            // The client drops its `Lines` after the second line: the server sees the end.
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            assert!(matches!(s.read(&mut [0; 16]), Ok(0) | Err(_)));
            Ok(())
        });
        let mut lines = stream_lines("POST", &format!("{url}/progress"), &[], b"{}").unwrap();
        assert_eq!(lines.status, 200);
        assert_eq!(lines.header("transfer-encoding"), Some("chunked"));
        first_sent.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), r#"{"a":1}"#);
        read_first.send(()).unwrap();
        assert_eq!(lines.next().unwrap().unwrap(), r#"{"b":2}"#);
        drop(lines);
        let (_, _, body) = server.join().unwrap();
        assert_eq!(body, b"{}");
    }

    #[test]
    fn lines_of_a_content_length_body() {
        let site = Site::start();
        site.put("p.ndjson", "application/x-ndjson", "{\"n\":1}\r\n{\"n\":2}\n{\"n\":3}");
        let lines = stream_lines("GET", &site.url("/files/p.ndjson"), &[], b"").unwrap();
        assert_eq!(lines.status, 200);
        let got: Vec<String> = lines.map(Result::unwrap).collect();
        assert_eq!(got, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
    }

    #[test]
    fn a_cut_body_is_an_error_not_a_short_body() {
        let (url, server) = one_shot(|s| s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf"));
        let err = request("GET", &url, &[], b"").unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
        server.join().unwrap();
        let (url, server) =
            one_shot(|s| s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nline\n"));
        let mut lines = stream_lines("GET", &url, &[], b"").unwrap();
        assert_eq!(lines.next().unwrap().unwrap_err().kind(), std::io::ErrorKind::UnexpectedEof);
        assert!(lines.next().is_none(), "an error ends the lines");
        server.join().unwrap();
    }
}
