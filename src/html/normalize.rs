//! A pass before `tl` that tokenizes a page the way the HTML standard does
//! where `tl` differs, and writes it back in a form `tl` reads the same way:
//!
//! * the bodies of raw-text elements (`script`, `style`, `xmp`, `iframe`,
//!   `noembed`, `noframes`, `noscript`) and escapable raw-text elements
//!   (`title`, `textarea`) are text up to their own end tag, never markup, so
//!   their `<` (and, in raw text, `&`) are written as character references;
//! * attribute values are quoted, so an unquoted value ends only at ASCII
//!   whitespace or `>` (`href=https://x.org/a/b#L1` keeps its slashes); the
//!   first of two attributes with the same name wins;
//! * comments that hold a `<` or end in an unusual way, bogus comments
//!   (`<?...>`, `</ 1>`) and declarations other than a doctype are dropped, and
//!   a `<` that starts no tag is text.
//!
//! * end tags are written where `tl` needs them to close what the standard
//!   closes (see [`tree`](super::tree)): `<h1><a id="x"/>A</h1>` closes the `a`.
//!
//! Everything else is left as it is, and a page that needs none of this (most
//! pages) is not copied at all.

use super::tree::{AfterStart, OpenElements};
use memchr::memchr;
use std::borrow::Cow;

/// The rewritten page, built only from the first change on.
struct Edits<'a> {
    src: &'a str,
    out: Option<String>,
    copied: usize,
    /// The attributes of the tag being read, kept between tags so that reading one allocates nothing.
    attrs: Vec<(&'a str, &'a str)>,
    open: OpenElements<'a>,
}

impl<'a> Edits<'a> {
    /// Replaces `src[from..to]` with `with`.
    fn edit(&mut self, from: usize, to: usize, with: &str) {
        let out = self.out.get_or_insert_with(|| String::with_capacity(self.src.len() + self.src.len() / 32));
        out.push_str(&self.src[self.copied..from]);
        out.push_str(with);
        self.copied = to;
    }

    /// Text starts at `at`: the closed formatting elements open again before it.
    fn text(&mut self, at: usize) {
        let mut copies = String::new();
        self.open.text(&mut copies);
        if !copies.is_empty() {
            self.edit(at, at, &copies);
        }
    }

    fn finish(self) -> Cow<'a, str> {
        match self.out {
            None => Cow::Borrowed(self.src),
            Some(mut out) => {
                out.push_str(&self.src[self.copied..]);
                Cow::Owned(out)
            }
        }
    }
}

/// Elements whose body is raw text: no markup, no character references.
const RAW_TEXT: [&str; 7] = ["script", "style", "xmp", "iframe", "noembed", "noframes", "noscript"];
/// Elements whose body is text with character references, but no markup.
const ESCAPABLE_RAW_TEXT: [&str; 2] = ["title", "textarea"];

/// The page, rewritten. See the module documentation.
pub fn normalize(html: &str) -> Cow<'_, str> {
    let b = html.as_bytes();
    let mut edits = Edits { src: html, out: None, copied: 0, attrs: Vec::new(), open: OpenElements::new(html.len()) };
    let mut i = 0;
    while let Some(off) = memchr(b'<', &b[i..]) {
        let lt = i + off;
        if lt > i {
            edits.text(i);
        }
        i = match (b.get(lt + 1), b.get(lt + 2)) {
            (Some(c), _) if c.is_ascii_alphabetic() => start_tag(html, lt, &mut edits),
            (Some(b'/'), Some(c)) if c.is_ascii_alphabetic() => end_tag(html, lt, &mut edits),
            (Some(b'!'), _) if b[lt..].starts_with(b"<!--") => {
                let (end, plain) = comment_end(b, lt + 4);
                if !plain {
                    edits.edit(lt, end, "");
                }
                end
            }
            (Some(b'!' | b'?' | b'/'), _) => {
                let end = memchr(b'>', &b[lt..]).map_or(b.len(), |e| lt + e + 1);
                let doctype = b[lt..end].len() > 9 && b[lt + 2..lt + 9].eq_ignore_ascii_case(b"doctype");
                if !doctype || memchr(b'<', &b[lt + 1..end]).is_some() || !b[..end].ends_with(b">") {
                    edits.edit(lt, end, "");
                }
                end
            }
            _ => {
                edits.text(lt);
                edits.edit(lt, lt + 1, "&lt;");
                lt + 1
            }
        };
    }
    if i < b.len() {
        edits.text(i);
    }
    edits.finish()
}

fn is_space(c: u8) -> bool {
    matches!(c, b'\t' | b'\n' | b'\x0c' | b'\r' | b' ')
}

/// Attributes kept of one tag; a browser keeps more, but no page needs them.
const MAX_ATTRS: usize = 256;

/// A tag as the tokenizer reads it.
struct Tag<'a> {
    name: &'a str,
    self_closing: bool,
    /// Whether `tl` reads the tag as written: every value quoted, no name repeated.
    as_written: bool,
    /// Just past the tag's `>`; `None` when the page ends inside the tag (which then is no tag).
    end: Option<usize>,
}

/// Reads the tag whose name starts at `at`, its attributes (first occurrences, in order) into `attrs`.
fn read_tag<'a>(html: &'a str, at: usize, attrs: &mut Vec<(&'a str, &'a str)>) -> Tag<'a> {
    attrs.clear();
    let b = html.as_bytes();
    let mut i = at;
    while i < b.len() && !is_space(b[i]) && b[i] != b'/' && b[i] != b'>' {
        i += 1;
    }
    let mut tag = Tag { name: &html[at..i], self_closing: false, as_written: true, end: None };
    loop {
        while i < b.len() && (is_space(b[i]) || (b[i] == b'/' && b.get(i + 1) != Some(&b'>'))) {
            i += 1;
        }
        match b.get(i) {
            None => return tag,
            Some(b'>') => {
                tag.end = Some(i + 1);
                return tag;
            }
            Some(b'/') => {
                tag.self_closing = true;
                tag.end = Some(i + 2);
                return tag;
            }
            Some(_) => {}
        }
        // An `=` that starts a name belongs to it.
        let start = i;
        i += 1;
        while i < b.len() && !is_space(b[i]) && !matches!(b[i], b'/' | b'>' | b'=') {
            i += 1;
        }
        let name = &html[start..i];
        let mut j = i;
        while j < b.len() && is_space(b[j]) {
            j += 1;
        }
        let value = if b.get(j) == Some(&b'=') {
            j += 1;
            while j < b.len() && is_space(b[j]) {
                j += 1;
            }
            match b.get(j) {
                Some(&q @ (b'"' | b'\'')) => match memchr(q, &b[j + 1..]) {
                    Some(e) => {
                        i = j + 1 + e + 1;
                        &html[j + 1..j + 1 + e]
                    }
                    None => return tag,
                },
                Some(b'>') | None => {
                    i = j;
                    tag.as_written = false;
                    ""
                }
                Some(_) => {
                    tag.as_written = false;
                    let s = j;
                    while j < b.len() && !is_space(b[j]) && b[j] != b'>' {
                        j += 1;
                    }
                    i = j;
                    &html[s..j]
                }
            }
        } else {
            ""
        };
        // Past MAX_ATTRS a tag is hostile: its further attributes are dropped
        // unread, so that comparing names stays linear in the page.
        if attrs.len() >= MAX_ATTRS {
            tag.as_written = false;
            continue;
        }
        let seen = attrs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        if seen || !plain_name(name) {
            tag.as_written = false;
        }
        if seen {
            continue;
        }
        attrs.push((name, value));
    }
}

/// Whether `tl` can take a name as it is: HTML's own names all pass.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b':' | b'.'))
}

fn start_tag<'a>(html: &'a str, lt: usize, edits: &mut Edits<'a>) -> usize {
    let mut attrs = std::mem::take(&mut edits.attrs);
    let end = write_start_tag(html, lt, edits, &mut attrs);
    edits.attrs = attrs;
    end
}

fn write_start_tag<'a>(html: &'a str, lt: usize, edits: &mut Edits<'a>, attrs: &mut Vec<(&'a str, &'a str)>) -> usize {
    let tag = read_tag(html, lt + 1, attrs);
    let Some(end) = tag.end else {
        edits.edit(lt, html.len(), "");
        return html.len();
    };
    if !plain_name(tag.name) {
        edits.edit(lt, end, "");
        return end;
    }
    let mut closes = String::new();
    edits.open.before_start(tag.name, &mut closes);
    if !closes.is_empty() {
        edits.edit(lt, lt, &closes);
    }
    // tl closes an element only with an end tag of the same case, and reads `<br/>`
    // as no tag: names are lower-cased and the `/` dropped, which HTML ignores on a start tag.
    let lower = tag.name.bytes().any(|c| c.is_ascii_uppercase());
    let mut written_tag = Cow::Borrowed(&html[lt..end]);
    if !tag.as_written || lower || tag.self_closing {
        let mut written = format!("<{}", tag.name.to_ascii_lowercase());
        for (name, value) in attrs.iter().filter(|(n, _)| plain_name(n)) {
            written.push(' ');
            written.push_str(name);
            written.push_str("=\"");
            written.push_str(&value.replace('"', "&quot;"));
            written.push('"');
        }
        written.push('>');
        edits.edit(lt, end, &written);
        written_tag = Cow::Owned(written);
    }
    if edits.open.start(tag.name, written_tag) == AfterStart::Close {
        edits.edit(end, end, &format!("</{}>", tag.name.to_ascii_lowercase()));
    }
    let is = |names: &[&str]| names.iter().any(|n| n.eq_ignore_ascii_case(tag.name));
    let raw = is(&RAW_TEXT);
    if !raw && !is(&ESCAPABLE_RAW_TEXT) {
        return end;
    }
    let body_end = end_of_text(html, end, tag.name);
    for (at, c) in html.as_bytes()[end..body_end].iter().enumerate() {
        match c {
            b'<' => edits.edit(end + at, end + at + 1, "&lt;"),
            b'&' if raw => edits.edit(end + at, end + at + 1, "&amp;"),
            _ => {}
        }
    }
    body_end
}

/// Where the text of element `name` opened at `from` ends: at `</name` followed by
/// whitespace, `/` or `>` (any case), or at the end of the page.
fn end_of_text(html: &str, from: usize, name: &str) -> usize {
    if name.eq_ignore_ascii_case("script") {
        return end_of_script(html.as_bytes(), from);
    }
    let b = html.as_bytes();
    let mut i = from;
    while let Some(off) = memchr(b'<', &b[i..]) {
        let at = i + off;
        let after = at + 2 + name.len();
        if b.get(at + 1) == Some(&b'/')
            && b.get(at + 2..after).is_some_and(|n| n.eq_ignore_ascii_case(name.as_bytes()))
            && b.get(after).is_some_and(|&c| is_space(c) || c == b'/' || c == b'>')
        {
            return at;
        }
        i = at + 1;
    }
    b.len()
}

/// Whether `b[at..]` starts `</script` or `<script` (after `open`) followed by whitespace, `/` or `>`.
fn script_tag(b: &[u8], at: usize, open: &[u8]) -> bool {
    let after = at + open.len() + 6;
    b[at..].starts_with(open)
        && b.get(at + open.len()..after).is_some_and(|n| n.eq_ignore_ascii_case(b"script"))
        && b.get(after).is_some_and(|&c| is_space(c) || c == b'/' || c == b'>')
}

/// Where a script's text ends, with the standard's escaped states: after `<!--`,
/// a `<script` makes the next `</script` part of the text, until `-->`.
fn end_of_script(b: &[u8], from: usize) -> usize {
    let (mut escaped, mut double) = (false, false);
    let mut i = from;
    while i < b.len() {
        let Some(off) = memchr::memchr2(b'<', b'-', &b[i..]) else { break };
        let at = i + off;
        if b[at..].starts_with(b"<!--") && !escaped {
            escaped = true;
            i = at + 4;
        } else if b[at..].starts_with(b"-->") && escaped {
            (escaped, double) = (false, false);
            i = at + 3;
        } else if script_tag(b, at, b"</") {
            if !double {
                return at;
            }
            double = false;
            i = at + 8;
        } else if escaped && !double && script_tag(b, at, b"<") {
            double = true;
            i = at + 7;
        } else {
            i = at + 1;
        }
    }
    b.len()
}

fn end_tag<'a>(html: &'a str, lt: usize, edits: &mut Edits<'a>) -> usize {
    let mut attrs = std::mem::take(&mut edits.attrs);
    let tag = read_tag(html, lt + 2, &mut attrs);
    edits.attrs = attrs;
    let Some(end) = tag.end else {
        edits.edit(lt, html.len(), "");
        return html.len();
    };
    if !plain_name(tag.name) {
        edits.edit(lt, end, "");
    } else if let Some(closes) = edits.open.end(tag.name) {
        edits.edit(lt, end, &closes);
    } else if end != lt + 3 + tag.name.len() || tag.name.bytes().any(|c| c.is_ascii_uppercase()) {
        // Attributes or spaces in an end tag mean nothing: write it bare, in lower case.
        edits.edit(lt, end, &format!("</{}>", tag.name.to_ascii_lowercase()));
    }
    end
}

/// Where a comment whose text starts at `from` ends (`-->`, `--!>`, or `>`
/// right away), and whether it is plain (`-->`, no `<` inside) so that `tl`
/// reads it the same way.
fn comment_end(b: &[u8], from: usize) -> (usize, bool) {
    if b[from..].starts_with(b">") {
        return (from + 1, false);
    }
    if b[from..].starts_with(b"->") {
        return (from + 2, false);
    }
    let mut i = from;
    while let Some(off) = memchr(b'>', &b[i..]) {
        let gt = i + off;
        let text = &b[from..gt];
        if text.ends_with(b"--") {
            let inner = &text[..text.len() - 2];
            let plain = !inner.is_empty()
                && !inner.starts_with(b"-")
                && !inner.starts_with(b">")
                && memchr(b'<', inner).is_none()
                && memchr::memmem::find(inner, b"--").is_none();
            return (gt + 1, plain);
        }
        if text.ends_with(b"--!") {
            return (gt + 1, false);
        }
        i = gt + 1;
    }
    (b.len(), false)
}

/// The text of a raw-text element's body as [`normalize`] wrote it, back as the page had it.
pub fn raw_text(written: &str) -> String {
    written.replace("&lt;", "<").replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_text_is_text() {
        assert_eq!(
            normalize(r#"<script>var a = "<a href='/x'>" && b;</script><h1>x</h1>"#),
            r#"<script>var a = "&lt;a href='/x'>" &amp;&amp; b;</script><h1>x</h1>"#
        );
        assert_eq!(normalize("<title>A <b>&amp; B</b></TITLE >"), "<title>A &lt;b>&amp; B&lt;/b></title>");
        // In a script, `<!-- <script>` makes the next `</script>` text, until `-->`.
        assert_eq!(
            normalize("<script><!-- <script>x</script> --><a href=/in></script>z"),
            "<script>&lt;!-- &lt;script>x&lt;/script> -->&lt;a href=/in></script>z"
        );
        // A page that needs nothing is not copied.
        assert!(matches!(normalize("<p class=\"a\">x &amp; y</p><!-- c -->"), Cow::Borrowed(_)));
        // Only its own end tag, in any case, followed by space, `/` or `>`, ends it.
        assert_eq!(normalize("<style>a</styles>b</STYLE>c"), "<style>a&lt;/styles>b</style>c");
        assert_eq!(normalize("<script>never closed <p>"), "<script>never closed &lt;p>");
    }

    #[test]
    fn attribute_values_are_quoted_as_the_tokenizer_reads_them() {
        assert_eq!(
            normalize("<a href=https://x.org/a/b.js#L1 class = 'c \"d\"' x=1 X=2 hidden>t</a>"),
            r#"<a href="https://x.org/a/b.js#L1" class="c &quot;d&quot;" x="1" hidden="">t</a>"#
        );
        assert_eq!(normalize(r#"<A HREF="/a" Class='b'>x</A>"#), r#"<a HREF="/a" Class="b">x</a>"#);
        assert_eq!(normalize("<img src=a.png/>"), r#"<img src="a.png/">"#);
        assert_eq!(normalize("<br/><p / class=x>"), r#"<br><p class="x">"#);
    }

    #[test]
    fn a_tag_with_countless_attributes_takes_linear_time() {
        let page = format!("<a {}>x</a>", (0..200_000).map(|i| format!("a{i}")).collect::<Vec<_>>().join(" "));
        let started = std::time::Instant::now();
        let out = normalize(&page);
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
        assert_eq!(out.matches("=\"\"").count(), MAX_ATTRS);
    }

    #[test]
    fn comments_doctypes_and_stray_brackets() {
        assert_eq!(
            normalize("<!DOCTYPE html><!-- <a href=/c> -->a<!-->b<!--->c<!-- x --!>d<!-- ok -->e"),
            "<!DOCTYPE html>abcd<!-- ok -->e"
        );
        assert_eq!(normalize("1 < 2 <3 </ 4> <?php x ?>e</>"), "1 &lt; 2 &lt;3  e");
        assert_eq!(normalize("<a href='unterminated"), "");
    }

    #[test]
    fn raw_bodies_read_back_as_written() {
        let script = "if (a < b && c) { x = '&lt;'; }";
        let out = normalize(&format!("<script>{script}</script>")).into_owned();
        let body = out.strip_prefix("<script>").unwrap().strip_suffix("</script>").unwrap();
        assert_eq!(raw_text(body), script);
    }
}
