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

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::disallowed_methods)]
    fn epoch() -> Instant {
        Instant::now()
    }

    #[test]
    fn passes_after_quiet_and_moves_on_progress() {
        let t0 = epoch();
        let q = Duration::from_secs(5);
        let mut d = QuietDeadline::new(t0, q);
        assert!(!d.expired(t0 + Duration::from_secs(4)));
        d.progress();
        assert!(!d.expired(t0 + q), "progress moves the deadline");
        assert_eq!(d.deadline(), t0 + q + q);
        assert!(!d.expired(t0 + q + Duration::from_secs(4)));
        assert!(d.expired(t0 + q + q), "quiet since then: passes");
    }
}
