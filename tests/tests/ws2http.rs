//! `ws2http` end to end on 127.0.0.1, as fermyon/websocket-bridge's own round trip: tungstenite
//! clients on `/connect?f=…&d=…`, and a real HTTP/1.1 backend written here (std sockets, optionally
//! rustls, request heads parsed by `wsbridge_core::http::request::Request`) that records every POST
//! it gets, answers 200 (500 on `/fail…`, after a second on `/slow…`), and pushes replies through the
//! `ws-bridge-send` callback URL. Every
//! scenario runs on both runtimes ([`wsbridge_tests::both_runtimes!`]). Every socket and channel wait
//! has a timeout, and every loop a bound, so a bug fails a test instead of hanging it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tungstenite::Message;
use wsbridge_core::http::request::Request;
use wsbridge_core::tls::{client_config, server_config, RustlsSession, TlsSession};
use wsbridge_core::ws2http::Allowlist;
use wsbridge_tests::bridge::{start_ws2http, ws2http_config, Bridge, Runtime};
use wsbridge_tests::certs::TestCert;

const T: Duration = Duration::from_secs(20);
/// How long "nothing arrives" is waited for.
const QUIET: Duration = Duration::from_millis(300);

type Ws = tungstenite::WebSocket<TcpStream>;
/// How long the backend takes to answer a `/slow…` request.
const SLOW: Duration = Duration::from_secs(1);

// ---- the backend ----

/// One request as the backend saw it.
#[derive(Debug, Clone)]
struct Got {
    method: String,
    path: String,
    content_type: Option<String>,
    send: Option<String>,
    body: Vec<u8>,
}

/// An HTTP/1.1 keep-alive backend on 127.0.0.1 that records requests (in arrival order) and answers
/// 200, 500 with a body for paths starting with `/fail`, or 200 after [`SLOW`] for `/slow…`. Each
/// connection has its own thread, so a slow answer holds up only its own connection.
struct HttpBackend {
    port: u16,
    scheme: &'static str,
    requests: Arc<AtomicUsize>,
    got: Mutex<mpsc::Receiver<Got>>,
}

impl HttpBackend {
    fn start() -> HttpBackend {
        Self::start_with(None)
    }

    /// An `https://` backend with `cert`.
    fn start_tls(cert: &TestCert) -> HttpBackend {
        let tls = server_config(vec![cert.pair()]).expect("backend TLS config");
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> HttpBackend {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let port = l.local_addr().unwrap().port();
        let requests = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let count = requests.clone();
        let scheme = if tls.is_some() { "https" } else { "http" };
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(s) = s else { continue };
                s.set_read_timeout(Some(T)).ok();
                s.set_write_timeout(Some(T)).ok();
                let (tx, count, tls) = (tx.clone(), count.clone(), tls.clone());
                thread::spawn(move || match tls {
                    None => serve(s, &tx, &count),
                    Some(tls) => {
                        let conn = ServerConnection::new(tls).expect("server connection");
                        serve(StreamOwned::new(conn, s), &tx, &count)
                    }
                });
            }
        });
        HttpBackend {
            port,
            scheme,
            requests,
            got: Mutex::new(rx),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}://127.0.0.1:{}{path}", self.scheme, self.port)
    }

    /// The allowlist regex for this backend's URLs (any path).
    fn pattern(&self) -> String {
        format!(r"{}://127\.0\.0\.1:{}/.*", self.scheme, self.port)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn next(&self) -> Got {
        self.got
            .lock()
            .unwrap()
            .recv_timeout(T)
            .expect("a request reaches the backend")
    }

    fn assert_quiet(&self) {
        if let Ok(g) = self.got.lock().unwrap().recv_timeout(QUIET) {
            panic!("unexpected request {g:?}");
        }
    }
}

/// Serves one keep-alive connection: at most 1000 requests, each head at most 64 KiB.
fn serve(mut s: impl Read + Write, tx: &mpsc::Sender<Got>, count: &AtomicUsize) {
    let mut buf = Vec::new();
    for _ in 0..1000 {
        let Some(head_end) = read_until_head(&mut s, &mut buf) else {
            return;
        };
        let req =
            Request::parse(&buf[..head_end], 64).expect("a valid request head from the bridge");
        let len: usize = req
            .headers
            .get_str("content-length")
            .map(|v| v.trim().parse().expect("a numeric Content-Length"))
            .unwrap_or(0);
        assert!(
            req.headers.get("transfer-encoding").is_none(),
            "the bridge sends Content-Length"
        );
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 16 << 10];
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        count.fetch_add(1, Ordering::SeqCst);
        let got = Got {
            method: req.method.clone(),
            path: req.path().to_owned(),
            content_type: req.headers.get_str("content-type").map(str::to_owned),
            send: req.headers.get_str("ws-bridge-send").map(str::to_owned),
            body,
        };
        let fail = got.path.starts_with("/fail");
        let slow = got.path.starts_with("/slow");
        let _ = tx.send(got);
        if slow {
            thread::sleep(SLOW);
        }
        let answer: &[u8] = if fail {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\nboom"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
        };
        if s.write_all(answer).and_then(|()| s.flush()).is_err() {
            return;
        }
    }
}

/// Reads into `buf` until it holds a whole head; its length, or `None` at EOF, error or 64 KiB.
fn read_until_head(s: &mut impl Read, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let mut chunk = [0u8; 16 << 10];
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

// ---- plain HTTP towards the bridge ----

/// A TCP connection to `addr` with timeouts.
fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the bridge");
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s
}

/// A TLS client connection to 127.0.0.1 at `addr` that trusts only `cert`.
fn tls(addr: SocketAddr, cert: &TestCert) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = ClientConnection::new(cert.client_config(), name).expect("client connection");
    StreamOwned::new(conn, tcp(addr))
}

/// One `Connection: close` request; the status and body of the answer.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    http_on(tcp(addr), addr, method, path, headers, body)
}

/// [`http`] on a given connection (plain or TLS) to `addr`.
fn http_on(
    mut s: impl Read + Write,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    s.flush().unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("the bridge answers and closes");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (status, body)
}

/// What the backend does with a `ws-bridge-send` URL: POST a message to it. The status.
fn push(send_url: &str, content_type: &str, body: &[u8]) -> u16 {
    let rest = send_url
        .strip_prefix("http://")
        .expect("an http:// callback URL");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let addr: SocketAddr = authority.parse().expect("the bridge's address");
    http(addr, "POST", path, &[("Content-Type", content_type)], body).0
}

/// [`push`] to an `https://` callback URL of a bridge serving `cert`.
fn push_tls(send_url: &str, cert: &TestCert, content_type: &str, body: &[u8]) -> u16 {
    let rest = send_url
        .strip_prefix("https://")
        .expect("an https:// callback URL");
    let (authority, path) = rest.split_at(rest.find('/').expect("a path"));
    let addr: SocketAddr = authority.parse().expect("the bridge's address");
    let s = tls(addr, cert);
    http_on(
        s,
        addr,
        "POST",
        path,
        &[("Content-Type", content_type)],
        body,
    )
    .0
}

// ---- WebSocket clients ----

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn connect_path(on_frame: &str, on_disconnect: &str) -> String {
    format!(
        "/connect?f={}&d={}",
        encode(on_frame),
        encode(on_disconnect)
    )
}

fn ws_connect(addr: SocketAddr, path: &str) -> Result<Ws, tungstenite::Error> {
    ws_connect_with(addr, path, &[])
}

fn ws_connect_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let stream = TcpStream::connect(addr).expect("connect to the bridge");
    stream.set_read_timeout(Some(T)).unwrap();
    stream.set_write_timeout(Some(T)).unwrap();
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (n, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(n.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    tungstenite::client(req, stream)
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tungstenite::HandshakeError::Failure(e) => e,
            tungstenite::HandshakeError::Interrupted(_) => panic!("blocking handshake interrupted"),
        })
}

/// The next data message (Pings skipped; at most 100 control frames).
fn next_message<S: Read + Write>(ws: &mut tungstenite::WebSocket<S>) -> Message {
    for _ in 0..100 {
        match ws.read().expect("read a message") {
            Message::Ping(_) | Message::Pong(_) => continue,
            m => return m,
        }
    }
    panic!("no data message")
}

/// Reads until the bridge's Close: its code and reason.
fn close_of(ws: &mut Ws) -> (u16, String) {
    for _ in 0..100 {
        match ws.read() {
            Ok(Message::Close(Some(f))) => return (u16::from(f.code), f.reason.to_string()),
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a Close: {e}"),
        }
    }
    panic!("no Close")
}

fn bridge_for(rt: Runtime, backend: &HttpBackend) -> Bridge {
    let mut cfg = ws2http_config();
    cfg.allowlist = Allowlist::new(&[backend.pattern()], &[]).unwrap();
    cfg.backend_timeout = Duration::from_secs(10);
    start_ws2http(rt, cfg, 100)
}

// ---- scenarios ----

/// websocket-bridge's own round trip: frames become ordered POSTs with the right content types and
/// callback header, callbacks become frames, and leaving is posted to the disconnect URL.
fn round_trip(rt: Runtime) {
    let backend = HttpBackend::start();
    let bridge = bridge_for(rt, &backend);
    let path = connect_path(&backend.url("/frame"), &backend.url("/gone?x=1"));
    let mut ws = ws_connect(bridge.addr, &path).expect("upgrade");

    ws.send(Message::text("hello")).unwrap();
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    ws.send(Message::text("grüße ✓")).unwrap();
    let big = (0..100_000u32).map(|i| i as u8).collect::<Vec<_>>();
    ws.send(Message::binary(big.clone())).unwrap();

    let prefix = format!("http://{}/send/", bridge.addr);
    let mut send_url = None;
    for (ct, body) in [
        ("text/plain;charset=UTF-8", b"hello".to_vec()),
        ("application/octet-stream", vec![0, 1, 2, 255]),
        ("text/plain;charset=UTF-8", "grüße ✓".as_bytes().to_vec()),
        ("application/octet-stream", big),
    ] {
        let g = backend.next();
        assert_eq!((g.method.as_str(), g.path.as_str()), ("POST", "/frame"));
        assert_eq!(g.content_type.as_deref(), Some(ct));
        assert_eq!(g.body, body, "in order, whole");
        let send = g.send.expect("the ws-bridge-send header");
        assert!(send.starts_with(&prefix), "{send} under {prefix}");
        assert_eq!(
            send_url.get_or_insert(send.clone()),
            &send,
            "one id per client"
        );
    }
    let send_url = send_url.unwrap();

    assert_eq!(push(&send_url, "text/plain; charset=utf-8", b"reply"), 200);
    assert_eq!(next_message(&mut ws), Message::text("reply"));
    assert_eq!(push(&send_url, "application/octet-stream", &[9, 8, 7]), 200);
    assert_eq!(next_message(&mut ws), Message::binary(vec![9u8, 8, 7]));
    assert_eq!(push(&send_url, "TEXT/PLAIN ; Charset=\"UTF-8\"", b"t"), 200);
    assert_eq!(next_message(&mut ws), Message::text("t"));
    assert_eq!(push(&send_url, "text/plain", b"no charset"), 200);
    assert_eq!(
        next_message(&mut ws),
        Message::binary(b"no charset".to_vec())
    );

    ws.close(None).unwrap();
    let g = backend.next();
    assert_eq!((g.method.as_str(), g.path.as_str()), ("POST", "/gone"));
    assert_eq!(
        g.send.as_deref(),
        Some(send_url.as_str()),
        "the disconnect carries the header"
    );
    assert!(g.body.is_empty());
    for _ in 0..100 {
        match ws.read() {
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    // Gone: its callback is unknown now (bounded wait: the session may finish just after the POST).
    let mut status = 0;
    for _ in 0..100 {
        status = push(&send_url, "text/plain; charset=utf-8", b"late");
        if status == 404 {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(status, 404);
    backend.assert_quiet();
}

/// URLs that merely contain an allowed one, or look like it, are refused before the 101, and the
/// backend never hears of them.
fn allowlist_refuses_lookalikes(rt: Runtime) {
    let backend = HttpBackend::start();
    let mut cfg = ws2http_config();
    cfg.allowlist = Allowlist::new(&[backend.pattern()], &["example.test".to_owned()]).unwrap();
    let bridge = start_ws2http(rt, cfg, 100);
    let good = backend.url("/frame");
    let p = backend.port;
    let refused_403 = [
        // Another host with the allowed URL in its path, its query, or as a look-alike prefix/suffix.
        format!("http://127.0.0.2:{p}/{good}"),
        format!("http://127.0.0.2:{p}/x?u={good}"),
        format!("http://127.0.0.10:{p}/frame"),
        format!("http://127.0.0.1.evil.test:{p}/frame"),
        format!("http://127.0.0.1:{}/frame", p ^ 1),
        format!("https://127.0.0.1:{p}/frame"),
        "https://evilexample.test/frame".to_owned(),
        "https://example.test.evil.test/frame".to_owned(),
        "http://example.test/frame".to_owned(),
    ];
    for url in &refused_403 {
        let path = connect_path(url, &good);
        match ws_connect(bridge.addr, &path) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403, "{url}"),
            other => panic!("{url}: expected 403, got {other:?}"),
        }
        // The disconnect URL is checked just the same.
        let path = connect_path(&good, url);
        match ws_connect(bridge.addr, &path) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403, "d={url}"),
            other => panic!("d={url}: expected 403, got {other:?}"),
        }
    }
    // The allowed URL as userinfo of another host is not even a URL the bridge accepts.
    for url in [
        format!("http://127.0.0.1:{p}@127.0.0.2:{p}/frame"),
        format!("http://127.0.0.2:{p}/#{good}"),
    ] {
        match ws_connect(bridge.addr, &connect_path(&url, &good)) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400, "{url}"),
            other => panic!("{url}: expected 400, got {other:?}"),
        }
    }
    assert_eq!(backend.requests(), 0, "no refused URL reached a backend");

    // The allowed URL itself still works.
    let mut ws = ws_connect(bridge.addr, &connect_path(&good, &good)).expect("allowed");
    ws.send(Message::text("x")).unwrap();
    assert_eq!(backend.next().body, b"x");
    assert_eq!(backend.requests(), 1);
}

/// A backend answering 500 closes its own client, with a reason, then gets the disconnect POST;
/// another client goes on.
fn backend_error_closes_only_its_client(rt: Runtime) {
    let backend = HttpBackend::start();
    let bridge = bridge_for(rt, &backend);
    let mut bad = ws_connect(
        bridge.addr,
        &connect_path(&backend.url("/fail"), &backend.url("/gone-bad")),
    )
    .expect("upgrade");
    let mut good = ws_connect(
        bridge.addr,
        &connect_path(&backend.url("/frame"), &backend.url("/gone-good")),
    )
    .expect("upgrade");

    bad.send(Message::text("doomed")).unwrap();
    let g = backend.next();
    assert_eq!(
        (g.path.as_str(), g.body.as_slice()),
        ("/fail", &b"doomed"[..])
    );
    let bad_send = g.send.unwrap();
    let (code, reason) = close_of(&mut bad);
    assert_eq!(code, u16::from(TCloseCode::Error), "{reason}");
    assert!(!reason.is_empty(), "the Close has a reason");
    let g = backend.next();
    assert_eq!(g.path, "/gone-bad");
    assert_eq!(g.send.as_deref(), Some(bad_send.as_str()));

    good.send(Message::text("still here")).unwrap();
    let g = backend.next();
    assert_eq!(
        (g.path.as_str(), g.body.as_slice()),
        ("/frame", &b"still here"[..])
    );
    let send = g.send.unwrap();
    assert_ne!(send, bad_send);
    assert_eq!(push(&send, "text/plain; charset=utf-8", b"pong"), 200);
    assert_eq!(next_message(&mut good), Message::text("pong"));
    backend.assert_quiet();
}

/// The URLs may come in the `ws-bridge-on-*` headers or the legacy `x-ws-proxy-on-*` ones, checked
/// the same way.
fn urls_from_headers(rt: Runtime) {
    let backend = HttpBackend::start();
    let bridge = bridge_for(rt, &backend);
    let frame = backend.url("/frame");
    for (f, d) in [
        ("ws-bridge-on-frame", "ws-bridge-on-disconnect"),
        ("x-ws-proxy-on-frame", "x-ws-proxy-on-disconnect"),
    ] {
        let gone = backend.url(&format!("/gone-{f}"));
        let mut ws =
            ws_connect_with(bridge.addr, "/connect", &[(f, &frame), (d, &gone)]).expect("upgrade");
        ws.send(Message::binary(f.as_bytes().to_vec())).unwrap();
        let g = backend.next();
        assert_eq!(
            (g.path.as_str(), g.body.as_slice()),
            ("/frame", f.as_bytes())
        );
        ws.close(None).unwrap();
        let g = backend.next();
        assert_eq!(g.path, format!("/gone-{f}"));

        let evil = format!("http://127.0.0.2:{}/{frame}", backend.port);
        match ws_connect_with(bridge.addr, "/connect", &[(f, &evil), (d, &gone)]) {
            Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403, "{f}"),
            other => panic!("{f}: expected 403, got {other:?}"),
        }
    }
    match ws_connect(bridge.addr, "/connect") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status(), 400, "no URLs"),
        other => panic!("no URLs: expected 400, got {other:?}"),
    }
    backend.assert_quiet();
}

/// The plain endpoints.
fn plain_endpoints(rt: Runtime) {
    let backend = HttpBackend::start();
    let bridge = bridge_for(rt, &backend);
    let (status, body) = http(bridge.addr, "GET", "/healthz", &[], b"");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, _) = http(
        bridge.addr,
        "POST",
        "/send/0b7a3f0e-4c5d-4e6f-8a9b-0c1d2e3f4a5b",
        &[("Content-Type", "text/plain; charset=utf-8")],
        b"nobody",
    );
    assert_eq!(status, 404);
    assert_eq!(backend.requests(), 0);
}

/// A backend that takes [`SLOW`] per answer keeps its client's order and holds up no other client:
/// each client has its own backend connection, and a busy one is never waited behind.
fn slow_backend_keeps_order_and_delays_no_one_else(rt: Runtime) {
    let backend = HttpBackend::start();
    let bridge = bridge_for(rt, &backend);
    let mut slow = ws_connect(
        bridge.addr,
        &connect_path(&backend.url("/slow"), &backend.url("/gone-slow")),
    )
    .expect("upgrade");
    let mut quick = ws_connect(
        bridge.addr,
        &connect_path(&backend.url("/frame"), &backend.url("/gone-quick")),
    )
    .expect("upgrade");
    for i in 0..3 {
        slow.send(Message::text(format!("slow {i}"))).unwrap();
    }
    let g = backend.next();
    assert_eq!(
        (g.path.as_str(), g.body.as_slice()),
        ("/slow", &b"slow 0"[..])
    );

    // The backend sits on "slow 0" for a second; the other client is served meanwhile, twice over.
    let started = Instant::now();
    for round in 0..2 {
        quick.send(Message::text(format!("quick {round}"))).unwrap();
        let g = backend.next();
        assert_eq!(
            g.path, "/frame",
            "the quick client is not queued behind the slow one"
        );
        assert_eq!(g.body, format!("quick {round}").as_bytes());
        let send = g.send.unwrap();
        assert_eq!(push(&send, "text/plain; charset=utf-8", b"ack"), 200);
        assert_eq!(next_message(&mut quick), Message::text("ack"));
    }
    assert!(
        started.elapsed() < SLOW,
        "two quick round trips took {:?}, as long as one slow answer",
        started.elapsed()
    );

    // The slow client's messages follow in order, one per answer.
    for i in 1..3 {
        let g = backend.next();
        assert_eq!(g.path, "/slow");
        assert_eq!(g.body, format!("slow {i}").as_bytes(), "in order");
    }
    slow.close(None).unwrap();
    let g = backend.next();
    assert_eq!(g.path, "/gone-slow");
    backend.assert_quiet();
}

/// `wss://` towards the client and `https://` towards the backend (trusted through an extra root,
/// as `--backend-ca` does): frames, the callback (itself `https://`) and the disconnect POST.
fn tls_on_both_legs(rt: Runtime) {
    let cert = TestCert::new();
    let backend = HttpBackend::start_tls(&cert);
    let mut cfg = ws2http_config();
    cfg.allowlist = Allowlist::new(&[backend.pattern()], &[]).unwrap();
    let server = server_config(vec![cert.pair()]).expect("server config");
    cfg.server_tls = Some(Arc::new(move || {
        Box::new(RustlsSession::server(server.clone()).expect("server session"))
            as Box<dyn TlsSession>
    }));
    let client = client_config(vec![cert.cert.clone()]).expect("client config");
    cfg.backend_tls = Some(Arc::new(move |name: &str| {
        RustlsSession::client(client.clone(), name).map(|s| Box::new(s) as Box<dyn TlsSession>)
    }));
    let bridge = start_ws2http(rt, cfg, 100);

    let path = connect_path(&backend.url("/frame"), &backend.url("/gone"));
    let req = format!("wss://127.0.0.1:{}{path}", bridge.addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tungstenite::client(req, tls(bridge.addr, &cert)).expect("wss upgrade");
    ws.send(Message::text("over tls")).unwrap();
    let payload = (0..70_000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>();
    ws.send(Message::binary(payload.clone())).unwrap();
    let g = backend.next();
    assert_eq!(
        (g.path.as_str(), g.body.as_slice()),
        ("/frame", &b"over tls"[..])
    );
    let send = g.send.unwrap();
    let prefix = format!("https://{}/send/", bridge.addr);
    assert!(send.starts_with(&prefix), "{send} under {prefix}");
    let g = backend.next();
    assert_eq!(g.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(g.body, payload);

    assert_eq!(
        push_tls(&send, &cert, "application/octet-stream", &[1, 2, 3]),
        200
    );
    assert_eq!(next_message(&mut ws), Message::binary(vec![1u8, 2, 3]));
    ws.close(None).unwrap();
    let g = backend.next();
    assert_eq!(g.path, "/gone");
    assert_eq!(g.send.as_deref(), Some(send.as_str()));
    backend.assert_quiet();
}

wsbridge_tests::both_runtimes!(
    round_trip,
    slow_backend_keeps_order_and_delays_no_one_else,
    tls_on_both_legs,
    allowlist_refuses_lookalikes,
    backend_error_closes_only_its_client,
    urls_from_headers,
    plain_endpoints,
);
