//! The PROXY protocol reader (v1 and v2, any chunking) and the `ProxyProtocol` session wrapper in
//! front of `tcp2ws`. The body and the input format: `wsbridge_core::fuzzing::proxy_header`.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::proxy_header(data, Instant::now()));
