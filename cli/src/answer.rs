//! A coordinator's NDJSON answer, read line by line: progress lines go to the
//! display, everything else to the output: as the JSON document the
//! coordinator would have answered with `Accept: application/json`, or as
//! NDJSON or CSV files that hold one record (result, group) a line and nothing
//! else, the error records and the summary going apart (`side`: stderr or
//! `--errors FILE`).
//!
//! Nothing in the answer is taken on trust: every line must be one JSON value
//! of a known shape, and the end must account for what came before it
//! (records against `rows_out`, one result per URL index, a final summary).

use crate::progress::{Progress, Update};
use anyhow::{bail, ensure, Context, Result};
use fanout::transform::output::{Stats, MAX_ERROR_RECORDS};
use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

/// The longest answer line read: a record, a page's result, a group. Each is
/// part of one worker answer, which the coordinator reads only up to its
/// `FANOUT_MAX_WORKER_RESPONSE_BYTES` (16 MiB by default).
const MAX_LINE_BYTES: u64 = 64 * 1024 * 1024;

/// The longest line of a job asking for partial state: its one `partial` line
/// is the state merged from every chunk, bounded by the coordinator's memory.
const MAX_PARTIAL_LINE_BYTES: u64 = 1024 * 1024 * 1024;

/// The output's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document, as `Accept: application/json` answers.
    Json,
    /// One record (result, group) a line; error records and the summary apart.
    Ndjson,
    /// CSV: the records' columns in spec order (RFC 4180, nulls empty); error records and the summary apart.
    Csv,
}

impl Format {
    /// The format a file's extension names: `.json`, `.ndjson` or `.jsonl`, `.csv`.
    pub fn of_path(path: &std::path::Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

/// What a transform job's output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Records,
    Groups,
    Partial,
}

/// Reads a transform job's answer, writing the output to `out` (and with NDJSON
/// or CSV, the error records and the summary to `side`); returns the summary.
pub fn table(
    answer: impl Read,
    shape: Table,
    format: Format,
    out: &mut impl Write,
    side: &mut impl Write,
    progress: &mut Progress,
) -> Result<Value> {
    let mut reader = TableAnswer::new(shape, format)?;
    let longest = if shape == Table::Partial { MAX_PARTIAL_LINE_BYTES } else { MAX_LINE_BYTES };
    for_each_line(answer, longest, |line| reader.line(line, out, side, Some(&mut *progress)))?;
    reader.end()
}

/// A transform job's answer, taken a line at a time.
pub struct TableAnswer {
    format: Format,
    doc: TableDoc,
    csv: CsvRows,
    summary: Option<Value>,
}

impl TableAnswer {
    /// A reader for an answer of `shape`, written as `format`.
    pub fn new(shape: Table, format: Format) -> Result<TableAnswer> {
        if format == Format::Csv && shape == Table::Partial {
            bail!("a partial aggregate has no CSV form: use --format json or ndjson");
        }
        let doc = TableDoc { shape, opened: false, records: 0, errors: Spool::new()?, omitted: 0 };
        Ok(TableAnswer { format, doc, csv: CsvRows::default(), summary: None })
    }

    /// Takes one line of the answer (without its line break).
    pub fn line(
        &mut self,
        line: &[u8],
        out: &mut impl Write,
        side: &mut impl Write,
        progress: Option<&mut Progress>,
    ) -> Result<()> {
        ensure!(self.summary.is_none(), "the answer goes on after its summary");
        let parsed: TableLine =
            serde_json::from_slice(line).context("a line of the answer is not a known JSON line")?;
        let (format, shape) = (self.format, self.doc.shape);
        match parsed {
            TableLine { progress: Some(update), .. } => progress.into_iter().for_each(|p| p.update(&update)),
            TableLine { stats: Some(stats), summary: Some(s), .. } => {
                check_rows(&stats, &s)?;
                if shape == Table::Records {
                    ensure!(
                        stats.rows_out == self.doc.records,
                        "the answer has {} records but its stats say rows_out {}",
                        self.doc.records,
                        stats.rows_out
                    );
                }
                match format {
                    Format::Json => self.doc.finish(out, stats, &s)?,
                    Format::Ndjson | Format::Csv => write_line(side, line)?,
                }
                self.summary = Some(s);
            }
            TableLine { error: Some(error), .. } => match format {
                Format::Json if self.doc.errors.len() < MAX_ERROR_RECORDS => {
                    self.doc.errors.push(error.get().as_bytes()).map(drop)?
                }
                Format::Json => self.doc.omitted += 1,
                Format::Ndjson | Format::Csv => write_line(side, line)?,
            },
            TableLine { record: Some(value), .. } => {
                ensure!(shape == Table::Records, "an aggregate job's answer holds a record");
                self.doc.records += 1;
                self.item(out, value)?;
            }
            TableLine { group: Some(value), .. } => {
                ensure!(shape == Table::Groups, "the answer holds a group where none was asked for");
                self.item(out, value)?;
            }
            TableLine { partial: Some(value), .. } => {
                ensure!(
                    shape == Table::Partial && !self.doc.opened,
                    "the answer holds an unexpected partial aggregate"
                );
                self.item(out, value)?;
            }
            _ => bail!("a line of the answer is not a known JSON line"),
        }
        Ok(())
    }

    fn item(&mut self, out: &mut impl Write, value: &RawValue) -> Result<()> {
        match self.format {
            Format::Json => self.doc.item(out, value),
            Format::Ndjson => write_line(out, value.get().as_bytes()),
            Format::Csv => self.csv.write(out, value),
        }
    }

    /// The summary, once the answer has ended.
    pub fn end(self) -> Result<Value> {
        self.summary.context("the answer was cut off before its summary")
    }
}

/// Records (or groups) as CSV rows: the first one's columns are the header, in its order.
#[derive(Default)]
pub struct CsvRows {
    header: Option<Vec<String>>,
    writer: Option<csv::Writer<Rows>>,
    rows: Rows,
}

/// The bytes of the rows written so far and not yet passed on.
#[derive(Clone, Default)]
struct Rows(std::rc::Rc<std::cell::RefCell<Vec<u8>>>);

impl Write for Rows {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CsvRows {
    /// Writes one record (a JSON object) as a row, after the header if it is the first.
    pub fn write(&mut self, out: &mut impl Write, value: &RawValue) -> Result<()> {
        let Ordered(fields) = serde_json::from_str(value.get()).context("a record is not a JSON object")?;
        let writer = self.writer.get_or_insert_with(|| csv::Writer::from_writer(self.rows.clone()));
        let header = match &self.header {
            Some(header) => header,
            None => {
                let names: Vec<String> = fields.iter().map(|(k, _)| k.clone()).collect();
                writer.write_record(&names)?;
                self.header.insert(names)
            }
        };
        let mut row = vec![String::new(); header.len()];
        for (name, raw) in fields {
            let i = header
                .iter()
                .position(|h| *h == name)
                .with_context(|| format!("a record has a column {name:?} that the first record does not"))?;
            row[i] = match raw.get() {
                "null" => String::new(),
                text if text.starts_with('"') => serde_json::from_str(text)?,
                text => text.to_owned(),
            };
        }
        writer.write_record(&row)?;
        writer.flush()?;
        let mut rows = self.rows.0.borrow_mut();
        out.write_all(&rows)?;
        rows.clear();
        Ok(())
    }
}

/// A JSON object's members in the order written.
struct Ordered(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, Box<RawValue>>()? {
                    members.push(member);
                }
                Ok(Ordered(members))
            }
        }
        d.deserialize_map(Members)
    }
}

/// The lines of an answer written to it, a whole line at a time (a run in
/// this process writes what a coordinator would answer).
pub struct TableSink<'a, O: Write, S: Write> {
    answer: TableAnswer,
    out: &'a mut O,
    side: &'a mut S,
    line: Vec<u8>,
}

impl<'a, O: Write, S: Write> TableSink<'a, O, S> {
    pub fn new(answer: TableAnswer, out: &'a mut O, side: &'a mut S) -> TableSink<'a, O, S> {
        TableSink { answer, out, side, line: Vec::new() }
    }

    /// The summary, once the whole answer has been written.
    pub fn end(self) -> Result<Value> {
        ensure!(self.line.is_empty(), "the answer ends in the middle of a line");
        self.answer.end()
    }
}

impl<O: Write, S: Write> Write for TableSink<'_, O, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        for piece in buf.split_inclusive(|&b| b == b'\n') {
            self.line.extend_from_slice(piece);
            if self.line.ends_with(b"\n") {
                let line = std::mem::take(&mut self.line);
                let text = &line[..line.len() - 1];
                if !text.iter().all(u8::is_ascii_whitespace) {
                    // A failed write stays the I/O error it was (a reader gone away is not a bad answer).
                    self.answer
                        .line(text, self.out, self.side, None)
                        .map_err(|e| e.downcast::<std::io::Error>().unwrap_or_else(std::io::Error::other))?;
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One line of a transform job's NDJSON answer: exactly one of these, or stats with the summary.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableLine<'a> {
    #[serde(borrow, default)]
    record: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
    #[serde(borrow, default)]
    group: Option<&'a RawValue>,
    #[serde(borrow, default)]
    partial: Option<&'a RawValue>,
    #[serde(default)]
    progress: Option<Update>,
    #[serde(default)]
    stats: Option<Stats>,
    #[serde(default)]
    summary: Option<Value>,
}

/// A transform job's JSON document, written as its lines arrive: records (or
/// groups) at once, error records (at most [`MAX_ERROR_RECORDS`], as the
/// coordinator keeps) waiting in a temporary file for their place after them.
struct TableDoc {
    shape: Table,
    opened: bool,
    records: u64,
    errors: Spool,
    omitted: u64,
}

impl TableDoc {
    fn open(&mut self, out: &mut impl Write) -> Result<bool> {
        let first = !self.opened;
        if first {
            self.opened = true;
            out.write_all(match self.shape {
                Table::Records => b"{\"records\":[",
                Table::Groups => b"{\"groups\":[",
                Table::Partial => b"{\"partial\":",
            })?;
        }
        Ok(first)
    }

    fn item(&mut self, out: &mut impl Write, value: &RawValue) -> Result<()> {
        if !self.open(out)? {
            out.write_all(b",")?;
        }
        out.write_all(value.get().as_bytes())?;
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write, mut stats: Stats, summary: &Value) -> Result<()> {
        if self.shape == Table::Partial {
            ensure!(self.opened, "the answer has no partial aggregate");
            out.write_all(b",")?;
        } else {
            self.open(out)?;
            out.write_all(b"],")?;
        }
        stats.errors_omitted = stats.errors_omitted.saturating_add(self.omitted);
        out.write_all(b"\"errors\":[")?;
        self.errors.copy_to(out, b",")?;
        out.write_all(b"],\"stats\":")?;
        serde_json::to_writer(&mut *out, &stats)?;
        out.write_all(b",\"summary\":")?;
        serde_json::to_writer(&mut *out, summary)?;
        out.write_all(b"}\n")?;
        Ok(())
    }
}

/// The answer's stats add up, and its summary (which the exit code is read from) says the same.
fn check_rows(stats: &Stats, summary: &Value) -> Result<()> {
    stats.check().map_err(|m| anyhow::anyhow!("the answer's stats: {m}"))?;
    let counts = [
        ("rows_in", stats.rows_in),
        ("rows_out", stats.rows_out),
        ("rows_filtered", stats.rows_filtered),
        ("rows_errored", stats.rows_errored),
    ];
    for (key, n) in counts {
        ensure!(summary.get(key).and_then(Value::as_u64) == Some(n), "the answer's summary and stats differ in {key}");
    }
    ensure!(summary.get("status").is_some_and(Value::is_string), "the answer's summary has no status");
    Ok(())
}

/// Lines waiting in a temporary file (not in memory) for their place in the output.
struct Spool {
    file: BufWriter<std::fs::File>,
    /// Where each line starts and how long it is.
    lines: Vec<(u64, usize)>,
    end: u64,
}

impl Spool {
    fn new() -> Result<Spool> {
        let file = tempfile::tempfile().context("cannot create a temporary file for the answer")?;
        Ok(Spool { file: BufWriter::with_capacity(256 * 1024, file), lines: Vec::new(), end: 0 })
    }

    fn len(&self) -> usize {
        self.lines.len()
    }

    /// Keeps `line`; returns its number.
    fn push(&mut self, line: &[u8]) -> Result<usize> {
        self.file.write_all(line).context("cannot write to a temporary file")?;
        self.lines.push((self.end, line.len()));
        self.end += line.len() as u64;
        Ok(self.lines.len() - 1)
    }

    /// Copies the lines numbered by `order` to `out`, with `separator` between
    /// them, reading on without seeking while they follow one another.
    fn copy_in(&mut self, order: impl Iterator<Item = usize>, out: &mut impl Write, separator: &[u8]) -> Result<()> {
        self.file.flush().context("cannot write to a temporary file")?;
        let mut reader = BufReader::with_capacity(256 * 1024, self.file.get_mut());
        reader.rewind()?;
        let (mut at_now, mut buf) = (0, Vec::new());
        for (i, line) in order.enumerate() {
            let (at, len) = self.lines[line];
            if at != at_now {
                reader.seek(SeekFrom::Start(at))?;
            }
            if i > 0 {
                out.write_all(separator)?;
            }
            buf.resize(len, 0);
            reader.read_exact(&mut buf).context("cannot read back a temporary file")?;
            out.write_all(&buf)?;
            at_now = at + len as u64;
        }
        Ok(())
    }

    /// Copies every line in order.
    fn copy_to(&mut self, out: &mut impl Write, separator: &[u8]) -> Result<()> {
        self.copy_in(0..self.lines.len(), out, separator)
    }
}

/// One line of a scrape job's NDJSON answer: a page's result, a progress line or the summary.
#[derive(Deserialize)]
struct PageLine {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    error: Option<IgnoredAny>,
    #[serde(default)]
    progress: Option<Update>,
    #[serde(default)]
    summary: Option<Value>,
}

/// Reads the answer to a scrape job of `urls` URLs, writing the output to
/// `out` (and with NDJSON, the summary to `side`); returns the summary.
///
/// NDJSON results come as each batch finishes; a JSON document lists them in
/// input order, so they wait in a temporary file (not in memory) until the end.
/// Every result must name an index of the list, each once, and the summary
/// must count what came.
pub fn pages(
    answer: impl Read,
    urls: u64,
    format: Format,
    out: &mut impl Write,
    side: &mut impl Write,
    progress: &mut Progress,
) -> Result<Value> {
    let mut spool = match format {
        Format::Json => Some(Spool::new()?),
        Format::Ndjson => None,
        Format::Csv => bail!("a scrape job's results have no CSV form: use --format json or ndjson"),
    };
    // Each result's index, and its line in the spool.
    let mut placed: Vec<(u64, usize)> = Vec::new();
    let mut errors = 0u64;
    let mut summary = None;
    for_each_line(answer, MAX_LINE_BYTES, |line| {
        ensure!(summary.is_none(), "the answer goes on after its summary");
        let parsed: PageLine = serde_json::from_slice(line).context("a line of the answer is not JSON")?;
        match parsed {
            PageLine { progress: Some(update), index: None, summary: None, .. } => progress.update(&update),
            PageLine { summary: Some(s), index: None, progress: None, .. } => {
                if format == Format::Ndjson {
                    write_line(side, line)?;
                }
                summary = Some(s);
            }
            PageLine { index: Some(index), progress: None, summary: None, error } => {
                ensure!(index < urls, "the answer has a result for URL {index} of a list of {urls}");
                ensure!((placed.len() as u64) < urls, "the answer has more results than the list's {urls} URLs");
                errors += u64::from(error.is_some());
                let at = match &mut spool {
                    Some(spool) => spool.push(line)?,
                    None => write_line(out, line).map(|()| 0)?,
                };
                placed.push((index, at));
            }
            _ => bail!("a line of the answer is neither a result, a progress line nor the summary"),
        }
        Ok(())
    })?;
    let summary = summary.context("the answer was cut off before its summary")?;
    placed.sort_unstable_by_key(|p| p.0);
    if let Some((i, _)) = placed.iter().enumerate().find(|(i, p)| p.0 != *i as u64) {
        bail!("the answer's results are not one per URL: result {i} is missing or repeated");
    }
    let said = |k: &str| summary.get(k).and_then(Value::as_u64);
    // A job that failed on its input (a list longer than the coordinator takes, a line too
    // long) accounts for the URLs read before it: the first ones, each once.
    let expected = match summary.get("status").and_then(Value::as_str) {
        Some("failed") => said("urls").filter(|&n| n <= urls).unwrap_or(urls),
        _ => urls,
    };
    ensure!(placed.len() as u64 == expected, "the answer has {} results for the list's {urls} URLs", placed.len());
    ensure!(
        said("urls") == Some(expected),
        "the answer's summary counts {:?} URLs, not the list's {urls}",
        said("urls")
    );
    ensure!(
        said("errors") == Some(errors),
        "the answer's summary counts {:?} errors, not the {errors} it holds",
        said("errors")
    );
    if let Some(mut spool) = spool {
        out.write_all(b"{\"results\":[")?;
        spool.copy_in(placed.iter().map(|p| p.1), out, b",")?;
        out.write_all(b"],\"summary\":")?;
        serde_json::to_writer(&mut *out, &summary)?;
        out.write_all(b"}\n")?;
    }
    Ok(summary)
}

fn write_line(out: &mut impl Write, line: &[u8]) -> Result<()> {
    out.write_all(line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Calls `each` with every non-empty line of `answer`, without its line
/// break; a line over `longest` bytes is an error.
fn for_each_line(answer: impl Read, longest: u64, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, answer);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(longest + 1).read_until(b'\n', &mut line).context("reading the answer")?;
        if n == 0 {
            return Ok(());
        }
        ensure!(line.last() == Some(&b'\n') || (n as u64) <= longest, "a line of the answer is over {longest} bytes");
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if !text.iter().all(u8::is_ascii_whitespace) {
            each(text)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = r#""stats":{"rows_in":3,"rows_out":1,"rows_filtered":1,"rows_errored":1}"#;
    const SUMMARY: &str =
        r#""summary":{"status":"complete","rows_in":3,"rows_out":1,"rows_filtered":1,"rows_errored":1}"#;

    fn table_of(lines: &[String], format: Format) -> Result<(Value, String)> {
        let (summary, out, _) = table_sides(lines, Table::Records, format)?;
        Ok((summary, out))
    }

    /// The summary, the output and what went apart from it.
    fn table_sides(lines: &[String], shape: Table, format: Format) -> Result<(Value, String, String)> {
        let answer = lines.join("\n");
        let (mut out, mut side) = (Vec::new(), Vec::new());
        let mut progress = Progress::new(None, crate::progress::Unit::Bytes, false);
        let summary = table(answer.as_bytes(), shape, format, &mut out, &mut side, &mut progress)?;
        Ok((summary, String::from_utf8(out).unwrap(), String::from_utf8(side).unwrap()))
    }

    fn good_table() -> Vec<String> {
        vec![
            r#"{"record":{"id":1}}"#.into(),
            r#"{"progress":{"done":1,"total":null,"failed":1,"rows":3,"elapsed_ms":5}}"#.into(),
            r#"{"error":{"line":3,"kind":"field_count","message":"m"}}"#.into(),
            format!("{{{STATS},{SUMMARY}}}"),
        ]
    }

    #[test]
    fn a_table_answer_becomes_the_apis_json_document_or_its_lines() {
        let (summary, json) = table_of(&good_table(), Format::Json).unwrap();
        assert_eq!(summary["status"], "complete");
        let doc: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["records"], serde_json::json!([{"id": 1}]));
        assert_eq!(doc["errors"][0]["line"], 3);
        assert_eq!(doc["stats"]["rows_in"], 3);
        assert!(json.ends_with("}\n"), "a final line break");
        let (_, ndjson, side) = table_sides(&good_table(), Table::Records, Format::Ndjson).unwrap();
        assert_eq!(ndjson, "{\"id\":1}\n", "one record a line, and nothing else");
        assert_eq!(side.lines().count(), 2, "the error record and the summary: {side}");
    }

    #[test]
    fn csv_output_has_the_records_columns_in_order_and_nulls_empty() {
        let lines = vec![
            r#"{"record":{"z":"a, \"b\"","a":1.5,"m":null,"t":true}}"#.to_owned(),
            r#"{"record":{"z":"line\nbreak","a":-2,"m":"x","t":false}}"#.to_owned(),
            r#"{"error":{"line":4,"kind":"field_count","message":"m"}}"#.to_owned(),
            r#"{"stats":{"rows_in":3,"rows_out":2,"rows_filtered":0,"rows_errored":1},"summary":{"status":"complete","rows_in":3,"rows_out":2,"rows_filtered":0,"rows_errored":1}}"#.to_owned(),
        ];
        let (_, csv, side) = table_sides(&lines, Table::Records, Format::Csv).unwrap();
        assert_eq!(csv, "z,a,m,t\n\"a, \"\"b\"\"\",1.5,,true\n\"line\nbreak\",-2,x,false\n");
        assert!(side.starts_with(r#"{"error":"#), "{side}");
        let other = lines[1].replace(r#""t":false"#, r#""u":false"#);
        let err = table_sides(&[lines[0].clone(), other], Table::Records, Format::Csv).unwrap_err();
        assert!(err.to_string().contains("column \"u\""), "{err}");
        assert!(TableAnswer::new(Table::Partial, Format::Csv).is_err());
    }

    #[test]
    fn a_table_answer_that_does_not_account_for_its_rows_is_refused() {
        let mut dropped = good_table();
        dropped.remove(0);
        let mut added = good_table();
        added.insert(0, r#"{"record":{"id":0}}"#.into());
        let mut lying = good_table();
        lying[3] = lying[3].replace(
            r#""status":"complete","rows_in":3,"rows_out":1,"rows_filtered":1,"rows_errored":1"#,
            r#""status":"complete","rows_in":3,"rows_out":2,"rows_filtered":1,"rows_errored":0"#,
        );
        let mut unbalanced = good_table();
        unbalanced[3] =
            unbalanced[3].replace(r#""rows_filtered":1,"rows_errored":1}"#, r#""rows_filtered":1,"rows_errored":5}"#);
        let mut cut = good_table();
        cut.pop();
        let mut unknown = good_table();
        unknown.insert(1, r#"{"rekord":{"id":2}}"#.into());
        let mut after = good_table();
        after.push(r#"{"record":{"id":9}}"#.into());
        for (name, lines, says) in [
            ("a dropped record", dropped, "has 0 records"),
            ("an added record", added, "has 2 records"),
            ("a summary that is not the stats", lying, "summary and stats differ"),
            ("stats that do not add up", unbalanced, "do not add up"),
            ("no summary", cut, "cut off"),
            ("an unknown line", unknown, "not a known JSON line"),
            ("lines after the summary", after, "after its summary"),
        ] {
            let err = table_of(&lines, Format::Json).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{name}: {err:#}");
        }
    }

    fn pages_of(lines: &[&str], urls: u64, format: Format) -> Result<String> {
        let answer = lines.join("\n");
        let (mut out, mut side) = (Vec::new(), Vec::new());
        let mut progress = Progress::new(None, crate::progress::Unit::Urls, false);
        pages(answer.as_bytes(), urls, format, &mut out, &mut side, &mut progress)?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[test]
    fn scrape_results_are_put_in_input_order_and_must_be_one_per_url() {
        let summary = r#"{"summary":{"status":"complete","urls":3,"errors":1}}"#;
        let (r0, r1, r2) = (
            r#"{"index":0,"url":"a","page":{}}"#,
            r#"{"index":1,"url":"b","error":{"kind":"dns"}}"#,
            r#"{"index":2,"url":"c","page":{}}"#,
        );
        let json =
            pages_of(&[r2, r0, r#"{"progress":{"done":2,"failed":0,"elapsed_ms":1}}"#, r1, summary], 3, Format::Json)
                .unwrap();
        let doc: Value = serde_json::from_str(&json).unwrap();
        let order: Vec<&str> = doc["results"].as_array().unwrap().iter().map(|r| r["url"].as_str().unwrap()).collect();
        assert_eq!(order, ["a", "b", "c"]);
        assert_eq!(pages_of(&[r2, r0, r1, summary], 3, Format::Ndjson).unwrap().lines().count(), 3, "results only");
        // A job that failed on its input accounts for the URLs read before it.
        let failed = r#"{"summary":{"status":"failed","urls":2,"errors":1,"reason":"the list is too long"}}"#;
        assert_eq!(pages_of(&[r1, r0, failed], 3, Format::Ndjson).unwrap().lines().count(), 2);

        for (lines, urls, says) in [
            (vec![r0, r1, summary], 3, "results for the list's 3 URLs"),
            (vec![r0, r0, r2, summary], 3, "result 1 is missing or repeated"),
            (vec![r0, r1, r2, r#"{"index":3,"url":"d","page":{}}"#, summary], 3, "URL 3 of a list of 3"),
            (vec![r0, r1, r2, summary], 4, "results for the list's 4 URLs"),
            (vec![r0, r1, r2, r#"{"summary":{"status":"complete","urls":3,"errors":0}}"#], 3, "counts Some(0) errors"),
            (vec![r0, r1, r2], 3, "cut off"),
            (vec![r0, r2, r#"{"summary":{"status":"failed","urls":2,"errors":0}}"#], 3, "result 1 is missing"),
        ] {
            let err = pages_of(&lines, urls, Format::Json).unwrap_err();
            assert!(format!("{err:#}").contains(says), "{says}: {err:#}");
        }
    }
}
