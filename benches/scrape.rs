//! Scrape benchmark: extraction speed native vs inside the component, and
//! pages per second against the latency bound. Run with `scripts/bench.sh`.
//!
//! 1. Native: `content::decode_text` + `html::extract` over 40 KB fixture pages.
//! 2. Wasm: the same pages scraped through the component with no latency; the
//!    component reports the bytes and microseconds of that same step per page.
//! 3. Throughput: 1,000 pages of about 40 KB, each served after 50 ms, at
//!    concurrency 50; the bound is 50 / 0.05 s = 1,000 pages/s.

use fanout::content;
use fanout::html::{self, ExtractOptions, Selection, Selector};
use fanout_testkit::client::post_json;
use fanout_testkit::component::Component;
use fanout_testkit::site::{page_html, Site};
use serde_json::json;
use std::time::Instant;
use url::Url;

const PAGE_BYTES: usize = 40_000;

fn options() -> ExtractOptions {
    ExtractOptions {
        links: true,
        max_links: 1000,
        select: vec![(
            "paragraphs".into(),
            Selection { selector: Selector::parse("body p").unwrap(), attr: None, all: true },
        )],
        ..ExtractOptions::default()
    }
}

fn main() {
    let opts = options();
    let select = json!({"paragraphs": {"css": "body p", "all": true}});

    // 1. Native extraction.
    let pages: Vec<String> = (0..50).map(|i| page_html(&i.to_string(), PAGE_BYTES)).collect();
    let url = Url::parse("http://127.0.0.1/page/x").unwrap();
    let mut bytes = 0usize;
    let started = Instant::now();
    for _ in 0..20 {
        for page in &pages {
            let (text, _) = content::decode_text(page.as_bytes(), Some("text/html; charset=utf-8"));
            std::hint::black_box(html::extract(&text, &url, &opts));
            bytes += page.len();
        }
    }
    let native = bytes as f64 / started.elapsed().as_secs_f64() / 1e6;

    // 2. The same step inside the component.
    let site = Site::start();
    let scraper = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let urls: Vec<String> = (0..200).map(|i| site.url(&format!("/page/{i}?pad={PAGE_BYTES}"))).collect();
    let body = json!({"urls": urls, "select": select, "options": {"links": true, "concurrency": 4, "per_host": 4}});
    let resp = post_json(&scraper.url("/scrape"), &body).json();
    let (mut wasm_bytes, mut wasm_us) = (0u64, 0u64);
    for r in resp["results"].as_array().unwrap() {
        let page = &r["page"];
        assert!(page.is_object(), "page failed: {r}");
        wasm_bytes += page["bytes"].as_u64().unwrap();
        wasm_us += page["parse_us"].as_u64().unwrap();
    }
    let wasm = wasm_bytes as f64 / wasm_us as f64;

    // 3. Pages per second against the latency bound.
    let n = 1000;
    let (concurrency, latency_ms) = (50usize, 50u64);
    let urls: Vec<String> =
        (0..n).map(|i| site.url(&format!("/page/{i}?pad={PAGE_BYTES}&delay_ms={latency_ms}"))).collect();
    let body = json!({"urls": urls, "select": select,
        "options": {"links": true, "concurrency": concurrency, "per_host": concurrency}});
    let started = Instant::now();
    let resp = post_json(&scraper.url("/scrape"), &body).json();
    let elapsed = started.elapsed().as_secs_f64();
    let ok = resp["results"].as_array().unwrap().iter().filter(|r| r["page"].is_object()).count();
    assert_eq!(ok, n, "every page should have been scraped");
    let rate = n as f64 / elapsed;
    let bound = concurrency as f64 * 1000.0 / latency_ms as f64;

    println!("scrape benchmark (pages of {PAGE_BYTES} bytes; decode + extract with links and one selection)");
    println!("  native extraction:     {native:8.1} MB/s");
    println!("  wasm extraction:       {wasm:8.1} MB/s   ({:.2} of native; target >= 0.50)", wasm / native);
    println!(
        "  {n} pages, {latency_ms} ms latency, concurrency {concurrency}: {elapsed:.2} s = {rate:.0} pages/s \
         ({:.2} of the {bound:.0} pages/s bound; target >= 0.80)",
        rate / bound
    );
}
