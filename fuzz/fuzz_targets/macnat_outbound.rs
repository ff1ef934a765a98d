//! MAC-NAT outbound: one frame from a guest through
//! `switchyard_mac_nat::MacNat::outbound`, which runs every outbound
//! rewriter (ARP, IPv4/IPv6 source learning, ND options, DHCPv4 flag or
//! impersonation, DHCPv6, other ethertypes) on a fresh table.
//!
//! Input: a config byte (`switchyard_fuzz::macnat_config`), the ingress
//! port, then the frame (seeds: frames a real guest sent).
//!
//! Checks, besides "never panics": a frame that is sent carries the uplink
//! MAC as its source, grew by at most the 9-byte client identifier, and
//! has valid IPv4/UDP/ICMP/ICMPv6 checksums whenever the guest's frame
//! had; a group-addressed source is never sent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use switchyard_fuzz::{bad_checksums, macnat_config, macnat_host_addrs, UPLINK};
use switchyard_mac_nat::{MacAddr, MacNat, Outbound};

/// The most a frame may grow: the DHCP client identifier (option 61).
const MAX_GROWTH: usize = 9;

fuzz_target!(|data: &[u8]| {
    let [bits, port, frame @ ..] = data else {
        return;
    };
    let mut nat = match MacNat::new(MacAddr(UPLINK), macnat_config(*bits)) {
        Ok(n) => n,
        Err(e) => panic!("the fuzz configuration is invalid: {e}"),
    };
    nat.set_host_addrs(macnat_host_addrs(*bits));
    let mut out = frame.to_vec();
    let verdict = nat.outbound(&mut out, u32::from(*port), Duration::from_secs(1000));
    if verdict != Outbound::Send {
        return;
    }
    assert_eq!(
        &out[6..12],
        &UPLINK,
        "sent without the uplink MAC as source"
    );
    assert!(frame[6] & 1 == 0, "sent a frame with a group source");
    assert!(
        out.len() <= frame.len() + MAX_GROWTH,
        "grew from {} to {}",
        frame.len(),
        out.len()
    );
    if bad_checksums(frame).is_empty() {
        assert_eq!(
            bad_checksums(&out),
            Vec::<&str>::new(),
            "a rewrite broke a checksum"
        );
    }
});
