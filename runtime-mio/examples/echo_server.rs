//! A WebSocket echo server on one mio loop, for Autobahn conformance runs (`scripts/autobahn.sh server`).
//!
//! ```text
//! cargo run --release -p wsbridge-mio --example echo_server -- 127.0.0.1:9001
//! ```
//!
//! Every connection: upgrade (or an HTTP error response), then every message is sent back with its type;
//! binary messages are streamed piece by piece, never reassembled. Frames and messages up to 16 MiB.

mod common;

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};
use wsbridge_core::http::head::HeadReader;
use wsbridge_core::ws::handshake::{accept_response, validate_upgrade};
use wsbridge_core::ws::{Role, WebSocket};
use wsbridge_mio::write_from;

use common::{config, Echo, Io, Opened, Opening, Status, Step, HANDSHAKE_TIMEOUT, LINGER};

type Conn = common::Conn<Accept, Echo>;

const LISTENER: Token = Token(usize::MAX);

/// The server's opening handshake: read the upgrade request, then accept it or refuse it with an HTTP
/// error response.
enum Accept {
    /// Reading the upgrade request.
    Reading { head: HeadReader, deadline: Instant },
    /// Writing an HTTP error response.
    Refusing { response: Bytes, deadline: Instant },
}

impl Accept {
    /// A freshly accepted socket's: the first bytes are the upgrade request.
    fn new(now: Instant) -> Accept {
        let cfg = config();
        Accept::Reading {
            head: HeadReader::new(cfg.max_head_size, cfg.max_headers),
            deadline: now + HANDSHAKE_TIMEOUT,
        }
    }
}

impl Opening for Accept {
    const SERVER: bool = true;

    fn deadline(&self) -> Instant {
        match self {
            Accept::Reading { deadline, .. } | Accept::Refusing { deadline, .. } => *deadline,
        }
    }

    fn step(&mut self, io: &mut Io, now: Instant) -> Opened {
        match self {
            Accept::Reading { head, .. } => {
                let Some(step) = io.read_head(head) else {
                    return Opened::Done { linger: false };
                };
                let request = match head.poll_request() {
                    Ok(None) => return Opened::Pending(step),
                    Ok(Some(request)) => validate_upgrade(&request),
                    Err(e) => Err(e),
                };
                match request {
                    Ok(info) => {
                        let mut ws = WebSocket::new(Role::Server, &config());
                        ws.handle_input(head.take_remainder());
                        Opened::Open {
                            ws: Box::new(ws),
                            head: accept_response(&info, None, &[]),
                        }
                    }
                    Err(e) => {
                        eprintln!("refusing the upgrade: {e}");
                        *self = Accept::Refusing {
                            response: e.response(),
                            deadline: now + LINGER,
                        };
                        Opened::Pending(Step::Progress)
                    }
                }
            }
            Accept::Refusing { response, .. } => {
                if !io.writable {
                    return Opened::Pending(Step::Idle);
                }
                match write_from(&mut io.sock, response) {
                    Ok(f) if f.blocked => {
                        io.writable = false;
                        Opened::Pending(Step::Idle)
                    }
                    Ok(_) => Opened::Done { linger: true },
                    Err(_) => Opened::Done { linger: false },
                }
            }
        }
    }
}

/// Connections indexed by their token; freed slots are reused.
#[derive(Default)]
struct Slab {
    slots: Vec<Option<Conn>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, conn: Conn) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(conn);
                i
            }
            None => {
                self.slots.push(Some(conn));
                self.slots.len() - 1
            }
        }
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Conn> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    fn remove(&mut self, i: usize) -> Option<Conn> {
        let conn = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        Some(conn)
    }

    fn iter(&self) -> impl Iterator<Item = (usize, &Conn)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?)))
    }
}

fn main() -> io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".to_owned())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut listener = TcpListener::bind(addr)?;
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("echo_server listening on ws://{}", listener.local_addr()?);

    let mut conns = Slab::default();
    let mut events = Events::with_capacity(1024);
    // Connections whose pump ran out of budget with work left.
    let mut busy: Vec<usize> = Vec::new();
    loop {
        let now = Instant::now();
        let timeout = if busy.is_empty() {
            conns
                .iter()
                .filter_map(|(_, c)| c.deadline())
                .min()
                .map(|d| d.saturating_duration_since(now))
        } else {
            Some(Duration::ZERO)
        };
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other?,
        }
        let now = Instant::now();

        let mut touched = std::mem::take(&mut busy);
        for event in &events {
            if event.token() == LISTENER {
                accept_all(&listener, &poll, &mut conns, &mut touched, now);
            } else if let Some(conn) = conns.get_mut(event.token().0) {
                conn.ready(event);
                touched.push(event.token().0);
            }
        }
        let expired: Vec<usize> = conns
            .iter()
            .filter(|(_, c)| c.deadline().is_some_and(|d| d <= now))
            .map(|(i, _)| i)
            .collect();

        touched.sort_unstable();
        touched.dedup();
        for i in touched {
            if let Some(conn) = conns.get_mut(i) {
                let status = conn.pump(now);
                settle(&poll, &mut conns, &mut busy, i, status);
            }
        }
        for i in expired {
            if let Some(conn) = conns.get_mut(i) {
                let status = conn.on_timeout(now);
                settle(&poll, &mut conns, &mut busy, i, status);
            }
        }
        busy.sort_unstable();
        busy.dedup();
    }
}

/// Accepts until the listener would block; new connections are pumped in this round.
fn accept_all(
    listener: &TcpListener,
    poll: &Poll,
    conns: &mut Slab,
    touched: &mut Vec<usize>,
    now: Instant,
) {
    loop {
        let (sock, _peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // E.g. out of file descriptors: the pending connection waits for the next accept event.
                eprintln!("accept: {e}");
                return;
            }
        };
        // Echoes of small messages must not wait for Nagle.
        let _ = sock.set_nodelay(true);
        let i = conns.insert(Conn::new(sock, Accept::new(now), Echo));
        let conn = conns.get_mut(i).expect("just inserted");
        let interest = Interest::READABLE | Interest::WRITABLE;
        match poll
            .registry()
            .register(&mut conn.io.sock, Token(i), interest)
        {
            Ok(()) => touched.push(i),
            Err(e) => {
                eprintln!("register: {e}");
                conns.remove(i);
            }
        }
    }
}

fn settle(poll: &Poll, conns: &mut Slab, busy: &mut Vec<usize>, i: usize, status: Status) {
    match status {
        Status::Idle => {}
        Status::Busy => busy.push(i),
        Status::Done => {
            if let Some(mut conn) = conns.remove(i) {
                let _ = poll.registry().deregister(&mut conn.io.sock);
            }
        }
    }
}
