//! The coordinator: splits a job across many worker invocations, runs them
//! concurrently within limits, retries failed ones, and streams the answers
//! back merged in input order. The decisions are the core's
//! ([`fanout::fanout::driver`]); this component reads requests and performs
//! the driver's actions.
//!
//! * [`scrape`]: `POST /coordinate/scrape`, URL lists in batches to the scrape worker.
//! * [`transform`]: `POST /coordinate/transform`, CSV files in chunks (or byte
//!   ranges) to the transform worker.
//! * [`run`]: the loop that performs a job's actions.
//! * [`jobs`]: `/jobs/...`, durable jobs advanced by ticks, state and results in a bucket.
//! * [`host`]: what a durable job's tick runs on: the bucket, the workers, the clocks.

mod host;
mod jobs;
mod run;
mod scrape;
mod transform;

use fanout::api::ApiError;
use fanout_spin::{serve, Reply, Request};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, route).await
}

async fn route(req: Request) -> Result<Reply, ApiError> {
    match req.path.as_str() {
        "/coordinate/scrape" => {
            req.allow(&["POST"])?;
            scrape::coordinate(req).await
        }
        "/coordinate/transform" => {
            req.allow(&["POST"])?;
            transform::coordinate(req).await
        }
        path if path == "/jobs" || path.starts_with("/jobs/") => {
            let rest = path["/jobs".len()..].to_owned();
            jobs::route(req, &rest).await
        }
        _ => Err(ApiError::not_found(&req.method, &req.path)),
    }
}
