//! What the switch does with the engine's notices: count them on the
//! port they concern, act on loop blocks, and log, never per frame.

use crate::engine::FdbNotice;
use crate::port::{Port, PortId};
use crate::ratelimit::{LogLimiter, LOG_INTERVAL};
use crate::switch::PortTable;
use crate::LoopBlock;
use std::time::Duration;

fn name(table: &PortTable, id: PortId) -> String {
    table
        .get(id)
        .map(|p| p.name().to_string())
        .unwrap_or_else(|| id.to_string())
}

/// Handles one notice of a frame that came in on `ingress`, decided at
/// `now`. Moves and flaps share `log` (one line a minute switch-wide);
/// refusals are counted and logged once a minute per port; a loop block
/// is rare and always logged.
pub(crate) fn note(
    notice: FdbNotice,
    ingress: &Port,
    table: &PortTable,
    log: &LogLimiter,
    now: Duration,
) {
    match notice {
        // Routine: counted in the FDB events, never logged.
        FdbNotice::Learned { .. } => {}
        FdbNotice::Refused {
            mac,
            port,
            per_port,
        } => {
            // A refusal is the ingress port's (a guest flooding a full
            // table gets one per frame): no lookup for it.
            let p: &Port = if port == ingress.id() {
                ingress
            } else {
                match table.get(port) {
                    Some(p) => p,
                    None => return,
                }
            };
            if let Some(suppressed) = p.counters().fdb_refused(now) {
                tracing::warn!(
                    %mac, port = %p.name(), suppressed,
                    "FDB {} is full: forwarding without learning",
                    if per_port { "port limit" } else { "table" }
                );
            }
        }
        FdbNotice::LoopBlocked(b) => blocked(&b, table, now),
        FdbNotice::Moved { mac, from, to } => {
            if let Some(suppressed) = log.allow(now, LOG_INTERVAL) {
                tracing::info!(
                    %mac, from = %name(table, from), to = %name(table, to), suppressed,
                    "address moved to another port"
                );
            }
        }
        FdbNotice::Flapping { mac, from, to } => {
            if let Some(suppressed) = log.allow(now, LOG_INTERVAL) {
                tracing::warn!(
                    %mac, from = %name(table, from), to = %name(table, to), suppressed,
                    "address flapping between ports: a loop, or one MAC on two guests"
                );
            }
        }
    }
}

/// Marks the port blocked (the data path stops flooding to it) and says so.
#[cold]
fn blocked(b: &LoopBlock, table: &PortTable, now: Duration) {
    if let Some(p) = table.get(b.port) {
        p.counters().loop_block(b.until);
    }
    let hold_down_s = b.until.saturating_sub(now).as_secs();
    if b.probe {
        tracing::warn!(
            port = %name(table, b.port), probe_sent_out_of = %name(table, b.home), hold_down_s,
            "loop detected: the switch's loop probe came back through this port; blocking it \
             (frames from and to it are dropped)"
        );
    } else {
        tracing::warn!(
            port = %name(table, b.port), mac = %b.mac, home = %name(table, b.home), hold_down_s,
            "loop detected: this port keeps bringing back frames of an address that lives on \
             another port; blocking it (frames from and to it are dropped)"
        );
    }
}

/// Says a loop block ended.
#[cold]
pub(crate) fn unblocked(b: &LoopBlock, table: &PortTable) {
    tracing::info!(
        port = %name(table, b.port),
        "loop block over: forwarding again (blocked again if the loop is still there)"
    );
}
