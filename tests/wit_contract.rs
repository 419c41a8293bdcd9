//! The guard: every built component imports only the `wasi:*` interfaces that
//! `wit/world.wit` lists and exports only `wasi:http/incoming-handler`, so it
//! runs unchanged on Spin and on any WASI 0.2 HTTP host: Spin's build imports
//! `wasi:config/store` at the version Spin provides, and wasmtime's (composed
//! with `config-from-environment`) imports no `wasi:config` at all.

use fanout_testkit::component::{spin_wasm_path, wasm_path};
use std::collections::BTreeSet;
use std::process::Command;

/// Interface names without their versions, from `import`/`export` lines of WIT text.
fn items(wit: &str, keyword: &str) -> BTreeSet<String> {
    wit.lines()
        .filter_map(|l| l.trim().strip_prefix(keyword))
        .map(|rest| rest.trim().trim_end_matches(';').split('@').next().unwrap().trim().to_owned())
        .collect()
}

fn wasm_tools() -> String {
    std::env::var("FANOUT_WASM_TOOLS").unwrap_or_else(|_| "wasm-tools".into())
}

/// The WIT text of the component at `path`.
fn wit_of(path: &std::path::Path) -> String {
    let out = Command::new(wasm_tools())
        .args(["component", "wit"])
        .arg(path)
        .output()
        .expect("run wasm-tools (scripts/setup.sh installs it; FANOUT_WASM_TOOLS names it)");
    assert!(out.status.success(), "wasm-tools failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Spin 4 provides this version of `wasi:config/store`; `wasmtime serve -S config` another.
const SPIN_CONFIG: &str = "import wasi:config/store@0.2.0-draft-2024-09-27;";

#[test]
fn components_import_only_the_declared_wasi_world() {
    let world = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wit/world.wit")).unwrap();
    let allowed = items(&world, "import ");
    assert!(allowed.iter().all(|i| i.starts_with("wasi:")), "wit/world.wit itself names a non-WASI import");
    assert!(world.contains(SPIN_CONFIG), "wit/world.wit names another wasi:config");
    for name in ["scrape", "transform", "coordinator"] {
        for (host, path) in [("spin", spin_wasm_path(name)), ("wasmtime", wasm_path(name))] {
            let wit = wit_of(&path);
            let imports = items(&wit, "import ");
            assert!(!imports.is_empty(), "{name} ({host}): no imports found in:\n{wit}");
            let foreign: Vec<_> = imports.difference(&allowed).collect();
            assert!(foreign.is_empty(), "{name} ({host}) imports {foreign:?}, which wit/world.wit does not allow");
            let exports = items(&wit, "export ");
            assert_eq!(exports, BTreeSet::from(["wasi:http/incoming-handler".to_owned()]), "{name} ({host}) exports");
            let config = wit.lines().filter(|l| l.trim().starts_with("import wasi:config/")).map(str::trim);
            let config: Vec<_> = config.collect();
            let want: &[&str] = if host == "spin" { &[SPIN_CONFIG] } else { &[] };
            assert_eq!(config, want, "{name} ({host}): its wasi:config import");
        }
    }
}
