//! Backpressure toward a sender whose unicast destination is full.
//!
//! A guest whose socket is not connected back to the switch (UML's daemon
//! transport) has a receive queue of `net.unix.max_dgram_qlen` datagrams,
//! 10 by default. Tail-dropping what does not fit loses most of a burst, so
//! unicast frames that such a peer refuses are held by the receive loop of
//! the port they came from instead: that loop stops reading until the peer
//! takes them. The sender's own socket then fills and its `sendto` waits,
//! as it would behind uml_switch, and nothing is lost. Only unicast is held
//! (a flood copy for a full port is dropped: one slow guest must not slow
//! every broadcast), only toward transports that can say when they are
//! writable again, and only for a bounded time: a peer that takes none of
//! its held frames for [`HOLD_LIMIT`], or has not taken them all after
//! [`HOLD_MAX`], is marked stalled, and for [`STALL_BACKOFF`] what it
//! cannot take is dropped without waiting. A hung guest, or one that reads
//! slowly on purpose, can so pause a sender (and the sender's traffic to
//! everyone else, which waits behind) for at most 50 ms a second, while a
//! guest that keeps reading is not given up on just because the host is
//! busy and it is scheduled late.

use crate::counters::DropReason;
use crate::port::{Port, PortId};
use crate::sys::MMSG_BATCH;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// How long a sender waits for a destination that takes none of its held
/// frames before that destination is marked stalled.
pub const HOLD_LIMIT: Duration = Duration::from_millis(20);

/// The longest a sender waits for one destination, even one that keeps
/// taking frames slowly, before that destination is marked stalled.
pub const HOLD_MAX: Duration = Duration::from_millis(50);

/// How long a stalled peer gets tail drop instead of backpressure.
pub const STALL_BACKOFF: Duration = Duration::from_secs(1);

/// Held bytes a receive loop keeps room for between bursts.
const KEEP_BYTES: usize = 64 * 1024;

/// Frames a receive loop holds for full destinations: their bytes, in
/// arrival order, and the ports they are for. Reused batch after batch, so
/// holding allocates only while it grows.
#[derive(Default)]
pub struct Held {
    bytes: Vec<u8>,
    /// (index into `ports`, bytes of the frame)
    frames: Vec<(usize, Range<usize>)>,
    ports: Vec<Arc<Port>>,
    /// The port the held frames came in on (a receive loop reads one).
    ingress: Option<PortId>,
}

impl Held {
    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// True when frames for `port` are held: later frames for it must
    /// queue behind them, never overtake them.
    pub fn holds_for(&self, port: &Port) -> bool {
        self.ports.iter().any(|p| p.id() == port.id())
    }

    /// Holds copies of `frames`, which came in on `ingress`, for `port`,
    /// after any already held for it.
    pub(crate) fn push(&mut self, port: &Arc<Port>, ingress: PortId, frames: &[&[u8]]) {
        self.ingress = Some(ingress);
        let slot = match self.ports.iter().position(|p| p.id() == port.id()) {
            Some(i) => i,
            None => {
                self.ports.push(port.clone());
                self.ports.len() - 1
            }
        };
        for f in frames {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(f);
            self.frames.push((slot, start..self.bytes.len()));
        }
        port.counters().held(frames.len());
    }

    /// Delivers every held frame, waiting for each destination to become
    /// writable (at most [`HOLD_LIMIT`] each), then forgets them. `now`
    /// reads the switch's clock for drop accounting.
    pub async fn release(&mut self, now: impl Fn() -> Duration) {
        let Some(ingress) = self.ingress else { return };
        for slot in 0..self.ports.len() {
            let mut batch: [&[u8]; MMSG_BATCH] = [&[]; MMSG_BATCH];
            let mut len = 0;
            for (_, r) in self.frames.iter().filter(|(s, _)| *s == slot) {
                batch[len] = &self.bytes[r.clone()];
                len += 1;
                if len == MMSG_BATCH {
                    deliver(&self.ports[slot], ingress, &batch[..len], &now).await;
                    len = 0;
                }
            }
            if len > 0 {
                deliver(&self.ports[slot], ingress, &batch[..len], &now).await;
            }
        }
        self.clear();
    }

    /// [`Held::release`], unless `ingress` (the port the frames came from)
    /// closes first: then what is left is dropped and `false` returned, and
    /// its receive loop should end.
    pub async fn release_unless_closed(
        &mut self,
        ingress: &Port,
        now: impl Fn() -> Duration,
    ) -> bool {
        tokio::select! {
            _ = ingress.closed() => {
                self.abandon(now());
                false
            }
            _ = self.release(&now) => true,
        }
    }

    /// Drops what is held, counted as [`DropReason::IngressDown`] on each
    /// destination: the port they came from is going away.
    pub(crate) fn abandon(&mut self, now: Duration) {
        for (slot, _) in &self.frames {
            self.ports[*slot].drop_frame(DropReason::IngressDown, now, None);
        }
        self.clear();
    }

    fn clear(&mut self) {
        self.bytes.clear();
        // A burst of jumbo frames may have grown it to megabytes: keep what
        // ordinary bursts need, so a thousand ports stay small.
        self.bytes.shrink_to(KEEP_BYTES);
        self.frames.clear();
        self.ports.clear();
        self.ingress = None;
    }
}

/// Sends `frames` to `port` as it becomes writable; what it still refuses
/// at the deadline ([`HOLD_LIMIT`] without progress, [`HOLD_MAX`] in all)
/// is dropped and the port marked stalled.
async fn deliver(port: &Port, ingress: PortId, frames: &[&[u8]], now: &impl Fn() -> Duration) {
    if !may_hold(port, now()) {
        // Marked stalled while an earlier part of this hold waited.
        for _ in frames {
            port.drop_frame(DropReason::EgressFull, now(), None);
        }
        return;
    }
    let watcher = match writable_watcher(port) {
        Ok(w) => w,
        Err(e) => {
            for _ in frames {
                port.drop_frame(DropReason::EgressFull, now(), Some(&e));
            }
            return;
        }
    };
    let start = tokio::time::Instant::now();
    let mut deadline = start + HOLD_LIMIT;
    let mut rest = frames;
    while !rest.is_empty() {
        if port.is_closing() {
            for _ in rest {
                port.drop_frame(DropReason::EgressGone, now(), None);
            }
            return;
        }
        let mut guard = match tokio::time::timeout_at(deadline, watcher.writable()).await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => {
                for _ in rest {
                    port.drop_frame(DropReason::EgressError, now(), Some(&e));
                }
                return;
            }
            Err(_) => {
                mark_stalled(port, now());
                for _ in rest {
                    port.drop_frame(DropReason::EgressFull, now(), None);
                }
                return;
            }
        };
        let done = port.send_until_full(ingress, rest, now());
        rest = &rest[done..];
        if done > 0 {
            deadline = (tokio::time::Instant::now() + HOLD_LIMIT).min(start + HOLD_MAX);
        }
        if !rest.is_empty() {
            // Only clears readiness older than this guard: a wake-up that
            // came in meanwhile is kept.
            guard.clear_ready();
        }
    }
}

/// True when frames `port`'s peer refuses may be held at `now`: it can
/// say when it is writable again and is not in a stall back-off.
pub(crate) fn may_hold(port: &Port, now: Duration) -> bool {
    now.as_millis() as u64 >= port.hold_again_at() && port.tx().wait_fd().is_some()
}

/// Records that `port`'s peer kept a sender waiting too long: for
/// [`STALL_BACKOFF`], frames it refuses are dropped instead of held, so a
/// guest that reads slowly on purpose can pause its senders for at most
/// [`HOLD_MAX`] in that time.
fn mark_stalled(port: &Port, now: Duration) {
    let again = now + STALL_BACKOFF;
    if let Some(suppressed) = port.set_hold_again_at(again.as_millis() as u64, now) {
        tracing::warn!(
            port = %port.name(), suppressed,
            "peer took no frame for {} ms or kept a sender waiting {} ms: dropping what it cannot take for {} s instead of pausing its senders",
            HOLD_LIMIT.as_millis(),
            HOLD_MAX.as_millis(),
            STALL_BACKOFF.as_secs()
        );
    }
}

/// A second registration of the port's descriptor that reports only
/// writability. It exists only while frames wait: a permanent EPOLLOUT
/// interest would wake the switch each time the peer consumes a frame.
fn writable_watcher(port: &Port) -> std::io::Result<AsyncFd<OwnedFd>> {
    let fd = port
        .tx()
        .wait_fd()
        .ok_or_else(|| std::io::Error::other("this port cannot wait for its peer"))?;
    crate::sys::watch_writable(fd.try_clone_to_owned()?)
}
