//! Real mail clients through `tcp2ws`, on both runtimes (`<scenario>::mio`, `<scenario>::smol`): curl over POP3S (implicit TLS), curl over SMTP and
//! POP3 with STARTTLS / STLS (`--ssl-reqd`), and `openssl s_client -starttls smtp`, each against the
//! scripted servers of `wsbridge_tests::mail`.
//!
//! curl and openssl are required, not optional: if one is missing the test fails and says how to install
//! it (`.ci/run` installs both). Every child process runs under a deadline and is killed when it overruns.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use wsbridge_core::tcp2ws::ListenerTls;
use wsbridge_tests::backend::Backend;
use wsbridge_tests::bridge::{start_tcp2ws, tcp2ws_config, with_tls, Bridge, Runtime};
use wsbridge_tests::certs::TestCert;
use wsbridge_tests::mail::{pop3, smtp, Mail, MailEvent, Pop3, Smtp};

const T: Duration = Duration::from_secs(20);
/// A child process gets this long before it is killed (curl's own `--max-time` is 20 s).
const CHILD_LIMIT: Duration = Duration::from_secs(30);

const MESSAGE_1: &[u8] =
    b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: one\r\n\r\n\
Hello Alice.\r\n.this line starts with a dot\r\n..and this one with two\r\nBob\r\n";
const MESSAGE_2: &[u8] =
    b"From: carol@example.test\r\nTo: alice@example.test\r\nSubject: two\r\n\r\nShort.\r\n";

wsbridge_tests::both_runtimes!(
    curl_pop3s_retrieves_lists_and_deletes_over_implicit_tls,
    curl_smtp_with_ssl_reqd_upgrades_with_starttls_and_delivers_the_body,
    curl_pop3_with_ssl_reqd_upgrades_with_stls_before_logging_in,
    openssl_s_client_starttls_smtp_sees_the_post_tls_ehlo_and_sends_sni,
    smtp_server_reassembles_split_lines_and_splits_pipelined_ones,
    smtp_server_discards_plaintext_pipelined_behind_starttls,
    a_tls_clients_close_notify_ends_its_side_like_a_fin,
);

// ---- child processes ----

struct Output {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

fn spawn_reader(mut r: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// Runs `cmd` with `input` on its stdin (then EOF), killing it if it takes longer than `limit`.
fn run(cmd: &mut Command, input: Option<&[u8]>, limit: Duration) -> Output {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        let input = input.to_vec();
        thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let out = spawn_reader(child.stdout.take().unwrap());
    let err = spawn_reader(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = out.join().unwrap();
    let stderr = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
    let Some(status) = status else {
        panic!(
            "{cmd:?} did not finish within {limit:?} and was killed\nstdout: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&stdout)
        );
    };
    Output {
        ok: status.success(),
        stdout,
        stderr,
    }
}

/// The output of `program args`, or a failure that says how to install the program.
fn require_tool(program: &str, args: &[&str]) -> String {
    match Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => panic!("`{program} {}` failed: {o:?}", args.join(" ")),
        Err(e) => panic!(
            "{program} is required by this test and could not be run ({e}): \
             install {program}: apt-get install {program}"
        ),
    }
}

/// Checks curl is installed and speaks the protocols these tests use.
fn require_curl() {
    let v = require_tool("curl", &["-V"]);
    let protocols = v
        .lines()
        .find_map(|l| l.strip_prefix("Protocols:"))
        .unwrap_or_else(|| panic!("`curl -V` has no Protocols line:\n{v}"));
    let have: Vec<&str> = protocols.split_whitespace().collect();
    for p in ["pop3", "pop3s", "smtp"] {
        assert!(
            have.contains(&p),
            "this curl does not support {p} (its protocols: {protocols}); \
             install a full curl: apt-get install curl"
        );
    }
    let features = v
        .lines()
        .find_map(|l| l.strip_prefix("Features:"))
        .unwrap_or("");
    assert!(
        features.split_whitespace().any(|f| f == "SSL"),
        "this curl has no TLS support (features: {features}); install curl: apt-get install curl"
    );
}

fn require_openssl() {
    require_tool("openssl", &["version"]);
}

fn curl(args: &[&str]) -> Output {
    let out = run(
        Command::new("curl")
            .args(["-s", "-S", "--max-time", "20"])
            .args(args),
        None,
        CHILD_LIMIT,
    );
    assert!(out.ok, "curl {args:?} failed: {}", out.stderr);
    out
}

// ---- what the servers saw ----

/// The events of one session, up to and including `Closed`.
fn session(rx: &Receiver<MailEvent>) -> Vec<MailEvent> {
    let deadline = Instant::now() + T;
    let mut v = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("the session did not end; events so far: {v:#?}"));
        let closed = e == MailEvent::Closed;
        v.push(e);
        if closed {
            return v;
        }
    }
}

/// The command lines seen, with whether each came under TLS.
fn commands(events: &[MailEvent]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            MailEvent::Command { line, tls } => Some((line.clone(), *tls)),
            _ => None,
        })
        .collect()
}

fn position(cmds: &[(String, bool)], line: &str) -> usize {
    cmds.iter()
        .position(|(l, _)| l == line)
        .unwrap_or_else(|| panic!("no {line:?} among {cmds:#?}"))
}

fn hello(events: &[MailEvent]) -> &serde_json::Value {
    match &events[0] {
        MailEvent::Hello(v) => v,
        other => panic!("the first event is {other:?}"),
    }
}

fn tls_started(events: &[MailEvent]) -> &serde_json::Value {
    events
        .iter()
        .find_map(|e| match e {
            MailEvent::TlsStarted(v) => Some(v),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no tls_started in {events:#?}"))
}

fn mails(events: &[MailEvent]) -> Vec<&Mail> {
    events
        .iter()
        .filter_map(|e| match e {
            MailEvent::Mail(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn pop3_server(stls: bool) -> (Backend, Receiver<MailEvent>) {
    let (tx, rx) = mpsc::channel();
    let cfg = Pop3 {
        user: "alice".into(),
        pass: "secret".into(),
        messages: vec![MESSAGE_1.to_vec(), MESSAGE_2.to_vec()],
        stls,
    };
    (Backend::start(pop3(cfg, tx)), rx)
}

fn smtp_server(starttls: bool) -> (Backend, Receiver<MailEvent>) {
    let (tx, rx) = mpsc::channel();
    let cfg = Smtp {
        hostname: "mail.example.test".into(),
        starttls,
        require_tls: starttls,
    };
    (Backend::start(smtp(cfg, tx)), rx)
}

fn bridge(rt: Runtime, backend: &Backend, tls: ListenerTls, cert: &TestCert) -> Bridge {
    let cfg = tcp2ws_config(&backend.url());
    let cfg = match tls {
        ListenerTls::Plain => cfg,
        mode => with_tls(cfg, mode, cert),
    };
    start_tcp2ws(rt, cfg, 100)
}

// ---- the tests ----

fn curl_pop3s_retrieves_lists_and_deletes_over_implicit_tls(rt: Runtime) {
    require_curl();
    let cert = TestCert::new();
    let (backend, rx) = pop3_server(false);
    let bridge = bridge(rt, &backend, ListenerTls::Implicit, &cert);
    let base = format!("pop3s://127.0.0.1:{}", bridge.addr.port());

    // RETR: curl's stdout is the message, dot-stuffing undone.
    let out = curl(&["-k", &format!("{base}/1"), "-u", "alice:secret"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(MESSAGE_1)
    );
    let events = session(&rx);
    assert_eq!(hello(&events)["tls"], true);
    let cmds = commands(&events);
    assert!(cmds.iter().all(|(_, tls)| *tls), "{cmds:#?}");
    assert!(position(&cmds, "USER alice") < position(&cmds, "RETR 1"));
    assert!(events.contains(&MailEvent::Retrieved(1)));
    assert_eq!(cmds.last().unwrap().0, "QUIT");

    // LIST: the scan listing.
    let out = curl(&["-k", &format!("{base}/"), "-u", "alice:secret"]);
    let want = format!("1 {}\r\n2 {}\r\n", MESSAGE_1.len(), MESSAGE_2.len());
    assert_eq!(String::from_utf8_lossy(&out.stdout), want);
    let cmds = commands(&session(&rx));
    position(&cmds, "LIST");

    // DELE, a custom command without a body (-I), committed by curl's QUIT.
    curl(&[
        "-k",
        &format!("{base}/2"),
        "-u",
        "alice:secret",
        "-X",
        "DELE",
        "-I",
    ]);
    let events = session(&rx);
    position(&commands(&events), "DELE 2");
    assert!(events.contains(&MailEvent::Deleted(vec![2])), "{events:#?}");

    // A wrong password is refused and curl says so.
    let out = run(
        Command::new("curl").args([
            "-s",
            "--max-time",
            "20",
            "-k",
            &format!("{base}/1"),
            "-u",
            "alice:wrong",
        ]),
        None,
        CHILD_LIMIT,
    );
    assert!(!out.ok, "curl succeeded with a wrong password");
    assert!(out.stdout.is_empty());
    session(&rx);
}

fn curl_smtp_with_ssl_reqd_upgrades_with_starttls_and_delivers_the_body(rt: Runtime) {
    require_curl();
    let cert = TestCert::new();
    let (backend, rx) = smtp_server(true);
    let bridge = bridge(rt, &backend, ListenerTls::StartTls, &cert);
    let body: &[u8] =
        b"From: a@example.test\r\nTo: b@example.test\r\nSubject: through the bridge\r\n\r\n\
Hello over STARTTLS.\r\n.a line that starts with a dot\r\n..and two\r\n.\r\nThe end.\r\n";
    let file = cert.cert_pem.with_file_name("mail.eml");
    std::fs::write(&file, body).unwrap();
    let out = curl(&[
        "-k",
        "--ssl-reqd",
        &format!("smtp://127.0.0.1:{}", bridge.addr.port()),
        "--mail-from",
        "a@example.test",
        "--mail-rcpt",
        "b@example.test",
        "-T",
        file.to_str().unwrap(),
    ]);
    assert!(out.stdout.is_empty());
    let events = session(&rx);
    assert_eq!(hello(&events)["tls"], false);
    let started = tls_started(&events);
    assert!(started["version"]
        .as_str()
        .is_some_and(|v| v.starts_with("TLS")));
    let cmds = commands(&events);
    let starttls = position(&cmds, "STARTTLS");
    assert!(!cmds[starttls].1, "STARTTLS came in plaintext");
    assert!(
        cmds[starttls + 1..].iter().all(|(_, tls)| *tls),
        "{cmds:#?}"
    );
    assert!(
        cmds[starttls + 1].0.starts_with("EHLO "),
        "a new EHLO after TLS: {cmds:#?}"
    );
    let mails = mails(&events);
    assert_eq!(mails.len(), 1, "{events:#?}");
    let m = mails[0];
    assert!(m.tls);
    assert_eq!(m.from, "a@example.test");
    assert_eq!(m.rcpts, ["b@example.test"]);
    assert_eq!(
        String::from_utf8_lossy(&m.body),
        String::from_utf8_lossy(body)
    );
    assert_eq!(cmds.last().unwrap().0, "QUIT");
}

fn curl_pop3_with_ssl_reqd_upgrades_with_stls_before_logging_in(rt: Runtime) {
    require_curl();
    let cert = TestCert::new();
    let (backend, rx) = pop3_server(true);
    let bridge = bridge(rt, &backend, ListenerTls::StartTls, &cert);
    let url = format!("pop3://127.0.0.1:{}/1", bridge.addr.port());
    let out = curl(&["--ssl-reqd", "-k", &url, "-u", "alice:secret"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(MESSAGE_1)
    );
    let events = session(&rx);
    assert_eq!(hello(&events)["tls"], false);
    tls_started(&events);
    let cmds = commands(&events);
    let stls = position(&cmds, "STLS");
    assert!(!cmds[stls].1);
    assert!(cmds[..stls].iter().all(|(l, _)| l == "CAPA"), "{cmds:#?}");
    assert!(cmds[stls + 1..].iter().all(|(_, tls)| *tls), "{cmds:#?}");
    let user = position(&cmds, "USER alice");
    assert!(
        user > stls && cmds[user].1,
        "USER only under TLS: {cmds:#?}"
    );
    assert!(events.contains(&MailEvent::Retrieved(1)));

    // Without --ssl-reqd curl never asks for STLS; the plain session still works.
    let out = curl(&[&url, "-u", "alice:secret"]);
    assert_eq!(out.stdout, MESSAGE_1);
    let events = session(&rx);
    assert!(commands(&events).iter().all(|(l, tls)| l != "STLS" && !tls));
}

fn openssl_s_client_starttls_smtp_sees_the_post_tls_ehlo_and_sends_sni(rt: Runtime) {
    require_openssl();
    let cert = TestCert::new();
    let (backend, rx) = smtp_server(true);
    let bridge = bridge(rt, &backend, ListenerTls::StartTls, &cert);
    let out = run(
        Command::new("openssl").args([
            "s_client",
            "-starttls",
            "smtp",
            "-connect",
            &format!("127.0.0.1:{}", bridge.addr.port()),
            "-servername",
            "mail.example.test",
            "-quiet",
        ]),
        Some(b"EHLO x\r\nQUIT\r\n"),
        CHILD_LIMIT,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("250-mail.example.test greets x\r\n") && stdout.contains("250 HELP\r\n"),
        "no post-TLS EHLO reply in {stdout:?}; stderr: {}",
        out.stderr
    );
    assert!(
        !stdout.contains("STARTTLS"),
        "STARTTLS is not offered again under TLS: {stdout:?}"
    );
    assert!(stdout.contains("221 2.0.0 Bye\r\n"), "{stdout:?}");
    let events = session(&rx);
    let started = tls_started(&events);
    assert_eq!(started["sni"], "mail.example.test");
    assert_eq!(started["version"], "TLSv1.3");
    let cmds = commands(&events);
    let starttls = position(&cmds, "STARTTLS");
    assert!(!cmds[starttls].1);
    assert_eq!(
        cmds[starttls + 1..],
        [("EHLO x".to_owned(), true), ("QUIT".to_owned(), true)]
    );
}

// ---- the servers' line handling, with a hand-driven client ----

fn connect(addr: std::net::SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect to the bridge");
    s.set_read_timeout(Some(T)).unwrap();
    s.set_write_timeout(Some(T)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads one SMTP reply (its lines up to the one with a space after the code).
fn reply(r: &mut impl BufRead) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("read a reply line");
        assert!(line.ends_with("\r\n"), "truncated reply {all}{line:?}");
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

fn smtp_server_reassembles_split_lines_and_splits_pipelined_ones(rt: Runtime) {
    let cert = TestCert::new();
    let (backend, rx) = smtp_server(false);
    let bridge = bridge(rt, &backend, ListenerTls::Plain, &cert);
    let c = connect(bridge.addr);
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    assert!(reply(&mut r).starts_with("220 "));
    // Pieces far enough apart to become separate frames; several commands in one piece.
    for piece in [
        &b"EH"[..],
        b"LO frag",
        b"\r\nMAIL FROM:<a@x> BODY=8BITMIME\r\nRC",
        b"PT TO:<b@x>\r\nRCPT TO:<c@x>\r\nDATA\r",
        b"\n",
    ] {
        w.write_all(piece).unwrap();
        thread::sleep(Duration::from_millis(30));
    }
    assert!(reply(&mut r).starts_with("250-mail.example.test greets frag"));
    for _ in 0..3 {
        assert!(reply(&mut r).starts_with("250 "));
    }
    assert!(reply(&mut r).starts_with("354 "));
    w.write_all(b"line one\r\n..dot\r\n.\r\nQUIT\r\n").unwrap();
    assert!(reply(&mut r).starts_with("250 "));
    assert!(reply(&mut r).starts_with("221 "));
    let events = session(&rx);
    let m = mails(&events);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].body, b"line one\r\n.dot\r\n");
    assert_eq!(m[0].rcpts, ["b@x", "c@x"]);
    assert!(!m[0].tls);
}

fn smtp_server_discards_plaintext_pipelined_behind_starttls(rt: Runtime) {
    let cert = TestCert::new();
    let (backend, rx) = smtp_server(true);
    let bridge = bridge(rt, &backend, ListenerTls::StartTls, &cert);
    let c = connect(bridge.addr);
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    assert!(reply(&mut r).starts_with("220 "));
    w.write_all(b"EHLO plain\r\n").unwrap();
    assert!(reply(&mut r).contains("250-STARTTLS\r\n"));
    // A before-TLS command in the same segment as STARTTLS (the CVE-2011-0411 pattern).
    w.write_all(b"STARTTLS\r\nMAIL FROM:<evil@x>\r\n").unwrap();
    assert_eq!(reply(&mut r), "220 2.0.0 Ready to start TLS\r\n");
    assert!(
        r.buffer().is_empty(),
        "nothing after the reply in plaintext"
    );
    let name = "mail.example.test".try_into().unwrap();
    let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let tls = rustls::StreamOwned::new(conn, w);
    let mut tls = BufReader::new(tls);
    // MAIL before a new EHLO is refused: the server forgot the plaintext EHLO.
    tls.get_mut().write_all(b"MAIL FROM:<early@x>\r\n").unwrap();
    assert!(reply(&mut tls).starts_with("503 "));
    tls.get_mut()
        .write_all(b"EHLO secure\r\nMAIL FROM:<good@x>\r\nRCPT TO:<r@x>\r\nDATA\r\n")
        .unwrap();
    let ehlo = reply(&mut tls);
    assert!(!ehlo.contains("STARTTLS"), "{ehlo}");
    for want in ["250 ", "250 ", "354 "] {
        assert!(reply(&mut tls).starts_with(want));
    }
    tls.get_mut().write_all(b"secret\r\n.\r\nQUIT\r\n").unwrap();
    assert!(reply(&mut tls).starts_with("250 "));
    assert!(reply(&mut tls).starts_with("221 "));
    let events = session(&rx);
    assert!(
        events.contains(&MailEvent::Discarded(b"MAIL FROM:<evil@x>\r\n".to_vec())),
        "{events:#?}"
    );
    let cmds = commands(&events);
    assert!(cmds.iter().all(|(l, _)| !l.contains("evil")), "{cmds:#?}");
    let m = mails(&events);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].from, "good@x");
    assert_eq!(m[0].body, b"secret\r\n");
    assert!(m[0].tls);
}

// ---- found by curl: a TLS client's close_notify ----

/// A TLS client's close_notify is its EOF, even while its TCP connection stays open. curl sends one and
/// exits when a POP3 server refuses its password; the bridge used to stop reading the client after the
/// alert without telling the backend, so the session hung until the idle timeout (300 s by default).
fn a_tls_clients_close_notify_ends_its_side_like_a_fin(rt: Runtime) {
    use wsbridge_tests::backend::{next, next_json, send_data, send_json};
    let cert = TestCert::new();
    for mode in [ListenerTls::Implicit, ListenerTls::StartTls] {
        let (tx, rx) = mpsc::channel();
        let backend = Backend::start(move |mut ws, _| {
            let _hello = next_json(&mut ws);
            if mode == ListenerTls::StartTls {
                send_json(
                    &mut ws,
                    &serde_json::json!({"type": "start_tls", "reply": "+OK\r\n"}),
                );
                assert_eq!(next_json(&mut ws)["type"], "tls_started");
            }
            send_data(&mut ws, b"+OK ready\r\n");
            let data = next(&mut ws);
            // Then the client's close_notify must reach us as the end of its side.
            let end = ws.read().map_err(|e| e.to_string());
            tx.send((data, end)).unwrap();
            let _ = ws.close(None);
            while ws.read().is_ok() {}
        });
        let bridge = bridge(rt, &backend, mode, &cert);
        let mut c = connect(bridge.addr);
        if mode == ListenerTls::StartTls {
            let mut ok = [0u8; 5];
            c.read_exact(&mut ok).unwrap();
            assert_eq!(&ok, b"+OK\r\n");
        }
        let name = "mail.example.test".try_into().unwrap();
        let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, c);
        let mut ready = [0u8; 11];
        tls.read_exact(&mut ready).unwrap();
        assert_eq!(&ready, b"+OK ready\r\n");
        tls.write_all(b"QUIT\r\n").unwrap();
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        // The TCP connection stays open: only the alert says that the client is done.
        let (data, end) = rx
            .recv_timeout(Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("{mode:?}: the backend never heard that the client closed"));
        assert_eq!(
            data,
            tungstenite::Message::Binary(bytes::Bytes::from_static(b"QUIT\r\n"))
        );
        assert!(
            matches!(end, Ok(tungstenite::Message::Close(_))),
            "{mode:?}: got {end:?}"
        );
        // The backend's Close then ends the session: the client's reads reach the end of the stream.
        let start = Instant::now();
        let mut rest = Vec::new();
        let _ = tls.sock.read_to_end(&mut rest);
        assert!(start.elapsed() < Duration::from_secs(2), "{mode:?}");
    }
}
