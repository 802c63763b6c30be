//! A whole `tcp2ws` bridge session driven by operations decoded from the input: both peers, the
//! resolver, short writes, backpressure and virtual time. The body and the input format:
//! `wsbridge_core::fuzzing::tcp2ws_session`.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::tcp2ws_session(data, Instant::now()));
