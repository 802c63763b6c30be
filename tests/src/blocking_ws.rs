//! [`BlockingWs`]: the `wsbridge-core` WebSocket engine driven over a blocking [`TcpStream`].
//!
//! Test support only: one thread per connection, no backpressure beyond the socket's, and no close
//! timer (the socket's read timeout bounds every wait, so a stuck peer fails the test with an error
//! instead of hanging it). It follows the engine's contract literally:
//! - handshake: bytes read go to a [`HeadReader`]; its remainder goes to the engine before any later read;
//! - [`BlockingWs::next_event`]: `poll_event` first, and only when it is empty read → `handle_input`
//!   (or `handle_eof`); after every event, queued output (pongs, Close replies) is written at once;
//! - every `send_*` queues a frame and writes everything queued: `slices` → `write_vectored` → `advance`.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use wsbridge_core::http::head::HeadReader;
use wsbridge_core::http::HttpError;
use wsbridge_core::ws::handshake::{
    accept_response, choose_protocol, validate_upgrade, ClientHandshake, HandshakeError,
};
use wsbridge_core::ws::{CloseFrame, CloseReply, Event, Role, SendError, Utf8Bytes, WebSocket};
use wsbridge_core::{CounterEntropy, WsConfig};

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 << 10;

/// Why [`BlockingWs::accept`] or [`BlockingWs::connect`] failed.
#[derive(Debug)]
pub enum Error {
    /// The socket failed (or timed out, or closed before the head was complete).
    Io(io::Error),
    /// Server: the request was refused; `e.response()` was written to the client.
    /// Client: the response head was unusable.
    Http(HttpError),
    /// Client: the server's answer is not a valid 101 for our request.
    Handshake(HandshakeError),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "io: {e}"),
            Error::Http(e) => write!(f, "http: {e}"),
            Error::Handshake(e) => write!(f, "handshake: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// One open WebSocket over a blocking socket.
pub struct BlockingWs {
    stream: TcpStream,
    ws: WebSocket,
    protocol: Option<String>,
}

impl BlockingWs {
    /// Server side: reads the upgrade request, validates it, picks the first of `supported` (our
    /// preference order) that the client offered, and writes the 101.
    pub fn accept(
        mut stream: TcpStream,
        config: &WsConfig,
        supported: &[&str],
    ) -> Result<BlockingWs, Error> {
        let mut reader = HeadReader::new(config.max_head_size, config.max_headers);
        let request = loop {
            match reader.poll_request() {
                Ok(Some(request)) => break request,
                Ok(None) => reader.feed(&read_some(&mut stream)?),
                Err(e) => return Err(refuse(&mut stream, e)),
            }
        };
        let info = validate_upgrade(&request).map_err(|e| refuse(&mut stream, e))?;
        let protocol = choose_protocol(&info.protocols, supported).map(str::to_owned);
        stream.write_all(&accept_response(&info, protocol.as_deref(), &[]))?;
        let mut ws = WebSocket::new(Role::Server, config);
        ws.handle_input(reader.take_remainder());
        Ok(BlockingWs {
            stream,
            ws,
            protocol,
        })
    }

    /// Client side: writes the upgrade request for `ws://host/path` offering `protocols`, and checks the
    /// answer with [`ClientHandshake::validate`]. Masking keys come from a [`CounterEntropy`] seeded with
    /// `seed` (predictable: tests only).
    pub fn connect(
        mut stream: TcpStream,
        config: &WsConfig,
        host: &str,
        path: &str,
        protocols: &[&str],
        seed: u64,
    ) -> Result<BlockingWs, Error> {
        let mut entropy = CounterEntropy(seed);
        let protocols: Vec<String> = protocols.iter().map(|p| p.to_string()).collect();
        let (handshake, request) = ClientHandshake::new(&mut entropy, host, path, &protocols, &[])
            .map_err(Error::Handshake)?;
        stream.write_all(&request)?;
        let mut reader = HeadReader::new(config.max_head_size, config.max_headers);
        let response = loop {
            match reader.poll_response().map_err(Error::Http)? {
                Some(response) => break response,
                None => reader.feed(&read_some(&mut stream)?),
            }
        };
        let protocol = handshake.validate(&response).map_err(Error::Handshake)?;
        let mut ws = WebSocket::new(Role::Client(Box::new(entropy)), config);
        ws.handle_input(reader.take_remainder());
        Ok(BlockingWs {
            stream,
            ws,
            protocol,
        })
    }

    /// The subprotocol agreed in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The engine, for inspecting its state.
    pub fn engine(&self) -> &WebSocket {
        &self.ws
    }

    /// How the peer's Close is answered ([`WebSocket::set_close_reply`]). With
    /// [`CloseReply::Deferred`], after the peer's Close event data may still be sent and
    /// [`Self::close`] sends the reply; `next_event` must not be called in between.
    pub fn set_close_reply(&mut self, reply: CloseReply) {
        self.ws.set_close_reply(reply);
    }

    /// Sends a piece of a binary message (one frame; `fin` ends the message) and writes it out.
    pub fn send_binary(&mut self, data: Bytes, fin: bool) -> io::Result<()> {
        let queued = self.ws.send_binary(data, fin);
        self.queued(queued)
    }

    /// Sends a whole text message (one frame) and writes it out.
    pub fn send_text(&mut self, text: Utf8Bytes) -> io::Result<()> {
        let queued = self.ws.send_text(text);
        self.queued(queued)
    }

    /// Sends a ping and writes it out.
    pub fn ping(&mut self, payload: &[u8]) -> io::Result<()> {
        let queued = self.ws.ping(payload);
        self.queued(queued)
    }

    /// Starts the close handshake and writes our Close; the peer's answer arrives by [`Self::next_event`].
    /// After the peer's Close with a deferred reply, this writes the reply.
    pub fn close(&mut self, frame: Option<&CloseFrame>) -> io::Result<()> {
        let queued = self.ws.close(frame, Instant::now());
        self.queued(queued)
    }

    /// The next event, reading as needed; `None` once the engine is closed and every event was taken.
    /// Whatever the event made the engine queue (a pong, a Close reply) is written before it is returned.
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        loop {
            if let Some(event) = self.ws.poll_event() {
                self.flush()?;
                return Ok(Some(event));
            }
            self.flush()?;
            if self.ws.is_closed() {
                return Ok(None);
            }
            if !self.ws.wants_read() {
                return Err(io::Error::other("engine neither closed nor reading"));
            }
            let data = read_some(&mut self.stream);
            match data {
                Ok(data) => self.ws.handle_input(data),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => self.ws.handle_eof(),
                Err(e) => return Err(e),
            }
        }
    }

    /// Ends the connection once the engine is closed: writes what is left, shuts our sending side down,
    /// then reads until the peer closes its side. Returns how many bytes the peer sent meanwhile (a
    /// well-behaved peer sends none after the close handshake).
    pub fn finish(&mut self) -> io::Result<usize> {
        if !self.ws.is_closed() {
            return Err(io::Error::other("finish before the engine closed"));
        }
        self.flush()?;
        self.stream.shutdown(Shutdown::Write)?;
        let mut extra = 0;
        loop {
            match read_some(&mut self.stream) {
                Ok(data) => extra += data.len(),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(extra),
                Err(e) => return Err(e),
            }
        }
    }

    fn queued(&mut self, queued: Result<(), SendError>) -> io::Result<()> {
        queued.map_err(io::Error::other)?;
        self.flush()
    }

    /// Writes everything the engine has queued.
    fn flush(&mut self) -> io::Result<()> {
        while self.ws.wants_write() {
            let mut slots = [IoSlice::new(&[]); 64];
            let filled = self.ws.slices(&mut slots);
            let n = self.stream.write_vectored(&slots[..filled])?;
            if n == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            self.ws.advance(n);
        }
        Ok(())
    }
}

/// One read of up to [`READ_CHUNK`] bytes into a fresh buffer (so the engine also sees input that is
/// not contiguous with what it holds); end of stream is `UnexpectedEof`.
fn read_some(stream: &mut TcpStream) -> io::Result<BytesMut> {
    let mut buf = BytesMut::zeroed(READ_CHUNK);
    let n = loop {
        match stream.read(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other?,
        }
    };
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    buf.truncate(n);
    Ok(buf)
}

/// Writes the error response for a refused request (best effort) and returns the error.
fn refuse(stream: &mut TcpStream, e: HttpError) -> Error {
    let _ = stream.write_all(&e.response());
    Error::Http(e)
}
