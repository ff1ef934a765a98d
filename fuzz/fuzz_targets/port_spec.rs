//! The `--port TYPE,key=value,…` spec parser
//! (`switchyard_cli::args::port_spec::parse`, cli/src/ports/), which a
//! control-socket client reaches through `switchyard ctl port add SPEC`.
//! Seeds: the specs of the README, the tests and `--help`.
//!
//! Input: the index used for default names (1 byte), then the spec.
//!
//! Checks, besides "never panics": parsing is deterministic; an accepted
//! spec has a non-empty name, `name=X` (given once) names the port X, and
//! a name not given is the type followed by the index; a refusal says why.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_cli::args::port_spec::{parse, values};

fuzz_target!(|data: &[u8]| {
    let [index, text @ ..] = data else {
        return;
    };
    let Ok(spec) = std::str::from_utf8(text) else {
        return;
    };
    let index = usize::from(*index);
    let first = parse(spec, index);
    let again = parse(spec, index);
    assert_eq!(
        format!("{first:?}"),
        format!("{again:?}"),
        "not deterministic"
    );
    let port = match first {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.trim().is_empty(), "a refusal without a reason");
            return;
        }
    };
    let name = port.name();
    assert!(!name.is_empty(), "{spec:?} gives a port without a name");
    let kind = spec.split(',').next().unwrap_or_default();
    let given: Vec<&str> = spec
        .split(',')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| *k == "name")
        .map(|(_, v)| v)
        .collect();
    match given.as_slice() {
        [] => assert_eq!(name, format!("{kind}{index}"), "default name"),
        [one] => assert_eq!(name, *one, "name= not kept"),
        _ => panic!("{spec:?}: name given twice and accepted"),
    }
    assert!(values(spec).is_ok());
});
