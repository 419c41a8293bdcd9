#!/usr/bin/env bash
# Mutation testing of the core's guards (not part of the tests: a full run takes
# hours on two cores). cargo-mutants plants one small bug at a time in the files
# below and runs the core's unit and simulation tests (`cargo test --lib`,
# natively, in the `mutants` profile) against each; a mutant that no test fails
# is "missed". cargo-mutants is installed, pinned, on first use. Results go to
# out/mutants/mutants.out/ ({caught,missed,timeout,unviable}.txt, outcomes.json);
# docs/testing.md has the last run's scores and why each survivor cannot matter.
#
#   scripts/mutants.sh                            every guarded file
#   scripts/mutants.sh src/egress.rs src/robots.rs   only these
#   FANOUT_MUTANTS_JOBS=2 scripts/mutants.sh      two mutants at once (more memory)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

CARGO_MUTANTS_VERSION=27.1.0
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(cargo mutants --version 2>/dev/null)" != "cargo-mutants $CARGO_MUTANTS_VERSION" ]; then
  echo "mutants: installing cargo-mutants $CARGO_MUTANTS_VERSION (a few minutes, once)" >&2
  cargo install --locked cargo-mutants --version "$CARGO_MUTANTS_VERSION" >&2
fi

# The guards: what decides whether a URL is fetched, a page or answer is
# accepted, a job is split, retried, merged and concluded exactly once.
guards=(
  src/egress.rs
  src/robots.rs
  src/redirect.rs
  src/store.rs
  src/fanout/merge.rs
  src/fanout/split.rs
  src/fanout/driver.rs
  src/fanout/retry.rs
  src/transform/aggregate.rs
  src/transform/filter.rs
  src/html/mod.rs
  src/fanout/jobs/plan.rs
  src/fanout/jobs/lease.rs
  src/fanout/jobs/receipt.rs
  src/fanout/jobs/commit.rs
  src/fanout/jobs/state.rs
  src/fanout/jobs/tick.rs
)
if [ $# -gt 0 ]; then
  guards=("$@")
fi
files=()
for file in "${guards[@]}"; do
  files+=(--file "$file")
done

mkdir -p out/mutants
echo "mutants: ${#guards[@]} files; the core's tests against each mutant" >&2
started=$(date +%s)
# Exit codes 2 (mutants missed) and 3 (mutants timed out) are results, which the report gives.
code=0
cargo mutants --package fanout "${files[@]}" --profile mutants --jobs "${FANOUT_MUTANTS_JOBS:-1}" \
  --timeout-multiplier 3 --output out/mutants -- --lib || code=$?
if [ "$code" -ne 0 ] && [ "$code" -ne 2 ] && [ "$code" -ne 3 ]; then
  exit "$code"
fi
echo "mutants: done in $(( ($(date +%s) - started) / 60 )) min; see out/mutants/mutants.out/" >&2
