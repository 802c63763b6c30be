//! # wsbridge-core
//!
//! The sans-IO heart of wsbridge: an RFC 6455 WebSocket engine, an HTTP/1.1 head codec, and (in later
//! modules) the bridge sessions of each mode. Nothing here touches a socket, reads the clock, draws
//! randomness or spawns a thread:
//!
//! - bytes come in through `handle_*` methods and go out through `poll_*` methods, which the driver calls
//!   after every input until they return nothing;
//! - time comes in as an [`std::time::Instant`] argument, and deadlines go out through `poll_timeout`;
//! - randomness comes from an injected [`Entropy`].
//!
//! Every buffer is bounded by a field of a config struct, and binary payload is streamed as
//! [`bytes::Bytes`] chunks that share the buffer they were read into.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod config;
pub mod deadline;
pub mod entropy;
pub(crate) mod front;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod proxy;
pub mod session;
pub mod tcp2ws;
#[doc(hidden)]
pub mod testing;
pub mod tls;
pub mod url;
pub(crate) mod wire;
pub mod ws;
pub mod ws2http;
pub mod ws2tcp;

pub use config::WsConfig;
pub use entropy::{CounterEntropy, Entropy};
