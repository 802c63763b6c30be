//! The `proxy_header` target: the PROXY protocol reader, and the `ProxyProtocol` wrapper in front of a
//! real mode (`tcp2ws`).

use std::io::IoSlice;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::chunks;
use crate::entropy::CounterEntropy;
use crate::proxy::header::{encode, parse, Addresses, HeaderReader, ProxyHeader, V1_MAX};
use crate::proxy::{ProxyAccept, ProxyProtocol};
use crate::session::{EndReason, Leg, SessionFactory};
use crate::tcp2ws::{Tcp2WsConfig, Tcp2WsFactory};
use crate::url::WsUrl;

/// What reading a stream gave: the header and its length, or the error (as text), or "more needed".
type Answer = Result<Option<(ProxyHeader, Vec<u8>)>, String>;

fn read(pieces: &[&[u8]], max: usize) -> Answer {
    let mut reader = HeaderReader::new(max);
    for (i, piece) in pieces.iter().enumerate() {
        match reader.feed(piece) {
            Ok(Some((h, rest))) => {
                let mut after = rest.to_vec();
                pieces[i + 1..]
                    .iter()
                    .for_each(|p| after.extend_from_slice(p));
                return Ok(Some((h, after)));
            }
            Ok(None) => {
                let bound = max.max(V1_MAX) + piece.len();
                assert!(reader.buffered() <= bound, "the reader holds too much");
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(None)
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The `proxy_header` target: byte 0 picks the chunking, byte 1 the header bound, the rest is the
/// stream. Chunking never shows; a header parsed re-parses alone to itself, its every prefix waits,
/// and its addresses survive our own encoder; the wrapper session writes and dials nothing before the
/// header is complete, and refuses exactly the streams the parser refuses.
pub fn proxy_header(data: &[u8], epoch: Instant) {
    let [pattern, bound, stream @ ..] = data else {
        return;
    };
    let max = [16usize, 64, 256, 2048][usize::from(bound & 3)];
    let whole = read(&[stream], max);
    assert_eq!(
        read(&chunks(stream, *pattern), max),
        whole,
        "chunking showed"
    );

    if let Ok(Some((header, rest))) = &whole {
        let len = stream.len() - rest.len();
        assert_eq!(parse(&stream[..len], max), Ok(Some((*header, len))));
        for n in (0..len).step_by(1 + len / 64) {
            assert_eq!(parse(&stream[..n], max), Ok(None), "prefix {n} of {len}");
        }
        if let Addresses::Proxied {
            source,
            destination,
        } = header.addresses
        {
            let again = encode(header.version, source, destination);
            let (h, n) = parse(&again, max.max(52))
                .expect("our encoding parses")
                .expect("our encoding is complete");
            assert_eq!(n, again.len());
            let Addresses::Proxied {
                source: s,
                destination: d,
            } = h.addresses
            else {
                panic!("our encoding lost the addresses")
            };
            assert_eq!(
                (canonical(s), canonical(d)),
                (canonical(source), canonical(destination))
            );
        }
    }
    wrapped_session(stream, *pattern, max, &whole, epoch);
}

/// Feeds the stream to a `ProxyProtocol<Tcp2WsFactory>` session in chunks, then the end of stream.
fn wrapped_session(stream: &[u8], pattern: u8, max: usize, whole: &Answer, epoch: Instant) {
    let cfg = Tcp2WsConfig::new(
        "0.0.0.0:1100",
        WsUrl::parse("ws://backend.test:9000/").expect("URL"),
    );
    let factory = ProxyProtocol::new(
        Arc::new(Tcp2WsFactory(Arc::new(cfg))),
        ProxyAccept {
            header_timeout: Duration::from_secs(5),
            max_header: max,
        },
    );
    let peer: SocketAddr = ([127, 0, 0, 1], 40000).into();
    let mut s = factory.session(peer, Box::new(CounterEntropy(9)), epoch);
    let id = s.connection_id().to_owned();
    let mut fed = 0;
    let mut acted = false;
    for piece in chunks(stream, pattern) {
        if s.is_finished() {
            break;
        }
        s.handle_input(Leg::Down, BytesMut::from(piece), epoch);
        fed += piece.len();
        let complete = matches!(whole, Ok(Some((_, rest))) if fed >= stream.len() - rest.len());
        let action = s.poll_action();
        if !complete {
            assert_eq!(action, None, "dialled before the header was complete");
            let mut slots = [IoSlice::new(&[]); 4];
            assert_eq!(
                s.slices(Leg::Down, &mut slots),
                0,
                "wrote before the header"
            );
        }
        acted |= action.is_some();
    }
    assert_eq!(s.connection_id(), id, "the id changed");
    match whole {
        Err(why) => {
            assert!(s.is_finished(), "a refused header must end the session");
            assert!(!acted);
            assert_eq!(
                s.end_reason(),
                Some(&EndReason::PeerError(
                    Leg::Down,
                    format!("PROXY header: {why}")
                ))
            );
        }
        Ok(None) => {
            assert!(!s.is_finished() && !acted);
            s.handle_timeout(epoch + Duration::from_secs(5));
            assert_eq!(s.end_reason(), Some(&EndReason::Timeout("PROXY header")));
        }
        Ok(Some(_)) => assert!(acted, "tcp2ws dials its backend once the header is in"),
    }
}
