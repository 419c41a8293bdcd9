//! Progress for people, fed by the coordinator's progress lines: a bar when
//! stderr is a terminal, otherwise a line every few seconds (logs and CI).

use fanout::fanout::driver::Report;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a line is printed when stderr is not a terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

/// One `{"progress": {...}}` line of a coordinator's NDJSON answer (transform
/// and scrape jobs each fill their own fields).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Update {
    /// Units done (chunks), or URLs done.
    pub done: u64,
    /// Units (or URLs) in all, once known.
    pub total: Option<u64>,
    /// Items (rows or URLs) that failed.
    pub failed: u64,
    /// Rows done (transform).
    #[serde(default)]
    pub rows: Option<u64>,
    /// Pages fetched (scrape).
    #[serde(default)]
    pub pages: Option<u64>,
    /// Input bytes done and in all (transform).
    #[serde(default)]
    pub bytes_done: Option<u64>,
    #[serde(default)]
    pub bytes_total: Option<u64>,
    pub elapsed_ms: u64,
    #[serde(default)]
    pub rows_per_s: Option<u64>,
    #[serde(default)]
    pub pages_per_s: Option<u64>,
}

impl Update {
    /// The update a local job's report gives.
    pub fn of_report(r: &Report) -> Update {
        let c = &r.counters;
        Update {
            done: c.units_done,
            total: r.units_total,
            failed: c.items_failed,
            rows: Some(c.items_done),
            bytes_done: Some(c.bytes_done),
            bytes_total: r.bytes_total,
            elapsed_ms: r.elapsed_ms,
            rows_per_s: Some(c.items_done * 1000 / r.elapsed_ms.max(1)),
            ..Update::default()
        }
    }

    /// Where the job is: bytes of the input for a transform, URLs for a scrape.
    fn position(&self, total_hint: Option<u64>) -> (u64, Option<u64>) {
        match self.bytes_done {
            Some(done) => (done, self.bytes_total.or(total_hint)),
            None => (self.done, self.total.or(total_hint)),
        }
    }

    fn items(&self) -> (&'static str, u64, u64) {
        match (self.pages, self.rows) {
            (Some(pages), _) => ("pages", pages, self.pages_per_s.unwrap_or(0)),
            (None, Some(rows)) => ("rows", rows, self.rows_per_s.unwrap_or(0)),
            // An upload: bytes are all there is to count.
            (None, None) => {
                let bytes = self.bytes_done.unwrap_or(0);
                ("bytes", bytes, bytes * 1000 / self.elapsed_ms.max(1))
            }
        }
    }

    fn describe(&self) -> String {
        let (noun, items, rate) = self.items();
        format!("{items} {noun} · {rate}/s · {} failed", self.failed)
    }
}

/// What the bar counts.
#[derive(Clone, Copy, Debug)]
pub enum Unit {
    /// Bytes of the input file (transform).
    Bytes,
    /// URLs of the list (scrape).
    Urls,
}

/// The progress display of one job.
pub struct Progress {
    bar: Option<ProgressBar>,
    /// The job's size as the CLI knows it (file bytes, URLs in the list).
    total_hint: Option<u64>,
    last_line: Option<Instant>,
}

impl Progress {
    /// A display for a job whose size is `total_hint` (the file's bytes, or
    /// the list's URLs: `unit` says which), when known. A bar on a terminal's
    /// stderr, unless the output goes to that terminal (`output_on_terminal`):
    /// redrawn, it would draw over the output's last line, so lines it is.
    pub fn new(total_hint: Option<u64>, unit: Unit, output_on_terminal: bool) -> Progress {
        let bar = (std::io::stderr().is_terminal() && !output_on_terminal).then(|| {
            let done = match unit {
                Unit::Bytes => "{bytes}/{total_bytes}",
                Unit::Urls => "{pos}/{len} URLs",
            };
            // Within 80 columns: a bar of 20, and the message cut to what is left.
            let template = format!("{{spinner}} {{percent:>3}}% [{{bar:20}}] {done} · {{wide_msg}}");
            let bar = ProgressBar::with_draw_target(total_hint, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(&template).expect("the template is valid").progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Progress { bar, total_hint, last_line: None }
    }

    /// Shows `update`.
    pub fn update(&mut self, update: &Update) {
        let (done, total) = update.position(self.total_hint);
        match &self.bar {
            Some(bar) => {
                if let Some(total) = total {
                    bar.set_length(total);
                }
                bar.set_position(done);
                bar.set_message(update.describe());
            }
            None => {
                if self.last_line.is_some_and(|at| at.elapsed() < LINE_EVERY) {
                    return;
                }
                self.last_line = Some(Instant::now());
                let share = match total {
                    Some(total) if total > 0 => format!("{:.0}% · ", done as f64 * 100.0 / total as f64),
                    _ => String::new(),
                };
                eprintln!("fanout: {share}{} · {:.1} s", update.describe(), update.elapsed_ms as f64 / 1000.0);
            }
        }
    }

    /// Takes the bar off the terminal, before the final message.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
