//! Fake sessions for the runtimes' tests: no protocol, only what a driver must do with a [`Session`]. Not
//! part of the API.
//!
//! Both runtimes run the same scenarios on these (`tests/tests/runtime_contract.rs`) and their own
//! internals tests (`wsbridge-mio`'s read budget, …). Like the rest of the core they are sans-IO: time
//! comes in as `now`, sockets stay with the driver. What they saw is noted in a shared `Vec<String>`,
//! some notes with the name of the thread that ran the session (to check where a driver runs what).

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::session::{
    Action, Delivery, DeliveryResult, EndReason, Leg, Session, SessionFactory, Traffic,
};
use crate::Entropy;

/// What happened in sessions, for assertions (shared by the sessions of a factory).
pub type Notes = Arc<Mutex<Vec<String>>>;

/// What a fake session has queued for each leg.
#[derive(Default)]
struct Queues {
    to_down: BytesMut,
    to_up: BytesMut,
}

impl Queues {
    /// `leg`'s queue as the one slice of `dst` (`Up`'s only while `up_open`).
    fn slices<'a>(&'a self, leg: Leg, up_open: bool, dst: &mut [IoSlice<'a>]) -> usize {
        let q = match leg {
            Leg::Down => &self.to_down,
            Leg::Up if up_open => &self.to_up,
            Leg::Up => return 0,
        };
        match dst.first_mut() {
            Some(slot) if !q.is_empty() => {
                *slot = IoSlice::new(q);
                1
            }
            _ => 0,
        }
    }

    fn advance(&mut self, leg: Leg, n: usize) {
        match leg {
            Leg::Down => self.to_down.advance(n),
            Leg::Up => self.to_up.advance(n),
        }
    }
}

/// Where a [`TestSession`] dials its `Up` leg.
#[derive(Clone, Debug)]
pub enum Target {
    /// No `Up` leg: the session only talks to its client.
    None,
    /// Dial this address.
    Addr(SocketAddr),
    /// Resolve this host, then dial its first IPv4 address at this port.
    Resolve(&'static str, u16),
}

/// What a [`TestSession`] does.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Where it dials its `Up` leg.
    pub target: Target,
    /// Written to the client first.
    pub greet: &'static [u8],
    /// Write "tick\n" to the client and end this long after the start.
    pub tick_after: Option<Duration>,
    /// Bytes queued per direction before that side stops being read.
    pub cap: usize,
    /// What happened, for assertions.
    pub notes: Notes,
}

impl Plan {
    /// Dials `target`, greets with nothing, never ticks, queues up to 64 KiB per direction.
    pub fn new(target: Target) -> Self {
        Plan {
            target,
            greet: b"",
            tick_after: None,
            cap: 64 * 1024,
            notes: Arc::default(),
        }
    }
    /// A copy of the notes so far.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap().clone()
    }
}

/// Relays bytes between its legs (echoes to the client when it has no `Up` leg) after a greeting, with
/// backpressure at [`Plan::cap`]; optionally says "tick" and ends at a deadline. It notes I/O errors and
/// where the resolver's answer arrived (`resolved on THREAD`), and tells its client when dialling failed.
pub struct TestSession {
    plan: Plan,
    actions: VecDeque<Action>,
    q: Queues,
    connected: bool,
    down_eof: bool,
    up_eof: bool,
    /// Only the rest of `to_down` is still sent, then the session ends.
    ending: bool,
    deadline: Option<Instant>,
    end: Option<EndReason>,
    traffic: Traffic,
    /// When the `Up` leg connected.
    established: Option<Instant>,
}

impl TestSession {
    /// A session following `plan`, started at `now`.
    pub fn new(plan: Plan, now: Instant) -> Self {
        let mut actions = VecDeque::new();
        match plan.target {
            Target::None => {}
            Target::Addr(a) => actions.push_back(Action::Connect(a)),
            Target::Resolve(host, port) => actions.push_back(Action::Resolve {
                host: host.to_owned(),
                port,
            }),
        }
        TestSession {
            q: Queues {
                to_down: BytesMut::from(plan.greet),
                to_up: BytesMut::new(),
            },
            deadline: plan.tick_after.map(|d| now + d),
            plan,
            actions,
            connected: false,
            down_eof: false,
            up_eof: false,
            ending: false,
            end: None,
            traffic: Traffic::default(),
            established: None,
        }
    }

    fn note(&self, what: String) {
        self.plan.notes.lock().unwrap().push(what);
    }

    /// Sends `last_words` to the client (after what is queued), then ends with `reason`.
    pub fn end_with(&mut self, reason: EndReason, last_words: String) {
        self.q.to_down.extend_from_slice(last_words.as_bytes());
        self.ending = true;
        self.end.get_or_insert(reason);
    }
}

impl Session for TestSession {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, _: Instant) {
        match leg {
            Leg::Down => {
                self.traffic.down_to_up += data.len() as u64;
                self.q.to_up.extend_from_slice(&data);
            }
            Leg::Up => {
                self.traffic.up_to_down += data.len() as u64;
                self.q.to_down.extend_from_slice(&data);
            }
        }
    }
    fn handle_eof(&mut self, leg: Leg, _: Instant) {
        match leg {
            Leg::Down => self.down_eof = true,
            Leg::Up => self.up_eof = true,
        }
    }
    fn handle_io_error(&mut self, leg: Leg, error: io::ErrorKind, _: Instant) {
        self.note(format!("io error {leg:?} {error:?}"));
        self.end = Some(EndReason::PeerError(leg, format!("{error:?}")));
        self.down_eof = true;
        self.up_eof = true;
        self.ending = true;
        self.q.to_down.clear();
    }
    fn handle_resolved(&mut self, result: Result<Vec<SocketAddr>, String>, _: Instant) {
        let thread = thread::current().name().unwrap_or("?").to_owned();
        self.note(format!("resolved on {thread}"));
        match result.map(|a| a.into_iter().find(SocketAddr::is_ipv4)) {
            Ok(Some(addr)) => self.actions.push_back(Action::Connect(addr)),
            Ok(None) => self.end_with(EndReason::Upstream("no v4".into()), "no v4\n".into()),
            Err(e) => self.end_with(EndReason::Upstream(e), "resolve failed\n".into()),
        }
    }
    fn handle_connected(&mut self, now: Instant) {
        self.connected = true;
        self.established = Some(now);
    }
    fn handle_connect_failed(&mut self, error: io::ErrorKind, _: Instant) {
        self.end_with(
            EndReason::Upstream(format!("{error:?}")),
            format!("connect failed: {error:?}\n"),
        );
    }
    fn handle_timeout(&mut self, now: Instant) {
        if self.deadline.is_some_and(|d| d <= now) {
            self.deadline = None;
            self.end_with(EndReason::Timeout("tick"), "tick\n".into());
        }
    }
    /// Says "going away" to the client (after what is queued) and ends.
    fn handle_shutdown(&mut self, _: Instant) {
        if !self.ending {
            self.end_with(EndReason::Shutdown, "going away\n".into());
        }
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline
    }
    fn wants_read(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => !self.ending && !self.down_eof && self.q.to_up.len() < self.plan.cap,
            Leg::Up => self.connected && !self.up_eof && self.q.to_down.len() < self.plan.cap,
        }
    }
    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        self.q.slices(leg, self.connected && !self.ending, dst)
    }
    fn advance(&mut self, leg: Leg, n: usize, _: Instant) {
        self.q.advance(leg, n);
    }
    fn write_closed(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => self.ending || self.up_eof,
            Leg::Up => self.down_eof,
        }
    }
    fn is_finished(&self) -> bool {
        if self.ending {
            return self.q.to_down.is_empty();
        }
        match self.plan.target {
            Target::None => self.down_eof && self.q.to_down.is_empty(),
            _ => {
                self.down_eof && self.up_eof && self.q.to_down.is_empty() && self.q.to_up.is_empty()
            }
        }
    }
    fn connection_id(&self) -> &str {
        "test"
    }
    fn end_reason(&self) -> Option<&EndReason> {
        self.end.as_ref().or(Some(&EndReason::Normal))
    }
    fn traffic(&self) -> Traffic {
        self.traffic
    }
    fn established(&self) -> Option<Instant> {
        self.established
    }
}

/// Makes a [`TestSession`] per connection, all with the same plan (and notes).
pub struct TestFactory {
    /// The plan of every session.
    pub plan: Plan,
    /// What an over-capacity session says before it ends (`None`: close at once).
    pub busy: Option<&'static [u8]>,
}

impl SessionFactory for TestFactory {
    fn session(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        Box::new(TestSession::new(self.plan.clone(), now))
    }
    fn over_capacity(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Option<Box<dyn Session + Send>> {
        let words = self.busy?;
        let mut s = TestSession::new(Plan::new(Target::None), now);
        s.end_with(
            EndReason::Policy("busy".into()),
            String::from_utf8_lossy(words).into(),
        );
        Some(Box::new(s))
    }
    fn mode(&self) -> &'static str {
        "test"
    }
}

/// A session that takes every byte and counts them.
pub struct Sink(pub Arc<AtomicUsize>);

impl Session for Sink {
    fn handle_input(&mut self, _: Leg, data: BytesMut, _: Instant) {
        self.0.fetch_add(data.len(), Ordering::SeqCst);
    }
    fn handle_eof(&mut self, _: Leg, _: Instant) {}
    fn handle_io_error(&mut self, _: Leg, _: io::ErrorKind, _: Instant) {}
    fn handle_resolved(&mut self, _: Result<Vec<SocketAddr>, String>, _: Instant) {}
    fn handle_connected(&mut self, _: Instant) {}
    fn handle_connect_failed(&mut self, _: io::ErrorKind, _: Instant) {}
    fn handle_timeout(&mut self, _: Instant) {}
    /// Ignored too: only the driver's hard deadline ends a sink.
    fn handle_shutdown(&mut self, _: Instant) {}
    fn poll_action(&mut self) -> Option<Action> {
        None
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn wants_read(&self, leg: Leg) -> bool {
        leg == Leg::Down
    }
    fn slices<'a>(&'a self, _: Leg, _: &mut [IoSlice<'a>]) -> usize {
        0
    }
    fn advance(&mut self, _: Leg, _: usize, _: Instant) {}
    fn write_closed(&self, _: Leg) -> bool {
        false
    }
    fn is_finished(&self) -> bool {
        false
    }
    fn connection_id(&self) -> &str {
        "sink"
    }
    fn end_reason(&self) -> Option<&EndReason> {
        None
    }
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
    fn established(&self) -> Option<Instant> {
        None
    }
}

/// A factory whose sessions `make(now)` makes, with no over-capacity session (closed at once).
struct FnFactory<F> {
    mode: &'static str,
    make: F,
}

impl<F> SessionFactory for FnFactory<F>
where
    F: Fn(Instant) -> Box<dyn Session + Send> + Send + Sync,
{
    fn session(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        now: Instant,
    ) -> Box<dyn Session + Send> {
        (self.make)(now)
    }
    fn over_capacity(
        &self,
        _: SocketAddr,
        _: Box<dyn Entropy + Send>,
        _: Instant,
    ) -> Option<Box<dyn Session + Send>> {
        None
    }
    fn mode(&self) -> &'static str {
        self.mode
    }
}

/// Mode `flood`: its first session is a [`Sink`] counting in `sunk` (for a client that floods), the
/// others greet with "hi\n".
pub fn flood_factory(sunk: Arc<AtomicUsize>) -> impl SessionFactory {
    let made = AtomicUsize::new(0);
    FnFactory {
        mode: "flood",
        make: move |now| -> Box<dyn Session + Send> {
            if made.fetch_add(1, Ordering::SeqCst) == 0 {
                return Box::new(Sink(sunk.clone()));
            }
            let mut plan = Plan::new(Target::None);
            plan.greet = b"hi\n";
            Box::new(TestSession::new(plan, now))
        },
    }
}

/// A session its client drives with lines: `reg ID` (register), `to ID MSG` (deliver a Text message),
/// `dial ADDR` (connect the `Up` leg, again if it is open), `up DATA` (write a line to `Up`). It tells its
/// client what happens, a line each: `registered ID`, `got text MSG`, `result RESULT`, `connected`,
/// `up eof`; bytes from `Up` are passed through. It ends when its client shuts down its writing side.
pub struct Courier {
    notes: Notes,
    input: BytesMut,
    actions: VecDeque<Action>,
    q: Queues,
    connected: bool,
    down_eof: bool,
}

impl Courier {
    fn note(&self, what: &str) {
        let thread = thread::current().name().unwrap_or("?").to_owned();
        self.notes
            .lock()
            .unwrap()
            .push(format!("{what} on {thread}"));
    }

    fn say(&mut self, line: &str) {
        self.q.to_down.extend_from_slice(line.as_bytes());
        self.q.to_down.extend_from_slice(b"\n");
    }

    fn command(&mut self, line: &str) {
        let mut words = line.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("reg"), Some(id), None) => {
                self.note(&format!("reg {id}"));
                self.actions.push_back(Action::Register(id.to_owned()));
                self.say(&format!("registered {id}"));
            }
            (Some("to"), Some(id), Some(msg)) => {
                self.note(&format!("deliver to {id}"));
                self.actions.push_back(Action::Deliver {
                    to: id.to_owned(),
                    message: Delivery {
                        text: true,
                        data: Bytes::copy_from_slice(msg.as_bytes()),
                    },
                });
            }
            (Some("dial"), Some(addr), None) => {
                self.actions
                    .push_back(Action::Connect(addr.parse().unwrap()));
            }
            (Some("up"), Some(data), None) => {
                self.q.to_up.extend_from_slice(data.as_bytes());
                self.q.to_up.extend_from_slice(b"\n");
            }
            _ => self.say(&format!("bad command {line:?}")),
        }
    }
}

impl Session for Courier {
    fn handle_input(&mut self, leg: Leg, data: BytesMut, _: Instant) {
        if leg == Leg::Up {
            self.q.to_down.extend_from_slice(&data);
            return;
        }
        self.input.extend_from_slice(&data);
        // Bounded: every pass takes a line off the input.
        while let Some(end) = self.input.iter().position(|&b| b == b'\n') {
            let line = self.input.split_to(end + 1);
            self.command(std::str::from_utf8(&line[..end]).unwrap());
        }
    }
    fn handle_eof(&mut self, leg: Leg, _: Instant) {
        match leg {
            Leg::Down => self.down_eof = true,
            Leg::Up => {
                self.connected = false;
                self.say("up eof");
            }
        }
    }
    fn handle_io_error(&mut self, leg: Leg, error: io::ErrorKind, _: Instant) {
        self.say(&format!("io error {leg:?} {error:?}"));
        self.down_eof = true;
    }
    fn handle_resolved(&mut self, _: Result<Vec<SocketAddr>, String>, _: Instant) {}
    fn handle_connected(&mut self, _: Instant) {
        self.connected = true;
        self.say("connected");
    }
    fn handle_connect_failed(&mut self, error: io::ErrorKind, _: Instant) {
        self.say(&format!("connect failed {error:?}"));
    }
    fn handle_timeout(&mut self, _: Instant) {}
    /// Ends like a client EOF: what is queued for the client still goes.
    fn handle_shutdown(&mut self, _: Instant) {
        self.down_eof = true;
    }
    fn handle_delivery(&mut self, message: Delivery, _: Instant) -> DeliveryResult {
        self.note("delivered");
        let kind = if message.text { "text" } else { "binary" };
        let data = String::from_utf8_lossy(&message.data).into_owned();
        self.say(&format!("got {kind} {data}"));
        DeliveryResult::Accepted
    }
    fn handle_delivery_result(&mut self, result: DeliveryResult, _: Instant) {
        self.say(&format!("result {result:?}"));
    }
    fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
    fn wants_read(&self, leg: Leg) -> bool {
        match leg {
            Leg::Down => !self.down_eof,
            Leg::Up => self.connected,
        }
    }
    fn slices<'a>(&'a self, leg: Leg, dst: &mut [IoSlice<'a>]) -> usize {
        self.q.slices(leg, self.connected, dst)
    }
    fn advance(&mut self, leg: Leg, n: usize, _: Instant) {
        self.q.advance(leg, n);
    }
    fn write_closed(&self, _: Leg) -> bool {
        false // the client sees EOF only when the session is closed (its ids forgotten)
    }
    fn is_finished(&self) -> bool {
        self.down_eof && self.q.to_down.is_empty()
    }
    fn connection_id(&self) -> &str {
        "courier"
    }
    fn end_reason(&self) -> Option<&EndReason> {
        Some(&EndReason::Normal)
    }
    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
    fn established(&self) -> Option<Instant> {
        None
    }
}

/// Mode `courier`: a [`Courier`] per connection; they note (`reg ID on THREAD`, `deliver to ID on
/// THREAD`, `delivered on THREAD`) in `notes`.
pub fn courier_factory(notes: Notes) -> impl SessionFactory {
    FnFactory {
        mode: "courier",
        make: move |_| -> Box<dyn Session + Send> {
            Box::new(Courier {
                notes: notes.clone(),
                input: BytesMut::new(),
                actions: VecDeque::new(),
                q: Queues::default(),
                connected: false,
                down_eof: false,
            })
        },
    }
}
