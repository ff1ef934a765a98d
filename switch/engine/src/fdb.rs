//! The forwarding database: which port a (MAC, VLAN) was last seen on.
//!
//! Pure data: time comes in as a [`Duration`] on the switch's monotonic
//! clock, so aging is exact and testable.

use crate::MacAddr;
use crate::PortId;
use std::collections::HashMap;
use std::time::Duration;

pub use crate::keyed::HashSeed;
use crate::keyed::Keyed;

/// The per-port limit a switch starts with: room for a guest that routes
/// or bridges a small LAN (a /21 of hosts), while 32 guests are needed
/// to fill the default 65,536-entry table.
pub const DEFAULT_MAX_PER_PORT: usize = 2048;

/// Limits and timers of the FDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct FdbConfig {
    /// An entry not refreshed for this long is forgotten (default 300 s).
    pub aging: Duration,
    /// The most entries the whole table holds (default 65 536).
    pub max_entries: usize,
    /// The most entries one port may hold (default
    /// [`DEFAULT_MAX_PER_PORT`]); `None` for no per-port limit.
    pub max_entries_per_port: Option<usize>,
}

impl Default for FdbConfig {
    fn default() -> Self {
        FdbConfig {
            aging: Duration::from_secs(300),
            max_entries: 65_536,
            max_entries_per_port: Some(DEFAULT_MAX_PER_PORT),
        }
    }
}

impl FdbConfig {
    /// A config with the given aging time and limits.
    pub fn new(aging: Duration, max_entries: usize, max_entries_per_port: Option<usize>) -> Self {
        FdbConfig {
            aging,
            max_entries,
            max_entries_per_port,
        }
    }
}

/// What learning a source address did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Already known on this port; its age was reset.
    Refreshed,
    /// A new entry.
    New,
    /// The address moved here from another port.
    Moved {
        /// The port it was on before.
        from: PortId,
    },
    /// The address moved again within [`FLAP_WINDOW`] of its last move.
    Flapping {
        /// The port it was on before.
        from: PortId,
        /// The port it settled on last (see [`HOME_SETTLE`]): a flap into
        /// any other port is a copy of its frames coming back, the sign of
        /// a loop behind that port.
        home: PortId,
    },
    /// Not learned: the table is full.
    TableFull,
    /// Not learned: the port holds its maximum number of entries.
    PortFull,
}

/// One FDB entry as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    /// The learned address.
    pub mac: MacAddr,
    /// The VLAN it was learned in (0 until VLANs exist).
    pub vlan: u16,
    /// The port it is reachable through.
    pub port: PortId,
    /// Time since it was last seen.
    pub age: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    port: PortId,
    /// Where the address was learned or last stayed [`HOME_SETTLE`]
    /// without moving.
    home: PortId,
    last_seen: Duration,
    /// When the address last moved port, to tell a move from a flap.
    last_move: Option<Duration>,
}

/// Two moves of one address within this time are a flap: a loop, or two
/// guests using one MAC.
pub const FLAP_WINDOW: Duration = Duration::from_secs(1);

/// An address seen on one port this long after its last move has settled
/// there: that port becomes its home (a guest that migrated).
pub const HOME_SETTLE: Duration = Duration::from_secs(5);

fn key(mac: MacAddr, vlan: u16) -> u64 {
    (u64::from(vlan & 0x0fff) << 48) | mac.to_u64()
}

/// The table itself.
#[derive(Debug, Clone)]
pub struct Fdb {
    config: FdbConfig,
    entries: HashMap<u64, Slot, Keyed>,
    per_port: HashMap<PortId, usize>,
}

impl Fdb {
    /// An empty table with a fixed hash key: for tests. A switch uses
    /// [`Fdb::with_seed`] with a random seed.
    pub fn new(config: FdbConfig) -> Self {
        Fdb::with_seed(config, HashSeed::default())
    }

    /// An empty table whose hash is keyed with `seed`.
    pub fn with_seed(config: FdbConfig, seed: HashSeed) -> Self {
        Fdb {
            config,
            entries: HashMap::with_hasher(Keyed(seed)),
            per_port: HashMap::new(),
        }
    }

    /// Changes aging and limits; entries beyond a lowered limit stay until
    /// they age out.
    pub fn set_config(&mut self, config: FdbConfig) {
        self.config = config;
    }

    /// The limits in force.
    pub fn config(&self) -> &FdbConfig {
        &self.config
    }

    /// Number of entries, stale ones included until the next [`Fdb::age`].
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entries held by one port.
    pub fn port_len(&self, port: PortId) -> usize {
        self.per_port.get(&port).copied().unwrap_or(0)
    }

    fn fresh(&self, slot: &Slot, now: Duration) -> bool {
        now.saturating_sub(slot.last_seen) < self.config.aging
    }

    /// The port `mac` was learned on, if the entry has not aged out.
    pub fn lookup(&self, mac: MacAddr, vlan: u16, now: Duration) -> Option<PortId> {
        self.entries
            .get(&key(mac, vlan))
            .filter(|s| self.fresh(s, now))
            .map(|s| s.port)
    }

    fn port_has_room(&self, port: PortId) -> bool {
        match self.config.max_entries_per_port {
            Some(max) => self.port_len(port) < max,
            None => true,
        }
    }

    fn inc(&mut self, port: PortId) {
        *self.per_port.entry(port).or_insert(0) += 1;
    }

    fn dec(&mut self, port: PortId) {
        if let Some(n) = self.per_port.get_mut(&port) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_port.remove(&port);
            }
        }
    }

    /// Records that `mac` was seen on `port` at `now`. A full table (or
    /// port) refuses new addresses but keeps forwarding: learning is an
    /// optimisation, never a reason to drop.
    pub fn learn(&mut self, mac: MacAddr, vlan: u16, port: PortId, now: Duration) -> Learned {
        let k = key(mac, vlan);
        let aging = self.config.aging;
        if let Some(slot) = self.entries.get_mut(&k) {
            if slot.port == port {
                slot.last_seen = now;
                if slot.home != port
                    && slot
                        .last_move
                        .is_none_or(|t| now.saturating_sub(t) >= HOME_SETTLE)
                {
                    slot.home = port;
                }
                return Learned::Refreshed;
            }
            let from = slot.port;
            let home = slot.home;
            let stale = now.saturating_sub(slot.last_seen) >= aging;
            if !self.port_has_room(port) {
                return Learned::PortFull;
            }
            let mut flapping = false;
            if let Some(slot) = self.entries.get_mut(&k) {
                flapping = !stale
                    && slot
                        .last_move
                        .is_some_and(|t| now.saturating_sub(t) < FLAP_WINDOW);
                slot.port = port;
                slot.last_seen = now;
                slot.last_move = Some(now);
                if stale {
                    slot.home = port;
                }
            }
            self.dec(from);
            self.inc(port);
            return if stale {
                Learned::New
            } else if flapping {
                Learned::Flapping { from, home }
            } else {
                Learned::Moved { from }
            };
        }
        if self.entries.len() >= self.config.max_entries {
            return Learned::TableFull;
        }
        if !self.port_has_room(port) {
            return Learned::PortFull;
        }
        self.entries.insert(
            k,
            Slot {
                port,
                home: port,
                last_seen: now,
                last_move: None,
            },
        );
        self.inc(port);
        Learned::New
    }

    /// Removes every entry not seen within the aging time; returns how many.
    pub fn age(&mut self, now: Duration) -> usize {
        let aging = self.config.aging;
        self.remove_where(|s| now.saturating_sub(s.last_seen) >= aging)
    }

    /// Removes every entry that moved within [`FLAP_WINDOW`] of `now`:
    /// after a loop is cut, the addresses it carried are learned afresh
    /// where their owners send from.
    pub fn forget_moving(&mut self, now: Duration) -> usize {
        self.remove_where(|s| {
            s.last_move
                .is_some_and(|t| now.saturating_sub(t) < FLAP_WINDOW)
        })
    }

    /// Removes the entries `gone` picks, keeping the per-port counts;
    /// returns how many.
    fn remove_where(&mut self, mut gone: impl FnMut(&Slot) -> bool) -> usize {
        let before = self.entries.len();
        let mut ports: Vec<PortId> = Vec::new();
        self.entries.retain(|_, s| {
            let remove = gone(s);
            if remove {
                ports.push(s.port);
            }
            !remove
        });
        for p in ports {
            self.dec(p);
        }
        before - self.entries.len()
    }

    /// Removes every entry of `port`; returns how many.
    pub fn purge_port(&mut self, port: PortId) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, s| s.port != port);
        self.per_port.remove(&port);
        before - self.entries.len()
    }

    /// Removes everything.
    pub fn flush(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.per_port.clear();
        n
    }

    /// Every live entry, sorted by VLAN then MAC.
    pub fn entries(&self, now: Duration) -> Vec<FdbEntry> {
        let mut v: Vec<FdbEntry> = self
            .entries
            .iter()
            .filter(|(_, s)| self.fresh(s, now))
            .map(|(k, s)| FdbEntry {
                mac: MacAddr::from_u64(*k),
                vlan: (k >> 48) as u16,
                port: s.port,
                age: now.saturating_sub(s.last_seen),
            })
            .collect();
        v.sort_by_key(|e| (e.vlan, e.mac));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }
    fn s(x: u64) -> Duration {
        Duration::from_secs(x)
    }
    const P1: PortId = PortId(1);
    const P2: PortId = PortId(2);

    #[test]
    fn learns_refreshes_and_moves() {
        let mut f = Fdb::new(FdbConfig::default());
        assert_eq!(f.learn(mac(1), 0, P1, s(0)), Learned::New);
        assert_eq!(f.learn(mac(1), 0, P1, s(1)), Learned::Refreshed);
        assert_eq!(f.learn(mac(1), 0, P2, s(2)), Learned::Moved { from: P1 });
        assert_eq!(f.lookup(mac(1), 0, s(2)), Some(P2));
        assert_eq!((f.port_len(P1), f.port_len(P2)), (0, 1));
    }

    #[test]
    fn vlans_are_separate_keys() {
        let mut f = Fdb::new(FdbConfig::default());
        f.learn(mac(1), 0, P1, s(0));
        f.learn(mac(1), 7, P2, s(0));
        assert_eq!(f.lookup(mac(1), 0, s(0)), Some(P1));
        assert_eq!(f.lookup(mac(1), 7, s(0)), Some(P2));
    }

    #[test]
    fn aging_removes_exactly_the_stale() {
        let mut f = Fdb::new(FdbConfig::new(s(300), 10, None));
        f.learn(mac(1), 0, P1, s(0));
        f.learn(mac(2), 0, P1, s(100));
        assert_eq!(f.lookup(mac(1), 0, s(299)), Some(P1));
        assert_eq!(
            f.lookup(mac(1), 0, s(300)),
            None,
            "stale entries never answer"
        );
        assert_eq!(f.age(s(300)), 1);
        assert_eq!(f.lookup(mac(2), 0, s(300)), Some(P1));
        assert_eq!(f.port_len(P1), 1);
    }

    #[test]
    fn full_table_refuses_new_but_refreshes_old() {
        let mut f = Fdb::new(FdbConfig::new(s(300), 2, None));
        f.learn(mac(1), 0, P1, s(0));
        f.learn(mac(2), 0, P1, s(0));
        assert_eq!(f.learn(mac(3), 0, P1, s(0)), Learned::TableFull);
        assert_eq!(f.learn(mac(1), 0, P1, s(1)), Learned::Refreshed);
        assert_eq!(f.learn(mac(2), 0, P2, s(1)), Learned::Moved { from: P1 });
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn per_port_limit() {
        let mut f = Fdb::new(FdbConfig::new(s(300), 100, Some(1)));
        assert_eq!(f.learn(mac(1), 0, P1, s(0)), Learned::New);
        assert_eq!(f.learn(mac(2), 0, P1, s(0)), Learned::PortFull);
        assert_eq!(f.learn(mac(2), 0, P2, s(0)), Learned::New);
        assert_eq!(
            f.learn(mac(1), 0, P2, s(0)),
            Learned::PortFull,
            "a move respects the limit too"
        );
        assert_eq!(f.lookup(mac(1), 0, s(0)), Some(P1));
    }

    #[test]
    fn purge_removes_every_entry_of_the_port() {
        let mut f = Fdb::new(FdbConfig::default());
        for n in 0..10 {
            f.learn(mac(n), 0, P1, s(0));
        }
        f.learn(mac(20), 0, P2, s(0));
        assert_eq!(f.purge_port(P1), 10);
        assert_eq!(f.len(), 1);
        assert_eq!(f.port_len(P1), 0);
        assert_eq!(f.entries(s(1)).len(), 1);
    }

    #[test]
    fn a_seeded_table_works_as_the_default_one() {
        let mut f = Fdb::with_seed(FdbConfig::default(), HashSeed([7, 9]));
        for n in 0..200 {
            assert_eq!(f.learn(mac(n), 0, P1, s(0)), Learned::New);
        }
        assert!((0..200).all(|n| f.lookup(mac(n), 0, s(1)) == Some(P1)));
    }

    #[test]
    fn the_default_per_port_limit_holds() {
        let mut f = Fdb::new(FdbConfig::default());
        let chosen = |i: u32| MacAddr([2, 0x66, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
        for i in 0..(DEFAULT_MAX_PER_PORT as u32 + 100) {
            f.learn(chosen(i), 0, P2, s(0));
        }
        assert_eq!(f.port_len(P2), DEFAULT_MAX_PER_PORT);
        assert_eq!(f.learn(chosen(1_000_000), 0, P2, s(0)), Learned::PortFull);
        assert_eq!(f.learn(mac(1), 0, P1, s(0)), Learned::New);
    }

    #[test]
    fn a_flood_of_chosen_addresses_never_pushes_out_another_ports() {
        // No per-port limit and a small table: the flood fills it, and
        // still every entry of the other port stays, answering lookups.
        let mut f = Fdb::new(FdbConfig::new(s(300), 1000, None));
        for n in 0..10 {
            f.learn(mac(n), 0, P1, s(0));
        }
        for i in 0..100_000u32 {
            let b = i.to_be_bytes();
            let m = MacAddr([2, 0x77, b[0], b[1], b[2], b[3]]);
            f.learn(m, 0, P2, s(1));
        }
        assert_eq!(f.len(), 1000);
        assert!((0..10).all(|n| f.lookup(mac(n), 0, s(2)) == Some(P1)));
        assert_eq!(f.port_len(P1), 10);
        // ...and they refresh as before.
        assert_eq!(f.learn(mac(3), 0, P1, s(3)), Learned::Refreshed);
    }

    #[test]
    fn home_is_where_an_address_settles() {
        let mut f = Fdb::new(FdbConfig::default());
        f.learn(mac(1), 0, P1, s(0));
        f.learn(mac(1), 0, P2, s(10));
        assert_eq!(
            f.learn(mac(1), 0, P1, Duration::from_millis(10_500)),
            Learned::Flapping { from: P2, home: P1 }
        );
        // It moves to P2 and stays: after HOME_SETTLE, P2 is home.
        f.learn(mac(1), 0, P2, s(11));
        f.learn(mac(1), 0, P2, s(17));
        f.learn(mac(1), 0, P1, s(18));
        assert_eq!(
            f.learn(mac(1), 0, P2, Duration::from_millis(18_200)),
            Learned::Flapping { from: P1, home: P2 }
        );
    }

    #[test]
    fn forgetting_moving_addresses_keeps_the_settled_ones() {
        let mut f = Fdb::new(FdbConfig::default());
        f.learn(mac(1), 0, P1, s(0));
        f.learn(mac(2), 0, P1, s(0));
        f.learn(mac(2), 0, P2, s(5));
        assert_eq!(f.forget_moving(s(5)), 1);
        assert_eq!(f.lookup(mac(1), 0, s(5)), Some(P1));
        assert_eq!(f.lookup(mac(2), 0, s(5)), None);
        assert_eq!((f.port_len(P1), f.port_len(P2)), (1, 0));
    }

    proptest::proptest! {
        /// Whatever addresses a flooding port chooses, whatever the limits,
        /// another port's fresh entries stay and keep answering.
        #[test]
        fn a_flood_never_evicts_another_ports_entries(
            flood in proptest::collection::vec(proptest::prelude::any::<u64>(), 0..3000),
            max in 1usize..500,
            per_port in proptest::option::of(1usize..300),
            seed in proptest::prelude::any::<[u64; 2]>(),
        ) {
            let mut f = Fdb::with_seed(FdbConfig::new(s(300), max, per_port), HashSeed(seed));
            let own: Vec<MacAddr> = (0..5).map(mac).collect();
            let kept: Vec<MacAddr> = own
                .iter()
                .copied()
                .filter(|m| f.learn(*m, 0, P1, s(0)) == Learned::New)
                .collect();
            for (i, raw) in flood.iter().enumerate() {
                // Unicast, never one of P1's addresses.
                let m = MacAddr::from_u64((raw & 0x0000_feff_ffff_ff00) | 0x0200_0000_0000 | 0x80);
                f.learn(m, (i % 3) as u16, P2, s(1));
            }
            for m in kept {
                proptest::prop_assert_eq!(f.lookup(m, 0, s(2)), Some(P1));
            }
            proptest::prop_assert!(f.len() <= max);
            if let Some(p) = per_port {
                proptest::prop_assert!(f.port_len(P2) <= p);
            }
        }
    }
}
