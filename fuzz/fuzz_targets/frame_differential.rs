//! Our frame decoder against tungstenite's on the same client bytes: valid frames decode the same on both
//! sides, and what tungstenite accepts we accept. The body and the input format (shared with the corpus
//! replay): `core/tests/fuzzing/frame_differential.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../core/tests/fuzzing/frame_differential.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::frame_differential(data));
