//! Cuts a CSV stream into chunks of whole records as its bytes arrive.
//!
//! The coordinator never holds a whole file: [`Splitter::push`] takes the bytes
//! read so far and [`Splitter::next`] hands out a chunk as soon as enough whole
//! records are in. Records are found the way `csv-core` finds them (a quote
//! opens a quoted field only at the start of a field, a doubled quote inside one
//! is a quote, `\r` and `\n` end records outside quotes, blank lines are not
//! records), so a chunk never splits a quoted field that holds a line break and
//! its row count is the one the transform worker will read.
//!
//! Chunks are cut only after a line break outside quotes. Most of the file is scanned
//! with `memchr` for the quote byte; only quoted fields are walked byte by byte.

use memchr::{memchr, memchr2_iter};

/// One piece of the file, ready to become a worker call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Whole records, preceded by the header row when the dialect has one.
    Chunk(Chunk),
    /// Records that do not end within the size limit; they are counted, never sent.
    Oversized(Span),
}

/// Where a piece lies in the file, and how many records it holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// The file line on which the piece starts (1-based).
    pub first_line: u64,
    /// The last file line its records are on.
    pub last_line: u64,
    /// Records in it.
    pub rows: u64,
    /// Its bytes in the file (without the header).
    pub bytes: std::ops::Range<u64>,
}

/// A chunk of records with the request body that carries them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The header row's bytes (if any) followed by the chunk's records.
    pub body: Vec<u8>,
    /// Where the records are.
    pub span: Span,
    /// What to add to a line number the worker counts in `body` to get the file's.
    pub line_offset: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    RecordStart,
    FieldStart,
    InField,
    InQuoted,
    QuoteInQuoted,
}

/// A record boundary: an offset in `buf` just after a record's end, and the records begun before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    at: usize,
    rows: u64,
}

/// The streaming cutter. See the module documentation.
#[derive(Debug)]
pub struct Splitter {
    quote: u8,
    delimiter: u8,
    /// The header row's bytes, once read, then the unsent bytes; `buf[..base]` is the header.
    buf: Vec<u8>,
    base: usize,
    header_wanted: bool,
    header_lines: u64,
    target: usize,
    max: usize,
    /// How far `buf` has been scanned, and the state there.
    scanned: usize,
    state: State,
    /// Records begun in `buf[base..scanned]`.
    rows: u64,
    /// The last boundary scanned and the one before it; `reached` once the last is past the target.
    last: Option<Mark>,
    before_last: Option<Mark>,
    reached: bool,
    /// The file line and offset of `buf[base]`.
    line: u64,
    offset: u64,
    /// Set while dropping a record over `max`: the span so far.
    oversized: Option<Span>,
    ended: bool,
}

/// Why a file cannot be split.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitError(pub String);

impl Splitter {
    /// A splitter cutting chunks of about `target` bytes of records (a little
    /// more, to end on a record boundary), whose bodies (header included) are
    /// never more than `max` bytes.
    ///
    /// `header` says whether the first record is a header row, sent ahead of every chunk.
    pub fn new(delimiter: u8, quote: u8, header: bool, target: usize, max: usize) -> Splitter {
        Splitter {
            quote,
            delimiter,
            buf: Vec::new(),
            base: 0,
            header_wanted: header,
            header_lines: 0,
            target: target.max(1),
            max: max.max(target.max(1)),
            scanned: 0,
            state: State::RecordStart,
            rows: 0,
            last: None,
            before_last: None,
            reached: false,
            line: 1,
            offset: 0,
            oversized: None,
            ended: false,
        }
    }

    /// Bytes held: the header and the records not yet handed out.
    pub fn held_bytes(&self) -> usize {
        self.buf.len()
    }

    /// The header row's bytes, once it has been read.
    pub fn header(&self) -> Option<&[u8]> {
        (!self.header_wanted && self.base > 0).then(|| &self.buf[..self.base])
    }

    /// Adds the next bytes of the file.
    pub fn push(&mut self, bytes: &[u8]) {
        debug_assert!(!self.ended, "no bytes after the end");
        self.buf.extend_from_slice(bytes);
    }

    /// Marks the end of the file: what is left becomes the last chunk.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Whether the header row is in (or there is none to read); `Err` when it
    /// does not end within `max` bytes or the file ends before it.
    pub fn find_header(&mut self) -> Result<bool, SplitError> {
        while self.header_wanted {
            self.scan(1);
            match self.last {
                Some(m) if m.rows >= 1 => self.take_header(m.at),
                // Blank lines before the header: they go with it.
                Some(_) if self.reached => self.reached = false,
                _ if self.ended && self.rows >= 1 => self.take_header(self.buf.len()),
                _ if self.ended => return Err(SplitError("the CSV is empty; a header row was expected".into())),
                _ if self.buf.len() > self.max => {
                    return Err(SplitError(format!("the header row does not end within {} bytes", self.max)))
                }
                _ => return Ok(false),
            }
            if self.base >= self.max {
                return Err(SplitError(format!(
                    "the header row is {} bytes, which leaves no room for records in a chunk of at most {}",
                    self.base, self.max
                )));
            }
        }
        Ok(true)
    }

    /// The next piece, if enough of the file is in; `Err` when the header row
    /// does not end within `max` bytes or the file ends before it.
    pub fn next_piece(&mut self) -> Result<Option<Piece>, SplitError> {
        if !self.find_header()? {
            return Ok(None);
        }
        loop {
            if self.oversized.is_some() {
                return Ok(self.skip_oversized());
            }
            self.scan(self.target);
            let len = self.buf.len() - self.base;
            let over = len > 0 && self.buf.len() > self.max;
            let take = match (self.reached, self.last, self.before_last) {
                (true, Some(m), _) if m.at <= self.max => m,
                // No boundary between the target and the limit: cut at the one before.
                (true, Some(_), Some(p)) => p,
                (true, Some(m), None) => {
                    // One record from here to past the limit: too large to send.
                    let span = self.span_to(m);
                    self.drop_to(m.at);
                    return Ok(Some(Piece::Oversized(span)));
                }
                (false, _, _) if self.ended && len > 0 && !over => Mark { at: self.buf.len(), rows: self.rows },
                (false, Some(m), _) if over || self.ended => m,
                // (At the end of the file, the arm above took what is left unless it is over the limit.)
                (false, None, _) if over => {
                    self.oversized = Some(Span {
                        first_line: self.line,
                        last_line: self.line,
                        rows: 0,
                        bytes: self.offset..self.offset,
                    });
                    continue;
                }
                _ => return Ok(None),
            };
            if let Some(chunk) = self.take_chunk(take) {
                return Ok(Some(Piece::Chunk(chunk)));
            }
        }
    }

    /// Goes on dropping a record too large to send: it ends at the next boundary.
    fn skip_oversized(&mut self) -> Option<Piece> {
        self.scan(1);
        let end = match self.last {
            Some(m) => m,
            None if self.ended => Mark { at: self.buf.len(), rows: self.rows },
            None => {
                let span = self.oversized.as_mut().expect("skipping an oversized record");
                span.rows += self.rows;
                let at = self.scanned;
                self.line += count_lines(&self.buf[self.base..at]);
                self.offset += (at - self.base) as u64;
                self.buf.drain(self.base..at);
                self.scanned = self.base;
                self.rows = 0;
                return None;
            }
        };
        let mut span = self.oversized.take().expect("skipping an oversized record");
        let rest = self.span_to(end);
        span.rows += rest.rows;
        span.last_line = rest.last_line.max(span.first_line);
        span.bytes.end = rest.bytes.end;
        self.drop_to(end.at);
        Some(Piece::Oversized(span))
    }

    /// The span of `buf[base..m.at]`.
    fn span_to(&self, m: Mark) -> Span {
        let records = &self.buf[self.base..m.at];
        let lines = count_lines(records);
        let last_line = self.line + lines - u64::from(records.ends_with(b"\n")).min(lines);
        Span { first_line: self.line, last_line, rows: m.rows, bytes: self.offset..self.offset + records.len() as u64 }
    }

    /// Scans `buf` from where the last scan stopped, stopping at the first
    /// record boundary at least `target` bytes past `base`.
    fn scan(&mut self, target: usize) {
        if self.reached {
            return;
        }
        // A chunk never grows past `max`: the boundary it looks for is at most there.
        let want = (self.base + target).min(self.max.max(self.base + 1));
        // Out of `self` while scanning, so the scan can read it and update the marks.
        let buf = std::mem::take(&mut self.buf);
        // A final `\r` may start a `\r\n`: it waits for the next byte, or the end.
        let end = buf.len() - usize::from(!self.ended && buf.last() == Some(&b'\r'));
        let mut i = self.scanned;
        while i < end && !self.reached {
            match self.state {
                State::InQuoted => match memchr(self.quote, &buf[i..end]) {
                    Some(q) => {
                        i += q + 1;
                        self.state = State::QuoteInQuoted;
                    }
                    None => i = end,
                },
                State::QuoteInQuoted => {
                    let b = buf[i];
                    self.state = if b == self.quote {
                        State::InQuoted
                    } else if b == self.delimiter {
                        State::FieldStart
                    } else if b == b'\n' || b == b'\r' {
                        self.record_end(&buf, i, want);
                        State::RecordStart
                    } else {
                        State::InField
                    };
                    i += 1;
                }
                _ => {
                    // Outside quotes up to the next quote byte: only record ends matter.
                    let stop = memchr(self.quote, &buf[i..end]).map_or(end, |q| i + q);
                    if let Some(at) = self.scan_unquoted(&buf, i, stop, want) {
                        i = at;
                        break;
                    }
                    i = stop;
                    if i < end {
                        // A quote opens a quoted field only where a field starts.
                        self.state = match self.state {
                            State::RecordStart => {
                                self.rows += 1;
                                State::InQuoted
                            }
                            State::FieldStart => State::InQuoted,
                            _ => State::InField,
                        };
                        i += 1;
                    }
                }
            }
        }
        self.scanned = i;
        self.buf = buf;
    }

    /// Scans `buf[from..to]`, which holds no quote byte. Returns where to stop
    /// when a boundary at or past `want` is found.
    fn scan_unquoted(&mut self, buf: &[u8], from: usize, to: usize, want: usize) -> Option<usize> {
        let mut pos = from;
        for t in memchr2_iter(b'\n', b'\r', &buf[from..to]).map(|t| from + t) {
            if t > pos && self.state == State::RecordStart {
                self.rows += 1;
            }
            self.state = State::RecordStart;
            self.record_end(buf, t, want);
            if self.reached {
                return Some(t + 1);
            }
            pos = t + 1;
        }
        if to > pos {
            if self.state == State::RecordStart {
                self.rows += 1;
            }
            self.state = if buf[to - 1] == self.delimiter { State::FieldStart } else { State::InField };
        }
        None
    }

    /// Notes the record end (or blank line) at `buf[t]`: a boundary after a
    /// `\n`, or after a `\r` known not to start a `\r\n`.
    fn record_end(&mut self, buf: &[u8], t: usize, want: usize) {
        if buf[t] == b'\n' || buf.get(t + 1).is_some_and(|&b| b != b'\n') {
            self.before_last = self.last;
            self.last = Some(Mark { at: t + 1, rows: self.rows });
            self.reached = t + 1 >= want;
        }
    }

    fn take_header(&mut self, at: usize) {
        self.header_wanted = false;
        self.header_lines = count_lines(&self.buf[..at]);
        self.line += self.header_lines;
        self.offset += at as u64;
        self.base = at;
        self.restart_scan();
    }

    /// Hands out `buf[base..m.at]` as a chunk (None if it holds no record), keeping the header.
    fn take_chunk(&mut self, m: Mark) -> Option<Chunk> {
        let span = self.span_to(m);
        let line_offset = span.first_line - (self.header_lines + 1);
        let mut rest = Vec::with_capacity(self.base + self.target + (self.buf.len() - m.at));
        rest.extend_from_slice(&self.buf[..self.base]);
        rest.extend_from_slice(&self.buf[m.at..]);
        let mut body = std::mem::replace(&mut self.buf, rest);
        body.truncate(m.at);
        self.line = span.last_line + u64::from(body.ends_with(b"\n"));
        self.offset = span.bytes.end;
        self.restart_scan();
        (span.rows > 0).then_some(Chunk { body, span, line_offset })
    }

    /// Drops `buf[base..at]`, the end of an oversized record.
    fn drop_to(&mut self, at: usize) {
        let dropped = &self.buf[self.base..at];
        self.line += count_lines(dropped);
        self.offset += dropped.len() as u64;
        self.buf.drain(self.base..at);
        self.restart_scan();
    }

    /// Scanning starts again at `base`, which is always a record boundary.
    fn restart_scan(&mut self) {
        self.scanned = self.base;
        self.state = State::RecordStart;
        self.rows = 0;
        self.last = None;
        self.before_last = None;
        self.reached = false;
    }
}

/// Line breaks in `bytes`: a loop the compiler turns into SIMD compares.
fn count_lines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanout_testkit::rng::Rng;

    /// Feeds `data` in pieces of `piece` bytes and collects every piece out.
    fn split(data: &[u8], header: bool, target: usize, max: usize, piece: usize) -> Result<Vec<Piece>, SplitError> {
        split_pushes(&data.chunks(piece.max(1)).collect::<Vec<_>>(), header, target, max)
    }

    /// Feeds `pushes` one after another and collects every piece out.
    fn split_pushes(pushes: &[&[u8]], header: bool, target: usize, max: usize) -> Result<Vec<Piece>, SplitError> {
        let mut s = Splitter::new(b',', b'"', header, target, max);
        let largest = pushes.iter().map(|p| p.len()).max().unwrap_or(0);
        let mut out = Vec::new();
        for bytes in pushes {
            s.push(bytes);
            while let Some(p) = s.next_piece()? {
                out.push(p);
            }
            assert!(s.held_bytes() <= 2 * max + 2 * largest + 64, "held {} bytes", s.held_bytes());
        }
        s.end();
        while let Some(p) = s.next_piece()? {
            out.push(p);
        }
        Ok(out)
    }

    fn csv_records(data: &[u8], header: bool) -> Vec<(u64, csv::ByteRecord)> {
        let mut r = csv::ReaderBuilder::new().has_headers(false).flexible(true).from_reader(data);
        let mut out = Vec::new();
        let mut rec = csv::ByteRecord::new();
        while r.read_byte_record(&mut rec).unwrap() {
            let (_, line) = crate::transform::engine::record_start(data, rec.position().unwrap());
            out.push((line, rec.clone()));
        }
        if header && !out.is_empty() {
            out.remove(0);
        }
        out
    }

    /// Every chunk, parsed as the worker parses it, yields the file's records in
    /// order with the file's line numbers, and the counts agree.
    fn check(data: &[u8], header: bool, target: usize, max: usize, piece: usize) {
        check_pushes(data, &data.chunks(piece.max(1)).collect::<Vec<_>>(), header, target, max);
    }

    fn blank(bytes: &[u8]) -> bool {
        bytes.iter().all(|b| b"\r\n".contains(b))
    }

    /// [`check`] with `data` fed as `pushes`.
    fn check_pushes(data: &[u8], pushes: &[&[u8]], header: bool, target: usize, max: usize) {
        let want = csv_records(data, header);
        let pieces = split_pushes(pushes, header, target, max).unwrap();
        let lens: Vec<usize> = pushes.iter().map(|p| p.len()).collect();
        let mut got = Vec::new();
        let mut covered = None;
        for (i, p) in pieces.iter().enumerate() {
            // The pieces follow each other with nothing but blank lines between them.
            let span = match p {
                Piece::Chunk(c) => &c.span,
                Piece::Oversized(span) => span,
            };
            if let Some(end) = covered {
                let gap = data.get(end as usize..span.bytes.start as usize);
                assert!(gap.is_some_and(blank), "{:?} after {end}: {pieces:?}", span.bytes);
            }
            covered = Some(span.bytes.end);
            let end = span.bytes.end as usize;
            assert!(!data[..end].ends_with(b"\r") || data.get(end) != Some(&b'\n'), "a piece ends inside a CRLF");
            if let (Piece::Chunk(c), true) = (p, i + 1 < pieces.len() && data.len() <= max) {
                let bytes = c.span.bytes.end - c.span.bytes.start;
                assert!(bytes >= target as u64, "a chunk of {bytes} bytes before the last, under the target {target}");
            }
            match p {
                Piece::Chunk(c) => {
                    assert!(c.body.len() <= max, "a chunk of {} bytes, over the limit of {max}", c.body.len());
                    let recs = csv_records(&c.body, header);
                    assert_eq!(recs.len() as u64, c.span.rows, "rows of {:?}", String::from_utf8_lossy(&c.body));
                    for (line, rec) in recs {
                        let line = line + c.line_offset;
                        assert!(line >= c.span.first_line && line <= c.span.last_line, "line {line} in {:?}", c.span);
                        got.push((line, rec));
                    }
                }
                Piece::Oversized(span) => {
                    for _ in 0..span.rows {
                        got.push((0, csv::ByteRecord::new()));
                    }
                }
            }
        }
        if let Some(end) = covered {
            assert!(blank(&data[end as usize..]), "the last piece, to {end}, ends with the file's last record");
        }
        let oversized = pieces.iter().any(|p| matches!(p, Piece::Oversized(_)));
        // A file that fits in one chunk has no record too large for one.
        assert!(!oversized || data.len() > max, "{pieces:?}");
        assert_eq!(got.len(), want.len(), "records of {:?} pushes {lens:?}", String::from_utf8_lossy(data));
        if !oversized {
            for ((gl, g), (wl, w)) in got.iter().zip(&want) {
                assert_eq!((gl, g), (wl, w), "in {:?} target {target} pushes {lens:?}", String::from_utf8_lossy(data));
            }
        }
    }

    #[test]
    fn chunks_hold_whole_records() {
        let data = b"id,note\n1,a\n2,\"multi\nline, quoted\"\r\n3,c\n\n4,d\n5,\"e\"\"q\"\"\"\n6,x\"y\n7,\"\"\n8";
        for target in [1, 5, 10, 20, 1000] {
            for piece in [1, 3, 7, 1000] {
                check(data, true, target, 10_000, piece);
            }
        }
    }

    /// A doubled quote inside a quoted field, just before a delimiter or a line break (LF,
    /// CRLF) that belongs to the field, or just before the closing quote and what ends the
    /// field: read right wherever the input is cut between two pushes.
    #[test]
    fn escaped_quotes_before_delimiters_and_line_breaks_at_every_cut() {
        for data in [
            &b"id,note\n1,\"a\"\",b\"\n2,c\n"[..],
            b"id,note\n1,\"a\"\"\nb\"\n2,c\n",
            b"id,note\r\n1,\"a\"\"\r\nb\"\r\n2,c\r\n",
            b"id,note\n1,\"a\"\"\",x\n2,\"b\"\"\"\n3,\"c\"\"\"\r\n4,d",
            b"\"\"\"\",\"\"\"\n\"\n\"\"\"\",\"\"\"\r\n\"\r\n",
        ] {
            for cut in 0..=data.len() {
                for (header, target) in [(true, 1), (true, 12), (false, 1), (true, 1000)] {
                    check_pushes(data, &[&data[..cut], &data[cut..]], header, target, 10_000);
                }
            }
        }
    }

    #[test]
    fn chunk_bodies_repeat_the_header_and_lines_map_back() {
        let data = b"\n\"i\nd\",v\n1,2\n3,4\n";
        let pieces = split(data, true, 1, 100, 100).unwrap();
        let bodies: Vec<_> = pieces
            .iter()
            .map(|p| match p {
                Piece::Chunk(c) => (String::from_utf8(c.body.clone()).unwrap(), c.span.first_line, c.line_offset),
                Piece::Oversized(_) => panic!("no oversized record here"),
            })
            .collect();
        assert_eq!(bodies, vec![("\n\"i\nd\",v\n1,2\n".into(), 4, 0), ("\n\"i\nd\",v\n3,4\n".into(), 5, 1)]);
    }

    #[test]
    fn records_over_the_limit_are_counted_not_held() {
        let mut data = b"id,v\n1,a\n2,\"".to_vec();
        data.extend(std::iter::repeat_n(b'x', 5000));
        data.extend_from_slice(b"\n\"\n3,c\n");
        let pieces = split(&data, true, 10, 100, 64).unwrap();
        let oversized: Vec<_> =
            pieces.iter().filter_map(|p| if let Piece::Oversized(s) = p { Some(s) } else { None }).collect();
        assert_eq!(oversized.len(), 1, "{pieces:?}");
        assert_eq!(oversized[0].rows, 1);
        assert_eq!(oversized[0].first_line, 3);
        check(&data, true, 10, 100, 64);
        // An unclosed quote swallows the rest of the file into one record, as the csv crate reads it.
        let open = b"id,v\n1,a\n2,\"never closed\n3,c\n4,d\n";
        check(open, true, 4, 12, 5);
    }

    #[test]
    fn a_last_record_without_a_line_break() {
        for target in [1, 4, 8, 64] {
            for piece in [1, 3, 100] {
                check(b"id,v\n1,a\n2,b", true, target, 64, piece);
                check(b"1,a\n2,b", false, target, 64, piece);
                check(b"1,a\r\n\"2\",\"b\"", false, target, 64, piece);
            }
        }
    }

    #[test]
    fn the_header_row_is_known_once_read() {
        let mut s = Splitter::new(b',', b'"', true, 8, 64);
        s.push(b"id,v");
        assert!(matches!(s.find_header(), Ok(false)));
        assert_eq!(s.header(), None, "not yet read");
        s.push(b"\n1,a\n");
        assert!(matches!(s.find_header(), Ok(true)));
        assert_eq!(s.header(), Some(&b"id,v\n"[..]));
        let mut headerless = Splitter::new(b',', b'"', false, 8, 64);
        headerless.push(b"1,a\n");
        assert!(matches!(headerless.find_header(), Ok(true)));
        assert_eq!(headerless.header(), None, "a file without a header row");
    }

    #[test]
    fn a_header_row_must_end_within_the_chunk_limit() {
        let mut s = Splitter::new(b',', b'"', true, 8, 16);
        s.push(&[b'a'; 16]);
        assert_eq!(s.held_bytes(), 16);
        assert!(matches!(s.find_header(), Ok(false)), "16 bytes: the row may still end");
        s.push(b"a");
        let err = s.find_header().unwrap_err();
        assert_eq!(err, SplitError("the header row does not end within 16 bytes".into()));
    }

    #[test]
    fn headerless_and_header_only_files() {
        check(b"1\n2\n3\n", false, 2, 100, 2);
        assert_eq!(split(b"a,b", true, 10, 100, 1).unwrap(), vec![]);
        assert_eq!(split(b"a,b\n\n\n", true, 1, 100, 2).unwrap(), vec![]);
        assert!(split(b"", true, 10, 100, 1).is_err());
        assert!(split(b"\n\n", true, 10, 100, 1).is_err());
        let long = vec![b'h'; 300];
        assert!(split(&long, true, 10, 100, 50).unwrap_err().0.contains("header"));
    }

    #[test]
    fn random_files_split_like_the_csv_crate_reads_them() {
        random_files(b"ab,\"\n\r ");
        // Long unquoted runs, as most files have.
        random_files(b"abc,,\n\"d");
    }

    fn random_files(alphabet: &[u8]) {
        for seed in 0..3000u64 {
            let mut rng = Rng::new(seed);
            let len = rng.below(80) as usize;
            let data: Vec<u8> = (0..len).map(|_| alphabet[rng.below(alphabet.len() as u64) as usize]).collect();
            let target = 1 + rng.below(20) as usize;
            let piece = 1 + rng.below(30) as usize;
            let header = rng.below(2) == 0;
            // Sometimes a limit small enough for records to pass it.
            let max = if rng.below(3) == 0 { target + rng.below(30) as usize } else { 10_000 };
            match split(&data, header, target, max, piece) {
                Ok(_) => check(&data, header, target, max, piece),
                Err(e) => assert!(header, "seed {seed}: {e:?}"),
            }
        }
    }
}
