#!/usr/bin/env bash
# Runs every test: installs and builds what is missing (scripts/setup.sh), then
# the core's unit tests and the integration tests, which serve the built
# components under wasmtime serve against a loopback fixture site; then, where
# a Spin CLI is available (FANOUT_SPIN, spin on PATH, ../shared/tools/spin),
# the HTTP integration tests again under `spin up`, and scripts/run.sh.
# Arguments go to the first `cargo test` alone (and skip the rest).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
fanout_ready "$root"
cd "$root"
cargo test --locked "$@"
[ $# -eq 0 ] || exit 0
spin=$(fanout_find_spin "$root")
if [ -z "$spin" ]; then
  echo "test: skipped the HTTP tests and scripts/run.sh under spin up: no Spin CLI (set FANOUT_SPIN, put spin on PATH, or keep ../shared/tools/spin)" >&2
  exit 0
fi
echo "test: the HTTP integration tests again, under spin up ($spin)" >&2
FANOUT_SPIN=$spin FANOUT_TEST_RUNTIME=spin cargo test --locked \
  --test transform --test scrape --test http_errors --test coordinator --test coordinator_faults --test jobs
echo "test: scripts/run.sh under spin up" >&2
FANOUT_SPIN=$spin "$root/scripts/run.sh" > /dev/null
