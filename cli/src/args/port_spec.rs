//! `--port TYPE,key=value,…` (and `switchyard ctl port add`): the spec's
//! text made into the [`Values`] that every port builder reads, the same
//! source a config file's `ports:` entry fills.

pub use crate::ports::PortSpec;
use crate::ports::{self, Configured, SpecError, Values};

/// The syntax, for `--help` and errors.
pub fn syntax() -> String {
    ports::syntax()
}

/// The values a spec gives, or why it is not `TYPE,key=value,…`.
pub fn values(spec: &str) -> Result<Values, String> {
    let mut parts = spec.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut values = Values::new(kind, None);
    for p in parts.filter(|p| !p.is_empty()) {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?} is not key=value"))?;
        values.push(k, v, None);
    }
    Ok(values)
}

/// Parses one spec; `index` numbers default names per type.
pub fn parse(spec: &str, index: usize) -> Result<PortSpec, String> {
    let values = values(spec)?;
    if let Some(flag) = ports::find(values.kind()).and_then(|t| t.flag) {
        return Err(format!(
            "a {} port is not a port spec: use {flag}, or the config file; a spec is one of {}",
            values.kind(),
            ports::command_line_type_names()
        ));
    }
    match ports::build(values, index) {
        Ok(built) => match built.port {
            Configured::Port(p) => Ok(p),
            // Unreachable: types with a flag of their own were turned away.
            Configured::Tap(_) | Configured::Unix(_) => Err(format!("{spec:?} is not a port spec")),
        },
        Err(e @ SpecError::UnknownType { .. }) => Err(format!("{e}:\n{}", syntax())),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use switchyard_switch::ports::mcast::DEFAULT_GROUP;
    use switchyard_switch::ports::stream::StreamRole;

    #[test]
    fn each_type() {
        assert!(matches!(
            parse("udp,local=127.0.0.1:6002,remote=127.0.0.1:6001", 1),
            Ok(PortSpec::Udp(_))
        ));
        assert!(
            matches!(parse("udp,local=/tmp/a.sock,remote=/tmp/b.sock,name=q", 1), Ok(PortSpec::Udp(c)) if c.name == "q")
        );
        match parse("mcast", 1) {
            Ok(PortSpec::Mcast(c)) => {
                assert_eq!(c.group, DEFAULT_GROUP);
                assert_eq!(c.ttl, 1);
                assert_eq!(c.name, "mcast1");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(parse("stream,listen=127.0.0.1:5555", 1), Ok(PortSpec::Stream(c)) if c.role == StreamRole::Listen)
        );
        assert!(
            matches!(parse("stream,connect=/run/passt.sock", 1), Ok(PortSpec::Stream(c)) if c.role == StreamRole::Connect)
        );
        match parse(
            "vxlan,vni=42,remote=198.51.100.2,remote=198.51.100.3,port=8472",
            1,
        ) {
            Ok(PortSpec::Vxlan(c)) => {
                assert_eq!(c.vni, 42);
                assert_eq!(c.remotes.len(), 2);
                assert_eq!(c.local.port(), 8472);
            }
            other => panic!("{other:?}"),
        }
        match parse("pcap,device=wlan0,mac_nat=on,mac_nat_aging=5m", 1) {
            Ok(PortSpec::Pcap(c)) => {
                assert!(
                    c.mac_nat && !c.promisc,
                    "MAC-NAT turns promiscuous mode off"
                );
                assert_eq!(c.mac_nat_aging, Some(Duration::from_secs(300)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        for bad in ["0", "soon", "5x"] {
            let e = parse(&format!("pcap,device=w,mac_nat_aging={bad}"), 1).unwrap_err();
            assert!(e.contains("mac_nat_aging"), "{bad}: {e}");
        }
        assert!(parse("udp,local=127.0.0.1:1", 1)
            .unwrap_err()
            .contains("remote"));
        assert!(parse("bogus", 1).unwrap_err().contains("unknown port type"));
        assert!(parse("mcast,colour=red", 1).unwrap_err().contains("colour"));
        assert!(parse("stream,listen=a:1,connect=b:2", 1)
            .unwrap_err()
            .contains("exactly one"));
        assert!(parse("vxlan,vni=99999999,remote=1.2.3.4", 1)
            .unwrap_err()
            .contains("vni"));
        assert!(parse("vxlan,vni=1", 1).unwrap_err().contains("remote"));
    }
}
