//! What a vhost-user port is told: where to listen and what virtio-net
//! device to offer the guest.

use std::path::PathBuf;

/// A vhost-user port: Switchyard is the device (backend) and listens on
/// `path` for one frontend (QEMU, cloud-hypervisor, UML) at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserConfig {
    /// The port's name.
    pub name: String,
    /// The unix socket the frontend connects to.
    pub path: PathBuf,
    /// The guest's MAC address, offered as VIRTIO_NET_F_MAC; `None` lets
    /// the guest pick its own.
    pub mac: Option<[u8; 6]>,
    /// The MTU offered as VIRTIO_NET_F_MTU; `None` offers none (1500).
    pub mtu: Option<u16>,
}

impl VhostUserConfig {
    /// A port listening on `path`, with no MAC or MTU offered.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> VhostUserConfig {
        VhostUserConfig {
            name: name.into(),
            path: path.into(),
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
        c[8..10].copy_from_slice(&1u16.to_le_bytes());
        if let Some(mtu) = self.mtu {
            c[10..12].copy_from_slice(&mtu.to_le_bytes());
        }
        c
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
}
