//! The transform worker, through the real component.

use fanout_testkit::client::post;
use fanout_testkit::component::Component;
use serde_json::json;

#[test]
fn csv_rows_become_records_and_bad_rows_errors() {
    let c = Component::serve("transform", &[]);
    let csv = b"id,name\n1,Ann\n2\n3,\"B, \"\"quoted\"\"\"\n4,\xff\n";
    let resp = post(&c.url("/transform"), "text/csv; charset=utf-8", csv);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    assert_eq!(v["records"], json!([{"id": "1", "name": "Ann"}, {"id": "3", "name": "B, \"quoted\""}]));
    assert_eq!(v["errors"][0]["line"], 3);
    assert_eq!(v["errors"][0]["kind"], "field_count");
    assert_eq!(v["errors"][1]["line"], 5);
    assert_eq!(v["errors"][1]["kind"], "invalid_utf8");
    assert_eq!(v["errors"][1]["column"], 2);
    assert_eq!(v["stats"], json!({"rows_in": 4, "rows_out": 2, "rows_filtered": 0, "rows_errored": 2}));
}

use fanout_testkit::client::{post_json, request};
use fanout_testkit::site::Site;

const SALES: &str = "id,amount,date,category,region,product\n\
1,100.00,2026-01-05, Tools ,north,widget\n\
2,-5.00,2026-01-06,HOME,south,gadget\n\
3,abc,2026-01-08,garden,east,gizmo\n\
4,9000,2026-02-01,home,north,widget\n\
5,20000,2026-02-02,Home,south,gadget\n";

fn transform(c: &Component, query: &str, headers: &[(&str, &str)], csv: &[u8]) -> fanout_testkit::client::Response {
    let mut all = vec![("content-type", "text/csv")];
    all.extend_from_slice(headers);
    request("POST", &c.url(&format!("/transform{query}")), &all, csv).unwrap()
}

#[test]
fn the_vat_preset_by_query_header_or_spec() {
    let c = Component::serve("transform", &[]);
    let by_preset = transform(&c, "?preset=vat", &[], SALES.as_bytes());
    assert_eq!(by_preset.status, 200, "{}", by_preset.text());
    let v = by_preset.json();
    assert_eq!(
        v["records"],
        json!([
            {"id": 1, "amount": 121.0, "date": "2026-01-05", "category": "tools"},
            {"id": 4, "amount": 10890.0, "date": "2026-02-01", "category": "home"},
            {"id": 5, "amount": 24200.0, "date": "2026-02-02", "category": "home"}
        ])
    );
    assert_eq!(v["stats"], json!({"rows_in": 5, "rows_out": 3, "rows_filtered": 1, "rows_errored": 1}));
    assert_eq!(v["errors"][0]["line"], 4);
    // Everything but the timing is the same however the spec came.
    let without_timing = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("timing").expect("answers carry their timing");
        v
    };
    let v = without_timing(v);
    let by_header = transform(&c, "", &[("x-fanout-spec", r#"{"preset": "vat"}"#)], SALES.as_bytes());
    assert_eq!(without_timing(by_header.json()), v);
    let spec = r#"{"preset":"vat"}"#.replace('"', "%22").replace('{', "%7B").replace('}', "%7D").replace(':', "%3A");
    let by_query = transform(&c, &format!("?spec={spec}"), &[], SALES.as_bytes());
    assert_eq!(without_timing(by_query.json()), v);
}

#[test]
fn aggregates_and_partials() {
    let c = Component::serve("transform", &[]);
    let mut csv = String::from("id,amount,region,product\n");
    for i in 0..30 {
        csv.push_str(&format!("{i},1000.10,north,widget\n{i},10,south,gadget\n"));
    }
    let v = transform(&c, "?preset=sales-summary", &[], csv.as_bytes()).json();
    assert_eq!(v["groups"], json!([{"region": "north", "product": "widget", "total": 30003.0, "orders": 30}]));
    let partial = r#"{"preset": "sales-summary", "aggregate": {"group_by": ["region"], "metrics": [{"name": "total", "op": "sum", "column": "amount"}], "partial": true}}"#;
    let v = transform(&c, "", &[("x-fanout-spec", partial)], csv.as_bytes()).json();
    assert_eq!(
        v["partial"]["groups"],
        json!([{"key": ["north"], "state": [{"sum": "30003", "n": 30}]}, {"key": ["south"], "state": [{"sum": "300", "n": 30}]}])
    );
}

#[test]
fn ndjson_streams_records_errors_and_stats() {
    let c = Component::serve("transform", &[]);
    let resp = transform(&c, "?preset=vat", &[("accept", "application/x-ndjson")], SALES.as_bytes());
    assert_eq!(resp.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<serde_json::Value> = resp.text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["record"]["id"], 1);
    assert_eq!(lines[1]["error"]["line"], 4);
    assert_eq!(lines[4]["stats"]["rows_in"], 5);
}

#[test]
fn error_policies_fail_with_422_or_keep_nulls() {
    let c = Component::serve("transform", &[]);
    let spec =
        r#"{"columns": [{"from": "id", "type": "integer"}, {"from": "amount", "type": "float"}], "on_error": "fail"}"#;
    let resp = transform(&c, "", &[("x-fanout-spec", spec)], SALES.as_bytes());
    assert_eq!(resp.status, 422, "{}", resp.text());
    let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.starts_with("line 4: column \"amount\": \"abc\" is not a float"), "{msg}");
    let resp = transform(&c, "", &[("x-fanout-spec", &spec.replace("fail", "null"))], SALES.as_bytes());
    assert_eq!(resp.json()["records"][2], json!({"id": 3, "amount": null}));
}

#[test]
fn bad_specs_are_400_naming_the_field() {
    let c = Component::serve("transform", &[]);
    for (spec, needle) in [
        (r#"{"columns": [{"from": "amt"}]}"#, "columns[0].from: no input column \"amt\""),
        (r#"{"columns": [{"from": "id", "type": "money"}]}"#, "columns[0]: type: unknown variant `money`"),
        (r#"{"filter": {"column": "id", "op": "~", "value": 1}}"#, "filter.op"),
        (r#"{"preset": "nope"}"#, "unknown preset"),
        ("not json", "invalid spec"),
    ] {
        let resp = transform(&c, "", &[("x-fanout-spec", spec)], SALES.as_bytes());
        assert_eq!(resp.status, 400, "{spec}: {}", resp.text());
        let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
        assert!(msg.contains(needle), "{spec}: {msg}");
    }
    let resp = transform(&c, "?preset=vat", &[("x-fanout-spec", "{}")], SALES.as_bytes());
    assert!(resp.json()["error"]["message"].as_str().unwrap().contains("give it one way"));
}

fn range(c: &Component, source: &str, start: u64, end: u64) -> fanout_testkit::client::Response {
    post_json(&c.url("/transform"), &json!({"source": source, "start": start, "end": end}))
}

fn ids(resp: &fanout_testkit::client::Response) -> Vec<String> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["records"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn range_mode_owns_exactly_the_records_starting_inside() {
    let site = Site::start();
    let files: [(&str, &[u8]); 3] = [
        ("lf.csv", b"id,v\n1,a\n22,bb\n333,ccc\n4,d\n"),
        ("crlf.csv", b"id,v\r\n1,a\r\n22,bb\r\n333,ccc\r\n4,d\r\n"),
        ("noeol.csv", b"id,v\n1,a\n22,bb\n333,ccc\n4,d"),
    ];
    let c = Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    for (name, body) in files {
        site.put(name, "text/csv", body);
        let url = site.url(&format!("/files/{name}"));
        let n = body.len() as u64;
        // Cut points mid-record, on line breaks, between \r and \n, at the end.
        for cut in 1..n {
            let mut joined = ids(&range(&c, &url, 0, cut));
            joined.extend(ids(&range(&c, &url, cut, n)));
            assert_eq!(joined, ["1", "22", "333", "4"], "{name} cut at {cut}");
        }
    }
    let v = range(&c, &site.url("/files/lf.csv"), 5, 12).json();
    assert_eq!(v["records"], json!([{"id": "1", "v": "a"}, {"id": "22", "v": "bb"}]));
}

#[test]
fn range_mode_errors_carry_file_offsets() {
    let site = Site::start();
    site.put("bad.csv", "text/csv", "id,v\n1,a\n2\n3,c\n");
    let c = Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let v = range(&c, &site.url("/files/bad.csv"), 6, 15).json();
    assert_eq!(v["errors"][0]["byte"], 9);
    assert_eq!(v["errors"][0]["kind"], "field_count");
}

#[test]
fn range_mode_reads_quoted_line_breaks_and_refuses_what_it_cannot_read() {
    let site = Site::start();
    site.put("quoted.csv", "text/csv", "id,v\n1,\"two\nlines\"\n3,c\n");
    site.put("plain.csv", "text/csv", "id,v\n1,a\n2,b\n");
    let c = Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let url = site.url("/files/quoted.csv");
    let v = range(&c, &url, 0, 10).json();
    assert_eq!(v["records"], json!([{"id": "1", "v": "two\nlines"}]));
    assert_eq!(v["range"], json!({"begin": 5, "end": 19, "newlines": 2, "certain": true}));
    // Byte 10 is inside the quoted field: the worker's guess ("lines\"") is wrong, and says it is not certain;
    // given where the range before ended, it reads the rest.
    let guessed = range(&c, &url, 10, 23).json();
    assert_eq!(guessed["range"]["certain"], false, "{guessed}");
    let told = post_json(&c.url("/transform"), &json!({"source": url, "start": 10, "end": 23, "begin": 19})).json();
    assert_eq!(told["records"], json!([{"id": "3", "v": "c"}]));
    assert_eq!(told["range"], json!({"begin": 19, "end": 23, "newlines": 1, "certain": true}));
    let resp = post_json(&c.url("/transform"), &json!({"source": url, "start": 10, "end": 23, "begin": 9}));
    assert_eq!(resp.status, 400, "{}", resp.text());
    // A server that ignores Range still works: the worker cuts the whole file itself.
    assert_eq!(ids(&range(&c, &site.url("/whole/plain.csv"), 6, 100)), ["2"]);
    let resp = range(&c, &site.url("/files/missing.csv"), 0, 10);
    assert_eq!(resp.status, 502, "{}", resp.text());
    let resp = range(&c, "ftp://example.com/x.csv", 0, 10);
    assert_eq!(resp.status, 400);
    let resp = post_json(&c.url("/transform"), &json!({"source": site.url("/files/plain.csv"), "start": 9, "end": 3}));
    assert_eq!(resp.status, 400);
    let strict = Component::serve("transform", &[]);
    let resp = range(&strict, &site.url("/files/plain.csv"), 0, 10);
    assert_eq!(resp.status, 403, "{}", resp.text());
}

#[test]
fn aggregate_mistakes_are_400_before_any_row() {
    let c = Component::serve("transform", &[]);
    for (spec, needle) in [
        (r#"{"aggregate": {"metrics": [{"op": "sum", "column": "nope"}]}}"#, "aggregate.metrics[0].column"),
        (r#"{"aggregate": {"metrics": [{"op": "count"}], "sort": [{"by": "x"}]}}"#, "aggregate.sort[0].by"),
        (
            r#"{"aggregate": {"metrics": [{"op": "count"}], "having": {"column": "count", "op": ">", "value": "1"}}}"#,
            "aggregate.having.value",
        ),
    ] {
        let resp = transform(&c, "", &[("x-fanout-spec", spec)], SALES.as_bytes());
        assert_eq!(resp.status, 400, "{spec}: {}", resp.text());
        assert!(resp.text().contains(needle), "{spec}: {}", resp.text());
    }
}

#[test]
fn range_mode_edges() {
    let site = Site::start();
    let mut big = String::from("id,v\n");
    for i in 0..200 {
        big.push_str(&format!("{i},value-{i}\n"));
    }
    site.put("big.csv", "text/csv", big.clone());
    site.put("plain.csv", "text/csv", "id,v\n1,a\n2,b\n");
    site.put("bad.csv", "text/csv", "id,v\n1,a\n2,b\n3,c\n");
    // A range exactly as large as the request limit, on a file much larger.
    let c =
        Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true"), ("FANOUT_MAX_REQUEST_BYTES", "512")]);
    let first = ids(&range(&c, &site.url("/files/big.csv"), 0, 512));
    let second = ids(&range(&c, &site.url("/files/big.csv"), 512, 1024));
    assert_eq!(first.first().map(String::as_str), Some("0"));
    assert_eq!(first.last().unwrap().parse::<u32>().unwrap() + 1, second[0].parse::<u32>().unwrap());
    // Offsets past 4 GiB on a server that ignores Range: no record, no crash.
    assert!(ids(&range(&c, &site.url("/whole/plain.csv"), 4_294_967_296, 4_294_967_300)).is_empty());
    // A strict spec in range mode names the line and the byte of the bad row.
    let body = json!({"source": site.url("/files/bad.csv"), "start": 7, "end": 20,
        "spec": {"columns": [{"from": "id", "type": "integer"}, "v"], "filter": {"column": "id", "op": "<", "value": 3}, "on_error": "fail"}});
    assert_eq!(post_json(&c.url("/transform"), &body).status, 200);
    site.put("bad.csv", "text/csv", "id,v\n1,a\nx,b\n3,c\n");
    let resp = post_json(&c.url("/transform"), &body);
    assert_eq!(resp.status, 422, "{}", resp.text());
    let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.starts_with("line 1 (byte 9): column \"id\": \"x\" is not an integer"), "{msg}");
}
