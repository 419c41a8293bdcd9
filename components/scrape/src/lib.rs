//! The scrape worker: `GET /scrape?url=...` and `POST /scrape` fetch pages and
//! answer with what [`fanout::html`] extracts from them, one result per URL,
//! streamed as JSON (in input order) or NDJSON (as each page finishes).
//!
//! * [`batch`]: runs a batch within its concurrency limits and deadline.
//! * [`page`]: fetches and parses one page (retries, redirects, robots.txt).
//!
//! In a durable job the request has a `sink`: the results go to the bucket
//! as one part ([`fanout::fanout::jobs::commit`]), and the answer is the receipt.

mod batch;
mod page;

use batch::{Results, Streamed};
use fanout::api::{parse_json, ApiError};
use fanout::fanout::jobs::commit::{Adopt, Output};
use fanout::fanout::jobs::receipt::{Outcome, Pages, Tally};
use fanout::framing::{Format, Framer};
use fanout::html::ExtractOptions;
use fanout::scrape::{FetchSettings, PageResult, ScrapeRequest};
use fanout_spin::sink::HttpSink;
use fanout_spin::{now, serve, Reply, Request};
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
    if let Some(urls) = request.sink {
        let sink = HttpSink::new(urls, &config)?;
        return conclude(&settings, &extract, request.urls, sink).await;
    }
    Ok(Reply::stream(format.content_type(), move |mut body| async move {
        let framer = Framer::new(format, "results");
        if !body.write(framer.start()).await {
            return;
        }
        let mut results = Streamed { framer, body: &mut body };
        batch::run(&settings, &extract, request.urls, &mut results).await;
        let end = results.framer.finish();
        body.write(end).await;
    }))
}

/// A durable job's batch: its results written to the bucket as one part, in
/// order and numbered within the job, and its receipt as the answer.
async fn conclude(
    settings: &FetchSettings,
    extract: &ExtractOptions,
    urls: Vec<String>,
    sink: HttpSink,
) -> Result<Reply, ApiError> {
    let started = now();
    let first = sink.first_index().ok_or_else(|| ApiError::bad_request("sink.first_index is missing"))?;
    let mut collected = Collected { first, lines: vec![Vec::new(); urls.len()], pages: Pages::default() };
    batch::run(settings, extract, urls.clone(), &mut collected).await;
    let output = Output {
        part: Some(collected.lines.concat()),
        errors: None,
        tally: Tally::Pages(collected.pages),
        outcome: Outcome::Done,
        process_ms: now().saturating_sub(started).as_millis() as u64,
    };
    // Pages change between runs: an earlier run's part is taken as it is, and counted.
    let derive = |part: &[u8]| Pages::of_part(part, first, &urls).map(Tally::Pages);
    sink.conclude(output, Adopt::Derive(&derive)).await
}

/// A batch's results kept for its part: one line each, in input order, numbered from `first`.
struct Collected {
    first: u64,
    lines: Vec<Vec<u8>>,
    pages: Pages,
}

impl Results for Collected {
    async fn push(&mut self, mut result: PageResult) -> bool {
        let at = result.index;
        result.index += self.first as usize;
        match result.outcome {
            fanout::scrape::Outcome::Page(_) => self.pages.pages += 1,
            fanout::scrape::Outcome::Error(_) => self.pages.errors += 1,
        }
        self.pages.results += 1;
        let line = &mut self.lines[at];
        serde_json::to_writer(&mut *line, &result).expect("results serialise");
        line.push(b'\n');
        true
    }

    /// A durable job's unit writes to the bucket at its end, whoever sent it.
    async fn heartbeat(&mut self) -> bool {
        true
    }

    fn waiting_bytes(&self) -> usize {
        // Every result is kept until the part is written, within the part's limit.
        0
    }
}
