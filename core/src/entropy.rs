//! Randomness enters the core only through [`Entropy`].
//!
//! The core never draws randomness itself: WebSocket masking keys, handshake keys and connection ids come
//! from an `Entropy` the driver injects, so tests can replay a session byte for byte with a fixed source.

/// A source of unpredictable bytes, owned by whoever drives a session.
///
/// Masking keys (RFC 6455 §5.3) must not be predictable by the peer; drivers back this with the operating
/// system's CSPRNG or a CSPRNG seeded from it. Tests use [`CounterEntropy`].
pub trait Entropy {
    /// Fills `dest` entirely.
    fn fill(&mut self, dest: &mut [u8]);

    /// Four bytes, e.g. a masking key.
    fn key4(&mut self) -> [u8; 4] {
        let mut k = [0; 4];
        self.fill(&mut k);
        k
    }
}

impl<E: Entropy + ?Sized> Entropy for &mut E {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest)
    }
}

impl<E: Entropy + ?Sized> Entropy for Box<E> {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest)
    }
}

/// A deterministic source for tests and fuzzing: a 64-bit counter run through SplitMix64.
///
/// Never use it on a real connection: its output is predictable.
#[derive(Debug, Clone, Default)]
pub struct CounterEntropy(pub u64);

impl Entropy for CounterEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
        }
    }
}
