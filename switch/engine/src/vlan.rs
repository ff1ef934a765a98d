//! IEEE 802.1Q VLANs: which VLANs a port belongs to, how an arriving frame
//! is classified, and how a frame is tagged or untagged on its way out.
//!
//! A switch with no VLAN rules is VLAN-transparent, as uml_switch and
//! vde_switch are: tagged frames pass untouched and everything shares one
//! table (VLAN 0). Once any rule exists the switch is VLAN-aware and every
//! port without a rule is an access port of VLAN 1, like a Linux bridge's
//! default PVID.

use crate::DropReason;
use std::fmt;
use switchyard_wire::ethernet::{self, EthernetFrame};
use switchyard_wire::vlan::{VlanTag, TAG_LEN, VID_MASK};

/// The 802.1Q tag protocol identifier, the only one the switch tags with
/// and classifies by.
pub const TPID: u16 = ethernet::VLAN;
/// Where the EtherType (or a tag) starts: after the two addresses.
const ADDRESSES: usize = ethernet::HEADER_LEN - 2;
/// The VLAN a port without a rule belongs to, untagged, in a VLAN-aware
/// switch.
pub const DEFAULT_VLAN: u16 = 1;
/// The highest usable VLAN id (4095 is reserved, 0 means "no VLAN").
pub const MAX_VID: u16 = 4094;

/// A set of VLAN ids, 1 to 4094.
#[derive(Clone, PartialEq, Eq)]
pub struct VlanSet(Box<[u64; 64]>);

impl Default for VlanSet {
    fn default() -> Self {
        VlanSet(Box::new([0; 64]))
    }
}

impl VlanSet {
    /// Adds `vid`; ids outside 1 to 4094 are ignored.
    pub fn insert(&mut self, vid: u16) {
        if (1..=MAX_VID).contains(&vid) {
            self.0[usize::from(vid / 64)] |= 1 << (vid % 64);
        }
    }

    /// True when `vid` is in the set.
    #[inline]
    pub fn contains(&self, vid: u16) -> bool {
        vid <= MAX_VID && self.0[usize::from(vid / 64)] & (1 << (vid % 64)) != 0
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// The ids, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (1..=MAX_VID).filter(move |v| self.contains(*v))
    }
}

impl fmt::Debug for VlanSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for VlanSet {
    /// `10,20-30`: runs of consecutive ids collapse into ranges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut ids = self.iter().peekable();
        while let Some(start) = ids.next() {
            let mut end = start;
            while ids.peek() == Some(&(end + 1)) {
                end += 1;
                ids.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

impl std::str::FromStr for VlanSet {
    type Err = String;

    /// `10`, `10,20`, `100-110,200`.
    fn from_str(s: &str) -> Result<VlanSet, String> {
        let mut set = VlanSet::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (a, b) = part.split_once('-').unwrap_or((part, part));
            let (a, b) = (parse_vid(a.trim())?, parse_vid(b.trim())?);
            if a > b {
                return Err(format!("VLAN range {part:?} runs backwards"));
            }
            for v in a..=b {
                set.insert(v);
            }
        }
        Ok(set)
    }
}

/// Parses one VLAN id, 1 to 4094.
pub fn parse_vid(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|v| (1..=MAX_VID).contains(v))
        .ok_or_else(|| format!("{s:?} is not a VLAN id (1 to 4094)"))
}

/// A port's VLAN membership: at most one untagged VLAN (the PVID, which
/// untagged frames arriving on the port join) and any number of tagged
/// ones. An access port has only the former, a trunk mostly the latter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortVlans {
    /// Untagged frames belong to this VLAN and leave it untagged; `None`
    /// drops untagged frames (a trunk without a native VLAN).
    pub untagged: Option<u16>,
    /// VLANs whose frames cross the port with their tag.
    pub tagged: VlanSet,
}

impl Default for PortVlans {
    /// An access port of VLAN 1.
    fn default() -> Self {
        PortVlans::access(DEFAULT_VLAN)
    }
}

/// How a frame leaves a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Without an 802.1Q tag.
    Untagged,
    /// With a tag carrying the frame's VLAN.
    Tagged,
}

impl PortVlans {
    /// An access port: `vid` untagged, nothing tagged.
    pub fn access(vid: u16) -> PortVlans {
        PortVlans {
            untagged: Some(vid),
            tagged: VlanSet::default(),
        }
    }

    /// True when frames of `vid` may enter or leave the port.
    #[inline]
    pub fn is_member(&self, vid: u16) -> bool {
        self.untagged == Some(vid) || self.tagged.contains(vid)
    }

    /// How a frame of `vid` leaves the port; `None` when it must not.
    #[inline]
    pub fn egress(&self, vid: u16) -> Option<Egress> {
        if self.untagged == Some(vid) {
            Some(Egress::Untagged)
        } else if self.tagged.contains(vid) {
            Some(Egress::Tagged)
        } else {
            None
        }
    }

    /// The VLAN a frame arriving on the port belongs to, or why it is
    /// refused. A priority tag (VLAN id 0) counts as untagged.
    #[inline]
    pub fn classify(&self, frame: &[u8]) -> Result<Classified, DropReason> {
        let tag = tag_of(frame);
        match tag {
            Some(vid) if vid != 0 => {
                if self.is_member(vid) {
                    Ok(Classified { vid, tag })
                } else {
                    Err(DropReason::VlanFiltered)
                }
            }
            Some(_) | None => match self.untagged {
                Some(vid) => Ok(Classified { vid, tag }),
                None => Err(DropReason::VlanFiltered),
            },
        }
    }
}

impl fmt::Display for PortVlans {
    /// `10` (access), `/20-30` (trunk), `1/20-30` (both): the `--vlan` syntax.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(u) = self.untagged {
            write!(f, "{u}")?;
        }
        if !self.tagged.is_empty() {
            write!(f, "/{}", self.tagged)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for PortVlans {
    type Err = String;

    /// `UNTAGGED[/TAGGED]`: `10`, `/20,30`, `none/20-30`, `1/100-110`.
    fn from_str(s: &str) -> Result<PortVlans, String> {
        let (u, t) = s.split_once('/').unwrap_or((s, ""));
        let untagged = match u.trim() {
            "" | "none" => None,
            v => Some(parse_vid(v)?),
        };
        let tagged: VlanSet = t.parse()?;
        if untagged.is_none() && tagged.is_empty() {
            return Err(format!(
                "{s:?} names no VLAN: give an untagged VLAN (e.g. 10), tagged ones (e.g. /20,30) or both (1/20-30)"
            ));
        }
        Ok(PortVlans { untagged, tagged })
    }
}

/// An arriving frame's VLAN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The VLAN (0 in a VLAN-transparent switch).
    pub vid: u16,
    /// The VLAN id of the 802.1Q tag the frame arrived with (0 for a
    /// priority tag), `None` when it arrived untagged.
    pub tag: Option<u16>,
}

impl Classified {
    /// A frame in a VLAN-transparent switch.
    pub const TRANSPARENT: Classified = Classified { vid: 0, tag: None };

    /// True when the frame's bytes can leave as they are through a port
    /// that sends this VLAN `egress`.
    #[inline]
    pub fn leaves_as_is(&self, egress: Egress) -> bool {
        match egress {
            Egress::Untagged => self.tag.is_none(),
            Egress::Tagged => self.tag == Some(self.vid),
        }
    }
}

/// The VLAN id of an 802.1Q-tagged frame (0 for a priority tag), or `None`
/// for an untagged (or too short to be tagged) frame.
#[inline]
pub fn tag_of(frame: &[u8]) -> Option<u16> {
    if EthernetFrame::new_checked(frame).ok()?.ethertype() != TPID {
        return None;
    }
    let tag = VlanTag::new_checked(frame.get(ethernet::HEADER_LEN..)?).ok()?;
    Some(tag.vid())
}

/// Writes `frame` without its 802.1Q tag into `out` (which is cleared).
/// `frame` must be tagged ([`tag_of`] is `Some`).
pub fn untag_into(frame: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&frame[..ADDRESSES]);
    out.extend_from_slice(&frame[ADDRESSES + TAG_LEN..]);
}

/// Writes `frame` with an 802.1Q tag for `vid` (priority 0) into `out`
/// (which is cleared). A priority tag already there is replaced.
pub fn tag_into(frame: &[u8], vid: u16, out: &mut Vec<u8>) {
    let rest = if tag_of(frame).is_some() {
        &frame[ADDRESSES + TAG_LEN..]
    } else {
        &frame[ADDRESSES..]
    };
    out.clear();
    out.extend_from_slice(&frame[..ADDRESSES]);
    out.extend_from_slice(&TPID.to_be_bytes());
    out.extend_from_slice(&(vid & VID_MASK).to_be_bytes());
    out.extend_from_slice(rest);
}

/// Which ports a rule names: an exact port name, or a prefix ending in `*`
/// (`unix:*`, `tap:*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortPattern(String);

impl PortPattern {
    /// A pattern from its text.
    pub fn new(text: impl Into<String>) -> PortPattern {
        PortPattern(text.into())
    }

    /// True when the port called `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => self.0 == name,
        }
    }

    /// The pattern's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// VLAN rules by port name; the first match wins, a port nothing matches
/// is an access port of [`DEFAULT_VLAN`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VlanRules(Vec<(PortPattern, PortVlans)>);

impl VlanRules {
    /// Rules from (pattern, membership) pairs, in priority order.
    pub fn new(rules: Vec<(PortPattern, PortVlans)>) -> VlanRules {
        VlanRules(rules)
    }

    /// True when there are no rules: the switch is VLAN-transparent.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The membership of the port called `name`; `None` while the switch is
    /// VLAN-transparent.
    pub fn resolve(&self, name: &str) -> Option<PortVlans> {
        if self.0.is_empty() {
            return None;
        }
        Some(
            self.0
                .iter()
                .find(|(p, _)| p.matches(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
        )
    }

    /// The rules, in order.
    pub fn iter(&self) -> impl Iterator<Item = &(PortPattern, PortVlans)> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: Option<u16>) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        if let Some(t) = tag {
            f.extend_from_slice(&TPID.to_be_bytes());
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(&[0x45; 46]);
        f
    }

    fn trunk(spec: &str) -> PortVlans {
        spec.parse().expect("valid spec")
    }

    #[test]
    fn specs_parse_and_print_back() {
        for s in ["10", "/20", "1/20-30", "/5,7,100-102", "4094"] {
            assert_eq!(trunk(s).to_string(), s);
        }
        assert_eq!(trunk("none/20").untagged, None);
        assert!("".parse::<PortVlans>().is_err());
        assert!("none".parse::<PortVlans>().is_err());
        assert!("0".parse::<PortVlans>().is_err());
        assert!("4095".parse::<PortVlans>().is_err());
        assert!("/30-20".parse::<PortVlans>().is_err());
        assert!("/x".parse::<PortVlans>().is_err());
    }

    #[test]
    fn access_port_classifies_untagged_into_its_vlan() {
        let p = PortVlans::access(10);
        assert_eq!(
            p.classify(&frame(None)),
            Ok(Classified { vid: 10, tag: None })
        );
        // A priority tag is untagged traffic with a priority.
        let prio = p.classify(&frame(Some(0x6000)));
        assert_eq!(
            prio,
            Ok(Classified {
                vid: 10,
                tag: Some(0)
            })
        );
        let prio = prio.expect("classified");
        assert!(!prio.leaves_as_is(Egress::Untagged));
        assert!(!prio.leaves_as_is(Egress::Tagged));
        assert_eq!(p.classify(&frame(Some(20))), Err(DropReason::VlanFiltered));
        // Its own VLAN, tagged, is accepted (as a Linux bridge does).
        let own = p.classify(&frame(Some(10))).expect("classified");
        assert_eq!(own.vid, 10);
        assert!(own.leaves_as_is(Egress::Tagged));
        assert!(!own.leaves_as_is(Egress::Untagged));
    }

    #[test]
    fn trunk_without_native_vlan_refuses_untagged() {
        let p = trunk("/20,30");
        assert_eq!(p.classify(&frame(None)), Err(DropReason::VlanFiltered));
        assert_eq!(p.classify(&frame(Some(30))).map(|c| c.vid), Ok(30));
        // The priority bits do not change the VLAN.
        assert_eq!(p.classify(&frame(Some(0xe000 | 30))).map(|c| c.vid), Ok(30));
        assert_eq!(p.classify(&frame(Some(40))), Err(DropReason::VlanFiltered));
        assert_eq!(p.egress(20), Some(Egress::Tagged));
        assert_eq!(p.egress(1), None);
    }

    #[test]
    fn tag_and_untag_are_inverse() {
        let plain = frame(None);
        let mut tagged = Vec::new();
        tag_into(&plain, 42, &mut tagged);
        assert_eq!(tag_of(&tagged), Some(42));
        assert_eq!(tagged.len(), plain.len() + 4);
        let mut back = Vec::new();
        untag_into(&tagged, &mut back);
        assert_eq!(back, plain);
        // Retagging a priority-tagged frame replaces the tag, not stacks it.
        let prio = frame(Some(0));
        tag_into(&prio, 7, &mut tagged);
        assert_eq!(tag_of(&tagged), Some(7));
        assert_eq!(tagged.len(), prio.len());
    }

    #[test]
    fn short_frames_are_untagged() {
        let f = frame(Some(5));
        assert_eq!(tag_of(&f[..17]), None);
        assert_eq!(tag_of(&f[..18]), Some(5));
    }

    #[test]
    fn rules_first_match_wins_default_is_vlan_1() {
        let rules = VlanRules::new(vec![
            (PortPattern::new("unix:1"), PortVlans::access(10)),
            (PortPattern::new("unix:*"), PortVlans::access(20)),
        ]);
        assert_eq!(rules.resolve("unix:1"), Some(PortVlans::access(10)));
        assert_eq!(rules.resolve("unix:7"), Some(PortVlans::access(20)));
        assert_eq!(rules.resolve("tap:tap0"), Some(PortVlans::access(1)));
        assert_eq!(VlanRules::default().resolve("unix:1"), None);
    }
}
