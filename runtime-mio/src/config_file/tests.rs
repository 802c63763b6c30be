use super::*;
use crate::cli::{HalfCloseArg, LogLevel};
use std::path::PathBuf;
use wsbridge_core::tcp2ws::ListenerTls;

fn parse(text: &str) -> Result<ConfigFile, String> {
    ConfigFile::parse("t.toml", text)
}

/// The error of `text`, from parsing or else from building.
fn error(text: &str) -> String {
    match parse(text) {
        Err(e) => e,
        Ok(file) => match file.build() {
            Err(e) => e,
            Ok(_) => panic!("no error for:\n{text}"),
        },
    }
}

fn tcp2ws(l: &FileListener) -> &cli::Tcp2WsArgs {
    match &l.command {
        Command::Tcp2ws(a) => a,
        other => panic!("not tcp2ws: {other:?}"),
    }
}

fn ws2tcp(l: &FileListener) -> &cli::Ws2TcpArgs {
    match &l.command {
        Command::Ws2tcp(a) => a,
        other => panic!("not ws2tcp: {other:?}"),
    }
}

/// A directory with a fresh certificate and key.
fn certs(tag: &str) -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("wsbridge-cf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["mail.test".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

const MAIL: &str = r#"# one backend, three ports
log-level = "warn"
threads = 3
drain-timeout = 2.5

[[listener]]
mode = "tcp2ws"
listen = "127.0.0.1:0"
backend = "ws://127.0.0.1:9/pop3"
tls-cert = ["a.pem", "b.pem"]
tls-key = ["a.key", "b.key"]
idle-timeout = 0.5
max-connections = 0x10
starttls = false
backend-header = "X-Tenant: 7"

[[listener]]
mode = "ws2tcp"
listen = "127.0.0.1:0"
allow = ["10.0.0.0/8", "127.0.0.1/32:25,587"]
console = true
max-lifetime = 0
"#;

#[test]
fn keys_become_the_argv_of_the_modes_flags() {
    let file = parse(MAIL).unwrap();
    assert_eq!(file.global.log_level, Some(LogLevel::Warn));
    assert_eq!(file.global.threads, Some(3));
    assert_eq!(file.global.drain_timeout, Some(Duration::from_millis(2500)));
    assert!(!file.global.reuse_port);
    assert_eq!(file.global.config, None);
    assert_eq!(file.listeners.len(), 2);

    let l = &file.listeners[0];
    assert_eq!((l.index, l.line, l.mode.as_str()), (1, 6, "tcp2ws"));
    assert_eq!(
        l.argv,
        [
            "tcp2ws",
            "--listen=127.0.0.1:0",
            "--backend=ws://127.0.0.1:9/pop3",
            "--tls-cert=a.pem",
            "--tls-cert=b.pem",
            "--tls-key=a.key",
            "--tls-key=b.key",
            "--idle-timeout=0.5",
            "--max-connections=16",
            "--backend-header=X-Tenant: 7",
        ],
        "file order; arrays repeat the flag, in order; false switches are left out; hex is decimal"
    );
    let a = tcp2ws(l);
    assert_eq!(a.backend.to_string(), "ws://127.0.0.1:9/pop3");
    assert_eq!(
        a.tls.tls_cert,
        [PathBuf::from("a.pem"), PathBuf::from("b.pem")]
    );
    assert_eq!(a.idle_timeout, Duration::from_millis(500));
    assert_eq!(a.max_connections, 16);
    assert!(!a.starttls);
    assert_eq!(a.backend_header, [("X-Tenant".into(), "7".into())]);
    assert_eq!(
        a.handshake_timeout,
        Duration::from_secs(10),
        "the flag's default"
    );
    assert_eq!(a.half_close, HalfCloseArg::Close);

    let l = &file.listeners[1];
    assert_eq!((l.index, l.line, l.mode.as_str()), (2, 17, "ws2tcp"));
    assert_eq!(
        l.argv,
        [
            "ws2tcp",
            "--listen=127.0.0.1:0",
            "--allow=10.0.0.0/8",
            "--allow=127.0.0.1/32:25,587",
            "--console",
            "--max-lifetime=0",
        ]
    );
    let a = ws2tcp(l);
    assert_eq!(a.allow, ["10.0.0.0/8", "127.0.0.1/32:25,587"]);
    assert!(a.console);
    assert_eq!(a.max_lifetime, Duration::ZERO);
    assert_eq!(a.max_connections, 1000, "the flag's default");
}

#[test]
fn a_single_value_is_fine_for_a_repeatable_flag_and_strings_keep_leading_dashes() {
    let file = parse(
        "[[listener]]\nmode = \"ws2tcp\"\nallow = \"10.0.0.0/8\"\nallow-origin = []\npath = \"-x\"\n",
    )
    .unwrap();
    let l = &file.listeners[0];
    assert_eq!(l.argv, ["ws2tcp", "--allow=10.0.0.0/8", "--path=-x"]);
    assert_eq!(ws2tcp(l).path.as_deref(), Some("-x"));
}

#[test]
fn every_error_names_the_file_line_and_key() {
    let l = "[[listener]]\nmode = \"tcp2ws\"\nbackend = \"ws://b/\"\n";
    let cases: Vec<(String, &str)> = vec![
        // TOML itself
        ("threads = 3\nthreads = 4\n".into(), "t.toml:2: not valid TOML"),
        ("threads = \n".into(), "t.toml:1: not valid TOML"),
        // the top level
        (
            format!("thread = 3\n{l}"),
            "t.toml:1: unknown top-level key \"thread\"; did you mean \"threads\"?",
        ),
        (
            format!("backend = \"ws://b/\"\n{l}"),
            "t.toml:1: unknown top-level key \"backend\"; it is a listener setting",
        ),
        (
            format!("config = \"other.toml\"\n{l}"),
            "t.toml:1: unknown top-level key \"config\"; a config file cannot name another",
        ),
        (
            format!("threads = \"3\"\n{l}"),
            "t.toml:1: key \"threads\": expected an integer, not a string (\"3\")",
        ),
        (
            format!("\n\nthreads = 0\n{l}"),
            "t.toml:3: invalid value '0' for '--threads <N>'",
        ),
        (
            format!("log-level = \"loud\"\n{l}"),
            "t.toml:1: invalid value 'loud' for '--log-level <LEVEL>'",
        ),
        (
            format!("reuse-port = \"yes\"\n{l}"),
            "t.toml:1: key \"reuse-port\": expected true or false, not a string (\"yes\")",
        ),
        ("threads = 3\n".into(), "t.toml: no [[listener]] table"),
        ("listener = []\n".into(), "t.toml: no [[listener]] table"),
        (
            "listener = 3\n".into(),
            "t.toml:1: \"listener\" must be [[listener]] tables",
        ),
        (
            "[listener]\nmode = \"tcp2ws\"\n".into(),
            "t.toml:1: \"listener\" must be [[listener]] tables",
        ),
        // mode
        (
            format!("{l}\n[[listener]]\nlisten = \"127.0.0.1:1\"\n"),
            "t.toml:5: [[listener]] 2: no mode",
        ),
        (
            format!("{l}[[listener]]\nmode = \"tcpws\"\n"),
            "t.toml:5: [[listener]] 2: key \"mode\": unknown mode \"tcpws\" (expected \"tcp2ws\", \"ws2tcp\" or \"ws2http\")",
        ),
        (
            "[[listener]]\nmode = 1\n".into(),
            "t.toml:2: [[listener]] 1: key \"mode\": unknown mode an integer",
        ),
        // keys of a listener
        (
            format!("{l}tls-crt = [\"a.pem\"]\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): unknown key \"tls-crt\"; did you mean \"tls-cert\"?",
        ),
        (
            format!("{l}log-level = \"debug\"\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): unknown key \"log-level\" here: it is a global setting",
        ),
        (
            format!("{l}target = \"h:1\"\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): unknown key \"target\"",
        ),
        // types
        (
            format!("{l}max-connections = \"many\"\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"max-connections\": expected an integer, not a string (\"many\")",
        ),
        (
            format!("{l}max-connections = 1.5\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"max-connections\": expected an integer, not a float",
        ),
        (
            format!("{l}idle-timeout = \"10\"\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"idle-timeout\": expected a number of seconds, not a string",
        ),
        (
            format!("{l}starttls = \"yes\"\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"starttls\": expected true or false, not a string",
        ),
        (
            format!("{l}listen = 995\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"listen\": expected a string, not an integer",
        ),
        (
            format!("{l}listen = [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"listen\": takes one value, not an array",
        ),
        (
            format!("{l}subprotocol = [\"a\", 1]\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"subprotocol\": expected a string, not an integer",
        ),
        (
            format!("{l}listen = 1979-05-27T07:32:00Z\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"listen\": expected a string, not a datetime",
        ),
        (
            format!("{l}tls = {{ cert = \"a\" }}\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): unknown key \"tls\"",
        ),
        // values clap refuses
        (
            format!("{l}\nhalf-close = \"maybe\"\n"),
            "t.toml:5: [[listener]] 1 (tcp2ws): key \"half-close\": invalid value 'maybe' for '--half-close <MODE>'",
        ),
        (
            format!("{l}idle-timeout = -1\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"idle-timeout\": invalid value '-1'",
        ),
        (
            format!("{l}backend-header = [\"Host: x\"]\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"backend-header\": invalid value 'Host: x'",
        ),
        (
            "[[listener]]\nmode = \"ws2tcp\"\nport = 70000\n".into(),
            "t.toml:3: [[listener]] 1 (ws2tcp): key \"port\": invalid value '70000'",
        ),
        (
            "\n[[listener]]\nmode = \"tcp2ws\"\n".into(),
            "t.toml:2: [[listener]] 1 (tcp2ws): missing key \"backend\" (required)",
        ),
        // values the config builders refuse (PEM files, limits, addresses)
        (
            format!("{l}max-connections = 0\n"),
            "t.toml:4: [[listener]] 1 (tcp2ws): key \"max-connections\": --max-connections must be at least 1",
        ),
        (
            format!("{l}listen = \"127.0.0.1:1\"\ntls-cert = \"/nonexistent/c.pem\"\ntls-key = \"/nonexistent/k.pem\"\n"),
            "t.toml:5: [[listener]] 1 (tcp2ws): key \"tls-cert\": --tls-cert /nonexistent/c.pem",
        ),
        (
            format!("{l}listen = \"127.0.0.1:1\"\nstarttls = true\n"),
            "t.toml:5: [[listener]] 1 (tcp2ws): key \"starttls\": ",
        ),
        (
            "[[listener]]\nmode = \"ws2tcp\"\nlisten = \"127.0.0.1:1\"\n\n[[listener]]\nmode = \"ws2http\"\nbase-url = \"ftp://x/\"\n".into(),
            "t.toml:7: [[listener]] 2 (ws2http): key \"base-url\": --base-url",
        ),
        (
            format!("metrics-listen = \"no port here\"\n{l}"),
            "t.toml:1: key \"metrics-listen\": no port here",
        ),
        // two listeners on one address
        (
            format!("{l}listen = \"127.0.0.1:1995\"\n\n[[listener]]\nmode = \"ws2tcp\"\nlisten = \"127.0.0.1:1995\"\n"),
            "t.toml:8: [[listener]] 2 (ws2tcp): key \"listen\": 127.0.0.1:1995 is also the address of [[listener]] 1 (tcp2ws) (line 1)",
        ),
        (
            format!("{l}listen = \"0.0.0.0:1995\"\n[[listener]]\nmode = \"ws2http\"\nlisten = \"127.0.0.1:1995\"\n"),
            "t.toml:7: [[listener]] 2 (ws2http): key \"listen\": 127.0.0.1:1995 is also the address of [[listener]] 1",
        ),
    ];
    for (text, want) in &cases {
        let got = error(text);
        assert!(
            got.starts_with(want) || (want.ends_with(": ") && got.starts_with(want.trim_end())),
            "for:\n{text}\nwant: {want}\n got: {got}"
        );
        assert!(!got.contains('\n'), "one line: {got}");
    }
}

#[test]
fn same_address_is_the_same_port_on_an_overlapping_ip() {
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert!(same_address(a("127.0.0.1:995"), a("127.0.0.1:995")));
    assert!(same_address(a("0.0.0.0:995"), a("127.0.0.1:995")));
    assert!(
        same_address(a("127.0.0.1:995"), a("[::]:995")),
        "[::] is dual-stack"
    );
    assert!(!same_address(a("0.0.0.0:995"), a("[::1]:995")));
    assert!(!same_address(a("127.0.0.1:995"), a("127.0.0.2:995")));
    assert!(!same_address(a("127.0.0.1:995"), a("127.0.0.1:993")));
    assert!(
        !same_address(a("127.0.0.1:0"), a("127.0.0.1:0")),
        "any free port"
    );
}

#[test]
fn builds_every_listener_with_its_pem_files() {
    let (cert, key) = certs("build");
    let text = format!(
        r#"
[[listener]]
mode = "tcp2ws"
listen = "127.0.0.1:0"
backend = "ws://127.0.0.1:9/pop3"
tls-cert = [{cert:?}]
tls-key = [{key:?}]

[[listener]]
mode = "tcp2ws"
listen = "127.0.0.1:0"
backend = "ws://127.0.0.1:9/smtp"
tls-cert = {cert:?}
tls-key = {key:?}
starttls = true
max-connections = 7

[[listener]]
mode = "ws2http"
listen = "127.0.0.1:0"
allowlist = ['http://127\.0\.0\.1:8080/.*']
"#
    );
    let file = parse(&text).unwrap();
    let plans = file.build().unwrap();
    let modes: Vec<_> = plans.iter().map(|p| p.spec.factory.mode()).collect();
    assert_eq!(modes, ["tcp2ws", "tcp2ws", "ws2http"]);
    assert!(
        plans[0].describe.starts_with("tls=implicit "),
        "{}",
        plans[0].describe
    );
    assert!(
        plans[1].describe.starts_with("tls=starttls "),
        "{}",
        plans[1].describe
    );
    assert_eq!(plans[1].max_connections, 7);
    let (_, cfg) = cli::tcp2ws_config(tcp2ws(&file.listeners[1])).unwrap();
    assert_eq!(cfg.listener_tls, ListenerTls::StartTls);

    // check-config takes the same path and succeeds; a missing file is a config error (exit 2).
    let path = cert.with_file_name("ok.toml");
    std::fs::write(&path, &text).unwrap();
    let g = parse_global(&["wsbridge".to_owned()]).unwrap();
    assert!(check_config(Some(&path), &g).is_ok());
    let missing = cert.with_file_name("missing.toml");
    match check_config(Some(&missing), &g) {
        Err(Failure::Config(m)) => assert!(m.contains("missing.toml: cannot read"), "{m}"),
        other => panic!("{other:?}"),
    }
    match check_config(None, &g) {
        Err(Failure::Config(m)) => assert!(m.contains("no file given"), "{m}"),
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(cert.parent().unwrap()).unwrap();
}

#[test]
fn the_command_lines_global_flags_override_the_top_level_keys() {
    let file = parse(
        "threads = 3\nlog-level = \"warn\"\nmetrics-listen = \"127.0.0.1:0\"\nreuse-port = true\n\n[[listener]]\nmode = \"ws2tcp\"\n",
    )
    .unwrap();
    let cli = |argv: &[&str]| {
        let argv: Vec<String> = std::iter::once("wsbridge")
            .chain(argv.iter().copied())
            .map(String::from)
            .collect();
        parse_global(&argv).unwrap()
    };
    let g = file.global_over(&cli(&["--config", "t.toml"])).unwrap();
    assert_eq!(g.threads, Some(3));
    assert_eq!(g.log_level, Some(LogLevel::Warn));
    assert_eq!(g.metrics_listen.as_deref(), Some("127.0.0.1:0"));
    assert!(g.reuse_port);
    assert_eq!(g.drain_timeout, None);
    assert_eq!(g.config, Some(PathBuf::from("t.toml")));
    let g = file
        .global_over(&cli(&[
            "--threads",
            "5",
            "--log-level",
            "debug",
            "--drain-timeout",
            "0.25",
        ]))
        .unwrap();
    assert_eq!(g.threads, Some(5));
    assert_eq!(g.log_level, Some(LogLevel::Debug));
    assert_eq!(g.drain_timeout, Some(Duration::from_millis(250)));
    assert!(g.reuse_port, "on if either side turns it on");
}

#[test]
fn mode_flag_variables_are_ignored_and_named() {
    // Variables are process-wide: WSBRIDGE_EOF_TIMEOUT is read by no other test of this crate (where a
    // test sets --eof-timeout, its flag wins anyway).
    std::env::set_var("WSBRIDGE_EOF_TIMEOUT", "7");
    let file = parse("[[listener]]\nmode = \"tcp2ws\"\nbackend = \"ws://b/\"\n");
    let ignored = ignored_env_vars();
    std::env::remove_var("WSBRIDGE_EOF_TIMEOUT");
    let file = file.unwrap();
    assert_eq!(
        tcp2ws(&file.listeners[0]).eof_timeout,
        Duration::from_secs(30),
        "the default, not the variable"
    );
    assert!(
        ignored.contains(&"WSBRIDGE_EOF_TIMEOUT".to_owned()),
        "{ignored:?}"
    );
    assert!(
        !ignored.contains(&"WSBRIDGE_THREADS".to_owned()),
        "a global flag"
    );
}

#[test]
fn run_refuses_a_mode_with_a_config_file_and_nothing_at_all() {
    use clap::Parser;
    let cli = Cli::try_parse_from(["wsbridge", "--config", "x.toml", "ws2tcp"]).unwrap();
    match cli::run(cli) {
        Err(Failure::Config(m)) => assert!(m.contains("give no mode"), "{m}"),
        other => panic!("{other:?}"),
    }
    let g = parse_global(&["wsbridge".to_owned()]).unwrap();
    assert!(matches!(cli::run_with(g, None), Err(Failure::Config(_))));
    // A broken file is refused before anything is bound.
    let dir = std::env::temp_dir().join(format!("wsbridge-cf-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[[listener]]\nmode = \"ws2tcp\"\ntimeout = \"x\"\n").unwrap();
    let g = parse_global(&[
        "wsbridge".to_owned(),
        format!("--config={}", path.display()),
    ])
    .unwrap();
    match cli::run_with(g, None) {
        Err(Failure::Config(m)) => {
            assert!(m.ends_with("bad.toml:3: [[listener]] 1 (ws2tcp): key \"timeout\": expected a number of seconds, not a string (\"x\")"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn edit_distance_counts_edits() {
    assert_eq!(edit_distance("tls-crt", "tls-cert"), 1);
    assert_eq!(edit_distance("", "abc"), 3);
    assert_eq!(edit_distance("listen", "listen"), 0);
    assert_eq!(suggest("zzzz", ["listen"].into_iter()), "");
}

#[test]
fn tls_reload_interval_is_a_top_level_key_the_command_line_overrides() {
    let file = parse("tls-reload-interval = 60\n\n[[listener]]\nmode = \"ws2tcp\"\n").unwrap();
    assert_eq!(
        file.global.tls_reload_interval,
        Some(Duration::from_secs(60))
    );
    let none = parse_global(&["wsbridge".to_owned()]).unwrap();
    let g = file.global_over(&none).unwrap();
    assert_eq!(g.tls_reload_interval, Some(Duration::from_secs(60)));
    let argv = ["wsbridge", "--tls-reload-interval", "2.5"].map(String::from);
    let g = file.global_over(&parse_global(&argv).unwrap()).unwrap();
    assert_eq!(g.tls_reload_interval, Some(Duration::from_millis(2500)));
    assert!(error("tls-reload-interval = \"soon\"\n").contains("tls-reload-interval"));
}
