//! CSS selectors over `tl`'s document tree.
//!
//! `tl` 0.7.8's own matcher never matches descendant or child combinators
//! (its issue 77), so fanout parses selectors itself and matches them against
//! `tl`'s nodes, walking parent and sibling links it computes once per
//! document.
//!
//! Supported (Selectors Level 4, as browsers read them in HTML documents):
//! type (`div`) and universal (`*`) selectors; `.class`, `#id`; attribute
//! selectors `[a]`, `[a=v]`, `[a~=v]`, `[a|=v]`, `[a^=v]`, `[a$=v]`, `[a*=v]`
//! (value bare or quoted, an `i` flag for ASCII case-insensitive values);
//! `:first-child`, `:last-child`, `:only-child`, `:first-of-type`,
//! `:last-of-type`, `:only-of-type`, `:nth-child()`, `:nth-last-child()`,
//! `:nth-of-type()`, `:nth-last-of-type()` (`odd`, `even`, `An+B`), `:root`,
//! `:empty`, `:not()` and `:has()` (selector lists; `:has()` takes relative
//! selectors such as `> img` or `+ p`); the combinators descendant (`A B`),
//! child (`A > B`), next-sibling (`A + B`) and subsequent-sibling (`A ~ B`);
//! lists (`A, B`). Other pseudo-classes (`:hover`, ...) and pseudo-elements
//! are refused by name.

use std::cell::{Cell, OnceCell};
use std::fmt;

/// A parsed selector list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selector {
    alternatives: Vec<Complex>,
}

/// Compounds joined by combinators, stored right to left: `a > b c` is
/// `c` with `[(Descendant, b), (Child, a)]`. In `:has()`, `lead` is how the
/// leftmost compound relates to the element being tested (`:has(> a)`).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Complex {
    subject: Compound,
    steps: Vec<(Combinator, Compound)>,
    lead: Combinator,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Combinator {
    Descendant,
    Child,
    NextSibling,
    SubsequentSibling,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Compound {
    tag: Option<String>,
    ids: Vec<String>,
    classes: Vec<String>,
    attrs: Vec<Attribute>,
    pseudos: Vec<Pseudo>,
}

/// An attribute selector: `[name op "value" i]`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Attribute {
    name: String,
    op: AttrOp,
    value: String,
    ignore_case: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AttrOp {
    /// `[a]`
    Exists,
    /// `[a=v]`
    Equals,
    /// `[a~=v]`: one of its whitespace-separated words.
    Includes,
    /// `[a|=v]`: `v` or starts with `v-`.
    DashMatch,
    /// `[a^=v]`
    Prefix,
    /// `[a$=v]`
    Suffix,
    /// `[a*=v]`
    Substring,
}

/// A structural or logical pseudo-class.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Pseudo {
    /// `:nth-child(An+B)` and its kin: the element's position among its
    /// element siblings (of its type with `of_type`), counted from the end with `from_end`.
    Nth {
        a: i64,
        b: i64,
        of_type: bool,
        from_end: bool,
    },
    /// `:only-child`, `:only-of-type`.
    Only {
        of_type: bool,
    },
    Root,
    Empty,
    Not(Vec<Complex>),
    Has(Vec<Complex>),
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

/// How deep `:not()` and `:has()` may nest: a selector is caller-supplied, and parsing recurses.
const MAX_NESTING: usize = 8;

impl Selector {
    /// Parses a selector list.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let err = |reason: String| SelectorError { selector: text.to_owned(), reason };
        let alternatives = parse_list(text, Nesting::Top).map_err(err)?;
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
            if self.alternatives.iter().any(|c| c.matches(doc, i, None)) {
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
    /// Computed when a selector first needs them: most extractions do not.
    siblings: OnceCell<Siblings>,
    budget: Cell<u64>,
}

/// Each element's place among its element siblings.
struct Siblings {
    /// The previous and next element siblings ([`NONE`] when there is none).
    prev: Vec<u32>,
    next: Vec<u32>,
    /// The position among its element siblings, from 1, and how many they are.
    position: Vec<u32>,
    count: Vec<u32>,
}

const NONE: u32 = u32::MAX;

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
        let mut parent = vec![NONE; nodes.len()];
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
        Document { source, dom, parent, last, siblings: OnceCell::new(), budget: Cell::new(WORK_BUDGET) }
    }

    /// The element siblings: the last element child seen of each parent (the
    /// roots' shared by index `len`), in document order.
    fn siblings(&self) -> &Siblings {
        self.siblings.get_or_init(|| {
            let nodes = self.dom.nodes();
            let n = nodes.len();
            let (mut prev, mut next, mut position, mut count) = (vec![NONE; n], vec![NONE; n], vec![0; n], vec![0; n]);
            let mut last_child = vec![NONE; n + 1];
            let group = |i: usize| match self.parent[i] {
                NONE => n,
                p => p as usize,
            };
            for i in (0..n).filter(|&i| nodes[i].as_tag().is_some()) {
                let before = last_child[group(i)];
                if before != NONE {
                    prev[i] = before;
                    next[before as usize] = i as u32;
                    position[i] = position[before as usize] + 1;
                } else {
                    position[i] = 1;
                }
                last_child[group(i)] = i as u32;
            }
            for i in (0..n).filter(|&i| nodes[i].as_tag().is_some()) {
                count[i] = position[last_child[group(i)] as usize];
            }
            Siblings { prev, next, position, count }
        })
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
            NONE => None,
            p => Some(p as usize),
        }
    }

    /// Element `i`'s position (from 1) among its element siblings, or among
    /// those with its name with `of_type`, counted from the last with
    /// `from_end`; `None` when the work budget runs out counting.
    fn index(&self, i: usize, of_type: bool, from_end: bool) -> Option<i64> {
        if !of_type {
            let siblings = self.siblings();
            let position = siblings.position[i] as i64;
            return Some(if from_end { siblings.count[i] as i64 - position + 1 } else { position });
        }
        let name = self.tag(i)?.name().as_utf8_str();
        let step = if from_end { &self.siblings().next } else { &self.siblings().prev };
        let (mut index, mut at) = (1, link(step[i]));
        while let Some(n) = at {
            if !self.spend() {
                return None;
            }
            if self.tag(n).is_some_and(|t| t.name().as_utf8_str().eq_ignore_ascii_case(&name)) {
                index += 1;
            }
            at = link(step[n]);
        }
        Some(index)
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

/// `Some(i)` unless `i` is [`NONE`].
fn link(i: u32) -> Option<usize> {
    (i != NONE).then_some(i as usize)
}

impl Complex {
    /// Whether `node` matches, and, for a relative selector of `:has()`, whether its
    /// leftmost compound stands in `lead` relation to `anchor`.
    fn matches(&self, doc: &Document<'_>, node: usize, anchor: Option<usize>) -> bool {
        doc.spend() && self.subject.matches(doc, node) && self.rest_match(doc, node, 0, anchor)
    }

    /// Whether `steps[step..]` match going left from `node`, backtracking over
    /// the descendant and subsequent-sibling combinators.
    fn rest_match(&self, doc: &Document<'_>, node: usize, step: usize, anchor: Option<usize>) -> bool {
        let Some((combinator, compound)) = self.steps.get(step) else {
            return anchor.is_none_or(|anchor| related(doc, self.lead, node, |n| n == anchor));
        };
        let next = |n: usize| compound.matches(doc, n) && self.rest_match(doc, n, step + 1, anchor);
        related(doc, *combinator, node, next)
    }
}

/// Whether some element in `combinator` relation to the left of `node` (an
/// ancestor, the parent, the previous sibling, a previous sibling) satisfies `test`.
fn related(doc: &Document<'_>, combinator: Combinator, node: usize, mut test: impl FnMut(usize) -> bool) -> bool {
    let up = matches!(combinator, Combinator::Descendant | Combinator::Child);
    let once = matches!(combinator, Combinator::Child | Combinator::NextSibling);
    let walk = |n: usize| if up { doc.parent(n) } else { link(doc.siblings().prev[n]) };
    let mut at = walk(node);
    while let Some(n) = at {
        if !doc.spend() {
            return false;
        }
        if doc.tag(n).is_some() && test(n) {
            return true;
        }
        if once {
            return false;
        }
        at = walk(n);
    }
    false
}

impl Compound {
    fn matches(&self, doc: &Document<'_>, node: usize) -> bool {
        let Some(tag) = doc.tag(node) else { return false };
        if let Some(name) = &self.tag {
            if !tag.name().as_utf8_str().eq_ignore_ascii_case(name) {
                return false;
            }
        }
        if !self.ids.is_empty() {
            let id = attr(tag, "id").flatten();
            if !self.ids.iter().all(|want| id.as_deref() == Some(want.as_str())) {
                return false;
            }
        }
        if !self.classes.is_empty() {
            let Some(classes) = attr(tag, "class").flatten() else {
                return false;
            };
            if !self.classes.iter().all(|c| classes.split(is_space).any(|have| have == c)) {
                return false;
            }
        }
        self.attrs.iter().all(|a| a.matches(tag)) && self.pseudos.iter().all(|p| p.matches(doc, node))
    }
}

/// ASCII whitespace, as HTML splits attribute values into words.
fn is_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0C' | '\r' | ' ')
}

impl Attribute {
    fn matches(&self, tag: &tl::HTMLTag<'_>) -> bool {
        // A valueless attribute (`<input disabled>`) has the empty string as its value.
        let Some(have) = attr(tag, &self.name) else { return false };
        let mut have = have.unwrap_or_default();
        // `value` is lower-cased when the selector is parsed if its case is ignored.
        if self.ignore_case {
            have.make_ascii_lowercase();
        }
        let want = self.value.as_str();
        // The operators that test for a piece of the value match nothing with an empty one.
        match self.op {
            AttrOp::Exists => true,
            AttrOp::Equals => have == want,
            AttrOp::Includes => !want.is_empty() && !want.contains(is_space) && have.split(is_space).any(|w| w == want),
            AttrOp::DashMatch => have == want || have.strip_prefix(want).is_some_and(|rest| rest.starts_with('-')),
            AttrOp::Prefix => !want.is_empty() && have.starts_with(want),
            AttrOp::Suffix => !want.is_empty() && have.ends_with(want),
            AttrOp::Substring => !want.is_empty() && have.contains(want),
        }
    }
}

impl Pseudo {
    fn matches(&self, doc: &Document<'_>, node: usize) -> bool {
        match self {
            Pseudo::Nth { a, b, of_type, from_end } => {
                let Some(index) = doc.index(node, *of_type, *from_end) else { return false };
                nth(*a, *b, index)
            }
            Pseudo::Only { of_type } => {
                doc.index(node, *of_type, false) == Some(1) && doc.index(node, *of_type, true) == Some(1)
            }
            Pseudo::Root => doc.parent(node).is_none(),
            Pseudo::Empty => (node + 1..=doc.last[node] as usize).all(|n| match &doc.dom.nodes()[n] {
                tl::Node::Raw(text) => text.as_bytes().is_empty(),
                tl::Node::Comment(_) => true,
                tl::Node::Tag(_) => false,
            }),
            Pseudo::Not(list) => !list.iter().any(|c| c.matches(doc, node, None)),
            Pseudo::Has(list) => list.iter().any(|c| {
                // Candidates: the subtree for descendant and child, the later siblings' subtrees for the others.
                let candidates = match c.lead {
                    Combinator::Descendant | Combinator::Child => node + 1..=doc.last[node] as usize,
                    Combinator::NextSibling | Combinator::SubsequentSibling => {
                        let end = doc.parent(node).map_or(doc.last.len().saturating_sub(1), |p| doc.last[p] as usize);
                        doc.last[node] as usize + 1..=end
                    }
                };
                candidates.into_iter().any(|n| !doc.exhausted() && c.matches(doc, n, Some(node)))
            }),
        }
    }
}

/// Whether 1-based `index` is `a*n + b` for some `n >= 0`.
fn nth(a: i64, b: i64, index: i64) -> bool {
    match a {
        0 => index == b,
        _ => {
            let diff = index - b;
            diff % a == 0 && diff / a >= 0
        }
    }
}

/// Attribute `name` of `tag`, matched case-insensitively: `Some(None)` when present without a value.
pub(crate) fn attr(tag: &tl::HTMLTag<'_>, name: &str) -> Option<Option<String>> {
    tag.attributes().iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.map(|v| v.into_owned()))
}

/// Attributes whose values HTML documents match ASCII case-insensitively
/// unless the selector says `s` (the HTML standard, "Case-sensitivity of selectors").
const CASE_INSENSITIVE_IN_HTML: &[&str] = &[
    "accept",
    "accept-charset",
    "align",
    "alink",
    "axis",
    "bgcolor",
    "charset",
    "checked",
    "clear",
    "codetype",
    "color",
    "compact",
    "declare",
    "defer",
    "dir",
    "direction",
    "disabled",
    "enctype",
    "face",
    "frame",
    "hreflang",
    "http-equiv",
    "lang",
    "language",
    "link",
    "media",
    "method",
    "multiple",
    "nohref",
    "noresize",
    "noshade",
    "nowrap",
    "readonly",
    "rel",
    "rev",
    "rules",
    "scope",
    "scrolling",
    "selected",
    "shape",
    "target",
    "text",
    "type",
    "valign",
    "valuetype",
    "vlink",
];

/// Where a selector list is being parsed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nesting {
    Top,
    /// Inside `:not()` or `:has()`, `depth` deep; `in_has` when some enclosing one is `:has()`.
    Inner {
        depth: usize,
        in_has: bool,
    },
}

impl Nesting {
    fn depth(self) -> usize {
        match self {
            Nesting::Top => 0,
            Nesting::Inner { depth, .. } => depth,
        }
    }

    fn in_has(self) -> bool {
        matches!(self, Nesting::Inner { in_has: true, .. })
    }
}

/// Splits on `sep` outside brackets, parentheses and quotes.
fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut quote, mut start) = (0i32, None, 0);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ']' | ')') => depth -= 1,
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

/// A comma-separated list of complex selectors; relative ones inside `:has()`.
fn parse_list(text: &str, nesting: Nesting) -> Result<Vec<Complex>, String> {
    split_top_level(text, ',').into_iter().map(|part| parse_complex(part, nesting, false)).collect()
}

/// Takes a combinator from the start of `text` (which follows a compound or
/// starts a relative selector): `None` when `text` holds nothing more.
fn take_combinator(text: &str) -> Option<(Combinator, &str)> {
    let trimmed = text.trim_start_matches(is_space);
    let combinator = match trimmed.chars().next()? {
        '>' => Combinator::Child,
        '+' => Combinator::NextSibling,
        '~' => Combinator::SubsequentSibling,
        _ if trimmed.len() != text.len() => return Some((Combinator::Descendant, trimmed)),
        _ => return Some((Combinator::Descendant, text)),
    };
    Some((combinator, trimmed[1..].trim_start_matches(is_space)))
}

fn parse_complex(text: &str, nesting: Nesting, relative: bool) -> Result<Complex, String> {
    let text = text.trim_matches(is_space);
    if text.is_empty() {
        return Err("empty selector".into());
    }
    let mut rest = text;
    let mut lead = Combinator::Descendant;
    if relative {
        if let Some((combinator, after)) = take_combinator(rest) {
            if combinator != Combinator::Descendant {
                lead = combinator;
                rest = after;
            }
        }
    }
    let mut compounds = Vec::new();
    let mut combinators = Vec::new();
    loop {
        let (compound, after) = parse_compound(rest, nesting)?;
        compounds.push(compound);
        let Some((combinator, next)) = take_combinator(after) else { break };
        if next.len() == after.len() {
            let c = after.chars().next().unwrap_or(' ');
            return Err(format!("unsupported syntax at {c:?}"));
        }
        if next.is_empty() {
            return Err(format!("{:?} has nothing after it", after.trim_matches(is_space)));
        }
        combinators.push(combinator);
        rest = next;
    }
    let subject = compounds.pop().expect("at least one compound was parsed");
    let steps = combinators.into_iter().rev().zip(compounds.into_iter().rev()).collect();
    Ok(Complex { subject, steps, lead })
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

fn take_ident(text: &str) -> (&str, &str) {
    let end = text.find(|c: char| !is_ident(c)).unwrap_or(text.len());
    text.split_at(end)
}

fn parse_compound(text: &str, nesting: Nesting) -> Result<(Compound, &str), String> {
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
        match rest.chars().next() {
            Some('.') | Some('#') => {
                let (name, after) = take_ident(&rest[1..]);
                if name.is_empty() {
                    return Err(format!("{:?} needs a name after it", &rest[..1]));
                }
                if rest.starts_with('.') {
                    compound.classes.push(name.to_owned());
                } else {
                    compound.ids.push(name.to_owned());
                }
                rest = after;
            }
            Some('[') => {
                let close = closing(rest, '[', ']').ok_or("'[' is never closed")?;
                compound.attrs.push(parse_attribute(&rest[1..close])?);
                rest = &rest[close + 1..];
            }
            Some(':') => {
                let (pseudo, after) = parse_pseudo(&rest[1..], nesting)?;
                compound.pseudos.push(pseudo);
                rest = after;
            }
            _ => break,
        }
        any = true;
    }
    if !any {
        let c = rest.chars().next().map_or("end of selector".to_owned(), |c| format!("{c:?}"));
        return Err(format!("expected a tag, '*', '.', '#', '[' or ':' but found {c}"));
    }
    Ok((compound, rest))
}

/// The index of the `close` that ends the `open` at the start of `text`, outside quotes.
fn closing(text: &str, open: char, close: char) -> Option<usize> {
    let (mut depth, mut quote) = (0, None);
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, c) if c == open => depth += 1,
            (None, c) if c == close => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// The inside of `[...]`.
fn parse_attribute(inner: &str) -> Result<Attribute, String> {
    let text = inner.trim_matches(is_space);
    let (name, rest) = take_ident(text);
    if name.is_empty() {
        return Err(format!("attribute selector [{inner}] names no attribute"));
    }
    let name = name.to_ascii_lowercase();
    let rest = rest.trim_start_matches(is_space);
    if rest.is_empty() {
        return Ok(Attribute { name, op: AttrOp::Exists, value: String::new(), ignore_case: false });
    }
    let ops = [
        ("=", AttrOp::Equals),
        ("~=", AttrOp::Includes),
        ("|=", AttrOp::DashMatch),
        ("^=", AttrOp::Prefix),
        ("$=", AttrOp::Suffix),
        ("*=", AttrOp::Substring),
    ];
    let Some((op, rest)) = ops.iter().find_map(|(text, op)| Some((*op, rest.strip_prefix(text)?))) else {
        return Err(format!("attribute selector [{inner}]: expected =, ~=, |=, ^=, $= or *= after {name:?}"));
    };
    let rest = rest.trim_start_matches(is_space);
    let (value, rest) = match rest.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let end = rest[1..].find(q).ok_or_else(|| format!("attribute selector [{inner}]: unclosed {q}"))?;
            (rest[1..1 + end].to_owned(), &rest[end + 2..])
        }
        _ => {
            let (value, rest) = take_ident(rest);
            if value.is_empty() {
                return Err(format!("attribute selector [{inner}]: the value must be a name or quoted"));
            }
            (value.to_owned(), rest)
        }
    };
    let ignore_case = match rest.trim_matches(is_space) {
        "" => CASE_INSENSITIVE_IN_HTML.contains(&name.as_str()),
        "s" | "S" => false,
        "i" | "I" => true,
        other => return Err(format!("attribute selector [{inner}]: unexpected {other:?} after the value")),
    };
    let value = if ignore_case { value.to_ascii_lowercase() } else { value };
    Ok(Attribute { name, op, value, ignore_case })
}

/// A pseudo-class after its `:`, and what follows it.
fn parse_pseudo(text: &str, nesting: Nesting) -> Result<(Pseudo, &str), String> {
    if text.starts_with(':') {
        return Err("pseudo-elements (::name) select no element".into());
    }
    let (name, rest) = take_ident(text);
    let lower = name.to_ascii_lowercase();
    let simple = |pseudo| Ok((pseudo, rest));
    let nth = |of_type, from_end| move |(a, b)| Pseudo::Nth { a, b, of_type, from_end };
    match lower.as_str() {
        "first-child" => return simple(Pseudo::Nth { a: 0, b: 1, of_type: false, from_end: false }),
        "last-child" => return simple(Pseudo::Nth { a: 0, b: 1, of_type: false, from_end: true }),
        "first-of-type" => return simple(Pseudo::Nth { a: 0, b: 1, of_type: true, from_end: false }),
        "last-of-type" => return simple(Pseudo::Nth { a: 0, b: 1, of_type: true, from_end: true }),
        "only-child" => return simple(Pseudo::Only { of_type: false }),
        "only-of-type" => return simple(Pseudo::Only { of_type: true }),
        "root" => return simple(Pseudo::Root),
        "empty" => return simple(Pseudo::Empty),
        _ => {}
    }
    let arguments = |rest: &'_ str| -> Result<(String, usize), String> {
        let close = closing(rest, '(', ')').ok_or_else(|| format!(":{name}( is never closed"))?;
        Ok((rest[1..close].to_owned(), close + 1))
    };
    let takes_arguments = rest.starts_with('(');
    let known = ["nth-child", "nth-last-child", "nth-of-type", "nth-last-of-type", "not", "has"];
    if !known.contains(&lower.as_str()) {
        return Err(if name.is_empty() {
            "':' needs a pseudo-class name after it".into()
        } else {
            format!(":{name} is not supported (only structural pseudo-classes, :not() and :has())")
        });
    }
    if !takes_arguments {
        return Err(format!(":{name} needs arguments in parentheses"));
    }
    let (inner, used) = arguments(rest)?;
    let rest = &rest[used..];
    let inner_nesting = |in_has: bool| {
        let depth = nesting.depth() + 1;
        if depth > MAX_NESTING {
            return Err(format!(":not() and :has() nest more than {MAX_NESTING} deep"));
        }
        Ok(Nesting::Inner { depth, in_has: in_has || nesting.in_has() })
    };
    let pseudo = match lower.as_str() {
        "nth-child" => parse_nth(&inner).map(nth(false, false))?,
        "nth-last-child" => parse_nth(&inner).map(nth(false, true))?,
        "nth-of-type" => parse_nth(&inner).map(nth(true, false))?,
        "nth-last-of-type" => parse_nth(&inner).map(nth(true, true))?,
        "not" => Pseudo::Not(parse_list(&inner, inner_nesting(false)?)?),
        _ => {
            if nesting.in_has() {
                return Err(":has() cannot hold another :has()".into());
            }
            let nesting = inner_nesting(true)?;
            let list = split_top_level(&inner, ',').into_iter().map(|part| parse_complex(part, nesting, true));
            Pseudo::Has(list.collect::<Result<_, _>>()?)
        }
    };
    Ok((pseudo, rest))
}

/// An `An+B` argument: `odd`, `even`, `7`, `-n+3`, `2n + 1`, ... as `(A, B)`.
fn parse_nth(text: &str) -> Result<(i64, i64), String> {
    let compact: String = text.chars().filter(|c| !is_space(*c)).collect::<String>().to_ascii_lowercase();
    let bad = || format!("{:?} is not an An+B argument (odd, even, 3, 2n+1, -n+3)", text.trim());
    let number = |s: &str| -> Result<i64, String> {
        if s.is_empty() || !s.trim_start_matches(['+', '-']).bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<i64>().ok().filter(|v| v.abs() <= 1 << 31).ok_or_else(bad)
    };
    match compact.as_str() {
        "odd" => return Ok((2, 1)),
        "even" => return Ok((2, 0)),
        _ => {}
    }
    let Some(n_at) = compact.find('n') else { return Ok((0, number(&compact)?)) };
    let a = match &compact[..n_at] {
        "" | "+" => 1,
        "-" => -1,
        a => number(a)?,
    };
    let b = match &compact[n_at + 1..] {
        "" => 0,
        b if b.starts_with(['+', '-']) => number(b)?,
        _ => return Err(bad()),
    };
    Ok((a, b))
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
        let deep = format!("{}a{}", ":not(".repeat(MAX_NESTING + 1), ")".repeat(MAX_NESTING + 1));
        for (bad, says) in [
            ("", "empty selector"),
            ("p,", "empty selector"),
            ("div >", "nothing after it"),
            ("a + ", "nothing after it"),
            ("a:hover", ":hover is not supported"),
            ("a::before", "pseudo-elements"),
            ("[", "never closed"),
            ("[=x]", "names no attribute"),
            ("[a==x]", "must be a name or quoted"),
            ("[a=x y]", "unexpected \"y\""),
            (".", "needs a name"),
            ("##x", "needs a name"),
            (":nth-child(x)", "not an An+B argument"),
            (":nth-child(2n+)", "not an An+B argument"),
            (":nth-child", "needs arguments"),
            (":not(a", "never closed"),
            (":has(:has(a))", "cannot hold another :has()"),
            (&deep, "nest more than"),
        ] {
            let err = Selector::parse(bad).unwrap_err().to_string();
            assert!(err.contains("invalid CSS selector") && err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn attribute_operators() {
        let doc = Document::parse(concat!(
            r#"<a href="https://x.org/a.pdf" lang="en-US" rel="nofollow  external" title="A Guide">1</a>"#,
            r#"<a href="/b.html" lang="en" rel="next" title="">2</a><a lang="fr">3</a>"#
        ));
        let texts = |s: &str| -> Vec<String> {
            let sel = Selector::parse(s).unwrap();
            sel.select(&doc).into_iter().map(|i| doc.text(i, 100)).collect()
        };
        assert_eq!(texts("a[href^=https]"), ["1"]);
        assert_eq!(texts("a[href$='.html']"), ["2"]);
        assert_eq!(texts("a[href*=\"x.org\"]"), ["1"]);
        assert_eq!(texts("[rel~=external]"), ["1"]);
        assert_eq!(texts("[rel~=\"nofollow external\"]"), Vec::<String>::new());
        assert_eq!(texts("[lang|=en]"), ["1", "2"]);
        assert_eq!(texts("[title^='']"), Vec::<String>::new(), "an empty piece matches nothing");
        assert_eq!(texts("[title=\"a guide\" i]"), ["1"]);
        assert_eq!(texts("[title=\"a guide\"]"), Vec::<String>::new());
    }

    #[test]
    fn structural_pseudo_classes_and_sibling_combinators() {
        let doc = Document::parse(concat!(
            "<ul><li>1</li><li>2</li><p>x</p><li>3</li><li>4</li><li>5</li></ul>",
            "<div><span>only</span></div><div><b></b><i>i</i></div>"
        ));
        let texts = |s: &str| -> Vec<String> {
            let sel = Selector::parse(s).unwrap();
            sel.select(&doc).into_iter().map(|i| doc.text(i, 100)).collect()
        };
        assert_eq!(texts("li:first-child"), ["1"]);
        assert_eq!(texts("li:last-child"), ["5"]);
        assert_eq!(texts("li:nth-child(2n+1)"), ["1", "4"]);
        assert_eq!(texts("li:nth-child(odd)"), ["1", "4"]);
        assert_eq!(texts("li:nth-child(-n + 3)"), ["1", "2"]);
        assert_eq!(texts("li:nth-of-type(3)"), ["3"]);
        assert_eq!(texts("li:nth-last-of-type(even)"), ["2", "4"]);
        assert_eq!(texts("li:nth-last-child(1)"), ["5"]);
        assert_eq!(texts("ul > :only-of-type"), ["x"]);
        assert_eq!(texts("span:only-child"), ["only"]);
        assert_eq!(texts("li + li"), ["2", "4", "5"]);
        assert_eq!(texts("p ~ li"), ["3", "4", "5"]);
        assert_eq!(texts("li:not(:first-child, :last-child)"), ["2", "3", "4"]);
        assert_eq!(texts("div:has(> span)"), ["only"]);
        assert_eq!(texts("li:has(+ p)"), ["2"]);
        assert_eq!(texts("div:has(b:empty) i"), ["i"]);
        assert_eq!(texts(":root").len(), 3, "each top-level element of a fragment is a root");
    }
}
