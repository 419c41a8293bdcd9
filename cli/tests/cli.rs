//! The `fanout` command against the real bundle under wasmtime serve and a
//! local fixture site: both job kinds, their output against what the HTTP API
//! answers for the same job, progress, exit codes and one-line errors.

use fanout_testkit::client::{request, stream_lines};
use fanout_testkit::component::Component;
use fanout_testkit::proxy::{Fault, Proxy};
use fanout_testkit::site::Site;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Summary fields that differ from run to run.
const TIMINGS: [&str; 5] = ["elapsed_ms", "rows_per_s", "mb_per_s", "pages_per_s", "peak_held_bytes"];

/// The coordinator wired to both workers; `private` lets them read from loopback.
struct Bundle {
    coordinator: Component,
    _transform: Component,
    _scrape: Component,
}

fn bundle(private: bool) -> Bundle {
    let allow = if private { "true" } else { "false" };
    let transform = Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", allow)]);
    let scrape = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let coordinator = Component::serve(
        "coordinator",
        &[
            ("FANOUT_TRANSFORM_URL", &transform.url("/transform")),
            ("FANOUT_SCRAPE_URL", &scrape.url("/scrape")),
            ("FANOUT_ALLOW_PRIVATE_HOSTS", allow),
            ("FANOUT_MIN_CHUNK_BYTES", "1024"),
        ],
    );
    Bundle { coordinator, _transform: transform, _scrape: scrape }
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("fanout-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn fanout(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fanout"));
    cmd.args(args).env_remove("FANOUT_ENDPOINT").env_remove("FANOUT_TOKEN").stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> Output {
    fanout(args).output().unwrap()
}

/// `fanout ARGS --endpoint ENDPOINT -o OUT`: a job sent to a coordinator, its output in a file.
fn run_job(args: &[&str], endpoint: &str, out: impl AsRef<Path>) -> Output {
    let out = out.as_ref().to_str().unwrap();
    run(&[args, &["--endpoint", endpoint, "-o", out]].concat())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json_file(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `v` without the summary's timings.
fn untimed(mut v: Value) -> Value {
    if let Some(summary) = v.get_mut("summary").and_then(Value::as_object_mut) {
        for key in TIMINGS {
            summary.remove(key);
        }
    }
    v
}

/// 3,000 sales rows, one of them short.
fn sales_with_a_bad_row() -> Vec<u8> {
    let mut csv = fanout_testkit::data::sales(3000);
    csv.extend_from_slice(b"3001,12.50\n");
    csv
}

/// Ctrl-C, as a terminal sends it.
fn interrupt(child: &std::process::Child) {
    // SAFETY: kill(2) only sends a signal, to a child this test started and has not reaped.
    assert_eq!(unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) }, 0);
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn transform_output_is_what_the_http_api_answers_in_every_mode() {
    let b = bundle(true);
    let site = Site::start();
    let dir = Dir::new("transform");
    let csv = sales_with_a_bad_row();
    let file = dir.file("sales.csv", &csv);
    let endpoint = b.coordinator.url("/");
    let file = file.to_str().unwrap();

    // Source-URL mode (the default): the same job as a source on the fixture site.
    let out = dir.path("source.json");
    let cli =
        run_job(&["transform", file, "--preset", "vat", "--chunk-bytes", "8192"], &endpoint, out.to_str().unwrap());
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    assert!(stderr(&cli).contains("complete with 1 row failed"), "{}", stderr(&cli));
    site.put("sales.csv", "text/csv", csv.clone());
    let job = json!({"source": site.url("/files/sales.csv"), "spec": {"preset": "vat"}, "chunk_bytes": 8192});
    let api = request(
        "POST",
        &b.coordinator.url("/coordinate/transform"),
        &[("content-type", "application/json")],
        job.to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(api.status, 200);
    let (cli_json, api_json) = (untimed(json_file(&out)), untimed(api.json()));
    assert!(cli_json["records"].as_array().unwrap().len() > 2500);
    assert_eq!(cli_json, api_json);

    // A streamed body, NDJSON: the records the API sends, one a line; its error records and summary on stderr.
    let out = dir.path("stream.ndjson");
    let errors = dir.path("stream-errors.ndjson");
    let cli = run_job(
        &[
            "transform",
            file,
            "--preset",
            "vat",
            "--chunk-bytes",
            "8192",
            "--stream",
            "--format",
            "ndjson",
            "--errors",
            errors.to_str().unwrap(),
        ],
        &endpoint,
        out.to_str().unwrap(),
    );
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let api: Vec<Value> = stream_lines(
        "POST",
        &b.coordinator.url("/coordinate/transform?preset=vat&chunk_bytes=8192"),
        &[("content-type", "text/csv"), ("accept", "application/x-ndjson")],
        &csv,
    )
    .unwrap()
    .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
    .filter(|v: &Value| v.get("progress").is_none())
    .map(untimed)
    .collect();
    let lines = |path: &Path| -> Vec<Value> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| untimed(serde_json::from_str(l).unwrap())).collect()
    };
    let records: Vec<Value> = api.iter().filter_map(|v| v.get("record").cloned()).collect();
    let apart: Vec<Value> = api.iter().filter(|v| v.get("record").is_none()).cloned().collect();
    assert_eq!(lines(&out), records);
    assert_eq!(lines(&errors), apart);

    // An aggregate, streamed: the groups merged from every chunk.
    let spec = r#"{"columns": ["region", {"from": "amount", "type": "float"}], "aggregate": {"group_by": ["region"], "metrics": [{"name": "total", "op": "sum", "column": "amount"}, {"op": "rows"}]}}"#;
    let out = dir.path("groups.json");
    let cli = run_job(
        &["transform", file, "--spec-json", spec, "--chunk-bytes", "8192", "--stream"],
        &endpoint,
        out.to_str().unwrap(),
    );
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let api = request(
        "POST",
        &b.coordinator.url("/coordinate/transform?chunk_bytes=8192"),
        &[("content-type", "text/csv"), ("x-fanout-spec", spec)],
        &csv,
    )
    .unwrap();
    assert_eq!(untimed(json_file(&out)), untimed(api.json()));
    assert_eq!(json_file(&out)["groups"].as_array().unwrap().len(), 4);
}

#[test]
fn a_local_run_gives_the_coordinators_output_without_a_server() {
    let b = bundle(true);
    let dir = Dir::new("local");
    let csv = sales_with_a_bad_row();
    let file = dir.file("sales.csv", &csv);
    let file = file.to_str().unwrap();
    for spec in [
        r#"{"preset": "vat"}"#,
        r#"{"columns": ["category", {"from": "amount", "type": "float"}], "aggregate": {"group_by": ["category"], "metrics": [{"name": "n", "op": "count", "column": "amount"}, {"name": "sum", "op": "sum", "column": "amount"}]}}"#,
    ] {
        let out = dir.path("local.json");
        // The limits are the environment's, as a coordinator's are: here, its smallest chunk.
        let args =
            ["transform", file, "--spec-json", spec, "--chunk-bytes", "8192", "--local", "-o", out.to_str().unwrap()];
        let cli = fanout(&args).env("FANOUT_MIN_CHUNK_BYTES", "1024").output().unwrap();
        assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
        let url = b.coordinator.url("/coordinate/transform?chunk_bytes=8192");
        let api = request("POST", &url, &[("content-type", "text/csv"), ("x-fanout-spec", spec)], &csv).unwrap();
        let (mut local, mut api) = (untimed(json_file(&out)), untimed(api.json()));
        // A local run calls no worker over HTTP, but it counts its chunks the same way.
        assert_eq!(local["summary"]["chunks"], api["summary"]["chunks"]);
        local["summary"]["invocations"] = Value::Null;
        api["summary"]["invocations"] = Value::Null;
        assert_eq!(local, api, "{spec}");
    }
}

/// Records and error records (kind and line) of a transform answer, whatever the mode.
fn rows_of(answer: &Value) -> (Value, Vec<(String, u64)>) {
    let errors = answer["errors"].as_array().unwrap();
    let errors = errors.iter().map(|e| (e["kind"].as_str().unwrap().to_owned(), e["line"].as_u64().unwrap()));
    (answer["records"].clone(), errors.collect())
}

#[test]
fn quoted_line_breaks_at_every_range_edge_read_as_the_local_run_does() {
    let b = bundle(true);
    let dir = Dir::new("quoted");
    // Every row a note over three lines, so that nearly every range starts inside one; every 97th amount bad.
    let mut csv = b"id,note,amount\n".to_vec();
    for id in 0..6000 {
        let amount = if id % 97 == 5 { "n/a".to_owned() } else { format!("{}.5", id % 50) };
        csv.extend_from_slice(format!("{id},\"line one, \"\"{id}\"\"\nline two\r\nthree\",{amount}\n").as_bytes());
    }
    let file = dir.file("notes.csv", &csv);
    let file = file.to_str().unwrap();
    let spec = r#"{"columns": ["id", "note", {"from": "amount", "type": "float"}]}"#;
    let (ranged, local) = (dir.path("ranged.json"), dir.path("local.json"));
    let args = ["transform", file, "--spec-json", spec, "--chunk-bytes", "4096"];
    let cli = run_job(&args, &b.coordinator.url("/"), &ranged);
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let cli = fanout(&[&args[..], &["--local", "-o", local.to_str().unwrap()]].concat())
        .env("FANOUT_MIN_CHUNK_BYTES", "1024")
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let (ranged, local) = (json_file(&ranged), json_file(&local));
    assert_eq!(ranged["records"].as_array().unwrap().len(), 6000 - 62);
    assert_eq!(rows_of(&ranged), rows_of(&local));
    assert_eq!(ranged["stats"], local["stats"]);
    let summary = &ranged["summary"];
    assert!(summary["chunks"].as_u64().unwrap() > 60, "{summary}");
    assert!(summary["ranges_read_again"].as_u64().unwrap() > 20, "ranges started inside a quoted field: {summary}");
    assert_eq!(summary["retries"], 0, "a range read again is not a retry: {summary}");
    assert_eq!(ranged["errors"][0]["line"], 3 * 5 + 2, "the file's line, as --local counts it");
}

#[test]
fn a_record_over_the_workers_limit_costs_only_itself() {
    let b = bundle(true);
    let dir = Dir::new("huge");
    let mut csv = b"id,note,amount\n".to_vec();
    for id in 0..500 {
        csv.extend_from_slice(format!("{id},short,{id}.5\n").as_bytes());
    }
    // 20 MB in one quoted field, over the workers' 16 MiB request limit, with line breaks inside.
    let big: String = (0..20_000).map(|i| format!("{:0>999}\n", i)).collect();
    csv.extend_from_slice(format!("500,\"{big}\",1.5\n").as_bytes());
    for id in 501..1000 {
        csv.extend_from_slice(format!("{id},short,{id}.5\n").as_bytes());
    }
    let file = dir.file("huge.csv", &csv);
    let out = dir.path("out.json");
    let spec = r#"{"columns": ["id", "note", {"from": "amount", "type": "float"}]}"#;
    let cli = run_job(&["transform", file.to_str().unwrap(), "--spec-json", spec], &b.coordinator.url("/"), &out);
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let answer = json_file(&out);
    assert_eq!(answer["records"].as_array().unwrap().len(), 999, "every other row");
    let errors = answer["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!((errors[0]["kind"].as_str(), errors[0]["line"].as_u64()), (Some("too_large"), Some(502)));
    assert_eq!(answer["stats"]["rows_in"], 1000);
    assert_eq!(answer["summary"]["bytes_not_processed"], 0, "{}", answer["summary"]);
}

/// `fanout ARGS` with `input` on its standard input.
fn run_with_stdin(args: &[&str], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = fanout(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

#[test]
fn every_input_a_user_has_reads_as_the_file_does() {
    let b = bundle(true);
    let site = Site::start();
    let dir = Dir::new("inputs");
    let csv = sales_with_a_bad_row();
    let endpoint = b.coordinator.url("/");
    let file = dir.file("sales.csv", &csv);
    let want = dir.path("want.json");
    let cli = run_job(&["transform", file.to_str().unwrap(), "--preset", "vat"], &endpoint, &want);
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let want = rows_of(&json_file(&want));
    assert!(want.0.as_array().unwrap().len() > 2500);
    let same_as_file = |name: &str, cli: Output, out: &Path| {
        assert_eq!(cli.status.code(), Some(2), "{name}: {}", stderr(&cli));
        assert_eq!(rows_of(&json_file(out)), want, "{name}");
    };

    // Standard input, a gzip file (by its name, and by its magic bytes), a pipe, a URL.
    let out = dir.path("stdin.json");
    let args = ["transform", "-", "--preset", "vat", "--endpoint", &endpoint, "-o", out.to_str().unwrap()];
    same_as_file("stdin", run_with_stdin(&args, &csv), &out);
    let gz = dir.file("sales.csv.gz", &gzip(&csv));
    let out = dir.path("gz.json");
    same_as_file("gz", run_job(&["transform", gz.to_str().unwrap(), "--preset", "vat"], &endpoint, &out), &out);
    let renamed = dir.file("sales.dat", &gzip(&csv));
    let cli = run_job(&["transform", renamed.to_str().unwrap(), "--preset", "vat", "--local"], &endpoint, &out);
    same_as_file("gzip magic, --local", cli, &out);
    let fifo = dir.path("pipe.csv");
    let path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo(3) only creates a FIFO at a path this test owns.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    // The pipe has no writer yet: the CLI says it waits for one, and reads what one then writes.
    let out = dir.path("fifo.json");
    let args = ["transform", fifo.to_str().unwrap(), "--preset", "vat", "--endpoint", &endpoint];
    let mut child = fanout(&args).args(["-o", out.to_str().unwrap()]).stderr(Stdio::piped()).spawn().unwrap();
    let said = {
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || stderr.lines().map_while(Result::ok).try_for_each(|l| tx.send(l)));
        rx
    };
    let first = said.recv_timeout(Duration::from_secs(10));
    if first.as_deref().map_or(true, |l| !l.contains("(a pipe) until its writer closes it")) {
        child.kill().unwrap();
        // Let the CLI's open of the pipe return, so that nothing is left waiting.
        drop(std::fs::OpenOptions::new().write(true).open(&fifo));
        panic!("the CLI did not say it waits for the pipe's writer: {first:?}");
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "the CLI ended before the pipe had a writer");
    std::fs::write(&fifo, &csv).unwrap();
    let code = child.wait().unwrap().code();
    assert_eq!(code, Some(2), "{}", said.try_iter().collect::<Vec<_>>().join("\n"));
    assert_eq!(rows_of(&json_file(&out)), want, "fifo");
    site.put("sales.csv", "text/csv", csv.clone());
    let out = dir.path("url.json");
    let url = site.url("/files/sales.csv");
    same_as_file("url", run_job(&["transform", &url, "--preset", "vat"], &endpoint, &out), &out);

    // A TSV by its extension, a delimiter given, no spec (every column a string), Latin-1.
    let tsv = dir.file("s.tsv", b"id\tname\n1\tann\n2\tbob\n");
    let out = dir.path("tsv.json");
    let cli = run_job(&["transform", tsv.to_str().unwrap()], &endpoint, &out);
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert_eq!(json_file(&out)["records"], json!([{"id": "1", "name": "ann"}, {"id": "2", "name": "bob"}]));
    let semi = dir.file("s.txt", b"id;name\n1;Caf\xe9\n");
    let cli =
        run_job(&["transform", semi.to_str().unwrap(), "--delimiter", ";", "--encoding", "latin1"], &endpoint, &out);
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert_eq!(json_file(&out)["records"], json!([{"id": "1", "name": "Café"}]));
    let cli = run(&["transform", semi.to_str().unwrap(), "--delimiter", ";;", "--local"]);
    fails_with_one_line(&cli, "not one character");
    let cli = run(&["transform", semi.to_str().unwrap(), "--encoding", "klingon", "--local"]);
    fails_with_one_line(&cli, "not an encoding label");

    // A directory is one line saying so, whatever the environment's RUST_BACKTRACE.
    let cli = fanout(&["transform", dir.0.to_str().unwrap(), "--local"]).env("RUST_BACKTRACE", "1").output().unwrap();
    fails_with_one_line(&cli, "is a directory");
}

#[test]
fn outputs_take_their_format_from_the_flag_or_the_file_name() {
    let b = bundle(true);
    let dir = Dir::new("outputs");
    let csv = b"id,amount,note\n1,2.5,\"a, b\"\n2,x,c\n3,4,\n";
    let file = dir.file("t.csv", csv);
    let file = file.to_str().unwrap();
    let endpoint = b.coordinator.url("/");
    let spec = r#"{"columns": [{"from": "note"}, {"from": "amount", "type": "float"}, "id"]}"#;
    for local in [false, true] {
        let mode = if local { "--local" } else { "--stream" };
        // CSV, from -o's extension: the spec's column order, quoted as RFC 4180 says, nulls empty.
        let out = dir.path("out.csv");
        let errors = dir.path("errors.ndjson");
        let args = ["transform", file, "--spec-json", spec, mode, "--errors", errors.to_str().unwrap()];
        let cli = run_job(&args, &endpoint, &out);
        assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "note,amount,id\n\"a, b\",2.5,1\n,4.0,3\n", "{mode}");
        let side = std::fs::read_to_string(&errors).unwrap();
        assert_eq!(side.lines().count(), 2, "{mode}: the error record and the summary: {side}");
        assert!(side.lines().next().unwrap().contains("\"line\":3"), "{side}");
        // NDJSON: one record a line and nothing else; the rest on stderr.
        let out = dir.path("out.jsonl");
        let cli = run_job(&["transform", file, "--spec-json", spec, mode], &endpoint, &out);
        assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
        let lines: Vec<Value> =
            std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(
            lines,
            [json!({"note": "a, b", "amount": 2.5, "id": "1"}), json!({"note": "", "amount": 4.0, "id": "3"})]
        );
        assert!(stderr(&cli).contains("\"summary\""), "{}", stderr(&cli));
        // JSON ends with a line break; --format wins over the extension.
        let out = dir.path("out.csv");
        let cli = run_job(&["transform", file, "--spec-json", spec, mode, "--format", "json"], &endpoint, &out);
        assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with('{') && text.ends_with("}\n"), "{mode}: {text}");
    }
    let partial = r#"{"aggregate": {"metrics": [{"op": "rows"}], "partial": true}}"#;
    fails_with_one_line(
        &run(&["transform", file, "--spec-json", partial, "--local", "--format", "csv"]),
        "no CSV form",
    );
}

#[test]
fn scrape_output_is_what_the_http_api_answers() {
    let b = bundle(true);
    let site = Site::start();
    let dir = Dir::new("scrape");
    let urls =
        format!("# a list\n{0}/page/a\n\n{0}/page/b?pad=5000\n{0}/status/404\nnot a url\n{0}/page/a\n", site.url(""));
    let file = dir.file("urls.txt", urls.as_bytes());
    let out = dir.path("pages.json");
    let cli = run_job(
        &["scrape", file.to_str().unwrap(), "--select", "heading=h1", "--links", "--batch-size", "2"],
        &b.coordinator.url("/"),
        out.to_str().unwrap(),
    );
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    assert!(stderr(&cli).contains("complete with 2 URLs failed"), "{}", stderr(&cli));
    let job = r#"{"select": {"heading": "h1"}, "options": {"links": true}, "batch_size": 2}"#;
    let api = request(
        "POST",
        &b.coordinator.url("/coordinate/scrape"),
        &[("content-type", "text/plain"), ("x-fanout-job", job)],
        urls.as_bytes(),
    )
    .unwrap();
    let (cli_json, api_json) = (untimed(json_file(&out)), untimed(api.json()));
    // Fetch times differ between the two runs.
    let strip = |mut v: Value| {
        for r in v["results"].as_array_mut().unwrap() {
            if let Some(page) = r.get_mut("page").and_then(Value::as_object_mut) {
                page.remove("fetch_ms");
                page.remove("parse_us");
            }
            if let Some(error) = r.get_mut("error").and_then(Value::as_object_mut) {
                error.remove("elapsed_ms");
            }
        }
        v
    };
    let (cli_json, api_json) = (strip(cli_json), strip(api_json));
    assert_eq!(cli_json["results"].as_array().unwrap().len(), 5);
    assert_eq!(cli_json["results"][0]["page"]["select"]["heading"], "Heading a");
    assert_eq!(cli_json, api_json);
}

#[test]
fn scrape_flags_reach_every_page_and_a_host_never_has_more_than_per_host_pages_at_once() {
    let b = bundle(true);
    let site = Site::start();
    site.set_robots("User-agent: *\nDisallow: /page/secret\n");
    let dir = Dir::new("scrape-flags");
    let mut urls: String = (0..24).map(|i| format!("{}/page/{i}?delay_ms=150\n", site.url(""))).collect();
    urls.push_str(&format!("{0}/page/secret\n{0}/echo-ua\n{0}/page/slow?delay_ms=2000\n", site.url("")));
    let file = dir.file("urls.txt", urls.as_bytes());
    let out = dir.path("pages.json");
    let args = [
        "scrape",
        file.to_str().unwrap(),
        "--select",
        "canonical=link[rel=canonical]@href",
        "--select",
        "h=h1",
        "--select-all",
        "--robots",
        "--user-agent",
        "acme-bot/1.0",
        "--timeout",
        "0.5",
        "--per-host",
        "2",
        "--batch-size",
        "3",
        "--concurrency",
        "8",
    ];
    let cli = run_job(&args, &b.coordinator.url("/"), &out);
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let results = json_file(&out)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 27);
    let select = &results[0]["page"]["select"];
    assert_eq!(select["h"], json!(["Heading 0"]), "{select}");
    assert!(select["canonical"][0].as_str().unwrap().ends_with("/page/0"), "{select}");
    assert_eq!(results[24]["error"]["kind"], "robots", "{}", results[24]);
    assert_eq!(results[25]["page"]["title"], "acme-bot/1.0", "{}", results[25]);
    assert_eq!(results[26]["error"]["kind"], "timeout", "{}", results[26]);
    // Nine batches could run at once, but the site never had more than two pages at once.
    assert_eq!(site.peak(), 2, "the most /page/ requests the site had at once");
}

#[test]
fn a_delay_spaces_the_requests_to_a_host_across_the_whole_job() {
    let b = bundle(true);
    let site = Site::start();
    let dir = Dir::new("delay");
    // Six pages of one host, a batch each: two at once would fit --per-host 2.
    let urls: String = (0..6).map(|i| format!("{}\n", site.url(&format!("/page/d{i}")))).collect();
    let file = dir.file("urls.txt", urls.as_bytes());
    let out = dir.path("pages.json");
    let started = Instant::now();
    let args = ["scrape", file.to_str().unwrap(), "--delay", "0.3", "--per-host", "2", "--batch-size", "1"];
    let cli = run_job(&[&args[..], &["--concurrency", "8"]].concat(), &b.coordinator.url("/"), &out);
    let took = started.elapsed();
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert_eq!(json_file(&out)["results"].as_array().unwrap().len(), 6);
    // Each request starts 0.3 s after the one before it (the first too): at least 1.8 s in all.
    assert!(took >= Duration::from_millis(1800), "six requests 0.3 s apart took {took:?}");
    assert_eq!(site.peak(), 1, "pages this fast are never two at once when 0.3 s apart");
}

#[test]
fn progress_is_printed_as_lines_when_stderr_is_not_a_terminal() {
    let b = bundle(true);
    let site = Site::start();
    let dir = Dir::new("progress");
    let urls: String = (0..8).map(|i| format!("{}\n", site.url(&format!("/page/{i}?delay_ms=400")))).collect();
    let file = dir.file("urls.txt", urls.as_bytes());
    let out = dir.path("pages.ndjson");
    let cli = run_job(
        &["scrape", file.to_str().unwrap(), "--batch-size", "1", "--concurrency", "2", "--format", "ndjson"],
        &b.coordinator.url("/"),
        out.to_str().unwrap(),
    );
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    let err = stderr(&cli);
    let progress: Vec<&str> = err.lines().filter(|l| l.contains(" pages · ")).collect();
    assert!(!progress.is_empty() && progress[0].starts_with("fanout: ") && progress[0].contains("% · "), "{err}");
    assert!(err.lines().last().unwrap().starts_with("fanout: complete: 8 URLs, 8 pages, 0 errors"), "{err}");
    let lines = std::fs::read_to_string(&out).unwrap();
    assert_eq!(lines.lines().count(), 8, "a result a URL, no progress, the summary apart: {lines}");
    assert!(!lines.contains("\"progress\"") && !lines.contains("\"summary\""));
}

#[test]
fn progress_is_a_bar_on_a_terminal() {
    let b = bundle(true);
    let site = Site::start();
    let dir = Dir::new("bar");
    let urls: String = (0..8).map(|i| format!("{}\n", site.url(&format!("/page/{i}?delay_ms=400")))).collect();
    let file = dir.file("urls.txt", urls.as_bytes());
    let out = dir.path("pages.json");
    let command = |output: &str| {
        format!(
            "stty cols 80 rows 24; {} scrape {} --batch-size 1 --concurrency 2 --endpoint {} {output}",
            env!("CARGO_BIN_EXE_fanout"),
            file.display(),
            b.coordinator.url("/"),
        )
    };
    // `script` (util-linux) runs the command on a pseudo-terminal and copies what it shows.
    let on_terminal = |command: String| {
        let shown =
            Command::new("script").args(["-qefc", &command, "/dev/null"]).env_remove("FANOUT_ENDPOINT").output();
        let shown = shown.expect("script (util-linux) runs the CLI on a terminal");
        assert_eq!(shown.status.code(), Some(0), "{}", String::from_utf8_lossy(&shown.stdout));
        String::from_utf8_lossy(&shown.stdout).into_owned()
    };
    let text = on_terminal(command(&format!("-o {}", out.display())));
    assert!(text.contains("/8 URLs") && text.contains("/s · "), "{text}");
    assert!(!text.contains("fanout: 0%") && !text.contains("% · "), "no progress lines on a terminal: {text}");
    assert_eq!(json_file(&out)["results"].as_array().unwrap().len(), 8);
    // Every state of the bar fits 80 columns, with room for the bar itself.
    let plain = strip_ansi(&text);
    for state in plain.split(['\r', '\n']).filter(|l| l.contains("/8 URLs")) {
        assert!(state.chars().count() <= 80, "{} columns: {state:?}", state.chars().count());
        assert!(!state.contains("[]"), "the bar has room: {state:?}");
    }
    // Output on the terminal itself: no bar draws over it.
    let text = on_terminal(command(""));
    assert!(text.contains("\"results\"") && !text.contains("/8 URLs"), "{text}");
}

/// `text` without its terminal escape sequences (`ESC [ ... letter`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Exit code 1 with exactly one line on stderr, holding `says`.
fn fails_with_one_line(cli: &Output, says: &str) {
    let err = stderr(cli);
    assert_eq!(cli.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.starts_with("fanout: ") && err.contains(says), "{says:?} in {err}");
}

#[test]
fn exit_codes_say_how_the_job_went_and_errors_take_one_line() {
    let b = bundle(true);
    let dir = Dir::new("exit");
    let endpoint = b.coordinator.url("/");
    let good = dir.file("good.csv", &fanout_testkit::data::sales(500));
    let bad = dir.file("bad.csv", &sales_with_a_bad_row());
    let (good, bad) = (good.to_str().unwrap(), bad.to_str().unwrap());
    let out = dir.path("out.json");
    let out = out.to_str().unwrap();

    let cli = run_job(&["transform", good, "--preset", "vat"], &endpoint, out);
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert!(stderr(&cli).contains("complete: 500 rows in"), "{}", stderr(&cli));

    // `on_error: fail` meets the short row: the job fails as a whole.
    let fail = r#"{"preset": "vat", "on_error": "fail"}"#;
    let cli = run_job(&["transform", bad, "--spec-json", fail, "--stream"], &endpoint, out);
    fails_with_one_line(&cli, "row has 2 fields but the header has 6");

    let unreachable = format!("http://127.0.0.1:{}/", free_port());
    fails_with_one_line(
        &run(&["transform", good, "--preset", "vat", "--endpoint", &unreachable]),
        "cannot reach the coordinator at",
    );
    fails_with_one_line(
        &run(&["scrape", "/nonexistent/urls.txt", "--endpoint", &endpoint]),
        "cannot open /nonexistent/urls.txt",
    );
    fails_with_one_line(
        &run(&[
            "transform",
            good,
            "--spec-json",
            r#"{"columns": [{"from": "amount", "type": "money"}]}"#,
            "--endpoint",
            &endpoint,
        ]),
        "the spec (--spec-json) is not valid: invalid spec at columns[0]: type: unknown variant `money`",
    );
    let spec = dir.file("spec.json", b"{\"preset\": ");
    fails_with_one_line(&run(&["transform", good, "--spec", spec.to_str().unwrap(), "--local"]), "is not valid");
    fails_with_one_line(
        &run(&["transform", good, "--spec-json", r#"{"preset": "vat"}}"#, "--local"]),
        "trailing characters",
    );
    // The coordinator checks the spec against the file's header: its 400 is one line too.
    for mode in ["--stream", "--concurrency=1"] {
        let cli = run(&["transform", good, "--spec-json", r#"{"columns": ["price"]}"#, mode, "--endpoint", &endpoint]);
        fails_with_one_line(&cli, "the coordinator refused the job (400)");
        assert!(stderr(&cli).contains("price"), "{}", stderr(&cli));
    }

    // A mistake in the arguments fails the run (1), unlike item errors (2); help is an answer (0).
    let cli = run(&["transform", good, "--preset", "vat", "--spec-json", "{}"]);
    assert_eq!(cli.status.code(), Some(1), "{}", stderr(&cli));
    assert!(stderr(&cli).contains("--preset"), "{}", stderr(&cli));
    assert_eq!(run(&["transform", "--help"]).status.code(), Some(0));
    // --local uses no endpoint, not even one from the environment.
    let cli = fanout(&["transform", good, "--preset", "vat", "--local", "-o", out])
        .env("FANOUT_ENDPOINT", &unreachable)
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
}

#[test]
fn the_small_things_a_user_reaches_for() {
    let b = bundle(true);
    let dir = Dir::new("small");
    let file = dir.file("sales.csv", &sales_with_a_bad_row());
    let file = file.to_str().unwrap();
    // An endpoint as host:port.
    let out = dir.path("out.json");
    let port = b.coordinator.url("/").trim_start_matches("http://").trim_end_matches('/').to_owned();
    let cli = run_job(&["transform", file, "--preset", "vat"], &port, &out);
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let cli = run(&["transform", file, "--endpoint", "ftp://x", "--local"]);
    assert_eq!(cli.status.code(), Some(1), "{}", stderr(&cli));
    assert!(stderr(&cli).contains("not an http(s) URL"), "{}", stderr(&cli));
    // A reader that has read enough (| head) ends the run quietly.
    let mut child = fanout(&["transform", file, "--preset", "vat", "--local", "--format", "ndjson"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let cli = child.wait_with_output().unwrap();
    assert!(first.starts_with("{\"id\":"), "{first}");
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert!(!stderr(&cli).contains("Broken pipe"), "{}", stderr(&cli));
    // Shell completions.
    let bash = run(&["completions", "bash"]);
    assert_eq!(bash.status.code(), Some(0));
    let script = String::from_utf8_lossy(&bash.stdout);
    assert!(script.contains("_fanout()") && script.contains("--per-host"), "{script}");
    // The presets, and a spec checked against a file's header without running it.
    let presets = run(&["presets"]);
    assert_eq!(presets.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&presets.stdout).starts_with("vat\t{"), "{:?}", presets.stdout);
    let ok = run(&["validate", "vat", file]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stderr(&ok).contains("the spec is valid for"), "{}", stderr(&ok));
    fails_with_one_line(&run(&["validate", r#"{"columns": ["price"]}"#, file]), "does not fit");
    fails_with_one_line(&run(&["validate", r#"{"columns": 3}"#]), "not valid");
    // --allow-private-hosts says that a bundle already running keeps its own setting.
    let urls = dir.file("urls.txt", b"http://127.0.0.1:9/\n");
    let cli = run_job(&["scrape", urls.to_str().unwrap(), "--allow-private-hosts"], &b.coordinator.url("/"), &out);
    assert!(stderr(&cli).contains("keeps its own setting"), "{}", stderr(&cli));
}

#[test]
fn a_large_file_streams_in_while_its_answer_streams_out() {
    // 46 MB in and 67 MB out: more than the socket buffers hold, so a client that sent the
    // whole body before reading the answer would stall with the coordinator.
    let b = bundle(true);
    let dir = Dir::new("large");
    let file = dir.file("sales.csv", &fanout_testkit::data::sales(1_000_000));
    let out = dir.path("out.ndjson");
    let cli = run_job(
        &["transform", file.to_str().unwrap(), "--preset", "vat", "--stream", "--format", "ndjson"],
        &b.coordinator.url("/"),
        out.to_str().unwrap(),
    );
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    // One record a line and nothing else; the summary on stderr.
    let text = std::fs::read_to_string(&out).unwrap();
    let err = stderr(&cli);
    let last: Value = serde_json::from_str(err.lines().find(|l| l.contains("\"summary\"")).unwrap()).unwrap();
    assert_eq!(last["summary"]["rows_in"], 1_000_000);
    assert_eq!(text.lines().count() as u64, last["summary"]["rows_out"].as_u64().unwrap());
    assert!(text.ends_with("}\n") && !text.contains("\"summary\""));
}

#[test]
fn the_output_file_is_replaced_only_by_a_whole_answer() {
    let b = bundle(true);
    let dir = Dir::new("output");
    let csv = dir.file("sales.csv", &fanout_testkit::data::sales(500));
    let out = dir.file("out.json", b"the previous output");
    let (csv, out_path) = (csv.to_str().unwrap(), out.to_str().unwrap());
    let endpoint = b.coordinator.url("/");
    let cli = run_job(&["transform", csv, "--spec-json", r#"{"columns": ["price"]}"#, "--stream"], &endpoint, out_path);
    assert_eq!(cli.status.code(), Some(1), "{}", stderr(&cli));
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous output");
    fails_with_one_line(&run_job(&["transform", csv, "--preset", "vat"], &endpoint, csv), "is the input file");
    assert_eq!(std::fs::read(csv).unwrap(), fanout_testkit::data::sales(500));
    let cli = run_job(&["transform", csv, "--preset", "vat"], &endpoint, out_path);
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert_eq!(json_file(&out)["summary"]["rows_in"], 500);
    let names: Vec<_> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "no temporary file is left behind: {names:?}");
}

#[test]
fn the_output_keeps_links_modes_and_files_that_are_not_regular() {
    let b = bundle(true);
    let dir = Dir::new("modes");
    let csv = dir.file("sales.csv", &fanout_testkit::data::sales(300));
    let csv = csv.to_str().unwrap();
    let endpoint = b.coordinator.url("/");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    use std::os::unix::fs::PermissionsExt;

    // A new file gets the mode any new file gets here; a replaced one keeps its own.
    let probe = dir.file("probe", b"");
    let fresh = dir.path("fresh.json");
    assert_eq!(run_job(&["transform", csv, "--preset", "vat"], &endpoint, &fresh).status.code(), Some(0));
    assert_eq!(mode(&fresh), mode(&probe));
    let kept = dir.file("kept.json", b"old");
    std::fs::set_permissions(&kept, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(run_job(&["transform", csv, "--preset", "vat"], &endpoint, &kept).status.code(), Some(0));
    assert_eq!(mode(&kept), 0o640);
    assert_eq!(json_file(&kept)["summary"]["rows_in"], 300);

    // A link's target is replaced; the link stays.
    let link = dir.path("link.json");
    std::os::unix::fs::symlink(&kept, &link).unwrap();
    assert_eq!(
        run_job(&["transform", csv, "--spec-json", r#"{"preset": "vat", "on_error": "null"}"#], &endpoint, &link)
            .status
            .code(),
        Some(0)
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());

    // A pipe is written into, not replaced.
    let fifo = dir.path("pipe");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    assert_eq!(run_job(&["transform", csv, "--preset", "vat"], &endpoint, &fifo).status.code(), Some(0));
    let piped: Value = serde_json::from_slice(&reader.join().unwrap()).unwrap();
    assert_eq!(piped["summary"]["rows_in"], 300);
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
    use std::os::unix::fs::FileTypeExt;
}

#[test]
fn ctrl_c_stops_the_job_and_leaves_no_temporary_file() {
    let b = bundle(true);
    let site = Site::start();
    let dir = Dir::new("interrupt");
    let urls: String = (0..20).map(|i| format!("{}\n", site.url(&format!("/page/{i}?delay_ms=500")))).collect();
    let list = dir.file("urls.txt", urls.as_bytes());
    let out = dir.file("pages.json", b"the previous output");
    let endpoint = b.coordinator.url("/");
    let args = [
        "scrape",
        list.to_str().unwrap(),
        "--batch-size",
        "1",
        "--concurrency",
        "1",
        "--endpoint",
        &endpoint,
        "-o",
        out.to_str().unwrap(),
    ];
    let mut child = fanout(&args).stderr(Stdio::piped()).spawn().unwrap();
    // The first progress line says the job is under way.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains(" pages · ") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the job ended before its first progress line");
    }
    interrupt(&child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the job did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous output");
    let left: Vec<_> = std::fs::read_dir(&dir.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "only the list and the previous output: {left:?}");
}

#[test]
fn a_job_that_fails_on_its_input_or_is_refused_part_way_says_why() {
    let scrape = Component::serve("scrape", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true")]);
    let coordinator = Component::serve(
        "coordinator",
        &[("FANOUT_SCRAPE_URL", &scrape.url("/scrape")), ("FANOUT_MAX_JOB_URLS", "100")],
    );
    let site = Site::start();
    let dir = Dir::new("refused");
    let endpoint = coordinator.url("/");
    // A list longer than the coordinator takes, found out once results were written:
    // the job fails, and the URLs before the limit are accounted for.
    let urls: String = (0..150).map(|i| format!("{}\n", site.url(&format!("/page/{i}")))).collect();
    let list = dir.file("urls.txt", urls.as_bytes());
    let out = dir.path("pages.json");
    let cli = run_job(&["scrape", list.to_str().unwrap(), "--batch-size", "1", "--concurrency", "2"], &endpoint, &out);
    fails_with_one_line(
        &cli,
        "the job failed: the input could not be read to its end: the URL list holds more than 100 URLs",
    );
    assert_eq!(json_file(&out)["results"].as_array().unwrap().len(), 100);
    // A refusal of the job's fields while a large list is still being sent.
    let urls: String = (0..300_000).map(|i| format!("http://127.0.0.1:9/page/{i}\n")).collect();
    let list = dir.file("many.txt", urls.as_bytes());
    let cli = run_job(&["scrape", list.to_str().unwrap(), "--batch-size", "100000000"], &endpoint, &out);
    fails_with_one_line(&cli, "the coordinator refused the job (400)");
    assert!(stderr(&cli).contains("batch_size"), "{}", stderr(&cli));
}

#[test]
fn a_coordinator_that_requires_a_token_is_sent_it() {
    let token = "a-shared-token";
    let transform = Component::serve("transform", &[("FANOUT_ALLOW_PRIVATE_HOSTS", "true"), ("FANOUT_TOKEN", token)]);
    let coordinator = Component::serve(
        "coordinator",
        &[
            ("FANOUT_TRANSFORM_URL", &transform.url("/transform")),
            ("FANOUT_ALLOW_PRIVATE_HOSTS", "true"),
            ("FANOUT_TOKEN", token),
        ],
    );
    let dir = Dir::new("token");
    let csv = dir.file("sales.csv", &fanout_testkit::data::sales(500));
    let args = ["transform", csv.to_str().unwrap(), "--preset", "vat", "--endpoint", &coordinator.url("/")];
    fails_with_one_line(&run(&args), "the coordinator refused the job (401)");
    let cli = run(&[&args[..], &["--token", token]].concat());
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    let cli = fanout(&args).env("FANOUT_TOKEN", token).output().unwrap();
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
}

#[test]
fn a_coordinator_that_may_not_read_loopback_is_sent_the_file() {
    let b = bundle(false);
    let dir = Dir::new("fallback");
    let file = dir.file("sales.csv", &fanout_testkit::data::sales(2000));
    let out = dir.path("out.json");
    let cli = run_job(
        &["transform", file.to_str().unwrap(), "--preset", "vat"],
        &b.coordinator.url("/"),
        out.to_str().unwrap(),
    );
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert!(stderr(&cli).contains("sending the file as the request body"), "{}", stderr(&cli));
    assert_eq!(json_file(&out)["summary"]["rows_in"], 2000);
}

#[test]
fn a_bundle_is_served_for_the_job_when_none_runs_and_up_serves_one_until_interrupted() {
    let dir = Dir::new("bundle");
    let file = dir.file("sales.csv", &fanout_testkit::data::sales(1000));
    let out = dir.path("out.json");
    let local = format!("127.0.0.1:{}", free_port());
    let cli = fanout(&[
        "transform",
        file.to_str().unwrap(),
        "--preset",
        "vat",
        "--runtime",
        "wasmtime",
        "-o",
        out.to_str().unwrap(),
    ])
    .env("FANOUT_LOCAL_ADDR", &local)
    .output()
    .unwrap();
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert!(
        stderr(&cli).contains(&format!("nothing answers at {local}; serving the local bundle")),
        "{}",
        stderr(&cli)
    );
    assert_eq!(json_file(&out)["summary"]["rows_in"], 1000);

    let (up, routes) = serve_up(fanout(&["up", "--listen", &local, "--runtime", "wasmtime"]));
    assert!(routes.contains(&format!("coordinator  http://{local}")), "{routes}");
    let cli = run_job(
        &["transform", file.to_str().unwrap(), "--preset", "vat", "--stream"],
        &format!("http://{local}/"),
        out.to_str().unwrap(),
    );
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert!(!stderr(&cli).contains("serving the local bundle"));
    // A second `fanout up` on the same address says so in one line, and how to choose another.
    let busy =
        fanout(&["up", "--listen", &local, "--runtime", "wasmtime"]).env("RUST_BACKTRACE", "1").output().unwrap();
    fails_with_one_line(&busy, "serve on another address with --listen 127.0.0.1:");

    let status = stop_up(up);
    assert_eq!(status.code(), Some(0));
    assert!(TcpStream::connect(&local).is_err(), "the coordinator stopped with it");
}

/// Starts `fanout up` (`up`): the process, and the routes it printed once it serves them.
fn serve_up(mut up: Command) -> (std::process::Child, String) {
    let mut up = up.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut routes = String::new();
    let mut stdout = BufReader::new(up.stdout.take().unwrap());
    while !routes.contains("transform ") {
        assert!(stdout.read_line(&mut routes).unwrap() > 0, "fanout up ended: {routes}");
    }
    (up, routes)
}

/// scripts/install.sh lays the CLI and its components out under a prefix; the installed binary serves
/// them from there, not from the clone it was built in, and a job runs through them.
#[test]
fn an_installed_cli_serves_its_own_components() {
    let dir = Dir::new("install");
    let prefix = dir.path("prefix");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install.sh");
    let install = Command::new(script).arg(&prefix).args(["--binary", env!("CARGO_BIN_EXE_fanout")]).output().unwrap();
    assert!(install.status.success(), "{}", stderr(&install));
    let share = prefix.join("share/fanout").canonicalize().unwrap();
    let manifest = std::fs::read_to_string(share.join("spin.toml")).unwrap();
    assert!(manifest.contains("source = \"fanout_transform.wasm\""), "{manifest}");
    assert!(share.join("wasi/fanout_coordinator.wasm").is_file());

    let local = format!("127.0.0.1:{}", free_port());
    let mut up = Command::new(prefix.join("bin/fanout"));
    up.args(["up", "--listen", &local, "--runtime", "wasmtime"])
        .env_remove("FANOUT_WASM_DIR")
        .env_remove("CARGO_TARGET_DIR")
        .stdin(Stdio::null());
    let (up, routes) = serve_up(up);
    assert!(routes.contains(&format!("from {} ", share.display())), "{routes}");
    let file = dir.file("sales.csv", b"id,amount\n1,10\n2,20\n");
    let out = dir.path("out.json");
    let spec = r#"{"columns": ["id", {"from": "amount", "type": "float"}]}"#;
    let cli = run_job(
        &["transform", file.to_str().unwrap(), "--spec-json", spec],
        &format!("http://{local}/"),
        out.to_str().unwrap(),
    );
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert_eq!(json_file(&out)["summary"]["rows_in"], 2);
    assert!(stop_up(up).success());
}

/// Interrupts `fanout up` as Ctrl-C does: how it exited.
fn stop_up(mut up: std::process::Child) -> std::process::ExitStatus {
    interrupt(&up);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = up.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "fanout up did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `fanout up --runtime spin` serves the bundle under `spin up`, its token (`--env FANOUT_TOKEN`) set as a
/// Spin variable, and a
/// job runs through it (the coordinator reaching its workers by service chaining).
#[test]
fn up_serves_the_bundle_under_spin() {
    let Some(spin) = fanout_testkit::spin::spin_cli() else {
        eprintln!(
            "skipped up_serves_the_bundle_under_spin: no Spin CLI (FANOUT_SPIN, spin on PATH, ../shared/tools/spin)"
        );
        return;
    };
    let dir = Dir::new("spin");
    let file = dir.file("sales.csv", &fanout_testkit::data::sales(1000));
    let out = dir.path("out.json");
    let local = format!("127.0.0.1:{}", free_port());
    let mut up = fanout(&["up", "--listen", &local, "--runtime", "spin", "--env", "FANOUT_TOKEN=up-token"]);
    up.env("FANOUT_SPIN", &spin);
    let (up, routes) = serve_up(up);
    assert!(routes.contains("spin up"), "{routes}");
    let endpoint = format!("http://{local}/");
    let refused = run_job(&["transform", file.to_str().unwrap(), "--preset", "vat", "--stream"], &endpoint, &out);
    assert_ne!(refused.status.code(), Some(0), "served without the token: {}", stderr(&refused));
    let args = ["transform", file.to_str().unwrap(), "--preset", "vat", "--stream", "--token", "up-token"];
    let cli = run_job(&args, &endpoint, &out);
    assert_eq!(cli.status.code(), Some(0), "{}", stderr(&cli));
    assert_eq!(json_file(&out)["summary"]["rows_in"], 1000);
    assert_eq!(stop_up(up).code(), Some(0));
    assert!(TcpStream::connect(&local).is_err(), "spin stopped with it");
}

/// A bundle whose coordinator keeps durable jobs in `s3`, its workers allowed to reach it and `site`.
fn durable_bundle(s3: &fanout_testkit::s3::S3Server, site: &Site) -> Bundle {
    let private = format!("{},{}", site.url("").trim_start_matches("http://").trim_end_matches('/'), s3.host_port());
    let endpoint = s3.endpoint();
    let worker_env = [("FANOUT_PRIVATE_HOSTS", private.as_str()), ("FANOUT_S3_ENDPOINT", endpoint.as_str())];
    let transform = Component::serve("transform", &worker_env);
    let scrape = Component::serve("scrape", &worker_env);
    let (t, sc) = (transform.url("/transform"), scrape.url("/scrape"));
    let s3_env = s3.coordinator_env(&s3.endpoint());
    let mut env: Vec<(&str, &str)> = vec![
        ("FANOUT_TRANSFORM_URL", &t),
        ("FANOUT_SCRAPE_URL", &sc),
        ("FANOUT_MIN_CHUNK_BYTES", "1024"),
        ("FANOUT_PRIVATE_HOSTS", &private),
    ];
    env.extend(s3_env.iter().map(|(k, v)| (*k, v.as_str())));
    Bundle { coordinator: Component::serve("coordinator", &env), _transform: transform, _scrape: scrape }
}

/// `fanout ARGS` with the bucket's credentials in the environment, as the AWS CLI reads them.
fn with_bucket(mut cmd: Command, s3: &fanout_testkit::s3::S3Server) -> Command {
    cmd.env("AWS_ACCESS_KEY_ID", fanout_testkit::s3::ACCESS_KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", fanout_testkit::s3::SECRET_ACCESS_KEY)
        .env("AWS_ENDPOINT_URL", s3.endpoint())
        .env("FANOUT_S3_BUCKET", fanout_testkit::s3::BUCKET);
    cmd
}

/// `--job`: the file uploaded to the bucket, the job ticked to its end, its
/// manifest's key printed; `fanout job fetch` gives what the HTTP API answers.
#[test]
fn a_durable_transform_job_from_a_terminal() {
    let s3 = fanout_testkit::s3::S3Server::start();
    let site = Site::start();
    let b = durable_bundle(&s3, &site);
    let dir = Dir::new("durable");
    let csv = sales_with_a_bad_row();
    let file = dir.file("sales.csv", &csv);
    let endpoint = b.coordinator.url("/");
    let args = [
        "transform",
        file.to_str().unwrap(),
        "--preset",
        "vat",
        "--chunk-bytes",
        "8192",
        "--job",
        "--endpoint",
        &endpoint,
    ];
    let cli = with_bucket(fanout(&args), &s3).output().unwrap();
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let err = stderr(&cli);
    assert!(err.contains("uploading") && err.contains("complete with 1 row failed"), "{err}");
    let key = String::from_utf8(cli.stdout).unwrap().trim().to_owned();
    let id = key
        .strip_prefix("jobs/")
        .and_then(|k| k.strip_suffix("/manifest.json"))
        .expect("the manifest's key")
        .to_owned();

    let out = dir.path("fetched.json");
    let fetched = with_bucket(fanout(&["job", "fetch", &id, "-o", out.to_str().unwrap()]), &s3).output().unwrap();
    assert_eq!(fetched.status.code(), Some(0), "{}", stderr(&fetched));
    site.put("sales.csv", "text/csv", csv);
    let job = json!({"source": site.url("/files/sales.csv"), "spec": {"preset": "vat"}, "chunk_bytes": 8192});
    let api = request(
        "POST",
        &b.coordinator.url("/coordinate/transform"),
        &[("content-type", "application/json")],
        job.to_string().as_bytes(),
    )
    .unwrap()
    .json();
    let fetched = json_file(&out);
    assert!(api["records"].as_array().is_some_and(|r| r.len() > 2500), "the API's answer: {}", api["summary"]);
    // Compared whole, reported short: these are thousands of records.
    assert!(fetched["records"] == api["records"], "the fetched records are not the API's");
    // A durable job's units count lines from their first record (all but the first unit's); `byte` is exact.
    let by_byte = |errors: &Value| -> Vec<(Value, Value)> {
        errors.as_array().unwrap().iter().map(|e| (e["byte"].clone(), e["message"].clone())).collect()
    };
    assert_eq!(by_byte(&fetched["errors"]), by_byte(&api["errors"]));
    assert_eq!(fetched["summary"]["rows_in"], 3001);
    // As CSV, by -o's extension: the same records as rows, in order, the error records on stderr.
    let out_csv = dir.path("fetched.csv");
    let fetched_csv =
        with_bucket(fanout(&["job", "fetch", &id, "-o", out_csv.to_str().unwrap()]), &s3).output().unwrap();
    assert_eq!(fetched_csv.status.code(), Some(0), "{}", stderr(&fetched_csv));
    let mut rows = csv::Reader::from_path(&out_csv).unwrap();
    let header: Vec<String> = rows.headers().unwrap().iter().map(str::to_owned).collect();
    let records = api["records"].as_array().unwrap();
    let columns: Vec<String> = records[0].as_object().unwrap().keys().cloned().collect();
    assert_eq!(header, columns);
    let cell = |v: &Value| match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let want: Vec<Vec<String>> = records.iter().map(|r| columns.iter().map(|c| cell(&r[c])).collect()).collect();
    let got: Vec<Vec<String>> = rows.records().map(|r| r.unwrap().iter().map(str::to_owned).collect()).collect();
    assert!(got == want, "the CSV rows are not the API's records ({} rows, {} records)", got.len(), want.len());
    assert_eq!(stderr(&fetched_csv).matches("{\"error\":").count(), api["errors"].as_array().unwrap().len());

    let status = fanout(&["job", "status", &id, "--endpoint", &endpoint]).output().unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!((status["status"].as_str(), status["finished"].as_bool()), (Some("succeeded"), Some(true)), "{status}");

    // An aggregate fetched as NDJSON: the groups, as /coordinate streams them, not the parts' partial states.
    let spec = r#"{"columns": ["region", {"from": "amount", "type": "float"}], "aggregate": {"group_by": ["region"], "metrics": [{"name": "total", "op": "sum", "column": "amount"}, {"op": "rows"}]}}"#;
    let spec_file = dir.file("summary.json", spec.as_bytes());
    let args = [
        "transform",
        file.to_str().unwrap(),
        "--spec",
        spec_file.to_str().unwrap(),
        "--chunk-bytes",
        "8192",
        "--job",
        "--endpoint",
        &endpoint,
    ];
    let cli = with_bucket(fanout(&args), &s3).output().unwrap();
    assert_eq!(cli.status.code(), Some(2), "{}", stderr(&cli));
    let key = String::from_utf8(cli.stdout).unwrap();
    let id = key.trim().strip_prefix("jobs/").and_then(|k| k.strip_suffix("/manifest.json")).unwrap();
    let out = dir.path("groups.ndjson");
    let fetched_cli =
        with_bucket(fanout(&["job", "fetch", id, "--format", "ndjson", "-o", out.to_str().unwrap()]), &s3)
            .output()
            .unwrap();
    assert_eq!(fetched_cli.status.code(), Some(0), "{}", stderr(&fetched_cli));
    let job = json!({"source": site.url("/files/sales.csv"), "spec": serde_json::from_str::<Value>(spec).unwrap(), "chunk_bytes": 8192});
    let api = request(
        "POST",
        &b.coordinator.url("/coordinate/transform"),
        &[("content-type", "application/json"), ("accept", "application/x-ndjson")],
        job.to_string().as_bytes(),
    )
    .unwrap();
    let kinds = |text: &str, kind: &str| -> Vec<Value> {
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|l| l.get(kind).is_some()).collect()
    };
    let (api, fetched) = (String::from_utf8(api.body).unwrap(), std::fs::read_to_string(&out).unwrap());
    // One group a line and nothing else (the error records and the summary on stderr).
    let groups: Vec<Value> = kinds(&api, "group").into_iter().map(|g| g["group"].clone()).collect();
    let fetched: Vec<Value> = fetched.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!groups.is_empty());
    assert_eq!(fetched, groups);
    // A durable job's units count lines from their first record; `byte` is exact.
    let by_byte =
        |text: &str| -> Vec<Value> { kinds(text, "error").iter().map(|e| e["error"]["byte"].clone()).collect() };
    let fetch_errors: String =
        stderr(&fetched_cli).lines().filter(|l| l.starts_with('{')).map(|l| format!("{l}\n")).collect();
    assert_eq!(by_byte(&fetch_errors), by_byte(&api));
}

/// Ctrl-C stops the ticking, not the job: `fanout job resume` finishes it.
#[test]
fn an_interrupted_durable_job_is_resumed() {
    let s3 = fanout_testkit::s3::S3Server::start();
    let site = Site::start();
    let b = durable_bundle(&s3, &site);
    let dir = Dir::new("resume");
    let urls: String = (0..12).map(|i| format!("{}\n", site.url(&format!("/page/{i}?delay_ms=400")))).collect();
    let list = dir.file("urls.txt", urls.as_bytes());
    let endpoint = b.coordinator.url("/");
    let args =
        ["scrape", list.to_str().unwrap(), "--batch-size", "1", "--concurrency", "1", "--job", "--endpoint", &endpoint];
    let mut child = with_bucket(fanout(&args), &s3).stderr(Stdio::piped()).spawn().unwrap();
    let mut stderr_lines = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("resume it with") {
        line.clear();
        assert!(stderr_lines.read_line(&mut line).unwrap() > 0, "no job was made");
    }
    let id = line.split_whitespace().last().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(600));
    interrupt(&child);
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr_lines, &mut rest).unwrap();
    assert!(rest.contains(&format!("fanout job resume {id}")), "{rest}");

    // Resumed through a gateway that fails the first two ticks (requests 1 and 2; 0 reads the status): sent again.
    let gateway = Proxy::start(&b.coordinator.url(""));
    gateway.set_rule(|n| if n == 1 || n == 2 { Fault::Status(502) } else { Fault::Pass });
    let resumed = fanout(&["job", "resume", &id, "--endpoint", &gateway.url("/")]).output().unwrap();
    assert_eq!(resumed.status.code(), Some(0), "{}", stderr(&resumed));
    assert_eq!(stderr(&resumed).matches("a tick failed").count(), 2, "{}", stderr(&resumed));
    let out = dir.path("pages.ndjson");
    let fetched = with_bucket(fanout(&["job", "fetch", &id, "--format", "ndjson", "-o", out.to_str().unwrap()]), &s3)
        .output()
        .unwrap();
    assert_eq!(fetched.status.code(), Some(0), "{}", stderr(&fetched));
    let lines: Vec<Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let titles: Vec<String> = lines.iter().filter_map(|l| l["page"]["title"].as_str().map(str::to_owned)).collect();
    assert_eq!(titles, (0..12).map(|i| format!("Page {i}")).collect::<Vec<_>>());

    // A cancelled job ends as cancelled: exit 1.
    let made = request(
        "POST",
        &b.coordinator.url("/jobs/scrape"),
        &[("content-type", "application/json")],
        json!({"urls": [site.url("/page/x")]}).to_string().as_bytes(),
    )
    .unwrap();
    let id = made.json()["id"].as_str().unwrap().to_owned();
    let cancelled = fanout(&["job", "cancel", &id, "--endpoint", &endpoint]).output().unwrap();
    assert_eq!(cancelled.status.code(), Some(0), "{}", stderr(&cancelled));
    let resumed = fanout(&["job", "resume", &id, "--endpoint", &endpoint]).output().unwrap();
    assert_eq!(resumed.status.code(), Some(1), "{}", stderr(&resumed));
    assert!(stderr(&resumed).contains("cancelled"), "{}", stderr(&resumed));
}
