//! The uml_switch / VDE control request, parsed by (magic, version, length).
//!
//! Layouts (native byte order, packed):
//! - v3: magic(4) version=3(4) type(4) sockaddr_un(110) [description]
//! - v1: magic(4) type(4) mac(6) sockaddr_un(110) [description]
//!
//! The type word's low 8 bits are the request type (0 = new port,
//! 1 = management port 0); bits 8 and up carry a requested port number.

use std::path::PathBuf;

/// 0xfeedface in native order.
pub const MAGIC: u32 = 0xfeed_face;
/// `sizeof(struct sockaddr_un)` on Linux.
pub const SOCKADDR_UN_LEN: usize = 110;
/// Bytes of `sun_path`.
pub const SUN_PATH_LEN: usize = 108;
/// The shortest v3 request (no description).
pub const MIN_V3_LEN: usize = 12 + SOCKADDR_UN_LEN;
/// The v1 request length without a description.
pub const MIN_V1_LEN: usize = 14 + SOCKADDR_UN_LEN;
/// The longest description kept, in bytes (VDE caps it at 128).
pub const MAX_DESCRIPTION: usize = 128;

mod field {
    use std::ops::Range;
    pub(super) const MAGIC: Range<usize> = 0..4;
    pub(super) const VERSION: Range<usize> = 4..8;
    pub(super) const V3_TYPE: Range<usize> = 8..12;
    pub(super) const V3_ADDR: usize = 12;
    pub(super) const V1_ADDR: usize = 14;
}

/// Which request layout the client used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// uml_switch protocol version 1.
    V1,
    /// Version 3: UML `daemon`, libvdeplug.
    V3,
}

/// What the client asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// REQ_NEW_CONTROL: a normal port.
    NewPort,
    /// REQ_NEW_PORT0: VDE's management port 0.
    NewPort0,
}

/// The client's datagram socket address.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientAddr {
    /// An abstract name: all 107 bytes after the leading NUL, uninitialised
    /// tail included, because UML binds with the full length.
    Abstract(Box<[u8; SUN_PATH_LEN - 1]>),
    /// A path name (bytes up to the first NUL).
    Path(PathBuf),
}

impl std::fmt::Debug for ClientAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddr::Abstract(name) => {
                let shown: Vec<u8> = name.iter().take(12).copied().collect();
                write!(f, "abstract {shown:02x?}…")
            }
            ClientAddr::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The layout.
    pub version: Version,
    /// The request type.
    pub kind: RequestKind,
    /// The requested port number; 0 = any.
    pub port: u32,
    /// Where the client receives frames.
    pub addr: ClientAddr,
    /// The client's self-description (VDE), lossily decoded.
    pub description: String,
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Fewer bytes than the smallest layout.
    #[error("request of {0} bytes is too short (a v3 request has at least 122)")]
    TooShort(usize),
    /// No 0xfeedface at the start: a version-0 client or not this protocol.
    #[error("bad magic {0:#010x} (expected 0xfeedface): not a uml_switch/VDE client, or a version-0 client")]
    BadMagic(u32),
    /// A protocol version we do not speak.
    #[error("protocol version {0} is not supported (versions 1 and 3 are)")]
    UnsupportedVersion(u32),
    /// A request type other than new-port or port 0.
    #[error("request type {0} is not supported (0 = new port, 1 = port 0)")]
    UnsupportedType(u32),
    /// The client address is not AF_UNIX.
    #[error("client address family {0} is not AF_UNIX")]
    BadFamily(u16),
    /// An empty path name.
    #[error("client address is empty")]
    EmptyAddress,
}

fn word(buf: &[u8], at: std::ops::Range<usize>) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&buf[at]);
    u32::from_ne_bytes(w)
}

fn parse_addr(sa: &[u8]) -> Result<ClientAddr, RequestError> {
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    if family != libc::AF_UNIX as u16 {
        return Err(RequestError::BadFamily(family));
    }
    let path = &sa[2..2 + SUN_PATH_LEN];
    if path[0] == 0 {
        let mut name = Box::new([0u8; SUN_PATH_LEN - 1]);
        name.copy_from_slice(&path[1..]);
        if name.iter().all(|b| *b == 0) {
            return Err(RequestError::EmptyAddress);
        }
        return Ok(ClientAddr::Abstract(name));
    }
    let end = path.iter().position(|b| *b == 0).unwrap_or(path.len());
    use std::os::unix::ffi::OsStrExt;
    Ok(ClientAddr::Path(PathBuf::from(
        std::ffi::OsStr::from_bytes(&path[..end]),
    )))
}

fn description(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    let d = &bytes[..end.min(MAX_DESCRIPTION)];
    String::from_utf8_lossy(d)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Parses one request as read in one piece from the control connection.
pub fn parse(buf: &[u8]) -> Result<Request, RequestError> {
    if buf.len() < 8 {
        return Err(RequestError::TooShort(buf.len()));
    }
    let magic = word(buf, field::MAGIC);
    if magic != MAGIC {
        return Err(RequestError::BadMagic(magic));
    }
    let v = word(buf, field::VERSION);
    let (version, type_word, addr_at) = match v {
        3 => {
            if buf.len() < MIN_V3_LEN {
                return Err(RequestError::TooShort(buf.len()));
            }
            (Version::V3, word(buf, field::V3_TYPE), field::V3_ADDR)
        }
        // In the v1 layout the word after the magic is the request type.
        0 | 1 => {
            if buf.len() < MIN_V1_LEN {
                return Err(RequestError::TooShort(buf.len()));
            }
            (Version::V1, v, field::V1_ADDR)
        }
        other => return Err(RequestError::UnsupportedVersion(other)),
    };
    let kind = match type_word & 0xff {
        0 => RequestKind::NewPort,
        1 => RequestKind::NewPort0,
        _ => return Err(RequestError::UnsupportedType(type_word)),
    };
    let port = if kind == RequestKind::NewPort0 {
        0
    } else {
        type_word >> 8
    };
    let addr = parse_addr(&buf[addr_at..addr_at + SOCKADDR_UN_LEN])?;
    let description = description(&buf[addr_at + SOCKADDR_UN_LEN..]);
    Ok(Request {
        version,
        kind,
        port,
        addr,
        description,
    })
}

/// Encodes the 110-byte reply: a `sockaddr_un` naming the port's socket.
/// For an abstract name pass the 107 bytes after the leading NUL.
pub fn encode_reply(addr: &ReplyAddr<'_>) -> [u8; SOCKADDR_UN_LEN] {
    let mut out = [0u8; SOCKADDR_UN_LEN];
    out[0..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    match addr {
        ReplyAddr::Abstract(name) => {
            let n = name.len().min(SUN_PATH_LEN - 1);
            out[3..3 + n].copy_from_slice(&name[..n]);
        }
        ReplyAddr::Path(p) => {
            let n = p.len().min(SUN_PATH_LEN - 1);
            out[2..2 + n].copy_from_slice(&p[..n]);
        }
    }
    out
}

/// The switch-side address put in a reply.
#[derive(Debug, Clone, Copy)]
pub enum ReplyAddr<'a> {
    /// Abstract name bytes (after the leading NUL).
    Abstract(&'a [u8]),
    /// Path bytes, shorter than 108.
    Path(&'a [u8]),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 124-byte v3 request UML 6.1 sent (strace): abstract address with
    /// pid, microseconds and uninitialised heap bytes, then 2 padding bytes.
    fn uml_request() -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&[0xce, 0xfa, 0xed, 0xfe, 3, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
        let mut path = [0u8; 108];
        path[1..4].copy_from_slice(&[0x7f, 0, 0]);
        path[4..8].copy_from_slice(&31257u32.to_ne_bytes());
        path[8..12].copy_from_slice(&123456u32.to_ne_bytes());
        path[64..68].copy_from_slice(&[0x7c, 0x06, 0x67, 0x00]);
        r.extend_from_slice(&path);
        r.extend_from_slice(&[0, 0]);
        assert_eq!(r.len(), 124);
        r
    }

    /// A vdeplug4 request: 122 bytes plus the description, port 5.
    fn vde_request(port: u32, descr: &str) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&MAGIC.to_ne_bytes());
        r.extend_from_slice(&3u32.to_ne_bytes());
        r.extend_from_slice(&(port << 8).to_ne_bytes());
        r.extend_from_slice(&1u16.to_ne_bytes());
        let mut path = [0u8; 108];
        let p = b"/tmp/vde.ctl/.19891-00000";
        path[..p.len()].copy_from_slice(p);
        r.extend_from_slice(&path);
        r.extend_from_slice(descr.as_bytes());
        r
    }

    #[test]
    fn uml_daemon_request() {
        let req = parse(&uml_request()).expect("UML request parses");
        assert_eq!(req.version, Version::V3);
        assert_eq!(req.kind, RequestKind::NewPort);
        assert_eq!(req.port, 0);
        assert_eq!(req.description, "");
        match req.addr {
            ClientAddr::Abstract(name) => {
                assert_eq!(&name[..3], &[0x7f, 0, 0]);
                assert_eq!(
                    &name[63..67],
                    &[0x7c, 0x06, 0x67, 0x00],
                    "garbage tail kept"
                );
            }
            other => panic!("expected abstract, got {other:?}"),
        }
    }

    #[test]
    fn vdeplug_request_with_port_and_description() {
        let raw = vde_request(5, "vdeplug: user=root pid=19891");
        assert_eq!(raw.len(), 150);
        let req = parse(&raw).expect("vdeplug request parses");
        assert_eq!(req.port, 5);
        assert_eq!(req.description, "vdeplug: user=root pid=19891");
        assert_eq!(
            req.addr,
            ClientAddr::Path(PathBuf::from("/tmp/vde.ctl/.19891-00000"))
        );
    }

    #[test]
    fn port0_request() {
        let mut raw = vde_request(0, "x");
        raw[8] = 1;
        let req = parse(&raw).expect("port 0 request parses");
        assert_eq!(req.kind, RequestKind::NewPort0);
        assert_eq!(req.port, 0);
    }

    #[test]
    fn v1_request() {
        let mut r = Vec::new();
        r.extend_from_slice(&MAGIC.to_ne_bytes());
        r.extend_from_slice(&0u32.to_ne_bytes());
        r.extend_from_slice(&[2, 0, 0, 0, 0, 9]);
        r.extend_from_slice(&1u16.to_ne_bytes());
        let mut path = [0u8; 108];
        path[..6].copy_from_slice(b"/tmp/x");
        r.extend_from_slice(&path);
        let req = parse(&r).expect("v1 parses");
        assert_eq!(req.version, Version::V1);
        assert_eq!(req.addr, ClientAddr::Path(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn refusals() {
        assert_eq!(parse(&[1, 2, 3]), Err(RequestError::TooShort(3)));
        assert_eq!(
            parse(&uml_request()[..121]),
            Err(RequestError::TooShort(121))
        );
        let mut bad = uml_request();
        bad[0] = 0;
        assert!(matches!(parse(&bad), Err(RequestError::BadMagic(_))));
        let mut v2 = uml_request();
        v2[4] = 2;
        assert_eq!(parse(&v2), Err(RequestError::UnsupportedVersion(2)));
        let mut v9 = uml_request();
        v9[4] = 9;
        assert_eq!(parse(&v9), Err(RequestError::UnsupportedVersion(9)));
        let mut t = uml_request();
        t[8] = 7;
        assert_eq!(parse(&t), Err(RequestError::UnsupportedType(7)));
        let mut fam = uml_request();
        fam[12] = 2;
        assert_eq!(parse(&fam), Err(RequestError::BadFamily(2)));
        let mut empty = vde_request(0, "");
        for b in &mut empty[14..122] {
            *b = 0;
        }
        assert_eq!(parse(&empty), Err(RequestError::EmptyAddress));
    }

    #[test]
    fn reply_layouts() {
        let r = encode_reply(&ReplyAddr::Path(b"/run/vde.ctl/001.3"));
        assert_eq!(&r[0..2], &1u16.to_ne_bytes());
        assert_eq!(&r[2..20], b"/run/vde.ctl/001.3");
        assert!(r[20..].iter().all(|b| *b == 0));
        let a = encode_reply(&ReplyAddr::Abstract(b"sy"));
        assert_eq!(&a[2..5], b"\0sy");
    }

    proptest::proptest! {
        /// Any bytes at all: parse never panics.
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&bytes);
        }

        /// A valid header with any tail parses and keeps the port number.
        #[test]
        fn any_description_is_accepted(port in 0u32..0xffff, descr in proptest::collection::vec(proptest::num::u8::ANY, 0..130)) {
            let mut raw = vde_request(port, "");
            raw.extend_from_slice(&descr);
            let req = parse(&raw).expect("valid header");
            proptest::prop_assert_eq!(req.port, port);
            proptest::prop_assert!(req.description.len() <= MAX_DESCRIPTION * 3);
        }
    }
}
