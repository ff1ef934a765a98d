//! What a vhost-user port is told: where to listen (or connect) and what
//! virtio-net device to offer the guest.

use std::path::PathBuf;

/// The most queue pairs a port offers (`queues=N`).
pub const MAX_QUEUES: u16 = 16;

/// Which side of the socket Switchyard takes. Either way Switchyard is the
/// device (backend); only who listens differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VhostUserMode {
    /// Listen on the path for one frontend at a time (QEMU
    /// `-chardev socket,path=…,reconnect=1`, libvirt `mode='client'`).
    #[default]
    Server,
    /// Connect to a frontend that listens (QEMU `server=on`, libvirt
    /// `mode='server'`), and reconnect with backoff when it goes.
    Client,
}

impl VhostUserMode {
    /// Parses `server` or `client`.
    pub fn parse(s: &str) -> Result<VhostUserMode, String> {
        match s {
            "server" => Ok(VhostUserMode::Server),
            "client" => Ok(VhostUserMode::Client),
            _ => Err(format!("{s:?} is not a mode (server or client)")),
        }
    }
}

/// A vhost-user port: Switchyard is the device (backend) and serves one
/// frontend (QEMU, cloud-hypervisor, UML) at a time on `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserConfig {
    /// The port's name.
    pub name: String,
    /// The unix socket: where Switchyard listens (server) or the
    /// frontend's socket it connects to (client).
    pub path: PathBuf,
    /// Listen or connect.
    pub mode: VhostUserMode,
    /// Queue pairs offered (1 to [`MAX_QUEUES`]).
    pub queues: u16,
    /// The guest's MAC address, offered as VIRTIO_NET_F_MAC; `None` lets
    /// the guest pick its own.
    pub mac: Option<[u8; 6]>,
    /// The MTU offered as VIRTIO_NET_F_MTU; `None` offers none (1500).
    pub mtu: Option<u16>,
}

impl VhostUserConfig {
    /// A port listening on `path` with one queue pair, no MAC or MTU
    /// offered.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> VhostUserConfig {
        VhostUserConfig {
            name: name.into(),
            path: path.into(),
            mode: VhostUserMode::Server,
            queues: 1,
            mac: None,
            mtu: None,
        }
    }

    /// The virtio-net config space (`struct virtio_net_config`): mac,
    /// status, max_virtqueue_pairs, mtu, little-endian.
    pub(super) fn config_space(&self) -> [u8; 12] {
        let mut c = [0u8; 12];
        if let Some(mac) = self.mac {
            c[..6].copy_from_slice(&mac);
        }
        c[8..10].copy_from_slice(&self.queues.max(1).to_le_bytes());
        if let Some(mtu) = self.mtu {
            c[10..12].copy_from_slice(&mtu.to_le_bytes());
        }
        c
    }
}

/// Parses a queue pair count, 1 to [`MAX_QUEUES`].
pub fn parse_queues(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if (1..=MAX_QUEUES).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a queue pair count (1 to {MAX_QUEUES})"
        )),
    }
}

/// Parses `02:00:00:00:00:01`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!(
            "{s:?} is not a MAC address (six hex bytes joined by ':')"
        ));
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        *b = u8::from_str_radix(p, 16)
            .map_err(|_| format!("{s:?} is not a MAC address (bad byte {p:?})"))?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!(
            "{s:?} is a multicast address; a guest needs a unicast one"
        ));
    }
    Ok(mac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_carries_mac_and_mtu() {
        let mut c = VhostUserConfig::new("v", "/tmp/v.sock");
        c.mac = Some([2, 0, 0, 0, 0, 1]);
        c.mtu = Some(9000);
        let s = c.config_space();
        assert_eq!(&s[..6], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(u16::from_le_bytes([s[10], s[11]]), 9000);
    }

    #[test]
    fn macs_parse_and_multicast_is_refused() {
        assert_eq!(parse_mac("02:00:00:00:0a:FF"), Ok([2, 0, 0, 0, 0x0a, 0xff]));
        assert!(parse_mac("03:00:00:00:00:01").is_err());
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:zz").is_err());
    }

    #[test]
    fn modes_and_queue_counts_parse() {
        assert_eq!(VhostUserMode::parse("client"), Ok(VhostUserMode::Client));
        assert_eq!(VhostUserMode::parse("server"), Ok(VhostUserMode::Server));
        assert!(VhostUserMode::parse("listen").is_err());
        assert_eq!(parse_queues("1"), Ok(1));
        assert_eq!(parse_queues("16"), Ok(16));
        for bad in ["0", "17", "-1", "two", ""] {
            assert!(parse_queues(bad).is_err(), "{bad}");
        }
    }
}
