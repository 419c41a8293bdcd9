//! CSS selectors over `tl`'s document tree.
//!
//! `tl` 0.7.8's own matcher never matches descendant or child combinators
//! (its issue 77), so fanout parses selectors itself and matches them against
//! `tl`'s nodes, walking parent links it computes once per document.
//!
//! Supported: type (`div`), universal (`*`), `.class`, `#id`, `[attr]`,
//! `[attr=value]` (value bare or quoted), compounds of these (`a.b#c[d]`),
//! descendant (`A B`) and child (`A > B`) combinators, and lists (`A, B`).

use std::cell::Cell;
use std::fmt;

/// A parsed selector list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    alternatives: Vec<Complex>,
}

/// Compounds joined by combinators, stored right to left: `a > b c` is
/// `[c, (Descendant, b), (Child, a)]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Complex {
    subject: Compound,
    ancestors: Vec<(Combinator, Compound)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Combinator {
    Descendant,
    Child,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Compound {
    tag: Option<String>,
    id: Option<String>,
    classes: Vec<String>,
    attrs: Vec<(String, Option<String>)>,
}

/// Why a selector could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectorError {
    selector: String,
    reason: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid CSS selector {:?}: {}", self.selector, self.reason)
    }
}

impl std::error::Error for SelectorError {}

impl Selector {
    /// Parses a selector list.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let err = |reason: String| SelectorError { selector: text.to_owned(), reason };
        let mut alternatives = Vec::new();
        for part in split_top_level(text, ',') {
            alternatives.push(parse_complex(part).map_err(err)?);
        }
        Ok(Selector { alternatives })
    }

    /// The indices of the tags of `doc` that match, in document order. Stops
    /// early (keeping what matched) when the document's work budget runs out.
    pub fn select(&self, doc: &Document<'_>) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, _) in doc.tags() {
            if doc.exhausted() {
                break;
            }
            if self.alternatives.iter().any(|c| c.matches(doc, i)) {
                out.push(i);
            }
        }
        out
    }
}

/// A parsed document with the structure selectors and text extraction need.
///
/// `tl` recurses once per nesting level when it collects text, so hostile
/// markup (a million unclosed tags) would overflow the stack; and matching or
/// collecting text over such nesting is quadratic. So parent links and
/// subtree ends are computed here once, iteratively, and every walk spends
/// from one work budget per document: when it runs out, extraction stops with
/// a warning instead of running on.
pub struct Document<'a> {
    source: &'a str,
    dom: tl::VDom<'a>,
    parent: Vec<u32>,
    /// The index of each node's last descendant (itself when it has none).
    last: Vec<u32>,
    budget: Cell<u64>,
}

const NO_PARENT: u32 = u32::MAX;

/// Node visits allowed per document, across all selections and texts.
pub const WORK_BUDGET: u64 = 20_000_000;

impl<'a> Document<'a> {
    /// Parses `html` with `tl`. Never fails: `tl` only refuses input over 4 GiB,
    /// far beyond any body limit, which yields an empty document.
    pub fn parse(html: &'a str) -> Document<'a> {
        let (source, dom) = match tl::parse(html, tl::ParserOptions::default()) {
            Ok(dom) => (html, dom),
            Err(_) => ("", tl::parse("", tl::ParserOptions::default()).expect("the empty document parses")),
        };
        let nodes = dom.nodes();
        let mut parent = vec![NO_PARENT; nodes.len()];
        for (i, node) in nodes.iter().enumerate() {
            if let Some(tag) = node.as_tag() {
                for child in tag.children().top().iter() {
                    if let Some(slot) = parent.get_mut(child.get_inner() as usize) {
                        *slot = i as u32;
                    }
                }
            }
        }
        // Nodes are in document order (pre-order), so a node's subtree ends
        // where the next node that is not its descendant begins.
        let mut last: Vec<u32> = (0..nodes.len() as u32).collect();
        let mut open: Vec<u32> = Vec::new();
        for i in 0..nodes.len() as u32 {
            while let Some(&top) = open.last() {
                if top == parent[i as usize] {
                    break;
                }
                open.pop();
                last[top as usize] = i - 1;
            }
            open.push(i);
        }
        let end = nodes.len().saturating_sub(1) as u32;
        for top in open {
            last[top as usize] = end;
        }
        Document { source, dom, parent, last, budget: Cell::new(WORK_BUDGET) }
    }

    /// Every tag with its node index, in document order.
    pub fn tags(&self) -> impl Iterator<Item = (usize, &tl::HTMLTag<'a>)> {
        self.dom.nodes().iter().enumerate().filter_map(|(i, n)| Some((i, n.as_tag()?)))
    }

    /// The tag at node index `i`.
    pub fn tag(&self, i: usize) -> Option<&tl::HTMLTag<'a>> {
        self.dom.nodes().get(i)?.as_tag()
    }

    fn parent(&self, i: usize) -> Option<usize> {
        match self.parent[i] {
            NO_PARENT => None,
            p => Some(p as usize),
        }
    }

    /// Spends one unit of work; false once the budget is gone.
    fn spend(&self) -> bool {
        let left = self.budget.get();
        self.budget.set(left.saturating_sub(1));
        left > 0
    }

    /// Whether the work budget ran out.
    pub fn exhausted(&self) -> bool {
        self.budget.get() == 0
    }

    /// The raw text inside tag `i` (markup dropped, entities not yet decoded),
    /// at most `cap` bytes.
    pub fn text(&self, i: usize, cap: usize) -> String {
        let mut out = String::new();
        for node in &self.dom.nodes()[i + 1..=self.last[i] as usize] {
            if out.len() >= cap || !self.spend() {
                break;
            }
            if let tl::Node::Raw(text) = node {
                let text = text.as_utf8_str();
                // One text node can be the whole page: take only what fits, cut on a character.
                let mut room = (cap - out.len()).min(text.len());
                while !text.is_char_boundary(room) {
                    room -= 1;
                }
                out.push_str(&text[..room]);
            }
        }
        out
    }

    /// The source text between tag `i`'s start tag and the next `</tag>`,
    /// untouched: what a browser gives a `<script>`, whose body is not markup.
    pub fn raw_body(&self, i: usize) -> &'a str {
        let Some(tag) = self.tag(i) else { return "" };
        let start = tag.boundaries(self.dom.parser()).0;
        let rest = &self.source[start..];
        // The start tag ends at the first '>' outside quotes.
        let mut quote = None;
        let mut body_start = rest.len();
        for (at, c) in rest.char_indices() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (None, '"' | '\'') => quote = Some(c),
                (None, '>') => {
                    body_start = at + 1;
                    break;
                }
                _ => {}
            }
        }
        let body = &rest[body_start..];
        let close = format!("</{}", tag.name().as_utf8_str().to_ascii_lowercase());
        let end = body.to_ascii_lowercase().find(&close).unwrap_or(body.len());
        &body[..end]
    }
}

impl Complex {
    fn matches(&self, doc: &Document<'_>, node: usize) -> bool {
        doc.spend() && doc.tag(node).is_some_and(|t| self.subject.matches(t)) && self.ancestors_match(doc, node, 0)
    }

    /// Whether `ancestors[step..]` match going up from `node`, backtracking over descendant combinators.
    fn ancestors_match(&self, doc: &Document<'_>, node: usize, step: usize) -> bool {
        let Some((combinator, compound)) = self.ancestors.get(step) else {
            return true;
        };
        let mut up = doc.parent(node);
        while let Some(p) = up {
            if !doc.spend() {
                return false;
            }
            if doc.tag(p).is_some_and(|t| compound.matches(t)) && self.ancestors_match(doc, p, step + 1) {
                return true;
            }
            if *combinator == Combinator::Child {
                return false;
            }
            up = doc.parent(p);
        }
        false
    }
}

impl Compound {
    fn matches(&self, tag: &tl::HTMLTag<'_>) -> bool {
        if let Some(name) = &self.tag {
            if !tag.name().as_utf8_str().eq_ignore_ascii_case(name) {
                return false;
            }
        }
        if let Some(id) = &self.id {
            if attr(tag, "id").flatten().as_deref() != Some(id.as_str()) {
                return false;
            }
        }
        if !self.classes.is_empty() {
            let Some(classes) = attr(tag, "class").flatten() else {
                return false;
            };
            if !self.classes.iter().all(|c| classes.split_ascii_whitespace().any(|have| have == c)) {
                return false;
            }
        }
        // A valueless attribute (`<input disabled>`) has the empty string as its value.
        self.attrs.iter().all(|(name, want)| match (attr(tag, name), want) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(have), Some(want)) => have.as_deref().unwrap_or("") == want,
        })
    }
}

/// Attribute `name` of `tag`, matched case-insensitively: `Some(None)` when present without a value.
pub(crate) fn attr(tag: &tl::HTMLTag<'_>, name: &str) -> Option<Option<String>> {
    tag.attributes().iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.map(|v| v.into_owned()))
}

/// Splits on `sep` outside brackets and quotes.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[') => depth += 1,
            (None, ']') => depth -= 1,
            (None, c) if c == sep && depth == 0 => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_complex(text: &str) -> Result<Complex, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty selector".into());
    }
    let mut compounds = Vec::new();
    let mut combinators = Vec::new();
    let mut rest = text;
    loop {
        let (compound, after) = parse_compound(rest)?;
        compounds.push(compound);
        let trimmed = after.trim_start();
        if trimmed.is_empty() {
            break;
        }
        if let Some(next) = trimmed.strip_prefix('>') {
            combinators.push(Combinator::Child);
            rest = next.trim_start();
            if rest.is_empty() {
                return Err("'>' has nothing after it".into());
            }
        } else if after.len() != trimmed.len() {
            combinators.push(Combinator::Descendant);
            rest = trimmed;
        } else {
            let c = trimmed.chars().next().unwrap_or(' ');
            return Err(format!("unsupported syntax at {c:?}"));
        }
    }
    let subject = compounds.pop().expect("at least one compound was parsed");
    let ancestors = combinators.into_iter().rev().zip(compounds.into_iter().rev()).collect();
    Ok(Complex { subject, ancestors })
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

fn take_ident(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !is_ident(c)).unwrap_or(text.len());
    text.split_at(end)
}

fn parse_compound(text: &str) -> Result<(Compound, &str), String> {
    let mut compound = Compound::default();
    let mut rest = text;
    let mut any = false;
    if let Some(after) = rest.strip_prefix('*') {
        rest = after;
        any = true;
    } else {
        let (name, after) = take_ident(rest);
        if !name.is_empty() {
            compound.tag = Some(name.to_ascii_lowercase());
            rest = after;
            any = true;
        }
    }
    loop {
        let mut chars = rest.chars();
        match chars.next() {
            Some('.') | Some('#') => {
                let (name, after) = take_ident(&rest[1..]);
                if name.is_empty() {
                    return Err(format!("{:?} needs a name after it", &rest[..1]));
                }
                if rest.starts_with('.') {
                    compound.classes.push(name.to_owned());
                } else {
                    compound.id = Some(name.to_owned());
                }
                rest = after;
            }
            Some('[') => {
                let close = rest.find(']').ok_or("'[' is never closed")?;
                let inner = rest[1..close].trim();
                let (name, value) = match inner.split_once('=') {
                    None => (inner, None),
                    Some((n, v)) => {
                        let v = v.trim();
                        let unquoted = v
                            .strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                            .unwrap_or(v);
                        (n.trim(), Some(unquoted.to_owned()))
                    }
                };
                if name.is_empty() || !name.chars().all(is_ident) {
                    return Err(format!(
                        "attribute selector [{inner}] is not supported (only [attr] and [attr=value])"
                    ));
                }
                compound.attrs.push((name.to_ascii_lowercase(), value));
                rest = &rest[close + 1..];
            }
            _ => break,
        }
        any = true;
    }
    if !any {
        let c = rest.chars().next().map_or("end of selector".to_owned(), |c| format!("{c:?}"));
        return Err(format!("expected a tag, '*', '.', '#' or '[' but found {c}"));
    }
    Ok((compound, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<html><body>
        <div id="main" class="box wide">
          <p class="lead">one</p>
          <section><p>two</p><span><p class="lead">three</p></span></section>
        </div>
        <p data-x="1">four</p>
        <a href="/x" rel="next">five</a>
        <img class="main" src="/i.png">
    </body></html>"#;

    fn texts(selector: &str) -> Vec<String> {
        let doc = Document::parse(PAGE);
        let sel = Selector::parse(selector).unwrap();
        sel.select(&doc).into_iter().map(|i| doc.text(i, 1000).trim().to_owned()).collect()
    }

    #[test]
    fn simple_and_compound_selectors() {
        assert_eq!(texts("p"), ["one", "two", "three", "four"]);
        assert_eq!(texts(".lead"), ["one", "three"]);
        assert_eq!(texts("p.lead"), ["one", "three"]);
        assert_eq!(texts("#main.box.wide > p"), ["one"]);
        assert_eq!(texts("[data-x]"), ["four"]);
        assert_eq!(texts("p[data-x=1]"), ["four"]);
        assert_eq!(texts("a[rel=\"next\"]"), ["five"]);
        assert_eq!(texts("a[rel='prev']"), Vec::<String>::new());
        assert_eq!(texts("*.main").len(), 1);
        assert_eq!(texts("P.LEAD"), Vec::<String>::new(), "class names are case-sensitive");
    }

    #[test]
    fn descendant_and_child_combinators() {
        assert_eq!(texts("div p"), ["one", "two", "three"]);
        assert_eq!(texts("div > p"), ["one"]);
        assert_eq!(texts("section > p"), ["two"]);
        assert_eq!(texts("section p"), ["two", "three"]);
        assert_eq!(texts("div section > span > p.lead"), ["three"]);
        assert_eq!(texts("div > span p"), Vec::<String>::new());
        assert_eq!(texts("body  >  p"), ["four"]);
    }

    #[test]
    fn lists_keep_document_order() {
        assert_eq!(texts("a, p.lead"), ["one", "three", "five"]);
        assert_eq!(texts("p[data-x], section > p"), ["two", "four"]);
    }

    #[test]
    fn attribute_names_are_case_insensitive_and_valueless_means_empty() {
        let doc = Document::parse(r#"<span CLASS="price big" ID="p1">9</span><input disabled><p x="">y</p>"#);
        let count = |s: &str| Selector::parse(s).unwrap().select(&doc).len();
        assert_eq!(count(".price.big"), 1);
        assert_eq!(count("#p1"), 1);
        assert_eq!(count("[disabled=\"\"]"), 1);
        assert_eq!(count("[x=\"\"]"), 1);
    }

    #[test]
    fn deep_nesting_is_bounded_not_fatal() {
        let depth = 200_000;
        let html = format!("<h1>{}deep", "<b>".repeat(depth));
        let doc = Document::parse(&html);
        assert_eq!(doc.text(0, 64), "deep");
        let sel = Selector::parse("h1 b b").unwrap();
        let found = sel.select(&doc);
        assert!(!found.is_empty());
        assert!(doc.exhausted(), "a quadratic walk must hit the budget, not run on");
    }

    #[test]
    fn script_bodies_are_raw_text() {
        let html =
            r#"<script type="application/ld+json" data-x='a>b'>{"d": "a<b", "e": "<p>x</p>"}</SCRIPT><p>after</p>"#;
        let doc = Document::parse(html);
        let (i, _) = doc.tags().next().unwrap();
        assert_eq!(doc.raw_body(i), r#"{"d": "a<b", "e": "<p>x</p>"}"#);
    }

    #[test]
    fn invalid_selectors_say_what_is_wrong() {
        for bad in ["", "p,", "div >", "a:hover", "a[href^=x]", "[", ".", "p ~ q", "a + b", "##x"] {
            let err = Selector::parse(bad).unwrap_err();
            assert!(err.to_string().contains("invalid CSS selector"), "{bad}: {err}");
        }
    }
}
