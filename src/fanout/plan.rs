//! How a job is split into worker invocations.

use crate::api::ApiError;
use crate::transform::engine;
use crate::transform::spec::Dialect;
use std::ops::Range;

/// Splits `len` items into consecutive batches of at most `size` items.
pub fn batches(len: usize, size: usize) -> Vec<Range<usize>> {
    let size = size.max(1);
    (0..len).step_by(size).map(|start| start..(start + size).min(len)).collect()
}

/// A CSV file cut at record boundaries into chunks, each sent with the header row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvPlan {
    /// The bytes of the header row (and any blank lines after it); empty without one.
    pub header: Range<usize>,
    /// The chunks, in file order, covering every data record exactly once.
    pub chunks: Vec<CsvChunk>,
}

/// One chunk of a [`CsvPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CsvChunk {
    /// The bytes of the chunk's records in the file.
    pub bytes: Range<usize>,
    /// The file line on which the chunk's first record starts.
    pub first_line: u64,
    /// The file line on which the chunk's last record starts.
    pub last_line: u64,
    /// How many data records the chunk holds.
    pub rows: u64,
    /// What to add to a line number counted within [`CsvPlan::body`] to get the file's line number.
    pub line_offset: u64,
}

impl CsvPlan {
    /// The request body for chunk `i`: the header row followed by the chunk's records.
    pub fn body(&self, data: &[u8], i: usize) -> Vec<u8> {
        let header = &data[self.header.clone()];
        let chunk = &data[self.chunks[i].bytes.clone()];
        let mut body = Vec::with_capacity(header.len() + 1 + chunk.len());
        body.extend_from_slice(header);
        if !header.is_empty() && !header.ends_with(b"\n") {
            body.push(b'\n');
        }
        body.extend_from_slice(chunk);
        body
    }
}

/// Cuts `data` into chunks of whole records of at most `max_bytes` each (a
/// single larger record gets a chunk of its own), each to be sent after the
/// header row when the dialect has one.
///
/// Records are found by a real CSV parse in the file's dialect, so quoted
/// fields holding newlines are never cut.
pub fn csv_chunks(data: &[u8], max_bytes: usize, dialect: &Dialect) -> Result<CsvPlan, ApiError> {
    let mut reader = engine::reader(dialect, data).map_err(ApiError::bad_request)?;
    let mut record = csv::ByteRecord::new();
    // Record starts as (byte offset, line); the header is the first record.
    let mut starts: Vec<(usize, u64)> = Vec::new();
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {
                starts.push(engine::record_start(data, record.position().expect("the csv reader sets positions")));
            }
            Ok(false) => break,
            Err(e) => return Err(ApiError::bad_request(format!("CSV could not be read: {e}"))),
        }
    }
    let (header, header_lines, records) = if dialect.header {
        let Some(&(_, header_line)) = starts.first() else {
            return Err(ApiError::bad_request("CSV body is empty; a header row was expected on line 1"));
        };
        let (header_end, lines) = match starts.get(1) {
            Some(&(byte, line)) => (byte, line - header_line),
            None => (data.len(), 1),
        };
        (0..header_end, lines, &starts[1..])
    } else {
        (0..0, 0, &starts[..])
    };
    let end_of = |i: usize| records.get(i + 1).map_or(data.len(), |s| s.0);

    let mut chunks = Vec::new();
    let mut i = 0;
    while i < records.len() {
        let first = i;
        while i + 1 < records.len() && end_of(i + 1) - records[first].0 <= max_bytes {
            i += 1;
        }
        let first_line = records[first].1;
        chunks.push(CsvChunk {
            bytes: records[first].0..end_of(i),
            first_line,
            last_line: records[i].1,
            rows: (i - first + 1) as u64,
            // The header ends where the first record starts, so its lines come first in every chunk.
            line_offset: first_line.saturating_sub(header_lines + 1),
        });
        i += 1;
    }
    Ok(CsvPlan { header, chunks })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Format;
    use crate::transform::engine::run_to_end;
    use crate::transform::output::TableOutput;
    use crate::transform::spec::Spec;

    fn to_records(data: &[u8]) -> Result<TableOutput, String> {
        let out = run_to_end(&Spec::default(), data, Format::Json).map_err(|e| format!("{e:?}"))?;
        Ok(serde_json::from_slice(&out).unwrap())
    }

    #[test]
    fn batches_cover_every_item_once() {
        assert_eq!(batches(0, 3), Vec::<Range<usize>>::new());
        assert_eq!(batches(7, 3), vec![0..3, 3..6, 6..7]);
        assert_eq!(batches(2, 5), vec![0..2]);
        assert_eq!(batches(2, 0), vec![0..1, 1..2]);
    }

    fn records_of(data: &[u8], max: usize) -> (Vec<serde_json::Value>, Vec<u64>) {
        let plan = csv_chunks(data, max, &Dialect::default()).unwrap();
        let mut recs = Vec::new();
        let mut lines = Vec::new();
        for (i, chunk) in plan.chunks.iter().enumerate() {
            let out = to_records(&plan.body(data, i)).unwrap();
            assert_eq!(out.stats.rows_in, chunk.rows);
            recs.extend(out.records.into_iter().map(serde_json::Value::Object));
            lines.extend(out.errors.iter().map(|e| e.line + chunk.line_offset));
        }
        (recs, lines)
    }

    #[test]
    fn chunks_reassemble_to_the_whole_file() {
        let data = b"id,note\n1,a\n2,\"multi\nline, quoted\"\r\n3,c\n\n4,d\n5,\"e\"";
        let whole = to_records(data).unwrap();
        let whole: Vec<_> = whole.records.into_iter().map(serde_json::Value::Object).collect();
        for max in [1, 5, 10, 20, 1000] {
            assert_eq!(records_of(data, max).0, whole, "max_bytes = {max}");
        }
    }

    #[test]
    fn error_lines_map_back_to_the_file() {
        let data = b"id,note\n1,a\n2,\"x\ny\"\nbad\n3,c\nalso,bad,row\n";
        for max in [1, 8, 1000] {
            assert_eq!(records_of(data, max).1, vec![5, 7], "max_bytes = {max}");
        }
    }

    #[test]
    fn crlf_and_blank_lines_keep_their_line_numbers() {
        for data in
            [&b"id,v\r\n1,a\r\nbad\r\n\r\n3,c\r\nalso,bad,row\r\n"[..], b"id,v\n1,a\nbad\n\n3,c\nalso,bad,row\n"]
        {
            for max in [1, 8, 1000] {
                assert_eq!(
                    records_of(data, max).1,
                    vec![3, 6],
                    "max_bytes = {max} in {:?}",
                    String::from_utf8_lossy(data)
                );
            }
        }
    }

    #[test]
    fn headerless_files_are_all_records() {
        let dialect = Dialect { header: false, columns: Some(vec!["a".into()]), ..Dialect::default() };
        let plan = csv_chunks(b"1\n2\n3\n", 4, &dialect).unwrap();
        assert_eq!(plan.header, 0..0);
        assert_eq!(plan.chunks.iter().map(|c| c.rows).sum::<u64>(), 3);
        assert_eq!(plan.chunks[0].line_offset, 0);
        assert_eq!(plan.body(b"1\n2\n3\n", 0), b"1\n2\n");
    }

    #[test]
    fn multiline_header_and_missing_final_newline() {
        let data = b"\"i\nd\",v\n1,2";
        let plan = csv_chunks(data, 1, &Dialect::default()).unwrap();
        assert_eq!(plan.chunks.len(), 1);
        assert_eq!(plan.chunks[0].first_line, 3);
        assert_eq!(plan.chunks[0].line_offset, 0);
        assert_eq!(plan.body(data, 0), data.to_vec());
        let header_only = csv_chunks(b"a,b", 10, &Dialect::default()).unwrap();
        assert!(header_only.chunks.is_empty());
        assert!(csv_chunks(b"", 10, &Dialect::default()).is_err());
    }
}
