//! How worker outputs are merged back into one answer, in input order.
//!
//! A worker invocation that failed after its retries still accounts for every
//! item it held: each becomes an error record naming the failure, so nothing
//! given to the coordinator goes missing from its answer.

use crate::plan::CsvChunk;
use crate::scrape::{FailureKind, ItemError, Outcome, PageResult, ScrapeResponse};
use crate::table::{RowError, RowErrorKind, TableOutput};
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

/// Appends one transform chunk's outcome to `total`, with line numbers counted in the whole file.
///
/// A failed chunk becomes one error record covering its lines, and its rows count as errored.
pub fn table_chunk(total: &mut TableOutput, chunk: &CsvChunk, outcome: Result<TableOutput, String>) {
    let checked = outcome.and_then(|part| {
        if part.stats.rows_in == chunk.rows {
            Ok(part)
        } else {
            Err(format!("worker read {} rows of a chunk holding {}", part.stats.rows_in, chunk.rows))
        }
    });
    match checked {
        Ok(part) => {
            total.stats.add(&part.stats);
            total.records.extend(part.records);
            total.errors.extend(part.errors.into_iter().map(|mut e| {
                e.line += chunk.line_offset;
                e
            }));
        }
        Err(reason) => {
            total.stats.rows_in += chunk.rows;
            total.stats.rows_errored += chunk.rows;
            total.errors.push(RowError {
                line: chunk.first_line,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::html::Extracted;
    use crate::plan::csv_chunks;
    use crate::scrape::Page;
    use crate::table::to_records;

    fn page(index: usize, url: &str) -> PageResult {
        PageResult {
            index,
            url: url.into(),
            outcome: Outcome::Page(Page {
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
            }),
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
        let plan = csv_chunks(data, 4).unwrap();
        assert_eq!(plan.chunks.len(), 2);
        let mut total = TableOutput::default();
        table_chunk(&mut total, &plan.chunks[0], to_records(&plan.body(data, 0)).map_err(|e| e.to_string()));
        table_chunk(&mut total, &plan.chunks[1], Err("timed out".into()));
        assert_eq!(total.records.len(), 2);
        assert_eq!(total.stats.rows_in, 4);
        assert_eq!(total.stats.rows_errored, 2);
        assert_eq!(total.errors[0].line, 4);
        assert!(total.errors[0].message.contains("lines 4 to 5"), "{}", total.errors[0].message);
    }
}
