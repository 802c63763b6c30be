//! The PROXY protocol end to end, on both runtimes: listeners that accept it (`--accept-proxy-protocol`,
//! the `ProxyProtocol` factory wrapper) and `ws2tcp --send-proxy-protocol`, alone and through the
//! `tcp2ws → ws2tcp` tunnel. The headers are written by the test (and parsed back by the core's
//! parser, whose own tests check it against the specification's bytes).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;
use wsbridge_core::proxy::{
    encode_v1, encode_v2, parse, Addresses, ProxyAccept, ProxyHeader, ProxyProtocol, Version,
};
use wsbridge_core::session::SessionFactory;
use wsbridge_core::tcp2ws::{Tcp2WsConfig, Tcp2WsFactory};
use wsbridge_core::ws2tcp::{StaticTarget, Ws2TcpConfig, Ws2TcpFactory};
use wsbridge_tests::backend::{self, Backend};
use wsbridge_tests::bridge::{self, tcp2ws_config, ws2tcp_config, Bridge, Runtime};

/// Every wait of these tests is bounded by this.
const T: Duration = Duration::from_secs(10);

wsbridge_tests::both_runtimes!(
    tcp2ws_bridge_hello_names_the_client_of_a_v1_and_a_v2_header,
    missing_or_garbled_headers_are_closed_without_a_backend_connection,
    a_header_slower_than_the_deadline_is_closed,
    ws2tcp_writes_a_v2_header_then_the_relayed_bytes,
    the_tunnel_names_the_original_tcp_client_to_the_target,
    a_ws2tcp_listener_accepts_a_header_and_passes_its_client_on,
    the_tls_protocol_gets_the_header_in_plain_before_the_client_hello,
    haproxy_send_proxy_and_send_proxy_v2_reach_bridge_hello,
    over_capacity_a_websocket_client_behind_a_proxy_still_gets_close_1013,
);

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn accept(header_timeout: Duration) -> ProxyAccept {
    ProxyAccept {
        header_timeout,
        ..ProxyAccept::default()
    }
}

fn start_tcp2ws(rt: Runtime, cfg: Tcp2WsConfig, proxy: Option<ProxyAccept>) -> Bridge {
    cfg.validate().expect("valid config");
    let factory: Arc<dyn SessionFactory> = Arc::new(Tcp2WsFactory(Arc::new(cfg)));
    bridge::start(rt, wrap(factory, proxy), 100)
}

fn start_ws2tcp(rt: Runtime, cfg: Ws2TcpConfig, proxy: Option<ProxyAccept>) -> Bridge {
    start_ws2tcp_limited(rt, cfg, proxy, 100)
}

fn start_ws2tcp_limited(
    rt: Runtime,
    cfg: Ws2TcpConfig,
    proxy: Option<ProxyAccept>,
    max_connections: usize,
) -> Bridge {
    cfg.validate().expect("valid config");
    let factory: Arc<dyn SessionFactory> = Arc::new(Ws2TcpFactory(Arc::new(cfg)));
    bridge::start(rt, wrap(factory, proxy), max_connections)
}

/// What the CLI does with `--accept-proxy-protocol`.
fn wrap(factory: Arc<dyn SessionFactory>, proxy: Option<ProxyAccept>) -> Arc<dyn SessionFactory> {
    match proxy {
        Some(cfg) => Arc::new(ProxyProtocol::new(factory, cfg)),
        None => factory,
    }
}

/// A backend that reports each connection's `bridge_hello` and first data, then echoes until the end.
fn hello_backend() -> (Backend, mpsc::Receiver<(Value, Vec<u8>)>) {
    let (tx, rx) = mpsc::channel();
    let backend = Backend::start(move |mut ws, _| {
        let hello = backend::next_json(&mut ws);
        let data = match backend::next(&mut ws) {
            Message::Binary(b) => b.to_vec(),
            other => panic!("expected data, got {other:?}"),
        };
        backend::send_data(&mut ws, &data);
        let _ = tx.send((hello, data));
        while let Ok(m) = ws.read() {
            if m.is_close() {
                break;
            }
        }
    });
    (backend, rx)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(T)).unwrap();
    c
}

/// Reads until the peer closes (EOF or reset); panics if it sends anything or stays open past `T`.
fn assert_closed_without_a_byte(c: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 64];
    match c.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: got {:?} instead of a close", &buf[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("{what}: not closed within {T:?}: {e}"),
    }
}

fn tcp2ws_bridge_hello_names_the_client_of_a_v1_and_a_v2_header(rt: Runtime) {
    let (backend, hellos) = hello_backend();
    let edge = start_tcp2ws(
        rt,
        tcp2ws_config(&backend.url()),
        Some(ProxyAccept::default()),
    );
    let cases = [
        (
            encode_v1(sa("203.0.113.7:51234"), sa("192.0.2.1:995")),
            "203.0.113.7",
            51234,
        ),
        (
            encode_v2(sa("[2001:db8::42]:4000"), sa("[2001:db8::1]:995")),
            "2001:db8::42",
            4000,
        ),
    ];
    for (header, ip, port) in cases {
        let mut c = connect(edge.addr);
        // The header and the first data in one write: the bytes after the header must not be lost.
        c.write_all(&[&header[..], b"hello"].concat()).unwrap();
        let (hello, data) = hellos.recv_timeout(T).expect("the backend's report");
        assert_eq!(hello["type"], "bridge_hello");
        assert_eq!(hello["client_ip"], ip, "{hello}");
        assert_eq!(hello["client_port"], port, "{hello}");
        assert_eq!(data, b"hello");
        let mut echo = [0u8; 5];
        c.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"hello");
    }
    // The header in pieces, byte by byte, works too.
    let mut c = connect(edge.addr);
    c.set_nodelay(true).unwrap();
    for b in encode_v1(sa("198.51.100.1:1"), sa("192.0.2.1:995")).iter() {
        c.write_all(&[*b]).unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    c.write_all(b"x").unwrap();
    let (hello, _) = hellos.recv_timeout(T).expect("the backend's report");
    assert_eq!(
        (&hello["client_ip"], &hello["client_port"]),
        (&"198.51.100.1".into(), &1.into())
    );
}

/// A TCP listener that counts the connections made to it (and holds them).
fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (addr, count)
}

fn missing_or_garbled_headers_are_closed_without_a_backend_connection(rt: Runtime) {
    let (backend_addr, dialled) = counting_listener();
    let edge = start_tcp2ws(
        rt,
        tcp2ws_config(&format!("ws://{backend_addr}/")),
        Some(ProxyAccept::default()),
    );
    let too_long = [&b"PROXY TCP4 "[..], &[b'1'; 200]].concat();
    let cases: [(&str, &[u8]); 7] = [
        (
            "no header (a server-first client's first line)",
            b"EHLO me\r\n",
        ),
        ("an HTTP request", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
        (
            "a TLS ClientHello",
            b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
        ),
        ("a bad port", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 80\r\n"),
        ("mixed families", b"PROXY TCP4 ::1 5.6.7.8 1 80\r\n"),
        ("v1 without CRLF in 107 bytes", &too_long),
        ("a bad v2 version", b"\r\n\r\n\0\r\nQUIT\n\x11\x11\x00\x0c"),
    ];
    for (what, bytes) in cases {
        let mut c = connect(edge.addr);
        c.write_all(bytes).unwrap();
        assert_closed_without_a_byte(&mut c, what);
    }
    // The end of the stream inside a header.
    let mut c = connect(edge.addr);
    c.write_all(b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x01\x02")
        .unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    assert_closed_without_a_byte(&mut c, "truncated v2");

    thread::sleep(Duration::from_millis(200));
    assert_eq!(dialled.load(Ordering::SeqCst), 0, "nothing was dialled");
    // The same listener dials for a good header (so the count above could have moved).
    let mut c = connect(edge.addr);
    c.write_all(&encode_v2(sa("192.0.2.9:9"), sa("192.0.2.1:995")))
        .unwrap();
    let deadline = Instant::now() + T;
    while dialled.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "a good header never led to a dial"
        );
        thread::sleep(Duration::from_millis(10));
    }
}

fn a_header_slower_than_the_deadline_is_closed(rt: Runtime) {
    let (backend_addr, dialled) = counting_listener();
    let edge = start_tcp2ws(
        rt,
        tcp2ws_config(&format!("ws://{backend_addr}/")),
        Some(accept(Duration::from_millis(500))),
    );
    let start = Instant::now();
    let mut silent = connect(edge.addr);
    let mut slow = connect(edge.addr);
    slow.write_all(b"PROXY TCP4 192.0.2.").unwrap();
    assert_closed_without_a_byte(&mut slow, "a partial header");
    assert_closed_without_a_byte(&mut silent, "no byte at all");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_secs(5),
        "closed after {took:?}, the deadline is 500 ms"
    );
    assert_eq!(dialled.load(Ordering::SeqCst), 0, "nothing was dialled");
    // The runtime counts the connections closed once it has dropped them (just after the close).
    let deadline = Instant::now() + T;
    while edge.active_connections() != 0 {
        assert!(Instant::now() < deadline, "connections still counted");
        thread::sleep(Duration::from_millis(10));
    }
}

/// A TCP target that reads a PROXY header, reports it, then echoes everything until EOF.
fn proxy_target() -> (SocketAddr, mpsc::Receiver<ProxyHeader>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let tx = tx.clone();
            thread::spawn(move || {
                s.set_read_timeout(Some(T)).unwrap();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let rest = loop {
                    let n = s.read(&mut chunk).expect("target read");
                    assert!(n > 0, "EOF before a complete PROXY header: {buf:?}");
                    buf.extend_from_slice(&chunk[..n]);
                    match parse(&buf, 2048) {
                        Ok(Some((h, len))) => {
                            let _ = tx.send(h);
                            break buf.split_off(len);
                        }
                        Ok(None) => continue,
                        Err(e) => panic!("the target got a bad header ({e}): {buf:?}"),
                    }
                };
                s.write_all(&rest).unwrap();
                loop {
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => s.write_all(&chunk[..n]).unwrap(),
                    }
                }
                let _ = s.shutdown(Shutdown::Write);
            });
        }
    });
    (addr, rx)
}

fn ws_client(
    addr: SocketAddr,
    stream: Option<TcpStream>,
) -> (tungstenite::WebSocket<TcpStream>, SocketAddr) {
    let stream = stream.unwrap_or_else(|| connect(addr));
    let local = stream.local_addr().unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/"), stream).expect("upgrade");
    (ws, local)
}

fn read_binary(ws: &mut tungstenite::WebSocket<TcpStream>, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < n {
        match ws.read().expect("client read") {
            Message::Binary(b) => got.extend_from_slice(&b),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("expected Binary, got {other:?}"),
        }
    }
    got
}

fn ws2tcp_writes_a_v2_header_then_the_relayed_bytes(rt: Runtime) {
    let (target, headers) = proxy_target();
    let mut cfg = ws2tcp_config();
    cfg.target = Some(StaticTarget::parse(&target.to_string()).unwrap());
    cfg.send_proxy_protocol = Some(Version::V2);
    let gateway = start_ws2tcp(rt, cfg, None);

    let (mut ws, client) = ws_client(gateway.addr, None);
    ws.send(Message::Binary(b"relayed after the header".to_vec().into()))
        .unwrap();
    let header = headers.recv_timeout(T).expect("the target's header");
    assert_eq!(
        header,
        ProxyHeader {
            version: Version::V2,
            addresses: Addresses::Proxied {
                source: client,
                destination: target
            }
        }
    );
    assert_eq!(read_binary(&mut ws, 24), b"relayed after the header");
    ws.close(None).unwrap();
}

/// A raw TCP client → tcp2ws → (wsbridge.v1 tunnel) → ws2tcp --send-proxy-protocol v1 → target: the
/// target's header names the raw client (from `bridge_hello`), not the tcp2ws. With the edge also
/// accepting a header, the address of that header goes all the way.
fn the_tunnel_names_the_original_tcp_client_to_the_target(rt: Runtime) {
    let (target, headers) = proxy_target();
    let mut cfg = ws2tcp_config();
    cfg.target = Some(StaticTarget::parse(&target.to_string()).unwrap());
    cfg.send_proxy_protocol = Some(Version::V1);
    let gateway = start_ws2tcp(rt, cfg, None);
    let tunnel = format!("ws://{}/tunnel", gateway.addr);

    for proxied_edge in [false, true] {
        let edge = start_tcp2ws(
            rt,
            tcp2ws_config(&tunnel),
            proxied_edge.then(ProxyAccept::default),
        );
        let mut c = connect(edge.addr);
        let source = if proxied_edge {
            c.write_all(&encode_v1(sa("203.0.113.7:51234"), sa("192.0.2.1:25")))
                .unwrap();
            sa("203.0.113.7:51234")
        } else {
            c.local_addr().unwrap()
        };
        c.write_all(b"through the tunnel").unwrap();
        let header = headers.recv_timeout(T).expect("the target's header");
        assert_eq!(header.version, Version::V1);
        assert_eq!(
            header.addresses,
            Addresses::Proxied {
                source,
                destination: target
            },
            "edge accepting a header: {proxied_edge}"
        );
        let mut echo = [0u8; 18];
        c.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"through the tunnel");
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"");
    }
}

/// A WebSocket listener with the wrapper: the header comes before the HTTP upgrade, and the address it
/// names is the client's for the session (here: the source of the header ws2tcp sends on).
fn a_ws2tcp_listener_accepts_a_header_and_passes_its_client_on(rt: Runtime) {
    let (target, headers) = proxy_target();
    let mut cfg = ws2tcp_config();
    cfg.target = Some(StaticTarget::parse(&target.to_string()).unwrap());
    cfg.send_proxy_protocol = Some(Version::V2);
    let gateway = start_ws2tcp(rt, cfg, Some(ProxyAccept::default()));

    let mut stream = connect(gateway.addr);
    stream
        .write_all(&encode_v1(sa("198.51.100.20:3333"), gateway.addr))
        .unwrap();
    let (mut ws, _) = ws_client(gateway.addr, Some(stream));
    ws.send(Message::Binary(b"ping".to_vec().into())).unwrap();
    let header = headers.recv_timeout(T).expect("the target's header");
    assert_eq!(header.source(), Some(sa("198.51.100.20:3333")));
    assert_eq!(read_binary(&mut ws, 4), b"ping");
    ws.close(None).unwrap();

    // Without a header the upgrade request itself is refused: closed, no 101.
    let mut plain = connect(gateway.addr);
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n")
        .unwrap();
    assert_closed_without_a_byte(&mut plain, "an upgrade without a header");
}

/// Dynamic mode with the `tls` protocol: the target reads the v2 header in plain (exactly its length),
/// then a TLS handshake starts on the same stream and the relay works through it.
fn the_tls_protocol_gets_the_header_in_plain_before_the_client_hello(rt: Runtime) {
    let cert = wsbridge_tests::certs::TestCert::new();
    let server = wsbridge_core::tls::server_config(vec![cert.pair()]).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = l.local_addr().unwrap();
    let (tx, headers) = mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        let mut head = vec![0u8; 16];
        s.read_exact(&mut head).unwrap();
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        head.resize(16 + len, 0);
        s.read_exact(&mut head[16..]).unwrap();
        let _ = tx.send(parse(&head, 2048));
        let conn = rustls::ServerConnection::new(server).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, s);
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.read(&mut buf) {
            if n == 0 || tls.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let client = wsbridge_core::tls::client_config(vec![cert.cert.clone()]).unwrap();
    let mut cfg = ws2tcp_config();
    cfg.policy =
        wsbridge_core::ws2tcp::TargetPolicy::parse(&["127.0.0.1/32".to_owned()], &[]).unwrap();
    cfg.target_tls = Some(Arc::new(move |name: &str| {
        wsbridge_core::tls::RustlsSession::client(client.clone(), name)
            .map(|s| Box::new(s) as Box<dyn wsbridge_core::tls::TlsSession>)
    }));
    cfg.send_proxy_protocol = Some(Version::V2);
    let gateway = start_ws2tcp(rt, cfg, None);

    let (mut ws, client_addr) = ws_client(gateway.addr, None);
    let _greeting = ws.read().expect("greeting");
    let handshake = serde_json::json!({"protocol": "tls", "target_ip": "127.0.0.1", "target_port": target.port()});
    ws.send(Message::Text(handshake.to_string().into()))
        .unwrap();
    let header = headers.recv_timeout(T).expect("the target's header");
    assert_eq!(
        header,
        Ok(Some((
            ProxyHeader {
                version: Version::V2,
                addresses: Addresses::Proxied {
                    source: client_addr,
                    destination: target
                }
            },
            28
        )))
    );
    match ws.read().expect("status") {
        Message::Text(t) => assert!(t.as_str().contains("Successfully connected"), "{t}"),
        other => panic!("expected the status, got {other:?}"),
    }
    ws.send(Message::Binary(b"over tls".to_vec().into()))
        .unwrap();
    assert_eq!(read_binary(&mut ws, 8), b"over tls");
    ws.close(None).unwrap();
}

/// HAProxy (a real sender) in TCP mode in front of a `tcp2ws --accept-proxy-protocol`, once with
/// `send-proxy` (v1) and once with `send-proxy-v2`: `bridge_hello` names the client that connected
/// to HAProxy, not HAProxy's own socket. Fails (never skips) without `haproxy` on the PATH.
fn haproxy_send_proxy_and_send_proxy_v2_reach_bridge_hello(rt: Runtime) {
    let (backend, hellos) = hello_backend();
    let edge = start_tcp2ws(
        rt,
        tcp2ws_config(&backend.url()),
        Some(ProxyAccept::default()),
    );
    for send in ["send-proxy", "send-proxy-v2"] {
        let haproxy = HaProxy::start(edge.addr, send);
        let mut c = haproxy.connect();
        c.write_all(b"via haproxy").unwrap();
        let (hello, data) = hellos.recv_timeout(T).expect("the backend's report");
        let client = c.local_addr().unwrap();
        assert_eq!(
            hello["client_ip"],
            client.ip().to_string(),
            "{send}: {hello}"
        );
        assert_eq!(hello["client_port"], client.port(), "{send}: {hello}");
        assert_eq!(data, b"via haproxy");
        let mut echo = [0u8; 11];
        c.read_exact(&mut echo).unwrap();
        assert_eq!(&echo, b"via haproxy", "{send}");
    }
}

/// A `haproxy` process in TCP mode on 127.0.0.1, forwarding to `to` with `send` (`send-proxy` or
/// `send-proxy-v2`); killed when dropped.
struct HaProxy {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: TempDir,
}

/// A port below the kernel's ephemeral range (which `bind(0)` and outgoing connections draw from, so
/// no other test's socket takes it between our check and haproxy's bind) that is free now.
fn free_fixed_port() -> u16 {
    let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1000);
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    let seed = std::process::id() as usize ^ nanos ^ (NEXT.fetch_add(1, Ordering::SeqCst) << 20);
    (0..span as usize)
        .map(|i| low - 1 - ((seed.wrapping_mul(7919) + i * 613) % span as usize) as u16)
        .find(|&p| TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// A directory removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl HaProxy {
    fn start(to: SocketAddr, send: &str) -> HaProxy {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_fixed_port()));
        let dir = std::env::temp_dir().join(format!(
            "wsbridge-haproxy-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = dir.join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100\n\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
                 timeout client 30s\n  timeout server 30s\n\nfrontend edge\n  bind {addr}\n  \
                 default_backend bridge\n\nbackend bridge\n  server wsbridge {to} {send}\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&cfg)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect(
                "haproxy is required for this test (apt-get install haproxy; .ci/run installs it)",
            );
        let haproxy = HaProxy {
            child,
            addr,
            _dir: TempDir(dir),
        };
        // Up once its port is taken (probed by binding, so that no connection goes through it).
        let deadline = Instant::now() + T;
        while TcpListener::bind(addr).is_ok() {
            assert!(
                Instant::now() < deadline,
                "haproxy did not listen on {addr}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        thread::sleep(Duration::from_millis(50));
        let mut haproxy = haproxy;
        assert!(
            haproxy.child.try_wait().unwrap().is_none(),
            "haproxy exited: someone else took {addr}"
        );
        haproxy
    }

    fn connect(&self) -> TcpStream {
        connect(self.addr)
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Over the connection limit, a WebSocket listener's "at capacity" answer (101, then Close 1013) still
/// reaches a client behind a proxy: the wrapper strips the header before the mode's answer reads.
fn over_capacity_a_websocket_client_behind_a_proxy_still_gets_close_1013(rt: Runtime) {
    let (target, headers) = proxy_target();
    let mut cfg = ws2tcp_config();
    cfg.target = Some(StaticTarget::parse(&target.to_string()).unwrap());
    cfg.send_proxy_protocol = Some(Version::V1);
    let gateway = start_ws2tcp_limited(rt, cfg, Some(ProxyAccept::default()), 1);
    let behind_proxy = |port: u16| {
        let mut stream = connect(gateway.addr);
        stream
            .write_all(&encode_v2(
                sa(&format!("198.51.100.7:{port}")),
                gateway.addr,
            ))
            .unwrap();
        ws_client(gateway.addr, Some(stream)).0
    };
    let mut first = behind_proxy(1);
    first.send(Message::Binary(b"x".to_vec().into())).unwrap();
    assert_eq!(read_binary(&mut first, 1), b"x");
    assert_eq!(
        headers.recv_timeout(T).unwrap().source(),
        Some(sa("198.51.100.7:1"))
    );
    let mut second = behind_proxy(2);
    match second.read() {
        Ok(Message::Close(Some(frame))) => {
            assert_eq!(u16::from(frame.code), 1013);
            assert_eq!(frame.reason.as_str(), "Server at capacity, try again later");
        }
        other => panic!("expected Close 1013, got {other:?}"),
    }
    first.close(None).unwrap();
}
