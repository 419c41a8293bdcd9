//! `POST /coordinate/scrape`: a URL list fanned out to the scrape worker in batches.
//!
//! The list comes as a JSON body (`{"urls": [...]}` or `{"urls_source": URL}`,
//! a file of one URL per line that the coordinator reads as it goes) or as a
//! `text/plain` body of one URL per line, read as it arrives, with the rest of
//! the job in the `x-fanout-job` header. Selections and options are checked
//! exactly as `POST /scrape` checks them, before any worker is called.

use crate::run::{worker_url, Job, Units, Worker};
use fanout::api::{parse_json, ApiError, ErrorKind};
use fanout::config::Config;
use fanout::content::media_type;
use fanout::fanout::driver::{Driver, Expected, Failure, FailureKind, Input, Unit};
use fanout::fanout::merge::{BatchMeta, PageMerge};
use fanout::fanout::options::JobOptions;
use fanout::fanout::plan::{self, MAX_URL_LINE_BYTES};
use fanout::framing::Format;
use fanout::scrape::ScrapeRequest;
use fanout_spin::{open, random_u64, source, timeout, Outbound, Reply, Request};
use futures::stream::{self, LocalBoxStream};
use futures::StreamExt;
use serde_json::{Map, Value};
use spin_sdk::http::Method;
use std::rc::Rc;
use std::time::Duration;

/// Room for a page result's fields besides its extracted values (URLs, status, timings, warnings).
const PAGE_OVERHEAD_BYTES: usize = 4096;

/// Pieces of a URL list as they arrive.
pub type Pieces = LocalBoxStream<'static, Result<Vec<u8>, ApiError>>;

/// Where the URLs come from.
enum UrlList {
    Given(Vec<String>),
    Lines(Pieces),
}

/// `POST /coordinate/scrape`.
pub async fn coordinate(req: Request) -> Result<Reply, ApiError> {
    let config = req.config.clone();
    let base = worker_url(&config.scrape_url, "FANOUT_SCRAPE_URL")?;
    let format = Format::from_accept(req.header("accept")?.as_deref());
    let essence = req.header("content-type")?.map(|c| media_type(&c)).unwrap_or_default();
    let (job, list) = match essence.as_str() {
        "application/json" => {
            let mut job: Map<String, Value> = parse_json(&req.body().await?)?;
            let list = match (job.remove("urls"), job.remove("urls_source")) {
                (Some(_), Some(_)) => return Err(ApiError::bad_request("give urls or urls_source, not both")),
                (Some(urls), None) => UrlList::Given(
                    serde_json::from_value(urls)
                        .map_err(|e| ApiError::bad_request(format!("urls must be an array of strings: {e}")))?,
                ),
                (None, Some(Value::String(url))) => UrlList::Lines(url_source(&config, &url).await?),
                (None, Some(v)) => return Err(ApiError::bad_request(format!("urls_source must be a URL, not {v}"))),
                (None, None) => return Err(ApiError::bad_request("a scrape job needs urls or urls_source")),
            };
            (job, list)
        }
        "text/plain" => {
            let job = match req.header("x-fanout-job")? {
                Some(text) => parse_json::<Map<String, Value>>(text.as_bytes())
                    .map_err(|e| ApiError::bad_request(format!("x-fanout-job: {}", e.message())))?,
                None => Map::new(),
            };
            if job.contains_key("urls") || job.contains_key("urls_source") {
                return Err(ApiError::bad_request("x-fanout-job: the URLs are the body's lines, not a field"));
            }
            let body = req.body_stream(config.max_job_bytes)?;
            let pieces = stream::unfold(body, |mut body| async move { Some((body.next().await?, body)) });
            (job, UrlList::Lines(Box::pin(pieces)))
        }
        other => {
            return Err(ApiError::new(
                ErrorKind::UnsupportedMediaType,
                format!(
                    "POST /coordinate/scrape reads application/json or text/plain (one URL per line), not {other:?}"
                ),
            ))
        }
    };
    let t = template(job, &config, config.max_worker_response_bytes, config.worker_timeout)?;
    // A batch's URLs, as JSON: about 2 KiB a URL budgeted, never more than half the workers' request
    // limit, nor a quarter of the answer the coordinator reads (each result repeats its URL, and an
    // invalid URL's error may quote it).
    let batch_bytes = (config.max_request_bytes / 2).min(config.max_worker_response_bytes / 4);
    let mut limits = t.options.limits(&config, batch_bytes.min(t.batch_size as usize * 2048))?;
    limits.call_timeout = limits.call_timeout.max(t.batch_deadline + t.margin);
    let (batch_size, template) = (t.batch_size, t.request);
    if let UrlList::Given(urls) = &list {
        if urls.len() > config.max_job_urls {
            return Err(ApiError::bad_request(format!(
                "urls holds {} URLs; the limit is {} (FANOUT_MAX_JOB_URLS)",
                urls.len(),
                config.max_job_urls
            )));
        }
    }
    let url = base.to_string();
    let worker = Worker::new(&config, move |_| url.clone(), "application/json");
    let merge = PageMerge::new(format).with_per_host(t.per_host, t.per_batch);
    let merge = if t.delay { merge.one_batch_per_host() } else { merge };
    let mut driver = Driver::new(merge, limits, random_u64());
    let units = match list {
        UrlList::Given(urls) => {
            let count = urls.len() as u64;
            driver.expect(Expected { units: Some(count.div_ceil(batch_size)), items: Some(count), bytes: None });
            given_batches(urls, batch_size as usize, batch_bytes, template)
        }
        UrlList::Lines(pieces) => line_batches(pieces, batch_size as usize, batch_bytes, template, config.max_job_urls),
    };
    Job::new(driver, units, worker, format == Format::Json).respond(format.content_type()).await
}

/// What every batch of a scrape job is sent, checked before any is.
pub struct Template {
    /// The request, without its URLs.
    pub request: ScrapeRequest,
    /// URLs per batch.
    pub batch_size: u64,
    /// The job's options.
    pub options: JobOptions,
    /// Pages fetched at once from one host, across every batch of the job.
    pub per_host: usize,
    /// Pages of one host a batch fetches at once, at most.
    pub per_batch: usize,
    /// Whether requests to one host are spaced: then one batch runs at a time for each host.
    pub delay: bool,
    /// How long a batch may run.
    pub batch_deadline: Duration,
    /// Time between a batch's end and its call's.
    pub margin: Duration,
}

/// Checks a scrape job's fields (all but its URLs) exactly as `POST /scrape`
/// checks them, so that no batch is refused for them later; each page's
/// output gets its share of `answer_bytes`, each batch ends within `time`.
pub fn template(
    mut job: Map<String, Value>,
    config: &Config,
    answer_bytes: usize,
    time: Duration,
) -> Result<Template, ApiError> {
    let options = JobOptions::take_from(&mut job)?;
    let batch_size = match job.remove("batch_size") {
        None => config.batch_size as u64,
        Some(v) => v.as_u64().filter(|&n| n > 0).ok_or_else(|| {
            ApiError::bad_request(format!("batch_size must be a whole number of at least 1, not {v}"))
        })?,
    };
    if batch_size > config.max_urls as u64 {
        return Err(ApiError::bad_request(format!(
            "batch_size={batch_size} is over the workers' limit of {} URLs a request (FANOUT_MAX_URLS)",
            config.max_urls
        )));
    }
    job.insert("urls".into(), Value::Array(Vec::new()));
    let mut template: ScrapeRequest = serde_json::from_value(Value::Object(job))
        .map_err(|e| ApiError::bad_request(format!("invalid scrape job: {e}")))?;
    // Exactly what `POST /scrape` checks, so that no batch is refused for it later.
    template.extract_options(config)?;
    // Every page of a batch must fit in the answer the coordinator will read (or the part a
    // durable job's worker writes): a page's extracted output gets its share of that limit,
    // less room for the rest of its result.
    let share = (answer_bytes / batch_size as usize).saturating_sub(PAGE_OVERHEAD_BYTES).max(1);
    let asked = template.options.max_output_bytes.unwrap_or(fanout::html::DEFAULT_OUTPUT_BYTES);
    template.options.max_output_bytes = Some(asked.min(share));
    // `per_host` holds for the whole job (the driver admits batches by it); a batch fetches at most
    // its own `concurrency` at once, so its request asks for no more than that.
    let job_per_host = template.options.per_host.take();
    if job_per_host == Some(0) {
        return Err(ApiError::bad_request("options.per_host must be at least 1"));
    }
    let concurrency = template.settings(config)?.concurrency;
    template.options.per_host = job_per_host.map(|n| n.min(concurrency));
    let settings = template.settings(config)?;
    // A batch ends (its pages still running become `timeout` errors) before the call waiting for it gives up.
    let margin = (time / 10).max(Duration::from_secs(1)).min(time / 2);
    let batch_deadline = settings.deadline.min(time - margin);
    template.options.deadline_ms = Some(batch_deadline.as_millis().max(1) as u64);
    let (per_host, per_batch) = (job_per_host.unwrap_or(settings.per_host), settings.per_host);
    let delay = !settings.delay.is_zero();
    Ok(Template { request: template, batch_size, options, batch_deadline, margin, per_host, per_batch, delay })
}

fn unit(template: &ScrapeRequest, start: u64, urls: Vec<String>) -> Input<BatchMeta> {
    let request = ScrapeRequest { urls, ..template.clone() };
    let payload = serde_json::to_vec(&request).expect("a scrape request serialises");
    let items = request.urls.len() as u64;
    Input::Unit(Unit {
        meta: BatchMeta { start, urls: request.urls },
        payload: Rc::new(payload),
        items: Some(items),
        bytes: 0,
    })
}

/// A line of the URL list too long to be a URL: one error result at its place, never sent.
fn too_long(start: u64, line: u64, prefix: &[u8]) -> Input<BatchMeta> {
    let shown = String::from_utf8_lossy(&prefix[..prefix.len().min(120)]).into_owned() + "…";
    let unit =
        Unit { meta: BatchMeta { start, urls: vec![shown] }, payload: Rc::new(Vec::new()), items: Some(1), bytes: 0 };
    let reason = format!("line {line} of the URL list is longer than {MAX_URL_LINE_BYTES} bytes: not a URL");
    Input::Failed(unit, Failure { kind: FailureKind::TooLarge, reason })
}

/// The bytes `url` takes in a batch's JSON request: control characters are escaped six times as long.
fn encoded_len(url: &str) -> usize {
    serde_json::to_string(url).map_or(url.len() * 6, |s| s.len())
}

/// Whether a batch of `count` URLs taking `bytes` has room for one of `next` bytes more.
fn room(count: usize, bytes: usize, next: usize, size: usize, max_bytes: usize) -> bool {
    count == 0 || (count < size && bytes + next <= max_bytes)
}

fn given_batches(urls: Vec<String>, size: usize, max_bytes: usize, template: ScrapeRequest) -> Units<BatchMeta> {
    let mut urls = urls.into_iter().peekable();
    let mut start = 0u64;
    Box::pin(stream::iter(std::iter::from_fn(move || {
        let (mut batch, mut bytes) = (Vec::new(), 0);
        while let Some(url) = urls.next_if(|u| room(batch.len(), bytes, encoded_len(u), size, max_bytes)) {
            bytes += encoded_len(&url);
            batch.push(url);
        }
        if batch.is_empty() {
            return None;
        }
        let at = start;
        start += batch.len() as u64;
        Some(Ok(unit(&template, at, batch)))
    })))
}

/// Batches of the lines of a URL list as it arrives (blank lines and `#`
/// comments skipped). A line over [`MAX_URL_LINE_BYTES`] is one error result
/// at its place, read past without being held.
fn line_batches(
    pieces: Pieces,
    size: usize,
    max_bytes: usize,
    template: ScrapeRequest,
    max_urls: usize,
) -> Units<BatchMeta> {
    struct State {
        pieces: Pieces,
        buf: Vec<u8>,
        /// Where the unread part of `buf` starts: lines are taken without moving the rest.
        pos: usize,
        ended: bool,
        start: u64,
        line: u64,
        /// Reading past a line too long: its number and first bytes.
        skipping: Option<(u64, Vec<u8>)>,
        /// Units made, in order, not yet handed out.
        ready: std::collections::VecDeque<Input<BatchMeta>>,
    }
    let state = State {
        pieces,
        buf: Vec::new(),
        pos: 0,
        ended: false,
        start: 0,
        line: 0,
        skipping: None,
        ready: Default::default(),
    };
    Box::pin(stream::try_unfold(state, move |mut s| {
        let template = template.clone();
        async move {
            let (mut batch, mut bytes) = (Vec::new(), 0);
            loop {
                if let Some(unit) = s.ready.pop_front() {
                    return Ok(Some((unit, s)));
                }
                while s.ready.is_empty() && batch.len() < size && bytes < max_bytes {
                    let rest = &s.buf[s.pos..];
                    let newline = rest.iter().position(|&b| b == b'\n');
                    if let Some((line, prefix)) = s.skipping.take() {
                        // The rest of a line too long: dropped as it comes, up to its end.
                        match newline.or(s.ended.then_some(rest.len())) {
                            Some(end) => {
                                s.pos += (end + 1).min(rest.len());
                                if !batch.is_empty() {
                                    let at = s.start;
                                    s.start += batch.len() as u64;
                                    s.ready.push_back(unit(&template, at, std::mem::take(&mut batch)));
                                }
                                s.ready.push_back(too_long(s.start, line, &prefix));
                                s.start += 1;
                            }
                            None => {
                                s.pos = s.buf.len();
                                s.skipping = Some((line, prefix));
                            }
                        }
                        if s.skipping.is_some() || s.ended && s.pos == s.buf.len() {
                            break;
                        }
                        continue;
                    }
                    let Some(end) = newline.or(s.ended.then_some(rest.len())) else {
                        if rest.len() > MAX_URL_LINE_BYTES {
                            s.line += 1;
                            s.skipping = Some((s.line, rest[..MAX_URL_LINE_BYTES.min(256)].to_vec()));
                            continue;
                        }
                        break;
                    };
                    if rest.is_empty() {
                        break;
                    }
                    s.line += 1;
                    if end > MAX_URL_LINE_BYTES {
                        s.skipping = Some((s.line, rest[..256].to_vec()));
                        continue;
                    }
                    let url = plan::url_of_line(&rest[..end]);
                    s.pos += (end + 1).min(rest.len());
                    if let Some(url) = url {
                        bytes += encoded_len(&url);
                        batch.push(url);
                    }
                }
                if !s.ready.is_empty() {
                    continue;
                }
                if batch.len() == size
                    || bytes >= max_bytes
                    || (s.ended && s.pos == s.buf.len() && s.skipping.is_none())
                {
                    break;
                }
                match s.pieces.next().await {
                    Some(piece) => {
                        s.buf.drain(..s.pos);
                        s.pos = 0;
                        s.buf.extend_from_slice(&piece?);
                    }
                    None => s.ended = true,
                }
            }
            if batch.is_empty() {
                return Ok(None);
            }
            let at = s.start;
            s.start += batch.len() as u64;
            if s.start > max_urls as u64 {
                return Err(ApiError::bad_request(format!(
                    "the URL list holds more than {max_urls} URLs (FANOUT_MAX_JOB_URLS)"
                )));
            }
            Ok(Some((unit(&template, at, batch), s)))
        }
    }))
}

/// The lines of a URL list file, fetched as they arrive.
async fn url_source(config: &Config, url: &str) -> Result<Pieces, ApiError> {
    let url = source::check("urls_source", url, config)?;
    open_list(config, &url, url.as_str()).await
}

/// The lines of the URL list at `url` (checked already), as they arrive;
/// errors name it as `name`.
pub async fn open_list(config: &Config, url: &url::Url, name: &str) -> Result<Pieces, ApiError> {
    let opened = open(Outbound {
        method: Method::Get,
        url: url.as_str(),
        headers: Vec::new(),
        body: None,
        timeout: config.source_timeout,
        max_bytes: 0,
        truncate: false,
    })
    .await
    .map_err(|e| gateway_error(name, e.to_string()))?;
    if opened.status != 200 {
        return Err(gateway_error(name, format!("answered {}", opened.status)));
    }
    let (limit, wait, name) = (config.max_job_bytes, config.source_timeout, name.to_owned());
    let state = (opened.body, 0u64);
    Ok(Box::pin(stream::unfold(state, move |(mut body, read)| {
        let name = name.clone();
        async move {
            let piece = match timeout(wait, body.next()).await {
                Ok(None) => return None,
                Ok(Some(Ok(piece))) => piece,
                Ok(Some(Err(e))) => {
                    return Some((Err(gateway_error(&name, format!("the body broke off: {e}"))), (body, read)))
                }
                Err(_) => {
                    return Some((
                        Err(gateway_error(&name, format!("no data for {} ms", wait.as_millis()))),
                        (body, read),
                    ))
                }
            };
            let read = read + piece.len() as u64;
            if read > limit {
                return Some((
                    Err(gateway_error(&name, format!("larger than {limit} bytes (FANOUT_MAX_JOB_BYTES)"))),
                    (body, read),
                ));
            }
            Some((Ok(piece), (body, read)))
        }
    })))
}

fn gateway_error(url: &str, message: String) -> ApiError {
    ApiError::new(ErrorKind::BadGateway, format!("urls_source {url}: {message}"))
}
