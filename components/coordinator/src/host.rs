//! A durable job's [`JobHost`] over HTTP: the bucket signed with the
//! coordinator's keys, the workers it is configured with, and the WASI clocks.

use crate::run::{call_worker, worker_url, Worker};
use fanout::api::{ApiError, ErrorKind};
use fanout::config::Config;
use fanout::fanout::driver::CallError;
use fanout::fanout::jobs::tick::{Got, Head, JobHost, Presigned, Put, TickSettings, WorkerKind};
use fanout::fanout::retry::RetryPolicy;
use fanout::store::{parse_list, Bucket, Cond, Listing, Op, StoreError};
use fanout_spin::{fetch, fetch_range, now, random_u64, sleep, wall_ms, Fetched, Outbound};
use spin_sdk::http::Method;
use std::future::Future;
use std::ops::Range;
use std::rc::Rc;
use std::time::Duration;

/// How long the coordinator's own signed requests stay valid.
const SIGNED_FOR: Duration = Duration::from_secs(15 * 60);
/// The longest one request to the bucket may take.
const BUCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// The bucket, the workers and the clocks, as one tick (or one job route) uses them.
pub struct HttpHost {
    bucket: Bucket,
    config: Config,
    transform: Option<Rc<Worker<()>>>,
    scrape: Option<Rc<Worker<()>>>,
}

impl HttpHost {
    /// The host `config` describes: a 500 `config` error when it names no bucket.
    pub fn new(config: &Config) -> Result<HttpHost, ApiError> {
        let s3 = config.s3.as_ref().ok_or_else(|| {
            ApiError::new(
                ErrorKind::Config,
                "durable jobs keep their state in a bucket: set FANOUT_S3_BUCKET, FANOUT_S3_ENDPOINT, \
                 FANOUT_S3_ACCESS_KEY_ID and FANOUT_S3_SECRET_ACCESS_KEY",
            )
        })?;
        let bucket = Bucket::new(s3).map_err(|e| ApiError::new(ErrorKind::Config, e))?;
        let worker = |url: &Option<String>, name| -> Option<Rc<Worker<()>>> {
            let url = worker_url(url, name).ok()?.to_string();
            Some(Rc::new(Worker::new(config, move |_| url.clone(), "application/json")))
        };
        Ok(HttpHost {
            bucket,
            transform: worker(&config.transform_url, "FANOUT_TRANSFORM_URL"),
            scrape: worker(&config.scrape_url, "FANOUT_SCRAPE_URL"),
            config: config.clone(),
        })
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// A tick's limits, from the configuration.
    pub fn settings(&self) -> TickSettings {
        TickSettings {
            budget: self.config.tick_budget,
            lease: self.config.lease,
            call_timeout: self.config.worker_timeout,
            retry: RetryPolicy {
                max_attempts: self.config.worker_attempts,
                base_delay: Duration::from_millis(200),
                max_delay: Duration::from_secs(10),
            },
            flush_every: Duration::from_secs(2),
        }
    }

    /// Sends a signed request to the bucket.
    async fn send(&self, op: Op<'_>, body: Option<&[u8]>) -> Result<Fetched, StoreError> {
        let signed = self.bucket.sign(&op, SIGNED_FOR, wall_ms());
        fetch(Outbound {
            method: match signed.method {
                "GET" => Method::Get,
                "HEAD" => Method::Head,
                "PUT" => Method::Put,
                "POST" => Method::Post,
                _ => Method::Delete,
            },
            url: &signed.url,
            headers: signed.headers,
            body,
            // A request to the bucket is small and quick; a tick's budget is not spent waiting on one.
            timeout: self.config.source_timeout.min(BUCKET_TIMEOUT),
            max_bytes: self.config.max_worker_response_bytes,
            truncate: false,
        })
        .await
        .map_err(|e| StoreError::Transient(e.to_string()))
    }
}

fn etag(answer: &Fetched) -> String {
    answer.header("etag").unwrap_or_default().to_owned()
}

impl JobHost for HttpHost {
    fn now(&self) -> Duration {
        now()
    }

    fn wall_ms(&self) -> u64 {
        wall_ms()
    }

    fn random(&self) -> u64 {
        random_u64()
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        sleep(duration)
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Option<Got>, StoreError> {
        let answer = self.send(Op::Get { key, range }, None).await?;
        match answer.status {
            200 | 206 => Ok(Some(Got { etag: etag(&answer), body: answer.body })),
            404 => Ok(None),
            status => Err(StoreError::of_answer(status, &answer.body)),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<Head>, StoreError> {
        let answer = self.send(Op::Head { key }, None).await?;
        match answer.status {
            200 => {
                let size = answer.header("content-length").and_then(|v| v.trim().parse().ok());
                let size = size.ok_or_else(|| StoreError::Transient(format!("HEAD {key}: no Content-Length")))?;
                Ok(Some(Head { size, etag: etag(&answer) }))
            }
            404 => Ok(None),
            status => Err(StoreError::of_answer(status, &answer.body)),
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>, cond: Cond) -> Result<Put, StoreError> {
        let answer = self.send(Op::Put { key, cond }, Some(&body)).await?;
        match answer.status {
            200..=299 => Ok(Put::Written(etag(&answer))),
            412 => Ok(Put::Conflict),
            status => Err(StoreError::of_answer(status, &answer.body)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let answer = self.send(Op::Delete { key }, None).await?;
        match answer.status {
            200..=299 | 404 => Ok(()),
            status => Err(StoreError::of_answer(status, &answer.body)),
        }
    }

    async fn list(&self, prefix: &str, after: Option<&str>) -> Result<Listing, StoreError> {
        let answer = self.send(Op::List { prefix, after }, None).await?;
        match answer.status {
            200 => parse_list(&answer.body).map_err(StoreError::Permanent),
            status => Err(StoreError::of_answer(status, &answer.body)),
        }
    }

    fn presign(&self, what: Presigned, key: &str, valid: Duration) -> String {
        let op = match what {
            Presigned::Create => Op::Put { key, cond: Cond::Create },
            Presigned::Read => Op::Get { key, range: None },
        };
        self.bucket.sign(&op, valid, wall_ms()).url
    }

    async fn read_url(&self, url: &str, range: Range<u64>) -> Result<Vec<u8>, StoreError> {
        let last = range.end.saturating_sub(1);
        match fetch_range(url, range.start, last, self.config.source_timeout, 0, None).await {
            Ok(piece) => Ok(piece.bytes),
            Err(e) if e.transient => Err(StoreError::Transient(e.message)),
            Err(e) => Err(StoreError::Permanent(e.message)),
        }
    }

    async fn call(&self, worker: WorkerKind, payload: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, CallError> {
        let (w, name) = match worker {
            WorkerKind::Transform => (&self.transform, "FANOUT_TRANSFORM_URL"),
            WorkerKind::Scrape => (&self.scrape, "FANOUT_SCRAPE_URL"),
        };
        let Some(w) = w else {
            return Err(CallError::Misconfigured(format!(
                "{name} is not set: the coordinator does not know the worker"
            )));
        };
        let url = (w.url)(&());
        call_worker(w.clone(), url, Rc::new(payload), timeout).await
    }
}
