#!/usr/bin/env bash
# Mutation testing of the core's guards (not part of the tests: a full run takes
# hours on two cores). cargo-mutants plants one small bug at a time in each file
# below and runs the core's tests that cover it (natively, in the `mutants`
# profile: optimised a little, so the simulations take seconds); a mutant that
# no test fails is "missed". docs/testing.md has the last run's scores and why
# each survivor cannot matter.
#
#   scripts/mutants.sh                    every guarded file
#   scripts/mutants.sh src/egress.rs      one or more of them
#   scripts/mutants.sh --shard=0/4 --sharding=round-robin src/fanout/driver.rs
#                                         options (--name=value) before the files go to
#                                         cargo-mutants; these test every 4th mutant, a sample
#
# The working tree is copied to out/mutants/tree and mutated there, one mutant
# at a time, so this tree is never touched and builds stay incremental from one
# run to the next. Results: out/mutants/<file>/mutants.out/{caught,missed,
# timeout,unviable}.txt, and a table of scores at the end. cargo-mutants is
# installed, pinned, on first use.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

CARGO_MUTANTS_VERSION=27.1.0
export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(cargo mutants --version 2>/dev/null)" != "cargo-mutants $CARGO_MUTANTS_VERSION" ]; then
  echo "mutants: installing cargo-mutants $CARGO_MUTANTS_VERSION (a few minutes, once)" >&2
  cargo install --locked cargo-mutants --version "$CARGO_MUTANTS_VERSION" >&2
fi

# A guard (what decides whether a URL is fetched, an answer accepted, a job
# split, retried, merged and concluded exactly once), and the tests that cover
# it, as cargo test name filters.
guards=(
  "src/egress.rs|egress redirect config"
  "src/robots.rs|robots"
  "src/redirect.rs|redirect"
  "src/store.rs|store"
  "src/html/mod.rs|html::"
  "src/transform/filter.rs|transform::"
  "src/transform/aggregate.rs|transform:: fanout::merge fanout::sim"
  "src/fanout/split.rs|fanout::split fanout::sim fanout::local"
  "src/fanout/merge.rs|fanout::merge fanout::sim fanout::local"
  "src/fanout/retry.rs|fanout::retry fanout::sim fanout::options"
  "src/fanout/driver.rs|fanout::driver fanout::sim fanout::local fanout::options"
  "src/fanout/jobs/plan.rs|fanout::jobs"
  "src/fanout/jobs/lease.rs|fanout::jobs"
  "src/fanout/jobs/receipt.rs|fanout::jobs"
  "src/fanout/jobs/commit.rs|fanout::jobs"
  "src/fanout/jobs/state.rs|fanout::jobs"
  "src/fanout/jobs/tick.rs|fanout::jobs"
)

options=()
while [ $# -gt 0 ] && [ "${1#--}" != "$1" ]; do
  options+=("$1")
  shift
done

tree=out/mutants/tree
mkdir -p "$tree"
# The files git knows of, committed or not, as they are now. Extracted with
# the time of the copy (-m): with their own, older times, cargo would take the
# last mutant's build in the copy for an up-to-date one and test it as the baseline.
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xmf - -C "$tree"

ran=()
for guard in "${guards[@]}"; do
  file=${guard%%|*}
  filters=${guard#*|}
  if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qxF "$file"; then
    continue
  fi
  out="$root/out/mutants/$(echo "$file" | tr '/' '_')"
  rm -rf "$out"
  mkdir -p "$out"
  echo "mutants: $file, against: $filters" >&2
  started=$(date +%s)
  code=0
  # shellcheck disable=SC2086
  (cd "$tree" && cargo mutants --in-place --package fanout --file "$file" --profile mutants \
    --timeout-multiplier 3 --output "$out" ${options[@]+"${options[@]}"} -- --lib -- $filters) || code=$?
  # 2: mutants were missed; 3: some timed out. Those are results, in the table below.
  if [ "$code" -ne 0 ] && [ "$code" -ne 2 ] && [ "$code" -ne 3 ]; then
    exit "$code"
  fi
  echo "$(( $(date +%s) - started ))" > "$out/seconds"
  ran+=("$file")
done

count() { if [ -f "$1" ]; then grep -c . "$1" || true; else echo 0; fi; }
echo
echo "| file | mutants | caught | timeout | missed | unviable | score | minutes |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
for file in "${ran[@]}"; do
  m="$root/out/mutants/$(echo "$file" | tr '/' '_')"
  caught=$(count "$m/mutants.out/caught.txt")
  timeout=$(count "$m/mutants.out/timeout.txt")
  missed=$(count "$m/mutants.out/missed.txt")
  unviable=$(count "$m/mutants.out/unviable.txt")
  viable=$((caught + timeout + missed))
  score=$(awk -v k=$((caught + timeout)) -v v=$viable 'BEGIN { printf v ? "%.0f%%" : "-", 100 * k / (v ? v : 1) }')
  echo "| \`$file\` | $((viable + unviable)) | $caught | $timeout | $missed | $unviable | $score | $(( $(cat "$m/seconds") / 60 )) |"
done
