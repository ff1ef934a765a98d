//! The control handshake: `switchyard_switch::ports::unix::request::parse`
//! on the bytes a client writes to the control socket (the seed corpus has
//! requests captured from vde_plug and UML).
//!
//! Input: the raw request. Checks, besides "never panics":
//! - an accepted request has at least the bytes of its layout, and every
//!   shorter prefix of it is refused as too short (the reader waits for
//!   more only then);
//! - a path address is non-empty and NUL-free; the description is at most
//!   `MAX_DESCRIPTION` bytes before lossy decoding, trimmed, without
//!   control characters; port 0's request carries port number 0;
//! - the reply encoder and the parser agree on the `sockaddr_un` layout:
//!   the client's address (a path shorter than 108 bytes, or abstract),
//!   re-encoded by `encode_reply` and parsed again, is the same address;
//! - claiming the requested port number never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::os::unix::ffi::OsStrExt;
use switchyard_switch::ports::unix::request::{
    self, ClientAddr, ReplyAddr, RequestError, RequestKind, Version, MAX_DESCRIPTION, MIN_V1_LEN,
    MIN_V3_LEN, SUN_PATH_LEN,
};
use switchyard_switch::ports::unix::PortNumbers;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = request::parse(data) else {
        return;
    };
    let min = match req.version {
        Version::V1 => MIN_V1_LEN,
        Version::V3 => MIN_V3_LEN,
    };
    assert!(data.len() >= min, "accepted {} bytes < {min}", data.len());
    for cut in [0, 1, 8, min / 2, min - 1] {
        assert!(
            matches!(request::parse(&data[..cut]), Err(RequestError::TooShort(_))),
            "a {cut}-byte prefix of an accepted request is not refused as too short"
        );
    }
    let d = req.description.as_str();
    assert!(d.len() <= MAX_DESCRIPTION * 3, "description too long");
    assert_eq!(d, d.trim(), "description not trimmed");
    assert!(!d.chars().any(char::is_control), "control character kept");
    if req.kind == RequestKind::NewPort0 {
        assert_eq!(req.port, 0, "port 0 request with a port number");
    }
    let reply = match &req.addr {
        ClientAddr::Path(p) => {
            let b = p.as_os_str().as_bytes();
            assert!(!b.is_empty() && !b.contains(&0), "bad path {p:?}");
            if b.len() >= SUN_PATH_LEN {
                // A full 108-byte sun_path has no NUL; replies name the
                // switch's own sockets, which are always shorter.
                return;
            }
            request::encode_reply(&ReplyAddr::Path(b))
        }
        ClientAddr::Abstract(name) => {
            assert!(name.iter().any(|b| *b != 0), "empty abstract name");
            request::encode_reply(&ReplyAddr::Abstract(&name[..]))
        }
    };
    let mut again = Vec::with_capacity(MIN_V3_LEN);
    again.extend_from_slice(&request::MAGIC.to_ne_bytes());
    again.extend_from_slice(&3u32.to_ne_bytes());
    again.extend_from_slice(&0u32.to_ne_bytes());
    again.extend_from_slice(&reply);
    match request::parse(&again) {
        Ok(r) => assert_eq!(r.addr, req.addr, "sockaddr round trip"),
        Err(e) => panic!("the reply encoding of {:?} does not parse: {e}", req.addr),
    }
    let numbers = PortNumbers::new(1024);
    let requested = (req.port != 0).then_some(req.port);
    let _ = numbers.claim(requested, &req.description);
});
