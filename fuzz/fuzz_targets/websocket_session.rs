//! A whole WebSocket endpoint, either role, driven by a sequence of operations decoded from the input.
//! The body and the input format: `wsbridge_core::fuzzing::websocket_session`.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::websocket_session(data, Instant::now()));
