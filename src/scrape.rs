//! The request and result shapes of the scrape worker, shared with the coordinator.

use crate::api::ApiError;
use crate::html::{ExtractOptions, Extracted, Selection, Selector};
use serde::{Deserialize, Serialize};

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
}

/// One named selection as the caller writes it: `".price"` or
/// `{"css": "img.main", "attr": "src", "all": true}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

/// Per-request extraction options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeOptions {
    /// Collect each page's links.
    pub links: bool,
    /// At most this many links per page.
    pub max_links: usize,
}

impl Default for ScrapeOptions {
    fn default() -> ScrapeOptions {
        ScrapeOptions {
            links: false,
            max_links: 1000,
        }
    }
}

impl ScrapeRequest {
    /// Compiles the selections and options, failing with a 400 that names the
    /// offending selection before anything is fetched.
    pub fn extract_options(&self) -> Result<ExtractOptions, ApiError> {
        let mut select = Vec::with_capacity(self.select.len());
        for (name, spec) in &self.select {
            let (css, attr, all) = match spec {
                SelectSpec::Css(css) => (css, None, false),
                SelectSpec::Full { css, attr, all } => (css, attr.clone(), *all),
            };
            let selector = Selector::parse(css)
                .map_err(|e| ApiError::bad_request(format!("select.{name}: {e}")))?;
            select.push((
                name.clone(),
                Selection {
                    selector,
                    attr,
                    all,
                },
            ));
        }
        Ok(ExtractOptions {
            links: self.options.links,
            max_links: self.options.max_links,
            select,
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
            .map(|(k, spec)| {
                (
                    k.clone(),
                    serde_json::to_value(spec).expect("a selection serialises"),
                )
            })
            .collect();
        map.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(String, SelectSpec)>, D::Error> {
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        map.into_iter()
            .map(|(k, v)| {
                let spec = SelectSpec::deserialize(v).map_err(|_| {
                    serde::de::Error::custom(format!(
                        "select.{k} must be a CSS selector string or {{\"css\": ..., \"attr\": ..., \"all\": ...}}"
                    ))
                })?;
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
    Page(Page),
    /// The page could not be had.
    Error(ItemError),
}

/// A fetched and parsed page.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// The HTTP status of the final response.
    pub status: u16,
    /// The URL the content came from.
    pub final_url: String,
    /// Milliseconds from the first request to the last body byte.
    pub elapsed_ms: u64,
    /// Requests made, retries included.
    pub attempts: u32,
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
    /// The worker holding this URL failed, so it was not scraped.
    Worker,
}

impl ItemError {
    /// An error without an HTTP status or attempt count.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> ItemError {
        ItemError {
            kind,
            message: message.into(),
            status: None,
            attempts: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::parse_json;

    #[test]
    fn selections_parse_in_order_in_both_forms() {
        let req: ScrapeRequest = parse_json(
            br#"{"urls": ["https://a.example/"], "select": {"z": "h2", "a": {"css": "img", "attr": "src", "all": true}},
                 "options": {"links": true}}"#,
        )
        .unwrap();
        let opts = req.extract_options().unwrap();
        assert_eq!(
            opts.select
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["z", "a"]
        );
        assert!(opts.select[1].1.all);
        assert!(opts.links);
        assert_eq!(opts.max_links, 1000);
    }

    #[test]
    fn bad_selections_name_the_field() {
        let req: ScrapeRequest =
            parse_json(br#"{"urls": [], "select": {"price": "a:hover"}}"#).unwrap();
        let err = req.extract_options().unwrap_err();
        assert_eq!(err.status(), 400);
        assert!(
            err.message()
                .starts_with("select.price: invalid CSS selector \"a:hover\""),
            "{}",
            err.message()
        );
        let err =
            parse_json::<ScrapeRequest>(br#"{"urls": [], "select": {"price": 3}}"#).unwrap_err();
        assert!(err.message().contains("select.price"), "{}", err.message());
        let err =
            parse_json::<ScrapeRequest>(br#"{"urls": [], "options": {"link": true}}"#).unwrap_err();
        assert!(err.message().contains("link"), "{}", err.message());
    }
}
