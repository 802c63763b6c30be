//! An Autobahn fuzzingserver client (`scripts/autobahn.sh client`): echoes every test case.
//!
//! ```text
//! cargo run --release -p wsbridge-mio --example echo_client -- ws://127.0.0.1:9002 AGENT
//! ```
//!
//! Protocol: `GET /getCaseCount` (a text message with the count), then for N in 1..=count
//! `/runCase?case=N&agent=AGENT`, echoing every message until the server closes, then
//! `/updateReports?agent=AGENT`. One connection at a time, each on the same mio loop code as the server.

mod common;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::{Events, Interest, Poll, Token};
use wsbridge_core::http::head::HeadReader;
use wsbridge_core::ws::handshake::{ClientHandshake, HandshakeError};
use wsbridge_core::ws::{Event, Role, Utf8Bytes, WebSocket};
use wsbridge_core::Entropy;
use wsbridge_mio::{write_from, OsEntropy};

use common::{config, App, Conn, Echo, Io, Opened, Opening, Status, Step, HANDSHAKE_TIMEOUT};

fn main() {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:9002".to_owned());
    let agent = args.next().unwrap_or_else(|| "wsbridge".to_owned());
    if let Err(e) = run(&url, &agent) {
        eprintln!("echo_client: {e}");
        std::process::exit(1);
    }
}

fn run(url: &str, agent: &str) -> Result<(), String> {
    let host = url
        .strip_prefix("ws://")
        .ok_or("only ws:// URLs are supported")?
        .trim_end_matches('/');
    let addr: SocketAddr = host
        .to_socket_addrs()
        .map_err(|e| format!("resolving {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let agent = percent_encode(agent);
    let mut poll = Poll::new().map_err(|e| e.to_string())?;

    let count = match session(
        &mut poll,
        host,
        addr,
        "/getCaseCount",
        Task::FirstText(None),
    )? {
        Task::FirstText(Some(text)) => text
            .as_str()
            .trim()
            .parse::<u32>()
            .map_err(|e| format!("bad case count {:?}: {e}", text.as_str()))?,
        _ => return Err("no case count received".into()),
    };
    println!("running {count} cases as agent {agent:?}");
    let started = Instant::now();
    for case in 1..=count {
        let path = format!("/runCase?case={case}&agent={agent}");
        session(&mut poll, host, addr, &path, Task::Echo)?;
        if case % 50 == 0 || case == count {
            println!("{case}/{count} cases done ({:.1?})", started.elapsed());
        }
    }
    let path = format!("/updateReports?agent={agent}");
    session(&mut poll, host, addr, &path, Task::Discard)?;
    println!("reports updated");
    Ok(())
}

/// One WebSocket connection to `path`, driven until it is done; returns what the app kept.
fn session(
    poll: &mut Poll,
    host: &str,
    addr: SocketAddr,
    path: &str,
    task: Task,
) -> Result<Task, String> {
    let err = |e: io::Error| format!("{path}: {e}");
    // A blocking connect keeps the example short; the connection itself is non-blocking.
    let sock = std::net::TcpStream::connect(addr).map_err(err)?;
    sock.set_nodelay(true).map_err(err)?;
    sock.set_nonblocking(true).map_err(err)?;
    let sock = mio::net::TcpStream::from_std(sock);
    let dial = Dial::new(host, path, Instant::now()).map_err(|e| format!("{path}: {e}"))?;
    let mut conn = Conn::new(sock, dial, task);
    let token = Token(0);
    poll.registry()
        .register(
            &mut conn.io.sock,
            token,
            Interest::READABLE | Interest::WRITABLE,
        )
        .map_err(err)?;

    let mut events = Events::with_capacity(16);
    let mut status = conn.pump(Instant::now());
    while status != Status::Done {
        let now = Instant::now();
        let timeout = match status {
            Status::Busy => Some(Duration::ZERO),
            _ => conn.deadline().map(|d| d.saturating_duration_since(now)),
        };
        match poll.poll(&mut events, timeout) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => other.map_err(err)?,
        }
        for event in &events {
            conn.ready(event);
        }
        let now = Instant::now();
        status = if conn.deadline().is_some_and(|d| d <= now) {
            conn.on_timeout(now)
        } else {
            conn.pump(now)
        };
    }
    poll.registry().deregister(&mut conn.io.sock).map_err(err)?;
    Ok(conn.app)
}

/// What a connection does with the messages it receives.
enum Task {
    /// Send every message back.
    Echo,
    /// Keep the first text message, ignore the rest.
    FirstText(Option<Utf8Bytes>),
    /// Ignore everything.
    Discard,
}

impl App for Task {
    fn on_event(&mut self, ws: &mut WebSocket, event: Event) {
        match (self, event) {
            (Task::Echo, event) => Echo.on_event(ws, event),
            (Task::FirstText(slot @ None), Event::Text(text)) => *slot = Some(text),
            _ => {}
        }
    }
}

/// The client's opening handshake: write the upgrade request, then read and check the response.
struct Dial {
    request: Bytes,
    handshake: ClientHandshake,
    entropy: Box<dyn Entropy + Send>,
    head: HeadReader,
    deadline: Instant,
}

impl Dial {
    /// Requests `path` from `host` (the `Host` header).
    fn new(host: &str, path: &str, now: Instant) -> Result<Dial, HandshakeError> {
        let cfg = config();
        let mut entropy: Box<dyn Entropy + Send> = Box::new(OsEntropy::new());
        let (handshake, request) = ClientHandshake::new(&mut *entropy, host, path, &[], &[])?;
        Ok(Dial {
            request,
            handshake,
            entropy,
            head: HeadReader::new(cfg.max_head_size, cfg.max_headers),
            deadline: now + HANDSHAKE_TIMEOUT,
        })
    }
}

impl Opening for Dial {
    const SERVER: bool = false;

    fn deadline(&self) -> Instant {
        self.deadline
    }

    fn step(&mut self, io: &mut Io, _now: Instant) -> Opened {
        if !self.request.is_empty() {
            if !io.writable {
                return Opened::Pending(Step::Idle);
            }
            match write_from(&mut io.sock, &mut self.request) {
                Ok(f) if f.blocked => io.writable = false,
                Ok(_) => {}
                Err(e) => {
                    eprintln!("writing the upgrade request: {e}");
                    return Opened::Done { linger: false };
                }
            }
            return Opened::Pending(if self.request.is_empty() {
                Step::Progress
            } else {
                Step::Idle
            });
        }
        let Some(step) = io.read_head(&mut self.head) else {
            eprintln!("the server closed the connection during the handshake");
            return Opened::Done { linger: false };
        };
        let response = match self.head.poll_response() {
            Ok(None) => return Opened::Pending(step),
            Ok(Some(response)) => self.handshake.validate(&response),
            Err(e) => Err(HandshakeError::Response(e)),
        };
        if let Err(e) = response {
            eprintln!("handshake failed: {e}");
            return Opened::Done { linger: false };
        }
        let entropy = std::mem::replace(&mut self.entropy, Box::new(OsEntropy::new()));
        let mut ws = WebSocket::new(Role::Client(entropy), &config());
        ws.handle_input(self.head.take_remainder());
        Opened::Open {
            ws: Box::new(ws),
            head: Bytes::new(),
        }
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters, for a query value.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
