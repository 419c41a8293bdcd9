//! Outbound HTTP requests, bounded in time and in body size.
//!
//! Requests are made with `wasi:http/outgoing-handler` directly rather than
//! spin-sdk's `send`, for two reasons: the body is written from the caller's
//! bytes with backpressure (no copy), and a server that answers before reading
//! the whole body (a 413, say) is heard, instead of the write's failure hiding its answer.

use crate::body::Pieces;
use crate::time::timeout;
use fanout::api::host_message;
use fanout::content::Pin;
use spin_sdk::http::Method;
use std::fmt;
use std::future::poll_fn;
use std::task::Poll;
use std::time::Duration;
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, IncomingResponse, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::{OutputStream, StreamError};

/// An outbound request.
pub struct Outbound<'a> {
    /// The method.
    pub method: Method,
    /// The absolute URL.
    pub url: &'a str,
    /// Extra request headers.
    pub headers: Vec<(&'static str, String)>,
    /// The request body, if any.
    pub body: Option<&'a [u8]>,
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
        first_header(&self.headers, name)
    }
}

fn first_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
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
    let (max_bytes, truncate) = (req.max_bytes, req.truncate);
    let mut opened = send(req).await?;
    let mut body = Vec::new();
    while let Some(chunk) = opened.body.next().await {
        let chunk = chunk.map_err(|e| FetchError::Connect(format!("body broke off: {e}")))?;
        if body.len() + chunk.len() > max_bytes {
            if truncate {
                body.extend_from_slice(&chunk[..max_bytes - body.len()]);
                break;
            }
            return Err(FetchError::TooLarge(max_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Fetched { status: opened.status, headers: opened.headers, body })
}

/// A response whose body is still to be read.
pub struct Opened {
    /// The status code.
    pub status: u16,
    /// The response headers, names lower case, values that are valid UTF-8 only.
    pub headers: Vec<(String, String)>,
    /// The body, piece by piece; dropping it stops the transfer.
    pub body: Pieces,
}

impl Opened {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        first_header(&self.headers, name)
    }
}

/// Sends `req` and returns once the response head is in, within `req.timeout`;
/// the body is read by the caller (`req.max_bytes` does not apply).
pub async fn open(req: Outbound<'_>) -> Result<Opened, FetchError> {
    let limit = req.timeout;
    timeout(limit, send(req)).await.unwrap_or(Err(FetchError::Timeout(limit)))
}

async fn send(req: Outbound<'_>) -> Result<Opened, FetchError> {
    let url = url::Url::parse(req.url).map_err(|e| FetchError::Invalid(format!("{:?} is not a URL: {e}", req.url)))?;
    let mut headers: Vec<(String, Vec<u8>)> =
        req.headers.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect();
    if let Some(body) = req.body {
        headers.push(("content-length".to_owned(), body.len().to_string().into_bytes()));
    }
    let fields = Fields::from_list(&headers)
        .map_err(|e| FetchError::Invalid(format!("bad request header: {}", host_message(&format!("{e:?}")))))?;
    let request = OutgoingRequest::new(fields);
    let invalid = |what: &str| FetchError::Invalid(format!("{what} of {url} is not accepted"));
    request.set_method(&method(&req.method)).map_err(|()| invalid("the method"))?;
    let scheme = match url.scheme() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => Scheme::Other(other.to_owned()),
    };
    request.set_scheme(Some(&scheme)).map_err(|()| invalid("the scheme"))?;
    let authority = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return Err(invalid("the host")),
    };
    request.set_authority(Some(&authority)).map_err(|()| invalid("the authority"))?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    request.set_path_with_query(Some(&path)).map_err(|()| invalid("the path"))?;
    let outgoing = request.body().expect("a new request's body is taken once");
    let response = outgoing_handler::handle(request, None).map_err(classify)?;
    if let Some(body) = req.body {
        let stream = outgoing.write().expect("a new body's stream is taken once");
        // A server may answer before reading the body, and close: its answer is what counts.
        let written = write_all(&stream, body).await;
        drop(stream);
        if written.is_ok() {
            OutgoingBody::finish(outgoing, None).map_err(classify)?;
        }
    } else {
        OutgoingBody::finish(outgoing, None).map_err(classify)?;
    }
    let response = wait_response(&response).await?;
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_ascii_lowercase(), String::from_utf8(v).ok()?)))
        .collect();
    let body = response.consume().map_err(|()| FetchError::Connect("the response has no body".into()))?;
    let stream = body.stream().map_err(|()| FetchError::Connect("the response body has no stream".into()))?;
    Ok(Opened { status, headers, body: Pieces::new(stream, Box::new((body, response))) })
}

fn method(m: &Method) -> wasi::http::types::Method {
    use wasi::http::types::Method as M;
    match m {
        Method::Get => M::Get,
        Method::Head => M::Head,
        Method::Post => M::Post,
        Method::Put => M::Put,
        Method::Delete => M::Delete,
        Method::Patch => M::Patch,
        Method::Options => M::Options,
        Method::Trace => M::Trace,
        Method::Connect => M::Connect,
        Method::Other(s) => M::Other(s.clone()),
    }
}

/// Writes `bytes` to `stream` as fast as it takes them.
async fn write_all(stream: &OutputStream, mut bytes: &[u8]) -> Result<(), StreamError> {
    let mut registration: Option<spin_executor::CancelOnDropToken> = None;
    while !bytes.is_empty() {
        let room = poll_fn(|cx| match stream.check_write() {
            Ok(0) => {
                let token = spin_executor::push_waker_and_get_token(stream.subscribe(), cx.waker().clone());
                registration = Some(token.into());
                Poll::Pending
            }
            other => Poll::Ready(other),
        })
        .await?;
        let n = (room as usize).min(bytes.len());
        stream.write(&bytes[..n])?;
        bytes = &bytes[n..];
    }
    stream.flush()
}

/// Waits for the response head.
async fn wait_response(future: &FutureIncomingResponse) -> Result<IncomingResponse, FetchError> {
    let mut registration: Option<spin_executor::CancelOnDropToken> = None;
    poll_fn(|cx| match future.get() {
        Some(Ok(Ok(response))) => Poll::Ready(Ok(response)),
        Some(Ok(Err(code))) => Poll::Ready(Err(classify(code))),
        Some(Err(())) => Poll::Ready(Err(FetchError::Connect("the response was already taken".into()))),
        None => {
            let token = spin_executor::push_waker_and_get_token(future.subscribe(), cx.waker().clone());
            registration = Some(token.into());
            Poll::Pending
        }
    })
    .await
}

/// Bytes of a file fetched with a `Range` request, and whether they reach its end.
#[derive(Debug)]
pub struct RangePiece {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Whether they end the file.
    pub at_eof: bool,
}

/// Why a ranged read failed, and whether trying again may help (no
/// connection, a time-out, a 408, 429 or 5xx) or not (the file is not what was
/// asked for).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RangeError {
    /// What happened.
    pub message: String,
    /// Whether it is worth another try.
    pub transient: bool,
    /// Whether the file is not the one pinned: changed, or of another size.
    pub changed: bool,
}

impl fmt::Display for RangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Fetches bytes `first..=last` of `url`, within `time` and the range's size
/// (plus `slack` bytes, since a server that ignores `Range` sends the whole
/// file, which is cut here while it fits).
pub async fn fetch_range(
    url: &str,
    first: u64,
    last: u64,
    time: Duration,
    slack: usize,
    pin: Option<&Pin>,
) -> Result<RangePiece, RangeError> {
    let wanted = usize::try_from(last.saturating_sub(first).saturating_add(1)).unwrap_or(usize::MAX);
    let permanent = |message: String| RangeError { message, transient: false, changed: false };
    let changed = |message: String| RangeError { message, transient: false, changed: true };
    let mut headers = vec![("range", format!("bytes={first}-{last}"))];
    headers.extend(pin.and_then(Pin::condition));
    let response = fetch(Outbound {
        method: Method::Get,
        url,
        headers,
        body: None,
        timeout: time,
        max_bytes: wanted.saturating_add(slack),
        truncate: false,
    })
    .await
    .map_err(|e| RangeError {
        transient: matches!(e, FetchError::Timeout(_) | FetchError::Connect(_) | FetchError::Dns(_)),
        message: e.to_string(),
        changed: false,
    })?;
    match response.status {
        206 => {
            let (start, end, total) = response
                .header("content-range")
                .and_then(fanout::content::parse_content_range)
                .ok_or_else(|| permanent("answered 206 without a usable Content-Range".into()))?;
            if let Some(pin) = pin {
                pin.check_size(total).map_err(changed)?;
            }
            let length = end.checked_sub(start).and_then(|d| d.checked_add(1));
            if start != first || end > last || length != Some(response.body.len() as u64) {
                return Err(permanent(format!("answered bytes {start}-{end} when asked for {first}-{last}")));
            }
            Ok(RangePiece { bytes: response.body, at_eof: total.map_or(end < last, |t| end.saturating_add(1) >= t) })
        }
        200 => {
            // The server ignored Range and sent the whole file: cut the range from it.
            let body = response.body;
            let len = body.len() as u64;
            if let Some(pin) = pin {
                pin.check_size(Some(len)).map_err(changed)?;
            }
            let (from, to) = (first.min(len), last.saturating_add(1).min(len));
            Ok(RangePiece { bytes: body[from as usize..to.max(from) as usize].to_vec(), at_eof: to == len })
        }
        412 => Err(changed("answered 412: the source changed since the job was planned".into())),
        416 => match pin {
            // Past the end of a file of the pinned size is a file that shrank.
            Some(pin) if first < pin.size => Err(changed(format!(
                "answered 416 for bytes {first}-{last}: the source is shorter than the {} bytes it had when the \
                 job was planned",
                pin.size
            ))),
            _ => Ok(RangePiece { bytes: Vec::new(), at_eof: true }),
        },
        status => Err(RangeError {
            message: format!("answered {status}"),
            transient: fanout::fanout::retry::retryable_status(status),
            changed: false,
        }),
    }
}

fn classify(code: ErrorCode) -> FetchError {
    match code {
        ErrorCode::DnsTimeout | ErrorCode::DnsError(_) => FetchError::Dns(host_message(&format!("{code:?}"))),
        ErrorCode::HttpRequestDenied | ErrorCode::DestinationIpProhibited => {
            FetchError::Denied(host_message(&format!("{code:?}")))
        }
        ErrorCode::HttpRequestUriInvalid => FetchError::Invalid(host_message(&format!("{code:?}"))),
        other => FetchError::Connect(host_message(&format!("{other:?}"))),
    }
}
