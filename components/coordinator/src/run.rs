//! Performs what a job's [`Driver`] asks: worker calls, cancellations, output,
//! waits. Everything it decides is the driver's; this is only the I/O.

use fanout::api::{ApiError, ErrorKind};
use fanout::config::Config;
use fanout::fanout::driver::{Action, CallError, CallId, Driver, Input, Merge, Status};
use fanout::fanout::retry::{parse_retry_after, retryable_status};
use fanout_spin::{fetch, now, sleep, FetchError, Outbound, Reply};
use futures::future::{abortable, AbortHandle, LocalBoxFuture};
use futures::stream::{FuturesUnordered, LocalBoxStream};
use futures::StreamExt;
use spin_sdk::http::Method;
use std::collections::HashMap;
use std::future::Future;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// How long a JSON answer may stay silent before a space (valid between JSON
/// tokens) is written, so that a caller that went away is noticed.
const KEEPALIVE: Duration = Duration::from_secs(5);

/// A job's input, read as the driver wants it.
pub type Units<Meta> = LocalBoxStream<'static, Result<Input<Meta>, ApiError>>;

/// Where a job's units go.
pub struct Worker<Meta> {
    /// The worker URL for a unit.
    pub url: Box<dyn Fn(&Meta) -> String>,
    /// The request body's content type.
    pub content_type: &'static str,
    /// The shared token, sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// The largest answer read.
    pub max_answer_bytes: usize,
}

impl<Meta> Worker<Meta> {
    /// The worker at `url`, called with the configured token and answer limit.
    pub fn new(config: &Config, url: impl Fn(&Meta) -> String + 'static, content_type: &'static str) -> Worker<Meta> {
        Worker {
            url: Box::new(url),
            content_type,
            token: config.token.clone(),
            max_answer_bytes: config.max_worker_response_bytes,
        }
    }
}

type Answered = (CallId, Result<Vec<u8>, CallError>);

/// A running job.
pub struct Job<M: Merge> {
    driver: Driver<M>,
    units: Option<Units<M::Meta>>,
    worker: Rc<Worker<M::Meta>>,
    calls: FuturesUnordered<LocalBoxFuture<'static, Answered>>,
    aborts: HashMap<CallId, AbortHandle>,
    started: Duration,
    last_output: Duration,
    keepalive: bool,
    emitted: bool,
    input_error: Option<ApiError>,
}

enum Event<Meta> {
    Answer(Answered),
    Input(Option<Result<Input<Meta>, ApiError>>),
    Timer,
}

impl<M: Merge + 'static> Job<M> {
    /// A job driven by `driver` over `units`, calling `worker`; `keepalive`
    /// for output where a space may be written between items (JSON).
    pub fn new(driver: Driver<M>, units: Units<M::Meta>, worker: Worker<M::Meta>, keepalive: bool) -> Job<M> {
        let started = now();
        Job {
            driver,
            units: Some(units),
            worker: Rc::new(worker),
            calls: FuturesUnordered::new(),
            aborts: HashMap::new(),
            started,
            last_output: Duration::ZERO,
            keepalive,
            emitted: false,
            input_error: None,
        }
    }

    /// Answers with the job's output, streamed. A job that fails before its
    /// first output (its first unit failed it, its input could not be read)
    /// is answered with an error status instead.
    pub async fn respond(mut self, content_type: &'static str) -> Result<Reply, ApiError> {
        let first = self.next().await?;
        Ok(Reply::stream(content_type, move |mut body| async move {
            let mut next = first;
            while let Some(bytes) = next {
                // A caller that went away ends the job: dropping it cancels its calls.
                if !body.write(bytes).await {
                    return;
                }
                next = self.next().await.unwrap_or(None);
            }
        }))
    }

    /// The next bytes of the output; `None` once it is complete.
    async fn next(&mut self) -> Result<Option<Vec<u8>>, ApiError> {
        loop {
            let at = now().saturating_sub(self.started);
            match self.driver.poll(at) {
                Action::Call(call) => {
                    let meta = self.driver.meta(call.seq).expect("a unit being called is not yet written");
                    let url = (self.worker.url)(meta);
                    let (future, handle) = abortable(call_worker(self.worker.clone(), url, call.payload, call.timeout));
                    self.aborts.insert(call.id, handle);
                    let id = call.id;
                    self.calls.push(Box::pin(async move {
                        let outcome = future.await.unwrap_or_else(|_| Err(CallError::Permanent("cancelled".into())));
                        (id, outcome)
                    }));
                }
                Action::Cancel(id) => {
                    if let Some(handle) = self.aborts.remove(&id) {
                        handle.abort();
                    }
                }
                Action::Emit(bytes) => {
                    if !self.emitted && self.driver.status() == Status::Failed {
                        let reason = self.driver.report().reason.unwrap_or_default();
                        let kind = self.driver.report().halted_by.unwrap_or(ErrorKind::BadRow);
                        return Err(self.input_error.take().unwrap_or(ApiError::new(kind, reason)));
                    }
                    self.emitted = true;
                    self.last_output = at;
                    return Ok(Some(bytes));
                }
                Action::Done => return Ok(None),
                Action::Wait(wake) => {
                    let quiet_until = (self.keepalive && self.emitted).then_some(self.last_output + KEEPALIVE);
                    if quiet_until.is_some_and(|t| at >= t) {
                        self.last_output = at;
                        return Ok(Some(b" ".to_vec()));
                    }
                    let wake = match (wake, quiet_until) {
                        (Some(w), Some(q)) => Some(w.min(q)),
                        (w, q) => w.or(q),
                    };
                    self.wait(wake.map(|w| w.saturating_sub(at))).await?;
                }
            }
        }
    }

    /// Waits for one event (a call's outcome, input, the timer) and tells the driver.
    async fn wait(&mut self, timer: Option<Duration>) -> Result<(), ApiError> {
        let mut timer = timer.map(|d| Box::pin(sleep(d)));
        let driver = &self.driver;
        let (calls, units) = (&mut self.calls, &mut self.units);
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(Some(answered)) = calls.poll_next_unpin(cx) {
                return Poll::Ready(Event::Answer(answered));
            }
            if driver.wants_input() {
                if let Some(units) = units.as_mut() {
                    if let Poll::Ready(item) = units.poll_next_unpin(cx) {
                        return Poll::Ready(Event::Input(item));
                    }
                }
            }
            match timer.as_mut().map(|t| t.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Event::Timer),
                _ => Poll::Pending,
            }
        })
        .await;
        let at = now().saturating_sub(self.started);
        match event {
            Event::Answer((id, outcome)) => {
                self.aborts.remove(&id);
                self.driver.answered(id, outcome, at);
            }
            Event::Input(Some(Ok(input))) => self.driver.take(input),
            Event::Input(Some(Err(e))) => {
                self.units = None;
                if !self.emitted {
                    // Nothing is out yet: the request fails as a whole, with the input's own error.
                    self.input_error = Some(e.clone());
                }
                self.driver.input_failed(e.message().to_owned());
            }
            Event::Input(None) => {
                self.units = None;
                self.driver.end_input();
            }
            Event::Timer => {}
        }
        Ok(())
    }
}

/// One attempt at a worker call; the driver decides about retries.
pub async fn call_worker<Meta>(
    worker: Rc<Worker<Meta>>,
    url: String,
    payload: Rc<Vec<u8>>,
    timeout: Duration,
) -> Result<Vec<u8>, CallError> {
    let mut headers = vec![("content-type", worker.content_type.to_owned()), ("accept", "application/json".to_owned())];
    if let Some(token) = &worker.token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let answer = fetch(Outbound {
        method: Method::Post,
        url: &url,
        headers,
        body: Some(&payload),
        timeout,
        max_bytes: worker.max_answer_bytes,
        truncate: false,
    })
    .await;
    match answer {
        Ok(resp) if resp.status == 200 => Ok(resp.body),
        Ok(resp) => {
            let message = worker_message(&resp.body);
            match resp.status {
                // `on_error: fail` met a bad row, or the source is not the file planned: the job fails.
                412 => Err(CallError::Fatal(ErrorKind::SourceChanged, message)),
                422 => Err(CallError::Fatal(ErrorKind::BadRow, message)),
                413 => {
                    Err(CallError::Permanent(format!("the worker refused the request as too large (413): {message}")))
                }
                // The worker refused this coordinator (its token, its egress rules) or has no such route.
                401 | 403 | 404 | 405 => {
                    Err(CallError::Misconfigured(format!("worker answered {}: {message}", resp.status)))
                }
                status if retryable_status(status) => Err(CallError::Transient {
                    message: format!("worker answered {status}: {message}"),
                    retry_after: resp.header("retry-after").and_then(parse_retry_after),
                }),
                status => Err(CallError::Permanent(format!("worker answered {status}: {message}"))),
            }
        }
        Err(FetchError::Timeout(limit)) => Err(CallError::Timeout(limit)),
        Err(e @ (FetchError::TooLarge(_) | FetchError::Invalid(_) | FetchError::Denied(_))) => {
            Err(CallError::Permanent(format!("worker call failed: {e}")))
        }
        Err(e) => Err(CallError::Transient { message: format!("worker call failed: {e}"), retry_after: None }),
    }
}

/// A worker's error message: the `message` of its JSON error body, else the body's start.
fn worker_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).trim().to_owned())
}

/// The worker URL configured in `variable`: a 500 `config` error when it is unset or not a URL.
pub fn worker_url(url: &Option<String>, variable: &str) -> Result<url::Url, ApiError> {
    let url = url.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorKind::Config,
            format!("{variable} is not set: the coordinator does not know where the worker is"),
        )
    })?;
    url::Url::parse(url).map_err(|e| ApiError::new(ErrorKind::Config, format!("{variable}={url:?} is not a URL: {e}")))
}
