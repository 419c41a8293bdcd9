#!/usr/bin/env bash
# Runs the benchmark suite (not part of the tests): builds what is missing, then
# measures every benchmark side by side in one run and writes the report with
# its charts.
#
#   scripts/bench.sh              the full suite: docs/benchmarks.md and docs/benchmarks/*.png
#   scripts/bench.sh --quick      smaller jobs, under two minutes: out/benchmarks.md and out/benchmarks/*.png
#   scripts/bench.sh --out DIR    the report in DIR instead
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
fanout_ready "$root"
cd "$root"
cargo run --release --locked -p fanout-bench -- "$@"
