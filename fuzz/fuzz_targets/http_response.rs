//! The HTTP/1.1 client codec of `ws2http`: a backend's response, head and body (length, chunked, close).
//! The body and the input format: `wsbridge_core::fuzzing::http_response`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::http_response(data));
