//! Transform benchmark: the `vat` preset over 1 million generated rows, native
//! core vs the component in one invocation. Run with `scripts/bench.sh transform`.

use fanout::framing::Format;
use fanout::transform::engine::{read_header, run_to_end, Placement, Progress, Transformer};
use fanout::transform::program::Program;
use fanout::transform::spec;
use fanout_testkit::client::request;
use fanout_testkit::component::Component;
use std::time::Instant;

const ROWS: usize = 1_000_000;

fn main() {
    let data = fanout_testkit::data::sales(ROWS);
    let mb = data.len() as f64 / 1e6;
    let vat = spec::parse(br#"{"preset": "vat"}"#).unwrap();

    // Native: best of three runs of parse + convert + filter + serialise, one
    // core, the answer made in 64 KiB pieces as the component sends it.
    let header = read_header(&vat.dialect, &data).unwrap();
    let program = Program::compile(&vat, &header.names).unwrap();
    let placement = Placement { line_offset: header.lines, range_start: None };
    let mut native = f64::MAX;
    let mut out_len = 0;
    for _ in 0..3 {
        let started = Instant::now();
        let mut t = Transformer::new(&vat, &program, &data[header.data_start..], Format::Json, placement).unwrap();
        let mut piece = Vec::with_capacity(80 * 1024);
        out_len = 0;
        loop {
            piece.clear();
            let progress = t.fill(&mut piece, 64 * 1024).unwrap();
            out_len += piece.len();
            if progress == Progress::Done {
                break;
            }
        }
        native = native.min(started.elapsed().as_secs_f64());
    }
    assert!(run_to_end(&vat, &data, Format::Json).unwrap().len().abs_diff(out_len) < 16);

    // The component, one invocation, the same bytes over loopback.
    let limit = (data.len() + 1024).to_string();
    let c = Component::serve("transform", &[("FANOUT_MAX_REQUEST_BYTES", &limit)]);
    let (mut wasm, mut inside) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let started = Instant::now();
        let resp = request("POST", &c.url("/transform?preset=vat"), &[("content-type", "text/csv")], &data).unwrap();
        wasm = wasm.min(started.elapsed().as_secs_f64());
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body[..resp.body.len().min(500)]));
        let tail = &resp.body[resp.body.len() - 200..];
        let at = tail.windows(13).position(|w| w == b"\"process_us\":").expect("the answer ends with its timing");
        let us: String = tail[at + 13..].iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
        inside = inside.min(us.parse::<f64>().unwrap() / 1e6);
        // The same records: only the timing differs.
        assert!(resp.body.len().abs_diff(out_len) < 16, "the component's answer matches the native one");
    }

    println!(
        "transform benchmark: vat preset, {ROWS} rows, {mb:.1} MB of CSV -> {:.1} MB of JSON",
        out_len as f64 / 1e6
    );
    println!(
        "  native core:         {:7.1} MB/s  {:9.0} rows/s  (target >= 150 MB/s)",
        mb / native,
        ROWS as f64 / native
    );
    println!(
        "  component, inside:   {:7.1} MB/s  {:9.0} rows/s  ({:.2} of native; target >= 0.50)",
        mb / inside,
        ROWS as f64 / inside,
        native / inside
    );
    println!(
        "  component, 1 call:   {:7.1} MB/s  {:9.0} rows/s  ({:.2} of native, end to end: body in and answer out over loopback)",
        mb / wasm,
        ROWS as f64 / wasm,
        native / wasm
    );
}
