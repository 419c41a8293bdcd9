//! Differential test of `fanout::html::extract` against the HTML standard.
//!
//! The reference parses each page with html5ever (through `scraper`), a
//! WHATWG-conformant parser, and computes every standard field from the tree
//! it builds, to the definitions below. Two sets of pages are compared:
//!
//! - the corpus, `tests/corpus/*.html`: pages in the styles of real generators
//!   (Sphinx, Asciidoctor, DocBook, javadoc, ...), each holding known traps;
//! - generated hostile documents: a seeded generator mixes the same traps
//!   (raw-text elements with markup-looking content, odd end tags, unquoted
//!   attributes, character references, comments, `<base href>`, ...) into
//!   documents a browser builds a simple tree for. A failing case is printed
//!   with its seed; `HTML_CONFORMANCE_SEED=0x...` runs that case alone.
//!
//! The reference definitions (ASCII whitespace is U+0009, U+000A, U+000C,
//! U+000D and U+0020; "clean" means stripped of leading and trailing ASCII
//! whitespace with inner runs collapsed to one space):
//!
//! - `title`: the clean text content of the first `title` element, `None` if
//!   there is none or the result is empty;
//! - `h1`: the clean text content of every `h1` element, empty ones included;
//! - `lang`: the `html` element's `lang` attribute, `None` if absent or empty;
//! - `description`: the clean `content` of the first `meta` named
//!   `description` (ASCII case-insensitive) that has a `content`;
//! - `canonical`: the stripped `href` of the first `link` whose `rel` has the
//!   token `canonical` (ASCII case-insensitive) and that has an `href`, joined
//!   to the base URL (`None` if that fails), any scheme, fragment kept;
//! - `links`: the stripped `href` of every `a` and `area`, in tree order, less
//!   those starting with `#`, joined to the base URL, http(s) only, fragment
//!   removed, first occurrence kept;
//! - `og`: the clean `content` of each `meta` whose `property` starts with
//!   `og:`, first occurrence of each property.
//!
//! The base URL is the first `base` element's `href` joined to the page URL
//! (the page URL if that fails or there is no such element).

use fanout::html::{extract, ExtractOptions, Extracted};
use fanout_testkit::rng::Rng;
use scraper::{ElementRef, Html};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use url::Url;

/// The URL every page is taken to have been fetched from.
const PAGE_URL: &str = "https://docs.example.org/guide/page.html";

/// The HTML namespace: the elements the fields are read from.
const HTML_NS: &str = "http://www.w3.org/1999/xhtml";

/// How many hostile documents are generated.
const GENERATED_CASES: u64 = 2000;

/// The seed the generated cases' seeds are derived from.
const BASE_SEED: u64 = 0x5EED_C0DE_2026_0001;

/// The fields under comparison, as the reference or fanout produces them.
#[derive(Debug, Default, PartialEq)]
struct Fields {
    title: Option<String>,
    h1: Vec<String>,
    lang: Option<String>,
    description: Option<String>,
    canonical: Option<String>,
    links: Vec<String>,
    og: Vec<(String, String)>,
}

/// One field on which the reference and fanout differ.
struct Mismatch {
    field: &'static str,
    detail: String,
}

/// [`PAGE_URL`], parsed.
fn page_url() -> Url {
    Url::parse(PAGE_URL).expect("the page URL parses")
}

/// ASCII whitespace as the HTML standard defines it (a non-breaking space is not).
fn is_html_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0C' | '\r' | ' ')
}

/// Strips leading and trailing ASCII whitespace.
fn strip(text: &str) -> &str {
    text.trim_matches(is_html_space)
}

/// Strips and collapses ASCII whitespace: inner runs become one space.
fn strip_and_collapse(text: &str) -> String {
    text.split(is_html_space).filter(|word| !word.is_empty()).collect::<Vec<_>>().join(" ")
}

/// The clean text content of `element`: all its descendant text nodes, concatenated.
fn text_content(element: &ElementRef<'_>) -> String {
    strip_and_collapse(&element.text().collect::<String>())
}

/// The standard fields of `html`, computed from html5ever's tree to the definitions above.
fn reference(html: &str, page: &Url) -> Fields {
    let doc = Html::parse_document(html);
    let elements: Vec<ElementRef<'_>> =
        doc.tree.root().descendants().filter_map(ElementRef::wrap).filter(|e| &*e.value().name.ns == HTML_NS).collect();
    let named = |name: &'static str| elements.iter().filter(move |e| e.value().name() == name);

    let base = named("base")
        .find_map(|b| b.attr("href"))
        .map_or_else(|| page.clone(), |href| page.join(href).unwrap_or_else(|_| page.clone()));

    let description = named("meta")
        .filter(|m| m.attr("name").is_some_and(|n| n.eq_ignore_ascii_case("description")))
        .find_map(|m| m.attr("content"))
        .map(strip_and_collapse);

    let canonical = named("link")
        .filter(|l| {
            l.attr("rel").is_some_and(|rel| rel.split(is_html_space).any(|t| t.eq_ignore_ascii_case("canonical")))
        })
        .find_map(|l| l.attr("href"))
        .and_then(|href| base.join(strip(href)).ok())
        .map(String::from);

    let mut links: Vec<String> = Vec::new();
    for anchor in elements.iter().filter(|e| matches!(e.value().name(), "a" | "area")) {
        let Some(href) = anchor.attr("href").map(strip) else { continue };
        if href.starts_with('#') {
            continue;
        }
        let Ok(mut link) = base.join(href) else { continue };
        if !matches!(link.scheme(), "http" | "https") {
            continue;
        }
        link.set_fragment(None);
        let link = String::from(link);
        if !links.contains(&link) {
            links.push(link);
        }
    }

    let mut og: Vec<(String, String)> = Vec::new();
    for meta in named("meta") {
        let (Some(property), Some(content)) = (meta.attr("property"), meta.attr("content")) else { continue };
        if property.starts_with("og:") && !og.iter().any(|(p, _)| p == property) {
            og.push((property.to_owned(), strip_and_collapse(content)));
        }
    }

    Fields {
        title: named("title").next().map(text_content).filter(|t| !t.is_empty()),
        h1: named("h1").map(text_content).collect(),
        lang: doc.root_element().attr("lang").filter(|l| !l.is_empty()).map(String::from),
        description,
        canonical,
        links,
        og,
    }
}

/// The standard fields as `fanout::html::extract` gives them, links included.
fn fanout_fields(html: &str, page: &Url) -> Fields {
    let options = ExtractOptions { links: true, max_links: 100_000, ..Default::default() };
    let Extracted { title, description, canonical, lang, og, h1, links, .. } = extract(html, page, &options);
    let og = og
        .into_iter()
        .map(|(property, content)| {
            let content = content.as_str().map_or_else(|| content.to_string(), String::from);
            (property, content)
        })
        .collect();
    Fields { title, h1, lang, description, canonical, links: links.unwrap_or_default(), og }
}

/// Every field on which `got` differs from `want`, described.
fn compare(want: &Fields, got: &Fields) -> Vec<Mismatch> {
    let mut out = Vec::new();
    let mut check = |field: &'static str, want: String, got: String| {
        if want != got {
            out.push(Mismatch { field, detail: format!("reference {want}, fanout {got}") });
        }
    };
    check("title", format!("{:?}", want.title), format!("{:?}", got.title));
    check("h1", format!("{:?}", want.h1), format!("{:?}", got.h1));
    check("lang", format!("{:?}", want.lang), format!("{:?}", got.lang));
    check("description", format!("{:?}", want.description), format!("{:?}", got.description));
    check("canonical", format!("{:?}", want.canonical), format!("{:?}", got.canonical));
    check("og", format!("{:?}", want.og), format!("{:?}", got.og));
    if want.links != got.links {
        out.push(Mismatch { field: "links", detail: describe_link_difference(&want.links, &got.links) });
    }
    out
}

/// What sets two link lists apart: the links only one side has, or else the order.
fn describe_link_difference(want: &[String], got: &[String]) -> String {
    let missing: Vec<&String> = want.iter().filter(|l| !got.contains(l)).collect();
    let extra: Vec<&String> = got.iter().filter(|l| !want.contains(l)).collect();
    let mut detail = format!("reference has {} links, fanout {}", want.len(), got.len());
    if !missing.is_empty() {
        write!(detail, "; only in the reference: {missing:?}").unwrap();
    }
    if !extra.is_empty() {
        write!(detail, "; only in fanout: {extra:?}").unwrap();
    }
    if missing.is_empty() && extra.is_empty() {
        write!(detail, "; the same links in another order: reference {want:?}, fanout {got:?}").unwrap();
    }
    detail
}

/// The corpus pages' names and texts, sorted by name.
fn corpus() -> Vec<(String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut pages: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "html"))
        .map(|path| {
            let name = path.file_name().expect("a file name").to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (name, text)
        })
        .collect();
    pages.sort();
    pages
}

/// Every corpus page yields the reference's fields; all differences are listed.
#[test]
fn corpus_pages_match_the_reference() {
    let page = page_url();
    let pages = corpus();
    assert!(pages.len() >= 10, "tests/corpus holds only {} pages", pages.len());
    let mut report = String::new();
    let mut failed = 0;
    for (name, html) in &pages {
        let mismatches = compare(&reference(html, &page), &fanout_fields(html, &page));
        if !mismatches.is_empty() {
            failed += 1;
        }
        for m in mismatches {
            writeln!(report, "{name}: {}: {}", m.field, m.detail).unwrap();
        }
    }
    assert!(failed == 0, "{failed} of {} corpus pages differ from the reference:\n{report}", pages.len());
}

/// Generated hostile documents yield the reference's fields. Each failing
/// case is named by its seed; the first few are printed whole.
#[test]
fn generated_documents_match_the_reference() {
    const SHOWN_IN_FULL: usize = 3;
    const LISTED: usize = 40;
    let page = page_url();
    let seeds = seeds();
    let mut failures: Vec<(u64, String, Vec<Mismatch>)> = Vec::new();
    for &seed in &seeds {
        let html = Generator::new(seed).document();
        let mismatches = compare(&reference(&html, &page), &fanout_fields(&html, &page));
        if !mismatches.is_empty() {
            failures.push((seed, html, mismatches));
        }
    }
    if failures.is_empty() {
        return;
    }
    let mut by_field: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, _, mismatches) in &failures {
        for m in mismatches {
            *by_field.entry(m.field).or_default() += 1;
        }
    }
    let mut report = format!("{} of {} generated documents differ from the reference.\n", failures.len(), seeds.len());
    for (field, count) in &by_field {
        writeln!(report, "  {field}: {count} documents").unwrap();
    }
    for (seed, html, mismatches) in failures.iter().take(SHOWN_IN_FULL) {
        writeln!(report, "\n--- seed {seed:#018x} ---\n{html}\n---").unwrap();
        for m in mismatches {
            writeln!(report, "{}: {}", m.field, m.detail).unwrap();
        }
    }
    writeln!(report, "\nThe first {LISTED} failing cases (rerun one with HTML_CONFORMANCE_SEED=<seed>):").unwrap();
    for (seed, _, mismatches) in failures.iter().take(LISTED) {
        for m in mismatches {
            writeln!(report, "seed {seed:#018x}: {}: {}", m.field, m.detail).unwrap();
        }
    }
    panic!("{report}");
}

/// The seeds to run: `HTML_CONFORMANCE_SEED` alone when set, else one per generated case.
fn seeds() -> Vec<u64> {
    if let Ok(text) = std::env::var("HTML_CONFORMANCE_SEED") {
        let digits = text.trim().trim_start_matches("0x");
        return vec![u64::from_str_radix(digits, 16).expect("HTML_CONFORMANCE_SEED is a hexadecimal number")];
    }
    (1..=GENERATED_CASES).map(|i| BASE_SEED ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect()
}

/// The raw-text elements (RCDATA included), whose content is text however much it looks like markup.
const RAW_TEXT: &[&str] = &["script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes", "noscript"];

/// The raw-text elements allowed in `<head>` without ending it.
const RAW_TEXT_IN_HEAD: &[&str] = &["script", "style", "title", "noscript", "noframes"];

/// Markup-looking content for raw-text elements. A piece that would end the
/// element it is put in is skipped there (see [`ends_raw_text`]).
const RAW_CONTENT: &[&str] = &[
    "<a href=\"/fake-in-raw-text\">fake</a>",
    "<h1>not a heading</h1>",
    "var s = '<a href=/js-string-link>';",
    "el.innerHTML = '<h1>not a heading either</h1>';",
    "if (a < b && c > d) { x = \"</div>\"; }",
    "<!-- <a href=/commented-in-raw-text> -->",
    "&lt;h1&gt;escaped&lt;/h1&gt; &amp; &copy; caf&eacute;",
    "<meta name=description content=fake-description><base href=https://evil.example/>",
    "<link rel=canonical href=/fake-canonical><meta property=og:title content=fake>",
    "<html lang=xx-fake>",
    "<title>fake title</title>",
    "<![CDATA[ <a href=/cdata-in-raw-text> ]]>",
    "a[href^=\"http\"]::after { content: \"</a>\"; } /* </p> <h1> */",
    "document.write(\"<\\/script><a href='/escaped-end-tag'>\");",
    " text with\u{a0}nbsp &nbsp; and\ttabs ",
];

/// Script content in the "double escaped" state: `</script>` inside `<!-- <script>` does not end it.
const DOUBLE_ESCAPED: &str = "<!-- <script>document.write('<a href=/double-escaped>x</a>')</script> -->";

/// Inline text, in source form: character references, NBSP, odd whitespace.
const TEXT: &[&str] = &[
    "Getting started",
    "Fish &amp; Chips",
    "AT&T",
    "&copy 2024",
    "&copy; 2024",
    "caf&eacute;",
    "a&#x2014;b",
    "a&#8212;b",
    "smart&#150;quote",
    "euro&#x80;sign",
    "&mdash;",
    "more&hellip;",
    "no&nbsp;break",
    "raw\u{a0}nbsp",
    "&#160;lead",
    "trail&#xA0;",
    "&nbsp",
    "&NotEqualTilde;",
    "&notit;",
    "&ampx",
    "&lt;b&gt;bold&lt;/b&gt;",
    "a &lt; b",
    "x < y",
    "1 <2",
    "\u{2003}em\u{2003}space",
    "zero\u{200b}width",
    "tab\there",
    "line\nbreak",
    "form\u{c}feed",
    "  spaced   out  ",
    "&#0;",
    "&#xD800;",
    "&#X41;&#x110000;",
    "&bogus; &; & done",
    "日本語のテキスト",
    "&AMP; &LT;",
];

/// `href` values, in source form (references not decoded).
const HREFS: &[&str] = &[
    "/docs/intro.html",
    "intro.html",
    "../up/",
    "./",
    "?page=2",
    "//cdn.example.net/lib.js",
    "https://x.org/a/b.js#L1",
    "https://x.org/a/b.js#L1-L9",
    "HTTP://Example.COM:80/Path/",
    "#",
    "#section-2",
    " #padded-fragment",
    "",
    "   ",
    "javascript:void(0)",
    "JavaScript:alert('<a>')",
    "mailto:docs@example.org",
    "tel:+1-555-0100",
    "ftp://files.example.org/pub/",
    "data:text/html,<b>x</b>",
    "/search?q=a&amp;lang=en",
    "/search?q=a&lang=en",
    "/legal?x=1&copy=2",
    "/legal?x=1&copy;2",
    "/p?a=1&notify=1",
    "&#x2F;slash-reference",
    "/caf&eacute;/menu",
    "/path with  spaces",
    "/tab\there",
    "/line\nbreak",
    "\\back\\slash",
    "https://例え.example/パス",
    "http://[bad",
    "/same",
    "/same#other",
    "page.html?x=1#frag",
    "/a/b/",
    "a=b",
    "/%7Euser/",
    "HTTPS://DOCS.EXAMPLE.ORG/guide/page.html",
    "/nbsp\u{a0}in-url",
    "  /padded  ",
];

/// `<base href>` values.
const BASE_HREFS: &[&str] = &[
    "https://mirror.example.net/pkg/v3/",
    "../",
    "/root/",
    "sub/dir/",
    "http://[bad",
    "",
    "https://other.example/one?x=1#f",
    "//proto-relative.example/base/",
];

/// `<link rel=canonical href>` values: any scheme, fragments kept.
const CANONICAL_HREFS: &[&str] = &[
    "https://docs.example.org/guide/canonical.html",
    "./intro.html#overview",
    "/guide/page",
    "",
    " /padded#frag ",
    "urn:example:page",
    "mailto:docs@example.org",
    "HTTP://Example.ORG/A",
    "ftp://files.example.org/page",
    "page.html?x=1&amp;y=2",
];

/// `rel` values of `<link>`, canonical or not.
const RELS: &[&str] = &[
    "canonical",
    "Canonical",
    "alternate canonical",
    "canonical\tfoo",
    "CANONICAL",
    "canonicalx",
    "shortlink",
    "\ncanonical ",
];

/// `<html lang>` values.
const LANGS: &[&str] = &["en", "EN-us", "", " de ", "fr\n", "x-klingon", "&#x65;n"];

/// `<meta name>` values, some of them description in another case, some not description at all.
const META_NAMES: &[&str] =
    &["description", "Description", "DESCRIPTION", " description", "descriptionx", "keywords", "generator"];

/// `<meta property>` values.
const PROPERTIES: &[&str] = &[
    "og:title",
    "og:image",
    "og:url",
    "og:description",
    "OG:title",
    "og:",
    " og:type",
    "og:image:alt",
    "twitter:card",
];

/// Comments and comment-like markup, in any context.
const COMMENTS: &[&str] = &[
    "<!-- <a href=/commented> -->",
    "<!-- <h1>commented heading</h1> -->",
    "<!---->",
    "<!-- a -- b --!>",
    "<!--[if lt IE 9]><script src=/ie.js></script><![endif]-->",
    "<!-- <title>commented title</title> <base href=/commented-base/> -->",
];

/// Comment-like markup that leaves text or elements behind: for the body only.
const BODY_COMMENTS: &[&str] = &[
    "<!--><a href=\"/after-abrupt-comment\">after</a>",
    "<!---><a href=\"/after-abrupt-comment-2\">after</a>",
    "<?php echo '<a href=/php>'; ?>",
    "<![CDATA[<a href=/cdata>]]>",
    "<!DOCTYPE html>",
    "</ br>",
];

/// Non-void elements self-closed the XHTML way (DocBook XSL, javadoc): HTML ignores the `/`, so
/// the element stays open until an enclosing end tag closes it.
const SELF_CLOSED: &[&str] =
    &["<a id=\"x\"/>", "<a name=\"ch01\"/>", "<A ID=a1 />", "<span class=\"anchor\"/>", "<i/>", "<div/>"];

/// Builds one hostile document, deterministically from a seed.
struct Generator {
    rng: Rng,
    /// Whether an `a` is open (links never nest).
    in_link: bool,
}

impl Generator {
    /// A generator whose documents follow from `seed` alone.
    fn new(seed: u64) -> Generator {
        Generator { rng: Rng::new(seed), in_link: false }
    }

    /// A tag name in a random case.
    fn name(&mut self, name: &str) -> String {
        match self.rng.index(6) {
            0 => name.to_ascii_uppercase(),
            1 => name[..1].to_ascii_uppercase() + &name[1..],
            _ => name.to_owned(),
        }
    }

    /// An end tag in one of the forms that end an element: `</a>`, `</A >`, `</a\n>`, `</a/>`.
    fn end_tag(&mut self, name: &str) -> String {
        let name = self.name(name);
        match self.rng.index(8) {
            0 => format!("</{name} >"),
            1 => format!("</{name}\n>"),
            2 => format!("</{name}/>"),
            3 => format!("</{name} data-x=\"y\">"),
            _ => format!("</{name}>"),
        }
    }

    /// ` name=value`, quoted in a way that keeps `value` (source form) intact: unquoted when it
    /// can be, valueless (` name`) sometimes when it is empty.
    fn attr(&mut self, name: &str, value: &str) -> String {
        let name = self.name(name);
        let sep = match self.rng.index(6) {
            0 => "\n\t",
            1 => "  ",
            _ => " ",
        };
        let unquotable = !value.is_empty() && !value.contains(|c: char| is_html_space(c) || "\"'`<>".contains(c));
        match self.rng.index(3) {
            0 if value.is_empty() => format!("{sep}{name}"),
            0 if unquotable => format!("{sep}{name}={value}"),
            1 if !value.contains('\'') => format!("{sep}{name}='{value}'"),
            _ => format!("{sep}{name}=\"{}\"", value.replace('"', "&quot;")),
        }
    }

    /// A whole document: doctype, `<html>`, head, body, every element closed.
    fn document(&mut self) -> String {
        let mut out = String::new();
        out.push_str(self.rng.pick(&[
            "<!DOCTYPE html>\n",
            "<!doctype HTML>",
            "",
            "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 4.01//EN\">\n",
        ]));
        let explicit_html = self.rng.chance(80);
        if explicit_html {
            let html = self.name("html");
            out.push('<');
            out.push_str(&html);
            if self.rng.chance(75) {
                let lang = self.rng.pick(LANGS);
                out.push_str(&self.attr("lang", lang));
            }
            out.push_str(">\n");
        }
        let explicit_head = self.rng.chance(70);
        if explicit_head {
            out.push_str("<head>\n");
        }
        for _ in 0..self.rng.index(10) {
            self.head_item(&mut out);
            out.push('\n');
        }
        if explicit_head {
            out.push_str("</head>\n");
        }
        let explicit_body = self.rng.chance(70);
        if explicit_body {
            out.push_str("<body>\n");
        }
        for _ in 0..1 + self.rng.index(10) {
            self.block(&mut out, 0);
            out.push('\n');
        }
        if self.rng.chance(5) {
            // A second `<html>` start tag adds the attributes the root lacks.
            out.push_str("<html lang=late-lang>");
        }
        if explicit_body {
            out.push_str("</body>\n");
        }
        if explicit_html {
            out.push_str("</html>\n");
        }
        out
    }

    /// An element `<head>` keeps: title, base, meta, link, script, style, noscript, comment.
    fn head_item(&mut self, out: &mut String) {
        match self.rng.index(10) {
            0 | 1 => self.title(out),
            2 => self.base(out),
            3 | 4 => self.meta(out),
            5 => self.canonical(out),
            6 => {
                let name = self.rng.pick(RAW_TEXT_IN_HEAD);
                self.raw_text(out, name);
            }
            7 => out.push_str(self.rng.pick(COMMENTS)),
            8 => out.push_str("<meta charset=\"utf-8\"><link rel=stylesheet href=/s.css>"),
            _ => out.push_str("<meta name=viewport content=\"width=device-width, initial-scale=1\">"),
        }
    }

    /// A `<title>`: plain text, character references, or markup-looking text.
    fn title(&mut self, out: &mut String) {
        let text = match self.rng.index(6) {
            0 => String::new(),
            1 => " \n ".to_owned(),
            2 => "Docs &lt;v2&gt; <b>x</b> <!-- not a comment -->".to_owned(),
            _ => self.texts(3),
        };
        let open = self.name("title");
        let close = self.end_tag("title");
        write!(out, "<{open}>{text}{close}").unwrap();
    }

    /// A `<base href>`, sometimes after a `<base target>` that has no `href`.
    fn base(&mut self, out: &mut String) {
        if self.rng.chance(20) {
            out.push_str("<base target=_blank>");
        }
        let href = self.rng.pick(BASE_HREFS);
        let href = self.attr("href", href);
        write!(out, "<base{href}>").unwrap();
    }

    /// A `<meta>`: a description, an `og:` property, both, or neither, with or without `content`.
    fn meta(&mut self, out: &mut String) {
        let mut attrs = String::new();
        let kind = self.rng.index(4);
        if kind != 1 {
            let name = self.rng.pick(META_NAMES);
            attrs.push_str(&self.attr("name", name));
        }
        if kind != 0 {
            let property = self.rng.pick(PROPERTIES);
            attrs.push_str(&self.attr("property", property));
        }
        if self.rng.chance(85) {
            let content = self.texts(2);
            attrs.push_str(&self.attr("content", &content));
        }
        let meta = self.name("meta");
        let close = if self.rng.chance(30) { " />" } else { ">" };
        write!(out, "<{meta}{attrs}{close}").unwrap();
    }

    /// A `<link>` whose `rel` may or may not name `canonical`, with or without `href`.
    fn canonical(&mut self, out: &mut String) {
        let rel = self.rng.pick(RELS);
        let mut attrs = self.attr("rel", rel);
        if self.rng.chance(85) {
            let href = self.rng.pick(CANONICAL_HREFS);
            attrs.push_str(&self.attr("href", href));
        }
        write!(out, "<link{attrs}>").unwrap();
    }

    /// A raw-text element holding markup-looking content, ended by one of its end tag's forms.
    fn raw_text(&mut self, out: &mut String, name: &str) {
        let open = self.name(name);
        write!(out, "<{open}").unwrap();
        if name == "script" && self.rng.chance(30) {
            let kind = self.rng.pick(&["module", "application/json", "text/template", "text/javascript"]);
            out.push_str(&self.attr("type", kind));
        }
        out.push('>');
        if name == "script" && self.rng.chance(15) {
            out.push_str(DOUBLE_ESCAPED);
        }
        for _ in 0..1 + self.rng.index(3) {
            let piece = self.rng.pick(RAW_CONTENT);
            if !ends_raw_text(piece, name) {
                out.push_str(piece);
            }
            if self.rng.chance(30) {
                // Look-alikes of the end tag that do not end the element.
                let fake = self.rng.pick(&["</{}x>", "</ {}>", "<\\/{}>", "</{}-data>", "<{}>"]);
                out.push_str(&fake.replace("{}", &self.name(name)));
            }
        }
        let close = self.end_tag(name);
        out.push_str(&close);
    }

    /// A few pieces of inline text.
    fn texts(&mut self, most: usize) -> String {
        let mut out = String::new();
        for i in 0..1 + self.rng.index(most) {
            if i > 0 {
                out.push(' ');
            }
            out.push_str(self.rng.pick(TEXT));
        }
        out
    }

    /// A block-level piece of the body; containers nest up to three deep.
    fn block(&mut self, out: &mut String, depth: usize) {
        match self.rng.index(if depth < 3 { 14 } else { 10 }) {
            0 | 1 => self.heading(out),
            2 | 3 => self.paragraph(out),
            4 => {
                let name = self.rng.pick(RAW_TEXT);
                self.raw_text(out, name);
            }
            5 if !self.in_link => out.push_str(self.rng.pick(BODY_COMMENTS)),
            6 => out.push_str(self.rng.pick(COMMENTS)),
            7 => self.image_map(out),
            8 => match self.rng.index(4) {
                0 => self.title(out),
                1 => self.base(out),
                2 => self.canonical(out),
                _ => self.meta(out),
            },
            9 if self.rng.chance(30) && !self.in_link => {
                // DocBook XSL's title page: an XHTML `<a id/>` the heading's end tag closes.
                out.push_str("<div class=\"titlepage\"><div><div><h1 class=\"title\">");
                out.push_str(self.rng.pick(SELF_CLOSED));
                out.push_str(
                    "Appendix A</h1></div></div></div><div class=\"toc\"><p><b>Table of Contents</b></p></div>",
                );
            }
            9 if self.rng.chance(30) => {
                // A heading opened in a heading closes it.
                let inner = self.rng.pick(&["h1", "h2", "h5"]);
                write!(out, "<h1>{}<{inner}>{}", self.texts(1), self.texts(1)).unwrap();
                out.push_str(&self.end_tag(inner));
                out.push_str(&self.end_tag("h1"));
            }
            9 => {
                let level = self.rng.pick(&["h2", "h3", "h6"]);
                let open = self.name(level);
                write!(out, "<{open}>").unwrap();
                self.inline(out, 2);
                out.push_str(&self.end_tag(level));
            }
            10 if !self.in_link => {
                // A link around block content.
                let href = self.href();
                write!(out, "<a{href}>").unwrap();
                self.in_link = true;
                self.block(out, depth + 1);
                self.in_link = false;
                out.push_str(&self.end_tag("a"));
            }
            11 => {
                out.push_str("<ul>");
                for _ in 0..1 + self.rng.index(3) {
                    out.push_str("<li>");
                    self.inline(out, 2);
                    out.push_str("</li>");
                }
                out.push_str("</ul>");
            }
            _ => {
                let name =
                    self.rng.pick(&["div", "section", "header", "main", "article", "nav", "footer", "blockquote"]);
                let open = self.name(name);
                write!(out, "<{open}>").unwrap();
                for _ in 0..1 + self.rng.index(3) {
                    self.block(out, depth + 1);
                }
                out.push_str(&self.end_tag(name));
            }
        }
    }

    /// An `<h1>`: empty, blank, text, inline markup, a permalink anchor, a raw-text element, an
    /// XHTML-style self-closed element (which HTML keeps open) or misnested inline elements inside.
    fn heading(&mut self, out: &mut String) {
        let open = self.name("h1");
        let attrs = if self.rng.chance(30) { self.attr("id", "intro") } else { String::new() };
        write!(out, "<{open}{attrs}>").unwrap();
        match self.rng.index(11) {
            0 => {}
            1 => out.push_str(self.rng.pick(&[" ", "&nbsp;", "\u{a0}", "\n\t", "<br>"])),
            2 if !self.in_link => {
                self.inline(out, 1);
                let anchor = self.rng.pick(&[
                    "<a class=\"headerlink\" href=\"#section\" title=\"Permalink to this heading\">¶</a>",
                    "<span><a class=mark href=#fs_readfile id=fs_readfile>#</a></span>",
                    "<a class=anchor href=#_overview></a>",
                ]);
                out.push_str(anchor);
            }
            3 => {
                self.inline(out, 1);
                let name = self.rng.pick(&["script", "style"]);
                self.raw_text(out, name);
            }
            4 | 5 if !self.in_link => {
                out.push_str(self.rng.pick(SELF_CLOSED));
                self.inline(out, 2);
            }
            6 => {
                self.inline(out, 1);
                self.misnested(out);
            }
            _ => self.inline(out, 3),
        }
        out.push_str(&self.end_tag("h1"));
    }

    /// Inline elements the way careless markup leaves them: overlapping, or never closed (the
    /// enclosing element's end tag closes them).
    fn misnested(&mut self, out: &mut String) {
        let (outer, inner) = (self.rng.pick(&["b", "em", "span"]), self.rng.pick(&["i", "code", "small"]));
        let (first, second, third) = (self.texts(1), self.texts(1), self.texts(1));
        match self.rng.index(3) {
            0 => write!(out, "<{outer}>{first}<{inner}>{second}</{outer}>{third}</{inner}>").unwrap(),
            1 => write!(out, "<{outer}>{first}").unwrap(),
            _ => write!(out, "<{outer}>{first}<{inner}>{second}").unwrap(),
        }
    }

    /// A `<p>` of inline content, sometimes left for the next block to close.
    fn paragraph(&mut self, out: &mut String) {
        let open = self.name("p");
        write!(out, "<{open}>").unwrap();
        self.inline(out, 4);
        if self.rng.chance(80) {
            out.push_str(&self.end_tag("p"));
        }
    }

    /// An `href` attribute, sometimes doubled (the first one counts) or with neighbours.
    fn href(&mut self) -> String {
        let mut attrs = String::new();
        if self.rng.chance(15) {
            attrs.push_str(&self.attr("class", "reference external"));
        }
        if self.rng.chance(90) {
            let href = self.rng.pick(HREFS);
            attrs.push_str(&self.attr("href", href));
        }
        if self.rng.chance(10) {
            let href = self.rng.pick(HREFS);
            attrs.push_str(&self.attr("href", href));
        }
        if self.rng.chance(15) {
            attrs.push_str(&self.attr("title", "a=b/c#d"));
        }
        attrs
    }

    /// `<map>` with `<area>` links.
    fn image_map(&mut self, out: &mut String) {
        out.push_str("<map name=m>");
        for _ in 0..1 + self.rng.index(3) {
            let href = self.href();
            write!(out, "<area shape=rect coords=0,0,10,10{href} alt=x>").unwrap();
        }
        out.push_str("</map>");
    }

    /// Inline content: text, phrasing elements, links, comments, script or style.
    fn inline(&mut self, out: &mut String, most: usize) {
        for _ in 0..1 + self.rng.index(most) {
            match self.rng.index(10) {
                0..=3 => out.push_str(&self.texts(2)),
                4 | 5 if !self.in_link => {
                    let href = self.href();
                    let open = self.name("a");
                    write!(out, "<{open}{href}>").unwrap();
                    self.in_link = true;
                    self.inline(out, 2);
                    if self.rng.chance(15) {
                        self.misnested(out);
                    }
                    self.in_link = false;
                    out.push_str(&self.end_tag("a"));
                }
                6 => {
                    let name = self.rng.pick(&["span", "em", "code", "b", "small", "strong"]);
                    let open = self.name(name);
                    write!(out, "<{open}>").unwrap();
                    out.push_str(&self.texts(2));
                    out.push_str(&self.end_tag(name));
                }
                7 => out.push_str(self.rng.pick(&["<br>", "<wbr>", "<br/>", "<img src=/i.png alt=\"<h1>alt</h1>\">"])),
                8 => out.push_str(self.rng.pick(COMMENTS)),
                _ => {
                    let name = self.rng.pick(&["script", "style"]);
                    self.raw_text(out, name);
                }
            }
        }
    }
}

/// Whether `content` holds an end tag that would end raw-text element `name`:
/// `</name` (any case) followed by whitespace, `/` or `>`.
fn ends_raw_text(content: &str, name: &str) -> bool {
    let lower = content.to_ascii_lowercase();
    let needle = format!("</{name}");
    lower.match_indices(&needle).any(|(at, _)| {
        lower[at + needle.len()..].chars().next().is_some_and(|c| is_html_space(c) || c == '/' || c == '>')
    })
}
