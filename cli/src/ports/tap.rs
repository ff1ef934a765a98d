//! `tap`: a tap device into the host's stack. On the command line:
//! `--tap IF`.

use super::source::{Key, Kind, Name, PortType, SpecError, Values};
use super::spec::{Built, Configured, TapSpec};

const DEVICE: Key = Key::text(
    "device",
    "IF",
    "the tap device, created if it does not exist",
)
.required();
const OFFLOAD: Key = Key::new(
    "offload",
    Kind::OnOff,
    "on|off",
    "ask for checksum and TSO offloads (virtio-net header)",
)
.default("on");

/// The tap type.
pub const TYPE: PortType = PortType {
    name: "tap",
    summary: "a tap device (the host's stack, a kernel bridge)",
    keys: &[DEVICE, OFFLOAD],
    flag: Some("--tap IF"),
    vlans: true,
    build,
};

fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
    let spec = TapSpec {
        name: name.given,
        device: v.need(&DEVICE)?.value,
        offload: v.on_off(&OFFLOAD, true)?,
    };
    Ok(Built {
        name: spec.port_name(),
        port: Configured::Tap(spec),
    })
}
