//! The `wsbridge ws2http` binary itself: it starts and serves `/healthz` on the `--listen` address
//! (flags and `WSBRIDGE_*` variables), and bad values exit 2 naming the flag. The protocol is
//! covered by `tests/tests/ws2http.rs`; this is the command line's plumbing. Loopback only, every wait
//! bounded.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn wsbridge() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wsbridge"));
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// Kills the child when dropped (only the process this test started).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// `GET path` on 127.0.0.1:`port` until it answers (at most `T`): the whole response.
fn get_when_up(port: u16, path: &str, child: &mut Running) -> String {
    let deadline = Instant::now() + T;
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(T)).unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            return out;
        }
        if let Some(status) = child.0.try_wait().unwrap() {
            let mut err = String::new();
            child.0.stderr.take().unwrap().read_to_string(&mut err).ok();
            panic!("wsbridge exited with {status}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "wsbridge did not listen within {T:?}"
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn ws2http_starts_from_flags_and_environment() {
    let port = free_port();
    let mut child = Running(
        wsbridge()
            .args(["ws2http", "--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--allowlist",
                r"http://127\.0\.0\.1:9/.*",
                "--log-level",
                "error",
            ])
            .spawn()
            .expect("run wsbridge"),
    );
    let out = get_when_up(port, "/healthz", &mut child);
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
    let out = get_when_up(
        port,
        "/send/0b7a3f0e-4c5d-4e6f-8a9b-0c1d2e3f4a5b",
        &mut child,
    );
    assert!(out.starts_with("HTTP/1.1 405 "), "GET on /send: {out}");
    drop(child);

    let port = free_port();
    let mut child = Running(
        wsbridge()
            .arg("ws2http")
            .env("WSBRIDGE_LISTEN", format!("127.0.0.1:{port}"))
            .env("WSBRIDGE_HOST_SUFFIX_ALLOWLIST", "example.test")
            .env("WSBRIDGE_BASE_URL", "https://bridge.example.test/")
            .env("WSBRIDGE_LOG_LEVEL", "error")
            .spawn()
            .expect("run wsbridge"),
    );
    let out = get_when_up(port, "/healthz", &mut child);
    assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
}

#[test]
fn ws2http_bad_values_exit_2_naming_the_flag() {
    for (args, flag) in [
        (&["--allowlist", "("][..], "--allowlist"),
        (
            &["--host-suffix-allowlist", "a b"],
            "--host-suffix-allowlist",
        ),
        (&["--base-url", "ftp://x/"], "--base-url"),
        (&["--backend-timeout", "0"], "--backend-timeout"),
        (&["--backend-timeout", "soon"], "--backend-timeout"),
        (&["--max-message-size", "0"], "--max-message-size"),
        (&["--max-connections", "0"], "--max-connections"),
        (&["--backend-ca", "/nonexistent/ca.pem"], "--backend-ca"),
        (&["--tls-cert", "/nonexistent/cert.pem"], "--tls-key"),
    ] {
        let child = wsbridge()
            .arg("ws2http")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .spawn()
            .expect("run wsbridge");
        let out = wait_with_timeout(child);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
}

fn wait_with_timeout(mut child: Child) -> std::process::Output {
    let deadline = Instant::now() + T;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("wsbridge kept running on a bad value");
        }
        thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}
