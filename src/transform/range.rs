//! Range mode: which records of a file a worker given a byte range owns.
//!
//! A range `[start, end)` owns exactly the records that start inside it: the
//! partial record at its start belongs to the range before, and the record
//! crossing its end is read to its end. So neighbouring ranges share no record
//! and miss none. Records are found by line breaks, which is why range mode
//! needs files without line breaks inside quoted fields (the engine detects
//! such a record and stops, rather than mis-split), and `\n` or `\r\n` line ends.

/// The owned records, as offsets into the bytes fetched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Where the first owned record begins.
    pub begin: usize,
    /// Where the last owned record ends (after its line break).
    pub end: usize,
}

/// More bytes past the end of the fetched ones are needed to finish the last record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeedMore;

/// The first byte to fetch for a range starting at `start`: one earlier, to
/// see whether a record begins exactly at `start`.
pub fn fetch_from(start: u64) -> u64 {
    start.saturating_sub(1)
}

/// Finds the records range `[start, end)` owns in `buf`, which holds the file's
/// bytes from `fetch_from(start)` on (`at_eof` when it reaches the end of the
/// file). `data_start` is where records may begin at all (after the header).
pub fn cut(buf: &[u8], start: u64, end: u64, data_start: u64, at_eof: bool) -> Result<Cut, NeedMore> {
    let base = fetch_from(start);
    let at = |file_offset: u64| (file_offset.saturating_sub(base) as usize).min(buf.len());
    let begin = if start == 0 {
        0
    } else {
        // A record begins after the first line break at or after start - 1.
        match memchr(b'\n', buf) {
            Some(i) => i + 1,
            None => buf.len(),
        }
    };
    let begin = begin.max(at(data_start));
    if end <= start || base + begin as u64 >= end {
        return Ok(Cut { begin, end: begin });
    }
    // The last owned record ends at the first line break at or after end - 1.
    let from = at(end - 1).max(begin);
    match memchr(b'\n', &buf[from..]) {
        Some(i) => Ok(Cut { begin, end: from + i + 1 }),
        None if at_eof => Ok(Cut { begin, end: buf.len() }),
        None => Err(NeedMore),
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Format;
    use crate::transform::engine::{read_header, Placement, Progress, Transformer};
    use crate::transform::program::Program;
    use crate::transform::spec;

    /// The records of `file` owned by `[start, end)`, as the engine outputs them.
    fn owned(file: &[u8], start: u64, end: u64) -> Vec<serde_json::Value> {
        let spec = spec::parse(b"{}").unwrap();
        let header = read_header(&spec.dialect, file).unwrap();
        let program = Program::compile(&spec, &header.names).unwrap();
        let buf = &file[fetch_from(start) as usize..];
        let c = cut(buf, start, end, header.data_start as u64, true).unwrap();
        let placement = Placement { line_offset: 0, range_start: Some(fetch_from(start) + c.begin as u64) };
        let mut t = Transformer::new(&spec, &program, &buf[c.begin..c.end], Format::Json, placement).unwrap();
        let mut out = Vec::new();
        while t.fill(&mut out, usize::MAX).unwrap() == Progress::More {}
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        v["records"].as_array().unwrap().clone()
    }

    fn whole(file: &[u8]) -> Vec<serde_json::Value> {
        owned(file, 0, file.len() as u64)
    }

    fn check_all_cuts(file: &[u8]) {
        let all = whole(file);
        let n = file.len() as u64;
        // Every pair of cut points, and every single cut point, across the file.
        for a in 0..=n {
            let mut joined = owned(file, 0, a);
            joined.extend(owned(file, a, n));
            assert_eq!(joined, all, "one cut at {a} in {:?}", String::from_utf8_lossy(file));
            for b in a..=n {
                let mut joined = owned(file, 0, a);
                joined.extend(owned(file, a, b));
                joined.extend(owned(file, b, n));
                assert_eq!(joined, all, "cuts at {a} and {b}");
            }
        }
    }

    #[test]
    fn boundaries_mid_record_on_newlines_crlf_and_eof() {
        check_all_cuts(b"id,name\n1,ann\n22,bob\n333,\"c, d\"\n4,e\n");
        check_all_cuts(b"id,name\r\n1,ann\r\n22,bob\r\n3,c\r\n");
        check_all_cuts(b"id,name\n1,ann\n2,no final newline");
        check_all_cuts(b"id\n1\n\n2\n");
        check_all_cuts(b"id,name\n");
    }

    #[test]
    fn the_last_record_needs_more_bytes_until_its_line_ends() {
        let file = b"h\n111\n222\n";
        // Range [0, 3) owns "111", whose line ends at offset 5: not fetched yet.
        assert_eq!(cut(&file[..4], 0, 3, 2, false), Err(NeedMore));
        assert_eq!(cut(&file[..6], 0, 3, 2, false), Ok(Cut { begin: 2, end: 6 }));
        // At the end of the file the last record ends there.
        assert_eq!(cut(&file[..9], 0, 9, 2, true), Ok(Cut { begin: 2, end: 9 }));
    }

    #[test]
    fn random_files_and_cuts() {
        let mut rng = fanout_testkit::rng::Rng::new(0x1234_5678_9abc_def1u64);
        let mut next = move || rng.next_u64();
        for _ in 0..200 {
            let mut file = b"a,b\n".to_vec();
            for _ in 0..(next() % 8) {
                let len = (next() % 6) as usize;
                let field: String = (0..len).map(|_| b"xyz,\""[(next() % 5) as usize] as char).collect();
                let field =
                    if field.contains([',', '"']) { format!("\"{}\"", field.replace('"', "\"\"")) } else { field };
                file.extend_from_slice(format!("{field},{}", next() % 100).as_bytes());
                file.extend_from_slice(if next() % 3 == 0 { b"\r\n" } else { b"\n" });
            }
            if next() % 2 == 0 {
                file.pop();
            }
            let all = whole(&file);
            let n = file.len() as u64;
            let mut cuts: Vec<u64> = (0..(next() % 5)).map(|_| next() % (n + 1)).collect();
            cuts.push(0);
            cuts.push(n);
            cuts.sort_unstable();
            let joined: Vec<_> = cuts.windows(2).flat_map(|w| owned(&file, w[0], w[1])).collect();
            assert_eq!(joined, all, "cuts {cuts:?} of {:?}", String::from_utf8_lossy(&file));
        }
    }

    #[test]
    fn trimming_cannot_hide_a_quoted_line_break() {
        let file = b"a,b\n1,\"abc\n\"\n2,x\n";
        let spec = spec::parse(br#"{"dialect": {"trim": true, "flexible": true}}"#).unwrap();
        let program = Program::compile(&spec, &["a".into(), "b".into()]).unwrap();
        let c = cut(file, 0, 8, 4, true).unwrap();
        let placement = Placement { line_offset: 0, range_start: Some(0) };
        let mut t = Transformer::new(&spec, &program, &file[c.begin..c.end], Format::Json, placement).unwrap();
        assert!(t.fill(&mut Vec::new(), usize::MAX).is_err());
    }

    #[test]
    fn quoted_line_breaks_stop_range_mode() {
        let file = b"a,b\n1,\"two\nlines\"\n3,c\n";
        let spec = spec::parse(b"{}").unwrap();
        let program = Program::compile(&spec, &["a".into(), "b".into()]).unwrap();
        let c = cut(file, 0, file.len() as u64, 4, true).unwrap();
        let placement = Placement { line_offset: 0, range_start: Some(0) };
        let mut t = Transformer::new(&spec, &program, &file[c.begin..c.end], Format::Json, placement).unwrap();
        let halt = t.fill(&mut Vec::new(), usize::MAX).unwrap_err();
        assert!(halt.message.contains("line break inside a quoted field"), "{}", halt.message);
    }
}
