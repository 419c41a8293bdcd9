//! What a transform produces besides records: error records and counts.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Why one row produced no record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowError {
    /// The 1-based line of the input on which the row starts (the header is line 1).
    pub line: u64,
    /// In range mode, the byte offset in the source file at which the row starts.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub byte: Option<u64>,
    /// The 1-based input field at fault, where one is.
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
    /// A value does not convert to its column's type, or arithmetic on it failed.
    InvalidValue,
    /// The worker that held these rows failed, so they were not processed.
    Worker,
    /// The record is larger than a worker takes in one request, so it was not processed.
    TooLarge,
    /// The job stopped (failure threshold, deadline, a failing row) before these rows were processed.
    NotAttempted,
}

/// Row counts. Always `rows_in = rows_out + rows_filtered + rows_errored`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// Data rows read (the header is not counted).
    pub rows_in: u64,
    /// Rows written as records (or, when aggregating, rows that went into groups).
    pub rows_out: u64,
    /// Rows the filter dropped.
    #[serde(default)]
    pub rows_filtered: u64,
    /// Rows that produced an error record.
    pub rows_errored: u64,
    /// Error records left out of a JSON answer (past [`MAX_ERROR_RECORDS`] per chunk); they are
    /// counted in `rows_errored`, and NDJSON answers carry every one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors_omitted: u64,
}

/// The most error records a JSON answer holds per chunk: they wait in memory
/// until the records are out, so a chunk of bad rows must not hold them all.
pub const MAX_ERROR_RECORDS: usize = 10_000;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Stats {
    /// Checks counts someone else sent: `rows_in = rows_out + rows_filtered +
    /// rows_errored`, without overflow, whatever the numbers.
    pub fn check(&self) -> Result<(), String> {
        let sum = self.rows_out.checked_add(self.rows_filtered).and_then(|n| n.checked_add(self.rows_errored));
        if sum != Some(self.rows_in) {
            return Err(format!(
                "its counts do not add up: rows_in {} != rows_out {} + rows_filtered {} + rows_errored {}",
                self.rows_in, self.rows_out, self.rows_filtered, self.rows_errored
            ));
        }
        Ok(())
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &Stats) {
        self.rows_in += other.rows_in;
        self.rows_out += other.rows_out;
        self.rows_filtered += other.rows_filtered;
        self.rows_errored += other.rows_errored;
        self.errors_omitted += other.errors_omitted;
    }
}

/// A whole record-mode answer, as the coordinator reads a worker's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TableOutput {
    /// One JSON object per kept row, in input order.
    pub records: Vec<Map<String, Value>>,
    /// One entry per bad row, in input order.
    pub errors: Vec<RowError>,
    /// Row counts.
    pub stats: Stats,
}
