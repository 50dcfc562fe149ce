//! The sampler's random numbers: a fixed generator, so that a seed draws the same tokens on
//! every run and platform, whatever our dependencies' versions.

/// xoshiro256** 1.0 (Blackman and Vigna, "Scrambled linear pseudorandom number generators",
/// 2018), its state filled from the 64-bit seed by splitmix64, as its authors recommend.
pub(crate) struct Xoshiro256StarStar {
    s: [u64; 4],
}

impl Xoshiro256StarStar {
    pub(crate) fn seed_from_u64(seed: u64) -> Self {
        let mut state = seed;
        let mut splitmix64 = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [splitmix64(), splitmix64(), splitmix64(), splitmix64()],
        }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed for requests that gave none: the clock, hashed with the process's random keys (the
/// standard library draws those from the OS), so two requests in the same instant differ too.
pub(crate) fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(nanos);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generator_matches_the_published_sequences() {
        // splitmix64 from 0, then xoshiro256** from the state [1, 2, 3, 4].
        let mut g = Xoshiro256StarStar::seed_from_u64(0);
        assert_eq!(g.s[0], 0xE220_A839_7B1D_CDAF);
        g.s = [1, 2, 3, 4];
        let first: Vec<u64> = (0..4).map(|_| g.next_u64()).collect();
        assert_eq!(first, vec![11520, 0, 1509978240, 1215971899390074240]);
        for _ in 0..1000 {
            let u = g.next_f64();
            assert!((0.0..1.0).contains(&u));
        }
    }
}
