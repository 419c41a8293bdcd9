//! A real load balancer in front of worker replicas: HAProxy (Debian's
//! package; `FANOUT_HAPROXY` names another), started on a free loopback port
//! with a configuration of its own, round-robin over the replicas, a replica
//! that refuses connections taken out by HAProxy's health checks and its
//! requests sent to another (`option redispatch`). Stopped when dropped.
//!
//! Where HAProxy is absent, [`Balancer::start`] says in one line that the test
//! is skipped, and why.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// HAProxy balancing over some replicas.
pub struct Balancer {
    child: Child,
    port: u16,
    dir: PathBuf,
}

/// The HAProxy executable, if there is one.
pub fn haproxy() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FANOUT_HAPROXY") {
        return Some(PathBuf::from(path));
    }
    ["/usr/sbin/haproxy", "/usr/bin/haproxy"].into_iter().map(PathBuf::from).find(|p| p.is_file())
}

impl Balancer {
    /// Balances over the replicas at `backends` (`127.0.0.1:PORT` each); `None`, after a line saying so,
    /// without HAProxy.
    pub fn start(test: &str, backends: &[String]) -> Option<Balancer> {
        let Some(haproxy) = haproxy() else {
            eprintln!("skipped {test}: no HAProxy (scripts/setup.sh installs Debian's; FANOUT_HAPROXY names one)");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = std::env::temp_dir().join(format!("fanout-haproxy-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let servers: String = backends
            .iter()
            .enumerate()
            .map(|(i, b)| format!("    server replica{i} {b} check inter 200ms fall 1 rise 2\n"))
            .collect();
        // Timeouts long enough for a worker call of a whole unit; retries and redispatch move a request
        // whose replica refused the connection (a killed one) to another.
        let config = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 300s\n    timeout server 300s\n    \
             retries 3\n    option redispatch\n\
             frontend workers\n    bind 127.0.0.1:{port}\n    default_backend replicas\n\
             backend replicas\n    balance roundrobin\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(&haproxy)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", haproxy.display()));
        let balancer = Balancer { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "haproxy did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(balancer)
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
