//! Conditions over typed values: row filters and aggregate `having`.

use super::spec::{CondOp, FilterSpec};
use super::value::{Type, Value};
use std::cmp::Ordering;

/// A compiled condition over a row of values.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// Every one holds.
    All(Vec<Cond>),
    /// At least one holds.
    Any(Vec<Cond>),
    /// It does not hold.
    Not(Box<Cond>),
    /// A comparison with a typed literal; never true for an empty value.
    Cmp { column: usize, op: CondOp, value: Value<'static> },
    /// Membership in a list of typed literals.
    In { column: usize, values: Vec<Value<'static>>, negate: bool },
    /// A substring of a text value.
    Contains { column: usize, needle: String },
    /// Null or the empty string.
    Empty { column: usize, negate: bool },
}

/// The columns a condition can name: names and types, in value order.
pub type Schema = [(String, Type)];

impl Cond {
    /// Compiles `spec` against `schema`; `path` names the spec's place in error messages.
    pub fn compile(spec: &FilterSpec, schema: &Schema, path: &str) -> Result<Cond, String> {
        let forms = [spec.all.is_some(), spec.any.is_some(), spec.not.is_some(), spec.column.is_some()];
        if forms.iter().filter(|&&f| f).count() != 1 {
            return Err(format!("{path}: give exactly one of all, any, not, or a condition (column, op, value)"));
        }
        let list = |items: &[FilterSpec], key: &str| -> Result<Vec<Cond>, String> {
            items.iter().enumerate().map(|(i, f)| Cond::compile(f, schema, &format!("{path}.{key}[{i}]"))).collect()
        };
        if let Some(all) = &spec.all {
            return Ok(Cond::All(list(all, "all")?));
        }
        if let Some(any) = &spec.any {
            return Ok(Cond::Any(list(any, "any")?));
        }
        if let Some(not) = &spec.not {
            return Ok(Cond::Not(Box::new(Cond::compile(not, schema, &format!("{path}.not"))?)));
        }
        let name = spec.column.as_deref().expect("checked above");
        let column = schema.iter().position(|(n, _)| n == name).ok_or_else(|| {
            let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
            format!("{path}.column: no column {name:?} (there are: {})", names.join(", "))
        })?;
        let ty = schema[column].1;
        let op = spec.op.ok_or_else(|| format!("{path}.op: missing"))?;
        let value = spec.value.as_ref();
        let literal = |v: &serde_json::Value, at: &str| literal(v, ty).map_err(|e| format!("{path}.{at}: {e}"));
        Ok(match op {
            CondOp::Empty | CondOp::NotEmpty => {
                if value.is_some() {
                    return Err(format!("{path}.value: {op:?} takes no value"));
                }
                Cond::Empty { column, negate: op == CondOp::NotEmpty }
            }
            CondOp::In | CondOp::NotIn => {
                let items =
                    value.and_then(|v| v.as_array()).ok_or_else(|| format!("{path}.value: a list is needed"))?;
                let values = items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| literal(v, &format!("value[{i}]")))
                    .collect::<Result<_, _>>()?;
                Cond::In { column, values, negate: op == CondOp::NotIn }
            }
            CondOp::Contains => {
                if ty != Type::String {
                    return Err(format!("{path}.op: contains needs a string column; {name:?} is {ty:?}"));
                }
                let needle =
                    value.and_then(|v| v.as_str()).ok_or_else(|| format!("{path}.value: a string is needed"))?;
                Cond::Contains { column, needle: needle.to_owned() }
            }
            _ => {
                let value = value.ok_or_else(|| format!("{path}.value: missing"))?;
                Cond::Cmp { column, op, value: literal(value, "value")? }
            }
        })
    }

    /// Whether the condition holds for `row`.
    pub fn holds(&self, row: &[Value<'_>]) -> bool {
        match self {
            Cond::All(cs) => cs.iter().all(|c| c.holds(row)),
            Cond::Any(cs) => cs.iter().any(|c| c.holds(row)),
            Cond::Not(c) => !c.holds(row),
            Cond::Cmp { column, op, value } => {
                // An empty value (null, or "" in a string column) satisfies no comparison.
                if row[*column].is_empty() {
                    return false;
                }
                let Some(ord) = row[*column].compare(value) else { return false };
                match op {
                    CondOp::Eq => ord == Ordering::Equal,
                    CondOp::Ne => ord != Ordering::Equal,
                    CondOp::Lt => ord == Ordering::Less,
                    CondOp::Le => ord != Ordering::Greater,
                    CondOp::Gt => ord == Ordering::Greater,
                    CondOp::Ge => ord != Ordering::Less,
                    _ => unreachable!("compiled as other conditions"),
                }
            }
            Cond::In { column, values, negate } => {
                let v = &row[*column];
                !v.is_empty() && values.iter().any(|x| v.compare(x) == Some(Ordering::Equal)) != *negate
            }
            Cond::Contains { column, needle } => matches!(&row[*column], Value::Str(s) if s.contains(needle.as_str())),
            Cond::Empty { column, negate } => row[*column].is_empty() != *negate,
        }
    }
}

/// A JSON literal as a value of type `ty`.
fn literal(v: &serde_json::Value, ty: Type) -> Result<Value<'static>, String> {
    match (ty, v) {
        // A literal is never empty: an empty value satisfies no comparison anyway.
        (_, serde_json::Value::Null) => Err(format!("null is not {}; use the empty operator", ty.describe())),
        // An integer column compares with a fractional number as a number.
        (Type::Integer, serde_json::Value::Number(n)) if n.as_i64().is_none() => {
            n.as_f64().map(Value::Float).ok_or_else(|| format!("{v} is not a number"))
        }
        (Type::Date, _) => Value::from_json(v, ty).ok_or_else(|| format!("{v} is not a date (YYYY-MM-DD)")),
        (Type::Datetime, _) => {
            Value::from_json(v, ty).ok_or_else(|| format!("{v} is not a date-time (YYYY-MM-DDTHH:MM:SS)"))
        }
        _ => Value::from_json(v, ty).ok_or_else(|| format!("{v} is not {}", ty.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::dates::Date;

    fn schema() -> Vec<(String, Type)> {
        [("name", Type::String), ("n", Type::Integer), ("x", Type::Float), ("d", Type::Date)]
            .map(|(n, t)| (n.to_owned(), t))
            .to_vec()
    }

    fn cond(json: &str) -> Result<Cond, String> {
        Cond::compile(&serde_json::from_str(json).unwrap(), &schema(), "filter")
    }

    fn row(name: &str, n: i64, x: Option<f64>) -> Vec<Value<'static>> {
        vec![
            Value::Str(name.to_owned().into()),
            Value::Int(n),
            x.map_or(Value::Null, Value::Float),
            Value::Date(Date::from_ymd(2026, 5, 1).unwrap()),
        ]
    }

    #[test]
    fn comparisons_and_combinations() {
        let c = cond(r#"{"all": [{"column": "n", "op": ">", "value": 2}, {"any": [{"column": "name", "op": "contains", "value": "ab"}, {"column": "x", "op": "<=", "value": 1.5}]}]}"#).unwrap();
        assert!(c.holds(&row("xaby", 3, None)));
        assert!(c.holds(&row("zz", 3, Some(1.5))));
        assert!(!c.holds(&row("zz", 3, Some(1.6))));
        assert!(!c.holds(&row("ab", 2, None)));
        let d = cond(r#"{"column": "d", "op": ">=", "value": "2026-05-01"}"#).unwrap();
        assert!(d.holds(&row("a", 1, None)));
        let not = cond(r#"{"not": {"column": "name", "op": "in", "value": ["a", "b"]}}"#).unwrap();
        assert!(!not.holds(&row("a", 1, None)) && not.holds(&row("c", 1, None)));
    }

    #[test]
    fn each_comparison_below_at_and_above_its_value() {
        for (op, below, at, above) in [
            ("==", false, true, false),
            ("!=", true, false, true),
            ("<", true, false, false),
            ("<=", true, true, false),
            (">", false, false, true),
            (">=", false, true, true),
        ] {
            let c = cond(&format!(r#"{{"column": "n", "op": "{op}", "value": 5}}"#)).unwrap();
            let got = [4, 5, 6].map(|n| c.holds(&row("a", n, None)));
            assert_eq!(got, [below, at, above], "n {op} 5");
        }
    }

    #[test]
    fn integer_columns_compare_exactly_and_with_fractions() {
        let half = cond(r#"{"column": "n", "op": ">", "value": 2.5}"#).unwrap();
        assert!(half.holds(&row("a", 3, None)) && !half.holds(&row("a", 2, None)));
        // 2^53 + 1 has no f64: compared as a float it would equal 2^53.
        let big = cond(r#"{"column": "n", "op": "==", "value": 9007199254740993}"#).unwrap();
        assert!(!big.holds(&row("a", 9_007_199_254_740_992, None)));
        assert!(big.holds(&row("a", 9_007_199_254_740_993, None)));
    }

    #[test]
    fn empty_values_never_compare() {
        let lt = cond(r#"{"column": "x", "op": "<", "value": 10}"#).unwrap();
        let ne = cond(r#"{"column": "x", "op": "!=", "value": 10}"#).unwrap();
        assert!(!lt.holds(&row("a", 1, None)) && !ne.holds(&row("a", 1, None)));
        let name_ne = cond(r#"{"column": "name", "op": "!=", "value": "x"}"#).unwrap();
        assert!(!name_ne.holds(&row("", 1, None)), "an empty string compares like null");
        assert!(cond(r#"{"column": "x", "op": "empty"}"#).unwrap().holds(&row("a", 1, None)));
        assert!(cond(r#"{"column": "name", "op": "empty"}"#).unwrap().holds(&row("", 1, None)));
        assert!(cond(r#"{"column": "name", "op": "not_empty"}"#).unwrap().holds(&row("z", 1, None)));
        assert!(!cond(r#"{"column": "x", "op": "not_in", "value": [1]}"#).unwrap().holds(&row("a", 1, None)));
    }

    #[test]
    fn mistakes_name_their_place() {
        for (json, needle) in [
            (r#"{"column": "nope", "op": ">", "value": 1}"#, "filter.column: no column \"nope\""),
            (r#"{"column": "n", "op": ">", "value": "1"}"#, "filter.value: \"1\" is not an integer"),
            (r#"{"column": "d", "op": ">", "value": "01/05/2026"}"#, "\"01/05/2026\" is not a date (YYYY-MM-DD)"),
            (
                r#"{"column": "n", "op": "in", "value": [1, null]}"#,
                "filter.value[1]: null is not an integer; use the empty operator",
            ),
            (r#"{"column": "n", "op": "contains", "value": "1"}"#, "contains needs a string column"),
            (r#"{"column": "n", "op": "in", "value": 1}"#, "a list is needed"),
            (r#"{"all": [{"column": "n"}]}"#, "filter.all[0].op: missing"),
            (r#"{"column": "n", "op": ">", "value": 1, "all": []}"#, "exactly one"),
            (r#"{"column": "n", "op": "empty", "value": 1}"#, "takes no value"),
        ] {
            let err = cond(json).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let at = [("t".to_owned(), Type::Datetime)];
        let spec = serde_json::from_str(r#"{"column": "t", "op": ">", "value": "2026-05-01"}"#).unwrap();
        let err = Cond::compile(&spec, &at, "filter").unwrap_err();
        assert!(err.ends_with("\"2026-05-01\" is not a date-time (YYYY-MM-DDTHH:MM:SS)"), "{err}");
    }
}
