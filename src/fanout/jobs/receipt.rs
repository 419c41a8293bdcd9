//! A unit's receipt: what its objects hold and how its items are accounted for.
//!
//! The receipt is written once, by whoever concludes the unit ([`super::commit`]),
//! and whatever wrote it is not trusted: a tick uses a receipt only when
//! [`Receipt::check`] finds its accounting consistent with the unit and the
//! job's spec, and the objects it names exist with the sizes and MD5s it
//! claims (checked by `HEAD`, without reading them). What that does not catch
//! is written in docs/jobs.md: a worker that lies consistently (a record
//! replaced by a made-up one of the same count) is caught only by an audit.

use crate::fanout::driver::FailureKind;
use crate::transform::output::Stats;
use md5::{Digest as _, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// A unit's receipt, as `receipts/{unit}.json` holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Receipt {
    /// The unit.
    pub unit: u64,
    /// Done, or why not.
    pub outcome: Outcome,
    /// The records (or results, or partial aggregate): absent only for a failed transform unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<ObjectSum>,
    /// The error records, when there are any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<ObjectSum>,
    /// The accounting.
    pub tally: Tally,
    /// Milliseconds the writer spent on the unit.
    #[serde(default)]
    pub process_ms: u64,
}

/// How a unit ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    /// A worker ran it.
    Done,
    /// It has no worker's answer: its items are error records saying why.
    Failed {
        /// What class of failure.
        kind: FailureKind,
        /// What happened.
        reason: String,
    },
}

/// The accounting of a unit's items.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Tally {
    /// A transform unit's rows.
    Rows(Stats),
    /// A scrape unit's URLs.
    Pages(Pages),
}

/// A scrape unit's URLs: one result each, a page or an error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pages {
    /// Results (one per URL of the batch).
    pub results: u64,
    /// Of those, pages.
    pub pages: u64,
    /// Of those, errors.
    pub errors: u64,
}

impl Pages {
    /// Counts a scrape part, checking it holds one result per URL of the batch
    /// in order, each naming its URL and its index in the job (from `first`).
    pub fn of_part(part: &[u8], first: u64, urls: &[String]) -> Result<Pages, String> {
        /// One result line: its place, and a page or an error (checked, not kept).
        #[derive(Deserialize)]
        struct Line {
            index: u64,
            url: String,
            #[serde(default)]
            page: Option<serde::de::IgnoredAny>,
            #[serde(default)]
            error: Option<serde::de::IgnoredAny>,
        }
        let mut pages = Pages::default();
        for (i, text) in part.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            let line: Line = serde_json::from_slice(text).map_err(|e| format!("result {i} is not a result: {e}"))?;
            let want =
                urls.get(i).ok_or_else(|| format!("it has more results than the batch's {} URLs", urls.len()))?;
            if line.index != first + i as u64 || &line.url != want {
                return Err(format!(
                    "result {i} is for URL {} {:?}, not URL {} {want:?}",
                    line.index,
                    line.url,
                    first + i as u64
                ));
            }
            match (line.page.is_some(), line.error.is_some()) {
                (true, false) => pages.pages += 1,
                (false, true) => pages.errors += 1,
                _ => return Err(format!("result {i} holds neither a page nor an error, or both")),
            }
            pages.results += 1;
        }
        if pages.results != urls.len() as u64 {
            return Err(format!("it has {} results for the batch's {} URLs", pages.results, urls.len()));
        }
        Ok(pages)
    }
}

/// What an object holds: its size, lines and checksums.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSum {
    /// Its size in bytes.
    pub bytes: u64,
    /// Its lines (records, results or error records, one a line).
    pub lines: u64,
    /// Its MD5, lower-case hex: what the store checks it was sent, and reports as its ETag.
    pub md5: String,
    /// Its SHA-256, lower-case hex: what a reader of the part checks.
    pub sha256: String,
}

impl ObjectSum {
    /// The sum of `bytes`, whose lines each end with `\n`.
    pub fn of(bytes: &[u8]) -> ObjectSum {
        ObjectSum {
            bytes: bytes.len() as u64,
            lines: memchr::memchr_iter(b'\n', bytes).count() as u64,
            md5: super::hex(&Md5::digest(bytes)),
            sha256: super::hex(&Sha256::digest(bytes)),
        }
    }

    /// The MD5 as bytes, for `Content-MD5`.
    pub fn md5_bytes(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(self.md5.get(2 * i..2 * i + 2).unwrap_or("00"), 16).unwrap_or(0);
        }
        out
    }

    /// The MD5 as a `Content-MD5` header holds it (base64).
    pub fn content_md5(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.md5_bytes())
    }

    fn check(&self, what: &str) -> Result<(), String> {
        let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if !hex(&self.md5, 32) || !hex(&self.sha256, 64) {
            return Err(format!("its {what} checksums are not lower-case hex MD5 and SHA-256"));
        }
        if self.lines > self.bytes {
            return Err(format!("its {what} has {} lines in {} bytes", self.lines, self.bytes));
        }
        Ok(())
    }
}

/// What a unit's receipt must account for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// A transform unit: a byte range, whose rows the tick cannot count.
    Rows {
        /// Whether the spec has a filter: without one, no row may be counted as filtered.
        filter: bool,
        /// Whether the part is a partial aggregate (one line) instead of records.
        aggregate: bool,
    },
    /// A scrape unit: a batch of this many URLs.
    Pages {
        /// URLs in the batch.
        urls: u64,
    },
}

impl Receipt {
    /// Checks the receipt's accounting against itself, the unit and the spec;
    /// the reason when it does not hold.
    pub fn check(&self, unit: u64, expect: Expect) -> Result<(), String> {
        if self.unit != unit {
            return Err(format!("it is the receipt of unit {}, not {unit}", self.unit));
        }
        for (sum, what) in [(&self.part, "part"), (&self.errors, "errors object")] {
            if let Some(sum) = sum {
                sum.check(what)?;
            }
        }
        let error_lines = self.errors.as_ref().map_or(0, |e| e.lines);
        if self.errors.as_ref().is_some_and(|e| e.lines == 0) {
            return Err("it names an errors object without error records".into());
        }
        if let Outcome::Failed { reason, .. } = &self.outcome {
            if reason.chars().count() > super::MAX_REASON_CHARS + 1 {
                return Err(format!("its reason is over {} characters", super::MAX_REASON_CHARS));
            }
        }
        let failed = matches!(self.outcome, Outcome::Failed { .. });
        match (&self.tally, expect) {
            (Tally::Rows(s), Expect::Rows { filter, aggregate }) if !failed => {
                s.check()?;
                if !filter && s.rows_filtered > 0 {
                    return Err(format!("it counts {} rows as filtered, but the spec has no filter", s.rows_filtered));
                }
                if error_lines.checked_add(s.errors_omitted) != Some(s.rows_errored) {
                    return Err(format!(
                        "it has {error_lines} error records (and {} omitted) for {} errored rows",
                        s.errors_omitted, s.rows_errored
                    ));
                }
                let part = self.part.as_ref().ok_or("it names no part")?;
                let records = if aggregate { 1 } else { s.rows_out };
                if part.lines != records {
                    return Err(format!("its part has {} lines for {records} records", part.lines));
                }
            }
            (Tally::Rows(s), Expect::Rows { .. }) => {
                if *s != Stats::default() || self.part.is_some() || error_lines != 1 {
                    return Err("a failed transform unit is one error record and nothing else".into());
                }
            }
            (Tally::Pages(p), Expect::Pages { urls }) => {
                if p.results != urls {
                    return Err(format!("it has {} results for a batch of {urls} URLs", p.results));
                }
                if p.pages.checked_add(p.errors) != Some(p.results) || (failed && p.errors != p.results) {
                    return Err(format!(
                        "its counts do not add up: {} pages and {} errors for {} results",
                        p.pages, p.errors, p.results
                    ));
                }
                let part = self.part.as_ref().ok_or("it names no part")?;
                if part.lines != urls || self.errors.is_some() {
                    return Err(format!("its part has {} lines for {urls} results", part.lines));
                }
            }
            _ => return Err("its tally is of the other kind of job".into()),
        }
        Ok(())
    }

    /// Whether two runs of a unit agree: the same objects and the same accounting.
    pub fn agrees_with(&self, other: &Receipt) -> Result<(), String> {
        let same = |a: &Option<ObjectSum>, b: &Option<ObjectSum>| match (a, b) {
            (Some(a), Some(b)) => a.sha256 == b.sha256 && a.bytes == b.bytes && a.lines == b.lines,
            (None, None) => true,
            _ => false,
        };
        if self.outcome != other.outcome || self.tally != other.tally {
            return Err(format!("the accounting differs: {:?} against {:?}", self.tally, other.tally));
        }
        if !same(&self.part, &other.part) {
            return Err("the parts differ".into());
        }
        if !same(&self.errors, &other.errors) {
            return Err("the error records differ".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(rows_in: u64, rows_out: u64, rows_filtered: u64, rows_errored: u64) -> Stats {
        Stats { rows_in, rows_out, rows_filtered, rows_errored, errors_omitted: 0 }
    }

    fn done(part: &[u8], errors: &[u8], tally: Tally) -> Receipt {
        Receipt {
            unit: 4,
            outcome: Outcome::Done,
            part: Some(ObjectSum::of(part)),
            errors: (!errors.is_empty()).then(|| ObjectSum::of(errors)),
            tally,
            process_ms: 1,
        }
    }

    const ROWS: Expect = Expect::Rows { filter: false, aggregate: false };

    #[test]
    fn sums_are_md5_sha256_and_lines() {
        let s = ObjectSum::of(b"{\"a\":1}\n{\"a\":2}\n");
        assert_eq!((s.bytes, s.lines), (16, 2));
        assert_eq!(s.md5, "5472948e7ac5c4417b2ac9159d2c17c3");
        assert_eq!(s.sha256, "e91bd3062f38c3f1df2165d987872b022fb39a08c642a6fbc3b862dd2a2aaf24");
        assert_eq!(hex_of(&s.md5_bytes()), s.md5);
        assert_eq!(ObjectSum::of(b"").sha256, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(ObjectSum::of(b"hello").md5, "5d41402abc4b2a76b9719d911017c592");
        assert_eq!(ObjectSum::of(b"hello").content_md5(), "XUFAKrxLKna5cZ2REBfFkg==");
    }

    fn hex_of(b: &[u8]) -> String {
        super::super::hex(b)
    }

    #[test]
    fn honest_receipts_pass() {
        let r = done(b"{}\n{}\n", b"{\"line\":3}\n", Tally::Rows(stats(3, 2, 0, 1)));
        assert_eq!(r.check(4, ROWS), Ok(()));
        let filtered = done(b"{}\n", b"", Tally::Rows(stats(3, 1, 2, 0)));
        assert_eq!(filtered.check(4, Expect::Rows { filter: true, aggregate: false }), Ok(()));
        let all_filtered = done(b"", b"", Tally::Rows(stats(3, 0, 3, 0)));
        assert_eq!(all_filtered.check(4, Expect::Rows { filter: true, aggregate: false }), Ok(()), "an empty part");
        let partial = done(b"{\"groups\":[]}\n", b"", Tally::Rows(stats(5, 5, 0, 0)));
        assert_eq!(partial.check(4, Expect::Rows { filter: false, aggregate: true }), Ok(()));
        let pages = done(b"{}\n{}\n{}\n", b"", Tally::Pages(Pages { results: 3, pages: 2, errors: 1 }));
        assert_eq!(pages.check(4, Expect::Pages { urls: 3 }), Ok(()));
    }

    /// The lies a worker can tell in its accounting, each refused with a reason.
    #[test]
    fn inconsistent_receipts_are_refused() {
        let cases = [
            (done(b"{}\n", b"", Tally::Rows(stats(2, 1, 1, 0))), ROWS, "no filter"),
            (done(b"{}\n", b"", Tally::Rows(stats(2, 1, 0, 0))), ROWS, "do not add up"),
            (done(b"{}\n", b"", Tally::Rows(stats(2, 2, 0, 0))), ROWS, "1 lines for 2 records"),
            (done(b"{}\n", b"", Tally::Rows(stats(2, 1, 0, 1))), ROWS, "0 error records"),
            (done(b"{}\n", b"{}\n{}\n", Tally::Rows(stats(2, 1, 0, 1))), ROWS, "2 error records"),
            (done(b"{}\n", b"", Tally::Pages(Pages { results: 1, pages: 1, errors: 0 })), ROWS, "other kind"),
            (
                done(b"{}\n{}\n", b"", Tally::Pages(Pages { results: 2, pages: 2, errors: 0 })),
                Expect::Pages { urls: 3 },
                "2 results for a batch of 3",
            ),
            (
                done(b"{}\n{}\n", b"", Tally::Pages(Pages { results: 2, pages: 2, errors: 1 })),
                Expect::Pages { urls: 2 },
                "do not add up",
            ),
            (
                done(b"{}\n", b"", Tally::Pages(Pages { results: 2, pages: 2, errors: 0 })),
                Expect::Pages { urls: 2 },
                "1 lines for 2 results",
            ),
        ];
        for (receipt, expect, why) in cases {
            let err = receipt.check(4, expect).unwrap_err();
            assert!(err.contains(why), "{receipt:?}: {err}");
        }
        let r = done(b"{}\n", b"", Tally::Rows(stats(1, 1, 0, 0)));
        assert!(r.check(5, ROWS).unwrap_err().contains("unit 4, not 5"));
        let sha256 = r.part.as_ref().unwrap().sha256.clone();
        for (md5, sha256) in [
            ("XYZ".to_owned(), sha256.clone()),
            ("a".repeat(31), sha256.clone()),
            ("A".repeat(32), sha256.clone()),
            ("g".repeat(32), sha256.clone()),
            ("a".repeat(32), sha256[1..].to_owned()),
            ("a".repeat(32), sha256.to_uppercase()),
        ] {
            let mut bad_sum = r.clone();
            let part = bad_sum.part.as_mut().unwrap();
            (part.md5, part.sha256) = (md5, sha256);
            assert!(bad_sum.check(4, ROWS).unwrap_err().contains("checksums"), "{bad_sum:?}");
        }
        let mut dense = r.clone();
        dense.part.as_mut().unwrap().lines = 4;
        assert!(dense.check(4, ROWS).unwrap_err().contains("has 4 lines in 3 bytes"));
    }

    /// A failed unit's reason, cut to MAX_REASON_CHARS and an ellipsis by the worker, is refused only longer.
    #[test]
    fn a_failed_units_reason_is_bounded() {
        let failed = |chars: usize| Receipt {
            unit: 0,
            outcome: Outcome::Failed { kind: FailureKind::Worker, reason: "é".repeat(chars) },
            part: None,
            errors: Some(ObjectSum::of(b"{}\n")),
            tally: Tally::Rows(Stats::default()),
            process_ms: 1,
        };
        let max = super::super::MAX_REASON_CHARS;
        assert_eq!(failed(max + 1).check(0, ROWS), Ok(()));
        assert!(failed(max + 2).check(0, ROWS).unwrap_err().contains("reason is over 1000 characters"));
    }

    #[test]
    fn failed_units_are_one_error_record_or_one_error_result_per_url() {
        let failed = |part: Option<&[u8]>, errors: Option<&[u8]>, tally| Receipt {
            unit: 0,
            outcome: Outcome::Failed { kind: FailureKind::Worker, reason: "503".into() },
            part: part.map(ObjectSum::of),
            errors: errors.map(ObjectSum::of),
            tally,
            process_ms: 0,
        };
        assert_eq!(failed(None, Some(b"{}\n"), Tally::Rows(Stats::default())).check(0, ROWS), Ok(()));
        assert!(failed(Some(b"{}\n"), Some(b"{}\n"), Tally::Rows(Stats::default())).check(0, ROWS).is_err());
        let pages = Tally::Pages(Pages { results: 2, pages: 0, errors: 2 });
        assert_eq!(failed(Some(b"{}\n{}\n"), None, pages.clone()).check(0, Expect::Pages { urls: 2 }), Ok(()));
        let half = Tally::Pages(Pages { results: 2, pages: 1, errors: 1 });
        assert!(failed(Some(b"{}\n{}\n"), None, half).check(0, Expect::Pages { urls: 2 }).is_err());
    }

    #[test]
    fn scrape_parts_are_counted_url_by_url() {
        let urls = ["https://a/1".to_owned(), "https://a/2".to_owned()];
        let part = b"{\"index\":10,\"url\":\"https://a/1\",\"page\":{}}\n{\"index\":11,\"url\":\"https://a/2\",\"error\":{}}\n";
        assert_eq!(Pages::of_part(part, 10, &urls), Ok(Pages { results: 2, pages: 1, errors: 1 }));
        for (bad, why) in [
            (&b"{\"index\":10,\"url\":\"https://a/1\",\"page\":{}}\n"[..], "1 results for the batch's 2"),
            (b"{\"index\":10,\"url\":\"https://a/X\",\"page\":{}}\n", "not URL 10"),
            (b"{\"index\":11,\"url\":\"https://a/1\",\"page\":{}}\n", "is for URL 11"),
            (b"{\"index\":10,\"url\":\"https://a/1\"}\n", "neither"),
            (b"[1]\n", "not a result"),
        ] {
            assert!(Pages::of_part(bad, 10, &urls).unwrap_err().contains(why), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn audits_compare_objects_and_accounting() {
        let a = done(b"{}\n", b"", Tally::Rows(stats(1, 1, 0, 0)));
        let mut b = a.clone();
        b.process_ms = 99;
        assert_eq!(a.agrees_with(&b), Ok(()), "timing is not compared");
        b.part = Some(ObjectSum::of(b"{\"x\":1}\n"));
        assert!(a.agrees_with(&b).unwrap_err().contains("parts differ"));
        let c = done(b"{}\n", b"", Tally::Rows(stats(2, 1, 1, 0)));
        assert!(a.agrees_with(&c).unwrap_err().contains("accounting"));
    }
}
