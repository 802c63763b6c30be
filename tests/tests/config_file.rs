//! Config files of the `wsbridge` binary (issue #7 item 5, DESIGN §1.5), run as a real process:
//! - `--config FILE` runs three listeners of two modes in one process (tcp2ws plain, tcp2ws with
//!   implicit TLS, ws2tcp with a static target), and each relays a round trip; the command line's global
//!   flags override the file's, and the `WSBRIDGE_*` variables of mode flags are ignored (and named);
//! - `check-config` on a broken file exits 2 naming the file, line and key;
//! - `deploy/wsbridge.toml` (with its PEM paths pointed at test certificates, and its commented
//!   listener uncommented) passes `check-config`, one line per listener.
//!
//! Only the mio runtime has a binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;
use wsbridge_tests::backend::{next, next_json, send_data, Backend};
use wsbridge_tests::certs::TestCert;
use wsbridge_tests::process::Wsbridge;

const BIN: &str = env!("CARGO_BIN_EXE_wsbridge_cli");
/// Bound of every wait in these tests.
const T: Duration = Duration::from_secs(20);

/// A fresh directory for this test's files.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsbridge-cfg-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the binary to completion (at most `T`): exit code, stdout, stderr.
fn run(args: &[&str]) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wsbridge");
    let deadline = Instant::now() + T;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("wsbridge {args:?} did not exit within {T:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.code().expect("exited, not killed"), out, err)
}

/// A TCP target on 127.0.0.1 that echoes what it reads, per connection.
fn echo_target() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            thread::spawn(move || {
                s.set_read_timeout(Some(T)).unwrap();
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Reads exactly `n` bytes (bounded by the stream's read timeout).
fn read_n(s: &mut impl Read, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).expect("read the reply");
    buf
}

/// The `event=listening` lines of the first `n` listeners, in order (waiting at most `T` for them).
fn listening_lines(bridge: &Wsbridge, n: usize) -> Vec<String> {
    let deadline = Instant::now() + T;
    loop {
        let lines: Vec<String> = bridge
            .log()
            .into_iter()
            .filter(|l| l.contains("event=listening"))
            .collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "only {} listening line(s):\n{}",
            lines.len(),
            bridge.log().join("\n")
        );
        thread::sleep(Duration::from_millis(10));
    }
}

/// The value of `key=` in a log line.
fn field<'l>(line: &'l str, key: &str) -> &'l str {
    let prefix = format!("{key}=");
    line.split(' ')
        .find_map(|f| f.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in {line}"))
}

#[test]
fn one_process_runs_three_listeners_from_the_file_and_each_relays() {
    let cert = TestCert::new();
    // Echoes every data message with the URL path it was reached on, so a reply proves the route.
    let backend = Backend::start(|mut ws, upgrade| {
        let hello = next_json(&mut ws);
        assert_eq!(hello["type"], "bridge_hello");
        while let Message::Binary(data) = next(&mut ws) {
            let mut reply = format!("{}:", upgrade.path).into_bytes();
            reply.extend_from_slice(&data);
            send_data(&mut ws, &reply);
        }
        while ws.read().is_ok() {}
    });
    let target = echo_target();
    let dir = temp_dir("three");
    let file = dir.join("mail.toml");
    std::fs::write(
        &file,
        format!(
            r#"log-level = "info"
threads = 2

[[listener]]
mode = "tcp2ws"
listen = "127.0.0.1:0"
backend = "ws://{backend}/plain"

[[listener]]
mode = "tcp2ws"
listen = "127.0.0.1:0"
backend = "ws://{backend}/tls"
tls-cert = [{cert:?}]
tls-key = [{key:?}]
handshake-timeout = 5

[[listener]]
mode = "ws2tcp"
listen = "127.0.0.1:0"
target = "{target}"
max-connections = 10
"#,
            backend = backend.addr,
            cert = cert.cert_pem.display().to_string(),
            key = cert.key_pem.display().to_string(),
        ),
    )
    .unwrap();

    // A mode variable in the environment must change nothing (and be named in a warning); the
    // command line's --threads overrides the file's.
    let mut child = Command::new(BIN);
    child
        .env("WSBRIDGE_BACKEND", "ws://127.0.0.1:1/elsewhere")
        .env("WSBRIDGE_MAX_CONNECTIONS", "1");
    let bridge = Wsbridge::start_with(
        child,
        &["--config", file.to_str().unwrap(), "--threads", "1"],
    );
    let lines = listening_lines(&bridge, 3);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let modes: Vec<&str> = lines.iter().map(|l| field(l, "mode")).collect();
    assert_eq!(modes, ["tcp2ws", "tcp2ws", "ws2tcp"]);
    assert_eq!(field(&lines[0], "tls"), "plain");
    assert_eq!(field(&lines[1], "tls"), "implicit");
    assert!(
        lines.iter().all(|l| field(l, "threads") == "1"),
        "{lines:#?}"
    );
    let addr = |i: usize| -> SocketAddr { field(&lines[i], "listen").parse().unwrap() };
    let warning = bridge
        .wait_log("ignored=", T)
        .expect("a warning names the ignored variables");
    assert!(
        warning.contains("WSBRIDGE_BACKEND") && warning.contains("WSBRIDGE_MAX_CONNECTIONS"),
        "{warning}"
    );

    // 1: plain TCP → /plain
    let mut plain = TcpStream::connect(addr(0)).unwrap();
    plain.set_read_timeout(Some(T)).unwrap();
    plain.write_all(b"one\r\n").unwrap();
    assert_eq!(read_n(&mut plain, 12), b"/plain:one\r\n");

    // 2: implicit TLS → /tls
    let name = "mail.example.test".try_into().unwrap();
    let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let tcp = TcpStream::connect(addr(1)).unwrap();
    tcp.set_read_timeout(Some(T)).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"two\r\n").unwrap();
    assert_eq!(read_n(&mut tls, 10), b"/tls:two\r\n");

    // 3: WebSocket → the static TCP target
    let stream = TcpStream::connect(addr(2)).unwrap();
    stream.set_read_timeout(Some(T)).unwrap();
    let (mut ws, _) = tungstenite::client(format!("ws://{}/", addr(2)), stream).expect("upgrade");
    ws.send(Message::Binary(b"three".to_vec().into())).unwrap();
    let reply = loop {
        match ws.read().expect("the echo") {
            Message::Binary(b) => break b,
            _ => continue,
        }
    };
    assert_eq!(&reply[..], b"three");

    // All three at once still: the first listener serves a second client.
    let mut again = TcpStream::connect(addr(0)).unwrap();
    again.set_read_timeout(Some(T)).unwrap();
    again.write_all(b"four\r\n").unwrap();
    assert_eq!(read_n(&mut again, 13), b"/plain:four\r\n");
    drop(bridge);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_config_on_a_broken_file_exits_2_naming_the_line_and_key() {
    let dir = temp_dir("broken");
    let file = dir.join("mail.toml");
    std::fs::write(
        &file,
        "threads = 2\n\n[[listener]]\nmode = \"tcp2ws\"\nlisten = \"127.0.0.1:0\"\nbackend = \"ws://127.0.0.1:9/\"\n\n[[listener]]\nmode = \"tcp2ws\"\nbackend = \"ws://127.0.0.1:9/\"\ntls-crt = [\"a.pem\"]\n",
    )
    .unwrap();
    let path = file.to_str().unwrap();
    let (code, out, err) = run(&["check-config", path]);
    assert_eq!(code, 2, "stdout: {out}\nstderr: {err}");
    assert_eq!(
        err.trim(),
        format!(
            "wsbridge: error: {path}:11: [[listener]] 2 (tcp2ws): unknown key \"tls-crt\"; did you mean \"tls-cert\"?"
        )
    );
    assert!(out.is_empty(), "{out}");

    // --config refuses it the same way, before listening anywhere.
    let (code, _, err2) = run(&["--config", path]);
    assert_eq!((code, err2), (2, err));

    // A value of the wrong type, and a bad value.
    std::fs::write(
        &file,
        "[[listener]]\nmode = \"ws2tcp\"\n\nmax-connections = \"many\"\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", path]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{path}:4: [[listener]] 1 (ws2tcp): key \"max-connections\": expected an integer"
        )),
        "{err}"
    );
    std::fs::write(
        &file,
        "[[listener]]\nmode = \"ws2tcp\"\nconnect-timeout = -2\n",
    )
    .unwrap();
    let (code, _, err) = run(&["check-config", path]);
    assert_eq!(code, 2);
    assert!(
        err.contains(&format!(
            "{path}:3: [[listener]] 1 (ws2tcp): key \"connect-timeout\": invalid value '-2'"
        )),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `deploy/wsbridge.toml` with its PEM paths replaced by `cert`'s, and its commented listener enabled.
fn deploy_example(cert: &TestCert, dir: &Path) -> PathBuf {
    let text = include_str!("../../deploy/wsbridge.toml");
    let mut out = String::new();
    let mut commented_listener = false;
    for line in text.lines() {
        commented_listener |= line.starts_with("# [[listener]]");
        let line = if commented_listener {
            line.strip_prefix("# ").unwrap_or(line)
        } else {
            line
        };
        out.push_str(line);
        out.push('\n');
    }
    assert!(commented_listener, "the example keeps a commented listener");
    let out = out
        .replace("/etc/wsbridge/tls.pem", cert.cert_pem.to_str().unwrap())
        .replace("/etc/wsbridge/tls.key", cert.key_pem.to_str().unwrap());
    let path = dir.join("wsbridge.toml");
    std::fs::write(&path, out).unwrap();
    path
}

#[test]
fn the_deploy_example_passes_check_config() {
    let cert = TestCert::new();
    let dir = temp_dir("deploy");
    let path = deploy_example(&cert, &dir);
    let (code, out, err) = run(&["check-config", path.to_str().unwrap()]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    for (line, want) in lines.iter().zip([
        "listener 1: tcp2ws 0.0.0.0:995 tls=implicit backend=wss://",
        "listener 2: tcp2ws 0.0.0.0:993 tls=implicit backend=wss://",
        "listener 3: tcp2ws 0.0.0.0:587 tls=starttls backend=wss://",
        "listener 4: ws2tcp 127.0.0.1:8080 tls=false target=dynamic allow=",
    ]) {
        assert!(line.starts_with(want), "{line}\nwant: {want}");
    }
    // As shipped (PEM files under /etc/wsbridge that do not exist here) it names the first one.
    let (code, _, err) = run(&[
        "check-config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/wsbridge.toml"),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("wsbridge.toml:21: [[listener]] 1 (tcp2ws): key \"tls-cert\": --tls-cert /etc/wsbridge/tls.pem"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
