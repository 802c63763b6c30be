//! Connection-churn load generator for `scripts/bench.sh`: `--concurrency` workers open, use and close
//! connections through whatever listens on `--connect` for `--seconds`, and this process is the target
//! on `--target-listen` too. Each connection carries one checked byte each way before it is closed, so
//! a connection counts only once the whole path (every relay's dial included) works end to end.
//!
//! ```text
//! bench_churn --target-listen 127.0.0.1:T --connect 127.0.0.1:A [--client tcp|ws|ws2tcp-json]
//!             [--rate N] [--concurrency 16] [--seconds 5] [--system NAME] [--timeout 30]
//! ```
//!
//! Without `--rate` the load is a closed loop: each worker opens its next connection as soon as the last
//! one is done, which finds the most connections per second the system takes, and its times include
//! the queueing that load causes (by Little's law, 16 workers at 6,000/s wait 2.7 ms on average). With
//! `--rate N` the load is an open loop: connection i is due N⁻¹·i seconds after the start whatever
//! happened before, and its time runs from when it was due, so a stall delays (and is charged to) every
//! connection behind it instead of hiding them (no coordinated omission). That answers "at N new
//! connections per second, how long does one take?".
//!
//! Clients: `tcp` writes the byte on a plain TCP connection; `ws` upgrades to WebSocket first (a
//! static-target hop: websockify, `wsbridge ws2tcp --target`) and sends the byte as a Binary frame;
//! `ws2tcp-json` also reads the Socket2Web greeting and sends the JSON handshake naming the target
//! (`wsbridge ws2tcp` without `--target`) before the byte.
//!
//! Prints one line `churn system=… client=… load=closed|rate offered_per_s=… concurrency=… conns=…
//! per_s=… p50_ms=… p99_ms=… max_ms=… listen_drops=… syn_retrans=… verified=yes`, where the times run
//! from `connect()` (with `--rate`: from when the connection was due) to the echoed byte,
//! and the kernel counters (`/proc/net/netstat` ListenDrops, `/proc/net/snmp` RetransSegs) are deltas
//! over the run: a 1 s (or 3 s) p99 next to a non-zero count is the kernel dropping a SYN, not the
//! relay. Any failed connection is an error (exit 1).

mod bench_util {
    pub mod flags;
    pub mod stats;
}

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bench_util::flags::{die, Flags};
use bench_util::stats::quantile;

/// How the workers start connections.
#[derive(Clone, Copy)]
enum Load {
    /// Each worker starts its next connection when its last one is done.
    Closed,
    /// Connection i is due at i / rate seconds after the start (open loop).
    Rate(f64),
}

#[derive(Clone, Copy, PartialEq)]
enum Client {
    Tcp,
    Ws,
    Ws2TcpJson,
}

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
    let client = match f.str("client", "tcp").as_str() {
        "tcp" => Client::Tcp,
        "ws" => Client::Ws,
        "ws2tcp-json" => Client::Ws2TcpJson,
        c => die(&format!("--client {c:?}: expected tcp, ws or ws2tcp-json")),
    };
    let load = match f.num("rate", 0) {
        0 => Load::Closed,
        n => Load::Rate(n as f64),
    };
    let workers = f.num("concurrency", 16).clamp(1, 1024) as usize;
    let run = Duration::from_secs(f.num("seconds", 5).max(1));
    let system = f.str("system", "?");
    let io_limit = Duration::from_secs(f.num("timeout", 30));

    let listener =
        TcpListener::bind(target).unwrap_or_else(|e| die(&format!("bind {target}: {e}")));
    for _ in 0..workers {
        let l = listener
            .try_clone()
            .unwrap_or_else(|e| die(&format!("listener: {e}")));
        thread::spawn(move || loop {
            if let Ok((s, _)) = l.accept() {
                let _ = echo_one(s, io_limit);
            }
        });
    }

    let (drops0, retrans0) = (listen_drops(), retrans_segs());
    let started = Instant::now();
    let end = started + run;
    let next = Arc::new(AtomicU64::new(0));
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let next = next.clone();
            thread::spawn(move || -> Result<Vec<u64>, String> {
                let mut times = Vec::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let due = match load {
                        Load::Closed => Instant::now(),
                        Load::Rate(rate) => started + Duration::from_secs_f64(n as f64 / rate),
                    };
                    // A system slower than the rate falls behind; starting no connection after twice
                    // the run bounds the time, and the shortfall shows as per_s below offered_per_s.
                    if due >= end || Instant::now() >= end + run {
                        return Ok(times);
                    }
                    thread::sleep(due.saturating_duration_since(Instant::now()));
                    let byte = (n * 7) as u8;
                    one_connection(connect, target, client, byte, io_limit)
                        .map_err(|e| format!("connection {n} (worker {w}): {e}"))?;
                    times.push(due.elapsed().as_micros() as u64);
                }
            })
        })
        .collect();
    let mut times = Vec::new();
    for h in handles {
        match h.join() {
            Ok(Ok(t)) => times.extend(t),
            Ok(Err(e)) => die(&format!("{system}: {e}")),
            Err(_) => die("a worker panicked"),
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let (drops, retrans) = (listen_drops() - drops0, retrans_segs() - retrans0);
    times.sort_unstable();
    let ms = |q: f64| quantile(&times, q) as f64 / 1000.0;
    let label = match client {
        Client::Tcp => "tcp",
        Client::Ws => "ws",
        Client::Ws2TcpJson => "ws2tcp-json",
    };
    let (load, offered) = match load {
        Load::Closed => ("closed", "-".to_string()),
        Load::Rate(r) => ("rate", format!("{r:.0}")),
    };
    println!(
        "churn system={system} client={label} load={load} offered_per_s={offered} concurrency={workers} \
         conns={} per_s={:.0} p50_ms={:.2} p99_ms={:.2} max_ms={:.1} listen_drops={drops} \
         syn_retrans={retrans} verified=yes",
        times.len(),
        times.len() as f64 / secs,
        ms(0.5),
        ms(0.99),
        ms(1.0)
    );
}

/// The target's side of one connection: echo one byte, then wait for the client to close.
fn echo_one(mut s: TcpStream, limit: Duration) -> io::Result<()> {
    s.set_read_timeout(Some(limit))?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b)?;
    s.write_all(&b)?;
    let mut rest = [0u8; 64];
    while s.read(&mut rest)? > 0 {}
    Ok(())
}

/// One connection's whole life from the client's side; an error says what went wrong.
fn one_connection(
    connect: SocketAddr,
    target: SocketAddr,
    client: Client,
    byte: u8,
    limit: Duration,
) -> Result<(), String> {
    let s = TcpStream::connect(connect).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(limit)).ok();
    let mut c = Conn { s, buf: Vec::new() };
    if client == Client::Tcp {
        c.s.write_all(&[byte]).map_err(|e| format!("write: {e}"))?;
        let b = c.take(1)?;
        return if b == [byte] {
            Ok(())
        } else {
            Err(format!("echo {b:?}, sent {byte}"))
        };
    }
    c.s.write_all(
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .map_err(|e| format!("write upgrade: {e}"))?;
    let head = c.head()?;
    if !head.starts_with(b"HTTP/1.1 101") {
        return Err(format!(
            "upgrade answered {:?}",
            String::from_utf8_lossy(&head)
        ));
    }
    if client == Client::Ws2TcpJson {
        let (op, greeting) = c.frame()?;
        if op != 1 || !greeting.starts_with(b"{\"supported_protocols\"") {
            return Err(format!("greeting {:?}", String::from_utf8_lossy(&greeting)));
        }
        let hs = format!(
            r#"{{"protocol":"tcp","target_ip":"{}","target_port":{}}}"#,
            target.ip(),
            target.port()
        );
        c.send(1, hs.as_bytes())?;
        let (op, status) = c.frame()?;
        if op != 1 || !status.starts_with(b"{\"status\":\"Successfully connected") {
            return Err(format!("status {:?}", String::from_utf8_lossy(&status)));
        }
    }
    c.send(2, &[byte])?;
    let (op, echo) = c.frame()?;
    if op != 2 || echo != [byte] {
        return Err(format!("echo frame {op} {echo:?}, sent {byte}"));
    }
    c.send(8, &1000u16.to_be_bytes())?;
    Ok(())
}

/// A client connection with what was read but not used yet.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 4096];
        match self.s.read(&mut chunk) {
            Ok(0) => Err("closed early".into()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            self.fill()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// The HTTP response head, up to and including the blank line (at most 8 KiB).
    fn head(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return Ok(self.buf.drain(..i + 4).collect());
            }
            if self.buf.len() > 8192 {
                return Err("response head over 8 KiB".into());
            }
            self.fill()?;
        }
    }

    /// The next unfragmented server frame: opcode and payload (at most 64 KiB).
    fn frame(&mut self) -> Result<(u8, Vec<u8>), String> {
        let h = self.take(2)?;
        if h[1] & 0x80 != 0 || h[0] & 0x80 == 0 {
            return Err(format!("unexpected frame header {h:?}"));
        }
        let len = match h[1] & 0x7f {
            126 => u16::from_be_bytes(self.take(2)?.try_into().unwrap()) as usize,
            127 => return Err("a 64-bit length".into()),
            n => n as usize,
        };
        if len > 64 << 10 {
            return Err(format!("a {len}-byte frame"));
        }
        Ok((h[0] & 0x0f, self.take(len)?))
    }

    /// Sends a masked frame (zero mask: the mask bit is what RFC 6455 requires of a client).
    fn send(&mut self, opcode: u8, payload: &[u8]) -> Result<(), String> {
        assert!(payload.len() < 126);
        let mut f = vec![0x80 | opcode, 0x80 | payload.len() as u8, 0, 0, 0, 0];
        f.extend_from_slice(payload);
        self.s
            .write_all(&f)
            .map_err(|e| format!("write frame: {e}"))
    }
}

/// `TcpExt: ListenDrops` from `/proc/net/netstat` (0 if unreadable).
fn listen_drops() -> u64 {
    proc_counter("/proc/net/netstat", "TcpExt:", "ListenDrops")
}

/// `Tcp: RetransSegs` from `/proc/net/snmp` (0 if unreadable).
fn retrans_segs() -> u64 {
    proc_counter("/proc/net/snmp", "Tcp:", "RetransSegs")
}

/// A counter from a `/proc/net` file of header-line / value-line pairs.
fn proc_counter(path: &str, prefix: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().filter(|l| l.starts_with(prefix));
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if let Some(i) = names.split_whitespace().position(|n| n == name) {
            return values
                .split_whitespace()
                .nth(i)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    0
}
