//! A local file served to the coordinator and its workers on loopback, with
//! HTTP byte ranges, so that a large CSV is fanned out in source-URL mode
//! (each worker reads its own range) instead of pushed through one request.
//!
//! Only `HEAD` and `GET` of the one file are answered, at a path holding a
//! random token, so that other local processes cannot guess it; at most
//! [`MAX_CONNECTIONS`] at once, each bounded in time. Each answer has the
//! file's `ETag` (its size and modification time) and honours `If-Match`, so
//! that a file changed while a job reads it fails the job instead of mixing
//! two versions.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// The longest request head read.
const MAX_HEAD_BYTES: u64 = 16 * 1024;

/// Connections served at once: the workers' range reads, with room to spare.
/// Past it a connection is closed at once, so no local process can pile up threads.
const MAX_CONNECTIONS: usize = 64;

/// How long a client may take to send its request, or to take each piece of the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// A file being served; serving stops when this is dropped.
pub struct FileServer {
    addr: SocketAddr,
    path: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Serves `file` on a free port of 127.0.0.1.
    pub fn start(file: &Path) -> io::Result<FileServer> {
        File::open(file)?;
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("file");
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
        let path = format!("/{}/{name}", crate::random_token()?);
        let stop = Arc::new(AtomicBool::new(false));
        let served = Served { file: file.to_path_buf(), path: path.clone() };
        let halt = stop.clone();
        let open = Arc::new(AtomicUsize::new(0));
        let thread = thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if open.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                    open.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (served, open) = (served.clone(), open.clone());
                thread::spawn(move || {
                    // A connection that breaks off concerns only its own request.
                    let _ = served.answer(conn);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Ok(FileServer { addr, path, stop, thread: Some(thread) })
    }

    /// The file's URL.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.path)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Served {
    file: PathBuf,
    path: String,
}

/// A file's validator: its size and modification time.
fn etag(meta: &std::fs::Metadata) -> String {
    let modified = meta.modified().ok().and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok());
    format!("\"{:x}-{:x}\"", meta.len(), modified.map_or(0, |m| m.as_nanos()))
}

impl Served {
    fn answer(&self, mut conn: TcpStream) -> io::Result<()> {
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut reader = BufReader::new((&conn).take(MAX_HEAD_BYTES));
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let (mut range, mut if_match) = (None, None);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.trim().eq_ignore_ascii_case("range") {
                    range = Some(value.trim().to_owned());
                } else if name.trim().eq_ignore_ascii_case("if-match") {
                    if_match = Some(value.trim().to_owned());
                }
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if target != self.path {
            return respond(&mut conn, "404 Not Found", &[], None);
        }
        if method != "GET" && method != "HEAD" {
            return respond(&mut conn, "405 Method Not Allowed", &[("allow", "GET, HEAD".into())], None);
        }
        let mut file = File::open(&self.file)?;
        let meta = file.metadata()?;
        let (len, etag) = (meta.len(), etag(&meta));
        if if_match.is_some_and(|tags| tags != "*" && !tags.split(',').any(|t| t.trim() == etag)) {
            return respond(&mut conn, "412 Precondition Failed", &[("etag", etag)], None);
        }
        let (status, start, end) = match range.as_deref().map(|r| parse_range(r, len)) {
            None => ("200 OK", 0, len),
            Some(Some((start, end))) => ("206 Partial Content", start, end),
            Some(None) => {
                let unsatisfiable = [("content-range", format!("bytes */{len}"))];
                return respond(&mut conn, "416 Range Not Satisfiable", &unsatisfiable, None);
            }
        };
        let mut headers =
            vec![("accept-ranges", "bytes".to_owned()), ("content-type", "text/csv".to_owned()), ("etag", etag)];
        if status.starts_with("206") {
            headers.push(("content-range", format!("bytes {start}-{}/{len}", end - 1)));
        }
        headers.push(("content-length", (end - start).to_string()));
        if method == "HEAD" {
            return respond(&mut conn, status, &headers, None);
        }
        file.seek(SeekFrom::Start(start))?;
        respond(&mut conn, status, &headers, Some(&mut file.take(end - start)))
    }
}

/// A single `bytes=A-B`, `bytes=A-` or `bytes=-N` range of a file of `len`
/// bytes as a half-open interval, or `None` when it cannot be satisfied.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    let spec = value.strip_prefix("bytes=")?.trim();
    let (first, last) = spec.split_once('-')?;
    let (start, end) = match (first.trim(), last.trim()) {
        ("", n) => (len.saturating_sub(n.parse().ok()?), len),
        (a, "") => (a.parse().ok()?, len),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.saturating_add(1).min(len)),
    };
    (start < end).then_some((start, end))
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[(&str, String)],
    body: Option<&mut dyn Read>,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if body.is_none() && !headers.iter().any(|(n, _)| *n == "content-length") {
        head.push_str("content-length: 0\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    if let Some(body) = body {
        io::copy(body, conn)?;
    }
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges_are_read_as_rfc_9110_says() {
        assert_eq!(parse_range("bytes=0-0", 10), Some((0, 1)));
        assert_eq!(parse_range("bytes=2-", 10), Some((2, 10)));
        assert_eq!(parse_range("bytes=5-100", 10), Some((5, 10)));
        assert_eq!(parse_range("bytes=-3", 10), Some((7, 10)));
        assert_eq!(parse_range("bytes=10-", 10), None);
        assert_eq!(parse_range("bytes=4-2", 10), None);
        assert_eq!(parse_range("items=0-1", 10), None);
        assert_eq!(parse_range("bytes=a-b", 10), None);
    }
}
