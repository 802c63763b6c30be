//! The body of the `frame_differential` fuzz target, kept here because its reference, tungstenite, is a
//! dev-dependency of the core (and a dependency of the fuzz crate): `fuzz/fuzz_targets/frame_differential.rs`
//! and `core/tests/fuzz_corpus.rs` both include this file.
//!
//! Our server-side [`Decoder`] and a tungstenite server read the same client bytes:
//! - byte 0 bit 7 clear: the rest describes *valid* frames (see [`valid_stream`]); both must decode the
//!   very same messages, and neither may fail;
//! - byte 0 bit 7 set: the rest is raw bytes, fed in chunks picked by byte 0. Up to the first Close or
//!   error, the messages must agree, and whatever tungstenite accepts we accept too.
//!
//! Deliberate differences, allowed here: we check the UTF-8 of a text message as its bytes arrive, so on
//! a cut stream we may refuse a frame tungstenite is still waiting for (it never delivers it either);
//! close code 1014 (IANA "Bad Gateway", registered after RFC 6455)
//! is valid for us and not for tungstenite; and tungstenite refuses a Close with a code below 1000 or
//! above 4999 as we do. Caps are set far above any input, so size limits never differ.

use std::io::{self, Read, Write};

use bytes::BytesMut;
use tungstenite::protocol::{Message, Role, WebSocket as TWebSocket, WebSocketConfig};
use wsbridge_core::ws::{Decoded, Decoder, ProtocolError};

/// A message as both sides see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Text(Vec<u8>),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
}

/// Client bytes handed out in pieces; then `WouldBlock`. Writes (pongs, the close reply) are dropped.
struct Pieces {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl Read for Pieces {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.data.len() - self.pos;
        if left == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = left.min(buf.len()).min(self.step);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl Write for Pieces {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

const BIG: usize = 1 << 24;

/// tungstenite's messages, and whether it stopped on an error (not the end of the input).
fn tungstenite_reads(data: &[u8], step: usize) -> (Vec<Msg>, Option<String>) {
    let config = WebSocketConfig::default()
        .max_message_size(Some(BIG))
        .max_frame_size(Some(BIG));
    let stream = Pieces {
        data: data.to_vec(),
        pos: 0,
        step: step.max(1),
    };
    let mut ws = TWebSocket::from_raw_socket(stream, Role::Server, Some(config));
    let mut out = Vec::new();
    loop {
        match ws.read() {
            Ok(m) => {
                let m = match m {
                    Message::Text(t) => Msg::Text(t.as_bytes().to_vec()),
                    Message::Binary(b) => Msg::Binary(b.to_vec()),
                    Message::Ping(p) => Msg::Ping(p.to_vec()),
                    Message::Pong(p) => Msg::Pong(p.to_vec()),
                    Message::Close(f) => {
                        Msg::Close(f.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())))
                    }
                    Message::Frame(_) => unreachable!("tungstenite reads no raw frames"),
                };
                // A Close with a code it does not allow, tungstenite answers with 1002 and hands out
                // its own answer: that is its refusal.
                if m == Msg::Close(Some((1002, "Protocol violation".into()))) {
                    return (out, Some("close code not allowed".into()));
                }
                let close = matches!(m, Msg::Close(_));
                out.push(m);
                if close {
                    return (out, None);
                }
            }
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return (out, None)
            }
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

/// Our decoder's messages (binary pieces joined), and its error if it failed.
fn our_reads(data: &[u8], step: usize) -> (Vec<Msg>, Option<ProtocolError>) {
    let mut decoder = Decoder::new(true, BIG as u64, BIG);
    let mut out = Vec::new();
    let mut binary: Option<Vec<u8>> = None;
    let mut buf = BytesMut::new();
    for piece in data.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(None) => break,
                Ok(Some(item)) => {
                    let m = match item {
                        Decoded::Binary { data, fin } => {
                            binary.get_or_insert_with(Vec::new).extend_from_slice(&data);
                            if !fin {
                                continue;
                            }
                            Msg::Binary(binary.take().unwrap_or_default())
                        }
                        Decoded::Text(t) => Msg::Text(t.as_bytes().to_vec()),
                        Decoded::Ping(p) => Msg::Ping(p.to_vec()),
                        Decoded::Pong(p) => Msg::Pong(p.to_vec()),
                        Decoded::Close(f) => Msg::Close(f.map(|f| (f.code.0, f.reason))),
                    };
                    let close = matches!(m, Msg::Close(_));
                    out.push(m);
                    if close {
                        return (out, None);
                    }
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

/// Masks and frames `payload`.
fn frame(out: &mut Vec<u8>, b0: u8, key: [u8; 4], payload: &[u8], long_form: bool) {
    out.push(b0);
    let n = payload.len();
    if n < 126 && !long_form {
        out.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
}

/// Valid frames described by `data`, and the messages they carry. Each frame takes a kind byte, a length
/// byte and a key byte: data messages (text from a UTF-8 alphabet, binary) split into 1 to 4 fragments
/// with control frames in between, pings, pongs, and a final Close with a valid code.
fn valid_stream(data: &[u8]) -> (Vec<u8>, Vec<Msg>) {
    let mut stream = Vec::new();
    let mut msgs = Vec::new();
    let it = data.chunks(3);
    let text_alphabet = ["a", "é", "✓", "😀", " "];
    let close_codes = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 3000, 4999,
    ];
    for c in it {
        let (kind, len, k) = (c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0));
        let key = [k, k.wrapping_mul(3), 0x5A, k ^ 0xFF];
        let long = kind & 0x40 != 0;
        match kind % 5 {
            0 | 1 => {
                let text = kind % 5 == 0;
                let payload: Vec<u8> = if text {
                    (0..usize::from(len))
                        .map(|i| text_alphabet[(i + usize::from(k)) % 5])
                        .collect::<String>()
                        .into_bytes()
                } else {
                    (0..usize::from(len) * 3).map(|i| (i as u8) ^ k).collect()
                };
                // Split at char boundaries only where it matters not: fragments of text may split
                // a character (both sides must join them).
                let parts = usize::from((kind >> 3) & 3) + 1;
                let size = payload.len().div_ceil(parts).max(1);
                let pieces: Vec<&[u8]> = if payload.is_empty() {
                    vec![&[][..]]
                } else {
                    payload.chunks(size).collect()
                };
                for (i, piece) in pieces.iter().enumerate() {
                    let op = if i > 0 {
                        0x0
                    } else if text {
                        0x1
                    } else {
                        0x2
                    };
                    let fin = if i + 1 == pieces.len() { 0x80 } else { 0 };
                    frame(&mut stream, fin | op, key, piece, long);
                    if kind & 0x20 != 0 && fin == 0 {
                        let ping = [k; 3];
                        frame(&mut stream, 0x89, key, &ping, false);
                        msgs.push(Msg::Ping(ping.to_vec()));
                    }
                }
                // The interleaved pings come first.
                let m = if text {
                    Msg::Text(payload)
                } else {
                    Msg::Binary(payload)
                };
                msgs.push(m);
            }
            2 => {
                let p = vec![k; usize::from(len % 126)];
                frame(&mut stream, 0x89, key, &p, long);
                msgs.push(Msg::Ping(p));
            }
            3 => {
                let p = vec![k; usize::from(len % 126)];
                frame(&mut stream, 0x8A, key, &p, long);
                msgs.push(Msg::Pong(p));
            }
            _ => {
                let code = close_codes[usize::from(len) % close_codes.len()];
                let reason: String = (0..usize::from(k % 40))
                    .map(|i| text_alphabet[i % 5])
                    .collect();
                let mut p = code.to_be_bytes().to_vec();
                p.extend_from_slice(reason.as_bytes());
                if p.len() > 125 {
                    p.truncate(2);
                }
                let reason = String::from_utf8(p[2..].to_vec()).expect("whole characters");
                frame(&mut stream, 0x88, key, &p, false);
                msgs.push(Msg::Close(Some((code, reason))));
                break;
            }
        }
    }
    (stream, msgs)
}

/// The `frame_differential` target (see the module docs).
pub fn frame_differential(data: &[u8]) {
    let [mode, rest @ ..] = data else {
        return;
    };
    let step = usize::from(mode & 0x7F) * 3 + 1;
    if mode & 0x80 == 0 {
        let (stream, expected) = valid_stream(rest);
        let (ours, our_err) = our_reads(&stream, step);
        let (theirs, their_err) = tungstenite_reads(&stream, step);
        assert_eq!(our_err, None, "we refused valid frames");
        assert_eq!(their_err, None, "tungstenite refused valid frames");
        assert_eq!(ours, expected, "we decoded valid frames wrongly");
        assert_eq!(
            theirs, expected,
            "tungstenite decoded valid frames differently"
        );
        return;
    }
    let (ours, our_err) = our_reads(rest, step);
    let (theirs, their_err) = tungstenite_reads(rest, step);
    match (&our_err, &their_err) {
        (None, None) => assert_eq!(ours, theirs, "the decoders disagree"),
        (Some(e), None) => {
            // We refused something tungstenite has not judged yet (it waits for the rest of a frame
            // we already found bad: we check UTF-8 as the bytes arrive). Had it delivered the message
            // we refused, that would be a finding.
            assert_eq!(
                ours, theirs,
                "tungstenite delivered a message we refused ({e:?})"
            );
        }
        (None, Some(t)) => {
            // tungstenite refused what we accepted: the messages before its error agree, and the
            // refusal must be one of the documented differences.
            assert!(
                theirs.len() <= ours.len() && theirs[..] == ours[..theirs.len()],
                "the decoders disagree before tungstenite's error {t}: {ours:?} vs {theirs:?}"
            );
            let next = ours.get(theirs.len());
            let known = matches!(next, Some(Msg::Close(Some((1014, _)))));
            assert!(
                known,
                "tungstenite refused ({t}) what we accepted: {next:?}"
            );
        }
        (Some(_), Some(_)) => {
            let n = ours.len().min(theirs.len());
            assert_eq!(
                ours[..n],
                theirs[..n],
                "the decoders disagree before their errors"
            );
        }
    }
}
