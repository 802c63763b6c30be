//! Starting bridges in-process on 127.0.0.1, for each runtime under test.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use wsbridge_core::session::SessionFactory;
use wsbridge_core::tcp2ws::{ListenerTls, Tcp2WsConfig, Tcp2WsFactory};
use wsbridge_core::tls::{server_config, RustlsSession, TlsSession};
use wsbridge_core::url::WsUrl;

use crate::certs::TestCert;

/// The runtime a bridge under test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// `wsbridge-mio`: one event loop thread.
    Mio,
    /// `wsbridge-smol`: a smol executor on one background thread, one task per session.
    Smol,
}

impl Runtime {
    /// Every runtime, for tests that loop over them.
    pub const ALL: [Runtime; 2] = [Runtime::Mio, Runtime::Smol];
}

/// For each scenario `fn name(rt: Runtime)`, a module `name` with one test per runtime: `name::mio` and
/// `name::smol`, so a failure names the runtime. Use it as `wsbridge_tests::both_runtimes!(a, b, …);`.
#[macro_export]
macro_rules! both_runtimes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn mio() {
                super::$name($crate::bridge::Runtime::Mio)
            }
            #[test]
            fn smol() {
                super::$name($crate::bridge::Runtime::Smol)
            }
        }
    )*};
}

/// A running bridge; stopped when dropped (sessions still open are closed).
pub struct Bridge {
    inner: Option<Inner>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it runs on.
    pub runtime: Runtime,
}

enum Inner {
    Mio(wsbridge_mio::driver::Server),
    Smol {
        server: Arc<wsbridge_smol::Server>,
        /// Closed to end the executor thread once the server has stopped.
        done: smol::channel::Sender<()>,
        thread: JoinHandle<()>,
    },
}

impl Drop for Bridge {
    fn drop(&mut self) {
        match self.inner.take() {
            Some(Inner::Mio(s)) => s.shutdown(),
            Some(Inner::Smol {
                server,
                done,
                thread,
            }) => {
                smol::block_on(server.stop(Duration::ZERO));
                done.close();
                let _ = thread.join();
            }
            None => {}
        }
    }
}

/// Starts one listener on 127.0.0.1 (ephemeral port) with sessions from `factory`, on `runtime`.
pub fn start(runtime: Runtime, factory: Arc<dyn SessionFactory>, max_connections: usize) -> Bridge {
    let bind: SocketAddr = "127.0.0.1:0".parse().unwrap();
    match runtime {
        Runtime::Mio => {
            use wsbridge_mio::driver::{ListenerSpec, RuntimeOptions, Server};
            let opts = RuntimeOptions {
                threads: 1,
                max_connections,
                reuse_port: false,
            };
            let server =
                Server::start(vec![ListenerSpec { bind, factory }], opts).expect("start bridge");
            let addr = server.local_addrs()[0];
            Bridge {
                inner: Some(Inner::Mio(server)),
                addr,
                runtime,
            }
        }
        Runtime::Smol => {
            use wsbridge_smol::{ListenerSpec, RuntimeOptions, Server};
            let opts = RuntimeOptions { max_connections };
            let server = Arc::new(
                Server::bind(vec![ListenerSpec::new(bind, factory)], opts).expect("bind bridge"),
            );
            let addr = server.local_addrs()[0];
            let (done, until_done) = smol::channel::bounded::<()>(1);
            let s = server.clone();
            let thread = std::thread::Builder::new()
                .name("wsbridge-smol-test".into())
                .spawn(move || {
                    let ex = smol::Executor::new();
                    smol::block_on(ex.run(async {
                        s.run(&ex).await.expect("run the smol server");
                        // Keep the executor turning for the sessions until the bridge is dropped.
                        let _ = until_done.recv().await;
                    }));
                })
                .expect("start the executor thread");
            Bridge {
                inner: Some(Inner::Smol {
                    server,
                    done,
                    thread,
                }),
                addr,
                runtime,
            }
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

/// Starts a `tcp2ws` listener on 127.0.0.1 with an ephemeral port, on `runtime`.
pub fn start_tcp2ws(runtime: Runtime, cfg: Tcp2WsConfig, max_connections: usize) -> Bridge {
    cfg.validate().expect("valid config");
    start(
        runtime,
        Arc::new(Tcp2WsFactory(Arc::new(cfg))),
        max_connections,
    )
}

/// A `ws2tcp` config with test-friendly defaults: dynamic mode, no pings, the default policy.
pub fn ws2tcp_config() -> wsbridge_core::ws2tcp::Ws2TcpConfig {
    let mut cfg = wsbridge_core::ws2tcp::Ws2TcpConfig::new("127.0.0.1:0");
    cfg.ping_interval = None;
    cfg
}

/// Starts a `ws2tcp` listener on 127.0.0.1 with an ephemeral port, on `runtime`.
pub fn start_ws2tcp(
    runtime: Runtime,
    cfg: wsbridge_core::ws2tcp::Ws2TcpConfig,
    max_connections: usize,
) -> Bridge {
    cfg.validate().expect("valid config");
    start(
        runtime,
        Arc::new(wsbridge_core::ws2tcp::Ws2TcpFactory(Arc::new(cfg))),
        max_connections,
    )
}
