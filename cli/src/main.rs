//! `fanout`: run whole jobs from a terminal.
//!
//! * `fanout up` serves the bundle locally until Ctrl-C ([`bundle`]).
//! * `fanout scrape` and `fanout transform` send a job to a coordinator, show
//!   its progress ([`progress`]) and write the merged output ([`answer`]); a
//!   local CSV is served to the workers in byte ranges ([`files`]), or run
//!   in this process with `--local`.
//!
//! Exit codes: 0 when every item succeeded, 2 when the job finished with item
//! errors, 1 when it failed as a whole (one line on stderr saying why).

mod answer;
mod bucket;
mod bundle;
mod durable;
mod files;
mod input;
mod job;
mod output;
mod progress;
mod scrape;
mod signals;
mod transform;

use anyhow::{Context, Result};
use bundle::{Bundle, Runtime};
use clap::{Args, Parser, Subcommand};
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

const EXIT_CODES: &str = "\
Exit codes:
  0  every item (row or URL) succeeded
  2  the job finished, with item errors (their count on stderr)
  1  the job failed as a whole (one line on stderr saying why)";

#[derive(Parser)]
#[command(
    name = "fanout",
    version,
    about = "Serve the fanout bundle locally, and run scrape and transform jobs through its coordinator.",
    after_help = EXIT_CODES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the bundle locally until Ctrl-C, printing its routes.
    #[command(after_help = "Examples:\n  fanout up\n  fanout up --listen 127.0.0.1:8080 --allow-private-hosts")]
    Up(UpArgs),
    /// Scrape every URL of a file through the coordinator.
    #[command(after_help = "Examples:\n  fanout scrape urls.txt --select title=h1 --links -o pages.json\n  \
        fanout scrape urls.txt --format ndjson --endpoint https://fanout.example.org\n\n\
        Each URL ends up in the output: as a page, or as an error saying why.")]
    Scrape(scrape::ScrapeArgs),
    /// Transform a CSV file with a spec, through the coordinator or (--local) in this process.
    #[command(after_help = "Examples:\n  fanout transform sales.csv --preset vat -o sales.json\n  \
        fanout transform sales.csv --spec summary.json --concurrency 4\n  \
        fanout transform sales.csv --spec-json '{\"filter\": {\"column\": \"amount\", \"op\": \">\", \"value\": 0}}' --local\n\n\
        Every row ends up in the output: as a record, in the filtered count, or as an error record.")]
    Transform(transform::TransformArgs),
    /// List the preset specs, with what each does (as JSON), e.g. fanout presets.
    Presets,
    /// Print a shell's completion script, e.g. fanout completions bash > ~/.local/share/bash-completion/completions/fanout.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Check a spec (a preset name, a JSON file or JSON text), and against a CSV file's header when given.
    #[command(after_help = "Examples:\n  fanout validate summary.json\n  fanout validate summary.json sales.csv\n  \
        fanout validate '{\"columns\": [\"id\"]}' sales.csv")]
    Validate(ValidateArgs),
    /// Follow a durable job: its status, resume ticking it, cancel it, fetch its results.
    #[command(
        subcommand,
        after_help = "Examples:\n  fanout job status 3f2a9c...\n  fanout job resume 3f2a9c...\n  \
        fanout job fetch 3f2a9c... --bucket fanout -o sales.json"
    )]
    Job(durable::JobCommand),
}

#[derive(Args)]
struct UpArgs {
    /// Address of the coordinator (with Spin, of every route), e.g. --listen 127.0.0.1:8080.
    #[arg(long, env = "FANOUT_LOCAL_ADDR", default_value = job::DEFAULT_LOCAL_ADDR)]
    listen: SocketAddr,
    /// Let the components read pages, sources and URL lists on loopback and private
    /// hosts (FANOUT_ALLOW_PRIVATE_HOSTS=true), e.g. to scrape a site on localhost.
    #[arg(long)]
    allow_private_hosts: bool,
    /// Configuration for every component, e.g. --env FANOUT_WORKER_CONCURRENCY=4 (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,
    #[command(flatten)]
    runtime: RuntimeArg,
}

#[derive(Args)]
struct ValidateArgs {
    /// The spec: a preset's name, a JSON file, or JSON text, e.g. summary.json.
    spec: String,
    /// A CSV file whose header the spec must fit (read up to its first record), e.g. sales.csv.
    csv_file: Option<PathBuf>,
}

/// The runtime of a bundle the CLI serves.
#[derive(Args)]
struct RuntimeArg {
    /// Runtime for a bundle the CLI serves: auto (spin up where Spin is installed,
    /// else wasmtime serve), spin or wasmtime, e.g. --runtime wasmtime.
    #[arg(long, value_enum, default_value_t = Runtime::Auto)]
    runtime: Runtime,
}

/// Where a job goes and where its output goes: shared by `scrape` and `transform`.
#[derive(Args)]
struct JobArgs {
    /// The coordinator, e.g. --endpoint http://127.0.0.1:3000 (or 127.0.0.1:3000). Default: the local bundle at
    /// FANOUT_LOCAL_ADDR (127.0.0.1:3000), served for the job (and stopped after) when nothing answers there.
    #[arg(long, env = "FANOUT_ENDPOINT", value_parser = parse_endpoint)]
    endpoint: Option<Url>,
    /// The token of a coordinator that requires one (its FANOUT_TOKEN), sent as
    /// `Authorization: Bearer`, e.g. --token "$FANOUT_TOKEN".
    #[arg(long, env = "FANOUT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Write the output to this file instead of stdout, e.g. -o out.json.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// json: one document, as the HTTP API answers; ndjson: one record (or result) a line; csv: the
    /// records' columns (transform). Default: from -o's extension (.json, .ndjson, .jsonl, .csv), else json.
    /// E.g. --format csv.
    #[arg(long, value_enum)]
    format: Option<answer::Format>,
    /// With --format ndjson or csv: write the error records and the summary (NDJSON) to this file
    /// instead of stderr, e.g. --errors errors.ndjson.
    #[arg(long, value_name = "FILE")]
    errors: Option<PathBuf>,
    /// Worker calls at once, e.g. --concurrency 4 (default and limit: the coordinator's).
    #[arg(long)]
    concurrency: Option<u64>,
    /// Stop the job once more items than this have failed, e.g. --tolerated-failures 100.
    #[arg(long, value_name = "N")]
    tolerated_failures: Option<u64>,
    /// Stop the job once more than this share of items have failed, e.g. --tolerated-failure-percent 5.
    #[arg(long, value_name = "PERCENT")]
    tolerated_failure_percent: Option<f64>,
    /// Time for the whole job, in milliseconds, e.g. --deadline-ms 600000 (default: the coordinator's, 1 hour).
    #[arg(long, value_name = "MS")]
    deadline_ms: Option<u64>,
    #[command(flatten)]
    runtime: RuntimeArg,
}

impl JobArgs {
    /// The output's format: `--format`, else `-o`'s extension, else JSON.
    fn format(&self) -> Result<answer::Format> {
        Ok(self
            .format
            .or_else(|| self.output.as_deref().and_then(answer::Format::of_path))
            .unwrap_or(answer::Format::Json))
    }

    /// Where error records and the summary go apart from the output: `--errors FILE`, else stderr.
    fn side_output(&self) -> Result<Box<dyn Write>> {
        match &self.errors {
            Some(path) => {
                let file = File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
                Ok(Box::new(std::io::BufWriter::new(file)))
            }
            None => Ok(Box::new(std::io::stderr())),
        }
    }

    /// The job options, as the coordinator's JSON job fields.
    fn options(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut options = serde_json::Map::new();
        let mut put = |k: &str, v: Option<serde_json::Value>| {
            if let Some(v) = v {
                options.insert(k.to_owned(), v);
            }
        };
        put("concurrency", self.concurrency.map(Into::into));
        put("tolerated_failures", self.tolerated_failures.map(Into::into));
        put("tolerated_failure_percent", self.tolerated_failure_percent.map(Into::into));
        put("deadline_ms", self.deadline_ms.map(Into::into));
        options
    }

    /// The coordinator the job goes to; a bundle served for it may read sources
    /// (`private_sources`) or pages (`private_pages`) on loopback and private hosts.
    fn coordinator(&self, private_sources: bool, private_pages: bool) -> Result<job::Coordinator> {
        self.coordinator_with(private_sources, private_pages, (Vec::new(), Vec::new()))
    }

    /// [`JobArgs::coordinator`], a bundle served for the job configured with `env` too: every
    /// component's, and the coordinator's alone.
    fn coordinator_with(
        &self,
        private_sources: bool,
        private_pages: bool,
        (env, coordinator_env): (bundle::Env, bundle::Env),
    ) -> Result<job::Coordinator> {
        job::Coordinator::find(job::Target {
            endpoint: self.endpoint.as_ref(),
            local: local_addr()?,
            token: self.token.clone(),
            runtime: self.runtime.runtime,
            private_sources,
            private_pages,
            env,
            coordinator_env,
        })
    }
}

/// The local bundle's address: `FANOUT_LOCAL_ADDR`, or 127.0.0.1:3000.
fn local_addr() -> Result<SocketAddr> {
    let addr = std::env::var("FANOUT_LOCAL_ADDR").unwrap_or_else(|_| job::DEFAULT_LOCAL_ADDR.to_owned());
    addr.parse().with_context(|| format!("FANOUT_LOCAL_ADDR={addr:?} is not an address like 127.0.0.1:3000"))
}

/// `fanout presets`: each preset's name and spec.
fn presets() -> Result<i32> {
    for name in fanout::transform::spec::PRESETS {
        let spec = fanout::transform::spec::preset(name).expect("the presets are named");
        println!("{name}\t{}", serde_json::to_string(&spec)?);
    }
    Ok(0)
}

/// `fanout validate SPEC [CSV_FILE]`: the spec parses and compiles, and fits the file's header.
fn validate(args: ValidateArgs) -> Result<i32> {
    use fanout::transform::{engine, spec};
    let text = if spec::preset(&args.spec).is_some() {
        serde_json::json!({ "preset": args.spec }).to_string()
    } else if args.spec.trim_start().starts_with('{') {
        args.spec.clone()
    } else {
        std::fs::read_to_string(&args.spec).with_context(|| format!("cannot read the spec file {}", args.spec))?
    };
    let parsed = spec::parse(text.as_bytes()).map_err(|m| anyhow::anyhow!("the spec is not valid: {m}"))?;
    let Some(path) = args.csv_file else {
        eprintln!(
            "fanout: the spec is valid (its columns are checked against a file's header: fanout validate SPEC FILE)"
        );
        return Ok(0);
    };
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(open(&path)?, 1024 * 1024), &mut head)?;
    let header = engine::read_header(&parsed.dialect, &head).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    engine::prepare(&parsed, &header.names)
        .map_err(|m| anyhow::anyhow!("the spec does not fit {}: {m}", path.display()))?;
    eprintln!(
        "fanout: the spec is valid for {} ({} columns: {})",
        path.display(),
        header.names.len(),
        header.names.join(", ")
    );
    Ok(0)
}

/// A coordinator's URL; `host:port` alone means `http://host:port`.
fn parse_endpoint(text: &str) -> Result<Url, String> {
    let text = text.trim();
    let full = if text.contains("://") { text.to_owned() } else { format!("http://{text}") };
    let url = Url::parse(&full).map_err(|e| format!("{text:?} is not a URL like http://127.0.0.1:3000: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        _ => Err(format!("{text:?} is not an http(s) URL like http://127.0.0.1:3000")),
    }
}

/// Whether `e` is the reader of our output going away (`| head`): not a failure of the job's.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn parse_env(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

/// 128 bits from the operating system's random source, in hex: for URLs and
/// tokens that other local processes must not guess.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Opens an input file, saying which one could not be.
fn open(path: &Path) -> Result<File> {
    File::open(path).with_context(|| format!("cannot open {}", path.display()))
}

fn up(args: UpArgs) -> Result<i32> {
    let options = bundle::Options {
        listen: args.listen,
        runtime: args.runtime.runtime,
        private_sources: args.allow_private_hosts,
        private_pages: args.allow_private_hosts,
        token: None,
        env: args.env,
        coordinator_env: Vec::new(),
        echo_logs: true,
    };
    let bundle = Bundle::start(&options)?;
    println!(
        "fanout: serving the bundle with {} from {} (Ctrl-C stops it)",
        bundle.runtime(),
        bundle.components().display()
    );
    for route in bundle.routes() {
        println!("  {:<12} {:<24} {}", route.component, route.url, route.routes);
    }
    std::io::stdout().flush()?;
    loop {
        std::thread::sleep(Duration::from_millis(500));
        bundle.check_running()?;
    }
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // Help and version are answers; a mistake in the arguments fails the run as a whole (1),
        // not as "item errors" (2, which is clap's own code).
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    // Ctrl-C is how `fanout up` ends; it interrupts a job.
    let on_signal = signals::install(if matches!(cli.command, Command::Up(_)) { 0 } else { 130 });
    let result = on_signal.and_then(|()| match cli.command {
        Command::Up(args) => up(args),
        Command::Scrape(args) => scrape::run(args),
        Command::Transform(args) => transform::run(args),
        Command::Presets => presets(),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "fanout",
                &mut std::io::stdout(),
            );
            Ok(0)
        }
        Command::Validate(args) => validate(args),
        Command::Job(command) => durable::command(command),
    });
    match result {
        Ok(code) => std::process::exit(code),
        // As other tools do when `| head` has read enough: stop quietly.
        Err(e) if is_broken_pipe(&e) => std::process::exit(0),
        Err(e) => {
            // One line, whatever the causes hold.
            let message = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("fanout: {message}");
            std::process::exit(1);
        }
    }
}
