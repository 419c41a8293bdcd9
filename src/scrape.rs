//! The request and result shapes of the scrape worker, shared with the coordinator.

use crate::api::ApiError;
use crate::config::{self, Config};
use crate::egress::Egress;
use crate::fanout::jobs::commit::SinkUrls;
use crate::html::{ExtractOptions, Extracted, Selection, Selector};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `POST /scrape`: a batch of URLs, and what to extract from each page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeRequest {
    /// The URLs to scrape, in the order results are wanted.
    pub urls: Vec<String>,
    /// Named CSS selections, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "named")]
    pub select: Vec<(String, SelectSpec)>,
    /// Extraction options.
    #[serde(default)]
    pub options: ScrapeOptions,
    /// In a durable job: where the results go instead of the answer (see [`crate::fanout::jobs::commit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<SinkUrls>,
}

/// One named selection as the caller writes it: `".price"` or
/// `{"css": "img.main", "attr": "src", "all": true}`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum SelectSpec {
    /// The text of the first match.
    Css(String),
    /// The full form.
    Full {
        /// The selector.
        css: String,
        /// Take this attribute instead of the text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attr: Option<String>,
        /// Take every match.
        #[serde(default)]
        all: bool,
    },
}

/// Per-request options. Fetch limits default to the values below and may be
/// set up to the deployment's limits ([`Config`]), never past them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeOptions {
    /// Collect each page's links.
    pub links: bool,
    /// At most this many links per page (default 1000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_links: Option<usize>,
    /// Pages fetched at once (default 16).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Pages fetched at once from one host (default 8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_host: Option<usize>,
    /// Time allowed for one page, redirects included, in milliseconds (default 10000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Time allowed for the whole batch, in milliseconds (default 60000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Attempts per page, the first included (default 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The largest page body read, after decompression (default 5 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_page_bytes: Option<usize>,
    /// Redirects followed per page (default 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_redirects: Option<usize>,
    /// The `User-Agent` sent (default `FANOUT_USER_AGENT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// Time between the starts of two requests to one host, in milliseconds
    /// (default 0, at most 60000); the first request to a host waits it too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Obey robots.txt (default false; always on when the deployment says so).
    pub robots: bool,
    /// Parse bodies that are not HTML instead of reporting `not_html`.
    pub allow_non_html: bool,
    /// The most bytes of text one page's extracted values may add up to (default 1 MiB).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
}

/// The settings one scrape invocation runs with, after defaults and limits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchSettings {
    /// Pages fetched at once.
    pub concurrency: usize,
    /// Pages fetched at once from one host.
    pub per_host: usize,
    /// Time allowed for one page.
    pub timeout: Duration,
    /// Time allowed for the whole batch.
    pub deadline: Duration,
    /// Attempts per page.
    pub attempts: u32,
    /// The largest page body read.
    pub max_page_bytes: usize,
    /// Redirects followed per page.
    pub max_redirects: usize,
    /// The `User-Agent` sent.
    pub user_agent: String,
    /// Time between the starts of two requests to one host.
    pub delay: Duration,
    /// Obey robots.txt.
    pub robots: bool,
    /// Parse non-HTML bodies.
    pub allow_non_html: bool,
    /// Which hosts may be fetched (first URLs and every redirect).
    pub egress: Egress,
}

/// The longest `options.delay_ms`.
pub const MAX_DELAY_MS: u64 = 60_000;

/// `options.NAME` of a scrape request: see [`config::within`].
fn option<T>(name: &str, requested: Option<T>, default: T, limit: T, variable: &str) -> Result<T, ApiError>
where
    T: PartialOrd + Copy + std::fmt::Display + Default,
{
    config::within(&format!("options.{name}"), requested, default, limit, variable)
}

impl ScrapeRequest {
    /// Compiles the selections and options, failing with a 400 that names the
    /// offending selection before anything is fetched.
    pub fn extract_options(&self, config: &Config) -> Result<ExtractOptions, ApiError> {
        let mut select = Vec::with_capacity(self.select.len());
        for (name, spec) in &self.select {
            let (css, attr, all) = match spec {
                SelectSpec::Css(css) => (css, None, false),
                SelectSpec::Full { css, attr, all } => (css, attr.clone(), *all),
            };
            let selector = Selector::parse(css).map_err(|e| ApiError::bad_request(format!("select.{name}: {e}")))?;
            select.push((name.clone(), Selection { selector, attr, all }));
        }
        let max_output_bytes = option(
            "max_output_bytes",
            self.options.max_output_bytes,
            crate::html::DEFAULT_OUTPUT_BYTES,
            config.max_output_bytes,
            "FANOUT_MAX_OUTPUT_BYTES",
        )?;
        Ok(ExtractOptions {
            links: self.options.links,
            max_links: self.options.max_links.unwrap_or(1000),
            select,
            max_output_bytes,
        })
    }

    /// Resolves the fetch options against the deployment's limits, failing with
    /// a 400 naming the option that asks for more than the limit allows.
    pub fn settings(&self, config: &Config) -> Result<FetchSettings, ApiError> {
        let o = &self.options;
        let ms = |d: Duration| d.as_millis() as u64;
        let concurrency =
            option("concurrency", o.concurrency, 16, config.max_scrape_concurrency, "FANOUT_SCRAPE_CONCURRENCY")?;
        let timeout_ms =
            option("timeout_ms", o.timeout_ms, 10_000, ms(config.max_fetch_timeout), "FANOUT_FETCH_TIMEOUT_MS")?;
        let deadline_ms =
            option("deadline_ms", o.deadline_ms, 60_000, ms(config.max_scrape_deadline), "FANOUT_SCRAPE_DEADLINE_MS")?;
        let max_redirects = match o.max_redirects {
            Some(n) if n > config.max_redirects => {
                return Err(ApiError::bad_request(format!(
                    "options.max_redirects={n} is over this deployment's limit of {} (FANOUT_MAX_REDIRECTS)",
                    config.max_redirects
                )))
            }
            Some(n) => n,
            None => config.max_redirects.min(10),
        };
        let user_agent = match &o.user_agent {
            Some(ua) if ua.trim().is_empty() || ua.chars().any(char::is_control) => {
                return Err(ApiError::bad_request("options.user_agent must be non-empty printable text"))
            }
            Some(ua) => ua.clone(),
            None => config.user_agent.clone(),
        };
        Ok(FetchSettings {
            concurrency,
            per_host: option("per_host", o.per_host, 8, concurrency, "options.concurrency")?,
            timeout: Duration::from_millis(timeout_ms),
            deadline: Duration::from_millis(deadline_ms),
            attempts: option("attempts", o.attempts, 3, config.max_fetch_attempts, "FANOUT_FETCH_ATTEMPTS")?,
            max_page_bytes: option(
                "max_page_bytes",
                o.max_page_bytes,
                5 * 1024 * 1024,
                config.max_page_bytes,
                "FANOUT_MAX_PAGE_BYTES",
            )?,
            max_redirects,
            user_agent,
            delay: Duration::from_millis(match o.delay_ms {
                None | Some(0) => 0,
                given => option("delay_ms", given, 0, MAX_DELAY_MS, "60000 ms")?,
            }),
            robots: o.robots || config.respect_robots,
            allow_non_html: o.allow_non_html,
            egress: config.egress(),
        })
    }
}

/// Serialises named selections as a JSON object, keeping the caller's order.
mod named {
    use super::SelectSpec;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[(String, SelectSpec)], s: S) -> Result<S::Ok, S::Error> {
        let map: serde_json::Map<String, serde_json::Value> = v
            .iter()
            .map(|(k, spec)| (k.clone(), serde_json::to_value(spec).expect("a selection serialises")))
            .collect();
        map.serialize(s)
    }

    /// The full form, read strictly: a misspelt key is a mistake to report, not an option to drop.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Full {
        css: String,
        #[serde(default)]
        attr: Option<String>,
        #[serde(default)]
        all: bool,
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, SelectSpec)>, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        map.into_iter()
            .map(|(k, v)| {
                let spec = match v {
                    serde_json::Value::String(css) => SelectSpec::Css(css),
                    serde_json::Value::Object(_) => {
                        let Full { css, attr, all } = Full::deserialize(v)
                            .map_err(|e| serde::de::Error::custom(format!("select.{k}: {e}")))?;
                        SelectSpec::Full { css, attr, all }
                    }
                    other => {
                        return Err(serde::de::Error::custom(format!(
                            "select.{k} must be a CSS selector string or {{\"css\": ..., \"attr\": ..., \"all\": ...}}, not {other}"
                        )))
                    }
                };
                Ok((k, spec))
            })
            .collect()
    }
}

/// The answer to a scrape request: one result per URL, in input order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScrapeResponse {
    /// One entry per requested URL, duplicates and failures included.
    pub results: Vec<PageResult>,
}

/// What became of one URL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PageResult {
    /// The URL's position in the request.
    pub index: usize,
    /// The URL as the caller gave it.
    pub url: String,
    /// The page, or why there is none.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// A page, or the reason there is none. Serialised as `"page": {...}` or `"error": {...}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The page was fetched and parsed.
    Page(Box<Page>),
    /// The page could not be had.
    Error(ItemError),
}

/// A fetched and parsed page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The HTTP status of the final response.
    pub status: u16,
    /// The URL the content came from, after redirects.
    pub final_url: String,
    /// Redirects followed.
    pub redirects: usize,
    /// Requests made for the final URL, retries included.
    pub attempts: u32,
    /// The `Content-Type` of the final response.
    pub content_type: String,
    /// The encoding the body was decoded with.
    pub charset: String,
    /// The body's size in bytes, after content-encoding was undone.
    pub bytes: usize,
    /// Milliseconds from the first request to the last body byte.
    pub fetch_ms: u64,
    /// Microseconds spent decoding and extracting.
    pub parse_us: u64,
    /// What was extracted.
    #[serde(flatten)]
    pub data: Extracted,
}

/// Why a URL produced no page.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemError {
    /// A stable name for the failure.
    pub kind: FailureKind,
    /// What went wrong, for a person.
    pub message: String,
    /// The HTTP status, where a response was received.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub status: Option<u16>,
    /// Requests made, retries included, where any was made.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub attempts: Option<u32>,
    /// Milliseconds spent on this URL before it failed, where any fetching was done.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub elapsed_ms: Option<u64>,
}

/// Stable names for the ways a URL can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// Not an absolute http(s) URL.
    InvalidUrl,
    /// A host the deployment does not fetch.
    Blocked,
    /// The host name did not resolve.
    Dns,
    /// No connection could be made, or it broke.
    Connect,
    /// The page did not arrive in time.
    Timeout,
    /// The server answered with a non-success status.
    HttpStatus,
    /// The body is larger than the page limit.
    TooLarge,
    /// The body is not HTML.
    NotHtml,
    /// A redirect chain looped or ran past its limit.
    RedirectLoop,
    /// The body could not be decompressed.
    Decode,
    /// robots.txt does not allow the URL.
    Robots,
    /// The worker holding this URL failed, so it was not scraped.
    Worker,
    /// The job stopped (failure threshold, deadline) before this URL was scraped.
    NotAttempted,
}

impl ItemError {
    /// An error without an HTTP status or attempt count.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> ItemError {
        ItemError { kind, message: message.into(), status: None, attempts: None, elapsed_ms: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::parse_json;

    #[test]
    fn misspelt_selection_keys_are_refused() {
        let err = parse_json::<ScrapeRequest>(br#"{"urls": [], "select": {"h": {"css": "h1", "atr": "class"}}}"#)
            .unwrap_err();
        assert!(err.message().contains("select.h: unknown field `atr`"), "{}", err.message());
        let err = parse_json::<ScrapeRequest>(br#"{"urls": [], "select": {"h": 3}}"#).unwrap_err();
        assert!(err.message().contains("select.h must be a CSS selector string"), "{}", err.message());
    }

    #[test]
    fn selections_parse_in_order_in_both_forms() {
        let req: ScrapeRequest = parse_json(
            br#"{"urls": ["https://a.example/"], "select": {"z": "h2", "a": {"css": "img", "attr": "src", "all": true}},
                 "options": {"links": true}}"#,
        )
        .unwrap();
        let opts = req.extract_options(&Config::default()).unwrap();
        assert_eq!(opts.select.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["z", "a"]);
        assert!(opts.select[1].1.all);
        assert!(opts.links);
        assert_eq!(opts.max_links, 1000);
    }

    #[test]
    fn options_default_and_stay_within_the_deployment_limits() {
        let config = Config { max_scrape_concurrency: 32, ..Config::default() };
        let req = |options: &str| -> Result<FetchSettings, ApiError> {
            parse_json::<ScrapeRequest>(format!(r#"{{"urls": [], "options": {options}}}"#).as_bytes())?
                .settings(&config)
        };
        let d = req("{}").unwrap();
        assert_eq!((d.concurrency, d.per_host, d.attempts, d.max_redirects), (16, 8, 3, 10));
        assert_eq!(d.timeout, Duration::from_secs(10));
        assert_eq!(d.user_agent, config.user_agent);
        assert!(!d.robots);
        let set = req(r#"{"concurrency": 32, "per_host": 32, "timeout_ms": 500, "robots": true, "user_agent": "x/1"}"#)
            .unwrap();
        assert_eq!((set.concurrency, set.per_host, set.timeout), (32, 32, Duration::from_millis(500)));
        assert!(set.robots);
        for (options, needle) in [
            (
                r#"{"concurrency": 33}"#,
                "options.concurrency=33 is over this deployment's limit of 32 (FANOUT_SCRAPE_CONCURRENCY)",
            ),
            (r#"{"per_host": 17}"#, "options.per_host=17"),
            (r#"{"attempts": 0}"#, "options.attempts must be at least 1"),
            (r#"{"timeout_ms": 3600000}"#, "FANOUT_FETCH_TIMEOUT_MS"),
            (r#"{"max_redirects": 99}"#, "FANOUT_MAX_REDIRECTS"),
            (r#"{"user_agent": "bad\nua"}"#, "user_agent"),
            (r#"{"delay_ms": 60001}"#, "options.delay_ms=60001 is over this deployment's limit of 60000"),
        ] {
            let err = req(options).unwrap_err();
            assert_eq!(err.status(), 400);
            assert!(err.message().contains(needle), "{options}: {}", err.message());
        }
        let forced = Config { respect_robots: true, ..Config::default() };
        assert!(parse_json::<ScrapeRequest>(br#"{"urls": []}"#).unwrap().settings(&forced).unwrap().robots);
    }

    #[test]
    fn bad_selections_name_the_field() {
        let req: ScrapeRequest = parse_json(br#"{"urls": [], "select": {"price": "a:hover"}}"#).unwrap();
        let err = req.extract_options(&Config::default()).unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(err.message().starts_with("select.price: invalid CSS selector \"a:hover\""), "{}", err.message());
        let err = parse_json::<ScrapeRequest>(br#"{"urls": [], "select": {"price": 3}}"#).unwrap_err();
        assert!(err.message().contains("select.price"), "{}", err.message());
        let err = parse_json::<ScrapeRequest>(br#"{"urls": [], "options": {"link": true}}"#).unwrap_err();
        assert!(err.message().contains("link"), "{}", err.message());
    }
}
