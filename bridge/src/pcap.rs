//! The `pcap` port: a host NIC (wired or wireless) through libpcap.
//! Capture runs in immediate mode and sees only frames the NIC received
//! (direction "in"), so the port never hears its own injected frames;
//! injection goes through a second handle. With MAC-NAT on, frames to the
//! NIC are rewritten to carry its own MAC and frames from it are mapped
//! back to the right guest (see the `switchyard-mac-nat` crate); the host's
//! addresses and the NIC's MAC are re-read every second. Offloaded TCP
//! super-frames (GRO) are cut back to the NIC's MTU before guests see them.
//! A NIC that goes down or disappears is waited for and reopened; the
//! switch keeps running.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_mac_nat::{HostAddr, Inbound, MacAddr, MacNat, MacNatConfig, Outbound};
use switchyard_switch::port::{transmit_each, Port, PortId, SendError, Transmit};
use switchyard_switch::ports::receive::attach;
use switchyard_switch::{gso, DropReason, Frames, Overflow, Stop, Switch};

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
    /// How long an idle MAC-NAT address binding is kept (`None`: the
    /// crate's default, 600 s).
    pub mac_nat_aging: Option<Duration>,
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
            mac_nat_aging: None,
        }
    }

    /// Sets the MAC-NAT's aging time.
    pub fn with_mac_nat_aging(mut self, aging: Option<Duration>) -> PcapConfig {
        self.mac_nat_aging = aging;
        self
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

/// The largest frame captured: enough for offloaded super-frames (TCP
/// ones are cut to the MTU, others dropped and counted).
const SNAPLEN: i32 = 262_144;

/// The capture ring. In immediate mode libpcap gives every frame a slot as
/// large as the biggest frame the NIC can deliver (64 KiB when it has
/// offloads on), so its default 2 MiB holds about 30 frames and a busy
/// switch lost most of a TCP stream's ACKs; 32 MiB holds about 500 (pages
/// a small frame never touches cost no memory).
const RING_BYTES: i32 = 32 << 20;

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

/// The MAC-NAT configuration: the crate's defaults, with the port's
/// aging time when one is set.
fn mac_nat_config(config: &PcapConfig) -> MacNatConfig {
    let mut cfg = MacNatConfig::default();
    if let Some(aging) = config.mac_nat_aging {
        cfg.aging = aging;
    }
    cfg
}

/// The MAC-NAT tables of one switch's pcap ports, by port name, for
/// `switchyard ctl macnat` and the metrics (weak: a stopped port's table
/// goes away). The switch keeps it ([`Switch::shared`]), so two switches
/// in one process list only their own.
#[derive(Default)]
pub struct MacNatTables(Mutex<Vec<(String, std::sync::Weak<Mutex<MacNat>>)>>);

impl MacNatTables {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, std::sync::Weak<Mutex<MacNat>>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists a port's table while it lives.
    fn register(&self, port: &str, table: &Arc<Mutex<MacNat>>) {
        self.lock().push((port.to_string(), Arc::downgrade(table)));
    }

    /// The live tables, by port name, in the order their ports started.
    pub fn live(&self) -> Vec<(String, Arc<Mutex<MacNat>>)> {
        let mut t = self.lock();
        t.retain(|(_, w)| w.strong_count() > 0);
        t.iter()
            .filter_map(|(n, w)| w.upgrade().map(|a| (n.clone(), a)))
            .collect()
    }
}

/// The live MAC-NAT tables of `switch`'s ports, by port name.
pub fn mac_nat_tables(switch: &Switch) -> Vec<(String, Arc<Mutex<MacNat>>)> {
    switch.shared::<MacNatTables>().live()
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
                MacNat::new(mac, mac_nat_config(&config)).map_err(|e| PcapError::Mac {
                    port: config.name.clone(),
                    device: config.device.clone(),
                    source: io::Error::other(e.to_string()),
                })?;
            nat.set_host_addrs(host_addrs(&config.device));
            Some(Arc::new(Mutex::new(nat)))
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
        if let Some(nat) = &nat {
            switch.shared::<MacNatTables>().register(&config.name, nat);
        }
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
        let Some((afd, attached)) = attach(switch, stop, &port, watched) else {
            return "cannot watch the capture".into();
        };
        let mut frame = Vec::with_capacity(2048);
        // Where super-frames are cut, one segment at a time.
        let mut piece = Vec::with_capacity(2048);
        let mut tick = switchyard_switch::tick::Ticker::every(Duration::from_secs(1));
        let mut upkeep = NatUpkeep::default();
        let mut mtu = Mtu::read(config);
        let mut kernel_drops = KernelDrops::default();
        let why = loop {
            let mut guard = tokio::select! {
                _ = port.closed() => break "port closed".to_string(),
                _ = tick.tick() => {
                    // A deleted NIC does not always wake the capture (its
                    // error can be consumed by an empty non-blocking read),
                    // so the once-a-second MTU read doubles as the check.
                    if let Err(e) = mtu.refresh(config) {
                        if e.raw_os_error() == Some(libc::ENODEV) {
                            break format!("{} is gone: {e}", config.device);
                        }
                    }
                    kernel_drops.check(&mut cap, config, switch.now());
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
                                // Longer than even the snap length: unusable.
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
                let ingress = Ingress {
                    nat: nat.as_deref(),
                    port: &port,
                    switch,
                    now,
                };
                if frame.len() <= mtu.value + MAX_L2_HEADER {
                    ingress.deliver(&mut frame);
                    continue;
                }
                let cut = match segment::plan(&frame, mtu.value) {
                    segment::Plan::Fits => {
                        ingress.deliver(&mut frame);
                        continue;
                    }
                    // The segments' checksums are complete already.
                    segment::Plan::Cut(hdr) => {
                        gso::segment(&hdr, &frame, &mut piece, |p| ingress.deliver_complete(p))
                            .is_ok()
                    }
                    segment::Plan::TooLong => false,
                };
                if !cut {
                    port.drop_frame_because(DropReason::TooLong, now, || {
                        io::Error::other(format!(
                            "a captured frame of {} bytes is larger than {}'s MTU {} and is not \
                             TCP; turn the NIC's offloads off: ethtool -K {} gro off lro off",
                            frame.len(),
                            config.device,
                            mtu.value,
                            config.device
                        ))
                    });
                }
            }
            if let Some(e) = failed {
                break e;
            }
            tokio::task::yield_now().await;
        };
        attached.detach(why.clone());
        why
    }
}

/// Ethernet header plus two VLAN tags: a frame up to MTU + this is a
/// normal frame.
const MAX_L2_HEADER: usize = 14 + 8;

/// The NIC's MTU as last read (1500 until a read works).
struct Mtu {
    value: usize,
    warned: bool,
}

impl Mtu {
    fn read(config: &PcapConfig) -> Mtu {
        let mut m = Mtu {
            value: 1500,
            warned: false,
        };
        let _ = m.refresh(config);
        m
    }

    /// Reads the MTU again; an error is returned (and warned about once).
    fn refresh(&mut self, config: &PcapConfig) -> io::Result<()> {
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
struct KernelDrops {
    seen: u32,
    logged_at: Option<Duration>,
    unlogged: u64,
}

impl KernelDrops {
    fn check(&mut self, cap: &mut pcap::Capture<pcap::Active>, config: &PcapConfig, now: Duration) {
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

/// Where a captured frame goes: through MAC-NAT (when on) to the switch.
struct Ingress<'a> {
    nat: Option<&'a Mutex<MacNat>>,
    port: &'a Arc<Port>,
    switch: &'a Arc<Switch>,
    now: Duration,
}

impl Ingress<'_> {
    /// Completes the L4 checksum (locally offloaded checksums arrive
    /// unfinished), applies MAC-NAT and forwards.
    fn deliver(&self, frame: &mut [u8]) {
        crate::checksum::complete_l4_checksum(frame);
        self.deliver_complete(frame);
    }

    /// [`Ingress::deliver`] for a frame whose checksums are already right.
    fn deliver_complete(&self, frame: &mut [u8]) {
        if let Some(nat) = self.nat {
            let verdict = nat
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .inbound(frame, self.now);
            match verdict {
                Inbound::ToGuest(_) | Inbound::Flood => {}
                Inbound::HostOnly => return,
                Inbound::Drop(_) => {
                    self.port.drop_frame(DropReason::MacNat, self.now, None);
                    return;
                }
            }
        }
        let frames = Frames::Plain(&[&*frame]);
        self.switch
            .forward(self.port, frames, Overflow::Drop, self.now);
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
    fn transmit(&self, ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| {
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
                    match nat.lock().unwrap_or_else(|p| p.into_inner()).outbound(
                        &mut scratch,
                        ingress.0,
                        now,
                    ) {
                        Outbound::Send => &scratch,
                        // The table counts why (`ctl macnat`); the port counts it
                        // as `mac_nat`.
                        Outbound::Drop(_) => return Err(SendError::Refused(DropReason::MacNat)),
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
                    // libpcap reports a downed NIC only as text ("send: Network
                    // is down").
                    other if other.to_string().contains("Network is down") => SendError::Down,
                    other => SendError::Other(io::Error::other(other.to_string())),
                })
        })
    }

    fn forget_port(&self, port: PortId) {
        // The guest behind that port is gone: its bindings must not answer
        // for a newcomer who takes its address.
        if let Some(nat) = &self.nat {
            nat.lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove_port(port.0);
        }
    }
}

/// The NIC's MTU (SIOCGIFMTU in the daemon's own network namespace; /sys
/// may show another namespace's devices).
fn device_mtu(device: &str) -> io::Result<usize> {
    let name = std::ffi::CString::new(device).map_err(io::Error::other)?;
    let bytes = name.as_bytes_with_nul();
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() > req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {device:?} is too long"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    use std::os::fd::AsRawFd;
    // SAFETY: SIOCGIFMTU reads the name and writes ifru_mtu inside `req`,
    // which lives across the call; the socket is open.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU, &mut req) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel filled in the ifru_mtu member.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    usize::try_from(mtu)
        .ok()
        .filter(|m| *m >= 68)
        .ok_or_else(|| io::Error::other(format!("{device} reports MTU {mtu}")))
}

/// Cutting offloaded TCP super-frames back into frames that fit the NIC's
/// MTU. With GRO/LRO on the NIC (most drivers' default), or a local sender's
/// TSO/GSO seen through a veth, a capture returns one frame carrying many
/// TCP segments (up to 64 KiB). Guests' links carry at most the MTU, and
/// some clients truncate anything larger (vde_plug does), so the stream
/// crawls through retransmissions. Each piece gets the original headers,
/// its own length, sequence number, IPv4 id and checksums; FIN and PSH stay
/// on the last piece, CWR on the first.
mod segment {
    use switchyard_switch::gso::{self, VnetHdr};
    use switchyard_wire::ethernet;

    /// Where the IP header starts (after up to two VLAN tags) and which IP
    /// version it is.
    fn l3(frame: &[u8]) -> Option<(usize, u16)> {
        let l = ethernet::layout(frame).ok()?;
        matches!(l.ethertype, ethernet::IPV4 | ethernet::IPV6).then_some((l.payload, l.ethertype))
    }

    /// How one oversize frame is to be handled.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Plan {
        /// Its IP packet fits the MTU after all (padding, tags): forward it.
        Fits,
        /// A TCP super-frame: cut it as this offload header describes
        /// (`gso::segment`), every IP packet at most the MTU.
        Cut(VnetHdr),
        /// Larger than the MTU and not a TCP segment we can cut.
        TooLong,
    }

    /// Decides what to do with `frame`, larger than `mtu` plus its
    /// link-layer header.
    pub(super) fn plan(frame: &[u8], mtu: usize) -> Plan {
        let Some((ip, version)) = l3(frame) else {
            return Plan::TooLong;
        };
        let Some(hdr) = frame.get(ip..) else {
            return Plan::TooLong;
        };
        // (IP header length, IP packet length, next protocol)
        let (ihl, total, proto) = if version == ethernet::IPV4 {
            if hdr.len() < 20 || hdr[0] >> 4 != 4 {
                return Plan::TooLong;
            }
            let ihl = usize::from(hdr[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
            // A fragment cannot be cut again here.
            if u16::from_be_bytes([hdr[6], hdr[7]]) & 0x3fff != 0 {
                return if total <= mtu {
                    Plan::Fits
                } else {
                    Plan::TooLong
                };
            }
            (ihl, total, hdr[9])
        } else {
            if hdr.len() < 40 || hdr[0] >> 4 != 6 {
                return Plan::TooLong;
            }
            (
                40,
                40 + usize::from(u16::from_be_bytes([hdr[4], hdr[5]])),
                hdr[6],
            )
        };
        if total <= mtu {
            return Plan::Fits;
        }
        if proto != 6 || ihl < 20 || total > hdr.len() || ihl + 20 > total {
            return Plan::TooLong;
        }
        let thl = usize::from(hdr[ihl + 12] >> 4) * 4;
        if thl < 20 || ihl + thl > total || ihl + thl >= mtu {
            return Plan::TooLong;
        }
        let (Ok(mss), Ok(hdr_len)) = (
            u16::try_from(mtu - ihl - thl),
            u16::try_from(ip + ihl + thl),
        ) else {
            return Plan::TooLong;
        };
        Plan::Cut(VnetHdr {
            flags: 0,
            gso_type: if version == ethernet::IPV4 {
                gso::GSO_TCPV4
            } else {
                gso::GSO_TCPV6
            },
            hdr_len,
            gso_size: mss,
            csum_start: 0,
            csum_offset: 0,
        })
    }

    /// How one oversize frame came out (for the tests).
    #[cfg(test)]
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Oversize {
        Fits,
        Pieces(Vec<Vec<u8>>),
        TooLong,
    }

    /// [`plan`] carried out, the pieces collected (for the tests).
    #[cfg(test)]
    pub(super) fn cut(frame: &[u8], mtu: usize) -> Oversize {
        match plan(frame, mtu) {
            Plan::Fits => Oversize::Fits,
            Plan::TooLong => Oversize::TooLong,
            Plan::Cut(hdr) => {
                let mut pieces = Vec::new();
                let mut out = Vec::new();
                match gso::segment(&hdr, frame, &mut out, |p| pieces.push(p.to_vec())) {
                    Ok(_) => Oversize::Pieces(pieces),
                    Err(_) => Oversize::TooLong,
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        use switchyard_wire::checksum::fold;

        fn sum(data: &[u8]) -> u64 {
            switchyard_wire::checksum::sum(data, 0)
        }

        /// A TCP/IPv4 frame with `n` payload bytes 0, 1, 2, … (mod 251),
        /// flags PSH|ACK|FIN|CWR, seq 1000, id 7.
        fn tcp4(n: usize) -> Vec<u8> {
            let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
            let total = 20 + 20 + n;
            let mut ip = vec![
                0x45,
                0,
                (total >> 8) as u8,
                total as u8,
                0,
                7,
                0x40,
                0,
                64,
                6,
                0,
                0,
            ];
            ip.extend_from_slice(&[198, 51, 100, 2, 198, 51, 100, 150]);
            f.extend_from_slice(&ip);
            f.extend_from_slice(&[0x13, 0x89, 0xc0, 0x00, 0, 0, 0x03, 0xe8, 0, 0, 0, 1]);
            f.extend_from_slice(&[0x50, 0x80 | 0x10 | 0x08 | 0x01, 0xff, 0xff, 0, 0, 0, 0]);
            f.extend((0..n).map(|i| (i % 251) as u8));
            f
        }

        #[test]
        fn a_super_frame_becomes_mtu_sized_segments() {
            let f = tcp4(4000);
            let Oversize::Pieces(p) = cut(&f, 1500) else {
                panic!("not cut");
            };
            assert_eq!(p.len(), 3, "1460 + 1460 + 1080");
            let mut payload = Vec::new();
            for (i, s) in p.iter().enumerate() {
                let ip = &s[14..];
                let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
                assert_eq!(total, s.len() - 14);
                assert!(total <= 1500);
                assert_eq!(fold(sum(&ip[..20])), 0, "IPv4 header checksum");
                assert_eq!(u16::from_be_bytes([ip[4], ip[5]]), 7 + i as u16);
                let seq = u32::from_be_bytes([ip[24], ip[25], ip[26], ip[27]]);
                assert_eq!(seq, 1000 + 1460 * i as u32);
                let flags = ip[33];
                assert_eq!(flags & 0x80 != 0, i == 0, "CWR on the first only");
                assert_eq!(flags & 0x09 != 0, i == 2, "FIN/PSH on the last only");
                assert!(flags & 0x10 != 0, "ACK on all");
                payload.extend_from_slice(&ip[40..]);
            }
            assert_eq!(payload, f[54..].to_vec());
        }

        #[test]
        fn what_fits_or_cannot_be_cut_is_said_so() {
            assert_eq!(cut(&tcp4(1400), 1500), Oversize::Fits);
            let mut udp = tcp4(3000);
            udp[14 + 9] = 17;
            assert_eq!(cut(&udp, 1500), Oversize::TooLong);
            let mut frag = tcp4(3000);
            frag[14 + 6] = 0x20; // MF
            assert_eq!(cut(&frag, 1500), Oversize::TooLong);
            assert_eq!(cut(&[0u8; 13], 1500), Oversize::TooLong);
            // Truncated capture: IP total length beyond the frame.
            let f = tcp4(3000);
            assert_eq!(cut(&f[..2000], 1500), Oversize::TooLong);
        }

        #[test]
        fn ipv6_super_frames_are_cut_too() {
            let n = 3000;
            let mut f = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&((20 + n) as u16).to_be_bytes());
            f.extend_from_slice(&[6, 64]);
            f.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            f.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
            f.extend_from_slice(&[0x13, 0x89, 0xc0, 0x00, 0, 0, 0, 1, 0, 0, 0, 1]);
            f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
            f.extend(std::iter::repeat_n(0xab, n));
            let Oversize::Pieces(p) = cut(&f, 1500) else {
                panic!("not cut");
            };
            assert_eq!(p.len(), 3, "1440 + 1440 + 120");
            for s in &p {
                let plen = usize::from(u16::from_be_bytes([s[18], s[19]]));
                assert_eq!(plen + 40 + 14, s.len());
                assert!(plen + 40 <= 1500);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_switch_lists_only_its_own_mac_nat_tables() {
        let (a, b) = (
            Switch::new(switchyard_switch::EngineConfig::default()),
            Switch::new(switchyard_switch::EngineConfig::default()),
        );
        let uplink = MacAddr([2, 0, 0, 0, 0, 1]);
        let table = MacNat::new(uplink, MacNatConfig::default()).expect("a MAC-NAT table");
        let table = Arc::new(Mutex::new(table));
        a.shared::<MacNatTables>().register("wifi", &table);
        let names =
            |s: &Switch| -> Vec<String> { mac_nat_tables(s).into_iter().map(|(n, _)| n).collect() };
        assert_eq!(names(&a), ["wifi"]);
        assert!(names(&b).is_empty());
        drop(table);
        assert!(names(&a).is_empty(), "a stopped port's table stays listed");
    }
}
