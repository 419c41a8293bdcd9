//! How worker outputs are merged back into one answer, in input order.
//!
//! A worker invocation that failed after its retries still accounts for every
//! item it held: each becomes an error record naming the failure, so nothing
//! given to the coordinator goes missing from its answer.

use crate::plan::CsvChunk;
use crate::scrape::{FailureKind, ItemError, Outcome, PageResult, ScrapeResponse};
use crate::transform::aggregate::{Groups, Partial};
use crate::transform::output::{RowError, RowErrorKind, Stats, TableOutput};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::ops::Range;

/// Turns one scrape batch's outcome into results for `urls[batch]`, indexed within the whole job.
///
/// A worker answer that does not hold exactly one result per URL of the batch,
/// in order, is treated as a failure of the batch.
pub fn scrape_batch(urls: &[String], batch: Range<usize>, outcome: Result<ScrapeResponse, String>) -> Vec<PageResult> {
    let expected = &urls[batch.clone()];
    let checked = outcome.and_then(|resp| {
        let matches = resp.results.len() == expected.len()
            && resp.results.iter().zip(expected).enumerate().all(|(i, (r, u))| r.index == i && &r.url == u);
        if matches {
            Ok(resp.results)
        } else {
            Err(format!(
                "worker answered {} results that do not match the batch's {} URLs",
                resp.results.len(),
                expected.len()
            ))
        }
    });
    match checked {
        Ok(results) => results
            .into_iter()
            .map(|mut r| {
                r.index += batch.start;
                r
            })
            .collect(),
        Err(reason) => expected
            .iter()
            .zip(batch)
            .map(|(url, index)| PageResult {
                index,
                url: url.clone(),
                outcome: Outcome::Error(ItemError::new(FailureKind::Worker, reason.clone())),
            })
            .collect(),
    }
}

/// One transform worker's answer: records, or a partial aggregate, with its errors and counts.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ChunkAnswer {
    /// Records, in record mode.
    #[serde(default)]
    pub records: Vec<Map<String, Value>>,
    /// The partial aggregate, in aggregate mode.
    #[serde(default)]
    pub partial: Option<Partial>,
    /// Bad rows.
    #[serde(default)]
    pub errors: Vec<RowError>,
    /// Counts.
    pub stats: Stats,
}

/// A transform job's answers merged in chunk order.
#[derive(Debug)]
pub struct TransformMerge {
    /// Records (record mode), errors and counts.
    pub output: TableOutput,
    /// The merged groups, in aggregate mode.
    pub groups: Option<Groups>,
}

impl TransformMerge {
    /// An empty merge; `groups` is `Some` (and empty) in aggregate mode.
    pub fn new(groups: Option<Groups>) -> TransformMerge {
        TransformMerge { output: TableOutput::default(), groups }
    }

    /// Adds one chunk's outcome, whose line numbers are already the file's
    /// (the worker was given the chunk's `line_offset`). A failed chunk, or an answer that does not
    /// account for exactly the chunk's rows, becomes one error record covering
    /// its lines, and its rows count as errored.
    pub fn add(&mut self, chunk: &CsvChunk, outcome: Result<ChunkAnswer, String>) {
        let checked = outcome.and_then(|part| {
            if part.stats.rows_in != chunk.rows {
                return Err(format!("worker read {} rows of a chunk holding {}", part.stats.rows_in, chunk.rows));
            }
            match (&mut self.groups, &part.partial) {
                (Some(groups), Some(partial)) => groups.merge(partial)?,
                (Some(_), None) => return Err("worker answered records where a partial aggregate was asked for".into()),
                _ => {}
            }
            Ok(part)
        });
        let total = &mut self.output;
        match checked {
            Ok(part) => {
                total.stats.add(&part.stats);
                total.records.extend(part.records);
                total.errors.extend(part.errors);
            }
            Err(reason) => {
                total.stats.rows_in += chunk.rows;
                total.stats.rows_errored += chunk.rows;
                total.errors.push(RowError {
                    line: chunk.first_line,
                    byte: None,
                    column: None,
                    kind: RowErrorKind::Worker,
                    message: format!(
                        "the {} rows on lines {} to {} were not processed: {reason}",
                        chunk.rows, chunk.first_line, chunk.last_line
                    ),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Format;
    use crate::html::Extracted;
    use crate::plan::csv_chunks;
    use crate::scrape::Page;
    use crate::transform::engine::run_to_end;
    use crate::transform::spec::{Dialect, Spec};

    fn page(index: usize, url: &str) -> PageResult {
        PageResult {
            index,
            url: url.into(),
            outcome: Outcome::Page(Box::new(Page {
                status: 200,
                final_url: url.into(),
                redirects: 0,
                attempts: 1,
                content_type: "text/html".into(),
                charset: "UTF-8".into(),
                bytes: 0,
                fetch_ms: 1,
                parse_us: 1,
                data: Extracted::default(),
            })),
        }
    }

    #[test]
    fn scrape_results_are_reindexed_into_the_job() {
        let urls: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let resp = ScrapeResponse { results: vec![page(0, "c"), page(1, "d")] };
        let got = scrape_batch(&urls, 2..4, Ok(resp));
        assert_eq!(got, vec![page(2, "c"), page(3, "d")]);
    }

    #[test]
    fn failed_or_mismatched_batches_keep_every_url() {
        let urls: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        for outcome in [
            Err("connection refused".to_string()),
            Ok(ScrapeResponse { results: vec![page(0, "b")] }),
            Ok(ScrapeResponse { results: vec![page(0, "x"), page(1, "c")] }),
        ] {
            let got = scrape_batch(&urls, 1..3, outcome);
            assert_eq!(got.iter().map(|r| (r.index, r.url.as_str())).collect::<Vec<_>>(), vec![(1, "b"), (2, "c")]);
            assert!(got.iter().all(|r| matches!(&r.outcome, Outcome::Error(e) if e.kind == FailureKind::Worker)));
        }
    }

    #[test]
    fn table_chunks_merge_in_order_and_account_for_failures() {
        let data = b"id\n1\n2\n3\n4\n";
        let plan = csv_chunks(data, 4, &Dialect::default()).unwrap();
        assert_eq!(plan.chunks.len(), 2);
        let mut merge = TransformMerge::new(None);
        let first = run_to_end(&Spec::default(), &plan.body(data, 0), Format::Json).unwrap();
        merge.add(&plan.chunks[0], Ok(serde_json::from_slice(&first).unwrap()));
        merge.add(&plan.chunks[1], Err("timed out".into()));
        let total = merge.output;
        assert_eq!(total.records.len(), 2);
        assert_eq!(total.stats.rows_in, 4);
        assert_eq!(total.stats.rows_errored, 2);
        assert_eq!(total.errors[0].line, 4);
        assert!(total.errors[0].message.contains("lines 4 to 5"), "{}", total.errors[0].message);
    }

    #[test]
    fn partial_aggregates_merge_to_the_whole_files_groups() {
        use crate::transform::aggregate::Shape;
        use crate::transform::engine::read_header;
        use crate::transform::program::Program;
        use crate::transform::spec;
        let mut data = b"id,amount,region,product\n".to_vec();
        for i in 0..60 {
            data.extend_from_slice(format!("{i},{}.{:02},r{},p{}\n", i * 397 % 5000, i % 100, i % 3, i % 2).as_bytes());
        }
        data.extend_from_slice(b"x,oops,r1,p1\n");
        let whole_spec = spec::parse(br#"{"preset": "sales-summary", "aggregate": {"group_by": ["region", "product"],
            "metrics": [{"name": "total", "op": "sum", "column": "amount"}, {"op": "count"}, {"op": "max", "column": "amount"}]}}"#).unwrap();
        let whole: Value = serde_json::from_slice(&run_to_end(&whole_spec, &data, Format::Json).unwrap()).unwrap();
        let mut part_spec = whole_spec.clone();
        part_spec.aggregate.as_mut().unwrap().partial = true;
        let header = read_header(&whole_spec.dialect, &data).unwrap();
        let program = Program::compile(&whole_spec, &header.names).unwrap();
        for max in [1, 100, 333, 100_000] {
            let plan = csv_chunks(&data, max, &Dialect::default()).unwrap();
            let shape = Shape::compile(whole_spec.aggregate.as_ref().unwrap(), &program.schema()).unwrap().shape;
            let mut merge = TransformMerge::new(Some(Groups::new(shape)));
            // Answers arrive in any order; merging must not care.
            for i in (0..plan.chunks.len()).rev() {
                let answer = run_to_end(&part_spec, &plan.body(&data, i), Format::Json).unwrap();
                merge.add(&plan.chunks[i], Ok(serde_json::from_slice(&answer).unwrap()));
            }
            let groups = merge.groups.unwrap().finish(whole_spec.aggregate.as_ref().unwrap()).unwrap();
            assert_eq!(
                Value::Array(groups.into_iter().map(Value::Object).collect()),
                whole["groups"],
                "max_bytes {max}"
            );
            assert_eq!(merge.output.stats.rows_errored, 1);
        }
    }
}
