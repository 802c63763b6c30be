//! The RFC 6455 §4 opening handshake, both roles, over the heads of [`crate::http`].
//!
//! Server contract (the driver or mode holds no protocol logic beyond the policy step):
//! 1. feed every byte read to a [`HeadReader`](crate::http::head::HeadReader) and
//!    [`poll_request`](crate::http::head::HeadReader::poll_request) until it returns a [`Request`];
//!    on `Err(e)` write [`e.response()`](HttpError::response) and close;
//! 2. the mode decides on path, query, `Origin` and other headers (it may refuse with its own
//!    [`HttpError`]), then calls [`validate_upgrade`]; on `Err(e)` write `e.response()` and close;
//! 3. pick a subprotocol with [`choose_protocol`] and write [`accept_response`] (the 101);
//! 4. hand [`take_remainder`](crate::http::head::HeadReader::take_remainder) (frames the client pipelined
//!    behind its request) to the WebSocket engine before any further byte read from the socket.
//!
//! Client contract:
//! 1. [`ClientHandshake::new`] with entropy for the key; write the request bytes it returns;
//! 2. feed every byte read to a `HeadReader` and
//!    [`poll_response`](crate::http::head::HeadReader::poll_response) until a
//!    [`ResponseHead`];
//! 3. [`ClientHandshake::validate`] it: `Ok(protocol)` means the connection is a WebSocket, with the
//!    subprotocol the server chose; hand the reader's remainder (frames the server sent right after its
//!    101) to the engine. Any error fails the connection ([`HandshakeError::Status`] carries the backend's
//!    status for reporting).
//!
//! No extension is ever negotiated: the server never offers one, the client refuses any.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::{BufMut, Bytes, BytesMut};

use crate::entropy::Entropy;
use crate::http::headers::{is_field_value, is_token};
use crate::http::request::Request;
use crate::http::response::{Response, ResponseHead};
use crate::http::HttpError;

/// The GUID RFC 6455 §1.3 appends to the key before hashing.
const WS_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The header fields the handshake itself writes; callers may not add them as extra headers.
const HANDSHAKE_FIELDS: [&str; 8] = [
    "host",
    "upgrade",
    "connection",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "sec-websocket-accept",
];

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key ++ GUID)).
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key);
    sha.update(WS_GUID);
    BASE64.encode(sha.digest().bytes())
}

/// What a valid upgrade request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeInfo {
    /// The `Sec-WebSocket-Key` as sent (24 base64 characters of 16 bytes).
    pub key: String,
    /// The subprotocols offered in `Sec-WebSocket-Protocol`, across all its fields, in the client's order.
    pub protocols: Vec<String>,
    /// The `Origin` header, if any (browsers always send it).
    pub origin: Option<String>,
}

/// Checks that `req` is a WebSocket upgrade (RFC 6455 §4.2.1), in this order:
///
/// | check | failure |
/// |---|---|
/// | method is `GET` | 405 (the response carries `Allow: GET`) |
/// | HTTP/1.1 | 505 |
/// | exactly one `Host` | 400 |
/// | `Upgrade` lists `websocket` | 426 (plain HTTP to a WebSocket endpoint) |
/// | `Connection` lists `upgrade` | 400 |
/// | exactly one `Sec-WebSocket-Version`, `13` | 426 (the response carries `Sec-WebSocket-Version: 13`) |
/// | exactly one `Sec-WebSocket-Key`, base64 of 16 bytes | 400 |
/// | at most one `Origin`, UTF-8 | 400 |
/// | subprotocols are tokens | 400 |
///
/// Token comparisons are ASCII case-insensitive and span every field of a list header.
pub fn validate_upgrade(req: &Request) -> Result<UpgradeInfo, HttpError> {
    if req.method != "GET" {
        return Err(HttpError::new(405, "WebSocket upgrade requires GET"));
    }
    if req.version != 1 {
        return Err(HttpError::new(505, "WebSocket upgrade requires HTTP/1.1"));
    }
    if req.headers.count("host") != 1 {
        return Err(HttpError::new(400, "exactly one Host header required"));
    }
    if !req.headers.has_token("upgrade", "websocket") {
        return Err(HttpError::new(426, "WebSocket upgrade required"));
    }
    if !req.headers.has_token("connection", "upgrade") {
        return Err(HttpError::new(400, "Connection header must list Upgrade"));
    }
    if req.headers.count("sec-websocket-version") != 1
        || req.headers.get("sec-websocket-version") != Some(b"13")
    {
        return Err(HttpError::new(426, "Sec-WebSocket-Version 13 required"));
    }
    let key: &str = match (
        req.headers.count("sec-websocket-key"),
        req.headers.get_str("sec-websocket-key"),
    ) {
        (1, Some(key)) if BASE64.decode(key).is_ok_and(|k| k.len() == 16) => key,
        _ => return Err(HttpError::new(400, "invalid Sec-WebSocket-Key")),
    };
    let origin: Option<String> = match req.headers.count("origin") {
        0 => None,
        1 => match req.origin() {
            Some(o) => Some(o.to_owned()),
            None => return Err(HttpError::new(400, "invalid Origin header")),
        },
        _ => return Err(HttpError::new(400, "invalid Origin header")),
    };
    let mut protocols: Vec<String> = Vec::new();
    for p in req.headers.list("sec-websocket-protocol") {
        match std::str::from_utf8(p) {
            Ok(p) if is_token(p.as_bytes()) => protocols.push(p.to_owned()),
            _ => return Err(HttpError::new(400, "invalid Sec-WebSocket-Protocol")),
        }
    }
    Ok(UpgradeInfo {
        key: key.to_owned(),
        protocols,
        origin,
    })
}

/// Picks the subprotocol to accept: the first of `supported` (the SERVER's preference order) that the
/// client offered, compared exactly (subprotocol names are case-sensitive). `None`: accept without one.
pub fn choose_protocol<'a>(offered: &'a [String], supported: &[&str]) -> Option<&'a str> {
    supported
        .iter()
        .find_map(|s| offered.iter().find(|o| o.as_str() == *s))
        .map(String::as_str)
}

/// The `101 Switching Protocols` answer to a validated upgrade.
///
/// `protocol` is written only if the client offered it (RFC 6455 §4.2.2 forbids anything else; use
/// [`choose_protocol`]). `extra_headers` (e.g. `Set-Cookie`) follow the handshake fields; fields that the
/// handshake writes itself, names that are not tokens and values with CR, LF, NUL or other control
/// characters are dropped.
pub fn accept_response(
    info: &UpgradeInfo,
    protocol: Option<&str>,
    extra_headers: &[(&str, &str)],
) -> Bytes {
    let mut response: Response = Response::new(101)
        .header("Upgrade", "websocket")
        .header("Connection", "Upgrade")
        .header("Sec-WebSocket-Accept", &accept_key(info.key.as_bytes()));
    if let Some(p) = protocol.filter(|p| info.protocols.iter().any(|o| o == p)) {
        response = response.header("Sec-WebSocket-Protocol", p);
    }
    for (name, value) in extra_headers {
        if !is_handshake_field(name) {
            response = response.header(name, value);
        }
    }
    response.to_bytes()
}

fn is_handshake_field(name: &str) -> bool {
    HANDSHAKE_FIELDS
        .iter()
        .any(|f| f.eq_ignore_ascii_case(name))
}

/// Why a client handshake failed: a request we refuse to build, or a response that is not a valid 101.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// A request field given to [`ClientHandshake::new`] is invalid (names which one); nothing was sent.
    InvalidRequest(&'static str),
    /// The response head itself was unusable (too large, malformed), from
    /// [`poll_response`](crate::http::head::HeadReader::poll_response).
    Response(HttpError),
    /// The response is not HTTP/1.1.
    Version,
    /// The server answered with this status instead of 101 (e.g. 403, 404, 502).
    Status(u16),
    /// `Upgrade` does not list `websocket`.
    Upgrade,
    /// `Connection` does not list `upgrade`.
    Connection,
    /// `Sec-WebSocket-Accept` is missing, repeated or does not match our key.
    Accept,
    /// The server chose a subprotocol we did not offer, or sent several.
    Protocol,
    /// The server sent `Sec-WebSocket-Extensions`, which we never offer.
    Extensions,
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::InvalidRequest(what) => write!(f, "invalid handshake request: {what}"),
            HandshakeError::Response(e) => write!(f, "unusable handshake response: {}", e.reason),
            HandshakeError::Version => f.write_str("handshake response is not HTTP/1.1"),
            HandshakeError::Status(s) => write!(f, "backend answered {s} instead of 101"),
            HandshakeError::Upgrade => f.write_str("handshake response lacks Upgrade: websocket"),
            HandshakeError::Connection => {
                f.write_str("handshake response lacks Connection: Upgrade")
            }
            HandshakeError::Accept => {
                f.write_str("handshake response has a wrong Sec-WebSocket-Accept")
            }
            HandshakeError::Protocol => {
                f.write_str("handshake response chose a subprotocol that was not offered")
            }
            HandshakeError::Extensions => {
                f.write_str("handshake response enabled an extension that was not offered")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

impl From<HttpError> for HandshakeError {
    fn from(e: HttpError) -> Self {
        HandshakeError::Response(e)
    }
}

/// The client side of one opening handshake: remembers what it sent so it can check the answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHandshake {
    expected_accept: String,
    protocols: Vec<String>,
}

impl ClientHandshake {
    /// Builds the upgrade request: `GET <path_and_query> HTTP/1.1`, `Host: <host>`, `Upgrade`,
    /// `Connection`, a fresh `Sec-WebSocket-Key` (base64 of 16 bytes from `entropy`),
    /// `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Protocol` when `protocols` is not empty, then
    /// `extra_headers` in order (e.g. `Origin`, `X-Forwarded-For`).
    ///
    /// Refused with [`HandshakeError::InvalidRequest`], so that nothing can be injected into the head:
    /// `host` empty or not printable ASCII or containing `/ ? # @ \`; `path_and_query` not starting with
    /// `/` or not printable ASCII (percent-encode first) or containing `#`; a protocol that is not a token;
    /// an extra header whose name is not a token, whose value has CR, LF, NUL or other control characters,
    /// or that is one of the fields the handshake writes itself (`Host`, `Upgrade`, `Connection`,
    /// `Sec-WebSocket-*`).
    pub fn new(
        entropy: &mut dyn Entropy,
        host: &str,
        path_and_query: &str,
        protocols: &[String],
        extra_headers: &[(String, String)],
    ) -> Result<(ClientHandshake, Bytes), HandshakeError> {
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if host.is_empty() || !printable(host) || host.contains(['/', '?', '#', '@', '\\']) {
            return Err(HandshakeError::InvalidRequest("host"));
        }
        if !path_and_query.starts_with('/')
            || !printable(path_and_query)
            || path_and_query.contains('#')
        {
            return Err(HandshakeError::InvalidRequest("path"));
        }
        if !protocols.iter().all(|p| is_token(p.as_bytes())) {
            return Err(HandshakeError::InvalidRequest("subprotocol"));
        }
        for (name, value) in extra_headers {
            if !is_token(name.as_bytes()) || is_handshake_field(name) {
                return Err(HandshakeError::InvalidRequest("extra header name"));
            }
            if !is_field_value(value.as_bytes()) {
                return Err(HandshakeError::InvalidRequest("extra header value"));
            }
        }

        let mut nonce = [0u8; 16];
        entropy.fill(&mut nonce);
        let key: String = BASE64.encode(nonce);

        let mut out = BytesMut::with_capacity(256);
        let mut line = |name: &str, value: &str| {
            out.put_slice(name.as_bytes());
            out.put_slice(b": ");
            out.put_slice(value.as_bytes());
            out.put_slice(b"\r\n");
        };
        line("Host", host);
        line("Upgrade", "websocket");
        line("Connection", "Upgrade");
        line("Sec-WebSocket-Key", &key);
        line("Sec-WebSocket-Version", "13");
        if !protocols.is_empty() {
            line("Sec-WebSocket-Protocol", &protocols.join(", "));
        }
        for (name, value) in extra_headers {
            line(name, value);
        }
        let mut request = BytesMut::with_capacity(out.len() + path_and_query.len() + 20);
        request.put_slice(format!("GET {path_and_query} HTTP/1.1\r\n").as_bytes());
        request.put_slice(&out);
        request.put_slice(b"\r\n");

        let handshake = ClientHandshake {
            expected_accept: accept_key(key.as_bytes()),
            protocols: protocols.to_vec(),
        };
        Ok((handshake, request.freeze()))
    }

    /// Checks the server's answer (RFC 6455 §4.1): HTTP/1.1, status 101, `Upgrade: websocket`,
    /// `Connection: upgrade`, exactly one matching `Sec-WebSocket-Accept`, no `Sec-WebSocket-Extensions`,
    /// and at most one `Sec-WebSocket-Protocol` naming a protocol we offered (exact match).
    /// Returns that protocol, or `None` when the server chose none.
    pub fn validate(&self, resp: &ResponseHead) -> Result<Option<String>, HandshakeError> {
        if resp.version != 1 {
            return Err(HandshakeError::Version);
        }
        if resp.status != 101 {
            return Err(HandshakeError::Status(resp.status));
        }
        if !resp.headers.has_token("upgrade", "websocket") {
            return Err(HandshakeError::Upgrade);
        }
        if !resp.headers.has_token("connection", "upgrade") {
            return Err(HandshakeError::Connection);
        }
        if resp.headers.count("sec-websocket-accept") != 1
            || resp.headers.get("sec-websocket-accept") != Some(self.expected_accept.as_bytes())
        {
            return Err(HandshakeError::Accept);
        }
        if resp.headers.count("sec-websocket-extensions") != 0 {
            return Err(HandshakeError::Extensions);
        }
        match resp.headers.count("sec-websocket-protocol") {
            0 => Ok(None),
            1 => resp
                .headers
                .get_str("sec-websocket-protocol")
                .and_then(|chosen| self.protocols.iter().find(|p| p.as_str() == chosen))
                .map(|p| Some(p.clone()))
                .ok_or(HandshakeError::Protocol),
            _ => Err(HandshakeError::Protocol),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::CounterEntropy;
    use crate::http::head::HeadReader;
    use proptest::prelude::*;

    const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn request(text: &str) -> Request {
        let mut r = HeadReader::new(8192, 32);
        r.feed(text.as_bytes());
        r.poll_request()
            .expect("valid head")
            .expect("complete head")
    }

    fn response(bytes: &[u8]) -> ResponseHead {
        let mut r = HeadReader::new(8192, 32);
        r.feed(bytes);
        r.poll_response()
            .expect("valid head")
            .expect("complete head")
    }

    fn upgrade_with(extra: &str) -> String {
        format!(
            "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    fn status_of(text: &str) -> Result<UpgradeInfo, u16> {
        validate_upgrade(&request(text)).map_err(|e| e.status)
    }

    #[test]
    fn rfc_accept_key_example() {
        assert_eq!(
            accept_key(RFC_KEY.as_bytes()),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn rfc_example_request_validates() {
        let info = validate_upgrade(&request(&upgrade_with(
            "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n",
        )))
        .expect("valid upgrade");
        assert_eq!(info.key, RFC_KEY);
        assert_eq!(info.protocols, ["chat", "superchat"]);
        assert_eq!(info.origin.as_deref(), Some("http://example.com"));
    }

    #[test]
    fn tokens_are_case_insensitive_and_span_fields() {
        let text = format!(
            "GET / HTTP/1.1\r\nHost: h\r\nupgrade: WebSocket\r\nconnection: keep-alive\r\n\
             CONNECTION: UPGRADE\r\nsec-websocket-key: {RFC_KEY}\r\nsec-websocket-version: 13\r\n\
             Sec-WebSocket-Protocol: a\r\nSec-WebSocket-Protocol:  b ,c\r\n\r\n"
        );
        let info = validate_upgrade(&request(&text)).expect("valid");
        assert_eq!(info.protocols, ["a", "b", "c"]);
        assert_eq!(info.origin, None);
    }

    #[test]
    fn refusals_have_the_documented_status() {
        let ok = upgrade_with("");
        assert!(status_of(&ok).is_ok());
        assert_eq!(status_of(&ok.replacen("GET", "POST", 1)).err(), Some(405));
        assert_eq!(
            status_of(&ok.replacen("HTTP/1.1", "HTTP/1.0", 1)).err(),
            Some(505)
        );
        assert_eq!(
            status_of(&ok.replacen("Host: server.example.com\r\n", "", 1)).err(),
            Some(400)
        );
        assert_eq!(status_of(&upgrade_with("Host: again\r\n")).err(), Some(400));
        assert_eq!(
            status_of(&ok.replacen("Upgrade: websocket\r\n", "", 1)).err(),
            Some(426)
        );
        assert_eq!(
            status_of(&ok.replacen("Upgrade: websocket", "Upgrade: h2c", 1)).err(),
            Some(426)
        );
        assert_eq!(
            status_of(&ok.replacen("Connection: Upgrade", "Connection: close", 1)).err(),
            Some(400)
        );
        assert_eq!(
            status_of(&ok.replacen("Version: 13", "Version: 8", 1)).err(),
            Some(426)
        );
        assert_eq!(
            status_of(&ok.replacen("Sec-WebSocket-Version: 13\r\n", "", 1)).err(),
            Some(426)
        );
        assert_eq!(
            status_of(&upgrade_with("Sec-WebSocket-Version: 13\r\n")).err(),
            Some(426)
        );
        assert_eq!(status_of(&ok.replacen(RFC_KEY, "", 1)).err(), Some(400));
        assert_eq!(
            status_of(&ok.replacen(RFC_KEY, "dGhlIHNhbXBsZSBub25jZQ", 1)).err(),
            Some(400)
        );
        assert_eq!(
            status_of(&ok.replacen(RFC_KEY, "dGhlIHNhbXBsZSBub25jZXg=", 1)).err(),
            Some(400)
        );
        assert_eq!(
            status_of(&ok.replacen(RFC_KEY, "!!!!!!!!!!!!!!!!!!!!!!==", 1)).err(),
            Some(400)
        );
        let twice = upgrade_with(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"));
        assert_eq!(status_of(&twice).err(), Some(400));
        assert_eq!(
            status_of(&upgrade_with("Origin: a\r\nOrigin: b\r\n")).err(),
            Some(400)
        );
        assert_eq!(
            status_of(&upgrade_with("Sec-WebSocket-Protocol: a b\r\n")).err(),
            Some(400)
        );
        let mut bad_origin = upgrade_with("").into_bytes();
        bad_origin.splice(
            bad_origin.len() - 2..bad_origin.len() - 2,
            b"Origin: \xff\r\n".iter().copied(),
        );
        let mut r = HeadReader::new(8192, 32);
        r.feed(&bad_origin);
        let req = r.poll_request().expect("valid head").expect("complete");
        assert_eq!(
            validate_upgrade(&req).map_err(|e| e.status).err(),
            Some(400)
        );
    }

    #[test]
    fn refusal_responses_carry_the_right_headers() {
        let e = validate_upgrade(&request(&upgrade_with("").replacen(
            "Version: 13",
            "Version: 8",
            1,
        )))
        .expect_err("refused");
        let bytes = e.response();
        let head = response(&bytes);
        assert_eq!(head.status, 426);
        assert_eq!(head.headers.get_str("sec-websocket-version"), Some("13"));
    }

    #[test]
    fn choose_protocol_uses_server_preference() {
        let offered: Vec<String> = vec!["binary".into(), "wsbridge.v1".into()];
        assert_eq!(
            choose_protocol(&offered, &["wsbridge.v1", "binary"]),
            Some("wsbridge.v1")
        );
        assert_eq!(
            choose_protocol(&offered, &["binary", "wsbridge.v1"]),
            Some("binary")
        );
        assert_eq!(
            choose_protocol(&offered, &["Binary"]),
            None,
            "case-sensitive"
        );
        assert_eq!(choose_protocol(&offered, &[]), None);
        assert_eq!(choose_protocol(&[], &["binary"]), None);
    }

    #[test]
    fn accept_response_is_the_rfc_example() {
        let info = validate_upgrade(&request(&upgrade_with(
            "Sec-WebSocket-Protocol: chat, superchat\r\n",
        )))
        .expect("valid");
        let bytes = accept_response(&info, Some("chat"), &[("Set-Cookie", "a=b")]);
        assert_eq!(
            &bytes[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n\
              Set-Cookie: a=b\r\n\r\n"
        );
    }

    #[test]
    fn accept_response_refuses_unoffered_protocol_and_bad_extras() {
        let info = validate_upgrade(&request(&upgrade_with("Sec-WebSocket-Protocol: chat\r\n")))
            .expect("valid");
        let bytes = accept_response(
            &info,
            Some("other"),
            &[
                ("X-Ok", "1"),
                ("Sec-WebSocket-Extensions", "permessage-deflate"),
                ("connection", "close"),
                ("X-Evil", "a\r\nb: c"),
                ("Bad Name", "v"),
            ],
        );
        let text = std::str::from_utf8(&bytes).expect("ASCII");
        assert!(!text.contains("Sec-WebSocket-Protocol"), "{text}");
        assert!(
            !text.contains("Extensions") && !text.contains("close") && !text.contains("Evil"),
            "{text}"
        );
        assert!(text.ends_with("X-Ok: 1\r\n\r\n"), "{text}");
    }

    fn client(protocols: &[&str]) -> (ClientHandshake, Bytes) {
        let protocols: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        ClientHandshake::new(
            &mut CounterEntropy(7),
            "backend.example:8080",
            "/ws?x=1",
            &protocols,
            &[
                ("Origin".into(), "https://edge.example".into()),
                ("X-Forwarded-For".into(), "203.0.113.7".into()),
            ],
        )
        .expect("valid request")
    }

    /// The server side of our own request: validate it and answer.
    fn serve(req_bytes: &[u8], supported: &[&str]) -> (Request, Bytes) {
        let req = request(std::str::from_utf8(req_bytes).expect("ASCII"));
        let info = validate_upgrade(&req).expect("our request validates");
        let chosen = choose_protocol(&info.protocols, supported);
        let resp = accept_response(&info, chosen, &[]);
        (req, resp)
    }

    #[test]
    fn client_request_round_trips_through_the_server() {
        let (hs, bytes) = client(&["wsbridge.v1", "binary"]);
        let (req, resp) = serve(&bytes, &["binary", "wsbridge.v1"]);
        assert_eq!(req.target, "/ws?x=1");
        assert_eq!(req.host(), Some("backend.example:8080"));
        assert_eq!(req.origin(), Some("https://edge.example"));
        assert_eq!(req.headers.get_str("x-forwarded-for"), Some("203.0.113.7"));
        assert_eq!(hs.validate(&response(&resp)), Ok(Some("binary".to_owned())));
    }

    #[test]
    fn client_key_comes_from_entropy() {
        let (_, a) = client(&[]);
        let (_, b) = client(&[]);
        assert_eq!(a, b, "same entropy, same bytes");
        let key = request(std::str::from_utf8(&a).expect("ASCII"))
            .headers
            .get_str("sec-websocket-key")
            .map(str::to_owned)
            .expect("key sent");
        let mut expected = [0u8; 16];
        CounterEntropy(7).fill(&mut expected);
        assert_eq!(key, BASE64.encode(expected));
        assert!(
            !a.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"),
            "none offered"
        );
    }

    #[test]
    fn client_without_protocols_accepts_none() {
        let (hs, bytes) = client(&[]);
        let (_, resp) = serve(&bytes, &["binary"]);
        assert_eq!(hs.validate(&response(&resp)), Ok(None));
    }

    fn answer(hs_bytes: &Bytes, edit: impl Fn(String) -> String) -> ResponseHead {
        let (_, resp) = serve(hs_bytes, &["chat"]);
        let text = edit(String::from_utf8(resp.to_vec()).expect("ASCII"));
        response(text.as_bytes())
    }

    #[test]
    fn client_refuses_bad_answers() {
        let (hs, bytes) = client(&["chat"]);
        let check = |edit: &dyn Fn(String) -> String| hs.validate(&answer(&bytes, edit));
        assert_eq!(check(&|s| s), Ok(Some("chat".to_owned())));
        assert_eq!(
            check(&|_| "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n".into()),
            Err(HandshakeError::Status(403))
        );
        assert_eq!(
            check(&|s| s.replacen("HTTP/1.1", "HTTP/1.0", 1)),
            Err(HandshakeError::Version)
        );
        assert_eq!(
            check(&|s| s.replacen("Upgrade: websocket", "Upgrade: h2c", 1)),
            Err(HandshakeError::Upgrade)
        );
        assert_eq!(
            check(&|s| s.replacen("Connection: Upgrade", "Connection: close", 1)),
            Err(HandshakeError::Connection)
        );
        assert_eq!(
            check(&|s| s.replacen("Accept: ", "Accept: x", 1)),
            Err(HandshakeError::Accept)
        );
        assert_eq!(
            check(&|s| s.replacen("Upgrade\r\n", "Upgrade\r\nSec-WebSocket-Accept: x\r\n", 1)),
            Err(HandshakeError::Accept)
        );
        assert_eq!(
            check(&|s| s.replacen(
                "Upgrade\r\n",
                "Upgrade\r\nSec-WebSocket-Extensions: permessage-deflate\r\n",
                1
            )),
            Err(HandshakeError::Extensions)
        );
        assert_eq!(
            check(&|s| s.replacen("Protocol: chat", "Protocol: other", 1)),
            Err(HandshakeError::Protocol)
        );
        assert_eq!(
            check(&|s| s.replacen("Protocol: chat", "Protocol: chat, chat", 1)),
            Err(HandshakeError::Protocol)
        );
        assert_eq!(
            check(&|s| s.replacen(
                "Protocol: chat\r\n",
                "Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n",
                1
            )),
            Err(HandshakeError::Protocol)
        );
        assert_eq!(
            check(&|s| s.replacen("Sec-WebSocket-Protocol: chat\r\n", "", 1)),
            Ok(None)
        );
        assert_eq!(
            check(&|s| s.replacen("Protocol: chat", "Protocol: CHAT", 1)),
            Err(HandshakeError::Protocol),
            "exact match"
        );
    }

    #[test]
    fn client_refuses_injection_at_construction() {
        let mut e = CounterEntropy(1);
        let none: &[(String, String)] = &[];
        let build = |e: &mut CounterEntropy,
                     host: &str,
                     path: &str,
                     protos: &[String],
                     extra: &[(String, String)]| {
            ClientHandshake::new(e, host, path, protos, extra).map(|_| ())
        };
        let invalid = |what| Err(HandshakeError::InvalidRequest(what));
        assert_eq!(build(&mut e, "h", "/", &[], none), Ok(()));
        assert_eq!(build(&mut e, "[::1]:8080", "/a%20b?c=d", &[], none), Ok(()));
        for host in ["", "a b", "a\r\nX: y", "a/b", "user@h", "h\0", "é"] {
            assert_eq!(
                build(&mut e, host, "/", &[], none),
                invalid("host"),
                "{host:?}"
            );
        }
        for path in ["", "x", "/a b", "/a\r\n", "/#frag", "/é"] {
            assert_eq!(
                build(&mut e, "h", path, &[], none),
                invalid("path"),
                "{path:?}"
            );
        }
        assert_eq!(
            build(&mut e, "h", "/", &["a,b".into()], none),
            invalid("subprotocol")
        );
        assert_eq!(
            build(&mut e, "h", "/", &["".into()], none),
            invalid("subprotocol")
        );
        let hdr = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert_eq!(
            build(&mut e, "h", "/", &[], &hdr("X-A", "1\r\nX-B: 2")),
            invalid("extra header value")
        );
        assert_eq!(
            build(&mut e, "h", "/", &[], &hdr("X-A", "a\0")),
            invalid("extra header value")
        );
        assert_eq!(
            build(&mut e, "h", "/", &[], &hdr("X A", "1")),
            invalid("extra header name")
        );
        assert_eq!(
            build(&mut e, "h", "/", &[], &hdr("X-A\r\n", "1")),
            invalid("extra header name")
        );
        assert_eq!(
            build(&mut e, "h", "/", &[], &hdr("host", "evil")),
            invalid("extra header name")
        );
        assert_eq!(
            build(&mut e, "h", "/", &[], &hdr("Sec-WebSocket-Extensions", "x")),
            invalid("extra header name")
        );
    }

    #[test]
    fn errors_display_clearly() {
        assert_eq!(
            HandshakeError::Status(403).to_string(),
            "backend answered 403 instead of 101"
        );
        let e: HandshakeError = HttpError::new(502, "response head too large").into();
        assert_eq!(
            e.to_string(),
            "unusable handshake response: response head too large"
        );
        assert!(HandshakeError::InvalidRequest("host")
            .to_string()
            .contains("host"));
    }

    /// Server pipeline on arbitrary bytes in arbitrary chunks: no panic, and the outcome (refusal status,
    /// upgrade info, remainder) does not depend on the chunking.
    fn server_outcome(chunks: &[&[u8]]) -> (Result<Option<UpgradeInfo>, u16>, Vec<u8>) {
        let mut r = HeadReader::new(512, 16);
        for (i, c) in chunks.iter().enumerate() {
            r.feed(c);
            match r.poll_request() {
                Ok(None) => {}
                Ok(Some(req)) => {
                    let res = validate_upgrade(&req).map(Some).map_err(|e| e.status);
                    if let Err(status) = res {
                        assert!(!HttpError::new(status, "x").response().is_empty());
                    }
                    for later in &chunks[i + 1..] {
                        r.feed(later);
                    }
                    return (res, r.take_remainder().to_vec());
                }
                Err(e) => return (Err(e.status), Vec::new()),
            }
        }
        (Ok(None), Vec::new())
    }

    fn client_outcome(
        hs: &ClientHandshake,
        chunks: &[&[u8]],
    ) -> Option<Result<Option<String>, HandshakeError>> {
        let mut r = HeadReader::new(512, 16);
        for c in chunks {
            r.feed(c);
            match r.poll_response() {
                Ok(None) => {}
                Ok(Some(head)) => return Some(hs.validate(&head)),
                Err(e) => return Some(Err(e.into())),
            }
        }
        None
    }

    fn split<'a>(input: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks: Vec<&[u8]> = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(&input[start..p]);
            start = p;
        }
        chunks.push(&input[start..]);
        chunks
    }

    /// Mostly-valid inputs: a real upgrade request or 101 with random bytes spliced in.
    fn mutated(base: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
        let len = base.len();
        (
            0..=len,
            0usize..4,
            proptest::collection::vec(any::<u8>(), 0..6),
        )
            .prop_map(move |(at, del, ins)| {
                let mut v = base.clone();
                let end = (at + del).min(v.len());
                v.splice(at..end, ins);
                v
            })
    }

    proptest! {
        #[test]
        fn server_side_is_total_and_chunking_independent(
            input in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..400),
                mutated(upgrade_with("Sec-WebSocket-Protocol: a, b\r\n").into_bytes()),
            ],
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let whole = server_outcome(&[&input[..]]);
            prop_assert_eq!(server_outcome(&split(&input, &cuts)), whole);
        }

        #[test]
        fn client_side_is_total_and_chunking_independent(
            seed in any::<u64>(),
            raw in proptest::collection::vec(any::<u8>(), 0..300),
            use_raw in any::<bool>(),
            at in any::<prop::sample::Index>(),
            ins in proptest::collection::vec(any::<u8>(), 0..4),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let (hs, req) = ClientHandshake::new(&mut CounterEntropy(seed), "h", "/", &["chat".into()], &[])
                .expect("valid");
            let input: Vec<u8> = if use_raw {
                raw
            } else {
                let (_, resp) = serve(&req, &["chat"]);
                let mut v = resp.to_vec();
                let at = at.index(v.len() + 1);
                v.splice(at..at, ins);
                v
            };
            let whole = client_outcome(&hs, &[&input[..]]);
            prop_assert_eq!(client_outcome(&hs, &split(&input, &cuts)), whole);
        }

        #[test]
        fn every_client_key_is_accepted_by_the_server(seed in any::<u64>()) {
            let (hs, req) = ClientHandshake::new(&mut CounterEntropy(seed), "h", "/", &[], &[]).expect("valid");
            let (_, resp) = serve(&req, &[]);
            prop_assert_eq!(hs.validate(&response(&resp)), Ok(None));
        }
    }
}
