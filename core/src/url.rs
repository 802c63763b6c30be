//! `ws://`, `wss://`, `http://` and `https://` URLs, parsed strictly: what a backend or target URL on a
//! command line (or a `ws2http` client's on-frame URL) needs.

use std::fmt;

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`: TLS to the server.
    pub tls: bool,
    /// Host name or address literal, without brackets.
    pub host: String,
    /// Port (default 80 / 443).
    pub port: u16,
    /// Path and query as sent in the request line (at least `/`).
    pub path_and_query: String,
}

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadUrl(pub String);

impl fmt::Display for BadUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadUrl {}

impl WsUrl {
    /// Parses `ws://host[:port][/path][?query]` or `wss://…`. User info and fragments are refused.
    pub fn parse(s: &str) -> Result<WsUrl, BadUrl> {
        parse_parts(s, "ws://", "wss://")
    }

    /// The `Host` header value: the port only when it is not the default, IPv6 in brackets.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

/// Parses `<plain>host[:port][/path][?query]` or `<tls>…` (schemes compared ASCII case-insensitively).
/// User info, fragments, spaces and control characters are refused.
fn parse_parts(s: &str, plain: &str, secure: &str) -> Result<WsUrl, BadUrl> {
    let bad = |why: &str| BadUrl(format!("{s:?}: {why}"));
    let starts = |p: &str| s.get(..p.len()).is_some_and(|h| h.eq_ignore_ascii_case(p));
    let (tls, rest) = if starts(plain) {
        (false, &s[plain.len()..])
    } else if starts(secure) {
        (true, &s[secure.len()..])
    } else {
        return Err(bad(&format!("must start with {plain} or {secure}")));
    };
    if s.contains('#') {
        return Err(bad("fragments are not allowed"));
    }
    if s.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(bad("spaces and control characters are not allowed"));
    }
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    if authority.contains('@') {
        return Err(bad("user info is not allowed"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let end = v6.find(']').ok_or_else(|| bad("unclosed ["))?;
        let host = &v6[..end];
        host.parse::<std::net::Ipv6Addr>()
            .map_err(|_| bad("bad IPv6 literal"))?;
        (host, &v6[end + 1..])
    } else {
        match authority.rfind(':') {
            // A host with a colon is an IPv6 literal, which must be bracketed: `a:b:80` would
            // otherwise be host `a:b`, shown (and matched by an allowlist) as `[a:b]:80`, which
            // does not even parse (fuzz finding).
            Some(i) if authority[..i].contains(':') => {
                return Err(bad("an IPv6 address must be written in brackets"))
            }
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let port = match port {
        "" => {
            if tls {
                443
            } else {
                80
            }
        }
        p => match p.strip_prefix(':').map(str::parse::<u16>) {
            Some(Ok(p)) if p != 0 => p,
            _ => return Err(bad("port must be 1..=65535")),
        },
    };
    let path_and_query = match tail {
        "" => "/".to_owned(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_owned(),
    };
    Ok(WsUrl {
        tls,
        host: host.to_owned(),
        port,
        path_and_query,
    })
}

/// A parsed `http://` or `https://` URL (a `ws2http` backend), in a canonical form: scheme and host in
/// lower case, host names limited to letters, digits, `-`, `_` and `.`, the path at least `/`. Its
/// [`Display`](fmt::Display) is what allowlists are matched against, and exactly what is dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(WsUrl);

impl HttpUrl {
    /// Parses `http://host[:port][/path][?query]` or `https://…`; refuses user info, fragments, spaces,
    /// control and non-ASCII characters, and host names with anything but `[A-Za-z0-9._-]`.
    pub fn parse(s: &str) -> Result<HttpUrl, BadUrl> {
        let mut u = parse_parts(s, "http://", "https://")?;
        if !s.is_ascii() {
            return Err(BadUrl(format!(
                "{s:?}: non-ASCII characters must be percent-encoded"
            )));
        }
        let v6 = u.host.contains(':');
        if !v6
            && !u
                .host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        {
            return Err(BadUrl(format!("{s:?}: invalid host name")));
        }
        u.host.make_ascii_lowercase();
        Ok(HttpUrl(u))
    }

    /// `https://`.
    pub fn tls(&self) -> bool {
        self.0.tls
    }

    /// The host (lower case; an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        &self.0.host
    }

    /// The port (default 80 / 443).
    pub fn port(&self) -> u16 {
        self.0.port
    }

    /// The request target: path and query, at least `/`.
    pub fn path_and_query(&self) -> &str {
        &self.0.path_and_query
    }

    /// The `Host` header value.
    pub fn host_header(&self) -> String {
        self.0.host_header()
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.0.tls { "https" } else { "http" };
        write!(
            f,
            "{scheme}://{}{}",
            self.host_header(),
            self.0.path_and_query
        )
    }
}

impl fmt::Display for WsUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{scheme}://{host}:{}{}", self.port, self.path_and_query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_a_backend_url_looks_like() {
        let u = WsUrl::parse("wss://edge.example.com/bridge?x=1").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path_and_query.as_str()),
            (true, "edge.example.com", 443, "/bridge?x=1")
        );
        assert_eq!(u.host_header(), "edge.example.com");
        let u = WsUrl::parse("ws://127.0.0.1:8080").unwrap();
        assert_eq!(
            (u.port, u.path_and_query.as_str(), u.host_header().as_str()),
            (8080, "/", "127.0.0.1:8080")
        );
        let u = WsUrl::parse("ws://[::1]:9?q").unwrap();
        assert_eq!(
            (
                u.host.as_str(),
                u.path_and_query.as_str(),
                u.host_header().as_str()
            ),
            ("::1", "/?q", "[::1]:9")
        );
    }

    #[test]
    fn refuses_the_rest() {
        for bad in [
            "http://x/",
            "ws://",
            "ws://:80/",
            "ws://x:0/",
            "ws://x:65536/",
            "ws://x:-1/",
            "ws://u@x/",
            "ws://x/#f",
            "ws://x/ a",
            "ws://[::1/",
            "ws://[zz]/",
            "ws://x:8a/",
        ] {
            assert!(WsUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// Fuzz finding (`control_json`, input
    /// `fuzz/corpus/control_json/seed-regression-unbracketed-colon-host`): a host with a colon outside
    /// brackets was taken as an IPv6 literal that the URL's display then bracketed into something that
    /// does not parse, so an allowlist matched a different URL than was dialled.
    #[test]
    fn a_colon_in_an_unbracketed_host_is_refused_and_urls_show_as_they_parse() {
        for bad in [
            "http://backentest:808mst:8080/frm=2",
            "http://a:b/",
            "https://a:evil.example.com:443/",
            "ws://::1:80/",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
            assert!(
                WsUrl::parse(bad.replacen("http", "ws", 1).as_str()).is_err(),
                "{bad}"
            );
        }
        for good in [
            "http://[::1]:8080/x",
            "https://h.test:8443/",
            "http://h.test/",
        ] {
            let u = HttpUrl::parse(good).unwrap();
            assert_eq!(HttpUrl::parse(&u.to_string()), Ok(u));
        }
    }

    #[test]
    fn http_urls_are_canonical() {
        let u = HttpUrl::parse("HTTPS://API.Example.com:443/frame?x=1").unwrap();
        assert_eq!(u.to_string(), "https://api.example.com/frame?x=1");
        assert_eq!(
            (u.tls(), u.port(), u.path_and_query()),
            (true, 443, "/frame?x=1")
        );
        let u = HttpUrl::parse("http://[::1]:8080").unwrap();
        assert_eq!(u.to_string(), "http://[::1]:8080/");
        for bad in [
            "ws://x/",
            "http://a@b/",
            "http://x/#f",
            "http://x/\u{e9}",
            "http://ex%41mple.com/",
            "http://a\\b/",
            "http://x:0/",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
