//! [`Server`]: listeners whose accept loop runs on the caller's executor and spawns one task per session.

use std::future::{poll_fn, Future};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::{Async, Timer};
use futures_lite::{future, Stream};
use smol::channel::{self, Receiver, Sender};
use smol::Executor;
use socket2::{Domain, Protocol, Socket, Type};
use wsbridge_core::entropy::OsEntropy;
use wsbridge_core::session::{check_listeners, listen_error, SessionFactory};
use wsbridge_core::tcp2ws::{Tcp2WsConfig, Tcp2WsFactory};
use wsbridge_core::ws2tcp::{Ws2TcpConfig, Ws2TcpFactory};

use crate::registry::Registry;
use crate::session_task::SessionTask;
use crate::signals::{Phase, Signals};

/// Most connections accepted from one listener per wake-up before the task yields.
const ACCEPT_BUDGET: usize = 128;
/// How long a listener rests after `accept` failed (out of file descriptors…).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// After the drain deadline, how long [`Server::stop`] lets sessions go away cleanly
/// ([`Session::handle_shutdown`](wsbridge_core::session::Session::handle_shutdown)) before it kills them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);
/// How long [`Server::stop`] then waits for killed sessions to notice.
const KILL_GRACE: Duration = Duration::from_millis(500);

/// One listening socket and the factory of its sessions (any mode: the runtime knows none).
///
/// Only [`RuntimeOptions::max_connections`] limits it: the per-address and accept-rate limits
/// (`--max-connections-per-ip`, `--accept-rate`) are enforced by the mio runtime only
/// (`wsbridge_mio::driver::AcceptLimits`).
#[derive(Clone)]
pub struct ListenerSpec {
    /// Where to listen (port 0: any free port, see [`Server::local_addrs`]).
    pub bind: SocketAddr,
    /// Makes a session per accepted connection.
    pub factory: Arc<dyn SessionFactory>,
}

impl ListenerSpec {
    /// A listener on `bind` whose sessions come from `factory`.
    pub fn new(bind: SocketAddr, factory: Arc<dyn SessionFactory>) -> Self {
        ListenerSpec { bind, factory }
    }

    /// A `tcp2ws` listener from the same [`Tcp2WsConfig`] the `wsbridge` binary builds: validated, and
    /// bound to `cfg.listen` (resolved here, once, with the system resolver — so call it at startup,
    /// not on an executor thread that must not block).
    pub fn tcp2ws(cfg: Tcp2WsConfig) -> io::Result<ListenerSpec> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let bind = listen_addr(&cfg.listen)?;
        Ok(ListenerSpec::new(
            bind,
            Arc::new(Tcp2WsFactory(Arc::new(cfg))),
        ))
    }

    /// A `ws2tcp` listener from the same [`Ws2TcpConfig`] the `wsbridge` binary builds: validated, and
    /// bound to `cfg.listen` (resolved here, once, like [`ListenerSpec::tcp2ws`]).
    pub fn ws2tcp(cfg: Ws2TcpConfig) -> io::Result<ListenerSpec> {
        cfg.validate()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let bind = listen_addr(&cfg.listen)?;
        Ok(ListenerSpec::new(
            bind,
            Arc::new(Ws2TcpFactory(Arc::new(cfg))),
        ))
    }
}

impl std::fmt::Debug for ListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerSpec")
            .field("bind", &self.bind)
            .field("mode", &self.factory.mode())
            .finish()
    }
}

/// `HOST:PORT` → the first address the system resolver gives.
fn listen_addr(listen: &str) -> io::Result<SocketAddr> {
    listen
        .to_socket_addrs()
        .map_err(|e| io::Error::new(e.kind(), format!("listen {listen}: {e}")))?
        .next()
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("listen {listen}: resolves to no address"),
            )
        })
}

/// Settings of the runtime itself (not of any mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Connections open at once, counted from accept until the session's task ends, across every
    /// listener of the server; one over it gets the factory's `over_capacity` session, or is closed at
    /// once when that is `None`. Default 10000.
    pub max_connections: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            max_connections: 10_000,
        }
    }
}

/// State the server shares with its session tasks.
struct Shared {
    /// Connections open now (accepted, task not yet ended).
    active: AtomicUsize,
    /// [`Server::run`] is accepting (its listeners are open).
    running: AtomicBool,
    /// Something ended (a session task, or `run`): a coalescing notification for [`Server::stop`].
    ended_tx: Sender<()>,
    ended_rx: Receiver<()>,
}

impl Shared {
    fn notify_ended(&self) {
        let _ = self.ended_tx.try_send(()); // full: a notification is already pending
    }
}

/// One connection counted against the limit, released when the session's task ends (or is dropped
/// unrun with its executor).
struct Counted(Arc<Shared>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
        self.0.notify_ended();
    }
}

/// What [`Server::adopt`] spawns: the session's task, then (dropped after it, sockets closed) its place
/// in the count. A plain struct, so the executor's allocation per connection is these two and no
/// `async` state besides.
struct Spawned {
    task: SessionTask,
    _counted: Counted,
}

impl Future for Spawned {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.task).poll(cx).map(drop)
    }
}

/// `run` is accepting until dropped.
struct Running<'a>(&'a Shared);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
        self.0.notify_ended();
    }
}

struct Listener {
    sock: Async<TcpListener>,
    factory: Arc<dyn SessionFactory>,
    /// Resting after an accept error, until this goes off.
    backoff: Option<Timer>,
}

/// Bound listeners, driven by [`Server::run`] on an executor the caller owns, stopped gracefully by
/// [`Server::stop`].
///
/// Contract:
/// - [`Server::bind`] binds every listener at once (so [`Server::local_addrs`] is known) but accepts
///   nothing until [`Server::run`] is polled.
/// - `run` accepts until `stop` is called (or the server is dropped), spawning one detached task per
///   connection on the executor it was given; it returns once the listening sockets are closed. It may
///   be called once.
/// - `stop(drain)` closes the listeners (new clients are refused), lets open sessions finish until the
///   deadline, then ends the rest (their sockets are closed) and returns how many it had to end.
/// - Dropping the server without `stop` stops accepting and ends every session at its next poll.
///
/// `Server` is `Send + Sync`: run and stop it from different tasks through a shared reference (e.g. an
/// `Arc<Server>`).
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    /// Taken by `run` (or by `stop` if `run` never started).
    listeners: Mutex<Option<Vec<Listener>>>,
    max_connections: usize,
    shared: Arc<Shared>,
    /// Closed to stop accepting.
    stop_tx: Sender<()>,
    stop_rx: Receiver<()>,
    /// Raised to [`Phase::Shutdown`] at the drain deadline (every session gets `handle_shutdown`), to
    /// [`Phase::Kill`] [`SHUTDOWN_GRACE`] later (every session task ends).
    signals: Arc<Signals>,
    /// The ids the server's sessions registered, for deliveries between them.
    registry: Arc<Registry>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addrs", &self.local_addrs)
            .field("active", &self.active_connections())
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds every listener (non-blocking, registered with async-io's reactor) and returns without
    /// accepting. Fails if `listeners` is empty, `max_connections` is 0, or a listener cannot be bound
    /// (the error names the address).
    pub fn bind(listeners: Vec<ListenerSpec>, opts: RuntimeOptions) -> io::Result<Server> {
        check_listeners(
            listeners.len(),
            &[("max_connections", opts.max_connections)],
        )?;
        let mut bound = Vec::with_capacity(listeners.len());
        let mut local_addrs = Vec::with_capacity(listeners.len());
        for spec in listeners {
            let sock = bind(spec.bind).map_err(|e| listen_error(spec.bind, &e))?;
            local_addrs.push(sock.get_ref().local_addr()?);
            bound.push(Listener {
                sock,
                factory: spec.factory,
                backoff: None,
            });
        }
        let (ended_tx, ended_rx) = channel::bounded(1);
        let (stop_tx, stop_rx) = channel::bounded(1);
        Ok(Server {
            local_addrs,
            listeners: Mutex::new(Some(bound)),
            max_connections: opts.max_connections,
            shared: Arc::new(Shared {
                active: AtomicUsize::new(0),
                running: AtomicBool::new(false),
                ended_tx,
                ended_rx,
            }),
            stop_tx,
            stop_rx,
            signals: Arc::default(),
            registry: Arc::default(),
        })
    }

    /// The bound address of each listener, in the order given to [`Server::bind`].
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.local_addrs.clone()
    }

    /// Connections open now: accepted (over-capacity ones included) and whose task has not ended.
    pub fn active_connections(&self) -> usize {
        self.shared.active.load(Ordering::Acquire)
    }

    /// Accepts on every listener until [`Server::stop`], spawning one detached task per connection on
    /// `ex` (which must keep running for the sessions to progress: `run` returning does not end them).
    ///
    /// Returns `Ok(())` once stopped, with the listening sockets closed. Fails at once if `run` was
    /// already called.
    pub async fn run(&self, ex: &Executor<'_>) -> io::Result<()> {
        let Some(mut listeners) = self.lock().take() else {
            return if self.stop_tx.is_closed() {
                Ok(()) // stopped before it ran
            } else {
                Err(io::Error::other("Server::run was already called"))
            };
        };
        self.shared.running.store(true, Ordering::Release);
        let _running = Running(&self.shared);
        let mut stop = Box::pin(self.stop_rx.clone());
        let mut batch = Vec::new();
        // Each turn waits for connections (or yields after a spent budget); it ends at `stop`.
        loop {
            let more =
                poll_fn(|cx| poll_accept(cx, &mut listeners, stop.as_mut(), &mut batch)).await;
            let Some(more) = more else {
                return Ok(()); // `listeners` is dropped: the sockets are closed
            };
            for (i, stream, peer) in batch.drain(..) {
                self.adopt(ex, &listeners[i].factory, stream, peer);
            }
            if more {
                future::yield_now().await;
            }
        }
    }

    /// Counts an accepted connection, makes its session and spawns its task.
    fn adopt(
        &self,
        ex: &Executor<'_>,
        factory: &Arc<dyn SessionFactory>,
        stream: TcpStream,
        peer: SocketAddr,
    ) {
        let now = Instant::now();
        let before = self.shared.active.fetch_add(1, Ordering::AcqRel);
        let counted = Counted(self.shared.clone());
        let session = if before >= self.max_connections {
            match factory.over_capacity(peer, Box::new(OsEntropy::new()), now) {
                Some(s) => s,
                None => return, // `stream` and `counted` drop: closed at once, uncounted
            }
        } else {
            factory.session(peer, Box::new(OsEntropy::new()), now)
        };
        let Ok(sock) = Async::new(stream) else {
            return; // cannot register with the reactor: closed
        };
        let signals = self.signals.clone();
        let task = SessionTask::new(session, sock, signals, self.registry.clone());
        ex.spawn(Spawned {
            task,
            _counted: counted,
        })
        .detach();
    }

    /// Stops gracefully: closes the listeners at once, waits until every session has finished or
    /// `drain` has passed, then tells the sessions still open to go away
    /// ([`Session::handle_shutdown`](wsbridge_core::session::Session::handle_shutdown): Close 1001 /
    /// FIN after a flush), gives them [`SHUTDOWN_GRACE`] to do so, ends the rest (closing their
    /// sockets), and returns how many were open at the deadline.
    ///
    /// Needs the executor the sessions run on to keep running until it returns. Waits at most `drain`
    /// plus one second.
    pub async fn stop(&self, drain: Duration) -> usize {
        let deadline = Instant::now() + drain;
        self.stop_tx.close();
        drop(self.lock().take()); // `run` never started: close the listeners here
        if self.wait_idle(deadline).await {
            return 0;
        }
        let left = self.active_connections();
        self.signals.raise(Phase::Shutdown);
        if self.wait_idle(Instant::now() + SHUTDOWN_GRACE).await {
            return left;
        }
        self.signals.raise(Phase::Kill);
        self.wait_idle(Instant::now() + KILL_GRACE).await;
        left
    }

    /// Waits until `run` has returned and no session is open, or until `deadline`; true if idle.
    async fn wait_idle(&self, deadline: Instant) -> bool {
        let mut timer = Timer::at(deadline);
        // Each turn waits for an end notification; the deadline bounds it.
        loop {
            if !self.shared.running.load(Ordering::Acquire) && self.active_connections() == 0 {
                return true;
            }
            let ended = async {
                let _ = self.shared.ended_rx.recv().await;
                true
            };
            let expired = async {
                (&mut timer).await;
                false
            };
            if !future::or(ended, expired).await {
                return !self.shared.running.load(Ordering::Acquire)
                    && self.active_connections() == 0;
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Vec<Listener>>> {
        self.listeners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_tx.close();
        self.signals.raise(Phase::Kill);
    }
}

/// The accept half of [`Server::run`]: accepts what every listener has, up to [`ACCEPT_BUDGET`] each,
/// into `batch`. `Ready(None)`: stopped. `Ready(Some(more))`: a batch (`more`: a budget was spent, so
/// yield and come back). Accept errors rest the listener for [`ACCEPT_BACKOFF`].
fn poll_accept(
    cx: &mut Context<'_>,
    listeners: &mut [Listener],
    mut stop: Pin<&mut Receiver<()>>,
    batch: &mut Vec<(usize, TcpStream, SocketAddr)>,
) -> Poll<Option<bool>> {
    if stop.as_mut().poll_next(cx).is_ready() {
        return Poll::Ready(None);
    }
    let mut more = false;
    for (i, l) in listeners.iter_mut().enumerate() {
        if let Some(t) = l.backoff.as_mut() {
            if Pin::new(t).poll(cx).is_pending() {
                continue;
            }
            l.backoff = None;
        }
        let mut spent = true;
        for _ in 0..ACCEPT_BUDGET {
            match l.sock.get_ref().accept() {
                Ok((stream, peer)) => batch.push((i, stream, peer)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if l.sock.poll_readable(cx).is_pending() {
                        spent = false;
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(_) => {
                    // EMFILE, ENFILE, ENOBUFS…: the connection stays queued; try again shortly.
                    let mut t = Timer::after(ACCEPT_BACKOFF);
                    let _ = Pin::new(&mut t).poll(cx); // registers the wake-up
                    l.backoff = Some(t);
                    spent = false;
                    break;
                }
            }
        }
        more |= spent;
    }
    if batch.is_empty() && !more {
        Poll::Pending
    } else {
        Poll::Ready(Some(more))
    }
}

/// Connections the kernel queues per listener before `accept`. std (and so `Async::bind`) asks for
/// 128, which a burst of connects overflows into clients waiting a second for a SYN retransmit.
const BACKLOG: i32 = 1024;

/// A listening socket on `addr` with `SO_REUSEADDR` (as std sets it) and a [`BACKLOG`]-deep queue,
/// registered with async-io's reactor.
fn bind(addr: SocketAddr) -> io::Result<Async<TcpListener>> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    #[cfg(unix)]
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    sock.listen(BACKLOG)?;
    Async::new(TcpListener::from(sock))
}
