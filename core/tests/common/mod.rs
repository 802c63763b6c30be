//! What every session test harness needs: the origin of virtual time, and draining a session's leg or a
//! scripted peer's WebSocket the way a runtime would.

use std::io::IoSlice;
use std::time::Instant;

use wsbridge_core::session::{Leg, Session};
use wsbridge_core::ws::WebSocket;

/// The origin of virtual time: tests only ever add durations to it.
#[allow(clippy::disallowed_methods)]
pub fn epoch() -> Instant {
    Instant::now()
}

/// Everything the session wants to write on `leg`, taken in full as a runtime's writes would.
pub fn take<S: Session + ?Sized>(s: &mut S, leg: Leg, now: Instant) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut slots = [IoSlice::new(&[]); 8];
        let k = s.slices(leg, &mut slots);
        let n: usize = slots[..k].iter().map(|s| s.len()).sum();
        if n == 0 {
            return out;
        }
        for sl in &slots[..k] {
            out.extend_from_slice(sl);
        }
        s.advance(leg, n, now);
    }
}

/// Everything a scripted peer's WebSocket wants to write.
pub fn drain_ws(ws: &mut WebSocket) -> Vec<u8> {
    let mut out = Vec::new();
    while ws.wants_write() {
        let mut slots = [IoSlice::new(&[]); 8];
        let k = ws.slices(&mut slots);
        let n: usize = slots[..k].iter().map(|s| s.len()).sum();
        for s in &slots[..k] {
            out.extend_from_slice(s);
        }
        ws.advance(n);
    }
    out
}
