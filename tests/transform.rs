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
    assert_eq!(v["stats"], json!({"rows_in": 4, "rows_out": 2, "rows_errored": 2}));
}
