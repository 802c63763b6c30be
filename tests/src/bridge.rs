//! Starting bridges in-process on 127.0.0.1, for each runtime under test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use wsbridge_core::tcp2ws::{ListenerTls, Tcp2WsConfig, Tcp2WsFactory};
use wsbridge_core::tls::{server_config, RustlsSession, TlsSession};
use wsbridge_core::url::WsUrl;
use wsbridge_mio::driver::{ListenerSpec, RuntimeOptions, Server};

use crate::certs::TestCert;

/// A running bridge; stopped when dropped.
pub struct Bridge {
    server: Option<Server>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown();
        }
    }
}

/// A `tcp2ws` config towards `backend` with test-friendly defaults (short timeouts are set per test).
pub fn tcp2ws_config(backend: &str) -> Tcp2WsConfig {
    let mut cfg = Tcp2WsConfig::new("127.0.0.1:0", WsUrl::parse(backend).expect("backend URL"));
    cfg.ping_interval = None;
    cfg.handshake_timeout = Duration::from_secs(10);
    cfg
}

/// Adds the test certificate for implicit TLS or STARTTLS.
pub fn with_tls(mut cfg: Tcp2WsConfig, mode: ListenerTls, cert: &TestCert) -> Tcp2WsConfig {
    let server = server_config(vec![cert.pair()]).expect("server config");
    cfg.listener_tls = mode;
    cfg.server_tls = Some(Arc::new(move || {
        Box::new(RustlsSession::server(server.clone()).expect("server session"))
            as Box<dyn TlsSession>
    }));
    cfg
}

/// Starts a `tcp2ws` listener on 127.0.0.1 with an ephemeral port.
pub fn start_tcp2ws(cfg: Tcp2WsConfig, max_connections: usize) -> Bridge {
    cfg.validate().expect("valid config");
    let spec = ListenerSpec {
        bind: "127.0.0.1:0".parse().unwrap(),
        factory: Arc::new(Tcp2WsFactory(Arc::new(cfg))),
    };
    let opts = RuntimeOptions {
        threads: 1,
        max_connections,
        reuse_port: false,
    };
    let server = Server::start(vec![spec], opts).expect("start bridge");
    let addr = server.local_addrs()[0];
    Bridge {
        server: Some(server),
        addr,
    }
}
