//! Runs one batch: every URL is checked, scheduled within the total and
//! per-host limits, and handed to its [`Results`] as soon as it is done; when
//! the deadline passes, what is still running or waiting becomes a `timeout` error.

use crate::page::{self, Context};
use fanout::egress::Refusal;
use fanout::framing::Framer;
use fanout::html::ExtractOptions;
use fanout::schedule::HostQueue;
use fanout::scrape::{FailureKind, FetchSettings, ItemError, Outcome, PageResult};
use fanout_spin::{sleep, timeout, BodyWriter};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use url::Url;

/// The most result bytes held back for ordering before new fetches wait.
const MAX_WAITING_BYTES: usize = 8 * 1024 * 1024;

/// Where a batch's results go, one per URL, as each is done.
#[allow(async_fn_in_trait)]
pub trait Results {
    /// Takes the result of URL `index`; false when nobody wants more (the caller went away).
    async fn push(&mut self, result: PageResult) -> bool;
    /// Whether anybody still wants the results, found out by sending them
    /// something harmless when nothing else has been sent for a while.
    async fn heartbeat(&mut self) -> bool;
    /// Result bytes held back, waiting for an earlier one.
    fn waiting_bytes(&self) -> usize;
}

/// Results streamed to the caller as the framing allows.
pub struct Streamed<'b> {
    /// The answer's framing.
    pub framer: Framer,
    /// The answer's body.
    pub body: &'b mut BodyWriter,
}

impl Results for Streamed<'_> {
    async fn push(&mut self, result: PageResult) -> bool {
        let bytes = self.framer.push(result.index, &result);
        self.body.write(bytes).await
    }

    /// A space: whitespace between JSON tokens (or before a line's value), which
    /// every reader skips; a write to a caller that has gone away fails.
    async fn heartbeat(&mut self) -> bool {
        self.body.write(b" ".to_vec()).await
    }

    fn waiting_bytes(&self) -> usize {
        self.framer.waiting_bytes()
    }
}

/// How long a batch goes without writing anything before it checks that its caller is still there.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Scrapes `urls` and gives one result per URL to `results`; stops early only if nobody wants more.
pub async fn run(settings: &FetchSettings, extract: &ExtractOptions, urls: Vec<String>, results: &mut impl Results) {
    let started = Instant::now();
    let ctx = Context::new(settings, extract);
    let mut targets: Vec<Option<Url>> = Vec::with_capacity(urls.len());
    let mut refused = Vec::new();
    for (index, url) in urls.iter().enumerate() {
        match settings.egress.check(url) {
            Ok(target) => targets.push(Some(target)),
            Err(refusal) => {
                targets.push(None);
                let err = match refusal {
                    Refusal::Invalid(m) => ItemError::new(FailureKind::InvalidUrl, m),
                    Refusal::Blocked(m) => ItemError::new(FailureKind::Blocked, m),
                };
                refused.push((index, err));
            }
        }
    }
    for (index, err) in refused {
        if !emit(results, index, &urls[index], Outcome::Error(err)).await {
            return;
        }
    }
    let mut queue = HostQueue::new(
        targets.iter().enumerate().filter_map(|(i, t)| Some((i, t.as_ref()?.host_str()?.to_owned()))),
        settings.concurrency,
        settings.per_host,
    );
    let mut running = FuturesUnordered::new();
    let mut in_flight = BTreeSet::new();
    // With a delay: when the next request to each host may start. The first waits one delay
    // too, so that batches of one host run one after another keep the spacing.
    let mut next_start: HashMap<String, Instant> = HashMap::new();
    loop {
        // Results waiting for a slow earlier page are held in memory (JSON keeps
        // input order): past a bound, start nothing new until they drain. With
        // nothing running, the earliest waiting page, the one holding the
        // others back, is what starts.
        while results.waiting_bytes() < MAX_WAITING_BYTES || in_flight.is_empty() {
            let Some((index, host)) = queue.start_next() else {
                break;
            };
            let target = targets[index].clone().expect("only fetchable URLs are queued");
            in_flight.insert(index);
            let ctx = &ctx;
            let wait = (!settings.delay.is_zero()).then(|| {
                let now = Instant::now();
                let slot = next_start.entry(host.clone()).or_insert(now + settings.delay);
                let at = (*slot).max(now);
                *slot = at + settings.delay;
                at - now
            });
            running.push(async move {
                if let Some(wait) = wait {
                    sleep(wait).await;
                }
                (index, host, page::scrape(ctx, target).await)
            });
        }
        let left = settings.deadline.saturating_sub(started.elapsed());
        let wait = left.min(HEARTBEAT);
        match timeout(wait, running.next()).await {
            Ok(Some((index, host, outcome))) => {
                queue.finish(&host);
                in_flight.remove(&index);
                let outcome = match outcome {
                    Ok(page) => Outcome::Page(Box::new(page)),
                    Err(err) => Outcome::Error(err),
                };
                if !emit(results, index, &urls[index], outcome).await {
                    return;
                }
            }
            Ok(None) => break,
            // A results writer that holds results back (JSON keeps input order) writes nothing for a
            // while: a caller that went away is found out here, and the fetches stop.
            Err(_) if wait < left => {
                if !results.heartbeat().await {
                    return;
                }
            }
            Err(_) => {
                // Dropping the running fetches cancels them.
                drop(running);
                let mut late: Vec<usize> = in_flight.into_iter().chain(queue.drain_waiting()).collect();
                late.sort_unstable();
                let message = format!(
                    "the batch deadline of {} ms passed before this page was done",
                    settings.deadline.as_millis()
                );
                for index in late {
                    let err = ItemError {
                        elapsed_ms: Some(started.elapsed().as_millis() as u64),
                        ..ItemError::new(FailureKind::Timeout, message.clone())
                    };
                    if !emit(results, index, &urls[index], Outcome::Error(err)).await {
                        return;
                    }
                }
                break;
            }
        }
    }
}

async fn emit(results: &mut impl Results, index: usize, url: &str, outcome: Outcome) -> bool {
    results.push(PageResult { index, url: url.to_owned(), outcome }).await
}
