//! [`QuietDeadline`] on virtual time.

use std::time::{Duration, Instant};

use wsbridge_core::deadline::QuietDeadline;

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
