//! Loop protection through the whole engine: a kernel bridge joining two
//! ports, simulated by feeding each flooded copy back on the other port.

use super::*;
use crate::MacAddr;

fn ms(x: u64) -> Duration {
    Duration::from_millis(x)
}

fn frame(dst: MacAddr, src: MacAddr) -> Vec<u8> {
    let mut f = vec![0u8; 60];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12] = 0x08;
    f
}

const G1: PortId = PortId(1);
const G2: PortId = PortId(2);
const A: PortId = PortId(3);
const B: PortId = PortId(4);
const M1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
const M2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

fn looped(guard: LoopGuard) -> Engine {
    let cfg = EngineConfig::new(Mode::Switch, FdbConfig::default()).with_loop_guard(guard);
    let mut e = Engine::new(cfg);
    for p in [G1, G2, A, B] {
        e.add_port(p);
    }
    e
}

/// G1 broadcasts once at `t`; every copy that reaches A comes back on B
/// and the other way round, `rounds` times, 10 µs apart. Returns the
/// block, if one happened.
fn broadcast_into_the_loop(e: &mut Engine, t: Duration, rounds: u64) -> Option<LoopBlock> {
    let f = frame(MacAddr::BROADCAST, M1);
    let mut block = None;
    e.decide(G1, &f, t);
    for r in 0..rounds {
        let now = t + Duration::from_micros(10 * (r + 1));
        for port in [B, A] {
            if let Some(FdbNotice::LoopBlocked(b)) = e.decide(port, &f, now).notice {
                block = Some(b);
            }
        }
    }
    block
}

#[test]
fn a_loop_blocks_one_of_its_ports_and_never_the_guests() {
    let mut e = looped(LoopGuard::new(true, 10, Duration::from_secs(30)));
    let b = broadcast_into_the_loop(&mut e, ms(0), 50).expect("the loop is cut");
    assert!(b.port == A || b.port == B, "{b:?}");
    assert_eq!((b.mac, b.home), (M1, G1));
    assert_eq!(e.events().loop_blocks, 1, "one port suffices");
    assert_eq!(e.loop_blocks(ms(1)), vec![b]);
    // The blocked port's frames are dropped; the guests talk.
    let f = frame(MacAddr::BROADCAST, M1);
    assert_eq!(
        e.decide(b.port, &f, ms(2)).decision,
        Decision::Drop(DropReason::LoopBlocked)
    );
    e.decide(G2, &frame(M1, M2), ms(3));
    assert_eq!(
        e.decide(G1, &frame(M2, M1), ms(4)).decision,
        Decision::Forward(G2)
    );
    assert_eq!(
        e.decide(G2, &frame(M1, M2), ms(5)).decision,
        Decision::Forward(G1),
        "the address the loop carried is back home"
    );
}

#[test]
fn the_block_ends_after_the_hold_down_and_comes_back_with_the_loop() {
    let mut e = looped(LoopGuard::new(true, 10, Duration::from_secs(2)));
    let first = broadcast_into_the_loop(&mut e, ms(0), 50).expect("blocked");
    assert!(e.expire_loop_blocks(ms(1999)).is_empty());
    assert!(e.is_loop_blocked(first.port, ms(1999)));
    assert_eq!(e.expire_loop_blocks(ms(2001)), vec![first]);
    assert!(!e.is_loop_blocked(first.port, ms(2001)));
    let f = frame(MacAddr::BROADCAST, M1);
    assert_eq!(e.decide(first.port, &f, ms(2002)).decision, Decision::Flood);
    let again = broadcast_into_the_loop(&mut e, ms(3000), 50).expect("blocked again");
    assert_eq!(e.events().loop_blocks, 2);
    assert!(again.until > ms(4000));
}

#[test]
fn unicast_to_a_blocked_port_is_dropped() {
    let mut e = looped(LoopGuard::new(true, 10, Duration::from_secs(30)));
    let b = broadcast_into_the_loop(&mut e, ms(0), 50).expect("blocked");
    e.pin(MacAddr([2, 0, 0, 0, 0, 9]), b.port);
    assert_eq!(
        e.decide(G2, &frame(MacAddr([2, 0, 0, 0, 0, 9]), M2), ms(10))
            .decision,
        Decision::Drop(DropReason::LoopBlocked)
    );
}

#[test]
fn off_counts_flaps_and_blocks_nothing() {
    let mut e = looped(LoopGuard::off());
    assert_eq!(broadcast_into_the_loop(&mut e, ms(0), 50), None);
    assert!(e.events().flaps >= 50);
    assert!(e.loop_blocks(ms(1)).is_empty());
}

#[test]
fn a_guest_that_sends_a_lot_while_a_loop_runs_is_not_blocked() {
    // G1 sends between every looped copy: its address flaps home as
    // often as away, and only the loop's ports count.
    let mut e = looped(LoopGuard::new(true, 10, Duration::from_secs(30)));
    let f = frame(MacAddr::BROADCAST, M1);
    let mut blocked = Vec::new();
    for r in 0..100u64 {
        let now = Duration::from_micros(10 * r);
        for port in [G1, B, G1, A] {
            if let Some(FdbNotice::LoopBlocked(b)) = e.decide(port, &f, now).notice {
                blocked.push(b.port);
            }
        }
    }
    assert!(!blocked.is_empty() && !blocked.contains(&G1), "{blocked:?}");
}

#[test]
fn a_probe_that_comes_back_blocks_the_port_it_came_back_on() {
    let mut e = looped(LoopGuard::default());
    let (pa, pb) = (e.loop_probe(A), e.loop_probe(B));
    // The bridge sends A's probe back on B and B's on A.
    let d = e.decide(B, &pa, ms(0));
    assert_eq!(d.decision, Decision::Drop(DropReason::LoopBlocked));
    let Some(FdbNotice::LoopBlocked(b)) = d.notice else {
        panic!("no block: {d:?}");
    };
    assert_eq!((b.port, b.home, b.mac), (B, A, e.own_mac()));
    let d = e.decide(A, &pb, ms(1));
    assert_eq!(
        (d.decision, d.notice),
        (Decision::Drop(DropReason::LoopBlocked), None)
    );
    assert!(!e.is_loop_blocked(A, ms(1)) && e.is_loop_blocked(B, ms(1)));
    // Off: a returning probe is still dropped, nothing is blocked.
    let mut off = looped(LoopGuard::off());
    let p = off.loop_probe(A);
    assert_eq!(off.decide(B, &p, ms(0)).notice, None);
}
