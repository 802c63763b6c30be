//! The `ws2tcp` target policy: rule parsing round-trips, decisions match a reference, a deny always
//! wins, and the default policy never allows a special address in any spelling.
//! The body and the input format: `wsbridge_core::fuzzing::target_policy`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::target_policy(data));
