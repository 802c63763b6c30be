//! The driver against a trivial session defined here (no protocol): it relays bytes between the legs,
//! greets, ticks, dials, resolves, and says what happened, over real sockets on 127.0.0.1; and a
//! line-driven session that registers, delivers to others and dials again.

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

use super::event_loop::{Accepted, EventLoop, ListenerInfo};
use super::{ListenerSpec, RuntimeOptions, Server};

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

fn start(plan: &Plan, busy: Option<&'static [u8]>, opts: RuntimeOptions) -> Server {
    let factory = Arc::new(TestFactory {
        plan: plan.clone(),
        busy,
    });
    let spec = ListenerSpec {
        bind: "127.0.0.1:0".parse().unwrap(),
        factory,
    };
    Server::start(vec![spec], opts).expect("server starts")
}

fn opts(threads: usize) -> RuntimeOptions {
    RuntimeOptions {
        threads,
        ..RuntimeOptions::default()
    }
}

fn connect(server: &Server) -> TcpStream {
    let s = TcpStream::connect(server.local_addrs()[0]).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
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

#[test]
fn relays_both_ways_with_backpressure_on_two_loops() {
    const CLIENTS: usize = 4;
    const SIZE: usize = 2 << 20;
    let plan = Plan::new(Target::Addr(echo_backend(CLIENTS)));
    let server = start(&plan, None, opts(2));
    let workers: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let mut s = connect(&server);
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
        server.active_connections() == 0
    });
    server.shutdown();
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
fn read_budget_bounds_a_turn_and_the_revisit_list_finishes_the_job() {
    const BUDGET: usize = 8 * 1024;
    const TOTAL: usize = 6 * BUDGET;
    let plan = Plan::new(Target::None);
    let infos: Arc<[ListenerInfo]> = vec![ListenerInfo {
        factory: Arc::new(TestFactory { plan, busy: None }),
        addr: "127.0.0.1:0".parse().unwrap(),
    }]
    .into();
    let (jobs, _unused) = mpsc::channel();
    let (mut lp, _handle) = EventLoop::new(
        0,
        Arc::default(),
        infos,
        Arc::new(AtomicUsize::new(1)),
        jobs,
    )
    .unwrap();
    lp.read_budget = BUDGET;

    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (accepted, peer) = l.accept().unwrap();
    // All of it sits in the kernel before the loop sees the socket: one edge, no more.
    client.write_all(&[7u8; TOTAL]).unwrap();
    accepted.set_nonblocking(true).unwrap();
    let got = Arc::new(AtomicUsize::new(0));
    lp.adopt(Accepted {
        stream: mio::net::TcpStream::from_std(accepted),
        peer,
        listener: 0,
        conn: 1,
        accepted_at: Instant::now(),
        session: Some(Box::new(Sink(got.clone()))),
    })
    .expect("adopted");

    let mut per_turn = Vec::new();
    for _ in 0..TOTAL / BUDGET {
        let before = got.load(Ordering::SeqCst);
        let t = Instant::now();
        lp.turn(Some(WAIT)).unwrap();
        per_turn.push(got.load(Ordering::SeqCst) - before);
        assert!(
            t.elapsed() < WAIT / 2,
            "a turn waited although work was due"
        );
        assert!(lp.revisit_pending(), "budget hit but nothing to revisit");
    }
    assert_eq!(per_turn, vec![BUDGET; TOTAL / BUDGET]);
    // The revisit finds the socket empty: nothing due any more.
    lp.turn(Some(Duration::from_millis(50))).unwrap();
    assert!(!lp.revisit_pending());
    assert_eq!(got.load(Ordering::SeqCst), TOTAL);
    assert_eq!(lp.len(), 1);
}

#[test]
fn timer_fires_from_poll_timeout() {
    let mut plan = Plan::new(Target::None);
    plan.tick_after = Some(Duration::from_millis(150));
    plan.greet = b"hello\n";
    let server = start(&plan, None, opts(1));
    let t = Instant::now();
    let mut c = connect(&server);
    assert_eq!(read_to_end(&mut c), b"hello\ntick\n");
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_secs(3),
        "{took:?}"
    );
    eventually("the session to close", || server.active_connections() == 0);
}

#[test]
fn resolves_on_the_resolver_threads_and_answers_on_the_loop() {
    let backend = echo_backend(1);
    let plan = Plan::new(Target::Resolve("localhost", backend.port()));
    let server = start(&plan, None, opts(1));
    let mut c = connect(&server);
    c.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(&mut c, 4), b"ping");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"");
    assert_eq!(plan.notes(), vec!["resolved on wsbridge-loop-0".to_owned()]);
}

#[test]
fn connect_failure_reaches_the_session() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let plan = Plan::new(Target::Addr(closed));
    let server = start(&plan, None, opts(1));
    let mut c = connect(&server);
    assert_eq!(read_to_end(&mut c), b"connect failed: ConnectionRefused\n");
    eventually("the session to close", || server.active_connections() == 0);
}

#[test]
fn connection_limit_counts_from_accept_until_close() {
    let mut plan = Plan::new(Target::None);
    plan.greet = b"hi\n";
    let limited = RuntimeOptions {
        threads: 2,
        max_connections: 2,
        reuse_port: false,
    };
    let server = start(&plan, None, limited.clone());
    let mut a = connect(&server);
    let mut b = connect(&server);
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    assert_eq!(read_exact_n(&mut b, 3), b"hi\n");
    // Over the limit and no over-capacity session: accepted and closed at once.
    let mut c = connect(&server);
    assert_eq!(read_to_end(&mut c), b"");
    assert_eq!(server.active_connections(), 2);
    // A closed session frees its place.
    a.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut a), b"");
    eventually("the count to drop", || server.active_connections() == 1);
    let mut d = connect(&server);
    assert_eq!(read_exact_n(&mut d, 3), b"hi\n");
    server.shutdown();
    assert_eq!(read_to_end(&mut b), b"");
    assert_eq!(read_to_end(&mut d), b"");
    assert_eq!(server.active_connections(), 0);

    // With an over-capacity session, the client is told before the close.
    let server = start(&plan, Some(b"busy\n"), limited);
    let (mut a, mut b) = (connect(&server), connect(&server));
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    assert_eq!(read_exact_n(&mut b, 3), b"hi\n");
    let mut c = connect(&server);
    assert_eq!(read_to_end(&mut c), b"busy\n");
    eventually("the busy session to close", || {
        server.active_connections() == 2
    });
}

#[test]
fn a_resolver_answer_for_an_earlier_session_in_the_slot_is_dropped() {
    let plan = Plan::new(Target::Resolve("resolver.test", 9));
    let infos: Arc<[ListenerInfo]> = vec![ListenerInfo {
        factory: Arc::new(TestFactory {
            plan: plan.clone(),
            busy: None,
        }),
        addr: "127.0.0.1:0".parse().unwrap(),
    }]
    .into();
    let (jobs, job_rx) = mpsc::channel();
    let (mut lp, handle) = EventLoop::new(
        0,
        Arc::default(),
        infos,
        Arc::new(AtomicUsize::new(1)),
        jobs,
    )
    .unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let _client = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (accepted, peer) = l.accept().unwrap();
    accepted.set_nonblocking(true).unwrap();
    lp.adopt(Accepted {
        stream: mio::net::TcpStream::from_std(accepted),
        peer,
        listener: 0,
        conn: 1,
        accepted_at: Instant::now(),
        session: None,
    })
    .expect("adopted");
    let job = job_rx.try_recv().expect("the resolve went to the pool");
    assert_eq!((job.host.as_str(), job.port), ("resolver.test", 9));

    let mut stale = job.key;
    stale.gen += 1;
    for key in [stale, job.key] {
        let msg = super::event_loop::Msg::Resolved {
            key,
            result: Err("nope".into()),
        };
        assert!(handle.send(msg).is_ok());
        lp.turn(Some(Duration::from_millis(50))).unwrap();
    }
    // Only the answer with the right generation reached the session.
    assert_eq!(plan.notes().len(), 1);
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

fn start_couriers(threads: usize) -> (Server, Arc<Mutex<Vec<String>>>) {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let spec = ListenerSpec {
        bind: "127.0.0.1:0".parse().unwrap(),
        factory: Arc::new(CourierFactory(notes.clone())),
    };
    (
        Server::start(vec![spec], opts(threads)).expect("server starts"),
        notes,
    )
}

/// Session A registers "a"; session B (on the other loop with two) delivers to "a" and to "nope" in one
/// go; C's later claim on "a" does not replace A; once A has finished, "a" is unknown.
fn deliveries_reach_the_registered_session(threads: usize) {
    let (server, notes) = start_couriers(threads);
    let mut a = Client::new(connect(&server));
    a.send("reg a\n");
    assert_eq!(a.line(), "registered a");
    let mut b = Client::new(connect(&server));
    // The unknown id is answered at once, the other after a round trip: the order still holds.
    b.send("to a hello\nto nope x\nto a again\n");
    assert_eq!(a.line(), "got text hello");
    assert_eq!(a.line(), "got text again");
    assert_eq!(b.line(), "result Accepted");
    assert_eq!(b.line(), "result Unknown");
    assert_eq!(b.line(), "result Accepted");

    let mut c = Client::new(connect(&server));
    c.send("reg a\n");
    assert_eq!(c.line(), "registered a");
    b.send("to a still-a\n");
    assert_eq!(b.line(), "result Accepted");
    assert_eq!(a.line(), "got text still-a");

    assert_eq!(a.finish(), b"");
    eventually("A to close", || server.active_connections() == 2);
    b.send("to a late\n");
    assert_eq!(b.line(), "result Unknown");
    assert_eq!(c.finish(), b"");
    assert_eq!(b.finish(), b"");
    eventually("every session to close", || {
        server.active_connections() == 0
    });

    let notes = notes.lock().unwrap().clone();
    let on = |what: &str| -> String {
        let n = notes.iter().find(|n| n.starts_with(what)).unwrap();
        n.rsplit(' ').next().unwrap().to_owned()
    };
    let (reg, delivered, sent) = (on("reg a on"), on("delivered on"), on("deliver to a on"));
    assert_eq!(delivered, reg, "{notes:?}");
    if threads == 2 {
        assert_ne!(sent, reg, "B must run on the other loop: {notes:?}");
    } else {
        assert_eq!(sent, reg, "{notes:?}");
    }
    server.shutdown();
}

#[test]
fn deliveries_between_loops_arrive_and_answer_in_order() {
    deliveries_reach_the_registered_session(2);
}

#[test]
fn deliveries_within_one_loop_arrive_and_answer_in_order() {
    deliveries_reach_the_registered_session(1);
}

#[test]
fn connect_with_an_open_up_leg_closes_it_and_dials_a_fresh_one() {
    let (backend, closed) = redial_backend();
    let (server, _) = start_couriers(1);
    let mut c = Client::new(connect(&server));
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
    eventually("the session to close", || server.active_connections() == 0);
}
