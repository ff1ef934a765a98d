//! 802.1Q tagging and untagging as the switch does it on egress
//! (`tag_of`, `tag_into`, `untag_into` in switch/engine/src/vlan.rs, used
//! by switch/src/forms.rs), a port's VLAN membership (`PortVlans`, the
//! `--vlan` syntax) and its ingress classification. Seeds: tagged and
//! untagged frames of the test suite's guests, priority-tagged frames and
//! membership specs.
//!
//! Input: a VLAN id (2 bytes, big-endian), the length of a membership
//! spec (1 byte), the spec's text, then the frame. Frames shorter than an
//! Ethernet header are what the engine drops as `too_short` before any
//! VLAN code runs; they are not given to it.
//!
//! Checks, besides "never panics":
//! - tagging gives a frame tagged with the VLAN id (12 bits) and priority
//!   0, 4 bytes longer than an untagged frame or as long as a tagged one;
//!   untagging it gives back the untagged frame (the input, or the input
//!   without its outer tag); a single tag with priority and DEI 0
//!   survives untagging and tagging again;
//! - a membership spec that parses prints as a spec that parses to the
//!   same membership; a frame it admits belongs to a VLAN the port is a
//!   member of, and leaves the port in a form `egress` names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard_switch::vlan::{tag_into, tag_of, untag_into, PortVlans, TPID};

/// The Ethernet header: what the engine needs before VLAN code runs.
const MIN_FRAME: usize = 14;

fuzz_target!(|data: &[u8]| {
    let [v0, v1, spec_len, rest @ ..] = data else {
        return;
    };
    let vid = u16::from_be_bytes([*v0, *v1]);
    let (spec, frame) = rest.split_at(usize::from(*spec_len).min(rest.len()));
    if frame.len() >= MIN_FRAME {
        check_tagging(frame, vid);
    }
    if let Ok(text) = std::str::from_utf8(spec) {
        check_membership(text, frame);
    }
});

fn check_tagging(frame: &[u8], vid: u16) {
    let (mut tagged, mut back) = (Vec::new(), Vec::new());
    let had = tag_of(frame);
    tag_into(frame, vid, &mut tagged);
    assert_eq!(tag_of(&tagged), Some(vid & 0x0fff), "tag_into did not tag");
    assert_eq!(u16::from_be_bytes([tagged[12], tagged[13]]), TPID);
    assert_eq!(tagged[14] & 0xf0, 0, "priority or DEI set");
    let plain = match had {
        Some(_) => {
            let mut p = Vec::new();
            untag_into(frame, &mut p);
            assert_eq!(p.len() + 4, frame.len());
            assert_eq!(tagged.len(), frame.len(), "a retag changed the length");
            p
        }
        None => {
            assert_eq!(tagged.len(), frame.len() + 4);
            frame.to_vec()
        }
    };
    untag_into(&tagged, &mut back);
    assert_eq!(back, plain, "tag then untag did not give the frame back");
    // A double-tagged frame keeps its inner tag when untagged, and
    // `tag_into` replaces a tag it finds: only a single tag round-trips.
    if let (Some(v), None) = (had, tag_of(&plain)) {
        if frame[14] & 0xf0 == 0 {
            let mut again = Vec::new();
            tag_into(&plain, v, &mut again);
            assert_eq!(again, frame, "untag then tag did not give the frame back");
        }
    }
}

fn check_membership(text: &str, frame: &[u8]) {
    let Ok(vlans) = text.parse::<PortVlans>() else {
        return;
    };
    let shown = vlans.to_string();
    match shown.parse::<PortVlans>() {
        Ok(again) => assert_eq!(again, vlans, "{text:?} shown as {shown:?}"),
        Err(e) => panic!("{text:?} is shown as {shown:?}, which does not parse: {e}"),
    }
    if frame.len() < MIN_FRAME {
        return;
    }
    if let Ok(c) = vlans.classify(frame) {
        assert!(
            vlans.is_member(c.vid),
            "admitted into VLAN {} outside",
            c.vid
        );
        assert!(vlans.egress(c.vid).is_some());
        assert_eq!(c.tag, tag_of(frame));
    }
}
