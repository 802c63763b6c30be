//! [`ProxyProtocol`]: any listener accepts a PROXY protocol header, without its mode knowing.
//!
//! The wrapper's session reads the header from the `Down` leg before anything else happens: no session
//! of the mode exists yet, so nothing is dialled and nothing is written. Once the header is complete,
//! the mode's session is made with the **client's address from the header** as its `peer` (the socket's
//! peer if the header says `LOCAL`/`UNKNOWN`) and the instant the socket was accepted, and it gets the
//! bytes that followed the header as its first input. From then on every [`Session`] call goes to it.
//!
//! A bad header, the end of the stream inside it, or no complete header within
//! [`ProxyAccept::header_timeout`] ends the session at once, with nothing written and an
//! [`EndReason`] that says why. The connection id the wrapper reports while it reads is the one the
//! mode's session will have (its first 8 entropy bytes are drawn up front and replayed to it).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::header::{HeaderReader, ProxyError, DEFAULT_MAX_HEADER};
use crate::session::{
    Action, Delivery, DeliveryResult, EndReason, Leg, Session, SessionFactory, Traffic,
};
use crate::Entropy;

/// How a listener reads PROXY headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyAccept {
    /// From accept to the end of the header (`--proxy-header-timeout`).
    pub header_timeout: Duration,
    /// The longest header accepted (v2 with TLVs; v1 is at most 107 bytes anyway).
    pub max_header: usize,
}

impl Default for ProxyAccept {
    fn default() -> Self {
        ProxyAccept {
            header_timeout: Duration::from_secs(5),
            max_header: DEFAULT_MAX_HEADER,
        }
    }
}

/// A [`SessionFactory`] whose sessions first read a PROXY header, then are `F`'s (see the module
/// docs). Works with `F = dyn SessionFactory`, so a runtime's factory can be wrapped as it is.
pub struct ProxyProtocol<F: SessionFactory + ?Sized> {
    inner: Arc<F>,
    cfg: ProxyAccept,
}

impl<F: SessionFactory + ?Sized> ProxyProtocol<F> {
    /// Wraps `inner`.
    pub fn new(inner: Arc<F>, cfg: ProxyAccept) -> Self {
        ProxyProtocol { inner, cfg }
    }
}

impl<F: SessionFactory + ?Sized + 'static> SessionFactory for ProxyProtocol<F> {
    fn session(
        &self,
        peer: SocketAddr,
        mut entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        let mut first = [0u8; ID_BYTES];
        entropy.fill(&mut first);
        let id = first.iter().map(|b| format!("{b:02x}")).collect();
        let entropy = Box::new(Replay {
            first,
            used: 0,
            rest: entropy,
        });
        Box::new(ProxySession::pending(
            id,
            peer,
            now,
            self.cfg,
            Next::Make {
                factory: self.inner.clone(),
                entropy,
            },
        ))
    }

    /// The mode's own answer (capacity was counted at accept); a WebSocket listener's "at capacity"
    /// session still gets the header stripped first, so the client sees its Close 1013.
    fn over_capacity(
        &self,
        peer: SocketAddr,
        entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Option<Box<dyn Session + Send>> {
        let inner = self.inner.over_capacity(peer, entropy, now)?;
        let id = inner.connection_id().to_owned();
        Some(Box::new(ProxySession::<F>::pending(
            id,
            peer,
            now,
            self.cfg,
            Next::Ready(inner),
        )))
    }

    fn mode(&self) -> &'static str {
        self.inner.mode()
    }
}

/// The length of a connection id's entropy (see [`crate::session::new_connection_id`]).
const ID_BYTES: usize = 8;

/// Hands out `first` before anything from `rest`, so that the mode's session draws the id we show.
struct Replay {
    first: [u8; ID_BYTES],
    used: usize,
    rest: Box<dyn Entropy + Send>,
}

impl Entropy for Replay {
    fn fill(&mut self, dest: &mut [u8]) {
        let n = (ID_BYTES - self.used).min(dest.len());
        dest[..n].copy_from_slice(&self.first[self.used..self.used + n]);
        self.used += n;
        if n < dest.len() {
            self.rest.fill(&mut dest[n..]);
        }
    }
}

/// What to run once the header is in.
enum Next<F: ?Sized> {
    /// Make the mode's session with the header's address.
    Make {
        factory: Arc<F>,
        entropy: Box<dyn Entropy + Send>,
    },
    /// Already made (the over-capacity session, which does not care who the client is).
    Ready(Box<dyn Session + Send>),
}

/// Where a [`ProxySession`] is.
enum State<F: ?Sized> {
    /// Reading the header until `deadline`.
    Header {
        reader: HeaderReader,
        deadline: Instant,
        next: Next<F>,
    },
    /// The header was read: everything goes to the mode's session.
    Inner(Box<dyn Session + Send>),
    /// The header was refused: the runtime closes the socket.
    Refused(EndReason),
}

/// The session of a [`ProxyProtocol`] listener: first the header, then the mode's session.
pub struct ProxySession<F: ?Sized> {
    state: State<F>,
    id: String,
    peer: SocketAddr,
    /// The client the header named (`None`: not read yet, or LOCAL/UNKNOWN).
    client: Option<SocketAddr>,
    accepted: Instant,
}

impl<F: SessionFactory + ?Sized> ProxySession<F> {
    fn pending(
        id: String,
        peer: SocketAddr,
        now: Instant,
        cfg: ProxyAccept,
        next: Next<F>,
    ) -> Self {
        ProxySession {
            state: State::Header {
                reader: HeaderReader::new(cfg.max_header),
                deadline: now + cfg.header_timeout,
                next,
            },
            id,
            peer,
            client: None,
            accepted: now,
        }
    }

    /// Whether the header is still being read.
    pub fn reading_header(&self) -> bool {
        matches!(self.state, State::Header { .. })
    }

    fn inner(&mut self) -> Option<&mut (dyn Session + Send + 'static)> {
        match &mut self.state {
            State::Inner(s) => Some(&mut **s),
            _ => None,
        }
    }

    fn refuse(&mut self, reason: EndReason) {
        self.state = State::Refused(reason);
    }

    fn header_error(&mut self, e: ProxyError) {
        self.refuse(EndReason::PeerError(
            Leg::Down,
            format!("PROXY header: {e}"),
        ));
    }

    /// Header bytes from the client.
    fn read_header(&mut self, data: BytesMut, now: Instant) {
        let State::Header { reader, .. } = &mut self.state else {
            return;
        };
        let (header, rest) = match reader.feed(&data) {
            Ok(Some(done)) => done,
            Ok(None) => return,
            Err(e) => return self.header_error(e),
        };
        let peer = header.source().unwrap_or(self.peer);
        self.client = header.source();
        let State::Header { next, .. } =
            std::mem::replace(&mut self.state, State::Refused(EndReason::Normal))
        else {
            unreachable!("matched above");
        };
        let mut session = match next {
            Next::Make { factory, entropy } => factory.session(peer, entropy, self.accepted),
            Next::Ready(session) => session,
        };
        if !rest.is_empty() {
            session.handle_input(Leg::Down, rest, now);
        }
        self.state = State::Inner(session);
    }
}

impl<F: SessionFactory + ?Sized> Session for ProxySession<F> {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, now: Instant) {
        match (&mut self.state, leg) {
            (State::Inner(s), _) => s.handle_input(leg, data, now),
            (State::Header { .. }, Leg::Down) => self.read_header(data, now),
            _ => {}
        }
    }

    fn handle_eof(&mut self, leg: Leg, now: Instant) {
        match &mut self.state {
            State::Inner(s) => s.handle_eof(leg, now),
            State::Header { .. } if leg == Leg::Down => self.header_error(ProxyError::Truncated),
            _ => {}
        }
    }

    fn handle_io_error(&mut self, leg: Leg, error: std::io::ErrorKind, now: Instant) {
        match &mut self.state {
            State::Inner(s) => s.handle_io_error(leg, error, now),
            State::Header { .. } => self.refuse(EndReason::PeerError(
                leg,
                format!("socket error in the PROXY header: {error}"),
            )),
            State::Refused(_) => {}
        }
    }

    fn handle_resolved(&mut self, result: Result<Vec<SocketAddr>, String>, now: Instant) {
        if let Some(s) = self.inner() {
            s.handle_resolved(result, now);
        }
    }

    fn handle_connected(&mut self, now: Instant) {
        if let Some(s) = self.inner() {
            s.handle_connected(now);
        }
    }

    fn handle_connect_failed(&mut self, error: std::io::ErrorKind, now: Instant) {
        if let Some(s) = self.inner() {
            s.handle_connect_failed(error, now);
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match &mut self.state {
            State::Inner(s) => s.handle_timeout(now),
            State::Header { deadline, .. } if now >= *deadline => {
                self.refuse(EndReason::Timeout("PROXY header"))
            }
            _ => {}
        }
    }

    fn handle_delivery(&mut self, message: Delivery, now: Instant) -> DeliveryResult {
        match self.inner() {
            Some(s) => s.handle_delivery(message, now),
            None => DeliveryResult::Unknown,
        }
    }

    fn handle_delivery_result(&mut self, result: DeliveryResult, now: Instant) {
        if let Some(s) = self.inner() {
            s.handle_delivery_result(result, now);
        }
    }

    /// While the header is being read there is nothing to flush: the session ends at once.
    fn handle_shutdown(&mut self, now: Instant) {
        match &mut self.state {
            State::Inner(s) => s.handle_shutdown(now),
            State::Header { .. } => self.refuse(EndReason::Shutdown),
            State::Refused(_) => {}
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.inner()?.poll_action()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Inner(s) => s.poll_timeout(),
            State::Header { deadline, .. } => Some(*deadline),
            State::Refused(_) => None,
        }
    }

    fn wants_read(&self, leg: Leg) -> bool {
        match &self.state {
            State::Inner(s) => s.wants_read(leg),
            State::Header { .. } => leg == Leg::Down,
            State::Refused(_) => false,
        }
    }

    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        match &self.state {
            State::Inner(s) => s.slices(leg, dst),
            _ => 0,
        }
    }

    fn advance(&mut self, leg: Leg, n: usize, now: Instant) {
        if let Some(s) = self.inner() {
            s.advance(leg, n, now);
        }
    }

    fn write_closed(&self, leg: Leg) -> bool {
        match &self.state {
            State::Inner(s) => s.write_closed(leg),
            _ => false,
        }
    }

    fn is_finished(&self) -> bool {
        match &self.state {
            State::Inner(s) => s.is_finished(),
            State::Header { .. } => false,
            State::Refused(_) => true,
        }
    }

    fn connection_id(&self) -> &str {
        match &self.state {
            State::Inner(s) => s.connection_id(),
            _ => &self.id,
        }
    }

    fn end_reason(&self) -> Option<&EndReason> {
        match &self.state {
            State::Inner(s) => s.end_reason(),
            State::Header { .. } => None,
            State::Refused(reason) => Some(reason),
        }
    }

    fn traffic(&self) -> Traffic {
        match &self.state {
            State::Inner(s) => s.traffic(),
            _ => Traffic::default(),
        }
    }

    fn established(&self) -> Option<Instant> {
        match &self.state {
            State::Inner(s) => s.established(),
            _ => None,
        }
    }

    fn client(&self) -> Option<SocketAddr> {
        self.client
    }
}
