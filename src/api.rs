//! The error body every fanout route answers with when a request fails as a whole.
//!
//! Failures of single items (one URL, one CSV row) are not API errors: they are
//! reported inside a successful response, next to the items that worked.

use serde::Serialize;
use std::fmt;

/// What went wrong with a request, as a stable machine-readable name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request is malformed: bad JSON, a missing or invalid parameter.
    BadRequest,
    /// The request lacks the shared token, or carries a wrong one.
    Unauthorized,
    /// No route matches the request's path.
    NotFound,
    /// The route exists but does not take the request's method.
    MethodNotAllowed,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The request names a source the deployment does not fetch.
    Forbidden,
    /// The body is not of a content type the route reads.
    UnsupportedMediaType,
    /// The request conflicts with what is there: a finished job cancelled, a unit written otherwise before.
    Conflict,
    /// A row broke a rule the request asked to be strict about (`on_error: fail`).
    BadRow,
    /// A source file read in ranges is not the file the job was planned on:
    /// rewritten, or of another size than it was said to have.
    SourceChanged,
    /// The component is misconfigured (an environment variable is invalid).
    Config,
    /// A worker that the coordinator depends on is not configured or not reachable.
    BadGateway,
}

impl ErrorKind {
    /// The HTTP status code this kind of error is answered with.
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 400,
            ErrorKind::Unauthorized => 401,
            ErrorKind::NotFound => 404,
            ErrorKind::MethodNotAllowed => 405,
            ErrorKind::Forbidden => 403,
            ErrorKind::PayloadTooLarge => 413,
            ErrorKind::UnsupportedMediaType => 415,
            ErrorKind::Conflict => 409,
            ErrorKind::BadRow => 422,
            ErrorKind::SourceChanged => 412,
            ErrorKind::Config => 500,
            ErrorKind::BadGateway => 502,
        }
    }
}

/// A request-level failure: an HTTP status and a JSON body naming the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    kind: ErrorKind,
    message: String,
}

impl ApiError {
    /// An error of the given kind with a message that says what went wrong and where.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError { kind, message: message.into() }
    }

    /// A malformed request.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    /// No route for `method path`.
    pub fn not_found(method: &str, path: &str) -> ApiError {
        ApiError::new(ErrorKind::NotFound, format!("no route for {method} {path}"))
    }

    /// `method` is not one of `allowed` on `path`.
    pub fn method_not_allowed(method: &str, path: &str, allowed: &[&str]) -> ApiError {
        ApiError::new(
            ErrorKind::MethodNotAllowed,
            format!("{path} does not take {method}; it takes {}", allowed.join(", ")),
        )
    }

    /// A body that grew past `limit` bytes.
    pub fn payload_too_large(limit: u64) -> ApiError {
        ApiError::new(ErrorKind::PayloadTooLarge, format!("request body is larger than the limit of {limit} bytes"))
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The HTTP status code to answer with.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The JSON response body: `{"error": {"kind": "...", "message": "..."}}`.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            kind: ErrorKind,
            message: &'a str,
        }
        let body = Body { error: Inner { kind: self.kind, message: &self.message } };
        serde_json::to_vec(&body).expect("an error body always serialises")
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.status(), serde_json::to_string(&self.kind).unwrap_or_default(), self.message)
    }
}

impl std::error::Error for ApiError {}

/// Parses a JSON request body into `T`, naming the position and the problem on failure.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("request body is empty; a JSON object was expected"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The most bytes of a host's error message that fanout passes on.
pub const HOST_MESSAGE_BYTES: usize = 200;

/// A message from the runtime (a failed read, a refused request): its first
/// line, at most [`HOST_MESSAGE_BYTES`] long. The host's text can be anything:
/// with `RUST_BACKTRACE=1` in its environment it carries a backtrace of 11 KB,
/// which repeated over a batch's error records would overflow its answer.
pub fn host_message(raw: &str) -> String {
    let line = raw.trim_start().lines().next().unwrap_or("").trim_end();
    if line.len() <= HOST_MESSAGE_BYTES {
        return line.to_owned();
    }
    let mut end = HOST_MESSAGE_BYTES;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &line[..end])
}

/// Whether a `method` request to `path` is the health check every component
/// answers without a token: `GET` `/healthz`, or `/healthz/NAME` where a host routes by component
/// (spin.toml gives the workers `/healthz/scrape` and `/healthz/transform`, so
/// that each still has one when deployed alone).
pub fn is_health_check(method: &str, path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    method == "GET"
        && (path == "/healthz"
            || path.strip_prefix("/healthz/").is_some_and(|name| !name.is_empty() && !name.contains('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_messages_are_one_bounded_line() {
        let backtrace = format!("hyper error: error reading a body\nStack backtrace:\n{}", "   0: frame\n".repeat(900));
        assert_eq!(host_message(&backtrace), "hyper error: error reading a body");
        assert_eq!(host_message("  short  "), "short");
        let long = "é".repeat(300);
        let cut = host_message(&long);
        assert!(cut.len() <= HOST_MESSAGE_BYTES + '…'.len_utf8() && cut.ends_with('…'), "{cut}");
        assert_eq!(host_message(""), "");
    }

    #[test]
    fn health_checks_are_get_healthz_with_or_without_a_component_name() {
        for path in ["/healthz", "/healthz?probe=1", "/healthz/scrape"] {
            assert!(is_health_check("GET", path), "{path}");
        }
        for (method, path) in [
            ("POST", "/healthz"),
            ("GET", "/healthz/"),
            ("GET", "/healthz/a/b"),
            ("GET", "/healthzx"),
            ("GET", "/scrape"),
        ] {
            assert!(!is_health_check(method, path), "{method} {path}");
        }
    }

    #[test]
    fn error_body_names_kind_and_message() {
        let err = ApiError::payload_too_large(10);
        assert_eq!(err.status(), 413);
        let v: serde_json::Value = serde_json::from_slice(&err.to_json()).unwrap();
        assert_eq!(v["error"]["kind"], "payload_too_large");
        assert_eq!(v["error"]["message"], "request body is larger than the limit of 10 bytes");
    }

    #[test]
    fn json_errors_name_line_and_column() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Job {
            urls: Vec<String>,
        }
        let err = parse_json::<Job>(b"{\"urls\": [1]}").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert!(err.message().contains("line 1 column"), "{}", err.message());
        let err = parse_json::<Job>(b"").unwrap_err();
        assert!(err.message().contains("empty"));
    }
}
