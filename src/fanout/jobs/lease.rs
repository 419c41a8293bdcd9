//! Leases: which tick runs a unit, until when.
//!
//! A tick claims a unit by creating its lease object (`If-None-Match: *`), and
//! renews it before every call by replacing the version it wrote
//! (`If-Match`). A lease that is past its time, by more than
//! [`CLOCK_SKEW`], may be taken over by any tick the same way, so a tick that
//! dies loses only the units it held, for one lease's time. The presigned URLs
//! a worker writes through expire with the lease, so a worker whose lease was
//! taken over can no longer write: one unit, one writer, whatever the clocks
//! say (up to [`CLOCK_SKEW`]).
//!
//! The lease also carries the unit's call counts across ticks, so that a unit
//! is called at most `attempts` times in the whole job, and the reason a tick
//! gave up, so that whoever concludes the unit can say why.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How far apart two ticks' clocks (or a tick's and the store's) may be: a
/// lease is taken over only this long after it ran out.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// A lease object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    /// The tick that holds it.
    pub owner: String,
    /// Until when, in milliseconds since the Unix epoch (the owner's clock).
    pub until_ms: u64,
    /// Worker calls made for the unit so far, by every tick.
    pub calls: u32,
    /// Of those, calls that ran out of time.
    #[serde(default)]
    pub timeouts: u32,
    /// Of those, calls whose answer was refused.
    #[serde(default)]
    pub rejected: u32,
    /// Why the last call failed, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Set when a tick gave up on the unit: whoever takes the lease over concludes it as failed.
    #[serde(default)]
    pub exhausted: bool,
}

impl Lease {
    /// Whether a tick whose clock reads `now_ms` may take this lease over.
    pub fn expired(&self, now_ms: u64) -> bool {
        now_ms > self.until_ms.saturating_add(CLOCK_SKEW.as_millis() as u64)
    }

    /// The lease renewed by `owner` at `now_ms` for `lease`, for one more call.
    pub fn renewed(&self, owner: &str, now_ms: u64, lease: Duration) -> Lease {
        Lease {
            owner: owner.to_owned(),
            until_ms: now_ms.saturating_add(lease.as_millis() as u64),
            calls: self.calls.saturating_add(1),
            ..self.clone()
        }
    }

    /// A new lease by `owner` at `now_ms`, for its first call.
    pub fn first(owner: &str, now_ms: u64, lease: Duration) -> Lease {
        Lease {
            owner: owner.to_owned(),
            until_ms: now_ms.saturating_add(lease.as_millis() as u64),
            calls: 1,
            timeouts: 0,
            rejected: 0,
            last_error: None,
            exhausted: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_over_only_past_its_time_and_the_skew() {
        let lease = Lease::first("t1", 1_000, Duration::from_secs(60));
        assert_eq!((lease.until_ms, lease.calls), (61_000, 1));
        assert!(!lease.expired(61_000));
        assert!(!lease.expired(61_000 + CLOCK_SKEW.as_millis() as u64));
        assert!(lease.expired(61_001 + CLOCK_SKEW.as_millis() as u64));
        let next = Lease { timeouts: 1, ..lease.clone() }.renewed("t2", 70_000, Duration::from_secs(10));
        assert_eq!((next.owner.as_str(), next.until_ms, next.calls, next.timeouts), ("t2", 80_000, 2, 1));
    }
}
