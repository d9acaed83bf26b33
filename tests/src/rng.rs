//! A deterministic pseudo-random generator for property loops.

/// A deterministic pseudo-random generator (SplitMix64) for property loops.
pub struct Rng(pub u64);

impl Rng {
    /// Seeded from the clock: a new sequence every run, printed by the
    /// caller so that a failure can be replayed with `Rng(seed)`.
    pub fn from_clock() -> (u64, Rng) {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        (seed, Rng(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// `digits` random hex digits from the kernel (container ids, pod uids:
/// unique across runs and concurrent tests).
pub fn hex(digits: usize) -> String {
    use std::io::Read as _;
    let mut bytes = vec![0u8; digits.div_ceil(2)];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(digits);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_bounded() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        for _ in 0..100 {
            let x = a.below(10);
            assert_eq!(x, b.below(10));
            assert!(x < 10);
        }
    }
}
