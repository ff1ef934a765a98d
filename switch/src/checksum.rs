//! The Internet checksum (RFC 1071), shared by software segmentation and
//! the pcap port's checksum completion.

/// Adds the big-endian 16-bit words of `data` (an odd tail padded with
/// zero) to `acc`, unfolded.
pub fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits and complements it: the checksum field's value
/// (0 when `acc` sums a block whose checksum is right).
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}
