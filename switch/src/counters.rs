//! Per-port counters: plain atomics, read by metrics and `ctl` without
//! touching the data path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use switchyard_engine::ratelimit::{LogLimiter, LOG_INTERVAL};
pub use switchyard_engine::DropReason;

/// Frames and bytes in and out of one port, and drops by reason.
#[derive(Debug, Default)]
pub struct PortCounters {
    rx_frames: AtomicU64,
    rx_bytes: AtomicU64,
    tx_frames: AtomicU64,
    tx_bytes: AtomicU64,
    tx_held: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
    fdb_refused: AtomicU64,
    loop_blocks: AtomicU64,
    /// Until when (switch clock, ms) loop protection blocks the port;
    /// 0: not blocked. Read per flood, so the data path skips a blocked
    /// port without asking the engine.
    loop_blocked_until_ms: AtomicU64,
    refused_log: LogLimiter,
}

/// A copy of a port's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Frames received from the port's peer.
    pub rx_frames: u64,
    /// Bytes received from the port's peer.
    pub rx_bytes: u64,
    /// Frames sent to the port's peer.
    pub tx_frames: u64,
    /// Bytes sent to the port's peer.
    pub tx_bytes: u64,
    /// Frames the peer's full queue made the switch hold (pausing their
    /// sender) instead of dropping; each is then sent or counted a drop.
    pub tx_held: u64,
    /// Drops, indexed by [`DropReason::index`].
    pub drops: [u64; DropReason::ALL.len()],
    /// Source addresses not learned because a FDB limit was reached.
    pub fdb_refused: u64,
    /// Times loop protection blocked the port.
    pub loop_blocks: u64,
}

impl CounterSnapshot {
    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }
}

impl PortCounters {
    /// Counts a frame received from the peer.
    pub fn received(&self, bytes: usize) {
        self.rx_frames.fetch_add(1, Relaxed);
        self.rx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts a frame sent to the peer.
    pub fn sent(&self, bytes: usize) {
        self.tx_frames.fetch_add(1, Relaxed);
        self.tx_bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Counts frames held for a full peer (backpressure).
    pub fn held(&self, frames: usize) {
        self.tx_held.fetch_add(frames as u64, Relaxed);
    }

    /// Counts a drop.
    pub fn dropped(&self, reason: DropReason) {
        self.drops[reason.index()].fetch_add(1, Relaxed);
    }

    /// Counts `n` drops for one reason at once.
    pub fn dropped_many(&self, reason: DropReason, n: usize) {
        self.drops[reason.index()].fetch_add(n as u64, Relaxed);
    }

    /// Counts a source address the FDB refused; true when that is worth a
    /// log line (at most one a minute per port).
    pub fn fdb_refused(&self, now: Duration) -> Option<u64> {
        self.fdb_refused.fetch_add(1, Relaxed);
        self.refused_log.allow(now, LOG_INTERVAL)
    }

    /// Marks the port blocked by loop protection until `until` (switch
    /// clock) and counts the block.
    pub fn loop_block(&self, until: Duration) {
        self.loop_blocks.fetch_add(1, Relaxed);
        let ms = u64::try_from(until.as_millis()).unwrap_or(u64::MAX);
        self.loop_blocked_until_ms.store(ms.max(1), Relaxed);
    }

    /// Ends the port's loop block now (loop protection turned off).
    pub fn loop_unblock(&self) {
        self.loop_blocked_until_ms.store(0, Relaxed);
    }

    /// Time left of the port's loop block at `now`; `None`: not blocked.
    #[inline]
    pub fn loop_blocked_for(&self, now: Duration) -> Option<Duration> {
        let until = self.loop_blocked_until_ms.load(Relaxed);
        if until == 0 {
            return None;
        }
        let until = Duration::from_millis(until);
        (now < until).then(|| until - now)
    }

    /// Adds another port's counts (a removed port's, kept switch-wide).
    pub fn absorb(&self, s: &CounterSnapshot) {
        self.rx_frames.fetch_add(s.rx_frames, Relaxed);
        self.rx_bytes.fetch_add(s.rx_bytes, Relaxed);
        self.tx_frames.fetch_add(s.tx_frames, Relaxed);
        self.tx_bytes.fetch_add(s.tx_bytes, Relaxed);
        self.tx_held.fetch_add(s.tx_held, Relaxed);
        self.fdb_refused.fetch_add(s.fdb_refused, Relaxed);
        self.loop_blocks.fetch_add(s.loop_blocks, Relaxed);
        for (a, d) in self.drops.iter().zip(s.drops.iter()) {
            a.fetch_add(*d, Relaxed);
        }
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut drops = [0; DropReason::ALL.len()];
        for (d, a) in drops.iter_mut().zip(self.drops.iter()) {
            *d = a.load(Relaxed);
        }
        CounterSnapshot {
            rx_frames: self.rx_frames.load(Relaxed),
            rx_bytes: self.rx_bytes.load(Relaxed),
            tx_frames: self.tx_frames.load(Relaxed),
            tx_bytes: self.tx_bytes.load(Relaxed),
            tx_held: self.tx_held.load(Relaxed),
            drops,
            fdb_refused: self.fdb_refused.load(Relaxed),
            loop_blocks: self.loop_blocks.load(Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_add_up() {
        let c = PortCounters::default();
        c.received(60);
        c.received(40);
        c.sent(1514);
        c.dropped(DropReason::EgressFull);
        let s = c.snapshot();
        assert_eq!(
            (s.rx_frames, s.rx_bytes, s.tx_frames, s.tx_bytes),
            (2, 100, 1, 1514)
        );
        assert_eq!(s.drops(DropReason::EgressFull), 1);
        assert_eq!(s.drops(DropReason::TooShort), 0);
    }

    #[test]
    fn a_loop_block_ends_on_time() {
        let c = PortCounters::default();
        let ms = Duration::from_millis;
        assert_eq!(c.loop_blocked_for(ms(0)), None);
        c.loop_block(ms(5000));
        assert_eq!(c.loop_blocked_for(ms(1000)), Some(ms(4000)));
        assert_eq!(c.loop_blocked_for(ms(5000)), None);
        assert_eq!(c.snapshot().loop_blocks, 1);
    }

    #[test]
    fn refusals_log_once_a_minute() {
        let c = PortCounters::default();
        let s = Duration::from_secs;
        assert_eq!(c.fdb_refused(s(0)), Some(0));
        assert_eq!(c.fdb_refused(s(1)), None);
        assert_eq!(c.fdb_refused(s(61)), Some(1));
        assert_eq!(c.snapshot().fdb_refused, 3);
    }
}
