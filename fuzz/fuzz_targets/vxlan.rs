//! The VXLAN header: `switchyard_switch::ports::vxlan` decapsulation of a
//! received UDP payload, the header we send, and the remote table that
//! learns inner source MACs. Seeds: VXLAN packets the Linux kernel sent.
//!
//! Input: a flags byte (bit 0 strict, bits 1.. pick the remote address),
//! our VNI (3 bytes, big-endian), then the UDP payload.
//!
//! Checks, besides "never panics": an accepted packet is at least a header
//! and an Ethernet header long, has the I flag (and in strict mode nothing
//! else), carries our VNI, and its inner frame is everything after the 8
//! header bytes; a wrong VNI is reported as the packet's own; re-wrapping
//! an inner frame with `header(vni)` is accepted even in strict mode and
//! gives back the same frame; a learned unicast source is found again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;
use switchyard_switch::ports::vxlan::{
    decapsulate, header, HeaderError, RemoteTable, VxlanPacket, HEADER_LEN,
};
use switchyard_switch::MacAddr;

fuzz_target!(|data: &[u8]| {
    let [flags, v0, v1, v2, packet @ ..] = data else {
        return;
    };
    let strict = flags & 1 != 0;
    let vni = u32::from_be_bytes([0, *v0, *v1, *v2]);
    match decapsulate(packet, vni, strict) {
        Ok(inner) => {
            assert_eq!(inner, HEADER_LEN..packet.len());
            assert!(packet.len() >= HEADER_LEN + switchyard_switch::MIN_FRAME);
            assert!(packet[0] & 0x08 != 0, "accepted without the I flag");
            if strict {
                assert_eq!(
                    &packet[..4],
                    &[0x08, 0, 0, 0],
                    "strict accepted reserved bits"
                );
                assert_eq!(packet[7], 0, "strict accepted reserved bits");
            }
            assert_eq!(&packet[4..7], &[*v0, *v1, *v2]);
            learn(&packet[inner], *flags);
        }
        Err(HeaderError::WrongVni(other)) => {
            assert_ne!(other, vni);
            assert!(other < 1 << 24);
        }
        Err(_) => {}
    }
    // Whatever arrived, our own encapsulation of its inner bytes must be
    // accepted by a strict peer and give the same frame back.
    if let Ok(p) = VxlanPacket::new_checked(packet, false) {
        let mut ours = header(p.vni()).to_vec();
        ours.extend_from_slice(p.inner());
        match decapsulate(&ours, p.vni(), true) {
            Ok(r) => assert_eq!(&ours[r], p.inner()),
            Err(e) => panic!("our own header is refused: {e:?}"),
        }
    }
});

fn learn(inner: &[u8], flags: u8) {
    let Some(src) = inner.get(6..12).and_then(|s| <[u8; 6]>::try_from(s).ok()) else {
        return;
    };
    let mac = MacAddr(src);
    let remote = IpAddr::V4(Ipv4Addr::new(198, 51, 100, flags >> 1));
    let now = Duration::from_secs(1000);
    let mut table = RemoteTable::default();
    table.learn(mac, remote, now);
    let found = table.lookup(mac, now);
    if mac.is_multicast() {
        assert_eq!(found, None, "learned a group address");
    } else {
        assert_eq!(found, Some(remote), "a learned source is not found");
    }
}
