//! The transform spec as callers write it (JSON), and the built-in presets.
//!
//! Parsing reports the path of the offending field (`columns[2].type: unknown
//! variant ...`); [`super::program::Program::compile`] checks the meaning.

use super::value::Type;
use crate::api::{ApiError, ErrorKind};
use serde::{Deserialize, Serialize};

/// A transform spec.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// A built-in spec to start from (`vat`, `sales-summary`); the fields below replace its parts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// How the CSV is written.
    #[serde(default, skip_serializing_if = "is_default")]
    pub dialect: Dialect,
    /// The output columns; when absent, every input column as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<ColumnEntry>>,
    /// Which rows to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterSpec>,
    /// Group and summarise instead of writing records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<AggregateSpec>,
    /// What a bad row does.
    #[serde(default, skip_serializing_if = "is_default")]
    pub on_error: OnError,
}

// Defaults are left out when a spec is written, so the spec a coordinator
// forwards to its workers stays as small as the one it was given.
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The CSV dialect.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Dialect {
    /// The field delimiter, one ASCII character.
    pub delimiter: String,
    /// The quote character, one ASCII character.
    pub quote: String,
    /// Whether the first row is a header.
    pub header: bool,
    /// Column names, for input without a header row (or to rename the header's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
    /// Trim whitespace around every field.
    pub trim: bool,
    /// Accept rows with more or fewer fields than the header (missing ones read as empty).
    pub flexible: bool,
    /// Field values that mean "missing" (`NA`, `NULL`, ...), compared after trimming and
    /// before anything else, in every column. Unset: only an empty field, and only in typed columns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub null_values: Option<Vec<String>>,
}

impl Dialect {
    /// The delimiter and quote bytes, once the dialect has been checked
    /// ([`crate::transform::engine::reader`] refuses one that is not a single byte).
    pub fn bytes(&self) -> (u8, u8) {
        let first = |s: &str, default| s.as_bytes().first().copied().unwrap_or(default);
        (first(&self.delimiter, b','), first(&self.quote, b'"'))
    }
}

impl Default for Dialect {
    fn default() -> Dialect {
        Dialect {
            delimiter: ",".into(),
            quote: "\"".into(),
            header: true,
            columns: None,
            trim: false,
            flexible: false,
            null_values: None,
        }
    }
}

/// What a bad row does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The row becomes an error record; the chunk goes on.
    #[default]
    Skip,
    /// The first bad row fails the request with 422.
    Fail,
    /// Bad values become null and the row is kept (rows of the wrong length are still errors).
    Null,
}

/// An output column: a source column's name, or the full form.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ColumnEntry {
    /// A source column, output as a string under its own name.
    Name(String),
    /// The full form.
    Spec(Box<ColumnSpec>),
}

// By hand rather than untagged, so a mistake inside the full form keeps its field's name.
impl<'de> Deserialize<'de> for ColumnEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ColumnEntry, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(name) => Ok(ColumnEntry::Name(name)),
            v @ serde_json::Value::Object(_) => serde_path_to_error::deserialize(v)
                .map(|spec| ColumnEntry::Spec(Box::new(spec)))
                .map_err(|e| D::Error::custom(format!("{}: {}", e.path(), e.inner()))),
            other => Err(D::Error::custom(format!("a column is an input column's name or an object, not {other}"))),
        }
    }
}

/// The full form of an output column.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    /// The output name (default: `from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The source column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// An arithmetic expression over earlier output columns and source columns, instead of `from`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expr: Option<String>,
    /// The type (default: string; float for `expr`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<Type>,
    /// Input formats for dates and date-times, tried in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub formats: Vec<String>,
    /// Output format for dates and date-times (default ISO 8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_format: Option<String>,
    /// Trim surrounding whitespace.
    #[serde(default, skip_serializing_if = "is_default")]
    pub trim: bool,
    /// Lower-case.
    #[serde(default, skip_serializing_if = "is_default")]
    pub lower: bool,
    /// Upper-case.
    #[serde(default, skip_serializing_if = "is_default")]
    pub upper: bool,
    /// Replacements, applied in order after trimming.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replace: Vec<Replace>,
    /// The text used when the value is empty or missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
    /// This column's missing values, instead of `dialect.null_values`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub null_values: Option<Vec<String>>,
    /// Multiply numbers by this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiply: Option<f64>,
    /// Add this to numbers (after `multiply`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add: Option<f64>,
    /// Round floats to this many decimal places (last).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub round: Option<u32>,
    /// Compute the column (for filters and expressions) without writing it.
    #[serde(default, skip_serializing_if = "is_default")]
    pub hidden: bool,
}

/// One text replacement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replace {
    /// The text to find (not empty).
    pub from: String,
    /// What replaces it.
    pub to: String,
}

/// A filter: a condition, or `all`/`any`/`not` of filters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// Every one of these holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all: Option<Vec<FilterSpec>>,
    /// At least one of these holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub any: Option<Vec<FilterSpec>>,
    /// This does not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<FilterSpec>>,
    /// The output column a condition tests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    /// The condition's operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<CondOp>,
    /// The value compared with (a list for `in` and `not_in`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

/// A condition's operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CondOp {
    /// Equal.
    #[serde(rename = "==")]
    Eq,
    /// Not equal.
    #[serde(rename = "!=")]
    Ne,
    /// Less than.
    #[serde(rename = "<")]
    Lt,
    /// At most.
    #[serde(rename = "<=")]
    Le,
    /// Greater than.
    #[serde(rename = ">")]
    Gt,
    /// At least.
    #[serde(rename = ">=")]
    Ge,
    /// One of a list.
    #[serde(rename = "in")]
    In,
    /// None of a list.
    #[serde(rename = "not_in")]
    NotIn,
    /// Text containing a substring.
    #[serde(rename = "contains")]
    Contains,
    /// Null or the empty string.
    #[serde(rename = "empty")]
    Empty,
    /// Neither null nor the empty string.
    #[serde(rename = "not_empty")]
    NotEmpty,
}

/// Grouping and summaries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateSpec {
    /// The output columns whose values form a group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    /// What to compute per group.
    pub metrics: Vec<MetricSpec>,
    /// Which groups to keep, over group columns and metric names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub having: Option<FilterSpec>,
    /// The order of the groups (default: by the group columns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sort: Vec<SortSpec>,
    /// At most this many groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Return mergeable partial state instead of final values (having, sort and limit wait for the merge).
    #[serde(default, skip_serializing_if = "is_default")]
    pub partial: bool,
}

/// One metric.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricSpec {
    /// The output name (default `<op>_<column>`, or `count`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What to compute.
    pub op: MetricOp,
    /// The output column it reads (optional for `count`, which then counts rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
}

/// A metric's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricOp {
    /// Non-missing values of a column; without a column, rows.
    Count,
    /// Every row of the group, whatever its values.
    Rows,
    /// The sum of a numeric column.
    Sum,
    /// The least value of a numeric or date column.
    Min,
    /// The greatest value of a numeric or date column.
    Max,
    /// The mean of a numeric column.
    Mean,
}

/// One sort key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortSpec {
    /// A group column or metric name.
    pub by: String,
    /// Largest first.
    #[serde(default, skip_serializing_if = "is_default")]
    pub desc: bool,
}

/// The largest spec accepted in a header or a query parameter.
pub const MAX_SPEC_BYTES: usize = 16 * 1024;

/// The spec of an HTTP request, which may come as the `x-fanout-spec` header,
/// the `spec` query parameter or the `preset` query parameter (at most one).
pub fn from_request(
    header: Option<String>,
    spec_query: Option<String>,
    preset_query: Option<String>,
) -> Result<Option<Spec>, ApiError> {
    let preset = preset_query.map(|p| serde_json::json!({ "preset": p }).to_string());
    let given: Vec<(&str, String)> = [
        ("the x-fanout-spec header", header),
        ("the spec query parameter", spec_query),
        ("the preset query parameter", preset),
    ]
    .into_iter()
    .filter_map(|(from, v)| Some((from, v?)))
    .collect();
    match given.as_slice() {
        [] => Ok(None),
        [(from, json)] if json.len() > MAX_SPEC_BYTES => Err(ApiError::new(
            ErrorKind::PayloadTooLarge,
            format!("the spec in {from} is {} bytes; the limit is {MAX_SPEC_BYTES}", json.len()),
        )),
        [(_, json)] => parse(json.as_bytes()).map(Some).map_err(ApiError::bad_request),
        _ => Err(ApiError::bad_request(format!(
            "the spec is given {} ways ({}); give it one way",
            given.len(),
            given.iter().map(|(f, _)| *f).collect::<Vec<_>>().join(", ")
        ))),
    }
}

/// The spec of a job given as a JSON body: its `spec` field, or `given` (the
/// request's spec from [`from_request`]), never both; neither is the default spec.
pub fn of_json_job(given: Option<Spec>, field: Option<&serde_json::Value>) -> Result<Spec, ApiError> {
    match (given, field) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("the spec is given both in the body and outside it; give it one way"))
        }
        (Some(spec), None) => Ok(spec),
        (None, Some(v)) => parse(v.to_string().as_bytes()).map_err(ApiError::bad_request),
        (None, None) => Ok(Spec::default()),
    }
}

/// Parses a spec from JSON, naming the path of the offending field on failure.
pub fn parse(json: &[u8]) -> Result<Spec, String> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let spec: Spec = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("invalid spec: {inner}")
        } else {
            format!("invalid spec at {path}: {inner}")
        }
    })?;
    de.end().map_err(|e| format!("invalid spec: {e}"))?;
    spec.with_preset()
}

impl Spec {
    /// The spec with its preset's parts filled in where it has none of its own.
    pub fn with_preset(mut self) -> Result<Spec, String> {
        let Some(name) = self.preset.take() else { return Ok(self) };
        let preset =
            preset(&name).ok_or_else(|| format!("preset: unknown preset {name:?} ({})", PRESETS.join(", ")))?;
        self.columns = self.columns.or(preset.columns);
        self.filter = self.filter.or(preset.filter);
        self.aggregate = self.aggregate.or(preset.aggregate);
        Ok(self)
    }
}

/// The built-in specs' names.
pub const PRESETS: [&str; 2] = ["vat", "sales-summary"];

/// A built-in spec by name.
pub fn preset(name: &str) -> Option<Spec> {
    let json = match name {
        "vat" => {
            r#"{
            "columns": [
                {"name": "id", "from": "id", "type": "integer"},
                {"name": "net", "from": "amount", "type": "float", "hidden": true},
                {"name": "amount", "expr": "net * 1.21", "type": "float", "round": 2},
                {"name": "date", "from": "date", "type": "date", "formats": ["%Y-%m-%d"]},
                {"name": "category", "from": "category", "trim": true, "lower": true}
            ],
            "filter": {"column": "net", "op": ">", "value": 0}
        }"#
        }
        "sales-summary" => {
            r#"{
            "columns": [
                "region",
                "product",
                "id",
                {"name": "amount", "from": "amount", "type": "float"}
            ],
            "aggregate": {
                "group_by": ["region", "product"],
                "metrics": [
                    {"name": "total", "op": "sum", "column": "amount"},
                    {"name": "orders", "op": "count", "column": "id"}
                ],
                "having": {"column": "total", "op": ">", "value": 10000},
                "sort": [{"by": "total", "desc": true}]
            }
        }"#
        }
        _ => return None,
    };
    Some(serde_json::from_str(json).expect("presets are valid specs"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse() {
        assert!(preset("vat").unwrap().filter.is_some());
        assert!(preset("sales-summary").unwrap().aggregate.is_some());
        assert!(preset("nope").is_none());
        let spec = parse(br#"{"preset": "vat", "dialect": {"delimiter": ";"}}"#).unwrap();
        assert_eq!(spec.dialect.delimiter, ";");
        assert_eq!(spec.columns.unwrap().len(), 5);
    }

    #[test]
    fn a_json_job_takes_its_spec_from_the_body_or_the_request_not_both() {
        let vat = preset("vat").unwrap();
        let field = serde_json::json!({"preset": "vat"});
        assert_eq!(of_json_job(None, Some(&field)).unwrap(), vat);
        assert_eq!(of_json_job(Some(vat.clone()), None).unwrap(), vat);
        assert_eq!(of_json_job(None, None).unwrap(), Spec::default());
        let err = of_json_job(Some(vat), Some(&field)).unwrap_err();
        assert!(err.message().contains("both in the body and outside it"), "{}", err.message());
        let err = of_json_job(None, Some(&serde_json::json!({"colums": []}))).unwrap_err();
        assert!(err.message().contains("invalid spec"), "{}", err.message());
    }

    #[test]
    fn one_way_of_giving_the_spec() {
        assert_eq!(from_request(None, None, None).unwrap(), None);
        let vat = from_request(None, None, Some("vat".into())).unwrap().unwrap();
        assert!(vat.filter.is_some());
        let err = from_request(Some("{}".into()), None, Some("vat".into())).unwrap_err();
        assert!(err.message().contains("given 2 ways"), "{}", err.message());
        let big = format!("{{\"columns\": [{}\"a\"]}}", "\"a\",".repeat(MAX_SPEC_BYTES / 4));
        assert_eq!(from_request(None, Some(big), None).unwrap_err().status(), 413);
        assert_eq!(from_request(Some("{".into()), None, None).unwrap_err().status(), 400);
    }

    #[test]
    fn specs_are_written_without_their_defaults() {
        let spec = parse(br#"{"preset": "vat"}"#).unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        assert!(!text.contains("dialect") && !text.contains("\"trim\":false") && !text.contains("on_error"), "{text}");
        assert_eq!(parse(text.as_bytes()).unwrap(), spec);
    }

    #[test]
    fn errors_name_the_path() {
        for (json, needle) in [
            (r#"{"columns": [{"from": "a", "type": "money"}]}"#, "columns[0]: type: unknown variant `money`"),
            (r#"{"columns": [{"from": "a", "typo": 1}]}"#, "columns[0]: typo: unknown field `typo`"),
            (r#"{"columns": [3]}"#, "columns[0]: a column is an input column's name or an object, not 3"),
            (r#"{"filter": {"all": [{"column": "a", "op": "=>"}]}}"#, "filter.all[0].op"),
            (r#"{"aggregate": {"metrics": [{"op": "median"}]}}"#, "aggregate.metrics[0].op"),
            (r#"{"on_error": "explode"}"#, "on_error"),
            (r#"{"preset": "nope"}"#, "preset"),
            (r#"{"dialect": {"header": "yes"}}"#, "dialect.header"),
            (r#"{"preset": "vat"}}"#, "invalid spec: trailing characters at line 1 column 18"),
        ] {
            let err = parse(json.as_bytes()).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
    }
}
