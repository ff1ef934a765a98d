//! The FDB's keyed hash: SipHash-1-3 of the packed (VLAN, MAC) key
//! under a key the switch draws at random.

use std::hash::{BuildHasher, Hasher};

/// The key of the table's hash. Whoever builds the switch draws it at
/// random (the engine has no source of randomness): a guest that cannot
/// know it cannot choose addresses that share one probe chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HashSeed(pub [u64; 2]);

/// Builds [`KeyHasher`]s with the table's seed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keyed(pub(crate) HashSeed);

impl BuildHasher for Keyed {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher {
            seed: self.0,
            word: 0,
        }
    }
}

/// SipHash-1-3 of the packed 64-bit (VLAN, MAC) key: a keyed function
/// whose output an outsider cannot predict, at a few nanoseconds for the
/// one word it hashes (std's `RandomState` runs the same rounds, but
/// cannot take a caller's key).
pub(crate) struct KeyHasher {
    seed: HashSeed,
    word: u64,
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        let [k0, k1] = self.seed.0;
        siphash::<1, 3>(k0, k1, self.word)
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; other writes still mix in.
        for b in bytes {
            self.word = self.word.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.word = self.word.rotate_left(32) ^ v;
    }
}

#[inline(always)]
fn sip_round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-C-D of one 8-byte message `m` (read little-endian) under the
/// key (k0, k1).
#[inline(always)]
fn siphash<const C: usize, const D: usize>(k0: u64, k1: u64, m: u64) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    // The message block, then the final block holding only the length.
    for block in [m, 8u64 << 56] {
        v[3] ^= block;
        for _ in 0..C {
            sip_round(&mut v);
        }
        v[0] ^= block;
    }
    v[2] ^= 0xff;
    for _ in 0..D {
        sip_round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")]
    #[allow(deprecated)]
    fn siphash_matches_the_reference() {
        // std's SipHasher is SipHash-2-4; the same code with 1 and 3
        // rounds is what the table uses.
        let cases: [(u64, u64, u64); 3] = [
            (0, 0, 0),
            (1, 2, 3),
            (u64::MAX, 0x0123_4567, 0xdead_beef_0000_0042),
        ];
        for (k0, k1, m) in cases {
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write(&m.to_le_bytes());
            assert_eq!(siphash::<2, 4>(k0, k1, m), h.finish());
        }
    }

    #[test]
    fn the_hash_depends_on_the_seed() {
        let a = Keyed(HashSeed([1, 2]));
        let b = Keyed(HashSeed([1, 3]));
        let k = 0x0200_0000_0001u64;
        assert_ne!(a.hash_one(k), b.hash_one(k));
        assert_eq!(a.hash_one(k), Keyed(HashSeed([1, 2])).hash_one(k));
        // Keys that differ in one bit land far apart under either seed.
        let k2 = 0x0200_0000_0003u64;
        assert_ne!(a.hash_one(k) & 0xffff, a.hash_one(k2) & 0xffff);
    }
}
