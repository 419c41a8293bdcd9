//! A coordinator's NDJSON answer, read line by line: progress lines go to the
//! display, everything else to the output, as NDJSON or as the JSON document
//! the coordinator would have answered with `Accept: application/json`.
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
    let mut doc = TableDoc { shape, opened: false, records: 0, errors: Spool::new()?, omitted: 0 };
    let mut summary = None;
    let longest = if shape == Table::Partial { MAX_PARTIAL_LINE_BYTES } else { MAX_LINE_BYTES };
    for_each_line(answer, longest, |line| {
        ensure!(summary.is_none(), "the answer goes on after its summary");
        let parsed: TableLine =
            serde_json::from_slice(line).context("a line of the answer is not a known JSON line")?;
        match parsed {
            TableLine { progress: Some(update), .. } => progress.update(&update),
            TableLine { stats: Some(stats), summary: Some(s), .. } => {
                check_rows(&stats, &s)?;
                if shape == Table::Records {
                    ensure!(
                        stats.rows_out == doc.records,
                        "the answer has {} records but its stats say rows_out {}",
                        doc.records,
                        stats.rows_out
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
                Format::Json if doc.errors.len() < MAX_ERROR_RECORDS => {
                    doc.errors.push(error.get().as_bytes()).map(drop)?
                }
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
        out.write_all(b"}")?;
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
/// `out`; returns the summary.
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
    progress: &mut Progress,
) -> Result<Value> {
    let mut spool = match format {
        Format::Json => Some(Spool::new()?),
        Format::Ndjson => None,
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
                    write_line(out, line)?;
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
        out.write_all(b"}")?;
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
        let answer = lines.join("\n");
        let mut out = Vec::new();
        let summary = table(
            answer.as_bytes(),
            Table::Records,
            format,
            &mut out,
            &mut Progress::new(None, crate::progress::Unit::Bytes),
        )?;
        Ok((summary, String::from_utf8(out).unwrap()))
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
        let (_, ndjson) = table_of(&good_table(), Format::Ndjson).unwrap();
        assert_eq!(ndjson.lines().count(), 3, "no progress line: {ndjson}");
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
        let mut out = Vec::new();
        pages(answer.as_bytes(), urls, format, &mut out, &mut Progress::new(None, crate::progress::Unit::Urls))?;
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
        assert_eq!(pages_of(&[r2, r0, r1, summary], 3, Format::Ndjson).unwrap().lines().count(), 4);
        // A job that failed on its input accounts for the URLs read before it.
        let failed = r#"{"summary":{"status":"failed","urls":2,"errors":1,"reason":"the list is too long"}}"#;
        assert_eq!(pages_of(&[r1, r0, failed], 3, Format::Ndjson).unwrap().lines().count(), 3);

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
