//! The websocket-bridge wire, byte for byte where it is observable: header names, content types,
//! callback ids, and the short responses with websocket-bridge's CORS headers (tower-http's
//! `CorsLayer` with `allow_origin("*")` and `allow_methods([GET, POST])`: every response carries
//! `Access-Control-Allow-Origin: *` and a `Vary`; any `OPTIONS` request is answered 200 as a preflight
//! with `Access-Control-Allow-Methods: GET,POST`).

use bytes::Bytes;

use crate::http::response::Response;
use crate::Entropy;

/// The header naming the callback URL on every POST to the backend.
pub const SEND_HEADER: &str = "ws-bridge-send";
/// The on-frame URL: query `f`, this header, or the legacy one.
pub const ON_FRAME: (&str, &str, &str) = ("f", "ws-bridge-on-frame", "x-ws-proxy-on-frame");
/// The on-disconnect URL: query `d`, this header, or the legacy one.
pub const ON_DISCONNECT: (&str, &str, &str) =
    ("d", "ws-bridge-on-disconnect", "x-ws-proxy-on-disconnect");
/// The content type of a client's Text message.
pub const TEXT_TYPE: &str = "text/plain;charset=UTF-8";
/// The content type of a client's Binary message.
pub const BINARY_TYPE: &str = "application/octet-stream";

const VARY: &str = "origin, access-control-request-method, access-control-request-headers";

/// The CORS fields of every response (and of the 101).
pub const CORS: [(&str, &str); 2] = [("Access-Control-Allow-Origin", "*"), ("Vary", VARY)];

/// A complete `Connection: close` response with the CORS fields; a non-empty `body` is `text/plain`.
pub fn response(status: u16, body: &str) -> Bytes {
    let mut r = Response::new(status);
    for (n, v) in CORS {
        r = r.header(n, v);
    }
    if !body.is_empty() {
        r = r.header("Content-Type", "text/plain; charset=utf-8");
    }
    if status == 405 {
        r = r.header("Allow", "GET, POST");
    }
    r.header("Connection", "close")
        .body(body.to_owned())
        .to_bytes()
}

/// The answer to an `OPTIONS` request (a CORS preflight), on any path.
pub fn preflight() -> Bytes {
    Response::new(200)
        .header("Access-Control-Allow-Origin", "*")
        .header("Vary", VARY)
        .header("Access-Control-Allow-Methods", "GET,POST")
        .header("Connection", "close")
        .to_bytes()
}

/// Whether a `/send` body with this `Content-Type` becomes a Text frame: the MIME type `text/plain`
/// with exactly one parameter, `charset`, whose value is `utf-8` (any case, quoted or not, any spacing
/// around `;` and `=`). Anything else, a missing header included, means Binary.
pub fn is_utf8_text(content_type: Option<&[u8]>) -> bool {
    let Some(ct) = content_type.and_then(|c| std::str::from_utf8(c).ok()) else {
        return false;
    };
    let mut parts = ct.split(';');
    let essence = parts.next().unwrap_or("").trim_matches([' ', '\t']);
    if !essence.eq_ignore_ascii_case("text/plain") {
        return false;
    }
    let mut charset_utf8 = false;
    for param in parts {
        let Some((name, value)) = param.split_once('=') else {
            return false;
        };
        let name = name.trim_matches([' ', '\t']);
        let value = value.trim_matches([' ', '\t']);
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        if !name.eq_ignore_ascii_case("charset") || charset_utf8 {
            return false;
        }
        if !value.eq_ignore_ascii_case("utf-8") {
            return false;
        }
        charset_utf8 = true;
    }
    charset_utf8
}

/// A random (version 4) UUID in its lower-case hyphenated form.
pub fn new_uuid(entropy: &mut dyn Entropy) -> String {
    let mut b = [0u8; 16];
    entropy.fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// The id of a `/send/<id>` path in the form sessions register (lower case), if it is a UUID (any
/// case, hyphenated).
pub fn parse_uuid(s: &str) -> Option<String> {
    let ok = s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    ok.then(|| s.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CounterEntropy;

    #[test]
    fn content_type_rules() {
        for text in [
            "text/plain;charset=UTF-8",
            "text/plain; charset=utf-8",
            "TEXT/Plain ;  Charset = \"UTF-8\"",
            "text/plain;charset=utf-8 ",
        ] {
            assert!(is_utf8_text(Some(text.as_bytes())), "{text}");
        }
        for binary in [
            "text/plain",
            "text/plain; charset=latin1",
            "text/plain; charset=utf8",
            "text/plain; charset=utf-8; format=flowed",
            "text/plain; charset=utf-8; charset=utf-8",
            "text/html; charset=utf-8",
            "application/octet-stream",
            "text/plainx; charset=utf-8",
            "",
        ] {
            assert!(!is_utf8_text(Some(binary.as_bytes())), "{binary}");
        }
        assert!(!is_utf8_text(None));
        assert!(!is_utf8_text(Some(&[0xff, b';'])));
    }

    #[test]
    fn uuids_are_v4_and_round_trip() {
        let u = new_uuid(&mut CounterEntropy(1));
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(parse_uuid(&u.to_ascii_uppercase()), Some(u.clone()));
        assert_eq!(parse_uuid("not-a-uuid"), None);
        assert_eq!(parse_uuid(&u[1..]), None);
    }

    #[test]
    fn responses_carry_cors() {
        let r = response(404, "unknown");
        let s = std::str::from_utf8(&r).unwrap();
        assert!(s.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(s.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(s.contains("Connection: close\r\n"));
        let p = preflight();
        assert!(std::str::from_utf8(&p)
            .unwrap()
            .contains("Access-Control-Allow-Methods: GET,POST"));
    }
}
