//! Opening and serving the transport ports: binds what a [`PortSpec`]
//! asks for and runs it on the switch.

use super::spec::PortSpec;
use std::path::PathBuf;
use std::sync::Arc;
use switchyard_switch::ports::mcast::McastPort;
use switchyard_switch::ports::stream::StreamPort;
use switchyard_switch::ports::udp::UdpPort;
use switchyard_switch::ports::vxlan::VxlanPort;
use switchyard_switch::ports::PortError;
use switchyard_switch::{Stop, Switch};

/// A transport whose sockets are bound, ready to serve.
#[derive(Debug)]
pub enum OpenPort {
    /// udp
    Udp(UdpPort),
    /// mcast
    Mcast(McastPort),
    /// stream
    Stream(StreamPort),
    /// vxlan
    Vxlan(VxlanPort),
    /// pcap (host NIC)
    Pcap(switchyard_bridge::PcapPort),
    /// vhost-user
    VhostUser(switchyard_bridge::VhostUserPort),
}

impl OpenPort {
    /// Binds what the spec asks for.
    pub fn open(spec: &PortSpec) -> Result<OpenPort, PortError> {
        Ok(match spec {
            PortSpec::Udp(c) => OpenPort::Udp(UdpPort::open(c.clone())?),
            PortSpec::Mcast(c) => OpenPort::Mcast(McastPort::open(c.clone())?),
            PortSpec::Stream(c) => OpenPort::Stream(StreamPort::open(c.clone())?),
            PortSpec::Vxlan(c) => OpenPort::Vxlan(VxlanPort::open(c.clone())?),
            PortSpec::Pcap(c) => {
                OpenPort::Pcap(switchyard_bridge::PcapPort::open(c.clone()).map_err(|e| {
                    PortError::Config {
                        port: c.name.clone(),
                        message: e.to_string(),
                    }
                })?)
            }
            PortSpec::VhostUser(c) => {
                OpenPort::VhostUser(switchyard_bridge::VhostUserPort::open(c.clone()).map_err(
                    |e| PortError::Config {
                        port: c.name.clone(),
                        message: e.to_string(),
                    },
                )?)
            }
        })
    }

    /// A socket file to remove on shutdown, if the port made one.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match self {
            OpenPort::Udp(p) => p.cleanup_path(),
            OpenPort::Stream(p) => p.cleanup_path(),
            OpenPort::VhostUser(p) => p.cleanup_path(),
            OpenPort::Mcast(_) | OpenPort::Vxlan(_) | OpenPort::Pcap(_) => None,
        }
    }

    /// Runs the port on the switch.
    pub fn spawn(self, switch: Arc<Switch>, stop: Stop) -> tokio::task::JoinHandle<()> {
        match self {
            OpenPort::Udp(p) => tokio::spawn(p.serve(switch, stop)),
            OpenPort::Mcast(p) => tokio::spawn(p.serve(switch, stop)),
            OpenPort::Stream(p) => tokio::spawn(p.serve(switch, stop)),
            OpenPort::Vxlan(p) => tokio::spawn(p.serve(switch, stop)),
            OpenPort::Pcap(p) => tokio::spawn(p.serve(switch, stop)),
            OpenPort::VhostUser(p) => tokio::spawn(p.serve(switch, stop)),
        }
    }
}
