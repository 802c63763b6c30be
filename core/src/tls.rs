//! TLS for a session leg: the [`TlsSession`] trait, its rustls implementation [`RustlsSession`], and the
//! config builders [`server_config`] and [`client_config`].
//!
//! # Contract
//! A TLS session sits between a leg's socket and the session logic. It never touches the socket: the
//! owner moves bytes through it, and after **every** call that can produce output (`handle_ciphertext`,
//! `read_plaintext`, `write_plaintext`, `send_close_notify`) drains [`TlsSession::take_ciphertext`] into
//! the leg's outgoing queue:
//!
//! - ciphertext read from the socket goes to [`TlsSession::handle_ciphertext`], only while
//!   [`TlsSession::wants_read`];
//! - decrypted bytes come out of [`TlsSession::read_plaintext`] (call it until it returns 0);
//! - bytes to send go into [`TlsSession::write_plaintext`], which takes what fits and says how much;
//! - records to send come out of [`TlsSession::take_ciphertext`].
//!
//! # Bounds
//! - **Incoming.** rustls decrypts into a received-plaintext buffer of 16 KiB (plus at most one record
//!   past it) and refuses ciphertext once that is full. What it refuses is kept here and
//!   [`TlsSession::wants_read`] turns false until `read_plaintext` has drained enough to take it in, so a
//!   driver that only reads while `wants_read` holds at most one of its reads beyond rustls' own buffers.
//! - **Outgoing.** [`TlsSession::write_plaintext`] accepts plaintext only while the ciphertext not yet
//!   taken (or, during the handshake, the plaintext waiting for it) is under the buffer limit
//!   ([`DEFAULT_BUFFER_LIMIT`], see [`RustlsSession::set_buffer_limit`]). The owner bounds the rest by
//!   taking ciphertext only as fast as its socket queue has room.
//!
//! # Errors
//! A fatal error is returned as a [`TlsError`] and is sticky: later calls return it again. The alert
//! rustls queued for the peer is still returned by `take_ciphertext`, so the owner sends it before it
//! closes. Plaintext decrypted before the error can still be read.

use std::fmt;
use std::io::{BufRead, ErrorKind};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rustls::client::verify_server_name;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ProtocolVersion, ServerConnection};

/// Default limit, in bytes, on ciphertext waiting to be taken (and on plaintext written before the
/// handshake finished). The same as rustls' own default.
pub const DEFAULT_BUFFER_LIMIT: usize = 64 * 1024;

/// Why a TLS session failed, or why a config could not be built. `Display` gives the reason for logs
/// and for `tls_failed` (e.g. `peer sent alert: bad certificate`, `invalid certificate: UnknownIssuer`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsError {
    /// The peer sent a fatal alert; the description in words (`unknown CA`, `handshake failure`).
    AlertReceived(String),
    /// The peer's certificate was rejected (`UnknownIssuer`, `certificate expired: …`).
    InvalidCertificate(String),
    /// Any other breach of the TLS protocol by the peer, or a failure rustls reports.
    Protocol(String),
    /// A certificate, key or server name handed to a builder or constructor is unusable.
    Config(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::AlertReceived(what) => write!(f, "peer sent alert: {what}"),
            TlsError::InvalidCertificate(why) => write!(f, "invalid certificate: {why}"),
            TlsError::Protocol(why) | TlsError::Config(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for TlsError {}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        match e {
            rustls::Error::AlertReceived(alert) => {
                TlsError::AlertReceived(words(&format!("{alert:?}")))
            }
            rustls::Error::InvalidCertificate(why) => TlsError::InvalidCertificate(why.to_string()),
            other => TlsError::Protocol(other.to_string()),
        }
    }
}

/// `BadCertificate` → `bad certificate`, `UnknownCA` → `unknown CA`.
fn words(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.is_empty() {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if word.chars().skip(1).any(|c| c.is_ascii_lowercase()) {
            out.push_str(&word.to_ascii_lowercase());
        } else {
            out.push_str(word); // an acronym: keep it
        }
        word.clear();
    };
    let chars: Vec<char> = camel.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        let starts_word = c.is_ascii_uppercase()
            && i > 0
            && (chars[i - 1].is_ascii_lowercase()
                || chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase()));
        if starts_word {
            flush(&mut word, &mut out);
        }
        word.push(c);
    }
    flush(&mut word, &mut out);
    out
}

/// What was negotiated, once the handshake is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The IANA name of the cipher suite, e.g. `TLS13_AES_256_GCM_SHA384`.
    pub cipher: String,
    /// The server name the client indicated (on a client: the one it sent). `None` when it sent none.
    pub sni: Option<String>,
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<Vec<u8>>,
}

/// One end of a TLS connection, sans-IO. See the module docs for the calling order and the bounds.
pub trait TlsSession: Send {
    /// Ciphertext read from the socket. Processes every complete record: decrypts application data into
    /// the plaintext buffer and queues handshake replies for [`TlsSession::take_ciphertext`]. What cannot
    /// be taken in yet (plaintext buffer full) is kept and `wants_read` turns false. Bytes after the
    /// peer's close_notify are ignored.
    fn handle_ciphertext(&mut self, data: &[u8]) -> Result<(), TlsError>;

    /// Appends up to `max` decrypted bytes to `out`; returns how many (0: none now). Draining the
    /// plaintext buffer lets kept ciphertext in, which may itself fail: once the session has failed,
    /// this returns what was decrypted before the failure, then the error.
    fn read_plaintext(&mut self, out: &mut BytesMut, max: usize) -> Result<usize, TlsError>;

    /// Queues plaintext to send; returns how many bytes of `data` were taken — fewer (maybe 0) when
    /// the outgoing buffer is at its limit, and 0 after a close_notify was sent or the session failed.
    /// Before the handshake finishes the bytes wait and go out encrypted once it does.
    fn write_plaintext(&mut self, data: &[u8]) -> usize;

    /// The ciphertext to send next (handshake messages, records, alerts), or `None` if there is none.
    fn take_ciphertext(&mut self) -> Option<Bytes>;

    /// The handshake has not finished yet.
    fn is_handshaking(&self) -> bool;

    /// Whether to read more ciphertext from the socket now: false while ciphertext is kept waiting for
    /// plaintext to be drained, after the peer's close_notify, and after a failure.
    fn wants_read(&self) -> bool;

    /// Queues a close_notify alert; nothing more can be written afterwards.
    fn send_close_notify(&mut self);

    /// The peer sent close_notify and every plaintext byte before it has been read: the TLS-level EOF.
    fn peer_closed(&self) -> bool;

    /// What was negotiated, once the handshake is done.
    fn info(&self) -> Option<TlsInfo>;
}

/// Makes a TLS server session for one accepted client (shared by the sessions of a listener).
pub type ServerTlsFactory = Arc<dyn Fn() -> Box<dyn TlsSession> + Send + Sync>;
/// Makes a TLS client session for a dialled leg, given the server name (a DNS name or an address).
pub type ClientTlsFactory =
    Arc<dyn Fn(&str) -> Result<Box<dyn TlsSession>, TlsError> + Send + Sync>;

/// The [`TlsSession`] of a rustls client or server connection.
pub struct RustlsSession {
    conn: Connection,
    /// The name the client sent (client side only).
    client_sni: Option<String>,
    /// Ciphertext rustls could not take in yet because its plaintext buffer was full.
    pending: BytesMut,
    /// Plaintext bytes rustls holds, as of the last processing, minus what was read since.
    plaintext: usize,
    /// close_notify received.
    close_notify_received: bool,
    /// close_notify (or a fatal alert) queued by us.
    write_closed: bool,
    error: Option<TlsError>,
    /// Where the next ciphertext byte falls in the record stream (see [`RustlsSession::feed`]).
    records: RecordCursor,
}

/// Tracks TLS record boundaries in the ciphertext stream, so that rustls is fed one record at a time.
#[derive(Debug, Default, Clone, Copy)]
struct RecordCursor {
    /// The bytes of the current record's 5-byte header seen so far (`header_len` of them).
    header: [u8; 5],
    header_len: usize,
    /// Body bytes of the current record still to come (0 with `header_len` 0: at a boundary).
    body_left: usize,
}

impl RecordCursor {
    const HEADER: usize = 5;

    /// How many bytes of `rest` (the stream from here on) finish the current record, or all of
    /// `rest` if it ends first.
    fn record_len(&self, rest: &[u8]) -> usize {
        if self.body_left > 0 {
            return self.body_left.min(rest.len());
        }
        let need = Self::HEADER - self.header_len;
        if rest.len() < need {
            return rest.len();
        }
        let mut header = self.header;
        header[self.header_len..].copy_from_slice(&rest[..need]);
        let body = usize::from(u16::from_be_bytes([header[3], header[4]]));
        (need + body).min(rest.len())
    }

    /// `taken` bytes of `rest` went to rustls.
    fn advance(&mut self, rest: &[u8], taken: usize) {
        let mut bytes = &rest[..taken];
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (Self::HEADER - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == Self::HEADER {
                self.header_len = 0;
                self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            }
        }
    }
}

impl fmt::Debug for RustlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RustlsSession")
            .field("server", &matches!(self.conn, Connection::Server(_)))
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending.len())
            .field("plaintext", &self.plaintext)
            .field("error", &self.error)
            .finish()
    }
}

impl RustlsSession {
    /// A server session with `config` (see [`server_config`]).
    pub fn server(config: Arc<ServerConfig>) -> Result<Self, TlsError> {
        let conn = ServerConnection::new(config)?;
        Ok(Self::new(Connection::Server(conn), None))
    }

    /// A client session to `server_name` (a DNS name, sent as SNI and checked against the certificate,
    /// or an IP address literal, checked against the certificate's IP addresses and not sent).
    pub fn client(config: Arc<ClientConfig>, server_name: &str) -> Result<Self, TlsError> {
        let name = ServerName::try_from(server_name)
            .map_err(|_| TlsError::Config(format!("invalid TLS server name {server_name:?}")))?
            .to_owned();
        let sni = match &name {
            ServerName::DnsName(dns) => Some(dns.as_ref().to_owned()),
            _ => None,
        };
        let conn = ClientConnection::new(config, name)?;
        Ok(Self::new(Connection::Client(conn), sni))
    }

    fn new(mut conn: Connection, client_sni: Option<String>) -> Self {
        conn.set_buffer_limit(Some(DEFAULT_BUFFER_LIMIT));
        Self {
            conn,
            client_sni,
            pending: BytesMut::new(),
            plaintext: 0,
            close_notify_received: false,
            write_closed: false,
            error: None,
            records: RecordCursor::default(),
        }
    }

    /// Sets the limit on ciphertext waiting to be taken and on plaintext written before the handshake
    /// finished (default [`DEFAULT_BUFFER_LIMIT`]). A record's overhead may go past it by a few bytes.
    pub fn set_buffer_limit(&mut self, limit: usize) {
        self.conn.set_buffer_limit(Some(limit));
    }

    /// Feeds `data` to rustls record by record until it is all in or rustls' plaintext buffer is full;
    /// returns how much it took.
    /// Gives rustls the ciphertext in `data` **one record at a time**, processing each before the
    /// next, and returns how much it took. One record at a time, because whatever follows a
    /// close_notify or a fatal record in the same read must never reach rustls: it would answer it
    /// with a second fatal alert (rustls/rustls#959; a debug assertion, and a stray alert otherwise).
    fn feed(&mut self, data: &[u8]) -> Result<usize, TlsError> {
        let mut rest = data;
        while !rest.is_empty() && !self.close_notify_received {
            let len = self.records.record_len(rest);
            let mut record = &rest[..len];
            let read = self.conn.read_tls(&mut record);
            let taken = len - record.len();
            self.records.advance(rest, taken);
            rest = &rest[taken..];
            match read {
                // Only at close_notify, which is checked above; nothing more is read.
                Ok(0) => break,
                Ok(_) => {}
                // "received plaintext buffer full": backpressure, try again once drained.
                Err(e) if e.kind() == ErrorKind::Other => break,
                Err(e) => return Err(self.fail(TlsError::Protocol(format!("TLS input: {e}")))),
            }
            match self.conn.process_new_packets() {
                Ok(state) => {
                    self.plaintext = state.plaintext_bytes_to_read();
                    self.close_notify_received = state.peer_has_closed();
                }
                Err(e) => return Err(self.fail(e.into())),
            }
        }
        if self.close_notify_received {
            // "Any data received after a closure alert has been received MUST be ignored."
            return Ok(data.len());
        }
        Ok(data.len() - rest.len())
    }

    fn fail(&mut self, error: TlsError) -> TlsError {
        self.pending.clear();
        self.write_closed = true;
        self.error = Some(error.clone());
        error
    }
}

impl TlsSession for RustlsSession {
    fn handle_ciphertext(&mut self, data: &[u8]) -> Result<(), TlsError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if !self.pending.is_empty() {
            // The owner ignored wants_read; keep the order.
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        let taken = self.feed(data)?;
        self.pending.extend_from_slice(&data[taken..]);
        Ok(())
    }

    fn read_plaintext(&mut self, out: &mut BytesMut, max: usize) -> Result<usize, TlsError> {
        let mut total = 0;
        loop {
            while total < max {
                let mut reader = self.conn.reader();
                let chunk = match reader.fill_buf() {
                    Ok(chunk) if !chunk.is_empty() => chunk,
                    _ => break,
                };
                let n = chunk.len().min(max - total);
                out.extend_from_slice(&chunk[..n]);
                reader.consume(n);
                total += n;
                self.plaintext = self.plaintext.saturating_sub(n);
            }
            if total == max || self.pending.is_empty() || self.error.is_some() {
                break;
            }
            // Room again: let kept ciphertext in.
            let pending = std::mem::take(&mut self.pending);
            match self.feed(&pending) {
                Ok(taken) => {
                    self.pending = pending;
                    let _ = self.pending.split_to(taken);
                    if taken == 0 {
                        break;
                    }
                }
                Err(e) if total == 0 => return Err(e),
                Err(_) => break, // report it on the next call, after these bytes
            }
        }
        match &self.error {
            Some(e) if total == 0 => Err(e.clone()),
            _ => Ok(total),
        }
    }

    fn write_plaintext(&mut self, data: &[u8]) -> usize {
        if self.write_closed || data.is_empty() {
            return 0;
        }
        // Writing into rustls' buffers only fails when the limit is reached; it then takes a prefix.
        std::io::Write::write(&mut self.conn.writer(), data).unwrap_or(0)
    }

    fn take_ciphertext(&mut self) -> Option<Bytes> {
        let mut out = Vec::new();
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut out) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        (!out.is_empty()).then(|| Bytes::from(out))
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn wants_read(&self) -> bool {
        self.error.is_none() && !self.close_notify_received && self.pending.is_empty()
    }

    fn send_close_notify(&mut self) {
        if !self.write_closed {
            self.write_closed = true;
            self.conn.send_close_notify();
        }
    }

    fn peer_closed(&self) -> bool {
        self.close_notify_received && self.plaintext == 0
    }

    fn info(&self) -> Option<TlsInfo> {
        if self.conn.is_handshaking() {
            return None;
        }
        let version = match self.conn.protocol_version()? {
            ProtocolVersion::TLSv1_3 => "TLSv1.3",
            ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "TLS",
        };
        let suite = self.conn.negotiated_cipher_suite()?.suite();
        let cipher = suite
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{suite:?}"));
        let sni = match &self.conn {
            Connection::Server(server) => server.server_name().map(str::to_owned),
            Connection::Client(_) => self.client_sni.clone(),
        };
        Some(TlsInfo {
            version,
            cipher,
            sni,
            alpn: self.conn.alpn_protocol().map(<[u8]>::to_vec),
        })
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// A server config (TLS 1.2 and 1.3, ring, no client certificates) for one or more certificate chains,
/// each with its private key. With one pair every client gets it; with several the client's SNI picks
/// the first whose certificate is valid for that name (wildcards included), and a client that sends no
/// SNI, or a name none matches, gets the first pair. Fails, naming the pair (from 1), when a chain is
/// empty or unparsable or its key is unusable or does not match it.
pub fn server_config(
    pairs: Vec<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Result<Arc<ServerConfig>, TlsError> {
    if pairs.is_empty() {
        return Err(TlsError::Config("no TLS certificate given".into()));
    }
    let provider = provider();
    let mut keys = Vec::with_capacity(pairs.len());
    for (i, (chain, key)) in pairs.into_iter().enumerate() {
        let bad = |e: rustls::Error| TlsError::Config(format!("TLS certificate {}: {e}", i + 1));
        if chain.is_empty() {
            return Err(TlsError::Config(format!(
                "TLS certificate {}: the chain is empty",
                i + 1
            )));
        }
        ParsedCertificate::try_from(&chain[0]).map_err(bad)?;
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(bad)?;
        keys.push(Arc::new(certified));
    }
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { keys }));
    Ok(Arc::new(config))
}

/// Picks a certificate by SNI; see [`server_config`].
#[derive(Debug)]
struct SniResolver {
    /// Never empty.
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let first = &self.keys[0];
        if self.keys.len() == 1 {
            return Some(first.clone());
        }
        let Some(name) = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n).ok())
        else {
            return Some(first.clone());
        };
        let matches = |key: &&Arc<CertifiedKey>| {
            key.end_entity_cert()
                .and_then(ParsedCertificate::try_from)
                .and_then(|cert| verify_server_name(&cert, &name))
                .is_ok()
        };
        Some(self.keys.iter().find(matches).unwrap_or(first).clone())
    }
}

/// A client config (TLS 1.2 and 1.3, ring, no client certificate) that trusts the Mozilla roots of
/// `webpki-roots` plus `extra_roots`. Fails, naming the root (from 1), when an extra root is unusable.
pub fn client_config(
    extra_roots: Vec<CertificateDer<'static>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for (i, root) in extra_roots.into_iter().enumerate() {
        roots
            .add(root)
            .map_err(|e| TlsError::Config(format!("TLS root certificate {}: {e}", i + 1)))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests;
