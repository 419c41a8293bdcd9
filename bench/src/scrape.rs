//! Scrape throughput: fixture pages of 40 KB served at once or after a fixed
//! latency, standard fields only, with [`IN_FLIGHT`] pages in flight in total.
//! At a latency the bound is in-flight / latency; at 0 ms the job is bound by
//! CPU instead. Each run has fresh runtime processes. The replica runs put
//! 1, 2 or 4 scrape workers behind HAProxy, each limited to [`PER_REPLICA`]
//! pages in flight: the bound grows with the replicas.

use crate::measure::{describe, summary, Measured, Proc};
use crate::plan::{Plan, IN_FLIGHT, PAGE_BYTES, PER_REPLICA, SLOW_MS};
use fanout_testkit::balancer::Balancer;
use fanout_testkit::client::{post_json, request_counted};
use fanout_testkit::component::Component;
use fanout_testkit::site::Site;
use serde_json::json;
use std::time::Instant;

/// The worker calls the coordinator makes at once in the runs at each latency.
const CALLS: usize = 2;

/// How the pages were asked for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// One `POST /scrape` call to the worker, all pages in flight in it.
    Direct,
    /// `POST /coordinate/scrape`, the pages in flight spread over this many worker calls at once.
    Coordinated { calls: usize },
    /// `POST /coordinate/scrape` to this many worker replicas behind HAProxy, a call each at once,
    /// [`PER_REPLICA`] pages in flight in each.
    Replicas { replicas: usize },
}

pub struct ScrapeRun {
    pub pages: usize,
    pub latency_ms: u64,
    pub route: Route,
    pub secs: f64,
    pub procs: Vec<Proc>,
}

impl ScrapeRun {
    pub fn pages_per_sec(&self) -> f64 {
        self.pages as f64 / self.secs
    }

    /// The pages in flight at once.
    pub fn in_flight(&self) -> usize {
        match self.route {
            Route::Direct => IN_FLIGHT,
            Route::Coordinated { calls } => IN_FLIGHT / calls * calls,
            Route::Replicas { replicas } => replicas * PER_REPLICA,
        }
    }

    /// The most pages a second the latency allows, where there is one.
    pub fn bound(&self) -> Option<f64> {
        (self.latency_ms > 0).then(|| self.in_flight() as f64 * 1000.0 / self.latency_ms as f64)
    }

    pub fn label(&self) -> String {
        match self.route {
            Route::Direct => format!("one /scrape call, {} at once", self.in_flight()),
            Route::Coordinated { calls: 1 } => format!("coordinator, 1 call × {IN_FLIGHT}"),
            Route::Coordinated { calls } => format!("coordinator, {calls} calls × {}", IN_FLIGHT / calls),
            Route::Replicas { replicas: 1 } => format!("1 replica × {PER_REPLICA}, via HAProxy"),
            Route::Replicas { replicas } => format!("{replicas} replicas × {PER_REPLICA}, via HAProxy"),
        }
    }
}

pub struct Scrapes {
    /// Each page count at 0 ms and at [`SLOW_MS`], directly and through the coordinator.
    pub by_latency: Vec<ScrapeRun>,
    /// The pages in flight spread over more or fewer worker calls, at [`SLOW_MS`].
    pub split: Vec<ScrapeRun>,
    /// 1, 2, 4 worker replicas behind HAProxy at [`SLOW_MS`] (empty without HAProxy).
    pub replicas: Vec<ScrapeRun>,
}

pub fn measure(plan: &Plan, site: &Site) -> Scrapes {
    let mut by_latency = Vec::new();
    for &pages in &plan.scrape_pages {
        for latency_ms in [0, SLOW_MS] {
            println!("scrape: {pages} pages of {PAGE_BYTES} bytes, {latency_ms} ms latency, {IN_FLIGHT} in flight");
            for route in [Route::Direct, Route::Coordinated { calls: CALLS }] {
                by_latency.push(report(run(site, pages, latency_ms, route)));
            }
        }
    }
    println!(
        "scrape: {} pages, {SLOW_MS} ms latency, {IN_FLIGHT} in flight spread over worker calls",
        plan.split_pages
    );
    let split = plan
        .split_calls
        .iter()
        .map(|&calls| report(run(site, plan.split_pages, SLOW_MS, Route::Coordinated { calls })))
        .collect();
    let replicas = if fanout_testkit::balancer::haproxy().is_some() {
        println!(
            "scrape: {} pages, {SLOW_MS} ms latency, through worker replicas behind HAProxy, {PER_REPLICA} in flight each",
            plan.replica_pages
        );
        plan.replicas
            .iter()
            .map(|&replicas| report(run(site, plan.replica_pages, SLOW_MS, Route::Replicas { replicas })))
            .collect()
    } else {
        println!("scrape: the replica runs skipped: no HAProxy (scripts/setup.sh installs it)");
        Vec::new()
    };
    Scrapes { by_latency, split, replicas }
}

fn report(run: ScrapeRun) -> ScrapeRun {
    let bound =
        run.bound().map_or(String::new(), |b| format!(", {:.2} of the {b:.0} pages/s bound", run.pages_per_sec() / b));
    println!(
        "  {:<30} {:6.2} s = {:5.0} pages/s{bound} | {}",
        run.label(),
        run.secs,
        run.pages_per_sec(),
        describe(&run.procs)
    );
    run
}

fn run(site: &Site, pages: usize, latency_ms: u64, route: Route) -> ScrapeRun {
    let urls: Vec<String> =
        (0..pages).map(|i| site.url(&format!("/page/{i}?pad={PAGE_BYTES}&delay_ms={latency_ms}"))).collect();
    if let Route::Replicas { replicas } = route {
        return run_replicas(&urls, latency_ms, replicas);
    }
    let scraper = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let (secs, procs) = match route {
        Route::Direct => {
            let job = json!({"urls": urls, "options": {"concurrency": IN_FLIGHT, "per_host": IN_FLIGHT}});
            let measured = Measured::start("worker", &scraper);
            let started = Instant::now();
            let response = post_json(&scraper.url("/scrape"), &job);
            let secs = started.elapsed().as_secs_f64();
            // Checked after the clock stops: parsing the answer is not the component's time.
            let answer = response.json();
            let results = answer["results"].as_array().expect("the answer lists its results");
            let ok = results.iter().filter(|r| r["page"].is_object()).count();
            assert_eq!(ok, pages, "every page should have been scraped");
            (secs, vec![measured.end()])
        }
        Route::Coordinated { calls } => {
            let per_call = IN_FLIGHT / calls;
            let coordinator = Component::serve("coordinator", &[("FANOUT_SCRAPE_URL", &scraper.url("/scrape"))]);
            // Two batches per call: a batch's last pages leave slots idle until the next batch starts.
            // One host (the fixture site): per_host, which holds for the whole job, allows every page in flight.
            let job = json!({"urls": urls, "batch_size": pages / (2 * calls), "concurrency": calls,
                "options": {"concurrency": per_call, "per_host": per_call * calls}});
            let measured = [Measured::start("coordinator", &coordinator), Measured::start("worker", &scraper)];
            let secs = coordinated(&coordinator, &job, pages);
            (secs, measured.iter().map(Measured::end).collect())
        }
        Route::Replicas { .. } => unreachable!("run_replicas"),
    };
    ScrapeRun { pages, latency_ms, route, secs, procs }
}

/// The pages through `replicas` scrape workers behind HAProxy, each allowed [`PER_REPLICA`] pages in flight,
/// the coordinator making one call a replica at once.
fn run_replicas(urls: &[String], latency_ms: u64, replicas: usize) -> ScrapeRun {
    let limit = PER_REPLICA.to_string();
    let env = [("FANOUT_ALLOW_PRIVATE_HOSTS", "true"), ("FANOUT_SCRAPE_CONCURRENCY", limit.as_str())];
    let workers: Vec<Component> = (0..replicas).map(|_| Component::serve("scrape", &env)).collect();
    let backends: Vec<String> = workers.iter().map(|w| w.url("").trim_start_matches("http://").to_owned()).collect();
    let balancer = Balancer::start("the replica runs", &backends).expect("HAProxy was found");
    let coordinator = Component::serve(
        "coordinator",
        &[("FANOUT_SCRAPE_URL", &balancer.url("/scrape")), ("FANOUT_SCRAPE_CONCURRENCY", limit.as_str())],
    );
    // Four batches a call: a batch's last pages leave slots idle until the next batch starts.
    let job = json!({"urls": urls, "batch_size": urls.len() / (4 * replicas), "concurrency": replicas,
        "options": {"concurrency": PER_REPLICA, "per_host": PER_REPLICA * replicas}});
    let mut measured = vec![Measured::start("coordinator", &coordinator)];
    measured.extend(workers.iter().map(|w| Measured::start("worker", w)));
    let secs = coordinated(&coordinator, &job, urls.len());
    let procs = measured.iter().map(Measured::end).collect();
    ScrapeRun { pages: urls.len(), latency_ms, route: Route::Replicas { replicas }, secs, procs }
}

/// Seconds `coordinator` takes to answer scrape job `job`, which must scrape all its `pages`.
fn coordinated(coordinator: &Component, job: &serde_json::Value, pages: usize) -> f64 {
    let started = Instant::now();
    let answer = request_counted(
        "POST",
        &coordinator.url("/coordinate/scrape"),
        &[("content-type", "application/json")],
        job.to_string().as_bytes(),
    )
    .expect("the coordinator answers");
    let secs = started.elapsed().as_secs_f64();
    let s = summary(&answer);
    assert_eq!(s["pages"].as_u64(), Some(pages as u64), "{s}");
    secs
}
