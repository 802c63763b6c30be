//! A whole `ws2tcp` bridge session driven by operations decoded from the input: both peers, the
//! resolver, short writes, backpressure and virtual time. The body and the input format:
//! `wsbridge_core::fuzzing::ws2tcp_session`.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::ws2tcp_session(data, Instant::now()));
