//! Support for the end-to-end tests: peers, certificates and bridges on 127.0.0.1.

pub mod backend;
pub mod blocking_ws;
pub mod bridge;
pub mod certs;
pub mod data;
pub mod hostile;
pub mod mail;
pub mod process;
