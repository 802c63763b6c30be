//! Test certificates, made by rcgen when a test starts: one self-signed server certificate for
//! `mail.example.test`, `localhost` and 127.0.0.1, as DER for in-process configs and as PEM files for
//! command-line peers (curl, openssl) and the `wsbridge` binary.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A server certificate and its key.
pub struct TestCert {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The key, DER (PKCS#8).
    pub key: PrivatePkcs8KeyDer<'static>,
    /// The certificate as a PEM file.
    pub cert_pem: PathBuf,
    /// The key as a PEM file.
    pub key_pem: PathBuf,
}

/// The names the certificate is valid for.
pub const NAMES: [&str; 3] = ["mail.example.test", "localhost", "127.0.0.1"];

impl TestCert {
    /// A fresh certificate, written to a new directory under the system temp dir.
    pub fn new() -> TestCert {
        static N: AtomicUsize = AtomicUsize::new(0);
        let ck = rcgen::generate_simple_self_signed(
            NAMES.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
        .expect("rcgen makes a certificate");
        let dir = std::env::temp_dir().join(format!(
            "wsbridge-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cert_pem = dir.join("cert.pem");
        let key_pem = dir.join("key.pem");
        std::fs::write(&cert_pem, ck.cert.pem()).expect("write cert");
        std::fs::write(&key_pem, ck.signing_key.serialize_pem()).expect("write key");
        TestCert {
            cert: ck.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
            cert_pem,
            key_pem,
        }
    }

    /// The certificate and key as the core's `tls::server_config` takes them.
    pub fn pair(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }

    /// A rustls client config that trusts only this certificate.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).expect("add root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Default for TestCert {
    fn default() -> Self {
        Self::new()
    }
}
