//! `ws://` and `wss://` URLs, parsed strictly: what a backend or target URL on a command line needs.

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
        let bad = |why: &str| BadUrl(format!("{s:?}: {why}"));
        let (tls, rest) = if let Some(r) = s.strip_prefix("ws://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("wss://") {
            (true, r)
        } else {
            return Err(bad("must start with ws:// or wss://"));
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
}
