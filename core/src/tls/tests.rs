//! In-memory tests of the rustls session: two ends, ciphertext shuttled by hand in arbitrary chunks,
//! certificates made by rcgen at test time.

use std::sync::Arc;

use bytes::BytesMut;
use proptest::prelude::*;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::*;

/// A self-signed certificate for `names` (DNS names or IP literals) and its key.
fn self_signed(names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).expect("rcgen");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()));
    (ck.cert.der().clone(), key)
}

/// One end of a pair: the session, plaintext still to write, plaintext received.
struct End {
    tls: RustlsSession,
    to_write: Vec<u8>,
    written: usize,
    got: Vec<u8>,
    /// Ciphertext taken from this end and not yet delivered to the other.
    wire: Vec<u8>,
    error: Option<TlsError>,
}

impl End {
    fn new(tls: RustlsSession) -> Self {
        Self {
            tls,
            to_write: Vec::new(),
            written: 0,
            got: Vec::new(),
            wire: Vec::new(),
            error: None,
        }
    }

    /// Writes what fits, reads what is there, takes the ciphertext. Returns whether anything moved.
    fn step(&mut self, read_max: usize) -> bool {
        let mut moved = false;
        if self.written < self.to_write.len() {
            let n = self.tls.write_plaintext(&self.to_write[self.written..]);
            self.written += n;
            moved |= n > 0;
        }
        let mut buf = BytesMut::new();
        loop {
            match self.tls.read_plaintext(&mut buf, read_max) {
                Ok(0) => break,
                Ok(_) => moved = true,
                Err(e) => {
                    self.error.get_or_insert(e);
                    break;
                }
            }
        }
        self.got.extend_from_slice(&buf);
        while let Some(c) = self.tls.take_ciphertext() {
            self.wire.extend_from_slice(&c);
            moved = true;
        }
        moved
    }
}

/// Delivers up to `chunk` bytes of `from`'s wire to `to`, if `to` wants to read.
fn deliver(from: &mut End, to: &mut End, chunk: usize) -> bool {
    if from.wire.is_empty() || !to.tls.wants_read() {
        return false;
    }
    let n = chunk.clamp(1, from.wire.len());
    let data: Vec<u8> = from.wire.drain(..n).collect();
    if let Err(e) = to.tls.handle_ciphertext(&data) {
        to.error.get_or_insert(e);
    }
    true
}

/// Runs the pair until nothing moves. Chunk sizes cycle through `chunks`.
fn run(a: &mut End, b: &mut End, chunks: &[usize], read_max: usize) {
    let mut i = 0;
    for _ in 0..1_000_000 {
        let mut moved = a.step(read_max) | b.step(read_max);
        let c = chunks[i % chunks.len()];
        i += 1;
        moved |= deliver(a, b, c);
        moved |= deliver(b, a, chunks[i % chunks.len()]);
        if !moved {
            return;
        }
    }
    panic!("the pair never settled");
}

struct Certs {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

fn certs_for(names: &[&str]) -> Certs {
    let (cert, key) = self_signed(names);
    Certs {
        server: server_config(vec![(vec![cert.clone()], key)]).unwrap(),
        client: client_config(vec![cert]).unwrap(),
    }
}

fn pair(certs: &Certs, name: &str) -> (End, End) {
    let client = RustlsSession::client(certs.client.clone(), name).unwrap();
    let server = RustlsSession::server(certs.server.clone()).unwrap();
    (End::new(client), End::new(server))
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn tls_handshake_and_info() {
    let certs = certs_for(&["mail.example.test"]);
    let (mut c, mut s) = pair(&certs, "mail.example.test");
    assert!(c.tls.is_handshaking() && s.tls.is_handshaking());
    assert_eq!(c.tls.info(), None);
    c.to_write = b"a1 LOGIN\r\n".to_vec();
    s.to_write = b"* OK ready\r\n".to_vec();
    run(&mut c, &mut s, &[4096], 4096);
    assert_eq!(c.error, None);
    assert_eq!(s.error, None);
    assert!(!c.tls.is_handshaking() && !s.tls.is_handshaking());
    assert_eq!(s.got, b"a1 LOGIN\r\n");
    assert_eq!(c.got, b"* OK ready\r\n");
    let info = s.tls.info().unwrap();
    assert_eq!(info.version, "TLSv1.3");
    assert!(info.cipher.starts_with("TLS13_"), "{}", info.cipher);
    assert_eq!(info.sni.as_deref(), Some("mail.example.test"));
    assert_eq!(info.alpn, None);
    let cinfo = c.tls.info().unwrap();
    assert_eq!(cinfo.version, "TLSv1.3");
    assert_eq!(cinfo.cipher, info.cipher);
    assert_eq!(cinfo.sni.as_deref(), Some("mail.example.test"));
}

#[test]
fn tls_sni_chooses_the_certificate() {
    let (alpha, alpha_key) = self_signed(&["alpha.test", "127.0.0.1"]);
    let (beta, beta_key) = self_signed(&["beta.test"]);
    let (wild, wild_key) = self_signed(&["*.wild.test"]);
    let server = server_config(vec![
        (vec![alpha.clone()], alpha_key),
        (vec![beta.clone()], beta_key),
        (vec![wild.clone()], wild_key),
    ])
    .unwrap();
    let client = client_config(vec![alpha, beta, wild]).unwrap();
    let certs = Certs { server, client };

    // Each name gets a certificate valid for it (the client verifies the name).
    for (name, sni) in [
        ("alpha.test", Some("alpha.test")),
        ("beta.test", Some("beta.test")),
        ("x.wild.test", Some("x.wild.test")),
        // An IP literal sends no SNI: the first certificate.
        ("127.0.0.1", None),
    ] {
        let (mut c, mut s) = pair(&certs, name);
        run(&mut c, &mut s, &[1000], 4096);
        assert_eq!(c.error, None, "{name}");
        assert_eq!(s.error, None, "{name}");
        assert_eq!(s.tls.info().unwrap().sni.as_deref(), sni, "{name}");
    }

    // An unknown name also gets the first certificate, which the client rejects for the name.
    let (mut c, mut s) = pair(&certs, "gamma.test");
    run(&mut c, &mut s, &[1000], 4096);
    let err = c.error.expect("name mismatch").to_string();
    assert!(err.contains("not valid for name \"gamma.test\""), "{err}");
    assert!(err.contains("alpha.test"), "{err}");
}

#[test]
fn tls_untrusted_certificate_fails_with_clear_errors() {
    let served = certs_for(&["mail.example.test"]);
    let certs = Certs {
        server: served.server,
        client: client_config(vec![]).unwrap(), // the public roots only
    };
    let (mut c, mut s) = pair(&certs, "mail.example.test");
    c.to_write = b"secret".to_vec();
    run(&mut c, &mut s, &[700], 4096);

    let cerr = c.error.clone().expect("client fails");
    assert_eq!(cerr, TlsError::InvalidCertificate("UnknownIssuer".into()));
    assert_eq!(cerr.to_string(), "invalid certificate: UnknownIssuer");
    // The client's alert reached the server (run delivered it after the failure).
    let serr = s.error.clone().expect("server sees the alert");
    assert_eq!(serr.to_string(), "peer sent alert: unknown CA");
    assert!(s.got.is_empty());

    // Sticky, and nothing more is accepted.
    assert_eq!(c.tls.handle_ciphertext(b"x"), Err(cerr.clone()));
    assert_eq!(c.tls.read_plaintext(&mut BytesMut::new(), 10), Err(cerr));
    assert_eq!(c.tls.write_plaintext(b"more"), 0);
    assert!(!c.tls.wants_read());
}

#[test]
fn tls_alert_is_emitted_after_error() {
    let served = certs_for(&["a.test"]);
    let mut c = RustlsSession::client(client_config(vec![]).unwrap(), "a.test").unwrap();
    let mut s = RustlsSession::server(served.server).unwrap();
    let hello = c.take_ciphertext().unwrap();
    s.handle_ciphertext(&hello).unwrap();
    let flight = s.take_ciphertext().unwrap();
    assert!(c.handle_ciphertext(&flight).is_err());
    // The fatal alert is still there to send, and the server reads it.
    let alert = c.take_ciphertext().expect("alert queued");
    assert_eq!(
        s.handle_ciphertext(&alert),
        Err(TlsError::AlertReceived("unknown CA".into()))
    );
}

#[test]
fn tls_garbage_is_a_protocol_error() {
    let certs = certs_for(&["a.test"]);
    let mut s = RustlsSession::server(certs.server).unwrap();
    let err = s.handle_ciphertext(b"EHLO client.example\r\n").unwrap_err();
    assert!(matches!(err, TlsError::Protocol(_)), "{err:?}");
    assert!(!err.to_string().is_empty());
    // An alert goes back to the peer.
    assert!(s.take_ciphertext().is_some());
}

#[test]
fn tls_close_notify_is_reported_after_the_data() {
    let certs = certs_for(&["a.test"]);
    let (mut c, mut s) = pair(&certs, "a.test");
    run(&mut c, &mut s, &[4096], 4096);
    let data = pattern(100_000, 7);
    c.to_write = data.clone();
    // Write everything, then close, without the server reading a byte yet.
    while c.written < c.to_write.len() {
        c.step(1);
        deliver(&mut c, &mut s, 1 << 20);
    }
    c.tls.send_close_notify();
    assert_eq!(c.tls.write_plaintext(b"late"), 0);
    while let Some(b) = c.tls.take_ciphertext() {
        c.wire.extend_from_slice(&b);
    }
    assert!(!s.tls.peer_closed());
    run(&mut c, &mut s, &[5000], 3000);
    assert_eq!(s.error, None);
    assert_eq!(s.got.len(), data.len());
    assert!(s.got == data);
    assert!(s.tls.peer_closed());
    assert!(!s.tls.wants_read());
    // Bytes after close_notify are ignored.
    assert_eq!(s.tls.handle_ciphertext(b"trailing junk"), Ok(()));
    assert!(!c.tls.peer_closed());
}

#[test]
fn tls_incoming_plaintext_is_bounded() {
    let certs = certs_for(&["a.test"]);
    let (mut c, mut s) = pair(&certs, "a.test");
    run(&mut c, &mut s, &[4096], 4096);
    // The client sends 1 MiB; the server does not read plaintext.
    let data = pattern(1 << 20, 3);
    let mut sent = 0;
    let mut wire = Vec::new();
    while sent < data.len() {
        let n = c.tls.write_plaintext(&data[sent..]);
        sent += n;
        while let Some(b) = c.tls.take_ciphertext() {
            wire.extend_from_slice(&b);
        }
    }
    let mut fed = 0;
    while s.tls.wants_read() && fed < wire.len() {
        let end = (fed + 4096).min(wire.len());
        s.tls.handle_ciphertext(&wire[fed..end]).unwrap();
        fed = end;
    }
    assert!(!s.tls.wants_read(), "backpressure applies");
    assert!(fed < 48 * 1024, "took {fed} bytes of ciphertext unread");
    // Draining lets it go on, in order, to the end.
    let mut got = BytesMut::new();
    loop {
        while s.tls.read_plaintext(&mut got, 10_000).unwrap() > 0 {}
        if fed == wire.len() {
            break;
        }
        assert!(s.tls.wants_read());
        let end = (fed + 4096).min(wire.len());
        s.tls.handle_ciphertext(&wire[fed..end]).unwrap();
        fed = end;
    }
    while s.tls.read_plaintext(&mut got, 10_000).unwrap() > 0 {}
    assert!(got[..] == data[..]);
}

#[test]
fn tls_outgoing_plaintext_is_bounded() {
    let certs = certs_for(&["a.test"]);
    let (mut c, mut s) = pair(&certs, "a.test");
    // Before the handshake: plaintext waits, up to the limit.
    let big = vec![0u8; 1 << 20];
    let early = c.tls.write_plaintext(&big);
    assert!(early > 0 && early <= DEFAULT_BUFFER_LIMIT, "{early}");
    assert_eq!(c.tls.write_plaintext(&big), 0);
    run(&mut c, &mut s, &[4096], 1 << 20);
    assert_eq!(s.got.len(), early);

    // After it: ciphertext not taken counts; a small limit.
    s.tls.set_buffer_limit(10_000);
    let n = s.tls.write_plaintext(&big);
    assert!(n > 0 && n <= 10_000, "{n}");
    assert_eq!(s.tls.write_plaintext(&big), 0);
    let taken = s.tls.take_ciphertext().unwrap();
    assert!(taken.len() < 10_000 + 200, "{}", taken.len());
    assert!(s.tls.write_plaintext(&big) > 0, "room again once taken");
}

#[test]
fn tls_config_errors_name_the_problem() {
    assert!(matches!(server_config(vec![]), Err(TlsError::Config(_))));
    let (cert, _) = self_signed(&["a.test"]);
    let (_, other_key) = self_signed(&["b.test"]);
    let err = server_config(vec![(vec![cert.clone()], other_key)]).unwrap_err();
    assert!(err.to_string().starts_with("TLS certificate 1:"), "{err}");
    let (_, key) = self_signed(&["a.test"]);
    let err = server_config(vec![(vec![], key)]).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    let bad = CertificateDer::from(vec![1u8, 2, 3]);
    let err = client_config(vec![bad]).unwrap_err();
    assert!(
        err.to_string().starts_with("TLS root certificate 1:"),
        "{err}"
    );
    let certs = certs_for(&["a.test"]);
    assert!(RustlsSession::client(certs.client, "not a name!").is_err());
}

#[test]
fn tls_alert_names_read_as_words() {
    assert_eq!(words("BadCertificate"), "bad certificate");
    assert_eq!(words("UnknownCA"), "unknown CA");
    assert_eq!(words("HandshakeFailure"), "handshake failure");
    assert_eq!(words("NoApplicationProtocol"), "no application protocol");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any chunking of the ciphertext, both ways, and any read size give the same plaintext.
    #[test]
    fn tls_any_chunking_same_plaintext(
        chunks in prop::collection::vec(1usize..3000, 1..12),
        read_max in 1usize..20_000,
        up_len in 0usize..70_000,
        down_len in 0usize..70_000,
    ) {
        let certs = CERTS.with(|c| Certs { server: c.server.clone(), client: c.client.clone() });
        let (mut c, mut s) = pair(&certs, "a.test");
        c.to_write = pattern(up_len, 1);
        s.to_write = pattern(down_len, 2);
        run(&mut c, &mut s, &chunks, read_max);
        prop_assert_eq!(c.error.clone(), None);
        prop_assert_eq!(s.error.clone(), None);
        prop_assert!(s.got == c.to_write, "client to server differs");
        prop_assert!(c.got == s.to_write, "server to client differs");
    }
}

thread_local! {
    static CERTS: Certs = certs_for(&["a.test"]);
}
