//! [`OsEntropy`]: the core's [`Entropy`] from the operating system's CSPRNG.

use wsbridge_core::Entropy;

/// Bytes fetched from the OS per system call.
const POOL: usize = 256;

/// Unpredictable bytes from the OS CSPRNG (`getrandom(2)` on Linux), fetched [`POOL`] (256) bytes per
/// system call so that a client masking many small frames does not make one syscall per frame.
///
/// Every byte is handed out at most once. Requests larger than the pool are filled straight from the OS.
/// The pool lives in process memory, so the bytes are as secret as the process (fine for masking keys and
/// handshake nonces, which the peer sees anyway).
///
/// # Panics
/// If the OS cannot provide randomness (no `getrandom(2)` and no `/dev/urandom`): there is no safe fallback
/// for masking keys, and such a system cannot run a WebSocket client correctly.
pub struct OsEntropy {
    pool: [u8; POOL],
    /// `pool[pos..]` is unused.
    pos: usize,
}

impl OsEntropy {
    /// An empty source; the first request fetches from the OS.
    pub fn new() -> Self {
        OsEntropy {
            pool: [0; POOL],
            pos: POOL,
        }
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

impl Entropy for OsEntropy {
    fn fill(&mut self, mut dest: &mut [u8]) {
        if dest.len() > POOL {
            os_fill(dest);
            return;
        }
        while !dest.is_empty() {
            if self.pos == POOL {
                os_fill(&mut self.pool);
                self.pos = 0;
            }
            let n = dest.len().min(POOL - self.pos);
            let (head, rest) = dest.split_at_mut(n);
            head.copy_from_slice(&self.pool[self.pos..self.pos + n]);
            // Used bytes are wiped so they cannot be handed out again or read back later.
            self.pool[self.pos..self.pos + n].fill(0);
            self.pos += n;
            dest = rest;
        }
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
                // 128 random bits: all zero or a repeat would mean the pool was reused or not filled.
                assert!(buf.iter().any(|&b| b != 0));
                assert!(seen.insert(buf[..16].to_vec()));
            }
        }
        let keys: std::collections::HashSet<[u8; 4]> = (0..200).map(|_| e.key4()).collect();
        assert!(keys.len() > 190, "masking keys repeat: {}", keys.len());
    }
}
