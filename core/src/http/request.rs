//! [`Request`]: an owned HTTP/1.x request head, parsed by httparse.

use crate::http::headers::Headers;
use crate::http::HttpError;

/// An HTTP/1.0 or HTTP/1.1 request head (request line and header fields; no body).
///
/// Parsing accepts both versions so that plain endpoints such as `/healthz` answer HTTP/1.0 probes;
/// [`validate_upgrade`](crate::ws::handshake::validate_upgrade) is what insists on HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method as sent, e.g. `GET` (methods are case-sensitive).
    pub method: String,
    /// The request target as sent: for origin-form `path?query`, e.g. `/connect?f=http%3A%2F%2Fa`.
    pub target: String,
    /// The minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header fields in order, names as sent.
    pub headers: Headers,
}

impl Request {
    /// Parses one complete head, `head` being exactly the bytes up to and including the blank line.
    ///
    /// Errors: more than `max_headers` fields → 431; a version other than HTTP/1.0 or 1.1 → 505; anything
    /// malformed, or a head that ends before the end of `head` (e.g. bare-LF line ends) → 400.
    pub fn parse(head: &[u8], max_headers: usize) -> Result<Request, HttpError> {
        let mut slots: Vec<httparse::Header<'_>> = vec![httparse::EMPTY_HEADER; max_headers];
        let mut req = httparse::Request::new(&mut slots);
        match req.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(HttpError::new(400, "malformed request head")),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(HttpError::new(431, "too many header fields"))
            }
            Err(httparse::Error::Version) => {
                return Err(HttpError::new(505, "only HTTP/1.1 is supported"))
            }
            Err(_) => return Err(HttpError::new(400, "malformed request head")),
        }
        let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version)
        else {
            return Err(HttpError::new(400, "malformed request head"));
        };
        let mut headers = Headers::new();
        for h in req.headers.iter() {
            headers.push(h.name.to_owned(), h.value.to_vec());
        }
        Ok(Request {
            method: method.to_owned(),
            target: target.to_owned(),
            version,
            headers,
        })
    }

    /// The target up to (not including) the first `?`, still percent-encoded.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(p, _)| p)
    }

    /// The target after the first `?`, still percent-encoded; `None` when there is no `?`.
    pub fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first value of the `application/x-www-form-urlencoded` query parameter `key`, decoded (`+` is a
    /// space, `%XX` a byte). Keys are compared after decoding. `None` when absent, or when the first
    /// occurrence has an invalid escape or does not decode to UTF-8.
    pub fn query_param(&self, key: &str) -> Option<String> {
        let query = self.query()?;
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            if form_decode(k).as_deref() == Some(key) {
                return form_decode(v);
            }
        }
        None
    }

    /// The `Host` header as UTF-8.
    pub fn host(&self) -> Option<&str> {
        self.headers.get_str("host")
    }

    /// The `Origin` header as UTF-8 (browsers send it on every WebSocket upgrade).
    pub fn origin(&self) -> Option<&str> {
        self.headers.get_str("origin")
    }
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` → space, `%XX` → byte, result UTF-8.
fn form_decode(s: &str) -> Option<String> {
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hi = hex_digit(bytes.next()?)?;
                let lo = hex_digit(bytes.next()?)?;
                out.push(hi << 4 | lo);
            }
            other => out.push(other),
        }
    }
    String::from_utf8(out).ok()
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Result<Request, HttpError> {
        Request::parse(s.as_bytes(), 16)
    }

    fn req(target: &str) -> Request {
        parse(&format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n")).expect("valid")
    }

    #[test]
    fn parses_line_and_headers_in_order() {
        let r = parse(
            "GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: keep-alive,  Upgrade\r\nX-A: 1\r\nx-a:  2 \r\n\r\n",
        )
        .expect("valid");
        assert_eq!(r.method, "GET");
        assert_eq!(r.target, "/chat?x=1");
        assert_eq!(r.version, 1);
        assert_eq!(r.host(), Some("server.example.com"));
        assert_eq!(r.origin(), None);
        assert_eq!(r.headers.get("UPGRADE"), Some(&b"websocket"[..]));
        assert_eq!(r.headers.get_str("x-a"), Some("1"));
        let all: Vec<&[u8]> = r.headers.get_all("X-A").collect();
        assert_eq!(all, vec![&b"1"[..], &b"2"[..]], "values are trimmed");
        assert!(r.headers.has_token("connection", "upgrade"));
        let names: Vec<&str> = r.headers.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["Host", "Upgrade", "Connection", "X-A", "x-a"]);
    }

    #[test]
    fn http10_parses() {
        let r = parse("GET /healthz HTTP/1.0\r\n\r\n").expect("valid");
        assert_eq!(r.version, 0);
        assert_eq!(r.host(), None);
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(
            parse("GET / HTTP/2.0\r\n\r\n").map_err(|e| e.status),
            Err(505)
        );
        assert_eq!(
            parse("GET / HTTP/1.2\r\n\r\n").map_err(|e| e.status),
            Err(505)
        );
        assert_eq!(parse("GET /\r\n\r\n").map_err(|e| e.status), Err(400));
        assert_eq!(
            parse("GET  / HTTP/1.1\r\n\r\n").map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n").map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\nA: x\r\n folded\r\n\r\n").map_err(|e| e.status),
            Err(400)
        );
        assert_eq!(
            parse("GET / HTTP/1.1\r\n").map_err(|e| e.status),
            Err(400),
            "incomplete"
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(17));
        assert_eq!(parse(&many).map_err(|e| e.status), Err(431));
        let exactly = format!("GET / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(16));
        assert!(parse(&exactly).is_ok());
    }

    #[test]
    fn head_must_fill_the_whole_slice() {
        // A bare-LF head ends early; the rest would be smuggled past the parser.
        let r = Request::parse(b"GET / HTTP/1.1\nHost: a\n\nX: y\r\n\r\n", 16);
        assert_eq!(r.map_err(|e| e.status), Err(400));
    }

    #[test]
    fn path_and_query() {
        assert_eq!(req("/a/b?c=d?e").path(), "/a/b");
        assert_eq!(req("/a/b?c=d?e").query(), Some("c=d?e"));
        assert_eq!(req("/a").query(), None);
        assert_eq!(req("/a?").query(), Some(""));
        assert_eq!(req("*").path(), "*");
    }

    #[test]
    fn query_param_decodes() {
        let r = req("/connect?f=http%3A%2F%2Fa.example%2Fon%20frame&d=x+y&flag&e=&f=second");
        assert_eq!(
            r.query_param("f").as_deref(),
            Some("http://a.example/on frame")
        );
        assert_eq!(r.query_param("d").as_deref(), Some("x y"));
        assert_eq!(r.query_param("flag").as_deref(), Some(""));
        assert_eq!(r.query_param("e").as_deref(), Some(""));
        assert_eq!(r.query_param("missing"), None);
        assert_eq!(req("/x").query_param("f"), None);
        assert_eq!(
            req("/x?%66=1").query_param("f").as_deref(),
            Some("1"),
            "keys decode"
        );
        assert_eq!(req("/x?u=%C3%A9").query_param("u").as_deref(), Some("é"));
    }

    #[test]
    fn query_param_rejects_bad_escapes() {
        for bad in ["%", "%4", "%zz", "%4g", "%FF"] {
            let r = req(&format!("/x?v={bad}"));
            assert_eq!(r.query_param("v"), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn form_decode_inverts_encoding(s in ".*") {
            let mut enc = String::new();
            for b in s.bytes() {
                match b {
                    b' ' => enc.push('+'),
                    b'a'..=b'z' | b'0'..=b'9' => enc.push(b as char),
                    _ => enc.push_str(&format!("%{b:02X}")),
                }
            }
            prop_assert_eq!(form_decode(&enc), Some(s));
        }

        #[test]
        fn parse_never_panics(head in proptest::collection::vec(any::<u8>(), 0..200), n in 0usize..8) {
            let _ = Request::parse(&head, n);
        }
    }
}
