//! Periodic ticks for housekeeping (FDB aging, the control socket's file
//! check, a NIC port's upkeep) that arm no timer on the async runtime.
//!
//! tokio's runtime sleeps in `epoll_wait` with the time to its next timer as
//! the timeout. One periodic `tokio::time::interval` therefore makes every
//! sleep of the data path arm a high-resolution timer and every wake-up
//! cancel it. On a virtual machine programming that timer traps to the
//! hypervisor: a C relay between two unix datagram sockets on this project's
//! 2-core VM gave a ping-pong p50 of 48 µs with a 400 ms `epoll_wait`
//! timeout against 32 µs with none (median of 12 alternating runs each),
//! and vde_switch sleeps without a timeout. So the ticks come from one plain
//! thread, and an idle switch sleeps with no timer armed.

use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::watch;

/// The ticker thread's period, and so the resolution of every [`Ticker`].
pub const TICK: Duration = Duration::from_secs(1);

/// The count of [`TICK`]s since the ticker thread started; `None` when the
/// thread could not be started.
fn clock() -> Option<watch::Receiver<u64>> {
    static CLOCK: OnceLock<Option<watch::Receiver<u64>>> = OnceLock::new();
    CLOCK
        .get_or_init(|| {
            let (tx, rx) = watch::channel(0u64);
            let spawned = std::thread::Builder::new()
                .name("ticker".into())
                .spawn(move || loop {
                    std::thread::sleep(TICK);
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                });
            match spawned {
                Ok(_) => Some(rx),
                Err(e) => {
                    tracing::warn!(
                        "cannot start the ticker thread ({e}): housekeeping falls back to the \
                         runtime's timers, which adds latency to every frame on a VM"
                    );
                    None
                }
            }
        })
        .clone()
}

/// A periodic tick, like `tokio::time::interval` with
/// `MissedTickBehavior::Delay`, but counted by the ticker thread.
#[derive(Debug)]
pub struct Ticker(Source);

#[derive(Debug)]
enum Source {
    Thread {
        ticks: watch::Receiver<u64>,
        every: u64,
        next: u64,
    },
    /// The ticker thread could not be started.
    Runtime(tokio::time::Interval),
}

impl Ticker {
    /// Ticks every `period`, rounded up to whole [`TICK`]s (at least one).
    /// The first tick comes one period from now (the first period may be up
    /// to one [`TICK`] short). Must be called inside a tokio runtime.
    pub fn every(period: Duration) -> Ticker {
        let every = period.as_nanos().div_ceil(TICK.as_nanos()).max(1);
        let every = u64::try_from(every).unwrap_or(u64::MAX);
        match clock() {
            Some(mut ticks) => {
                let now = *ticks.borrow_and_update();
                Ticker(Source::Thread {
                    ticks,
                    every,
                    next: now.saturating_add(every),
                })
            }
            None => {
                let mut i = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                Ticker(Source::Runtime(i))
            }
        }
    }

    /// Waits for the next tick. Ticks missed while the caller was busy are
    /// not made up: the next one comes a whole period after this one.
    pub async fn tick(&mut self) {
        match &mut self.0 {
            Source::Runtime(i) => {
                i.tick().await;
            }
            Source::Thread { ticks, every, next } => loop {
                let now = *ticks.borrow_and_update();
                if now >= *next {
                    *next = now.saturating_add(*every);
                    return;
                }
                if ticks.changed().await.is_err() {
                    // The ticker thread never drops its sender; should it
                    // ever, do not spin: wait on the runtime's timer.
                    tokio::time::sleep(TICK).await;
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn ticks_once_a_period_and_not_before() {
        let start = Instant::now();
        let mut t = Ticker::every(Duration::from_millis(1500));
        t.tick().await;
        let first = start.elapsed();
        // Rounded up to 2 ticks; the first may be up to one tick short.
        assert!(first >= Duration::from_millis(900), "{first:?}");
        assert!(first <= Duration::from_millis(2500), "{first:?}");
        t.tick().await;
        let second = start.elapsed() - first;
        assert!(
            second >= Duration::from_millis(1900) && second <= Duration::from_millis(2500),
            "a whole period between ticks: {second:?}"
        );
    }

    #[tokio::test]
    async fn a_busy_caller_gets_no_burst_of_missed_ticks() {
        let mut t = Ticker::every(Duration::from_millis(10));
        std::thread::sleep(Duration::from_millis(2100));
        t.tick().await;
        let start = Instant::now();
        t.tick().await;
        let gap = start.elapsed();
        assert!(
            gap >= Duration::from_millis(500),
            "missed ticks made up: {gap:?}"
        );
    }
}
