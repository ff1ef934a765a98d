//! Storm control: per-port token buckets for broadcast, multicast and
//! unknown-unicast frames.

use std::time::Duration;

/// Layer-2 protections applied on ingress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Guards {
    /// Drop spanning-tree BPDUs and the other IEEE 802.1D link-local group
    /// frames (01:80:c2:00:00:00 to 0f) a guest sends: a Windows bridge or
    /// a nested bridge inside a guest must not reach the LAN.
    pub bpdu_guard: bool,
    /// Broadcast frames per second one port may send; 0 = no limit.
    pub storm_broadcast: u32,
    /// Multicast frames per second one port may send; 0 = no limit.
    pub storm_multicast: u32,
    /// Unknown-unicast (flooded) frames per second one port may send; 0 =
    /// no limit.
    pub storm_unknown_unicast: u32,
}

impl Guards {
    /// Guards from their parts.
    pub fn new(bpdu_guard: bool, broadcast: u32, multicast: u32, unknown_unicast: u32) -> Guards {
        Guards {
            bpdu_guard,
            storm_broadcast: broadcast,
            storm_multicast: multicast,
            storm_unknown_unicast: unknown_unicast,
        }
    }
}

/// The most frames a port may send back to back before its rate applies.
/// Small on purpose: every flooded frame lands in every guest's queue,
/// and a UML guest's daemon transport queues only 10 datagrams; a
/// bucket holding a full second's budget let a loop deliver it in one
/// burst and overflow them.
pub const STORM_BURST: u32 = 8;

/// A token bucket: up to `min(rate, STORM_BURST)` frames at once, then
/// `rate` frames a second.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Bucket {
    tokens: u32,
    /// The switch time the tokens are counted up to.
    last: Duration,
    primed: bool,
}

impl Bucket {
    /// Takes one token at `now`; false when there is none.
    pub(crate) fn take(&mut self, rate: u32, now: Duration) -> bool {
        if rate == 0 {
            return true;
        }
        let cap = rate.min(STORM_BURST);
        if !self.primed {
            self.primed = true;
            self.tokens = cap;
            self.last = now;
        }
        let elapsed = now.saturating_sub(self.last).as_nanos();
        let refill = elapsed * u128::from(rate) / 1_000_000_000;
        if refill > 0 {
            let tokens = u128::from(self.tokens) + refill;
            if tokens >= u128::from(cap) {
                self.tokens = cap;
                self.last = now;
            } else {
                self.tokens = tokens as u32;
                // Keep the fraction of a token already earned: the rate
                // holds however often frames come.
                let used = refill * 1_000_000_000 / u128::from(rate);
                self.last += Duration::from_nanos(used as u64);
            }
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// Which storm-control bucket a frame counts against.
#[derive(Clone, Copy)]
pub(crate) enum Storm {
    Broadcast = 0,
    Multicast = 1,
    Unknown = 2,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn a_burst_is_small_and_the_rate_holds() {
        let mut b = Bucket::default();
        let passed = (0..100).filter(|_| b.take(500, ms(0))).count();
        assert_eq!(
            passed, STORM_BURST as usize,
            "the burst, not a second's budget"
        );
        // Frames every 1 ms for one second at 500/s: half pass (plus
        // nothing more than what the burst refilled).
        let passed = (1..=1000).filter(|t| b.take(500, ms(*t))).count();
        assert!((499..=501).contains(&passed), "{passed}");
    }

    #[test]
    fn a_low_rate_bursts_at_most_its_rate() {
        let mut b = Bucket::default();
        assert_eq!((0..10).filter(|_| b.take(3, ms(0))).count(), 3);
        assert!(!b.take(3, ms(300)));
        assert!(b.take(3, ms(334)));
    }
}
