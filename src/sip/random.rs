//! The SIP layer's randomness: tags, branches, Call-IDs, client nonces and
//! the digest secret come from one CSPRNG per user agent (rand's `StdRng`,
//! ChaCha12), seeded from the operating system, or from a fixed seed so a
//! test replays the same identifiers (quinn-proto's `rng_seed` is the model).
//!
//! RFC 3261 §19.3 asks for at least 32 random bits in a tag and a Call-ID
//! that cannot be guessed; §8.1.1.7 a branch unique in space and time. A
//! tag here carries 64 bits, a branch and a Call-ID 128.

use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

pub(crate) struct Random {
    rng: StdRng,
}

impl Random {
    /// Seeded from `seed` when given (tests), else from the OS.
    pub(crate) fn new(seed: Option<u64>) -> Random {
        let rng = match seed {
            Some(s) => StdRng::seed_from_u64(s),
            None => rand::make_rng(),
        };
        Random { rng }
    }

    pub(crate) fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut b = [0u8; N];
        self.rng.fill_bytes(&mut b);
        b
    }

    /// A number in `0..n` (`n` > 0), for a randomised wait.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.rng.random_range(0..n.max(1))
    }

    /// A tag for From/To (64 random bits, hex).
    pub(crate) fn tag(&mut self) -> String {
        format!("{:016x}", self.rng.next_u64())
    }

    /// A Via branch: the RFC 3261 magic cookie and 128 random bits.
    pub(crate) fn branch(&mut self) -> String {
        format!("z9hG4bK{}", self.hex128())
    }

    /// A Call-ID (128 random bits).
    pub(crate) fn call_id(&mut self) -> String {
        format!("{}@wa-sip-bridge", self.hex128())
    }

    fn hex128(&mut self) -> String {
        format!("{:032x}", u128::from_le_bytes(self.bytes::<16>()))
    }
}

impl std::fmt::Debug for Random {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Random")
    }
}

// `unwrap`/`expect` in these tests are set-up and assertions.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_replays_the_same_identifiers_and_the_os_gives_others() {
        let (mut a, mut b) = (Random::new(Some(7)), Random::new(Some(7)));
        assert_eq!(a.tag(), b.tag());
        assert_eq!(a.branch(), b.branch());
        let (mut x, mut y) = (Random::new(None), Random::new(None));
        assert_ne!(x.call_id(), y.call_id());
    }

    #[test]
    fn identifiers_have_their_shapes() {
        let mut r = Random::new(Some(1));
        let branch = r.branch();
        assert!(branch.starts_with("z9hG4bK") && branch.len() == 7 + 32);
        assert_eq!(r.tag().len(), 16);
        assert!(r.call_id().ends_with("@wa-sip-bridge"));
    }
}
