//! The stack of open elements, kept as the HTML standard's tree builder keeps
//! it, for what `tl` lacks: `tl` closes an element only with an end tag that
//! names the innermost open element, and ignores every other end tag. So in
//! `<h1><a id="x"/>Appendix A</h1><div class="toc">...` (XHTML's self-closed
//! `a`, which HTML keeps open) `tl` never closes the heading, and its text runs
//! on into the table of contents. [`normalize`](super::normalize) asks this
//! module which end tags to write so that `tl` closes what the standard closes:
//!
//! * an end tag closes the innermost open element of its name, with every
//!   element open inside it, when that element is in the tag's scope (`</h2>`
//!   closes any open heading); otherwise it is ignored;
//! * a start tag first closes what the standard has it close: an open `p`
//!   (block elements, headings), a heading that is the current element (another
//!   heading), the previous `li`, `dt` or `dd`, an `option`, a table cell or
//!   row;
//! * `</body>` and `</html>` close nothing else (what follows them still
//!   belongs to the body); a second `<html>`, `<head>` or `<body>` is closed at
//!   once, as are `basefont`, `bgsound` and `frame`, void in HTML but not in
//!   `tl`.
//!
//! Formatting elements (`a`, `b`, `em`, ...) closed by another element's end
//! tag stay active, as the standard keeps them: the next text or phrasing
//! start tag opens a copy of each again (the standard's "reconstruct the
//! active formatting elements"), so `<h1><a id="x"/>A</h1> <h1>B<h2>C</h2>`
//! nests the `h2` in the second heading, inside the copy of the `a`, as
//! browsers do. The adoption agency (overlapping formatting elements) is
//! approximated: a formatting element's end tag does not close across a
//! special element. That gives every element the standard's text, though the
//! tree differs in where the standard moves elements.
//!
//! The stack mirrors `tl`'s exactly: an end tag left as written pops here only
//! when it pops in `tl` (it names the innermost open element). Work is linear
//! in the page: scans down the stack spend from a budget, the copies of
//! formatting elements from another (their bytes), and past [`MAX_DEPTH`] open
//! elements or [`MAX_ACTIVE`] active formatting elements the builder steps
//! aside for good, leaving the rest of the page to `tl` as written.

use std::borrow::Cow;

/// Open elements tracked before the builder steps aside. Browsers stop
/// nesting deeper than 512 in their parsers; pages deeper than this are hostile.
pub const MAX_DEPTH: usize = 1024;

/// Active formatting elements tracked before the builder steps aside (the
/// standard keeps at most three alike, so only hostile pages hold many).
pub const MAX_ACTIVE: usize = 64;

/// What the scope rules need to know of an element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `h1` to `h6`.
    Heading,
    /// Ends every scope: `applet`, `caption`, `html`, `table`, `td`, `th`,
    /// `marquee`, `object`, `template`.
    ScopeEnd,
    /// `button`: ends button scope too.
    Button,
    /// `ol`, `ul`: end list item scope too.
    List,
    /// The rest of the standard's special elements (`div`, `p`, `li`, ...).
    Special,
    /// Everything else: phrasing and formatting elements, unknown elements.
    Ordinary,
}

impl Kind {
    #[inline]
    fn of(name: &[u8]) -> Kind {
        match name {
            b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6" => Kind::Heading,
            b"applet" | b"caption" | b"html" | b"table" | b"td" | b"th" | b"marquee" | b"object" | b"template" => {
                Kind::ScopeEnd
            }
            b"button" => Kind::Button,
            b"ol" | b"ul" => Kind::List,
            b"address" | b"area" | b"article" | b"aside" | b"base" | b"basefont" | b"bgsound" | b"blockquote"
            | b"body" | b"br" | b"center" | b"col" | b"colgroup" | b"dd" | b"details" | b"dir" | b"div" | b"dl"
            | b"dt" | b"embed" | b"fieldset" | b"figcaption" | b"figure" | b"footer" | b"form" | b"frame"
            | b"frameset" | b"head" | b"header" | b"hgroup" | b"hr" | b"iframe" | b"img" | b"input" | b"keygen"
            | b"li" | b"link" | b"listing" | b"main" | b"menu" | b"meta" | b"nav" | b"noembed" | b"noframes"
            | b"noscript" | b"p" | b"param" | b"plaintext" | b"pre" | b"script" | b"search" | b"section"
            | b"select" | b"source" | b"style" | b"summary" | b"tbody" | b"textarea" | b"tfoot" | b"thead"
            | b"title" | b"tr" | b"track" | b"wbr" | b"xmp" => Kind::Special,
            _ => Kind::Ordinary,
        }
    }
}

/// A tag name in ASCII lower case, to match against the names the rules
/// know. None is longer than 12 bytes: a longer name is kept empty, and
/// matches none of them.
#[derive(Clone, Copy, Debug)]
struct Name {
    bytes: [u8; 12],
    len: u8,
}

impl Name {
    #[inline]
    fn of(name: &str) -> Name {
        let mut bytes = [0u8; 12];
        let Some(lower) = bytes.get_mut(..name.len()) else { return Name { bytes, len: 0 } };
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        Name { bytes, len: name.len() as u8 }
    }

    #[inline]
    fn get(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// Start tags that close an open `p` in button scope.
#[inline]
fn closes_p(name: &[u8]) -> bool {
    matches!(
        name,
        b"address"
            | b"article"
            | b"aside"
            | b"blockquote"
            | b"center"
            | b"details"
            | b"dialog"
            | b"dir"
            | b"div"
            | b"dl"
            | b"fieldset"
            | b"figcaption"
            | b"figure"
            | b"footer"
            | b"header"
            | b"hgroup"
            | b"main"
            | b"menu"
            | b"nav"
            | b"ol"
            | b"p"
            | b"search"
            | b"section"
            | b"summary"
            | b"ul"
            | b"h1"
            | b"h2"
            | b"h3"
            | b"h4"
            | b"h5"
            | b"h6"
            | b"pre"
            | b"listing"
            | b"form"
            | b"plaintext"
            | b"hr"
            | b"xmp"
            | b"li"
            | b"dd"
            | b"dt"
    )
}

/// Elements `tl` never pushes on its stack.
#[inline]
fn tl_void(name: &[u8]) -> bool {
    matches!(
        name,
        b"area"
            | b"base"
            | b"br"
            | b"col"
            | b"embed"
            | b"hr"
            | b"img"
            | b"input"
            | b"keygen"
            | b"link"
            | b"meta"
            | b"param"
            | b"source"
            | b"track"
            | b"wbr"
    )
}

/// Elements void in HTML that `tl` keeps open.
#[inline]
fn void_only_in_html(name: &[u8]) -> bool {
    matches!(name, b"basefont" | b"bgsound" | b"frame")
}

/// Table elements whose end tags close across cells: they stop only at table scope's ends.
#[inline]
fn table_part(name: &[u8]) -> bool {
    matches!(name, b"table" | b"tbody" | b"tfoot" | b"thead" | b"tr" | b"td" | b"th" | b"caption")
}

/// The ends of table scope.
#[inline]
fn ends_table_scope(name: &[u8]) -> bool {
    matches!(name, b"html" | b"table" | b"template")
}

/// The formatting elements: closed by another element's end tag, they stay active.
#[inline]
fn formatting(name: &[u8]) -> bool {
    matches!(
        name,
        b"a" | b"b"
            | b"big"
            | b"code"
            | b"em"
            | b"font"
            | b"i"
            | b"nobr"
            | b"s"
            | b"small"
            | b"strike"
            | b"strong"
            | b"tt"
            | b"u"
    )
}

/// Elements whose start tag puts a marker on the list of active formatting
/// elements, and whose end clears the list back to it.
#[inline]
fn marker(name: &[u8]) -> bool {
    matches!(name, b"applet" | b"marquee" | b"object" | b"td" | b"th" | b"caption" | b"template")
}

/// Start tags that are not ordinary yet reopen the active formatting elements first.
#[inline]
fn reconstructs(name: &[u8]) -> bool {
    matches!(
        name,
        b"area"
            | b"br"
            | b"embed"
            | b"img"
            | b"keygen"
            | b"wbr"
            | b"input"
            | b"applet"
            | b"marquee"
            | b"object"
            | b"xmp"
            | b"select"
            | b"option"
            | b"optgroup"
            | b"math"
            | b"svg"
    )
}

/// Elements whose end a `li`, `dd` or `dt` looks past for the one to close.
#[inline]
fn address_div_p(name: &[u8]) -> bool {
    matches!(name, b"address" | b"div" | b"p")
}

#[derive(Clone, Copy, Debug)]
struct Open<'a> {
    name: &'a str,
    lower: Name,
    kind: Kind,
    /// Identifies the element on the list of active formatting elements.
    id: u32,
}

/// An entry of the list of active formatting elements.
#[derive(Clone, Debug)]
enum Active<'a> {
    Marker,
    Element {
        name: &'a str,
        lower: Name,
        /// The start tag as written to `tl`, to open a copy with.
        tag: Cow<'a, str>,
        /// The open element it stands for, while one is open.
        open: Option<u32>,
    },
}

/// What to do with a start tag after it is written.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterStart {
    /// Nothing: the element stays open (or is void in `tl` too).
    Nothing,
    /// Write its end tag right after it: the standard does not keep it open.
    Close,
}

/// The stack of open elements; see the module documentation.
pub struct OpenElements<'a> {
    open: Vec<Open<'a>>,
    /// How many `p` elements are open: most start tags look for one, and most pages have none open.
    open_p: usize,
    active: Vec<Active<'a>>,
    next_id: u32,
    budget: usize,
    copy_budget: usize,
    stepped_aside: bool,
}

impl<'a> OpenElements<'a> {
    /// A builder for a page of `len` bytes.
    pub fn new(len: usize) -> OpenElements<'a> {
        OpenElements {
            open: Vec::new(),
            open_p: 0,
            active: Vec::new(),
            next_id: 0,
            budget: 100_000 + 4 * len,
            copy_budget: 64 * 1024 + len,
            stepped_aside: false,
        }
    }

    /// The index of the innermost open element that `target` accepts, looking
    /// no further down than the first that `stop` rejects (after `target` has
    /// had its say). `None` too when the work budget runs out.
    fn find(&mut self, target: impl Fn(&Open<'a>) -> bool, stop: impl Fn(&Open<'a>) -> bool) -> Option<usize> {
        for i in (0..self.open.len()).rev() {
            if self.budget == 0 {
                self.step_aside();
                return None;
            }
            self.budget -= 1;
            let element = &self.open[i];
            if target(element) {
                return Some(i);
            }
            if stop(element) {
                return None;
            }
        }
        None
    }

    fn step_aside(&mut self) {
        self.stepped_aside = true;
        self.open = Vec::new();
        self.open_p = 0;
        self.active = Vec::new();
    }

    /// Pushes element `name` (`lower` in lower case) on the stack.
    fn push(&mut self, name: &'a str, lower: Name) -> u32 {
        let id = self.next_id;
        self.next_id += 1;
        self.open_p += usize::from(lower.get() == b"p");
        self.open.push(Open { name, lower, kind: Kind::of(lower.get()), id });
        id
    }

    /// Pops the open elements from `at` up, as `tl` pops them.
    fn pop_from(&mut self, at: usize) {
        while self.open.len() > at {
            let Some(element) = self.open.pop() else { break };
            self.open_p -= usize::from(element.lower.get() == b"p");
            if marker(element.lower.get()) {
                self.clear_to_marker();
            } else if formatting(element.lower.get()) {
                let entry = self.active.iter_mut().rev().find_map(|a| match a {
                    Active::Element { open, .. } if *open == Some(element.id) => Some(open),
                    _ => None,
                });
                if let Some(open) = entry {
                    *open = None;
                }
            }
        }
    }

    /// Closes the open elements from `at` up, writing their end tags to `out`, innermost first.
    fn close_from(&mut self, at: usize, out: &mut String) {
        for element in self.open[at..].iter().rev() {
            out.push_str("</");
            out.extend(element.name.chars().map(|c| c.to_ascii_lowercase()));
            out.push('>');
        }
        self.pop_from(at);
    }

    /// Drops the active formatting elements back to the last marker, and it.
    fn clear_to_marker(&mut self) {
        while let Some(entry) = self.active.pop() {
            if matches!(entry, Active::Marker) {
                break;
            }
        }
    }

    /// Opens a copy of each active formatting element that was closed by
    /// another's end tag, writing their start tags to `out`.
    fn reconstruct(&mut self, out: &mut String) {
        let mut first = self.active.len();
        while first > 0 && matches!(self.active[first - 1], Active::Element { open: None, .. }) {
            first -= 1;
        }
        for i in first..self.active.len() {
            let Active::Element { name, lower, tag, .. } = &self.active[i] else { continue };
            let (name, lower, tag) = (*name, *lower, tag.clone());
            if self.copy_budget < tag.len() || self.open.len() >= MAX_DEPTH {
                self.step_aside();
                return;
            }
            self.copy_budget -= tag.len();
            out.push_str(&tag);
            let id = self.push(name, lower);
            if let Active::Element { open, .. } = &mut self.active[i] {
                *open = Some(id);
            }
        }
    }

    /// Text is about to be inserted: the closed formatting elements open again around it.
    pub fn text(&mut self, out: &mut String) {
        if !self.stepped_aside {
            self.reconstruct(out);
        }
    }

    /// Before start tag `name` is written: the end tags of what it closes, to `out`.
    pub fn before_start(&mut self, name: &str, out: &mut String) {
        if self.stepped_aside {
            return;
        }
        let lower = Name::of(name);
        let n = lower.get();
        let find_item = |this: &mut Self, items: fn(&[u8]) -> bool| {
            this.find(|e| items(e.lower.get()), |e| e.kind != Kind::Ordinary && !address_div_p(e.lower.get()))
        };
        let closed = match n {
            b"li" => find_item(self, |n| n == b"li"),
            b"dd" | b"dt" => find_item(self, |n| matches!(n, b"dd" | b"dt")),
            b"td" | b"th" => self.find(|e| matches!(e.lower.get(), b"td" | b"th"), |e| ends_table_scope(e.lower.get())),
            b"tr" => self.find(|e| e.lower.get() == b"tr", |e| ends_table_scope(e.lower.get())),
            b"option" | b"optgroup" => {
                self.open.last().filter(|e| e.lower.get() == b"option").map(|_| self.open.len() - 1)
            }
            _ => None,
        };
        if let Some(at) = closed {
            self.close_from(at, out);
        }
        if self.open_p > 0 && closes_p(n) {
            if let Some(at) = self.find(|e| e.lower.get() == b"p", |e| matches!(e.kind, Kind::ScopeEnd | Kind::Button))
            {
                self.close_from(at, out);
            }
        }
        let kind = Kind::of(n);
        if kind == Kind::Heading && self.open.last().is_some_and(|e| e.kind == Kind::Heading) {
            self.close_from(self.open.len() - 1, out);
        }
        if n == b"a" {
            // An `a` inside an `a` closes the outer one first.
            if let Some(entry) = self.active_entry(b"a") {
                if let Some(closes) = self.adopt(entry, None) {
                    out.push_str(&closes);
                }
                if let Some(entry) = self.active_entry(b"a") {
                    self.active.remove(entry);
                }
            }
        }
        if kind == Kind::Ordinary || reconstructs(n) {
            self.reconstruct(out);
        }
    }

    /// Start tag `name` has been written as `tag`: it opens an element, unless it is void.
    pub fn start(&mut self, name: &'a str, tag: Cow<'a, str>) -> AfterStart {
        let lower = Name::of(name);
        let n = lower.get();
        if self.stepped_aside || tl_void(n) {
            return AfterStart::Nothing;
        }
        if void_only_in_html(n) {
            return AfterStart::Close;
        }
        if matches!(n, b"html" | b"head" | b"body") && self.find(|e| e.lower.get() == n, |_| false).is_some() {
            return AfterStart::Close;
        }
        // The search above may have spent the last of the budget.
        if self.stepped_aside {
            return AfterStart::Nothing;
        }
        if self.open.len() >= MAX_DEPTH || self.active.len() >= MAX_ACTIVE {
            self.step_aside();
            return AfterStart::Nothing;
        }
        let id = self.push(name, lower);
        if formatting(n) {
            // The standard keeps at most three alike (same name and attributes) since the last marker.
            let since = self.active.iter().rposition(|a| matches!(a, Active::Marker)).map_or(0, |m| m + 1);
            let alike: Vec<usize> = (since..self.active.len())
                .filter(|&i| matches!(&self.active[i], Active::Element { tag: t, .. } if *t == tag))
                .collect();
            if alike.len() >= 3 {
                self.active.remove(alike[0]);
            }
            self.active.push(Active::Element { name, lower, tag, open: Some(id) });
        } else if marker(n) {
            self.active.push(Active::Marker);
        }
        AfterStart::Nothing
    }

    /// End tag `name`: `None` to write it as it is (`tl` pops its innermost
    /// element when the names agree, and so does this stack), or the end tags
    /// to write in its place (empty to drop it).
    pub fn end(&mut self, name: &str) -> Option<String> {
        if self.stepped_aside {
            return None;
        }
        let lower = Name::of(name);
        let n = lower.get();
        let innermost = |this: &Self| this.open.last().is_some_and(|e| e.name.eq_ignore_ascii_case(name));
        if matches!(n, b"html" | b"body") {
            // The standard closes nothing here; `tl` pops them when innermost, and so does this stack.
            if innermost(self) {
                self.pop_from(self.open.len() - 1);
            }
            return None;
        }
        if formatting(n) {
            if let Some(entry) = self.active_entry(n) {
                return self.adopt(entry, Some(name));
            }
        }
        let same = |e: &Open<'_>| e.name.eq_ignore_ascii_case(name);
        let found = match Kind::of(n) {
            Kind::Heading => self.find(|e| e.kind == Kind::Heading, |e| e.kind == Kind::ScopeEnd),
            _ if n == b"p" => self.find(same, |e| matches!(e.kind, Kind::ScopeEnd | Kind::Button)),
            _ if n == b"li" => self.find(same, |e| matches!(e.kind, Kind::ScopeEnd | Kind::List)),
            _ if table_part(n) => self.find(same, |e| ends_table_scope(e.lower.get())),
            Kind::Ordinary => self.find(same, |e| e.kind != Kind::Ordinary),
            _ => self.find(same, |e| e.kind == Kind::ScopeEnd),
        };
        match found {
            Some(at) => self.close_to(at, Some(name)),
            None => self.ignore(Some(name)),
        }
    }

    /// Closes the elements from `at` up, for `end_tag` if there is one:
    /// `None` when `tl` does just that with the end tag as written.
    fn close_to(&mut self, at: usize, end_tag: Option<&str>) -> Option<String> {
        if at + 1 == self.open.len() && end_tag.is_some_and(|name| self.open[at].name.eq_ignore_ascii_case(name)) {
            self.pop_from(at);
            return None;
        }
        let mut out = String::new();
        self.close_from(at, &mut out);
        Some(out)
    }

    /// End tag `end_tag` (if any) is ignored: dropped where `tl` would act on it.
    fn ignore(&self, end_tag: Option<&str>) -> Option<String> {
        let name = end_tag?;
        self.open.last().is_some_and(|e| e.name.eq_ignore_ascii_case(name)).then(String::new)
    }

    /// The last active formatting element named `name` (lower case) since the last marker.
    fn active_entry(&self, name: &[u8]) -> Option<usize> {
        for (i, entry) in self.active.iter().enumerate().rev() {
            match entry {
                Active::Marker => return None,
                Active::Element { lower, .. } if lower.get() == name => return Some(i),
                Active::Element { .. } => {}
            }
        }
        None
    }

    /// The end of active formatting element `entry`, by its `end_tag` or by
    /// another of its kind opening, the adoption agency's common cases: one
    /// closed by another's end tag is forgotten; one open in scope with only
    /// phrasing elements inside it is closed with them. One with a special
    /// element inside it stays open (the standard moves the special element
    /// out of it instead).
    fn adopt(&mut self, entry: usize, end_tag: Option<&str>) -> Option<String> {
        let Active::Element { open, .. } = self.active[entry] else { return None };
        let Some(id) = open else {
            self.active.remove(entry);
            return self.ignore(end_tag);
        };
        let mut special_inside = false;
        let mut at = None;
        for k in (0..self.open.len()).rev() {
            if self.budget == 0 {
                self.step_aside();
                return None;
            }
            self.budget -= 1;
            let element = self.open[k];
            if element.id == id {
                at = Some(k);
                break;
            }
            if element.kind == Kind::ScopeEnd {
                break;
            }
            special_inside |= element.kind != Kind::Ordinary;
        }
        match at {
            Some(k) if !special_inside => {
                self.active.remove(entry);
                self.close_to(k, end_tag)
            }
            _ => self.ignore(end_tag),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page as `normalize` would write it, start and end tags only.
    fn run(tags: &[&'static str]) -> String {
        let mut tree = OpenElements::new(1000);
        let mut out = String::new();
        for tag in tags {
            if let Some(name) = tag.strip_prefix('/') {
                match tree.end(name) {
                    Some(written) => out.push_str(&written),
                    None => out.push_str(&format!("</{name}>")),
                }
            } else {
                tree.before_start(tag, &mut out);
                let written = format!("<{tag}>");
                out.push_str(&written);
                if tree.start(tag, Cow::Owned(written)) == AfterStart::Close {
                    out.push_str(&format!("</{tag}>"));
                }
            }
        }
        out
    }

    #[test]
    fn an_end_tag_closes_what_is_open_inside_its_element() {
        assert_eq!(run(&["h1", "a", "/h1", "div"]), "<h1><a></a></h1><div>");
        assert_eq!(run(&["h1", "b", "i", "/h2"]), "<h1><b><i></i></b></h1>");
        assert_eq!(run(&["div", "span", "/div"]), "<div><span></span></div>");
    }

    #[test]
    fn an_end_tag_does_not_reach_past_its_scope() {
        // `</span>` stops at the special `div`; `</a>` at the heading (the adoption agency keeps it open).
        assert_eq!(run(&["span", "div", "/span", "/div"]), "<span><div></span></div>");
        assert_eq!(run(&["b", "h1", "/b", "/h1"]), "<b><h1></b></h1>");
        // `</h1>` does not close across a table cell.
        assert_eq!(run(&["h1", "table", "td", "/h1"]), "<h1><table><td></h1>");
        // But `</tr>` closes the cell it holds.
        assert_eq!(run(&["table", "tr", "td", "/tr"]), "<table><tr><td></td></tr>");
    }

    #[test]
    fn start_tags_close_what_the_standard_closes() {
        assert_eq!(run(&["p", "span", "h1"]), "<p><span></span></p><h1>");
        assert_eq!(run(&["h1", "h2"]), "<h1></h1><h2>");
        assert_eq!(run(&["h1", "b", "h2"]), "<h1><b><h2>");
        assert_eq!(run(&["ul", "li", "li"]), "<ul><li></li><li>");
        assert_eq!(run(&["dl", "dt", "dd"]), "<dl><dt></dt><dd>");
        assert_eq!(run(&["tr", "td", "td", "tr"]), "<tr><td></td><td></td></tr><tr>");
        assert_eq!(run(&["p", "button", "div"]), "<p><button><div>");
    }

    #[test]
    fn body_and_html_end_tags_close_nothing_else() {
        assert_eq!(run(&["html", "body", "div", "/body", "/html", "p"]), "<html><body><div></body></html><p>");
        assert_eq!(run(&["html", "body", "/body", "/html"]), "<html><body></body></html>");
        assert_eq!(
            run(&["html", "body", "html", "basefont", "p"]),
            "<html><body><html></html><basefont></basefont><p>"
        );
    }

    #[test]
    fn deep_pages_step_aside() {
        let mut tree = OpenElements::new(10);
        for _ in 0..MAX_DEPTH {
            tree.start("span", Cow::Borrowed("<span>"));
        }
        assert!(!tree.stepped_aside);
        tree.start("span", Cow::Borrowed("<span>"));
        assert!(tree.stepped_aside);
        assert_eq!(tree.end("div"), None);
        let mut out = String::new();
        tree.before_start("p", &mut out);
        assert_eq!(out, "");
    }
}
