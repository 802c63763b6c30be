//! One event loop: a mio `Poll` on one thread, driving the sessions it was handed.
//!
//! Per session it owns the two sockets and follows the calling order of
//! [`wsbridge_core::session`] after every `handle_*` call ([`EventLoop::drain`]). Around that:
//!
//! - **Reads** go until `WouldBlock` (mio is edge-triggered) or a short read (see `LegIo::hup`), one
//!   `read` of at most [`READ_CHUNK`] (256 KiB) at a time into a reused [`ReadBuffer`] (small reads
//!   copied out, large ones split off), at most [`READ_BUDGET`] per leg per event.
//!   A leg that hit its budget, or that the session stopped reading while the socket may still hold
//!   bytes and now wants them again, goes on the revisit list, served on the next turn with a zero
//!   poll timeout: edge-triggered readiness would not report it again.
//! - **Interest**: `WRITABLE` always (edge-triggered, so it only reports a change), `READABLE` while the
//!   session wants to read; re-registered only when that changes.
//! - **Timers**: a min-heap of `(deadline, key)` with lazy deletion. A session has at most one live
//!   entry (`Entry::timer`); a later deadline waits for the earlier entry to fire and is re-armed then, an
//!   earlier one is pushed and the old entry is skipped when it comes up.
//! - **Messages** on the loop's channel (new connections from the acceptor, resolver answers, deliveries
//!   between sessions, shutdown) come with a wake of the loop's [`Waker`].
//! - **Graceful drain** ([`Msg::Drain`]): the acceptor is already stopped, so nothing new comes. Sessions
//!   run on until the drain deadline; then each gets [`Session::handle_shutdown`] (the protocol's way of
//!   going away is the session's business) and is driven as usual until it finishes or the hard
//!   deadline passes, when the rest is closed. The loop ends as soon as it has no session left.
//! - **Metrics**: the loop counts into its own shard of the server's [`Metrics`] (closes by reason,
//!   bytes — at close, and every [`TRAFFIC_EVERY`] while bytes move —, handshake and connect times),
//!   lock-free.
//! - **Deliveries** ([`Action::Deliver`]): the id is looked up in the server's [`Directory`]; the message
//!   goes to the target's loop as [`Msg::Deliver`] (over its channel, or the loop's own `local` queue when
//!   the target runs here), the target gets `handle_delivery` and is drained, and the result goes back
//!   the same way as [`Msg::Delivered`]. Each source session keeps one slot per `Deliver` in order
//!   (`Mail::results`) and is given the results strictly in that order, whichever loop answers first.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SendError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Waker};
use wsbridge_core::session::{
    resolve_literal, Action, Delivery, DeliveryResult, Leg, Session, SessionFactory, Traffic,
};

use super::directory::{Address, Directory};
use super::limits::{IpSlot, PerIp};
use super::read_buffer::ReadBuffer;
use super::resolver::Job;
use super::slab::{Key, Slab, WAKER};
use crate::io::{write_from, Outgoing, READ_CHUNK};
use crate::log::Val;
use crate::metrics::{Metrics, TRAFFIC_EVERY};
use crate::OsEntropy;

/// Most bytes read from one leg per event (or per revisit) before the loop serves others.
pub(crate) const READ_BUDGET: usize = 256 * 1024;
/// Most messages taken from the channel per turn.
const MSG_BATCH: usize = 1024;
/// Most follow-up inputs (synchronous connect failures, write errors) one drain may feed back before the
/// session is given up on.
const MAX_FOLLOWUPS: usize = 16;

/// What the acceptor, the resolver and the other loops send a loop.
pub(crate) enum Msg {
    /// A new connection to drive.
    Accepted(Accepted),
    /// The answer to a session's [`Action::Resolve`].
    Resolved {
        key: Key,
        /// Which of the session's resolves this answers (see `Entry::resolving`).
        id: u64,
        result: Result<Vec<SocketAddr>, String>,
    },
    /// A delivery for the session `to` of this loop; its result goes back to `from`.
    Deliver {
        to: Key,
        message: Delivery,
        from: Origin,
    },
    /// The result of the `Deliver` number `seq` of the session `to` of this loop.
    Delivered {
        to: Key,
        seq: u64,
        result: DeliveryResult,
    },
    /// Close every session and stop.
    Shutdown,
    /// A graceful drain (sent once no more [`Msg::Accepted`] will come): let the sessions finish until
    /// `deadline`, then shut them down and close what is left `grace` later. The loop stops when it
    /// has no session left.
    Drain { deadline: Instant, grace: Duration },
}

/// Where a graceful drain is, for this loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Draining {
    /// Not draining.
    No,
    /// Sessions finish on their own until `deadline`, then get `handle_shutdown`.
    Until { deadline: Instant, grace: Duration },
    /// Sessions were told to shut down; what is left at this instant is closed.
    Hard(Instant),
}

impl Draining {
    /// When the loop must act next for the drain.
    fn deadline(self) -> Option<Instant> {
        match self {
            Draining::No => None,
            Draining::Until { deadline, .. } => Some(deadline),
            Draining::Hard(at) => Some(at),
        }
    }
}

/// The session a [`Msg::Deliver`] came from, and which of its `Deliver`s it is.
pub(crate) struct Origin {
    pub at: Address,
    pub seq: u64,
}

/// A connection the acceptor took, already counted in the connection limit.
pub(crate) struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Index into the listener table.
    pub listener: usize,
    /// The connection number in logs.
    pub conn: u64,
    pub accepted_at: Instant,
    /// The factory's over-capacity session, or `None` to make a normal one.
    pub session: Option<Box<dyn Session + Send>>,
    /// The connection's slot in its listener's per-address count (freed when this is dropped; boxed
    /// to keep [`Msg`] small).
    pub ip_slot: Option<Box<IpSlot>>,
}

/// What every loop knows about a listener.
pub(crate) struct ListenerInfo {
    pub factory: Arc<dyn SessionFactory>,
    pub addr: SocketAddr,
    /// `--max-connections-per-ip`: the open connections per client address.
    pub per_ip: Option<Arc<PerIp>>,
    /// `--accept-rate`: new connections per second (the acceptor keeps the bucket).
    pub rate: Option<std::num::NonZeroU32>,
}

/// How to reach a loop from another thread.
#[derive(Clone)]
pub(crate) struct LoopHandle {
    pub tx: Sender<Msg>,
    pub waker: Arc<Waker>,
}

impl LoopHandle {
    /// Sends `msg` and wakes the loop; gives `msg` back if the loop is gone.
    pub fn send(&self, msg: Msg) -> Result<(), Msg> {
        self.tx.send(msg).map_err(|SendError(m)| m)?;
        let _ = self.waker.wake();
        Ok(())
    }
}

/// One socket of a session and what the loop knows of it.
#[derive(Default)]
struct LegIo {
    sock: Option<TcpStream>,
    /// A non-blocking connect is in progress.
    connecting: bool,
    /// When the connect started (for the connect-time metric).
    connect_started: Option<Instant>,
    /// May have bytes (or EOF, or an error) to read: set by readable events, cleared by `WouldBlock`
    /// or by a short read (see `hup`).
    readable: bool,
    /// An event said the peer closed or the socket failed. Until then a read shorter than asked for
    /// means the receive queue is empty: the next bytes, the peer's FIN or an error each raise a new
    /// edge, so reading on until `WouldBlock` would only cost a syscall. After it, the FIN or error
    /// raises no new edge, so reading goes on until EOF.
    hup: bool,
    /// May take bytes: set by writable events, cleared by `WouldBlock`.
    writable: bool,
    /// EOF or a read error was seen: nothing more is read.
    read_closed: bool,
    /// Shut down for writing, or a write failed: nothing more is written.
    write_done: bool,
    /// What is registered with the poll.
    interest: Option<Interest>,
}

fn slot(leg: Leg) -> usize {
    match leg {
        Leg::Down => 0,
        Leg::Up => 1,
    }
}

/// Closes the leg's socket and forgets its state. Closing is what takes the socket out of the poll (no
/// socket is ever duplicated), so no `deregister` syscall goes first. An event for it already fetched
/// in this batch is delivered either way; readiness is only ever a hint to try.
fn close_leg(leg: &mut LegIo) {
    *leg = LegIo::default();
}

struct Entry {
    session: Box<dyn Session + Send>,
    legs: [LegIo; 2],
    peer: SocketAddr,
    listener: usize,
    started: Instant,
    /// The deadline of this session's live timer-heap entry.
    timer: Option<Instant>,
    /// On the revisit list.
    revisit: bool,
    /// The number of the resolve in flight, if any: only its answer is delivered, since a newer
    /// `Resolve` replaces an unanswered one (its answer may be for another origin).
    resolving: Option<u64>,
    /// How many resolves it asked the resolver for so far.
    resolves: u64,
    /// Its ids and deliveries, from its first `Register` or `Deliver` on (boxed: most sessions never
    /// make one).
    mail: Option<Box<Mail>>,
    /// The traffic already added to the byte counters.
    reported: Traffic,
    /// The handshake time was counted.
    established: bool,
    /// The client a PROXY protocol header named was logged.
    client_logged: bool,
    /// Its per-address slot, freed when the entry is dropped at close.
    _ip_slot: Option<Box<IpSlot>>,
}

/// What a session registered and asked to deliver.
#[derive(Default)]
struct Mail {
    /// The ids this session registered (forgotten when it closes).
    ids: Vec<String>,
    /// How many `Deliver`s it asked for so far (the next one's number).
    delivers: u64,
    /// One slot per `Deliver` whose result it has not been given yet, oldest first (numbered up to
    /// `delivers`); filled as results come in, handed over from the front while filled.
    results: VecDeque<Option<DeliveryResult>>,
}

/// A `handle_*` call a drain must make before it can finish.
enum Followup {
    ConnectFailed(io::ErrorKind),
    IoError(Leg, io::ErrorKind),
    Resolved(Result<Vec<SocketAddr>, String>),
}

/// The session's output queue for one leg, as [`Outgoing`] for [`write_from`].
struct LegOut<'s> {
    session: &'s mut (dyn Session + Send),
    leg: Leg,
    now: Instant,
}

impl Outgoing for LegOut<'_> {
    fn slices<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        self.session.slices(self.leg, dst)
    }
    fn advance(&mut self, n: usize) {
        self.session.advance(self.leg, n, self.now);
    }
}

/// Readiness of one event, copied out of mio's event list.
#[derive(Debug, Clone, Copy)]
struct Ready {
    readable: bool,
    writable: bool,
    error: bool,
    read_closed: bool,
    write_closed: bool,
}

impl Ready {
    fn of(ev: &Event) -> Self {
        Ready {
            readable: ev.is_readable(),
            writable: ev.is_writable(),
            error: ev.is_error(),
            read_closed: ev.is_read_closed(),
            write_closed: ev.is_write_closed(),
        }
    }
}

/// See the module docs.
pub(crate) struct EventLoop {
    poll: Poll,
    events: Events,
    /// Scratch: the tokens of one poll's events.
    ready: Vec<(mio::Token, Ready)>,
    sessions: Slab<Entry>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    /// Scratch: timers due this turn.
    due: Vec<(Instant, Key)>,
    revisit: Vec<Key>,
    /// The leg a read loop is running on (its own drains must not put it on the revisit list).
    reading: Option<(Key, Leg)>,
    rx: Receiver<Msg>,
    me: LoopHandle,
    resolver: Sender<Job>,
    listeners: Arc<[ListenerInfo]>,
    /// Connections open across every loop (the acceptor adds, loops subtract).
    active: Arc<AtomicUsize>,
    buf: ReadBuffer,
    pub(crate) read_budget: usize,
    /// The channel had more messages than one turn takes.
    more_msgs: bool,
    /// This loop's index among the server's loops.
    index: usize,
    /// The ids of the server's sessions and the way to the other loops.
    directory: Arc<Directory>,
    /// Deliveries and results between sessions of this loop, served like channel messages.
    local: VecDeque<Msg>,
    stopping: bool,
    draining: Draining,
    /// This loop's shard of them is number `index`.
    metrics: Metrics,
    /// When the traffic of open sessions is next added to the byte counters.
    next_traffic: Instant,
    /// Bytes moved since the last report: only then does the loop wake up to report them (an idle loop
    /// never wakes for metrics).
    traffic_moved: bool,
}

impl EventLoop {
    pub fn new(
        index: usize,
        directory: Arc<Directory>,
        listeners: Arc<[ListenerInfo]>,
        active: Arc<AtomicUsize>,
        resolver: Sender<Job>,
        metrics: Metrics,
    ) -> io::Result<(EventLoop, LoopHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = mpsc::channel();
        let me = LoopHandle { tx, waker };
        let lp = EventLoop {
            poll,
            events: Events::with_capacity(1024),
            ready: Vec::with_capacity(1024),
            sessions: Slab::new(),
            timers: BinaryHeap::new(),
            due: Vec::new(),
            revisit: Vec::new(),
            reading: None,
            rx,
            me: me.clone(),
            resolver,
            listeners,
            active,
            buf: ReadBuffer::default(),
            read_budget: READ_BUDGET,
            more_msgs: false,
            index,
            directory,
            local: VecDeque::new(),
            stopping: false,
            draining: Draining::No,
            metrics,
            next_traffic: Instant::now(),
            traffic_moved: false,
        };
        Ok((lp, me))
    }

    /// Turns until shut down (or until polling fails, which is logged).
    pub fn run(mut self) {
        loop {
            match self.turn(None) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    crate::log!(Error, "event=loop_failed error={}", Val(&e.to_string()));
                    return;
                }
            }
        }
    }

    /// One poll and everything it makes due: events, messages, the revisit list from the turn before,
    /// timers. Waits at most `max_wait` (and not at all when work is pending). `Ok(false)` once shut down.
    pub fn turn(&mut self, max_wait: Option<Duration>) -> io::Result<bool> {
        let mut timeout = if !self.revisit.is_empty() || self.more_msgs || !self.local.is_empty() {
            Some(Duration::ZERO)
        } else {
            let timer = self.timers.peek().map(|Reverse((t, _))| *t);
            let traffic = self.traffic_moved.then_some(self.next_traffic);
            [timer, traffic, self.draining.deadline()]
                .into_iter()
                .flatten()
                .min()
                .map(|t| t.saturating_duration_since(Instant::now()))
        };
        if let Some(max) = max_wait {
            timeout = Some(timeout.map_or(max, |t| t.min(max)));
        }
        match self.poll.poll(&mut self.events, timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let now = Instant::now();
        let revisit = std::mem::take(&mut self.revisit);

        self.ready.clear();
        self.ready
            .extend(self.events.iter().map(|ev| (ev.token(), Ready::of(ev))));
        let ready = std::mem::take(&mut self.ready);
        for &(token, r) in &ready {
            if let Some((key, leg)) = Key::from_token(token) {
                self.on_ready(key, leg, r, now);
            }
        }
        self.ready = ready;

        self.more_msgs = false;
        for i in 0.. {
            if i == MSG_BATCH {
                self.more_msgs = true;
                break;
            }
            match self.rx.try_recv() {
                Ok(msg) => self.on_msg(msg, now),
                Err(_) => break,
            }
        }
        // Deliveries between this loop's sessions (including those the messages above made).
        for _ in 0..MSG_BATCH {
            match self.local.pop_front() {
                Some(msg) => self.on_msg(msg, now),
                None => break,
            }
        }

        for key in revisit {
            let Some(e) = self.sessions.get_mut(key) else {
                continue;
            };
            e.revisit = false;
            for leg in Leg::BOTH {
                self.read(key, leg, now);
            }
            self.drain(key, now);
        }

        let now = Instant::now();
        self.fire_timers(now);
        if self.traffic_moved && now >= self.next_traffic {
            self.traffic_moved = false;
            self.next_traffic = now + TRAFFIC_EVERY;
            self.report_traffic();
        }
        self.step_drain(now);
        Ok(!self.stopping)
    }

    /// Moves a graceful drain on: shuts the sessions down at its deadline, closes what is left at the
    /// hard deadline, and stops the loop once no session is left.
    fn step_drain(&mut self, now: Instant) {
        match self.draining {
            Draining::No => return,
            Draining::Until { deadline, grace } if now >= deadline => {
                self.draining = Draining::Hard(now + grace);
                for key in self.sessions.keys() {
                    if let Some(e) = self.sessions.get_mut(key) {
                        e.session.handle_shutdown(now);
                        self.drain(key, now);
                    }
                }
            }
            Draining::Hard(at) if now >= at => self.close_all("shutdown"),
            _ => {}
        }
        if self.sessions.len() == 0 {
            self.stopping = true;
        }
    }

    /// Adds what every open session relayed since the last report to the byte counters.
    fn report_traffic(&mut self) {
        for key in self.sessions.keys() {
            if let Some(e) = self.sessions.get_mut(key) {
                self.metrics
                    .counters(self.index, e.listener)
                    .traffic(&mut e.reported, e.session.traffic());
            }
        }
    }

    fn on_msg(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::Accepted(a) => {
                self.adopt(a);
            }
            Msg::Resolved { key, id, result } => {
                let Some(e) = self.sessions.get_mut(key) else {
                    return; // the session is gone: a late answer
                };
                if e.resolving != Some(id) {
                    return; // replaced by a newer resolve
                }
                e.resolving = None;
                e.session.handle_resolved(result, now);
                self.drain(key, now);
            }
            Msg::Deliver { to, message, from } => {
                let result = match self.sessions.get_mut(to) {
                    Some(e) => {
                        self.traffic_moved = true;
                        let result = e.session.handle_delivery(message, now);
                        self.drain(to, now);
                        result
                    }
                    None => DeliveryResult::Unknown, // it finished since the lookup
                };
                let answer = Msg::Delivered {
                    to: from.at.key,
                    seq: from.seq,
                    result,
                };
                // The source's loop is gone: there is nobody to answer.
                let _ = route(
                    &mut self.local,
                    &self.directory,
                    self.index,
                    from.at.lp,
                    answer,
                );
            }
            Msg::Delivered { to, seq, result } => self.delivered(to, seq, result, now),
            Msg::Shutdown => {
                self.stopping = true;
                self.close_all("shutdown");
            }
            Msg::Drain { deadline, grace } => {
                if self.draining == Draining::No {
                    self.draining = Draining::Until { deadline, grace };
                    self.step_drain(now);
                }
            }
        }
    }

    /// The result of `key`'s `Deliver` number `seq`: fills its slot, then gives the session every result
    /// from the front that is in, in order, draining after each.
    fn delivered(&mut self, key: Key, seq: u64, result: DeliveryResult, now: Instant) {
        let Some(mail) = self
            .sessions
            .get_mut(key)
            .and_then(|e| e.mail.as_deref_mut())
        else {
            return; // the source finished
        };
        let first = mail.delivers - mail.results.len() as u64;
        let slot = seq
            .checked_sub(first)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| mail.results.get_mut(i));
        match slot {
            Some(slot @ None) => *slot = Some(result),
            _ => return, // not a result it waits for
        }
        // Bounded: every pass takes a slot off the queue, or stops.
        while let Some(e) = self.sessions.get_mut(key) {
            let Some(mail) = e.mail.as_deref_mut() else {
                break;
            };
            let Some(Some(result)) = mail.results.front().copied() else {
                break;
            };
            mail.results.pop_front();
            e.session.handle_delivery_result(result, now);
            self.drain(key, now);
        }
    }

    /// Takes over an accepted connection: makes its session and drives it for the first time.
    pub(crate) fn adopt(&mut self, a: Accepted) -> Option<Key> {
        let Accepted {
            stream,
            peer,
            listener,
            conn,
            accepted_at,
            session,
            ip_slot,
        } = a;
        let info = &self.listeners[listener];
        let counters = self.metrics.counters(self.index, listener);
        if self.stopping {
            drop(stream);
            self.active.fetch_sub(1, Ordering::Relaxed);
            counters.closed_by_driver(true);
            return None;
        }
        let _ = stream.set_nodelay(true);
        let session = session.unwrap_or_else(|| {
            info.factory
                .session(peer, Box::new(OsEntropy::new()), accepted_at)
        });
        crate::log!(
            Debug,
            "mode={} conn={} peer={peer} event=accepted listener={}",
            info.factory.mode(),
            session.connection_id(),
            info.addr
        );
        let mut down = LegIo {
            sock: Some(stream),
            writable: true,
            ..LegIo::default()
        };
        let key = match self.sessions.insert(Entry {
            session,
            legs: [LegIo::default(), LegIo::default()],
            peer,
            listener,
            started: accepted_at,
            timer: None,
            revisit: false,
            resolving: None,
            resolves: 0,
            mail: None,
            reported: Traffic::default(),
            established: false,
            client_logged: false,
            _ip_slot: ip_slot,
        }) {
            Ok(key) => key,
            Err(_) => {
                crate::log!(
                    Warn,
                    "conn={conn} peer={peer} event=rejected reason=\"loop full\""
                );
                self.active.fetch_sub(1, Ordering::Relaxed);
                self.metrics
                    .counters(self.index, listener)
                    .closed_by_driver(false);
                return None;
            }
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        let registered = match down.sock.as_mut() {
            Some(sock) => self
                .poll
                .registry()
                .register(sock, key.token(Leg::Down), interest),
            None => Ok(()),
        };
        if let Err(e) = registered {
            self.close(key, Some(&format!("cannot register: {e}")));
            return None;
        }
        down.interest = Some(interest);
        if let Some(e) = self.sessions.get_mut(key) {
            e.legs[0] = down;
        }
        self.drain(key, Instant::now());
        Some(key)
    }

    fn on_ready(&mut self, key: Key, leg: Leg, r: Ready, now: Instant) {
        let Some(e) = self.sessions.get_mut(key) else {
            return; // closed earlier in this batch
        };
        let l = &mut e.legs[slot(leg)];
        if l.sock.is_none() {
            return;
        }
        if r.readable || r.read_closed || r.error {
            l.readable = true;
        }
        if r.read_closed || r.error {
            l.hup = true;
        }
        if r.writable || r.write_closed || r.error {
            l.writable = true;
        }
        if l.connecting {
            if !(r.writable || r.error || r.write_closed || r.read_closed) {
                return;
            }
            self.finish_connect(key, now);
        }
        self.read(key, leg, now);
        self.drain(key, now);
    }

    /// A connecting `Up` leg reported readiness: find out whether the connect worked.
    fn finish_connect(&mut self, key: Key, now: Instant) {
        let Some(e) = self.sessions.get_mut(key) else {
            return;
        };
        let l = &mut e.legs[slot(Leg::Up)];
        let Some(sock) = l.sock.as_ref() else {
            return;
        };
        let outcome = match sock.take_error() {
            Ok(Some(err)) | Err(err) => Err(err.kind()),
            Ok(None) => match sock.peer_addr() {
                Ok(_) => Ok(()),
                Err(err) if err.kind() == io::ErrorKind::NotConnected => {
                    l.writable = false; // still in progress: a spurious wake-up
                    return;
                }
                Err(err) => Err(err.kind()),
            },
        };
        match outcome {
            Ok(()) => {
                let _ = sock.set_nodelay(true);
                l.connecting = false;
                l.writable = true;
                if let Some(started) = l.connect_started.take() {
                    self.metrics
                        .counters(self.index, e.listener)
                        .connect
                        .observe(now.saturating_duration_since(started));
                }
                e.session.handle_connected(now);
            }
            Err(kind) => {
                close_leg(l);
                e.session.handle_connect_failed(kind, now);
            }
        }
        self.drain(key, now);
    }

    /// Reads `leg` until `WouldBlock`, EOF, an error, the budget, or the session stops wanting bytes,
    /// draining the session after every input.
    fn read(&mut self, key: Key, leg: Leg, now: Instant) {
        let mut budget = self.read_budget;
        self.reading = Some((key, leg));
        while let Some(e) = self.sessions.get_mut(key) {
            let l = &mut e.legs[slot(leg)];
            let Some(sock) = l.sock.as_mut() else {
                break;
            };
            if l.connecting || l.read_closed || !l.readable || !e.session.wants_read(leg) {
                break;
            }
            if budget == 0 {
                if !e.revisit {
                    e.revisit = true;
                    self.revisit.push(key);
                }
                break;
            }
            let want = READ_CHUNK.min(budget);
            match self.buf.recv(sock, want) {
                Ok(0) => {
                    l.read_closed = true;
                    l.readable = false;
                    e.session.handle_eof(leg, now);
                    self.drain(key, now);
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    if n < want && !l.hup {
                        l.readable = false;
                    }
                    self.traffic_moved = true;
                    e.session.handle_input(leg, self.buf.take(), now);
                    self.drain(key, now);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    l.readable = false;
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {
                    if !e.revisit {
                        e.revisit = true;
                        self.revisit.push(key);
                    }
                    break;
                }
                Err(err) => {
                    l.read_closed = true;
                    l.readable = false;
                    e.session.handle_io_error(leg, err.kind(), now);
                    self.drain(key, now);
                    break;
                }
            }
        }
        self.reading = None;
    }

    /// Drains the session's outputs after a `handle_*` call, feeding back what that makes happen
    /// synchronously (a connect that fails at once, a write error).
    fn drain(&mut self, key: Key, now: Instant) {
        for _ in 0..MAX_FOLLOWUPS {
            let followup = match self.drain_once(key, now) {
                Some(f) => f,
                None => return,
            };
            let Some(e) = self.sessions.get_mut(key) else {
                return;
            };
            match followup {
                Followup::ConnectFailed(kind) => e.session.handle_connect_failed(kind, now),
                Followup::IoError(leg, kind) => e.session.handle_io_error(leg, kind, now),
                Followup::Resolved(result) => e.session.handle_resolved(result, now),
            }
        }
        self.close(key, Some("driver: the session did not settle"));
    }

    /// The calling order of the session contract, once; stops early with an input the session must get.
    fn drain_once(&mut self, key: Key, now: Instant) -> Option<Followup> {
        // 1. actions
        if let Some(f) = self.actions(key) {
            return Some(f);
        }
        let e = self.sessions.get_mut(key)?;

        // 2. writes, per leg; a second pass for output one leg's `advance` queued on the other
        for pass in 0..2 {
            let mut wrote = false;
            for leg in Leg::BOTH {
                let l = &mut e.legs[slot(leg)];
                let Some(sock) = l.sock.as_mut() else {
                    continue;
                };
                if l.connecting || l.write_done {
                    continue;
                }
                let empty = if l.writable {
                    let mut out = LegOut {
                        session: &mut *e.session,
                        leg,
                        now,
                    };
                    match write_from(sock, &mut out) {
                        Ok(flush) => {
                            wrote |= flush.written > 0;
                            l.writable = !flush.blocked;
                            !flush.blocked
                        }
                        Err(err) => {
                            l.write_done = true;
                            return Some(Followup::IoError(leg, err.kind()));
                        }
                    }
                } else {
                    let mut one = [IoSlice::new(&[])];
                    e.session.slices(leg, &mut one) == 0
                };
                if empty && e.session.write_closed(leg) {
                    let _ = sock.shutdown(Shutdown::Write);
                    l.write_done = true;
                }
            }
            if pass == 0 && !wrote {
                break;
            }
        }

        // `advance` may have asked for more
        if let Some(f) = self.actions(key) {
            return Some(f);
        }
        let registry = self.poll.registry();
        let e = self.sessions.get_mut(key)?;

        // 3. read interest, re-registered only on change
        for leg in Leg::BOTH {
            let l = &mut e.legs[slot(leg)];
            let Some(sock) = l.sock.as_mut() else {
                continue;
            };
            let wants = !l.connecting && !l.read_closed && e.session.wants_read(leg);
            let interest = if wants || l.connecting {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::WRITABLE
            };
            if l.interest != Some(interest) {
                if !wants && !l.connecting && !l.read_closed && l.interest.is_some() {
                    // The session stopped reading an open leg: backpressure.
                    let counters = self.metrics.counters(self.index, e.listener);
                    counters.read_pauses.fetch_add(1, Ordering::Relaxed);
                }
                if let Err(err) = registry.reregister(sock, key.token(leg), interest) {
                    self.close(key, Some(&format!("cannot register: {err}")));
                    return None;
                }
                l.interest = Some(interest);
            }
            // Bytes may be waiting that no new edge will report: come back for them.
            if wants && l.readable && self.reading != Some((key, leg)) && !e.revisit {
                e.revisit = true;
                self.revisit.push(key);
            }
        }

        // 4. the timer
        if let Some(t) = e.session.poll_timeout() {
            if e.timer.is_none_or(|armed| t < armed) {
                e.timer = Some(t);
                self.timers.push(Reverse((t, key)));
            }
        }

        // (metrics) the handshake time, once
        if !e.established {
            if let Some(at) = e.session.established() {
                e.established = true;
                self.metrics
                    .counters(self.index, e.listener)
                    .handshake
                    .observe(at.saturating_duration_since(e.started));
            }
        }

        // (log) the client a PROXY protocol header named, once: the `event=accepted` line could only
        // name the socket's peer, the load balancer
        if !e.client_logged {
            if let Some(client) = e.session.client() {
                e.client_logged = true;
                crate::log!(
                    Debug,
                    "mode={} conn={} peer={client} event=proxied via={}",
                    self.listeners[e.listener].factory.mode(),
                    e.session.connection_id(),
                    e.peer
                );
            }
        }

        // 5. the end
        if e.session.is_finished() {
            self.close(key, None);
        }
        None
    }

    /// Step 1: carries out the session's actions.
    fn actions(&mut self, key: Key) -> Option<Followup> {
        let registry = self.poll.registry();
        let e = self.sessions.get_mut(key)?;
        while let Some(action) = e.session.poll_action() {
            match action {
                Action::Resolve { host, port } => {
                    // A newer resolve replaces one still in flight.
                    e.resolving = None;
                    if let Some(addrs) = resolve_literal(&host, port) {
                        return Some(Followup::Resolved(Ok(addrs)));
                    }
                    e.resolves += 1;
                    e.resolving = Some(e.resolves);
                    let job = Job {
                        host,
                        port,
                        key,
                        id: e.resolves,
                        reply: self.me.tx.clone(),
                        waker: self.me.waker.clone(),
                    };
                    if self.resolver.send(job).is_err() {
                        e.resolving = None;
                        return Some(Followup::Resolved(
                            Err("the resolver is not running".into()),
                        ));
                    }
                }
                Action::Connect(addr) => {
                    let up = &mut e.legs[slot(Leg::Up)];
                    close_leg(up);
                    let mut sock = match TcpStream::connect(addr) {
                        Ok(sock) => sock,
                        Err(err) => return Some(Followup::ConnectFailed(err.kind())),
                    };
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(err) = registry.register(&mut sock, key.token(Leg::Up), interest) {
                        return Some(Followup::ConnectFailed(err.kind()));
                    }
                    *up = LegIo {
                        sock: Some(sock),
                        connecting: true,
                        connect_started: Some(Instant::now()),
                        interest: Some(interest),
                        ..LegIo::default()
                    };
                }
                Action::Register(id) => {
                    let at = Address {
                        lp: self.index,
                        key,
                    };
                    if self.directory.register(&id, at) {
                        e.mail.get_or_insert_default().ids.push(id);
                    }
                }
                Action::Deliver { to, message } => {
                    let mail = e.mail.get_or_insert_default();
                    let seq = mail.delivers;
                    mail.delivers += 1;
                    mail.results.push_back(None);
                    let from = Origin {
                        at: Address {
                            lp: self.index,
                            key,
                        },
                        seq,
                    };
                    let unknown = Msg::Delivered {
                        to: key,
                        seq,
                        result: DeliveryResult::Unknown,
                    };
                    match self.directory.lookup(&to) {
                        Some(target) => {
                            let msg = Msg::Deliver {
                                to: target.key,
                                message,
                                from,
                            };
                            if route(&mut self.local, &self.directory, self.index, target.lp, msg)
                                .is_err()
                            {
                                self.local.push_back(unknown); // the target's loop is gone
                            }
                        }
                        None => self.local.push_back(unknown),
                    }
                }
            }
        }
        None
    }

    fn fire_timers(&mut self, now: Instant) {
        self.due.clear();
        while let Some(&Reverse((t, key))) = self.timers.peek() {
            if t > now {
                break;
            }
            self.timers.pop();
            self.due.push((t, key));
        }
        let due = std::mem::take(&mut self.due);
        for &(t, key) in &due {
            let Some(e) = self.sessions.get_mut(key) else {
                continue;
            };
            if e.timer != Some(t) {
                continue; // superseded by an earlier deadline
            }
            e.timer = None;
            match e.session.poll_timeout() {
                Some(deadline) if deadline <= now => {
                    e.session.handle_timeout(now);
                    self.drain(key, now);
                }
                Some(later) => {
                    e.timer = Some(later);
                    self.timers.push(Reverse((later, key)));
                }
                None => {}
            }
        }
        self.due = due;
        // Stale entries are bounded: rebuild when they outnumber the live ones.
        if self.timers.len() > 2 * self.sessions.len() + 1024 {
            let live: Vec<_> = self
                .sessions
                .keys()
                .into_iter()
                .filter_map(|k| Some(Reverse((self.sessions.get(k)?.timer?, k))))
                .collect();
            self.timers = BinaryHeap::from(live);
        }
    }

    /// Closes both sockets of a session, drops it and logs why (`forced`: the loop ended it).
    fn close(&mut self, key: Key, forced: Option<&str>) {
        let Some(mut e) = self.sessions.remove(key) else {
            return;
        };
        if let Some(mail) = e.mail.as_deref().filter(|m| !m.ids.is_empty()) {
            let at = Address {
                lp: self.index,
                key,
            };
            self.directory.forget(&mail.ids, at);
        }
        for l in &mut e.legs {
            close_leg(l);
        }
        self.active.fetch_sub(1, Ordering::Relaxed);
        let counters = self.metrics.counters(self.index, e.listener);
        counters.traffic(&mut e.reported, e.session.traffic());
        match forced {
            Some(why) => counters.closed_by_driver(why == "shutdown"),
            None => counters.closed(e.session.end_reason()),
        }
        let reason = match (forced, e.session.end_reason()) {
            (Some(why), _) => why.to_owned(),
            (None, Some(reason)) => reason.to_string(),
            (None, None) => "unknown".to_owned(),
        };
        let t = e.session.traffic();
        crate::log!(
            Info,
            "mode={} conn={} peer={} event=closed reason={} down_to_up={} up_to_down={} duration_ms={}",
            self.listeners[e.listener].factory.mode(),
            e.session.connection_id(),
            e.session.client().unwrap_or(e.peer),
            Val(&reason),
            t.down_to_up,
            t.up_to_down,
            e.started.elapsed().as_millis()
        );
    }

    fn close_all(&mut self, why: &str) {
        for key in self.sessions.keys() {
            self.close(key, Some(why));
        }
    }

    #[cfg(test)]
    pub(crate) fn revisit_pending(&self) -> bool {
        !self.revisit.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }
}

impl Drop for EventLoop {
    fn drop(&mut self) {
        if std::thread::panicking() {
            crate::log!(
                Error,
                "event=loop_panicked sessions={}",
                self.sessions.len()
            );
        }
        // Every session still open is closed, so the connection count stays right.
        self.close_all("shutdown");
        // Deliveries that will never be served still get their one answer.
        while let Ok(msg) = self.rx.try_recv() {
            if let Msg::Deliver { from, .. } = msg {
                let answer = Msg::Delivered {
                    to: from.at.key,
                    seq: from.seq,
                    result: DeliveryResult::Unknown,
                };
                let _ = self.directory.send(from.at.lp, answer);
            }
        }
    }
}

/// Sends `msg` to loop `lp`: onto `local` when that is this loop (`me`), else over its channel. Gives
/// `msg` back if that loop is gone.
fn route(
    local: &mut VecDeque<Msg>,
    directory: &Directory,
    me: usize,
    lp: usize,
    msg: Msg,
) -> Result<(), Msg> {
    if lp == me {
        local.push_back(msg);
        Ok(())
    } else {
        directory.send(lp, msg)
    }
}
