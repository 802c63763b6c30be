//! `tcp2ws` end to end on 127.0.0.1: real sockets, a rustls client, and tungstenite backends scripted per
//! test. Every scenario runs on both runtimes (`<scenario>::mio`, `<scenario>::smol`, see
//! [`both_runtimes!`]), so a failure names the runtime. Every socket has a timeout so a bug fails a test
//! instead of hanging it.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::Message;
use wsbridge_core::tcp2ws::{HalfClose, ListenerTls};
use wsbridge_tests::backend::{next, next_json, send_data, send_json, Backend, Behaviour};
use wsbridge_tests::bridge::{start_tcp2ws, tcp2ws_config, with_tls, Runtime};
use wsbridge_tests::certs::TestCert;
use wsbridge_tests::data::{random_bytes, sha1};

const T: Duration = Duration::from_secs(20);

wsbridge_tests::both_runtimes!(
    bridge_hello_headers_and_data_both_ways,
    implicit_tls_reports_tls_and_sni_in_bridge_hello,
    starttls_upgrades_and_pipelined_plaintext_never_reaches_tls,
    bulk_64_mib_each_way_with_half_close_close_mode,
    bulk_64_mib_each_way_with_half_close_eof_mode,
    pings_arrive_on_schedule_during_a_transfer,
    a_backend_that_stops_answering_pongs_is_closed_at_the_deadline,
    a_tls_client_that_never_finishes_its_handshake_is_closed_while_others_are_served,
    a_backend_that_never_answers_the_upgrade_hits_the_handshake_timeout,
    a_silent_client_on_a_plain_listener_is_closed_at_the_idle_timeout,
    over_max_connections_a_client_is_refused_at_once,
    a_backend_that_is_down_gets_the_client_closed_cleanly,
    a_backend_that_refuses_the_upgrade_gets_the_client_closed_cleanly,
    close_mode_relays_what_the_backend_sends_after_the_clients_close,
);

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the bridge");
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s
}

/// Reads until EOF (or the timeout, which fails the test).
fn read_to_end(s: &mut impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("read until EOF");
    v
}

/// Reads exactly `n` bytes.
fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    s.read_exact(&mut v).expect("read");
    v
}

/// How long until the bridge closes `s` (read returns 0 or an error), bounded by `limit`.
fn time_to_close(s: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return start.elapsed(),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("not closed within {limit:?}")
            }
            Err(_) => return start.elapsed(), // reset counts as closed
        }
    }
}

fn bridge_hello_headers_and_data_both_ways(rt: Runtime) {
    let (tx, rx) = mpsc::channel();
    let backend = Backend::start(move |mut ws, upgrade| {
        let hello = next_json(&mut ws);
        let data = next(&mut ws);
        send_data(&mut ws, b"+OK hello\r\n");
        let more = next(&mut ws);
        tx.send((upgrade, hello, data, more)).unwrap();
        let _ = ws.close(None);
        while ws.read().is_ok() {}
    });
    let bridge = start_tcp2ws(rt, tcp2ws_config(&backend.url()), 100);
    let mut c = connect(bridge.addr);
    c.write_all(b"USER alice\r\n").unwrap();
    assert_eq!(read_n(&mut c, 11), b"+OK hello\r\n");
    c.write_all(b"QUIT\r\n").unwrap();
    let (upgrade, hello, data, more) = rx.recv_timeout(T).unwrap();
    let local = c.local_addr().unwrap();
    assert_eq!(hello["type"], "bridge_hello");
    assert_eq!(hello["version"], 1);
    assert_eq!(hello["client_ip"], "127.0.0.1");
    assert_eq!(hello["client_port"], local.port());
    assert_eq!(hello["tls"], false);
    assert!(hello.get("sni").is_none());
    assert_eq!(upgrade.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(
        upgrade.header("x-wsbridge-connection-id"),
        hello["connection_id"].as_str()
    );
    assert_eq!(
        upgrade
            .header("sec-websocket-protocol")
            .map(|p| p.contains("wsbridge.v1")),
        Some(true)
    );
    assert_eq!(upgrade.path, "/bridge");
    assert_eq!(
        data,
        Message::Binary(bytes::Bytes::from_static(b"USER alice\r\n"))
    );
    assert_eq!(
        more,
        Message::Binary(bytes::Bytes::from_static(b"QUIT\r\n"))
    );
    // The backend closed: the client sees EOF.
    assert!(read_to_end(&mut c).is_empty());
}

fn implicit_tls_reports_tls_and_sni_in_bridge_hello(rt: Runtime) {
    let cert = TestCert::new();
    let (tx, rx) = mpsc::channel();
    let backend = Backend::start(move |mut ws, upgrade| {
        let hello = next_json(&mut ws);
        send_data(&mut ws, b"+OK POP3 ready\r\n");
        let data = next(&mut ws);
        tx.send((upgrade, hello, data)).unwrap();
        let _ = ws.close(None);
        while ws.read().is_ok() {}
    });
    let cfg = with_tls(tcp2ws_config(&backend.url()), ListenerTls::Implicit, &cert);
    let bridge = start_tcp2ws(rt, cfg, 100);
    let name = "mail.example.test".try_into().unwrap();
    let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, connect(bridge.addr));
    assert_eq!(read_n(&mut tls, 16), b"+OK POP3 ready\r\n");
    tls.write_all(b"CAPA\r\n").unwrap();
    let (upgrade, hello, data) = rx.recv_timeout(T).unwrap();
    assert_eq!(hello["tls"], true);
    assert_eq!(hello["sni"], "mail.example.test");
    assert_eq!(upgrade.header("x-wsbridge-sni"), Some("mail.example.test"));
    assert_eq!(upgrade.header("x-forwarded-proto"), Some("tls"));
    assert_eq!(
        data,
        Message::Binary(bytes::Bytes::from_static(b"CAPA\r\n"))
    );
}

/// An SMTP-like exchange: the client pipelines plaintext behind STARTTLS; the backend answers with
/// `start_tls` + `reply`; the client's TLS handshake must succeed (no plaintext was fed to TLS) and the
/// pipelined line must never show up as post-TLS data.
fn starttls_upgrades_and_pipelined_plaintext_never_reaches_tls(rt: Runtime) {
    let cert = TestCert::new();
    let (tx, rx) = mpsc::channel();
    let backend = Backend::start(move |mut ws, _| {
        let hello = next_json(&mut ws);
        send_data(&mut ws, b"220 mx ESMTP\r\n");
        let mut before = Vec::new();
        while !before.windows(10).any(|w| w == b"STARTTLS\r\n") {
            match next(&mut ws) {
                Message::Binary(b) => before.extend_from_slice(&b),
                other => panic!("{other:?}"),
            }
        }
        send_json(
            &mut ws,
            &json!({"type": "start_tls", "reply": "220 2.0.0 Ready to start TLS\r\n"}),
        );
        // Data frames up to tls_started are plaintext the client sent before the switch: discarded.
        let started = loop {
            match next(&mut ws) {
                Message::Binary(_) => continue,
                Message::Text(t) => {
                    break serde_json::from_str::<serde_json::Value>(t.as_str()).unwrap()
                }
                other => panic!("{other:?}"),
            }
        };
        let after = next(&mut ws);
        send_data(&mut ws, b"250 over TLS\r\n");
        tx.send((hello, started, after)).unwrap();
        let _ = next(&mut ws);
    });
    let cfg = with_tls(tcp2ws_config(&backend.url()), ListenerTls::StartTls, &cert);
    let bridge = start_tcp2ws(rt, cfg, 100);
    let mut c = connect(bridge.addr);
    assert_eq!(read_n(&mut c, 14), b"220 mx ESMTP\r\n");
    c.write_all(b"STARTTLS\r\nMAIL FROM:<pipelined@evil>\r\n")
        .unwrap();
    let reply = b"220 2.0.0 Ready to start TLS\r\n";
    assert_eq!(read_n(&mut c, reply.len()), reply);
    let name = "mail.example.test".try_into().unwrap();
    let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, c);
    tls.write_all(b"EHLO secure\r\n").unwrap();
    assert_eq!(read_n(&mut tls, 14), b"250 over TLS\r\n");
    let (hello, started, after) = rx.recv_timeout(T).unwrap();
    assert_eq!(hello["tls"], false, "tls is the state at connect time");
    assert_eq!(started["type"], "tls_started");
    assert_eq!(started["version"], "TLSv1.3");
    assert_eq!(started["sni"], "mail.example.test");
    assert!(started["cipher"].as_str().is_some_and(|c| !c.is_empty()));
    assert_eq!(
        after,
        Message::Binary(bytes::Bytes::from_static(b"EHLO secure\r\n"))
    );
}

/// 64 MiB of random bytes each way; the client half-closes right after its last write. Every byte must
/// arrive, in both `--half-close` modes.
fn bulk_each_way(rt: Runtime, mode: HalfClose) {
    const N: usize = 64 << 20;
    let from_backend = random_bytes(2, N);
    let want_down = sha1(&from_backend);
    let (tx, rx) = mpsc::channel();
    let backend = Backend::start(move |mut ws, _| {
        let _hello = next_json(&mut ws);
        for chunk in from_backend.chunks(256 << 10) {
            send_data(&mut ws, chunk);
        }
        let mut got = Vec::with_capacity(N);
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => got.extend_from_slice(&b),
                Ok(Message::Text(t)) => {
                    assert_eq!(t.as_str(), r#"{"type":"eof"}"#);
                    send_data(&mut ws, b"TAIL");
                    ws.close(None).unwrap();
                }
                Ok(Message::Close(_)) => {}
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tx.send(sha1(&got)).unwrap();
    });
    let mut cfg = tcp2ws_config(&backend.url());
    cfg.half_close = mode;
    cfg.buffer_size = 256 << 10;
    let bridge = start_tcp2ws(rt, cfg, 100);
    let c = connect(bridge.addr);
    let mut reader = c.try_clone().unwrap();
    let from_client = random_bytes(1, N);
    let want_up = sha1(&from_client);
    let writer = thread::spawn(move || {
        let mut c = c;
        c.write_all(&from_client).unwrap();
        c.shutdown(Shutdown::Write).unwrap();
    });
    let got = read_to_end(&mut reader);
    writer.join().unwrap();
    let (got_down, tail) = match mode {
        HalfClose::Close => (&got[..], &b""[..]),
        HalfClose::Eof => got.split_at(got.len().saturating_sub(4)),
    };
    assert_eq!(got_down.len(), N);
    assert_eq!(sha1(got_down), want_down, "backend → client bytes");
    if mode == HalfClose::Eof {
        assert_eq!(
            tail, b"TAIL",
            "eof mode lets the backend send after the client's FIN"
        );
    }
    assert_eq!(
        rx.recv_timeout(T).unwrap(),
        want_up,
        "client → backend bytes"
    );
}

fn bulk_64_mib_each_way_with_half_close_close_mode(rt: Runtime) {
    bulk_each_way(rt, HalfClose::Close);
}

fn bulk_64_mib_each_way_with_half_close_eof_mode(rt: Runtime) {
    bulk_each_way(rt, HalfClose::Eof);
}

fn pings_arrive_on_schedule_during_a_transfer(rt: Runtime) {
    let (tx, rx) = mpsc::channel();
    let backend = Backend::start(move |mut ws, _| {
        let _hello = next_json(&mut ws);
        let mut pings = Vec::new();
        let mut bytes = 0;
        loop {
            match ws.read() {
                Ok(Message::Ping(_)) => pings.push(Instant::now()),
                Ok(Message::Binary(b)) => bytes += b.len(),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        tx.send((pings, bytes)).unwrap();
    });
    let mut cfg = tcp2ws_config(&backend.url());
    cfg.ping_interval = Some(Duration::from_millis(300));
    cfg.ping_timeout = Duration::from_secs(5);
    let bridge = start_tcp2ws(rt, cfg, 100);
    let mut c = connect(bridge.addr);
    let start = Instant::now();
    let chunk = vec![0x5a; 64 << 10];
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(1400) {
        c.write_all(&chunk).unwrap();
        sent += chunk.len();
        thread::sleep(Duration::from_millis(20));
    }
    c.shutdown(Shutdown::Write).unwrap();
    read_to_end(&mut c);
    let (pings, bytes) = rx.recv_timeout(T).unwrap();
    assert_eq!(bytes, sent);
    assert!(
        pings.len() >= 3,
        "{} pings in 1.4 s at a 300 ms interval",
        pings.len()
    );
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(250) && gap <= Duration::from_millis(1000),
            "gap {gap:?}"
        );
    }
}

fn a_backend_that_stops_answering_pongs_is_closed_at_the_deadline(rt: Runtime) {
    let backend = Backend::start(move |mut ws, _| {
        let _hello = next_json(&mut ws);
        // Never read again: no pong is ever sent.
        thread::sleep(Duration::from_secs(10));
        drop(ws);
    });
    let mut cfg = tcp2ws_config(&backend.url());
    cfg.ping_interval = Some(Duration::from_millis(300));
    cfg.ping_timeout = Duration::from_millis(500);
    let bridge = start_tcp2ws(rt, cfg, 100);
    let mut c = connect(bridge.addr);
    let took = time_to_close(&mut c, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(700),
        "closed too early: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "closed too late: {took:?}"
    );
}

fn a_tls_client_that_never_finishes_its_handshake_is_closed_while_others_are_served(rt: Runtime) {
    let cert = TestCert::new();
    let backend = Backend::start(move |mut ws, _| {
        let _ = next_json(&mut ws);
        send_data(&mut ws, b"+OK\r\n");
        while ws.read().is_ok() {}
    });
    let mut cfg = with_tls(tcp2ws_config(&backend.url()), ListenerTls::Implicit, &cert);
    cfg.handshake_timeout = Duration::from_millis(800);
    let bridge = start_tcp2ws(rt, cfg, 100);
    let mut silent = connect(bridge.addr);
    // A well-behaved client in the meantime.
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let mut good = rustls::StreamOwned::new(conn, connect(bridge.addr));
    assert_eq!(read_n(&mut good, 5), b"+OK\r\n");
    let took = time_to_close(&mut silent, Duration::from_secs(5));
    assert!(took < Duration::from_secs(2), "{took:?}");
}

fn a_backend_that_never_answers_the_upgrade_hits_the_handshake_timeout(rt: Runtime) {
    let backend = Backend::with(Behaviour::Silent);
    let mut cfg = tcp2ws_config(&backend.url());
    cfg.handshake_timeout = Duration::from_millis(600);
    let bridge = start_tcp2ws(rt, cfg, 100);
    let mut c = connect(bridge.addr);
    let took = time_to_close(&mut c, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

fn a_silent_client_on_a_plain_listener_is_closed_at_the_idle_timeout(rt: Runtime) {
    let backend = Backend::start(move |mut ws, _| {
        let _ = next_json(&mut ws);
        while ws.read().is_ok() {}
    });
    let mut cfg = tcp2ws_config(&backend.url());
    cfg.idle_timeout = Some(Duration::from_millis(700));
    let bridge = start_tcp2ws(rt, cfg, 100);
    let mut c = connect(bridge.addr);
    let took = time_to_close(&mut c, Duration::from_secs(5));
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(2),
        "{took:?}"
    );
}

fn over_max_connections_a_client_is_refused_at_once(rt: Runtime) {
    let backend = Backend::start(move |mut ws, _| {
        let _ = next_json(&mut ws);
        send_data(&mut ws, b"hi");
        while ws.read().is_ok() {}
    });
    let bridge = start_tcp2ws(rt, tcp2ws_config(&backend.url()), 2);
    let mut a = connect(bridge.addr);
    let mut b = connect(bridge.addr);
    assert_eq!(read_n(&mut a, 2), b"hi");
    assert_eq!(read_n(&mut b, 2), b"hi");
    let mut c = connect(bridge.addr);
    let took = time_to_close(&mut c, Duration::from_secs(5));
    assert!(took < Duration::from_millis(500), "{took:?}");
    // Once one leaves, a new client is served again.
    drop(a);
    thread::sleep(Duration::from_millis(200));
    let mut d = connect(bridge.addr);
    assert_eq!(read_n(&mut d, 2), b"hi");
}

fn a_backend_that_is_down_gets_the_client_closed_cleanly(rt: Runtime) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bridge = start_tcp2ws(rt, tcp2ws_config(&format!("ws://127.0.0.1:{port}/")), 100);
    let mut c = connect(bridge.addr);
    let took = time_to_close(&mut c, Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

fn a_backend_that_refuses_the_upgrade_gets_the_client_closed_cleanly(rt: Runtime) {
    let backend = Backend::with(Behaviour::Refuse(
        "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
    ));
    let bridge = start_tcp2ws(rt, tcp2ws_config(&backend.url()), 100);
    let mut c = connect(bridge.addr);
    let took = time_to_close(&mut c, Duration::from_secs(5));
    assert!(took < Duration::from_secs(1), "{took:?}");
}

/// `--half-close close`: the client's FIN becomes a Close after its data, and the bridge keeps relaying
/// backend → client until the backend's Close. The backend here (our engine with a deferred Close reply,
/// as `ws2tcp` does) sends its whole answer after it got the Close, then replies.
fn close_mode_relays_what_the_backend_sends_after_the_clients_close(rt: Runtime) {
    use wsbridge_core::ws::{CloseCode, CloseFrame, CloseReply, Event};
    use wsbridge_tests::blocking_ws::BlockingWs;
    const N: usize = 4 << 20;
    let answer = random_bytes(6, N);
    let want = sha1(&answer);
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", l.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let cfg = wsbridge_core::WsConfig::default();
        let mut ws = BlockingWs::accept(s, &cfg, &["wsbridge.v1"]).unwrap();
        ws.set_close_reply(CloseReply::Deferred);
        let mut request = Vec::new();
        let close = loop {
            match ws.next_event().unwrap() {
                Some(Event::Binary { data, .. }) => request.extend_from_slice(&data),
                Some(Event::Close(frame)) => break frame,
                Some(_) => {}
                None => panic!("closed without a Close"),
            }
        };
        assert!(ws.engine().close_reply_owed());
        for chunk in answer.chunks(64 << 10) {
            ws.send_binary(bytes::Bytes::copy_from_slice(chunk), true)
                .unwrap();
        }
        ws.close(Some(&CloseFrame::new(CloseCode::NORMAL, "")))
            .unwrap();
        tx.send((request, close)).unwrap();
        let _ = ws.finish();
    });
    let mut cfg = tcp2ws_config(&url);
    cfg.half_close = HalfClose::Close;
    let bridge = start_tcp2ws(rt, cfg, 100);
    let mut c = connect(bridge.addr);
    c.write_all(b"GET /everything\r\n").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let got = read_to_end(&mut c);
    let (request, close) = rx.recv_timeout(T).unwrap();
    assert_eq!(request, b"GET /everything\r\n");
    assert_eq!(close.map(|f| f.code), Some(CloseCode::NORMAL));
    assert_eq!(got.len(), N, "every byte sent after the client's Close");
    assert_eq!(sha1(&got), want);
}
