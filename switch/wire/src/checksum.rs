//! The Internet checksum (RFC 1071), from scratch and incremental
//! (RFC 1624), with one meaning throughout:
//!
//! - [`sum`] adds big-endian 16-bit words to an accumulator, unfolded;
//! - [`fold`] folds an accumulator to 16 bits (end-around carry) **and
//!   complements it**: the value a checksum field holds, and 0 when the
//!   summed block already carries a right checksum.
//!
//! Every crate uses these; there is no uncomplemented fold.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Adds the big-endian 16-bit words of `data` (an odd tail padded with
/// zero) to `acc`, unfolded.
#[inline]
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

/// Folds a sum to 16 bits with end-around carry and complements it: the
/// checksum field's value (0 when `acc` sums a block whose checksum is
/// right).
#[inline]
pub fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The IPv4 pseudo-header sum for a transport protocol.
#[inline]
pub fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u64 {
    sum(&dst.octets(), sum(&src.octets(), 0)) + u64::from(proto) + u64::from(len)
}

/// The IPv6 pseudo-header sum (RFC 8200 §8.1) for an upper-layer protocol.
#[inline]
pub fn pseudo_v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, len: u32) -> u64 {
    sum(&dst.octets(), sum(&src.octets(), 0)) + u64::from(next) + u64::from(len)
}

/// RFC 1624 equation 3: the new checksum after one 16-bit word of the
/// covered data changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update_word(check: u16, old: u16, new: u16) -> u16 {
    fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// [`update_word`] over a run of words. `old` and `new` must have the same
/// even length and start at an even offset from the start of the covered
/// data; callers guarantee both.
#[inline]
pub fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
    old.chunks_exact(2)
        .zip(new.chunks_exact(2))
        .fold(check, |c, (o, n)| {
            update_word(
                c,
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([n[0], n[1]]),
            )
        })
}

/// A UDP checksum as transmitted: a computed 0 is sent as 0xffff (0 means
/// "no checksum" over IPv4).
#[inline]
pub fn udp_wire(check: u16) -> u16 {
    if check == 0 {
        0xffff
    } else {
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The RFC 1071 example: 0001 f203 f4f5 f6f7 sums to ddf2.
    #[test]
    fn rfc1071_example() {
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), !0xddf2);
        let mut with = data.to_vec();
        with.extend_from_slice(&(!0xddf2u16).to_be_bytes());
        assert_eq!(fold(sum(&with, 0)), 0, "a right checksum folds to 0");
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56], 0), 0x1234 + 0x5600);
        assert_eq!(sum(&[0x12, 0x34], 7), 0x1234 + 7);
    }

    proptest! {
        /// Incremental update agrees with recomputing from scratch, for any
        /// data (odd lengths included) and any aligned edit.
        #[test]
        fn incremental_matches_scratch(
            mut data in proptest::collection::vec(any::<u8>(), 2..600),
            at in any::<prop::sample::Index>(),
            new in proptest::collection::vec(any::<u8>(), 6),
            pseudo in any::<u32>(),
        ) {
            let before = fold(sum(&data, u64::from(pseudo)));
            let words = data.len() / 2;
            let start = at.index(words) * 2;
            let end = (start + 6).min(words * 2);
            let old = data[start..end].to_vec();
            let newb = &new[..end - start];
            data[start..end].copy_from_slice(newb);
            let after = fold(sum(&data, u64::from(pseudo)));
            let inc = update_bytes(before, &old, newb);
            // 0x0000 and 0xffff are the same number in one's complement.
            let norm = |c: u16| if c == 0xffff { 0 } else { c };
            prop_assert_eq!(norm(inc), norm(after));
        }
    }
}
