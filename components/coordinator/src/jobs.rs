//! Durable jobs: `/jobs/...`. A job is checked and planned in one short
//! invocation, then advanced by ticks ([`fanout::fanout::jobs::tick`]); its
//! state and results live in the bucket, and the coordinator relays no data.
//!
//! * `POST /jobs/transform`, `POST /jobs/scrape`: check and plan a job; 201.
//! * `POST /jobs/{id}/tick`: advance one job; `POST|GET /jobs/tick`: every unfinished one.
//! * `GET /jobs/{id}`: its status; `DELETE /jobs/{id}`: cancel it.

use crate::host::HttpHost;
use crate::scrape::{open_list, template};
use crate::transform::{prepare_spec, source_request, SourceJob};
use fanout::api::{parse_json, ApiError, ErrorKind};
use fanout::config::Config;
use fanout::content::Pin;
use fanout::fanout::jobs::layout::{Layout, ACTIVE};
use fanout::fanout::jobs::plan::MAX_UNITS;
use fanout::fanout::jobs::plan::{Limits, ListCutter, ListFormat, Plan, ScrapeWork, Source, TransformWork, Work};
use fanout::fanout::jobs::state::{JobStatus, State, Status, Stop};
use fanout::fanout::jobs::tick::{self, JobError, JobHost, Put, TickSettings};
use fanout::fanout::jobs::{retrying, JobId};
use fanout::fanout::options::JobOptions;
use fanout::store::Cond;
use fanout_spin::{random_u64, source, wall_ms, Reply, Request};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// The most jobs one `POST /jobs/tick` advances; which ones is drawn each time.
const MAX_JOBS_PER_TICK: usize = 32;
/// Jobs one `POST /jobs/tick` advances at once: each holds its state and its calls.
const TICKS_AT_ONCE: usize = 4;
/// The least of the budget a job's tick is started with.
const MIN_SHARE: Duration = Duration::from_secs(2);
/// The most unfinished jobs one `POST /jobs/tick` lists to choose from.
const MAX_ACTIVE_LISTED: usize = 10_000;

/// Routes `/jobs/...`; `rest` is the path after `/jobs`.
pub async fn route(req: Request, rest: &str) -> Result<Reply, ApiError> {
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["transform"] => {
            req.allow(&["POST"])?;
            submit_transform(req).await
        }
        ["scrape"] => {
            req.allow(&["POST"])?;
            submit_scrape(req).await
        }
        ["tick"] => {
            req.allow(&["POST", "GET"])?;
            tick_all(&req.config).await
        }
        [id, "tick"] => {
            req.allow(&["POST"])?;
            let host = HttpHost::new(&req.config)?;
            let id = job_id(id)?;
            let status = tick::tick(&host, &id, &owner(), &host.settings()).await.map_err(|e| job_error(&id, e))?;
            Ok(Reply::json(&status))
        }
        [id] if !id.is_empty() => {
            req.allow(&["GET", "DELETE"])?;
            let host = HttpHost::new(&req.config)?;
            let id = job_id(id)?;
            if req.method == "DELETE" {
                return cancel(&host, &id).await;
            }
            Ok(Reply::json(&tick::status(&host, &id).await.map_err(|e| job_error(&id, e))?))
        }
        _ => Err(ApiError::not_found(&req.method, &req.path)),
    }
}

fn job_id(text: &str) -> Result<JobId, ApiError> {
    JobId::try_from(text.to_owned()).map_err(|e| ApiError::new(ErrorKind::NotFound, e))
}

/// A name for this tick, unique enough to tell ticks apart in their leases.
fn owner() -> String {
    format!("tick-{:016x}", random_u64())
}

fn job_error(id: &JobId, e: JobError) -> ApiError {
    match e {
        JobError::NotFound => ApiError::new(ErrorKind::NotFound, format!("there is no job {id}")),
        JobError::Store(e) => store_error(e),
        JobError::Corrupt(m) | JobError::Config(m) => ApiError::new(ErrorKind::Config, format!("job {id}: {m}")),
    }
}

fn store_error(e: fanout::store::StoreError) -> ApiError {
    ApiError::new(ErrorKind::BadGateway, e.to_string())
}

/// A job's limits: its options within the operator's.
fn limits(options: &JobOptions, config: &Config, audit_percent: f64) -> Result<Limits, ApiError> {
    if options.window_bytes.is_some() {
        return Err(ApiError::bad_request(
            "window_bytes orders a streamed answer; a durable job writes its parts in order without one",
        ));
    }
    // A tick holds no units or answers in memory beyond its calls' receipts, so the streamed
    // job's memory model does not apply: only the option checks do, and the durable deadline.
    let streamed = Config { job_deadline: config.durable_deadline, ..config.clone() };
    let checked = options.limits(&streamed, 0)?;
    Ok(Limits {
        concurrency: options.concurrency.unwrap_or(config.worker_concurrency).min(checked.concurrency.max(1)),
        attempts: config.worker_attempts,
        deadline_ms: checked.deadline.as_millis() as u64,
        tolerated_failures: options.tolerated_failures,
        tolerated_failure_percent: options.tolerated_failure_percent,
        audit_percent,
    })
}

/// Refuses a job with more units than [`MAX_UNITS`], saying what to make larger.
fn units_within(units: u64, larger: &str) -> Result<u64, ApiError> {
    if units > MAX_UNITS {
        return Err(ApiError::bad_request(format!(
            "the job would have {units} units, over the {MAX_UNITS} a durable job may have: ask for a larger {larger}"
        )));
    }
    Ok(units)
}

/// Writes a new job's plan, its empty state and its marker, and answers 201.
async fn create(host: &HttpHost, plan: &Plan) -> Result<Reply, ApiError> {
    let layout = Layout::new(&plan.id);
    for (key, body) in [
        (layout.plan(), serde_json::to_vec(plan).expect("plans serialise")),
        (layout.state(), serde_json::to_vec(&State::default()).expect("states serialise")),
        (layout.active(), serde_json::to_vec(&json!({"created_ms": plan.created_ms})).expect("values serialise")),
    ] {
        create_object(host, &key, body).await?;
    }
    let body = json!({
        "id": plan.id,
        "status_url": format!("/jobs/{}", plan.id),
        "manifest_key": layout.manifest(),
    });
    Ok(Reply::json(&body).with_status(201))
}

/// Creates `key` with `body`. A write whose answer was lost, and whose retry then found the key
/// there, is recognised by reading it back: the job exists, as made here.
async fn create_object(host: &HttpHost, key: &str, body: Vec<u8>) -> Result<(), ApiError> {
    let put = retrying(|d| host.sleep(d), || host.put(key, body.clone(), Cond::Create)).await.map_err(store_error)?;
    if let Put::Written(_) = put {
        return Ok(());
    }
    let there = retrying(|d| host.sleep(d), || host.get(key, None)).await.map_err(store_error)?;
    if there.is_some_and(|got| got.body == body) {
        return Ok(());
    }
    Err(ApiError::new(ErrorKind::Conflict, format!("{key} exists already")))
}

/// `POST /jobs/transform`: the body of `/coordinate/transform`'s source mode.
async fn submit_transform(req: Request) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let host = HttpHost::new(&config)?;
    let given = req.transform_spec()?;
    let body = req.body().await?;
    let SourceJob { source: given_source, spec, chunk_bytes, options, extra } =
        source_request(given, &body, &config, &["audit_percent"])?;
    let audit_percent = match extra.get("audit_percent") {
        None => 0.0,
        Some(v) => v
            .as_f64()
            .filter(|p| (0.0..=100.0).contains(p))
            .ok_or_else(|| ApiError::bad_request(format!("audit_percent must be between 0 and 100, not {v}")))?,
    };
    // A unit's records are held by its worker until they are written: they must fit in a part.
    let most = config.max_part_bytes / 4;
    if chunk_bytes > most {
        return Err(ApiError::bad_request(format!(
            "chunk_bytes={chunk_bytes} is over {most} bytes, a quarter of the part limit \
             (FANOUT_MAX_PART_BYTES={}): a unit's records must fit in one part",
            config.max_part_bytes
        )));
    }
    let limits = limits(&options, &config, audit_percent)?;
    // The file is read here only for its size and header; an object of the bucket through a short-lived URL.
    let (source, url) = match given_source.strip_prefix("s3://") {
        Some(_) => {
            let key = host.bucket().key_of(&given_source).map_err(|e| ApiError::bad_request(format!("source: {e}")))?;
            let url = host.presign(tick::Presigned::Read, key, Duration::from_secs(300));
            (Source::Object(key.to_owned()), url::Url::parse(&url).expect("presigned URLs parse"))
        }
        None => {
            let url = source::check("source", &given_source, &config)?;
            (Source::Url(url.to_string()), url)
        }
    };
    let pin = source::pin(&config, &url).await.map_err(|e| named(e, &url, &given_source))?;
    let header = source::header(&config, &url, &spec.dialect).await.map_err(|e| named(e, &url, &given_source))?;
    prepare_spec(&spec, &header.names)?;
    let id = JobId::new(random_u64(), random_u64());
    let units = units_within(pin.size.div_ceil(chunk_bytes as u64), "chunk_bytes")?;
    let Pin { size, etag, last_modified } = pin;
    let work = TransformWork {
        source,
        size,
        etag,
        last_modified,
        chunk_bytes: chunk_bytes as u64,
        spec,
        columns: header.names,
    };
    create(&host, &Plan { id, created_ms: wall_ms(), units, limits, work: Work::Transform(work) }).await
}

/// An error about a presigned source names its object, not the URL with its signature.
fn named(e: ApiError, url: &url::Url, given: &str) -> ApiError {
    if url.as_str() == given {
        return e;
    }
    ApiError::new(e.kind(), e.message().replace(url.as_str(), given))
}

/// `POST /jobs/scrape`: `urls` or `urls_source` (a URL, or `s3://BUCKET/KEY`), with the scrape options.
async fn submit_scrape(req: Request) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let host = HttpHost::new(&config)?;
    let mut job: Map<String, Value> = parse_json(&req.body().await?)?;
    if job.contains_key("audit_percent") {
        return Err(ApiError::bad_request(
            "audit_percent is for transform jobs: two fetches of a page may differ, so runs cannot be compared",
        ));
    }
    let urls = job.remove("urls");
    let urls_source = job.remove("urls_source");
    // A batch must end within a tick, and its part fit in one object.
    let time = config.worker_timeout.min(config.tick_budget.saturating_sub(Duration::from_secs(2)));
    let t = template(job, &config, config.max_part_bytes, time.max(Duration::from_secs(1)))?;
    let limits = limits(&t.options, &config, 0.0)?;
    let id = JobId::new(random_u64(), random_u64());
    let layout = Layout::new(&id);
    // A batch's request: its URLs at most half the workers' request limit, as /coordinate cuts them.
    let cutter =
        |format| ListCutter::new(format, t.batch_size, config.max_request_bytes / 2, config.max_job_urls as u64);
    let bad = |e: String| ApiError::bad_request(format!("{e} (FANOUT_MAX_JOB_URLS={})", config.max_job_urls));
    let (list, format, cut) = match (urls, urls_source) {
        (Some(_), Some(_)) => return Err(ApiError::bad_request("give urls or urls_source, not both")),
        (None, None) => return Err(ApiError::bad_request("a scrape job needs urls or urls_source")),
        (Some(urls), None) => {
            let urls: Vec<String> = serde_json::from_value(urls)
                .map_err(|e| ApiError::bad_request(format!("urls must be an array of strings: {e}")))?;
            // Kept as one JSON string a line, so that any string, a bad URL included, gets its result.
            let mut lines = Vec::new();
            for url in &urls {
                serde_json::to_writer(&mut lines, url).expect("strings serialise");
                lines.push(b'\n');
            }
            let mut cutter = cutter(ListFormat::JsonLines);
            cutter.push(&lines).map_err(bad)?;
            let cut = cutter.finish().map_err(bad)?;
            create_object(&host, &layout.urls(), lines).await?;
            (Source::Object(layout.urls()), ListFormat::JsonLines, cut)
        }
        (None, Some(Value::String(given))) => {
            let (list, url) = match given.strip_prefix("s3://") {
                Some(_) => {
                    let key =
                        host.bucket().key_of(&given).map_err(|e| ApiError::bad_request(format!("urls_source: {e}")))?;
                    let url = host.presign(tick::Presigned::Read, key, Duration::from_secs(300));
                    (Source::Object(key.to_owned()), url::Url::parse(&url).expect("presigned URLs parse"))
                }
                None => {
                    let url = source::check("urls_source", &given, &config)?;
                    (Source::Url(url.to_string()), url)
                }
            };
            let mut pieces = open_list(&config, &url, &given).await?;
            let mut cutter = cutter(ListFormat::Lines);
            while let Some(piece) = pieces.next().await {
                cutter.push(&piece?).map_err(bad)?;
            }
            (list, ListFormat::Lines, cutter.finish().map_err(bad)?)
        }
        (None, Some(v)) => return Err(ApiError::bad_request(format!("urls_source must be a URL, not {v}"))),
    };
    let units = units_within(cut.firsts.len() as u64, "batch_size")?;
    let work =
        ScrapeWork { list, format, offsets: cut.offsets, firsts: cut.firsts, urls: cut.urls, request: t.request };
    create(&host, &Plan { id, created_ms: wall_ms(), units, limits, work: Work::Scrape(work) }).await
}

/// `POST /jobs/tick`: advances up to [`MAX_JOBS_PER_TICK`] unfinished jobs,
/// [`TICKS_AT_ONCE`] at a time, starting at a random one of them, so that
/// every job is reached however many there are.
async fn tick_all(config: &Config) -> Result<Reply, ApiError> {
    let host = HttpHost::new(config)?;
    let mut ids = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = retrying(|d| host.sleep(d), || host.list(ACTIVE, after.as_deref())).await.map_err(store_error)?;
        ids.extend(page.keys.iter().filter_map(|k| JobId::try_from(k.trim_start_matches(ACTIVE).to_owned()).ok()));
        after = page.keys.last().cloned();
        if !page.truncated || ids.len() >= MAX_ACTIVE_LISTED {
            break;
        }
    }
    if !ids.is_empty() {
        let start = (random_u64() % ids.len() as u64) as usize;
        ids.rotate_left(start);
    }
    ids.truncate(MAX_JOBS_PER_TICK);
    // One budget for all: each tick gets what is left of it, and jobs that would get too little wait.
    let settings = host.settings();
    let end = fanout_spin::now() + settings.budget;
    let ticks = ids.iter().map(|id| {
        let (host, settings) = (&host, &settings);
        async move {
            let left = end.saturating_sub(fanout_spin::now());
            if left < MIN_SHARE {
                return None;
            }
            let settings = TickSettings { budget: left, ..settings.clone() };
            Some(match tick::tick(host, id, &owner(), &settings).await {
                Ok(status) => serde_json::to_value(status).expect("statuses serialise"),
                Err(e) => {
                    let e = job_error(id, e);
                    json!({"id": id, "error": {"kind": e.kind(), "message": e.message()}})
                }
            })
        }
    });
    let jobs: Vec<Value> =
        futures::stream::iter(ticks).buffered(TICKS_AT_ONCE).filter_map(|t| async { t }).collect().await;
    Ok(Reply::json(&json!({ "jobs": jobs })))
}

/// `DELETE /jobs/{id}`: no unit starts after it; 409 when the job has finished or stopped otherwise.
async fn cancel(host: &HttpHost, id: &JobId) -> Result<Reply, ApiError> {
    let status: Status = tick::status(host, id).await.map_err(|e| job_error(id, e))?;
    if status.finished {
        return Err(ApiError::new(ErrorKind::Conflict, format!("job {id} is finished ({:?})", status.status)));
    }
    let marker =
        Stop { status: JobStatus::Cancelled, reason: format!("cancelled by DELETE /jobs/{id}"), at_ms: wall_ms() };
    let (holds, _) = tick::stop(host, id, &marker).await.map_err(|e| job_error(id, e))?;
    if holds.status != JobStatus::Cancelled {
        return Err(ApiError::new(ErrorKind::Conflict, format!("job {id} stopped already: {}", holds.reason)));
    }
    Ok(Reply::json(&tick::status(host, id).await.map_err(|e| job_error(id, e))?))
}
