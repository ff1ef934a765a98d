//! Internet checksums: from scratch (RFC 1071) and incremental (RFC 1624).

use std::net::Ipv4Addr;

/// The one's-complement sum of `data` as big-endian 16-bit words (an odd
/// trailing byte is padded with zero), not yet folded.
pub(crate) fn sum(data: &[u8]) -> u64 {
    let mut acc: u64 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a wide sum into 16 bits with end-around carry.
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The checksum field value for `data` plus an already summed pseudo-header.
pub(crate) fn finish(pseudo: u64, data: &[u8]) -> u16 {
    !fold(pseudo + sum(data))
}

/// The IPv4 pseudo-header sum for a transport protocol.
pub(crate) fn pseudo_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u64 {
    sum(&src.octets()) + sum(&dst.octets()) + u64::from(proto) + u64::from(len)
}

/// RFC 1624 equation 3: the new checksum after one 16-bit word of the
/// covered data changed from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
pub(crate) fn update_word(check: u16, old: u16, new: u16) -> u16 {
    !fold(u64::from(!check) + u64::from(!old) + u64::from(new))
}

/// [`update_word`] over a run of words. `old` and `new` must have the same
/// even length and start at an even offset from the start of the covered
/// data; callers guarantee both.
pub(crate) fn update_bytes(check: u16, old: &[u8], new: &[u8]) -> u16 {
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
pub(crate) fn udp_wire(check: u16) -> u16 {
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
        assert_eq!(fold(sum(&data)), 0xddf2);
        assert_eq!(finish(0, &data), !0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
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
            let before = finish(u64::from(pseudo), &data);
            let words = data.len() / 2;
            let start = at.index(words) * 2;
            let end = (start + 6).min(words * 2);
            let old = data[start..end].to_vec();
            let newb = &new[..end - start];
            data[start..end].copy_from_slice(newb);
            let after = finish(u64::from(pseudo), &data);
            let inc = update_bytes(before, &old, newb);
            // 0x0000 and 0xffff are the same number in one's complement.
            let norm = |c: u16| if c == 0xffff { 0 } else { c };
            prop_assert_eq!(norm(inc), norm(after));
        }
    }
}
