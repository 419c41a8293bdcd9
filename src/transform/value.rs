//! Typed values of a transformed row, and how they are written as JSON.

use super::dates::{Date, DateTime, Format};
use std::borrow::Cow;
use std::cmp::Ordering;

/// The type of an output column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Type {
    /// Text.
    String,
    /// A 64-bit signed integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// `true`/`false` (also read from `1`/`0`, `yes`/`no`, `t`/`f`, `y`/`n`, any case).
    Boolean,
    /// A calendar date.
    Date,
    /// A date and time of day.
    Datetime,
}

impl Type {
    /// The type with its article, for messages: "an integer".
    pub fn describe(self) -> &'static str {
        match self {
            Type::String => "a string",
            Type::Integer => "an integer",
            Type::Float => "a float",
            Type::Boolean => "a boolean",
            Type::Date => "a date",
            Type::Datetime => "a date-time",
        }
    }
}

/// One value of a transformed row.
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    /// Empty, or a bad value under the `null` policy.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Str(Cow<'a, str>),
    /// A date.
    Date(Date),
    /// A date-time.
    DateTime(DateTime),
}

impl Value<'_> {
    /// The value as a float, for arithmetic.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// An owned copy.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Float(f) => Value::Float(f),
            Value::Date(d) => Value::Date(d),
            Value::DateTime(d) => Value::DateTime(d),
        }
    }

    /// Compares two values of compatible types (numbers with numbers, and
    /// otherwise the same variant); `None` when they cannot be compared.
    pub fn compare(&self, other: &Value<'_>) -> Option<Ordering> {
        match (self, other) {
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Str(a), Value::Str(b)) => Some(a.cmp(b)),
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Date(a), Value::Date(b)) => Some(a.cmp(b)),
            (Value::DateTime(a), Value::DateTime(b)) => Some(a.cmp(b)),
            (a, b) => a.as_f64()?.partial_cmp(&b.as_f64()?),
        }
    }

    /// Whether the value counts as empty (null or the empty string).
    pub fn is_empty(&self) -> bool {
        match self {
            Value::Null => true,
            Value::Str(s) => s.is_empty(),
            _ => false,
        }
    }

    /// Writes the value as JSON; dates in `format` (ISO 8601 when `None`).
    pub fn write_json(&self, out: &mut Vec<u8>, format: Option<&Format>) {
        match self {
            Value::Null => out.extend_from_slice(b"null"),
            Value::Bool(true) => out.extend_from_slice(b"true"),
            Value::Bool(false) => out.extend_from_slice(b"false"),
            Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
            Value::Float(f) => write_float(out, *f),
            Value::Str(s) => write_str(out, s),
            Value::Date(d) => write_date(out, DateTime(i64::from(d.0) * 86_400), format.unwrap_or(Format::iso_date())),
            Value::DateTime(d) => write_date(out, *d, format.unwrap_or(Format::iso_datetime())),
        }
    }

    /// The value of type `ty` that JSON `v` writes (dates as ISO 8601 strings),
    /// the inverse of [`Value::to_json`]; `None` when `v` is not of that type.
    pub fn from_json(v: &serde_json::Value, ty: Type) -> Option<Value<'static>> {
        use serde_json::Value as J;
        Some(match (ty, v) {
            (_, J::Null) => Value::Null,
            (Type::String, J::String(s)) => Value::Str(s.clone().into()),
            (Type::Integer, J::Number(n)) => Value::Int(n.as_i64()?),
            (Type::Float, J::Number(n)) => Value::Float(n.as_f64()?),
            (Type::Boolean, J::Bool(b)) => Value::Bool(*b),
            (Type::Date, J::String(s)) => Value::Date(Format::iso_date().parse_date(s)?),
            (Type::Datetime, J::String(s)) => Value::DateTime(Format::iso_datetime().parse_datetime(s)?),
            _ => return None,
        })
    }

    /// The value as a `serde_json` value (for the small outputs: groups, errors).
    pub fn to_json(&self) -> serde_json::Value {
        let mut buf = Vec::new();
        self.write_json(&mut buf, None);
        serde_json::from_slice(&buf).expect("write_json writes valid JSON")
    }
}

fn write_date(out: &mut Vec<u8>, value: DateTime, format: &Format) {
    out.push(b'"');
    format.write(out, value);
    out.push(b'"');
}

/// Writes a finite float the shortest way that reads back the same (non-finite ones as `null`).
pub fn write_float(out: &mut Vec<u8>, f: f64) {
    if f.is_finite() {
        out.extend_from_slice(ryu::Buffer::new().format_finite(f).as_bytes());
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes `s` as a JSON string.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Parses a boolean the way the `boolean` type reads one.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "t" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(v: Value<'_>) -> String {
        let mut out = Vec::new();
        v.write_json(&mut out, None);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn values_write_valid_json() {
        assert_eq!(json(Value::Null), "null");
        assert_eq!(json(Value::Int(-42)), "-42");
        assert_eq!(json(Value::Float(12.1)), "12.1");
        assert_eq!(json(Value::Float(f64::NAN)), "null");
        assert_eq!(json(Value::Str("a\"b\\c\n\u{1}é".into())), r#""a\"b\\c\n\u0001é""#);
        assert_eq!(json(Value::Date(Date::from_ymd(2026, 1, 2).unwrap())), "\"2026-01-02\"");
        assert_eq!(json(Value::DateTime(DateTime(90))), "\"1970-01-01T00:01:30\"");
        for s in ["", "plain", "tab\there", "\u{7f}\u{0}\u{1f}"] {
            let written = json(Value::Str(s.into()));
            assert_eq!(serde_json::from_str::<String>(&written).unwrap(), s);
        }
    }

    #[test]
    fn comparisons() {
        assert_eq!(Value::Int(2).compare(&Value::Float(2.5)), Some(Ordering::Less));
        assert_eq!(Value::Str("b".into()).compare(&Value::Str("a".into())), Some(Ordering::Greater));
        assert_eq!(Value::Str("1".into()).compare(&Value::Int(1)), None);
        assert_eq!(Value::Null.compare(&Value::Int(1)), None);
        assert!(Value::Null.is_empty() && Value::Str("".into()).is_empty() && !Value::Int(0).is_empty());
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("Yes"), Some(true));
        assert_eq!(parse_bool("0"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }
}
