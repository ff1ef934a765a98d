//! The `vxlan` port (RFC 7348): frames to and from other hosts' VTEPs —
//! Linux vxlan devices, Open vSwitch, other switchyards — over UDP.
//! Broadcast, multicast and unknown unicast are copied to every static
//! remote (head-end replication); inner source MACs are learned against
//! the outer source address, and known unicast goes only there.
//!
//! We always send the header `08 00 00 00 VNI VNI VNI 00`: Linux drops
//! anything else. On receive we follow the RFC (reserved bits ignored)
//! unless `strict` asks for Linux's checks.

use super::receive::{attach, detach_after, frame_buffer, receive_loop, Received};
use super::PortError;
use crate::counters::DropReason;
use crate::frame::{EthernetFrame, MacAddr};
use crate::gather::Gathered;
use crate::port::{transmit_each, Port, PortId, SendError, Transmit};
use crate::switch::Switch;
use socket2::SockRef;
use std::collections::HashMap;
use std::io::IoSlice;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// IANA's VXLAN port.
pub const DEFAULT_PORT: u16 = 4789;
/// The VXLAN header length.
pub const HEADER_LEN: usize = 8;
/// Learned remotes kept at most.
const MAX_LEARNED: usize = 65_536;
/// A learned remote not refreshed for this long is forgotten (as Linux).
const LEARN_AGING: Duration = Duration::from_secs(300);

/// Settings of a vxlan port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VxlanConfig {
    /// The port's name.
    pub name: String,
    /// The 24-bit network identifier.
    pub vni: u32,
    /// Our address and UDP port (4789; 8472 for Linux devices made
    /// without `dstport`).
    pub local: SocketAddr,
    /// Static remote VTEPs: floods go to each.
    pub remotes: Vec<IpAddr>,
    /// Refuse packets with reserved bits set, as Linux does.
    pub strict: bool,
}

impl VxlanConfig {
    /// A config from its parts (RFC behaviour on receive).
    pub fn new(
        name: impl Into<String>,
        vni: u32,
        local: SocketAddr,
        remotes: Vec<IpAddr>,
    ) -> VxlanConfig {
        VxlanConfig {
            name: name.into(),
            vni,
            local,
            remotes,
            strict: false,
        }
    }

    /// Sets strict header checks.
    pub fn with_strict(mut self, strict: bool) -> VxlanConfig {
        self.strict = strict;
        self
    }
}

/// Why a VXLAN packet was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the header plus an Ethernet header.
    TooShort,
    /// The I flag is clear, or (strict) a reserved bit is set.
    BadFlags,
    /// Another VNI.
    WrongVni(u32),
}

/// A checked view of a VXLAN packet (header plus inner frame).
#[derive(Debug, Clone, Copy)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

mod field {
    pub(super) const FLAGS: usize = 0;
    pub(super) const RESERVED1: std::ops::Range<usize> = 1..4;
    pub(super) const VNI: std::ops::Range<usize> = 4..7;
    pub(super) const RESERVED2: usize = 7;
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// Checks length, flags and (strict) reserved bits.
    pub fn new_checked(buffer: T, strict: bool) -> Result<Self, HeaderError> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN + crate::MIN_FRAME {
            return Err(HeaderError::TooShort);
        }
        let flags = b[field::FLAGS];
        if flags & 0x08 == 0 {
            return Err(HeaderError::BadFlags);
        }
        if strict
            && (flags != 0x08
                || b[field::RESERVED1].iter().any(|x| *x != 0)
                || b[field::RESERVED2] != 0)
        {
            return Err(HeaderError::BadFlags);
        }
        Ok(VxlanPacket { buffer })
    }

    /// The network identifier.
    pub fn vni(&self) -> u32 {
        let v = &self.buffer.as_ref()[field::VNI];
        u32::from_be_bytes([0, v[0], v[1], v[2]])
    }

    /// The inner Ethernet frame.
    pub fn inner(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

/// The header we send for `vni`.
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let v = vni.to_be_bytes();
    [0x08, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// Checks a received packet for our VNI; returns the inner frame's range.
pub fn decapsulate(
    packet: &[u8],
    vni: u32,
    strict: bool,
) -> Result<std::ops::Range<usize>, HeaderError> {
    let p = VxlanPacket::new_checked(packet, strict)?;
    if p.vni() != vni {
        return Err(HeaderError::WrongVni(p.vni()));
    }
    Ok(HEADER_LEN..packet.len())
}

/// Inner MAC → remote VTEP, learned from received packets.
#[derive(Debug, Default)]
pub struct RemoteTable {
    entries: HashMap<MacAddr, (IpAddr, Duration)>,
    last_sweep: Option<Duration>,
}

impl RemoteTable {
    /// Records that `mac` lives behind `remote` at `now`. A full table
    /// refuses new addresses at once; stale ones are swept at most once a
    /// second, so a flood of new source addresses costs O(1) per packet.
    pub fn learn(&mut self, mac: MacAddr, remote: IpAddr, now: Duration) {
        if mac.is_multicast() {
            return;
        }
        if let Some(e) = self.entries.get_mut(&mac) {
            *e = (remote, now);
            return;
        }
        if self.entries.len() >= MAX_LEARNED {
            let due = self
                .last_sweep
                .is_none_or(|t| now.saturating_sub(t) >= Duration::from_secs(1));
            if !due {
                return;
            }
            self.last_sweep = Some(now);
            self.entries
                .retain(|_, (_, t)| now.saturating_sub(*t) < LEARN_AGING);
            if self.entries.len() >= MAX_LEARNED {
                return;
            }
        }
        self.entries.insert(mac, (remote, now));
    }

    /// The remote `mac` was last seen behind, if fresh.
    pub fn lookup(&self, mac: MacAddr, now: Duration) -> Option<IpAddr> {
        self.entries
            .get(&mac)
            .filter(|(_, t)| now.saturating_sub(*t) < LEARN_AGING)
            .map(|(ip, _)| *ip)
    }
}

/// An open vxlan port.
#[derive(Debug)]
pub struct VxlanPort {
    config: VxlanConfig,
    sock: Arc<UdpSocket>,
}

impl VxlanPort {
    /// Binds the UDP socket.
    pub fn open(config: VxlanConfig) -> Result<VxlanPort, PortError> {
        let name = config.name.clone();
        if config.vni > 0x00ff_ffff {
            return Err(PortError::Config {
                port: name,
                message: format!("VNI {} does not fit in 24 bits (0 to 16777215)", config.vni),
            });
        }
        if let Some(r) = config
            .remotes
            .iter()
            .find(|r| r.is_ipv4() != config.local.is_ipv4())
        {
            return Err(PortError::Config {
                port: name,
                message: format!(
                    "remote {r} and local {} must be the same IP version",
                    config.local
                ),
            });
        }
        let sock =
            UdpSocket::bind(config.local).map_err(PortError::io(&name, "bind", config.local))?;
        sock.set_nonblocking(true)
            .map_err(PortError::io(&name, "configure", config.local))?;
        Ok(VxlanPort {
            config,
            sock: Arc::new(sock),
        })
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Becomes a port and forwards frames until the switch stops.
    pub async fn serve(self, switch: Arc<Switch>, stop: crate::Stop) {
        let id = switch.allocate_id();
        let cfg = self.config;
        let name = cfg.name.clone();
        let remotes: Vec<String> = cfg.remotes.iter().map(|r| r.to_string()).collect();
        let peer = format!(
            "vni {} on {} to [{}]",
            cfg.vni,
            cfg.local,
            remotes.join(", ")
        );
        let learned = Arc::new(Mutex::new(RemoteTable::default()));
        let tx = VxlanTx {
            sock: self.sock.clone(),
            header: header(cfg.vni),
            port: cfg.local.port(),
            remotes: cfg.remotes.clone(),
            learned: learned.clone(),
            epoch: switch.epoch(),
        };
        let port = Arc::new(Port::new(id, &name, "vxlan", &peer, Box::new(tx)));
        let Some((afd, attached)) = attach(&switch, &stop, &port, self.sock.clone()) else {
            return;
        };
        let (p, sw) = (port.clone(), switch.clone());
        let (vni, strict) = (cfg.vni, cfg.strict);
        let mut buf = vec![0u8; HEADER_LEN + frame_buffer().len()];
        let r = receive_loop(&switch, &port, &afd, &mut buf, move |s, b| {
            let (n, from) = match s.recv_from(b) {
                Ok(x) => x,
                Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                    return Ok(Received::Skip)
                }
                Err(e) => return Err(e),
            };
            let now = sw.now();
            match decapsulate(&b[..n], vni, strict) {
                Ok(range) => {
                    if let Ok(f) = EthernetFrame::new_checked(&b[range.clone()]) {
                        learned.lock().unwrap_or_else(|e| e.into_inner()).learn(
                            f.source(),
                            from.ip(),
                            now,
                        );
                    }
                    Ok(Received::Frame(range))
                }
                Err(HeaderError::WrongVni(_)) => {
                    p.drop_frame(DropReason::WrongVni, now, None);
                    Ok(Received::Skip)
                }
                Err(_) => {
                    p.drop_frame(DropReason::BadEncapsulation, now, None);
                    Ok(Received::Skip)
                }
            }
        })
        .await;
        detach_after(r, attached);
    }
}

struct VxlanTx {
    sock: Arc<UdpSocket>,
    header: [u8; HEADER_LEN],
    port: u16,
    remotes: Vec<IpAddr>,
    learned: Arc<Mutex<RemoteTable>>,
    epoch: std::time::Instant,
}

impl VxlanTx {
    fn send_to(&self, frame: &[u8], ip: IpAddr) -> Result<(), SendError> {
        let to = socket2::SockAddr::from(SocketAddr::new(ip, self.port));
        SockRef::from(&*self.sock)
            .send_to_vectored(&[IoSlice::new(&self.header), IoSlice::new(frame)], &to)
            .map(|_| ())
            .map_err(down_not_gone)
    }

    fn send_gathered_to(&self, frame: &Gathered<'_>, ip: IpAddr) -> Result<(), SendError> {
        let to = socket2::SockAddr::from(SocketAddr::new(ip, self.port));
        crate::sys::send_to_gathered(&*self.sock, &to, &self.header, frame)
            .map(|_| ())
            .map_err(down_not_gone)
    }

    /// Sends a frame whose headers are `headers` with `send`: to the one
    /// remote its destination was learned behind, else to every remote
    /// (head-end replication; it counts as sent if any copy went).
    fn send_frame(
        &self,
        headers: &[u8],
        send: impl Fn(IpAddr) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let known = EthernetFrame::new_checked(headers).ok().and_then(|f| {
            let dst = f.destination();
            if dst.is_multicast() {
                return None;
            }
            self.learned
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lookup(dst, self.epoch.elapsed())
        });
        if let Some(ip) = known {
            return send(ip);
        }
        let mut result = Ok(());
        let mut any = false;
        for r in &self.remotes {
            match send(*r) {
                Ok(()) => any = true,
                Err(e) => result = Err(e),
            }
        }
        if any {
            Ok(())
        } else {
            result
        }
    }
}

/// A remote with no route is down, not gone: the port stays.
fn down_not_gone(e: std::io::Error) -> SendError {
    match SendError::from_io(e) {
        SendError::Gone(_) => SendError::Down,
        other => other,
    }
}

impl Transmit for VxlanTx {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| {
            self.send_frame(frame, |ip| self.send_to(frame, ip))
        })
    }

    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        Some(transmit_each(frames, |frame| {
            self.send_frame(frame.head(), |ip| self.send_gathered_to(&frame, ip))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gathered_frame_goes_behind_the_header_to_every_remote() {
        use crate::gather::split;
        let mut frame = vec![0xffu8; 6];
        frame.extend((0..994u32).map(|i| (i % 253) as u8));
        let mut slots = Vec::new();
        let g = split(&frame, 3, &mut slots);
        let remote = UdpSocket::bind("127.0.0.1:0").expect("remote");
        let tx = VxlanTx {
            sock: Arc::new(UdpSocket::bind("127.0.0.1:0").expect("sock")),
            header: header(42),
            port: remote.local_addr().expect("addr").port(),
            remotes: vec![IpAddr::from([127, 0, 0, 1])],
            learned: Arc::new(Mutex::new(RemoteTable::default())),
            epoch: std::time::Instant::now(),
        };
        let (sent, err) = tx.transmit_gathered(PortId(1), &[g]).expect("taken");
        assert_eq!((sent, err.is_none()), (1, true));
        let mut buf = vec![0u8; 2048];
        let n = remote.recv(&mut buf).expect("recv");
        assert_eq!(buf[..HEADER_LEN], header(42));
        assert_eq!(&buf[HEADER_LEN..n], &frame[..]);
    }

    /// A packet as Linux sent it for VNI 42: header, then a 42-byte ARP reply.
    fn linux_packet() -> Vec<u8> {
        let mut p = vec![0x08, 0, 0, 0, 0, 0, 0x2a, 0];
        p.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x02, 0, 0, 0, 0, 0x01, 0x08, 0x06]);
        p.extend_from_slice(&[0u8; 28]);
        p
    }

    #[test]
    fn header_for_vni_42_is_what_linux_expects() {
        assert_eq!(header(42), [0x08, 0, 0, 0, 0, 0, 0x2a, 0]);
        assert_eq!(header(0x00ab_cdef), [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
    }

    #[test]
    fn decapsulates_linux_packets() {
        let p = linux_packet();
        assert_eq!(decapsulate(&p, 42, true), Ok(8..p.len()));
        assert_eq!(decapsulate(&p, 43, false), Err(HeaderError::WrongVni(42)));
        let mut no_i = p.clone();
        no_i[0] = 0;
        assert_eq!(decapsulate(&no_i, 42, false), Err(HeaderError::BadFlags));
        let mut reserved = p.clone();
        reserved[7] = 1;
        assert!(
            decapsulate(&reserved, 42, false).is_ok(),
            "RFC: ignore reserved bits"
        );
        assert_eq!(
            decapsulate(&reserved, 42, true),
            Err(HeaderError::BadFlags),
            "Linux: refuse"
        );
        assert_eq!(decapsulate(&p[..21], 42, false), Err(HeaderError::TooShort));
    }

    #[test]
    fn remote_table_learns_and_ages() {
        let mut t = RemoteTable::default();
        let m = MacAddr([2, 0, 0, 0, 0, 0x99]);
        let ip: IpAddr = "198.51.100.2".parse().expect("ip");
        t.learn(m, ip, Duration::from_secs(0));
        assert_eq!(t.lookup(m, Duration::from_secs(299)), Some(ip));
        assert_eq!(t.lookup(m, Duration::from_secs(300)), None);
        t.learn(MacAddr::BROADCAST, ip, Duration::from_secs(0));
        assert_eq!(t.lookup(MacAddr::BROADCAST, Duration::from_secs(0)), None);
    }

    proptest::proptest! {
        #[test]
        fn decapsulate_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64), strict in proptest::bool::ANY) {
            let _ = decapsulate(&bytes, 42, strict);
        }
    }
}
