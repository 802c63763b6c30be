//! The `wsbridge` binary, built inside this package so the end-to-end tests can run it as a process
//! (`env!("CARGO_BIN_EXE_wsbridge_cli")` only names binaries of the test's own package): the same
//! `main` as `runtime-mio/src/bin/wsbridge.rs`, nothing added.

fn main() {
    std::process::exit(wsbridge_mio::cli::main());
}
