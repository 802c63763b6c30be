//! One task per session: it owns the [`Session`], both sockets, one timer and the pending resolve or
//! connect, and waits on all of them in a single poll.
//!
//! The task is a loop of two halves:
//!
//! 1. **Work, synchronously.** Whatever the last wait reported is fed to the session (`handle_*`), and
//!    after every input the outputs are drained in the order of the session contract
//!    ([`wsbridge_core::session`]): actions (a resolve becomes a [`smol::unblock`] task, a connect a
//!    [`connect`] future — both kept in the task, not spawned apart), non-blocking
//!    vectored writes until `WouldBlock`, `shutdown(Write)` once a leg's queue is closed and empty, the
//!    timer. Reads go into a reused per-thread buffer, at most [`READ_BUDGET`] per leg per wake-up.
//! 2. **Wait, once.** [`SessionTask::poll_wait`] polls every source: the server's [`Signals`] (kill,
//!    or shutdown, delivered once as [`Session::handle_shutdown`]; the task then runs on), the resolve, the
//!    connect, the inbox of deliveries (once the session registered an id), the reply to the oldest
//!    delivery it sent, readability of each leg the session wants to read, writability of each leg
//!    whose writes would block, and the timer. It records *everything* that is ready (async-io consumes a readiness
//!    event when it reports it, so nothing may be dropped) and returns it as one [`Woken`] set.
//!
//! **Deliveries** between sessions go through the server's [`Registry`]: `Register(id)` maps the id to
//! this task's bounded inbox; `Deliver { to, .. }` looks the id up and `try_send`s an [`Incoming`] with a
//! one-slot reply channel (unknown id or a closed inbox: `Unknown`; a full inbox: `Full`, nothing is
//! queued). The target calls `handle_delivery`, drains, and answers on the reply channel. The source keeps
//! its replies in the order of its `Deliver`s and hands them over strictly in that order. When a task
//! ends, its ids are forgotten and whatever is left in its inbox is answered `Unknown`.
//!
//! Because nothing here awaits a write, a peer that stops reading never stalls the reads of the other leg:
//! backpressure is the session's `wants_read`, never a blocked `write_all`.
//!
//! **Memory of an idle task** (issue #10). The executor's allocation for a session is a
//! [`SessionTask`] (a hand-written future, so no `async` state is kept beside it) and its place in the
//! server's count. What only some moments need — a resolve, a connect, deliveries — lives in an
//! [`Extra`] box made on demand and dropped once empty. The server's shutdown and kill reach the task
//! through one waker slot ([`Signals`]), not a channel listener per signal. Reads borrow the thread's
//! [`ReadSpace`]. What is left per idle connection is the session, the task, async-io's registration
//! of each socket and the timer's entry in async-io's timer list.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use async_io::{Async, Timer};
use bytes::BytesMut;
use futures_lite::Stream;
use smol::channel::{self, Receiver, Sender, TrySendError};
use socket2::{Domain, Protocol, Socket, Type};
use wsbridge_core::session::{resolve_literal, Action, DeliveryResult, Leg, Session, SMALL_READ};

use crate::registry::{Incoming, Registry, INBOX};
use crate::signals::{Listener, Phase, Signals};

/// Bytes asked of the kernel per `read` call.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// Most bytes read from one leg per wake-up before the task yields to the others on its executor.
pub(crate) const READ_BUDGET: usize = 256 * 1024;
/// Most slices handed to one `write_vectored` call.
const MAX_SLICES: usize = 64;
/// Most follow-up inputs (write errors) one drain may feed back before the session is given up on.
const MAX_FOLLOWUPS: usize = 16;
/// Most deliveries taken from the inbox (and most results handed over) per wake-up.
const DELIVERY_BUDGET: usize = 64;

thread_local! {
    /// The read buffer, shared by every session task that runs on this thread, so idle sessions hold
    /// no read buffer at all. It is borrowed only around a single `read` call, never across a wait or
    /// a `handle_*` call.
    static READ_BUF: RefCell<ReadSpace> = RefCell::new(ReadSpace::default());
}

/// Room for one socket read of up to [`READ_CHUNK`] bytes: zeroed when it is made, not before every
/// read (a `read` of a few bytes — a keystroke, an echo — no longer pays a 64 KiB `memset`).
///
/// What a read filled goes to the session by `take_read`'s rule (`wsbridge_core::session`): a small
/// read is copied out and the room stays; a large one leaves with the whole allocation (no copy) and
/// the next read makes a fresh room. The room is always made at exactly `READ_CHUNK`, whatever the
/// read asks for, and never grown. (An earlier, reverted attempt made the room at the size asked for
/// — the rest of the read budget, after a large read had taken the room away — and grew it with
/// `BytesMut::resize`, which doubles a too-small allocation: a thread could then keep up to
/// 2 × `READ_CHUNK` for good, which tests/tests/tcp2ws_memory.rs, run under load where partial reads
/// leave odd budget remainders, saw as heap still held after the session ended.)
#[derive(Default)]
struct ReadSpace {
    /// `READ_CHUNK` zeroed-or-stale bytes, or empty once handed over.
    buf: BytesMut,
}

impl ReadSpace {
    /// One `read` of at most `want` (≤ `READ_CHUNK`) bytes from `sock`, as the session's own bytes;
    /// empty at end of stream.
    fn read(&mut self, mut sock: &TcpStream, want: usize) -> io::Result<BytesMut> {
        if self.buf.len() != READ_CHUNK {
            self.buf = BytesMut::zeroed(READ_CHUNK);
        }
        let n = sock.read(&mut self.buf[..want])?;
        Ok(if n < SMALL_READ {
            BytesMut::from(&self.buf[..n])
        } else {
            let mut all = std::mem::take(&mut self.buf);
            all.truncate(n);
            all
        })
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Async<TcpStream>>> + Send>>;
/// A resolve in progress (dropping it cancels it): the resolver's thread, or an answer known at once.
type Resolving = Pin<Box<dyn Future<Output = Result<Vec<SocketAddr>, String>> + Send>>;

/// One socket of the session and what the task knows of it.
#[derive(Default)]
struct LegIo {
    sock: Option<Async<TcpStream>>,
    /// May have bytes (or EOF, or an error) to read: set by readiness, cleared by `WouldBlock`.
    readable: bool,
    /// The last write would block: wait for writability before writing again.
    write_blocked: bool,
    /// EOF or a read error was seen: nothing more is read.
    read_closed: bool,
    /// Shut down for writing, or a write failed: nothing more is written.
    write_done: bool,
}

impl LegIo {
    fn open(sock: Async<TcpStream>) -> Self {
        let _ = sock.get_ref().set_nodelay(true);
        LegIo {
            sock: Some(sock),
            // Try a read before waiting: it costs one syscall and may save a reactor round trip.
            readable: true,
            ..LegIo::default()
        }
    }
}

fn slot(leg: Leg) -> usize {
    match leg {
        Leg::Down => 0,
        Leg::Up => 1,
    }
}

/// The result of one of the session's `Deliver`s.
enum Reply {
    /// Known at once (unknown id, full or closed inbox).
    Ready(DeliveryResult),
    /// The target's answer, when it comes (closed unanswered: `Unknown`).
    Waiting(Pin<Box<Receiver<DeliveryResult>>>),
}

/// This task's registration: the ids it holds and the inbox they lead to.
struct Inbox {
    ids: Vec<String>,
    tx: Sender<Incoming>,
    rx: Pin<Box<Receiver<Incoming>>>,
}

/// Everything one wait found ready.
#[derive(Default)]
struct Woken {
    read: [bool; 2],
    writable: bool,
    timer: bool,
    resolved: Option<Result<Vec<SocketAddr>, String>>,
    connected: Option<io::Result<Async<TcpStream>>>,
    /// Deliveries from other sessions, in arrival order.
    incoming: Vec<Incoming>,
    /// Results of this session's `Deliver`s, in the order it asked.
    results: Vec<DeliveryResult>,
    /// The server is going away: the session gets `handle_shutdown`.
    shutdown: bool,
}

/// What a wait ended with.
enum Wake {
    Ready(Woken),
    Killed,
}

/// How a session task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The session said it is finished.
    Finished,
    /// The server's drain deadline passed.
    Killed,
    /// The session kept failing and never settled.
    Abandoned,
}

/// What a task needs only at some moments: a resolve or a connect in progress, deliveries. Made when
/// needed and dropped once empty again ([`Extra::is_empty`]), so an idle task does not carry it.
#[derive(Default)]
struct Extra {
    connecting: Option<Connecting>,
    resolving: Option<Resolving>,
    /// Made at the first `Register`.
    inbox: Option<Inbox>,
    /// One per `Deliver` not yet handed to the session, oldest first.
    replies: VecDeque<Reply>,
}

impl Extra {
    fn is_empty(&self) -> bool {
        self.connecting.is_none()
            && self.resolving.is_none()
            && self.inbox.is_none()
            && self.replies.is_empty()
    }

    /// [`SessionTask::poll_wait`]'s part for the resolve, the connect and deliveries: records what is
    /// ready in `w`; true if anything was.
    fn poll_wait(&mut self, cx: &mut Context<'_>, w: &mut Woken) -> bool {
        let mut any = false;
        if let Some(task) = self.resolving.as_mut() {
            if let Poll::Ready(result) = task.as_mut().poll(cx) {
                self.resolving = None;
                w.resolved = Some(result);
                any = true;
            }
        }
        if let Some(connect) = self.connecting.as_mut() {
            if let Poll::Ready(result) = connect.as_mut().poll(cx) {
                self.connecting = None;
                w.connected = Some(result);
                any = true;
            }
        }
        if let Some(inbox) = self.inbox.as_mut() {
            while w.incoming.len() < DELIVERY_BUDGET {
                match inbox.rx.as_mut().poll_next(cx) {
                    Poll::Ready(Some(incoming)) => w.incoming.push(incoming),
                    Poll::Ready(None) | Poll::Pending => break,
                }
            }
            any |= !w.incoming.is_empty();
        }
        // Replies in order: only the oldest is waited on.
        while w.results.len() < DELIVERY_BUDGET {
            let result = match self.replies.front_mut() {
                None => break,
                Some(Reply::Ready(result)) => *result,
                Some(Reply::Waiting(rx)) => match rx.as_mut().poll_next(cx) {
                    Poll::Ready(Some(result)) => result,
                    Poll::Ready(None) => DeliveryResult::Unknown, // dropped unanswered
                    Poll::Pending => break,
                },
            };
            self.replies.pop_front();
            w.results.push(result);
            any = true;
        }
        any
    }
}

/// A session and everything it owns. See the module docs.
pub(crate) struct SessionTask {
    session: Box<dyn Session + Send>,
    legs: [LegIo; 2],
    extra: Option<Box<Extra>>,
    timer: Timer,
    /// The deadline the timer is set to; `None`: not armed.
    armed: Option<Instant>,
    /// The server's shutdown and kill.
    signals: Listener,
    /// `handle_shutdown` was delivered.
    shut_down: bool,
    /// The first poll has drained what the session wants before any input.
    started: bool,
    abandoned: bool,
    registry: Arc<Registry>,
}

impl SessionTask {
    /// A task for `session` on the accepted socket `down`; its session gets `handle_shutdown` when
    /// `signals` reach [`Phase::Shutdown`], and it ends early at [`Phase::Kill`]. Its session registers
    /// ids in, and delivers through, `registry`.
    pub fn new(
        session: Box<dyn Session + Send>,
        down: Async<TcpStream>,
        signals: Arc<Signals>,
        registry: Arc<Registry>,
    ) -> Self {
        SessionTask {
            session,
            legs: [LegIo::open(down), LegIo::default()],
            extra: None,
            timer: Timer::never(),
            armed: None,
            signals: Listener::new(signals),
            shut_down: false,
            started: false,
            abandoned: false,
            registry,
        }
    }

    /// The session has ended (or must be dropped): no more `handle_*` calls.
    fn done(&self) -> bool {
        self.abandoned || self.session.is_finished()
    }

    /// The single wait: polls every source and reports all that are ready.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        let mut w = Woken::default();
        let mut any = false;
        match self.signals.poll(cx) {
            Phase::Kill => return Poll::Ready(Wake::Killed),
            Phase::Shutdown if !self.shut_down => {
                self.shut_down = true;
                w.shutdown = true;
                any = true;
            }
            Phase::Shutdown | Phase::Running => {}
        }
        if let Some(extra) = self.extra.as_deref_mut() {
            any |= extra.poll_wait(cx, &mut w);
        }
        for leg in Leg::BOTH {
            let l = &mut self.legs[slot(leg)];
            let Some(sock) = l.sock.as_ref() else {
                continue;
            };
            // Read interest only while the session wants bytes (its backpressure). An error from the
            // reactor counts as ready: the read reports it.
            if !l.read_closed
                && self.session.wants_read(leg)
                && (l.readable || sock.poll_readable(cx).is_ready())
            {
                l.readable = true;
                w.read[slot(leg)] = true;
                any = true;
            }
            if l.write_blocked && !l.write_done && sock.poll_writable(cx).is_ready() {
                l.write_blocked = false;
                w.writable = true;
                any = true;
            }
        }
        if self.armed.is_some() && Pin::new(&mut self.timer).poll(cx).is_ready() {
            w.timer = true;
            any = true;
        }
        if any {
            Poll::Ready(Wake::Ready(w))
        } else {
            Poll::Pending
        }
    }

    /// Feeds what the wait found to the session, draining after every input. Returns true when a read
    /// budget was spent with bytes possibly left: the task yields before it reads on.
    fn handle(&mut self, w: Woken, now: Instant) -> bool {
        if w.shutdown && !self.done() {
            self.session.handle_shutdown(now);
            self.drain(now);
        }
        if let Some(result) = w.resolved {
            if self.done() {
                return false;
            }
            self.session.handle_resolved(result, now);
            self.drain(now);
        }
        if let Some(result) = w.connected {
            if self.done() {
                return false;
            }
            match result {
                Ok(sock) => {
                    self.legs[slot(Leg::Up)] = LegIo::open(sock);
                    self.session.handle_connected(now);
                }
                Err(e) => self.session.handle_connect_failed(e.kind(), now),
            }
            self.drain(now);
        }
        for incoming in w.incoming {
            // Dropping the reply of a delivery that comes too late answers `Unknown`.
            if !self.done() {
                let result = self.session.handle_delivery(incoming.message, now);
                self.drain(now);
                let _ = incoming.reply.try_send(result); // one slot, one answer: never full
            }
        }
        for result in w.results {
            if !self.done() {
                self.session.handle_delivery_result(result, now);
                self.drain(now);
            }
        }
        if w.writable && !self.done() {
            self.drain(now);
        }
        let mut more = false;
        for leg in Leg::BOTH {
            if w.read[slot(leg)] {
                more |= self.read(leg, now);
            }
        }
        if (w.timer || self.armed.is_some_and(|t| t <= now)) && !self.done() {
            self.fire_timer(now);
        }
        more && !self.done()
    }

    /// Reads `leg` until `WouldBlock`, EOF, an error, the budget, or the session stops wanting bytes,
    /// draining after every input. Returns true when it stopped at the budget (or on `Interrupted`).
    fn read(&mut self, leg: Leg, now: Instant) -> bool {
        let mut budget = READ_BUDGET;
        // Bounded: every pass takes at least one byte off the budget or returns.
        loop {
            if self.done() {
                return false;
            }
            let l = &mut self.legs[slot(leg)];
            let Some(sock) = l.sock.as_ref() else {
                return false;
            };
            if l.read_closed || !l.readable || !self.session.wants_read(leg) {
                return false;
            }
            if budget == 0 {
                return true; // `readable` stays set: served again after a yield
            }
            let want = READ_CHUNK.min(budget);
            let result = READ_BUF.with(|buf| buf.borrow_mut().read(sock.get_ref(), want));
            match result {
                Ok(data) if data.is_empty() => {
                    l.read_closed = true;
                    l.readable = false;
                    self.session.handle_eof(leg, now);
                    self.drain(now);
                    return false;
                }
                Ok(data) => {
                    budget -= data.len();
                    self.session.handle_input(leg, data, now);
                    self.drain(now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    l.readable = false;
                    return false;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
                Err(e) => {
                    l.read_closed = true;
                    l.readable = false;
                    self.session.handle_io_error(leg, e.kind(), now);
                    self.drain(now);
                    return false;
                }
            }
        }
    }

    /// The timer went off: the session gets `handle_timeout` if its deadline has passed, else the timer
    /// is set again for the (later) deadline it has now.
    fn fire_timer(&mut self, now: Instant) {
        self.armed = None;
        match self.session.poll_timeout() {
            Some(t) if t <= now => {
                self.session.handle_timeout(now);
                self.drain(now);
            }
            _ => self.arm(),
        }
    }

    /// Contract step 4. An earlier deadline re-sets the timer at once; a later one (an idle deadline that
    /// moves with every read) waits for the armed one to go off and is set then, so busy sessions do
    /// not touch the reactor's timer list on every input.
    fn arm(&mut self) {
        let Some(t) = self.session.poll_timeout() else {
            return; // an armed timer goes off, finds nothing due and stays off
        };
        if self.armed.is_none_or(|armed| t < armed) {
            self.timer.set_at(t);
            self.armed = Some(t);
        }
    }

    /// Drains the outputs after a `handle_*` call, feeding back write errors.
    fn drain(&mut self, now: Instant) {
        for _ in 0..MAX_FOLLOWUPS {
            match self.drain_once(now) {
                None => return,
                Some((leg, kind)) => self.session.handle_io_error(leg, kind, now),
            }
        }
        self.abandoned = true; // the session did not settle: drop it
    }

    /// The calling order of the session contract, once; stops early with a write error the session must
    /// be told about. (Step 3, read interest, is the next wait; step 5 is checked by the task's `poll`.)
    fn drain_once(&mut self, now: Instant) -> Option<(Leg, io::ErrorKind)> {
        // 1. actions
        self.actions();
        // 2. writes per leg; a second pass for output one leg's `advance` queued on the other
        for pass in 0..2 {
            let mut wrote = false;
            for leg in Leg::BOTH {
                let l = &mut self.legs[slot(leg)];
                let Some(sock) = l.sock.as_ref() else {
                    continue;
                };
                if l.write_done {
                    continue;
                }
                let empty = if l.write_blocked {
                    let mut one = [IoSlice::new(&[])];
                    self.session.slices(leg, &mut one) == 0
                } else {
                    match write_out(sock, &mut *self.session, leg, now) {
                        Ok((written, blocked)) => {
                            wrote |= written > 0;
                            l.write_blocked = blocked;
                            !blocked
                        }
                        Err(e) => {
                            l.write_done = true;
                            return Some((leg, e.kind()));
                        }
                    }
                };
                if empty && self.session.write_closed(leg) {
                    let _ = sock.get_ref().shutdown(Shutdown::Write);
                    l.write_done = true;
                }
            }
            if pass == 0 && !wrote {
                break;
            }
        }
        // `advance` may have asked for more
        self.actions();
        // 4. the timer
        self.arm();
        None
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Step 1: turns the session's actions into futures this task polls in its wait.
    fn actions(&mut self) {
        while let Some(action) = self.session.poll_action() {
            match action {
                Action::Resolve { host, port } => {
                    // A newer resolve replaces (and cancels) an older one.
                    self.extra().resolving = Some(match resolve_literal(&host, port) {
                        Some(addrs) => Box::pin(std::future::ready(Ok(addrs))),
                        None => Box::pin(smol::unblock(move || resolve(&host, port))),
                    });
                }
                Action::Connect(addr) => {
                    // A new dial replaces whatever the `Up` leg was.
                    self.legs[slot(Leg::Up)] = LegIo::default();
                    self.extra().connecting = Some(Box::pin(connect(addr)));
                }
                Action::Register(id) => {
                    let extra = self.extra.get_or_insert_with(Box::default);
                    let inbox = extra.inbox.get_or_insert_with(|| {
                        let (tx, rx) = channel::bounded(INBOX);
                        Inbox {
                            ids: Vec::new(),
                            tx,
                            rx: Box::pin(rx),
                        }
                    });
                    if self.registry.register(&id, &inbox.tx) {
                        inbox.ids.push(id);
                    }
                }
                Action::Deliver { to, message } => {
                    let reply = match self.registry.lookup(&to) {
                        None => Reply::Ready(DeliveryResult::Unknown),
                        Some(target) => {
                            let (reply, answer) = channel::bounded(1);
                            match target.try_send(Incoming { message, reply }) {
                                Ok(()) => Reply::Waiting(Box::pin(answer)),
                                Err(TrySendError::Full(_)) => Reply::Ready(DeliveryResult::Full),
                                Err(TrySendError::Closed(_)) => {
                                    Reply::Ready(DeliveryResult::Unknown)
                                }
                            }
                        }
                    };
                    self.extra().replies.push_back(reply);
                }
            }
        }
    }
}

/// Drives the session until it is finished (or killed); the owner then drops the task with both
/// sockets.
///
/// Written by hand rather than as an `async fn`: the executor's allocation for the task is then this
/// struct and nothing more, where an `async fn` (and the `async` block spawning it) would keep the
/// task's state and every local that lives across its waits — about 1 KiB per connection in all.
impl Future for SessionTask {
    type Output = Ended;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        let this = self.get_mut();
        if !this.started {
            this.started = true;
            this.drain(Instant::now());
        }
        // Each turn waits for at least one event (or yields after a spent read budget), so this loop
        // never spins; it ends with the session.
        loop {
            if this.abandoned {
                return Poll::Ready(Ended::Abandoned);
            }
            if this.session.is_finished() {
                return Poll::Ready(Ended::Finished);
            }
            if this.extra.as_ref().is_some_and(|extra| extra.is_empty()) {
                this.extra = None; // drained: an idle task holds no more than it needs
            }
            let woken = match this.poll_wait(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Wake::Ready(w)) => w,
                Poll::Ready(Wake::Killed) => return Poll::Ready(Ended::Killed),
            };
            if this.handle(woken, Instant::now()) {
                // A spent read budget: let the executor's other tasks run first (`yield_now`).
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

impl Drop for SessionTask {
    /// However the task ends: its ids are forgotten (before its sockets close), and deliveries still in
    /// its inbox are answered `Unknown`.
    fn drop(&mut self) {
        if let Some(inbox) = self.extra.as_mut().and_then(|extra| extra.inbox.take()) {
            self.registry.forget(&inbox.ids, &inbox.tx);
            inbox.rx.close();
            // Bounded: the inbox is closed and holds at most `INBOX` deliveries.
            while let Ok(incoming) = inbox.rx.try_recv() {
                let _ = incoming.reply.try_send(DeliveryResult::Unknown);
            }
        }
    }
}

/// Writes the session's queue for `leg` with non-blocking vectored writes until it is empty or the socket
/// would block, advancing after every write. Returns (bytes written, would block).
fn write_out(
    sock: &Async<TcpStream>,
    session: &mut (dyn Session + Send),
    leg: Leg,
    now: Instant,
) -> io::Result<(usize, bool)> {
    let mut written = 0;
    let mut s: &TcpStream = sock.get_ref();
    // Bounded: every pass writes at least one byte of a bounded queue, or returns.
    loop {
        let mut slots = [IoSlice::new(&[]); MAX_SLICES];
        let n = session.slices(leg, &mut slots);
        if n == 0 {
            return Ok((written, false));
        }
        match s.write_vectored(&slots[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                session.advance(leg, k, now);
                written += k;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((written, true)),
            // A signal: report "would block" so the wait (writability) brings the task back.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok((written, true)),
            Err(e) => return Err(e),
        }
    }
}

/// A TCP connection to `addr`, as async-io's `Async::<TcpStream>::connect` makes it (a non-blocking
/// `connect`, then writability, then `SO_ERROR`), but waiting with [`Async::poll_writable`], the
/// source's single waker slot. `connect` waits with `writable()`, which files its waker in the source's
/// list of waiters: that list's allocation (96 bytes) then stays with the socket for as long as the
/// connection lives.
#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    windows
))]
async fn connect(addr: SocketAddr) -> io::Result<Async<TcpStream>> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_nonblocking(true)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        // In progress (`EINPROGRESS`; `EWOULDBLOCK` on Windows).
        Err(e)
            if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error() == Some(EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let stream = Async::new_nonblocking(TcpStream::from(sock))?;
    // The stream becomes writable when connected.
    poll_fn(|cx| stream.poll_writable(cx)).await?;
    match stream.get_ref().take_error()? {
        None => Ok(stream),
        Some(e) => Err(e),
    }
}

/// Elsewhere, async-io's own connect (its waiter list stays allocated, see above).
#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_vendor = "apple",
    windows
)))]
async fn connect(addr: SocketAddr) -> io::Result<Async<TcpStream>> {
    Async::<TcpStream>::connect(addr).await
}

/// `EINPROGRESS`, which std does not name (its `io::ErrorKind::InProgress` is not stable).
#[cfg(any(target_os = "linux", target_os = "android"))]
const EINPROGRESS: i32 = 115;
#[cfg(target_vendor = "apple")]
const EINPROGRESS: i32 = 36;
#[cfg(windows)]
const EINPROGRESS: i32 = 10036; // WSAEINPROGRESS; a non-blocking connect reports WSAEWOULDBLOCK

/// The system resolver's answer for `host` (a name or an address literal in any spelling it accepts),
/// run on smol's blocking thread pool.
pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| e.to_string())
}
