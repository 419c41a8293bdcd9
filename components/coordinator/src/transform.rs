//! `POST /coordinate/transform`: a CSV file fanned out to the transform worker.
//!
//! * A CSV body is read as it arrives and cut into chunks of whole records
//!   ([`Splitter`]); each chunk goes to a worker while the rest is still arriving.
//! * A JSON body `{"source": URL, ...}` names a file the coordinator never
//!   downloads: it learns its size, and each worker reads one byte range of it.
//!
//! Either way the spec is checked against the file's header before any worker
//! is called, and records (or merged aggregates) stream back in file order.

use crate::run::{worker_url, Job, Units, Worker};
use fanout::api::{parse_json, ApiError};
use fanout::config::Config;
use fanout::content::media_type;
use fanout::fanout::driver::{Driver, Expected, Input, Unit};
use fanout::fanout::merge::{ChunkMeta, RangeChain, TableMerge, TableMode};
use fanout::fanout::options::{self, JobOptions};
use fanout::fanout::plan;
use fanout::fanout::split::Splitter;
use fanout::framing::Format;
use fanout::transform::engine::{self, read_header};
use fanout::transform::spec::{self, Spec};
use fanout_spin::{random_u64, source, BodyStream, Reply, Request};
use futures::stream;
use serde_json::{Map, Value};
use std::rc::Rc;

/// `POST /coordinate/transform`.
pub async fn coordinate(req: Request) -> Result<Reply, ApiError> {
    let format = Format::from_accept(req.header("accept")?.as_deref());
    let essence = req.header("content-type")?.map(|c| media_type(&c)).unwrap_or_default();
    match essence.as_str() {
        "application/json" => source_job(req, format).await,
        "" | "text/csv" | "text/plain" | "application/octet-stream" => body_job(req, format).await,
        other => Err(ApiError::new(
            fanout::api::ErrorKind::UnsupportedMediaType,
            format!("POST /coordinate/transform reads text/csv (the file) or application/json (a source URL), not {other:?}"),
        )),
    }
}

/// The spec as checked against the file's columns, and what the workers are sent.
pub struct Prepared {
    /// The output's shape.
    pub mode: TableMode,
    /// The spec as JSON, aggregates asked for as partial state.
    pub worker_spec: Value,
}

pub fn prepare_spec(spec: &Spec, names: &[String]) -> Result<Prepared, ApiError> {
    let (mode, worker_spec) = TableMode::of_spec(spec, names).map_err(ApiError::bad_request)?;
    let text = serde_json::to_string(&worker_spec).expect("specs serialise");
    if text.len() > spec::MAX_SPEC_BYTES {
        return Err(ApiError::bad_request(format!(
            "the spec is {} bytes with its preset written out, over the workers' limit of {}",
            text.len(),
            spec::MAX_SPEC_BYTES
        )));
    }
    Ok(Prepared { mode, worker_spec: serde_json::to_value(&worker_spec).expect("specs serialise") })
}

/// A CSV body, split as it arrives.
async fn body_job(req: Request, format: Format) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let base = worker_url(&config.transform_url, "FANOUT_TRANSFORM_URL")?;
    let spec = req.transform_spec()?.unwrap_or_default();
    let options = JobOptions::from_query(|k| req.query_param(k))?;
    let chunk_bytes = match req.query_param("chunk_bytes") {
        None => None,
        Some(v) => {
            Some(v.parse::<u64>().map_err(|_| ApiError::bad_request(format!("chunk_bytes={v:?} is not a number")))?)
        }
    };
    let chunk_bytes = options::chunk_bytes(chunk_bytes, &config)?;
    let unit_bytes = chunk_bytes.saturating_mul(2).saturating_add(source::MAX_HEADER_BYTES as usize);
    let limits = options.limits(&config, config.max_request_bytes.min(unit_bytes))?;
    // The dialect's mistakes are found here, before the body is read.
    engine::reader(&spec.dialect, &[]).map_err(ApiError::bad_request)?;
    let (delimiter, quote) = spec.dialect.bytes();
    let mut body = req.body_stream(config.max_job_bytes)?;
    let mut splitter = Splitter::new(delimiter, quote, spec.dialect.header, chunk_bytes, config.max_request_bytes);

    // The header first: the spec is checked against it before any worker is called.
    let mut ended = false;
    while !splitter.find_header().map_err(|e| ApiError::bad_request(e.0))? {
        match body.next().await {
            Some(piece) => splitter.push(&piece?),
            None => {
                splitter.end();
                ended = true;
            }
        }
    }
    let names = read_header(&spec.dialect, splitter.header().unwrap_or_default()).map_err(ApiError::bad_request)?.names;
    let prepared = prepare_spec(&spec, &names)?;
    let mut url = base;
    url.query_pairs_mut().append_pair("spec", &prepared.worker_spec.to_string());
    let url = url.to_string();
    let worker = Worker::new(
        &config,
        move |meta| match meta {
            // The worker counts lines from its chunk's header; this makes them the file's.
            ChunkMeta::Lines { line_offset, .. } => format!("{url}&line_offset={line_offset}"),
            ChunkMeta::Range { .. } => url.clone(),
        },
        "text/csv",
    );
    let driver = Driver::new(TableMerge::new(format, prepared.mode, spec.filter.is_some()), limits, random_u64());
    let units = chunks(body, splitter, ended, config.max_request_bytes);
    Job::new(driver, units, worker, format == Format::Json).respond(format.content_type()).await
}

/// The chunks of a body as it arrives.
fn chunks(body: BodyStream, splitter: Splitter, ended: bool, max_bytes: usize) -> Units<ChunkMeta> {
    Box::pin(stream::try_unfold((body, splitter, ended), move |(mut body, mut splitter, mut ended)| async move {
        loop {
            match splitter.next_piece().map_err(|e| ApiError::bad_request(e.0))? {
                Some(piece) => return Ok(Some((ChunkMeta::input(piece, max_bytes), (body, splitter, ended)))),
                None if ended => return Ok(None),
                None => match body.next().await {
                    Some(piece) => splitter.push(&piece?),
                    None => {
                        splitter.end();
                        ended = true;
                    }
                },
            }
        }
    }))
}

/// A source job as a JSON body gives it: `{"source": URL, "spec": ..., "chunk_bytes": N, ...job options}`.
pub struct SourceJob {
    /// The file: a URL, or `s3://BUCKET/KEY` for a durable job.
    pub source: String,
    /// The spec.
    pub spec: Spec,
    /// Bytes per unit, checked against the operator's limits.
    pub chunk_bytes: usize,
    /// The job's options.
    pub options: JobOptions,
    /// Fields the caller asked for besides these (`extra` names the ones the route takes).
    pub extra: Map<String, Value>,
}

/// Reads a source job's body; `extra` are the fields the route takes besides the common ones.
pub fn source_request(
    given: Option<Spec>,
    body: &[u8],
    config: &Config,
    extra: &[&str],
) -> Result<SourceJob, ApiError> {
    let mut job: Map<String, Value> = parse_json(body)?;
    let options = JobOptions::take_from(&mut job)?;
    let chunk_bytes = match job.remove("chunk_bytes") {
        None => None,
        Some(v) => Some(
            v.as_u64().ok_or_else(|| ApiError::bad_request(format!("chunk_bytes must be a whole number, not {v}")))?,
        ),
    };
    let chunk_bytes = options::chunk_bytes(chunk_bytes, config)?;
    let source = match job.remove("source") {
        Some(Value::String(s)) => s,
        Some(v) => return Err(ApiError::bad_request(format!("source must be a URL string, not {v}"))),
        None => return Err(ApiError::bad_request("a JSON body names the file to transform: {\"source\": URL, ...}")),
    };
    let spec = spec::of_json_job(given, job.remove("spec").as_ref())?;
    let taken: Map<String, Value> = extra.iter().filter_map(|&k| Some((k.to_owned(), job.remove(k)?))).collect();
    if let Some(key) = job.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown field {key:?}: a source job takes source, spec, chunk_bytes, concurrency, deadline_ms, \
             window_bytes, tolerated_failures and tolerated_failure_percent{}",
            extra.iter().map(|k| format!(", {k}")).collect::<String>()
        )));
    }
    Ok(SourceJob { source, spec, chunk_bytes, options, extra: taken })
}

/// `{"source": URL, "spec": ..., "chunk_bytes": N, ...job options}`: each
/// worker reads one byte range of the source itself.
async fn source_job(req: Request, format: Format) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let base = worker_url(&config.transform_url, "FANOUT_TRANSFORM_URL")?;
    let given = req.transform_spec()?;
    let SourceJob { source, spec, chunk_bytes, options, .. } = source_request(given, &req.body().await?, &config, &[])?;
    let limits = options.limits(&config, 4096)?;
    let url = source::check("source", &source, &config)?;
    let pin = source::pin(&config, &url).await?;
    let size = pin.size;
    let header = source::header(&config, &url, &spec.dialect).await?;
    let prepared = prepare_spec(&spec, &header.names)?;
    let base = base.to_string();
    let worker = Worker::new(&config, move |_| base.clone(), "application/json");
    // Every range's request: the file as it is now, and the spec.
    let mut request = Map::new();
    request.insert("source".into(), Value::String(url.to_string()));
    request.insert("spec".into(), prepared.worker_spec);
    request.insert("pin".into(), serde_json::to_value(&pin).expect("pins serialise"));
    let chain = RangeChain::new(request, size, header.data_start as u64, header.lines);
    let planned = chain.clone();
    let units = plan::byte_ranges(size, chunk_bytes as u64).map(move |range| {
        Ok(Input::Unit(Unit {
            payload: Rc::new(planned.request(&range, None)),
            items: None,
            bytes: range.end - range.start,
            meta: ChunkMeta::Range { bytes: range, begin: None },
        }))
    });
    let merge = TableMerge::new(format, prepared.mode, spec.filter.is_some()).with_ranges(chain);
    let mut driver = Driver::new(merge, limits, random_u64());
    driver.expect(Expected { units: Some(size.div_ceil(chunk_bytes as u64)), items: None, bytes: Some(size) });
    Job::new(driver, Box::pin(stream::iter(units)), worker, format == Format::Json).respond(format.content_type()).await
}
