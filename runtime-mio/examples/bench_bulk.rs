//! Bulk-transfer load generator for `scripts/bench.sh`: one TCP connection moves `--bytes` one way
//! (client → target sink) or both ways at once, through whatever listens on `--connect` (a bridge chain,
//! or the target itself for the direct baseline). This process is both ends: it runs the target on
//! `--target-listen` and the client, so every byte is counted and checksummed where it lands.
//!
//! ```text
//! bench_bulk --target-listen 127.0.0.1:T --connect 127.0.0.1:A --bytes 1073741824 --mode one|both
//!            [--reps 3] [--pids P1,P2] [--clk-tck 100] [--system NAME] [--timeout 120]
//! ```
//!
//! Per repetition it prints `rep=…`; then one line
//! `bulk system=… mode=… bytes=… moved=… reps=… mibs=… cpu_s_per_gib=… cpu_by_pid=a/b others_cpu_pct=… verified=…`
//! with medians. CPU is utime+stime(+reaped children) of `--pids` from `/proc/PID/stat` around each
//! repetition, read after the pids have no children left (socat forks one per connection).
//! `others_cpu_pct` is the share of the machine's CPUs that other processes used meanwhile (a check
//! that the run was quiet). Any short, long or corrupted stream is an error (exit 1).

mod bench_util {
    pub mod flags;
    pub mod proc;
    pub mod stream;
}

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bench_util::flags::{die, Flags};
use bench_util::proc::{children, try_cpu_ticks, OthersCpu};
use bench_util::stream::{expected_checksum, pattern, Checksum, PATTERN_LEN};

/// Bytes per write and per read.
const CHUNK: usize = 256 << 10;
const MIB: f64 = (1u64 << 20) as f64;
const GIB: f64 = (1u64 << 30) as f64;

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
    let bytes = f.num("bytes", 1 << 30);
    let both = match f.str("mode", "one").as_str() {
        "one" => false,
        "both" => true,
        m => die(&format!("--mode {m:?}: expected one or both")),
    };
    let reps = f.num("reps", 3).max(1);
    let pids = f.pids("pids");
    let clk = f.num("clk-tck", 100) as f64;
    let system = f.str("system", "?");
    let limit = Duration::from_secs(f.num("timeout", 120));

    let pat = Arc::new(pattern(CHUNK));
    let expect = expected_checksum(&pat, bytes);
    let listener =
        TcpListener::bind(target).unwrap_or_else(|e| die(&format!("bind {target}: {e}")));
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| die(&e.to_string()));
    let listener = Arc::new(listener);
    let moved = if both { 2 * bytes } else { bytes };

    let mut mibs = Vec::new();
    let mut cpu_per_gib = Vec::new();
    let mut cpu_by_pid: Vec<Vec<f64>> = vec![Vec::new(); pids.len()];
    let others = OthersCpu::start(&pids);
    for rep in 0..reps {
        let before: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        let (secs, client_sum, sink_sum) =
            match one_transfer(&listener, connect, &pat, bytes, both, limit) {
                Ok(r) => r,
                Err(e) => die(&format!("{system} rep {rep}: {e}")),
            };
        // Every byte, in order: the sink got exactly the stream (and so did the client, both ways).
        if sink_sum.total() != bytes || sink_sum.finish() != expect {
            die(&format!(
                "{system} rep {rep}: the target got {} bytes of {bytes}, checksum {}",
                sink_sum.total(),
                if sink_sum.finish() == expect {
                    "ok"
                } else {
                    "WRONG"
                }
            ));
        }
        let client_expect = if both { bytes } else { 0 };
        if client_sum.total() != client_expect || (both && client_sum.finish() != expect) {
            die(&format!(
                "{system} rep {rep}: the client got {} bytes of {client_expect}, checksum {}",
                client_sum.total(),
                if client_sum.finish() == expect {
                    "ok"
                } else {
                    "WRONG"
                }
            ));
        }
        for &p in &pids {
            if !wait_childless(p, Duration::from_secs(15)) {
                die(&format!("{system}: pid {p} still has children after 15 s"));
            }
        }
        let after: Vec<u64> = pids.iter().map(|&p| cpu_ticks(p)).collect();
        let per_pid: Vec<f64> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a - b) as f64 / clk / (moved as f64 / GIB))
            .collect();
        let total = per_pid.iter().fold(0.0, |a, b| a + b);
        let rate = moved as f64 / MIB / secs;
        println!(
            "rep={rep} system={system} mode={} secs={secs:.3} mibs={rate:.0} cpu_s_per_gib={total:.3}",
            if both { "both" } else { "one" }
        );
        mibs.push(rate);
        cpu_per_gib.push(total);
        for (v, x) in cpu_by_pid.iter_mut().zip(per_pid) {
            v.push(x);
        }
    }
    let by_pid: Vec<String> = cpu_by_pid
        .into_iter()
        .map(|v| format!("{:.3}", median(v)))
        .collect();
    println!(
        "bulk system={system} mode={} bytes={bytes} moved={moved} reps={reps} mibs={:.0} cpu_s_per_gib={} cpu_by_pid={} others_cpu_pct={:.1} verified=count+checksum",
        if both { "both" } else { "one" },
        median(mibs),
        if pids.is_empty() { "-".to_owned() } else { format!("{:.3}", median(cpu_per_gib)) },
        if by_pid.is_empty() { "-".to_owned() } else { by_pid.join("/") },
        others.percent(&pids, clk),
    );
}

/// One connection: returns the seconds until every byte had landed, and what the client and the
/// target sink received.
fn one_transfer(
    listener: &Arc<TcpListener>,
    connect: SocketAddr,
    pat: &Arc<Vec<u8>>,
    bytes: u64,
    both: bool,
    limit: Duration,
) -> io::Result<(f64, Checksum, Checksum)> {
    let start = Instant::now();
    let deadline = start + limit;

    // The target: accept one connection, read it to EOF (and, both ways, send the stream back).
    let target = {
        let listener = listener.clone();
        let pat = pat.clone();
        thread::spawn(move || -> io::Result<(Instant, Checksum)> {
            let s = accept_until(&listener, deadline)?;
            let writer = if both {
                let w = s.try_clone()?;
                let pat = pat.clone();
                Some(thread::spawn(move || send_stream(w, &pat, bytes, deadline)))
            } else {
                None
            };
            let got = recv_stream(&s, deadline)?;
            let done = Instant::now();
            if let Some(w) = writer {
                w.join()
                    .map_err(|_| io::Error::other("target writer panicked"))??;
            }
            Ok((done, got))
        })
    };

    let s = TcpStream::connect(connect)?;
    s.set_read_timeout(Some(limit))?;
    s.set_write_timeout(Some(limit))?;
    let writer = {
        let w = s.try_clone()?;
        let pat = pat.clone();
        thread::spawn(move || send_stream(w, &pat, bytes, deadline))
    };
    let client_got = recv_stream(&s, deadline);
    let client_done = Instant::now();
    writer
        .join()
        .map_err(|_| io::Error::other("client writer panicked"))??;
    let (sink_done, sink_got) = target
        .join()
        .map_err(|_| io::Error::other("target panicked"))??;
    let client_got = client_got?;
    let end = if both {
        sink_done.max(client_done)
    } else {
        sink_done
    };
    Ok((
        end.duration_since(start).as_secs_f64(),
        client_got,
        sink_got,
    ))
}

fn accept_until(listener: &TcpListener, deadline: Instant) -> io::Result<TcpStream> {
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1));
                s.set_read_timeout(Some(left))?;
                s.set_write_timeout(Some(left))?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no connection reached the target",
                    ));
                }
                thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Writes the first `bytes` bytes of the stream, then half-closes.
fn send_stream(mut s: TcpStream, pat: &[u8], bytes: u64, deadline: Instant) -> io::Result<()> {
    let mut pos = 0u64;
    while pos < bytes {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "sending took too long",
            ));
        }
        let off = (pos % PATTERN_LEN as u64) as usize;
        let n = CHUNK.min((bytes - pos) as usize);
        let wrote = s.write(&pat[off..off + n])?;
        if wrote == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        pos += wrote as u64;
    }
    s.shutdown(Shutdown::Write)
}

/// Reads to EOF, checksumming.
fn recv_stream(mut s: &TcpStream, deadline: Instant) -> io::Result<Checksum> {
    let mut buf = vec![0u8; CHUNK];
    let mut sum = Checksum::default();
    loop {
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "receiving took too long",
            ));
        }
        match s.read(&mut buf) {
            Ok(0) => return Ok(sum),
            Ok(n) => sum.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// [`try_cpu_ticks`], exiting with a message if the process cannot be read.
fn cpu_ticks(pid: u32) -> u64 {
    try_cpu_ticks(pid).unwrap_or_else(|| die(&format!("/proc/{pid}/stat: cannot read it")))
}

/// Waits (at most `limit`) until a process has no children left: a forking relay's per-connection
/// processes have exited and been reaped, so their CPU time is in the parent's `cutime`/`cstime`.
fn wait_childless(pid: u32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while !children(pid).is_empty() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// The median of some numbers (the lower middle one for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}
