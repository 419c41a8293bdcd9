//! Range mode: `{"source": URL, "start": A, "end": B, "spec": {...}}`. The
//! worker fetches bytes A to B of the file itself (HTTP `Range`), a little more
//! to finish the record crossing B, and the header row when the range does
//! not start the file; [`fanout::transform::range`] says which records it owns.
//!
//! In a durable job the request also has a `sink`: the records and error
//! records go to the bucket through its presigned URLs
//! ([`fanout::fanout::jobs::commit`]), and the answer is the unit's receipt.

use crate::answer;
use fanout::api::{parse_json, ApiError, ErrorKind};
use fanout::fanout::jobs::commit::{Adopt, Output, SinkUrls};
use fanout::fanout::jobs::receipt::{Outcome, Tally};
use fanout::framing::Format;
use fanout::transform::engine::{prepare, run_parts, Placement, RunError};
use fanout::transform::program::Program;
use fanout::transform::range::{self, NeedMore};
use fanout::transform::spec::{self, Spec};
use fanout_spin::sink::HttpSink;
use fanout_spin::{now, source, Reply, Request};
use serde::Deserialize;

/// Bytes fetched past the range's end, at first, to finish its last record.
const OVERSHOOT: u64 = 64 * 1024;

/// A range-mode request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeJob {
    source: String,
    start: u64,
    end: u64,
    #[serde(default)]
    spec: Option<serde_json::Value>,
    /// In a durable job: where the unit's objects go.
    #[serde(default)]
    sink: Option<SinkUrls>,
}

pub async fn range_mode(req: Request, format: Format) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let given = req.transform_spec()?;
    let job: RangeJob = parse_json(&req.body().await?)?;
    let spec = spec::of_json_job(given, job.spec.as_ref())?;
    if job.end < job.start {
        return Err(ApiError::bad_request(format!("end ({}) is before start ({})", job.end, job.start)));
    }
    if job.end - job.start > config.max_request_bytes as u64 {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the range is {} bytes; the limit is {} (FANOUT_MAX_REQUEST_BYTES)",
                job.end - job.start,
                config.max_request_bytes
            ),
        ));
    }
    let url = source::check("source", &job.source, &config)?;
    let sink = job.sink.map(|urls| HttpSink::new(urls, &config)).transpose()?;
    let header = source::header(&config, &url, &spec.dialect).await?;
    // Lines are counted from the range's first record, except in the range that
    // owns the file's first record, where they are the file's.
    let data_start = header.data_start as u64;
    let line_offset = if job.start <= data_start { header.lines } else { 0 };
    let names = header.names;
    let program = prepare(&spec, &names).map_err(ApiError::bad_request)?;

    let from = range::fetch_from(job.start);
    let mut buf = Vec::new();
    let mut upto = job.end.saturating_add(OVERSHOOT);
    let cut = loop {
        let piece = source::range(&config, &url, from + buf.len() as u64, upto.max(from + buf.len() as u64)).await?;
        buf.extend_from_slice(&piece.bytes);
        match range::cut(&buf, job.start, job.end, data_start, piece.at_eof) {
            Ok(cut) => break cut,
            Err(NeedMore) if buf.len() > config.max_request_bytes => {
                return Err(ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    format!(
                        "the record crossing the end of the range does not end within {} bytes",
                        config.max_request_bytes
                    ),
                ))
            }
            Err(NeedMore) => upto = upto.saturating_add(OVERSHOOT.max(upto - job.end)),
        }
    };
    buf.truncate(cut.end);
    let placement = Placement { line_offset, range_start: Some(from.saturating_add(cut.begin as u64)) };
    match sink {
        Some(sink) => {
            conclude(spec, program, &buf[cut.begin..], placement, sink, config.max_worker_response_bytes).await
        }
        None => answer(spec, program, buf, cut.begin, format, placement),
    }
}

/// A durable job's unit: its records and error records written to the
/// bucket, and its receipt as the answer.
async fn conclude(
    spec: Spec,
    program: Program,
    rows: &[u8],
    placement: Placement,
    sink: HttpSink,
    max_partial: usize,
) -> Result<Reply, ApiError> {
    let started = now();
    let parts = run_parts(&spec, &program, rows, placement).map_err(|e| match e {
        RunError::Spec(m) => ApiError::bad_request(m),
        RunError::Halt(h) => ApiError::new(ErrorKind::BadRow, h.to_string()),
    })?;
    // A partial aggregate is read by the coordinator to be merged, as a worker's answer would be.
    if spec.aggregate.is_some() && parts.part.len() > max_partial {
        return Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!(
                "the unit's partial aggregate takes {} bytes, over the {max_partial} the coordinator reads \
                 (FANOUT_MAX_WORKER_RESPONSE_BYTES): fewer groups, or a larger limit",
                parts.part.len()
            ),
        ));
    }
    let output = Output {
        part: Some(parts.part),
        errors: (!parts.errors.is_empty()).then_some(parts.errors),
        tally: Tally::Rows(parts.stats),
        outcome: Outcome::Done,
        process_ms: now().saturating_sub(started).as_millis() as u64,
    };
    // A transform unit is deterministic: an earlier run's objects must be these.
    sink.conclude(output, Adopt::Same).await
}
