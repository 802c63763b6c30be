//! The smol driver against trivial sessions defined here (no protocol): they relay bytes between the
//! legs, greet, tick, dial, resolve, and say what happened, over real sockets on 127.0.0.1; and a
//! line-driven session that registers, delivers to others and dials again. The server
//! runs on a smol executor on a background thread, as an embedding program would run it.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use wsbridge_core::session::{
    Action, Delivery, DeliveryResult, EndReason, Leg, Session, SessionFactory, Traffic,
};
use wsbridge_core::Entropy;

use crate::{ListenerSpec, RuntimeOptions, Server};

const WAIT: Duration = Duration::from_secs(10);

/// Where the test session dials its `Up` leg.
#[derive(Clone)]
enum Target {
    None,
    Addr(SocketAddr),
    Resolve(&'static str, u16),
}

#[derive(Clone)]
struct Plan {
    target: Target,
    /// Written to the client first.
    greet: &'static [u8],
    /// Write "tick\n" to the client and end this long after the start.
    tick_after: Option<Duration>,
    /// Bytes queued per direction before that side stops being read.
    cap: usize,
    /// What happened, for assertions.
    notes: Arc<Mutex<Vec<String>>>,
}

impl Plan {
    fn new(target: Target) -> Self {
        Plan {
            target,
            greet: b"",
            tick_after: None,
            cap: 64 * 1024,
            notes: Arc::default(),
        }
    }
    fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }
}

struct TestSession {
    plan: Plan,
    actions: VecDeque<Action>,
    to_up: BytesMut,
    to_down: BytesMut,
    connected: bool,
    down_eof: bool,
    up_eof: bool,
    /// Only the rest of `to_down` is still sent, then the session ends.
    ending: bool,
    deadline: Option<Instant>,
    end: Option<EndReason>,
    traffic: Traffic,
}

impl TestSession {
    fn new(plan: Plan, now: Instant) -> Self {
        let mut actions = VecDeque::new();
        match plan.target {
            Target::None => {}
            Target::Addr(a) => actions.push_back(Action::Connect(a)),
            Target::Resolve(host, port) => actions.push_back(Action::Resolve {
                host: host.to_owned(),
                port,
            }),
        }
        TestSession {
            to_down: BytesMut::from(plan.greet),
            deadline: plan.tick_after.map(|d| now + d),
            plan,
            actions,
            to_up: BytesMut::new(),
            connected: false,
            down_eof: false,
            up_eof: false,
            ending: false,
            end: None,
            traffic: Traffic::default(),
        }
    }

    fn note(&self, what: String) {
        self.plan.notes.lock().unwrap().push(what);
    }

    fn end_with(&mut self, reason: EndReason, last_words: String) {
        self.to_down.extend_from_slice(last_words.as_bytes());
        self.ending = true;
        self.end.get_or_insert(reason);
    }
}

impl Session for TestSession {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, _: Instant) {
        match leg {
            Leg::Down => {
                self.traffic.down_to_up += data.len() as u64;
                self.to_up.extend_from_slice(&data);
            }
            Leg::Up => {
                self.traffic.up_to_down += data.len() as u64;
                self.to_down.extend_from_slice(&data);
            }
        }
    }
    fn handle_eof(&mut self, leg: Leg, _: Instant) {
        match leg {
            Leg::Down => self.down_eof = true,
            Leg::Up => self.up_eof = true,
        }
    }
    fn handle_io_error(&mut self, leg: Leg, error: io::ErrorKind, _: Instant) {
        self.note(format!("io error {leg:?} {error:?}"));
        self.end = Some(EndReason::PeerError(leg, format!("{error:?}")));
        self.down_eof = true;
        self.up_eof = true;
        self.ending = true;
        self.to_down.clear();
    }
    fn handle_resolved(&mut self, result: Result<Vec<SocketAddr>, String>, _: Instant) {
        let thread = thread::current().name().unwrap_or("?").to_owned();
        self.note(format!("resolved on {thread}"));
        match result.map(|a| a.into_iter().find(SocketAddr::is_ipv4)) {
            Ok(Some(addr)) => self.actions.push_back(Action::Connect(addr)),
            Ok(None) => self.end_with(EndReason::Upstream("no v4".into()), "no v4\n".into()),
            Err(e) => self.end_with(EndReason::Upstream(e), "resolve failed\n".into()),
        }
    }
    fn handle_connected(&mut self, _: Instant) {
        self.connected = true;
    }
    fn handle_connect_failed(&mut self, error: io::ErrorKind, _: Instant) {
        self.end_with(
            EndReason::Upstream(format!("{error:?}")),
            format!("connect failed: {error:?}\n"),
        );
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.end_with(EndReason::Timeout("tick"), "tick\n".into());
        }
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
    fn wants_read(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => !self.ending && !self.down_eof && self.to_up.len() < self.plan.cap,
            Leg::Up => self.connected && !self.up_eof && self.to_down.len() < self.plan.cap,
        }
    }
    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        let q = match leg {
            Leg::Down => &self.to_down,
            Leg::Up if self.connected && !self.ending => &self.to_up,
            Leg::Up => return 0,
        };
        if q.is_empty() || dst.is_empty() {
            return 0;
        }
        dst[0] = IoSlice::new(q);
        1
    }
    fn advance(&mut self, leg: Leg, n: usize, _: Instant) {
        match leg {
            Leg::Down => self.to_down.advance(n),
            Leg::Up => self.to_up.advance(n),
        }
    }
    fn write_closed(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => self.ending || self.up_eof,
            Leg::Up => self.down_eof,
        }
    }
    fn is_finished(&self) -> bool {
        if self.ending {
            return self.to_down.is_empty();
        }
        match self.plan.target {
            Target::None => self.down_eof && self.to_down.is_empty(),
            _ => self.down_eof && self.up_eof && self.to_down.is_empty() && self.to_up.is_empty(),
        }
    }
    fn connection_id(&self) -> &str {
        "test"
    }
    fn end_reason(&self) -> Option<&EndReason> {
        self.end.as_ref().or(Some(&EndReason::Normal))
    }
    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

struct TestFactory {
    plan: Plan,
    /// What an over-capacity session says before it ends (`None`: close at once).
    busy: Option<&'static [u8]>,
}

impl SessionFactory for TestFactory {
    fn session(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        Box::new(TestSession::new(self.plan.clone(), now))
    }
    fn over_capacity(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Option<Box<dyn Session + Send>> {
        let words = self.busy?;
        let mut s = TestSession::new(Plan::new(Target::None), now);
        s.end_with(
            EndReason::Policy("busy".into()),
            String::from_utf8_lossy(words).into(),
        );
        Some(Box::new(s))
    }
    fn mode(&self) -> &'static str {
        "test"
    }
}

/// A server running on a smol executor on its own thread; stopped (drain 0) when dropped.
struct Running {
    server: Arc<Server>,
    done: smol::channel::Sender<()>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Running {
    fn start(factory: Arc<dyn SessionFactory>, max_connections: usize) -> Running {
        let spec = ListenerSpec::new("127.0.0.1:0".parse().unwrap(), factory);
        let server = Arc::new(
            Server::bind(vec![spec], RuntimeOptions { max_connections }).expect("server binds"),
        );
        let (done, until_done) = smol::channel::bounded::<()>(1);
        let s = server.clone();
        let thread = thread::Builder::new()
            .name("smol-executor".into())
            .spawn(move || {
                let ex = smol::Executor::new();
                smol::block_on(ex.run(async {
                    s.run(&ex).await.expect("run");
                    let _ = until_done.recv().await;
                }));
            });
        let thread = thread.expect("start the executor thread");
        Running {
            server,
            done,
            thread: Some(thread),
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.server.local_addrs()[0]).unwrap();
        s.set_read_timeout(Some(WAIT)).unwrap();
        s
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        smol::block_on(self.server.stop(Duration::ZERO));
        self.done.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start(plan: &Plan, busy: Option<&'static [u8]>, max_connections: usize) -> Running {
    let factory = Arc::new(TestFactory {
        plan: plan.clone(),
        busy,
    });
    Running::start(factory, max_connections)
}

/// Everything until EOF (a reset counts as EOF: the test only cares what arrived before it).
fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return out,
            Err(e) => panic!("read failed after {} bytes: {e}", out.len()),
        }
    }
}

fn read_exact_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).unwrap();
    v
}

/// A backend on 127.0.0.1 that echoes every connection until EOF (bounded: stops after `conns`).
fn echo_backend(conns: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming().take(conns) {
            let mut s = s.unwrap();
            thread::spawn(move || {
                s.set_read_timeout(Some(WAIT)).unwrap();
                let mut w = s.try_clone().unwrap();
                let _ = io::copy(&mut s, &mut w);
                let _ = w.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A session that takes every byte and counts them.
struct Sink(Arc<AtomicUsize>);

impl Session for Sink {
    fn handle_input(&mut self, _: Leg, data: BytesMut, _: Instant) {
        self.0.fetch_add(data.len(), Ordering::SeqCst);
    }
    fn handle_eof(&mut self, _: Leg, _: Instant) {}
    fn handle_io_error(&mut self, _: Leg, _: io::ErrorKind, _: Instant) {}
    fn handle_resolved(&mut self, _: Result<Vec<SocketAddr>, String>, _: Instant) {}
    fn handle_connected(&mut self, _: Instant) {}
    fn handle_connect_failed(&mut self, _: io::ErrorKind, _: Instant) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn poll_action(&mut self) -> Option<Action> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn wants_read(&self, leg: Leg) -> bool {
        leg == Leg::Down
    }
    fn slices<'a>(&'a self, _: Leg, _: &mut [IoSlice<'a>]) -> usize {
        0
    }
    fn advance(&mut self, _: Leg, _: usize, _: Instant) {}
    fn write_closed(&self, _: Leg) -> bool {
        false
    }
    fn is_finished(&self) -> bool {
        false
    }
    fn connection_id(&self) -> &str {
        "sink"
    }
    fn end_reason(&self) -> Option<&EndReason> {
        None
    }
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
}

#[test]
fn relays_both_ways_with_backpressure() {
    const CLIENTS: usize = 4;
    const SIZE: usize = 2 << 20;
    let mut plan = Plan::new(Target::Addr(echo_backend(CLIENTS)));
    plan.cap = 16 * 1024; // far below SIZE: both directions stall and resume many times
    let server = start(&plan, None, 100);
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut s = server.connect();
            thread::spawn(move || {
                let data: Vec<u8> = (0..SIZE).map(|j| (j * 7 + i) as u8).collect();
                let mut w = s.try_clone().unwrap();
                let expected = data.clone();
                let writer = thread::spawn(move || {
                    w.write_all(&data).unwrap();
                    w.shutdown(Shutdown::Write).unwrap();
                });
                let got = read_to_end(&mut s);
                writer.join().unwrap();
                assert!(got == expected, "client {i}: {} bytes came back", got.len());
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    eventually("every session to close", || {
        server.server.active_connections() == 0
    });
}

#[test]
fn timer_fires_from_poll_timeout() {
    let mut plan = Plan::new(Target::None);
    plan.tick_after = Some(Duration::from_millis(150));
    plan.greet = b"hello\n";
    let server = start(&plan, None, 100);
    let t = Instant::now();
    let mut c = server.connect();
    assert_eq!(read_to_end(&mut c), b"hello\ntick\n");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "{took:?}"
    );
    eventually("the session to close", || {
        server.server.active_connections() == 0
    });
}

#[test]
fn resolves_off_the_executor_and_answers_in_the_session_task() {
    let backend = echo_backend(1);
    let plan = Plan::new(Target::Resolve("localhost", backend.port()));
    let server = start(&plan, None, 100);
    let mut c = server.connect();
    c.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(&mut c, 4), b"ping");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"");
    // getaddrinfo ran on smol's blocking pool; the answer reached the session on its own task.
    assert_eq!(plan.notes(), vec!["resolved on smol-executor".to_owned()]);
}

#[test]
fn connect_failure_reaches_the_session() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let plan = Plan::new(Target::Addr(closed));
    let server = start(&plan, None, 100);
    let mut c = server.connect();
    assert_eq!(read_to_end(&mut c), b"connect failed: ConnectionRefused\n");
    eventually("the session to close", || {
        server.server.active_connections() == 0
    });
}

#[test]
fn connection_limit_counts_from_accept_until_close() {
    let mut plan = Plan::new(Target::None);
    plan.greet = b"hi\n";
    let server = start(&plan, None, 2);
    let mut a = server.connect();
    let mut b = server.connect();
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    assert_eq!(read_exact_n(&mut b, 3), b"hi\n");
    // Over the limit and no over-capacity session: accepted and closed at once.
    let mut c = server.connect();
    assert_eq!(read_to_end(&mut c), b"");
    assert_eq!(server.server.active_connections(), 2);
    // A closed session frees its place.
    a.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut a), b"");
    eventually("the count to drop", || {
        server.server.active_connections() == 1
    });
    let mut d = server.connect();
    assert_eq!(read_exact_n(&mut d, 3), b"hi\n");
    drop(server);
    assert_eq!(read_to_end(&mut b), b"");
    assert_eq!(read_to_end(&mut d), b"");

    // With an over-capacity session, the client is told before the close.
    let server = start(&plan, Some(b"busy\n"), 2);
    let (mut a, mut b) = (server.connect(), server.connect());
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    assert_eq!(read_exact_n(&mut b, 3), b"hi\n");
    let mut c = server.connect();
    assert_eq!(read_to_end(&mut c), b"busy\n");
    eventually("the busy session to close", || {
        server.server.active_connections() == 2
    });
}

/// The first session is a [`Sink`], the others greet.
struct FloodFactory {
    made: AtomicUsize,
    sunk: Arc<AtomicUsize>,
}

impl SessionFactory for FloodFactory {
    fn session(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        if self.made.fetch_add(1, Ordering::SeqCst) == 0 {
            return Box::new(Sink(self.sunk.clone()));
        }
        let mut plan = Plan::new(Target::None);
        plan.greet = b"hi\n";
        Box::new(TestSession::new(plan, now))
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
        "flood"
    }
}

#[test]
fn a_flooding_client_does_not_starve_the_others_on_one_thread() {
    let sunk = Arc::new(AtomicUsize::new(0));
    let factory = Arc::new(FloodFactory {
        made: AtomicUsize::new(0),
        sunk: sunk.clone(),
    });
    let server = Running::start(factory, 100);
    let mut flood = server.connect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let flooder = thread::spawn(move || {
        let chunk = vec![0x5a; 256 * 1024];
        while !stop2.load(Ordering::SeqCst) {
            if flood.write_all(&chunk).is_err() {
                break;
            }
        }
    });
    eventually("the flood to flow", || {
        sunk.load(Ordering::SeqCst) > 4 << 20
    });
    for _ in 0..5 {
        let t = Instant::now();
        let mut c = server.connect();
        assert_eq!(read_exact_n(&mut c, 3), b"hi\n");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    flooder.join().unwrap();
}

#[test]
fn stop_closes_the_listeners_and_waits_for_sessions_to_finish() {
    let mut plan = Plan::new(Target::None);
    plan.greet = b"hi\n";
    let server = start(&plan, None, 100);
    let addr = server.server.local_addrs()[0];
    let mut a = server.connect();
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    let s = server.server.clone();
    let stopping = thread::spawn(move || {
        let t = Instant::now();
        let left = smol::block_on(s.stop(Duration::from_secs(5)));
        (left, t.elapsed())
    });
    eventually("the listener to close", || {
        TcpStream::connect(addr).is_err()
    });
    // The open session still works, and ends when its client does.
    a.write_all(b"still here").unwrap();
    a.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut a), b"");
    let (left, took) = stopping.join().unwrap();
    assert_eq!(left, 0, "nothing had to be ended");
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(server.server.active_connections(), 0);
}

#[test]
fn stop_ends_what_is_left_at_the_deadline() {
    let mut plan = Plan::new(Target::None);
    plan.greet = b"hi\n";
    let server = start(&plan, None, 100);
    let mut a = server.connect();
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    let t = Instant::now();
    let left = smol::block_on(server.server.stop(Duration::from_millis(300)));
    let took = t.elapsed();
    assert_eq!(left, 1);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    assert_eq!(read_to_end(&mut a), b"");
    assert_eq!(server.server.active_connections(), 0);
}

#[test]
fn run_is_once_and_a_server_stopped_before_it_runs_returns_at_once() {
    let plan = Plan::new(Target::None);
    let factory = Arc::new(TestFactory { plan, busy: None });
    let spec = || ListenerSpec::new("127.0.0.1:0".parse().unwrap(), factory.clone());
    let server = Server::bind(vec![spec(), spec()], RuntimeOptions::default()).unwrap();
    assert_eq!(server.local_addrs().len(), 2);
    let ex = smol::Executor::new();
    smol::block_on(ex.run(async {
        let again = async {
            smol::future::yield_now().await;
            let second = server.run(&ex).await;
            server.stop(Duration::ZERO).await;
            second
        };
        let (first, second) = smol::future::zip(server.run(&ex), again).await;
        assert!(first.is_ok(), "{first:?}");
        assert!(second.is_err(), "a second run must fail");
    }));

    let server = Server::bind(vec![spec()], RuntimeOptions::default()).unwrap();
    let addr = server.local_addrs()[0];
    smol::block_on(async {
        assert_eq!(server.stop(Duration::from_secs(5)).await, 0);
        assert!(server.run(&ex).await.is_ok());
    });
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");

    let empty = Server::bind(Vec::new(), RuntimeOptions::default());
    assert!(empty.is_err());
    let zero = Server::bind(vec![spec()], RuntimeOptions { max_connections: 0 });
    assert!(zero.is_err());
}

// ---- deliveries between sessions, and dialling again ----

/// A session its client drives with lines: `reg ID` (register), `to ID MSG` (deliver a Text message),
/// `dial ADDR` (connect the `Up` leg, again if it is open), `up DATA` (write a line to `Up`). It tells its
/// client what happens, a line each: `registered ID`, `got text MSG`, `result RESULT`, `connected`,
/// `up eof`; bytes from `Up` are passed through. It ends when its client shuts down its writing side.
struct Courier {
    notes: Arc<Mutex<Vec<String>>>,
    input: BytesMut,
    actions: VecDeque<Action>,
    to_down: BytesMut,
    to_up: BytesMut,
    connected: bool,
    down_eof: bool,
}

impl Courier {
    fn note(&self, what: &str) {
        let thread = thread::current().name().unwrap_or("?").to_owned();
        self.notes
            .lock()
            .unwrap()
            .push(format!("{what} on {thread}"));
    }

    fn say(&mut self, line: &str) {
        self.to_down.extend_from_slice(line.as_bytes());
        self.to_down.extend_from_slice(b"\n");
    }

    fn command(&mut self, line: &str) {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("reg"), Some(id), None) => {
                self.note(&format!("reg {id}"));
                self.actions.push_back(Action::Register(id.to_owned()));
                self.say(&format!("registered {id}"));
            }
            (Some("to"), Some(id), Some(msg)) => {
                self.note(&format!("deliver to {id}"));
                self.actions.push_back(Action::Deliver {
                    to: id.to_owned(),
                    message: Delivery {
                        text: true,
                        data: Bytes::copy_from_slice(msg.as_bytes()),
                    },
                });
            }
            (Some("dial"), Some(addr), None) => {
                self.actions
                    .push_back(Action::Connect(addr.parse().unwrap()));
            }
            (Some("up"), Some(data), None) => {
                self.to_up.extend_from_slice(data.as_bytes());
                self.to_up.extend_from_slice(b"\n");
            }
            _ => self.say(&format!("bad command {line:?}")),
        }
    }
}

impl Session for Courier {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, _: Instant) {
        if leg == Leg::Up {
            self.to_down.extend_from_slice(&data);
            return;
        }
        self.input.extend_from_slice(&data);
        // Bounded: every pass takes a line off the input.
        while let Some(end) = self.input.iter().position(|&b| b == b'\n') {
            let line = self.input.split_to(end + 1);
            self.command(std::str::from_utf8(&line[..end]).unwrap());
        }
    }
    fn handle_eof(&mut self, leg: Leg, _: Instant) {
        match leg {
            Leg::Down => self.down_eof = true,
            Leg::Up => {
                self.connected = false;
                self.say("up eof");
            }
        }
    }
    fn handle_io_error(&mut self, leg: Leg, error: io::ErrorKind, _: Instant) {
        self.say(&format!("io error {leg:?} {error:?}"));
        self.down_eof = true;
    }
    fn handle_resolved(&mut self, _: Result<Vec<SocketAddr>, String>, _: Instant) {}
    fn handle_connected(&mut self, _: Instant) {
        self.connected = true;
        self.say("connected");
    }
    fn handle_connect_failed(&mut self, error: io::ErrorKind, _: Instant) {
        self.say(&format!("connect failed {error:?}"));
    }
    fn handle_timeout(&mut self, _: Instant) {}
    fn handle_delivery(&mut self, message: Delivery, _: Instant) -> DeliveryResult {
        self.note("delivered");
        let kind = if message.text { "text" } else { "binary" };
        let data = String::from_utf8_lossy(&message.data).into_owned();
        self.say(&format!("got {kind} {data}"));
        DeliveryResult::Accepted
    }
    fn handle_delivery_result(&mut self, result: DeliveryResult, _: Instant) {
        self.say(&format!("result {result:?}"));
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn wants_read(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => !self.down_eof,
            Leg::Up => self.connected,
        }
    }
    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        let q = match leg {
            Leg::Down => &self.to_down,
            Leg::Up if self.connected => &self.to_up,
            Leg::Up => return 0,
        };
        if q.is_empty() || dst.is_empty() {
            return 0;
        }
        dst[0] = IoSlice::new(q);
        1
    }
    fn advance(&mut self, leg: Leg, n: usize, _: Instant) {
        match leg {
            Leg::Down => self.to_down.advance(n),
            Leg::Up => self.to_up.advance(n),
        }
    }
    fn write_closed(&self, _: Leg) -> bool {
        false // the client sees EOF only when the session is closed (its ids forgotten)
    }
    fn is_finished(&self) -> bool {
        self.down_eof && self.to_down.is_empty()
    }
    fn connection_id(&self) -> &str {
        "courier"
    }
    fn end_reason(&self) -> Option<&EndReason> {
        Some(&EndReason::Normal)
    }
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
}

struct CourierFactory(Arc<Mutex<Vec<String>>>);

impl SessionFactory for CourierFactory {
    fn session(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        _: Instant,
    ) -> Box<dyn Session + Send> {
        Box::new(Courier {
            notes: self.0.clone(),
            input: BytesMut::new(),
            actions: VecDeque::new(),
            to_down: BytesMut::new(),
            to_up: BytesMut::new(),
            connected: false,
            down_eof: false,
        })
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
        "courier"
    }
}

/// A client of a courier session: writes commands, reads the lines it answers.
struct Client {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Client {
    fn new(s: TcpStream) -> Self {
        Client {
            w: s.try_clone().unwrap(),
            r: BufReader::new(s),
        }
    }
    fn send(&mut self, lines: &str) {
        self.w.write_all(lines.as_bytes()).unwrap();
    }
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        assert!(line.ends_with('\n'), "the session hung up after {line:?}");
        line.pop();
        line
    }
    /// Shuts down writing (the session ends) and reads what is left until the session closes.
    fn finish(mut self) -> Vec<u8> {
        self.w.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        self.r.read_to_end(&mut rest).unwrap();
        rest
    }
}

/// A backend whose first connection says "one" and shuts down its writing side, then reports (on the
/// channel) whether the runtime closed that connection; its second connection echoes.
fn redial_backend() -> (SocketAddr, mpsc::Receiver<&'static str>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut first, _) = l.accept().unwrap();
        first.set_read_timeout(Some(WAIT)).unwrap();
        first.write_all(b"one\n").unwrap();
        first.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let closed = first.read_to_end(&mut rest).is_ok() && rest.is_empty();
        let _ = tx.send(if closed {
            "first closed"
        } else {
            "first left open"
        });
        let (mut second, _) = l.accept().unwrap();
        second.set_read_timeout(Some(WAIT)).unwrap();
        let mut w = second.try_clone().unwrap();
        let _ = io::copy(&mut second, &mut w);
    });
    (addr, rx)
}

fn start_couriers() -> (Running, Arc<Mutex<Vec<String>>>) {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let running = Running::start(Arc::new(CourierFactory(notes.clone())), 100);
    (running, notes)
}

/// Session A registers "a"; session B delivers to "a" and to "nope" in one go (answered in order though
/// the unknown id is known at once); C's later claim on "a" does not replace A; once A has finished,
/// "a" is unknown.
#[test]
fn deliveries_reach_the_registered_session_and_answer_in_order() {
    let (server, notes) = start_couriers();
    let mut a = Client::new(server.connect());
    a.send("reg a\n");
    assert_eq!(a.line(), "registered a");
    let mut b = Client::new(server.connect());
    b.send("to a hello\nto nope x\nto a again\n");
    assert_eq!(a.line(), "got text hello");
    assert_eq!(a.line(), "got text again");
    assert_eq!(b.line(), "result Accepted");
    assert_eq!(b.line(), "result Unknown");
    assert_eq!(b.line(), "result Accepted");

    let mut c = Client::new(server.connect());
    c.send("reg a\n");
    assert_eq!(c.line(), "registered a");
    b.send("to a still-a\n");
    assert_eq!(b.line(), "result Accepted");
    assert_eq!(a.line(), "got text still-a");

    assert_eq!(a.finish(), b"");
    eventually("A to close", || server.server.active_connections() == 2);
    b.send("to a late\n");
    assert_eq!(b.line(), "result Unknown");
    assert_eq!(c.finish(), b"");
    assert_eq!(b.finish(), b"");
    eventually("every session to close", || {
        server.server.active_connections() == 0
    });
    let notes = notes.lock().unwrap().clone();
    assert_eq!(
        notes.iter().filter(|n| n.starts_with("delivered")).count(),
        3,
        "{notes:?}"
    );
}

#[test]
fn connect_with_an_open_up_leg_closes_it_and_dials_a_fresh_one() {
    let (backend, closed) = redial_backend();
    let (server, _) = start_couriers();
    let mut c = Client::new(server.connect());
    c.send(&format!("dial {backend}\n"));
    assert_eq!(c.line(), "connected");
    assert_eq!(c.line(), "one");
    assert_eq!(c.line(), "up eof");
    c.send(&format!("dial {backend}\n"));
    assert_eq!(closed.recv_timeout(WAIT), Ok("first closed"));
    assert_eq!(c.line(), "connected");
    c.send("up ping\n");
    assert_eq!(c.line(), "ping");
    assert_eq!(c.finish(), b"");
    eventually("the session to close", || {
        server.server.active_connections() == 0
    });
}
