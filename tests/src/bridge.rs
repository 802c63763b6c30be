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

/// The name of the thread a smol bridge's executor (so every smol session) runs on.
pub const SMOL_EXECUTOR_THREAD: &str = "wsbridge-smol-test";

impl Bridge {
    /// Connections open now (accepted and not yet closed).
    pub fn active_connections(&self) -> usize {
        match self.inner.as_ref() {
            Some(Inner::Mio(s)) => s.active_connections(),
            Some(Inner::Smol { server, .. }) => server.active_connections(),
            None => 0,
        }
    }

    /// Stops now: no more accepts, every open session told to go away (`handle_shutdown`) and closed
    /// (a graceful drain with no time to finish; the executor thread of smol goes on until the bridge
    /// is dropped). [`Bridge::active_connections`] still answers afterwards.
    pub fn stop(&self) {
        match self.inner.as_ref() {
            Some(Inner::Mio(s)) => s.drain(Duration::ZERO),
            Some(Inner::Smol { server, .. }) => {
                smol::block_on(server.stop(Duration::ZERO));
            }
            None => {}
        }
    }

    /// Drains gracefully (mio: [`Server::drain`](wsbridge_mio::driver::Server::drain); smol:
    /// `stop(timeout)`): the listeners close at once, open sessions get until `timeout`, then
    /// `handle_shutdown`, then are closed. Returns once every session has ended.
    pub fn drain(&self, timeout: Duration) {
        match self.inner.as_ref() {
            Some(Inner::Mio(s)) => s.drain(timeout),
            Some(Inner::Smol { server, .. }) => {
                smol::block_on(server.stop(timeout));
            }
            None => {}
        }
    }

    /// The smol server itself (for what only smol has, like `stop`'s drain); `None` on mio.
    pub fn smol_server(&self) -> Option<&Arc<wsbridge_smol::Server>> {
        match self.inner.as_ref() {
            Some(Inner::Smol { server, .. }) => Some(server),
            _ => None,
        }
    }
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
    start_on_loops(runtime, factory, max_connections, 1)
}

/// Like [`start`], with `loops` event loops on mio (e.g. 2: sessions, limits and deliveries across
/// loops); smol runs its one executor thread whatever `loops` says.
pub fn start_on_loops(
    runtime: Runtime,
    factory: Arc<dyn SessionFactory>,
    max_connections: usize,
    loops: usize,
) -> Bridge {
    start_bound(runtime, factory, max_connections, loops, 0)
}

/// Like [`start`], listening on 127.0.0.1:`port` (0: an ephemeral port).
pub fn start_at(
    runtime: Runtime,
    factory: Arc<dyn SessionFactory>,
    max_connections: usize,
    port: u16,
) -> Bridge {
    start_bound(runtime, factory, max_connections, 1, port)
}

fn start_bound(
    runtime: Runtime,
    factory: Arc<dyn SessionFactory>,
    max_connections: usize,
    loops: usize,
    port: u16,
) -> Bridge {
    let bind = SocketAddr::from(([127, 0, 0, 1], port));
    match runtime {
        Runtime::Mio => {
            use wsbridge_mio::driver::{ListenerSpec, RuntimeOptions, Server};
            let opts = RuntimeOptions {
                threads: loops,
                max_connections,
                reuse_port: false,
            };
            let server =
                Server::start(vec![ListenerSpec::new(bind, factory)], opts).expect("start bridge");
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
                .name(SMOL_EXECUTOR_THREAD.into())
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

/// A `ws2http` config with test-friendly defaults: no pings, nothing allowed yet (set `allowlist`).
pub fn ws2http_config() -> wsbridge_core::ws2http::Ws2HttpConfig {
    let mut cfg = wsbridge_core::ws2http::Ws2HttpConfig::new("127.0.0.1:0");
    cfg.ping_interval = None;
    cfg
}

/// Starts a `ws2http` listener on 127.0.0.1 with an ephemeral port, on `runtime`. Without a
/// `base_url` the callback prefix is derived from the bound address (`http://127.0.0.1:PORT/`), which
/// is only known once listening: the factory's config is made then.
pub fn start_ws2http(
    runtime: Runtime,
    mut cfg: wsbridge_core::ws2http::Ws2HttpConfig,
    max_connections: usize,
) -> Bridge {
    use wsbridge_core::ws2http::Ws2HttpFactory;
    cfg.validate().expect("valid config");
    if cfg.base_url.is_some() {
        return start(
            runtime,
            Arc::new(Ws2HttpFactory(Arc::new(cfg))),
            max_connections,
        );
    }
    // Reserve a port, free it, and listen there (loopback, so the race is with this host alone).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("reserve a port")
        .port();
    cfg.listen = format!("127.0.0.1:{port}");
    let factory = Arc::new(Ws2HttpFactory(Arc::new(cfg)));
    start_at(runtime, factory, max_connections, port)
}
