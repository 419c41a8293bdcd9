//! Range mode: `{"source": URL, "start": A, "end": B, "spec": {...}}`. The
//! worker fetches bytes A to B of the file itself (HTTP `Range`), a little more
//! to finish the record crossing B, and the header row when the range does
//! not start the file; [`fanout::transform::range`] says which records it owns
//! and where they began and ended, which the answer reports (`range`). With
//! `"begin": C` it reads from C, a record boundary the caller knows (the end
//! of the range before); with `"pin": {...}` every read checks that the file
//! is still the one the job was planned on.
//!
//! In a durable job the request also has a `sink`: the records and error
//! records go to the bucket through its presigned URLs
//! ([`fanout::fanout::jobs::commit`]), and the answer is the unit's receipt.

use crate::answer;
use fanout::api::{parse_json, ApiError, ErrorKind};
use fanout::content::Pin;
use fanout::fanout::jobs::commit::{Adopt, Output, SinkUrls};
use fanout::fanout::jobs::receipt::{Outcome, Tally};
use fanout::framing::Format;
use fanout::transform::engine::{prepare, run_parts, Placement, RunError};
use fanout::transform::program::Program;
use fanout::transform::range::{Cutter, Entry, Step};
use fanout::transform::spec::{self, Spec};
use fanout_spin::sink::HttpSink;
use fanout_spin::{now, source, Reply, Request};
use serde::Deserialize;

/// Bytes fetched past the range's end, at first, to finish its last record;
/// each later fetch doubles, up to [`MAX_FETCH`].
const OVERSHOOT: u64 = 64 * 1024;
const MAX_FETCH: u64 = 4 * 1024 * 1024;

/// A range-mode request body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RangeJob {
    source: String,
    start: u64,
    end: u64,
    /// Where the range's first record starts, when the caller knows.
    #[serde(default)]
    begin: Option<u64>,
    /// The file as planned.
    #[serde(default)]
    pin: Option<Pin>,
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
    if let Some(begin) = job.begin.filter(|&b| b < job.start) {
        return Err(ApiError::bad_request(format!("begin ({begin}) is before start ({})", job.start)));
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
    let names = header.names;
    let program = prepare(&spec, &names).map_err(ApiError::bad_request)?;

    let data_start = header.data_start as u64;
    let entry = job.begin.map_or(Entry::Guess, Entry::At);
    let (delimiter, quote) = spec.dialect.bytes();
    let mut cutter = Cutter::new(job.start, job.end, data_start, entry, quote, delimiter, config.max_request_bytes);
    let mut want = job.end.saturating_sub(job.start).saturating_add(OVERSHOOT);
    let mut step = cutter.first();
    let owned = loop {
        let from = match step {
            Step::Done(owned) => break owned,
            Step::More(from) => from,
        };
        let piece = source::range(&config, &url, from, from.saturating_add(want - 1), job.pin.as_ref()).await?;
        if piece.bytes.is_empty() && !piece.at_eof {
            return Err(ApiError::new(ErrorKind::BadGateway, format!("source {url}: answered no bytes from {from}")));
        }
        step = cutter.push(&piece.bytes, piece.at_eof);
        want = want.saturating_mul(2).clamp(OVERSHOOT, MAX_FETCH);
    };
    match sink {
        Some(sink) => {
            // A durable job's units are not checked against each other's
            // boundaries: its records must each be one line, and its line
            // numbers are the file's only in the range that starts the file.
            let line_offset = if owned.span.begin == data_start { header.lines } else { 0 };
            let placement = Placement { line_offset, range: Some(owned.span), one_line_records: true };
            conclude(spec, program, &owned.records, placement, sink, config.max_worker_response_bytes).await
        }
        None => {
            // Lines are counted from the first record's line as 1; the caller adds the lines before it.
            let placement = Placement { line_offset: 0, range: Some(owned.span), one_line_records: false };
            answer(spec, program, owned.records, 0, format, placement)
        }
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
