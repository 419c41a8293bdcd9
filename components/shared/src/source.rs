//! Source files read by byte range: the caller-named file a transform job
//! reads in ranges, its header row and its size. The coordinator and the
//! transform worker both check a source the same way before reading it.

use crate::client::{fetch_range, open, Outbound};
use fanout::api::{ApiError, ErrorKind};
use fanout::config::Config;
use fanout::content::Pin;
use fanout::egress::Refusal;
use fanout::store::redact;
use fanout::transform::engine::{read_header, Header};
use fanout::transform::spec::Dialect;
use spin_sdk::http::Method;
use url::Url;

/// The most bytes the header row may take.
pub const MAX_HEADER_BYTES: u64 = 64 * 1024;

/// Checks the URL a request gives in `field` against the egress rules: 400
/// when it is not a URL, 403 when it is not allowed.
pub fn check(field: &str, source: &str, config: &Config) -> Result<Url, ApiError> {
    config.egress().check(source).map_err(|r| match r {
        Refusal::Invalid(m) => ApiError::bad_request(redact(&format!("{field}: {m}"))),
        Refusal::Blocked(m) => ApiError::new(ErrorKind::Forbidden, redact(&format!("{field}: {m}"))),
    })
}

/// A failed read of the source; a presigned source's signature is not repeated in the message.
fn gateway(url: &Url, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::BadGateway, redact(&format!("source {url}: {message}")))
}

/// Fetches bytes `first..=last` of the source, as it was when `pin` was
/// taken: 502 when it fails or the source is not that file any more.
pub async fn range(
    config: &Config,
    url: &Url,
    first: u64,
    last: u64,
    pin: Option<&Pin>,
) -> Result<crate::RangePiece, ApiError> {
    fetch_range(url.as_str(), first, last, config.source_timeout, config.max_request_bytes, pin).await.map_err(|e| {
        if e.changed {
            ApiError::new(ErrorKind::SourceChanged, redact(&format!("source {url}: {e}")))
        } else {
            gateway(url, e)
        }
    })
}

/// The source's header row (the dialect's `columns` when it has none).
pub async fn header(config: &Config, url: &Url, dialect: &Dialect) -> Result<Header, ApiError> {
    if !dialect.header {
        return read_header(dialect, &[]).map_err(ApiError::bad_request);
    }
    let prefix = range(config, url, 0, MAX_HEADER_BYTES - 1, None).await?;
    // A record ends at `\r` as well as `\n` (old Mac files end lines with `\r` alone).
    if !prefix.at_eof && !prefix.bytes.iter().any(|&b| b == b'\n' || b == b'\r') {
        return Err(ApiError::bad_request(format!("the source's header row is longer than {MAX_HEADER_BYTES} bytes")));
    }
    read_header(dialect, &prefix.bytes).map_err(ApiError::bad_request)
}

/// The source's size in bytes and its validators (`ETag`, `Last-Modified`):
/// from `HEAD`, or where that is not allowed, from a one-byte ranged `GET`
/// (its `Content-Range` has the size).
pub async fn pin(config: &Config, url: &Url) -> Result<Pin, ApiError> {
    let head = |method| Outbound {
        method,
        url: url.as_str(),
        headers: vec![("range", "bytes=0-0".to_owned())],
        body: None,
        timeout: config.source_timeout,
        max_bytes: 0,
        truncate: true,
    };
    let pin_of = |resp: &crate::Opened, size| Pin::new(size, resp.header("etag"), resp.header("last-modified"));
    let headed = open(Outbound { headers: Vec::new(), ..head(Method::Head) }).await;
    if let Ok(resp) = &headed {
        let length = resp.header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        if let (200, Some(length)) = (resp.status, length) {
            return Ok(pin_of(resp, length));
        }
    }
    // The body of this answer is dropped unread: only its head counts.
    let resp = open(head(Method::Get)).await.map_err(|e| gateway(url, e))?;
    let size = match resp.status {
        206 => resp
            .header("content-range")
            .and_then(fanout::content::parse_content_range)
            .and_then(|(_, _, total)| total)
            .ok_or_else(|| gateway(url, "answered 206 without the file's size in Content-Range"))?,
        200 => resp
            .header("content-length")
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| gateway(url, "answered 200 without Content-Length, so its size is unknown"))?,
        416 => 0,
        status => return Err(gateway(url, format!("answered {status} when asked for its size"))),
    };
    Ok(pin_of(&resp, size))
}
