//! Serves a built fanout component under `wasmtime serve` on a free loopback port.
//!
//! The `.wasm` files come from `FANOUT_WASM_DIR` (default: the workspace's
//! `target/wasm32-wasip2/release`, where `scripts/build.sh` puts them; wasmtime
//! serves those in its `wasi/`, which take their settings from the environment) and the
//! runtime from `FANOUT_WASMTIME` (default: `wasmtime` on `PATH`). The process
//! is killed when the [`Component`] is dropped, also when a test panics.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A component being served.
pub struct Component {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
    /// What it was started with, to start it again.
    start: Start,
}

#[derive(Clone)]
struct Start {
    name: String,
    env: Vec<(String, String)>,
    flags: Vec<String>,
}

/// The directory holding the built components.
pub fn wasm_dir() -> PathBuf {
    std::env::var_os("FANOUT_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release"))
}

/// The path of component `name` (`scrape`, `transform` or `coordinator`) as
/// wasmtime serves it: composed with `config-from-environment`.
pub fn wasm_path(name: &str) -> PathBuf {
    built(wasm_dir().join("wasi").join(format!("fanout_{name}.wasm")))
}

/// The path of component `name` as Spin runs it: its settings from Spin's variables.
pub fn spin_wasm_path(name: &str) -> PathBuf {
    built(wasm_dir().join(format!("fanout_{name}.wasm")))
}

fn built(path: PathBuf) -> PathBuf {
    assert!(path.exists(), "{} is missing: build the components with scripts/build.sh", path.display());
    path
}

/// The `wasmtime` executable.
pub fn wasmtime() -> PathBuf {
    std::env::var_os("FANOUT_WASMTIME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("wasmtime"))
}

impl Component {
    /// Serves component `name` with environment variables `env`, and waits until it listens.
    pub fn serve(name: &str, env: &[(&str, &str)]) -> Component {
        Component::serve_with(name, env, &[])
    }

    /// Like [`Component::serve`], with more `wasmtime serve` flags (`-W max-memory-size=N`, say).
    pub fn serve_with(name: &str, env: &[(&str, &str)], flags: &[&str]) -> Component {
        let start = Start {
            name: name.to_owned(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        };
        let mut last = String::new();
        // A port found free can be taken by a parallel test before wasmtime binds it: try again.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            match launch(&start, port) {
                Ok(component) => return component,
                Err(log) => last = log,
            }
        }
        panic!("wasmtime serve did not start {name}:\n{last}");
    }

    /// Kills the runtime process with SIGKILL, as a crash or an evicted pod
    /// would, and starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match launch(&self.start, self.port) {
                Ok(component) => {
                    *self = component;
                    return;
                }
                Err(log) if Instant::now() > deadline => panic!("{} did not start again:\n{log}", self.start.name),
                Err(_) => thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The most memory the runtime process has held (its peak resident set, `VmHWM`), in bytes.
    pub fn peak_rss(&self) -> u64 {
        peak_rss(self.child.id())
    }

    /// Starts the peak resident set over from the current one, so that
    /// [`Component::peak_rss`] measures what comes next, not start-up.
    pub fn reset_peak_rss(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.child.id()), "5");
    }

    /// CPU time the runtime process has used so far (user and system), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        cpu_secs(self.child.id())
    }

    /// What the runtime and the component wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Component {
    /// Kills the runtime with SIGKILL (under Spin, its process group) and waits for it.
    fn kill(&mut self) {
        if under_spin() {
            crate::spin::stop(&mut self.child, self.port);
        } else {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the components are served by `spin up` (`FANOUT_TEST_RUNTIME=spin`) instead of `wasmtime serve`.
pub fn under_spin() -> bool {
    std::env::var("FANOUT_TEST_RUNTIME").is_ok_and(|r| r == "spin")
}

/// Starts `start` on `port`; what it logged when it did not start.
fn launch(start: &Start, port: u16) -> Result<Component, String> {
    if under_spin() {
        return launch_spin(start, port);
    }
    let wasm = wasm_path(&start.name);
    let mut cmd = Command::new(wasmtime());
    // As many run it (and these machines do): the host's errors then carry its backtrace.
    cmd.env("RUST_BACKTRACE", "1");
    cmd.args(["serve", "-Scli", "--addr", &format!("127.0.0.1:{port}")]);
    cmd.args(&start.flags);
    for (k, v) in &start.env {
        cmd.arg("--env").arg(format!("{k}={v}"));
    }
    cmd.arg(&wasm).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", wasmtime().display()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let log = keep_log(child.stderr.take().unwrap(), Some(ready_tx));
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut component = Component { child, port, log, start: start.clone() };
    loop {
        if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
            return Ok(component);
        }
        if component.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
            let _ = component.child.kill();
            return Err(component.log());
        }
    }
}

/// Collects what `stderr` says, line by line; `ready` hears when wasmtime says it serves.
pub(crate) fn keep_log(stderr: std::process::ChildStderr, ready: Option<mpsc::Sender<()>>) -> Arc<Mutex<String>> {
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(ready) = ready.as_ref().filter(|_| line.contains("Serving HTTP")) {
                let _ = ready.send(());
            }
            let mut log = sink.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    log
}

/// Starts the whole bundle under `spin up` on `port`, the settings as Spin variables; `start`'s
/// component answers there on its routes (as do the others, unused). Runtime flags are wasmtime's: a
/// test that needs them does not run under Spin.
fn launch_spin(start: &Start, port: u16) -> Result<Component, String> {
    assert!(start.flags.is_empty(), "{:?} are wasmtime flags: this test runs under wasmtime only", start.flags);
    let cli = crate::spin::spin_cli().expect("FANOUT_TEST_RUNTIME=spin needs a Spin CLI (FANOUT_SPIN)");
    let variables: Vec<(String, String)> = start.env.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    let mut child = crate::spin::command(&cli, port, &variables)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", cli.display()));
    let log = keep_log(child.stderr.take().unwrap(), None);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut component = Component { child, port, log, start: start.clone() };
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(component);
        }
        if component.child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
            component.kill();
            return Err(component.log());
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// CPU time process `pid` has used so far (user and system), in seconds (0 where there is none).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; 100 ticks a second.
    (ticks(11) + ticks(12)) / 100.0
}

/// The peak resident set of process `pid` in bytes, from `/proc` (0 where there is none).
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}
