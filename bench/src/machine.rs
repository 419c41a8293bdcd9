//! Where and when a run happened, for the report's header: numbers mean
//! little without the machine, the code and the runtime that made them.

use fanout::transform::dates::Date;
use fanout_testkit::component::wasmtime;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    /// `YYYY-MM-DD`, UTC.
    pub date: String,
    /// The short commit, marked when the working tree has changes.
    pub commit: String,
    pub wasmtime: String,
}

impl Machine {
    pub fn describe(root: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
            .map_or_else(|| "unknown CPU model".to_owned(), |(_, model)| model.trim().to_owned());
        let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(root).args(args));
        let commit = match git(&["rev-parse", "--short", "HEAD"]) {
            Some(hash) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
                Some(changes) if !changes.is_empty() => format!("{hash} (with uncommitted changes)"),
                _ => hash,
            },
            None => "unknown (not a git checkout)".to_owned(),
        };
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            date: today(),
            commit,
            wasmtime: output(Command::new(wasmtime()).arg("--version")).unwrap_or_else(|| "unknown".to_owned()),
        }
    }
}

/// The command's trimmed standard output, if it ran and succeeded.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok().filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Today's date in UTC, by the core's own calendar (days since 1970).
fn today() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (year, month, day) = Date((secs / 86_400) as i32).ymd();
    format!("{year:04}-{month:02}-{day:02}")
}
