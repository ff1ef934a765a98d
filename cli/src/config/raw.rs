//! The file's shape as serde reads it: every section and key, with the
//! places values were written. A `ports:` entry is read key by key and
//! checked by the port-type registry, so its keys are declared only there.

use crate::ports::{self, Kind, Place, Values};
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use std::path::PathBuf;
use std::time::Duration;

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
            Raw::Text(t) => crate::values::parse_duration(&t)
                .map(Seconds)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub(super) type Sp<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    #[serde(default)]
    pub(super) switch: SwitchSection,
    #[serde(default)]
    pub(super) ports: Vec<RawPort>,
    pub(super) metrics: Option<MetricsSection>,
    pub(super) control: Option<ControlSection>,
    #[serde(default)]
    pub(super) log: LogSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SwitchSection {
    pub(super) mode: Option<ModeName>,
    #[serde(default)]
    pub(super) fdb: FdbSection,
    pub(super) numports: Option<Sp<u32>>,
    #[serde(default)]
    pub(super) bpdu_guard: bool,
    #[serde(default)]
    pub(super) storm_control: StormSection,
    #[serde(default)]
    pub(super) loop_protection: LoopSection,
    /// Hold unicast for a full peer (pausing its sender) rather than drop it.
    pub(super) backpressure: Option<bool>,
    /// Keep polling an idle unix port this long before sleeping (`20us`).
    pub(super) busy_poll: Option<Sp<Seconds>>,
    #[serde(default)]
    pub(super) static_macs: Vec<StaticMac>,
    #[serde(default)]
    pub(super) vlans: Vec<VlanRule>,
}

/// `switch.vlans` entry: which ports (a name, or a prefix ending in `*`)
/// are in which VLANs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VlanRule {
    pub(super) port: Sp<String>,
    pub(super) untagged: Option<Sp<VlanId>>,
    pub(super) tagged: Option<Sp<VlanList>>,
}

/// An untagged VLAN: an id, or `none`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum VlanId {
    Number(u64),
    Text(String),
}

/// Tagged VLANs: `[10, 20]`, `10`, or `"10,20-30"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum VlanList {
    Numbers(Vec<u64>),
    Number(u64),
    Text(String),
}

/// A static MAC entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StaticMac {
    pub(super) mac: Sp<String>,
    pub(super) port: String,
}

/// Frames per second per port; 0 or absent: no limit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StormSection {
    #[serde(default)]
    pub(super) broadcast: u32,
    #[serde(default)]
    pub(super) multicast: u32,
    #[serde(default)]
    pub(super) unknown_unicast: u32,
}

/// `switch.loop_protection`; absent keys keep the defaults (on, 10 flaps
/// a second, 60 s).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LoopSection {
    pub(super) enabled: Option<bool>,
    pub(super) threshold: Option<Sp<u32>>,
    pub(super) hold_down: Option<Sp<Seconds>>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ModeName {
    Switch,
    Hub,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FdbSection {
    pub(super) aging: Option<Sp<Seconds>>,
    pub(super) max_entries: Option<usize>,
    pub(super) max_entries_per_port: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MetricsSection {
    pub(super) listen: Sp<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ControlSection {
    pub(super) path: PathBuf,
    pub(super) mode: Option<Sp<String>>,
    pub(super) group: Option<Sp<String>>,
    pub(super) admin_group: Option<Sp<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogSection {
    pub(super) level: Option<String>,
}

/// One entry of `ports:`: its type, name and VLANs, and every other key as
/// written, for the registry to check and build.
#[derive(Debug)]
pub(super) struct RawPort {
    /// `type:`.
    pub(super) kind: Sp<String>,
    /// `name:`.
    pub(super) name: Option<Sp<String>>,
    /// The port's untagged VLAN (or `none`).
    pub(super) vlan: Option<Sp<VlanId>>,
    /// The VLANs the port carries tagged.
    pub(super) tagged: Option<Sp<VlanList>>,
    /// The other keys, in order: the key as written and its values.
    pub(super) keys: Vec<(Sp<String>, RawValue)>,
}

/// A port key's value as text, whatever YAML type it was written as.
#[derive(Debug)]
pub(super) enum RawValue {
    /// One value.
    One(Sp<String>),
    /// A list (`remotes: [..]`).
    Many(Vec<Sp<String>>),
    /// A key no port type takes; the registry names the mistake.
    Unknown,
}

/// The place of `loc` for a port builder's errors.
pub(super) fn place(loc: Location) -> Option<Place> {
    Some(Place {
        line: loc.line(),
        column: loc.column(),
    })
}

impl RawPort {
    /// The values for the registry: every key but `type`, `name` and, when
    /// the type takes them here, `vlan` and `tagged`.
    pub(super) fn values(&self, vlans: bool) -> Values {
        let mut v = Values::new_yaml(&self.kind.value, place(self.kind.referenced));
        if let Some(n) = &self.name {
            v.push("name", &n.value, place(n.referenced));
        }
        if !vlans {
            // Not for this type: given so that the registry names it.
            for (k, at) in [
                ("vlan", self.vlan.as_ref().map(|x| x.referenced)),
                ("tagged", self.tagged.as_ref().map(|x| x.referenced)),
            ] {
                if let Some(at) = at {
                    v.push(k, "", place(at));
                }
            }
        }
        for (key, value) in &self.keys {
            match value {
                RawValue::One(x) => v.push(&key.value, &x.value, place(x.referenced)),
                RawValue::Many(xs) => {
                    for x in xs {
                        v.push(&key.value, &x.value, place(x.referenced));
                    }
                }
                RawValue::Unknown => v.push(&key.value, "", place(key.referenced)),
            }
        }
        v
    }
}

/// A scalar as text: YAML's numbers and booleans become their usual
/// spelling (`0x2a` is `42`, `yes` is `true`), so that the registry's
/// parsers, which `--port` uses too, read them.
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, on/off or text")
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Scalar, E> {
                Ok(Scalar(b.to_string()))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Scalar, E> {
                Ok(Scalar(n.to_string()))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
                Ok(Scalar(s.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for RawPort {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PortVisitor)
    }
}

struct PortVisitor;

/// Reads `next_value` into `slot`, refusing a key given twice.
fn once<'de, A: MapAccess<'de>, T: Deserialize<'de>>(
    map: &mut A,
    slot: &mut Option<T>,
    key: &'static str,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = map.next_value()?;
    Ok(())
}

impl<'de> Visitor<'de> for PortVisitor {
    type Value = RawPort;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a port: a map with type: and the type's keys")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPort, A::Error> {
        let (mut kind, mut name, mut vlan, mut tagged) = (None, None, None, None);
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<Sp<String>>()? {
            match key.value.as_str() {
                "type" => {
                    if kind.is_some() {
                        return Err(de::Error::duplicate_field("type"));
                    }
                    kind = Some(map.next_value::<Sp<String>>()?);
                }
                "name" => once(&mut map, &mut name, "name")?,
                "vlan" => once(&mut map, &mut vlan, "vlan")?,
                "tagged" => once(&mut map, &mut tagged, "tagged")?,
                written => {
                    // How to read it: the registry's kind for the key of
                    // this spelling (the same in every type that has it).
                    let value = match ports::yaml_key(written) {
                        None => {
                            map.next_value::<IgnoredAny>()?;
                            RawValue::Unknown
                        }
                        Some(k) if k.yaml_list.is_some() => {
                            match map.next_value::<Option<Vec<Sp<String>>>>()? {
                                Some(list) => RawValue::Many(list),
                                None => continue,
                            }
                        }
                        Some(k) if k.kind == Kind::Text => {
                            match map.next_value::<Option<Sp<String>>>()? {
                                Some(x) => RawValue::One(x),
                                None => continue,
                            }
                        }
                        Some(_) => match map.next_value::<Option<Sp<Scalar>>>()? {
                            Some(x) => {
                                RawValue::One(Spanned::new(x.value.0, x.referenced, x.defined))
                            }
                            None => continue,
                        },
                    };
                    keys.push((key, value));
                }
            }
        }
        let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
        Ok(RawPort {
            kind,
            name,
            vlan,
            tagged,
            keys,
        })
    }
}
