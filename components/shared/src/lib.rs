//! The HTTP glue every fanout component shares.
//!
//! Components are thin: [`serve`] loads the configuration, checks the shared
//! token and answers with whatever the component's handler returns, turning an
//! [`ApiError`] into its JSON error body. Body reads ([`read_body`]) and
//! outbound requests ([`fetch`]) are bounded in size and time; a durable
//! job's unit is written through [`sink::HttpSink`].

mod body;
mod client;
pub mod sink;
pub mod source;
mod time;

pub use body::{read_body, BodyStream, Pieces};
pub use client::{fetch, fetch_range, open, FetchError, Fetched, Opened, Outbound, RangeError, RangePiece};
pub use time::{now, random_u64, sleep, timeout, wall_ms, Elapsed};

use fanout::api::ApiError;
use fanout::config::Config;
use futures::future::LocalBoxFuture;
use futures::{Sink, SinkExt};
use spin_sdk::http::{Fields, IncomingRequest, Method, OutgoingResponse, ResponseOutparam};
use std::future::Future;
use std::pin::Pin;
use wasi::io::streams::StreamError;

/// An incoming request, with its configuration, handed to a component's handler.
pub struct Request {
    /// The parsed configuration.
    pub config: Config,
    /// The request method, upper case (`GET`, `POST`, ...).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string, without the `?`.
    pub query: String,
    inner: IncomingRequest,
}

impl Request {
    /// The first value of header `name`, if present; a 400 when it is not UTF-8,
    /// so that a header that cannot be read is never taken for one that is absent.
    pub fn header(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.inner.headers().get(&name.to_ascii_lowercase()).into_iter().next() {
            None => Ok(None),
            Some(value) => String::from_utf8(value).map(Some).map_err(|e| {
                ApiError::bad_request(format!("the {name} header is not UTF-8 (byte {})", e.utf8_error().valid_up_to()))
            }),
        }
    }

    /// The transform spec the request gives: the `x-fanout-spec` header, the
    /// `spec` query parameter or `preset=NAME`, one way only.
    pub fn transform_spec(&self) -> Result<Option<fanout::transform::spec::Spec>, ApiError> {
        fanout::transform::spec::from_request(
            self.header("x-fanout-spec")?,
            self.query_param("spec"),
            self.query_param("preset"),
        )
    }

    /// The first value of query parameter `name`, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned())
    }

    /// Reads the whole body, refusing with 413 once it exceeds `FANOUT_MAX_REQUEST_BYTES`.
    pub async fn body(self) -> Result<Vec<u8>, ApiError> {
        read_body(self.inner, self.config.max_request_bytes).await
    }

    /// The body as a stream of pieces, for bodies too large to hold: at most
    /// `limit` bytes in all (a `Content-Length` over it is refused with 413 at once).
    pub fn body_stream(self, limit: u64) -> Result<BodyStream, ApiError> {
        BodyStream::new(self.inner, limit)
    }

    /// Fails with 405 unless the method is one of `allowed`.
    pub fn allow(&self, allowed: &[&str]) -> Result<(), ApiError> {
        if allowed.contains(&self.method.as_str()) {
            Ok(())
        } else {
            Err(ApiError::method_not_allowed(&self.method, &self.path, allowed))
        }
    }
}

/// A response to send: a status, a content type and a body, whole or streamed.
pub struct Reply {
    status: u16,
    content_type: &'static str,
    body: Body,
}

enum Body {
    Full(Vec<u8>),
    Stream(Box<dyn FnOnce(BodyWriter) -> LocalBoxFuture<'static, ()>>),
}

/// Writes a streamed response body, piece by piece, as the handler produces it.
pub struct BodyWriter {
    sink: Pin<Box<dyn Sink<Vec<u8>, Error = StreamError>>>,
}

impl BodyWriter {
    /// Sends `bytes` to the client; false once the client has gone away, when
    /// the producer should stop.
    pub async fn write(&mut self, bytes: Vec<u8>) -> bool {
        bytes.is_empty() || self.sink.send(bytes).await.is_ok()
    }
}

impl Reply {
    /// A `200 OK` JSON reply serialising `value`.
    pub fn json(value: &impl serde::Serialize) -> Reply {
        Reply::bytes("application/json", serde_json::to_vec(value).expect("response types always serialise"))
    }

    /// The same reply with another status (`201 Created`, say).
    pub fn with_status(self, status: u16) -> Reply {
        Reply { status, ..self }
    }

    /// A `200 OK` reply with a body already made.
    pub fn bytes(content_type: &'static str, body: Vec<u8>) -> Reply {
        Reply { status: 200, content_type, body: Body::Full(body) }
    }

    /// A `200 OK` reply whose body `produce` writes while it works, so the
    /// client sees progress and the component never holds the whole answer.
    pub fn stream<F, Fut>(content_type: &'static str, produce: F) -> Reply
    where
        F: FnOnce(BodyWriter) -> Fut + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        Reply { status: 200, content_type, body: Body::Stream(Box::new(move |writer| Box::pin(produce(writer)))) }
    }

    /// The JSON error reply for `err`.
    pub fn error(err: &ApiError) -> Reply {
        Reply { status: err.status(), content_type: "application/json", body: Body::Full(err.to_json()) }
    }

    async fn send(self, out: ResponseOutparam) {
        let mut headers = vec![("content-type".to_owned(), self.content_type.as_bytes().to_vec())];
        if let Body::Full(body) = &self.body {
            headers.push(("content-length".to_owned(), body.len().to_string().into_bytes()));
        }
        let headers = Fields::from_list(&headers).expect("static response headers are valid");
        let response = OutgoingResponse::new(headers);
        response.set_status_code(self.status).expect("the status is a valid code");
        match self.body {
            // The client may have gone away; there is nobody left to tell.
            Body::Full(body) => drop(out.set_with_body(response, body).await),
            Body::Stream(produce) => {
                let sink = response.take_body();
                out.set(response);
                produce(BodyWriter { sink: Box::pin(sink) }).await;
            }
        }
    }
}

/// Serves one request: loads the configuration, checks the shared token, runs
/// `handler` and sends its reply, or the JSON error it failed with. A health
/// check ([`fanout::api::is_health_check`]) needs no token and does no I/O: it
/// is ready when the configuration reads.
pub async fn serve<F, Fut>(req: IncomingRequest, out: ResponseOutparam, handler: F)
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Result<Reply, ApiError>>,
{
    if fanout::api::is_health_check(&method_name(&req.method()), &req.path_with_query().unwrap_or_default()) {
        let reply = match Config::from_store(setting) {
            Ok(_) => Reply::json(&serde_json::json!({"status": "ok"})),
            Err(e) => Reply::error(&e),
        };
        return reply.send(out).await;
    }
    let reply = match prepare(req) {
        Ok(request) => handler(request).await.unwrap_or_else(|e| Reply::error(&e)),
        Err(e) => Reply::error(&e),
    };
    reply.send(out).await;
}

/// A setting from `wasi:config/store`: Spin's variables, or the environment
/// where the component is composed with `config-from-environment`.
fn setting(key: &str) -> Result<Option<String>, String> {
    use spin_sdk::wit::wasi::config::store::{get, Error};
    get(key).map_err(|e| match e {
        Error::Upstream(m) | Error::Io(m) => m,
    })
}

fn prepare(inner: IncomingRequest) -> Result<Request, ApiError> {
    let config = Config::from_store(setting)?;
    let path_with_query = inner.path_with_query().unwrap_or_default();
    let (path, query) = match path_with_query.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (path_with_query, String::new()),
    };
    let authorization = inner.headers().get("authorization").into_iter().find_map(|v| String::from_utf8(v).ok());
    if let Err(e) = config.authorize(authorization.as_deref()) {
        // A cron that can only call a path ticks with the tick token, which allows nothing else.
        let token = url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "token").map(|(_, v)| v);
        if !(fanout::fanout::jobs::is_tick_route(&path) && config.authorize_tick(token.as_deref())) {
            return Err(e);
        }
    }
    let method = method_name(&inner.method());
    Ok(Request { config, method, path, query, inner })
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(m) => m.to_ascii_uppercase(),
    }
}
