//! The WebSocket frame header (RFC 6455 §5.2): parsing and encoding, nothing else.
//!
//! Parsing reports what the header says; whether that is allowed in context (a continuation with no message
//! open, an unmasked client frame, a frame over the size limit) is the decoder's business.

/// A frame opcode. Reserved opcodes are kept as [`OpCode::Reserved`] so the decoder can fail with 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpCode {
    /// 0x0: continues the message the previous data frame started.
    Continuation,
    /// 0x1: starts a text message.
    Text,
    /// 0x2: starts a binary message.
    Binary,
    /// 0x8: close.
    Close,
    /// 0x9: ping.
    Ping,
    /// 0xA: pong.
    Pong,
    /// 0x3–0x7 and 0xB–0xF.
    Reserved(u8),
}

impl OpCode {
    /// The opcode of the low four bits of `b`.
    pub fn from_u8(b: u8) -> OpCode {
        match b & 0x0F {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            other => OpCode::Reserved(other),
        }
    }

    /// The four-bit wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0x0,
            OpCode::Text => 0x1,
            OpCode::Binary => 0x2,
            OpCode::Close => 0x8,
            OpCode::Ping => 0x9,
            OpCode::Pong => 0xA,
            OpCode::Reserved(b) => b & 0x0F,
        }
    }

    /// Close, Ping and Pong (and reserved 0xB–0xF): frames that may not be fragmented.
    pub fn is_control(self) -> bool {
        self.as_u8() & 0x8 != 0
    }
}

/// The longest header: 2 bytes, 8 of extended length, 4 of masking key.
pub const MAX_HEADER_LEN: usize = 14;

/// Largest payload a control frame may carry (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// One frame header as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Last frame of its message.
    pub fin: bool,
    /// The three RSV bits, in the low bits (RSV1 = 0b100). Non-zero only with a negotiated extension.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, present on every client-to-server frame.
    pub mask: Option<[u8; 4]>,
    /// Payload length in bytes.
    pub payload_len: u64,
}

/// Why a header could not be parsed at all.
///
/// A length in a longer form than needed is accepted: RFC 6455 puts the minimal form on the sender, and
/// refusing it buys no safety.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// A 64-bit length with the most significant bit set (RFC 6455 §5.2).
    LengthOverflow,
}

impl FrameHeader {
    /// Parses a header from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` holds only part of a header, else the header and its length in bytes.
    pub fn parse(buf: &[u8]) -> Result<Option<(FrameHeader, usize)>, HeaderError> {
        let (&b0, &b1) = match (buf.first(), buf.get(1)) {
            (Some(b0), Some(b1)) => (b0, b1),
            _ => return Ok(None),
        };
        let masked = b1 & 0x80 != 0;
        let (payload_len, len_bytes) = match b1 & 0x7F {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
                None => return Ok(None),
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    let len = u64::from_be_bytes(be);
                    if len >> 63 != 0 {
                        return Err(HeaderError::LengthOverflow);
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 0),
        };
        let mut header_len = 2 + len_bytes;
        let mask = if masked {
            let Some(k) = buf.get(header_len..header_len + 4) else {
                return Ok(None);
            };
            header_len += 4;
            Some([k[0], k[1], k[2], k[3]])
        } else {
            None
        };
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 0x7,
            opcode: OpCode::from_u8(b0),
            mask,
            payload_len,
        };
        Ok(Some((header, header_len)))
    }

    /// Writes the header into `out` with the shortest length form; returns the number of bytes written.
    pub fn encode(&self, out: &mut [u8; MAX_HEADER_LEN]) -> usize {
        out[0] = (u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | self.opcode.as_u8();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut n = 2;
        if self.payload_len < 126 {
            out[1] = mask_bit | self.payload_len as u8;
        } else if let Ok(len) = u16::try_from(self.payload_len) {
            out[1] = mask_bit | 126;
            out[2..4].copy_from_slice(&len.to_be_bytes());
            n = 4;
        } else {
            out[1] = mask_bit | 127;
            out[2..10].copy_from_slice(&self.payload_len.to_be_bytes());
            n = 10;
        }
        if let Some(key) = self.mask {
            out[n..n + 4].copy_from_slice(&key);
            n += 4;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc_examples() {
        // RFC 6455 §5.7: a single-frame unmasked text message "Hello".
        let (h, n) = FrameHeader::parse(&[0x81, 0x05, 0x48]).unwrap().unwrap();
        assert_eq!(n, 2);
        assert_eq!(
            (h.fin, h.opcode, h.payload_len, h.mask),
            (true, OpCode::Text, 5, None)
        );
        // Masked "Hello".
        let (h, n) = FrameHeader::parse(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!((n, h.mask), (6, Some([0x37, 0xfa, 0x21, 0x3d])));
        // 256 bytes binary: 16-bit length.
        let (h, n) = FrameHeader::parse(&[0x82, 0x7E, 0x01, 0x00])
            .unwrap()
            .unwrap();
        assert_eq!((n, h.payload_len), (4, 256));
        // 64 KiB binary: 64-bit length.
        let (h, n) = FrameHeader::parse(&[0x82, 0x7F, 0, 0, 0, 0, 0, 1, 0, 0])
            .unwrap()
            .unwrap();
        assert_eq!((n, h.payload_len), (10, 65536));
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let full = [0x82u8, 0xFF, 0, 0, 0, 0, 0, 1, 0, 0, 1, 2, 3, 4];
        for cut in 0..full.len() {
            assert_eq!(FrameHeader::parse(&full[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(FrameHeader::parse(&full).unwrap().is_some());
    }

    #[test]
    fn top_bit_of_64_bit_length_is_an_error() {
        let buf = [0x82u8, 0x7F, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::parse(&buf), Err(HeaderError::LengthOverflow));
    }

    fn any_header() -> impl Strategy<Value = FrameHeader> {
        (
            any::<bool>(),
            0u8..8,
            0u8..16,
            proptest::option::of(any::<[u8; 4]>()),
            prop_oneof![0u64..126, 126u64..65536, 65536u64..(1 << 63)],
        )
            .prop_map(|(fin, rsv, op, mask, payload_len)| FrameHeader {
                fin,
                rsv,
                opcode: OpCode::from_u8(op),
                mask,
                payload_len,
            })
    }

    proptest! {
        #[test]
        fn encode_parse_round_trip(h in any_header()) {
            let mut out = [0u8; MAX_HEADER_LEN];
            let n = h.encode(&mut out);
            prop_assert_eq!(FrameHeader::parse(&out[..n]), Ok(Some((h, n))));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = FrameHeader::parse(&bytes);
        }
    }
}
