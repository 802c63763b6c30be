//! [`QuietDeadline`]: a deadline that passes only after a stretch without progress.
//!
//! Used wherever a connection is winding down and must neither hang forever nor cut off a peer that is
//! still delivering: waiting for the peer's Close, flushing the last bytes to a slow reader.

use std::time::{Duration, Instant};

/// Passes once `quiet` has gone by with no [`QuietDeadline::progress`]. Checked lazily: a deadline that
/// comes due after progress was seen is moved to `now + quiet` instead of passing, so it passes at most
/// `2 × quiet` after the last progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietDeadline {
    deadline: Instant,
    quiet: Duration,
    progressed: bool,
}

impl QuietDeadline {
    /// Starts at `now`.
    pub fn new(now: Instant, quiet: Duration) -> Self {
        QuietDeadline {
            deadline: now + quiet,
            quiet,
            progressed: false,
        }
    }

    /// Something moved: the wait goes on.
    pub fn progress(&mut self) {
        self.progressed = true;
    }

    /// When to check again.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether the deadline has passed quietly at `now`; re-arms it if there was progress.
    pub fn expired(&mut self, now: Instant) -> bool {
        if now < self.deadline {
            return false;
        }
        if self.progressed {
            self.progressed = false;
            self.deadline = now + self.quiet;
            return false;
        }
        true
    }
}
