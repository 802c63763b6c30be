//! The JSON control messages of the `tcp2ws` wire contract (DESIGN §1.1): Text frames carry one JSON
//! object with a `"type"`; Binary frames carry data.
//!
//! Bridge → backend: `bridge_hello` (first frame), `tls_started`, `tls_failed`, `eof`.
//! Backend → bridge: `start_tls` (with an optional `reply` written to the client as the last plaintext),
//! `eof`. Unknown types are reported as [`FromBackend::Unknown`] so the session can ignore them with a
//! warning (forward compatibility); anything that is not a JSON object with a string `type` is an error.

use std::net::SocketAddr;

use serde_json::{json, Map, Value};

/// A control message from the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromBackend {
    /// Upgrade the client connection to TLS. `reply` is written to the client first, as plaintext.
    StartTls {
        /// The last plaintext line for the client, e.g. `"220 2.0.0 Ready to start TLS\r\n"`.
        reply: Option<String>,
    },
    /// The backend has nothing more to send (`--half-close eof`): shut down the client's read side.
    Eof,
    /// A type this bridge does not know; ignored.
    Unknown(String),
}

/// Why a control message was refused (the session closes with 1008 and this reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadControl(pub String);

impl std::fmt::Display for BadControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromBackend {
    /// Parses one Text frame.
    pub fn parse(text: &str) -> Result<FromBackend, BadControl> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| BadControl(format!("malformed control JSON: {e}")))?;
        let Value::Object(obj) = value else {
            return Err(BadControl("control message is not a JSON object".into()));
        };
        let Some(Value::String(kind)) = obj.get("type") else {
            return Err(BadControl("control message has no string \"type\"".into()));
        };
        match kind.as_str() {
            "start_tls" => match obj.get("reply") {
                None | Some(Value::Null) => Ok(FromBackend::StartTls { reply: None }),
                Some(Value::String(r)) => Ok(FromBackend::StartTls {
                    reply: Some(r.clone()),
                }),
                Some(_) => Err(BadControl("start_tls \"reply\" must be a string".into())),
            },
            "eof" => Ok(FromBackend::Eof),
            other => Ok(FromBackend::Unknown(other.to_owned())),
        }
    }
}

/// Who connected, as the backend is told in `bridge_hello` and the upgrade request's headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFacts {
    /// The session's id, also in logs.
    pub connection_id: String,
    /// The client's address.
    pub client: SocketAddr,
    /// The listener's address as configured.
    pub listener: String,
    /// TLS is up on the client connection at connect time (implicit TLS).
    pub tls: bool,
    /// The server name the client asked for in its TLS ClientHello.
    pub sni: Option<String>,
}

/// The first frame to the backend.
pub fn bridge_hello(facts: &ClientFacts) -> String {
    let mut obj = Map::new();
    obj.insert("type".into(), json!("bridge_hello"));
    obj.insert("version".into(), json!(1));
    obj.insert("connection_id".into(), json!(facts.connection_id));
    obj.insert("client_ip".into(), json!(facts.client.ip().to_string()));
    obj.insert("client_port".into(), json!(facts.client.port()));
    obj.insert("tls".into(), json!(facts.tls));
    if let Some(sni) = &facts.sni {
        obj.insert("sni".into(), json!(sni));
    }
    obj.insert("listener".into(), json!(facts.listener));
    Value::Object(obj).to_string()
}

/// Sent when the client's TLS handshake after `start_tls` completed.
pub fn tls_started(version: &str, cipher: &str, sni: Option<&str>) -> String {
    json!({"type": "tls_started", "version": version, "cipher": cipher, "sni": sni}).to_string()
}

/// Sent when the client's TLS handshake after `start_tls` failed; the bridge then closes.
pub fn tls_failed(reason: &str) -> String {
    json!({"type": "tls_failed", "reason": reason}).to_string()
}

/// Sent in `--half-close eof` mode when the client shut down its side.
pub fn eof() -> String {
    json!({"type": "eof"}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_backend_messages() {
        assert_eq!(
            FromBackend::parse(r#"{"type":"start_tls","reply":"220 go\r\n"}"#),
            Ok(FromBackend::StartTls {
                reply: Some("220 go\r\n".into())
            })
        );
        assert_eq!(
            FromBackend::parse(r#"{"type":"start_tls"}"#),
            Ok(FromBackend::StartTls { reply: None })
        );
        assert_eq!(
            FromBackend::parse(r#"{"type":"eof","extra":1}"#),
            Ok(FromBackend::Eof)
        );
        assert_eq!(
            FromBackend::parse(r#"{"type":"future"}"#),
            Ok(FromBackend::Unknown("future".into()))
        );
    }

    #[test]
    fn refuses_what_is_not_a_typed_object() {
        for bad in [
            "",
            "[]",
            "42",
            "{}",
            r#"{"type":5}"#,
            "{\"type\":\"eof\"",
            r#"{"type":"start_tls","reply":1}"#,
        ] {
            assert!(FromBackend::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bridge_hello_has_the_contract_fields() {
        let facts = ClientFacts {
            connection_id: "c1".into(),
            client: "203.0.113.7:51234".parse().unwrap(),
            listener: "0.0.0.0:995".into(),
            tls: true,
            sni: Some("mail.example.com".into()),
        };
        let v: Value = serde_json::from_str(&bridge_hello(&facts)).unwrap();
        assert_eq!(
            v,
            json!({"type":"bridge_hello","version":1,"connection_id":"c1","client_ip":"203.0.113.7",
                   "client_port":51234,"tls":true,"sni":"mail.example.com","listener":"0.0.0.0:995"})
        );
        let plain = ClientFacts {
            tls: false,
            sni: None,
            ..facts
        };
        let v: Value = serde_json::from_str(&bridge_hello(&plain)).unwrap();
        assert!(v.get("sni").is_none(), "sni only when the client sent one");
    }
}
