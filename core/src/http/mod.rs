//! HTTP/1.1 heads: just enough HTTP for the WebSocket opening handshake and the bridge's small endpoints.
//!
//! - [`client`]: the sans-IO HTTP/1.1 client codec (requests, response bodies, keep-alive), and body
//!   framing shared with servers;
//! - [`head`]: [`head::HeadReader`] buffers bytes until a complete head (bounded, linear time) and parses it;
//! - [`headers`]: [`headers::Headers`], the ordered header list with the lookups both heads share;
//! - [`request`]: [`request::Request`], an owned request head with path, query and header helpers;
//! - [`response`]: [`response::ResponseHead`], an owned response head, and [`response::Response`], a
//!   builder for the short responses the core writes itself.
//!
//! Bodies are not parsed here: a head is all a WebSocket upgrade needs, and whatever follows it (pipelined
//! frames, a body) is handed back untouched by [`head::HeadReader::take_remainder`].

pub mod client;
pub mod head;
pub mod headers;
pub mod request;
pub mod response;

use std::fmt;

use bytes::Bytes;

use crate::http::response::{status_text, Response};

/// Why a head was refused, as an HTTP status.
///
/// On the server side `status` is what the server answers with (400, 405, 426, 431, 505 …), see
/// [`HttpError::response`]. On the client side (a response head the peer sent) it is 502 Bad Gateway: the
/// status a bridge reports to its own client when the backend's answer was unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HttpError {
    /// The HTTP status code, 100..=599.
    pub status: u16,
    /// A short, fixed explanation: the body of the error response and the text of `Display`.
    pub reason: &'static str,
}

impl HttpError {
    /// An error with this status and reason.
    pub const fn new(status: u16, reason: &'static str) -> Self {
        HttpError { status, reason }
    }

    /// A complete `Connection: close` response for this error, body `<reason>\n` as `text/plain`.
    ///
    /// 426 also carries `Upgrade: websocket` and `Sec-WebSocket-Version: 13` (RFC 6455 §4.4), 405 carries
    /// `Allow: GET`. The driver writes these bytes and then closes the connection.
    pub fn response(&self) -> Bytes {
        let mut response: Response = Response::new(self.status)
            .header("Content-Type", "text/plain; charset=utf-8")
            .header("Connection", "close");
        match self.status {
            405 => response = response.header("Allow", "GET"),
            426 => {
                response = response
                    .header("Upgrade", "websocket")
                    .header("Sec-WebSocket-Version", "13")
            }
            _ => {}
        }
        response.body(format!("{}\n", self.reason)).to_bytes()
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status,
            status_text(self.status),
            self.reason
        )
    }
}

impl std::error::Error for HttpError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).expect("responses are ASCII")
    }

    #[test]
    fn bad_request_response_is_complete_and_closes() {
        let e = HttpError::new(400, "missing Host header");
        let r = e.response();
        assert_eq!(
            text(&r),
            "HTTP/1.1 400 Bad Request\r\n\
             Content-Type: text/plain; charset=utf-8\r\n\
             Connection: close\r\n\
             Content-Length: 20\r\n\
             \r\n\
             missing Host header\n"
        );
    }

    #[test]
    fn upgrade_required_names_the_version() {
        let r = HttpError::new(426, "WebSocket version 13 required").response();
        let s = text(&r);
        assert!(s.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(s.contains("\r\nUpgrade: websocket\r\n"));
        assert!(s.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(s.ends_with("\r\n\r\nWebSocket version 13 required\n"));
    }

    #[test]
    fn method_not_allowed_names_get() {
        let r = HttpError::new(405, "WebSocket upgrade requires GET").response();
        let s = text(&r);
        assert!(s.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(s.contains("\r\nAllow: GET\r\n"));
        assert!(!s.contains("Upgrade:"));
    }

    #[test]
    fn response_parses_back_with_its_content_length() {
        for status in [400u16, 405, 426, 431, 502, 505] {
            let e = HttpError::new(status, "some reason");
            let bytes = e.response();
            let mut reader = head::HeadReader::new(1024, 16);
            reader.feed(&bytes);
            let head = reader.poll_response().expect("valid").expect("complete");
            assert_eq!(head.status, status);
            assert_eq!(head.headers.get_str("content-length"), Some("12"));
            assert_eq!(&reader.take_remainder()[..], b"some reason\n");
        }
    }

    #[test]
    fn display_names_status_and_reason() {
        let e = HttpError::new(431, "request head too large");
        assert_eq!(
            e.to_string(),
            "431 Request Header Fields Too Large: request head too large"
        );
        let boxed: Box<dyn std::error::Error> = Box::new(e);
        assert!(boxed.to_string().starts_with("431"));
    }
}
