//! A streaming frame decoder.
//!
//! The caller keeps the undecoded input in a [`BytesMut`] and calls [`Decoder::decode`] until it returns
//! `Ok(None)` (more input needed). Binary payload is handed out as it arrives, as [`Bytes`] chunks split off
//! the input buffer and unmasked in place — never copied, never reassembled. Text and control messages are
//! reassembled up to the configured caps; text is UTF-8-checked as each piece arrives, so an invalid byte
//! fails the connection at once, even in the middle of a fragment.
//!
//! Every rule of RFC 6455 §5 that concerns a single direction is enforced here: RSV bits, reserved opcodes,
//! masking by role, control frames short and unfragmented, continuation order, size limits. The first
//! violation is returned as a [`ProtocolError`] and the decoder stops: later calls return `Ok(None)`.

use std::fmt;

use bytes::{Bytes, BytesMut};

use super::close::{BadClose, CloseCode, CloseFrame};
use super::frame::{FrameHeader, HeaderError, OpCode, MAX_CONTROL_PAYLOAD};
use super::mask::{apply_mask, rotate};
use super::utf8::Utf8Validator;
use crate::ws::text::Utf8Bytes;

/// One decoded item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A piece of a binary message, in order. `fin` marks the last piece of the message (it may be empty).
    Binary {
        /// The payload bytes, unmasked.
        data: Bytes,
        /// This piece ends the message.
        fin: bool,
    },
    /// A whole text message.
    Text(Utf8Bytes),
    /// A ping with its payload.
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// A close frame; `None` when it carried no status.
    Close(Option<CloseFrame>),
}

/// A violation of RFC 6455 by the peer, or of our limits. Each maps to the close code we answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// An RSV bit is set but no extension was negotiated.
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    ReservedOpcode(u8),
    /// A control frame without FIN.
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload.
    ControlTooLong,
    /// A continuation frame while no message is open.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is open.
    ExpectedContinuation,
    /// A client frame without a mask (we are the server).
    UnmaskedFrame,
    /// A server frame with a mask (we are the client).
    MaskedFrame,
    /// A 64-bit length with its top bit set.
    LengthOverflow,
    /// A frame larger than `max_frame_size`.
    FrameTooBig(u64),
    /// A text message larger than `max_message_size`.
    MessageTooBig(u64),
    /// A text message or close reason that is not UTF-8.
    InvalidUtf8,
    /// A close payload of one byte, or with a code that may not be sent.
    BadClose(BadClose),
}

impl ProtocolError {
    /// The close code we fail the connection with.
    pub fn close_code(&self) -> CloseCode {
        match self {
            ProtocolError::FrameTooBig(_) | ProtocolError::MessageTooBig(_) => CloseCode::TOO_BIG,
            ProtocolError::InvalidUtf8 | ProtocolError::BadClose(BadClose::Reason) => {
                CloseCode::INVALID_DATA
            }
            _ => CloseCode::PROTOCOL,
        }
    }

    /// The Close frame we fail the connection with.
    pub fn close_frame(&self) -> CloseFrame {
        CloseFrame::new(self.close_code(), &self.to_string())
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::ReservedBits => f.write_str("reserved bits set without an extension"),
            ProtocolError::ReservedOpcode(op) => write!(f, "reserved opcode {op:#x}"),
            ProtocolError::FragmentedControl => f.write_str("fragmented control frame"),
            ProtocolError::ControlTooLong => f.write_str("control frame payload over 125 bytes"),
            ProtocolError::UnexpectedContinuation => {
                f.write_str("continuation frame with no message open")
            }
            ProtocolError::ExpectedContinuation => {
                f.write_str("new data frame before the fragmented message ended")
            }
            ProtocolError::UnmaskedFrame => f.write_str("client frame is not masked"),
            ProtocolError::MaskedFrame => f.write_str("server frame is masked"),
            ProtocolError::LengthOverflow => f.write_str("frame length has its top bit set"),
            ProtocolError::FrameTooBig(n) => write!(f, "frame of {n} bytes exceeds the limit"),
            ProtocolError::MessageTooBig(n) => write!(f, "message of {n} bytes exceeds the limit"),
            ProtocolError::InvalidUtf8 => f.write_str("text is not valid UTF-8"),
            ProtocolError::BadClose(BadClose::Truncated) => {
                f.write_str("close payload of one byte")
            }
            ProtocolError::BadClose(BadClose::Code(c)) => {
                write!(f, "close code {c} may not be sent")
            }
            ProtocolError::BadClose(BadClose::Reason) => {
                f.write_str("close reason is not valid UTF-8")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Where the decoder is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Position {
    /// Waiting for (the rest of) a frame header.
    Header,
    /// Inside the payload of a data frame (`opcode` is the message's type, never Continuation).
    Data {
        message: DataKind,
        fin: bool,
        /// The masking key, rotated so that its first byte masks the next payload byte.
        mask: Option<[u8; 4]>,
        remaining: u64,
    },
    /// The peer broke the protocol; nothing more is decoded.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// The message a fragmented sequence of data frames is building.
#[derive(Debug, Default)]
enum Message {
    /// No message open: the next data frame must be Text or Binary.
    #[default]
    None,
    /// A binary message is open; its pieces were already handed out.
    Binary,
    /// A text message is open; what arrived of it so far, if anything did (boxed: a message that comes
    /// in one piece needs none, and an idle decoder keeps only the tag).
    Text(Option<Box<TextMessage>>),
}

/// A text message being reassembled in `buf` and checked by `utf8` (the pieces so far).
#[derive(Debug)]
struct TextMessage {
    buf: BytesMut,
    utf8: Utf8Validator,
}

/// Decodes one direction of a WebSocket stream. See the module docs.
#[derive(Debug)]
pub struct Decoder {
    expect_masked: bool,
    max_frame_size: u64,
    max_message_size: usize,
    position: Position,
    message: Message,
}

impl Decoder {
    /// A decoder for frames sent by a client (`expect_masked`, we are the server) or by a server.
    pub fn new(expect_masked: bool, max_frame_size: u64, max_message_size: usize) -> Self {
        Decoder {
            expect_masked,
            max_frame_size,
            max_message_size,
            position: Position::Header,
            message: Message::None,
        }
    }

    /// Decodes the next item from the front of `input`, consuming the bytes it used.
    ///
    /// `Ok(None)` means `input` holds no complete item yet (or the decoder has failed before). A control
    /// frame is returned only once all of its (at most 125) payload bytes are in `input`.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Option<Decoded>, ProtocolError> {
        loop {
            match self.position {
                Position::Failed => return Ok(None),
                Position::Header => match self.header(input) {
                    Ok(Some(Some(item))) => return Ok(Some(item)),
                    Ok(Some(None)) => continue,
                    Ok(None) => return Ok(None),
                    Err(e) => {
                        self.position = Position::Failed;
                        return Err(e);
                    }
                },
                Position::Data { .. } => match self.payload(input) {
                    Ok(Some(item)) => return Ok(Some(item)),
                    Ok(None) if input.is_empty() => return Ok(None),
                    // The frame ended with nothing to hand out (an empty or non-final text piece).
                    Ok(None) if matches!(self.position, Position::Header) => continue,
                    Ok(None) => return Ok(None),
                    Err(e) => {
                        self.position = Position::Failed;
                        return Err(e);
                    }
                },
            }
        }
    }

    /// Parses a header. `Ok(Some(Some(item)))` for a complete control frame, `Ok(Some(None))` when a data
    /// frame's payload follows, `Ok(None)` when more bytes are needed.
    fn header(&mut self, input: &mut BytesMut) -> Result<Option<Option<Decoded>>, ProtocolError> {
        let (h, header_len) = match FrameHeader::parse(input) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(HeaderError::LengthOverflow) => return Err(ProtocolError::LengthOverflow),
        };
        if h.rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        if let OpCode::Reserved(op) = h.opcode {
            return Err(ProtocolError::ReservedOpcode(op));
        }
        match (self.expect_masked, h.mask.is_some()) {
            (true, false) => return Err(ProtocolError::UnmaskedFrame),
            (false, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        if h.opcode.is_control() {
            if !h.fin {
                return Err(ProtocolError::FragmentedControl);
            }
            if h.payload_len > MAX_CONTROL_PAYLOAD as u64 {
                return Err(ProtocolError::ControlTooLong);
            }
            let total = header_len + h.payload_len as usize;
            if input.len() < total {
                return Ok(None);
            }
            let _ = input.split_to(header_len);
            let mut payload = input.split_to(h.payload_len as usize);
            if let Some(key) = h.mask {
                apply_mask(&mut payload, key);
            }
            return self
                .control(h.opcode, payload.freeze())
                .map(|item| Some(Some(item)));
        }
        if h.payload_len > self.max_frame_size {
            return Err(ProtocolError::FrameTooBig(h.payload_len));
        }
        let message = match (h.opcode, &self.message) {
            (OpCode::Continuation, Message::None) => {
                return Err(ProtocolError::UnexpectedContinuation)
            }
            (OpCode::Continuation, Message::Binary) => DataKind::Binary,
            (OpCode::Continuation, Message::Text(_)) => DataKind::Text,
            (OpCode::Text | OpCode::Binary, Message::Binary | Message::Text(_)) => {
                return Err(ProtocolError::ExpectedContinuation)
            }
            (OpCode::Text, Message::None) => {
                self.message = Message::Text(None);
                DataKind::Text
            }
            (OpCode::Binary, Message::None) => {
                self.message = Message::Binary;
                DataKind::Binary
            }
            _ => unreachable!("control and reserved opcodes were handled above"),
        };
        if let Message::Text(text) = &self.message {
            let total = text.as_ref().map_or(0, |t| t.buf.len()) as u64 + h.payload_len;
            if total > self.max_message_size as u64 {
                return Err(ProtocolError::MessageTooBig(total));
            }
        }
        let _ = input.split_to(header_len);
        self.position = Position::Data {
            message,
            fin: h.fin,
            mask: h.mask,
            remaining: h.payload_len,
        };
        Ok(Some(None))
    }

    /// Consumes available payload of the current data frame.
    fn payload(&mut self, input: &mut BytesMut) -> Result<Option<Decoded>, ProtocolError> {
        let Position::Data {
            message,
            fin,
            mask,
            remaining,
        } = self.position
        else {
            return Ok(None);
        };
        let take = remaining.min(input.len() as u64) as usize;
        if take == 0 && remaining > 0 {
            return Ok(None);
        }
        let mut chunk = input.split_to(take);
        let mask = mask.map(|key| {
            apply_mask(&mut chunk, key);
            // The next piece starts `take` bytes further into the payload.
            rotate(key, take as u64)
        });
        let remaining = remaining - take as u64;
        let frame_done = remaining == 0;
        self.position = if frame_done {
            Position::Header
        } else {
            Position::Data {
                message,
                fin,
                mask,
                remaining,
            }
        };
        let message_done = frame_done && fin;
        match message {
            DataKind::Binary => {
                if message_done {
                    self.message = Message::None;
                } else if chunk.is_empty() {
                    return Ok(None);
                }
                Ok(Some(Decoded::Binary {
                    data: chunk.freeze(),
                    fin: message_done,
                }))
            }
            DataKind::Text => {
                let Message::Text(text) = &mut self.message else {
                    unreachable!("a text frame is only decoded while a text message is open");
                };
                if !message_done {
                    let TextMessage { buf, utf8 } = &mut **text.get_or_insert_with(|| {
                        Box::new(TextMessage {
                            buf: BytesMut::new(),
                            utf8: Utf8Validator::new(),
                        })
                    });
                    utf8.feed(&chunk).map_err(|_| ProtocolError::InvalidUtf8)?;
                    buf.unsplit(chunk);
                    return Ok(None);
                }
                let text = match text.take() {
                    Some(mut t) => {
                        t.utf8
                            .feed(&chunk)
                            .map_err(|_| ProtocolError::InvalidUtf8)?;
                        t.utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                        let mut buf = t.buf;
                        buf.unsplit(chunk);
                        buf
                    }
                    None => {
                        let mut utf8 = Utf8Validator::new();
                        utf8.feed(&chunk).map_err(|_| ProtocolError::InvalidUtf8)?;
                        utf8.finish().map_err(|_| ProtocolError::InvalidUtf8)?;
                        chunk
                    }
                };
                self.message = Message::None;
                Ok(Some(Decoded::Text(Utf8Bytes::from_validated(
                    text.freeze(),
                ))))
            }
        }
    }

    fn control(&mut self, opcode: OpCode, payload: Bytes) -> Result<Decoded, ProtocolError> {
        Ok(match opcode {
            OpCode::Ping => Decoded::Ping(payload),
            OpCode::Pong => Decoded::Pong(payload),
            OpCode::Close => {
                Decoded::Close(CloseFrame::parse(&payload).map_err(ProtocolError::BadClose)?)
            }
            _ => unreachable!("only control opcodes reach here"),
        })
    }

    /// Bytes of an unfinished text message held by the decoder.
    pub fn buffered(&self) -> usize {
        match &self.message {
            Message::Text(text) => text.as_ref().map_or(0, |t| t.buf.len()),
            _ => 0,
        }
    }
}
