//! What a run measures: the full suite, or smaller sizes for development.

/// Pages in flight in total in every scrape run, spread over the worker calls.
pub const IN_FLIGHT: usize = 50;
/// The latency of the slow scrape runs: with [`IN_FLIGHT`] pages at once, the bound is 1,000 pages/s.
pub const SLOW_MS: u64 = 50;
/// Pages in flight on each worker replica in the replica-scaling runs (`FANOUT_SCRAPE_CONCURRENCY`).
pub const PER_REPLICA: usize = 8;
/// The fixture pages' size, about that of a real article page.
pub const PAGE_BYTES: usize = 40_000;

/// The sizes and settings of one run of the suite.
pub struct Plan {
    pub quick: bool,
    /// Rows of each transform job, smallest first: the memory chart's x axis.
    pub job_rows: Vec<usize>,
    /// The coordinator's worker concurrency for each transform job.
    pub concurrency: Vec<usize>,
    /// Pages of each scrape, run at 0 ms and at [`SLOW_MS`].
    pub scrape_pages: Vec<usize>,
    /// Pages of the scrape spread over 1, 2, 4 and 8 worker calls at [`SLOW_MS`].
    pub split_pages: usize,
    pub split_calls: Vec<usize>,
    /// Pages of the scrape through 1, 2 and 4 worker replicas behind HAProxy at [`SLOW_MS`].
    pub replica_pages: usize,
    pub replicas: Vec<usize>,
    /// Rows of each durable transform job, and pages of the durable scrape.
    pub durable_rows: Vec<usize>,
    /// Runs of each durable transform size (the report gives the median).
    pub durable_repeats: usize,
    pub durable_pages: usize,
}

impl Plan {
    /// Every benchmark the issues asked for, at their sizes.
    pub fn full() -> Plan {
        Plan {
            quick: false,
            job_rows: vec![1_000_000, 2_000_000, 5_000_000],
            concurrency: vec![1, 2, 4, 8],
            scrape_pages: vec![1_000, 10_000],
            split_pages: 10_000,
            split_calls: vec![1, 2, 4, 8],
            replica_pages: 5_000,
            replicas: vec![1, 2, 4],
            durable_rows: vec![1_000_000, 5_000_000],
            durable_repeats: crate::durable::REPEATS,
            durable_pages: 10_000,
        }
    }

    /// The same benchmarks at sizes that take under two minutes on two cores.
    pub fn quick() -> Plan {
        Plan {
            quick: true,
            job_rows: vec![200_000, 400_000, 1_000_000],
            concurrency: vec![1, 4],
            scrape_pages: vec![1_000],
            split_pages: 1_000,
            split_calls: vec![1, 2, 4, 8],
            replica_pages: 1_000,
            replicas: vec![1, 2, 4],
            durable_rows: vec![200_000, 1_000_000],
            durable_repeats: 1,
            durable_pages: 2_000,
        }
    }
}
