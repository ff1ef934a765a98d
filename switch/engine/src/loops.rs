//! Loop protection, as on access switches: an address that keeps flapping
//! into a port other than its home means copies of its frames come back
//! through that port (a bridge behind it joins it to another port), and
//! that port is blocked for a hold-down time.

use crate::{MacAddr, PortId};
use std::collections::HashMap;
use std::time::Duration;

/// The window flaps are counted in.
pub const LOOP_WINDOW: Duration = Duration::from_secs(1);

/// Where loop probes go: a locally administered group address.
pub const PROBE_DESTINATION: MacAddr = MacAddr([0x03, 0x53, 0x59, 0x4c, 0x50, 0x00]);
/// The probes' EtherType: IEEE 802 local experimental EtherType 1.
pub const PROBE_ETHERTYPE: u16 = 0x88b5;
/// What follows the EtherType in a probe, before the port id.
const PROBE_MAGIC: &[u8; 4] = b"SYLP";
/// A probe's length: the 60-byte Ethernet minimum.
pub const PROBE_LEN: usize = 60;

/// A loop probe sent out of `out` with the switch's own source address.
pub fn probe(own: MacAddr, out: PortId) -> [u8; PROBE_LEN] {
    let mut f = [0u8; PROBE_LEN];
    f[0..6].copy_from_slice(&PROBE_DESTINATION.0);
    f[6..12].copy_from_slice(&own.0);
    f[12..14].copy_from_slice(&PROBE_ETHERTYPE.to_be_bytes());
    f[14..18].copy_from_slice(PROBE_MAGIC);
    f[18..22].copy_from_slice(&out.0.to_be_bytes());
    f
}

/// The port a returned probe was sent out of; `None` when `frame` is no
/// probe (one 802.1Q tag a bridge may have added is skipped).
pub fn probe_port(frame: &[u8]) -> Option<PortId> {
    let at = match frame.get(12..14)? {
        [0x81, 0x00] => 16,
        _ => 12,
    };
    let body = frame.get(at..at + 10)?;
    if body[0..2] != PROBE_ETHERTYPE.to_be_bytes() || &body[2..6] != PROBE_MAGIC {
        return None;
    }
    Some(PortId(u32::from_be_bytes([
        body[6], body[7], body[8], body[9],
    ])))
}

/// The switch's own address, for its probes: locally administered,
/// derived from the hash seed so two switches on one LAN differ.
pub fn own_address(seed: [u64; 2]) -> MacAddr {
    let m = (seed[0] ^ seed[1].rotate_left(17) ^ 0x5359_4c50_5359_4c50).to_be_bytes();
    MacAddr([(m[2] & 0xfc) | 0x02, m[3], m[4], m[5], m[6], m[7]])
}

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
    /// The address whose flapping closed it, or the switch's own for a
    /// returned probe.
    pub mac: MacAddr,
    /// That address's home port, or the port the probe left by.
    pub home: PortId,
    /// True when the switch's own probe came back; false for flapping.
    pub probe: bool,
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
        self.block(guard, (mac, home), port, now, false)
    }

    /// A probe sent out of `sent` came back on `port`: blocks `port`,
    /// unless the loop is already cut at `sent` (both ends of one loop
    /// see each other's probes; one block is enough).
    pub(crate) fn probe_returned(
        &mut self,
        guard: &LoopGuard,
        (own, sent): (MacAddr, PortId),
        port: PortId,
        now: Duration,
    ) -> Option<LoopBlock> {
        if !guard.enabled || self.is_blocked(port, now) || self.is_blocked(sent, now) {
            return None;
        }
        self.block(guard, (own, sent), port, now, true)
    }

    fn block(
        &mut self,
        guard: &LoopGuard,
        (mac, home): (MacAddr, PortId),
        port: PortId,
        now: Duration,
        probe: bool,
    ) -> Option<LoopBlock> {
        self.flaps.remove(&port);
        let block = LoopBlock {
            port,
            mac,
            home,
            probe,
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
    fn a_probe_reads_back_and_blocks_one_end_of_the_loop() {
        let own = own_address([1, 2]);
        assert_eq!(own.0[0] & 3, 2, "local unicast");
        let p = probe(own, A);
        assert_eq!(probe_port(&p), Some(A));
        assert_eq!(probe_port(&p[..20]), None);
        let mut tagged = p.to_vec();
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x0a]);
        assert_eq!(probe_port(&tagged), Some(A));
        let g = LoopGuard::default();
        let mut l = Loops::default();
        let b = l.probe_returned(&g, (own, A), B, ms(0)).expect("blocked");
        assert_eq!((b.port, b.home), (B, A));
        assert_eq!(
            l.probe_returned(&g, (own, B), A, ms(1)),
            None,
            "cut already"
        );
        assert!(!l.is_blocked(A, ms(1)));
    }

    #[test]
    fn off_never_blocks() {
        let mut l = Loops::default();
        for t in 0..100 {
            assert_eq!(l.flap(&LoopGuard::off(), (M, HOME), A, ms(t)), None);
        }
    }
}
