//! Limits that hold under abuse (issue #7), against the real `wsbridge` binary on loopback:
//! `--max-connections-per-ip` (WebSocket listeners answer Close 1013, TCP listeners close at once, a
//! client from another address is still served, closing a connection frees its slot),
//! `--accept-rate` (a burst of connects: about the bucket's worth served, the rest refused, served
//! again a second later), and running out of file descriptors (the acceptor backs off instead of
//! spinning, logs rarely, and serves again once descriptors are free).
//!
//! Every wait is bounded. Other 127/8 source addresses are used as distinct clients (Linux loopback
//! accepts any of them as a source).

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};
use wsbridge_tests::backend::{next_json, send_data, Backend};
use wsbridge_tests::hostile::Server;
use wsbridge_tests::process::Wsbridge;

const BIN: &str = env!("CARGO_BIN_EXE_wsbridge_cli");
const T: Duration = Duration::from_secs(10);
const ME: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// A TCP connection to `to` from `from` (port chosen by the OS), with read/write timeouts.
fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
    sock.bind(&SocketAddrV4::new(from, 0).into()).unwrap();
    sock.connect_timeout(&to.into(), T).expect("connect");
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s
}

/// What the bridge did with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Bytes went through and came back.
    Served,
    /// WebSocket: closed with this code. TCP: closed (EOF or reset), code 0.
    Refused(u16),
}

/// A WebSocket client of a ws2tcp listener relaying to an echo target, from `from`.
fn ws_from(from: Ipv4Addr, to: SocketAddr) -> WebSocket<TcpStream> {
    let (ws, _) = tungstenite::client(format!("ws://{to}/"), tcp_from(from, to)).expect("upgrade");
    ws
}

/// Sends a message and reads what comes back: its echo, or a Close.
fn ws_outcome(ws: &mut WebSocket<TcpStream>) -> Outcome {
    let _ = ws.send(Message::Binary(b"ping".to_vec().into()));
    loop {
        match ws.read() {
            Ok(Message::Binary(b)) => {
                assert_eq!(&b[..], b"ping");
                return Outcome::Served;
            }
            Ok(Message::Close(frame)) => {
                return Outcome::Refused(frame.map_or(1005, |f| u16::from(f.code)));
            }
            Ok(_) => continue,
            Err(e) => panic!("the bridge neither echoed nor closed: {e}"),
        }
    }
}

/// Writes to a tcp2ws client and reads: its echo, or EOF / a reset.
fn tcp_outcome(s: &mut TcpStream) -> Outcome {
    let _ = s.write_all(b"ping");
    let mut buf = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match s.read(&mut buf[got..]) {
            Ok(0) => return Outcome::Refused(0),
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {
                return Outcome::Refused(0)
            }
            Err(e) => panic!("the bridge neither echoed nor closed: {e}"),
        }
    }
    assert_eq!(&buf, b"ping");
    Outcome::Served
}

/// A WebSocket backend that echoes data after the hello, counting the connections it got.
fn echo_backend() -> (Backend, Arc<AtomicUsize>) {
    let upgrades = Arc::new(AtomicUsize::new(0));
    let count = upgrades.clone();
    let backend = Backend::start(move |mut ws, _| {
        count.fetch_add(1, Ordering::SeqCst);
        assert_eq!(next_json(&mut ws)["type"], "bridge_hello");
        while let Ok(m) = ws.read() {
            if let Message::Binary(b) = m {
                send_data(&mut ws, &b);
            }
        }
    });
    (backend, upgrades)
}

/// Retries `f` every 50 ms for at most `T` until it returns true.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + T;
    while !f() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ws2tcp_per_ip_limit_sends_1013_to_the_third_and_serves_other_addresses() {
    let target = Server::echo();
    let target_addr = target.addr.to_string();
    let bridge = Wsbridge::start(
        BIN,
        &[
            "ws2tcp",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target_addr,
            "--max-connections-per-ip",
            "2",
        ],
    );
    let mut a = ws_from(ME, bridge.listen);
    let mut b = ws_from(ME, bridge.listen);
    assert_eq!(ws_outcome(&mut a), Outcome::Served);
    assert_eq!(ws_outcome(&mut b), Outcome::Served);
    let mut c = ws_from(ME, bridge.listen);
    assert_eq!(
        ws_outcome(&mut c),
        Outcome::Refused(u16::from(CloseCode::Again))
    );
    let mut d = ws_from(OTHER, bridge.listen);
    assert_eq!(ws_outcome(&mut d), Outcome::Served);

    // Closing one frees its slot (the close reaches the bridge asynchronously).
    a.close(None).unwrap();
    while a.read().is_ok() {}
    eventually("a slot is free again", || {
        let mut e = ws_from(ME, bridge.listen);
        ws_outcome(&mut e) == Outcome::Served
    });
    assert_eq!(ws_outcome(&mut b), Outcome::Served);
}

#[test]
fn tcp2ws_per_ip_limit_closes_the_third_at_once_without_dialling() {
    let (backend, upgrades) = echo_backend();
    let url = backend.url();
    // The limit from its environment variable this time.
    let mut command = Command::new(BIN);
    command.env("WSBRIDGE_MAX_CONNECTIONS_PER_IP", "2");
    let bridge = Wsbridge::start_with(
        command,
        &["tcp2ws", "--listen", "127.0.0.1:0", "--backend", &url],
    );
    let mut a = tcp_from(ME, bridge.listen);
    let mut b = tcp_from(ME, bridge.listen);
    assert_eq!(tcp_outcome(&mut a), Outcome::Served);
    assert_eq!(tcp_outcome(&mut b), Outcome::Served);
    let mut c = tcp_from(ME, bridge.listen);
    let started = Instant::now();
    assert_eq!(tcp_outcome(&mut c), Outcome::Refused(0));
    assert!(started.elapsed() < Duration::from_secs(2), "closed at once");
    assert_eq!(upgrades.load(Ordering::SeqCst), 2, "no backend connection");
    let mut d = tcp_from(OTHER, bridge.listen);
    assert_eq!(tcp_outcome(&mut d), Outcome::Served);

    a.shutdown(Shutdown::Both).unwrap();
    drop(a);
    eventually("a slot is free again", || {
        let mut e = tcp_from(ME, bridge.listen);
        tcp_outcome(&mut e) == Outcome::Served
    });
    assert_eq!(tcp_outcome(&mut b), Outcome::Served);
}

#[test]
fn accept_rate_serves_the_burst_refuses_the_rest_and_refills() {
    let (backend, upgrades) = echo_backend();
    let url = backend.url();
    let bridge = Wsbridge::start(
        BIN,
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "tcp2ws",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &url,
            "--accept-rate",
            "5",
        ],
    );
    let mut burst: Vec<TcpStream> = (0..20).map(|_| tcp_from(ME, bridge.listen)).collect();
    let outcomes: Vec<Outcome> = burst.iter_mut().map(tcp_outcome).collect();
    let served = outcomes.iter().filter(|o| **o == Outcome::Served).count();
    // The bucket's 5, plus what it refilled (5/s) while the 20 were being connected.
    assert!((5..=8).contains(&served), "{served} served: {outcomes:?}");
    assert_eq!(upgrades.load(Ordering::SeqCst), served);
    drop(burst);

    thread::sleep(Duration::from_millis(1100));
    let mut again: Vec<TcpStream> = (0..5).map(|_| tcp_from(ME, bridge.listen)).collect();
    for s in &mut again {
        assert_eq!(tcp_outcome(s), Outcome::Served, "the bucket refilled");
    }

    // Counted as refused over the rate, and in the existing over-capacity total.
    let metrics = bridge.metrics.unwrap();
    let mut m = TcpStream::connect(metrics).unwrap();
    m.set_read_timeout(Some(T)).unwrap();
    write!(m, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    m.read_to_string(&mut body).unwrap();
    let sample = |prefix: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{body}"))
            .rsplit_once(' ')
            .unwrap()
            .1
            .parse()
            .unwrap()
    };
    let refused = (20 - served) as f64;
    assert_eq!(sample("wsbridge_over_capacity_total{"), refused);
    let rate = body
        .lines()
        .find(|l| l.starts_with("wsbridge_refused_total{") && l.contains("why=\"rate\""))
        .expect("wsbridge_refused_total{why=\"rate\"}");
    assert!(rate.ends_with(&format!(" {refused}")), "{rate}");
}

/// utime + stime of `pid`, in clock ticks (fields 14 and 15 of /proc/PID/stat).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the process is alive");
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after_name.split(' ').collect();
    // `after_name` starts at field 3 (state).
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

#[test]
fn out_of_descriptors_the_acceptor_backs_off_without_spinning_and_recovers() {
    let target = Server::echo();
    let target_addr = target.addr.to_string();
    // `$0` is the binary, `$@` the flags `start_with` appends.
    let mut sh = Command::new("sh");
    sh.args(["-c", "ulimit -n 64 && exec \"$0\" \"$@\"", BIN]);
    let bridge = Wsbridge::start_with(
        sh,
        &[
            "--threads",
            "1",
            "ws2tcp",
            "--listen",
            "127.0.0.1:0",
            "--target",
            &target_addr,
            "--timeout",
            "60",
        ],
    );
    // Clients that never send their upgrade: each holds a descriptor of the bridge until the handshake
    // timeout; past about 50 the rest wait in the listen backlog while `accept` fails with EMFILE.
    let crowd: Vec<TcpStream> = (0..120).map(|_| tcp_from(ME, bridge.listen)).collect();
    let failed = bridge.wait_log("event=accept_failed", T);
    assert!(
        failed.is_some_and(|l| l.contains("Too many open files")),
        "log:\n{}",
        bridge.log().join("\n")
    );
    let pid = bridge.pid();
    let before = cpu_ticks(pid);
    thread::sleep(Duration::from_secs(2));
    let spent = cpu_ticks(pid) - before;
    // Clock ticks are 1/100 s on Linux: less than 0.5 s of CPU over 2 s of saturation.
    assert!(spent < 50, "{spent} ticks of CPU while out of descriptors");
    let warnings = bridge
        .log()
        .iter()
        .filter(|l| l.contains("event=accept_failed"))
        .count();
    eprintln!(
        "out of descriptors for 2 s: {spent} ticks of CPU, {warnings} accept_failed warning(s)"
    );
    assert!(warnings <= 3, "{warnings} accept_failed warnings");

    drop(crowd);
    // The crowd's queued connections are accepted and found closed; then a new client is served.
    eventually("a new client is served", || {
        let Ok((mut ws, _)) = tungstenite::client(
            format!("ws://{}/", bridge.listen),
            tcp_from(ME, bridge.listen),
        ) else {
            return false;
        };
        ws_outcome(&mut ws) == Outcome::Served
    });
}
