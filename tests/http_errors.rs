//! Request-level errors, the same on every component: unknown routes, wrong
//! methods, oversized and malformed bodies, and the shared token.

use fanout_testkit::client::{get, post, request};
use fanout_testkit::component::{under_spin, Component};

fn assert_error(resp: &fanout_testkit::client::Response, status: u16, kind: &str) -> String {
    assert_eq!(resp.status, status, "body: {}", resp.text());
    assert_eq!(resp.header("content-type"), Some("application/json"));
    let body = resp.json();
    assert_eq!(body["error"]["kind"], kind, "{body}");
    body["error"]["message"].as_str().expect("a message").to_owned()
}

#[test]
fn unknown_routes_are_404_with_a_json_body() {
    for (name, path) in [("scrape", "/scrapes"), ("transform", "/"), ("coordinator", "/coordinate/nothing")] {
        let c = Component::serve(name, &[]);
        let msg = assert_error(&get(&c.url(path)), 404, "not_found");
        assert!(msg.contains(path), "{msg}");
    }
}

#[test]
fn wrong_methods_are_405() {
    let c = Component::serve("transform", &[]);
    let msg = assert_error(&get(&c.url("/transform")), 405, "method_not_allowed");
    assert!(msg.contains("POST"), "{msg}");
    let c = Component::serve("coordinator", &[]);
    assert_error(&get(&c.url("/coordinate/scrape")), 405, "method_not_allowed");
}

#[test]
fn bodies_over_the_limit_are_413() {
    // The coordinator streams CSV bodies: their limit is the job's, not a request's.
    let limit = [
        ("FANOUT_MAX_REQUEST_BYTES", "1000"),
        ("FANOUT_MAX_JOB_BYTES", "1000"),
        ("FANOUT_TRANSFORM_URL", "http://127.0.0.1:9/transform"),
    ];
    let big = vec![b'a'; 5000];
    for (name, path, ctype) in [
        ("transform", "/transform", "text/csv"),
        ("scrape", "/scrape", "application/json"),
        ("coordinator", "/coordinate/transform", "text/csv"),
    ] {
        let c = Component::serve(name, &limit);
        let msg = assert_error(&post(&c.url(path), ctype, &big), 413, "payload_too_large");
        assert!(msg.contains("1000"), "{msg}");
        // Exactly at the limit is fine (a CSV of one column, many rows).
        let mut ok = b"h\n".to_vec();
        ok.resize(1000, b'\n');
        if name == "transform" {
            assert_eq!(post(&c.url(path), ctype, &ok).status, 200);
        }
    }
}

#[test]
fn chunked_bodies_over_the_limit_are_413() {
    // No content-length: the limit must hold while streaming.
    let c = Component::serve("transform", &[("FANOUT_MAX_REQUEST_BYTES", "1000")]);
    let url = c.url("/transform");
    let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_owned();
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let chunk = vec![b'x'; 600];
    let mut req = b"POST /transform HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: text/csv\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..3 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&req);
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("payload_too_large"), "{answer}");
}

#[test]
fn malformed_requests_are_400_naming_the_problem() {
    let c = Component::serve("scrape", &[]);
    let msg = assert_error(&post(&c.url("/scrape"), "application/json", b"{\"urls\": [1, 2]}"), 400, "bad_request");
    assert!(msg.contains("line 1 column"), "{msg}");
    let msg = assert_error(&post(&c.url("/scrape"), "application/json", b"{\"url\": []}"), 400, "bad_request");
    assert!(msg.contains("url"), "{msg}");
    let msg = assert_error(&get(&c.url("/scrape")), 400, "bad_request");
    assert!(msg.contains("url query parameter"), "{msg}");

    let c = Component::serve("transform", &[]);
    let msg = assert_error(&post(&c.url("/transform"), "text/csv", b""), 400, "bad_request");
    assert!(msg.contains("header row"), "{msg}");
    assert_error(&post(&c.url("/transform"), "image/png", b"{}"), 415, "unsupported_media_type");
    let msg = assert_error(&post(&c.url("/transform"), "application/json", b"{}"), 400, "bad_request");
    assert!(msg.contains("source"), "range mode names its missing field: {msg}");

    let c = Component::serve(
        "coordinator",
        &[("FANOUT_SCRAPE_URL", "http://127.0.0.1:9/scrape"), ("FANOUT_TRANSFORM_URL", "http://127.0.0.1:9/transform")],
    );
    let msg = assert_error(&post(&c.url("/coordinate/scrape"), "application/json", b"[]"), 400, "bad_request");
    assert!(msg.contains("invalid JSON body"), "{msg}");
    let msg = assert_error(
        &post(&c.url("/coordinate/transform?chunk_bytes=lots"), "text/csv", b"a\n1\n"),
        400,
        "bad_request",
    );
    assert!(msg.contains("chunk_bytes"), "{msg}");
}

#[test]
fn misconfiguration_is_a_500_naming_the_variable() {
    let c = Component::serve("transform", &[("FANOUT_MAX_REQUEST_BYTES", "ten")]);
    let msg = assert_error(&post(&c.url("/transform"), "text/csv", b"a\n1\n"), 500, "config");
    assert!(msg.contains("FANOUT_MAX_REQUEST_BYTES"), "{msg}");
    // Empty is unset, whatever default the host gives (spin.toml names the workers by service chaining).
    let c = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", "")]);
    let msg = assert_error(&post(&c.url("/coordinate/transform"), "text/csv", b"a\n1\n"), 500, "config");
    assert!(msg.contains("FANOUT_TRANSFORM_URL"), "{msg}");
}

/// `GET /healthz` (and `/healthz/NAME`, as spin.toml routes the workers' own) needs no token and says
/// whether the component's configuration reads, for a platform's readiness probe.
#[test]
fn health_checks_need_no_token_and_fail_on_a_bad_configuration() {
    for name in ["scrape", "transform", "coordinator"] {
        let c = Component::serve(name, &[("FANOUT_TOKEN", "s3cret")]);
        let own = if name == "coordinator" { "/healthz".to_owned() } else { format!("/healthz/{name}") };
        let mut paths = vec![own.clone()];
        if !under_spin() {
            // Under wasmtime each component has its own address, and /healthz is its own.
            paths.push("/healthz".to_owned());
        }
        for path in &paths {
            let resp = get(&c.url(path));
            assert_eq!((resp.status, resp.json()), (200, serde_json::json!({"status": "ok"})), "{name} {path}");
        }
        // Only GET: anything else is an ordinary request, and wants the token.
        assert_error(&post(&c.url(&own), "text/csv", b"a\n1\n"), 401, "unauthorized");
        let bad = Component::serve(name, &[("FANOUT_MAX_REQUEST_BYTES", "ten")]);
        let msg = assert_error(&get(&bad.url(&own)), 500, "config");
        assert!(msg.contains("FANOUT_MAX_REQUEST_BYTES"), "{name}: {msg}");
    }
}

#[test]
fn the_shared_token_is_required_when_set() {
    let c = Component::serve("transform", &[("FANOUT_TOKEN", "s3cret")]);
    let url = c.url("/transform");
    assert_error(&post(&url, "text/csv", b"a\n1\n"), 401, "unauthorized");
    let wrong =
        request("POST", &url, &[("authorization", "Bearer nope"), ("content-type", "text/csv")], b"a\n1\n").unwrap();
    assert_error(&wrong, 401, "unauthorized");
    let right =
        request("POST", &url, &[("authorization", "Bearer s3cret"), ("content-type", "text/csv")], b"a\n1\n").unwrap();
    assert_eq!(right.status, 200, "{}", right.text());
    // The scheme's case does not matter (RFC 9110).
    let lower =
        request("POST", &url, &[("authorization", "bearer s3cret"), ("content-type", "text/csv")], b"a\n1\n").unwrap();
    assert_eq!(lower.status, 200, "{}", lower.text());
    // A token of only whitespace would turn the check off: it is a configuration error instead.
    let c = Component::serve("transform", &[("FANOUT_TOKEN", "   ")]);
    let msg = assert_error(&post(&c.url("/transform"), "text/csv", b"a\n1\n"), 500, "config");
    assert!(msg.contains("FANOUT_TOKEN"), "{msg}");
}

/// Sends a request whose head is given as raw bytes (a header that is not UTF-8, say).
fn raw(c: &Component, head: &[u8], body: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = c.url("").trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = head.to_vec();
    req.extend_from_slice(format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes());
    req.extend_from_slice(body);
    s.write_all(&req).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn hostile_specs_and_selections_are_400_not_ignored() {
    // A spec header that is not UTF-8 is not taken for no spec at all.
    let head = b"POST /transform HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\nx-fanout-spec: {\"preset\": \"vat\xff\"}\r\n";
    let transform = Component::serve("transform", &[]);
    let answer = raw(&transform, head, b"a\n1\n");
    // Spin's HTTP trigger refuses a header value that is not UTF-8 itself, before any component runs
    // (a 500 with no body); wasmtime hands it to the component, which names it.
    let (status, named) =
        if under_spin() { ("HTTP/1.1 500", "") } else { ("HTTP/1.1 400", "x-fanout-spec header is not UTF-8") };
    assert!(answer.starts_with(status), "{answer}");
    assert!(answer.contains(named), "{answer}");
    let coordinator = Component::serve("coordinator", &[("FANOUT_TRANSFORM_URL", "http://127.0.0.1:9/transform")]);
    let head = b"POST /coordinate/transform HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\nx-fanout-spec: \xff\r\n";
    let answer = raw(&coordinator, head, b"a\n1\n");
    assert!(answer.starts_with(status), "{answer}");

    // A dialect that cannot split a file is refused, not read as no rows.
    let spec = r#"{"dialect": {"delimiter": "\n"}}"#;
    let resp = request(
        "POST",
        &transform.url("/transform"),
        &[("content-type", "text/csv"), ("x-fanout-spec", spec)],
        b"a\n1\n",
    )
    .unwrap();
    let msg = assert_error(&resp, 400, "bad_request");
    assert!(msg.contains("dialect.delimiter"), "{msg}");

    // A misspelt key in a selection's full form is a mistake to report.
    let scrape = Component::serve("scrape", &[]);
    let job = br#"{"urls": ["https://example.com/"], "select": {"h": {"css": "h1", "atr": "class"}}}"#;
    let msg = assert_error(&post(&scrape.url("/scrape"), "application/json", job), 400, "bad_request");
    assert!(msg.contains("unknown field `atr`"), "{msg}");
}
