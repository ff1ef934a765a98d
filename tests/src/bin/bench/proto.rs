//! The client side of the uml_switch / VDE control protocol, exactly as a
//! UML `daemon` transport speaks it (protocols.md §1.3, §2.3, §2.4): a
//! 124-byte v3 request naming an abstract datagram socket bound with the
//! full 110-byte address, then a 110-byte `sockaddr_un` reply.

use std::io::{self, Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const MAGIC: u32 = 0xfeed_face;
const VERSION: u32 = 3;
const REQ_NEW_CONTROL: u32 = 0;
/// `sizeof(struct sockaddr_un)` on Linux: 2-byte family + 108-byte path.
pub const SOCKADDR_UN_LEN: usize = 110;
const SUN_PATH_LEN: usize = 108;
/// Bytes of an abstract name after the leading NUL when the full length is used.
const ABSTRACT_NAME_LEN: usize = SUN_PATH_LEN - 1;
/// UML's request: 122 bytes of fields plus 2 bytes of struct padding.
pub const REQUEST_LEN: usize = 124;

/// Ethertype used by every generated frame (IEEE 802 local experimental 1).
pub const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
pub const BROADCAST: [u8; 6] = [0xff; 6];

static NEXT_PORT: AtomicU32 = AtomicU32::new(1);

/// One switch port as seen by a client: the control connection (closing it
/// tears the port down, so it lives as long as the port) and the data
/// socket, connected to the address the switch replied with.
pub struct Port {
    _ctl: UnixStream,
    pub data: UnixDatagram,
    pub mac: [u8; 6],
    /// The switch's data address from the reply (for `sendto`).
    pub remote: SocketAddr,
    /// Whether `data` is connected to `remote`.
    pub connected: bool,
}

/// A locally administered unicast MAC, distinct per port of a process.
fn mac_for(n: u32) -> [u8; 6] {
    let b = n.to_be_bytes();
    [0x02, 0x5b, b[0], b[1], b[2], b[3]]
}

/// Build the 124-byte UML-style v3 request for an abstract client name.
pub fn build_request(name: &[u8; ABSTRACT_NAME_LEN]) -> [u8; REQUEST_LEN] {
    let mut req = [0u8; REQUEST_LEN];
    req[0..4].copy_from_slice(&MAGIC.to_ne_bytes());
    req[4..8].copy_from_slice(&VERSION.to_ne_bytes());
    req[8..12].copy_from_slice(&REQ_NEW_CONTROL.to_ne_bytes());
    req[12..14].copy_from_slice(&(libc::AF_UNIX as u16).to_ne_bytes());
    // req[14] = 0: the abstract-name marker; then the 107 name bytes.
    req[15..15 + ABSTRACT_NAME_LEN].copy_from_slice(name);
    // req[122..124]: the struct padding UML also sends (zero here).
    req
}

/// Decode the switch's 110-byte reply into the address to connect to.
pub fn parse_reply(reply: &[u8; SOCKADDR_UN_LEN]) -> Result<SocketAddr> {
    let family = u16::from_ne_bytes([reply[0], reply[1]]);
    if family != libc::AF_UNIX as u16 {
        bail!("reply has address family {family}, expected AF_UNIX (1)");
    }
    let path = &reply[2..];
    if path[0] == 0 {
        // Abstract: all 107 bytes after the NUL are the name, zeros included.
        SocketAddr::from_abstract_name(&path[1..]).context("building the abstract reply address")
    } else {
        let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
        let p = Path::new(std::ffi::OsStr::from_bytes(&path[..end]));
        SocketAddr::from_pathname(p)
            .with_context(|| format!("building the reply address {}", p.display()))
    }
}

fn connect_ctl(ctl: &Path, deadline: Instant) -> Result<UnixStream> {
    loop {
        match UnixStream::connect(ctl) {
            Ok(s) => return Ok(s),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ECONNREFUSED) | Some(libc::ENOENT) | Some(libc::EAGAIN)
                ) && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e).with_context(|| format!("connecting to {}", ctl.display())),
        }
    }
}

impl Port {
    /// Attach a new port to the switch whose control socket is `ctl`.
    /// The data socket is connected and left non-blocking.
    pub fn connect(ctl: &Path) -> Result<Port> {
        Port::attach(ctl, true)
    }

    /// Attach a new port; with `connect_data` false the data socket stays
    /// unconnected, as UML's daemon transport leaves it: frames go out with
    /// `sendto(remote)` and come in with `recvfrom`.
    pub fn attach(ctl: &Path, connect_data: bool) -> Result<Port> {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        let mut name = [0u8; ABSTRACT_NAME_LEN];
        let tag = format!("switchyard-bench/{}/{n}", std::process::id());
        name[..tag.len()].copy_from_slice(tag.as_bytes());

        let local = SocketAddr::from_abstract_name(name).context("building the client address")?;
        let data = UnixDatagram::bind_addr(&local)
            .with_context(|| format!("binding the abstract datagram socket @{tag}"))?;

        let mut ctl_sock = connect_ctl(ctl, Instant::now() + Duration::from_secs(3))?;
        // vde_switch 2.3.2 neither replies nor closes on some failures, so
        // never wait forever (protocols.md §2.4).
        ctl_sock
            .set_read_timeout(Some(Duration::from_secs(5)))
            .context("setting the control socket timeout")?;
        let req = build_request(&name);
        let written = ctl_sock
            .write(&req)
            .with_context(|| format!("sending the request to {}", ctl.display()))?;
        if written != req.len() {
            bail!(
                "short write of the request: {written} of {} bytes",
                req.len()
            );
        }
        let mut reply = [0u8; SOCKADDR_UN_LEN];
        ctl_sock
            .read_exact(&mut reply)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => anyhow::anyhow!(
                    "{}: the switch closed the control connection instead of replying",
                    ctl.display()
                ),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    anyhow::anyhow!("{}: no reply within 5 s", ctl.display())
                }
                _ => anyhow::Error::new(e)
                    .context(format!("reading the reply from {}", ctl.display())),
            })?;
        let remote = parse_reply(&reply)?;
        if connect_data {
            data.connect_addr(&remote)
                .with_context(|| format!("connecting the data socket to {remote:?}"))?;
        }
        data.set_nonblocking(true)
            .context("making the data socket non-blocking")?;
        Ok(Port {
            _ctl: ctl_sock,
            data,
            mac: mac_for(n),
            remote,
            connected: connect_data,
        })
    }

    /// Send one frame to the switch (`send` or `sendto`, as attached),
    /// waiting for room if needed.
    pub fn send_one(&self, frame: &[u8], timeout: Duration) -> Result<()> {
        if self.connected {
            send_one(&self.data, frame, timeout)
        } else {
            send_one_to(&self.data, &self.remote, frame, timeout)
        }
    }
}

/// An Ethernet frame of exactly `len` bytes (no FCS) with our ethertype.
pub fn build_frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    assert!(len >= 14 + 8, "frame too short");
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&ETHERTYPE);
    f
}

/// Send one datagram on a non-blocking socket, waiting for room if needed.
pub fn send_one(sock: &UnixDatagram, frame: &[u8], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match sock.send(frame) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let now = Instant::now();
                if now >= deadline {
                    bail!("socket stayed full for {timeout:?}");
                }
                super::sys::wait_fd(sock, libc::POLLOUT, deadline - now)
                    .context("poll for POLLOUT")?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                super::sys::check_interrupted()?;
            }
            Err(e) => return Err(e).context("sending a frame"),
        }
    }
}

/// Like [`send_one`] for an unconnected socket: `sendto(remote)`. poll(2)
/// does not report a full receiver to an unconnected sender, so this
/// sleeps briefly between attempts instead.
pub fn send_one_to(
    sock: &UnixDatagram,
    remote: &SocketAddr,
    frame: &[u8],
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        match sock.send_to_addr(frame, remote) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("the switch's socket stayed full for {timeout:?}");
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                super::sys::check_interrupted()?;
            }
            Err(e) => return Err(e).context("sending a frame with sendto"),
        }
    }
}

/// Let the switch learn every port's MAC: each port sends one broadcast
/// frame from its MAC, then all queues are drained.
pub fn learn_all(ports: &[Port]) -> Result<()> {
    for p in ports {
        let hello = build_frame(BROADCAST, p.mac, 60);
        p.send_one(&hello, Duration::from_secs(1))
            .context("sending the hello frame")?;
    }
    std::thread::sleep(Duration::from_millis(100));
    let mut buf = [0u8; 2048];
    for p in ports {
        loop {
            match p.data.recv(&mut buf) {
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e).context("draining the hello frames"),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let mut name = [0u8; ABSTRACT_NAME_LEN];
        name[0] = b'x';
        name[106] = 0x7f;
        let r = build_request(&name);
        assert_eq!(r.len(), 124);
        assert_eq!(&r[0..4], &0xfeed_faceu32.to_ne_bytes());
        assert_eq!(&r[4..8], &3u32.to_ne_bytes());
        assert_eq!(&r[8..12], &[0, 0, 0, 0]);
        assert_eq!(&r[12..14], &1u16.to_ne_bytes());
        assert_eq!(r[14], 0);
        assert_eq!(r[15], b'x');
        assert_eq!(r[121], 0x7f);
        assert_eq!(&r[122..124], &[0, 0]);
    }

    #[test]
    fn reply_path_and_abstract() {
        let mut reply = [0u8; SOCKADDR_UN_LEN];
        reply[0..2].copy_from_slice(&1u16.to_ne_bytes());
        reply[2..2 + 12].copy_from_slice(b"/tmp/x/001.6");
        let a = parse_reply(&reply).expect("path reply");
        assert_eq!(a.as_pathname(), Some(Path::new("/tmp/x/001.6")));

        let mut reply = [0u8; SOCKADDR_UN_LEN];
        reply[0..2].copy_from_slice(&1u16.to_ne_bytes());
        reply[3] = 0x7f;
        reply[6] = 42;
        let a = parse_reply(&reply).expect("abstract reply");
        let name = a.as_abstract_name().expect("abstract");
        assert_eq!(name.len(), 107);
        assert_eq!(name[0], 0x7f);
        assert_eq!(name[3], 42);
    }
}
