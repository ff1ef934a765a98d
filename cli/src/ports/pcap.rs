//! `pcap`: a host NIC through libpcap, optionally with MAC-NAT (Wi-Fi).

use super::source::{Key, Kind, Name, PortType, SpecError, Values};
use super::spec::{Built, PortSpec};
use switchyard_bridge::PcapConfig;

const DEVICE: Key = Key::text("device", "IF", "the host NIC").required();
const PROMISC: Key = Key::on_off("promisc", "promiscuous mode").default("on (off with mac_nat)");
const FILTER: Key = Key::text("filter", "BPF", "a capture filter");
const MONITOR: Key = Key::on_off("monitor", "capture only, send nothing").default("off");
const MAC_NAT: Key = Key::on_off("mac_nat", "share the NIC's MAC address (Wi-Fi)").default("off");
const MAC_NAT_AGING: Key = Key::new(
    "mac_nat_aging",
    Kind::Duration,
    "DURATION",
    "how long an idle MAC-NAT binding is kept",
)
.default("600s");

/// The pcap type.
pub const TYPE: PortType = PortType {
    name: "pcap",
    summary: "a host NIC through libpcap (MAC-NAT for Wi-Fi)",
    keys: &[DEVICE, PROMISC, FILTER, MONITOR, MAC_NAT, MAC_NAT_AGING],
    flag: None,
    vlans: true,
    build,
};

fn build(v: &mut Values, name: Name) -> Result<Built, SpecError> {
    let device = v.need(&DEVICE)?.value;
    let mac_nat = v.on_off(&MAC_NAT, false)?;
    // MAC-NAT answers for the NIC's own address: no need to see others'.
    let promisc = v.on_off(&PROMISC, !mac_nat)?;
    let monitor = v.on_off(&MONITOR, false)?;
    let filter = v.take(&FILTER).map(|f| f.value);
    let aging = v.parse(&MAC_NAT_AGING, |a| {
        crate::values::parse_duration(a)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{a:?} is not a duration of at least 1s (e.g. 600s, 10m)"))
    })?;
    Ok(Built::port(PortSpec::Pcap(
        PcapConfig::new(name.get(), device)
            .with_options(promisc, filter, monitor, mac_nat)
            .with_mac_nat_aging(aging),
    )))
}
