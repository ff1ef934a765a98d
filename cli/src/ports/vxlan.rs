//! `vxlan`: RFC 7348 to other hosts' VTEPs (Linux vxlan devices, Open
//! vSwitch, other switchyards).

use super::source::{Key, Kind, Name, PortType, SpecError, Values};
use super::spec::{Built, PortSpec};
use std::net::{IpAddr, SocketAddr};
use switchyard_switch::ports::vxlan::{VxlanConfig, DEFAULT_PORT};

/// The largest VNI: 24 bits.
const MAX_VNI: u32 = 0x00ff_ffff;

const VNI: Key = Key::new("vni", Kind::Number, "N", "the VXLAN network identifier").required();
const REMOTE: Key = Key::text("remote", "IP", "a remote VTEP (repeatable)")
    .required()
    .many("remotes");
const LOCAL: Key =
    Key::text("local", "IP", "the local address to bind").default("0.0.0.0 (:: for IPv6 remotes)");
const PORT: Key = Key::new("port", Kind::Number, "PORT", "the UDP port").default("4789");
const STRICT: Key = Key::on_off(
    "strict",
    "check the reserved header bits as Linux does (off: ignore them, as RFC 7348 says)",
)
.default("off");

/// The vxlan type.
pub const TYPE: PortType = PortType {
    name: "vxlan",
    summary: "VXLAN to other hosts' VTEPs",
    keys: &[VNI, REMOTE, LOCAL, PORT, STRICT],
    flag: None,
    vlans: true,
    build,
};

fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse::<IpAddr>()
        .map_err(|_| format!("{s:?} is not an IP address"))
}

fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
    let vni = v.parse_needed(&VNI, |n| {
        n.parse::<u32>()
            .ok()
            .filter(|n| *n <= MAX_VNI)
            .ok_or_else(|| format!("{n:?} is not 0 to {MAX_VNI}"))
    })?;
    let udp_port = v
        .parse(&PORT, |p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("{p:?} is not a UDP port (1 to 65535)"))
        })?
        .unwrap_or(DEFAULT_PORT);
    let remotes = v.parse_all(&REMOTE, ip)?;
    let Some(first) = remotes.first() else {
        return Err(super::source::missing(v, &REMOTE));
    };
    // The wildcard of the remotes' family, so one IPv6 remote works alone.
    let local = match v.parse(&LOCAL, ip)? {
        Some(l) => l,
        None if first.is_ipv6() => IpAddr::from([0u16; 8]),
        None => IpAddr::from([0u8; 4]),
    };
    let strict = v.on_off(&STRICT, false)?;
    Ok(Built::port(PortSpec::Vxlan(
        VxlanConfig::new(name.get(), vni, SocketAddr::new(local, udp_port), remotes)
            .with_strict(strict),
    )))
}
