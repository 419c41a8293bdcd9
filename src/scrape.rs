//! The request and result shapes of the scrape worker, shared with the coordinator.

use crate::html::Extracted;
use serde::{Deserialize, Serialize};

/// `POST /scrape`: a batch of URLs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeRequest {
    /// The URLs to scrape, in the order results are wanted.
    pub urls: Vec<String>,
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
    /// An error without an HTTP status.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> ItemError {
        ItemError {
            kind,
            message: message.into(),
            status: None,
        }
    }
}
