//! Loading TLS certificates and private keys from PEM files, for the core's DER-only
//! [`tls`](wsbridge_core::tls) config builders. Every error names the file.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A PEM file that could not be used: which file, and why.
#[derive(Debug)]
pub struct PemError {
    /// The file.
    pub path: PathBuf,
    /// Why, in words.
    pub reason: String,
}

impl fmt::Display for PemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for PemError {}

fn error(path: &Path, e: pem::Error, missing: &str) -> PemError {
    let reason = match e {
        pem::Error::Io(e) => format!("cannot read: {e}"),
        pem::Error::NoItemsFound => missing.to_owned(),
        other => format!("malformed PEM: {other}"),
    };
    PemError {
        path: path.to_owned(),
        reason,
    }
}

/// Every `CERTIFICATE` section of the file, in order (a chain: leaf first; or a set of roots). Other
/// sections are skipped; a file with none is an error.
pub fn load_certs(path: impl AsRef<Path>) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let path = path.as_ref();
    const MISSING: &str = "no CERTIFICATE section found";
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(path, e, MISSING))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(path, e, MISSING))?;
    if certs.is_empty() {
        return Err(error(path, pem::Error::NoItemsFound, MISSING));
    }
    Ok(certs)
}

/// The first private key of the file: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY` or `EC PRIVATE KEY`.
pub fn load_private_key(path: impl AsRef<Path>) -> Result<PrivateKeyDer<'static>, PemError> {
    let path = path.as_ref();
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        error(
            path,
            e,
            "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY section found",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file in the temp dir, removed on drop.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &str) -> Self {
            let path =
                std::env::temp_dir().join(format!("wsbridge-pem-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn pem_loads_a_pair_the_core_accepts() {
        let ck = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let cert = TempFile::new("cert.pem", &ck.cert.pem());
        let key = TempFile::new("key.pem", &ck.signing_key.serialize_pem());
        let chain = load_certs(&cert.0).unwrap();
        assert_eq!(chain, vec![ck.cert.der().clone()]);
        let key = load_private_key(&key.0).unwrap();
        wsbridge_core::tls::server_config(vec![(chain, key)]).unwrap();
    }

    #[test]
    fn pem_errors_name_the_file() {
        let missing = std::env::temp_dir().join("wsbridge-pem-does-not-exist.pem");
        let err = load_certs(&missing).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("{}: cannot read", missing.display())),
            "{err}"
        );

        let ck = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let key_only = TempFile::new("key-only.pem", &ck.signing_key.serialize_pem());
        let err = load_certs(&key_only.0).unwrap_err();
        assert_eq!(err.path, key_only.0);
        assert_eq!(err.reason, "no CERTIFICATE section found");

        let cert_only = TempFile::new("cert-only.pem", &ck.cert.pem());
        let err = load_private_key(&cert_only.0).unwrap_err();
        assert!(
            err.to_string().contains("cert-only.pem: no PRIVATE KEY"),
            "{err}"
        );

        let broken = TempFile::new("broken.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
        let err = load_certs(&broken.0).unwrap_err();
        assert!(err.reason.starts_with("malformed PEM"), "{err}");
    }
}
