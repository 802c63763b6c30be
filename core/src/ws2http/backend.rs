//! [`Backend`]: a session's own HTTP/1.1 keep-alive connection to its backend (the `Up` leg): one POST
//! in flight at a time, each bounded by the backend timeout (resolve → connect → TLS → response) and a
//! response size cap. No redirect is followed: the caller treats a 3xx as a failure.
//!
//! A POST goes on the open connection when it reaches the same origin and the last response allowed
//! keep-alive; otherwise the runtime dials again (`Action::Connect` gives a fresh leg). A POST that
//! fails because a reused connection was closed under it, before any response byte, is retried once
//! on a fresh connection (the usual keep-alive race).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use crate::http::client::{ClientResponse, ResponseReader};
use crate::session::Action;
use crate::tls::ClientTlsFactory;
use crate::url::HttpUrl;
use crate::wire::Wire;

/// Where a connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &HttpUrl) -> Origin {
        Origin {
            tls: url.tls(),
            host: url.host().to_owned(),
            port: url.port(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Conn {
    /// No usable connection.
    None,
    /// The runtime resolves the origin's host.
    Resolving(Origin),
    /// Dialling `addrs[next - 1]`.
    Connecting {
        origin: Origin,
        addrs: Vec<SocketAddr>,
        next: usize,
    },
    /// Connected (TLS may still be handshaking: the request waits in the wire).
    Open(Origin),
}

struct InFlight {
    url: HttpUrl,
    request: Bytes,
    reader: ResponseReader,
    deadline: Instant,
    /// Written on a connection that had carried a request before.
    reused: bool,
    retried: bool,
}

/// What became of a POST.
pub(crate) type Outcome = Result<ClientResponse, String>;

/// See the module docs.
pub(crate) struct Backend {
    conn: Conn,
    pub(crate) wire: Wire,
    inflight: Option<InFlight>,
    /// The open connection may carry another request.
    reusable: bool,
    timeout: Duration,
    max_head: usize,
    max_headers: usize,
    max_body: usize,
}

impl Backend {
    pub(crate) fn new(
        timeout: Duration,
        max_head: usize,
        max_headers: usize,
        max_body: usize,
    ) -> Self {
        Backend {
            conn: Conn::None,
            wire: Wire::plain(),
            inflight: None,
            reusable: false,
            timeout,
            max_head,
            max_headers,
            max_body,
        }
    }

    /// Sends `request` (a complete encoded request) to `url`'s origin. One at a time: the caller waits
    /// for the outcome of the last before starting the next.
    pub(crate) fn start(
        &mut self,
        url: HttpUrl,
        request: Bytes,
        now: Instant,
        actions: &mut VecDeque<Action>,
    ) {
        debug_assert!(self.inflight.is_none());
        let origin = Origin::of(&url);
        let reuse = self.reusable && self.conn == Conn::Open(origin.clone());
        self.inflight = Some(InFlight {
            url,
            request: request.clone(),
            reader: ResponseReader::new(self.max_head, self.max_headers, self.max_body),
            deadline: now + self.timeout,
            reused: reuse,
            retried: false,
        });
        if reuse {
            self.wire.send(request);
        } else {
            self.dial(origin, actions);
        }
    }

    fn dial(&mut self, origin: Origin, actions: &mut VecDeque<Action>) {
        self.wire.discard();
        self.wire = Wire::plain();
        self.reusable = false;
        actions.push_back(Action::Resolve {
            host: origin.host.clone(),
            port: origin.port,
        });
        self.conn = Conn::Resolving(origin);
    }

    fn fail(&mut self, why: String) -> Option<Outcome> {
        self.conn = Conn::None;
        self.reusable = false;
        self.wire.discard();
        self.inflight
            .take()
            .map(|f| Err(format!("{}: {why}", f.url)))
    }

    pub(crate) fn on_resolved(
        &mut self,
        result: Result<Vec<SocketAddr>, String>,
        actions: &mut VecDeque<Action>,
    ) -> Option<Outcome> {
        let Conn::Resolving(origin) = &self.conn else {
            return None;
        };
        match result {
            Ok(mut addrs) if !addrs.is_empty() => {
                addrs.dedup();
                actions.push_back(Action::Connect(addrs[0]));
                self.conn = Conn::Connecting {
                    origin: origin.clone(),
                    addrs,
                    next: 1,
                };
                None
            }
            Ok(_) => self.fail("resolved to no address".into()),
            Err(e) => self.fail(format!("cannot resolve: {e}")),
        }
    }

    pub(crate) fn on_connected(&mut self, tls: Option<&ClientTlsFactory>) -> Option<Outcome> {
        let Conn::Connecting { origin, .. } = &self.conn else {
            return None;
        };
        let origin = origin.clone();
        self.wire = if origin.tls {
            match tls.map(|f| f(&origin.host)) {
                Some(Ok(t)) => Wire::with_tls(Some(t)),
                Some(Err(e)) => return self.fail(format!("TLS: {e}")),
                None => return self.fail("https backends are not enabled".into()),
            }
        } else {
            Wire::plain()
        };
        self.conn = Conn::Open(origin);
        self.reusable = true;
        if let Some(f) = &self.inflight {
            self.wire.send(f.request.clone());
        }
        None
    }

    pub(crate) fn on_connect_failed(
        &mut self,
        error: std::io::ErrorKind,
        actions: &mut VecDeque<Action>,
    ) -> Option<Outcome> {
        let Conn::Connecting { addrs, next, .. } = &mut self.conn else {
            return None;
        };
        if let Some(addr) = addrs.get(*next).copied() {
            *next += 1;
            actions.push_back(Action::Connect(addr));
            return None;
        }
        let last = addrs.last().copied();
        self.fail(match last {
            Some(a) => format!("cannot connect to {a}: {error}"),
            None => format!("cannot connect: {error}"),
        })
    }

    /// Bytes read on the leg.
    pub(crate) fn on_input(&mut self, data: BytesMut) -> Option<Outcome> {
        if !matches!(self.conn, Conn::Open(_)) {
            return None;
        }
        let plain = match self.wire.receive(data) {
            Ok(p) => p,
            Err(e) => return self.fail(format!("TLS: {e}")),
        };
        let closed = self.wire.tls().is_some_and(|t| t.peer_closed());
        let mut outcome = None;
        if let Some(plain) = plain {
            match &mut self.inflight {
                None => self.reusable = false, // unsolicited bytes: never reuse
                Some(f) => match f.reader.feed(&plain) {
                    Ok(None) => {}
                    Ok(Some(resp)) => {
                        self.reusable &= resp.keep_alive && !f.reader.unsolicited();
                        self.inflight = None;
                        outcome = Some(Ok(resp));
                    }
                    Err(e) => return self.fail(e.to_string()),
                },
            }
        }
        if closed && outcome.is_none() {
            return self.on_eof_inner(None);
        }
        if closed {
            self.reusable = false;
        }
        outcome
    }

    /// The backend closed the connection (or reset it: `error`).
    pub(crate) fn on_eof(
        &mut self,
        error: Option<std::io::ErrorKind>,
        actions: &mut VecDeque<Action>,
    ) -> Option<Outcome> {
        if !matches!(self.conn, Conn::Open(_)) {
            return None;
        }
        if let Some(f) = &mut self.inflight {
            if f.reused && !f.retried && !f.reader.started() {
                // The keep-alive race: the backend closed the idle connection as we reused it.
                f.retried = true;
                f.reused = false;
                let origin = Origin::of(&f.url);
                self.dial(origin, actions);
                return None;
            }
        }
        self.on_eof_inner(error)
    }

    fn on_eof_inner(&mut self, error: Option<std::io::ErrorKind>) -> Option<Outcome> {
        self.reusable = false;
        self.conn = Conn::None;
        let f = self.inflight.as_mut()?;
        if let Some(e) = error {
            return self.fail(format!("connection error: {e}"));
        }
        match f.reader.eof() {
            Ok(Some(resp)) => {
                self.inflight = None;
                Some(Ok(resp))
            }
            Ok(None) => self.fail("connection closed before a response".into()),
            Err(e) => self.fail(e.to_string()),
        }
    }

    pub(crate) fn on_timeout(&mut self, now: Instant) -> Option<Outcome> {
        match &self.inflight {
            Some(f) if now >= f.deadline => {
                let t = self.timeout;
                self.fail(format!("no response within {t:?}"))
            }
            _ => None,
        }
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.inflight.as_ref().map(|f| f.deadline)
    }

    /// Read while a response is due, and while idle (to notice the backend closing).
    pub(crate) fn wants_read(&self) -> bool {
        matches!(self.conn, Conn::Open(_)) && self.wire.wants_read()
    }

    /// Moves held plaintext through TLS.
    pub(crate) fn flush(&mut self) {
        self.wire.flush();
    }
}
