//! XOR masking (RFC 6455 §5.3), in place, a machine word at a time.
//!
//! Masking is an involution: applying the same key twice gives the input back. A frame's payload may
//! be masked in several pieces as it arrives: each piece is masked with the key [`rotate`]d by how far
//! into the payload the piece starts, so the key stays aligned across pieces.

/// `key` as seen from `n` bytes further into the payload: its first byte masks payload byte `n`.
pub fn rotate(key: [u8; 4], n: u64) -> [u8; 4] {
    let r = (n % 4) as usize;
    [key[r], key[(r + 1) % 4], key[(r + 2) % 4], key[(r + 3) % 4]]
}

/// XORs `buf` with `key`, where `key[0]` masks `buf[0]`.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let word = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = buf.chunks_exact_mut(8);
    for chunk in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    // The tail starts at a multiple of 8 from buf[0], so the key is still aligned with it.
    for (i, b) in words.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: u64) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[((offset + i as u64) % 4) as usize];
        }
    }

    #[test]
    fn rfc_hello() {
        let mut payload = *b"Hello";
        apply_mask(&mut payload, [0x37, 0xfa, 0x21, 0x3d]);
        assert_eq!(payload, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    proptest! {
        #[test]
        fn matches_bytewise_xor(data in proptest::collection::vec(any::<u8>(), 0..100),
                                key in any::<[u8; 4]>(), offset in 0u64..1000) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask(&mut fast, rotate(key, offset));
            naive(&mut slow, key, offset);
            prop_assert_eq!(fast, slow);
        }

        #[test]
        fn is_an_involution(data in proptest::collection::vec(any::<u8>(), 0..100),
                            key in any::<[u8; 4]>()) {
            let mut buf = data.clone();
            apply_mask(&mut buf, key);
            apply_mask(&mut buf, key);
            prop_assert_eq!(buf, data);
        }

        #[test]
        fn any_split_gives_the_same_result(data in proptest::collection::vec(any::<u8>(), 0..100),
                                           key in any::<[u8; 4]>(), cut in 0usize..100) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply_mask(&mut whole, key);
            let mut split = data.clone();
            let (a, b) = split.split_at_mut(cut);
            apply_mask(a, key);
            apply_mask(b, rotate(key, cut as u64));
            prop_assert_eq!(whole, split);
        }
    }
}
