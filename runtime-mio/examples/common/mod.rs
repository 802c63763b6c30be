//! Shared by `echo_server` and `echo_client`: one connection's life on a mio socket (opening handshake,
//! WebSocket pump with backpressure, lingering close) and the echo itself.
//!
//! A connection is driven by three calls from the event loop:
//! - [`Conn::ready`] records a readiness event (mio is edge-triggered: the flags stay set until a read or
//!   write answers `WouldBlock`);
//! - [`Conn::pump`] does everything that can be done now, within a budget, and says whether it is idle,
//!   still busy (call again soon) or done (drop it);
//! - [`Conn::on_timeout`] once [`Conn::deadline`] has passed.

// Each example uses one side (accept or dial) of what is here.
#![allow(dead_code)]

use std::io;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;
use wsbridge_core::http::head::HeadReader;
use wsbridge_core::ws::handshake::{
    accept_response, validate_upgrade, ClientHandshake, HandshakeError,
};
use wsbridge_core::ws::{Event, Role, Utf8Bytes, WebSocket};
use wsbridge_core::{Entropy, WsConfig};
use wsbridge_mio::{read_available, write_from, OsEntropy, ReadOutcome};

/// Largest incoming frame and message (the Autobahn cases go up to 16 MiB).
pub const MAX_SIZE: usize = 16 << 20;
/// Stop taking events (so stop echoing, and soon stop reading) while this much output is queued.
///
/// It must exceed one maximum-size message: a peer may write a whole message before it reads any of the
/// echo (kosoku does, in case 9.2.6 with 16 MiB). Below that, both sides would block on full buffers for
/// good. Memory per connection stays bounded: this, plus the engine's read buffer and one text message.
const HIGH_WATER: usize = MAX_SIZE + (1 << 20);
/// Bytes read per `read_available` call.
const READ_BUDGET: usize = 256 << 10;
/// Steps per `pump` before yielding to other connections.
const ROUNDS: usize = 16;
/// How long the opening handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the peer's EOF after our side is done, so our last bytes are not lost to an RST.
const LINGER: Duration = Duration::from_secs(2);

/// The engine limits both examples use.
pub fn config() -> WsConfig {
    WsConfig {
        max_frame_size: MAX_SIZE as u64,
        max_message_size: MAX_SIZE,
        ..WsConfig::default()
    }
}

/// What a connection does with the messages it receives.
#[derive(Debug)]
pub enum App {
    /// Send every message back with its type; binary pieces are sent as they arrive.
    Echo,
    /// Keep the first text message, ignore the rest.
    FirstText(Option<Utf8Bytes>),
    /// Ignore everything.
    Discard,
}

impl App {
    /// Takes events while less than `HIGH_WATER` bytes wait to be written (backpressure: undecoded input
    /// then stays in the engine, which stops asking for more once its read buffer is full).
    fn drain(&mut self, ws: &mut WebSocket) {
        while ws.buffered_amount() < HIGH_WATER {
            let Some(event) = ws.poll_event() else { break };
            match (&mut *self, event) {
                // A refused send means the connection is closing; there is nothing left to echo to.
                (App::Echo, Event::Text(text)) => drop(ws.send_text(text)),
                (App::Echo, Event::Binary { data, fin }) => drop(ws.send_binary(data, fin)),
                (App::FirstText(slot @ None), Event::Text(text)) => *slot = Some(text),
                (_, Event::Failed(e)) => eprintln!("connection failed: {e:?}"),
                // Pings are answered and Close is replied to by the engine.
                _ => {}
            }
        }
    }
}

/// What [`Conn::pump`] left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Waiting for readiness or a deadline.
    Idle,
    /// The step budget ran out with work left: pump again soon (after serving others).
    Busy,
    /// Finished: deregister and drop it.
    Done,
}

/// The phases of one connection.
enum State {
    /// Server: reading the upgrade request.
    Accepting {
        head: HeadReader,
        deadline: Instant,
    },
    /// Client: writing the upgrade request, then reading the response.
    Dialing {
        request: Bytes,
        handshake: ClientHandshake,
        entropy: Box<dyn Entropy + Send>,
        head: HeadReader,
        deadline: Instant,
    },
    /// Server: writing an HTTP error response, then lingering.
    Refusing {
        response: Bytes,
        deadline: Instant,
    },
    /// The WebSocket; `head` is the 101 still to write ahead of any frame; `flush_deadline` bounds how
    /// long the last bytes may take once the engine is closed.
    Open {
        ws: Box<WebSocket>,
        head: Bytes,
        flush_deadline: Option<Instant>,
    },
    /// Our side is finished: read and discard until the peer's EOF or the deadline.
    Linger {
        deadline: Instant,
    },
    Done,
}

/// The outcome of one step.
enum Step {
    Progress,
    Idle,
    Done,
}

/// One connection. See the module docs.
pub struct Conn {
    /// The socket, for (de)registering with the poll.
    pub sock: TcpStream,
    app: App,
    state: State,
    /// Server side: shut our side down first when done (RFC 6455 §7.1.1); a client waits for the server.
    server: bool,
    readable: bool,
    writable: bool,
    peer_eof: bool,
    rbuf: BytesMut,
}

impl Conn {
    /// A freshly accepted socket; the first bytes are the upgrade request.
    pub fn accept(sock: TcpStream, app: App, now: Instant) -> Conn {
        let cfg = config();
        let head = HeadReader::new(cfg.max_head_size, cfg.max_headers);
        let deadline = now + HANDSHAKE_TIMEOUT;
        Conn::new(sock, app, State::Accepting { head, deadline }, true)
    }

    /// A connected socket to `host` (the `Host` header) on which we request `path`.
    pub fn dial(
        sock: TcpStream,
        host: &str,
        path: &str,
        app: App,
        now: Instant,
    ) -> Result<Conn, HandshakeError> {
        let cfg = config();
        let mut entropy: Box<dyn Entropy + Send> = Box::new(OsEntropy::new());
        let (handshake, request) = ClientHandshake::new(&mut *entropy, host, path, &[], &[])?;
        let state = State::Dialing {
            request,
            handshake,
            entropy,
            head: HeadReader::new(cfg.max_head_size, cfg.max_headers),
            deadline: now + HANDSHAKE_TIMEOUT,
        };
        Ok(Conn::new(sock, app, state, false))
    }

    fn new(sock: TcpStream, app: App, state: State, server: bool) -> Conn {
        Conn {
            sock,
            app,
            state,
            server,
            // Optimistic: the first read or write finds out, and `WouldBlock` clears the flag.
            readable: true,
            writable: true,
            peer_eof: false,
            rbuf: BytesMut::new(),
        }
    }

    /// The application state (e.g. the captured text), once the connection is done.
    pub fn into_app(self) -> App {
        self.app
    }

    /// Records a readiness event. Errors and hang-ups count as both: the next read or write reports them.
    pub fn ready(&mut self, event: &mio::event::Event) {
        let broken = event.is_error();
        self.readable |= event.is_readable() || event.is_read_closed() || broken;
        self.writable |= event.is_writable() || event.is_write_closed() || broken;
    }

    /// When [`Conn::on_timeout`] must be called next.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Accepting { deadline, .. }
            | State::Dialing { deadline, .. }
            | State::Refusing { deadline, .. }
            | State::Linger { deadline } => Some(*deadline),
            State::Open {
                ws, flush_deadline, ..
            } => match (ws.poll_timeout(), *flush_deadline) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
            State::Done => None,
        }
    }

    /// Time has reached [`Conn::deadline`]: expire what is due, then pump.
    pub fn on_timeout(&mut self, now: Instant) -> Status {
        let expired = match &mut self.state {
            State::Open {
                ws, flush_deadline, ..
            } => {
                ws.handle_timeout(now);
                flush_deadline.is_some_and(|d| d <= now)
            }
            State::Done => true,
            _ => self.deadline().is_some_and(|d| d <= now),
        };
        if expired {
            self.state = State::Done;
            return Status::Done;
        }
        self.pump(now)
    }

    /// Does what can be done now: read, handshake, echo, write, close. See [`Status`].
    pub fn pump(&mut self, now: Instant) -> Status {
        for _ in 0..ROUNDS {
            match self.step(now) {
                Step::Progress => {}
                Step::Idle => return Status::Idle,
                Step::Done => {
                    self.state = State::Done;
                    return Status::Done;
                }
            }
        }
        Status::Busy
    }

    fn step(&mut self, now: Instant) -> Step {
        match &mut self.state {
            State::Accepting { head, .. } => {
                let Some(step) =
                    read_head(&mut self.sock, &mut self.rbuf, &mut self.readable, head)
                else {
                    return Step::Done;
                };
                let request = match head.poll_request() {
                    Ok(None) => return step,
                    Ok(Some(request)) => validate_upgrade(&request),
                    Err(e) => Err(e),
                };
                self.state = match request {
                    Ok(info) => {
                        let mut ws = WebSocket::new(Role::Server, &config());
                        ws.handle_input(head.take_remainder());
                        State::Open {
                            ws: Box::new(ws),
                            head: accept_response(&info, None, &[]),
                            flush_deadline: None,
                        }
                    }
                    Err(e) => {
                        eprintln!("refusing the upgrade: {e}");
                        State::Refusing {
                            response: e.response(),
                            deadline: now + LINGER,
                        }
                    }
                };
                Step::Progress
            }
            State::Dialing {
                request,
                handshake,
                entropy,
                head,
                ..
            } => {
                if !request.is_empty() {
                    if !self.writable {
                        return Step::Idle;
                    }
                    match write_from(&mut self.sock, request) {
                        Ok(f) if f.blocked => self.writable = false,
                        Ok(_) => {}
                        Err(e) => return fail("writing the upgrade request", e),
                    }
                    return if request.is_empty() {
                        Step::Progress
                    } else {
                        Step::Idle
                    };
                }
                let Some(step) =
                    read_head(&mut self.sock, &mut self.rbuf, &mut self.readable, head)
                else {
                    eprintln!("the server closed the connection during the handshake");
                    return Step::Done;
                };
                let response = match head.poll_response() {
                    Ok(None) => return step,
                    Ok(Some(response)) => handshake.validate(&response),
                    Err(e) => Err(HandshakeError::Response(e)),
                };
                if let Err(e) = response {
                    eprintln!("handshake failed: {e}");
                    return Step::Done;
                }
                let entropy = std::mem::replace(entropy, Box::new(OsEntropy::new()));
                let mut ws = WebSocket::new(Role::Client(entropy), &config());
                ws.handle_input(head.take_remainder());
                self.state = State::Open {
                    ws: Box::new(ws),
                    head: Bytes::new(),
                    flush_deadline: None,
                };
                Step::Progress
            }
            State::Refusing { response, .. } => {
                if !self.writable {
                    return Step::Idle;
                }
                match write_from(&mut self.sock, response) {
                    Ok(f) if f.blocked => {
                        self.writable = false;
                        Step::Idle
                    }
                    Ok(_) => self.linger(now),
                    Err(_) => Step::Done,
                }
            }
            State::Open {
                ws,
                head,
                flush_deadline,
            } => {
                let mut progress = false;
                if self.readable && ws.wants_read() {
                    match read_available(&mut self.sock, &mut self.rbuf, READ_BUDGET) {
                        ReadOutcome::Data(data) => {
                            ws.handle_input(data);
                            progress = true;
                        }
                        ReadOutcome::WouldBlock => self.readable = false,
                        ReadOutcome::Eof => {
                            ws.handle_eof();
                            self.peer_eof = true;
                            self.readable = false;
                            progress = true;
                        }
                        ReadOutcome::Error(_) => return Step::Done,
                    }
                }
                self.app.drain(ws);
                if self.writable {
                    let flushed = match write_from(&mut self.sock, head) {
                        Ok(f) if !f.blocked => {
                            write_from(&mut self.sock, &mut **ws).map(|g| (f, g))
                        }
                        Ok(f) => Ok((f, f)),
                        Err(e) => Err(e),
                    };
                    match flushed {
                        Ok((f, g)) => {
                            progress |= f.written > 0 || g.written > 0;
                            if g.blocked {
                                self.writable = false;
                            }
                        }
                        Err(_) => return Step::Done,
                    }
                }
                if ws.is_closed() {
                    if head.is_empty() && !ws.wants_write() {
                        return self.linger(now);
                    }
                    // A peer that stops reading cannot keep a closed connection alive for long.
                    flush_deadline.get_or_insert(now + config().close_timeout);
                }
                if progress {
                    Step::Progress
                } else {
                    Step::Idle
                }
            }
            State::Linger { .. } => {
                if !self.readable {
                    return Step::Idle;
                }
                match read_available(&mut self.sock, &mut self.rbuf, READ_BUDGET) {
                    ReadOutcome::Data(_) => Step::Progress,
                    ReadOutcome::WouldBlock => {
                        self.readable = false;
                        Step::Idle
                    }
                    ReadOutcome::Eof | ReadOutcome::Error(_) => Step::Done,
                }
            }
            State::Done => Step::Done,
        }
    }

    /// Our side is finished and flushed. A server shuts its write side down now (the peer sees EOF after
    /// our Close); both then read and discard until the peer's EOF, so that unread input does not turn
    /// the final close into an RST that could destroy our last bytes in flight.
    fn linger(&mut self, now: Instant) -> Step {
        if self.server {
            // Fails only if the peer is already gone, which the lingering read will find out.
            let _ = self.sock.shutdown(std::net::Shutdown::Write);
        }
        if self.peer_eof {
            return Step::Done;
        }
        self.state = State::Linger {
            deadline: now + LINGER,
        };
        Step::Progress
    }
}

/// Reads what is available into `head`. `None`: the peer closed or the read failed.
fn read_head(
    sock: &mut TcpStream,
    rbuf: &mut BytesMut,
    readable: &mut bool,
    head: &mut HeadReader,
) -> Option<Step> {
    if !*readable {
        return Some(Step::Idle);
    }
    match read_available(sock, rbuf, READ_BUDGET) {
        ReadOutcome::Data(data) => {
            head.feed(&data);
            Some(Step::Progress)
        }
        ReadOutcome::WouldBlock => {
            *readable = false;
            Some(Step::Idle)
        }
        ReadOutcome::Eof | ReadOutcome::Error(_) => None,
    }
}

fn fail(what: &str, e: io::Error) -> Step {
    eprintln!("{what}: {e}");
    Step::Done
}
