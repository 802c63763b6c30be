//! The ordered header list of a head, shared by [`Request`](crate::http::request::Request),
//! [`ResponseHead`](crate::http::response::ResponseHead) and the [`Response`](crate::http::response::Response)
//! builder, plus the RFC 9110 syntax checks for header names and values.
//!
//! Names compare ASCII case-insensitively everywhere; they are stored as sent. Values are raw bytes
//! (HTTP allows obs-text), with the surrounding whitespace already removed by the parser.

/// Header fields in the order they appeared (or were added), duplicates kept.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// An empty list.
    pub fn new() -> Self {
        Headers::default()
    }

    /// Appends a field. The caller checks the syntax ([`is_token`], [`is_field_value`]) where it matters.
    pub fn push(&mut self, name: String, value: Vec<u8>) {
        self.fields.push((name, value));
    }

    /// Number of fields, duplicates counted.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there is no field at all.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// All fields in order, names as sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// The value of the first field called `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// [`get`](Self::get) as UTF-8; `None` when absent or not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The values of every field called `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// How many fields are called `name`.
    pub fn count(&self, name: &str) -> usize {
        self.get_all(name).count()
    }

    /// The elements of a comma-separated list header (RFC 9110 §5.6.1) across ALL fields called `name`,
    /// in order, each trimmed of spaces and tabs; empty elements are skipped.
    pub fn list<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.get_all(name)
            .flat_map(|v| v.split(|&b| b == b','))
            .map(trim_ows)
            .filter(|e| !e.is_empty())
    }

    /// True when the list header `name` contains `token` (ASCII case-insensitive), in any of its fields,
    /// e.g. `has_token("connection", "upgrade")` for `Connection: keep-alive, Upgrade`.
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.list(name)
            .any(|e| e.eq_ignore_ascii_case(token.as_bytes()))
    }
}

/// Strips leading and trailing spaces and tabs (HTTP "optional whitespace").
fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// True for a non-empty RFC 9110 `token` (header names, methods, list elements such as subprotocols).
pub fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// True when `v` may be sent as a header value: no control characters except horizontal tab (so no CR,
/// LF or NUL that could split or end the head), no DEL, and no leading or trailing whitespace.
pub fn is_field_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7F)) && trim_ows(v).len() == v.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Headers {
        let mut h = Headers::new();
        h.push("Host".into(), b"example.com".to_vec());
        h.push("Connection".into(), b"keep-alive, Upgrade".to_vec());
        h.push("X-Dup".into(), b"one".to_vec());
        h.push("x-dup".into(), b"two".to_vec());
        h.push(
            "Sec-WebSocket-Protocol".into(),
            b" chat ,, superchat".to_vec(),
        );
        h.push("sec-websocket-protocol".into(), b"\tbinary".to_vec());
        h.push("X-Bin".into(), vec![0xff, 0xfe]);
        h
    }

    #[test]
    fn lookup_is_case_insensitive_and_returns_first() {
        let h = sample();
        assert_eq!(h.get("HOST"), Some(&b"example.com"[..]));
        assert_eq!(h.get("x-DUP"), Some(&b"one"[..]));
        assert_eq!(h.get("absent"), None);
        assert_eq!(h.get_str("x-bin"), None, "non-UTF-8 is not a str");
        assert_eq!(h.get("x-bin"), Some(&[0xff, 0xfe][..]));
    }

    #[test]
    fn get_all_and_count_keep_order() {
        let h = sample();
        let all: Vec<&[u8]> = h.get_all("X-Dup").collect();
        assert_eq!(all, vec![&b"one"[..], &b"two"[..]]);
        assert_eq!(h.count("x-dup"), 2);
        assert_eq!(h.count("nope"), 0);
        assert_eq!(h.len(), 7);
        assert!(!h.is_empty());
        assert!(Headers::new().is_empty());
        let names: Vec<&str> = h.iter().map(|(n, _)| n).collect();
        assert_eq!(names[2..4], ["X-Dup", "x-dup"]);
    }

    #[test]
    fn list_spans_all_fields_trimmed_without_empties() {
        let h = sample();
        let list: Vec<&[u8]> = h.list("sec-websocket-protocol").collect();
        assert_eq!(list, vec![&b"chat"[..], &b"superchat"[..], &b"binary"[..]]);
    }

    #[test]
    fn has_token_is_case_insensitive_and_exact() {
        let h = sample();
        assert!(h.has_token("connection", "upgrade"));
        assert!(h.has_token("Connection", "KEEP-ALIVE"));
        assert!(!h.has_token("connection", "upgrad"));
        assert!(!h.has_token("connection", "close"));
        assert!(h.has_token("sec-websocket-protocol", "binary"));
        assert!(!h.has_token("absent", "x"));
    }

    #[test]
    fn token_syntax() {
        assert!(is_token(b"websocket"));
        assert!(is_token(b"wsbridge.v1"));
        assert!(is_token(b"X-Forwarded-For"));
        assert!(!is_token(b""));
        assert!(!is_token(b"a b"));
        assert!(!is_token(b"a:b"));
        assert!(!is_token(b"a\r\nb"));
        assert!(!is_token("é".as_bytes()));
    }

    #[test]
    fn field_value_syntax() {
        assert!(is_field_value(b""));
        assert!(is_field_value(b"203.0.113.7, 10.0.0.1"));
        assert!(is_field_value(b"a\tb"));
        assert!(is_field_value("héllo".as_bytes()));
        for bad in [
            &b"a\rb"[..],
            b"a\nb",
            b"a\0b",
            b"a\x7fb",
            b" lead",
            b"trail\t",
            b"\x01",
        ] {
            assert!(!is_field_value(bad), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn list_never_yields_commas_or_edges_of_whitespace(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..5)
        ) {
            let mut h = Headers::new();
            for v in values {
                h.push("L".into(), v);
            }
            for e in h.list("l") {
                prop_assert!(!e.is_empty());
                prop_assert!(!e.contains(&b','));
                prop_assert_eq!(trim_ows(e), e);
            }
        }
    }
}
