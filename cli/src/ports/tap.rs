//! `tap`: a tap device into the host's stack. On the command line:
//! `--tap IF`.

use super::{Built, Configured, Key, Kind, Name, PortType, SpecError, Values};

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

/// A tap port: the device and, from a config file, the port's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    /// The port's name; `None` means `tap:DEVICE`.
    pub name: Option<String>,
    /// The interface.
    pub device: String,
    /// Ask for checksum and TSO offloads (virtio-net header); a kernel
    /// that refuses gets a plain tap anyway.
    pub offload: bool,
}

impl TapSpec {
    /// A tap named after its device.
    pub fn device(device: impl Into<String>) -> TapSpec {
        TapSpec {
            name: None,
            device: device.into(),
            offload: true,
        }
    }

    /// The port's name as `switchyard ctl` shows it.
    pub fn port_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("tap:{}", self.device))
    }
}

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
