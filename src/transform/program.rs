//! A spec compiled against a header: every name resolved, every literal and
//! format checked, so that reading rows cannot meet a mistake in the spec.

use super::dates::Format;
use super::expr::{EvalError, Expr};
use super::filter::Cond;
use super::output::{RowError, RowErrorKind};
use super::spec::{ColumnEntry, ColumnSpec, OnError, Spec};
use super::value::{parse_bool, write_str, Type, Value};
use std::borrow::Cow;

/// A compiled spec.
#[derive(Debug)]
pub struct Program {
    pub(crate) columns: Vec<Column>,
    filter: Option<Cond>,
    pub(crate) on_error: OnError,
    flexible: bool,
    width: usize,
}

/// A compiled output column.
#[derive(Debug)]
pub(crate) struct Column {
    pub(crate) name: String,
    /// `"name":`, ready to write.
    key_json: Vec<u8>,
    pub(crate) hidden: bool,
    source: Source,
    pub(crate) ty: Type,
    formats: Vec<Format>,
    output_format: Option<Format>,
    trim: bool,
    lower: bool,
    upper: bool,
    replace: Vec<(String, String)>,
    default: Option<String>,
    /// Field values that mean "missing", if the spec names any.
    nulls: Vec<String>,
    multiply: Option<f64>,
    add: Option<f64>,
    round: Option<u32>,
}

#[derive(Debug)]
enum Source {
    Field(usize),
    Expr { expr: Expr, slots: Vec<Slot> },
}

/// Where an expression's name gets its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Column(usize),
    Field(usize),
}

/// What became of a row that had no error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The row is kept.
    Keep,
    /// The filter dropped it.
    Filtered,
}

impl Program {
    /// Compiles `spec` for input whose columns are `header`.
    pub fn compile(spec: &Spec, header: &[String]) -> Result<Program, String> {
        let entries: Vec<ColumnEntry> = match &spec.columns {
            Some(c) if c.is_empty() => return Err("columns: the list is empty".into()),
            Some(c) => c.clone(),
            None => header.iter().cloned().map(ColumnEntry::Name).collect(),
        };
        let mut columns: Vec<Column> = Vec::with_capacity(entries.len());
        let dialect_nulls = spec.dialect.null_values.clone().unwrap_or_default();
        for (i, entry) in entries.iter().enumerate() {
            let path = format!("columns[{i}]");
            let spec = match entry {
                ColumnEntry::Name(n) => ColumnSpec { from: Some(n.clone()), ..ColumnSpec::default() },
                ColumnEntry::Spec(s) => (**s).clone(),
            };
            let column = compile_column(&spec, header, &columns, &path, spec_nulls(&spec, &dialect_nulls))?;
            if columns.iter().any(|c| c.name == column.name) {
                return Err(format!(
                    "{path}: the output name {:?} is used twice (input columns with the same name need \"name\" in the spec)",
                    column.name
                ));
            }
            columns.push(column);
        }
        let schema: Vec<(String, Type)> = columns.iter().map(|c| (c.name.clone(), c.ty)).collect();
        let filter = spec.filter.as_ref().map(|f| Cond::compile(f, &schema, "filter")).transpose()?;
        Ok(Program { columns, filter, on_error: spec.on_error, flexible: spec.dialect.flexible, width: header.len() })
    }

    /// The names and types of the output columns, hidden ones included, in value order.
    pub fn schema(&self) -> Vec<(String, Type)> {
        self.columns.iter().map(|c| (c.name.clone(), c.ty)).collect()
    }

    /// Computes the output values of `row` (starting on `line`) into `values`
    /// and applies the filter.
    pub fn eval<'r>(
        &self,
        row: &'r csv::ByteRecord,
        line: u64,
        values: &mut Vec<Value<'r>>,
    ) -> Result<Verdict, RowError> {
        if !self.flexible && row.len() != self.width {
            return Err(RowError {
                line,
                byte: None,
                column: None,
                kind: RowErrorKind::FieldCount,
                message: format!("row has {} fields but the header has {}", row.len(), self.width),
            });
        }
        values.clear();
        for column in &self.columns {
            let value = match column.value(row, values) {
                Ok(v) => v,
                Err(_) if self.on_error == OnError::Null => Value::Null,
                Err((kind, field, message)) => {
                    return Err(RowError { line, byte: None, column: field.map(|f| f + 1), kind, message })
                }
            };
            values.push(value);
        }
        match &self.filter {
            Some(f) if !f.holds(values) => Ok(Verdict::Filtered),
            _ => Ok(Verdict::Keep),
        }
    }

    /// Writes the visible values as one JSON object.
    pub fn write_record(&self, values: &[Value<'_>], out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (column, value) in self.columns.iter().zip(values) {
            if column.hidden {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(&column.key_json);
            match (value, column.round) {
                (Value::Float(f), Some(places)) if write_fixed(out, *f, places) => {}
                _ => value.write_json(out, column.output_format.as_ref()),
            }
        }
        out.push(b'}');
    }
}

/// Writes a float already rounded to `places` decimals as fixed-point digits
/// (`121.0`, `-0.07`), the same text the shortest round-trip form gives, with
/// integer arithmetic only: shortest-form printing needs 128-bit products,
/// which WebAssembly computes slowly. Declines (false) outside the range where
/// the digits are exact.
fn write_fixed(out: &mut Vec<u8>, f: f64, places: u32) -> bool {
    let scale = 10f64.powi(places as i32);
    let units = (f * scale).round();
    if !(f == 0.0 || (1e-4..1e15).contains(&f.abs())) || units.abs() >= 9.0e15 {
        return false;
    }
    let units = units as i64;
    if f.is_sign_negative() {
        out.push(b'-');
    }
    let pow = 10u64.pow(places);
    let (int, mut frac) = (units.unsigned_abs() / pow, units.unsigned_abs() % pow);
    out.extend_from_slice(itoa::Buffer::new().format(int).as_bytes());
    out.push(b'.');
    let mut digits = places as usize;
    while digits > 1 && frac % 10 == 0 {
        frac /= 10;
        digits -= 1;
    }
    let mut buffer = itoa::Buffer::new();
    let text = buffer.format(frac);
    out.extend(std::iter::repeat_n(b'0', digits.saturating_sub(text.len())));
    out.extend_from_slice(text.as_bytes());
    true
}

type ValueError = (RowErrorKind, Option<usize>, String);

impl Column {
    fn value<'r>(&self, row: &'r csv::ByteRecord, earlier: &[Value<'r>]) -> Result<Value<'r>, ValueError> {
        match &self.source {
            Source::Field(i) => {
                let raw = row.get(*i).unwrap_or(b"");
                let text = std::str::from_utf8(raw).map_err(|e| {
                    let msg =
                        format!("column {:?}: not valid UTF-8 (bad byte at offset {})", self.name, e.valid_up_to());
                    (RowErrorKind::InvalidUtf8, Some(*i), msg)
                })?;
                if self.is_null(text) {
                    return self.missing().map_err(|m| (RowErrorKind::InvalidValue, Some(*i), m));
                }
                let text = self.clean(text);
                let text = match (&self.default, text.is_empty()) {
                    (Some(d), true) => Cow::Owned(d.clone()),
                    (None, true) if self.ty != Type::String => return Ok(Value::Null),
                    _ => text,
                };
                self.convert(text).map_err(|m| (RowErrorKind::InvalidValue, Some(*i), m))
            }
            Source::Expr { expr, slots } => {
                // Most expressions name a few columns: keep their numbers on the stack.
                let mut inline = [None; 8];
                let mut spilled;
                let numbers: &mut [Option<f64>] = if slots.len() <= inline.len() {
                    &mut inline[..slots.len()]
                } else {
                    spilled = vec![None; slots.len()];
                    &mut spilled
                };
                for (number, slot) in numbers.iter_mut().zip(slots) {
                    *number = match *slot {
                        Slot::Column(c) => earlier[c].as_f64(),
                        Slot::Field(f) => {
                            let raw = std::str::from_utf8(row.get(f).unwrap_or(b"")).map_err(|e| {
                                let msg = format!(
                                    "column {:?}: input not valid UTF-8 (bad byte at offset {})",
                                    self.name,
                                    e.valid_up_to()
                                );
                                (RowErrorKind::InvalidUtf8, Some(f), msg)
                            })?;
                            let trimmed = raw.trim();
                            if trimmed.is_empty() || self.is_null(raw) {
                                None
                            } else {
                                Some(trimmed.parse::<f64>().ok().filter(|n| n.is_finite()).ok_or_else(|| {
                                    let msg = format!("column {:?}: {trimmed:?} is not a number", self.name);
                                    (RowErrorKind::InvalidValue, Some(f), msg)
                                })?)
                            }
                        }
                    };
                }
                match expr.eval(numbers) {
                    Ok(n) => self.number(n).map_err(|m| (RowErrorKind::InvalidValue, None, m)),
                    Err(EvalError::Missing(_)) => Ok(Value::Null),
                    Err(EvalError::NotFinite) => Err((
                        RowErrorKind::InvalidValue,
                        None,
                        format!("column {:?}: the expression divides by zero or overflows", self.name),
                    )),
                }
            }
        }
    }

    /// Whether a field's text is one of the values that mean "missing": compared
    /// exactly, as the field is read (after the dialect's `trim`), the same way
    /// for a column's own field and for the fields its expression names.
    fn is_null(&self, text: &str) -> bool {
        self.nulls.iter().any(|n| n == text)
    }

    /// The value of a missing field: the column's default, else null.
    fn missing<'t>(&self) -> Result<Value<'t>, String> {
        match &self.default {
            Some(d) => self.convert(Cow::Owned(d.clone())),
            None => Ok(Value::Null),
        }
    }

    fn clean<'t>(&self, text: &'t str) -> Cow<'t, str> {
        let mut text = Cow::Borrowed(if self.trim { text.trim() } else { text });
        for (from, to) in &self.replace {
            if text.contains(from.as_str()) {
                text = Cow::Owned(text.replace(from.as_str(), to));
            }
        }
        if self.lower && text.chars().any(char::is_uppercase) {
            text = Cow::Owned(if text.is_ascii() { text.to_ascii_lowercase() } else { text.to_lowercase() });
        }
        if self.upper && text.chars().any(char::is_lowercase) {
            text = Cow::Owned(if text.is_ascii() { text.to_ascii_uppercase() } else { text.to_uppercase() });
        }
        text
    }

    fn convert<'t>(&self, text: Cow<'t, str>) -> Result<Value<'t>, String> {
        let bad = || format!("column {:?}: {:?} is not {}", self.name, text, self.ty.describe());
        let t = text.trim();
        match self.ty {
            Type::String => Ok(Value::Str(text)),
            Type::Integer => {
                let n: i64 = t.parse().map_err(|_| bad())?;
                if self.multiply.is_some() || self.add.is_some() {
                    self.number(n as f64)
                } else {
                    Ok(Value::Int(n))
                }
            }
            Type::Float => self.number(t.parse::<f64>().ok().filter(|f| f.is_finite()).ok_or_else(bad)?),
            Type::Boolean => parse_bool(t).map(Value::Bool).ok_or_else(bad),
            Type::Date => self.formats.iter().find_map(|f| f.parse_date(t)).map(Value::Date).ok_or_else(bad),
            Type::Datetime => {
                self.formats.iter().find_map(|f| f.parse_datetime(t)).map(Value::DateTime).ok_or_else(bad)
            }
        }
    }

    /// Applies multiply, add and round, and makes the number the column's type.
    fn number<'t>(&self, n: f64) -> Result<Value<'t>, String> {
        let mut n = n * self.multiply.unwrap_or(1.0) + self.add.unwrap_or(0.0);
        if let Some(places) = self.round {
            let scale = 10f64.powi(places as i32);
            n = (n * scale).round() / scale;
        }
        if !n.is_finite() {
            return Err(format!("column {:?}: the result is too large", self.name));
        }
        match self.ty {
            Type::Integer if n.fract() == 0.0 && n.abs() < 9.2e18 => Ok(Value::Int(n as i64)),
            Type::Integer => Err(format!("column {:?}: {n} is not a whole number", self.name)),
            _ => Ok(Value::Float(n)),
        }
    }
}

/// A column's missing values: its own list, else the dialect's.
fn spec_nulls(spec: &ColumnSpec, dialect: &[String]) -> Vec<String> {
    spec.null_values.clone().unwrap_or_else(|| dialect.to_vec())
}

fn compile_column(
    spec: &ColumnSpec,
    header: &[String],
    earlier: &[Column],
    path: &str,
    nulls: Vec<String>,
) -> Result<Column, String> {
    let field_index = |name: &str, at: &str| {
        header
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| format!("{path}.{at}: no input column {name:?} (the header has: {})", header.join(", ")))
    };
    let (source, default_ty, default_name) = match (&spec.from, &spec.expr) {
        (Some(from), None) => (Source::Field(field_index(from, "from")?), Type::String, from.clone()),
        (None, Some(text)) => {
            let mut slots: Vec<Slot> = Vec::new();
            let expr = Expr::parse(text, &mut |name| {
                let slot = match earlier.iter().position(|c| c.name == name) {
                    Some(c) if matches!(earlier[c].ty, Type::Integer | Type::Float) => Slot::Column(c),
                    Some(_) => return Err(format!("column {name:?} is not a number")),
                    None => Slot::Field(field_index(name, "expr")?),
                };
                slots.push(slot);
                Ok(slots.len() - 1)
            })
            .map_err(|e| format!("{path}.expr: {e}"))?;
            let name = spec.name.clone().ok_or_else(|| format!("{path}.name: a computed column needs a name"))?;
            (Source::Expr { expr, slots }, Type::Float, name)
        }
        _ => return Err(format!("{path}: give exactly one of \"from\" and \"expr\"")),
    };
    let ty = spec.ty.unwrap_or(default_ty);
    let is_expr = matches!(source, Source::Expr { .. });
    if is_expr && !matches!(ty, Type::Float | Type::Integer) {
        return Err(format!("{path}.type: a computed column is a float or an integer"));
    }
    let numeric = matches!(ty, Type::Float | Type::Integer);
    if !numeric && (spec.multiply.is_some() || spec.add.is_some() || spec.round.is_some()) {
        return Err(format!("{path}: multiply, add and round need a float or integer column"));
    }
    if ty == Type::Integer && spec.round.is_some() {
        return Err(format!("{path}.round: integers have no decimal places to round"));
    }
    if let Some(round) = spec.round.filter(|&r| r > 15) {
        return Err(format!("{path}.round: {round} places is more than a float holds (15 at most)"));
    }
    let dated = matches!(ty, Type::Date | Type::Datetime);
    if !dated && (!spec.formats.is_empty() || spec.output_format.is_some()) {
        return Err(format!("{path}: formats and output_format need a date or datetime column"));
    }
    let formats = if dated && spec.formats.is_empty() {
        match ty {
            Type::Date => vec![Format::iso_date().clone()],
            _ => vec![Format::iso_datetime().clone(), Format::parse("%Y-%m-%d %H:%M:%S").expect("valid")],
        }
    } else {
        spec.formats
            .iter()
            .enumerate()
            .map(|(i, f)| Format::parse(f).map_err(|e| format!("{path}.formats[{i}]: {e}")))
            .collect::<Result<_, _>>()?
    };
    let output_format = spec
        .output_format
        .as_deref()
        .map(Format::parse)
        .transpose()
        .map_err(|e| format!("{path}.output_format: {e}"))?;
    if spec.replace.iter().any(|r| r.from.is_empty()) {
        return Err(format!("{path}.replace: \"from\" cannot be empty"));
    }
    if spec.lower && spec.upper {
        return Err(format!("{path}: lower and upper together make no sense"));
    }
    let name = spec.name.clone().unwrap_or(default_name);
    let mut key_json = Vec::new();
    write_str(&mut key_json, &name);
    key_json.push(b':');
    let column = Column {
        name,
        key_json,
        hidden: spec.hidden,
        source,
        ty,
        formats,
        output_format,
        trim: spec.trim,
        lower: spec.lower,
        upper: spec.upper,
        replace: spec.replace.iter().map(|r| (r.from.clone(), r.to.clone())).collect(),
        default: spec.default.clone(),
        nulls,
        multiply: spec.multiply,
        add: spec.add,
        round: spec.round,
    };
    if let Some(default) = &column.default {
        if is_expr {
            return Err(format!("{path}.default: a computed column has no input to default"));
        }
        column.convert(Cow::Borrowed(default)).map_err(|e| format!("{path}.default: {e}"))?;
    }
    if ty == Type::Integer
        && (spec.multiply.is_some_and(|m| m.fract() != 0.0) || spec.add.is_some_and(|a| a.fract() != 0.0))
    {
        return Err(format!("{path}: an integer column can only be multiplied or added by whole numbers"));
    }
    Ok(column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::value::write_float;

    /// Fixed-point text is what the shortest round-trip form would have been.
    #[test]
    fn fixed_point_matches_shortest_form() {
        let mut rng = fanout_testkit::rng::Rng::new(0x2545_f491_4f6c_dd1d);
        for places in 0..=6u32 {
            for _ in 0..20_000 {
                let raw = rng.below(2_000_000_000) as f64 / 1000.0 - 1_000_000.0;
                let scale = 10f64.powi(places as i32);
                let f = (raw * scale).round() / scale;
                let (mut fixed, mut shortest) = (Vec::new(), Vec::new());
                write_float(&mut shortest, f);
                if write_fixed(&mut fixed, f, places) {
                    assert_eq!(
                        String::from_utf8(fixed).unwrap(),
                        String::from_utf8(shortest).unwrap(),
                        "{f} to {places}"
                    );
                }
            }
        }
        let mut out = Vec::new();
        assert!(write_fixed(&mut out, -0.07, 2) && out == b"-0.07");
        assert!(!write_fixed(&mut Vec::new(), 1e20, 2));
    }
}
