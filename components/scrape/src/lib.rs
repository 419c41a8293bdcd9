//! The scrape worker: `GET /scrape?url=...` and `POST /scrape` fetch pages and
//! answer with what [`fanout::html`] extracts from them, one result per URL.

use fanout::api::{parse_json, ApiError};
use fanout::config::Config;
use fanout::egress::{self, Refusal};
use fanout::html::{self, ExtractOptions};
use fanout::retry::{parse_retry_after, retryable_status, RetryPolicy};
use fanout::scrape::{
    FailureKind, ItemError, Outcome, Page, PageResult, ScrapeRequest, ScrapeResponse,
};
use fanout_spin::{fetch, random_u64, serve, sleep, FetchError, Fetched, Outbound, Reply, Request};
use futures::StreamExt;
use spin_sdk::http::{IncomingRequest, Method, ResponseOutparam};
use spin_sdk::http_component;
use std::time::{Duration, Instant};

const USER_AGENT: &str = concat!("fanout-scrape/", env!("CARGO_PKG_VERSION"));

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
    let request = if req.method == "GET" {
        let url = req.query_param("url").ok_or_else(|| {
            ApiError::bad_request(
                "GET /scrape needs a url query parameter: /scrape?url=https://...",
            )
        })?;
        ScrapeRequest {
            urls: vec![url],
            ..ScrapeRequest::default()
        }
    } else {
        parse_json::<ScrapeRequest>(&req.body().await?)?
    };
    let options = request.extract_options()?;
    let urls = request.urls;
    if urls.len() > config.max_urls {
        return Err(ApiError::bad_request(format!(
            "urls holds {} URLs; the limit is {} (FANOUT_MAX_URLS)",
            urls.len(),
            config.max_urls
        )));
    }
    let results = futures::stream::iter(urls.into_iter().enumerate())
        .map(|(index, url)| scrape_one(&config, &options, index, url))
        .buffered(config.scrape_concurrency)
        .collect()
        .await;
    Ok(Reply::json(&ScrapeResponse { results }))
}

async fn scrape_one(
    config: &Config,
    options: &ExtractOptions,
    index: usize,
    url: String,
) -> PageResult {
    let outcome = match scrape(config, options, &url).await {
        Ok(page) => Outcome::Page(page),
        Err(err) => Outcome::Error(err),
    };
    PageResult {
        index,
        url,
        outcome,
    }
}

async fn scrape(config: &Config, options: &ExtractOptions, url: &str) -> Result<Page, ItemError> {
    let target =
        egress::check(url, config.allow_private_hosts).map_err(|refusal| match refusal {
            Refusal::Invalid(m) => ItemError::new(FailureKind::InvalidUrl, m),
            Refusal::Blocked(m) => ItemError::new(FailureKind::Blocked, m),
        })?;
    let started = Instant::now();
    let (result, attempts) = fetch_with_retries(config, target.as_str()).await;
    let response = result.map_err(|e| {
        let kind = match e {
            FetchError::Timeout(_) => FailureKind::Timeout,
            FetchError::Dns(_) => FailureKind::Dns,
            FetchError::Connect(_) => FailureKind::Connect,
            FetchError::Denied(_) => FailureKind::Blocked,
            FetchError::TooLarge(_) => FailureKind::TooLarge,
            FetchError::Invalid(_) => FailureKind::InvalidUrl,
        };
        ItemError {
            attempts: Some(attempts),
            ..ItemError::new(kind, e.to_string())
        }
    })?;
    if !(200..300).contains(&response.status) {
        return Err(ItemError {
            kind: FailureKind::HttpStatus,
            message: format!("server answered {}", response.status),
            status: Some(response.status),
            attempts: Some(attempts),
        });
    }
    let content_type = response
        .header("content-type")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !(content_type.starts_with("text/html") || content_type.starts_with("application/xhtml+xml"))
    {
        return Err(ItemError {
            kind: FailureKind::NotHtml,
            message: format!("content type is {content_type:?}, not HTML"),
            status: Some(response.status),
            attempts: Some(attempts),
        });
    }
    let text = String::from_utf8_lossy(&response.body);
    Ok(Page {
        status: response.status,
        data: html::extract(&text, &target, options),
        final_url: target.into(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        attempts,
    })
}

/// Fetches `url`, retrying connection errors, 408, 429 and 5xx with backoff
/// (honouring `Retry-After`), up to `FANOUT_FETCH_ATTEMPTS` attempts. Time-outs
/// are not retried: a page that is slow once is likely slow again, and the
/// batch should not wait for it several times over.
async fn fetch_with_retries(config: &Config, url: &str) -> (Result<Fetched, FetchError>, u32) {
    let policy = RetryPolicy {
        max_attempts: config.fetch_attempts,
        base_delay: Duration::from_millis(250),
        max_delay: Duration::from_secs(10),
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = fetch(Outbound {
            method: Method::Get,
            url,
            headers: vec![
                ("user-agent", USER_AGENT.to_owned()),
                ("accept", "text/html,application/xhtml+xml".to_owned()),
            ],
            body: None,
            timeout: config.fetch_timeout,
            max_bytes: config.max_page_bytes,
        })
        .await;
        let retry_after = match &result {
            Ok(r) if retryable_status(r.status) => {
                Some(r.header("retry-after").and_then(parse_retry_after))
            }
            Err(FetchError::Connect(_)) => Some(None),
            _ => None,
        };
        let delay = retry_after.and_then(|after| policy.next_delay(attempts, after, random_u64()));
        match delay {
            Some(d) => sleep(d).await,
            None => return (result, attempts),
        }
    }
}
