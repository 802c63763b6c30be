//! What every runtime must do with any session, checked with the fake sessions of
//! `wsbridge_core::testing` (no protocol) over real sockets on 127.0.0.1: relay with backpressure, fire
//! timers, resolve off the thread that runs the session, report dial failures, count connections
//! against the limit, deliver between sessions, dial again, and serve others beside a flooding client.
//! Every scenario runs on both runtimes (`<scenario>::mio`, `<scenario>::smol`); the few that only one
//! runtime has (mio's loops, smol's drain) are named after it. Each runtime's internals are tested in
//! its own crate.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use wsbridge_core::testing::{courier_factory, flood_factory, Plan, Target, TestFactory};
use wsbridge_tests::bridge::{start_on_loops, Bridge, Runtime, SMOL_EXECUTOR_THREAD};

const WAIT: Duration = Duration::from_secs(10);
/// A connection limit no test reaches.
const UNLIMITED: usize = 100;

wsbridge_tests::both_runtimes!(
    relays_both_ways_with_backpressure,
    timer_fires_from_poll_timeout,
    resolves_off_the_session_thread_and_answers_on_it,
    connect_failure_reaches_the_session,
    connection_limit_counts_from_accept_until_close,
    deliveries_reach_the_registered_session_and_answer_in_order,
    connect_with_an_open_up_leg_closes_it_and_dials_a_fresh_one,
    a_flooding_client_does_not_starve_the_others_on_one_thread,
    drain_closes_the_listeners_and_waits_for_sessions_to_finish,
    drain_shuts_down_what_is_left_at_the_deadline,
);

fn start(rt: Runtime, plan: &Plan, busy: Option<&'static [u8]>, max_connections: usize) -> Bridge {
    start_with(rt, plan, busy, max_connections, 1)
}

fn start_with(
    rt: Runtime,
    plan: &Plan,
    busy: Option<&'static [u8]>,
    max_connections: usize,
    loops: usize,
) -> Bridge {
    let factory = Arc::new(TestFactory {
        plan: plan.clone(),
        busy,
    });
    start_on_loops(rt, factory, max_connections, loops)
}

fn connect(bridge: &Bridge) -> TcpStream {
    let s = TcpStream::connect(bridge.addr).unwrap();
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

/// Four clients each send 2 MiB through an echo backend and get it back, while every session queues
/// at most 16 KiB a direction (both directions stall and resume many times); on two loops with mio.
fn relays_both_ways_with_backpressure(rt: Runtime) {
    const CLIENTS: usize = 4;
    const SIZE: usize = 2 << 20;
    let mut plan = Plan::new(Target::Addr(echo_backend(CLIENTS)));
    plan.cap = 16 * 1024;
    let server = start_with(rt, &plan, None, UNLIMITED, 2);
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
}

fn timer_fires_from_poll_timeout(rt: Runtime) {
    let mut plan = Plan::new(Target::None);
    plan.tick_after = Some(Duration::from_millis(150));
    plan.greet = b"hello\n";
    let server = start(rt, &plan, None, UNLIMITED);
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

/// getaddrinfo runs elsewhere (mio's resolver threads, smol's blocking pool); the answer reaches the
/// session on the thread that runs it (mio's loop, smol's executor).
fn resolves_off_the_session_thread_and_answers_on_it(rt: Runtime) {
    let backend = echo_backend(1);
    let plan = Plan::new(Target::Resolve("localhost", backend.port()));
    let server = start(rt, &plan, None, UNLIMITED);
    let mut c = connect(&server);
    c.write_all(b"ping").unwrap();
    assert_eq!(read_exact_n(&mut c, 4), b"ping");
    c.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_to_end(&mut c), b"");
    let session_thread = match rt {
        Runtime::Mio => "wsbridge-loop-0",
        Runtime::Smol => SMOL_EXECUTOR_THREAD,
    };
    assert_eq!(plan.notes(), vec![format!("resolved on {session_thread}")]);
}

fn connect_failure_reaches_the_session(rt: Runtime) {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let plan = Plan::new(Target::Addr(closed));
    let server = start(rt, &plan, None, UNLIMITED);
    let mut c = connect(&server);
    assert_eq!(read_to_end(&mut c), b"connect failed: ConnectionRefused\n");
    eventually("the session to close", || server.active_connections() == 0);
}

/// On two loops with mio: the limit counts across loops.
fn connection_limit_counts_from_accept_until_close(rt: Runtime) {
    let mut plan = Plan::new(Target::None);
    plan.greet = b"hi\n";
    let server = start_with(rt, &plan, None, 2, 2);
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
    server.stop();
    assert_eq!(read_to_end(&mut b), b"going away\n");
    assert_eq!(read_to_end(&mut d), b"going away\n");
    assert_eq!(server.active_connections(), 0);
    drop(server);

    // With an over-capacity session, the client is told before the close.
    let server = start_with(rt, &plan, Some(b"busy\n"), 2, 2);
    let (mut a, mut b) = (connect(&server), connect(&server));
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    assert_eq!(read_exact_n(&mut b, 3), b"hi\n");
    let mut c = connect(&server);
    assert_eq!(read_to_end(&mut c), b"busy\n");
    eventually("the busy session to close", || {
        server.active_connections() == 2
    });
}

// ---- deliveries between sessions, and dialling again ----

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

fn start_couriers(rt: Runtime, loops: usize) -> (Bridge, Arc<Mutex<Vec<String>>>) {
    let notes = Arc::new(Mutex::new(Vec::new()));
    let factory = Arc::new(courier_factory(notes.clone()));
    (start_on_loops(rt, factory, UNLIMITED, loops), notes)
}

fn deliveries_reach_the_registered_session_and_answer_in_order(rt: Runtime) {
    deliveries_on_loops(rt, 1);
}

/// Mio only: B runs on the other loop than A, so deliveries cross loops.
#[test]
fn mio_deliveries_between_two_loops_arrive_and_answer_in_order() {
    deliveries_on_loops(Runtime::Mio, 2);
}

/// Session A registers "a"; session B (on the other loop with two mio loops) delivers to "a" and to
/// "nope" in one go (answered in order though the unknown id is known at once); C's later claim on "a"
/// does not replace A; once A has finished, "a" is unknown. Every delivery runs where A runs.
fn deliveries_on_loops(rt: Runtime, loops: usize) {
    let (server, notes) = start_couriers(rt, loops);
    let mut a = Client::new(connect(&server));
    a.send("reg a\n");
    assert_eq!(a.line(), "registered a");
    let mut b = Client::new(connect(&server));
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
    assert_eq!(
        notes.iter().filter(|n| n.starts_with("delivered")).count(),
        3,
        "{notes:?}"
    );
    let on = |what: &str| -> String {
        let n = notes.iter().find(|n| n.starts_with(what)).unwrap();
        n.rsplit(' ').next().unwrap().to_owned()
    };
    let (reg, delivered, sent) = (on("reg a on"), on("delivered on"), on("deliver to a on"));
    assert_eq!(delivered, reg, "{notes:?}");
    if loops == 2 {
        assert_ne!(sent, reg, "B must run on the other loop: {notes:?}");
    } else {
        assert_eq!(sent, reg, "{notes:?}");
    }
}

fn connect_with_an_open_up_leg_closes_it_and_dials_a_fresh_one(rt: Runtime) {
    let (backend, closed) = redial_backend();
    let (server, _) = start_couriers(rt, 1);
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

// ---- a flooding client ----

/// While one client writes as fast as it can to a session that reads everything, new clients on the
/// same thread (mio's one loop, smol's one executor thread) are greeted within a second.
fn a_flooding_client_does_not_starve_the_others_on_one_thread(rt: Runtime) {
    let sunk = Arc::new(AtomicUsize::new(0));
    let factory = Arc::new(flood_factory(sunk.clone()));
    let server = start_on_loops(rt, factory, UNLIMITED, 1);
    let mut flood = connect(&server);
    let stop = Arc::new(AtomicBool::new(false));
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
        let mut c = connect(&server);
        assert_eq!(read_exact_n(&mut c, 3), b"hi\n");
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    flooder.join().unwrap();
}

// ---- smol only: `stop`'s drain (mio's `shutdown` closes everything at once) ----

fn smol_greeter() -> Bridge {
    let mut plan = Plan::new(Target::None);
    plan.greet = b"hi\n";
    start(Runtime::Smol, &plan, None, UNLIMITED)
}

#[test]
fn smol_stop_closes_the_listeners_and_waits_for_sessions_to_finish() {
    let bridge = smol_greeter();
    let server = bridge.smol_server().expect("a smol bridge").clone();
    let addr = bridge.addr;
    let mut a = connect(&bridge);
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    let s = server.clone();
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
    assert_eq!(server.active_connections(), 0);
}

#[test]
fn smol_stop_ends_what_is_left_at_the_deadline() {
    let bridge = smol_greeter();
    let server = bridge.smol_server().expect("a smol bridge");
    let mut a = connect(&bridge);
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    let t = Instant::now();
    let left = smol::block_on(server.stop(Duration::from_millis(300)));
    let took = t.elapsed();
    assert_eq!(left, 1);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // It was told to go away (`handle_shutdown`) before it was closed.
    assert_eq!(read_to_end(&mut a), b"going away\n");
    assert_eq!(server.active_connections(), 0);
}

// ---- graceful drain, both runtimes ----

fn drain_closes_the_listeners_and_waits_for_sessions_to_finish(rt: Runtime) {
    let mut plan = Plan::new(Target::None);
    plan.greet = b"hi\n";
    let bridge = start(rt, &plan, None, UNLIMITED);
    let addr = bridge.addr;
    let mut a = connect(&bridge);
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    thread::scope(|scope| {
        let draining = scope.spawn(|| {
            let t = Instant::now();
            bridge.drain(Duration::from_secs(5));
            t.elapsed()
        });
        eventually("the listener to close", || {
            TcpStream::connect(addr).is_err()
        });
        // The open session still works, and ends when its client does (not told to go away).
        a.write_all(b"still here").unwrap();
        a.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_end(&mut a), b"");
        let took = draining.join().unwrap();
        assert!(took < Duration::from_secs(4), "{took:?}");
    });
    assert_eq!(bridge.active_connections(), 0);
}

fn drain_shuts_down_what_is_left_at_the_deadline(rt: Runtime) {
    let mut plan = Plan::new(Target::None);
    plan.greet = b"hi\n";
    let bridge = start(rt, &plan, None, UNLIMITED);
    let mut a = connect(&bridge);
    assert_eq!(read_exact_n(&mut a, 3), b"hi\n");
    let t = Instant::now();
    bridge.drain(Duration::from_millis(300));
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // `handle_shutdown` had the session say goodbye after what it had queued, then it ended.
    assert_eq!(read_to_end(&mut a), b"going away\n");
    assert_eq!(bridge.active_connections(), 0);
}
