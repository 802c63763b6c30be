//! The accepted leg of a WebSocket listener (`ws2tcp`, and any mode that accepts WebSockets): optional
//! TLS, the HTTP upgrade with the listener's rules (path, `Origin`, subprotocols), the 101, then the
//! server-side engine. Also [`CapacitySession`], what a client accepted over the connection limit gets.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::config::WsConfig;
use crate::http::head::HeadReader;
use crate::http::request::Request;
use crate::http::HttpError;
use crate::session::{Action, EndReason, Leg, Session, Traffic};
use crate::tls::TlsSession;
use crate::wire::Wire;
use crate::ws::handshake::{accept_response, choose_protocol, validate_upgrade};
use crate::ws::{CloseCode, CloseFrame, Role, WebSocket};

/// What a listener accepts.
pub(crate) struct Rules<'a> {
    /// Only this path (before `?`); others get 404.
    pub path: Option<&'a str>,
    /// Whether an `Origin` (or none) may connect; others get 403.
    pub origin_ok: &'a dyn Fn(Option<&str>) -> bool,
    /// Subprotocols in the server's order of preference.
    pub protocols: &'a [&'a str],
    /// The engine's limits.
    pub ws: &'a WsConfig,
    /// Extra fields of the 101 (e.g. CORS).
    pub extra_headers: &'a [(&'a str, &'a str)],
}

/// Where the leg is.
pub(crate) enum FrontState {
    /// Reading the upgrade request (through TLS, if on). Boxed: the established leg keeps only
    /// [`FrontState::Open`].
    Head(Box<HeadReader>),
    /// A request head was handed to the owner, which has not decided yet (deferred mode).
    Held,
    /// The WebSocket is open (or closing).
    Open(Box<WebSocket>),
    /// An HTTP error response is queued; the connection closes once it is written.
    Refused,
    /// Nothing more is written.
    Gone,
}

/// The outcome of bytes read on the leg.
pub(crate) enum FrontInput {
    /// Nothing decided yet (or the WebSocket got the bytes).
    Nothing,
    /// The 101 is queued and the engine has the bytes that followed the request.
    Upgraded {
        /// The subprotocol chosen.
        protocol: Option<String>,
    },
    /// The request was refused with this HTTP error (its response is queued).
    Refused(HttpError, String),
    /// TLS failed.
    Failed(String),
    /// Deferred mode: the request head and the bytes that followed it.
    Head(Request, BytesMut),
    /// Deferred mode: plaintext read while the request is held (its body).
    Body(BytesMut),
}

/// See the module docs.
pub(crate) struct Front {
    pub(crate) wire: Wire,
    pub(crate) state: FrontState,
    close_notified: bool,
    /// The client's close_notify was reported by [`Front::take_tls_eof`].
    tls_eof: bool,
}

impl Front {
    pub(crate) fn new(tls: Option<Box<dyn TlsSession>>, ws: &WsConfig) -> Front {
        Front {
            wire: Wire::with_tls(tls),
            state: FrontState::Head(Box::new(HeadReader::new(ws.max_head_size, ws.max_headers))),
            close_notified: false,
            tls_eof: false,
        }
    }

    pub(crate) fn ws(&mut self) -> Option<&mut WebSocket> {
        match &mut self.state {
            FrontState::Open(ws) => Some(ws),
            _ => None,
        }
    }

    pub(crate) fn ws_ref(&self) -> Option<&WebSocket> {
        match &self.state {
            FrontState::Open(ws) => Some(ws),
            _ => None,
        }
    }

    /// Bytes read from the socket. A complete request head is handed to the owner
    /// ([`FrontInput::Head`]), which then calls [`Front::upgrade`] or [`Front::respond`]; until it does,
    /// plaintext read comes back as [`FrontInput::Body`].
    pub(crate) fn handle_input_deferred(&mut self, data: BytesMut) -> FrontInput {
        let plain = match self.wire.receive(data) {
            Ok(Some(p)) => p,
            Ok(None) => return FrontInput::Nothing,
            Err(e) => {
                self.state = FrontState::Gone;
                return FrontInput::Failed(format!("TLS: {e}"));
            }
        };
        let head = match &mut self.state {
            FrontState::Head(head) => head,
            FrontState::Held => return FrontInput::Body(plain),
            FrontState::Open(ws) => {
                ws.handle_input(plain);
                return FrontInput::Nothing;
            }
            FrontState::Refused | FrontState::Gone => return FrontInput::Nothing,
        };
        head.feed(&plain);
        match head.poll_request() {
            Ok(Some(req)) => {
                let rest = head.take_remainder();
                self.state = FrontState::Held;
                FrontInput::Head(req, rest)
            }
            Ok(None) => FrontInput::Nothing,
            Err(e) => self.refuse(e, e.reason.to_owned()),
        }
    }

    /// Upgrades the request handed out by [`Front::handle_input_deferred`] under `rules` (`rest`: the
    /// bytes that followed its head), or refuses it.
    pub(crate) fn upgrade(
        &mut self,
        req: &Request,
        rest: BytesMut,
        rules: &Rules<'_>,
    ) -> FrontInput {
        if let Some(path) = rules.path {
            if req.path() != path {
                return self.refuse(
                    HttpError::new(404, "no WebSocket endpoint here"),
                    format!("path {:?} is not served", truncate(req.path())),
                );
            }
        }
        let info = match validate_upgrade(req) {
            Ok(info) => info,
            Err(e) => return self.refuse(e, e.reason.to_owned()),
        };
        if !(rules.origin_ok)(info.origin.as_deref()) {
            let why = format!(
                "origin {:?} is not allowed",
                truncate(info.origin.as_deref().unwrap_or(""))
            );
            return self.refuse(HttpError::new(403, "origin not allowed"), why);
        }
        let protocol = choose_protocol(&info.protocols, rules.protocols).map(str::to_owned);
        self.wire.send(accept_response(
            &info,
            protocol.as_deref(),
            rules.extra_headers,
        ));
        let mut ws = WebSocket::new(Role::Server, rules.ws);
        ws.handle_input(rest);
        self.state = FrontState::Open(Box::new(ws));
        FrontInput::Upgraded { protocol }
    }

    /// Answers a held request with a complete `response`; the connection closes once it is written.
    pub(crate) fn respond(&mut self, response: Bytes) {
        self.wire.send(response);
        self.wire.close_notify();
        self.state = FrontState::Refused;
    }

    /// Sends bytes (e.g. `100 Continue`) while a request is held.
    pub(crate) fn send_raw(&mut self, data: Bytes) {
        if matches!(self.state, FrontState::Held) {
            self.wire.send(data);
        }
    }

    /// True once, after the client's TLS close_notify and every plaintext byte before it were taken: its
    /// EOF. The TLS layer reads nothing after a close_notify, so the socket's FIN would never be seen;
    /// the owner handles this like [`Session::handle_eof`].
    pub(crate) fn take_tls_eof(&mut self) -> bool {
        if self.tls_eof || !self.wire.tls().is_some_and(|t| t.peer_closed()) {
            return false;
        }
        self.tls_eof = true;
        true
    }

    /// The client ended its side: the engine sees the EOF after what it holds. Before the upgrade the
    /// leg is dropped (returns true: the session must end); after a refusal what is queued still goes.
    pub(crate) fn handle_eof(&mut self) -> bool {
        match &mut self.state {
            FrontState::Open(ws) => {
                ws.handle_eof();
                false
            }
            FrontState::Head(_) | FrontState::Held => {
                self.discard();
                true
            }
            FrontState::Refused | FrontState::Gone => false,
        }
    }

    fn refuse(&mut self, e: HttpError, why: String) -> FrontInput {
        self.wire.send(e.response());
        self.wire.close_notify();
        self.state = FrontState::Refused;
        FrontInput::Refused(e, why)
    }

    /// Bytes queued towards the client, framed or not.
    pub(crate) fn queued(&self) -> usize {
        self.wire.queued() + self.ws_ref().map_or(0, |ws| ws.buffered_amount())
    }

    /// Moves engine output through TLS (if on); after the close handshake, a close_notify.
    pub(crate) fn pump(&mut self) {
        if let FrontState::Open(ws) = &mut self.state {
            self.wire.pump_ws(ws);
            if ws.is_closed() && !ws.wants_write() && !self.close_notified {
                self.close_notified = true;
                self.wire.close_notify();
            }
        }
        self.wire.flush();
    }

    /// Whether to read from the socket now.
    pub(crate) fn wants_read(&self) -> bool {
        let state = match &self.state {
            FrontState::Head(_) | FrontState::Held => true,
            FrontState::Open(ws) => ws.wants_read(),
            _ => false,
        };
        state && self.wire.wants_read()
    }

    pub(crate) fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.wire.slices_with(self.ws_ref(), dst)
    }

    pub(crate) fn advance(&mut self, n: usize) {
        let ws = match &mut self.state {
            FrontState::Open(ws) => Some(&mut **ws),
            _ => None,
        };
        self.wire.advance_with(ws, n);
    }

    /// Nothing more will be queued: shut the socket's write side once flushed.
    pub(crate) fn write_closed(&self) -> bool {
        match &self.state {
            FrontState::Head(_) | FrontState::Held => false,
            FrontState::Open(ws) => ws.is_closed(),
            FrontState::Refused | FrontState::Gone => true,
        }
    }

    /// Everything is written and nothing more will be.
    pub(crate) fn done(&self) -> bool {
        self.write_closed() && self.queued() == 0
    }

    /// The client is gone: drop what was queued for it.
    pub(crate) fn discard(&mut self) {
        self.wire.discard();
        self.state = FrontState::Gone;
    }
}

/// At most 64 characters of client input in a log reason.
pub(crate) fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// What a client accepted over the connection limit gets: the upgrade is completed (so a browser sees
/// a real close code instead of a failed connection), then Close 1013 with `reason`, and the socket is
/// closed after the client's Close or `ws.close_timeout`. The whole session is bounded by
/// `handshake_timeout` + `close_timeout`.
pub struct CapacitySession {
    id: String,
    front: Front,
    deadline: Instant,
    close_timeout: Duration,
    reason: &'static str,
    protocols: Vec<&'static str>,
    ws: WsConfig,
    /// What a request that is not a WebSocket upgrade gets instead of the upgrade's error.
    plain_answer: Option<Bytes>,
    finished: bool,
    end: Option<EndReason>,
}

impl CapacitySession {
    /// A session for a client accepted at `now`; `tls` when the listener is `wss://`.
    pub fn new(
        id: String,
        tls: Option<Box<dyn TlsSession>>,
        ws: &WsConfig,
        protocols: Vec<&'static str>,
        reason: &'static str,
        handshake_timeout: Duration,
        now: Instant,
    ) -> Self {
        CapacitySession {
            id,
            front: Front::new(tls, ws),
            deadline: now + handshake_timeout + ws.close_timeout,
            close_timeout: ws.close_timeout,
            reason,
            protocols,
            ws: ws.clone(),
            plain_answer: None,
            finished: false,
            end: None,
        }
    }

    /// Requests that are not WebSocket upgrades (a listener that also serves plain HTTP) get this
    /// complete response, e.g. a 503, instead of the upgrade's 4xx.
    pub fn with_plain_answer(mut self, response: Bytes) -> Self {
        self.plain_answer = Some(response);
        self
    }

    fn settle(&mut self) {
        if let Some(ws) = self.front.ws() {
            while ws.poll_event().is_some() {}
        }
        self.front.pump();
        if self.front.done() {
            self.finish(EndReason::Policy("over capacity".into()));
        }
    }

    fn finish(&mut self, reason: EndReason) {
        self.end.get_or_insert(reason);
        self.finished = true;
    }
}

impl Session for CapacitySession {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, now: Instant) {
        if leg != Leg::Down {
            return;
        }
        let origin_ok = |_: Option<&str>| true;
        let rules = Rules {
            path: None,
            origin_ok: &origin_ok,
            protocols: &self.protocols,
            ws: &self.ws,
            extra_headers: &[],
        };
        let input = match self.front.handle_input_deferred(data) {
            FrontInput::Head(req, rest) => match &self.plain_answer {
                Some(answer) if validate_upgrade(&req).is_err() => {
                    self.front.respond(answer.clone());
                    FrontInput::Nothing
                }
                _ => self.front.upgrade(&req, rest, &rules),
            },
            other => other,
        };
        match input {
            FrontInput::Upgraded { .. } => {
                let frame = CloseFrame::new(CloseCode::TRY_AGAIN_LATER, self.reason);
                if let Some(ws) = self.front.ws() {
                    let _ = ws.close(Some(&frame), now);
                }
                self.deadline = self.deadline.min(now + self.close_timeout);
            }
            FrontInput::Failed(e) => self.finish(EndReason::PeerError(Leg::Down, e)),
            FrontInput::Refused(..) | FrontInput::Nothing => {}
            FrontInput::Head(..) | FrontInput::Body(_) => {}
        }
        if self.front.take_tls_eof() {
            return self.handle_eof(Leg::Down, now);
        }
        self.settle();
    }

    fn handle_eof(&mut self, _: Leg, _: Instant) {
        if self.front.ws().is_none() {
            self.finish(EndReason::Policy("over capacity".into()));
        }
        self.front.handle_eof();
        self.settle();
    }

    fn handle_io_error(&mut self, _: Leg, error: std::io::ErrorKind, _: Instant) {
        self.finish(EndReason::PeerError(Leg::Down, error.to_string()));
    }

    fn handle_resolved(&mut self, _: Result<Vec<SocketAddr>, String>, _: Instant) {}
    fn handle_connected(&mut self, _: Instant) {}
    fn handle_connect_failed(&mut self, _: std::io::ErrorKind, _: Instant) {}

    /// Its Close 1013 (or answer) is already on its way and bounded: only a request still being read
    /// is dropped.
    fn handle_shutdown(&mut self, _: Instant) {
        if matches!(self.front.state, FrontState::Head(_) | FrontState::Held) {
            self.front.discard();
            self.finish(EndReason::Shutdown);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(ws) = self.front.ws() {
            ws.handle_timeout(now);
        }
        if now >= self.deadline {
            self.finish(EndReason::Timeout("over-capacity close"));
        }
        if !self.finished {
            self.settle();
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        None
    }

    fn poll_timeout(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let ws = self.front.ws_ref().and_then(|ws| ws.poll_timeout());
        Some(ws.map_or(self.deadline, |t| t.min(self.deadline)))
    }

    fn wants_read(&self, leg: Leg) -> bool {
        leg == Leg::Down && !self.finished && self.front.wants_read()
    }

    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        match leg {
            Leg::Down => self.front.slices(dst),
            Leg::Up => 0,
        }
    }

    fn advance(&mut self, leg: Leg, n: usize, _: Instant) {
        if leg == Leg::Down {
            self.front.advance(n);
            self.settle();
        }
    }

    fn write_closed(&self, leg: Leg) -> bool {
        leg == Leg::Up || self.front.write_closed()
    }

    fn is_finished(&self) -> bool {
        self.finished
    }

    fn connection_id(&self) -> &str {
        &self.id
    }

    fn end_reason(&self) -> Option<&EndReason> {
        self.end.as_ref()
    }

    fn traffic(&self) -> Traffic {
        Traffic::default()
    }

    fn established(&self) -> Option<Instant> {
        None
    }
}
