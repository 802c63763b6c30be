//! A sans-IO HTTP/1.1 client codec (and the body framing a server shares with it).
//!
//! - [`encode_request`]: a complete request with a `Content-Length` body; every field is checked, so no
//!   input can split the head (header injection) and the fields the codec writes itself cannot be added;
//! - [`BodyDecoder`]: a message body framed by `Content-Length`, `chunked` (strict chunk-size lines,
//!   extensions and trailers skipped, both bounded) or the end of the connection, capped at a size;
//! - [`ResponseReader`]: one response (interim 1xx heads skipped): the head through
//!   [`HeadReader`], then its body, and whether the connection may be reused (keep-alive).
//!
//! The result never depends on how the input was chunked.

use bytes::{BufMut, Bytes, BytesMut};

use crate::http::head::HeadReader;
use crate::http::headers::{is_field_value, is_token, Headers};
use crate::http::response::ResponseHead;
use crate::http::HttpError;

/// Fields the codec writes itself; callers may not add them.
const OWN_FIELDS: [&str; 4] = ["host", "content-length", "transfer-encoding", "connection"];

/// The most bytes of chunk-size lines (extensions included) and of trailers accepted.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 8 << 10;

/// A complete HTTP/1.1 request: `<method> <target> HTTP/1.1`, `Host`, `headers` in order,
/// `Content-Length` and `body`. Refused (400) when the method or a header name is not a token, the
/// target is not origin-form without spaces or control characters, the host or a value fails
/// [`is_field_value`], or a header is one the codec writes itself.
pub fn encode_request(
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Bytes, HttpError> {
    let bad = |why| Err(HttpError::new(400, why));
    if !is_token(method.as_bytes()) {
        return bad("invalid method");
    }
    if !target.starts_with('/') || target.bytes().any(|b| b <= b' ' || b >= 0x7f) {
        return bad("invalid request target");
    }
    if host.is_empty() || !is_field_value(host.as_bytes()) || host.contains([' ', '\t']) {
        return bad("invalid host");
    }
    let mut out = BytesMut::with_capacity(128 + body.len());
    out.put_slice(format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n").as_bytes());
    for (name, value) in headers {
        if !is_token(name.as_bytes())
            || !is_field_value(value.as_bytes())
            || OWN_FIELDS.iter().any(|f| f.eq_ignore_ascii_case(name))
        {
            return bad("invalid header field");
        }
        out.put_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.put_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    out.put_slice(body);
    Ok(out.freeze())
}

/// How a body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes the connection (responses only).
    UntilClose,
}

impl BodyKind {
    /// The framing the fields of a head declare; `until_close` is what applies when neither
    /// `Transfer-Encoding` nor `Content-Length` is present (a response: [`BodyKind::UntilClose`]; a
    /// request: [`BodyKind::Empty`]). A `Transfer-Encoding` other than exactly `chunked`, both fields at
    /// once (the smuggling ambiguity), or `Content-Length` values that disagree or are not digits: `Err`.
    pub fn of(headers: &Headers, until_close: BodyKind) -> Result<BodyKind, &'static str> {
        let te: Vec<&[u8]> = headers.list("transfer-encoding").collect();
        let cl: Vec<&[u8]> = headers.list("content-length").collect();
        if !te.is_empty() {
            if !cl.is_empty() {
                return Err("both Transfer-Encoding and Content-Length");
            }
            return match te[..] {
                [one] if one.eq_ignore_ascii_case(b"chunked") => Ok(BodyKind::Chunked),
                _ => Err("unsupported Transfer-Encoding"),
            };
        }
        let Some(first) = cl.first() else {
            return Ok(until_close);
        };
        if cl.iter().any(|v| v != first) {
            return Err("conflicting Content-Length");
        }
        match parse_decimal(first) {
            Some(0) => Ok(BodyKind::Empty),
            Some(n) => Ok(BodyKind::Length(n)),
            None => Err("invalid Content-Length"),
        }
    }
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Why a body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Larger than the cap.
    TooLarge,
    /// Bad chunk framing.
    Malformed(&'static str),
    /// The connection ended before the body did.
    Truncated,
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::TooLarge => f.write_str("body too large"),
            BodyError::Malformed(why) => write!(f, "malformed chunked body: {why}"),
            BodyError::Truncated => f.write_str("connection closed before the end of the body"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size (`digits` so far).
    Size {
        value: u64,
        digits: u8,
    },
    /// In a chunk extension, up to the CR.
    Ext {
        value: u64,
    },
    /// After the CR of a size line.
    SizeLf {
        value: u64,
    },
    /// In the chunk's data.
    Data {
        left: u64,
    },
    /// The CR, then the LF after the data.
    DataCr,
    DataLf,
    /// At the start of a trailer line (or the final blank line).
    TrailerStart,
    /// In a trailer field line.
    TrailerLine,
    TrailerLf,
    /// The LF of the final blank line.
    EndLf,
    Done,
}

/// Decodes one body, keeping at most `max` bytes of it (more is [`BodyError::TooLarge`]).
#[derive(Debug)]
pub struct BodyDecoder {
    kind: BodyKind,
    chunk: Chunk,
    /// Bytes still due for [`BodyKind::Length`].
    left: u64,
    body: BytesMut,
    max: usize,
    line: usize,
    done: bool,
}

impl BodyDecoder {
    /// A decoder for a body framed as `kind`; a declared length over `max` fails at once.
    pub fn new(kind: BodyKind, max: usize) -> Result<Self, BodyError> {
        let left = match kind {
            BodyKind::Length(n) if n > max as u64 => return Err(BodyError::TooLarge),
            BodyKind::Length(n) => n,
            _ => 0,
        };
        Ok(BodyDecoder {
            kind,
            chunk: Chunk::Size {
                value: 0,
                digits: 0,
            },
            left,
            body: BytesMut::new(),
            max,
            line: 0,
            done: kind == BodyKind::Empty,
        })
    }

    /// Whether the whole body was read.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes the body's bytes from the front of `data` (leaving what follows it); `Ok(true)` once the
    /// body is complete.
    pub fn feed(&mut self, data: &mut BytesMut) -> Result<bool, BodyError> {
        match self.kind {
            BodyKind::Empty => {}
            BodyKind::Length(_) => {
                let n = (self.left as usize).min(data.len());
                self.body.extend_from_slice(&data.split_to(n));
                self.left -= n as u64;
                self.done = self.left == 0;
            }
            BodyKind::UntilClose => {
                if self.body.len() + data.len() > self.max {
                    return Err(BodyError::TooLarge);
                }
                self.body.extend_from_slice(&data.split_to(data.len()));
            }
            BodyKind::Chunked => self.feed_chunked(data)?,
        }
        Ok(self.done)
    }

    /// The connection ended: completes a body framed by the close, else [`BodyError::Truncated`].
    pub fn finish_eof(&mut self) -> Result<(), BodyError> {
        match self.kind {
            BodyKind::UntilClose => {
                self.done = true;
                Ok(())
            }
            _ if self.done => Ok(()),
            _ => Err(BodyError::Truncated),
        }
    }

    /// The body read so far.
    pub fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body).freeze()
    }

    fn line_byte(&mut self, limit: usize) -> Result<(), BodyError> {
        self.line += 1;
        if self.line > limit {
            return Err(BodyError::Malformed("line too long"));
        }
        Ok(())
    }

    fn feed_chunked(&mut self, data: &mut BytesMut) -> Result<(), BodyError> {
        let bad = |why| Err(BodyError::Malformed(why));
        let mut i = 0;
        while i < data.len() && self.chunk != Chunk::Done {
            if let Chunk::Data { left } = self.chunk {
                let n = (left as usize).min(data.len() - i);
                self.body.extend_from_slice(&data[i..i + n]);
                i += n;
                self.chunk = if left == n as u64 {
                    Chunk::DataCr
                } else {
                    Chunk::Data {
                        left: left - n as u64,
                    }
                };
                continue;
            }
            let b = data[i];
            i += 1;
            self.chunk = match self.chunk {
                Chunk::Size { value, digits } => {
                    self.line_byte(MAX_CHUNK_LINE)?;
                    match (b as char).to_digit(16) {
                        Some(d) if digits < 16 => Chunk::Size {
                            value: value << 4 | u64::from(d),
                            digits: digits + 1,
                        },
                        Some(_) => return bad("chunk size too long"),
                        None if digits == 0 => return bad("chunk size expected"),
                        None if b == b';' => Chunk::Ext { value },
                        None if b == b'\r' => Chunk::SizeLf { value },
                        None => return bad("invalid chunk size"),
                    }
                }
                Chunk::Ext { value } => {
                    self.line_byte(MAX_CHUNK_LINE)?;
                    match b {
                        b'\r' => Chunk::SizeLf { value },
                        b'\n' => return bad("bare LF"),
                        _ => Chunk::Ext { value },
                    }
                }
                Chunk::SizeLf { value } => {
                    if b != b'\n' {
                        return bad("CR without LF");
                    }
                    self.line = 0;
                    if value == 0 {
                        Chunk::TrailerStart
                    } else if value > (self.max - self.body.len()) as u64 {
                        return Err(BodyError::TooLarge);
                    } else {
                        Chunk::Data { left: value }
                    }
                }
                Chunk::DataCr if b == b'\r' => Chunk::DataLf,
                Chunk::DataLf if b == b'\n' => Chunk::Size {
                    value: 0,
                    digits: 0,
                },
                Chunk::DataCr | Chunk::DataLf => return bad("chunk data not followed by CRLF"),
                Chunk::TrailerStart if b == b'\r' => Chunk::EndLf,
                Chunk::TrailerStart | Chunk::TrailerLine => {
                    self.line_byte(MAX_TRAILERS)?;
                    match b {
                        b'\r' => Chunk::TrailerLf,
                        b'\n' => return bad("bare LF"),
                        _ => Chunk::TrailerLine,
                    }
                }
                Chunk::TrailerLf if b == b'\n' => Chunk::TrailerStart,
                Chunk::EndLf if b == b'\n' => Chunk::Done,
                Chunk::TrailerLf | Chunk::EndLf => return bad("CR without LF"),
                Chunk::Data { .. } | Chunk::Done => unreachable!("handled above"),
            };
        }
        let _ = data.split_to(i);
        self.done = self.chunk == Chunk::Done;
        Ok(())
    }
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResponse {
    /// The final (non-1xx) head.
    pub head: ResponseHead,
    /// The body, decoded.
    pub body: Bytes,
    /// Whether the framing lets the connection carry another request: HTTP/1.1, no
    /// `Connection: close`, a body not framed by the close (see also [`ResponseReader::unsolicited`]).
    pub keep_alive: bool,
}

#[derive(Debug)]
enum Reading {
    Head(HeadReader),
    Body {
        head: Box<ResponseHead>,
        body: BodyDecoder,
        keep_alive: bool,
    },
    Done,
}

/// Reads one response to a request (not `HEAD`) within size caps; errors are 502 [`HttpError`]s.
#[derive(Debug)]
pub struct ResponseReader {
    state: Reading,
    max_head: usize,
    max_headers: usize,
    max_body: usize,
    /// Bytes arrived after the response (a broken or hostile server): no keep-alive.
    extra: bool,
}

impl ResponseReader {
    /// A reader for a head of at most `max_head` bytes and `max_headers` fields and a body of at most
    /// `max_body` bytes.
    pub fn new(max_head: usize, max_headers: usize, max_body: usize) -> Self {
        ResponseReader {
            state: Reading::Head(HeadReader::new(max_head, max_headers)),
            max_head,
            max_headers,
            max_body,
            extra: false,
        }
    }

    /// Whether any byte of the response arrived yet.
    pub fn started(&self) -> bool {
        !matches!(&self.state, Reading::Head(h) if h.buffered() == 0)
    }

    /// Bytes arrived after the response (in the same read or later): a broken or hostile server, whose
    /// connection must not be reused whatever [`ClientResponse::keep_alive`] says.
    pub fn unsolicited(&self) -> bool {
        self.extra
    }

    /// Bytes read from the connection; the response once complete (once).
    pub fn feed(&mut self, data: &[u8]) -> Result<Option<ClientResponse>, HttpError> {
        let mut data = BytesMut::from(data);
        loop {
            match &mut self.state {
                Reading::Done => {
                    self.extra |= !data.is_empty();
                    return Ok(None);
                }
                Reading::Head(reader) => {
                    reader.feed(&data);
                    let Some(head) = reader.poll_response()? else {
                        return Ok(None);
                    };
                    data = reader.take_remainder();
                    if head.status < 100 {
                        return Err(HttpError::new(502, "invalid response status"));
                    }
                    if (100..200).contains(&head.status) {
                        if head.status == 101 {
                            return Err(HttpError::new(502, "unexpected 101 response"));
                        }
                        self.state =
                            Reading::Head(HeadReader::new(self.max_head, self.max_headers));
                        continue;
                    }
                    let kind = if head.status == 204 || head.status == 304 {
                        BodyKind::Empty
                    } else {
                        BodyKind::of(&head.headers, BodyKind::UntilClose)
                            .map_err(|why| HttpError::new(502, why))?
                    };
                    let keep_alive = head.version == 1
                        && !head.headers.has_token("connection", "close")
                        && kind != BodyKind::UntilClose;
                    let body = BodyDecoder::new(kind, self.max_body).map_err(body_error)?;
                    self.state = Reading::Body {
                        head: Box::new(head),
                        body,
                        keep_alive,
                    };
                }
                Reading::Body { body, .. } => {
                    if body.feed(&mut data).map_err(body_error)? || body.is_done() {
                        self.extra |= !data.is_empty();
                        return Ok(self.complete());
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// The connection ended: the response if it was framed by the close, else an error (also when
    /// nothing arrived at all).
    pub fn eof(&mut self) -> Result<Option<ClientResponse>, HttpError> {
        match &mut self.state {
            Reading::Done => Ok(None),
            Reading::Head(_) => Err(HttpError::new(502, "connection closed before a response")),
            Reading::Body { body, .. } => {
                body.finish_eof().map_err(body_error)?;
                Ok(self.complete())
            }
        }
    }

    fn complete(&mut self) -> Option<ClientResponse> {
        match std::mem::replace(&mut self.state, Reading::Done) {
            Reading::Body {
                head,
                mut body,
                keep_alive,
            } => Some(ClientResponse {
                head: *head,
                body: body.take_body(),
                keep_alive,
            }),
            other => {
                self.state = other;
                None
            }
        }
    }
}

fn body_error(e: BodyError) -> HttpError {
    match e {
        BodyError::TooLarge => HttpError::new(502, "response body too large"),
        BodyError::Malformed(_) => HttpError::new(502, "malformed chunked response body"),
        BodyError::Truncated => HttpError::new(502, "response body truncated"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn read_all<'a>(
        chunks: impl IntoIterator<Item = &'a [u8]>,
        eof: bool,
    ) -> Result<Option<ClientResponse>, HttpError> {
        let mut r = ResponseReader::new(1024, 16, 256);
        let mut out = None;
        for c in chunks {
            if let Some(resp) = r.feed(c)? {
                out = Some(resp);
            }
        }
        if eof && out.is_none() {
            out = r.eof()?;
        }
        Ok(out)
    }

    #[test]
    fn request_is_complete_and_refuses_injection() {
        let r = encode_request(
            "POST",
            "b.test:8080",
            "/frame?x=1",
            &[("Content-Type", "text/plain;charset=UTF-8")],
            b"hi",
        )
        .unwrap();
        assert_eq!(
            &r[..],
            b"POST /frame?x=1 HTTP/1.1\r\nHost: b.test:8080\r\nContent-Type: text/plain;charset=UTF-8\r\n\
              Content-Length: 2\r\n\r\nhi"
        );
        for (m, h, t, hdr) in [
            ("PO ST", "h", "/", ("a", "b")),
            ("POST", "h\r\nX: y", "/", ("a", "b")),
            ("POST", "h", "/a b", ("a", "b")),
            ("POST", "h", "/a\r\nX: y", ("a", "b")),
            ("POST", "h", "http://x/", ("a", "b")),
            ("POST", "h", "/", ("a", "b\r\nX: y")),
            ("POST", "h", "/", ("a b", "c")),
            ("POST", "h", "/", ("Content-Length", "5")),
            ("POST", "h", "/", ("transfer-encoding", "chunked")),
        ] {
            assert!(
                encode_request(m, h, t, &[hdr], b"").is_err(),
                "{m} {h} {t} {hdr:?}"
            );
        }
    }

    #[test]
    fn content_length_and_keep_alive() {
        let r = read_all(
            [&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"[..]],
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (r.head.status, &r.body[..], r.keep_alive),
            (200, &b"hello"[..], true)
        );
        let r = read_all(
            [&b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"[..]],
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!r.keep_alive);
        let r = read_all(
            [&b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"[..]],
            false,
        )
        .unwrap()
        .unwrap();
        assert!(!r.keep_alive, "HTTP/1.0");
        let r = read_all([&b"HTTP/1.1 204 No Content\r\n\r\n"[..]], false)
            .unwrap()
            .unwrap();
        assert!(r.keep_alive && r.body.is_empty());
    }

    #[test]
    fn interim_heads_are_skipped_and_until_close_needs_eof() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nuntil close";
        assert_eq!(read_all([&input[..]], false).unwrap(), None);
        let r = read_all([&input[..]], true).unwrap().unwrap();
        assert_eq!((&r.body[..], r.keep_alive), (&b"until close"[..], false));
    }

    #[test]
    fn chunked_with_extensions_and_trailers() {
        let input = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                      5;ext=1\r\nhello\r\nA\r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        let r = read_all([&input[..]], false).unwrap().unwrap();
        assert_eq!(&r.body[..], b"hello0123456789");
        assert!(r.keep_alive);
    }

    #[test]
    fn strict_framing_and_caps() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n11111111111111111\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n101\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 257\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"HTTP/1.1 003 \nh:0\r\n\r\n",
        ] {
            let e = read_all([bad], false).expect_err(&String::from_utf8_lossy(bad));
            assert_eq!(e.status, 502);
        }
        let mut r = ResponseReader::new(1024, 16, 256);
        r.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc")
            .unwrap();
        assert!(r.eof().is_err(), "truncated");
        let mut r = ResponseReader::new(1024, 16, 4);
        r.feed(b"HTTP/1.1 200 OK\r\n\r\nabc").unwrap();
        assert!(r.feed(b"de").is_err(), "until-close body over the cap");
    }

    #[test]
    fn unsolicited_bytes_end_keep_alive() {
        let r = read_all(
            [&b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxHTTP/1.1 200 OK\r\n"[..]],
            false,
        )
        .unwrap()
        .unwrap();
        assert!(r.keep_alive, "the framing alone");
        let mut reader = ResponseReader::new(1024, 16, 256);
        let resp = reader
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
            .unwrap();
        assert!(resp.is_some() && !reader.unsolicited());
        reader.feed(b"H").unwrap();
        assert!(reader.unsolicited());
        let mut reader = ResponseReader::new(1024, 16, 256);
        reader
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nxy")
            .unwrap();
        assert!(reader.unsolicited(), "in the same read");
    }

    #[test]
    fn request_bodies_default_to_empty() {
        let h = Headers::new();
        assert_eq!(BodyKind::of(&h, BodyKind::Empty), Ok(BodyKind::Empty));
        let mut d = BodyDecoder::new(BodyKind::Length(3), 3).unwrap();
        let mut data = BytesMut::from(&b"abcdef"[..]);
        assert_eq!(d.feed(&mut data), Ok(true));
        assert_eq!(&data[..], b"def");
        assert_eq!(&d.take_body()[..], b"abc");
        assert!(BodyDecoder::new(BodyKind::Length(4), 3).is_err());
    }

    fn arb_response() -> impl Strategy<Value = Vec<u8>> {
        (
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..5),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(chunks, chunked, interim)| {
                let mut v = Vec::new();
                if interim {
                    v.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                let body: Vec<u8> = chunks.concat();
                if chunked {
                    v.extend_from_slice(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
                    for c in &chunks {
                        v.extend_from_slice(format!("{:x};e=1\r\n", c.len()).as_bytes());
                        v.extend_from_slice(c);
                        v.extend_from_slice(b"\r\n");
                    }
                    v.extend_from_slice(b"0\r\nT: x\r\n\r\n");
                } else {
                    v.extend_from_slice(
                        format!(
                            "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    );
                    v.extend_from_slice(&body);
                }
                v
            })
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_same_response(
            input in arb_response(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
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
            let whole = read_all([&input[..]], false);
            prop_assert!(matches!(whole, Ok(Some(_))));
            prop_assert_eq!(read_all(chunks, false), whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            input in proptest::collection::vec(any::<u8>(), 0..400),
            step in 1usize..50,
        ) {
            let mut r = ResponseReader::new(256, 8, 128);
            for c in input.chunks(step) {
                if r.feed(c).is_err() {
                    break;
                }
            }
            let _ = r.eof();
            let mut d = BodyDecoder::new(BodyKind::Chunked, 64).unwrap();
            let mut data = BytesMut::from(&input[..]);
            let _ = d.feed(&mut data);
        }

        #[test]
        fn chunked_prefix_garbage_never_panics(
            tail in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b'a'), Just(b';'), Just(b'f')],
                0..200,
            )
        ) {
            let mut v = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            v.extend(tail);
            let _ = read_all(v.chunks(3), true);
        }
    }
}
