//! CSV chunks turned into JSON records, with an error record for every bad row.
//!
//! A chunk is a header row followed by data rows. Every data row ends up
//! either as a record or as a [`RowError`]: `rows_in = rows_out + rows_errored`.

use crate::api::ApiError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The result of transforming one chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableOutput {
    /// One JSON object per good row, keyed by the header's column names, in input order.
    pub records: Vec<Map<String, Value>>,
    /// One entry per bad row, in input order.
    pub errors: Vec<RowError>,
    /// Row counts.
    pub stats: Stats,
}

/// Why one row produced no record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// The 1-based line of the input on which the row starts (the header is line 1).
    pub line: u64,
    /// The 1-based column (field) at fault, where one is.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub column: Option<usize>,
    /// What class of problem this is.
    pub kind: RowErrorKind,
    /// What went wrong, for a person.
    pub message: String,
}

/// Stable names for the ways a row can fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowErrorKind {
    /// The row has more or fewer fields than the header.
    FieldCount,
    /// A field is not valid UTF-8.
    InvalidUtf8,
    /// The worker that held these rows failed, so they were not processed.
    Worker,
}

/// Row counts for a chunk or a whole job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Data rows read (the header is not counted).
    pub rows_in: u64,
    /// Rows written as records.
    pub rows_out: u64,
    /// Rows that produced an error record.
    pub rows_errored: u64,
}

impl Stats {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Stats) {
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.rows_errored += other.rows_errored;
    }
}

/// Reads a CSV chunk (header row first) into records and row errors.
///
/// Fails as a whole only when there is no header row or the header is not UTF-8.
pub fn to_records(csv: &[u8]) -> Result<TableOutput, ApiError> {
    let mut reader = csv::ReaderBuilder::new().has_headers(true).flexible(true).from_reader(csv);
    let header = reader
        .headers()
        .map_err(|e| ApiError::bad_request(format!("CSV header row (line 1) is not valid: {e}")))?
        .clone();
    if header.is_empty() {
        return Err(ApiError::bad_request("CSV body is empty; a header row was expected on line 1"));
    }
    let mut out = TableOutput::default();
    let mut row = csv::ByteRecord::new();
    loop {
        match reader.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            // Without UTF-8 decoding and with flexible rows on, the csv crate has no
            // per-row parse errors left; an I/O error cannot happen on a byte slice.
            Err(e) => return Err(ApiError::bad_request(format!("CSV could not be read: {e}"))),
        }
        out.stats.rows_in += 1;
        let line = row.position().map_or(0, |p| p.line());
        match record(&header, &row, line) {
            Ok(rec) => {
                out.stats.rows_out += 1;
                out.records.push(rec);
            }
            Err(err) => {
                out.stats.rows_errored += 1;
                out.errors.push(err);
            }
        }
    }
    Ok(out)
}

fn record(header: &csv::StringRecord, row: &csv::ByteRecord, line: u64) -> Result<Map<String, Value>, RowError> {
    if row.len() != header.len() {
        return Err(RowError {
            line,
            column: None,
            kind: RowErrorKind::FieldCount,
            message: format!("row has {} fields but the header has {}", row.len(), header.len()),
        });
    }
    let mut rec = Map::with_capacity(header.len());
    for (i, (name, field)) in header.iter().zip(row.iter()).enumerate() {
        let text = std::str::from_utf8(field).map_err(|e| RowError {
            line,
            column: Some(i + 1),
            kind: RowErrorKind::InvalidUtf8,
            message: format!("field {name:?} is not valid UTF-8 (bad byte at offset {})", e.valid_up_to()),
        })?;
        rec.insert(name.to_owned(), Value::String(text.to_owned()));
    }
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_become_records_in_order() {
        let out = to_records(b"id,name\n1,a\n2,\"b, c\"\r\n3,\"multi\nline\"\n").unwrap();
        assert_eq!(
            Value::Array(out.records.into_iter().map(Value::Object).collect()),
            json!([{"id": "1", "name": "a"}, {"id": "2", "name": "b, c"}, {"id": "3", "name": "multi\nline"}])
        );
        assert_eq!(out.stats, Stats { rows_in: 3, rows_out: 3, rows_errored: 0 });
    }

    #[test]
    fn bad_rows_become_errors_with_their_line() {
        let out = to_records(b"id,name\n1,a\n2\n3,c,extra\n4,\xff\n5,e").unwrap();
        assert_eq!(out.records.len(), 2);
        let lines: Vec<_> = out.errors.iter().map(|e| (e.line, e.kind, e.column)).collect();
        assert_eq!(
            lines,
            vec![
                (3, RowErrorKind::FieldCount, None),
                (4, RowErrorKind::FieldCount, None),
                (5, RowErrorKind::InvalidUtf8, Some(2)),
            ]
        );
        assert_eq!(out.stats, Stats { rows_in: 5, rows_out: 2, rows_errored: 3 });
    }

    #[test]
    fn missing_or_bad_header_fails_the_chunk() {
        assert_eq!(to_records(b"").unwrap_err().status(), 400);
        assert!(to_records(b"id,\xffname\n1,2\n").unwrap_err().message().contains("line 1"));
    }
}
