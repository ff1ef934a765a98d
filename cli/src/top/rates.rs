//! Rates from two polls of the daemon's counters. Pure (the clock is a
//! field of each sample), so the tests feed it fixed samples.

use crate::protocol::{PortRow, StatsReply};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What one poll of the daemon read.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// When the ports were read, on a monotonic clock of any origin.
    pub at: Duration,
    /// Every live port with its counters.
    pub ports: Vec<PortRow>,
    /// The forwarding table's size and events.
    pub fdb: FdbCounters,
}

/// The forwarding table's size and event counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdbCounters {
    /// Addresses in the table.
    pub entries: u64,
    /// The table's limit.
    pub max_entries: u64,
    /// Addresses learned since start.
    pub learned: u64,
    /// Addresses that moved port since start.
    pub moved: u64,
    /// Addresses aged out since start.
    pub aged: u64,
}

impl From<&StatsReply> for FdbCounters {
    fn from(s: &StatsReply) -> FdbCounters {
        FdbCounters {
            entries: s.fdb_entries,
            max_entries: s.fdb_max_entries,
            learned: s.fdb_learned,
            moved: s.fdb_moved,
            aged: s.fdb_aged,
        }
    }
}

/// One port's rates over the interval, per second.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Rates {
    /// Frames received from the peer.
    pub rx_frames_per_second: f64,
    /// Frames sent to the peer.
    pub tx_frames_per_second: f64,
    /// Bits received from the peer (frame bytes × 8).
    pub rx_bits_per_second: f64,
    /// Bits sent to the peer.
    pub tx_bits_per_second: f64,
    /// Frames held for a full peer.
    pub held_per_second: f64,
    /// Drops by reason; only reasons that dropped in the interval.
    pub drops_per_second: BTreeMap<String, f64>,
}

impl Rates {
    /// Every drop, whatever the reason.
    pub fn drops_total(&self) -> f64 {
        self.drops_per_second.values().sum()
    }

    /// Bits both ways.
    pub fn bits(&self) -> f64 {
        self.rx_bits_per_second + self.tx_bits_per_second
    }

    /// Frames both ways.
    pub fn frames(&self) -> f64 {
        self.rx_frames_per_second + self.tx_frames_per_second
    }
}

/// One port as `ctl top` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PortView {
    /// The switch's id for the port.
    pub id: u32,
    /// The port's name.
    pub name: String,
    /// Its transport.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who is on the other side.
    pub peer: String,
    /// `up` or `closing`.
    pub state: String,
    /// Frames held for a full peer since the port came up.
    pub held_frames: u64,
    /// True when the port was not there (or was restarted) at the previous
    /// poll: it has no rates yet.
    pub new: bool,
    /// The rates; absent for a new port.
    #[serde(flatten)]
    pub rates: Option<Rates>,
}

/// The forwarding table as `ctl top` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct FdbView {
    /// Addresses in the table.
    pub entries: u64,
    /// The table's limit.
    pub max_entries: u64,
    /// Addresses learned per second.
    pub learned_per_second: f64,
    /// Addresses moved per second.
    pub moved_per_second: f64,
    /// Addresses aged out per second.
    pub aged_per_second: f64,
}

/// Everything one refresh shows.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct View {
    /// The time between the two polls the rates come from.
    pub interval_seconds: f64,
    /// Every live port at the second poll.
    pub ports: Vec<PortView>,
    /// The forwarding table.
    pub fdb: FdbView,
}

/// The rates between `prev` and `cur`. A port matches its earlier self by
/// id and name; one without a match, or whose counters went backwards
/// (not the same port), is new and has no rates.
pub fn compute(prev: &Sample, cur: &Sample) -> View {
    let secs = cur.at.saturating_sub(prev.at).as_secs_f64();
    let per_second = |now: u64, before: u64| {
        if secs > 0.0 {
            now.saturating_sub(before) as f64 / secs
        } else {
            0.0
        }
    };
    let ports = cur
        .ports
        .iter()
        .map(|p| {
            let before = prev
                .ports
                .iter()
                .find(|q| q.id == p.id && q.name == p.name)
                .filter(|q| !went_backwards(q, p));
            let rates = before.map(|q| Rates {
                rx_frames_per_second: per_second(p.rx_frames, q.rx_frames),
                tx_frames_per_second: per_second(p.tx_frames, q.tx_frames),
                rx_bits_per_second: per_second(p.rx_bytes, q.rx_bytes) * 8.0,
                tx_bits_per_second: per_second(p.tx_bytes, q.tx_bytes) * 8.0,
                held_per_second: per_second(p.tx_held, q.tx_held),
                drops_per_second: p
                    .drops
                    .iter()
                    .map(|(r, n)| (r, *n, q.drops.get(r).copied().unwrap_or(0)))
                    .filter(|(_, n, was)| n > was)
                    .map(|(r, n, was)| (r.clone(), per_second(n, was)))
                    .collect(),
            });
            PortView {
                id: p.id,
                name: p.name.clone(),
                kind: p.kind.clone(),
                peer: p.peer.clone(),
                state: p.state.clone(),
                held_frames: p.tx_held,
                new: rates.is_none(),
                rates,
            }
        })
        .collect();
    View {
        interval_seconds: secs,
        ports,
        fdb: FdbView {
            entries: cur.fdb.entries,
            max_entries: cur.fdb.max_entries,
            learned_per_second: per_second(cur.fdb.learned, prev.fdb.learned),
            moved_per_second: per_second(cur.fdb.moved, prev.fdb.moved),
            aged_per_second: per_second(cur.fdb.aged, prev.fdb.aged),
        },
    }
}

/// A counter below its earlier value: the id now names another port.
fn went_backwards(before: &PortRow, now: &PortRow) -> bool {
    now.rx_frames < before.rx_frames
        || now.tx_frames < before.tx_frames
        || now.rx_bytes < before.rx_bytes
        || now.tx_bytes < before.tx_bytes
        || now.tx_held < before.tx_held
        || before
            .drops
            .iter()
            .any(|(r, n)| now.drops.get(r).copied().unwrap_or(0) < *n)
}

/// What the port list is sorted by (largest first, names A to Z).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// Bits per second, in and out.
    #[default]
    Traffic,
    /// Frames per second, in and out.
    Frames,
    /// Drops per second.
    Drops,
    /// Frames held per second.
    Held,
    /// The port's name.
    Name,
}

impl SortKey {
    /// Every key, in the order `s` cycles through them.
    pub const ALL: [SortKey; 5] = [
        SortKey::Traffic,
        SortKey::Frames,
        SortKey::Drops,
        SortKey::Held,
        SortKey::Name,
    ];

    /// The word `--sort` takes and the screen shows.
    pub fn as_str(self) -> &'static str {
        match self {
            SortKey::Traffic => "traffic",
            SortKey::Frames => "frames",
            SortKey::Drops => "drops",
            SortKey::Held => "held",
            SortKey::Name => "name",
        }
    }

    /// The key a word or its first letter names.
    pub fn parse(word: &str) -> Option<SortKey> {
        SortKey::ALL
            .into_iter()
            .find(|k| k.as_str() == word || k.as_str().get(..1) == Some(word))
    }

    /// The next key in [`SortKey::ALL`], wrapping around.
    pub fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }

    fn value(self, p: &PortView) -> f64 {
        let r = p.rates.as_ref();
        match self {
            SortKey::Traffic => r.map_or(0.0, Rates::bits),
            SortKey::Frames => r.map_or(0.0, Rates::frames),
            SortKey::Drops => r.map_or(0.0, Rates::drops_total),
            SortKey::Held => r.map_or(0.0, |r| r.held_per_second),
            SortKey::Name => 0.0,
        }
    }
}

/// Sorts the ports by `key`, largest first; ties (and [`SortKey::Name`])
/// by name, so rows do not jump between equal ports.
pub fn sort(ports: &mut [PortView], key: SortKey) {
    ports.sort_by(|a, b| {
        key.value(b)
            .total_cmp(&key.value(a))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.id.cmp(&b.id))
    });
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A port row with `n` frames each way of 100 bytes, `n / 10` held and
    /// `n / 5` egress_full drops.
    pub(crate) fn row(id: u32, name: &str, n: u64) -> PortRow {
        PortRow {
            id,
            name: name.into(),
            kind: "unix".into(),
            peer: format!("pid {id}"),
            state: "up".into(),
            vlans: None,
            rx_frames: n,
            rx_bytes: n * 100,
            tx_frames: n,
            tx_bytes: n * 100,
            tx_held: n / 10,
            drops: [("egress_full".to_string(), n / 5)]
                .into_iter()
                .filter(|(_, v)| *v > 0)
                .collect(),
            fdb_refused: 0,
            loop_blocks: 0,
            blocked: None,
        }
    }

    pub(crate) fn sample(ms: u64, ports: Vec<PortRow>, learned: u64) -> Sample {
        Sample {
            at: Duration::from_millis(ms),
            ports,
            fdb: FdbCounters {
                entries: 2,
                max_entries: 100,
                learned,
                moved: 0,
                aged: 0,
            },
        }
    }

    #[test]
    fn rates_are_deltas_over_the_interval() {
        let a = sample(1000, vec![row(1, "a", 0)], 0);
        let b = sample(3000, vec![row(1, "a", 1000)], 4);
        let v = compute(&a, &b);
        assert_eq!(v.interval_seconds, 2.0);
        let r = v.ports[0].rates.clone().expect("rates");
        assert_eq!(r.rx_frames_per_second, 500.0);
        assert_eq!(r.tx_frames_per_second, 500.0);
        assert_eq!(r.rx_bits_per_second, 500.0 * 100.0 * 8.0);
        assert_eq!(r.held_per_second, 50.0);
        assert_eq!(r.drops_per_second.get("egress_full"), Some(&100.0));
        assert_eq!(v.ports[0].held_frames, 100);
        assert_eq!(v.fdb.learned_per_second, 2.0);
        assert_eq!(v.fdb.entries, 2);
    }

    #[test]
    fn only_reasons_that_dropped_in_the_interval_are_listed() {
        let mut before = row(1, "a", 100);
        before.drops.insert("too_short".into(), 7);
        let mut now = row(1, "a", 100);
        now.drops.insert("too_short".into(), 7);
        now.drops.insert("mac_spoof".into(), 2);
        let v = compute(&sample(0, vec![before], 0), &sample(1000, vec![now], 0));
        let r = v.ports[0].rates.clone().expect("rates");
        assert_eq!(
            r.drops_per_second.into_iter().collect::<Vec<_>>(),
            [("mac_spoof".to_string(), 2.0)]
        );
    }

    #[test]
    fn ports_coming_and_going() {
        let a = sample(0, vec![row(1, "a", 10), row(2, "b", 10)], 0);
        // b left, c came, and id 1 now names another port.
        let b = sample(1000, vec![row(1, "a2", 20), row(3, "c", 5)], 0);
        let v = compute(&a, &b);
        let names: Vec<&str> = v.ports.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a2", "c"]);
        assert!(v.ports.iter().all(|p| p.new && p.rates.is_none()));
        // The same id and name with counters that went back: restarted.
        let c = sample(2000, vec![row(3, "c", 1)], 0);
        assert!(compute(&b, &c).ports[0].new);
    }

    #[test]
    fn a_zero_interval_gives_zero_rates() {
        let a = sample(5, vec![row(1, "a", 10)], 0);
        let b = sample(5, vec![row(1, "a", 20)], 9);
        let v = compute(&a, &b);
        assert_eq!(v.ports[0].rates.as_ref().map(Rates::frames), Some(0.0));
        assert_eq!(v.fdb.learned_per_second, 0.0);
    }

    #[test]
    fn sorting_by_each_key() {
        let a = sample(0, vec![row(1, "x", 0), row(2, "y", 0), row(3, "z", 0)], 0);
        let mut big_frames = row(2, "y", 50);
        big_frames.rx_bytes = 50 * 60;
        big_frames.tx_bytes = 50 * 60;
        let b = sample(
            1000,
            vec![row(1, "x", 40), big_frames, row(3, "z", 0), row(4, "w", 0)],
            0,
        );
        let mut v = compute(&a, &b).ports;
        let order = |v: &[PortView]| v.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        sort(&mut v, SortKey::Traffic);
        assert_eq!(order(&v), ["x", "y", "w", "z"]);
        sort(&mut v, SortKey::Frames);
        assert_eq!(order(&v), ["y", "x", "w", "z"]);
        sort(&mut v, SortKey::Drops);
        assert_eq!(order(&v), ["y", "x", "w", "z"]);
        sort(&mut v, SortKey::Name);
        assert_eq!(order(&v), ["w", "x", "y", "z"]);
    }

    #[test]
    fn sort_keys_parse_and_cycle() {
        for k in SortKey::ALL {
            assert_eq!(SortKey::parse(k.as_str()), Some(k));
            assert_eq!(SortKey::parse(&k.as_str()[..1]), Some(k));
        }
        assert_eq!(SortKey::parse("bogus"), None);
        let mut k = SortKey::default();
        for _ in SortKey::ALL {
            k = k.next();
        }
        assert_eq!(k, SortKey::Traffic);
    }

    #[test]
    fn json_has_flat_rates_and_no_rates_for_new_ports() {
        let a = sample(0, vec![row(1, "a", 0)], 0);
        let b = sample(1000, vec![row(1, "a", 10), row(2, "b", 1)], 0);
        let v = serde_json::to_value(compute(&a, &b)).expect("json");
        assert_eq!(v["ports"][0]["rx_frames_per_second"], 10.0);
        assert_eq!(v["ports"][0]["type"], "unix");
        assert_eq!(v["ports"][1]["new"], true);
        assert!(v["ports"][1].get("rx_frames_per_second").is_none());
        assert_eq!(v["interval_seconds"], 1.0);
    }
}
