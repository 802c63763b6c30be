//! The contract between a bridge session (one per accepted connection, any mode) and the runtime that
//! drives it.
//!
//! A session has two legs: [`Leg::Down`], the socket the runtime accepted, and [`Leg::Up`], the socket the
//! session asks the runtime to dial. The runtime owns both sockets and the clock; the session owns every
//! protocol decision. After **every** `handle_*` call the runtime drains the outputs, in this order:
//!
//! 1. [`Session::poll_action`] until `None` — resolve a name, dial an address;
//! 2. for each leg, [`Session::slices`] → `write_vectored` → [`Session::advance`] until the kernel would
//!    block or nothing is left; then, if [`Session::write_closed`] and nothing is left, `shutdown(Write)`;
//! 3. read interest per leg from [`Session::wants_read`] (re-registered only when it changes);
//! 4. the timer from [`Session::poll_timeout`];
//! 5. if [`Session::is_finished`], close both sockets and drop the session.
//!
//! Reads go to [`Session::handle_input`] as owned buffers; an orderly end of stream to
//! [`Session::handle_eof`]; a socket error to [`Session::handle_io_error`]. A runtime holds no protocol
//! logic: it never looks inside the bytes.

use std::collections::VecDeque;
use std::fmt;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::BytesMut;

/// One of the two sockets of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The accepted socket (the TCP client in `tcp2ws`, the WebSocket client in `ws2tcp`/`ws2http`).
    Down,
    /// The socket the session dials (the backend or target).
    Up,
}

impl Leg {
    /// Both legs, `Down` first.
    pub const BOTH: [Leg; 2] = [Leg::Down, Leg::Up];
}

/// Something only the runtime can do, asked for by the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Resolve `host` with the system resolver (off the event loop) and answer with
    /// [`Session::handle_resolved`]. A newer `Resolve` replaces one still unanswered: only the newest
    /// is answered (an older answer may be for another host, e.g. a `ws2http` session whose on-frame
    /// POST timed out while resolving, now posting to its on-disconnect URL).
    Resolve {
        /// A host name or an address literal in any spelling the OS accepts.
        host: String,
        /// The port the addresses are for.
        port: u16,
    },
    /// Open a non-blocking TCP connection for the `Up` leg and answer with [`Session::handle_connected`]
    /// or [`Session::handle_connect_failed`]. If an `Up` socket is open, the runtime closes it first: a
    /// session that dials again (e.g. after a backend closed its keep-alive connection) gets a fresh leg.
    Connect(SocketAddr),
    /// Make this session reachable by [`Action::Deliver`] from any session of the same server under
    /// `id`, until it finishes (the runtime forgets the id then). An id already taken is not replaced.
    Register(String),
    /// Hand `message` to the session registered under `to`, wherever it runs, and answer with
    /// [`Session::handle_delivery_result`] (exactly once per `Deliver`, in order).
    Deliver {
        /// The id the receiver registered.
        to: String,
        /// What to hand over.
        message: Delivery,
    },
}

/// A message one session hands another through the runtime (`ws2http`: a callback POST's body for the
/// WebSocket client it is addressed to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Send it as a Text frame (the body is valid UTF-8), else Binary.
    pub text: bool,
    /// The payload.
    pub data: bytes::Bytes,
}

/// What became of a [`Delivery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResult {
    /// The receiver queued it.
    Accepted,
    /// The receiver's queue is full: nothing was queued (answer 503, never buffer without bound).
    Full,
    /// No session is registered under that id (answer 404).
    Unknown,
}

/// Why a session ended, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndReason {
    /// Both sides finished normally.
    Normal,
    /// A deadline passed (handshake, idle, lifetime, pong, close).
    Timeout(&'static str),
    /// Refused by policy or a limit.
    Policy(String),
    /// The peer on a leg broke a protocol or reset the connection.
    PeerError(Leg, String),
    /// Dialling or talking to the upstream failed.
    Upstream(String),
    /// The server went away ([`Session::handle_shutdown`]): closed with 1001 / FIN after a flush.
    Shutdown,
}

impl EndReason {
    /// A short label for metrics: `normal`, `timeout`, `policy`, `peer_error`, `upstream`, `shutdown`.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::Normal => "normal",
            EndReason::Timeout(_) => "timeout",
            EndReason::Policy(_) => "policy",
            EndReason::PeerError(..) => "peer_error",
            EndReason::Upstream(_) => "upstream",
            EndReason::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::Normal => f.write_str("normal"),
            EndReason::Timeout(what) => write!(f, "timeout: {what}"),
            EndReason::Policy(why) => write!(f, "policy: {why}"),
            EndReason::PeerError(Leg::Down, why) => write!(f, "client error: {why}"),
            EndReason::PeerError(Leg::Up, why) => write!(f, "upstream peer error: {why}"),
            EndReason::Upstream(why) => write!(f, "upstream: {why}"),
            EndReason::Shutdown => f.write_str("shutdown: the server is going away"),
        }
    }
}

/// Byte counts of a session, as relayed (payload, not framing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Payload bytes from the `Down` peer delivered towards `Up`.
    pub down_to_up: u64,
    /// Payload bytes from the `Up` peer delivered towards `Down`.
    pub up_to_down: u64,
    /// STARTTLS upgrades of the client connection that completed (`tcp2ws`).
    pub starttls_ok: u64,
    /// STARTTLS upgrades of the client connection that failed (`tcp2ws`).
    pub starttls_failed: u64,
    /// Pongs that did not come back in time (the session then ends).
    pub heartbeat_misses: u64,
}

/// One bridged connection, driven by a runtime. See the module docs for the calling order.
pub trait Session {
    /// Bytes read from `leg`.
    fn handle_input(&mut self, leg: Leg, data: BytesMut, now: Instant);
    /// `leg`'s peer shut down its writing side (read returned 0).
    fn handle_eof(&mut self, leg: Leg, now: Instant);
    /// A read or write on `leg` failed (reset, broken pipe…).
    fn handle_io_error(&mut self, leg: Leg, error: std::io::ErrorKind, now: Instant);
    /// The answer to [`Action::Resolve`]: the addresses, or why there are none.
    fn handle_resolved(&mut self, result: Result<Vec<SocketAddr>, String>, now: Instant);
    /// The `Up` leg asked for with [`Action::Connect`] is connected.
    fn handle_connected(&mut self, now: Instant);
    /// The connect asked for failed (`error` describes why: refused, unreachable…).
    fn handle_connect_failed(&mut self, error: std::io::ErrorKind, now: Instant);
    /// The instant from [`Session::poll_timeout`] has passed.
    fn handle_timeout(&mut self, now: Instant);
    /// Another session delivers `message` to this one (see [`Action::Register`]). The session queues it
    /// or refuses it at once; it never blocks. Sessions that never register keep the default.
    fn handle_delivery(&mut self, message: Delivery, now: Instant) -> DeliveryResult {
        let _ = (message, now);
        DeliveryResult::Unknown
    }
    /// The answer to this session's [`Action::Deliver`]s, one per `Deliver`, in order.
    fn handle_delivery_result(&mut self, result: DeliveryResult, now: Instant) {
        let _ = (result, now);
    }
    /// The server is going away (the end of a graceful drain): finish now. What is already queued is
    /// still flushed; then WebSocket legs get Close 1001 "going away" and TCP legs a FIN, and the
    /// session ends with [`EndReason::Shutdown`] once that is written (bounded by its close timeout).
    /// A session already ending keeps ending as it was. Calling it twice is harmless. Every session
    /// (and every wrapper, which forwards it) must implement it: there is no default on purpose.
    fn handle_shutdown(&mut self, now: Instant);

    /// The next thing the runtime must do for the session.
    fn poll_action(&mut self) -> Option<Action>;
    /// When [`Session::handle_timeout`] must be called next.
    fn poll_timeout(&self) -> Option<Instant>;
    /// Whether to read from `leg` now (false applies backpressure).
    fn wants_read(&self, leg: Leg) -> bool;
    /// The bytes to write to `leg` next, in order; returns how many slices were filled.
    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize;
    /// The kernel took the first `n` bytes of what [`Session::slices`] offered for `leg`.
    fn advance(&mut self, leg: Leg, n: usize, now: Instant);
    /// No more bytes will be queued for `leg`: once its queue is empty, shut down its writing side.
    fn write_closed(&self, leg: Leg) -> bool;
    /// The session is over: close both sockets now.
    fn is_finished(&self) -> bool;

    /// The id that names this session in logs and to the peers (e.g. `bridge_hello.connection_id`).
    fn connection_id(&self) -> &str;
    /// Why it ended, once [`Session::is_finished`].
    fn end_reason(&self) -> Option<&EndReason>;
    /// Bytes relayed so far.
    fn traffic(&self) -> Traffic;
    /// When the session became established — both legs ready to relay (`tcp2ws`: the backend's 101;
    /// `ws2tcp`: the target connected; `ws2http`: the client's 101) — or `None` if it has not (yet) or
    /// never will (an over-capacity answer). For the handshake-time metric; it never changes once set.
    fn established(&self) -> Option<Instant>;

    /// The client's address when it is not the accepted socket's peer: the source a PROXY protocol
    /// header named ([`crate::proxy::ProxyProtocol`]), once read. Runtimes log it as the peer.
    fn client(&self) -> Option<SocketAddr> {
        None
    }
}

/// Makes the sessions of one listener. A runtime holds one per listener and knows nothing of modes.
pub trait SessionFactory: Send + Sync {
    /// A session for a client accepted from `peer` at `now`.
    fn session(
        &self,
        peer: SocketAddr,
        entropy: Box<dyn crate::Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send>;

    /// A session that only tells a client accepted over the connection limit to go away, or `None` to
    /// close its socket at once (what TCP listeners do; WebSocket listeners answer Close 1013).
    fn over_capacity(
        &self,
        peer: SocketAddr,
        entropy: Box<dyn crate::Entropy + Send>,
        now: Instant,
    ) -> Option<Box<dyn Session + Send>>;

    /// The mode's name for logs and metrics (`tcp2ws`, `ws2tcp`, `ws2http`).
    fn mode(&self) -> &'static str;
}

/// A fresh connection id: 16 hex digits from `entropy`.
pub fn new_connection_id(entropy: &mut dyn crate::Entropy) -> String {
    let mut id = [0u8; 8];
    entropy.fill(&mut id);
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// What every runtime refuses before it binds anything, as `InvalidInput` errors: no listener at all
/// (`listeners` is how many it was given), or a setting that must be at least 1, given as
/// `(name, value)` (e.g. `("threads", 0)`).
pub fn check_listeners(listeners: usize, at_least_one: &[(&str, usize)]) -> std::io::Result<()> {
    let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
    if listeners == 0 {
        return Err(invalid("no listener to run".into()));
    }
    match at_least_one.iter().find(|(_, value)| *value == 0) {
        Some((name, _)) => Err(invalid(format!("{name} must be at least 1"))),
        None => Ok(()),
    }
}

/// The error of a listener that cannot be bound at `addr`: its kind, and a message naming the address.
pub fn listen_error(addr: SocketAddr, e: &std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
}

/// The next of a session's queued actions, for [`Session::poll_action`]. The queue's memory is released
/// once it is empty: the runtime drains it after every input, so an idle session holds none.
pub(crate) fn pop_action(actions: &mut VecDeque<Action>) -> Option<Action> {
    let action = actions.pop_front();
    if actions.is_empty() {
        *actions = VecDeque::new();
    }
    action
}

/// Reads smaller than this are copied out of a runtime's read buffer instead of split off it.
pub const SMALL_READ: usize = 4 << 10;

/// Hands what a runtime read into its reused read buffer `buf` to a session, leaving `buf` empty.
///
/// A small read is copied into a buffer of its own and `buf` keeps its allocation for the next read: a
/// view of a few bytes that a session keeps (a partial frame, a pending request, a handshake leftover)
/// would otherwise keep the whole read allocation alive, which is what an idle connection would then
/// cost. A large read leaves with the whole allocation, no copy (the payload travels on as views of
/// it), and `buf` is left with none: keeping the allocation's unread tail as room for the next read
/// would keep it alive after the session dropped its bytes.
pub fn take_read(buf: &mut BytesMut) -> BytesMut {
    if buf.len() < SMALL_READ {
        let small = BytesMut::from(&buf[..]);
        buf.clear();
        small
    } else {
        std::mem::take(buf)
    }
}

/// The answer to an [`Action::Resolve`] that a runtime can give at once, without a trip through its
/// resolver threads: `host` is an IP address in the one spelling std parses (`192.0.2.7`, `::1`), for
/// which the system resolver would answer that address alone. Every other spelling (`127.1`,
/// `0x7f000001`) and every name returns `None` and goes to the resolver, so what a session checks is the
/// same either way.
pub fn resolve_literal(host: &str, port: u16) -> Option<Vec<SocketAddr>> {
    let ip: std::net::IpAddr = host.parse().ok()?;
    Some(vec![SocketAddr::new(ip, port)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_refuse_no_listener_and_zero_settings_and_name_the_address_they_cannot_bind() {
        let e = check_listeners(0, &[("threads", 1)]).unwrap_err();
        assert_eq!(
            (e.kind(), e.to_string()),
            (
                std::io::ErrorKind::InvalidInput,
                "no listener to run".into()
            )
        );
        let e = check_listeners(2, &[("threads", 1), ("max_connections", 0)]).unwrap_err();
        assert_eq!(e.to_string(), "max_connections must be at least 1");
        assert!(check_listeners(1, &[("threads", 1)]).is_ok());

        let addr: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let e = listen_error(addr, &std::io::ErrorKind::AddrInUse.into());
        assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
        assert!(
            e.to_string().starts_with("cannot listen on 127.0.0.1:80: "),
            "{e}"
        );
    }

    #[test]
    fn the_action_queue_is_released_once_drained() {
        let mut actions = VecDeque::new();
        let connect = |port| Action::Connect(SocketAddr::from(([127, 0, 0, 1], port)));
        actions.extend([connect(1), connect(2)]);
        assert_eq!(pop_action(&mut actions), Some(connect(1)));
        assert!(actions.capacity() > 0);
        assert_eq!(pop_action(&mut actions), Some(connect(2)));
        assert_eq!(actions.capacity(), 0);
        assert_eq!(pop_action(&mut actions), None);
    }

    #[test]
    fn only_canonical_address_literals_skip_the_resolver() {
        assert_eq!(
            resolve_literal("127.0.0.1", 80),
            Some(vec!["127.0.0.1:80".parse().unwrap()])
        );
        assert_eq!(
            resolve_literal("::ffff:10.0.0.1", 7),
            Some(vec!["[::ffff:10.0.0.1]:7".parse().unwrap()])
        );
        for other in [
            "127.1",
            "0x7f000001",
            "2130706433",
            "[::1]",
            "localhost",
            "",
        ] {
            assert_eq!(resolve_literal(other, 80), None, "{other}");
        }
    }
}
