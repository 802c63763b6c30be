//! The bodies of the cargo-fuzz targets, shared with the corpus replay test. Not part of the API.
//!
//! Each public function here is one whole fuzz target: `fuzz/fuzz_targets/<name>.rs` calls it from
//! `fuzz_target!`, and `core/tests/fuzz_corpus.rs` calls it on every file of `fuzz/corpus/<name>/`, so the
//! normal (stable) test run replays exactly the checks the fuzzer ran. A broken invariant panics.
//!
//! Inputs are plain bytes read by a tiny decoder (`Input`, `Op::read`) rather than `arbitrary`, so that the
//! core needs no fuzzing dependency and the corpus format is defined here, next to its only reader: a
//! change to a format invalidates the committed corpus, which must then be regenerated (`fuzz/run.sh`,
//! then `cargo +nightly fuzz cmin <target>`).
//!
//! The committed corpus stays small (at most ~200 files / 1 MB per target). A crashing input, once fixed,
//! is added to it, so the replay keeps it as a regression test.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::WsConfig;
use crate::entropy::CounterEntropy;
use crate::http::head::HeadReader;
use crate::http::response::ResponseHead;
use crate::http::HttpError;
use crate::ws::close::{CloseCode, CloseFrame};
use crate::ws::frame::{FrameHeader, OpCode, MAX_CONTROL_PAYLOAD, MAX_HEADER_LEN};
use crate::ws::handshake::{
    accept_key, accept_response, choose_protocol, validate_upgrade, ClientHandshake, HandshakeError,
};
use crate::ws::{
    CloseReply, Decoded, Decoder, Event, ProtocolError, Role, SendError, Utf8Bytes, WebSocket,
};

/// Fuzz input read front to back as small numbers; past its end every read yields zeros.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// Up to `n` bytes (fewer at the end of the input).
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }
}

/// Splits `data` into chunks following a pattern chosen by one byte: the low 3 bits pick all at once (0),
/// byte by byte (1) or pseudo-random sizes in `1..=2^m` (m = 2..=7), the high 5 bits seed the sizes.
fn chunks(data: &[u8], pattern: u8) -> Vec<&[u8]> {
    let mode = pattern & 7;
    let mut state = u32::from(pattern >> 3);
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = match mode {
            0 => rest.len(),
            1 => 1,
            m => {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                1 + (state >> 16) as usize % (1 << m)
            }
        };
        let (chunk, tail) = rest.split_at(n.min(rest.len()));
        out.push(chunk);
        rest = tail;
    }
    out
}

/// Unmasks `payload`, whose first byte is byte `offset` of its frame, byte by byte (independently of the
/// word-at-a-time [`crate::ws::mask::apply_mask`] the decoder uses).
fn unmask(payload: &[u8], mask: Option<[u8; 4]>, offset: usize) -> Vec<u8> {
    match mask {
        None => payload.to_vec(),
        Some(key) => payload
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ key[(offset + i) % 4])
            .collect(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// frame_decoder
// ---------------------------------------------------------------------------------------------------------

/// One frame of the input stream as a shadow reading of it sees it.
#[derive(Debug, Clone, Copy)]
struct ShadowFrame {
    header: FrameHeader,
    /// Stream offsets of the payload (`end` may lie past the end of a truncated stream).
    start: usize,
    end: usize,
    /// Payload bytes handed out as `Binary` so far.
    handed_out: u64,
}

/// The frames of the stream, parsed on demand as the decoder's position moves on.
struct Shadow<'a> {
    stream: &'a [u8],
    frames: Vec<ShadowFrame>,
    next: usize,
}

impl<'a> Shadow<'a> {
    /// The index of the frame whose payload holds stream bytes `from..to`.
    fn frame_of(&mut self, from: usize, to: usize) -> usize {
        while self.next < to || self.frames.is_empty() {
            let (header, len) = FrameHeader::parse(&self.stream[self.next..])
                .expect("the decoder accepted a header that does not parse")
                .expect("the decoder consumed a partial header");
            let start = self.next + len;
            let end =
                start.saturating_add(usize::try_from(header.payload_len).unwrap_or(usize::MAX));
            self.frames.push(ShadowFrame {
                header,
                start,
                end,
                handed_out: 0,
            });
            self.next = end;
        }
        self.frames
            .iter()
            .rposition(|f| f.start <= from && to <= f.end)
            .unwrap_or_else(|| panic!("bytes {from}..{to} lie in no single frame payload"))
    }

    fn payload(&self, i: usize) -> Vec<u8> {
        let f = &self.frames[i];
        unmask(&self.stream[f.start..f.end], f.header.mask, 0)
    }
}

/// What the decoder made of a stream, binary pieces joined per message so that chunking cannot show.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    Binary(Vec<u8>, bool),
    Other(Decoded),
    Error(ProtocolError),
}

/// The `frame_decoder` target: byte 0 picks the role (bit 0: expect masked frames) and the limits, byte 1
/// the chunking, the rest is the stream. The decoder must agree with a shadow reading of the stream, and
/// feeding it in chunks must give what feeding it at once gives.
pub fn frame_decoder(data: &[u8]) {
    let [config, pattern, stream @ ..] = data else {
        return;
    };
    let expect_masked = config & 1 != 0;
    let max_frame = [125u64, 1000, 1 << 16, 1 << 20][usize::from((config >> 1) & 3)];
    let max_message = [0usize, 16, 1000, 1 << 16][usize::from((config >> 3) & 3)];
    let decode =
        |pieces: &[&[u8]]| decode_stream(expect_masked, max_frame, max_message, stream, pieces);
    let chunked = decode(&chunks(stream, *pattern));
    let whole = decode(&[stream]);
    assert_eq!(chunked, whole, "the chunking of the input showed");
}

fn decode_stream(
    expect_masked: bool,
    max_frame: u64,
    max_message: usize,
    stream: &[u8],
    pieces: &[&[u8]],
) -> Vec<Item> {
    let mut decoder = Decoder::new(expect_masked, max_frame, max_message);
    let mut shadow = Shadow {
        stream,
        frames: Vec::new(),
        next: 0,
    };
    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut failed = false;
    let mut items: Vec<Item> = Vec::new();
    let mut binary: Option<Vec<u8>> = None;
    for piece in pieces {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let before = buf.len();
            let result = decoder.decode(&mut buf);
            if failed {
                assert_eq!(result, Ok(None), "the decoder spoke after an error");
                assert_eq!(buf.len(), before, "the decoder consumed after an error");
                break;
            }
            assert!(buf.len() <= before, "decode grew its input");
            assert!(
                buf[..] == stream[fed - buf.len()..fed],
                "the unconsumed input is not the tail of what was fed"
            );
            assert!(
                decoder.buffered() <= max_message,
                "buffered text exceeds max_message_size"
            );
            let pos = fed - buf.len();
            match result {
                Ok(None) => break,
                Ok(Some(item)) => {
                    check_item(&item, pos, &mut shadow, max_frame, max_message);
                    match item {
                        Decoded::Binary { data, fin } => {
                            binary.get_or_insert_with(Vec::new).extend_from_slice(&data);
                            if fin {
                                items.push(Item::Binary(binary.take().unwrap_or_default(), true));
                            }
                        }
                        other => items.push(Item::Other(other)),
                    }
                }
                Err(e) => {
                    assert!(
                        e.close_code().is_sendable(),
                        "{e:?} maps to an unsendable code"
                    );
                    failed = true;
                    items.push(Item::Error(e));
                }
            }
        }
    }
    if failed {
        // Forever: even a valid frame is not decoded any more.
        buf.extend_from_slice(&[0x82, 0x80, 0, 0, 0, 0, 0x82, 0x00]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
    }
    if let Some(open) = binary {
        items.push(Item::Binary(open, false));
    }
    items
}

/// Checks one decoded item against the shadow frames; `pos` is the stream offset after it.
fn check_item(
    item: &Decoded,
    pos: usize,
    shadow: &mut Shadow<'_>,
    max_frame: u64,
    max_message: usize,
) {
    match item {
        Decoded::Binary { data, fin } => {
            let from = pos - data.len();
            let i = shadow.frame_of(from, pos);
            let frame = &mut shadow.frames[i];
            assert!(
                matches!(frame.header.opcode, OpCode::Binary | OpCode::Continuation),
                "binary bytes from a {:?} frame",
                frame.header.opcode
            );
            assert!(frame.header.payload_len <= max_frame);
            frame.handed_out += data.len() as u64;
            assert!(
                frame.handed_out <= frame.header.payload_len,
                "binary pieces exceed their frame"
            );
            let offset = from - frame.start;
            assert_eq!(
                data[..],
                unmask(&shadow.stream[from..pos], frame.header.mask, offset)[..],
                "binary bytes are not the unmasked payload"
            );
            if *fin {
                assert!(frame.header.fin && pos == frame.end, "fin before the end");
            }
        }
        Decoded::Text(text) => {
            assert!(std::str::from_utf8(text.as_bytes()).is_ok());
            assert!(text.len() <= max_message, "text exceeds max_message_size");
            let last = shadow.frame_of(pos, pos);
            assert!(shadow.frames[last].header.fin && shadow.frames[last].end == pos);
            // The message is every data frame back to its Text frame, control frames skipped.
            let mut parts = Vec::new();
            for i in (0..=last).rev() {
                let op = shadow.frames[i].header.opcode;
                if !op.is_control() {
                    parts.push(shadow.payload(i));
                    if op == OpCode::Text {
                        break;
                    }
                    assert_eq!(op, OpCode::Continuation);
                }
            }
            parts.reverse();
            assert_eq!(
                text.as_bytes()[..],
                parts.concat()[..],
                "text is not the payloads"
            );
        }
        Decoded::Ping(payload) | Decoded::Pong(payload) => {
            let i = shadow.frame_of(pos, pos);
            let f = shadow.frames[i];
            assert!(f.header.opcode.is_control() && f.header.fin && f.end == pos);
            assert!(payload.len() <= MAX_CONTROL_PAYLOAD);
            assert_eq!(payload[..], shadow.payload(i)[..]);
        }
        Decoded::Close(frame) => {
            let i = shadow.frame_of(pos, pos);
            assert_eq!(shadow.frames[i].header.opcode, OpCode::Close);
            assert_eq!(shadow.frames[i].end, pos);
            let payload = shadow.payload(i);
            match frame {
                None => assert!(payload.is_empty()),
                Some(f) => {
                    assert!(f.code.is_sendable());
                    assert_eq!(f.to_payload()[..], payload[..]);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// websocket_session
// ---------------------------------------------------------------------------------------------------------

/// Close codes a local `close()` may use (all sendable).
const CLOSE_CODES: [u16; 6] = [1000, 1001, 1008, 1011, 3000, 4999];

/// One step of a session, decoded from the input by [`Op::read`].
#[derive(Debug)]
enum Op {
    /// Raw bytes appended to what the peer has sent.
    Raw(Vec<u8>),
    /// A frame appended to what the peer has sent: first header byte (FIN, RSV, opcode), whether the mask
    /// bit is wrong for the role, and the payload.
    Frame {
        b0: u8,
        wrong_mask: bool,
        payload: Vec<u8>,
    },
    /// The transport delivers up to this many of the peer's bytes (0: all), if the engine wants to read.
    Deliver(usize),
    /// The peer shut its side down.
    Eof,
    /// Events are polled, up to this many (0: until none is left).
    Poll(usize),
    /// `send_binary` of this many bytes; `shared`: the caller keeps a reference to them.
    SendBinary { len: usize, fin: bool, shared: bool },
    /// `send_text` of this many bytes of text.
    SendText(usize),
    /// `ping` with this payload length (over 125 must be refused).
    Ping(usize),
    /// `close` with a status (or none) and a reason of this length.
    Close(Option<u16>, usize),
    /// The transport takes up to this many bytes (a short write).
    Write(usize),
    /// Time moves on by this many milliseconds, or to the close deadline when `None`, and the timeout is
    /// handled.
    Timeout(Option<u64>),
}

impl Op {
    fn read(input: &mut Input<'_>) -> Op {
        match input.u8() % 11 {
            0 => {
                let n = usize::from(input.u8());
                Op::Raw(input.bytes(n).to_vec())
            }
            1 => {
                let b0 = input.u8();
                let flags = input.u8();
                let len = match input.u8() {
                    n @ 0..=199 => usize::from(n),
                    200..=249 => usize::from(input.u16()),
                    _ => 125 + usize::from(input.u8() % 8),
                };
                let payload = match flags & 3 {
                    0 => {
                        let mut p = input.bytes(len).to_vec();
                        p.resize(len, 0);
                        p
                    }
                    1 => vec![b'a'; len],
                    2 => "héllo wörld ✓ ".bytes().cycle().take(len).collect(),
                    _ => {
                        let mut p = input.u16().to_be_bytes().to_vec();
                        p.resize(len.clamp(2, 125), b'r');
                        p
                    }
                };
                Op::Frame {
                    b0,
                    wrong_mask: flags & 0x80 != 0 && flags & 0x40 != 0,
                    payload,
                }
            }
            2 => Op::Deliver(usize::from(input.u8())),
            3 => Op::Eof,
            4 => Op::Poll(usize::from(input.u8() % 4)),
            5 => {
                let flags = input.u8();
                let len = if flags & 4 != 0 {
                    usize::from(input.u16() % 2048)
                } else {
                    usize::from(input.u8())
                };
                Op::SendBinary {
                    len,
                    fin: flags & 1 != 0,
                    shared: flags & 2 != 0,
                }
            }
            6 => Op::SendText(usize::from(input.u16() % 1024)),
            7 => Op::Ping(usize::from(input.u8() % 132)),
            8 => {
                let code = input.u8();
                let status = CLOSE_CODES.get(usize::from(code)).copied();
                Op::Close(status, usize::from(input.u8() % 130))
            }
            9 => Op::Write(usize::from(input.u16())),
            _ => match input.u16() {
                0 => Op::Timeout(None),
                ms => Op::Timeout(Some(u64::from(ms))),
            },
        }
    }
}

/// The size of a frame with this payload, as the engine encodes it.
fn frame_len(payload: usize, masked: bool) -> usize {
    let ext = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + ext + if masked { 4 } else { 0 } + payload
}

/// What the peer must still receive from us, in order: the engine's output modelled from our calls and the
/// events (pongs, echoed or failure Closes) that queue frames by themselves.
#[derive(Debug, Default)]
struct Expected {
    /// Payload bytes of our binary frames, as one stream (the peer gets them in pieces).
    binary: VecDeque<u8>,
    /// Binary messages we ended (`fin`).
    binary_ends: usize,
    texts: VecDeque<String>,
    pings: VecDeque<Vec<u8>>,
    pongs: VecDeque<Bytes>,
    /// The one Close we queued, once we did.
    close: Option<Option<CloseFrame>>,
}

impl Expected {
    /// Control frames queued and not fully written: the peer decodes one as soon as its last byte is out.
    fn control_in_flight(&self) -> usize {
        self.pings.len() + self.pongs.len()
    }

    fn is_empty(&self) -> bool {
        self.binary.is_empty()
            && self.binary_ends == 0
            && self.texts.is_empty()
            && self.control_in_flight() == 0
            && self.close.is_none()
    }

    /// The peer decoded `item` from what we wrote.
    fn received(&mut self, item: Decoded) {
        match item {
            Decoded::Binary { data, fin } => {
                assert!(
                    data.len() <= self.binary.len(),
                    "the peer got binary bytes we never sent"
                );
                assert!(
                    self.binary.drain(..data.len()).eq(data.iter().copied()),
                    "the peer got other binary bytes than we sent"
                );
                if fin {
                    assert!(
                        self.binary_ends > 0,
                        "a binary message ended that we did not end"
                    );
                    self.binary_ends -= 1;
                }
            }
            Decoded::Text(t) => assert_eq!(Some(t.as_str()), self.texts.pop_front().as_deref()),
            Decoded::Ping(p) => assert_eq!(Some(&p[..]), self.pings.pop_front().as_deref()),
            Decoded::Pong(p) => assert_eq!(Some(p), self.pongs.pop_front(), "pong out of order"),
            Decoded::Close(f) => assert_eq!(Some(f), self.close.take(), "unexpected Close"),
        }
    }
}

/// A whole session: one engine, the peer's bytes not yet delivered, the peer's view of what we wrote.
struct Session {
    ws: WebSocket,
    client: bool,
    config: WsConfig,
    now: Instant,
    /// Bytes the peer has sent that the transport has not delivered yet.
    pending: Vec<u8>,
    /// The largest chunk the transport delivered at once.
    largest_delivery: usize,
    /// A Close, Failed or Eof event was seen: no event may follow.
    ended: bool,
    /// The engine defers its Close reply ([`CloseReply::Deferred`]).
    deferred: bool,
    /// The peer's Close arrived and (deferred) our reply is owed: data may still be sent.
    reply_owed: bool,
    /// Bytes our own calls ever queued (sends, pings, our close): with the pong cap, bounds the queue.
    queued_by_us: usize,
    /// A fragmented binary message of ours is open.
    binary_open: bool,
    /// The peer decodes everything we write and checks it against `expected`.
    peer: Decoder,
    peer_rx: BytesMut,
    /// The peer got our Close: nothing may follow it.
    peer_saw_close: bool,
    expected: Expected,
    key: u32,
}

/// Bound of one control frame on the wire (payload and the longest header of a control frame).
const CONTROL_FRAME_MAX: usize = MAX_CONTROL_PAYLOAD + 6;
/// Control frames queued at once past which pings go unanswered (`MAX_QUEUED_CONTROL` in the engine).
const QUEUED_CONTROL_CAP: usize = 32;

impl Session {
    fn peer_frame(&mut self, b0: u8, wrong_mask: bool, payload: &[u8]) {
        // The peer of a client is a server (no mask) and the other way round.
        let masked = self.client == wrong_mask;
        self.key = self.key.wrapping_mul(2_654_435_761).wrapping_add(1);
        let mask = masked.then(|| self.key.to_be_bytes());
        let header = FrameHeader {
            fin: b0 & 0x80 != 0,
            rsv: (b0 >> 4) & 7,
            opcode: OpCode::from_u8(b0 & 0xF),
            mask,
            payload_len: payload.len() as u64,
        };
        let mut head = [0u8; MAX_HEADER_LEN];
        let n = header.encode(&mut head);
        self.pending.extend_from_slice(&head[..n]);
        self.pending.extend(unmask(payload, mask, 0));
    }

    /// Polls up to `max` events (0: until none is left), checking what each one queued.
    fn poll(&mut self, max: usize) {
        let mut polled = 0;
        while max == 0 || polled < max {
            polled += 1;
            let before = self.ws.buffered_amount();
            let was_open = self.ws.is_open();
            let Some(event) = self.ws.poll_event() else {
                break;
            };
            assert!(!self.ended, "event after the connection ended: {event:?}");
            let grew = self.ws.buffered_amount() - before;
            // The frame this event must have queued by itself, if any.
            let mut queued: Option<usize> = None;
            match &event {
                Event::Binary { data, .. } => {
                    assert!(data.len() as u64 <= self.config.max_frame_size)
                }
                Event::Text(t) => assert!(t.len() <= self.config.max_message_size),
                Event::Ping(p) => {
                    assert!(p.len() <= MAX_CONTROL_PAYLOAD);
                    if was_open && self.expected.control_in_flight() < QUEUED_CONTROL_CAP {
                        queued = Some(p.len());
                        self.expected.pongs.push_back(p.clone());
                    }
                }
                Event::Pong(p) => assert!(p.len() <= MAX_CONTROL_PAYLOAD),
                Event::Close(frame) => {
                    assert!(frame.as_ref().is_none_or(|f| f.code.is_sendable()));
                    if was_open && self.deferred {
                        self.reply_owed = true;
                        assert!(self.ws.close_reply_owed() && self.ws.can_send());
                    } else if was_open {
                        queued = Some(frame.as_ref().map_or(0, |f| f.to_payload().len()));
                        self.expected.close = Some(frame.clone());
                    }
                    self.ended = true;
                }
                Event::Failed(e) => {
                    assert!(
                        e.close_code().is_sendable(),
                        "{e:?} fails with an unsendable code"
                    );
                    if was_open {
                        let frame = e.close_frame();
                        queued = Some(frame.to_payload().len());
                        self.expected.close = Some(Some(frame));
                    }
                    self.ended = true;
                }
                Event::Eof => self.ended = true,
            }
            let want = queued.map_or(0, |payload| frame_len(payload, self.client));
            assert_eq!(grew, want, "{event:?} queued {grew} bytes, expected {want}");
            if self.ended {
                assert!(
                    self.ws.is_closed() || self.reply_owed,
                    "{event:?} left the connection open"
                );
            }
        }
    }

    /// The transport takes up to `max` bytes; the peer decodes them.
    fn write(&mut self, max: usize) {
        let mut slots = [IoSlice::new(&[]); 64];
        let n = self.ws.slices(&mut slots);
        let offered: usize = slots[..n].iter().map(|s| s.len()).sum();
        assert!(offered <= self.ws.buffered_amount());
        if n < slots.len() {
            assert_eq!(
                offered,
                self.ws.buffered_amount(),
                "slices miss queued bytes"
            );
        }
        let mut wire = Vec::new();
        for s in &slots[..n] {
            let take = (max - wire.len()).min(s.len());
            wire.extend_from_slice(&s[..take]);
            if wire.len() == max {
                break;
            }
        }
        let before = self.ws.buffered_amount();
        self.ws.advance(wire.len());
        assert_eq!(self.ws.buffered_amount(), before - wire.len());
        self.peer_rx.extend_from_slice(&wire);
        loop {
            match self.peer.decode(&mut self.peer_rx) {
                Ok(None) => break,
                Ok(Some(item)) => {
                    assert!(!self.peer_saw_close, "we sent {item:?} after our Close");
                    self.peer_saw_close = matches!(item, Decoded::Close(_));
                    self.expected.received(item);
                }
                Err(e) => panic!("we sent something the peer cannot decode: {e}"),
            }
        }
    }

    /// A send of a `payload`-byte frame returned `result`; checks it against the state before
    /// (`allowed`: whether that state lets this kind of frame be sent).
    fn sent(
        &mut self,
        result: Result<(), SendError>,
        payload: usize,
        before: usize,
        allowed: bool,
    ) -> bool {
        match result {
            Ok(()) => {
                assert!(allowed, "a send was accepted after the close");
                let added = frame_len(payload, self.client);
                assert_eq!(self.ws.buffered_amount(), before + added);
                self.queued_by_us += added;
                true
            }
            Err(e) => {
                assert_eq!(
                    self.ws.buffered_amount(),
                    before,
                    "a refused send queued bytes"
                );
                match e {
                    SendError::Closed => assert!(!allowed, "an open connection refused a send"),
                    SendError::MessageInProgress => assert!(allowed && self.binary_open),
                    SendError::ControlTooLong => assert!(payload > MAX_CONTROL_PAYLOAD),
                }
                false
            }
        }
    }

    fn apply(&mut self, op: Op) {
        let before = self.ws.buffered_amount();
        let was_open = self.ws.is_open();
        // Data and the (reply) Close may go while the peer's Close waits for our reply; pings may not.
        let may_send = was_open || self.reply_owed;
        match op {
            Op::Raw(bytes) => self.pending.extend_from_slice(&bytes),
            Op::Frame {
                b0,
                wrong_mask,
                payload,
            } => self.peer_frame(b0, wrong_mask, &payload),
            Op::Deliver(n) => {
                if self.ws.wants_read() && !self.pending.is_empty() {
                    let n = if n == 0 {
                        self.pending.len()
                    } else {
                        n.min(self.pending.len())
                    };
                    let chunk: Vec<u8> = self.pending.drain(..n).collect();
                    self.largest_delivery = self.largest_delivery.max(n);
                    self.ws.handle_input(BytesMut::from(&chunk[..]));
                }
            }
            Op::Eof => self.ws.handle_eof(),
            Op::Poll(max) => self.poll(max),
            Op::SendBinary { len, fin, shared } => {
                let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let payload = Bytes::from(data.clone());
                let kept = shared.then(|| payload.clone());
                let result = self.ws.send_binary(payload, fin);
                if let Some(kept) = kept {
                    assert_eq!(kept[..], data[..], "a send changed the caller's bytes");
                }
                if self.sent(result, len, before, may_send) {
                    self.binary_open = !fin;
                    self.expected.binary.extend(data);
                    self.expected.binary_ends += usize::from(fin);
                }
            }
            Op::SendText(len) => {
                let text: String = "ab✓é".chars().cycle().take(len).collect();
                let result = self.ws.send_text(Utf8Bytes::from(text.clone()));
                if self.sent(result, text.len(), before, may_send) {
                    assert!(!self.binary_open, "text accepted inside a binary message");
                    self.expected.texts.push_back(text);
                }
            }
            Op::Ping(len) => {
                let payload = vec![7; len];
                let result = self.ws.ping(&payload);
                if self.sent(result, len, before, was_open) {
                    self.expected.pings.push_back(payload);
                }
            }
            Op::Close(code, reason_len) => {
                let reason: String = "bye ".chars().cycle().take(reason_len).collect();
                let frame = code.map(|c| CloseFrame::new(CloseCode(c), &reason));
                let len = frame.as_ref().map_or(0, |f| f.to_payload().len());
                let result = self.ws.close(frame.as_ref(), self.now);
                if self.sent(result, len, before, may_send) {
                    assert!(!self.ws.is_open());
                    self.expected.close = Some(frame);
                    if self.reply_owed {
                        // The reply: the handshake is complete, nothing is awaited.
                        self.reply_owed = false;
                        assert!(self.ws.is_closed() && self.ws.poll_timeout().is_none());
                    } else {
                        let deadline = self.now + self.config.close_timeout;
                        assert_eq!(self.ws.poll_timeout(), Some(deadline));
                    }
                }
            }
            Op::Write(n) => self.write(n),
            Op::Timeout(step) => {
                let deadline = self.ws.poll_timeout();
                self.now = match (step, deadline) {
                    (None, Some(d)) if d > self.now => d,
                    (None, _) => self.now,
                    (Some(ms), _) => self.now + Duration::from_millis(ms),
                };
                self.ws.handle_timeout(self.now);
                if let Some(d) = deadline {
                    if self.now >= d {
                        // A close wait is a QuietDeadline: come due after progress (the peer's
                        // bytes), it is re-armed for another close_timeout instead of passing.
                        let closed = self.ws.is_closed() && self.ws.poll_timeout().is_none();
                        let rearmed =
                            self.ws.poll_timeout() == Some(self.now + self.config.close_timeout);
                        assert!(
                            closed || rearmed,
                            "a due deadline neither closed nor re-armed"
                        );
                    } else {
                        assert_eq!(self.ws.poll_timeout(), deadline);
                    }
                }
            }
        }
        self.check();
    }

    fn check(&self) {
        let ws = &self.ws;
        if ws.is_closed() {
            assert!(!ws.wants_read(), "closed but wants to read");
            assert!(!ws.is_open() && ws.poll_timeout().is_none());
        }
        if self.ended {
            assert!(ws.is_closed() || self.reply_owed);
        }
        if self.reply_owed {
            assert!(ws.close_reply_owed() && ws.can_send() && !ws.is_closed());
            assert!(!ws.wants_read() && ws.poll_timeout().is_none());
        } else {
            assert!(!ws.close_reply_owed());
        }
        // Our own frames, at most QUEUED_CONTROL_CAP pongs at a time, and one Close sent on a failure or
        // in answer to the peer's: a ping flood cannot grow the queue.
        assert!(
            self.expected.pongs.len() <= QUEUED_CONTROL_CAP,
            "pongs pile up"
        );
        let bound = self.queued_by_us + (QUEUED_CONTROL_CAP + 1) * CONTROL_FRAME_MAX;
        assert!(
            ws.buffered_amount() <= bound,
            "{} bytes queued, bound {bound}",
            ws.buffered_amount()
        );
        // Input is taken only while under the cap, so one delivery at most overshoots it.
        let input_bound =
            self.config.max_read_buffer + self.largest_delivery + self.config.max_message_size;
        assert!(
            ws.buffered_input() <= input_bound,
            "{} input bytes held, bound {input_bound}",
            ws.buffered_input()
        );
        assert_eq!(ws.wants_write(), ws.buffered_amount() > 0);
    }
}

/// The `websocket_session` target: byte 0 picks the role (bit 0: client) and the limits, byte 1 the
/// close timeout, then a sequence of operations (see `Op::read`) drives one engine while a peer decoder
/// checks everything it writes. `epoch` is the start of virtual time. Every input runs twice: with the
/// Close reply immediate (the default) and deferred (then the reply is sent at the end if still owed).
pub fn websocket_session(data: &[u8], epoch: Instant) {
    websocket_session_with(data, epoch, CloseReply::Immediate);
    websocket_session_with(data, epoch, CloseReply::Deferred);
}

fn websocket_session_with(data: &[u8], epoch: Instant, reply: CloseReply) {
    let mut input = Input(data);
    let flags = input.u8();
    let client = flags & 1 != 0;
    let config = WsConfig {
        max_frame_size: [125u64, 1000, 1 << 16, 1 << 20][usize::from((flags >> 1) & 3)],
        max_message_size: [16usize, 1000, 1 << 16][usize::from((flags >> 3) & 3) % 3],
        max_read_buffer: [64usize, 1024, 1 << 16][usize::from((flags >> 5) & 3) % 3],
        close_timeout: Duration::from_millis(1 + u64::from(input.u8()) * 10),
        ..WsConfig::default()
    };
    let role = if client {
        Role::Client(Box::new(CounterEntropy(u64::from(flags))))
    } else {
        Role::Server
    };
    let mut ws = WebSocket::new(role, &config);
    ws.set_close_reply(reply);
    let mut session = Session {
        ws,
        client,
        now: epoch,
        pending: Vec::new(),
        largest_delivery: 0,
        ended: false,
        deferred: reply == CloseReply::Deferred,
        reply_owed: false,
        queued_by_us: 0,
        binary_open: false,
        // The peer expects our frames masked when we are the client. Its text cap is beyond anything sent.
        peer: Decoder::new(client, u64::MAX >> 1, usize::MAX),
        peer_rx: BytesMut::new(),
        peer_saw_close: false,
        expected: Expected::default(),
        key: u32::from(flags),
        config,
    };
    while !input.is_empty() {
        let op = Op::read(&mut input);
        session.apply(op);
    }
    // The transport ends: everything buffered is delivered, then the connection is over, and everything
    // queued reaches the peer.
    session.apply(Op::Eof);
    session.apply(Op::Poll(0));
    if session.reply_owed {
        // Deferred: the transport's end changes nothing; the owner sends the reply.
        session.apply(Op::Close(Some(1000), 0));
    }
    assert!(session.ws.is_closed(), "EOF did not end the connection");
    while session.ws.wants_write() {
        let before = session.ws.buffered_amount();
        session.apply(Op::Write(usize::MAX));
        assert!(
            session.ws.buffered_amount() < before,
            "queued bytes offered no slice"
        );
    }
    assert!(
        session.expected.is_empty(),
        "the peer never got {:?}",
        session.expected
    );
}

// ---------------------------------------------------------------------------------------------------------
// upgrade_request / upgrade_response
// ---------------------------------------------------------------------------------------------------------

/// What a [`HeadReader`] made of some input: the head (or error, or nothing yet) and the remainder.
fn read_head<T>(
    reader_limits: (usize, usize),
    pieces: &[&[u8]],
    mut poll: impl FnMut(&mut HeadReader) -> Result<Option<T>, HttpError>,
) -> (Result<Option<T>, HttpError>, Vec<u8>) {
    let mut reader = HeadReader::new(reader_limits.0, reader_limits.1);
    let mut result = Ok(None);
    for piece in pieces {
        reader.feed(piece);
        if matches!(result, Ok(None)) {
            result = poll(&mut reader);
            if let Ok(Some(_)) = result {
                assert!(
                    matches!(poll(&mut reader), Ok(None)),
                    "a head was handed out twice"
                );
            }
        }
    }
    if let Err(e) = result {
        assert!(
            matches!(poll(&mut reader), Err(again) if again == e),
            "the error is not sticky"
        );
        assert_eq!(reader.buffered(), 0, "a failed reader holds input");
    }
    (result, reader.take_remainder().to_vec())
}

/// The stream past the head's first `\r\n\r\n`.
fn after_head(stream: &[u8]) -> &[u8] {
    let end = stream
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head was returned without its end");
    &stream[end + 4..]
}

/// An error response must be a complete response with the error's status.
fn check_error_response(e: &HttpError) {
    assert!((400..=599).contains(&e.status), "error status {}", e.status);
    let bytes = e.response();
    let mut reader = HeadReader::new(1 << 16, 64);
    reader.feed(&bytes);
    let head = reader
        .poll_response()
        .expect("our error response parses")
        .expect("our error response is complete");
    assert_eq!(head.status, e.status);
}

/// The `upgrade_request` target: byte 0 picks the chunking (and, in its top bit, a small head limit); the
/// rest is what a client sent. A valid upgrade must be answered with a 101 that a client accepts.
pub fn upgrade_request(data: &[u8]) {
    let [pattern, stream @ ..] = data else {
        return;
    };
    let limits = if pattern & 0x80 != 0 {
        (128, 4)
    } else {
        (8192, 32)
    };
    let read = |pieces: &[&[u8]]| read_head(limits, pieces, HeadReader::poll_request);
    let (result, remainder) = read(&chunks(stream, *pattern));
    assert_eq!(
        (result.clone(), remainder.clone()),
        read(&[stream]),
        "the chunking of the input showed"
    );
    let request = match result {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(e) => return check_error_response(&e),
    };
    assert_eq!(
        remainder,
        after_head(stream),
        "bytes after the head were lost"
    );
    let info = match validate_upgrade(&request) {
        Ok(info) => info,
        Err(e) => return check_error_response(&e),
    };
    let protocol = choose_protocol(&info.protocols, &["chat", "superchat"]);
    let response = accept_response(
        &info,
        protocol,
        &[
            ("Set-Cookie", "a=b"),
            ("Upgrade", "h2c"),
            ("Bad\r\nName", "x"),
        ],
    );
    assert!(response.starts_with(b"HTTP/1.1 101 "), "not a 101");
    let mut reader = HeadReader::new(8192, 32);
    reader.feed(&response);
    let head: ResponseHead = reader
        .poll_response()
        .expect("our 101 parses")
        .expect("our 101 is complete");
    assert!(reader.take_remainder().is_empty(), "bytes after our 101");
    assert_eq!(head.status, 101);
    assert!(
        head.headers.has_token("upgrade", "websocket")
            && head.headers.has_token("connection", "upgrade")
    );
    assert_eq!(
        head.headers.get_str("sec-websocket-accept"),
        Some(accept_key(info.key.as_bytes()).as_str())
    );
    assert_eq!(head.headers.get_str("sec-websocket-protocol"), protocol);
}

/// The fixed entropy of the client whose handshake `upgrade_response` answers.
pub const RESPONSE_CLIENT_SEED: u64 = 0x5EED;

/// The handshake `upgrade_response` answers, and its request bytes.
pub fn response_client() -> (ClientHandshake, Bytes) {
    ClientHandshake::new(
        &mut CounterEntropy(RESPONSE_CLIENT_SEED),
        "server.example.com",
        "/chat?room=1",
        &["chat".to_owned(), "superchat".to_owned()],
        &[("Origin".to_owned(), "http://example.com".to_owned())],
    )
    .expect("a valid handshake request")
}

/// The `upgrade_response` target: byte 0 picks the chunking (and a small head limit), the rest is what
/// the server answered to [`response_client`]'s request.
pub fn upgrade_response(data: &[u8]) {
    let [pattern, stream @ ..] = data else {
        return;
    };
    let (handshake, _request) = response_client();
    let limits = if pattern & 0x80 != 0 {
        (128, 4)
    } else {
        (8192, 32)
    };
    let read = |pieces: &[&[u8]]| read_head(limits, pieces, HeadReader::poll_response);
    let (result, remainder) = read(&chunks(stream, *pattern));
    assert_eq!(
        (result.clone(), remainder.clone()),
        read(&[stream]),
        "the chunking of the input showed"
    );
    let head = match result {
        Ok(Some(head)) => head,
        Ok(None) => return,
        Err(e) => {
            assert_eq!(e.status, 502, "a bad response is reported as 502");
            return;
        }
    };
    assert_eq!(
        remainder,
        after_head(stream),
        "bytes after the head were lost"
    );
    match handshake.validate(&head) {
        Ok(protocol) => {
            assert!(head.version == 1 && head.status == 101);
            assert!(matches!(
                protocol.as_deref(),
                None | Some("chat" | "superchat")
            ));
        }
        Err(HandshakeError::Status(s)) => assert!(s == head.status && s != 101),
        Err(HandshakeError::InvalidRequest(_) | HandshakeError::Response(_)) => {
            panic!("validate returned a request-side error")
        }
        Err(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------------------
// http_response
// ---------------------------------------------------------------------------------------------------------

/// What a [`ResponseReader`](crate::http::client::ResponseReader) made of a stream fed in `pieces`,
/// then (if it was still waiting) an end of stream.
fn read_response(
    pieces: &[&[u8]],
    max_body: usize,
) -> Result<Option<crate::http::client::ClientResponse>, HttpError> {
    let mut reader = crate::http::client::ResponseReader::new(512, 16, max_body);
    for piece in pieces {
        if let Some(done) = reader.feed(piece)? {
            return Ok(Some(done));
        }
    }
    reader.eof()
}

/// The `http_response` target (the `ws2http` backend's answers): byte 0 picks the chunking (and, in its
/// top bit, a small body cap); the rest is what a backend sent. The outcome must not depend on the
/// chunking, a body never exceeds the cap, and errors are 502s.
pub fn http_response(data: &[u8]) {
    let [pattern, stream @ ..] = data else {
        return;
    };
    let max_body = if pattern & 0x80 != 0 { 16 } else { 4096 };
    let result = read_response(&chunks(stream, *pattern), max_body);
    assert_eq!(
        result,
        read_response(&[stream], max_body),
        "the chunking of the input showed"
    );
    match result {
        Ok(Some(r)) => {
            assert!(r.body.len() <= max_body, "body over the cap");
            assert!(
                (200..=999).contains(&r.head.status),
                "an interim head was returned"
            );
        }
        Ok(None) => {}
        Err(e) => assert_eq!(e.status, 502),
    }
}

// ---------------------------------------------------------------------------------------------------------
// tcp2ws_session / ws2tcp_session / ws2http_session: core/src/fuzzing/sessions.rs
// ---------------------------------------------------------------------------------------------------------

mod sessions;
pub use sessions::{tcp2ws_session, ws2http_session, ws2tcp_session};

// ---------------------------------------------------------------------------------------------------------
// control_json / target_policy / chunked_body: core/src/fuzzing/parsers.rs
// ---------------------------------------------------------------------------------------------------------

mod parsers;
pub use parsers::{chunked_body, control_json, target_policy};

// ---------------------------------------------------------------------------------------------------------
// proxy_header: core/src/fuzzing/proxy.rs
// ---------------------------------------------------------------------------------------------------------

mod proxy;
pub use proxy::proxy_header;
