//! `--port TYPE,key=value,…`: the transports beyond the control socket and
//! taps. The keys are the ones the YAML config will use.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use switchyard_bridge::PcapConfig;
use switchyard_switch::ports::mcast::{McastConfig, DEFAULT_GROUP};
use switchyard_switch::ports::stream::{StreamConfig, StreamRole};
use switchyard_switch::ports::udp::UdpConfig;
use switchyard_switch::ports::vxlan::{VxlanConfig, DEFAULT_PORT};
use switchyard_switch::ports::Endpoint;

/// The syntax, for `--help` and errors.
pub const SYNTAX: &str = "\
  udp,local=ADDR,remote=ADDR             UDP (HOST:PORT) or unix datagram (paths) to one peer
  mcast[,group=GROUP:PORT][,ttl=N][,interface=IP]
                                         multicast group [239.192.168.1:1102, ttl 1]
  stream,listen=ADDR | stream,connect=ADDR
                                         4-byte length framing over TCP (HOST:PORT) or unix (path)
  vxlan,vni=N,remote=IP[,remote=IP…][,local=IP][,port=4789][,strict=on]
                                         VXLAN to other hosts' VTEPs
  pcap,device=IF[,promisc=off][,filter=BPF][,monitor=on][,mac_nat=on][,mac_nat_aging=600s]
                                         a host NIC through libpcap (MAC-NAT for Wi-Fi)
  every type also takes name=NAME";

/// One `--port` value.
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

struct Keys<'a> {
    kind: &'a str,
    map: BTreeMap<&'a str, Vec<&'a str>>,
}

impl<'a> Keys<'a> {
    fn take(&mut self, key: &str) -> Option<&'a str> {
        let v = self.map.get_mut(key)?;
        let first = v.first().copied();
        if v.len() <= 1 {
            self.map.remove(key);
        } else {
            v.remove(0);
        }
        first
    }
    fn take_all(&mut self, key: &str) -> Vec<&'a str> {
        self.map.remove(key).unwrap_or_default()
    }
    fn need(&mut self, key: &str) -> Result<&'a str, String> {
        self.take(key)
            .ok_or_else(|| format!("{} port needs {key}=…", self.kind))
    }
    fn finish(self) -> Result<(), String> {
        match self.map.keys().next() {
            Some(k) => Err(format!("{} port has no option {k:?}", self.kind)),
            None => Ok(()),
        }
    }
}

fn endpoint(key: &str, v: &str) -> Result<Endpoint, String> {
    v.parse::<Endpoint>().map_err(|e| format!("{key}: {e}"))
}

fn on_off(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "yes" | "true" | "1" => Ok(true),
        "off" | "no" | "false" | "0" => Ok(false),
        _ => Err(format!("{key}: {v:?} is not on or off")),
    }
}

/// Parses one spec; `index` numbers default names per type.
pub fn parse(spec: &str, index: usize) -> Result<PortSpec, String> {
    let mut parts = spec.split(',');
    let kind = parts.next().unwrap_or_default();
    let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in parts.filter(|p| !p.is_empty()) {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?} is not key=value"))?;
        map.entry(k).or_default().push(v);
    }
    let mut keys = Keys { kind, map };
    let name = keys
        .take("name")
        .map(str::to_string)
        .unwrap_or_else(|| format!("{kind}{index}"));
    let spec = match kind {
        "udp" => {
            let local = endpoint("local", keys.need("local")?)?;
            let remote = endpoint("remote", keys.need("remote")?)?;
            PortSpec::Udp(UdpConfig::new(name, local, remote))
        }
        "mcast" => {
            let group = match keys.take("group") {
                Some(g) => g.parse::<SocketAddrV4>().map_err(|_| {
                    format!("group: {g:?} is not GROUP:PORT (e.g. 239.192.168.1:1102)")
                })?,
                None => DEFAULT_GROUP,
            };
            let ttl = match keys.take("ttl") {
                Some(t) => t
                    .parse::<u32>()
                    .ok()
                    .filter(|t| *t <= 255)
                    .ok_or_else(|| format!("ttl: {t:?} is not 0 to 255"))?,
                None => 1,
            };
            let interface = keys
                .take("interface")
                .map(|i| {
                    i.parse::<Ipv4Addr>()
                        .map_err(|_| format!("interface: {i:?} is not an IPv4 address"))
                })
                .transpose()?;
            PortSpec::Mcast(McastConfig::new(name, group).with_options(ttl, interface))
        }
        "stream" => {
            let (role, addr) = match (keys.take("listen"), keys.take("connect")) {
                (Some(a), None) => (StreamRole::Listen, endpoint("listen", a)?),
                (None, Some(a)) => (StreamRole::Connect, endpoint("connect", a)?),
                _ => return Err("stream port needs exactly one of listen=… or connect=…".into()),
            };
            PortSpec::Stream(StreamConfig::new(name, role, addr))
        }
        "vxlan" => {
            let vni = keys.need("vni")?;
            let vni = vni
                .parse::<u32>()
                .ok()
                .filter(|v| *v <= 0x00ff_ffff)
                .ok_or_else(|| format!("vni: {vni:?} is not 0 to 16777215"))?;
            let udp_port = match keys.take("port") {
                Some(p) => p
                    .parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| format!("port: {p:?} is not a UDP port"))?,
                None => DEFAULT_PORT,
            };
            let remotes = keys
                .take_all("remote")
                .into_iter()
                .map(|r| {
                    r.parse::<IpAddr>()
                        .map_err(|_| format!("remote: {r:?} is not an IP address"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            if remotes.is_empty() {
                return Err("vxlan port needs at least one remote=IP".into());
            }
            let local_ip = match keys.take("local") {
                Some(l) => l
                    .parse::<IpAddr>()
                    .map_err(|_| format!("local: {l:?} is not an IP address"))?,
                None if remotes[0].is_ipv6() => IpAddr::from([0u16; 8]),
                None => IpAddr::from([0u8; 4]),
            };
            let strict = keys
                .take("strict")
                .map(|v| on_off("strict", v))
                .transpose()?
                .unwrap_or(false);
            PortSpec::Vxlan(
                VxlanConfig::new(name, vni, SocketAddr::new(local_ip, udp_port), remotes)
                    .with_strict(strict),
            )
        }
        "pcap" => {
            let device = keys.need("device")?.to_string();
            let flag = |k: &mut Keys, key: &str, default: bool| -> Result<bool, String> {
                k.take(key)
                    .map(|v| on_off(key, v))
                    .transpose()
                    .map(|v| v.unwrap_or(default))
            };
            let mac_nat = flag(&mut keys, "mac_nat", false)?;
            let promisc = flag(&mut keys, "promisc", !mac_nat)?;
            let monitor = flag(&mut keys, "monitor", false)?;
            let filter = keys.take("filter").map(str::to_string);
            let aging = keys
                .take("mac_nat_aging")
                .map(|v| {
                    crate::config::parse_duration(v)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .ok_or_else(|| format!("mac_nat_aging: {v:?} is not a duration of at least 1s (e.g. 600s, 10m)"))
                })
                .transpose()?;
            PortSpec::Pcap(
                PcapConfig::new(name, device)
                    .with_options(promisc, filter, monitor, mac_nat)
                    .with_mac_nat_aging(aging),
            )
        }
        other => {
            return Err(format!(
                "unknown port type {other:?}; one of udp, mcast, stream, vxlan, pcap:\n{SYNTAX}"
            ))
        }
    };
    keys.finish()?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

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
                assert_eq!(c.mac_nat_aging, Some(std::time::Duration::from_secs(300)));
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
