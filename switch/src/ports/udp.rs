//! The `udp` port: one raw frame per datagram to and from one peer, over
//! UDP (QEMU `-netdev dgram` / `socket,udp=`, UML `ethN=ucast`, another
//! switchyard) or path-named unix datagrams (QEMU `dgram` with
//! `local.type=unix`). The peer may come and go; a missing peer costs
//! frames, never the port.

use super::receive::{attach, detach_after, frame_buffer, receive_loop, Received};
use super::{remove_stale_socket_file, Endpoint, PortError};
use crate::counters::DropReason;
use crate::gather::Gathered;
use crate::port::{transmit_each, Port, PortId, SendError, Transmit};
use crate::switch::Switch;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::Arc;

/// Settings of a udp port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UdpConfig {
    /// The port's name.
    pub name: String,
    /// Our socket.
    pub local: Endpoint,
    /// The peer's socket; frames go only there, and (for UDP) only its
    /// datagrams are accepted.
    pub remote: Endpoint,
}

impl UdpConfig {
    /// A config from its parts.
    pub fn new(name: impl Into<String>, local: Endpoint, remote: Endpoint) -> UdpConfig {
        UdpConfig {
            name: name.into(),
            local,
            remote,
        }
    }
}

#[derive(Debug)]
enum Socket {
    Inet {
        sock: Arc<UdpSocket>,
        peer: SocketAddr,
    },
    Unix {
        sock: Arc<UnixDatagram>,
        peer: PathBuf,
        path: PathBuf,
    },
}

/// An open udp port.
#[derive(Debug)]
pub struct UdpPort {
    config: UdpConfig,
    socket: Socket,
}

impl UdpPort {
    /// Binds the local socket.
    pub fn open(config: UdpConfig) -> Result<UdpPort, PortError> {
        let name = config.name.clone();
        let socket = match (&config.local, &config.remote) {
            (Endpoint::Inet(local), Endpoint::Inet(peer)) => {
                if local.is_ipv4() != peer.is_ipv4() {
                    return Err(PortError::Config {
                        port: name,
                        message: format!(
                            "local {local} and remote {peer} must be the same IP version"
                        ),
                    });
                }
                let sock = UdpSocket::bind(local).map_err(PortError::io(&name, "bind", local))?;
                sock.set_nonblocking(true)
                    .map_err(PortError::io(&name, "configure", local))?;
                Socket::Inet {
                    sock: Arc::new(sock),
                    peer: *peer,
                }
            }
            (Endpoint::Unix(path), Endpoint::Unix(peer)) => {
                let path = std::path::absolute(path).map_err(PortError::io(
                    &name,
                    "resolve",
                    path.display(),
                ))?;
                remove_stale_socket_file(&path).map_err(PortError::io(
                    &name,
                    "replace",
                    path.display(),
                ))?;
                let sock = UnixDatagram::bind(&path).map_err(PortError::io(
                    &name,
                    "bind",
                    path.display(),
                ))?;
                sock.set_nonblocking(true).map_err(PortError::io(
                    &name,
                    "configure",
                    path.display(),
                ))?;
                // Absolute, so that --daemon's chdir to / changes nothing.
                let peer = std::path::absolute(peer).map_err(PortError::io(
                    &name,
                    "resolve",
                    peer.display(),
                ))?;
                Socket::Unix {
                    sock: Arc::new(sock),
                    peer,
                    path,
                }
            }
            _ => {
                return Err(PortError::Config {
                    port: name,
                    message: "local and remote must both be ADDRESS:PORT or both be socket paths"
                        .into(),
                })
            }
        };
        Ok(UdpPort { config, socket })
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Removes our socket file (unix flavour); call on shutdown.
    pub fn cleanup_path(&self) -> Option<PathBuf> {
        match &self.socket {
            Socket::Unix { path, .. } => Some(path.clone()),
            Socket::Inet { .. } => None,
        }
    }

    /// Becomes a port and forwards frames until the switch stops.
    pub async fn serve(self, switch: Arc<Switch>, stop: crate::Stop) {
        let id = switch.allocate_id();
        let name = self.config.name.clone();
        let peer = format!("{} ↔ {}", self.config.local, self.config.remote);
        let mut buf = frame_buffer();
        match self.socket {
            Socket::Inet { sock, peer: remote } => {
                let port = Arc::new(Port::new(
                    id,
                    &name,
                    "udp",
                    &peer,
                    Box::new(InetTx {
                        sock: sock.clone(),
                        peer: remote,
                    }),
                ));
                let Some((afd, attached)) = attach(&switch, &stop, &port, sock) else {
                    return;
                };
                let p = port.clone();
                let sw = switch.clone();
                let r = receive_loop(&switch, &port, &afd, &mut buf, move |s, b| {
                    match s.recv_from(b) {
                        Ok((n, from)) if from == remote => Ok(Received::Frame(0..n)),
                        Ok(_) => {
                            p.drop_frame(DropReason::UnknownSender, sw.now(), None);
                            Ok(Received::Skip)
                        }
                        // An ICMP port unreachable from an earlier send: the
                        // peer is not up yet.
                        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                            Ok(Received::Skip)
                        }
                        Err(e) => Err(e),
                    }
                })
                .await;
                detach_after(r, attached);
            }
            Socket::Unix {
                sock,
                peer: remote,
                path,
            } => {
                let port = Arc::new(Port::new(
                    id,
                    &name,
                    "udp",
                    &peer,
                    Box::new(UnixTx {
                        sock: sock.clone(),
                        peer: remote,
                    }),
                ));
                let Some((afd, attached)) = attach(&switch, &stop, &port, sock) else {
                    return;
                };
                let r = receive_loop(&switch, &port, &afd, &mut buf, |s, b| {
                    s.recv(b).map(|n| Received::Frame(0..n))
                })
                .await;
                detach_after(r, attached);
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A peer that is not listening yet is a drop, never a reason to remove
/// the port: QEMU and UML peers restart.
fn transient(e: io::Error) -> SendError {
    match SendError::from_io(e) {
        SendError::Gone(_) => SendError::Down,
        other => other,
    }
}

struct InetTx {
    sock: Arc<UdpSocket>,
    peer: SocketAddr,
}

impl Transmit for InetTx {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| {
            self.sock
                .send_to(frame, self.peer)
                .map(|_| ())
                .map_err(transient)
        })
    }

    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        let to = socket2::SockAddr::from(self.peer);
        Some(send_each_to(&*self.sock, &to, frames))
    }
}

/// Each of `frames` as one datagram to `to`, in pieces.
fn send_each_to(
    sock: &impl std::os::fd::AsRawFd,
    to: &socket2::SockAddr,
    frames: &[Gathered<'_>],
) -> (usize, Option<SendError>) {
    transmit_each(frames, |frame| {
        crate::sys::send_to_gathered(sock, to, &[], &frame)
            .map(|_| ())
            .map_err(transient)
    })
}

struct UnixTx {
    sock: Arc<UnixDatagram>,
    peer: PathBuf,
}

impl Transmit for UnixTx {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| {
            self.sock
                .send_to(frame, &self.peer)
                .map(|_| ())
                .map_err(transient)
        })
    }

    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        // A path that fits no address: joined and sent as `transmit` does,
        // which reports the error.
        let to = socket2::SockAddr::unix(&self.peer).ok()?;
        Some(send_each_to(&*self.sock, &to, frames))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gather::split;

    #[test]
    fn gathered_frames_go_as_one_datagram_each_to_inet_and_unix_peers() {
        let frame: Vec<u8> = (0..900u32).map(|i| (i % 251) as u8).collect();
        let mut slots = Vec::new();
        let g = split(&frame, 5, &mut slots);
        let mut buf = vec![0u8; 2048];

        let peer = UdpSocket::bind("127.0.0.1:0").expect("peer");
        let inet = InetTx {
            sock: Arc::new(UdpSocket::bind("127.0.0.1:0").expect("sock")),
            peer: peer.local_addr().expect("addr"),
        };
        let (sent, err) = inet.transmit_gathered(PortId(1), &[g, g]).expect("taken");
        assert_eq!((sent, err.is_none()), (2, true));
        for _ in 0..2 {
            let n = peer.recv(&mut buf).expect("recv");
            assert_eq!(&buf[..n], &frame[..]);
        }

        let dir =
            std::env::temp_dir().join(format!("switchyard-udp-gather-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let peer_path = dir.join("peer");
        let peer = UnixDatagram::bind(&peer_path).expect("peer");
        let unix = UnixTx {
            sock: Arc::new(UnixDatagram::unbound().expect("sock")),
            peer: peer_path,
        };
        let (sent, err) = unix.transmit_gathered(PortId(1), &[g]).expect("taken");
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((sent, err.is_none()), (1, true));
        let n = peer.recv(&mut buf).expect("recv");
        assert_eq!(&buf[..n], &frame[..]);
    }
}
