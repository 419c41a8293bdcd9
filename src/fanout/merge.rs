//! Worker answers checked against what they were given, and merged into the job's output.
//!
//! Nothing a worker says is taken on trust: an answer is accepted only when it
//! is well-formed JSON and accounts for exactly the items it was sent (rows
//! counted by the coordinator's own split, URLs by position). Anything else is
//! refused, and the driver retries it like a failed call. A unit that gets no
//! answer still accounts for every item it held, as error records.
//!
//! * [`TableMerge`]: transform chunks, as records in order or as partial aggregates.
//! * [`PageMerge`]: scrape batches, as results in order or as they finish.

use super::driver::{Failure, FailureKind, Input, Merge, Report, Status, Turn, Unit};
use super::split::{Piece, Span};
use crate::framing::Format;
use crate::scrape::{FailureKind as PageFailure, ItemError, Outcome, PageResult, ScrapeResponse};
use crate::transform::aggregate::{Groups, Partial, Shape};
use crate::transform::engine::prepare;
use crate::transform::output::{RowError, RowErrorKind, Stats, MAX_ERROR_RECORDS};
use crate::transform::range::Span as RangeSpan;
use crate::transform::spec::{AggregateSpec, Spec};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::ops::Range;
use std::rc::Rc;

/// Where a transform unit's rows are in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChunkMeta {
    /// A chunk cut by the coordinator: it knows the lines and the rows.
    Lines {
        /// The line the chunk starts on.
        first_line: u64,
        /// The last line its records are on.
        last_line: u64,
        /// Records in it.
        rows: u64,
        /// What the worker adds to the line numbers it counts in the chunk's body.
        line_offset: u64,
    },
    /// A byte range of a source file, which the worker fetches and cuts itself.
    Range {
        /// The range.
        bytes: Range<u64>,
        /// Where its first record starts, when the request said (a range read again).
        begin: Option<u64>,
    },
}

/// A source job's ranges, chained in order ([`crate::transform::range`]):
/// each range's first record must start where the one before it ended, and
/// its lines are counted after that one's.
#[derive(Clone, Debug)]
pub struct RangeChain {
    /// What every range's request holds besides its bytes: `source`, `spec`, `pin`.
    request: serde_json::Map<String, Value>,
    size: u64,
    /// Where the next range's first record starts: unknown after a range
    /// with no answer, until a range certain of its start.
    begin: Option<u64>,
    /// The lines before it: unknown after a range with no answer.
    lines: Option<u64>,
}

impl RangeChain {
    /// The ranges of a source of `size` bytes whose records start at
    /// `data_start`, after `header_lines` lines; `request` is what every range's request holds.
    pub fn new(request: serde_json::Map<String, Value>, size: u64, data_start: u64, header_lines: u64) -> RangeChain {
        RangeChain { request, size, begin: Some(data_start), lines: Some(header_lines) }
    }

    /// The request for range `bytes`, whose first record starts at `begin` when that is known.
    pub fn request(&self, bytes: &Range<u64>, begin: Option<u64>) -> Vec<u8> {
        let mut request = self.request.clone();
        request.insert("start".into(), json!(bytes.start));
        request.insert("end".into(), json!(bytes.end));
        if let Some(begin) = begin {
            request.insert("begin".into(), json!(begin));
        }
        serde_json::to_vec(&request).expect("values serialise")
    }
}

impl ChunkMeta {
    /// The place of a chunk (or oversized record) the splitter cut.
    pub fn lines(span: &Span, line_offset: u64) -> ChunkMeta {
        ChunkMeta::Lines { first_line: span.first_line, last_line: span.last_line, rows: span.rows, line_offset }
    }
}

impl ChunkMeta {
    /// The unit a piece of a split CSV makes: a chunk to send, or a record
    /// larger than `max_request_bytes` (the workers' request limit), which
    /// fails at once as `too_large`, its rows accounted for.
    pub fn input(piece: Piece, max_request_bytes: usize) -> Input<ChunkMeta> {
        match piece {
            Piece::Chunk(c) => Input::Unit(Unit {
                meta: ChunkMeta::lines(&c.span, c.line_offset),
                payload: Rc::new(c.body),
                items: Some(c.span.rows),
                bytes: c.span.bytes.end - c.span.bytes.start,
            }),
            Piece::Oversized(span) => {
                let unit = Unit {
                    meta: ChunkMeta::lines(&span, 0),
                    payload: Rc::new(Vec::new()),
                    items: Some(span.rows),
                    bytes: span.bytes.end - span.bytes.start,
                };
                let reason = format!(
                    "the record is larger than the {max_request_bytes} bytes a worker takes in one request \
                     (FANOUT_MAX_REQUEST_BYTES)"
                );
                Input::Failed(unit, Failure { kind: FailureKind::TooLarge, reason })
            }
        }
    }
}

/// Items per second over a report's time so far.
fn per_second(items: u64, report: &Report) -> u64 {
    (items as f64 * 1000.0 / report.elapsed_ms.max(1) as f64).round() as u64
}

/// A transform answer that passed its checks.
#[derive(Debug)]
pub struct CheckedChunk {
    body: Vec<u8>,
    /// In range mode: where the range's records are.
    range: Option<RangeSpan>,
    records: Records,
    /// In aggregate mode: merged when the chunk's turn comes, so that a job
    /// that fails before then leaves it out.
    partial: Option<Partial>,
    errors: Vec<RowError>,
    stats: Stats,
}

/// Where an answer's records are in its body.
#[derive(Debug)]
enum Records {
    /// The records with the commas between them, as one JSON array holds them:
    /// written out to a JSON answer in one copy.
    Span(Range<usize>),
    /// Each record, to be framed one by one (NDJSON).
    Each(Vec<Range<usize>>),
}

impl Records {
    fn count(&self) -> usize {
        match self {
            Records::Span(_) => 0,
            Records::Each(each) => each.len(),
        }
    }
}

/// A records array, checked (every element a JSON object) and counted, without being kept.
struct CountedObjects(u64);

impl<'de> Deserialize<'de> for CountedObjects {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Elements;
        impl<'de> serde::de::Visitor<'de> for Elements {
            type Value = CountedObjects;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of records")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<CountedObjects, A::Error> {
                let mut n = 0;
                while seq.next_element::<Object>()?.is_some() {
                    n += 1;
                }
                Ok(CountedObjects(n))
            }
        }
        d.deserialize_seq(Elements)
    }
}

/// Any JSON object, checked and dropped.
struct Object;

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Object;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a record (a JSON object)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(Object)
            }
        }
        d.deserialize_map(Entries)
    }
}

/// A transform worker's JSON answer with its records counted, not kept.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountedAnswer {
    records: CountedObjects,
    errors: Vec<RowError>,
    stats: Stats,
    #[serde(default)]
    range: Option<RangeSpan>,
    #[serde(default, rename = "timing")]
    _timing: Option<Timing>,
}

/// A worker's timing: typed, so that nothing after the records can hold an array.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Timing {
    #[serde(rename = "process_us")]
    _process_us: u64,
}

/// How a worker's record-mode JSON answer begins, and what follows its records.
const RECORDS_OPEN: &[u8] = b"{\"records\":[";
const RECORDS_CLOSE: &[u8] = b"],\"errors\":";

/// What a transform worker answers (JSON), records kept as raw JSON.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkAnswer<'a> {
    #[serde(borrow, default)]
    records: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    partial: Option<Partial>,
    errors: Vec<RowError>,
    stats: Stats,
    #[serde(default)]
    range: Option<RangeSpan>,
    #[serde(default, rename = "timing")]
    _timing: Option<Timing>,
}

/// How a transform job's output is shaped.
pub enum TableMode {
    /// Records, in file order.
    Records,
    /// Groups, from partial aggregates merged as they arrive.
    Aggregate {
        /// The merged groups.
        groups: Box<Groups>,
        /// The spec, for `having`, `sort` and `limit` at the end.
        spec: Box<AggregateSpec>,
    },
}

impl TableMode {
    /// The output shape of `spec` over a file with columns `names`, and the spec
    /// each chunk is run with (aggregates asked for as partial state, to be
    /// merged here). A mistake in the spec is an error naming it.
    pub fn of_spec(spec: &Spec, names: &[String]) -> Result<(TableMode, Spec), String> {
        let program = prepare(spec, names)?;
        let mode = match &spec.aggregate {
            Some(aggregate) => {
                let shape = Shape::compile(aggregate, &program.schema())?.shape;
                TableMode::Aggregate { groups: Box::new(Groups::new(shape)), spec: Box::new(aggregate.clone()) }
            }
            None => TableMode::Records,
        };
        let mut chunk_spec = spec.clone();
        if let Some(aggregate) = chunk_spec.aggregate.as_mut() {
            aggregate.partial = true;
        }
        Ok((mode, chunk_spec))
    }
}

/// Merges transform answers. See the module documentation.
pub struct TableMerge {
    format: Format,
    mode: TableMode,
    /// Whether the spec has a filter: without one, no row may be counted as filtered.
    filter: bool,
    started: bool,
    first_record: bool,
    /// Error records of a JSON answer wait for the end, at most [`MAX_ERROR_RECORDS`] of them.
    errors: Vec<RowError>,
    stats: Stats,
    ranges: Option<RangeChain>,
}

impl TableMerge {
    /// A merge writing `format`, for a spec with a filter or not.
    pub fn new(format: Format, mode: TableMode, filter: bool) -> TableMerge {
        TableMerge {
            format,
            mode,
            filter,
            started: false,
            first_record: true,
            errors: Vec::new(),
            stats: Stats::default(),
            ranges: None,
        }
    }

    /// The same merge, for a source job's ranges.
    pub fn with_ranges(self, chain: RangeChain) -> TableMerge {
        TableMerge { ranges: Some(chain), ..self }
    }

    /// Opens a JSON answer at the first unit, so the caller's response starts
    /// (and a caller that went away is noticed) before the end.
    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            match (self.format, &self.mode) {
                (Format::Json, TableMode::Records) => out.extend_from_slice(b"{\"records\":["),
                (Format::Json, TableMode::Aggregate { .. }) => out.push(b'{'),
                (Format::Ndjson, _) => {}
            }
        }
    }

    fn error(&mut self, err: RowError, out: &mut Vec<u8>) {
        match self.format {
            Format::Ndjson => line(out, &json!({ "error": err })),
            Format::Json if self.errors.len() < MAX_ERROR_RECORDS => self.errors.push(err),
            Format::Json => self.stats.errors_omitted += 1,
        }
    }

    fn summary(&self, report: &Report) -> Value {
        let c = &report.counters;
        let mut v = json!({
            "status": report.status,
            "rows_in": self.stats.rows_in,
            "rows_out": self.stats.rows_out,
            "rows_filtered": self.stats.rows_filtered,
            "rows_errored": self.stats.rows_errored,
            "rows_not_attempted": c.items_not_attempted,
            "bytes": c.bytes,
            "bytes_not_processed": c.bytes_failed,
            "chunks": c.units,
            "chunks_failed": c.units_failed,
            "invocations": c.invocations,
            "retries": c.retries,
            "timeouts": c.timeouts,
            "rejected_answers": c.rejected_answers,
            "ranges_read_again": c.redone,
            "elapsed_ms": report.elapsed_ms,
            "rows_per_s": per_second(self.stats.rows_in, report),
            "mb_per_s": (c.bytes_done as f64 / 10.0 / report.elapsed_ms.max(1) as f64).round() / 100.0,
            "peak_held_bytes": report.peak_held_bytes,
        });
        if let Some(reason) = &report.reason {
            v["reason"] = json!(reason);
        }
        v
    }
}

/// An answer checked by [`accept_span`].
struct Spanned {
    span: Range<usize>,
    errors: Vec<RowError>,
    stats: Stats,
    range: Option<RangeSpan>,
}

/// The fast way for records out as JSON: the answer is checked in one pass
/// that counts its records without keeping them, and the records are kept as
/// the one span of the body that holds them, commas included. `None` when the
/// answer is not laid out as a worker writes it (then the full way decides).
fn accept_span(meta: &ChunkMeta, body: &[u8], filter: bool, size: Option<u64>) -> Result<Option<Spanned>, String> {
    let answer: CountedAnswer =
        serde_json::from_slice(body).map_err(|e| format!("it is not a transform answer: {e}"))?;
    check_counts(meta, &answer.stats, &answer.errors, filter, answer.range.as_ref(), size)?;
    if answer.records.0 != answer.stats.rows_out {
        return Err(format!("it has {} records for {} rows out", answer.records.0, answer.stats.rows_out));
    }
    // The records end at a `],"errors":` whose rest is exactly the answer's
    // tail (error records, counts, timing, each typed): a `],"errors":` inside a
    // record is followed by more of the records, which that tail cannot hold.
    let Some(end) = memchr::memmem::rfind(body, RECORDS_CLOSE) else { return Ok(None) };
    let mut tail = b"{".to_vec();
    tail.extend_from_slice(&body[end + 2..]);
    if serde_json::from_slice::<AnswerTail>(&tail).is_err() {
        return Ok(None);
    }
    let span = RECORDS_OPEN.len()..end;
    let records = &body[span.clone()];
    if (answer.records.0 == 0) != records.is_empty() || (!records.is_empty() && !records.ends_with(b"}")) {
        return Ok(None);
    }
    Ok(Some(Spanned { span, errors: answer.errors, stats: answer.stats, range: answer.range }))
}

/// What follows the records in a worker's answer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerTail {
    #[serde(rename = "errors")]
    _errors: Vec<serde::de::IgnoredAny>,
    #[serde(rename = "stats")]
    _stats: Stats,
    #[serde(default, rename = "range")]
    _range: Option<RangeSpan>,
    #[serde(default, rename = "timing")]
    _timing: Option<Timing>,
}

/// Checks an answer's counts against themselves, against what its unit holds
/// and against the spec: without a filter, no row is filtered; each error
/// record names a row inside the unit, each row once, in order. A range's
/// answer must say where its records are (`range`), within a file of `size`.
fn check_counts(
    meta: &ChunkMeta,
    s: &Stats,
    errors: &[RowError],
    filter: bool,
    range: Option<&RangeSpan>,
    size: Option<u64>,
) -> Result<(), String> {
    s.check()?;
    if !filter && s.rows_filtered > 0 {
        return Err(format!("it counts {} rows as filtered, but the spec has no filter", s.rows_filtered));
    }
    if (errors.len() as u64).checked_add(s.errors_omitted) != Some(s.rows_errored) {
        return Err(format!(
            "it has {} error records (and {} omitted) for {} errored rows",
            errors.len(),
            s.errors_omitted,
            s.rows_errored
        ));
    }
    match meta {
        ChunkMeta::Lines { first_line, last_line, rows, .. } => {
            if s.rows_in != *rows {
                return Err(format!("it read {} rows of a chunk holding {rows}", s.rows_in));
            }
            if let Some(e) = errors.iter().find(|e| e.line < *first_line || e.line > *last_line) {
                return Err(format!(
                    "an error record names line {}, outside the chunk's lines {first_line} to {last_line}",
                    e.line
                ));
            }
            if let Some(w) = errors.windows(2).find(|w| w[1].line <= w[0].line) {
                return Err(format!(
                    "its error records name line {} after line {}: not one per row, in order",
                    w[1].line, w[0].line
                ));
            }
        }
        ChunkMeta::Range { bytes, begin } => {
            let r = range.ok_or("it does not say where the range's records are (range)")?;
            check_span(bytes, *begin, r, size)?;
            if r.begin == r.end && s.rows_in > 0 {
                return Err(format!("it read {} rows from no bytes", s.rows_in));
            }
            let owned = r.begin..r.end;
            if let Some(e) = errors.iter().find(|e| !e.byte.is_some_and(|b| owned.contains(&b))) {
                return Err(format!(
                    "an error record names byte {:?}, outside the range's records at {}-{}",
                    e.byte, r.begin, r.end
                ));
            }
            if let Some(e) = errors.iter().find(|e| e.line == 0 || e.line > r.newlines.saturating_add(1)) {
                return Err(format!(
                    "an error record names line {}, outside the range's {} lines",
                    e.line,
                    r.newlines + 1
                ));
            }
            if let Some(w) = errors.windows(2).find(|w| w[1].byte <= w[0].byte) {
                return Err(format!(
                    "its error records name byte {:?} after byte {:?}: not one per row, in order",
                    w[1].byte, w[0].byte
                ));
            }
        }
    }
    Ok(())
}

/// Checks where a range's answer says its records are: from a record start at
/// or after the range's start (`begin` when the request named it) to the first
/// record start at or after its end, within the file.
fn check_span(bytes: &Range<u64>, begin: Option<u64>, r: &RangeSpan, size: Option<u64>) -> Result<(), String> {
    let (from, to) = (r.begin, r.end);
    if from < bytes.start || to < from {
        return Err(format!(
            "it says its records are at bytes {from}-{to}, for the range {}-{}",
            bytes.start, bytes.end
        ));
    }
    if let Some(b) = begin.filter(|&b| b != from) {
        return Err(format!("its records start at byte {from}, where byte {b} was asked for"));
    }
    let owns_records = from < bytes.end;
    if (owns_records && to < bytes.end) || (!owns_records && to != from) {
        return Err(format!("its records end at byte {to}, which no range {}-{} ends at", bytes.start, bytes.end));
    }
    match size {
        Some(size) if to > size || (bytes.end == size && to != size) => {
            Err(format!("its records end at byte {to} of a file of {size} bytes"))
        }
        _ => Ok(()),
    }
}

impl Merge for TableMerge {
    type Meta = ChunkMeta;
    type Accepted = CheckedChunk;

    fn accept(&mut self, meta: &ChunkMeta, body: Vec<u8>) -> Result<CheckedChunk, String> {
        if self.format == Format::Json && matches!(self.mode, TableMode::Records) && body.starts_with(RECORDS_OPEN) {
            let size = self.ranges.as_ref().map(|c| c.size);
            if let Some(checked) = accept_span(meta, &body, self.filter, size)? {
                let body = if checked.span.is_empty() { Vec::new() } else { body };
                let (errors, stats, range) = (checked.errors, checked.stats, checked.range);
                let records = Records::Span(checked.span);
                return Ok(CheckedChunk { body, range, records, partial: None, errors, stats });
            }
        }
        let answer: ChunkAnswer<'_> =
            serde_json::from_slice(&body).map_err(|e| format!("it is not a transform answer: {e}"))?;
        let size = self.ranges.as_ref().map(|c| c.size);
        check_counts(meta, &answer.stats, &answer.errors, self.filter, answer.range.as_ref(), size)?;
        let ChunkAnswer { records, partial, errors, stats: s, range, .. } = answer;
        let records = match (&mut self.mode, records, &partial) {
            (TableMode::Records, Some(records), None) => {
                if records.len() as u64 != s.rows_out {
                    return Err(format!("it has {} records for {} rows out", records.len(), s.rows_out));
                }
                let base = body.as_ptr() as usize;
                records
                    .iter()
                    .map(|r| {
                        let text = r.get();
                        if !text.starts_with('{') {
                            return Err(format!("a record is not a JSON object: {}", snippet(text)));
                        }
                        let at = text.as_ptr() as usize - base;
                        Ok(at..at + text.len())
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
            (TableMode::Aggregate { groups, .. }, None, Some(partial)) => {
                groups.check(partial).map_err(|e| format!("its partial aggregate does not merge: {e}"))?;
                Vec::new()
            }
            (TableMode::Records, _, _) => return Err("it has no records where records were asked for".into()),
            (TableMode::Aggregate { .. }, _, _) => {
                return Err("it has no partial aggregate where one was asked for".into())
            }
        };
        let body = if records.is_empty() { Vec::new() } else { body };
        Ok(CheckedChunk { body, range, records: Records::Each(records), partial, errors, stats: s })
    }

    fn turn(&mut self, meta: &mut ChunkMeta, c: &CheckedChunk) -> Turn {
        let (ChunkMeta::Range { bytes, begin }, Some(chain), Some(span)) = (meta, &self.ranges, c.range) else {
            return Turn::Stands;
        };
        match chain.begin {
            Some(expected) if span.begin == expected => Turn::Stands,
            Some(expected) => {
                *begin = Some(expected);
                Turn::Redo(chain.request(bytes, Some(expected)))
            }
            None if span.certain => Turn::Stands,
            None => Turn::Fails(Failure {
                kind: FailureKind::Worker,
                reason: "where its first record starts is not known: the range before it has no answer, and a \
                         quoted field could span the cut"
                    .into(),
            }),
        }
    }

    fn held_bytes(&self, c: &CheckedChunk) -> usize {
        let groups = c.partial.as_ref().map_or(0, |p| p.groups.len());
        c.body.capacity() + c.records.count() * 16 + c.errors.len() * 128 + groups * 128
    }

    fn items(&self, c: &CheckedChunk) -> (u64, u64) {
        (c.stats.rows_in, c.stats.rows_errored)
    }

    fn emit(&mut self, meta: &ChunkMeta, c: CheckedChunk, out: &mut Vec<u8>) {
        self.start(out);
        if let (TableMode::Aggregate { groups, .. }, Some(partial)) = (&mut self.mode, &c.partial) {
            // Checked when accepted; only sums grown past what is kept exactly can fail here.
            if let Err(e) = groups.merge(partial) {
                let failure =
                    Failure { kind: FailureKind::Worker, reason: format!("its partial aggregate does not merge: {e}") };
                return self.fail(meta, &failure, out);
            }
        }
        match &c.records {
            Records::Span(span) if !span.is_empty() => {
                if !self.first_record {
                    out.push(b',');
                }
                self.first_record = false;
                out.extend_from_slice(&c.body[span.clone()]);
            }
            Records::Span(_) => {}
            Records::Each(each) => {
                for r in each {
                    let record = &c.body[r.clone()];
                    match self.format {
                        Format::Json => {
                            if !self.first_record {
                                out.push(b',');
                            }
                            self.first_record = false;
                            out.extend_from_slice(record);
                        }
                        Format::Ndjson => {
                            out.extend_from_slice(b"{\"record\":");
                            out.extend_from_slice(record);
                            out.extend_from_slice(b"}\n");
                        }
                    }
                }
            }
        }
        let omitted = c.stats.errors_omitted;
        self.stats.add(&Stats { errors_omitted: 0, ..c.stats });
        let mut errors = c.errors;
        if let (Some(chain), Some(span)) = (&mut self.ranges, c.range) {
            // A range counts lines from its first record's; after a range
            // with no answer, the lines before are unknown (0), the bytes exact.
            errors.iter_mut().for_each(|e| e.line = chain.lines.map_or(0, |l| l + e.line));
            chain.begin = Some(span.end);
            chain.lines = chain.lines.map(|l| l + span.newlines);
        }
        for err in errors {
            self.error(err, out);
        }
        self.stats.errors_omitted += omitted;
    }

    fn fail(&mut self, meta: &ChunkMeta, failure: &Failure, out: &mut Vec<u8>) {
        self.start(out);
        let kind = match failure.kind {
            FailureKind::Worker => RowErrorKind::Worker,
            FailureKind::TooLarge => RowErrorKind::TooLarge,
            FailureKind::NotAttempted => RowErrorKind::NotAttempted,
        };
        let err = match meta {
            ChunkMeta::Lines { first_line, last_line, rows, .. } => {
                self.stats.rows_in += rows;
                self.stats.rows_errored += rows;
                RowError {
                    line: *first_line,
                    byte: None,
                    column: None,
                    kind,
                    message: format!(
                        "the {rows} rows on lines {first_line} to {last_line} were not processed: {}",
                        failure.reason
                    ),
                }
            }
            ChunkMeta::Range { bytes, .. } => {
                // Where its records start is known when the range before had an answer.
                let (begin, lines) = match self.ranges.as_mut() {
                    Some(chain) => (chain.begin.take(), chain.lines.take()),
                    None => (None, None),
                };
                RowError {
                    line: lines.map_or(0, |l| l + 1),
                    byte: Some(begin.unwrap_or(bytes.start)),
                    column: None,
                    kind,
                    message: format!(
                        "the rows starting in bytes {} to {} of the source were not processed: {}",
                        bytes.start,
                        bytes.end.saturating_sub(1),
                        failure.reason
                    ),
                }
            }
        };
        self.error(err, out);
    }

    fn progress(&mut self, report: &Report, out: &mut Vec<u8>) {
        if self.format != Format::Ndjson {
            return;
        }
        let c = &report.counters;
        line(
            out,
            &json!({ "progress": {
                "done": c.units_done,
                "total": report.units_total,
                "failed": c.items_failed,
                "rows": c.items_done,
                "bytes_done": c.bytes_done,
                "bytes_total": report.bytes_total,
                "elapsed_ms": report.elapsed_ms,
                "rows_per_s": per_second(c.items_done, report),
            }}),
        );
    }

    fn finish(&mut self, report: &Report, out: &mut Vec<u8>) {
        self.start(out);
        let summary = self.summary(report);
        let body = match &self.mode {
            TableMode::Records => None,
            TableMode::Aggregate { groups, spec } if spec.partial => Some(("partial", json!(groups.to_partial()))),
            TableMode::Aggregate { groups, spec } => Some((
                "groups",
                // The spec was checked against this shape before the job started.
                Value::Array(groups.finish(spec).unwrap_or_default().into_iter().map(Value::Object).collect()),
            )),
        };
        let stats = json!(self.stats);
        match self.format {
            Format::Json => {
                let mut tail = serde_json::Map::new();
                match body {
                    Some((key, value)) => drop(tail.insert(key.into(), value)),
                    None => out.extend_from_slice(b"],"),
                }
                tail.insert("errors".into(), json!(self.errors));
                tail.insert("stats".into(), stats);
                tail.insert("summary".into(), summary);
                let tail = serde_json::to_vec(&Value::Object(tail)).expect("values serialise");
                // The answer's opening brace is already out.
                out.extend_from_slice(&tail[1..]);
            }
            Format::Ndjson => {
                match body {
                    Some(("groups", Value::Array(groups))) => {
                        groups.into_iter().for_each(|g| line(out, &json!({ "group": g })))
                    }
                    Some((_, partial)) => line(out, &json!({ "partial": partial })),
                    None => {}
                }
                line(out, &json!({ "stats": stats, "summary": summary }));
            }
        }
    }
}

/// Where a scrape batch's URLs are in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchMeta {
    /// The job index of the batch's first URL.
    pub start: u64,
    /// The URLs, in order.
    pub urls: Vec<String>,
}

/// A scrape answer that passed its checks, its results indexed within the job.
#[derive(Debug)]
pub struct CheckedBatch {
    results: Vec<PageResult>,
    bytes: usize,
}

/// Merges scrape answers. See the module documentation.
pub struct PageMerge {
    format: Format,
    /// Pages fetched at once from one host, across every batch.
    per_host: usize,
    /// Pages of one host one batch fetches at once, at most (its own per-host limit and concurrency).
    per_batch: usize,
    /// One batch at a time per host (a delay between its requests is kept across batches).
    whole_hosts: bool,
    started: bool,
    first: bool,
    results: u64,
    pages: u64,
    errors: u64,
}

impl PageMerge {
    /// A merge writing `format`: JSON in input order, NDJSON as batches finish.
    pub fn new(format: Format) -> PageMerge {
        PageMerge {
            format,
            per_host: usize::MAX,
            per_batch: usize::MAX,
            whole_hosts: false,
            started: false,
            first: true,
            results: 0,
            pages: 0,
            errors: 0,
        }
    }

    /// The same merge, keeping the pages fetched at once from one host to
    /// `per_host` across the whole job, where one batch fetches at most
    /// `per_batch` of a host's pages at once: a batch takes, of each host it
    /// holds, as many as it may fetch at once (its URLs there, at most
    /// `per_batch`), and starts only when every one of its hosts has that room.
    pub fn with_per_host(self, per_host: usize, per_batch: usize) -> PageMerge {
        let per_host = per_host.max(1);
        PageMerge { per_host, per_batch: per_batch.clamp(1, per_host), ..self }
    }

    /// The same merge, running one batch at a time for each host (each takes
    /// all of `per_host` of its hosts): the spacing a worker keeps between its
    /// requests to a host then holds across the job.
    pub fn one_batch_per_host(self) -> PageMerge {
        PageMerge { whole_hosts: true, ..self }
    }

    fn write(&mut self, result: &PageResult, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            if self.format == Format::Json {
                out.extend_from_slice(b"{\"results\":[");
            }
        }
        self.results += 1;
        match result.outcome {
            Outcome::Page(_) => self.pages += 1,
            Outcome::Error(_) => self.errors += 1,
        }
        match self.format {
            Format::Json => {
                if !self.first {
                    out.push(b',');
                }
                self.first = false;
                serde_json::to_writer(&mut *out, result).expect("results serialise");
            }
            Format::Ndjson => line(out, result),
        }
    }
}

impl Merge for PageMerge {
    type Meta = BatchMeta;

    fn claims(&self, meta: &BatchMeta) -> Vec<(String, usize)> {
        if self.per_host == usize::MAX {
            return Vec::new();
        }
        let mut hosts: HashMap<String, usize> = HashMap::new();
        for host in meta.urls.iter().filter_map(|u| crate::schedule::host_of(u)) {
            *hosts.entry(host).or_default() += 1;
        }
        let claim = |n: usize| if self.whole_hosts { self.per_host } else { n.min(self.per_batch) };
        hosts.into_iter().map(|(host, n)| (host, claim(n))).collect()
    }

    fn claim_limit(&self) -> usize {
        self.per_host
    }
    type Accepted = CheckedBatch;

    fn accept(&mut self, meta: &BatchMeta, body: Vec<u8>) -> Result<CheckedBatch, String> {
        let answer: ScrapeResponse =
            serde_json::from_slice(&body).map_err(|e| format!("it is not a scrape answer: {e}"))?;
        if answer.results.len() != meta.urls.len() {
            return Err(format!("it has {} results for the batch's {} URLs", answer.results.len(), meta.urls.len()));
        }
        let mut results = answer.results;
        for (i, (r, url)) in results.iter_mut().zip(&meta.urls).enumerate() {
            if r.index != i || &r.url != url {
                return Err(format!("result {i} is for URL {} {:?}, not URL {i} {url:?}", r.index, snippet(&r.url)));
            }
            r.index = (meta.start as usize) + i;
        }
        Ok(CheckedBatch { results, bytes: body.len() })
    }

    fn held_bytes(&self, c: &CheckedBatch) -> usize {
        c.bytes
    }

    fn items(&self, c: &CheckedBatch) -> (u64, u64) {
        let failed = c.results.iter().filter(|r| matches!(r.outcome, Outcome::Error(_))).count();
        (c.results.len() as u64, failed as u64)
    }

    fn ordered(&self) -> bool {
        self.format == Format::Json
    }

    fn emit(&mut self, _meta: &BatchMeta, c: CheckedBatch, out: &mut Vec<u8>) {
        for r in &c.results {
            self.write(r, out);
        }
    }

    fn fail(&mut self, meta: &BatchMeta, failure: &Failure, out: &mut Vec<u8>) {
        let kind = match failure.kind {
            FailureKind::NotAttempted => PageFailure::NotAttempted,
            FailureKind::Worker => PageFailure::Worker,
            // Of a URL list, only a line too long to be a URL is too large.
            FailureKind::TooLarge => PageFailure::InvalidUrl,
        };
        for (i, url) in meta.urls.iter().enumerate() {
            let result = PageResult {
                index: meta.start as usize + i,
                url: url.clone(),
                outcome: Outcome::Error(ItemError::new(kind, failure.reason.clone())),
            };
            self.write(&result, out);
        }
    }

    fn progress(&mut self, report: &Report, out: &mut Vec<u8>) {
        if self.format != Format::Ndjson {
            return;
        }
        let c = &report.counters;
        line(
            out,
            &json!({ "progress": {
                "done": c.items_done + c.items_not_attempted,
                "total": report.total,
                "failed": c.items_failed,
                "pages": self.pages,
                "elapsed_ms": report.elapsed_ms,
                "pages_per_s": per_second(self.pages, report),
            }}),
        );
    }

    fn finish(&mut self, report: &Report, out: &mut Vec<u8>) {
        let c = &report.counters;
        let mut summary = json!({
            "status": report.status,
            "urls": c.items_done + c.items_not_attempted,
            "results": self.results,
            "pages": self.pages,
            "errors": self.errors,
            "not_attempted": c.items_not_attempted,
            "batches": c.units,
            "batches_failed": c.units_failed,
            "invocations": c.invocations,
            "retries": c.retries,
            "timeouts": c.timeouts,
            "rejected_answers": c.rejected_answers,
            "elapsed_ms": report.elapsed_ms,
            "pages_per_s": per_second(self.pages, report),
            "peak_held_bytes": report.peak_held_bytes,
        });
        if let Some(reason) = &report.reason {
            summary["reason"] = json!(reason);
        }
        match self.format {
            Format::Json => {
                if !self.started {
                    out.extend_from_slice(b"{\"results\":[");
                }
                out.extend_from_slice(b"],\"summary\":");
                serde_json::to_writer(&mut *out, &summary).expect("values serialise");
                out.push(b'}');
            }
            Format::Ndjson => line(out, &json!({ "summary": summary })),
        }
        debug_assert!(report.status != Status::Complete || self.results == c.items_done);
    }
}

fn line(out: &mut Vec<u8>, value: &impl serde::Serialize) {
    serde_json::to_writer(&mut *out, value).expect("values serialise");
    out.push(b'\n');
}

/// The start of a text, for messages.
fn snippet(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::driver::Merge;

    fn lines(rows: u64) -> ChunkMeta {
        ChunkMeta::Lines { first_line: 2, last_line: 1 + rows, rows, line_offset: 0 }
    }

    fn accept(format: Format, answer: &str, rows: u64) -> Result<Vec<u8>, String> {
        let mut merge = TableMerge::new(format, TableMode::Records, false);
        let checked = merge.accept(&lines(rows), answer.as_bytes().to_vec())?;
        let mut out = Vec::new();
        merge.emit(&lines(rows), checked, &mut out);
        Ok(out)
    }

    const STATS: &str = r#""stats":{"rows_in":2,"rows_out":2,"rows_filtered":0,"rows_errored":0}"#;

    /// An answer waiting for its turn counts against the window with its body and,
    /// in NDJSON, each record's place: with nothing counted, the window would not bound memory.
    #[test]
    fn a_waiting_answer_counts_its_body_and_records() {
        let answer = format!(r#"{{"records":[{{"a":1}},{{"a":2}}],"errors":[],{STATS},"timing":{{"process_us":3}}}}"#);
        for (format, framed) in [(Format::Json, 0), (Format::Ndjson, 2)] {
            let mut merge = TableMerge::new(format, TableMode::Records, false);
            let checked = merge.accept(&lines(2), answer.as_bytes().to_vec()).unwrap();
            assert!(checked.body.capacity() >= answer.len());
            assert_eq!(merge.held_bytes(&checked), checked.body.capacity() + framed * 16, "{format:?}");
        }
    }

    /// Error records and partial groups waiting for their turn count too.
    #[test]
    fn a_waiting_answer_counts_its_errors_and_groups() {
        let answer = r#"{"records":[],"errors":[{"line":2,"kind":"field_count","message":"m"},{"line":3,"kind":"field_count","message":"m"}],"stats":{"rows_in":2,"rows_out":0,"rows_filtered":0,"rows_errored":2}}"#;
        let mut merge = TableMerge::new(Format::Json, TableMode::Records, false);
        let checked = merge.accept(&lines(2), answer.as_bytes().to_vec()).unwrap();
        assert_eq!(merge.held_bytes(&checked), checked.body.capacity() + 2 * 128);
        assert_eq!(merge.items(&checked), (2, 2), "rows read, rows failed");
    }

    /// A JSON answer keeps the first MAX_ERROR_RECORDS error records and counts the rest.
    #[test]
    fn a_json_answer_keeps_the_first_error_records_and_counts_the_rest() {
        let mut merge = TableMerge::new(Format::Json, TableMode::Records, false);
        let failure = Failure { kind: FailureKind::Worker, reason: "no answer".into() };
        for first_line in 0..=MAX_ERROR_RECORDS as u64 {
            let meta = ChunkMeta::Lines { first_line, last_line: first_line, rows: 1, line_offset: 0 };
            merge.fail(&meta, &failure, &mut Vec::new());
        }
        assert_eq!((merge.errors.len(), merge.stats.errors_omitted), (MAX_ERROR_RECORDS, 1));
        assert_eq!(merge.errors.last().unwrap().line, MAX_ERROR_RECORDS as u64 - 1);
    }

    #[test]
    fn error_records_a_worker_left_out_are_counted_once() {
        let stats = r#""stats":{"rows_in":2,"rows_out":0,"rows_filtered":0,"rows_errored":2,"errors_omitted":2}"#;
        let answer = format!(r#"{{"records":[],"errors":[],{stats}}}"#);
        let mut merge = TableMerge::new(Format::Json, TableMode::Records, false);
        let checked = merge.accept(&lines(2), answer.into_bytes()).unwrap();
        merge.emit(&lines(2), checked, &mut Vec::new());
        assert_eq!((merge.stats.rows_errored, merge.stats.errors_omitted), (2, 2));
    }

    #[test]
    fn records_pass_through_as_written_in_both_formats() {
        let answer = format!(
            r#"{{"records":[{{"a":"],\"errors\":"}},{{"a":[1]}}],"errors":[],{STATS},"timing":{{"process_us":3}}}}"#
        );
        assert_eq!(accept(Format::Json, &answer, 2).unwrap(), br#"{"records":[{"a":"],\"errors\":"},{"a":[1]}"#);
        assert_eq!(
            accept(Format::Ndjson, &answer, 2).unwrap(),
            b"{\"record\":{\"a\":\"],\\\"errors\\\":\"}}\n{\"record\":{\"a\":[1]}}\n"
        );
    }

    /// An answer as a worker writes it is kept as the one span of its records (one copy out); one laid
    /// out otherwise, record by record.
    #[test]
    fn a_workers_layout_takes_the_fast_way() {
        let written = format!(r#"{{"records":[{{"a":1}},{{"a":2}}],"errors":[],{STATS}}}"#);
        let spaced = format!(r#"{{"records":[{{"a":1}},{{"a":2}} ],"errors":[],{STATS}}}"#);
        for (answer, fast) in [(written, true), (spaced, false)] {
            let mut merge = TableMerge::new(Format::Json, TableMode::Records, false);
            let checked = merge.accept(&lines(2), answer.clone().into_bytes()).unwrap();
            assert_eq!(matches!(checked.records, Records::Span(_)), fast, "{answer}");
            let mut out = Vec::new();
            merge.emit(&lines(2), checked, &mut out);
            merge.finish(&report(), &mut out);
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["records"], json!([{"a": 1}, {"a": 2}]), "{answer}");
        }
    }

    #[test]
    fn records_are_found_however_the_answer_is_laid_out() {
        // A record holding `],"errors":`, keys in another order, spaces: all read right.
        let one = r#""stats":{"rows_in":1,"rows_out":1,"rows_filtered":0,"rows_errored":0}"#;
        for answer in [
            format!(r#"{{"records":[{{"a":[{{}}],"errors":1}}],{one},"errors":[]}}"#),
            format!(r#"{{"records":[{{"a":[{{}}],"errors":1}}], "errors": [], {one}}}"#),
            format!(r#"{{"errors":[],"records":[{{"a":[{{}}],"errors":1}}],{one}}}"#),
        ] {
            assert_eq!(accept(Format::Json, &answer, 1).unwrap(), br#"{"records":[{"a":[{}],"errors":1}"#, "{answer}");
        }
    }

    #[test]
    fn answers_that_could_hide_records_elsewhere_are_refused() {
        for (answer, why) in [
            (format!(r#"{{"records":[{{"a":1}},2],"errors":[],{STATS}}}"#), "JSON object"),
            (
                format!(
                    r#"{{"records":[{{"a":1}},{{"b":2}}],"errors":[{{"line":2,"kind":"worker","message":"m","x":[1],"errors":[]}}],{STATS}}}"#
                ),
                "unknown field",
            ),
            (
                format!(r#"{{"records":[{{"a":1}},{{"b":2}}],"errors":[],{STATS},"timing":{{"x":[1]}}}}"#),
                "unknown field",
            ),
            (format!(r#"{{"records":[{{"a":1}},{{"b":2}}],"errors":[],{STATS},"errors":[]}}"#), "duplicate field"),
            (format!(r#"{{"records":[{{"a":1}}],"errors":[],{STATS}}}"#), "1 records for 2 rows out"),
            (format!(r#"{{"records":[{{"a":1}},{{"b":2}}],"errors":[],{STATS}"#), "not a transform answer"),
        ] {
            for format in [Format::Json, Format::Ndjson] {
                let err = accept(format, &answer, 2).unwrap_err();
                assert!(err.contains(why), "{format:?} {answer}: {err}");
            }
        }
    }

    /// Lies that keep the counts consistent but break what the spec and the
    /// chunk allow: a record dropped and counted as filtered with no filter in
    /// the spec, a made-up error record for a row that already has one.
    #[test]
    fn filtered_rows_need_a_filter_and_each_row_errs_once() {
        let filtered = r#"{"records":[{"a":1}],"errors":[],"stats":{"rows_in":2,"rows_out":1,"rows_filtered":1,"rows_errored":0}}"#;
        for format in [Format::Json, Format::Ndjson] {
            let err = accept(format, filtered, 2).unwrap_err();
            assert!(err.contains("no filter"), "{err}");
            let mut with_filter = TableMerge::new(format, TableMode::Records, true);
            assert!(with_filter.accept(&lines(2), filtered.as_bytes().to_vec()).is_ok());
        }
        let twice = r#"{"records":[],"errors":[{"line":2,"kind":"field_count","message":"m"},{"line":2,"kind":"field_count","message":"m"}],"stats":{"rows_in":2,"rows_out":0,"rows_filtered":0,"rows_errored":2}}"#;
        assert!(accept(Format::Json, twice, 2).unwrap_err().contains("not one per row"));
        let backwards = r#"{"records":[],"errors":[{"line":3,"kind":"field_count","message":"m"},{"line":2,"kind":"field_count","message":"m"}],"stats":{"rows_in":2,"rows_out":0,"rows_filtered":0,"rows_errored":2}}"#;
        assert!(accept(Format::Ndjson, backwards, 2).unwrap_err().contains("not one per row"));
        let mut ranges = TableMerge::new(Format::Json, TableMode::Records, false);
        let same_byte = r#"{"records":[],"errors":[{"line":1,"byte":5,"kind":"field_count","message":"m"},{"line":1,"byte":5,"kind":"field_count","message":"m"}],"stats":{"rows_in":2,"rows_out":0,"rows_filtered":0,"rows_errored":2}}"#;
        let same_byte = same_byte.replace(r#","stats""#, r#","range":{"begin":0,"end":10,"newlines":2},"stats""#);
        let meta = ChunkMeta::Range { bytes: 0..10, begin: None };
        let err = ranges.accept(&meta, same_byte.into_bytes()).unwrap_err();
        assert!(err.contains("not one per row"), "{err}");
    }

    #[test]
    fn counts_and_lines_are_checked_against_the_chunk() {
        let bad_line = r#"{"records":[],"errors":[{"line":9,"kind":"field_count","message":"m"}],"stats":{"rows_in":1,"rows_out":0,"rows_filtered":0,"rows_errored":1}}"#;
        assert!(accept(Format::Json, bad_line, 1).unwrap_err().contains("outside the chunk's lines"));
        let unbalanced =
            r#"{"records":[],"errors":[],"stats":{"rows_in":2,"rows_out":0,"rows_filtered":0,"rows_errored":1}}"#;
        assert!(accept(Format::Json, unbalanced, 2).unwrap_err().contains("do not add up"));
        let fewer = r#"{"records":[{"a":1}],"errors":[],"stats":{"rows_in":1,"rows_out":1,"rows_filtered":0,"rows_errored":0}}"#;
        assert!(accept(Format::Json, fewer, 2).unwrap_err().contains("read 1 rows of a chunk holding 2"));
    }

    /// In aggregate mode, a partial that lists a group twice is refused when it arrives, in both formats.
    #[test]
    fn a_partial_listing_a_group_twice_is_refused() {
        let spec = crate::transform::spec::parse(
            br#"{"columns": ["region"], "aggregate": {"group_by": ["region"], "metrics": [{"op": "count"}]}}"#,
        )
        .unwrap();
        let group = json!({"key": ["north"], "state": [{"count": 1}]});
        let stats = r#""stats":{"rows_in":2,"rows_out":2,"rows_filtered":0,"rows_errored":0}"#;
        for (groups, refused) in [(json!([group]), false), (json!([group, group]), true)] {
            for format in [Format::Json, Format::Ndjson] {
                let (mode, _) = TableMode::of_spec(&spec, &["region".to_owned()]).unwrap();
                let TableMode::Aggregate { groups: empty, .. } = &mode else { panic!("the spec aggregates") };
                let mut partial = json!(empty.to_partial());
                partial["groups"] = groups.clone();
                let answer = format!(r#"{{"partial":{partial},"errors":[],{stats}}}"#);
                let got = TableMerge::new(format, mode, false).accept(&lines(2), answer.into_bytes());
                match got {
                    Err(err) if refused => assert!(
                        err.contains("its partial aggregate does not merge: partial group 1: its key appears twice"),
                        "{format:?} {groups}: {err}"
                    ),
                    Ok(_) if !refused => {}
                    other => panic!("{format:?} {groups}: {other:?}"),
                }
            }
        }
    }

    /// A report whose figures all differ, so that one read from the wrong counter shows.
    fn report() -> Report {
        Report {
            status: Status::Stopped,
            reason: Some("the deadline passed".into()),
            halted_by: None,
            total: Some(1_000),
            units_total: Some(20),
            bytes_total: Some(5_000_000),
            elapsed_ms: 2_000,
            counters: crate::fanout::driver::Counters {
                units: 11,
                units_done: 10,
                units_failed: 3,
                invocations: 14,
                retries: 4,
                timeouts: 2,
                rejected_answers: 1,
                redone: 0,
                items_done: 500,
                items_failed: 70,
                items_not_attempted: 30,
                bytes: 4_000_000,
                bytes_done: 3_000_000,
                bytes_failed: 900_000,
            },
            peak_held_bytes: 12_345,
        }
    }

    fn ndjson_lines(out: &[u8]) -> Vec<Value> {
        out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect()
    }

    /// The progress lines and the summary a caller reads carry the driver's figures, each from its own counter.
    #[test]
    fn progress_and_summary_report_each_figure() {
        let stats = Stats { rows_in: 600, rows_out: 500, rows_filtered: 40, rows_errored: 60, errors_omitted: 0 };
        let mut ndjson = TableMerge::new(Format::Ndjson, TableMode::Records, true);
        ndjson.stats = stats;
        let mut out = Vec::new();
        ndjson.progress(&report(), &mut out);
        ndjson.finish(&report(), &mut out);
        let lines = ndjson_lines(&out);
        assert_eq!(
            lines[0],
            json!({"progress": {"done": 10, "total": 20, "failed": 70, "rows": 500, "bytes_done": 3_000_000,
                "bytes_total": 5_000_000, "elapsed_ms": 2_000, "rows_per_s": 250}})
        );
        let summary = json!({"status": "stopped", "reason": "the deadline passed", "rows_in": 600, "rows_out": 500,
            "rows_filtered": 40, "rows_errored": 60, "rows_not_attempted": 30, "bytes": 4_000_000,
            "bytes_not_processed": 900_000, "chunks": 11, "chunks_failed": 3, "invocations": 14, "retries": 4,
            "timeouts": 2, "rejected_answers": 1, "ranges_read_again": 0, "elapsed_ms": 2_000, "rows_per_s": 300, "mb_per_s": 1.5,
            "peak_held_bytes": 12_345});
        assert_eq!(lines[1], json!({"stats": stats, "summary": summary}));
        assert_eq!(lines.len(), 2);

        let mut json = TableMerge::new(Format::Json, TableMode::Records, true);
        json.stats = stats;
        let mut out = Vec::new();
        json.progress(&report(), &mut out);
        assert!(out.is_empty(), "a JSON answer has no progress lines");
        json.finish(&report(), &mut out);
        let answer: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(answer, json!({"records": [], "errors": [], "stats": stats, "summary": summary}));
    }

    #[test]
    fn a_scrape_reports_each_figure_and_streams_ndjson_as_batches_finish() {
        assert!(PageMerge::new(Format::Json).ordered(), "JSON results are in input order");
        assert!(!PageMerge::new(Format::Ndjson).ordered(), "NDJSON results go out as their batch finishes");
        let mut merge = PageMerge::new(Format::Ndjson);
        let meta = BatchMeta { start: 0, urls: vec!["https://a.example/".into()] };
        let failure = Failure { kind: FailureKind::Worker, reason: "no answer".into() };
        let mut out = Vec::new();
        merge.fail(&meta, &failure, &mut out);
        let page = |index: usize| PageResult {
            index,
            url: format!("https://a.example/{index}"),
            outcome: Outcome::Page(Box::new(crate::scrape::Page {
                status: 200,
                final_url: format!("https://a.example/{index}"),
                redirects: 0,
                attempts: 1,
                content_type: "text/html".into(),
                charset: "utf-8".into(),
                bytes: 10,
                fetch_ms: 1,
                parse_us: 1,
                data: crate::html::Extracted::default(),
            })),
        };
        for index in 1..=3 {
            merge.write(&page(index), &mut out);
        }
        merge.progress(&report(), &mut out);
        merge.finish(&report(), &mut out);
        let lines = ndjson_lines(&out);
        let indexes: Vec<&Value> = lines[..4].iter().map(|l| &l["index"]).collect();
        assert_eq!(indexes, [0, 1, 2, 3]);
        assert_eq!(
            lines[4],
            json!({"progress": {"done": 530, "total": 1_000, "failed": 70, "pages": 3, "elapsed_ms": 2_000,
                "pages_per_s": 2}})
        );
        assert_eq!(
            lines[5],
            json!({"summary": {"status": "stopped", "reason": "the deadline passed", "urls": 530, "results": 4,
                "pages": 3, "errors": 1, "not_attempted": 30, "batches": 11, "batches_failed": 3, "invocations": 14,
                "retries": 4, "timeouts": 2, "rejected_answers": 1, "elapsed_ms": 2_000, "pages_per_s": 2,
                "peak_held_bytes": 12_345}})
        );
    }

    /// A coordinator asked for a partial (by a coordinator above it) answers the merged partial, not final groups.
    #[test]
    fn a_partial_job_answers_the_merged_partial() {
        let spec = |partial: bool| {
            let text = format!(
                r#"{{"columns": ["region"], "aggregate": {{"group_by": ["region"], "metrics": [{{"op": "count"}}], "partial": {partial}}}}}"#
            );
            crate::transform::spec::parse(text.as_bytes()).unwrap()
        };
        let stats = r#""stats":{"rows_in":2,"rows_out":2,"rows_filtered":0,"rows_errored":0}"#;
        for partial in [true, false] {
            for format in [Format::Json, Format::Ndjson] {
                let (mode, _) = TableMode::of_spec(&spec(partial), &["region".to_owned()]).unwrap();
                let TableMode::Aggregate { groups: empty, .. } = &mode else { panic!("the spec aggregates") };
                let mut answered = json!(empty.to_partial());
                answered["groups"] = json!([{"key": ["north"], "state": [{"count": 2}]}]);
                let answer = format!(r#"{{"partial":{answered},"errors":[],{stats}}}"#);
                let mut merge = TableMerge::new(format, mode, false);
                let mut out = Vec::new();
                let checked = merge.accept(&lines(2), answer.as_bytes().to_vec()).unwrap();
                merge.emit(&lines(2), checked, &mut out);
                merge.finish(&report(), &mut out);
                let first = match format {
                    Format::Json => serde_json::from_slice::<Value>(&out).unwrap(),
                    Format::Ndjson => ndjson_lines(&out).remove(0),
                };
                let (key, want) = match (partial, format) {
                    (true, _) => ("partial", answered),
                    (false, Format::Json) => ("groups", json!([{"region": "north", "count": 2}])),
                    (false, Format::Ndjson) => ("group", json!({"region": "north", "count": 2})),
                };
                assert_eq!(first[key], want, "partial {partial}, {format:?}: {first}");
            }
        }
    }

    /// A chunk is sent with its lines and the bytes of the file it covers.
    #[test]
    fn a_chunk_is_sent_with_its_lines_and_bytes() {
        let span = Span { first_line: 7, last_line: 9, rows: 2, bytes: 100..350 };
        let chunk = crate::fanout::split::Chunk { body: b"a\n1\n2\n".to_vec(), span: span.clone(), line_offset: 5 };
        let Input::Unit(unit) = ChunkMeta::input(Piece::Chunk(chunk), 1000) else { panic!("a chunk is sent") };
        assert_eq!((unit.items, unit.bytes, unit.meta), (Some(2), 250, ChunkMeta::lines(&span, 5)));
        assert_eq!(*unit.payload, b"a\n1\n2\n");
    }

    /// A record too large to send fails at once as `too_large`, its rows and bytes accounted for.
    #[test]
    fn an_oversized_record_fails_with_its_rows_and_bytes() {
        let span = Span { first_line: 7, last_line: 9, rows: 1, bytes: 100..350 };
        let Input::Failed(unit, failure) = ChunkMeta::input(Piece::Oversized(span.clone()), 200) else {
            panic!("an oversized record is not sent")
        };
        assert_eq!((unit.items, unit.bytes, unit.meta), (Some(1), 250, ChunkMeta::lines(&span, 0)));
        assert_eq!(failure.kind, FailureKind::TooLarge);
        assert!(failure.reason.contains("larger than the 200 bytes"), "{}", failure.reason);
    }

    /// A scrape answer is placed by URL as well as by index: a result for another URL is refused, named.
    #[test]
    fn scrape_results_must_be_for_the_batch_urls() {
        let meta = BatchMeta { start: 10, urls: vec!["https://a.example/".into(), "https://b.example/".into()] };
        let answer = |urls: [&str; 2]| {
            let results = urls
                .iter()
                .enumerate()
                .map(|(index, url)| PageResult {
                    index,
                    url: (*url).to_owned(),
                    outcome: Outcome::Error(ItemError::new(PageFailure::HttpStatus, "404")),
                })
                .collect();
            serde_json::to_vec(&ScrapeResponse { results }).unwrap()
        };
        let body = answer(["https://a.example/", "https://b.example/"]);
        let mut merge = PageMerge::new(Format::Json);
        let checked = merge.accept(&meta, body.clone()).unwrap();
        let indexes: Vec<usize> = checked.results.iter().map(|r| r.index).collect();
        assert_eq!(indexes, [10, 11], "results placed in the job");
        assert_eq!(merge.held_bytes(&checked), body.len(), "waiting results count as the answer's bytes");
        for (urls, needle) in [
            (
                ["https://a.example/", "https://c.example/"],
                r#"result 1 is for URL 1 "https://c.example/", not URL 1 "https://b.example/""#,
            ),
            (
                ["https://b.example/", "https://a.example/"],
                r#"result 0 is for URL 0 "https://b.example/", not URL 0 "https://a.example/""#,
            ),
            (
                ["https://a.example/", "https://b.example"],
                r#"result 1 is for URL 1 "https://b.example", not URL 1 "https://b.example/""#,
            ),
        ] {
            for format in [Format::Json, Format::Ndjson] {
                let err = PageMerge::new(format).accept(&meta, answer(urls)).unwrap_err();
                assert!(err.contains(needle), "{format:?} {urls:?}: {err}");
            }
        }
    }
}
