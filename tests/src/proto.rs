//! A tiny client for the uml_switch/VDE unix control protocol
//! (protocols.md §1.3, §2.3–§2.5), for tests that need exact control over
//! the bytes: handshake abuse and frame sizes.

use std::io::{ErrorKind, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::unique_name;

/// 0xfeedface, sent in native byte order.
pub const MAGIC: u32 = 0xfeed_face;
/// Size of `struct sockaddr_un` on Linux.
pub const SOCKADDR_LEN: usize = 110;
/// Size of a request without description: magic, version, type, sockaddr.
pub const REQUEST_LEN: usize = 12 + SOCKADDR_LEN;
/// Largest datagram the tests send or expect.
pub const MAX_FRAME: usize = 65535;

/// A `sockaddr_un` for a path, as the 110 bytes that travel on the wire.
pub fn sockaddr_path(path: &Path) -> Result<[u8; SOCKADDR_LEN]> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= SOCKADDR_LEN - 2 {
        bail!("socket path too long: {}", path.display());
    }
    let mut sa = [0u8; SOCKADDR_LEN];
    sa[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    sa[2..2 + bytes.len()].copy_from_slice(bytes);
    Ok(sa)
}

/// A request: magic, `version`, type word (`port << 8 | req_type`), the
/// client's sockaddr, then `descr` (no NUL), all native-endian.
pub fn request(
    version: u32,
    req_type: u32,
    port: u32,
    sa: &[u8; SOCKADDR_LEN],
    descr: &[u8],
) -> Vec<u8> {
    request_with_magic(MAGIC, version, (port << 8) | req_type, sa, descr)
}

/// A request with any magic and raw type word.
pub fn request_with_magic(
    magic: u32,
    version: u32,
    type_word: u32,
    sa: &[u8; SOCKADDR_LEN],
    descr: &[u8],
) -> Vec<u8> {
    let mut req = Vec::with_capacity(REQUEST_LEN + descr.len());
    req.extend_from_slice(&magic.to_ne_bytes());
    req.extend_from_slice(&version.to_ne_bytes());
    req.extend_from_slice(&type_word.to_ne_bytes());
    req.extend_from_slice(sa);
    req.extend_from_slice(descr);
    req
}

/// What the switch did with a handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It closed the connection (possibly after some bytes, kept here).
    Eof(Vec<u8>),
    /// The connection was reset.
    Reset,
    /// It replied with exactly these bytes and kept the connection open.
    Reply(Vec<u8>),
    /// Nothing happened within the timeout.
    Timeout(Vec<u8>),
}

/// Connects to the control socket `ctl`, writes `bytes` in one write, and
/// reports what the switch did within `timeout`. A reply is recognised once
/// 110 bytes arrived and nothing else (EOF included) follows for 300 ms.
pub fn raw_handshake(ctl: &Path, bytes: &[u8], timeout: Duration) -> Result<Outcome> {
    let mut s =
        UnixStream::connect(ctl).with_context(|| format!("connecting to {}", ctl.display()))?;
    if !bytes.is_empty() {
        s.write_all(bytes).context("writing the request")?;
    }
    read_outcome(&mut s, timeout)
}

/// Reads from a control connection until EOF, error or timeout.
pub fn read_outcome(s: &mut UnixStream, timeout: Duration) -> Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let now = Instant::now();
        let mut wait = deadline.saturating_duration_since(now);
        if got.len() >= SOCKADDR_LEN {
            wait = wait.min(Duration::from_millis(300));
        }
        if wait.is_zero() {
            return Ok(Outcome::Timeout(got));
        }
        s.set_read_timeout(Some(wait))?;
        match s.read(&mut buf) {
            Ok(0) => return Ok(Outcome::Eof(got)),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(Outcome::Reset),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if got.len() == SOCKADDR_LEN {
                    return Ok(Outcome::Reply(got));
                }
                if Instant::now() >= deadline {
                    return Ok(Outcome::Timeout(got));
                }
            }
            Err(e) => return Err(e).context("reading the control connection"),
        }
    }
}

/// Parses a 110-byte `sockaddr_un` reply into a socket address.
pub fn parse_reply(reply: &[u8]) -> Result<SocketAddr> {
    if reply.len() != SOCKADDR_LEN {
        bail!("reply is {} bytes, expected {SOCKADDR_LEN}", reply.len());
    }
    let family = u16::from_ne_bytes([reply[0], reply[1]]);
    if family != libc::AF_UNIX as u16 {
        bail!("reply family is {family}, expected AF_UNIX");
    }
    let path = &reply[2..];
    if path[0] == 0 {
        // Abstract: all 107 following bytes are the name (protocols.md §6).
        Ok(SocketAddr::from_abstract_name(&path[1..])?)
    } else {
        let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        Ok(SocketAddr::from_pathname(Path::new(
            std::ffi::OsStr::from_bytes(&path[..end]),
        ))?)
    }
}

/// A client port: the control connection (kept open: closing it detaches
/// the port) and a datagram socket connected to the switch's endpoint.
#[derive(Debug)]
pub struct Client {
    ctl: UnixStream,
    data: UnixDatagram,
    mac: [u8; 6],
    bound: PathBuf,
    /// The switch's data socket when ours is not connected to it
    /// ([`Client::attach_unconnected`]): frames go there with `sendto`.
    to: Option<SocketAddr>,
}

impl Client {
    /// Attaches to the VDE directory `dir` (`dir/ctl`) asking for `port`
    /// (0 = any). The client's datagram socket is created in `scratch` and,
    /// like vdeplug4 does, unlinked right after the handshake.
    pub fn attach(dir: &Path, port: u32, scratch: &Path, mac: [u8; 6]) -> Result<Client> {
        Self::attach_ctl(&dir.join("ctl"), port, scratch, mac)
    }

    /// Same as [`Client::attach`] with the control socket path itself.
    pub fn attach_ctl(ctl: &Path, port: u32, scratch: &Path, mac: [u8; 6]) -> Result<Client> {
        let (bound, data, ctl_stream, addr) =
            handshake(ctl, port, scratch, "c", b"switchyard-tests client")?;
        data.connect_addr(&addr)
            .with_context(|| format!("connecting the data socket to {addr:?}"))?;
        let _ = std::fs::remove_file(&bound);
        Ok(Client {
            ctl: ctl_stream,
            data,
            mac,
            bound,
            to: None,
        })
    }

    /// Attaches to the control socket `ctl` the way UML's daemon transport
    /// does: the datagram socket bound in `scratch` is never connected, so
    /// frames go out with `sendto` to the replied address and come in with
    /// `recvfrom`. That leaves the socket's receive queue limited to
    /// `net.unix.max_dgram_qlen` datagrams toward the switch, which is
    /// what backpressure tests need. `descr` is the request's description
    /// (it shows in the port's `peer`). Sends time out after 10 s, so a
    /// switch that stops reading fails a test instead of hanging it.
    pub fn attach_unconnected(
        ctl: &Path,
        scratch: &Path,
        mac: [u8; 6],
        descr: &str,
    ) -> Result<Client> {
        let (bound, data, ctl_stream, addr) = handshake(ctl, 0, scratch, "u", descr.as_bytes())?;
        data.set_write_timeout(Some(Duration::from_secs(10)))?;
        // Like UML, the bound path stays (the caller's scratch directory
        // goes away with the test).
        Ok(Client {
            ctl: ctl_stream,
            data,
            mac,
            bound,
            to: Some(addr),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Sends one frame (one datagram).
    pub fn send(&self, frame: &[u8]) -> Result<()> {
        let n = match &self.to {
            Some(addr) => self.data.send_to_addr(frame, addr),
            None => self.data.send(frame),
        }
        .context("sending a frame")?;
        if n != frame.len() {
            bail!("short send: {n} of {} bytes", frame.len());
        }
        Ok(())
    }

    /// Receives one frame, or None after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; MAX_FRAME + 4096];
        self.data.set_read_timeout(Some(timeout))?;
        match self.data.recv(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e).context("receiving a frame"),
        }
    }

    /// Receives one frame into `buf` and returns its length, or None after
    /// `timeout`: for tests that take many frames without allocating.
    pub fn recv_into(&self, buf: &mut [u8], timeout: Duration) -> Result<Option<usize>> {
        self.data.set_read_timeout(Some(timeout))?;
        match self.data.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => Ok(None),
            Err(e) => Err(e).context("receiving a frame"),
        }
    }

    /// Receives frames until one satisfies `want`, or None after `timeout`.
    /// Frames that do not match (e.g. IPv6 noise) are skipped.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        want: impl Fn(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.recv(left)? {
                Some(f) if want(&f) => return Ok(Some(f)),
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }

    /// True if the switch closed the control connection within `timeout`.
    pub fn ctl_closed(&mut self, timeout: Duration) -> Result<bool> {
        Ok(matches!(
            read_outcome(&mut self.ctl, timeout)?,
            Outcome::Eof(_) | Outcome::Reset
        ))
    }

    /// The control connection, for tests that misbehave on it.
    pub fn ctl_stream(&mut self) -> &mut UnixStream {
        &mut self.ctl
    }

    /// The path our data socket was bound to (already unlinked).
    pub fn bound_path(&self) -> &Path {
        &self.bound
    }
}

/// Binds a datagram socket in `scratch` (named with `tag`), asks the
/// switch at `ctl` for `port` with it, and returns the socket's path, the
/// socket, the control connection and the switch's data address.
fn handshake(
    ctl: &Path,
    port: u32,
    scratch: &Path,
    tag: &str,
    descr: &[u8],
) -> Result<(PathBuf, UnixDatagram, UnixStream, SocketAddr)> {
    let bound = scratch.join(format!(".{}", unique_name(tag)));
    let data =
        UnixDatagram::bind(&bound).with_context(|| format!("binding {}", bound.display()))?;
    let sa = sockaddr_path(&bound)?;
    let req = request(3, 0, port, &sa, descr);
    let mut ctl_stream =
        UnixStream::connect(ctl).with_context(|| format!("connecting to {}", ctl.display()))?;
    ctl_stream.write_all(&req).context("sending the request")?;
    let reply = read_exact_timeout(&mut ctl_stream, SOCKADDR_LEN, Duration::from_secs(5))
        .context("reading the handshake reply")?;
    let addr = parse_reply(&reply)?;
    Ok((bound, data, ctl_stream, addr))
}

fn read_exact_timeout(s: &mut UnixStream, n: usize, timeout: Duration) -> Result<Vec<u8>> {
    match read_outcome(s, timeout)? {
        Outcome::Reply(r) if r.len() == n => Ok(r),
        other => bail!("expected a {n}-byte reply, got {other:?}"),
    }
}

/// A locally administered unicast MAC `02:00:00:00:xx:yy`.
pub fn mac(n: u16) -> [u8; 6] {
    let [a, b] = n.to_be_bytes();
    [0x02, 0, 0, 0, a, b]
}

pub const BROADCAST: [u8; 6] = [0xff; 6];

/// An Ethernet frame of exactly `len` bytes (at least 14) with EtherType
/// 0x88b5 (local experimental) and a payload derived from `seed`.
pub fn frame(dst: [u8; 6], src: [u8; 6], len: usize, seed: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    let mut x = seed;
    while f.len() < len {
        f.push(x);
        x = x.wrapping_mul(31).wrapping_add(7);
    }
    f.truncate(len.max(14));
    f
}

/// True if `f` is one of our test frames (EtherType 0x88b5) from `src`.
pub fn is_test_frame_from(f: &[u8], src: [u8; 6]) -> bool {
    f.len() >= 14 && f[6..12] == src && f[12..14] == [0x88, 0xb5]
}

/// An ARP request (broadcast) from `src_mac`/`src_ip` asking for `target_ip`.
pub fn arp_request(src_mac: [u8; 6], src_ip: [u8; 4], target_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]); // Ethernet/IPv4, request
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&src_ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target_ip);
    f
}

/// If `f` is an ARP reply telling `to_mac` where `ip` is, the answering MAC.
pub fn arp_reply_for(f: &[u8], to_mac: [u8; 6], ip: [u8; 4]) -> Option<[u8; 6]> {
    if f.len() < 42 || f[0..6] != to_mac || f[12..14] != [0x08, 0x06] || f[20..22] != [0, 2] {
        return None;
    }
    if f[28..32] != ip {
        return None;
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&f[22..28]);
    Some(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_is_native_endian_and_packed() {
        let sa = sockaddr_path(Path::new("/tmp/x")).expect("short path");
        let r = request(3, 0, 5, &sa, b"hi");
        assert_eq!(r.len(), REQUEST_LEN + 2);
        assert_eq!(&r[0..4], &MAGIC.to_ne_bytes());
        assert_eq!(&r[4..8], &3u32.to_ne_bytes());
        assert_eq!(&r[8..12], &(5u32 << 8).to_ne_bytes());
        assert_eq!(&r[12..14], &(libc::AF_UNIX as u16).to_ne_bytes());
        assert_eq!(&r[14..20], b"/tmp/x");
        assert_eq!(&r[122..], b"hi");
    }

    #[test]
    fn reply_parsing_handles_paths_and_abstract_names() {
        let sa = sockaddr_path(Path::new("/run/sw/001.7")).expect("short path");
        let addr = parse_reply(&sa).expect("path reply");
        assert_eq!(addr.as_pathname(), Some(Path::new("/run/sw/001.7")));
        let mut abs = [0u8; SOCKADDR_LEN];
        abs[..2].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
        abs[3] = 0x7f;
        let addr = parse_reply(&abs).expect("abstract reply");
        assert_eq!(addr.as_abstract_name().map(<[u8]>::len), Some(107));
        assert!(parse_reply(&abs[..100]).is_err());
    }

    #[test]
    fn frames_have_the_requested_length() {
        for len in [14, 60, 1514, 65535] {
            let f = frame(BROADCAST, mac(1), len, 3);
            assert_eq!(f.len(), len);
            assert!(is_test_frame_from(&f, mac(1)));
        }
        let arp = arp_request(mac(2), [192, 0, 2, 1], [192, 0, 2, 254]);
        assert_eq!(arp.len(), 42);
    }
}
