//! When and after how long a failed call is tried again.
//!
//! Retries use exponential backoff with "equal jitter": half of each delay is
//! fixed so retries never stampede back at once, half is random so many
//! callers failing together spread out.

use std::time::Duration;

/// How often and how patiently a call is retried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 means no retry).
    pub max_attempts: u32,
    /// The delay before the first retry, before jitter.
    pub base_delay: Duration,
    /// No computed delay exceeds this; a `Retry-After` longer than this gives up instead.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delay before attempt `failed + 1`, after `failed` attempts have failed,
    /// or `None` when the call should not be tried again.
    ///
    /// `retry_after` is the server's `Retry-After`, when it sent one; `random`
    /// is any random number (it picks the jitter).
    pub fn next_delay(&self, failed: u32, retry_after: Option<Duration>, random: u64) -> Option<Duration> {
        if failed >= self.max_attempts {
            return None;
        }
        if let Some(wait) = retry_after {
            return (wait <= self.max_delay).then_some(wait);
        }
        let exp = self.base_delay.saturating_mul(1u32 << failed.saturating_sub(1).min(20));
        let ceiling = exp.min(self.max_delay);
        let half = ceiling / 2;
        let jitter_ms = (half.as_millis() as u64).checked_add(1).map_or(0, |n| random % n);
        Some(half + Duration::from_millis(jitter_ms))
    }
}

/// Whether an HTTP status is worth retrying: 408, 429 and 5xx other than 501.
pub fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429) || ((500..600).contains(&status) && status != 501)
}

/// Parses a `Retry-After` header given in seconds.
///
/// The HTTP-date form is not honoured (it returns `None`, and the normal
/// backoff applies): it needs a trustworthy clock shared with the server.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy =
        RetryPolicy { max_attempts: 4, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };

    #[test]
    fn delays_grow_and_stay_within_bounds() {
        for random in [0, 1, 37, u64::MAX] {
            let d1 = POLICY.next_delay(1, None, random).unwrap();
            let d2 = POLICY.next_delay(2, None, random).unwrap();
            let d3 = POLICY.next_delay(3, None, random).unwrap();
            assert!((Duration::from_millis(50)..=Duration::from_millis(100)).contains(&d1), "{d1:?}");
            assert!((Duration::from_millis(100)..=Duration::from_millis(200)).contains(&d2), "{d2:?}");
            assert!((Duration::from_millis(200)..=Duration::from_millis(400)).contains(&d3), "{d3:?}");
        }
        let big = RetryPolicy { max_attempts: 100, ..POLICY };
        assert!(big.next_delay(60, None, 12345).unwrap() <= POLICY.max_delay);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        assert!(POLICY.next_delay(4, None, 0).is_none());
        assert!(RetryPolicy { max_attempts: 1, ..POLICY }.next_delay(1, None, 0).is_none());
    }

    #[test]
    fn honours_retry_after_within_the_cap() {
        assert_eq!(POLICY.next_delay(1, Some(Duration::from_secs(1)), 0), Some(Duration::from_secs(1)));
        assert_eq!(POLICY.next_delay(1, Some(Duration::from_secs(2)), 0), None);
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn retryable_statuses() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 301, 400, 401, 404, 413, 501] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
