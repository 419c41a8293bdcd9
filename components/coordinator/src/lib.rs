//! The coordinator: splits a job across many worker invocations, runs them
//! concurrently within limits, retries failed ones, and merges the answers
//! back in input order.
//!
//! * `POST /coordinate/scrape`: a URL list, in batches, to the scrape worker.
//! * `POST /coordinate/transform`: a CSV file, in chunks of whole records, to the transform worker.

use fanout::api::{parse_json, ApiError, ErrorKind};
use fanout::config::Config;
use fanout::retry::{parse_retry_after, retryable_status, RetryPolicy};
use fanout::scrape::{Outcome, PageResult, ScrapeRequest, ScrapeResponse};
use fanout::table::TableOutput;
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
            let answer = call_worker(&config, worker, "application/json", body).await;
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

/// The merged answer of a transform job.
#[derive(Serialize)]
struct TransformJobOutput {
    #[serde(flatten)]
    output: TableOutput,
    invocations: usize,
}

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
    let data = req.body().await?;
    let plan = plan::csv_chunks(&data, chunk_bytes)?;
    let invocations = plan.chunks.len();
    let answers: Vec<Result<TableOutput, String>> = futures::stream::iter(0..invocations)
        .map(|i| {
            let body = plan.body(&data, i);
            let config = &config;
            async move {
                let answer = call_worker(config, worker, "text/csv", body).await;
                answer.and_then(|bytes| {
                    serde_json::from_slice::<TableOutput>(&bytes)
                        .map_err(|e| format!("worker answer is not a transform output: {e}"))
                })
            }
        })
        .buffered(config.worker_concurrency)
        .collect()
        .await;
    let mut output = TableOutput::default();
    for (chunk, answer) in plan.chunks.iter().zip(answers) {
        merge::table_chunk(&mut output, chunk, answer);
    }
    Ok(Reply::json(&TransformJobOutput { output, invocations }))
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
async fn call_worker(config: &Config, url: &str, content_type: &str, body: Vec<u8>) -> Result<Vec<u8>, String> {
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
        let (reason, retry_after) = match answer {
            Ok(resp) if resp.status == 200 => return Ok(resp.body),
            Ok(resp) => {
                let reason = format!("worker answered {}: {}", resp.status, snippet(&resp.body));
                if !retryable_status(resp.status) {
                    return Err(reason);
                }
                (reason, resp.header("retry-after").and_then(parse_retry_after))
            }
            Err(e @ (FetchError::TooLarge(_) | FetchError::Invalid(_) | FetchError::Denied(_))) => {
                return Err(format!("worker call failed: {e}"))
            }
            Err(e) => (format!("worker call failed: {e}"), None),
        };
        match policy.next_delay(failed, retry_after, random_u64()) {
            Some(delay) => sleep(delay).await,
            None => return Err(format!("{reason} (gave up after {failed} attempts)")),
        }
    }
}

/// The start of a worker's error body, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.trim().to_owned()
}
