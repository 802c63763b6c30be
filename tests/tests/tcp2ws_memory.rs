//! Memory of a `tcp2ws` bridge while one side stalls: with `--buffer-size` 256 KiB, 64 MiB pushed at a
//! reader that reads nothing must not pile up in the bridge. The bridge runs as a child process
//! (`tcp2ws_proc`, whose global allocator counts heap bytes), so the test's own 64 MiB buffers are not
//! counted; /proc/PID/{status,smaps_rollup} give the resident-set view of the same moments.
//!
//! The bound asserted is `2 × buffer_size + FIXED_OVERHEAD` on the growth of the bridge's heap — both
//! what is live while stalled and the high-water mark since the baseline — over a baseline taken once the
//! session is established. Then the stalled reader reads everything and every byte is checked, so the
//! test proves backpressure without loss. Each scenario runs on both runtimes. Run with `--nocapture` to
//! see the numbers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;
use wsbridge_tests::backend::{next_json, send_data, Backend};
use wsbridge_tests::bridge::Runtime;
use wsbridge_tests::data::{random_bytes, sha1};

const BUFFER_SIZE: usize = 256 << 10;
const TOTAL: usize = 64 << 20;
const CHUNK: usize = 64 << 10;
/// What the bridge may hold beyond its two `buffer_size` queues while one direction is stalled. The
/// queue limit is checked before a read, so one read overshoots it: the driver reads at most
/// `READ_CHUNK` (256 KiB) per call. The backend's WebSocket engine keeps up to `max_read_buffer`
/// (64 KiB, default) of undecoded input, again checked before a read (+64 KiB). Frame headers, queue
/// nodes and the allocator's rounding are small next to that; 384 KiB covers the 320 KiB above with room.
const FIXED_OVERHEAD: usize = 384 << 10;
const LIMIT: usize = 2 * BUFFER_SIZE + FIXED_OVERHEAD;
const T: Duration = Duration::from_secs(30);

/// Waits for `cond`, polling, failing the test after `limit`.
fn wait_for(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `counter` has not moved for `quiet` (the writer is blocked), within `limit`.
fn wait_for_stall(counter: &AtomicUsize, quiet: Duration, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut last = counter.load(Ordering::SeqCst);
    let mut since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = counter.load(Ordering::SeqCst);
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the writer never stalled ({now} bytes written)"
        );
        assert!(
            now < TOTAL,
            "all {TOTAL} bytes went through: nothing stalled"
        );
    }
}

wsbridge_tests::both_runtimes!(
    a_client_that_stops_reading_holds_the_bridge_to_its_buffer_and_loses_nothing,
    a_backend_that_stops_reading_holds_the_bridge_to_its_buffer_and_loses_nothing,
);

// ---- the bridge process ----

#[derive(Debug, Clone, Copy)]
struct Mem {
    heap_live: usize,
    heap_peak: usize,
    vm_rss: usize,
    rss_anon: usize,
    private_dirty: usize,
}

struct BridgeProc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
    port: u16,
}

impl BridgeProc {
    fn start(rt: Runtime, backend: &str) -> BridgeProc {
        let runtime = match rt {
            Runtime::Mio => "mio",
            Runtime::Smol => "smol",
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_tcp2ws_proc"))
            .args([backend, &BUFFER_SIZE.to_string(), runtime])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tcp2ws_proc");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = BridgeProc {
            child,
            stdin,
            lines,
            port: 0,
        };
        let first = p.line();
        p.port = first
            .strip_prefix("port ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("tcp2ws_proc said {first:?}"));
        p
    }

    fn line(&self) -> String {
        self.lines
            .recv_timeout(T)
            .expect("tcp2ws_proc answers within the timeout")
    }

    fn command(&mut self, c: &str) -> String {
        writeln!(self.stdin, "{c}").expect("write to tcp2ws_proc");
        self.stdin.flush().unwrap();
        self.line()
    }

    fn reset_peak(&mut self) {
        assert_eq!(self.command("reset"), "ok");
    }

    fn mem(&mut self) -> Mem {
        let answer = self.command("mem");
        let nums: Vec<usize> = answer
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().unwrap())
            .collect();
        let pid = self.child.id();
        let kb = |file: &str, field: &str| -> usize {
            let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/{file}"))
                * 1024
        };
        Mem {
            heap_live: nums[0],
            heap_peak: nums[1],
            vm_rss: kb("status", "VmRSS:"),
            rss_anon: kb("status", "RssAnon:"),
            private_dirty: kb("smaps_rollup", "Private_Dirty:"),
        }
    }
}

impl Drop for BridgeProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kib(n: usize) -> String {
    format!("{:.1} KiB", n as f64 / 1024.0)
}

fn delta(after: usize, before: usize) -> isize {
    after as isize - before as isize
}

/// Prints the numbers and asserts the heap bound.
fn check(direction: &str, base: Mem, stalled: Mem, through: usize) {
    let live = delta(stalled.heap_live, base.heap_live);
    let peak = delta(stalled.heap_peak, base.heap_live);
    println!(
        "[{direction}] buffer_size {} · bytes written before the stall {} ({:.1} MiB; the rest of what \
         left the writer sits in kernel socket buffers)",
        kib(BUFFER_SIZE),
        through,
        through as f64 / (1 << 20) as f64
    );
    println!(
        "[{direction}] heap: baseline {} → stalled {} (delta {}), peak since baseline +{}",
        kib(base.heap_live),
        kib(stalled.heap_live),
        kib(live.max(0) as usize),
        kib(peak.max(0) as usize)
    );
    println!(
        "[{direction}] /proc: VmRSS {} → {} (delta {:+} KiB), RssAnon delta {:+} KiB, Private_Dirty delta \
         {:+} KiB",
        kib(base.vm_rss),
        kib(stalled.vm_rss),
        delta(stalled.vm_rss, base.vm_rss) / 1024,
        delta(stalled.rss_anon, base.rss_anon) / 1024,
        delta(stalled.private_dirty, base.private_dirty) / 1024,
    );
    println!(
        "[{direction}] limit 2 × buffer_size + fixed overhead = {}",
        kib(LIMIT)
    );
    assert!(
        live < LIMIT as isize,
        "{direction}: the bridge's heap grew by {} while stalled (limit {})",
        kib(live as usize),
        kib(LIMIT)
    );
    assert!(
        peak < LIMIT as isize,
        "{direction}: the bridge's heap peaked {} above the baseline (limit {})",
        kib(peak as usize),
        kib(LIMIT)
    );
    // The counter must see the queue it bounds, or the bound proves nothing.
    assert!(
        peak > (BUFFER_SIZE / 2) as isize,
        "{direction}: only {} over the baseline while stalled: is the allocator counting?",
        kib(peak.max(0) as usize)
    );
    // The resident set includes what the allocator keeps after frees; it must show no pile-up either.
    let rss = delta(stalled.rss_anon, base.rss_anon);
    assert!(
        rss < (LIMIT + (1 << 20)) as isize,
        "{direction}: the bridge's anonymous RSS grew by {} KiB",
        rss / 1024
    );
}

/// Once the session is over, the bridge's heap is back under the baseline (which included the session).
fn check_released(direction: &str, bridge: &mut BridgeProc, base: Mem) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut now = bridge.mem();
    while now.heap_live > base.heap_live && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
        now = bridge.mem();
    }
    println!(
        "[{direction}] heap after the session ended: {} (baseline {})",
        kib(now.heap_live),
        kib(base.heap_live)
    );
    assert!(
        now.heap_live <= base.heap_live,
        "{direction}: {} still allocated after the session ended",
        kib(now.heap_live - base.heap_live)
    );
}

/// Connects to the bridge and waits for the backend's greeting, so the session is open both ways.
fn connect(port: u16) -> TcpStream {
    let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect to the bridge");
    c.set_read_timeout(Some(T)).unwrap();
    c.set_write_timeout(Some(T)).unwrap();
    let mut hi = [0u8; 2];
    c.read_exact(&mut hi).expect("greeting");
    assert_eq!(&hi, b"hi");
    c
}

fn a_client_that_stops_reading_holds_the_bridge_to_its_buffer_and_loses_nothing(rt: Runtime) {
    let data = Arc::new(random_bytes(7, TOTAL));
    let want = sha1(&data);
    let sent = Arc::new(AtomicUsize::new(0));
    let go = Arc::new(AtomicBool::new(false));
    let established = Arc::new(AtomicBool::new(false));
    let backend = {
        let (data, sent, go, established) =
            (data.clone(), sent.clone(), go.clone(), established.clone());
        Backend::start(move |mut ws, _| {
            let _hello = next_json(&mut ws);
            send_data(&mut ws, b"hi");
            established.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + T;
            while !go.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            for chunk in data.chunks(CHUNK) {
                send_data(&mut ws, chunk);
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            let _ = ws.close(None);
            while ws.read().is_ok() {}
        })
    };
    let mut bridge = BridgeProc::start(rt, &backend.url());
    let mut c = connect(bridge.port);
    wait_for("the backend's session", T, || {
        established.load(Ordering::SeqCst)
    });
    thread::sleep(Duration::from_millis(200));
    let base = bridge.mem();
    bridge.reset_peak();

    go.store(true, Ordering::SeqCst);
    let through = wait_for_stall(&sent, Duration::from_secs(1), T);
    let stalled = bridge.mem();
    let direction = format!("{rt:?}: backend → stalled client");
    check(&direction, base, stalled, through);

    // The client reads everything now: every byte, in order, then EOF.
    let mut got = vec![0u8; TOTAL];
    c.read_exact(&mut got).expect("all 64 MiB");
    assert_eq!(sha1(&got), want, "backend → client bytes");
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).expect("EOF after the data");
    assert!(rest.is_empty(), "{} bytes after the data", rest.len());
    check_released(&direction, &mut bridge, base);
}

fn a_backend_that_stops_reading_holds_the_bridge_to_its_buffer_and_loses_nothing(rt: Runtime) {
    let data = random_bytes(11, TOTAL);
    let want = sha1(&data);
    let go = Arc::new(AtomicBool::new(false));
    let established = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let backend = {
        let (go, established) = (go.clone(), established.clone());
        Backend::start(move |mut ws, _| {
            let _hello = next_json(&mut ws);
            send_data(&mut ws, b"hi");
            established.store(true, Ordering::SeqCst);
            let deadline = Instant::now() + T;
            while !go.load(Ordering::SeqCst) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            let mut got = Vec::with_capacity(TOTAL);
            loop {
                match ws.read() {
                    Ok(Message::Binary(b)) => got.extend_from_slice(&b),
                    Ok(Message::Close(_)) => {}
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            tx.send((got.len(), sha1(&got))).unwrap();
        })
    };
    let mut bridge = BridgeProc::start(rt, &backend.url());
    let c = connect(bridge.port);
    wait_for("the backend's session", T, || {
        established.load(Ordering::SeqCst)
    });
    thread::sleep(Duration::from_millis(200));
    let base = bridge.mem();
    bridge.reset_peak();

    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let sent = sent.clone();
        let mut c = c.try_clone().unwrap();
        c.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        thread::spawn(move || {
            for chunk in data.chunks(CHUNK) {
                c.write_all(chunk).expect("client write");
                sent.fetch_add(chunk.len(), Ordering::SeqCst);
            }
            c.shutdown(Shutdown::Write).unwrap();
        })
    };
    let through = wait_for_stall(&sent, Duration::from_secs(1), T);
    let stalled = bridge.mem();
    let direction = format!("{rt:?}: client → stalled backend");
    check(&direction, base, stalled, through);

    // The backend reads everything now.
    go.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let (len, got) = rx.recv_timeout(T).expect("the backend read to the end");
    assert_eq!(len, TOTAL);
    assert_eq!(got, want, "client → backend bytes");
    let mut c = c;
    let mut rest = Vec::new();
    c.read_to_end(&mut rest)
        .expect("EOF after the backend's Close");
    assert!(rest.is_empty());
    check_released(&direction, &mut bridge, base);
}
