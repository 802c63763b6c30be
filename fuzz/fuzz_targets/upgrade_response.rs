//! The client side of the opening handshake: head reader and validation of the server's answer.
//! The body and the input format: `wsbridge_core::fuzzing::upgrade_response`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::upgrade_response(data));
