//! Offloaded frames allocate nothing per frame either: whole to an offload
//! port, segmented in software for a plain one, tagged on the way.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use switchyard_switch::gso::{self, VnetHdr};
use switchyard_switch::port::{Port, SendError, Transmit};
use switchyard_switch::vlan::{PortPattern, VlanRules};
use switchyard_switch::{EngineConfig, FdbConfig, Mode, Switch};

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

/// Takes plain frames only (the switch segments for it).
struct Plain;

impl Transmit for Plain {
    fn transmit(&self, _frame: &[u8]) -> Result<(), SendError> {
        Ok(())
    }
}

/// Takes offloaded frames whole.
struct Offload;

impl Transmit for Offload {
    fn transmit(&self, _frame: &[u8]) -> Result<(), SendError> {
        Ok(())
    }
    fn transmit_offloaded(&self, _hdr: &VnetHdr, _frame: &[u8]) -> Option<Result<(), SendError>> {
        Some(Ok(()))
    }
}

/// A TCP/IPv4 super-frame of `payload` bytes from 02::1 to `dst`.
fn super_frame(dst: [u8; 6], payload: usize) -> (VnetHdr, Vec<u8>) {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
    let total = (40 + payload) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f.resize(54 + payload, 7);
    let hdr = VnetHdr {
        flags: gso::F_NEEDS_CSUM,
        gso_type: gso::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };
    (hdr, f)
}

#[test]
fn offloaded_frames_allocate_nothing_per_frame() {
    for vlans in [false, true] {
        let sw = Switch::new(EngineConfig::new(Mode::Switch, FdbConfig::default()));
        if vlans {
            // p1 and p2 carry VLAN 1 tagged: frames from p0 are tagged.
            sw.set_vlan_rules(VlanRules::new(vec![
                (PortPattern::new("p1"), "/1".parse().expect("spec")),
                (PortPattern::new("p2"), "/1".parse().expect("spec")),
            ]));
        }
        let mut ports = Vec::new();
        for i in 0..3 {
            let tx: Box<dyn Transmit> = if i == 2 {
                Box::new(Plain)
            } else {
                Box::new(Offload)
            };
            let p = Arc::new(Port::new(
                sw.allocate_id(),
                format!("p{i}"),
                "memory",
                "test",
                tx,
            ));
            sw.add_port(p.clone());
            ports.push(p);
        }
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
            sw.forward_offloaded(&ports[0], &hdr, &flood, t);
            sw.forward_offloaded(&ports[0], &hdr, &smaller, t);
            sw.forward_offloaded(&ports[0], &partial, &smaller, t);
        }
        COUNTING.with(|c| c.set(false));
        let n = ALLOCATIONS.swap(0, Ordering::Relaxed);
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
