//! How a unit is concluded: its objects written, then its receipt, each at
//! most once.
//!
//! The worker that ran a unit commits it through presigned URLs; a tick that
//! gives up on a unit commits a failure the same way, under keys of its own.
//! Every object is created with `If-None-Match: *`, so a second writer (a
//! retried call, a lease taken over while the first worker still writes) never
//! replaces what the first wrote. It finds the object there and:
//!
//! * [`Adopt::Same`]: its own output must be byte for byte the same (a
//!   transform unit is deterministic), or the unit is in conflict;
//! * [`Adopt::Derive`]: it takes the existing part and derives the accounting
//!   from it (scrape results, which differ between runs);
//! * [`Adopt::Existing`]: it takes the existing object as it is (a tick's
//!   failure records).
//!
//! The receipt comes last: once it exists the unit is concluded, and a writer
//! that finds it there returns it instead of its own. So a worker that dies
//! between its part and its receipt loses nothing: the next run adopts the part.

use super::layout::Slot;
use super::receipt::{ObjectSum, Outcome, Receipt, Tally};
use super::{retrying, StoreError};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::time::Duration;

/// What a worker is given to commit a unit through: presigned URLs, one per
/// object and method, valid while the lease lasts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkUrls {
    /// The unit.
    pub unit: u64,
    /// The part.
    pub part: ObjectUrls,
    /// The error records (transform units).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ObjectUrls>,
    /// The receipt.
    pub receipt: ObjectUrls,
    /// The job index of a scrape batch's first URL, for its results' `index`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_index: Option<u64>,
}

/// The two presigned URLs of one object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectUrls {
    /// `PUT`, with `If-None-Match: *` (signed).
    pub create: String,
    /// `GET`.
    pub read: String,
}

/// Where a unit's objects are written.
#[allow(async_fn_in_trait)]
pub trait Sink {
    /// Creates the object in `slot` unless it exists: true when this call wrote it.
    async fn create(&self, slot: Slot, body: &[u8], sum: &ObjectSum) -> Result<bool, StoreError>;
    /// The object in `slot`, when there is one.
    async fn read(&self, slot: Slot) -> Result<Option<Vec<u8>>, StoreError>;
    /// Waits `duration` (between retries).
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()>;
}

/// A unit's output, ready to be committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Output {
    /// The part: records, results or a partial aggregate, one a line.
    pub part: Option<Vec<u8>>,
    /// The error records, one a line, when there are any.
    pub errors: Option<Vec<u8>>,
    /// The accounting.
    pub tally: Tally,
    /// Done, or why not.
    pub outcome: Outcome,
    /// Milliseconds spent producing it.
    pub process_ms: u64,
}

/// What a writer does with an object an earlier writer made. See the module documentation.
pub enum Adopt<'a> {
    /// The earlier object must be the same as ours.
    Same,
    /// The earlier part replaces ours, and the accounting is read from it.
    Derive(&'a dyn Fn(&[u8]) -> Result<Tally, String>),
    /// The earlier object replaces ours as it is.
    Existing,
}

/// Why a unit could not be committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CommitError {
    /// The bucket failed.
    Store(StoreError),
    /// An earlier writer left objects this one cannot take as its own.
    Conflict(String),
}

impl std::fmt::Display for CommitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommitError::Store(e) => e.fmt(f),
            CommitError::Conflict(m) => f.write_str(m),
        }
    }
}

impl From<StoreError> for CommitError {
    fn from(e: StoreError) -> CommitError {
        CommitError::Store(e)
    }
}

/// How the commit ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Committed {
    /// This writer's receipt concluded the unit.
    Ours(Receipt),
    /// The unit was concluded already: the receipt found there, as stored.
    Theirs(Vec<u8>),
}

impl Committed {
    /// The receipt as stored.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Committed::Ours(r) => serde_json::to_vec(&r).expect("receipts serialise"),
            Committed::Theirs(bytes) => bytes,
        }
    }
}

/// Commits unit `unit`: its objects, then its receipt. See the module documentation.
pub async fn commit<S: Sink>(sink: &S, unit: u64, output: Output, adopt: Adopt<'_>) -> Result<Committed, CommitError> {
    let (outcome, process_ms) = (output.outcome.clone(), output.process_ms);
    let (part, errors, tally) = write_objects(sink, output, adopt).await?;
    let receipt = Receipt { unit, outcome, part, errors, tally, process_ms };
    let body = serde_json::to_vec(&receipt).expect("receipts serialise");
    let sum = ObjectSum::of(&body);
    if retrying(|d| sink.sleep(d), || sink.create(Slot::Receipt, &body, &sum)).await? {
        return Ok(Committed::Ours(receipt));
    }
    match retrying(|d| sink.sleep(d), || sink.read(Slot::Receipt)).await? {
        Some(theirs) => Ok(Committed::Theirs(theirs)),
        None => Err(CommitError::Conflict("the unit's receipt exists but cannot be read".into())),
    }
}

/// Writes a unit's part and errors object (or takes an earlier writer's, as
/// `adopt` says), and returns what they hold.
pub async fn write_objects<S: Sink>(
    sink: &S,
    output: Output,
    adopt: Adopt<'_>,
) -> Result<(Option<ObjectSum>, Option<ObjectSum>, Tally), CommitError> {
    let mut tally = output.tally;
    let mut sums = [None, None];
    for (i, (slot, body)) in [(Slot::Part, output.part), (Slot::Errors, output.errors)].into_iter().enumerate() {
        let Some(body) = body else { continue };
        let mine = ObjectSum::of(&body);
        if retrying(|d| sink.sleep(d), || sink.create(slot, &body, &mine)).await? {
            sums[i] = Some(mine);
            continue;
        }
        let Some(earlier) = retrying(|d| sink.sleep(d), || sink.read(slot)).await? else {
            return Err(CommitError::Conflict(format!("the unit's {slot:?} exists but cannot be read")));
        };
        let theirs = ObjectSum::of(&earlier);
        match &adopt {
            Adopt::Same if theirs.sha256 != mine.sha256 => {
                return Err(CommitError::Conflict(format!(
                    "an earlier run of the unit wrote a different {slot:?} ({} bytes, sha256 {}) than this one \
                     ({} bytes, sha256 {}) and did not conclude it",
                    theirs.bytes, theirs.sha256, mine.bytes, mine.sha256
                )))
            }
            Adopt::Derive(derive) if slot == Slot::Part => {
                tally = derive(&earlier).map_err(|e| CommitError::Conflict(format!("an earlier run's part: {e}")))?;
            }
            _ => {}
        }
        sums[i] = Some(theirs);
    }
    let [part, errors] = sums;
    Ok((part, errors, tally))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::jobs::receipt::Pages;
    use crate::transform::output::Stats;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// Objects in memory; `fail` transient errors before each success.
    #[derive(Default)]
    struct Memory {
        objects: RefCell<HashMap<String, Vec<u8>>>,
        fail: RefCell<u32>,
    }

    impl Sink for Memory {
        async fn create(&self, slot: Slot, body: &[u8], _: &ObjectSum) -> Result<bool, StoreError> {
            if *self.fail.borrow() > 0 {
                *self.fail.borrow_mut() -= 1;
                return Err(StoreError::Transient("503".into()));
            }
            let mut objects = self.objects.borrow_mut();
            let key = format!("{slot:?}");
            if objects.contains_key(&key) {
                return Ok(false);
            }
            objects.insert(key, body.to_vec());
            Ok(true)
        }
        async fn read(&self, slot: Slot) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(self.objects.borrow().get(&format!("{slot:?}")).cloned())
        }
        async fn sleep(&self, _: Duration) {}
    }

    fn output(part: &[u8], errors: Option<&[u8]>, rows: u64) -> Output {
        Output {
            part: Some(part.to_vec()),
            errors: errors.map(<[u8]>::to_vec),
            tally: Tally::Rows(Stats { rows_in: rows, rows_out: rows, ..Stats::default() }),
            outcome: Outcome::Done,
            process_ms: 3,
        }
    }

    fn run<T>(f: impl Future<Output = T>) -> T {
        futures::executor::block_on(f)
    }

    #[test]
    fn a_unit_is_concluded_once_whoever_commits_it() {
        let sink = Memory { fail: RefCell::new(2), ..Memory::default() };
        let first = run(commit(&sink, 7, output(b"{}\n", None, 1), Adopt::Same)).unwrap();
        let Committed::Ours(receipt) = first.clone() else { panic!("{first:?}") };
        assert_eq!((receipt.unit, receipt.part.as_ref().unwrap().lines), (7, 1));
        // A second run (a retry, a lease taken over) finds everything in place and returns the first receipt.
        let second = run(commit(&sink, 7, output(b"{}\n", None, 1), Adopt::Same)).unwrap();
        assert_eq!(second, Committed::Theirs(serde_json::to_vec(&receipt).unwrap()));
        assert_eq!(first.into_bytes(), serde_json::to_vec(&receipt).unwrap(), "the receipt, as stored");
        assert_eq!(second.into_bytes(), serde_json::to_vec(&receipt).unwrap());
    }

    #[test]
    fn a_part_without_a_receipt_is_adopted_or_refused() {
        // The first writer died between its part and its receipt.
        let sink = Memory::default();
        sink.objects.borrow_mut().insert("Part".into(), b"{}\n".to_vec());
        let same = run(commit(&sink, 1, output(b"{}\n", None, 1), Adopt::Same)).unwrap();
        assert!(matches!(same, Committed::Ours(_)), "an identical part is taken as this run's");

        let sink = Memory::default();
        sink.objects.borrow_mut().insert("Part".into(), b"{\"other\":1}\n".to_vec());
        let err = run(commit(&sink, 1, output(b"{}\n", None, 1), Adopt::Same)).unwrap_err();
        assert!(matches!(&err, CommitError::Conflict(m) if m.contains("different Part")), "{err:?}");
        assert!(err.to_string().starts_with("an earlier run of the unit wrote a different Part"), "{err}");
        assert!(!sink.objects.borrow().contains_key("Receipt"), "no receipt for a part it cannot vouch for");

        // Scrape results differ between runs: the earlier part is taken, and counted.
        let derive = |part: &[u8]| -> Result<Tally, String> {
            let n = part.iter().filter(|&&b| b == b'\n').count() as u64;
            Ok(Tally::Pages(Pages { results: n, pages: n, errors: 0 }))
        };
        let Committed::Ours(r) = run(commit(&sink, 1, output(b"{}\n", None, 1), Adopt::Derive(&derive))).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.part.unwrap().sha256, ObjectSum::of(b"{\"other\":1}\n").sha256);
        assert_eq!(r.tally, Tally::Pages(Pages { results: 1, pages: 1, errors: 0 }));

        // Only a part is derived from; an earlier errors object is taken as it is.
        let sink = Memory::default();
        sink.objects.borrow_mut().insert("Errors".into(), b"{\"line\":2}\n".to_vec());
        let Committed::Ours(r) =
            run(commit(&sink, 1, output(b"{}\n", Some(b"{\"line\":2}\n"), 1), Adopt::Derive(&derive))).unwrap()
        else {
            panic!()
        };
        assert_eq!(r.tally, output(b"", None, 1).tally, "the tally of this run's part");
    }

    #[test]
    fn errors_objects_are_written_and_checked_too() {
        let sink = Memory::default();
        sink.objects.borrow_mut().insert("Errors".into(), b"{\"line\":9}\n".to_vec());
        let err = run(commit(&sink, 2, output(b"", Some(b"{\"line\":2}\n"), 0), Adopt::Same)).unwrap_err();
        assert!(matches!(err, CommitError::Conflict(m) if m.contains("Errors")));
        let sink = Memory::default();
        let Committed::Ours(r) =
            run(commit(&sink, 2, output(b"", Some(b"{\"line\":2}\n"), 0), Adopt::Existing)).unwrap()
        else {
            panic!()
        };
        assert_eq!((r.part.unwrap().bytes, r.errors.unwrap().lines), (0, 1));
    }

    #[test]
    fn transient_store_errors_are_retried_then_reported() {
        let sink = Memory { fail: RefCell::new(4), ..Memory::default() };
        let err = run(commit(&sink, 0, output(b"{}\n", None, 1), Adopt::Same)).unwrap_err();
        assert_eq!(err, CommitError::Store(StoreError::Transient("503".into())));
        assert!(sink.objects.borrow().is_empty());
    }
}
