//! The ids sessions registered ([`Action::Register`](wsbridge_core::session::Action::Register)), shared
//! by every loop of one server, and the way to reach each loop.
//!
//! An id names a (loop, slab key) pair: the key's generation means a message for a session that has
//! finished never reaches a later session in its slot. The map is behind a mutex taken only for a
//! register, a lookup or a session's end (never while a session runs); sessions themselves stay owned
//! by their loop.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, OnceLock};

use super::event_loop::{LoopHandle, Msg};
use super::slab::Key;

/// Where a registered session lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Address {
    /// The index of its loop.
    pub lp: usize,
    pub key: Key,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Directory {
    ids: Mutex<HashMap<String, Address>>,
    /// Every loop of the server by index, set once they all exist (before any connection is accepted).
    loops: OnceLock<Vec<LoopHandle>>,
}

impl Directory {
    /// Makes the loops reachable by index (once; later calls are ignored).
    pub fn set_loops(&self, loops: Vec<LoopHandle>) {
        let _ = self.loops.set(loops);
    }

    /// Registers `id` for `at`; false (and nothing changes) if the id is taken.
    pub fn register(&self, id: &str, at: Address) -> bool {
        let mut ids = self.lock();
        if ids.contains_key(id) {
            return false;
        }
        ids.insert(id.to_owned(), at);
        true
    }

    /// Where the session registered under `id` lives.
    pub fn lookup(&self, id: &str) -> Option<Address> {
        self.lock().get(id).copied()
    }

    /// Forgets the ids `at` registered (those still naming it).
    pub fn forget(&self, ids: &[String], at: Address) {
        let mut map = self.lock();
        for id in ids {
            if map.get(id) == Some(&at) {
                map.remove(id);
            }
        }
    }

    /// Sends `msg` to loop `lp` and wakes it; gives `msg` back if that loop is gone or unknown.
    pub fn send(&self, lp: usize, msg: Msg) -> Result<(), Msg> {
        match self.loops.get().and_then(|loops| loops.get(lp)) {
            Some(handle) => handle.send(msg),
            None => Err(msg),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Address>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}
