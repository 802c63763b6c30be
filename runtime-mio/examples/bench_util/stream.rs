//! The deterministic byte stream `bench_bulk` sends and its checksum.

/// Length of the pattern the byte stream repeats: a prime, so a lost, doubled or reordered piece of
/// any length below it shifts everything after it.
pub const PATTERN_LEN: usize = 1_048_573;

/// The stream's bytes: byte `i` of a stream is `pattern[i % PATTERN_LEN]`. `pattern()` is
/// `PATTERN_LEN + extra` long, so any `extra`-byte write is one slice of it.
pub fn pattern(extra: usize) -> Vec<u8> {
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    let mut v: Vec<u8> = (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    v.extend_from_within(..extra);
    v
}

/// A 64-bit checksum of a byte stream, the same whatever the chunking: four independent lanes of
/// `(lane ^ word) * odd` over 32-byte blocks, so it runs at memory speed and a mismatch anywhere shows.
#[derive(Clone)]
pub struct Checksum {
    lanes: [u64; 4],
    buf: [u8; 32],
    buf_len: usize,
    total: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            lanes: [1, 2, 3, 4],
            buf: [0; 32],
            buf_len: 0,
            total: 0,
        }
    }
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Checksum {
    fn block(&mut self, b: &[u8]) {
        for (k, lane) in self.lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().expect("8 bytes"));
            *lane = (*lane ^ w).wrapping_mul(K);
        }
    }

    /// Adds the next bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.buf_len > 0 {
            let take = (32 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 32 {
                return;
            }
            let b = self.buf;
            self.block(&b);
            self.buf_len = 0;
        }
        let mut blocks = data.chunks_exact(32);
        for b in &mut blocks {
            self.block(b);
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// Bytes seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The checksum of everything seen.
    pub fn finish(&self) -> u64 {
        let mut h = self.total.wrapping_mul(K);
        for &b in &self.buf[..self.buf_len] {
            h = (h ^ u64::from(b)).wrapping_mul(K);
        }
        for &l in &self.lanes {
            h = (h.rotate_left(23) ^ l).wrapping_mul(K);
        }
        h
    }
}

/// The checksum of the first `len` bytes of the stream.
pub fn expected_checksum(pat: &[u8], len: u64) -> u64 {
    let mut c = Checksum::default();
    let mut pos = 0u64;
    while pos < len {
        let off = (pos % PATTERN_LEN as u64) as usize;
        let n = (PATTERN_LEN - off).min((len - pos) as usize);
        c.update(&pat[off..off + n]);
        pos += n as u64;
    }
    c.finish()
}
