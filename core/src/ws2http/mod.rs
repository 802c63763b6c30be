//! `ws2http`, the webhook bridge, wire-compatible with fermyon/websocket-bridge (DESIGN §1.3): each
//! WebSocket client message becomes an HTTP POST to an allow-listed backend URL, and the backend
//! answers through a callback URL (`POST /send/<uuid>`).
//!
//! - [`protocol`]: header names, content types, callback ids, CORS;
//! - [`config`]: the listener's settings and the [`Allowlist`];
//! - [`session`]: [`Ws2HttpSession`], one accepted connection (a WebSocket client, a callback, or a
//!   plain request).

mod backend;
pub mod config;
pub mod protocol;
pub mod session;

pub use config::{Allowlist, Ws2HttpConfig};
pub use session::{Ws2HttpFactory, Ws2HttpSession};
