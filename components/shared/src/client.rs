//! Outbound HTTP requests, bounded in time and in body size.

use crate::time::timeout;
use futures::StreamExt;
use spin_sdk::http::{ErrorCode, IncomingResponse, Method, Request, SendError};
use std::fmt;
use std::time::Duration;

/// An outbound request.
pub struct Outbound<'a> {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: &'a str,
    /// Extra request headers.
    pub headers: Vec<(&'static str, String)>,
    /// The request body, if any.
    pub body: Option<Vec<u8>>,
    /// The time allowed for the whole exchange, body included.
    pub timeout: Duration,
    /// The largest response body accepted.
    pub max_bytes: usize,
    /// At `max_bytes`, keep what was read instead of failing with [`FetchError::TooLarge`].
    pub truncate: bool,
}

/// A response read in full.
#[derive(Debug)]
pub struct Fetched {
    /// The status code.
    pub status: u16,
    /// The response headers, names lower case, values that are valid UTF-8 only.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Fetched {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why an outbound request produced no response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FetchError {
    /// The exchange did not finish within the time allowed.
    Timeout(Duration),
    /// The host name did not resolve.
    Dns(String),
    /// No connection could be made, or it broke.
    Connect(String),
    /// The host refused the request: the platform's outbound allow-list does not name it.
    Denied(String),
    /// The body grew past the limit; reading stopped there.
    TooLarge(usize),
    /// The request could not be made at all (a malformed URL, say).
    Invalid(String),
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FetchError::Timeout(d) => write!(f, "no complete response within {} ms", d.as_millis()),
            FetchError::Dns(m) => write!(f, "host name did not resolve: {m}"),
            FetchError::Connect(m) => write!(f, "connection failed: {m}"),
            FetchError::Denied(m) => write!(f, "the platform refused the outbound request: {m}"),
            FetchError::TooLarge(n) => {
                write!(f, "response body is larger than the limit of {n} bytes")
            }
            FetchError::Invalid(m) => write!(f, "request could not be made: {m}"),
        }
    }
}

/// Sends `req` and reads the response body, within `req.timeout` and `req.max_bytes`.
pub async fn fetch(req: Outbound<'_>) -> Result<Fetched, FetchError> {
    let limit = req.timeout;
    timeout(limit, exchange(req)).await.unwrap_or(Err(FetchError::Timeout(limit)))
}

async fn exchange(req: Outbound<'_>) -> Result<Fetched, FetchError> {
    let mut builder = Request::builder();
    builder.method(req.method).uri(req.url);
    for (name, value) in req.headers {
        builder.header(name, value);
    }
    if let Some(body) = req.body {
        builder.body(body);
    }
    let response: IncomingResponse = spin_sdk::http::send(builder.build()).await.map_err(classify)?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), String::from_utf8(v).ok()?)))
        .collect();
    let mut body = Vec::new();
    let mut stream = response.take_body_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| FetchError::Connect(format!("body broke off: {e:?}")))?;
        if body.len() + chunk.len() > req.max_bytes {
            if req.truncate {
                body.extend_from_slice(&chunk[..req.max_bytes - body.len()]);
                break;
            }
            return Err(FetchError::TooLarge(req.max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { status, headers, body })
}

fn classify(err: SendError) -> FetchError {
    match err {
        SendError::Http(code) => match code {
            ErrorCode::DnsTimeout | ErrorCode::DnsError(_) => FetchError::Dns(format!("{code:?}")),
            ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => FetchError::Connect(format!("{code:?}")),
            ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
                FetchError::Denied(format!("{code:?}"))
            }
            ErrorCode::HttpRequestUriInvalid => FetchError::Invalid(format!("{code:?}")),
            other => FetchError::Connect(format!("{other:?}")),
        },
        SendError::RequestConversion(e) => FetchError::Invalid(e.to_string()),
        other => FetchError::Connect(other.to_string()),
    }
}
