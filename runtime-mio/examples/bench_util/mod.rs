//! Shared by the load generators `bench_bulk` and `bench_idle` (driven by `scripts/bench.sh`): flag
//! parsing, the deterministic byte stream and its checksum, and what `/proc` says about the bridge
//! processes (CPU ticks, PSS, the kernel's socket memory).
//!
//! Std only, so the load generators cost the same whatever system they measure.

// Each example uses part of what is here.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs;
use std::time::{Duration, Instant};

/// `--key value` flags; a bare `--key` is `"true"`.
pub struct Flags(HashMap<String, String>);

impl Flags {
    /// Parses `std::env::args`, exiting with a message on anything that is not a flag.
    pub fn from_env() -> Flags {
        let mut map = HashMap::new();
        let mut args = std::env::args().skip(1).peekable();
        while let Some(a) = args.next() {
            let Some(key) = a.strip_prefix("--") else {
                die(&format!("unexpected argument {a:?}"));
            };
            let value = match args.peek() {
                Some(v) if !v.starts_with("--") => args.next().unwrap_or_default(),
                _ => "true".to_owned(),
            };
            map.insert(key.to_owned(), value);
        }
        Flags(map)
    }

    /// The flag's value, or `default`.
    pub fn str(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_owned())
    }

    /// A required flag.
    pub fn req(&self, key: &str) -> String {
        match self.0.get(key) {
            Some(v) => v.clone(),
            None => die(&format!("--{key} is required")),
        }
    }

    /// A number flag.
    pub fn num(&self, key: &str, default: u64) -> u64 {
        match self.0.get(key) {
            Some(v) => v
                .parse()
                .unwrap_or_else(|_| die(&format!("--{key} {v:?}: not a number"))),
            None => default,
        }
    }

    /// A comma-separated list of PIDs (empty when absent).
    pub fn pids(&self, key: &str) -> Vec<u32> {
        self.str(key, "")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .unwrap_or_else(|_| die(&format!("--{key}: {s:?} is not a pid")))
            })
            .collect()
    }
}

/// Prints `bench: error: …` and exits with 1.
pub fn die(msg: &str) -> ! {
    eprintln!("bench: error: {msg}");
    std::process::exit(1)
}

/// Length of the pattern the byte stream repeats: a prime, so a lost, doubled or reordered piece of
/// any length below it shifts everything after it.
pub const PATTERN_LEN: usize = 1_048_573;

/// The stream's bytes: byte `i` of a stream is `pattern[i % PATTERN_LEN]`. `pattern()` is
/// `PATTERN_LEN + extra` long, so any `extra`-byte write is one slice of it.
pub fn pattern(extra: usize) -> Vec<u8> {
    let mut x: u64 = 0x243f_6a88_85a3_08d3;
    let mut v: Vec<u8> = (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    v.extend_from_within(..extra);
    v
}

/// A 64-bit checksum of a byte stream, the same whatever the chunking: four independent lanes of
/// `(lane ^ word) * odd` over 32-byte blocks, so it runs at memory speed and a mismatch anywhere shows.
#[derive(Clone)]
pub struct Checksum {
    lanes: [u64; 4],
    buf: [u8; 32],
    buf_len: usize,
    total: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            lanes: [1, 2, 3, 4],
            buf: [0; 32],
            buf_len: 0,
            total: 0,
        }
    }
}

const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Checksum {
    fn block(&mut self, b: &[u8]) {
        for (k, lane) in self.lanes.iter_mut().enumerate() {
            let w = u64::from_le_bytes(b[8 * k..8 * k + 8].try_into().expect("8 bytes"));
            *lane = (*lane ^ w).wrapping_mul(K);
        }
    }

    /// Adds the next bytes of the stream.
    pub fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.buf_len > 0 {
            let take = (32 - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < 32 {
                return;
            }
            let b = self.buf;
            self.block(&b);
            self.buf_len = 0;
        }
        let mut blocks = data.chunks_exact(32);
        for b in &mut blocks {
            self.block(b);
        }
        let rest = blocks.remainder();
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// Bytes seen so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The checksum of everything seen.
    pub fn finish(&self) -> u64 {
        let mut h = self.total.wrapping_mul(K);
        for &b in &self.buf[..self.buf_len] {
            h = (h ^ u64::from(b)).wrapping_mul(K);
        }
        for &l in &self.lanes {
            h = (h.rotate_left(23) ^ l).wrapping_mul(K);
        }
        h
    }
}

/// The checksum of the first `len` bytes of the stream.
pub fn expected_checksum(pat: &[u8], len: u64) -> u64 {
    let mut c = Checksum::default();
    let mut pos = 0u64;
    while pos < len {
        let off = (pos % PATTERN_LEN as u64) as usize;
        let n = (PATTERN_LEN - off).min((len - pos) as usize);
        c.update(&pat[off..off + n]);
        pos += n as u64;
    }
    c.finish()
}

/// utime + stime + cutime + cstime of a process, in clock ticks (children count once reaped).
pub fn cpu_ticks(pid: u32) -> u64 {
    try_cpu_ticks(pid).unwrap_or_else(|| die(&format!("/proc/{pid}/stat: cannot read it")))
}

fn try_cpu_ticks(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name "(...)": state is field 3, utime field 14.
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 1)..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(
        (11..15)
            .map(|i| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
            .sum(),
    )
}

/// The direct children of a process (all its threads').
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        if let Ok(s) = fs::read_to_string(t.path().join("children")) {
            out.extend(s.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    out
}

/// A process and all its descendants.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let kids = children(out[i]);
        out.extend(kids);
        i += 1;
    }
    out
}

/// Waits (at most `limit`) until a process has no children left: a forking relay's per-connection
/// processes have exited and been reaped, so their CPU time is in the parent's `cutime`/`cstime`.
pub fn wait_childless(pid: u32, limit: Duration) -> bool {
    let end = Instant::now() + limit;
    while !children(pid).is_empty() {
        if Instant::now() > end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

/// Proportional set size of one process, KiB (0 if it is gone).
pub fn pss_kib(pid: u32) -> u64 {
    let Ok(s) = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")) else {
        return 0;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// PSS of a process and every descendant, KiB (a forking relay's per-connection processes count).
pub fn tree_pss_kib(pid: u32) -> u64 {
    tree(pid).into_iter().map(pss_kib).sum()
}

/// The kernel's memory that connections cost, KiB, system-wide: every slab object in use (sockets,
/// inodes, files, dentries, epoll entries, task structs…) except TIME_WAIT sockets (`tw_sock_*`: earlier
/// runs' connections expire from there on their own clock), plus kernel stacks and page tables (a
/// forking relay's processes), plus the TCP buffer pages of `/proc/net/sockstat`.
pub fn kernel_kib() -> u64 {
    let slabinfo = fs::read_to_string("/proc/slabinfo")
        .unwrap_or_else(|e| die(&format!("/proc/slabinfo: {e} (run as root)")));
    let slab_bytes: u64 = slabinfo
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with("tw_sock"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let active: u64 = f.get(1)?.parse().ok()?;
            let size: u64 = f.get(3)?.parse().ok()?;
            Some(active * size)
        })
        .sum();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let sockstat = fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp_pages: u64 = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.iter()
                .position(|&w| w == "mem")
                .and_then(|i| f.get(i + 1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    slab_bytes / 1024 + field("KernelStack:") + field("PageTables:") + tcp_pages * 4
}

/// CPU ticks the whole machine spent in user and system mode (`/proc/stat`; interrupt and softirq
/// time are left out on both sides of [`OthersCpu`]).
fn machine_busy_ticks() -> u64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    line.split_whitespace()
        .skip(1)
        .take(3)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// Ticks of this process and of the relay processes with every descendant alive (reaped ones are in
/// their parent's `cutime`/`cstime`).
fn our_ticks(pids: &[u32]) -> u64 {
    let mut all = vec![std::process::id()];
    for &p in pids {
        all.extend(tree(p));
    }
    all.into_iter().filter_map(try_cpu_ticks).sum()
}

/// How busy everything else on the machine was during a measurement: CPU time the machine spent
/// minus what this process and the relays spent, as a share of all CPUs over the wall time.
pub struct OthersCpu {
    start: Instant,
    busy: u64,
    ours: u64,
}

impl OthersCpu {
    /// Starts counting.
    pub fn start(pids: &[u32]) -> OthersCpu {
        OthersCpu {
            start: Instant::now(),
            busy: machine_busy_ticks(),
            ours: our_ticks(pids),
        }
    }

    /// Percent of the machine's CPU capacity used by other processes since `start`.
    pub fn percent(&self, pids: &[u32], clk_tck: f64) -> f64 {
        let busy = machine_busy_ticks().saturating_sub(self.busy) as f64;
        let ours = our_ticks(pids).saturating_sub(self.ours) as f64;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let capacity = self.start.elapsed().as_secs_f64() * clk_tck * cpus;
        (100.0 * (busy - ours) / capacity).max(0.0)
    }
}

/// The median of some numbers (the lower middle one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len().saturating_sub(1) / 2).copied().unwrap_or(0.0)
}

/// The `q`-quantile (0 ≤ q ≤ 1) of sorted samples, nearest rank: the smallest sample with at least
/// `q` of all samples at or below it (0 for no samples).
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}
