//! Results written as they finish: NDJSON lines in completion order, or one
//! JSON document in input order.
//!
//! Both forms are produced piece by piece, so a worker streams its answer
//! instead of building it whole. For the JSON document, results that finish
//! early wait in a reorder buffer until every earlier one is out.

use serde::Serialize;
use std::collections::BTreeMap;

/// The shape of a streamed answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// One JSON value per line, each as soon as it is ready (`application/x-ndjson`).
    Ndjson,
    /// `{"<field>": [ ... ]}`, in input order (`application/json`).
    Json,
}

impl Format {
    /// NDJSON when the `Accept` header asks for it, else JSON.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let ndjson = accept.is_some_and(|a| {
            a.split(',').any(|t| t.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-ndjson"))
        });
        if ndjson {
            Format::Ndjson
        } else {
            Format::Json
        }
    }

    /// The response content type.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Ndjson => "application/x-ndjson",
            Format::Json => "application/json",
        }
    }
}

/// Turns indexed results into the bytes of a streamed answer.
#[derive(Debug)]
pub struct Framer {
    format: Format,
    field: &'static str,
    next: usize,
    waiting: BTreeMap<usize, Vec<u8>>,
    waiting_bytes: usize,
}

impl Framer {
    /// A framer whose JSON form puts the results in an array named `field`.
    pub fn new(format: Format, field: &'static str) -> Framer {
        Framer { format, field, next: 0, waiting: BTreeMap::new(), waiting_bytes: 0 }
    }

    /// The bytes that open the answer.
    pub fn start(&self) -> Vec<u8> {
        match self.format {
            Format::Ndjson => Vec::new(),
            Format::Json => format!("{{\"{}\":[", self.field).into_bytes(),
        }
    }

    /// Takes result `index` (each index from 0 up exactly once) and returns what can be written now.
    pub fn push(&mut self, index: usize, result: &impl Serialize) -> Vec<u8> {
        let mut json = serde_json::to_vec(result).expect("results always serialise");
        match self.format {
            Format::Ndjson => {
                json.push(b'\n');
                json
            }
            Format::Json => {
                self.waiting_bytes += json.len();
                self.waiting.insert(index, json);
                let mut out = Vec::new();
                while let Some(json) = self.waiting.remove(&self.next) {
                    self.waiting_bytes -= json.len();
                    if self.next > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(&json);
                    self.next += 1;
                }
                out
            }
        }
    }

    /// Bytes of results held back until the results before them are out.
    pub fn waiting_bytes(&self) -> usize {
        self.waiting_bytes
    }

    /// The bytes that close the answer.
    pub fn finish(&self) -> Vec<u8> {
        debug_assert!(self.waiting.is_empty(), "every index was pushed");
        match self.format {
            Format::Ndjson => Vec::new(),
            Format::Json => b"]}".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_comes_out_in_input_order() {
        let mut f = Framer::new(Format::Json, "results");
        let mut out = f.start();
        assert!(f.push(2, &json!({"i": 2})).is_empty());
        assert_eq!(f.waiting_bytes(), 7);
        out.extend(f.push(0, &json!({"i": 0})));
        assert!(f.push(3, &json!({"i": 3})).is_empty());
        out.extend(f.push(1, &json!({"i": 1})));
        assert_eq!(f.waiting_bytes(), 0);
        out.extend(f.finish());
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, json!({"results": [{"i": 0}, {"i": 1}, {"i": 2}, {"i": 3}]}));
        let empty = Framer::new(Format::Json, "results");
        let mut out = empty.start();
        out.extend(empty.finish());
        assert_eq!(out, b"{\"results\":[]}");
    }

    #[test]
    fn ndjson_comes_out_as_it_finishes() {
        let mut f = Framer::new(Format::Ndjson, "results");
        assert!(f.start().is_empty());
        assert_eq!(f.push(1, &json!({"i": 1})), b"{\"i\":1}\n");
        assert_eq!(f.push(0, &json!({"i": 0})), b"{\"i\":0}\n");
        assert!(f.finish().is_empty());
    }

    #[test]
    fn accept_negotiation() {
        assert_eq!(Format::from_accept(Some("application/x-ndjson")), Format::Ndjson);
        assert_eq!(Format::from_accept(Some("text/html, Application/X-NDJSON;q=0.9")), Format::Ndjson);
        assert_eq!(Format::from_accept(Some("application/json")), Format::Json);
        assert_eq!(Format::from_accept(None), Format::Json);
    }
}
