//! A fan-out job's options, as a caller gives them, within the operator's limits.
//!
//! Every option has a default and a limit from [`Config`]; asking for more
//! than the limit is a 400 naming the option and the variable that sets it, so
//! a caller learns the limit instead of getting a quietly smaller job.

use super::driver::{Limits, Tolerance};
use super::retry::RetryPolicy;
use crate::api::ApiError;
use crate::config::{within, Config};
use serde::Deserialize;
use std::time::Duration;

/// How often NDJSON answers carry a progress line.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// The options a caller may set on a job (all optional).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobOptions {
    /// Worker calls at once (default and limit `FANOUT_WORKER_CONCURRENCY`).
    pub concurrency: Option<usize>,
    /// Time allowed for the whole job, in milliseconds (default and limit `FANOUT_JOB_DEADLINE_MS`).
    pub deadline_ms: Option<u64>,
    /// Memory for answers waiting for an earlier one, in bytes (default and limit `FANOUT_WINDOW_BYTES`).
    pub window_bytes: Option<usize>,
    /// Stop once more items than this have failed.
    pub tolerated_failures: Option<u64>,
    /// Stop once more than this percentage of items have failed.
    pub tolerated_failure_percent: Option<f64>,
}

impl JobOptions {
    /// Reads the options from query parameters (`?concurrency=4&deadline_ms=...`).
    pub fn from_query(param: impl Fn(&str) -> Option<String>) -> Result<JobOptions, ApiError> {
        fn parsed<T: std::str::FromStr>(
            param: &impl Fn(&str) -> Option<String>,
            name: &str,
        ) -> Result<Option<T>, ApiError> {
            param(name)
                .map(|v| v.parse::<T>().map_err(|_| ApiError::bad_request(format!("{name}={v:?} is not a number"))))
                .transpose()
        }
        Ok(JobOptions {
            concurrency: parsed(&param, "concurrency")?,
            deadline_ms: parsed(&param, "deadline_ms")?,
            window_bytes: parsed(&param, "window_bytes")?,
            tolerated_failures: parsed(&param, "tolerated_failures")?,
            tolerated_failure_percent: parsed(&param, "tolerated_failure_percent")?,
        })
    }

    /// Takes the options out of a JSON job body, leaving its other fields.
    pub fn take_from(job: &mut serde_json::Map<String, serde_json::Value>) -> Result<JobOptions, ApiError> {
        let keys = ["concurrency", "deadline_ms", "window_bytes", "tolerated_failures", "tolerated_failure_percent"];
        let options: serde_json::Map<_, _> =
            keys.iter().filter_map(|&k| Some((k.to_owned(), job.remove(k)?))).collect();
        serde_path_to_error::deserialize(serde_json::Value::Object(options))
            .map_err(|e| ApiError::bad_request(format!("invalid job option {}: {}", e.path(), e.inner())))
    }

    /// The driver's limits for a job whose units hold at most `unit_bytes`,
    /// checked against the operator's limits in `config`.
    ///
    /// The memory a job may hold is its window plus, for each call in flight,
    /// its unit (twice: the driver's copy and the request's) and its answer.
    /// When that passes `FANOUT_JOB_MEMORY_BYTES`, fewer calls run at once.
    pub fn limits(&self, config: &Config, unit_bytes: usize) -> Result<Limits, ApiError> {
        // A job's options default to the operator's limits.
        let (workers, deadline, window) =
            (config.worker_concurrency, config.job_deadline.as_millis() as u64, config.window_bytes);
        let concurrency = within("concurrency", self.concurrency, workers, workers, "FANOUT_WORKER_CONCURRENCY")?;
        let deadline_ms = within("deadline_ms", self.deadline_ms, deadline, deadline, "FANOUT_JOB_DEADLINE_MS")?;
        let window_bytes = within("window_bytes", self.window_bytes, window, window, "FANOUT_WINDOW_BYTES")?;
        let per_call = unit_bytes.saturating_mul(2).saturating_add(config.max_worker_response_bytes);
        let room = config.job_memory_bytes.saturating_sub(window_bytes);
        if room < per_call {
            return Err(ApiError::bad_request(format!(
                "the job needs {} bytes for its window and one call ({window_bytes} + 2 x {unit_bytes} + \
                 {} for the answer), more than FANOUT_JOB_MEMORY_BYTES={}: ask for a smaller window_bytes or chunk",
                window_bytes.saturating_add(per_call),
                config.max_worker_response_bytes,
                config.job_memory_bytes
            )));
        }
        if let Some(p) = self.tolerated_failure_percent {
            if !(0.0..=100.0).contains(&p) {
                return Err(ApiError::bad_request(format!("tolerated_failure_percent={p} is not between 0 and 100")));
            }
        }
        Ok(Limits {
            concurrency: concurrency.min(room / per_call).max(1),
            retry: RetryPolicy {
                max_attempts: config.worker_attempts,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(10),
            },
            call_timeout: config.worker_timeout,
            deadline: Duration::from_millis(deadline_ms),
            window_bytes,
            tolerance: Tolerance { count: self.tolerated_failures, percent: self.tolerated_failure_percent },
            progress_every: Some(PROGRESS_EVERY),
        })
    }
}

/// Checks a job's unit size: at least the operator's minimum, at most what a worker takes.
pub fn chunk_bytes(requested: Option<u64>, config: &Config) -> Result<usize, ApiError> {
    let Some(n) = requested else {
        // Not `clamp`: a minimum set over the workers' limit must not panic.
        return Ok(config.chunk_bytes.max(config.min_chunk_bytes).min(config.max_request_bytes));
    };
    if n < config.min_chunk_bytes as u64 {
        return Err(ApiError::bad_request(format!(
            "chunk_bytes={n} is under this deployment's minimum of {} (FANOUT_MIN_CHUNK_BYTES): \
             tiny chunks make one worker call per row",
            config.min_chunk_bytes
        )));
    }
    if n > config.max_request_bytes as u64 {
        return Err(ApiError::bad_request(format!(
            "chunk_bytes={n} is over the workers' request limit of {} (FANOUT_MAX_REQUEST_BYTES)",
            config.max_request_bytes
        )));
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_limits_and_more_is_refused() {
        let config = Config::default();
        let limits = JobOptions::default().limits(&config, 1 << 20).unwrap();
        assert_eq!(limits.concurrency, config.worker_concurrency);
        assert_eq!(limits.deadline, config.job_deadline);
        let over = JobOptions { concurrency: Some(config.worker_concurrency + 1), ..JobOptions::default() };
        let err = over.limits(&config, 1 << 20).unwrap_err();
        assert!(err.message().contains("FANOUT_WORKER_CONCURRENCY"), "{}", err.message());
        let zero = JobOptions { deadline_ms: Some(0), ..JobOptions::default() };
        assert!(zero.limits(&config, 1).is_err());
        let pct = JobOptions { tolerated_failure_percent: Some(101.0), ..JobOptions::default() };
        assert!(pct.limits(&config, 1).is_err());
    }

    /// A unit gets exactly FANOUT_WORKER_ATTEMPTS attempts: the retry policy gives up after that many, not before.
    #[test]
    fn retries_take_the_configured_attempts() {
        for attempts in [1, 2, 3, 7] {
            let config = Config { worker_attempts: attempts, ..Config::default() };
            let retry = JobOptions::default().limits(&config, 1 << 20).unwrap().retry;
            assert_eq!(retry.max_attempts, attempts, "FANOUT_WORKER_ATTEMPTS={attempts}");
            // A unit failing every time: its first call, then one more after each failure the policy retries.
            let calls = 1 + (1..=attempts + 1).filter(|&failed| retry.next_delay(failed, None, 0).is_some()).count();
            assert_eq!(calls, attempts as usize, "FANOUT_WORKER_ATTEMPTS={attempts}: calls to a failing unit");
        }
    }

    #[test]
    fn memory_budget_lowers_concurrency_or_refuses() {
        let config =
            Config { job_memory_bytes: 100, window_bytes: 40, max_worker_response_bytes: 10, ..Config::default() };
        assert_eq!(JobOptions::default().limits(&config, 5).unwrap().concurrency, 3);
        let err = JobOptions::default().limits(&config, 30).unwrap_err();
        assert!(err.message().contains("FANOUT_JOB_MEMORY_BYTES"), "{}", err.message());
    }

    #[test]
    fn chunk_sizes_have_a_floor_and_a_ceiling() {
        let tight = Config { max_request_bytes: 1000, ..Config::default() };
        assert_eq!(chunk_bytes(None, &tight).unwrap(), 1000);
        let config = Config::default();
        assert_eq!(chunk_bytes(None, &config).unwrap(), config.chunk_bytes);
        assert!(chunk_bytes(Some(1), &config).unwrap_err().message().contains("FANOUT_MIN_CHUNK_BYTES"));
        assert!(chunk_bytes(Some(1 << 40), &config).unwrap_err().message().contains("FANOUT_MAX_REQUEST_BYTES"));
    }

    #[test]
    fn json_options_are_taken_out_of_the_job() {
        let mut job =
            serde_json::json!({"urls": [], "concurrency": 2, "tolerated_failures": 5}).as_object().unwrap().clone();
        let o = JobOptions::take_from(&mut job).unwrap();
        assert_eq!((o.concurrency, o.tolerated_failures), (Some(2), Some(5)));
        assert_eq!(job.keys().collect::<Vec<_>>(), ["urls"]);
        let mut bad = serde_json::json!({"deadline_ms": "soon"}).as_object().unwrap().clone();
        assert!(JobOptions::take_from(&mut bad).unwrap_err().message().contains("invalid"));
    }

    #[test]
    fn query_options_parse() {
        let q = |k: &str| match k {
            "concurrency" => Some("3".to_owned()),
            "tolerated_failure_percent" => Some("2.5".to_owned()),
            _ => None,
        };
        let o = JobOptions::from_query(q).unwrap();
        assert_eq!(o.concurrency, Some(3));
        assert_eq!(o.tolerated_failure_percent, Some(2.5));
        assert!(JobOptions::from_query(|k| (k == "deadline_ms").then(|| "soon".to_owned())).is_err());
    }
}
