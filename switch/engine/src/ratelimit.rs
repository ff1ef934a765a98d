//! Log at most once a minute per place, counting what was suppressed, so a
//! guest spraying bad frames cannot flood the journal.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The default interval between two lines from one limiter.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// One rate-limited log site (e.g. one port and drop reason).
#[derive(Debug, Default)]
pub struct LogLimiter {
    /// Milliseconds (switch clock) of the last line, plus one; 0 = never.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimiter {
    /// Returns `Some(suppressed_since_last_line)` when a line may be logged
    /// at `now`, `None` when it must be suppressed.
    pub fn allow(&self, now: Duration, interval: Duration) -> Option<u64> {
        let now_ms = now.as_millis() as u64 + 1;
        let last = self.last.load(Relaxed);
        if last != 0 && now_ms.saturating_sub(last) < interval.as_millis() as u64 {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now_ms, Relaxed, Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_with_the_suppressed_count() {
        let l = LogLimiter::default();
        let s = |x| Duration::from_secs(x);
        assert_eq!(l.allow(s(0), LOG_INTERVAL), Some(0));
        assert_eq!(l.allow(s(1), LOG_INTERVAL), None);
        assert_eq!(l.allow(s(59), LOG_INTERVAL), None);
        assert_eq!(l.allow(s(61), LOG_INTERVAL), Some(2));
        assert_eq!(l.allow(s(62), LOG_INTERVAL), None);
    }
}
