//! The YAML configuration file. Every key is checked: an unknown key, a
//! wrong type or a bad value is an error naming the file, line and column.
//! `raw` is the file's shape, `switch` the switch settings, `ports` the
//! port list (built by the same registry as `--port`).

mod error;
mod ports;
mod raw;
mod switch;

pub use crate::settings::Extras;
use crate::settings::Settings;
pub use crate::values::{parse_busy_poll, parse_duration, show_busy_poll};
use crate::values::{parse_group, parse_octal};
use error::Blame;
pub use error::ConfigError;
use raw::File;
pub use raw::Seconds;
use std::net::SocketAddr;
use std::path::Path;

/// Reads and checks `path`, applying it over `base`.
pub fn load(path: &Path, base: &mut Settings) -> Result<Extras, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    apply(&text, path, base)
}

/// Checks YAML `text` (from `path`, for messages) and applies it.
pub fn apply(text: &str, path: &Path, base: &mut Settings) -> Result<Extras, ConfigError> {
    let file: File = if text.trim().is_empty() {
        File::default()
    } else {
        serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
    };
    let blame = Blame { path };
    let mut vlan_rules = switch::apply(&file.switch, base, &blame)?;
    if let Some(l) = file.log.level {
        base.log_level = l;
    }
    // Per-port `vlan:`/`tagged:` come after `switch.vlans`: a rule there
    // can still single out one port.
    let mut listed = ports::apply(file.ports, base, &blame)?;
    vlan_rules.append(&mut listed.vlan_rules);
    base.vlans.append(&mut vlan_rules);
    if !listed.controls.is_empty() {
        base.controls = listed.controls;
    }
    let metrics = file
        .metrics
        .map(|m| {
            m.listen.value.parse::<SocketAddr>().map_err(|_| {
                blame.at(
                    m.listen.referenced,
                    "metrics.listen".into(),
                    format!(
                        "{:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9590)",
                        m.listen.value
                    ),
                )
            })
        })
        .transpose()?;
    let admin_group = file
        .control
        .as_ref()
        .and_then(|c| c.admin_group.as_ref())
        .map(|g| {
            parse_group(&g.value)
                .map_err(|e| blame.at(g.referenced, "control.admin_group".into(), e))
        })
        .transpose()?;
    let control = file
        .control
        .map(|c| -> Result<_, ConfigError> {
            let mode = c
                .mode
                .map(|m| {
                    parse_octal(&m.value)
                        .map_err(|e| blame.at(m.referenced, "control.mode".into(), e))
                })
                .transpose()?;
            let group = c
                .group
                .map(|g| {
                    parse_group(&g.value)
                        .map_err(|e| blame.at(g.referenced, "control.group".into(), e))
                })
                .transpose()?;
            Ok((c.path, mode, group))
        })
        .transpose()?;
    Ok(Extras {
        metrics,
        control,
        admin_group,
        config_path: None,
        argv: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortSpec;
    use crate::settings::{Flavor, StdinPolicy, TapSpec};
    use std::time::Duration;
    use switchyard_switch::{EngineConfig, Mode};

    fn base() -> Settings {
        Settings {
            flavor: Flavor::Native,
            controls: Settings::default_controls(true),
            taps: vec![],
            ports: vec![],
            engine: EngineConfig::default(),
            numports: 1024,
            threads: 1,
            backpressure: true,
            busy_poll: Duration::ZERO,
            daemon: false,
            pidfile: None,
            log_level: "info".into(),
            stdin: StdinPolicy::Ignore,
            notes: vec![],
            static_macs: vec![],
            vlans: vec![],
            extras: Extras::default(),
        }
    }

    fn load_str(yaml: &str) -> Result<(Settings, Extras), ConfigError> {
        let mut s = base();
        let e = apply(yaml, Path::new("test.yaml"), &mut s)?;
        Ok((s, e))
    }

    #[test]
    fn vlans_from_switch_rules_and_port_keys() {
        let (s, _) = load_str(
            r#"
switch:
  vlans:
    - { port: "unix:1", untagged: 10 }
    - { port: "unix:*", untagged: 20 }
    - { port: "tap:up", untagged: none, tagged: "10,20-22" }
ports:
  - { name: lab, type: tap, device: tap1, vlan: 30 }
  - { name: trunk, type: stream, listen: "127.0.0.1:5555", vlan: 1, tagged: [10, 30] }
"#,
        )
        .expect("loads");
        let rules: Vec<String> = s
            .vlans
            .iter()
            .map(|(p, v)| format!("{}={v}", p.as_str()))
            .collect();
        assert_eq!(
            rules,
            [
                "unix:1=10",
                "unix:*=20",
                "tap:up=/10,20-22",
                "lab=30",
                "lab:*=30",
                "trunk=1/10,30",
                "trunk:*=1/10,30"
            ]
        );
    }

    #[test]
    fn bad_vlans_name_their_place() {
        for (yaml, want) in [
            (
                "switch: { vlans: [ { port: \"unix:1\", untagged: 4095 } ] }",
                "switch.vlans[0]",
            ),
            ("switch: { vlans: [ { port: x } ] }", "names no VLAN"),
            (
                "ports: [ { type: tap, device: t0, tagged: \"20-10\" } ]",
                "ports[0].vlan",
            ),
            (
                "ports: [ { type: unix, path: /tmp/x.ctl, vlan: 10 } ]",
                "a unix port has no option \"vlan\"",
            ),
        ] {
            let e = load_str(yaml).expect_err(yaml).to_string();
            assert!(e.contains(want), "{yaml}: {e}");
        }
    }

    #[test]
    fn the_design_sketch_loads() {
        let (s, e) = load_str(
            r#"
switch: { mode: hub, fdb: { aging: 5m, max_entries: 1000 } }
ports:
  - { name: guests, type: unix, path: /run/switchyard/uml.ctl }
  - { name: vde, type: unix, directory: /run/switchyard/vde, group: "0" }
  - { name: host,   type: tap,  device: tap0 }
  - { name: dc2,    type: vxlan, vni: 42, local: 10.0.0.1, remotes: [10.0.0.2] }
  - { type: udp, local: "127.0.0.1:6002", remote: "127.0.0.1:6001" }
  - { type: mcast }
  - { type: stream, connect: /run/passt.sock }
metrics: { listen: "127.0.0.1:9590" }
control: { path: /run/switchyard/control.sock }
"#,
        )
        .expect("loads");
        assert_eq!(s.engine.mode, Mode::Hub);
        assert_eq!(s.engine.fdb.aging, Duration::from_secs(300));
        assert_eq!(s.engine.fdb.max_entries, 1000);
        assert_eq!(s.controls.len(), 2);
        assert_eq!(s.controls[1].mode, Some(0o660));
        assert_eq!(
            s.taps,
            vec![TapSpec {
                name: Some("host".into()),
                device: "tap0".into(),
                offload: true,
            }]
        );
        assert_eq!(s.ports.len(), 4);
        assert_eq!(e.metrics, Some("127.0.0.1:9590".parse().expect("addr")));
        assert!(e.control.is_some());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_place() {
        let e = load_str("switch: { mdoe: hub }\n").expect_err("unknown key");
        let m = e.to_string();
        assert!(m.contains("test.yaml") && m.contains("mdoe"), "{m}");
        let e = load_str("ports:\n  - { type: udp, local: nowhere, remote: \"127.0.0.1:1\" }\n")
            .expect_err("bad addr");
        assert!(e.to_string().contains("ports[0].local"), "{e}");
        let e = load_str("ports:\n  - { type: floppy }\n").expect_err("bad type");
        assert!(e.to_string().contains("floppy"), "{e}");
        let e = load_str("ports:\n  - { type: tap, device: a }\n  - { type: tap, device: a }\n")
            .expect_err("dup");
        assert!(e.to_string().contains("twice"), "{e}");
        let e = load_str("switch: { fdb: { aging: 3 parsecs } }\n").expect_err("bad duration");
        assert!(e.to_string().contains("unit"), "{e}");
    }

    #[test]
    fn guards_from_the_file() {
        let (s, _) = load_str(
            "switch:\n  bpdu_guard: true\n  storm_control: { broadcast: 100, unknown_unicast: 50 }\n",
        )
        .expect("loads");
        let g = s.engine.guards;
        assert!(g.bpdu_guard);
        assert_eq!(
            (
                g.storm_broadcast,
                g.storm_multicast,
                g.storm_unknown_unicast
            ),
            (100, 0, 50)
        );
        assert!(load_str("switch:\n  storm_control: { broadcst: 1 }\n").is_err());
    }

    #[test]
    fn loop_protection_and_port_limit_from_the_file() {
        let (s, _) = load_str(
            "switch:\n  fdb: { max_entries_per_port: 0 }\n  \
             loop_protection: { enabled: false, threshold: 3, hold_down: 5s }\n",
        )
        .expect("loads");
        assert_eq!(s.engine.fdb.max_entries_per_port, None, "0: no limit");
        let l = s.engine.loops;
        assert_eq!(
            (l.enabled, l.threshold, l.hold_down),
            (false, 3, Duration::from_secs(5))
        );
        let (s, _) = load_str("switch: { mode: switch }\n").expect("loads");
        assert_eq!(s.engine.fdb.max_entries_per_port, Some(2048));
        assert!(s.engine.loops.enabled);
        let e = load_str("switch:\n  loop_protection: { threshold: 0 }\n").expect_err("zero");
        assert!(e.to_string().contains("loop_protection.threshold"), "{e}");
    }

    #[test]
    fn backpressure_from_the_file() {
        assert!(load_str("").expect("loads").0.backpressure, "on by default");
        let (s, _) = load_str("switch:\n  backpressure: false\n").expect("loads");
        assert!(!s.backpressure);
        let (s, _) = load_str("switch:\n  backpressure: true\n").expect("loads");
        assert!(s.backpressure);
        // The command line's spelling works too.
        let (s, _) = load_str("switch: { backpressure: off }").expect("loads");
        assert!(!s.backpressure);
        let e = load_str("switch:\n  backpressure: sometimes\n").expect_err("bad value");
        let m = e.to_string();
        assert!(m.contains("test.yaml") && m.contains("line 2"), "{m}");
        let e = load_str("switch:\n  backpresure: false\n").expect_err("unknown key");
        let m = e.to_string();
        assert!(m.contains("test.yaml") && m.contains("backpresure"), "{m}");
    }

    #[test]
    fn busy_poll_from_the_file() {
        let (s, _) = load_str("").expect("loads");
        assert_eq!(s.busy_poll, Duration::ZERO, "off by default");
        let (s, _) = load_str("switch:\n  busy_poll: 20us\n").expect("loads");
        assert_eq!(s.busy_poll, Duration::from_micros(20));
        let (s, _) = load_str("switch: { busy_poll: 1ms }").expect("loads");
        assert_eq!(s.busy_poll, Duration::from_millis(1));
        let (s, _) = load_str("switch: { busy_poll: 0 }").expect("loads");
        assert_eq!(s.busy_poll, Duration::ZERO);
        for (yaml, want) in [
            ("switch:\n  busy_poll: 1001us\n", "maximum is 1ms"),
            ("switch:\n  busy_poll: 20\n", "maximum is 1ms"),
            ("switch:\n  busy_poll: 20ns\n", "use us, ms, s, m or h"),
        ] {
            let m = load_str(yaml).expect_err(yaml).to_string();
            assert!(
                m.contains("test.yaml") && m.contains("line 2") && m.contains(want),
                "{yaml}: {m}"
            );
        }
    }

    #[test]
    fn port_values_read_as_yaml_writes_them() {
        let (s, _) = load_str(
            r#"
ports:
  - { type: vxlan, vni: 0x2a, remotes: [192.0.2.1], strict: yes, port: 8472 }
  - { type: unix, path: /tmp/y.ctl, mode: 0640 }
  - { type: mcast, ttl: ~ }
  - { type: tap, device: t9, offload: off }
"#,
        )
        .expect("loads");
        match &s.ports[..] {
            [PortSpec::Vxlan(v), PortSpec::Mcast(m)] => {
                assert_eq!((v.vni, v.strict, v.local.port()), (42, true, 8472));
                assert_eq!(m.ttl, 1, "null is absent");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(s.controls[0].mode, Some(0o640), "a mode is read as written");
        assert!(!s.taps[0].offload);
    }

    #[test]
    fn the_admin_group_is_read_by_name_or_number() {
        let (_, e) = load_str("control: { path: /tmp/c.sock, admin_group: \"0\" }").expect("loads");
        assert_eq!(e.admin_group, Some(0));
        let (_, e) = load_str("control: { path: /tmp/c.sock, admin_group: root }").expect("loads");
        assert_eq!(e.admin_group, Some(0));
        let (_, e) = load_str("control: { path: /tmp/c.sock, admin_group: 4242 }").expect("loads");
        assert_eq!(e.admin_group, Some(4242));
        let (_, e) = load_str("control: { path: /tmp/c.sock }").expect("loads");
        assert_eq!(e.admin_group, None);
        let m =
            load_str("control:\n  path: /tmp/c.sock\n  admin_group: no-such-group-switchyard\n")
                .expect_err("no such group")
                .to_string();
        assert!(
            m.contains("line 3")
                && m.contains("control.admin_group")
                && m.contains("does not exist"),
            "{m}"
        );
    }

    #[test]
    fn empty_file_keeps_defaults() {
        let (s, e) = load_str("").expect("empty is fine");
        assert_eq!(s.controls.len(), 3);
        assert_eq!(e, Extras::default());
    }
}
