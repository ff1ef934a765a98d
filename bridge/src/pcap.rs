//! The `pcap` port: a host NIC (wired or wireless) through libpcap.
//! Capture runs in immediate mode and sees only frames the NIC received
//! (direction "in"), so the port never hears its own injected frames;
//! injection goes through a second handle. With MAC-NAT on, frames to the
//! NIC are rewritten to carry its own MAC and frames from it are mapped
//! back to the right guest (see the `switchyard-mac-nat` crate). A NIC that
//! goes down or disappears is waited for and reopened; the switch keeps
//! running.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_mac_nat::{HostAddr, Inbound, MacAddr, MacNat, MacNatConfig, Outbound};
use switchyard_switch::port::{Port, SendError, Transmit};
use switchyard_switch::ports::receive::attach;
use switchyard_switch::{DropReason, Stop, Switch};

/// Settings of a pcap port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PcapConfig {
    /// The port's name.
    pub name: String,
    /// The NIC, e.g. `eth1` or `wlan0`.
    pub device: String,
    /// Promiscuous mode (off for Wi-Fi and with MAC-NAT).
    pub promisc: bool,
    /// A BPF capture filter.
    pub filter: Option<String>,
    /// Capture only; never inject.
    pub monitor: bool,
    /// Rewrite MACs so that an access point that accepts only the
    /// station's MAC carries every guest.
    pub mac_nat: bool,
}

impl PcapConfig {
    /// A plain capture-and-inject port on `device`.
    pub fn new(name: impl Into<String>, device: impl Into<String>) -> PcapConfig {
        PcapConfig {
            name: name.into(),
            device: device.into(),
            promisc: true,
            filter: None,
            monitor: false,
            mac_nat: false,
        }
    }

    /// Sets the options.
    pub fn with_options(
        mut self,
        promisc: bool,
        filter: Option<String>,
        monitor: bool,
        mac_nat: bool,
    ) -> PcapConfig {
        self.promisc = promisc;
        self.filter = filter;
        self.monitor = monitor;
        self.mac_nat = mac_nat;
        self
    }
}

/// Failures opening a pcap port.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// libpcap refused.
    #[error("pcap port {port}: cannot {what} {device}: {source}; run as root or with CAP_NET_RAW, and check the device name")]
    Pcap {
        /// The port.
        port: String,
        /// What was being done.
        what: &'static str,
        /// The NIC.
        device: String,
        /// libpcap's error.
        source: pcap::Error,
    },
    /// The NIC has no readable MAC address (needed for MAC-NAT).
    #[error("pcap port {port}: cannot read the MAC address of {device}: {source}")]
    Mac {
        /// The port.
        port: String,
        /// The NIC.
        device: String,
        /// Why.
        source: io::Error,
    },
}

/// The largest frame captured: enough for offloaded super-frames, which
/// cannot be injected whole and are dropped and counted.
const SNAPLEN: i32 = 262_144;

struct Handles {
    rx: pcap::Capture<pcap::Active>,
    tx: Option<pcap::Capture<pcap::Active>>,
}

fn open_handles(cfg: &PcapConfig) -> Result<Handles, PcapError> {
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
        Some(
            pcap::Capture::from_device(cfg.device.as_str())
                .map_err(err("find"))?
                .snaplen(64)
                .open()
                .map_err(err("inject on"))?,
        )
    };
    Ok(Handles { rx, tx })
}

/// The NIC's MAC, from the kernel (not /sys, which may show another
/// network namespace's devices).
fn read_mac(device: &str) -> io::Result<MacAddr> {
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

fn host_addrs(device: &str) -> Vec<HostAddr> {
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

/// Environment variable overriding the MAC-NAT's `aging` (whole seconds,
/// default 600) until the configuration file has `mac_nat` options: idle
/// address bindings are forgotten after this long (the LAN's next ARP/NS
/// probe re-learns them).
pub const AGING_ENV: &str = "SWITCHYARD_MACNAT_AGING";

/// The MAC-NAT configuration: defaults, with `aging` from [`AGING_ENV`]
/// when set to a whole number of seconds above 0 (otherwise a warning and
/// the default).
fn mac_nat_config(port: &str) -> MacNatConfig {
    let mut cfg = MacNatConfig::default();
    if let Some(v) = std::env::var_os(AGING_ENV) {
        match v.to_str().and_then(|s| s.trim().parse::<u64>().ok()) {
            Some(secs) if secs > 0 => {
                cfg.aging = Duration::from_secs(secs);
                tracing::info!(port, aging_seconds = secs, "MAC-NAT aging from {AGING_ENV}");
            }
            _ => tracing::warn!(
                port,
                value = ?v,
                "{AGING_ENV} must be a whole number of seconds above 0; using the default {} s",
                cfg.aging.as_secs()
            ),
        }
    }
    cfg
}

/// Every MAC-NAT table in this process, by port name, for `switchyard ctl
/// macnat` and the metrics (weak: a stopped port's table goes away).
static TABLES: Mutex<Vec<(String, std::sync::Weak<Mutex<MacNat>>)>> = Mutex::new(Vec::new());

/// The live MAC-NAT tables, by port name.
pub fn mac_nat_tables() -> Vec<(String, Arc<Mutex<MacNat>>)> {
    let mut t = TABLES.lock().unwrap_or_else(|p| p.into_inner());
    t.retain(|(_, w)| w.strong_count() > 0);
    t.iter()
        .filter_map(|(n, w)| w.upgrade().map(|a| (n.clone(), a)))
        .collect()
}

/// An open pcap port.
pub struct PcapPort {
    config: PcapConfig,
    handles: Option<Handles>,
    nat: Option<Arc<Mutex<MacNat>>>,
}

impl std::fmt::Debug for PcapPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapPort")
            .field("config", &self.config)
            .finish()
    }
}

impl PcapPort {
    /// Opens the NIC (and, with MAC-NAT, reads its MAC and addresses).
    pub fn open(config: PcapConfig) -> Result<PcapPort, PcapError> {
        let handles = open_handles(&config)?;
        let nat = if config.mac_nat {
            let mac = read_mac(&config.device).map_err(|source| PcapError::Mac {
                port: config.name.clone(),
                device: config.device.clone(),
                source,
            })?;
            let mut nat =
                MacNat::new(mac, mac_nat_config(&config.name)).map_err(|e| PcapError::Mac {
                    port: config.name.clone(),
                    device: config.device.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
            nat.set_host_addrs(host_addrs(&config.device));
            let nat = Arc::new(Mutex::new(nat));
            TABLES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((config.name.clone(), Arc::downgrade(&nat)));
            Some(nat)
        } else {
            None
        };
        Ok(PcapPort {
            config,
            handles: Some(handles),
            nat,
        })
    }

    /// The port's name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The MAC-NAT table, when on (for `switchyard ctl macnat`).
    pub fn mac_nat(&self) -> Option<Arc<Mutex<MacNat>>> {
        self.nat.clone()
    }

    /// Serves the NIC until `stop`; reopens it after it goes away.
    pub async fn serve(self, switch: Arc<Switch>, stop: Stop) {
        let PcapPort {
            config,
            handles,
            nat,
        } = self;
        let mut handles = handles;
        let mut logged_wait = false;
        while !stop.is_stopped() {
            let h = match handles.take() {
                Some(h) => h,
                None => match open_handles(&config) {
                    Ok(h) => {
                        tracing::info!(port = %config.name, device = %config.device, "NIC is back");
                        logged_wait = false;
                        h
                    }
                    Err(e) => {
                        if !logged_wait {
                            tracing::warn!("{e}; retrying every second");
                            logged_wait = true;
                        }
                        tokio::select! {
                            _ = stop.stopped() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                        continue;
                    }
                },
            };
            let why = run(&config, nat.clone(), h, &switch, &stop).await;
            if stop.is_stopped() {
                return;
            }
            tracing::warn!(port = %config.name, device = %config.device, "NIC lost ({why}); waiting for it");
        }
    }
}

/// Serves one opening of the NIC until it fails or the port is stopped.
async fn run(
    config: &PcapConfig,
    nat: Option<Arc<Mutex<MacNat>>>,
    h: Handles,
    switch: &Arc<Switch>,
    stop: &Stop,
) -> String {
    {
        let id = switch.allocate_id();
        let tx = PcapTx {
            handle: h.tx.map(Mutex::new),
            nat: nat.clone(),
            scratch: Mutex::new(Vec::new()),
            epoch: switch.epoch(),
        };
        let mut peer = format!("NIC {}", config.device);
        if config.mac_nat {
            peer.push_str(" (MAC-NAT)");
        }
        if config.monitor {
            peer.push_str(" (monitor only)");
        }
        let port = Arc::new(Port::new(id, &config.name, "pcap", peer, Box::new(tx)));
        use std::os::fd::AsRawFd;
        // Declared before `afd`, so dropped after it: the descriptor stays
        // open for as long as it is watched.
        let mut cap = h.rx;
        let watched = Arc::new(RawFdOf(cap.as_raw_fd()));
        let Some(afd) = attach(switch, stop, &port, watched) else {
            return "cannot watch the capture".into();
        };
        let mut frame = Vec::with_capacity(2048);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut upkeep = NatUpkeep::default();
        let why = loop {
            let mut guard = tokio::select! {
                _ = port.closed() => break "port closed".to_string(),
                _ = tick.tick() => {
                    if let Some(nat) = &nat {
                        upkeep.run(nat, switch, config);
                    }
                    continue;
                }
                g = afd.ready(switchyard_switch::sys::RECEIVE_INTEREST) => match g {
                    Ok(g) => g,
                    Err(e) => break e.to_string(),
                },
            };
            let mut failed = None;
            for _ in 0..256 {
                let now = switch.now();
                {
                    match cap.next_packet() {
                        Ok(p) => {
                            frame.clear();
                            frame.extend_from_slice(p.data);
                            if p.header.len as usize > p.data.len() {
                                // Offloaded super-frame, longer than we keep.
                                frame.truncate(0);
                            }
                        }
                        Err(pcap::Error::TimeoutExpired) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                }
                if frame.is_empty() {
                    port.drop_frame(DropReason::TooLong, now, None);
                    continue;
                }
                // Locally offloaded checksums arrive unfinished.
                crate::checksum::complete_l4_checksum(&mut frame);
                if let Some(nat) = &nat {
                    let verdict = nat
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .inbound(&mut frame, now);
                    match verdict {
                        Inbound::ToGuest(_) | Inbound::Flood => {}
                        Inbound::HostOnly => continue,
                        Inbound::Drop(_) => {
                            port.drop_frame(DropReason::MacNat, now, None);
                            continue;
                        }
                    }
                }
                switch.forward(&port, &frame, now);
            }
            if let Some(e) = failed {
                break e;
            }
            tokio::task::yield_now().await;
        };
        switch.remove_port(id);
        tracing::info!(port = %config.name, reason = %why, "port detached");
        why
    }
}

/// Once-a-second care of a MAC-NAT table, with what it must remember
/// between runs.
#[derive(Default)]
struct NatUpkeep {
    /// Mappings already logged (one line per new mapping).
    logged: std::collections::HashSet<(u16, std::net::IpAddr, [u8; 6])>,
    /// The host's addresses on the NIC as last given to the table.
    host: Vec<HostAddr>,
}

impl NatUpkeep {
    /// Keeps the NIC's MAC and the host's addresses current (a DHCP lease
    /// or a MAC change after start must be protected too), ages the table,
    /// forgets guests the switch no longer knows (a guest whose port went
    /// away, or that fell out of the FDB, loses its address bindings, so
    /// another guest may take them) and logs new mappings.
    fn run(&mut self, nat: &Mutex<MacNat>, switch: &Switch, config: &PcapConfig) {
        let port = config.name.as_str();
        let live: std::collections::HashSet<[u8; 6]> =
            switch.fdb_entries().iter().map(|e| e.mac.0).collect();
        let mut host = host_addrs(&config.device);
        host.sort_by_key(|h| (h.addr, h.prefix_len));
        let mac = read_mac(&config.device).ok();
        let mut nat = nat.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mac) = mac.filter(|m| *m != nat.uplink_mac()) {
            match nat.set_uplink_mac(mac) {
                Ok(()) => tracing::info!(port, mac = %mac, "MAC-NAT: the NIC's MAC changed"),
                Err(e) => tracing::warn!(port, "MAC-NAT keeps the old MAC: {e}"),
            }
        }
        if host != self.host {
            tracing::info!(
                port,
                addresses = ?host.iter().map(|h| h.addr).collect::<Vec<_>>(),
                "MAC-NAT: the host's own addresses on the NIC (guests may not use them)"
            );
            nat.set_host_addrs(host.iter().copied());
            self.host = host;
        }
        nat.sweep(switch.now());
        let gone: Vec<MacAddr> = nat
            .snapshot()
            .guests
            .iter()
            .map(|(m, _, _)| *m)
            .filter(|m| !live.contains(&m.0))
            .collect();
        for m in gone {
            nat.remove_guest(m);
        }
        // One line per new mapping; forget what is gone so a return is news.
        let snap = nat.snapshot();
        let now: std::collections::HashSet<(u16, std::net::IpAddr, [u8; 6])> = snap
            .entries
            .iter()
            .map(|e| (e.vlan, e.addr, e.mac.0))
            .collect();
        for e in &snap.entries {
            if !self.logged.contains(&(e.vlan, e.addr, e.mac.0)) {
                tracing::info!(
                    port, address = %e.addr, guest = %e.mac, vlan = e.vlan,
                    learned_from = e.source.label(), "MAC-NAT mapping"
                );
            }
        }
        self.logged = now;
    }
}

/// The capture handle's descriptor, for readiness. The handle itself
/// stays with the receive loop, which drops the watcher first.
struct RawFdOf(std::os::fd::RawFd);

impl std::os::fd::AsRawFd for RawFdOf {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.0
    }
}

struct PcapTx {
    handle: Option<Mutex<pcap::Capture<pcap::Active>>>,
    nat: Option<Arc<Mutex<MacNat>>>,
    /// Reused for MAC-NAT's in-place edits (it may grow a frame).
    scratch: Mutex<Vec<u8>>,
    epoch: std::time::Instant,
}

impl Transmit for PcapTx {
    fn transmit(&self, frame: &[u8]) -> Result<(), SendError> {
        let Some(handle) = &self.handle else {
            // Monitor only: frames to the NIC go nowhere, by request.
            return Ok(());
        };
        let mut scratch = self.scratch.lock().unwrap_or_else(|p| p.into_inner());
        let out: &[u8] = match &self.nat {
            Some(nat) => {
                scratch.clear();
                scratch.extend_from_slice(frame);
                let now = self.epoch.elapsed();
                match nat
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .outbound(&mut scratch, 0, now)
                {
                    Outbound::Send => &scratch,
                    Outbound::Drop(r) => {
                        return Err(SendError::Other(io::Error::other(format!(
                            "MAC-NAT: {}",
                            r.label()
                        ))))
                    }
                }
            }
            None => frame,
        };
        handle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .sendpacket(out)
            .map_err(|e| match e {
                pcap::Error::IoError(k) => SendError::from_io(io::Error::from(k)),
                other => SendError::Other(io::Error::other(other.to_string())),
            })
    }
}
