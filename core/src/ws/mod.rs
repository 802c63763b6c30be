//! RFC 6455 WebSocket: frames, masking, UTF-8, the close handshake, the opening handshake and the
//! connection state machine that ties them together.
//!
//! The pieces, bottom up:
//! - [`frame`]: the frame header and opcodes;
//! - [`mask`]: XOR masking, a machine word at a time, in place;
//! - [`text`]: [`Utf8Bytes`], shared bytes known to be UTF-8;
//! - [`utf8`]: incremental UTF-8 validation that fails at the first bad byte;
//! - [`close`]: close codes and Close frame payloads;
//! - [`decoder`]: a streaming frame decoder that hands out binary payload as it arrives;
//! - [`outq`]: the outgoing byte queue, control frames jumping ahead of queued data frames;
//! - [`handshake`]: the HTTP/1.1 upgrade, both roles;
//! - [`connection`]: [`WebSocket`], one endpoint after the handshake.

pub mod close;
pub mod connection;
pub mod decoder;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod outq;
pub mod text;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use connection::{CloseReply, Event, Role, SendError, WebSocket};
pub use decoder::{Decoded, Decoder, ProtocolError};
pub use frame::{FrameHeader, OpCode};
pub use text::Utf8Bytes;
