//! The coordinator: splits a job across many worker invocations, runs them
//! concurrently within limits, retries failed ones, and merges the answers
//! back in input order.
//!
//! * `POST /coordinate/scrape`: a URL list, in batches, to the scrape worker.
//! * `POST /coordinate/transform`: a CSV file, in chunks of whole records, to the transform worker.

use fanout::api::{parse_json, ApiError, ErrorKind};
use fanout::config::Config;
use fanout::merge::{ChunkAnswer, TransformMerge};
use fanout::retry::{parse_retry_after, retryable_status, RetryPolicy};
use fanout::scrape::{Outcome, PageResult, ScrapeRequest, ScrapeResponse};
use fanout::transform::aggregate::{Groups, Shape};
use fanout::transform::engine::{prepare, read_header};
use fanout::transform::spec;
use fanout::{merge, plan};
use fanout_spin::{fetch, random_u64, serve, sleep, FetchError, Outbound, Reply, Request};
use futures::StreamExt;
use serde::Serialize;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;
use std::time::Duration;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, route).await
}

async fn route(req: Request) -> Result<Reply, ApiError> {
    match req.path.as_str() {
        "/coordinate/scrape" => {
            req.allow(&["POST"])?;
            coordinate_scrape(req).await
        }
        "/coordinate/transform" => {
            req.allow(&["POST"])?;
            coordinate_transform(req).await
        }
        _ => Err(ApiError::not_found(&req.method, &req.path)),
    }
}

/// The merged answer of a scrape job.
#[derive(Serialize)]
struct ScrapeJobOutput {
    results: Vec<PageResult>,
    stats: ScrapeStats,
}

#[derive(Serialize)]
struct ScrapeStats {
    urls: usize,
    pages: usize,
    errors: usize,
    invocations: usize,
}

async fn coordinate_scrape(req: Request) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let worker = worker_url(&config.scrape_url, "FANOUT_SCRAPE_URL")?;
    // A scrape request plus `batch_size`, which is the coordinator's alone.
    let mut body: serde_json::Map<String, serde_json::Value> = parse_json(&req.body().await?)?;
    let batch_size =
        match body.remove("batch_size") {
            None => config.batch_size,
            Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
                ApiError::bad_request(format!("batch_size must be a whole number of at least 1, not {v}"))
            })? as usize,
        };
    let job: ScrapeRequest = serde_json::from_value(serde_json::Value::Object(body))
        .map_err(|e| ApiError::bad_request(format!("invalid scrape job: {e}")))?;
    job.extract_options()?;
    if job.urls.len() > config.max_urls {
        return Err(ApiError::bad_request(format!(
            "urls holds {} URLs; the limit is {} (FANOUT_MAX_URLS)",
            job.urls.len(),
            config.max_urls
        )));
    }
    let batches = plan::batches(job.urls.len(), batch_size);
    let invocations = batches.len();
    let urls = &job.urls;
    let results: Vec<PageResult> = futures::stream::iter(batches)
        .map(|batch| async {
            let batch_request = ScrapeRequest { urls: urls[batch.clone()].to_vec(), ..job.clone() };
            let body = serde_json::to_vec(&batch_request).expect("a scrape request always serialises");
            let answer = call_worker(&config, worker, "application/json", body).await.map_err(|f| f.message);
            let parsed = answer.and_then(|bytes| {
                serde_json::from_slice::<ScrapeResponse>(&bytes)
                    .map_err(|e| format!("worker answer is not a scrape response: {e}"))
            });
            merge::scrape_batch(urls, batch, parsed)
        })
        .buffered(config.worker_concurrency)
        .flat_map(futures::stream::iter)
        .collect()
        .await;
    let pages = results.iter().filter(|r| matches!(r.outcome, Outcome::Page(_))).count();
    let stats = ScrapeStats { urls: results.len(), pages, errors: results.len() - pages, invocations };
    Ok(Reply::json(&ScrapeJobOutput { results, stats }))
}

/// `POST /coordinate/transform`: the file is cut into chunks of whole records,
/// each sent with the header and the spec to the transform worker; records are
/// merged in order, or partial aggregates merged exactly and then finished.
async fn coordinate_transform(req: Request) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let worker = worker_url(&config.transform_url, "FANOUT_TRANSFORM_URL")?;
    let chunk_bytes = match req.query_param("chunk_bytes") {
        None => config.chunk_bytes,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| ApiError::bad_request(format!("chunk_bytes={v:?} is not a positive whole number")))?,
    };
    let spec = spec::from_request(req.header("x-fanout-spec"), req.query_param("spec"), req.query_param("preset"))?
        .unwrap_or_default();
    let data = req.body().await?;
    // Every mistake in the spec is found here, before any worker is called.
    let header = read_header(&spec.dialect, &data).map_err(ApiError::bad_request)?;
    let program = prepare(&spec, &header.names).map_err(ApiError::bad_request)?;
    let groups = match &spec.aggregate {
        Some(aggregate) => {
            let shape = Shape::compile(aggregate, &program.schema()).map_err(ApiError::bad_request)?.shape;
            Some(Groups::new(shape))
        }
        None => None,
    };
    let mut worker_spec = spec.clone();
    if let Some(aggregate) = worker_spec.aggregate.as_mut() {
        aggregate.partial = true;
    }
    let mut worker_url = url::Url::parse(worker)
        .map_err(|e| ApiError::new(ErrorKind::Config, format!("FANOUT_TRANSFORM_URL={worker:?} is not a URL: {e}")))?;
    let worker_spec = serde_json::to_string(&worker_spec).expect("specs serialise");
    if worker_spec.len() > spec::MAX_SPEC_BYTES {
        return Err(ApiError::bad_request(format!(
            "the spec is {} bytes with its preset written out, over the workers' limit of {}",
            worker_spec.len(),
            spec::MAX_SPEC_BYTES
        )));
    }
    worker_url.query_pairs_mut().append_pair("spec", &worker_spec);

    let plan = plan::csv_chunks(&data, chunk_bytes, &spec.dialect)?;
    let invocations = plan.chunks.len();
    let answers: Vec<Result<ChunkAnswer, WorkerFailure>> = futures::stream::iter(0..invocations)
        .map(|i| {
            let body = plan.body(&data, i);
            let config = &config;
            // The worker counts lines from its chunk's header; this makes them the file's.
            let mut url = worker_url.clone();
            url.query_pairs_mut().append_pair("line_offset", &plan.chunks[i].line_offset.to_string());
            async move {
                let bytes = call_worker(config, url.as_str(), "text/csv", body).await?;
                serde_json::from_slice::<ChunkAnswer>(&bytes).map_err(|e| WorkerFailure {
                    status: None,
                    message: format!("worker answer is not a transform output: {e}"),
                })
            }
        })
        .buffered(config.worker_concurrency)
        .collect()
        .await;
    let mut merge = TransformMerge::new(groups);
    for (chunk, answer) in plan.chunks.iter().zip(answers) {
        if let Err(WorkerFailure { status: Some(422), message }) = &answer {
            // `on_error: fail` asked for the first bad row to fail the job.
            return Err(ApiError::new(ErrorKind::BadRow, message.clone()));
        }
        merge.add(chunk, answer.map_err(|f| f.message));
    }
    let TransformMerge { output, groups } = merge;
    let answer = match (groups, &spec.aggregate) {
        (Some(groups), Some(aggregate)) if aggregate.partial => serde_json::json!({
            "partial": groups.to_partial(), "errors": output.errors, "stats": output.stats, "invocations": invocations
        }),
        (Some(groups), Some(aggregate)) => serde_json::json!({
            "groups": groups.finish(aggregate).map_err(ApiError::bad_request)?,
            "errors": output.errors, "stats": output.stats, "invocations": invocations
        }),
        _ => serde_json::json!({
            "records": output.records, "errors": output.errors, "stats": output.stats, "invocations": invocations
        }),
    };
    Ok(Reply::json(&answer))
}

fn worker_url<'a>(url: &'a Option<String>, variable: &str) -> Result<&'a str, ApiError> {
    url.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::Config,
            format!("{variable} is not set: the coordinator does not know where the worker is"),
        )
    })
}

/// Posts `body` to a worker, retrying connection failures, time-outs, 429 and
/// 5xx answers with backoff, and returns the body of its 200 answer or why there is none.
/// Why a worker invocation has no answer, after its retries.
struct WorkerFailure {
    /// The worker's last HTTP status, if it answered.
    status: Option<u16>,
    message: String,
}

async fn call_worker(config: &Config, url: &str, content_type: &str, body: Vec<u8>) -> Result<Vec<u8>, WorkerFailure> {
    let policy = RetryPolicy {
        max_attempts: config.worker_attempts,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(10),
    };
    let mut headers = vec![("content-type", content_type.to_owned()), ("accept", "application/json".to_owned())];
    if let Some(token) = &config.token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let mut failed = 0;
    loop {
        let answer = fetch(Outbound {
            method: Method::Post,
            url,
            headers: headers.clone(),
            body: Some(body.clone()),
            timeout: config.worker_timeout,
            max_bytes: config.max_worker_response_bytes,
            truncate: false,
        })
        .await;
        failed += 1;
        let (reason, status, retry_after) = match answer {
            Ok(resp) if resp.status == 200 => return Ok(resp.body),
            Ok(resp) => {
                let reason = format!("worker answered {}: {}", resp.status, worker_message(&resp.body));
                if !retryable_status(resp.status) {
                    return Err(WorkerFailure { status: Some(resp.status), message: reason });
                }
                (reason, Some(resp.status), resp.header("retry-after").and_then(parse_retry_after))
            }
            Err(e @ (FetchError::TooLarge(_) | FetchError::Invalid(_) | FetchError::Denied(_))) => {
                return Err(WorkerFailure { status: None, message: format!("worker call failed: {e}") })
            }
            Err(e) => (format!("worker call failed: {e}"), None, None),
        };
        match policy.next_delay(failed, retry_after, random_u64()) {
            Some(delay) => sleep(delay).await,
            None => {
                let message = format!("{reason} (gave up after {failed} attempts)");
                return Err(WorkerFailure { status, message });
            }
        }
    }
}

/// A worker's error message: the `message` of its JSON error body, else the body's start.
fn worker_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| snippet(body))
}

/// The start of a worker's error body, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().to_owned()
}
