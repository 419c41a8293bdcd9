#!/usr/bin/env bash
# Builds the bundle, serves it on loopback with `fanout up`, and runs the
# sample job through the coordinator: examples/sales.csv through the transform
# worker (the vat preset, and a per-region summary) and examples/urls.txt
# (pages of a local fixture site) through the scrape worker, with curl, then
# the same transform with the `fanout` CLI. Writes the merged JSON to out/ and
# ends with a short summary of each job.
#
# `fanout up` serves the bundle with `spin up` when the Spin CLI is installed,
# otherwise each component under `wasmtime serve`, the coordinator wired to
# the workers through FANOUT_SCRAPE_URL and FANOUT_TRANSFORM_URL.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
echo "run: checking the toolchain and building the components (the first run takes a few minutes)" >&2
fanout_ready "$root"
cd "$root"
out="$root/out"
mkdir -p "$out"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { # URL: waits until something answers there
  for _ in $(seq 200); do
    if python3 -c 'import sys, urllib.request, urllib.error
try: urllib.request.urlopen(sys.argv[1], timeout=1)
except urllib.error.HTTPError: pass
except Exception: sys.exit(1)' "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run: nothing answered at $1" >&2; return 1
}

# The fixture site stands in for the web: it serves generated pages on loopback.
echo "run: building the fixture site and the fanout CLI" >&2
cargo build --quiet --release --locked -p fanout-testkit --bin fixture-site
site_log="$out/fixture-site.log"
"$root/target/release/fixture-site" examples > "$site_log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$site_log" ] && break; sleep 0.05; done
site=$(head -1 "$site_log")

cargo build --quiet --release --locked -p fanout-cli --bin fanout
fanout="$root/target/release/fanout"
port=$(free_port)
# The sample pages are on loopback, which the components refuse unless the
# operator allows it; the sample file is small, so its chunks may be too.
"$fanout" up --listen "127.0.0.1:$port" --allow-private-hosts --env FANOUT_MIN_CHUNK_BYTES=256 \
  > "$out/bundle.log" 2>&1 &
pids+=($!)
coordinator="http://127.0.0.1:$port"
wait_for "$coordinator/"

echo "run: transform job: examples/sales.csv with the vat preset, in chunks of 512 bytes" >&2
curl -sS --fail-with-body -X POST -H 'content-type: text/csv' --data-binary @examples/sales.csv \
  "$coordinator/coordinate/transform?chunk_bytes=512&preset=vat" > "$out/transform.json"

echo "run: summary job: total and orders per region, merged from partial aggregates of 512-byte chunks" >&2
summary='{"preset": "sales-summary", "aggregate": {"group_by": ["region"], "metrics": [{"name": "total", "op": "sum", "column": "amount"}, {"name": "orders", "op": "count", "column": "id"}], "sort": [{"by": "total", "desc": true}]}}'
curl -sS --fail-with-body -X POST -H 'content-type: text/csv' -H "x-fanout-spec: $summary" \
  --data-binary @examples/sales.csv "$coordinator/coordinate/transform?chunk_bytes=512" > "$out/summary.json"

echo "run: scrape job: examples/urls.txt against the fixture site at $site" >&2
python3 - "$site" examples/urls.txt > "$out/scrape-job.json" <<'PY'
import json, sys
site, path = sys.argv[1], sys.argv[2]
urls = [line.strip().replace("{site}", site) for line in open(path) if line.strip() and not line.startswith("#")]
print(json.dumps({"urls": urls, "batch_size": 3}))
PY
curl -sS --fail-with-body -X POST -H 'content-type: application/json' --data-binary @"$out/scrape-job.json" \
  "$coordinator/coordinate/scrape" > "$out/scrape.json"

echo "run: the vat transform again, with the CLI: fanout transform examples/sales.csv --preset vat" >&2
# Exit code 2: the job finished with item errors (the sample has a bad row on purpose).
status=0
"$fanout" transform examples/sales.csv --preset vat --chunk-bytes 512 --endpoint "$coordinator" \
  -o "$out/transform-cli.json" || status=$?
[ "$status" -eq 2 ] || { echo "run: fanout transform exited with $status, not 2" >&2; exit 1; }

python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
load = lambda name: json.load(open(f"{out}/{name}.json"))
t = load("transform")["summary"]
print(f"transform   {t['rows_in']} rows: {t['rows_out']} out, {t['rows_filtered']} filtered, "
      f"{t['rows_errored']} with errors ({t['status']}, {t['chunks']} chunks)")
for e in load("transform")["errors"]:
    print(f"            line {e['line']}: {e['message']}")
s = load("summary")
print("summary     " + ", ".join(f"{g['region']} {g['total']:.2f} ({g['orders']} orders)" for g in s["groups"]))
p = load("scrape")
titles = [r["page"].get("title") for r in p["results"] if "page" in r]
print(f"scrape      {p['summary']['urls']} URLs: {p['summary']['pages']} pages, {p['summary']['errors']} errors; "
      f"first titles: {', '.join(map(str, titles[:3]))}")
cli = load("transform-cli")
same = cli["records"] == load("transform")["records"]
verdict = "the same records as the transform job above" if same else "NOT the records of the transform job above"
print(f"cli         {cli['summary']['rows_in']} rows, {cli['summary']['rows_out']} out: {verdict}")
sys.exit(0 if same else 1)
PY
echo "run: done; the merged JSON is in $out/ (transform.json, summary.json, scrape.json, transform-cli.json)" >&2
