//! The `control_json`, `target_policy` and `chunked_body` targets: the JSON control and handshake
//! messages of every mode, the URLs they carry, the `ws2tcp` target policy, and the chunked body decoder.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use serde_json::{json, Value};

use super::{chunks, Input};
use crate::entropy::CounterEntropy;
use crate::http::client::{BodyDecoder, BodyError, BodyKind};
use crate::http::request::Request;
use crate::session::{Action, Leg, SessionFactory};
use crate::tcp2ws::control::{self, ClientFacts, FromBackend};
use crate::url::{HttpUrl, WsUrl};
use crate::ws2http::protocol::{is_utf8_text, new_uuid, parse_uuid};
use crate::ws2http::{Allowlist, Ws2HttpConfig, Ws2HttpFactory};
use crate::ws2tcp::policy::{canonical, parse_ports, special_range, Rule, TargetPolicy};
use crate::ws2tcp::protocol::{self as ws2tcp, Handshake, TunnelControl};

// ---------------------------------------------------------------------------------------------------------
// control_json
// ---------------------------------------------------------------------------------------------------------

/// The `control_json` target: byte 0 picks the message kind, the rest is the text (lossily UTF-8).
/// Parsing never panics; what parses re-encodes to what parses the same; what we encode parses.
/// `now` is any instant (the ws2http upgrade session needs one; nothing waits).
pub fn control_json(data: &[u8], now: Instant) {
    let [which, rest @ ..] = data else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    match which % 6 {
        0 => tcp2ws_control(&text),
        1 => ws2tcp_handshake(&text),
        2 => tunnel_control(&text, rest),
        3 => urls(&text),
        4 => ws2http_upgrade(rest, now),
        _ => ws2http_misc(&text, rest),
    }
}

fn tcp2ws_control(text: &str) {
    let Ok(parsed) = FromBackend::parse(text) else {
        return;
    };
    let again = match &parsed {
        FromBackend::StartTls { reply } => json!({"type": "start_tls", "reply": reply}),
        FromBackend::Eof => json!({"type": "eof"}),
        FromBackend::Unknown(kind) => {
            assert!(
                kind != "start_tls" && kind != "eof",
                "a known type as unknown"
            );
            json!({"type": kind})
        }
    };
    assert_eq!(
        FromBackend::parse(&again.to_string()),
        Ok(parsed),
        "the control message does not round-trip"
    );
    // What the bridge sends the backend is JSON with the right type.
    for (msg, kind) in [
        (control::tls_started(text, text, Some(text)), "tls_started"),
        (control::tls_failed(text), "tls_failed"),
        (control::eof(), "eof"),
    ] {
        let v: Value = serde_json::from_str(&msg).expect("our control message is JSON");
        assert_eq!(v["type"], kind);
    }
}

fn ws2tcp_handshake(text: &str) {
    if let Ok(h) = Handshake::parse(text) {
        assert!(!h.host.is_empty() && h.host.len() <= ws2tcp::MAX_HOST_LEN);
        assert!(h.port >= 1);
        assert!(
            !h.host.starts_with('[') && !h.host.contains(['/', ' ', '@']),
            "host {:?}",
            h.host
        );
        let again =
            json!({"protocol": h.protocol.name(), "target_ip": h.host, "target_port": h.port});
        assert_eq!(
            Handshake::parse(&again.to_string()),
            Ok(h.clone()),
            "the handshake does not round-trip"
        );
        let as_string = json!({"protocol": h.protocol.name(), "target_ip": h.host, "target_port": h.port.to_string()});
        assert_eq!(Handshake::parse(&as_string.to_string()), Ok(h));
    }
    let v: Value = serde_json::from_str(&ws2tcp::failure(text)).expect("failure is JSON");
    assert_eq!(v["status"], ws2tcp::FAILURE_STATUS);
    assert_eq!(v["reason"], text);
    let v: Value = serde_json::from_str(&ws2tcp::success()).expect("success is JSON");
    assert_eq!(v["status"], ws2tcp::SUCCESS_STATUS);
    let v: Value = serde_json::from_str(ws2tcp::GREETING).expect("the greeting is JSON");
    assert!(v["supported_protocols"]["tcp"].is_object());
}

fn tunnel_control(text: &str, raw: &[u8]) {
    if let Ok(TunnelControl::Other(kind)) = TunnelControl::parse(text) {
        assert!(kind != "bridge_hello" && kind != "eof");
    }
    // What a tcp2ws sends, a ws2tcp tunnel reads.
    let mut b = [0u8; 18];
    for (i, x) in raw.iter().take(18).enumerate() {
        b[i] = *x;
    }
    let ip: IpAddr = if b[0] & 1 == 0 {
        Ipv4Addr::new(b[1], b[2], b[3], b[4]).into()
    } else {
        let mut o = [0u8; 16];
        o.copy_from_slice(&b[2..18]);
        Ipv6Addr::from(o).into()
    };
    let facts = ClientFacts {
        connection_id: text.to_owned(),
        client: SocketAddr::new(ip, u16::from_be_bytes([b[5], b[6]])),
        listener: text.to_owned(),
        tls: b[7] & 1 != 0,
        sni: (b[7] & 2 != 0).then(|| text.to_owned()),
    };
    let hello = control::bridge_hello(&facts);
    let truncated: String = text.chars().take(64).collect();
    assert_eq!(
        TunnelControl::parse(&hello),
        Ok(TunnelControl::Hello {
            client: format!("{}:{}", ip, facts.client.port()),
            connection_id: truncated,
        })
    );
    assert_eq!(
        TunnelControl::parse(&control::eof()),
        Ok(TunnelControl::Eof)
    );
    assert!(matches!(
        FromBackend::parse(&hello),
        Ok(FromBackend::Unknown(k)) if k == "bridge_hello"
    ));
}

fn urls(text: &str) {
    if let Ok(u) = HttpUrl::parse(text) {
        let shown = u.to_string();
        assert_eq!(
            HttpUrl::parse(&shown).as_ref(),
            Ok(&u),
            "{text:?} is shown as {shown:?}, which does not parse back"
        );
        assert!(u.path_and_query().starts_with('/'));
        assert!(u.port() >= 1);
        assert!(!u.host().is_empty());
        // What the allowlist matches is what is dialled.
        let list = Allowlist::new(
            &[r"https?://[a-z0-9.-]+(:[0-9]+)?/.*".into()],
            &["example.com".into()],
        )
        .expect("a valid allowlist");
        if list.allows(&u) {
            assert!(
                !u.host().contains([':', '/', '@', '[']) || u.host().parse::<Ipv6Addr>().is_ok(),
                "allowed host {:?}",
                u.host()
            );
        }
    }
    if let Ok(u) = WsUrl::parse(text) {
        let shown = u.to_string();
        assert_eq!(
            WsUrl::parse(&shown).as_ref(),
            Ok(&u),
            "{text:?} is shown as {shown:?}, which does not parse back"
        );
    }
}

/// Percent-encodes everything but unreserved characters.
fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A `ws2http` upgrade with the input as its query and (after a NUL) an on-frame header value: the
/// session answers 101 exactly when the on-frame and on-disconnect URLs it extracts (query first, then
/// the headers) parse and are allow-listed, and only then registers.
fn ws2http_upgrade(raw: &[u8], now: Instant) {
    let (query, header) = match raw.iter().position(|&b| b == 0) {
        Some(i) => (&raw[..i], Some(&raw[i + 1..])),
        None => (raw, None),
    };
    let query = String::from_utf8_lossy(query);
    if query.bytes().any(|b| !b.is_ascii_graphic()) {
        return;
    }
    let mut head = format!(
        "GET /connect?{query} HTTP/1.1\r\nHost: bridge.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    )
    .into_bytes();
    if let Some(h) = header {
        if h.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
            return;
        }
        head.extend_from_slice(b"ws-bridge-on-disconnect: ");
        head.extend_from_slice(h);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let Ok(req) = Request::parse(&head, 64) else {
        return;
    };
    // Query parameters decode to what encodes back to them.
    for key in ["f", "d"] {
        if let Some(v) = req.query_param(key) {
            let again = format!("GET /c?{key}={} HTTP/1.1\r\n\r\n", form_encode(&v));
            let r2 = Request::parse(again.as_bytes(), 4).expect("an encoded query parses");
            assert_eq!(
                r2.query_param(key),
                Some(v),
                "the query does not round-trip"
            );
        }
    }
    let allowlist = Allowlist::new(
        &[r"http://backend\.test/.*".into()],
        &["example.com".into()],
    )
    .expect("a valid allowlist");
    let url = |param: &str, header: &str, legacy: &str| {
        req.query_param(param)
            .or_else(|| req.headers.get_str(header).map(str::to_owned))
            .or_else(|| req.headers.get_str(legacy).map(str::to_owned))
            .and_then(|raw| HttpUrl::parse(&raw).ok())
            .filter(|u| allowlist.allows(u))
    };
    let expect_ok = url("f", "ws-bridge-on-frame", "x-ws-proxy-on-frame").is_some()
        && url("d", "ws-bridge-on-disconnect", "x-ws-proxy-on-disconnect").is_some();
    let mut cfg = Ws2HttpConfig::new(Ws2HttpConfig::DEFAULT_LISTEN);
    cfg.allowlist = allowlist;
    let factory = Ws2HttpFactory(Arc::new(cfg));
    let mut s = factory.session(
        "203.0.113.7:5".parse().expect("an address"),
        Box::new(CounterEntropy(1)),
        now,
    );
    s.handle_input(Leg::Down, BytesMut::from(&head[..]), now);
    let mut registered = false;
    while let Some(a) = s.poll_action() {
        registered |= matches!(a, Action::Register(_));
    }
    let mut slots = [std::io::IoSlice::new(&[]); 8];
    let k = s.slices(Leg::Down, &mut slots);
    let out: Vec<u8> = slots[..k].iter().flat_map(|s| s.iter().copied()).collect();
    let upgraded = out.starts_with(b"HTTP/1.1 101 ");
    assert_eq!(
        upgraded,
        expect_ok,
        "upgrade {:?} answered {:?}",
        String::from_utf8_lossy(&head),
        String::from_utf8_lossy(&out[..out.len().min(80)])
    );
    assert_eq!(registered, upgraded, "registered without upgrading");
    if !upgraded {
        assert!(
            out.starts_with(b"HTTP/1.1 400 ") || out.starts_with(b"HTTP/1.1 403 "),
            "{:?}",
            String::from_utf8_lossy(&out[..out.len().min(80)])
        );
    }
}

/// The `/send` content type rule, written again from its definition.
fn reference_is_utf8_text(ct: &str) -> bool {
    let ws = |s: &str| s.trim_matches([' ', '\t']).to_owned();
    let mut parts = ct.split(';');
    if !ws(parts.next().unwrap_or("")).eq_ignore_ascii_case("text/plain") {
        return false;
    }
    let params: Vec<&str> = parts.collect();
    if params.len() != 1 {
        return false;
    }
    let Some((name, value)) = params[0].split_once('=') else {
        return false;
    };
    let value = ws(value);
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(&value);
    ws(name).eq_ignore_ascii_case("charset") && value.eq_ignore_ascii_case("utf-8")
}

fn ws2http_misc(text: &str, raw: &[u8]) {
    let got = is_utf8_text(Some(raw));
    match std::str::from_utf8(raw) {
        Ok(ct) => assert_eq!(got, reference_is_utf8_text(ct), "content type {ct:?}"),
        Err(_) => assert!(!got, "a content type that is not UTF-8 is text"),
    }
    if let Some(id) = parse_uuid(text) {
        assert_eq!(id, text.to_ascii_lowercase());
        assert_eq!(parse_uuid(&id), Some(id.clone()));
    }
    let seed = raw
        .iter()
        .fold(0u64, |a, &b| a.rotate_left(8) ^ u64::from(b));
    let uuid = new_uuid(&mut CounterEntropy(seed));
    assert_eq!(parse_uuid(&uuid), Some(uuid.clone()));
    assert_eq!(uuid.as_bytes()[14], b'4', "not a v4 UUID: {uuid}");
}

// ---------------------------------------------------------------------------------------------------------
// target_policy
// ---------------------------------------------------------------------------------------------------------

/// Rule texts the fuzzer combines: odd spellings included.
const RULE_TEXTS: [&str; 16] = [
    "10.0.0.0/8",
    "127.0.0.1",
    "8.8.0.0/16:1-1000",
    "[2001:db8::/32]:443",
    "2001:db8::/32:80,443",
    "::ffff:10.0.0.0/104",
    "0.0.0.0/0",
    "::/0",
    "169.254.169.254:80",
    "fe80::/10",
    "1.2.3.4/33",
    "1.2.3.4:0",
    "[::1]",
    "8.8.8.8:22-21",
    "192.168.0.0/16 ",
    "::ffff:127.0.0.1/128",
];

/// One address and port from 19 input bytes, biased towards the special ranges and their mapped forms.
fn address(input: &mut Input<'_>) -> SocketAddr {
    let kind = input.u8();
    let mut o = [0u8; 16];
    for x in &mut o {
        *x = input.u8();
    }
    let port = input.u16();
    let v4 = Ipv4Addr::new(o[0], o[1], o[2], o[3]);
    let v4 = match kind >> 4 {
        0 => Ipv4Addr::new(127, o[1], o[2], o[3]),
        1 => Ipv4Addr::new(10, o[1], o[2], o[3]),
        2 => Ipv4Addr::new(169, 254, o[2], o[3]),
        3 => Ipv4Addr::new(192, 168, o[2], o[3]),
        4 => Ipv4Addr::new(172, 16 | (o[1] & 15), o[2], o[3]),
        5 => Ipv4Addr::new(224 | (o[0] & 15), o[1], o[2], o[3]),
        6 => Ipv4Addr::new(0, o[1], o[2], o[3]),
        7 => Ipv4Addr::BROADCAST,
        _ => v4,
    };
    let ip: IpAddr = match kind & 7 {
        0 | 1 => v4.into(),
        2 => v4.to_ipv6_mapped().into(),
        3 => v4.to_ipv6_compatible().into(),
        4 => {
            // NAT64 and 6to4 forms.
            let b = u32::from(v4);
            if kind & 8 != 0 {
                Ipv6Addr::from((0x0064_ff9b_u128 << 96) | u128::from(b)).into()
            } else {
                Ipv6Addr::from((0x2002_u128 << 112) | (u128::from(b) << 80)).into()
            }
        }
        5 => {
            let mut v6 = Ipv6Addr::from(o);
            if kind & 8 != 0 {
                let s = v6.segments();
                v6 = Ipv6Addr::new(0xfe80, 0, 0, 0, s[4], s[5], s[6], s[7]);
            }
            v6.into()
        }
        6 => [
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::UNSPECIFIED,
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
        ][usize::from(o[0] % 3)]
        .into(),
        _ => Ipv6Addr::from(o).into(),
    };
    SocketAddr::new(ip, port)
}

/// What the default policy must refuse, from std's classification (independent of the core's table).
fn must_deny_by_default(ip: IpAddr) -> bool {
    let v4_special = |v4: Ipv4Addr| {
        v4.is_loopback()
            || v4.is_private()
            || v4.is_link_local()
            || v4.is_unspecified()
            || v4.is_multicast()
            || v4.is_broadcast()
            || v4.is_documentation()
            || v4.octets()[0] == 0
    };
    match ip {
        IpAddr::V4(v4) => v4_special(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return v4_special(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xffc0) == 0xfe80 // link-local
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] && {
                    let b = u128::from(v6) as u32;
                    v4_special(Ipv4Addr::from(b))
                })
                || (s[0] == 0x2002 && v4_special(Ipv4Addr::from((u128::from(v6) >> 80) as u32)))
                || (s[..6] == [0; 6] && v4_special(Ipv4Addr::from(u128::from(v6) as u32)))
        }
    }
}

/// A reference rule match: the block and the port list, compared bit by bit.
fn reference_matches(rule: &Rule, ip: IpAddr, port: u16) -> bool {
    let bits = |ip: IpAddr| -> (u128, u8) {
        match ip {
            IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32),
            IpAddr::V6(v6) => (u128::from(v6), 128),
        }
    };
    let (a, width) = bits(ip);
    let (n, nwidth) = bits(rule.net);
    if width != nwidth {
        return false;
    }
    let same = (0..u32::from(rule.prefix)).all(|i| {
        let bit = u32::from(width) - 1 - i;
        (a >> bit) & 1 == (n >> bit) & 1
    });
    same && (rule.ports.is_empty() || rule.ports.iter().any(|r| r.lo <= port && port <= r.hi))
}

/// The `target_policy` target: byte 0 picks rules from [`RULE_TEXTS`] for allow and deny (or, in its
/// top bit, parses the following text as one rule), then addresses are checked against the policy, the
/// default policy, and a reference written from the module docs.
pub fn target_policy(data: &[u8]) {
    let mut input = Input(data);
    let pick = input.u8();
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    if pick & 0x80 != 0 {
        let n = usize::from(input.u8() % 64);
        let text = String::from_utf8_lossy(input.bytes(n)).into_owned();
        if let Ok(rule) = Rule::parse(&text) {
            // A rule parses back from its display.
            let shown = rule.to_string();
            assert_eq!(
                Rule::parse(&shown).as_ref(),
                Ok(&rule),
                "{text:?} shown as {shown:?}"
            );
            assert!(rule.prefix <= if rule.net.is_ipv4() { 32 } else { 128 });
            assert!(rule.ports.iter().all(|r| 1 <= r.lo && r.lo <= r.hi));
            assert_eq!(canonical(rule.net), rule.net, "a rule net is not canonical");
        }
        if let Ok(ports) = parse_ports(&text) {
            assert!(!ports.is_empty());
        }
        if input.u8() & 1 == 0 {
            allow.push(text);
        } else {
            deny.push(text);
        }
    }
    let mask = input.u16();
    for (i, t) in RULE_TEXTS.iter().enumerate() {
        if mask & (1 << i) != 0 {
            if pick & (1 << (i % 7)) != 0 {
                deny.push((*t).to_owned());
            } else {
                allow.push((*t).to_owned());
            }
        }
    }
    let Ok(policy) = TargetPolicy::parse(&allow, &deny) else {
        return;
    };
    let default = TargetPolicy::default();
    while !input.is_empty() {
        let addr = address(&mut input);
        let ip = canonical(addr.ip());
        let port = addr.port();
        let verdict = policy.check(addr);
        let denied_by_rule = policy.deny.iter().any(|r| reference_matches(r, ip, port));
        let allowed_by_rule = policy.allow.iter().any(|r| reference_matches(r, ip, port));
        let reference = port != 0
            && !denied_by_rule
            && if policy.allow.is_empty() {
                special_range(ip).is_none()
            } else {
                allowed_by_rule
            };
        assert_eq!(
            verdict.is_ok(),
            reference,
            "{addr} with allow {allow:?} deny {deny:?}: {verdict:?}"
        );
        if denied_by_rule {
            assert!(verdict.is_err(), "a denied range did not win");
        }
        // The default policy never lets a special address through, in any spelling.
        if must_deny_by_default(addr.ip()) {
            assert!(
                default.check(addr).is_err(),
                "the default policy allows {addr}"
            );
            assert!(special_range(addr.ip()).is_some());
        }
        assert_eq!(
            special_range(addr.ip()),
            special_range(ip),
            "a mapped form is classified differently"
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// chunked_body
// ---------------------------------------------------------------------------------------------------------

/// Decodes a whole stream fed in `pieces`; the body, and what was left after it.
fn decode_body(pieces: &[&[u8]], max: usize) -> (Result<Vec<u8>, BodyError>, Vec<u8>) {
    let mut d = BodyDecoder::new(BodyKind::Chunked, max).expect("chunked has no declared length");
    let mut left = BytesMut::new();
    for piece in pieces {
        left.extend_from_slice(piece);
        match d.feed(&mut left) {
            Ok(true) => break,
            Ok(false) => assert!(left.is_empty(), "bytes left over before the end"),
            Err(e) => return (Err(e), Vec::new()),
        }
    }
    if !d.is_done() {
        return (d.finish_eof().map(|_| Vec::new()), Vec::new());
    }
    // What follows the body (in the pieces fed so far) stays.
    let body = d.take_body().to_vec();
    assert!(body.len() <= max, "the body exceeds the cap");
    (Ok(body), left.to_vec())
}

/// The `chunked_body` target: byte 0 picks the feeding pattern, byte 1 the cap and the encoding's
/// quirks, then a body and chunk sizes. Our own chunked encoding of the body (any chunk sizes, upper or
/// lower case hex, leading zeros, extensions, trailers) decodes to the body whatever the feeding, and
/// exactly when it fits the cap; arbitrary bytes decode the same whatever the feeding.
pub fn chunked_body(data: &[u8]) {
    let mut input = Input(data);
    let pattern = input.u8();
    let flags = input.u8();
    let max = [16usize, 100, 1000, 1 << 16][usize::from(flags & 3)];
    if flags & 0x80 != 0 {
        // Raw bytes: the feeding must not show.
        let raw = input.bytes(usize::MAX);
        let whole = decode_body(&[raw], max).0;
        let fed = decode_body(&chunks(raw, pattern), max).0;
        assert_eq!(whole, fed, "the feeding of the input showed");
        return;
    }
    let body_len = usize::from(input.u16() % 4096);
    let body: Vec<u8> = (0..body_len).map(|i| (i * 7 + 3) as u8).collect();
    let mut stream = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let n = (usize::from(input.u8()) + 1).min(rest.len());
        let size = if flags & 4 != 0 {
            format!("{n:X}")
        } else {
            format!("{n:x}")
        };
        if flags & 8 != 0 {
            stream.extend_from_slice(b"00");
        }
        stream.extend_from_slice(size.as_bytes());
        if flags & 0x10 != 0 {
            stream.extend_from_slice(b";ext=\"v\"");
        }
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(&rest[..n]);
        stream.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    stream.extend_from_slice(b"0\r\n");
    if flags & 0x20 != 0 {
        stream.extend_from_slice(b"X-Trailer: yes\r\n");
    }
    stream.extend_from_slice(b"\r\n");
    let end = stream.len();
    stream.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    let (result, after) = decode_body(&chunks(&stream, pattern), max);
    let (whole, after_whole) = decode_body(&[&stream], max);
    assert_eq!(result, whole, "the feeding of the input showed");
    if body.len() <= max {
        assert_eq!(result, Ok(body), "the body did not decode to itself");
        assert_eq!(
            after_whole,
            &stream[end..],
            "what follows the body was lost"
        );
        assert!(
            stream[end..].starts_with(&after),
            "what follows the body was lost"
        );
    } else {
        assert_eq!(result, Err(BodyError::TooLarge));
    }
}
