//! The chunked body decoder: any chunking and feeding of a body decodes to it, within the cap.
//! The body and the input format: `wsbridge_core::fuzzing::chunked_body`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::chunked_body(data));
