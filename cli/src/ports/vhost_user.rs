//! `vhost-user`: a virtio-net device for QEMU, libvirt, cloud-hypervisor
//! or UML guests whose rings live in shared memory; Switchyard is the
//! backend and listens on the socket (`mode=server`) or connects to a
//! frontend that listens (`mode=client`).

use super::source::{Key, Kind, Name, PortType, SpecError, Values};
use super::spec::{Built, PortSpec};
use switchyard_bridge::vhost_user::{parse_mac, parse_queues, VhostUserConfig, VhostUserMode};

const PATH: Key = Key::text(
    "path",
    "SOCK",
    "the socket: listened on (server) or the frontend's (client)",
)
.required();
const MODE: Key = Key::text(
    "mode",
    "server|client",
    "listen for the frontend, or connect (and reconnect) to it",
)
.default("server");
const QUEUES: Key =
    Key::new("queues", Kind::Number, "N", "queue pairs offered (1-16)").default("1");
const MAC: Key = Key::text("mac", "MAC", "the guest's MAC address (VIRTIO_NET_F_MAC)");
const MTU: Key = Key::new(
    "mtu",
    Kind::Number,
    "N",
    "the MTU offered (VIRTIO_NET_F_MTU)",
);

/// The vhost-user type.
pub const TYPE: PortType = PortType {
    name: "vhost-user",
    summary: "a virtio-net guest over vhost-user (QEMU, libvirt, cloud-hypervisor, UML)",
    keys: &[PATH, MODE, MAC, MTU, QUEUES],
    flag: None,
    vlans: true,
    build,
};

fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
    let path = v.need(&PATH)?.value;
    let mode = v.parse(&MODE, VhostUserMode::parse)?;
    let queues = v.parse(&QUEUES, parse_queues)?;
    let mac = v.parse(&MAC, parse_mac)?;
    let mtu = v.parse(&MTU, |s| match s.parse::<u16>() {
        Ok(m) if m >= 68 => Ok(m),
        _ => Err(format!("{s:?} is not an MTU (68 to 65535)")),
    })?;
    let mut config = VhostUserConfig::new(name.get(), path);
    config.mac = mac;
    config.mtu = mtu;
    config.mode = mode.unwrap_or_default();
    config.queues = queues.unwrap_or(1);
    Ok(Built::port(PortSpec::VhostUser(config)))
}

#[cfg(test)]
mod tests {
    use super::super::{build as build_port, Configured, Values};
    use super::*;

    fn spec(kv: &[(&str, &str)]) -> Values {
        let mut v = Values::new("vhost-user", None);
        for (k, x) in kv {
            v.push(k, x, None);
        }
        v
    }

    #[test]
    fn path_mac_and_mtu_reach_the_config() {
        let built = build_port(
            spec(&[
                ("path", "/run/v.sock"),
                ("mac", "02:00:00:00:00:07"),
                ("mtu", "9000"),
            ]),
            1,
        )
        .expect("builds");
        assert_eq!(built.name, "vhost-user1");
        match built.port {
            Configured::Port(PortSpec::VhostUser(c)) => {
                assert_eq!(c.path.to_str(), Some("/run/v.sock"));
                assert_eq!(c.mac, Some([2, 0, 0, 0, 0, 7]));
                assert_eq!(c.mtu, Some(9000));
                assert_eq!((c.mode, c.queues), (VhostUserMode::Server, 1));
            }
            other => panic!("{other:?}"),
        }
        let e = build_port(spec(&[("mac", "02:00:00:00:00:07")]), 1).expect_err("no path");
        assert_eq!(e.to_string(), "a vhost-user port needs path");
        assert!(build_port(spec(&[("path", "/x"), ("mtu", "20")]), 1).is_err());
        assert!(build_port(spec(&[("path", "/x"), ("mac", "01:00:5e:00:00:01")]), 1).is_err());
    }

    #[test]
    fn client_mode_and_queues_reach_the_config() {
        let built = build_port(
            spec(&[("path", "/run/q.sock"), ("mode", "client"), ("queues", "4")]),
            1,
        )
        .expect("builds");
        match built.port {
            Configured::Port(PortSpec::VhostUser(c)) => {
                assert_eq!((c.mode, c.queues), (VhostUserMode::Client, 4));
            }
            other => panic!("{other:?}"),
        }
        let e = build_port(spec(&[("path", "/x"), ("mode", "connect")]), 1).expect_err("bad mode");
        assert!(e.to_string().contains("server or client"), "{e}");
        for q in ["0", "17", "many"] {
            let e = build_port(spec(&[("path", "/x"), ("queues", q)]), 1).expect_err("bad queues");
            assert!(e.to_string().contains("1 to 16"), "{e}");
        }
    }

    #[test]
    fn a_config_file_spells_it_the_same() {
        let mut v = Values::new_yaml("vhost-user", None);
        v.push("path", "/run/vm1.sock", None);
        v.push("mtu", "1500", None);
        v.push("mode", "client", None);
        v.push("queues", "2", None);
        match build_port(v, 2).expect("builds").port {
            Configured::Port(PortSpec::VhostUser(c)) => {
                assert_eq!((c.mac, c.mtu), (None, Some(1500)));
                assert_eq!((c.mode, c.queues), (VhostUserMode::Client, 2));
            }
            other => panic!("{other:?}"),
        }
    }
}
