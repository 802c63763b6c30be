//! The settings of a `ws2tcp` listener, shared by the CLI and the runtimes.

use std::time::Duration;

use super::policy::TargetPolicy;
use crate::config::WsConfig;
use crate::tls::{ClientTlsFactory, ServerTlsFactory};

/// A fixed target (`--target HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticTarget {
    /// A host name or address (brackets of an IPv6 literal removed).
    pub host: String,
    /// 1..=65535.
    pub port: u16,
}

impl StaticTarget {
    /// Parses `HOST:PORT` or `[IPV6]:PORT`.
    pub fn parse(s: &str) -> Result<StaticTarget, String> {
        let (host, port) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?}: expected HOST:PORT"))?;
        let host = match host.strip_prefix('[') {
            Some(h) => h
                .strip_suffix(']')
                .ok_or_else(|| format!("{s:?}: missing ']'"))?,
            None if host.contains(':') => {
                return Err(format!("{s:?}: write an IPv6 address as [ADDR]:PORT"))
            }
            None => host,
        };
        if host.is_empty() {
            return Err(format!("{s:?}: the host is empty"));
        }
        let port = super::policy::parse_port_str(port).map_err(|e| format!("{s:?}: {e}"))?;
        Ok(StaticTarget {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for StaticTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A `ws2tcp` listener's settings. Built and validated once; each session shares it.
#[derive(Clone)]
pub struct Ws2TcpConfig {
    /// The listen address as configured (for logs).
    pub listen: String,
    /// Static mode: every client goes to this target (trusted: the policy does not apply). `None`:
    /// dynamic mode, the Socket2Web handshake picks the target.
    pub target: Option<StaticTarget>,
    /// Which targets dynamic clients may reach.
    pub policy: TargetPolicy,
    /// Browser origins allowed to connect; empty: any. A request with an `Origin` outside the list gets
    /// 403 (requests without `Origin`, from non-browsers, are not affected).
    pub allowed_origins: Vec<String>,
    /// Only upgrades to this path (the part before `?`) are served; others get 404. `None`: any path.
    pub path: Option<String>,
    /// TLS towards clients (`wss://`).
    pub server_tls: Option<ServerTlsFactory>,
    /// TLS client sessions for the `tls` protocol towards targets.
    pub target_tls: Option<ClientTlsFactory>,
    /// Accept → upgrade → (dynamic) the client's handshake must finish within this (`--timeout`).
    pub handshake_timeout: Duration,
    /// Resolve → connect → (tls) the target's TLS handshake must finish within this.
    pub connect_timeout: Duration,
    /// No payload either way for this long closes the session.
    pub idle_timeout: Option<Duration>,
    /// A session older than this is closed.
    pub max_lifetime: Option<Duration>,
    /// A WebSocket Ping to the client this often.
    pub ping_interval: Option<Duration>,
    /// A Pong must arrive this long after the Ping was written.
    pub ping_timeout: Duration,
    /// Bytes queued per direction before the sending side stops being read.
    pub buffer_size: usize,
    /// WebSocket limits towards the client.
    pub ws: WsConfig,
}

impl std::fmt::Debug for Ws2TcpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ws2TcpConfig")
            .field("listen", &self.listen)
            .field("target", &self.target)
            .field("policy", &self.policy)
            .field("allowed_origins", &self.allowed_origins)
            .field("path", &self.path)
            .field("tls", &self.server_tls.is_some())
            .field("buffer_size", &self.buffer_size)
            .finish_non_exhaustive()
    }
}

/// The subprotocol of the `tcp2ws → ws2tcp` tunnel (the one `tcp2ws` always offers).
pub use crate::tcp2ws::config::TUNNEL_PROTOCOL;
/// The websockify subprotocol (noVNC): raw bytes in Binary frames.
pub const BINARY_PROTOCOL: &str = "binary";
/// The Close reason sent to a client accepted over the connection limit (Socket2Web's).
pub const AT_CAPACITY: &str = "Server at capacity, try again later";

impl Ws2TcpConfig {
    /// The CLI's defaults, before flags are applied.
    pub fn new(listen: &str) -> Self {
        Ws2TcpConfig {
            listen: listen.to_owned(),
            target: None,
            policy: TargetPolicy::default(),
            allowed_origins: Vec::new(),
            path: None,
            server_tls: None,
            target_tls: None,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            max_lifetime: Some(Duration::from_secs(3600)),
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(30),
            buffer_size: 64 << 10,
            ws: WsConfig::default(),
        }
    }

    /// Checks that the parts fit together; the message names the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.buffer_size < 1024 {
            return Err("--buffer-size must be at least 1024".into());
        }
        if self.handshake_timeout.is_zero() {
            return Err("--timeout must be positive".into());
        }
        if self.connect_timeout.is_zero() {
            return Err("--connect-timeout must be positive".into());
        }
        if self.ping_interval.is_some() && self.ping_timeout.is_zero() {
            return Err("--ping-timeout must be positive".into());
        }
        if let Some(p) = &self.path {
            if !p.starts_with('/') || p.contains('?') {
                return Err("--path must start with '/' and have no query".into());
            }
        }
        if self.target.is_some() && (!self.policy.allow.is_empty() || !self.policy.deny.is_empty())
        {
            return Err(
                "--allow and --deny apply to dynamic targets; the --target of static mode is trusted"
                    .into(),
            );
        }
        Ok(())
    }

    /// Whether `origin` (an `Origin` header) may connect.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.allowed_origins.is_empty() => true,
            Some(o) => {
                let o = o.trim_end_matches('/');
                self.allowed_origins
                    .iter()
                    .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_targets_parse() {
        let t = StaticTarget::parse("vnc.internal:5900").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("vnc.internal", 5900));
        let t = StaticTarget::parse("[::1]:22").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 22));
        assert_eq!(t.to_string(), "[::1]:22");
        for bad in [
            "x", "x:0", "x:65536", "x:-1", "x:abc", ":22", "::1:22", "[::1:22",
        ] {
            assert!(StaticTarget::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_compare_without_case_or_trailing_slash() {
        let mut c = Ws2TcpConfig::new("x");
        assert!(c.origin_allowed(Some("https://evil.test")));
        c.allowed_origins = vec!["https://app.example.com".into()];
        assert!(c.origin_allowed(None));
        assert!(c.origin_allowed(Some("https://APP.example.com/")));
        assert!(!c.origin_allowed(Some("https://evil.test")));
        assert!(!c.origin_allowed(Some("http://app.example.com")));
        assert!(!c.origin_allowed(Some("null")));
    }
}
