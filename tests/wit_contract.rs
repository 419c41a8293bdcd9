//! The guard: every built component imports only the `wasi:*` interfaces that
//! `wit/world.wit` lists and exports only `wasi:http/incoming-handler`, so it
//! runs unchanged on Spin and on any WASI 0.2 HTTP host.

use fanout_testkit::component::wasm_path;
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

#[test]
fn components_import_only_the_declared_wasi_world() {
    let world = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/wit/world.wit")).unwrap();
    let allowed = items(&world, "import ");
    assert!(allowed.iter().all(|i| i.starts_with("wasi:")), "wit/world.wit itself names a non-WASI import");
    for name in ["scrape", "transform", "coordinator"] {
        let out = Command::new(wasm_tools())
            .args(["component", "wit"])
            .arg(wasm_path(name))
            .output()
            .expect("run wasm-tools (scripts/setup.sh installs it; FANOUT_WASM_TOOLS names it)");
        assert!(out.status.success(), "wasm-tools failed: {}", String::from_utf8_lossy(&out.stderr));
        let wit = String::from_utf8(out.stdout).unwrap();
        let imports = items(&wit, "import ");
        assert!(!imports.is_empty(), "{name}: no imports found in:\n{wit}");
        let foreign: Vec<_> = imports.difference(&allowed).collect();
        assert!(foreign.is_empty(), "{name} imports {foreign:?}, which wit/world.wit does not allow");
        let exports = items(&wit, "export ");
        assert_eq!(exports, BTreeSet::from(["wasi:http/incoming-handler".to_owned()]), "{name} exports");
    }
}
