//! Idle-connections load generator for `scripts/bench.sh`: opens `--conns` connections through whatever
//! listens on `--connect` (a bridge chain, or the target itself for the direct baseline), waits until
//! every one has reached the target this process runs on `--target-listen`, and reports what the bridge
//! processes (`--pids`, each with its descendants) gained in PSS per connection, and what the kernel
//! gained system-wide. Then one byte goes through every connection and back (checked), and PSS is
//! read again.
//!
//! ```text
//! bench_idle --target-listen 127.0.0.1:T --connect 127.0.0.1:A --conns 5000
//!            [--pids P1,P2] [--system NAME] [--timeout 180] [--settle-ms 1000] [--clk-tck 100]
//! ```
//!
//! Prints one line:
//! `idle system=… conns=… connect_secs=… fresh_kib=a/b echo_kib=a/b kernel_kib=… others_cpu_pct=… echoed=…`
//! where `fresh_kib` and `echo_kib` are (PSS_after − PSS_before) / conns per pid, `kernel_kib` is
//! (slab objects in use but TIME_WAIT sockets + kernel stacks + page tables + TCP buffer pages)
//! after − before, over conns, and `others_cpu_pct` the share of the CPUs other processes used.
//! This process holds 2 × conns descriptors (the client and the target ends).

mod bench_util {
    pub mod flags;
    pub mod mem;
    pub mod proc;
}

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bench_util::flags::{die, Flags};
use bench_util::mem::{kernel_kib, pss_kib};
use bench_util::proc::{tree, OthersCpu};

/// Connections in flight (connected here, not yet at the target) at most: keeps every accept backlog on
/// the way (128 for a std listener such as the target's) from overflowing into 1 s SYN retransmits.
const IN_FLIGHT: usize = 64;

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
    let n = f.num("conns", 1000) as usize;
    let pids = f.pids("pids");
    let system = f.str("system", "?");
    let limit = Duration::from_secs(f.num("timeout", 180));
    let settle = Duration::from_millis(f.num("settle-ms", 1000));
    let clk = f.num("clk-tck", 100) as f64;
    let others = OthersCpu::start(&pids);
    let deadline = Instant::now() + limit;

    let listener =
        TcpListener::bind(target).unwrap_or_else(|e| die(&format!("bind {target}: {e}")));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| die(&e.to_string()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let far: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let acceptor = {
        let (accepted, stop, far) = (accepted.clone(), stop.clone(), far.clone());
        thread::spawn(move || -> io::Result<()> {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        s.set_nonblocking(false)?;
                        far.lock().expect("lock").push(s);
                        accepted.fetch_add(1, Ordering::Release);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_micros(200))
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    };

    let pss_before: Vec<u64> = pids.iter().map(|&p| tree_pss_kib(p)).collect();
    let kernel_before = kernel_kib();

    // Open them all, never more than IN_FLIGHT ahead of the target.
    let started = Instant::now();
    let mut near = Vec::with_capacity(n);
    for i in 0..n {
        while i >= accepted.load(Ordering::Acquire) + IN_FLIGHT {
            if Instant::now() > deadline {
                die(&format!(
                    "{system}: {i} connected, only {} at the target",
                    accepted.load(Ordering::Acquire)
                ));
            }
            thread::sleep(Duration::from_micros(200));
        }
        match TcpStream::connect_timeout(&connect, Duration::from_secs(10)) {
            Ok(s) => near.push(s),
            Err(e) => die(&format!("{system}: connection {i}: {e}")),
        }
    }
    while accepted.load(Ordering::Acquire) < n {
        if Instant::now() > deadline {
            die(&format!(
                "{system}: {n} connected, only {} reached the target",
                accepted.load(Ordering::Acquire)
            ));
        }
        thread::sleep(Duration::from_millis(1));
    }
    let connect_secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Err(e) = acceptor.join().expect("acceptor") {
        die(&format!("{system}: accept: {e}"));
    }
    let far = std::mem::take(&mut *far.lock().expect("lock"));
    if far.len() != n {
        die(&format!(
            "{system}: {} connections at the target, expected {n}",
            far.len()
        ));
    }

    thread::sleep(settle);
    let pss_fresh: Vec<u64> = pids.iter().map(|&p| tree_pss_kib(p)).collect();
    let kernel_fresh = kernel_kib();

    // One byte each way on every connection: each is bridged end to end, to the right peer.
    if let Err(e) = echo_all(&near, &far, deadline) {
        die(&format!("{system}: echo: {e}"));
    }
    thread::sleep(settle);
    let pss_echo: Vec<u64> = pids.iter().map(|&p| tree_pss_kib(p)).collect();

    let per_conn = |after: &[u64]| -> String {
        if after.is_empty() {
            return "-".to_owned();
        }
        after
            .iter()
            .zip(&pss_before)
            .map(|(a, b)| format!("{:.1}", (*a as f64 - *b as f64) / n as f64))
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "idle system={system} conns={n} connect_secs={connect_secs:.2} fresh_kib={} echo_kib={} kernel_kib={:.1} others_cpu_pct={:.1} echoed={n}",
        per_conn(&pss_fresh),
        per_conn(&pss_echo),
        (kernel_fresh as f64 - kernel_before as f64) / n as f64,
        others.percent(&pids, clk),
    );
    drop(near);
    drop(far);
}

fn tag(i: usize) -> u8 {
    (i % 251) as u8 + 1
}

/// Client `i` sends `tag(i)`, the target sends back what it got on each connection, and client `i`
/// must read `tag(i)`.
fn echo_all(near: &[TcpStream], far: &[TcpStream], deadline: Instant) -> io::Result<()> {
    let timeout = |_: ()| {
        Some(
            deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1)),
        )
    };
    for (i, mut s) in near.iter().enumerate() {
        s.write_all(&[tag(i)])?;
    }
    for mut s in far {
        s.set_read_timeout(timeout(()))?;
        let mut b = [0u8];
        s.read_exact(&mut b)?;
        s.write_all(&b)?;
    }
    for (i, mut s) in near.iter().enumerate() {
        s.set_read_timeout(timeout(()))?;
        let mut b = [0u8];
        s.read_exact(&mut b)?;
        if b[0] != tag(i) {
            return Err(io::Error::other(format!(
                "connection {i} got {} back, sent {}",
                b[0],
                tag(i)
            )));
        }
    }
    Ok(())
}

/// PSS of a process and every descendant, KiB (a forking relay's per-connection processes count).
fn tree_pss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().map(pss_kib).sum()
}
