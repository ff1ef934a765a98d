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

mod handle;
mod ingress;
mod nat;
// Public only for the fuzz target `pcap` (fuzz/).
#[doc(hidden)]
pub mod segment;
mod tx;

use handle::{
    host_addrs, open_handles, read_mac, Handles, KernelDrops, Mtu, RawFdOf, MAX_L2_HEADER,
};
use ingress::{Batch, Ingress};
use nat::{mac_nat_config, NatUpkeep};
pub use nat::{mac_nat_tables, MacNatTables};
use tx::PcapTx;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_mac_nat::{HostAddr, MacAddr, MacNat, MacNatConfig, Outbound};
use switchyard_switch::port::{Port, PortId, SendError, Transmit};
use switchyard_switch::ports::receive::attach;
use switchyard_switch::{gso, DropReason, Stop, Switch};

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
            scratch: PcapTx::scratch(),
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
        let mut batch = Batch::new();
        // A captured super-frame, moved out of the batch's slot while its
        // segments go into the batch.
        let mut big = Vec::with_capacity(2048);
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
            // One drain takes microseconds: one clock read serves it.
            let now = switch.now();
            let ingress = Ingress {
                nat: nat.as_deref(),
                port: &port,
                now,
            };
            for _ in 0..256 {
                let frame = batch.slot();
                match cap.next_packet() {
                    Ok(p) => {
                        // Longer than even the snap length: unusable.
                        if p.header.len as usize <= p.data.len() {
                            frame.extend_from_slice(p.data);
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
                if frame.is_empty() {
                    port.drop_frame(DropReason::TooLong, now, None);
                    continue;
                }
                // Planned once: only a frame over the MTU is looked into.
                let plan = if frame.len() <= mtu.value + MAX_L2_HEADER {
                    segment::Plan::Fits
                } else {
                    segment::plan(frame, mtu.value)
                };
                let hdr = match plan {
                    segment::Plan::Fits => {
                        if ingress.admit(frame) && batch.commit() {
                            batch.flush(&port, switch, now);
                        }
                        continue;
                    }
                    segment::Plan::Cut(hdr) => Some(hdr),
                    segment::Plan::TooLong => None,
                };
                std::mem::swap(&mut big, frame);
                let cut = match hdr {
                    // The segments' checksums are complete already.
                    Some(hdr) => gso::segment(&hdr, &big, &mut piece, |p| {
                        if ingress.admit_complete(p) && batch.push(p) {
                            batch.flush(&port, switch, now);
                        }
                    }),
                    None => Err(gso::GsoError::Malformed),
                };
                if let Err(gso::GsoError::TooSmall(_)) = cut {
                    port.drop_frame(DropReason::GsoTooSmall, now, None);
                } else if cut.is_err() {
                    port.drop_frame_because(DropReason::TooLong, now, || {
                        io::Error::other(format!(
                            "a captured frame of {} bytes is larger than {}'s MTU {} and is not \
                             TCP; turn the NIC's offloads off: ethtool -K {} gro off lro off",
                            big.len(),
                            config.device,
                            mtu.value,
                            config.device
                        ))
                    });
                }
            }
            batch.flush(&port, switch, now);
            if let Some(e) = failed {
                break e;
            }
            tokio::task::yield_now().await;
        };
        attached.detach(why.clone());
        why
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
