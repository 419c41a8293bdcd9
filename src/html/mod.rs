//! Extraction of structured data from HTML pages, with `tl`.
//!
//! Extraction never fails: malformed HTML yields whatever `tl` could make of
//! it, after [`normalize`] has tokenized it as the HTML standard does where
//! `tl` differs. Text is entity-decoded with ASCII whitespace stripped and
//! collapsed; URLs are made absolute against `<base href>` and the page's final URL.

mod normalize;
mod selector;
mod tree;

pub use normalize::normalize;
pub use selector::{Document, Selector, SelectorError};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// The tags the standard fields come from.
const STANDARD_TAGS: [&str; 9] = ["base", "title", "html", "h1", "meta", "link", "a", "area", "script"];
use url::Url;

/// What to extract beyond the fields every page gets.
#[derive(Clone, Debug)]
pub struct ExtractOptions {
    /// Collect the page's links.
    pub links: bool,
    /// At most this many links (after de-duplication).
    pub max_links: usize,
    /// Named selections, in the caller's order.
    pub select: Vec<(String, Selection)>,
    /// The most bytes a page's extracted values may add up to, written as JSON strings.
    pub max_output_bytes: usize,
}

/// The default of [`ExtractOptions::max_output_bytes`].
pub const DEFAULT_OUTPUT_BYTES: usize = 1024 * 1024;

impl Default for ExtractOptions {
    fn default() -> ExtractOptions {
        ExtractOptions { links: false, max_links: 1000, select: Vec::new(), max_output_bytes: DEFAULT_OUTPUT_BYTES }
    }
}

/// How much more text a page's extraction may produce.
struct Budget {
    left: usize,
    limit: usize,
    cut: Vec<&'static str>,
}

impl Budget {
    /// Whether `value` fits, counting it if so; a field that does not fit is noted once.
    fn take(&mut self, field: &'static str, value: &str) -> bool {
        self.take_bytes(field, json_len(value))
    }

    /// Whether `cost` more bytes fit, counting them if so.
    fn take_bytes(&mut self, field: &'static str, cost: usize) -> bool {
        if cost <= self.left {
            self.left -= cost;
            return true;
        }
        if !self.cut.contains(&field) {
            self.cut.push(field);
        }
        false
    }
}

/// One named selection: what to match, what to take from each match, and how many.
#[derive(Clone, Debug)]
pub struct Selection {
    /// The selector.
    pub selector: Selector,
    /// Take this attribute's value instead of the text.
    pub attr: Option<String>,
    /// Take every match (an array) instead of the first (a string or null).
    pub all: bool,
}

/// What is extracted from a page.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Extracted {
    /// The `<title>` text.
    pub title: Option<String>,
    /// `<meta name="description">`.
    pub description: Option<String>,
    /// `<link rel="canonical">`, as the page states it, resolved against the base URL (any scheme).
    pub canonical: Option<String>,
    /// `<html lang>`.
    pub lang: Option<String>,
    /// `<meta property="og:*">` values by property name, first occurrence wins.
    pub og: Map<String, Value>,
    /// The texts of the `<h1>` elements, in document order, one per element (`""` for an empty one).
    pub h1: Vec<String>,
    /// Every `a[href]` and `area[href]`, resolved against the base URL, fragment removed, first
    /// occurrence kept; same-document (`#...`) and non-http(s) hrefs left out; only when asked for.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub links: Option<Vec<String>>,
    /// The parsed `<script type="application/ld+json">` blocks.
    pub json_ld: Vec<Value>,
    /// One message per JSON-LD block that is not valid JSON.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub json_ld_errors: Vec<String>,
    /// The named selections' values.
    #[serde(skip_serializing_if = "Map::is_empty", default)]
    pub select: Map<String, Value>,
    /// What was cut short on this page, and why (deep nesting, too many matches).
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub warnings: Vec<String>,
}

/// The most bytes of raw text read for one extracted value.
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// The most values one `all` selection returns.
pub const MAX_MATCHES: usize = 10_000;

/// Extracts from `html`, fetched from `url`.
///
/// What a page yields is bounded, whatever the page: each value reads at most
/// [`MAX_TEXT_BYTES`] of text, and all values together at most
/// `options.max_output_bytes` (values past it are left out, with a warning),
/// so that no page can make an answer larger than its limits.
pub fn extract(html: &str, url: &Url, options: &ExtractOptions) -> Extracted {
    let normalized = normalize(html);
    let doc = Document::parse(&normalized);
    let mut budget = Budget { left: options.max_output_bytes, limit: options.max_output_bytes, cut: Vec::new() };
    // One pass over the document collects the tags the standard fields read.
    let mut named: HashMap<&'static str, Vec<usize>> = HashMap::new();
    for (i, tag) in doc.tags() {
        let name = tag.name().as_utf8_str();
        if let Some(&known) = STANDARD_TAGS.iter().find(|n| name.eq_ignore_ascii_case(n)) {
            named.entry(known).or_default().push(i);
        }
    }
    let find = |name: &str| named.get(name).map_or(&[][..], Vec::as_slice);
    let text = |i: usize| clean_text(&doc.text(i, MAX_TEXT_BYTES));
    // An attribute's value as the page states it: references decoded, nothing trimmed; a bare name is "".
    let raw_attr = |i: usize, name: &str| {
        selector::attr(doc.tag(i)?, name).map(|v| htmlize::unescape_attribute(v.unwrap_or_default()).into_owned())
    };
    let attr = |i: usize, name: &str| raw_attr(i, name).map(|v| strip_and_collapse(&v));
    // URLs lose only their leading and trailing ASCII whitespace; the URL parser handles the rest.
    let url_attr =
        |i: usize, name: &str| raw_attr(i, name).map(|v| v.trim_matches(|c: char| c.is_ascii_whitespace()).to_owned());

    let base = find("base")
        .iter()
        .find_map(|&i| url_attr(i, "href"))
        .and_then(|href| url.join(&href).ok())
        .unwrap_or_else(|| url.clone());
    // A link is a fetchable page: not a reference within this one, not `javascript:` or `mailto:`.
    let link = |href: &str| -> Option<String> {
        if href.starts_with('#') {
            return None;
        }
        let mut link = base.join(href).ok()?;
        if !matches!(link.scheme(), "http" | "https") {
            return None;
        }
        link.set_fragment(None);
        Some(link.into())
    };

    let mut out = Extracted {
        // The first title, as document.title reads it.
        title: find("title").first().map(|&i| text(i)).filter(|t| !t.is_empty() && budget.take("title", t)),
        // Later <html> tags add their attributes to the root element: the first lang stated counts.
        lang: find("html")
            .iter()
            .find_map(|&i| raw_attr(i, "lang"))
            .filter(|l| !l.is_empty() && budget.take("lang", l)),
        ..Extracted::default()
    };
    out.h1 = find("h1").iter().map(|&i| text(i)).take_while(|t| budget.take("h1", t)).collect();
    for &meta in find("meta") {
        let Some(content) = attr(meta, "content") else {
            continue;
        };
        let described = raw_attr(meta, "name").is_some_and(|n| n.eq_ignore_ascii_case("description"));
        if described && out.description.is_none() && budget.take("description", &content) {
            out.description = Some(content.clone());
        }
        if let Some(prop) = raw_attr(meta, "property").filter(|p| p.starts_with("og:")) {
            if !out.og.contains_key(&prop) && budget.take_bytes("og", json_len(&content) + json_len(&prop)) {
                out.og.insert(prop, Value::String(content));
            }
        }
    }
    out.canonical = find("link")
        .iter()
        .filter(|&&i| {
            raw_attr(i, "rel").is_some_and(|r| {
                r.split(|c: char| c.is_ascii_whitespace()).any(|r| r.eq_ignore_ascii_case("canonical"))
            })
        })
        .find_map(|&i| url_attr(i, "href"))
        .and_then(|href| base.join(&href).ok())
        .map(String::from)
        .filter(|c| budget.take("canonical", c));
    if options.links {
        let mut anchors: Vec<usize> = find("a").iter().chain(find("area")).copied().collect();
        anchors.sort_unstable();
        let mut seen = HashSet::new();
        let links = anchors
            .into_iter()
            .filter_map(|i| link(&url_attr(i, "href")?))
            .filter(|l| seen.insert(l.clone()))
            .take(options.max_links)
            .take_while(|l| budget.take("links", l))
            .collect();
        out.links = Some(links);
    }
    for &script in find("script") {
        let kind = attr(script, "type").unwrap_or_default();
        if !kind.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/ld+json") {
            continue;
        }
        // A script's body is raw text, not markup: read it from the source untouched.
        let body = normalize::raw_text(doc.raw_body(script));
        match serde_json::from_str::<Value>(body.trim()) {
            // What counts is what the answer holds: the value written again, which can be longer.
            Ok(v) => {
                if budget.take_bytes("json_ld", serde_json::to_string(&v).map_or(usize::MAX, |t| t.len())) {
                    out.json_ld.push(v);
                }
            }
            Err(e) => {
                let message = format!(
                    "JSON-LD block {} is not valid JSON: {e}",
                    out.json_ld.len() + out.json_ld_errors.len() + 1
                );
                if budget.take("json_ld", &message) {
                    out.json_ld_errors.push(message);
                }
            }
        }
    }
    for (name, sel) in &options.select {
        let matches = sel.selector.select(&doc);
        let values = matches.iter().filter_map(|&i| match &sel.attr {
            Some(a) => attr(i, a),
            None => Some(text(i)),
        });
        let value = if sel.all {
            if matches.len() > MAX_MATCHES {
                out.warnings
                    .push(format!("select.{name}: {} matches, only the first {MAX_MATCHES} are kept", matches.len()));
            }
            let mut kept = Vec::new();
            for v in values.take(MAX_MATCHES) {
                if !budget.take("select", &v) {
                    out.warnings.push(format!(
                        "select.{name}: only the first {} matches fit in the page's output limit",
                        kept.len()
                    ));
                    break;
                }
                kept.push(Value::String(v));
            }
            Value::Array(kept)
        } else {
            values.into_iter().next().filter(|v| budget.take("select", v)).map_or(Value::Null, Value::String)
        };
        out.select.insert(name.clone(), value);
    }
    if !budget.cut.is_empty() {
        out.warnings.push(format!(
            "the page's extracted text reached its limit of {} bytes (options.max_output_bytes): {} cut short",
            budget.limit,
            budget.cut.join(", ")
        ));
    }
    if doc.exhausted() {
        out.warnings.push(format!(
            "the page nests too deeply: extraction stopped after {} steps, so some values may be missing",
            selector::WORK_BUDGET
        ));
    }
    out
}

/// The bytes `text` takes as a JSON string (quotes included): what an answer
/// holding it grows by, escapes counted at their most.
fn json_len(text: &str) -> usize {
    2 + text
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

/// Decodes character references (as in text), then strips and collapses ASCII whitespace
/// (the HTML standard's rule: a non-breaking space is a character, not whitespace).
pub fn clean_text(raw: &str) -> String {
    strip_and_collapse(&htmlize::unescape(raw))
}

/// The HTML standard's "strip and collapse ASCII whitespace".
fn strip_and_collapse(text: &str) -> String {
    text.split(|c: char| c.is_ascii_whitespace()).filter(|w| !w.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url() -> Url {
        Url::parse("https://shop.example/catalog/item?id=1").unwrap()
    }

    /// What [`extract`] promises of any page: links, when asked for, are absolute http(s) URLs
    /// without a fragment, each once, at most `max_links` of them; an `all` selection holds at
    /// most [`MAX_MATCHES`] values; and the values together, written as JSON strings, take at
    /// most `max_output_bytes` (the budget's count: warnings are not values).
    fn assert_bounded(page: &str, opts: &ExtractOptions, got: &Extracted) {
        assert_eq!(got.links.is_some(), opts.links, "{page:?}");
        let links = got.links.as_deref().unwrap_or_default();
        assert!(links.len() <= opts.max_links, "{page:?}: {} links, over {}", links.len(), opts.max_links);
        let mut seen = HashSet::new();
        for link in links {
            let parsed = Url::parse(link).unwrap_or_else(|e| panic!("{page:?}: link {link:?} is not absolute: {e}"));
            assert!(matches!(parsed.scheme(), "http" | "https"), "{page:?}: link {link:?}");
            assert_eq!((parsed.as_str(), parsed.fragment()), (link.as_str(), None), "{page:?}: link {link:?}");
            assert!(seen.insert(link), "{page:?}: link {link:?} twice");
        }
        let mut bytes = [&got.title, &got.lang, &got.description, &got.canonical]
            .into_iter()
            .flatten()
            .chain(&got.h1)
            .chain(links)
            .chain(&got.json_ld_errors)
            .map(|v| json_len(v))
            .sum::<usize>();
        bytes += got.og.iter().map(|(k, v)| json_len(k) + json_len(v.as_str().unwrap())).sum::<usize>();
        bytes += got.json_ld.iter().map(|v| serde_json::to_string(v).unwrap().len()).sum::<usize>();
        for (name, value) in &got.select {
            let values = value.as_array().map_or_else(|| vec![value], |all| all.iter().collect());
            assert!(values.len() <= MAX_MATCHES, "{page:?}: select.{name} has {} values", values.len());
            bytes += values.iter().filter_map(|v| v.as_str()).map(json_len).sum::<usize>();
        }
        assert!(bytes <= opts.max_output_bytes, "{page:?}: values of {bytes} bytes, over {}", opts.max_output_bytes);
    }

    #[test]
    fn extracts_the_standard_fields() {
        let page = r#"<!doctype html><html lang="en-GB"><head><title>
            Fish &amp; Chips  </title>
            <meta name="description" content="Best &quot;chips&quot; in town">
            <meta property="og:title" content="Fish">
            <meta property="og:image" content="https://cdn.example/f.png">
            <meta property="og:title" content="ignored second">
            <link rel="canonical" href="/catalog/fish#top">
            <script type="application/ld+json">{"@type": "Product", "name": "Fish"}</script>
            <script type="application/ld+json">{not json</script>
            </head><body><h1>Menu</h1><p>x</p><h1> Prices &#8364; </h1></body></html>"#;
        let got = extract(page, &url(), &ExtractOptions::default());
        assert_eq!(got.title.as_deref(), Some("Fish & Chips"));
        assert_eq!(got.description.as_deref(), Some("Best \"chips\" in town"));
        assert_eq!(got.lang.as_deref(), Some("en-GB"));
        assert_eq!(got.canonical.as_deref(), Some("https://shop.example/catalog/fish#top"));
        assert_eq!(Value::Object(got.og), json!({"og:title": "Fish", "og:image": "https://cdn.example/f.png"}));
        assert_eq!(got.h1, vec!["Menu", "Prices €"]);
        assert_eq!(got.json_ld, vec![json!({"@type": "Product", "name": "Fish"})]);
        assert_eq!(got.json_ld_errors.len(), 1);
        assert!(got.json_ld_errors[0].contains("block 2"), "{:?}", got.json_ld_errors);
        assert!(got.links.is_none());
    }

    /// The classes of difference from a browser that the conformance issue lists, one by one.
    #[test]
    fn pages_read_as_a_browser_reads_them() {
        let page = concat!(
            "<html lang=en><head><title>Guide\u{a0}\u{a0}&nbsp;v2 <b>bold</b>\n\t</title>",
            "<link rel=canonical href=urn:isbn:0451450523>",
            "<script>var s = \"<a href='/fake'>\" + '<h1>not a heading</h1>';</script>",
            "<style>a[href] { x: '</sty' } </style></head><body>",
            "<h1></h1><h1> Real\u{a0}one </h1>",
            "<a href=https://x.org/a/b.js#L1>src</a><a href=#top>top</a><a href='#'>self</a>",
            "<a href=javascript:void(0)>js</a><a href=mailto:a@b.c>mail</a><a href=''>here</a>",
            "<textarea><a href=/in-textarea></textarea><noscript><a href=/no-js></noscript>",
            "<area href=/map>",
            "</body></html>"
        );
        let got = extract(page, &url(), &ExtractOptions { links: true, ..Default::default() });
        assert_eq!(got.title.as_deref(), Some("Guide\u{a0}\u{a0}\u{a0}v2 <b>bold</b>"));
        assert_eq!(got.h1, vec!["", "Real\u{a0}one"]);
        assert_eq!(got.canonical.as_deref(), Some("urn:isbn:0451450523"));
        assert_eq!(
            got.links.unwrap(),
            vec!["https://x.org/a/b.js", "https://shop.example/catalog/item?id=1", "https://shop.example/map"]
        );
        assert_eq!(got.lang.as_deref(), Some("en"));
    }

    #[test]
    fn end_tags_close_what_a_browser_closes() {
        let page = concat!(
            "<h1>Over<b>lap<i>ping</b> inline</i></h1><p>Unclosed<h1>Closes <em>the</em> p</h1>",
            "<h1>One<h2>Two</h2></h1>",
            // The `b` that `</p>` closed opens again around the next text, so the `h2` opens inside it.
            "<p><b>Bold</p><h1>Re<h2>opened</h2></h1></b>",
            // DocBook XSL's XHTML: the self-closed `a` stays open until `</h1>` closes both.
            "<div class=\"titlepage\"><h1 class=\"title\"><a id=\"x\"/>Appendix A</h1></div>",
            "<div class=\"toc\"><p><b>Table of Contents</b></p></div>",
        );
        let got = extract(page, &url(), &ExtractOptions::default());
        assert_eq!(got.h1, vec!["Overlapping inline", "Closes the p", "One", "Reopened", "Appendix A"]);
    }

    #[test]
    fn links_are_absolute_unique_and_capped() {
        let page = r#"<a href="a">1</a><a href="/b#x">2</a><a href="/b">3</a>
            <a href="mailto:x@y">4</a><a href="javascript:void(0)">5</a><a href="https://other.example/c">6</a>
            <a href="//cdn.example/d">7</a><a>no href</a>"#;
        let opts = ExtractOptions { links: true, max_links: 100, ..Default::default() };
        let got = extract(page, &url(), &opts);
        assert_eq!(
            got.links.unwrap(),
            vec![
                "https://shop.example/catalog/a",
                "https://shop.example/b",
                "https://other.example/c",
                "https://cdn.example/d"
            ]
        );
        let capped = extract(page, &url(), &ExtractOptions { max_links: 2, ..opts });
        assert_eq!(capped.links.unwrap().len(), 2);
    }

    /// Links are kept only when they resolve to http or https, relative ones included, and
    /// `<area href>` links come in document order among the `<a href>` links.
    #[test]
    fn links_are_http_only_and_areas_keep_their_place() {
        let page = r#"<a href="mailto:x@y.example">mail</a><area href="/map1"><a href="javascript:alert(1)">js</a>
            <a href="ftp://files.example/f">ftp</a><area href="data:text/html,hi"><a href="tel:+15551234">tel</a>
            <a href="HTTP://upper.example/">upper</a><a href="a1">rel</a><area href="tel:+1"><area href="/map2">
            <a href="//cdn.example/x">cdn</a><a href="file:///etc/passwd">file</a><area href="http://plain.example/p">
            <a href="https://secure.example/s">s</a><area href="ws://socket.example/">ws</area>"#;
        for (page_url, want) in [
            (
                "https://shop.example/catalog/item?id=1",
                [
                    "https://shop.example/map1",
                    "http://upper.example/",
                    "https://shop.example/catalog/a1",
                    "https://shop.example/map2",
                    "https://cdn.example/x",
                    "http://plain.example/p",
                    "https://secure.example/s",
                ],
            ),
            (
                "http://plain.example/dir/page",
                [
                    "http://plain.example/map1",
                    "http://upper.example/",
                    "http://plain.example/dir/a1",
                    "http://plain.example/map2",
                    "http://cdn.example/x",
                    "http://plain.example/p",
                    "https://secure.example/s",
                ],
            ),
        ] {
            let opts = ExtractOptions { links: true, ..Default::default() };
            let got = extract(page, &Url::parse(page_url).unwrap(), &opts);
            assert_eq!(got.links.unwrap(), want, "links of the page at {page_url}");
        }
    }

    #[test]
    fn base_href_changes_where_links_point() {
        let page = r#"<head><base href="https://mirror.example/root/"></head><a href="x">x</a>
            <link rel="canonical" href="page">"#;
        let got = extract(page, &url(), &ExtractOptions { links: true, max_links: 10, ..Default::default() });
        assert_eq!(got.links.unwrap(), vec!["https://mirror.example/root/x"]);
        assert_eq!(got.canonical.as_deref(), Some("https://mirror.example/root/page"));
    }

    #[test]
    fn named_selections_take_text_or_attributes() {
        let page = r#"<div class="item"><span class="price"> 9.99 &euro;</span><img class="main" src="/a.png"></div>
            <div class="item"><span class="price">5</span><img class="main" src="b.png"></div>"#;
        let sel = |css: &str, attr: Option<&str>, all: bool| Selection {
            selector: Selector::parse(css).unwrap(),
            attr: attr.map(String::from),
            all,
        };
        let opts = ExtractOptions {
            select: vec![
                ("price".into(), sel(".item > .price", None, false)),
                ("prices".into(), sel("div span.price", None, true)),
                ("images".into(), sel("img.main", Some("src"), true)),
                ("missing".into(), sel("table td", None, false)),
            ],
            ..Default::default()
        };
        let got = extract(page, &url(), &opts);
        assert_eq!(
            Value::Object(got.select),
            json!({"price": "9.99 €", "prices": ["9.99 €", "5"], "images": ["/a.png", "b.png"], "missing": null})
        );
    }

    /// The limits count what they say: a value's raw text, and a page's values as JSON strings, escapes
    /// included, each at its exact edge.
    #[test]
    fn limits_are_exact() {
        let long = |n: usize| format!("<h1>{}</h1>", "w".repeat(n));
        let got = extract(&long(60 * 1024), &url(), &ExtractOptions::default());
        assert_eq!(got.h1[0].len(), 60 * 1024, "a value under MAX_TEXT_BYTES, under the default page limit");
        let got = extract(&long(70 * 1024), &url(), &ExtractOptions::default());
        assert!(got.h1[0].len() <= MAX_TEXT_BYTES && got.h1[0].len() > 60 * 1024, "{}", got.h1[0].len());

        let limited = |bytes: usize| ExtractOptions { max_output_bytes: bytes, ..Default::default() };
        // "og:title" and "abc" as JSON strings: 10 + 5 bytes.
        let og = r#"<meta property="og:title" content="abc">"#;
        assert_eq!(extract(og, &url(), &limited(15)).og.len(), 1);
        let cut = extract(og, &url(), &limited(14));
        assert!(cut.og.is_empty() && cut.warnings.iter().any(|w| w.contains("og")), "{:?}", cut.warnings);
        // A quote and a backslash take two bytes each, a control character six: 2 + 2 + 2 + 6.
        let escaped = "<h1>\"\\\u{1}</h1>";
        assert_eq!(extract(escaped, &url(), &limited(12)).h1, vec!["\"\\\u{1}"]);
        assert!(extract(escaped, &url(), &limited(11)).h1.is_empty());

        // An `all` selection warns past MAX_MATCHES, and only then.
        let all = ExtractOptions {
            select: vec![("i".into(), Selection { selector: Selector::parse("i").unwrap(), attr: None, all: true })],
            ..Default::default()
        };
        for (n, warned) in [(3, false), (MAX_MATCHES, false), (MAX_MATCHES + 1, true)] {
            let got = extract(&"<i>x</i>".repeat(n), &url(), &all);
            assert_eq!(got.select["i"].as_array().unwrap().len(), n.min(MAX_MATCHES));
            assert_eq!(got.warnings.iter().any(|w| w.contains("matches, only the first")), warned, "{n}");
        }
    }

    /// The first `description` meta wins; other metas with a `content` are not descriptions.
    #[test]
    fn the_first_description_wins() {
        let page = r#"<meta property="og:title" content="not it"><meta name="keywords" content="nor this">
            <meta name="Description" content="first"><meta name="description" content="second">"#;
        assert_eq!(extract(page, &url(), &ExtractOptions::default()).description.as_deref(), Some("first"));
    }

    /// Arbitrary bytes, and tag soup built from HTML's sharp edges, never panic.
    #[test]
    fn arbitrary_input_never_panics() {
        const PIECES: &[&str] = &[
            "<",
            ">",
            "</",
            "/>",
            "<a href=\"",
            "\"",
            "'",
            "=",
            "<base href=",
            "<script type=application/ld+json>",
            "</script>",
            "<meta property=og:x content=",
            "&",
            "&#",
            "&#x",
            ";",
            "amp",
            "<!--",
            "-->",
            "<![CDATA[",
            "<html lang=",
            "<h1>",
            "</h1>",
            "<title>",
            " ",
            "\n",
            "\u{0}",
            "é",
            "\u{10FFFF}",
            "http://[",
            "//",
            "#",
            "<area href=",
            "mailto:",
            "javascript:",
            "ftp://h/",
            "HTTPS://h/",
            "x/",
        ];
        let mut rng = fanout_testkit::rng::Rng::new(0x9e37_79b9_7f4a_7c15u64);
        let mut next = move || rng.next_u64();
        for _ in 0..3000 {
            // Limits small enough to be reached, now and then.
            let opts = ExtractOptions {
                links: true,
                max_links: (next() % 8) as usize,
                select: vec![(
                    "s".into(),
                    Selection { selector: Selector::parse("a > b c, [x=y], h1").unwrap(), attr: None, all: true },
                )],
                max_output_bytes: if next() % 2 == 0 { DEFAULT_OUTPUT_BYTES } else { (next() % 300) as usize },
            };
            let len = (next() % 64) as usize;
            let soup: String = (0..len).map(|_| PIECES[(next() % PIECES.len() as u64) as usize]).collect();
            assert_bounded(&soup, &opts, &extract(&soup, &url(), &opts));
            let bytes: Vec<u8> = (0..len * 4).map(|_| next() as u8).collect();
            let text = String::from_utf8_lossy(&bytes);
            assert_bounded(&text, &opts, &extract(&text, &url(), &opts));
        }
    }

    #[test]
    fn hostile_nesting_is_bounded() {
        let html = format!("<title>t</title><h1>{}x", "<b>".repeat(1_000_000));
        let opts = ExtractOptions {
            select: vec![(
                "bold".into(),
                Selection { selector: Selector::parse("h1 b b").unwrap(), attr: None, all: true },
            )],
            ..Default::default()
        };
        let got = extract(&html, &url(), &opts);
        assert_eq!(got.title.as_deref(), Some("t"));
        assert_eq!(got.h1, vec!["x"]);
        assert!(!got.warnings.is_empty());
    }

    #[test]
    fn a_page_cannot_make_an_answer_larger_than_its_output_limit() {
        // Every one of 6,000 nested divs has the whole 64 KiB text: 393 MB if each were kept.
        let html = format!("{}{}{}", "<div>".repeat(6000), "words ".repeat(64 * 1024 / 6), "</div>".repeat(6000));
        let opts = ExtractOptions {
            select: vec![("d".into(), Selection { selector: Selector::parse("div").unwrap(), attr: None, all: true })],
            max_output_bytes: 300_000,
            ..Default::default()
        };
        let got = extract(&html, &url(), &opts);
        let size = serde_json::to_vec(&got).unwrap().len();
        assert!(size < 300_000 + 4096, "{size} bytes");
        assert_eq!(got.select["d"].as_array().unwrap().len(), 4, "whole values only, while they fit");
        assert!(got.warnings.iter().any(|w| w.contains("max_output_bytes")), "{:?}", got.warnings);
    }

    /// Malformed pages yield what they can, within the bounds every page keeps.
    #[test]
    fn malformed_html_never_panics() {
        for page in [
            "",
            "<title>Open <h1>never closed",
            "<<<>>><title></title><meta name=description><h1></h1>&#xFFFFFFFF;",
            "<a href=\"http://[::1\">x</a><base href=\"::::\">",
            "<script type=\"application/ld+json\"></script>",
            "\u{0}\u{feff}<html lang>",
            "<a href=mailto:x@y<area href=ftp://h/f><a href='javascript:0'<a href=data:,x><a href=/ok#f><a href=/ok>",
            "<base href=ftp://h/><a href=x><area href=//h/y#><a href=\"  https://h/z  \"><title>t<title>u",
        ] {
            for opts in [
                ExtractOptions { links: true, max_links: 10, ..Default::default() },
                ExtractOptions { links: true, max_links: 1, max_output_bytes: 12, ..Default::default() },
            ] {
                assert_bounded(page, &opts, &extract(page, &url(), &opts));
            }
        }
    }
}
