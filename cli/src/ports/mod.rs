//! The port types: one module each, declaring its keys once and building
//! its configuration from a [`Values`] source that both `--port TYPE,k=v`
//! (and `ctl port add`) and the YAML `ports:` list fill. A new port type is
//! a new module plus one line in [`TYPES`].

pub mod mcast;
mod open;
pub mod pcap;
pub mod source;
pub mod spec;
pub mod stream;
pub mod tap;
pub mod udp;
pub mod unix;
pub mod vhost_user;
pub mod vxlan;

pub use open::OpenPort;
pub use source::{one_of, Given, Key, Kind, Name, Need, Place, PortType, SpecError, Values};
pub use spec::{Built, Configured, PortSpec, TapSpec};

/// Every port type, in the order help and errors list them.
pub const TYPES: &[&PortType] = &[
    &unix::TYPE,
    &tap::TYPE,
    &udp::TYPE,
    &mcast::TYPE,
    &stream::TYPE,
    &vxlan::TYPE,
    &pcap::TYPE,
    &vhost_user::TYPE,
];

/// The key every type takes: the port's name.
pub const NAME: Key = Key::text("name", "NAME", "the port's name [default: TYPE1, TYPE2, …]");

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

/// Checks `values` against its type's keys and builds the port; `index`
/// numbers the automatic name (`udp1`, `udp2`, …).
pub fn build(values: Values, index: usize) -> Result<Built, SpecError> {
    build_in(TYPES, values, index)
}

/// [`build`] with the types of `registry`.
pub fn build_in(
    registry: &[&PortType],
    mut values: Values,
    index: usize,
) -> Result<Built, SpecError> {
    let ty = registry
        .iter()
        .copied()
        .find(|t| t.name == values.kind())
        .ok_or_else(|| {
            let names: Vec<&str> = registry.iter().map(|t| t.name).collect();
            SpecError::UnknownType {
                kind: values.kind().to_string(),
                known: names.join(", "),
                place: values.place(),
            }
        })?;
    check(ty, &mut values)?;
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
/// Renames each key from the source's spelling to the key's name.
fn check(ty: &PortType, values: &mut Values) -> Result<(), SpecError> {
    let keys: Vec<&Key> = std::iter::once(&NAME).chain(ty.keys).collect();
    let spelled: Vec<&str> = keys.iter().map(|k| values.spelling(k)).collect();
    let mut seen: Vec<&str> = Vec::new();
    for g in values.given_mut() {
        let Some(i) = spelled.iter().position(|s| *s == g.key) else {
            let takes: Vec<String> = keys.iter().map(|k| k.shown()).collect();
            let also = if ty.vlans {
                " (in a config file also vlan, tagged)"
            } else {
                ""
            };
            return Err(SpecError::Spec {
                key: g.key.clone(),
                message: format!(
                    "a {} port has no option {:?}; it takes {}{also}",
                    ty.name,
                    g.key,
                    takes.join(", ")
                ),
                place: g.place,
            });
        };
        let key = keys[i];
        if !key.many && seen.contains(&key.name) {
            return Err(SpecError::Spec {
                key: g.key.clone(),
                message: format!("{:?} is given twice", key.name),
                place: g.place,
            });
        }
        if key.name == NAME.name && g.value.trim().is_empty() {
            // `ctl` and the metrics name ports by it: an empty one could
            // not be told apart or deleted.
            return Err(SpecError::Spec {
                key: g.key.clone(),
                message: "a port's name cannot be empty; give name=NAME or leave it out".into(),
                place: g.place,
            });
        }
        seen.push(key.name);
        g.key = key.name.to_string();
    }
    for key in ty.keys.iter().filter(|k| k.need == Need::Required) {
        if !values.has(key) {
            return Err(source::missing(values, key));
        }
    }
    let choice: Vec<&Key> = ty.keys.iter().filter(|k| k.need == Need::OneOf).collect();
    if !choice.is_empty() && choice.iter().filter(|k| values.has(k)).count() != 1 {
        return Err(one_of(values, &choice));
    }
    Ok(())
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
    let elsewhere: Vec<String> = TYPES
        .iter()
        .filter_map(|t| t.flag.map(|f| format!("{} ({f})", t.name)))
        .collect();
    if !elsewhere.is_empty() {
        out.push(format!(
            "  types with flags of their own: {}; a config file's ports: takes every type",
            elsewhere.join(", ")
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_switch::ports::udp::UdpConfig;

    /// A port type's worth of keys, declared in one place: the registry
    /// checks them and builds, as for every real type.
    mod demo {
        use super::super::source::{Key, Kind, Name, PortType, SpecError, Values};
        use super::super::spec::{Built, PortSpec};
        use super::UdpConfig;

        const PEER: Key = Key::text("peer", "ADDR", "the peer").required();
        const SIZE: Key = Key::new("size", Kind::Number, "N", "a size").default("1");
        pub(super) const TYPE: PortType = PortType {
            name: "demo",
            summary: "a port type that only tests know",
            keys: &[PEER, SIZE],
            flag: None,
            vlans: true,
            build,
        };
        fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
            let peer = v.parse_needed(&PEER, super::super::udp::endpoint)?;
            v.parse(&SIZE, |s| {
                s.parse::<u8>().map_err(|e| format!("{s:?}: {e}"))
            })?;
            Ok(Built::port(PortSpec::Udp(UdpConfig::new(
                name.get(),
                peer.clone(),
                peer,
            ))))
        }
    }

    fn spec(kind: &str, kv: &[(&str, &str)]) -> Values {
        let mut v = Values::new(kind, None);
        for (k, x) in kv {
            v.push(k, x, None);
        }
        v
    }

    #[test]
    fn a_new_type_is_one_module_and_one_registry_line() {
        let registry: &[&PortType] = &[&demo::TYPE, &udp::TYPE];
        let built =
            build_in(registry, spec("demo", &[("peer", "127.0.0.1:9")]), 3).expect("builds");
        assert_eq!(built.name, "demo3");
        let e = build_in(registry, spec("demo", &[("size", "1")]), 1).expect_err("no peer");
        assert_eq!(e.to_string(), "a demo port needs peer");
        let e = build_in(
            registry,
            spec("demo", &[("peer", "127.0.0.1:9"), ("colour", "red")]),
            1,
        )
        .expect_err("unknown key");
        assert_eq!(
            e.to_string(),
            "a demo port has no option \"colour\"; it takes name, peer, size \
             (in a config file also vlan, tagged)"
        );
        let e = build_in(registry, spec("x", &[]), 1).expect_err("unknown type");
        assert_eq!(e.to_string(), "unknown port type \"x\"; one of demo, udp");
    }

    #[test]
    fn a_key_reads_the_same_in_every_type() {
        // The YAML reader picks how to read a key by its spelling alone.
        for t in TYPES {
            for k in t.keys {
                let first = yaml_key(k.yaml_name()).expect("listed");
                assert_eq!(
                    (first.kind, first.yaml_list),
                    (k.kind, k.yaml_list),
                    "{}.{} reads differently from another type's {}",
                    t.name,
                    k.name,
                    k.yaml_name()
                );
                assert!(
                    !["name", "type", "vlan", "tagged"].contains(&k.yaml_name()),
                    "{}.{} is a key every port has",
                    t.name,
                    k.name
                );
            }
            let mut names: Vec<&str> = t.keys.iter().map(|k| k.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), t.keys.len(), "{} lists a key twice", t.name);
        }
    }

    #[test]
    fn help_lists_every_command_line_type() {
        let help = syntax();
        for t in TYPES {
            let listed = help
                .lines()
                .any(|l| l.starts_with(&format!("  {}", t.name)));
            assert_eq!(listed, t.flag.is_none(), "{}: {help}", t.name);
        }
        assert!(
            help.contains("vxlan,vni=N,remote=IP[,remote=IP…]"),
            "{help}"
        );
        assert!(help.contains("stream,listen=ADDR|connect=ADDR"), "{help}");
        assert_eq!(
            command_line_type_names(),
            "udp, mcast, stream, vxlan, pcap, vhost-user"
        );
        assert_eq!(
            type_names(),
            "unix, tap, udp, mcast, stream, vxlan, pcap, vhost-user"
        );
    }

    #[test]
    fn yaml_spells_repeatable_keys_as_lists() {
        let mut v = Values::new_yaml("vxlan", None);
        v.push("vni", "7", None);
        v.push("remotes", "2001:db8::2", None);
        v.push("remotes", "2001:db8::3", None);
        match build(v, 1).expect("builds").port {
            Configured::Port(PortSpec::Vxlan(c)) => {
                assert_eq!(c.remotes.len(), 2);
                assert!(c.local.ip().is_ipv6(), "IPv6 remotes bind ::");
            }
            other => panic!("{other:?}"),
        }
        let mut v = Values::new_yaml("vxlan", None);
        v.push("vni", "7", None);
        v.push("remote", "192.0.2.1", None);
        let e = build(v, 1).expect_err("remote: is remotes: in a file");
        assert_eq!(e.key(), "remote");
    }
}
