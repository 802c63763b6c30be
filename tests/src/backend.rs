//! Scripted WebSocket backends on 127.0.0.1, written with tungstenite (an independent implementation).
//!
//! Each accepted connection is upgraded (choosing `wsbridge.v1` when the bridge offers it) and handed to
//! the test's script on its own thread, together with what the upgrade request said.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::Value;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

/// The backend's end of one bridged connection.
pub type Ws = WebSocket<TcpStream>;

/// What the upgrade request carried.
#[derive(Debug, Clone)]
pub struct Upgrade {
    /// Request target.
    pub path: String,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
}

impl Upgrade {
    /// The first value of `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A listening backend; the listener thread ends with the test process.
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
}

/// What a backend does with each TCP connection before (or instead of) the upgrade.
pub enum Behaviour {
    /// Upgrade and run the script.
    Upgrade(Arc<dyn Fn(Ws, Upgrade) + Send + Sync>),
    /// Accept and never answer (the bridge's handshake timeout must fire).
    Silent,
    /// Answer the upgrade with this raw HTTP response and close.
    Refuse(&'static str),
}

impl Backend {
    /// A backend that upgrades every connection and runs `script` on it.
    pub fn start<F: Fn(Ws, Upgrade) + Send + Sync + 'static>(script: F) -> Backend {
        Self::with(Behaviour::Upgrade(Arc::new(script)))
    }

    /// A backend with the given behaviour.
    pub fn with(behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(behaviour);
        thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                match &*behaviour {
                    Behaviour::Silent => held.push(stream),
                    Behaviour::Refuse(response) => {
                        let mut stream = stream;
                        let _ = read_head(&mut stream);
                        let _ = std::io::Write::write_all(&mut stream, response.as_bytes());
                    }
                    Behaviour::Upgrade(script) => {
                        let script = script.clone();
                        thread::spawn(move || {
                            if let Some((ws, upgrade)) = upgrade(stream) {
                                script(ws, upgrade);
                            }
                        });
                    }
                }
            }
        });
        Backend { addr }
    }

    /// `ws://127.0.0.1:PORT/bridge`.
    pub fn url(&self) -> String {
        format!("ws://{}/bridge", self.addr)
    }
}

fn read_head(stream: &mut TcpStream) -> std::io::Result<()> {
    use std::io::Read;
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 16384 {
        if stream.read(&mut byte)? == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    Ok(())
}

// The callback's error type is tungstenite's, not ours.
#[allow(clippy::result_large_err)]
fn upgrade(stream: TcpStream) -> Option<(Ws, Upgrade)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream.set_nodelay(true).ok()?;
    let mut seen = None;
    let config = WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20));
    let ws = tungstenite::accept_hdr_with_config(
        stream,
        |req: &Request, mut resp: Response| {
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_ascii_lowercase(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            seen = Some(Upgrade {
                path: req.uri().to_string(),
                headers,
            });
            let offered = req
                .headers()
                .get("sec-websocket-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if offered.split(',').any(|p| p.trim() == "wsbridge.v1") {
                resp.headers_mut()
                    .insert("sec-websocket-protocol", "wsbridge.v1".parse().unwrap());
            }
            Ok(resp)
        },
        Some(config),
    )
    .ok()?;
    Some((ws, seen?))
}

/// Reads the next message, answering pings on the way (tungstenite queues the pong itself).
pub fn next(ws: &mut Ws) -> Message {
    loop {
        match ws.read().expect("backend read") {
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            m => return m,
        }
    }
}

/// Reads the next message and parses it as JSON control; panics if it is not Text.
pub fn next_json(ws: &mut Ws) -> Value {
    match next(ws) {
        Message::Text(t) => serde_json::from_str(t.as_str()).expect("control JSON"),
        other => panic!("expected a Text control message, got {other:?}"),
    }
}

/// Sends a Binary data frame.
pub fn send_data(ws: &mut Ws, data: &[u8]) {
    ws.send(Message::Binary(bytes::Bytes::copy_from_slice(data)))
        .expect("backend send");
}

/// Sends a Text control frame.
pub fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::Text(v.to_string().into()))
        .expect("backend send");
}
