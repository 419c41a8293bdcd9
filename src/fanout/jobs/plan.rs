//! What a job is: its input, its units and its limits, fixed when it is made.
//!
//! A transform job's units are byte ranges of its source, as in the
//! coordinator's source mode; a scrape job's are batches of its URL list,
//! found once when the job is planned ([`ListCutter`]) and kept as byte
//! offsets, so that a tick reads one batch's lines and nothing more.

use super::JobId;
use crate::content::Pin;
use crate::fanout::driver::Tolerance;
use crate::fanout::plan::{url_of_line, MAX_URL_LINE_BYTES};
use crate::scrape::ScrapeRequest;
use crate::transform::spec::Spec;
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The most units one job may have: its state, about 250 bytes a unit, is
/// read whole by every tick and every status request.
pub const MAX_UNITS: u64 = 20_000;

/// A job, as `plan.json` holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The job's id.
    pub id: JobId,
    /// When it was made, in milliseconds since the Unix epoch (the planning coordinator's clock).
    pub created_ms: u64,
    /// Units in all.
    pub units: u64,
    /// How it runs.
    pub limits: Limits,
    /// What it does.
    pub work: Work,
}

/// A job's limits, from its options within the operator's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Worker calls at once, per tick.
    pub concurrency: usize,
    /// Worker calls per unit, the first included.
    pub attempts: u32,
    /// Time allowed for the whole job from when it was made, in milliseconds.
    pub deadline_ms: u64,
    /// Stop once more items than this have failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failures: Option<u64>,
    /// Stop once more than this percentage of items have failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percent: Option<f64>,
    /// The percentage of units run twice, by separate calls, and compared (transform jobs).
    #[serde(default)]
    pub audit_percent: f64,
}

impl Limits {
    /// The failure threshold.
    pub fn tolerance(&self) -> Tolerance {
        Tolerance { count: self.tolerated_failures, percent: self.tolerated_failure_percent }
    }
}

/// What a job does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Work {
    /// A CSV file, in byte ranges, through a spec.
    Transform(TransformWork),
    /// A URL list, in batches, through the scraper.
    Scrape(ScrapeWork),
}

/// A transform job's input and spec.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformWork {
    /// The CSV file.
    pub source: Source,
    /// Its size in bytes, when planned.
    pub size: u64,
    /// Its validators when planned, which every ranged read of it sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Bytes per unit (the last one shorter).
    pub chunk_bytes: u64,
    /// The spec, as the caller gave it (presets written out).
    pub spec: Spec,
    /// The file's columns, from its header row.
    pub columns: Vec<String>,
}

/// A scrape job's input and what it extracts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeWork {
    /// The URL list.
    pub list: Source,
    /// How the list is written.
    pub format: ListFormat,
    /// Where each batch starts in the list, and where the last one ends (`units + 1` offsets).
    pub offsets: Vec<u64>,
    /// The job index of each batch's first URL (`units` of them).
    pub firsts: Vec<u64>,
    /// URLs in all.
    pub urls: u64,
    /// Selections and options, as every batch is sent them.
    pub request: ScrapeRequest,
}

/// Where an input is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// At an http(s) URL, which workers read themselves.
    Url(String),
    /// An object in the job's bucket, read through presigned URLs.
    Object(String),
}

/// How a URL list is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListFormat {
    /// One URL a line; blank lines and `#` comments are skipped (`urls_source`).
    Lines,
    /// One JSON string a line (a list given inline as `urls`).
    JsonLines,
}

/// One scrape batch: where it is in the list, and which URLs of the job it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// Its bytes in the list.
    pub bytes: Range<u64>,
    /// The job index of its first URL.
    pub first: u64,
    /// Its URLs.
    pub count: u64,
}

impl Plan {
    /// A transform job's source as planned: what every ranged read checks.
    pub fn pin(work: &TransformWork) -> Pin {
        Pin { size: work.size, etag: work.etag.clone(), last_modified: work.last_modified.clone() }
    }

    /// Bytes `unit` covers of a transform job's source.
    pub fn range(work: &TransformWork, unit: u64) -> Range<u64> {
        let start = unit.saturating_mul(work.chunk_bytes).min(work.size);
        start..start.saturating_add(work.chunk_bytes).min(work.size)
    }

    /// Batch `unit` of a scrape job.
    pub fn batch(work: &ScrapeWork, unit: u64) -> Batch {
        let i = unit as usize;
        let first = work.firsts[i];
        let next = work.firsts.get(i + 1).copied().unwrap_or(work.urls);
        Batch { bytes: work.offsets[i]..work.offsets[i + 1], first, count: next - first }
    }

    /// Input bytes of unit `unit` (a scrape batch counts no bytes, as in the coordinator's summary).
    pub fn unit_bytes(&self, unit: u64) -> u64 {
        match &self.work {
            Work::Transform(w) => {
                let r = Plan::range(w, unit);
                r.end - r.start
            }
            Work::Scrape(_) => 0,
        }
    }
}

/// The URLs of a batch's bytes, which must be `count` of them: a list that
/// holds other lines than when it was planned has changed, and is an error.
pub fn urls_of(bytes: &[u8], format: ListFormat, count: u64) -> Result<Vec<String>, String> {
    let mut urls = Vec::with_capacity(count as usize);
    for line in bytes.split(|&b| b == b'\n') {
        match format {
            ListFormat::Lines => urls.extend(url_of_line(line)),
            ListFormat::JsonLines if line.is_empty() => {}
            ListFormat::JsonLines => urls.push(
                serde_json::from_slice::<String>(line).map_err(|e| format!("a line of the stored URL list: {e}"))?,
            ),
        }
    }
    if urls.len() as u64 != count {
        return Err(format!(
            "the batch holds {} URLs where {count} were planned: the URL list changed after the job was made",
            urls.len()
        ));
    }
    Ok(urls)
}

/// Finds where the batches of a URL list start, from its bytes as they arrive.
#[derive(Debug)]
pub struct ListCutter {
    format: ListFormat,
    batch_size: u64,
    /// The most bytes a batch's URLs take in its request (JSON strings).
    max_bytes: usize,
    /// The unread end of the last piece: part of a line.
    pending: Vec<u8>,
    /// Where `pending` starts in the list.
    at: u64,
    offsets: Vec<u64>,
    firsts: Vec<u64>,
    /// URLs and their request bytes in the batch being cut.
    in_batch: (u64, usize),
    urls: u64,
    most: u64,
    line: u64,
}

/// A URL list cut into batches: where each starts in the list (and where the
/// last ends), each one's first URL, and the URL count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// `batches + 1` offsets.
    pub offsets: Vec<u64>,
    /// `batches` job indices.
    pub firsts: Vec<u64>,
    /// URLs in all.
    pub urls: u64,
}

impl ListCutter {
    /// A cutter making batches of at most `batch_size` URLs taking at most
    /// `max_bytes` in a request (a batch of one long URL may take more), of a
    /// list of at most `most` URLs.
    pub fn new(format: ListFormat, batch_size: u64, max_bytes: usize, most: u64) -> ListCutter {
        ListCutter {
            format,
            batch_size: batch_size.max(1),
            max_bytes,
            pending: Vec::new(),
            at: 0,
            offsets: Vec::new(),
            firsts: Vec::new(),
            in_batch: (0, 0),
            urls: 0,
            most,
            line: 0,
        }
    }

    /// Reads the next bytes of the list; an error for a line longer than
    /// [`MAX_URL_LINE_BYTES`] or one that is not what the format says.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while let Some(i) = memchr::memchr(b'\n', bytes) {
            let len = if self.pending.is_empty() {
                self.line(&bytes[..i])?;
                i
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(&bytes[..i]);
                self.line(&line)?;
                line.len()
            };
            self.at += len as u64 + 1;
            bytes = &bytes[i + 1..];
        }
        self.pending.extend_from_slice(bytes);
        if self.pending.len() > MAX_URL_LINE_BYTES {
            return Err(format!("line {} of the URL list is longer than {MAX_URL_LINE_BYTES} bytes", self.line + 1));
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        self.line += 1;
        if line.len() > MAX_URL_LINE_BYTES {
            return Err(format!("line {} of the URL list is longer than {MAX_URL_LINE_BYTES} bytes", self.line));
        }
        let url = match self.format {
            ListFormat::Lines => url_of_line(line),
            ListFormat::JsonLines if line.is_empty() => None,
            ListFormat::JsonLines => {
                Some(serde_json::from_slice::<String>(line).map_err(|e| format!("line {}: {e}", self.line))?)
            }
        };
        if let Some(url) = url {
            // Its size in the batch's request, escapes included: a line of control characters grows sixfold.
            let bytes = serde_json::to_string(&url).expect("strings serialise").len() + 1;
            let (count, taken) = self.in_batch;
            if count == 0 || count >= self.batch_size || taken + bytes > self.max_bytes {
                self.offsets.push(self.at);
                self.firsts.push(self.urls);
                self.in_batch = (0, 0);
            }
            self.in_batch = (self.in_batch.0 + 1, self.in_batch.1 + bytes);
            self.urls += 1;
            if self.urls > self.most {
                return Err(format!("the URL list holds more than {} URLs", self.most));
            }
        }
        Ok(())
    }

    /// Ends the list.
    pub fn finish(mut self) -> Result<Cut, String> {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            let len = line.len() as u64;
            self.line(&line)?;
            self.at += len;
        }
        self.offsets.push(self.at);
        Ok(Cut { offsets: self.offsets, firsts: self.firsts, urls: self.urls })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(list: &[u8], format: ListFormat, batch: u64, feed: usize) -> Cut {
        let mut c = ListCutter::new(format, batch, usize::MAX, u64::MAX);
        for piece in list.chunks(feed) {
            c.push(piece).unwrap();
        }
        c.finish().unwrap()
    }

    fn work(cut: Cut, format: ListFormat) -> ScrapeWork {
        ScrapeWork {
            list: Source::Object("k".into()),
            format,
            offsets: cut.offsets,
            firsts: cut.firsts,
            urls: cut.urls,
            request: ScrapeRequest::default(),
        }
    }

    #[test]
    fn batches_hold_their_urls_however_the_list_arrives() {
        let list = b"# urls\nhttps://a/1\n\n  https://a/2 \r\nhttps://a/3\n# end\nnot a url\nhttps://a/5";
        for feed in 1..list.len() + 1 {
            let c = cut(list, ListFormat::Lines, 2, feed);
            assert_eq!(c.urls, 5, "feed {feed}");
            assert_eq!(c.offsets.len(), 4, "three batches and the end: {:?}", c.offsets);
            let work = work(c, ListFormat::Lines);
            let mut all = Vec::new();
            for unit in 0..3 {
                let b = Plan::batch(&work, unit);
                assert_eq!(b.first, unit * 2);
                let bytes = &list[b.bytes.start as usize..b.bytes.end as usize];
                all.extend(urls_of(bytes, ListFormat::Lines, b.count).unwrap());
            }
            assert_eq!(all, ["https://a/1", "https://a/2", "https://a/3", "not a url", "https://a/5"]);
        }
    }

    #[test]
    fn json_lines_carry_any_string() {
        let list = b"\"https://a/\\n1\"\n\"x\"\n";
        let c = cut(list, ListFormat::JsonLines, 10, 3);
        assert_eq!((c.offsets, c.firsts, c.urls), (vec![0, list.len() as u64], vec![0], 2));
        assert_eq!(urls_of(list, ListFormat::JsonLines, 2).unwrap(), ["https://a/\n1", "x"]);
        assert!(urls_of(list, ListFormat::JsonLines, 3).unwrap_err().contains("changed"));
        let mut bad = ListCutter::new(ListFormat::JsonLines, 1, usize::MAX, u64::MAX);
        assert!(bad.push(b"not json\n").is_err());
        let mut blank = ListCutter::new(ListFormat::JsonLines, 1, usize::MAX, u64::MAX);
        blank.push(b"\"https://a/1\"\n\n\"https://a/2\"\n").unwrap();
        assert_eq!(blank.finish().unwrap().urls, 2, "blank lines are skipped");
    }

    #[test]
    fn long_lines_and_empty_lists() {
        let mut c = ListCutter::new(ListFormat::Lines, 5, usize::MAX, u64::MAX);
        let err = c.push(&vec![b'a'; MAX_URL_LINE_BYTES + 1]).unwrap_err();
        assert!(err.contains("line 1") && err.contains("longer"), "{err}");
        // A line of exactly the limit is read, whole or in pieces.
        let url = format!("https://a/{}", "p".repeat(MAX_URL_LINE_BYTES - 10));
        let mut c = ListCutter::new(ListFormat::Lines, 5, usize::MAX, u64::MAX);
        c.push(&url.as_bytes()[..100]).unwrap();
        c.push(&url.as_bytes()[100..]).unwrap();
        c.push(format!("\n{url}\n").as_bytes()).unwrap();
        assert_eq!(c.finish().unwrap().urls, 2);
        // A line over the limit is refused whether it ends in this piece or a later one, and named.
        let mut c = ListCutter::new(ListFormat::Lines, 5, usize::MAX, u64::MAX);
        let err = c.push(&[b"a\nb\n".to_vec(), vec![b'a'; MAX_URL_LINE_BYTES + 1], b"\n".to_vec()].concat());
        assert!(err.unwrap_err().starts_with("line 3 of the URL list is longer"));
        assert_eq!(cut(b"", ListFormat::Lines, 3, 1), Cut { offsets: vec![0], firsts: vec![], urls: 0 });
        assert_eq!(cut(b"\n# only\n", ListFormat::Lines, 3, 1).urls, 0);
        let mut few = ListCutter::new(ListFormat::Lines, 5, usize::MAX, 2);
        assert!(few.push(b"a\nb\nc\n").unwrap_err().contains("more than 2 URLs"));
        let mut enough = ListCutter::new(ListFormat::Lines, 5, usize::MAX, 2);
        enough.push(b"a\nb\n").unwrap();
        assert_eq!(enough.finish().unwrap().urls, 2, "as many URLs as allowed");
    }

    /// A batch is cut by its request's size too, escapes counted: lines of
    /// control characters grow sixfold in JSON, and must not make a batch a
    /// worker refuses.
    #[test]
    fn batches_fit_their_request() {
        let escaped = "\u{1}".repeat(100);
        let list = format!("https://a/1\n{escaped}\n{escaped}\nhttps://a/4\n");
        let c = {
            let mut c = ListCutter::new(ListFormat::Lines, 100, 700, u64::MAX);
            c.push(list.as_bytes()).unwrap();
            c.finish().unwrap()
        };
        // 100 control characters are 602 bytes of JSON: two such lines never share a batch.
        assert_eq!(c.firsts, [0, 2]);
        let w = work(c, ListFormat::Lines);
        let counts: Vec<u64> = (0..2).map(|u| Plan::batch(&w, u).count).collect();
        assert_eq!(counts, [2, 2]);
        let all: Vec<String> = (0..2)
            .flat_map(|u| {
                let b = Plan::batch(&w, u);
                urls_of(&list.as_bytes()[b.bytes.start as usize..b.bytes.end as usize], ListFormat::Lines, b.count)
                    .unwrap()
            })
            .collect();
        assert_eq!(all.len(), 4);
        // Each URL counts as its JSON string and a comma: "https://a/1" is 14 bytes.
        for (max_bytes, firsts) in [(27, vec![0, 1, 2]), (28, vec![0, 2])] {
            let mut c = ListCutter::new(ListFormat::Lines, 100, max_bytes, u64::MAX);
            c.push(b"https://a/1\nhttps://a/2\nhttps://a/3\n").unwrap();
            assert_eq!(c.finish().unwrap().firsts, firsts, "{max_bytes} bytes a batch");
        }
    }

    #[test]
    fn ranges_cover_the_file() {
        let work = TransformWork {
            source: Source::Url("https://x/".into()),
            size: 25,
            etag: None,
            last_modified: None,
            chunk_bytes: 10,
            spec: Spec::default(),
            columns: vec![],
        };
        let ranges: Vec<_> = (0..3).map(|u| Plan::range(&work, u)).collect();
        assert_eq!(ranges, [0..10, 10..20, 20..25]);
    }
}
