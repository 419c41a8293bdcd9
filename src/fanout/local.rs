//! A transform job run in this process, the way the coordinator runs it: the
//! file cut into chunks by the [`Splitter`], each chunk transformed as a
//! worker would, the answers checked and merged in order by the [`Driver`].
//! The output is the coordinator's, byte for byte but for timings, so a spec
//! can be developed on a local file without a server (`fanout transform --local`).
//!
//! Memory is bounded as in the coordinator: one chunk and its answer at a time.

use super::driver::{Action, CallError, Driver, Report};
use super::merge::{ChunkMeta, TableMerge, TableMode};
use super::options::{self, JobOptions};
use super::split::Splitter;
use crate::api::ErrorKind;
use crate::config::Config;
use crate::framing::Format;
use crate::transform::engine::{self, prepare, read_header, run_compiled, Placement, RunError};
use crate::transform::program::Program;
use crate::transform::spec::Spec;
use std::io::{self, Read, Write};
use std::time::Instant;

/// Input is read in pieces of this size.
const READ_BYTES: usize = 1024 * 1024;

/// Why a local job produced no complete output.
#[derive(Debug)]
pub enum LocalError {
    /// The spec does not fit the file (or the file has no header): nothing was written.
    Spec(String),
    /// Reading the input or writing the output failed.
    Io(io::Error),
}

impl std::fmt::Display for LocalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LocalError::Spec(m) => f.write_str(m),
            LocalError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LocalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LocalError::Spec(_) => None,
            LocalError::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for LocalError {
    fn from(e: io::Error) -> LocalError {
        LocalError::Io(e)
    }
}

/// Runs `spec` over the CSV read from `input` in chunks of about `chunk_bytes`
/// (checked against `config` as the coordinator checks it), writing the job's
/// output in `format` to `out` and telling `progress` the report after each
/// chunk. `options` are the coordinator's job options (failure thresholds,
/// deadline; concurrency is 1 here). Returns the final report.
#[allow(clippy::too_many_arguments)]
pub fn transform(
    spec: &Spec,
    mut input: impl Read,
    format: Format,
    config: &Config,
    chunk_bytes: Option<u64>,
    options: &JobOptions,
    out: &mut impl Write,
    mut progress: impl FnMut(&Report),
) -> Result<Report, LocalError> {
    engine::reader(&spec.dialect, &[]).map_err(LocalError::Spec)?;
    let chunk_bytes =
        options::chunk_bytes(chunk_bytes, config).map_err(|e| LocalError::Spec(e.message().to_owned()))?;
    let (delimiter, quote) = spec.dialect.bytes();
    let mut splitter = Splitter::new(delimiter, quote, spec.dialect.header, chunk_bytes, config.max_request_bytes);
    let mut piece = vec![0; READ_BYTES];
    let mut ended = false;
    let mut read = |splitter: &mut Splitter, ended: &mut bool| -> io::Result<()> {
        let n = input.read(&mut piece)?;
        if n == 0 {
            splitter.end();
            *ended = true;
        } else {
            splitter.push(&piece[..n]);
        }
        Ok(())
    };
    while !splitter.find_header().map_err(|e| LocalError::Spec(e.0))? {
        read(&mut splitter, &mut ended)?;
    }
    let names = read_header(&spec.dialect, splitter.header().unwrap_or_default()).map_err(LocalError::Spec)?.names;
    let (mode, chunk_spec) = TableMode::of_spec(spec, &names).map_err(LocalError::Spec)?;
    let program = prepare(&chunk_spec, &names).map_err(LocalError::Spec)?;

    let options = JobOptions { concurrency: Some(1), ..options.clone() };
    let mut limits = options.limits(config, chunk_bytes).map_err(|e| LocalError::Spec(e.message().to_owned()))?;
    // The same chunk gives the same answer here every time: a retry cannot help.
    limits.retry.max_attempts = 1;
    limits.progress_every = None;
    let mut driver = Driver::new(TableMerge::new(format, mode, spec.filter.is_some()), limits, 0);
    let started = Instant::now();
    loop {
        match driver.poll(started.elapsed()) {
            Action::Call(call) => {
                let Some(ChunkMeta::Lines { line_offset, .. }) = driver.meta(call.seq) else {
                    unreachable!("local jobs are cut into chunks of lines")
                };
                let answer = answer(&chunk_spec, &program, &call.payload, *line_offset);
                driver.answered(call.id, answer, started.elapsed());
                progress(&driver.report());
            }
            Action::Emit(bytes) => out.write_all(&bytes)?,
            Action::Cancel(_) => {}
            Action::Done => break,
            Action::Wait(_) if driver.wants_input() => match splitter.next_piece() {
                Ok(Some(piece)) => driver.take(ChunkMeta::input(piece, config.max_request_bytes)),
                Ok(None) if ended => driver.end_input(),
                Ok(None) => {
                    if let Err(e) = read(&mut splitter, &mut ended) {
                        driver.input_failed(e.to_string());
                    }
                }
                Err(e) => driver.input_failed(e.0),
            },
            // Calls finish as they start here, so only a time (the job's deadline) is left to wait for.
            Action::Wait(Some(at)) => std::thread::sleep(at.saturating_sub(started.elapsed())),
            Action::Wait(None) => unreachable!("a local job with no input and no call still running is done"),
        }
    }
    out.flush()?;
    Ok(driver.report())
}

/// The answer a transform worker gives for `chunk` (its header and records),
/// whose lines start after `line_offset` lines of the file.
fn answer(spec: &Spec, program: &Program, chunk: &[u8], line_offset: u64) -> Result<Vec<u8>, CallError> {
    let header = read_header(&spec.dialect, chunk).map_err(CallError::Permanent)?;
    let placement = Placement { line_offset: header.lines + line_offset, ..Placement::default() };
    match run_compiled(spec, program, &chunk[header.data_start..], Format::Json, placement) {
        Ok(answer) => Ok(answer),
        Err(RunError::Spec(m)) => Err(CallError::Permanent(m)),
        Err(RunError::Halt(h)) => Err(CallError::Fatal(ErrorKind::BadRow, h.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::engine::run_to_end;
    use crate::transform::spec;
    use serde_json::Value;

    fn csv() -> Vec<u8> {
        let mut csv = b"id,amount,region\n".to_vec();
        for i in 1..=2000 {
            let row = match i % 97 {
                0 => format!("{i},not a number,north\n"),
                1 => format!("\"{i}\",\"1{i}.5\",\"so\nuth\"\n"),
                _ => format!("{i},{}.25,{}\n", i % 50, ["north", "south", "east"][i % 3]),
            };
            csv.extend_from_slice(row.as_bytes());
        }
        csv
    }

    fn local(spec: &Spec, data: &[u8], format: Format, options: &JobOptions) -> (Vec<u8>, Report, usize) {
        let mut out = Vec::new();
        let mut reports = 0;
        let config = Config { min_chunk_bytes: 256, ..Config::default() };
        let report = transform(spec, data, format, &config, Some(512), options, &mut out, |_| reports += 1).unwrap();
        (out, report, reports)
    }

    #[test]
    fn chunked_output_is_the_whole_files_answer() {
        let data = csv();
        for text in [
            r#"{"columns": ["id", {"from": "amount", "type": "float"}, "region"], "on_error": "skip"}"#,
            r#"{"columns": ["id", {"from": "amount", "type": "float"}, "region"], "aggregate": {"group_by": ["region"],
                "metrics": [{"name": "total", "op": "sum", "column": "amount"}, {"op": "rows"}]}}"#,
        ] {
            let spec = spec::parse(text.as_bytes()).unwrap();
            let whole: Value = serde_json::from_slice(&run_to_end(&spec, &data, Format::Json).unwrap()).unwrap();
            let (out, report, reports) = local(&spec, &data, Format::Json, &JobOptions::default());
            let merged: Value = serde_json::from_slice(&out).unwrap();
            for key in ["records", "groups", "errors", "stats"] {
                assert_eq!(merged.get(key), whole.get(key), "{key} of {text}");
            }
            assert_eq!(merged["summary"]["status"], "complete");
            assert!(report.counters.units > 20 && reports as u64 == report.counters.units, "{reports}");
        }
    }

    #[test]
    fn ndjson_carries_the_same_records_and_thresholds_stop_the_job() {
        let data = csv();
        let spec = spec::parse(br#"{"columns": ["id", {"from": "amount", "type": "float"}, "region"]}"#).unwrap();
        let (out, _, _) = local(&spec, &data, Format::Ndjson, &JobOptions::default());
        let lines: Vec<Value> =
            out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| serde_json::from_slice(l).unwrap()).collect();
        assert_eq!(lines.iter().filter(|l| l.get("record").is_some()).count(), 2000 - 20);
        assert_eq!(lines.iter().filter(|l| l.get("error").is_some()).count(), 20);
        assert_eq!(lines.last().unwrap()["summary"]["rows_in"], 2000);

        let options = JobOptions { tolerated_failures: Some(3), ..JobOptions::default() };
        let (_, report, _) = local(&spec, &data, Format::Json, &options);
        assert_eq!(report.status, crate::fanout::driver::Status::Stopped);
    }

    #[test]
    fn a_bad_row_under_fail_fails_the_job_and_a_wrong_spec_writes_nothing() {
        let data = csv();
        let spec =
            spec::parse(br#"{"columns": ["id", {"from": "amount", "type": "float"}, "region"], "on_error": "fail"}"#)
                .unwrap();
        let (out, report, _) = local(&spec, &data, Format::Json, &JobOptions::default());
        assert_eq!(report.status, crate::fanout::driver::Status::Failed);
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["summary"]["reason"].as_str().unwrap().contains("line 99: column \"amount\""), "{v}");

        let spec = spec::parse(br#"{"columns": [{"from": "price", "type": "float"}]}"#).unwrap();
        let mut out = Vec::new();
        let config = Config::default();
        let err = transform(&spec, &data[..], Format::Json, &config, None, &JobOptions::default(), &mut out, |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("price"), "{err}");
        assert!(out.is_empty());
    }
}
