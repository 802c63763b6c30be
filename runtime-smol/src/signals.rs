//! The server's two signals to its session tasks — shutdown (the session gets `handle_shutdown`), then
//! kill (the task ends) — and the wakers of the tasks waiting for them.
//!
//! One [`Signals`] per server, shared by its tasks. The phase only rises. Each task files its waker
//! once, in a slot of one shared list (16 bytes), and reads the phase with one atomic load at every
//! wake-up; [`Signals::raise`] sets the phase, then wakes every filed task. This is what an idle task
//! pays to be reachable: a listener on a closed-to-signal channel would cost it a heap allocation
//! (and a pinned receiver another) per signal.
//!
//! Lost wake-ups cannot happen: a task files its waker (under the list's lock) before it reads the
//! phase, and `raise` writes the phase before it takes the lock to collect the wakers, so either the
//! task reads the new phase or its waker is among those `raise` wakes.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};

/// How far the server has gone in stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Phase {
    Running = 0,
    /// Every session gets `handle_shutdown` (once).
    Shutdown = 1,
    /// Every task ends.
    Kill = 2,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct Signals {
    phase: AtomicU8,
    waiters: Mutex<Waiters>,
}

/// A slab of wakers: slot `i` is a task's waker, or a link in the list of free slots.
#[derive(Default)]
struct Waiters {
    slots: Vec<Slot>,
    /// The first free slot (`slots.len()`: none).
    free: usize,
}

enum Slot {
    Filed(Waker),
    /// Free; the next free slot.
    Free(usize),
}

impl Signals {
    /// Raises the phase to `phase` (a lower one changes nothing) and wakes every task that filed a
    /// waker.
    pub fn raise(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::SeqCst);
        // Woken outside the lock, so that nothing a wake does can come back to it.
        let filed: Vec<Waker> = (self.lock().slots.iter())
            .filter_map(|slot| match slot {
                Slot::Filed(waker) => Some(waker.clone()),
                Slot::Free(_) => None,
            })
            .collect();
        for waker in filed {
            waker.wake();
        }
    }

    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Running,
            1 => Phase::Shutdown,
            _ => Phase::Kill,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Waiters> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A task's place in its server's [`Signals`]: its slot is freed when this is dropped.
pub(crate) struct Listener {
    signals: Arc<Signals>,
    /// The slot and the waker filed in it; `None` until the first poll.
    filed: Option<(usize, Waker)>,
}

impl Listener {
    pub fn new(signals: Arc<Signals>) -> Self {
        Listener {
            signals,
            filed: None,
        }
    }

    /// The phase now, with `cx`'s waker filed to be woken when it rises. The list is locked only the
    /// first time, or when the task's waker changed: otherwise this is one atomic load.
    pub fn poll(&mut self, cx: &mut Context<'_>) -> Phase {
        match &mut self.filed {
            Some((_, waker)) if waker.will_wake(cx.waker()) => {}
            Some((key, waker)) => {
                waker.clone_from(cx.waker());
                self.signals.lock().slots[*key] = Slot::Filed(waker.clone());
            }
            None => {
                let waker = cx.waker().clone();
                let mut waiters = self.signals.lock();
                let key = waiters.free;
                let slot = Slot::Filed(waker.clone());
                if key == waiters.slots.len() {
                    waiters.slots.push(slot);
                    waiters.free = key + 1;
                } else {
                    let Slot::Free(next) = std::mem::replace(&mut waiters.slots[key], slot) else {
                        unreachable!("the free list links free slots only");
                    };
                    waiters.free = next;
                }
                drop(waiters);
                self.filed = Some((key, waker));
            }
        }
        self.signals.phase()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some((key, _)) = self.filed.take() {
            let mut waiters = self.signals.lock();
            waiters.slots[key] = Slot::Free(waiters.free);
            waiters.free = key;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn raising_wakes_every_filed_task_and_freed_slots_are_reused() {
        let signals = Arc::new(Signals::default());
        let counts: Vec<Arc<Count>> = (0..3)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let wakers: Vec<Waker> = counts.iter().map(|c| Waker::from(c.clone())).collect();
        let mut listeners: Vec<Listener> = (0..3).map(|_| Listener::new(signals.clone())).collect();
        for (l, w) in listeners.iter_mut().zip(&wakers) {
            assert_eq!(l.poll(&mut Context::from_waker(w)), Phase::Running);
        }
        // The second task's slot is freed and taken again by a fourth listener.
        drop(listeners.remove(1));
        let mut again = Listener::new(signals.clone());
        again.poll(&mut Context::from_waker(&wakers[1]));
        assert_eq!(again.filed.as_ref().map(|f| f.0), Some(1));
        assert_eq!(signals.lock().slots.len(), 3);

        signals.raise(Phase::Shutdown);
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, [1, 1, 1]);
        assert_eq!(
            listeners[0].poll(&mut Context::from_waker(&wakers[0])),
            Phase::Shutdown
        );
        signals.raise(Phase::Kill);
        signals.raise(Phase::Shutdown); // never lowers the phase
        assert_eq!(
            again.poll(&mut Context::from_waker(&wakers[1])),
            Phase::Kill
        );
        drop((listeners, again));
        let waiters = signals.lock();
        assert!(waiters.slots.iter().all(|s| matches!(s, Slot::Free(_))));
    }
}
