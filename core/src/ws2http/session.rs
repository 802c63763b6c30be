//! [`Ws2HttpSession`]: one accepted connection of a `ws2http` listener (DESIGN §1.3). It reads the
//! request head (through TLS, if on) and becomes one of:
//!
//! - **a WebSocket client** (`GET /connect` upgrade). The on-frame and on-disconnect URLs (query `f` /
//!   `d`, else the `ws-bridge-on-*` headers, else the legacy `x-ws-proxy-on-*`) are parsed and checked
//!   against the allowlist before the 101 (400 missing or unparsable, 403 not allowed). The session
//!   registers a fresh v4 UUID ([`Action::Register`]); every client message becomes one POST to the
//!   on-frame URL (Text as `text/plain;charset=UTF-8`, Binary as `application/octet-stream`, header
//!   `ws-bridge-send: <base-url>send/<uuid>`) on the session's own keep-alive connection
//!   (`Backend`). One POST is in flight at a time, so frames stay in order: the client's next message
//!   is not even decoded until the response came, and its reads pause once the engine holds
//!   `max_read_buffer` bytes. A non-2xx (redirects included) or a failed POST closes the client with
//!   1011; a message over `max_message_size` with 1009. On **every** end (client Close or loss, idle,
//!   pong, backend failure) the disconnect POST follows (same header, empty body), after any POST in
//!   flight and bounded by the backend timeout, before the session finishes. Deliveries
//!   ([`Session::handle_delivery`]) are sent to the client while less than `client_buffer` bytes are
//!   queued towards it, else refused as [`DeliveryResult::Full`].
//! - **a callback** (`POST /send/<uuid>`): the body (`Content-Length` or chunked, at most
//!   `max_message_size`, else 413) becomes one [`Action::Deliver`], `text/plain; charset=utf-8` as Text
//!   (invalid UTF-8: 400), anything else as Binary; the answer is 200, 404 (unknown id) or 503 (the
//!   client's queue is full). `Expect: 100-continue` is honoured.
//! - `GET /healthz` → 200 `ok`; `OPTIONS` (any path) → the CORS preflight; other paths → 404.
//!
//! Plain HTTP answers close the connection after the response. Every response carries
//! websocket-bridge's CORS fields ([`protocol::CORS`]).

use std::collections::VecDeque;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use super::backend::{Backend, Outcome};
use super::config::{Ws2HttpConfig, AT_CAPACITY};
use super::protocol::{self, BINARY_TYPE, ON_DISCONNECT, ON_FRAME, SEND_HEADER, TEXT_TYPE};
use crate::config::WsConfig;
use crate::deadline::QuietDeadline;
use crate::front::{CapacitySession, Front, FrontInput, FrontState, Rules};
use crate::http::client::{encode_request, BodyDecoder, BodyError, BodyKind};
use crate::http::request::Request;
use crate::session::{
    new_connection_id, Action, Delivery, DeliveryResult, EndReason, Leg, Session, Traffic,
};
use crate::url::HttpUrl;
use crate::wire::{Beat, Earliest, Heartbeat};
use crate::ws::handshake::validate_upgrade;
use crate::ws::{CloseCode, CloseFrame, Event, Utf8Bytes};
use crate::Entropy;

/// Which POST is in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PostKind {
    Frame,
    Disconnect,
}

/// A WebSocket client's side of the session.
struct Client {
    on_frame: HttpUrl,
    on_disconnect: HttpUrl,
    send_url: String,
    /// A Binary message being assembled (at most `max_message_size`).
    message: BytesMut,
    /// The POST in flight.
    posting: Option<PostKind>,
    /// The disconnect POST was started (or is owed once the POST in flight is done).
    disconnect: bool,
}

/// A `/send` callback's side.
struct Callback {
    to: String,
    text: bool,
    body: BodyDecoder,
    /// The `Deliver` is out; its answer is awaited.
    delivering: bool,
}

enum Role {
    /// Reading the request head.
    Head,
    Client(Box<Client>),
    Callback(Box<Callback>),
    /// A plain response is queued (or nothing more happens).
    Answered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    No,
    /// Waiting for the disconnect POST and the client's flush (bounded by the close timeout without
    /// progress, and the backend timeout).
    Closing(QuietDeadline),
    Finished,
}

/// See the module docs.
pub struct Ws2HttpSession {
    cfg: Arc<Ws2HttpConfig>,
    id: String,
    peer: SocketAddr,
    entropy: Box<dyn Entropy + Send>,
    created: Instant,
    front: Front,
    role: Role,
    backend: Backend,
    heartbeat: Heartbeat,
    last_activity: Instant,
    /// When the client's 101 was queued: a WebSocket client's session is established.
    established: Option<Instant>,
    ending: Ending,
    end: Option<EndReason>,
    actions: VecDeque<Action>,
    traffic: Traffic,
}

impl Ws2HttpSession {
    /// A session for a connection accepted at `now` from `peer`; `entropy` makes the ids.
    pub fn new(
        cfg: Arc<Ws2HttpConfig>,
        peer: SocketAddr,
        mut entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Self {
        let id = new_connection_id(&mut *entropy);
        let front = Front::new(cfg.server_tls.as_ref().map(|f| f()), &cfg.ws);
        let backend = Backend::new(
            cfg.backend_timeout,
            cfg.ws.max_head_size,
            cfg.ws.max_headers,
            cfg.max_response_size,
        );
        Ws2HttpSession {
            id,
            peer,
            entropy,
            created: now,
            front,
            role: Role::Head,
            backend,
            heartbeat: Heartbeat::Off,
            last_activity: now,
            established: None,
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

    /// A WebSocket client's callback URL (`<base-url>send/<uuid>`), once upgraded.
    pub fn send_url(&self) -> Option<&str> {
        match &self.role {
            Role::Client(c) => Some(&c.send_url),
            _ => None,
        }
    }

    // ---- routing ----

    fn answer(&mut self, status: u16, body: &str, end: EndReason) {
        self.front.respond(protocol::response(status, body));
        self.role = Role::Answered;
        self.end.get_or_insert(end);
    }

    fn on_head(&mut self, req: Request, rest: BytesMut, now: Instant) {
        let path = req.path().to_owned();
        if req.method == "OPTIONS" {
            self.front.respond(protocol::preflight());
            self.role = Role::Answered;
            self.end.get_or_insert(EndReason::Normal);
        } else if path == "/connect" {
            self.on_connect(&req, rest, now);
        } else if let Some(id) = path.strip_prefix("/send/") {
            if req.method != "POST" {
                return self.answer(405, "method not allowed\n", EndReason::Normal);
            }
            self.on_send(&req, id, rest);
        } else if path == "/healthz" {
            if req.method != "GET" {
                return self.answer(405, "method not allowed\n", EndReason::Normal);
            }
            self.answer(200, "ok\n", EndReason::Normal);
        } else {
            self.answer(404, "not found\n", EndReason::Normal);
        }
    }

    /// The on-frame or on-disconnect URL of an upgrade, checked.
    fn url_of(&self, req: &Request, names: (&str, &str, &str)) -> Result<HttpUrl, (u16, String)> {
        let (param, header, legacy) = names;
        let raw = req
            .query_param(param)
            .or_else(|| req.headers.get_str(header).map(str::to_owned))
            .or_else(|| req.headers.get_str(legacy).map(str::to_owned))
            .ok_or_else(|| (400, format!("missing required header: \"{header}\"\n")))?;
        let url = HttpUrl::parse(&raw).map_err(|_| {
            (
                400,
                format!("unable to parse \"{header}\" header as a URL\n"),
            )
        })?;
        if !self.cfg.allowlist.allows(&url) {
            return Err((
                403,
                format!("access denied for URL specified by \"{header}\" header\n"),
            ));
        }
        Ok(url)
    }

    fn on_connect(&mut self, req: &Request, rest: BytesMut, now: Instant) {
        if let Err(e) = validate_upgrade(req) {
            self.front.respond(e.response());
            self.role = Role::Answered;
            self.end
                .get_or_insert(EndReason::Policy(format!("upgrade refused: {e}")));
            return;
        }
        let urls = self
            .url_of(req, ON_FRAME)
            .and_then(|f| Ok((f, self.url_of(req, ON_DISCONNECT)?)));
        let (on_frame, on_disconnect) = match urls {
            Ok(u) => u,
            Err((status, why)) => {
                let reason = EndReason::Policy(format!("{status}: {}", why.trim_end()));
                return self.answer(status, &why, reason);
            }
        };
        // `--max-message-size` is the one message cap of this mode: the engine reassembles text up to
        // it, as this session assembles binary up to it.
        let ws = WsConfig {
            max_message_size: self.cfg.max_message_size,
            ..self.cfg.ws.clone()
        };
        let any_origin = |_: Option<&str>| true;
        let rules = Rules {
            path: None,
            origin_ok: &any_origin,
            protocols: &[],
            ws: &ws,
            extra_headers: &protocol::CORS,
        };
        match self.front.upgrade(req, rest, &rules) {
            FrontInput::Upgraded { .. } => {
                let uuid = protocol::new_uuid(&mut *self.entropy);
                let send_url = format!("{}send/{uuid}", self.cfg.base_url());
                self.actions.push_back(Action::Register(uuid));
                self.role = Role::Client(Box::new(Client {
                    on_frame,
                    on_disconnect,
                    send_url,
                    message: BytesMut::new(),
                    posting: None,
                    disconnect: false,
                }));
                self.heartbeat = Heartbeat::start(self.cfg.ping_interval, now);
                self.last_activity = now;
                self.established = Some(now);
            }
            FrontInput::Refused(e, why) => {
                self.role = Role::Answered;
                self.end.get_or_insert(EndReason::Policy(format!(
                    "upgrade refused with {}: {why}",
                    e.status
                )));
            }
            _ => {}
        }
    }

    fn on_send(&mut self, req: &Request, id: &str, rest: BytesMut) {
        let Some(to) = protocol::parse_uuid(id) else {
            return self.answer(400, "invalid connection id\n", EndReason::Normal);
        };
        let kind = match BodyKind::of(&req.headers, BodyKind::Empty) {
            Ok(k) => k,
            Err(why) => return self.answer(400, &format!("{why}\n"), EndReason::Normal),
        };
        let body = match BodyDecoder::new(kind, self.cfg.max_message_size) {
            Ok(b) => b,
            Err(_) => return self.answer(413, "body too large\n", EndReason::Normal),
        };
        let text = protocol::is_utf8_text(req.headers.get("content-type"));
        if req.version == 1
            && req
                .headers
                .get("expect")
                .is_some_and(|e| e.eq_ignore_ascii_case(b"100-continue"))
            && !body.is_done()
        {
            self.front
                .send_raw(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"));
        }
        self.role = Role::Callback(Box::new(Callback {
            to,
            text,
            body,
            delivering: false,
        }));
        self.on_body(rest);
    }

    fn on_body(&mut self, mut data: BytesMut) {
        let Role::Callback(cb) = &mut self.role else {
            return;
        };
        if cb.delivering {
            return;
        }
        match cb.body.feed(&mut data) {
            Ok(false) => {}
            Ok(true) => {
                let body = cb.body.take_body();
                if cb.text && std::str::from_utf8(&body).is_err() {
                    return self.answer(400, "unable to parse body as UTF-8\n", EndReason::Normal);
                }
                cb.delivering = true;
                self.actions.push_back(Action::Deliver {
                    to: cb.to.clone(),
                    message: Delivery {
                        text: cb.text,
                        data: body,
                    },
                });
            }
            Err(BodyError::TooLarge) => self.answer(413, "body too large\n", EndReason::Normal),
            Err(e) => self.answer(400, &format!("{e}\n"), EndReason::Normal),
        }
    }

    // ---- the WebSocket client ----

    fn client(&mut self) -> Option<&mut Client> {
        match &mut self.role {
            Role::Client(c) => Some(c),
            _ => None,
        }
    }

    fn post(&mut self, kind: PostKind, content_type: Option<&str>, body: Bytes, now: Instant) {
        let Role::Client(c) = &mut self.role else {
            return;
        };
        let url = match kind {
            PostKind::Frame => c.on_frame.clone(),
            PostKind::Disconnect => c.on_disconnect.clone(),
        };
        let mut headers: Vec<(&str, &str)> = Vec::with_capacity(3);
        if let Some(ct) = content_type {
            headers.push(("Content-Type", ct));
        }
        headers.push((SEND_HEADER, &c.send_url));
        headers.push(("User-Agent", "wsbridge"));
        let host = url.host_header();
        match encode_request("POST", &host, url.path_and_query(), &headers, &body) {
            Ok(request) => {
                c.posting = Some(kind);
                self.backend.start(url, request, now, &mut self.actions);
            }
            Err(e) => {
                // Cannot happen for a parsed URL; treated as a failed POST all the same.
                self.on_outcome(Err(format!("{url}: {e}")), now);
            }
        }
    }

    fn post_message(&mut self, text: bool, data: Bytes, now: Instant) {
        self.last_activity = now;
        // A message is as good a sign of life as a Pong (which may wait behind messages while the
        // backend is slow: the client is not read then).
        self.heartbeat.on_pong(self.cfg.ping_interval, now);
        self.traffic.down_to_up += data.len() as u64;
        let ct = if text { TEXT_TYPE } else { BINARY_TYPE };
        self.post(PostKind::Frame, Some(ct), data, now);
    }

    fn on_outcome(&mut self, outcome: Outcome, now: Instant) {
        let Some(c) = self.client() else { return };
        let Some(kind) = c.posting.take() else { return };
        if kind == PostKind::Disconnect {
            if let Err(why) = outcome {
                self.end
                    .get_or_insert(EndReason::Upstream(format!("disconnect POST: {why}")));
            }
            return;
        }
        let failure = match outcome {
            Ok(r) if (200..300).contains(&r.head.status) => None,
            Ok(r) => Some(format!("backend answered {}", r.head.status)),
            Err(why) => Some(why),
        };
        if let Some(why) = failure {
            self.close_client(
                CloseCode::INTERNAL,
                "backend request failed",
                EndReason::Upstream(why),
                now,
            );
        }
    }

    /// Closes the client's WebSocket (if it is still open) and starts the ending.
    fn close_client(&mut self, code: CloseCode, reason: &str, end: EndReason, now: Instant) {
        if let Some(ws) = self.front.ws() {
            if ws.can_send() {
                let _ = ws.close(Some(&CloseFrame::new(code, reason)), now);
            }
        }
        self.begin_end(end, now);
    }

    fn begin_end(&mut self, end: EndReason, now: Instant) {
        self.end.get_or_insert(end);
        if self.ending == Ending::No {
            self.ending = Ending::Closing(QuietDeadline::new(now, self.cfg.ws.close_timeout));
        }
        if let Some(c) = self.client() {
            c.message.clear();
        }
    }

    /// Handles the client's events while no POST is in flight. Once ending, events are only drained
    /// (so the client's Close reply is seen) and nothing more is posted.
    fn pump_client(&mut self, now: Instant) {
        loop {
            let Some(c) = self.client() else { return };
            let posting = c.posting.is_some();
            let FrontState::Open(ws) = &mut self.front.state else {
                return;
            };
            if self.ending != Ending::No {
                while ws.poll_event().is_some() {}
                return;
            }
            if posting {
                return;
            }
            let Some(event) = ws.poll_event() else { return };
            match event {
                Event::Text(t) if t.len() > self.cfg.max_message_size => self.too_big(now),
                Event::Text(t) => self.post_message(true, t.into(), now),
                Event::Binary { data, fin } => {
                    let max = self.cfg.max_message_size;
                    let Some(c) = self.client() else { return };
                    if c.message.len() + data.len() > max {
                        self.too_big(now);
                        continue;
                    }
                    c.message.extend_from_slice(&data);
                    if fin {
                        let msg = std::mem::take(&mut c.message).freeze();
                        self.post_message(false, msg, now);
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
                    self.begin_end(reason, now);
                }
                Event::Failed(e) => {
                    self.begin_end(EndReason::PeerError(Leg::Down, e.to_string()), now)
                }
                Event::Eof => self.begin_end(
                    EndReason::PeerError(Leg::Down, "closed without a Close frame".into()),
                    now,
                ),
            }
        }
    }

    fn too_big(&mut self, now: Instant) {
        self.close_client(
            CloseCode::TOO_BIG,
            "message too big",
            EndReason::Policy("client message over --max-message-size".into()),
            now,
        );
    }

    /// Once ending and no POST is in flight: the disconnect POST, once.
    fn maybe_disconnect(&mut self, now: Instant) {
        if self.ending == Ending::No {
            return;
        }
        let Some(c) = self.client() else { return };
        if c.posting.is_some() || c.disconnect {
            return;
        }
        c.disconnect = true;
        self.post(PostKind::Disconnect, None, Bytes::new(), now);
    }

    fn posting(&self) -> bool {
        matches!(&self.role, Role::Client(c) if c.posting.is_some())
    }

    fn update_finished(&mut self) {
        if !matches!(self.ending, Ending::Closing(_)) {
            return;
        }
        if !self.posting() && self.front.done() {
            self.ending = Ending::Finished;
        }
    }

    /// Runs after every input.
    fn drive(&mut self, now: Instant) {
        self.pump_client(now);
        self.maybe_disconnect(now);
        if matches!(self.role, Role::Answered) && self.ending == Ending::No {
            self.ending = Ending::Closing(QuietDeadline::new(now, self.cfg.ws.close_timeout));
        }
        self.front.pump();
        self.backend.flush();
        self.update_finished();
    }

    fn progress(&mut self) {
        if let Ending::Closing(wait) = &mut self.ending {
            wait.progress();
        }
    }

    fn on_client_eof(&mut self, now: Instant) {
        if self.front.handle_eof() {
            // Gone before the request was complete (a WebSocket client's EOF reaches its engine).
            self.role = Role::Answered;
            self.begin_end(EndReason::Normal, now);
        }
    }
}

impl Session for Ws2HttpSession {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, now: Instant) {
        self.progress();
        match leg {
            Leg::Down => {
                match self.front.handle_input_deferred(data) {
                    FrontInput::Head(req, rest) => self.on_head(req, rest, now),
                    FrontInput::Body(plain) => self.on_body(plain),
                    FrontInput::Refused(e, why) => {
                        self.role = Role::Answered;
                        self.end.get_or_insert(EndReason::Policy(format!(
                            "request refused with {}: {why}",
                            e.status
                        )));
                    }
                    FrontInput::Failed(why) => {
                        self.end.get_or_insert(EndReason::PeerError(Leg::Down, why));
                        self.role = match std::mem::replace(&mut self.role, Role::Answered) {
                            Role::Client(c) => Role::Client(c),
                            _ => Role::Answered,
                        };
                        self.front.discard();
                        self.begin_end(EndReason::Normal, now);
                    }
                    FrontInput::Nothing | FrontInput::Upgraded { .. } => {}
                }
                if self.front.take_tls_eof() {
                    self.on_client_eof(now);
                }
            }
            Leg::Up => {
                if let Some(outcome) = self.backend.on_input(data) {
                    self.on_outcome(outcome, now);
                }
            }
        }
        self.drive(now);
    }

    fn handle_eof(&mut self, leg: Leg, now: Instant) {
        match leg {
            Leg::Down => self.on_client_eof(now),
            Leg::Up => {
                if let Some(outcome) = self.backend.on_eof(None, &mut self.actions) {
                    self.on_outcome(outcome, now);
                }
            }
        }
        self.drive(now);
    }

    fn handle_io_error(&mut self, leg: Leg, error: std::io::ErrorKind, now: Instant) {
        match leg {
            Leg::Down => {
                self.front.discard();
                self.begin_end(
                    EndReason::PeerError(Leg::Down, format!("socket error: {error}")),
                    now,
                );
            }
            Leg::Up => {
                if let Some(outcome) = self.backend.on_eof(Some(error), &mut self.actions) {
                    self.on_outcome(outcome, now);
                }
            }
        }
        self.drive(now);
    }

    fn handle_resolved(&mut self, result: Result<Vec<SocketAddr>, String>, now: Instant) {
        if let Some(outcome) = self.backend.on_resolved(result, &mut self.actions) {
            self.on_outcome(outcome, now);
        }
        self.drive(now);
    }

    fn handle_connected(&mut self, now: Instant) {
        if let Some(outcome) = self.backend.on_connected(self.cfg.backend_tls.as_ref()) {
            self.on_outcome(outcome, now);
        }
        self.drive(now);
    }

    fn handle_connect_failed(&mut self, error: std::io::ErrorKind, now: Instant) {
        if let Some(outcome) = self.backend.on_connect_failed(error, &mut self.actions) {
            self.on_outcome(outcome, now);
        }
        self.drive(now);
    }

    fn handle_timeout(&mut self, now: Instant) {
        if let Some(ws) = self.front.ws() {
            ws.handle_timeout(now);
        }
        if let Some(outcome) = self.backend.on_timeout(now) {
            self.on_outcome(outcome, now);
        }
        if let Ending::Closing(wait) = &mut self.ending {
            if !matches!(&self.role, Role::Client(c) if c.posting.is_some()) && wait.expired(now) {
                self.ending = Ending::Finished;
                return;
            }
        }
        let head_due = now >= self.created + self.cfg.handshake_timeout;
        match &self.role {
            Role::Head if head_due => {
                self.front.discard();
                self.role = Role::Answered;
                self.end.get_or_insert(EndReason::Timeout("request head"));
                self.ending = Ending::Finished;
                return;
            }
            Role::Callback(cb) if head_due && !cb.delivering => {
                self.answer(408, "request timeout\n", EndReason::Timeout("request body"));
            }
            _ => {}
        }
        if self.ending == Ending::No && matches!(self.role, Role::Client(_)) {
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
            if self.ending == Ending::No
                && self.heartbeat.on_timeout(self.front.ws(), now) == Beat::Dead
            {
                self.traffic.heartbeat_misses += 1;
                self.front.discard();
                self.begin_end(EndReason::Timeout("client pong"), now);
            }
        }
        self.drive(now);
    }

    /// A WebSocket client: Close 1001 after the queued messages; the POST in flight finishes and the
    /// disconnect POST goes as on any close. A request still being read: dropped. A callback or a
    /// queued answer: finishes on its own (bounded by its timeouts).
    fn handle_shutdown(&mut self, now: Instant) {
        if self.ending == Ending::No {
            match self.role {
                Role::Client(_) => self.close_client(
                    CloseCode::GOING_AWAY,
                    "server going away",
                    EndReason::Shutdown,
                    now,
                ),
                Role::Head => {
                    self.front.discard();
                    self.role = Role::Answered;
                    self.begin_end(EndReason::Shutdown, now);
                }
                Role::Callback(_) | Role::Answered => {}
            }
        }
        self.drive(now);
    }

    fn handle_delivery(&mut self, message: Delivery, now: Instant) -> DeliveryResult {
        if self.ending != Ending::No || !matches!(self.role, Role::Client(_)) {
            return DeliveryResult::Unknown;
        }
        let full = self.front.queued() >= self.cfg.client_buffer;
        let Some(ws) = self.front.ws() else {
            return DeliveryResult::Unknown;
        };
        if !ws.can_send() {
            return DeliveryResult::Unknown;
        }
        if full {
            return DeliveryResult::Full;
        }
        let n = message.data.len() as u64;
        let sent = if message.text {
            match Utf8Bytes::try_from(message.data.clone()) {
                Ok(t) => ws.send_text(t),
                Err(_) => ws.send_binary(message.data, true),
            }
        } else {
            ws.send_binary(message.data, true)
        };
        if sent.is_err() {
            return DeliveryResult::Unknown;
        }
        self.traffic.up_to_down += n;
        self.last_activity = now;
        self.drive(now);
        DeliveryResult::Accepted
    }

    fn handle_delivery_result(&mut self, result: DeliveryResult, now: Instant) {
        let Role::Callback(cb) = &self.role else {
            return;
        };
        if !cb.delivering {
            return;
        }
        let to = cb.to.clone();
        match result {
            DeliveryResult::Accepted => self.answer(200, "", EndReason::Normal),
            DeliveryResult::Unknown => self.answer(
                404,
                &format!("unknown connection id: {to}\n"),
                EndReason::Normal,
            ),
            DeliveryResult::Full => self.answer(
                503,
                &format!("connection {to} is not keeping up, try again later\n"),
                EndReason::Normal,
            ),
        }
        self.drive(now);
    }

    fn poll_action(&mut self) -> Option<Action> {
        crate::session::pop_action(&mut self.actions)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        let mut t = Earliest::default();
        match self.ending {
            Ending::Finished => return None,
            // While the disconnect POST is in flight, the backend deadline bounds the wait.
            Ending::Closing(wait) if !self.posting() => t.consider(Some(wait.deadline())),
            Ending::Closing(_) => {}
            Ending::No => match &self.role {
                Role::Head => t.consider(Some(self.created + self.cfg.handshake_timeout)),
                Role::Callback(cb) if !cb.delivering => {
                    t.consider(Some(self.created + self.cfg.handshake_timeout))
                }
                Role::Client(_) => {
                    t.consider(self.cfg.idle_timeout.map(|i| self.last_activity + i));
                    t.consider(self.heartbeat.deadline());
                }
                _ => {}
            },
        }
        t.consider(self.backend.deadline());
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
            Leg::Down => {
                let role_reads = match &self.role {
                    Role::Callback(cb) => !cb.delivering,
                    Role::Answered => false,
                    Role::Head | Role::Client(_) => true,
                };
                role_reads && self.front.wants_read()
            }
            Leg::Up => self.backend.wants_read(),
        }
    }

    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        match leg {
            Leg::Down => self.front.slices(dst),
            Leg::Up => self.backend.wire.out.slices(dst),
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
            Leg::Up => self.backend.wire.out.advance(n),
        }
        self.drive(now);
    }

    fn write_closed(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => self.front.write_closed(),
            Leg::Up => false,
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

/// Makes the sessions of a `ws2http` listener.
#[derive(Debug, Clone)]
pub struct Ws2HttpFactory(pub Arc<Ws2HttpConfig>);

impl crate::session::SessionFactory for Ws2HttpFactory {
    fn session(
        &self,
        peer: SocketAddr,
        entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        Box::new(Ws2HttpSession::new(self.0.clone(), peer, entropy, now))
    }

    fn over_capacity(
        &self,
        _: SocketAddr,
        mut entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Option<Box<dyn Session + Send>> {
        let cfg = &self.0;
        Some(Box::new(
            CapacitySession::new(
                new_connection_id(&mut *entropy),
                cfg.server_tls.as_ref().map(|f| f()),
                &cfg.ws,
                Vec::new(),
                AT_CAPACITY,
                cfg.handshake_timeout,
                now,
            )
            .with_plain_answer(protocol::response(503, &format!("{AT_CAPACITY}\n"))),
        ))
    }

    fn mode(&self) -> &'static str {
        "ws2http"
    }
}
