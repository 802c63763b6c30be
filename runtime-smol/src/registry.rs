//! The ids session tasks registered ([`Action::Register`](wsbridge_core::session::Action::Register)),
//! shared by the tasks of one server: id → the sending half of the registered task's inbox.
//!
//! The mutex guards the map only (a register, a lookup, a task's end); every session stays owned by its
//! task. A delivery is an [`Incoming`] on the target's bounded inbox with a one-slot reply channel the
//! source task waits on in its poll.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use smol::channel::Sender;
use wsbridge_core::session::{Delivery, DeliveryResult};

/// Deliveries a registered task holds before it takes them (more are answered `Full`).
pub(crate) const INBOX: usize = 64;

/// A delivery on its way to a registered task, and where its result goes.
pub(crate) struct Incoming {
    pub message: Delivery,
    /// A `bounded(1)` channel: exactly one result is ever sent. Dropped unanswered, the source reads
    /// `Unknown`.
    pub reply: Sender<DeliveryResult>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Registry {
    ids: Mutex<HashMap<String, Sender<Incoming>>>,
}

impl Registry {
    /// Registers `id` for the task whose inbox `inbox` feeds; false (and nothing changes) if taken.
    pub fn register(&self, id: &str, inbox: &Sender<Incoming>) -> bool {
        let mut ids = self.lock();
        if ids.contains_key(id) {
            return false;
        }
        ids.insert(id.to_owned(), inbox.clone());
        true
    }

    /// The inbox of the task registered under `id`.
    pub fn lookup(&self, id: &str) -> Option<Sender<Incoming>> {
        self.lock().get(id).cloned()
    }

    /// Forgets `ids` where they still name `inbox`.
    pub fn forget(&self, ids: &[String], inbox: &Sender<Incoming>) {
        let mut map = self.lock();
        for id in ids {
            if map.get(id).is_some_and(|tx| tx.same_channel(inbox)) {
                map.remove(id);
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Sender<Incoming>>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}
