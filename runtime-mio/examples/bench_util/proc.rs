//! What `/proc` says about the CPU time of the measured processes and their descendants, shared by the
//! load generators that take `--pids`.

use std::fs;
use std::time::Instant;

use super::flags::{die, Flags};

impl Flags {
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

/// utime + stime + cutime + cstime of a process, in clock ticks (children count once reaped); `None`
/// if `/proc/PID/stat` cannot be read.
pub fn try_cpu_ticks(pid: u32) -> Option<u64> {
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
