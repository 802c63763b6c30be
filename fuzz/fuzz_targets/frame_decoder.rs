//! The streaming frame decoder on arbitrary bytes, in arbitrary chunks, against a shadow reading.
//! The body and the input format: `wsbridge_core::fuzzing::frame_decoder`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| wsbridge_core::fuzzing::frame_decoder(data));
