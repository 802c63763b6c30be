//! Two small but real mail servers, written as backend scripts for [`Backend::start`]: a POP3 server
//! (RFC 1939 with CAPA and STLS, RFC 2449 / RFC 2595) and an SMTP server (RFC 5321 with STARTTLS,
//! RFC 3207). Real clients (curl, `openssl s_client`) talk to them through the bridge.
//!
//! Both speak the bridge's wire contract (DESIGN §1.1): the first frame is `bridge_hello`, Binary frames are
//! the client's bytes, Text frames are JSON control. They are line-oriented over a byte stream, not over
//! frames: a line may arrive split across frames and one frame may carry several lines, so input is
//! buffered and cut at LF. STARTTLS is `start_tls` with the protocol's reply; every byte between sending
//! it and receiving `tls_started` (and whatever was buffered after the STARTTLS line) is plaintext the
//! client sent before the switch, and is discarded, as RFC 3207 §4.2 and RFC 2595 §4 require.
//!
//! What happened is reported as [`MailEvent`]s on a channel, so a test can check what the server saw.
//!
//! [`Backend::start`]: crate::backend::Backend::start

use std::collections::BTreeSet;
use std::sync::mpsc::Sender;
use std::sync::Arc;

use serde_json::{json, Value};
use tungstenite::Message;

use crate::backend::{Upgrade, Ws};

/// Longest line either server accepts (RFC 5321 §4.5.3.1.6 allows 1000 octets; leave room).
const MAX_LINE: usize = 64 << 10;

/// What a mail server saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum MailEvent {
    /// The `bridge_hello` control message.
    Hello(Value),
    /// A command line (without its CRLF), and whether it arrived after `tls_started` (or on an implicit
    /// TLS connection, as `bridge_hello.tls` says).
    Command {
        /// The line.
        line: String,
        /// Under TLS.
        tls: bool,
    },
    /// The `tls_started` control message.
    TlsStarted(Value),
    /// The `tls_failed` control message.
    TlsFailed(Value),
    /// Plaintext discarded at the STARTTLS switch: buffered behind the STARTTLS line, or in Binary frames
    /// between `start_tls` and `tls_started`.
    Discarded(Vec<u8>),
    /// POP3: message `n` (1-based) was sent in full by RETR.
    Retrieved(usize),
    /// POP3: the messages (1-based) removed when the session ended with QUIT.
    Deleted(Vec<usize>),
    /// SMTP: a message was accepted.
    Mail(Mail),
    /// The session ended (QUIT, or the connection went away).
    Closed,
}

/// A message an SMTP client submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mail {
    /// The EHLO / HELO argument in effect.
    pub helo: String,
    /// The reverse path (inside `<>`).
    pub from: String,
    /// The forward paths (inside `<>`).
    pub rcpts: Vec<String>,
    /// The content, with dot-stuffing undone, without the final `.` line.
    pub body: Vec<u8>,
    /// Whether it was submitted under TLS.
    pub tls: bool,
}

/// A line-oriented connection over the bridge's frames.
struct Lines {
    ws: Ws,
    buf: Vec<u8>,
    tls: bool,
    events: Sender<MailEvent>,
}

impl Lines {
    /// Reads the `bridge_hello` and reports it.
    fn open(mut ws: Ws, events: Sender<MailEvent>) -> Option<Lines> {
        let hello = loop {
            match ws.read().ok()? {
                Message::Text(t) => break serde_json::from_str::<Value>(t.as_str()).ok()?,
                Message::Close(_) | Message::Binary(_) => return None,
                _ => continue,
            }
        };
        let tls = hello["tls"] == true;
        let _ = events.send(MailEvent::Hello(hello));
        Some(Lines {
            ws,
            buf: Vec::new(),
            tls,
            events,
        })
    }

    fn report(&self, e: MailEvent) {
        let _ = self.events.send(e);
    }

    /// The next line including its line end, or `None` once the client is gone.
    fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                return Some(self.buf.drain(..=i).collect());
            }
            if self.buf.len() > MAX_LINE {
                return None;
            }
            match self.ws.read().ok()? {
                Message::Binary(b) => self.buf.extend_from_slice(&b),
                Message::Text(t) => {
                    // `eof` (the client half-closed in `--half-close eof` mode): no more lines come.
                    let v: Value = serde_json::from_str(t.as_str()).ok()?;
                    if v["type"] == "eof" {
                        return None;
                    }
                }
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }

    /// The next command line without its line end.
    fn command(&mut self) -> Option<String> {
        let line = self.read_line()?;
        let text = String::from_utf8_lossy(trim_eol(&line)).into_owned();
        self.report(MailEvent::Command {
            line: text.clone(),
            tls: self.tls,
        });
        Some(text)
    }

    /// Sends bytes to the client as one Binary frame.
    fn send(&mut self, data: &[u8]) -> Option<()> {
        self.ws
            .send(Message::Binary(bytes::Bytes::copy_from_slice(data)))
            .ok()
    }

    /// STARTTLS: `start_tls` with `reply`, then discards plaintext until `tls_started`. False if TLS
    /// failed or the connection went away.
    fn start_tls(&mut self, reply: &str) -> bool {
        let msg = json!({"type": "start_tls", "reply": reply}).to_string();
        if self.ws.send(Message::Text(msg.into())).is_err() {
            return false;
        }
        let mut discarded = std::mem::take(&mut self.buf);
        loop {
            let Ok(m) = self.ws.read() else { return false };
            match m {
                Message::Binary(b) => discarded.extend_from_slice(&b),
                Message::Text(t) => {
                    let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                        return false;
                    };
                    match v["type"].as_str() {
                        Some("tls_started") => {
                            if !discarded.is_empty() {
                                self.report(MailEvent::Discarded(discarded));
                            }
                            self.tls = true;
                            self.report(MailEvent::TlsStarted(v));
                            return true;
                        }
                        Some("tls_failed") => {
                            self.report(MailEvent::TlsFailed(v));
                            return false;
                        }
                        _ => {}
                    }
                }
                Message::Close(_) => return false,
                _ => {}
            }
        }
    }

    /// Closes the WebSocket (after the final reply) and waits for the bridge's Close.
    fn close(mut self) {
        let _ = self.ws.close(None);
        while self.ws.read().is_ok() {}
        self.report(MailEvent::Closed);
    }

    /// The client went away.
    fn gone(self) {
        self.report(MailEvent::Closed);
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Splits a command into its upper-cased verb and the rest.
fn verb(line: &str) -> (String, &str) {
    let (v, rest) = line.split_once(' ').unwrap_or((line, ""));
    (v.to_ascii_uppercase(), rest.trim())
}

/// The content with CRLF line ends, a final CRLF, and every line that starts with `.` dot-stuffed.
fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let mut at_line_start = true;
    for &b in body {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

// ---- POP3 ----

/// The settings of the POP3 server.
#[derive(Debug, Clone)]
pub struct Pop3 {
    /// The one user.
    pub user: String,
    /// Their password.
    pub pass: String,
    /// The maildrop, message 1 first. Use CRLF line ends.
    pub messages: Vec<Vec<u8>>,
    /// Offer STLS (a STARTTLS listener) while the connection is not under TLS yet.
    pub stls: bool,
}

/// A POP3 server script for [`Backend::start`](crate::backend::Backend::start).
pub fn pop3(cfg: Pop3, events: Sender<MailEvent>) -> impl Fn(Ws, Upgrade) + Send + Sync + 'static {
    let cfg = Arc::new(cfg);
    move |ws, _| {
        if let Some(lines) = Lines::open(ws, events.clone()) {
            pop3_session(&cfg, lines);
        }
    }
}

fn pop3_session(cfg: &Pop3, mut c: Lines) {
    let ok = |c: &mut Lines, s: &str| c.send(format!("{s}\r\n").as_bytes());
    if ok(&mut c, "+OK POP3 wsbridge test server ready").is_none() {
        return c.gone();
    }
    let mut user: Option<String> = None;
    let mut authed = false;
    let mut deleted = BTreeSet::new();
    let live = |deleted: &BTreeSet<usize>, n: &str| -> Option<usize> {
        let n: usize = n.parse().ok()?;
        (n >= 1 && n <= cfg.messages.len() && !deleted.contains(&n)).then_some(n)
    };
    loop {
        let Some(line) = c.command() else {
            return c.gone();
        };
        let (cmd, arg) = verb(&line);
        let sent = match (cmd.as_str(), authed) {
            ("CAPA", _) => {
                let mut caps = String::from("+OK Capability list follows\r\nUSER\r\n");
                if cfg.stls && !c.tls && !authed {
                    caps.push_str("STLS\r\n");
                }
                caps.push_str("IMPLEMENTATION wsbridge-test\r\n.\r\n");
                c.send(caps.as_bytes())
            }
            ("STLS", false) if cfg.stls && !c.tls => {
                if !c.start_tls("+OK Begin TLS\r\n") {
                    return c.gone();
                }
                // RFC 2595 §4: the client must discard what it learnt before; so do we.
                user = None;
                Some(())
            }
            ("STLS", _) => ok(&mut c, "-ERR STLS not available"),
            ("USER", false) => {
                user = Some(arg.to_owned());
                ok(&mut c, "+OK send PASS")
            }
            ("PASS", false) => match user.take() {
                Some(u) if u == cfg.user && arg == cfg.pass => {
                    authed = true;
                    ok(&mut c, "+OK maildrop locked and ready")
                }
                Some(_) => ok(&mut c, "-ERR [AUTH] invalid user or password"),
                None => ok(&mut c, "-ERR USER first"),
            },
            ("QUIT", _) => {
                if authed {
                    c.report(MailEvent::Deleted(deleted.iter().copied().collect()));
                }
                let _ = ok(&mut c, "+OK bye");
                return c.close();
            }
            ("NOOP", true) => ok(&mut c, "+OK"),
            ("STAT", true) => {
                let (n, size) = cfg
                    .messages
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !deleted.contains(&(i + 1)))
                    .fold((0, 0), |(n, s), (_, m)| (n + 1, s + m.len()));
                ok(&mut c, &format!("+OK {n} {size}"))
            }
            ("LIST", true) if arg.is_empty() => {
                let mut out = String::from("+OK scan listing follows\r\n");
                for (i, m) in cfg.messages.iter().enumerate() {
                    if !deleted.contains(&(i + 1)) {
                        out.push_str(&format!("{} {}\r\n", i + 1, m.len()));
                    }
                }
                out.push_str(".\r\n");
                c.send(out.as_bytes())
            }
            ("LIST", true) => match live(&deleted, arg) {
                Some(n) => ok(&mut c, &format!("+OK {n} {}", cfg.messages[n - 1].len())),
                None => ok(&mut c, "-ERR no such message"),
            },
            ("RETR", true) => match live(&deleted, arg) {
                Some(n) => {
                    let m = &cfg.messages[n - 1];
                    let mut out = format!("+OK {} octets\r\n", m.len()).into_bytes();
                    out.extend_from_slice(&dot_stuff(m));
                    out.extend_from_slice(b".\r\n");
                    let sent = c.send(&out);
                    c.report(MailEvent::Retrieved(n));
                    sent
                }
                None => ok(&mut c, "-ERR no such message"),
            },
            ("DELE", true) => match live(&deleted, arg) {
                Some(n) => {
                    deleted.insert(n);
                    ok(&mut c, &format!("+OK message {n} deleted"))
                }
                None => ok(&mut c, "-ERR no such message"),
            },
            ("RSET", true) => {
                deleted.clear();
                ok(&mut c, "+OK")
            }
            (_, false) => ok(&mut c, "-ERR authenticate first"),
            (_, true) => ok(&mut c, "-ERR unknown command"),
        };
        if sent.is_none() {
            return c.gone();
        }
    }
}

// ---- SMTP ----

/// The settings of the SMTP server.
#[derive(Debug, Clone)]
pub struct Smtp {
    /// The name in the greeting and the EHLO reply.
    pub hostname: String,
    /// Offer STARTTLS (a STARTTLS listener) while the connection is not under TLS yet.
    pub starttls: bool,
    /// Refuse MAIL until TLS is on (`530`), as a submission server does.
    pub require_tls: bool,
}

/// An SMTP server script for [`Backend::start`](crate::backend::Backend::start).
pub fn smtp(cfg: Smtp, events: Sender<MailEvent>) -> impl Fn(Ws, Upgrade) + Send + Sync + 'static {
    let cfg = Arc::new(cfg);
    move |ws, _| {
        if let Some(lines) = Lines::open(ws, events.clone()) {
            smtp_session(&cfg, lines);
        }
    }
}

/// The path inside `<>` after `FROM:` / `TO:` (parameters after it are ignored).
fn path_arg<'a>(arg: &'a str, prefix: &str) -> Option<&'a str> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let rest = rest.strip_prefix('<')?;
    Some(&rest[..rest.find('>')?])
}

fn smtp_session(cfg: &Smtp, mut c: Lines) {
    let reply = |c: &mut Lines, s: &str| c.send(format!("{s}\r\n").as_bytes());
    let host = &cfg.hostname;
    if reply(&mut c, &format!("220 {host} ESMTP wsbridge test server")).is_none() {
        return c.gone();
    }
    let mut helo: Option<String> = None;
    let mut from: Option<String> = None;
    let mut rcpts: Vec<String> = Vec::new();
    loop {
        let Some(line) = c.command() else {
            return c.gone();
        };
        let (cmd, arg) = verb(&line);
        let sent = match cmd.as_str() {
            "EHLO" | "HELO" if arg.is_empty() => reply(&mut c, "501 5.5.4 Syntax: EHLO domain"),
            "EHLO" => {
                helo = Some(arg.to_owned());
                from = None;
                rcpts.clear();
                let mut out = format!("250-{host} greets {arg}\r\n250-8BITMIME\r\n");
                if cfg.starttls && !c.tls {
                    out.push_str("250-STARTTLS\r\n");
                }
                out.push_str("250 HELP\r\n");
                c.send(out.as_bytes())
            }
            "HELO" => {
                helo = Some(arg.to_owned());
                from = None;
                rcpts.clear();
                reply(&mut c, &format!("250 {host}"))
            }
            "STARTTLS" if !arg.is_empty() => reply(&mut c, "501 5.5.4 Syntax: STARTTLS"),
            "STARTTLS" if cfg.starttls && !c.tls => {
                if !c.start_tls("220 2.0.0 Ready to start TLS\r\n") {
                    return c.gone();
                }
                // RFC 3207 §4.2: forget everything learnt before; a new EHLO is required.
                helo = None;
                from = None;
                rcpts.clear();
                Some(())
            }
            "STARTTLS" => reply(&mut c, "454 4.7.0 TLS not available"),
            "MAIL" if helo.is_none() => reply(&mut c, "503 5.5.1 Error: send HELO/EHLO first"),
            "MAIL" if cfg.require_tls && !c.tls => {
                reply(&mut c, "530 5.7.0 Must issue a STARTTLS command first")
            }
            "MAIL" if from.is_some() => reply(&mut c, "503 5.5.1 Error: nested MAIL command"),
            "MAIL" => match path_arg(arg, "FROM:") {
                Some(p) => {
                    from = Some(p.to_owned());
                    reply(&mut c, "250 2.1.0 Ok")
                }
                None => reply(&mut c, "501 5.5.4 Syntax: MAIL FROM:<address>"),
            },
            "RCPT" if from.is_none() => reply(&mut c, "503 5.5.1 Error: need MAIL command"),
            "RCPT" => match path_arg(arg, "TO:") {
                Some(p) => {
                    rcpts.push(p.to_owned());
                    reply(&mut c, "250 2.1.5 Ok")
                }
                None => reply(&mut c, "501 5.5.4 Syntax: RCPT TO:<address>"),
            },
            "DATA" if rcpts.is_empty() => reply(&mut c, "503 5.5.1 Error: need RCPT command"),
            "DATA" => {
                if reply(&mut c, "354 End data with <CR><LF>.<CR><LF>").is_none() {
                    return c.gone();
                }
                let mut body = Vec::new();
                loop {
                    let Some(l) = c.read_line() else {
                        return c.gone();
                    };
                    if trim_eol(&l) == b"." {
                        break;
                    }
                    body.extend_from_slice(l.strip_prefix(b".").unwrap_or(&l));
                }
                c.report(MailEvent::Mail(Mail {
                    helo: helo.clone().unwrap_or_default(),
                    from: from.take().unwrap_or_default(),
                    rcpts: std::mem::take(&mut rcpts),
                    body,
                    tls: c.tls,
                }));
                reply(&mut c, "250 2.0.0 Ok: queued")
            }
            "RSET" => {
                from = None;
                rcpts.clear();
                reply(&mut c, "250 2.0.0 Ok")
            }
            "NOOP" => reply(&mut c, "250 2.0.0 Ok"),
            "QUIT" => {
                let _ = reply(&mut c, "221 2.0.0 Bye");
                return c.close();
            }
            _ => reply(&mut c, "502 5.5.2 Error: command not recognized"),
        };
        if sent.is_none() {
            return c.gone();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_paths() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n..c"), b"..a\r\nb\r\n...c\r\n");
        assert_eq!(path_arg("FROM:<a@b>", "FROM:"), Some("a@b"));
        assert_eq!(path_arg("from: <a@b> SIZE=10", "FROM:"), Some("a@b"));
        assert_eq!(path_arg("TO:<>", "FROM:"), None);
        assert_eq!(verb("rcpt TO:<x>"), ("RCPT".to_owned(), "TO:<x>"));
    }
}
