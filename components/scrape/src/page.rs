//! Fetches and parses one page: retries, redirects (each hop checked like a
//! caller's URL), robots.txt, content decoding, extraction.

use fanout::content::{self, ContentError};
use fanout::egress::Refusal;
use fanout::fanout::retry::{parse_retry_after, retryable_status, RetryPolicy};
use fanout::html::{self, ExtractOptions};
use fanout::redirect::{is_redirect, RedirectError, Redirects};
use fanout::robots::Robots;
use fanout::scrape::{FailureKind, FetchSettings, ItemError, Page};
use fanout_spin::{fetch, random_u64, sleep, timeout, FetchError, Fetched, Outbound};
use futures::future::{FutureExt, LocalBoxFuture, Shared};
use spin_sdk::http::Method;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use url::Url;

/// robots.txt bodies are read up to this size and parsed (RFC 9309 asks for at least 500 KiB).
const MAX_ROBOTS_BYTES: usize = 512 * 1024;

/// What every page of one batch shares.
pub struct Context<'a> {
    settings: &'a FetchSettings,
    extract: &'a ExtractOptions,
    retry: RetryPolicy,
    /// robots.txt per origin, fetched once per invocation however many pages wait on it.
    robots: RefCell<HashMap<String, Shared<LocalBoxFuture<'static, Rc<Robots>>>>>,
}

impl<'a> Context<'a> {
    /// A context for one batch.
    pub fn new(settings: &'a FetchSettings, extract: &'a ExtractOptions) -> Context<'a> {
        let retry = RetryPolicy {
            max_attempts: settings.attempts,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        };
        Context { settings, extract, retry, robots: RefCell::new(HashMap::new()) }
    }

    async fn robots_allow(&self, url: &Url) -> bool {
        let origin = url.origin().ascii_serialization();
        let rules = {
            let mut cache = self.robots.borrow_mut();
            cache
                .entry(origin.clone())
                .or_insert_with(|| {
                    fetch_robots(format!("{origin}/robots.txt"), self.settings.clone()).boxed_local().shared()
                })
                .clone()
        };
        let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
        rules.await.allows(&self.settings.user_agent, path)
    }
}

/// Fetches a robots.txt: 2xx is parsed (its first 512 KiB), 4xx means no
/// rules, anything else (5xx, no connection, a redirect chain that fails)
/// means stay out, as RFC 9309 says. Up to five redirects are followed, each
/// checked like a caller's URL.
async fn fetch_robots(url: String, settings: FetchSettings) -> Rc<Robots> {
    let Ok(start) = Url::parse(&url) else {
        return Rc::new(Robots::disallow_all());
    };
    let mut chain = Redirects::new(start, 5, settings.egress.clone());
    let rules = loop {
        let response = fetch(Outbound {
            method: Method::Get,
            url: chain.current().as_str(),
            headers: vec![("user-agent", settings.user_agent.clone())],
            body: None,
            timeout: settings.timeout,
            max_bytes: MAX_ROBOTS_BYTES,
            truncate: true,
        })
        .await;
        let response = match response {
            Ok(r) => r,
            Err(_) => break Robots::disallow_all(),
        };
        match response.status {
            200..=299 => break Robots::parse(&String::from_utf8_lossy(&response.body)),
            s if is_redirect(s) => {
                if response.header("location").is_some_and(|l| chain.follow(l).is_ok()) {
                    continue;
                }
                break Robots::disallow_all();
            }
            400..=499 => break Robots::allow_all(),
            _ => break Robots::disallow_all(),
        }
    };
    Rc::new(rules)
}

/// Fetches and parses `url` within the page time limit (`options.timeout_ms`),
/// which covers robots.txt, redirects and retries.
pub async fn scrape(ctx: &Context<'_>, url: Url) -> Result<Page, ItemError> {
    let limit = ctx.settings.timeout;
    timeout(limit, fetch_and_parse(ctx, url)).await.unwrap_or_else(|_| {
        Err(ItemError {
            elapsed_ms: Some(limit.as_millis() as u64),
            ..ItemError::new(
                FailureKind::Timeout,
                format!("the page was not done within {} ms (options.timeout_ms)", limit.as_millis()),
            )
        })
    })
}

async fn fetch_and_parse(ctx: &Context<'_>, url: Url) -> Result<Page, ItemError> {
    let started = Instant::now();
    let settings = ctx.settings;
    let mut attempts = 0;
    let fail = |kind: FailureKind, message: String, status: Option<u16>, attempts: u32| ItemError {
        kind,
        message,
        status,
        attempts: (attempts > 0).then_some(attempts),
        elapsed_ms: Some(started.elapsed().as_millis() as u64),
    };
    let mut chain = Redirects::new(url, settings.max_redirects, settings.egress.clone());
    let response = loop {
        let current = chain.current().clone();
        if settings.robots && !ctx.robots_allow(&current).await {
            return Err(fail(FailureKind::Robots, format!("robots.txt does not allow {current}"), None, attempts));
        }
        let (result, tries) = fetch_with_retries(ctx, current.as_str()).await;
        attempts = tries;
        let response = result.map_err(|e| {
            let kind = match e {
                FetchError::Timeout(_) => FailureKind::Timeout,
                FetchError::Dns(_) => FailureKind::Dns,
                FetchError::Connect(_) => FailureKind::Connect,
                FetchError::Denied(_) => FailureKind::Blocked,
                FetchError::TooLarge(_) => FailureKind::TooLarge,
                FetchError::Invalid(_) => FailureKind::InvalidUrl,
            };
            fail(kind, e.to_string(), None, attempts)
        })?;
        let location = response.header("location").filter(|_| is_redirect(response.status));
        let Some(location) = location else {
            break response;
        };
        let status = Some(response.status);
        chain.follow(location).map_err(|e| {
            let kind = match e {
                RedirectError::BadLocation(_) | RedirectError::Refused(Refusal::Invalid(_)) => FailureKind::InvalidUrl,
                RedirectError::Refused(Refusal::Blocked(_)) => FailureKind::Blocked,
                RedirectError::Loop(_) | RedirectError::TooMany(_) => FailureKind::RedirectLoop,
            };
            fail(kind, e.to_string(), status, attempts)
        })?;
    };
    let status = response.status;
    if !(200..300).contains(&status) {
        return Err(fail(FailureKind::HttpStatus, format!("server answered {status}"), Some(status), attempts));
    }
    let content_type = response.header("content-type").unwrap_or("").to_owned();
    if !settings.allow_non_html && !content::is_html(&content_type) {
        let message = format!("content type is {:?}, not HTML (options.allow_non_html parses it anyway)", content_type);
        return Err(fail(FailureKind::NotHtml, message, Some(status), attempts));
    }
    let fetch_ms = started.elapsed().as_millis() as u64;
    let parse_started = Instant::now();
    let encoding = response.header("content-encoding").map(str::to_owned);
    let body = content::decode_encoding(response.body, encoding.as_deref(), settings.max_page_bytes).map_err(|e| {
        let kind = match e {
            ContentError::TooLarge(_) => FailureKind::TooLarge,
            ContentError::Corrupt(_) | ContentError::Unsupported(_) => FailureKind::Decode,
        };
        fail(kind, e.to_string(), Some(status), attempts)
    })?;
    let (text, charset) = content::decode_text(&body, Some(&content_type));
    let final_url = chain.current().clone();
    let data = html::extract(&text, &final_url, ctx.extract);
    Ok(Page {
        status,
        final_url: final_url.into(),
        redirects: chain.hops(),
        attempts,
        content_type,
        charset: charset.to_owned(),
        bytes: body.len(),
        fetch_ms,
        parse_us: parse_started.elapsed().as_micros() as u64,
        data,
    })
}

/// Fetches `url`, retrying connection errors, 408, 429 and 5xx with backoff
/// (honouring `Retry-After`) up to the attempt limit. Time-outs are not
/// retried: a page that is slow once is likely slow again, and the batch
/// should not wait for it several times over.
async fn fetch_with_retries(ctx: &Context<'_>, url: &str) -> (Result<Fetched, FetchError>, u32) {
    let settings = ctx.settings;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let result = fetch(Outbound {
            method: Method::Get,
            url,
            headers: vec![
                ("user-agent", settings.user_agent.clone()),
                ("accept", "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5".to_owned()),
                ("accept-encoding", "gzip, deflate".to_owned()),
            ],
            body: None,
            timeout: settings.timeout,
            max_bytes: settings.max_page_bytes,
            truncate: false,
        })
        .await;
        let retry_after = match &result {
            Ok(r) if retryable_status(r.status) => Some(r.header("retry-after").and_then(parse_retry_after)),
            Err(FetchError::Connect(_)) => Some(None),
            _ => None,
        };
        match retry_after.and_then(|after| ctx.retry.next_delay(attempts, after, random_u64())) {
            Some(delay) => sleep(delay).await,
            None => return (result, attempts),
        }
    }
}
