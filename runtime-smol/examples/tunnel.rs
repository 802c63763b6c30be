//! One end of the `tcp2ws → ws2tcp` tunnel (the wsbridge.v1 protocol) on the smol runtime, as its own
//! process: the counterpart of `wsbridge tcp2ws --half-close eof` and `wsbridge ws2tcp --target`, used
//! by `scripts/bench.sh` to compare the runtimes with one listener per process on each side.
//!
//! ```sh
//! cargo run --release -p wsbridge-smol --example tunnel -- ws2tcp --listen 127.0.0.1:8080 --target 127.0.0.1:22
//! cargo run --release -p wsbridge-smol --example tunnel -- tcp2ws --listen 127.0.0.1:2222 --backend ws://127.0.0.1:8080/
//! ```
//!
//! Flags: `--listen ADDR`, `--backend URL` (tcp2ws), `--target HOST:PORT` (ws2tcp),
//! `--max-connections N` (default 10000), `--threads N` (threads running the executor, default 1).
//! Every other setting is the binary's default. Runs until killed.

use std::io;
use std::sync::Arc;
use std::thread;

use smol::{future, Executor};
use wsbridge_core::tcp2ws::{HalfClose, Tcp2WsConfig};
use wsbridge_core::url::WsUrl;
use wsbridge_core::ws2tcp::{StaticTarget, Ws2TcpConfig};
use wsbridge_smol::{ListenerSpec, RuntimeOptions, Server};

fn usage(msg: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{msg}\nusage: tunnel tcp2ws|ws2tcp --listen ADDR (--backend URL | --target HOST:PORT) [--max-connections N] [--threads N]"),
    )
}

fn main() -> io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().ok_or_else(|| usage("no mode"))?;
    let (mut listen, mut backend, mut target) = (None, None, None);
    let (mut max_connections, mut threads) = (10_000usize, 1usize);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| usage(&format!("{flag} needs a value")))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|_| usage(&format!("{flag} {value:?}")))
        };
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--backend" => backend = Some(WsUrl::parse(&value).map_err(|e| usage(&e.to_string()))?),
            "--target" => target = Some(StaticTarget::parse(&value).map_err(|e| usage(&e))?),
            "--max-connections" => max_connections = number()?,
            "--threads" => threads = number()?.max(1),
            _ => return Err(usage(&format!("unknown flag {flag}"))),
        }
    }
    let listen = listen.ok_or_else(|| usage("--listen is required"))?;
    let spec = match mode.as_str() {
        "tcp2ws" => {
            let backend = backend.ok_or_else(|| usage("tcp2ws needs --backend"))?;
            let mut cfg = Tcp2WsConfig::new(&listen, backend);
            // The tunnel keeps half-close: a client's FIN travels as `eof`.
            cfg.half_close = HalfClose::Eof;
            ListenerSpec::tcp2ws(cfg)?
        }
        "ws2tcp" => {
            let mut cfg = Ws2TcpConfig::new(&listen);
            cfg.target = Some(target.ok_or_else(|| usage("ws2tcp needs --target"))?);
            ListenerSpec::ws2tcp(cfg)?
        }
        m => return Err(usage(&format!("unknown mode {m:?}"))),
    };
    let server = Server::bind(vec![spec], RuntimeOptions { max_connections })?;
    println!("{mode} listening on {:?}", server.local_addrs());

    let ex: Arc<Executor<'static>> = Arc::new(Executor::new());
    for _ in 1..threads {
        let ex = ex.clone();
        thread::spawn(move || smol::block_on(ex.run(future::pending::<()>())));
    }
    smol::block_on(ex.run(server.run(&ex)))
}
