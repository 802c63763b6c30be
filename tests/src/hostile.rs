//! Support for the hostile-traffic tests (`tests/tests/hostile.rs`): what the test process itself
//! holds (descriptors, resident memory), crowds of silent sockets, raw WebSocket frames, and small
//! loopback servers that release every socket when dropped (so descriptor counts can be compared).
//!
//! The bridge under test runs in the test process, so `/proc/self` sees both ends: a case compares
//! the counts before and after, with the tests of the file run one at a time ([`serial`]).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

// ---- the process ----

/// A global allocator that counts the heap bytes live now and their high-water mark, so a test can see
/// what the bridge holds even where the resident set cannot (freed memory is reused without growing
/// it). Install it in a test binary with `#[global_allocator] static A: CountingAlloc = CountingAlloc;`;
/// without it [`heap_live`] stays 0.
pub struct CountingAlloc;

static HEAP_LIVE: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn count_alloc(n: usize) {
    let live = HEAP_LIVE.fetch_add(n, Ordering::Relaxed) + n;
    HEAP_PEAK.fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to `System` unchanged; only counters are updated on the side.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        let p = unsafe { std::alloc::System.alloc_zeroed(layout) };
        if !p.is_null() {
            count_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) };
        HEAP_LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        let p = unsafe { std::alloc::System.realloc(ptr, layout, new) };
        if !p.is_null() {
            HEAP_LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            count_alloc(new);
        }
        p
    }
}

/// Heap bytes live now (0 without [`CountingAlloc`]).
pub fn heap_live() -> usize {
    HEAP_LIVE.load(Ordering::Relaxed)
}

/// The most heap bytes live at once since the last [`reset_heap_peak`].
pub fn heap_peak() -> usize {
    HEAP_PEAK.load(Ordering::Relaxed)
}

/// Starts a new high-water mark from what is live now.
pub fn reset_heap_peak() {
    HEAP_PEAK.store(heap_live(), Ordering::Relaxed);
}

/// Open descriptors of this process (entries of `/proc/self/fd`, minus the one listing them).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("read /proc/self/fd")
        .count()
        .saturating_sub(1)
}

/// Resident set size of this process in bytes (`VmRSS` of `/proc/self/status`).
pub fn rss() -> usize {
    rss_of("self").expect("VmRSS in /proc/self/status")
}

/// `VmRSS` of `/proc/<pid>/status` in bytes (`pid` may be `self`).
pub fn rss_of(pid: &str) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// The soft limit on open descriptors (`Max open files` of `/proc/self/limits`).
pub fn fd_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("read /proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files in /proc/self/limits");
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()
        .unwrap_or("0");
    if soft == "unlimited" {
        usize::MAX
    } else {
        soft.parse().unwrap_or(0)
    }
}

/// Fails the test, saying what to do, unless this process may open `needed` more descriptors.
pub fn require_fds(needed: usize) {
    let limit = fd_limit();
    let open = fd_count();
    assert!(
        open + needed <= limit,
        "this test needs {needed} more file descriptors than the {open} open, but `ulimit -n` is \
         {limit}: raise it (e.g. `ulimit -n 20000`) and run again"
    );
}

/// MiB, for messages.
pub fn mib(n: usize) -> String {
    format!("{:.1} MiB", n as f64 / (1 << 20) as f64)
}

/// Holds the lock that runs the tests of one test binary one at a time (they measure the whole
/// process). A test that failed while holding it does not stop the others.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    install_panic_counter();
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

static BRIDGE_PANICS: AtomicUsize = AtomicUsize::new(0);

/// Counts panics on the bridge's threads (mio's `wsbridge-*` loops, the smol executor thread
/// `wsbridge-smol-test`, smol's `blocking-*` pool), which no test thread would notice otherwise.
fn install_panic_counter() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let name = thread::current().name().unwrap_or("").to_owned();
            if name.starts_with("wsbridge") || name.starts_with("blocking") {
                BRIDGE_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            previous(info);
        }));
    });
}

/// Panics seen on the bridge's threads since the test binary started.
pub fn bridge_panics() -> usize {
    BRIDGE_PANICS.load(Ordering::SeqCst)
}

/// What the process held when a case started; [`Baseline::assert_back`] checks it is held again.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    /// Open descriptors.
    pub fds: usize,
    /// Resident bytes.
    pub rss: usize,
    /// Live heap bytes (with [`CountingAlloc`]).
    pub heap: usize,
    panics: usize,
}

impl Baseline {
    /// Now.
    pub fn take() -> Baseline {
        Baseline {
            fds: fd_count(),
            rss: rss(),
            heap: heap_live(),
            panics: bridge_panics(),
        }
    }

    /// Waits (up to `FD_WAIT`, closes are asynchronous) until no more descriptors are open than at
    /// the baseline and the live heap is back within `HEAP_SLACK` of it, then checks both, that the
    /// resident set grew by less than `rss_slack`, and that no bridge thread panicked.
    pub fn assert_back(&self, what: &str, rss_slack: usize) {
        const FD_WAIT: Duration = Duration::from_secs(5);
        /// What stays allocated on purpose: lazily made statics, and the capacity of mio's session
        /// slab, which does not shrink (about 0.7 MiB after 2,000 sessions). The buffers of the
        /// sessions a case opened are far more (at least 2,000 × 16 KiB in a crowd case).
        const HEAP_SLACK: usize = 2 << 20;
        let deadline = Instant::now() + FD_WAIT;
        let mut fds = fd_count();
        while (fds > self.fds || heap_live() > self.heap + HEAP_SLACK) && Instant::now() < deadline
        {
            thread::sleep(Duration::from_millis(20));
            fds = fd_count();
        }
        let heap = heap_live();
        assert!(
            fds <= self.fds,
            "{what}: {fds} descriptors open {FD_WAIT:?} after the case, {} at its start",
            self.fds
        );
        let now = rss();
        println!(
            "{what}: {fds} descriptors (baseline {}), resident set {} (baseline {}), live heap {} \
             (baseline {})",
            self.fds,
            mib(now),
            mib(self.rss),
            mib(heap),
            mib(self.heap)
        );
        assert!(
            heap <= self.heap + HEAP_SLACK,
            "{what}: {} of heap live {FD_WAIT:?} after the case, {} at its start",
            mib(heap),
            mib(self.heap)
        );
        assert!(
            now < self.rss + rss_slack,
            "{what}: resident set {} after the case, {} at its start (allowed growth {})",
            mib(now),
            mib(self.rss),
            mib(rss_slack)
        );
        assert_eq!(
            bridge_panics(),
            self.panics,
            "{what}: a bridge thread panicked"
        );
    }
}

/// Waits for `cond`, polling every 5 ms, failing the test with `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `counter` has not moved for `quiet` (its writer is blocked) and returns it; fails the
/// test if that takes longer than `limit` or the counter reaches `total` (nothing held the writer).
pub fn wait_for_stall(
    counter: &AtomicUsize,
    total: usize,
    quiet: Duration,
    limit: Duration,
) -> usize {
    let deadline = Instant::now() + limit;
    let mut last = counter.load(Ordering::SeqCst);
    let mut since = Instant::now();
    loop {
        thread::sleep(Duration::from_millis(50));
        let now = counter.load(Ordering::SeqCst);
        assert!(
            now < total,
            "all {total} bytes went through: nothing stalled"
        );
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
    }
}

// ---- sockets ----

/// Connects with read and write timeouts of `timeout`.
pub fn connect(addr: SocketAddr, timeout: Duration) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, timeout).expect("connect to the bridge");
    s.set_read_timeout(Some(timeout)).unwrap();
    s.set_write_timeout(Some(timeout)).unwrap();
    s
}

/// Closes `s` with a reset instead of a FIN (`SO_LINGER` 0).
pub fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(s);
}

/// One of a crowd of silent connections: the socket and when its connect returned.
pub struct Silent {
    /// Non-blocking.
    pub stream: TcpStream,
    /// When the connection was established (the bridge accepts at about this time).
    pub opened: Instant,
    /// How long `connect` took (a dropped SYN costs a retransmit: a second or more).
    pub connect: Duration,
    /// When it was seen closed by the bridge (EOF or reset).
    pub closed: Option<Instant>,
}

/// Opens `n` connections to `addr`; every second one (odd indexes) writes `partial` (e.g. half a
/// request head) and then nothing, the others write nothing at all.
pub fn open_silent(addr: SocketAddr, n: usize, partial: &[u8]) -> Vec<Silent> {
    let mut v = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("silent connection {i} of {n}: {e}"));
        let opened = Instant::now();
        if i % 2 == 1 && !partial.is_empty() {
            stream.write_all(partial).expect("write the partial head");
        }
        stream.set_nonblocking(true).unwrap();
        v.push(Silent {
            stream,
            opened,
            connect: opened - start,
            closed: None,
        });
    }
    v
}

/// Sweeps `crowd` (non-blocking reads) until every socket was closed by the bridge or `limit` has
/// passed, recording when each close was first seen. Sweeps are 10 ms apart; returns how many are
/// still open.
pub fn watch_closes(crowd: &mut [Silent], limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        let mut open = 0;
        for s in crowd.iter_mut().filter(|s| s.closed.is_none()) {
            let closed = loop {
                match s.stream.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue, // an error response, say: wait for the close
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break true, // reset
                }
            };
            if closed {
                s.closed = Some(Instant::now());
            } else {
                open += 1;
            }
        }
        if open == 0 || Instant::now() >= deadline {
            return open;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// A loopback server whose accept loop and connection handlers end when it is dropped, so that every
/// socket it held is closed again (unlike a listener thread that lives as long as the process).
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
    handlers: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
}

/// Set when the server is dropped: handlers poll it (with short read timeouts) and return.
pub type Stop = Arc<AtomicBool>;

impl Server {
    /// Runs `handler` on its own thread for every accepted connection.
    pub fn start<F>(handler: F) -> Server
    where
        F: Fn(TcpStream, Stop) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback server");
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop: Stop = Arc::new(AtomicBool::new(false));
        let handlers = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let accept = {
            let (stop, handlers, accepted) = (stop.clone(), handlers.clone(), accepted.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(false).unwrap();
                            accepted.fetch_add(1, Ordering::SeqCst);
                            let (handler, stop) = (handler.clone(), stop.clone());
                            let h = thread::spawn(move || handler(s, stop));
                            let mut hs = handlers.lock().unwrap();
                            hs.retain(|h: &JoinHandle<()>| !h.is_finished());
                            hs.push(h);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5))
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Server {
            addr,
            stop,
            accept: Some(accept),
            handlers,
            accepted,
        }
    }

    /// Accepts and never sends a byte; reads and discards until the peer leaves or the server stops.
    pub fn silent() -> Server {
        Server::start(|mut s, stop| {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 16 << 10];
            while !stop.load(Ordering::SeqCst) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
        })
    }

    /// A TCP echo server.
    pub fn echo() -> Server {
        Server::start(|mut s, stop| {
            s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            let mut buf = vec![0u8; 64 << 10];
            while !stop.load(Ordering::SeqCst) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            let _ = s.shutdown(Shutdown::Write);
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.accept.take() {
            let _ = a.join();
        }
        let handlers = std::mem::take(&mut *self.handlers.lock().unwrap());
        for h in handlers {
            let _ = h.join();
        }
    }
}

/// Reads an HTTP head (through the blank line, at most 64 KiB) one byte at a time, so nothing after
/// it is consumed. `None` on EOF or error before its end.
pub fn read_head_bytewise(s: &mut impl Read) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 64 << 10 {
            return None;
        }
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

// ---- raw WebSocket frames ----

/// FIN bit of a frame's first byte.
pub const FIN: u8 = 0x80;
/// RSV1 bit.
pub const RSV1: u8 = 0x40;
/// Opcodes.
pub const CONT: u8 = 0x0;
/// Text.
pub const TEXT: u8 = 0x1;
/// Binary.
pub const BINARY: u8 = 0x2;
/// Close.
pub const CLOSE: u8 = 0x8;

/// The header of a frame whose first byte is `first` (FIN, RSV, opcode) with `len` payload bytes,
/// masked with `mask` if given.
pub fn frame_header(first: u8, mask: Option<[u8; 4]>, len: u64) -> Vec<u8> {
    let m = if mask.is_some() { 0x80 } else { 0 };
    let mut v = vec![first];
    if len < 126 {
        v.push(m | len as u8);
    } else if len <= u16::MAX as u64 {
        v.push(m | 126);
        v.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        v.push(m | 127);
        v.extend_from_slice(&len.to_be_bytes());
    }
    if let Some(k) = mask {
        v.extend_from_slice(&k);
    }
    v
}

/// A whole frame (header and payload, masked with `mask` if given).
pub fn frame(first: u8, mask: Option<[u8; 4]>, payload: &[u8]) -> Vec<u8> {
    let mut v = frame_header(first, mask, payload.len() as u64);
    let start = v.len();
    v.extend_from_slice(payload);
    if let Some(k) = mask {
        for (i, b) in v[start..].iter_mut().enumerate() {
            *b ^= k[i % 4];
        }
    }
    v
}

/// The masking key the raw clients use.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A WebSocket client written with bare bytes, for what a library client would refuse to send.
pub struct RawWs {
    /// The connection.
    pub stream: TcpStream,
    /// Bytes read past what was consumed.
    buf: Vec<u8>,
}

/// The `Sec-WebSocket-Key` of RFC 6455's example, and its accept value.
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// A frame as read: its first byte and unmasked payload.
#[derive(Debug)]
pub struct Frame {
    /// FIN, RSV, opcode.
    pub first: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.first & 0x0f
    }
}

impl RawWs {
    /// The upgrade request for `path` on `addr`.
    pub fn request(addr: SocketAddr, path: &str) -> String {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    }

    /// Connects and upgrades; with `pace`, the request is written one byte per write, `pace` apart.
    /// Fails unless the answer is a 101 with the right accept value.
    pub fn connect(addr: SocketAddr, path: &str, pace: Option<Duration>) -> io::Result<RawWs> {
        let mut stream = connect(addr, Duration::from_secs(20));
        stream.set_nodelay(true)?;
        let request = Self::request(addr, path);
        match pace {
            None => stream.write_all(request.as_bytes())?,
            Some(pace) => {
                for b in request.as_bytes() {
                    stream.write_all(std::slice::from_ref(b))?;
                    thread::sleep(pace);
                }
            }
        }
        let head = read_head_bytewise(&mut stream)
            .ok_or_else(|| io::Error::other("closed before the response head"))?;
        if !head.starts_with("HTTP/1.1 101") {
            return Err(io::Error::other(format!("not upgraded: {head:?}")));
        }
        let accept_ok = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(n, v)| {
                n.eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == ACCEPT
            })
        });
        if !accept_ok {
            return Err(io::Error::other(format!("bad accept value: {head:?}")));
        }
        Ok(RawWs {
            stream,
            buf: Vec::new(),
        })
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn fill(&mut self, n: usize) -> io::Result<()> {
        let mut chunk = [0u8; 16 << 10];
        while self.buf.len() < n {
            let got = self.stream.read(&mut chunk)?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..got]);
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        self.fill(n)?;
        Ok(self.buf.drain(..n).collect())
    }

    /// The next frame (payloads up to 64 MiB).
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let h = self.take(2)?;
        let masked = h[1] & 0x80 != 0;
        let len = match h[1] & 0x7f {
            126 => u16::from_be_bytes(self.take(2)?.try_into().unwrap()) as u64,
            127 => u64::from_be_bytes(self.take(8)?.try_into().unwrap()),
            n => n as u64,
        };
        if len > 64 << 20 {
            return Err(io::Error::other(format!("a frame of {len} bytes")));
        }
        let key = if masked { Some(self.take(4)?) } else { None };
        let mut payload = self.take(len as usize)?;
        if let Some(k) = key {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= k[i % 4];
            }
        }
        Ok(Frame {
            first: h[0],
            payload,
        })
    }

    /// Reads frames (at most 10,000) until a Close: its code and reason (1005 when it has none).
    pub fn close_code(&mut self) -> io::Result<(u16, String)> {
        for _ in 0..10_000 {
            let f = self.read_frame()?;
            if f.opcode() == CLOSE {
                if f.payload.len() < 2 {
                    return Ok((1005, String::new()));
                }
                let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                return Ok((code, String::from_utf8_lossy(&f.payload[2..]).into_owned()));
            }
        }
        Err(io::Error::other("no Close in 10,000 frames"))
    }

    /// After the bridge's Close: answers it and reads until the bridge closes the connection. `Ok` if
    /// it did within the read timeout.
    pub fn finish(&mut self) -> io::Result<()> {
        let _ = self.send(&frame(FIN | CLOSE, Some(MASK), &[]));
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(()),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}
