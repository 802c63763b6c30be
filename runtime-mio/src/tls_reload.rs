//! Certificate reload for the listeners' TLS towards clients (issue #7): SIGHUP, or every
//! `--tls-reload-interval` seconds, reads every `--tls-cert`/`--tls-key` pair of every listener from
//! disk again.
//!
//! Contract:
//! - a listener's TLS sessions come from a [`CertStore`]: the factory it hands to the core clones the
//!   store's current `Arc<ServerConfig>` at the start of each handshake (a read lock held only for that
//!   clone), so **new** handshakes use whatever was loaded last, while live sessions keep the rustls
//!   session (and certificate) they started with;
//! - a reload rebuilds the listener's whole `server_config(pairs)` (all its pairs, so SNI choice keeps
//!   working) and swaps it in only if every file loads and every key matches its certificate; otherwise
//!   the old config stays and the error is returned (and logged as `event=tls_reload_failed`);
//! - it lives in the runtime, not the core, because it reads files.
//!
//! Client-side TLS (`--backend-ca`, `--target-ca` roots) is loaded once at startup and not reloaded.

use std::fs;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::ServerConfig;
use wsbridge_core::tls::{server_config, RustlsSession, ServerTlsFactory, TlsSession};

use crate::log::Val;
use crate::pem::{load_certs, load_private_key};

/// What is remembered of a file to tell whether it changed: modification time and length (`None` when
/// it cannot be read).
type Stamp = Option<(Option<SystemTime>, u64)>;

/// The certificate/key pairs of one listener and the TLS server config last built from them.
pub struct CertStore {
    /// Names the listener in the logs (its `--listen`).
    label: String,
    /// `(certificate chain PEM, private key PEM)`, in flag order (the first is the SNI default).
    pairs: Vec<(PathBuf, PathBuf)>,
    /// What new handshakes use.
    current: RwLock<Arc<ServerConfig>>,
    /// The files' stamps when they were last read, for [`CertStore::changed_on_disk`].
    stamps: Mutex<Vec<Stamp>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("label", &self.label)
            .field("pairs", &self.pairs)
            .finish_non_exhaustive()
    }
}

/// Every store made by [`CertStore::load`] that is still in use, for [`live_stores`].
static STORES: Mutex<Vec<Weak<CertStore>>> = Mutex::new(Vec::new());

impl CertStore {
    /// Loads the pairs (`certs[i]` with `keys[i]`) for the listener `label` and registers the store so
    /// that [`live_stores`] (SIGHUP, the reload interval) finds it. Errors name the flag and file, as at
    /// startup: `--tls-cert FILE: …`, `--tls-key FILE: …`, `--tls-cert/--tls-key: …`.
    pub fn load(
        label: &str,
        certs: &[PathBuf],
        keys: &[PathBuf],
    ) -> Result<Arc<CertStore>, String> {
        let pairs: Vec<(PathBuf, PathBuf)> =
            certs.iter().cloned().zip(keys.iter().cloned()).collect();
        let stamps = stamps(&pairs);
        let config = build(&pairs)?;
        let store = Arc::new(CertStore {
            label: label.to_owned(),
            pairs,
            current: RwLock::new(config),
            stamps: Mutex::new(stamps),
        });
        let mut all = STORES.lock().unwrap_or_else(|e| e.into_inner());
        all.retain(|w| w.strong_count() > 0);
        all.push(Arc::downgrade(&store));
        Ok(store)
    }

    /// The listener this store serves (its `--listen`), as logged.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The config new handshakes use now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The factory of TLS server sessions for the core: each call starts a session on
    /// [`CertStore::current`]. Never fails: every config it can see was checked when it was built.
    pub fn factory(self: &Arc<Self>) -> ServerTlsFactory {
        let store = self.clone();
        Arc::new(move || {
            let session = RustlsSession::server(store.current())
                .expect("every stored config was checked when it was loaded");
            Box::new(session) as Box<dyn TlsSession>
        })
    }

    /// Reads every pair from disk again and, if all of them load, makes the new config the one new
    /// handshakes use. Returns the certificate files now in use; on error the old config stays and
    /// the error (naming the flag and file) is returned.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let stamps = stamps(&self.pairs);
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) = stamps;
        let config = build(&self.pairs)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(self.names())
    }

    /// Whether any of the files' modification time or length changed (or it appeared or vanished) since
    /// they were last read by [`CertStore::load`] or [`CertStore::reload`].
    pub fn changed_on_disk(&self) -> bool {
        *self.stamps.lock().unwrap_or_else(|e| e.into_inner()) != stamps(&self.pairs)
    }

    /// The certificate files, comma-separated in the log.
    fn names(&self) -> Vec<String> {
        self.pairs
            .iter()
            .map(|(cert, _)| cert.display().to_string())
            .collect()
    }

    /// [`CertStore::reload`], logged: `event=tls_reloaded listener=… names=…` (at `success` level:
    /// info for SIGHUP, debug for an unchanged periodic check) or `event=tls_reload_failed listener=…
    /// error=…` (error).
    fn reload_logged(&self, trigger: &str) {
        match self.reload() {
            Ok(names) => crate::log!(
                Info,
                "event=tls_reloaded trigger={trigger} listener={} names={}",
                Val(&self.label),
                Val(&names.join(","))
            ),
            Err(e) => crate::log!(
                Error,
                "event=tls_reload_failed trigger={trigger} listener={} error={}",
                Val(&self.label),
                Val(&e)
            ),
        }
    }
}

/// Every [`CertStore`] still in use by a listener of this process.
pub fn live_stores() -> Vec<Arc<CertStore>> {
    STORES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(Weak::upgrade)
        .collect()
}

/// Reloads every store (SIGHUP), logging each listener's success or failure.
pub fn reload_all(stores: &[Arc<CertStore>], trigger: &str) {
    for store in stores {
        store.reload_logged(trigger);
    }
}

/// Starts a thread that, every `every`, reloads the stores whose files changed on disk (modification
/// time or length) and logs the result; unchanged stores are left alone and nothing is logged. The
/// thread runs until the process exits.
pub fn spawn_interval(stores: Vec<Arc<CertStore>>, every: Duration) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("tls-reload".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            for store in &stores {
                if store.changed_on_disk() {
                    store.reload_logged("interval");
                }
            }
        })
        .map(|_| ())
}

fn stamps(pairs: &[(PathBuf, PathBuf)]) -> Vec<Stamp> {
    pairs
        .iter()
        .flat_map(|(c, k)| [c, k])
        .map(|p| fs::metadata(p).ok().map(|m| (m.modified().ok(), m.len())))
        .collect()
}

/// Loads the pairs and builds (and checks) their server config.
fn build(pairs: &[(PathBuf, PathBuf)]) -> Result<Arc<ServerConfig>, String> {
    let mut loaded = Vec::with_capacity(pairs.len());
    for (cert, key) in pairs {
        let chain = load_certs(cert).map_err(|e| format!("--tls-cert {e}"))?;
        let key = load_private_key(key).map_err(|e| format!("--tls-key {e}"))?;
        loaded.push((chain, key));
    }
    let config = server_config(loaded).map_err(|e| format!("--tls-cert/--tls-key: {e}"))?;
    // Made once here so that the factory cannot fail later.
    RustlsSession::server(config.clone()).map_err(|e| format!("TLS server settings: {e}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cert(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        fs::write(&cert, ck.cert.pem()).unwrap();
        fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
        (cert, key, ck.cert.der().to_vec())
    }

    /// The leaf certificate new handshakes for `localhost` get.
    fn served(store: &CertStore) -> Vec<u8> {
        served_to(store, "localhost")
    }

    /// The leaf certificate new handshakes get with SNI `name`.
    fn served_to(store: &CertStore, name: &str) -> Vec<u8> {
        use rustls::pki_types::ServerName;
        let cfg = store.current();
        // An in-memory handshake with a client that accepts any certificate.
        let verifier = Arc::new(AcceptAny);
        let client_cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
        let mut client = rustls::ClientConnection::new(
            Arc::new(client_cfg),
            ServerName::try_from(name.to_owned()).unwrap(),
        )
        .unwrap();
        let mut server = rustls::ServerConnection::new(cfg).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            client.write_tls(&mut buf).unwrap();
            server.read_tls(&mut &buf[..]).unwrap();
            server.process_new_packets().unwrap();
            let mut buf = Vec::new();
            server.write_tls(&mut buf).unwrap();
            client.read_tls(&mut &buf[..]).unwrap();
            client.process_new_packets().unwrap();
            if let Some(certs) = client.peer_certificates() {
                return certs[0].to_vec();
            }
        }
        panic!("no handshake")
    }

    #[derive(Debug)]
    struct AcceptAny;

    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    #[test]
    fn reload_swaps_the_config_and_a_broken_file_keeps_the_old_one() {
        let dir = std::env::temp_dir().join(format!("wsbridge-certstore-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let (cert, key, der_a) = write_cert(&dir, "a.example.test");
        let store = CertStore::load(
            "127.0.0.1:0",
            std::slice::from_ref(&cert),
            std::slice::from_ref(&key),
        )
        .unwrap();
        assert_eq!(served(&store), der_a);
        assert!(!store.changed_on_disk());
        assert!(live_stores().iter().any(|s| Arc::ptr_eq(s, &store)));

        // A new pair on disk: reload returns the certificate files and new handshakes get it.
        let (_, _, der_b) = write_cert(&dir, "b.example.test");
        let names = store.reload().unwrap();
        assert_eq!(names, vec![cert.display().to_string()]);
        assert_eq!(served(&store), der_b);
        // A session made before a reload keeps its own config (the factory clones the Arc).
        let factory = store.factory();
        let _session = factory();

        // A broken key: the error names the flag and file, and the old config stays.
        fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\nnot base64!\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(store.changed_on_disk());
        let err = store.reload().unwrap_err();
        assert!(err.starts_with("--tls-key "), "{err}");
        assert!(
            !store.changed_on_disk(),
            "the failed attempt's stamps are remembered"
        );
        assert_eq!(served(&store), der_b);
        // A missing file too.
        fs::remove_file(&cert).unwrap();
        let err = store.reload().unwrap_err();
        assert!(err.starts_with("--tls-cert "), "{err}");
        assert_eq!(served(&store), der_b);
        let _ = factory();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn reload_rebuilds_every_pair_so_sni_still_picks_by_name() {
        let root =
            std::env::temp_dir().join(format!("wsbridge-certstore-sni-{}", std::process::id()));
        let (da, db) = (root.join("a"), root.join("b"));
        fs::create_dir_all(&da).unwrap();
        fs::create_dir_all(&db).unwrap();
        let (ca, ka, a1) = write_cert(&da, "a.example.test");
        let (cb, kb, b1) = write_cert(&db, "b.example.test");
        let store = CertStore::load("sni", &[ca, cb], &[ka, kb]).unwrap();
        assert_eq!(served_to(&store, "a.example.test"), a1);
        assert_eq!(served_to(&store, "b.example.test"), b1);
        let (_, _, a2) = write_cert(&da, "a.example.test");
        let (_, _, b2) = write_cert(&db, "b.example.test");
        assert_eq!(store.reload().unwrap().len(), 2);
        assert_eq!(served_to(&store, "a.example.test"), a2);
        assert_eq!(served_to(&store, "b.example.test"), b2);
        assert_eq!(
            served_to(&store, "other.test"),
            a2,
            "the first pair is the default"
        );
        fs::remove_dir_all(&root).unwrap();
    }
}
