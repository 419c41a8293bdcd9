#!/usr/bin/env bash
# Builds the three components for wasm32-wasip2 (release) and lists them with their sizes.
# Needs the toolchain that scripts/setup.sh installs.
#
# Two builds of each come out:
#   target/wasm32-wasip2/release/fanout_NAME.wasm       for Spin (spin.toml): settings from its variables;
#   target/wasm32-wasip2/release/wasi/fanout_NAME.wasm  for wasmtime serve and other WASI 0.2 HTTP hosts:
#       the same component composed with config-from-environment, settings from FANOUT_* variables.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
cd "$root"
fanout_find_tools

start=$(date +%s)
fanout_wasm_cargo build --release --locked \
  -p fanout-scrape -p fanout-transform -p fanout-coordinator -p fanout-config-env >&2
dir=$(fanout_wasm_dir "$root")
mkdir -p "$dir/wasi"
# compose names the plugged component after its file, which must be kebab-case.
cp "$dir/fanout_config_env.wasm" "$dir/wasi/config-from-environment.wasm"
for c in scrape transform coordinator; do
  # Its deprecation notice (wac is its successor, not packaged where wasm-tools is) is shown only on failure.
  if ! log=$("$FANOUT_WASM_TOOLS" compose "$dir/fanout_$c.wasm" -d "$dir/wasi/config-from-environment.wasm" \
    -o "$dir/wasi/fanout_$c.wasm" 2>&1); then
    printf '%s\n' "$log" >&2
    exit 1
  fi
done
printf 'build: %s s (wasm32-wasip2 via %s)\n' "$(( $(date +%s) - start ))" "$(fanout_wasm_mode)" >&2
for f in fanout_scrape fanout_transform fanout_coordinator wasi/fanout_scrape wasi/fanout_transform wasi/fanout_coordinator; do
  printf 'build: %-42s %8s bytes\n' "$dir/$f.wasm" "$(stat -c %s "$dir/$f.wasm")" >&2
done
