//! SIGTERM and SIGINT for the `wsbridge` binary: the first one drains the server gracefully
//! ([`Server::drain`]), a second one exits at once. SIGHUP reloads the listeners' certificates
//! ([`crate::tls_reload`]) and never stops anything (not even during a drain).
//!
//! Why `signal-hook`'s blocking iterator, not `signal-hook-mio` or a hand-made self-pipe: signals are
//! the process's business, not an event loop's — the loops belong to the driver, which knows nothing of
//! the process it runs in (a library user may embed it and stop it however they like). So one thread,
//! the main thread that has nothing else to do, waits for signals. `signal-hook`'s handler only writes
//! a byte to a self-pipe (async-signal-safe), which is exactly what a hand-written self-pipe would do,
//! but without `unsafe` in this crate (`sigaction` through `libc`), and it is the maintained crate the
//! Rust ecosystem uses for this.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::driver::Server;
use crate::tls_reload::{reload_all, CertStore};

/// The signals that stop the server (and SIGHUP, which reloads certificates), caught from
/// [`StopSignals::install`] on.
pub struct StopSignals(Signals, Vec<Arc<CertStore>>);

impl std::fmt::Debug for StopSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopSignals")
    }
}

impl StopSignals {
    /// Catches SIGTERM, SIGINT and SIGHUP from now on (install it before the server starts, so an early
    /// signal is not the default "terminate now").
    pub fn install() -> io::Result<StopSignals> {
        Ok(StopSignals(
            Signals::new([SIGTERM, SIGINT, SIGHUP])?,
            Vec::new(),
        ))
    }

    /// SIGHUP reloads every one of `stores` ([`CertStore::reload`], each logged). Without stores
    /// SIGHUP is caught and ignored.
    pub fn reloading(mut self, stores: Vec<Arc<CertStore>>) -> StopSignals {
        self.1 = stores;
        self
    }

    /// Blocks until a stop signal came and the graceful drain it started has finished (then returns), or
    /// until a second stop signal, which ends the process at once with exit code 128 + the signal
    /// number. SIGHUP, at any time, only reloads the certificates (see [`StopSignals::reloading`]).
    pub fn serve(mut self, server: &Server, drain_timeout: Duration) {
        let handle = self.0.handle();
        std::thread::scope(|scope| {
            let mut draining = false;
            for signal in self.0.forever() {
                if signal == SIGHUP {
                    reload_all(&self.1, "sighup");
                    continue;
                }
                let name = signal_hook::low_level::signal_name(signal).unwrap_or("signal");
                if draining {
                    crate::log!(
                        Warn,
                        "event=exit signal={name} reason=\"second signal: not waiting for the drain\" active={}",
                        server.active_connections()
                    );
                    std::process::exit(128 + signal);
                }
                draining = true;
                crate::log!(
                    Info,
                    "event=draining signal={name} drain_timeout_s={} active={}",
                    drain_timeout.as_secs_f64(),
                    server.active_connections()
                );
                let handle = handle.clone();
                scope.spawn(move || {
                    let started = Instant::now();
                    server.drain(drain_timeout);
                    crate::log!(
                        Info,
                        "event=drained duration_ms={}",
                        started.elapsed().as_millis()
                    );
                    handle.close(); // ends `forever`
                });
            }
        });
    }
}
