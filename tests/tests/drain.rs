//! Graceful drain of the `wsbridge` binary (issue #7, DESIGN §1.4), run as a real process and signalled
//! with `kill`:
//! - SIGTERM closes the listener at once (new clients are refused) while a 64 MiB transfer already under
//!   way still delivers every byte, and the process exits 0 as soon as it finished;
//! - a session still open at `--drain-timeout` is told to go away: WebSocket peers get Close 1001, TCP
//!   peers a FIN, in both `ws2tcp` and `tcp2ws`;
//! - a second signal exits at once (128 + the signal number); SIGINT with nothing open exits 0 at once.
//!
//! Only the mio runtime has a binary; the smol runtime's `Server::stop` is covered where it is tested.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::Message;
use wsbridge_tests::backend::{next, next_json, Backend};
use wsbridge_tests::data::{random_bytes, sha1};
use wsbridge_tests::process::Wsbridge;

const BIN: &str = env!("CARGO_BIN_EXE_wsbridge_cli");
const TOTAL: usize = 64 << 20;
/// Bound of every wait in these tests.
const T: Duration = Duration::from_secs(30);

fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Connects until the listener refuses (bounded by `limit`); returns when it did.
fn wait_refused(addr: SocketAddr, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Instant::now(),
            Ok(_) | Err(_) => {
                assert!(
                    Instant::now() < deadline,
                    "{addr} still accepts connections"
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// A `tcp2ws` process in front of `backend`, with extra global flags.
fn tcp2ws(backend: &Backend, global: &[&str]) -> Wsbridge {
    let url = backend.url();
    let mut args = vec!["--log-level", "info", "--threads", "2"];
    args.extend_from_slice(global);
    args.extend_from_slice(&["tcp2ws", "--listen", "127.0.0.1:0", "--backend", &url]);
    Wsbridge::start(BIN, &args)
}

#[test]
fn sigterm_refuses_new_clients_at_once_but_a_64_mib_transfer_under_way_delivers_every_byte() {
    let data = Arc::new(random_bytes(7, TOTAL));
    let expected = sha1(&data);
    let received = Arc::new(AtomicUsize::new(0));
    let (done_tx, done_rx) = mpsc::channel();
    let seen = received.clone();
    // Reads slowly (10 ms per 256 KiB, ~2.5 s for it all), so the transfer is still running well
    // after the signal.
    // (The probes that find the listener closed may reach it too: each report names its client port.)
    let backend = Backend::start(move |mut ws, upgrade| {
        let port: u16 = upgrade.header("x-forwarded-port").unwrap().parse().unwrap();
        assert_eq!(next_json(&mut ws)["type"], "bridge_hello");
        let mut got = Vec::new();
        let mut pause_at = 0;
        let mut close = None;
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => {
                    got.extend_from_slice(&b);
                    seen.store(got.len(), Ordering::SeqCst);
                    if got.len() >= pause_at {
                        pause_at += 256 << 10;
                        thread::sleep(Duration::from_millis(10));
                    }
                }
                Ok(Message::Close(frame)) => close = frame.map(|f| f.code),
                Ok(_) => {}
                Err(_) => break, // after the Close reply went out
            }
        }
        let _ = done_tx.send((port, got.len(), sha1(&got), close));
    });
    let mut bridge = tcp2ws(&backend, &[]);

    let mut client = TcpStream::connect(bridge.listen).unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    let writer = {
        let mut client = client.try_clone().unwrap();
        let data = data.clone();
        thread::spawn(move || {
            client.write_all(&data).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
        })
    };
    wait_for("4 MiB at the backend", T, || {
        received.load(Ordering::SeqCst) >= 4 << 20
    });

    bridge.signal("TERM");
    let signalled = Instant::now();
    wait_refused(bridge.listen, Duration::from_secs(5));
    let at_refusal = received.load(Ordering::SeqCst);
    assert!(
        at_refusal < TOTAL,
        "the transfer should still be running when new clients are refused"
    );

    let port = client.local_addr().unwrap().port();
    let (len, sha, close) = loop {
        let (from, len, sha, close) = done_rx.recv_timeout(T).expect("the backend finished");
        if from == port {
            break (len, sha, close);
        }
    };
    assert_eq!(len, TOTAL, "every byte reached the backend");
    assert_eq!(sha, expected);
    assert_eq!(
        close,
        Some(CloseCode::Normal),
        "the client's FIN became Close 1000, not a drain close"
    );
    writer.join().unwrap();
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("the client gets its FIN");
    assert!(rest.is_empty());

    let status = bridge
        .wait_exit(T)
        .expect("exits once the transfer finished");
    assert_eq!(status.code(), Some(0), "log:\n{}", bridge.log().join("\n"));
    assert!(
        signalled.elapsed() < Duration::from_secs(20),
        "the drain ended with its last session, not at --drain-timeout (30 s)"
    );
    let log = bridge.log().join("\n");
    assert!(log.contains("event=draining signal=SIGTERM"), "{log}");
    assert!(log.contains("event=drained"), "{log}");
}

#[test]
fn ws2tcp_session_open_at_the_drain_timeout_gets_close_1001_and_its_target_a_fin() {
    let target = TcpListener::bind("127.0.0.1:0").unwrap();
    let target_addr = target.local_addr().unwrap().to_string();
    let (target_tx, target_rx) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = target.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut got = Vec::new();
        // Until the FIN (Ok(0)); an error or timeout fails the test below.
        let outcome = s.read_to_end(&mut got).map(|_| got);
        let _ = target_tx.send((outcome.map_err(|e| e.kind()), Instant::now()));
    });
    let mut bridge = Wsbridge::start(
        BIN,
        &[
            "--drain-timeout",
            "1",
            "ws2tcp",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target_addr,
        ],
    );
    let stream = TcpStream::connect(bridge.listen).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let (mut ws, _) =
        tungstenite::client(format!("ws://{}/", bridge.listen), stream).expect("upgrade");
    ws.send(Message::Binary(b"before the drain".to_vec().into()))
        .unwrap();

    // Wait until the relay is up (the target is dialled once the client is upgraded).
    thread::sleep(Duration::from_millis(200));
    bridge.signal("TERM");
    let signalled = Instant::now();
    wait_refused(bridge.listen, Duration::from_secs(5));

    let close = loop {
        match ws.read().expect("the bridge closes cleanly") {
            Message::Close(frame) => break frame,
            _ => continue,
        }
    };
    let after = signalled.elapsed();
    let close = close.expect("a Close with a status");
    assert_eq!(close.code, CloseCode::Away, "{close:?}");
    assert_eq!(close.reason.as_str(), "server going away");
    assert!(
        after >= Duration::from_millis(900),
        "closed after {after:?}, before --drain-timeout 1"
    );
    // Our Close reply goes out on the next read, which then reports the end.
    while ws.read().is_ok() {}

    let (got, fin_at) = target_rx.recv_timeout(T).expect("the target is told");
    assert_eq!(
        got.expect("the target sees a FIN, not a reset"),
        b"before the drain"
    );
    assert!(fin_at >= signalled + Duration::from_millis(900));
    let status = bridge.wait_exit(T).expect("exits after the drain");
    assert_eq!(status.code(), Some(0), "log:\n{}", bridge.log().join("\n"));
}

#[test]
fn tcp2ws_session_open_at_the_drain_timeout_sends_close_1001_to_the_backend_and_a_fin_to_the_client(
) {
    let (close_tx, close_rx) = mpsc::channel();
    let backend = Backend::start(move |mut ws, _| {
        assert_eq!(next_json(&mut ws)["type"], "bridge_hello");
        let first = next(&mut ws);
        // The backend's last words before it answers the Close still reach the client.
        let close = loop {
            match ws.read() {
                Ok(Message::Close(frame)) => break frame.map(|f| (f.code, f.reason.to_string())),
                Ok(_) => continue,
                Err(e) => panic!("backend read: {e}"),
            }
        };
        while ws.read().is_ok() {}
        let _ = close_tx.send((first, close));
    });
    let mut bridge = tcp2ws(&backend, &["--drain-timeout", "1"]);
    let mut client = TcpStream::connect(bridge.listen).unwrap();
    client.set_read_timeout(Some(T)).unwrap();
    client.write_all(b"hello backend").unwrap();
    thread::sleep(Duration::from_millis(200));

    bridge.signal("TERM");
    let signalled = Instant::now();
    let mut rest = Vec::new();
    client
        .read_to_end(&mut rest)
        .expect("the client sees a FIN, not a reset");
    assert!(signalled.elapsed() >= Duration::from_millis(900));

    let (first, close) = close_rx.recv_timeout(T).expect("the backend saw the end");
    assert_eq!(first, Message::Binary(b"hello backend".to_vec().into()));
    assert_eq!(
        close,
        Some((CloseCode::Away, "server going away".to_owned()))
    );
    let status = bridge.wait_exit(T).expect("exits after the drain");
    assert_eq!(status.code(), Some(0), "log:\n{}", bridge.log().join("\n"));
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let (held_tx, held_rx) = mpsc::channel::<()>();
    let held = Arc::new(std::sync::Mutex::new(held_rx));
    // Holds its session open (never answers) until the test ends.
    let backend = Backend::start(move |mut ws, _| {
        assert_eq!(next_json(&mut ws)["type"], "bridge_hello");
        let _ = held.lock().unwrap().recv_timeout(T);
    });
    let mut bridge = tcp2ws(&backend, &["--drain-timeout", "30"]);
    let _client = TcpStream::connect(bridge.listen).unwrap();
    thread::sleep(Duration::from_millis(200));

    bridge.signal("TERM");
    wait_refused(bridge.listen, Duration::from_secs(5));
    assert!(
        bridge.wait_exit(Duration::from_millis(500)).is_none(),
        "the first signal drains: it waits for the open session"
    );
    bridge.signal("TERM");
    let second = Instant::now();
    let status = bridge
        .wait_exit(Duration::from_secs(5))
        .expect("the second signal exits at once");
    assert!(second.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), Some(128 + 15));
    drop(held_tx);
}

#[test]
fn sigint_with_nothing_open_exits_0_at_once() {
    let backend = Backend::start(|_, _| {});
    let mut bridge = tcp2ws(&backend, &[]);
    bridge.signal("INT");
    let status = bridge
        .wait_exit(Duration::from_secs(5))
        .expect("nothing to drain: exits at once");
    assert_eq!(status.code(), Some(0));
    assert!(bridge
        .log()
        .iter()
        .any(|l| l.contains("event=draining signal=SIGINT")));
}
