//! # wsbridge-smol
//!
//! wsbridge on smol / async-io, for embedding a bridge in a program that already runs a smol executor.
//! Like the mio runtime it holds no protocol logic: a
//! [`SessionFactory`](wsbridge_core::session::SessionFactory) from `wsbridge-core` makes one
//! [`Session`](wsbridge_core::session::Session) per accepted connection, and this crate only moves
//! bytes, dials, resolves names and keeps time for it (DESIGN §2).
//!
//! - [`Server::bind`] binds listeners for any mode — [`ListenerSpec::tcp2ws`] builds one from the same
//!   [`Tcp2WsConfig`](wsbridge_core::tcp2ws::Tcp2WsConfig) the `wsbridge` binary uses,
//!   [`ListenerSpec::ws2tcp`] from its [`Ws2TcpConfig`](wsbridge_core::ws2tcp::Ws2TcpConfig); any other
//!   mode is a [`ListenerSpec::new`] with that mode's factory;
//! - [`Server::run`] accepts on **your** executor and spawns one task per session there;
//! - [`Server::stop`] stops accepting, lets sessions finish until a deadline, then ends the rest.
//!
//! Each session task owns its session, both sockets and one timer, and waits on all of them (and on a
//! pending resolve or connect) in one hand-written poll: no `Arc<Mutex<Session>>`, and no write ever
//! awaits while reads wait behind it. Names are resolved with the system resolver on smol's blocking
//! pool; connects are async-io's.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use smol::Executor;
//! use wsbridge_core::tcp2ws::Tcp2WsConfig;
//! use wsbridge_core::url::WsUrl;
//! use wsbridge_smol::{ListenerSpec, RuntimeOptions, Server};
//!
//! # fn main() -> std::io::Result<()> {
//! let backend = WsUrl::parse("ws://127.0.0.1:8080/pop3").expect("a ws:// URL");
//! let edge = ListenerSpec::tcp2ws(Tcp2WsConfig::new("127.0.0.1:1100", backend))?;
//! let server = Server::bind(vec![edge], RuntimeOptions::default())?;
//! println!("listening on {:?}", server.local_addrs());
//!
//! let ex = Executor::new();
//! smol::block_on(ex.run(async {
//!     // Accept for a minute next to whatever else runs on `ex`, then drain for up to 5 s.
//!     let stopper = async {
//!         smol::Timer::after(Duration::from_secs(60)).await;
//!         server.stop(Duration::from_secs(5)).await;
//!     };
//!     let (ran, ()) = smol::future::zip(server.run(&ex), stopper).await;
//!     ran
//! }))
//! # }
//! ```
//!
//! The example `embedded` (`cargo run -p wsbridge-smol --example embedded`) runs a `ws2tcp` gateway and
//! a `tcp2ws` edge as one TCP-over-WebSocket tunnel, next to tasks of its own, on one executor.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod registry;
mod server;
mod session_task;
mod signals;
#[cfg(test)]
mod tests;

pub use server::{ListenerSpec, RuntimeOptions, Server};
pub use wsbridge_core::entropy::OsEntropy;
