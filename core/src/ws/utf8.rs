//! Incremental UTF-8 validation across fragment and read boundaries.
//!
//! A text message arrives in pieces; each piece is checked as it arrives and the check fails at the first
//! byte that cannot begin or continue a valid sequence, even if the sequence is not complete yet (RFC 6455
//! §8.1 "fail fast"). At most three bytes of an unfinished sequence are carried between pieces.

/// The input is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a byte stream piece by piece.
#[derive(Debug, Clone, Default)]
pub struct Utf8Validator {
    /// The start of a sequence the previous piece ended in the middle of.
    carry: [u8; 4],
    carry_len: u8,
}

impl Utf8Validator {
    /// A validator at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks the next piece of the stream.
    pub fn feed(&mut self, mut input: &[u8]) -> Result<(), InvalidUtf8> {
        if self.carry_len > 0 {
            // Complete the carried sequence byte by byte: at most three more bytes.
            while self.carry_len > 0 {
                let Some((&b, rest)) = input.split_first() else {
                    return Ok(());
                };
                input = rest;
                self.carry[usize::from(self.carry_len)] = b;
                self.carry_len += 1;
                match std::str::from_utf8(&self.carry[..usize::from(self.carry_len)]) {
                    Ok(_) => self.carry_len = 0,
                    Err(e) if e.error_len().is_some() => return Err(InvalidUtf8),
                    Err(_) => {}
                }
            }
        }
        match std::str::from_utf8(input) {
            Ok(_) => Ok(()),
            Err(e) => match e.error_len() {
                Some(_) => Err(InvalidUtf8),
                None => {
                    // A valid but unfinished sequence at the end (the standard library has already
                    // checked that the bytes so far can still start a valid sequence).
                    let tail = &input[e.valid_up_to()..];
                    self.carry[..tail.len()].copy_from_slice(tail);
                    self.carry_len = tail.len() as u8;
                    Ok(())
                }
            },
        }
    }

    /// Ends the stream: an unfinished sequence is an error.
    pub fn finish(&mut self) -> Result<(), InvalidUtf8> {
        let unfinished = self.carry_len != 0;
        self.carry_len = 0;
        if unfinished {
            Err(InvalidUtf8)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check_pieces(pieces: &[&[u8]]) -> Result<(), InvalidUtf8> {
        let mut v = Utf8Validator::new();
        for p in pieces {
            v.feed(p)?;
        }
        v.finish()
    }

    #[test]
    fn split_sequences_are_joined() {
        let s = "κόσμε 𝄞".as_bytes();
        for cut in 0..=s.len() {
            assert_eq!(check_pieces(&[&s[..cut], &s[cut..]]), Ok(()), "cut {cut}");
        }
        let bytes_one_by_one: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(check_pieces(&bytes_one_by_one), Ok(()));
    }

    #[test]
    fn fails_fast_inside_an_unfinished_sequence() {
        // U+10FFFF + 1: F4 90 is already impossible, before the sequence completes.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(&[0xF4]), Ok(()));
        assert_eq!(v.feed(&[0x90]), Err(InvalidUtf8));
        // A surrogate: ED A0.
        let mut v = Utf8Validator::new();
        assert_eq!(v.feed(b"ok\xED\xA0"), Err(InvalidUtf8));
    }

    #[test]
    fn truncated_at_the_end_is_an_error() {
        assert_eq!(check_pieces(&[b"abc\xE2\x82"]), Err(InvalidUtf8));
    }

    proptest! {
        #[test]
        fn agrees_with_std_under_any_split(bytes in proptest::collection::vec(any::<u8>(), 0..64),
                                            cuts in proptest::collection::vec(0usize..64, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for c in cuts {
                pieces.push(&bytes[start..c]);
                start = c;
            }
            pieces.push(&bytes[start..]);
            prop_assert_eq!(check_pieces(&pieces).is_ok(), std::str::from_utf8(&bytes).is_ok());
        }

        #[test]
        fn valid_strings_pass_under_any_split(s in "\\PC{0,40}", cut in 0usize..200) {
            let b = s.as_bytes();
            let cut = cut.min(b.len());
            prop_assert_eq!(check_pieces(&[&b[..cut], &b[cut..]]), Ok(()));
        }
    }
}
