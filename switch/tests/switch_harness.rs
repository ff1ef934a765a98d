//! The switch with in-memory ports: what each port receives, and how send
//! outcomes (full queue, vanished peer) are counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_switch::port::{transmit_each, Port, PortId, SendError, Transmit};
use switchyard_switch::{DropReason, EngineConfig, FdbConfig, Frames, Mode, Overflow, Switch};

/// What a test port does with frames sent to it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Accept,
    Full,
    Gone,
}

/// What a test port's transport was told: the ingress port of every
/// frame it took, and the ports it was asked to forget.
#[derive(Default)]
struct Told {
    ingress: Vec<PortId>,
    forgotten: Vec<PortId>,
}

struct MemoryTx {
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    told: Arc<Mutex<Told>>,
}

impl Transmit for MemoryTx {
    fn transmit(&self, ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| {
            match *self.behaviour.lock().expect("lock") {
                Behaviour::Accept => {
                    self.got.lock().expect("lock").push(frame.to_vec());
                    self.told.lock().expect("lock").ingress.push(ingress);
                    Ok(())
                }
                Behaviour::Full => Err(SendError::Full),
                Behaviour::Gone => Err(SendError::Gone(std::io::Error::from(
                    std::io::ErrorKind::ConnectionRefused,
                ))),
            }
        })
    }

    fn forget_port(&self, port: PortId) {
        self.told.lock().expect("lock").forgotten.push(port);
    }
}

struct TestPort {
    port: Arc<Port>,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    told: Arc<Mutex<Told>>,
}

impl TestPort {
    fn received(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut *self.got.lock().expect("lock"))
    }
    fn set(&self, b: Behaviour) {
        *self.behaviour.lock().expect("lock") = b;
    }
}

fn harness(mode: Mode, n: usize) -> (Arc<Switch>, Vec<TestPort>) {
    let switch = Switch::new(EngineConfig::new(mode, FdbConfig::default()));
    let ports = (0..n)
        .map(|i| {
            let got = Arc::new(Mutex::new(Vec::new()));
            let behaviour = Arc::new(Mutex::new(Behaviour::Accept));
            let told = Arc::new(Mutex::new(Told::default()));
            let tx = MemoryTx {
                got: got.clone(),
                behaviour: behaviour.clone(),
                told: told.clone(),
            };
            let port = Arc::new(Port::new(
                switch.allocate_id(),
                format!("p{i}"),
                "memory",
                "test",
                Box::new(tx),
            ));
            switch.add_port(port.clone());
            TestPort {
                port,
                got,
                behaviour,
                told,
            }
        })
        .collect();
    (switch, ports)
}

fn frame(dst: u8, src: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&if dst == 0xff {
        [0xff; 6]
    } else {
        [2, 0, 0, 0, 0, dst]
    });
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
    f[12] = 0x08;
    f
}

const T0: Duration = Duration::from_secs(0);

#[test]
fn flood_then_learn_then_unicast() {
    let (sw, p) = harness(Mode::Switch, 3);
    sw.forward(
        &p[0].port,
        Frames::Plain(&[&frame(0xff, 1, 60)]),
        Overflow::Drop,
        T0,
    );
    assert!(p[0].received().is_empty(), "never back to the ingress port");
    assert_eq!(p[1].received().len(), 1);
    assert_eq!(p[2].received().len(), 1);
    sw.forward(
        &p[1].port,
        Frames::Plain(&[&frame(1, 2, 60)]),
        Overflow::Drop,
        T0,
    );
    assert_eq!(p[0].received(), vec![frame(1, 2, 60)]);
    assert!(p[2].received().is_empty(), "known unicast goes to one port");
    assert_eq!(sw.fdb_entries().len(), 2);
}

#[test]
fn jumbo_frames_arrive_whole() {
    let (sw, p) = harness(Mode::Switch, 2);
    let big = frame(0xff, 1, 65_535);
    sw.forward(&p[0].port, Frames::Plain(&[&big]), Overflow::Drop, T0);
    assert_eq!(p[1].received(), vec![big]);
}

#[test]
fn a_full_port_drops_for_itself_only() {
    let (sw, p) = harness(Mode::Hub, 3);
    p[1].set(Behaviour::Full);
    for _ in 0..5 {
        sw.forward(
            &p[0].port,
            Frames::Plain(&[&frame(0xff, 1, 60)]),
            Overflow::Drop,
            T0,
        );
    }
    assert_eq!(p[2].received().len(), 5, "the others still get everything");
    let c = p[1].port.counters().snapshot();
    assert_eq!(c.drops(DropReason::EgressFull), 5);
    assert_eq!(c.tx_frames, 0);
    assert!(!p[1].port.is_closing(), "a full queue is not a dead peer");
}

#[test]
fn a_vanished_peer_closes_its_port() {
    let (sw, p) = harness(Mode::Switch, 3);
    p[2].set(Behaviour::Gone);
    sw.forward(
        &p[0].port,
        Frames::Plain(&[&frame(0xff, 1, 60)]),
        Overflow::Drop,
        T0,
    );
    assert!(p[2].port.is_closing());
    assert_eq!(
        p[2].port
            .counters()
            .snapshot()
            .drops(DropReason::EgressGone),
        1
    );
    // The owner removes it; its addresses go with it.
    sw.forward(
        &p[2].port,
        Frames::Plain(&[&frame(0xff, 9, 60)]),
        Overflow::Drop,
        T0,
    );
    sw.remove_port(p[2].port.id());
    assert!(sw.fdb_entries().iter().all(|e| e.port != p[2].port.id()));
    assert_eq!(sw.ports().len(), 2);
    p[1].received();
    sw.forward(
        &p[0].port,
        Frames::Plain(&[&frame(9, 1, 60)]),
        Overflow::Drop,
        T0,
    );
    assert_eq!(
        p[1].received().len(),
        1,
        "unknown again: flooded to the rest"
    );
}

#[test]
fn bad_frames_are_counted_on_ingress() {
    let (sw, p) = harness(Mode::Switch, 2);
    sw.forward(&p[0].port, Frames::Plain(&[&[0u8; 10]]), Overflow::Drop, T0);
    let mut mc = frame(0xff, 1, 60);
    mc[6] = 0x01;
    sw.forward(&p[0].port, Frames::Plain(&[&mc]), Overflow::Drop, T0);
    let c = p[0].port.counters().snapshot();
    assert_eq!(c.drops(DropReason::TooShort), 1);
    assert_eq!(c.drops(DropReason::MulticastSource), 1);
    assert_eq!(c.rx_frames, 2);
    assert!(p[1].received().is_empty());
}

#[test]
fn port_ids_are_never_reused() {
    let (sw, p) = harness(Mode::Switch, 2);
    let old: PortId = p[1].port.id();
    sw.remove_port(old);
    assert!(sw.allocate_id() > old);
}

#[test]
fn a_batch_is_forwarded_like_single_frames() {
    let (sw, p) = harness(Mode::Switch, 3);
    // Learn 2 on p1 and 3 on p2.
    sw.forward(
        &p[1].port,
        Frames::Plain(&[&frame(0xff, 2, 60)]),
        Overflow::Drop,
        T0,
    );
    sw.forward(
        &p[2].port,
        Frames::Plain(&[&frame(0xff, 3, 60)]),
        Overflow::Drop,
        T0,
    );
    p[0].received();
    p[1].received();
    p[2].received();
    let frames = [
        frame(2, 1, 60),
        frame(2, 1, 61),
        frame(3, 1, 62),
        frame(0xff, 1, 63),
        frame(0xff, 1, 65),
        vec![0u8; 5],
        frame(2, 1, 64),
    ];
    let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    sw.forward(&p[0].port, Frames::Plain(&refs), Overflow::Drop, T0);
    let lens = |v: Vec<Vec<u8>>| v.iter().map(|f| f.len()).collect::<Vec<_>>();
    assert_eq!(
        lens(p[1].received()),
        vec![60, 61, 63, 65, 64],
        "order kept per port"
    );
    assert_eq!(lens(p[2].received()), vec![62, 63, 65]);
    let c = p[0].port.counters().snapshot();
    assert_eq!(c.rx_frames, 7);
    assert_eq!(c.drops(DropReason::TooShort), 1);
    p[1].set(Behaviour::Full);
    sw.forward(&p[0].port, Frames::Plain(&refs[..2]), Overflow::Drop, T0);
    assert_eq!(
        p[1].port
            .counters()
            .snapshot()
            .drops(DropReason::EgressFull),
        2
    );
}

fn with_tag(f: &[u8], vid: u16) -> Vec<u8> {
    let mut out = Vec::new();
    switchyard_switch::vlan::tag_into(f, vid, &mut out);
    out
}

/// p0 and p1 access ports of VLAN 10, p2 a trunk with native VLAN 1 and
/// tagged 10 and 20, p3 without a rule (VLAN 1).
fn vlan_harness() -> (Arc<Switch>, Vec<TestPort>) {
    use switchyard_switch::vlan::{PortPattern, PortVlans, VlanRules};
    let (sw, p) = harness(Mode::Switch, 4);
    sw.set_vlan_rules(VlanRules::new(vec![
        (PortPattern::new("p2"), "1/10,20".parse().expect("spec")),
        (PortPattern::new("p0"), PortVlans::access(10)),
        (PortPattern::new("p1"), PortVlans::access(10)),
    ]));
    (sw, p)
}

#[test]
fn vlan_tags_are_added_and_removed_at_the_edge() {
    let (sw, p) = vlan_harness();
    let bcast = frame(0xff, 1, 60);
    sw.forward(&p[0].port, Frames::Plain(&[&bcast]), Overflow::Drop, T0);
    assert_eq!(
        p[1].received(),
        vec![bcast.clone()],
        "same access VLAN: as is"
    );
    assert_eq!(
        p[2].received(),
        vec![with_tag(&bcast, 10)],
        "the trunk gets it tagged"
    );
    assert!(p[3].received().is_empty(), "VLAN 1 never sees VLAN 10");
    // Back from the trunk, tagged 10: learned, untagged towards p0.
    let reply = frame(1, 9, 60);
    sw.forward(
        &p[2].port,
        Frames::Plain(&[&with_tag(&reply, 10)]),
        Overflow::Drop,
        T0,
    );
    assert_eq!(p[0].received(), vec![reply]);
    assert!(p[1].received().is_empty());
    // Untagged on the trunk is its native VLAN 1: reaches p3 only.
    sw.forward(
        &p[2].port,
        Frames::Plain(&[&frame(0xff, 7, 60)]),
        Overflow::Drop,
        T0,
    );
    assert_eq!(p[3].received(), vec![frame(0xff, 7, 60)]);
    assert!(p[0].received().is_empty() && p[1].received().is_empty());
    // VLAN 30 is not carried: dropped and counted on the trunk.
    sw.forward(
        &p[2].port,
        Frames::Plain(&[&with_tag(&bcast, 30)]),
        Overflow::Drop,
        T0,
    );
    assert!(p.iter().all(|t| t.received().is_empty()));
    assert_eq!(
        p[2].port
            .counters()
            .snapshot()
            .drops(DropReason::VlanFiltered),
        1
    );
}

#[test]
fn a_batch_in_a_vlan_switch_is_tagged_per_port() {
    let (sw, p) = vlan_harness();
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(0xff, 1 + i, 60)).collect();
    let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
    sw.forward(&p[0].port, Frames::Plain(&refs), Overflow::Drop, T0);
    assert_eq!(p[1].received(), frames);
    let tagged: Vec<Vec<u8>> = frames.iter().map(|f| with_tag(f, 10)).collect();
    assert_eq!(p[2].received(), tagged);
    assert!(p[3].received().is_empty());
}

#[test]
fn clearing_the_rules_makes_the_switch_transparent_again() {
    let (sw, p) = vlan_harness();
    sw.set_vlan_rules(switchyard_switch::VlanRules::default());
    let t = with_tag(&frame(0xff, 1, 60), 30);
    sw.forward(&p[0].port, Frames::Plain(&[&t]), Overflow::Drop, T0);
    for q in &p[1..] {
        assert_eq!(q.received(), vec![t.clone()], "tags pass untouched");
    }
}

/// Every transport is told which port a frame came in on (the MAC-NAT
/// uplink binds a guest to it), for unicast, floods and batches alike, and
/// is asked to forget a port that leaves the switch.
#[test]
fn transports_see_the_ingress_port_and_forget_a_port_that_goes() {
    let (sw, p) = harness(Mode::Switch, 3);
    let (id1, id2) = (p[1].port.id(), p[2].port.id());
    sw.forward(
        &p[1].port,
        Frames::Plain(&[&frame(0xff, 1, 60)]),
        Overflow::Drop,
        T0,
    );
    let batch = [frame(1, 2, 60), frame(0xff, 2, 60)];
    let refs: Vec<&[u8]> = batch.iter().map(|f| f.as_slice()).collect();
    sw.forward(&p[2].port, Frames::Plain(&refs), Overflow::Drop, T0);
    let told = |i: usize| std::mem::take(&mut *p[i].told.lock().expect("lock"));
    assert_eq!(told(0).ingress, vec![id1, id2]);
    assert_eq!(
        told(1).ingress,
        vec![id2, id2],
        "learned unicast, then the flood"
    );
    assert_eq!(told(2).ingress, vec![id1]);

    sw.remove_port(id2);
    assert_eq!(told(0).forgotten, vec![id2]);
    assert_eq!(told(1).forgotten, vec![id2]);
    assert!(
        told(2).forgotten.is_empty(),
        "the port that went is not asked"
    );
}
