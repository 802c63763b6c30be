//! Every JSON control and handshake message of the three modes, the URLs they carry and the
//! `ws2http` upgrade's URL extraction: no panic, and what parses round-trips.
//! The body and the input format: `wsbridge_core::fuzzing::control_json`.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::control_json(data, Instant::now()));
