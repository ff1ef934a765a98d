//! The Prometheus endpoint: text exposition format 0.0.4, rendered at
//! scrape time straight from the switch's atomics and snapshots (no
//! registry to keep in step with ports that come and go).

use crate::accept::{Admission, Ended, Limits, Slot, Slots, CONTROL_LIMITS, METRICS_LIMITS};
use crate::stats::{Detail, MacNatStats, Snapshot};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_switch::counters::CounterSnapshot;
use switchyard_switch::{DropReason, Switch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads one counter from a snapshot.
type Getter = fn(&CounterSnapshot) -> u64;

/// Escapes a label value (backslash, quote, newline).
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A family with one unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

/// The per-port counter families: name, help, value.
const PORT_COUNTERS: [(&str, &str, Getter); 7] = [
    (
        "switchyard_port_rx_frames_total",
        "Frames received from the port's peer.",
        |c| c.rx_frames,
    ),
    (
        "switchyard_port_rx_bytes_total",
        "Bytes received from the port's peer.",
        |c| c.rx_bytes,
    ),
    (
        "switchyard_port_tx_frames_total",
        "Frames sent to the port's peer.",
        |c| c.tx_frames,
    ),
    (
        "switchyard_port_tx_bytes_total",
        "Bytes sent to the port's peer.",
        |c| c.tx_bytes,
    ),
    (
        "switchyard_port_tx_held_frames_total",
        "Frames a full peer made the switch hold, pausing their sender, instead of dropping them.",
        |c| c.tx_held,
    ),
    (
        "switchyard_port_fdb_refused_total",
        "Source addresses not learned because the port's or the table's limit was reached.",
        |c| c.fdb_refused,
    ),
    (
        "switchyard_port_loop_blocks_total",
        "Times loop protection blocked the port.",
        |c| c.loop_blocks,
    ),
];

/// Renders every metric of the switch as it is now.
pub fn render_switch(switch: &Switch) -> String {
    render(&Snapshot::take(switch, Detail::Counters))
}

/// Renders every metric of a snapshot.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(4096);
    family(
        &mut o,
        "switchyard_build_info",
        "gauge",
        "Build information; always 1.",
    );
    let _ = writeln!(
        o,
        "switchyard_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    single(
        &mut o,
        "switchyard_uptime_seconds",
        "gauge",
        "Seconds since the switch started.",
        format_args!("{:.3}", s.uptime.as_secs_f64()),
    );
    render_ports(&mut o, s);
    render_totals(&mut o, &s.totals);
    render_mac_nat(&mut o, &s.mac_nat);
    render_listeners(&mut o, s);
    render_fdb(&mut o, s);
    render_control(&mut o, s);
    o
}

fn render_control(o: &mut String, s: &Snapshot) {
    family(
        o,
        "switchyard_control_refused_total",
        "counter",
        "Control socket requests refused for the caller's role, by request.",
    );
    for (c, n) in &s.control_refused {
        let _ = writeln!(
            o,
            "switchyard_control_refused_total{{request=\"{}\"}} {n}",
            c.label()
        );
    }
}

fn render_ports(o: &mut String, s: &Snapshot) {
    family(o, "switchyard_ports", "gauge", "Ports attached, by type.");
    let mut by_type: std::collections::BTreeMap<&str, u64> = Default::default();
    for p in &s.ports {
        *by_type.entry(p.kind).or_default() += 1;
    }
    for (t, n) in &by_type {
        let _ = writeln!(o, "switchyard_ports{{type=\"{t}\"}} {n}");
    }
    for (name, help, get) in PORT_COUNTERS {
        family(o, name, "counter", help);
        for p in &s.ports {
            let _ = writeln!(
                o,
                "{name}{{port=\"{}\",type=\"{}\"}} {}",
                esc(&p.name),
                p.kind,
                get(&p.counters)
            );
        }
    }
    family(
        o,
        "switchyard_port_loop_blocked",
        "gauge",
        "1 while loop protection blocks the port.",
    );
    for p in &s.ports {
        let _ = writeln!(
            o,
            "switchyard_port_loop_blocked{{port=\"{}\",type=\"{}\"}} {}",
            esc(&p.name),
            p.kind,
            u8::from(p.loop_block.is_some())
        );
    }
    family(
        o,
        "switchyard_port_drops_total",
        "counter",
        "Frames dropped, by port and reason.",
    );
    for p in &s.ports {
        for r in DropReason::ALL {
            let _ = writeln!(
                o,
                "switchyard_port_drops_total{{port=\"{}\",reason=\"{}\"}} {}",
                esc(&p.name),
                r.as_str(),
                p.counters.drops(r)
            );
        }
    }
}

fn render_totals(o: &mut String, totals: &CounterSnapshot) {
    family(
        o,
        "switchyard_drops_total",
        "counter",
        "Frames dropped since start by reason, ports that are gone included.",
    );
    for r in DropReason::ALL {
        let _ = writeln!(
            o,
            "switchyard_drops_total{{reason=\"{}\"}} {}",
            r.as_str(),
            totals.drops(r)
        );
    }
    single(
        o,
        "switchyard_tx_held_frames_total",
        "counter",
        "Frames held for a full peer since start, ports that are gone included.",
        totals.tx_held,
    );
}

fn render_mac_nat(o: &mut String, tables: &[MacNatStats]) {
    family(
        o,
        "switchyard_macnat_entries",
        "gauge",
        "Address bindings in a port's MAC-NAT table.",
    );
    for t in tables {
        let _ = writeln!(
            o,
            "switchyard_macnat_entries{{port=\"{}\"}} {}",
            esc(&t.port),
            t.len
        );
    }
    family(
        o,
        "switchyard_macnat_total",
        "counter",
        "MAC-NAT decisions, edits, drops and table events, by port and counter.",
    );
    for t in tables {
        for (c, v) in &t.counters {
            let _ = writeln!(
                o,
                "switchyard_macnat_total{{port=\"{}\",counter=\"{c}\"}} {v}",
                esc(&t.port),
            );
        }
    }
}

fn render_listeners(o: &mut String, s: &Snapshot) {
    family(
        o,
        "switchyard_handshakes_refused_total",
        "counter",
        "Clients of the unix control sockets that got no port, by reason.",
    );
    for (r, n) in &s.handshakes_refused {
        let _ = writeln!(
            o,
            "switchyard_handshakes_refused_total{{reason=\"{}\"}} {n}",
            r.as_str()
        );
    }
    single(
        o,
        "switchyard_handshakes_waiting",
        "gauge",
        "Connections on the unix control sockets that have not sent their request yet.",
        s.handshakes_waiting,
    );
    single(
        o,
        "switchyard_stream_connections_refused_total",
        "counter",
        "Connections refused by stream listeners that were serving their maximum.",
        s.stream_connections_refused,
    );
}

fn render_fdb(o: &mut String, s: &Snapshot) {
    single(
        o,
        "switchyard_fdb_entries",
        "gauge",
        "Addresses in the forwarding table.",
        s.fdb_len,
    );
    single(
        o,
        "switchyard_fdb_max_entries",
        "gauge",
        "The forwarding table's limit.",
        s.config.fdb.max_entries,
    );
    let ev = &s.fdb_events;
    for (name, help, v) in [
        (
            "switchyard_fdb_learned_total",
            "Addresses learned.",
            ev.learned,
        ),
        (
            "switchyard_fdb_moved_total",
            "Addresses that moved to another port.",
            ev.moved,
        ),
        (
            "switchyard_fdb_aged_total",
            "Addresses forgotten by aging.",
            ev.aged,
        ),
        (
            "switchyard_fdb_refused_total",
            "Addresses not learned because a limit was reached.",
            ev.refused,
        ),
        (
            "switchyard_fdb_flaps_total",
            "Moves within a second of the address's previous move (a loop, or one MAC twice).",
            ev.flaps,
        ),
        (
            "switchyard_fdb_loop_blocks_total",
            "Ports loop protection blocked.",
            ev.loop_blocks,
        ),
    ] {
        single(o, name, "counter", help, v);
    }
}

/// Binds the metrics address (before daemonizing, so errors show).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    use anyhow::Context;
    let l = std::net::TcpListener::bind(addr)
        .with_context(|| format!("cannot listen for metrics on {addr}; choose another address"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Serves `GET /metrics` until the runtime stops, within `limits` (see
/// [`crate::accept`]); `listeners` are reported with every scrape.
pub(crate) async fn serve(
    listener: std::net::TcpListener,
    switch: Arc<Switch>,
    limits: Limits,
    listeners: Listeners,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => return tracing::error!("metrics listener: {e}"),
    };
    let accept = || listener.accept();
    crate::accept::accept_forever("metrics", accept, |(s, _): (TcpStream, _)| {
        let slot = match listeners.metrics.admit() {
            Admission::Admitted(slot) => slot,
            Admission::Refused => return crate::accept::refuse(s.into_std(), BUSY),
        };
        let (switch, listeners) = (switch.clone(), listeners.clone());
        tokio::spawn(async move {
            if let Err(e) = respond(s, &slot, limits, &switch, &listeners).await {
                tracing::debug!("metrics client: {e}");
            }
        });
    })
    .await;
}

/// The answer when every slot is serving a scrape.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 38\r\nRetry-After: 1\r\nConnection: close\r\n\r\nbusy: too many scrapes at once; retry\n";

/// The connection slots of the two listeners, shown on every scrape.
#[derive(Debug, Clone)]
pub(crate) struct Listeners {
    /// The metrics endpoint's.
    pub metrics: Arc<Slots>,
    /// The control socket's.
    pub control: Arc<Slots>,
}

impl Listeners {
    /// Fresh slots for both listeners.
    pub(crate) fn new() -> Listeners {
        Listeners {
            metrics: Slots::new(METRICS_LIMITS.max_connections),
            control: Slots::new(CONTROL_LIMITS.max_connections),
        }
    }
}

fn render_listener_slots(o: &mut String, l: &Listeners) {
    let both = [("metrics", &l.metrics), ("control", &l.control)];
    family(
        o,
        "switchyard_listener_connections",
        "gauge",
        "Connections the metrics endpoint and the control socket are serving.",
    );
    for (name, slots) in both {
        let _ = writeln!(
            o,
            "switchyard_listener_connections{{listener=\"{name}\"}} {}",
            slots.live()
        );
    }
    family(
        o,
        "switchyard_listener_shed_total",
        "counter",
        "Connections closed unserved: idle ones pushed out by newer ones (evicted), or turned away while every slot was busy (refused).",
    );
    for (name, slots) in both {
        let (evicted, refused) = slots.shed();
        for (reason, n) in [("evicted", evicted), ("refused", refused)] {
            let _ = writeln!(
                o,
                "switchyard_listener_shed_total{{listener=\"{name}\",reason=\"{reason}\"}} {n}"
            );
        }
    }
}

/// Reads until the end of an HTTP request head. Only the bytes a read
/// added (and the three before them) are searched for the blank line.
/// `Ok(None)`: the peer closed first; `Err(len)`: longer than the buffer.
async fn read_head(
    s: &mut TcpStream,
    buf: &mut [u8],
) -> std::io::Result<Result<Option<usize>, usize>> {
    let mut len = 0;
    loop {
        if len == buf.len() {
            return Ok(Err(len));
        }
        let n = s.read(&mut buf[len..]).await?;
        if n == 0 {
            return Ok(Ok(None));
        }
        let from = len.saturating_sub(3);
        len += n;
        if let Some(i) = buf[from..len].windows(4).position(|w| w == b"\r\n\r\n") {
            return Ok(Ok(Some(from + i + 4)));
        }
    }
}

async fn respond(
    mut s: TcpStream,
    slot: &Slot,
    limits: Limits,
    switch: &Switch,
    listeners: &Listeners,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; limits.max_request];
    let head = match slot
        .idle(limits.head_timeout, read_head(&mut s, &mut buf))
        .await
    {
        Err(Ended::TimedOut) => {
            let answer = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n";
            return last_words(&mut s, answer).await;
        }
        Err(Ended::Evicted) => return Ok(()),
        Ok(r) => match r? {
            Ok(Some(end)) => end,
            Ok(None) => return Ok(()),
            Err(_) => {
                let answer =
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\n\r\n";
                return last_words(&mut s, answer).await;
            }
        },
    };
    let head = String::from_utf8_lossy(&buf[..head]);
    let resp = reply(&head, || {
        let mut text = render_switch(switch);
        render_listener_slots(&mut text, listeners);
        text
    });
    let write = async {
        s.write_all(resp.as_bytes()).await?;
        s.shutdown().await
    };
    match tokio::time::timeout(limits.write_timeout, write).await {
        Ok(r) => r,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    }
}

/// A short answer before closing, given a second at most.
async fn last_words(s: &mut TcpStream, answer: &[u8]) -> std::io::Result<()> {
    let _ = tokio::time::timeout(Duration::from_secs(1), s.write_all(answer)).await;
    Ok(())
}

/// The whole HTTP response to a request head.
fn reply(head: &str, metrics: impl FnOnce() -> String) -> String {
    let mut words = head.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics(),
        ),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "switchyard: metrics at /metrics\n".to_string(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found; try /metrics\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET\n".to_string(),
        ),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_switch::EngineConfig;

    #[test]
    fn held_frames_have_a_family_per_port_and_a_total() {
        let text = render_switch(&Switch::new(EngineConfig::default()));
        for line in [
            "# TYPE switchyard_port_tx_held_frames_total counter",
            "# HELP switchyard_port_tx_held_frames_total Frames a full peer made the switch hold, pausing their sender, instead of dropping them.",
            "# TYPE switchyard_tx_held_frames_total counter",
            "switchyard_tx_held_frames_total 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn a_fixed_snapshot_renders_as_before() {
        let text =
            render(&crate::stats::sample::snapshot()).replace(env!("CARGO_PKG_VERSION"), "VERSION");
        let want = include_str!("testdata/metrics.prom");
        for (i, (got, want)) in text.lines().zip(want.lines()).enumerate() {
            assert_eq!(got, want, "line {}", i + 1);
        }
        assert_eq!(text, want);
    }
}
