//! Deterministic simulation of whole fan-out jobs: the real splitter, driver
//! and merge, a simulated clock, and a simulated worker (the real transform
//! engine) whose calls fail, hang, answer late, out of order, truncated, or
//! with records dropped, duplicated or added, as a seeded RNG decides.
//!
//! After every job the invariants are checked: every input row appears exactly
//! once (as a record or inside an error record), records in input order, the
//! counts add up, the memory held stayed within its bound, the job ended
//! within its deadline, and no unit got more calls than the retry policy allows
//! (the summary's invocations, retries and timeouts counted from the calls the
//! worker saw). A failing seed is printed, so it replays exactly.

use super::driver::{Action, Call, CallError, Driver, Failure, Input, Limits, Merge, Tolerance, Unit};
use super::merge::{BatchMeta, ChunkMeta, PageMerge, RangeChain, TableMerge, TableMode};
use super::retry::RetryPolicy;
use super::split::Splitter;
use crate::api::ErrorKind;
use crate::framing::Format;
use crate::scrape::{ItemError, Outcome, PageResult, ScrapeResponse};
use crate::transform::engine::{prepare, read_header, record_start, run_compiled, Placement};
use crate::transform::range::{Cutter, Entry};
use crate::transform::spec::Spec;
use fanout_testkit::rng::Rng;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);

/// What the simulated worker does with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Answer,
    Transient,
    Permanent,
    Hang,
    Late,
    Truncate,
    DropRecord {
        fix: bool,
    },
    DuplicateRecord {
        fix: bool,
    },
    AddRecord {
        fix: bool,
    },
    BadErrorLine,
    /// The worker says the chunk fails the whole job (`on_error: fail`).
    Fatal,
}

fn fault(rng: &mut Rng, rate: u64) -> Fault {
    if rng.below(100) >= rate {
        return Fault::Answer;
    }
    match rng.below(10) {
        0 => Fault::Transient,
        1 => Fault::Permanent,
        2 => Fault::Hang,
        3 => Fault::Late,
        4 => Fault::Truncate,
        5 => Fault::DropRecord { fix: rng.below(2) == 0 },
        6 => Fault::DuplicateRecord { fix: rng.below(2) == 0 },
        7 => Fault::AddRecord { fix: rng.below(2) == 0 },
        8 => Fault::BadErrorLine,
        _ if rng.below(4) == 0 => Fault::Fatal,
        _ => Fault::Answer,
    }
}

/// A CSV file of `rows` rows, each with its id; some rows are bad (a missing
/// field), some hold a quoted line break. Returns the file and each row's line.
fn file(rng: &mut Rng, rows: u64) -> (Vec<u8>, Vec<u64>) {
    let mut csv = b"id,note\n".to_vec();
    let mut lines = Vec::new();
    let mut line = 2;
    for id in 0..rows {
        lines.push(line);
        match rng.below(12) {
            0 => csv.extend_from_slice(format!("{id}\n").as_bytes()),
            1 => {
                csv.extend_from_slice(format!("{id},\"two\nlines\"\n").as_bytes());
                line += 1;
            }
            2 => csv.extend_from_slice(format!("{id},\"quoted, \"\"comma\"\"\"\r\n").as_bytes()),
            _ => csv.extend_from_slice(format!("{id},n{}\n", rng.below(1000)).as_bytes()),
        }
        line += 1;
    }
    (csv, lines)
}

/// The simulated worker's honest answer for a chunk body.
fn transform(spec: &Spec, body: &[u8], line_offset: u64) -> Vec<u8> {
    let header = read_header(&spec.dialect, body).unwrap();
    let program = prepare(spec, &header.names).unwrap();
    let placement = Placement { line_offset: header.lines + line_offset, ..Placement::default() };
    run_compiled(spec, &program, &body[header.data_start..], Format::Json, placement).unwrap()
}

fn line_offset(meta: &ChunkMeta) -> u64 {
    match meta {
        ChunkMeta::Lines { line_offset, .. } => *line_offset,
        ChunkMeta::Range { .. } => unreachable!("the simulation splits files itself"),
    }
}

/// Applies a fault that changes a 200 answer.
fn corrupt(answer: Vec<u8>, fault: Fault) -> Vec<u8> {
    if fault == Fault::Truncate {
        return answer[..answer.len() / 2].to_vec();
    }
    let mut v: Value = serde_json::from_slice(&answer).unwrap();
    let Some(records) = v["records"].as_array_mut() else {
        // A partial aggregate: claim one row more than the chunk holds.
        let n = v["stats"]["rows_in"].as_i64().unwrap() + 1;
        v["stats"]["rows_in"] = Value::from(n);
        let out = v["stats"]["rows_out"].as_i64().unwrap() + 1;
        v["stats"]["rows_out"] = Value::from(out);
        return serde_json::to_vec(&v).unwrap();
    };
    let delta: i64 = match fault {
        Fault::DropRecord { .. } if !records.is_empty() => {
            records.remove(0);
            -1
        }
        Fault::DuplicateRecord { .. } if !records.is_empty() => {
            records.insert(0, records[0].clone());
            1
        }
        Fault::AddRecord { .. } => {
            records.push(serde_json::json!({"id": "injected", "note": "injected"}));
            1
        }
        Fault::BadErrorLine => {
            match v["errors"].as_array_mut().unwrap().first_mut() {
                Some(e) => e["line"] = Value::from(999_999),
                None => return answer,
            }
            0
        }
        _ => 0,
    };
    if matches!(
        fault,
        Fault::DropRecord { fix: true } | Fault::DuplicateRecord { fix: true } | Fault::AddRecord { fix: true }
    ) {
        for key in ["rows_in", "rows_out"] {
            let n = v["stats"][key].as_i64().unwrap() + delta;
            v["stats"][key] = Value::from(n);
        }
    }
    serde_json::to_vec(&v).unwrap()
}

struct Job {
    limits: Limits,
    fault_rate: u64,
    rows: u64,
    chunk: usize,
    max_chunk: usize,
    format: Format,
}

/// How a simulated job went.
struct Run<Meta> {
    /// Its output.
    out: Vec<u8>,
    /// When it ended.
    ended: Duration,
    /// The calls the driver started, by unit (`call.seq`): the unit's meta and how many calls.
    calls: BTreeMap<u64, (Meta, u32)>,
}

/// What the simulated input gives the driver next.
enum Next<Meta> {
    Unit(Unit<Meta>),
    Failed(Unit<Meta>, Failure),
    End,
}

/// Runs a job to its end on a simulated clock: `input` is read while the
/// driver wants it, and `worker` says how each call ends and after how long
/// (`None`: it hangs).
fn simulate<M: Merge>(
    seed: u64,
    driver: &mut Driver<M>,
    input: impl FnMut() -> Next<M::Meta>,
    worker: impl FnMut(&Call, &M::Meta) -> Option<(Duration, Result<Vec<u8>, CallError>)>,
) -> Run<M::Meta>
where
    M::Meta: Clone,
{
    simulate_watching(seed, driver, input, worker, |_| {})
}

/// [`simulate`], telling `watch` the units of the calls running each time one starts (itself included).
fn simulate_watching<M: Merge>(
    seed: u64,
    driver: &mut Driver<M>,
    mut input: impl FnMut() -> Next<M::Meta>,
    mut worker: impl FnMut(&Call, &M::Meta) -> Option<(Duration, Result<Vec<u8>, CallError>)>,
    mut watch: impl FnMut(&[&M::Meta]),
) -> Run<M::Meta>
where
    M::Meta: Clone,
{
    // Calls running, as the workers see them: started, neither answered nor cancelled.
    let mut running: BTreeMap<u64, M::Meta> = BTreeMap::new();
    // Answers in flight: when they arrive, for which call.
    let mut pending: BTreeMap<(Duration, u64), Result<Vec<u8>, CallError>> = BTreeMap::new();
    let mut calls = BTreeMap::new();
    let mut out = Vec::new();
    let mut now = Duration::ZERO;
    for step in 0.. {
        assert!(step < 1_000_000, "seed {seed}: the job does not end");
        while driver.wants_input() {
            match input() {
                Next::Unit(unit) => driver.add(unit),
                Next::Failed(unit, failure) => driver.add_failed(unit, failure),
                Next::End => driver.end_input(),
            }
        }
        match driver.poll(now) {
            Action::Call(call) => {
                let meta = driver.meta(call.seq).expect("a unit being called is not yet written");
                calls.entry(call.seq).or_insert_with(|| (meta.clone(), 0)).1 += 1;
                running.insert(call.id, meta.clone());
                watch(&running.values().collect::<Vec<_>>());
                if let Some((after, outcome)) = worker(&call, meta) {
                    pending.insert((now + after, call.id), outcome);
                }
            }
            Action::Cancel(id) => {
                running.remove(&id);
                pending.retain(|&(_, call), _| call != id);
            }
            Action::Emit(bytes) => out.extend_from_slice(&bytes),
            Action::Done => break,
            // Input the driver wants is an event too: it comes before time moves on.
            Action::Wait(_) if driver.wants_input() => {}
            Action::Wait(wake) => {
                let next = pending.keys().next().map(|&(at, _)| at);
                let until = match (next, wake) {
                    (Some(a), Some(w)) => a.min(w),
                    (a, w) => a.or(w).expect("a waiting job has something to wait for"),
                };
                assert!(until >= now, "seed {seed}: time runs backwards");
                now = until;
                while let Some(entry) = pending.first_entry() {
                    if entry.key().0 > now {
                        break;
                    }
                    let ((_, call), outcome) = entry.remove_entry();
                    running.remove(&call);
                    driver.answered(call, outcome, now);
                }
            }
        }
    }
    let report = driver.report();
    let c = &report.counters;
    assert_eq!(c.units_done, c.units, "seed {seed}: every unit has an outcome, {report:?}");
    assert_eq!(c.bytes_done, c.bytes, "seed {seed}: {report:?}");
    assert!(c.bytes_failed <= c.bytes && c.items_failed <= c.items_done, "seed {seed}: {report:?}");
    if let Some(total) = report.total {
        assert_eq!(c.items_done + c.items_not_attempted, total, "seed {seed}: every item once, {report:?}");
    }
    Run { out, ended: now, calls }
}

/// The splitter over `csv` fed `feed` bytes at a time, as the driver's input: its pieces become units
/// as the coordinator makes them ([`ChunkMeta::input`]), a record over `max` bytes a unit that fails.
fn chunks_of(csv: &[u8], feed: usize, chunk: usize, max: usize) -> impl FnMut() -> Next<ChunkMeta> + '_ {
    let mut splitter = Splitter::new(b',', b'"', true, chunk, max);
    let mut pieces = csv.chunks(feed.max(1));
    let mut ended = false;
    move || loop {
        match splitter.next_piece().unwrap() {
            Some(piece) => {
                return match ChunkMeta::input(piece, max) {
                    Input::Unit(unit) => Next::Unit(unit),
                    Input::Failed(unit, failure) => Next::Failed(unit, failure),
                }
            }
            None => match pieces.next() {
                Some(bytes) => splitter.push(bytes),
                None if !ended => {
                    splitter.end();
                    ended = true;
                }
                None => return Next::End,
            },
        }
    }
}

/// How a simulated call ends (`None`: it hangs), and whether its answer is one the merge must refuse.
type Answer = (Option<(Duration, Result<Vec<u8>, CallError>)>, bool);

/// How the simulated worker answers a call, with `honest` its true answer.
fn answer(rng: &mut Rng, rate: u64, limits: &Limits, honest: impl FnOnce() -> Vec<u8>) -> Answer {
    answer_unless(rng, rate, limits, |_| false, honest)
}

/// [`answer`], with the faults `excluded` says answered honestly instead.
fn answer_unless(
    rng: &mut Rng,
    rate: u64,
    limits: &Limits,
    excluded: impl Fn(Fault) -> bool,
    honest: impl FnOnce() -> Vec<u8>,
) -> Answer {
    let latency = MS * (1 + rng.below(40) as u32);
    let fault = fault(rng, rate);
    match if excluded(fault) { Fault::Answer } else { fault } {
        Fault::Answer => (Some((latency, Ok(honest()))), false),
        Fault::Transient => {
            let error = CallError::Transient { message: "worker answered 503".into(), retry_after: None };
            (Some((latency, Err(error))), false)
        }
        Fault::Permanent => (Some((latency, Err(CallError::Permanent("worker answered 400".into())))), false),
        Fault::Hang => (None, false),
        Fault::Fatal => (Some((latency, Err(CallError::Fatal(ErrorKind::BadRow, "line 1: a bad row".into())))), false),
        Fault::Late => (Some((limits.call_timeout + latency, Ok(honest()))), false),
        other => {
            let honest = honest();
            let sent = corrupt(honest.clone(), other);
            // A corruption that leaves nothing to change (no record to drop) is an honest answer.
            let refused = serde_json::from_slice::<Value>(&sent).ok() != serde_json::from_slice::<Value>(&honest).ok();
            (Some((latency, Ok(sent))), refused)
        }
    }
}

/// Whether the driver times out a call the worker answers with `outcome` (`None`: it hangs): the
/// answer comes after the call's time limit. One due at the limit itself is delivered before the
/// driver next looks at the time, as a real answer that beats the timer.
fn times_out<T>(call: &Call, outcome: &Option<(Duration, T)>) -> bool {
    outcome.as_ref().is_none_or(|(after, _)| *after > call.timeout)
}

/// Runs one transform job in simulation; panics with the seed on a broken invariant.
fn run_table(seed: u64, job: &Job) {
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1));
    let (csv, row_lines) = file(&mut rng, job.rows);
    let feed = 1 + rng.below(64) as usize;
    let mut driver = Driver::new(TableMerge::new(job.format, TableMode::Records, false), job.limits.clone(), seed);
    let mut largest_payload = 0;
    let limits = job.limits.clone();
    let spec = Spec::default();
    let (mut late, mut refused) = (0, 0);
    let run = simulate(seed, &mut driver, chunks_of(&csv, feed, job.chunk, job.max_chunk), |call, meta| {
        largest_payload = largest_payload.max(call.payload.len());
        let (outcome, bad) =
            answer(&mut rng, job.fault_rate, &limits, || transform(&spec, &call.payload, line_offset(meta)));
        let timed_out = times_out(call, &outcome);
        late += u64::from(timed_out);
        refused += u64::from(bad && !timed_out);
        outcome
    });
    let peak = driver.peak_held_bytes();
    assert!(peak >= largest_payload, "seed {seed}: held {peak} bytes at most, one unit's payload is {largest_payload}");
    let bound =
        job.limits.window_bytes + job.limits.concurrency * (3 * largest_payload + 4096) + largest_payload + 4096;
    check_table(seed, job, &run, Calls { late, refused }, &row_lines, peak, bound);
}

/// What the simulated workers did that the summary counts: calls that hung or answered past their
/// time limit, and answers on time that the merge must refuse.
#[derive(Clone, Copy)]
struct Calls {
    late: u64,
    refused: u64,
}

/// A transform job's output as records, error records and summary.
fn outputs(seed: u64, format: Format, out: &[u8]) -> (Vec<Value>, Vec<Value>, Value) {
    match format {
        Format::Json => {
            let v: Value =
                serde_json::from_slice(out).unwrap_or_else(|e| panic!("seed {seed}: output is not JSON: {e}"));
            (v["records"].as_array().unwrap().clone(), v["errors"].as_array().unwrap().clone(), v["summary"].clone())
        }
        Format::Ndjson => {
            let mut records = Vec::new();
            let mut errors = Vec::new();
            let mut summary = Value::Null;
            for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: Value =
                    serde_json::from_slice(line).unwrap_or_else(|e| panic!("seed {seed}: a line is not JSON: {e}"));
                if let Some(r) = v.get("record") {
                    records.push(r.clone());
                } else if let Some(e) = v.get("error") {
                    errors.push(e.clone());
                } else if let Some(s) = v.get("summary") {
                    summary = s.clone();
                } else {
                    assert!(v.get("progress").is_some(), "seed {seed}: unexpected line {v}");
                }
            }
            (records, errors, summary)
        }
    }
}

fn check_table(
    seed: u64,
    job: &Job,
    run: &Run<ChunkMeta>,
    workers: Calls,
    row_lines: &[u64],
    peak: usize,
    bound: usize,
) {
    let (out, ended) = (&run.out, run.ended);
    let (records, errors, summary) = outputs(seed, job.format, out);
    let mut seen = vec![0u32; row_lines.len()];
    let mut last_id = None;
    for r in &records {
        let id: usize = r["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("seed {seed}: a record not from the file: {r}"));
        assert!(last_id < Some(id), "seed {seed}: records out of order at id {id}");
        last_id = Some(id);
        seen[id] += 1;
    }
    let line_to_row: HashMap<u64, usize> = row_lines.iter().enumerate().map(|(i, &l)| (l, i)).collect();
    for e in &errors {
        let message = e["message"].as_str().unwrap();
        if let Some(rest) = message.strip_prefix("the ").filter(|_| message.contains(" rows on lines ")) {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let (n, a, b): (u64, u64, u64) =
                (words[0].parse().unwrap(), words[4].parse().unwrap(), words[6].parse().unwrap());
            let covered: Vec<usize> =
                row_lines.iter().enumerate().filter(|(_, &l)| l >= a && l <= b).map(|(i, _)| i).collect();
            assert_eq!(covered.len() as u64, n, "seed {seed}: {message}");
            covered.into_iter().for_each(|i| seen[i] += 1);
        } else {
            let line = e["line"].as_u64().unwrap();
            let row = line_to_row
                .get(&line)
                .unwrap_or_else(|| panic!("seed {seed}: error on line {line}, no row starts there: {e}"));
            seen[*row] += 1;
        }
    }
    for (id, &n) in seen.iter().enumerate() {
        assert_eq!(n, 1, "seed {seed}: row {id} (line {}) appears {n} times", row_lines[id]);
    }
    let rows = row_lines.len() as u64;
    assert_eq!(summary["rows_in"], rows, "seed {seed}: {summary}");
    let sum = |k: &str| summary[k].as_u64().unwrap();
    assert_eq!(sum("rows_out") + sum("rows_filtered") + sum("rows_errored"), rows, "seed {seed}: {summary}");
    assert_eq!(sum("rows_out"), records.len() as u64, "seed {seed}");
    assert!(peak <= bound, "seed {seed}: held {peak} bytes, bound {bound}");
    let limit = job.limits.deadline + job.limits.call_timeout;
    assert!(ended <= limit, "seed {seed}: the job ended at {ended:?}, past {limit:?}");
    if summary["status"] == "failed" {
        // Nothing after the chunk that failed the job is written as a record.
        let failed_at = errors
            .iter()
            .find(|e| e["message"].as_str().unwrap().contains("a bad row"))
            .map(|e| e["line"].as_u64().unwrap());
        let failed_at = failed_at.unwrap_or_else(|| panic!("seed {seed}: a failed job names the chunk that failed it"));
        for r in &records {
            let id: usize = r["id"].as_str().unwrap().parse().unwrap();
            assert!(row_lines[id] < failed_at, "seed {seed}: record {id} comes after the chunk that failed the job");
        }
    }
    if summary["status"] != "complete" {
        assert!(summary["reason"].is_string(), "seed {seed}: {summary}");
    }
    let not_attempted: u64 = errors
        .iter()
        .filter(|e| e["kind"] == "not_attempted")
        .map(|e| e["message"].as_str().unwrap()[4..].split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(summary["rows_not_attempted"], not_attempted, "seed {seed}: {summary}");
    let chunks_failed = errors.iter().filter(|e| e["message"].as_str().unwrap().contains(" were not processed: "));
    assert_eq!(summary["chunks_failed"], chunks_failed.count(), "seed {seed}: one error record per chunk failed");
    let bytes_failed = summary["bytes_not_processed"].as_u64().unwrap();
    assert!(bytes_failed <= summary["bytes"].as_u64().unwrap(), "seed {seed}: {summary}");
    assert_eq!(bytes_failed > 0, sum("chunks_failed") > 0, "seed {seed}: bytes of chunks not processed, {summary}");
    let given_up = chunks_given_up(seed, &errors, &run.calls);
    check_calls(seed, &job.limits, &run.calls, &given_up, workers, &summary);
}

/// The attempts an error message says the driver gave up after, if it says so.
fn gave_up_after(message: &str) -> Option<u32> {
    message.rsplit_once("(gave up after ")?.1.strip_suffix(" attempts)")?.parse().ok()
}

/// The chunks that transform error records say the driver gave up on (by `call.seq`), with
/// the attempts they name.
fn chunks_given_up(seed: u64, errors: &[Value], calls: &BTreeMap<u64, (ChunkMeta, u32)>) -> Vec<(u64, u32)> {
    errors
        .iter()
        .filter_map(|e| {
            let after = gave_up_after(e["message"].as_str()?)?;
            let line = e["line"].as_u64().unwrap();
            let unit = calls
                .iter()
                .find(|(_, (meta, _))| matches!(meta, ChunkMeta::Lines { first_line, .. } if *first_line == line));
            let (&seq, _) = unit
                .unwrap_or_else(|| panic!("seed {seed}: given up on, but no unit called starts on line {line}: {e}"));
            Some((seq, after))
        })
        .collect()
}

/// Checks the calls the driver started (`calls`, by unit) against its retry policy and the
/// summary: no unit got more than `max_attempts` calls; every unit given up on (`gave_up`:
/// each with the attempts its error record names) got exactly that many, `max_attempts`;
/// invocations and retries are the calls counted; timeouts are the calls the worker hung or
/// answered past their time limit, and rejected answers the bad answers on time (`seen`), fewer
/// only when a job that stopped cancelled some.
fn check_calls<Meta>(
    seed: u64,
    limits: &Limits,
    calls: &BTreeMap<u64, (Meta, u32)>,
    gave_up: &[(u64, u32)],
    seen: Calls,
    summary: &Value,
) {
    let Calls { late, refused } = seen;
    let max = limits.retry.max_attempts;
    for (seq, (_, n)) in calls {
        assert!(*n <= max, "seed {seed}: unit {seq} got {n} calls, more than the {max} attempts allowed");
    }
    for &(seq, after) in gave_up {
        let n = calls.get(&seq).map_or(0, |(_, n)| *n);
        assert!(
            n == after && after == max,
            "seed {seed}: unit {seq} got {n} calls and was given up after {after} attempts, of {max} allowed"
        );
    }
    let count = |k: &str| summary[k].as_u64().unwrap_or_else(|| panic!("seed {seed}: no {k} in {summary}"));
    let total: u64 = calls.values().map(|(_, n)| u64::from(*n)).sum();
    assert_eq!(count("invocations"), total, "seed {seed}: calls started, {summary}");
    assert_eq!(count("retries"), total - calls.len() as u64, "seed {seed}: calls after each unit's first, {summary}");
    if summary["status"] == "complete" {
        assert_eq!(count("timeouts"), late, "seed {seed}: calls hung or answered late, {summary}");
        assert_eq!(count("rejected_answers"), refused, "seed {seed}: bad answers on time, {summary}");
    } else {
        assert!(count("timeouts") <= late, "seed {seed}: {late} calls hung or answered late, {summary}");
        assert!(count("rejected_answers") <= refused, "seed {seed}: {refused} bad answers on time, {summary}");
    }
}

fn limits(rng: &mut Rng) -> Limits {
    Limits {
        concurrency: 1 + rng.below(6) as usize,
        retry: RetryPolicy { max_attempts: 1 + rng.below(4) as u32, base_delay: 5 * MS, max_delay: 50 * MS },
        call_timeout: MS * (30 + rng.below(100) as u32),
        deadline: if rng.below(4) == 0 { MS * (50 + rng.below(400) as u32) } else { Duration::from_secs(3600) },
        window_bytes: 200 + rng.below(4000) as usize,
        tolerance: match rng.below(4) {
            0 => Tolerance { count: Some(rng.below(20)), percent: None },
            1 => Tolerance { count: None, percent: Some(rng.below(50) as f64) },
            _ => Tolerance::default(),
        },
        progress_every: Some(MS * 20),
    }
}

#[test]
fn transform_jobs_keep_every_row_under_faults() {
    for seed in 1..=2500u64 {
        let mut rng = Rng::new(seed);
        let job = Job {
            limits: limits(&mut rng),
            fault_rate: [0, 10, 30, 70][rng.below(4) as usize],
            rows: rng.below(120),
            chunk: 1 + rng.below(200) as usize,
            // Now and then a limit some records do not fit in (the header is 8 bytes, records up to 28).
            max_chunk: if rng.below(4) == 0 { 20 + rng.below(20) as usize } else { 400 },
            format: if rng.below(2) == 0 { Format::Json } else { Format::Ndjson },
        };
        run_table(seed, &job);
    }
}

/// The simulated worker's honest answer for a range of `csv`, as the
/// transform worker reads it (range mode): from its guessed first record, or
/// from the one the request names.
fn range_answer(spec: &Spec, csv: &[u8], payload: &[u8], max: usize) -> Vec<u8> {
    let request: Value = serde_json::from_slice(payload).unwrap();
    let (start, end) = (request["start"].as_u64().unwrap(), request["end"].as_u64().unwrap());
    let entry = request["begin"].as_u64().map_or(Entry::Guess, Entry::At);
    let header = read_header(&spec.dialect, csv).unwrap();
    let program = prepare(spec, &header.names).unwrap();
    let owned = Cutter::new(start, end, header.data_start as u64, entry, b'"', b',', max).over(csv);
    let placement = Placement { line_offset: 0, range: Some(owned.span), one_line_records: false };
    run_compiled(spec, &program, &owned.records, Format::Json, placement).unwrap()
}

/// `csv`'s byte ranges of `chunk` bytes as the coordinator's source mode makes them.
fn ranges_of(csv: &[u8], chunk: u64, chain: RangeChain) -> impl FnMut() -> Next<ChunkMeta> {
    let mut ranges = super::plan::byte_ranges(csv.len() as u64, chunk);
    move || match ranges.next() {
        Some(range) => Next::Unit(Unit {
            payload: Rc::new(chain.request(&range, None)),
            items: None,
            bytes: range.end - range.start,
            meta: ChunkMeta::Range { bytes: range, begin: None },
        }),
        None => Next::End,
    }
}

/// Where each row of `csv` starts (after its header).
fn row_starts(csv: &[u8]) -> Vec<u64> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(csv);
    let mut record = csv::ByteRecord::new();
    let mut starts = Vec::new();
    while reader.read_byte_record(&mut record).unwrap() {
        starts.push(record_start(csv, record.position().unwrap()).0 as u64);
    }
    starts
}

/// Source jobs under faults, cut in byte ranges anywhere (inside quoted line
/// breaks too): every row once (a record, an error record at its line and
/// byte, or inside a failed range's bytes), records in order; without faults,
/// exactly one worker's answer over the whole file.
#[test]
fn source_ranges_keep_every_row_under_faults() {
    let spec = Spec::default();
    let mut redone = 0;
    for seed in 1..=1000u64 {
        let mut rng = Rng::new(seed.wrapping_mul(0x7f4a_7c15_9e37_79b9).max(1));
        let rows = rng.below(120);
        let (csv, row_lines) = file(&mut rng, rows);
        let starts = row_starts(&csv);
        let header = read_header(&spec.dialect, &csv).unwrap();
        let chain = RangeChain::new(serde_json::Map::new(), csv.len() as u64, header.data_start as u64, header.lines);
        let limits = limits(&mut rng);
        let rate = [0, 0, 10, 40][rng.below(4) as usize];
        let format = if rng.below(2) == 0 { Format::Json } else { Format::Ndjson };
        let chunk = 1 + rng.below(120);
        let merge = TableMerge::new(format, TableMode::Records, false).with_ranges(chain.clone());
        let mut driver = Driver::new(merge, limits.clone(), seed);
        // A worker answering for rows it does not have, with its counts made to agree, cannot be
        // caught where nobody knows the rows: those faults are the one-chunk simulation's.
        let undetectable = |f: Fault| {
            matches!(
                f,
                Fault::DropRecord { fix: true } | Fault::DuplicateRecord { fix: true } | Fault::AddRecord { fix: true }
            )
        };
        let run = simulate(seed, &mut driver, ranges_of(&csv, chunk, chain), |call, _| {
            answer_unless(&mut rng, rate, &limits, undetectable, || range_answer(&spec, &csv, &call.payload, 1 << 20)).0
        });
        redone += driver.report().counters.redone;
        let (records, errors, summary) = outputs(seed, format, &run.out);
        let mut seen = vec![0u32; starts.len()];
        let mut last_id = None;
        for r in &records {
            let id: usize = r["id"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("seed {seed}: {r}"));
            assert!(last_id < Some(id), "seed {seed}: records out of order at id {id}");
            last_id = Some(id);
            seen[id] += 1;
        }
        let failed_ranges = errors.iter().filter(|e| e["message"].as_str().unwrap().contains("were not processed"));
        let failed_ranges: Vec<(u64, u64)> = failed_ranges
            .map(|e| {
                let words: Vec<&str> = e["message"].as_str().unwrap().split_whitespace().collect();
                (words[5].parse().unwrap(), words[7].parse().unwrap())
            })
            .collect();
        for e in &errors {
            let byte =
                e["byte"].as_u64().unwrap_or_else(|| panic!("seed {seed}: an error record without its byte: {e}"));
            let line = e["line"].as_u64().unwrap();
            if let Some(&(a, b)) =
                failed_ranges.iter().find(|(a, _)| e["message"].as_str().unwrap().contains(&format!(" {a} to ")))
            {
                starts.iter().enumerate().filter(|(_, &s)| s >= a && s <= b).for_each(|(i, _)| seen[i] += 1);
                continue;
            }
            let row = starts
                .iter()
                .position(|&s| s == byte)
                .unwrap_or_else(|| panic!("seed {seed}: no row at byte {byte}: {e}"));
            assert!(
                line == row_lines[row] || (line == 0 && !failed_ranges.is_empty()),
                "seed {seed}: {e} is on line {}",
                row_lines[row]
            );
            seen[row] += 1;
        }
        for (id, &n) in seen.iter().enumerate() {
            assert_eq!(n, 1, "seed {seed}: row {id} (line {}, byte {}) appears {n} times", row_lines[id], starts[id]);
        }
        if summary["status"] == "complete" && failed_ranges.is_empty() {
            let whole: Value = serde_json::from_slice(&transform(&spec, &csv, 0)).unwrap();
            let without_bytes = |errors: &[Value]| -> Vec<Value> {
                errors
                    .iter()
                    .map(|e| {
                        let mut e = e.clone();
                        e.as_object_mut().unwrap().remove("byte");
                        e
                    })
                    .collect()
            };
            assert_eq!(Value::Array(records.clone()), whole["records"], "seed {seed}");
            assert_eq!(without_bytes(&errors), without_bytes(whole["errors"].as_array().unwrap()), "seed {seed}");
            assert_eq!(summary["rows_in"], whole["stats"]["rows_in"], "seed {seed}");
        }
    }
    assert!(redone > 100, "ranges guessed their first record wrong and were read again: {redone}");
}

#[test]
fn a_faultless_job_equals_one_worker_over_the_whole_file() {
    let mut rng = Rng::new(7);
    let (csv, _) = file(&mut rng, 300);
    let spec = Spec::default();
    let whole: Value = serde_json::from_slice(&transform(&spec, &csv, 0)).unwrap();
    let limits = Limits {
        tolerance: Tolerance::default(),
        deadline: Duration::from_secs(3600),
        ..self::limits(&mut Rng::new(3))
    };
    let mut driver = Driver::new(TableMerge::new(Format::Json, TableMode::Records, false), limits, 1);
    let run = simulate(1, &mut driver, chunks_of(&csv, csv.len(), 100, 10_000), |call, meta| {
        Some((MS, Ok(transform(&spec, &call.payload, line_offset(meta)))))
    });
    let merged: Value = serde_json::from_slice(&run.out).unwrap();
    assert_eq!(merged["records"], whole["records"]);
    assert_eq!(merged["errors"], whole["errors"]);
    assert_eq!(merged["stats"], whole["stats"]);
    assert!(merged["summary"]["chunks"].as_u64().unwrap() > 10);
}

/// Aggregates under faults: the groups of a job whose every chunk was answered
/// equal the whole file's, exactly, however the answers came; in any job every row is counted once.
#[test]
fn aggregate_jobs_merge_exactly_under_faults() {
    let spec = crate::transform::spec::parse(
        br#"{"columns": ["id", "note"], "aggregate": {"group_by": ["note"], "metrics": [{"op": "count"}, {"name": "ids", "op": "count", "column": "id"}]}}"#,
    )
    .unwrap();
    let mut partial = spec.clone();
    partial.aggregate.as_mut().unwrap().partial = true;
    for seed in 1..=600u64 {
        let mut rng = Rng::new(seed.wrapping_mul(0x2545_f491_4f6c_dd1d).max(1));
        let rows = rng.below(150);
        let (mut csv, _) = file(&mut rng, rows);
        // Few groups, so that chunks share them.
        for b in csv.iter_mut().skip(8) {
            if b.is_ascii_digit() && rng.below(3) > 0 {
                *b = b'1';
            }
        }
        let limits = limits(&mut rng);
        let rate = [0, 20, 60][rng.below(3) as usize];
        let format = if rng.below(2) == 0 { Format::Json } else { Format::Ndjson };
        let header = read_header(&spec.dialect, &csv).unwrap();
        let program = prepare(&spec, &header.names).unwrap();
        let shape = crate::transform::aggregate::Shape::compile(spec.aggregate.as_ref().unwrap(), &program.schema())
            .unwrap()
            .shape;
        let mode = TableMode::Aggregate {
            groups: Box::new(crate::transform::aggregate::Groups::new(shape)),
            spec: Box::new(spec.aggregate.clone().unwrap()),
        };
        let mut driver = Driver::new(TableMerge::new(format, mode, false), limits.clone(), seed);
        let chunk = 1 + rng.below(300) as usize;
        let feed = 1 + rng.below(64) as usize;
        let (mut late, mut refused) = (0, 0);
        let run = simulate(seed, &mut driver, chunks_of(&csv, feed, chunk, 100_000), |call, meta| {
            let (outcome, bad) =
                answer(&mut rng, rate, &limits, || transform(&partial, &call.payload, line_offset(meta)));
            let timed_out = times_out(call, &outcome);
            late += u64::from(timed_out);
            refused += u64::from(bad && !timed_out);
            outcome
        });
        let (groups, errors, summary) = match format {
            Format::Json => {
                let v: Value = serde_json::from_slice(&run.out).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                (v["groups"].clone(), v["errors"].as_array().unwrap().clone(), v["summary"].clone())
            }
            Format::Ndjson => {
                let lines: Vec<Value> = run
                    .out
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_slice(l).unwrap_or_else(|e| panic!("seed {seed}: {e}")))
                    .collect();
                let groups = lines.iter().filter_map(|l| l.get("group").cloned()).collect();
                let errors = lines.iter().filter_map(|l| l.get("error").cloned()).collect();
                (Value::Array(groups), errors, lines.last().unwrap()["summary"].clone())
            }
        };
        let given_up = chunks_given_up(seed, &errors, &run.calls);
        check_calls(seed, &limits, &run.calls, &given_up, Calls { late, refused }, &summary);
        let sum = |k: &str| summary[k].as_u64().unwrap();
        assert_eq!(
            sum("rows_out") + sum("rows_filtered") + sum("rows_errored"),
            sum("rows_in"),
            "seed {seed}: {summary}"
        );
        assert!(sum("rows_in") <= rows, "seed {seed}: {summary}");
        if summary["status"] == "complete" && sum("chunks_failed") == 0 {
            let whole: Value = serde_json::from_slice(&transform(&spec, &csv, 0)).unwrap();
            assert_eq!(groups, whole["groups"], "seed {seed}: merged groups differ from the whole file's");
            assert_eq!(summary["rows_errored"], whole["stats"]["rows_errored"], "seed {seed}");
        }
    }
}

/// Scrape batches: results are checked URL by URL, every URL is answered exactly once.
#[test]
fn scrape_jobs_keep_every_url_under_faults() {
    for seed in 1..=1500u64 {
        let mut rng = Rng::new(seed);
        let limits = limits(&mut rng);
        let hosts = 1 + rng.below(4);
        let urls: Vec<String> =
            (0..rng.below(60)).map(|i| format!("https://h{}.example/{i}", rng.below(hosts))).collect();
        let batch = 1 + rng.below(8) as usize;
        let format = if rng.below(2) == 0 { Format::Json } else { Format::Ndjson };
        let fault_rate = [0, 20, 60][rng.below(3) as usize];
        let per_host = [1, 2, 3, usize::MAX][rng.below(4) as usize];
        // What one batch fetches of a host at once: at most the job's limit.
        let per_batch = if per_host == usize::MAX { per_host } else { 1 + rng.below(per_host as u64) as usize };
        let whole_hosts = per_host != usize::MAX && rng.below(3) == 0;
        let merge = PageMerge::new(format).with_per_host(per_host, per_batch);
        let merge = if whole_hosts { merge.one_batch_per_host() } else { merge };
        let mut driver = Driver::new(merge, limits.clone(), seed);
        let mut plan = super::plan::batches(urls.len(), batch).into_iter();
        let input = || match plan.next() {
            Some(range) => Next::Unit(Unit {
                meta: BatchMeta { start: range.start as u64, urls: urls[range.clone()].to_vec() },
                payload: Rc::new(vec![0; 10]),
                items: Some(range.len() as u64),
                bytes: 0,
            }),
            None => Next::End,
        };
        let (mut late, mut refused) = (0, 0);
        // The pages of one host a worker may fetch at once, over every call running, are never over per_host.
        let watch = |running: &[&BatchMeta]| {
            let mut at_once: HashMap<String, usize> = HashMap::new();
            for meta in running {
                let mut batch: HashMap<String, usize> = HashMap::new();
                meta.urls
                    .iter()
                    .filter_map(|u| crate::schedule::host_of(u))
                    .for_each(|h| *batch.entry(h).or_default() += 1);
                batch.into_iter().for_each(|(h, n)| *at_once.entry(h).or_default() += n.min(per_batch));
            }
            if let Some((host, n)) = at_once.iter().find(|(_, &n)| n > per_host) {
                panic!("seed {seed}: {n} pages of {host} may be fetched at once, over {per_host}");
            }
            // With a delay between a host's requests, one batch at a time holds each host.
            let mut holding: HashMap<String, usize> = HashMap::new();
            for meta in running.iter().filter(|_| whole_hosts) {
                let hosts: std::collections::BTreeSet<String> =
                    meta.urls.iter().filter_map(|u| crate::schedule::host_of(u)).collect();
                hosts.into_iter().for_each(|h| *holding.entry(h).or_default() += 1);
            }
            if let Some((host, n)) = holding.iter().find(|(_, &n)| n > 1) {
                panic!("seed {seed}: {n} batches of {host} run at once, where one at a time may");
            }
        };
        let run = simulate_watching(
            seed,
            &mut driver,
            input,
            |call, meta| {
                let mut results: Vec<PageResult> = meta
                    .urls
                    .iter()
                    .enumerate()
                    .map(|(index, url)| PageResult {
                        index,
                        url: url.clone(),
                        outcome: Outcome::Error(ItemError::new(crate::scrape::FailureKind::HttpStatus, "404")),
                    })
                    .collect();
                let honest = serde_json::to_vec(&ScrapeResponse { results: results.clone() }).unwrap();
                let f = fault(&mut rng, fault_rate);
                match f {
                    Fault::DropRecord { .. } => drop(results.pop()),
                    Fault::DuplicateRecord { .. } if !results.is_empty() => results.push(results[0].clone()),
                    Fault::AddRecord { .. } | Fault::BadErrorLine if !results.is_empty() => results[0].index = 7,
                    _ => {}
                }
                let answer = serde_json::to_vec(&ScrapeResponse { results }).unwrap();
                let latency = MS * (1 + rng.below(40) as u32);
                let outcome = match f {
                    Fault::Transient => {
                        Some((latency, Err(CallError::Transient { message: "503".into(), retry_after: Some(MS) })))
                    }
                    Fault::Permanent => Some((latency, Err(CallError::Permanent("400".into())))),
                    Fault::Hang => None,
                    Fault::Late => Some((limits.call_timeout + latency, Ok(answer))),
                    Fault::Truncate => Some((latency, Ok(answer[..answer.len() / 2].to_vec()))),
                    _ => Some((latency, Ok(answer))),
                };
                let timed_out = times_out(call, &outcome);
                late += u64::from(timed_out);
                let bad = matches!(&outcome, Some((_, Ok(sent))) if *sent != honest);
                refused += u64::from(bad && !timed_out);
                outcome
            },
            watch,
        );
        let (results, summary): (Vec<Value>, Value) = match format {
            Format::Json => {
                let v: Value = serde_json::from_slice(&run.out).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
                (v["results"].as_array().unwrap().clone(), v["summary"].clone())
            }
            Format::Ndjson => {
                let lines: Vec<Value> = run
                    .out
                    .split(|&b| b == b'\n')
                    .filter(|l| !l.is_empty())
                    .map(|l| serde_json::from_slice::<Value>(l).unwrap())
                    .collect();
                let results = lines.iter().filter(|v| v.get("index").is_some()).cloned().collect();
                (results, lines.last().unwrap()["summary"].clone())
            }
        };
        let mut indexes: Vec<u64> = results.iter().map(|r| r["index"].as_u64().unwrap()).collect();
        if format == Format::Json {
            assert!(indexes.windows(2).all(|w| w[0] < w[1]), "seed {seed}: results out of order");
        }
        indexes.sort_unstable();
        assert_eq!(indexes, (0..urls.len() as u64).collect::<Vec<_>>(), "seed {seed}: every URL once");
        let mut gave_up = Vec::new();
        for r in &results {
            let index = r["index"].as_u64().unwrap();
            assert_eq!(r["url"], urls[index as usize], "seed {seed}");
            if let Some(after) = r["error"]["message"].as_str().and_then(gave_up_after) {
                let unit =
                    run.calls.iter().find(|(_, (m, _))| (m.start..m.start + m.urls.len() as u64).contains(&index));
                let (&seq, _) =
                    unit.unwrap_or_else(|| panic!("seed {seed}: given up on, but no batch called holds URL {index}"));
                gave_up.push((seq, after));
            }
        }
        check_calls(seed, &limits, &run.calls, &gave_up, Calls { late, refused }, &summary);
        let ended = run.ended;
        assert!(ended <= limits.deadline + limits.call_timeout, "seed {seed}: ended at {ended:?}");
    }
}
