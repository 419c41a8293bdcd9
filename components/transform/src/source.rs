//! Range mode: `{"source": URL, "start": A, "end": B, "spec": {...}}`. The
//! worker fetches bytes A to B of the file itself (HTTP `Range`), a little more
//! to finish the record crossing B, and the header row when the range does
//! not start the file; [`fanout::transform::range`] says which records it owns.

use crate::answer;
use fanout::api::{parse_json, ApiError, ErrorKind};
use fanout::framing::Format;
use fanout::transform::engine::{prepare, Placement};
use fanout::transform::range::{self, NeedMore};
use fanout::transform::spec;
use fanout_spin::{source, Reply, Request};
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
    answer(spec, program, buf, cut.begin, format, placement)
}
