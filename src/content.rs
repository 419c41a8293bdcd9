//! Response bodies turned into text: content-encoding (gzip, deflate) undone
//! within a size limit, and the charset found and decoded; and the headers
//! that describe a body (`Content-Range`).

use encoding_rs::{Encoding, UTF_8};
use std::fmt;
use std::io::Read;

/// Why a body could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContentError {
    /// The decoded body grew past the limit (a "zip bomb" stops here).
    TooLarge(usize),
    /// The body is not valid for its content-encoding.
    Corrupt(String),
    /// The content-encoding is not one fanout decodes.
    Unsupported(String),
}

impl fmt::Display for ContentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContentError::TooLarge(n) => {
                write!(f, "decoded body is larger than the limit of {n} bytes")
            }
            ContentError::Corrupt(m) => write!(f, "body could not be decoded: {m}"),
            ContentError::Unsupported(e) => {
                write!(f, "content-encoding {e:?} is not supported (gzip, deflate and identity are)")
            }
        }
    }
}

/// The media type of a `Content-Type` value, lower case, without parameters.
pub fn media_type(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// Whether a `Content-Type` value names HTML.
pub fn is_html(content_type: &str) -> bool {
    matches!(media_type(content_type).as_str(), "text/html" | "application/xhtml+xml")
}

/// Undoes `Content-Encoding` (a comma-separated list, applied in order), never
/// producing more than `max` bytes.
pub fn decode_encoding(body: Vec<u8>, encoding: Option<&str>, max: usize) -> Result<Vec<u8>, ContentError> {
    let Some(encoding) = encoding else {
        return Ok(body);
    };
    let mut body = body;
    for coding in encoding.split(',').rev().map(|c| c.trim().to_ascii_lowercase()) {
        body = match coding.as_str() {
            "" | "identity" => body,
            "gzip" | "x-gzip" => read_limited(flate2::read::MultiGzDecoder::new(&body[..]), max)?,
            // Servers disagree on whether "deflate" means zlib-wrapped or raw
            // deflate; browsers accept both, and so does fanout.
            "deflate" => match read_limited(flate2::read::ZlibDecoder::new(&body[..]), max) {
                Ok(out) => out,
                Err(ContentError::Corrupt(_)) => read_limited(flate2::read::DeflateDecoder::new(&body[..]), max)?,
                Err(e) => return Err(e),
            },
            other => return Err(ContentError::Unsupported(other.to_owned())),
        };
    }
    Ok(body)
}

fn read_limited(reader: impl Read, max: usize) -> Result<Vec<u8>, ContentError> {
    let mut out = Vec::new();
    reader.take(max as u64 + 1).read_to_end(&mut out).map_err(|e| ContentError::Corrupt(e.to_string()))?;
    if out.len() > max {
        return Err(ContentError::TooLarge(max));
    }
    Ok(out)
}

/// Decodes an HTML body to text, returning it with the name of the encoding used.
///
/// The encoding comes from, in order: a byte order mark, the `charset` of the
/// `Content-Type` header, a `<meta charset>` or `<meta http-equiv>` in the
/// first 1024 bytes, else UTF-8. Labels follow the WHATWG Encoding standard,
/// so `latin1` and `iso-8859-1` mean windows-1252, as in browsers. Bytes that
/// are invalid in the encoding become U+FFFD.
pub fn decode_text(body: &[u8], content_type: Option<&str>) -> (String, &'static str) {
    let encoding = Encoding::for_bom(body)
        .map(|(e, _)| e)
        .or_else(|| content_type.and_then(charset_param).and_then(|l| Encoding::for_label(l.as_bytes())))
        .or_else(|| meta_charset(&body[..body.len().min(1024)]))
        .unwrap_or(UTF_8);
    let (text, used, _) = encoding.decode(body);
    (text.into_owned(), used.name())
}

fn charset_param(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case("charset").then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })
}

/// Finds a charset declared in a `<meta>` tag of an HTML prefix.
fn meta_charset(prefix: &[u8]) -> Option<&'static Encoding> {
    let text = String::from_utf8_lossy(prefix).to_ascii_lowercase();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("<meta") {
        rest = &rest[at + 5..];
        let tag = &rest[..rest.find('>').unwrap_or(rest.len())];
        // Other attributes may mention "charset" too (content="charset tools"): try each.
        for (pos, _) in tag.match_indices("charset") {
            let Some(value) = tag[pos + 7..].trim_start().strip_prefix('=') else {
                continue;
            };
            let value = value.trim_start().trim_start_matches(['"', '\'']);
            let end = value
                .find(|c: char| c == '"' || c == '\'' || c == ';' || c == '/' || c.is_whitespace())
                .unwrap_or(value.len());
            if let Some(encoding) = Encoding::for_label(&value.as_bytes()[..end]) {
                // A <meta> claiming UTF-16 was read as ASCII, so the page is UTF-8 (HTML spec),
                // which is what output_encoding() maps it to.
                return Some(encoding.output_encoding());
            }
        }
    }
    None
}

/// Parses `Content-Range: bytes A-B/TOTAL` (TOTAL may be `*`) into `(A, B, TOTAL)`.
pub fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let (range, total) = value.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?, total.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn content_types() {
        assert!(is_html("text/html; charset=utf-8"));
        assert!(is_html("Application/XHTML+XML"));
        assert!(!is_html("text/plain"));
        assert!(!is_html(""));
        assert_eq!(media_type(" Text/CSV ; header=present"), "text/csv");
    }

    #[test]
    fn gzip_and_deflate_are_undone() {
        let page = b"<title>hello</title>".repeat(10);
        assert_eq!(decode_encoding(gzip(&page), Some("gzip"), 1 << 20).unwrap(), page);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&page).unwrap();
        assert_eq!(decode_encoding(z.finish().unwrap(), Some("deflate"), 1 << 20).unwrap(), page);
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&page).unwrap();
        assert_eq!(decode_encoding(raw.finish().unwrap(), Some("Deflate"), 1 << 20).unwrap(), page);
        assert_eq!(decode_encoding(page.clone(), Some("identity"), 1).unwrap(), page);
        assert_eq!(decode_encoding(page.clone(), None, 1).unwrap(), page);
    }

    #[test]
    fn bombs_corruption_and_unknown_codings_fail() {
        let bomb = gzip(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 5000);
        assert_eq!(decode_encoding(bomb, Some("gzip"), 1000), Err(ContentError::TooLarge(1000)));
        assert!(matches!(decode_encoding(b"not gzip".to_vec(), Some("gzip"), 100), Err(ContentError::Corrupt(_))));
        assert!(matches!(decode_encoding(b"x".to_vec(), Some("br"), 100), Err(ContentError::Unsupported(_))));
    }

    #[test]
    fn charsets_from_header_meta_and_bom() {
        let latin = b"<p>caf\xe9 \x80</p>";
        assert_eq!(decode_text(latin, Some("text/html; charset=ISO-8859-1")), ("<p>café €</p>".into(), "windows-1252"));
        assert_eq!(decode_text(latin, Some("text/html; charset=\"windows-1252\"")).0, "<p>café €</p>");
        let meta = b"<html><head><meta charset='latin1'><title>caf\xe9</title>";
        assert!(decode_text(meta, Some("text/html")).0.contains("café"));
        let http_equiv = b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=windows-1252\"><p>\xe9</p>";
        assert_eq!(decode_text(http_equiv, None).1, "windows-1252");
        assert_eq!(decode_text("<p>é</p>".as_bytes(), None), ("<p>é</p>".into(), "UTF-8"));
        assert_eq!(decode_text(b"\xef\xbb\xbf<p>x</p>", Some("text/html; charset=windows-1252")).1, "UTF-8");
        assert_eq!(decode_text(b"<p>\xff</p>", Some("text/html; charset=nonsense")).0, "<p>\u{fffd}</p>");
        assert_eq!(decode_text(b"<meta charset=utf-16><p>x</p>", None).1, "UTF-8");
    }

    #[test]
    fn content_ranges_parse() {
        assert_eq!(parse_content_range("bytes 0-0/1234"), Some((0, 0, Some(1234))));
        assert_eq!(parse_content_range("bytes 10-19/*"), Some((10, 19, None)));
        assert_eq!(parse_content_range("bytes */1234"), None);
        assert_eq!(parse_content_range("items 0-1/2"), None);
    }
}

/// A source file as it was when a job was planned: every ranged read of it
/// must find it the same, or the job's ranges would not add up to one file.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Its size in bytes: every `Content-Range` total must be this.
    pub size: u64,
    /// Its strong `ETag`, sent as `If-Match`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Its `Last-Modified`, sent as `If-Unmodified-Since` when it has no strong `ETag`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl Pin {
    /// A pin from a response's size and validators (a weak `ETag` is no use: `If-Match` compares strongly).
    pub fn new(size: u64, etag: Option<&str>, last_modified: Option<&str>) -> Pin {
        let etag = etag.map(str::trim).filter(|e| e.starts_with('"') && e.len() >= 2 && e.len() <= 256);
        let last_modified = last_modified.map(str::trim).filter(|m| !m.is_empty() && m.len() <= 64);
        Pin { size, etag: etag.map(str::to_owned), last_modified: last_modified.map(str::to_owned) }
    }

    /// The conditional header a ranged read sends.
    pub fn condition(&self) -> Option<(&'static str, String)> {
        match (&self.etag, &self.last_modified) {
            (Some(etag), _) => Some(("if-match", etag.clone())),
            (None, Some(date)) => Some(("if-unmodified-since", date.clone())),
            (None, None) => None,
        }
    }

    /// Checks the total a `Content-Range` (or a whole answer) gave for the file.
    pub fn check_size(&self, total: Option<u64>) -> Result<(), String> {
        match total {
            Some(t) if t == self.size => Ok(()),
            Some(t) => Err(format!(
                "the source is {t} bytes now but was {} when the job was planned: it changed, or its size was \
                 misreported; nothing of it is read as it stands",
                self.size
            )),
            None => Err("answered without the file's size in Content-Range, so the range cannot be checked".into()),
        }
    }
}

#[cfg(test)]
mod pin_tests {
    use super::Pin;

    #[test]
    fn a_pin_prefers_a_strong_etag_and_checks_the_size() {
        let pin = Pin::new(10, Some("\"abc\""), Some("Mon, 07 Dec 2026 10:00:00 GMT"));
        assert_eq!(pin.condition(), Some(("if-match", "\"abc\"".to_owned())));
        let weak = Pin::new(10, Some("W/\"abc\""), Some("Mon, 07 Dec 2026 10:00:00 GMT"));
        assert_eq!(weak.condition().unwrap().0, "if-unmodified-since");
        assert_eq!(Pin::new(10, None, None).condition(), None);
        assert!(pin.check_size(Some(10)).is_ok());
        assert!(pin.check_size(Some(13)).unwrap_err().contains("13 bytes now but was 10"));
        assert!(pin.check_size(None).is_err());
    }
}
