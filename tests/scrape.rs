//! The scrape worker, through the real component, against the fixture site.

use fanout_testkit::client::{get, post_json};
use fanout_testkit::component::Component;
use fanout_testkit::site::Site;
use serde_json::json;

fn scraper() -> Component {
    Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true"), ("FANOUT_FETCH_TIMEOUT_MS", "2000")])
}

#[test]
fn get_scrapes_one_page() {
    let site = Site::start();
    let c = scraper();
    let page = site.url("/page/7");
    let resp = get(&c.url(&format!("/scrape?url={page}")));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let r = &resp.json()["results"][0];
    assert_eq!(r["index"], 0);
    assert_eq!(r["url"], page);
    assert_eq!(r["page"]["status"], 200);
    assert_eq!(r["page"]["title"], "Page 7");
    assert_eq!(r["page"]["description"], "Fixture page 7");
    assert_eq!(r["page"]["h1"], json!(["Heading 7"]));
    assert_eq!(r["page"]["final_url"], page);
    assert_eq!(r["page"]["canonical"], site.url("/page/7"));
    assert_eq!(r["page"]["og"], json!({"og:title": "OG 7"}));
    assert_eq!(r["page"]["lang"], "en");
    assert!(r["page"].get("links").is_none(), "links only when asked");
}

#[test]
fn post_keeps_input_order_with_per_url_errors() {
    let site = Site::start();
    let c = scraper();
    let urls = vec![
        site.url("/page/a?delay_ms=300"),
        site.url("/status/404"),
        "not a url".to_owned(),
        site.url("/page/b"),
        site.url("/text"),
        site.url("/page/a?delay_ms=300"),
        site.url("/hang"),
        site.url("/big/6000000"),
    ];
    let resp = post_json(&c.url("/scrape"), &json!({ "urls": urls }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let results = resp.json()["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), urls.len());
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["index"], i);
        assert_eq!(r["url"], urls[i]);
    }
    assert_eq!(results[0]["page"]["title"], "Page a");
    assert_eq!(results[1]["error"]["kind"], "http_status");
    assert_eq!(results[1]["error"]["status"], 404);
    assert_eq!(results[2]["error"]["kind"], "invalid_url");
    assert_eq!(results[3]["page"]["title"], "Page b");
    assert_eq!(results[4]["error"]["kind"], "not_html");
    assert_eq!(results[5]["page"]["title"], "Page a");
    assert_eq!(results[6]["error"]["kind"], "timeout");
    assert_eq!(results[7]["error"]["kind"], "too_large");
}

#[test]
fn retry_after_is_honoured() {
    let site = Site::start();
    let c = scraper();
    let started = std::time::Instant::now();
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": [site.url("/flaky/ra/1?retry_after=1")] })));
    assert_eq!(r[0]["page"]["attempts"], 2, "{}", r[0]);
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "{:?}", started.elapsed());
}

#[test]
fn private_hosts_are_blocked_unless_the_operator_allows_them() {
    let site = Site::start();
    let c = Component::serve("scrape", &[]);
    let resp = get(&c.url(&format!("/scrape?url={}", site.url("/page/1"))));
    assert_eq!(resp.status, 200);
    let r = &resp.json()["results"][0];
    assert_eq!(r["error"]["kind"], "blocked", "{r}");
    assert_eq!(site.hits("/page/1"), 0, "a blocked URL must not be fetched");
}

/// An operator allows one internal host: pages there are fetched, but no page
/// (nor its robots.txt) can redirect the scraper to any other private address.
#[test]
fn a_named_private_host_is_allowed_and_redirects_out_of_it_are_blocked() {
    let site = Site::start();
    let other = Site::start();
    let allowed = site.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let port = allowed.rsplit_once(':').unwrap().1.to_owned();
    let c = Component::serve("scrape", &[("FANOUT_PRIVATE_HOSTS", &allowed), ("FANOUT_FETCH_TIMEOUT_MS", "2000")]);
    let to = |target: &str| site.url(&format!("/redirect-to?url={target}"));
    let urls = [
        site.url("/page/ok"),
        to(&other.url("/page/x")),
        to(&format!("http://127.0.0.2:{port}/page/y")),
        to("http://169.254.169.254/latest/meta-data"),
        to(&format!("http://[::ffff:127.0.0.1]:{}/page/z", other.url("").rsplit(':').next().unwrap())),
        other.url("/page/direct"),
    ];
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": urls, "options": {"attempts": 1} })));
    assert_eq!(r[0]["page"]["title"], "Page ok", "{}", r[0]);
    for (i, result) in r.iter().enumerate().skip(1) {
        assert_eq!(result["error"]["kind"], "blocked", "{i}: {result}");
    }
    assert!(r[1]["error"]["message"].as_str().unwrap().starts_with("redirect to"), "{}", r[1]);
    assert_eq!(other.hits("/page/x") + other.hits("/page/direct") + other.hits("/page/z"), 0);

    // robots.txt follows redirects too, and the same rule holds for them.
    site.redirect_robots(&other.url("/robots.txt"));
    let r =
        results(&post_json(&c.url("/scrape"), &json!({ "urls": [site.url("/page/r")], "options": {"robots": true} })));
    assert_eq!(r[0]["error"]["kind"], "robots", "a robots.txt that cannot be read means stay out: {}", r[0]);
    assert_eq!(other.hits("/robots.txt"), 0, "the redirect to another private host was followed");
}

#[test]
fn selections_and_links_come_back_per_page() {
    let site = Site::start();
    let c = scraper();
    let body = json!({
        "urls": [site.url("/page/s")],
        "select": {"heading": "body > h1", "items": {"css": "ul li a", "attr": "href", "all": true}},
        "options": {"links": true}
    });
    let resp = post_json(&c.url("/scrape"), &body);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let page = &resp.json()["results"][0]["page"];
    assert_eq!(page["select"], json!({"heading": "Heading s", "items": ["/page/s-next"]}));
    assert_eq!(page["links"], json!([site.url("/page/s-next")]));
    assert_eq!(page["lang"], "en");
}

#[test]
fn an_invalid_selector_is_a_400_before_any_fetch() {
    let site = Site::start();
    let c = scraper();
    let body = json!({"urls": [site.url("/page/1")], "select": {"price": "span:hover"}});
    let resp = post_json(&c.url("/scrape"), &body);
    assert_eq!(resp.status, 400, "{}", resp.text());
    let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.starts_with("select.price: invalid CSS selector") && msg.contains(":hover is not supported"), "{msg}");
    assert_eq!(site.hits("/page/1"), 0);
}

#[test]
fn failed_fetches_are_retried_and_attempts_reported() {
    let site = Site::start();
    let c = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true"), ("FANOUT_FETCH_ATTEMPTS", "3")]);
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let urls = [site.url("/flaky/p/2"), site.url("/status/503"), site.url("/status/404"), format!("http://{dead}/")];
    let resp = post_json(&c.url("/scrape"), &json!({ "urls": urls }));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let r = resp.json()["results"].as_array().unwrap().clone();
    assert_eq!(r[0]["page"]["title"], "Page p", "{}", r[0]);
    assert_eq!(r[0]["page"]["attempts"], 3);
    assert_eq!(site.hits("/flaky/p/2"), 3);
    assert_eq!(r[1]["error"]["kind"], "http_status");
    assert_eq!(r[1]["error"]["attempts"], 3);
    assert_eq!(site.hits("/status/503"), 3);
    assert_eq!(r[2]["error"]["attempts"], 1, "a 404 is not retried");
    assert_eq!(r[3]["error"]["kind"], "connect", "{}", r[3]);
    assert_eq!(r[3]["error"]["attempts"], 3);
}

fn results(resp: &fanout_testkit::client::Response) -> Vec<serde_json::Value> {
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["results"].as_array().expect("a results array").clone()
}

#[test]
fn ndjson_streams_each_page_as_it_finishes() {
    use std::io::{BufRead, BufReader, Write};
    let site = Site::start();
    let c = scraper();
    let urls = json!([site.url("/page/slow?delay_ms=1500"), site.url("/page/a"), "nope", site.url("/page/b")]);
    let body = json!({ "urls": urls }).to_string();
    let addr = c.url("").trim_start_matches("http://").to_owned();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let started = std::time::Instant::now();
    write!(
        s,
        "POST /scrape HTTP/1.1\r\nhost: x\r\nconnection: close\r\naccept: application/x-ndjson\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line.trim().is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.to_ascii_lowercase().contains("content-type: application/x-ndjson"), "{head}");
    // Chunked framing: size line, data, CRLF. Read lines until three results arrived.
    let mut lines = Vec::new();
    let mut first_at = None;
    while lines.len() < 4 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line.trim()) {
            if v.is_object() {
                first_at.get_or_insert(started.elapsed());
                lines.push(v);
            }
        }
    }
    assert!(first_at.unwrap() < std::time::Duration::from_millis(1200), "first line came at {first_at:?}");
    let order: Vec<u64> = lines.iter().map(|v| v["index"].as_u64().unwrap()).collect();
    assert_eq!(order.len(), 4);
    assert_eq!(*order.last().unwrap(), 0, "the slow page finishes last: {order:?}");
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, vec![0, 1, 2, 3]);
    assert_eq!(lines.iter().find(|v| v["index"] == 0).unwrap()["page"]["title"], "Page slow");
}

#[test]
fn redirects_are_followed_and_bounded() {
    let site = Site::start();
    let c = scraper();
    let urls = [
        site.url("/redirect/3?to=/page/r"),
        site.url("/loop/a"),
        site.url("/redirect/5?to=/page/r"),
        site.url("/redirect-to?url=file:///etc/passwd"),
    ];
    let body = json!({ "urls": urls, "options": {"max_redirects": 4} });
    let r = results(&post_json(&c.url("/scrape"), &body));
    assert_eq!(r[0]["page"]["title"], "Page r", "{}", r[0]);
    assert_eq!(r[0]["page"]["final_url"], site.url("/page/r"));
    assert_eq!(r[0]["page"]["redirects"], 3);
    assert_eq!(r[1]["error"]["kind"], "redirect_loop", "{}", r[1]);
    assert!(r[1]["error"]["message"].as_str().unwrap().contains("already visited"));
    assert_eq!(r[2]["error"]["kind"], "redirect_loop", "{}", r[2]);
    assert!(r[2]["error"]["message"].as_str().unwrap().contains("more than 4 redirects"));
    assert_eq!(r[3]["error"]["kind"], "invalid_url", "{}", r[3]);
    assert_eq!(r[3]["error"]["status"], 301);
}

#[test]
fn compressed_and_non_utf8_pages_are_decoded() {
    let site = Site::start();
    let c = scraper();
    let urls = [
        site.url("/gzip/g"),
        site.url("/deflate/d"),
        site.url("/corrupt-gzip"),
        site.url("/latin1"),
        site.url("/latin1-meta"),
    ];
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": urls })));
    assert_eq!(r[0]["page"]["title"], "Page g", "{}", r[0]);
    assert!(r[0]["page"]["bytes"].as_u64().unwrap() > 100);
    assert_eq!(r[1]["page"]["title"], "Page d", "{}", r[1]);
    assert_eq!(r[2]["error"]["kind"], "decode", "{}", r[2]);
    for page in [&r[3]["page"], &r[4]["page"]] {
        assert_eq!(page["title"], "Café – crème brûlée €", "{page}");
        assert_eq!(page["charset"], "windows-1252");
    }
}

#[test]
fn non_html_is_parsed_only_when_asked() {
    let site = Site::start();
    let c = scraper();
    let asked = json!({ "urls": [site.url("/text")], "options": {"allow_non_html": true} });
    let r = results(&post_json(&c.url("/scrape"), &asked));
    assert_eq!(r[0]["page"]["content_type"], "text/plain", "{}", r[0]);
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": [site.url("/text")] })));
    assert_eq!(r[0]["error"]["kind"], "not_html");
}

#[test]
fn robots_txt_is_obeyed_when_asked_and_fetched_once() {
    let site = Site::start();
    site.set_robots("User-agent: *\nDisallow: /page/secret\n");
    let c = scraper();
    let urls = [site.url("/page/secret"), site.url("/page/open"), site.url("/page/secret2"), site.url("/page/o2")];
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": urls, "options": {"robots": true} })));
    assert_eq!(r[0]["error"]["kind"], "robots", "{}", r[0]);
    assert_eq!(r[1]["page"]["title"], "Page open");
    assert_eq!(r[2]["error"]["kind"], "robots");
    assert_eq!(r[3]["page"]["title"], "Page o2");
    assert_eq!(site.hits("/robots.txt"), 1);
    assert_eq!(site.hits("/page/secret"), 0);
    // Without the option robots.txt is not consulted.
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": [site.url("/page/secret")] })));
    assert_eq!(r[0]["page"]["title"], "Page secret");
    // The operator can make it mandatory.
    let strict =
        Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true"), ("FANOUT_RESPECT_ROBOTS", "true")]);
    let r = results(&post_json(&strict.url("/scrape"), &json!({ "urls": [site.url("/page/secret")] })));
    assert_eq!(r[0]["error"]["kind"], "robots");
}

#[test]
fn the_user_agent_is_configurable() {
    let site = Site::start();
    let c = scraper();
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": [site.url("/echo-ua")] })));
    assert!(r[0]["page"]["title"].as_str().unwrap().starts_with("fanout-scrape/"), "{}", r[0]);
    let body = json!({ "urls": [site.url("/echo-ua")], "options": {"user_agent": "mybot/2.0 (+ops@example.com)"} });
    let r = results(&post_json(&c.url("/scrape"), &body));
    assert_eq!(r[0]["page"]["title"], "mybot/2.0 (+ops@example.com)");
    let c =
        Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true"), ("FANOUT_USER_AGENT", "acme-crawler/1")]);
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": [site.url("/echo-ua")] })));
    assert_eq!(r[0]["page"]["title"], "acme-crawler/1");
}

#[test]
fn concurrency_is_bounded_in_total_and_per_host() {
    let site = Site::start();
    let c = scraper();
    let port = site.url("").rsplit(':').next().unwrap().to_owned();
    // Two host names for the one fixture site: 127.0.0.1 and localhost.
    let urls: Vec<String> = (0..24)
        .map(|i| {
            let host = if i % 2 == 0 { "127.0.0.1" } else { "localhost" };
            format!("http://{host}:{port}/page/{i}?delay_ms=150")
        })
        .collect();
    let body = json!({ "urls": urls, "options": {"concurrency": 5, "per_host": 3} });
    let r = results(&post_json(&c.url("/scrape"), &body));
    assert!(r.iter().all(|r| r["page"]["status"] == 200), "{r:?}");
    let peak = site.peak();
    assert!(peak <= 5, "peak {peak} over the total limit");
    assert!(peak > 3, "peak {peak}: the second host should run beside the first");

    let site = Site::start();
    let urls: Vec<String> = (0..12).map(|i| site.url(&format!("/page/{i}?delay_ms=150"))).collect();
    let body = json!({ "urls": urls, "options": {"concurrency": 10, "per_host": 2} });
    results(&post_json(&c.url("/scrape"), &body));
    assert_eq!(site.peak(), 2, "one host never gets more than per_host at once");
}

#[test]
fn the_batch_deadline_turns_late_pages_into_timeouts() {
    let site = Site::start();
    let c = scraper();
    let urls = [site.url("/page/quick"), site.url("/hang"), site.url("/page/late?delay_ms=3000")];
    let started = std::time::Instant::now();
    let body = json!({ "urls": urls, "options": {"deadline_ms": 700, "timeout_ms": 2000} });
    let r = results(&post_json(&c.url("/scrape"), &body));
    assert!(started.elapsed() < std::time::Duration::from_millis(1800), "{:?}", started.elapsed());
    assert_eq!(r[0]["page"]["title"], "Page quick");
    for late in &r[1..] {
        assert_eq!(late["error"]["kind"], "timeout", "{late}");
        assert!(late["error"]["message"].as_str().unwrap().contains("deadline of 700 ms"), "{late}");
    }
}

#[test]
fn unresolvable_hosts_are_dns_errors() {
    // A 64-character label is refused by the resolver itself: no query leaves the machine.
    let c = scraper();
    let host = "a".repeat(64);
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": [format!("http://{host}.example/")] })));
    assert_eq!(r[0]["error"]["kind"], "dns", "{}", r[0]);
}

#[test]
fn options_over_the_operator_limits_are_400() {
    let site = Site::start();
    let c = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true"), ("FANOUT_SCRAPE_CONCURRENCY", "20")]);
    let body = json!({ "urls": [site.url("/page/1")], "options": {"concurrency": 50} });
    let resp = post_json(&c.url("/scrape"), &body);
    assert_eq!(resp.status, 400, "{}", resp.text());
    let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(msg.contains("options.concurrency=50") && msg.contains("FANOUT_SCRAPE_CONCURRENCY"), "{msg}");
    assert_eq!(site.hits("/page/1"), 0);
}

#[test]
fn json_ld_blocks_are_parsed_and_bad_ones_reported() {
    let site = Site::start();
    site.put(
        "ld.html",
        "text/html",
        r#"<title>LD</title><script type="application/ld+json">{"@type": "Product", "sku": "A1"}</script>
           <script type="application/ld+json">{oops</script>"#,
    );
    let c = scraper();
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": [site.url("/files/ld.html")] })));
    assert_eq!(r[0]["page"]["json_ld"], json!([{"@type": "Product", "sku": "A1"}]), "{}", r[0]);
    assert_eq!(r[0]["page"]["json_ld_errors"].as_array().unwrap().len(), 1);
}

#[test]
fn robots_txt_redirects_are_followed() {
    let site = Site::start();
    site.redirect_robots("/files/moved-robots.txt");
    site.put("moved-robots.txt", "text/plain", "User-agent: *\nDisallow: /page/no\n");
    let c = scraper();
    let urls = [site.url("/page/no"), site.url("/page/yes")];
    let r = results(&post_json(&c.url("/scrape"), &json!({ "urls": urls, "options": {"robots": true} })));
    assert_eq!(r[0]["error"]["kind"], "robots", "{}", r[0]);
    assert_eq!(r[1]["page"]["title"], "Page yes");
}

#[test]
fn the_page_time_limit_covers_redirects() {
    let site = Site::start();
    let c = scraper();
    // Each hop answers in 250 ms, under the limit; the four together do not.
    let body = json!({ "urls": [site.url("/redirect/3?delay_ms=250&to=/page/x")], "options": {"timeout_ms": 600} });
    let r = results(&post_json(&c.url("/scrape"), &body));
    assert_eq!(r[0]["error"]["kind"], "timeout", "{}", r[0]);
    assert!(r[0]["error"]["message"].as_str().unwrap().contains("within 600 ms"), "{}", r[0]);
}

#[test]
fn hostile_markup_is_answered_not_fatal() {
    let site = Site::start();
    let nested = format!("<title>deep</title><h1>{}x", "<b>".repeat(1_000_000));
    site.put("nested.html", "text/html", nested);
    site.put(
        "script.html",
        "text/html",
        r#"<script type="application/ld+json">{"d": "a<b", "e": "<p>x</p>"}</script><p>after</p>"#,
    );
    let c = scraper();
    let urls = [site.url("/files/nested.html"), site.url("/files/script.html"), site.url("/page/ok")];
    let body = json!({ "urls": urls, "select": {"b": {"css": "h1 b b", "all": true}} });
    let r = results(&post_json(&c.url("/scrape"), &body));
    assert_eq!(r[0]["page"]["title"], "deep", "{}", r[0]["page"]["title"]);
    assert!(!r[0]["page"]["warnings"].as_array().unwrap().is_empty());
    assert_eq!(r[1]["page"]["json_ld"], json!([{"d": "a<b", "e": "<p>x</p>"}]));
    assert_eq!(r[2]["page"]["title"], "Page ok");
}

#[test]
fn hostile_pages_cannot_make_an_answer_larger_than_its_limits() {
    // 6,000 nested divs around 64 KiB of text: `div` with `all` would be 393 MB for one page.
    let site = Site::start();
    let worker = scraper();
    let urls: Vec<String> = (0..20).map(|_| site.url("/nested/6000")).collect();
    let job = json!({"urls": urls, "select": {"d": {"css": "div", "all": true}}, "options": {"concurrency": 4}});
    let resp = post_json(&worker.url("/scrape"), &job);
    assert_eq!(resp.status, 200);
    assert!(resp.body.len() < 20 * 1024 * 1024 + 100_000, "{} bytes", resp.body.len());
    let v = resp.json();
    for r in v["results"].as_array().unwrap() {
        let page = &r["page"];
        assert!(
            page["warnings"].as_array().unwrap().iter().any(|w| w.as_str().unwrap().contains("max_output_bytes")),
            "{page}"
        );
        assert!(serde_json::to_vec(&page["select"]).unwrap().len() <= 1024 * 1024);
    }
    // Over the operator's limit, the option is refused up front.
    let over = json!({"urls": [site.url("/nested/1")], "options": {"max_output_bytes": 100_000_000}});
    assert_eq!(post_json(&worker.url("/scrape"), &over).status, 400);

    // Through the coordinator, a batch of such pages fits in the answer it will read.
    let coordinator = Component::serve(
        "coordinator",
        &[("FANOUT_SCRAPE_URL", &worker.url("/scrape")), ("FANOUT_MAX_WORKER_RESPONSE_BYTES", "4000000")],
    );
    let urls: Vec<String> = (0..50).map(|_| site.url("/nested/3000")).collect();
    let job = json!({"urls": urls, "batch_size": 25, "select": {"d": {"css": "div", "all": true}}});
    let resp = post_json(&coordinator.url("/coordinate/scrape"), &job);
    assert_eq!(resp.status, 200);
    let v = resp.json();
    assert_eq!(v["summary"]["pages"], 50, "{}", v["summary"]);
    assert_eq!(v["summary"]["batches_failed"], 0, "{}", v["summary"]);
}

/// A page whose body breaks off is one error result with a short message, whatever the host's error says
/// (with `RUST_BACKTRACE=1`, as the test kit runs wasmtime, it carries the host's backtrace), and the
/// batch's other pages are unharmed.
#[test]
fn a_body_that_breaks_off_is_a_short_error() {
    let site = Site::start();
    let c = scraper();
    let job = json!({"urls": [site.url("/cut/200000"), site.url("/page/1")]});
    let resp = post_json(&c.url("/scrape"), &job);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    let error = &v["results"][0]["error"];
    let message = error["message"].as_str().unwrap_or_else(|| panic!("{v}"));
    assert!(message.len() <= 300 && !message.contains('\n'), "{} bytes: {message}", message.len());
    assert_eq!(v["results"][1]["page"]["title"], "Page 1");
}

/// A caller that goes away mid-batch stops the batch: under wasmtime serve and spin up the runtime
/// drops the handler when the caller's connection closes, and where a host or proxy does not, the
/// worker writes a space (which JSON readers skip) after a second without output, and stops when
/// that write fails.
#[test]
fn a_batch_whose_caller_went_away_stops_fetching() {
    use std::io::{Read, Write};
    let site = Site::start();
    let c = scraper();
    let urls: Vec<String> = (0..40).map(|i| site.url(&format!("/page/gone-{i}?delay_ms=400"))).collect();
    // Page 0 is slow, so that a JSON answer holds every other result back.
    let mut urls = urls;
    urls[0] = site.url("/page/gone-0?delay_ms=30000");
    let body = serde_json::to_vec(&json!({"urls": urls, "options": {"concurrency": 2, "per_host": 2}})).unwrap();
    let addr = c.url("/scrape").trim_start_matches("http://").split('/').next().unwrap().to_owned();
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    let head = format!(
        "POST /scrape HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(&body).unwrap();
    let mut first = [0u8; 64];
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let _ = conn.read(&mut first).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    drop(conn);
    let fetched = |site: &Site| (1..40).filter(|i| site.hits(&format!("/page/gone-{i}")) > 0).count();
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let when_noticed = fetched(&site);
    std::thread::sleep(std::time::Duration::from_millis(3000));
    let later = fetched(&site);
    assert!(when_noticed < 20, "{when_noticed} pages fetched 2.5 s after the caller left: it was not noticed");
    assert_eq!(later, when_noticed, "pages fetched after the caller was gone");
}
