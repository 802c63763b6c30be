//! `Ws2TcpSession` in memory on virtual time: a scripted WebSocket client (our client engine behind a
//! real HTTP upgrade) and a scripted TCP target, with the runtime's part (resolving, dialling) played by
//! the harness. Proves the Socket2Web wire, the policy at the point of dialling, and the tunnel.

mod common;

use common::{drain_ws, epoch, take};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use wsbridge_core::http::head::HeadReader;
use wsbridge_core::session::{Action, EndReason, Leg, Session, SessionFactory};
use wsbridge_core::ws::handshake::ClientHandshake;
use wsbridge_core::ws::{CloseCode, CloseFrame, Event, Role, Utf8Bytes, WebSocket};
use wsbridge_core::ws2tcp::{StaticPage, StaticTarget, TargetPolicy, Ws2TcpConfig, Ws2TcpFactory};
use wsbridge_core::{CounterEntropy, WsConfig};

const GREETING: &str = r#"{"supported_protocols":{"tcp":{"target_ip":"IP Address","target_port":"Port for IP Address"},"tls":{"target_ip":"IP Address","target_port":"Port for IP Address"}}}"#;
const SUCCESS: &str = r#"{"status":"Successfully connected, starting to proxy"}"#;

fn config() -> Ws2TcpConfig {
    let mut c = Ws2TcpConfig::new("127.0.0.1:8080");
    c.buffer_size = 4096;
    c.ping_interval = None;
    c
}

enum Client {
    Head(ClientHandshake, HeadReader),
    Open(Box<WebSocket>),
    Refused(u16),
}

struct Harness {
    s: Box<dyn Session + Send>,
    now: Instant,
    client: Client,
    events: Vec<Event>,
    protocol: Option<String>,
    /// What the resolver answers, by host.
    dns: HashMap<String, Vec<SocketAddr>>,
    resolves: Vec<(String, u16)>,
    connects: Vec<SocketAddr>,
    /// Answer connects at once (else they hang).
    answer_connects: bool,
    target_rx: Vec<u8>,
}

impl Harness {
    fn new(cfg: Ws2TcpConfig, protocols: &[&str]) -> Self {
        Self::connecting(cfg, protocols, true)
    }

    /// A harness whose connects are answered at once, or (`answer_connects` false) hang.
    fn connecting(cfg: Ws2TcpConfig, protocols: &[&str], answer_connects: bool) -> Self {
        let factory = Ws2TcpFactory(Arc::new(cfg));
        let now = epoch();
        let s = factory.session(
            "203.0.113.7:51234".parse().unwrap(),
            Box::new(CounterEntropy(3)),
            now,
        );
        Self::with_session_answering(s, now, protocols, answer_connects)
    }

    fn with_session(s: Box<dyn Session + Send>, now: Instant, protocols: &[&str]) -> Self {
        Self::with_session_answering(s, now, protocols, true)
    }

    fn with_session_answering(
        s: Box<dyn Session + Send>,
        now: Instant,
        protocols: &[&str],
        answer_connects: bool,
    ) -> Self {
        let protocols: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        let (hs, request) =
            ClientHandshake::new(&mut CounterEntropy(9), "gw.test", "/", &protocols, &[]).unwrap();
        let mut h = Harness {
            s,
            now,
            client: Client::Head(hs, HeadReader::new(16 << 10, 64)),
            events: Vec::new(),
            protocol: None,
            dns: HashMap::new(),
            resolves: Vec::new(),
            connects: Vec::new(),
            answer_connects,
            target_rx: Vec::new(),
        };
        h.dns
            .insert("public.test".into(), vec!["8.8.8.8:0".parse().unwrap()]);
        h.s.handle_input(Leg::Down, BytesMut::from(&request[..]), h.now);
        h.run();
        h
    }

    fn run(&mut self) {
        for _ in 0..1000 {
            let mut moved = false;
            while let Some(action) = self.s.poll_action() {
                moved = true;
                match action {
                    Action::Resolve { host, port } => {
                        self.resolves.push((host.clone(), port));
                        let result = match self.dns.get(&host) {
                            Some(addrs) => Ok(addrs
                                .iter()
                                .map(|a| SocketAddr::new(a.ip(), port))
                                .collect()),
                            None => match host.parse::<std::net::IpAddr>() {
                                Ok(ip) => Ok(vec![SocketAddr::new(ip, port)]),
                                Err(_) => Err("Name or service not known".into()),
                            },
                        };
                        self.s.handle_resolved(result, self.now);
                    }
                    Action::Connect(addr) => {
                        self.connects.push(addr);
                        if self.answer_connects {
                            self.s.handle_connected(self.now);
                        }
                    }
                    Action::Register(_) | Action::Deliver { .. } => {
                        panic!("this mode neither registers nor delivers")
                    }
                }
            }
            let to_client = take(&mut *self.s, Leg::Down, self.now);
            if !to_client.is_empty() {
                moved = true;
                self.client_receives(&to_client);
            }
            let to_target = take(&mut *self.s, Leg::Up, self.now);
            moved |= !to_target.is_empty();
            self.target_rx.extend_from_slice(&to_target);
            let out = self.client_output();
            if !out.is_empty() {
                moved = true;
                self.s
                    .handle_input(Leg::Down, BytesMut::from(&out[..]), self.now);
            }
            if !moved {
                return;
            }
        }
        panic!("the session never settled");
    }

    fn client_receives(&mut self, bytes: &[u8]) {
        match &mut self.client {
            Client::Head(hs, head) => {
                head.feed(bytes);
                let Some(resp) = head.poll_response().unwrap() else {
                    return;
                };
                match hs.validate(&resp) {
                    Ok(p) => {
                        self.protocol = p;
                        let mut ws = WebSocket::new(
                            Role::Client(Box::new(CounterEntropy(5))),
                            &WsConfig::default(),
                        );
                        ws.handle_input(head.take_remainder());
                        self.client = Client::Open(Box::new(ws));
                    }
                    Err(_) => self.client = Client::Refused(resp.status),
                }
            }
            Client::Open(ws) => ws.handle_input(BytesMut::from(bytes)),
            Client::Refused(_) => {}
        }
        if let Client::Open(ws) = &mut self.client {
            while let Some(ev) = ws.poll_event() {
                self.events.push(ev);
            }
        }
    }

    fn client_output(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Client::Open(ws) = &mut self.client {
            out.extend(drain_ws(ws));
        }
        out
    }

    fn ws(&mut self) -> &mut WebSocket {
        match &mut self.client {
            Client::Open(ws) => ws,
            _ => panic!("client not open"),
        }
    }

    fn send_text(&mut self, text: &str) {
        self.ws()
            .send_text(Utf8Bytes::from(text.to_owned()))
            .unwrap();
        self.run();
    }

    fn send_binary(&mut self, data: &[u8]) {
        self.ws()
            .send_binary(Bytes::copy_from_slice(data), true)
            .unwrap();
        self.run();
    }

    fn target_sends(&mut self, data: &[u8]) {
        self.s.handle_input(Leg::Up, BytesMut::from(data), self.now);
        self.run();
    }

    fn advance_time(&mut self, by: Duration) {
        self.now += by;
        if self.s.poll_timeout().is_some_and(|t| t <= self.now) {
            self.s.handle_timeout(self.now);
        }
        self.run();
    }

    fn texts(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Text(t) => Some(t.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }

    fn binary(&self) -> Vec<u8> {
        let mut v = Vec::new();
        for e in &self.events {
            if let Event::Binary { data, .. } = e {
                v.extend_from_slice(data);
            }
        }
        v
    }

    fn close(&self) -> Option<CloseFrame> {
        self.events.iter().find_map(|e| match e {
            Event::Close(f) => f.clone(),
            _ => None,
        })
    }

    fn handshake(&mut self, ip: &str, port: Value) {
        let h = serde_json::json!({"protocol":"tcp","target_ip":ip,"target_port":port});
        self.send_text(&h.to_string());
    }

    fn assert_failed(&self, code: CloseCode) -> String {
        let texts = self.texts();
        let last: Value = serde_json::from_str(texts.last().expect("a status")).unwrap();
        assert_eq!(last["status"], "Connection failed, cancelling proxy");
        let close = self.close().expect("a Close");
        assert_eq!(close.code, code, "{close:?}");
        assert!(!close.reason.is_empty());
        last["reason"].as_str().unwrap().to_owned()
    }
}

#[test]
fn dynamic_greeting_handshake_status_and_relay() {
    let mut h = Harness::new(config(), &[]);
    assert_eq!(h.protocol, None);
    assert_eq!(h.texts(), vec![GREETING.to_owned()]);
    h.handshake("public.test", serde_json::json!("443"));
    assert_eq!(h.resolves, vec![("public.test".to_owned(), 443)]);
    assert_eq!(h.connects, vec!["8.8.8.8:443".parse().unwrap()]);
    assert_eq!(h.texts()[1], SUCCESS);
    h.send_binary(b"EHLO ");
    h.send_text("text is bytes too\r\n");
    assert_eq!(h.target_rx, b"EHLO text is bytes too\r\n");
    h.target_sends(b"250 ok\r\n");
    assert_eq!(h.binary(), b"250 ok\r\n");
    // The target closes: its bytes went first, then Close 1000.
    h.target_sends(b"221 bye\r\n");
    h.s.handle_eof(Leg::Up, h.now);
    h.run();
    assert_eq!(h.binary(), b"250 ok\r\n221 bye\r\n");
    assert_eq!(h.close().unwrap().code, CloseCode::NORMAL);
    assert!(h.s.write_closed(Leg::Up), "the target's write side is shut");
    assert!(h.s.is_finished());
    assert_eq!(h.s.end_reason(), Some(&EndReason::Normal));
    let t = h.s.traffic();
    assert_eq!((t.down_to_up, t.up_to_down), (24, 17));
}

#[test]
fn a_denied_target_is_never_dialled() {
    for (ip, answer) in [
        ("127.0.0.1", vec!["127.0.0.1:0"]),
        ("127.1", vec!["127.0.0.1:0"]),
        ("localhost", vec!["[::1]:0", "127.0.0.1:0"]),
        ("rebind.test", vec!["169.254.169.254:0"]),
        ("mapped.test", vec!["[::ffff:10.0.0.1]:0"]),
        ("[::]", vec!["[::]:0"]),
    ] {
        let mut h = Harness::new(config(), &[]);
        let addrs = answer.iter().map(|a| a.parse().unwrap()).collect();
        let host = ip.trim_start_matches('[').trim_end_matches(']');
        h.dns.insert(host.to_owned(), addrs);
        h.handshake(ip, serde_json::json!(22));
        assert_eq!(h.resolves.len(), 1, "{ip}: resolved by the runtime");
        assert!(h.connects.is_empty(), "{ip}: never dialled");
        let reason = h.assert_failed(CloseCode::POLICY);
        assert!(reason.contains("not allowed"), "{reason}");
        assert!(matches!(h.s.end_reason(), Some(EndReason::Policy(_))));
    }
}

#[test]
fn only_the_allowed_addresses_of_a_name_are_dialled() {
    let mut h = Harness::new(config(), &[]);
    h.dns.insert(
        "mixed.test".into(),
        vec![
            "127.0.0.1:0".parse().unwrap(),
            "[::1]:0".parse().unwrap(),
            "1.1.1.1:0".parse().unwrap(),
            "10.0.0.1:0".parse().unwrap(),
        ],
    );
    h.answer_connects = false;
    h.handshake("mixed.test", serde_json::json!(80));
    assert_eq!(h.connects, vec!["1.1.1.1:80".parse().unwrap()]);
    h.s.handle_connected(h.now);
    h.run();
    assert_eq!(h.texts()[1], SUCCESS);
}

#[test]
fn bad_handshakes_are_refused_with_1008_before_resolving() {
    for bad in [
        r#"{"protocol":"tcp","target_ip":"public.test","target_port":0}"#,
        r#"{"protocol":"tcp","target_ip":"public.test","target_port":65536}"#,
        r#"{"protocol":"tcp","target_ip":"public.test","target_port":-1}"#,
        r#"{"protocol":"tcp","target_ip":"public.test","target_port":"abc"}"#,
        r#"{"protocol":"sctp","target_ip":"public.test","target_port":1}"#,
        r#"{"protocol":"tls","target_ip":"public.test","target_port":1}"#,
        "garbage",
    ] {
        let mut h = Harness::new(config(), &[]);
        h.send_text(bad);
        assert!(h.resolves.is_empty(), "{bad}");
        h.assert_failed(CloseCode::POLICY);
    }
    // A Binary frame instead of the handshake.
    let mut h = Harness::new(config(), &[]);
    h.send_binary(b"{}");
    h.assert_failed(CloseCode::POLICY);
}

#[test]
fn upstream_failures_give_1011_and_the_connect_timeout_holds() {
    let mut h = Harness::new(config(), &[]);
    h.handshake("nowhere.test", serde_json::json!(80));
    let reason = h.assert_failed(CloseCode::INTERNAL);
    assert!(reason.contains("cannot resolve"), "{reason}");

    let mut h = Harness::new(config(), &[]);
    h.answer_connects = false;
    h.handshake("public.test", serde_json::json!(80));
    h.s.handle_connect_failed(std::io::ErrorKind::ConnectionRefused, h.now);
    h.run();
    h.assert_failed(CloseCode::INTERNAL);

    let mut h = Harness::new(config(), &[]);
    h.answer_connects = false;
    h.handshake("public.test", serde_json::json!(80));
    assert_eq!(h.connects.len(), 1);
    h.advance_time(Duration::from_millis(9900));
    assert!(h.close().is_none(), "not yet");
    h.advance_time(Duration::from_millis(200));
    let reason = h.assert_failed(CloseCode::INTERNAL);
    assert!(reason.contains("connect timeout"), "{reason}");
    // A late answer changes nothing.
    h.s.handle_connected(h.now);
    h.run();
    assert_eq!(h.texts().len(), 2);
}

#[test]
fn a_client_without_a_handshake_is_refused_at_the_timeout() {
    let mut h = Harness::new(config(), &[]);
    h.advance_time(Duration::from_secs(11));
    h.assert_failed(CloseCode::POLICY);
    assert_eq!(h.s.end_reason(), Some(&EndReason::Timeout("handshake")));
}

#[test]
fn client_data_before_the_connect_waits_and_is_bounded() {
    let mut h = Harness::new(config(), &[]);
    h.answer_connects = false;
    h.handshake("public.test", serde_json::json!(80));
    for i in 0..100u8 {
        h.ws()
            .send_binary(Bytes::from(vec![i; 1000]), true)
            .unwrap();
    }
    h.run();
    assert!(!h.s.wants_read(Leg::Down), "the client is no longer read");
    h.s.handle_connected(h.now);
    h.run();
    assert_eq!(h.texts()[1], SUCCESS);
    assert_eq!(h.target_rx.len(), 100_000, "every byte arrives, in order");
    assert!(h
        .target_rx
        .chunks(1000)
        .enumerate()
        .all(|(i, c)| c.iter().all(|&b| b == i as u8)));
}

#[test]
fn static_mode_reports_a_failed_target_with_a_close_only() {
    let mut cfg = config();
    cfg.target = Some(StaticTarget::parse("vnc.test:5900").unwrap()); // the harness cannot resolve it
    let h = Harness::new(cfg, &["binary"]);
    assert_eq!(h.protocol.as_deref(), Some("binary"));
    assert!(
        h.texts().is_empty(),
        "no greeting and no JSON in static mode"
    );
    let close = h.close().expect("a Close");
    assert_eq!(close.code, CloseCode::INTERNAL);
    assert!(close.reason.contains("vnc.test"), "{close:?}");
}

#[test]
fn static_mode_trusts_the_operators_target() {
    let mut cfg = config();
    cfg.target = Some(StaticTarget::parse("10.1.2.3:5900").unwrap());
    let mut h = Harness::new(cfg, &["binary"]);
    assert_eq!(h.connects, vec!["10.1.2.3:5900".parse().unwrap()]);
    h.send_binary(b"RFB 003.008\n");
    h.send_text("t");
    assert_eq!(h.target_rx, b"RFB 003.008\nt");
    h.target_sends(b"RFB 003.008\n");
    assert_eq!(h.binary(), b"RFB 003.008\n");
}

#[test]
fn the_tunnel_keeps_both_half_closes() {
    let mut cfg = config();
    cfg.target = Some(StaticTarget::parse("127.0.0.1:25").unwrap());
    let mut h = Harness::new(cfg, &["wsbridge.v1", "binary"]);
    assert_eq!(h.protocol.as_deref(), Some("wsbridge.v1"));
    h.send_text(r#"{"type":"bridge_hello","version":1,"connection_id":"c1","client_ip":"198.51.100.1","client_port":4242,"tls":false,"listener":"0.0.0.0:25"}"#);
    h.send_binary(b"QUIT\r\n");
    h.send_text(r#"{"type":"future_thing"}"#);
    assert_eq!(h.target_rx, b"QUIT\r\n", "Text is control on the tunnel");
    // The client's eof: the target's write side is shut, the target keeps talking.
    h.send_text(r#"{"type":"eof"}"#);
    assert!(h.s.write_closed(Leg::Up));
    assert!(!h.s.is_finished());
    h.target_sends(b"221 bye\r\n");
    assert_eq!(h.binary(), b"221 bye\r\n");
    // The target's EOF: both sides are done, Close 1000.
    h.s.handle_eof(Leg::Up, h.now);
    h.run();
    assert_eq!(h.close().unwrap().code, CloseCode::NORMAL);
    assert!(h.s.is_finished());

    // The other order: the target finishes first and the client gets {"type":"eof"}.
    let mut cfg = config();
    cfg.target = Some(StaticTarget::parse("127.0.0.1:25").unwrap());
    let mut h = Harness::new(cfg, &["wsbridge.v1"]);
    h.target_sends(b"220 hi\r\n");
    h.s.handle_eof(Leg::Up, h.now);
    h.run();
    assert_eq!(h.texts(), vec![r#"{"type":"eof"}"#.to_owned()]);
    assert!(h.close().is_none(), "the client may still send");
    h.send_binary(b"late but delivered");
    assert_eq!(h.target_rx, b"late but delivered");
    h.send_text(r#"{"type":"eof"}"#);
    assert_eq!(h.close().unwrap().code, CloseCode::NORMAL);

    // Malformed control: 1008.
    let mut cfg = config();
    cfg.target = Some(StaticTarget::parse("127.0.0.1:25").unwrap());
    let mut h = Harness::new(cfg, &["wsbridge.v1"]);
    h.send_text("{nope");
    assert_eq!(h.close().unwrap().code, CloseCode::POLICY);
}

#[test]
fn origin_and_path_rules_refuse_before_the_upgrade() {
    let mut cfg = config();
    cfg.path = Some("/ws".into());
    let h = Harness::new(cfg, &[]);
    assert!(matches!(h.client, Client::Refused(404)));
    assert!(h.s.is_finished());
    assert!(h.resolves.is_empty());
}

#[test]
fn over_capacity_completes_the_upgrade_then_closes_1013() {
    let factory = Ws2TcpFactory(Arc::new(config()));
    let now = epoch();
    let s = factory
        .over_capacity(
            "203.0.113.7:1".parse().unwrap(),
            Box::new(CounterEntropy(1)),
            now,
        )
        .expect("WebSocket listeners answer over capacity");
    let h = Harness::with_session(s, now, &[]);
    let close = h.close().expect("a Close");
    assert_eq!(close.code, CloseCode::TRY_AGAIN_LATER);
    assert_eq!(close.reason, "Server at capacity, try again later");
    assert!(h.s.is_finished(), "closed after the client's Close reply");
    assert!(h.texts().is_empty());
}

#[test]
fn deny_rules_apply_to_public_targets_too() {
    let mut cfg = config();
    cfg.policy = TargetPolicy::parse(&[], &["8.8.0.0/16:1-1024".into()]).unwrap();
    let mut h = Harness::new(cfg.clone(), &[]);
    h.handshake("public.test", serde_json::json!(53));
    assert!(h.connects.is_empty());
    h.assert_failed(CloseCode::POLICY);
    let mut h = Harness::new(cfg, &[]);
    h.handshake("public.test", serde_json::json!(8080));
    assert_eq!(h.connects.len(), 1);
}

#[test]
fn idle_and_lifetime_limits_close_the_relay() {
    let mut cfg = config();
    cfg.idle_timeout = Some(Duration::from_secs(5));
    let mut h = Harness::new(cfg, &[]);
    h.handshake("public.test", serde_json::json!(80));
    h.advance_time(Duration::from_secs(4));
    h.send_binary(b"x");
    h.advance_time(Duration::from_secs(4));
    assert!(h.close().is_none(), "activity moved the idle deadline");
    h.advance_time(Duration::from_secs(2));
    assert_eq!(h.close().unwrap().code, CloseCode::NORMAL);

    let mut cfg = config();
    cfg.max_lifetime = Some(Duration::from_secs(60));
    cfg.idle_timeout = None;
    let mut h = Harness::new(cfg, &[]);
    h.handshake("public.test", serde_json::json!(80));
    h.advance_time(Duration::from_secs(61));
    assert_eq!(h.close().unwrap().code, CloseCode::GOING_AWAY);
}

/// A static-mode harness (raw `binary` relay, or the `wsbridge.v1` tunnel with its `bridge_hello`),
/// or a dynamic one past the Socket2Web handshake: relaying to the target.
fn relaying(kind: &str) -> Harness {
    let mut cfg = config();
    if kind == "dynamic" {
        let mut h = Harness::new(cfg, &[]);
        h.handshake("public.test", serde_json::json!(80));
        assert_eq!(h.texts()[1], SUCCESS);
        return h;
    }
    cfg.target = Some(StaticTarget::parse("127.0.0.1:25").unwrap());
    let mut h = Harness::new(cfg, &[kind]);
    assert_eq!(h.protocol.as_deref(), Some(kind));
    if kind == "wsbridge.v1" {
        h.send_text(r#"{"type":"bridge_hello","version":1,"connection_id":"c1","client_ip":"198.51.100.1","client_port":4242,"tls":false,"listener":"0.0.0.0:25"}"#);
    }
    h
}

#[test]
fn the_clients_close_shuts_the_target_and_its_answer_comes_before_the_reply() {
    for kind in ["wsbridge.v1", "binary", "dynamic"] {
        let mut h = relaying(kind);
        h.send_binary(b"GET /big\r\n");
        // tcp2ws --half-close close: the client's FIN becomes a Close right after its data.
        let now = h.now;
        h.ws()
            .close(
                Some(&CloseFrame::new(CloseCode::NORMAL, "client closed")),
                now,
            )
            .unwrap();
        h.run();
        assert_eq!(h.target_rx, b"GET /big\r\n", "{kind}");
        assert!(h.s.write_closed(Leg::Up), "{kind}: the target gets its FIN");
        assert!(
            h.close().is_none(),
            "{kind}: the reply waits for the target"
        );
        assert!(!h.s.is_finished() && h.s.wants_read(Leg::Up), "{kind}");
        assert!(
            !h.s.wants_read(Leg::Down),
            "{kind}: nothing is read after a Close"
        );
        // The target answers after the FIN: every byte reaches the client, then the reply.
        let answer = vec![b'a'; 10_000];
        h.target_sends(&answer);
        h.advance_time(Duration::from_secs(3)); // within the close timeout (5 s)
        h.target_sends(b"end\r\n");
        assert!(h.close().is_none(), "{kind}");
        h.s.handle_eof(Leg::Up, h.now);
        h.run();
        let mut want = answer.clone();
        want.extend_from_slice(b"end\r\n");
        assert_eq!(h.binary(), want, "{kind}");
        assert_eq!(h.close().unwrap().code, CloseCode::NORMAL, "{kind}");
        assert!(h.s.is_finished(), "{kind}");
        assert_eq!(h.s.end_reason(), Some(&EndReason::Normal), "{kind}");
        assert_eq!(h.s.traffic().up_to_down, want.len() as u64, "{kind}");
    }
}

#[test]
fn a_target_that_goes_quiet_gets_the_client_its_reply_after_the_close_timeout_of_silence() {
    let mut h = relaying("wsbridge.v1");
    h.send_binary(b"x");
    let now = h.now;
    h.ws().close(None, now).unwrap();
    h.run();
    let deadline = h.s.poll_timeout().expect("the wait is bounded");
    assert_eq!(deadline, now + WsConfig::default().close_timeout);
    h.target_sends(b"partial");
    // The target answered within the wait: the wait goes on rather than cutting the answer off.
    h.advance_time(Duration::from_millis(5100));
    assert_eq!(h.binary(), b"partial");
    assert!(h.close().is_none(), "progress moves the deadline");
    // Then the target stays silent for a whole close timeout: the client gets its reply.
    h.advance_time(Duration::from_millis(5000));
    assert_eq!(h.close().unwrap().code, CloseCode::NORMAL);
    assert!(h.s.is_finished());
}

#[test]
fn a_close_while_dialling_delivers_the_clients_data_and_relays_the_answer() {
    let mut cfg = config();
    cfg.target = Some(StaticTarget::parse("127.0.0.1:25").unwrap());
    let mut h = Harness::connecting(cfg, &["wsbridge.v1"], false);
    assert_eq!(h.connects.len(), 1);
    // A fast client: hello, its data and the Close arrive before the target is connected.
    h.ws()
        .send_text(Utf8Bytes::from(r#"{"type":"bridge_hello","version":1,"connection_id":"c2","client_ip":"198.51.100.1","client_port":1,"tls":false,"listener":"x"}"#))
        .unwrap();
    h.ws()
        .send_binary(Bytes::from_static(b"HELO x\r\nQUIT\r\n"), true)
        .unwrap();
    let now = h.now;
    h.ws().close(None, now).unwrap();
    h.run();
    assert!(h.target_rx.is_empty());
    assert!(!h.s.write_closed(Leg::Up), "no FIN before the connect");
    assert!(h.close().is_none());
    h.s.handle_connected(h.now);
    h.run();
    assert_eq!(h.target_rx, b"HELO x\r\nQUIT\r\n");
    assert!(h.s.write_closed(Leg::Up));
    h.target_sends(b"250 hi\r\n221 bye\r\n");
    h.s.handle_eof(Leg::Up, h.now);
    h.run();
    assert_eq!(h.binary(), b"250 hi\r\n221 bye\r\n");
    assert_eq!(h.close().unwrap().code, CloseCode::NORMAL);
    assert!(h.s.is_finished());
}

#[test]
fn a_close_after_the_targets_eof_is_answered_at_once() {
    // The tunnel: the target finished first (the client got {"type":"eof"}), so nothing is awaited.
    let mut h = relaying("wsbridge.v1");
    h.target_sends(b"bye");
    h.s.handle_eof(Leg::Up, h.now);
    h.run();
    assert!(h.close().is_none());
    let now = h.now;
    h.ws().close(None, now).unwrap();
    h.run();
    assert_eq!(h.binary(), b"bye");
    assert_eq!(h.close().unwrap().code, CloseCode::NORMAL);
    assert!(h.s.is_finished());
    // Dynamic mode before the handshake: nothing to wait for.
    let mut h = Harness::new(config(), &[]);
    let now = h.now;
    h.ws().close(None, now).unwrap();
    h.run();
    assert!(h.events.iter().any(|e| matches!(e, Event::Close(_))));
    assert!(h.s.is_finished());
    assert!(h.resolves.is_empty());
}

// ---- static pages (`--console`) ----

const PAGE: &str = "<!doctype html><title>console</title><script type=\"module\">import \"./wsbridge.mjs\";</script>\n";
const MODULE: &str = "export const x = 1;\n";

fn console_config() -> Ws2TcpConfig {
    let mut c = config();
    c.static_pages = vec![
        StaticPage::html("/", PAGE),
        StaticPage::javascript("/wsbridge.mjs", MODULE),
    ];
    c
}

/// One raw request to a fresh session, fed in pieces of `chunk` bytes: what the session wrote to the
/// client (taken in full, as a runtime would) and the session.
fn raw_request(
    cfg: Ws2TcpConfig,
    request: &str,
    chunk: usize,
) -> (String, Box<dyn Session + Send>) {
    let factory = Ws2TcpFactory(Arc::new(cfg));
    let now = epoch();
    let mut s = factory.session(
        "203.0.113.7:51234".parse().unwrap(),
        Box::new(CounterEntropy(3)),
        now,
    );
    let mut out = Vec::new();
    for piece in request.as_bytes().chunks(chunk) {
        s.handle_input(Leg::Down, BytesMut::from(piece), now);
        out.extend(take(&mut *s, Leg::Down, now));
    }
    (String::from_utf8(out).unwrap(), s)
}

/// The value of header `name` in a response head (case-insensitive name).
fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let (head, _) = response.split_once("\r\n\r\n")?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

#[test]
fn get_of_a_static_page_is_answered_with_the_page_and_the_session_ends() {
    for chunk in [usize::MAX, 7, 1] {
        let (response, s) = raw_request(
            console_config(),
            "GET /?x=1 HTTP/1.1\r\nHost: gw.test\r\nAccept: text/html\r\n\r\n",
            chunk,
        );
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        let (_, body) = response.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, PAGE);
        assert_eq!(
            header(&response, "content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_eq!(
            header(&response, "content-length"),
            Some(PAGE.len().to_string().as_str())
        );
        assert_eq!(header(&response, "cache-control"), Some("no-cache"));
        assert_eq!(header(&response, "x-content-type-options"), Some("nosniff"));
        assert_eq!(header(&response, "connection"), Some("close"));
        let csp = header(&response, "content-security-policy").unwrap();
        assert!(
            csp.starts_with("default-src 'none'; script-src 'self' 'sha256-"),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self' ws: wss:"), "{csp}");
        assert!(s.is_finished(), "the session ends once the page is written");
        assert!(s.write_closed(Leg::Down));
        assert_eq!(s.end_reason(), Some(&EndReason::Normal));
    }
}

#[test]
fn the_module_and_head_requests_are_served_too() {
    let (response, _) = raw_request(
        console_config(),
        "GET /wsbridge.mjs HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        usize::MAX,
    );
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert_eq!(
        header(&response, "content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(response.ends_with(&format!("\r\n\r\n{MODULE}")));

    let (head, s) = raw_request(
        console_config(),
        "HEAD / HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        usize::MAX,
    );
    let (get, _) = raw_request(
        console_config(),
        "GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        usize::MAX,
    );
    assert!(head.ends_with("\r\n\r\n"), "HEAD gets no body: {head}");
    assert_eq!(get, format!("{head}{PAGE}"), "HEAD gets GET's head");
    assert!(s.is_finished());
}

#[test]
fn other_methods_get_405_and_other_paths_are_unchanged() {
    let (response, s) = raw_request(
        console_config(),
        "POST / HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n\r\n",
        usize::MAX,
    );
    assert!(response.starts_with("HTTP/1.1 405 "), "{response}");
    assert_eq!(header(&response, "allow"), Some("GET, HEAD"));
    assert!(s.is_finished());
    assert!(matches!(s.end_reason(), Some(EndReason::Policy(_))));

    // Not a page: the same answer as a listener without pages (the upgrade's refusal).
    for request in [
        "GET /index.html HTTP/1.1\r\nHost: gw.test\r\n\r\n",
        "POST /wsbridge HTTP/1.1\r\nHost: gw.test\r\nContent-Length: 0\r\n\r\n",
    ] {
        let (with_pages, _) = raw_request(console_config(), request, usize::MAX);
        let (without, _) = raw_request(config(), request, usize::MAX);
        assert_eq!(with_pages, without, "{request}");
        assert!(!with_pages.starts_with("HTTP/1.1 200"), "{with_pages}");
    }
    // Without pages, `/` is not served either.
    let (response, _) = raw_request(config(), "GET / HTTP/1.1\r\nHost: gw.test\r\n\r\n", 1);
    assert!(!response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(!response.contains("<!doctype html>"));
}

#[test]
fn an_upgrade_on_a_page_path_is_still_a_websocket() {
    let mut h = Harness::new(console_config(), &[]);
    assert_eq!(h.texts(), vec![GREETING.to_owned()]);
    h.handshake("public.test", serde_json::json!(7));
    assert_eq!(h.texts()[1], SUCCESS);
    h.send_text("ping\n");
    assert_eq!(h.target_rx, b"ping\n");
    h.target_sends(b"pong\n");
    assert_eq!(h.binary(), b"pong\n");
}
