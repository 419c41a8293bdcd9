//! End-to-end tests of the transform core: spec in, CSV in, JSON out.

use super::engine::{run_to_end, RunError};
use super::output::Stats;
use super::spec;
use crate::framing::Format;
use serde::de::IgnoredAny;
use serde_json::{json, Value};

fn run(spec_json: &str, csv: &str) -> Result<Value, RunError> {
    let spec = spec::parse(spec_json.as_bytes()).map_err(RunError::Spec)?;
    let out = run_to_end(&spec, csv.as_bytes(), Format::Json)?;
    Ok(serde_json::from_slice(&out).unwrap_or_else(|e| panic!("invalid JSON ({e}): {}", String::from_utf8_lossy(&out))))
}

fn ok(spec_json: &str, csv: &str) -> Value {
    let v = run(spec_json, csv).unwrap();
    let s = &v["stats"];
    assert_eq!(
        s["rows_in"].as_u64().unwrap(),
        s["rows_out"].as_u64().unwrap() + s["rows_filtered"].as_u64().unwrap() + s["rows_errored"].as_u64().unwrap(),
        "rows_in = out + filtered + errored: {s}"
    );
    v
}

fn spec_error(spec_json: &str, csv: &str) -> String {
    match run(spec_json, csv) {
        Err(RunError::Spec(m)) => m,
        other => panic!("expected a spec error, got {other:?}"),
    }
}

const SALES: &str = "\
id,amount,date,category,region,product
1,100.00,2026-01-05, Tools ,north,widget
2,-5.00,2026-01-06,HOME,south,gadget
3,0,2026-01-07,garden,north,widget
4,abc,2026-01-08,garden,east,gizmo
5,12000.50,2026-13-01,Tools,north,widget
6,9000,2026-02-01,home,north,widget
7,20000,2026-02-02,Home,south,gadget
";

#[test]
fn vat_preset() {
    let v = ok(r#"{"preset": "vat"}"#, SALES);
    assert_eq!(
        v["records"],
        json!([
            {"id": 1, "amount": 121.0, "date": "2026-01-05", "category": "tools"},
            {"id": 6, "amount": 10890.0, "date": "2026-02-01", "category": "home"},
            {"id": 7, "amount": 24200.0, "date": "2026-02-02", "category": "home"}
        ])
    );
    assert_eq!(v["stats"], json!({"rows_in": 7, "rows_out": 3, "rows_filtered": 2, "rows_errored": 2}));
    let errors = v["errors"].as_array().unwrap();
    assert_eq!(errors[0]["line"], 5);
    assert_eq!(errors[0]["column"], 2);
    assert_eq!(errors[0]["kind"], "invalid_value");
    assert_eq!(errors[0]["message"], "column \"net\": \"abc\" is not a float");
    assert_eq!(errors[1]["line"], 6);
    assert_eq!(errors[1]["column"], 3);
    assert!(errors[1]["message"].as_str().unwrap().contains("\"2026-13-01\" is not a date"));
}

#[test]
fn sales_summary_preset() {
    let mut csv = String::from("id,amount,region,product\n");
    for i in 0..10 {
        csv.push_str(&format!("{i},2500.5,north,widget\n{i},100,south,gadget\n{i},3000,east,gizmo\n"));
    }
    csv.push_str("x,not money,east,gizmo\n");
    let v = ok(r#"{"preset": "sales-summary"}"#, &csv);
    assert_eq!(
        v["groups"],
        json!([
            {"region": "east", "product": "gizmo", "total": 30000.0, "orders": 10},
            {"region": "north", "product": "widget", "total": 25005.0, "orders": 10}
        ])
    );
    assert_eq!(v["stats"]["rows_errored"], 1);
}

#[test]
fn passthrough_keeps_strings_and_reports_bad_rows() {
    let v = ok("{}", "id,name\n1,a\n2\n3,\"x, \"\"y\"\"\"\n4,\u{e9}\n");
    assert_eq!(
        v["records"],
        json!([{"id": "1", "name": "a"}, {"id": "3", "name": "x, \"y\""}, {"id": "4", "name": "é"}])
    );
    assert_eq!(v["errors"][0]["kind"], "field_count");
    assert_eq!(v["errors"][0]["line"], 3);
    let spec = spec::parse(b"{}").unwrap();
    let out = run_to_end(&spec, b"id,name\n1,\xff\n", Format::Json).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["errors"][0]["kind"], "invalid_utf8");
    assert_eq!(v["errors"][0]["column"], 2);
}

#[test]
fn conversions_and_string_operations() {
    let spec = r#"{"columns": [
        {"from": "n", "type": "integer", "multiply": 2, "add": 1},
        {"from": "f", "type": "float", "default": "0.5", "round": 1},
        {"from": "b", "type": "boolean"},
        {"from": "d", "type": "date", "formats": ["%d/%m/%Y", "%Y-%m-%d"], "output_format": "%Y%m%d"},
        {"from": "t", "type": "datetime", "formats": ["%Y-%m-%d %H:%M"]},
        {"name": "label", "from": "s", "trim": true, "replace": [{"from": "-", "to": " "}], "upper": true},
        {"name": "total", "expr": "n * `f` + 1", "round": 2},
        {"name": "raw", "expr": "e * 2", "hidden": true},
        {"name": "blank", "from": "e", "type": "integer"}
    ]}"#;
    let csv = "n,f,b,d,t,s,e\n3,1.26,yes,7/3/2026,2026-03-07 09:30, a-b ,\n4,,F,2026-12-31,2026-01-01 00:00,x,7\n";
    // Names in expressions are earlier output columns (n and f above, converted), else input columns (e).
    let v = ok(spec, csv);
    assert_eq!(
        v["records"],
        json!([
            {"n": 7, "f": 1.3, "b": true, "d": "20260307", "t": "2026-03-07T09:30:00", "label": "A B", "total": 10.1, "blank": null},
            {"n": 9, "f": 0.5, "b": false, "d": "20261231", "t": "2026-01-01T00:00:00", "label": "X", "total": 5.5, "blank": 7}
        ])
    );
}

#[test]
fn filters_work_on_typed_values() {
    let spec = r#"{"columns": ["name", {"from": "age", "type": "integer"}, {"from": "joined", "type": "date"}],
        "filter": {"any": [
            {"all": [{"column": "age", "op": ">=", "value": 30}, {"column": "name", "op": "not_in", "value": ["bob"]}]},
            {"column": "joined", "op": "<", "value": "2020-01-01"}]}}"#;
    let csv = "name,age,joined\nann,31,2021-01-01\nbob,40,2021-01-01\ncid,20,2019-05-05\ndee,20,2021-01-01\neve,,2021-01-01\n";
    let v = ok(spec, csv);
    let names: Vec<&str> = v["records"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ann", "cid"]);
    assert_eq!(v["stats"]["rows_filtered"], 3);
}

#[test]
fn error_policies() {
    let spec = r#"{"columns": [{"from": "x", "type": "integer"}], "on_error": "ON"}"#;
    let csv = "x\n1\nnope\n3\n";
    match run(&spec.replace("ON", "fail"), csv) {
        Err(RunError::Halt(h)) => {
            assert_eq!(h.line, 3);
            assert!(h.message.contains("\"nope\" is not an integer"), "{}", h.message);
        }
        other => panic!("{other:?}"),
    }
    let v = ok(&spec.replace("ON", "null"), csv);
    assert_eq!(v["records"], json!([{"x": 1}, {"x": null}, {"x": 3}]));
    let v = ok(&spec.replace("ON", "skip"), csv);
    assert_eq!(v["records"], json!([{"x": 1}, {"x": 3}]));
    assert_eq!(v["errors"][0]["line"], 3);
}

#[test]
fn dialects() {
    let v = ok(r#"{"dialect": {"delimiter": ";", "quote": "'", "trim": true}}"#, "a;b\n 1 ;'x;y'\n");
    assert_eq!(v["records"], json!([{"a": "1", "b": "x;y"}]));
    let v = ok(r#"{"dialect": {"header": false, "columns": ["p", "q"]}}"#, "1,2\n3,4\n");
    assert_eq!(v["records"], json!([{"p": "1", "q": "2"}, {"p": "3", "q": "4"}]));
    assert_eq!(v["stats"]["rows_in"], 2);
    let v = ok(r#"{"dialect": {"flexible": true}}"#, "a,b\n1\n1,2,3\n");
    assert_eq!(v["records"], json!([{"a": "1", "b": ""}, {"a": "1", "b": "2"}]));
    let v = ok(r#"{"dialect": {"columns": ["x", "y"]}}"#, "a,b\n1,2\n");
    assert_eq!(v["records"], json!([{"x": "1", "y": "2"}]));
    assert!(spec_error(r#"{"dialect": {"delimiter": "ab"}}"#, "a\n").contains("dialect.delimiter"));
    // A dialect that cannot split a file is refused, not read as 0 rows.
    for (dialect, needle) in [
        (r#"{"delimiter": "\n"}"#, "dialect.delimiter: \"\\n\" is a line break"),
        (r#"{"delimiter": "\r"}"#, "dialect.delimiter: \"\\r\" is a line break"),
        (r#"{"quote": "\n"}"#, "dialect.quote"),
        (r#"{"delimiter": "\"", "quote": "\""}"#, "must differ"),
    ] {
        let message = spec_error(&format!(r#"{{"dialect": {dialect}}}"#), "a,b\n1,2\n");
        assert!(message.contains(needle), "{dialect}: {message}");
    }
    assert!(spec_error(r#"{"dialect": {"header": false}}"#, "a\n").contains("dialect.columns"));
    assert!(spec_error(r#"{"dialect": {"columns": ["x"]}}"#, "a,b\n").contains("names 1 columns but the header has 2"));
}

#[test]
fn spec_mistakes_name_the_field_before_any_row() {
    let csv = "id,amount\n1,2\n";
    for (spec, needle) in [
        (r#"{"columns": [{"from": "amt"}]}"#, "columns[0].from: no input column \"amt\" (the header has: id, amount)"),
        (r#"{"columns": [{"name": "t", "expr": "amount * qty"}]}"#, "columns[0].expr: no input column \"qty\""),
        (r#"{"columns": [{"expr": "amount * 2"}]}"#, "columns[0].name: a computed column needs a name"),
        (r#"{"columns": [{"from": "id", "type": "date", "formats": ["%Y-%b"]}]}"#, "columns[0].formats[0]"),
        (r#"{"columns": [{"from": "id", "round": 2}]}"#, "columns[0]: multiply, add and round need a float or integer"),
        (r#"{"columns": [{"from": "id", "type": "integer", "default": "x"}]}"#, "columns[0].default"),
        (r#"{"columns": ["id", "id"]}"#, "columns[1]: the output name \"id\" is used twice"),
        (r#"{"filter": {"column": "amount", "op": ">", "value": 1}}"#, "filter.value: 1 is not a string"),
        (r#"{"aggregate": {"group_by": ["x"], "metrics": [{"op": "count"}]}}"#, "aggregate.group_by[0]"),
    ] {
        let err = spec_error(spec, csv);
        assert!(err.contains(needle), "{spec}: {err}");
    }
}

#[test]
fn ndjson_lines() {
    let spec = spec::parse(br#"{"columns": [{"from": "x", "type": "integer"}]}"#).unwrap();
    let out = run_to_end(&spec, b"x\n1\nbad\n2\n", Format::Ndjson).unwrap();
    let lines: Vec<Value> =
        out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
    assert_eq!(lines[0], json!({"record": {"x": 1}}));
    assert_eq!(lines[1]["error"]["line"], 3);
    assert_eq!(lines[2], json!({"record": {"x": 2}}));
    assert_eq!(lines[3]["stats"]["rows_in"], 3);
    let agg = spec::parse(
        br#"{"preset": "sales-summary", "aggregate": {"group_by": ["region"], "metrics": [{"op": "count"}]}}"#,
    )
    .unwrap();
    let out = run_to_end(&agg, b"id,amount,region,product\n1,2,n,w\n", Format::Ndjson).unwrap();
    assert_eq!(String::from_utf8(out).unwrap().lines().next().unwrap(), r#"{"group":{"region":"n","count":1}}"#);
}

#[test]
fn partial_aggregates_are_returned_for_merging() {
    let v = ok(
        r#"{"preset": "sales-summary", "aggregate": {"group_by": ["region"], "metrics": [{"name": "t", "op": "sum", "column": "amount"}], "partial": true}}"#,
        "id,amount,region,product\n1,0.1,n,w\n2,0.2,n,w\n",
    );
    assert_eq!(v["partial"]["groups"], json!([{"key": ["n"], "state": [{"sum": "0.3", "n": 2}]}]));
}

/// An answer, JSON or one NDJSON line, with its records and error records counted, not kept.
#[derive(serde::Deserialize)]
struct Counted {
    #[serde(default)]
    records: Vec<IgnoredAny>,
    #[serde(default)]
    errors: Vec<IgnoredAny>,
    record: Option<IgnoredAny>,
    error: Option<IgnoredAny>,
    stats: Option<Stats>,
}

/// What any answer keeps: it parses (NDJSON line by line), its counts add up
/// (`rows_in = rows_out + rows_filtered + rows_errored`), it has one record per row
/// out (none when aggregating) and one error record per errored row, but for
/// those a JSON answer counts as omitted. `spec_json` over `data` is the case.
fn assert_answer_adds_up(spec_json: &str, data: &[u8], format: Format, aggregates: bool, out: &[u8]) {
    let case = || format!("{spec_json} {format:?} over {:?}", String::from_utf8_lossy(data));
    let parse = |json: &[u8]| {
        serde_json::from_slice::<Counted>(json)
            .unwrap_or_else(|e| panic!("{}: not an answer ({e}): {}", case(), String::from_utf8_lossy(json)))
    };
    let (mut records, mut errors, mut stats) = (0, 0, None);
    let parts: Vec<&[u8]> = match format {
        Format::Json => vec![out],
        Format::Ndjson => out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect(),
    };
    for part in parts {
        let c = parse(part);
        records += c.records.len() + usize::from(c.record.is_some());
        errors += c.errors.len() + usize::from(c.error.is_some());
        stats = stats.or(c.stats);
    }
    let stats = stats.unwrap_or_else(|| panic!("{}: no stats", case()));
    stats.check().unwrap_or_else(|e| panic!("{}: {e}", case()));
    let rows_out = if aggregates { 0 } else { stats.rows_out };
    assert_eq!(records as u64, rows_out, "{}: records for {stats:?}", case());
    assert_eq!(errors as u64 + stats.errors_omitted, stats.rows_errored, "{}: error records for {stats:?}", case());
}

/// Arbitrary bytes, alone and under a header the presets read, never panic, and every answer adds up.
#[test]
fn arbitrary_bytes_never_panic() {
    let specs = [
        r#"{}"#,
        r#"{"preset": "vat", "dialect": {"flexible": true}}"#,
        r#"{"preset": "sales-summary", "dialect": {"flexible": true}}"#,
        r#"{"dialect": {"flexible": true, "trim": true}}"#,
    ];
    let alphabet = b"ab,\"\n\r;1.-9e \xff\xc3\xa9";
    let mut rng = fanout_testkit::rng::Rng::new(0x2545_f491_4f6c_dd1du64);
    let mut next = move || rng.next_u64();
    for _ in 0..2000 {
        let len = (next() % 80) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect();
        if next() % 2 == 0 {
            data.splice(0..0, b"id,amount,date,category,region,product\n".iter().copied());
        }
        for s in specs {
            let spec = spec::parse(s.as_bytes()).unwrap();
            for format in [Format::Json, Format::Ndjson] {
                if let Ok(out) = run_to_end(&spec, &data, format) {
                    assert_answer_adds_up(s, &data, format, spec.aggregate.is_some(), &out);
                }
            }
        }
    }
}

#[test]
fn crlf_and_blank_lines_keep_line_numbers() {
    let spec = r#"{"columns": ["id", {"from": "amount", "type": "float"}]}"#;
    let v = ok(spec, "id,amount\r\n1,x\r\n2,3\r\n\r\n4,y\r\n");
    let lines: Vec<u64> = v["errors"].as_array().unwrap().iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 5]);
    let v = ok("{}", "id,n\n1,a\n\nbad\n");
    assert_eq!(v["errors"][0]["line"], 4);
    let v = ok("{}", "\"i\nd\",n\r\n1,a\r\nbad\r\n");
    assert_eq!(v["errors"][0]["line"], 4, "a header spanning two lines");
}

#[test]
fn json_answers_keep_a_bounded_number_of_error_records() {
    let mut csv = String::from("a,b\n");
    for _ in 0..10_005 {
        csv.push_str("x\n");
    }
    let v = ok("{}", &csv);
    assert_eq!(v["errors"].as_array().unwrap().len(), 10_000);
    assert_eq!(v["stats"]["rows_errored"], 10_005);
    assert_eq!(v["stats"]["errors_omitted"], 5);
    let spec = spec::parse(b"{}").unwrap();
    let out = run_to_end(&spec, csv.as_bytes(), Format::Ndjson).unwrap();
    assert_eq!(
        out.split(|&b| b == b'\n').filter(|l| l.starts_with(b"{\"error\"")).count(),
        10_005,
        "NDJSON has them all"
    );
}

#[test]
fn null_values_are_missing_in_every_column_and_expression() {
    let csv = "id,qty,price,note\n1,NA,2.5,N4WNAA\n2,3,-,NA\n3,,1.0,x\n";
    let v = ok(
        r#"{"dialect": {"null_values": ["NA"]}, "columns": [{"from": "id", "type": "integer"},
            {"from": "qty", "type": "integer", "default": "0"},
            {"from": "price", "type": "float", "null_values": ["-"]},
            {"name": "total", "expr": "qty * price"}, "note"]}"#,
        csv,
    );
    assert_eq!(
        v["records"],
        json!([
            {"id": 1, "qty": 0, "price": 2.5, "total": 0.0, "note": "N4WNAA"},
            {"id": 2, "qty": 3, "price": null, "total": null, "note": null},
            {"id": 3, "qty": 0, "price": 1.0, "total": 0.0, "note": "x"}
        ])
    );
    assert_eq!(v["stats"]["rows_errored"], 0);
    // Compared exactly, as the field is read: " NA " is not missing, in a column or in an expression.
    let padded = "a,b\n1, NA \n";
    for spec in [
        r#"{"dialect": {"null_values": ["NA"]}, "columns": [{"from": "b", "type": "float"}]}"#,
        r#"{"dialect": {"null_values": ["NA"]}, "columns": [{"name": "t", "expr": "b * 2"}]}"#,
    ] {
        assert_eq!(ok(spec, padded)["stats"]["rows_errored"], 1, "{spec}");
    }
    let trimmed = r#"{"dialect": {"null_values": ["NA"], "trim": true}, "columns": [{"name": "t", "expr": "b * 2"}]}"#;
    assert_eq!(ok(trimmed, padded)["records"], json!([{"t": null}]));
    // Without null_values, NA is not an integer: an error record, as before.
    let v = ok(r#"{"columns": [{"from": "qty", "type": "integer"}]}"#, csv);
    assert_eq!(v["stats"]["rows_errored"], 1);
    assert!(
        spec_error(r#"{"aggregate": {"metrics": [{"op": "rows", "column": "id"}]}}"#, csv).contains("takes no column")
    );
}
