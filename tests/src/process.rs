//! The `wsbridge` binary as a child process: started with the test's flags, its addresses read from its
//! log, signalled with `kill`, waited for. Every wait is bounded; a process still running when the
//! handle is dropped is killed.
//!
//! The binary is `wsbridge_cli` of this package (the same `main` as `wsbridge`); integration tests name
//! it with `env!("CARGO_BIN_EXE_wsbridge_cli")`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long the process may take to start listening.
const START: Duration = Duration::from_secs(20);

/// A running `wsbridge`.
pub struct Wsbridge {
    child: Child,
    /// Where its listener accepts (from the `event=listening` log line).
    pub listen: SocketAddr,
    /// Where `/metrics` is served, with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
}

impl Wsbridge {
    /// Runs `bin` with `args` (which should listen on port 0 somewhere on 127.0.0.1) and waits until it
    /// logged its listening address (and its metrics address, if `--metrics-listen` is among `args`).
    pub fn start(bin: &str, args: &[&str]) -> Wsbridge {
        Wsbridge::start_with(Command::new(bin), args)
    }

    /// [`Wsbridge::start`] with a prepared `command` (the binary with, say, extra environment variables).
    pub fn start_with(mut command: Command, args: &[&str]) -> Wsbridge {
        let mut child = command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsbridge");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let keep = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                keep.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
        });
        let want_metrics = args.contains(&"--metrics-listen");
        let mut listen = None;
        let mut metrics = None;
        let deadline = Instant::now() + START;
        while listen.is_none() || (want_metrics && metrics.is_none()) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "wsbridge did not start listening; its log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            };
            if line.contains("event=listening") {
                listen = field(&line, "listen");
            } else if line.contains("event=metrics_listening") {
                metrics = field(&line, "listen");
            }
        }
        Wsbridge {
            child,
            listen: listen.unwrap(),
            metrics,
            log,
            lines,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`TERM`, `INT`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the process to exit, at most `limit`; `None` if it is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (at most `limit`) for a log line containing `what`, and returns it.
    pub fn wait_log(&self, what: &str, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        if let Some(line) = self.log().into_iter().find(|l| l.contains(what)) {
            return Some(line);
        }
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(what) => return Some(line),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every line logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Wsbridge {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The address in `key=ADDR` of a log line.
fn field(line: &str, key: &str) -> Option<SocketAddr> {
    let prefix = format!("{key}=");
    line.split(' ')
        .find_map(|f| f.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim_matches('"').parse().ok())
}
