//! A tick: one bounded invocation that advances a job.
//!
//! A tick loads the plan and the state, then runs the units that are not yet
//! concluded, in order, at most `concurrency` at once, within its budget:
//!
//! 1. it claims the unit's lease (or skips the unit while another tick holds
//!    it, concluding it at once if its receipt is already there);
//! 2. it reads the stop marker, so that no unit starts after a cancel;
//! 3. it calls the worker with presigned URLs to write through, and a time
//!    limit that ends before the tick's budget;
//! 4. it reads the unit's receipt from the bucket (the worker's answer is only
//!    a signal: a lost answer loses nothing) and judges it: its accounting,
//!    and the size and MD5 of the objects it names;
//! 5. on a failed call it tries again after a backoff, renewing the lease, up
//!    to the job's attempts in all; a unit whose attempts are used up is
//!    concluded as failed once its lease (and so its worker's URLs) ran out.
//!
//! Conclusions are folded into `state.json` every few seconds and at the end
//! (compare-and-swap, merged again on a conflict); once every unit is
//! concluded the tick writes the aggregate's result and the manifest. A tick
//! that dies at any point loses only the units it held, for one lease's time.

use super::commit::{commit, write_objects, Adopt, Committed, ObjectUrls, Output, Sink, SinkUrls};
use super::layout::{Layout, Slot, Writer};
use super::lease::Lease;
use super::plan::{self, Plan, ScrapeWork, Source, TransformWork, Work};
use super::receipt::{Expect, ObjectSum, Outcome, Pages, Receipt, Tally};
use super::state::{Concluded, JobStatus, Manifest, State, Status, Stop, Stored, Totals};
use super::{bounded, retrying, JobId, StoreError};
use crate::fanout::driver::{CallError, FailureKind};
use crate::fanout::merge::TableMode;
use crate::fanout::retry::RetryPolicy;
use crate::scrape::{FailureKind as PageFailure, ItemError, Outcome as PageOutcome, PageResult, ScrapeRequest};
use crate::store::{etag_md5, Cond, Listing};
use crate::transform::output::{RowError, RowErrorKind, Stats};
use futures::future::{select, Either};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::de::DeserializeOwned;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ops::Range;
use std::pin::pin;
use std::time::Duration;

/// Time kept at the end of a tick for its last writes.
const RESERVE: Duration = Duration::from_millis(1000);
/// No call starts with less time than this left.
const MIN_CALL: Duration = Duration::from_millis(100);
/// What a call is expected to take before any was seen.
const FIRST_CALL_GUESS: Duration = Duration::from_millis(500);

/// An object read from the bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Got {
    /// Its bytes.
    pub body: Vec<u8>,
    /// Its ETag.
    pub etag: String,
}

/// An object's `HEAD`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Head {
    /// Its size.
    pub size: u64,
    /// Its ETag.
    pub etag: String,
}

/// How a conditional `PUT` ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Put {
    /// Written: the new ETag.
    Written(String),
    /// The condition did not hold (412): nothing was written.
    Conflict,
}

/// What a presigned URL allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presigned {
    /// `PUT` with `If-None-Match: *`.
    Create,
    /// `GET`.
    Read,
}

/// Which worker a unit goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerKind {
    /// `POST /transform`.
    Transform,
    /// `POST /scrape`.
    Scrape,
}

/// What a tick runs on: the bucket, the workers and the clocks. The
/// coordinator provides it over HTTP, the simulation in memory.
#[allow(async_fn_in_trait)]
pub trait JobHost {
    /// The monotonic clock: only differences mean anything.
    fn now(&self) -> Duration;
    /// The wall clock, in milliseconds since the Unix epoch: leases and deadlines.
    fn wall_ms(&self) -> u64;
    /// A random number (retry jitter).
    fn random(&self) -> u64;
    /// Waits `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
    /// Reads an object (or a byte range of it); `None` when there is none.
    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Got>, StoreError>;
    /// An object's size and ETag; `None` when there is none.
    async fn head(&self, key: &str) -> Result<Option<Head>, StoreError>;
    /// Writes an object under `cond`.
    async fn put(&self, key: &str, body: Vec<u8>, cond: Cond) -> Result<Put, StoreError>;
    /// Deletes an object (nothing when there is none).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Up to 1,000 keys under `prefix`, after `after`.
    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<Listing, StoreError>;
    /// A URL that lets a worker do `what` to `key` for `valid`.
    fn presign(&self, what: Presigned, key: &str, valid: Duration) -> String;
    /// Bytes `range` of the http(s) file at `url` (a URL list the job was given by URL):
    /// transient when trying again may help, permanent when the file is not what it was.
    async fn read_url(&self, url: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError>;
    /// Calls a worker with `payload`, within `timeout`: its answer, or why there is none.
    async fn call(&self, worker: WorkerKind, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError>;
}

/// A tick's limits, from the operator's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TickSettings {
    /// The longest the tick runs (`FANOUT_TICK_BUDGET_MS`).
    pub budget: Duration,
    /// How long a claimed unit stays the tick's (`FANOUT_LEASE_MS`).
    pub lease: Duration,
    /// The longest one worker call may take (`FANOUT_WORKER_TIMEOUT_MS`).
    pub call_timeout: Duration,
    /// Backoff between a unit's calls (its count is the job's `attempts`).
    pub retry: RetryPolicy,
    /// How often the state is written while the tick runs.
    pub flush_every: Duration,
}

/// Why a tick could not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobError {
    /// There is no such job.
    NotFound,
    /// The bucket failed.
    Store(StoreError),
    /// An object of the job is not what fanout writes.
    Corrupt(String),
    /// The deployment is misconfigured: a worker refused the coordinator (its
    /// token, its egress rules), or is not configured at all.
    Config(String),
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> JobError {
        JobError::Store(e)
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobError::NotFound => f.write_str("no such job"),
            JobError::Store(e) => e.fmt(f),
            JobError::Corrupt(m) | JobError::Config(m) => f.write_str(m),
        }
    }
}

/// Reads a JSON object of the job; `None` when there is none.
pub async fn get_json<H: JobHost, T: DeserializeOwned>(host: &H, key: &str) -> Result<Option<(T, String)>, JobError> {
    let Some(got) = retrying(|d| host.sleep(d), || host.get(key, None)).await? else { return Ok(None) };
    let value = serde_json::from_slice(&got.body).map_err(|e| JobError::Corrupt(format!("{key}: {e}")))?;
    Ok(Some((value, got.etag)))
}

/// Writes a JSON object of the job under `cond`.
pub async fn put_json<H: JobHost, T: serde::Serialize>(
    host: &H,
    key: &str,
    value: &T,
    cond: Cond,
) -> Result<Put, StoreError> {
    let body = serde_json::to_vec(value).expect("job objects serialise");
    retrying(|d| host.sleep(d), || host.put(key, body.clone(), cond.clone())).await
}

/// The status of job `id` as it stands, without advancing it.
pub async fn status<H: JobHost>(host: &H, id: &JobId) -> Result<Status, JobError> {
    let layout = Layout::new(id);
    let (plan, _) = get_json::<_, Plan>(host, &layout.plan()).await?.ok_or(JobError::NotFound)?;
    let manifest = get_json::<_, Manifest>(host, &layout.manifest()).await?.map(|(m, _)| m);
    let state = get_json::<_, State>(host, &layout.state()).await?.map(|(s, _)| s).unwrap_or_default();
    let stop = get_json::<_, Stop>(host, &layout.stop()).await?.map(|(s, _)| s);
    Ok(Status::of(&plan, &state, stop.as_ref(), manifest.as_ref(), host.wall_ms()))
}

/// Stops job `id` with `stop` (a cancel, a failure), unless it has stopped or
/// finished already: the stop marker that holds, and whether it is this one.
pub async fn stop<H: JobHost>(host: &H, id: &JobId, stop: &Stop) -> Result<(Stop, bool), JobError> {
    let layout = Layout::new(id);
    match put_json(host, &layout.stop(), stop, Cond::Create).await? {
        Put::Written(_) => Ok((stop.clone(), true)),
        Put::Conflict => {
            let (existing, _) = get_json::<_, Stop>(host, &layout.stop())
                .await?
                .ok_or_else(|| JobError::Corrupt("the stop marker exists but cannot be read".into()))?;
            Ok((existing, false))
        }
    }
}

/// Advances job `id` for at most `settings.budget`, as its owner `owner`
/// (a name unique to this tick), and answers with its status.
pub async fn tick<H: JobHost>(host: &H, id: &JobId, owner: &str, settings: &TickSettings) -> Result<Status, JobError> {
    let started = host.now();
    let layout = Layout::new(id);
    let (plan, _) = get_json::<_, Plan>(host, &layout.plan()).await?.ok_or(JobError::NotFound)?;
    if let Some((manifest, _)) = get_json::<_, Manifest>(host, &layout.manifest()).await? {
        let active = layout.active();
        retrying(|d| host.sleep(d), || host.delete(&active)).await?;
        let state = get_json::<_, State>(host, &layout.state()).await?.map(|(s, _)| s).unwrap_or_default();
        return Ok(Status::of(&plan, &state, None, Some(&manifest), host.wall_ms()));
    }
    let (base, etag) = get_json::<_, State>(host, &layout.state()).await?.unwrap_or_default();
    let stop = get_json::<_, Stop>(host, &layout.stop()).await?.map(|(s, _)| s);
    let worker_spec = match &plan.work {
        Work::Transform(w) => Some(worker_spec(w).map_err(JobError::Corrupt)?),
        Work::Scrape(_) => None,
    };
    let totals = Totals::of(&plan, &base);
    let run = Run {
        host,
        owner,
        settings,
        layout,
        deadline: started + settings.budget,
        worker_spec,
        state: RefCell::new(Loaded { base, etag }),
        fresh: RefCell::new(State::default()),
        totals: RefCell::new(totals),
        stop: RefCell::new(stop),
        slowest: Cell::new(Duration::ZERO),
        plan,
    };
    if run.stop.borrow().is_none() && host.wall_ms() > run.plan.created_ms.saturating_add(run.plan.limits.deadline_ms) {
        let reason = format!("the job's deadline of {} ms passed", run.plan.limits.deadline_ms);
        run.stop_job(JobStatus::Failed, reason).await?;
    }
    // The budget is held whatever the bucket and the workers do: past it, what is still running is
    // dropped (as if the tick had died, which loses nothing), and the last writes get the reserve.
    let end = started + settings.budget;
    if let Some(scheduled) = within(host, end.saturating_sub(RESERVE / 2), run.schedule()).await {
        scheduled?;
    }
    within(host, end, run.flush()).await.transpose()?;
    let state = run.state.borrow().base.clone();
    let mut manifest = None;
    if state.complete(&run.plan) && run.left() > Duration::ZERO {
        manifest = within(host, end, run.finalize(&state)).await.transpose()?.flatten();
    }
    let stop = run.stop.borrow().clone();
    Ok(Status::of(&run.plan, &state, stop.as_ref(), manifest.as_ref(), host.wall_ms()))
}

/// Whether unit `unit` of job `id` is one of the `percent` audited: decided by
/// the job's id and the unit (an FNV-1a hash), so that every tick agrees.
fn sampled(id: &JobId, unit: u64, percent: f64) -> bool {
    if percent <= 0.0 {
        return false;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_str().bytes().chain(unit.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h % 10_000) as f64 / 100.0 < percent
}

/// Runs `work` until `until` on the host's monotonic clock: its output, or `None` when time ran out first.
async fn within<H: JobHost, T>(host: &H, until: Duration, work: impl Future<Output = T>) -> Option<T> {
    let timer = pin!(host.sleep(until.saturating_sub(host.now())));
    match select(pin!(work), timer).await {
        Either::Left((done, _)) => Some(done),
        Either::Right(_) => None,
    }
}

/// The spec a transform job's workers run: aggregates asked for as partial state.
fn worker_spec(work: &TransformWork) -> Result<serde_json::Value, String> {
    let (_, spec) = TableMode::of_spec(&work.spec, &work.columns)?;
    Ok(serde_json::to_value(spec).expect("specs serialise"))
}

/// The state as read from the bucket, and its version.
struct Loaded {
    base: State,
    etag: String,
}

/// How one unit's turn in a tick ended.
enum UnitEnd {
    /// Concluded.
    Concluded(u64, Box<Concluded>),
    /// Not concluded in this tick: held by another, out of time, or waiting for its lease to run out.
    Left,
}

/// A claimed lease: the version written, and what it says.
#[derive(Clone)]
struct Held {
    etag: String,
    lease: Lease,
}

/// A unit's lease as a tick knows it: held by this tick (it may call), or by another.
#[derive(Clone, Copy)]
enum Holding<'h> {
    Mine(&'h Held),
    Theirs(&'h Lease),
}

impl Holding<'_> {
    fn lease(&self) -> &Lease {
        match self {
            Holding::Mine(held) => &held.lease,
            Holding::Theirs(lease) => lease,
        }
    }
}

enum Claim {
    /// The lease is this tick's; `taken_over` when another tick held it before.
    Mine { held: Held, taken_over: bool },
    /// Another tick holds it.
    Theirs(Lease),
}

/// A receipt, judged.
enum Judged {
    /// Consistent, and its objects are in place.
    Valid(Receipt),
    /// Refused, and why.
    Refused(String),
}

struct Run<'a, H: JobHost> {
    host: &'a H,
    owner: &'a str,
    settings: &'a TickSettings,
    plan: Plan,
    layout: Layout,
    deadline: Duration,
    worker_spec: Option<serde_json::Value>,
    state: RefCell<Loaded>,
    /// Units concluded in this tick and not yet written to the state.
    fresh: RefCell<State>,
    totals: RefCell<Totals>,
    stop: RefCell<Option<Stop>>,
    slowest: Cell<Duration>,
}

impl<H: JobHost> Run<'_, H> {
    fn left(&self) -> Duration {
        self.deadline.saturating_sub(self.host.now()).saturating_sub(RESERVE)
    }

    /// What a call is expected to take: the slowest answered call of this tick,
    /// or of the last tick that wrote the state (a recent figure, not the
    /// slowest ever: one hung call early on must not slow the job for good).
    fn expected_call(&self) -> Duration {
        let this_tick = self.slowest.get();
        let last_tick = Duration::from_millis(self.state.borrow().base.slowest_call_ms);
        match (this_tick.is_zero(), last_tick.is_zero()) {
            (false, _) => this_tick,
            (true, false) => last_tick,
            (true, true) => FIRST_CALL_GUESS,
        }
    }

    /// The time limit of a call made under `lease` now: what is left of the
    /// tick and of the lease (whose URLs the worker writes through), at most
    /// a worker call's limit; `None` when that is too little to start one.
    fn call_time(&self, lease: &Lease) -> Option<Duration> {
        let lease_left = Duration::from_millis(lease.until_ms.saturating_sub(self.host.wall_ms()));
        let time = self.settings.call_timeout.min(self.left()).min(lease_left);
        (time >= MIN_CALL).then_some(time)
    }

    fn concluded(&self, unit: u64) -> bool {
        self.state.borrow().base.units.contains_key(&unit) || self.fresh.borrow().units.contains_key(&unit)
    }

    /// What `unit`'s receipt must account for.
    fn expect_for(&self, unit: u64) -> Expect {
        match &self.plan.work {
            Work::Transform(w) => {
                Expect::Rows { filter: w.spec.filter.is_some(), aggregate: w.spec.aggregate.is_some() }
            }
            Work::Scrape(w) => Expect::Pages { urls: Plan::batch(w, unit).count },
        }
    }

    /// Runs units until each is concluded, held elsewhere or out of time.
    async fn schedule(&self) -> Result<(), JobError> {
        let concurrency = self.plan.limits.concurrency.max(1);
        let mut running = FuturesUnordered::new();
        let mut next = 0u64;
        let mut flush_at = self.host.now() + self.settings.flush_every;
        let mut started_any = false;
        loop {
            while running.len() < concurrency && next < self.plan.units {
                // A unit starts only if a call (or, once the job stopped, a conclusion) is expected
                // to fit in what is left. The tick's first unit always may, so that a job whose
                // calls are slower than a tick's budget still moves.
                let expected = if self.stop.borrow().is_some() { MIN_CALL } else { self.expected_call() };
                if self.left() < expected.max(MIN_CALL) && (started_any || self.left() < MIN_CALL) {
                    break;
                }
                let unit = next;
                next += 1;
                if !self.concluded(unit) {
                    started_any = true;
                    running.push(self.run_unit(unit));
                }
            }
            if running.is_empty() {
                return Ok(());
            }
            let timer = pin!(self.host.sleep(flush_at.saturating_sub(self.host.now())));
            match select(running.next(), timer).await {
                Either::Left((Some(end), _)) => {
                    if let UnitEnd::Concluded(unit, c) = end? {
                        self.record(unit, *c).await?;
                    }
                }
                Either::Left((None, _)) => return Ok(()),
                Either::Right(((), _)) => {
                    self.flush().await?;
                    flush_at = self.host.now() + self.settings.flush_every;
                }
            }
        }
    }

    /// Takes in a concluded unit, and stops the job if its failures pass the threshold.
    async fn record(&self, unit: u64, c: Concluded) -> Result<(), JobError> {
        if self.concluded(unit) {
            return Ok(());
        }
        self.totals.borrow_mut().add(&self.plan, unit, &c);
        self.fresh.borrow_mut().units.insert(unit, c);
        if self.stop.borrow().is_some() {
            return Ok(());
        }
        let (done, failed) = self.totals.borrow().items();
        if let Some(why) = self.plan.limits.tolerance().exceeded(failed, done, self.items_total()) {
            self.stop_job(JobStatus::Failed, why).await?;
        }
        Ok(())
    }

    /// The job's items, as the failure threshold counts them, when known before the end: its URLs.
    fn items_total(&self) -> Option<u64> {
        match &self.plan.work {
            Work::Scrape(w) => Some(w.urls),
            Work::Transform(_) => None,
        }
    }

    async fn stop_job(&self, status: JobStatus, reason: String) -> Result<(), JobError> {
        let marker = Stop { status, reason: bounded(&reason), at_ms: self.host.wall_ms() };
        let (holds, _) = stop(self.host, self.layout.id(), &marker).await?;
        *self.stop.borrow_mut() = Some(holds);
        Ok(())
    }

    /// Reads the stop marker: the check made right before every call.
    async fn stopped(&self) -> Result<bool, JobError> {
        if self.stop.borrow().is_some() {
            return Ok(true);
        }
        let found = get_json::<_, Stop>(self.host, &self.layout.stop()).await?.map(|(s, _)| s);
        let stopped = found.is_some();
        if found.is_some() {
            *self.stop.borrow_mut() = found;
        }
        Ok(stopped)
    }

    /// Writes the units concluded since the last write into `state.json`.
    async fn flush(&self) -> Result<(), JobError> {
        loop {
            let (merged, etag) = {
                let loaded = self.state.borrow();
                let fresh = self.fresh.borrow();
                let slowest = self.slowest.get().as_millis() as u64;
                if fresh.units.is_empty() && (slowest == 0 || slowest == loaded.base.slowest_call_ms) {
                    return Ok(());
                }
                let mut merged = loaded.base.clone();
                merged.merge(&fresh);
                if slowest > 0 {
                    merged.slowest_call_ms = slowest;
                }
                (merged, loaded.etag.clone())
            };
            match put_json(self.host, &self.layout.state(), &merged, Cond::Replace(etag)).await? {
                Put::Written(etag) => {
                    *self.state.borrow_mut() = Loaded { base: merged, etag };
                    self.fresh.borrow_mut().units.clear();
                    return Ok(());
                }
                Put::Conflict => {
                    // Another tick wrote first: take its state, and merge again.
                    let (base, etag) = get_json::<_, State>(self.host, &self.layout.state())
                        .await?
                        .ok_or_else(|| JobError::Corrupt("state.json disappeared".into()))?;
                    let mut totals = Totals::of(&self.plan, &base);
                    for (unit, c) in &self.fresh.borrow().units {
                        if !base.units.contains_key(unit) {
                            totals.add(&self.plan, *unit, c);
                        }
                    }
                    self.fresh.borrow_mut().units.retain(|unit, _| !base.units.contains_key(unit));
                    *self.totals.borrow_mut() = totals;
                    *self.state.borrow_mut() = Loaded { base, etag };
                }
            }
        }
    }

    /// One unit's turn: see the module documentation.
    async fn run_unit(&self, unit: u64) -> Result<UnitEnd, JobError> {
        let mut held = match self.claim(unit).await? {
            Claim::Theirs(lease) => {
                // Held by another tick, whose worker may have concluded it already.
                return self.conclude_from_bucket(unit, Holding::Theirs(&lease)).await;
            }
            Claim::Mine { held, taken_over: true } => {
                if let end @ UnitEnd::Concluded(..) = self.conclude_from_bucket(unit, Holding::Mine(&held)).await? {
                    return Ok(end);
                }
                if held.lease.exhausted || held.lease.calls >= self.plan.limits.attempts {
                    let reason = give_up_reason(&held.lease);
                    return self.conclude_failed(unit, FailureKind::Worker, reason, Holding::Mine(&held)).await;
                }
                match self
                    .renew(unit, &held, |l| l.renewed(self.owner, self.host.wall_ms(), self.settings.lease))
                    .await?
                {
                    Some(renewed) => renewed,
                    None => return Ok(UnitEnd::Left),
                }
            }
            Claim::Mine { held, taken_over: false } => held,
        };
        loop {
            // The lease counts the call about to be made: one that is not made is not counted.
            let uncalled = Held { lease: Lease { calls: held.lease.calls - 1, ..held.lease.clone() }, ..held.clone() };
            if self.stopped().await? {
                let reason = format!("the job stopped before this unit ran: {}", self.stop_reason());
                return self.conclude_failed(unit, FailureKind::NotAttempted, reason, Holding::Mine(&uncalled)).await;
            }
            let (kind, payload) = match self.payload(unit, Writer::Worker, &held.lease).await {
                Ok(p) => p,
                Err(UnitInputError::Store(e)) => return Err(e.into()),
                Err(UnitInputError::Changed(reason)) => {
                    self.stop_job(JobStatus::Failed, reason.clone()).await?;
                    return self.conclude_failed(unit, FailureKind::Worker, reason, Holding::Mine(&uncalled)).await;
                }
            };
            if self.stop.borrow().is_some() {
                // The job stopped while the request was being made ready.
                continue;
            }
            let Some(timeout) = self.call_time(&held.lease) else {
                // Out of time before the call: the lease gives back the call it counted, so that a unit
                // is never concluded as failed for attempts that were not made.
                self.renew(unit, &held, |_| uncalled.lease.clone()).await?;
                return Ok(UnitEnd::Left);
            };
            let started = self.host.now();
            let answer = self.host.call(kind, payload, timeout).await;
            if answer.is_ok() {
                self.slowest.set(self.slowest.get().max(self.host.now().saturating_sub(started)));
            }
            let (error, retry_after) = match answer {
                Ok(_) => match self.read_receipt(unit, Writer::Worker).await? {
                    Some(bytes) => return self.conclude_with(unit, bytes, Holding::Mine(&held)).await,
                    None => ("the worker answered without writing the unit's receipt".to_owned(), None),
                },
                Err(CallError::Timeout(limit)) => {
                    held.lease.timeouts += 1;
                    (format!("worker call timed out after {} ms", limit.as_millis()), None)
                }
                Err(CallError::Transient { message, retry_after }) => (message, retry_after),
                Err(CallError::Permanent(message)) => {
                    // The worker refused the unit without running it; it may still have concluded it.
                    if let Some(bytes) = self.read_receipt(unit, Writer::Worker).await? {
                        return self.conclude_with(unit, bytes, Holding::Mine(&held)).await;
                    }
                    return self.conclude_failed(unit, FailureKind::Worker, message, Holding::Mine(&held)).await;
                }
                Err(CallError::Fatal(_, message)) => {
                    self.stop_job(JobStatus::Failed, message.clone()).await?;
                    return self.conclude_failed(unit, FailureKind::Worker, message, Holding::Mine(&held)).await;
                }
                // The deployment's mistake, not the unit's: nothing is concluded, the tick says why.
                Err(CallError::Misconfigured(message)) => return Err(JobError::Config(message)),
            };
            held.lease.last_error = Some(bounded(&error));
            let delay = self.settings.retry.next_delay(held.lease.calls, retry_after, self.host.random());
            let room = self.left().saturating_sub(self.expected_call().max(MIN_CALL));
            match delay {
                Some(delay) if held.lease.calls < self.plan.limits.attempts && delay <= room => {
                    self.host.sleep(delay).await;
                    // A worker whose answer was lost, or came late, may have concluded the unit: then
                    // its receipt is the answer, and another call would only run the unit again.
                    if let Some(bytes) = self.read_receipt(unit, Writer::Worker).await? {
                        return self.conclude_with(unit, bytes, Holding::Mine(&held)).await;
                    }
                    match self
                        .renew(unit, &held, |l| l.renewed(self.owner, self.host.wall_ms(), self.settings.lease))
                        .await?
                    {
                        Some(renewed) => held = renewed,
                        None => return Ok(UnitEnd::Left),
                    }
                }
                _ => {
                    // Used up, or no time left: the lease records why, and runs out; whoever takes
                    // it over then concludes the unit (or calls again, if attempts are left).
                    let exhausted = held.lease.calls >= self.plan.limits.attempts;
                    self.renew(unit, &held, |l| Lease { exhausted, ..l.clone() }).await?;
                    return Ok(UnitEnd::Left);
                }
            }
        }
    }

    fn stop_reason(&self) -> String {
        self.stop.borrow().as_ref().map_or_else(String::new, |s| s.reason.clone())
    }

    /// Claims unit `unit`'s lease: creates it, or takes it over once it ran out.
    async fn claim(&self, unit: u64) -> Result<Claim, JobError> {
        let key = self.layout.lease(unit);
        let now = self.host.wall_ms();
        let first = Lease::first(self.owner, now, self.settings.lease);
        if let Some(etag) = self.write_lease(&key, &first, Cond::Create).await? {
            return Ok(Claim::Mine { held: Held { etag, lease: first }, taken_over: false });
        }
        let Some(got) = retrying(|d| self.host.sleep(d), || self.host.get(&key, None)).await? else {
            return Ok(Claim::Theirs(first));
        };
        // A lease that cannot be read is treated as run out: only ticks write leases.
        let old: Lease = serde_json::from_slice(&got.body).unwrap_or(Lease { until_ms: 0, calls: 0, ..first.clone() });
        if !old.expired(now) {
            return Ok(Claim::Theirs(old));
        }
        let mine = Lease { owner: self.owner.to_owned(), until_ms: first.until_ms, ..old };
        match self.write_lease(&key, &mine, Cond::Replace(got.etag)).await? {
            Some(etag) => Ok(Claim::Mine { held: Held { etag, lease: mine }, taken_over: true }),
            None => Ok(Claim::Theirs(mine)),
        }
    }

    /// Rewrites the lease this tick holds as `change` makes it; `None` when it is no longer this tick's.
    async fn renew(&self, unit: u64, held: &Held, change: impl Fn(&Lease) -> Lease) -> Result<Option<Held>, JobError> {
        let lease = change(&held.lease);
        let etag = self.write_lease(&self.layout.lease(unit), &lease, Cond::Replace(held.etag.clone())).await?;
        Ok(etag.map(|etag| Held { etag, lease }))
    }

    /// Writes a lease under `cond`: its new ETag, or `None` when the condition
    /// did not hold. A write whose answer was lost, and whose retry then failed
    /// its condition, is found by reading the lease back: it is this one.
    async fn write_lease(&self, key: &str, lease: &Lease, cond: Cond) -> Result<Option<String>, JobError> {
        if let Put::Written(etag) = put_json(self.host, key, lease, cond).await? {
            return Ok(Some(etag));
        }
        let got = retrying(|d| self.host.sleep(d), || self.host.get(key, None)).await?;
        Ok(got.filter(|g| serde_json::from_slice::<Lease>(&g.body).ok().as_ref() == Some(lease)).map(|g| g.etag))
    }

    async fn read_receipt(&self, unit: u64, writer: Writer) -> Result<Option<Vec<u8>>, JobError> {
        let key = self.layout.object(unit, Slot::Receipt, writer);
        Ok(retrying(|d| self.host.sleep(d), || self.host.get(&key, None)).await?.map(|g| g.body))
    }

    /// Concludes `unit` from its receipt, if there is one yet.
    async fn conclude_from_bucket(&self, unit: u64, holding: Holding<'_>) -> Result<UnitEnd, JobError> {
        match self.read_receipt(unit, Writer::Worker).await? {
            Some(bytes) => self.conclude_with(unit, bytes, holding).await,
            None => Ok(UnitEnd::Left),
        }
    }

    /// Concludes `unit` from its receipt: as the receipt says, when it holds; as
    /// failed when it is refused; after an audit, when the unit is sampled.
    async fn conclude_with(&self, unit: u64, bytes: Vec<u8>, holding: Holding<'_>) -> Result<UnitEnd, JobError> {
        let lease = holding.lease();
        match self.judge(unit, &bytes, Writer::Worker).await? {
            Judged::Valid(receipt) => {
                if receipt.outcome == Outcome::Done && self.sampled(unit) {
                    return match holding {
                        Holding::Mine(held) => self.audit(unit, receipt, held).await,
                        // The tick holding the unit audits it.
                        Holding::Theirs(_) => Ok(UnitEnd::Left),
                    };
                }
                Ok(self.concluded_by(unit, receipt, lease))
            }
            Judged::Refused(why) => {
                let reason = format!("the unit's receipt was refused: {why}");
                let lease = Lease { rejected: lease.rejected + 1, ..lease.clone() };
                self.conclude_without_receipt(unit, reason, &lease).await
            }
        }
    }

    fn concluded_by(&self, unit: u64, receipt: Receipt, lease: &Lease) -> UnitEnd {
        let writer = match receipt.outcome {
            Outcome::Done => Writer::Worker,
            Outcome::Failed { .. } => Writer::Tick,
        };
        let stored = |slot, sum: Option<ObjectSum>| {
            sum.map(|s| Stored {
                key: self.layout.object(unit, slot, writer),
                bytes: s.bytes,
                records: s.lines,
                sha256: s.sha256,
            })
        };
        UnitEnd::Concluded(
            unit,
            Box::new(Concluded {
                outcome: receipt.outcome,
                part: stored(Slot::Part, receipt.part),
                errors: stored(Slot::Errors, receipt.errors),
                tally: receipt.tally,
                calls: lease.calls,
                timeouts: lease.timeouts,
                rejected: lease.rejected,
            }),
        )
    }

    /// Checks a receipt's accounting and, by `HEAD`, the objects it names.
    async fn judge(&self, unit: u64, bytes: &[u8], writer: Writer) -> Result<Judged, JobError> {
        let receipt: Receipt = match serde_json::from_slice(bytes) {
            Ok(r) => r,
            Err(e) => return Ok(Judged::Refused(format!("it is not a receipt: {e}"))),
        };
        if let Err(why) = receipt.check(unit, self.expect_for(unit)) {
            return Ok(Judged::Refused(why));
        }
        let writer = match (&receipt.outcome, writer) {
            (Outcome::Failed { .. }, Writer::Worker) => Writer::Tick,
            (_, w) => w,
        };
        for (slot, sum) in [(Slot::Part, &receipt.part), (Slot::Errors, &receipt.errors)] {
            let Some(sum) = sum else { continue };
            let key = self.layout.object(unit, slot, writer);
            match retrying(|d| self.host.sleep(d), || self.host.head(&key)).await? {
                None => return Ok(Judged::Refused(format!("its {slot:?} object is missing"))),
                Some(head) if head.size != sum.bytes => {
                    return Ok(Judged::Refused(format!(
                        "its {slot:?} object holds {} bytes, not the {} it says",
                        head.size, sum.bytes
                    )))
                }
                Some(head) if etag_md5(&head.etag).is_some_and(|md5| md5 != sum.md5) => {
                    return Ok(Judged::Refused(format!("its {slot:?} object's MD5 is not the one it says")))
                }
                Some(_) => {}
            }
        }
        Ok(Judged::Valid(receipt))
    }

    fn sampled(&self, unit: u64) -> bool {
        sampled(self.layout.id(), unit, self.plan.limits.audit_percent)
    }

    /// Runs a sampled unit a second time, by another call, into the audit
    /// objects, and concludes it as done only when both runs agree. A failed
    /// audit fails its unit loudly: its records are not used, and its items
    /// become error records saying why.
    async fn audit(&self, unit: u64, first: Receipt, held: &Held) -> Result<UnitEnd, JobError> {
        let mut audited = held.lease.clone();
        if self.read_receipt(unit, Writer::Audit).await?.is_none() {
            if held.lease.calls > self.plan.limits.attempts {
                // Its own attempts and one for the audit are used up.
                let reason = format!("the audit run could not be made: {}", give_up_reason(&held.lease));
                return self.conclude_without_receipt(unit, reason, &held.lease).await;
            }
            if self.left() < self.expected_call().max(MIN_CALL) {
                return Ok(UnitEnd::Left);
            }
            let renewed = self.renew(unit, held, |l| l.renewed(self.owner, self.host.wall_ms(), self.settings.lease));
            let Some(renewed) = renewed.await? else { return Ok(UnitEnd::Left) };
            audited = renewed.lease.clone();
            if self.stopped().await? {
                let reason = format!("the job stopped before this unit's audit ran: {}", self.stop_reason());
                return self.conclude_without_receipt(unit, reason, &renewed.lease).await;
            }
            let (kind, payload) = match self.payload(unit, Writer::Audit, &renewed.lease).await {
                Ok(p) => p,
                Err(UnitInputError::Store(e)) => return Err(e.into()),
                Err(UnitInputError::Changed(reason)) => {
                    return self.conclude_without_receipt(unit, reason, &renewed.lease).await
                }
            };
            let Some(timeout) = self.call_time(&renewed.lease).filter(|_| self.stop.borrow().is_none()) else {
                return Ok(UnitEnd::Left);
            };
            match self.host.call(kind, payload, timeout).await {
                Ok(_) | Err(CallError::Permanent(_) | CallError::Fatal(..)) => {}
                Err(CallError::Misconfigured(message)) => return Err(JobError::Config(message)),
                // Tried again later, within the unit's attempts, by whoever holds it then.
                Err(e) => {
                    let failed = Lease { last_error: Some(bounded(&call_message(&e))), ..renewed.lease.clone() };
                    self.renew(unit, &renewed, |_| failed.clone()).await?;
                    return Ok(UnitEnd::Left);
                }
            }
        }
        let Some(bytes) = self.read_receipt(unit, Writer::Audit).await? else {
            return self.conclude_without_receipt(unit, "the audit run wrote no receipt".into(), &audited).await;
        };
        let verdict = match self.judge(unit, &bytes, Writer::Audit).await? {
            Judged::Valid(second) => first.agrees_with(&second),
            Judged::Refused(why) => Err(format!("the audit run's receipt was refused: {why}")),
        };
        match verdict {
            Ok(()) => Ok(self.concluded_by(unit, first, &audited)),
            Err(why) => {
                let rejected = Lease { rejected: audited.rejected + 1, ..audited.clone() };
                self.conclude_without_receipt(unit, format!("audit: two runs of the unit differ: {why}"), &rejected)
                    .await
            }
        }
    }

    /// Concludes `unit` as failed: its failure records and a receipt of the
    /// tick's, unless a receipt is there first (then that one decides).
    async fn conclude_failed(
        &self,
        unit: u64,
        kind: FailureKind,
        reason: String,
        holding: Holding<'_>,
    ) -> Result<UnitEnd, JobError> {
        let output = self.failure(unit, kind, &bounded(&reason)).await?;
        let sink = TickSink { run: self, unit };
        match commit(&sink, unit, output, Adopt::Existing).await {
            Ok(Committed::Ours(receipt)) => Ok(self.concluded_by(unit, receipt, holding.lease())),
            Ok(Committed::Theirs(bytes)) => self.conclude_with(unit, bytes, holding).await,
            Err(super::commit::CommitError::Store(e)) => Err(e.into()),
            Err(super::commit::CommitError::Conflict(m)) => Err(JobError::Corrupt(m)),
        }
    }

    /// Concludes as failed a unit whose receipt was refused, or whose audit
    /// failed: the receipt stays (it cannot be replaced), the failure records
    /// are written beside it, and the outcome is decided by what is in the
    /// bucket, so every tick that looks decides the same.
    async fn conclude_without_receipt(&self, unit: u64, reason: String, lease: &Lease) -> Result<UnitEnd, JobError> {
        let output = self.failure(unit, FailureKind::Worker, &bounded(&reason)).await?;
        let outcome = output.outcome.clone();
        let sink = TickSink { run: self, unit };
        let (part, errors, tally) = match write_objects(&sink, output, Adopt::Existing).await {
            Ok(written) => written,
            Err(super::commit::CommitError::Store(e)) => return Err(e.into()),
            Err(super::commit::CommitError::Conflict(m)) => return Err(JobError::Corrupt(m)),
        };
        let receipt = Receipt { unit, outcome, part, errors, tally, process_ms: 0 };
        Ok(self.concluded_by(unit, receipt, lease))
    }

    /// A failed unit's records: one error record for a byte range, one error
    /// result per URL for a batch.
    async fn failure(&self, unit: u64, kind: FailureKind, reason: &str) -> Result<Output, JobError> {
        let outcome = Outcome::Failed { kind, reason: reason.to_owned() };
        Ok(match &self.plan.work {
            Work::Transform(w) => {
                let range = Plan::range(w, unit);
                let error = range_failure(&range, kind, reason);
                let mut line = serde_json::to_vec(&error).expect("error records serialise");
                line.push(b'\n');
                Output { part: None, errors: Some(line), tally: Tally::Rows(Stats::default()), outcome, process_ms: 0 }
            }
            Work::Scrape(w) => {
                let batch = Plan::batch(w, unit);
                let urls = match self.batch_urls(w, unit).await {
                    Ok(urls) => urls,
                    Err(UnitInputError::Store(e)) => return Err(e.into()),
                    // The list cannot give the batch's URLs any more: the results name the positions.
                    Err(UnitInputError::Changed(_)) => {
                        (0..batch.count).map(|i| format!("(URL {} of the list)", batch.first + i)).collect()
                    }
                };
                let kind = match kind {
                    FailureKind::NotAttempted => PageFailure::NotAttempted,
                    FailureKind::Worker | FailureKind::TooLarge => PageFailure::Worker,
                };
                let mut part = Vec::new();
                for (i, url) in urls.into_iter().enumerate() {
                    let result = PageResult {
                        index: (batch.first as usize) + i,
                        url,
                        outcome: PageOutcome::Error(ItemError::new(kind, reason.to_owned())),
                    };
                    serde_json::to_writer(&mut part, &result).expect("results serialise");
                    part.push(b'\n');
                }
                let n = batch.count;
                Output {
                    part: Some(part),
                    errors: None,
                    tally: Tally::Pages(Pages { results: n, pages: 0, errors: n }),
                    outcome,
                    process_ms: 0,
                }
            }
        })
    }

    async fn batch_urls(&self, work: &ScrapeWork, unit: u64) -> Result<Vec<String>, UnitInputError> {
        let batch = Plan::batch(work, unit);
        let bytes = match &work.list {
            Source::Object(key) => {
                let range = Some(batch.bytes.clone()).filter(|r| !r.is_empty());
                let got = retrying(|d| self.host.sleep(d), || self.host.get(key, range.clone()))
                    .await
                    .map_err(UnitInputError::Store)?;
                got.ok_or_else(|| UnitInputError::Changed(format!("the URL list {key} is gone")))?.body
            }
            Source::Url(url) => match self.host.read_url(url, batch.bytes.clone()).await {
                Ok(bytes) => bytes,
                Err(e @ StoreError::Transient(_)) => return Err(UnitInputError::Store(e)),
                Err(StoreError::Permanent(m)) => {
                    return Err(UnitInputError::Changed(format!("the URL list {url}: {m}")))
                }
            },
        };
        plan::urls_of(&bytes, work.format, batch.count).map_err(UnitInputError::Changed)
    }

    /// The worker request for `unit`, writing as `writer`, with URLs valid while `lease` lasts.
    async fn payload(&self, unit: u64, writer: Writer, lease: &Lease) -> Result<(WorkerKind, Vec<u8>), UnitInputError> {
        let valid = Duration::from_millis(lease.until_ms.saturating_sub(self.host.wall_ms())).max(MIN_CALL);
        let urls = |slot| ObjectUrls {
            create: self.host.presign(Presigned::Create, &self.layout.object(unit, slot, writer), valid),
            read: self.host.presign(Presigned::Read, &self.layout.object(unit, slot, writer), valid),
        };
        match &self.plan.work {
            Work::Transform(w) => {
                let range = Plan::range(w, unit);
                let source = match &w.source {
                    Source::Url(url) => url.clone(),
                    Source::Object(key) => self.host.presign(Presigned::Read, key, valid),
                };
                let sink = SinkUrls {
                    unit,
                    part: urls(Slot::Part),
                    errors: Some(urls(Slot::Errors)),
                    receipt: urls(Slot::Receipt),
                    first_index: None,
                };
                let body = serde_json::json!({
                    "source": source, "start": range.start, "end": range.end, "pin": Plan::pin(w),
                    "spec": self.worker_spec, "sink": sink,
                });
                Ok((WorkerKind::Transform, serde_json::to_vec(&body).expect("requests serialise")))
            }
            Work::Scrape(w) => {
                let urls_of_batch = self.batch_urls(w, unit).await?;
                let sink = SinkUrls {
                    unit,
                    part: urls(Slot::Part),
                    errors: None,
                    receipt: urls(Slot::Receipt),
                    first_index: Some(Plan::batch(w, unit).first),
                };
                let request = ScrapeRequest { urls: urls_of_batch, sink: Some(sink), ..w.request.clone() };
                Ok((WorkerKind::Scrape, serde_json::to_vec(&request).expect("requests serialise")))
            }
        }
    }

    /// Writes the aggregate's result (if any) and the manifest, and retires the
    /// job's marker; `None` when the tick ran out of time first (the next goes on).
    async fn finalize(&self, state: &State) -> Result<Option<Manifest>, JobError> {
        let result = match &self.plan.work {
            Work::Transform(w) if w.spec.aggregate.is_some() => match self.merge_partials(w, state).await? {
                Some(result) => Some(result),
                None => return Ok(None),
            },
            _ => None,
        };
        // A cancel that came while the last units finished still holds: the answer to it said so.
        if !self.stopped().await? {
            // Ticks that concluded units at the same time each counted only the failures they knew of.
            let (done, failed) = Totals::of(&self.plan, state).items();
            if let Some(why) = self.plan.limits.tolerance().exceeded(failed, done, self.items_total()) {
                self.stop_job(JobStatus::Failed, why).await?;
            }
        }
        let stop = self.stop.borrow().clone();
        let manifest = Manifest::of(&self.plan, state, stop.as_ref(), result, self.host.wall_ms());
        let key = self.layout.manifest();
        let manifest = match put_json(self.host, &key, &manifest, Cond::Create).await? {
            Put::Written(_) => manifest,
            // Another tick finished it first (or this one did, its answer lost): the manifest there is the one.
            Put::Conflict => get_json::<_, Manifest>(self.host, &key)
                .await?
                .map(|(m, _)| m)
                .ok_or_else(|| JobError::Corrupt("manifest.json exists but cannot be read".into()))?,
        };
        let active = self.layout.active();
        retrying(|d| self.host.sleep(d), || self.host.delete(&active)).await?;
        Ok(Some(manifest))
    }

    /// Merges the partial aggregates of every done unit, in unit order, into
    /// `result.json`; `None` when the tick ran out of time first. Every
    /// [`MERGE_STEP`] units the merge so far is kept (`merge/NNNNNN.json`, the
    /// units before NNNNNN), so a job of many units is merged over several
    /// ticks without starting over.
    async fn merge_partials(&self, work: &TransformWork, state: &State) -> Result<Option<Stored>, JobError> {
        let key = self.layout.result();
        if let Some(got) = retrying(|d| self.host.sleep(d), || self.host.get(&key, None)).await? {
            return Ok(Some(stored_result(key, &got.body)));
        }
        let (mode, _) = TableMode::of_spec(&work.spec, &work.columns).map_err(JobError::Corrupt)?;
        let TableMode::Aggregate { mut groups, spec } = mode else {
            return Err(JobError::Corrupt("an aggregate job's spec has no aggregate".into()));
        };
        let prefix = format!("{}merge/", self.layout.prefix());
        let listed = retrying(|d| self.host.sleep(d), || self.host.list(&prefix, None)).await?;
        let mut from = 0;
        if let Some(last) =
            listed.keys.iter().filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json")?.parse::<u64>().ok()).max()
        {
            let kept = format!("{prefix}{last:06}.json");
            let got = retrying(|d| self.host.sleep(d), || self.host.get(&kept, None)).await?;
            if let Some(got) = got {
                groups.merge(&partial_of(&prefix, &got.body)?).map_err(JobError::Corrupt)?;
                from = last;
            }
        }
        for (&unit, c) in state.units.range(from..) {
            if self.left() < MIN_CALL {
                return Ok(None);
            }
            if unit > from && unit % MERGE_STEP == 0 {
                let body = serde_json::to_vec(&groups.to_partial()).expect("partials serialise");
                let keep = format!("{prefix}{unit:06}.json");
                retrying(|d| self.host.sleep(d), || self.host.put(&keep, body.clone(), Cond::Create)).await?;
            }
            let Some(part) = c.part.as_ref().filter(|_| c.outcome == Outcome::Done) else { continue };
            let got = retrying(|d| self.host.sleep(d), || self.host.get(&part.key, None))
                .await?
                .ok_or_else(|| JobError::Corrupt(format!("{} is gone", part.key)))?;
            groups
                .merge(&partial_of(&part.key, &got.body)?)
                .map_err(|e| JobError::Corrupt(format!("{}: {e}", part.key)))?;
        }
        let body = if spec.partial {
            serde_json::json!({ "partial": groups.to_partial() })
        } else {
            let finished = groups.finish(&spec).map_err(JobError::Corrupt)?;
            serde_json::json!({ "groups": finished })
        };
        let mut body = serde_json::to_vec(&body).expect("groups serialise");
        body.push(b'\n');
        if retrying(|d| self.host.sleep(d), || self.host.put(&key, body.clone(), Cond::Create)).await? == Put::Conflict
        {
            body = retrying(|d| self.host.sleep(d), || self.host.get(&key, None))
                .await?
                .ok_or_else(|| JobError::Corrupt("result.json exists but cannot be read".into()))?
                .body;
        }
        Ok(Some(stored_result(key, &body)))
    }
}

/// Units merged between two kept merges of an aggregate's partial states.
const MERGE_STEP: u64 = 1000;

fn partial_of(key: &str, body: &[u8]) -> Result<crate::transform::aggregate::Partial, JobError> {
    serde_json::from_slice(body).map_err(|e| JobError::Corrupt(format!("{key}: not a partial aggregate: {e}")))
}

fn stored_result(key: String, body: &[u8]) -> Stored {
    let sum = ObjectSum::of(body);
    Stored { key, bytes: sum.bytes, records: 1, sha256: sum.sha256 }
}

/// Why a unit's input could not be given to its worker.
enum UnitInputError {
    /// The bucket failed.
    Store(StoreError),
    /// The input is no longer what was planned: the job fails.
    Changed(String),
}

/// The error record of a byte range that was not processed, as the
/// coordinator writes it for a range with no worker answer.
pub fn range_failure(range: &Range<u64>, kind: FailureKind, reason: &str) -> RowError {
    RowError {
        line: 0,
        byte: Some(range.start),
        column: None,
        kind: match kind {
            FailureKind::Worker => RowErrorKind::Worker,
            FailureKind::TooLarge => RowErrorKind::TooLarge,
            FailureKind::NotAttempted => RowErrorKind::NotAttempted,
        },
        message: format!(
            "the rows starting in bytes {} to {} of the source were not processed: {reason}",
            range.start,
            range.end.saturating_sub(1)
        ),
    }
}

fn give_up_reason(lease: &Lease) -> String {
    format!(
        "gave up after {} calls: {}",
        lease.calls,
        lease.last_error.as_deref().unwrap_or("a tick holding the unit stopped before it was done")
    )
}

fn call_message(e: &CallError) -> String {
    match e {
        CallError::Transient { message, .. }
        | CallError::Permanent(message)
        | CallError::Fatal(_, message)
        | CallError::Misconfigured(message) => message.clone(),
        CallError::Timeout(limit) => format!("timed out after {} ms", limit.as_millis()),
    }
}

/// A tick's own writes of a unit's failure records, under the tick's keys.
struct TickSink<'r, 'a, H: JobHost> {
    run: &'r Run<'a, H>,
    unit: u64,
}

impl<H: JobHost> Sink for TickSink<'_, '_, H> {
    async fn create(&self, slot: Slot, body: &[u8], _: &ObjectSum) -> Result<bool, StoreError> {
        let key = self.run.layout.object(self.unit, slot, Writer::Tick);
        Ok(self.run.host.put(&key, body.to_vec(), Cond::Create).await? != Put::Conflict)
    }

    async fn read(&self, slot: Slot) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.run.layout.object(self.unit, slot, Writer::Tick);
        Ok(self.run.host.get(&key, None).await?.map(|g| g.body))
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        self.run.host.sleep(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// About the percentage asked for is audited, a different sample for each job.
    #[test]
    fn the_audit_samples_its_percentage_of_units() {
        let (a, b) = (JobId::new(1, 2), JobId::new(3, 4));
        for percent in [0.0, 5.0, 30.0, 70.0, 100.0] {
            let n = (0..2_000).filter(|&u| sampled(&a, u, percent)).count() as f64;
            assert!((n / 20.0 - percent).abs() <= 3.0, "{n} of 2,000 units audited at {percent}%");
        }
        let of = |id: &JobId| (0..200).map(|u| sampled(id, u, 50.0)).collect::<Vec<_>>();
        let same = of(&a).iter().zip(of(&b)).filter(|(x, y)| **x == *y).count();
        assert!((60..=140).contains(&same), "two jobs' samples agree on {same} of 200 units");
    }

    #[test]
    fn job_errors_say_what_went_wrong() {
        assert_eq!(JobError::NotFound.to_string(), "no such job");
        assert_eq!(JobError::Corrupt("the plan is not JSON".into()).to_string(), "the plan is not JSON");
        assert_eq!(JobError::Config("no FANOUT_S3_BUCKET".into()).to_string(), "no FANOUT_S3_BUCKET");
    }
}
