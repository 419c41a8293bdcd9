//! How a job is split into worker invocations.

use std::ops::Range;

/// Splits `len` items into consecutive batches of at most `size` items.
pub fn batches(len: usize, size: usize) -> Vec<Range<usize>> {
    let size = size.max(1);
    (0..len).step_by(size).map(|start| start..(start + size).min(len)).collect()
}

/// The byte ranges of a file of `len` bytes, `size` bytes each (the last one shorter).
///
/// An iterator, not a list: a very large file planned in small ranges must not
/// hold its whole plan.
pub fn byte_ranges(len: u64, size: u64) -> impl Iterator<Item = Range<u64>> {
    let size = size.max(1);
    (0..len.div_ceil(size)).map(move |i| i * size..(i + 1).saturating_mul(size).min(len))
}

/// The longest line a URL list may have.
pub const MAX_URL_LINE_BYTES: usize = 64 * 1024;

/// The URL on a line of a URL list (one URL a line), trimmed; `None` for a
/// blank line or a `#` comment, which a list may hold anywhere.
pub fn url_of_line(line: &[u8]) -> Option<String> {
    let url = String::from_utf8_lossy(line).trim().to_owned();
    (!url.is_empty() && !url.starts_with('#')).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_item_once() {
        assert_eq!(batches(0, 3), Vec::<Range<usize>>::new());
        assert_eq!(batches(7, 3), vec![0..3, 3..6, 6..7]);
        assert_eq!(batches(2, 5), vec![0..2]);
        assert_eq!(batches(2, 0), vec![0..1, 1..2]);
    }

    #[test]
    fn url_lists_skip_blank_lines_and_comments() {
        assert_eq!(url_of_line(b"  https://a.example/x \r"), Some("https://a.example/x".into()));
        assert_eq!(url_of_line("\u{a0}https://a.example/\u{3000}".as_bytes()), Some("https://a.example/".into()));
        assert_eq!(url_of_line(b" \t\r"), None);
        assert_eq!(url_of_line(b" # https://a.example/"), None);
        assert_eq!(url_of_line(b"not a url"), Some("not a url".into()), "a bad URL is an error result, not skipped");
    }

    #[test]
    fn byte_ranges_cover_the_file_once() {
        assert_eq!(byte_ranges(0, 10).count(), 0);
        assert_eq!(byte_ranges(25, 10).collect::<Vec<_>>(), vec![0..10, 10..20, 20..25]);
        assert_eq!(byte_ranges(20, 10).collect::<Vec<_>>(), vec![0..10, 10..20]);
        assert_eq!(byte_ranges(u64::MAX, u64::MAX / 2).count(), 3);
    }
}
