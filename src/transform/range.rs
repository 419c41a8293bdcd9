//! Range mode: which records of a file a worker given a byte range owns.
//!
//! A range `[start, end)` owns exactly the records that start inside it: the
//! partial record at its start belongs to the range before, and the record
//! crossing its end is read to its end. So neighbouring ranges share no record
//! and miss none.
//!
//! Where a record starts depends on what came before: a line break inside a
//! quoted field starts nothing, and whether byte `start - 1` is inside quotes
//! is only known by reading the file from its beginning. So a worker
//! *guesses* (it reads from `start - 1` as if outside quotes, [`Entry::Guess`])
//! and says where its records began and ended ([`Owned`]); whoever merges the
//! ranges in order checks the guess against the end the range before reported
//! (a range's end is the next one's true beginning, since the range before
//! began at a true record start) and sends a range whose guess was wrong again
//! with its beginning given ([`Entry::At`]). A file without quoted line
//! breaks at range edges takes one pass; any RFC 4180 file is read exactly as a
//! stream is.
//!
//! Record boundaries are found the way `csv-core` finds them: a quote opens a
//! quoted field only at the start of a field, a doubled quote inside one is a
//! quote, and `\r` or `\n` outside quotes ends a record.

use memchr::{memchr, memchr3};
use serde::{Deserialize, Serialize};

/// Where a worker starts reading its range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// At the first record boundary at or after `start`, guessing that byte
    /// `start - 1` is outside quotes.
    Guess,
    /// At this file offset, known to start a record (the end the range before reported).
    At(u64),
}

/// Scanner states: outside quotes at a field's start or inside an unquoted
/// field, inside a quoted field, or just after a quote inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    FieldStart,
    InField,
    InQuoted,
    QuoteInQuoted,
}

/// Finds record ends in a stream of CSV bytes.
#[derive(Clone, Debug)]
pub struct Scanner {
    quote: u8,
    delimiter: u8,
    state: State,
}

impl Scanner {
    /// A scanner at the start of a record.
    pub fn new(quote: u8, delimiter: u8) -> Scanner {
        Scanner { quote, delimiter, state: State::FieldStart }
    }

    /// A scanner guessing that it starts outside quotes, inside a field.
    fn guessing(quote: u8, delimiter: u8) -> Scanner {
        Scanner { quote, delimiter, state: State::InField }
    }

    /// Scanners for the other states a byte can be read in: if each of them
    /// finds the guess's first boundary too, the guess is right whatever came before.
    fn others(quote: u8, delimiter: u8) -> Vec<Scanner> {
        [State::FieldStart, State::InQuoted, State::QuoteInQuoted]
            .into_iter()
            .map(|state| Scanner { quote, delimiter, state })
            .collect()
    }

    /// Scans `bytes` (the stream's next ones) up to the end of the first record
    /// that ends in them: the offset just past its `\r` or `\n`, where the next
    /// record starts. `None` when none ends there; the state carries over.
    pub fn next_end(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::InQuoted => match memchr(self.quote, &bytes[i..]) {
                    Some(q) => {
                        i += q + 1;
                        self.state = State::QuoteInQuoted;
                    }
                    None => return None,
                },
                State::QuoteInQuoted => {
                    let b = bytes[i];
                    i += 1;
                    self.state = match b {
                        _ if b == self.quote => State::InQuoted,
                        _ if b == self.delimiter => State::FieldStart,
                        b'\n' | b'\r' => {
                            self.state = State::FieldStart;
                            return Some(i);
                        }
                        _ => State::InField,
                    };
                }
                State::FieldStart | State::InField => {
                    let Some(at) = memchr3(self.quote, b'\n', b'\r', &bytes[i..]).map(|at| i + at) else {
                        self.state = self.after(bytes, bytes.len(), i);
                        return None;
                    };
                    let state = self.after(bytes, at, i);
                    i = at + 1;
                    if bytes[at] != self.quote {
                        self.state = State::FieldStart;
                        return Some(i);
                    }
                    // A quote opens a quoted field only where a field starts.
                    self.state = if state == State::FieldStart { State::InQuoted } else { State::InField };
                }
            }
        }
        None
    }

    /// The state before `bytes[at]`, outside quotes, having been `self.state` at `from`.
    fn after(&self, bytes: &[u8], at: usize, from: usize) -> State {
        match at.checked_sub(1) {
            Some(last) if last >= from => {
                if bytes[last] == self.delimiter {
                    State::FieldStart
                } else {
                    State::InField
                }
            }
            _ => self.state,
        }
    }
}

/// The records a range owns, once read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owned {
    /// Where they are.
    pub span: Span,
    /// Their bytes, from `span.begin` on, without an oversized last record.
    pub records: Vec<u8>,
}

/// Where a range's records are in the file: what a worker reports, so that
/// the ranges can be checked against each other and their lines counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Span {
    /// The file offset where the first owned record starts (or where the range's
    /// records would start: the next record boundary, when it owns none).
    pub begin: u64,
    /// The file offset just past the last owned record: the next range's `begin`.
    pub end: u64,
    /// Line breaks (`\n`) in `begin..end`: what the next range's lines start after.
    pub newlines: u64,
    /// Whether `begin` is a record start whatever came before it: given,
    /// or a guess that reading byte `start - 1` in any state gives. Only such
    /// a range can follow one that has no answer.
    #[serde(default)]
    pub certain: bool,
    /// The last owned record, when it alone is over the bytes a worker holds: left out.
    #[serde(skip)]
    pub oversized: Option<Oversized>,
}

/// A record too large to hold, which only its error record stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oversized {
    /// Its file offset.
    pub byte: u64,
    /// Its line, counted from `begin`'s line as 1.
    pub line: u64,
    /// The most bytes a record may take.
    pub limit: usize,
}

/// What a [`Cutter`] needs next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// The file's bytes from this offset on.
    More(u64),
    /// The range is read.
    Done(Owned),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Looking for the first record boundary (a guess).
    Seek,
    /// Holding the owned records from `begin` on.
    Hold,
    /// Past the most bytes held: reading the oversized last record to its end.
    Drop,
}

/// Reads a range's owned records from the file's bytes as they are fetched,
/// holding at most `max_bytes` of them (and one fetched piece).
#[derive(Clone, Debug)]
pub struct Cutter {
    end: u64,
    max_bytes: usize,
    scanner: Scanner,
    /// While guessing: the other states' scanners that have not yet disagreed.
    others: Vec<Scanner>,
    certain: bool,
    phase: Phase,
    /// The file offset of the next byte to read.
    offset: u64,
    begin: u64,
    /// The latest record start seen while holding.
    last_start: u64,
    held: Vec<u8>,
    /// Line breaks in bytes read and let go since `begin`.
    dropped_newlines: u64,
    oversized: Option<Oversized>,
    done: Option<Owned>,
}

impl Cutter {
    /// A cutter for range `[start, end)` of a file whose records start at
    /// `data_start` (after the header), entered at `entry`; the first bytes it
    /// needs are [`Cutter::first`]'s. `max_bytes` is taken to be at least the range's length.
    pub fn new(
        start: u64,
        end: u64,
        data_start: u64,
        entry: Entry,
        quote: u8,
        delimiter: u8,
        max_bytes: usize,
    ) -> Cutter {
        let known = match entry {
            Entry::At(at) => Some(at.max(data_start)),
            Entry::Guess if start <= data_start => Some(data_start),
            Entry::Guess => None,
        };
        let mut cutter = Cutter {
            end,
            // A record over the limit is always the range's last: it crosses the range's end.
            max_bytes: max_bytes.max(end.saturating_sub(start) as usize).max(1),
            scanner: Scanner::guessing(quote, delimiter),
            others: Scanner::others(quote, delimiter),
            certain: true,
            phase: Phase::Seek,
            offset: start.saturating_sub(1),
            begin: 0,
            last_start: 0,
            held: Vec::new(),
            dropped_newlines: 0,
            oversized: None,
            done: None,
        };
        if let Some(at) = known {
            cutter.offset = at;
            cutter.start_at(at);
        }
        cutter
    }

    /// The first step: the bytes to fetch first, or the answer when the range
    /// is known to own nothing.
    pub fn first(&mut self) -> Step {
        match self.done.take() {
            Some(owned) => Step::Done(owned),
            None => Step::More(self.offset),
        }
    }

    /// Starts holding records at `at`, a record boundary; a range whose
    /// records would start at or past its end owns none.
    fn start_at(&mut self, at: u64) {
        self.begin = at;
        self.last_start = at;
        self.scanner = Scanner::new(self.scanner.quote, self.scanner.delimiter);
        self.phase = Phase::Hold;
        if at >= self.end {
            self.finish(at);
        }
    }

    fn finish(&mut self, end: u64) {
        let mut records = std::mem::take(&mut self.held);
        let keep = match self.oversized {
            Some(o) => o.byte,
            None => end,
        };
        records.truncate((keep - self.begin) as usize);
        let newlines = self.dropped_newlines + count_newlines(&records);
        let span = Span { begin: self.begin, end, newlines, certain: self.certain, oversized: self.oversized };
        self.done = Some(Owned { span, records });
    }

    /// Reads the range from a file held whole (simulations, tests).
    pub fn over(mut self, file: &[u8]) -> Owned {
        let mut step = self.first();
        loop {
            match step {
                Step::Done(owned) => return owned,
                Step::More(from) => step = self.push(&file[(from as usize).min(file.len())..], true),
            }
        }
    }

    /// Takes the file's next bytes (from the offset the last step asked for);
    /// `at_eof` when they reach the end of the file.
    pub fn push(&mut self, mut bytes: &[u8], at_eof: bool) -> Step {
        while self.done.is_none() && !bytes.is_empty() {
            let taken = match self.phase {
                Phase::Seek => {
                    let at = self.scanner.next_end(bytes);
                    let taken = at.unwrap_or(bytes.len());
                    // Each other state must find no boundary before the guess's, and that one.
                    for other in &mut self.others {
                        match other.next_end(&bytes[..taken]) {
                            Some(x) if Some(x) == at => {}
                            None if at.is_none() => continue,
                            _ => self.certain = false,
                        }
                    }
                    if let Some(at) = at {
                        self.others.clear();
                        self.start_at(self.offset + at as u64);
                    }
                    taken
                }
                Phase::Hold => self.hold(bytes),
                Phase::Drop => {
                    let at = self.scanner.next_end(bytes);
                    let taken = at.unwrap_or(bytes.len());
                    self.dropped_newlines += count_newlines(&bytes[..taken]);
                    if at.is_some() {
                        self.finish(self.offset + taken as u64);
                    }
                    taken
                }
            };
            self.offset += taken as u64;
            bytes = &bytes[taken..];
        }
        if self.done.is_none() && at_eof {
            if self.phase == Phase::Seek {
                // No record starts after `start - 1`, in any state.
                self.begin = self.offset;
            }
            self.finish(self.offset);
        }
        self.first()
    }

    /// Holds `bytes` up to the first record end at or past the range's end,
    /// letting the last record go once it alone is over `max_bytes`. Returns
    /// the bytes taken.
    fn hold(&mut self, bytes: &[u8]) -> usize {
        let mut i = 0;
        let mut end = None;
        while let Some(at) = self.scanner.next_end(&bytes[i..]) {
            i += at;
            let boundary = self.offset + i as u64;
            if boundary >= self.end {
                end = Some(boundary);
                break;
            }
            self.last_start = boundary;
        }
        let taken = if end.is_some() { i } else { bytes.len() };
        let kept = (self.last_start - self.begin) as usize;
        if (self.held.len() + taken).saturating_sub(kept) > self.max_bytes {
            // The record from `last_start` alone is over the limit: the records before it are held whole.
            let split = kept.saturating_sub(self.held.len());
            self.held.extend_from_slice(&bytes[..split]);
            self.dropped_newlines += count_newlines(&self.held[kept..]) + count_newlines(&bytes[split..taken]);
            self.held.truncate(kept);
            let line = 1 + count_newlines(&self.held);
            self.oversized = Some(Oversized { byte: self.last_start, line, limit: self.max_bytes });
            self.phase = Phase::Drop;
        } else {
            self.held.extend_from_slice(&bytes[..taken]);
        }
        if let Some(boundary) = end {
            self.finish(boundary);
        }
        taken
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Format;
    use crate::transform::engine::{read_header, run_compiled, run_to_end, Placement};
    use crate::transform::program::Program;
    use crate::transform::spec::{self, Spec};
    use serde_json::Value;

    fn spec() -> Spec {
        spec::parse(br#"{"columns": [{"from": "id"}, {"from": "v", "type": "integer"}]}"#).unwrap()
    }

    /// Reads `[start, end)` of `file` as a worker does, fetching `piece` bytes at a time.
    fn read(file: &[u8], start: u64, end: u64, entry: Entry, max: usize, piece: u64) -> Owned {
        let header = read_header(&spec().dialect, file).unwrap();
        let mut cutter = Cutter::new(start, end, header.data_start as u64, entry, b'"', b',', max);
        let mut step = cutter.first();
        loop {
            match step {
                Step::Done(owned) => return owned,
                Step::More(from) => {
                    let to = (from + piece).min(file.len() as u64);
                    step = cutter.push(&file[from as usize..to as usize], to == file.len() as u64);
                }
            }
        }
    }

    /// Records and error records (kind and file line).
    type Answer = (Vec<Value>, Vec<(String, u64)>);

    fn parse(out: &[u8]) -> Answer {
        let v: Value = serde_json::from_slice(out).unwrap();
        let errors = v["errors"].as_array().unwrap();
        let errors = errors.iter().map(|e| (e["kind"].as_str().unwrap().to_owned(), e["line"].as_u64().unwrap()));
        (v["records"].as_array().unwrap().clone(), errors.collect())
    }

    /// Reads `file` cut at `cuts` the way the coordinator does: each range
    /// guessed, checked against the end of the one before, read again from
    /// there when the guess was wrong. Returns the answer and the ranges read again.
    fn chained(file: &[u8], cuts: &[u64], max: usize, piece: u64) -> (Answer, usize) {
        let spec = spec();
        let header = read_header(&spec.dialect, file).unwrap();
        let program = Program::compile(&spec, &header.names).unwrap();
        let (mut expected, mut lines, mut redone) = (header.data_start as u64, header.lines, 0);
        let (mut records, mut errors) = (Vec::new(), Vec::new());
        for w in cuts.windows(2) {
            let mut owned = read(file, w[0], w[1], Entry::Guess, max, piece);
            if owned.span.begin != expected {
                owned = read(file, w[0], w[1], Entry::At(expected), max, piece);
                redone += 1;
            }
            assert_eq!(owned.span.begin, expected, "range {w:?}");
            let placement = Placement { line_offset: 0, range: Some(owned.span), one_line_records: false };
            let (r, e) = parse(&run_compiled(&spec, &program, &owned.records, Format::Json, placement).unwrap());
            records.extend(r);
            errors.extend(e.into_iter().map(|(kind, line)| (kind, line + lines)));
            (expected, lines) = (owned.span.end, lines + owned.span.newlines);
        }
        assert_eq!(expected, file.len() as u64, "the last range ends the file");
        ((records, errors), redone)
    }

    fn whole(file: &[u8]) -> Answer {
        parse(&run_to_end(&spec(), file, Format::Json).unwrap())
    }

    fn check_all_cuts(file: &[u8]) {
        let all = whole(file);
        let n = file.len() as u64;
        for a in 0..=n {
            assert_eq!(
                chained(file, &[0, a, n], 1 << 20, 3).0,
                all,
                "one cut at {a} in {:?}",
                String::from_utf8_lossy(file)
            );
            for b in a..=n {
                assert_eq!(chained(file, &[0, a, b, n], 1 << 20, 64).0, all, "cuts at {a} and {b}");
            }
        }
    }

    #[test]
    fn every_cut_of_small_files_reads_them_as_a_whole() {
        check_all_cuts(b"id,v\n1,2\n22,x\n333,\"4\"\n4,5\n");
        check_all_cuts(b"id,v\r\n1,2\r\n22,3\r\n3,y\r\n");
        check_all_cuts(b"id,v\n1,2\n2,no final newline");
        check_all_cuts(b"id,v\n1,1\n\n2,2\n");
        check_all_cuts(b"id,v\n");
        check_all_cuts(b"id,v\n\"a\nb\",1\n\"\n\",\"2\"\n3,\"x\r\ny\"\n\"q\"\"\n\",4\n");
        check_all_cuts(b"id,v\n1,\"\"\"\n\"\"\"\n2,a\"b\n\"c\nd\"e,3\n");
    }

    #[test]
    fn a_guess_inside_a_quoted_field_is_read_again_from_the_true_start() {
        let file = b"id,v\n1,2\n\"a\nb,c\n\",3\n4,5\n";
        // Byte 12 is inside the quoted field: the guess starts at "b,c", which is wrong.
        let ((records, errors), redone) = chained(file, &[0, 12, file.len() as u64], 1 << 20, 1024);
        assert_eq!((records, errors), whole(file));
        assert_eq!(redone, 1);
        // Without quoted line breaks no range is read twice.
        let plain = b"id,v\n1,2\n3,4\n5,6\n";
        assert_eq!(chained(plain, &[0, 7, 11, 14, 17], 1 << 20, 1024).1, 0);
    }

    #[test]
    fn the_last_record_needs_more_bytes_until_it_ends() {
        let file = b"id,v\n1,\"2\n\n\n\"\n3,4\n";
        let header = read_header(&spec().dialect, file).unwrap();
        let mut cutter = Cutter::new(0, 6, header.data_start as u64, Entry::Guess, b'"', b',', 1 << 20);
        assert_eq!(cutter.first(), Step::More(5));
        assert_eq!(cutter.push(&file[5..9], false), Step::More(9));
        let Step::Done(owned) = cutter.push(&file[9..], true) else { panic!("the record ends at byte 14") };
        assert_eq!((owned.span.begin, owned.span.end, owned.span.newlines), (5, 14, 4));
        assert_eq!(owned.records, b"1,\"2\n\n\n\"\n");
    }

    /// Cut points `step` bytes apart from `first`, and the file's ends.
    fn every(n: u64, first: u64, step: u64) -> Vec<u64> {
        let mut cuts: Vec<u64> = std::iter::once(0).chain((first..n).step_by(step as usize)).collect();
        cuts.push(n);
        cuts.dedup();
        cuts
    }

    #[test]
    fn a_record_over_the_limit_costs_only_itself() {
        let big = format!("7,\"{}\n{}\"\n", "x".repeat(300), "y".repeat(300));
        let file = format!("id,v\n1,1\n2,2\n{big}8,8\n9,z\n");
        let file = file.as_bytes();
        let n = file.len() as u64;
        for first in [1, 9, 13, 14, 15, 100] {
            for piece in [7, 100, 4096] {
                let cuts = every(n, first, 150);
                let ((records, errors), _) = chained(file, &cuts, 200, piece);
                let ids: Vec<_> = records.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
                assert_eq!(ids, ["1", "2", "8"], "cuts {cuts:?}, pieces of {piece}");
                assert_eq!(errors, [("too_large".to_owned(), 4), ("invalid_value".to_owned(), 7)], "cuts {cuts:?}");
            }
        }
    }

    /// A generated CSV file: records with quoted line breaks, doubled quotes,
    /// quotes inside unquoted fields, CRLF and LF, blank lines, bad values, and
    /// now and then one far over `max` bytes. Returns the file and the lines of those.
    fn generated(next: &mut impl FnMut(u64) -> u64, max: usize) -> (Vec<u8>, Vec<u64>) {
        let mut file = b"id,v\n".to_vec();
        let mut huge = Vec::new();
        for id in 0..next(30) {
            let line = 1 + file.iter().filter(|&&b| b == b'\n').count() as u64;
            let len = if next(20) == 0 { max + 1 + next(3 * max as u64) as usize } else { next(12) as usize };
            let text: String = (0..len).map(|_| ['a', ',', '"', '\n', '\r', 'b'][next(6) as usize]).collect();
            let field = format!("\"{}\"", text.replace('"', "\"\"").replace('\r', "\r\n"));
            let value = match next(4) {
                0 => "x\"y".to_owned(),
                1 => format!("\"{}\"", next(100)),
                _ => next(100).to_string(),
            };
            let record = if next(2) == 0 { format!("{id},{field}") } else { format!("{field},{value}") };
            if len > max {
                huge.push(line);
            }
            file.extend_from_slice(record.as_bytes());
            file.extend_from_slice(if next(3) == 0 { b"\r\n" } else { b"\n" });
            if next(10) == 0 {
                file.push(b'\n');
            }
        }
        if next(2) == 0 {
            file.pop();
        }
        (file, huge)
    }

    #[test]
    fn generated_files_cut_anywhere_read_as_a_whole() {
        let mut rng = fanout_testkit::rng::Rng::new(0x5eed_c0de_0015_u64);
        let mut next = move |n: u64| rng.below(n.max(1));
        let max = 64;
        for round in 0..600 {
            let (file, huge) = generated(&mut next, max);
            let n = file.len() as u64;
            let (mut records, mut errors) = whole(&file);
            let piece = 1 + next(200);
            let (cuts, limit) = if huge.is_empty() {
                let mut cuts: Vec<u64> = (0..next(6)).map(|_| next(n + 1)).collect();
                cuts.extend([0, n]);
                cuts.sort_unstable();
                (cuts, 1 << 20)
            } else {
                // Each oversized record is one error record at its line, in place of what it gives whole.
                records.retain(|r| r["id"].as_str().is_some_and(|id| id.len() <= max));
                errors.retain(|(_, line)| !huge.contains(line));
                errors.extend(huge.iter().map(|&line| ("too_large".to_owned(), line)));
                errors.sort_by_key(|&(_, line)| line);
                (every(n, 1 + next(max as u64), 1 + next(max as u64)), max)
            };
            let (got, _) = chained(&file, &cuts, limit, piece);
            assert_eq!(got, (records, errors), "round {round}: cuts {cuts:?} of {:?}", String::from_utf8_lossy(&file));
        }
    }
}
