//! What the port builders make: a transport's configuration, a tap's, or
//! a control socket's, with the port's name.

use switchyard_bridge::{PcapConfig, VhostUserConfig};
use switchyard_switch::ports::mcast::McastConfig;
use switchyard_switch::ports::stream::StreamConfig;
use switchyard_switch::ports::udp::UdpConfig;
use switchyard_switch::ports::unix::UnixConfig;
use switchyard_switch::ports::vxlan::VxlanConfig;

/// A transport port (`--port`, `ports:` other than unix and tap).
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
    /// A vhost-user port (virtio-net guests in shared memory).
    VhostUser(VhostUserConfig),
}

impl PortSpec {
    /// The port's name.
    pub fn name(&self) -> &str {
        match self {
            PortSpec::Udp(c) => &c.name,
            PortSpec::Mcast(c) => &c.name,
            PortSpec::Stream(c) => &c.name,
            PortSpec::Vxlan(c) => &c.name,
            PortSpec::Pcap(c) => &c.name,
            PortSpec::VhostUser(c) => &c.name,
        }
    }
}

/// What a builder makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Configured {
    /// A transport.
    Port(PortSpec),
    /// A tap device.
    Tap(TapSpec),
    /// A control socket (its clients become ports).
    Unix(UnixConfig),
}

/// A built port and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The name that must be unique among the configured ports.
    pub name: String,
    /// The configuration.
    pub port: Configured,
}

impl Built {
    /// A transport named after its config.
    pub fn port(spec: PortSpec) -> Built {
        Built {
            name: spec.name().to_string(),
            port: Configured::Port(spec),
        }
    }
}

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
