//! Capacity load generator for `scripts/bench.sh`: many idle connections through N relay "lanes" that
//! share one entry listener (`wsbridge tcp2ws --reuse-port`), with the load spread over several
//! processes so that none holds more than one end of ~10,000 connections (this machine caps a process
//! at 20,000 descriptors).
//!
//! ```text
//! bench_capacity --connect 127.0.0.1:A --targets 127.0.0.2:T,127.0.0.3:T --sources 127.0.1.1,127.0.1.2
//!                --conns 19000 --entry-pids P1,P2 --exit-pids Q1,Q2
//!                [--system NAME] [--window 64] [--timeout 300] [--settle-ms 1000] [--clk-tck 100]
//! ```
//!
//! Lane `i` is entry process `P_i` → exit process `Q_i` → target `T_i`: the exit dials its own target
//! address, so the connections a target receives are exactly those the kernel's `SO_REUSEPORT` hash
//! gave entry process `P_i`. This process starts (as children of itself):
//! - one **target** process per `--targets` address (`--role target`): it accepts, reads the one byte
//!   each connection carries, sends it back and keeps the connection;
//! - one **client** process per `--sources` address (`--role client`): it opens its share of `--conns`
//!   from that source address (`IP_BIND_ADDRESS_NO_PORT`: one source address gives the ~28,000 ports
//!   of the ephemeral range towards one destination), sends
//!   one byte on each at once, and checks the echo of the connection `--window` places behind, so at most
//!   `--window` connections per client are on their way through the chain (accept backlogs never
//!   overflow into 1 s SYN retransmits), and every connection is checked end to end.
//!
//! When every client has all its connections open and echoed, it reads what each relay process gained
//! in PSS and descriptors, and the kernel's memory (as `bench_idle` does), then closes everything.
//! Prints one line:
//! `capacity system=… procs=N conns=… connect_secs=… per_proc=c1/c2 entry_kib=a1/a2 exit_kib=b1/b2
//!  entry_fds=… exit_fds=… kernel_kib=… others_cpu_pct=… echoed=…`
//! where `per_proc` is the connections each lane held, `*_kib` the PSS gained per connection of each
//! process over its own connections, `*_fds` each process's open descriptors with every connection
//! held, `kernel_kib` the kernel's memory gained system-wide per connection (every socket of the
//! chain, load generator included).

mod bench_util {
    pub mod flags;
    pub mod mem;
    pub mod proc;
}

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bench_util::flags::{die, Flags};
use bench_util::mem::{kernel_kib, pss_kib};
use bench_util::proc::OthersCpu;
use socket2::{Domain, Protocol, Socket, Type};

fn main() {
    let f = Flags::from_env();
    match f.str("role", "coordinator").as_str() {
        "target" => target(&f),
        "client" => client(&f),
        "coordinator" => coordinator(&f),
        r => die(&format!(
            "--role {r:?}: expected target, client or coordinator"
        )),
    }
}

fn addr(f: &Flags, key: &str) -> SocketAddr {
    f.req(key)
        .parse()
        .unwrap_or_else(|_| die(&format!("--{key}: not an address")))
}

fn list<T: std::str::FromStr>(f: &Flags, key: &str) -> Vec<T> {
    f.req(key)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse()
                .unwrap_or_else(|_| die(&format!("--{key}: {s:?} is not valid")))
        })
        .collect()
}

/// The byte connection `i` of client `c` carries: neighbours differ, and so do clients.
fn tag(c: usize, i: usize) -> u8 {
    ((i + 97 * c) % 251) as u8 + 1
}

/// Reads lines from stdin until EOF (the coordinator closed it or died), answering `count`.
fn serve_stdin(count: &AtomicUsize) {
    let stdin = io::stdin();
    for line in stdin.lock().lines() {
        match line.as_deref().map(str::trim) {
            Ok("count") => {
                println!("count {}", count.load(Ordering::Acquire));
                let _ = io::stdout().flush();
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
}

/// `--role target --listen ADDR`: accept, echo the one byte, keep; `count` on stdin prints how many.
fn target(f: &Flags) {
    let listen = addr(f, "listen");
    let deadline = Instant::now() + Duration::from_secs(f.num("timeout", 300));
    let sock = Socket::new(
        Domain::for_address(listen),
        Type::STREAM,
        Some(Protocol::TCP),
    )
    .unwrap_or_else(|e| die(&format!("socket: {e}")));
    sock.set_reuse_address(true)
        .unwrap_or_else(|e| die(&e.to_string()));
    sock.bind(&listen.into())
        .unwrap_or_else(|e| die(&format!("bind {listen}: {e}")));
    sock.listen(4096)
        .unwrap_or_else(|e| die(&format!("listen {listen}: {e}")));
    let listener: std::net::TcpListener = sock.into();
    let count = Arc::new(AtomicUsize::new(0));
    {
        let count = count.clone();
        thread::spawn(move || {
            let mut held = Vec::new();
            loop {
                let (mut s, peer) = listener
                    .accept()
                    .unwrap_or_else(|e| die(&format!("target {listen}: accept: {e}")));
                let left = deadline.saturating_duration_since(Instant::now());
                let mut b = [0u8];
                let r = s
                    .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .and_then(|()| s.read_exact(&mut b))
                    .and_then(|()| s.write_all(&b));
                if let Err(e) = r {
                    die(&format!(
                        "target {listen}: connection {} from {peer}: {e}",
                        held.len()
                    ));
                }
                held.push(s);
                count.fetch_add(1, Ordering::Release);
            }
        });
    }
    println!("ready");
    let _ = io::stdout().flush();
    serve_stdin(&count);
}

/// `--role client --connect ADDR --source IP --conns K --index C`: opens K connections from IP, one
/// checked byte each way on each, then holds them until stdin closes.
fn client(f: &Flags) {
    let connect = addr(f, "connect");
    let source: IpAddr = f
        .req("source")
        .parse()
        .unwrap_or_else(|_| die("--source: not an address"));
    let n = f.num("conns", 1000) as usize;
    let c = f.num("index", 0) as usize;
    let window = f.num("window", 64).max(1) as usize;
    let deadline = Instant::now() + Duration::from_secs(f.num("timeout", 300));
    let check = |i: usize, s: &mut TcpStream| {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut b = [0u8];
        let r = s
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .and_then(|()| s.read_exact(&mut b));
        match r {
            Ok(()) if b[0] == tag(c, i) => {}
            Ok(()) => die(&format!(
                "client {source}: connection {i} got {} back, sent {}",
                b[0],
                tag(c, i)
            )),
            Err(e) => die(&format!("client {source}: connection {i}: echo: {e}")),
        }
    };
    let started = Instant::now();
    let mut near: Vec<TcpStream> = Vec::with_capacity(n);
    for i in 0..n {
        if Instant::now() > deadline {
            die(&format!(
                "client {source}: {i} of {n} opened at the deadline"
            ));
        }
        let s = Socket::new(
            Domain::for_address(connect),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .and_then(|s| {
            bind_address_no_port(&s)?;
            s.bind(&SocketAddr::new(source, 0).into())?;
            s.connect_timeout(&connect.into(), Duration::from_secs(10))?;
            Ok(s)
        });
        let mut s: TcpStream = match s {
            Ok(s) => s.into(),
            Err(e) => die(&format!("client {source}: connection {i}: {e}")),
        };
        if let Err(e) = s.write_all(&[tag(c, i)]) {
            die(&format!("client {source}: connection {i}: send: {e}"));
        }
        near.push(s);
        if i >= window {
            check(i - window, &mut near[i - window]);
        }
    }
    let last = n.saturating_sub(window);
    for (i, s) in near.iter_mut().enumerate().skip(last) {
        check(i, s);
    }
    println!("done {n} {:.3}", started.elapsed().as_secs_f64());
    let _ = io::stdout().flush();
    serve_stdin(&AtomicUsize::new(n));
    drop(near);
}

/// `IP_BIND_ADDRESS_NO_PORT`: `bind` to the source address takes no port; `connect` picks one unique
/// for the whole (source, destination) pair, as it does for an unbound socket. Without it every bound
/// socket would hold a port of the ephemeral range for every address, and the relays' own outgoing
/// connections (which share those ports) would run out.
fn bind_address_no_port(s: &Socket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, value: *const i32, len: u32) -> i32;
    }
    const IPPROTO_IP: i32 = 0;
    const IP_BIND_ADDRESS_NO_PORT: i32 = 24;
    let one: i32 = 1;
    // SAFETY: a valid descriptor and a pointer to an int of the length given, read during the call.
    let r = unsafe {
        setsockopt(
            s.as_raw_fd(),
            IPPROTO_IP,
            IP_BIND_ADDRESS_NO_PORT,
            &one,
            std::mem::size_of::<i32>() as u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    name: String,
}

impl Kid {
    fn spawn(name: String, args: &[String]) -> Kid {
        let exe = std::env::current_exe().unwrap_or_else(|e| die(&format!("current_exe: {e}")));
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| die(&format!("{name}: spawn: {e}")));
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        Kid {
            child,
            stdin,
            stdout,
            name,
        }
    }

    /// The next line the child prints; a child that exits first failed (its error is on stderr).
    fn line(&mut self) -> String {
        let mut s = String::new();
        match self.stdout.read_line(&mut s) {
            Ok(n) if n > 0 => s.trim().to_owned(),
            _ => {
                let status = self.child.wait().map(|s| s.to_string()).unwrap_or_default();
                die(&format!("{} failed ({status})", self.name))
            }
        }
    }

    fn ask(&mut self, what: &str) -> String {
        let w = self.stdin.as_mut().expect("stdin");
        if writeln!(w, "{what}").and_then(|()| w.flush()).is_err() {
            let _ = self.child.wait();
            die(&format!("{} is gone", self.name));
        }
        self.line()
    }

    /// Closes its stdin (it exits, closing its connections) and reaps it.
    fn finish(mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn alive(pids: &[u32], system: &str) {
    for &p in pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let state = stat[stat.rfind(')').map_or(0, |i| i + 1)..]
            .split_whitespace()
            .next()
            .unwrap_or("gone");
        if state == "gone" || state == "Z" || state == "X" {
            die(&format!("{system}: relay process {p} has exited"));
        }
    }
}

fn coordinator(f: &Flags) {
    let system = f.str("system", "?");
    let connect = f.req("connect");
    let targets: Vec<SocketAddr> = list(f, "targets");
    let sources: Vec<IpAddr> = list(f, "sources");
    let entry = f.pids("entry-pids");
    let exit = f.pids("exit-pids");
    let total = f.num("conns", 1000) as usize;
    let timeout = f.num("timeout", 300);
    let window = f.num("window", 64);
    let settle = Duration::from_millis(f.num("settle-ms", 1000));
    let clk = f.num("clk-tck", 100) as f64;
    if entry.len() != targets.len() || exit.len() != targets.len() || sources.is_empty() {
        die("one --targets address per lane, as many --entry-pids and --exit-pids, and --sources");
    }
    let all: Vec<u32> = entry.iter().chain(&exit).copied().collect();
    let others = OthersCpu::start(&all);

    let mut tkids: Vec<Kid> = targets
        .iter()
        .map(|t| {
            let args = [
                "--role",
                "target",
                "--listen",
                &t.to_string(),
                "--timeout",
                &timeout.to_string(),
            ]
            .map(String::from);
            Kid::spawn(format!("target {t}"), &args)
        })
        .collect();
    for k in &mut tkids {
        let l = k.line();
        if l != "ready" {
            die(&format!("{}: said {l:?}", k.name));
        }
    }

    let pss_before: Vec<u64> = all.iter().map(|&p| pss_kib(p)).collect();
    let kernel_before = kernel_kib();
    let started = Instant::now();
    let mut ckids: Vec<Kid> = sources
        .iter()
        .enumerate()
        .map(|(c, src)| {
            let share = total / sources.len() + usize::from(c < total % sources.len());
            let args = [
                "--role",
                "client",
                "--connect",
                &connect,
                "--source",
                &src.to_string(),
                "--conns",
                &share.to_string(),
                "--index",
                &c.to_string(),
                "--window",
                &window.to_string(),
                "--timeout",
                &timeout.to_string(),
            ]
            .map(String::from);
            Kid::spawn(format!("client {src}"), &args)
        })
        .collect();
    // Each client prints `done` once all its connections are open and echoed; read them in parallel
    // so the set-up time is that of the slowest.
    let lines: Vec<String> = thread::scope(|s| {
        let hs: Vec<_> = ckids
            .iter_mut()
            .map(|k| s.spawn(move || k.line()))
            .collect();
        hs.into_iter().map(|h| h.join().expect("reader")).collect()
    });
    let connect_secs = started.elapsed().as_secs_f64();
    let mut opened = 0;
    for (k, l) in ckids.iter().zip(&lines) {
        match l.split_whitespace().collect::<Vec<_>>()[..] {
            ["done", n, _] => opened += n.parse::<usize>().unwrap_or(0),
            _ => die(&format!("{}: said {l:?}", k.name)),
        }
    }
    if opened != total {
        die(&format!(
            "{system}: {opened} connections opened, expected {total}"
        ));
    }
    thread::sleep(settle);
    alive(&all, &system);
    let pss_after: Vec<u64> = all.iter().map(|&p| pss_kib(p)).collect();
    let fds_held: Vec<usize> = all.iter().map(|&p| fds(p)).collect();
    let kernel_after = kernel_kib();
    let per_lane: Vec<usize> = tkids
        .iter_mut()
        .map(|k| {
            let l = k.ask("count");
            l.strip_prefix("count ")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| die(&format!("{}: said {l:?}", k.name)))
        })
        .collect();
    if per_lane.iter().sum::<usize>() != total {
        die(&format!(
            "{system}: the targets hold {per_lane:?} connections, expected {total} in all"
        ));
    }
    let lanes = per_lane.len();
    let kib = |range: std::ops::Range<usize>| -> String {
        range
            .map(|j| {
                let conns = per_lane[j % lanes].max(1) as f64;
                format!(
                    "{:.1}",
                    (pss_after[j] as f64 - pss_before[j] as f64) / conns
                )
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    let join = |v: &[usize]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join("/")
    };
    println!(
        "capacity system={system} procs={lanes} conns={total} connect_secs={connect_secs:.2} per_proc={} entry_kib={} exit_kib={} entry_fds={} exit_fds={} kernel_kib={:.1} others_cpu_pct={:.1} echoed={total}",
        join(&per_lane),
        kib(0..lanes),
        kib(lanes..2 * lanes),
        join(&fds_held[..lanes]),
        join(&fds_held[lanes..]),
        (kernel_after as f64 - kernel_before as f64) / total as f64,
        others.percent(&all, clk),
    );
    for k in ckids {
        k.finish();
    }
    for k in tkids {
        k.finish();
    }
    alive(&all, &system);
}
