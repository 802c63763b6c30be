//! Echo-latency load generator for `scripts/bench.sh`: one TCP connection through whatever listens on
//! `--connect` (a relay chain, or the target itself for the direct baseline), `--size`-byte messages,
//! strictly one request in flight. This process is both ends: the echo target on `--target-listen`
//! and the client, so every echo is checked byte for byte.
//!
//! ```text
//! bench_latency --target-listen 127.0.0.1:T --connect 127.0.0.1:A [--count 20000] [--warmup 2000]
//!               [--size 64] [--system NAME] [--pinned yes|no] [--timeout 60]
//! ```
//!
//! Prints one line
//! `latency system=… pinned=… size=… count=… p50_us=… p99_us=… p999_us=… max_us=… verified=yes`.
//! Percentiles are exact (every round trip is kept, nearest rank), not histogram buckets. Both ends
//! set `TCP_NODELAY`. Pinning is the caller's business (`taskset -c 0` on every process): this only
//! labels the line.

mod bench_util {
    pub mod flags;
    pub mod stats;
}

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use bench_util::flags::{die, Flags};
use bench_util::stats::quantile;

fn main() {
    let f = Flags::from_env();
    let target: SocketAddr = f
        .req("target-listen")
        .parse()
        .unwrap_or_else(|_| die("--target-listen: not an address"));
    let connect: SocketAddr = f
        .req("connect")
        .parse()
        .unwrap_or_else(|_| die("--connect: not an address"));
    let count = f.num("count", 20_000).max(1) as usize;
    let warmup = f.num("warmup", 2_000) as usize;
    let size = f.num("size", 64).clamp(1, 1 << 20) as usize;
    let system = f.str("system", "?");
    let pinned = f.str("pinned", "no");
    let limit = Duration::from_secs(f.num("timeout", 60));

    let listener =
        TcpListener::bind(target).unwrap_or_else(|e| die(&format!("bind {target}: {e}")));
    let echo = thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(limit))?;
        let mut buf = vec![0u8; 64 << 10];
        let mut echoed = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(echoed);
            }
            s.write_all(&buf[..n])?;
            echoed += n as u64;
        }
    });

    let deadline = Instant::now() + limit;
    let mut s =
        TcpStream::connect(connect).unwrap_or_else(|e| die(&format!("connect {connect}: {e}")));
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(limit)).ok();
    let mut msg = vec![0u8; size];
    let mut back = vec![0u8; size];
    let mut samples = Vec::with_capacity(count);
    for i in 0..warmup + count {
        if Instant::now() > deadline {
            die(&format!(
                "{system}: {i} round trips did not finish within {limit:?}"
            ));
        }
        // A different message each time, so a stale or misrouted echo cannot pass.
        for (j, b) in msg.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(31).wrapping_add(j as u8);
        }
        let t0 = Instant::now();
        s.write_all(&msg)
            .unwrap_or_else(|e| die(&format!("{system}: write: {e}")));
        s.read_exact(&mut back)
            .unwrap_or_else(|e| die(&format!("{system}: read echo {i}: {e}")));
        let rtt = t0.elapsed();
        if back != msg {
            die(&format!("{system}: echo {i} differs from what was sent"));
        }
        if i >= warmup {
            samples.push(rtt.as_nanos() as u64);
        }
    }
    s.shutdown(std::net::Shutdown::Write).ok();
    let echoed = match echo.join() {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => die(&format!("{system}: echo target: {e}")),
        Err(_) => die("echo target panicked"),
    };
    let expected = ((warmup + count) * size) as u64;
    if echoed != expected {
        die(&format!(
            "{system}: the target echoed {echoed} bytes, expected {expected}"
        ));
    }
    samples.sort_unstable();
    let us = |q: f64| quantile(&samples, q) as f64 / 1000.0;
    println!(
        "latency system={system} pinned={pinned} size={size} count={count} p50_us={:.1} p99_us={:.1} \
         p999_us={:.1} max_us={:.1} verified=yes",
        us(0.5),
        us(0.99),
        us(0.999),
        us(1.0)
    );
}
