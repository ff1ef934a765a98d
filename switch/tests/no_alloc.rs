//! The data path allocates nothing per frame: a counting allocator watches
//! `Switch::forward` with single frames and batches over learned unicast,
//! floods and drops, and with offloaded frames (whole to an
//! offload port, segmented in software for a plain one, tagged on the way).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
mod common;

use common::super_frame;
use switchyard_switch::gso::{self, VnetHdr};
use switchyard_switch::port::{Port, PortId, SendError, Transmit};
use switchyard_switch::vlan::{PortPattern, VlanRules};
use switchyard_switch::{EngineConfig, FdbConfig, Frames, Mode, Overflow, Switch};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the test's own thread counts: libtest's other threads may
    /// allocate meanwhile.
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn counting() -> bool {
    COUNTING.try_with(|c| c.get()).unwrap_or(false)
}

// SAFETY: forwards every call to the system allocator unchanged; only
// counts when asked to.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counting() {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Takes every frame; plain frames only (the switch segments offloaded
/// ones for it).
struct Sink;

impl Transmit for Sink {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        (frames.len(), None)
    }
}

struct Full;

impl Transmit for Full {
    fn transmit(&self, _ingress: PortId, _frames: &[&[u8]]) -> (usize, Option<SendError>) {
        (0, Some(SendError::Full))
    }
}

fn frame(dst: [u8; 6], src: u8) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, src]);
    f[12] = 0x08;
    f
}

/// A switch with ports `p0`, `p1`, … sending through `txs`; the ports
/// named in `trunks` carry VLAN 1 tagged (which makes the switch
/// VLAN-aware).
fn switch_with(txs: Vec<Box<dyn Transmit>>, trunks: &[&str]) -> (Arc<Switch>, Vec<Arc<Port>>) {
    let sw = Switch::new(EngineConfig::new(Mode::Switch, FdbConfig::default()));
    if !trunks.is_empty() {
        sw.set_vlan_rules(VlanRules::new(
            trunks
                .iter()
                .map(|t| (PortPattern::new(*t), "/1".parse().expect("spec")))
                .collect(),
        ));
    }
    let ports = txs
        .into_iter()
        .enumerate()
        .map(|(i, tx)| {
            let p = Arc::new(Port::new(
                sw.allocate_id(),
                format!("p{i}"),
                "memory",
                "test",
                tx,
            ));
            sw.add_port(p.clone());
            p
        })
        .collect();
    (sw, ports)
}

#[test]
fn forwarding_allocates_nothing_per_frame() {
    forward_counting_allocations(false);
}

/// Tagging and untagging at the edge reuse per-thread buffers.
#[test]
fn vlan_translation_allocates_nothing_per_frame() {
    forward_counting_allocations(true);
}

fn forward_counting_allocations(vlans: bool) {
    // p0 untagged in VLAN 1 (no rule); with `vlans`, p1 and p3 carry it
    // tagged, so every frame from p0 is tagged on its way to them.
    let (sw, ports) = switch_with(
        vec![
            Box::new(Sink),
            Box::new(Sink),
            Box::new(Sink),
            Box::new(Full),
        ],
        if vlans { &["p1", "p3"] } else { &[] },
    );
    let t = Duration::from_secs(1);
    // Warm up: learn every address, so the table does not grow below.
    for (i, p) in ports.iter().enumerate() {
        let mut f = frame([0xff; 6], i as u8 + 1);
        if vlans && i % 2 == 1 {
            let mut tagged = Vec::new();
            switchyard_switch::vlan::tag_into(&f, 1, &mut tagged);
            f = tagged;
        }
        sw.forward(p, Frames::Plain(&[&f]), Overflow::Drop, t);
    }
    let unicast = frame([2, 0, 0, 0, 0, 2], 1);
    let to_full = frame([2, 0, 0, 0, 0, 4], 1);
    let flood = frame([0xff; 6], 1);
    let runt = [0u8; 10];
    let batch: Vec<&[u8]> = vec![&unicast, &to_full, &flood, &runt, &unicast];
    // Ports that cannot wait are never held for: the holding path drops.
    let mut held = switchyard_switch::hold::Held::default();
    // One round first: log call sites register themselves once.
    for round in 0..10_001 {
        if round == 1 {
            COUNTING.with(|c| c.set(true));
        }
        sw.forward(&ports[0], Frames::Plain(&[&unicast]), Overflow::Drop, t);
        sw.forward(&ports[0], Frames::Plain(&[&to_full]), Overflow::Drop, t);
        sw.forward(&ports[0], Frames::Plain(&[&flood]), Overflow::Drop, t);
        sw.forward(&ports[0], Frames::Plain(&[&runt]), Overflow::Drop, t);
        sw.forward(&ports[0], Frames::Plain(&batch), Overflow::Drop, t);
        sw.forward(
            &ports[0],
            Frames::Plain(&batch),
            Overflow::Hold(&mut held),
            t,
        );
    }
    COUNTING.with(|c| c.set(false));
    assert!(held.is_empty());
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "the data path allocated"
    );
    assert!(ports[1].counters().snapshot().tx_frames >= 30_000);
}

/// Takes offloaded frames whole.
struct Offload;

impl Transmit for Offload {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        (frames.len(), None)
    }
    fn transmit_offloaded(
        &self,
        _ingress: PortId,
        _hdr: &VnetHdr,
        _frame: &[u8],
    ) -> Option<Result<(), SendError>> {
        Some(Ok(()))
    }
    fn transmit_offloaded_gathered(
        &self,
        _ingress: PortId,
        _hdr: &VnetHdr,
        _frame: &switchyard_switch::gather::Gathered<'_>,
    ) -> Option<Result<(), SendError>> {
        Some(Ok(()))
    }
}

#[test]
fn offloaded_frames_allocate_nothing_per_frame() {
    for vlans in [false, true] {
        // With `vlans`, p1 and p2 carry VLAN 1 tagged: frames from p0 are
        // tagged.
        let (sw, ports) = switch_with(
            vec![Box::new(Offload), Box::new(Offload), Box::new(Sink)],
            if vlans { &["p1", "p2"] } else { &[] },
        );
        let t = Duration::from_secs(1);
        let (hdr, flood) = super_frame([0xff; 6], 60_000);
        let (_, smaller) = super_frame([0xff; 6], 3000);
        let partial = VnetHdr {
            gso_type: gso::GSO_NONE,
            ..hdr
        };
        // One round first: buffers grow and log call sites register once.
        for round in 0..201 {
            if round == 1 {
                COUNTING.with(|c| c.set(true));
            }
            sw.forward(
                &ports[0],
                Frames::Offloaded(&hdr, &flood),
                Overflow::Drop,
                t,
            );
            sw.forward(
                &ports[0],
                Frames::Offloaded(&hdr, &smaller),
                Overflow::Drop,
                t,
            );
            sw.forward(
                &ports[0],
                Frames::Offloaded(&partial, &smaller),
                Overflow::Drop,
                t,
            );
        }
        COUNTING.with(|c| c.set(false));
        let n = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(
            n, 0,
            "{n} allocations in 600 offloaded frames (vlans: {vlans})"
        );
        assert!(
            ports[2].counters().snapshot().tx_frames > 600 * 3,
            "the plain port got segments"
        );
    }
}

/// Takes frames in two parts as they are, offloaded ones too.
struct Gather;

impl Transmit for Gather {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        (frames.len(), None)
    }
    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[switchyard_switch::gather::Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        Some((frames.len(), None))
    }
    fn transmit_offloaded_gathered(
        &self,
        _ingress: PortId,
        _hdr: &VnetHdr,
        _frame: &switchyard_switch::gather::Gathered<'_>,
    ) -> Option<Result<(), SendError>> {
        Some(Ok(()))
    }
}

/// A vhost-user guest's frames (a private head, the rest in its memory)
/// go to a port that takes them so, and joined to one that takes offloads
/// whole and to one that needs segments: nothing allocated per frame.
#[test]
fn gathered_frames_allocate_nothing_per_frame() {
    use switchyard_switch::gather::split;
    for vlans in [false, true] {
        let (sw, ports) = switch_with(
            vec![
                Box::new(Gather),
                Box::new(Gather),
                Box::new(Offload),
                Box::new(Sink),
            ],
            if vlans { &["p1", "p2", "p3"] } else { &[] },
        );
        let t = Duration::from_secs(1);
        let (hdr, flood) = super_frame([0xff; 6], 60_000);
        let (_, small) = super_frame([0xff; 6], 1000);
        let (mut s1, mut s2, mut s3) = (Vec::new(), Vec::new(), Vec::new());
        let big = split(&flood, 17, &mut s1);
        let plain = [split(&small, 2, &mut s2), split(&small, 1, &mut s3)];
        for round in 0..201 {
            if round == 1 {
                COUNTING.with(|c| c.set(true));
            }
            sw.forward(
                &ports[0],
                Frames::OffloadedGathered(&hdr, &big),
                Overflow::Drop,
                t,
            );
            sw.forward(&ports[0], Frames::Gathered(&plain), Overflow::Drop, t);
            sw.forward(&ports[0], Frames::Gathered(&plain[..1]), Overflow::Drop, t);
        }
        COUNTING.with(|c| c.set(false));
        let n = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(
            n, 0,
            "{n} allocations in 800 gathered frames (vlans: {vlans})"
        );
        assert!(ports[3].counters().snapshot().tx_frames > 200 * 40);
        if !vlans {
            // Whole, as they came: no tag to add.
            assert_eq!(ports[1].counters().snapshot().tx_frames, 201 * 4);
        }
    }
}
