//! The YAML configuration file. Every key is checked: an unknown key, a
//! wrong type or a bad value is an error naming the file, line and column.

use crate::ports::PortSpec;
pub use crate::settings::Extras;
use crate::settings::{Settings, TapSpec};
use crate::values::{check_busy_poll, parse_group, parse_octal};
pub use crate::values::{parse_busy_poll, parse_duration, show_busy_poll};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
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
/// `1h`, `500ms`, `20us`.
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

type Sp<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    switch: SwitchSection,
    #[serde(default)]
    ports: Vec<RawPort>,
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
    numports: Option<Sp<u32>>,
    #[serde(default)]
    bpdu_guard: bool,
    #[serde(default)]
    storm_control: StormSection,
    /// Hold unicast for a full peer (pausing its sender) rather than drop it.
    backpressure: Option<bool>,
    /// Keep polling an idle unix port this long before sleeping (`20us`).
    busy_poll: Option<Sp<Seconds>>,
    #[serde(default)]
    static_macs: Vec<StaticMac>,
    #[serde(default)]
    vlans: Vec<VlanRule>,
}

/// `switch.vlans` entry: which ports (a name, or a prefix ending in `*`)
/// are in which VLANs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VlanRule {
    port: Sp<String>,
    untagged: Option<Sp<VlanId>>,
    tagged: Option<Sp<VlanList>>,
}

/// An untagged VLAN: an id, or `none`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum VlanId {
    Number(u64),
    Text(String),
}

/// Tagged VLANs: `[10, 20]`, `10`, or `"10,20-30"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum VlanList {
    Numbers(Vec<u64>),
    Number(u64),
    Text(String),
}

/// A port's membership from its `untagged`/`vlan` and `tagged` values.
fn port_vlans(
    untagged: Option<&Sp<VlanId>>,
    tagged: Option<&Sp<VlanList>>,
) -> Result<switchyard_switch::PortVlans, (Option<Location>, String)> {
    use switchyard_switch::vlan::{parse_vid, VlanSet};
    let untagged_vid = match untagged {
        None => None,
        Some(u) => match &u.value {
            VlanId::Text(t) if t == "none" => None,
            VlanId::Text(t) => Some(parse_vid(t).map_err(|e| (Some(u.referenced), e))?),
            VlanId::Number(n) => {
                Some(parse_vid(&n.to_string()).map_err(|e| (Some(u.referenced), e))?)
            }
        },
    };
    let mut set = VlanSet::default();
    if let Some(t) = tagged {
        let at = |e| (Some(t.referenced), e);
        match &t.value {
            VlanList::Numbers(ns) => {
                for n in ns {
                    set.insert(parse_vid(&n.to_string()).map_err(at)?);
                }
            }
            VlanList::Number(n) => set.insert(parse_vid(&n.to_string()).map_err(at)?),
            VlanList::Text(text) => set = text.parse().map_err(at)?,
        }
    }
    if untagged_vid.is_none() && set.is_empty() {
        return Err((
            untagged
                .map(|u| u.referenced)
                .or(tagged.map(|t| t.referenced)),
            "names no VLAN: give an untagged VLAN, tagged VLANs, or both".into(),
        ));
    }
    Ok(switchyard_switch::PortVlans {
        untagged: untagged_vid,
        tagged: set,
    })
}

/// A static MAC entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StaticMac {
    mac: Sp<String>,
    port: String,
}

/// Frames per second per port; 0 or absent: no limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StormSection {
    #[serde(default)]
    broadcast: u32,
    #[serde(default)]
    multicast: u32,
    #[serde(default)]
    unknown_unicast: u32,
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
    aging: Option<Sp<Seconds>>,
    max_entries: Option<usize>,
    max_entries_per_port: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MetricsSection {
    listen: Sp<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSection {
    path: PathBuf,
    mode: Option<Sp<String>>,
    group: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogSection {
    level: Option<String>,
}

/// One entry of `ports:`. Every key any type knows is accepted here (a key
/// nobody knows is a parse error with its exact place); which keys fit
/// which `type:` is checked afterwards, also with places.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    #[serde(rename = "type")]
    kind: Sp<String>,
    name: Option<Sp<String>>,
    path: Option<Sp<PathBuf>>,
    directory: Option<Sp<PathBuf>>,
    mode: Option<Sp<String>>,
    dir_mode: Option<Sp<String>>,
    /// unix: the sockets' group owner; mcast: GROUP:PORT.
    group: Option<Sp<String>>,
    device: Option<Sp<String>>,
    local: Option<Sp<String>>,
    remote: Option<Sp<String>>,
    ttl: Option<Sp<u32>>,
    interface: Option<Sp<String>>,
    listen: Option<Sp<String>>,
    connect: Option<Sp<String>>,
    vni: Option<Sp<u32>>,
    port: Option<Sp<u16>>,
    remotes: Option<Vec<Sp<String>>>,
    strict: Option<Sp<bool>>,
    promisc: Option<Sp<bool>>,
    filter: Option<Sp<String>>,
    monitor: Option<Sp<bool>>,
    mac_nat: Option<Sp<bool>>,
    /// How long an idle MAC-NAT binding is kept.
    mac_nat_aging: Option<Sp<Seconds>>,
    /// The port's untagged VLAN (or `none`).
    vlan: Option<Sp<VlanId>>,
    /// The VLANs the port carries tagged.
    tagged: Option<Sp<VlanList>>,
    /// tap: checksum and TSO offloads (default on).
    offload: Option<Sp<bool>>,
}

/// The keys each port type takes (besides `type` and `name`).
/// A unix port takes no `vlan`/`tagged`: its clients are ports of their
/// own, named `unix:N`, and get VLANs through `switch.vlans`.
const KEYS: &[(&str, &[&str])] = &[
    ("unix", &["path", "directory", "mode", "dir_mode", "group"]),
    ("tap", &["device", "vlan", "tagged", "offload"]),
    ("udp", &["local", "remote", "vlan", "tagged"]),
    ("mcast", &["group", "ttl", "interface", "vlan", "tagged"]),
    ("stream", &["listen", "connect", "vlan", "tagged"]),
    (
        "vxlan",
        &[
            "vni", "local", "port", "remotes", "strict", "vlan", "tagged",
        ],
    ),
    (
        "pcap",
        &[
            "device",
            "promisc",
            "filter",
            "monitor",
            "mac_nat",
            "mac_nat_aging",
            "vlan",
            "tagged",
        ],
    ),
];

impl RawPort {
    /// Every key present, with where it was written.
    fn present(&self) -> Vec<(&'static str, Location)> {
        let mut v = Vec::new();
        let mut add = |k: &'static str, l: Option<Location>| {
            if let Some(l) = l {
                v.push((k, l));
            }
        };
        add("path", self.path.as_ref().map(|x| x.referenced));
        add("directory", self.directory.as_ref().map(|x| x.referenced));
        add("mode", self.mode.as_ref().map(|x| x.referenced));
        add("dir_mode", self.dir_mode.as_ref().map(|x| x.referenced));
        add("group", self.group.as_ref().map(|x| x.referenced));
        add("device", self.device.as_ref().map(|x| x.referenced));
        add("local", self.local.as_ref().map(|x| x.referenced));
        add("remote", self.remote.as_ref().map(|x| x.referenced));
        add("ttl", self.ttl.as_ref().map(|x| x.referenced));
        add("interface", self.interface.as_ref().map(|x| x.referenced));
        add("listen", self.listen.as_ref().map(|x| x.referenced));
        add("connect", self.connect.as_ref().map(|x| x.referenced));
        add("vni", self.vni.as_ref().map(|x| x.referenced));
        add("port", self.port.as_ref().map(|x| x.referenced));
        add(
            "remotes",
            self.remotes
                .as_ref()
                .and_then(|r| r.first())
                .map(|x| x.referenced),
        );
        add("strict", self.strict.as_ref().map(|x| x.referenced));
        add("promisc", self.promisc.as_ref().map(|x| x.referenced));
        add("filter", self.filter.as_ref().map(|x| x.referenced));
        add("monitor", self.monitor.as_ref().map(|x| x.referenced));
        add("mac_nat", self.mac_nat.as_ref().map(|x| x.referenced));
        add(
            "mac_nat_aging",
            self.mac_nat_aging.as_ref().map(|x| x.referenced),
        );
        add("vlan", self.vlan.as_ref().map(|x| x.referenced));
        add("tagged", self.tagged.as_ref().map(|x| x.referenced));
        add("offload", self.offload.as_ref().map(|x| x.referenced));
        v
    }
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
    let bad = |at: Location, field: String, message: String| ConfigError::Value {
        path: path.to_path_buf(),
        field: if at.line() > 0 {
            format!("line {} column {}: {field}", at.line(), at.column())
        } else {
            field
        },
        message,
    };
    if let Some(m) = file.switch.mode {
        base.engine.mode = match m {
            ModeName::Switch => Mode::Switch,
            ModeName::Hub => Mode::Hub,
        };
    }
    let fdb = &file.switch.fdb;
    let aging = match &fdb.aging {
        Some(a) if a.value.0.is_zero() => {
            return Err(bad(
                a.referenced,
                "switch.fdb.aging".into(),
                "must be at least 1s".into(),
            ))
        }
        Some(a) => a.value.0,
        None => base.engine.fdb.aging,
    };
    base.engine.fdb = FdbConfig::new(
        aging,
        fdb.max_entries.unwrap_or(base.engine.fdb.max_entries),
        fdb.max_entries_per_port
            .or(base.engine.fdb.max_entries_per_port),
    );
    if let Some(n) = &file.switch.numports {
        if n.value == 0 || n.value > 65_535 {
            return Err(bad(
                n.referenced,
                "switch.numports".into(),
                "must be 1 to 65535".into(),
            ));
        }
        base.numports = n.value;
    }
    let storm = &file.switch.storm_control;
    base.engine.guards = switchyard_switch::engine::Guards::new(
        file.switch.bpdu_guard,
        storm.broadcast,
        storm.multicast,
        storm.unknown_unicast,
    );
    if let Some(on) = file.switch.backpressure {
        base.backpressure = on;
    }
    if let Some(b) = &file.switch.busy_poll {
        base.busy_poll = check_busy_poll(b.value.0)
            .map_err(|e| bad(b.referenced, "switch.busy_poll".into(), e))?;
    }
    for (i, m) in file.switch.static_macs.iter().enumerate() {
        let mac = m
            .mac
            .value
            .parse()
            .map_err(|e| bad(m.mac.referenced, format!("switch.static_macs[{i}].mac"), e))?;
        base.static_macs.push((mac, m.port.clone()));
    }
    let mut vlan_rules = Vec::new();
    for (i, r) in file.switch.vlans.iter().enumerate() {
        let field = format!("switch.vlans[{i}]");
        if r.port.value.is_empty() {
            return Err(bad(
                r.port.referenced,
                format!("{field}.port"),
                "is empty".into(),
            ));
        }
        let vlans = port_vlans(r.untagged.as_ref(), r.tagged.as_ref())
            .map_err(|(at, e)| bad(at.unwrap_or(r.port.referenced), field.clone(), e))?;
        vlan_rules.push((
            switchyard_switch::vlan::PortPattern::new(r.port.value.clone()),
            vlans,
        ));
    }
    // Per-port `vlan:`/`tagged:` come after `switch.vlans`: a rule there
    // can still single out one port.
    let mut port_rules = Vec::new();
    if let Some(l) = file.log.level {
        base.log_level = l;
    }
    let mut names: Vec<String> = Vec::new();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut file_controls = Vec::new();
    for (i, p) in file.ports.into_iter().enumerate() {
        let at = |k: &str| format!("ports[{i}].{k}");
        let kind = p.kind.value.clone();
        let Some((_, allowed)) = KEYS.iter().find(|(k, _)| *k == kind) else {
            let kinds: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
            return Err(bad(
                p.kind.referenced,
                at("type"),
                format!("unknown port type {kind:?}; one of {}", kinds.join(", ")),
            ));
        };
        for (key, loc) in p.present() {
            if !allowed.contains(&key) {
                return Err(bad(
                    loc,
                    at(key),
                    format!(
                        "a {kind} port has no option {key:?}; it takes {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
        let n = counts.entry(kind.clone()).or_insert(0);
        *n += 1;
        let default_name = format!("{kind}{n}");
        let need = |v: Option<Sp<String>>, key: &str| {
            v.ok_or_else(|| {
                bad(
                    p.kind.referenced,
                    at(key),
                    format!("a {kind} port needs {key}:"),
                )
            })
        };
        let endpoint = |v: Sp<String>, key: &str| {
            v.value
                .parse::<Endpoint>()
                .map_err(|e| bad(v.referenced, at(key), e))
        };
        let name_loc = p
            .name
            .as_ref()
            .map(|n| n.referenced)
            .unwrap_or(p.kind.referenced);
        let given_name = p.name.clone().map(|n| n.value);
        let name = match kind.as_str() {
            "unix" => {
                let layout = match (p.path.clone(), p.directory.clone()) {
                    (Some(x), None) => Layout::Socket(x.value),
                    (None, Some(d)) => Layout::Directory(d.value),
                    _ => {
                        return Err(bad(
                            p.kind.referenced,
                            at("path"),
                            "a unix port needs exactly one of path: (a control socket) or directory: (a VDE directory)".into(),
                        ))
                    }
                };
                let octal = |k: &str, v: &Option<Sp<String>>| {
                    v.as_ref()
                        .map(|m| parse_octal(&m.value).map_err(|e| bad(m.referenced, at(k), e)))
                        .transpose()
                };
                let group = p
                    .group
                    .as_ref()
                    .map(|g| parse_group(&g.value).map_err(|e| bad(g.referenced, at("group"), e)))
                    .transpose()?;
                let mode = octal("mode", &p.mode)?
                    .or(group.map(|_| 0o660))
                    .or(Some(0o600));
                file_controls.push(UnixConfig::new(layout).with_permissions(
                    mode,
                    octal("dir_mode", &p.dir_mode)?,
                    group,
                ));
                given_name.unwrap_or(default_name)
            }
            "tap" => {
                let device = need(p.device.clone(), "device")?.value;
                let spec = TapSpec {
                    name: given_name,
                    device,
                    offload: p.offload.as_ref().map(|o| o.value).unwrap_or(true),
                };
                let name = spec.port_name();
                base.taps.push(spec);
                name
            }
            "udp" => {
                let name = given_name.unwrap_or(default_name);
                let local = endpoint(need(p.local.clone(), "local")?, "local")?;
                let remote = endpoint(need(p.remote.clone(), "remote")?, "remote")?;
                base.ports
                    .push(PortSpec::Udp(UdpConfig::new(name.clone(), local, remote)));
                name
            }
            "mcast" => {
                let name = given_name.unwrap_or(default_name);
                let group = match &p.group {
                    Some(g) => g.value.parse::<SocketAddrV4>().map_err(|_| {
                        bad(
                            g.referenced,
                            at("group"),
                            format!("{:?} is not GROUP:PORT (e.g. 239.192.168.1:1102)", g.value),
                        )
                    })?,
                    None => DEFAULT_GROUP,
                };
                let ttl = match &p.ttl {
                    Some(t) if t.value > 255 => {
                        return Err(bad(t.referenced, at("ttl"), "must be 0 to 255".into()))
                    }
                    Some(t) => t.value,
                    None => 1,
                };
                let interface = p
                    .interface
                    .as_ref()
                    .map(|i| {
                        i.value.parse::<Ipv4Addr>().map_err(|_| {
                            bad(
                                i.referenced,
                                at("interface"),
                                format!("{:?} is not an IPv4 address", i.value),
                            )
                        })
                    })
                    .transpose()?;
                base.ports.push(PortSpec::Mcast(
                    McastConfig::new(name.clone(), group).with_options(ttl, interface),
                ));
                name
            }
            "stream" => {
                let name = given_name.unwrap_or(default_name);
                let (role, ep) = match (p.listen.clone(), p.connect.clone()) {
                    (Some(a), None) => (StreamRole::Listen, endpoint(a, "listen")?),
                    (None, Some(a)) => (StreamRole::Connect, endpoint(a, "connect")?),
                    _ => {
                        return Err(bad(
                            p.kind.referenced,
                            at("listen"),
                            "a stream port needs exactly one of listen: or connect:".into(),
                        ))
                    }
                };
                base.ports
                    .push(PortSpec::Stream(StreamConfig::new(name.clone(), role, ep)));
                name
            }
            "pcap" => {
                let name = given_name.unwrap_or(default_name);
                let device = need(p.device.clone(), "device")?.value;
                let mac_nat = p.mac_nat.as_ref().map(|v| v.value).unwrap_or(false);
                let promisc = p.promisc.as_ref().map(|v| v.value).unwrap_or(!mac_nat);
                let monitor = p.monitor.as_ref().map(|v| v.value).unwrap_or(false);
                let filter = p.filter.clone().map(|f| f.value);
                let aging = match &p.mac_nat_aging {
                    Some(a) if a.value.0.is_zero() => {
                        return Err(bad(
                            a.referenced,
                            at("mac_nat_aging"),
                            "must be at least 1s".into(),
                        ))
                    }
                    Some(a) => Some(a.value.0),
                    None => None,
                };
                base.ports.push(PortSpec::Pcap(
                    switchyard_bridge::PcapConfig::new(name.clone(), device)
                        .with_options(promisc, filter, monitor, mac_nat)
                        .with_mac_nat_aging(aging),
                ));
                name
            }
            _ => {
                let name = given_name.unwrap_or(default_name);
                let vni = p.vni.as_ref().ok_or_else(|| {
                    bad(
                        p.kind.referenced,
                        at("vni"),
                        "a vxlan port needs vni:".into(),
                    )
                })?;
                if vni.value > 0x00ff_ffff {
                    return Err(bad(
                        vni.referenced,
                        at("vni"),
                        "must be 0 to 16777215".into(),
                    ));
                }
                let mut remotes = Vec::new();
                for r in p.remotes.clone().unwrap_or_default() {
                    remotes.push(r.value.parse::<IpAddr>().map_err(|_| {
                        bad(
                            r.referenced,
                            at("remotes"),
                            format!("{:?} is not an IP address", r.value),
                        )
                    })?);
                }
                if remotes.is_empty() {
                    return Err(bad(
                        p.kind.referenced,
                        at("remotes"),
                        "list at least one remote VTEP address".into(),
                    ));
                }
                let ip = match &p.local {
                    Some(l) => l.value.parse::<IpAddr>().map_err(|_| {
                        bad(
                            l.referenced,
                            at("local"),
                            format!("{:?} is not an IP address", l.value),
                        )
                    })?,
                    None if remotes[0].is_ipv6() => IpAddr::from([0u16; 8]),
                    None => IpAddr::from([0u8; 4]),
                };
                let udp_port = match &p.port {
                    Some(x) if x.value == 0 => {
                        return Err(bad(x.referenced, at("port"), "must be 1 to 65535".into()))
                    }
                    Some(x) => x.value,
                    None => DEFAULT_PORT,
                };
                let strict = p.strict.as_ref().map(|s| s.value).unwrap_or(false);
                let local = SocketAddr::new(ip, udp_port);
                base.ports.push(PortSpec::Vxlan(
                    VxlanConfig::new(name.clone(), vni.value, local, remotes).with_strict(strict),
                ));
                name
            }
        };
        if names.contains(&name) {
            return Err(bad(
                name_loc,
                at("name"),
                format!("the name {name:?} is used twice"),
            ));
        }
        if p.vlan.is_some() || p.tagged.is_some() {
            let vlans = port_vlans(p.vlan.as_ref(), p.tagged.as_ref())
                .map_err(|(l, e)| bad(l.unwrap_or(name_loc), at("vlan"), e))?;
            use switchyard_switch::vlan::PortPattern;
            // A stream listener's connections are ports named `NAME:N`.
            port_rules.push((PortPattern::new(name.clone()), vlans.clone()));
            port_rules.push((PortPattern::new(format!("{name}:*")), vlans));
        }
        names.push(name);
    }
    vlan_rules.append(&mut port_rules);
    base.vlans.append(&mut vlan_rules);
    if !file_controls.is_empty() {
        base.controls = file_controls;
    }
    let metrics = file
        .metrics
        .map(|m| {
            m.listen.value.parse::<SocketAddr>().map_err(|_| {
                bad(
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
    let control = file
        .control
        .map(|c| -> Result<_, ConfigError> {
            let mode = c
                .mode
                .map(|m| {
                    parse_octal(&m.value).map_err(|e| bad(m.referenced, "control.mode".into(), e))
                })
                .transpose()?;
            let group = c
                .group
                .map(|g| {
                    parse_group(&g.value).map_err(|e| bad(g.referenced, "control.group".into(), e))
                })
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
    fn empty_file_keeps_defaults() {
        let (s, e) = load_str("").expect("empty is fine");
        assert_eq!(s.controls.len(), 3);
        assert_eq!(e, Extras::default());
    }
}
