//! Replays the committed cargo-fuzz corpus (`fuzz/corpus/<target>/`) on stable, through the very functions
//! the fuzz targets call (`wsbridge_core::fuzzing`), so every input the fuzzer kept, and every crash it
//! found (whose input is added to the corpus), stays a regression test of the normal run.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use wsbridge_core::fuzzing;

/// The origin of virtual time for `websocket_session`.
#[allow(clippy::disallowed_methods)]
fn epoch() -> Instant {
    Instant::now()
}

/// Runs `body` on every file of the target's corpus. Fails if the corpus is missing or empty (a replay of
/// nothing proves nothing) and names every input that panicked.
fn replay(target: &str, body: impl Fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {} is missing: {e}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable corpus directory").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).expect("readable corpus file");
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    eprintln!("replayed {} {target} inputs", files.len());
    assert!(
        failed.is_empty(),
        "{} of {} {target} inputs failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn frame_decoder_corpus() {
    replay("frame_decoder", fuzzing::frame_decoder);
}

#[test]
fn websocket_session_corpus() {
    let start = epoch();
    replay("websocket_session", |data| {
        fuzzing::websocket_session(data, start)
    });
}

#[test]
fn upgrade_request_corpus() {
    replay("upgrade_request", fuzzing::upgrade_request);
}

#[test]
fn upgrade_response_corpus() {
    replay("upgrade_response", fuzzing::upgrade_response);
}

#[test]
fn http_response_corpus() {
    replay("http_response", fuzzing::http_response);
}

#[test]
fn tcp2ws_session_corpus() {
    let start = epoch();
    replay("tcp2ws_session", |data| {
        fuzzing::tcp2ws_session(data, start)
    });
}

#[test]
fn ws2tcp_session_corpus() {
    let start = epoch();
    replay("ws2tcp_session", |data| {
        fuzzing::ws2tcp_session(data, start)
    });
}

#[test]
fn ws2http_session_corpus() {
    let start = epoch();
    replay("ws2http_session", |data| {
        fuzzing::ws2http_session(data, start)
    });
}

#[test]
fn control_json_corpus() {
    let start = epoch();
    replay("control_json", |data| fuzzing::control_json(data, start));
}

#[test]
fn target_policy_corpus() {
    replay("target_policy", fuzzing::target_policy);
}

#[test]
fn chunked_body_corpus() {
    replay("chunked_body", fuzzing::chunked_body);
}

#[path = "fuzzing/frame_differential.rs"]
mod frame_differential;

#[test]
fn frame_differential_corpus() {
    replay("frame_differential", frame_differential::frame_differential);
}

#[test]
fn proxy_header_corpus() {
    let start = epoch();
    replay("proxy_header", |data| fuzzing::proxy_header(data, start));
}
