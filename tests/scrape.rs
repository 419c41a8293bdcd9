//! The scrape worker, through the real component, against the fixture site.

use fanout_testkit::client::{get, post_json};
use fanout_testkit::component::Component;
use fanout_testkit::site::Site;
use serde_json::json;

fn scraper() -> Component {
    Component::serve(
        "scrape",
        &[
            ("FANOUT_ALLOW_PRIVATE_HOSTS", "true"),
            ("FANOUT_FETCH_TIMEOUT_MS", "2000"),
        ],
    )
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
fn private_hosts_are_blocked_unless_the_operator_allows_them() {
    let site = Site::start();
    let c = Component::serve("scrape", &[]);
    let resp = get(&c.url(&format!("/scrape?url={}", site.url("/page/1"))));
    assert_eq!(resp.status, 200);
    let r = &resp.json()["results"][0];
    assert_eq!(r["error"]["kind"], "blocked", "{r}");
    assert_eq!(site.hits("/page/1"), 0, "a blocked URL must not be fetched");
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
    assert_eq!(
        page["select"],
        json!({"heading": "Heading s", "items": ["/page/s-next"]})
    );
    assert_eq!(page["links"], json!([site.url("/page/s-next")]));
    assert_eq!(page["lang"], "en");
}

#[test]
fn an_invalid_selector_is_a_400_before_any_fetch() {
    let site = Site::start();
    let c = scraper();
    let body = json!({"urls": [site.url("/page/1")], "select": {"price": "span:first-child"}});
    let resp = post_json(&c.url("/scrape"), &body);
    assert_eq!(resp.status, 400, "{}", resp.text());
    let msg = resp.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(
        msg.starts_with("select.price: invalid CSS selector"),
        "{msg}"
    );
    assert_eq!(site.hits("/page/1"), 0);
}

#[test]
fn failed_fetches_are_retried_and_attempts_reported() {
    let site = Site::start();
    let c = Component::serve(
        "scrape",
        &[
            ("FANOUT_ALLOW_PRIVATE_HOSTS", "true"),
            ("FANOUT_FETCH_ATTEMPTS", "3"),
        ],
    );
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let urls = [
        site.url("/flaky/p/2"),
        site.url("/status/503"),
        site.url("/status/404"),
        format!("http://{dead}/"),
    ];
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
