//! The TCP header (RFC 9293), as far as segmentation and checksums read
//! and edit it.

use super::{be16, need, put16, ParseError};

/// FIN.
pub const FIN: u8 = 0x01;
/// PSH.
pub const PSH: u8 = 0x08;
/// CWR (ECN).
pub const CWR: u8 = 0x80;
/// IP protocol number of TCP.
pub const PROTOCOL: u8 = 6;

mod field {
    pub(super) const SRC_PORT: usize = 0;
    pub(super) const DST_PORT: usize = 2;
    pub(super) const SEQ: usize = 4;
    pub(super) const DATA_OFFSET: usize = 12;
    pub(super) const FLAGS: usize = 13;
    pub(super) const CHECKSUM: usize = 16;
    pub(super) const MIN_HEADER: usize = 20;
}

/// Byte offset of the checksum in the TCP header.
pub const CHECKSUM_OFFSET: usize = field::CHECKSUM;
/// Length of a TCP header without options.
pub const MIN_HEADER_LEN: usize = field::MIN_HEADER;

/// A TCP segment: a header of 20 to 60 bytes, all present.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> TcpSegment<T> {
    /// Validates the data offset against the buffer.
    #[inline]
    pub fn new_checked(buffer: T) -> Result<Self, ParseError> {
        let b = buffer.as_ref();
        need("TCP", b.len(), field::MIN_HEADER)?;
        let hl = usize::from(b[field::DATA_OFFSET] >> 4) * 4;
        need("TCP data offset", hl, field::MIN_HEADER)?;
        need("TCP", b.len(), hl)?;
        Ok(TcpSegment { buffer })
    }

    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::SRC_PORT)
    }

    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buffer.as_ref(), field::DST_PORT)
    }

    /// Header length in bytes, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::DATA_OFFSET] >> 4) * 4
    }

    /// Sequence number.
    #[inline]
    pub fn seq(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from(be16(b, field::SEQ)) << 16 | u32::from(be16(b, field::SEQ + 2))
    }

    /// The flags byte (CWR … FIN).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[field::FLAGS]
    }

    /// The checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), field::CHECKSUM)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpSegment<T> {
    /// Sets the sequence number.
    #[inline]
    pub fn set_seq(&mut self, seq: u32) {
        let b = self.buffer.as_mut();
        put16(b, field::SEQ, (seq >> 16) as u16);
        put16(b, field::SEQ + 2, seq as u16);
    }

    /// Sets the flags byte.
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[field::FLAGS] = flags;
    }

    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buffer.as_mut(), field::CHECKSUM, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_bounds() {
        let mut b = [0u8; 24];
        b[..4].copy_from_slice(&[0x9c, 0x40, 0x14, 0x51]);
        b[4..8].copy_from_slice(&0xffff_ff00u32.to_be_bytes());
        b[12] = 0x60;
        b[13] = FIN | PSH;
        let t = TcpSegment::new_checked(&b[..]).unwrap();
        assert_eq!((t.src_port(), t.dst_port()), (40000, 5201));
        assert_eq!((t.seq(), t.header_len(), t.flags()), (0xffff_ff00, 24, 9));
        assert!(TcpSegment::new_checked(&b[..23]).is_err(), "options cut");
        let mut t = TcpSegment::new_checked(&mut b[..]).unwrap();
        t.set_seq(7);
        t.set_flags(CWR);
        t.set_checksum(0xbeef);
        assert_eq!(&b[4..8], &[0, 0, 0, 7]);
        assert_eq!((b[13], b[16], b[17]), (CWR, 0xbe, 0xef));
        b[12] = 0x40;
        assert!(TcpSegment::new_checked(&b[..]).is_err(), "offset below 5");
    }
}
