//! Deterministic simulation of durable jobs: the real tick and commit code on
//! a simulated clock, against an in-memory bucket with S3's conditional-write
//! semantics, and simulated workers that run the real transform engine.
//!
//! A seed decides everything: the job, the ticks (how many at once, when each
//! starts, its clock's skew, whether and at which step it is killed), the
//! bucket's faults (500s and 503s, answers lost after a write, slow answers),
//! the workers' faults (failures, hangs, deaths between their part and their
//! receipt, lost answers, writes after their lease ran out, lies) and a cancel.
//! After every job the invariants are checked, and a failing seed is printed:
//!
//! * every unit's objects and receipt are written at most once, and the
//!   manifest exactly once, with no receipt or listed object written after it;
//! * the manifest accounts for every unit exactly once: a done unit's part is
//!   the honest one (a lie is refused, or caught by the audit), a failed unit
//!   has its error records, and the totals are the sums;
//! * no worker call starts without a check of the stop marker since its unit's
//!   lease was last written, nor after its tick saw the marker;
//! * a job fails for its failure threshold only if its failures passed it.
//!
//! Hand-written cases on the same world check how a tick spends its budget:
//! the units it starts, the time limits it gives calls, what it keeps for the
//! next tick's estimate.

use super::commit::{commit, Adopt, Output, Sink, SinkUrls};
use super::layout::{Layout, Slot};
use super::lease::CLOCK_SKEW;
use super::plan::{Limits, ListCutter, ListFormat, Plan, ScrapeWork, Source, TransformWork, Work};
use super::receipt::{ObjectSum, Outcome, Pages, Tally};
use super::state::{Concluded, JobStatus, Manifest, State, Stop, Totals};
use super::tick::{self, Got, Head, JobHost, Presigned, Put, TickSettings, WorkerKind};
use super::{JobId, StoreError};
use crate::fanout::driver::{CallError, FailureKind, Tolerance};
use crate::fanout::retry::RetryPolicy;
use crate::scrape::ScrapeRequest;
use crate::store::{Cond, Listing};
use crate::transform::engine::{prepare, read_header, run_parts, run_to_end, Placement};
use crate::transform::range::{Cutter, Entry};
use crate::transform::spec::{self, Spec};
use fanout_testkit::rng::Rng;
use futures::future::{select, Either};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::ops::Range;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

const MS: Duration = Duration::from_millis(1);
/// The simulation's epoch on the wall clock.
const EPOCH_MS: u64 = 1_800_000_000_000;

// ---------------------------------------------------------------------------
// A single-threaded executor on a simulated clock.

type Task = (Pin<Box<dyn Future<Output = ()>>>, Rc<Cell<bool>>);

struct Ready(Mutex<VecDeque<usize>>);

struct TaskWaker {
    id: usize,
    ready: Arc<Ready>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.ready.0.lock().unwrap().push_back(self.id);
    }
}

#[derive(Default)]
struct Exec {
    now: Cell<Duration>,
    seq: Cell<u64>,
    timers: RefCell<BTreeMap<(Duration, u64), Waker>>,
    tasks: RefCell<Vec<Option<Task>>>,
    spawned: RefCell<Vec<Task>>,
    ready: Option<Arc<Ready>>,
}

impl Exec {
    fn new() -> Rc<Exec> {
        Rc::new(Exec { ready: Some(Arc::new(Ready(Mutex::new(VecDeque::new())))), ..Exec::default() })
    }

    fn now(&self) -> Duration {
        self.now.get()
    }

    /// Spawns a task; it is dropped at its next wake once `killed` is set.
    fn spawn(&self, future: impl Future<Output = ()> + 'static, killed: Rc<Cell<bool>>) {
        self.spawned.borrow_mut().push((Box::pin(future), killed));
    }

    fn sleep(self: &Rc<Self>, d: Duration) -> Sleep {
        Sleep { exec: self.clone(), at: self.now() + d, key: None }
    }

    /// Runs until `done` holds after a step, or time passes `limit`; false on the latter.
    fn run(&self, limit: Duration, done: impl Fn() -> bool) -> bool {
        let ready = self.ready.clone().expect("an executor has a ready queue");
        loop {
            for task in self.spawned.borrow_mut().drain(..) {
                let mut tasks = self.tasks.borrow_mut();
                tasks.push(Some(task));
                ready.0.lock().unwrap().push_back(tasks.len() - 1);
            }
            let next = ready.0.lock().unwrap().pop_front();
            if let Some(id) = next {
                let task = self.tasks.borrow_mut()[id].take();
                let Some((mut future, killed)) = task else { continue };
                if killed.get() {
                    continue;
                }
                let waker = Waker::from(Arc::new(TaskWaker { id, ready: ready.clone() }));
                if future.as_mut().poll(&mut Context::from_waker(&waker)).is_pending() && !killed.get() {
                    self.tasks.borrow_mut()[id] = Some((future, killed));
                }
                continue;
            }
            if done() {
                return true;
            }
            let Some(((at, _), waker)) = self.timers.borrow_mut().pop_first() else {
                panic!("the simulation stalled: nothing runs and nothing waits");
            };
            if at > limit {
                return false;
            }
            self.now.set(self.now().max(at));
            waker.wake();
        }
    }
}

struct Sleep {
    exec: Rc<Exec>,
    at: Duration,
    key: Option<(Duration, u64)>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.exec.now() >= self.at {
            return Poll::Ready(());
        }
        let seq = self.exec.seq.get();
        self.exec.seq.set(seq + 1);
        if let Some(old) = self.key.take() {
            self.exec.timers.borrow_mut().remove(&old);
        }
        let key = (self.at, seq);
        self.exec.timers.borrow_mut().insert(key, cx.waker().clone());
        self.key = Some(key);
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.exec.timers.borrow_mut().remove(&key);
        }
    }
}

// ---------------------------------------------------------------------------
// The world: a bucket, a source file, workers, and what happened.

/// No faults at all.
const CALM: Faults = Faults {
    store: 0,
    worker: 0,
    subtle_lies: false,
    refuse: false,
    lose_first_answers: false,
    unavailable: false,
    unavailable_first: false,
    unavailable_later: false,
    forge: false,
};

/// Fault rates, in percent.
#[derive(Clone, Copy, Debug)]
struct Faults {
    store: u64,
    worker: u64,
    /// Workers that lie undetectably (a record changed, the counts intact): only with a full audit.
    subtle_lies: bool,
    /// Workers that refuse every unit (400): each unit fails at its first call.
    refuse: bool,
    /// Every unit's first answer is lost, after its worker concluded it.
    lose_first_answers: bool,
    /// Workers that answer every call 503.
    unavailable: bool,
    /// Workers that answer each unit's first call 503.
    unavailable_first: bool,
    /// Workers that answer every call 503 after each unit's first.
    unavailable_later: bool,
    /// Workers that forge every receipt (sums their objects do not have).
    forge: bool,
}

#[derive(Debug)]
struct Write {
    key: String,
    at: Duration,
}

#[derive(Clone, Debug)]
struct CallLog {
    tick: String,
    unit: u64,
    at: Duration,
    /// The call's time limit.
    limit: Duration,
    /// How long it took, when the worker answered it.
    answered: Option<Duration>,
    /// When the tick stopped waiting for it (its answer, an error, its time limit); `None` when the tick died.
    ended: Option<Duration>,
    /// Whether it ran out of time.
    timed_out: bool,
}

struct World {
    exec: Rc<Exec>,
    rng: RefCell<Rng>,
    faults: Faults,
    lease: Duration,
    objects: RefCell<Objects>,
    writes: RefCell<Vec<Write>>,
    /// Reads that took effect, by key.
    reads: RefCell<HashMap<String, u32>>,
    calls: RefCell<Vec<CallLog>>,
    /// Per tick: when its stop-marker reads took effect, and whether they found one.
    stop_reads: RefCell<HashMap<String, Vec<(Duration, bool)>>>,
    /// Per tick and unit: when its lease writes took effect.
    lease_writes: RefCell<HashMap<(String, u64), Vec<Duration>>>,
    /// Per tick: its calls in flight now, and the most at once.
    in_flight: RefCell<HashMap<String, (u32, u32)>>,
    /// What a worker's call takes beyond its bucket requests and a few milliseconds, in ms.
    work_ms: Cell<u32>,
    /// Writes of `state.json` that left it as it was.
    idle_state_writes: Cell<u32>,
    /// Units whose worker answered a call.
    answered_units: RefCell<std::collections::HashSet<u64>>,
    /// Units whose worker was called.
    called_units: RefCell<std::collections::HashSet<u64>>,
    file: Vec<u8>,
    layout: Layout,
}

impl World {
    /// A bucket holding `objects`, and a source file of `file`, for the job laid out by `layout`.
    fn new(seed: u64, faults: Faults, lease: Duration, objects: Objects, file: Vec<u8>, layout: Layout) -> Rc<World> {
        Rc::new(World {
            exec: Exec::new(),
            rng: RefCell::new(Rng::new(seed)),
            faults,
            lease,
            objects: RefCell::new(objects),
            writes: RefCell::new(Vec::new()),
            reads: RefCell::new(HashMap::new()),
            calls: RefCell::new(Vec::new()),
            stop_reads: RefCell::new(HashMap::new()),
            lease_writes: RefCell::new(HashMap::new()),
            in_flight: RefCell::new(HashMap::new()),
            work_ms: Cell::new(0),
            idle_state_writes: Cell::new(0),
            answered_units: RefCell::new(std::collections::HashSet::new()),
            called_units: RefCell::new(std::collections::HashSet::new()),
            file,
            layout,
        })
    }

    fn below(&self, n: u64) -> u64 {
        self.rng.borrow_mut().below(n.max(1))
    }

    fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.exec.now().as_millis() as u64
    }

    /// A store request's delay and fault: `Err` before it takes effect, or after (a lost answer).
    async fn store_op<T>(&self, apply: impl FnOnce() -> T) -> Result<T, StoreError> {
        let roll = self.below(100);
        let slow = if roll < self.faults.store / 2 { MS * (200 + self.below(3000) as u32) } else { Duration::ZERO };
        self.exec.sleep(MS * (1 + self.below(4) as u32) + slow).await;
        if roll < self.faults.store {
            match self.below(3) {
                0 => return Err(StoreError::Transient("503 Slow Down".into())),
                1 => {
                    apply();
                    return Err(StoreError::Transient("the connection broke before the answer".into()));
                }
                _ => {}
            }
        }
        Ok(apply())
    }

    fn get(&self, key: &str, range: Option<Range<u64>>) -> Option<Got> {
        *self.reads.borrow_mut().entry(key.to_owned()).or_default() += 1;
        let objects = self.objects.borrow();
        let (body, etag) = objects.get(key)?;
        let body = match range {
            Some(r) => body[(r.start as usize).min(body.len())..(r.end as usize).min(body.len())].to_vec(),
            None => body.clone(),
        };
        Some(Got { body, etag: etag.clone() })
    }

    fn put(&self, key: &str, body: Vec<u8>, cond: &Cond) -> Put {
        let mut objects = self.objects.borrow_mut();
        let current = objects.get(key).map(|(_, e)| e.clone());
        let allowed = match (cond, &current) {
            (Cond::None, _) | (Cond::Create, None) => true,
            (Cond::Create, Some(_)) | (Cond::Replace(_), None) => false,
            (Cond::Replace(want), Some(have)) => want == have,
        };
        if !allowed {
            return Put::Conflict;
        }
        if key == self.layout.state() && objects.get(key).is_some_and(|(b, _)| *b == body) {
            self.idle_state_writes.set(self.idle_state_writes.get() + 1);
        }
        // S3's ETag of a one-part object is its MD5. Objects that are rewritten get a version number as
        // well (the ETag of a multipart upload has one), so that rewrites of equal bytes stay apart.
        let md5 = ObjectSum::of(&body).md5;
        let etag = match cond {
            Cond::Create => format!("\"{md5}\""),
            _ => format!("\"{md5}-{}\"", self.writes.borrow().len()),
        };
        objects.insert(key.to_owned(), (body, etag.clone()));
        self.writes.borrow_mut().push(Write { key: key.to_owned(), at: self.exec.now() });
        Put::Written(etag)
    }
}

// ---------------------------------------------------------------------------
// A tick's host: the world seen with a skewed clock, killed after some steps.

struct SimHost {
    world: Rc<World>,
    name: String,
    skew_ms: i64,
    steps_left: Cell<Option<u32>>,
    killed: Rc<Cell<bool>>,
}

impl SimHost {
    /// Counts a step; at the last one the tick dies, its request taking effect or not.
    async fn step(&self, apply: impl FnOnce()) {
        if let Some(left) = self.steps_left.get() {
            if left == 0 {
                if self.world.below(2) == 0 {
                    apply();
                }
                self.killed.set(true);
                std::future::pending::<()>().await;
            }
            self.steps_left.set(Some(left - 1));
        }
    }

    fn unit_of_lease(&self, key: &str) -> Option<u64> {
        key.strip_prefix(&format!("{}leases/", self.world.layout.prefix()))?.strip_suffix(".json")?.parse().ok()
    }
}

impl JobHost for SimHost {
    fn now(&self) -> Duration {
        self.world.exec.now()
    }

    fn wall_ms(&self) -> u64 {
        (self.world.wall_ms() as i64 + self.skew_ms) as u64
    }

    fn random(&self) -> u64 {
        self.world.rng.borrow_mut().next_u64()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        self.world.exec.sleep(duration)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Got>, StoreError> {
        self.step(|| {}).await;
        let got = self.world.store_op(|| self.world.get(key, range)).await;
        if std::env::var("SIMDEBUG").is_ok() {
            eprintln!("{:?} {} GET {key} -> {:?}", self.world.exec.now(), self.name, got.as_ref().map(|g| g.is_some()));
        }
        let got = got?;
        if key == self.world.layout.stop() {
            let read = (self.world.exec.now(), got.is_some());
            self.world.stop_reads.borrow_mut().entry(self.name.clone()).or_default().push(read);
        }
        Ok(got)
    }

    async fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        self.step(|| {}).await;
        let got = self.world.store_op(|| self.world.get(key, None)).await?;
        Ok(got.map(|g| Head { size: g.body.len() as u64, etag: g.etag.split('-').next().unwrap().to_owned() + "\"" }))
    }

    async fn put(&self, key: &str, body: Vec<u8>, cond: Cond) -> Result<Put, StoreError> {
        let world = self.world.clone();
        self.step(|| drop(world.put(key, body.clone(), &cond))).await;
        let lease_of = self.unit_of_lease(key);
        let put = self
            .world
            .store_op(|| {
                let put = self.world.put(key, body, &cond);
                // Recorded when it takes effect, whether or not its answer is lost.
                if let (Put::Written(_), Some(unit)) = (&put, lease_of) {
                    let at = self.world.exec.now();
                    self.world.lease_writes.borrow_mut().entry((self.name.clone(), unit)).or_default().push(at);
                }
                put
            })
            .await;
        if std::env::var("SIMDEBUG").is_ok() {
            eprintln!("{:?} {} PUT {key} {cond:?} -> {put:?}", self.world.exec.now(), self.name);
        }
        put
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.step(|| {}).await;
        self.world.store_op(|| drop(self.world.objects.borrow_mut().remove(key))).await
    }

    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<Listing, StoreError> {
        self.step(|| {}).await;
        self.world
            .store_op(|| {
                let objects = self.world.objects.borrow();
                let keys: Vec<String> = objects
                    .keys()
                    .filter(|k| k.starts_with(prefix) && after.is_none_or(|a| k.as_str() > a))
                    .take(1000)
                    .cloned()
                    .collect();
                Listing { truncated: keys.len() == 1000, keys }
            })
            .await
    }

    fn presign(&self, what: Presigned, key: &str, valid: Duration) -> String {
        // The store checks expiry on its own clock: a skewed signer's URL lives shorter or longer.
        let until = (self.world.wall_ms() as i64 + valid.as_millis() as i64) as u64;
        format!("sim:{}:{until}:{key}", if what == Presigned::Create { "create" } else { "read" })
    }

    async fn read_url(&self, _: &str, _: Range<u64>) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::Permanent("the simulation keeps URL lists in the bucket".into()))
    }

    async fn call(&self, worker: WorkerKind, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError> {
        self.step(|| {}).await;
        let unit = serde_json::from_slice::<Value>(&payload).unwrap()["sink"]["unit"].as_u64().unwrap();
        if std::env::var("SIMDEBUG").is_ok() {
            eprintln!("{:?} {} CALL {unit}", self.world.exec.now(), self.name);
        }
        let at = self.world.exec.now();
        let log = CallLog {
            tick: self.name.clone(),
            unit,
            at,
            limit: timeout,
            answered: None,
            ended: None,
            timed_out: false,
        };
        let call = {
            let mut calls = self.world.calls.borrow_mut();
            calls.push(log);
            calls.len() - 1
        };
        let _in_flight = InFlight::new(&self.world, &self.name);
        let (tx, rx) = futures::channel::oneshot::channel();
        let world = self.world.clone();
        self.world.exec.spawn(
            async move {
                let answer = run_worker(&world, worker, payload).await;
                let _ = tx.send(answer);
            },
            Rc::new(Cell::new(false)),
        );
        let answer = match select(rx, pin!(self.world.exec.sleep(timeout))).await {
            Either::Left((Ok(answer), _)) => answer,
            Either::Left((Err(_), _)) => Err(CallError::Transient { message: "reset".into(), retry_after: None }),
            Either::Right(_) => Err(CallError::Timeout(timeout)),
        };
        let now = self.world.exec.now();
        let mut calls = self.world.calls.borrow_mut();
        calls[call].ended = Some(now);
        calls[call].answered = answer.is_ok().then(|| now - at);
        calls[call].timed_out = matches!(answer, Err(CallError::Timeout(_)));
        answer
    }
}

/// A call a tick is waiting for, counted while it waits (a killed tick's calls end with it).
struct InFlight<'a> {
    world: &'a World,
    tick: String,
}

impl<'a> InFlight<'a> {
    fn new(world: &'a World, tick: &str) -> InFlight<'a> {
        let mut counts = world.in_flight.borrow_mut();
        let (now, most) = counts.entry(tick.to_owned()).or_default();
        *now += 1;
        *most = (*most).max(*now);
        InFlight { world, tick: tick.to_owned() }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.world.in_flight.borrow_mut().get_mut(&self.tick).expect("counted when made").0 -= 1;
    }
}

// ---------------------------------------------------------------------------
// Workers: the real engine and the real commit, with faults.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WorkerFault {
    Honest,
    /// 503 without doing anything.
    Unavailable,
    /// Never answers.
    Hang,
    /// Writes its part, then dies.
    DieAfterPart,
    /// Concludes the unit, but its answer is lost.
    LostAnswer,
    /// Takes longer than its lease before writing: its URLs have run out.
    Slow,
    /// Drops a record and counts it as filtered.
    Lie,
    /// Changes a record, counts intact: only an audit can tell.
    SubtleLie,
    /// Writes a receipt that claims a part larger than the one it wrote.
    Forge,
}

fn pick_fault(world: &World) -> WorkerFault {
    if world.faults.forge {
        return WorkerFault::Forge;
    }
    if world.below(100) >= world.faults.worker {
        return WorkerFault::Honest;
    }
    match world.below(8) {
        0 => WorkerFault::Unavailable,
        1 => WorkerFault::Hang,
        2 => WorkerFault::DieAfterPart,
        3 => WorkerFault::LostAnswer,
        4 => WorkerFault::Slow,
        5 => WorkerFault::Lie,
        6 if world.faults.subtle_lies => WorkerFault::SubtleLie,
        7 => WorkerFault::Forge,
        _ => WorkerFault::Honest,
    }
}

/// Writes through presigned URLs, as a worker does.
struct SimSink<'w> {
    world: &'w World,
    urls: SinkUrls,
    /// Writes to make before the worker dies.
    writes_left: Cell<Option<u32>>,
}

impl SimSink<'_> {
    fn target(&self, slot: Slot, create: bool) -> String {
        let urls = match slot {
            Slot::Part => &self.urls.part,
            Slot::Errors => self.urls.errors.as_ref().expect("a transform unit has errors URLs"),
            Slot::Receipt => &self.urls.receipt,
        };
        if create {
            urls.create.clone()
        } else {
            urls.read.clone()
        }
    }

    fn open(&self, url: &str) -> Result<String, StoreError> {
        let mut parts = url.splitn(4, ':');
        let (_, _, until, key) = (parts.next(), parts.next(), parts.next().unwrap(), parts.next().unwrap());
        if self.world.wall_ms() > until.parse::<u64>().unwrap() {
            return Err(StoreError::Permanent("403 Request has expired".into()));
        }
        Ok(key.to_owned())
    }
}

impl Sink for SimSink<'_> {
    async fn create(&self, slot: Slot, body: &[u8], sum: &ObjectSum) -> Result<bool, StoreError> {
        if let Some(left) = self.writes_left.get() {
            if left == 0 {
                std::future::pending::<()>().await;
            }
            self.writes_left.set(Some(left - 1));
        }
        assert_eq!(&ObjectSum::of(body), sum, "Content-MD5 would refuse it");
        let world = self.world;
        let url = self.target(slot, true);
        world
            .store_op(|| self.open(&url).map(|key| world.put(&key, body.to_vec(), &Cond::Create) == Put::Conflict))
            .await?
            .map(|c| !c)
    }

    async fn read(&self, slot: Slot) -> Result<Option<Vec<u8>>, StoreError> {
        let url = self.target(slot, false);
        self.world.store_op(|| self.open(&url).map(|key| self.world.get(&key, None).map(|g| g.body))).await?
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        self.world.exec.sleep(duration)
    }
}

async fn run_worker(world: &World, kind: WorkerKind, payload: Vec<u8>) -> Result<Vec<u8>, CallError> {
    let fault = pick_fault(world);
    world.exec.sleep(MS * (1 + world.below(30) as u32 + world.work_ms.get())).await;
    if world.faults.refuse {
        return Err(CallError::Permanent("worker answered 400: refused".into()));
    }
    let request: Value = serde_json::from_slice(&payload).unwrap();
    let urls: SinkUrls = serde_json::from_value(request["sink"].clone()).unwrap();
    let first_call = world.called_units.borrow_mut().insert(urls.unit);
    let unavailable = match first_call {
        true => world.faults.unavailable_first,
        false => world.faults.unavailable_later,
    };
    if world.faults.unavailable || unavailable {
        return Err(CallError::Transient { message: "worker answered 503".into(), retry_after: None });
    }
    match fault {
        WorkerFault::Unavailable => {
            return Err(CallError::Transient { message: "worker answered 503".into(), retry_after: None })
        }
        WorkerFault::Hang => std::future::pending::<()>().await,
        WorkerFault::Slow => world.exec.sleep(world.lease + CLOCK_SKEW + MS * 500).await,
        _ => {}
    }
    let (mut output, first) = match kind {
        WorkerKind::Transform => (transform_unit(world, &request), None),
        WorkerKind::Scrape => {
            let urls_of: Vec<String> = serde_json::from_value(request["urls"].clone()).unwrap();
            let first = urls.first_index.unwrap();
            (scrape_unit(world, first, &urls_of), Some((first, urls_of)))
        }
    };
    match (fault, &mut output.tally) {
        (WorkerFault::Lie, Tally::Rows(s)) if s.rows_out > 0 && request["spec"]["aggregate"].is_null() => {
            // A record dropped: counted as filtered where the spec has no filter, else not counted at all.
            let part = output.part.as_mut().unwrap();
            let cut = part.iter().position(|&b| b == b'\n').unwrap() + 1;
            part.drain(..cut);
            if request["spec"]["filter"].is_null() {
                s.rows_out -= 1;
                s.rows_filtered += 1;
            }
        }
        (WorkerFault::SubtleLie, Tally::Rows(s)) if s.rows_out > 0 => {
            // A made-up field in the first record; liars are independent, so two runs lie differently.
            let lie = format!("{{\"made_up\":{},", world.below(1_000_000_000));
            output.part.as_mut().unwrap().splice(0..1, lie.into_bytes());
        }
        _ => {}
    }
    let sink = SimSink {
        world,
        urls: urls.clone(),
        writes_left: Cell::new((fault == WorkerFault::DieAfterPart).then_some(1)),
    };
    let derive = |part: &[u8]| -> Result<Tally, String> {
        let (first, urls) = first.as_ref().unwrap();
        Pages::of_part(part, *first, urls).map(Tally::Pages)
    };
    let adopt = match kind {
        WorkerKind::Transform => Adopt::Same,
        WorkerKind::Scrape => Adopt::Derive(&derive),
    };
    if fault == WorkerFault::Forge {
        // Its own receipt, naming sums its objects do not have (the accounting itself consistent).
        let part = output.part.clone().unwrap();
        let mut sum = ObjectSum::of(&part);
        let _ = sink.create(Slot::Part, &part, &sum).await;
        if let Some(errors) = &output.errors {
            let _ = sink.create(Slot::Errors, errors, &ObjectSum::of(errors)).await;
        }
        if part.is_empty() || world.below(2) == 0 {
            sum.bytes += 1;
        } else {
            let mut other = part.clone();
            other[0] ^= 1;
            sum = ObjectSum::of(&other);
        }
        let receipt = super::receipt::Receipt {
            unit: urls.unit,
            outcome: Outcome::Done,
            part: Some(sum),
            errors: output.errors.as_deref().map(ObjectSum::of),
            tally: output.tally,
            process_ms: 0,
        };
        let body = serde_json::to_vec(&receipt).unwrap();
        let _ = sink.create(Slot::Receipt, &body, &ObjectSum::of(&body)).await;
        return Ok(body);
    }
    let first_answer = world.answered_units.borrow_mut().insert(urls.unit);
    match commit(&sink, urls.unit, output, adopt).await {
        Ok(_) if fault == WorkerFault::LostAnswer || (world.faults.lose_first_answers && first_answer) => {
            Err(CallError::Transient { message: "the answer was lost".into(), retry_after: None })
        }
        Ok(committed) => Ok(committed.into_bytes()),
        Err(e) => Err(CallError::Transient { message: format!("worker answered 500: {e}"), retry_after: None }),
    }
}

/// The honest output of a transform unit: the records starting in its byte range.
fn transform_unit(world: &World, request: &Value) -> Output {
    let spec: Spec = serde_json::from_value(request["spec"].clone()).unwrap();
    let (start, end) = (request["start"].as_u64().unwrap(), request["end"].as_u64().unwrap());
    let parts = honest_parts(&world.file, &spec, start, end);
    let errors = (!parts.errors.is_empty()).then_some(parts.errors);
    Output { part: Some(parts.part), errors, tally: Tally::Rows(parts.stats), outcome: Outcome::Done, process_ms: 1 }
}

fn honest_parts(file: &[u8], spec: &Spec, start: u64, end: u64) -> crate::transform::engine::Parts {
    let header = read_header(&spec.dialect, file).unwrap();
    let program = prepare(spec, &header.names).unwrap();
    let data_start = header.data_start as u64;
    let owned = Cutter::new(start, end, data_start, Entry::Guess, b'"', b',', usize::MAX).over(file);
    let line_offset = if owned.span.begin == data_start { header.lines } else { 0 };
    let placement = Placement { line_offset, range: Some(owned.span), one_line_records: true };
    run_parts(spec, &program, &owned.records, placement).unwrap()
}

/// A scrape unit's results: some pages, some errors, each with a nonce, so two runs differ.
fn scrape_unit(world: &World, first: u64, urls: &[String]) -> Output {
    let mut part = Vec::new();
    let mut pages = Pages::default();
    for (i, url) in urls.iter().enumerate() {
        let index = first + i as u64;
        let nonce = world.below(1_000_000);
        let line = if index % 5 == 3 {
            pages.errors += 1;
            serde_json::json!({"index": index, "url": url, "error": {"kind": "http_status", "message": "404", "nonce": nonce}})
        } else {
            pages.pages += 1;
            serde_json::json!({"index": index, "url": url, "page": {"title": format!("Page {index}"), "fetch_ms": nonce}})
        };
        serde_json::to_writer(&mut part, &line).unwrap();
        part.push(b'\n');
        pages.results += 1;
    }
    Output { part: Some(part), errors: None, tally: Tally::Pages(pages), outcome: Outcome::Done, process_ms: 1 }
}

// ---------------------------------------------------------------------------
// Jobs, ticks, and the invariants.

fn csv_file(rng: &mut Rng, rows: u64) -> Vec<u8> {
    let mut csv = b"id,amount,region\n".to_vec();
    for id in 0..rows {
        match rng.below(10) {
            0 => csv.extend_from_slice(format!("{id},oops,north\n").as_bytes()),
            1 => csv.extend_from_slice(format!("{id}\n").as_bytes()),
            _ => csv.extend_from_slice(
                format!(
                    "{id},{}.{:02},{}\n",
                    rng.below(500),
                    rng.below(100),
                    ["north", "south"][rng.below(2) as usize]
                )
                .as_bytes(),
            ),
        }
    }
    csv
}

struct Scenario {
    plan: Plan,
    settings: TickSettings,
    ticks_at_once: u64,
    tick_gap_ms: u64,
    kill_rate: u64,
    max_kill_step: u64,
    cancel_at: Option<Duration>,
}

/// The bucket's objects: bytes and ETag by key.
type Objects = BTreeMap<String, (Vec<u8>, String)>;

fn scenario(seed: u64, rng: &mut Rng) -> (Scenario, Vec<u8>, Objects) {
    let id = JobId::new(seed, rng.next_u64());
    let layout = Layout::new(&id);
    let mut objects = BTreeMap::new();
    let mut file = Vec::new();
    let tolerance = rng.below(6);
    let limits = Limits {
        concurrency: 1 + rng.below(4) as usize,
        attempts: 1 + rng.below(4) as u32,
        deadline_ms: if rng.below(8) == 0 { 2_000 + rng.below(20_000) } else { 3_600_000 },
        tolerated_failures: (tolerance == 0).then(|| rng.below(10)),
        tolerated_failure_percent: (tolerance == 1).then(|| rng.below(30) as f64),
        audit_percent: 0.0,
    };
    let (work, units) = if rng.below(10) < 7 {
        let rows = rng.below(150);
        file = csv_file(rng, rows);
        let spec_text = match rng.below(4) {
            0 => r#"{"columns": ["id", {"from": "amount", "type": "float"}, "region"]}"#,
            1 => {
                r#"{"columns": ["id", {"from": "amount", "type": "float"}], "filter": {"column": "amount", "op": ">", "value": 100}}"#
            }
            2 => {
                r#"{"columns": ["region", {"from": "amount", "type": "float"}], "aggregate": {"group_by": ["region"], "metrics": [{"op": "count"}, {"name": "total", "op": "sum", "column": "amount"}]}}"#
            }
            _ => "{}",
        };
        let spec = spec::parse(spec_text.as_bytes()).unwrap();
        let chunk = 16 + rng.below(400);
        let size = file.len() as u64;
        let units = size.div_ceil(chunk);
        let columns = read_header(&spec.dialect, &file).unwrap().names;
        (
            Work::Transform(TransformWork {
                source: Source::Url("sim://file".into()),
                size,
                etag: None,
                last_modified: None,
                chunk_bytes: chunk,
                spec,
                columns,
            }),
            units,
        )
    } else {
        let n = rng.below(60);
        let batch = 1 + rng.below(7);
        // Batches of up to `batch` URLs, and of about three URLs' bytes, so both cuts happen.
        let (work, units) = scrape_work(&layout, n, batch, 100, &mut objects);
        (Work::Scrape(work), units)
    };
    let plan = Plan { id, created_ms: EPOCH_MS, units, limits, work };
    let settings = TickSettings {
        budget: MS * (2_000 + rng.below(20_000) as u32),
        lease: MS * (1_000 + rng.below(8_000) as u32),
        call_timeout: MS * (100 + rng.below(3_000) as u32),
        // The deployment's attempts (FANOUT_WORKER_ATTEMPTS) bound the retry policy; a job may ask for fewer.
        retry: RetryPolicy {
            max_attempts: plan.limits.attempts + rng.below(3) as u32,
            base_delay: MS * 20,
            max_delay: MS * 500,
        },
        flush_every: MS * (100 + rng.below(2_000) as u32),
    };
    objects.insert(layout.plan(), (serde_json::to_vec(&plan).unwrap(), "\"p\"".into()));
    objects.insert(layout.state(), (serde_json::to_vec(&State::default()).unwrap(), "\"s0\"".into()));
    objects.insert(layout.active(), (Vec::new(), "\"a\"".into()));
    let s = Scenario {
        plan,
        settings,
        ticks_at_once: 1 + rng.below(3),
        tick_gap_ms: rng.below(3_000),
        kill_rate: [0, 20, 50][rng.below(3) as usize],
        max_kill_step: 1 + rng.below(60),
        cancel_at: (rng.below(6) == 0).then(|| MS * rng.below(20_000) as u32),
    };
    (s, file, objects)
}

/// A scrape of `n` URLs in batches of up to `batch` URLs and about `batch_bytes` bytes, its list in
/// `objects`: the work, and its units.
fn scrape_work(layout: &Layout, n: u64, batch: u64, batch_bytes: usize, objects: &mut Objects) -> (ScrapeWork, u64) {
    let mut list = Vec::new();
    for i in 0..n {
        list.extend_from_slice(
            serde_json::to_string(&format!("https://site{}.example/{i}", i % 3)).unwrap().as_bytes(),
        );
        list.push(b'\n');
    }
    let mut cutter = ListCutter::new(ListFormat::JsonLines, batch, batch_bytes, u64::MAX);
    cutter.push(&list).unwrap();
    let cut = cutter.finish().unwrap();
    objects.insert(layout.urls(), (list, "\"list\"".into()));
    let units = cut.offsets.len() as u64 - 1;
    let work = ScrapeWork {
        list: Source::Object(layout.urls()),
        format: ListFormat::JsonLines,
        offsets: cut.offsets,
        firsts: cut.firsts,
        urls: cut.urls,
        request: ScrapeRequest::default(),
    };
    (work, units)
}

/// How a job is run besides its faults.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As its seed says.
    Seeded,
    /// Every unit audited.
    Audited,
    /// No tick killed, no cancel, no deadline: with no faults either, nothing may fail.
    Calm,
    /// Calm, and every unit audited.
    CalmAudited,
}

/// Runs one job to its manifest; panics with the seed when an invariant breaks.
fn run_job(seed: u64, faults: Faults, mode: Mode) {
    let mut rng = Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).max(1));
    let (mut s, file, objects) = scenario(seed, &mut rng);
    // Only transform jobs are audited: two fetches of a page may differ.
    let audit = matches!(mode, Mode::Audited | Mode::CalmAudited) && matches!(s.plan.work, Work::Transform(_));
    if audit {
        s.plan.limits.audit_percent = 100.0;
    }
    if matches!(mode, Mode::Calm | Mode::CalmAudited) {
        (s.kill_rate, s.cancel_at, s.plan.limits.deadline_ms) = (0, None, 3_600_000);
    }
    let layout = Layout::new(&s.plan.id);
    let mut objects = objects;
    objects.insert(layout.plan(), (serde_json::to_vec(&s.plan).unwrap(), "\"p\"".into()));
    let world = World::new(rng.next_u64(), faults, s.settings.lease, objects, file, layout.clone());
    let exec = world.exec.clone();
    let cancelled_at: Rc<Cell<Option<Duration>>> = Rc::new(Cell::new(None));
    if let Some(at) = s.cancel_at {
        let (world, cancelled_at, id) = (world.clone(), cancelled_at.clone(), s.plan.id.clone());
        exec.clone().spawn(
            async move {
                world.exec.sleep(at).await;
                let host = sim_host(&world, "canceller".into(), 0, None);
                let marker = Stop { status: JobStatus::Cancelled, reason: "asked".into(), at_ms: world.wall_ms() };
                if let Ok((_, true)) = tick::stop(&host, &id, &marker).await {
                    let written =
                        world.writes.borrow().iter().rev().find(|w| w.key == world.layout.stop()).map(|w| w.at);
                    cancelled_at.set(written);
                }
            },
            Rc::new(Cell::new(false)),
        );
    }
    // The driver: ticks, `ticks_at_once` at a time, started `tick_gap_ms` apart, some killed.
    let manifest_key = layout.manifest();
    let finished = {
        let world = world.clone();
        let key = manifest_key.clone();
        move || world.objects.borrow().contains_key(&key)
    };
    let running = Rc::new(Cell::new(0u64));
    {
        let (world, settings, running, id) = (world.clone(), s.settings.clone(), running.clone(), s.plan.id.clone());
        let (at_once, gap, kill_rate, max_kill) = (s.ticks_at_once, s.tick_gap_ms, s.kill_rate, s.max_kill_step);
        let finished = finished.clone();
        exec.clone().spawn(
            async move {
                let mut n = 0;
                while !finished() {
                    if running.get() < at_once {
                        n += 1;
                        let killed = Rc::new(Cell::new(false));
                        let kill = (world.below(100) < kill_rate).then(|| world.below(max_kill) as u32);
                        let skew = world.below(4_001) as i64 - 2_000;
                        let mut host = sim_host(&world, format!("tick{n}"), skew, kill);
                        host.killed = killed.clone();
                        let (settings, running2, id) = (settings.clone(), running.clone(), id.clone());
                        running.set(running.get() + 1);
                        world.exec.spawn(
                            async move {
                                let name = host.name.clone();
                                // A tick that fails (the bucket failing for good) is simply sent again.
                                let _ = tick::tick(&host, &id, &name, &settings).await;
                                running2.set(running2.get() - 1);
                            },
                            killed.clone(),
                        );
                        // A killed tick's slot frees when it dies.
                        let (running3, watch, w) = (running.clone(), killed, world.clone());
                        world.exec.spawn(
                            async move {
                                while !watch.get() {
                                    w.exec.sleep(MS * 50).await;
                                    if w.objects.borrow().contains_key(&w.layout.manifest()) {
                                        return;
                                    }
                                }
                                running3.set(running3.get() - 1);
                            },
                            Rc::new(Cell::new(false)),
                        );
                    }
                    world.exec.sleep(MS * (1 + gap as u32)).await;
                }
            },
            Rc::new(Cell::new(false)),
        );
    }
    let limit = Duration::from_secs(6 * 3600);
    assert!(exec.run(limit, &finished), "seed {seed}: the job did not finish in {limit:?} of simulated time");
    check(seed, &s, &world, cancelled_at.get(), audit);
}

fn sim_host(world: &Rc<World>, name: String, skew_ms: i64, kill: Option<u32>) -> SimHost {
    SimHost { world: world.clone(), name, skew_ms, steps_left: Cell::new(kill), killed: Rc::new(Cell::new(false)) }
}

fn check(seed: u64, s: &Scenario, world: &World, cancelled_at: Option<Duration>, audit: bool) {
    let layout = &world.layout;
    let objects = world.objects.borrow();
    let writes = world.writes.borrow();
    let manifest: Manifest = serde_json::from_slice(&objects[&layout.manifest()].0).unwrap();
    // Written once, and last among the unit records.
    let manifest_writes: Vec<&Write> = writes.iter().filter(|w| w.key == layout.manifest()).collect();
    assert_eq!(manifest_writes.len(), 1, "seed {seed}: the manifest was written {} times", manifest_writes.len());
    let at = manifest_writes[0].at;
    let listed: Vec<&str> =
        manifest.parts.iter().chain(&manifest.errors).chain(&manifest.result).map(|p| p.key.as_str()).collect();
    for w in writes.iter().filter(|w| w.at > at) {
        let receipt = w.key.starts_with(&format!("{}receipts/", layout.prefix()));
        assert!(!receipt && !listed.contains(&w.key.as_str()), "seed {seed}: {} was written after the manifest", w.key);
    }
    let mut per_key: HashMap<&str, u32> = HashMap::new();
    for w in writes.iter() {
        *per_key.entry(w.key.as_str()).or_default() += 1;
    }
    for (key, n) in per_key {
        let once =
            ["parts/", "errors/", "receipts/", "audit/", "result.json", "stop.json"].iter().any(|p| key.contains(p));
        assert!(!once || n == 1, "seed {seed}: {key} was written {n} times");
    }
    // Every listed object is there, as listed.
    for p in manifest.parts.iter().chain(&manifest.errors).chain(&manifest.result) {
        let body = &objects.get(&p.key).unwrap_or_else(|| panic!("seed {seed}: {} is missing", p.key)).0;
        let sum = ObjectSum::of(body);
        assert_eq!((sum.bytes, sum.lines, &sum.sha256), (p.bytes, p.records, &p.sha256), "seed {seed}: {}", p.key);
    }
    let state: State = serde_json::from_slice(&objects[&layout.state()].0).unwrap();
    assert_eq!(state.units.len() as u64, s.plan.units, "seed {seed}: every unit is concluded once");
    // A unit's calls, whichever tick made them: no more than its attempts (the lease counts each before it
    // is made), and never two at once (a lease is taken over only after the last call's time is up).
    let calls = world.calls.borrow();
    let mut per_unit: BTreeMap<u64, Vec<&CallLog>> = BTreeMap::new();
    for call in calls.iter() {
        per_unit.entry(call.unit).or_default().push(call);
    }
    for (unit, calls) in &per_unit {
        let attempts = s.plan.limits.attempts as usize + usize::from(audit);
        assert!(calls.len() <= attempts, "seed {seed}: unit {unit} was called {} times", calls.len());
        // With no tick killed, the state counts every call (before it is made) and every time-out; a slow
        // bucket can hold a tick past its budget between counting a call and making it, or between a
        // time-out and writing it down.
        let c = &state.units[unit];
        if s.kill_rate == 0 && s.ticks_at_once == 1 && !audit {
            let n = calls.len() as u32;
            let timeouts = calls.iter().filter(|c| c.timed_out).count() as u32;
            let counted = match world.faults.store {
                0 => c.calls == n && c.timeouts == timeouts,
                _ => c.calls >= n && c.timeouts <= timeouts,
            };
            assert!(counted, "seed {seed}: unit {unit} counts {c:?} of {calls:?}");
        }
        if s.kill_rate == 0
            && world.faults.worker == 0
            && world.faults.store == 0
            && !objects.contains_key(&layout.stop())
        {
            let once = 1 + usize::from(audit);
            assert_eq!((calls.len(), &c.outcome), (once, &Outcome::Done), "seed {seed}: unit {unit}");
        }
        for pair in calls.windows(2) {
            let end = pair[0].ended.unwrap_or(pair[0].at + pair[0].limit);
            assert!(
                pair[1].at >= end,
                "seed {seed}: unit {unit} was called by {} while {}'s call ran",
                pair[1].tick,
                pair[0].tick
            );
        }
    }
    for (tick, &(_, most)) in world.in_flight.borrow().iter() {
        let limit = s.plan.limits.concurrency;
        assert!(most as usize <= limit, "seed {seed}: {tick} had {most} calls at once, over the job's {limit}");
    }
    let stop: Option<Stop> = objects.get(&layout.stop()).map(|(b, _)| serde_json::from_slice(b).unwrap());
    // A unit not attempted says why: the stop marker's reason.
    for (unit, c) in &state.units {
        if let Outcome::Failed { kind: FailureKind::NotAttempted, reason } = &c.outcome {
            let why =
                &stop.as_ref().unwrap_or_else(|| panic!("seed {seed}: unit {unit} not attempted, no stop")).reason;
            assert!(reason.ends_with(why.as_str()), "seed {seed}: unit {unit}: {reason:?}, not {why:?}");
        }
    }
    // A cancel that lands after every look at the stop marker before the manifest was written
    // (every unit concluded by then) comes too late to stop anything: the job succeeded.
    let stop_at = writes.iter().find(|w| w.key == layout.stop()).map(|w| w.at);
    let last_look = world.stop_reads.borrow().values().flatten().map(|&(t, _)| t).filter(|&t| t <= at).max();
    let too_late = stop.as_ref().is_some_and(|s| s.status == JobStatus::Cancelled) && stop_at > last_look;
    if too_late && manifest.status == JobStatus::Succeeded {
        let stopped = state
            .units
            .values()
            .any(|c| matches!(&c.outcome, Outcome::Failed { kind, .. } if *kind == FailureKind::NotAttempted));
        assert!(!stopped, "seed {seed}: a unit was not attempted, yet the job succeeded");
    } else {
        assert_eq!(manifest.status, stop.as_ref().map_or(JobStatus::Succeeded, |s| s.status), "seed {seed}");
    }
    let (done, failed) = Totals::of(&s.plan, &state).items();
    let limits = &s.plan.limits;
    let tolerance = Tolerance { count: limits.tolerated_failures, percent: limits.tolerated_failure_percent };
    let total = match &s.plan.work {
        Work::Scrape(w) => Some(w.urls),
        Work::Transform(_) => None,
    };
    let over = tolerance.exceeded(failed, done, total);
    if manifest.status == JobStatus::Succeeded {
        assert!(over.is_none(), "seed {seed}: succeeded, yet {}", over.unwrap_or_default());
    }
    // Failures only add up, so a job failed for passing its threshold passed it in the end too (but for a
    // transform's percentage, of the rows read so far, which more rows can bring back under it).
    let threshold = stop.as_ref().is_some_and(|s| s.status == JobStatus::Failed && s.reason.contains("items failed"));
    if threshold && (limits.tolerated_failures.is_some() || total.is_some()) {
        assert!(over.is_some(), "seed {seed}: failed for {:?}, yet {failed} of {done} failed", manifest.reason);
    }
    match &s.plan.work {
        Work::Transform(w) => check_transform(seed, w, &s.plan, &state, &manifest, &objects, world, audit),
        Work::Scrape(w) => check_scrape(seed, w, &state, &manifest, &objects),
    }
    // No call without a fresh check of the stop marker, none after the tick saw it.
    let reads = world.stop_reads.borrow();
    let leases = world.lease_writes.borrow();
    for call in world.calls.borrow().iter() {
        let tick_reads = reads.get(&call.tick).map(Vec::as_slice).unwrap_or_default();
        let writes = leases.get(&(call.tick.clone(), call.unit)).map(Vec::as_slice).unwrap_or_default();
        let since = writes.iter().copied().filter(|&t| t <= call.at).max();
        let since =
            since.unwrap_or_else(|| panic!("seed {seed}: {} called unit {} without its lease", call.tick, call.unit));
        assert!(
            tick_reads.iter().any(|&(t, _)| t >= since && t <= call.at),
            "seed {seed}: {} called unit {} at {:?} without checking the stop marker since its lease",
            call.tick,
            call.unit,
            call.at
        );
        assert!(
            !tick_reads.iter().any(|&(t, found)| found && t <= call.at),
            "seed {seed}: {} called unit {} at {:?} after it saw the stop marker",
            call.tick,
            call.unit,
            call.at
        );
        if let Some(cancel) = cancelled_at {
            let last_read = tick_reads.iter().filter(|&&(t, _)| t <= call.at).map(|&(t, _)| t).max();
            assert!(last_read.is_some_and(|t| t < cancel) || call.at < cancel, "seed {seed}: a call after the cancel");
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check_transform(
    seed: u64,
    w: &TransformWork,
    plan: &Plan,
    state: &State,
    manifest: &Manifest,
    objects: &Objects,
    world: &World,
    audit: bool,
) {
    let (_, worker_spec) = crate::fanout::merge::TableMode::of_spec(&w.spec, &w.columns).unwrap();
    let mut rows_in = 0;
    let mut all_done = true;
    for unit in 0..plan.units {
        let c = &state.units[&unit];
        let r = Plan::range(w, unit);
        match &c.outcome {
            Outcome::Done => {
                let honest = honest_parts(&world.file, &worker_spec, r.start, r.end);
                let part = &objects[&c.part.as_ref().unwrap().key].0;
                let lie = part != &honest.part;
                // A consistent liar is caught only by the audit; every other lie is refused.
                assert!(
                    !lie || (world.faults.subtle_lies && !audit),
                    "seed {seed}: unit {unit}'s part is not the honest one"
                );
                if !lie {
                    assert_eq!(c.tally, Tally::Rows(honest.stats), "seed {seed}: unit {unit}");
                    let errors = c.errors.as_ref().map(|e| objects[&e.key].0.clone()).unwrap_or_default();
                    assert_eq!(errors, honest.errors, "seed {seed}: unit {unit}'s error records");
                }
                rows_in += honest.stats.rows_in;
            }
            Outcome::Failed { reason, .. } => {
                all_done = false;
                if reason.starts_with("audit: two runs of the unit differ") {
                    assert!(c.rejected >= 1, "seed {seed}: unit {unit}'s audit failed, yet nothing was rejected");
                }
                let errors = &objects[&c.errors.as_ref().unwrap().key].0;
                let record: Value = serde_json::from_slice(errors.split(|&b| b == b'\n').next().unwrap()).unwrap();
                assert_eq!(record["byte"], r.start, "seed {seed}: unit {unit}'s failure names its range");
            }
        }
    }
    assert_eq!(manifest.summary["rows_in"], rows_in, "seed {seed}: {}", manifest.summary);
    let parts: Vec<&str> = manifest.parts.iter().map(|p| p.key.as_str()).collect();
    let done: Vec<String> = state.units.values().filter_map(|c| c.part.as_ref().map(|p| p.key.clone())).collect();
    assert_eq!(parts, done, "seed {seed}: parts in unit order");
    // An aggregate's result is merged from the units done, whatever failed.
    assert_eq!(manifest.result.is_some(), w.spec.aggregate.is_some(), "seed {seed}: {manifest:?}");
    if let (true, Some(result)) = (all_done && !world.faults.subtle_lies, &manifest.result) {
        // Every unit done: the merged groups are the whole file's.
        let whole: Value =
            serde_json::from_slice(&run_to_end(&w.spec, &world.file, crate::framing::Format::Json).unwrap()).unwrap();
        let merged: Value = serde_json::from_slice(&objects[&result.key].0).unwrap();
        assert_eq!(merged["groups"], whole["groups"], "seed {seed}: merged groups");
    }
}

fn check_scrape(seed: u64, w: &ScrapeWork, state: &State, manifest: &Manifest, objects: &Objects) {
    let mut next = 0u64;
    for p in &manifest.parts {
        for line in objects[&p.key].0.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line).unwrap();
            assert_eq!(v["index"], next, "seed {seed}: results in order, each once");
            assert_eq!(v["url"], format!("https://site{}.example/{next}", next % 3), "seed {seed}");
            next += 1;
        }
    }
    assert_eq!(next, w.urls, "seed {seed}: every URL has a result");
    let results: u64 = state
        .units
        .values()
        .map(|c| match c.tally {
            Tally::Pages(p) => p.results,
            Tally::Rows(_) => 0,
        })
        .sum();
    assert_eq!(results, w.urls, "seed {seed}");
    assert_eq!(manifest.summary["results"], w.urls, "seed {seed}");
    for c in state.units.values() {
        if let Outcome::Failed { kind, .. } = &c.outcome {
            assert!(matches!(kind, FailureKind::Worker | FailureKind::NotAttempted), "seed {seed}");
        }
    }
}

#[test]
fn jobs_finish_with_every_unit_once_under_faults() {
    let seeds = std::env::var("SIMSEED").map(|s| s.parse().unwrap()..=s.parse().unwrap()).unwrap_or(1..=400u64);
    for seed in seeds {
        let mut rng = Rng::new(seed);
        let faults =
            Faults { store: [0, 5, 15][rng.below(3) as usize], worker: [0, 10, 30][rng.below(3) as usize], ..CALM };
        run_job(seed, faults, Mode::Seeded);
    }
}

/// A transform job of `units` units over a small file, planned at `created_ms` with `limits`, its state
/// `state`, in a world without faults: the world, and the job's id.
fn small_job(units: u64, limits: Limits, created_ms: u64, state: State, faults: Faults) -> (Rc<World>, JobId) {
    job_of_spec(units, Spec::default(), limits, created_ms, state, faults)
}

/// A job like [`small_job`]'s with the spec `spec`.
fn job_of_spec(
    units: u64,
    spec: Spec,
    limits: Limits,
    created_ms: u64,
    state: State,
    faults: Faults,
) -> (Rc<World>, JobId) {
    let id = JobId::new(1, 2);
    let layout = Layout::new(&id);
    let file = csv_file(&mut Rng::new(1), 10 * units);
    let columns = read_header(&spec.dialect, &file).unwrap().names;
    let size = file.len() as u64;
    let chunk_bytes = size.div_ceil(units);
    assert_eq!(size.div_ceil(chunk_bytes), units);
    let work = TransformWork {
        source: Source::Url("sim://file".into()),
        size,
        etag: None,
        last_modified: None,
        chunk_bytes,
        spec,
        columns,
    };
    let plan = Plan { id: id.clone(), created_ms, units, limits, work: Work::Transform(work) };
    let objects = BTreeMap::from([
        (layout.plan(), (serde_json::to_vec(&plan).unwrap(), "\"p\"".to_owned())),
        (layout.state(), (serde_json::to_vec(&state).unwrap(), "\"s\"".to_owned())),
        (layout.active(), (Vec::new(), "\"a\"".to_owned())),
    ]);
    (World::new(2, faults, MS * 5_000, objects, file, layout), id)
}

/// Settings for ticks of `budget_ms`, with one attempt per unit.
fn settings(budget_ms: u32, call_timeout_ms: u32) -> TickSettings {
    TickSettings {
        budget: MS * budget_ms,
        lease: MS * 5_000,
        call_timeout: MS * call_timeout_ms,
        retry: RetryPolicy { max_attempts: 1, base_delay: MS * 20, max_delay: MS * 500 },
        flush_every: MS * 500,
    }
}

/// Settings for ticks of `budget_ms` that try a unit up to `attempts` times.
fn retrying(budget_ms: u32, attempts: u32) -> TickSettings {
    let plain = settings(budget_ms, 3_000);
    TickSettings { retry: RetryPolicy { max_attempts: attempts, ..plain.retry }, ..plain }
}

/// One tick, as the job's driver saw it.
struct Ticked {
    name: String,
    started: Duration,
    ended: Duration,
    /// The state it left.
    state: State,
}

/// Sends the job's ticks one after another, the next one `gap` after the last ended, each with its
/// settings from `settings` (by the tick's number, from 0), until the manifest is written.
fn tick_until_done(
    world: &Rc<World>,
    id: &JobId,
    gap: Duration,
    settings: impl Fn(usize) -> TickSettings + 'static,
) -> (Manifest, Vec<Ticked>) {
    let ticks = Rc::new(RefCell::new(Vec::new()));
    let done = Rc::new(Cell::new(false));
    let (w, id2, log, finished) = (world.clone(), id.clone(), ticks.clone(), done.clone());
    world.exec.spawn(
        async move {
            for n in 0.. {
                let name = format!("tick{n}");
                let host = sim_host(&w, name.clone(), 0, None);
                let started = w.exec.now();
                tick::tick(&host, &id2, &name, &settings(n)).await.unwrap();
                let state = serde_json::from_slice(&w.objects.borrow()[&w.layout.state()].0).unwrap();
                log.borrow_mut().push(Ticked { name, started, ended: w.exec.now(), state });
                if w.objects.borrow().contains_key(&w.layout.manifest()) {
                    finished.set(true);
                    return;
                }
                w.exec.sleep(gap).await;
            }
        },
        Rc::new(Cell::new(false)),
    );
    assert!(world.exec.run(Duration::from_secs(3_600), || done.get()), "no manifest");
    let manifest = serde_json::from_slice(&world.objects.borrow()[&world.layout.manifest()].0).unwrap();
    let ticks = ticks.take();
    (manifest, ticks)
}

/// A job of two units, planned at `created_ms` with `limits`, its state `state`; one tick runs it to its
/// manifest.
fn one_tick_to_the_manifest(limits: Limits, created_ms: u64, state: State) -> Manifest {
    let (world, id) = small_job(2, limits, created_ms, state, CALM);
    let (manifest, ticks) = tick_until_done(&world, &id, MS, |_| settings(20_000, 1_000));
    assert_eq!(ticks.len(), 1);
    manifest
}

fn limits(tolerated_failures: Option<u64>, deadline_ms: u64) -> Limits {
    Limits {
        concurrency: 1,
        attempts: 1,
        deadline_ms,
        tolerated_failures,
        tolerated_failure_percent: None,
        audit_percent: 0.0,
    }
}

/// Limits of `n` attempts a unit, and no threshold or deadline to speak of.
fn attempts(n: u32) -> Limits {
    Limits { attempts: n, ..limits(None, 3_600_000) }
}

/// Ticks that conclude units at the same time each count only the failures
/// they know of: two failed units, concluded by two ticks that each saw one,
/// must still fail a job that tolerates one.
#[test]
fn the_threshold_counts_every_ticks_failures() {
    let failed = Concluded {
        outcome: Outcome::Failed { kind: FailureKind::Worker, reason: "503".into() },
        part: None,
        errors: None,
        tally: Tally::Rows(Default::default()),
        calls: 1,
        timeouts: 0,
        rejected: 0,
    };
    let state = State { units: BTreeMap::from([(0, failed.clone()), (1, failed)]), ..State::default() };
    let manifest = one_tick_to_the_manifest(limits(Some(1), 3_600_000), EPOCH_MS, state);
    assert_eq!(manifest.status, JobStatus::Failed);
    assert_eq!(manifest.reason.as_deref(), Some("2 items failed, more than the 1 tolerated"));
}

/// A tick after the job's deadline fails it and starts nothing; one before it runs the job.
#[test]
fn a_tick_past_the_deadline_fails_the_job() {
    let past = one_tick_to_the_manifest(limits(None, 1_000), EPOCH_MS - 1_001, State::default());
    assert_eq!(past.status, JobStatus::Failed);
    assert_eq!(past.reason.as_deref(), Some("the job's deadline of 1000 ms passed"));
    assert_eq!(past.summary["invocations"], 0, "{past:?}");
    let before = one_tick_to_the_manifest(limits(None, 60_000), EPOCH_MS - 1_000, State::default());
    assert_eq!(before.status, JobStatus::Succeeded, "{before:?}");
}

/// Workers that lie consistently (a record changed, counts intact) pass every
/// check but the audit: with every unit audited, no such part is used.
#[test]
fn a_full_audit_catches_consistent_liars() {
    let seeds = std::env::var("SIMSEED").map(|s| s.parse().unwrap()..=s.parse().unwrap()).unwrap_or(1..=150u64);
    for seed in seeds {
        run_job(seed, Faults { worker: 40, subtle_lies: true, ..CALM }, Mode::Audited);
    }
}

/// The calls `tick` made.
fn calls_of(world: &World, tick: &str) -> Vec<CallLog> {
    world.calls.borrow().iter().filter(|c| c.tick == tick).cloned().collect()
}

/// An aggregate of many units is merged over several ticks: each keeps the merge so far every 1,000
/// units, and the next goes on from the last one kept instead of reading every part again.
#[test]
fn a_long_merge_goes_on_from_its_last_checkpoint() {
    const UNITS: u64 = 2_500;
    let text = r#"{"columns": ["region", {"from": "amount", "type": "float"}], "aggregate": {"group_by": ["region"],
        "metrics": [{"op": "count"}, {"name": "total", "op": "sum", "column": "amount"}]}}"#;
    let spec = spec::parse(text.as_bytes()).unwrap();
    let (world, id) = job_of_spec(UNITS, spec.clone(), attempts(1), EPOCH_MS, State::default(), CALM);
    // Every unit done already, its partial aggregate in the bucket: the ticks only merge.
    let plan: Plan = serde_json::from_slice(&world.objects.borrow()[&world.layout.plan()].0).unwrap();
    let Work::Transform(work) = &plan.work else { unreachable!() };
    let mut state = State::default();
    let mut parts = Vec::new();
    for unit in 0..UNITS {
        let range = Plan::range(work, unit);
        let honest = honest_parts(&world.file, &spec, range.start, range.end);
        let key = format!("{}sim-parts/{unit:06}.json", world.layout.prefix());
        let sum = ObjectSum::of(&honest.part);
        let stored =
            super::state::Stored { key: key.clone(), bytes: sum.bytes, records: sum.lines, sha256: sum.sha256 };
        world.objects.borrow_mut().insert(key.clone(), (honest.part.clone(), format!("\"{}\"", sum.md5)));
        let concluded = Concluded {
            outcome: Outcome::Done,
            part: Some(stored),
            errors: None,
            tally: Tally::Rows(honest.stats),
            calls: 1,
            timeouts: 0,
            rejected: 0,
        };
        state.units.insert(unit, concluded);
        parts.push((key, honest.part));
    }
    world.objects.borrow_mut().get_mut(&world.layout.state()).unwrap().0 = serde_json::to_vec(&state).unwrap();

    let budget_ms = 4_000;
    let (manifest, ticks) = tick_until_done(&world, &id, MS * 10, move |n| {
        assert!(n < 10, "ten ticks and no manifest: the merge makes no progress");
        settings(budget_ms, 1_000)
    });
    assert_eq!(manifest.status, JobStatus::Succeeded, "{manifest:?}");
    assert!(ticks.len() >= 2, "the merge fits in one tick: the test needs a slower one ({} ticks)", ticks.len());
    for t in &ticks {
        assert!(t.ended - t.started <= MS * budget_ms, "{} ran {:?}", t.name, t.ended - t.started);
    }
    let objects = world.objects.borrow();
    let whole: Value =
        serde_json::from_slice(&run_to_end(&spec, &world.file, crate::framing::Format::Json).unwrap()).unwrap();
    let merged: Value = serde_json::from_slice(&objects[&manifest.result.unwrap().key].0).unwrap();
    assert_eq!(merged["groups"], whole["groups"]);

    // The merge so far, kept at units 1,000 and 2,000 and nowhere else, once each.
    let prefix = format!("{}merge/", world.layout.prefix());
    let kept: Vec<_> =
        world.writes.borrow().iter().filter(|w| w.key.starts_with(&prefix)).map(|w| w.key.clone()).collect();
    assert_eq!(kept, [format!("{prefix}001000.json"), format!("{prefix}002000.json")]);
    let (mode, _) = crate::fanout::merge::TableMode::of_spec(&spec, &work.columns).unwrap();
    let crate::fanout::merge::TableMode::Aggregate { mut groups, .. } = mode else { unreachable!() };
    for (unit, (_, part)) in parts.iter().enumerate() {
        if unit % 1_000 == 0 && unit > 0 {
            let at: Value = serde_json::from_slice(&objects[&format!("{prefix}{unit:06}.json")].0).unwrap();
            assert_eq!(at, serde_json::to_value(groups.to_partial()).unwrap(), "the merge of the units before {unit}");
        }
        groups.merge(&serde_json::from_slice(part).unwrap()).unwrap();
    }
    // The tick that went on did not read the parts before the merge it found.
    let reads = world.reads.borrow();
    for (unit, (key, _)) in parts.iter().enumerate().take(1_000) {
        assert_eq!(reads.get(key), Some(&1), "unit {unit}'s part");
    }
}

/// A tick spends its budget on calls that fit in it: it never runs past it, gives each call a time limit
/// that ends before its reserve, starts units while one more call is expected to fit, and no more. What
/// it expects a call to take is the slowest call it saw, or the last tick's (kept in the state).
#[test]
fn ticks_start_every_unit_that_fits_in_their_budget_and_no_more() {
    // 7 units, one at a time, each about 1 s (the worker's 1,000 ms and a few ms of bucket), in ticks
    // of 5 s less the 1 s reserve: a fourth unit would start near 3.1 s with 0.9 s left, so 3 a tick.
    let (world, id) = small_job(7, limits(None, 3_600_000), EPOCH_MS, State::default(), CALM);
    world.work_ms.set(1_000);
    let (manifest, ticks) = tick_until_done(&world, &id, MS * 10, |_| settings(5_000, 3_000));
    assert_eq!(manifest.status, JobStatus::Succeeded, "{manifest:?}");
    let concluded: Vec<usize> = ticks.iter().map(|t| t.state.units.len()).collect();
    assert_eq!(concluded, [3, 6, 7], "units concluded after each tick");
    assert_eq!(world.idle_state_writes.get(), 0, "state.json is written only with something new");
    let mut slowest_before = 0;
    for t in &ticks {
        assert!(t.ended - t.started <= MS * 5_000, "{} ran {:?}", t.name, t.ended - t.started);
        let calls = calls_of(&world, &t.name);
        for c in &calls {
            assert!(c.limit >= MS * 100 && c.limit <= MS * 3_000, "{} gave a call {:?}", t.name, c.limit);
            assert!(c.at + c.limit <= t.started + MS * 4_000, "{}'s call at {:?} may end in its reserve", t.name, c.at);
            assert!(c.answered.is_some(), "{}'s call at {:?} was not answered", t.name, c.at);
        }
        let slowest = calls.iter().filter_map(|c| c.answered).max().map_or(slowest_before, |d| d.as_millis() as u64);
        assert!(slowest >= 1_000);
        assert_eq!(t.state.slowest_call_ms, slowest, "{} keeps its slowest call for the next tick", t.name);
        slowest_before = slowest;
    }
}

/// A tick's first unit starts even when the last tick's calls were slower than what is left of the budget
/// (so that a job whose calls are slower than a tick still moves), unless less than a call's minimum is left.
#[test]
fn a_ticks_first_unit_starts_whatever_the_estimate_unless_no_time_is_left() {
    let slow = State { slowest_call_ms: 60_000, ..State::default() };
    // 1.5 s less the reserve leaves 0.5 s: the first unit starts (its call takes about 0.3 s), the
    // second waits for the next tick, as the tick's own call then says.
    let (world, id) = small_job(2, limits(None, 3_600_000), EPOCH_MS, slow.clone(), CALM);
    world.work_ms.set(300);
    let (_, ticks) = tick_until_done(&world, &id, MS * 10, |_| settings(1_500, 3_000));
    let concluded: Vec<usize> = ticks.iter().map(|t| t.state.units.len()).collect();
    assert_eq!(concluded, [1, 2]);
    // 1.05 s leaves 50 ms, under the 100 ms a call needs at least: nothing starts, nothing is counted.
    let (world, id) = small_job(2, limits(None, 3_600_000), EPOCH_MS, slow, CALM);
    let (manifest, ticks) =
        tick_until_done(&world, &id, MS * 10, |n| settings(if n == 0 { 1_050 } else { 20_000 }, 3_000));
    assert!(calls_of(&world, "tick0").is_empty());
    assert!(!world.lease_writes.borrow().keys().any(|(tick, _)| tick == "tick0"), "tick0 claimed a unit");
    assert_eq!(ticks[0].state.units.len(), 0);
    assert_eq!(manifest.status, JobStatus::Succeeded, "{manifest:?}");
    assert!(all_done(&ticks[ticks.len() - 1].state), "{manifest:?}");
}

fn all_done(state: &State) -> bool {
    state.units.values().all(|c| c.outcome == Outcome::Done)
}

/// A tick that runs out of time between claiming a unit and calling its worker gives the call back:
/// a unit of one attempt is still tried, whatever moment its tick's budget ends.
#[test]
fn a_unit_is_never_failed_for_a_call_not_made() {
    // Budgets ending at every millisecond around the tick's first call, then ticks with time to spare.
    for extra_ms in 0..60 {
        let (world, id) = small_job(1, limits(None, 3_600_000), EPOCH_MS, State::default(), CALM);
        let (manifest, ticks) = tick_until_done(&world, &id, MS * 10, move |n| {
            settings(if n == 0 { 1_100 + extra_ms } else { 20_000 }, 3_000)
        });
        assert!(all_done(&ticks[ticks.len() - 1].state), "budget 1,{:03} ms: {manifest:?}", 100 + extra_ms);
    }
}

/// A scrape job's percentage threshold counts failures out of all its URLs, known from the start (a
/// transform's, out of the rows read so far): with every worker refusing, a job of 10 URLs in units of 2
/// that tolerates 50% stops at its third failed unit, not its first. A tick whose calls all failed keeps
/// the last tick's estimate of a call's time.
#[test]
fn a_scrape_jobs_percentage_counts_all_its_urls() {
    let id = JobId::new(3, 4);
    let layout = Layout::new(&id);
    let mut objects = Objects::new();
    let (work, units) = scrape_work(&layout, 10, 2, 1_000, &mut objects);
    assert_eq!(units, 5);
    let limits = Limits { tolerated_failure_percent: Some(50.0), ..limits(None, 3_600_000) };
    let plan = Plan { id: id.clone(), created_ms: EPOCH_MS, units, limits, work: Work::Scrape(work) };
    let state = State { slowest_call_ms: 700, ..State::default() };
    objects.insert(layout.plan(), (serde_json::to_vec(&plan).unwrap(), "\"p\"".into()));
    objects.insert(layout.state(), (serde_json::to_vec(&state).unwrap(), "\"s\"".into()));
    objects.insert(layout.active(), (Vec::new(), "\"a\"".into()));
    let faults = Faults { refuse: true, ..CALM };
    let world = World::new(2, faults, MS * 5_000, objects, Vec::new(), layout);
    let (manifest, ticks) = tick_until_done(&world, &id, MS * 10, |_| settings(20_000, 3_000));
    assert_eq!(manifest.status, JobStatus::Failed);
    assert_eq!(
        manifest.reason.as_deref(),
        Some("6 of 10 items failed (60.0%), more than the 50% tolerated"),
        "{manifest:?}"
    );
    assert_eq!(world.calls.borrow().len(), 3, "no unit is called after the threshold");
    assert_eq!(ticks[ticks.len() - 1].state.slowest_call_ms, 700);
}

/// Without faults, kills, cancels or deadlines, every unit is called once (twice when audited) and done,
/// however many ticks run at once and however their clocks are skewed.
#[test]
fn calm_jobs_call_every_unit_once() {
    let seeds = std::env::var("SIMSEED").map(|s| s.parse().unwrap()..=s.parse().unwrap()).unwrap_or(1..=150u64);
    for seed in seeds {
        run_job(seed, CALM, if seed % 3 == 0 { Mode::CalmAudited } else { Mode::Calm });
    }
}

/// A worker whose answer was lost may have concluded its unit: before calling again, a tick reads the
/// unit's receipt, and concludes the unit from it rather than run it a second time.
#[test]
fn a_lost_answer_is_found_in_the_bucket_not_run_again() {
    let faults = Faults { lose_first_answers: true, ..CALM };
    let (world, id) = small_job(5, attempts(3), EPOCH_MS, State::default(), faults);
    let (manifest, ticks) = tick_until_done(&world, &id, MS * 10, |_| retrying(20_000, 3));
    assert_eq!(ticks.len(), 1, "the tick retries, rather than leave the unit to the next");
    assert!(all_done(&ticks[0].state), "{manifest:?}");
    for unit in 0..5 {
        let calls = world.calls.borrow().iter().filter(|c| c.unit == unit).count();
        assert_eq!(calls, 1, "unit {unit}");
    }
}

/// A unit whose calls all failed is concluded as failed once its lease runs out, saying how many calls
/// were made and what the last one answered.
#[test]
fn a_unit_that_always_fails_says_why() {
    let faults = Faults { unavailable: true, ..CALM };
    let (world, id) = small_job(1, attempts(2), EPOCH_MS, State::default(), faults);
    let (_, ticks) = tick_until_done(&world, &id, MS * 100, |_| retrying(20_000, 2));
    let c = &ticks[ticks.len() - 1].state.units[&0];
    let reason = "gave up after 2 calls: worker answered 503";
    assert_eq!(c.outcome, Outcome::Failed { kind: FailureKind::Worker, reason: reason.into() });
    assert_eq!(world.calls.borrow().len(), 2);
}

/// A receipt that does not hold fails its unit at once, counted as rejected, and says why.
#[test]
fn a_forged_receipt_fails_its_unit_and_is_counted() {
    let faults = Faults { forge: true, ..CALM };
    let (world, id) = small_job(2, attempts(3), EPOCH_MS, State::default(), faults);
    let (_, ticks) = tick_until_done(&world, &id, MS * 100, |_| retrying(20_000, 3));
    for (unit, c) in &ticks[ticks.len() - 1].state.units {
        let Outcome::Failed { reason, .. } = &c.outcome else { panic!("unit {unit}: {c:?}") };
        let why = reason.strip_prefix("the unit's receipt was refused: ");
        assert!(why.is_some_and(|why| why.len() > 10), "unit {unit}: {reason}");
        assert_eq!((c.calls, c.rejected), (1, 1), "unit {unit}: {c:?}");
    }
}

/// An audit run that cannot be made fails its unit with the audit call's last error.
#[test]
fn an_audit_that_cannot_run_names_its_last_error() {
    let faults = Faults { unavailable_later: true, ..CALM };
    let (world, id) = small_job(1, Limits { audit_percent: 100.0, ..attempts(1) }, EPOCH_MS, State::default(), faults);
    let (_, ticks) = tick_until_done(&world, &id, MS * 100, |_| retrying(20_000, 1));
    let c = &ticks[ticks.len() - 1].state.units[&0];
    let reason = "the audit run could not be made: gave up after 2 calls: worker answered 503";
    assert_eq!(c.outcome, Outcome::Failed { kind: FailureKind::Worker, reason: reason.into() }, "{c:?}");
    assert_eq!(world.calls.borrow().len(), 2);
}

/// A unit whose call failed too late in a tick to be tried again there keeps its attempts: the next tick
/// to take its lease over calls it again.
#[test]
fn a_retry_left_to_the_next_tick_is_still_made() {
    let faults = Faults { unavailable_first: true, ..CALM };
    let (world, id) = small_job(1, attempts(2), EPOCH_MS, State::default(), faults);
    // The first call takes 0.4 s of the 0.6 s a tick of 1.6 s leaves: no time for another.
    world.work_ms.set(400);
    let (_, ticks) = tick_until_done(&world, &id, MS * 100, |_| retrying(1_600, 2));
    assert!(all_done(&ticks[ticks.len() - 1].state));
    let calls = world.calls.borrow();
    assert_eq!(calls.len(), 2);
    assert_ne!(calls[0].tick, calls[1].tick, "the retry is the next tick's");
}
