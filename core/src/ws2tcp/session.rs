//! [`Ws2TcpSession`]: one WebSocket client relayed to a TCP (or TLS) target (DESIGN §1.2).
//!
//! The life of a session:
//! 1. **Upgrading**: optional TLS, then the HTTP upgrade, checked against `--path` and `--allow-origin`
//!    (404 / 403 otherwise). A plain request (no `Upgrade: websocket`) for one of the configured static
//!    pages (`--console`) is answered with the page instead, and the session ends;
//! 2. **Handshake** (dynamic mode only): the greeting goes out, the client's JSON handshake comes in;
//!    a bad one gets the failure status and Close 1008. Static mode (`--target`) skips this;
//! 3. **Resolving → Connecting → TargetTls**: the runtime resolves the host; in dynamic mode every
//!    address is checked against the [policy](super::policy) and only allowed ones are dialled, in order;
//!    with `tls` the target's certificate is checked. Any failure gets the failure status and Close
//!    1011 (or 1014 for a bad TLS answer); a denied target gets 1008. `--connect-timeout` bounds it all;
//! 4. **Relay**: the success status (dynamic mode), then client Text and Binary → target bytes, target
//!    bytes → Binary. On the `wsbridge.v1` tunnel, Text frames are control instead (`bridge_hello`,
//!    `eof`), so both directions close independently;
//! 5. **ending**: both queues are flushed (bounded by the close timeout), then the runtime closes both
//!    sockets.
//!
//! Client data that arrives before the target is connected waits (at most `buffer_size` bytes, then
//! the client is no longer read). No byte accepted from either side is dropped at close: the side that
//! closes first gets its queue flushed to the other before the session ends.
//!
//! **The client's Close is a half-close.** The engine defers its reply ([`CloseReply::Deferred`]): the
//! client's data goes to the target, whose write side is then shut (FIN, after a close_notify on TLS);
//! the target's answer keeps flowing to the client as Binary until the target's EOF, and only then does
//! the Close reply (1000) go out — bounded by the close timeout, after which the reply goes anyway. A
//! dial still under way when the Close arrives is finished first, so data sent right before the Close is
//! delivered. This is what makes `ws2tcp` a correct backend for `tcp2ws --half-close close` (a client's
//! FIN becomes a Close there, DESIGN §1.1) and loses no reply of a request-then-FIN client.
//!
//! **PROXY protocol to the target** (`--send-proxy-protocol`): the header is the first thing written on
//! the target leg, before any client byte and before the TLS handshake of the `tls` protocol. Its
//! destination is the target address connected to; its source is the WebSocket client's address —
//! except on the `wsbridge.v1` tunnel, where the client is a `tcp2ws` whose first frame is
//! `bridge_hello`: there the header waits for the tunnel's first frame (the dial goes on meanwhile;
//! no client byte can overtake it), and the source is `bridge_hello`'s `client_ip`/`client_port`, so
//! the target sees the original TCP client. If that first frame is anything else, or a `bridge_hello`
//! without a usable address, the WebSocket client's own address is sent.
//!
//! A TLS close_notify is the peer's EOF on either leg (the TLS layer reads nothing after it, so the
//! socket's FIN would never be seen).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::config::{Ws2TcpConfig, AT_CAPACITY, BINARY_PROTOCOL, TUNNEL_PROTOCOL};
use super::protocol::{self, Handshake, TargetProtocol, TunnelControl};
use crate::deadline::QuietDeadline;
use crate::front::{truncate, CapacitySession, Front, FrontInput, FrontState, Rules};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::session::{new_connection_id, Action, EndReason, Leg, Session, Traffic};
use crate::wire::{Beat, Earliest, Heartbeat, Wire};
use crate::ws::{CloseCode, CloseFrame, CloseReply, Event, Utf8Bytes, WebSocket};
use crate::Entropy;

/// How the client talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Socket2Web: greeting, JSON handshake, status, raw relay.
    Dynamic,
    /// `--target`: raw relay from the start (websockify).
    Static,
    /// `--target` with the `wsbridge.v1` subprotocol: Binary is data, Text is control.
    Tunnel,
}

/// Where the target side is.
enum Stage {
    /// Before the 101.
    Upgrading,
    /// Dynamic mode: waiting for the client's handshake.
    Handshake,
    /// Resolving, dialling, and (with `tls`) the target's TLS handshake. Boxed: an established session
    /// keeps only the tag, and the dial's state goes when the relay starts.
    Dial(Box<Dial>),
    /// Bytes flow.
    Relay,
    /// Nothing more happens towards the target.
    Over,
}

/// A dial to the target in progress.
struct Dial {
    step: DialStep,
    protocol: TargetProtocol,
    /// `--connect-timeout` after the dial started: resolving, connecting and TLS must be done by then.
    deadline: Instant,
    /// Client data waiting for the target to connect (at most about `buffer_size` bytes).
    pending: VecDeque<Bytes>,
    pending_len: usize,
}

/// The step a [`Dial`] is at.
enum DialStep {
    /// The runtime resolves the target's name.
    Resolving,
    /// Dialling `addrs[next - 1]`.
    Connecting { addrs: Vec<SocketAddr>, next: usize },
    /// TLS handshake with the target.
    TargetTls,
}

/// How the session is ending. The deadlines are boxed: a running session keeps only the tag.
#[derive(Debug, PartialEq, Eq)]
enum Ending {
    /// Running.
    No,
    /// The client's Close arrived; our reply is owed. The target (dialled first, if need be) gets the
    /// client's data and its FIN, and its answer is relayed until its EOF or this deadline, then the
    /// reply goes out and the session flushes. The deadline passes only after the close timeout without
    /// progress, so a long answer is not cut off.
    Draining(Box<QuietDeadline>),
    /// Flushing both legs until they are empty, or until nothing moved for the close timeout.
    Flushing(Box<QuietDeadline>),
    /// Done: the runtime closes both sockets.
    Finished,
}

/// The PROXY header owed to the target (`--send-proxy-protocol`, see the module docs). Written, and
/// dropped, as soon as both addresses are known.
struct OwedProxy {
    /// The source it names; `None` on the tunnel until the client's first frame has told.
    source: Option<SocketAddr>,
    /// The destination it names: the target address connected to, once connected.
    target: Option<SocketAddr>,
}

/// See the module docs.
pub struct Ws2TcpSession {
    cfg: Arc<Ws2TcpConfig>,
    id: Box<str>,
    peer: SocketAddr,
    created: Instant,
    kind: Kind,
    stage: Stage,

    front: Front,
    /// Relay status sent (success or failure): no second one.
    status_sent: bool,

    /// Dynamic mode: the target the client asked for (static modes use the configured one).
    requested: Option<Box<(String, u16)>>,
    /// Who the tunnel's far client is (from `bridge_hello`).
    tunnel_client: Option<Box<str>>,
    /// The PROXY header still owed to the target (`None`: not configured, or written).
    proxy: Option<Box<OwedProxy>>,

    upwire: Wire,
    /// No more bytes go to the target: shut its write side once flushed.
    up_write_closed: bool,
    /// The target finished sending.
    up_eof: bool,
    /// The client finished sending (tunnel `eof`, Close, or end of stream).
    client_done: bool,
    /// When the relay started (the target connected): the session is established.
    established: Option<Instant>,

    heartbeat: Heartbeat,
    last_activity: Instant,
    ending: Ending,
    end: Option<EndReason>,
    actions: VecDeque<Action>,
    traffic: Traffic,
}

impl Ws2TcpSession {
    /// A session for a client accepted at `now` from `peer`. `entropy` makes the connection id.
    pub fn new(
        cfg: Arc<Ws2TcpConfig>,
        peer: SocketAddr,
        mut entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Self {
        let id = new_connection_id(&mut *entropy).into_boxed_str();
        let tls = cfg.server_tls.as_ref().map(|f| f());
        let front = Front::new(tls, &cfg.ws);
        let kind = match &cfg.target {
            Some(_) => Kind::Static,
            None => Kind::Dynamic,
        };
        Ws2TcpSession {
            id,
            peer,
            created: now,
            kind,
            stage: Stage::Upgrading,
            front,
            status_sent: false,
            requested: None,
            tunnel_client: None,
            proxy: cfg.send_proxy_protocol.map(|_| {
                Box::new(OwedProxy {
                    source: Some(peer),
                    target: None,
                })
            }),
            upwire: Wire::plain(),
            up_write_closed: false,
            up_eof: false,
            client_done: false,
            established: None,
            heartbeat: Heartbeat::Off,
            last_activity: now,
            ending: Ending::No,
            end: None,
            actions: VecDeque::new(),
            traffic: Traffic::default(),
            cfg,
        }
    }

    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// On the tunnel: the far client (`ip:port`) and its `tcp2ws` connection id, from `bridge_hello`.
    pub fn tunnel_client(&self) -> Option<&str> {
        self.tunnel_client.as_deref()
    }

    /// The target the client asked for (or the static one), once known.
    pub fn target(&self) -> Option<(&str, u16)> {
        match (&self.cfg.target, &self.requested) {
            (Some(t), _) => Some((t.host.as_str(), t.port)),
            (None, Some(r)) => Some((r.0.as_str(), r.1)),
            (None, None) => None,
        }
    }

    /// The dial in progress, if any.
    fn dial(&self) -> Option<&Dial> {
        match &self.stage {
            Stage::Dial(dial) => Some(dial),
            _ => None,
        }
    }

    fn relaying(&self) -> bool {
        matches!(self.stage, Stage::Relay)
    }

    /// The target's TLS handshake is running.
    fn target_tls_handshaking(&self) -> bool {
        self.dial()
            .is_some_and(|d| matches!(d.step, DialStep::TargetTls))
    }

    fn ws(&mut self) -> Option<&mut WebSocket> {
        self.front.ws()
    }

    fn subprotocols(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Dynamic => &[],
            Kind::Static | Kind::Tunnel => &[TUNNEL_PROTOCOL, BINARY_PROTOCOL],
        }
    }

    // ---- ending ----

    fn end_with(&mut self, reason: EndReason, now: Instant) {
        self.end.get_or_insert(reason);
        if matches!(self.ending, Ending::No | Ending::Draining(_)) {
            self.ending =
                Ending::Flushing(Box::new(QuietDeadline::new(now, self.cfg.ws.close_timeout)));
        }
        self.shut_target();
    }

    fn abort(&mut self, reason: EndReason) {
        self.end.get_or_insert(reason);
        self.ending = Ending::Finished;
    }

    /// Whether the target leg is still wanted: running, or draining the target after the client's Close.
    fn target_wanted(&self) -> bool {
        matches!(self.ending, Ending::No | Ending::Draining(_))
    }

    /// Closes the client's WebSocket with `code` (or sends the owed reply with it) and ends the session
    /// (what is queued still goes).
    fn close_client(&mut self, code: CloseCode, reason: &str, end: EndReason, now: Instant) {
        if let Some(ws) = self.ws() {
            let _ = ws.close(Some(&CloseFrame::new(code, reason)), now);
        }
        self.end_with(end, now);
    }

    /// A refused handshake or a failed connect: the failure status (dynamic mode), then a Close.
    fn fail(&mut self, code: CloseCode, reason: String, end: EndReason, now: Instant) {
        if self.kind == Kind::Dynamic && !self.status_sent {
            self.status_sent = true;
            let status = protocol::failure(&reason);
            if let Some(ws) = self.ws() {
                let _ = ws.send_text(Utf8Bytes::from(status));
            }
        }
        if !self.relaying() {
            // Whatever was dialled is abandoned; client data that waited for it is dropped with it.
            self.stage = Stage::Over;
            self.upwire.discard();
        }
        self.close_client(code, &reason, end, now);
    }

    fn upstream_failed(&mut self, code: CloseCode, why: String, now: Instant) {
        self.fail(code, why.clone(), EndReason::Upstream(why), now);
    }

    fn refused(&mut self, why: String, now: Instant) {
        self.fail(CloseCode::POLICY, why.clone(), EndReason::Policy(why), now);
    }

    /// No more bytes go to the target: what is queued goes, then (TLS) close_notify, then FIN.
    fn shut_target(&mut self) {
        if !self.up_write_closed {
            self.up_write_closed = true;
            self.upwire.close_notify();
        }
    }

    /// Bytes moved: an ending session keeps draining or flushing.
    fn progress(&mut self) {
        if let Ending::Draining(wait) | Ending::Flushing(wait) = &mut self.ending {
            wait.progress();
        }
    }

    fn update_finished(&mut self) {
        if let Ending::Flushing(_) = self.ending {
            let up_flushed = self.upwire.queued() == 0 || !self.relaying();
            if self.front.done() && up_flushed {
                self.ending = Ending::Finished;
            }
        }
    }

    // ---- the client leg ----

    fn on_upgraded(&mut self, protocol: Option<String>, now: Instant) {
        if let Some(ws) = self.ws() {
            // The client's Close is answered once the target has answered (see the module docs).
            ws.set_close_reply(CloseReply::Deferred);
        }
        self.heartbeat = Heartbeat::start(self.cfg.ping_interval, now);
        self.last_activity = now;
        match self.kind {
            Kind::Dynamic => {
                self.stage = Stage::Handshake;
                if let Some(ws) = self.ws() {
                    let _ = ws.send_text(Utf8Bytes::from(protocol::GREETING));
                }
            }
            Kind::Static | Kind::Tunnel => {
                if protocol.as_deref() == Some(TUNNEL_PROTOCOL) {
                    self.kind = Kind::Tunnel;
                    if let Some(proxy) = &mut self.proxy {
                        proxy.source = None;
                    }
                }
                self.start_connect(TargetProtocol::Tcp, now);
            }
        }
    }

    fn on_handshake(&mut self, text: &str, now: Instant) {
        match Handshake::parse(text) {
            Ok(h) => {
                if h.protocol == TargetProtocol::Tls && self.cfg.target_tls.is_none() {
                    return self.refused("the tls protocol is not enabled here".into(), now);
                }
                self.requested = Some(Box::new((h.host, h.port)));
                self.start_connect(h.protocol, now);
            }
            Err(why) => self.refused(why, now),
        }
    }

    fn start_connect(&mut self, protocol: TargetProtocol, now: Instant) {
        let Some((host, port)) = self.target() else {
            return;
        };
        let resolve = Action::Resolve {
            host: host.to_owned(),
            port,
        };
        self.actions.push_back(resolve);
        self.stage = Stage::Dial(Box::new(Dial {
            step: DialStep::Resolving,
            protocol,
            deadline: now + self.cfg.connect_timeout,
            pending: VecDeque::new(),
            pending_len: 0,
        }));
    }

    /// Client data: to the target when relaying, else held until it is.
    fn client_data(&mut self, data: Bytes, now: Instant) {
        if data.is_empty() || self.up_write_closed {
            return;
        }
        self.last_activity = now;
        match &mut self.stage {
            Stage::Relay => {
                self.traffic.down_to_up += data.len() as u64;
                self.upwire.send(data);
            }
            Stage::Dial(dial) => {
                dial.pending_len += data.len();
                dial.pending.push_back(data);
            }
            _ => {}
        }
    }

    /// The client sent all it will: the target's write side is shut once its queue is flushed.
    fn client_finished(&mut self, now: Instant) {
        self.client_done = true;
        match self.stage {
            Stage::Relay => {
                self.shut_target();
                if self.up_eof {
                    self.close_client(CloseCode::NORMAL, "", EndReason::Normal, now);
                }
            }
            Stage::Dial(_) => {
                // Tunnel `eof` while dialling: applied when the relay starts.
            }
            _ => self.end_with(EndReason::Normal, now),
        }
    }

    /// Whether the client's next data event has somewhere to go.
    fn room_for_client_data(&self) -> bool {
        match &self.stage {
            Stage::Relay => self.upwire.queued() < self.cfg.buffer_size,
            Stage::Dial(dial) => dial.pending_len < self.cfg.buffer_size,
            _ => true,
        }
    }

    /// Handles the client's events while their data has room.
    fn pump_client_events(&mut self, now: Instant) {
        loop {
            if !self.room_for_client_data() {
                return;
            }
            let FrontState::Open(ws) = &mut self.front.state else {
                return;
            };
            let Some(event) = ws.poll_event() else { return };
            if self.proxy.as_ref().is_some_and(|p| p.source.is_none()) {
                self.proxy_source_from(&event);
            }
            match event {
                Event::Binary { data, .. } => {
                    if matches!(self.stage, Stage::Handshake) {
                        return self
                            .refused("expected the handshake as a Text message".into(), now);
                    }
                    self.client_data(data, now);
                }
                Event::Text(text) => {
                    if matches!(self.stage, Stage::Handshake) {
                        self.on_handshake(text.as_str(), now);
                    } else if self.kind == Kind::Tunnel {
                        self.on_tunnel_control(text.as_str(), now);
                    } else {
                        self.client_data(text.as_bytes().clone(), now);
                    }
                }
                Event::Ping(_) => {}
                Event::Pong(_) => self.heartbeat.on_pong(self.cfg.ping_interval, now),
                Event::Close(frame) => {
                    let reason = match frame {
                        Some(f)
                            if f.code != CloseCode::NORMAL && f.code != CloseCode::GOING_AWAY =>
                        {
                            EndReason::PeerError(Leg::Down, format!("client closed with {f}"))
                        }
                        _ => EndReason::Normal,
                    };
                    self.on_client_close(reason, now);
                }
                Event::Failed(e) => {
                    self.client_done = true;
                    self.end_with(EndReason::PeerError(Leg::Down, e.to_string()), now);
                }
                Event::Eof => {
                    self.client_done = true;
                    self.end_with(
                        EndReason::PeerError(Leg::Down, "closed without a Close frame".into()),
                        now,
                    );
                }
            }
        }
    }

    /// The client's Close: a half-close. Its data (already handed on) goes to the target, then the
    /// target's FIN; the target's answer is relayed until its EOF, then our reply goes out.
    fn on_client_close(&mut self, reason: EndReason, now: Instant) {
        self.client_done = true;
        self.end.get_or_insert(reason);
        let target_may_answer = match self.stage {
            Stage::Relay => !self.up_eof,
            Stage::Dial(_) => true,
            Stage::Upgrading | Stage::Handshake | Stage::Over => false,
        };
        let owed = self.front.ws_ref().is_some_and(|ws| ws.close_reply_owed());
        if owed && target_may_answer && self.ending == Ending::No {
            if self.relaying() {
                self.shut_target();
            } // else `start_relay` shuts it once the client's data is in (`client_done`)
            self.ending =
                Ending::Draining(Box::new(QuietDeadline::new(now, self.cfg.ws.close_timeout)));
        } else {
            self.reply_to_client(now);
        }
    }

    /// Sends the Close reply the client is owed (if any) and ends the session.
    fn reply_to_client(&mut self, now: Instant) {
        self.close_client(CloseCode::NORMAL, "", EndReason::Normal, now);
    }

    /// The tunnel's first frame decides the PROXY header's source: `bridge_hello`'s client, else the
    /// WebSocket client. The header goes out at once if the target is already connected.
    fn proxy_source_from(&mut self, first: &Event) {
        let hello_client = match first {
            Event::Text(text) => match TunnelControl::parse(text.as_str()) {
                Ok(TunnelControl::Hello { client, .. }) => parse_ip_port(&client),
                _ => None,
            },
            _ => None,
        };
        let peer = self.peer;
        if let Some(proxy) = &mut self.proxy {
            proxy.source = Some(hello_client.unwrap_or(peer));
        }
        self.send_proxy_header();
    }

    /// Queues the owed PROXY header, if its source and the target are both known. Called only while
    /// nothing else has been queued for the target (the wire is still plain).
    fn send_proxy_header(&mut self) {
        let Some(version) = self.cfg.send_proxy_protocol else {
            return;
        };
        if let Some(OwedProxy {
            source: Some(source),
            target: Some(target),
        }) = self.proxy.as_deref()
        {
            let (source, target) = (*source, *target);
            self.proxy = None;
            let header = crate::proxy::encode(version, source, target);
            self.upwire.out.push_data(header, true);
        }
    }

    fn on_tunnel_control(&mut self, text: &str, now: Instant) {
        match TunnelControl::parse(text) {
            Ok(TunnelControl::Hello {
                client,
                connection_id,
            }) => {
                self.tunnel_client = Some(format!("{client} conn={connection_id}").into_boxed_str())
            }
            Ok(TunnelControl::Eof) => self.client_finished(now),
            Ok(TunnelControl::Other(_)) => {}
            Err(why) => self.close_client(
                CloseCode::POLICY,
                &why,
                EndReason::PeerError(Leg::Down, why.clone()),
                now,
            ),
        }
    }

    /// The client ended its side of the transport (FIN, or a TLS close_notify).
    fn on_client_eof(&mut self, now: Instant) {
        if self.front.handle_eof() {
            // Gone before the upgrade.
            self.stage = Stage::Over;
            self.end_with(EndReason::Normal, now);
        }
    }

    // ---- the target leg ----

    fn start_relay(&mut self, now: Instant) {
        let pending = match std::mem::replace(&mut self.stage, Stage::Relay) {
            Stage::Dial(dial) => dial.pending,
            _ => VecDeque::new(),
        };
        self.established = Some(now);
        self.last_activity = now;
        if self.kind == Kind::Dynamic {
            self.status_sent = true;
            if let Some(ws) = self.ws() {
                let _ = ws.send_text(Utf8Bytes::from(protocol::success()));
            }
        }
        for data in pending {
            self.traffic.down_to_up += data.len() as u64;
            self.upwire.send(data);
        }
        if self.client_done {
            self.shut_target();
        }
    }

    fn on_target_bytes(&mut self, data: BytesMut, now: Instant) {
        let handshaking = self.target_tls_handshaking();
        let plain = match self.upwire.receive(data) {
            Ok(p) => p,
            Err(e) if handshaking => {
                return self.upstream_failed(
                    CloseCode::BAD_GATEWAY,
                    format!("TLS with the target failed: {e}"),
                    now,
                )
            }
            Err(e) => {
                return self.close_client(
                    CloseCode::BAD_GATEWAY,
                    "TLS with the target failed",
                    EndReason::Upstream(format!("target TLS: {e}")),
                    now,
                )
            }
        };
        if handshaking && !self.upwire.handshaking() {
            self.start_relay(now);
        }
        let Some(plain) = plain else { return };
        if !self.relaying() || plain.is_empty() {
            return;
        }
        self.last_activity = now;
        let n = plain.len() as u64;
        if let Some(ws) = self.front.ws() {
            if ws.send_binary(plain.freeze(), true).is_ok() {
                self.traffic.up_to_down += n;
            }
        }
    }

    fn on_target_eof(&mut self, now: Instant) {
        match self.stage {
            Stage::Relay if !self.up_eof => {
                self.up_eof = true;
                match self.kind {
                    Kind::Tunnel if !self.client_done => {
                        if let Some(ws) = self.ws() {
                            let _ = ws.send_text(Utf8Bytes::from(crate::tcp2ws::control::eof()));
                        }
                    }
                    _ => self.close_client(
                        CloseCode::NORMAL,
                        "target closed the connection",
                        EndReason::Normal,
                        now,
                    ),
                }
            }
            Stage::Dial(ref dial) if matches!(dial.step, DialStep::TargetTls) => self
                .upstream_failed(
                    CloseCode::BAD_GATEWAY,
                    "the target closed the connection during the TLS handshake".into(),
                    now,
                ),
            _ => {}
        }
    }

    /// Runs after every input: client events, output pumping, finishing.
    fn drive(&mut self, now: Instant) {
        self.pump_client_events(now);
        self.front.pump();
        self.upwire.flush();
        self.update_finished();
    }
}

impl Session for Ws2TcpSession {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, now: Instant) {
        self.progress();
        match leg {
            Leg::Down => {
                let cfg = self.cfg.clone();
                let origin_ok = |o: Option<&str>| cfg.origin_allowed(o);
                let rules = Rules {
                    path: cfg.path.as_deref(),
                    origin_ok: &origin_ok,
                    protocols: self.subprotocols(),
                    ws: &cfg.ws,
                    extra_headers: &[],
                };
                let input: FrontInput = match self.front.handle_input_deferred(data) {
                    FrontInput::Head(req, rest) => match page_response(&cfg, &req) {
                        Some((response, end)) => {
                            self.front.respond(response);
                            self.stage = Stage::Over;
                            self.end_with(end, now);
                            FrontInput::Nothing
                        }
                        None => self.front.upgrade(&req, rest, &rules),
                    },
                    other => other,
                };
                match input {
                    FrontInput::Nothing | FrontInput::Head(..) | FrontInput::Body(_) => {}
                    FrontInput::Upgraded { protocol, .. } => self.on_upgraded(protocol, now),
                    FrontInput::Refused(e, why) => {
                        self.stage = Stage::Over;
                        let reason = format!("upgrade refused with {}: {why}", e.status);
                        self.end_with(EndReason::Policy(reason), now);
                    }
                    FrontInput::Failed(why) => {
                        self.stage = Stage::Over;
                        self.abort(EndReason::PeerError(Leg::Down, why));
                    }
                }
                if self.front.take_tls_eof() {
                    self.on_client_eof(now);
                }
            }
            Leg::Up => {
                self.on_target_bytes(data, now);
                // The target's close_notify is its EOF: the TLS layer reads nothing after it.
                if !self.up_eof && self.upwire.tls().is_some_and(|t| t.peer_closed()) {
                    self.on_target_eof(now);
                }
            }
        }
        self.drive(now);
    }

    fn handle_eof(&mut self, leg: Leg, now: Instant) {
        match leg {
            Leg::Down => self.on_client_eof(now),
            Leg::Up => self.on_target_eof(now),
        }
        self.drive(now);
    }

    fn handle_io_error(&mut self, leg: Leg, error: std::io::ErrorKind, now: Instant) {
        let why = format!("socket error: {error}");
        match leg {
            Leg::Down => {
                self.front.discard();
                self.client_done = true;
                self.end_with(EndReason::PeerError(Leg::Down, why), now);
            }
            Leg::Up => {
                self.upwire.discard();
                self.up_eof = true;
                if self.relaying() {
                    self.stage = Stage::Over;
                    self.close_client(
                        CloseCode::INTERNAL,
                        "target connection lost",
                        EndReason::Upstream(why),
                        now,
                    );
                } else {
                    self.upstream_failed(CloseCode::INTERNAL, format!("target {why}"), now);
                }
            }
        }
        self.drive(now);
    }

    fn handle_resolved(&mut self, result: Result<Vec<SocketAddr>, String>, now: Instant) {
        let resolving = self
            .dial()
            .is_some_and(|d| matches!(d.step, DialStep::Resolving));
        let Some((host, port)) = self.target().filter(|_| resolving && self.target_wanted()) else {
            return;
        };
        let target = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        match result {
            Ok(mut addrs) if !addrs.is_empty() => {
                addrs.dedup();
                if self.kind == Kind::Dynamic {
                    let mut denied = None;
                    addrs.retain(|a| match self.cfg.policy.check(*a) {
                        Ok(()) => true,
                        Err(e) => {
                            denied.get_or_insert(e);
                            false
                        }
                    });
                    if addrs.is_empty() {
                        let why = denied.map_or_else(String::new, |d| d.0);
                        self.refused(format!("target {target} is not allowed: {why}"), now);
                        return self.drive(now);
                    }
                }
                self.actions.push_back(Action::Connect(addrs[0]));
                if let Stage::Dial(dial) = &mut self.stage {
                    dial.step = DialStep::Connecting { addrs, next: 1 };
                }
            }
            Ok(_) => self.upstream_failed(
                CloseCode::INTERNAL,
                format!("{target} resolved to no address"),
                now,
            ),
            Err(e) => self.upstream_failed(
                CloseCode::INTERNAL,
                format!("cannot resolve {target}: {e}"),
                now,
            ),
        }
        self.drive(now);
    }

    fn handle_connected(&mut self, now: Instant) {
        let Some(Dial {
            step: DialStep::Connecting { addrs, next },
            protocol,
            ..
        }) = self.dial()
        else {
            return;
        };
        if !self.target_wanted() {
            return;
        }
        let (target, protocol) = (addrs.get(next.wrapping_sub(1)).copied(), *protocol);
        // The PROXY header (if owed and its source is known) goes first, in plain, before TLS.
        if let Some(proxy) = &mut self.proxy {
            proxy.target = target;
        }
        self.send_proxy_header();
        if protocol == TargetProtocol::Tls {
            let host = self.target().map_or("", |(host, _)| host);
            let tls = self.cfg.target_tls.as_ref().map(|f| f(host));
            match tls {
                Some(Ok(tls)) => {
                    // Like `Wire::with_tls`, keeping what is queued (the PROXY header).
                    self.upwire.set_tls(tls);
                    self.upwire.flush();
                    if let Stage::Dial(dial) = &mut self.stage {
                        dial.step = DialStep::TargetTls;
                    }
                }
                Some(Err(e)) => {
                    let host = self.target().map_or("", |(host, _)| host);
                    let why = format!("TLS to {host}: {e}");
                    self.upstream_failed(CloseCode::BAD_GATEWAY, why, now)
                }
                None => self.refused("the tls protocol is not enabled here".into(), now),
            }
        } else {
            self.start_relay(now);
        }
        self.drive(now);
    }

    fn handle_connect_failed(&mut self, error: std::io::ErrorKind, now: Instant) {
        let Stage::Dial(dial) = &mut self.stage else {
            return;
        };
        let DialStep::Connecting { addrs, next } = &mut dial.step else {
            return;
        };
        if let Some(addr) = addrs.get(*next).copied() {
            *next += 1;
            self.actions.push_back(Action::Connect(addr));
            return;
        }
        let last = addrs.last().copied();
        let why = match last {
            Some(a) => format!("cannot connect to {a}: {error}"),
            None => format!("cannot connect: {error}"),
        };
        self.upstream_failed(CloseCode::INTERNAL, why, now);
        self.drive(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(ws) = self.ws() {
            ws.handle_timeout(now);
        }
        let expired = match &mut self.ending {
            Ending::Flushing(wait) | Ending::Draining(wait) => wait.expired(now),
            _ => false,
        };
        match self.ending {
            Ending::Flushing(_) if expired => {
                self.ending = Ending::Finished;
                return;
            }
            // The target went quiet without finishing: the client gets its reply now.
            Ending::Draining(_) if expired => self.reply_to_client(now),
            _ => {}
        }
        if self.target_wanted() {
            let handshake_due = now >= self.created + self.cfg.handshake_timeout;
            match self.stage {
                Stage::Upgrading if handshake_due => {
                    self.stage = Stage::Over;
                    self.abort(EndReason::Timeout("upgrade"));
                    return;
                }
                Stage::Handshake if handshake_due => {
                    let why = "no handshake before the timeout".to_owned();
                    self.fail(CloseCode::POLICY, why, EndReason::Timeout("handshake"), now);
                }
                Stage::Dial(ref dial) if now >= dial.deadline => {
                    let why = format!(
                        "connect timeout: no connection to the target within {:?}",
                        self.cfg.connect_timeout
                    );
                    self.fail(
                        CloseCode::INTERNAL,
                        why.clone(),
                        EndReason::Upstream(why),
                        now,
                    );
                }
                _ => {}
            }
        }
        if self.ending == Ending::No {
            if let Some(life) = self.cfg.max_lifetime {
                if now >= self.created + life {
                    self.close_client(
                        CloseCode::GOING_AWAY,
                        "max lifetime",
                        EndReason::Timeout("lifetime"),
                        now,
                    );
                }
            }
        }
        if self.ending == Ending::No && self.relaying() {
            if let Some(idle) = self.cfg.idle_timeout {
                if now >= self.last_activity + idle {
                    self.close_client(
                        CloseCode::NORMAL,
                        "idle timeout",
                        EndReason::Timeout("idle"),
                        now,
                    );
                }
            }
        }
        if self.ending == Ending::No
            && self.heartbeat.on_timeout(self.front.ws(), now) == Beat::Dead
        {
            self.traffic.heartbeat_misses += 1;
            self.close_client(
                CloseCode::GOING_AWAY,
                "pong timeout",
                EndReason::Timeout("client pong"),
                now,
            );
            // The client is unresponsive: don't wait for its Close.
            self.abort(EndReason::Timeout("client pong"));
        }
        self.drive(now);
    }

    /// Upgraded: Close 1001 after the queued data, and the target gets what was queued for it and its
    /// FIN. Before the 101: the connection is dropped. Draining after the client's Close: unchanged.
    fn handle_shutdown(&mut self, now: Instant) {
        if self.ending == Ending::No {
            if self.front.ws_ref().is_some() {
                self.close_client(
                    CloseCode::GOING_AWAY,
                    "server going away",
                    EndReason::Shutdown,
                    now,
                );
            } else {
                self.stage = Stage::Over;
                self.front.discard();
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
            Ending::Draining(wait) => {
                t.consider(Some(wait.deadline()));
                t.consider(self.dial().map(|d| d.deadline));
            }
            Ending::No => {
                if matches!(self.stage, Stage::Upgrading | Stage::Handshake) {
                    t.consider(Some(self.created + self.cfg.handshake_timeout));
                }
                t.consider(self.dial().map(|d| d.deadline));
                t.consider(self.cfg.max_lifetime.map(|l| self.created + l));
                if self.relaying() {
                    t.consider(self.cfg.idle_timeout.map(|i| self.last_activity + i));
                }
                t.consider(self.heartbeat.deadline());
            }
        }
        if let Some(ws) = self.front.ws_ref() {
            t.consider(ws.poll_timeout());
        }
        t.0
    }

    fn wants_read(&self, leg: Leg) -> bool {
        if self.ending == Ending::Finished {
            return false;
        }
        match leg {
            Leg::Down => self.front.wants_read(),
            Leg::Up => match &self.stage {
                Stage::Dial(dial) if matches!(dial.step, DialStep::TargetTls) => {
                    self.upwire.wants_read()
                }
                Stage::Relay => {
                    !self.up_eof
                        && self.front.ws_ref().is_some_and(|ws| ws.can_send())
                        && self.front.queued() < self.cfg.buffer_size
                        && self.upwire.wants_read()
                }
                _ => false,
            },
        }
    }

    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        match leg {
            Leg::Down => self.front.slices(dst),
            Leg::Up => self.upwire.out.slices(dst),
        }
    }

    fn advance(&mut self, leg: Leg, n: usize, now: Instant) {
        if n > 0 {
            self.progress();
        }
        match leg {
            Leg::Down => {
                self.front.advance(n);
                let pending = self.front.ws_ref().is_some_and(|ws| ws.control_pending());
                self.heartbeat
                    .on_written(pending, self.cfg.ping_timeout, now);
            }
            Leg::Up => self.upwire.out.advance(n),
        }
        self.drive(now);
    }

    fn write_closed(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => self.front.write_closed(),
            Leg::Up => self.up_write_closed && self.upwire.queued() == 0,
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

/// The answer to a request for one of the listener's static pages (`--console`, see
/// [`StaticPage`](super::config::StaticPage)): `GET` → 200 with the page, `HEAD` → the same head without
/// the body, any other method → 405; every answer closes the connection. `None` when the request is not
/// for a page (no page at its path, or it asks for `Upgrade: websocket`): it goes on to the upgrade.
fn page_response(cfg: &Ws2TcpConfig, req: &Request) -> Option<(Bytes, EndReason)> {
    let page = cfg.static_page(req.path())?;
    if req.headers.has_token("upgrade", "websocket") {
        return None;
    }
    let head_only: bool = match req.method.as_str() {
        "GET" => false,
        "HEAD" => true,
        _ => {
            let response: Bytes = Response::new(405)
                .header("Allow", "GET, HEAD")
                .header("Content-Type", "text/plain; charset=utf-8")
                .header("X-Content-Type-Options", "nosniff")
                .header("Connection", "close")
                .body("method not allowed\n")
                .to_bytes();
            let why = format!("{} {} refused with 405", truncate(&req.method), page.path);
            return Some((response, EndReason::Policy(why)));
        }
    };
    let response: Bytes = Response::new(200)
        .header("Content-Type", &page.content_type)
        .header("Cache-Control", "no-cache")
        .header("Content-Security-Policy", &page.content_security_policy)
        .header("X-Content-Type-Options", "nosniff")
        .header("Referrer-Policy", "no-referrer")
        .header("Connection", "close")
        .body(page.body.clone())
        .to_bytes();
    let response: Bytes = if head_only {
        response.slice(..response.len() - page.body.len())
    } else {
        response
    };
    Some((response, EndReason::Normal))
}

/// `IP:PORT` as `bridge_hello`'s `client_ip` and `client_port` were joined (an IPv6 address unbracketed).
fn parse_ip_port(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

/// Makes the sessions of a `ws2tcp` listener.
#[derive(Debug, Clone)]
pub struct Ws2TcpFactory(pub Arc<Ws2TcpConfig>);

impl crate::session::SessionFactory for Ws2TcpFactory {
    fn session(
        &self,
        peer: SocketAddr,
        entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        Box::new(Ws2TcpSession::new(self.0.clone(), peer, entropy, now))
    }

    fn over_capacity(
        &self,
        _: SocketAddr,
        mut entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Option<Box<dyn Session + Send>> {
        let cfg = &self.0;
        let protocols = match cfg.target {
            Some(_) => vec![TUNNEL_PROTOCOL, BINARY_PROTOCOL],
            None => Vec::new(),
        };
        Some(Box::new(CapacitySession::new(
            new_connection_id(&mut *entropy),
            cfg.server_tls.as_ref().map(|f| f()),
            &cfg.ws,
            protocols,
            AT_CAPACITY,
            cfg.handshake_timeout,
            now,
        )))
    }

    fn mode(&self) -> &'static str {
        "ws2tcp"
    }
}

#[cfg(test)]
mod tests {
    /// Issue #10: an idle tunnel costs about 2 KiB per process. What only matters while the session is
    /// set up (the dial, the PROXY header) or ends (the close deadlines) is boxed and dropped, so the
    /// established session stays this small.
    #[test]
    fn an_established_session_is_small() {
        let size = std::mem::size_of::<super::Ws2TcpSession>();
        assert!(size <= 520, "Ws2TcpSession is {size} bytes");
    }
}
