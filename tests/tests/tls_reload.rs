//! Certificate reload of the `wsbridge` binary (issue #7 item 3), run as a real process: `tcp2ws` with
//! implicit TLS in front of an echoing WebSocket backend.
//! - SIGHUP after the PEM files were replaced: new clients get the new certificate, a client connected
//!   before keeps relaying both ways on its old session;
//! - SIGHUP with a broken key: `event=tls_reload_failed` is logged, new clients still get the last good
//!   certificate, and the process lives on;
//! - `--tls-reload-interval 1` picks up replaced files by itself within a few seconds.
//!
//! Only the mio runtime has a binary.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::CertificateDer;
use tungstenite::Message;
use wsbridge_tests::backend::{next_json, Backend};
use wsbridge_tests::certs::TestCert;
use wsbridge_tests::process::Wsbridge;

const BIN: &str = env!("CARGO_BIN_EXE_wsbridge_cli");
/// Bound of every wait in these tests.
const T: Duration = Duration::from_secs(20);

/// A backend that sends every Binary frame back.
fn echo_backend() -> Backend {
    Backend::start(|mut ws, _| {
        assert_eq!(next_json(&mut ws)["type"], "bridge_hello");
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => {
                    if ws.send(Message::Binary(b)).is_err() {
                        break;
                    }
                }
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
}

/// A directory of its own for the listener's `cert.pem` and `key.pem`.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wsbridge-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Puts `contents` at `path` atomically (written aside, then renamed), as deployment tools do.
fn replace(path: &Path, contents: &[u8]) {
    let aside = path.with_extension("new");
    std::fs::write(&aside, contents).expect("write");
    std::fs::rename(&aside, path).expect("rename");
}

/// Makes `cert` the pair in `dir` (`cert.pem`, `key.pem`).
fn install(dir: &Path, cert: &TestCert) {
    replace(
        &dir.join("cert.pem"),
        &std::fs::read(&cert.cert_pem).unwrap(),
    );
    replace(&dir.join("key.pem"), &std::fs::read(&cert.key_pem).unwrap());
}

/// A `tcp2ws` process with implicit TLS from `dir`'s pair, with extra global flags.
fn start(dir: &Path, backend: &Backend, global: &[&str]) -> Wsbridge {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let url = backend.url();
    let mut args = vec!["--log-level", "info", "--threads", "1"];
    args.extend_from_slice(global);
    args.extend_from_slice(&[
        "tcp2ws",
        "--listen",
        "127.0.0.1:0",
        "--backend",
        &url,
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    Wsbridge::start(BIN, &args)
}

/// A TLS client that trusts every one of `certs`.
struct Client(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl Client {
    /// Connects to `addr`, finishes the handshake with one echoed message.
    fn connect(addr: SocketAddr, trusted: &[&TestCert]) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        for c in trusted {
            roots.add(c.cert.clone()).expect("add root");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = "localhost".try_into().unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let tcp = TcpStream::connect_timeout(&addr, T).expect("connect");
        tcp.set_read_timeout(Some(T)).unwrap();
        tcp.set_write_timeout(Some(T)).unwrap();
        let mut c = Client(rustls::StreamOwned::new(conn, tcp));
        c.echo(b"hello");
        c
    }

    /// Sends `data` and reads it back through the backend.
    fn echo(&mut self, data: &[u8]) {
        self.0.write_all(data).expect("client write");
        self.0.flush().expect("client flush");
        let mut back = vec![0; data.len()];
        self.0.read_exact(&mut back).expect("client read");
        assert_eq!(back, data);
    }

    /// The leaf certificate the server presented.
    fn peer(&self) -> CertificateDer<'static> {
        self.0.conn.peer_certificates().expect("handshake done")[0].clone()
    }
}

#[test]
fn sighup_serves_new_files_to_new_clients_keeps_live_sessions_and_survives_a_broken_key() {
    let (a, b) = (TestCert::new(), TestCert::new());
    let dir = temp_dir("sighup");
    install(&dir, &a);
    let backend = echo_backend();
    let mut bridge = start(&dir, &backend, &[]);
    let trusted = [&a, &b];

    let mut c1 = Client::connect(bridge.listen, &trusted);
    assert_eq!(c1.peer(), a.cert, "client 1 gets certificate A");

    install(&dir, &b);
    bridge.signal("HUP");
    let line = bridge
        .wait_log("event=tls_reloaded", T)
        .expect("a tls_reloaded line after SIGHUP");
    assert!(line.contains("cert.pem"), "{line}");
    let mut c2 = Client::connect(bridge.listen, &trusted);
    assert_eq!(c2.peer(), b.cert, "client 2 gets certificate B");
    // Client 1's session is untouched: still certificate A, data both ways.
    c1.echo(b"after the reload");
    assert_eq!(c1.peer(), a.cert);

    // A broken key: the reload fails, the last good certificate stays.
    replace(
        &dir.join("key.pem"),
        b"-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    );
    bridge.signal("HUP");
    let line = bridge
        .wait_log("event=tls_reload_failed", T)
        .expect("a tls_reload_failed line after SIGHUP with a broken key");
    assert!(
        line.contains("listener=127.0.0.1:0") && line.contains("error="),
        "{line}"
    );
    let mut c3 = Client::connect(bridge.listen, &trusted);
    assert_eq!(c3.peer(), b.cert, "client 3 still gets certificate B");
    c1.echo(b"still here");
    c2.echo(b"and here");
    c3.echo(b"and here too");
    assert!(
        bridge.wait_exit(Duration::from_millis(100)).is_none(),
        "SIGHUP must not stop the process: {:?}",
        bridge.log()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reload_interval_picks_up_new_files_by_itself() {
    let (a, b) = (TestCert::new(), TestCert::new());
    let dir = temp_dir("interval");
    install(&dir, &a);
    let backend = echo_backend();
    let bridge = start(&dir, &backend, &["--tls-reload-interval", "1"]);
    let trusted = [&a, &b];
    assert_eq!(Client::connect(bridge.listen, &trusted).peer(), a.cert);

    install(&dir, &b);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = Client::connect(bridge.listen, &trusted).peer();
        if served == b.cert {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "certificate B not served 10 s after the files changed: {:?}",
            bridge.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let line = bridge
        .wait_log("event=tls_reloaded", T)
        .expect("the interval logs its reload");
    assert!(line.contains("trigger=interval"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}
