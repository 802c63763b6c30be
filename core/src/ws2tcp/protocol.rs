//! The Socket2Web JSON of a dynamic `ws2tcp` listener (DESIGN §1.2), byte for byte where it is fixed.
//!
//! 1. server → client, Text: [`GREETING`], the protocols it supports (`tcp`, and `tls` with the same
//!    shape);
//! 2. client → server, Text: `{"protocol":"tcp","target_ip":"192.168.1.100","target_port":12345}`,
//!    parsed by [`Handshake::parse`]. `target_ip` may be a host name or an address in any spelling the
//!    system resolver accepts (an IPv6 literal may be bracketed); `target_port` may be a JSON number or a
//!    string of decimal digits, 1 to 65535; other fields are ignored;
//! 3. server → client, Text: [`success`] (`{"status":"Successfully connected, starting to proxy"}`) then
//!    raw relay, or [`failure`] (`{"status":"Connection failed, cancelling proxy","reason":"…"}`) then a
//!    Close with a real code.

use serde_json::Value;

use super::policy::parse_port_str;

/// The greeting, the first frame to a dynamic-mode client.
pub const GREETING: &str = concat!(
    r#"{"supported_protocols":{"tcp":{"target_ip":"IP Address","target_port":"Port for IP Address"},"#,
    r#""tls":{"target_ip":"IP Address","target_port":"Port for IP Address"}}}"#
);

/// The `status` of a success.
pub const SUCCESS_STATUS: &str = "Successfully connected, starting to proxy";
/// The `status` of a failure.
pub const FAILURE_STATUS: &str = "Connection failed, cancelling proxy";

/// The longest `target_ip` accepted (a DNS name is at most 253 characters).
pub const MAX_HOST_LEN: usize = 253;

/// How to reach the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetProtocol {
    /// Plain TCP.
    Tcp,
    /// TLS over TCP, the target's certificate checked against `target_ip`.
    Tls,
}

impl TargetProtocol {
    /// The name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            TargetProtocol::Tcp => "tcp",
            TargetProtocol::Tls => "tls",
        }
    }
}

/// A client's handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// `tcp` or `tls`.
    pub protocol: TargetProtocol,
    /// The host as the resolver gets it (brackets of an IPv6 literal removed).
    pub host: String,
    /// 1..=65535.
    pub port: u16,
}

impl Handshake {
    /// Parses the client's handshake; the error is the `reason` of the failure status.
    pub fn parse(text: &str) -> Result<Handshake, String> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| format!("the handshake is not valid JSON: {e}"))?;
        let Value::Object(obj) = value else {
            return Err("the handshake is not a JSON object".into());
        };
        let protocol = match obj.get("protocol") {
            Some(Value::String(p)) if p == "tcp" => TargetProtocol::Tcp,
            Some(Value::String(p)) if p == "tls" => TargetProtocol::Tls,
            Some(Value::String(p)) => {
                return Err(format!(
                    "unsupported protocol {:?} (supported: tcp, tls)",
                    truncate(p)
                ))
            }
            _ => return Err("the handshake has no string \"protocol\"".into()),
        };
        let host = match obj.get("target_ip") {
            Some(Value::String(h)) => host(h)?,
            _ => return Err("the handshake has no string \"target_ip\"".into()),
        };
        let port = match obj.get("target_port") {
            Some(Value::Number(n)) => match n.as_u64() {
                Some(p @ 1..=65535) => p as u16,
                _ => return Err(format!("target_port {n} is not a port (1 to 65535)")),
            },
            Some(Value::String(s)) => parse_port_str(s)
                .map_err(|_| format!("target_port {:?} is not a port (1 to 65535)", truncate(s)))?,
            _ => return Err("the handshake has no \"target_port\"".into()),
        };
        Ok(Handshake {
            protocol,
            host,
            port,
        })
    }
}

/// Checks the shape of `target_ip` before it goes to the resolver: not empty, at most
/// [`MAX_HOST_LEN`] characters, printable ASCII without spaces, and not a URL or `host:port`. A
/// bracketed IPv6 literal loses its brackets.
fn host(h: &str) -> Result<String, String> {
    let inner = match h.strip_prefix('[') {
        Some(rest) => rest
            .strip_suffix(']')
            .ok_or_else(|| format!("target_ip {:?} is not a host", truncate(h)))?,
        None => h,
    };
    let ok = !inner.is_empty()
        && inner.len() <= MAX_HOST_LEN
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'%'))
        && (inner.contains(':') == inner.parse::<std::net::Ipv6Addr>().is_ok()
            || inner.contains('%'));
    if ok {
        Ok(inner.to_owned())
    } else {
        Err(format!("target_ip {:?} is not a host", truncate(h)))
    }
}

/// At most 64 characters of client input in a reason.
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The success status (exactly Socket2Web's).
pub fn success() -> String {
    format!(r#"{{"status":"{SUCCESS_STATUS}"}}"#)
}

/// The failure status with `reason`.
pub fn failure(reason: &str) -> String {
    format!(
        r#"{{"status":"{FAILURE_STATUS}","reason":{}}}"#,
        Value::String(reason.to_owned())
    )
}

/// A control message from a `tcp2ws` on the `wsbridge.v1` tunnel (DESIGN §1.1, §1.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelControl {
    /// Who connected to the `tcp2ws`, for logs: `client_ip:client_port` and its connection id.
    Hello {
        /// `client_ip:client_port` as sent.
        client: String,
        /// The `tcp2ws` session's id.
        connection_id: String,
    },
    /// The client shut down its side: shut down the target's.
    Eof,
    /// Any other type (`tls_started`, future ones): ignored.
    Other(String),
}

impl TunnelControl {
    /// Parses one Text frame of the tunnel; anything but a JSON object with a string `type` is an
    /// error (the session closes with 1008).
    pub fn parse(text: &str) -> Result<TunnelControl, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("malformed control JSON: {e}"))?;
        let Value::Object(obj) = value else {
            return Err("control message is not a JSON object".into());
        };
        let Some(Value::String(kind)) = obj.get("type") else {
            return Err("control message has no string \"type\"".into());
        };
        let field = |k: &str| match obj.get(k) {
            Some(Value::String(s)) => truncate(s).to_owned(),
            Some(Value::Number(n)) => n.to_string(),
            _ => "?".to_owned(),
        };
        Ok(match kind.as_str() {
            "bridge_hello" => TunnelControl::Hello {
                client: format!("{}:{}", field("client_ip"), field("client_port")),
                connection_id: field("connection_id"),
            },
            "eof" => TunnelControl::Eof,
            other => TunnelControl::Other(truncate(other).to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_strings_are_byte_exact() {
        assert_eq!(
            GREETING,
            r#"{"supported_protocols":{"tcp":{"target_ip":"IP Address","target_port":"Port for IP Address"},"tls":{"target_ip":"IP Address","target_port":"Port for IP Address"}}}"#
        );
        let v: Value = serde_json::from_str(GREETING).unwrap();
        assert_eq!(
            v["supported_protocols"]["tls"],
            v["supported_protocols"]["tcp"]
        );
        assert_eq!(
            success(),
            r#"{"status":"Successfully connected, starting to proxy"}"#
        );
        assert_eq!(
            failure("no \"way\""),
            r#"{"status":"Connection failed, cancelling proxy","reason":"no \"way\""}"#
        );
    }

    #[test]
    fn parses_socket2web_handshakes() {
        let h = Handshake::parse(
            r#"{"protocol":"tcp","target_ip":"192.168.1.100","target_port":12345}"#,
        )
        .unwrap();
        assert_eq!(
            h,
            Handshake {
                protocol: TargetProtocol::Tcp,
                host: "192.168.1.100".into(),
                port: 12345
            }
        );
        let h = Handshake::parse(
            r#"{"target_port":"443","protocol":"tls","target_ip":"mail.example.com","x":1}"#,
        )
        .unwrap();
        assert_eq!(
            (h.protocol, h.host.as_str(), h.port),
            (TargetProtocol::Tls, "mail.example.com", 443)
        );
        let h =
            Handshake::parse(r#"{"protocol":"tcp","target_ip":"[::1]","target_port":1}"#).unwrap();
        assert_eq!(h.host, "::1");
        let h = Handshake::parse(r#"{"protocol":"tcp","target_ip":"fe80::1%lo","target_port":1}"#)
            .unwrap();
        assert_eq!(h.host, "fe80::1%lo");
    }

    #[test]
    fn refuses_bad_handshakes_with_a_reason() {
        for bad in [
            "",
            "nope",
            "[]",
            "{}",
            r#"{"protocol":"udp","target_ip":"1.2.3.4","target_port":1}"#,
            r#"{"protocol":"TCP","target_ip":"1.2.3.4","target_port":1}"#,
            r#"{"target_ip":"1.2.3.4","target_port":1}"#,
            r#"{"protocol":"tcp","target_port":1}"#,
            r#"{"protocol":"tcp","target_ip":"","target_port":1}"#,
            r#"{"protocol":"tcp","target_ip":"a b","target_port":1}"#,
            r#"{"protocol":"tcp","target_ip":"http://x/","target_port":1}"#,
            r#"{"protocol":"tcp","target_ip":"x:22","target_port":1}"#,
            r#"{"protocol":"tcp","target_ip":"[::1","target_port":1}"#,
            r#"{"protocol":"tcp","target_ip":"a\u0000b","target_port":1}"#,
            r#"{"protocol":"tcp","target_ip":7,"target_port":1}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4"}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":0}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":65536}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":-1}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":22.5}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":1e3}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":"abc"}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":"-1"}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":"65536"}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":" 22"}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":18446744073709551638}"#,
            r#"{"protocol":"tcp","target_ip":"1.2.3.4","target_port":null}"#,
        ] {
            let e = Handshake::parse(bad).expect_err(bad);
            assert!(!e.is_empty());
        }
        let long = format!(
            r#"{{"protocol":"tcp","target_ip":"{}","target_port":1}}"#,
            "a".repeat(254)
        );
        assert!(Handshake::parse(&long).is_err());
    }

    #[test]
    fn tunnel_control_messages() {
        assert_eq!(
            TunnelControl::parse(r#"{"type":"eof"}"#),
            Ok(TunnelControl::Eof)
        );
        assert_eq!(
            TunnelControl::parse(
                r#"{"type":"bridge_hello","version":1,"connection_id":"c1","client_ip":"203.0.113.7","client_port":51234}"#
            ),
            Ok(TunnelControl::Hello {
                client: "203.0.113.7:51234".into(),
                connection_id: "c1".into()
            })
        );
        assert_eq!(
            TunnelControl::parse(r#"{"type":"future"}"#),
            Ok(TunnelControl::Other("future".into()))
        );
        for bad in ["", "[]", "{}", r#"{"type":1}"#, "{"] {
            assert!(TunnelControl::parse(bad).is_err(), "{bad:?}");
        }
    }
}
