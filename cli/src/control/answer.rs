//! Answers to the read-only requests (`ports`, `fdb`, `stats`,
//! `macnat`), rendered from one [`Snapshot`] as the metrics endpoint's are.

use crate::protocol::{BindingRow, FdbRow, PortRow, Request, Response, StatsReply};
use crate::stats::{Detail, Snapshot};
use std::collections::BTreeMap;
use std::sync::Arc;
use switchyard_switch::counters::CounterSnapshot;
use switchyard_switch::ports::unix::Refusal;
use switchyard_switch::{DropReason, Mode, Switch};

/// One query, one reply.
pub fn answer(req: &Request, switch: &Arc<Switch>) -> Response {
    let snapshot = |detail| Snapshot::take(switch, detail);
    match req {
        Request::Ports => ports_reply(&snapshot(Detail::Counters)),
        Request::Fdb => fdb_reply(&snapshot(Detail::Tables)),
        Request::Stats => Response::Stats(Box::new(stats_reply(&snapshot(Detail::Counters)))),
        Request::Macnat => mac_nat_reply(&snapshot(Detail::Tables)),
        Request::FdbFlush { port: None } => Response::Flushed {
            flushed: switch.fdb_flush(None) as u64,
        },
        Request::FdbFlush { port: Some(name) } => match find_port(switch, name) {
            Some(p) => Response::Flushed {
                flushed: switch.fdb_flush(Some(p.id())) as u64,
            },
            None => Response::error(no_such_port(name)),
        },
        // Carried out by the main loop, or streamed: see `client`.
        Request::Reload
        | Request::PortAdd { .. }
        | Request::PortDel { .. }
        | Request::Capture { .. } => Response::error(format!(
            "{} cannot be answered here",
            serde_json::to_string(&req.name()).unwrap_or_default()
        )),
    }
}

/// Reasons with a nonzero count, by label.
fn nonzero<R>(
    counts: impl IntoIterator<Item = (R, u64)>,
    label: impl Fn(R) -> &'static str,
) -> BTreeMap<String, u64> {
    counts
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| (label(r).to_string(), n))
        .collect()
}

/// Drops that happened, by reason.
fn drops_by_reason(c: &CounterSnapshot) -> BTreeMap<String, u64> {
    nonzero(DropReason::ALL.map(|r| (r, c.drops(r))), DropReason::as_str)
}

pub(super) fn ports_reply(s: &Snapshot) -> Response {
    let ports = s
        .ports
        .iter()
        .map(|p| {
            let c = &p.counters;
            PortRow {
                id: p.id.0,
                name: p.name.clone(),
                kind: p.kind.to_string(),
                peer: p.peer.clone(),
                state: port_state(p),
                vlans: p.vlans.clone(),
                rx_frames: c.rx_frames,
                rx_bytes: c.rx_bytes,
                tx_frames: c.tx_frames,
                tx_bytes: c.tx_bytes,
                tx_held: c.tx_held,
                drops: drops_by_reason(c),
                fdb_refused: c.fdb_refused,
                loop_blocks: c.loop_blocks,
                blocked: p.loop_block.as_ref().map(|b| crate::protocol::PortBlock {
                    reason: "loop".into(),
                    mac: b.mac.to_string(),
                    home: b.home.clone(),
                    seconds_left: b.left.as_secs().max(1),
                }),
            }
        })
        .collect();
    Response::Ports { ports }
}

/// `up`, `closing`, or `blocked (loop, N s left)`.
fn port_state(p: &crate::stats::PortStats) -> String {
    match &p.loop_block {
        _ if p.closing => "closing".into(),
        Some(b) => format!("blocked (loop, {} s left)", b.left.as_secs().max(1)),
        None => "up".into(),
    }
}

fn fdb_reply(s: &Snapshot) -> Response {
    let fdb = s
        .fdb
        .iter()
        .map(|e| FdbRow {
            mac: e.mac.to_string(),
            vlan: e.vlan,
            port: e.port.clone(),
            age_seconds: e.age.as_secs(),
        })
        .collect();
    Response::Fdb { fdb }
}

pub(super) fn stats_reply(s: &Snapshot) -> StatsReply {
    let (t, ev, cfg) = (&s.totals, &s.fdb_events, &s.config);
    StatsReply {
        mode: if cfg.mode == Mode::Hub {
            "hub"
        } else {
            "switch"
        }
        .to_string(),
        backpressure: s.backpressure,
        busy_poll_us: u64::try_from(s.busy_poll.as_micros()).unwrap_or(u64::MAX),
        ports: s.ports.len() as u64,
        fdb_entries: s.fdb_len as u64,
        fdb_max_entries: cfg.fdb.max_entries as u64,
        fdb_aging_seconds: cfg.fdb.aging.as_secs(),
        fdb_learned: ev.learned,
        fdb_moved: ev.moved,
        fdb_aged: ev.aged,
        fdb_refused: ev.refused,
        rx_frames: t.rx_frames,
        tx_frames: t.tx_frames,
        tx_held: t.tx_held,
        drops: t.drops.iter().sum(),
        drops_by_reason: drops_by_reason(t),
        uptime_seconds: s.uptime.as_secs(),
        handshakes_refused: nonzero(s.handshakes_refused.iter().copied(), Refusal::as_str),
        handshakes_waiting: s.handshakes_waiting,
        stream_connections_refused: s.stream_connections_refused,
    }
}

pub(super) fn mac_nat_reply(s: &Snapshot) -> Response {
    if s.mac_nat.is_empty() {
        return Response::error("no port has MAC-NAT on (a pcap port with mac_nat=on)");
    }
    let macnat = s
        .mac_nat
        .iter()
        .flat_map(|t| {
            t.bindings.iter().map(|b| BindingRow {
                port: t.port.clone(),
                vlan: b.vlan,
                address: b.address.to_string(),
                mac: b.mac.clone(),
                learned_from: b.learned_from.to_string(),
                age_seconds: b.age.as_secs(),
            })
        })
        .collect();
    let counters = s
        .mac_nat
        .iter()
        .map(|t| {
            let values = t.counters.iter().map(|(c, v)| (c.to_string(), *v));
            (t.port.clone(), values.collect())
        })
        .collect();
    Response::Macnat { macnat, counters }
}

/// Finds a live port by name.
pub fn find_port(switch: &Switch, name: &str) -> Option<Arc<switchyard_switch::Port>> {
    switch.ports().iter().find(|p| p.name() == name).cloned()
}

pub(super) fn no_such_port(name: &str) -> String {
    format!("no port named {name:?}; see `switchyard ctl ports`")
}
