//! `tcp2ws`, the edge bridge: each accepted TCP client (plain, implicit TLS or STARTTLS) gets its own
//! WebSocket to a fixed backend. The wire contract is DESIGN §1.1:
//!
//! - the first frame to the backend is the JSON `bridge_hello` (who connected), and the same facts go in the
//!   upgrade request's `X-Forwarded-*` / `X-Wsbridge-*` headers;
//! - Binary frames carry data both ways, Text frames carry JSON control (`start_tls`, `tls_started`,
//!   `tls_failed`, `eof`);
//! - the subprotocol `wsbridge.v1` is always offered, so a `ws2tcp` on the far side can speak it back.

pub mod config;
pub mod control;
pub mod session;

pub use config::{HalfClose, ListenerTls, Tcp2WsConfig};
pub use session::{Tcp2WsFactory, Tcp2WsSession};
