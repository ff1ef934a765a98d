use super::*;
use crate::vlan::PortVlans;
use crate::MacAddr;
use proptest::prelude::*;
use std::collections::HashMap;

fn s(x: u64) -> Duration {
    Duration::from_secs(x)
}

/// A real ARP request from 02:00:00:00:00:01 (UML, 42 bytes, unpadded).
const ARP_REQUEST: [u8; 42] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x01,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x02,
];

/// The ARP reply from 02:00:00:00:00:02 back to 02:00:00:00:00:01.
const ARP_REPLY: [u8; 42] = [
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x06, 0x00, 0x01,
    0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x02, 0xc0, 0x00, 0x02, 0x02,
    0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0xc0, 0x00, 0x02, 0x01,
];

fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14)];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12] = 0x08;
    f
}

fn engine(mode: Mode, ports: u32) -> Engine {
    let mut e = Engine::new(EngineConfig::new(mode, FdbConfig::default()));
    for p in 1..=ports {
        e.add_port(PortId(p));
    }
    e
}

#[test]
fn arp_request_floods_and_reply_is_switched() {
    let mut e = engine(Mode::Switch, 3);
    assert_eq!(
        e.decide(PortId(1), &ARP_REQUEST, s(0)).decision,
        Decision::Flood
    );
    assert_eq!(
        e.decide(PortId(2), &ARP_REPLY, s(0)).decision,
        Decision::Forward(PortId(1))
    );
    assert_eq!(e.events().learned, 2);
}

#[test]
fn runts_and_multicast_sources_are_dropped() {
    let mut e = engine(Mode::Switch, 2);
    assert_eq!(
        e.decide(PortId(1), &ARP_REQUEST[..13], s(0)).decision,
        Decision::Drop(DropReason::TooShort)
    );
    assert_eq!(
        e.decide(PortId(1), &[], s(0)).decision,
        Decision::Drop(DropReason::TooShort)
    );
    let bad = frame(MacAddr::BROADCAST, MacAddr([0x01, 0, 0x5e, 0, 0, 1]), 60);
    assert_eq!(
        e.decide(PortId(1), &bad, s(0)).decision,
        Decision::Drop(DropReason::MulticastSource)
    );
    assert!(e.fdb().is_empty());
}

#[test]
fn jumbo_frames_pass_whole_and_giants_do_not() {
    let mut e = engine(Mode::Switch, 2);
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    let f = frame(MacAddr::BROADCAST, a, 65_535);
    assert_eq!(e.decide(PortId(1), &f, s(0)).decision, Decision::Flood);
    let g = frame(MacAddr::BROADCAST, a, 65_536);
    assert_eq!(
        e.decide(PortId(1), &g, s(0)).decision,
        Decision::Drop(DropReason::TooLong)
    );
}

#[test]
fn destination_on_the_ingress_port_is_not_reflected() {
    let mut e = engine(Mode::Switch, 2);
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    let b = MacAddr([2, 0, 0, 0, 0, 0xb]);
    e.decide(PortId(1), &frame(MacAddr::BROADCAST, a, 60), s(0));
    e.decide(PortId(1), &frame(MacAddr::BROADCAST, b, 60), s(0));
    assert_eq!(
        e.decide(PortId(1), &frame(b, a, 60), s(0)).decision,
        Decision::Drop(DropReason::LocalDestination)
    );
}

#[test]
fn hub_floods_everything_and_learns_nothing() {
    let mut e = engine(Mode::Hub, 3);
    e.decide(PortId(1), &ARP_REQUEST, s(0));
    assert_eq!(
        e.decide(PortId(2), &ARP_REPLY, s(0)).decision,
        Decision::Flood
    );
    assert!(e.fdb().is_empty());
}

#[test]
fn removing_a_port_purges_all_its_addresses() {
    let mut e = engine(Mode::Switch, 3);
    for n in 0..5u8 {
        let m = MacAddr([2, 0, 0, 0, 1, n]);
        e.decide(PortId(3), &frame(MacAddr::BROADCAST, m, 60), s(0));
    }
    assert_eq!(e.remove_port(PortId(3)), 5);
    let m = MacAddr([2, 0, 0, 0, 1, 4]);
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    assert_eq!(
        e.decide(PortId(1), &frame(m, a, 60), s(1)).decision,
        Decision::Flood
    );
    assert_eq!(
        e.decide(PortId(3), &frame(a, m, 60), s(1)).decision,
        Decision::Drop(DropReason::IngressDown)
    );
}

#[test]
fn aged_destination_floods_again() {
    let mut e = Engine::new(EngineConfig::new(
        Mode::Switch,
        FdbConfig::new(s(10), 100, None),
    ));
    e.add_port(PortId(1));
    e.add_port(PortId(2));
    e.decide(PortId(2), &ARP_REPLY, s(0));
    let b = MacAddr([2, 0, 0, 0, 0, 2]);
    let a = MacAddr([2, 0, 0, 0, 0, 1]);
    assert_eq!(
        e.decide(PortId(1), &frame(b, a, 60), s(9)).decision,
        Decision::Forward(PortId(2))
    );
    assert_eq!(
        e.decide(PortId(1), &frame(b, a, 60), s(10)).decision,
        Decision::Flood
    );
    assert_eq!(e.age(s(10)), 1);
    assert_eq!(e.events().aged, 1);
}

#[test]
fn a_move_is_reported_once() {
    let mut e = engine(Mode::Switch, 2);
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    let bc = frame(MacAddr::BROADCAST, a, 60);
    assert_eq!(
        e.decide(PortId(1), &bc, s(0)).notice,
        Some(FdbNotice::Learned {
            mac: a,
            port: PortId(1)
        })
    );
    assert_eq!(e.decide(PortId(1), &bc, s(0)).notice, None, "a refresh");
    assert_eq!(
        e.decide(PortId(2), &bc, s(1)).notice,
        Some(FdbNotice::Moved {
            mac: a,
            from: PortId(1),
            to: PortId(2)
        })
    );
    assert_eq!(e.decide(PortId(2), &bc, s(1)).notice, None);
}

/// Every frame of a batch answers with its own notice: a learn, two moves
/// (the second a flap) and a refusal in one batch all come out, in order,
/// none overwriting another.
#[test]
fn every_notice_of_a_batch_comes_out() {
    let mut e = Engine::new(EngineConfig::new(
        Mode::Switch,
        FdbConfig::new(s(300), 1, None),
    ));
    e.add_port(PortId(1));
    e.add_port(PortId(2));
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    let b = MacAddr([2, 0, 0, 0, 0, 0xb]);
    let batch: [(u32, Vec<u8>); 5] = [
        (1, frame(MacAddr::BROADCAST, a, 60)),
        (2, frame(MacAddr::BROADCAST, a, 60)),
        (2, frame(b, a, 60)),
        (1, frame(MacAddr::BROADCAST, a, 60)),
        (1, frame(a, b, 60)),
    ];
    let notices: Vec<Option<FdbNotice>> = batch
        .iter()
        .map(|(p, f)| e.decide(PortId(*p), f, s(5)).notice)
        .collect();
    assert_eq!(
        notices,
        [
            Some(FdbNotice::Learned {
                mac: a,
                port: PortId(1)
            }),
            Some(FdbNotice::Moved {
                mac: a,
                from: PortId(1),
                to: PortId(2)
            }),
            None,
            Some(FdbNotice::Flapping {
                mac: a,
                from: PortId(2),
                to: PortId(1)
            }),
            Some(FdbNotice::Refused {
                mac: b,
                port: PortId(1),
                per_port: false
            }),
        ]
    );
    let ev = e.events();
    assert_eq!((ev.learned, ev.moved, ev.flaps, ev.refused), (1, 2, 1, 1));
}

#[test]
fn full_table_still_forwards() {
    let mut e = Engine::new(EngineConfig::new(
        Mode::Switch,
        FdbConfig::new(s(300), 1, None),
    ));
    e.add_port(PortId(1));
    e.add_port(PortId(2));
    e.decide(PortId(2), &ARP_REPLY, s(0));
    // 02:..:01 cannot be learned, but its frame to 02:..:02 is delivered.
    let a = MacAddr([2, 0, 0, 0, 0, 1]);
    let b = MacAddr([2, 0, 0, 0, 0, 2]);
    assert_eq!(
        e.decide(PortId(1), &frame(b, a, 60), s(1)).decision,
        Decision::Forward(PortId(2))
    );
    assert_eq!(e.events().refused, 1);
    assert_eq!(
        e.decide(PortId(2), &frame(a, b, 60), s(1)).decision,
        Decision::Flood
    );
}

/// One input step for the model-based property test.
#[derive(Debug, Clone)]
struct Step {
    ingress: u32,
    src: u8,
    dst: Option<u8>,
    len: usize,
    dt: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        1u32..=5,
        0u8..8,
        proptest::option::of(0u8..8),
        0usize..200,
        0u64..40,
    )
        .prop_map(|(ingress, src, dst, len, dt)| Step {
            ingress,
            src,
            dst,
            len,
            dt,
        })
}

fn mac_of(n: u8) -> MacAddr {
    // Host 7 stands for a multicast source or destination.
    if n == 7 {
        MacAddr([0x01, 0, 0x5e, 0, 0, 7])
    } else {
        MacAddr([2, 0, 0, 0, 0, n])
    }
}

proptest! {
    /// Against a model FDB: a frame never goes back to its ingress port,
    /// known unicast goes where its destination was last seen (within the
    /// aging time), everything else floods, and drops have the right reason.
    #[test]
    fn engine_matches_model(steps in proptest::collection::vec(step(), 1..200), hub in any::<bool>()) {
        let aging = s(100);
        let mode = if hub { Mode::Hub } else { Mode::Switch };
        let mut e = Engine::new(EngineConfig::new(mode, FdbConfig::new(aging, 1000, None)));
        for p in 1..=4 { e.add_port(PortId(p)); }
        let mut model: HashMap<MacAddr, (u32, Duration)> = HashMap::new();
        let mut now = s(0);
        for st in steps {
            now += s(st.dt);
            let src = mac_of(st.src);
            let dst = st.dst.map(mac_of).unwrap_or(MacAddr::BROADCAST);
            let f = frame(dst, src, st.len);
            let f = if st.len < 14 { f[..st.len].to_vec() } else { f };
            let d = e.decide(PortId(st.ingress), &f, now).decision;
            if let Decision::Forward(p) = d {
                prop_assert_ne!(p, PortId(st.ingress));
                prop_assert!(e.has_port(p));
            }
            let expect = if f.len() < 14 {
                Decision::Drop(DropReason::TooShort)
            } else if st.ingress == 5 {
                Decision::Drop(DropReason::IngressDown)
            } else if src.is_multicast() {
                Decision::Drop(DropReason::MulticastSource)
            } else if hub {
                Decision::Flood
            } else {
                model.insert(src, (st.ingress, now));
                if dst.is_multicast() {
                    Decision::Flood
                } else {
                    match model.get(&dst) {
                        Some((p, t)) if now.saturating_sub(*t) < aging => {
                            if *p == st.ingress {
                                Decision::Drop(DropReason::LocalDestination)
                            } else {
                                Decision::Forward(PortId(*p))
                            }
                        }
                        _ => Decision::Flood,
                    }
                }
            };
            prop_assert_eq!(d, expect);
        }
    }

    /// The flood set is exactly the members minus the ingress port.
    #[test]
    fn flood_set_is_members_minus_ingress(members in proptest::collection::btree_set(1u32..50, 0..20), ingress in 1u32..50) {
        let mut e = engine(Mode::Switch, 0);
        for m in &members { e.add_port(PortId(*m)); }
        let got: Vec<u32> = e.flood_set(PortId(ingress)).map(|p| p.0).collect();
        let want: Vec<u32> = members.iter().copied().filter(|m| *m != ingress).collect();
        prop_assert_eq!(got, want);
    }

    /// Aging removes exactly the entries idle for at least the aging time.
    #[test]
    fn aging_removes_exactly_the_stale(seen in proptest::collection::vec(0u64..1000, 1..100), at in 0u64..1200) {
        let aging = s(300);
        let mut f = Fdb::new(FdbConfig::new(aging, 10_000, None));
        for (i, t) in seen.iter().enumerate() {
            f.learn(MacAddr([2, 0, 0, 0, (i >> 8) as u8, i as u8]), 0, PortId(1 + (i as u32 % 3)), s(*t));
        }
        let stale = seen.iter().filter(|t| at.saturating_sub(**t) >= 300).count();
        prop_assert_eq!(f.age(s(at)), stale);
        prop_assert_eq!(f.len(), seen.len() - stale);
        let per_port: usize = (1..=3).map(|p| f.port_len(PortId(p))).sum();
        prop_assert_eq!(per_port, f.len());
    }
}

fn guarded(g: Guards) -> Engine {
    let mut e = Engine::new(EngineConfig::new(Mode::Switch, FdbConfig::default()).with_guards(g));
    for p in 1..=3 {
        e.add_port(PortId(p));
    }
    e
}

/// A real STP configuration BPDU's header: 802.3 length, LLC 42 42 03.
fn bpdu() -> Vec<u8> {
    let mut f = frame(
        MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]),
        MacAddr([2, 0, 0, 0, 0, 9]),
        60,
    );
    f[12] = 0x00;
    f[13] = 0x26;
    f[14..17].copy_from_slice(&[0x42, 0x42, 0x03]);
    f
}

#[test]
fn bpdu_guard_drops_link_local_groups_only_when_on() {
    let mut off = guarded(Guards::default());
    assert_eq!(
        off.decide(PortId(1), &bpdu(), s(0)).decision,
        Decision::Flood
    );
    let mut on = guarded(Guards::new(true, 0, 0, 0));
    assert_eq!(
        on.decide(PortId(1), &bpdu(), s(0)).decision,
        Decision::Drop(DropReason::BpduGuard)
    );
    let lldp = frame(
        MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]),
        MacAddr([2, 0, 0, 0, 0, 9]),
        60,
    );
    assert_eq!(
        on.decide(PortId(1), &lldp, s(0)).decision,
        Decision::Drop(DropReason::BpduGuard)
    );
    let not_reserved = frame(
        MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x10]),
        MacAddr([2, 0, 0, 0, 0, 9]),
        60,
    );
    assert_eq!(
        on.decide(PortId(1), &not_reserved, s(0)).decision,
        Decision::Flood
    );
}

#[test]
fn storm_control_limits_each_class_per_port_per_second() {
    let mut e = guarded(Guards::new(false, 3, 0, 2));
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    let bc = frame(MacAddr::BROADCAST, a, 60);
    let t = Duration::from_millis(100);
    let verdicts: Vec<Decision> = (0..5)
        .map(|_| e.decide(PortId(1), &bc, t).decision)
        .collect();
    assert_eq!(
        verdicts.iter().filter(|d| **d == Decision::Flood).count(),
        3
    );
    assert_eq!(verdicts[4], Decision::Drop(DropReason::StormControl));
    // Another port has its own bucket; multicast is unlimited here.
    assert_eq!(
        e.decide(
            PortId(2),
            &frame(MacAddr::BROADCAST, MacAddr([2, 0, 0, 0, 0, 0xb]), 60),
            t
        )
        .decision,
        Decision::Flood
    );
    let mc = frame(MacAddr([0x01, 0, 0x5e, 0, 0, 1]), a, 60);
    assert_eq!(e.decide(PortId(1), &mc, t).decision, Decision::Flood);
    // A second later the bucket is full again.
    assert_eq!(e.decide(PortId(1), &bc, t + s(1)).decision, Decision::Flood);
    // Unknown unicast: 2 per second, known unicast unlimited.
    let unknown = frame(MacAddr([2, 0, 0, 0, 0, 0x77]), a, 60);
    let u: Vec<Decision> = (0..3)
        .map(|_| e.decide(PortId(1), &unknown, t).decision)
        .collect();
    assert_eq!(u[2], Decision::Drop(DropReason::StormControl));
    let known = frame(MacAddr([2, 0, 0, 0, 0, 0xb]), a, 60);
    for _ in 0..10 {
        assert_eq!(
            e.decide(PortId(1), &known, t).decision,
            Decision::Forward(PortId(2))
        );
    }
}

#[test]
fn a_mac_moving_back_and_forth_is_a_flap() {
    let mut e = engine(Mode::Switch, 2);
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    let f = frame(MacAddr::BROADCAST, a, 60);
    e.decide(PortId(1), &f, s(0));
    e.decide(PortId(2), &f, s(10));
    assert_eq!(e.events().flaps, 0, "one move is not a flap");
    let d = e.decide(PortId(1), &f, s(10) + Duration::from_millis(200));
    assert_eq!(e.events().flaps, 1);
    assert!(matches!(d.notice, Some(FdbNotice::Flapping { .. })));
    e.decide(PortId(2), &f, s(20));
    assert_eq!(
        e.events().flaps,
        1,
        "a move long after the last is not a flap"
    );
}

#[test]
fn a_pinned_mac_stays_put_and_cannot_be_spoofed() {
    let mut e = engine(Mode::Switch, 3);
    let g = MacAddr([2, 0, 0, 0, 0, 0x10]);
    e.pin(g, PortId(2));
    let other = MacAddr([2, 0, 0, 0, 0, 0x11]);
    // Frames to it go to its port before it ever sent anything.
    assert_eq!(
        e.decide(PortId(1), &frame(g, other, 60), s(0)).decision,
        Decision::Forward(PortId(2))
    );
    // Another port using its MAC is dropped and learns nothing.
    assert_eq!(
        e.decide(PortId(3), &frame(MacAddr::BROADCAST, g, 60), s(1))
            .decision,
        Decision::Drop(DropReason::MacSpoof)
    );
    assert_eq!(
        e.decide(PortId(1), &frame(g, other, 60), s(2)).decision,
        Decision::Forward(PortId(2))
    );
    // From its own port it is fine; the pin survives aging.
    assert_eq!(
        e.decide(PortId(2), &frame(MacAddr::BROADCAST, g, 60), s(3))
            .decision,
        Decision::Flood
    );
    assert_eq!(
        e.decide(PortId(1), &frame(g, other, 60), s(10_000))
            .decision,
        Decision::Forward(PortId(2))
    );
    // Removing the port removes the pin.
    e.remove_port(PortId(2));
    assert_eq!(
        e.decide(PortId(3), &frame(MacAddr::BROADCAST, g, 60), s(10_001))
            .decision,
        Decision::Flood
    );
}

/// `frame` with an 802.1Q tag for `vid` after the addresses.
fn tagged(f: &[u8], vid: u16) -> Vec<u8> {
    let mut out = Vec::new();
    crate::vlan::tag_into(f, vid, &mut out);
    out
}

/// Ports 1–2 access VLAN 10, port 3 access VLAN 20, port 4 a trunk
/// carrying 10 and 20 tagged with no native VLAN.
fn vlan_engine() -> Engine {
    let mut e = engine(Mode::Switch, 4);
    e.set_vlan_aware(true);
    e.set_port_vlans(PortId(1), PortVlans::access(10));
    e.set_port_vlans(PortId(2), PortVlans::access(10));
    e.set_port_vlans(PortId(3), PortVlans::access(20));
    e.set_port_vlans(PortId(4), "/10,20".parse().expect("spec"));
    e
}

#[test]
fn floods_stay_inside_their_vlan() {
    let e = &mut vlan_engine();
    let Decided {
        decision: d, class, ..
    } = e.decide(PortId(1), &ARP_REQUEST, s(0));
    assert_eq!((d, class.vid, class.tag), (Decision::Flood, 10, None));
    let set: Vec<_> = e.flood_set_in(PortId(1), 10).collect();
    assert_eq!(set, vec![PortId(2), PortId(4)]);
    let set: Vec<_> = e.flood_set_in(PortId(3), 20).collect();
    assert_eq!(set, vec![PortId(4)]);
}

#[test]
fn the_fdb_is_per_vlan() {
    let e = &mut vlan_engine();
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    let b = MacAddr([2, 0, 0, 0, 0, 0xb]);
    // a is on port 1 in VLAN 10 and, tagged, behind the trunk in VLAN 20.
    e.decide(PortId(1), &frame(b, a, 60), s(0));
    e.decide(PortId(4), &tagged(&frame(b, a, 60), 20), s(0));
    // From port 3 (VLAN 20), a is behind the trunk ...
    assert_eq!(
        e.decide(PortId(3), &frame(a, b, 60), s(0)).decision,
        Decision::Forward(PortId(4))
    );
    // ... and from the trunk in VLAN 10 it is on port 1.
    let Decided {
        decision: d, class, ..
    } = e.decide(PortId(4), &tagged(&frame(a, b, 60), 10), s(0));
    assert_eq!(
        (d, class.vid, class.tag),
        (Decision::Forward(PortId(1)), 10, Some(10))
    );
    assert_eq!(
        e.fdb().len(),
        4,
        "a and b each in two VLANs: {:?}",
        e.fdb_entries(s(0))
    );
}

#[test]
fn frames_outside_the_ports_vlans_are_dropped() {
    let e = &mut vlan_engine();
    // Untagged on a trunk without a native VLAN.
    assert_eq!(
        e.decide(PortId(4), &ARP_REQUEST, s(0)).decision,
        Decision::Drop(DropReason::VlanFiltered)
    );
    // A VLAN the trunk does not carry.
    assert_eq!(
        e.decide(PortId(4), &tagged(&ARP_REQUEST, 30), s(0))
            .decision,
        Decision::Drop(DropReason::VlanFiltered)
    );
    // Another VLAN's tag on an access port.
    assert_eq!(
        e.decide(PortId(1), &tagged(&ARP_REQUEST, 20), s(0))
            .decision,
        Decision::Drop(DropReason::VlanFiltered)
    );
    assert_eq!(e.fdb().len(), 0, "nothing refused is learned");
}

#[test]
fn a_port_without_a_rule_is_in_vlan_1_and_transparent_mode_ignores_tags() {
    let mut e = engine(Mode::Switch, 2);
    // Transparent: any tag passes, one table.
    let Decided {
        decision: d, class, ..
    } = e.decide(PortId(1), &tagged(&ARP_REQUEST, 30), s(0));
    assert_eq!(
        (d, class),
        (Decision::Flood, crate::vlan::Classified::TRANSPARENT)
    );
    e.set_vlan_aware(true);
    assert_eq!(e.fdb().len(), 0, "switching schemes empties the FDB");
    let Decided {
        decision: d, class, ..
    } = e.decide(PortId(1), &ARP_REQUEST, s(0));
    assert_eq!((d, class.vid), (Decision::Flood, 1));
    assert_eq!(
        e.decide(PortId(1), &tagged(&ARP_REQUEST, 30), s(0))
            .decision,
        Decision::Drop(DropReason::VlanFiltered)
    );
}

#[test]
fn a_learned_port_that_left_the_vlan_is_no_destination() {
    let e = &mut vlan_engine();
    let a = MacAddr([2, 0, 0, 0, 0, 0xa]);
    let b = MacAddr([2, 0, 0, 0, 0, 0xb]);
    e.decide(PortId(2), &frame(b, a, 60), s(0));
    assert_eq!(
        e.decide(PortId(1), &frame(a, b, 60), s(0)).decision,
        Decision::Forward(PortId(2))
    );
    e.set_port_vlans(PortId(2), PortVlans::access(20));
    assert_eq!(
        e.decide(PortId(1), &frame(a, b, 60), s(0)).decision,
        Decision::Flood
    );
    // A static entry outside the VLAN is no destination either.
    e.pin(a, PortId(3));
    assert_eq!(
        e.decide(PortId(1), &frame(a, b, 60), s(0)).decision,
        Decision::Flood
    );
}
