//! The port types: one module each, declaring its keys once and building
//! its configuration from a [`Values`] source that both `--port TYPE,k=v`
//! (and `ctl port add`) and the YAML `ports:` list fill. A new port type is
//! a new module plus one line in [`TYPES`].

pub mod mcast;
mod open;
pub mod pcap;
pub mod source;
pub mod stream;
pub mod tap;
pub mod udp;
pub mod unix;
pub mod vxlan;

pub use open::OpenPort;
pub use source::{Given, Key, Kind, Need, Place, SpecError, Values};
pub use tap::TapSpec;

use switchyard_bridge::PcapConfig;
use switchyard_switch::ports::mcast::McastConfig;
use switchyard_switch::ports::stream::StreamConfig;
use switchyard_switch::ports::udp::UdpConfig;
use switchyard_switch::ports::unix::UnixConfig;
use switchyard_switch::ports::vxlan::VxlanConfig;

/// Every port type, in the order help and errors list them.
pub const TYPES: &[&PortType] = &[
    &unix::TYPE,
    &tap::TYPE,
    &udp::TYPE,
    &mcast::TYPE,
    &stream::TYPE,
    &vxlan::TYPE,
    &pcap::TYPE,
];

/// The key every type takes: the port's name.
pub const NAME: Key = Key::text("name", "NAME", "the port's name [default: TYPE1, TYPE2, …]");

/// One port type.
#[derive(Debug)]
pub struct PortType {
    /// What `--port` and `type:` call it.
    pub name: &'static str,
    /// One line for help text.
    pub summary: &'static str,
    /// The keys it takes besides `name`.
    pub keys: &'static [Key],
    /// `None`: a `--port` type; otherwise the flags that give such a port
    /// on the command line instead.
    pub flag: Option<&'static str>,
    /// A config file may give its ports VLANs (`vlan:`, `tagged:`); a unix
    /// port's clients are ports of their own and get them by name.
    pub vlans: bool,
    /// Builds the configuration from checked values.
    pub build: fn(&mut Values, Name) -> Result<Built, SpecError>,
}

/// A port's name: the one given, or `TYPE<index>`.
#[derive(Debug, Clone)]
pub struct Name {
    /// `name=`, if given.
    pub given: Option<String>,
    /// The automatic name.
    pub default: String,
}

impl Name {
    /// The given name or the automatic one.
    pub fn get(self) -> String {
        self.given.unwrap_or(self.default)
    }
}

/// A transport port (`--port`, `ports:` other than unix and tap).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortSpec {
    /// A udp port.
    Udp(UdpConfig),
    /// A mcast port.
    Mcast(McastConfig),
    /// A stream port.
    Stream(StreamConfig),
    /// A vxlan port.
    Vxlan(VxlanConfig),
    /// A pcap port (host NIC).
    Pcap(PcapConfig),
}

impl PortSpec {
    /// The port's name.
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Udp(c) => &c.name,
            PortSpec::Mcast(c) => &c.name,
            PortSpec::Stream(c) => &c.name,
            PortSpec::Vxlan(c) => &c.name,
            PortSpec::Pcap(c) => &c.name,
        }
    }
}

/// What a builder makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Configured {
    /// A transport.
    Port(PortSpec),
    /// A tap device.
    Tap(TapSpec),
    /// A control socket (its clients become ports).
    Unix(UnixConfig),
}

/// A built port and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The name that must be unique among the configured ports.
    pub name: String,
    /// The configuration.
    pub port: Configured,
}

impl Built {
    /// A transport named after its config.
    pub fn port(spec: PortSpec) -> Built {
        Built {
            name: spec.name().to_string(),
            port: Configured::Port(spec),
        }
    }
}

/// The port type called `name`.
pub fn find(name: &str) -> Option<&'static PortType> {
    TYPES.iter().copied().find(|t| t.name == name)
}

/// The types, comma-separated.
pub fn type_names() -> String {
    let names: Vec<&str> = TYPES.iter().map(|t| t.name).collect();
    names.join(", ")
}

/// The types `--port` (and `ctl port add`) take, comma-separated.
pub fn command_line_type_names() -> String {
    let names: Vec<&str> = TYPES
        .iter()
        .filter(|t| t.flag.is_none())
        .map(|t| t.name)
        .collect();
    names.join(", ")
}

/// The key a config file writes as `written` (`remotes` for `remote`), if
/// any type takes it: the same name means the same kind in every type.
pub fn yaml_key(written: &str) -> Option<&'static Key> {
    TYPES
        .iter()
        .flat_map(|t| t.keys.iter())
        .find(|k| k.yaml_name() == written)
}

/// The config-file spelling of `key` (`remotes` for `remote`).
pub fn yaml_name(key: &str) -> &str {
    TYPES
        .iter()
        .flat_map(|t| t.keys.iter())
        .find(|k| k.name == key)
        .map(Key::yaml_name)
        .unwrap_or(key)
}

/// Checks `values` against its type's keys and builds the port; `index`
/// numbers the automatic name (`udp1`, `udp2`, …).
pub fn build(mut values: Values, index: usize) -> Result<Built, SpecError> {
    let ty = find(values.kind()).ok_or_else(|| SpecError::UnknownType {
        kind: values.kind().to_string(),
        known: type_names(),
        place: values.place(),
    })?;
    check(ty, &values)?;
    let given = values.take(&NAME).map(|g| g.value);
    (ty.build)(
        &mut values,
        Name {
            given,
            default: format!("{}{index}", ty.name),
        },
    )
}

/// One error per mistake, before building: a key given twice, a key the
/// type does not take, a required key missing, not exactly one of a choice.
fn check(ty: &PortType, values: &Values) -> Result<(), SpecError> {
    let given = values.given();
    for (i, g) in given.iter().enumerate() {
        let key = std::iter::once(&NAME)
            .chain(ty.keys)
            .find(|k| k.name == g.key);
        let Some(key) = key else {
            let takes: Vec<String> = std::iter::once(&NAME)
                .chain(ty.keys)
                .map(Key::shown)
                .collect();
            return Err(SpecError::Spec {
                key: g.key.clone(),
                message: format!(
                    "a {} port has no option {:?}; it takes {}",
                    ty.name,
                    g.key,
                    takes.join(", ")
                ),
                place: g.place,
            });
        };
        if !key.many && given[..i].iter().any(|e| e.key == g.key) {
            return Err(SpecError::Spec {
                key: g.key.clone(),
                message: format!("{:?} is given twice", g.key),
                place: g.place,
            });
        }
    }
    for key in ty.keys.iter().filter(|k| k.need == Need::Required) {
        if !values.has(key) {
            return Err(source::missing(ty.name, key, values.place()));
        }
    }
    let choice: Vec<&Key> = ty.keys.iter().filter(|k| k.need == Need::OneOf).collect();
    if !choice.is_empty() && choice.iter().filter(|k| values.has(k)).count() != 1 {
        return Err(one_of(ty.name, &choice, values.place()));
    }
    Ok(())
}

/// The error for not exactly one of `keys`.
pub fn one_of(kind: &str, keys: &[&Key], place: Option<Place>) -> SpecError {
    let names: Vec<&str> = keys.iter().map(|k| k.name).collect();
    SpecError::Spec {
        key: names.first().copied().unwrap_or_default().to_string(),
        message: format!("a {kind} port needs exactly one of {}", names.join(" or ")),
        place,
    }
}

/// `--port` syntax for help: one entry per type `--port` takes.
pub fn syntax() -> String {
    let mut out = Vec::new();
    for ty in TYPES.iter().filter(|t| t.flag.is_none()) {
        let usage = usage(ty);
        let defaults: Vec<String> = ty
            .keys
            .iter()
            .filter_map(|k| k.default.map(|d| format!("{}={d}", k.name)))
            .collect();
        let summary = if defaults.is_empty() {
            ty.summary.to_string()
        } else {
            format!("{} [{}]", ty.summary, defaults.join(", "))
        };
        if usage.chars().count() < 39 {
            out.push(format!("  {usage:<39}{summary}"));
        } else {
            out.push(format!("  {usage}\n{:41}{summary}", ""));
        }
    }
    out.push("  every type also takes name=NAME".into());
    out.join("\n")
}

/// `TYPE,key=V[,key=V]…` from the keys.
fn usage(ty: &PortType) -> String {
    let mut s = ty.name.to_string();
    let choice: Vec<String> = ty
        .keys
        .iter()
        .filter(|k| k.need == Need::OneOf)
        .map(|k| format!("{}={}", k.name, k.value))
        .collect();
    if !choice.is_empty() {
        s.push(',');
        s.push_str(&choice.join("|"));
    }
    for k in ty.keys {
        let kv = format!("{}={}", k.name, k.value);
        match (k.need, k.many) {
            (Need::Required, false) => s.push_str(&format!(",{kv}")),
            (Need::Required, true) => s.push_str(&format!(",{kv}[,{kv}…]")),
            (Need::Optional, false) => s.push_str(&format!("[,{kv}]")),
            (Need::Optional, true) => s.push_str(&format!("[,{kv}…]")),
            (Need::OneOf, _) => {}
        }
    }
    s
}
