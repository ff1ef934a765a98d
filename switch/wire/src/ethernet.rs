//! Ethernet II with up to two VLAN tags, the EtherTypes, and the one walk
//! past the tags to the layer-3 header ([`layout`]) every crate uses.

use super::{be16, need, put, ParseError};
use crate::vlan::{VlanTag, TAG_LEN};
use crate::MacAddr;

/// The 802.1Q customer VLAN tag (C-tag).
pub const VLAN: u16 = 0x8100;
/// The 802.1ad service VLAN tag (S-tag, QinQ outer tag).
pub const QINQ: u16 = 0x88a8;
/// The pre-standard QinQ tag some switches still send.
pub const QINQ_LEGACY: u16 = 0x9100;
/// Every tag protocol identifier a VLAN tag is recognised by.
pub const VLAN_TPIDS: [u16; 3] = [VLAN, QINQ, QINQ_LEGACY];
/// The most VLAN tags [`layout`] skips (802.1ad: an S-tag and a C-tag).
pub const MAX_TAGS: usize = 2;
/// Length of the Ethernet header without tags.
pub const HEADER_LEN: usize = field::HEADER_LEN;

/// True when `ethertype` announces a VLAN tag.
#[inline]
pub fn is_vlan_tpid(ethertype: u16) -> bool {
    VLAN_TPIDS.contains(&ethertype)
}

/// IPv4.
pub const IPV4: u16 = 0x0800;
/// ARP.
pub const ARP: u16 = 0x0806;
/// IPv6.
pub const IPV6: u16 = 0x86dd;
/// 802.1X / EAPOL.
pub const EAPOL: u16 = 0x888e;
/// RSN pre-authentication.
pub const RSN_PREAUTH: u16 = 0x88c7;
/// TDLS (802.11 data encapsulation).
pub const TDLS: u16 = 0x890d;
/// Values up to this are 802.3 lengths, not ethertypes.
pub const MAX_LENGTH_FIELD: u16 = 1500;
/// The pseudo-EtherType the MAC-NAT keys 802.3/LLC frames under.
pub const LLC: u16 = 0;

mod field {
    use std::ops::Range;
    pub(super) const DESTINATION: Range<usize> = 0..6;
    pub(super) const SOURCE: Range<usize> = 6..12;
    pub(super) const ETHERTYPE: usize = 12;
    pub(super) const HEADER_LEN: usize = 14;
}

/// The Ethernet header of a frame of at least 14 bytes.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the layer-3 payload starts and what it is, after VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// VLAN id of the outermost tag, 0 when untagged.
    pub vlan: u16,
    /// The inner ethertype (a value ≤ 1500 is an 802.3 length).
    pub ethertype: u16,
    /// Offset of the inner payload in the frame.
    pub payload: usize,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Checks that the 14-byte header is there.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        need("Ethernet", buffer.as_ref().len(), field::HEADER_LEN)?;
        Ok(EthernetFrame { buffer })
    }

    /// Destination MAC.
    #[inline]
    pub fn destination(&self) -> MacAddr {
        MacAddr(super::array(self.buffer.as_ref(), field::DESTINATION.start))
    }

    /// Source MAC.
    #[inline]
    pub fn source(&self) -> MacAddr {
        MacAddr(super::array(self.buffer.as_ref(), field::SOURCE.start))
    }

    /// The outer EtherType (or 802.3 length) field, before any tag.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }

    /// The whole frame.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// Skips up to two VLAN tags; a truncated tag is an error.
    #[inline]
    pub fn layout(&self) -> Result<Layout, ParseError> {
        let b = self.buffer.as_ref();
        let mut at = field::ETHERTYPE;
        let mut ethertype = be16(b, at);
        let mut vlan = 0;
        let mut tags = 0;
        while tags < MAX_TAGS && is_vlan_tpid(ethertype) {
            let tag = VlanTag::new_checked(b.get(at + 2..).unwrap_or_default())?;
            if tags == 0 {
                vlan = tag.vid();
            }
            at += TAG_LEN;
            ethertype = tag.ethertype();
            tags += 1;
        }
        Ok(Layout {
            dst: self.destination(),
            src: self.source(),
            vlan,
            ethertype,
            payload: at + 2,
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    #[inline]
    pub fn set_destination(&mut self, mac: MacAddr) {
        put(self.buffer.as_mut(), field::DESTINATION.start, &mac.0);
    }

    /// Sets the source MAC.
    #[inline]
    pub fn set_source(&mut self, mac: MacAddr) {
        put(self.buffer.as_mut(), field::SOURCE.start, &mac.0);
    }
}

/// Where the layer-3 header of `frame` starts and what it is, past up to
/// [`MAX_TAGS`] VLAN tags: the one walk every crate uses. A frame with
/// more tags comes back with a tag's EtherType, which no caller takes for
/// IP.
#[inline]
pub fn layout(frame: &[u8]) -> Result<Layout, ParseError> {
    EthernetFrame::new_checked(frame)?.layout()
}

/// Sets the destination MAC of a frame (nothing if shorter than 14 bytes).
#[inline]
pub fn set_dst(frame: &mut [u8], mac: MacAddr) {
    if let Ok(mut f) = EthernetFrame::new_checked(frame) {
        f.set_destination(mac);
    }
}

/// Sets the source MAC of a frame (nothing if shorter than 14 bytes).
#[inline]
pub fn set_src(frame: &mut [u8], mac: MacAddr) {
    if let Ok(mut f) = EthernetFrame::new_checked(frame) {
        f.set_source(mac);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untagged_single_double_and_truncated() {
        let mut f = [0u8; 14];
        f[12..14].copy_from_slice(&IPV4.to_be_bytes());
        let l = EthernetFrame::new_checked(&f[..])
            .unwrap()
            .layout()
            .unwrap();
        assert_eq!((l.vlan, l.ethertype, l.payload), (0, IPV4, 14));

        let mut q = [0u8; 18];
        q[12..14].copy_from_slice(&[0x81, 0x00]);
        q[14..16].copy_from_slice(&[0x20, 0x0a]); // PCP 1, VID 10
        q[16..18].copy_from_slice(&ARP.to_be_bytes());
        let l = EthernetFrame::new_checked(&q[..])
            .unwrap()
            .layout()
            .unwrap();
        assert_eq!((l.vlan, l.ethertype, l.payload), (10, ARP, 18));

        let mut qq = [0u8; 22];
        qq[12..14].copy_from_slice(&[0x88, 0xa8]);
        qq[14..16].copy_from_slice(&[0x00, 0x64]);
        qq[16..18].copy_from_slice(&[0x81, 0x00]);
        qq[18..20].copy_from_slice(&[0x00, 0x05]);
        qq[20..22].copy_from_slice(&IPV6.to_be_bytes());
        let l = EthernetFrame::new_checked(&qq[..])
            .unwrap()
            .layout()
            .unwrap();
        assert_eq!((l.vlan, l.ethertype, l.payload), (100, IPV6, 22));

        for n in 14..22 {
            let r = EthernetFrame::new_checked(&qq[..n]).unwrap().layout();
            assert!(r.is_err(), "{n}");
        }
        assert!(EthernetFrame::new_checked(&qq[..13]).is_err());
    }

    #[test]
    fn a_third_tag_is_not_skipped() {
        let mut f = vec![0u8; 12];
        for tpid in [QINQ, VLAN, QINQ_LEGACY] {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&[0x00, 0x07]);
        }
        f.extend_from_slice(&IPV4.to_be_bytes());
        f.resize(60, 0);
        let l = layout(&f).unwrap();
        assert_eq!((l.vlan, l.ethertype, l.payload), (7, QINQ_LEGACY, 22));
        assert!(is_vlan_tpid(l.ethertype), "no caller takes it for IP");
    }
}
