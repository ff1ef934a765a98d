//! Offloaded frames through the switch: ports that take them get the
//! super-frame whole (with its header's offsets moved when a VLAN tag is
//! added or removed), the others get valid MTU-sized segments.

use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_switch::gso::{self, VnetHdr};
use switchyard_switch::port::{transmit_each, Port, PortId, SendError, Transmit};
use switchyard_switch::vlan::{PortPattern, PortVlans, VlanRules};
use switchyard_switch::{DropReason, EngineConfig, FdbConfig, Frames, Mode, Overflow, Switch};

type Got = Arc<Mutex<Vec<(Option<VnetHdr>, Vec<u8>)>>>;

/// A port recording what it is sent; `offload` ports take offloaded
/// frames, `gather` ports frames in two parts (recorded joined).
struct MemoryTx {
    got: Got,
    offload: bool,
    gather: bool,
    /// Frames taken in two parts with a foreign rest.
    in_parts: Arc<std::sync::atomic::AtomicUsize>,
}

impl MemoryTx {
    fn note_parts(&self, frame: &switchyard_switch::gather::Gathered<'_>) {
        if !frame.rest().is_empty() {
            self.in_parts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

fn joined_bytes(frame: &switchyard_switch::gather::Gathered<'_>) -> Vec<u8> {
    let mut v = Vec::new();
    frame.append_to(&mut v);
    v
}

impl Transmit for MemoryTx {
    fn transmit(&self, _ingress: PortId, frames: &[&[u8]]) -> (usize, Option<SendError>) {
        transmit_each(frames, |frame| {
            self.got.lock().expect("lock").push((None, frame.to_vec()));
            Ok(())
        })
    }

    fn transmit_offloaded(
        &self,
        _ingress: PortId,
        hdr: &VnetHdr,
        frame: &[u8],
    ) -> Option<Result<(), SendError>> {
        if !self.offload {
            return None;
        }
        self.got
            .lock()
            .expect("lock")
            .push((Some(*hdr), frame.to_vec()));
        Some(Ok(()))
    }

    fn transmit_gathered(
        &self,
        _ingress: PortId,
        frames: &[switchyard_switch::gather::Gathered<'_>],
    ) -> Option<(usize, Option<SendError>)> {
        if !self.gather {
            return None;
        }
        frames.iter().for_each(|f| self.note_parts(f));
        let mut got = self.got.lock().expect("lock");
        got.extend(frames.iter().map(|f| (None, joined_bytes(f))));
        Some((frames.len(), None))
    }

    fn transmit_offloaded_gathered(
        &self,
        _ingress: PortId,
        hdr: &VnetHdr,
        frame: &switchyard_switch::gather::Gathered<'_>,
    ) -> Option<Result<(), SendError>> {
        if !self.offload {
            return None;
        }
        self.note_parts(frame);
        let mut got = self.got.lock().expect("lock");
        got.push((Some(*hdr), joined_bytes(frame)));
        Some(Ok(()))
    }
}

/// Ports p0..: the first `offload` of them take offloaded frames.
fn harness(n: usize, offload: usize) -> (Arc<Switch>, Vec<Harnessed>) {
    harness_gathering(n, offload, 0)
}

/// [`harness`] whose last `gather` ports take frames in two parts.
fn harness_gathering(n: usize, offload: usize, gather: usize) -> (Arc<Switch>, Vec<Harnessed>) {
    let switch = Switch::new(EngineConfig::new(Mode::Switch, FdbConfig::default()));
    let ports = (0..n)
        .map(|i| {
            let got: Got = Arc::default();
            let in_parts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let tx = MemoryTx {
                got: got.clone(),
                offload: i < offload,
                gather: i + gather >= n,
                in_parts: in_parts.clone(),
            };
            let port = Arc::new(Port::new(
                switch.allocate_id(),
                format!("p{i}"),
                "memory",
                "test",
                Box::new(tx),
            ));
            switch.add_port(port.clone());
            (port, got, in_parts)
        })
        .collect();
    (switch, ports)
}

/// A harness port, what it got, and how many frames it took in two parts.
type Harnessed = (Arc<Port>, Got, Arc<std::sync::atomic::AtomicUsize>);

fn take(got: &Got) -> Vec<(Option<VnetHdr>, Vec<u8>)> {
    std::mem::take(&mut *got.lock().expect("lock"))
}

fn sum(data: &[u8], mut acc: u64) -> u64 {
    for c in data.chunks(2) {
        acc += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

const MSS: usize = 1448;
const PAYLOAD: usize = 5000;

/// An untagged TCP/IPv4 super-frame from 02::1 to 02::2 as a tap hands it
/// over: the checksum field holds only the pseudo-header sum.
fn super_frame() -> (VnetHdr, Vec<u8>) {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
    let total = (20 + 20 + PAYLOAD) as u16;
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[192, 0, 2, 1, 192, 0, 2, 2]);
    let c = fold(sum(&f[14..34], 0));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&[0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18]);
    f.extend_from_slice(&[0xff, 0xff, 0, 0, 0, 0]);
    f.extend((0..PAYLOAD).map(|i| i as u8));
    let pseudo = sum(&f[26..34], 6 + (20 + PAYLOAD) as u64);
    let partial = !fold(pseudo);
    f[50..52].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: gso::F_NEEDS_CSUM,
        gso_type: gso::GSO_TCPV4,
        hdr_len: 54,
        gso_size: MSS as u16,
        csum_start: 34,
        csum_offset: 16,
    };
    (hdr, f)
}

/// Checks a plain segment from scratch (IP offset `ip`); returns its
/// TCP payload.
fn valid_segment(f: &[u8], ip: usize) -> Vec<u8> {
    assert_eq!(fold(sum(&f[ip..ip + 20], 0)), 0, "IPv4 header checksum");
    let total = usize::from(u16::from_be_bytes([f[ip + 2], f[ip + 3]]));
    assert_eq!(total, f.len() - ip, "IPv4 total length");
    let pseudo = sum(&f[ip + 12..ip + 20], 6 + (total - 20) as u64);
    assert_eq!(fold(sum(&f[ip + 20..], pseudo)), 0, "TCP checksum");
    assert!(f.len() <= ip + 20 + 20 + MSS, "segment larger than the MSS");
    f[ip + 40..].to_vec()
}

/// The payloads of plain segments, checked, joined.
fn joined(frames: &[(Option<VnetHdr>, Vec<u8>)], ip: usize) -> Vec<u8> {
    let mut all = Vec::new();
    for (hdr, f) in frames {
        assert!(hdr.is_none(), "a plain port was sent an offloaded frame");
        all.extend(valid_segment(f, ip));
    }
    all
}

#[test]
fn offload_ports_get_super_frames_whole_and_the_others_segments() {
    let (sw, p) = harness(3, 2);
    let (hdr, f) = super_frame();
    sw.forward(
        &p[0].0,
        Frames::Offloaded(&hdr, &f),
        Overflow::Drop,
        Duration::ZERO,
    );
    let whole = take(&p[1].1);
    assert_eq!(whole, vec![(Some(hdr), f.clone())]);
    let segs = take(&p[2].1);
    assert_eq!(segs.len(), PAYLOAD.div_ceil(MSS));
    assert_eq!(joined(&segs, 14), f[54..].to_vec());
    assert!(take(&p[0].1).is_empty(), "nothing back to the ingress");
    // Plain frames take the old path: no header anywhere.
    sw.forward(
        &p[0].0,
        Frames::Offloaded(&VnetHdr::default(), &f),
        Overflow::Drop,
        Duration::ZERO,
    );
    assert_eq!(take(&p[1].1), vec![(None, f.clone())]);
}

#[test]
fn vlan_tagging_moves_the_offsets_of_a_super_frame() {
    // p0: offload access port of VLAN 10; p1: offload trunk (10 tagged);
    // p2: plain access port of VLAN 10; p3: plain trunk (10 tagged).
    let (sw, p) = harness(4, 2);
    sw.set_vlan_rules(VlanRules::new(vec![
        (PortPattern::new("p0"), PortVlans::access(10)),
        (PortPattern::new("p1"), "/10".parse().expect("spec")),
        (PortPattern::new("p2"), PortVlans::access(10)),
        (PortPattern::new("p3"), "/10".parse().expect("spec")),
    ]));
    let (hdr, f) = super_frame();
    sw.forward(
        &p[0].0,
        Frames::Offloaded(&hdr, &f),
        Overflow::Drop,
        Duration::ZERO,
    );

    let tagged = take(&p[1].1);
    assert_eq!(
        tagged.len(),
        1,
        "one whole super-frame to the offload trunk"
    );
    let (Some(thdr), tf) = &tagged[0] else {
        panic!("the offload trunk was sent a plain frame");
    };
    assert_eq!(tf.len(), f.len() + 4);
    assert_eq!(&tf[12..16], &[0x81, 0x00, 0x00, 0x0a]);
    assert_eq!(thdr.csum_start, hdr.csum_start + 4);
    assert_eq!(thdr.hdr_len, hdr.hdr_len + 4);
    // What the receiving kernel would do with it must give valid segments.
    let mut out = Vec::new();
    let mut from_trunk = Vec::new();
    gso::segment(thdr, tf, &mut out, |s| from_trunk.push((None, s.to_vec())))
        .expect("the tagged super-frame segments");
    assert_eq!(joined(&from_trunk, 18), f[54..].to_vec());

    assert_eq!(joined(&take(&p[2].1), 14), f[54..].to_vec());
    let trunk_segs = take(&p[3].1);
    for (_, s) in &trunk_segs {
        assert_eq!(
            &s[12..16],
            &[0x81, 0x00, 0x00, 0x0a],
            "segments carry the tag"
        );
    }
    assert_eq!(joined(&trunk_segs, 18), f[54..].to_vec());

    // From the trunk, tagged, to the access ports: the tag comes off.
    let (mut thdr2, tf2) = (*thdr, tf.clone());
    thdr2.flags |= gso::F_NEEDS_CSUM;
    sw.forward(
        &p[1].0,
        Frames::Offloaded(&thdr2, &tf2),
        Overflow::Drop,
        Duration::from_secs(1),
    );
    let untagged = take(&p[0].1);
    assert_eq!(untagged, vec![(Some(hdr), f.clone())]);
    assert_eq!(joined(&take(&p[2].1), 14), f[54..].to_vec());
}

#[test]
fn what_cannot_be_segmented_is_dropped_and_counted_on_the_plain_port() {
    let (sw, p) = harness(3, 2);
    let (mut hdr, f) = super_frame();
    hdr.gso_type = gso::GSO_UDP;
    sw.forward(
        &p[0].0,
        Frames::Offloaded(&hdr, &f),
        Overflow::Drop,
        Duration::ZERO,
    );
    assert_eq!(take(&p[1].1).len(), 1, "the offload port takes it whole");
    assert!(take(&p[2].1).is_empty());
    let c = p[2].0.counters().snapshot();
    assert_eq!(c.drops(DropReason::Unsegmentable), 1);
}

/// A forged `gso_size` of 1 would cut one super-frame into thousands of
/// frames for a plain port: it is dropped there as `gso_too_small`.
#[test]
fn a_gso_size_below_the_floor_is_dropped_and_counted_on_the_plain_port() {
    let (sw, p) = harness(3, 2);
    let (mut hdr, f) = super_frame();
    hdr.gso_size = 1;
    sw.forward(
        &p[0].0,
        Frames::Offloaded(&hdr, &f),
        Overflow::Drop,
        Duration::ZERO,
    );
    assert!(
        take(&p[2].1).is_empty(),
        "no segment reaches the plain port"
    );
    let c = p[2].0.counters().snapshot();
    assert_eq!(c.drops(DropReason::GsoTooSmall), 1);
    assert_eq!(c.drops(DropReason::Unsegmentable), 0);
}

/// What one port got: frames, bytes in and out, drops by reason, and how
/// many frames it took in two parts (not compared: whole frames have
/// none).
type Outcome = (Vec<(Option<VnetHdr>, Vec<u8>)>, u64, u64, Vec<u64>, usize);

/// What one port got, without how the frames came.
type Got1<'a> = (&'a [(Option<VnetHdr>, Vec<u8>)], u64, u64, &'a [u64]);

/// Outcomes without how the frames came.
fn as_got(o: &[Outcome]) -> Vec<Got1<'_>> {
    o.iter()
        .map(|(g, rx, tx, d, _)| (&g[..], *rx, *tx, &d[..]))
        .collect()
}

/// What every port got, and what each counted, after `send` on a fresh
/// harness of six ports: p0 and p1 take offloads, p4 and p5 frames in two
/// parts, p1 takes both. VLAN-aware (access and trunk ports) or not.
fn outcome(vlans: bool, send: impl FnOnce(&Switch, &Arc<Port>)) -> Vec<Outcome> {
    outcome_from(0, vlans, send)
}

/// [`outcome`] for frames sent in on port `from`.
fn outcome_from(from: usize, vlans: bool, send: impl FnOnce(&Switch, &Arc<Port>)) -> Vec<Outcome> {
    let (sw, p) = harness_gathering(6, 2, 2);
    if vlans {
        sw.set_vlan_rules(VlanRules::new(vec![
            (PortPattern::new("p0"), PortVlans::access(10)),
            (PortPattern::new("p1"), "/10".parse().expect("spec")),
            (PortPattern::new("p2"), PortVlans::access(10)),
            (PortPattern::new("p3"), "/10".parse().expect("spec")),
            (PortPattern::new("p4"), PortVlans::access(10)),
            (PortPattern::new("p5"), "/10".parse().expect("spec")),
        ]));
    }
    send(&sw, &p[from].0);
    p.iter()
        .map(|(port, got, in_parts)| {
            let c = port.counters().snapshot();
            let drops = DropReason::ALL.iter().map(|r| c.drops(*r)).collect();
            let parts = in_parts.load(std::sync::atomic::Ordering::Relaxed);
            (take(got), c.rx_bytes, c.tx_bytes, drops, parts)
        })
        .collect()
}

/// Frames in two parts (a private head, the rest where the sender wrote
/// it: a vhost-user guest's) reach every kind of port exactly as the same
/// frames whole do: taken whole, segmented, retagged, counted.
#[test]
fn gathered_frames_are_treated_as_the_same_frames_whole() {
    use switchyard_switch::gather::split;
    let (hdr, f) = super_frame();
    // Only the checksum to complete; then what cannot be cut.
    let partial = VnetHdr {
        gso_type: gso::GSO_NONE,
        ..hdr
    };
    let bad = [
        VnetHdr {
            gso_type: gso::GSO_UDP,
            ..hdr
        },
        VnetHdr { gso_size: 1, ..hdr },
        VnetHdr {
            csum_start: 65_000,
            ..partial
        },
    ];
    let plain: Vec<Vec<u8>> = (0..3u8)
        .map(|n| {
            let mut p = f[..600].to_vec();
            p[20] = n;
            p
        })
        .collect();
    for vlans in [false, true] {
        let t = Duration::ZERO;
        let whole = outcome(vlans, |sw, p0| {
            for h in [&hdr, &partial].into_iter().chain(&bad) {
                sw.forward(p0, Frames::Offloaded(h, &f), Overflow::Drop, t);
            }
            let frames: Vec<&[u8]> = plain.iter().map(|p| &p[..]).collect();
            sw.forward(p0, Frames::Plain(&frames), Overflow::Drop, t);
        });
        let gathered = outcome(vlans, |sw, p0| {
            let mut slots = Vec::new();
            let g = split(&f, 7, &mut slots);
            for h in [&hdr, &partial].into_iter().chain(&bad) {
                sw.forward(p0, Frames::OffloadedGathered(h, &g), Overflow::Drop, t);
            }
            let mut slots: Vec<Vec<_>> = vec![Vec::new(); plain.len()];
            let frames: Vec<_> = plain
                .iter()
                .zip(slots.iter_mut())
                .map(|(p, s)| split(p, 3, s))
                .collect();
            sw.forward(p0, Frames::Gathered(&frames), Overflow::Drop, t);
        });
        assert!(whole[1].0.len() >= 4 && whole[2].0.len() > 4, "{whole:?}");
        assert!(whole[4].0.len() > 4, "segments for a gathering port");
        let dropped = |r: DropReason| whole[2].3[r.index()];
        assert_eq!(dropped(DropReason::Unsegmentable), 2, "{vlans}");
        assert_eq!(dropped(DropReason::GsoTooSmall), 1);
        assert_eq!(as_got(&whole), as_got(&gathered), "vlans: {vlans}");
        // The ports that take frames in two parts got them so (p4 and p5;
        // p5, a trunk, with its tag added in the head).
        assert!(gathered[4].4 > 0 && gathered[5].4 > 0, "{vlans}");
    }
}

/// In from a trunk, tagged: the access ports get the tag taken off the
/// head alone, the rest still in two parts, as the whole frame would.
#[test]
fn gathered_tagged_frames_lose_their_tag_as_whole_ones_do() {
    use switchyard_switch::gather::split;
    let (hdr, f) = super_frame();
    let mut tagged = Vec::new();
    switchyard_switch::vlan::tag_into(&f, 10, &mut tagged);
    let thdr = hdr.shifted(4).expect("shifted");
    let plain = tagged[..700].to_vec();
    let t = Duration::ZERO;
    let whole = outcome_from(1, true, |sw, p1| {
        sw.forward(p1, Frames::Offloaded(&thdr, &tagged), Overflow::Drop, t);
        sw.forward(p1, Frames::Plain(&[&plain]), Overflow::Drop, t);
    });
    let gathered = outcome_from(1, true, |sw, p1| {
        let (mut s1, mut s2) = (Vec::new(), Vec::new());
        let g = split(&tagged, 5, &mut s1);
        sw.forward(p1, Frames::OffloadedGathered(&thdr, &g), Overflow::Drop, t);
        let g = split(&plain, 2, &mut s2);
        sw.forward(p1, Frames::Gathered(&[g]), Overflow::Drop, t);
    });
    assert_eq!(
        whole[0].0.len(),
        2,
        "the access port takes the super-frame whole"
    );
    assert_eq!(whole[0].0[0].1, f, "untagged");
    assert!(
        whole[4].0.len() > 4,
        "segments for the gathering access port"
    );
    assert_eq!(as_got(&whole), as_got(&gathered));
    // Untagged in the head alone: the rest still came in parts.
    assert!(gathered[4].4 > 0 && gathered[5].4 > 0);
}

#[test]
fn a_gathered_plain_frame_over_the_limit_is_dropped_as_too_long() {
    use switchyard_switch::gather::split;
    let (sw, p) = harness(2, 0);
    let big = vec![0x02u8; switchyard_switch::MAX_FRAME + 1];
    let mut slots = Vec::new();
    let g = split(&big, 4, &mut slots);
    sw.forward(
        &p[0].0,
        Frames::Gathered(&[g, g]),
        Overflow::Drop,
        Duration::ZERO,
    );
    assert!(take(&p[1].1).is_empty());
    assert_eq!(p[0].0.counters().snapshot().drops(DropReason::TooLong), 2);
}
