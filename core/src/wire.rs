//! The byte layer of one session leg, shared by every mode: [`Wire`] (plain, or a TLS session between
//! the socket and the protocol), and the [`Heartbeat`] a session keeps on a WebSocket leg.
//!
//! A leg that carries a WebSocket writes in one of two ways:
//! - **plain**: the socket takes [`Wire::slices_with`] — first whatever the wire itself holds (an HTTP
//!   head: the upgrade request or the 101), then the engine's frames, without a copy;
//! - **TLS**: [`Wire::pump_ws`] moves the engine's output through the TLS layer into the wire's queue,
//!   a bounded amount at a time, so control frames still jump queued data.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::tls::TlsSession;
use crate::ws::outq::OutQueue;
use crate::ws::WebSocket;

/// Ciphertext or plaintext queued towards a TLS layer before we stop feeding it more.
pub(crate) const TLS_PUMP: usize = 16 << 10;

/// One socket's byte layer: plain, or a TLS session between the socket and the protocol.
pub(crate) struct Wire {
    /// The TLS layer and what waits for it (boxed: a plain wire keeps only a null pointer).
    tls: Option<Box<TlsLayer>>,
    /// Bytes for the socket (ciphertext when TLS is on).
    pub(crate) out: OutQueue,
    /// A close_notify goes out once the held plaintext is in.
    closing: bool,
    /// [`Wire::seal`] was called: once the held plaintext is in, nothing more is queued.
    sealing: bool,
    /// Sealed and the held plaintext is queued: later TLS output (an alert answering late input) is
    /// dropped, since the runtime may have sent the FIN after it.
    sealed: bool,
}

/// A TLS session between the socket and the protocol.
struct TlsLayer {
    session: Box<dyn TlsSession>,
    /// Plaintext the TLS session has not accepted yet (it takes a bounded amount, and nothing while it
    /// handshakes past its limit). Never dropped: it goes in as the session drains.
    held: VecDeque<Bytes>,
    held_len: usize,
}

impl Wire {
    pub(crate) fn plain() -> Self {
        Wire {
            tls: None,
            out: OutQueue::new(),
            closing: false,
            sealing: false,
            sealed: false,
        }
    }

    /// A wire with `tls` between the socket and the protocol (its first flight, if any, is queued).
    pub(crate) fn with_tls(tls: Option<Box<dyn TlsSession>>) -> Self {
        let mut w = Wire::plain();
        if let Some(tls) = tls {
            w.set_tls(tls);
        }
        w.flush();
        w
    }

    /// Puts `tls` between the socket and the protocol from now on. What is queued stays queued; the
    /// first flight is queued at the next [`Wire::flush`].
    pub(crate) fn set_tls(&mut self, tls: Box<dyn TlsSession>) {
        match &mut self.tls {
            Some(layer) => layer.session = tls,
            None => {
                self.tls = Some(Box::new(TlsLayer {
                    session: tls,
                    held: VecDeque::new(),
                    held_len: 0,
                }))
            }
        }
    }

    /// The TLS session, if on.
    pub(crate) fn tls(&self) -> Option<&dyn TlsSession> {
        self.tls.as_ref().map(|layer| &*layer.session)
    }

    /// Bytes queued towards the peer, in any form.
    pub(crate) fn queued(&self) -> usize {
        self.out.len() + self.tls.as_ref().map_or(0, |layer| layer.held_len)
    }

    /// Queues plaintext for the peer, encrypting it if TLS is on.
    pub(crate) fn send(&mut self, data: Bytes) {
        let Some(layer) = &mut self.tls else {
            self.out.push_data(data, true);
            return;
        };
        layer.held_len += data.len();
        layer.held.push_back(data);
        self.flush();
    }

    /// Feeds held plaintext to the TLS layer and moves its ciphertext into the socket queue.
    pub(crate) fn flush(&mut self) {
        let Some(layer) = &mut self.tls else { return };
        let TlsLayer {
            session: tls,
            held,
            held_len,
        } = &mut **layer;
        while let Some(front) = held.front_mut() {
            let n = tls.write_plaintext(front);
            *held_len -= n;
            if n < front.len() {
                let _ = front.split_to(n);
                break;
            }
            held.pop_front();
        }
        if held.is_empty() {
            *held = VecDeque::new();
        }
        if std::mem::take(&mut self.closing) {
            if *held_len == 0 {
                tls.send_close_notify();
            } else {
                self.closing = true;
            }
        }
        while let Some(c) = tls.take_ciphertext() {
            if !self.sealed {
                self.out.push_data(c, true);
            }
        }
        self.sealed |= self.sealing && *held_len == 0;
    }

    /// No more plaintext will be sent: with TLS, a close_notify follows what is held.
    pub(crate) fn close_notify(&mut self) {
        self.closing = self.tls.is_some();
        self.flush();
    }

    /// Nothing is sent after what is queued and held now: the owner reports this side write-closed from
    /// here on, so the runtime may send the FIN as soon as the queue is empty. With TLS, whatever the
    /// TLS layer produces after the held plaintext (an alert answering late input) is dropped rather
    /// than queued behind the FIN.
    ///
    /// No close_notify: the peer may still send (a half-close), and rustls 0.23 counts its own
    /// close_notify as a fatal alert, so late garbage from the peer would trip its debug assertion
    /// that a second fatal alert is never sent (found by the `tcp2ws_session` fuzz target).
    pub(crate) fn seal(&mut self) {
        self.sealing = true;
        self.flush();
    }

    /// The peer is gone: drop everything queued for it.
    pub(crate) fn discard(&mut self) {
        self.out = OutQueue::new();
        if let Some(layer) = &mut self.tls {
            layer.held = VecDeque::new();
            layer.held_len = 0;
        }
    }

    /// TLS is on and still handshaking.
    pub(crate) fn handshaking(&self) -> bool {
        self.tls().is_some_and(|t| t.is_handshaking())
    }

    /// Whether the TLS layer (if any) takes more ciphertext now.
    pub(crate) fn wants_read(&self) -> bool {
        self.tls().is_none_or(|t| t.wants_read())
    }

    /// Feeds bytes read from the socket; returns the plaintext they carried.
    pub(crate) fn receive(&mut self, data: BytesMut) -> Result<Option<BytesMut>, String> {
        let Some(layer) = &mut self.tls else {
            return Ok(Some(data));
        };
        let result = layer
            .session
            .handle_ciphertext(&data)
            .map_err(|e| e.to_string());
        self.flush();
        result?;
        let Some(layer) = &mut self.tls else {
            return Ok(None);
        };
        let mut plain = BytesMut::new();
        layer
            .session
            .read_plaintext(&mut plain, usize::MAX)
            .map_err(|e| e.to_string())?;
        Ok((!plain.is_empty()).then_some(plain))
    }

    /// The bytes to write: the wire's own queue, then (plain only) the engine's frames.
    pub(crate) fn slices_with<'a>(
        &'a self,
        ws: Option<&'a WebSocket>,
        dst: &mut [IoSlice<'a>],
    ) -> usize {
        let mut n = self.out.slices(dst);
        if let (None, Some(ws)) = (&self.tls, ws) {
            if n < dst.len() {
                n += ws.slices(&mut dst[n..]);
            }
        }
        n
    }

    /// The socket took `n` bytes of what [`Wire::slices_with`] offered.
    pub(crate) fn advance_with(&mut self, ws: Option<&mut WebSocket>, n: usize) {
        let own = n.min(self.out.len());
        self.out.advance(own);
        if n > own {
            if let Some(ws) = ws {
                ws.advance(n - own);
            }
        }
    }

    /// With TLS on, moves the engine's output through the TLS layer into the socket queue (bounded, so
    /// pings still jump data). Without TLS it does nothing: the socket takes the frames directly.
    pub(crate) fn pump_ws(&mut self, ws: &mut WebSocket) {
        let Some(layer) = &mut self.tls else { return };
        let tls = &mut layer.session;
        while ws.wants_write() && self.out.len() < TLS_PUMP {
            let mut slots = [IoSlice::new(&[]); 8];
            let k = ws.slices(&mut slots);
            let mut took = 0;
            for s in &slots[..k] {
                let n = tls.write_plaintext(s);
                took += n;
                if n < s.len() {
                    break;
                }
            }
            ws.advance(took);
            while let Some(c) = tls.take_ciphertext() {
                self.out.push_data(c, true);
            }
            if took == 0 {
                break;
            }
        }
    }
}

/// The WebSocket heartbeat of a leg: a Ping every `interval`, and a Pong due `timeout` after the Ping
/// was actually written (not queued: a full queue must not count against the peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heartbeat {
    /// Next ping at this instant.
    Idle { next: Instant },
    /// A ping is queued, not yet written.
    Queued,
    /// A ping was written; its pong is due by this instant.
    Waiting { deadline: Instant },
    /// No heartbeat.
    Off,
}

/// What a due heartbeat asks of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    /// Nothing now.
    Nothing,
    /// The pong is overdue: the peer is unresponsive.
    Dead,
}

impl Heartbeat {
    /// Starts beating at `now` if `interval` is set.
    pub(crate) fn start(interval: Option<Duration>, now: Instant) -> Heartbeat {
        match interval {
            Some(i) => Heartbeat::Idle { next: now + i },
            None => Heartbeat::Off,
        }
    }

    /// A Pong arrived.
    pub(crate) fn on_pong(&mut self, interval: Option<Duration>, now: Instant) {
        if let (Some(i), Heartbeat::Waiting { .. } | Heartbeat::Queued) = (interval, *self) {
            *self = Heartbeat::Idle { next: now + i };
        }
    }

    /// Bytes were written on the leg; `control_pending` says whether the ping is still queued.
    pub(crate) fn on_written(&mut self, control_pending: bool, timeout: Duration, now: Instant) {
        if *self == Heartbeat::Queued && !control_pending {
            *self = Heartbeat::Waiting {
                deadline: now + timeout,
            };
        }
    }

    /// Called on a timeout: queues a due ping on `ws`, or reports an overdue pong.
    pub(crate) fn on_timeout(&mut self, ws: Option<&mut WebSocket>, now: Instant) -> Beat {
        match *self {
            Heartbeat::Idle { next } if now >= next => {
                if let Some(ws) = ws {
                    if ws.ping(b"wsbridge").is_ok() {
                        *self = Heartbeat::Queued;
                    }
                }
                Beat::Nothing
            }
            Heartbeat::Waiting { deadline } if now >= deadline => {
                *self = Heartbeat::Off;
                Beat::Dead
            }
            _ => Beat::Nothing,
        }
    }

    /// When [`Heartbeat::on_timeout`] must run next.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        match *self {
            Heartbeat::Idle { next } => Some(next),
            Heartbeat::Waiting { deadline } => Some(deadline),
            Heartbeat::Queued | Heartbeat::Off => None,
        }
    }
}

/// Collects the earliest of several optional deadlines.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Earliest(pub(crate) Option<Instant>);

impl Earliest {
    pub(crate) fn consider(&mut self, t: Option<Instant>) {
        if let Some(t) = t {
            self.0 = Some(self.0.map_or(t, |e| e.min(t)));
        }
    }
}
