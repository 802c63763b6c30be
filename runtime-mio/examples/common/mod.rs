//! Shared by `echo_server` and `echo_client`: one connection's life on a mio socket (an opening handshake,
//! WebSocket pump with backpressure, lingering close) and the echo itself. Each side brings its own
//! [`Opening`] (accept or dial) and [`App`].
//!
//! A connection is driven by three calls from the event loop:
//! - [`Conn::ready`] records a readiness event (mio is edge-triggered: the flags stay set until a read or
//!   write answers `WouldBlock`);
//! - [`Conn::pump`] does everything that can be done now, within a budget, and says whether it is idle,
//!   still busy (call again soon) or done (drop it);
//! - [`Conn::on_timeout`] once [`Conn::deadline`] has passed.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mio::net::TcpStream;
use wsbridge_core::http::head::HeadReader;
use wsbridge_core::ws::{Event, WebSocket};
use wsbridge_core::WsConfig;
use wsbridge_mio::{read_available, write_from, ReadOutcome};

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
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait for the peer's EOF after our side is done, so our last bytes are not lost to an RST.
pub const LINGER: Duration = Duration::from_secs(2);

/// The engine limits both examples use.
pub fn config() -> WsConfig {
    WsConfig {
        max_frame_size: MAX_SIZE as u64,
        max_message_size: MAX_SIZE,
        ..WsConfig::default()
    }
}

/// What a connection does with the messages it receives. Failures are logged before they get here;
/// pings are answered and Close is replied to by the engine.
pub trait App {
    fn on_event(&mut self, ws: &mut WebSocket, event: Event);
}

/// Sends every message back with its type; binary pieces are sent as they arrive.
pub struct Echo;

impl App for Echo {
    fn on_event(&mut self, ws: &mut WebSocket, event: Event) {
        match event {
            // A refused send means the connection is closing; there is nothing left to echo to.
            Event::Text(text) => drop(ws.send_text(text)),
            Event::Binary { data, fin } => drop(ws.send_binary(data, fin)),
            _ => {}
        }
    }
}

/// Takes events while less than `HIGH_WATER` bytes wait to be written (backpressure: undecoded input then
/// stays in the engine, which stops asking for more once its read buffer is full).
fn drain(app: &mut impl App, ws: &mut WebSocket) {
    while ws.buffered_amount() < HIGH_WATER {
        let Some(event) = ws.poll_event() else { break };
        match event {
            Event::Failed(e) => eprintln!("connection failed: {e:?}"),
            event => app.on_event(ws, event),
        }
    }
}

/// One side's opening handshake: the server reads the upgrade request (or refuses it), the client
/// writes its request and reads the response.
pub trait Opening {
    /// Whether this is the server side, which shuts its side down first when done (RFC 6455 §7.1.1); a
    /// client waits for the server.
    const SERVER: bool;
    /// When the handshake (or the refusal) gives up.
    fn deadline(&self) -> Instant;
    /// One step of the handshake.
    fn step(&mut self, io: &mut Io, now: Instant) -> Opened;
}

/// The outcome of one [`Opening::step`].
pub enum Opened {
    /// Still opening.
    Pending(Step),
    /// The WebSocket, with `head` (the 101, for a server) still to write ahead of any frame.
    Open { ws: Box<WebSocket>, head: Bytes },
    /// Failed or refused; `linger`: our last bytes (a refusal) are written, so wait for the peer's EOF
    /// before closing.
    Done { linger: bool },
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

/// The outcome of one step.
pub enum Step {
    Progress,
    Idle,
    Done,
}

/// The socket and what is known of its readiness.
pub struct Io {
    /// The socket, for (de)registering with the poll.
    pub sock: TcpStream,
    /// A read may make progress (cleared by `WouldBlock`).
    pub readable: bool,
    /// A write may make progress (cleared by a blocked write).
    pub writable: bool,
    peer_eof: bool,
    rbuf: BytesMut,
}

impl Io {
    /// Reads what is available into `head`. `None`: the peer closed or the read failed.
    pub fn read_head(&mut self, head: &mut HeadReader) -> Option<Step> {
        if !self.readable {
            return Some(Step::Idle);
        }
        match read_available(&mut self.sock, &mut self.rbuf, READ_BUDGET) {
            ReadOutcome::Data(data) => {
                head.feed(&data);
                Some(Step::Progress)
            }
            ReadOutcome::WouldBlock => {
                self.readable = false;
                Some(Step::Idle)
            }
            ReadOutcome::Eof | ReadOutcome::Error(_) => None,
        }
    }
}

/// The phases of one connection.
enum State<O> {
    Opening(O),
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

/// One connection. See the module docs.
pub struct Conn<O, A> {
    pub io: Io,
    /// The application state (e.g. the captured text).
    pub app: A,
    state: State<O>,
}

impl<O: Opening, A: App> Conn<O, A> {
    /// A connected socket that starts with `opening`.
    pub fn new(sock: TcpStream, opening: O, app: A) -> Self {
        Conn {
            io: Io {
                sock,
                // Optimistic: the first read or write finds out, and `WouldBlock` clears the flag.
                readable: true,
                writable: true,
                peer_eof: false,
                rbuf: BytesMut::new(),
            },
            app,
            state: State::Opening(opening),
        }
    }

    /// Records a readiness event. Errors and hang-ups count as both: the next read or write reports them.
    pub fn ready(&mut self, event: &mio::event::Event) {
        let broken = event.is_error();
        self.io.readable |= event.is_readable() || event.is_read_closed() || broken;
        self.io.writable |= event.is_writable() || event.is_write_closed() || broken;
    }

    /// When [`Conn::on_timeout`] must be called next.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.state {
            State::Opening(opening) => Some(opening.deadline()),
            State::Linger { deadline } => Some(*deadline),
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
            State::Opening(opening) => match opening.step(&mut self.io, now) {
                Opened::Pending(step) => step,
                Opened::Open { ws, head } => {
                    self.state = State::Open {
                        ws,
                        head,
                        flush_deadline: None,
                    };
                    Step::Progress
                }
                Opened::Done { linger: true } => self.linger(now),
                Opened::Done { linger: false } => Step::Done,
            },
            State::Open {
                ws,
                head,
                flush_deadline,
            } => {
                let mut progress = false;
                if self.io.readable && ws.wants_read() {
                    match read_available(&mut self.io.sock, &mut self.io.rbuf, READ_BUDGET) {
                        ReadOutcome::Data(data) => {
                            ws.handle_input(data);
                            progress = true;
                        }
                        ReadOutcome::WouldBlock => self.io.readable = false,
                        ReadOutcome::Eof => {
                            ws.handle_eof();
                            self.io.peer_eof = true;
                            self.io.readable = false;
                            progress = true;
                        }
                        ReadOutcome::Error(_) => return Step::Done,
                    }
                }
                drain(&mut self.app, ws);
                if self.io.writable {
                    let flushed = match write_from(&mut self.io.sock, head) {
                        Ok(f) if !f.blocked => {
                            write_from(&mut self.io.sock, &mut **ws).map(|g| (f, g))
                        }
                        Ok(f) => Ok((f, f)),
                        Err(e) => Err(e),
                    };
                    match flushed {
                        Ok((f, g)) => {
                            progress |= f.written > 0 || g.written > 0;
                            if g.blocked {
                                self.io.writable = false;
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
                if !self.io.readable {
                    return Step::Idle;
                }
                match read_available(&mut self.io.sock, &mut self.io.rbuf, READ_BUDGET) {
                    ReadOutcome::Data(_) => Step::Progress,
                    ReadOutcome::WouldBlock => {
                        self.io.readable = false;
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
        if O::SERVER {
            // Fails only if the peer is already gone, which the lingering read will find out.
            let _ = self.io.sock.shutdown(std::net::Shutdown::Write);
        }
        if self.io.peer_eof {
            return Step::Done;
        }
        self.state = State::Linger {
            deadline: now + LINGER,
        };
        Step::Progress
    }
}
