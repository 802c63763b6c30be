//! Config files (DESIGN §1.5): `wsbridge --config FILE.toml` runs every `[[listener]]` of the file in one
//! process; `wsbridge check-config FILE.toml` validates the file the same way without binding anything.
//!
//! # Format
//! ```toml
//! log-level = "info"                  # top-level keys: the global flags (all but `config`)
//! threads = 2
//!
//! [[listener]]
//! mode = "tcp2ws"                     # "tcp2ws" | "ws2tcp" | "ws2http"
//! listen = "0.0.0.0:995"              # then that mode's flags, with the same kebab-case names
//! backend = "ws://10.0.0.5:8080/mail"
//! tls-cert = ["/etc/wsbridge/mail.pem"]   # repeatable flags: arrays (one value alone is fine too)
//! tls-key = ["/etc/wsbridge/mail.key"]
//! starttls = false                    # switches: booleans (false = the flag is not given)
//! idle-timeout = 600                  # numbers for numbers (seconds may be fractional), strings for the rest
//! ```
//! A key left out has the flag's default.
//!
//! # How
//! Each table becomes the argv of its mode's clap subcommand (`tcp2ws --listen=… --tls-cert=…`) and is
//! parsed and built by the code of the command line itself ([`crate::cli`], [`cli::listener_spec`]),
//! so keys, defaults, validation and help text cannot drift from the flags. Before that, every key is
//! checked against the subcommand's long flags, and every value's TOML type against the flag (switch →
//! boolean; a count or size → integer; seconds → integer or float; anything else → string; arrays only
//! for repeatable flags). Every error — of TOML, of those checks, of clap or of the config builders
//! (a PEM file that does not load…) — is reported as `FILE:LINE: [[listener]] N (MODE): key "KEY": …`.
//!
//! # Precedence and the environment
//! - Global settings: the command line (and the `WSBRIDGE_*` variables of the *global* flags, which
//!   clap reads with it) override the file's top-level keys, which override the defaults.
//!   `--reuse-port` given on either side turns it on.
//! - Listener settings come from the file alone: the `WSBRIDGE_*` variables of *mode* flags
//!   (`WSBRIDGE_LISTEN`, `WSBRIDGE_BACKEND`, …) are ignored with a config file — one variable cannot
//!   sensibly apply to every listener — and a warning names each one that is set
//!   ([`ignored_env_vars`]).

use std::any::TypeId;
use std::net::{SocketAddr, ToSocketAddrs};
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Arg, ArgAction, Args, CommandFactory, FromArgMatches};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::cli::{self, Cli, Command, Failure, GlobalArgs, ListenerPlan};
use crate::log::Val;

/// The modes a `[[listener]]` may have.
pub const MODES: [&str; 3] = ["tcp2ws", "ws2tcp", "ws2http"];

/// A config file, read and checked: its top-level settings and its listeners, each parsed by clap.
#[derive(Debug)]
pub struct ConfigFile {
    /// The file's name as given, the prefix of every message.
    pub name: String,
    /// The top-level keys, parsed as the global flags (defaults where absent; `config` is `None`).
    pub global: GlobalArgs,
    /// Each top-level key and its line.
    global_keys: Vec<(String, usize)>,
    /// The `[[listener]]` tables, in file order.
    pub listeners: Vec<FileListener>,
}

/// One `[[listener]]` table.
#[derive(Debug)]
pub struct FileListener {
    /// Its position in the file, from 1.
    pub index: usize,
    /// The line of its `[[listener]]` header.
    pub line: usize,
    /// Its `mode`.
    pub mode: String,
    /// The command line it stands for: the mode, then `--key=value` or `--switch` per value, in file order.
    pub argv: Vec<String>,
    /// That command line, parsed.
    pub command: Command,
    /// Each key (but `mode`) and its line.
    keys: Vec<(String, usize)>,
}

impl FileListener {
    /// `[[listener]] N (mode)`, how messages name it.
    fn label(&self) -> String {
        format!("[[listener]] {} ({})", self.index, self.mode)
    }

    fn key_line(&self, key: &str) -> Option<usize> {
        self.keys.iter().find(|(k, _)| k == key).map(|&(_, l)| l)
    }
}

impl ConfigFile {
    /// Reads and checks `path` (see [`ConfigFile::parse`]).
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{name}: cannot read the config file: {e}"))?;
        ConfigFile::parse(&name, &text)
    }

    /// Parses `text` (the file `name`): TOML syntax, every key and value type, and each listener's
    /// flags as clap parses them. Does not read PEM files or resolve addresses: [`ConfigFile::build`]
    /// does. Errors are one line, `NAME:LINE: …`.
    pub fn parse(name: &str, text: &str) -> Result<ConfigFile, String> {
        let line = |span: Range<usize>| line_of(text, span.start);
        let doc = DeTable::parse(text).map_err(|e| {
            let at = e.span().map_or(1, |s| line_of(text, s.start));
            format!("{name}:{at}: not valid TOML: {}", one_line(e.message()))
        })?;
        let cli = Cli::command();
        let globals: Vec<&Arg> = cli
            .get_arguments()
            .filter(|a| a.get_long().is_some_and(|l| l != "config"))
            .collect();

        let mut global_argv = vec!["wsbridge".to_owned()];
        let mut global_keys = Vec::new();
        let mut tables = None;
        for (key, value) in in_file_order(doc.get_ref()) {
            let (k, at) = (key.get_ref().as_ref(), line(key.span()));
            let top = |msg: String| format!("{name}:{at}: {msg}");
            if k == "listener" {
                match value.get_ref() {
                    DeValue::Array(items) if items.iter().all(|t| t.get_ref().is_table()) => {
                        tables = Some(items)
                    }
                    _ => {
                        return Err(top(
                            "\"listener\" must be [[listener]] tables (an array of tables)".into(),
                        ))
                    }
                }
                continue;
            }
            let Some(arg) = globals.iter().find(|a| a.get_long() == Some(k)) else {
                let mut msg = format!("unknown top-level key {k:?}");
                if MODES
                    .iter()
                    .any(|m| long_args(&cli, m).any(|a| a.get_long() == Some(k)))
                {
                    msg += "; it is a listener setting: put it in a [[listener]] table";
                } else if k == "config" {
                    msg += "; a config file cannot name another";
                } else {
                    msg += &suggest(k, globals.iter().filter_map(|a| a.get_long()));
                }
                return Err(top(msg));
            };
            push_value(&mut global_argv, arg, value.get_ref())
                .map_err(|e| top(format!("key {k:?}: {e}")))?;
            global_keys.push((k.to_owned(), at));
        }
        let global = parse_global(&global_argv).map_err(|e| {
            let (key, msg) = clap_error(&e);
            let at = key
                .and_then(|k| global_keys.iter().find(|(g, _)| *g == k))
                .map_or(1, |&(_, l)| l);
            format!("{name}:{at}: {msg}")
        })?;

        let tables = tables.filter(|t| !t.is_empty()).ok_or_else(|| {
            format!("{name}: no [[listener]] table: a config file needs at least one listener")
        })?;
        let mut listeners = Vec::with_capacity(tables.len());
        for (i, table) in tables.iter().enumerate() {
            let t = table.get_ref().as_table().expect("checked above");
            listeners.push(parse_listener(name, text, &cli, i + 1, table.span(), t)?);
        }
        Ok(ConfigFile {
            name: name.to_owned(),
            global,
            global_keys,
            listeners,
        })
    }

    /// The global settings to run with: `cli`'s (the command line and the global flags' `WSBRIDGE_*`
    /// variables) where given, else the file's. `--reuse-port` is on if either turns it on; `config`
    /// is `cli`'s.
    pub fn global_over(&self, cli: &GlobalArgs) -> Result<GlobalArgs, String> {
        // Rebuilt from the file's own argv plus the command line's values, so every field is covered.
        let f = &self.global;
        let mut argv = vec!["wsbridge".to_owned()];
        if let Some(c) = &cli.config {
            argv.push(format!("--config={}", c.display()));
        }
        if cli.reuse_port || f.reuse_port {
            argv.push("--reuse-port".into());
        }
        if let Some(l) = cli.log_level.or(f.log_level) {
            let name = clap::ValueEnum::to_possible_value(&l).expect("no skipped level");
            argv.push(format!("--log-level={}", name.get_name()));
        }
        if let Some(n) = cli.threads.or(f.threads) {
            argv.push(format!("--threads={n}"));
        }
        if let Some(m) = cli.metrics_listen.as_ref().or(f.metrics_listen.as_ref()) {
            argv.push(format!("--metrics-listen={m}"));
        }
        if let Some(d) = cli.drain_timeout.or(f.drain_timeout) {
            argv.push(format!("--drain-timeout={}", d.as_secs_f64()));
        }
        if let Some(d) = cli.tls_reload_interval.or(f.tls_reload_interval) {
            argv.push(format!("--tls-reload-interval={}", d.as_secs_f64()));
        }
        parse_global(&argv).map_err(|e| clap_error(&e).1)
    }

    /// Builds every listener as the command line would (loading PEM files, resolving `listen`), and
    /// checks that no two listen on the same address (port 0 excepted) and that `metrics-listen`
    /// resolves. Nothing is bound. Errors name the file, line and key.
    pub fn build(&self) -> Result<Vec<ListenerPlan>, String> {
        if let Some(m) = &self.global.metrics_listen {
            if let Err(e) = m.to_socket_addrs() {
                let at = self.global_line("metrics-listen");
                return Err(format!(
                    "{}:{at}: key \"metrics-listen\": {m}: {e}",
                    self.name
                ));
            }
        }
        let mut plans: Vec<ListenerPlan> = Vec::with_capacity(self.listeners.len());
        for l in &self.listeners {
            let plan = cli::listener_spec(&l.command).map_err(|f| match f {
                Failure::Config(m) | Failure::Start(m) => self.located(l, &m),
            })?;
            let bind = plan.spec.bind;
            if let Some(j) = plans.iter().position(|p| same_address(p.spec.bind, bind)) {
                let other = &self.listeners[j];
                let at = l.key_line("listen").unwrap_or(l.line);
                return Err(format!(
                    "{}:{at}: {}: key \"listen\": {bind} is also the address of {} (line {})",
                    self.name,
                    l.label(),
                    other.label(),
                    other.line
                ));
            }
            plans.push(plan);
        }
        Ok(plans)
    }

    fn global_line(&self, key: &str) -> usize {
        self.global_keys
            .iter()
            .find(|(k, _)| k == key)
            .map_or(1, |&(_, l)| l)
    }

    /// `msg` of a config builder, located at the first `--flag` it names that is a key of `l` (else at
    /// the `[[listener]]` header).
    fn located(&self, l: &FileListener, msg: &str) -> String {
        let key = msg.match_indices("--").find_map(|(i, _)| {
            let rest = &msg[i + 2..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(rest.len());
            let k = &rest[..end];
            l.key_line(k).map(|line| (k, line))
        });
        match key {
            Some((k, at)) => format!("{}:{at}: {}: key {k:?}: {msg}", self.name, l.label()),
            None => format!("{}:{}: {}: {msg}", self.name, l.line, l.label()),
        }
    }
}

/// The `WSBRIDGE_*` variables of mode flags that are set in this process: a config file ignores them.
pub fn ignored_env_vars() -> Vec<String> {
    let cli = Cli::command();
    let mut names: Vec<String> = MODES
        .iter()
        .flat_map(|m| long_args(&cli, m).collect::<Vec<_>>())
        .filter_map(|a| a.get_env())
        .filter(|v| std::env::var_os(v).is_some())
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Logs a warning naming the ignored `WSBRIDGE_*` variables, if any is set.
pub fn warn_ignored_env_vars() {
    let ignored = ignored_env_vars();
    if !ignored.is_empty() {
        crate::log!(
            Warn,
            "event=config_warning message={} ignored={}",
            Val("with a config file, the WSBRIDGE_* variables of mode flags are ignored"),
            Val(&ignored.join(","))
        );
    }
}

/// `wsbridge check-config [FILE]`: loads `file` (or `--config`'s) exactly as `--config` would,
/// builds every listener without binding, and prints one line per listener on stdout:
/// `listener N: MODE ADDR SETTINGS`. Any error is a [`Failure::Config`] (exit 2).
pub fn check_config(file: Option<&Path>, global: &GlobalArgs) -> Result<(), Failure> {
    let path = file.or(global.config.as_deref()).ok_or_else(|| {
        Failure::Config("check-config: no file given (check-config FILE, or --config FILE)".into())
    })?;
    let file = ConfigFile::load(path).map_err(Failure::Config)?;
    file.global_over(global).map_err(Failure::Config)?;
    warn_ignored_env_vars();
    let plans = file.build().map_err(Failure::Config)?;
    for (i, p) in plans.iter().enumerate() {
        println!(
            "listener {}: {} {} {}",
            i + 1,
            p.spec.factory.mode(),
            p.spec.bind,
            p.describe
        );
    }
    Ok(())
}

/// How a flag takes its value in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--flag` or not: a boolean.
    Switch,
    /// A count or size: an integer.
    Integer,
    /// Seconds: an integer or a float.
    Seconds,
    /// Anything else: a string.
    Text,
}

impl Kind {
    fn of(arg: &Arg) -> Kind {
        if matches!(arg.get_action(), ArgAction::SetTrue) {
            return Kind::Switch;
        }
        let t = arg.get_value_parser().type_id();
        if [
            TypeId::of::<usize>(),
            TypeId::of::<u16>(),
            TypeId::of::<u32>(),
            TypeId::of::<u64>(),
        ]
        .iter()
        .any(|id| t == *id)
        {
            Kind::Integer
        } else if t == TypeId::of::<Duration>() {
            Kind::Seconds
        } else {
            Kind::Text
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Kind::Switch => "true or false",
            Kind::Integer => "an integer",
            Kind::Seconds => "a number of seconds",
            Kind::Text => "a string",
        }
    }
}

/// Appends what `value` means for `arg` to `argv`: `--long=value` per value, `--long` for a true switch.
fn push_value(argv: &mut Vec<String>, arg: &Arg, value: &DeValue<'_>) -> Result<(), String> {
    let long = arg.get_long().expect("only long flags are keys");
    let kind = Kind::of(arg);
    match (kind, value) {
        (Kind::Switch, DeValue::Boolean(on)) => {
            if *on {
                argv.push(format!("--{long}"));
            }
            return Ok(());
        }
        (_, DeValue::Array(items)) if matches!(arg.get_action(), ArgAction::Append) => {
            for item in items {
                argv.push(format!("--{long}={}", scalar(kind, item.get_ref())?));
            }
            return Ok(());
        }
        (_, DeValue::Array(_)) => {
            return Err(format!(
                "takes one value, not an array (expected {})",
                kind.expected()
            ))
        }
        _ => {}
    }
    argv.push(format!("--{long}={}", scalar(kind, value)?));
    Ok(())
}

/// One value as the flag's text, if its TOML type is the flag's.
fn scalar(kind: Kind, value: &DeValue<'_>) -> Result<String, String> {
    let integer = |i: &toml::de::DeInteger<'_>| {
        i128::from_str_radix(i.as_str(), i.radix())
            .map(|n| n.to_string())
            .map_err(|e| format!("{i}: {e}"))
    };
    match (kind, value) {
        (Kind::Text, DeValue::String(s)) => Ok(s.to_string()),
        (Kind::Integer | Kind::Seconds, DeValue::Integer(i)) => integer(i),
        (Kind::Seconds, DeValue::Float(f)) => Ok(f.as_str().to_owned()),
        (kind, v) => Err(format!("expected {}, not {}", kind.expected(), a(v))),
    }
}

/// "a string", "an integer", … for a TOML value.
fn a(v: &DeValue<'_>) -> String {
    let t = v.type_str();
    let article = if t.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    match v {
        DeValue::String(s) => format!("a string ({s:?})"),
        _ => format!("{article} {t}"),
    }
}

fn parse_listener(
    name: &str,
    text: &str,
    cli: &clap::Command,
    index: usize,
    span: Range<usize>,
    table: &DeTable<'_>,
) -> Result<FileListener, String> {
    let header = line_of(text, span.start);
    let mode_at = |line: usize, msg: String| format!("{name}:{line}: [[listener]] {index}: {msg}");
    let mode = match table.get("mode").map(|v| (v, v.get_ref().as_str())) {
        None => {
            return Err(mode_at(
                header,
                "no mode (add mode = \"tcp2ws\", \"ws2tcp\" or \"ws2http\")".into(),
            ))
        }
        Some((v, Some(m))) if MODES.contains(&m) => {
            let _ = v;
            m.to_owned()
        }
        Some((v, m)) => {
            let got = m.map_or_else(|| a(v.get_ref()), |m| format!("{m:?}"));
            return Err(mode_at(
                line_of(text, v.span().start),
                format!("key \"mode\": unknown mode {got} (expected \"tcp2ws\", \"ws2tcp\" or \"ws2http\")"),
            ));
        }
    };
    let label = format!("[[listener]] {index} ({mode})");
    let at = |line: usize, msg: String| format!("{name}:{line}: {label}: {msg}");

    let known: Vec<&Arg> = long_args(cli, &mode).collect();
    let mut argv = vec![mode.clone()];
    let mut keys = Vec::new();
    for (key, value) in in_file_order(table) {
        let k = key.get_ref().as_ref();
        let line = line_of(text, key.span().start);
        if k == "mode" {
            continue;
        }
        let Some(arg) = known.iter().find(|a| a.get_long() == Some(k)) else {
            let mut msg = format!("unknown key {k:?}");
            if cli
                .get_arguments()
                .any(|a| a.get_long() == Some(k) && k != "config")
            {
                msg += " here: it is a global setting, so it goes at the top of the file, before the first [[listener]]";
            } else {
                msg += &suggest(k, known.iter().filter_map(|a| a.get_long()));
            }
            return Err(at(line, msg));
        };
        push_value(&mut argv, arg, value.get_ref())
            .map_err(|e| at(line, format!("key {k:?}: {e}")))?;
        keys.push((k.to_owned(), line));
    }
    let command = parse_mode(&argv).map_err(|e| {
        let (key, msg) = clap_error(&e);
        match key.and_then(|k| keys.iter().find(|(g, _)| *g == k).map(|(g, l)| (g, *l))) {
            Some((k, line)) => at(line, format!("key {k:?}: {msg}")),
            None => at(header, msg),
        }
    })?;
    Ok(FileListener {
        index,
        line: header,
        mode,
        argv,
        command,
        keys,
    })
}

/// The long flags of subcommand `mode` (its own, not the global ones).
fn long_args<'c>(cli: &'c clap::Command, mode: &str) -> impl Iterator<Item = &'c Arg> {
    cli.find_subcommand(mode)
        .into_iter()
        .flat_map(|s| s.get_arguments())
        .filter(|a| a.get_long().is_some())
}

/// Reads no `WSBRIDGE_*` variable: a file's values are its own.
fn no_env(arg: Arg) -> Arg {
    arg.env(None::<&'static str>)
}

/// Parses `argv` (`[mode, flags…]`) as that mode's subcommand, without the environment.
fn parse_mode(argv: &[String]) -> Result<Command, clap::Error> {
    let mode = argv[0].clone();
    let cmd = Cli::command()
        .mut_args(no_env)
        .mut_subcommand(mode, |s| s.mut_args(no_env));
    let m = cmd
        .try_get_matches_from(std::iter::once("wsbridge").chain(argv.iter().map(|s| s.as_str())))?;
    Ok(Cli::from_arg_matches(&m)?.command)
}

/// Parses `argv` (`["wsbridge", global flags…]`) as the global flags, without the environment.
fn parse_global(argv: &[String]) -> Result<GlobalArgs, clap::Error> {
    let cmd = GlobalArgs::augment_args(clap::Command::new("wsbridge")).mut_args(no_env);
    GlobalArgs::from_arg_matches(&cmd.try_get_matches_from(argv)?)
}

/// The key a clap error is about (if it names one) and its message on one line.
fn clap_error(e: &clap::Error) -> (Option<String>, String) {
    let long = |s: &str| {
        s.strip_prefix("--")
            .map(|s| s.split([' ', '=']).next().unwrap_or(s).to_owned())
    };
    let key = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => long(s),
        Some(ContextValue::Strings(v)) => v.first().and_then(|s| long(s)),
        _ => None,
    };
    if e.kind() == ErrorKind::MissingRequiredArgument {
        if let Some(k) = &key {
            return (None, format!("missing key {k:?} (required)"));
        }
    }
    let text = e.to_string();
    let first = text.split("\n\n").next().unwrap_or(&text);
    let msg = one_line(first.strip_prefix("error: ").unwrap_or(first));
    (key, msg)
}

/// `s` with its lines trimmed and joined by spaces.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

type Entry<'t, 'i> = (
    &'t Spanned<toml::de::DeString<'i>>,
    &'t Spanned<DeValue<'i>>,
);

/// The entries of `table` in the order they appear in the file (the map itself is sorted by key).
fn in_file_order<'t, 'i>(table: &'t DeTable<'i>) -> Vec<Entry<'t, 'i>> {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by_key(|(k, _)| k.span().start);
    entries
}

/// `; did you mean "x"?` for the known name closest to `key` (at most 2 edits away), else nothing.
fn suggest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> String {
    known
        .map(|k| (edit_distance(key, k), k))
        .filter(|&(d, _)| d <= 2)
        .min()
        .map_or_else(String::new, |(_, k)| format!("; did you mean {k:?}?"))
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Whether two listeners would compete for one socket: the same port (not 0) and the same IP, or a
/// wildcard IP that covers the other (`0.0.0.0` covers IPv4, `[::]` both families).
fn same_address(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |w: SocketAddr, o: SocketAddr| w.ip().is_unspecified() && (w.is_ipv6() || o.is_ipv4());
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

#[cfg(test)]
mod tests;
