//! The YAML configuration loader: `switchyard_cli::config::apply`, which
//! parses the file (serde-saphyr) and checks and applies every section
//! over the command line's settings. Seeds: the shipped configuration
//! files in deploy/ and deploy/examples/.
//!
//! Input: the file's bytes (non-UTF-8 input is refused before parsing, as
//! `load` refuses it when reading the file).
//!
//! Checks, besides "never panics" (and no hang or runaway memory, which
//! libFuzzer reports as timeouts and out-of-memory): a refusal has a
//! message that names the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use switchyard_cli::args::native;
use switchyard_cli::config;
use switchyard_cli::settings::Settings;

/// The settings of a bare `switchyard` command line, as `--config` starts.
fn base() -> &'static Settings {
    static BASE: OnceLock<Settings> = OnceLock::new();
    BASE.get_or_init(|| match native::parse(vec!["switchyard".into()]) {
        Ok(s) => s,
        Err(u) => panic!("a bare command line does not parse: {}", u.message),
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut settings = base().clone();
    if let Err(e) = config::apply(text, Path::new("fuzz.yaml"), &mut settings) {
        let msg = e.to_string();
        assert!(
            msg.contains("fuzz.yaml"),
            "error without the file name: {msg}"
        );
    }
});
