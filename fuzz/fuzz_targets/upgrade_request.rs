//! The server side of the opening handshake: head reader, upgrade validation, 101 response.
//! The body and the input format: `wsbridge_core::fuzzing::upgrade_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::upgrade_request(data));
