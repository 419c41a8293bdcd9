//! The pure core of fanout.
//!
//! Everything here compiles natively and does no I/O: the components under
//! `components/` read HTTP requests, call into this crate, and write HTTP
//! responses. Each concern has one module:
//!
//! * [`api`]: the JSON error body every route answers with when it fails.
//! * [`config`]: the settings that configure the components (Spin variables or environment variables).
//! * [`content`]: response bodies decoded to text (content-encoding, charset).
//! * [`framing`]: results streamed as NDJSON or as JSON in input order.
//! * [`html`]: extraction of structured data from HTML pages.
//! * [`robots`]: robots.txt rules.
//! * [`schedule`]: which fetch runs next, within total and per-host limits.
//! * [`scrape`]: the scrape worker's request and result shapes.
//! * [`transform`]: CSV chunks turned into JSON records or group summaries by a spec.
//! * [`fanout`]: jobs split across worker invocations, run within limits, merged back in order.
//! * [`redirect`]: following redirects, with loops and hop limits caught.
//! * [`egress`]: which caller-supplied URLs a component may fetch.
//! * [`store`]: requests to the S3-compatible bucket durable jobs live in, signed.

pub mod api;
pub mod config;
pub mod content;
pub mod egress;
pub mod fanout;
pub mod framing;
pub mod html;
pub mod redirect;
pub mod robots;
pub mod schedule;
pub mod scrape;
pub mod store;
pub mod transform;
