//! The `mcast` port: one raw frame per UDP datagram to an IPv4 multicast
//! group, the wire of UML `ethN=mcast` and QEMU `-netdev socket,mcast=` /
//! `dgram` with a multicast remote. The whole group is one port; the
//! engine learns the MACs behind it.
//!
//! Every member on a host sends from the group port and hears its own
//! datagrams (loopback must stay on, or guests on this host would not hear
//! us). So we send from a socket of our own with an ephemeral port, and
//! ignore exactly the datagrams that come from that address.

use super::receive::{attach, detach_after, frame_buffer, receive_loop, Received};
use super::PortError;
use crate::port::{transmit_each, Port, PortId, SendError, Transmit};
use crate::switch::Switch;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// UML's default group and port.
pub const DEFAULT_GROUP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 192, 168, 1), 1102);

/// Settings of a mcast port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct McastConfig {
    /// The port's name.
    pub name: String,
    /// Group and UDP port.
    pub group: SocketAddrV4,
    /// Hop limit of our datagrams (1: this link only).
    pub ttl: u32,
    /// The interface address to join and send on; `None` lets the routing
    /// table choose.
    pub interface: Option<Ipv4Addr>,
}

impl McastConfig {
    /// A config with TTL 1 on the default interface.
    pub fn new(name: impl Into<String>, group: SocketAddrV4) -> McastConfig {
        McastConfig {
            name: name.into(),
            group,
            ttl: 1,
            interface: None,
        }
    }

    /// Sets the TTL and interface.
    pub fn with_options(mut self, ttl: u32, interface: Option<Ipv4Addr>) -> McastConfig {
        self.ttl = ttl;
        self.interface = interface;
        self
    }
}

/// An open mcast port.
#[derive(Debug)]
pub struct McastPort {
    config: McastConfig,
    rx: Arc<UdpSocket>,
    tx: Arc<UdpSocket>,
    own: SocketAddrV4,
}

impl McastPort {
    /// Joins the group and prepares the sending socket.
    pub fn open(config: McastConfig) -> Result<McastPort, PortError> {
        let name = config.name.clone();
        let group = config.group;
        if !group.ip().is_multicast() {
            return Err(PortError::Config {
                port: name,
                message: format!(
                    "{} is not an IPv4 multicast address (224.0.0.0/4)",
                    group.ip()
                ),
            });
        }
        let iface = config.interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let rx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(PortError::io(&name, "create socket for", group))?;
        rx.set_reuse_address(true)
            .map_err(PortError::io(&name, "configure", group))?;
        rx.bind(&SockAddr::from(group))
            .map_err(PortError::io(&name, "bind", group))?;
        rx.join_multicast_v4(group.ip(), &iface)
            .map_err(PortError::io(&name, "join group", group))?;
        rx.set_nonblocking(true)
            .map_err(PortError::io(&name, "configure", group))?;
        let tx = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
            .map_err(PortError::io(&name, "create socket for", group))?;
        tx.set_multicast_ttl_v4(config.ttl)
            .and_then(|()| tx.set_multicast_loop_v4(true))
            .map_err(PortError::io(&name, "configure", group))?;
        if let Some(i) = config.interface {
            tx.set_multicast_if_v4(&i)
                .map_err(PortError::io(&name, "use interface", i))?;
        }
        tx.bind(&SockAddr::from(SocketAddrV4::new(iface, 0)))
            .map_err(PortError::io(&name, "bind", iface))?;
        tx.set_nonblocking(true)
            .map_err(PortError::io(&name, "configure", group))?;
        let own = tx
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket_ipv4())
            .ok_or_else(|| PortError::Config {
                port: name.clone(),
                message: "cannot read the sending socket's address".into(),
            })?;
        Ok(McastPort {
            config,
            rx: Arc::new(rx.into()),
            tx: Arc::new(tx.into()),
            own,
        })
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Becomes a port and forwards frames until the switch stops.
    pub async fn serve(self, switch: Arc<Switch>, stop: crate::Stop) {
        let id = switch.allocate_id();
        let name = self.config.name.clone();
        let peer = format!(
            "multicast group {} ttl {}",
            self.config.group, self.config.ttl
        );
        let tx = McastTx {
            sock: self.tx.clone(),
            group: self.config.group,
        };
        let port = Arc::new(Port::new(id, &name, "mcast", &peer, Box::new(tx)));
        let Some((afd, attached)) = attach(&switch, &stop, &port, self.rx.clone()) else {
            return;
        };
        let own = self.own.port();
        let mut local = LocalAddrs::default();
        let mut buf = frame_buffer();
        let r = receive_loop(&switch, &port, &afd, &mut buf, move |s, b| {
            let (n, from) = s.recv_from(b)?;
            Ok(if from.port() == own && local.contains(from.ip()) {
                Received::Skip
            } else {
                Received::Frame(0..n)
            })
        })
        .await;
        detach_after(r, attached);
    }
}

/// This host's IPv4 addresses, re-read at most once a second when a
/// datagram from our port comes from an address not yet known. Our port is
/// an ephemeral one bound on this host, so (port, local address) is us.
#[derive(Default)]
struct LocalAddrs {
    known: Vec<IpAddr>,
    read_at: Option<Instant>,
}

impl LocalAddrs {
    /// True for an address of this host (or 0.0.0.0, which a bare network
    /// namespace reports as the source of local datagrams).
    fn contains(&mut self, ip: IpAddr) -> bool {
        if ip.is_unspecified() || ip.is_loopback() || self.known.contains(&ip) {
            return true;
        }
        let stale = self
            .read_at
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if stale {
            self.read_at = Some(Instant::now());
            self.known = nix::ifaddrs::getifaddrs()
                .map(|addrs| {
                    addrs
                        .filter_map(|a| a.address)
                        .filter_map(|s| s.as_sockaddr_in().map(|v4| IpAddr::V4(v4.ip())))
                        .collect()
                })
                .unwrap_or_default();
        }
        self.known.contains(&ip)
    }
}

/// Sends to the group by the multicast route (or `interface=`).
struct McastTx {
    sock: Arc<UdpSocket>,
    group: SocketAddrV4,
}

impl Transmit for McastTx {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| {
            self.sock
                .send_to(frame, self.group)
                .map(|_| ())
                .map_err(down_not_gone)
        })
    }

    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[crate::gather::Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        let to = socket2::SockAddr::from(self.group);
        Some(transmit_each(frames, |frame| {
            crate::sys::send_to_gathered(&*self.sock, &to, &[], &frame)
                .map(|_| ())
                .map_err(down_not_gone)
        }))
    }
}

/// A group with no route is down, not gone: the port stays.
fn down_not_gone(e: std::io::Error) -> SendError {
    match SendError::from_io(e) {
        SendError::Gone(_) => SendError::Down,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_addresses_are_recognised() {
        let mut l = LocalAddrs::default();
        assert!(l.contains("0.0.0.0".parse().expect("addr")));
        assert!(l.contains("127.0.0.1".parse().expect("addr")));
        assert!(
            !l.contains("203.0.113.77".parse().expect("addr")),
            "not an address of this host"
        );
    }
}
