//! Prometheus metrics of the `wsbridge` binary (`--metrics-listen`, DESIGN §1.5), run as a real process:
//! known traffic through `tcp2ws` — three clients with known byte counts each way and one refused over
//! `--max-connections` — then `/metrics` is fetched with a plain TCP GET, parsed, and every number
//! checked exactly: accepted, active, closed by reason, bytes by direction (also while the sessions are
//! still open: the loops report open sessions' traffic every second), the handshake and connect
//! histograms, over-capacity. `/healthz` answers 200 `ok`, and 503 once a drain started.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::Message;
use wsbridge_tests::backend::{next_json, send_data, Backend};
use wsbridge_tests::data::random_bytes;
use wsbridge_tests::process::Wsbridge;

const BIN: &str = env!("CARGO_BIN_EXE_wsbridge_cli");
const T: Duration = Duration::from_secs(30);
/// Bytes client `i` sends, and bytes the backend answers it with.
const UP: [usize; 3] = [1000, 20_000, 300_000];
const DOWN: [usize; 3] = [7, 70_000, 1 << 20];

/// `GET path` over a fresh connection: the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete response");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert_eq!(length, body.len());
    (status, body.to_owned())
}

/// One scrape: every sample by its full name with labels, e.g.
/// `wsbridge_bytes_total{mode="tcp2ws",listener="127.0.0.1:1",direction="up_to_down"}`; and the
/// `# TYPE` of every family.
struct Scrape {
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
    /// The listener's labels.
    labels: String,
}

impl Scrape {
    fn fetch(metrics: SocketAddr, listen: SocketAddr) -> Scrape {
        let (status, body) = get(metrics, "/metrics");
        assert_eq!(status, 200);
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        for line in body.lines() {
            if let Some(t) = line.strip_prefix("# TYPE ") {
                let (name, kind) = t.split_once(' ').unwrap();
                types.insert(name.to_owned(), kind.to_owned());
            } else if !line.starts_with('#') && !line.is_empty() {
                let (name, value) = line.rsplit_once(' ').unwrap();
                let value = value
                    .parse()
                    .unwrap_or_else(|_| panic!("bad value in {line:?}"));
                assert!(
                    samples.insert(name.to_owned(), value).is_none(),
                    "{name} twice"
                );
            }
        }
        Scrape {
            samples,
            types,
            labels: format!("mode=\"tcp2ws\",listener=\"{listen}\""),
        }
    }

    /// The sample `name{<listener labels>[,extra]}`.
    fn get(&self, name: &str, extra: &str) -> f64 {
        let key = if extra.is_empty() {
            format!("{name}{{{}}}", self.labels)
        } else {
            format!("{name}{{{},{extra}}}", self.labels)
        };
        *self
            .samples
            .get(&key)
            .unwrap_or_else(|| panic!("no sample {key}"))
    }

    fn bytes(&self) -> (f64, f64) {
        (
            self.get("wsbridge_bytes_total", "direction=\"down_to_up\""),
            self.get("wsbridge_bytes_total", "direction=\"up_to_down\""),
        )
    }

    /// Checks a histogram's shape (cumulative buckets, `+Inf` = count) and returns its count.
    fn histogram(&self, name: &str) -> f64 {
        assert_eq!(self.types[name], "histogram");
        let buckets: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter_map(|(k, v)| {
                let rest = k.strip_prefix(&format!("{name}_bucket{{{},le=\"", self.labels))?;
                let le = rest.strip_suffix("\"}")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                Some((le, *v))
            })
            .collect();
        let mut sorted = buckets.clone();
        sorted.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        assert!(sorted.len() > 5, "{name}: {sorted:?}");
        assert!(
            sorted.windows(2).all(|w| w[0].1 <= w[1].1),
            "{name} buckets are cumulative: {sorted:?}"
        );
        let count = self.get(&format!("{name}_count"), "");
        assert_eq!(sorted.last().unwrap(), &(f64::INFINITY, count));
        let sum = self.get(&format!("{name}_sum"), "");
        assert!(sum >= 0.0 && (count > 0.0 || sum == 0.0));
        count
    }
}

#[test]
fn metrics_count_known_traffic_exactly_and_healthz_answers() {
    // Backend: after the hello, reads UP[i] bytes, answers DOWN[i] bytes, then waits for the Close the
    // client's FIN becomes, and answers it. Which client it is comes from the first data byte.
    let backend = Backend::start(|mut ws, _| {
        assert_eq!(next_json(&mut ws)["type"], "bridge_hello");
        let mut got = Vec::new();
        let mut answered = false;
        loop {
            match ws.read() {
                Ok(Message::Binary(b)) => got.extend_from_slice(&b),
                Ok(_) => {}
                Err(_) => break,
            }
            let i = got.first().map(|&b| usize::from(b));
            if let Some(i) = i.filter(|&i| !answered && got.len() == UP[i]) {
                answered = true;
                send_data(&mut ws, &random_bytes(i as u64 + 10, DOWN[i]));
            }
        }
    });
    let url = backend.url();
    let bridge = Wsbridge::start(
        BIN,
        &[
            "--threads",
            "2",
            "--metrics-listen",
            "127.0.0.1:0",
            "tcp2ws",
            "--listen",
            "127.0.0.1:0",
            "--backend",
            &url,
            "--max-connections",
            "3",
        ],
    );
    let metrics = bridge.metrics.expect("the metrics address is logged");
    assert_eq!(get(metrics, "/healthz"), (200, "ok\n".into()));
    assert_eq!(get(metrics, "/nope").0, 404);

    let first = Scrape::fetch(metrics, bridge.listen);
    for (name, kind) in [
        ("wsbridge_connections_accepted_total", "counter"),
        ("wsbridge_connections_active", "gauge"),
        ("wsbridge_connections_closed_total", "counter"),
        ("wsbridge_bytes_total", "counter"),
        ("wsbridge_handshake_seconds", "histogram"),
        ("wsbridge_connect_seconds", "histogram"),
        ("wsbridge_over_capacity_total", "counter"),
    ] {
        assert_eq!(
            first.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    assert_eq!(first.get("wsbridge_connections_accepted_total", ""), 0.0);
    assert_eq!(first.histogram("wsbridge_handshake_seconds"), 0.0);

    // Three clients, each with its payload and the answer it expects.
    let (read_tx, read_rx) = mpsc::channel();
    let mut clients = Vec::new();
    for i in 0..3 {
        let mut c = TcpStream::connect(bridge.listen).unwrap();
        c.set_read_timeout(Some(T)).unwrap();
        let mut payload = random_bytes(i as u64, UP[i]);
        payload[0] = i as u8;
        c.write_all(&payload).unwrap();
        let mut r = c.try_clone().unwrap();
        let tx = read_tx.clone();
        thread::spawn(move || {
            let mut buf = vec![0u8; DOWN[i]];
            r.read_exact(&mut buf).unwrap();
            assert_eq!(buf, random_bytes(i as u64 + 10, DOWN[i]));
            let _ = tx.send(i);
        });
        clients.push(c);
    }
    for _ in 0..3 {
        read_rx
            .recv_timeout(T)
            .expect("every client got its answer");
    }

    // A fourth is over the limit: the TCP listener accepts and closes it at once.
    let mut over = TcpStream::connect(bridge.listen).unwrap();
    over.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(over.read(&mut buf), Ok(0) | Err(_)));

    // While the three are still open, their traffic shows within the report interval (1 s).
    let total_up: usize = UP.iter().sum();
    let total_down: usize = DOWN.iter().sum();
    let deadline = Instant::now() + Duration::from_secs(5);
    let open = loop {
        let s = Scrape::fetch(metrics, bridge.listen);
        if s.bytes() == (total_up as f64, total_down as f64) {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "open sessions' bytes not reported: {:?}",
            s.bytes()
        );
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(open.get("wsbridge_connections_active", ""), 3.0);
    assert_eq!(open.get("wsbridge_connections_accepted_total", ""), 4.0);
    assert_eq!(open.histogram("wsbridge_handshake_seconds"), 3.0);

    // The clients finish: FIN → Close 1000 → the backend's Close → FIN back.
    for c in &mut clients {
        c.shutdown(Shutdown::Write).unwrap();
    }
    for mut c in clients {
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let end = loop {
        let s = Scrape::fetch(metrics, bridge.listen);
        if s.get("wsbridge_connections_active", "") == 0.0 {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "sessions still counted as active"
        );
        thread::sleep(Duration::from_millis(20));
    };

    assert_eq!(end.get("wsbridge_connections_accepted_total", ""), 4.0);
    assert_eq!(end.get("wsbridge_over_capacity_total", ""), 1.0);
    let reasons = [
        ("normal", 3.0),
        ("policy", 1.0),
        ("timeout", 0.0),
        ("peer_error", 0.0),
        ("upstream", 0.0),
        ("shutdown", 0.0),
        ("internal", 0.0),
    ];
    for (reason, n) in reasons {
        let v = end.get(
            "wsbridge_connections_closed_total",
            &format!("reason=\"{reason}\""),
        );
        assert_eq!(v, n, "closed{{reason={reason}}}");
    }
    assert_eq!(end.bytes(), (total_up as f64, total_down as f64));
    assert_eq!(end.histogram("wsbridge_handshake_seconds"), 3.0);
    assert_eq!(end.histogram("wsbridge_connect_seconds"), 3.0);
    assert_eq!(end.samples["wsbridge_draining"], 0.0);

    // Draining: /healthz turns 503 so a load balancer stops sending clients here.
    let _held = TcpStream::connect(bridge.listen).unwrap(); // keeps the drain (30 s) going
    thread::sleep(Duration::from_millis(200));
    bridge.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    while get(metrics, "/healthz").0 != 503 {
        assert!(
            Instant::now() < deadline,
            "/healthz still 200 while draining"
        );
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        Scrape::fetch(metrics, bridge.listen).samples["wsbridge_draining"],
        1.0
    );
}
