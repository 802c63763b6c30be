//! Embedding wsbridge in a smol program: a `ws2tcp` gateway and a `tcp2ws` edge on **one** executor, next
//! to the program's own tasks.
//!
//! ```text
//!  demo client ──TCP──▶ tcp2ws edge ──WebSocket (wsbridge.v1)──▶ ws2tcp gateway ──TCP──▶ echo service
//!  (own task)           (wsbridge-smol)                          (wsbridge-smol)         (own task)
//! ```
//!
//! The edge's backend is the gateway, and the gateway's static `--target` is an echo service the program
//! runs itself, so the two listeners form a complete TCP-over-WebSocket tunnel on 127.0.0.1. A ticker
//! task prints the connections open on each listener when they change; a few demo clients push bytes through the tunnel
//! and check the echo; then both servers are stopped gracefully.
//!
//! ```sh
//! cargo run -p wsbridge-smol --example embedded              # the demo: runs, checks, stops
//! cargo run -p wsbridge-smol --example embedded -- --serve   # keep serving; try `nc <edge address>`
//! ```

use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{future, Async, Executor, Timer};
use wsbridge_core::tcp2ws::{HalfClose, Tcp2WsConfig};
use wsbridge_core::url::WsUrl;
use wsbridge_core::ws2tcp::{StaticTarget, Ws2TcpConfig};
use wsbridge_smol::{ListenerSpec, RuntimeOptions, Server};

/// Demo clients, and the bytes each sends through the tunnel.
const CLIENTS: usize = 4;
const BYTES: usize = 1 << 20;

fn main() -> io::Result<()> {
    let serve = std::env::args().any(|a| a == "--serve");
    let ex = Arc::new(Executor::new());

    // The program's own service: TCP echo, the target behind the gateway.
    let echo = Async::<TcpListener>::bind(([127, 0, 0, 1], 0))?;
    let echo_addr = echo.get_ref().local_addr()?;

    // The gateway: WebSocket in, TCP out to the fixed target (static mode accepts the tunnel protocol).
    let mut gateway_cfg = Ws2TcpConfig::new("127.0.0.1:0");
    gateway_cfg.target = Some(
        StaticTarget::parse(&echo_addr.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
    );
    let gateway = Server::bind(
        vec![ListenerSpec::ws2tcp(gateway_cfg)?],
        RuntimeOptions::default(),
    )?;
    let gateway_addr = gateway.local_addrs()[0];

    // The edge: TCP in, one WebSocket per client to the gateway.
    let backend = WsUrl::parse(&format!("ws://{gateway_addr}/"))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut edge_cfg = Tcp2WsConfig::new("127.0.0.1:0", backend);
    // A client's FIN travels as the tunnel's `eof`, so the echo's tail still comes back after it.
    edge_cfg.half_close = HalfClose::Eof;
    let edge = Server::bind(
        vec![ListenerSpec::tcp2ws(edge_cfg)?],
        RuntimeOptions {
            max_connections: 1000,
        },
    )?;
    let edge_addr = edge.local_addrs()[0];
    println!("echo service on {echo_addr}");
    println!("ws2tcp gateway on ws://{gateway_addr}/ (target {echo_addr})");
    println!("tcp2ws edge on {edge_addr} (backend ws://{gateway_addr}/)");

    let echo_task = ex.spawn(serve_echo(echo, ex.clone()));
    smol::block_on(ex.run(async {
        let tick = async {
            // The program's own periodic task: reports the open connections whenever they change.
            let mut last = None;
            loop {
                Timer::after(Duration::from_millis(50)).await;
                let now = (edge.active_connections(), gateway.active_connections());
                if last != Some(now) {
                    println!("open connections: edge {}, gateway {}", now.0, now.1);
                    last = Some(now);
                }
            }
        };
        let work = async {
            if serve {
                println!("serving until killed (Ctrl-C)");
                future::pending::<()>().await;
            }
            let clients: Vec<_> = (0..CLIENTS)
                .map(|i| ex.spawn(demo_client(edge_addr, i)))
                .collect();
            for c in clients {
                c.await?;
            }
            println!("every client got its {BYTES} bytes back; stopping gracefully");
            let (left_edge, left_gateway) = future::zip(
                edge.stop(Duration::from_secs(2)),
                gateway.stop(Duration::from_secs(2)),
            )
            .await;
            println!(
                "stopped: {left_edge} edge and {left_gateway} gateway sessions had to be ended"
            );
            io::Result::Ok(())
        };
        let bridges = async {
            let (e, g) = future::zip(edge.run(&ex), gateway.run(&ex)).await;
            e.and(g)?;
            // Stopped: wait for the other work to finish before returning.
            future::pending::<io::Result<()>>().await
        };
        future::or(work, future::or(bridges, tick)).await
    }))?;
    drop(echo_task);
    Ok(())
}

/// A TCP echo service: each connection is copied back to itself until EOF, on its own task.
async fn serve_echo(listener: Async<TcpListener>, ex: Arc<Executor<'static>>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        ex.spawn(async move {
            let mut w = &stream;
            let _ = smol::io::copy(&stream, &mut w).await;
            let _ = stream.get_ref().shutdown(Shutdown::Write);
        })
        .detach();
    }
}

/// Sends `BYTES` through the tunnel, half-closes, and checks every byte comes back.
async fn demo_client(edge: std::net::SocketAddr, i: usize) -> io::Result<()> {
    let stream = Async::<TcpStream>::connect(edge).await?;
    let data: Vec<u8> = (0..BYTES).map(|j| (j * 31 + i) as u8).collect();
    let writer = async {
        let mut w = &stream;
        w.write_all(&data).await?;
        stream.get_ref().shutdown(Shutdown::Write)
    };
    let reader = async {
        let mut r = &stream;
        let mut back = Vec::with_capacity(BYTES);
        r.read_to_end(&mut back).await?;
        Ok::<_, io::Error>(back)
    };
    let (wrote, back) = future::zip(writer, reader).await;
    wrote?;
    let back = back?;
    if back != data {
        return Err(io::Error::other(format!(
            "client {i}: {} bytes came back, the first {} of them intact (of {BYTES})",
            back.len(),
            back.iter().zip(&data).take_while(|(a, b)| a == b).count()
        )));
    }
    println!("client {i}: {BYTES} bytes through the tunnel and back");
    Ok(())
}
