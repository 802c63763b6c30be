//! [`Tcp2WsSession`]: one TCP client bridged to its own WebSocket to the backend (DESIGN §1.1).
//!
//! The life of a session:
//! 1. **ClientTls** (implicit TLS only): the client's TLS handshake, so `bridge_hello` can carry the SNI;
//! 2. **Resolving → Connecting**: the backend's name is resolved by the runtime and its addresses tried in
//!    order;
//! 3. **Upgrading**: the HTTP upgrade (with the forwarding headers) and its 101;
//! 4. **Open**: `bridge_hello` goes first, then Binary frames carry data both ways and Text frames carry
//!    JSON control; STARTTLS, heartbeats and half-close happen here;
//! 5. **ending**: both queues are flushed (bounded by the close timeout), then the runtime closes both
//!    sockets.
//!
//! It implements [`Session`]; see that trait for the calling contract.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::config::{HalfClose, ListenerTls, Tcp2WsConfig, TUNNEL_PROTOCOL};
use super::control::{self, ClientFacts, FromBackend};
use crate::deadline::QuietDeadline;
use crate::http::head::HeadReader;
use crate::session::{Action, EndReason, Leg, Session, Traffic};
use crate::wire::{Beat, Earliest, Heartbeat, Wire};
use crate::ws::handshake::ClientHandshake;
use crate::ws::{CloseCode, CloseFrame, Event, Role, Utf8Bytes, WebSocket};
use crate::Entropy;

/// The backend side of the session.
enum Up {
    /// Implicit TLS: waiting for the client's handshake before dialling.
    Waiting,
    /// The runtime resolves the backend's name.
    Resolving,
    /// Dialling (boxed, like [`Up::Upgrading`]).
    Connecting(Box<Dialling>),
    /// Upgrade request sent; reading the 101 (boxed: the established session keeps only [`Up::Open`]).
    Upgrading(Box<Upgrade>),
    /// The WebSocket is open (or closing).
    Open(Box<WebSocket>),
    /// Nothing more happens on the backend leg.
    Gone,
}

/// The backend's addresses being dialled: `addrs[next - 1]` now.
struct Dialling {
    addrs: Vec<SocketAddr>,
    next: usize,
}

/// The backend's upgrade in progress.
struct Upgrade {
    handshake: ClientHandshake,
    head: HeadReader,
}

/// The client side's TLS state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientTls {
    /// No TLS (yet).
    Off,
    /// The TLS handshake is running.
    Handshaking { starttls: bool },
    /// TLS is up.
    Up,
}

/// How the session is ending. The deadlines are boxed: a running session keeps only the tag.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Running.
    No,
    /// Flushing both legs until they are empty, or until nothing moved for the close timeout.
    Flushing(Box<QuietDeadline>),
    /// Done: the runtime closes both sockets.
    Finished,
}

/// See the module docs.
pub struct Tcp2WsSession {
    cfg: Arc<Tcp2WsConfig>,
    /// The session's id, also in logs.
    id: Box<str>,
    client: SocketAddr,
    /// TLS was up on the client connection before the backend was dialled (implicit TLS)…
    implicit_tls: bool,
    /// … and the server name the client asked for in its ClientHello, until `bridge_hello` has told.
    sni: Option<Box<str>>,
    created: Instant,
    entropy: Option<Box<dyn Entropy + Send>>,

    down: Wire,
    client_tls: ClientTls,
    /// Client plaintext not yet sent to the backend (before the WebSocket is open); never empty when
    /// present. Boxed: an established session keeps only a null pointer.
    pending: Option<Box<BytesMut>>,
    client_eof: bool,
    /// No more bytes go to the client: shut its write side once flushed.
    down_write_closed: bool,

    up: Up,
    upwire: Wire,
    hello_sent: bool,
    /// When `bridge_hello` went out (the backend's 101 arrived): the session is established.
    established: Option<Instant>,

    heartbeat: Heartbeat,
    last_activity: Instant,
    eof_deadline: Option<Instant>,
    ending: Ending,
    end: Option<EndReason>,
    actions: VecDeque<Action>,
    traffic: Traffic,
}

impl Tcp2WsSession {
    /// A session for a client accepted at `now` from `client`. `entropy` makes the connection id, the
    /// handshake key and the masking keys.
    pub fn new(
        cfg: Arc<Tcp2WsConfig>,
        client: SocketAddr,
        mut entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Self {
        let connection_id = crate::session::new_connection_id(&mut *entropy).into_boxed_str();
        let implicit = cfg.listener_tls == ListenerTls::Implicit;
        let mut down = Wire::plain();
        let (up, client_tls) = match (implicit, &cfg.server_tls) {
            (true, Some(factory)) => {
                down.set_tls(factory());
                (Up::Waiting, ClientTls::Handshaking { starttls: false })
            }
            _ => (Up::Resolving, ClientTls::Off),
        };
        let mut s = Tcp2WsSession {
            id: connection_id,
            client,
            implicit_tls: false,
            sni: None,
            created: now,
            entropy: Some(entropy),
            down,
            client_tls,
            pending: None,
            client_eof: false,
            down_write_closed: false,
            up,
            upwire: Wire::plain(),
            hello_sent: false,
            established: None,
            heartbeat: Heartbeat::Off,
            last_activity: now,
            eof_deadline: None,
            ending: Ending::No,
            end: None,
            actions: VecDeque::new(),
            traffic: Traffic::default(),
            cfg,
        };
        if matches!(s.up, Up::Resolving) {
            s.resolve();
        }
        s
    }

    /// The client's address.
    pub fn client(&self) -> SocketAddr {
        self.client
    }

    fn resolve(&mut self) {
        self.up = Up::Resolving;
        let b = &self.cfg.backend;
        self.actions.push_back(Action::Resolve {
            host: b.host.clone(),
            port: b.port,
        });
    }

    fn ws(&mut self) -> Option<&mut WebSocket> {
        match &mut self.up {
            Up::Open(ws) => Some(ws),
            _ => None,
        }
    }

    // ---- ending ----

    /// Records why the session ends (the first reason wins) and starts flushing.
    fn end_with(&mut self, reason: EndReason, now: Instant) {
        if self.end.is_none() {
            self.end = Some(reason);
        }
        if self.ending == Ending::No {
            self.ending =
                Ending::Flushing(Box::new(QuietDeadline::new(now, self.cfg.ws.close_timeout)));
        }
        self.down_write_closed = true;
    }

    /// Ends at once: nothing more is flushed (the peer is gone or misbehaving).
    fn abort(&mut self, reason: EndReason) {
        if self.end.is_none() {
            self.end = Some(reason);
        }
        self.ending = Ending::Finished;
    }

    /// Closes the backend WebSocket with `code` (if it is open) and ends the session.
    fn close_backend(&mut self, code: CloseCode, reason: &str, end: EndReason, now: Instant) {
        if let Some(ws) = self.ws() {
            let _ = ws.close(Some(&CloseFrame::new(code, reason)), now);
        }
        self.end_with(end, now);
    }

    /// Sends the backend its Close but keeps relaying its tail to the client until the backend's Close
    /// (the client's write side stays open, unless a backend `eof` already shut it for good: the
    /// runtime may have sent that FIN, so it must stay — a fuzz finding).
    fn close_backend_keep_tail(
        &mut self,
        code: CloseCode,
        reason: &str,
        end: EndReason,
        now: Instant,
    ) {
        let backend_eof = self.down_write_closed;
        self.close_backend(code, reason, end, now);
        self.down_write_closed = backend_eof;
    }

    /// Bytes moved: an ending session keeps flushing.
    fn progress(&mut self) {
        if let Ending::Flushing(wait) = &mut self.ending {
            wait.progress();
        }
    }

    fn update_finished(&mut self) {
        if let Ending::Flushing(_) = self.ending {
            let up_idle = match &self.up {
                Up::Open(ws) => ws.is_closed() && !ws.wants_write(),
                _ => true,
            };
            if self.down.queued() == 0 && self.upwire.queued() == 0 && up_idle {
                self.ending = Ending::Finished;
            }
        }
    }

    // ---- the client leg ----

    fn on_client_bytes(&mut self, data: BytesMut, now: Instant) {
        let was_handshaking = matches!(self.client_tls, ClientTls::Handshaking { .. });
        let plain = match self.down.receive(data) {
            Ok(p) => p,
            Err(e) => return self.client_tls_failed(e, now),
        };
        if was_handshaking {
            let done = self.down.tls().is_some_and(|t| !t.is_handshaking());
            if done {
                self.client_tls_up(now);
            }
        }
        if let Some(plain) = plain {
            self.forward_to_backend(plain, now);
        }
        // The client's close_notify is its EOF: the TLS layer stops reading after it, so the socket's
        // FIN would never be seen.
        if !self.client_eof && self.down.tls().is_some_and(|t| t.peer_closed()) {
            self.on_client_eof(now);
        }
    }

    fn client_tls_failed(&mut self, why: String, now: Instant) {
        let starttls = matches!(self.client_tls, ClientTls::Handshaking { starttls: true });
        if starttls {
            self.traffic.starttls_failed += 1;
            if let Some(ws) = self.ws() {
                let _ = ws.send_text(Utf8Bytes::from(control::tls_failed(&why)));
            }
            self.close_backend(
                CloseCode::NORMAL,
                "client TLS failed",
                EndReason::PeerError(Leg::Down, why),
                now,
            );
        } else {
            self.end_with(
                EndReason::PeerError(Leg::Down, format!("TLS handshake: {why}")),
                now,
            );
        }
    }

    fn client_tls_up(&mut self, now: Instant) {
        let starttls = matches!(self.client_tls, ClientTls::Handshaking { starttls: true });
        self.client_tls = ClientTls::Up;
        let info = self.down.tls().and_then(|t| t.info());
        let sni = info.as_ref().and_then(|i| i.sni.clone());
        if starttls {
            self.traffic.starttls_ok += 1;
            let (version, cipher) = info
                .as_ref()
                .map(|i| (i.version, i.cipher.clone()))
                .unwrap_or(("unknown", String::new()));
            let msg = control::tls_started(version, &cipher, sni.as_deref());
            if let Some(ws) = self.ws() {
                let _ = ws.send_text(Utf8Bytes::from(msg));
            }
        } else {
            self.implicit_tls = true;
            self.sni = sni.map(String::into_boxed_str);
            self.resolve();
        }
        let _ = now;
    }

    fn forward_to_backend(&mut self, data: BytesMut, now: Instant) {
        if data.is_empty() {
            return;
        }
        self.last_activity = now;
        match &mut self.up {
            Up::Open(ws) if self.hello_sent && ws.is_open() => {
                self.traffic.down_to_up += data.len() as u64;
                let _ = ws.send_binary(data.freeze(), true);
            }
            _ => match &mut self.pending {
                Some(pending) => pending.unsplit(data),
                None => self.pending = Some(Box::new(data)),
            },
        }
    }

    fn on_client_eof(&mut self, now: Instant) {
        self.client_eof = true;
        if matches!(self.client_tls, ClientTls::Handshaking { starttls: false }) {
            // The client left during its TLS handshake: nothing was bridged.
            self.end_with(EndReason::Normal, now);
        } else if self.hello_sent {
            self.apply_client_eof(now);
        }
        // Otherwise `open` applies it after forwarding what the client sent first.
    }

    /// Maps the client's FIN to the backend as `--half-close` says.
    fn apply_client_eof(&mut self, now: Instant) {
        match self.cfg.half_close {
            HalfClose::Close => self.close_backend_keep_tail(
                CloseCode::NORMAL,
                "client closed",
                EndReason::Normal,
                now,
            ),
            HalfClose::Eof => {
                if let Some(ws) = self.ws() {
                    let _ = ws.send_text(Utf8Bytes::from(control::eof()));
                }
                self.eof_deadline = Some(now + self.cfg.eof_timeout);
            }
        }
    }

    // ---- the backend leg ----

    fn on_backend_bytes(&mut self, data: BytesMut, now: Instant) {
        let plain = match self.upwire.receive(data) {
            Ok(Some(p)) => p,
            Ok(None) => return,
            Err(e) => return self.backend_failed(format!("TLS: {e}"), now),
        };
        match &mut self.up {
            Up::Upgrading(upgrade) => {
                let Upgrade { handshake, head } = &mut **upgrade;
                head.feed(&plain);
                let resp = match head.poll_response() {
                    Ok(Some(r)) => r,
                    Ok(None) => return,
                    Err(e) => {
                        return self
                            .backend_failed(format!("bad upgrade response: {}", e.reason), now)
                    }
                };
                if let Err(e) = handshake.validate(&resp) {
                    return self.backend_failed(e.to_string(), now);
                }
                let rest = head.take_remainder();
                let entropy = self.entropy.take().expect("the WebSocket is created once");
                let mut ws = WebSocket::new(Role::Client(entropy), &self.cfg.ws);
                ws.handle_input(rest);
                self.up = Up::Open(Box::new(ws));
                self.open(now);
            }
            Up::Open(ws) => ws.handle_input(plain),
            _ => {}
        }
    }

    /// The WebSocket is open: `bridge_hello` first, then whatever the client already sent.
    fn open(&mut self, now: Instant) {
        let hello = control::bridge_hello(&ClientFacts {
            connection_id: self.id.to_string(),
            client: self.client,
            listener: self.cfg.listen.clone(),
            tls: self.implicit_tls,
            sni: self.sni.take().map(String::from),
        });
        let pending = self.pending.take();
        let Some(ws) = self.ws() else { return };
        let _ = ws.send_text(Utf8Bytes::from(hello));
        if let Some(pending) = pending {
            let n = pending.len() as u64;
            let _ = ws.send_binary(pending.freeze(), true);
            self.traffic.down_to_up += n;
        }
        self.hello_sent = true;
        self.established = Some(now);
        self.last_activity = now;
        self.heartbeat = Heartbeat::start(self.cfg.ping_interval, now);
        if self.client_eof {
            // The client closed while we were still dialling; its data went first.
            self.apply_client_eof(now);
        }
    }

    fn backend_failed(&mut self, why: String, now: Instant) {
        self.up = Up::Gone;
        self.end_with(EndReason::Upstream(why), now);
    }

    /// Handles backend events while the client's queue has room.
    fn pump_backend_events(&mut self, now: Instant) {
        loop {
            if self.down.queued() >= self.cfg.buffer_size {
                return;
            }
            let Up::Open(ws) = &mut self.up else { return };
            let Some(event) = ws.poll_event() else { return };
            match event {
                Event::Binary { data, .. } => {
                    if self.down_write_closed {
                        continue; // the client's write side is shut (backend eof); drop late data
                    }
                    self.last_activity = now;
                    self.traffic.up_to_down += data.len() as u64;
                    self.down.send(data);
                }
                Event::Text(text) => self.on_control(text.as_str(), now),
                Event::Ping(_) => {}
                Event::Pong(_) => self.heartbeat.on_pong(self.cfg.ping_interval, now),
                Event::Close(frame) => {
                    let reason = match frame {
                        Some(f) if f.code != CloseCode::NORMAL => {
                            EndReason::Upstream(format!("backend closed with {f}"))
                        }
                        _ => EndReason::Normal,
                    };
                    self.end_with(reason, now);
                }
                Event::Failed(e) => {
                    self.end_with(EndReason::PeerError(Leg::Up, e.to_string()), now);
                }
                Event::Eof => {
                    self.up = Up::Gone;
                    self.end_with(
                        EndReason::Upstream("backend closed without a Close frame".into()),
                        now,
                    );
                }
            }
        }
    }

    fn on_control(&mut self, text: &str, now: Instant) {
        match FromBackend::parse(text) {
            Err(bad) => {
                let why = bad.to_string();
                self.close_backend(
                    CloseCode::POLICY,
                    &why,
                    EndReason::PeerError(Leg::Up, why.clone()),
                    now,
                );
            }
            Ok(FromBackend::Unknown(_)) => {}
            Ok(FromBackend::Eof) => {
                // For good: nothing the TLS layer says later (an alert answering late client input)
                // may go out after the FIN (fuzz finding).
                self.down_write_closed = true;
                self.down.seal();
            }
            Ok(FromBackend::StartTls { reply }) => self.start_tls(reply, now),
        }
    }

    /// Switches the client connection to TLS. `reply` is the last plaintext the client gets; any client
    /// plaintext not yet forwarded is discarded, so nothing sent before the switch reaches TLS.
    fn start_tls(&mut self, reply: Option<String>, now: Instant) {
        if self.down_write_closed || self.client_eof || self.ending != Ending::No {
            // Too late: the client's write side is shut (its FIN may be out) or the session is
            // ending, so neither the reply nor a handshake can reach it (fuzz finding: the reply
            // was queued after the FIN).
            return;
        }
        let factory = match (&self.cfg.server_tls, self.cfg.listener_tls, self.client_tls) {
            (Some(f), ListenerTls::StartTls, ClientTls::Off) => f.clone(),
            _ => {
                let why = "start_tls is only valid once, on a --starttls listener";
                if let Some(ws) = self.ws() {
                    let _ = ws.send_text(Utf8Bytes::from(control::tls_failed(why)));
                }
                return self.close_backend(
                    CloseCode::POLICY,
                    why,
                    EndReason::Policy(why.into()),
                    now,
                );
            }
        };
        if let Some(reply) = reply {
            self.down.send(Bytes::from(reply));
        }
        self.pending = None;
        self.down.set_tls(factory());
        self.client_tls = ClientTls::Handshaking { starttls: true };
    }

    /// Moves the WebSocket's output into the backend's TLS layer (bounded, so pings still jump data).
    fn pump_backend_output(&mut self) {
        if let Up::Open(ws) = &mut self.up {
            self.upwire.pump_ws(ws);
        }
    }

    /// Runs after every input: events, heartbeat bookkeeping, output pumping, finishing.
    fn drive(&mut self, now: Instant) {
        self.pump_backend_events(now);
        self.pump_backend_output();
        self.down.flush();
        self.update_finished();
    }
}

impl Session for Tcp2WsSession {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, now: Instant) {
        self.progress();
        match leg {
            Leg::Down => self.on_client_bytes(data, now),
            Leg::Up => self.on_backend_bytes(data, now),
        }
        self.drive(now);
    }

    fn handle_eof(&mut self, leg: Leg, now: Instant) {
        match leg {
            Leg::Down => self.on_client_eof(now),
            Leg::Up => match &mut self.up {
                Up::Open(ws) => ws.handle_eof(),
                _ => self.backend_failed(
                    "backend closed the connection during the upgrade".into(),
                    now,
                ),
            },
        }
        self.drive(now);
    }

    fn handle_io_error(&mut self, leg: Leg, error: std::io::ErrorKind, now: Instant) {
        let why = format!("socket error: {error}");
        match leg {
            Leg::Down => {
                if let Some(ws) = self.ws() {
                    let _ = ws.close(
                        Some(&CloseFrame::new(
                            CloseCode::GOING_AWAY,
                            "client connection lost",
                        )),
                        now,
                    );
                }
                self.end_with(EndReason::PeerError(Leg::Down, why), now);
                self.down.discard();
            }
            Leg::Up => {
                self.up = Up::Gone;
                self.upwire.discard();
                self.end_with(EndReason::Upstream(why), now);
            }
        }
        self.drive(now);
    }

    fn handle_resolved(&mut self, result: Result<Vec<SocketAddr>, String>, now: Instant) {
        if !matches!(self.up, Up::Resolving) {
            return;
        }
        match result {
            Ok(addrs) if !addrs.is_empty() => {
                self.actions.push_back(Action::Connect(addrs[0]));
                self.up = Up::Connecting(Box::new(Dialling { addrs, next: 1 }));
            }
            Ok(_) => self.backend_failed(
                format!("{} resolved to no address", self.cfg.backend.host),
                now,
            ),
            Err(e) => self.backend_failed(
                format!("cannot resolve {}: {e}", self.cfg.backend.host),
                now,
            ),
        }
        self.drive(now);
    }

    fn handle_connected(&mut self, now: Instant) {
        if !matches!(self.up, Up::Connecting(_)) {
            return;
        }
        let b = &self.cfg.backend;
        let mut headers = vec![
            ("X-Forwarded-For".to_owned(), self.client.ip().to_string()),
            (
                "X-Forwarded-Port".to_owned(),
                self.client.port().to_string(),
            ),
            (
                "X-Forwarded-Proto".to_owned(),
                if self.implicit_tls { "tls" } else { "tcp" }.to_owned(),
            ),
            ("X-Wsbridge-Connection-Id".to_owned(), self.id.to_string()),
            ("X-Wsbridge-Listener".to_owned(), self.cfg.listen.clone()),
        ];
        if let Some(sni) = &self.sni {
            headers.push(("X-Wsbridge-Sni".to_owned(), sni.to_string()));
        }
        headers.extend(self.cfg.backend_headers.iter().cloned());
        let mut protocols = vec![TUNNEL_PROTOCOL.to_owned()];
        protocols.extend(self.cfg.subprotocols.iter().cloned());
        if b.tls {
            match self.cfg.client_tls.as_ref().map(|f| f(&b.host)) {
                Some(Ok(tls)) => self.upwire.set_tls(tls),
                Some(Err(e)) => return self.backend_failed(format!("TLS setup: {e}"), now),
                None => {
                    return self.backend_failed("no TLS client settings for wss://".into(), now)
                }
            }
        }
        let entropy = self
            .entropy
            .as_mut()
            .expect("entropy is kept until the WebSocket exists");
        match ClientHandshake::new(
            &mut **entropy,
            &b.host_header(),
            &b.path_and_query,
            &protocols,
            &headers,
        ) {
            Ok((handshake, request)) => {
                self.upwire.send(request);
                let ws = &self.cfg.ws;
                self.up = Up::Upgrading(Box::new(Upgrade {
                    handshake,
                    head: HeadReader::new(ws.max_head_size, ws.max_headers),
                }));
            }
            Err(e) => self.backend_failed(format!("cannot build the upgrade request: {e}"), now),
        }
        self.drive(now);
    }

    fn handle_connect_failed(&mut self, error: std::io::ErrorKind, now: Instant) {
        let Up::Connecting(dialling) = &mut self.up else {
            return;
        };
        let Dialling { addrs, next } = &mut **dialling;
        if let Some(addr) = addrs.get(*next).copied() {
            *next += 1;
            self.actions.push_back(Action::Connect(addr));
            return;
        }
        let why = format!("cannot connect to {}: {error}", self.cfg.backend);
        self.backend_failed(why, now);
        self.drive(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(ws) = self.ws() {
            ws.handle_timeout(now);
        }
        if let Ending::Flushing(wait) = &mut self.ending {
            if wait.expired(now) {
                self.ending = Ending::Finished;
                return;
            }
        }
        if self.ending == Ending::No {
            if !self.hello_sent && now >= self.created + self.cfg.handshake_timeout {
                let what = if matches!(self.client_tls, ClientTls::Handshaking { starttls: false })
                {
                    "client TLS handshake"
                } else {
                    "backend upgrade"
                };
                self.up = Up::Gone;
                self.abort(EndReason::Timeout(what));
                return;
            }
            if let Some(life) = self.cfg.max_lifetime {
                if now >= self.created + life {
                    self.close_backend(
                        CloseCode::GOING_AWAY,
                        "max lifetime",
                        EndReason::Timeout("lifetime"),
                        now,
                    );
                }
            }
            if let Some(idle) = self.cfg.idle_timeout {
                if now >= self.last_activity + idle {
                    self.close_backend(
                        CloseCode::NORMAL,
                        "idle timeout",
                        EndReason::Timeout("idle"),
                        now,
                    );
                }
            }
            if let Some(deadline) = self.eof_deadline {
                if now >= deadline {
                    self.close_backend(CloseCode::NORMAL, "eof timeout", EndReason::Normal, now);
                }
            }
            let ws = match &mut self.up {
                Up::Open(ws) => Some(&mut **ws),
                _ => None,
            };
            if self.heartbeat.on_timeout(ws, now) == Beat::Dead {
                self.traffic.heartbeat_misses += 1;
                self.close_backend(
                    CloseCode::GOING_AWAY,
                    "pong timeout",
                    EndReason::Timeout("backend pong"),
                    now,
                );
                // The backend is unresponsive: don't wait for its Close.
                self.abort(EndReason::Timeout("backend pong"));
            }
        }
        self.drive(now);
    }

    /// Open: Close 1001 after the queued data; the backend's tail (until its Close) still reaches the
    /// client, which then gets its FIN. Not yet open: nothing was bridged; the client gets its FIN.
    fn handle_shutdown(&mut self, now: Instant) {
        if self.ending == Ending::No {
            if self.hello_sent {
                self.close_backend_keep_tail(
                    CloseCode::GOING_AWAY,
                    "server going away",
                    EndReason::Shutdown,
                    now,
                );
            } else {
                self.up = Up::Gone;
                self.upwire.discard();
                self.end_with(EndReason::Shutdown, now);
            }
        }
        self.drive(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        crate::session::pop_action(&mut self.actions)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Earliest::default();
        match &self.ending {
            Ending::Finished => return None,
            Ending::Flushing(wait) => t.consider(Some(wait.deadline())),
            Ending::No => {
                if !self.hello_sent {
                    t.consider(Some(self.created + self.cfg.handshake_timeout));
                }
                t.consider(self.cfg.max_lifetime.map(|l| self.created + l));
                if self.hello_sent {
                    t.consider(self.cfg.idle_timeout.map(|i| self.last_activity + i));
                }
                t.consider(self.eof_deadline);
                t.consider(self.heartbeat.deadline());
            }
        }
        if let Up::Open(ws) = &self.up {
            t.consider(ws.poll_timeout());
        }
        t.0
    }

    fn wants_read(&self, leg: Leg) -> bool {
        if self.ending == Ending::Finished {
            return false;
        }
        match leg {
            Leg::Down => {
                if self.client_eof || self.ending != Ending::No {
                    return false;
                }
                let pending = self.pending.as_ref().map_or(0, |p| p.len());
                let queued = match &self.up {
                    Up::Open(ws) => ws.buffered_amount() + pending,
                    _ => pending,
                };
                queued < self.cfg.buffer_size && self.down.tls().is_none_or(|t| t.wants_read())
            }
            Leg::Up => match &self.up {
                Up::Upgrading(_) => true,
                Up::Open(ws) => ws.wants_read() && self.down.queued() < self.cfg.buffer_size,
                _ => false,
            },
        }
    }

    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        match leg {
            Leg::Down => self.down.out.slices(dst),
            Leg::Up => match &self.up {
                Up::Open(ws) => self.upwire.slices_with(Some(ws), dst),
                _ => self.upwire.out.slices(dst),
            },
        }
    }

    fn advance(&mut self, leg: Leg, n: usize, now: Instant) {
        if n > 0 {
            self.progress();
        }
        match leg {
            Leg::Down => self.down.out.advance(n),
            Leg::Up => {
                let pending = match &mut self.up {
                    Up::Open(ws) => {
                        self.upwire.advance_with(Some(ws), n);
                        ws.control_pending()
                    }
                    _ => {
                        self.upwire.out.advance(n);
                        false
                    }
                };
                self.heartbeat
                    .on_written(pending, self.cfg.ping_timeout, now);
            }
        }
        self.drive(now);
    }

    fn write_closed(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => self.down_write_closed,
            Leg::Up => match &self.up {
                Up::Open(ws) => ws.is_closed(),
                Up::Gone => true,
                _ => false,
            },
        }
    }

    fn is_finished(&self) -> bool {
        self.ending == Ending::Finished
    }

    fn connection_id(&self) -> &str {
        &self.id
    }

    fn end_reason(&self) -> Option<&EndReason> {
        self.end.as_ref()
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }

    fn established(&self) -> Option<Instant> {
        self.established
    }
}

/// Makes the sessions of a `tcp2ws` listener.
#[derive(Debug, Clone)]
pub struct Tcp2WsFactory(pub Arc<Tcp2WsConfig>);

impl crate::session::SessionFactory for Tcp2WsFactory {
    fn session(
        &self,
        peer: SocketAddr,
        entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        Box::new(Tcp2WsSession::new(self.0.clone(), peer, entropy, now))
    }

    fn over_capacity(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        _: Instant,
    ) -> Option<Box<dyn Session + Send>> {
        None
    }

    fn mode(&self) -> &'static str {
        "tcp2ws"
    }
}

#[cfg(test)]
mod tests {
    /// Issue #10: an idle tunnel costs about 2 KiB per process. What only matters while the session is
    /// set up (the dial, the upgrade, early client data) or ends (the close deadline) is boxed and
    /// dropped, so the established session stays this small.
    #[test]
    fn an_established_session_is_small() {
        let size = std::mem::size_of::<super::Tcp2WsSession>();
        assert!(size <= 520, "Tcp2WsSession is {size} bytes");
    }
}
