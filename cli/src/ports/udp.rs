//! `udp`: one raw frame per datagram to one peer, over UDP or unix
//! datagram sockets.

use super::source::{Key, Name, PortType, SpecError, Values};
use super::spec::{Built, PortSpec};
use switchyard_switch::ports::udp::UdpConfig;
use switchyard_switch::ports::Endpoint;

const LOCAL: Key =
    Key::text("local", "ADDR", "the address to bind (HOST:PORT or a path)").required();
const REMOTE: Key = Key::text("remote", "ADDR", "the peer (HOST:PORT or a path)").required();

/// The udp type.
pub const TYPE: PortType = PortType {
    name: "udp",
    summary: "UDP (HOST:PORT) or unix datagram (paths) to one peer",
    keys: &[LOCAL, REMOTE],
    flag: None,
    vlans: true,
    build,
};

/// Parses a socket address: `HOST:PORT` or a path.
pub(crate) fn endpoint(s: &str) -> Result<Endpoint, String> {
    s.parse::<Endpoint>().map_err(|e| e.to_string())
}

fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
    let local = v.parse_needed(&LOCAL, endpoint)?;
    let remote = v.parse_needed(&REMOTE, endpoint)?;
    Ok(Built::port(PortSpec::Udp(UdpConfig::new(
        name.get(),
        local,
        remote,
    ))))
}
