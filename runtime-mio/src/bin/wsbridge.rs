//! The `wsbridge` binary: see [`wsbridge_mio::cli`] and `wsbridge --help`.
#![deny(unsafe_code)]

fn main() {
    std::process::exit(wsbridge_mio::cli::main());
}
