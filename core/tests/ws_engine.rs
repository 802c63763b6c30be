//! The WebSocket engine in memory, on virtual time: a client and a server [`WebSocket`] joined by a link
//! that re-chunks bytes, plus hand-made frames for what a well-behaved peer would never send.

use std::io::IoSlice;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use wsbridge_core::ws::frame::{FrameHeader, OpCode, MAX_HEADER_LEN};
use wsbridge_core::ws::mask::apply_mask;
use wsbridge_core::ws::{
    CloseCode, CloseFrame, CloseReply, Event, ProtocolError, Role, SendError, Utf8Bytes, WebSocket,
};
use wsbridge_core::{CounterEntropy, WsConfig};

/// The origin of virtual time: tests only ever add durations to it.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

fn config() -> WsConfig {
    WsConfig {
        max_frame_size: 1 << 20,
        max_message_size: 1 << 16,
        ..WsConfig::default()
    }
}

fn client() -> WebSocket {
    WebSocket::new(Role::Client(Box::new(CounterEntropy(7))), &config())
}

fn server() -> WebSocket {
    WebSocket::new(Role::Server, &config())
}

/// Everything `ws` wants to write, as the transport would take it in writes of at most `max_write` bytes.
fn take_output(ws: &mut WebSocket, max_write: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    while ws.wants_write() {
        let mut slots = [IoSlice::new(&[]); 8];
        let k = ws.slices(&mut slots);
        let mut budget = max_write;
        let mut took = 0;
        for s in &slots[..k] {
            let t = budget.min(s.len());
            wire.extend_from_slice(&s[..t]);
            took += t;
            budget -= t;
            if budget == 0 {
                break;
            }
        }
        ws.advance(took);
    }
    wire
}

/// Feeds `wire` to `ws` in chunks of the given sizes (cycled) and collects every event.
fn feed(ws: &mut WebSocket, wire: &[u8], chunks: &[usize]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut rest = wire;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let n = (*sizes.next().unwrap()).clamp(1, rest.len());
        assert!(
            ws.wants_read() || ws.is_closed(),
            "engine refused input while its consumer kept up"
        );
        ws.handle_input(BytesMut::from(&rest[..n]));
        rest = &rest[n..];
        while let Some(ev) = ws.poll_event() {
            events.push(ev);
        }
    }
    events
}

/// Joins the binary pieces of each message so that chunking cannot show.
fn normalize(events: Vec<Event>) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    let mut open: Option<Vec<u8>> = None;
    for ev in events {
        match ev {
            Event::Binary { data, fin } => {
                open.get_or_insert_with(Vec::new).extend_from_slice(&data);
                if fin {
                    out.push(Event::Binary {
                        data: Bytes::from(open.take().unwrap()),
                        fin: true,
                    });
                }
            }
            other => out.push(other),
        }
    }
    assert!(open.is_none(), "a binary message never ended");
    out
}

/// A hand-made frame, masked with `mask` if given.
fn raw_frame(fin: bool, rsv: u8, opcode: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        fin,
        rsv,
        opcode: OpCode::from_u8(opcode),
        mask,
        payload_len: payload.len() as u64,
    };
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = h.encode(&mut head);
    let mut v = head[..n].to_vec();
    let mut p = payload.to_vec();
    if let Some(k) = mask {
        apply_mask(&mut p, k);
    }
    v.extend_from_slice(&p);
    v
}

const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

/// The Close frame `ws` queued, decoded by a peer of the other role.
fn queued_close(ws: &mut WebSocket, peer: &mut WebSocket) -> Option<CloseFrame> {
    let wire = take_output(ws, usize::MAX);
    match feed(peer, &wire, &[usize::MAX]).pop() {
        Some(Event::Close(frame)) => frame,
        other => panic!("expected a Close, got {other:?}"),
    }
}

#[test]
fn text_and_binary_round_trip_both_ways() {
    let (mut c, mut s) = (client(), server());
    c.send_text(Utf8Bytes::from("héllo")).unwrap();
    c.send_binary(Bytes::from(vec![9u8; 1000]), true).unwrap();
    let events = normalize(feed(&mut s, &take_output(&mut c, 7), &[3, 11, 1]));
    assert_eq!(
        events,
        vec![
            Event::Text(Utf8Bytes::from("héllo")),
            Event::Binary {
                data: Bytes::from(vec![9u8; 1000]),
                fin: true
            }
        ]
    );
    s.send_binary(Bytes::from_static(b"back"), true).unwrap();
    let events = feed(&mut c, &take_output(&mut s, 100), &[2]);
    assert_eq!(
        normalize(events),
        vec![Event::Binary {
            data: Bytes::from_static(b"back"),
            fin: true
        }]
    );
}

#[test]
fn client_frames_are_masked_and_server_frames_are_not() {
    let (mut c, mut s) = (client(), server());
    c.send_binary(Bytes::from(vec![0u8; 300]), true).unwrap();
    let wire = take_output(&mut c, usize::MAX);
    assert_eq!(wire[1] & 0x80, 0x80, "client frame must carry a mask");
    assert!(
        wire[8..].iter().any(|&b| b != 0),
        "payload must be masked on the wire"
    );
    s.send_binary(Bytes::from(vec![0u8; 300]), true).unwrap();
    let wire = take_output(&mut s, usize::MAX);
    assert_eq!(wire[1] & 0x80, 0, "server frame must not be masked");
}

#[test]
fn binary_payload_is_streamed_not_reassembled() {
    let (mut c, mut s) = (client(), server());
    c.send_binary(Bytes::from(vec![5u8; 100_000]), true)
        .unwrap();
    let events = feed(&mut s, &take_output(&mut c, usize::MAX), &[4096]);
    assert!(
        events.len() >= 20,
        "a 100 kB frame fed in 4 KiB reads must come out in pieces"
    );
    assert!(events
        .iter()
        .all(|e| matches!(e, Event::Binary { data, .. } if data.len() <= 4096)));
    assert!(s.buffered_input() < 4096 + 14);
}

#[test]
fn fragmented_text_with_a_character_split_across_frames() {
    let mut s = server();
    let text = "a€b".as_bytes(); // € is three bytes
    let mut wire = raw_frame(false, 0, 0x1, KEY, &text[..2]);
    wire.extend(raw_frame(true, 0, 0x0, KEY, &text[2..]));
    assert_eq!(
        feed(&mut s, &wire, &[1]),
        vec![Event::Text(Utf8Bytes::from("a€b"))]
    );
}

#[test]
fn invalid_utf8_fails_fast_inside_an_unfinished_frame() {
    let mut s = server();
    // A 100-byte text frame whose third byte is invalid: the failure must come before the frame ends.
    let mut payload = vec![b'x'; 100];
    payload[2] = 0xFF;
    let wire = raw_frame(true, 0, 0x1, KEY, &payload);
    let events = feed(&mut s, &wire[..10], &[10]);
    assert_eq!(events, vec![Event::Failed(ProtocolError::InvalidUtf8)]);
    let close = queued_close(&mut s, &mut client()).unwrap();
    assert_eq!(close.code, CloseCode::INVALID_DATA);
    assert!(s.is_closed());
}

#[test]
fn protocol_violations_map_to_close_codes() {
    let cases: Vec<(Vec<u8>, CloseCode)> = vec![
        (raw_frame(true, 0, 0x2, None, b"x"), CloseCode::PROTOCOL), // unmasked
        (raw_frame(true, 0b100, 0x2, KEY, b"x"), CloseCode::PROTOCOL), // RSV1
        (raw_frame(true, 0, 0x3, KEY, b""), CloseCode::PROTOCOL),   // reserved opcode
        (raw_frame(false, 0, 0x9, KEY, b""), CloseCode::PROTOCOL),  // fragmented ping
        (raw_frame(true, 0, 0x9, KEY, &[0; 126]), CloseCode::PROTOCOL), // long ping
        (raw_frame(true, 0, 0x0, KEY, b"x"), CloseCode::PROTOCOL),  // stray continuation
        (raw_frame(true, 0, 0x8, KEY, &[3]), CloseCode::PROTOCOL),  // 1-byte close
        (
            raw_frame(true, 0, 0x8, KEY, &[3, 0xED]),
            CloseCode::PROTOCOL,
        ), // close code 1005
        (
            raw_frame(true, 0, 0x8, KEY, &[3, 0xE8, 0xC0]),
            CloseCode::INVALID_DATA,
        ), // bad reason
        (
            raw_frame(true, 0, 0x2, KEY, &vec![0; (1 << 20) + 1]),
            CloseCode::TOO_BIG,
        ),
        (
            raw_frame(true, 0, 0x1, KEY, &vec![b'a'; (1 << 16) + 1]),
            CloseCode::TOO_BIG,
        ),
    ];
    for (i, (wire, code)) in cases.into_iter().enumerate() {
        let mut s = server();
        let events = feed(&mut s, &wire, &[wire.len()]);
        assert!(
            matches!(events.last(), Some(Event::Failed(_))),
            "case {i}: {events:?}"
        );
        assert_eq!(
            queued_close(&mut s, &mut client()).unwrap().code,
            code,
            "case {i}"
        );
    }
    // A new data frame inside a fragmented message.
    let mut s = server();
    let mut wire = raw_frame(false, 0, 0x2, KEY, b"a");
    wire.extend(raw_frame(true, 0, 0x2, KEY, b"b"));
    let events = feed(&mut s, &wire, &[wire.len()]);
    assert_eq!(
        events.last(),
        Some(&Event::Failed(ProtocolError::ExpectedContinuation))
    );
    // A masked frame from a server.
    let mut c = client();
    let wire = raw_frame(true, 0, 0x2, KEY, b"a");
    assert_eq!(
        feed(&mut c, &wire, &[64]),
        vec![Event::Failed(ProtocolError::MaskedFrame)]
    );
}

#[test]
fn oversized_frames_fail_at_the_header_before_any_payload() {
    let mut s = server();
    let wire = raw_frame(true, 0, 0x2, KEY, &vec![0; (1 << 20) + 1]);
    // Only the 14-byte header is fed.
    let events = feed(&mut s, &wire[..14], &[14]);
    assert_eq!(
        events,
        vec![Event::Failed(ProtocolError::FrameTooBig((1 << 20) + 1))]
    );
}

#[test]
fn pings_are_answered_and_jump_queued_data() {
    let (mut c, mut s) = (client(), server());
    c.ping(b"are you there").unwrap();
    let events = feed(&mut s, &take_output(&mut c, usize::MAX), &[5]);
    assert_eq!(
        events,
        vec![Event::Ping(Bytes::from_static(b"are you there"))]
    );
    // The server has a large data frame queued when the pong is queued: the pong goes first.
    let (mut c2, mut s2) = (client(), server());
    s2.send_binary(Bytes::from(vec![1u8; 5000]), true).unwrap();
    c2.ping(b"p").unwrap();
    feed(&mut s2, &take_output(&mut c2, usize::MAX), &[64]);
    let events = feed(&mut c2, &take_output(&mut s2, 1000), &[64]);
    assert_eq!(events[0], Event::Pong(Bytes::from_static(b"p")));
    // And for the original pair, the pong comes back.
    let events = feed(&mut c, &take_output(&mut s, usize::MAX), &[1]);
    assert_eq!(
        events,
        vec![Event::Pong(Bytes::from_static(b"are you there"))]
    );
}

#[test]
fn control_frames_do_not_split_a_started_data_frame() {
    let mut s = server();
    s.send_binary(Bytes::from(vec![1u8; 5000]), true).unwrap();
    let mut slots = [IoSlice::new(&[]); 4];
    let k = s.slices(&mut slots);
    assert!(k >= 1);
    s.advance(100); // part of the data frame is on the wire
    s.ping(b"late").unwrap();
    let rest = take_output(&mut s, 333);
    // The rest of the data frame comes before the ping.
    assert_eq!(rest.len(), 5004 - 100 + 6);
    assert_eq!(&rest[rest.len() - 6..], &[0x89, 4, b'l', b'a', b't', b'e']);
}

#[test]
fn close_handshake_initiated_by_client() {
    let now = epoch();
    let (mut c, mut s) = (client(), server());
    c.send_text(Utf8Bytes::from("last words")).unwrap();
    c.close(Some(&CloseFrame::new(CloseCode::NORMAL, "bye")), now)
        .unwrap();
    assert_eq!(c.send_text(Utf8Bytes::from("more")), Err(SendError::Closed));
    let events = feed(&mut s, &take_output(&mut c, usize::MAX), &[3]);
    assert_eq!(
        events,
        vec![
            Event::Text(Utf8Bytes::from("last words")),
            Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, "bye"))),
        ]
    );
    assert!(s.is_closed());
    assert!(!c.is_closed());
    let events = feed(&mut c, &take_output(&mut s, usize::MAX), &[1]);
    assert_eq!(
        events,
        vec![Event::Close(Some(CloseFrame::new(
            CloseCode::NORMAL,
            "bye"
        )))]
    );
    assert!(c.is_closed() && !c.wants_write());
}

#[test]
fn close_handshake_initiated_by_server_while_client_still_sends() {
    let now = epoch();
    let (mut c, mut s) = (client(), server());
    s.close(Some(&CloseFrame::new(CloseCode::GOING_AWAY, "drain")), now)
        .unwrap();
    // Data the client sent before it saw our Close is still delivered.
    c.send_binary(Bytes::from_static(b"in flight"), true)
        .unwrap();
    let to_server = take_output(&mut c, usize::MAX);
    let events = feed(&mut c, &take_output(&mut s, usize::MAX), &[1]);
    assert_eq!(
        events,
        vec![Event::Close(Some(CloseFrame::new(
            CloseCode::GOING_AWAY,
            "drain"
        )))]
    );
    let mut to_server2 = to_server.clone();
    to_server2.extend(take_output(&mut c, usize::MAX));
    let events = feed(&mut s, &to_server2, &[2]);
    assert_eq!(
        normalize(events),
        vec![
            Event::Binary {
                data: Bytes::from_static(b"in flight"),
                fin: true
            },
            Event::Close(Some(CloseFrame::new(CloseCode::GOING_AWAY, "drain"))),
        ]
    );
    assert!(s.is_closed() && c.is_closed());
}

#[test]
fn close_wait_times_out_on_virtual_time() {
    let t0 = epoch();
    let mut c = client();
    c.close(None, t0).unwrap();
    let deadline = c.poll_timeout().unwrap();
    assert_eq!(deadline, t0 + config().close_timeout);
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!c.is_closed());
    c.handle_timeout(deadline);
    assert!(c.is_closed());
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn eof_is_reported_after_buffered_data() {
    let (mut c, mut s) = (client(), server());
    c.send_binary(Bytes::from_static(b"tail"), true).unwrap();
    s.handle_input(BytesMut::from(&take_output(&mut c, usize::MAX)[..]));
    s.handle_eof();
    let mut events = Vec::new();
    while let Some(ev) = s.poll_event() {
        events.push(ev);
    }
    assert_eq!(
        events,
        vec![
            Event::Binary {
                data: Bytes::from_static(b"tail"),
                fin: true
            },
            Event::Eof
        ]
    );
    assert!(s.is_closed());
}

#[test]
fn unpolled_input_stops_reading_at_the_cap() {
    let mut c = client();
    let mut s = server();
    for _ in 0..100 {
        c.send_binary(Bytes::from(vec![0u8; 1000]), true).unwrap();
    }
    let wire = take_output(&mut c, usize::MAX);
    let mut fed = 0;
    while s.wants_read() && fed < wire.len() {
        let n = 4096.min(wire.len() - fed);
        s.handle_input(BytesMut::from(&wire[fed..fed + n]));
        fed += n;
    }
    assert!(fed < wire.len(), "the engine must stop asking for input");
    assert!(s.buffered_input() < config().max_read_buffer + 4096);
    // Once the consumer polls, reading resumes.
    while s.poll_event().is_some() {}
    assert!(s.wants_read());
}

#[test]
fn ping_flood_does_not_grow_the_queue() {
    let mut s = server();
    let mut wire = Vec::new();
    for _ in 0..10_000 {
        wire.extend(raw_frame(true, 0, 0x9, KEY, &[0; 125]));
    }
    let events = feed(&mut s, &wire, &[65536]);
    assert_eq!(events.len(), 10_000);
    assert!(
        s.buffered_amount() <= 32 * 127,
        "queued {}",
        s.buffered_amount()
    );
}

#[test]
fn a_deferred_close_reply_lets_data_flow_after_the_peers_close() {
    let now = epoch();
    let (mut c, mut s) = (client(), server());
    s.set_close_reply(CloseReply::Deferred);
    c.send_binary(Bytes::from_static(b"request"), true).unwrap();
    c.close(Some(&CloseFrame::new(CloseCode::NORMAL, "done")), now)
        .unwrap();
    let events = feed(&mut s, &take_output(&mut c, usize::MAX), &[5]);
    assert_eq!(
        normalize(events),
        vec![
            Event::Binary {
                data: Bytes::from_static(b"request"),
                fin: true
            },
            Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, "done"))),
        ]
    );
    // Close-received: the reply is owed, nothing is queued or read, data may still go out.
    assert!(s.close_reply_owed() && s.can_send());
    assert!(!s.is_closed() && !s.is_open());
    assert!(!s.wants_read() && !s.wants_write());
    assert_eq!(
        s.poll_timeout(),
        None,
        "bounding the wait is the owner's job"
    );
    s.handle_input(BytesMut::from(&raw_frame(true, 0, 0x9, KEY, b"late")[..]));
    s.handle_eof();
    assert_eq!(
        s.poll_event(),
        None,
        "nothing is read after the peer's Close"
    );
    assert!(!s.wants_write(), "and nothing answered");
    assert_eq!(
        s.ping(b"x"),
        Err(SendError::Closed),
        "no pings to a closing peer"
    );
    s.send_binary(Bytes::from_static(b"the reply, "), false)
        .unwrap();
    s.send_binary(Bytes::from(vec![7u8; 5000]), true).unwrap();
    s.send_text(Utf8Bytes::from("and a text")).unwrap();
    // The owner sends the reply: the connection is closed and nothing more may be sent.
    s.close(Some(&CloseFrame::new(CloseCode::NORMAL, "")), now)
        .unwrap();
    assert!(s.is_closed() && !s.close_reply_owed() && !s.can_send());
    assert_eq!(
        s.poll_timeout(),
        None,
        "no wait: the peer's Close already came"
    );
    assert_eq!(
        s.send_binary(Bytes::from_static(b"x"), true),
        Err(SendError::Closed)
    );
    assert_eq!(s.send_text(Utf8Bytes::from("x")), Err(SendError::Closed));
    assert_eq!(s.close(None, now), Err(SendError::Closed));
    // The peer (waiting in its close handshake) gets everything, then the reply.
    let events = feed(&mut c, &take_output(&mut s, 1000), &[7, 4096]);
    let mut reply = b"the reply, ".to_vec();
    reply.extend(vec![7u8; 5000]);
    assert_eq!(
        normalize(events),
        vec![
            Event::Binary {
                data: Bytes::from(reply),
                fin: true
            },
            Event::Text(Utf8Bytes::from("and a text")),
            Event::Close(Some(CloseFrame::new(CloseCode::NORMAL, ""))),
        ]
    );
    assert!(c.is_closed() && s.is_closed());
}

#[test]
fn an_immediate_close_reply_is_unchanged_and_the_default() {
    let now = epoch();
    for explicit in [false, true] {
        let (mut c, mut s) = (client(), server());
        if explicit {
            s.set_close_reply(CloseReply::Immediate);
        }
        c.close(Some(&CloseFrame::new(CloseCode::GOING_AWAY, "bye")), now)
            .unwrap();
        let events = feed(&mut s, &take_output(&mut c, usize::MAX), &[usize::MAX]);
        assert_eq!(
            events,
            vec![Event::Close(Some(CloseFrame::new(
                CloseCode::GOING_AWAY,
                "bye"
            )))]
        );
        assert!(s.is_closed() && !s.close_reply_owed() && !s.can_send());
        assert_eq!(
            s.send_binary(Bytes::from_static(b"late"), true),
            Err(SendError::Closed)
        );
        assert_eq!(s.close(None, now), Err(SendError::Closed));
        assert_eq!(
            queued_close(&mut s, &mut c),
            Some(CloseFrame::new(CloseCode::GOING_AWAY, "bye")),
            "the status is echoed at once"
        );
    }
}

#[test]
fn a_deferred_reply_is_not_owed_when_we_closed_first_or_the_peer_failed() {
    let now = epoch();
    // We sent Close first: the peer's Close completes the handshake, nothing is owed.
    let (mut c, mut s) = (client(), server());
    s.set_close_reply(CloseReply::Deferred);
    s.close(Some(&CloseFrame::new(CloseCode::NORMAL, "")), now)
        .unwrap();
    let _ = feed(&mut c, &take_output(&mut s, usize::MAX), &[usize::MAX]);
    let events = feed(&mut s, &take_output(&mut c, usize::MAX), &[usize::MAX]);
    assert!(matches!(events[..], [Event::Close(_)]));
    assert!(s.is_closed() && !s.close_reply_owed());
    // A protocol error still fails the connection with its Close at once.
    let mut s = server();
    s.set_close_reply(CloseReply::Deferred);
    let events = feed(&mut s, &raw_frame(true, 0, 0x2, None, b"unmasked"), &[64]);
    assert!(matches!(events[..], [Event::Failed(_)]));
    assert!(s.is_closed() && s.wants_write() && !s.close_reply_owed());
}

/// What one side sends, as test input.
#[derive(Debug, Clone)]
enum Op {
    Text(String),
    Binary(Vec<u8>, bool),
    Ping(Vec<u8>),
}

fn any_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        "\\PC{0,30}".prop_map(Op::Text),
        (
            proptest::collection::vec(any::<u8>(), 0..600),
            any::<bool>()
        )
            .prop_map(|(b, f)| Op::Binary(b, f)),
        proptest::collection::vec(any::<u8>(), 0..125).prop_map(Op::Ping),
    ]
}

/// Sends `ops` in order, writing after each so that pings keep their place, and returns the wire bytes.
fn apply_ops(c: &mut WebSocket, ops: &[Op], max_write: usize) -> Vec<u8> {
    let mut wire = Vec::new();
    let mut binary_open = false;
    for op in ops {
        match op {
            Op::Text(t) if !binary_open => c.send_text(Utf8Bytes::from(t.clone())).unwrap(),
            Op::Text(_) => {}
            Op::Binary(b, fin) => {
                c.send_binary(Bytes::from(b.clone()), *fin).unwrap();
                binary_open = !fin;
            }
            Op::Ping(p) => c.ping(p).unwrap(),
        }
        wire.extend(take_output(c, max_write));
    }
    if binary_open {
        c.send_binary(Bytes::new(), true).unwrap();
    }
    wire.extend(take_output(c, max_write));
    wire
}

proptest! {
    /// Any split of the same bytes gives the same events, and the same bytes back (pongs).
    #[test]
    fn any_chunking_gives_the_same_events_and_output(
        ops in proptest::collection::vec(any_op(), 0..12),
        chunks in proptest::collection::vec(1usize..64, 1..6),
        writes in 1usize..50,
    ) {
        let mut c = client();
        let wire = apply_ops(&mut c, &ops, writes);

        let mut whole = server();
        let expected = normalize(feed(&mut whole, &wire, &[wire.len().max(1)]));
        let expected_out = take_output(&mut whole, usize::MAX);

        let mut chunked = server();
        let got = normalize(feed(&mut chunked, &wire, &chunks));
        prop_assert_eq!(got, expected.clone());
        prop_assert_eq!(take_output(&mut chunked, usize::MAX), expected_out);

        // And what was sent is what was received.
        let mut want = Vec::new();
        let mut open: Option<Vec<u8>> = None;
        let mut binary_open = false;
        for op in &ops {
            match op {
                Op::Text(t) if !binary_open => want.push(Event::Text(Utf8Bytes::from(t.clone()))),
                Op::Text(_) => {}
                Op::Binary(b, fin) => {
                    open.get_or_insert_with(Vec::new).extend_from_slice(b);
                    binary_open = !fin;
                    if *fin {
                        want.push(Event::Binary { data: Bytes::from(open.take().unwrap()), fin: true });
                    }
                }
                Op::Ping(p) => want.push(Event::Ping(Bytes::from(p.clone()))),
            }
        }
        if let Some(rest) = open.take() {
            want.push(Event::Binary { data: Bytes::from(rest), fin: true });
        }
        prop_assert_eq!(expected, want);
    }

    /// Whatever bytes a client sends, the server never panics, and once it fails it queues exactly one
    /// Close with a sendable code and then stays closed.
    #[test]
    fn arbitrary_input_never_panics_and_fails_with_a_code(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        chunks in proptest::collection::vec(1usize..40, 1..4),
    ) {
        let mut s = server();
        let events = feed(&mut s, &bytes, &chunks);
        if let Some(pos) = events.iter().position(|e| matches!(e, Event::Failed(_) | Event::Close(_))) {
            prop_assert_eq!(pos, events.len() - 1, "no event after the close");
            prop_assert!(s.is_closed());
            if let Event::Failed(e) = &events[pos] {
                prop_assert!(e.close_code().is_sendable());
            }
        }
    }
}

#[test]
fn close_wait_is_not_cut_while_the_peer_still_sends() {
    let t0 = epoch();
    let timeout = config().close_timeout;
    let (mut c, mut s) = (client(), server());
    s.close(None, t0).unwrap();
    // The client is still delivering its tail when the first deadline comes due.
    c.send_binary(Bytes::from_static(b"tail"), true).unwrap();
    let wire = take_output(&mut c, usize::MAX);
    assert_eq!(normalize(feed(&mut s, &wire, &[2])).len(), 1);
    s.handle_timeout(t0 + timeout);
    assert!(!s.is_closed(), "input during the wait moves the deadline");
    assert_eq!(s.poll_timeout(), Some(t0 + timeout + timeout));
    // Silence for a whole close timeout ends the wait.
    s.handle_timeout(t0 + timeout + timeout);
    assert!(s.is_closed());
}
