//! The acceptor: one thread that owns every listening socket, accepts, applies the connection limit and
//! hands each connection to an event loop, round-robin, over the loop's channel plus a wake.
//!
//! A single acceptor rather than one `SO_REUSEPORT` listener per loop: it works the same for any number of
//! loops and for port 0 (tests), keeps `--reuse-port` free for what operators mean by it (several
//! processes on one port during a restart), and closing one listener never drops connections queued in a
//! kernel backlog of another (which reuseport groups do when one socket closes).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::event_loop::{Accepted, ListenerInfo, LoopHandle, Msg};
use super::limits::TokenBucket;
use crate::log::Val;
use crate::metrics::{Metrics, Refused};
use crate::OsEntropy;

/// The acceptor's waker (listener `i` has token `i`).
pub(crate) const STOP: Token = Token(usize::MAX);
/// Most connections accepted from one listener per wake before the others get a turn.
const ACCEPT_BUDGET: usize = 128;
/// How long to wait before accepting again after `accept` failed (out of file descriptors…).
const BACKOFF: Duration = Duration::from_millis(100);
/// Least time between two "limit reached" / "accept failing" warnings.
const WARN_EVERY: Duration = Duration::from_secs(10);

pub(crate) struct Acceptor {
    poll: Poll,
    listeners: Vec<TcpListener>,
    infos: Arc<[ListenerInfo]>,
    loops: Vec<LoopHandle>,
    next_loop: usize,
    active: Arc<AtomicUsize>,
    max_connections: usize,
    next_conn: u64,
    stop: Arc<AtomicBool>,
    /// Listeners that may have more connections waiting (budget hit, or accept failed).
    pending: Vec<usize>,
    backoff_until: Option<Instant>,
    warned_full: Option<Instant>,
    warned_accept: Option<Instant>,
    metrics: Metrics,
    /// The acceptor's shard of `metrics`.
    shard: usize,
    /// Per listener: its `--accept-rate` bucket.
    buckets: Vec<Option<TokenBucket>>,
    warned_limit: Option<Instant>,
}

impl Acceptor {
    /// Registers the listeners with a new poll; returns the acceptor and the waker that stops it.
    pub fn new(
        mut listeners: Vec<TcpListener>,
        infos: Arc<[ListenerInfo]>,
        loops: Vec<LoopHandle>,
        active: Arc<AtomicUsize>,
        max_connections: usize,
        stop: Arc<AtomicBool>,
        (metrics, shard): (Metrics, usize),
    ) -> io::Result<(Acceptor, Arc<Waker>)> {
        let poll = Poll::new()?;
        for (i, l) in listeners.iter_mut().enumerate() {
            poll.registry().register(l, Token(i), Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), STOP)?);
        let now = Instant::now();
        let buckets = infos
            .iter()
            .map(|i| i.rate.map(|r| TokenBucket::new(r, now)))
            .collect();
        let acceptor = Acceptor {
            poll,
            listeners,
            infos,
            loops,
            next_loop: 0,
            active,
            max_connections,
            next_conn: 0,
            stop,
            pending: Vec::new(),
            backoff_until: None,
            warned_full: None,
            warned_accept: None,
            metrics,
            shard,
            buckets,
            warned_limit: None,
        };
        Ok((acceptor, waker))
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut ready = Vec::new();
        while !self.stop.load(Ordering::Acquire) {
            let now = Instant::now();
            let timeout = match self.backoff_until {
                Some(t) => Some(t.saturating_duration_since(now)),
                None if !self.pending.is_empty() => Some(Duration::ZERO),
                None => None,
            };
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::log!(Error, "event=acceptor_failed error={}", Val(&e.to_string()));
                    return;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            ready.clear();
            ready.append(&mut self.pending);
            ready.extend(
                events
                    .iter()
                    .map(|ev| ev.token())
                    .filter(|&t| t != STOP)
                    .map(|t| t.0),
            );
            ready.sort_unstable();
            ready.dedup();
            if self.backoff_until.is_some_and(|t| Instant::now() < t) {
                self.pending.append(&mut ready);
                continue;
            }
            self.backoff_until = None;
            for &i in &ready {
                self.accept_some(i);
            }
        }
    }

    /// Accepts from listener `i` until it would block, an error, or the budget.
    fn accept_some(&mut self, i: usize) {
        for _ in 0..ACCEPT_BUDGET {
            match self.listeners[i].accept() {
                Ok((stream, peer)) => self.hand_off(stream, peer, i),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS…: the connection stays queued; try again shortly.
                    let now = Instant::now();
                    if self.warned_accept.is_none_or(|t| now >= t + WARN_EVERY) {
                        self.warned_accept = Some(now);
                        crate::log!(
                            Warn,
                            "event=accept_failed listener={} error={}",
                            self.infos[i].addr,
                            Val(&e.to_string())
                        );
                    }
                    self.backoff_until = Some(now + BACKOFF);
                    self.pending.push(i);
                    return;
                }
            }
        }
        self.pending.push(i);
    }

    /// Counts the connection, applies the limits and gives it to the next loop.
    ///
    /// Checked in this order, the first that fails refuses the connection: `max_connections` (every
    /// socket open), the listener's per-address limit (admitted connections from the socket's peer
    /// address), its accept rate (a token taken only by a connection that passed the others). A refused
    /// connection gets the factory's `over_capacity` session (WebSocket: Close 1013) or is closed at
    /// once; it is counted in `wsbridge_over_capacity_total` and `wsbridge_refused_total{why}`.
    fn hand_off(&mut self, stream: TcpStream, peer: SocketAddr, i: usize) {
        let now = Instant::now();
        self.next_conn += 1;
        let conn = self.next_conn;
        let info = &self.infos[i];
        let counters = self.metrics.counters(self.shard, i);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        let before = self.active.fetch_add(1, Ordering::Relaxed);
        let mut session = None;
        let mut ip_slot = None;
        let refused = if before >= self.max_connections {
            Some(Refused::Capacity)
        } else {
            match &info.per_ip {
                Some(table) => match table.try_acquire(peer.ip()) {
                    Some(slot) => {
                        ip_slot = Some(Box::new(slot));
                        None
                    }
                    None => Some(Refused::PerIp),
                },
                None => None,
            }
        };
        let refused = refused.or_else(|| {
            let bucket = self.buckets[i].as_mut()?;
            if bucket.try_take(now) {
                None
            } else {
                ip_slot = None; // gives the address's slot back
                Some(Refused::Rate)
            }
        });
        if let Some(why) = refused {
            counters.over_capacity.fetch_add(1, Ordering::Relaxed);
            counters.refused_for(why);
            let warned = match why {
                Refused::Capacity => &mut self.warned_full,
                Refused::PerIp | Refused::Rate => &mut self.warned_limit,
            };
            if warned.is_none_or(|t| now >= t + WARN_EVERY) {
                *warned = Some(now);
                match why {
                    Refused::Capacity => crate::log!(
                        Warn,
                        "event=connection_limit_reached max_connections={}",
                        self.max_connections
                    ),
                    _ => crate::log!(
                        Warn,
                        "event=connection_limit_reached listener={} limit={} peer={peer}",
                        info.addr,
                        why.label()
                    ),
                }
            }
            crate::log!(
                Debug,
                "mode={} conn={conn} peer={peer} event=over_capacity limit={}",
                info.factory.mode(),
                why.label()
            );
            match info
                .factory
                .over_capacity(peer, Box::new(OsEntropy::new()), now)
            {
                Some(s) => session = Some(s),
                None => {
                    self.active.fetch_sub(1, Ordering::Relaxed);
                    counters.refused();
                    drop(stream);
                    return;
                }
            }
        }
        let mut msg = Msg::Accepted(Accepted {
            stream,
            peer,
            listener: i,
            conn,
            accepted_at: now,
            session,
            ip_slot,
        });
        for _ in 0..self.loops.len() {
            let lp = &self.loops[self.next_loop % self.loops.len()];
            self.next_loop = self.next_loop.wrapping_add(1);
            match lp.send(msg) {
                Ok(()) => return,
                Err(back) => msg = back, // that loop is gone: try the next
            }
        }
        drop(msg);
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.metrics.counters(self.shard, i).closed_by_driver(false);
        crate::log!(
            Error,
            "conn={conn} peer={peer} event=rejected reason=\"no event loop is running\""
        );
    }
}
