//! `mcast`: one raw frame per UDP datagram to a multicast group (UML
//! `ethN=mcast`, QEMU `-netdev socket,mcast=`).

use super::source::{Key, Kind, Name, PortType, SpecError, Values};
use super::spec::{Built, PortSpec};
use std::net::{Ipv4Addr, SocketAddrV4};
use switchyard_switch::ports::mcast::{McastConfig, DEFAULT_GROUP};

const GROUP: Key =
    Key::text("group", "GROUP:PORT", "the multicast group").default("239.192.168.1:1102");
const TTL: Key = Key::new("ttl", Kind::Number, "N", "hops the frames may travel").default("1");
const INTERFACE: Key = Key::text(
    "interface",
    "IP",
    "the local address of the interface to use",
);

/// The mcast type.
pub const TYPE: PortType = PortType {
    name: "mcast",
    summary: "multicast group",
    keys: &[GROUP, TTL, INTERFACE],
    flag: None,
    vlans: true,
    build,
};

fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
    let group = v
        .parse(&GROUP, |g| {
            g.parse::<SocketAddrV4>()
                .map_err(|_| format!("{g:?} is not GROUP:PORT (e.g. 239.192.168.1:1102)"))
        })?
        .unwrap_or(DEFAULT_GROUP);
    let ttl = v
        .parse(&TTL, |t| {
            t.parse::<u32>()
                .ok()
                .filter(|t| *t <= 255)
                .ok_or_else(|| format!("{t:?} is not 0 to 255"))
        })?
        .unwrap_or(1);
    let interface = v.parse(&INTERFACE, |i| {
        i.parse::<Ipv4Addr>()
            .map_err(|_| format!("{i:?} is not an IPv4 address"))
    })?;
    Ok(Built::port(PortSpec::Mcast(
        McastConfig::new(name.get(), group).with_options(ttl, interface),
    )))
}
