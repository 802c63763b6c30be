//! Test support for the end-to-end tests of wsbridge on 127.0.0.1.
//!
//! - [`blocking_ws`]: [`blocking_ws::BlockingWs`], the sans-IO engine driven over a blocking
//!   `std::net::TcpStream`, in either role, for interop tests against independent peers.

pub mod blocking_ws;
