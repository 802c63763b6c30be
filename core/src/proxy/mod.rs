//! The PROXY protocol (HAProxy's, v1 and v2): how a load balancer in front of a listener tells it who
//! the client is, and how `ws2tcp` tells its target.
//!
//! - [`header`]: the sans-IO parser ([`parse`], the incremental [`HeaderReader`]) and the writers
//!   ([`encode_v1`], [`encode_v2`]);
//! - [`accept`]: [`ProxyProtocol`], a [`crate::session::SessionFactory`] wrapper that makes any
//!   listener read the header first and gives the mode's session the real client address
//!   (`--accept-proxy-protocol`).
//!
//! Sending is `ws2tcp`'s business (`--send-proxy-protocol`, see [`crate::ws2tcp::Ws2TcpConfig`]).

pub mod accept;
pub mod header;

pub use accept::{ProxyAccept, ProxyProtocol, ProxySession};
pub use header::{
    encode, encode_v1, encode_v2, parse, Addresses, HeaderReader, ProxyError, ProxyHeader, Version,
};
