//! Group-by summaries whose partial states merge exactly.
//!
//! Sums are kept as integers of nano-units (10⁻⁹), so adding partial sums is
//! exact and the same in any order, unlike adding floats. A value's nano-units
//! are its float rounded at the ninth decimal, so inputs are exact to 9
//! decimal places and up to ±10²⁰ in size. Partial states travel as JSON with
//! sums as decimal strings, so nothing is lost on the way to the coordinator.

use super::filter::{Cond, Schema};
use super::spec::{AggregateSpec, MetricOp};
use super::value::{Type, Value};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map};
use std::cmp::Ordering;
use std::collections::HashMap;

const NANOS: i128 = 1_000_000_000;
/// The largest magnitude summed exactly.
const MAX_SUMMABLE: f64 = 1e20;

/// The shape of a partial: its group columns and metrics, with their types.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// The group columns.
    pub group_by: Vec<Field>,
    /// The metrics.
    pub metrics: Vec<Metric>,
}

/// A [`Shape`] with the row positions it reads.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// The shape.
    pub shape: Shape,
    /// The row positions of the group columns.
    pub key_columns: Vec<usize>,
    /// The row position each metric reads (none for a row count).
    pub inputs: Vec<Option<usize>>,
}

/// A named, typed group column.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Its name.
    pub name: String,
    /// Its type.
    #[serde(rename = "type")]
    pub ty: Type,
}

/// A metric: its name, operation, and the type of the column it reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metric {
    /// Its output name.
    pub name: String,
    /// What it computes.
    pub op: MetricOp,
    /// The type of the column it reads (none for a row count).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub ty: Option<Type>,
}

/// Mergeable aggregate state, as a worker answers with `"partial": true`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// The shape every merged partial must share.
    #[serde(flatten)]
    pub shape: Shape,
    /// One entry per group: its key values and each metric's state.
    pub groups: Vec<PartialGroup>,
}

/// One group of a [`Partial`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartialGroup {
    /// The group column values.
    pub key: Vec<serde_json::Value>,
    /// One state per metric: `{"count": n}`, `{"sum": "decimal", "n": n}` or `{"min"|"max": value}`.
    pub state: Vec<serde_json::Value>,
}

/// A metric's running state.
#[derive(Clone, Debug, PartialEq)]
enum Acc {
    Count(u64),
    Sum { nanos: i128, n: u64 },
    Min(Option<Value<'static>>),
    Max(Option<Value<'static>>),
}

/// Groups being accumulated, by the canonical JSON of their keys.
#[derive(Debug)]
pub struct Groups {
    shape: Shape,
    index: HashMap<Vec<u8>, usize>,
    groups: Vec<(Vec<Value<'static>>, Vec<Acc>)>,
}

/// Feeds rows into groups.
#[derive(Debug)]
pub struct Aggregator {
    group_by: Vec<usize>,
    inputs: Vec<Option<usize>>,
    groups: Groups,
    key_buf: Vec<u8>,
}

impl Shape {
    /// The shape of `spec` over rows of `schema`, with its mistakes named, and
    /// where in a row its group keys and metric inputs are.
    pub fn compile(spec: &AggregateSpec, schema: &Schema) -> Result<Compiled, String> {
        let find = |name: &str, path: &str| {
            schema.iter().position(|(n, _)| n == name).ok_or_else(|| {
                let names: Vec<&str> = schema.iter().map(|(n, _)| n.as_str()).collect();
                format!("{path}: no column {name:?} (there are: {})", names.join(", "))
            })
        };
        let mut group_by = Vec::new();
        let mut key_columns = Vec::new();
        for (i, name) in spec.group_by.iter().enumerate() {
            let c = find(name, &format!("aggregate.group_by[{i}]"))?;
            key_columns.push(c);
            group_by.push(Field { name: name.clone(), ty: schema[c].1 });
        }
        if spec.metrics.is_empty() {
            return Err("aggregate.metrics: at least one metric is needed".into());
        }
        let mut metrics = Vec::new();
        let mut inputs = Vec::new();
        for (i, m) in spec.metrics.iter().enumerate() {
            let path = format!("aggregate.metrics[{i}]");
            let column = m.column.as_deref().map(|c| find(c, &format!("{path}.column"))).transpose()?;
            let ty = column.map(|c| schema[c].1);
            let ok = match (m.op, ty) {
                (MetricOp::Count, _) => true,
                (MetricOp::Rows, None) => true,
                (MetricOp::Rows, Some(_)) => {
                    return Err(format!("{path}.column: rows counts every row of a group; it takes no column"))
                }
                (_, None) => return Err(format!("{path}.column: {:?} needs a column", m.op)),
                (MetricOp::Sum | MetricOp::Mean, Some(t)) => matches!(t, Type::Integer | Type::Float),
                (MetricOp::Min | MetricOp::Max, Some(t)) => {
                    matches!(t, Type::Integer | Type::Float | Type::Date | Type::Datetime)
                }
            };
            if !ok {
                return Err(format!("{path}: {:?} cannot be computed over {}", m.op, ty.expect("checked").describe()));
            }
            let op_name = format!("{:?}", m.op).to_lowercase();
            let name = m.name.clone().unwrap_or_else(|| match &m.column {
                Some(c) => format!("{op_name}_{c}"),
                None => op_name,
            });
            if group_by.iter().any(|f| f.name == name) || metrics.iter().any(|x: &Metric| x.name == name) {
                return Err(format!("{path}.name: {name:?} is already a group column or metric"));
            }
            metrics.push(Metric { name, op: m.op, ty });
            inputs.push(column);
        }
        Ok(Compiled { shape: Shape { group_by, metrics }, key_columns, inputs })
    }

    /// The names and types of a finished group row: group columns, then metrics.
    pub fn schema(&self) -> Vec<(String, Type)> {
        let metric_type = |m: &Metric| match (m.op, m.ty) {
            (MetricOp::Count | MetricOp::Rows, _) => Type::Integer,
            (MetricOp::Mean, _) => Type::Float,
            (_, ty) => ty.expect("non-count metrics read a column"),
        };
        self.group_by
            .iter()
            .map(|f| (f.name.clone(), f.ty))
            .chain(self.metrics.iter().map(|m| (m.name.clone(), metric_type(m))))
            .collect()
    }
}

impl Aggregator {
    /// An aggregator for `spec` over rows of `schema`.
    pub fn new(spec: &AggregateSpec, schema: &Schema) -> Result<Aggregator, String> {
        let Compiled { shape, key_columns, inputs } = Shape::compile(spec, schema)?;
        Ok(Aggregator { group_by: key_columns, inputs, groups: Groups::new(shape), key_buf: Vec::new() })
    }

    /// Adds one row; fails (naming the metric) when a value cannot be summed
    /// exactly, leaving every group as it was.
    pub fn push(&mut self, row: &[Value<'_>]) -> Result<(), String> {
        self.key_buf.clear();
        canonical(self.group_by.iter().map(|&c| &row[c]), &mut self.key_buf);
        let inputs: Vec<Value<'_>> =
            self.inputs.iter().map(|input| input.map_or(Value::Bool(true), |c| row[c].clone())).collect();
        let existing = self.groups.index.get(&self.key_buf).copied();
        let fresh: Vec<Acc>;
        let accs = match existing {
            Some(g) => &self.groups.groups[g].1,
            None => {
                fresh = self.groups.shape.metrics.iter().map(|m| Acc::new(m.op)).collect();
                &fresh
            }
        };
        for ((acc, v), m) in accs.iter().zip(&inputs).zip(&self.groups.shape.metrics) {
            acc.check(v).map_err(|e| format!("{}: {e}", m.name))?;
        }
        let g = match existing {
            Some(g) => g,
            None => {
                let key = self.group_by.iter().map(|&c| row[c].clone().into_owned()).collect();
                self.groups.insert(self.key_buf.clone(), key)
            }
        };
        for (acc, v) in self.groups.groups[g].1.iter_mut().zip(&inputs) {
            acc.add(v);
        }
        Ok(())
    }

    /// The groups so far.
    pub fn into_groups(self) -> Groups {
        self.groups
    }
}

impl Groups {
    /// No groups yet, of `shape`.
    pub fn new(shape: Shape) -> Groups {
        Groups { shape, index: HashMap::new(), groups: Vec::new() }
    }

    fn insert(&mut self, canonical: Vec<u8>, key: Vec<Value<'static>>) -> usize {
        let accs = self.shape.metrics.iter().map(|m| Acc::new(m.op)).collect();
        self.groups.push((key, accs));
        self.index.insert(canonical, self.groups.len() - 1);
        self.groups.len() - 1
    }

    /// How many groups there are.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there are no groups.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The state as a partial, to be merged elsewhere.
    pub fn to_partial(&self) -> Partial {
        let groups = self
            .sorted()
            .into_iter()
            .map(|(key, accs)| PartialGroup {
                key: key.iter().map(Value::to_json).collect(),
                state: accs.iter().map(Acc::to_json).collect(),
            })
            .collect();
        Partial { shape: self.shape.clone(), groups }
    }

    /// Whether `partial` would merge into empty groups of this shape: its form
    /// checked without touching these groups.
    pub fn check(&self, partial: &Partial) -> Result<(), String> {
        Groups::new(self.shape.clone()).merge(partial)
    }

    /// Merges `partial` in; its shape must be this one's. A partial that does
    /// not parse, or whose sums would overflow, changes nothing.
    pub fn merge(&mut self, partial: &Partial) -> Result<(), String> {
        if partial.shape != self.shape {
            return Err("partial aggregates of different shapes cannot be merged".into());
        }
        let mut merged = Vec::with_capacity(partial.groups.len());
        let mut seen = std::collections::HashSet::new();
        for (i, g) in partial.groups.iter().enumerate() {
            let bad = |what: &str| format!("partial group {i}: {what}");
            if g.key.len() != self.shape.group_by.len() || g.state.len() != self.shape.metrics.len() {
                return Err(bad("wrong number of key values or states"));
            }
            let key: Vec<Value<'static>> = g
                .key
                .iter()
                .zip(&self.shape.group_by)
                .map(|(v, f)| {
                    Value::from_json(v, f.ty).ok_or_else(|| bad(&format!("key {v} is not {}", f.ty.describe())))
                })
                .collect::<Result<_, _>>()?;
            let mut key_text = Vec::new();
            canonical(key.iter(), &mut key_text);
            if !seen.insert(key_text.clone()) {
                return Err(bad("its key appears twice"));
            }
            let existing = self.index.get(&key_text).copied();
            let mut accs = match existing {
                Some(at) => self.groups[at].1.clone(),
                None => self.shape.metrics.iter().map(|m| Acc::new(m.op)).collect(),
            };
            for ((acc, state), m) in accs.iter_mut().zip(&g.state).zip(&self.shape.metrics) {
                let other =
                    Acc::from_json(state, m).ok_or_else(|| bad(&format!("state {state} is not a {:?} state", m.op)))?;
                acc.merge(&other).map_err(|e| bad(&format!("{}: {e}", m.name)))?;
            }
            merged.push((existing, key_text, key, accs));
        }
        for (existing, key_text, key, accs) in merged {
            let at = existing.unwrap_or_else(|| self.insert(key_text, key));
            self.groups[at].1 = accs;
        }
        Ok(())
    }

    /// Final rows: `having` applied, then sorted (by the group columns, then
    /// by `sort`), then cut to `limit`.
    pub fn finish(&self, spec: &AggregateSpec) -> Result<Vec<Map<String, serde_json::Value>>, String> {
        let schema = self.shape.schema();
        let having = spec.having.as_ref().map(|h| Cond::compile(h, &schema, "aggregate.having")).transpose()?;
        let mut sort = Vec::new();
        for (i, s) in spec.sort.iter().enumerate() {
            let c = schema
                .iter()
                .position(|(n, _)| *n == s.by)
                .ok_or_else(|| format!("aggregate.sort[{i}].by: no group column or metric {:?}", s.by))?;
            sort.push((c, s.desc));
        }
        let mut rows: Vec<Vec<Value<'static>>> = self
            .sorted()
            .into_iter()
            .map(|(key, accs)| {
                key.iter().cloned().chain(accs.iter().zip(&self.shape.metrics).map(|(a, m)| a.finish(m))).collect()
            })
            .filter(|row: &Vec<Value<'static>>| having.as_ref().is_none_or(|h| h.holds(row)))
            .collect();
        rows.sort_by(|a, b| {
            sort.iter()
                .map(|&(c, desc)| {
                    let o = order(&a[c], &b[c]);
                    if desc {
                        o.reverse()
                    } else {
                        o
                    }
                })
                .find(|o| *o != Ordering::Equal)
                .unwrap_or(Ordering::Equal)
        });
        rows.truncate(spec.limit.unwrap_or(usize::MAX));
        Ok(rows
            .into_iter()
            .map(|row| schema.iter().map(|(n, _)| n.clone()).zip(row.iter().map(Value::to_json)).collect())
            .collect())
    }

    /// Groups in key order, so output never depends on hashing.
    fn sorted(&self) -> Vec<&(Vec<Value<'static>>, Vec<Acc>)> {
        let mut all: Vec<_> = self.groups.iter().collect();
        all.sort_by(|a, b| {
            a.0.iter().zip(&b.0).map(|(x, y)| order(x, y)).find(|o| *o != Ordering::Equal).unwrap_or(Ordering::Equal)
        });
        all
    }
}

/// The canonical text of a group key, for finding its group.
fn canonical<'v>(key: impl Iterator<Item = &'v Value<'v>>, out: &mut Vec<u8>) {
    for v in key {
        v.write_json(out, None);
        out.push(b',');
    }
}

/// A total order for sorting: empty values first, then by value.
fn order(a: &Value<'_>, b: &Value<'_>) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        _ => a.compare(b).unwrap_or(Ordering::Equal),
    }
}

/// A number in nano-units, exactly (integers) or rounded at the ninth decimal (floats).
fn nanos(v: &Value<'_>) -> Result<Option<i128>, String> {
    match v {
        Value::Int(i) => Ok(Some(i128::from(*i) * NANOS)),
        Value::Float(f) if f.abs() <= MAX_SUMMABLE => Ok(Some((f * NANOS as f64).round() as i128)),
        Value::Float(f) => Err(format!("{f} is too large to sum exactly (at most 1e20)")),
        _ => Ok(None),
    }
}

/// Nano-units as an exact decimal string: `-12.5`, `3`.
fn decimal(n: i128) -> String {
    let sign = if n < 0 { "-" } else { "" };
    let (int, frac) = (n.unsigned_abs() / NANOS as u128, n.unsigned_abs() % NANOS as u128);
    if frac == 0 {
        format!("{sign}{int}")
    } else {
        format!("{sign}{int}.{}", format!("{frac:09}").trim_end_matches('0'))
    }
}

/// Parses [`decimal`]'s output.
fn parse_decimal(s: &str) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() || frac.len() > 9 || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = int.parse::<i128>().ok()?.checked_mul(NANOS)?.checked_add(format!("{frac:0<9}").parse::<i128>().ok()?)?;
    Some(if neg { -n } else { n })
}

impl Acc {
    fn new(op: MetricOp) -> Acc {
        match op {
            MetricOp::Count | MetricOp::Rows => Acc::Count(0),
            MetricOp::Sum | MetricOp::Mean => Acc::Sum { nanos: 0, n: 0 },
            MetricOp::Min => Acc::Min(None),
            MetricOp::Max => Acc::Max(None),
        }
    }

    /// Whether `v` can be added exactly.
    fn check(&self, v: &Value<'_>) -> Result<(), String> {
        match (self, nanos(v)?) {
            (Acc::Sum { nanos: s, .. }, Some(x)) if s.checked_add(x).is_none() => Err("the sum overflows".into()),
            _ => Ok(()),
        }
    }

    /// Adds `v`, which [`Acc::check`] accepted.
    fn add(&mut self, v: &Value<'_>) {
        if v.is_empty() {
            return;
        }
        match self {
            Acc::Count(n) => *n += 1,
            Acc::Sum { nanos: s, n } => {
                if let Ok(Some(x)) = nanos(v) {
                    *s += x;
                    *n += 1;
                }
            }
            Acc::Min(m) => {
                if m.as_ref().is_none_or(|m| v.compare(m) == Some(Ordering::Less)) {
                    *m = Some(v.clone().into_owned());
                }
            }
            Acc::Max(m) => {
                if m.as_ref().is_none_or(|m| v.compare(m) == Some(Ordering::Greater)) {
                    *m = Some(v.clone().into_owned());
                }
            }
        }
    }

    fn merge(&mut self, other: &Acc) -> Result<(), String> {
        let overflow = || "the merged sum overflows".to_owned();
        match (self, other) {
            (Acc::Count(a), Acc::Count(b)) => *a = a.checked_add(*b).ok_or_else(overflow)?,
            (Acc::Sum { nanos: a, n }, Acc::Sum { nanos: b, n: m }) => {
                *a = a.checked_add(*b).ok_or_else(overflow)?;
                *n = n.checked_add(*m).ok_or_else(overflow)?;
            }
            (acc @ (Acc::Min(_) | Acc::Max(_)), Acc::Min(Some(v)) | Acc::Max(Some(v))) => acc.add(v),
            _ => {}
        }
        Ok(())
    }

    fn to_json(&self) -> serde_json::Value {
        match self {
            Acc::Count(n) => json!({ "count": n }),
            Acc::Sum { nanos, n } => json!({ "sum": decimal(*nanos), "n": n }),
            Acc::Min(v) => json!({ "min": v.as_ref().map_or(serde_json::Value::Null, Value::to_json) }),
            Acc::Max(v) => json!({ "max": v.as_ref().map_or(serde_json::Value::Null, Value::to_json) }),
        }
    }

    fn from_json(state: &serde_json::Value, m: &Metric) -> Option<Acc> {
        let get = |k: &str| state.get(k);
        Some(match m.op {
            MetricOp::Count | MetricOp::Rows => Acc::Count(get("count")?.as_u64()?),
            MetricOp::Sum | MetricOp::Mean => {
                Acc::Sum { nanos: parse_decimal(get("sum")?.as_str()?)?, n: get("n")?.as_u64()? }
            }
            MetricOp::Min => Acc::Min(Some(Value::from_json(get("min")?, m.ty?)?).filter(|v| !v.is_empty())),
            MetricOp::Max => Acc::Max(Some(Value::from_json(get("max")?, m.ty?)?).filter(|v| !v.is_empty())),
        })
    }

    fn finish(&self, m: &Metric) -> Value<'static> {
        match self {
            Acc::Count(n) => Value::Int(*n as i64),
            Acc::Sum { n: 0, .. } => Value::Null,
            Acc::Sum { nanos, n } => match (m.op, m.ty) {
                (MetricOp::Mean, _) => Value::Float(quotient(*nanos, *n)),
                // An integer sum too large for an i64 is given as a float.
                (_, Some(Type::Integer)) => {
                    i64::try_from(*nanos / NANOS).map_or_else(|_| Value::Float(float_of(*nanos)), Value::Int)
                }
                _ => Value::Float(float_of(*nanos)),
            },
            Acc::Min(v) | Acc::Max(v) => v.clone().unwrap_or(Value::Null),
        }
    }
}

/// The float nearest to nano-units, read from the exact decimal, so `0.1 + 0.2` sums to `0.3`.
fn float_of(n: i128) -> f64 {
    decimal(n).parse().expect("decimal strings parse as floats")
}

/// The float nearest to `nanos` nano-units divided by `count`: a mean, rounded
/// once. Dividing the float sum by the count rounds twice and is often one ulp off.
///
/// The quotient is written out in decimal, exactly when it ends within 800
/// digits (every tie between two floats does: a tie is a dyadic fraction), else
/// to 800 digits and a final `1` that stands for the rest; Rust's float parser
/// then rounds that correctly.
fn quotient(nanos: i128, count: u64) -> f64 {
    let divisor = NANOS as u128 * count as u128;
    let magnitude = nanos.unsigned_abs();
    let mut text = String::with_capacity(64);
    if nanos < 0 {
        text.push('-');
    }
    text.push_str(&(magnitude / divisor).to_string());
    text.push('.');
    let mut rest = magnitude % divisor;
    for _ in 0..800 {
        if rest == 0 {
            break;
        }
        rest *= 10;
        text.push(char::from(b'0' + (rest / divisor) as u8));
        rest %= divisor;
    }
    if rest != 0 {
        text.push('1');
    }
    text.parse().expect("decimal strings parse as floats")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::spec::AggregateSpec;

    #[test]
    fn partial_states_carry_floats_bit_for_bit() {
        // serde_json's float_roundtrip: what is written is read back as the same f64.
        let mut rng = fanout_testkit::rng::Rng::new(5);
        for _ in 0..20_000 {
            let f = f64::from_bits(rng.next_u64());
            if !f.is_finite() {
                continue;
            }
            let text = serde_json::to_string(&Value::Float(f).to_json()).unwrap();
            let back: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), f.to_bits(), "{f:e} written as {text}");
        }
    }

    #[test]
    fn means_are_rounded_once() {
        // 0.3 / 3 in floats is 0.09999999999999999; the mean of 0.1, 0.1, 0.1 is 0.1.
        assert_eq!(quotient(300_000_000, 3), 0.1);
        assert_eq!(quotient(-300_000_000, 3), -0.1);
        assert_eq!(quotient(2 * NANOS, 3), 2.0 / 3.0);
        assert_eq!(quotient(0, 7), 0.0);
        // Where the sum is a float exactly, one IEEE division is the correctly rounded quotient.
        let mut rng = fanout_testkit::rng::Rng::new(99);
        for _ in 0..20_000 {
            let sum = (rng.next_u64() >> 12) as i64 - (1 << 51);
            let count = 1 + rng.below(1 << 40);
            let exact = sum as f64 / count as f64;
            assert_eq!(quotient(sum as i128 * NANOS, count), exact, "{sum} / {count}");
        }
    }

    fn schema() -> Vec<(String, Type)> {
        [("region", Type::String), ("amount", Type::Float), ("qty", Type::Integer), ("id", Type::String)]
            .map(|(n, t)| (n.to_owned(), t))
            .to_vec()
    }

    fn spec(json: &str) -> AggregateSpec {
        serde_json::from_str(json).unwrap()
    }

    fn rows() -> Vec<Vec<Value<'static>>> {
        let data = [
            ("north", 0.1, 1, "a"),
            ("south", 10.25, 2, "b"),
            ("north", 0.2, 3, "c"),
            ("north", 1e-9, 4, ""),
            ("south", -3.5, 5, "e"),
            ("east", 7.0, 6, "f"),
        ];
        data.iter()
            .map(|(r, a, q, id)| {
                vec![Value::Str((*r).into()), Value::Float(*a), Value::Int(*q), Value::Str((*id).into())]
            })
            .collect()
    }

    const SPEC: &str = r#"{"group_by": ["region"], "metrics": [
        {"name": "total", "op": "sum", "column": "amount"}, {"op": "count", "column": "id"}, {"op": "count"},
        {"op": "mean", "column": "qty"}, {"op": "min", "column": "amount"}, {"op": "max", "column": "qty"},
        {"name": "units", "op": "sum", "column": "qty"}]}"#;

    fn groups_of(rows: &[Vec<Value<'static>>]) -> Groups {
        let mut agg = Aggregator::new(&spec(SPEC), &schema()).unwrap();
        for r in rows {
            agg.push(r).unwrap();
        }
        agg.into_groups()
    }

    #[test]
    fn final_values() {
        let out = groups_of(&rows()).finish(&spec(SPEC)).unwrap();
        let north = serde_json::Value::Object(out.iter().find(|g| g["region"] == "north").unwrap().clone());
        assert_eq!(
            north,
            json!({"region": "north", "total": 0.300000001, "count_id": 2, "count": 3, "mean_qty": 2.6666666666666665,
                   "min_amount": 1e-9, "max_qty": 4, "units": 8})
        );
        let regions: Vec<_> = out.iter().map(|g| g["region"].clone()).collect();
        assert_eq!(regions, vec![json!("east"), json!("north"), json!("south")], "groups sorted by key by default");
    }

    #[test]
    fn partials_merge_exactly_in_any_order() {
        let all = rows();
        let whole = groups_of(&all).to_partial();
        for split in 0..=all.len() {
            for order in [false, true] {
                let (a, b) = all.split_at(split);
                let parts = [groups_of(a).to_partial(), groups_of(b).to_partial()];
                let parts: Vec<&Partial> = if order { parts.iter().rev().collect() } else { parts.iter().collect() };
                let mut merged = Groups::new(whole.shape.clone());
                for p in parts {
                    // Through JSON, as partials travel.
                    let p: Partial = serde_json::from_str(&serde_json::to_string(p).unwrap()).unwrap();
                    merged.merge(&p).unwrap();
                }
                assert_eq!(merged.to_partial(), whole, "split at {split}, reversed {order}");
            }
        }
    }

    #[test]
    fn having_sort_and_limit_come_after_the_merge() {
        let s = spec(
            r#"{"group_by": ["region"], "metrics": [{"name": "total", "op": "sum", "column": "amount"}],
                "having": {"column": "total", "op": ">", "value": 0.31}, "sort": [{"by": "total", "desc": true}], "limit": 1}"#,
        );
        let mut agg = Aggregator::new(&s, &schema()).unwrap();
        for r in rows() {
            agg.push(&r).unwrap();
        }
        let out = agg.into_groups().finish(&s).unwrap();
        assert_eq!(
            serde_json::Value::Array(out.into_iter().map(serde_json::Value::Object).collect()),
            json!([{"region": "east", "total": 7.0}])
        );
    }

    #[test]
    fn a_tie_on_the_first_sort_key_is_broken_by_the_next() {
        let s = spec(
            r#"{"group_by": ["region"], "metrics": [{"name": "n", "op": "count"}],
                "sort": [{"by": "n", "desc": true}, {"by": "region", "desc": true}]}"#,
        );
        let mut agg = Aggregator::new(&s, &schema()).unwrap();
        let east = vec![Value::Str("east".into()), Value::Float(1.0), Value::Int(7), Value::Str("g".into())];
        for r in rows().into_iter().chain([east]) {
            agg.push(&r).unwrap();
        }
        let out = agg.into_groups().finish(&s).unwrap();
        let order: Vec<_> = out.iter().map(|g| (g["region"].clone(), g["n"].clone())).collect();
        assert_eq!(order, [(json!("north"), json!(3)), (json!("south"), json!(2)), (json!("east"), json!(2))]);
    }

    #[test]
    fn empty_keys_sort_first_and_last_when_descending() {
        let row = |q: Value<'static>| vec![Value::Str("north".into()), Value::Float(1.0), q, Value::Str("a".into())];
        for (sort, want) in [
            ("", [json!(null), json!(1), json!(3)]),
            (r#", "sort": [{"by": "qty", "desc": true}]"#, [json!(3), json!(1), json!(null)]),
        ] {
            let s = spec(&format!(r#"{{"group_by": ["qty"], "metrics": [{{"op": "count"}}]{sort}}}"#));
            let mut agg = Aggregator::new(&s, &schema()).unwrap();
            // The empty key between two numbers: it is compared with each, not only with its neighbour.
            for q in [Value::Int(3), Value::Null, Value::Int(1)] {
                agg.push(&row(q)).unwrap();
            }
            let keys: Vec<_> = agg.into_groups().finish(&s).unwrap().iter().map(|g| g["qty"].clone()).collect();
            assert_eq!(keys, want, "sort {sort:?}");
        }
    }

    #[test]
    fn huge_integer_sums_and_failed_merges() {
        let s = spec(r#"{"metrics": [{"name": "t", "op": "sum", "column": "qty"}]}"#);
        let mut agg = Aggregator::new(&s, &schema()).unwrap();
        for _ in 0..2 {
            agg.push(&[Value::Null, Value::Null, Value::Int(i64::MAX), Value::Null]).unwrap();
        }
        let mut groups = agg.into_groups();
        let out = groups.finish(&s).unwrap();
        assert_eq!(out[0]["t"], json!(1.8446744073709552e19), "too big for an i64: a float");
        let before = groups.to_partial();
        let mut broken = before.clone();
        broken.groups[0].state[0] = json!({"sum": "1", "n": "not a number"});
        assert!(groups.merge(&broken).is_err());
        assert_eq!(groups.to_partial(), before, "a failed merge changes nothing");
    }

    /// A partial that lists one group twice is refused: merged, it would count the group's rows
    /// twice or leave two groups with one key.
    #[test]
    fn a_partial_listing_a_group_twice_is_refused() {
        let s = spec(r#"{"group_by": ["region"], "metrics": [{"op": "count"}]}"#);
        let mut agg = Aggregator::new(&s, &schema()).unwrap();
        agg.push(&rows()[0]).unwrap();
        let mut twice = agg.into_groups().to_partial();
        assert_eq!(twice.groups[0].key, vec![json!("north")]);
        twice.groups.push(twice.groups[0].clone());
        let mut groups = Groups::new(twice.shape.clone());
        for err in [groups.check(&twice).unwrap_err(), groups.merge(&twice).unwrap_err()] {
            assert!(err.contains("partial group 1: its key appears twice"), "{err}");
        }
        assert!(groups.is_empty(), "a refused partial changes nothing");
    }

    /// A partial group must have a value for each key column and a state for each metric: one count off
    /// either way is refused.
    #[test]
    fn a_partial_group_of_the_wrong_shape_is_refused() {
        let s = spec(r#"{"group_by": ["region"], "metrics": [{"op": "count"}]}"#);
        let mut agg = Aggregator::new(&s, &schema()).unwrap();
        agg.push(&rows()[0]).unwrap();
        let good = agg.into_groups().to_partial();
        let mut more_keys = good.clone();
        more_keys.groups[0].key.push(json!("east"));
        let mut more_states = good.clone();
        let state = more_states.groups[0].state[0].clone();
        more_states.groups[0].state.push(state);
        for bad in [more_keys, more_states] {
            let err = Groups::new(bad.shape.clone()).merge(&bad).unwrap_err();
            assert!(err.contains("partial group 0: wrong number of key values or states"), "{err}");
        }
        let mut groups = Groups::new(good.shape.clone());
        groups.merge(&good).unwrap();
        let mut other = good.clone();
        other.groups[0].key = vec![json!("south")];
        groups.merge(&other).unwrap();
        assert_eq!(groups.len(), 2);
    }

    #[test]
    fn decimals_round_trip() {
        for n in [0i128, 1, -1, 123_456_789_000_000_001, -5_000_000_000, i128::from(i64::MAX) * NANOS] {
            assert_eq!(parse_decimal(&decimal(n)), Some(n), "{n}");
        }
        assert_eq!(decimal(12_500_000_000), "12.5");
        // A sum of nothing is "0", not "-0"; nor is its average -0.0.
        assert_eq!((decimal(0), decimal(-12_500_000_000)), ("0".to_owned(), "-12.5".to_owned()));
        assert!(quotient(0, 3).is_sign_positive() && quotient(-3 * NANOS, 2) == -1.5);
        for bad in ["", "-", "1.0000000001", "1e5", "x", "1..2"] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
        assert_eq!(float_of(300_000_000), 0.3);
    }

    #[test]
    fn mistakes_are_named() {
        for (json, needle) in [
            (r#"{"group_by": ["nope"], "metrics": [{"op": "count"}]}"#, "aggregate.group_by[0]: no column \"nope\""),
            (r#"{"metrics": []}"#, "at least one metric"),
            (
                r#"{"metrics": [{"op": "sum", "column": "region"}]}"#,
                "aggregate.metrics[0]: Sum cannot be computed over a string",
            ),
            (r#"{"metrics": [{"op": "sum"}]}"#, "needs a column"),
            (r#"{"group_by": ["region"], "metrics": [{"name": "region", "op": "count"}]}"#, "already a group column"),
        ] {
            let err = Aggregator::new(&spec(json), &schema()).unwrap_err();
            assert!(err.contains(needle), "{json}: {err}");
        }
        let too_big = vec![Value::Str("x".into()), Value::Float(1e21), Value::Int(1), Value::Str("".into())];
        let mut agg = Aggregator::new(&spec(SPEC), &schema()).unwrap();
        assert!(agg.push(&too_big).unwrap_err().contains("too large to sum exactly"));
        let mut again = Aggregator::new(&spec(SPEC), &schema()).unwrap();
        again.push(&too_big).unwrap_err();
        assert!(again.into_groups().is_empty(), "a failed row makes no group");
        agg.push(&rows()[0]).unwrap();
        let groups = agg.into_groups();
        assert!(!groups.is_empty() && groups.len() == 1, "a good row after it makes one");
    }
}
