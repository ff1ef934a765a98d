//! The IEEE 802.1Q tag: the four bytes after a VLAN TPID (TCI and the
//! EtherType it wraps).

use super::{be16, need, put16, ParseError};

mod field {
    pub(super) const TCI: usize = 0;
    pub(super) const ETHERTYPE: usize = 2;
    pub(super) const LEN: usize = 4;
}

/// Length of a tag after its TPID (TCI and inner EtherType); a tag adds
/// this many bytes to a frame.
pub const TAG_LEN: usize = field::LEN;
/// The VLAN id bits of the TCI.
pub const VID_MASK: u16 = 0x0fff;

/// A VLAN tag: the TCI and inner EtherType, at least four bytes.
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Checks that the four bytes of the tag are there.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        need("VLAN tag", buffer.as_ref().len(), field::LEN)?;
        Ok(VlanTag { buffer })
    }

    /// The whole tag control information (PCP, DEI, VID).
    #[inline]
    pub fn tci(&self) -> u16 {
        be16(self.buffer.as_ref(), field::TCI)
    }

    /// The VLAN id (0 = priority tag only).
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MASK
    }

    /// The priority code point.
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }

    /// The EtherType the tag wraps.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        be16(self.buffer.as_ref(), field::ETHERTYPE)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the tag control information.
    #[inline]
    pub fn set_tci(&mut self, tci: u16) {
        put16(self.buffer.as_mut(), field::TCI, tci);
    }

    /// Sets the wrapped EtherType.
    #[inline]
    pub fn set_ethertype(&mut self, ethertype: u16) {
        put16(self.buffer.as_mut(), field::ETHERTYPE, ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        let mut b = [0x20, 0x0a, 0x08, 0x00];
        let t = VlanTag::new_checked(&b[..]).unwrap();
        assert_eq!((t.vid(), t.pcp(), t.ethertype()), (10, 1, 0x0800));
        let mut t = VlanTag::new_checked(&mut b[..]).unwrap();
        t.set_tci(0x0fff);
        t.set_ethertype(0x86dd);
        assert_eq!(b, [0x0f, 0xff, 0x86, 0xdd]);
        assert!(VlanTag::new_checked(&b[..3]).is_err());
    }
}
