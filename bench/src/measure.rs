//! What every run records about the runtime processes it used.

use fanout_testkit::client::Counted;
use fanout_testkit::component::Component;
use serde_json::Value;

pub const MB: f64 = 1e6;
pub const MIB: f64 = 1024.0 * 1024.0;

/// One process of a run: its peak resident set and the CPU time it used.
#[derive(Clone)]
pub struct Proc {
    pub name: &'static str,
    pub peak_rss: u64,
    pub cpu_secs: f64,
}

/// The peak resident set of all the processes of a run together, in bytes.
pub fn total_rss(procs: &[Proc]) -> u64 {
    procs.iter().map(|p| p.peak_rss).sum()
}

/// `coordinator 45 MiB 1.15 s, worker 52 MiB 4.41 s`: each process's peak memory and CPU time.
pub fn describe(procs: &[Proc]) -> String {
    let each: Vec<String> =
        procs.iter().map(|p| format!("{} {:.0} MiB {:.2} s", p.name, p.peak_rss as f64 / MIB, p.cpu_secs)).collect();
    each.join(", ")
}

/// A runtime process being measured: its peak memory and CPU time from now on.
pub struct Measured<'a> {
    name: &'static str,
    c: &'a Component,
    cpu: f64,
}

impl<'a> Measured<'a> {
    /// Starts measuring: the peak resident set starts over, so that start-up does not count.
    pub fn start(name: &'static str, c: &'a Component) -> Measured<'a> {
        c.reset_peak_rss();
        Measured { name, c, cpu: c.cpu_secs() }
    }

    pub fn end(&self) -> Proc {
        Proc { name: self.name, peak_rss: self.c.peak_rss(), cpu_secs: self.c.cpu_secs() - self.cpu }
    }
}

/// The `summary` object that ends a coordinator's answer.
pub fn summary(answer: &Counted) -> Value {
    let tail = String::from_utf8_lossy(&answer.tail);
    let at = tail.rfind("\"summary\":").expect("the answer ends with its summary");
    serde_json::Deserializer::from_str(&tail[at + 10..])
        .into_iter::<Value>()
        .next()
        .expect("the summary follows its key")
        .expect("the summary is JSON")
}
