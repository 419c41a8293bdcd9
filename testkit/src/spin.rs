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
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `spin up` serving the bundle.
pub struct Spin {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
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
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let variables: Vec<(String, String)> =
            variables.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let mut cmd = command(&cli, port, &variables);
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", cli.display()));
        let log = crate::component::keep_log(child.stderr.take().unwrap(), None);
        let mut spin = Spin { child, port, log };
        // The first run unpacks the kept build (100 MB) before it listens.
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            let exited = spin.child.try_wait().ok().flatten().is_some();
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
        stop(&mut self.child, self.port);
    }
}

/// `spin up` of the repository's spin.toml on `port`, with application
/// variables `variables`, in a process group of its own, stderr piped.
pub(crate) fn command(cli: &Path, port: u16, variables: &[(String, String)]) -> Command {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = Command::new(cli);
    cmd.arg("up").arg("-f").arg(root.join("spin.toml")).arg("--listen").arg(format!("127.0.0.1:{port}"));
    // Spin keeps its logs and key-value store in the app's folder unless told otherwise.
    cmd.arg("--state-dir").arg(state_dir(port));
    for (k, v) in variables {
        cmd.arg("--variable").arg(format!("{k}={v}"));
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0);
    cmd
}

/// Kills `spin up` on `port` and its HTTP trigger (a process of its own: the group), and removes its state.
pub(crate) fn stop(child: &mut Child, port: u16) {
    let _ = Command::new("kill").arg("-KILL").arg("--").arg(format!("-{}", child.id())).status();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(state_dir(port));
}

fn state_dir(port: u16) -> PathBuf {
    std::env::temp_dir().join(format!("fanout-spin-{}-{port}", std::process::id()))
}
