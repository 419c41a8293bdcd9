//! A worker's writes of a durable job's unit, through the presigned URLs the
//! coordinator gave it: it holds no credentials, only a URL per object and
//! method, valid while its lease lasts.

use crate::client::{fetch, Outbound};
use crate::time::sleep;
use crate::Reply;
use fanout::api::{ApiError, ErrorKind};
use fanout::config::Config;
use fanout::fanout::jobs::commit::{commit, Adopt, CommitError, ObjectUrls, Output, Sink, SinkUrls};
use fanout::fanout::jobs::layout::Slot;
use fanout::fanout::jobs::receipt::ObjectSum;
use fanout::store::{redact, StoreError};
use spin_sdk::http::Method;
use std::future::Future;
use std::time::Duration;

/// A unit's objects, written through presigned URLs: only to the bucket the
/// worker is configured with, so that a caller without the token cannot make
/// a worker write anywhere else.
pub struct HttpSink {
    urls: SinkUrls,
    timeout: Duration,
    max_bytes: usize,
}

impl HttpSink {
    /// The sink `urls` names, once every URL passes this deployment's egress
    /// rules (403 otherwise: a caller without the token cannot make a worker
    /// write where the operator did not allow).
    pub fn new(urls: SinkUrls, config: &Config) -> Result<HttpSink, ApiError> {
        let egress = config.egress();
        let forbidden = |m: String| ApiError::new(ErrorKind::Forbidden, redact(&m));
        let origin = config.sink_origin.as_ref().map(url::Url::origin).ok_or_else(|| {
            forbidden(
                "this worker writes durable job units only to the bucket its FANOUT_S3_ENDPOINT (or \
                 FANOUT_S3_BUCKET) names, and neither is set"
                    .to_owned(),
            )
        })?;
        let all = [Some(&urls.part), urls.errors.as_ref(), Some(&urls.receipt)];
        for object in all.into_iter().flatten() {
            for url in [&object.create, &object.read] {
                let checked = egress.check(url).map_err(|r| forbidden(format!("sink: {r}")))?;
                if checked.origin() != origin {
                    return Err(forbidden(format!(
                        "sink: {url} is not in the bucket at {}",
                        origin.ascii_serialization()
                    )));
                }
            }
        }
        Ok(HttpSink { urls, timeout: config.source_timeout, max_bytes: config.max_part_bytes })
    }

    /// The job index of a scrape batch's first URL.
    pub fn first_index(&self) -> Option<u64> {
        self.urls.first_index
    }

    fn urls(&self, slot: Slot) -> Result<&ObjectUrls, StoreError> {
        match slot {
            Slot::Part => Ok(&self.urls.part),
            Slot::Errors => {
                self.urls.errors.as_ref().ok_or_else(|| StoreError::Permanent("no URL for error records".into()))
            }
            Slot::Receipt => Ok(&self.urls.receipt),
        }
    }
}

impl HttpSink {
    /// Commits a unit's `output` (see [`commit`]) and answers with its receipt:
    /// 413 for a part over the limit, 409 when an earlier run's objects cannot
    /// be taken as this one's, 502 when the bucket fails.
    pub async fn conclude(&self, output: Output, adopt: Adopt<'_>) -> Result<Reply, ApiError> {
        let part = output.part.as_ref().map_or(0, Vec::len);
        if part > self.max_bytes {
            return Err(ApiError::new(
                ErrorKind::PayloadTooLarge,
                format!(
                    "the unit's part takes {part} bytes, over the limit of {} (FANOUT_MAX_PART_BYTES): make the \
                     job's units smaller",
                    self.max_bytes
                ),
            ));
        }
        match commit(self, self.urls.unit, output, adopt).await {
            Ok(committed) => Ok(Reply::bytes("application/json", committed.into_bytes())),
            Err(CommitError::Store(e)) => Err(ApiError::new(ErrorKind::BadGateway, format!("sink: {e}"))),
            Err(CommitError::Conflict(m)) => Err(ApiError::new(ErrorKind::Conflict, m)),
        }
    }
}

impl Sink for HttpSink {
    async fn create(&self, slot: Slot, body: &[u8], sum: &ObjectSum) -> Result<bool, StoreError> {
        let answer = fetch(Outbound {
            method: Method::Put,
            url: &self.urls(slot)?.create,
            // If-None-Match is signed into the URL; Content-MD5 has the store check what it got.
            headers: vec![("if-none-match", "*".to_owned()), ("content-md5", sum.content_md5())],
            body: Some(body),
            timeout: self.timeout,
            max_bytes: 64 * 1024,
            truncate: true,
        })
        .await
        .map_err(|e| StoreError::Transient(e.to_string()))?;
        match answer.status {
            200..=299 => Ok(true),
            412 => Ok(false),
            status => Err(StoreError::of_answer(status, &answer.body)),
        }
    }

    async fn read(&self, slot: Slot) -> Result<Option<Vec<u8>>, StoreError> {
        let answer = fetch(Outbound {
            method: Method::Get,
            url: &self.urls(slot)?.read,
            headers: Vec::new(),
            body: None,
            timeout: self.timeout,
            max_bytes: self.max_bytes,
            truncate: false,
        })
        .await
        .map_err(|e| StoreError::Transient(e.to_string()))?;
        match answer.status {
            200 => Ok(Some(answer.body)),
            404 => Ok(None),
            status => Err(StoreError::of_answer(status, &answer.body)),
        }
    }

    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> {
        sleep(duration)
    }
}
