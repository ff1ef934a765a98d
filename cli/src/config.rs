//! The YAML configuration file. Every key is checked: an unknown key, a
//! wrong type or a bad value is an error naming the file, line and column.

use crate::args::port_spec::PortSpec;
use crate::settings::{parse_group, parse_octal, Settings};
use serde::Deserialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;
use switchyard_switch::ports::mcast::{McastConfig, DEFAULT_GROUP};
use switchyard_switch::ports::stream::{StreamConfig, StreamRole};
use switchyard_switch::ports::udp::UdpConfig;
use switchyard_switch::ports::unix::{Layout, UnixConfig};
use switchyard_switch::ports::vxlan::{VxlanConfig, DEFAULT_PORT};
use switchyard_switch::ports::Endpoint;
use switchyard_switch::{FdbConfig, Mode};

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// YAML syntax, an unknown key, a wrong type (with line and column).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with location and snippet.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("config file {path}: {field}: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// Where in the file, e.g. `ports[2].remote`.
        field: String,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// A duration: seconds as a number, or a string such as `300s`, `5m`,
/// `1h`, `500ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seconds(pub Duration);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Seconds(Duration::from_secs(n))),
            Raw::Text(t) => parse_duration(&t)
                .map(Seconds)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Parses `300`, `300s`, `5m`, `1h`, `500ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 300s, 5m, 1h, 500ms)"))?;
    match unit.trim() {
        "" | "s" => Ok(Duration::from_secs(n)),
        "ms" => Ok(Duration::from_millis(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        u => Err(format!("unknown unit {u:?} in {s:?}; use ms, s, m or h")),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    switch: SwitchSection,
    #[serde(default)]
    ports: Vec<PortEntry>,
    metrics: Option<MetricsSection>,
    control: Option<ControlSection>,
    #[serde(default)]
    log: LogSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchSection {
    mode: Option<ModeName>,
    #[serde(default)]
    fdb: FdbSection,
    numports: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ModeName {
    Switch,
    Hub,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FdbSection {
    aging: Option<Seconds>,
    max_entries: Option<usize>,
    max_entries_per_port: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSection {
    path: PathBuf,
    mode: Option<String>,
    group: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum PortEntry {
    Unix {
        name: Option<String>,
        path: Option<PathBuf>,
        directory: Option<PathBuf>,
        mode: Option<String>,
        dir_mode: Option<String>,
        group: Option<String>,
    },
    Tap {
        name: Option<String>,
        device: String,
    },
    Udp {
        name: Option<String>,
        local: String,
        remote: String,
    },
    Mcast {
        name: Option<String>,
        group: Option<String>,
        ttl: Option<u32>,
        interface: Option<Ipv4Addr>,
    },
    Stream {
        name: Option<String>,
        listen: Option<String>,
        connect: Option<String>,
    },
    Vxlan {
        name: Option<String>,
        vni: u32,
        local: Option<IpAddr>,
        port: Option<u16>,
        remotes: Vec<IpAddr>,
        #[serde(default)]
        strict: bool,
    },
}

/// The parts of the file beyond [`Settings`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extras {
    /// Where the metrics endpoint listens.
    pub metrics: Option<SocketAddr>,
    /// The control socket: path, mode, gid.
    pub control: Option<(PathBuf, Option<u32>, Option<u32>)>,
    /// The file these came from, for reload.
    pub config_path: Option<PathBuf>,
    /// The command line, re-read on reload so flags still override.
    pub argv: Vec<std::ffi::OsString>,
}

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
    let bad = |field: String, message: String| ConfigError::Value {
        path: path.to_path_buf(),
        field,
        message,
    };
    if let Some(m) = file.switch.mode {
        base.engine.mode = match m {
            ModeName::Switch => Mode::Switch,
            ModeName::Hub => Mode::Hub,
        };
    }
    let fdb = &file.switch.fdb;
    let aging = fdb.aging.map(|s| s.0).unwrap_or(base.engine.fdb.aging);
    if aging.is_zero() {
        return Err(bad("switch.fdb.aging".into(), "must be at least 1s".into()));
    }
    base.engine.fdb = FdbConfig::new(
        aging,
        fdb.max_entries.unwrap_or(base.engine.fdb.max_entries),
        fdb.max_entries_per_port
            .or(base.engine.fdb.max_entries_per_port),
    );
    if let Some(n) = file.switch.numports {
        if n == 0 || n > 65_535 {
            return Err(bad("switch.numports".into(), "must be 1 to 65535".into()));
        }
        base.numports = n;
    }
    if let Some(l) = file.log.level {
        base.log_level = l;
    }
    let mut names: Vec<String> = Vec::new();
    let mut counts: std::collections::HashMap<&'static str, usize> = Default::default();
    let mut file_controls = Vec::new();
    for (i, entry) in file.ports.into_iter().enumerate() {
        let at = |k: &str| format!("ports[{i}].{k}");
        let kind: &'static str = match &entry {
            PortEntry::Unix { .. } => "unix",
            PortEntry::Tap { .. } => "tap",
            PortEntry::Udp { .. } => "udp",
            PortEntry::Mcast { .. } => "mcast",
            PortEntry::Stream { .. } => "stream",
            PortEntry::Vxlan { .. } => "vxlan",
        };
        let n = counts.entry(kind).or_insert(0);
        *n += 1;
        let default_name = format!("{kind}{n}");
        let endpoint = |k: &str, v: &str| v.parse::<Endpoint>().map_err(|e| bad(at(k), e));
        let name = match entry {
            PortEntry::Unix {
                name,
                path,
                directory,
                mode,
                dir_mode,
                group,
            } => {
                let layout = match (path, directory) {
                    (Some(p), None) => Layout::Socket(p),
                    (None, Some(d)) => Layout::Directory(d),
                    _ => {
                        return Err(bad(
                            at("path"),
                            "a unix port needs exactly one of path: (a control socket) or directory: (a VDE directory)".into(),
                        ))
                    }
                };
                let octal = |k: &str, v: Option<String>| {
                    v.map(|m| parse_octal(&m).map_err(|e| bad(at(k), e)))
                        .transpose()
                };
                let group = group
                    .map(|g| parse_group(&g).map_err(|e| bad(at("group"), e)))
                    .transpose()?;
                let mode = octal("mode", mode)?
                    .or(group.map(|_| 0o660))
                    .or(Some(0o600));
                file_controls.push(UnixConfig::new(layout).with_permissions(
                    mode,
                    octal("dir_mode", dir_mode)?,
                    group,
                ));
                name.unwrap_or(default_name)
            }
            PortEntry::Tap { name, device } => {
                base.taps.push(device.clone());
                name.unwrap_or(device)
            }
            PortEntry::Udp {
                name,
                local,
                remote,
            } => {
                let name = name.unwrap_or(default_name);
                base.ports.push(PortSpec::Udp(UdpConfig::new(
                    name.clone(),
                    endpoint("local", &local)?,
                    endpoint("remote", &remote)?,
                )));
                name
            }
            PortEntry::Mcast {
                name,
                group,
                ttl,
                interface,
            } => {
                let name = name.unwrap_or(default_name);
                let group = match group {
                    Some(g) => g.parse::<SocketAddrV4>().map_err(|_| {
                        bad(
                            at("group"),
                            format!("{g:?} is not GROUP:PORT (e.g. 239.192.168.1:1102)"),
                        )
                    })?,
                    None => DEFAULT_GROUP,
                };
                let ttl = ttl.unwrap_or(1);
                if ttl > 255 {
                    return Err(bad(at("ttl"), "must be 0 to 255".into()));
                }
                base.ports.push(PortSpec::Mcast(
                    McastConfig::new(name.clone(), group).with_options(ttl, interface),
                ));
                name
            }
            PortEntry::Stream {
                name,
                listen,
                connect,
            } => {
                let name = name.unwrap_or(default_name);
                let (role, ep) = match (listen, connect) {
                    (Some(a), None) => (StreamRole::Listen, endpoint("listen", &a)?),
                    (None, Some(a)) => (StreamRole::Connect, endpoint("connect", &a)?),
                    _ => {
                        return Err(bad(
                            at("listen"),
                            "a stream port needs exactly one of listen: or connect:".into(),
                        ))
                    }
                };
                base.ports
                    .push(PortSpec::Stream(StreamConfig::new(name.clone(), role, ep)));
                name
            }
            PortEntry::Vxlan {
                name,
                vni,
                local,
                port,
                remotes,
                strict,
            } => {
                let name = name.unwrap_or(default_name);
                if vni > 0x00ff_ffff {
                    return Err(bad(at("vni"), "must be 0 to 16777215".into()));
                }
                if remotes.is_empty() {
                    return Err(bad(
                        at("remotes"),
                        "list at least one remote VTEP address".into(),
                    ));
                }
                let ip = local.unwrap_or(if remotes[0].is_ipv6() {
                    IpAddr::from([0u16; 8])
                } else {
                    IpAddr::from([0u8; 4])
                });
                let local = SocketAddr::new(ip, port.unwrap_or(DEFAULT_PORT));
                base.ports.push(PortSpec::Vxlan(
                    VxlanConfig::new(name.clone(), vni, local, remotes).with_strict(strict),
                ));
                name
            }
        };
        if names.contains(&name) {
            return Err(bad(at("name"), format!("the name {name:?} is used twice")));
        }
        names.push(name);
    }
    if !file_controls.is_empty() {
        base.controls = file_controls;
    }
    let metrics = file
        .metrics
        .map(|m| {
            m.listen.parse::<SocketAddr>().map_err(|_| {
                bad(
                    "metrics.listen".into(),
                    format!("{:?} is not ADDRESS:PORT (e.g. 127.0.0.1:9590)", m.listen),
                )
            })
        })
        .transpose()?;
    let control = file
        .control
        .map(|c| -> Result<_, ConfigError> {
            let mode = c
                .mode
                .map(|m| parse_octal(&m).map_err(|e| bad("control.mode".into(), e)))
                .transpose()?;
            let group = c
                .group
                .map(|g| parse_group(&g).map_err(|e| bad("control.group".into(), e)))
                .transpose()?;
            Ok((c.path, mode, group))
        })
        .transpose()?;
    Ok(Extras {
        metrics,
        control,
        config_path: None,
        argv: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{Flavor, StdinPolicy};
    use switchyard_switch::EngineConfig;

    fn base() -> Settings {
        Settings {
            flavor: Flavor::Native,
            controls: Settings::default_controls(true),
            taps: vec![],
            ports: vec![],
            engine: EngineConfig::default(),
            numports: 1024,
            threads: 1,
            daemon: false,
            pidfile: None,
            log_level: "info".into(),
            stdin: StdinPolicy::Ignore,
            notes: vec![],
            extras: Extras::default(),
        }
    }

    fn load_str(yaml: &str) -> Result<(Settings, Extras), ConfigError> {
        let mut s = base();
        let e = apply(yaml, Path::new("test.yaml"), &mut s)?;
        Ok((s, e))
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
        assert_eq!(s.taps, vec!["tap0".to_string()]);
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
    fn empty_file_keeps_defaults() {
        let (s, e) = load_str("").expect("empty is fine");
        assert_eq!(s.controls.len(), 3);
        assert_eq!(e, Extras::default());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("five").is_err());
    }
}
