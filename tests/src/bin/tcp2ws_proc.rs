//! A `tcp2ws` bridge (mio: one loop thread; or smol: one executor thread) in a process of its own, so a
//! test can measure its memory without counting the test's own peers and buffers.
//!
//! Usage: `tcp2ws_proc BACKEND_URL BUFFER_SIZE [mio|smol]` (default `mio`). Prints `port N` once it
//! listens on 127.0.0.1, then answers commands on stdin, one per line:
//! - `mem` → `mem LIVE PEAK`: heap bytes allocated now, and the most allocated at once since the last
//!   `reset` (counted by this binary's global allocator, so the numbers are heap only, not RSS);
//! - `reset` → `ok`: the peak starts again from the current live bytes.
//!
//! It exits (stopping the bridge) at the end of stdin.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

use wsbridge_tests::bridge::{start_tcp2ws, tcp2ws_config, Runtime};

/// The system allocator, counting live bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(n: usize) {
    let now = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated around it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(size)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: tcp2ws_proc BACKEND_URL BUFFER_SIZE [mio|smol]");
        std::process::exit(2);
    };
    let runtime = match args.get(3).map(String::as_str) {
        None | Some("mio") => Runtime::Mio,
        Some("smol") => Runtime::Smol,
        Some(other) => {
            eprintln!("unknown runtime {other:?}: mio or smol");
            std::process::exit(2);
        }
    };
    let mut cfg = tcp2ws_config(url);
    cfg.buffer_size = size.parse().expect("BUFFER_SIZE is a number of bytes");
    let bridge = start_tcp2ws(runtime, cfg, 16);
    let mut out = std::io::stdout().lock();
    writeln!(out, "port {}", bridge.addr.port()).unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        match line.trim() {
            "mem" => {
                let live = LIVE.load(Ordering::Relaxed);
                let peak = PEAK.load(Ordering::Relaxed);
                writeln!(out, "mem {live} {peak}").unwrap();
            }
            "reset" => {
                PEAK.store(LIVE.load(Ordering::Relaxed), Ordering::Relaxed);
                writeln!(out, "ok").unwrap();
            }
            other => writeln!(out, "unknown command {other:?}").unwrap(),
        }
        out.flush().unwrap();
    }
    drop(bridge);
}
