//! A coordinator's NDJSON answer, read line by line: progress lines go to the
//! display, everything else to the output, as NDJSON or as the JSON document
//! the coordinator would have answered with `Accept: application/json`.
//!
//! Nothing in the answer is taken on trust: every line must be one JSON value
//! of a known shape, and the end must account for what came before it
//! (records against `rows_out`, one result per URL index, a final summary).

use crate::progress::{Progress, Update};
use anyhow::{bail, ensure, Context, Result};
use fanout::transform::output::MAX_ERROR_RECORDS;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};

/// The longest answer line read: a record, a page's result, a group.
const MAX_LINE_BYTES: u64 = 256 * 1024 * 1024;

/// The output's format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON document, as `Accept: application/json` answers.
    Json,
    /// One JSON value a line, as `Accept: application/x-ndjson` answers, without progress lines.
    Ndjson,
}

/// What a transform job's output holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Records,
    Groups,
    Partial,
}

/// Reads a transform job's answer, writing the output to `out`; returns the summary.
pub fn table(
    answer: impl Read,
    shape: Table,
    format: Format,
    out: &mut impl Write,
    progress: &mut Progress,
) -> Result<Value> {
    let mut doc = TableDoc { shape, opened: false, records: 0, errors: Vec::new(), omitted: 0 };
    let mut summary = None;
    for_each_line(answer, |line| {
        ensure!(summary.is_none(), "the answer goes on after its summary");
        let parsed: TableLine =
            serde_json::from_slice(line).context("a line of the answer is not a known JSON line")?;
        match parsed {
            TableLine { progress: Some(update), .. } => progress.update(&update),
            TableLine { stats: Some(stats), summary: Some(s), .. } => {
                check_rows(&stats, &s)?;
                if shape == Table::Records {
                    let rows_out = stats.get("rows_out").and_then(Value::as_u64);
                    ensure!(
                        rows_out == Some(doc.records),
                        "the answer has {} records but its stats say rows_out {rows_out:?}",
                        doc.records
                    );
                }
                match format {
                    Format::Ndjson => write_line(out, line)?,
                    Format::Json => doc.finish(out, stats, &s)?,
                }
                summary = Some(s);
            }
            TableLine { error: Some(error), .. } => match format {
                Format::Ndjson => write_line(out, line)?,
                Format::Json if doc.errors.len() < MAX_ERROR_RECORDS => doc.errors.push(error.to_owned()),
                Format::Json => doc.omitted += 1,
            },
            TableLine { record: Some(value), .. } => {
                ensure!(shape == Table::Records, "an aggregate job's answer holds a record");
                doc.records += 1;
                doc.item(out, format, line, value)?;
            }
            TableLine { group: Some(value), .. } => {
                ensure!(shape == Table::Groups, "the answer holds a group where none was asked for");
                doc.item(out, format, line, value)?;
            }
            TableLine { partial: Some(value), .. } => {
                ensure!(shape == Table::Partial && !doc.opened, "the answer holds an unexpected partial aggregate");
                doc.item(out, format, line, value)?;
            }
            _ => bail!("a line of the answer is not a known JSON line"),
        }
        Ok(())
    })?;
    summary.context("the answer was cut off before its summary")
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
    stats: Option<Map<String, Value>>,
    #[serde(default)]
    summary: Option<Value>,
}

/// A transform job's JSON document, written as its lines arrive: records (or
/// groups) at once, error records held (at most [`MAX_ERROR_RECORDS`], as the
/// coordinator does) for their place after them.
struct TableDoc {
    shape: Table,
    opened: bool,
    records: u64,
    errors: Vec<Box<RawValue>>,
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

    fn item(&mut self, out: &mut impl Write, format: Format, line: &[u8], value: &RawValue) -> Result<()> {
        if format == Format::Ndjson {
            return write_line(out, line);
        }
        if !self.open(out)? {
            out.write_all(b",")?;
        }
        out.write_all(value.get().as_bytes())?;
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write, mut stats: Map<String, Value>, summary: &Value) -> Result<()> {
        if self.shape == Table::Partial {
            ensure!(self.opened, "the answer has no partial aggregate");
            out.write_all(b",")?;
        } else {
            self.open(out)?;
            out.write_all(b"],")?;
        }
        if self.omitted > 0 {
            let before = stats.get("errors_omitted").and_then(Value::as_u64).unwrap_or(0);
            stats.insert("errors_omitted".into(), Value::from(before + self.omitted));
        }
        out.write_all(b"\"errors\":")?;
        serde_json::to_writer(&mut *out, &self.errors)?;
        out.write_all(b",\"stats\":")?;
        serde_json::to_writer(&mut *out, &stats)?;
        out.write_all(b",\"summary\":")?;
        serde_json::to_writer(&mut *out, summary)?;
        out.write_all(b"}")?;
        Ok(())
    }
}

/// `rows_in = rows_out + rows_filtered + rows_errored`, as every answer must say.
fn check_rows(stats: &Map<String, Value>, summary: &Value) -> Result<()> {
    let n = |k: &str| stats.get(k).and_then(Value::as_u64);
    let (Some(i), Some(o), Some(f), Some(e)) = (n("rows_in"), n("rows_out"), n("rows_filtered"), n("rows_errored"))
    else {
        bail!("the answer's stats lack row counts");
    };
    ensure!(i == o + f + e, "the answer's stats do not add up: {i} rows in, {o} out, {f} filtered, {e} errored");
    ensure!(summary.get("status").is_some_and(Value::is_string), "the answer's summary has no status");
    Ok(())
}

/// One line of a scrape job's NDJSON answer: a page's result, a progress line or the summary.
#[derive(Deserialize)]
struct PageLine {
    #[serde(default)]
    index: Option<u64>,
    #[serde(default)]
    progress: Option<Update>,
    #[serde(default)]
    summary: Option<Value>,
}

/// Reads a scrape job's answer, writing the output to `out`; returns the summary.
///
/// NDJSON results come as each batch finishes; a JSON document lists them in
/// input order, so they wait in a temporary file (not in memory) until the end.
pub fn pages(answer: impl Read, format: Format, out: &mut impl Write, progress: &mut Progress) -> Result<Value> {
    let mut spool = match format {
        Format::Json => Some(tempfile::tempfile().context("cannot create a temporary file for the results")?),
        Format::Ndjson => None,
    };
    // Each result's index, and where its line is in the spool.
    let mut placed: Vec<(u64, u64, usize)> = Vec::new();
    let mut spooled = 0u64;
    let mut summary = None;
    for_each_line(answer, |line| {
        ensure!(summary.is_none(), "the answer goes on after its summary");
        let parsed: PageLine = serde_json::from_slice(line).context("a line of the answer is not JSON")?;
        match parsed {
            PageLine { progress: Some(update), index: None, summary: None } => progress.update(&update),
            PageLine { summary: Some(s), index: None, progress: None } => {
                if format == Format::Ndjson {
                    write_line(out, line)?;
                }
                summary = Some(s);
            }
            PageLine { index: Some(index), progress: None, summary: None } => {
                match &mut spool {
                    Some(file) => file.write_all(line)?,
                    None => write_line(out, line)?,
                }
                placed.push((index, spooled, line.len()));
                spooled += line.len() as u64;
            }
            _ => bail!("a line of the answer is neither a result, a progress line nor the summary"),
        }
        Ok(())
    })?;
    let summary = summary.context("the answer was cut off before its summary")?;
    placed.sort_unstable_by_key(|p| p.0);
    if let Some(gap) = placed.iter().enumerate().find(|(i, p)| p.0 != *i as u64) {
        bail!("the answer's results are not one per URL: result {} is missing or repeated", gap.0);
    }
    let urls = summary.get("urls").and_then(Value::as_u64);
    ensure!(urls == Some(placed.len() as u64), "the answer has {} results for {urls:?} URLs", placed.len());
    if let Some(mut file) = spool {
        out.write_all(b"{\"results\":[")?;
        let mut buf = Vec::new();
        for (i, &(_, at, len)) in placed.iter().enumerate() {
            if i > 0 {
                out.write_all(b",")?;
            }
            buf.resize(len, 0);
            file.seek(SeekFrom::Start(at))?;
            file.read_exact(&mut buf)?;
            out.write_all(&buf)?;
        }
        out.write_all(b"],\"summary\":")?;
        serde_json::to_writer(&mut *out, &summary)?;
        out.write_all(b"}")?;
    }
    Ok(summary)
}

fn write_line(out: &mut impl Write, line: &[u8]) -> Result<()> {
    out.write_all(line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Calls `each` with every non-empty line of `answer`, without its line break.
fn for_each_line(answer: impl Read, mut each: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut reader = BufReader::with_capacity(256 * 1024, answer);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(MAX_LINE_BYTES + 1).read_until(b'\n', &mut line).context("reading the answer")?;
        if n == 0 {
            return Ok(());
        }
        ensure!(line.last() == Some(&b'\n') || (n as u64) <= MAX_LINE_BYTES, "a line of the answer is over 256 MiB");
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        if !text.iter().all(u8::is_ascii_whitespace) {
            each(text)?;
        }
    }
}
