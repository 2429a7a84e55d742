//! A seeded xorshift generator: the same addresses, tables and keys on every run.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A seeded xorshift64 generator (the seed must not be 0).
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (0 if `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Shuffles `v` in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = usize::try_from(self.below(i as u64 + 1)).unwrap_or(0);
            v.swap(i, j);
        }
    }

    /// A random IPv4 destination, or an IPv6 one inside 2000::/4 (where
    /// the world's IPv6 table lives).
    pub fn destination(&mut self, v4: bool) -> IpAddr {
        if v4 {
            #[expect(clippy::cast_possible_truncation, reason = "random bits")]
            Ipv4Addr::from(self.next_u64() as u32).into()
        } else {
            let hi = (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64());
            Ipv6Addr::from((hi >> 4) | (0x2u128 << 124)).into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn the_sequence_is_fixed_by_the_seed() {
        let mut a = Rng(0x5eed);
        let mut b = Rng(0x5eed);
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        // xorshift64 (13, 7, 17) of 1.
        assert_eq!(Rng(1).next_u64(), 0x4082_2041);
    }
}
