//! The table's hash of socket cookies.

use std::{
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
};

pub type CookieMap<V> = HashMap<u64, V, BuildHasherDefault<CookieHasher>>;

/// Socket cookies are kernel-made counters (handed out in per-CPU runs), not
/// attacker-chosen keys. Hashed to themselves, sockets made together sit
/// together in the table, and events come in such runs (a burst of
/// connects, timers armed together): lookups hit the cache instead of
/// missing it once per event. Only the top 7 bits, which the table compares
/// in groups, are mixed.
#[derive(Default)]
pub struct CookieHasher(u64);

impl Hasher for CookieHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Not used by u64 keys; any other key still hashes soundly.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(MIX);
        }
    }

    fn write_u64(&mut self, cookie: u64) {
        self.0 = cookie;
    }

    fn finish(&self) -> u64 {
        const LOW: u64 = u64::MAX >> 7;
        (self.0 & LOW) | (self.0.wrapping_mul(MIX) & !LOW)
    }
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// Consecutive cookies keep consecutive bucket bits (locality) and get
    /// distinct top bits (what the table's group match compares).
    #[test]
    fn cookie_hash_keeps_runs_together_and_mixes_the_top() {
        let hash = |c: u64| {
            let mut h = CookieHasher::default();
            h.write_u64(c);
            h.finish()
        };
        let base = 0x1_0000_1000u64;
        let tops: HashSet<u64> = (0..64)
            .map(|i| {
                assert_eq!(hash(base + i) & 0xffff, (base + i) & 0xffff);
                hash(base + i) >> 57
            })
            .collect();
        assert!(tops.len() > 32, "top 7 bits barely vary: {tops:?}");
    }
}
