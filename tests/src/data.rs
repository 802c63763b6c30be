//! Test payloads both ends can reproduce and check.

/// Deterministic pseudo-random bytes (xorshift), so the receiving end can check a hash.
pub fn random_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}

/// The SHA-1 of `data`, hex.
pub fn sha1(data: &[u8]) -> String {
    sha1_smol::Sha1::from(data).digest().to_string()
}
