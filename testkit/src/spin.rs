//! Serves the whole bundle under `spin up -f spin.toml`, when a Spin CLI is
//! available: `FANOUT_SPIN`, else `spin` on `PATH`, else the Spin 4 build kept
//! beside the repository in `../shared/tools/spin`. Where there is none,
//! [`Spin::up`] says in one line that the test is skipped, and why.
//!
//! spin.toml names the components where scripts/build.sh puts them
//! (`target/wasm32-wasip2/release`). The settings go in as Spin variables
//! (`--variable fanout_token=...`) or as `SPIN_VARIABLE_*` in Spin's
//! environment, never as the components' environment. The process group is
//! killed when the [`Spin`] is dropped, also when a test panics.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `spin up` serving the bundle.
pub struct Spin {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    state: PathBuf,
}

/// The Spin CLI to run, if there is one.
pub fn spin_cli() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("FANOUT_SPIN") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("spin"))
        .find(|p| p.is_file());
    let kept = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/spin");
    on_path.or_else(|| kept.is_file().then_some(kept))
}

impl Spin {
    /// Serves spin.toml with application variables `variables` (lower case,
    /// as `--variable` takes them) and `env` in Spin's own environment (for
    /// `SPIN_VARIABLE_*`); `None`, after a line saying so, without a Spin CLI.
    pub fn up(test: &str, variables: &[(&str, &str)], env: &[(&str, &str)]) -> Option<Spin> {
        let Some(cli) = spin_cli() else {
            eprintln!("skipped {test}: no Spin CLI (set FANOUT_SPIN, put spin on PATH, or keep ../shared/tools/spin)");
            return None;
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut cmd = Command::new(&cli);
        cmd.arg("up").arg("-f").arg(root.join("spin.toml")).arg("--listen").arg(format!("127.0.0.1:{port}"));
        for (k, v) in variables {
            cmd.arg("--variable").arg(format!("{k}={v}"));
        }
        cmd.envs(env.iter().copied());
        // Spin keeps its logs and key-value store in the app's folder unless told otherwise.
        let state = std::env::temp_dir().join(format!("fanout-spin-{}-{port}", std::process::id()));
        cmd.arg("--state-dir").arg(&state);
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", cli.display()));
        let log = Arc::new(Mutex::new(String::new()));
        for out in [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as _),
        ]
        .into_iter()
        .flatten()
        {
            let sink = log.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let spin = Spin { child, port, log, state };
        // The first run unpacks the kept build (100 MB) before it listens.
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited =
                Command::new("kill").arg("-0").arg(spin.child.id().to_string()).status().map_or(true, |s| !s.success());
            assert!(!exited && Instant::now() < deadline, "spin up did not start:\n{}", spin.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(spin)
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// What Spin and the components wrote so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Spin {
    fn drop(&mut self) {
        // Its group: `spin up` runs the HTTP trigger as a process of its own.
        let _ = Command::new("kill").arg("-KILL").arg("--").arg(format!("-{}", self.child.id())).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
