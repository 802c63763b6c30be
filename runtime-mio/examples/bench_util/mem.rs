//! What `/proc` says about memory: a process's PSS and the kernel's memory that connections cost.

use std::fs;

use super::flags::die;

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
