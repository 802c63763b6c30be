//! The PROXY protocol in the core: the header parser and writers (fixed cases, proptest chunking and
//! round trips), and the `ProxyProtocol` factory wrapper on virtual time.

#[allow(dead_code)] // drain_ws: WebSocket peers are not needed here
mod common;

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;

use common::{epoch, take};
use proptest::prelude::*;
use wsbridge_core::proxy::header::{V1_MAX, V2_SIGNATURE};
use wsbridge_core::proxy::{
    encode_v1, encode_v2, parse, Addresses, HeaderReader, ProxyAccept, ProxyError, ProxyHeader,
    ProxyProtocol, Version,
};
use wsbridge_core::session::{
    new_connection_id, Action, EndReason, Leg, Session, SessionFactory, Traffic,
};
use wsbridge_core::tcp2ws::{Tcp2WsConfig, Tcp2WsFactory};
use wsbridge_core::url::WsUrl;
use wsbridge_core::{CounterEntropy, Entropy};

const MAX: usize = 2048;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn proxied(version: Version, src: &str, dst: &str) -> ProxyHeader {
    ProxyHeader {
        version,
        addresses: Addresses::Proxied {
            source: sa(src),
            destination: sa(dst),
        },
    }
}

/// Parses a whole header followed by `tail`; checks the length it reports.
fn parse_all(header: &[u8], tail: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let mut buf = header.to_vec();
    buf.extend_from_slice(tail);
    match parse(&buf, MAX)? {
        Some((h, n)) => {
            assert_eq!(n, header.len(), "header length");
            Ok(h)
        }
        None => Err(ProxyError::Truncated),
    }
}

fn v2(ver_cmd: u8, family: u8, block: &[u8]) -> Vec<u8> {
    let mut out = V2_SIGNATURE.to_vec();
    out.push(ver_cmd);
    out.push(family);
    out.extend_from_slice(&(block.len() as u16).to_be_bytes());
    out.extend_from_slice(block);
    out
}

#[test]
fn v1_headers_parse() {
    let h = b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 995\r\n";
    assert_eq!(
        parse_all(h, b"EHLO x\r\n"),
        Ok(proxied(Version::V1, "203.0.113.7:51234", "192.0.2.1:995"))
    );
    let h = b"PROXY TCP6 2001:db8::7 ::1 1 65535\r\n";
    assert_eq!(
        parse_all(h, b""),
        Ok(proxied(Version::V1, "[2001:db8::7]:1", "[::1]:65535"))
    );
    for unknown in [
        &b"PROXY UNKNOWN\r\n"[..],
        b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
    ] {
        let h = parse_all(unknown, b"x").unwrap();
        assert_eq!((h.version, h.addresses), (Version::V1, Addresses::Local));
        assert_eq!(h.source(), None);
    }
    // The longest possible v1 header is exactly 107 bytes.
    let longest = format!(
        "PROXY UNKNOWN {:<width$}\r\n",
        "x",
        width = V1_MAX - "PROXY UNKNOWN \r\n".len()
    );
    assert_eq!(longest.len(), V1_MAX);
    assert!(parse_all(longest.as_bytes(), b"").is_ok());
}

#[test]
fn v1_refusals_name_the_problem() {
    let cases: &[(&[u8], ProxyError)] = &[
        (b"GET / HTTP/1.1\r\n\r\n", ProxyError::NotProxy),
        (b"\x16\x03\x01\x02\x00", ProxyError::NotProxy),
        (b"PROXZ TCP4", ProxyError::NotProxy),
        (b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n", ProxyError::NotProxy),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            ProxyError::V1Malformed("LF without CR"),
        ),
        (
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            ProxyError::V1Malformed("protocol is not TCP4, TCP6 or UNKNOWN"),
        ),
        (
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            ProxyError::V1Malformed("expected exactly: protocol, two addresses, two ports"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            ProxyError::V1Malformed("expected exactly: protocol, two addresses, two ports"),
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            ProxyError::V1Malformed("expected exactly: protocol, two addresses, two ports"),
        ),
        // Ports: range, leading zeros, signs, empty.
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            ProxyError::BadPort,
        ),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            ProxyError::BadPort,
        ),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", ProxyError::BadPort),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", ProxyError::BadPort),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", ProxyError::BadPort),
        (
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 0x10\r\n",
            ProxyError::BadPort,
        ),
        // Mixed families and bad addresses.
        (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", ProxyError::BadAddress),
        (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", ProxyError::BadAddress),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", ProxyError::BadAddress),
        (
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            ProxyError::BadAddress,
        ),
        (
            b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
            ProxyError::BadAddress,
        ),
        (b"PROXY TCP6 [::1] ::1 1 2\r\n", ProxyError::BadAddress),
    ];
    for (input, want) in cases {
        assert_eq!(
            parse(input, MAX),
            Err(want.clone()),
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    // No CRLF in 107 bytes: refused at byte 107, whatever follows.
    let mut long = b"PROXY TCP4 ".to_vec();
    long.resize(V1_MAX - 1, b'1');
    assert_eq!(parse(&long, MAX), Ok(None), "106 bytes: may still end");
    long.push(b'1');
    assert_eq!(parse(&long, MAX), Err(ProxyError::V1TooLong));
    long.extend_from_slice(b"\r\n");
    assert_eq!(parse(&long, MAX), Err(ProxyError::V1TooLong));
    // Prefixes wait for more.
    for n in 0..b"PROXY TCP4 1.2.3.4".len() {
        assert_eq!(parse(&b"PROXY TCP4 1.2.3.4"[..n], MAX), Ok(None), "{n}");
    }
}

#[test]
fn v2_headers_parse() {
    let mut block = vec![203, 0, 113, 7, 192, 0, 2, 1];
    block.extend_from_slice(&51234u16.to_be_bytes());
    block.extend_from_slice(&995u16.to_be_bytes());
    let h = v2(0x21, 0x11, &block);
    assert_eq!(
        parse_all(&h, b"rest"),
        Ok(proxied(Version::V2, "203.0.113.7:51234", "192.0.2.1:995"))
    );

    // With TLVs (ALPN "h2", a NOOP with 3 bytes of padding): skipped.
    let mut with_tlvs = block.clone();
    with_tlvs.extend_from_slice(&[0x01, 0, 2, b'h', b'2', 0x04, 0, 3, 0, 0, 0]);
    assert_eq!(
        parse_all(&v2(0x21, 0x11, &with_tlvs), b""),
        Ok(proxied(Version::V2, "203.0.113.7:51234", "192.0.2.1:995"))
    );

    // LOCAL (health checks): addresses ignored, whatever family is claimed.
    for (family, block) in [(0x00, &[][..]), (0x11, &block[..]), (0x12, &[1, 2][..])] {
        let h = parse_all(&v2(0x20, family, block), b"x").unwrap();
        assert_eq!(h.addresses, Addresses::Local, "family {family:#x}");
    }
    // PROXY with AF_UNSPEC or AF_UNIX: keep the socket's peer.
    assert_eq!(
        parse_all(&v2(0x21, 0x00, &[]), b"").unwrap().addresses,
        Addresses::Local
    );
    assert_eq!(
        parse_all(&v2(0x21, 0x31, &[0; 216]), b"")
            .unwrap()
            .addresses,
        Addresses::Local
    );
}

#[test]
fn v2_refusals_name_the_problem() {
    let block4 = [1u8, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
    let mut bad_sig = v2(0x21, 0x11, &block4);
    bad_sig[11] = b'X';
    let mut tlv_overrun = block4.to_vec();
    tlv_overrun.extend_from_slice(&[0x01, 0, 5, b'h']);
    let mut tlv_short_head = block4.to_vec();
    tlv_short_head.extend_from_slice(&[0x01, 0]);
    let cases: Vec<(Vec<u8>, ProxyError)> = vec![
        (bad_sig, ProxyError::NotProxy),
        (b"\r\n\r\nGET".to_vec(), ProxyError::NotProxy),
        (v2(0x11, 0x11, &block4), ProxyError::V2Version(1)),
        (v2(0x31, 0x11, &block4), ProxyError::V2Version(3)),
        (v2(0x22, 0x11, &block4), ProxyError::V2Command(2)),
        (v2(0x21, 0x12, &block4), ProxyError::V2Family(0x12)),
        (v2(0x21, 0x41, &block4), ProxyError::V2Family(0x41)),
        (v2(0x21, 0x13, &block4), ProxyError::V2Family(0x13)),
        (v2(0x21, 0x11, &block4[..11]), ProxyError::V2ShortAddresses),
        (v2(0x21, 0x21, &block4), ProxyError::V2ShortAddresses),
        (v2(0x21, 0x11, &tlv_overrun), ProxyError::V2BadTlv),
        (v2(0x21, 0x11, &tlv_short_head), ProxyError::V2BadTlv),
        (
            v2(0x21, 0x11, &vec![0; 4000]),
            ProxyError::TooLong {
                len: 4016,
                max: MAX,
            },
        ),
    ];
    for (input, want) in cases {
        assert_eq!(parse(&input, MAX), Err(want.clone()), "{want}");
    }
    // The length is refused as soon as the fixed part is in, before the block arrives.
    let huge = v2(0x21, 0x11, &vec![0; 60000]);
    assert!(matches!(
        parse(&huge[..16], MAX),
        Err(ProxyError::TooLong { len: 60016, .. })
    ));
    // Truncated: every prefix of a good header waits; the end of the stream then refuses it.
    let good = v2(0x21, 0x11, &block4);
    for n in 0..good.len() {
        assert_eq!(parse(&good[..n], MAX), Ok(None), "prefix {n}");
        let mut r = HeaderReader::new(MAX);
        assert_eq!(r.feed(&good[..n]), Ok(None));
        assert_eq!(r.finish(), Err(ProxyError::Truncated));
    }
}

#[test]
fn encoders_write_what_the_specification_shows() {
    assert_eq!(
        &encode_v1(sa("203.0.113.7:51234"), sa("192.0.2.1:995"))[..],
        b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 995\r\n"
    );
    assert_eq!(
        &encode_v1(sa("[2001:db8::7]:1"), sa("[::1]:2"))[..],
        b"PROXY TCP6 2001:db8::7 ::1 1 2\r\n"
    );
    // IPv4-mapped IPv6 (a dual-stack listener's peers) is written as IPv4; a real mix as IPv6.
    assert_eq!(
        &encode_v1(sa("[::ffff:10.0.0.1]:5"), sa("10.0.0.2:6"))[..],
        b"PROXY TCP4 10.0.0.1 10.0.0.2 5 6\r\n"
    );
    assert_eq!(
        &encode_v1(sa("10.0.0.1:5"), sa("[2001:db8::1]:6"))[..],
        b"PROXY TCP6 ::ffff:10.0.0.1 2001:db8::1 5 6\r\n"
    );
    let mut want = V2_SIGNATURE.to_vec();
    want.extend_from_slice(&[
        0x21, 0x11, 0, 12, 203, 0, 113, 7, 192, 0, 2, 1, 0xc8, 0x22, 0x03, 0xe3,
    ]);
    assert_eq!(
        &encode_v2(sa("203.0.113.7:51234"), sa("192.0.2.1:995"))[..],
        &want[..]
    );
    assert_eq!(encode_v2(sa("[::1]:1"), sa("[::2]:2")).len(), 16 + 36);
}

fn any_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
        (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| SocketAddr::from((ip, port))),
    ]
}

/// What a writer should read back: the same addresses in the family the writer chose.
fn expected(src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canon = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (s, d) = (canon(src), canon(dst));
    if s.is_ipv4() && d.is_ipv4() {
        return (s, d);
    }
    let v6 = |a: SocketAddr| match a.ip() {
        std::net::IpAddr::V4(ip) => SocketAddr::new(ip.to_ipv6_mapped().into(), a.port()),
        _ => a,
    };
    (v6(s), v6(d))
}

/// Splits `data` at the given cut points (taken modulo its length).
fn chunked(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for p in points.into_iter().chain([data.len()]) {
        out.push(data[at..p].to_vec());
        at = p;
    }
    out
}

/// Feeds chunks until an answer; returns it and everything after the header (the rest of the stream).
fn read_chunked(chunks: &[Vec<u8>]) -> Result<Option<(ProxyHeader, Vec<u8>)>, ProxyError> {
    let mut r = HeaderReader::new(MAX);
    for (i, c) in chunks.iter().enumerate() {
        if let Some((h, rest)) = r.feed(c)? {
            let mut after = rest.to_vec();
            for c in &chunks[i + 1..] {
                after.extend_from_slice(c);
            }
            return Ok(Some((h, after)));
        }
    }
    Ok(None)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trips_v1_and_v2(src in any_addr(), dst in any_addr(), tail in proptest::collection::vec(any::<u8>(), 0..64), cuts in proptest::collection::vec(any::<usize>(), 0..6)) {
        let (s, d) = expected(src, dst);
        for (version, bytes) in [(Version::V1, encode_v1(src, dst)), (Version::V2, encode_v2(src, dst))] {
            if version == Version::V1 {
                prop_assert!(bytes.len() <= V1_MAX);
            }
            let mut stream = bytes.to_vec();
            stream.extend_from_slice(&tail);
            let (h, after) = read_chunked(&chunked(&stream, &cuts)).unwrap().expect("complete");
            prop_assert_eq!(h.version, version);
            prop_assert_eq!(h.addresses, Addresses::Proxied { source: s, destination: d });
            prop_assert_eq!(after, tail.clone());
        }
    }

    /// Any bytes, any chunking: the same answer as all at once (and the same rest).
    #[test]
    fn any_chunking_gives_the_same_answer(
        head in prop_oneof![
            Just(b"PROXY ".to_vec()),
            Just(V2_SIGNATURE[..12].to_vec()),
            Just(b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\r\n".to_vec()),
            Just(Vec::new()),
        ],
        body in proptest::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n'), Just(b' '), Just(0x21), Just(0x11)], 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = head;
        stream.extend_from_slice(&body);
        let whole = read_chunked(std::slice::from_ref(&stream));
        let pieces = read_chunked(&chunked(&stream, &cuts));
        prop_assert_eq!(pieces, whole);
    }
}

// ---------------------------------------------------------------------------------------------------
// The factory wrapper
// ---------------------------------------------------------------------------------------------------

/// What the recording sessions saw: the peer each was made with, and the Down bytes it got.
type Seen = Arc<Mutex<Vec<(SocketAddr, Instant, Vec<u8>)>>>;

/// A mode that notes its peer and echoes nothing; finished at the client's EOF.
struct Recorder {
    seen: Seen,
    index: usize,
    id: String,
    done: bool,
}

impl Session for Recorder {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, _: Instant) {
        assert_eq!(leg, Leg::Down);
        self.seen.lock().unwrap()[self.index]
            .2
            .extend_from_slice(&data);
    }
    fn handle_eof(&mut self, _: Leg, _: Instant) {
        self.done = true;
    }
    fn handle_io_error(&mut self, _: Leg, _: std::io::ErrorKind, _: Instant) {}
    fn handle_resolved(&mut self, _: Result<Vec<SocketAddr>, String>, _: Instant) {}
    fn handle_connected(&mut self, _: Instant) {}
    fn handle_connect_failed(&mut self, _: std::io::ErrorKind, _: Instant) {}
    fn handle_timeout(&mut self, _: Instant) {}
    fn handle_shutdown(&mut self, _: Instant) {
        self.done = true;
    }
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
        self.done
    }
    fn connection_id(&self) -> &str {
        &self.id
    }
    fn end_reason(&self) -> Option<&EndReason> {
        self.done.then_some(&EndReason::Normal)
    }
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
    fn established(&self) -> Option<Instant> {
        None
    }
}

struct RecorderFactory(Seen);

impl SessionFactory for RecorderFactory {
    fn session(
        &self,
        peer: SocketAddr,
        mut entropy: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        let id = new_connection_id(&mut *entropy);
        let mut seen = self.0.lock().unwrap();
        seen.push((peer, now, Vec::new()));
        Box::new(Recorder {
            seen: self.0.clone(),
            index: seen.len() - 1,
            id,
            done: false,
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
        "recorder"
    }
}

const SOCKET_PEER: &str = "127.0.0.1:40000";

fn wrapped() -> (ProxyProtocol<RecorderFactory>, Seen) {
    let seen = Seen::default();
    let cfg = ProxyAccept {
        header_timeout: Duration::from_secs(5),
        max_header: 256,
    };
    (
        ProxyProtocol::new(Arc::new(RecorderFactory(seen.clone())), cfg),
        seen,
    )
}

#[test]
fn the_mode_session_gets_the_header_address_the_accept_instant_the_id_and_the_rest() {
    let t0 = epoch();
    let (factory, seen) = wrapped();
    let mut s = factory.session(sa(SOCKET_PEER), Box::new(CounterEntropy(7)), t0);
    let want_id = new_connection_id(&mut CounterEntropy(7));
    assert_eq!(
        s.connection_id(),
        want_id,
        "the id is known before the header"
    );
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    assert!(s.wants_read(Leg::Down) && !s.wants_read(Leg::Up));

    let stream = [
        &encode_v2(sa("198.51.100.9:6000"), sa("192.0.2.1:443"))[..],
        b"hello",
    ]
    .concat();
    let t1 = t0 + Duration::from_millis(30);
    assert_eq!(
        s.client(),
        None,
        "no header yet: the socket's peer is the client"
    );
    for (i, b) in stream.iter().enumerate() {
        s.handle_input(Leg::Down, BytesMut::from(&[*b][..]), t1);
        let made = seen.lock().unwrap().len();
        assert_eq!(made, usize::from(i >= 27), "made at byte {i}");
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen, vec![(sa("198.51.100.9:6000"), t0, b"hello".to_vec())]);
    assert_eq!(
        s.client(),
        Some(sa("198.51.100.9:6000")),
        "what the runtime logs"
    );
    assert_eq!(
        s.connection_id(),
        want_id,
        "the mode's session drew the same id"
    );
    assert_eq!(s.poll_timeout(), None, "the mode's timers now");
    s.handle_eof(Leg::Down, t1);
    assert!(s.is_finished());
    assert_eq!(s.end_reason(), Some(&EndReason::Normal));
}

#[test]
fn local_and_unknown_keep_the_socket_peer() {
    for header in [
        b"PROXY UNKNOWN\r\n".to_vec(),
        [&V2_SIGNATURE[..], &[0x20, 0x00, 0, 0]].concat(),
    ] {
        let (factory, seen) = wrapped();
        let mut s = factory.session(sa(SOCKET_PEER), Box::new(CounterEntropy(1)), epoch());
        s.handle_input(Leg::Down, BytesMut::from(&header[..]), epoch());
        assert_eq!(seen.lock().unwrap()[0].0, sa(SOCKET_PEER));
        assert_eq!(seen.lock().unwrap()[0].2, b"");
        assert_eq!(s.client(), None);
    }
}

#[test]
fn bad_headers_eof_and_silence_end_the_session_without_a_mode_session() {
    let t0 = epoch();
    type Script = Box<dyn Fn(&mut dyn Session)>;
    let cases: Vec<(Script, EndReason)> = vec![
        (
            Box::new(move |s| {
                s.handle_input(Leg::Down, BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]), t0)
            }),
            EndReason::PeerError(
                Leg::Down,
                "PROXY header: no PROXY protocol header (bad signature)".into(),
            ),
        ),
        (
            Box::new(move |s| {
                s.handle_input(Leg::Down, BytesMut::from(&b"PROXY TCP4 1.2.3.4"[..]), t0);
                s.handle_eof(Leg::Down, t0);
            }),
            EndReason::PeerError(
                Leg::Down,
                "PROXY header: connection ended inside the header".into(),
            ),
        ),
        (
            Box::new(move |s| {
                let huge = [&V2_SIGNATURE[..], &[0x21, 0x11, 0x01, 0x00]].concat();
                s.handle_input(Leg::Down, BytesMut::from(&huge[..]), t0);
            }),
            EndReason::PeerError(
                Leg::Down,
                "PROXY header: header of 272 bytes is over the limit of 256".into(),
            ),
        ),
        (
            Box::new(move |s| {
                s.handle_input(Leg::Down, BytesMut::from(&b"PROXY "[..]), t0);
                s.handle_timeout(t0 + Duration::from_millis(4999));
                assert!(!s.is_finished(), "not before the deadline");
                s.handle_timeout(t0 + Duration::from_secs(5));
            }),
            EndReason::Timeout("PROXY header"),
        ),
        (
            Box::new(move |s| s.handle_shutdown(t0)),
            EndReason::Shutdown,
        ),
    ];
    for (script, want) in cases {
        let (factory, seen) = wrapped();
        let mut s = factory.session(sa(SOCKET_PEER), Box::new(CounterEntropy(1)), t0);
        script(&mut *s);
        assert!(s.is_finished(), "{want}");
        assert_eq!(s.end_reason(), Some(&want));
        assert_eq!(take(&mut *s, Leg::Down, t0), b"", "nothing written");
        assert_eq!(s.poll_action(), None);
        assert_eq!(s.poll_timeout(), None);
        assert!(
            seen.lock().unwrap().is_empty(),
            "no mode session for {want}"
        );
    }
}

/// With a real mode: tcp2ws dials its backend only once the header is in, and its `bridge_hello`
/// would name the header's client (checked end to end in `tests/tests/proxy_protocol.rs`).
#[test]
fn tcp2ws_dials_only_after_the_header() {
    let cfg = Tcp2WsConfig::new(
        "0.0.0.0:1100",
        WsUrl::parse("ws://backend.test:9000/bridge").unwrap(),
    );
    let factory = ProxyProtocol::new(
        Arc::new(Tcp2WsFactory(Arc::new(cfg))),
        ProxyAccept::default(),
    );
    let t0 = epoch();
    let mut s = factory.session(sa(SOCKET_PEER), Box::new(CounterEntropy(3)), t0);
    assert_eq!(s.poll_action(), None, "nothing dialled before the header");
    s.handle_input(
        Leg::Down,
        BytesMut::from(&b"PROXY TCP4 203.0.113.7 "[..]),
        t0,
    );
    assert_eq!(s.poll_action(), None);
    s.handle_input(
        Leg::Down,
        BytesMut::from(&b"192.0.2.1 51234 1100\r\n"[..]),
        t0,
    );
    assert_eq!(
        s.poll_action(),
        Some(Action::Resolve {
            host: "backend.test".into(),
            port: 9000
        })
    );
    assert_eq!(factory.mode(), "tcp2ws");
    // tcp2ws closes a client over capacity at once; the wrapper keeps that answer.
    assert!(factory
        .over_capacity(sa(SOCKET_PEER), Box::new(CounterEntropy(4)), t0)
        .is_none());
}

// ---------------------------------------------------------------------------------------------------
// ws2tcp --send-proxy-protocol
// ---------------------------------------------------------------------------------------------------

mod send {
    use super::*;
    use common::drain_ws;
    use wsbridge_core::http::head::HeadReader;
    use wsbridge_core::ws::handshake::ClientHandshake;
    use wsbridge_core::ws::{Role, Utf8Bytes, WebSocket};
    use wsbridge_core::ws2tcp::{StaticTarget, Ws2TcpConfig, Ws2TcpFactory};
    use wsbridge_core::WsConfig;

    const WS_CLIENT: &str = "198.51.100.1:4000";
    const TARGET: &str = "192.0.2.10:25";
    const HELLO: &str = r#"{"type":"bridge_hello","version":1,"connection_id":"c1","client_ip":"2001:db8::7","client_port":51234,"tls":false,"listener":"0.0.0.0:25"}"#;

    /// A static-mode gateway sending `version` headers, upgraded by a client offering `protocols`,
    /// its target resolved (not yet connected). Returns the session and the client's engine.
    fn gateway(version: Version, protocols: &[&str]) -> (Box<dyn Session + Send>, WebSocket) {
        let mut cfg = Ws2TcpConfig::new("0.0.0.0:8080");
        cfg.target = Some(StaticTarget::parse(TARGET).unwrap());
        cfg.send_proxy_protocol = Some(version);
        cfg.ping_interval = None;
        let now = epoch();
        let mut s =
            Ws2TcpFactory(Arc::new(cfg)).session(sa(WS_CLIENT), Box::new(CounterEntropy(1)), now);
        let protocols: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        let (hs, request) =
            ClientHandshake::new(&mut CounterEntropy(2), "gw.test", "/", &protocols, &[]).unwrap();
        s.handle_input(Leg::Down, BytesMut::from(&request[..]), now);
        let mut head = HeadReader::new(16 << 10, 64);
        head.feed(&take(&mut *s, Leg::Down, now));
        let response = head.poll_response().unwrap().expect("the 101");
        hs.validate(&response).expect("upgraded");
        let ws = WebSocket::new(
            Role::Client(Box::new(CounterEntropy(3))),
            &WsConfig::default(),
        );
        assert_eq!(
            s.poll_action(),
            Some(Action::Resolve {
                host: "192.0.2.10".into(),
                port: 25
            })
        );
        s.handle_resolved(Ok(vec![sa(TARGET)]), now);
        assert_eq!(s.poll_action(), Some(Action::Connect(sa(TARGET))));
        (s, ws)
    }

    fn client_sends(s: &mut dyn Session, ws: &mut WebSocket, text: Option<&str>, data: &[u8]) {
        if let Some(t) = text {
            ws.send_text(Utf8Bytes::from(t.to_owned())).unwrap();
        }
        if !data.is_empty() {
            ws.send_binary(bytes::Bytes::copy_from_slice(data), true)
                .unwrap();
        }
        s.handle_input(Leg::Down, BytesMut::from(&drain_ws(ws)[..]), epoch());
    }

    #[test]
    fn static_mode_sends_the_websocket_client_first() {
        let (mut s, mut ws) = gateway(Version::V2, &[]);
        client_sends(&mut *s, &mut ws, None, b"early data");
        assert_eq!(
            take(&mut *s, Leg::Up, epoch()),
            b"",
            "nothing before the connect"
        );
        s.handle_connected(epoch());
        let want = [&encode_v2(sa(WS_CLIENT), sa(TARGET))[..], b"early data"].concat();
        assert_eq!(take(&mut *s, Leg::Up, epoch()), want);
    }

    /// The tunnel: `bridge_hello` before or after the connect, the header names its client.
    #[test]
    fn the_tunnel_sends_the_client_of_bridge_hello_whenever_it_arrives() {
        let want = [
            &encode_v1(sa("[2001:db8::7]:51234"), sa(TARGET))[..],
            b"data",
        ]
        .concat();
        // The hello (and data) first, then the connect.
        let (mut s, mut ws) = gateway(Version::V1, &["wsbridge.v1"]);
        client_sends(&mut *s, &mut ws, Some(HELLO), b"data");
        s.handle_connected(epoch());
        assert_eq!(take(&mut *s, Leg::Up, epoch()), want);

        // The connect first: nothing goes to the target until the hello says who the client is.
        let (mut s, mut ws) = gateway(Version::V1, &["wsbridge.v1"]);
        s.handle_connected(epoch());
        assert_eq!(
            take(&mut *s, Leg::Up, epoch()),
            b"",
            "the header waits for the hello"
        );
        client_sends(&mut *s, &mut ws, Some(HELLO), b"data");
        assert_eq!(take(&mut *s, Leg::Up, epoch()), want);
    }

    /// A tunnel client whose first frame is not a usable `bridge_hello`: its own address is sent.
    #[test]
    fn a_tunnel_without_a_usable_hello_sends_the_websocket_client() {
        for first in [
            Some(r#"{"type":"tls_started","version":"TLSv1.3"}"#),
            Some(r#"{"type":"bridge_hello","client_ip":"not an ip","client_port":1}"#),
            None,
        ] {
            let (mut s, mut ws) = gateway(Version::V2, &["wsbridge.v1"]);
            s.handle_connected(epoch());
            client_sends(&mut *s, &mut ws, first, b"x");
            let got = take(&mut *s, Leg::Up, epoch());
            let header = encode_v2(sa(WS_CLIENT), sa(TARGET));
            assert_eq!(got, [&header[..], b"x"].concat(), "{first:?}");
            // A later hello changes nothing.
            client_sends(&mut *s, &mut ws, Some(HELLO), b"");
            assert_eq!(take(&mut *s, Leg::Up, epoch()), b"", "{first:?}");
        }
    }
}
