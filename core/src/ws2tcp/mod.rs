//! `ws2tcp`, the gateway: each accepted WebSocket client is relayed to a TCP (or TLS) target, chosen per
//! connection by the Socket2Web JSON handshake (dynamic mode) or fixed by `--target` (static mode,
//! websockify compatible, and the far end of the `tcp2ws → ws2tcp` tunnel). DESIGN §1.2:
//!
//! - [`protocol`]: the Socket2Web greeting, handshake and status messages, byte for byte;
//! - [`policy`]: which targets dynamic clients may reach (`--allow`, `--deny`, the special ranges);
//! - [`config`]: the listener's settings (and the static pages of `--console`);
//! - [`session`]: [`Ws2TcpSession`], one client and its target.

pub mod config;
pub mod policy;
pub mod protocol;
pub mod session;

pub use config::{StaticPage, StaticTarget, Ws2TcpConfig};
pub use policy::TargetPolicy;
pub use session::{Ws2TcpFactory, Ws2TcpSession};
