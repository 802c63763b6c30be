//! The `tcp2ws_session`, `ws2tcp_session` and `ws2http_session` targets: a whole [`Session`] of each
//! mode, built by its factory from a config with small caps, driven by a runtime ([`Rt`]) that plays both
//! peers and the resolver from operations decoded from the input ([`PeerOp`]).
//!
//! Input format: byte 0 picks the config (caps, timers, half-close, static/dynamic…) and, in bit 7, an
//! *autopilot* that answers every `Resolve`/`Connect` with success (and, in `tcp2ws`, the backend's 101)
//! so that the fuzzer reaches the relay at once; byte 1 seeds the entropy. The rest is a sequence of
//! operations, each one byte of kind then its arguments (see [`PeerOp::read`]).
//!
//! TLS: the `tcp2ws` target runs a STARTTLS listener when bit 6 of byte 0 is set, with a real rustls
//! server (the self-signed `mail.test` certificate next to this file) and a scripted rustls client
//! ([`TlsClient`]) driven by its own operation. The other legs are plain: their TLS is the same
//! `TlsSession` plumbing, and a handshake per input would slow the fuzzer down for little.
//!
//! The runtime behaves like a real one: it reads a leg only while [`Session::wants_read`] says so (EOF
//! included), writes in full unless the leg is *held* (a peer that does not read; then only explicit
//! short writes move bytes), answers each action at most once, fires the timer when virtual time reaches
//! [`Session::poll_timeout`], and drops the session once it [is finished](Session::is_finished).
//!
//! Checked after every step (a panic is a finding):
//! - the bytes queued on each leg stay within the configured cap plus one read and some framing slack;
//! - nothing is queued on a leg once [`Session::write_closed`] said no more would be (until a new
//!   `Connect` opens a fresh `Up` leg);
//! - every WebSocket frame the session writes decodes with our own decoder (masked towards a server,
//!   unmasked towards a client), every Close carries a sendable code, and no frame follows a Close;
//! - `poll_timeout` is never left in the past: at most two `handle_timeout` calls at one instant;
//! - a finished session has an `end_reason` and asks for nothing more;
//! - `ws2tcp` dials only addresses of the last resolve answer that its policy allows (dynamic mode),
//!   `tcp2ws` and `ws2http` only their (allow-listed) backend;
//! - at the end, with both peers gone, pending actions failed and time passing, the session finishes.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::Input;
use crate::entropy::CounterEntropy;
use crate::session::{Action, Delivery, DeliveryResult, Leg, Session, SessionFactory};
use crate::tcp2ws::{HalfClose, ListenerTls, Tcp2WsConfig, Tcp2WsFactory};
use crate::tls::{client_config, server_config, RustlsSession, TlsSession};
use crate::url::WsUrl;
use crate::ws::handshake::{accept_response, validate_upgrade, ClientHandshake};
use crate::ws::{Decoded, Decoder};
use crate::ws2http::{Allowlist, Ws2HttpConfig, Ws2HttpFactory};
use crate::ws2tcp::{StaticTarget, TargetPolicy, Ws2TcpConfig, Ws2TcpFactory};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Slack over a leg's cap: control frames, a close, greetings and statuses, an HTTP head.
const SLACK: usize = 2048;

/// Addresses a resolve may answer with: public ones and every kind of special one.
const ADDRS: [&str; 16] = [
    "8.8.8.8",
    "1.1.1.1",
    "2001:4860:4860::8888",
    "127.0.0.1",
    "10.1.2.3",
    "169.254.169.254",
    "::1",
    "::ffff:127.0.0.1",
    "::ffff:8.8.4.4",
    "0.0.0.0",
    "224.0.0.1",
    "fe80::1",
    "64:ff9b::7f00:1",
    "2002:a00:1::1",
    "::",
    "192.168.1.1",
];

const IO_ERRORS: [std::io::ErrorKind; 4] = [
    std::io::ErrorKind::ConnectionReset,
    std::io::ErrorKind::BrokenPipe,
    std::io::ErrorKind::TimedOut,
    std::io::ErrorKind::Other,
];

const CONNECT_ERRORS: [std::io::ErrorKind; 4] = [
    std::io::ErrorKind::ConnectionRefused,
    std::io::ErrorKind::HostUnreachable,
    std::io::ErrorKind::TimedOut,
    std::io::ErrorKind::NetworkUnreachable,
];

/// How far one `Wait` moves virtual time, in milliseconds (`u64::MAX`: to the session's deadline).
const WAITS_MS: [u64; 8] = [0, 1, 250, 1_000, 5_000, 30_000, 600_000, u64::MAX];

/// Close codes a peer may send, valid and not.
const PEER_CLOSE_CODES: [u16; 8] = [1000, 1001, 1005, 1006, 1011, 1015, 2999, 4000];

/// The output checker of a WebSocket leg: an HTTP head, then (after a 101, or after a request when
/// this side is the client) frames.
struct WsWatch {
    /// Frames on this leg are masked (we are the client on it).
    masked: bool,
    head: Vec<u8>,
    head_done: bool,
    /// Not a WebSocket (any more): the head was not a 101.
    raw: bool,
    buf: BytesMut,
    decoder: Decoder,
    closed: bool,
}

impl WsWatch {
    fn new(masked: bool) -> Self {
        WsWatch {
            masked,
            head: Vec::new(),
            head_done: false,
            raw: false,
            buf: BytesMut::new(),
            decoder: Decoder::new(masked, 1 << 40, 1 << 30),
            closed: false,
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        if self.raw || bytes.is_empty() {
            return;
        }
        if !self.head_done {
            self.head.extend_from_slice(bytes);
            let Some(end) = self.head.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            self.head_done = true;
            if !self.masked && !self.head.starts_with(b"HTTP/1.1 101 ") {
                self.raw = true;
                return;
            }
            self.buf.extend_from_slice(&self.head[end + 4..]);
        } else {
            self.buf.extend_from_slice(bytes);
        }
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(None) => return,
                Ok(Some(item)) => {
                    assert!(!self.closed, "a frame after our Close: {item:?}");
                    if let Decoded::Close(frame) = item {
                        // The decoder refuses unsendable codes and bad reasons, so this is checked.
                        if let Some(f) = frame {
                            assert!(f.code.is_sendable(), "we sent close code {}", f.code.0);
                        }
                        self.closed = true;
                    }
                }
                Err(e) => panic!("a frame we wrote does not decode: {e:?}"),
            }
        }
    }
}

/// The runtime's view of one leg.
struct LegState {
    /// Bytes the peer sent that the runtime has not handed to the session yet.
    inbound: Vec<u8>,
    /// The peer does not read: only explicit short writes move bytes.
    hold_out: bool,
    /// The runtime does not hand `inbound` over on its own: only explicit reads do.
    hold_in: bool,
    /// Bytes the session wrote on this leg (taken by `advance`).
    written: Vec<u8>,
    /// `written + queued` when `write_closed` was first seen.
    closed_at: Option<usize>,
    /// The peer's EOF or an I/O error was handed over: nothing more is read.
    ended: bool,
    /// The largest read handed over (for the cap check).
    max_read: usize,
    /// A socket is open (the `Up` leg: after a successful connect).
    open: bool,
    watch: Option<WsWatch>,
}

impl LegState {
    fn new(open: bool, watch: Option<WsWatch>) -> Self {
        LegState {
            inbound: Vec::new(),
            hold_out: false,
            hold_in: false,
            written: Vec::new(),
            closed_at: None,
            ended: false,
            max_read: 0,
            open,
            watch,
        }
    }
}

fn leg_index(leg: Leg) -> usize {
    match leg {
        Leg::Down => 0,
        Leg::Up => 1,
    }
}

/// How many bytes the session has queued on `leg`, as a runtime's vectored write sees them.
fn queued_len(s: &dyn Session, leg: Leg) -> usize {
    let mut slots = [IoSlice::new(&[]); 1024];
    let k = s.slices(leg, &mut slots);
    assert!(k <= slots.len(), "slices filled more than it was given");
    if k == slots.len() {
        // Maybe more: count them all (a queue of 1-byte frames has two slices per byte).
        let mut all = vec![IoSlice::new(&[]); 1 << 17];
        let k = s.slices(leg, &mut all);
        assert!(k < all.len(), "over 2^17 slices queued");
        return all[..k].iter().map(|s| s.len()).sum();
    }
    slots[..k].iter().map(|s| s.len()).sum()
}

/// The first `n` bytes queued on `leg`.
fn queued_head(s: &dyn Session, leg: Leg, n: usize) -> Vec<u8> {
    let mut slots = [IoSlice::new(&[]); 1024];
    let k = s.slices(leg, &mut slots);
    let mut out = Vec::with_capacity(n);
    for s in &slots[..k] {
        let take = (n - out.len()).min(s.len());
        out.extend_from_slice(&s[..take]);
        if out.len() == n {
            break;
        }
    }
    out
}

/// What the mode-specific peers decide; the runtime does the rest.
trait Peers {
    /// The `Up` leg carries WebSocket frames written by the session (masked).
    fn up_is_ws(&self) -> bool;
    /// The `Down` leg carries WebSocket frames written by the session (unmasked).
    fn down_is_ws(&self) -> bool;
    /// Checks an action the session asked for (`resolved`: the last resolve answer).
    fn check_action(&mut self, action: &Action, resolved: &[SocketAddr]);
    /// The addresses the autopilot answers a resolve with.
    fn autopilot_addrs(&self, port: u16) -> Vec<SocketAddr> {
        vec![SocketAddr::new([8, 8, 8, 8].into(), port)]
    }
    /// The autopilot: bytes a peer sends on its own after the session wrote `written` on `leg`.
    fn auto_reply(&mut self, _leg: Leg, _written: &[u8]) -> Option<Vec<u8>> {
        None
    }
}

/// The runtime: the session, virtual time, both legs, and the actions awaiting an answer.
struct Rt<P: Peers> {
    s: Box<dyn Session + Send>,
    peers: P,
    now: Instant,
    legs: [LegState; 2],
    /// `Resolve`s asked for and not answered yet, oldest first.
    resolves: VecDeque<(String, u16)>,
    /// Whether a `Connect` awaits its answer.
    connecting: bool,
    /// `Deliver`s awaiting their result.
    deliveries: usize,
    resolved: Vec<SocketAddr>,
    /// Read caps per leg: what the session may queue towards it.
    caps: [usize; 2],
    autopilot: bool,
    finished: bool,
    /// `handle_timeout` calls since the last other input.
    spins: u32,
}

impl<P: Peers> Rt<P> {
    fn new(
        s: Box<dyn Session + Send>,
        peers: P,
        now: Instant,
        caps: [usize; 2],
        auto: bool,
    ) -> Self {
        let down = peers.down_is_ws().then(|| WsWatch::new(false));
        let mut rt = Rt {
            s,
            peers,
            now,
            legs: [LegState::new(true, down), LegState::new(false, None)],
            resolves: VecDeque::new(),
            connecting: false,
            deliveries: 0,
            resolved: Vec::new(),
            caps,
            autopilot: auto,
            finished: false,
            spins: 0,
        };
        rt.settle();
        rt
    }

    fn leg(&mut self, leg: Leg) -> &mut LegState {
        &mut self.legs[leg_index(leg)]
    }

    /// Drains the session's outputs and checks every invariant, as a runtime does after each input.
    fn settle(&mut self) {
        for _ in 0..256 {
            if self.finished {
                return;
            }
            let mut moved = self.drain_actions();
            for leg in Leg::BOTH {
                moved |= self.flush(leg, None);
            }
            self.check_caps();
            moved |= self.fire_timers();
            moved |= self.autopilot_step();
            if self.s.is_finished() {
                self.finish();
                return;
            }
            if !moved {
                return;
            }
        }
        panic!("the session never settles");
    }

    fn finish(&mut self) {
        assert!(
            self.s.end_reason().is_some(),
            "a finished session has no end reason"
        );
        assert_eq!(self.s.poll_action(), None, "an action after the end");
        self.finished = true;
    }

    fn drain_actions(&mut self) -> bool {
        let mut moved = false;
        while let Some(action) = self.s.poll_action() {
            moved = true;
            self.peers.check_action(&action, &self.resolved);
            match action {
                Action::Resolve { host, port } => {
                    // A newer resolve replaces an older one still unanswered (the runtime answers
                    // only the newest: an older answer may be for another origin).
                    self.resolves.clear();
                    self.resolves.push_back((host, port));
                }
                Action::Connect(addr) => {
                    assert!(
                        self.resolved.contains(&addr),
                        "dialled {addr}, not an address of the last resolve answer {:?}",
                        self.resolved
                    );
                    // A new Up leg: the runtime closes any open one first.
                    let watch = self.peers.up_is_ws().then(|| WsWatch::new(true));
                    self.legs[1] = LegState::new(false, watch);
                    self.connecting = true;
                }
                Action::Register(id) => assert!(!id.is_empty(), "registered an empty id"),
                Action::Deliver { to, .. } => {
                    assert!(!to.is_empty(), "delivered to an empty id");
                    self.deliveries += 1;
                }
            }
        }
        moved
    }

    /// Writes what the session queued on `leg`: everything (`limit` None, unless the leg is held), or
    /// at most `limit` bytes.
    fn flush(&mut self, leg: Leg, limit: Option<usize>) -> bool {
        let i = leg_index(leg);
        if !self.legs[i].open || (limit.is_none() && self.legs[i].hold_out) {
            return false;
        }
        let mut budget = limit.unwrap_or(usize::MAX);
        let mut moved = false;
        for _ in 0..10_000 {
            let total = queued_len(&*self.s, leg);
            if let Some(at) = self.legs[i].closed_at {
                assert!(
                    self.legs[i].written.len() + total <= at,
                    "{leg:?}: bytes queued after write_closed"
                );
            }
            let n = total.min(budget);
            if n == 0 {
                break;
            }
            moved = true;
            budget -= n;
            let bytes = queued_head(&*self.s, leg, n);
            assert_eq!(bytes.len(), n, "slices offered fewer bytes than counted");
            self.legs[i].written.extend_from_slice(&bytes);
            if let Some(w) = &mut self.legs[i].watch {
                w.feed(&bytes);
            }
            self.spins = 0;
            self.s.advance(leg, n, self.now);
            if self.s.is_finished() {
                break;
            }
        }
        self.note_write_closed(leg);
        if moved && self.autopilot {
            let written = std::mem::take(&mut self.legs[i].written);
            if let Some(reply) = self.peers.auto_reply(leg, &written) {
                self.legs[i].inbound.extend_from_slice(&reply);
            }
            self.legs[i].written = written;
        }
        moved
    }

    fn note_write_closed(&mut self, leg: Leg) {
        let i = leg_index(leg);
        if self.legs[i].open && self.legs[i].closed_at.is_none() && self.s.write_closed(leg) {
            let total = queued_len(&*self.s, leg);
            self.legs[i].closed_at = Some(self.legs[i].written.len() + total);
        }
    }

    fn check_caps(&mut self) {
        for leg in Leg::BOTH {
            let i = leg_index(leg);
            let total = queued_len(&*self.s, leg);
            // What is queued towards `leg` came in on the other one.
            let other = &self.legs[1 - i];
            let bound = self.caps[i] + 2 * other.max_read + SLACK;
            assert!(
                total <= bound,
                "{leg:?}: {total} bytes queued, over the cap {} (+ a read of {} + slack)",
                self.caps[i],
                other.max_read
            );
            self.note_write_closed(leg);
        }
    }

    /// Calls `handle_timeout` while the deadline has passed: at most three times in a row without
    /// another input in between.
    fn fire_timers(&mut self) -> bool {
        let mut fired = false;
        while let Some(t) = self.s.poll_timeout() {
            if t > self.now || self.s.is_finished() {
                break;
            }
            assert!(
                self.spins < 3,
                "poll_timeout stays in the past ({:?} before now) after handle_timeout",
                self.now - t
            );
            self.s.handle_timeout(self.now);
            self.spins += 1;
            fired = true;
            self.drain_actions();
        }
        fired
    }

    fn autopilot_step(&mut self) -> bool {
        if !self.autopilot {
            return false;
        }
        let mut moved = false;
        if let Some((_, port)) = self.resolves.front().cloned() {
            let addrs = self.peers.autopilot_addrs(port);
            self.resolve(Ok(addrs));
            moved = true;
        }
        if self.connecting {
            self.connected(None);
            moved = true;
        }
        for leg in Leg::BOTH {
            let i = leg_index(leg);
            if !self.legs[i].inbound.is_empty() && !self.legs[i].hold_in {
                moved |= self.read(leg, usize::MAX);
            }
        }
        moved
    }

    fn resolve(&mut self, result: Result<Vec<SocketAddr>, String>) {
        if self.resolves.pop_front().is_none() {
            return;
        }
        self.resolved = result.clone().unwrap_or_default();
        self.spins = 0;
        self.s.handle_resolved(result, self.now);
    }

    fn connected(&mut self, error: Option<std::io::ErrorKind>) {
        if !std::mem::take(&mut self.connecting) {
            return;
        }
        self.spins = 0;
        match error {
            None => {
                self.legs[1].open = true;
                self.s.handle_connected(self.now);
            }
            Some(e) => self.s.handle_connect_failed(e, self.now),
        }
    }

    /// Hands up to `n` inbound bytes of `leg` to the session, if it wants to read.
    fn read(&mut self, leg: Leg, n: usize) -> bool {
        let i = leg_index(leg);
        let l = &self.legs[i];
        if !l.open || l.ended || l.inbound.is_empty() || !self.s.wants_read(leg) {
            return false;
        }
        let n = n.clamp(1, l.inbound.len());
        let data: Vec<u8> = self.legs[i].inbound.drain(..n).collect();
        self.legs[i].max_read = self.legs[i].max_read.max(n);
        self.spins = 0;
        self.s
            .handle_input(leg, BytesMut::from(&data[..]), self.now);
        true
    }

    /// Applies one operation, then settles.
    fn apply(&mut self, op: PeerOp) {
        if self.finished {
            return;
        }
        self.spins = 0;
        match op {
            PeerOp::Send(leg, bytes) => {
                self.leg(leg).inbound.extend_from_slice(&bytes);
                if !self.leg(leg).hold_in {
                    self.read(leg, usize::MAX);
                }
            }
            PeerOp::Read(leg, n) => {
                self.read(leg, n);
            }
            PeerOp::HoldIn(leg) => {
                let l = self.leg(leg);
                l.hold_in = !l.hold_in;
            }
            PeerOp::HoldOut(leg) => {
                let l = self.leg(leg);
                l.hold_out = !l.hold_out;
            }
            PeerOp::Write(leg, n) => {
                self.flush(leg, Some(n));
            }
            PeerOp::Eof(leg) => {
                // Only a reading runtime sees the end, after what came before it.
                self.read(leg, usize::MAX);
                let i = leg_index(leg);
                let l = &self.legs[i];
                if l.open && !l.ended && l.inbound.is_empty() && self.s.wants_read(leg) {
                    self.legs[i].ended = true;
                    self.s.handle_eof(leg, self.now);
                }
            }
            PeerOp::IoError(leg, kind) => {
                let i = leg_index(leg);
                if self.legs[i].open && !self.legs[i].ended {
                    self.legs[i].ended = true;
                    self.legs[i].inbound.clear();
                    self.s.handle_io_error(leg, kind, self.now);
                }
            }
            PeerOp::Resolve(result) => {
                let port = self.resolves.front().map_or(0, |r| r.1);
                let result = result.map(|ips| {
                    ips.into_iter()
                        .map(|ip| SocketAddr::new(ip.parse().expect("a table address"), port))
                        .collect()
                });
                self.resolve(result);
            }
            PeerOp::Connect(error) => self.connected(error),
            PeerOp::Wait(ms) => {
                let step = match (ms, self.s.poll_timeout()) {
                    (u64::MAX, Some(t)) => t.saturating_duration_since(self.now),
                    (u64::MAX, None) => Duration::from_secs(3600),
                    (ms, _) => Duration::from_millis(ms),
                };
                self.now += step;
            }
            PeerOp::Deliver { text, data } => {
                let result = self.s.handle_delivery(Delivery { text, data }, self.now);
                if result == DeliveryResult::Full {
                    let q = queued_len(&*self.s, Leg::Down);
                    assert!(q > 0, "a delivery refused as Full with nothing queued");
                }
            }
            PeerOp::Shutdown => self.s.handle_shutdown(self.now),
            PeerOp::DeliveryResult(result) => {
                if self.deliveries > 0 {
                    self.deliveries -= 1;
                    self.s.handle_delivery_result(result, self.now);
                }
            }
        }
        self.settle();
    }

    /// The end: pending actions fail, peers read everything and go away, time passes. The session
    /// must finish.
    fn wind_down(&mut self) {
        for round in 0..64 {
            if self.finished {
                break;
            }
            if !self.resolves.is_empty() {
                self.apply(PeerOp::Resolve(Err("gone".into())));
            }
            if self.connecting {
                self.apply(PeerOp::Connect(Some(std::io::ErrorKind::ConnectionRefused)));
            }
            while self.deliveries > 0 && !self.finished {
                self.apply(PeerOp::DeliveryResult(DeliveryResult::Unknown));
            }
            for leg in Leg::BOTH {
                let l = self.leg(leg);
                l.hold_out = false;
                l.hold_in = false;
                if round > 0 {
                    l.inbound.clear();
                }
                self.apply(PeerOp::Eof(leg));
            }
            self.apply(PeerOp::Wait(u64::MAX));
        }
        assert!(self.finished, "the session never finished");
    }
}

/// One step of the runtime or a peer.
#[derive(Debug)]
enum PeerOp {
    /// The peer on a leg sends bytes (handed over at once unless the leg's input is held).
    Send(Leg, Vec<u8>),
    /// The runtime hands over up to this many of a leg's inbound bytes.
    Read(Leg, usize),
    /// Toggles whether inbound bytes are handed over on their own.
    HoldIn(Leg),
    /// Toggles whether the peer reads what the session writes.
    HoldOut(Leg),
    /// A short write of at most this many bytes.
    Write(Leg, usize),
    Eof(Leg),
    IoError(Leg, std::io::ErrorKind),
    /// The answer to the oldest pending resolve: addresses from [`ADDRS`], or an error.
    Resolve(Result<Vec<&'static str>, String>),
    /// The answer to the pending connect: success or an error.
    Connect(Option<std::io::ErrorKind>),
    /// Virtual time moves on (`u64::MAX`: to the deadline).
    Wait(u64),
    /// Another session's callback delivers a message.
    Deliver {
        text: bool,
        data: Bytes,
    },
    /// The answer to the oldest `Deliver`.
    DeliveryResult(DeliveryResult),
    /// The server drains: [`Session::handle_shutdown`].
    Shutdown,
}

fn leg_of(b: u8) -> Leg {
    if b & 1 == 0 {
        Leg::Down
    } else {
        Leg::Up
    }
}

/// A WebSocket frame: first byte, payload, masked with `mask` if any.
fn frame(b0: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(b0);
    let m = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(m | n as u8);
    } else if n <= 0xFFFF {
        out.push(m | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(m | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        None => out.extend_from_slice(payload),
        Some(k) => {
            out.extend_from_slice(&k);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
        }
    }
    out
}

/// A frame from the fuzz input: kind byte (opcode, FIN, RSV), payload kind and length, mask.
/// `texts` are the mode's JSON messages, picked by the payload's first byte.
fn read_frame(input: &mut Input<'_>, masked: bool, texts: &[String]) -> Vec<u8> {
    let kind = input.u8();
    let opcode = [0x1, 0x2, 0x0, 0x8, 0x9, 0xA, 0x3, 0xB][usize::from(kind & 7)];
    let fin = kind & 0x08 == 0;
    let rsv = if kind & 0x70 == 0x70 { 0x40 } else { 0 };
    // Rarely the wrong masking for the direction.
    let wrong_mask = kind & 0x80 != 0 && kind & 0x30 == 0x30;
    let b0 = (u8::from(fin) << 7) | rsv | opcode;
    let flavour = input.u8();
    let payload: Vec<u8> = match flavour % 6 {
        0 => {
            let n = usize::from(input.u8());
            input.bytes(n).to_vec()
        }
        1 | 2 if !texts.is_empty() => texts[usize::from(input.u8()) % texts.len()]
            .clone()
            .into_bytes(),
        3 => vec![b'a'; usize::from(input.u16() % 6000)],
        4 => {
            let code = PEER_CLOSE_CODES[usize::from(input.u8() % 8)];
            let mut p = code.to_be_bytes().to_vec();
            let n = usize::from(input.u8() % 130);
            p.extend("reason ✓ ".bytes().cycle().take(n));
            p
        }
        _ => "héllo ✓ "
            .bytes()
            .cycle()
            .take(usize::from(input.u8()))
            .collect(),
    };
    let key = [input.u8(), 0x5A, 0xC3, 0x11];
    let mask = if masked != wrong_mask {
        Some(key)
    } else {
        None
    };
    frame(b0, mask, &payload)
}

/// The common operations (kinds 0..=9 and 16); `None` for a kind (10..=15) the mode decodes itself.
fn read_common(kind: u8, input: &mut Input<'_>) -> Option<PeerOp> {
    Some(match kind {
        0 => {
            let leg = leg_of(input.u8());
            let n = usize::from(input.u8());
            PeerOp::Send(leg, input.bytes(n).to_vec())
        }
        1 => PeerOp::Read(leg_of(input.u8()), usize::from(input.u8())),
        2 => PeerOp::HoldIn(leg_of(input.u8())),
        3 => PeerOp::HoldOut(leg_of(input.u8())),
        4 => {
            let b = input.u8();
            PeerOp::Write(leg_of(b), usize::from(b >> 1) * 17)
        }
        5 => PeerOp::Eof(leg_of(input.u8())),
        6 => {
            let b = input.u8();
            PeerOp::IoError(leg_of(b), IO_ERRORS[usize::from(b >> 1) % 4])
        }
        7 => {
            let b = input.u8();
            if b & 0x80 != 0 {
                PeerOp::Resolve(Err("Name or service not known".into()))
            } else {
                let n = usize::from(b % 4) + 1;
                let addrs = (0..n)
                    .map(|_| ADDRS[usize::from(input.u8()) % ADDRS.len()])
                    .collect();
                PeerOp::Resolve(Ok(addrs))
            }
        }
        8 => {
            let b = input.u8();
            PeerOp::Connect((b & 0x80 != 0).then(|| CONNECT_ERRORS[usize::from(b % 4)]))
        }
        9 => PeerOp::Wait(WAITS_MS[usize::from(input.u8() % 8)]),
        16 => PeerOp::Shutdown,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------------------
// ws2tcp_session
// ---------------------------------------------------------------------------------------------------------

/// The handshakes and tunnel control messages a `ws2tcp` client may send.
fn ws2tcp_texts() -> Vec<String> {
    let mut t = Vec::new();
    let hosts = [
        "public.test",
        "8.8.8.8",
        "127.0.0.1",
        "[::1]",
        "::ffff:127.0.0.1",
        "169.254.169.254",
        "0x7f000001",
        "evil.test:80",
        "",
        "a b",
    ];
    let ports = ["80", "0", "65535", "65536", "-1", "\"22\"", "\"x\"", "1.5"];
    for (i, h) in hosts.iter().enumerate() {
        let proto = ["tcp", "tls", "udp"][i % 3];
        for p in ports {
            t.push(format!(
                r#"{{"protocol":"{proto}","target_ip":"{h}","target_port":{p}}}"#
            ));
        }
    }
    t.extend(
        [
            r#"{"type":"bridge_hello","version":1,"connection_id":"c1","client_ip":"203.0.113.7","client_port":5}"#,
            r#"{"type":"eof"}"#,
            r#"{"type":"tls_started"}"#,
            r#"{"protocol":"tcp"}"#,
            "[1,2]",
            "{",
            "null",
        ]
        .map(String::from),
    );
    t
}

struct Ws2TcpPeers {
    policy: Option<TargetPolicy>,
}

impl Peers for Ws2TcpPeers {
    fn up_is_ws(&self) -> bool {
        false
    }
    fn down_is_ws(&self) -> bool {
        true
    }
    fn check_action(&mut self, action: &Action, _: &[SocketAddr]) {
        match action {
            Action::Connect(addr) => {
                if let Some(policy) = &self.policy {
                    assert!(
                        policy.check(*addr).is_ok(),
                        "dialled {addr}, which the policy denies"
                    );
                }
            }
            Action::Resolve { port, .. } => assert_ne!(*port, 0, "resolving for port 0"),
            Action::Register(_) | Action::Deliver { .. } => panic!("ws2tcp registers nothing"),
        }
    }
}

/// The `ws2tcp_session` target (see the module docs for the input format).
pub fn ws2tcp_session(data: &[u8], epoch: Instant) {
    let mut input = Input(data);
    let config = input.u8();
    let seed = input.u8();
    let mut cfg = Ws2TcpConfig::new("127.0.0.1:8080");
    cfg.buffer_size = if config & 1 != 0 { 1024 } else { 4096 };
    cfg.ws.max_message_size = 1024;
    cfg.ws.max_frame_size = 2048;
    cfg.ws.max_read_buffer = 4096;
    cfg.ping_interval = (config & 2 != 0).then(|| Duration::from_secs(30));
    cfg.ping_timeout = Duration::from_secs(10);
    cfg.idle_timeout = (config & 4 != 0).then(|| Duration::from_secs(300));
    cfg.max_lifetime = (config & 8 != 0).then(|| Duration::from_secs(3600));
    cfg.connect_timeout = Duration::from_secs(5);
    let dynamic = config & 0x10 == 0;
    if dynamic {
        if config & 0x20 != 0 {
            cfg.policy = TargetPolicy::parse(
                &["8.8.0.0/16:1-1000".into(), "2001:4860::/32".into()],
                &["8.8.4.4".into(), "[2001:4860::/48]:443".into()],
            )
            .expect("a valid policy");
        }
    } else {
        cfg.target = Some(StaticTarget::parse("vnc.internal:5900").expect("a target"));
    }
    let protocols: Vec<String> = match (config >> 5) & 3 {
        0 | 1 => Vec::new(),
        2 => vec!["binary".into()],
        _ => vec!["wsbridge.v1".into(), "binary".into()],
    };
    let policy = dynamic.then(|| cfg.policy.clone());
    let caps = [cfg.buffer_size, cfg.buffer_size];
    let over_capacity = seed == 0xFF;
    let factory = Ws2TcpFactory(Arc::new(cfg));
    let peer: SocketAddr = "203.0.113.7:51234".parse().expect("an address");
    let entropy = Box::new(CounterEntropy(u64::from(seed)));
    let s = if over_capacity {
        match factory.over_capacity(peer, entropy, epoch) {
            Some(s) => s,
            None => return,
        }
    } else {
        factory.session(peer, entropy, epoch)
    };
    let mut rt = Rt::new(s, Ws2TcpPeers { policy }, epoch, caps, config & 0x80 != 0);
    let (_, request) = ClientHandshake::new(
        &mut CounterEntropy(9),
        "gw.test",
        "/",
        &protocols,
        &[("Origin".into(), "https://app.test".into())],
    )
    .expect("a valid request");
    rt.apply(PeerOp::Send(Leg::Down, request.to_vec()));
    let texts = ws2tcp_texts();
    while !input.is_empty() && !rt.finished {
        let kind = input.u8() % 17;
        let op = match read_common(kind, &mut input) {
            Some(op) => op,
            None => match kind {
                10..=13 => PeerOp::Send(Leg::Down, read_frame(&mut input, true, &texts)),
                _ => {
                    let n = usize::from(input.u16() % 8192);
                    PeerOp::Send(Leg::Up, vec![b't'; n])
                }
            },
        };
        rt.apply(op);
    }
    rt.wind_down();
}

// ---------------------------------------------------------------------------------------------------------
// tcp2ws_session
// ---------------------------------------------------------------------------------------------------------

/// The control messages a `tcp2ws` backend may send.
fn tcp2ws_texts() -> Vec<String> {
    [
        r#"{"type":"start_tls","reply":"220 2.0.0 Ready to start TLS\r\n"}"#,
        r#"{"type":"start_tls"}"#,
        r#"{"type":"start_tls","reply":5}"#,
        r#"{"type":"eof"}"#,
        r#"{"type":"future_thing","x":1}"#,
        r#"{"type":7}"#,
        "[1]",
        "{",
        "",
    ]
    .map(String::from)
    .to_vec()
}

struct Tcp2WsPeers {
    /// Whether the backend answered the upgrade already (autopilot).
    answered: bool,
    protocol: bool,
}

impl Tcp2WsPeers {
    /// The backend's 101 to the upgrade request at the front of `written`, if complete.
    fn answer(written: &[u8], protocol: bool) -> Option<Vec<u8>> {
        let mut reader = crate::http::head::HeadReader::new(16 << 10, 64);
        reader.feed(written);
        let req = reader.poll_request().ok()??;
        let info = validate_upgrade(&req).expect("our upgrade request is valid");
        let p = protocol.then_some("wsbridge.v1");
        Some(accept_response(&info, p, &[]).to_vec())
    }
}

impl Peers for Tcp2WsPeers {
    fn up_is_ws(&self) -> bool {
        true
    }
    fn down_is_ws(&self) -> bool {
        false
    }
    fn check_action(&mut self, action: &Action, _: &[SocketAddr]) {
        match action {
            Action::Resolve { host, port } => {
                assert_eq!((host.as_str(), *port), ("backend.test", 9000))
            }
            Action::Connect(_) => self.answered = false,
            Action::Register(_) | Action::Deliver { .. } => panic!("tcp2ws registers nothing"),
        }
    }
    fn auto_reply(&mut self, leg: Leg, written: &[u8]) -> Option<Vec<u8>> {
        if leg != Leg::Up || self.answered {
            return None;
        }
        let reply = Self::answer(written, self.protocol)?;
        self.answered = true;
        Some(reply)
    }
}

/// The `tcp2ws_session` target (see the module docs for the input format).
pub fn tcp2ws_session(data: &[u8], epoch: Instant) {
    let mut input = Input(data);
    let config = input.u8();
    let seed = input.u8();
    let mut cfg = Tcp2WsConfig::new(
        "0.0.0.0:1100",
        WsUrl::parse("ws://backend.test:9000/bridge").expect("a url"),
    );
    cfg.buffer_size = if config & 1 != 0 { 1024 } else { 4096 };
    cfg.ws.max_message_size = 1024;
    cfg.ws.max_frame_size = 2048;
    cfg.ws.max_read_buffer = 4096;
    cfg.ping_interval = (config & 2 != 0).then(|| Duration::from_secs(30));
    cfg.ping_timeout = Duration::from_secs(10);
    cfg.idle_timeout = (config & 4 != 0).then(|| Duration::from_secs(300));
    cfg.max_lifetime = (config & 8 != 0).then(|| Duration::from_secs(3600));
    cfg.half_close = if config & 0x10 != 0 {
        HalfClose::Eof
    } else {
        HalfClose::Close
    };
    let protocol = config & 0x20 == 0;
    let starttls = config & 0x40 != 0;
    if starttls {
        let server = test_tls_server();
        cfg.listener_tls = ListenerTls::StartTls;
        cfg.server_tls = Some(Arc::new(move || {
            Box::new(RustlsSession::server(server.clone()).expect("a TLS server session"))
                as Box<dyn TlsSession>
        }));
    }
    let caps = [cfg.buffer_size, cfg.buffer_size];
    let factory = Tcp2WsFactory(Arc::new(cfg));
    let peer: SocketAddr = "203.0.113.7:51234".parse().expect("an address");
    let s = factory.session(peer, Box::new(CounterEntropy(u64::from(seed))), epoch);
    let peers = Tcp2WsPeers {
        answered: false,
        protocol,
    };
    let mut rt = Rt::new(s, peers, epoch, caps, config & 0x80 != 0);
    let texts = tcp2ws_texts();
    let mut tls: Option<TlsClient> = None;
    while !input.is_empty() && !rt.finished {
        let kind = input.u8() % 17;
        let op = match read_common(kind, &mut input) {
            Some(op) => op,
            None => match kind {
                10..=12 => PeerOp::Send(Leg::Up, read_frame(&mut input, false, &texts)),
                13 => {
                    // The backend answers the upgrade it received (101, or a refusal).
                    let b = input.u8();
                    let reply = match b % 4 {
                        0 | 1 => {
                            Tcp2WsPeers::answer(&rt.legs[1].written, b & 4 == 0).unwrap_or_default()
                        }
                        2 => b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".to_vec(),
                        _ => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
                            .to_vec(),
                    };
                    PeerOp::Send(Leg::Up, reply)
                }
                15 if starttls => {
                    let b = input.u8();
                    match TlsClient::step(&mut tls, &rt.legs[0].written, b) {
                        Some(bytes) => PeerOp::Send(Leg::Down, bytes),
                        None => continue,
                    }
                }
                _ => {
                    let n = usize::from(input.u16() % 8192);
                    PeerOp::Send(Leg::Down, vec![b'c'; n])
                }
            },
        };
        rt.apply(op);
    }
    rt.wind_down();
}

/// The certificate and key of `mail.test`, self-signed (openssl, P-256, valid until 2126): the STARTTLS
/// listener of `tcp2ws_session` serves it and the scripted client trusts it.
const TEST_CERT: &[u8] = include_bytes!("mail-test-cert.der");
const TEST_KEY: &[u8] = include_bytes!("mail-test-key.der");

fn test_tls_server() -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(TEST_KEY.to_vec()));
    server_config(vec![(vec![CertificateDer::from(TEST_CERT.to_vec())], key)])
        .expect("the test certificate is valid")
}

/// A TLS client on the `Down` leg of `tcp2ws` once the backend asked for STARTTLS: it starts reading
/// the session's output at the offset where it was created (after the `reply`, if that was flushed).
struct TlsClient {
    session: RustlsSession,
    /// Offset in the `Down` output of the next byte to hand to the client.
    fed: usize,
    /// This client sent its close_notify: it reads nothing more, since rustls (0.23) counts its own
    /// close_notify as a fatal alert and asserts (debug builds) that no second one follows, which
    /// undecodable input after it would cause (rustls/rustls#959). The server under test still reads
    /// whatever the client sent before.
    closed: bool,
}

impl TlsClient {
    /// One client step picked by `b`: start (its ClientHello), pump (read what the server wrote; send
    /// what it has), write application data, or close_notify. Returns the ciphertext to send.
    fn step(client: &mut Option<TlsClient>, written: &[u8], b: u8) -> Option<Vec<u8>> {
        let c = match client {
            None => {
                let config = client_config(vec![CertificateDer::from(TEST_CERT.to_vec())])
                    .expect("a client config");
                let session = RustlsSession::client(config, "mail.test").expect("a client");
                client.insert(TlsClient {
                    session,
                    fed: written.len(),
                    closed: false,
                })
            }
            Some(c) => c,
        };
        // Whole records only, and nothing after the server's close_notify: rustls (0.23) trips a debug
        // assertion on bytes that follow a close_notify in the same read (rustls/rustls#959), which a
        // client fed arbitrary relayed plaintext would hit.
        while written.len() - c.fed >= 5 && !c.session.peer_closed() && !c.closed {
            let head = &written[c.fed..c.fed + 5];
            let end = c.fed + 5 + usize::from(u16::from_be_bytes([head[3], head[4]]));
            if end > written.len() {
                break;
            }
            if c.session.handle_ciphertext(&written[c.fed..end]).is_err() {
                c.fed = written.len();
                break;
            }
            c.fed = end;
            let mut plain = BytesMut::new();
            while matches!(c.session.read_plaintext(&mut plain, 1 << 16), Ok(n) if n > 0) {}
        }
        match b % 4 {
            2 => {
                let n = usize::from(b >> 2) * 40;
                c.session.write_plaintext(&vec![b'T'; n]);
            }
            3 => {
                c.session.send_close_notify();
                c.closed = true;
            }
            _ => {}
        }
        let mut out = Vec::new();
        while let Some(bytes) = c.session.take_ciphertext() {
            out.extend_from_slice(&bytes);
        }
        (!out.is_empty()).then_some(out)
    }
}

// ---------------------------------------------------------------------------------------------------------
// ws2http_session
// ---------------------------------------------------------------------------------------------------------

const F_URL: &str = "http://backend.test/frame";
const D_URL: &str = "http://backend.test/disconnect";
const SEND_ID: &str = "0f0e0d0c-0b0a-4908-8706-050403020100";

/// The request that opens a `ws2http` connection, picked by `b`.
fn ws2http_request(b: u8) -> Vec<u8> {
    let upgrade = |target: &str, extra: &[(String, String)]| {
        ClientHandshake::new(&mut CounterEntropy(9), "bridge.test", target, &[], extra)
            .expect("a valid request")
            .1
            .to_vec()
    };
    match b % 10 {
        0..=3 => upgrade(&format!("/connect?f={F_URL}&d={D_URL}"), &[]),
        4 => upgrade(
            "/connect",
            &[
                ("ws-bridge-on-frame".into(), F_URL.into()),
                ("x-ws-proxy-on-disconnect".into(), D_URL.into()),
            ],
        ),
        5 => upgrade("/connect?f=http://evil.test/frame&d=http://backend.test/d", &[]),
        6 => format!(
            "POST /send/{SEND_ID} HTTP/1.1\r\nHost: bridge.test\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 5\r\n\r\nhello"
        )
        .into_bytes(),
        7 => format!(
            "POST /send/{SEND_ID} HTTP/1.1\r\nHost: bridge.test\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        .into_bytes(),
        8 => b"GET /healthz HTTP/1.1\r\nHost: bridge.test\r\n\r\n".to_vec(),
        _ => b"OPTIONS /x HTTP/1.1\r\nHost: bridge.test\r\n\r\n".to_vec(),
    }
}

/// A backend's answer to a POST, picked by the input.
fn ws2http_response(input: &mut Input<'_>) -> Vec<u8> {
    let b = input.u8();
    let status = [200u16, 204, 201, 302, 404, 500, 100, 101][usize::from(b & 7)];
    let body_len = usize::from(input.u16() % 1500);
    let body = vec![b'r'; body_len];
    let mut out = format!("HTTP/1.1 {status} X\r\n").into_bytes();
    match (b >> 3) % 4 {
        0 => out.extend_from_slice(format!("Content-Length: {body_len}\r\n\r\n").as_bytes()),
        1 => {
            out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for piece in body.chunks(100) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            return out;
        }
        2 => out.extend_from_slice(b"Connection: close\r\n\r\n"),
        _ => out.extend_from_slice(b"Content-Length: 0\r\nConnection: keep-alive\r\n\r\n"),
    }
    if status != 204 && status >= 200 {
        out.extend_from_slice(&body);
    }
    out
}

struct Ws2HttpPeers;

impl Peers for Ws2HttpPeers {
    fn up_is_ws(&self) -> bool {
        false
    }
    fn down_is_ws(&self) -> bool {
        true
    }
    fn check_action(&mut self, action: &Action, _: &[SocketAddr]) {
        if let Action::Resolve { host, port } = action {
            assert_eq!(
                (host.as_str(), *port),
                ("backend.test", 80),
                "resolving a host the allowlist does not allow"
            );
        }
    }
    fn autopilot_addrs(&self, port: u16) -> Vec<SocketAddr> {
        vec![SocketAddr::new([10, 0, 0, 1].into(), port)]
    }
    fn auto_reply(&mut self, leg: Leg, written: &[u8]) -> Option<Vec<u8>> {
        // The backend answers each batch of bytes it received with an empty 200.
        if leg != Leg::Up || written.is_empty() {
            return None;
        }
        Some(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec())
    }
}

/// The `ws2http_session` target (see the module docs for the input format).
pub fn ws2http_session(data: &[u8], epoch: Instant) {
    let mut input = Input(data);
    let config = input.u8();
    let seed = input.u8();
    let mut cfg = Ws2HttpConfig::new(Ws2HttpConfig::DEFAULT_LISTEN);
    cfg.allowlist =
        Allowlist::new(&[r"http://backend\.test/.*".into()], &[]).expect("a valid allowlist");
    cfg.client_buffer = if config & 1 != 0 { 1024 } else { 4096 };
    cfg.max_message_size = 1024;
    cfg.max_response_size = 1024;
    cfg.ws.max_message_size = 1024;
    cfg.ws.max_frame_size = 2048;
    cfg.ws.max_read_buffer = 4096;
    cfg.ping_interval = (config & 2 != 0).then(|| Duration::from_secs(30));
    cfg.ping_timeout = Duration::from_secs(10);
    cfg.idle_timeout = (config & 4 != 0).then(|| Duration::from_secs(300));
    cfg.backend_timeout = Duration::from_secs(5);
    cfg.group_by_host = config & 8 != 0;
    let caps = [
        cfg.client_buffer + cfg.max_message_size,
        cfg.max_message_size,
    ];
    let over_capacity = seed == 0xFF;
    let factory = Ws2HttpFactory(Arc::new(cfg));
    let peer: SocketAddr = "203.0.113.7:51234".parse().expect("an address");
    let entropy = Box::new(CounterEntropy(u64::from(seed)));
    let s = if over_capacity {
        match factory.over_capacity(peer, entropy, epoch) {
            Some(s) => s,
            None => return,
        }
    } else {
        factory.session(peer, entropy, epoch)
    };
    let mut rt = Rt::new(s, Ws2HttpPeers, epoch, caps, config & 0x80 != 0);
    rt.apply(PeerOp::Send(Leg::Down, ws2http_request(config >> 4)));
    let texts: Vec<String> = ["hello", "{\"a\":1}", ""].map(String::from).to_vec();
    while !input.is_empty() && !rt.finished {
        let kind = input.u8() % 17;
        let op = match read_common(kind, &mut input) {
            Some(op) => op,
            None => match kind {
                10 | 11 => PeerOp::Send(Leg::Down, read_frame(&mut input, true, &texts)),
                12 => PeerOp::Send(Leg::Up, ws2http_response(&mut input)),
                13 => {
                    let b = input.u8();
                    // A callback body is at most max_message_size.
                    let n = usize::from(input.u16() % 1000);
                    let data = if b & 1 != 0 {
                        Bytes::from("ü✓x".repeat(n / 6 + 1))
                    } else {
                        Bytes::from(vec![0xFE; n])
                    };
                    PeerOp::Deliver {
                        text: b & 1 != 0,
                        data,
                    }
                }
                14 => PeerOp::DeliveryResult(
                    [
                        DeliveryResult::Accepted,
                        DeliveryResult::Full,
                        DeliveryResult::Unknown,
                    ][usize::from(input.u8() % 3)],
                ),
                _ => {
                    let n = usize::from(input.u8());
                    PeerOp::Send(Leg::Up, input.bytes(n).to_vec())
                }
            },
        };
        rt.apply(op);
    }
    rt.wind_down();
}
