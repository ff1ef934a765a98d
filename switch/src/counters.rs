//! Per-port counters: plain atomics, read by metrics and `ctl` without
//! touching the data path.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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

    /// Adds another port's counts (a removed port's, kept switch-wide).
    pub fn absorb(&self, s: &CounterSnapshot) {
        self.rx_frames.fetch_add(s.rx_frames, Relaxed);
        self.rx_bytes.fetch_add(s.rx_bytes, Relaxed);
        self.tx_frames.fetch_add(s.tx_frames, Relaxed);
        self.tx_bytes.fetch_add(s.tx_bytes, Relaxed);
        self.tx_held.fetch_add(s.tx_held, Relaxed);
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
}
