//! Randomness enters the core only through [`Entropy`].
//!
//! The core never draws randomness itself: WebSocket masking keys, handshake keys and connection ids come
//! from an `Entropy` the driver injects, so tests can replay a session byte for byte with a fixed source.
//!
//! With the cargo feature `os-entropy` (off by default) this module also offers `OsEntropy`, the
//! OS-backed source every runtime injects. It lives here so that both runtimes share one definition
//! without depending on each other; nothing in the core itself ever constructs it, and a build without
//! the feature has no OS randomness at all.

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

#[cfg(feature = "os-entropy")]
pub use os::OsEntropy;

/// [`OsEntropy`]: the core's [`Entropy`] from the operating system's CSPRNG (feature `os-entropy`).
#[cfg(feature = "os-entropy")]
mod os {
    use std::cell::RefCell;

    use super::Entropy;

    /// Bytes fetched from the OS per system call.
    const POOL: usize = 256;

    /// Unpredictable bytes from the OS CSPRNG (`getrandom(2)` on Linux), fetched `POOL` (256) bytes
    /// per system call so that a client masking many small frames does not make one syscall per frame.
    ///
    /// The pool is the thread's, shared by every `OsEntropy` used on it: a source is a zero-sized handle,
    /// so a connection that keeps one (a client masking its frames) costs no memory for it. Every byte
    /// is handed out at most once. Requests larger than the pool are filled straight from the OS. The
    /// pool lives in process memory, so the bytes are as secret as the process (fine for masking keys
    /// and handshake nonces, which the peer sees anyway).
    ///
    /// # Panics
    /// If the OS cannot provide randomness (no `getrandom(2)` and no `/dev/urandom`): there is no safe
    /// fallback for masking keys, and such a system cannot run a WebSocket client correctly.
    pub struct OsEntropy {
        _handle: (),
    }

    /// A thread's pool of bytes from the OS.
    struct Pool {
        bytes: [u8; POOL],
        /// `bytes[pos..]` is unused.
        pos: usize,
    }

    thread_local! {
        static THREAD_POOL: RefCell<Pool> = const {
            RefCell::new(Pool {
                bytes: [0; POOL],
                pos: POOL,
            })
        };
    }

    impl OsEntropy {
        /// A source drawing on the calling thread's pool; the first request on a thread fetches from
        /// the OS.
        pub fn new() -> Self {
            OsEntropy { _handle: () }
        }
    }

    impl Default for OsEntropy {
        fn default() -> Self {
            Self::new()
        }
    }

    impl std::fmt::Debug for OsEntropy {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            // Never print the pool.
            f.debug_struct("OsEntropy").finish_non_exhaustive()
        }
    }

    fn os_fill(dest: &mut [u8]) {
        if let Err(e) = getrandom::fill(dest) {
            panic!("the OS random number generator failed: {e}");
        }
    }

    impl Pool {
        fn fill(&mut self, mut dest: &mut [u8]) {
            while !dest.is_empty() {
                if self.pos == POOL {
                    os_fill(&mut self.bytes);
                    self.pos = 0;
                }
                let n = dest.len().min(POOL - self.pos);
                let (head, rest) = dest.split_at_mut(n);
                head.copy_from_slice(&self.bytes[self.pos..self.pos + n]);
                // Used bytes are wiped so they cannot be handed out again or read back later.
                self.bytes[self.pos..self.pos + n].fill(0);
                self.pos += n;
                dest = rest;
            }
        }
    }

    impl Entropy for OsEntropy {
        fn fill(&mut self, dest: &mut [u8]) {
            if dest.len() > POOL {
                os_fill(dest);
                return;
            }
            THREAD_POOL.with_borrow_mut(|pool| pool.fill(dest));
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fills_every_size_and_never_repeats_a_window() {
            let mut e = OsEntropy::new();
            let mut seen = std::collections::HashSet::new();
            for len in [0usize, 1, 3, 4, 16, 255, 256, 257, 1000] {
                let mut buf = vec![0u8; len];
                e.fill(&mut buf);
                if len >= 16 {
                    // 128 random bits: all zero or a repeat would mean the pool was reused or not
                    // filled.
                    assert!(buf.iter().any(|&b| b != 0));
                    assert!(seen.insert(buf[..16].to_vec()));
                }
            }
            let keys: std::collections::HashSet<[u8; 4]> = (0..200).map(|_| e.key4()).collect();
            assert!(keys.len() > 190, "masking keys repeat: {}", keys.len());
        }

        #[test]
        fn sources_share_the_thread_pool_and_cost_nothing_each() {
            assert_eq!(std::mem::size_of::<OsEntropy>(), 0);
            let (mut a, mut b) = (OsEntropy::new(), OsEntropy::new());
            let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
            a.fill(&mut x);
            b.fill(&mut y);
            assert_ne!(x, y, "two sources handed out the same bytes");
        }
    }
}
