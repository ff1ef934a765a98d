//! The control socket's request parser: each line a client writes, as
//! `switchyard_cli::protocol::Request::from_line` (what
//! cli/src/control.rs `client()` calls) reads it. Seeds: every request
//! `switchyard ctl` sends, and malformed ones.
//!
//! Input: the bytes a client writes; split into lines as the daemon's
//! reader does (UTF-8 only: the reader ends the connection on anything
//! else).
//!
//! Checks, besides "never panics": an accepted request, written again as
//! `switchyard ctl` writes it, parses to the same request and names a
//! known command; a refusal says why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_cli::protocol::{CommandName, Request};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let req = match Request::from_line(line) {
            Ok(r) => r,
            Err(e) => {
                assert!(!e.trim().is_empty(), "a refusal without a reason");
                continue;
            }
        };
        let name = match serde_json::to_value(req.name()) {
            Ok(v) => v.as_str().map(String::from).unwrap_or_default(),
            Err(e) => panic!("command name does not encode: {e}"),
        };
        assert!(CommandName::all().contains(&name.as_str()), "{name:?}");
        let written = match serde_json::to_string(&req) {
            Ok(w) => w,
            Err(e) => panic!("{req:?} does not encode: {e}"),
        };
        assert!(!written.contains('\n'), "a request line with a newline");
        match Request::from_line(&written) {
            Ok(again) => assert_eq!(again, req, "{line:?} -> {written:?}"),
            Err(e) => panic!("{req:?} written as {written:?} does not parse: {e}"),
        }
    }
});
