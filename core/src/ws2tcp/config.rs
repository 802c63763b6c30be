//! The settings of a `ws2tcp` listener, shared by the CLI and the runtimes.

use std::time::Duration;

use bytes::Bytes;

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

/// A file served to plain `GET` and `HEAD` requests next to the WebSocket endpoint (the web console,
/// `--console`). A request carrying `Upgrade: websocket` never gets a page, so the WebSocket works on the
/// same path; a page's path answers other methods with 405.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPage {
    /// The request path it answers, compared with the request's path (the part before `?`), e.g. `/`.
    pub path: String,
    /// Its `Content-Type`, e.g. `text/html; charset=utf-8`.
    pub content_type: String,
    /// Its `Content-Security-Policy`.
    pub content_security_policy: String,
    /// The bytes served.
    pub body: Bytes,
}

impl StaticPage {
    /// An HTML page at `path`. Its policy allows only same-origin scripts and connections, WebSockets
    /// anywhere (`ws:`/`wss:`) and — by their SHA-256 hashes — the page's own inline `<script>` and
    /// `<style>` elements: injected markup runs nothing, and the page may not be framed.
    pub fn html(path: &str, html: &str) -> StaticPage {
        let scripts: String = inline_hashes(html, "script");
        let styles: String = inline_hashes(html, "style");
        StaticPage {
            path: path.to_owned(),
            content_type: "text/html; charset=utf-8".to_owned(),
            content_security_policy: format!(
                "default-src 'none'; script-src 'self'{scripts}; style-src 'self'{styles}; \
                 img-src 'self' data:; connect-src 'self' ws: wss:; base-uri 'none'; \
                 form-action 'none'; frame-ancestors 'none'"
            ),
            body: Bytes::copy_from_slice(html.as_bytes()),
        }
    }

    /// A JavaScript module at `path` (imported by a page; it loads nothing itself).
    pub fn javascript(path: &str, js: &str) -> StaticPage {
        StaticPage {
            path: path.to_owned(),
            content_type: "text/javascript; charset=utf-8".to_owned(),
            content_security_policy: "default-src 'none'; frame-ancestors 'none'".to_owned(),
            body: Bytes::copy_from_slice(js.as_bytes()),
        }
    }
}

/// ` 'sha256-…'` for the content of every `<tag …>…</tag>` element of `html` outside comments (CSP
/// source expressions). The content is hashed exactly as it stands between the tags, which is what
/// browsers hash.
fn inline_hashes(html: &str, tag: &str) -> String {
    use base64::Engine as _;
    let open: String = format!("<{tag}");
    let close: String = format!("</{tag}>");
    let mut out = String::new();
    let mut rest: &str = html;
    while let Some(start) = rest.find(&open) {
        if let Some(comment) = rest[..start].find("<!--") {
            rest = rest[comment..]
                .find("-->")
                .map_or("", |end| &rest[comment + end + 3..]);
            continue;
        }
        let after_name: &str = &rest[start + open.len()..];
        // `<scripts>` or `<styled>` are other elements.
        if !after_name.starts_with(['>', ' ', '\t', '\n', '\r']) {
            rest = after_name;
            continue;
        }
        let Some(tag_end) = after_name.find('>') else {
            break;
        };
        let body: &str = &after_name[tag_end + 1..];
        let Some(end) = body.find(&close) else { break };
        let digest = sha256(&body.as_bytes()[..end]);
        out.push_str(" 'sha256-");
        out.push_str(&base64::engine::general_purpose::STANDARD.encode(digest));
        out.push('\'');
        rest = &body[end + close.len()..];
    }
    out
}

/// SHA-256 through rustls's `ring` provider (the core has no other SHA-256).
fn sha256(data: &[u8]) -> Vec<u8> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    let tls13 = suite
        .tls13()
        .expect("TLS13_AES_128_GCM_SHA256 is a TLS 1.3 suite");
    tls13.common.hash_provider.hash(data).as_ref().to_vec()
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
    /// Start every target connection with a PROXY protocol header of this version
    /// (`--send-proxy-protocol`): the WebSocket client (on the tunnel: the `tcp2ws` client named by
    /// `bridge_hello`) as the source, the target as the destination. Before TLS with the `tls` protocol.
    pub send_proxy_protocol: Option<crate::proxy::Version>,
    /// Files served to plain `GET`/`HEAD` requests (`--console`); empty: none, every request is an
    /// upgrade attempt.
    pub static_pages: Vec<StaticPage>,
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
            .field(
                "static_pages",
                &self
                    .static_pages
                    .iter()
                    .map(|p| &p.path)
                    .collect::<Vec<_>>(),
            )
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
            send_proxy_protocol: None,
            static_pages: Vec::new(),
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
        if self.target.is_some() && !self.static_pages.is_empty() {
            return Err(
                "--console needs dynamic mode: its page does the handshake that --target skips"
                    .into(),
            );
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

    /// The page served at `path` (a request path, before `?`), if any.
    pub fn static_page(&self, path: &str) -> Option<&StaticPage> {
        self.static_pages.iter().find(|p| p.path == path)
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
    fn html_pages_allow_their_own_inline_elements_by_hash() {
        // printf 'alert(1)' | openssl dgst -sha256 -binary | base64
        let alert = "'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='";
        // printf '' | openssl dgst -sha256 -binary | base64
        let empty = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='";
        let html = "<!-- <script>x</script> --><style></style><scripts>x</scripts>\
                    <script type=\"module\">alert(1)</script>";
        let page = StaticPage::html("/", html);
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert_eq!(page.body, html.as_bytes());
        let csp = &page.content_security_policy;
        assert!(csp.starts_with("default-src 'none'; "), "{csp}");
        assert!(
            csp.contains(&format!("script-src 'self' {alert};")),
            "{csp}"
        );
        assert_eq!(
            csp.matches("'sha256-").count(),
            2,
            "comments are not elements: {csp}"
        );
        assert!(csp.contains(&format!("style-src 'self' {empty};")), "{csp}");
        assert!(csp.contains("connect-src 'self' ws: wss:"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let js = StaticPage::javascript("/x.mjs", "export {};");
        assert_eq!(js.content_type, "text/javascript; charset=utf-8");
    }

    #[test]
    fn console_pages_need_dynamic_mode() {
        let mut c = Ws2TcpConfig::new("x");
        c.static_pages = vec![StaticPage::javascript("/a.mjs", "")];
        assert!(c.validate().is_ok());
        assert_eq!(
            c.static_page("/a.mjs").map(|p| p.path.as_str()),
            Some("/a.mjs")
        );
        assert!(c.static_page("/b.mjs").is_none());
        c.target = Some(StaticTarget::parse("h:1").unwrap());
        assert!(c.validate().unwrap_err().contains("--console"));
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
