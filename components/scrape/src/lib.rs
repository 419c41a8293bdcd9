//! The scrape worker: `GET /scrape?url=...` and `POST /scrape` fetch pages and
//! answer with what [`fanout::html`] extracts from them, one result per URL,
//! streamed as JSON (in input order) or NDJSON (as each page finishes).
//!
//! * [`batch`]: runs a batch within its concurrency limits and deadline.
//! * [`page`]: fetches and parses one page (retries, redirects, robots.txt).

mod batch;
mod page;

use fanout::api::{parse_json, ApiError};
use fanout::framing::Format;
use fanout::scrape::ScrapeRequest;
use fanout_spin::{serve, Reply, Request};
use spin_sdk::http::{IncomingRequest, ResponseOutparam};
use spin_sdk::http_component;

#[http_component]
async fn handle(req: IncomingRequest, out: ResponseOutparam) {
    serve(req, out, route).await
}

async fn route(req: Request) -> Result<Reply, ApiError> {
    if req.path != "/scrape" {
        return Err(ApiError::not_found(&req.method, &req.path));
    }
    req.allow(&["GET", "POST"])?;
    let config = req.config.clone();
    let format = Format::from_accept(req.header("accept")?.as_deref());
    let request = if req.method == "GET" {
        let url = req
            .query_param("url")
            .ok_or_else(|| ApiError::bad_request("GET /scrape needs a url query parameter: /scrape?url=https://..."))?;
        ScrapeRequest { urls: vec![url], ..ScrapeRequest::default() }
    } else {
        parse_json::<ScrapeRequest>(&req.body().await?)?
    };
    if request.urls.len() > config.max_urls {
        return Err(ApiError::bad_request(format!(
            "urls holds {} URLs; the limit is {} (FANOUT_MAX_URLS)",
            request.urls.len(),
            config.max_urls
        )));
    }
    // Everything that can make the request fail as a whole is checked before the answer starts.
    let extract = request.extract_options(&config)?;
    let settings = request.settings(&config)?;
    Ok(Reply::stream(format.content_type(), move |mut body| async move {
        batch::run(&settings, &extract, request.urls, format, &mut body).await;
    }))
}
