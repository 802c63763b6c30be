//! Responses: [`ResponseHead`], an owned parsed response head (the client side of a handshake), and
//! [`Response`], a builder for the short complete responses the core writes itself.

use bytes::{BufMut, Bytes, BytesMut};

use crate::http::headers::{is_field_value, is_token, Headers};
use crate::http::HttpError;

/// An HTTP/1.x response head (status line and header fields; no body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code, 100..=999 as far as the syntax goes.
    pub status: u16,
    /// The reason phrase as sent (empty when the peer sent none or sent non-ASCII).
    pub reason: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header fields in order, names as sent.
    pub headers: Headers,
}

/// A response head from a peer is refused with 502: the status a bridge reports when its backend's answer
/// is unusable.
const BAD_RESPONSE: HttpError = HttpError::new(502, "malformed response head");

impl ResponseHead {
    /// Parses one complete head, `head` being exactly the bytes up to and including the blank line.
    ///
    /// Every error is a 502 ([`HttpError`] on the client side): malformed, not HTTP/1.x, more than
    /// `max_headers` fields, or a head that ends before the end of `head`.
    pub fn parse(head: &[u8], max_headers: usize) -> Result<ResponseHead, HttpError> {
        let mut slots: Vec<httparse::Header<'_>> = vec![httparse::EMPTY_HEADER; max_headers];
        let mut resp = httparse::Response::new(&mut slots);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::new(502, "too many header fields in response"))
            }
            Ok(_) | Err(_) => return Err(BAD_RESPONSE),
        }
        let (Some(status), Some(version)) = (resp.code, resp.version) else {
            return Err(BAD_RESPONSE);
        };
        let mut headers = Headers::new();
        for h in resp.headers.iter() {
            headers.push(h.name.to_owned(), h.value.to_vec());
        }
        Ok(ResponseHead {
            status,
            reason: resp.reason.unwrap_or_default().to_owned(),
            version,
            headers,
        })
    }
}

/// A complete HTTP/1.1 response to serialize: status line, headers, `Content-Length`, body.
///
/// ```
/// # use wsbridge_core::http::response::Response;
/// let bytes = Response::new(200).header("Content-Type", "text/plain").body("ok\n").to_bytes();
/// assert!(bytes.starts_with(b"HTTP/1.1 200 OK\r\n"));
/// ```
///
/// Contract: the builder writes `Content-Length` itself (a caller-supplied one is ignored), except for
/// 1xx, 204 and 304 responses, which carry neither `Content-Length` nor a body (RFC 9110 §8.6, RFC 9112
/// §6.3). A field whose name is not a token or whose value fails
/// [`is_field_value`] (CR, LF, NUL …) is dropped, so no input can split the head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Headers,
    body: Bytes,
}

impl Response {
    /// A response with this status (100..=599), no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header field (after those added before). Invalid fields and `Content-Length` are dropped,
    /// see the type's contract.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        if is_token(name.as_bytes())
            && is_field_value(value.as_bytes())
            && !name.eq_ignore_ascii_case("content-length")
        {
            self.headers
                .push(name.to_owned(), value.as_bytes().to_vec());
        }
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Serializes the response: `HTTP/1.1 <status> <text>`, the headers in order, `Content-Length`, the
    /// blank line and the body.
    pub fn to_bytes(&self) -> Bytes {
        let bodiless: bool = self.status < 200 || self.status == 204 || self.status == 304;
        let mut out = BytesMut::with_capacity(128 + self.body.len());
        out.put_slice(
            format!("HTTP/1.1 {} {}\r\n", self.status, status_text(self.status)).as_bytes(),
        );
        for (name, value) in self.headers.iter() {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value);
            out.put_slice(b"\r\n");
        }
        if !bodiless {
            out.put_slice(format!("Content-Length: {}\r\n", self.body.len()).as_bytes());
        }
        out.put_slice(b"\r\n");
        if !bodiless {
            out.put_slice(&self.body);
        }
        out.freeze()
    }
}

/// The standard reason phrase of the statuses the bridge uses; `""` for others (an empty reason phrase is
/// valid HTTP).
pub fn status_text(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(b: &Bytes) -> &str {
        std::str::from_utf8(b).expect("ASCII")
    }

    #[test]
    fn parses_status_line_and_headers() {
        let h = ResponseHead::parse(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            8,
        )
        .expect("valid");
        assert_eq!(h.status, 101);
        assert_eq!(h.reason, "Switching Protocols");
        assert_eq!(h.version, 1);
        assert_eq!(h.headers.get("upgrade"), Some(&b"websocket"[..]));
        assert_eq!(h.headers.get_str("CONNECTION"), Some("Upgrade"));
        assert!(h.headers.has_token("connection", "upgrade"));
        assert_eq!(h.headers.get_all("upgrade").count(), 1);
    }

    #[test]
    fn parse_errors_are_502() {
        for bad in [
            &b"HTTP/1.1 abc OK\r\n\r\n"[..],
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.1 200 OK\nA: b\n\nC: d\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n",
        ] {
            let e = ResponseHead::parse(bad, 2).expect_err("refused");
            assert_eq!(e.status, 502, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn empty_reason_is_fine() {
        let h = ResponseHead::parse(b"HTTP/1.0 204 \r\n\r\n", 4).expect("valid");
        assert_eq!((h.status, h.reason.as_str(), h.version), (204, "", 0));
    }

    #[test]
    fn builder_writes_content_length_last() {
        let b = Response::new(200)
            .header("Content-Type", "text/plain")
            .header("Content-Length", "999")
            .body("hello")
            .to_bytes();
        assert_eq!(
            s(&b),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
        );
    }

    #[test]
    fn builder_drops_injected_fields() {
        let b = Response::new(404)
            .header("X-Ok", "fine")
            .header("X-Bad", "a\r\nSet-Cookie: evil")
            .header("Bad Name", "x")
            .header("X-Nul", "a\0b")
            .header("", "x")
            .to_bytes();
        assert_eq!(
            s(&b),
            "HTTP/1.1 404 Not Found\r\nX-Ok: fine\r\nContent-Length: 0\r\n\r\n"
        );
    }

    #[test]
    fn informational_and_no_content_have_no_body_or_length() {
        for status in [101u16, 204, 304] {
            let b = Response::new(status)
                .header("A", "b")
                .body("ignored")
                .to_bytes();
            let text = s(&b);
            assert!(!text.contains("Content-Length"), "{text}");
            assert!(text.ends_with("A: b\r\n\r\n"), "{text}");
        }
    }

    #[test]
    fn unknown_status_has_empty_reason() {
        let b = Response::new(299).to_bytes();
        assert!(s(&b).starts_with("HTTP/1.1 299 \r\n"));
        let parsed = ResponseHead::parse(&b, 4).expect("valid HTTP");
        assert_eq!(parsed.status, 299);
    }

    proptest! {
        #[test]
        fn builder_output_always_parses_back(
            status in prop_oneof![200u16..204, 205u16..304, 305u16..600],
            fields in proptest::collection::vec((".{0,12}", ".{0,20}"), 0..6),
            body in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut r = Response::new(status);
            for (n, v) in &fields {
                r = r.header(n, v);
            }
            let bytes = r.body(body.clone()).to_bytes();
            let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").expect("head ends") + 4;
            let head = ResponseHead::parse(&bytes[..end], 16).expect("parses");
            prop_assert_eq!(head.status, status);
            let kept = fields
                .iter()
                .filter(|(n, v)| is_token(n.as_bytes()) && is_field_value(v.as_bytes())
                    && !n.eq_ignore_ascii_case("content-length"))
                .count();
            prop_assert_eq!(head.headers.len(), kept + 1);
            let expected_len = body.len().to_string();
            prop_assert_eq!(head.headers.get_str("content-length"), Some(expected_len.as_str()));
            prop_assert_eq!(&bytes[end..], &body[..]);
        }

        #[test]
        fn parse_never_panics(head in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..8) {
            let _ = ResponseHead::parse(&head, n);
        }
    }
}
