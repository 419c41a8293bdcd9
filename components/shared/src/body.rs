//! Request bodies: read whole within a limit, or streamed piece by piece.

use fanout::api::{host_message, ApiError};
use spin_sdk::http::IncomingRequest;
use spin_sdk::wit::wasi::http0_2_0::types::IncomingBody;
use std::task::Poll;
use wasi::io::streams::{InputStream, StreamError};

/// The most bytes asked for in one read of a request body.
const READ_BYTES: u64 = 1024 * 1024;

/// Reads a request body, refusing with 413 as soon as it is known to exceed `limit` bytes.
///
/// A `Content-Length` over the limit is refused before reading; a body without
/// one (chunked) is refused once it grows past the limit, so no more than
/// `limit` bytes are ever held.
pub async fn read_body(req: IncomingRequest, limit: usize) -> Result<Vec<u8>, ApiError> {
    let (declared, _incoming, stream) = open_body(&req, limit as u64)?;
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize));
    // Nothing else runs before the body is in, so blocking reads cost no
    // concurrency, and large reads cost far fewer host calls than small ones.
    loop {
        match stream.blocking_read(READ_BYTES) {
            Ok(chunk) => {
                if body.len() + chunk.len() > limit {
                    return Err(ApiError::payload_too_large(limit as u64));
                }
                body.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(ApiError::bad_request(format!(
                    "request body could not be read: {}",
                    host_message(&e.to_debug_string())
                )))
            }
        }
    }
    Ok(body)
}

/// The body of `req` and its stream, with its declared length, once that is
/// checked against `limit` (413 when over it).
fn open_body(req: &IncomingRequest, limit: u64) -> Result<(Option<u64>, IncomingBody, InputStream), ApiError> {
    let declared = req
        .headers()
        .get("content-length")
        .into_iter()
        .find_map(|v| String::from_utf8(v).ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let unreadable = |what: &str| ApiError::bad_request(format!("request body could not be read: {what}"));
    let body = req.consume().map_err(|()| unreadable("it was already taken"))?;
    let stream = body.stream().map_err(|()| unreadable("it has no stream"))?;
    Ok((declared, body, stream))
}

/// The most bytes taken in one read of a streamed body.
const STREAM_READ_BYTES: u64 = 256 * 1024;

/// An incoming body's bytes as they arrive, without blocking the component's
/// other work: a request's or a response's.
pub struct Pieces {
    // Dropped in this order: a stream with a live pollable, or a body with a
    // live stream, traps ("resource has children").
    registration: Option<spin_executor::CancelOnDropToken>,
    stream: Option<InputStream>,
    owner: Option<Box<dyn std::any::Any>>,
}

impl Pieces {
    /// Reads `stream`, which belongs to `owner` (dropped after it).
    pub(crate) fn new(stream: InputStream, owner: Box<dyn std::any::Any>) -> Pieces {
        Pieces { registration: None, stream: Some(stream), owner: Some(owner) }
    }

    /// The next piece; `None` at the end. An error (the body broke off) ends the stream.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, String>> {
        std::future::poll_fn(|cx| {
            let Some(stream) = &self.stream else { return Poll::Ready(None) };
            match stream.read(STREAM_READ_BYTES) {
                Ok(piece) if piece.is_empty() => {
                    let token = spin_executor::push_waker_and_get_token(stream.subscribe(), cx.waker().clone());
                    self.registration = Some(token.into());
                    Poll::Pending
                }
                Ok(piece) => Poll::Ready(Some(Ok(piece))),
                Err(StreamError::Closed) => {
                    self.close();
                    Poll::Ready(None)
                }
                Err(StreamError::LastOperationFailed(e)) => {
                    self.close();
                    Poll::Ready(Some(Err(host_message(&e.to_debug_string()))))
                }
            }
        })
        .await
    }

    fn close(&mut self) {
        self.registration = None;
        self.stream = None;
        self.owner = None;
    }
}

impl Drop for Pieces {
    fn drop(&mut self) {
        self.close();
    }
}

/// A request body read as it arrives, within a size limit.
pub struct BodyStream {
    pieces: Pieces,
    limit: u64,
    read: u64,
}

impl BodyStream {
    pub(crate) fn new(req: IncomingRequest, limit: u64) -> Result<BodyStream, ApiError> {
        let (_, body, stream) = open_body(&req, limit)?;
        // The request outlives its body, which outlives its stream.
        Ok(BodyStream { pieces: Pieces::new(stream, Box::new((body, req))), limit, read: 0 })
    }

    /// The next piece of the body; `None` at its end. An error (the body broke
    /// off, or grew past the limit) ends the stream.
    pub async fn next(&mut self) -> Option<Result<Vec<u8>, ApiError>> {
        match self.pieces.next().await? {
            Ok(piece) => {
                self.read += piece.len() as u64;
                if self.read > self.limit {
                    self.pieces.close();
                    return Some(Err(ApiError::payload_too_large(self.limit)));
                }
                Some(Ok(piece))
            }
            Err(e) => {
                Some(Err(ApiError::bad_request(format!("the request body broke off after {} bytes: {e}", self.read))))
            }
        }
    }
}
