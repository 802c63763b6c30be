//! [`WebSocket`]: one endpoint of an open WebSocket connection, after the opening handshake.
//!
//! # Contract
//! The driver owns the socket and calls, in any order as things happen:
//! - [`WebSocket::handle_input`] with bytes it read, only while [`WebSocket::wants_read`];
//! - [`WebSocket::handle_eof`] when the peer closed its side of the transport;
//! - [`WebSocket::handle_timeout`] when the instant from [`WebSocket::poll_timeout`] has passed.
//!
//! After every input the owner drains [`WebSocket::poll_event`] until `None` (stopping early is how it
//! applies backpressure: undecoded input stays buffered and `wants_read` turns false), then writes what
//! [`WebSocket::slices`] offers and reports it with [`WebSocket::advance`]. When [`WebSocket::is_closed`]
//! and nothing is left to write, the driver shuts the transport down.
//!
//! Pings are answered automatically, the close handshake is run to completion, and a peer that breaks the
//! protocol gets a Close with the matching code (1002, 1007, 1009) before the connection counts as closed.
//!
//! # The Close reply
//! By default ([`CloseReply::Immediate`]) the peer's Close is answered as soon as it is decoded. An owner
//! that still has data for the peer (a bridge relaying the far side's last bytes) opts in to
//! [`CloseReply::Deferred`] with [`WebSocket::set_close_reply`]: the peer's Close then leaves the
//! connection *close-received* — nothing more is read, data may still be sent (RFC 6455 §5.5.1 lets an
//! endpoint send its Close "as soon as practical", e.g. after its current message) — until the owner calls
//! [`WebSocket::close`], which sends the reply and closes the connection. The engine keeps no timer for
//! this: bounding the wait is the owner's business.

use std::fmt;
use std::io::IoSlice;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::close::CloseFrame;
use super::decoder::{Decoded, Decoder, ProtocolError};
use super::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use super::mask::apply_mask;
use super::outq::OutQueue;
use super::text::Utf8Bytes;
use crate::config::WsConfig;
use crate::deadline::QuietDeadline;
use crate::entropy::Entropy;

/// Payloads up to this size are copied next to their header so the frame goes out as one slice.
const INLINE_PAYLOAD: usize = 256;
/// Size of the blocks frame headers are carved from.
const ARENA_BLOCK: usize = 1024;
/// When a frame header or control frame straddles two input buffers that are not contiguous in memory,
/// this many bytes are moved across the seam (a header is at most 14 bytes, a control frame 131), so the
/// large buffer behind the seam is never copied.
const SEAM: usize = 256;
/// Most control frames queued at once. Past it, pings are left unanswered (RFC 6455 §5.5.3 lets an
/// endpoint answer only the most recent ping) so a ping flood cannot grow the queue.
const MAX_QUEUED_CONTROL: usize = 32;

/// Which end of the connection we are. A client masks every frame it sends with keys from its entropy.
pub enum Role {
    /// We accepted the connection: we expect masked frames and send unmasked ones.
    Server,
    /// We opened the connection: we send masked frames and expect unmasked ones.
    Client(Box<dyn Entropy + Send>),
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "Server",
            Role::Client(_) => "Client",
        })
    }
}

/// What happened on the connection, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A piece of a binary message; `fin` ends the message.
    Binary {
        /// The bytes.
        data: Bytes,
        /// Last piece of the message.
        fin: bool,
    },
    /// A whole text message.
    Text(Utf8Bytes),
    /// A ping arrived; the pong is already queued.
    Ping(Bytes),
    /// A pong arrived.
    Pong(Bytes),
    /// The peer sent Close (`None`: no status, 1005). Nothing more is read. If we had not sent ours:
    /// with [`CloseReply::Immediate`] the reply is queued and the connection is closed; with
    /// [`CloseReply::Deferred`] the reply is owed — data may still be sent until [`WebSocket::close`]
    /// sends it (see [`WebSocket::close_reply_owed`]).
    Close(Option<CloseFrame>),
    /// The peer broke the protocol; our Close with the matching code is queued and the connection closed.
    Failed(ProtocolError),
    /// The transport ended without a Close (status 1006). Everything that arrived before was delivered.
    Eof,
}

/// Why a send was refused. Nothing was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// A Close was sent, or received (and, if deferred, answered): no more frames may be sent. While a
    /// deferred reply is owed, data frames may still be sent but pings may not.
    Closed,
    /// A fragmented message of the other type is still open.
    MessageInProgress,
    /// A control frame payload over 125 bytes.
    ControlTooLong,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendError::Closed => "the WebSocket is closing",
            SendError::MessageInProgress => "another fragmented message is open",
            SendError::ControlTooLong => "control frame payload over 125 bytes",
        })
    }
}

impl std::error::Error for SendError {}

/// When the peer's Close is answered (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CloseReply {
    /// The reply is queued as soon as the peer's Close is decoded, and the connection is closed.
    #[default]
    Immediate,
    /// The peer's Close leaves the connection close-received: we may still send data frames, nothing
    /// more is read, and [`WebSocket::close`] sends the reply.
    Deferred,
}

/// The close handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CloseState {
    /// Both directions open.
    Open,
    /// The peer's Close arrived and our reply is deferred: data may still be sent, nothing is read, and
    /// `close` sends the reply (then `Closed`).
    Received,
    /// We sent Close and wait for the peer's; incoming data is still delivered. The wait ends after
    /// `close_timeout` without input, so a long tail is not cut off. Boxed: an open connection keeps
    /// only the tag.
    Sent(Box<QuietDeadline>),
    /// Both Closes exchanged, the connection failed, the wait timed out, or the transport ended.
    Closed,
}

impl CloseState {
    /// Input is still decoded.
    fn reads(&self) -> bool {
        matches!(self, CloseState::Open | CloseState::Sent(_))
    }

    /// Data frames may still be sent.
    fn sends(&self) -> bool {
        matches!(self, CloseState::Open | CloseState::Received)
    }
}

/// The message type of an outgoing fragmented message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outgoing {
    None,
    Binary,
    Text,
}

/// One WebSocket endpoint. See the module docs for the calling contract.
#[derive(Debug)]
pub struct WebSocket {
    role: Role,
    close_timeout: std::time::Duration,
    max_read_buffer: usize,
    decoder: Decoder,
    /// Undecoded input.
    rx: BytesMut,
    /// Input that arrived while `rx` still held a partial frame and is not contiguous with it; never
    /// empty when present. Boxed: it is rare, and an idle connection keeps only a null pointer.
    rx_next: Option<Box<BytesMut>>,
    peer_eof: bool,
    out: OutQueue,
    /// The block frame headers (and small frames) are carved from; dropped when `out` drains, so an
    /// idle connection keeps none.
    arena: BytesMut,
    outgoing: Outgoing,
    state: CloseState,
    close_reply: CloseReply,
}

impl WebSocket {
    /// An endpoint in `role` with the limits of `config`.
    pub fn new(role: Role, config: &WsConfig) -> Self {
        let expect_masked = matches!(role, Role::Server);
        WebSocket {
            role,
            close_timeout: config.close_timeout,
            max_read_buffer: config.max_read_buffer,
            decoder: Decoder::new(
                expect_masked,
                config.max_frame_size,
                config.max_message_size,
            ),
            rx: BytesMut::new(),
            rx_next: None,
            peer_eof: false,
            out: OutQueue::new(),
            arena: BytesMut::new(),
            outgoing: Outgoing::None,
            state: CloseState::Open,
            close_reply: CloseReply::Immediate,
        }
    }

    /// How the peer's Close is answered from now on ([`CloseReply::Immediate`] unless set).
    pub fn set_close_reply(&mut self, reply: CloseReply) {
        self.close_reply = reply;
    }

    // ---- input ----

    /// Whether the driver should read more: the connection still reads and its undecoded input is under
    /// `max_read_buffer`. It turns false while the owner stops polling events (backpressure).
    pub fn wants_read(&self) -> bool {
        self.state.reads() && !self.peer_eof && self.undecoded() < self.max_read_buffer
    }

    fn undecoded(&self) -> usize {
        self.rx.len() + self.rx_next.as_ref().map_or(0, |next| next.len())
    }

    /// Bytes read from the transport. Passing ownership lets payload be handed on without a copy; a driver
    /// that reads successive buffers out of one allocation (`reserve`, read, `split`) gets contiguous
    /// input joined for free.
    pub fn handle_input(&mut self, data: BytesMut) {
        if !self.state.reads() || data.is_empty() {
            return;
        }
        if let CloseState::Sent(wait) = &mut self.state {
            wait.progress();
        }
        if let Some(next) = &mut self.rx_next {
            next.unsplit(data);
        } else if let Err(data) = self.rx.try_unsplit(data) {
            self.rx_next = Some(Box::new(data));
        }
    }

    /// The peer closed its side of the transport. Buffered input is still delivered first.
    pub fn handle_eof(&mut self) {
        self.peer_eof = true;
    }

    /// The deadline from [`WebSocket::poll_timeout`] has passed (calling it early does nothing). While we
    /// wait for the peer's Close, the wait ends only after `close_timeout` without any input.
    pub fn handle_timeout(&mut self, now: Instant) {
        if let CloseState::Sent(wait) = &mut self.state {
            if wait.expired(now) {
                self.state = CloseState::Closed;
            }
        }
    }

    /// When [`WebSocket::handle_timeout`] must be called next: while waiting for the peer's Close.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            CloseState::Sent(wait) => Some(wait.deadline()),
            _ => None,
        }
    }

    /// The next event, decoding buffered input on demand.
    pub fn poll_event(&mut self) -> Option<Event> {
        if !self.state.reads() {
            return None;
        }
        match self.decode() {
            Ok(Some(item)) => Some(self.on_decoded(item)),
            Ok(None) if self.peer_eof => {
                self.state = CloseState::Closed;
                self.drop_input();
                Some(Event::Eof)
            }
            Ok(None) => None,
            Err(e) => {
                if self.state == CloseState::Open {
                    self.queue_close(Some(&e.close_frame()));
                }
                self.state = CloseState::Closed;
                self.drop_input();
                Some(Event::Failed(e))
            }
        }
    }

    /// Decodes from `rx`, moving input across the seam from `rx_next` when `rx` runs dry.
    fn decode(&mut self) -> Result<Option<Decoded>, ProtocolError> {
        loop {
            if let Some(item) = self.decoder.decode(&mut self.rx)? {
                return Ok(Some(item));
            }
            let Some(next) = &mut self.rx_next else {
                self.release_read_buffer();
                return Ok(None);
            };
            if self.rx.is_empty() || next.len() <= SEAM {
                // Taken whole: no seam to copy across, or only a small piece.
                let next = *self.rx_next.take().expect("checked above");
                if self.rx.is_empty() {
                    self.rx = next;
                } else {
                    self.rx.extend_from_slice(&next);
                }
            } else {
                self.rx.extend_from_slice(&next.split_to(SEAM));
            }
        }
    }

    /// Waiting for input: a view into a read buffer must not keep the buffer alive while the connection
    /// idles. An empty view is dropped (however small the buffer: the view still shares it); a small
    /// leftover of a large buffer (a partial header or control frame, at most [`SEAM`] bytes) is copied
    /// out of it, and the buffer is then freed with the last view.
    fn release_read_buffer(&mut self) {
        if self.rx.is_empty() {
            self.rx = BytesMut::new();
        } else if self.rx.capacity() > 2 * SEAM && self.rx.len() <= SEAM {
            self.rx = BytesMut::from(&self.rx[..]);
        }
    }

    fn on_decoded(&mut self, item: Decoded) -> Event {
        match item {
            Decoded::Binary { data, fin } => Event::Binary { data, fin },
            Decoded::Text(text) => Event::Text(text),
            Decoded::Ping(payload) => {
                if self.state == CloseState::Open && self.out.control_frames() < MAX_QUEUED_CONTROL
                {
                    self.queue_control(OpCode::Pong, &payload);
                }
                Event::Ping(payload)
            }
            Decoded::Pong(payload) => Event::Pong(payload),
            Decoded::Close(frame) => {
                self.state = match (&self.state, self.close_reply) {
                    (CloseState::Open, CloseReply::Deferred) => CloseState::Received,
                    (CloseState::Open, CloseReply::Immediate) => {
                        // Echo the status (RFC 6455 §5.5.1); no status is answered with no status.
                        self.queue_close(frame.as_ref());
                        CloseState::Closed
                    }
                    _ => CloseState::Closed,
                };
                self.drop_input();
                Event::Close(frame)
            }
        }
    }

    // ---- output ----

    /// Queues a piece of a binary message; `fin` ends the message. Each call is one frame.
    pub fn send_binary(&mut self, data: Bytes, fin: bool) -> Result<(), SendError> {
        self.send_data(Outgoing::Binary, data, fin)
    }

    /// Queues a whole text message as one frame.
    pub fn send_text(&mut self, text: Utf8Bytes) -> Result<(), SendError> {
        self.send_data(Outgoing::Text, text.into(), true)
    }

    /// Queues a ping; it goes out ahead of queued data frames (but never inside one). Only while both
    /// directions are open.
    pub fn ping(&mut self, payload: &[u8]) -> Result<(), SendError> {
        if payload.len() > MAX_CONTROL_PAYLOAD {
            return Err(SendError::ControlTooLong);
        }
        if self.state != CloseState::Open {
            return Err(SendError::Closed);
        }
        self.queue_control(OpCode::Ping, payload);
        Ok(())
    }

    /// Queues our Close (`None` sends no status); data already queued goes out first, nothing may be
    /// sent after. Open: starts the close handshake and waits for the peer's Close until it has been
    /// silent for `close_timeout`. Close-received ([`CloseReply::Deferred`]): this is the owed reply, and the
    /// connection is closed.
    pub fn close(&mut self, frame: Option<&CloseFrame>, now: Instant) -> Result<(), SendError> {
        let next = match self.state {
            CloseState::Open => {
                CloseState::Sent(Box::new(QuietDeadline::new(now, self.close_timeout)))
            }
            CloseState::Received => CloseState::Closed,
            CloseState::Sent(_) | CloseState::Closed => return Err(SendError::Closed),
        };
        self.queue_close(frame);
        self.state = next;
        Ok(())
    }

    /// A ping or pong is queued and not fully written.
    pub fn control_pending(&self) -> bool {
        self.out.control_frames() > 0
    }

    /// Bytes queued for the transport.
    pub fn buffered_amount(&self) -> usize {
        self.out.len()
    }

    /// Whether anything waits to be written.
    pub fn wants_write(&self) -> bool {
        !self.out.is_empty()
    }

    /// Fills `dst` with the bytes to write next, in order; returns how many slices it filled.
    pub fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.out.slices(dst)
    }

    /// The transport took the first `n` bytes of what [`WebSocket::slices`] offered. Once nothing is
    /// left to write, the arena block the frames were carved from is released with them.
    pub fn advance(&mut self, n: usize) {
        self.out.advance(n);
        if self.out.is_empty() {
            self.arena = BytesMut::new();
        }
    }

    /// The close handshake is over (or the connection failed or dropped). Once nothing is left to write,
    /// the driver shuts the transport down; a server closes it first (RFC 6455 §7.1.1).
    pub fn is_closed(&self) -> bool {
        self.state == CloseState::Closed
    }

    /// Neither side has sent Close: both directions are open.
    pub fn is_open(&self) -> bool {
        self.state == CloseState::Open
    }

    /// We may still send data frames: open, or the peer's Close arrived and our reply is owed.
    pub fn can_send(&self) -> bool {
        self.state.sends()
    }

    /// The peer's Close arrived and, deferred, our reply has not been sent: call [`WebSocket::close`].
    pub fn close_reply_owed(&self) -> bool {
        self.state == CloseState::Received
    }

    /// Bytes of input held undecoded or in an unfinished text message.
    pub fn buffered_input(&self) -> usize {
        self.undecoded() + self.decoder.buffered()
    }

    fn send_data(&mut self, kind: Outgoing, data: Bytes, fin: bool) -> Result<(), SendError> {
        if !self.state.sends() {
            return Err(SendError::Closed);
        }
        let opcode = match (self.outgoing, kind) {
            (Outgoing::None, Outgoing::Binary) => OpCode::Binary,
            (Outgoing::None, _) => OpCode::Text,
            (open, kind) if open == kind => OpCode::Continuation,
            _ => return Err(SendError::MessageInProgress),
        };
        self.outgoing = if fin { Outgoing::None } else { kind };
        self.queue_data_frame(fin, opcode, data);
        Ok(())
    }

    /// A Close goes on the data lane: it must follow every data frame queued before it.
    fn queue_close(&mut self, frame: Option<&CloseFrame>) {
        let payload = frame.map(CloseFrame::to_payload).unwrap_or_default();
        let (bytes, _) = self.encode(true, OpCode::Close, &payload, true);
        self.out.push_data(bytes, true);
    }

    /// Nothing more is decoded once closed: release the input buffers.
    fn drop_input(&mut self) {
        self.rx = BytesMut::new();
        self.rx_next = None;
    }

    fn mask_key(&mut self) -> Option<[u8; 4]> {
        match &mut self.role {
            Role::Server => None,
            Role::Client(entropy) => Some(entropy.key4()),
        }
    }

    /// Writes a header (and, if `inline`, the payload) into the arena and returns it as one piece.
    fn encode(
        &mut self,
        fin: bool,
        opcode: OpCode,
        payload: &[u8],
        inline: bool,
    ) -> (Bytes, Option<[u8; 4]>) {
        let mask = self.mask_key();
        let header = FrameHeader {
            fin,
            rsv: 0,
            opcode,
            mask,
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        let need = n + if inline { payload.len() } else { 0 };
        if self.arena.capacity() < need {
            self.arena = BytesMut::with_capacity(ARENA_BLOCK.max(need));
        }
        self.arena.put_slice(&head[..n]);
        if inline {
            self.arena.put_slice(payload);
            if let Some(key) = mask {
                apply_mask(&mut self.arena[n..], key);
            }
        }
        (self.arena.split().freeze(), mask)
    }

    fn queue_control(&mut self, opcode: OpCode, payload: &[u8]) {
        let (frame, _) = self.encode(true, opcode, payload, true);
        self.out.push_control(frame);
    }

    fn queue_data_frame(&mut self, fin: bool, opcode: OpCode, payload: Bytes) {
        if payload.len() <= INLINE_PAYLOAD {
            let (frame, _) = self.encode(fin, opcode, &payload, true);
            self.out.push_data(frame, true);
            return;
        }
        let (head, mask) = self.encode(fin, opcode, &payload, false);
        self.out.push_data(head, false);
        let payload = match mask {
            None => payload,
            Some(key) => {
                // Mask in place when we hold the only reference, else on a copy.
                let mut owned = payload
                    .try_into_mut()
                    .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                apply_mask(&mut owned, key);
                owned.freeze()
            }
        };
        self.out.push_data(payload, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #10: every bridged connection keeps one of these. The rarely used parts (the second input
    /// buffer, the close deadline, a fragmented text message) are boxed.
    #[test]
    fn an_open_connection_is_small() {
        let size = std::mem::size_of::<WebSocket>();
        assert!(size <= 272, "WebSocket is {size} bytes");
    }

    #[test]
    fn an_idle_connection_keeps_no_buffer_once_drained() {
        let mut ws = WebSocket::new(Role::Server, &WsConfig::default());
        // A masked Binary frame "hi" read in a buffer of its own, as a runtime hands over small reads.
        let key = [1, 2, 3, 4];
        let mut frame = BytesMut::from(&[0x82, 0x82, 1, 2, 3, 4, b'h', b'i'][..]);
        apply_mask(&mut frame[6..], key);
        ws.handle_input(frame);
        assert!(matches!(ws.poll_event(), Some(Event::Binary { .. })));
        assert_eq!(ws.poll_event(), None);
        assert_eq!(ws.rx.capacity(), 0, "the read's buffer is let go");

        ws.send_binary(Bytes::from_static(b"hello"), true).unwrap();
        assert!(ws.arena.capacity() > 0);
        let n = ws.buffered_amount();
        ws.advance(n - 1);
        assert!(ws.arena.capacity() > 0, "still writing");
        ws.advance(1);
        assert_eq!(ws.arena.capacity(), 0, "the arena goes with the last frame");
    }
}
