#!/usr/bin/env bash
# Runs the benchmarks (not part of the tests): builds what is missing, then
# prints native and in-component numbers measured side by side in one run.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
fanout_ready "$root"
cd "$root"
cargo bench --locked --bench "${1:-scrape}"
