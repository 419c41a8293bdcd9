//! The transform worker: `POST /transform` runs a spec ([`fanout::transform`])
//! over a CSV chunk sent as the body, or over a byte range of a file it
//! fetches itself (range mode), and streams records, error records and counts
//! back as JSON or NDJSON.
//!
//! * [`source`]: range mode's fetching of the range and the header.

mod source;

use fanout::api::{ApiError, ErrorKind};
use fanout::content::media_type;
use fanout::framing::Format;
use fanout::transform::engine::{prepare, read_header, run_compiled, Placement, Progress, RunError, Transformer};
use fanout::transform::program::Program;
use fanout::transform::spec::{OnError, Spec};
use fanout_spin::{serve, Reply, Request};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

/// Streamed answers are sent in pieces of about this size.
const PIECE_BYTES: usize = 64 * 1024;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, route).await
}

async fn route(req: Request) -> Result<Reply, ApiError> {
    if req.path != "/transform" {
        return Err(ApiError::not_found(&req.method, &req.path));
    }
    req.allow(&["POST"])?;
    let format = Format::from_accept(req.header("accept")?.as_deref());
    let essence = req.header("content-type")?.map(|c| media_type(&c)).unwrap_or_default();
    match essence.as_str() {
        "application/json" => source::range_mode(req, format).await,
        "" | "text/csv" | "text/plain" | "application/octet-stream" => {
            let spec = req.transform_spec()?.unwrap_or_default();
            let offset = line_offset(&req)?;
            let data = req.body().await?;
            let header = read_header(&spec.dialect, &data).map_err(ApiError::bad_request)?;
            let program = prepare(&spec, &header.names).map_err(ApiError::bad_request)?;
            let placement = Placement { line_offset: header.lines + offset, ..Placement::default() };
            answer(spec, program, data, header.data_start, format, placement)
        }
        other => Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!("POST /transform reads text/csv (a chunk) or application/json (range mode), not {other:?}"),
        )),
    }
}

/// The `line_offset` query parameter: added to every line number, so that a
/// caller sending one chunk of a larger file gets the file's line numbers.
fn line_offset(req: &Request) -> Result<u64, ApiError> {
    match req.query_param("line_offset") {
        None => Ok(0),
        Some(v) => v.parse().map_err(|_| ApiError::bad_request(format!("line_offset={v:?} is not a whole number"))),
    }
}

/// Answers with the transform of `data[rows_from..]`: streamed, unless the
/// answer must be complete first (`on_error: fail`), so that a bad row can
/// still turn it into a 422.
fn answer(
    spec: Spec,
    program: Program,
    data: Vec<u8>,
    rows_from: usize,
    format: Format,
    placement: Placement,
) -> Result<Reply, ApiError> {
    if spec.on_error == OnError::Fail {
        return match run_compiled(&spec, &program, &data[rows_from..], format, placement) {
            Ok(out) => Ok(Reply::bytes(format.content_type(), out)),
            Err(RunError::Spec(m)) => Err(ApiError::bad_request(m)),
            Err(RunError::Halt(h)) => Err(ApiError::new(ErrorKind::BadRow, h.to_string())),
        };
    }
    Ok(Reply::stream(format.content_type(), move |mut body| async move {
        let Ok(mut t) = Transformer::new(&spec, &program, &data[rows_from..], format, placement) else { return };
        let mut piece = Vec::with_capacity(PIECE_BYTES * 2);
        loop {
            // Without `fail` nothing halts a chunk.
            let progress = t.fill(&mut piece, PIECE_BYTES).unwrap_or(Progress::Done);
            let full = std::mem::replace(&mut piece, Vec::with_capacity(PIECE_BYTES * 2));
            if !body.write(full).await || progress == Progress::Done {
                return;
            }
        }
    }))
}
