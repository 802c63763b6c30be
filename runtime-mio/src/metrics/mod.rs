//! Prometheus metrics of a [`Server`](crate::driver::Server) (DESIGN §1.5), and the small HTTP responder
//! that serves them ([`serve`]).
//!
//! # Counting without a lock
//! Every thread that counts (each event loop, and the acceptor) owns one **shard**: per listener, a set of
//! plain atomics it updates with `Relaxed` stores and no other thread writes. A scrape ([`Metrics::render`])
//! adds the shards up. Counters are therefore eventually consistent across threads — a scrape may see a
//! close before the matching accept — so `wsbridge_connections_active` is `accepted - closed`, clamped
//! at 0.
//!
//! # What is counted (all labelled `mode` and `listener`)
//! - `wsbridge_connections_accepted_total`: every accepted socket, over-capacity ones included;
//! - `wsbridge_connections_active`: accepted and not yet closed;
//! - `wsbridge_connections_closed_total{reason}`: `reason` is [`EndReason::label`] (`normal`, `timeout`,
//!   `policy`, `peer_error`, `upstream`, `shutdown`), or `internal` when the driver had to end a session
//!   itself; an over-capacity socket closed at once counts as `policy`;
//! - `wsbridge_bytes_total{direction}`: payload relayed, `down_to_up` (from the accepted client) and
//!   `up_to_down`, from [`Session::traffic`](wsbridge_core::session::Session::traffic): added at every
//!   close, and for sessions still open every [`TRAFFIC_EVERY`] while bytes move (an idle loop never
//!   wakes up for metrics);
//! - `wsbridge_handshake_seconds`: accept → the session established
//!   ([`Session::established`](wsbridge_core::session::Session::established));
//! - `wsbridge_connect_seconds`: a dial of the `Up` leg, start → connected;
//! - `wsbridge_over_capacity_total`: accepted over a limit (`--max-connections`,
//!   `--max-connections-per-ip` or `--accept-rate`) and refused (Close 1013, or closed at once);
//! - `wsbridge_refused_total{why}`: the same by limit, `why` one of `capacity`, `per_ip`, `rate`;
//! - `wsbridge_starttls_total{result}`: client STARTTLS upgrades, `ok` or `failed` (`tcp2ws`), and
//!   `wsbridge_heartbeat_misses_total`: Pongs that did not come back in time — both from
//!   [`Session::traffic`](wsbridge_core::session::Session::traffic), added as the bytes are;
//! - `wsbridge_read_pauses_total`: times the driver stopped reading an open leg because the session
//!   stopped wanting its bytes — backpressure: the queue towards the other side is full, or (ws2http) a
//!   POST is in flight;
//! - `wsbridge_draining` (no `listener` label): 1 once a graceful drain started.

mod http;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use wsbridge_core::session::{EndReason, Traffic};

pub use http::serve;

/// How often an event loop adds the traffic of its open sessions to the byte counters, while bytes move.
pub const TRAFFIC_EVERY: Duration = Duration::from_secs(1);

/// The `reason` label values of `wsbridge_connections_closed_total`, in output order.
pub const REASONS: [&str; 7] = [
    "normal",
    "timeout",
    "policy",
    "peer_error",
    "upstream",
    "shutdown",
    "internal",
];
const INTERNAL: usize = 6;
const SHUTDOWN: usize = 5;
const POLICY: usize = 2;

/// Upper bounds (seconds) of the histogram buckets (`+Inf` is implied).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A histogram of durations: one counter per bucket (not cumulative; cumulated when rendered), the sum
/// in microseconds, and the count.
#[derive(Default)]
pub(crate) struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }
}

/// What one thread counts for one listener.
#[derive(Default)]
pub(crate) struct Counters {
    pub accepted: AtomicU64,
    pub over_capacity: AtomicU64,
    /// By [`Refused`].
    refused_by: [AtomicU64; 3],
    closed: [AtomicU64; REASONS.len()],
    /// `down_to_up`, `up_to_down`.
    bytes: [AtomicU64; 2],
    /// STARTTLS `ok`, `failed`.
    starttls: [AtomicU64; 2],
    heartbeat_misses: AtomicU64,
    pub read_pauses: AtomicU64,
    pub handshake: Histogram,
    pub connect: Histogram,
}

impl Counters {
    /// A session ended for `reason`.
    pub fn closed(&self, reason: Option<&EndReason>) {
        let i = reason
            .and_then(|r| REASONS.iter().position(|&l| l == r.label()))
            .unwrap_or(INTERNAL);
        self.closed[i].fetch_add(1, Relaxed);
    }

    /// A session the driver ended itself: at shutdown, or because something failed.
    pub fn closed_by_driver(&self, shutdown: bool) {
        self.closed[if shutdown { SHUTDOWN } else { INTERNAL }].fetch_add(1, Relaxed);
    }

    /// A connection refused over `why` (also counted in `over_capacity` by the caller).
    pub fn refused_for(&self, why: Refused) {
        self.refused_by[why as usize].fetch_add(1, Relaxed);
    }

    /// An over-capacity socket closed at once.
    pub fn refused(&self) {
        self.closed[POLICY].fetch_add(1, Relaxed);
    }

    /// Adds what a session relayed since `reported`, and moves `reported` up to `now`.
    pub fn traffic(&self, reported: &mut Traffic, now: Traffic) {
        let add = |counter: &AtomicU64, now: u64, before: u64| {
            let n = now.saturating_sub(before);
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        };
        add(&self.bytes[0], now.down_to_up, reported.down_to_up);
        add(&self.bytes[1], now.up_to_down, reported.up_to_down);
        add(&self.starttls[0], now.starttls_ok, reported.starttls_ok);
        add(
            &self.starttls[1],
            now.starttls_failed,
            reported.starttls_failed,
        );
        add(
            &self.heartbeat_misses,
            now.heartbeat_misses,
            reported.heartbeat_misses,
        );
        *reported = now;
    }
}

/// Which limit refused a connection: the `why` label of `wsbridge_refused_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// `--max-connections`.
    Capacity = 0,
    /// `--max-connections-per-ip`.
    PerIp = 1,
    /// `--accept-rate`.
    Rate = 2,
}

impl Refused {
    const ALL: [Refused; 3] = [Refused::Capacity, Refused::PerIp, Refused::Rate];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Capacity => "capacity",
            Refused::PerIp => "per_ip",
            Refused::Rate => "rate",
        }
    }
}

/// One listener's labels.
struct Labels {
    mode: &'static str,
    listener: String,
}

struct Inner {
    listeners: Vec<Labels>,
    /// One per counting thread; each holds one [`Counters`] per listener.
    shards: Vec<Box<[Counters]>>,
    draining: AtomicBool,
}

/// The metrics of one server: cheap to clone, shared by its threads and the responder.
#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("listeners", &self.0.listeners.len())
            .field("shards", &self.0.shards.len())
            .finish()
    }
}

impl Metrics {
    /// Metrics for `listeners` (`(mode, listener address)` each) counted by `shards` threads.
    pub(crate) fn new(listeners: Vec<(&'static str, String)>, shards: usize) -> Metrics {
        let n = listeners.len();
        Metrics(Arc::new(Inner {
            listeners: listeners
                .into_iter()
                .map(|(mode, listener)| Labels { mode, listener })
                .collect(),
            shards: (0..shards)
                .map(|_| (0..n).map(|_| Counters::default()).collect())
                .collect(),
            draining: AtomicBool::new(false),
        }))
    }

    /// Shard `shard`'s counters for listener `listener`. Only the thread owning the shard writes them.
    pub(crate) fn counters(&self, shard: usize, listener: usize) -> &Counters {
        &self.0.shards[shard][listener]
    }

    /// Marks the server as draining (`wsbridge_draining` 1, `/healthz` 503).
    pub(crate) fn set_draining(&self) {
        self.0.draining.store(true, Relaxed);
    }

    /// Whether a graceful drain has started.
    pub fn draining(&self) -> bool {
        self.0.draining.load(Relaxed)
    }

    /// Everything, in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let sum = |l: usize, f: &dyn Fn(&Counters) -> u64| -> u64 {
            self.0
                .shards
                .iter()
                .map(|s| f(&s[l]))
                .fold(0, u64::wrapping_add)
        };
        let labels = |l: usize| {
            let x = &self.0.listeners[l];
            format!(
                "mode=\"{}\",listener=\"{}\"",
                escape(x.mode),
                escape(&x.listener)
            )
        };
        let n = self.0.listeners.len();

        header(
            &mut out,
            "wsbridge_connections_accepted_total",
            "counter",
            "Connections accepted, over-capacity ones included.",
        );
        for l in 0..n {
            let v = sum(l, &|c| c.accepted.load(Relaxed));
            let _ = writeln!(
                out,
                "wsbridge_connections_accepted_total{{{}}} {v}",
                labels(l)
            );
        }

        header(
            &mut out,
            "wsbridge_connections_active",
            "gauge",
            "Connections accepted and not closed yet.",
        );
        for l in 0..n {
            // Closed first: a close seen without its accept would make the difference negative.
            let closed = sum(l, &|c| c.closed.iter().map(|x| x.load(Relaxed)).sum());
            let accepted = sum(l, &|c| c.accepted.load(Relaxed));
            let v = accepted.saturating_sub(closed);
            let _ = writeln!(out, "wsbridge_connections_active{{{}}} {v}", labels(l));
        }

        header(
            &mut out,
            "wsbridge_connections_closed_total",
            "counter",
            "Connections closed, by why they ended.",
        );
        for l in 0..n {
            for (i, reason) in REASONS.iter().enumerate() {
                let v = sum(l, &|c| c.closed[i].load(Relaxed));
                let _ = writeln!(
                    out,
                    "wsbridge_connections_closed_total{{{},reason=\"{reason}\"}} {v}",
                    labels(l)
                );
            }
        }

        header(
            &mut out,
            "wsbridge_bytes_total",
            "counter",
            "Payload bytes relayed: down_to_up from the accepted client, up_to_down towards it.",
        );
        for l in 0..n {
            for (i, dir) in ["down_to_up", "up_to_down"].iter().enumerate() {
                let v = sum(l, &|c| c.bytes[i].load(Relaxed));
                let _ = writeln!(
                    out,
                    "wsbridge_bytes_total{{{},direction=\"{dir}\"}} {v}",
                    labels(l)
                );
            }
        }

        header(
            &mut out,
            "wsbridge_starttls_total",
            "counter",
            "Client STARTTLS upgrades, by result.",
        );
        for l in 0..n {
            for (i, result) in ["ok", "failed"].iter().enumerate() {
                let v = sum(l, &|c| c.starttls[i].load(Relaxed));
                let _ = writeln!(
                    out,
                    "wsbridge_starttls_total{{{},result=\"{result}\"}} {v}",
                    labels(l)
                );
            }
        }

        for (name, help, get) in [
            (
                "wsbridge_heartbeat_misses_total",
                "Pongs that did not come back in time (the connection was then closed).",
                (|c: &Counters| c.heartbeat_misses.load(Relaxed)) as fn(&Counters) -> u64,
            ),
            (
                "wsbridge_read_pauses_total",
                "Times an open leg stopped being read for backpressure (a full queue, a POST in flight).",
                |c: &Counters| c.read_pauses.load(Relaxed),
            ),
        ] {
            header(&mut out, name, "counter", help);
            for l in 0..n {
                let v = sum(l, &get);
                let _ = writeln!(out, "{name}{{{}}} {v}", labels(l));
            }
        }

        header(
            &mut out,
            "wsbridge_handshake_seconds",
            "histogram",
            "Time from accept to the session being established.",
        );
        for l in 0..n {
            self.histogram(&mut out, "wsbridge_handshake_seconds", l, &labels(l), |c| {
                &c.handshake
            });
        }

        header(
            &mut out,
            "wsbridge_connect_seconds",
            "histogram",
            "Time to connect a dialled (upstream) socket.",
        );
        for l in 0..n {
            self.histogram(&mut out, "wsbridge_connect_seconds", l, &labels(l), |c| {
                &c.connect
            });
        }

        header(
            &mut out,
            "wsbridge_over_capacity_total",
            "counter",
            "Connections accepted over the connection limit.",
        );
        for l in 0..n {
            let v = sum(l, &|c| c.over_capacity.load(Relaxed));
            let _ = writeln!(out, "wsbridge_over_capacity_total{{{}}} {v}", labels(l));
        }

        header(
            &mut out,
            "wsbridge_refused_total",
            "counter",
            "Connections refused over a limit, by limit (capacity, per_ip, rate).",
        );
        for l in 0..n {
            for why in Refused::ALL {
                let v = sum(l, &|c| c.refused_by[why as usize].load(Relaxed));
                let _ = writeln!(
                    out,
                    "wsbridge_refused_total{{{},why=\"{}\"}} {v}",
                    labels(l),
                    why.label()
                );
            }
        }

        header(
            &mut out,
            "wsbridge_draining",
            "gauge",
            "1 once a graceful drain started (no new connections are accepted).",
        );
        let _ = writeln!(out, "wsbridge_draining {}", u8::from(self.draining()));
        out
    }

    fn histogram(
        &self,
        out: &mut String,
        name: &str,
        l: usize,
        labels: &str,
        pick: impl Fn(&Counters) -> &Histogram,
    ) {
        let mut cumulative = 0u64;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self
                .0
                .shards
                .iter()
                .map(|s| pick(&s[l]).buckets[i].load(Relaxed))
                .sum::<u64>();
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let count: u64 = self
            .0
            .shards
            .iter()
            .map(|s| pick(&s[l]).count.load(Relaxed))
            .sum();
        let sum_us: u64 = self
            .0
            .shards
            .iter()
            .map(|s| pick(&s[l]).sum_us.load(Relaxed))
            .sum();
        // The count may have moved on since the buckets were read: +Inf is never below them.
        let count = count.max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
pub fn escape(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_add_up_and_histograms_are_cumulative() {
        let m = Metrics::new(vec![("tcp2ws", "127.0.0.1:1\"x\\".into())], 2);
        m.counters(0, 0).accepted.fetch_add(2, Relaxed);
        m.counters(1, 0).accepted.fetch_add(1, Relaxed);
        m.counters(1, 0).closed(Some(&EndReason::Normal));
        m.counters(0, 0).closed(None);
        let mut seen = Traffic::default();
        let now = Traffic {
            down_to_up: 5,
            up_to_down: 7,
            starttls_ok: 1,
            starttls_failed: 0,
            heartbeat_misses: 0,
        };
        m.counters(0, 0).traffic(&mut seen, now);
        m.counters(0, 0).traffic(&mut seen, now); // nothing new
        let later = Traffic {
            starttls_failed: 1,
            heartbeat_misses: 1,
            ..now
        };
        m.counters(1, 0).traffic(&mut Traffic::default(), later);
        m.counters(1, 0).read_pauses.fetch_add(2, Relaxed);
        m.counters(0, 0).handshake.observe(Duration::from_millis(3));
        m.counters(1, 0).handshake.observe(Duration::from_secs(60));
        let text = m.render();
        let l = r#"mode="tcp2ws",listener="127.0.0.1:1\"x\\""#;
        for line in [
            format!("wsbridge_connections_accepted_total{{{l}}} 3"),
            format!("wsbridge_connections_active{{{l}}} 1"),
            format!("wsbridge_connections_closed_total{{{l},reason=\"normal\"}} 1"),
            format!("wsbridge_connections_closed_total{{{l},reason=\"internal\"}} 1"),
            format!("wsbridge_bytes_total{{{l},direction=\"down_to_up\"}} 10"),
            format!("wsbridge_bytes_total{{{l},direction=\"up_to_down\"}} 14"),
            format!("wsbridge_starttls_total{{{l},result=\"ok\"}} 2"),
            format!("wsbridge_starttls_total{{{l},result=\"failed\"}} 1"),
            format!("wsbridge_heartbeat_misses_total{{{l}}} 1"),
            format!("wsbridge_read_pauses_total{{{l}}} 2"),
            "# TYPE wsbridge_read_pauses_total counter".into(),
            format!("wsbridge_handshake_seconds_bucket{{{l},le=\"0.0025\"}} 0"),
            format!("wsbridge_handshake_seconds_bucket{{{l},le=\"0.005\"}} 1"),
            format!("wsbridge_handshake_seconds_bucket{{{l},le=\"10\"}} 1"),
            format!("wsbridge_handshake_seconds_bucket{{{l},le=\"+Inf\"}} 2"),
            format!("wsbridge_handshake_seconds_sum{{{l}}} 60.003"),
            format!("wsbridge_handshake_seconds_count{{{l}}} 2"),
            "# TYPE wsbridge_handshake_seconds histogram".into(),
            "wsbridge_draining 0".into(),
        ] {
            assert!(text.lines().any(|x| x == line), "no {line:?} in\n{text}");
        }
    }
}
