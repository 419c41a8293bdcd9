//! `wasi:config/store` answered from the process environment.
//!
//! The components read their settings through `wasi:config/store`, which Spin
//! provides from the application's variables. `wasmtime serve` and other WASI
//! 0.2 HTTP hosts have environment variables but not that interface (wasmtime's
//! `-S config` is another version of it), so scripts/build.sh composes each
//! component with this one: the setting `fanout_token` is then the variable
//! `FANOUT_TOKEN`, as it always was.

wit_bindgen::generate!({ path: "../../wit", world: "fanout:components/config-from-environment", generate_all });

use exports::wasi::config::store::{Error, Guest};

struct Environment;

impl Guest for Environment {
    fn get(key: String) -> Result<Option<String>, Error> {
        Ok(std::env::var(key.to_ascii_uppercase()).ok())
    }

    fn get_all() -> Result<Vec<(String, String)>, Error> {
        Ok(std::env::vars().filter_map(|(name, value)| Some((setting(&name)?, value))).collect())
    }
}

/// The setting an environment variable holds: its name in lower case, for
/// names a Spin variable could have (letters, digits and underscores).
fn setting(name: &str) -> Option<String> {
    let valid = name.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
    (valid && name.starts_with(|c: char| c.is_ascii_uppercase())).then(|| name.to_ascii_lowercase())
}

export!(Environment);
