//! Connections on a control socket that have not sent their request yet,
//! and the count of clients refused, by reason.
//!
//! A connection that says nothing holds a descriptor and a task. A real
//! client sends its request the moment it connects (its bytes are usually
//! there before the connection is accepted), so one still waiting after
//! [`CROWDED_AFTER`] is idle or stuck. Only when the table is full
//! ([`MAX_PENDING`]) or the process is out of descriptors is the longest
//! waiting one closed to make room; otherwise a client has
//! [`REQUEST_TIMEOUT`]. A flood of silent connections thus costs at most
//! [`MAX_PENDING`] descriptors per control socket, and drains at
//! `MAX_PENDING / CROWDED_AFTER` (512) connections a second, so a real
//! client queued behind a thousand silent ones gets in within about two
//! seconds.

use crate::switch::Switch;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Connections per control socket that may wait for their request at once.
pub const MAX_PENDING: usize = 128;
/// A connection waiting this long may be closed to make room for another
/// (ample: a real client's request arrives within a millisecond or two).
pub const CROWDED_AFTER: Duration = Duration::from_millis(250);
/// How long a connected client may stay silent before it is closed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a client on a control socket got no port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// It closed the connection without sending anything (a probe).
    HungUp,
    /// It sent nothing within [`REQUEST_TIMEOUT`].
    Silent,
    /// Closed after [`CROWDED_AFTER`] of silence to make room for another.
    Crowded,
    /// Too short, truncated, or an unusable client address.
    Malformed,
    /// No 0xfeedface at the start.
    BadMagic,
    /// A protocol version other than 1 and 3.
    BadVersion,
    /// A request type other than new port and port 0.
    BadType,
    /// It named a socket that belongs to another user.
    NotPermitted,
    /// The port number it asked for is taken or out of range, or all are.
    PortUnavailable,
    /// Its datagram socket cannot be reached (missing, not a socket).
    Unreachable,
    /// The switch was out of file descriptors.
    NoDescriptors,
}

impl Refusal {
    /// Every reason, in the order of [`Refusal::index`].
    pub const ALL: [Refusal; 11] = [
        Refusal::HungUp,
        Refusal::Silent,
        Refusal::Crowded,
        Refusal::Malformed,
        Refusal::BadMagic,
        Refusal::BadVersion,
        Refusal::BadType,
        Refusal::NotPermitted,
        Refusal::PortUnavailable,
        Refusal::Unreachable,
        Refusal::NoDescriptors,
    ];

    /// A dense index into per-reason arrays.
    pub fn index(self) -> usize {
        match self {
            Refusal::HungUp => 0,
            Refusal::Silent => 1,
            Refusal::Crowded => 2,
            Refusal::Malformed => 3,
            Refusal::BadMagic => 4,
            Refusal::BadVersion => 5,
            Refusal::BadType => 6,
            Refusal::NotPermitted => 7,
            Refusal::PortUnavailable => 8,
            Refusal::Unreachable => 9,
            Refusal::NoDescriptors => 10,
        }
    }

    /// The snake_case label used in `ctl stats` and the metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::HungUp => "hung_up",
            Refusal::Silent => "silent",
            Refusal::Crowded => "crowded",
            Refusal::Malformed => "malformed",
            Refusal::BadMagic => "bad_magic",
            Refusal::BadVersion => "bad_version",
            Refusal::BadType => "bad_type",
            Refusal::NotPermitted => "not_permitted",
            Refusal::PortUnavailable => "port_unavailable",
            Refusal::Unreachable => "unreachable",
            Refusal::NoDescriptors => "no_descriptors",
        }
    }

    /// The reason for an I/O error met while setting a client up.
    pub(crate) fn of_io(e: &std::io::Error) -> Refusal {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                Refusal::NoDescriptors
            }
            _ => Refusal::Unreachable,
        }
    }
}

/// Refusals since start and connections waiting now, every control socket
/// of one switch together: the switch keeps them ([`Switch::shared`]), so
/// refusals survive a reload that replaces a socket, and two switches in
/// one process count apart.
#[derive(Debug, Default)]
pub struct HandshakeCounters {
    refused: [AtomicU64; Refusal::ALL.len()],
    waiting: AtomicU64,
}

impl HandshakeCounters {
    /// Counts one refused client.
    pub(crate) fn count(&self, reason: Refusal) {
        self.refused[reason.index()].fetch_add(1, Relaxed);
    }

    /// Clients refused since start, by reason (every reason, zeros
    /// included).
    pub fn refusals(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| (*r, self.refused[r.index()].load(Relaxed)))
            .collect()
    }

    /// Connections still waiting for their request.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Relaxed)
    }
}

/// Counts one client refused by one of `switch`'s control sockets.
pub(crate) fn count(switch: &Switch, reason: Refusal) {
    switch.shared::<HandshakeCounters>().count(reason);
}

/// Clients `switch`'s control sockets refused since start, by reason
/// (every reason, zeros included).
pub fn refusals(switch: &Switch) -> Vec<(Refusal, u64)> {
    switch.shared::<HandshakeCounters>().refusals()
}

/// Connections on `switch`'s control sockets still waiting for their
/// request.
pub fn waiting(switch: &Switch) -> u64 {
    switch.shared::<HandshakeCounters>().waiting()
}

/// What [`Waiting::make_room`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Room {
    /// There was room already.
    Free,
    /// The longest-waiting connection was told to close.
    Evicted,
    /// Full of connections younger than the grace period: the oldest may
    /// be closed at this instant.
    NotBefore(Instant),
}

/// The connections of one control socket waiting for their request,
/// oldest first.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    next: u64,
    entries: BTreeMap<u64, (Instant, Arc<Notify>)>,
    /// The switch's gauge, once the socket is served.
    counters: Option<Arc<HandshakeCounters>>,
}

impl Waiting {
    /// Counts this socket's waiting connections in the switch's gauge.
    pub(crate) fn attach(&mut self, counters: Arc<HandshakeCounters>) {
        let n = self.entries.len() as u64;
        self.left(n);
        self.counters = Some(counters);
        self.arrived(n);
    }

    /// Adds `n` arrivals to the switch's gauge.
    fn arrived(&self, n: u64) {
        if let Some(c) = &self.counters {
            c.waiting.fetch_add(n, Relaxed);
        }
    }

    /// Takes `n` departures from the switch's gauge.
    fn left(&self, n: u64) {
        if let Some(c) = &self.counters {
            c.waiting.fetch_sub(n, Relaxed);
        }
    }

    /// Registers a connection accepted at `now`; returns its key and the
    /// signal that tells it to close.
    pub(crate) fn enter(&mut self, now: Instant) -> (u64, Arc<Notify>) {
        let key = self.next;
        self.next += 1;
        let evict = Arc::new(Notify::new());
        self.entries.insert(key, (now, evict.clone()));
        self.arrived(1);
        (key, evict)
    }

    /// Forgets a connection (its request arrived, or it was closed).
    pub(crate) fn leave(&mut self, key: u64) {
        if self.entries.remove(&key).is_some() {
            self.left(1);
        }
    }

    /// How many are waiting.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Makes room for one more when `len() >= limit`: closes the
    /// longest-waiting connection if it has waited at least `grace`.
    pub(crate) fn make_room(&mut self, now: Instant, limit: usize, grace: Duration) -> Room {
        if self.entries.len() < limit {
            return Room::Free;
        }
        self.evict_oldest(now, grace)
    }

    /// Closes the longest-waiting connection if it has waited at least
    /// `grace` (used when the process runs out of descriptors, whatever
    /// the count).
    pub(crate) fn evict_oldest(&mut self, now: Instant, grace: Duration) -> Room {
        let Some((&key, (since, _))) = self.entries.iter().next() else {
            return Room::Free;
        };
        let ripe = *since + grace;
        if now < ripe {
            return Room::NotBefore(ripe);
        }
        if let Some((_, evict)) = self.entries.remove(&key) {
            self.left(1);
            // A stored permit: the task sees it even if it is not waiting yet.
            evict.notify_one();
        }
        Room::Evicted
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.left(self.entries.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_indices_agree() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(!r.as_str().is_empty());
        }
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(Refusal::of_io(&emfile), Refusal::NoDescriptors);
        let refused = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(Refusal::of_io(&refused), Refusal::Unreachable);
    }

    #[test]
    fn room_is_made_only_by_closing_the_oldest_after_the_grace() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(1);
        assert!(CROWDED_AFTER < REQUEST_TIMEOUT);
        let mut w = Waiting::default();
        let (_, first) = w.enter(t0);
        let (second_key, _) = w.enter(t0 + Duration::from_millis(300));
        assert_eq!(w.make_room(t0, 3, grace), Room::Free);
        // Full of young connections: wait until the oldest is ripe.
        assert_eq!(
            w.make_room(t0 + Duration::from_millis(500), 2, grace),
            Room::NotBefore(t0 + grace)
        );
        assert_eq!(w.len(), 2);
        // Ripe: the oldest is told to close, and only it.
        assert_eq!(w.make_room(t0 + grace, 2, grace), Room::Evicted);
        assert_eq!(w.len(), 1);
        let told = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
            .block_on(async {
                tokio::time::timeout(Duration::from_millis(100), first.notified())
                    .await
                    .is_ok()
            });
        assert!(told, "the evicted connection was not told");
        // The next oldest is younger than the grace.
        assert_eq!(
            w.evict_oldest(t0 + grace, grace),
            Room::NotBefore(t0 + Duration::from_millis(1300))
        );
        w.leave(second_key);
        w.leave(second_key);
        assert_eq!(w.len(), 0);
        assert_eq!(w.evict_oldest(t0, grace), Room::Free);
    }

    #[test]
    fn each_switch_counts_its_own_refusals_and_waiting_connections() {
        let (a, b) = (
            Switch::new(crate::EngineConfig::default()),
            Switch::new(crate::EngineConfig::default()),
        );
        count(&a, Refusal::BadMagic);
        count(&a, Refusal::BadMagic);
        let n = |s: &Switch| {
            refusals(s)
                .into_iter()
                .find(|(r, _)| *r == Refusal::BadMagic)
                .map(|(_, n)| n)
        };
        assert_eq!((n(&a), n(&b)), (Some(2), Some(0)));
        let mut w = Waiting::default();
        let t0 = Instant::now();
        let (first, _) = w.enter(t0);
        w.attach(a.shared());
        w.enter(t0);
        assert_eq!((waiting(&a), waiting(&b)), (2, 0));
        w.leave(first);
        assert_eq!(waiting(&a), 1);
        drop(w);
        assert_eq!(waiting(&a), 0);
    }
}
