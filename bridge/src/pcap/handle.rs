//! The NIC through libpcap: opening the capture and injection handles,
//! what the NIC is (its MAC, addresses and MTU), and the kernel's drops.

use super::*;

/// The largest frame captured: enough for offloaded super-frames (TCP
/// ones are cut to the MTU, others dropped and counted).
pub(super) const SNAPLEN: i32 = 262_144;

/// The capture ring. In immediate mode libpcap gives every frame a slot as
/// large as the biggest frame the NIC can deliver (64 KiB when it has
/// offloads on), so its default 2 MiB holds about 30 frames and a busy
/// switch lost most of a TCP stream's ACKs; 32 MiB holds about 500 (pages
/// a small frame never touches cost no memory).
pub(super) const RING_BYTES: i32 = 32 << 20;

pub(super) struct Handles {
    pub(super) rx: pcap::Capture<pcap::Active>,
    pub(super) tx: Option<pcap::Capture<pcap::Active>>,
}

pub(super) fn open_handles(cfg: &PcapConfig) -> Result<Handles, PcapError> {
    let err = |what: &'static str| {
        let (port, device) = (cfg.name.clone(), cfg.device.clone());
        move |source| PcapError::Pcap {
            port,
            what,
            device,
            source,
        }
    };
    let mut rx = pcap::Capture::from_device(cfg.device.as_str())
        .map_err(err("find"))?
        .immediate_mode(true)
        .promisc(cfg.promisc && !cfg.mac_nat)
        .snaplen(SNAPLEN)
        .buffer_size(RING_BYTES)
        .open()
        .map_err(err("capture on"))?;
    rx.direction(pcap::Direction::In)
        .map_err(err("capture inbound only on"))?;
    if let Some(f) = &cfg.filter {
        rx.filter(f, true)
            .map_err(err("apply the capture filter on"))?;
    }
    let rx = rx.setnonblock().map_err(err("configure"))?;
    let tx = if cfg.monitor {
        None
    } else {
        let mut tx = pcap::Capture::from_device(cfg.device.as_str())
            .map_err(err("find"))?
            .snaplen(64)
            .open()
            .map_err(err("inject on"))?;
        // This handle only injects: a filter that matches nothing keeps the
        // kernel from copying every frame into a ring nobody reads.
        if let Err(e) = tx.filter("less 1", true) {
            tracing::debug!(port = %cfg.name, "injection handle keeps capturing: {e}");
        }
        Some(tx)
    };
    Ok(Handles { rx, tx })
}

/// The NIC's MAC, from the kernel (not /sys, which may show another
/// network namespace's devices).
pub(super) fn read_mac(device: &str) -> io::Result<MacAddr> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    for a in addrs.filter(|a| a.interface_name == device) {
        if let Some(mac) = a
            .address
            .as_ref()
            .and_then(|s| s.as_link_addr())
            .and_then(|l| l.addr())
        {
            return Ok(MacAddr(mac));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no link-layer address on {device}"),
    ))
}

pub(super) fn host_addrs(device: &str) -> Vec<HostAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == device)
        .filter_map(|a| {
            let addr = a.address?;
            let prefix = |m: Option<nix::sys::socket::SockaddrStorage>| -> u8 {
                m.map(|m| {
                    if let Some(v4) = m.as_sockaddr_in() {
                        u32::from(v4.ip()).count_ones() as u8
                    } else if let Some(v6) = m.as_sockaddr_in6() {
                        u128::from(v6.ip()).count_ones() as u8
                    } else {
                        0
                    }
                })
                .unwrap_or(0)
            };
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(HostAddr::new(
                    std::net::IpAddr::V4(v4.ip()),
                    prefix(a.netmask),
                ))
            } else {
                addr.as_sockaddr_in6()
                    .map(|v6| HostAddr::new(std::net::IpAddr::V6(v6.ip()), prefix(a.netmask)))
            }
        })
        .collect()
}

/// Ethernet header plus two VLAN tags: a frame up to MTU + this is a
/// normal frame.
pub(super) const MAX_L2_HEADER: usize = 14 + 8;

/// The NIC's MTU as last read (1500 until a read works).
pub(super) struct Mtu {
    pub(super) value: usize,
    pub(super) warned: bool,
}

impl Mtu {
    pub(super) fn read(config: &PcapConfig) -> Mtu {
        let mut m = Mtu {
            value: 1500,
            warned: false,
        };
        let _ = m.refresh(config);
        m
    }

    /// Reads the MTU again; an error is returned (and warned about once).
    pub(super) fn refresh(&mut self, config: &PcapConfig) -> io::Result<()> {
        match device_mtu(&config.device) {
            Ok(v) => {
                self.value = v;
                Ok(())
            }
            Err(e) => {
                if !self.warned && e.raw_os_error() != Some(libc::ENODEV) {
                    tracing::warn!(
                        port = %config.name, device = %config.device,
                        "cannot read the NIC's MTU ({e}); cutting offloaded frames to {} bytes",
                        self.value
                    );
                    self.warned = true;
                }
                Err(e)
            }
        }
    }
}

/// Frames the kernel dropped because the capture ring was full (the switch
/// did not keep up), logged at most once a minute.
#[derive(Default)]
pub(super) struct KernelDrops {
    pub(super) seen: u32,
    pub(super) logged_at: Option<Duration>,
    pub(super) unlogged: u64,
}

impl KernelDrops {
    pub(super) fn check(
        &mut self,
        cap: &mut pcap::Capture<pcap::Active>,
        config: &PcapConfig,
        now: Duration,
    ) {
        let Ok(stats) = cap.stats() else {
            return;
        };
        let new = stats.dropped.wrapping_sub(self.seen);
        self.seen = stats.dropped;
        self.unlogged += u64::from(new);
        let due = self
            .logged_at
            .is_none_or(|t| now.saturating_sub(t) >= Duration::from_secs(60));
        if self.unlogged > 0 && due {
            tracing::warn!(
                port = %config.name, device = %config.device, dropped = self.unlogged,
                "the kernel dropped captured frames: the switch did not keep up with the NIC"
            );
            self.logged_at = Some(now);
            self.unlogged = 0;
        }
    }
}

/// The capture handle's descriptor, for readiness. The handle itself
/// stays with the receive loop, which drops the watcher first.
pub(super) struct RawFdOf(pub(super) std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RawFdOf {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

/// The NIC's MTU (SIOCGIFMTU in the daemon's own network namespace; /sys
/// may show another namespace's devices).
pub(super) fn device_mtu(device: &str) -> io::Result<usize> {
    let mtu = crate::sys::device_mtu(device)?;
    usize::try_from(mtu)
        .ok()
        .filter(|m| *m >= 68)
        .ok_or_else(|| io::Error::other(format!("{device} reports MTU {mtu}")))
}
