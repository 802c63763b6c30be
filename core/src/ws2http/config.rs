//! The settings of a `ws2http` listener, and the [`Allowlist`] of backend URLs.

use std::time::Duration;

use regex::Regex;

use crate::config::WsConfig;
use crate::tls::{ClientTlsFactory, ServerTlsFactory};
use crate::url::HttpUrl;

/// Which on-frame / on-disconnect URLs clients may name. Empty: every URL is refused (403), as
/// websocket-bridge does.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    /// `--allowlist REGEX`, compiled as `^(?:REGEX)$`: the pattern must match the **whole** canonical URL
    /// (see [`HttpUrl`]), so `https://api\.example\.com/.*` does not match a URL that merely contains it.
    patterns: Vec<Regex>,
    /// `--host-suffix-allowlist SUFFIX`: `https://` URLs whose host is the suffix or ends with `.` +
    /// suffix (lower case, leading dot removed). Like websocket-bridge, only `https` qualifies.
    host_suffixes: Vec<String>,
}

impl Allowlist {
    /// Compiles `patterns` (anchored) and normalizes `host_suffixes`; the message names the bad one.
    pub fn new(patterns: &[String], host_suffixes: &[String]) -> Result<Self, String> {
        let patterns = patterns
            .iter()
            .map(|p| {
                Regex::new(&format!("^(?:{p})$")).map_err(|e| {
                    format!("--allowlist {p:?} is not a valid regular expression: {e}")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let host_suffixes = host_suffixes
            .iter()
            .map(|s| {
                let n = s.trim_start_matches('.').to_ascii_lowercase();
                if n.is_empty()
                    || !n
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                {
                    return Err(format!("--host-suffix-allowlist {s:?} is not a host name"));
                }
                Ok(n)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Allowlist {
            patterns,
            host_suffixes,
        })
    }

    /// Nothing is allowed.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty() && self.host_suffixes.is_empty()
    }

    /// Whether clients may name `url`.
    pub fn allows(&self, url: &HttpUrl) -> bool {
        let text = url.to_string();
        if self.patterns.iter().any(|r| r.is_match(&text)) {
            return true;
        }
        let host = url.host();
        url.tls()
            && self.host_suffixes.iter().any(|s| {
                host == s
                    || (host.len() > s.len()
                        && host.ends_with(s.as_str())
                        && host.as_bytes()[host.len() - s.len() - 1] == b'.')
            })
    }
}

/// A `ws2http` listener's settings. Built and validated once; each session shares it.
#[derive(Clone)]
pub struct Ws2HttpConfig {
    /// The listen address as configured.
    pub listen: String,
    /// `--base-url`: the public URL of this listener, the prefix of every callback URL
    /// (`<base-url>send/<uuid>`). `None`: derived from `listen` (see [`Ws2HttpConfig::base_url`]).
    pub base_url: Option<String>,
    /// Which backend URLs clients may name.
    pub allowlist: Allowlist,
    /// `--group-by-host`: accepted, and for now a documented no-op: every session has its own
    /// keep-alive connection to its backend (never shared, so a slow backend or client never delays
    /// another's requests).
    pub group_by_host: bool,
    /// TLS towards clients.
    pub server_tls: Option<ServerTlsFactory>,
    /// TLS client sessions towards `https://` backends (`None`: such URLs fail at connect time).
    pub backend_tls: Option<ClientTlsFactory>,
    /// Most simultaneous connections (counted by the runtime from accept).
    pub max_connections: usize,
    /// Largest client message posted to the backend, and largest `/send` body (413 above it).
    pub max_message_size: usize,
    /// Largest backend response body read (and discarded); larger fails the request.
    pub max_response_size: usize,
    /// Every backend request (resolve, connect, TLS, response) must finish within this.
    pub backend_timeout: Duration,
    /// Accept → request head (and a `/send` body) must arrive within this.
    pub handshake_timeout: Duration,
    /// No message either way for this long closes the session (`None`: never, as websocket-bridge).
    pub idle_timeout: Option<Duration>,
    /// A WebSocket Ping to the client this often.
    pub ping_interval: Option<Duration>,
    /// A Pong must arrive this long after the Ping was written.
    pub ping_timeout: Duration,
    /// Bytes queued towards a client before deliveries are refused (`/send` answers 503).
    pub client_buffer: usize,
    /// WebSocket limits towards the client.
    pub ws: WsConfig,
}

impl std::fmt::Debug for Ws2HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ws2HttpConfig")
            .field("listen", &self.listen)
            .field("base_url", &self.base_url())
            .field("allowlist", &self.allowlist)
            .field("tls", &self.server_tls.is_some())
            .field("max_message_size", &self.max_message_size)
            .field("backend_timeout", &self.backend_timeout)
            .finish_non_exhaustive()
    }
}

/// The Close reason sent to a client accepted over the connection limit.
pub use crate::ws2tcp::config::AT_CAPACITY;

impl Ws2HttpConfig {
    /// The CLI's defaults, before flags are applied.
    pub fn new(listen: &str) -> Self {
        Ws2HttpConfig {
            listen: listen.to_owned(),
            base_url: None,
            allowlist: Allowlist::default(),
            group_by_host: false,
            server_tls: None,
            backend_tls: None,
            max_connections: 10_000,
            max_message_size: 1 << 20,
            max_response_size: 1 << 20,
            backend_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: None,
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(30),
            client_buffer: 1 << 20,
            ws: WsConfig::default(),
        }
    }

    /// The default listen address.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:9443";

    /// The callback prefix, ending in `/`: `--base-url`, or `http(s)://<listen>/`.
    pub fn base_url(&self) -> String {
        match &self.base_url {
            Some(b) if b.ends_with('/') => b.clone(),
            Some(b) => format!("{b}/"),
            None => {
                let scheme = if self.server_tls.is_some() {
                    "https"
                } else {
                    "http"
                };
                format!("{scheme}://{}/", self.listen)
            }
        }
    }

    /// Checks that the parts fit together; the message names the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(b) = &self.base_url {
            HttpUrl::parse(b).map_err(|e| format!("--base-url: {e}"))?;
            if b.contains('?') {
                return Err("--base-url must not have a query".into());
            }
        }
        if self.max_message_size == 0 || self.max_response_size == 0 {
            return Err("--max-message-size must be positive".into());
        }
        if self.backend_timeout.is_zero() {
            return Err("--backend-timeout must be positive".into());
        }
        if self.handshake_timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        if self.ping_interval.is_some() && self.ping_timeout.is_zero() {
            return Err("--ping-timeout must be positive".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be positive".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &Allowlist, url: &str) -> bool {
        list.allows(&HttpUrl::parse(url).unwrap())
    }

    #[test]
    fn empty_allowlist_allows_nothing() {
        let l = Allowlist::default();
        assert!(l.is_empty());
        assert!(!allows(&l, "https://api.example.com/frame"));
    }

    #[test]
    fn regex_matches_the_whole_url_only() {
        let l = Allowlist::new(&[r"https://api\.example\.com/.*".into()], &[]).unwrap();
        assert!(allows(&l, "https://api.example.com/frame"));
        assert!(allows(&l, "HTTPS://API.EXAMPLE.COM:443/frame?x=1"));
        for evil in [
            "https://evil.test/https://api.example.com/frame",
            "https://evil.test/?u=https://api.example.com/",
            "https://api.example.com.evil.test/frame",
            "https://api.example.com:8443/frame",
            "http://api.example.com/frame",
            "https://xapi.example.com/frame",
        ] {
            assert!(!allows(&l, evil), "{evil}");
        }
        // What cannot even be parsed never reaches the allowlist.
        for evil in [
            "https://api.example.com@evil.test/frame",
            "https://api.example.com:443@evil.test/",
            "https://evil.test/#https://api.example.com/frame",
            "https://evil.test\\@api.example.com/frame",
        ] {
            assert!(HttpUrl::parse(evil).is_err(), "{evil}");
        }
        let alternation =
            Allowlist::new(&["https://a\\.test/x|https://b\\.test/y".into()], &[]).unwrap();
        assert!(allows(&alternation, "https://b.test/y"));
        assert!(
            !allows(&alternation, "https://b.test/y/more"),
            "anchoring covers alternations"
        );
        assert!(Allowlist::new(&["(".into()], &[]).is_err());
    }

    #[test]
    fn host_suffix_is_structural() {
        let l = Allowlist::new(&[], &[".Example.com".into()]).unwrap();
        assert!(allows(&l, "https://example.com/f"));
        assert!(allows(&l, "https://a.b.example.com:8443/f"));
        assert!(!allows(&l, "https://evilexample.com/f"));
        assert!(!allows(&l, "https://example.com.evil.test/f"));
        assert!(!allows(&l, "https://evil.test/example.com"));
        assert!(
            !allows(&l, "http://a.example.com/f"),
            "https only, as websocket-bridge"
        );
        assert!(Allowlist::new(&[], &["a b".into()]).is_err());
    }

    #[test]
    fn base_url_is_derived_and_ends_with_a_slash() {
        let mut c = Ws2HttpConfig::new(Ws2HttpConfig::DEFAULT_LISTEN);
        assert_eq!(c.base_url(), "http://127.0.0.1:9443/");
        c.base_url = Some("https://bridge.example.com/ws".into());
        assert_eq!(c.base_url(), "https://bridge.example.com/ws/");
        assert!(c.validate().is_ok());
        c.base_url = Some("ftp://x".into());
        assert!(c.validate().is_err());
    }
}
