//! The pure core of fanout.
//!
//! Everything here compiles natively and does no I/O: the components under
//! `components/` read HTTP requests, call into this crate, and write HTTP
//! responses. Each concern has one module:
//!
//! * [`api`]: the JSON error body every route answers with when it fails.
//! * [`config`]: the environment variables that configure the components.
//! * [`html`]: extraction of structured data from HTML pages.
//! * [`scrape`]: the scrape worker's request and result shapes.
//! * [`table`]: CSV chunks turned into JSON records with per-row errors.
//! * [`plan`]: how a job is split into worker invocations.
//! * [`merge`]: how worker outputs are merged back, in input order.
//! * [`retry`]: when and after how long a failed call is tried again.
//! * [`egress`]: which caller-supplied URLs a component may fetch.

pub mod api;
pub mod config;
pub mod egress;
pub mod html;
pub mod merge;
pub mod plan;
pub mod retry;
pub mod scrape;
pub mod table;
