//! Runs a compiled spec over a CSV chunk, producing the answer piece by piece
//! so a component can stream it: [`Transformer::fill`] processes rows until
//! its output buffer holds enough to send.

use super::aggregate::{Aggregator, Groups, Shape};
use super::output::{RowError, RowErrorKind, Stats, MAX_ERROR_RECORDS};
use super::program::{Program, Verdict};
use super::range::Span;
use super::spec::{AggregateSpec, Dialect, OnError, Spec};
use super::value::Value;
use crate::framing::Format;
use std::time::{Duration, Instant};

/// Why a chunk stopped before its end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Halt {
    /// The line of the row that stopped it.
    pub line: u64,
    /// In range mode, the file offset of that row.
    pub byte: Option<u64>,
    /// What happened.
    pub message: String,
}

impl std::fmt::Display for Halt {
    /// `line 12: message`, or `line 12 (byte 340): message` in range mode.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.byte {
            Some(byte) => write!(f, "line {} (byte {byte}): {}", self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

/// Whether [`Transformer::fill`] has more to give.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Call again.
    More,
    /// The answer is complete.
    Done,
}

/// Where a chunk sits in its file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Placement {
    /// Added to line numbers counted in the chunk (the header's lines, say).
    pub line_offset: u64,
    /// In range mode, where the range's records are: error records carry
    /// `byte`, the answer says where the records began and ended, and an
    /// oversized last record is the last error record.
    pub range: Option<Span>,
    /// Halt at a record with a line break inside a quoted field: a durable
    /// job's units are not checked against each other's boundaries
    /// ([`crate::transform::range`]), so a record that spans lines could have
    /// been cut at a wrong place.
    pub one_line_records: bool,
}

/// The header of a chunk: column names, and where the data starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The column names.
    pub names: Vec<String>,
    /// The offset of the first data byte.
    pub data_start: usize,
    /// How many lines the header takes.
    pub lines: u64,
}

/// A CSV reader configured by `dialect`.
pub fn reader<'a>(dialect: &Dialect, data: &'a [u8]) -> Result<csv::Reader<&'a [u8]>, String> {
    let byte = |s: &str, what: &str| match s.as_bytes() {
        [b'\n' | b'\r'] => Err(format!("dialect.{what}: {s:?} is a line break, which ends records")),
        [b] if b.is_ascii() => Ok(*b),
        _ => Err(format!("dialect.{what}: {s:?} is not one ASCII character")),
    };
    let (delimiter, quote) = (byte(&dialect.delimiter, "delimiter")?, byte(&dialect.quote, "quote")?);
    if delimiter == quote {
        return Err(format!("dialect.delimiter and dialect.quote are both {:?}; they must differ", dialect.quote));
    }
    Ok(csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quote(quote)
        .trim(if dialect.trim { csv::Trim::All } else { csv::Trim::None })
        .has_headers(false)
        .flexible(true)
        .from_reader(data))
}

/// Where a record really starts, as (byte offset, line). The csv reader's
/// positions can point at line breaks before the record (the `\n` of a `\r\n`,
/// blank lines), which it skips when it reads the record.
pub fn record_start(data: &[u8], pos: &csv::Position) -> (usize, u64) {
    let (mut byte, mut line) = (pos.byte() as usize, pos.line());
    while let Some(&b) = data.get(byte) {
        match b {
            b'\n' => line += 1,
            b'\r' => {}
            _ => break,
        }
        byte += 1;
    }
    (byte, line)
}

/// Compiles `spec` for input with columns `names`, its aggregate (with
/// `having` and `sort`) included, so that every mistake is found before a row is read.
pub fn prepare(spec: &Spec, names: &[String]) -> Result<Program, String> {
    let program = Program::compile(spec, names)?;
    if let Some(aggregate) = &spec.aggregate {
        let shape = Shape::compile(aggregate, &program.schema())?.shape;
        Groups::new(shape).finish(aggregate)?;
    }
    Ok(program)
}

/// Reads the header row (or takes the dialect's `columns`).
pub fn read_header(dialect: &Dialect, data: &[u8]) -> Result<Header, String> {
    let mut r = reader(dialect, data)?;
    if !dialect.header {
        let names = dialect.columns.clone().ok_or("dialect.columns: input without a header row needs column names")?;
        return Ok(Header { names, data_start: 0, lines: 0 });
    }
    let mut record = csv::ByteRecord::new();
    if !r.read_byte_record(&mut record).map_err(|e| format!("the CSV header row could not be read: {e}"))? {
        return Err("the CSV body is empty; a header row was expected on line 1".into());
    }
    let names = record
        .iter()
        .enumerate()
        .map(|(i, f)| {
            String::from_utf8(f.to_vec())
                .map_err(|_| format!("the CSV header (line 1) has invalid UTF-8 in column {}", i + 1))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let names = match &dialect.columns {
        Some(given) if given.len() != names.len() => {
            return Err(format!("dialect.columns names {} columns but the header has {}", given.len(), names.len()))
        }
        Some(given) => given.clone(),
        None => names,
    };
    let (data_start, line) = record_start(data, r.position());
    Ok(Header { names, data_start, lines: line - 1 })
}

/// Turns a chunk's rows into its answer, a piece at a time.
pub struct Transformer<'a> {
    program: &'a Program,
    aggregate: Option<(&'a AggregateSpec, Aggregator)>,
    data: &'a [u8],
    quote: u8,
    reader: csv::Reader<&'a [u8]>,
    format: Format,
    placement: Placement,
    stats: Stats,
    errors: Vec<RowError>,
    /// In parts mode ([`run_parts`]): the error records, one a line, apart from the records.
    error_lines: Option<ErrorLines>,
    /// The allocation each row's values are computed in, kept between rows.
    values: Vec<Value<'static>>,
    busy: Duration,
    fill_started: Option<Instant>,
    started: bool,
    first: bool,
    done: bool,
}

impl<'a> Transformer<'a> {
    /// A transformer over the data rows in `data` (no header row).
    pub fn new(
        spec: &'a Spec,
        program: &'a Program,
        data: &'a [u8],
        format: Format,
        placement: Placement,
    ) -> Result<Transformer<'a>, String> {
        let aggregate = match &spec.aggregate {
            Some(a) => Some((a, Aggregator::new(a, &program.schema())?)),
            None => None,
        };
        Ok(Transformer {
            program,
            aggregate,
            data,
            quote: spec.dialect.bytes().1,
            reader: reader(&spec.dialect, data)?,
            format,
            placement,
            stats: Stats::default(),
            errors: Vec::new(),
            error_lines: None,
            values: Vec::with_capacity(program.columns.len()),
            busy: Duration::ZERO,
            fill_started: None,
            started: false,
            first: true,
            done: false,
        })
    }

    /// Processes rows, appending the answer's next bytes to `out` until it
    /// holds at least `target` bytes or the answer is complete.
    pub fn fill(&mut self, out: &mut Vec<u8>, target: usize) -> Result<Progress, Halt> {
        let started = Instant::now();
        self.fill_started = Some(started);
        let progress = self.fill_rows(out, target);
        self.busy += started.elapsed();
        progress
    }

    fn fill_rows(&mut self, out: &mut Vec<u8>, target: usize) -> Result<Progress, Halt> {
        if self.done {
            return Ok(Progress::Done);
        }
        if !self.started {
            self.started = true;
            if self.aggregate.is_none() && self.format == Format::Json && self.error_lines.is_none() {
                out.extend_from_slice(b"{\"records\":[");
            }
        }
        let mut record = csv::ByteRecord::new();
        while out.len() < target {
            let more = self.reader.read_byte_record(&mut record).map_err(|e| Halt {
                line: self.placement.line_offset.saturating_add(self.reader.position().line()),
                byte: None,
                message: format!("the CSV could not be read: {e}"),
            })?;
            if !more {
                self.oversized(out)?;
                self.finish(out).map_err(|message| Halt { line: 0, byte: None, message })?;
                self.done = true;
                return Ok(Progress::Done);
            }
            let end = self.reader.position().byte() as usize;
            self.row(&record, end, out)?;
        }
        Ok(Progress::More)
    }

    /// Processes the record whose raw bytes end at `end` (its line break included, or part of it).
    fn row(&mut self, record: &csv::ByteRecord, end: usize, out: &mut Vec<u8>) -> Result<(), Halt> {
        self.stats.rows_in += 1;
        let (start, line) = record_start(self.data, record.position().expect("the csv reader sets positions"));
        let line = self.placement.line_offset.saturating_add(line);
        let byte = self.placement.range.map(|r| r.begin.saturating_add(start as u64));
        if let Some(byte) = byte.filter(|_| self.placement.one_line_records) {
            // Raw bytes, not fields: trimming could hide the line break.
            let raw = &self.data[start..end.max(start)];
            let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
            let body = raw.strip_suffix(b"\r").unwrap_or(raw);
            // A line break inside the line, or a quote left open at its end, is a quoted field spanning lines.
            let quotes = body.iter().filter(|&&b| b == self.quote).count();
            if quotes % 2 == 1 || body.iter().any(|&b| b == b'\n' || b == b'\r') {
                return Err(Halt {
                    line,
                    byte: Some(byte),
                    message: format!(
                        "the record at byte {byte} has a line break inside a quoted field (or an unbalanced quote); \
                         range mode needs files without them (send such a file whole, or in chunks cut by the \
                         coordinator)"
                    ),
                });
            }
        }
        let mut values = reuse(std::mem::take(&mut self.values));
        let mut verdict = self.program.eval(record, line, &mut values);
        if let (Ok(Verdict::Keep), Some((_, agg))) = (&verdict, &mut self.aggregate) {
            if let Err(message) = agg.push(&values) {
                verdict = Err(RowError { line, byte: None, column: None, kind: RowErrorKind::InvalidValue, message });
            }
        }
        match verdict {
            Ok(Verdict::Keep) => {
                self.stats.rows_out += 1;
                if self.aggregate.is_none() {
                    self.write_record(&values, out);
                }
            }
            Ok(Verdict::Filtered) => self.stats.rows_filtered += 1,
            Err(err) if self.program.on_error == OnError::Fail => {
                return Err(Halt { line, byte, message: err.message })
            }
            Err(mut err) => {
                err.byte = byte;
                self.stats.rows_errored += 1;
                self.write_error(err, out);
            }
        }
        self.values = reuse(values);
        Ok(())
    }

    /// A range's oversized last record: counted, and an error record at its line.
    fn oversized(&mut self, out: &mut Vec<u8>) -> Result<(), Halt> {
        let Some(o) = self.placement.range.and_then(|r| r.oversized) else { return Ok(()) };
        let line = self.placement.line_offset.saturating_add(o.line);
        let message = format!(
            "the record is larger than the {} bytes a worker reads at once (FANOUT_MAX_REQUEST_BYTES)",
            o.limit
        );
        if self.program.on_error == OnError::Fail {
            return Err(Halt { line, byte: Some(o.byte), message });
        }
        self.stats.rows_in += 1;
        self.stats.rows_errored += 1;
        let err = RowError { line, byte: Some(o.byte), column: None, kind: RowErrorKind::TooLarge, message };
        self.write_error(err, out);
        Ok(())
    }

    fn write_record(&mut self, values: &[Value<'_>], out: &mut Vec<u8>) {
        if self.error_lines.is_some() {
            self.program.write_record(values, out);
            out.push(b'\n');
            return;
        }
        match self.format {
            Format::Json => {
                if !self.first {
                    out.push(b',');
                }
                self.first = false;
                self.program.write_record(values, out);
            }
            Format::Ndjson => {
                out.extend_from_slice(b"{\"record\":");
                self.program.write_record(values, out);
                out.extend_from_slice(b"}\n");
            }
        }
    }

    fn write_error(&mut self, err: RowError, out: &mut Vec<u8>) {
        if let Some(lines) = &mut self.error_lines {
            if lines.count >= MAX_ERROR_RECORDS {
                self.stats.errors_omitted += 1;
            } else {
                lines.count += 1;
                serde_json::to_writer(&mut lines.bytes, &err).expect("writing to memory");
                lines.bytes.push(b'\n');
            }
            return;
        }
        match self.format {
            Format::Json if self.errors.len() >= MAX_ERROR_RECORDS => self.stats.errors_omitted += 1,
            Format::Json => self.errors.push(err),
            Format::Ndjson => line(out, serde_json::json!({ "error": err })),
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        let stats = serde_json::to_value(self.stats).expect("stats serialise");
        let busy = self.busy + self.fill_started.map_or(Duration::ZERO, |s| s.elapsed());
        // Time spent processing, waits for the client excluded: the chunk's own cost.
        let timing = serde_json::json!({ "process_us": busy.as_micros() as u64 });
        let groups: Option<(&AggregateSpec, Groups)> =
            self.aggregate.take().map(|(spec, agg)| (spec, agg.into_groups()));
        if self.error_lines.is_some() {
            // A part holds the records already written, or the partial aggregate as its one line.
            if let Some((_, groups)) = groups {
                serde_json::to_writer(&mut *out, &groups.to_partial()).expect("writing to memory");
                out.push(b'\n');
            }
            return Ok(());
        }
        // The keys after the records (or groups): errors, counts, where a range's records are, timing.
        let mut tail = serde_json::Map::new();
        if self.format == Format::Json {
            tail.insert("errors".into(), serde_json::to_value(&self.errors).expect("errors serialise"));
        }
        tail.insert("stats".into(), stats);
        if let Some(range) = self.placement.range {
            tail.insert("range".into(), serde_json::to_value(range).expect("spans serialise"));
        }
        tail.insert("timing".into(), timing);
        let body = match groups {
            None => None,
            Some((spec, groups)) if spec.partial => {
                Some(("partial", serde_json::to_value(groups.to_partial()).expect("partials serialise")))
            }
            Some((spec, groups)) => Some((
                "groups",
                serde_json::Value::Array(groups.finish(spec)?.into_iter().map(serde_json::Value::Object).collect()),
            )),
        };
        match (self.format, body) {
            (Format::Json, None) => {
                out.extend_from_slice(b"],");
                let tail = serde_json::to_vec(&serde_json::Value::Object(tail)).expect("writing to memory");
                // Its opening brace is the answer's, already out.
                out.extend_from_slice(&tail[1..]);
            }
            (Format::Json, Some((key, body))) => {
                let mut answer = serde_json::Map::new();
                answer.insert(key.into(), body);
                answer.extend(tail);
                serde_json::to_writer(&mut *out, &answer).expect("writing to memory");
            }
            (Format::Ndjson, body) => {
                match body {
                    Some((_, serde_json::Value::Array(groups))) => {
                        groups.into_iter().for_each(|g| line(out, serde_json::json!({ "group": g })))
                    }
                    Some((_, partial)) => line(out, serde_json::json!({ "partial": partial })),
                    None => {}
                }
                line(out, serde_json::Value::Object(tail));
            }
        }
        Ok(())
    }
}

/// An emptied vector's allocation, for values borrowing from something else:
/// collecting a consumed empty vector in place keeps its buffer.
fn reuse<'b>(mut v: Vec<Value<'_>>) -> Vec<Value<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

fn line(out: &mut Vec<u8>, value: serde_json::Value) {
    serde_json::to_writer(&mut *out, &value).expect("writing to memory");
    out.push(b'\n');
}

/// Runs `spec` over a whole CSV chunk (header included) into one buffer: for
/// tests, benchmarks and answers that must be complete before they start (the
/// `fail` policy, whose 422 must come before any output).
pub fn run_to_end(spec: &Spec, data: &[u8], format: Format) -> Result<Vec<u8>, RunError> {
    let header = read_header(&spec.dialect, data).map_err(RunError::Spec)?;
    let program = prepare(spec, &header.names).map_err(RunError::Spec)?;
    let placement = Placement { line_offset: header.lines, ..Placement::default() };
    run_compiled(spec, &program, &data[header.data_start..], format, placement)
}

/// Runs a compiled spec over data rows into one buffer.
pub fn run_compiled(
    spec: &Spec,
    program: &Program,
    rows: &[u8],
    format: Format,
    placement: Placement,
) -> Result<Vec<u8>, RunError> {
    let mut t = Transformer::new(spec, program, rows, format, placement).map_err(RunError::Spec)?;
    let mut out = Vec::new();
    while t.fill(&mut out, usize::MAX).map_err(RunError::Halt)? == Progress::More {}
    Ok(out)
}

/// Error records written apart from the records, in parts mode.
#[derive(Debug, Default)]
struct ErrorLines {
    bytes: Vec<u8>,
    count: usize,
}

/// A unit's output in a durable job, its objects apart: the part (records one
/// a line, or the partial aggregate as one line) and the error records (one a
/// line, at most [`MAX_ERROR_RECORDS`]; the rest counted in `errors_omitted`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Parts {
    /// Records, or the partial aggregate.
    pub part: Vec<u8>,
    /// Error records.
    pub errors: Vec<u8>,
    /// The counts.
    pub stats: Stats,
}

/// Runs a compiled spec over data rows into a durable job's objects.
pub fn run_parts(spec: &Spec, program: &Program, rows: &[u8], placement: Placement) -> Result<Parts, RunError> {
    let mut t = Transformer::new(spec, program, rows, Format::Ndjson, placement).map_err(RunError::Spec)?;
    t.error_lines = Some(ErrorLines::default());
    let mut part = Vec::with_capacity(rows.len() + rows.len() / 2);
    while t.fill(&mut part, usize::MAX).map_err(RunError::Halt)? == Progress::More {}
    let errors = t.error_lines.take().map(|l| l.bytes).unwrap_or_default();
    Ok(Parts { part, errors, stats: t.stats })
}

/// Why a chunk produced no answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunError {
    /// The spec or the header is wrong (a 400).
    Spec(String),
    /// A row stopped the chunk (a 422).
    Halt(Halt),
}
