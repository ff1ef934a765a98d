//! Ethernet II with up to two VLAN tags.

use super::{be16, need, put, ParseError};
use crate::MacAddr;

/// IPv4.
pub(crate) const IPV4: u16 = 0x0800;
/// ARP.
pub(crate) const ARP: u16 = 0x0806;
/// IPv6.
pub(crate) const IPV6: u16 = 0x86dd;
/// 802.1X / EAPOL.
pub(crate) const EAPOL: u16 = 0x888e;
/// RSN pre-authentication.
pub(crate) const RSN_PREAUTH: u16 = 0x88c7;
/// TDLS (802.11 data encapsulation).
pub(crate) const TDLS: u16 = 0x890d;
/// Values up to this are 802.3 lengths, not ethertypes.
pub(crate) const MAX_LENGTH_FIELD: u16 = 1500;
/// The pseudo-ethertype 802.3/LLC frames are keyed under (`single_owner`).
pub(crate) const LLC: u16 = 0;

const VLAN_TPIDS: [u16; 3] = [0x8100, 0x88a8, 0x9100];
const MAX_TAGS: usize = 2;

mod field {
    use std::ops::Range;
    pub(super) const DESTINATION: Range<usize> = 0..6;
    pub(super) const SOURCE: Range<usize> = 6..12;
    pub(super) const ETHERTYPE: usize = 12;
    pub(super) const HEADER_LEN: usize = 14;
    pub(super) const TAG_LEN: usize = 4;
}

/// The Ethernet header of a frame of at least 14 bytes.
#[derive(Debug)]
pub(crate) struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the layer-3 payload starts and what it is, after VLAN tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Destination MAC.
    pub(crate) dst: MacAddr,
    /// Source MAC.
    pub(crate) src: MacAddr,
    /// VLAN id of the outermost tag, 0 when untagged.
    pub(crate) vlan: u16,
    /// The inner ethertype (a value ≤ 1500 is an 802.3 length).
    pub(crate) ethertype: u16,
    /// Offset of the inner payload in the frame.
    pub(crate) payload: usize,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Checks that the 14-byte header is there.
    pub(crate) fn new_checked(buffer: T) -> Result<Self, ParseError> {
        need("Ethernet", buffer.as_ref().len(), field::HEADER_LEN)?;
        Ok(EthernetFrame { buffer })
    }

    /// Destination MAC.
    pub(crate) fn dst(&self) -> MacAddr {
        MacAddr(super::array(self.buffer.as_ref(), field::DESTINATION.start))
    }

    /// Source MAC.
    pub(crate) fn src(&self) -> MacAddr {
        MacAddr(super::array(self.buffer.as_ref(), field::SOURCE.start))
    }

    /// Skips up to two VLAN tags; a truncated tag is an error.
    pub(crate) fn layout(&self) -> Result<Layout, ParseError> {
        let b = self.buffer.as_ref();
        let mut at = field::ETHERTYPE;
        let mut ethertype = be16(b, at);
        let mut vlan = 0;
        let mut tags = 0;
        while tags < MAX_TAGS && VLAN_TPIDS.contains(&ethertype) {
            need("VLAN tag", b.len(), at + 2 + field::TAG_LEN)?;
            if tags == 0 {
                vlan = be16(b, at + 2) & 0x0fff;
            }
            at += field::TAG_LEN;
            ethertype = be16(b, at);
            tags += 1;
        }
        Ok(Layout {
            dst: self.dst(),
            src: self.src(),
            vlan,
            ethertype,
            payload: at + 2,
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    pub(crate) fn set_dst(&mut self, mac: MacAddr) {
        put(self.buffer.as_mut(), field::DESTINATION.start, &mac.0);
    }

    /// Sets the source MAC.
    pub(crate) fn set_src(&mut self, mac: MacAddr) {
        put(self.buffer.as_mut(), field::SOURCE.start, &mac.0);
    }
}

/// Sets the destination MAC of a frame (nothing if shorter than 6 bytes).
pub(crate) fn set_dst(frame: &mut [u8], mac: MacAddr) {
    if let Ok(mut f) = EthernetFrame::new_checked(frame) {
        f.set_dst(mac);
    }
}

/// Sets the source MAC of a frame (nothing if shorter than 14 bytes).
pub(crate) fn set_src(frame: &mut [u8], mac: MacAddr) {
    if let Ok(mut f) = EthernetFrame::new_checked(frame) {
        f.set_src(mac);
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
}
