//! The settings of a `tcp2ws` listener, shared by the CLI, the config file and both runtimes.

use std::time::Duration;

use crate::config::WsConfig;
use crate::url::WsUrl;

/// What the listener speaks to its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerTls {
    /// Plain TCP.
    Plain,
    /// TLS from the first byte (POP3S on 995, IMAPS on 993).
    Implicit,
    /// Plain TCP that switches to TLS when the backend sends `start_tls` (SMTP on 587).
    StartTls,
}

/// What a client's FIN means (DESIGN §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfClose {
    /// Client FIN → Close(1000) to the backend after the data; the backend's Close ends the session.
    Close,
    /// Client FIN → `{"type":"eof"}`; the backend may keep sending and closes when done.
    Eof,
}

pub use crate::tls::{ClientTlsFactory, ServerTlsFactory};

/// A `tcp2ws` listener's settings. Built and validated once; each session shares it.
#[derive(Clone)]
pub struct Tcp2WsConfig {
    /// The listen address as configured (reported in `bridge_hello`).
    pub listen: String,
    /// The backend every client gets its own WebSocket to.
    pub backend: WsUrl,
    /// Extra headers on the upgrade request.
    pub backend_headers: Vec<(String, String)>,
    /// Subprotocols offered after `wsbridge.v1`.
    pub subprotocols: Vec<String>,
    /// Plain, implicit TLS or STARTTLS towards the client.
    pub listener_tls: ListenerTls,
    /// TLS server sessions for clients (required unless `listener_tls` is `Plain`).
    pub server_tls: Option<ServerTlsFactory>,
    /// TLS client sessions for a `wss://` backend (required when the backend is `wss://`).
    pub client_tls: Option<ClientTlsFactory>,
    /// Accept → (TLS handshake) → backend upgrade must finish within this.
    pub handshake_timeout: Duration,
    /// No payload either way for this long closes the session.
    pub idle_timeout: Option<Duration>,
    /// A session older than this is closed.
    pub max_lifetime: Option<Duration>,
    /// A WebSocket Ping to the backend this often.
    pub ping_interval: Option<Duration>,
    /// A Pong must arrive this long after the Ping was written.
    pub ping_timeout: Duration,
    /// Bytes queued per direction before the sending side stops being read.
    pub buffer_size: usize,
    /// What a client FIN means.
    pub half_close: HalfClose,
    /// In `eof` mode, how long the backend may keep the session open after the client's FIN.
    pub eof_timeout: Duration,
    /// WebSocket limits towards the backend.
    pub ws: WsConfig,
}

impl std::fmt::Debug for Tcp2WsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tcp2WsConfig")
            .field("listen", &self.listen)
            .field("backend", &self.backend)
            .field("listener_tls", &self.listener_tls)
            .field("half_close", &self.half_close)
            .field("buffer_size", &self.buffer_size)
            .finish_non_exhaustive()
    }
}

/// The subprotocol `tcp2ws` always offers: a `ws2tcp` that accepts it speaks the control protocol back.
pub const TUNNEL_PROTOCOL: &str = "wsbridge.v1";

impl Tcp2WsConfig {
    /// Defaults of the CLI for a backend, before flags are applied.
    pub fn new(listen: &str, backend: WsUrl) -> Self {
        Tcp2WsConfig {
            listen: listen.to_owned(),
            backend,
            backend_headers: Vec::new(),
            subprotocols: Vec::new(),
            listener_tls: ListenerTls::Plain,
            server_tls: None,
            client_tls: None,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            max_lifetime: None,
            ping_interval: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(30),
            buffer_size: 64 << 10,
            half_close: HalfClose::Close,
            eof_timeout: Duration::from_secs(30),
            ws: WsConfig::default(),
        }
    }

    /// Checks that the parts fit together; the message names the flag to fix.
    pub fn validate(&self) -> Result<(), String> {
        if self.listener_tls != ListenerTls::Plain && self.server_tls.is_none() {
            return Err(
                "--tls-cert and --tls-key are required for implicit TLS and --starttls".into(),
            );
        }
        if self.backend.tls && self.client_tls.is_none() {
            return Err("a wss:// backend needs TLS client settings".into());
        }
        if self.buffer_size < 1024 {
            return Err("--buffer-size must be at least 1024".into());
        }
        if self.handshake_timeout.is_zero() {
            return Err("--handshake-timeout must be positive".into());
        }
        Ok(())
    }
}
