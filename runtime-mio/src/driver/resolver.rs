//! Name resolution off the event loops: a small pool of threads calling the system resolver
//! (`getaddrinfo` through [`ToSocketAddrs`]), each answer sent back to the asking loop over its channel,
//! followed by a wake of its [`Waker`].
//!
//! The pool is shared by every loop of a server. The threads end when the last job sender is dropped; they
//! are not joined, because a `getaddrinfo` call can block for many seconds and holds nothing that needs
//! cleaning up.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};

use mio::Waker;

use super::event_loop::Msg;
use super::slab::Key;

/// One name to resolve, and where the answer goes.
pub(crate) struct Job {
    pub host: String,
    pub port: u16,
    pub key: Key,
    /// The session's number for this resolve, sent back with the answer.
    pub id: u64,
    pub reply: Sender<Msg>,
    pub waker: Arc<Waker>,
}

/// Starts `threads` resolver threads; returns the queue they take jobs from.
pub(crate) fn spawn(threads: usize) -> io::Result<Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads.max(1) {
        let rx = rx.clone();
        std::thread::Builder::new()
            .name(format!("wsbridge-resolve-{i}"))
            .spawn(move || worker(&rx))?;
    }
    Ok(tx)
}

fn worker(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, not while resolving.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let result = resolve(&job.host, job.port);
        if job
            .reply
            .send(Msg::Resolved {
                key: job.key,
                id: job.id,
                result,
            })
            .is_ok()
        {
            let _ = job.waker.wake();
        }
    }
}

/// The system resolver's answer for `host` (a name or an address literal in any spelling it accepts).
pub(crate) fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| e.to_string())
}
