//! Loop protection, as on access switches: an address that keeps flapping
//! into a port other than its home means copies of its frames come back
//! through that port (a bridge behind it joins it to another port), and
//! that port is blocked for a hold-down time.

use crate::{MacAddr, PortId};
use std::collections::HashMap;
use std::time::Duration;

/// The window flaps are counted in.
pub const LOOP_WINDOW: Duration = Duration::from_secs(1);

/// Loop protection's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopGuard {
    /// Block ports that close a loop; off: flaps are only counted and
    /// logged.
    pub enabled: bool,
    /// Flaps into one port, of addresses whose home is another port,
    /// within [`LOOP_WINDOW`] that make it blocked.
    pub threshold: u32,
    /// How long a blocked port stays blocked; then it forwards again and
    /// is blocked again if the loop is still there.
    pub hold_down: Duration,
}

impl Default for LoopGuard {
    /// On: 10 flaps in a second, 60 s hold-down. A loop makes hundreds of
    /// flaps a second, a guest moving between hosts or two guests that
    /// share a MAC by mistake a few.
    fn default() -> Self {
        LoopGuard {
            enabled: true,
            threshold: 10,
            hold_down: Duration::from_secs(60),
        }
    }
}

impl LoopGuard {
    /// Settings from their parts; a zero threshold is taken as 1.
    pub fn new(enabled: bool, threshold: u32, hold_down: Duration) -> LoopGuard {
        LoopGuard {
            enabled,
            threshold: threshold.max(1),
            hold_down,
        }
    }

    /// Loop protection off.
    pub fn off() -> LoopGuard {
        LoopGuard {
            enabled: false,
            ..LoopGuard::default()
        }
    }
}

/// Why and until when a port is blocked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopBlock {
    /// The blocked port.
    pub port: PortId,
    /// The address whose flapping closed it.
    pub mac: MacAddr,
    /// That address's home port.
    pub home: PortId,
    /// When the block began (switch clock).
    pub since: Duration,
    /// When it ends (switch clock).
    pub until: Duration,
}

/// Flap counts and blocks per port.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loops {
    /// (flaps in the current window, the window's start) per port.
    flaps: HashMap<PortId, (u32, Duration)>,
    blocked: HashMap<PortId, LoopBlock>,
}

impl Loops {
    /// True when `port` is blocked at `now`. Costs one branch while no
    /// port is blocked.
    #[inline]
    pub(crate) fn is_blocked(&self, port: PortId, now: Duration) -> bool {
        !self.blocked.is_empty() && self.blocked.get(&port).is_some_and(|b| now < b.until)
    }

    /// Counts a flap of `mac` into `port` (its home is `home`); returns
    /// the block when this flap makes the port blocked.
    pub(crate) fn flap(
        &mut self,
        guard: &LoopGuard,
        (mac, home): (MacAddr, PortId),
        port: PortId,
        now: Duration,
    ) -> Option<LoopBlock> {
        if !guard.enabled || port == home || self.is_blocked(port, now) {
            return None;
        }
        let (count, start) = self.flaps.entry(port).or_insert((0, now));
        if now.saturating_sub(*start) >= LOOP_WINDOW {
            (*count, *start) = (0, now);
        }
        *count += 1;
        if *count < guard.threshold {
            return None;
        }
        self.flaps.remove(&port);
        let block = LoopBlock {
            port,
            mac,
            home,
            since: now,
            until: now + guard.hold_down,
        };
        self.blocked.insert(port, block);
        Some(block)
    }

    /// Ends the blocks whose hold-down is over; returns them.
    pub(crate) fn expire(&mut self, now: Duration) -> Vec<LoopBlock> {
        let mut ended = Vec::new();
        self.blocked.retain(|_, b| {
            let keep = now < b.until;
            if !keep {
                ended.push(*b);
            }
            keep
        });
        // Counts from an old window mean nothing.
        self.flaps
            .retain(|_, (_, start)| now.saturating_sub(*start) < LOOP_WINDOW);
        ended
    }

    /// Ends every block at once (loop protection turned off).
    pub(crate) fn clear(&mut self) {
        self.blocked.clear();
        self.flaps.clear();
    }

    /// Forgets a port that is gone.
    pub(crate) fn remove_port(&mut self, port: PortId) {
        self.flaps.remove(&port);
        self.blocked.remove(&port);
    }

    /// The blocks in force at `now`, by port.
    pub(crate) fn blocks(&self, now: Duration) -> Vec<LoopBlock> {
        let mut v: Vec<LoopBlock> = self
            .blocked
            .values()
            .filter(|b| now < b.until)
            .copied()
            .collect();
        v.sort_by_key(|b| b.port);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: PortId = PortId(1);
    const A: PortId = PortId(2);
    const B: PortId = PortId(3);
    const M: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn the_threshold_blocks_the_port_not_the_home() {
        let g = LoopGuard::new(true, 3, Duration::from_secs(5));
        let mut l = Loops::default();
        assert_eq!(l.flap(&g, (M, HOME), HOME, ms(0)), None, "home never");
        assert_eq!(l.flap(&g, (M, HOME), A, ms(1)), None);
        assert_eq!(l.flap(&g, (M, HOME), A, ms(2)), None);
        let b = l.flap(&g, (M, HOME), A, ms(3)).expect("blocked");
        assert_eq!((b.port, b.home, b.until), (A, HOME, ms(5003)));
        assert!(l.is_blocked(A, ms(5002)) && !l.is_blocked(B, ms(10)));
        assert!(!l.is_blocked(A, ms(5003)));
        assert_eq!(l.expire(ms(5003)).len(), 1);
        assert!(l.blocks(ms(5003)).is_empty());
    }

    #[test]
    fn flaps_spread_over_windows_do_not_add_up() {
        let g = LoopGuard::new(true, 3, Duration::from_secs(5));
        let mut l = Loops::default();
        for t in 0..10 {
            assert_eq!(l.flap(&g, (M, HOME), A, ms(t * 600)), None);
        }
    }

    #[test]
    fn off_never_blocks() {
        let mut l = Loops::default();
        for t in 0..100 {
            assert_eq!(l.flap(&LoopGuard::off(), (M, HOME), A, ms(t)), None);
        }
    }
}
