//! The mio driver: [`Server`] runs listeners on N independent single-threaded event loops and drives one
//! [`Session`](wsbridge_core::session::Session) per accepted connection. It holds no protocol logic: the
//! sessions decide everything, the driver moves bytes, dials, resolves and keeps time (DESIGN §2).
//!
//! Threads:
//! - one **acceptor** owns the listening sockets, counts every accepted socket against
//!   [`RuntimeOptions::max_connections`] (until it is closed, across all loops) and hands connections to the
//!   loops round-robin (see `acceptor.rs` for why not `SO_REUSEPORT` per loop);
//! - N **event loops** (`event_loop.rs`), each a mio `Poll` with its own sessions, timers and read buffer;
//! - two **resolver** threads shared by the loops (`resolver.rs`), so `getaddrinfo` never blocks a loop;
//! - one **directory** (`directory.rs`) of the ids sessions registered, through which a session
//!   delivers a message to another on any loop of the same server.
//!
//! Stopping: [`Server::shutdown`] closes everything at once; [`Server::drain`] is the graceful way
//! (listeners closed first, sessions given until a deadline, then told to go away). Counters for
//! Prometheus are kept per thread without locks ([`Server::metrics`]).
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(factory: Arc<dyn wsbridge_core::session::SessionFactory>) -> std::io::Result<()> {
//! use wsbridge_mio::driver::{ListenerSpec, RuntimeOptions, Server};
//! let server = Server::start(
//!     vec![ListenerSpec::new("127.0.0.1:0".parse().unwrap(), factory)],
//!     RuntimeOptions::default(),
//! )?;
//! println!("listening on {:?}", server.local_addrs());
//! server.shutdown();
//! # Ok(()) }
//! ```

mod acceptor;
mod directory;
mod event_loop;
mod limits;
mod read_buffer;
mod resolver;
mod slab;
#[cfg(test)]
mod tests;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::Waker;
use socket2::{Domain, Protocol, Socket, Type};
use wsbridge_core::session::{check_listeners, listen_error, SessionFactory};

use crate::metrics::Metrics;
use acceptor::Acceptor;
use directory::Directory;
use event_loop::{EventLoop, ListenerInfo, LoopHandle, Msg};
pub use limits::AcceptLimits;

/// Resolver threads per server.
const RESOLVER_THREADS: usize = 2;
/// The listen backlog.
const BACKLOG: i32 = 1024;
/// How long [`Server::drain`] lets sessions finish after telling them to shut down (a flush and a
/// close handshake, each bounded by the session's own close timeout, 5 s by default), before closing
/// what is left.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// One listening socket and the factory of its sessions.
#[derive(Clone)]
pub struct ListenerSpec {
    /// Where to listen (port 0: any free port, see [`Server::local_addrs`]).
    pub bind: SocketAddr,
    /// Makes a session per accepted connection.
    pub factory: Arc<dyn SessionFactory>,
    /// Per-client-address and accept-rate limits of this listener (default: none). A connection over
    /// one is treated like one over [`RuntimeOptions::max_connections`].
    pub limits: AcceptLimits,
}

impl ListenerSpec {
    /// A listener on `bind` with no limits besides [`RuntimeOptions::max_connections`].
    pub fn new(bind: SocketAddr, factory: Arc<dyn SessionFactory>) -> ListenerSpec {
        ListenerSpec {
            bind,
            factory,
            limits: AcceptLimits::default(),
        }
    }
}

impl std::fmt::Debug for ListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSpec")
            .field("bind", &self.bind)
            .field("mode", &self.factory.mode())
            .field("limits", &self.limits)
            .finish()
    }
}

/// Settings of the runtime itself (not of any mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Event loops (threads driving sessions). Default: the available cores.
    pub threads: usize,
    /// Connections open at once, counted from accept until closed, across every listener and loop; one
    /// over it gets the factory's `over_capacity` session or is closed at once. Default 10000.
    pub max_connections: usize,
    /// Set `SO_REUSEPORT` on the listeners, so another process can listen on the same port (e.g. during
    /// a restart). Default false.
    pub reuse_port: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 10_000,
            reuse_port: false,
        }
    }
}

#[derive(Default)]
struct Threads {
    acceptor: Option<JoinHandle<()>>,
    loops: Vec<JoinHandle<()>>,
}

/// Listeners and event loops running on their own threads. Dropping it shuts it down.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    acceptor_waker: Arc<Waker>,
    loops: Vec<LoopHandle>,
    active: Arc<AtomicUsize>,
    threads: Mutex<Threads>,
    metrics: Metrics,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .field("loops", &self.loops.len())
            .field("active", &self.active_connections())
            .finish()
    }
}

impl Server {
    /// Binds every listener (so [`Server::local_addrs`] is known when this returns), then starts the
    /// loops, the resolver threads and the acceptor, and returns at once.
    ///
    /// Fails if a listener cannot be bound (the error names the address), if `listeners` is empty or
    /// `threads` is 0, or if a thread cannot be started.
    pub fn start(listeners: Vec<ListenerSpec>, opts: RuntimeOptions) -> io::Result<Server> {
        check_listeners(listeners.len(), &[("threads", opts.threads)])?;
        let mut sockets = Vec::with_capacity(listeners.len());
        let mut infos = Vec::with_capacity(listeners.len());
        for spec in &listeners {
            let sock = bind(spec.bind, opts.reuse_port).map_err(|e| listen_error(spec.bind, &e))?;
            let addr = sock.local_addr()?;
            sockets.push(sock);
            infos.push(ListenerInfo {
                factory: spec.factory.clone(),
                addr,
                per_ip: spec.limits.per_ip.map(limits::PerIp::new),
                rate: spec.limits.rate,
            });
        }
        let local_addrs = infos.iter().map(|i| i.addr).collect();
        // One shard per loop (by index), then the acceptor's.
        let metrics = Metrics::new(
            infos
                .iter()
                .map(|i| (i.factory.mode(), i.addr.to_string()))
                .collect(),
            opts.threads + 1,
        );
        let infos: Arc<[ListenerInfo]> = infos.into();
        let active = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));

        let resolver = resolver::spawn(RESOLVER_THREADS)?;
        let directory = Arc::new(Directory::default());
        let mut threads = Threads::default();
        let mut loops = Vec::with_capacity(opts.threads);
        let started = (|| -> io::Result<Arc<Waker>> {
            for i in 0..opts.threads {
                let (lp, handle) = EventLoop::new(
                    i,
                    directory.clone(),
                    infos.clone(),
                    active.clone(),
                    resolver.clone(),
                    metrics.clone(),
                )?;
                loops.push(handle);
                threads.loops.push(
                    std::thread::Builder::new()
                        .name(format!("wsbridge-loop-{i}"))
                        .spawn(move || lp.run())?,
                );
            }
            directory.set_loops(loops.clone());
            let (acceptor, waker) = Acceptor::new(
                sockets,
                infos.clone(),
                loops.clone(),
                active.clone(),
                opts.max_connections,
                stop.clone(),
                (metrics.clone(), opts.threads),
            )?;
            threads.acceptor = Some(
                std::thread::Builder::new()
                    .name("wsbridge-accept".into())
                    .spawn(move || acceptor.run())?,
            );
            Ok(waker)
        })();
        let acceptor_waker = match started {
            Ok(waker) => waker,
            Err(e) => {
                for lp in &loops {
                    let _ = lp.send(Msg::Shutdown);
                }
                for t in threads.loops {
                    let _ = t.join();
                }
                return Err(e);
            }
        };
        Ok(Server {
            local_addrs,
            stop,
            acceptor_waker,
            loops,
            active,
            threads: Mutex::new(threads),
            metrics,
        })
    }

    /// The server's counters, for [`Metrics::render`] (e.g. through [`crate::metrics::serve`]).
    pub fn metrics(&self) -> Metrics {
        self.metrics.clone()
    }

    /// The bound address of each listener, in the order given to [`Server::start`].
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// Connections open now (accepted and not yet closed), across every loop.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Stops accepting, closes every connection and joins the threads (unless [`Server::wait`] on
    /// another thread already took them: then this only signals, and `wait` returns once they ended).
    pub fn shutdown(&self) {
        self.stop_accepting();
        for lp in &self.loops {
            let _ = lp.send(Msg::Shutdown);
        }
        self.join_loops();
    }

    /// Drains gracefully, and returns once every session has ended:
    /// 1. the listening sockets are closed at once (new clients are refused, or reach another process
    ///    on the same port with `reuse_port`); connections already accepted are still served;
    /// 2. live sessions run on until `timeout` has passed;
    /// 3. then each still open gets [`Session::handle_shutdown`](wsbridge_core::session::Session::handle_shutdown)
    ///    (WebSocket legs: Close 1001 after what is queued; TCP legs: FIN after a flush) and is driven
    ///    until it finishes, for at most [`SHUTDOWN_GRACE`];
    /// 4. what is left then is closed.
    ///
    /// Each loop ends as soon as it has no session left, so this returns early when the sessions end
    /// early. Like [`Server::shutdown`], it only signals if [`Server::wait`] already took the threads.
    pub fn drain(&self, timeout: Duration) {
        self.metrics.set_draining();
        self.stop_accepting();
        // Every connection the acceptor handed off is on a loop's channel before this message.
        let deadline = Instant::now() + timeout;
        for lp in &self.loops {
            let _ = lp.send(Msg::Drain {
                deadline,
                grace: SHUTDOWN_GRACE,
            });
        }
        self.join_loops();
    }

    /// Stops the acceptor and waits for it: the listening sockets are closed when this returns.
    fn stop_accepting(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.acceptor_waker.wake();
        let acceptor = self.lock().acceptor.take();
        if let Some(t) = acceptor {
            let _ = t.join();
        }
    }

    fn join_loops(&self) {
        let loops = std::mem::take(&mut self.lock().loops);
        for t in loops {
            let _ = t.join();
        }
    }

    /// Blocks until the server has been shut down (from another thread, through a shared reference)
    /// and every thread has ended.
    pub fn wait(&self) {
        let threads = std::mem::take(&mut *self.lock());
        if let Some(t) = threads.acceptor {
            let _ = t.join();
        }
        for t in threads.loops {
            let _ = t.join();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Threads> {
        self.threads.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A non-blocking listening socket with `SO_REUSEADDR` (and `SO_REUSEPORT` when asked).
fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<mio::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    sock.set_reuse_address(true)?;
    if reuse_port {
        #[cfg(unix)]
        sock.set_reuse_port(true)?;
        #[cfg(not(unix))]
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "SO_REUSEPORT is not supported on this platform",
        ));
    }
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    sock.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(sock.into()))
}
