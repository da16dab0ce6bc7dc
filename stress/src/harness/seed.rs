//! The one seed derivation of `stress`: every seeded choice of a suite (workloads, agents,
//! batches, fault points) comes from the run's seed through [`splitmix64`], either as an
//! [`Rng`] stream or as a seed handed to a library's own generator ([`derive`]).

/// A small seeded generator (SplitMix64): every workload choice of the daemon suites.
pub(crate) struct Rng(u64);

/// SplitMix64: a cheap, well-mixed hash of a 64-bit value; the step of [`Rng`].
pub(crate) fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// The generator of `stream` under `seed`: independent streams for agents, batches.
    pub(crate) fn new(seed: u64, stream: u64) -> Rng {
        Rng(splitmix64(seed ^ splitmix64(stream.wrapping_add(0x5EED))))
    }

    /// The generator of `stream` under `seed` without the stream offset of [`Rng::new`]:
    /// the `daemon-crash` suite's streams (kept, so its seeds replay as before).
    pub(crate) fn unsalted(seed: u64, stream: u64) -> Rng {
        Rng(splitmix64(seed ^ splitmix64(stream)))
    }

    /// The next value.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix64(self.0)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Uniform index into a slice of length `n` (0 when empty).
    pub(crate) fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi.saturating_sub(lo) + 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
}

/// A token derived from the seed that every title of a run carries.
pub(crate) fn seed_token(seed: u64) -> String {
    format!("{:08x}", splitmix64(seed) as u32)
}

/// The seed of `stream` under the run's `seed`, for a library that takes a `u64` seed (a
/// `fastrand::Rng`, a workload generator): the same derivation as [`Rng::new`].
pub(crate) fn derive(seed: u64, stream: u64) -> u64 {
    splitmix64(seed ^ splitmix64(stream.wrapping_add(0x5EED)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_seeded_and_bounded() {
        let mut a = Rng::new(7, 1);
        let mut b = Rng::new(7, 1);
        let mut c = Rng::new(7, 2);
        let xs: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let zs: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
        assert!((0..1000).all(|_| a.below(7) < 7));
        assert_eq!(a.below(0), 0);
    }

    #[test]
    fn derive_is_the_rng_s_starting_state() {
        assert_eq!(Rng::new(9, 3).0, derive(9, 3));
        assert_ne!(derive(9, 3), derive(9, 4));
        assert_ne!(derive(9, 3), derive(10, 3));
    }
}
