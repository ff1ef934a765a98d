//! Turning samples into medians, the markdown table and the JSON record.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use super::json::Json;
use super::macnat::MacNatSample;
use super::measure::{FloodSample, Measurement, Sample, Shape};
use super::world::SwitchKind;

/// Everything recorded for one (measurement, switch) pair.
#[derive(Default, Debug)]
pub struct Outcome {
    pub samples: Vec<Sample>,
    pub errors: Vec<String>,
    /// Why this switch cannot take part in this measurement.
    pub not_applicable: Option<String>,
}

pub type Results = BTreeMap<(Measurement, SwitchKind), Outcome>;

/// Named numbers of one sample. The keys are stable: they are the JSON keys.
pub fn metrics(sample: &Sample) -> Vec<(&'static str, f64)> {
    let cpu_pct = |c: Option<f64>| ("switch_cpu_pct", c.unwrap_or(f64::NAN));
    match sample {
        Sample::MacNat(s) => macnat_metrics(s),
        Sample::Flood(f) if f.shape == Shape::Pairs => vec![
            ("rx_fps", f.total_rx_fps()),
            ("rx_fps_b", f.rx_fps(0)),
            ("rx_fps_d", f.rx_fps(1)),
            ("tx_fps", f.tx_fps()),
            ("loss_pct", f.loss_pct()),
            cpu_pct(f.switch_cpu_pct()),
            (
                "rx_per_switch_cpu_s",
                f.rx_per_switch_cpu_s().unwrap_or(f64::NAN),
            ),
            ("odd_frames", f.odd_frames as f64),
            ("window_s", f.window_s),
        ],
        Sample::Paced {
            flood: f,
            target_fps,
        } => vec![
            cpu_pct(f.switch_cpu_pct()),
            ("target_fps", *target_fps),
            ("tx_fps", f.tx_fps()),
            ("rx_fps", f.rx_fps(0)),
            ("loss_pct", f.loss_pct()),
            ("odd_frames", f.odd_frames as f64),
            ("window_s", f.window_s),
        ],
        Sample::Tcp(t) => vec![
            ("gbps", t.bits_per_s / 1e9),
            ("retransmits", t.retransmits),
            cpu_pct(t.switch_cpu_pct),
        ],
        Sample::UmlTcp(t) => vec![
            ("mbps", t.bits_per_s / 1e6),
            ("retransmits", t.retransmits),
            ("tx_dropped", t.tx_dropped),
            cpu_pct(t.switch_cpu_pct),
            ("switch_cpu_pct_per_gbps", t.cpu_per_gbps()),
        ],
        Sample::QemuTcp(q) => q.metrics(),
        Sample::MacFlood(m) => vec![
            ("rx_fps_base", m.base.rx_fps(0)),
            ("rx_fps_control", m.control.rx_fps(0)),
            ("rx_fps", m.attacked.rx_fps(0)),
            ("slowdown_pct", m.slowdown_pct()),
            ("fdb_slowdown_pct", m.fdb_slowdown_pct()),
            ("attack_fps", m.attack_fps),
            ("fill_s", m.fill_s),
            (
                "bystander_kept_pct",
                if m.bystander_kept { 100.0 } else { 0.0 },
            ),
            ("loss_pct", m.attacked.loss_pct()),
            cpu_pct(m.attacked.switch_cpu_pct()),
        ],
        Sample::Fdb(d) => {
            let f = &d.flood;
            let kib = |v: Option<f64>| v.unwrap_or(f64::NAN);
            vec![
                ("rx_fps", f.rx_fps(0)),
                ("tx_fps", f.tx_fps()),
                ("loss_pct", f.loss_pct()),
                ("flooded_fps", f.rx_fps(1)),
                ("learned_pct", d.learned_pct()),
                ("macs", d.macs as f64),
                ("probes", d.probes as f64),
                ("probes_at_c", d.probes_at_c as f64),
                ("probes_at_b", d.probes_at_b as f64),
                ("fill_s", d.fill_s),
                ("rss_before_kib", kib(d.rss_before_kib)),
                ("rss_after_fill_kib", kib(d.rss_after_fill_kib)),
                ("rss_after_kib", kib(d.rss_after_kib)),
                cpu_pct(f.switch_cpu_pct()),
                ("odd_frames", f.odd_frames as f64),
                ("window_s", f.window_s),
            ]
        }
        Sample::Flood(f) if f.shape == Shape::Unicast => vec![
            ("rx_fps", f.rx_fps(0)),
            ("rx_mbps", f.rx_fps(0) * f.frame_len as f64 * 8.0 / 1e6),
            ("tx_fps", f.tx_fps()),
            ("loss_pct", f.loss_pct()),
            ("switch_cpu_pct", f.switch_cpu_pct().unwrap_or(f64::NAN)),
            (
                "rx_per_switch_cpu_s",
                f.rx_per_switch_cpu_s().unwrap_or(f64::NAN),
            ),
            ("odd_frames", f.odd_frames as f64),
            ("window_s", f.window_s),
        ],
        Sample::Flood(f) => {
            let mut v = vec![("delivered_fps", f.total_rx_fps())];
            const NAMES: [&str; 3] = ["rx_fps_b", "rx_fps_c", "rx_fps_d"];
            for (i, name) in NAMES.iter().enumerate().take(f.rx_frames.len()) {
                v.push((name, f.rx_fps(i)));
            }
            v.extend([
                ("tx_fps", f.tx_fps()),
                ("loss_pct", f.loss_pct()),
                ("switch_cpu_pct", f.switch_cpu_pct().unwrap_or(f64::NAN)),
                (
                    "rx_per_switch_cpu_s",
                    f.rx_per_switch_cpu_s().unwrap_or(f64::NAN),
                ),
                ("odd_frames", f.odd_frames as f64),
                ("window_s", f.window_s),
            ]);
            v
        }
        Sample::Latency(l) => vec![
            ("p50_us", l.p50_us),
            ("p90_us", l.p90_us),
            ("p99_us", l.p99_us),
            ("p999_us", l.p999_us),
            ("mean_us", l.mean_us),
            ("min_us", l.min_us),
            ("max_us", l.max_us),
            ("switch_cpu_pct", l.switch_cpu_pct.unwrap_or(f64::NAN)),
            ("round_trips", l.count as f64),
            ("lost", l.lost as f64),
        ],
    }
}

/// JSON keys of one direction of the MAC-NAT sample.
struct MacNatKeys {
    /// Received, sent, loss, switch CPU, received per switch CPU-second;
    /// MAC-NAT off, then on.
    off: [&'static str; 5],
    on: [&'static str; 5],
    /// This repetition's on ÷ off of received, and of received per CPU-s.
    ratios: [&'static str; 2],
}

const MACNAT_OUT_KEYS: MacNatKeys = MacNatKeys {
    off: [
        "out_rx_fps_off",
        "out_tx_fps_off",
        "out_loss_pct_off",
        "out_switch_cpu_pct_off",
        "out_rx_per_switch_cpu_s_off",
    ],
    on: [
        "out_rx_fps_on",
        "out_tx_fps_on",
        "out_loss_pct_on",
        "out_switch_cpu_pct_on",
        "out_rx_per_switch_cpu_s_on",
    ],
    ratios: ["out_rx_fps_ratio", "out_rx_per_switch_cpu_s_ratio"],
};

const MACNAT_IN_KEYS: MacNatKeys = MacNatKeys {
    off: [
        "in_rx_fps_off",
        "in_tx_fps_off",
        "in_loss_pct_off",
        "in_switch_cpu_pct_off",
        "in_rx_per_switch_cpu_s_off",
    ],
    on: [
        "in_rx_fps_on",
        "in_tx_fps_on",
        "in_loss_pct_on",
        "in_switch_cpu_pct_on",
        "in_rx_per_switch_cpu_s_on",
    ],
    ratios: ["in_rx_fps_ratio", "in_rx_per_switch_cpu_s_ratio"],
};

/// The MAC-NAT sample's numbers: each direction with MAC-NAT off and on,
/// and this repetition's on ÷ off ratios.
fn macnat_metrics(s: &MacNatSample) -> Vec<(&'static str, f64)> {
    let mut v = Vec::new();
    let dirs = [
        (&MACNAT_OUT_KEYS, &s.off.out, &s.on.out),
        (&MACNAT_IN_KEYS, &s.off.inbound, &s.on.inbound),
    ];
    for (keys, off, on) in dirs {
        for (names, f) in [(keys.off, off), (keys.on, on)] {
            let vals = [
                f.rx_fps(0),
                f.tx_fps(),
                f.loss_pct(),
                f.switch_cpu_pct().unwrap_or(f64::NAN),
                f.rx_per_switch_cpu_s().unwrap_or(f64::NAN),
            ];
            v.extend(names.into_iter().zip(vals));
        }
        let per_cpu = |f: &FloodSample| f.rx_per_switch_cpu_s().unwrap_or(f64::NAN);
        v.push((keys.ratios[0], on.rx_fps(0) / off.rx_fps(0)));
        v.push((keys.ratios[1], per_cpu(on) / per_cpu(off)));
    }
    v.push(("slices", s.slices as f64));
    v
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| !x.is_nan());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Per-key medians over the samples of one outcome (each number is the
/// median of its own runs).
pub fn medians(o: &Outcome) -> Vec<(&'static str, f64)> {
    let Some(first) = o.samples.first() else {
        return Vec::new();
    };
    metrics(first)
        .into_iter()
        .filter_map(|(key, _)| {
            let vals = o
                .samples
                .iter()
                .filter_map(|s| metrics(s).into_iter().find(|(k, _)| *k == key))
                .map(|(_, v)| v)
                .collect();
            median(vals).map(|m| (key, m))
        })
        .collect()
}

pub(super) fn median_of(
    results: &Results,
    m: Measurement,
    k: SwitchKind,
    key: &str,
) -> Option<f64> {
    let o = results.get(&(m, k))?;
    medians(o)
        .into_iter()
        .find(|(kk, _)| *kk == key)
        .map(|(_, v)| v)
}

#[derive(Clone, Copy, PartialEq)]
enum Better {
    Higher,
    Lower,
    /// Shown without ratios.
    Neither,
}

#[derive(Clone, Copy)]
enum Unit {
    Kfps,
    Mbps,
    Pct,
    Cpu,
    Us,
    Gbps,
    /// Switch CPU (% of one core) per Gbit/s.
    PerGbps,
    Count,
    /// Shown in MiB, stored in KiB.
    Mib,
}

impl Unit {
    fn fmt(self, v: f64) -> String {
        match self {
            Unit::Kfps => format!("{:.1}", v / 1000.0),
            Unit::Mbps => format!("{v:.0}"),
            Unit::Pct => format!("{v:.1}"),
            Unit::Cpu => format!("{v:.0}"),
            Unit::Us => format!("{v:.1}"),
            Unit::Gbps => format!("{v:.2}"),
            Unit::PerGbps => format!("{v:.1}"),
            Unit::Count => format!("{v:.0}"),
            Unit::Mib => format!("{:.1}", v / 1024.0),
        }
    }
}

struct Row {
    m: Measurement,
    key: &'static str,
    label: &'static str,
    unit: Unit,
    better: Better,
}

const ROWS: &[Row] = &[
    Row {
        m: Measurement::Unicast64,
        key: "rx_fps",
        label: "64 B unicast, 2 ports: received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Unicast64,
        key: "tx_fps",
        label: "64 B unicast: sent (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Unicast64,
        key: "loss_pct",
        label: "64 B unicast: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Unicast64,
        key: "switch_cpu_pct",
        label: "64 B unicast: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Unicast64,
        key: "rx_per_switch_cpu_s",
        label: "64 B unicast: received per switch CPU-second (k)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Unicast1514,
        key: "rx_fps",
        label: "1514 B unicast, 2 ports: received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Unicast1514,
        key: "rx_mbps",
        label: "1514 B unicast: received (Mbit/s)",
        unit: Unit::Mbps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Unicast1514,
        key: "tx_fps",
        label: "1514 B unicast: sent (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Unicast1514,
        key: "loss_pct",
        label: "1514 B unicast: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Unicast1514,
        key: "switch_cpu_pct",
        label: "1514 B unicast: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Unicast1514,
        key: "rx_per_switch_cpu_s",
        label: "1514 B unicast: received per switch CPU-second (k)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Broadcast,
        key: "delivered_fps",
        label: "64 B broadcast 1→3: delivered, B+C+D (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Broadcast,
        key: "per_receiver",
        label: "64 B broadcast: per receiver B / C / D (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Broadcast,
        key: "tx_fps",
        label: "64 B broadcast: sent (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Broadcast,
        key: "loss_pct",
        label: "64 B broadcast: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Broadcast,
        key: "switch_cpu_pct",
        label: "64 B broadcast: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Broadcast,
        key: "rx_per_switch_cpu_s",
        label: "64 B broadcast: delivered per switch CPU-second (k)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Latency,
        key: "p50_us",
        label: "64 B ping-pong RTT p50 (µs, lower is better)",
        unit: Unit::Us,
        better: Better::Lower,
    },
    Row {
        m: Measurement::Latency,
        key: "p99_us",
        label: "64 B ping-pong RTT p99 (µs, lower is better)",
        unit: Unit::Us,
        better: Better::Lower,
    },
    Row {
        m: Measurement::Latency,
        key: "switch_cpu_pct",
        label: "ping-pong: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    // uml_switch and vde_switch show their `latency` values here
    // (Measurement::stand_in); the labels spell out measure::BUSY_POLL.
    Row {
        m: Measurement::LatencyBusyPoll,
        key: "p50_us",
        label: "64 B ping-pong RTT p50 with `--busy-poll 20us` (µs, lower is better)",
        unit: Unit::Us,
        better: Better::Lower,
    },
    Row {
        m: Measurement::LatencyBusyPoll,
        key: "p99_us",
        label: "64 B ping-pong RTT p99 with `--busy-poll 20us` (µs, lower is better)",
        unit: Unit::Us,
        better: Better::Lower,
    },
    Row {
        m: Measurement::LatencyBusyPoll,
        key: "switch_cpu_pct",
        label: "ping-pong with `--busy-poll 20us`: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Pairs64,
        key: "rx_fps",
        label: "64 B, 4 ports, 2 sending threads (A→B + C→D): received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Pairs64,
        key: "per_receiver",
        label: "64 B, 2 pairs: per receiver B / D (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Pairs64,
        key: "tx_fps",
        label: "64 B, 2 pairs: sent (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Pairs64,
        key: "loss_pct",
        label: "64 B, 2 pairs: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Pairs64,
        key: "switch_cpu_pct",
        label: "64 B, 2 pairs: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Pairs64,
        key: "rx_per_switch_cpu_s",
        label: "64 B, 2 pairs: received per switch CPU-second (k)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Sendto64,
        key: "rx_fps",
        label: "64 B, 2 ports, UML-style clients (sendto/recvfrom per frame): received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Sendto64,
        key: "tx_fps",
        label: "64 B sendto: sent (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Sendto64,
        key: "loss_pct",
        label: "64 B sendto: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Sendto64,
        key: "switch_cpu_pct",
        label: "64 B sendto: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Sendto64,
        key: "rx_per_switch_cpu_s",
        label: "64 B sendto: received per switch CPU-second (k)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Paced1514,
        key: "switch_cpu_pct",
        label: "1514 B at a fixed 100 kframes/s: switch CPU (% of one core, lower is better)",
        unit: Unit::Cpu,
        better: Better::Lower,
    },
    Row {
        m: Measurement::Paced1514,
        key: "tx_rx",
        label: "1514 B at 100 kframes/s: sent / received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Paced1514,
        key: "loss_pct",
        label: "1514 B at 100 kframes/s: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Iperf,
        key: "gbps",
        label: "tap ↔ tap TCP, iperf3 between the switch's own taps (Gbit/s)",
        unit: Unit::Gbps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Iperf,
        key: "retransmits",
        label: "tap ↔ tap TCP: retransmitted segments",
        unit: Unit::Count,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Iperf,
        key: "switch_cpu_pct",
        label: "tap ↔ tap TCP: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::UmlTcp,
        key: "mbps",
        label: "TCP between two UML guests (daemon transport), iperf3 (Mbit/s)",
        unit: Unit::Mbps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::UmlTcp,
        key: "retransmits",
        label: "UML guests TCP: retransmitted segments",
        unit: Unit::Count,
        better: Better::Neither,
    },
    Row {
        m: Measurement::UmlTcp,
        key: "tx_dropped",
        label: "UML guests TCP: sending guest's tx_dropped",
        unit: Unit::Count,
        better: Better::Neither,
    },
    Row {
        m: Measurement::UmlTcp,
        key: "switch_cpu_pct",
        label: "UML guests TCP: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::UmlTcp,
        key: "switch_cpu_pct_per_gbps",
        label: "UML guests TCP: switch CPU per Gbit/s (% of one core, lower is better)",
        unit: Unit::PerGbps,
        better: Better::Lower,
    },
    Row {
        m: Measurement::Fdb64k,
        key: "rx_fps",
        label: "64 B unicast after 64 k source MACs: received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::Fdb64k,
        key: "loss_pct",
        label: "64 k MACs: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Fdb64k,
        key: "learned_pct",
        label: "64 k MACs: sampled addresses learned (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Fdb64k,
        key: "flooded_fps",
        label: "64 k MACs: A→B frames flooded to bystander C (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Fdb64k,
        key: "rss",
        label: "64 k MACs: switch RSS before → after (MiB)",
        unit: Unit::Mib,
        better: Better::Neither,
    },
    Row {
        m: Measurement::Fdb64k,
        key: "switch_cpu_pct",
        label: "64 k MACs: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    Row {
        m: Measurement::MacFlood,
        key: "rx_fps_base",
        label: "MAC flood: 64 B A→B before C's flood: received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::MacFlood,
        key: "rx_fps_control",
        label: "MAC flood: A→B while C sends 20 kframes/s from one MAC: received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::MacFlood,
        key: "rx_fps",
        label: "MAC flood: A→B while C cycles 100,000 chosen source MACs: received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    Row {
        m: Measurement::MacFlood,
        key: "slowdown_pct",
        label: "MAC flood: A→B rate lost to it, against A→B alone (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::MacFlood,
        key: "fdb_slowdown_pct",
        label: "MAC flood: A→B rate lost to it, against one-MAC C at the same rate (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::MacFlood,
        key: "attack_fps",
        label: "MAC flood: C's frames during the window (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    Row {
        m: Measurement::MacFlood,
        key: "bystander_kept_pct",
        label: "MAC flood: bystander D's address still learned (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    Row {
        m: Measurement::MacFlood,
        key: "switch_cpu_pct",
        label: "MAC flood: switch CPU under attack (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
];

/// The measurement whose results switch `k` shows in `m`'s rows: its
/// stand-in when `k` cannot take part in `m` (uml_switch's `latency` in
/// the busy-poll rows), else `m` itself.
fn shown(m: Measurement, k: SwitchKind) -> Measurement {
    match m.stand_in() {
        Some(s) if m.not_applicable(k).is_some() => s,
        _ => m,
    }
}

fn ratio(results: &Results, row: &Row, base: SwitchKind) -> Option<f64> {
    let sy = median_of(results, row.m, SwitchKind::Switchyard, row.key)?;
    let b = median_of(results, shown(row.m, base), base, row.key)?;
    (b != 0.0).then_some(sy / b)
}

/// Cells that show several numbers: their keys and separator.
fn parts(key: &str) -> Option<(&'static [&'static str], &'static str)> {
    match key {
        "per_receiver" => Some((&["rx_fps_b", "rx_fps_c", "rx_fps_d"], " / ")),
        "tx_rx" => Some((&["tx_fps", "rx_fps"], " / ")),
        "rss" => Some((&["rss_before_kib", "rss_after_kib"], " → ")),
        _ => None,
    }
}

/// The cell for one switch: the median, "failed", or "—" (not run).
fn cell(results: &Results, row: &Row, k: SwitchKind) -> String {
    let m = shown(row.m, k);
    let Some(o) = results.get(&(m, k)) else {
        return "—".into();
    };
    if o.not_applicable.is_some() {
        return "n/a".into();
    }
    if o.samples.is_empty() {
        return if o.errors.is_empty() {
            "—".into()
        } else {
            "failed".into()
        };
    }
    if let Some((keys, sep)) = parts(row.key) {
        let parts: Vec<String> = keys
            .iter()
            .filter_map(|key| median_of(results, m, k, key))
            .map(|v| row.unit.fmt(v))
            .collect();
        return parts.join(sep);
    }
    match median_of(results, m, k, row.key) {
        Some(v) => row.unit.fmt(v),
        None => "n/a".into(),
    }
}

/// The markdown table: rows = measurements, columns = switches and ratios.
pub fn markdown(results: &Results, header_notes: &[String], footer_notes: &[String]) -> String {
    let mut out = String::new();
    for n in header_notes {
        out.push_str(n);
        out.push('\n');
    }
    if !header_notes.is_empty() {
        out.push('\n');
    }
    let rows: Vec<&Row> = ROWS
        .iter()
        .filter(|row| results.keys().any(|(m, _)| *m == row.m))
        .collect();
    if !rows.is_empty() {
        out.push_str(&main_table(results, &rows));
        out.push('\n');
    }
    if let Some(t) = macnat_table(results) {
        out.push_str(&t);
        out.push('\n');
    }
    for t in super::guests::tables(results) {
        out.push_str(&t);
        out.push('\n');
    }
    for n in footer_notes {
        out.push_str(n);
        out.push('\n');
    }
    out
}

/// Rows = measurements, columns = switches and switchyard's ratios.
fn main_table(results: &Results, rows: &[&Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| measurement | switchyard | uml_switch | vde_switch | switchyard / uml_switch | switchyard / vde_switch |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for row in rows {
        let cells: Vec<String> = SwitchKind::ALL
            .iter()
            .map(|&k| cell(results, row, k))
            .collect();
        let ratios: Vec<String> = [SwitchKind::UmlSwitch, SwitchKind::VdeSwitch]
            .iter()
            .map(|&b| match row.better {
                Better::Neither => "".into(),
                _ => ratio(results, row, b).map_or("—".into(), |r| format!("{r:.2}")),
            })
            .collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.label, cells[0], cells[1], cells[2], ratios[0], ratios[1]
        ));
    }
    out
}

/// A row of the MAC-NAT table: `key` + `_off` / `_on` are its numbers.
struct MacRow {
    key: &'static str,
    label: &'static str,
    unit: Unit,
    better: Better,
}

const MACNAT_ROWS: &[MacRow] = &[
    MacRow {
        key: "out_rx_fps",
        label: "guest → LAN (injected on the NIC): received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    MacRow {
        key: "out_tx_fps",
        label: "guest → LAN: sent by the guest (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    MacRow {
        key: "out_loss_pct",
        label: "guest → LAN: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    MacRow {
        key: "out_switch_cpu_pct",
        label: "guest → LAN: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    MacRow {
        key: "out_rx_per_switch_cpu_s",
        label: "guest → LAN: received per switch CPU-second (k)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    MacRow {
        key: "in_rx_fps",
        label: "LAN → guest (captured on the NIC): received (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
    MacRow {
        key: "in_tx_fps",
        label: "LAN → guest: sent by the LAN (kframes/s)",
        unit: Unit::Kfps,
        better: Better::Neither,
    },
    MacRow {
        key: "in_loss_pct",
        label: "LAN → guest: loss (%)",
        unit: Unit::Pct,
        better: Better::Neither,
    },
    MacRow {
        key: "in_switch_cpu_pct",
        label: "LAN → guest: switch CPU (% of one core)",
        unit: Unit::Cpu,
        better: Better::Neither,
    },
    MacRow {
        key: "in_rx_per_switch_cpu_s",
        label: "LAN → guest: received per switch CPU-second (k)",
        unit: Unit::Kfps,
        better: Better::Higher,
    },
];

/// The median of `key` over an outcome's samples.
fn median_key(o: &Outcome, key: &str) -> Option<f64> {
    medians(o)
        .into_iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// MAC-NAT on ÷ off of a row: the median of the repetitions' own ratios
/// (each repetition measures both settings over the same seconds, so its
/// ratio is free of the drift between repetitions that a ratio of the
/// two medians would pick up), and what that costs in % (positive:
/// MAC-NAT is slower).
fn macnat_ratio(o: &Outcome, row: &MacRow) -> Option<(f64, f64)> {
    let r = median_key(o, &format!("{}_ratio", row.key))?;
    let cost = match row.better {
        Better::Higher => 100.0 * (1.0 - r),
        Better::Lower | Better::Neither => 100.0 * (r - 1.0),
    };
    Some((r, cost))
}

/// The MAC-NAT table (switchyard against itself), or None when
/// macnat_pcap did not run for switchyard.
fn macnat_table(results: &Results) -> Option<String> {
    let o = results.get(&(Measurement::MacNatPcap, SwitchKind::Switchyard))?;
    if o.not_applicable.is_some() {
        return None;
    }
    let mut out = String::from(
        "MAC-NAT on a pcap port (macnat_pcap): switchyard only, as uml_switch and vde_switch \
         have no pcap port, so switchyard is compared with itself: MAC-NAT off and on, side by \
         side in the same run, in alternating quarter-second slices. 64 B IPv4/UDP frames between \
         a guest on a unix port and a veth pair standing in for the NIC and the LAN. The \
         settings' columns are medians over the repetitions; on / off is the median of each \
         repetition's own on ÷ off.\n\n",
    );
    out.push_str(
        "| measurement (switchyard, pcap port) | MAC-NAT off | MAC-NAT on | on / off | MAC-NAT cost |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|\n");
    for row in MACNAT_ROWS {
        let value = |setting: &str| {
            if o.samples.is_empty() {
                return if o.errors.is_empty() { "—" } else { "failed" }.to_owned();
            }
            median_key(o, &format!("{}_{setting}", row.key))
                .map_or("n/a".into(), |v| row.unit.fmt(v))
        };
        let (ratio, cost) = match (row.better, macnat_ratio(o, row)) {
            (Better::Neither, _) => (String::new(), String::new()),
            (_, Some((r, c))) => (format!("{r:.2}"), format!("{c:.1} %")),
            (_, None) => ("—".into(), "—".into()),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {ratio} | {cost} |\n",
            row.label,
            value("off"),
            value("on")
        ));
    }
    Some(out)
}

/// One line on what busy-polling changes for switchyard itself: its
/// `latency_busy_poll` medians against its `latency` ones from the same
/// run. None unless both ran.
pub fn busy_poll_effect(results: &Results) -> Option<String> {
    let sy = SwitchKind::Switchyard;
    let get = |m: Measurement, key: &str| median_of(results, m, sy, key);
    let (plain, busy) = (Measurement::Latency, Measurement::LatencyBusyPoll);
    let us = |key: &str| -> Option<String> {
        let (a, b) = (get(plain, key)?, get(busy, key)?);
        Some(format!("{a:.1} → {b:.1} µs (× {:.2})", b / a))
    };
    let (p50, p99) = (us("p50_us")?, us("p99_us")?);
    let cpu = |m| get(m, "switch_cpu_pct").map_or("?".into(), |c| format!("{c:.0} %"));
    Some(format!(
        "switchyard without → with `--busy-poll {}` (this run's medians): RTT p50 {p50}, \
         p99 {p99}; switch CPU {} → {}.",
        super::measure::BUSY_POLL,
        cpu(plain),
        cpu(busy)
    ))
}

/// One line on the spread: each repetition's on ÷ off of the received
/// rate, per direction.
pub fn macnat_spread(results: &Results) -> Option<String> {
    let o = results.get(&(Measurement::MacNatPcap, SwitchKind::Switchyard))?;
    if o.samples.is_empty() {
        return None;
    }
    let per_run = |key: &str| -> String {
        o.samples
            .iter()
            .filter_map(|s| metrics(s).into_iter().find(|(k, _)| *k == key))
            .map(|(_, v)| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Some(format!(
        "MAC-NAT on ÷ off of the received rate, per repetition: guest → LAN {}; LAN → guest {} \
         (of received per switch CPU-second: {}; {}).",
        per_run("out_rx_fps_ratio"),
        per_run("in_rx_fps_ratio"),
        per_run("out_rx_per_switch_cpu_s_ratio"),
        per_run("in_rx_per_switch_cpu_s_ratio"),
    ))
}

fn outcome_json(o: &Outcome) -> Json {
    let runs = o
        .samples
        .iter()
        .map(|s| {
            metrics(s)
                .into_iter()
                .fold(Json::obj(), |j, (k, v)| j.with(k, v))
        })
        .collect::<Vec<_>>();
    let median = medians(o)
        .into_iter()
        .fold(Json::obj(), |j, (k, v)| j.with(k, v));
    let j = Json::obj().with("runs", runs).with("median", median).with(
        "errors",
        o.errors
            .iter()
            .map(|e| Json::from(e.as_str()))
            .collect::<Vec<_>>(),
    );
    match &o.not_applicable {
        Some(why) => j.with("not_applicable", why.as_str()),
        None => j,
    }
}

/// The `results` and `ratios` parts of the JSON record.
pub fn results_json(results: &Results) -> (Json, Json) {
    let mut res = Json::obj();
    for m in Measurement::ALL {
        let mut per = Json::obj();
        for k in SwitchKind::ALL {
            if let Some(o) = results.get(&(m, k)) {
                per.set(k.name(), outcome_json(o));
            }
        }
        if let Json::Obj(f) = &per {
            if !f.is_empty() {
                res.set(m.name(), per);
            }
        }
    }
    let mut ratios = Json::obj();
    for row in ROWS.iter().filter(|r| r.better != Better::Neither) {
        if !results.keys().any(|(m, _)| *m == row.m) {
            continue;
        }
        let mut entry = Json::obj()
            .with(
                "switchyard/uml_switch",
                ratio(results, row, SwitchKind::UmlSwitch),
            )
            .with(
                "switchyard/vde_switch",
                ratio(results, row, SwitchKind::VdeSwitch),
            )
            .with(
                "better",
                if row.better == Better::Higher {
                    "higher (switchyard faster when > 1)"
                } else {
                    "lower (switchyard faster when < 1)"
                },
            );
        if let Some(s) = row.m.stand_in() {
            entry.set(
                "others_from",
                format!(
                    "{} (the medians of the switches that cannot run {}; null when {} did not run)",
                    s.name(),
                    row.m.name(),
                    s.name()
                ),
            );
        }
        ratios.set(&format!("{}.{}", row.m.name(), row.key), entry);
    }
    if let Some(o) = results
        .get(&(Measurement::MacNatPcap, SwitchKind::Switchyard))
        .filter(|o| !o.samples.is_empty())
    {
        for row in MACNAT_ROWS.iter().filter(|r| r.better != Better::Neither) {
            let rc = macnat_ratio(o, row);
            ratios.set(
                &format!("{}.{}", Measurement::MacNatPcap.name(), row.key),
                Json::obj()
                    .with("mac_nat/plain", rc.map(|(r, _)| r))
                    .with("of", "median of the repetitions' own on ÷ off")
                    .with("cost_pct", rc.map(|(_, c)| c))
                    .with(
                        "better",
                        "higher (MAC-NAT costs nothing at 1; switchyard with MAC-NAT on ÷ the same \
                         switchyard with it off)",
                    ),
            );
        }
    }
    super::guests::ratios_json(results, &mut ratios);
    (res, ratios)
}

/// Current UTC time as RFC 3339 (`2025-01-31T12:34:56Z`).
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// nproc, CPU model and kernel, read from /proc.
pub fn machine_json() -> Json {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned());
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_owned());
    Json::obj()
        .with(
            "nproc",
            std::thread::available_parallelism().ok().map(|n| n.get()),
        )
        .with("cpu_model", model)
        .with("kernel", read("/proc/sys/kernel/osrelease"))
        .with("kernel_version", read("/proc/sys/kernel/version"))
        .with(
            "net.unix.max_dgram_qlen",
            read("/proc/sys/net/unix/max_dgram_qlen").and_then(|s| s.parse::<u64>().ok()),
        )
        .with("loadavg", read("/proc/loadavg"))
        .with(
            "net.core.wmem_default",
            read("/proc/sys/net/core/wmem_default").and_then(|s| s.parse::<u64>().ok()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_nan() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN]), None);
    }

    fn flood(rx: u64, cpu_s: f64) -> FloodSample {
        FloodSample {
            shape: Shape::Unicast,
            frame_len: 64,
            window_s: 1.0,
            tx_frames: rx,
            rx_frames: vec![rx],
            odd_frames: 0,
            switch_cpu_s: Some(cpu_s),
        }
    }

    #[test]
    fn macnat_table_compares_switchyard_with_itself() {
        use super::super::macnat::PcapRun;
        let sample = |off: u64, on: u64| {
            Sample::MacNat(MacNatSample {
                off: PcapRun {
                    out: flood(off, 1.0),
                    inbound: flood(off, 0.5),
                },
                on: PcapRun {
                    out: flood(on, 1.0),
                    inbound: flood(on, 0.5),
                },
                slices: 6,
            })
        };
        let mut results = Results::new();
        results
            .entry((Measurement::MacNatPcap, SwitchKind::Switchyard))
            .or_default()
            .samples
            .extend([sample(200_000, 190_000), sample(100_000, 99_000)]);
        results
            .entry((Measurement::MacNatPcap, SwitchKind::UmlSwitch))
            .or_default()
            .not_applicable = Some("no pcap port".into());
        let md = markdown(&results, &[], &[]);
        // No switch-against-switch table: only the MAC-NAT one.
        assert!(
            !md.contains("| measurement | switchyard | uml_switch"),
            "{md}"
        );
        assert!(md.contains("compared with itself"), "{md}");
        // Medians of 150 k and 144.5 k frames/s; the repetitions' ratios
        // 0.95 and 0.99 give 0.97, a cost of 3 %.
        assert!(
            md.contains("| guest → LAN (injected on the NIC): received (kframes/s) | 150.0 | 144.5 | 0.97 | 3.0 % |"),
            "{md}"
        );
        let (_, ratios) = results_json(&results);
        let text = ratios.pretty();
        assert!(text.contains("macnat_pcap.in_rx_fps"), "{text}");
        let spread = macnat_spread(&results).unwrap_or_default();
        assert!(spread.contains("guest → LAN 0.95, 0.99"), "{spread}");
    }

    fn latency(p50: f64, cpu: f64) -> Sample {
        Sample::Latency(super::super::measure::LatencySample {
            count: 1000,
            lost: 0,
            min_us: p50 / 2.0,
            p50_us: p50,
            p90_us: p50 * 1.5,
            p99_us: p50 * 2.0,
            p999_us: p50 * 3.0,
            max_us: p50 * 4.0,
            mean_us: p50,
            switch_cpu_pct: Some(cpu),
        })
    }

    #[test]
    fn busy_poll_rows_compare_with_the_others_latency() {
        let mut results = Results::new();
        let mut put = |m, k, s| results.entry((m, k)).or_default().samples.push(s);
        put(
            Measurement::Latency,
            SwitchKind::Switchyard,
            latency(40.0, 30.0),
        );
        put(
            Measurement::Latency,
            SwitchKind::UmlSwitch,
            latency(50.0, 20.0),
        );
        put(
            Measurement::Latency,
            SwitchKind::VdeSwitch,
            latency(80.0, 25.0),
        );
        put(
            Measurement::LatencyBusyPoll,
            SwitchKind::Switchyard,
            latency(20.0, 90.0),
        );
        for k in [SwitchKind::UmlSwitch, SwitchKind::VdeSwitch] {
            let why = Measurement::LatencyBusyPoll.not_applicable(k);
            assert!(why.is_some());
            results
                .entry((Measurement::LatencyBusyPoll, k))
                .or_default()
                .not_applicable = why.map(str::to_owned);
        }
        let md = markdown(&results, &[], &[]);
        let bp = super::super::measure::BUSY_POLL;
        let p50 = format!(
            "| 64 B ping-pong RTT p50 with `--busy-poll {bp}` (µs, lower is better) | 20.0 | 50.0 | 80.0 | 0.40 | 0.25 |"
        );
        assert!(md.contains(&p50), "{md}");
        let cpu = format!(
            "| ping-pong with `--busy-poll {bp}`: switch CPU (% of one core) | 90 | 20 | 25 |  |  |"
        );
        assert!(md.contains(&cpu), "{md}");
        // The plain latency rows are untouched, and come first.
        let plain =
            "| 64 B ping-pong RTT p50 (µs, lower is better) | 40.0 | 50.0 | 80.0 | 0.80 | 0.50 |";
        let at = md.find(plain);
        assert!(
            at.is_some_and(|i| md.find(&p50).is_some_and(|j| i < j)),
            "{md}"
        );
        let (res, ratios) = results_json(&results);
        let text = ratios.pretty();
        assert!(text.contains("\"latency_busy_poll.p50_us\""), "{text}");
        assert!(text.contains("\"others_from\": \"latency"), "{text}");
        assert!(res.pretty().contains("\"latency_busy_poll\""));
        let effect = busy_poll_effect(&results).unwrap_or_default();
        assert!(
            effect.contains("p50 40.0 → 20.0 µs (× 0.50)") && effect.contains("30 % → 90 %"),
            "{effect}"
        );
    }

    #[test]
    fn busy_poll_rows_without_latency_show_dashes() {
        let mut results = Results::new();
        results
            .entry((Measurement::LatencyBusyPoll, SwitchKind::Switchyard))
            .or_default()
            .samples
            .push(latency(20.0, 90.0));
        results
            .entry((Measurement::LatencyBusyPoll, SwitchKind::UmlSwitch))
            .or_default()
            .not_applicable = Some("no busy-poll option".into());
        let md = markdown(&results, &[], &[]);
        assert!(
            md.contains("(µs, lower is better) | 20.0 | — | — | — | — |"),
            "{md}"
        );
        assert!(busy_poll_effect(&results).is_none());
    }

    #[test]
    fn date_format() {
        let d = utc_now();
        assert_eq!(d.len(), 20);
        assert!(d.ends_with('Z'));
    }
}
