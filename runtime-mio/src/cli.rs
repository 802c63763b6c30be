//! The `wsbridge` command line: `wsbridge [GLOBAL FLAGS] <tcp2ws|ws2tcp|ws2http|check-config> [MODE FLAGS]`
//! (DESIGN §1.5). Every flag also reads `WSBRIDGE_<FLAG_IN_CAPS_WITH_UNDERSCORES>`; global flags are
//! accepted before or after the subcommand.
//!
//! Exit codes: 0 after a clean shutdown (and for `--help`/`--version`), 2 for a usage or configuration
//! error (printed as `wsbridge: error: …`), 1 when the server cannot start (a port in use…).
//!
//! SIGTERM or SIGINT drains gracefully (see [`crate::signals`]): the listeners close at once, live
//! connections get `--drain-timeout` to finish, then the rest are closed (1001 / FIN) and it exits 0. A
//! second signal exits at once with 128 + the signal number. SIGHUP (and `--tls-reload-interval`)
//! reloads every listener's `--tls-cert`/`--tls-key` files (see [`crate::tls_reload`]).

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};
use wsbridge_core::http::headers::{is_field_value, is_token};
use wsbridge_core::proxy::{ProxyAccept, ProxyProtocol, Version as ProxyVersion};
use wsbridge_core::session::SessionFactory;
use wsbridge_core::tcp2ws::{HalfClose, ListenerTls, Tcp2WsConfig, Tcp2WsFactory};
use wsbridge_core::tls::{client_config, RustlsSession, TlsSession};
use wsbridge_core::tls::{ClientTlsFactory, ServerTlsFactory};
use wsbridge_core::url::WsUrl;
use wsbridge_core::ws2http::{Allowlist, Ws2HttpConfig, Ws2HttpFactory};
use wsbridge_core::ws2tcp::{StaticPage, StaticTarget, TargetPolicy, Ws2TcpConfig, Ws2TcpFactory};

use crate::driver::{ListenerSpec, RuntimeOptions, Server};
use crate::log::{self, Level, Val};
use crate::pem::load_certs;
use crate::signals::StopSignals;
use crate::tls_reload::CertStore;

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "wsbridge",
    version,
    about = "Bridges raw TCP/TLS sockets, WebSockets and HTTP",
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Flags of the process, valid with every mode.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The mode to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags accepted before or after the subcommand.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Run every listener table of this TOML file; give no mode. Global flags given here override its
    /// top-level keys; the WSBRIDGE_* variables of mode flags are ignored. See check-config
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WSBRIDGE_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Set SO_REUSEPORT on the listeners, so another process may listen on the same port
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WSBRIDGE_REUSE_PORT",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub reuse_port: bool,

    /// Log level [default: info; RUST_LOG is read when this is not given]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WSBRIDGE_LOG_LEVEL",
        value_name = "LEVEL",
        value_enum
    )]
    pub log_level: Option<LogLevel>,

    /// Event loop threads [default: the available cores]
    #[arg(long, global = true,
        help_heading = "Global options", env = "WSBRIDGE_THREADS", value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,

    /// Serve Prometheus metrics (GET /metrics) and GET /healthz on this address
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "WSBRIDGE_METRICS_LISTEN",
        value_name = "ADDR"
    )]
    pub metrics_listen: Option<String>,

    /// On SIGTERM/SIGINT, stop accepting and let connections finish for this long, then close them [default: 30]
    #[arg(long, global = true,
        help_heading = "Global options", env = "WSBRIDGE_DRAIN_TIMEOUT", value_name = "SECS", value_parser = parse_secs)]
    pub drain_timeout: Option<Duration>,

    /// Every SECS, reload the --tls-cert/--tls-key files that changed on disk (as SIGHUP does for all
    /// of them); a broken file keeps the old certificate [default: off]
    #[arg(long, global = true,
        help_heading = "Global options", env = "WSBRIDGE_TLS_RELOAD_INTERVAL", value_name = "SECS", value_parser = parse_secs)]
    pub tls_reload_interval: Option<Duration>,
}

/// `--log-level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Failures of the process only
    Error,
    /// Also what an operator should look at
    Warn,
    /// Also one line per connection
    Info,
    /// Also per-connection detail
    Debug,
}

impl From<LogLevel> for Level {
    fn from(l: LogLevel) -> Level {
        match l {
            LogLevel::Error => Level::Error,
            LogLevel::Warn => Level::Warn,
            LogLevel::Info => Level::Info,
            LogLevel::Debug => Level::Debug,
        }
    }
}

/// The modes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Accept TCP clients (plain, implicit TLS or STARTTLS) and give each its own WebSocket to a backend
    Tcp2ws(Box<Tcp2WsArgs>),
    /// Accept WebSockets and relay each to a TCP or TLS target (Socket2Web JSON handshake, or a fixed --target)
    Ws2tcp(Box<Ws2TcpArgs>),
    /// Accept WebSockets and relay each message as an HTTP POST to an allow-listed backend, which answers
    /// through a callback URL (fermyon websocket-bridge compatible)
    Ws2http(Box<Ws2HttpArgs>),
    /// Check a config file as --config would, print one line per listener and exit (0: valid, 2: not)
    ///
    /// PEM files are loaded and every listener is built, but nothing is bound. An error names the
    /// file, line and key
    CheckConfig(CheckConfigArgs),
}

/// `wsbridge check-config` arguments.
#[derive(Debug, Args)]
pub struct CheckConfigArgs {
    /// The TOML config file [default: the one of --config]
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// `what a client's FIN means`, as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HalfCloseArg {
    /// Client FIN: flush, Close(1000) to the backend, keep relaying until the backend's Close
    Close,
    /// Client FIN: {"type":"eof"} to the backend, which closes when it is done
    Eof,
}

/// `wsbridge tcp2ws` flags.
#[derive(Debug, Args)]
pub struct Tcp2WsArgs {
    /// Address to accept TCP clients on
    #[arg(
        long,
        env = "WSBRIDGE_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:1100"
    )]
    pub listen: String,

    /// The WebSocket backend each client is bridged to (ws:// or wss://)
    #[arg(long, env = "WSBRIDGE_BACKEND", value_name = "URL", value_parser = parse_url)]
    pub backend: WsUrl,

    /// TLS towards clients.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// A PROXY protocol header from a load balancer in front.
    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Per-client-address and accept-rate limits.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Plain listener that switches to TLS when the backend sends start_tls (needs --tls-cert and --tls-key)
    #[arg(
        long,
        env = "WSBRIDGE_STARTTLS",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub starttls: bool,

    /// Extra trust roots (PEM) for a wss:// backend, on top of the Mozilla roots
    #[arg(long, env = "WSBRIDGE_BACKEND_CA", value_name = "PEM")]
    pub backend_ca: Option<PathBuf>,

    /// Extra header on the upgrade request, 'Name: value' (repeatable; in the environment one per line)
    #[arg(
        long,
        env = "WSBRIDGE_BACKEND_HEADER",
        value_name = "'NAME: VALUE'",
        value_parser = parse_header,
        value_delimiter = '\n'
    )]
    pub backend_header: Vec<(String, String)>,

    /// Subprotocol offered after wsbridge.v1 (repeatable; in the environment comma-separated)
    #[arg(
        long,
        env = "WSBRIDGE_SUBPROTOCOL",
        value_name = "NAME",
        value_parser = parse_token,
        value_delimiter = ','
    )]
    pub subprotocol: Vec<String>,

    /// Seconds from accept through the client's TLS handshake to the backend's upgrade
    #[arg(long, env = "WSBRIDGE_HANDSHAKE_TIMEOUT", value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub handshake_timeout: Duration,

    /// Seconds without payload either way before the connection is closed (0 = off)
    #[arg(long, env = "WSBRIDGE_IDLE_TIMEOUT", value_name = "SECS", default_value = "300", value_parser = parse_secs)]
    pub idle_timeout: Duration,

    /// Seconds a connection may last at most (0 = off)
    #[arg(long, env = "WSBRIDGE_MAX_LIFETIME", value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    pub max_lifetime: Duration,

    /// The WebSocket heartbeat.
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,

    /// Bytes buffered per direction before the sending side stops being read
    #[arg(
        long,
        env = "WSBRIDGE_BUFFER_SIZE",
        value_name = "BYTES",
        default_value_t = 65536
    )]
    pub buffer_size: usize,

    /// Connections open at once, counted from accept; over it a client is accepted and closed at once
    #[arg(
        long,
        env = "WSBRIDGE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// What a client's FIN means
    #[arg(
        long,
        env = "WSBRIDGE_HALF_CLOSE",
        value_name = "MODE",
        value_enum,
        default_value_t = HalfCloseArg::Close
    )]
    pub half_close: HalfCloseArg,

    /// With --half-close eof: seconds the backend may keep the connection after the client's FIN
    #[arg(long, env = "WSBRIDGE_EOF_TIMEOUT", value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub eof_timeout: Duration,
}

/// `wsbridge ws2tcp` flags.
#[derive(Debug, Args)]
pub struct Ws2TcpArgs {
    /// Address to accept WebSocket clients on
    #[arg(
        long,
        env = "WSBRIDGE_LISTEN",
        value_name = "ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen: String,

    /// Socket2Web compatibility: the listen address's IP (alias of the host part of --listen)
    #[arg(long, env = "WSBRIDGE_IP", value_name = "IP")]
    pub ip: Option<String>,

    /// Socket2Web compatibility: the listen port (alias of the port part of --listen)
    #[arg(long, env = "WSBRIDGE_PORT", value_name = "PORT")]
    pub port: Option<u16>,

    /// TLS towards clients.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// A PROXY protocol header from a load balancer in front.
    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Per-client-address and accept-rate limits.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Static mode: relay every client to this HOST:PORT, without greeting or handshake (websockify
    /// compatible; the wsbridge.v1 tunnel from tcp2ws). The operator's target is trusted
    #[arg(long, env = "WSBRIDGE_TARGET", value_name = "HOST:PORT", value_parser = parse_target)]
    pub target: Option<StaticTarget>,

    /// Extra trust roots (PEM) for the "tls" protocol towards targets, on top of the Mozilla roots
    #[arg(long, env = "WSBRIDGE_TARGET_CA", value_name = "PEM")]
    pub target_ca: Option<PathBuf>,

    /// Start every target connection with a PROXY protocol header (v1 or v2) naming the WebSocket
    /// client as the source (on the wsbridge.v1 tunnel: the tcp2ws client of its bridge_hello) and the
    /// target as the destination
    #[arg(long, env = "WSBRIDGE_SEND_PROXY_PROTOCOL", value_name = "v1|v2", value_parser = parse_proxy_version)]
    pub send_proxy_protocol: Option<ProxyVersion>,

    /// Allow dynamic targets in CIDR[:PORTS] (repeatable; in the environment space-separated). With any
    /// --allow only the listed ranges are allowed; without, public unicast addresses are
    #[arg(
        long,
        env = "WSBRIDGE_ALLOW",
        value_name = "CIDR[:PORTS]",
        value_delimiter = ' '
    )]
    pub allow: Vec<String>,

    /// Deny dynamic targets in CIDR[:PORTS] (repeatable; in the environment space-separated); wins over --allow
    #[arg(
        long,
        env = "WSBRIDGE_DENY",
        value_name = "CIDR[:PORTS]",
        value_delimiter = ' '
    )]
    pub deny: Vec<String>,

    /// Browser Origin allowed to connect (repeatable; in the environment comma-separated). Other
    /// origins get 403; without the flag any origin may connect
    #[arg(
        long,
        env = "WSBRIDGE_ALLOW_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allow_origin: Vec<String>,

    /// Serve upgrades on this path only (others get 404) [default: any path]
    #[arg(long, env = "WSBRIDGE_PATH", value_name = "PATH")]
    pub path: Option<String>,

    /// Serve the web console: GET / is a page that connects to a target through this gateway and shows
    /// both directions as a hexdump, GET /wsbridge.mjs the JS client it uses. Its connections are
    /// ordinary clients: the target policy applies (with --allow-origin, list this gateway's own origin)
    #[arg(
        long,
        env = "WSBRIDGE_CONSOLE",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub console: bool,

    /// Seconds from accept through the upgrade to the client's handshake
    #[arg(long, env = "WSBRIDGE_TIMEOUT", value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub timeout: Duration,

    /// Seconds to resolve, connect to and (tls) handshake with the target
    #[arg(long, env = "WSBRIDGE_CONNECT_TIMEOUT", value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub connect_timeout: Duration,

    /// Seconds without payload either way before the connection is closed (0 = off)
    #[arg(long, env = "WSBRIDGE_IDLE_TIMEOUT", value_name = "SECS", default_value = "300", value_parser = parse_secs)]
    pub idle_timeout: Duration,

    /// Seconds a connection may last at most (0 = off)
    #[arg(long, env = "WSBRIDGE_MAX_LIFETIME", value_name = "SECS", default_value = "3600", value_parser = parse_secs)]
    pub max_lifetime: Duration,

    /// The WebSocket heartbeat.
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,

    /// Bytes buffered per direction before the sending side stops being read
    #[arg(
        long,
        env = "WSBRIDGE_BUFFER_SIZE",
        value_name = "BYTES",
        default_value_t = 65536
    )]
    pub buffer_size: usize,

    /// Connections open at once, counted from accept; over it a client gets Close 1013
    #[arg(
        long,
        env = "WSBRIDGE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 1000
    )]
    pub max_connections: usize,
}

/// `wsbridge ws2http` flags.
#[derive(Debug, Args)]
pub struct Ws2HttpArgs {
    /// Address to accept WebSocket clients and callbacks on
    #[arg(
        long,
        env = "WSBRIDGE_LISTEN",
        value_name = "ADDR",
        default_value = Ws2HttpConfig::DEFAULT_LISTEN
    )]
    pub listen: String,

    /// Public URL of this listener, the prefix of every callback URL (<URL>/send/<uuid>)
    /// [default: http(s)://<--listen>/]
    #[arg(long, env = "WSBRIDGE_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,

    /// TLS towards clients.
    #[command(flatten)]
    pub tls: TlsArgs,

    /// A PROXY protocol header from a load balancer in front.
    #[command(flatten)]
    pub proxy: ProxyArgs,

    /// Per-client-address and accept-rate limits.
    #[command(flatten)]
    pub limits: LimitArgs,

    /// Extra trust roots (PEM) for https:// backends, on top of the Mozilla roots
    #[arg(long, env = "WSBRIDGE_BACKEND_CA", value_name = "PEM")]
    pub backend_ca: Option<PathBuf>,

    /// Regular expression a backend URL must match as a whole (repeatable; in the environment one per
    /// line). Without --allowlist or --host-suffix-allowlist every backend URL is refused
    #[arg(
        long,
        env = "WSBRIDGE_ALLOWLIST",
        value_name = "REGEX",
        value_delimiter = '\n'
    )]
    pub allowlist: Vec<String>,

    /// Allow https:// backend URLs whose host is SUFFIX or ends with .SUFFIX (repeatable; in the
    /// environment comma-separated)
    #[arg(
        long,
        env = "WSBRIDGE_HOST_SUFFIX_ALLOWLIST",
        value_name = "SUFFIX",
        value_delimiter = ','
    )]
    pub host_suffix_allowlist: Vec<String>,

    /// Accepted for websocket-bridge compatibility; every client keeps its own backend connection
    #[arg(
        long,
        env = "WSBRIDGE_GROUP_BY_HOST",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub group_by_host: bool,

    /// Connections open at once, counted from accept; over it a client gets Close 1013 (503 for HTTP)
    #[arg(
        long,
        env = "WSBRIDGE_MAX_CONNECTIONS",
        value_name = "N",
        default_value_t = 10_000
    )]
    pub max_connections: usize,

    /// Largest client message posted to a backend, and largest callback body
    #[arg(
        long,
        env = "WSBRIDGE_MAX_MESSAGE_SIZE",
        value_name = "BYTES",
        default_value_t = 1 << 20
    )]
    pub max_message_size: usize,

    /// Seconds each backend request (resolve, connect, TLS, response) may take
    #[arg(long, env = "WSBRIDGE_BACKEND_TIMEOUT", value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    pub backend_timeout: Duration,

    /// Seconds without a message either way before a client is closed (0 = off)
    #[arg(long, env = "WSBRIDGE_IDLE_TIMEOUT", value_name = "SECS", default_value = "0", value_parser = parse_secs)]
    pub idle_timeout: Duration,

    /// The WebSocket heartbeat.
    #[command(flatten)]
    pub heartbeat: HeartbeatArgs,
}

fn parse_target(s: &str) -> Result<StaticTarget, String> {
    StaticTarget::parse(s)
}

fn parse_url(s: &str) -> Result<WsUrl, String> {
    WsUrl::parse(s).map_err(|e| e.to_string())
}

/// Seconds as a non-negative decimal number (`10`, `0.5`).
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs)
        .map_err(|_| format!("{s:?} is not a usable number of seconds"))
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(n),
        _ => Err(format!("{s:?}: expected a number from 1 to 1024")),
    }
}

fn parse_token(s: &str) -> Result<String, String> {
    if is_token(s.as_bytes()) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a valid subprotocol name (an HTTP token)"
        ))
    }
}

/// Fields the WebSocket handshake or the bridge itself writes; an operator's copy would conflict.
const RESERVED_HEADERS: &[&str] = &[
    "host",
    "upgrade",
    "connection",
    "sec-websocket-",
    "x-forwarded-",
    "x-wsbridge-",
];

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected 'Name: value'"))?;
    let (name, value) = (name.trim(), value.trim());
    if !is_token(name.as_bytes()) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    let lower = name.to_ascii_lowercase();
    if RESERVED_HEADERS
        .iter()
        .any(|r| lower == *r || (r.ends_with('-') && lower.starts_with(r)))
    {
        return Err(format!(
            "{name}: the bridge sets this header itself and it cannot be overridden"
        ));
    }
    if !is_field_value(value.as_bytes()) {
        return Err(format!(
            "the value of {name} has control characters or line breaks"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `Some(d)` unless `d` is zero ("0 = off").
/// TLS towards clients, shared by every mode: certificate/key pairs, the one for the client's SNI chosen.
#[derive(Debug, Clone, Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM) for TLS towards clients (tcp2ws: implicit TLS, or STARTTLS with
    /// --starttls; ws2tcp and ws2http: wss://). Repeat together with --tls-key for several names (picked
    /// by SNI, first is the default)
    #[arg(long, env = "WSBRIDGE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Vec<PathBuf>,

    /// Private key (PEM) of the --tls-cert at the same position
    #[arg(long, env = "WSBRIDGE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Vec<PathBuf>,
}

impl TlsArgs {
    /// The TLS server sessions these pairs make for listener `listen`, or `None` without any pair.
    fn server_tls(&self, listen: &str) -> Result<Option<ServerTlsFactory>, String> {
        server_tls(listen, &self.tls_cert, &self.tls_key)
    }
}

/// The WebSocket heartbeat towards the peer, shared by every mode.
#[derive(Debug, Clone, Args)]
pub struct HeartbeatArgs {
    /// Seconds between WebSocket Pings to the peer (0 = off)
    #[arg(long, env = "WSBRIDGE_PING_INTERVAL", value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub ping_interval: Duration,

    /// Seconds the peer has to answer a Ping, counted from when it was written
    #[arg(long, env = "WSBRIDGE_PING_TIMEOUT", value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    pub ping_timeout: Duration,
}

impl HeartbeatArgs {
    /// The ping interval (`None` = off) and the pong timeout, checked together.
    fn settings(&self) -> Result<(Option<Duration>, Duration), String> {
        let interval = off_if_zero(self.ping_interval);
        if interval.is_some() && self.ping_timeout.is_zero() {
            return Err(
                "--ping-timeout must be positive (or turn pings off with --ping-interval 0)".into(),
            );
        }
        Ok((interval, self.ping_timeout))
    }
}

/// Accepting a PROXY protocol header, shared by every mode.
#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Every client must start with a PROXY protocol header, v1 or v2 (HAProxy's send-proxy /
    /// send-proxy-v2, cloud load balancers); its source address is then the client's. A connection
    /// without a valid header is closed before anything is dialled
    #[arg(
        long,
        env = "WSBRIDGE_ACCEPT_PROXY_PROTOCOL",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    pub accept_proxy_protocol: bool,

    /// With --accept-proxy-protocol: seconds from accept to the end of the header
    #[arg(long, env = "WSBRIDGE_PROXY_HEADER_TIMEOUT", value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    pub proxy_header_timeout: Duration,
}

impl ProxyArgs {
    /// `factory`, wrapped to read the header first if `--accept-proxy-protocol` is on.
    fn wrap(&self, factory: Arc<dyn SessionFactory>) -> Result<Arc<dyn SessionFactory>, String> {
        if !self.accept_proxy_protocol {
            return Ok(factory);
        }
        if self.proxy_header_timeout.is_zero() {
            return Err("--proxy-header-timeout must be positive".into());
        }
        let cfg = ProxyAccept {
            header_timeout: self.proxy_header_timeout,
            ..ProxyAccept::default()
        };
        Ok(Arc::new(ProxyProtocol::new(factory, cfg)))
    }
}

/// Limits that hold under abuse, shared by every mode. Over either, a connection is treated like one
/// over --max-connections: WebSocket listeners send Close 1013, TCP listeners close it at once.
#[derive(Debug, Clone, Args)]
pub struct LimitArgs {
    /// Connections open at once from one client address (IPv4 address or IPv6 /64), 0 = no limit.
    /// The address is the socket's peer: with --accept-proxy-protocol that is the load balancer, not
    /// the client in the PROXY header
    #[arg(
        long,
        env = "WSBRIDGE_MAX_CONNECTIONS_PER_IP",
        value_name = "N",
        default_value = "0"
    )]
    pub max_connections_per_ip: usize,

    /// New connections accepted per second on this listener, 0 = no limit (a token bucket with a
    /// burst of N)
    #[arg(
        long,
        env = "WSBRIDGE_ACCEPT_RATE",
        value_name = "N",
        default_value = "0"
    )]
    pub accept_rate: u32,
}

impl LimitArgs {
    /// The listener's [`AcceptLimits`](crate::driver::AcceptLimits) (0 = off).
    pub fn accept_limits(&self) -> crate::driver::AcceptLimits {
        crate::driver::AcceptLimits {
            per_ip: std::num::NonZeroUsize::new(self.max_connections_per_ip),
            rate: std::num::NonZeroU32::new(self.accept_rate),
        }
    }
}

fn parse_proxy_version(s: &str) -> Result<ProxyVersion, String> {
    s.parse()
}

fn off_if_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// The listen address: an address literal, or a name the system resolver turns into one (the first).
fn listen_addr(listen: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    listen
        .to_socket_addrs()
        .map_err(|e| format!("--listen {listen}: {e}"))?
        .next()
        .ok_or_else(|| format!("--listen {listen}: resolves to no address"))
}

/// The TLS server sessions of listener `listen` from its `--tls-cert`/`--tls-key` pairs (`None` without
/// them), read from a [`CertStore`] that SIGHUP and `--tls-reload-interval` reload.
fn server_tls(
    listen: &str,
    certs: &[PathBuf],
    keys: &[PathBuf],
) -> Result<Option<ServerTlsFactory>, String> {
    if certs.len() != keys.len() {
        return Err(format!(
            "--tls-cert and --tls-key come in pairs: got {} certificate(s) and {} key(s)",
            certs.len(),
            keys.len()
        ));
    }
    if certs.is_empty() {
        return Ok(None);
    }
    Ok(Some(CertStore::load(listen, certs, keys)?.factory()))
}

/// TLS client sessions trusting the Mozilla roots plus the PEM file of `flag`, if given.
fn client_tls(flag: &str, ca: Option<&PathBuf>) -> Result<ClientTlsFactory, String> {
    let roots = match ca {
        Some(path) => load_certs(path).map_err(|e| format!("{flag} {e}"))?,
        None => Vec::new(),
    };
    let config = client_config(roots).map_err(|e| format!("{flag}: {e}"))?;
    Ok(Arc::new(move |name: &str| {
        RustlsSession::client(config.clone(), name).map(|s| Box::new(s) as Box<dyn TlsSession>)
    }))
}

/// Builds and validates the `ws2tcp` settings (loading the PEM files); the error names the flag or file.
pub fn ws2tcp_config(args: &Ws2TcpArgs) -> Result<(SocketAddr, Ws2TcpConfig), String> {
    let listen = match (&args.ip, args.port) {
        (None, None) => args.listen.clone(),
        (ip, port) => {
            let default = listen_addr(&args.listen)?;
            let ip = match ip {
                Some(ip) => ip
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .map_err(|_| format!("--ip {ip}: not an IP address"))?,
                None => default.ip(),
            };
            SocketAddr::new(ip, port.unwrap_or(default.port())).to_string()
        }
    };
    let bind = listen_addr(&listen)?;
    let mut cfg = Ws2TcpConfig::new(&listen);
    cfg.target = args.target.clone();
    cfg.policy = TargetPolicy::parse(&args.allow, &args.deny)?;
    cfg.allowed_origins = args
        .allow_origin
        .iter()
        .map(|o| o.trim().to_owned())
        .collect();
    cfg.path = args.path.clone();
    if args.console {
        cfg.static_pages = console_pages(args.path.as_deref().unwrap_or("/"));
    }
    cfg.handshake_timeout = args.timeout;
    cfg.connect_timeout = args.connect_timeout;
    cfg.idle_timeout = off_if_zero(args.idle_timeout);
    cfg.max_lifetime = off_if_zero(args.max_lifetime);
    (cfg.ping_interval, cfg.ping_timeout) = args.heartbeat.settings()?;
    cfg.buffer_size = args.buffer_size;
    if args.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }
    cfg.server_tls = args.tls.server_tls(&listen)?;
    cfg.target_tls = Some(client_tls("--target-ca", args.target_ca.as_ref())?);
    cfg.send_proxy_protocol = args.send_proxy_protocol;
    cfg.validate()?;
    Ok((bind, cfg))
}

/// The page of `ws2tcp --console` (one self-contained HTML file) and the JS client it imports, both
/// embedded in the binary. The page is told the WebSocket path (`--path`) through its `wsbridge-path`
/// meta element.
fn console_pages(ws_path: &str) -> Vec<StaticPage> {
    const PATH_META: &str = r#"<meta name="wsbridge-path" content="/">"#;
    let html: &str = include_str!("../console/index.html");
    let escaped: String = ws_path
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let meta: String = format!(r#"<meta name="wsbridge-path" content="{escaped}">"#);
    vec![
        StaticPage::html("/", &html.replacen(PATH_META, &meta, 1)),
        StaticPage::javascript(
            "/wsbridge.mjs",
            include_str!("../../clients/js/wsbridge.mjs"),
        ),
    ]
}

/// Builds and validates the `tcp2ws` settings (loading the PEM files); the error names the flag or file.
pub fn tcp2ws_config(args: &Tcp2WsArgs) -> Result<(SocketAddr, Tcp2WsConfig), String> {
    let bind = listen_addr(&args.listen)?;
    let mut cfg = Tcp2WsConfig::new(&args.listen, args.backend.clone());
    cfg.backend_headers = args.backend_header.clone();
    cfg.subprotocols = args.subprotocol.clone();
    cfg.handshake_timeout = args.handshake_timeout;
    cfg.idle_timeout = off_if_zero(args.idle_timeout);
    cfg.max_lifetime = off_if_zero(args.max_lifetime);
    (cfg.ping_interval, cfg.ping_timeout) = args.heartbeat.settings()?;
    cfg.buffer_size = args.buffer_size;
    cfg.half_close = match args.half_close {
        HalfCloseArg::Close => HalfClose::Close,
        HalfCloseArg::Eof => HalfClose::Eof,
    };
    cfg.eof_timeout = args.eof_timeout;

    if cfg.half_close == HalfClose::Eof && cfg.eof_timeout.is_zero() {
        return Err("--eof-timeout must be positive with --half-close eof".into());
    }
    if args.max_connections == 0 {
        return Err("--max-connections must be at least 1".into());
    }

    cfg.server_tls = args.tls.server_tls(&args.listen)?;
    cfg.listener_tls = match (args.starttls, cfg.server_tls.is_some()) {
        (true, _) => ListenerTls::StartTls,
        (false, true) => ListenerTls::Implicit,
        (false, false) => ListenerTls::Plain,
    };

    if cfg.backend.tls {
        cfg.client_tls = Some(client_tls("--backend-ca", args.backend_ca.as_ref())?);
    } else if args.backend_ca.is_some() {
        crate::log!(
            Warn,
            "event=config_warning message={}",
            Val("--backend-ca is ignored: the backend is ws://, not wss://")
        );
    }
    cfg.validate()?;
    Ok((bind, cfg))
}

/// Builds and validates the `ws2http` settings (loading the PEM files); the error names the flag or file.
pub fn ws2http_config(args: &Ws2HttpArgs) -> Result<(SocketAddr, Ws2HttpConfig), String> {
    let bind = listen_addr(&args.listen)?;
    let mut cfg = Ws2HttpConfig::new(&args.listen);
    cfg.base_url = args.base_url.clone();
    cfg.allowlist = Allowlist::new(&args.allowlist, &args.host_suffix_allowlist)?;
    cfg.group_by_host = args.group_by_host;
    cfg.max_connections = args.max_connections;
    cfg.max_message_size = args.max_message_size;
    cfg.backend_timeout = args.backend_timeout;
    cfg.idle_timeout = off_if_zero(args.idle_timeout);
    (cfg.ping_interval, cfg.ping_timeout) = args.heartbeat.settings()?;
    cfg.server_tls = args.tls.server_tls(&args.listen)?;
    cfg.backend_tls = Some(client_tls("--backend-ca", args.backend_ca.as_ref())?);
    cfg.validate()?;
    Ok((bind, cfg))
}

/// Why `run` stopped.
#[derive(Debug)]
pub enum Failure {
    /// A usage or configuration error (exit code 2).
    Config(String),
    /// The server could not start (exit code 1).
    Start(String),
}

/// Sets the log level from `--log-level`, else `RUST_LOG`, else info.
fn init_logging(flag: Option<LogLevel>) {
    let level = match flag {
        Some(l) => Some(Level::from(l)),
        None => std::env::var("RUST_LOG")
            .ok()
            .and_then(|v| log::level_from_rust_log(&v))
            .unwrap_or(Some(Level::Info)),
    };
    log::set_level(level);
}

/// Runs the parsed command line until the server stops (or, for `check-config`, checks and returns).
pub fn run(cli: Cli) -> Result<(), Failure> {
    run_with(cli.global, Some(cli.command))
}

/// Runs until the server stops: `command`'s listener or, with `--config FILE` and no `command`, every
/// `[[listener]]` of the file (see [`crate::config_file`]: the global flags given here override its
/// top-level keys). `check-config` checks its file and returns. A mode together with `--config` is an
/// error, and so is neither.
pub fn run_with(global: GlobalArgs, command: Option<Command>) -> Result<(), Failure> {
    let (global, listeners) = match (global.config.clone(), command) {
        (_, Some(Command::CheckConfig(args))) => {
            init_logging(global.log_level);
            return crate::config_file::check_config(args.file.as_deref(), &global);
        }
        (Some(path), Some(_)) => {
            return Err(Failure::Config(format!(
                "--config {}: the listeners come from the file, so give no mode (wsbridge --config FILE)",
                path.display()
            )))
        }
        (Some(path), None) => {
            let file = crate::config_file::ConfigFile::load(&path).map_err(Failure::Config)?;
            let global = file.global_over(&global).map_err(Failure::Config)?;
            init_logging(global.log_level);
            crate::config_file::warn_ignored_env_vars();
            let listeners = file.build().map_err(Failure::Config)?;
            (global, listeners)
        }
        (None, Some(command)) => {
            init_logging(global.log_level);
            let listener = listener_spec(&command)?;
            (global, vec![listener])
        }
        (None, None) => {
            return Err(Failure::Config(
                "no mode given: tcp2ws, ws2tcp, ws2http, check-config, or --config FILE".into(),
            ))
        }
    };
    let g = &global;
    let metrics_listen = match &g.metrics_listen {
        Some(addr) => {
            Some(listen_addr(addr).map_err(|e| Failure::Config(format!("--metrics-listen: {e}")))?)
        }
        None => None,
    };
    let drain_timeout = g.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    let max_connections = listeners
        .iter()
        .fold(0usize, |sum, l| sum.saturating_add(l.max_connections));
    let mut opts = RuntimeOptions {
        max_connections,
        reuse_port: g.reuse_port,
        ..RuntimeOptions::default()
    };
    if let Some(n) = g.threads {
        opts.threads = n;
    }
    let threads = opts.threads;
    let metrics_listener = match metrics_listen {
        Some(addr) => Some(std::net::TcpListener::bind(addr).map_err(|e| {
            Failure::Start(format!("--metrics-listen: cannot listen on {addr}: {e}"))
        })?),
        None => None,
    };
    // Caught before anything runs: an early signal is a drain too, not the default "terminate now".
    let signals = StopSignals::install().map_err(|e| Failure::Start(format!("signals: {e}")))?;
    let specs = listeners.iter().map(|l| l.spec.clone()).collect();
    let server = Server::start(specs, opts).map_err(|e| Failure::Start(e.to_string()))?;
    if let Some(l) = metrics_listener {
        let addr = l.local_addr().map_err(|e| Failure::Start(e.to_string()))?;
        crate::metrics::serve(l, server.metrics()).map_err(|e| Failure::Start(e.to_string()))?;
        crate::log!(Info, "event=metrics_listening listen={addr}");
    }
    for (l, addr) in listeners.iter().zip(server.local_addrs()) {
        let (mode, describe) = (l.spec.factory.mode(), &l.describe);
        crate::log!(
            Info,
            "mode={mode} event=listening listen={addr} {describe} threads={threads}"
        );
    }
    let stores = crate::tls_reload::live_stores();
    if let Some(every) = g
        .tls_reload_interval
        .filter(|d| !d.is_zero() && !stores.is_empty())
    {
        crate::tls_reload::spawn_interval(stores.clone(), every)
            .map_err(|e| Failure::Start(format!("--tls-reload-interval: {e}")))?;
    }
    signals.reloading(stores).serve(&server, drain_timeout);
    Ok(())
}

/// One listener built from its mode's flags: what [`Server::start`] takes, and what its startup line says.
#[derive(Debug, Clone)]
pub struct ListenerPlan {
    /// Where it listens and the factory of its sessions.
    pub spec: ListenerSpec,
    /// Its `--max-connections`. The server's process-wide cap is the sum over its listeners.
    pub max_connections: usize,
    /// Its settings for the `event=listening` line and `check-config` (`tls=… backend=…`).
    pub describe: String,
}

/// Builds the listener of a mode's flags (loading its PEM files; warnings are logged). Errors are
/// [`Failure::Config`] and name the flag or file; `check-config` has no listener and is one too.
pub fn listener_spec(command: &Command) -> Result<ListenerPlan, Failure> {
    let (spec, max_connections, describe) = match command {
        Command::Tcp2ws(args) => {
            let (bind, cfg) = tcp2ws_config(args).map_err(Failure::Config)?;
            let tls = match cfg.listener_tls {
                ListenerTls::Plain => "plain",
                ListenerTls::Implicit => "implicit",
                ListenerTls::StartTls => "starttls",
            };
            let describe = format!("tls={tls} backend={}", Val(&cfg.backend.to_string()));
            let spec = ListenerSpec {
                bind,
                limits: args.limits.accept_limits(),
                factory: args
                    .proxy
                    .wrap(Arc::new(Tcp2WsFactory(Arc::new(cfg))))
                    .map_err(Failure::Config)?,
            };
            (spec, args.max_connections, describe)
        }
        Command::Ws2tcp(args) => {
            let (bind, cfg) = ws2tcp_config(args).map_err(Failure::Config)?;
            let target = match &cfg.target {
                Some(t) => format!("target={}", Val(&t.to_string())),
                None => {
                    let rules = |v: &[wsbridge_core::ws2tcp::policy::Rule]| {
                        v.iter()
                            .map(|r| r.to_string())
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    format!(
                        "target=dynamic allow={} deny={}",
                        Val(&rules(&cfg.policy.allow)),
                        Val(&rules(&cfg.policy.deny))
                    )
                }
            };
            if cfg.target.is_none() && cfg.allowed_origins.is_empty() {
                crate::log!(
                    Warn,
                    "event=config_warning message={}",
                    Val("no --allow-origin: any web page can make browsers connect through this gateway")
                );
            }
            let describe = format!("tls={} {target}", cfg.server_tls.is_some());
            let spec = ListenerSpec {
                bind,
                limits: args.limits.accept_limits(),
                factory: args
                    .proxy
                    .wrap(Arc::new(Ws2TcpFactory(Arc::new(cfg))))
                    .map_err(Failure::Config)?,
            };
            (spec, args.max_connections, describe)
        }
        Command::Ws2http(args) => {
            let (bind, cfg) = ws2http_config(args).map_err(Failure::Config)?;
            if cfg.allowlist.is_empty() {
                crate::log!(
                    Warn,
                    "event=config_warning message={}",
                    Val("no --allowlist or --host-suffix-allowlist: every client is refused (403)")
                );
            }
            if cfg.base_url.is_none()
                && (bind.ip().is_unspecified()
                    || bind.port() == 0
                    || bind.to_string() != args.listen)
            {
                crate::log!(
                    Warn,
                    "event=config_warning message={}",
                    Val(&format!(
                        "no --base-url: backends are told to call back {}, which may not reach this listener",
                        cfg.base_url()
                    ))
                );
            }
            let describe = format!(
                "tls={} base_url={} allowlist={} host_suffixes={}",
                cfg.server_tls.is_some(),
                Val(&cfg.base_url()),
                Val(&args.allowlist.join(" ")),
                Val(&args.host_suffix_allowlist.join(","))
            );
            let spec = ListenerSpec {
                bind,
                limits: args.limits.accept_limits(),
                factory: args
                    .proxy
                    .wrap(Arc::new(Ws2HttpFactory(Arc::new(cfg))))
                    .map_err(Failure::Config)?,
            };
            (spec, args.max_connections, describe)
        }
        Command::CheckConfig(_) => {
            return Err(Failure::Config(
                "check-config checks a config file and has no listener".into(),
            ))
        }
    };
    Ok(ListenerPlan {
        spec,
        max_connections,
        describe,
    })
}

/// `--drain-timeout` when not given.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole program: parses `std::env::args`, runs, and returns the exit code.
pub fn main() -> i32 {
    // clap prints help, version and usage errors itself (exit 0 or 2); `--config FILE` needs no mode.
    let result = match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) => match config_without_mode(&e) {
            Some(global) => run_with(global, None),
            None => e.exit(),
        },
    };
    match result {
        Ok(()) => 0,
        Err(Failure::Config(msg)) => {
            eprintln!("wsbridge: error: {msg}");
            2
        }
        Err(Failure::Start(msg)) => {
            eprintln!("wsbridge: error: {msg}");
            1
        }
    }
}

/// The global flags of a command line that failed to parse only because it names no mode, when they
/// include `--config` (or `WSBRIDGE_CONFIG`): `wsbridge --config FILE` runs the file's listeners.
fn config_without_mode(e: &clap::Error) -> Option<GlobalArgs> {
    use clap::error::ErrorKind;
    use clap::{CommandFactory, FromArgMatches};
    if !matches!(
        e.kind(),
        ErrorKind::MissingSubcommand | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        return None;
    }
    let m = Cli::command()
        .subcommand_required(false)
        .arg_required_else_help(false)
        .try_get_matches()
        .ok()?;
    let global = GlobalArgs::from_arg_matches(&m).ok()?;
    global.config.is_some().then_some(global)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wsbridge").chain(args.iter().copied()))
    }

    fn tcp2ws(cli: &Cli) -> &Tcp2WsArgs {
        match &cli.command {
            Command::Tcp2ws(a) => a,
            other => panic!("not tcp2ws: {other:?}"),
        }
    }

    #[test]
    fn defaults_and_global_flags_on_either_side() {
        let cli = parse(&[
            "--threads",
            "3",
            "tcp2ws",
            "--backend",
            "ws://127.0.0.1:9/x",
            "--log-level",
            "debug",
            "--reuse-port",
        ])
        .unwrap();
        assert_eq!(cli.global.threads, Some(3));
        assert_eq!(cli.global.log_level, Some(LogLevel::Debug));
        assert!(cli.global.reuse_port);
        let a = tcp2ws(&cli);
        assert_eq!(a.listen, "127.0.0.1:1100");
        assert_eq!(a.handshake_timeout, Duration::from_secs(10));
        assert_eq!(a.max_connections, 10_000);
        let (bind, cfg) = tcp2ws_config(a).unwrap();
        assert_eq!(bind, "127.0.0.1:1100".parse().unwrap());
        assert_eq!(cfg.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(cfg.max_lifetime, None);
        assert_eq!(cfg.ping_interval, Some(Duration::from_secs(30)));
        assert_eq!(cfg.buffer_size, 65536);
        assert_eq!(cfg.half_close, HalfClose::Close);
        assert_eq!(cfg.listener_tls, ListenerTls::Plain);
    }

    #[test]
    fn flags_parse_and_bad_values_name_the_flag() {
        let cli = parse(&[
            "tcp2ws",
            "--backend",
            "ws://b.test/",
            "--backend-header",
            "Authorization: Bearer x",
            "--backend-header",
            "X-Tenant: 7",
            "--subprotocol",
            "smtp",
            "--idle-timeout",
            "0",
            "--half-close",
            "eof",
            "--eof-timeout",
            "1.5",
        ])
        .unwrap();
        let (_, cfg) = tcp2ws_config(tcp2ws(&cli)).unwrap();
        assert_eq!(
            cfg.backend_headers,
            vec![
                ("Authorization".to_owned(), "Bearer x".to_owned()),
                ("X-Tenant".to_owned(), "7".to_owned())
            ]
        );
        assert_eq!(cfg.subprotocols, vec!["smtp".to_owned()]);
        assert_eq!(cfg.idle_timeout, None);
        assert_eq!(cfg.half_close, HalfClose::Eof);
        assert_eq!(cfg.eof_timeout, Duration::from_millis(1500));

        for bad in [
            &["tcp2ws", "--backend", "http://x/"][..],
            &["tcp2ws"],
            &[
                "tcp2ws",
                "--backend",
                "ws://x/",
                "--backend-header",
                "Host: y",
            ],
            &[
                "tcp2ws",
                "--backend",
                "ws://x/",
                "--backend-header",
                "nocolon",
            ],
            &["tcp2ws", "--backend", "ws://x/", "--half-close", "maybe"],
            &["tcp2ws", "--backend", "ws://x/", "--threads", "0"],
            &["tcp2ws", "--backend", "ws://x/", "--idle-timeout", "-1"],
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn tls_flags_build_the_listener_mode() {
        let dir = std::env::temp_dir().join(format!("wsbridge-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ck = rcgen::generate_simple_self_signed(vec!["mail.test".to_owned()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, ck.cert.pem()).unwrap();
        std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());

        let base = ["tcp2ws", "--backend", "wss://b.test/"];
        let with = |extra: &[&str]| {
            let args: Vec<&str> = base.iter().chain(extra).copied().collect();
            tcp2ws_config(tcp2ws(&parse(&args).unwrap()))
        };
        let (_, cfg) = with(&["--tls-cert", cert, "--tls-key", key]).unwrap();
        assert_eq!(cfg.listener_tls, ListenerTls::Implicit);
        assert!(cfg.client_tls.is_some());
        let (_, cfg) = with(&["--tls-cert", cert, "--tls-key", key, "--starttls"]).unwrap();
        assert_eq!(cfg.listener_tls, ListenerTls::StartTls);
        let err = with(&["--starttls"]).unwrap_err();
        assert!(err.contains("--tls-cert"), "{err}");
        let err = with(&["--tls-cert", cert]).unwrap_err();
        assert!(err.contains("pairs"), "{err}");
        let err = with(&["--tls-cert", key, "--tls-key", key]).unwrap_err();
        assert!(
            err.starts_with("--tls-cert ") && err.contains("key.pem"),
            "{err}"
        );
        let err = with(&["--backend-ca", key]).unwrap_err();
        assert!(err.starts_with("--backend-ca "), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unimplemented_modes_and_unsupported_flags_are_config_errors() {
        for args in [
            &["check-config"][..],
            &["--config", "x.toml", "tcp2ws", "--backend", "ws://x/"],
            &[
                "tcp2ws",
                "--backend",
                "ws://x/",
                "--metrics-listen",
                "no port here",
            ],
        ] {
            let cli = parse(args).unwrap();
            assert!(
                matches!(run(cli), Err(Failure::Config(_))),
                "{args:?} should be a config error"
            );
        }
    }

    #[test]
    fn help_lists_every_flag() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        cmd.build();
        let help = cmd
            .find_subcommand_mut("tcp2ws")
            .unwrap()
            .render_long_help()
            .to_string();
        for flag in [
            "--listen",
            "--backend",
            "--tls-cert",
            "--tls-key",
            "--starttls",
            "--backend-ca",
            "--backend-header",
            "--subprotocol",
            "--handshake-timeout",
            "--idle-timeout",
            "--max-lifetime",
            "--ping-interval",
            "--ping-timeout",
            "--buffer-size",
            "--max-connections",
            "--half-close",
            "--eof-timeout",
            "--log-level",
            "--threads",
            "--reuse-port",
            "WSBRIDGE_BACKEND",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
        cmd.debug_assert();
    }

    fn ws2tcp(cli: &Cli) -> &Ws2TcpArgs {
        match &cli.command {
            Command::Ws2tcp(a) => a,
            other => panic!("not ws2tcp: {other:?}"),
        }
    }

    #[test]
    fn ws2tcp_defaults_flags_and_socket2web_aliases() {
        let cli = parse(&["ws2tcp"]).unwrap();
        let a = ws2tcp(&cli);
        assert_eq!(a.max_connections, 1000);
        let (bind, cfg) = ws2tcp_config(a).unwrap();
        assert_eq!(bind, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(cfg.target, None);
        assert_eq!(cfg.handshake_timeout, Duration::from_secs(10));
        assert_eq!(cfg.connect_timeout, Duration::from_secs(10));
        assert_eq!(cfg.max_lifetime, Some(Duration::from_secs(3600)));
        assert_eq!(cfg.path, None);
        assert!(cfg.policy.allow.is_empty() && cfg.policy.deny.is_empty());
        assert!(
            cfg.target_tls.is_some(),
            "the tls protocol is on, with the Mozilla roots"
        );

        let cli = parse(&[
            "ws2tcp",
            "--ip",
            "0.0.0.0",
            "--port",
            "9000",
            "--allow",
            "127.0.0.1/32",
            "--allow",
            "10.0.0.0/8:22,8000-8100",
            "--deny",
            "10.9.0.0/16",
            "--allow-origin",
            "https://a.test",
            "--path",
            "/ws",
            "--timeout",
            "2",
            "--connect-timeout",
            "0.5",
            "--max-lifetime",
            "0",
            "--log-level",
            "warn",
        ])
        .unwrap();
        let (bind, cfg) = ws2tcp_config(ws2tcp(&cli)).unwrap();
        assert_eq!(bind, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(cfg.policy.allow.len(), 2);
        assert_eq!(cfg.policy.deny.len(), 1);
        assert_eq!(cfg.allowed_origins, vec!["https://a.test".to_owned()]);
        assert_eq!(cfg.path.as_deref(), Some("/ws"));
        assert_eq!(cfg.connect_timeout, Duration::from_millis(500));
        assert_eq!(cfg.max_lifetime, None);
        assert_eq!(cli.global.log_level, Some(LogLevel::Warn));

        let cli = parse(&["ws2tcp", "--port", "9001"]).unwrap();
        let (bind, _) = ws2tcp_config(ws2tcp(&cli)).unwrap();
        assert_eq!(
            bind,
            "127.0.0.1:9001".parse().unwrap(),
            "--port alone keeps the IP"
        );

        let cli = parse(&["ws2tcp", "--target", "[::1]:5900"]).unwrap();
        let (_, cfg) = ws2tcp_config(ws2tcp(&cli)).unwrap();
        assert_eq!(cfg.target.unwrap().to_string(), "[::1]:5900");

        for bad in [
            &["ws2tcp", "--target", "h:0"][..],
            &["ws2tcp", "--target", "h:65536"],
            &["ws2tcp", "--port", "65536"],
            &["ws2tcp", "--timeout", "x"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        for (bad, flag) in [
            (&["ws2tcp", "--allow", "10.0.0.0/33"][..], "--allow"),
            (&["ws2tcp", "--deny", "x"], "--deny"),
            (&["ws2tcp", "--allow", "10.0.0.0/8:0"], "--allow"),
            (&["ws2tcp", "--ip", "nope"], "--ip"),
            (&["ws2tcp", "--path", "ws"], "--path"),
            (&["ws2tcp", "--timeout", "0"], "--timeout"),
            (&["ws2tcp", "--max-connections", "0"], "--max-connections"),
            (&["ws2tcp", "--ping-timeout", "0"], "--ping-timeout"),
            (
                &["ws2tcp", "--target", "h:1", "--allow", "1.2.3.4"],
                "--allow",
            ),
            (
                &["ws2tcp", "--target-ca", "/nonexistent.pem"],
                "--target-ca",
            ),
        ] {
            let err = ws2tcp_config(ws2tcp(&parse(bad).unwrap())).unwrap_err();
            assert!(err.contains(flag), "{bad:?}: {err}");
        }
    }

    #[test]
    fn ws2tcp_console_serves_the_embedded_page_and_client() {
        let (_, cfg) = ws2tcp_config(ws2tcp(&parse(&["ws2tcp"]).unwrap())).unwrap();
        assert!(cfg.static_pages.is_empty(), "no pages without --console");
        let (_, cfg) = ws2tcp_config(ws2tcp(&parse(&["ws2tcp", "--console"]).unwrap())).unwrap();
        let page = cfg.static_page("/").expect("the console page at /");
        assert_eq!(page.content_type, "text/html; charset=utf-8");
        assert!(page.body.starts_with(b"<!doctype html>"));
        let html = std::str::from_utf8(&page.body).unwrap();
        assert!(html.contains(r#"<meta name="wsbridge-path" content="/">"#));
        let (_, cfg) = ws2tcp_config(ws2tcp(
            &parse(&["ws2tcp", "--console", "--path", "/gw\"<x>"]).unwrap(),
        ))
        .unwrap();
        let html = std::str::from_utf8(&cfg.static_page("/").unwrap().body).unwrap();
        assert!(
            html.contains(r#"<meta name="wsbridge-path" content="/gw&quot;&lt;x&gt;">"#),
            "--path reaches the page, escaped"
        );
        let module = cfg
            .static_page("/wsbridge.mjs")
            .expect("the client at /wsbridge.mjs");
        assert_eq!(module.content_type, "text/javascript; charset=utf-8");
        assert_eq!(
            module.body,
            include_str!("../../clients/js/wsbridge.mjs").as_bytes()
        );
        let err = ws2tcp_config(ws2tcp(
            &parse(&["ws2tcp", "--console", "--target", "h:1"]).unwrap(),
        ))
        .unwrap_err();
        assert!(err.contains("--console"), "{err}");
    }

    #[test]
    fn ws2tcp_help_lists_every_flag() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        cmd.build();
        let help = cmd
            .find_subcommand_mut("ws2tcp")
            .unwrap()
            .render_long_help()
            .to_string();
        for flag in [
            "--listen",
            "--ip",
            "--port",
            "--tls-cert",
            "--tls-key",
            "--target",
            "--target-ca",
            "--allow",
            "--deny",
            "--allow-origin",
            "--path",
            "--console",
            "WSBRIDGE_CONSOLE",
            "--timeout",
            "--connect-timeout",
            "--max-connections",
            "--max-lifetime",
            "--idle-timeout",
            "--ping-interval",
            "--buffer-size",
            "--log-level",
            "WSBRIDGE_ALLOW",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    fn ws2http(cli: &Cli) -> &Ws2HttpArgs {
        match &cli.command {
            Command::Ws2http(a) => a,
            other => panic!("not ws2http: {other:?}"),
        }
    }

    #[test]
    fn ws2http_defaults_and_flags() {
        let cli = parse(&["ws2http"]).unwrap();
        let a = ws2http(&cli);
        assert_eq!(a.max_connections, 10_000);
        let (bind, cfg) = ws2http_config(a).unwrap();
        assert_eq!(bind, "127.0.0.1:9443".parse().unwrap());
        assert_eq!(cfg.base_url(), "http://127.0.0.1:9443/");
        assert!(cfg.allowlist.is_empty(), "nothing is allowed by default");
        assert!(!cfg.group_by_host);
        assert_eq!(cfg.max_message_size, 1 << 20);
        assert_eq!(cfg.backend_timeout, Duration::from_secs(10));
        assert_eq!(cfg.idle_timeout, None);
        assert_eq!(cfg.ping_interval, Some(Duration::from_secs(30)));
        assert!(
            cfg.backend_tls.is_some(),
            "https:// backends use the Mozilla roots"
        );
        assert!(cfg.server_tls.is_none());

        let cli = parse(&[
            "ws2http",
            "--listen",
            "127.0.0.1:9000",
            "--base-url",
            "https://bridge.test/ws",
            "--allowlist",
            r"http://127\.0\.0\.1:8080/.*",
            "--allowlist",
            r"https://a\.test/f",
            "--host-suffix-allowlist",
            "example.com",
            "--group-by-host",
            "--max-connections",
            "5",
            "--max-message-size",
            "4096",
            "--backend-timeout",
            "2.5",
            "--idle-timeout",
            "60",
            "--ping-interval",
            "0",
            "--log-level",
            "debug",
        ])
        .unwrap();
        let (bind, cfg) = ws2http_config(ws2http(&cli)).unwrap();
        assert_eq!(bind, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(cfg.base_url(), "https://bridge.test/ws/");
        let url = |u: &str| wsbridge_core::url::HttpUrl::parse(u).unwrap();
        assert!(cfg.allowlist.allows(&url("http://127.0.0.1:8080/frame")));
        assert!(cfg.allowlist.allows(&url("https://a.test/f")));
        assert!(cfg.allowlist.allows(&url("https://x.example.com/f")));
        assert!(
            !cfg.allowlist.allows(&url("https://a.test/f/x")),
            "anchored"
        );
        assert!(cfg.group_by_host);
        assert_eq!(cfg.max_connections, 5);
        assert_eq!(cfg.max_message_size, 4096);
        assert_eq!(cfg.backend_timeout, Duration::from_millis(2500));
        assert_eq!(cfg.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(cfg.ping_interval, None);
        assert_eq!(cli.global.log_level, Some(LogLevel::Debug));

        for bad in [
            &["ws2http", "--backend-timeout", "x"][..],
            &["ws2http", "--max-message-size", "-1"],
            &["ws2http", "--max-connections", "many"],
            &["ws2http", "--idle-timeout", "-1"],
            &["ws2http", "--group-by-host=maybe"],
        ] {
            assert_eq!(parse(bad).unwrap_err().exit_code(), 2, "{bad:?}");
        }
        for (bad, flag) in [
            (&["ws2http", "--allowlist", "("][..], "--allowlist"),
            (
                &["ws2http", "--host-suffix-allowlist", "a b"],
                "--host-suffix-allowlist",
            ),
            (&["ws2http", "--base-url", "ftp://x/"], "--base-url"),
            (&["ws2http", "--backend-timeout", "0"], "--backend-timeout"),
            (
                &["ws2http", "--max-message-size", "0"],
                "--max-message-size",
            ),
            (&["ws2http", "--max-connections", "0"], "--max-connections"),
            (&["ws2http", "--listen", "nope nope"], "--listen"),
            (
                &["ws2http", "--backend-ca", "/nonexistent.pem"],
                "--backend-ca",
            ),
            (&["ws2http", "--tls-cert", "/nonexistent.pem"], "pairs"),
        ] {
            let cli = parse(bad).unwrap();
            let err = ws2http_config(ws2http(&cli)).unwrap_err();
            assert!(err.contains(flag), "{bad:?}: {err}");
            assert!(
                matches!(run(cli), Err(Failure::Config(_))),
                "{bad:?} exits 2"
            );
        }

        // The environment. Variables are process-wide: these names are read by ws2http alone, and
        // only this test parses ws2http, after its other cases.
        let cmd = || {
            use clap::CommandFactory;
            Cli::command()
        };
        let vars = [
            ("WSBRIDGE_ALLOWLIST", "http://a\\.test/x\nhttp://b\\.test/y"),
            ("WSBRIDGE_HOST_SUFFIX_ALLOWLIST", "a.test,b.test"),
            ("WSBRIDGE_BASE_URL", "http://bridge.test:81/"),
            ("WSBRIDGE_BACKEND_TIMEOUT", "3"),
            ("WSBRIDGE_MAX_MESSAGE_SIZE", "100"),
            ("WSBRIDGE_GROUP_BY_HOST", "true"),
        ];
        for (k, v) in vars {
            std::env::set_var(k, v);
        }
        let m = cmd().try_get_matches_from(["wsbridge", "ws2http"]);
        for (k, _) in vars {
            std::env::remove_var(k);
        }
        use clap::FromArgMatches;
        let cli = Cli::from_arg_matches(&m.unwrap()).unwrap();
        let a = ws2http(&cli);
        assert_eq!(a.allowlist, vec![r"http://a\.test/x", r"http://b\.test/y"]);
        assert_eq!(a.host_suffix_allowlist, vec!["a.test", "b.test"]);
        let (_, cfg) = ws2http_config(a).unwrap();
        assert_eq!(cfg.base_url(), "http://bridge.test:81/");
        assert_eq!(cfg.backend_timeout, Duration::from_secs(3));
        assert_eq!(cfg.max_message_size, 100);
        assert!(cfg.group_by_host);
    }

    #[test]
    fn ws2http_help_lists_every_flag() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        cmd.build();
        let help = cmd
            .find_subcommand_mut("ws2http")
            .unwrap()
            .render_long_help()
            .to_string();
        for flag in [
            "--listen",
            "--base-url",
            "--tls-cert",
            "--tls-key",
            "--backend-ca",
            "--allowlist",
            "--host-suffix-allowlist",
            "--group-by-host",
            "--max-connections",
            "--max-message-size",
            "--backend-timeout",
            "--idle-timeout",
            "--ping-interval",
            "--log-level",
            "WSBRIDGE_ALLOWLIST",
            "WSBRIDGE_HOST_SUFFIX_ALLOWLIST",
        ] {
            assert!(help.contains(flag), "{flag} missing from:\n{help}");
        }
    }

    #[test]
    fn proxy_protocol_flags_on_every_mode() {
        use clap::CommandFactory;
        let mut cmd = Cli::command();
        cmd.build();
        for mode in ["tcp2ws", "ws2tcp", "ws2http"] {
            let help = cmd
                .find_subcommand_mut(mode)
                .unwrap()
                .render_long_help()
                .to_string();
            for flag in [
                "--accept-proxy-protocol",
                "WSBRIDGE_ACCEPT_PROXY_PROTOCOL",
                "--proxy-header-timeout",
            ] {
                assert!(help.contains(flag), "{mode}: {flag} missing from:\n{help}");
            }
            assert_eq!(
                help.contains("--send-proxy-protocol"),
                mode == "ws2tcp",
                "{mode}"
            );
        }

        let cli = parse(&["tcp2ws", "--backend", "ws://b/"]).unwrap();
        let proxy = &tcp2ws(&cli).proxy;
        assert!(!proxy.accept_proxy_protocol);
        assert_eq!(proxy.proxy_header_timeout, Duration::from_secs(5));
        let cli = parse(&[
            "ws2tcp",
            "--accept-proxy-protocol",
            "--proxy-header-timeout",
            "0.5",
            "--send-proxy-protocol",
            "v2",
        ])
        .unwrap();
        let args = ws2tcp(&cli);
        assert!(args.proxy.accept_proxy_protocol);
        assert_eq!(args.proxy.proxy_header_timeout, Duration::from_millis(500));
        assert_eq!(args.send_proxy_protocol, Some(ProxyVersion::V2));
        let (_, cfg) = ws2tcp_config(args).unwrap();
        assert_eq!(cfg.send_proxy_protocol, Some(ProxyVersion::V2));
        let cli = parse(&["ws2tcp", "--send-proxy-protocol", "1"]).unwrap();
        assert_eq!(ws2tcp(&cli).send_proxy_protocol, Some(ProxyVersion::V1));
        let e = parse(&["ws2tcp", "--send-proxy-protocol", "v3"]).unwrap_err();
        assert!(e.to_string().contains("expected v1 or v2"), "{e}");
        let cli = parse(&[
            "ws2http",
            "--accept-proxy-protocol",
            "--proxy-header-timeout",
            "0",
        ])
        .unwrap();
        let e = ws2http(&cli)
            .proxy
            .wrap(Arc::new(Ws2HttpFactory(Arc::new(Ws2HttpConfig::new(
                "127.0.0.1:0",
            )))));
        assert_eq!(
            e.err().as_deref(),
            Some("--proxy-header-timeout must be positive")
        );
    }
}
