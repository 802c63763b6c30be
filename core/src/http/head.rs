//! [`HeadReader`]: buffers input until a complete HTTP head, within a size bound, in linear time.
//!
//! Contract, for a driver reading one head (a server reading the upgrade request, a client reading the
//! handshake response):
//! 1. [`feed`](HeadReader::feed) every chunk as it is read, in order, then call
//!    [`poll_request`](HeadReader::poll_request) (or [`poll_response`](HeadReader::poll_response));
//! 2. `Ok(None)`: read more; `Err(e)`: the head is refused, for good (the error is sticky and the buffer
//!    is freed); `Ok(Some(head))`: done, and every byte after the head's blank line is kept;
//! 3. [`take_remainder`](HeadReader::take_remainder) hands those bytes (pipelined WebSocket frames, a
//!    body) to whatever reads the connection next. Nothing is ever dropped before that.
//!
//! A head ends at the first `\r\n\r\n`; bare-LF line ends are not recognised as the end (such a head is
//! refused once it would exceed the size bound, or by the driver's handshake timeout). The result does not
//! depend on how the input was chunked.

use bytes::BytesMut;

use crate::http::request::Request;
use crate::http::response::ResponseHead;
use crate::http::HttpError;

/// Accumulates one HTTP head, then holds what followed it.
///
/// Memory: while the head is incomplete at most `max_head_size` bytes are buffered (input beyond that
/// fails the head with "too large" at once, so a head of exactly `max_head_size` bytes is accepted). A
/// `feed` that completes the head also keeps the rest of its chunk; after the head every fed byte is kept
/// until [`take_remainder`](Self::take_remainder).
///
/// Time: each input byte is examined a bounded number of times, however the input is chunked (the search
/// for the end resumes where it stopped).
#[derive(Debug)]
pub struct HeadReader {
    buf: BytesMut,
    state: State,
    max_head_size: usize,
    max_headers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No end yet; `buf[..scanned]` contains no `\r\n\r\n` and `buf.len() < max_head_size`.
    Searching { scanned: usize },
    /// `buf[..len]` is a complete head, not yet parsed; the rest of `buf` follows it.
    Complete { len: usize },
    /// The head was handed out; `buf` holds only what followed it.
    Done,
    /// No `\r\n\r\n` within `max_head_size` bytes. `buf` is empty.
    TooLarge,
    /// The head did not parse. `buf` is empty.
    Failed(HttpError),
}

impl HeadReader {
    /// A reader for one head of at most `max_head_size` bytes (including the blank line) and at most
    /// `max_headers` header fields, e.g. from [`WsConfig`](crate::config::WsConfig).
    pub fn new(max_head_size: usize, max_headers: usize) -> Self {
        HeadReader {
            buf: BytesMut::new(),
            state: State::Searching { scanned: 0 },
            max_head_size,
            max_headers,
        }
    }

    /// Appends input read from the peer. After a failure input is discarded.
    pub fn feed(&mut self, data: &[u8]) {
        match self.state {
            State::Searching { scanned } => {
                if data.is_empty() {
                    return;
                }
                let room: usize = self.max_head_size.saturating_sub(self.buf.len());
                let (head_part, rest) = data.split_at(data.len().min(room));
                self.buf.extend_from_slice(head_part);
                match find_end(&self.buf, scanned.saturating_sub(3)) {
                    Some(len) => {
                        self.state = State::Complete { len };
                        self.buf.extend_from_slice(rest);
                    }
                    None if self.buf.len() >= self.max_head_size => {
                        self.state = State::TooLarge;
                        self.buf = BytesMut::new();
                    }
                    None => {
                        self.state = State::Searching {
                            scanned: self.buf.len(),
                        }
                    }
                }
            }
            State::Complete { .. } | State::Done => self.buf.extend_from_slice(data),
            State::TooLarge | State::Failed(_) => {}
        }
    }

    /// The request head once complete (once: later calls return `Ok(None)`).
    ///
    /// Errors (sticky): head larger than `max_head_size` or more than `max_headers` fields → 431; a version
    /// other than HTTP/1.0 or HTTP/1.1 → 505; malformed → 400. HTTP/1.0 heads are returned: the WebSocket
    /// upgrade check refuses them (505), plain endpoints may serve them.
    pub fn poll_request(&mut self) -> Result<Option<Request>, HttpError> {
        self.poll(
            Request::parse,
            HttpError::new(431, "request head too large"),
        )
    }

    /// The response head once complete (once: later calls return `Ok(None)`).
    ///
    /// Errors (sticky) are all 502 Bad Gateway, see [`ResponseHead::parse`]: too large, too many fields,
    /// malformed.
    pub fn poll_response(&mut self) -> Result<Option<ResponseHead>, HttpError> {
        self.poll(
            ResponseHead::parse,
            HttpError::new(502, "response head too large"),
        )
    }

    /// Takes the bytes that arrived after the head (only once the head was returned by a `poll_*`;
    /// empty before that and after a failure). Bytes fed later accumulate again.
    pub fn take_remainder(&mut self) -> BytesMut {
        match self.state {
            State::Done => std::mem::take(&mut self.buf),
            _ => BytesMut::new(),
        }
    }

    /// Bytes currently held: the partial or complete head, and whatever followed it.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn poll<T>(
        &mut self,
        parse: fn(&[u8], usize) -> Result<T, HttpError>,
        too_large: HttpError,
    ) -> Result<Option<T>, HttpError> {
        match self.state {
            State::Searching { .. } | State::Done => Ok(None),
            State::TooLarge => Err(too_large),
            State::Failed(e) => Err(e),
            State::Complete { len } => {
                let head: BytesMut = self.buf.split_to(len);
                match parse(&head, self.max_headers) {
                    Ok(parsed) => {
                        self.state = State::Done;
                        Ok(Some(parsed))
                    }
                    Err(e) => {
                        self.state = State::Failed(e);
                        self.buf = BytesMut::new();
                        Err(e)
                    }
                }
            }
        }
    }
}

/// The length of the head ending at the first `\r\n\r\n` that starts at or after `from`.
fn find_end(buf: &[u8], from: usize) -> Option<usize> {
    buf.get(from..)?
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REQ: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\r\n";

    /// What a reader made of an input: the parse result and the remainder.
    type Outcome = (Result<Option<Request>, HttpError>, Vec<u8>);

    /// Feeds `chunks` in order, polling after each, and reports the first head or error and the remainder.
    fn drive<'a>(max: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> Outcome {
        let mut r = HeadReader::new(max, 8);
        let mut result: Result<Option<Request>, HttpError> = Ok(None);
        for chunk in chunks {
            r.feed(chunk);
            assert!(r.buffered() <= max + chunk.len() || matches!(result, Ok(Some(_))));
            match r.poll_request() {
                Ok(None) => {}
                Ok(Some(req)) => {
                    assert!(matches!(result, Ok(None)), "a head is returned once");
                    result = Ok(Some(req));
                }
                Err(e) => {
                    if let Err(prev) = result {
                        assert_eq!(prev, e, "errors are sticky");
                    }
                    result = Err(e);
                }
            }
        }
        (result, r.take_remainder().to_vec())
    }

    #[test]
    fn whole_head_in_one_feed_keeps_the_remainder() {
        let mut input = REQ.to_vec();
        input.extend_from_slice(b"\x81\x05hello and more");
        let (res, rest) = drive(1024, [&input[..]]);
        let req = res.expect("valid").expect("complete");
        assert_eq!(req.target, "/chat");
        assert_eq!(rest, b"\x81\x05hello and more");
    }

    #[test]
    fn byte_at_a_time_gives_the_same_result() {
        let mut input = REQ.to_vec();
        input.extend_from_slice(b"tail");
        assert_eq!(drive(1024, input.chunks(1)), drive(1024, [&input[..]]));
    }

    #[test]
    fn terminator_split_at_every_position() {
        for cut in 0..=REQ.len() {
            let (a, b) = REQ.split_at(cut);
            let (res, rest) = drive(1024, [a, b]);
            assert!(matches!(res, Ok(Some(_))), "cut at {cut}");
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn nothing_before_complete_and_none_after_done() {
        let mut r = HeadReader::new(1024, 8);
        r.feed(&REQ[..REQ.len() - 1]);
        assert_eq!(r.poll_request(), Ok(None));
        assert!(
            r.take_remainder().is_empty(),
            "partial head is not a remainder"
        );
        assert_eq!(r.buffered(), REQ.len() - 1);
        r.feed(&REQ[REQ.len() - 1..]);
        r.feed(b"late");
        assert!(r.poll_request().expect("valid").is_some());
        assert_eq!(r.poll_request(), Ok(None));
        r.feed(b" bytes");
        assert_eq!(r.buffered(), 10);
        assert_eq!(&r.take_remainder()[..], b"late bytes");
        r.feed(b"again");
        assert_eq!(&r.take_remainder()[..], b"again");
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn head_of_exactly_max_size_is_accepted() {
        let (res, _) = drive(REQ.len(), [REQ]);
        assert!(matches!(res, Ok(Some(_))));
        let (res, _) = drive(REQ.len(), REQ.chunks(1));
        assert!(matches!(res, Ok(Some(_))));
        let (res, _) = drive(REQ.len() - 1, [REQ]);
        assert_eq!(res.map_err(|e| e.status), Err(431));
        let (res, _) = drive(REQ.len() - 1, REQ.chunks(3));
        assert_eq!(res.map_err(|e| e.status), Err(431));
    }

    #[test]
    fn oversize_fails_and_frees_memory_without_holding_more_than_max() {
        let mut r = HeadReader::new(100, 8);
        r.feed(&[b'a'; 60]);
        assert_eq!(r.buffered(), 60);
        r.feed(&[b'a'; 10_000]);
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.poll_request().map_err(|e| e.status), Err(431));
        r.feed(REQ);
        assert_eq!(r.poll_request().map_err(|e| e.status), Err(431), "sticky");
        assert_eq!(r.buffered(), 0);
        assert!(r.take_remainder().is_empty());
    }

    #[test]
    fn large_remainder_in_the_completing_chunk_is_kept() {
        let mut input = REQ.to_vec();
        input.extend(std::iter::repeat_n(7u8, 5_000));
        let (res, rest) = drive(REQ.len() + 10, [&input[..]]);
        assert!(matches!(res, Ok(Some(_))));
        assert_eq!(rest.len(), 5_000);
    }

    #[test]
    fn parse_errors_are_sticky_and_clear_the_buffer() {
        let mut r = HeadReader::new(1024, 8);
        r.feed(b"GET / HTTP/1.1\r\nBad Header\r\n\r\nrest");
        assert_eq!(r.poll_request().map_err(|e| e.status), Err(400));
        assert_eq!(r.buffered(), 0);
        r.feed(b"more");
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.poll_request().map_err(|e| e.status), Err(400));
        assert!(r.take_remainder().is_empty());
    }

    #[test]
    fn too_many_headers_is_431() {
        let head = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(9));
        let (res, _) = drive(1024, [head.as_bytes()]);
        assert_eq!(res.map_err(|e| e.status), Err(431));
    }

    #[test]
    fn responses_use_502() {
        let mut r = HeadReader::new(1024, 8);
        r.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x82\x00");
        let head = r.poll_response().expect("valid").expect("complete");
        assert_eq!(head.status, 101);
        assert_eq!(&r.take_remainder()[..], b"\x82\x00");

        let mut r = HeadReader::new(16, 8);
        r.feed(b"HTTP/1.1 200 OK\r\nX: a long header\r\n\r\n");
        assert_eq!(r.poll_response().map_err(|e| e.status), Err(502));
    }

    #[test]
    fn zero_limit_refuses_everything_but_ignores_empty_feeds() {
        let mut r = HeadReader::new(0, 8);
        r.feed(b"");
        assert_eq!(r.poll_request(), Ok(None));
        r.feed(b"G");
        assert_eq!(r.poll_request().map_err(|e| e.status), Err(431));
    }

    #[test]
    fn byte_at_a_time_scan_is_linear() {
        // Quadratic rescanning of 1 MiB fed byte by byte would take ~10^11 steps and never finish here.
        let max: usize = 1 << 20;
        let mut r = HeadReader::new(max, 8);
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(max - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        for b in head.chunks(1) {
            r.feed(b);
        }
        assert_eq!(r.poll_request().map(|o| o.is_some()), Ok(true));
    }

    fn arb_input() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..300),
            (proptest::collection::vec(any::<u8>(), 0..40), 0..REQ.len()).prop_map(
                |(tail, cut)| {
                    let mut v = REQ[..cut].to_vec();
                    v.extend_from_slice(b"\r\n\r\n");
                    v.extend(tail);
                    v
                }
            ),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|tail| {
                let mut v = REQ.to_vec();
                v.extend(tail);
                v
            }),
            proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), Just(b':')],
                0..200
            ),
        ]
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_outcome(
            input in arb_input(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
            max in prop_oneof![Just(1024usize), 10usize..120],
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for p in points {
                chunks.push(&input[start..p]);
                start = p;
            }
            chunks.push(&input[start..]);
            prop_assert_eq!(drive(max, chunks), drive(max, [&input[..]]));
        }

        #[test]
        fn poll_response_never_panics(input in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut r = HeadReader::new(256, 8);
            for c in input.chunks(7) {
                r.feed(c);
                let _ = r.poll_response();
            }
        }
    }
}
