//! MAC-NAT on a pcap port: the table's settings, the switch's register of
//! tables (for `ctl macnat` and the metrics), and the once-a-second care
//! of a table (the NIC's MAC and addresses, departed guests, aging).

use super::*;

/// The MAC-NAT configuration: the crate's defaults, with the port's
/// aging time when one is set.
pub(super) fn mac_nat_config(config: &PcapConfig) -> MacNatConfig {
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
    pub(super) fn register(&self, port: &str, table: &Arc<Mutex<MacNat>>) {
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

/// Once-a-second care of a MAC-NAT table, with what it must remember
/// between runs.
#[derive(Default)]
pub(super) struct NatUpkeep {
    /// Mappings already logged (one line per new mapping).
    pub(super) logged: std::collections::HashSet<(u16, std::net::IpAddr, [u8; 6])>,
    /// The host's addresses on the NIC as last given to the table.
    pub(super) host: Vec<HostAddr>,
}

impl NatUpkeep {
    /// Keeps the NIC's MAC and the host's addresses current (a DHCP lease
    /// or a MAC change after start must be protected too), ages the table,
    /// forgets guests the switch no longer knows (a guest whose port went
    /// away, or that fell out of the FDB, loses its address bindings, so
    /// another guest may take them) and logs new mappings.
    pub(super) fn run(&mut self, nat: &Mutex<MacNat>, switch: &Switch, config: &PcapConfig) {
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
