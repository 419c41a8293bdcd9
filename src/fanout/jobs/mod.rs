//! Durable jobs: a job's state and results in an S3-compatible bucket,
//! advanced by short idempotent ticks.
//!
//! A job is planned once (its units: byte ranges of a CSV file, batches of a
//! URL list) and then advanced by *ticks*, each a bounded invocation that
//! anything may send, any number at once. Nothing is kept between ticks but
//! objects in the bucket, under `jobs/{id}/` ([`layout`]):
//!
//! * `plan.json`, written once when the job is made ([`plan`]);
//! * `leases/{unit}`: who runs a unit until when ([`lease`]), claimed with a
//!   create-only `PUT` (`If-None-Match: *`) and taken over once expired with
//!   a compare-and-swap `PUT` (`If-Match`), so a unit runs once at a time;
//! * `parts/{unit}.ndjson` and `errors/{unit}.ndjson`: a unit's records and
//!   error records, written by the worker itself through presigned create-only
//!   URLs, never passing through the coordinator;
//! * `receipts/{unit}.json`: the unit's accounting ([`receipt`]), created once
//!   by whoever concludes the unit (its worker, or a tick that gives up on it),
//!   so that a unit's outcome is decided by exactly one object ([`commit`]);
//! * `state.json`: the receipts folded together, for status and the manifest
//!   ([`state`]), updated by compare-and-swap;
//! * `stop.json`: a cancel or a failure that stops the job;
//! * `result.json` (aggregates) and `manifest.json`, written once, last.
//!
//! [`tick`] is the tick itself, written against [`tick::JobHost`] (the store,
//! the workers, the clock), so the coordinator runs it over HTTP and the
//! simulation over an in-memory bucket with injected faults.

pub mod commit;
pub mod layout;
pub mod lease;
pub mod plan;
pub mod receipt;
pub mod state;
pub mod tick;

#[cfg(test)]
mod sim;

pub use crate::store::StoreError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::future::Future;
use std::time::Duration;

/// A job's id: 128 random bits as 32 lower-case hex digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// A new id from two random numbers.
    pub fn new(a: u64, b: u64) -> JobId {
        JobId(format!("{a:016x}{b:016x}"))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = String;

    /// Only what [`JobId::new`] makes: anything else in a path is not a job.
    fn try_from(text: String) -> Result<JobId, String> {
        if text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(JobId(text))
        } else {
            Err(format!("{text:?} is not a job id (32 lower-case hex digits)"))
        }
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Tries a request to the bucket up to four times while it fails transiently,
/// 100, 200 and 400 ms apart (`sleep` waits).
pub async fn retrying<T, F, Fut, S, SFut>(sleep: S, mut op: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
    S: Fn(Duration) -> SFut,
    SFut: Future<Output = ()>,
{
    let mut delay = Duration::from_millis(100);
    for _ in 0..3 {
        match op().await {
            Err(StoreError::Transient(_)) => {
                sleep(delay).await;
                delay *= 2;
            }
            other => return other,
        }
    }
    op().await
}

/// Whether `path` is a tick route, which a tick token (`?token=`) may call.
pub fn is_tick_route(path: &str) -> bool {
    path == "/jobs/tick"
        || path.strip_prefix("/jobs/").and_then(|rest| rest.strip_suffix("/tick")).is_some_and(|id| !id.contains('/'))
}

/// The longest reason a job keeps (a worker's message, why a unit failed): the
/// job's objects and answers stay small whatever a worker says.
pub const MAX_REASON_CHARS: usize = 1000;

/// `reason` cut to [`MAX_REASON_CHARS`], with its signatures taken out.
pub fn bounded(reason: &str) -> String {
    let reason = crate::store::redact(reason);
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((at, _)) => format!("{}…", &reason[..at]),
        None => reason,
    }
}

/// Hex digits of `bytes`, lower case.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_128_bits_of_hex_and_nothing_else_is() {
        let id = JobId::new(1, u64::MAX);
        assert_eq!(id.as_str(), "0000000000000001ffffffffffffffff");
        assert_eq!(JobId::try_from(id.to_string()), Ok(id));
        for bad in [
            "",
            "../x",
            "0000000000000001FFFFFFFFFFFFFFFF",
            "0000000000000001ffffffffffffffff0",
            "g".repeat(32).as_str(),
        ] {
            assert!(JobId::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn tick_routes() {
        assert!(is_tick_route("/jobs/tick"));
        assert!(is_tick_route("/jobs/0123/tick"));
        for path in ["/jobs", "/jobs/0123", "/jobs/a/b/tick", "/jobs/tick/x", "/coordinate/tick"] {
            assert!(!is_tick_route(path), "{path}");
        }
        assert_eq!(hex(&[0, 15, 16, 255]), "000f10ff");
        assert_eq!(bounded("short"), "short");
        let long = "é".repeat(MAX_REASON_CHARS + 5);
        assert_eq!(bounded(&long).chars().count(), MAX_REASON_CHARS + 1);
    }
}
