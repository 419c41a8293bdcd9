//! The deployment's bucket, as the CLI reaches it: credentials and endpoint
//! the way the AWS CLI and SDKs read them (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`), the bucket from
//! `--bucket` or `FANOUT_S3_BUCKET`. Requests are signed by the core
//! ([`fanout::store`]) and sent with reqwest.

use anyhow::{bail, Context, Result};
use fanout::store::{complete_upload_body, parse_upload_id, Bucket, Op, S3Config};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;

/// Bytes per part of a multipart upload: S3 takes 5 MiB at the least, 10,000 parts at the most.
const PART_BYTES: usize = 16 * 1024 * 1024;
/// The most parts S3 takes in one upload: files up to 156 GiB at `PART_BYTES`.
const MAX_PARTS: usize = 10_000;
/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(3600);

/// A bucket and an HTTP client to reach it.
pub struct Store {
    bucket: Bucket,
    config: S3Config,
    http: Http,
}

/// A blocking face on reqwest's async client: one runtime thread for every request.
pub struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    /// A client for `local` (loopback) hosts or any.
    pub fn new(local: bool) -> Result<Http> {
        let mut client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10));
        if local {
            // A proxy from the environment cannot reach this machine's loopback.
            client = client.no_proxy();
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("cannot start the HTTP client's runtime")?;
        Ok(Http { runtime, client: client.build().context("cannot set up the HTTP client")? })
    }

    /// Sends a request and reads its whole answer: status, headers, body.
    pub fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("methods are valid");
        let mut request = self.client.request(method, url);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.header("content-length", body.len()).body(body);
        }
        self.runtime.block_on(async {
            let answer = tokio::time::timeout(timeout, async {
                let response = request.send().await?;
                let status = response.status().as_u16();
                let headers = response.headers().clone();
                let body = response.bytes().await?.to_vec();
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await;
            match answer {
                Err(_) => bail!("no answer within {} s", timeout.as_secs()),
                Ok(Err(e)) => {
                    let mut cause: &dyn std::error::Error = &e;
                    while let Some(inner) = cause.source() {
                        cause = inner;
                    }
                    bail!("{cause}")
                }
                Ok(Ok(answer)) => Ok(answer),
            }
        })
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn required(name: &str) -> Result<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty()).with_context(|| {
        format!("{name} is not set: a durable job reads and writes the deployment's bucket with the AWS variables")
    })
}

impl Store {
    /// The bucket `bucket` names, with the credentials of the environment.
    pub fn from_env(bucket: &str) -> Result<Store> {
        let endpoint = match std::env::var("AWS_ENDPOINT_URL").ok().filter(|v| !v.is_empty()) {
            Some(url) => Some(Url::parse(&url).with_context(|| format!("AWS_ENDPOINT_URL={url:?} is not a URL"))?),
            None => None,
        };
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".to_owned());
        let config = S3Config {
            endpoint,
            bucket: bucket.to_owned(),
            region,
            access_key_id: required("AWS_ACCESS_KEY_ID")?,
            secret_access_key: required("AWS_SECRET_ACCESS_KEY")?,
        };
        let bucket = Bucket::new(&config).map_err(|e| anyhow::anyhow!("the bucket: {e}"))?;
        let local = config.endpoint.as_ref().is_some_and(|u| {
            matches!(u.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback()) || u.host_str() == Some("localhost")
        });
        Ok(Store { bucket, config, http: Http::new(local)? })
    }

    /// The configuration, for a bundle the CLI serves (its coordinator's `FANOUT_S3_*`).
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// `s3://BUCKET/KEY`.
    pub fn uri(&self, key: &str) -> String {
        self.bucket.uri(key)
    }

    fn send(&self, op: &Op<'_>, body: Option<Vec<u8>>) -> Result<(u16, reqwest::header::HeaderMap, Vec<u8>)> {
        let signed = self.bucket.sign(op, SIGNED_FOR, now_ms());
        let headers: Vec<(&str, String)> = signed.headers.clone();
        self.http.send(signed.method, &signed.url, &headers, body, Duration::from_secs(300))
    }

    /// An object, or `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let (status, _, body) = self.send(&Op::Get { key, range: None }, None).with_context(|| format!("GET {key}"))?;
        match status {
            200 => Ok(Some(body)),
            404 => Ok(None),
            s => bail!("GET {}: {}", self.uri(key), fanout::store::StoreError::of_answer(s, &body)),
        }
    }

    /// Uploads `file` to `key` in parts, calling `progress` with the bytes sent so far.
    pub fn upload(&self, key: &str, mut file: std::fs::File, mut progress: impl FnMut(u64)) -> Result<()> {
        use std::io::Read;
        let fail = |what: &str, s: u16, body: &[u8]| {
            anyhow::anyhow!("{what} {}: {}", self.uri(key), fanout::store::StoreError::of_answer(s, body))
        };
        let (status, _, body) = self.send(&Op::CreateUpload { key }, None).context("starting the upload")?;
        if status != 200 {
            return Err(fail("starting the upload of", status, &body));
        }
        let upload_id = parse_upload_id(&body).map_err(|e| anyhow::anyhow!(e))?;
        let mut etags = Vec::new();
        let mut sent = 0u64;
        let uploaded = (|| -> Result<()> {
            loop {
                let mut part = Vec::with_capacity(PART_BYTES);
                (&mut file).take(PART_BYTES as u64).read_to_end(&mut part).context("reading the file")?;
                if part.is_empty() && !etags.is_empty() {
                    return Ok(());
                }
                let n = part.len() as u64;
                if etags.len() == MAX_PARTS {
                    bail!("the file is larger than S3 uploads in {MAX_PARTS} parts of {PART_BYTES} bytes");
                }
                let number = u16::try_from(etags.len() + 1).expect("at most MAX_PARTS parts");
                let op = Op::UploadPart { key, upload_id: &upload_id, part: number };
                let (status, headers, body) = self.send(&op, Some(part)).context("uploading a part")?;
                if status != 200 {
                    return Err(fail("uploading a part of", status, &body));
                }
                let etag = headers.get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                etags.push(etag);
                sent += n;
                progress(sent);
                if n < PART_BYTES as u64 {
                    return Ok(());
                }
            }
        })();
        let ended = uploaded.and_then(|()| {
            let op = Op::CompleteUpload { key, upload_id: &upload_id };
            let (status, _, body) = self.send(&op, Some(complete_upload_body(&etags))).context("ending the upload")?;
            // S3 may answer 200 with an error in the body.
            if status != 200 || String::from_utf8_lossy(&body).contains("<Error>") {
                return Err(fail("ending the upload of", status, &body));
            }
            Ok(())
        });
        if ended.is_err() {
            let _ = self.send(&Op::AbortUpload { key, upload_id: &upload_id }, None);
        }
        ended
    }
}
