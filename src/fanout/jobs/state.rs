//! A job's receipts folded together (`state.json`), and what is read from
//! them: the status document, the totals and the manifest.
//!
//! The state is a cache of the receipts: an entry's outcome, objects and
//! accounting come from the unit's receipt, which is written once (by its
//! worker, or by a tick that concluded the unit without one), so two ticks
//! that conclude the same unit agree on them. Its counts of calls, timeouts
//! and rejected answers come from the unit's lease as the concluding tick read
//! it, and may differ between two such ticks; merging two states is their
//! union, keeping the entry written first. Ticks update it by
//! compare-and-swap, merging again when another tick wrote first.

use super::plan::{Plan, Work};
use super::receipt::{Outcome, Pages, Tally};
use super::JobId;
use crate::fanout::driver::FailureKind;
use crate::transform::output::Stats;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// `state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Every concluded unit, by number.
    pub units: BTreeMap<u64, Concluded>,
    /// The slowest answered worker call of the last tick that made calls, in
    /// milliseconds: what a tick expects a call to take when it decides
    /// whether one still fits.
    #[serde(default)]
    pub slowest_call_ms: u64,
}

/// A concluded unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concluded {
    /// Done, or why not.
    pub outcome: Outcome,
    /// Its records (or results, or partial aggregate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<Stored>,
    /// Its error records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Stored>,
    /// The accounting.
    pub tally: Tally,
    /// Worker calls made for it.
    #[serde(default)]
    pub calls: u32,
    /// Of those, calls that ran out of time.
    #[serde(default)]
    pub timeouts: u32,
    /// Of those, calls whose receipt was refused.
    #[serde(default)]
    pub rejected: u32,
}

/// An object of the result, as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    /// Its key in the bucket.
    pub key: String,
    /// Its size.
    pub bytes: u64,
    /// Records (or results, or error records) in it, one a line.
    pub records: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
}

impl State {
    /// Adds the units `other` concluded that this state does not have yet.
    pub fn merge(&mut self, other: &State) {
        for (unit, concluded) in &other.units {
            self.units.entry(*unit).or_insert_with(|| concluded.clone());
        }
    }

    /// Whether every unit of `plan` is concluded.
    pub fn complete(&self, plan: &Plan) -> bool {
        self.units.len() as u64 >= plan.units
    }
}

/// How a job ended, or is ending.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Units are still being run.
    Running,
    /// Every unit was run (some items may have failed: see the error records).
    Succeeded,
    /// It stopped early: a failure threshold, its deadline, or a row under `on_error: fail`.
    Failed,
    /// It was cancelled.
    Cancelled,
}

/// `stop.json`: why a job stopped before running every unit. Written once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stop {
    /// Failed or cancelled.
    pub status: JobStatus,
    /// Why.
    pub reason: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// What a job's concluded units add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Units concluded.
    pub units_done: u64,
    /// Of those, units with no worker's answer.
    pub units_failed: u64,
    /// Units not attempted (a subset of the failed ones).
    pub units_not_attempted: u64,
    /// Rows of transform units (their sum).
    pub rows: Stats,
    /// Results of scrape units (their sum).
    pub pages: Pages,
    /// Error records written, in all.
    pub error_records: u64,
    /// URLs of scrape units not attempted.
    pub urls_not_attempted: u64,
    /// Input bytes of concluded units.
    pub bytes_done: u64,
    /// Input bytes of failed units.
    pub bytes_failed: u64,
    /// Worker calls made.
    pub calls: u64,
    /// Calls after a unit's first.
    pub retries: u64,
    /// Calls that ran out of time.
    pub timeouts: u64,
    /// Receipts refused.
    pub rejected: u64,
    /// Whether the units are URL batches (else byte ranges of a CSV file).
    pub scrape: bool,
}

impl Totals {
    /// The totals of `state`'s units of `plan`.
    pub fn of(plan: &Plan, state: &State) -> Totals {
        let mut t = Totals { scrape: matches!(plan.work, Work::Scrape(_)), ..Totals::default() };
        for (&unit, c) in &state.units {
            t.add(plan, unit, c);
        }
        t
    }

    /// Adds concluded unit `unit` of `plan`.
    pub fn add(&mut self, plan: &Plan, unit: u64, c: &Concluded) {
        self.units_done += 1;
        let bytes = plan.unit_bytes(unit);
        self.bytes_done += bytes;
        self.calls += u64::from(c.calls);
        self.retries += u64::from(c.calls.saturating_sub(1));
        self.timeouts += u64::from(c.timeouts);
        self.rejected += u64::from(c.rejected);
        self.error_records += c.errors.as_ref().map_or(0, |e| e.records);
        if let Outcome::Failed { kind, .. } = &c.outcome {
            self.units_failed += 1;
            self.bytes_failed += bytes;
            if *kind == FailureKind::NotAttempted {
                self.units_not_attempted += 1;
                if let Tally::Pages(p) = &c.tally {
                    self.urls_not_attempted += p.results;
                }
            }
        }
        match &c.tally {
            Tally::Rows(s) => self.rows.add(s),
            Tally::Pages(p) => {
                self.pages.results += p.results;
                self.pages.pages += p.pages;
                self.pages.errors += p.errors;
            }
        }
    }

    /// Items done and items failed, as the failure threshold counts them: URLs,
    /// or rows (a failed transform unit, whose rows are not known, as one);
    /// items not attempted count as neither.
    pub fn items(&self) -> (u64, u64) {
        if self.scrape {
            let done = self.pages.results - self.urls_not_attempted;
            (done, self.pages.errors - self.urls_not_attempted)
        } else {
            let failed_ranges = self.units_failed - self.units_not_attempted;
            (self.rows.rows_in + failed_ranges, self.rows.rows_errored + failed_ranges)
        }
    }
}

/// What `GET /jobs/{id}` answers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Status {
    /// The job's id.
    pub id: JobId,
    /// `transform` or `scrape`.
    pub kind: &'static str,
    /// Running, succeeded, failed or cancelled.
    pub status: JobStatus,
    /// Why it failed or was cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether its manifest is written: nothing about it changes any more.
    pub finished: bool,
    /// Units concluded, failed (no worker's answer) and in all.
    pub units: Value,
    /// Rows (transform) or URLs (scrape), as far as concluded.
    pub items: Value,
    /// Input bytes concluded, and in all (transform).
    pub bytes: Value,
    /// Worker calls.
    pub calls: Value,
    /// When it was made, and how long ago (until its end, once finished).
    pub created_ms: u64,
    /// Milliseconds since it was made, or until it finished.
    pub elapsed_ms: u64,
    /// Where its manifest is (or will be), in the bucket.
    pub manifest_key: String,
}

impl Status {
    /// The status of the job `plan` describes, from its state, its stop marker
    /// (if any) and its manifest (once written).
    pub fn of(plan: &Plan, state: &State, stop: Option<&Stop>, manifest: Option<&Manifest>, now_ms: u64) -> Status {
        let t = Totals::of(plan, state);
        let (status, reason) = match (manifest, stop) {
            (Some(m), _) => (m.status, m.reason.clone()),
            (None, Some(s)) => (s.status, Some(s.reason.clone())),
            (None, None) => (JobStatus::Running, None),
        };
        let end = manifest.map_or(now_ms, |m| m.finished_ms);
        let (kind, items, total_bytes) = match &plan.work {
            Work::Transform(w) => (
                "transform",
                json!({
                    "rows_in": t.rows.rows_in, "rows_out": t.rows.rows_out, "rows_filtered": t.rows.rows_filtered,
                    "rows_errored": t.rows.rows_errored, "error_records": t.error_records,
                }),
                w.size,
            ),
            Work::Scrape(w) => (
                "scrape",
                json!({
                    "urls": w.urls, "results": t.pages.results, "pages": t.pages.pages, "errors": t.pages.errors,
                    "not_attempted": t.urls_not_attempted,
                }),
                0,
            ),
        };
        Status {
            id: plan.id.clone(),
            kind,
            status,
            reason,
            finished: manifest.is_some(),
            units: json!({"done": t.units_done, "failed": t.units_failed, "total": plan.units}),
            items,
            bytes: json!({"done": t.bytes_done, "total": total_bytes}),
            calls: json!({
                "invocations": t.calls, "retries": t.retries, "timeouts": t.timeouts, "rejected_answers": t.rejected,
            }),
            created_ms: plan.created_ms,
            elapsed_ms: end.saturating_sub(plan.created_ms),
            manifest_key: super::layout::Layout::new(&plan.id).manifest(),
        }
    }
}

/// `manifest.json`: written once, when every unit is concluded, and last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The job's id.
    pub id: JobId,
    /// Succeeded, failed or cancelled.
    pub status: JobStatus,
    /// Why it failed or was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was made and when it finished, in milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the manifest was made.
    pub finished_ms: u64,
    /// The parts, in unit order: read in this order, they hold the records (or
    /// results) in input order.
    pub parts: Vec<Stored>,
    /// The error records' objects, in unit order.
    pub errors: Vec<Stored>,
    /// An aggregate job's merged groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Stored>,
    /// The totals, as the coordinator's summary gives them.
    pub summary: Value,
}

impl Manifest {
    /// The manifest of a job whose every unit is concluded.
    pub fn of(plan: &Plan, state: &State, stop: Option<&Stop>, result: Option<Stored>, now_ms: u64) -> Manifest {
        let t = Totals::of(plan, state);
        let (status, reason) = match stop {
            Some(s) => (s.status, Some(s.reason.clone())),
            None => (JobStatus::Succeeded, None),
        };
        let elapsed_ms = now_ms.saturating_sub(plan.created_ms).max(1);
        let per_s = |n: u64| (n as f64 * 1000.0 / elapsed_ms as f64).round() as u64;
        let mut summary = match &plan.work {
            Work::Transform(w) => json!({
                "status": status,
                "rows_in": t.rows.rows_in, "rows_out": t.rows.rows_out, "rows_filtered": t.rows.rows_filtered,
                "rows_errored": t.rows.rows_errored, "errors_omitted": t.rows.errors_omitted, "rows_not_attempted": 0,
                "bytes": w.size, "bytes_not_processed": t.bytes_failed,
                "chunks": plan.units, "chunks_failed": t.units_failed,
                "invocations": t.calls, "retries": t.retries, "timeouts": t.timeouts, "rejected_answers": t.rejected,
                "elapsed_ms": elapsed_ms, "rows_per_s": per_s(t.rows.rows_in),
                "mb_per_s": ((t.bytes_done - t.bytes_failed) as f64 / 10.0 / elapsed_ms as f64).round() / 100.0,
            }),
            Work::Scrape(w) => json!({
                "status": status,
                "urls": w.urls, "results": t.pages.results, "pages": t.pages.pages, "errors": t.pages.errors,
                "not_attempted": t.urls_not_attempted, "batches": plan.units, "batches_failed": t.units_failed,
                "invocations": t.calls, "retries": t.retries, "timeouts": t.timeouts, "rejected_answers": t.rejected,
                "elapsed_ms": elapsed_ms, "pages_per_s": per_s(t.pages.pages),
            }),
        };
        if let Some(reason) = &reason {
            summary["reason"] = json!(reason);
        }
        Manifest {
            id: plan.id.clone(),
            status,
            reason,
            created_ms: plan.created_ms,
            finished_ms: now_ms,
            parts: state.units.values().filter_map(|c| c.part.clone()).collect(),
            errors: state.units.values().filter_map(|c| c.errors.clone()).collect(),
            result,
            summary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::jobs::plan::{Limits, ListFormat, ScrapeWork, Source, TransformWork};
    use crate::scrape::ScrapeRequest;
    use crate::transform::spec::Spec;

    pub(crate) fn plan(units: u64) -> Plan {
        Plan {
            id: JobId::new(1, 2),
            created_ms: 1_000,
            units,
            limits: Limits {
                concurrency: 2,
                attempts: 3,
                deadline_ms: 60_000,
                tolerated_failures: None,
                tolerated_failure_percent: None,
                audit_percent: 0.0,
            },
            work: Work::Transform(TransformWork {
                source: Source::Url("https://x/".into()),
                size: units * 10,
                etag: None,
                last_modified: None,
                chunk_bytes: 10,
                spec: Spec::default(),
                columns: vec!["a".into()],
            }),
        }
    }

    fn stored(key: &str, records: u64) -> Stored {
        Stored { key: key.into(), bytes: records * 3, records, sha256: "0".repeat(64) }
    }

    fn done(key: &str, rows: u64, errored: u64) -> Concluded {
        Concluded {
            outcome: Outcome::Done,
            part: Some(stored(key, rows - errored)),
            errors: (errored > 0).then(|| stored(&format!("{key}.e"), errored)),
            tally: Tally::Rows(Stats {
                rows_in: rows,
                rows_out: rows - errored,
                rows_errored: errored,
                ..Stats::default()
            }),
            calls: 2,
            timeouts: 1,
            rejected: 0,
        }
    }

    #[test]
    fn merging_is_a_union_whoever_wrote_first() {
        let mut a = State { units: BTreeMap::from([(0, done("p0", 3, 0))]), slowest_call_ms: 5 };
        let b = State { units: BTreeMap::from([(0, done("other", 9, 9)), (1, done("p1", 2, 1))]), slowest_call_ms: 9 };
        a.merge(&b);
        assert_eq!(a.units[&0].part.as_ref().unwrap().key, "p0", "an entry, once in, stays");
        assert_eq!((a.units.len(), a.slowest_call_ms), (2, 5), "the figure is each tick's own");
        let again = a.clone();
        a.merge(&again);
        assert_eq!(a, again, "merging is idempotent");
        assert!(a.complete(&plan(2)) && !a.complete(&plan(3)));
    }

    #[test]
    fn totals_manifest_and_status_add_up() {
        let mut state = State::default();
        state.units.insert(0, done("p0", 4, 1));
        state.units.insert(
            1,
            Concluded {
                outcome: Outcome::Failed { kind: FailureKind::Worker, reason: "503".into() },
                part: None,
                errors: Some(stored("e1", 1)),
                tally: Tally::Rows(Stats::default()),
                calls: 3,
                timeouts: 0,
                rejected: 1,
            },
        );
        let plan = plan(2);
        let t = Totals::of(&plan, &state);
        assert_eq!((t.units_done, t.units_failed, t.calls, t.retries, t.timeouts, t.rejected), (2, 1, 5, 3, 1, 1));
        assert_eq!((t.rows.rows_in, t.error_records, t.bytes_failed), (4, 2, 10));
        assert_eq!(t.items(), (5, 2), "a failed range counts as one item");
        let m = Manifest::of(&plan, &state, None, None, 3_000);
        assert_eq!(m.status, JobStatus::Succeeded);
        assert_eq!(m.parts.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["p0"]);
        assert_eq!(m.errors.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["p0.e", "e1"]);
        assert_eq!((m.summary["rows_in"].as_u64(), m.summary["chunks_failed"].as_u64()), (Some(4), Some(1)));
        assert_eq!(m.summary["elapsed_ms"], 2_000);
        let s = Status::of(&plan, &state, None, Some(&m), 9_000);
        assert_eq!((s.status, s.finished, s.elapsed_ms), (JobStatus::Succeeded, true, 2_000));
        let stop = Stop { status: JobStatus::Cancelled, reason: "asked".into(), at_ms: 2_500 };
        let s = Status::of(&plan, &state, Some(&stop), None, 9_000);
        assert_eq!((s.status, s.finished, s.reason.as_deref()), (JobStatus::Cancelled, false, Some("asked")));
        let m = Manifest::of(&plan, &state, Some(&stop), None, 3_000);
        assert_eq!(
            (m.status, m.summary["status"].as_str(), m.summary["reason"].as_str()),
            (JobStatus::Cancelled, Some("cancelled"), Some("asked"))
        );
        assert!(Manifest::of(&plan, &state, None, None, 3_000).summary.get("reason").is_none());
        assert_eq!(m.summary["rows_per_s"], 2, "4 rows in 2 s");
    }

    fn failed(kind: FailureKind, tally: Tally) -> Concluded {
        Concluded {
            outcome: Outcome::Failed { kind, reason: "why".into() },
            part: None,
            errors: None,
            tally,
            calls: 0,
            timeouts: 0,
            rejected: 0,
        }
    }

    /// What the failure threshold counts: rows or URLs, those not attempted as neither.
    #[test]
    fn items_of_transform_and_scrape_jobs() {
        let mut state = State::default();
        state.units.insert(0, done("p0", 4, 1));
        state.units.insert(1, failed(FailureKind::Worker, Tally::Rows(Stats::default())));
        state.units.insert(2, failed(FailureKind::NotAttempted, Tally::Rows(Stats::default())));
        let t = Totals::of(&plan(3), &state);
        assert_eq!((t.units_failed, t.units_not_attempted), (2, 1));
        assert_eq!(t.items(), (5, 2), "the worker's failed range is one item");

        let mut scrape = plan(3);
        scrape.work = Work::Scrape(ScrapeWork {
            list: Source::Object("k".into()),
            format: ListFormat::Lines,
            offsets: vec![0, 10, 20, 30],
            firsts: vec![0, 3, 5],
            urls: 7,
            request: ScrapeRequest::default(),
        });
        let mut state = State::default();
        state.units.insert(0, done("p0", 3, 0));
        state.units.get_mut(&0).unwrap().tally = Tally::Pages(Pages { results: 3, pages: 2, errors: 1 });
        state.units.insert(1, failed(FailureKind::Worker, Tally::Pages(Pages { results: 2, pages: 0, errors: 2 })));
        state
            .units
            .insert(2, failed(FailureKind::NotAttempted, Tally::Pages(Pages { results: 2, pages: 0, errors: 2 })));
        let t = Totals::of(&scrape, &state);
        let p = &t.pages;
        assert_eq!((p.results, p.pages, p.errors, t.urls_not_attempted, t.units_not_attempted), (7, 2, 5, 2, 1));
        assert_eq!(t.items(), (5, 3), "URLs, less the two not attempted");
    }
}
