//! Range mode: `{"source": URL, "start": A, "end": B, "spec": {...}}`. The
//! worker fetches bytes A to B of the file itself (HTTP `Range`), a little more
//! to finish the record crossing B, and the header row when the range does
//! not start the file; [`fanout::transform::range`] says which records it owns.

use crate::{answer, spec_from_request};
use fanout::api::{parse_json, ApiError, ErrorKind};
use fanout::config::Config;
use fanout::egress::{self, Refusal};
use fanout::framing::Format;
use fanout::transform::engine::{prepare, read_header, Placement};
use fanout::transform::range::{self, NeedMore};
use fanout::transform::spec::{self, Spec};
use fanout_spin::{fetch, Outbound, Reply, Request};
use serde::Deserialize;
use spin_sdk::http::Method;

/// Bytes fetched past the range's end, at first, to finish its last record.
const OVERSHOOT: u64 = 64 * 1024;

/// The most bytes the header row may take.
const MAX_HEADER_BYTES: u64 = 64 * 1024;

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

/// Bytes of the source, and whether they reach its end.
struct Piece {
    bytes: Vec<u8>,
    at_eof: bool,
}

pub async fn range_mode(req: Request, format: Format) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let given = spec_from_request(&req)?;
    let job: RangeJob = parse_json(&req.body().await?)?;
    let spec = match (given, &job.spec) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request("the spec is given both in the body and outside it; give it one way"))
        }
        (Some(spec), None) => spec,
        (None, Some(v)) => spec::parse(v.to_string().as_bytes()).map_err(ApiError::bad_request)?,
        (None, None) => Spec::default(),
    };
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
    let url = egress::check(&job.source, config.allow_private_hosts).map_err(|r| match r {
        Refusal::Invalid(m) => ApiError::bad_request(format!("source: {m}")),
        Refusal::Blocked(m) => ApiError::new(ErrorKind::Forbidden, format!("source: {m}")),
    })?;

    let (names, data_start, line_offset) = if spec.dialect.header {
        let prefix = fetch_range(&config, url.as_str(), 0, MAX_HEADER_BYTES - 1).await?;
        if !prefix.at_eof && !prefix.bytes.contains(&b'\n') {
            return Err(ApiError::bad_request(format!(
                "the source's header row is longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        let header = read_header(&spec.dialect, &prefix.bytes).map_err(ApiError::bad_request)?;
        // Lines are counted from the range's first record, except in the range that
        // owns the file's first record, where they are the file's.
        let data_start = header.data_start as u64;
        let lines = if job.start <= data_start { header.lines } else { 0 };
        (header.names, data_start, lines)
    } else {
        read_header(&spec.dialect, &[]).map(|h| (h.names, 0, 0)).map_err(ApiError::bad_request)?
    };
    let program = prepare(&spec, &names).map_err(ApiError::bad_request)?;

    let from = range::fetch_from(job.start);
    let mut buf = Vec::new();
    let mut upto = job.end.saturating_add(OVERSHOOT);
    let cut = loop {
        let piece =
            fetch_range(&config, url.as_str(), from + buf.len() as u64, upto.max(from + buf.len() as u64)).await?;
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

/// Fetches bytes `first..=last` of `url`.
async fn fetch_range(config: &Config, url: &str, first: u64, last: u64) -> Result<Piece, ApiError> {
    let gateway = |m: String| ApiError::new(ErrorKind::BadGateway, format!("source {url}: {m}"));
    let response = fetch(Outbound {
        method: Method::Get,
        url,
        headers: vec![("range", format!("bytes={first}-{last}"))],
        body: None,
        timeout: config.source_timeout,
        // What was asked for; a server that ignores Range sends the whole file,
        // which is allowed while it fits in the request limit too.
        max_bytes: usize::try_from(last.saturating_sub(first).saturating_add(1))
            .unwrap_or(usize::MAX)
            .saturating_add(config.max_request_bytes),
        truncate: false,
    })
    .await
    .map_err(|e| gateway(e.to_string()))?;
    match response.status {
        206 => {
            let (start, end, total) = response
                .header("content-range")
                .and_then(parse_content_range)
                .ok_or_else(|| gateway("answered 206 without a usable Content-Range".into()))?;
            if start != first || end < start || response.body.len() as u64 != end - start + 1 {
                return Err(gateway(format!("answered bytes {start}-{end} when asked for {first}-{last}")));
            }
            Ok(Piece { bytes: response.body, at_eof: total.map_or(end < last, |t| end.saturating_add(1) >= t) })
        }
        200 => {
            // The server ignored Range and sent the whole file: cut the range from it.
            let body = response.body;
            let len = body.len() as u64;
            let (from, to) = (first.min(len), last.saturating_add(1).min(len));
            Ok(Piece { bytes: body[from as usize..to.max(from) as usize].to_vec(), at_eof: to == len })
        }
        416 => Ok(Piece { bytes: Vec::new(), at_eof: true }),
        status => Err(gateway(format!("answered {status}"))),
    }
}

/// Parses `bytes A-B/TOTAL` (TOTAL may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?, total.parse().ok()))
}
