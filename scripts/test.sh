#!/usr/bin/env bash
# Runs every test: installs and builds what is missing (scripts/setup.sh), then
# the core's unit tests and the integration tests, which serve the built
# components under wasmtime serve against a loopback fixture site.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
fanout_ready "$root"
cd "$root"
cargo test --locked "$@"
