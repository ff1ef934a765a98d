//! The virtio-net header a tap opened with IFF_VNET_HDR puts before each
//! frame (`switchyard_switch::gso::VnetHdr`, read by bridge/src/tap.rs),
//! what the tap's receive loop decides from it, the header's shift under
//! VLAN tagging (switch/src/forms.rs) and the checksum completion a plain
//! receiver needs. Seeds: headers and frames a tap gave with TSO and
//! checksum offload on.
//!
//! Input: a shift selector byte, then what the tap read (header + frame).
//!
//! Checks, besides "never panics":
//! - a read shorter than the header has no header; otherwise parsing and
//!   `to_bytes` give back the same 10 bytes;
//! - `is_plain` and `gso_too_small` agree with the fields;
//! - shifting by +4 or -4 (a tag added or removed) and back gives the
//!   same header, only the offsets in use move, and by exactly the shift;
//! - completing a partial checksum keeps the frame's length and all bytes
//!   but the checksum field, and the completed field makes the summed
//!   range (from `csum_start`) add up to the partial sum it held (for a
//!   field at an even distance from `csum_start`, as every real one is).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_fuzz::{ones_sum, ones_sum_is_zero};
use switchyard_switch::gso::{
    complete_checksum, GsoError, VnetHdr, F_NEEDS_CSUM, GSO_NONE, MIN_GSO_SIZE,
};

fuzz_target!(|data: &[u8]| {
    let [shift, read @ ..] = data else {
        return;
    };
    let Some(hdr) = VnetHdr::parse(read) else {
        assert!(read.len() < VnetHdr::LEN, "a whole header not parsed");
        return;
    };
    assert_eq!(&hdr.to_bytes()[..], &read[..VnetHdr::LEN], "round trip");
    let frame = &read[VnetHdr::LEN..];
    assert_eq!(
        hdr.is_plain(),
        hdr.flags & F_NEEDS_CSUM == 0 && hdr.gso_type == GSO_NONE
    );
    assert_eq!(
        hdr.gso_too_small(),
        hdr.gso_type != GSO_NONE && hdr.gso_size < MIN_GSO_SIZE
    );
    check_shift(&hdr, if shift & 1 == 0 { 4 } else { -4 });
    check_completion(&hdr, frame);
});

fn check_shift(hdr: &VnetHdr, delta: isize) {
    let Some(moved) = hdr.shifted(delta) else {
        return;
    };
    assert_eq!(moved.shifted(-delta), Some(*hdr), "shift and back");
    let by = |a: u16, b: u16| isize::try_from(b).unwrap_or(0) - isize::try_from(a).unwrap_or(0);
    if hdr.flags & F_NEEDS_CSUM != 0 {
        assert_eq!(by(hdr.csum_start, moved.csum_start), delta);
    } else {
        assert_eq!(hdr.csum_start, moved.csum_start, "unused csum_start moved");
    }
    if hdr.gso_type != GSO_NONE && hdr.hdr_len != 0 {
        assert_eq!(by(hdr.hdr_len, moved.hdr_len), delta);
    } else {
        assert_eq!(hdr.hdr_len, moved.hdr_len, "unused hdr_len moved");
    }
    assert_eq!(
        (hdr.flags, hdr.gso_type, hdr.gso_size, hdr.csum_offset),
        (
            moved.flags,
            moved.gso_type,
            moved.gso_size,
            moved.csum_offset
        )
    );
}

fn check_completion(hdr: &VnetHdr, frame: &[u8]) {
    let mut out = Vec::new();
    match complete_checksum(hdr, frame, &mut out) {
        Ok(()) => {}
        Err(GsoError::Malformed) => {
            let field = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
            assert!(field + 2 > frame.len(), "refused a field inside the frame");
            return;
        }
        Err(e) => panic!("completion failed with {e:?}"),
    }
    assert_eq!(out.len(), frame.len());
    if hdr.flags & F_NEEDS_CSUM == 0 {
        assert_eq!(out, frame, "a frame without a partial checksum changed");
        return;
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    for i in (0..out.len()).filter(|i| !(field..field + 2).contains(i)) {
        assert_eq!(out[i], frame[i], "byte {i} changed");
    }
    if (field - start) % 2 != 0 {
        // A field at an odd distance sums byte-swapped (as in the kernel):
        // no sender puts one there.
        return;
    }
    let partial = u64::from(u16::from_be_bytes([frame[field], frame[field + 1]]));
    assert!(
        ones_sum_is_zero(ones_sum(partial, &out[start..])),
        "the completed checksum does not cover the partial sum"
    );
}
