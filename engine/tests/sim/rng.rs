//! The simulator's only source of randomness: a small PRNG seeded from the
//! run's seed, so that a seed replays the same run on every machine and every
//! version of the dependencies (why not `rand`: its generators may change
//! their streams between releases, which would silently break replay).

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and passes BigCrush,
/// which is more than a fault schedule needs.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Derives an independent stream, so that adding a draw in one
    /// component does not shift every other component's choices.
    pub fn fork(&mut self) -> Self {
        Self::new(self.next_u64() ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `low..=high`.
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        let span = high - low;
        if span == u64::MAX {
            return self.next_u64();
        }
        // Multiply-shift instead of modulo: no division on the hot path and
        // a bias of at most span / 2^64, irrelevant here.
        low + ((u128::from(self.next_u64()) * u128::from(span + 1)) >> 64) as u64
    }

    /// An index into a collection of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        assert!(len > 0, "index into an empty collection");
        self.range(0, len as u64 - 1) as usize
    }

    /// True with probability `per_million / 1_000_000`.
    pub fn chance(&mut self, per_million: u32) -> bool {
        self.range(0, 999_999) < u64::from(per_million)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// 64-bit FNV-1a step, used to chain log entries into prefix hashes: two
/// logs with the same chain hash at an index hold the same prefix (up to
/// collisions, which a test run of millions of entries will not meet).
pub fn mix(hash: u64, value: u64) -> u64 {
    let mut hash = hash;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

/// Hash of a byte string (entry payloads).
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut hash = 0xCBF2_9CE4_8422_2325_u64;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01B3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_range_bounds_hold() {
        let mut first = Rng::new(7);
        let mut second = Rng::new(7);
        for _ in 0..1000 {
            let value = first.range(3, 9);
            assert_eq!(value, second.range(3, 9));
            assert!((3..=9).contains(&value));
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }
}
