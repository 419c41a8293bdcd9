//! Durable jobs (`/jobs`), side by side with the streaming coordinator in the
//! same run: the `vat` job over rows already in the bucket, from submit to
//! manifest, against `/coordinate/transform` in source-URL mode reading the
//! same object; and a scrape of pages at [`SLOW_MS`] against its latency bound,
//! beside `/coordinate/scrape` with the same job.
//!
//! The durable runs have every component under `-W max-memory-size=67108864`
//! (64 MiB per instance), and record the longest tick, the slowest worker
//! call, and the largest answer any route gave, which a managed host bounds.

use crate::measure::{Measured, Proc, MB};
use crate::plan::{IN_FLIGHT, PAGE_BYTES, SLOW_MS};
use anyhow::{ensure, Context, Result};
use fanout::store::{Bucket, Cond, Op, S3Config};
use fanout_testkit::client::{get, request, request_counted};
use fanout_testkit::component::{self, Component};
use fanout_testkit::s3::{S3Server, ACCESS_KEY_ID, BUCKET, SECRET_ACCESS_KEY};
use fanout_testkit::site::Site;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Every durable component's memory limit.
pub const MEMORY_FLAG: &str = "-Wmax-memory-size=67108864";
/// Worker calls at once, in both routes.
pub const CONCURRENCY: usize = 8;
/// Runs of each transform size, both routes each time: the bucket's server
/// shares the machine's two cores, and one run's ratio varies by a third.
pub const REPEATS: usize = 3;

/// What one durable job's ticks were like.
pub struct Ticks {
    pub count: usize,
    pub longest_secs: f64,
    pub largest_answer: usize,
    /// The slowest worker call, as the job's state records it.
    pub slowest_call_ms: u64,
}

/// One job size, both routes: the run with the median ratio of [`REPEATS`].
pub struct DurableTransform {
    pub rows: usize,
    /// Every run's ratio, in the order run.
    pub ratios: Vec<f64>,
    pub csv_bytes: usize,
    pub units: u64,
    pub coordinate_secs: f64,
    pub coordinate_procs: Vec<Proc>,
    pub jobs_secs: f64,
    /// The coordinator and the worker, then the bucket's server.
    pub jobs_procs: Vec<Proc>,
    pub ticks: Ticks,
}

impl DurableTransform {
    pub fn ratio(&self) -> f64 {
        self.jobs_secs / self.coordinate_secs
    }

    /// The coordinator's CPU time over the workers' in the durable run.
    pub fn coordinator_share(&self) -> f64 {
        self.jobs_procs[0].cpu_secs / self.jobs_procs[1].cpu_secs.max(1e-9)
    }
}

pub struct DurableScrape {
    pub pages: usize,
    pub batch_size: usize,
    /// The same job through `/coordinate/scrape`.
    pub coordinate_secs: f64,
    pub secs: f64,
    pub procs: Vec<Proc>,
    pub ticks: Ticks,
}

impl DurableScrape {
    pub fn pages_per_sec(&self) -> f64 {
        self.pages as f64 / self.secs
    }

    pub fn bound(&self) -> f64 {
        IN_FLIGHT as f64 * 1000.0 / SLOW_MS as f64
    }

    pub fn coordinate_pages_per_sec(&self) -> f64 {
        self.pages as f64 / self.coordinate_secs
    }
}

pub struct Durable {
    pub transforms: Vec<DurableTransform>,
    pub scrape: DurableScrape,
}

struct Store {
    server: S3Server,
    bucket: Bucket,
}

impl Store {
    fn start() -> Store {
        let server = S3Server::start();
        let bucket = Bucket::new(&S3Config {
            endpoint: Some(server.endpoint().parse().expect("the server's endpoint is a URL")),
            bucket: BUCKET.into(),
            region: "us-east-1".into(),
            access_key_id: ACCESS_KEY_ID.into(),
            secret_access_key: SECRET_ACCESS_KEY.into(),
        })
        .expect("a valid bucket");
        Store { server, bucket }
    }

    fn sign(&self, op: &Op<'_>) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64;
        self.bucket.sign(op, Duration::from_secs(3600), now).url
    }

    fn object(&self, key: &str) -> Vec<u8> {
        get(&self.sign(&Op::Get { key, range: None })).body
    }
}

/// A worker and a coordinator wired to it and to the bucket, with `flags`.
fn bundle(store: &Store, worker: &str, private: &str, flags: &[&str]) -> (Component, Component) {
    let endpoint = store.server.endpoint();
    let w =
        Component::serve_with(worker, &[("FANOUT_PRIVATE_HOSTS", private), ("FANOUT_S3_ENDPOINT", &endpoint)], flags);
    let url = w.url(&format!("/{worker}"));
    let name = if worker == "scrape" { "FANOUT_SCRAPE_URL" } else { "FANOUT_TRANSFORM_URL" };
    let s3_env = store.server.coordinator_env(&store.server.endpoint());
    let mut env: Vec<(&str, &str)> =
        vec![(name, &url), ("FANOUT_PRIVATE_HOSTS", private), ("FANOUT_MAX_JOB_BYTES", "1000000000000")];
    env.extend(s3_env.iter().map(|(k, v)| (*k, v.as_str())));
    (w, Component::serve_with("coordinator", &env, flags))
}

pub fn measure(rows: &[usize], repeats: usize, scrape_pages: usize, site: &Site) -> Result<Durable> {
    let store = Store::start();
    let site_host = site.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let private = format!("{site_host},{}", store.server.host_port());
    let mut transforms = Vec::new();
    for &n in rows {
        let data = fanout_testkit::data::sales(n);
        let key = format!("bench/sales-{n}.csv");
        let put = request("PUT", &store.sign(&Op::Put { key: &key, cond: Cond::None }), &[], &data)?;
        ensure!(put.status == 200, "uploading {key}: {}", put.text());
        println!(
            "durable: vat preset, {n} rows, {:.1} MB of CSV in the bucket, concurrency {CONCURRENCY}, {repeats} runs",
            data.len() as f64 / MB
        );
        let mut runs =
            (0..repeats).map(|_| transform(&store, &private, n, data.len(), &key)).collect::<Result<Vec<_>>>()?;
        let ratios: Vec<f64> = runs.iter().map(DurableTransform::ratio).collect();
        runs.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        let median = runs.swap_remove(runs.len() / 2);
        println!(
            "  median ratio {:.2}x of {}",
            median.ratio(),
            ratios.iter().map(|r| format!("{r:.2}x")).collect::<Vec<_>>().join(", ")
        );
        transforms.push(DurableTransform { ratios, ..median });
    }
    let scrape = scrape(&store, &private, site, scrape_pages)?;
    Ok(Durable { transforms, scrape })
}

/// One run of each route over `key`, an object of `rows` rows and `csv_bytes` bytes.
fn transform(store: &Store, private: &str, rows: usize, csv_bytes: usize, key: &str) -> Result<DurableTransform> {
    // The streaming coordinator, source-URL mode, reading the same object through a presigned URL.
    let (worker, coordinator) = bundle(store, "transform", private, &[]);
    let measured = [Measured::start("coordinator", &coordinator), Measured::start("worker", &worker)];
    let source = store.sign(&Op::Get { key, range: None });
    let job = json!({"source": source, "spec": {"preset": "vat"}, "concurrency": CONCURRENCY});
    let started = Instant::now();
    let answer = request_counted(
        "POST",
        &coordinator.url("/coordinate/transform"),
        &[("content-type", "application/json")],
        job.to_string().as_bytes(),
    )?;
    let coordinate_secs = started.elapsed().as_secs_f64();
    let s = crate::measure::summary(&answer);
    ensure!(s["rows_in"].as_u64() == Some(rows as u64) && s["status"] == "complete", "{s}");
    let coordinate_procs: Vec<Proc> = measured.iter().map(Measured::end).collect();
    drop((worker, coordinator));

    // The durable job, every component within 64 MiB.
    let (worker, coordinator) = bundle(store, "transform", private, &[MEMORY_FLAG]);
    let weed_cpu = component::cpu_secs(store.server.pid());
    let measured = [Measured::start("coordinator", &coordinator), Measured::start("worker", &worker)];
    let job = json!({"source": format!("s3://{BUCKET}/{key}"), "spec": {"preset": "vat"}, "concurrency": CONCURRENCY});
    let started = Instant::now();
    let (status, ticks) = run_job(&coordinator, "/jobs/transform", &job)?;
    let jobs_secs = started.elapsed().as_secs_f64();
    let mut jobs_procs: Vec<Proc> = measured.iter().map(Measured::end).collect();
    jobs_procs.push(Proc { name: "bucket", peak_rss: 0, cpu_secs: component::cpu_secs(store.server.pid()) - weed_cpu });
    ensure!(status["status"] == "succeeded" && status["items"]["rows_in"] == rows as u64, "{status}");
    let ticks = Ticks { slowest_call_ms: slowest_call(store, &status), ..ticks };
    let run = DurableTransform {
        rows,
        ratios: Vec::new(),
        csv_bytes,
        units: status["units"]["total"].as_u64().unwrap_or(0),
        coordinate_secs,
        coordinate_procs,
        jobs_secs,
        jobs_procs,
        ticks,
    };
    println!(
        "  /coordinate/transform {:6.2} s | /jobs {:6.2} s = {:.2}x | {} ticks, longest {:.1} s, largest answer {} bytes, \
         slowest call {} ms | coordinator CPU {:.2} s = {:.1}% of the workers' {:.2} s | bucket CPU {:.2} s",
        run.coordinate_secs,
        run.jobs_secs,
        run.ratio(),
        run.ticks.count,
        run.ticks.longest_secs,
        run.ticks.largest_answer,
        run.ticks.slowest_call_ms,
        run.jobs_procs[0].cpu_secs,
        100.0 * run.coordinator_share(),
        run.jobs_procs[1].cpu_secs,
        run.jobs_procs[2].cpu_secs,
    );
    Ok(run)
}

fn scrape(store: &Store, private: &str, site: &Site, pages: usize) -> Result<DurableScrape> {
    println!("durable: scrape of {pages} pages of {PAGE_BYTES} bytes at {SLOW_MS} ms, {IN_FLIGHT} in flight");
    let (worker, coordinator) = bundle(store, "scrape", private, &[MEMORY_FLAG]);
    let urls: Vec<String> =
        (0..pages).map(|i| site.url(&format!("/page/{i}?pad={PAGE_BYTES}&delay_ms={SLOW_MS}"))).collect();
    // As the scrape benchmark's coordinated runs: two calls at once, half the pages in flight in each, two
    // batches a call (a batch's last pages leave slots idle until the next batch starts).
    let calls = 2;
    let per_call = IN_FLIGHT / calls;
    let batch_size = (pages / (2 * calls)).max(1);
    let job = json!({"urls": urls, "batch_size": batch_size, "concurrency": calls,
        "options": {"concurrency": per_call, "per_host": per_call}});
    let started = Instant::now();
    let answer = request(
        "POST",
        &coordinator.url("/coordinate/scrape"),
        &[("content-type", "application/json")],
        job.to_string().as_bytes(),
    )?;
    let coordinate_secs = started.elapsed().as_secs_f64();
    ensure!(answer.status == 200 && answer.json()["summary"]["pages"] == pages as u64, "{}", answer.text());
    let measured = [Measured::start("coordinator", &coordinator), Measured::start("worker", &worker)];
    let started = Instant::now();
    let (status, ticks) = run_job(&coordinator, "/jobs/scrape", &job)?;
    let secs = started.elapsed().as_secs_f64();
    ensure!(status["items"]["pages"] == pages as u64, "{status}");
    let ticks = Ticks { slowest_call_ms: slowest_call(store, &status), ..ticks };
    let procs = measured.iter().map(Measured::end).collect();
    let run = DurableScrape { pages, batch_size, coordinate_secs, secs, procs, ticks };
    println!(
        "  /coordinate/scrape {:6.2} s = {:5.0} pages/s | /jobs {:6.2} s = {:5.0} pages/s, {:.2} of the {:.0} pages/s bound | {} ticks, longest {:.1} s, slowest call {} ms",
        run.coordinate_secs,
        run.coordinate_pages_per_sec(),
        run.secs,
        run.pages_per_sec(),
        run.pages_per_sec() / run.bound(),
        run.bound(),
        run.ticks.count,
        run.ticks.longest_secs,
        run.ticks.slowest_call_ms
    );
    Ok(run)
}

/// Submits `job` to `route` and ticks it to its end, one tick at a time: its last status and its ticks.
fn run_job(coordinator: &Component, route: &str, job: &Value) -> Result<(Value, Ticks)> {
    let json = [("content-type", "application/json")];
    let made = request("POST", &coordinator.url(route), &json, job.to_string().as_bytes())?;
    ensure!(made.status == 201, "{route}: {}", made.text());
    let id = made.json()["id"].as_str().context("a job id")?.to_owned();
    let mut ticks = Ticks { count: 0, longest_secs: 0.0, largest_answer: made.body.len(), slowest_call_ms: 0 };
    loop {
        let started = Instant::now();
        let tick = request("POST", &coordinator.url(&format!("/jobs/{id}/tick")), &[], b"")?;
        ticks.longest_secs = ticks.longest_secs.max(started.elapsed().as_secs_f64());
        ticks.largest_answer = ticks.largest_answer.max(tick.body.len());
        ticks.count += 1;
        ensure!(tick.status == 200, "a tick failed (a trap answers 500): {}", tick.text());
        let status = tick.json();
        if status["finished"] == true {
            return Ok((status, ticks));
        }
    }
}

/// The slowest worker call of a finished job, from its state.
fn slowest_call(store: &Store, status: &Value) -> u64 {
    let key = format!("jobs/{}/state.json", status["id"].as_str().unwrap_or_default());
    serde_json::from_slice::<Value>(&store.object(&key)).ok().and_then(|s| s["slowest_call_ms"].as_u64()).unwrap_or(0)
}
