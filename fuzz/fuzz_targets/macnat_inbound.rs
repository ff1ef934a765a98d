//! MAC-NAT both ways: a sequence of frames from guests
//! (`MacNat::outbound`) and from the LAN (`MacNat::inbound`), with time
//! passing, so that the inbound rewriters (ARP, ND, DHCPv4 and DHCPv6
//! replies, other ethertypes) run against a table the outbound side
//! filled. Seeds: real exchanges (DHCPv4, SLAAC, DHCPv6, ARP, ND, ping,
//! TCP) captured between a guest and a LAN host.
//!
//! Input: a config byte (`switchyard_fuzz::macnat_config`), then records
//! (`switchyard_fuzz::records`); op % 4: 0 the payload leaves a guest on
//! port `arg % 4 + 1`; 1 it arrives from the LAN; 2 `arg` seconds pass,
//! then a sweep; 3 by `arg % 4` guest port `arg / 4 % 4 + 1` goes away,
//! the payload's source guest goes away, or the table is flushed.
//!
//! Checks, besides "never panics": what is sent out has the uplink MAC as
//! source; what is delivered to one guest is addressed to that guest, a
//! unicast MAC other than the uplink's that sent a frame to the NAT before;
//! checksums that were valid stay valid both ways.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::time::Duration;
use switchyard_fuzz::{bad_checksums, macnat_config, macnat_host_addrs, records, UPLINK};
use switchyard_mac_nat::{Inbound, MacAddr, MacNat, Outbound};

fuzz_target!(|data: &[u8]| {
    let Some((bits, rest)) = data.split_first() else {
        return;
    };
    let mut nat = match MacNat::new(MacAddr(UPLINK), macnat_config(*bits)) {
        Ok(n) => n,
        Err(e) => panic!("the fuzz configuration is invalid: {e}"),
    };
    nat.set_host_addrs(macnat_host_addrs(*bits));
    let mut now = Duration::from_secs(1000);
    // Every source MAC that sent a frame to the NAT.
    let mut guests: HashSet<[u8; 6]> = HashSet::new();
    let mut buf = Vec::new();
    for r in records(rest) {
        buf.clear();
        buf.extend_from_slice(r.payload);
        let valid = bad_checksums(r.payload).is_empty();
        match r.op % 4 {
            0 => {
                let port = u32::from(r.arg % 4) + 1;
                // The NAT records a guest before it parses the frame's
                // payload, so a dropped frame may still make one.
                if let Some(src) = r
                    .payload
                    .get(6..12)
                    .and_then(|s| <[u8; 6]>::try_from(s).ok())
                {
                    guests.insert(src);
                }
                if nat.outbound(&mut buf, port, now) == Outbound::Send {
                    assert_eq!(&buf[6..12], &UPLINK, "sent without the uplink MAC");
                    if valid {
                        assert_eq!(
                            bad_checksums(&buf),
                            Vec::<&str>::new(),
                            "outbound broke a checksum"
                        );
                    }
                }
            }
            1 => {
                let verdict = nat.inbound(&mut buf, now);
                if let Inbound::ToGuest(MacAddr(g)) = verdict {
                    assert_eq!(&buf[..6], &g, "delivered without the guest as destination");
                    assert!(
                        guests.contains(&g),
                        "delivered to {g:02x?}, which never sent"
                    );
                    assert!(g[0] & 1 == 0 && g != UPLINK, "delivered to {g:02x?}");
                }
                if matches!(verdict, Inbound::ToGuest(_) | Inbound::Flood) && valid {
                    assert_eq!(
                        bad_checksums(&buf),
                        Vec::<&str>::new(),
                        "inbound broke a checksum"
                    );
                }
            }
            2 => {
                now += Duration::from_secs(u64::from(r.arg));
                nat.sweep(now);
            }
            _ => match r.arg % 4 {
                0 => nat.remove_port(u32::from(r.arg / 4 % 4) + 1),
                1 => {
                    if let Some(src) = r
                        .payload
                        .get(6..12)
                        .and_then(|s| <[u8; 6]>::try_from(s).ok())
                    {
                        nat.remove_guest(MacAddr(src));
                    }
                }
                2 => nat.flush(),
                _ => {
                    let _ = nat.snapshot();
                }
            },
        }
    }
});
