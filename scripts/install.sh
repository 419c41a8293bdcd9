#!/usr/bin/env bash
# Installs the fanout CLI with its components, so that the binary runs without this clone:
#   PREFIX/bin/fanout
#   PREFIX/share/fanout/fanout_NAME.wasm, wasi/fanout_NAME.wasm, spin.toml (naming the components beside it)
# Usage: scripts/install.sh [PREFIX] [--binary PATH]
#   PREFIX    where to install (default ~/.local; put PREFIX/bin on your PATH)
#   --binary  copy this already built CLI instead of running `cargo install`
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix="$HOME/.local"
binary=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) prefix="$1"; shift ;;
  esac
done
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"
dir=$(fanout_wasm_dir "$root")
for c in scrape transform coordinator; do
  # Built only when missing: a rebuild rewrites the files that running bundles serve.
  if [ ! -f "$dir/fanout_$c.wasm" ] || [ ! -f "$dir/wasi/fanout_$c.wasm" ]; then
    "$root/scripts/build.sh" >/dev/null
    break
  fi
done
share="$prefix/share/fanout"
mkdir -p "$prefix/bin" "$share/wasi"
if [ -n "$binary" ]; then
  cp "$binary" "$prefix/bin/fanout"
else
  cargo install --locked --quiet --path "$root/cli" --root "$prefix"
fi
for c in scrape transform coordinator; do
  cp "$dir/fanout_$c.wasm" "$share/"
  cp "$dir/wasi/fanout_$c.wasm" "$share/wasi/"
done
sed 's|^source = "target/wasm32-wasip2/release/|source = "|' "$root/spin.toml" > "$share/spin.toml"
if grep -q '^source = "target/' "$share/spin.toml"; then
  echo "install: spin.toml names a component this script does not know" >&2
  exit 1
fi
echo "installed: $prefix/bin/fanout, its components in $share"
