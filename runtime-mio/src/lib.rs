//! # wsbridge-mio
//!
//! wsbridge on single-threaded mio event loops, and the `wsbridge` binary. No protocol logic lives here:
//! the sessions of `wsbridge-core` decide everything.
//!
//! - [`driver`]: [`Server`](driver::Server), N event loops driving one session per accepted connection;
//! - [`cli`]: the `wsbridge` command line (flags, environment variables, config building);
//! - [`config_file`]: `--config FILE.toml` (several listeners in one process) and `check-config`;
//! - [`log`]: a tiny leveled `key=value` logger on stderr;
//! - [`metrics`]: the server's Prometheus counters and the `/metrics` + `/healthz` responder;
//! - [`signals`]: SIGTERM / SIGINT → graceful drain for the binary, SIGHUP → certificate reload;
//! - [`tls_reload`]: the listeners' reloadable certificates (SIGHUP, `--tls-reload-interval`);
//! - [`io`]: reading what a non-blocking socket has into a reused buffer, and writing a sans-IO output
//!   queue with vectored writes until the socket would block;
//! - [`entropy`]: [`OsEntropy`], the core's [`Entropy`](wsbridge_core::Entropy) backed by the OS CSPRNG.
//!
//! The examples `echo_server` and `echo_client` (Autobahn conformance peers) show the minimal loop.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
pub mod config_file;
pub mod driver;
pub mod entropy;
pub mod io;
pub mod log;
pub mod metrics;
pub mod pem;
pub mod signals;
pub mod tls_reload;

pub use entropy::OsEntropy;
pub use io::{read_available, write_from, Flush, Outgoing, ReadOutcome};
