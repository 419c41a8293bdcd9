//! Fan-out: a job split across many worker invocations and merged back.
//!
//! * [`driver`]: the job as a state machine, told what happened and when, answering
//!   with what to do next (call a worker, emit bytes, wake later).
//! * [`split`]: a CSV stream cut into chunks of whole records as it arrives.
//! * [`plan`]: URL lists cut into batches, files into byte ranges.
//! * [`merge`]: worker answers checked against what they were given, and merged in order.
//! * [`options`]: a job's options, within the operator's limits.
//! * [`retry`]: when and after how long a failed call is tried again.
//! * [`local`]: a transform job run in this process, as the coordinator runs it.
//! * [`jobs`]: durable jobs, their state and results in a bucket, advanced by ticks.

pub mod driver;
pub mod jobs;
pub mod local;
pub mod merge;
pub mod options;
pub mod plan;
pub mod retry;
pub mod split;

#[cfg(test)]
mod sim;
