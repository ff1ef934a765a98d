//! One switch's counters and tables, read once into plain values that the
//! metrics endpoint and the control answers both render, so neither walks
//! the switch, its ports, the FDB, the MAC-NAT tables and the listeners'
//! counters on its own.

use std::net::IpAddr;
use std::time::Duration;
use switchyard_switch::counters::CounterSnapshot;
use switchyard_switch::engine::FdbEvents;
use switchyard_switch::ports::unix::Refusal;
use switchyard_switch::{EngineConfig, MacAddr, PortId, Switch};

/// How much to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Counters and table sizes: what the metrics and `ctl stats`/`ports`
    /// show.
    Counters,
    /// Also every FDB entry and MAC-NAT binding (`ctl fdb`, `ctl macnat`).
    Tables,
}

/// Everything the switch counts, at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Time since the switch started (its clock).
    pub uptime: Duration,
    /// The engine's settings.
    pub config: EngineConfig,
    /// Whether full peers pause their senders.
    pub backpressure: bool,
    /// The busy poll (zero: off).
    pub busy_poll: Duration,
    /// Every live port, in the port table's order.
    pub ports: Vec<PortStats>,
    /// Switch-wide totals, ports that are gone included.
    pub totals: CounterSnapshot,
    /// Addresses in the forwarding table.
    pub fdb_len: usize,
    /// Learning events since start.
    pub fdb_events: FdbEvents,
    /// The forwarding table (empty unless [`Detail::Tables`]).
    pub fdb: Vec<Address>,
    /// Every port with MAC-NAT on.
    pub mac_nat: Vec<MacNatStats>,
    /// Clients the control sockets refused, by reason (zeros included).
    pub handshakes_refused: Vec<(Refusal, u64)>,
    /// Connections on the control sockets still to send their request.
    pub handshakes_waiting: u64,
    /// Connections the stream listeners refused for being full.
    pub stream_connections_refused: u64,
    /// Control requests refused for the caller's role, by command (zeros
    /// included).
    pub control_refused: Vec<(crate::protocol::CommandName, u64)>,
}

/// One live port.
#[derive(Debug, Clone)]
pub struct PortStats {
    /// The switch's id for it.
    pub id: PortId,
    /// Its name.
    pub name: String,
    /// Its transport.
    pub kind: &'static str,
    /// Who is on the other side.
    pub peer: String,
    /// True while it is being removed.
    pub closing: bool,
    /// Its VLAN membership; `None`: VLAN-transparent.
    pub vlans: Option<String>,
    /// Its counters.
    pub counters: CounterSnapshot,
    /// Loop protection's block on it, if it is blocked.
    pub loop_block: Option<LoopBlockStats>,
}

/// Why and how much longer loop protection blocks a port.
#[derive(Debug, Clone)]
pub struct LoopBlockStats {
    /// The address whose frames kept coming back through the port.
    pub mac: MacAddr,
    /// The port that address lives on (its name, or id if gone).
    pub home: String,
    /// Time until the port forwards again.
    pub left: Duration,
}

/// One forwarding table entry.
#[derive(Debug, Clone)]
pub struct Address {
    /// The address.
    pub mac: MacAddr,
    /// Its VLAN.
    pub vlan: u16,
    /// The port's name (its id if the port is gone).
    pub port: String,
    /// Time since it was last seen.
    pub age: Duration,
}

/// One port's MAC-NAT table.
#[derive(Debug, Clone)]
pub struct MacNatStats {
    /// The port's name.
    pub port: String,
    /// Address bindings in the table.
    pub len: usize,
    /// Every counter, zeros included, by label.
    pub counters: Vec<(&'static str, u64)>,
    /// The bindings (empty unless [`Detail::Tables`]).
    pub bindings: Vec<Binding>,
}

/// One MAC-NAT address binding.
#[derive(Debug, Clone)]
pub struct Binding {
    /// The VLAN of the outermost tag (0 untagged).
    pub vlan: u16,
    /// The guest's address.
    pub address: IpAddr,
    /// The guest's MAC.
    pub mac: String,
    /// How it was learned.
    pub learned_from: &'static str,
    /// Time since it was last refreshed.
    pub age: Duration,
}

impl Snapshot {
    /// Reads `switch` now.
    pub fn take(switch: &Switch, detail: Detail) -> Snapshot {
        let uptime = switch.now();
        let table = switch.ports();
        // A port's name, or its number once it is gone.
        let name_of = |id: PortId| {
            table
                .get(id)
                .map(|p| p.name().to_string())
                .unwrap_or_else(|| id.to_string())
        };
        let blocks = switch.loop_blocks();
        let ports = table
            .iter()
            .map(|p| PortStats {
                loop_block: blocks
                    .iter()
                    .find(|b| b.port == p.id())
                    .map(|b| LoopBlockStats {
                        mac: b.mac,
                        home: name_of(b.home),
                        left: b.until.saturating_sub(uptime),
                    }),
                id: p.id(),
                name: p.name().to_string(),
                kind: p.kind(),
                peer: p.peer().to_string(),
                closing: p.is_closing(),
                vlans: p.vlans().map(|v| v.to_string()),
                counters: p.counters().snapshot(),
            })
            .collect();
        let fdb = match detail {
            Detail::Counters => Vec::new(),
            Detail::Tables => switch
                .fdb_entries()
                .into_iter()
                .map(|e| Address {
                    mac: e.mac,
                    vlan: e.vlan,
                    port: name_of(e.port),
                    age: e.age,
                })
                .collect(),
        };
        Snapshot {
            uptime,
            config: switch.config(),
            backpressure: switch.backpressure(),
            busy_poll: switch.busy_poll(),
            ports,
            totals: switch.totals(),
            fdb_len: switch.fdb_len(),
            fdb_events: switch.fdb_events(),
            fdb,
            mac_nat: mac_nat(switch, uptime, detail),
            handshakes_refused: switchyard_switch::ports::unix::refusals(switch),
            handshakes_waiting: switchyard_switch::ports::unix::waiting(switch),
            stream_connections_refused: switchyard_switch::ports::stream::connections_refused(
                switch,
            ),
            control_refused: crate::control::roles::Roles::of(switch).refused(),
        }
    }
}

/// Every MAC-NAT table, each read under one lock.
fn mac_nat(switch: &Switch, now: Duration, detail: Detail) -> Vec<MacNatStats> {
    switchyard_bridge::pcap::mac_nat_tables(switch)
        .into_iter()
        .map(|(port, t)| {
            let t = t.lock().unwrap_or_else(|p| p.into_inner());
            let bindings = match detail {
                Detail::Counters => Vec::new(),
                Detail::Tables => t
                    .snapshot()
                    .entries
                    .into_iter()
                    .map(|e| Binding {
                        vlan: e.vlan,
                        address: e.addr,
                        mac: e.mac.to_string(),
                        learned_from: e.source.label(),
                        age: now.saturating_sub(e.last_seen),
                    })
                    .collect(),
            };
            MacNatStats {
                port,
                len: t.len(),
                counters: t.counters().iter().map(|(c, v)| (c.label(), v)).collect(),
                bindings,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod sample {
    //! A fixed snapshot for the renderers' tests.

    use super::*;
    use switchyard_switch::DropReason;

    fn counters(base: u64) -> CounterSnapshot {
        let mut c = CounterSnapshot {
            rx_frames: base,
            rx_bytes: base * 60,
            tx_frames: base + 1,
            tx_bytes: (base + 1) * 60,
            tx_held: base / 2,
            ..CounterSnapshot::default()
        };
        c.drops[DropReason::ALL[0].index()] = base;
        c
    }

    /// Two ports (one name needing escapes), a MAC-NAT table, refusals.
    pub(crate) fn snapshot() -> Snapshot {
        let port = |id, name: &str, kind, base| PortStats {
            id: PortId(id),
            name: name.to_string(),
            kind,
            peer: format!("peer of {name}"),
            closing: false,
            vlans: None,
            counters: counters(base),
            loop_block: (id == 2).then(|| LoopBlockStats {
                mac: MacAddr([2, 0, 0, 0, 0, 1]),
                home: "unix:1".into(),
                left: Duration::from_secs(42),
            }),
        };
        Snapshot {
            uptime: Duration::from_millis(12_345),
            config: EngineConfig::default(),
            backpressure: true,
            busy_poll: Duration::ZERO,
            ports: vec![
                port(1, "unix:1", "unix", 10),
                port(2, "we\"ird\\name", "udp", 4),
            ],
            totals: counters(20),
            fdb_len: 2,
            fdb_events: FdbEvents {
                learned: 3,
                moved: 1,
                ..FdbEvents::default()
            },
            fdb: Vec::new(),
            mac_nat: vec![MacNatStats {
                port: "wifi".into(),
                len: 1,
                counters: vec![("learn_new", 1), ("table_full", 0)],
                bindings: Vec::new(),
            }],
            handshakes_refused: Refusal::ALL
                .iter()
                .map(|r| (*r, r.index() as u64 % 2))
                .collect(),
            handshakes_waiting: 3,
            stream_connections_refused: 7,
            control_refused: crate::protocol::CommandName::ALL
                .iter()
                .map(|c| (*c, u64::from(*c == crate::protocol::CommandName::PortAdd)))
                .collect(),
        }
    }
}
