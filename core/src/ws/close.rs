//! Close codes and the Close frame payload (RFC 6455 §5.5.1, §7.4).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// A close status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the purpose of the connection is fulfilled.
    pub const NORMAL: CloseCode = CloseCode(1000);
    /// 1001: the endpoint is going away (server shutdown, drain).
    pub const GOING_AWAY: CloseCode = CloseCode(1001);
    /// 1002: the peer broke the protocol.
    pub const PROTOCOL: CloseCode = CloseCode(1002);
    /// 1003: a data type we cannot accept.
    pub const UNSUPPORTED: CloseCode = CloseCode(1003);
    /// 1005: no code was given. Never sent on the wire; reported when a Close had no payload.
    pub const NO_STATUS: CloseCode = CloseCode(1005);
    /// 1006: the connection dropped without a Close. Never sent on the wire.
    pub const ABNORMAL: CloseCode = CloseCode(1006);
    /// 1007: a text message was not UTF-8.
    pub const INVALID_DATA: CloseCode = CloseCode(1007);
    /// 1008: the message violates policy.
    pub const POLICY: CloseCode = CloseCode(1008);
    /// 1009: a frame or message exceeds our limits.
    pub const TOO_BIG: CloseCode = CloseCode(1009);
    /// 1011: an unexpected condition on our side (or upstream).
    pub const INTERNAL: CloseCode = CloseCode(1011);
    /// 1013: try again later (over capacity).
    pub const TRY_AGAIN_LATER: CloseCode = CloseCode(1013);
    /// 1014: the upstream server gave a bad answer.
    pub const BAD_GATEWAY: CloseCode = CloseCode(1014);

    /// Whether the code may appear in a Close frame on the wire.
    ///
    /// Allowed: 1000–1003, 1007–1014 (the IANA-registered codes an endpoint may send) and 3000–4999
    /// (registered and private use). 1004–1006 and 1015 are reserved and never sent.
    pub fn is_sendable(self) -> bool {
        matches!(self.0, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A Close frame's status: a code and a UTF-8 reason of at most 123 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code.
    pub code: CloseCode,
    /// Why, for humans. At most [`CloseFrame::MAX_REASON`] bytes on the wire.
    pub reason: String,
}

/// A Close payload that breaks RFC 6455 §5.5.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadClose {
    /// One byte: too short for a code.
    Truncated,
    /// A code that may not be sent.
    Code(u16),
    /// The reason is not UTF-8.
    Reason,
}

impl CloseFrame {
    /// The longest reason that fits a control frame next to the two-byte code.
    pub const MAX_REASON: usize = 123;

    /// A close frame whose reason is cut to [`CloseFrame::MAX_REASON`] bytes on a character boundary.
    pub fn new(code: CloseCode, reason: &str) -> CloseFrame {
        let mut end = reason.len().min(Self::MAX_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        CloseFrame {
            code,
            reason: reason[..end].to_owned(),
        }
    }

    /// Parses a received Close payload. An empty payload is `Ok(None)` (status 1005).
    pub fn parse(payload: &[u8]) -> Result<Option<CloseFrame>, BadClose> {
        match payload {
            [] => Ok(None),
            [_] => Err(BadClose::Truncated),
            [hi, lo, reason @ ..] => {
                let code = CloseCode(u16::from_be_bytes([*hi, *lo]));
                if !code.is_sendable() {
                    return Err(BadClose::Code(code.0));
                }
                let reason = std::str::from_utf8(reason).map_err(|_| BadClose::Reason)?;
                Ok(Some(CloseFrame {
                    code,
                    reason: reason.to_owned(),
                }))
            }
        }
    }

    /// The payload of a Close frame carrying this status.
    pub fn to_payload(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + self.reason.len());
        b.put_u16(self.code.0);
        b.put_slice(self.reason.as_bytes());
        b.freeze()
    }
}

impl fmt::Display for CloseFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reason.is_empty() {
            write!(f, "{}", self.code)
        } else {
            write!(f, "{} {:?}", self.code, self.reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_autobahn_treats_as_valid_and_invalid() {
        for ok in [
            1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
        ] {
            assert!(CloseCode(ok).is_sendable(), "{ok}");
        }
        for bad in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(bad).is_sendable(), "{bad}");
        }
    }

    #[test]
    fn parse_payloads() {
        assert_eq!(CloseFrame::parse(&[]), Ok(None));
        assert_eq!(CloseFrame::parse(&[0x03]), Err(BadClose::Truncated));
        assert_eq!(CloseFrame::parse(&[0x03, 0xEC]), Err(BadClose::Code(1004)));
        assert_eq!(
            CloseFrame::parse(&[0x03, 0xE8, 0xFF]),
            Err(BadClose::Reason)
        );
        let f = CloseFrame::parse(&[0x03, 0xE8, b'o', b'k'])
            .unwrap()
            .unwrap();
        assert_eq!((f.code, f.reason.as_str()), (CloseCode::NORMAL, "ok"));
        assert_eq!(CloseFrame::parse(&f.to_payload()), Ok(Some(f)));
    }

    #[test]
    fn long_reasons_are_cut_on_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes
        let f = CloseFrame::new(CloseCode::POLICY, &reason);
        assert!(f.reason.len() <= CloseFrame::MAX_REASON);
        assert_eq!(f.reason.len(), 122);
        assert!(f.to_payload().len() <= 125);
    }
}
