//! A fan-out job as a state machine without I/O.
//!
//! The component that runs a job tells the [`Driver`] what happened (a unit of
//! work was read, a worker call answered, the input ended or broke off) and what time it
//! is, and asks it what to do next ([`Driver::poll`]): call a worker, cancel a
//! call, write bytes to the caller, or wait until an event or a time. Everything
//! that makes fan-out hard lives here, where `cargo test` can drive it with a
//! simulated worker and clock:
//!
//! * at most `concurrency` calls at once, the earliest unit first, and at
//!   most the merge's limit of each key (a host's pages) in use across the
//!   calls running ([`Merge::claims`]);
//! * retries with backoff for transient failures, a time limit per call, a
//!   deadline for the whole job;
//! * answers checked by the [`Merge`] before they are used, and merged in input
//!   order; the memory held for units and answers kept near `window_bytes` by
//!   reading no more input and starting no new call while it is full (the
//!   earliest unit always runs, so the job cannot stall);
//! * a tolerated-failure threshold that stops the job, with every item that was
//!   not attempted still accounted for;
//! * progress reports and a final report.
//!
//! Time is a [`Duration`] since the job started, always passed in.

use super::retry::RetryPolicy;
use crate::api::ErrorKind;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

/// Identifies one worker call.
pub type CallId = u64;

/// Memory counted for each unit besides its bytes, so that many tiny units still fill the window.
const UNIT_OVERHEAD: usize = 256;

/// How a job's answers are checked and merged. The driver calls it in input order.
pub trait Merge {
    /// What the merge knows of one unit (its lines, its URLs, its byte range).
    type Meta;
    /// A worker answer that passed its checks.
    type Accepted;

    /// Checks that `answer` is well formed and accounts for exactly what `meta`
    /// describes; the reason when it does not. May merge order-free state (aggregates) at once.
    fn accept(&mut self, meta: &Self::Meta, answer: Vec<u8>) -> Result<Self::Accepted, String>;
    /// The memory an accepted answer holds while it waits for its turn.
    fn held_bytes(&self, accepted: &Self::Accepted) -> usize;
    /// Items the answer covers, and how many of them failed.
    fn items(&self, accepted: &Self::Accepted) -> (u64, u64);
    /// Writes an accepted answer's output.
    fn emit(&mut self, meta: &Self::Meta, accepted: Self::Accepted, out: &mut Vec<u8>);
    /// When an accepted answer's turn comes, before it is written: whether
    /// it stands in that place. A source range whose first record (a guess)
    /// is not where the range before it ended is sent again; one that cannot
    /// be placed at all fails. May update `meta` to say what was asked.
    fn turn(&mut self, _meta: &mut Self::Meta, _accepted: &Self::Accepted) -> Turn {
        Turn::Stands
    }
    /// What a unit's call takes of each key (a host: the pages it may fetch
    /// from it at once) while it runs; a call starts only while every key it
    /// claims has room under [`Merge::claim_limit`].
    fn claims(&self, _meta: &Self::Meta) -> Vec<(String, usize)> {
        Vec::new()
    }
    /// The most of one key in use at once, across every call.
    fn claim_limit(&self) -> usize {
        usize::MAX
    }
    /// Writes the error records of a unit that produced no answer.
    fn fail(&mut self, meta: &Self::Meta, failure: &Failure, out: &mut Vec<u8>);
    /// Whether output must follow input order; when not, each unit is
    /// written as soon as it has its outcome (NDJSON scrape results).
    fn ordered(&self) -> bool {
        true
    }
    /// Writes a progress report, if the output format has them.
    fn progress(&mut self, report: &Report, out: &mut Vec<u8>);
    /// Writes the end of the output, with the final report.
    fn finish(&mut self, report: &Report, out: &mut Vec<u8>);
}

/// Whether an accepted answer stands when its turn comes ([`Merge::turn`]).
#[derive(Debug)]
pub enum Turn {
    /// It is written out.
    Stands,
    /// Its unit is sent again with this payload.
    Redo(Vec<u8>),
    /// Its unit fails.
    Fails(Failure),
}

/// Why a unit has no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What class of failure.
    pub kind: FailureKind,
    /// What happened, for a person.
    pub reason: String,
}

/// The classes of [`Failure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The worker failed, or its answers failed their checks, on every attempt.
    Worker,
    /// The unit is too large to send to a worker.
    TooLarge,
    /// The job stopped before the unit was done.
    NotAttempted,
}

/// What became of one worker call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallError {
    /// Worth another attempt: no connection, a 408, 429 or 5xx, an answer that failed its checks.
    Transient {
        /// What happened.
        message: String,
        /// How long the worker asked to wait (`Retry-After`).
        retry_after: Option<Duration>,
    },
    /// No complete answer within the call's time limit: tried again like a transient failure.
    Timeout(Duration),
    /// Would fail the same way again: another 4xx, an answer over the size limit.
    Permanent(String),
    /// Fails the whole job when its turn comes: `on_error: fail` met a bad
    /// row ([`ErrorKind::BadRow`]), or the source is not the file planned
    /// ([`ErrorKind::SourceChanged`]).
    Fatal(ErrorKind, String),
    /// The deployment's mistake, not the unit's: the worker refused the
    /// caller (401, 403), has no such route (404, 405), or is not configured.
    /// A streamed job fails the unit, as for [`CallError::Permanent`]; a
    /// durable job concludes nothing and reports it, so that fixing the
    /// configuration loses no unit.
    Misconfigured(String),
}

/// A unit of work: a chunk of rows or a batch of URLs.
#[derive(Clone, Debug)]
pub struct Unit<Meta> {
    /// What the merge needs to check and place its answer.
    pub meta: Meta,
    /// The worker request body.
    pub payload: Rc<Vec<u8>>,
    /// Items in the unit, when known (rows of a streamed chunk, URLs of a batch).
    pub items: Option<u64>,
    /// Input bytes the unit covers.
    pub bytes: u64,
}

/// One item of a job's input.
#[derive(Clone, Debug)]
pub enum Input<Meta> {
    /// A unit to run.
    Unit(Unit<Meta>),
    /// A unit that cannot be sent, and why: it fails at once, its items accounted for.
    Failed(Unit<Meta>, Failure),
}

/// A worker call to make.
#[derive(Clone, Debug)]
pub struct Call {
    /// Report its outcome with this id.
    pub id: CallId,
    /// The unit's place in the job (0, 1, ...).
    pub seq: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The request body.
    pub payload: Rc<Vec<u8>>,
    /// How long the call may take; the driver gives up on it after that.
    pub timeout: Duration,
}

/// What the component should do next.
#[derive(Clone, Debug)]
pub enum Action {
    /// Start a worker call; report it with [`Driver::answered`].
    Call(Call),
    /// Drop a call still running; its outcome is no longer wanted.
    Cancel(CallId),
    /// Write these bytes to the caller.
    Emit(Vec<u8>),
    /// Wait for an event: input (if [`Driver::wants_input`]), a call's outcome,
    /// or this time, when given.
    Wait(Option<Duration>),
    /// The job is over and its output complete.
    Done,
}

/// A job's limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Worker calls at once.
    pub concurrency: usize,
    /// Attempts per unit and backoff between them.
    pub retry: RetryPolicy,
    /// Time allowed for one call.
    pub call_timeout: Duration,
    /// Time allowed for the whole job.
    pub deadline: Duration,
    /// Memory for units and answers waiting to be merged in order.
    pub window_bytes: usize,
    /// When to stop for failures.
    pub tolerance: Tolerance,
    /// How often to report progress, if at all.
    pub progress_every: Option<Duration>,
}

/// A tolerated-failure threshold: the job stops once failed items pass either bound.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Tolerance {
    /// Failed items allowed.
    pub count: Option<u64>,
    /// Failed items allowed, as a percentage of all items (of the items done
    /// so far while the total is not known).
    pub percent: Option<f64>,
}

impl Tolerance {
    /// Why `failed` items out of `done` (of `total`, when known) pass the threshold.
    pub fn exceeded(&self, failed: u64, done: u64, total: Option<u64>) -> Option<String> {
        if let Some(count) = self.count.filter(|&c| failed > c) {
            return Some(format!("{failed} items failed, more than the {count} tolerated"));
        }
        let of = total.unwrap_or(done);
        match self.percent {
            Some(p) if of > 0 && failed as f64 * 100.0 > p * of as f64 => Some(format!(
                "{failed} of {of} items failed ({:.1}%), more than the {p}% tolerated",
                failed as f64 * 100.0 / of as f64
            )),
            _ => None,
        }
    }
}

/// How the job ended, or why it is ending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Running, or every unit was attempted.
    Complete,
    /// Dispatching stopped (threshold, deadline); the rest is accounted as not attempted.
    Stopped,
    /// A unit failed the whole job (`on_error: fail`).
    Failed,
}

/// Counts kept while the job runs, reported in progress lines and the summary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Units read so far (all of them once the input has ended).
    pub units: u64,
    /// Units with an outcome.
    pub units_done: u64,
    /// Units that got no answer (failed, too large, not attempted).
    pub units_failed: u64,
    /// Worker calls started.
    pub invocations: u64,
    /// Calls that were retries.
    pub retries: u64,
    /// Calls that ran out of time.
    pub timeouts: u64,
    /// 200 answers refused because they failed their checks.
    pub rejected_answers: u64,
    /// Units sent again because their answer could not stand where it fell
    /// in order (a source range that guessed its first record wrong).
    pub redone: u64,
    /// Items whose unit has an outcome.
    pub items_done: u64,
    /// Of those, items that failed (error records).
    pub items_failed: u64,
    /// Items of units that were never done because the job stopped (when known).
    pub items_not_attempted: u64,
    /// Input bytes read so far, and of those, the ones whose unit has an outcome.
    pub bytes: u64,
    /// Bytes of units with an outcome.
    pub bytes_done: u64,
    /// Bytes of units that got no answer (failed or not attempted).
    pub bytes_failed: u64,
}

/// The state of the job, for progress lines and the summary.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// Complete, stopped or failed.
    pub status: Status,
    /// Why the job stopped or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What kind of error failed the job, when a unit's answer did ([`CallError::Fatal`]).
    #[serde(skip)]
    pub halted_by: Option<ErrorKind>,
    /// Items in the whole job, once known.
    pub total: Option<u64>,
    /// Units in the whole job, once known.
    pub units_total: Option<u64>,
    /// Input bytes of the whole job, once known.
    pub bytes_total: Option<u64>,
    /// Time since the job started.
    pub elapsed_ms: u64,
    /// The counts.
    #[serde(flatten)]
    pub counters: Counters,
    /// The most memory held at once for units and answers.
    pub peak_held_bytes: usize,
}

enum Phase<A> {
    Queued,
    Running {
        deadline: Duration,
        timeout: Duration,
    },
    Backoff,
    Accepted(A),
    Failed(Failure),
    Fatal(ErrorKind, String),
    /// Written out already, ahead of its turn.
    Emitted,
}

struct Slot<M: Merge> {
    meta: M::Meta,
    payload: Option<Rc<Vec<u8>>>,
    items: Option<u64>,
    bytes: u64,
    attempts: u32,
    phase: Phase<M::Accepted>,
    held: usize,
    /// What each of its calls claims ([`Merge::claims`]), worked out once.
    claims: Rc<Vec<(String, usize)>>,
}

/// A running job. See the module documentation.
pub struct Driver<M: Merge> {
    limits: Limits,
    merge: M,
    /// Units not yet emitted; the front one has sequence number `emitted`.
    slots: VecDeque<Slot<M>>,
    emitted: u64,
    queued: BTreeSet<u64>,
    backoff: BTreeSet<(Duration, u64)>,
    calls: HashMap<CallId, u64>,
    /// What each running call claims, and each key's total.
    claimed: HashMap<CallId, Rc<Vec<(String, usize)>>>,
    in_use: HashMap<String, usize>,
    next_call: CallId,
    cancels: Vec<CallId>,
    held: usize,
    peak_held: usize,
    input_done: bool,
    all_items_known: bool,
    /// Items of the units read so far, when all of them say.
    items_read: u64,
    status: Status,
    reason: Option<String>,
    /// The kind of error of the unit whose answer failed the job.
    halted_by: Option<ErrorKind>,
    finished: bool,
    counters: Counters,
    next_progress: Option<Duration>,
    out: Vec<u8>,
    rng: u64,
    now: Duration,
    expected: Expected,
    input_error: Option<String>,
}

/// What a job holds in all, as far as it is known before its units are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expected {
    /// Units.
    pub units: Option<u64>,
    /// Items.
    pub items: Option<u64>,
    /// Input bytes.
    pub bytes: Option<u64>,
}

impl<M: Merge> Driver<M> {
    /// A job merged by `merge` within `limits`; `seed` picks retry jitter.
    pub fn new(merge: M, limits: Limits, seed: u64) -> Driver<M> {
        let next_progress = limits.progress_every;
        Driver {
            limits,
            merge,
            slots: VecDeque::new(),
            emitted: 0,
            queued: BTreeSet::new(),
            backoff: BTreeSet::new(),
            calls: HashMap::new(),
            claimed: HashMap::new(),
            in_use: HashMap::new(),
            next_call: 0,
            cancels: Vec::new(),
            held: 0,
            peak_held: 0,
            input_done: false,
            all_items_known: true,
            items_read: 0,
            status: Status::Complete,
            reason: None,
            halted_by: None,
            finished: false,
            counters: Counters::default(),
            next_progress,
            out: Vec::new(),
            rng: seed | 1,
            now: Duration::ZERO,
            expected: Expected::default(),
            input_error: None,
        }
    }

    /// Whether the next unit of input is wanted now: while the window has room
    /// and fewer units wait for a call than may run at once. Once the job has
    /// stopped, nothing waits (units are concluded as they come), so input is
    /// still wanted and what follows is accounted for.
    pub fn wants_input(&self) -> bool {
        !self.input_done && self.held < self.limits.window_bytes && self.queued.len() < self.limits.concurrency.max(1)
    }

    /// The most memory held at once so far.
    pub fn peak_held_bytes(&self) -> usize {
        self.peak_held
    }

    /// What the merge knows of unit `seq`, while the unit is not yet written out.
    pub fn meta(&self, seq: u64) -> Option<&M::Meta> {
        let i = seq.checked_sub(self.emitted)?;
        self.slots.get(i as usize).map(|s| &s.meta)
    }

    /// How the job stands: complete (so far), stopped or failed.
    pub fn status(&self) -> Status {
        match (&self.status, &self.input_error) {
            (Status::Complete, Some(_)) => Status::Failed,
            (status, _) => status.clone(),
        }
    }

    /// Adds the next item of the input: [`Driver::add`] or [`Driver::add_failed`].
    pub fn take(&mut self, input: Input<M::Meta>) {
        match input {
            Input::Unit(unit) => self.add(unit),
            Input::Failed(unit, failure) => self.add_failed(unit, failure),
        }
    }

    /// Adds the next unit of the job.
    pub fn add(&mut self, unit: Unit<M::Meta>) {
        self.push(unit, None);
    }

    /// Adds a unit that cannot be sent (a record over the size limit): it fails at once.
    pub fn add_failed(&mut self, unit: Unit<M::Meta>, failure: Failure) {
        self.push(unit, Some(failure));
    }

    fn push(&mut self, unit: Unit<M::Meta>, failure: Option<Failure>) {
        let seq = self.emitted + self.slots.len() as u64;
        self.counters.units += 1;
        self.counters.bytes += unit.bytes;
        self.all_items_known &= unit.items.is_some();
        self.items_read += unit.items.unwrap_or(0);
        let held = UNIT_OVERHEAD + unit.payload.len();
        let claims = Rc::new(self.merge.claims(&unit.meta));
        self.slots.push_back(Slot {
            claims,
            meta: unit.meta,
            payload: Some(unit.payload),
            items: unit.items,
            bytes: unit.bytes,
            attempts: 0,
            phase: Phase::Queued,
            held,
        });
        self.hold(held);
        let i = self.slots.len() - 1;
        match failure {
            Some(failure) => self.conclude(i, Phase::Failed(failure)),
            None if self.status != Status::Complete => {
                let failure = self.not_attempted();
                self.conclude(i, Phase::Failed(failure));
            }
            None => {
                self.queued.insert(seq);
            }
        }
    }

    /// Says what the whole job holds, when it is known before its units are read.
    pub fn expect(&mut self, expected: Expected) {
        self.expected = expected;
    }

    /// No more units will come.
    pub fn end_input(&mut self) {
        self.input_done = true;
    }

    /// The input broke off (a body that could not be read, a file that cannot
    /// be split): no more units come, the units read so far still run, and the
    /// job ends as failed, saying why.
    pub fn input_failed(&mut self, reason: String) {
        self.input_done = true;
        if self.input_error.is_none() {
            self.input_error = Some(format!("the input could not be read to its end: {reason}"));
        }
    }

    /// Reports the outcome of `call` at time `now`: the worker's 200 answer, or why there is none.
    /// Outcomes of calls that were cancelled or timed out are ignored.
    pub fn answered(&mut self, call: CallId, outcome: Result<Vec<u8>, CallError>, now: Duration) {
        self.now = self.now.max(now);
        let Some(seq) = self.calls.remove(&call) else { return };
        self.release_claims(call);
        let i = (seq - self.emitted) as usize;
        let checked = match outcome {
            Ok(answer) => {
                let meta = &self.slots[i].meta;
                self.merge.accept(meta, answer).map_err(|reason| {
                    self.counters.rejected_answers += 1;
                    CallError::Transient { message: format!("worker answer refused: {reason}"), retry_after: None }
                })
            }
            Err(e) => Err(e),
        };
        match checked {
            Ok(accepted) => self.conclude(i, Phase::Accepted(accepted)),
            Err(error) => self.attempt_failed(seq, error),
        }
        self.check_tolerance();
    }

    /// What to do next, at time `now`. Call until it answers `Wait` or `Done`.
    pub fn poll(&mut self, now: Duration) -> Action {
        self.now = self.now.max(now);
        let now = self.now;
        if let Some(call) = self.cancels.pop() {
            return Action::Cancel(call);
        }
        self.expire(now);
        if let Some(call) = self.cancels.pop() {
            return Action::Cancel(call);
        }
        if let Some(call) = self.dispatch(now) {
            return Action::Call(call);
        }
        if self.emit_ready() {
            // A unit sent again: it is the earliest, so it goes now.
            if let Some(call) = self.dispatch(now) {
                return Action::Call(call);
            }
        }
        if let Some(at) = self.next_progress.filter(|&at| now >= at && !self.finished) {
            let report = self.report();
            self.merge.progress(&report, &mut self.out);
            let every = self.limits.progress_every.expect("progress is on");
            self.next_progress = Some(at.max(now) + every);
        }
        if self.input_done && self.slots.is_empty() && !self.finished {
            self.finished = true;
            let report = self.report();
            self.merge.finish(&report, &mut self.out);
        }
        if !self.out.is_empty() {
            return Action::Emit(std::mem::take(&mut self.out));
        }
        if self.finished {
            return Action::Done;
        }
        // Once stopped, only events (the rest of the input) wake the job.
        let deadline = (self.status == Status::Complete).then_some(self.limits.deadline.max(now));
        let running = self.slots.iter().filter_map(|slot| match slot.phase {
            Phase::Running { deadline, .. } => Some(deadline),
            _ => None,
        });
        let wake = deadline
            .into_iter()
            .chain(self.backoff.first().map(|&(until, _)| until))
            .chain(running)
            .chain(self.next_progress)
            .min();
        Action::Wait(wake)
    }

    /// The report as it stands.
    pub fn report(&self) -> Report {
        Report {
            status: self.status(),
            reason: self.reason.clone().or_else(|| self.input_error.clone()),
            halted_by: self.halted_by,
            total: self.total(),
            units_total: self.expected.units.or(self.input_done.then_some(self.counters.units)),
            bytes_total: self.expected.bytes.or(self.input_done.then_some(self.counters.bytes)),
            elapsed_ms: self.now.as_millis() as u64,
            counters: self.counters.clone(),
            peak_held_bytes: self.peak_held,
        }
    }

    /// Calls past their time limit fail; backoffs that are over queue their
    /// unit again; past the job's deadline, the job stops.
    fn expire(&mut self, now: Duration) {
        if now >= self.limits.deadline && self.status == Status::Complete && !self.input_done_and_idle() {
            // The rest of the input is still read (quickly: nothing runs), so that
            // every item is accounted for as not attempted.
            let deadline = self.limits.deadline.as_millis();
            self.stop(Status::Stopped, format!("the job's deadline of {deadline} ms passed"));
        }
        let late: Vec<(CallId, u64, Duration)> = self
            .calls
            .iter()
            .filter_map(|(&call, &seq)| match self.slots[(seq - self.emitted) as usize].phase {
                Phase::Running { deadline, timeout } if now >= deadline => Some((call, seq, timeout)),
                _ => None,
            })
            .collect();
        for (call, seq, timeout) in late {
            self.calls.remove(&call);
            self.release_claims(call);
            self.cancels.push(call);
            self.attempt_failed(seq, CallError::Timeout(timeout));
        }
        while let Some(&(until, seq)) = self.backoff.first() {
            if until > now {
                break;
            }
            self.backoff.pop_first();
            self.queued.insert(seq);
            self.slots[(seq - self.emitted) as usize].phase = Phase::Queued;
        }
        self.check_tolerance();
    }

    fn input_done_and_idle(&self) -> bool {
        self.input_done && self.slots.iter().all(|s| is_concluded(&s.phase))
    }

    /// The next call to start, if the limits allow one.
    fn dispatch(&mut self, now: Duration) -> Option<Call> {
        if self.status != Status::Complete || self.calls.len() >= self.limits.concurrency.max(1) {
            return None;
        }
        // Past the window only the earliest unit starts: it is what the others wait for.
        let window_full = self.held >= self.limits.window_bytes;
        let limit = self.merge.claim_limit();
        let (seq, claims) =
            self.queued.iter().take_while(|&&seq| seq == self.emitted || !window_full).find_map(|&seq| {
                let claims = &self.slots[(seq - self.emitted) as usize].claims;
                let fits = claims.iter().all(|(key, n)| self.in_use.get(key).copied().unwrap_or(0) + n <= limit);
                fits.then(|| (seq, claims.clone()))
            })?;
        self.queued.remove(&seq);
        let id = self.next_call;
        self.next_call += 1;
        for (key, n) in claims.iter() {
            *self.in_use.entry(key.clone()).or_default() += n;
        }
        if !claims.is_empty() {
            self.claimed.insert(id, claims);
        }
        let left = self.limits.deadline.saturating_sub(now);
        let timeout = self.limits.call_timeout.min(left).max(Duration::from_millis(1));
        let slot = &mut self.slots[(seq - self.emitted) as usize];
        slot.attempts += 1;
        slot.phase = Phase::Running { deadline: now + timeout, timeout };
        self.counters.invocations += 1;
        if slot.attempts > 1 {
            self.counters.retries += 1;
        }
        self.calls.insert(id, seq);
        let payload = slot.payload.clone().expect("a unit not yet concluded keeps its payload");
        Some(Call { id, seq, attempt: slot.attempts, payload, timeout })
    }

    /// A call of unit `seq` failed: try again later, or conclude the unit.
    fn attempt_failed(&mut self, seq: u64, error: CallError) {
        let i = (seq - self.emitted) as usize;
        let attempts = self.slots[i].attempts;
        let error = match error {
            CallError::Timeout(limit) => {
                self.counters.timeouts += 1;
                let message = format!("worker call timed out after {} ms", limit.as_millis());
                CallError::Transient { message, retry_after: None }
            }
            other => other,
        };
        let phase = match error {
            CallError::Transient { message, retry_after } => {
                let random = self.random();
                match self.limits.retry.next_delay(attempts, retry_after, random) {
                    Some(delay) if self.status == Status::Complete => {
                        let until = self.now + delay;
                        self.backoff.insert((until, seq));
                        self.slots[i].phase = Phase::Backoff;
                        return;
                    }
                    _ => Phase::Failed(Failure {
                        kind: FailureKind::Worker,
                        reason: format!("{message} (gave up after {attempts} attempts)"),
                    }),
                }
            }
            CallError::Permanent(message) | CallError::Misconfigured(message) => {
                Phase::Failed(Failure { kind: FailureKind::Worker, reason: message })
            }
            CallError::Fatal(kind, message) => Phase::Fatal(kind, message),
            CallError::Timeout(_) => unreachable!("timeouts are transient failures"),
        };
        self.conclude(i, phase);
    }

    /// Gives unit `i` its outcome: its payload is let go, its answer held until its turn.
    fn conclude(&mut self, i: usize, phase: Phase<M::Accepted>) {
        self.release(self.slots[i].held);
        let (items, bytes) = (self.slots[i].items, self.slots[i].bytes);
        self.counters.units_done += 1;
        self.counters.bytes_done += bytes;
        let mut held = UNIT_OVERHEAD;
        match &phase {
            Phase::Accepted(accepted) => {
                held += self.merge.held_bytes(accepted);
                let (done, failed) = self.merge.items(accepted);
                self.counters.items_done += done;
                self.counters.items_failed += failed;
            }
            Phase::Failed(failure) => {
                self.counters.units_failed += 1;
                self.counters.bytes_failed += bytes;
                if failure.kind == FailureKind::NotAttempted {
                    self.counters.items_not_attempted += items.unwrap_or(0);
                } else {
                    // A unit of unknown size (a source range) counts as one item.
                    self.counters.items_done += items.unwrap_or(1);
                    self.counters.items_failed += items.unwrap_or(1);
                }
            }
            Phase::Fatal(..) => {
                self.counters.units_failed += 1;
                self.counters.bytes_failed += bytes;
                self.counters.items_done += items.unwrap_or(1);
                self.counters.items_failed += items.unwrap_or(1);
            }
            _ => unreachable!("units conclude with an outcome"),
        }
        let slot = &mut self.slots[i];
        slot.payload = None;
        if self.merge.ordered() || matches!(phase, Phase::Fatal(..)) {
            slot.held = held;
            slot.phase = phase;
            self.hold(held);
            return;
        }
        slot.held = UNIT_OVERHEAD;
        slot.phase = Phase::Emitted;
        self.hold(UNIT_OVERHEAD);
        match phase {
            Phase::Accepted(accepted) => self.merge.emit(&self.slots[i].meta, accepted, &mut self.out),
            Phase::Failed(failure) => self.merge.fail(&self.slots[i].meta, &failure, &mut self.out),
            _ => unreachable!("only outcomes are written"),
        }
    }

    fn hold(&mut self, bytes: usize) {
        self.held += bytes;
        self.peak_held = self.peak_held.max(self.held);
    }

    fn release(&mut self, bytes: usize) {
        self.held -= bytes;
    }

    fn not_attempted(&self) -> Failure {
        Failure {
            kind: FailureKind::NotAttempted,
            reason: format!("the job stopped before this was done: {}", self.reason.as_deref().unwrap_or("stopped")),
        }
    }

    /// Items in the whole job, once known: said up front, or counted when the input has ended.
    fn total(&self) -> Option<u64> {
        self.expected.items.or((self.input_done && self.all_items_known).then_some(self.items_read))
    }

    /// Runs after every answer and every poll: a few comparisons, nothing built.
    fn check_tolerance(&mut self) {
        if self.status != Status::Complete {
            return;
        }
        let total = self.total();
        let failed = self.counters.items_failed;
        if let Some(why) = self.limits.tolerance.exceeded(failed, self.counters.items_done, total) {
            self.stop(Status::Stopped, why);
        }
    }

    /// Stops dispatching: running calls are cancelled, and every unit without
    /// an outcome, now or later, is accounted as not attempted.
    fn stop(&mut self, status: Status, reason: String) {
        self.status = status.clone();
        self.reason = Some(reason);
        let running: Vec<CallId> = self.calls.drain().map(|(call, _)| call).collect();
        for &call in &running {
            self.release_claims(call);
        }
        self.cancels.extend(running);
        self.queued.clear();
        self.backoff.clear();
        let failure = self.not_attempted();
        for i in 0..self.slots.len() {
            if !is_concluded(&self.slots[i].phase) {
                self.conclude(i, Phase::Failed(failure.clone()));
            } else if status == Status::Failed && matches!(self.slots[i].phase, Phase::Accepted(_)) {
                // Nothing after the unit that failed the job is written: answers already in are dropped.
                self.retract(i);
                self.conclude(i, Phase::Failed(failure.clone()));
            }
        }
    }

    /// Takes back the counts of unit `i`'s accepted answer, before it is concluded again.
    fn retract(&mut self, i: usize) {
        let Phase::Accepted(accepted) = std::mem::replace(&mut self.slots[i].phase, Phase::Queued) else {
            return;
        };
        let (done, failed) = self.merge.items(&accepted);
        self.counters.items_done -= done;
        self.counters.items_failed -= failed;
        self.counters.units_done -= 1;
        self.counters.bytes_done -= self.slots[i].bytes;
    }

    /// Writes out, in order, the units at the front that have their outcome,
    /// up to the first that writes something: each `Emit` is one unit's output.
    /// Writes out the concluded units at the front; true when one of them is to be sent again instead.
    fn emit_ready(&mut self) -> bool {
        while self.out.is_empty() && self.slots.front().is_some_and(|s| is_concluded(&s.phase)) {
            if self.redo_front() {
                return true;
            }
            let slot = self.slots.pop_front().expect("checked above");
            self.emitted += 1;
            self.release(slot.held);
            match slot.phase {
                Phase::Accepted(accepted) => self.merge.emit(&slot.meta, accepted, &mut self.out),
                Phase::Failed(failure) => self.merge.fail(&slot.meta, &failure, &mut self.out),
                Phase::Fatal(kind, reason) => {
                    // Earlier units are out; this one and every later one fail the job.
                    if self.status == Status::Complete {
                        self.stop(Status::Failed, reason.clone());
                        self.halted_by = Some(kind);
                    }
                    let failure = Failure { kind: FailureKind::Worker, reason };
                    self.merge.fail(&slot.meta, &failure, &mut self.out);
                }
                Phase::Emitted => {}
                _ => unreachable!("only concluded units are emitted"),
            }
        }
        false
    }

    /// Asks the merge whether the front unit's accepted answer stands; when
    /// not, takes the answer back and either queues the unit again with the
    /// payload the merge gives (true) or concludes it as failed (as not
    /// attempted, once the job has stopped).
    fn redo_front(&mut self) -> bool {
        let slot = self.slots.front_mut().expect("a unit is at the front");
        let Phase::Accepted(accepted) = &slot.phase else { return false };
        let turn = self.merge.turn(&mut slot.meta, accepted);
        if matches!(turn, Turn::Stands) {
            return false;
        }
        let (done, failed) = self.merge.items(accepted);
        let (held, bytes) = (slot.held, slot.bytes);
        self.counters.units_done -= 1;
        self.counters.bytes_done -= bytes;
        self.counters.items_done -= done;
        self.counters.items_failed -= failed;
        self.release(held);
        let slot = self.slots.front_mut().expect("a unit is at the front");
        slot.held = 0;
        slot.phase = Phase::Queued;
        let failure = match turn {
            Turn::Redo(payload) if self.status == Status::Complete => {
                self.counters.redone += 1;
                let held = UNIT_OVERHEAD + payload.len();
                // A new request, not a retry: it has the retry policy's attempts again.
                slot.attempts = 0;
                slot.held = held;
                slot.payload = Some(Rc::new(payload));
                self.hold(held);
                self.queued.insert(self.emitted);
                return true;
            }
            Turn::Fails(failure) if self.status == Status::Complete => failure,
            _ => self.not_attempted(),
        };
        self.conclude(0, Phase::Failed(failure));
        self.check_tolerance();
        false
    }

    /// Gives back what a call that ended claimed.
    fn release_claims(&mut self, call: CallId) {
        for (key, n) in self.claimed.remove(&call).unwrap_or_default().iter() {
            let left = self.in_use.get(key).copied().unwrap_or(0).saturating_sub(*n);
            if left == 0 {
                self.in_use.remove(key);
            } else {
                self.in_use.insert(key.clone(), left);
            }
        }
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }
}

fn is_concluded<A>(phase: &Phase<A>) -> bool {
    matches!(phase, Phase::Accepted(_) | Phase::Failed(_) | Phase::Fatal(..) | Phase::Emitted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::merge::{BatchMeta, PageMerge};
    use crate::framing::Format;

    const MS: Duration = Duration::from_millis(1);

    fn driver(concurrency: usize, window_bytes: usize) -> Driver<PageMerge> {
        let limits = Limits {
            concurrency,
            retry: RetryPolicy { max_attempts: 3, base_delay: 1000 * MS, max_delay: 10_000 * MS },
            call_timeout: 5_000 * MS,
            deadline: 60_000 * MS,
            window_bytes,
            tolerance: Tolerance::default(),
            progress_every: None,
        };
        Driver::new(PageMerge::new(Format::Json), limits, 7)
    }

    /// A batch of one URL whose request body is `payload` bytes.
    fn unit(start: u64, payload: usize) -> Unit<BatchMeta> {
        let meta = BatchMeta { start, urls: vec![format!("https://example.com/{start}")] };
        Unit { meta, payload: Rc::new(vec![b' '; payload]), items: Some(1), bytes: payload as u64 }
    }

    /// Adds units while the driver wants them (at most `most`); how many it took.
    fn feed(driver: &mut Driver<PageMerge>, next: &mut u64, most: u64, payload: usize) -> u64 {
        let first = *next;
        while driver.wants_input() && *next - first < most {
            driver.add(unit(*next, payload));
            *next += 1;
        }
        *next - first
    }

    /// The units of the calls the driver starts at `now`, until it starts no more.
    fn calls(driver: &mut Driver<PageMerge>, now: Duration) -> Vec<u64> {
        let mut seqs = Vec::new();
        while let Action::Call(call) = driver.poll(now) {
            seqs.push(call.seq);
        }
        seqs
    }

    #[test]
    fn input_is_read_and_calls_start_up_to_the_concurrency() {
        let mut d = driver(3, 1 << 20);
        let mut next = 0;
        assert_eq!(feed(&mut d, &mut next, 10, 100), 3, "as many units wait as may run");
        assert_eq!(calls(&mut d, Duration::ZERO), [0, 1, 2]);
        assert_eq!(feed(&mut d, &mut next, 10, 100), 3, "the next ones wait for a free call");
        assert_eq!(calls(&mut d, Duration::ZERO), Vec::<u64>::new());
        assert_eq!(d.report().total, None, "the total is not known while input is read");
        assert_eq!(d.report().units_total, None);
        d.end_input();
        assert_eq!((d.report().total, d.report().units_total), (Some(6), Some(6)));
        assert!(!d.wants_input(), "nothing is read after the end");
    }

    #[test]
    fn past_the_window_only_the_earliest_unit_starts() {
        // Each unit holds 256 + 200 bytes: the second fills a window of 700.
        let mut d = driver(3, 700);
        let mut next = 0;
        assert_eq!(feed(&mut d, &mut next, 10, 200), 2);
        assert_eq!(calls(&mut d, Duration::ZERO), [0], "the earliest unit runs: the others wait for it");
        d.answered(0, Err(CallError::Permanent("400".into())), Duration::ZERO);
        assert!(matches!(d.poll(Duration::ZERO), Action::Emit(_)), "its error record goes out");
        assert!(matches!(d.poll(Duration::ZERO), Action::Call(Call { seq: 1, .. })), "then the next unit's turn came");
        assert!(d.peak_held_bytes() >= 2 * 456, "peak {}", d.peak_held_bytes());
        let mut exactly_full = driver(3, 2 * 456);
        assert_eq!(feed(&mut exactly_full, &mut 0, 10, 200), 2, "a window exactly full takes no more");
    }

    /// Polls at `now` until the driver waits or is done, answering nothing; what it wrote.
    fn drain(driver: &mut Driver<PageMerge>, now: Duration) -> (Vec<u8>, Action) {
        let mut out = Vec::new();
        loop {
            match driver.poll(now) {
                Action::Emit(bytes) => out.extend(bytes),
                action => return (out, action),
            }
        }
    }

    #[test]
    fn the_total_is_unknown_while_a_unit_of_unknown_size_is_in_the_job() {
        let mut d = driver(3, 1 << 20);
        d.add(unit(0, 10));
        d.add(Unit { items: None, ..unit(1, 10) });
        d.end_input();
        assert_eq!((d.report().total, d.report().units_total), (None, Some(2)));
    }

    #[test]
    fn input_that_breaks_off_fails_the_job_and_what_was_read_still_runs() {
        let mut d = driver(3, 1 << 20);
        d.add(unit(0, 10));
        d.input_failed("connection reset".into());
        assert!(!d.wants_input());
        assert_eq!(calls(&mut d, Duration::ZERO), [0], "the unit read still runs");
        d.answered(0, Err(CallError::Permanent("400".into())), MS);
        let (out, action) = drain(&mut d, MS);
        assert!(matches!(action, Action::Done), "{action:?}");
        let answer: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(answer["results"].as_array().unwrap().len(), 1);
        assert_eq!(answer["summary"]["status"], "failed");
        assert_eq!(answer["summary"]["reason"], "the input could not be read to its end: connection reset");
    }

    /// A job waiting for input wakes at its deadline and stops; one whose last answer lands at the
    /// deadline is complete.
    #[test]
    fn the_deadline_stops_a_job_waiting_for_input_but_not_a_finished_one() {
        let mut waiting = driver(3, 1 << 20);
        assert!(matches!(waiting.poll(Duration::ZERO), Action::Wait(Some(at)) if at == 60_000 * MS));
        assert!(matches!(waiting.poll(60_000 * MS), Action::Wait(None)), "stopped: only input wakes it");
        assert_eq!(waiting.status(), Status::Stopped);
        waiting.end_input();
        let (out, _) = drain(&mut waiting, 60_000 * MS);
        let answer: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(answer["summary"]["reason"], "the job's deadline of 60000 ms passed");

        let mut done = driver(3, 1 << 20);
        done.add(unit(0, 10));
        done.end_input();
        assert_eq!(calls(&mut done, 55_000 * MS), [0]);
        let page =
            r#"{"results":[{"index":0,"url":"https://example.com/0","error":{"kind":"http_status","message":"404"}}]}"#;
        done.answered(0, Ok(page.as_bytes().to_vec()), 60_000 * MS);
        let (out, action) = drain(&mut done, 60_000 * MS);
        assert!(matches!(action, Action::Done), "{action:?}");
        let answer: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(answer["summary"]["status"], "complete", "{answer}");
    }

    /// Calls that fail at once are tried again at different times: the jitter spreads them.
    #[test]
    fn retries_at_the_same_moment_are_spread() {
        let mut d = driver(8, 1 << 20);
        let mut next = 0;
        feed(&mut d, &mut next, 8, 10);
        d.end_input();
        for seq in calls(&mut d, Duration::ZERO) {
            let error = CallError::Transient { message: "503".into(), retry_after: None };
            d.answered(seq, Err(error), Duration::ZERO);
        }
        let (mut retries, mut retried_at) = (0, BTreeSet::new());
        let mut now = Duration::ZERO;
        while retries < 8 {
            match d.poll(now) {
                Action::Call(call) => {
                    assert_eq!(call.attempt, 2);
                    assert!((500 * MS..=1000 * MS).contains(&now), "retried at {now:?}");
                    retries += 1;
                    retried_at.insert(now);
                }
                Action::Wait(Some(at)) => now = at,
                other => panic!("{other:?}"),
            }
        }
        assert!(retried_at.len() >= 6, "8 retries at {retried_at:?}");
    }

    #[test]
    fn a_threshold_is_passed_only_beyond_its_bounds() {
        let count = Tolerance { count: Some(2), percent: None };
        assert_eq!(count.exceeded(2, 10, None), None);
        assert_eq!(count.exceeded(3, 10, None).as_deref(), Some("3 items failed, more than the 2 tolerated"));
        let percent = Tolerance { count: None, percent: Some(10.0) };
        assert_eq!(percent.exceeded(1, 10, None), None, "10% of 10 items");
        assert_eq!(
            percent.exceeded(2, 10, None).as_deref(),
            Some("2 of 10 items failed (20.0%), more than the 10% tolerated")
        );
        assert_eq!(percent.exceeded(2, 10, Some(40)), None, "of every item, when their number is known");
        assert_eq!(Tolerance::default().exceeded(100, 100, None), None, "no threshold: nothing stops the job");
    }
}
