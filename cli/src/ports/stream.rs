//! `stream`: QEMU's stream framing (a 4-byte length, then the frame) over
//! TCP or a unix stream socket, listening or connecting.

use super::source::{one_of, Key, Name, PortType, SpecError, Values};
use super::spec::{Built, PortSpec};
use super::udp::endpoint;
use switchyard_switch::ports::stream::{StreamConfig, StreamRole};

const LISTEN: Key = Key::text(
    "listen",
    "ADDR",
    "accept connections on HOST:PORT or a path",
)
.one_of();
const CONNECT: Key = Key::text(
    "connect",
    "ADDR",
    "connect (and reconnect) to HOST:PORT or a path",
)
.one_of();

/// The stream type.
pub const TYPE: PortType = PortType {
    name: "stream",
    summary: "4-byte length framing over TCP (HOST:PORT) or unix (path)",
    keys: &[LISTEN, CONNECT],
    flag: None,
    vlans: true,
    build,
};

fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
    let listen = v.parse(&LISTEN, endpoint)?;
    let connect = v.parse(&CONNECT, endpoint)?;
    let (role, addr) = match (listen, connect) {
        (Some(a), None) => (StreamRole::Listen, a),
        (None, Some(a)) => (StreamRole::Connect, a),
        _ => return Err(one_of(v, &[&LISTEN, &CONNECT])),
    };
    Ok(Built::port(PortSpec::Stream(StreamConfig::new(
        name.get(),
        role,
        addr,
    ))))
}
