#!/usr/bin/env bash
# Runs every test: installs and builds what is missing (scripts/setup.sh), then
# the core's unit tests and the integration tests, which serve the built
# components under wasmtime serve against a loopback fixture site.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/scripts/setup.sh"
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
fanout_find_tools
export FANOUT_WASM_DIR=${FANOUT_WASM_DIR:-$(fanout_wasm_dir "$root")}
cd "$root"
cargo test --locked "$@"
