//! The guest tables: the same guests on different transports in the same
//! run, side by side, with the ratios issue 19 sets bars for. Their
//! columns are transports (or switches), not the three switches of the
//! main table, so they are printed under it.

use super::json::Json;
use super::measure::{Measurement, Sample};
use super::report::{median_of, Results};
use super::world::SwitchKind;

/// One column: the medians of `m` run against switch `k`.
struct Column {
    label: &'static str,
    m: Measurement,
    k: SwitchKind,
}

/// One row: the median of `key` in each column.
struct Row {
    key: &'static str,
    label: &'static str,
    /// Decimals shown.
    decimals: usize,
    /// Whether the ratio columns apply, and which way is better.
    ratio: Ratio,
}

#[derive(Clone, Copy, PartialEq)]
enum Ratio {
    /// Higher is better: the ratio is column a ÷ column b.
    Higher,
    /// Lower is better (CPU per Gbit/s): still a ÷ b, below 1 is better.
    Lower,
    None,
}

/// A ratio column: `cols[a] ÷ cols[b]`, with the bar.
struct RatioCol {
    label: &'static str,
    /// JSON name of the ratio.
    name: &'static str,
    a: usize,
    b: usize,
    /// What issue 19 asks of the first row's ratio.
    bar: f64,
}

struct Table {
    /// The JSON key prefix of the ratios.
    name: &'static str,
    intro: &'static str,
    /// What the intro cannot know before the run (the host's kernel).
    intro_more: Option<fn() -> String>,
    corner: &'static str,
    cols: &'static [Column],
    ratios: &'static [RatioCol],
    rows: &'static [Row],
}

const UML: Table = Table {
    name: "uml_guests",
    intro: "UML guests through switchyard, on virtio_uml (vhost-user, uml_virtio_tcp) and on the \
            daemon transport (uml_tcp), in the same run: the same two guests, the same iperf3 \
            client → server direction. Issue 19 asks vhost-user ÷ daemon ≥ 3 for the throughput.",
    intro_more: None,
    corner: "UML guests, TCP through switchyard",
    cols: &[
        Column {
            label: "virtio_uml (vhost-user)",
            m: Measurement::UmlVirtioTcp,
            k: SwitchKind::Switchyard,
        },
        Column {
            label: "daemon transport",
            m: Measurement::UmlTcp,
            k: SwitchKind::Switchyard,
        },
    ],
    ratios: &[RatioCol {
        label: "vhost-user ÷ daemon",
        name: "vhost_user/daemon",
        a: 0,
        b: 1,
        bar: 3.0,
    }],
    rows: &[
        Row {
            key: "mbps",
            label: "iperf3, 1 stream (Mbit/s)",
            decimals: 0,
            ratio: Ratio::Higher,
        },
        Row {
            key: "retransmits",
            label: "retransmitted segments",
            decimals: 0,
            ratio: Ratio::None,
        },
        Row {
            key: "switch_cpu_pct",
            label: "switch CPU (% of one core)",
            decimals: 0,
            ratio: Ratio::None,
        },
        Row {
            key: "switch_cpu_pct_per_gbps",
            label: "switch CPU per Gbit/s (% of one core, lower is better)",
            decimals: 1,
            ratio: Ratio::Lower,
        },
    ],
};

const QEMU: Table = Table {
    name: "qemu_guests",
    intro: "QEMU guests (TCG, never KVM: the development VM's /dev/kvm cannot boot a Debian \
            kernel; 1 vCPU, 256 MB, virtio-net with vectors=0) in the same run: iperf3 TCP, the \
            median (mean of two) of the two directions. Column d is two taps on a Linux bridge, \
            with the kernel's vhost-net where the host has it, else QEMU's own virtio \
            backend. Switch CPU is the switch process's (none for the \
            bridge, whose work is the kernel's and QEMU's). Issue 19 asks \
            vhost-user ÷ vde_switch ≥ 5 and vhost-user ÷ bridge ≥ 0.8 for the throughput.",
    intro_more: Some(|| format!("Here column d runs on {}.", super::qemu::bridge_backend())),
    corner: "QEMU guests (TCG), TCP",
    cols: &[
        Column {
            label: "a: vhost-user, switchyard",
            m: Measurement::QemuVhostUser,
            k: SwitchKind::Switchyard,
        },
        Column {
            label: "b: -netdev vde, switchyard",
            m: Measurement::QemuVde,
            k: SwitchKind::Switchyard,
        },
        Column {
            label: "c: -netdev vde, vde_switch",
            m: Measurement::QemuVde,
            k: SwitchKind::VdeSwitch,
        },
        Column {
            label: "d: taps on a Linux bridge",
            m: Measurement::QemuBridge,
            k: SwitchKind::Switchyard,
        },
    ],
    ratios: &[
        RatioCol {
            label: "a ÷ c",
            name: "vhost_user/vde_switch",
            a: 0,
            b: 2,
            bar: 5.0,
        },
        RatioCol {
            label: "a ÷ d",
            name: "vhost_user/bridge",
            a: 0,
            b: 3,
            bar: 0.8,
        },
    ],
    rows: &[
        Row {
            key: "gbps_1",
            label: "iperf3, 1 stream (Gbit/s)",
            decimals: 2,
            ratio: Ratio::Higher,
        },
        Row {
            key: "gbps_4",
            label: "iperf3, 4 streams (Gbit/s)",
            decimals: 2,
            ratio: Ratio::Higher,
        },
        Row {
            key: "retransmits_1",
            label: "1 stream: retransmitted segments",
            decimals: 0,
            ratio: Ratio::None,
        },
        Row {
            key: "retransmits_4",
            label: "4 streams: retransmitted segments",
            decimals: 0,
            ratio: Ratio::None,
        },
        Row {
            key: "switch_cpu_pct_1",
            label: "1 stream: switch CPU (% of one core)",
            decimals: 0,
            ratio: Ratio::None,
        },
        Row {
            key: "switch_cpu_pct_4",
            label: "4 streams: switch CPU (% of one core)",
            decimals: 0,
            ratio: Ratio::None,
        },
        Row {
            key: "switch_cpu_pct_per_gbps_1",
            label: "1 stream: switch CPU per Gbit/s (% of one core, lower is better)",
            decimals: 1,
            ratio: Ratio::Lower,
        },
        Row {
            key: "switch_cpu_pct_per_gbps_4",
            label: "4 streams: switch CPU per Gbit/s (% of one core, lower is better)",
            decimals: 1,
            ratio: Ratio::Lower,
        },
    ],
};

const TABLES: &[&Table] = &[&UML, &QEMU];

/// Whether any column of `t` has results.
fn ran(results: &Results, t: &Table) -> bool {
    t.cols.iter().any(|c| {
        results
            .get(&(c.m, c.k))
            .is_some_and(|o| o.not_applicable.is_none())
    })
}

fn value(results: &Results, c: &Column, key: &str) -> Option<f64> {
    median_of(results, c.m, c.k, key)
}

fn cell(results: &Results, c: &Column, row: &Row) -> String {
    match results.get(&(c.m, c.k)) {
        None => "—".into(),
        Some(o) if o.samples.is_empty() && !o.errors.is_empty() => "failed".into(),
        Some(o) if o.samples.is_empty() => "—".into(),
        // Samples without this number: no switch CPU for the bridge.
        Some(_) => value(results, c, row.key)
            .map_or("n/a".into(), |v| format!("{v:.prec$}", prec = row.decimals)),
    }
}

fn ratio(results: &Results, t: &Table, r: &RatioCol, key: &str) -> Option<f64> {
    let a = value(results, &t.cols[r.a], key)?;
    let b = value(results, &t.cols[r.b], key)?;
    (b != 0.0).then_some(a / b)
}

fn table(results: &Results, t: &Table) -> String {
    let more = t
        .intro_more
        .map(|f| format!(" {}", f()))
        .unwrap_or_default();
    let mut out = format!("{}{more}\n\n| {} |", t.intro, t.corner);
    for c in t.cols {
        out.push_str(&format!(" {} |", c.label));
    }
    for r in t.ratios {
        out.push_str(&format!(" {} |", r.label));
    }
    out.push_str("\n|---|");
    out.push_str(&"---:|".repeat(t.cols.len() + t.ratios.len()));
    out.push('\n');
    for row in t.rows {
        out.push_str(&format!("| {} |", row.label));
        for c in t.cols {
            out.push_str(&format!(" {} |", cell(results, c, row)));
        }
        for r in t.ratios {
            let shown = match row.ratio {
                Ratio::None => String::new(),
                Ratio::Higher | Ratio::Lower => {
                    ratio(results, t, r, row.key).map_or("—".into(), |v| format!("{v:.2}"))
                }
            };
            out.push_str(&format!(" {shown} |"));
        }
        out.push('\n');
    }
    out
}

/// The guest tables that have results, as markdown.
pub fn tables(results: &Results) -> Vec<String> {
    TABLES
        .iter()
        .filter(|t| ran(results, t))
        .map(|t| table(results, t))
        .collect()
}

/// One line naming the virtio-net offloads the QEMU client guest
/// negotiated on each transport (first repetition), or None when no
/// QEMU row ran.
pub fn qemu_offloads(results: &Results) -> Option<String> {
    let parts: Vec<String> = QEMU
        .cols
        .iter()
        .filter_map(|c| {
            let o = results.get(&(c.m, c.k))?;
            o.samples.iter().find_map(|s| match s {
                Sample::QemuTcp(q) => Some(format!(
                    "{}: {}",
                    c.label,
                    if q.offloads.is_empty() {
                        "none".to_owned()
                    } else {
                        q.offloads.join(" ")
                    }
                )),
                _ => None,
            })
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "virtio-net offloads the QEMU client guest negotiated: {}.",
            parts.join("; ")
        )
    })
}

/// The guest tables' ratios, into the JSON record's `ratios`.
pub fn ratios_json(results: &Results, out: &mut Json) {
    for t in TABLES.iter().filter(|t| ran(results, t)) {
        for row in t.rows.iter().filter(|r| r.ratio != Ratio::None) {
            let mut entry = Json::obj();
            for r in t.ratios {
                entry.set(r.name, ratio(results, t, r, row.key));
                if row.ratio == Ratio::Higher {
                    entry.set(&format!("{} bar (issue 19)", r.name), r.bar);
                }
            }
            entry.set(
                "better",
                if row.ratio == Ratio::Higher {
                    "higher"
                } else {
                    "lower"
                },
            );
            out.set(&format!("{}.{}", t.name, row.key), entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::uml::UmlTcpSample;
    use super::*;

    fn uml(mbps: f64, cpu: f64) -> Sample {
        Sample::UmlTcp(UmlTcpSample {
            bits_per_s: mbps * 1e6,
            retransmits: 3.0,
            tx_dropped: 0.0,
            switch_cpu_pct: Some(cpu),
        })
    }

    #[test]
    fn uml_table_compares_the_transports() {
        let mut results = Results::new();
        let sy = SwitchKind::Switchyard;
        let mut put = |m, s| results.entry((m, sy)).or_default().samples.push(s);
        put(Measurement::UmlVirtioTcp, uml(3000.0, 30.0));
        put(Measurement::UmlTcp, uml(1000.0, 50.0));
        let t = tables(&results);
        assert_eq!(t.len(), 1);
        assert!(
            t[0].contains("| iperf3, 1 stream (Mbit/s) | 3000 | 1000 | 3.00 |"),
            "{}",
            t[0]
        );
        // 10 % per Gbit/s against 50: 0.20.
        assert!(t[0].contains("| 10.0 | 50.0 | 0.20 |"), "{}", t[0]);
        let mut j = Json::obj();
        ratios_json(&results, &mut j);
        let text = j.pretty();
        assert!(text.contains("uml_guests.mbps"), "{text}");
        assert!(tables(&Results::new()).is_empty());
    }

    #[test]
    fn qemu_offloads_are_named_per_transport() {
        use super::super::qemu::QemuTcpSample;
        let mut results = Results::new();
        assert!(qemu_offloads(&results).is_none());
        let q = |offloads: Vec<&'static str>| {
            Sample::QemuTcp(QemuTcpSample {
                runs: Vec::new(),
                offloads,
            })
        };
        let mut put = |m, k, s| results.entry((m, k)).or_default().samples.push(s);
        put(
            Measurement::QemuVhostUser,
            SwitchKind::Switchyard,
            q(vec!["csum", "host_tso4"]),
        );
        put(Measurement::QemuVde, SwitchKind::VdeSwitch, q(Vec::new()));
        let line = qemu_offloads(&results).unwrap_or_default();
        assert!(
            line.contains(
                "a: vhost-user, switchyard: csum host_tso4; c: -netdev vde, vde_switch: none"
            ),
            "{line}"
        );
    }
}
