//! Interop on 127.0.0.1 with tungstenite 0.30 as the independent peer, our engine in either role,
//! driven by [`BlockingWs`]. Each endpoint runs on its own thread; every socket has a read and a write
//! timeout so a bug fails the test instead of hanging it.

use std::any::Any;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::{CloseCode as TCode, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame as TClose, Frame};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{ClientRequestBuilder, Message};
use wsbridge_core::ws::handshake::HandshakeError;
use wsbridge_core::ws::{CloseCode, CloseFrame, Event, ProtocolError, Utf8Bytes};
use wsbridge_core::WsConfig;
use wsbridge_tests::blocking_ws::{BlockingWs, Error};

type Theirs = tungstenite::WebSocket<TcpStream>;

const TIMEOUT: Duration = Duration::from_secs(15);
const MIB: usize = 1 << 20;
const URL: &str = "ws://127.0.0.1/interop";

/// The role of OUR endpoint; tungstenite takes the other one.
#[derive(Clone, Copy, Debug)]
enum Side {
    Server,
    Client,
}

fn our_config() -> WsConfig {
    WsConfig {
        max_frame_size: (16 * MIB + 1024) as u64,
        max_message_size: 16 * MIB + 1024,
        ..WsConfig::default()
    }
}

fn their_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_frame_size(Some(32 * MIB))
        .max_message_size(Some(32 * MIB))
}

/// A connected (client end, server end) pair on 127.0.0.1, both with timeouts. Connecting before
/// accepting works off the listen backlog, so nothing here can block.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    for s in [&client, &server] {
        s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        s.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    }
    (client, server)
}

fn panic_text(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic".into())
}

/// Runs `ours` and `theirs` on two threads, each on its end of a fresh connection, and returns both
/// results; if either panicked, panics with both messages (the first failure often times out the other).
fn run_pair<A: Send, B: Send>(
    ours: impl FnOnce(TcpStream) -> A + Send,
    theirs: impl FnOnce(TcpStream) -> B + Send,
    side: Side,
) -> (A, B) {
    let (client_end, server_end) = tcp_pair();
    let (our_end, their_end) = match side {
        Side::Server => (server_end, client_end),
        Side::Client => (client_end, server_end),
    };
    thread::scope(|s| {
        let o = s.spawn(move || ours(our_end));
        let t = s.spawn(move || theirs(their_end));
        match (o.join(), t.join()) {
            (Ok(a), Ok(b)) => (a, b),
            (o, t) => panic!(
                "ours: {}\ntheirs: {}",
                o.err().map_or("ok".into(), |p| panic_text(&*p)),
                t.err().map_or("ok".into(), |p| panic_text(&*p)),
            ),
        }
    })
}

/// A session with the default handshakes (no subprotocol).
fn session<A: Send, B: Send>(
    side: Side,
    ours: impl FnOnce(&mut BlockingWs) -> A + Send,
    theirs: impl FnOnce(&mut Theirs) -> B + Send,
) -> (A, B) {
    run_pair(
        move |stream| {
            let mut ws = match side {
                Side::Server => BlockingWs::accept(stream, &our_config(), &[]),
                Side::Client => {
                    BlockingWs::connect(stream, &our_config(), "127.0.0.1", "/", &[], 7)
                }
            }
            .expect("our handshake");
            ours(&mut ws)
        },
        move |stream| {
            let mut ws = match side {
                Side::Server => {
                    tungstenite::client::client_with_config(URL, stream, Some(their_config()))
                        .expect("tungstenite client handshake")
                        .0
                }
                Side::Client => tungstenite::accept_with_config(stream, Some(their_config()))
                    .expect("tungstenite server handshake"),
            };
            theirs(&mut ws)
        },
        side,
    )
}

// ---- helpers for each side ----

fn next(ws: &mut BlockingWs) -> Event {
    ws.next_event().expect("read").expect("an event")
}

/// Reads one whole binary message; returns it and the number of pieces it came in.
fn recv_binary(ws: &mut BlockingWs) -> (Vec<u8>, usize) {
    let (mut all, mut pieces) = (Vec::new(), 0);
    loop {
        match next(ws) {
            Event::Binary { data, fin } => {
                all.extend_from_slice(&data);
                pieces += 1;
                if fin {
                    return (all, pieces);
                }
            }
            other => panic!("expected binary, got {other:?}"),
        }
    }
}

fn recv_text(ws: &mut BlockingWs) -> Utf8Bytes {
    match next(ws) {
        Event::Text(t) => t,
        other => panic!("expected text, got {other:?}"),
    }
}

fn read(t: &mut Theirs) -> Message {
    t.read().expect("tungstenite read")
}

fn frame(data: &[u8], opcode: Data, fin: bool) -> Message {
    Message::Frame(Frame::message(
        Bytes::copy_from_slice(data),
        OpCode::Data(opcode),
        fin,
    ))
}

/// We close with `code`/`reason`; the peer's echo is checked and the connection ended.
fn ours_close(ws: &mut BlockingWs, code: u16, reason: &str) {
    let ours = CloseFrame::new(CloseCode(code), reason);
    ws.close(Some(&ours)).expect("close");
    assert_eq!(
        next(ws),
        Event::Close(Some(ours)),
        "the peer echoes our status"
    );
    assert!(ws.engine().is_closed());
    assert_eq!(ws.next_event().expect("read"), None);
}

/// Tungstenite sees our Close with `code`/`reason`, answers, and then the connection ends cleanly.
fn theirs_answer_close(t: &mut Theirs, code: u16, reason: &str) {
    match read(t) {
        Message::Close(Some(f)) => {
            assert_eq!((u16::from(f.code), f.reason.as_str()), (code, reason));
        }
        other => panic!("expected Close, got {other:?}"),
    }
    assert_closed(t);
}

fn assert_closed(t: &mut Theirs) {
    match t.read() {
        Err(tungstenite::Error::ConnectionClosed) => {}
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
}

/// Pseudo-random bytes (xorshift), so a masking or offset bug cannot hide in a repeating pattern.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Exactly `len` bytes of UTF-8 mixing 1- to 4-byte characters, so characters straddle every read.
fn text_of(len: usize) -> String {
    let mut s = String::with_capacity(len);
    for c in "aé€😀".chars().cycle() {
        if s.len() + c.len_utf8() > len {
            break;
        }
        s.push(c);
    }
    while s.len() < len {
        s.push('z');
    }
    s
}

// ---- scenarios, each run with our endpoint in both roles ----

/// Lengths around every header-size boundary (7-bit, 16-bit, 64-bit).
const SIZES: [usize; 8] = [0, 1, 125, 126, 127, 65_535, 65_536, 100_000];

/// Tungstenite sends a binary and a text message of each size, we echo them; then we send one of each
/// and tungstenite echoes them.
fn round_trips(side: Side) {
    let (echoed, _) = session(
        side,
        |o| {
            let mut echoed = 0;
            for _ in SIZES {
                let (bin, _) = recv_binary(o);
                o.send_binary(bin.into(), true).expect("echo binary");
                let text = recv_text(o);
                o.send_text(text).expect("echo text");
                echoed += 2;
            }
            o.send_text("from wsbridge: ünïcödé".into()).expect("text");
            o.send_binary(Bytes::from(pattern(1000, 9)), true)
                .expect("binary");
            assert_eq!(recv_text(o).as_str(), "from wsbridge: ünïcödé");
            assert_eq!(recv_binary(o).0, pattern(1000, 9));
            ours_close(o, 1000, "done");
            assert_eq!(o.finish().expect("clean end"), 0);
            echoed
        },
        |t| {
            for (i, &n) in SIZES.iter().enumerate() {
                let bin = pattern(n, i as u64 + 1);
                t.send(Message::binary(bin.clone())).expect("send");
                assert_eq!(read(t), Message::binary(bin), "binary of {n} bytes");
                let text = text_of(n);
                t.send(Message::text(text.clone())).expect("send");
                assert_eq!(read(t), Message::text(text), "text of {n} bytes");
            }
            for _ in 0..2 {
                let m = read(t);
                assert!(m.is_text() || m.is_binary(), "{m:?}");
                t.send(m).expect("echo");
            }
            theirs_answer_close(t, 1000, "done");
        },
    );
    assert_eq!(echoed, 2 * SIZES.len());
}

#[test]
fn server_round_trips() {
    round_trips(Side::Server);
}

#[test]
fn client_round_trips() {
    round_trips(Side::Client);
}

const LARGE: usize = 16 * MIB;

/// A 16 MiB binary and a 16 MiB text message, each sent by tungstenite and echoed by us.
fn large_messages(side: Side) {
    session(
        side,
        |o| {
            let (bin, pieces) = recv_binary(o);
            assert!(bin == pattern(LARGE, 42), "16 MiB binary intact");
            assert!(pieces > 1, "binary payload is streamed in pieces");
            o.send_binary(bin.into(), true).expect("echo binary");
            let text = recv_text(o);
            assert!(text.as_str() == text_of(LARGE), "16 MiB text intact");
            o.send_text(text).expect("echo text");
            ours_close(o, 1000, "large done");
            assert_eq!(o.finish().expect("clean end"), 0);
        },
        |t| {
            let bin = pattern(LARGE, 42);
            t.send(Message::binary(bin.clone())).expect("send");
            match read(t) {
                Message::Binary(b) => assert!(b == bin, "binary echo intact"),
                other => panic!("expected binary, got {} bytes of {other:?}", other.len()),
            }
            let text = text_of(LARGE);
            t.send(Message::text(text.clone())).expect("send");
            match read(t) {
                Message::Text(s) => assert!(s.as_str() == text, "text echo intact"),
                other => panic!("expected text, got {} bytes", other.len()),
            }
            theirs_answer_close(t, 1000, "large done");
        },
    );
}

#[test]
fn server_large_messages() {
    large_messages(Side::Server);
}

#[test]
fn client_large_messages() {
    large_messages(Side::Client);
}

/// Fragment sizes, the last one empty.
const FRAGMENTS: [usize; 4] = [1, 300, 70_000, 0];

/// Tungstenite sends a fragmented binary message and a text message split inside a character; we
/// reassemble both and echo the binary in fragments of our own.
fn fragmented(side: Side) {
    let whole = pattern(FRAGMENTS.iter().sum(), 5);
    let cuts = |data: &[u8]| {
        let mut at = 0;
        FRAGMENTS.map(|n| {
            at += n;
            data[at - n..at].to_vec()
        })
    };
    session(
        side,
        |o| {
            let (bin, pieces) = recv_binary(o);
            assert_eq!(bin, whole);
            assert!(pieces >= FRAGMENTS.len(), "{pieces} pieces");
            assert_eq!(recv_text(o).as_str(), "h€llo");
            for (i, piece) in cuts(&whole).into_iter().enumerate() {
                o.send_binary(piece.into(), i == FRAGMENTS.len() - 1)
                    .expect("fragment");
            }
            o.send_text("h€llo".into()).expect("text");
            ours_close(o, 1000, "fragments done");
            assert_eq!(o.finish().expect("clean end"), 0);
        },
        |t| {
            for (i, piece) in cuts(&whole).iter().enumerate() {
                let op = if i == 0 { Data::Binary } else { Data::Continue };
                t.send(frame(piece, op, i == FRAGMENTS.len() - 1))
                    .expect("send");
            }
            let text = "h€llo".as_bytes(); // the euro sign is e2 82 ac
            t.send(frame(&text[..2], Data::Text, false)).expect("send");
            t.send(frame(&text[2..3], Data::Continue, false))
                .expect("send");
            t.send(frame(&text[3..], Data::Continue, true))
                .expect("send");
            assert_eq!(read(t), Message::binary(whole.clone()));
            assert_eq!(read(t), Message::text("h€llo"));
            theirs_answer_close(t, 1000, "fragments done");
        },
    );
}

#[test]
fn server_fragmented_messages() {
    fragmented(Side::Server);
}

#[test]
fn client_fragmented_messages() {
    fragmented(Side::Client);
}

const PING_TRANSFER: usize = 8 * MIB;

/// Each side sends 8 MiB in 1 MiB fragments with a ping after the fourth: the ping is seen exactly
/// there, the pong comes back, and the message arrives intact.
fn ping_during_transfer(side: Side) {
    let theirs_data = pattern(PING_TRANSFER, 11);
    let ours_data = pattern(PING_TRANSFER, 12);
    session(
        side,
        |o| {
            let (mut got, mut ping_at) = (Vec::new(), None);
            loop {
                match next(o) {
                    Event::Binary { data, fin } => {
                        got.extend_from_slice(&data);
                        if fin {
                            break;
                        }
                    }
                    Event::Ping(p) => {
                        assert_eq!(&p[..], b"mid-theirs");
                        assert_eq!(ping_at.replace(got.len()), None, "one ping");
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(ping_at, Some(4 * MIB), "ping between fragments 4 and 5");
            assert!(got == theirs_data, "transfer intact");
            o.send_binary(got.into(), true).expect("echo");
            for (i, chunk) in ours_data.chunks(MIB).enumerate() {
                o.send_binary(Bytes::copy_from_slice(chunk), i == 7)
                    .expect("fragment");
                if i == 3 {
                    o.ping(b"mid-ours").expect("ping");
                }
            }
            assert_eq!(next(o), Event::Pong(Bytes::from_static(b"mid-ours")));
            ours_close(o, 1000, "ping done");
            assert_eq!(o.finish().expect("clean end"), 0);
        },
        |t| {
            for (i, chunk) in theirs_data.chunks(MIB).enumerate() {
                let op = if i == 0 { Data::Binary } else { Data::Continue };
                t.send(frame(chunk, op, i == 7)).expect("send");
                if i == 3 {
                    t.send(Message::Ping(Bytes::from_static(b"mid-theirs")))
                        .expect("ping");
                }
            }
            assert_eq!(read(t), Message::Pong(Bytes::from_static(b"mid-theirs")));
            assert!(
                read(t) == Message::binary(theirs_data.clone()),
                "echo intact"
            );
            assert_eq!(read(t), Message::Ping(Bytes::from_static(b"mid-ours")));
            assert!(
                read(t) == Message::binary(ours_data.clone()),
                "transfer intact"
            );
            // The pong goes out on the next read, which then gets our Close.
            theirs_answer_close(t, 1000, "ping done");
        },
    );
}

#[test]
fn server_ping_during_large_transfer() {
    ping_during_transfer(Side::Server);
}

#[test]
fn client_ping_during_large_transfer() {
    ping_during_transfer(Side::Client);
}

/// We send a last message and close with 4001; tungstenite gets both, echoes the status, and both ends
/// finish without stray bytes.
fn close_by_us(side: Side) {
    session(
        side,
        |o| {
            o.send_text("last words".into()).expect("text");
            ours_close(o, 4001, "ours leaves");
            assert!(o.send_text("late".into()).is_err(), "nothing after Close");
            assert_eq!(o.finish().expect("clean end"), 0);
        },
        |t| {
            assert_eq!(read(t), Message::text("last words"));
            theirs_answer_close(t, 4001, "ours leaves");
        },
    );
}

#[test]
fn server_close_initiated_by_us() {
    close_by_us(Side::Server);
}

#[test]
fn client_close_initiated_by_us() {
    close_by_us(Side::Client);
}

/// Tungstenite sends a last message and closes with 1001; we deliver both, echo the status, and both
/// ends finish cleanly.
fn close_by_tungstenite(side: Side) {
    session(
        side,
        |o| {
            assert_eq!(recv_text(o).as_str(), "last words from tungstenite");
            let theirs = CloseFrame::new(CloseCode::GOING_AWAY, "tungstenite leaves");
            assert_eq!(next(o), Event::Close(Some(theirs)));
            assert!(o.engine().is_closed());
            assert_eq!(o.next_event().expect("read"), None);
            assert!(o.send_text("late".into()).is_err(), "nothing after Close");
            assert_eq!(o.finish().expect("clean end"), 0);
        },
        |t| {
            t.send(Message::text("last words from tungstenite"))
                .expect("send");
            t.close(Some(TClose {
                code: TCode::Away,
                reason: "tungstenite leaves".into(),
            }))
            .expect("close");
            match read(t) {
                Message::Close(Some(f)) => {
                    assert_eq!(f.code, TCode::Away);
                    assert_eq!(f.reason.as_str(), "tungstenite leaves");
                }
                other => panic!("expected Close, got {other:?}"),
            }
            assert_closed(t);
        },
    );
}

#[test]
fn server_close_initiated_by_tungstenite() {
    close_by_tungstenite(Side::Server);
}

#[test]
fn client_close_initiated_by_tungstenite() {
    close_by_tungstenite(Side::Client);
}

// ---- subprotocols ----

/// Tungstenite offers a and b; our server prefers c, b, a, so it picks b, and tungstenite accepts it.
#[test]
fn our_server_chooses_a_subprotocol_tungstenite_offered() {
    let (ours, theirs) = run_pair(
        |stream| {
            let mut o =
                BlockingWs::accept(stream, &our_config(), &["c", "b", "a"]).expect("accept");
            let chosen = o.protocol().map(str::to_owned);
            ours_close(&mut o, 1000, "proto done");
            assert_eq!(o.finish().expect("clean end"), 0);
            chosen
        },
        |stream| {
            let request = ClientRequestBuilder::new(URL.parse().expect("uri"))
                .with_sub_protocol("a")
                .with_sub_protocol("b");
            let (mut t, response) =
                tungstenite::client::client_with_config(request, stream, Some(their_config()))
                    .expect("tungstenite accepts the chosen protocol");
            theirs_answer_close(&mut t, 1000, "proto done");
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().expect("ascii").to_owned())
        },
        Side::Server,
    );
    assert_eq!(ours.as_deref(), Some("b"));
    assert_eq!(theirs.as_deref(), Some("b"));
}

/// A tungstenite server that answers `answer` to our offer of x and y. Returns what we made of the
/// answer, and what tungstenite saw offered.
#[allow(clippy::result_large_err)] // the callback's signature is tungstenite's
fn our_client_offer(answer: &'static str) -> (Result<Option<String>, Error>, Option<String>) {
    run_pair(
        |stream| {
            BlockingWs::connect(stream, &our_config(), "127.0.0.1", "/", &["x", "y"], 3).map(
                |mut o| {
                    ours_close(&mut o, 1000, "bye");
                    assert_eq!(o.finish().expect("clean end"), 0);
                    o.protocol().map(str::to_owned)
                },
            )
        },
        |stream| {
            let mut offered = None;
            let callback = |req: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
                offered = req
                    .headers()
                    .get("sec-websocket-protocol")
                    .map(|v| v.to_str().expect("ascii").to_owned());
                resp.headers_mut()
                    .insert("Sec-WebSocket-Protocol", answer.parse().expect("value"));
                Ok(resp)
            };
            let mut t = tungstenite::accept_hdr_with_config(stream, callback, Some(their_config()))
                .expect("tungstenite server handshake");
            if answer == "y" {
                theirs_answer_close(&mut t, 1000, "bye");
            } else {
                // We dropped the connection right after its 101.
                match t.read() {
                    Err(tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    )) => {}
                    other => panic!("expected a reset without close, got {other:?}"),
                }
            }
            offered
        },
        Side::Client,
    )
}

#[test]
fn our_client_accepts_an_offered_subprotocol() {
    let (ours, offered) = our_client_offer("y");
    assert_eq!(offered.as_deref(), Some("x, y"));
    assert_eq!(ours.expect("handshake").as_deref(), Some("y"));
}

#[test]
fn our_client_refuses_a_subprotocol_it_did_not_offer() {
    let (ours, offered) = our_client_offer("other");
    assert_eq!(offered.as_deref(), Some("x, y"));
    match ours {
        Err(Error::Handshake(HandshakeError::Protocol)) => {}
        other => panic!("expected HandshakeError::Protocol, got {other:?}"),
    }
}

// ---- a raw peer ----

/// A raw client pipelines an unmasked text frame behind its upgrade request: our server fails the
/// connection with Close 1002, sends nothing else, and closes the TCP connection.
#[test]
fn unmasked_client_frame_gets_close_1002() {
    let (event, wire) = run_pair(
        |stream| {
            let mut o = BlockingWs::accept(stream, &our_config(), &[]).expect("accept");
            let event = next(&mut o);
            assert!(o.engine().is_closed());
            assert_eq!(o.next_event().expect("read"), None);
            assert_eq!(o.finish().expect("clean end"), 0);
            event
        },
        |mut raw| {
            raw.write_all(
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
                  Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                  Sec-WebSocket-Version: 13\r\n\r\n\x81\x05hello",
            )
            .expect("write");
            let mut wire = Vec::new();
            raw.read_to_end(&mut wire)
                .expect("read until our server closes");
            wire
        },
        Side::Server,
    );
    assert_eq!(event, Event::Failed(ProtocolError::UnmaskedFrame));

    let head_end = wire
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = std::str::from_utf8(&wire[..head_end]).expect("ascii head");
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    let close = &wire[head_end..];
    assert_eq!(close[0], 0x88, "FIN + Close");
    assert_eq!(close[1] & 0x80, 0, "a server frame is not masked");
    let len = usize::from(close[1] & 0x7f);
    assert_eq!(
        close.len(),
        2 + len,
        "the Close is the last thing on the wire"
    );
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1002);
    assert_eq!(
        std::str::from_utf8(&close[4..]).expect("utf-8 reason"),
        ProtocolError::UnmaskedFrame.to_string()
    );
}
