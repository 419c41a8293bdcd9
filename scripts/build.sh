#!/usr/bin/env bash
# Builds the three components for wasm32-wasip2 (release) and lists them with their sizes.
# Needs the toolchain that scripts/setup.sh installs.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
cd "$root"

start=$(date +%s)
fanout_wasm_cargo build --release --locked -p fanout-scrape -p fanout-transform -p fanout-coordinator >&2
dir=$(fanout_wasm_dir "$root")
printf 'build: %s s (wasm32-wasip2 via %s)\n' "$(( $(date +%s) - start ))" "$(fanout_wasm_mode)" >&2
for c in scrape transform coordinator; do
  printf 'build: %-36s %8s bytes\n' "$dir/fanout_$c.wasm" "$(stat -c %s "$dir/fanout_$c.wasm")" >&2
done
