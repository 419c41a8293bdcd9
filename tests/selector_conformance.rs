//! Differential test of `fanout::html::Selector` against Servo's `selectors`
//! (through `scraper`), matching over html5ever's tree.
//!
//! Seeded documents hold trees every HTML parser builds the same way (every
//! element closed, content models kept, `html`, `head` and `body` explicit),
//! each element numbered by `data-n`; seeded selectors mix every feature
//! fanout supports: attribute operators and flags, structural pseudo-classes,
//! `:not()`, `:has()`, all four combinators and lists. For each pair, the
//! numbered elements that match must be the same, in document order.
//! `SELECTOR_CONFORMANCE_SEED=0x...` runs one document alone.

use fanout::html::{normalize, Document, Selector};
use fanout_testkit::rng::Rng;
use std::fmt::Write as _;

/// How many documents are generated, and selectors tried on each.
const DOCUMENTS: u64 = 300;
const SELECTORS_PER_DOCUMENT: usize = 40;

/// The seed the documents' seeds are derived from.
const BASE_SEED: u64 = 0x5E1E_C7D0_2026_0002;

const FLOW: &[&str] = &["div", "section", "article", "ul", "p"];
const PHRASING: &[&str] = &["span", "a", "em", "b", "code"];
const CLASSES: &[&str] = &["a", "b", "item", "Item", "x-y"];
const IDS: &[&str] = &["top", "main", "m1"];
const LANGS: &[&str] = &["en", "en-US", "EN-gb", "fr", "english"];
const TITLES: &[&str] = &["x", "x y", "", "A-b", "foo-bar baz", "X"];
const RELS: &[&str] = &["next", "nofollow external", "NoFollow", "prev next"];
const HREFS: &[&str] = &["https://x.org/a.pdf", "/b.html", "#top", "", "HTTPS://X.ORG/"];

/// Builds one document, deterministically from a seed.
struct Generator {
    rng: Rng,
    next_number: usize,
}

impl Generator {
    fn document(&mut self) -> String {
        let mut out = String::from("<!DOCTYPE html><html><head><title>t</title></head><body>");
        for _ in 0..1 + self.rng.index(4) {
            self.flow(&mut out, 0);
        }
        out.push_str("</body></html>");
        out
    }

    /// The start tag of a numbered element with some of the attributes selectors test.
    fn open(&mut self, out: &mut String, name: &str) {
        write!(out, "<{name} data-n=\"{}\"", self.next_number).unwrap();
        self.next_number += 1;
        if self.rng.chance(50) {
            let classes: Vec<&str> = (0..1 + self.rng.index(3)).map(|_| self.rng.pick(CLASSES)).collect();
            write!(out, " class=\"{}\"", classes.join(" ")).unwrap();
        }
        if self.rng.chance(15) {
            write!(out, " id=\"{}\"", self.rng.pick(IDS)).unwrap();
        }
        if self.rng.chance(30) {
            write!(out, " lang=\"{}\"", self.rng.pick(LANGS)).unwrap();
        }
        if self.rng.chance(30) {
            write!(out, " title=\"{}\"", self.rng.pick(TITLES)).unwrap();
        }
        if name == "a" {
            write!(out, " href=\"{}\"", self.rng.pick(HREFS)).unwrap();
            if self.rng.chance(40) {
                write!(out, " rel=\"{}\"", self.rng.pick(RELS)).unwrap();
            }
        }
        out.push('>');
    }

    fn flow(&mut self, out: &mut String, depth: usize) {
        let name = self.rng.pick(FLOW);
        self.open(out, name);
        let children = if depth >= 3 { self.rng.index(2) } else { self.rng.index(5) };
        for _ in 0..children {
            match name {
                "ul" => {
                    self.open(out, "li");
                    if self.rng.chance(50) {
                        self.phrasing(out, false);
                    } else if depth < 3 {
                        self.flow(out, depth + 1);
                    }
                    out.push_str("</li>");
                }
                "p" => self.phrasing(out, false),
                _ if self.rng.chance(60) && depth < 3 => self.flow(out, depth + 1),
                _ => self.phrasing(out, false),
            }
        }
        write!(out, "</{name}>").unwrap();
    }

    /// Text, or a phrasing element (links never nest) that may be empty.
    fn phrasing(&mut self, out: &mut String, in_link: bool) {
        if self.rng.chance(25) {
            out.push_str(self.rng.pick(&["t", "text", "x"]));
            return;
        }
        let name = loop {
            let name = self.rng.pick(PHRASING);
            if !(in_link && name == "a") {
                break name;
            }
        };
        self.open(out, name);
        for _ in 0..self.rng.index(3) {
            self.phrasing(out, in_link || name == "a");
        }
        write!(out, "</{name}>").unwrap();
    }

    fn selector_list(&mut self) -> String {
        let mut parts = vec![self.complex()];
        if self.rng.chance(15) {
            parts.push(self.complex());
        }
        parts.join(", ")
    }

    fn complex(&mut self) -> String {
        let mut out = self.compound(0);
        for _ in 0..self.rng.index(3) {
            out.push_str(self.rng.pick(&[" ", " > ", " + ", " ~ ", ">", "  "]));
            out.push_str(&self.compound(0));
        }
        out
    }

    fn compound(&mut self, nesting: usize) -> String {
        let mut out = String::new();
        match self.rng.index(4) {
            0 => {}
            1 => out.push('*'),
            _ => {
                let names = [FLOW, PHRASING, &["li"]].concat();
                out.push_str(self.rng.pick(&names));
            }
        }
        let extras = if out.is_empty() { 1 + self.rng.index(2) } else { self.rng.index(3) };
        for _ in 0..extras {
            match self.rng.index(8) {
                0 => write!(out, ".{}", self.rng.pick(CLASSES)).unwrap(),
                1 => write!(out, "#{}", self.rng.pick(IDS)).unwrap(),
                2 | 3 => out.push_str(&self.attribute()),
                _ => out.push_str(&self.pseudo(nesting)),
            }
        }
        out
    }

    fn attribute(&mut self) -> String {
        let (name, values) = match self.rng.index(5) {
            0 => ("lang", LANGS),
            1 => ("title", TITLES),
            2 => ("href", HREFS),
            3 => ("rel", RELS),
            _ => ("class", CLASSES),
        };
        if self.rng.chance(15) {
            return format!("[{name}]");
        }
        let op = self.rng.pick(&["=", "~=", "|=", "^=", "$=", "*="]);
        let whole = self.rng.pick(values);
        // A piece of a value as often as a whole one.
        let value = match self.rng.index(3) {
            0 if !whole.is_empty() => {
                let cut = 1 + self.rng.index(whole.len());
                whole.get(..cut).unwrap_or(whole).to_owned()
            }
            1 if !whole.is_empty() => {
                let cut = self.rng.index(whole.len());
                whole.get(cut..).unwrap_or(whole).to_owned()
            }
            _ => whole.to_owned(),
        };
        let flag = self.rng.pick(&["", "", "", " i", " s"]);
        let quote = if self.rng.chance(50) { "\"" } else { "'" };
        format!("[{name}{op}{quote}{value}{quote}{flag}]")
    }

    fn pseudo(&mut self, nesting: usize) -> String {
        let anb = |g: &mut Generator| {
            g.rng.pick(&[
                "odd", "even", "1", "2", "3", "2n+1", "-n+2", "n", "3n", "2n-1", " 2n + 1 ", "-2n+5", "0n+1", "+n",
                "-n+0",
            ])
        };
        match self.rng.index(if nesting < 1 { 14 } else { 12 }) {
            0 => ":first-child".into(),
            1 => ":last-child".into(),
            2 => ":only-child".into(),
            3 => ":first-of-type".into(),
            4 => ":last-of-type".into(),
            5 => ":only-of-type".into(),
            6 => ":empty".into(),
            7 => format!(":nth-child({})", anb(self)),
            8 => format!(":nth-last-child({})", anb(self)),
            9 => format!(":nth-of-type({})", anb(self)),
            10 => format!(":nth-last-of-type({})", anb(self)),
            11 => format!(":NTH-CHILD({})", anb(self)),
            12 => {
                let mut inner = vec![self.compound(nesting + 1)];
                if self.rng.chance(30) {
                    inner.push(self.compound(nesting + 1));
                }
                format!(":not({})", inner.join(", "))
            }
            _ => {
                let lead = self.rng.pick(&["", "> ", "+ ", "~ "]);
                let mut inner = format!("{lead}{}", self.compound(nesting + 1));
                if self.rng.chance(40) {
                    inner.push_str(self.rng.pick(&[" ", " > "]));
                    inner.push_str(&self.compound(nesting + 1));
                }
                format!(":has({inner})")
            }
        }
    }
}

/// The `data-n` of each element html5ever's tree and `selectors` match, in document order.
fn reference(doc: &scraper::Html, selector: &scraper::Selector) -> Vec<String> {
    doc.select(selector).filter_map(|e| e.value().attr("data-n").map(str::to_owned)).collect()
}

/// The `data-n` of each element fanout matches, in document order.
fn fanout(doc: &Document<'_>, selector: &Selector) -> Vec<String> {
    selector
        .select(doc)
        .into_iter()
        .filter_map(|i| {
            let tag = doc.tag(i)?;
            let n = tag.attributes().get("data-n")??;
            Some(n.as_utf8_str().into_owned())
        })
        .collect()
}

/// The document seeds to run: `SELECTOR_CONFORMANCE_SEED` alone when set.
fn seeds() -> Vec<u64> {
    if let Ok(text) = std::env::var("SELECTOR_CONFORMANCE_SEED") {
        let digits = text.trim().trim_start_matches("0x");
        return vec![u64::from_str_radix(digits, 16).expect("SELECTOR_CONFORMANCE_SEED is a hexadecimal number")];
    }
    (1..=DOCUMENTS).map(|i| BASE_SEED ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)).collect()
}

#[test]
fn generated_selectors_match_what_browsers_match() {
    const LISTED: usize = 30;
    let mut failures: Vec<String> = Vec::new();
    let (mut compared, mut matched_some) = (0, 0);
    for seed in seeds() {
        let mut generator = Generator { rng: Rng::new(seed), next_number: 0 };
        let html = generator.document();
        let reference_doc = scraper::Html::parse_document(&html);
        let normalized = normalize(&html);
        let doc = Document::parse(&normalized);
        for _ in 0..SELECTORS_PER_DOCUMENT {
            let text = generator.selector_list();
            let want = match scraper::Selector::parse(&text) {
                Ok(selector) => reference(&reference_doc, &selector),
                Err(e) => panic!("the generator wrote {text:?}, which the reference refuses: {e:?}"),
            };
            let got = match Selector::parse(&text) {
                Ok(selector) => fanout(&doc, &selector),
                Err(e) => {
                    failures.push(format!("seed {seed:#018x}: {text:?}: fanout refuses it: {e}"));
                    continue;
                }
            };
            compared += 1;
            matched_some += usize::from(!want.is_empty());
            if want != got {
                failures.push(format!("seed {seed:#018x}: {text:?}: reference {want:?}, fanout {got:?}"));
            }
        }
    }
    // A generator whose selectors match nothing would prove nothing.
    assert!(matched_some * 4 >= compared, "only {matched_some} of {compared} selectors match any element");
    assert!(
        failures.is_empty(),
        "{} of {compared} selectors differ from the reference; the first {LISTED} \
         (rerun one with SELECTOR_CONFORMANCE_SEED=<seed>):\n{}",
        failures.len(),
        failures.iter().take(LISTED).cloned().collect::<Vec<_>>().join("\n")
    );
}
