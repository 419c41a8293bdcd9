//! Extraction speed, native and inside the scrape component: decoding and
//! extracting 40 KB fixture pages with links and one selection. The component
//! reports the bytes and microseconds of that same step for each page, so
//! neither fetching nor the runtime's start-up counts.

use crate::plan::PAGE_BYTES;
use fanout::content;
use fanout::html::{self, ExtractOptions, Selection, Selector};
use fanout_testkit::client::post_json;
use fanout_testkit::component::Component;
use fanout_testkit::site::{page_html, Site};
use serde_json::json;
use std::time::Instant;
use url::Url;

/// Extraction throughput, in MB of HTML a second.
pub struct Extraction {
    pub native_mb_s: f64,
    pub wasm_mb_s: f64,
}

pub fn measure(site: &Site) -> Extraction {
    let extraction = Extraction { native_mb_s: native(), wasm_mb_s: in_component(site) };
    println!("extraction: pages of {PAGE_BYTES} bytes; decode + extract with links and one selection");
    println!("  native:         {:8.1} MB/s", extraction.native_mb_s);
    println!(
        "  in-component:   {:8.1} MB/s ({:.2} of native)",
        extraction.wasm_mb_s,
        extraction.wasm_mb_s / extraction.native_mb_s
    );
    extraction
}

fn options() -> ExtractOptions {
    ExtractOptions {
        links: true,
        max_links: 1000,
        select: vec![(
            "paragraphs".into(),
            Selection { selector: Selector::parse("body p").expect("the selector parses"), attr: None, all: true },
        )],
        ..ExtractOptions::default()
    }
}

/// 50 pages, 20 times over.
fn native() -> f64 {
    let opts = options();
    let pages: Vec<String> = (0..50).map(|i| page_html(&i.to_string(), PAGE_BYTES)).collect();
    let url = Url::parse("http://127.0.0.1/page/x").expect("a valid URL");
    let mut bytes = 0usize;
    let started = Instant::now();
    for _ in 0..20 {
        for page in &pages {
            let (text, _) = content::decode_text(page.as_bytes(), Some("text/html; charset=utf-8"));
            std::hint::black_box(html::extract(&text, &url, &opts));
            bytes += page.len();
        }
    }
    bytes as f64 / started.elapsed().as_secs_f64() / 1e6
}

/// 200 pages scraped with no latency, the same options as [`native`].
fn in_component(site: &Site) -> f64 {
    let scraper = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let urls: Vec<String> = (0..200).map(|i| site.url(&format!("/page/{i}?pad={PAGE_BYTES}"))).collect();
    let body = json!({"urls": urls, "select": {"paragraphs": {"css": "body p", "all": true}},
        "options": {"links": true, "concurrency": 4, "per_host": 4}});
    let answer = post_json(&scraper.url("/scrape"), &body).json();
    let (mut bytes, mut us) = (0u64, 0u64);
    for r in answer["results"].as_array().expect("the answer lists its results") {
        let page = &r["page"];
        assert!(page.is_object(), "page failed: {r}");
        bytes += page["bytes"].as_u64().expect("each page reports its bytes");
        us += page["parse_us"].as_u64().expect("each page reports its parse time");
    }
    bytes as f64 / us as f64
}
