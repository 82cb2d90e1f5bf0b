//! A key pair and its self-signed certificate, kept in one PEM file.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::trust::open_regular;
use crate::{Error, Fingerprint};

/// The header line of the identity file that carries the comment.
const COMMENT_HEADER: &str = "# comment: ";

/// This end's key: a private key (Ed25519) and a self-signed certificate for
/// it. Peers know it by its [`Fingerprint`].
pub struct Identity {
    key: PrivateKeyDer<'static>,
    cert: CertificateDer<'static>,
    fingerprint: Fingerprint,
    comment: String,
}

impl Identity {
    /// Loads the identity kept at `path`, or, if there is no such file,
    /// generates one and writes it there with mode 0600 (the parent
    /// directory must exist). The `comment` is only used for a new identity;
    /// a loaded one keeps the comment stored in its file.
    ///
    /// A file that group or others may access is refused with
    /// [`Error::UnprotectedKeyFile`], as ssh does.
    pub fn load_or_create(path: &Path, comment: &str) -> Result<Identity, Error> {
        match Identity::create(path, comment) {
            Err(Error::Io { cause: source, .. }) if source.kind() == ErrorKind::AlreadyExists => {
                Identity::load(path)
            }
            other => other,
        }
    }

    /// Loads the identity kept at `path`.
    ///
    /// Anything but a regular file (a FIFO...) is refused without blocking.
    /// Whether the file and its directories are safe from other users is
    /// the caller's check ([`crate::trust::check_trusted_path`]): the server
    /// makes it, a client need not.
    pub fn load(path: &Path) -> Result<Identity, Error> {
        let file = open_regular(path, None)?
            .ok_or_else(|| Error::io(path, std::io::Error::from(ErrorKind::NotFound)))?;
        // Check the permissions of the file we actually read.
        let mode = file.mode();
        if mode & 0o077 != 0 {
            return Err(Error::UnprotectedKeyFile {
                path: path.to_owned(),
                mode: mode & 0o7777,
            });
        }
        let text = file.read_bytes()?;
        Identity::from_pem(&text).map_err(|reason| Error::MalformedKey {
            path: path.to_owned(),
            reason,
        })
    }

    /// Generates a new identity and writes it to `path`, which must not
    /// exist yet, with mode 0600.
    pub fn create(path: &Path, comment: &str) -> Result<Identity, Error> {
        // Fail early if the file exists, before generating anything.
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let written = Identity::generate(comment).and_then(|identity| {
            file.write_all(identity.to_pem().as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(path, e))?;
            Ok(identity)
        });
        if written.is_err() {
            // Do not leave a half-written key behind.
            let _ = std::fs::remove_file(path);
        }
        written
    }

    /// Generates a new identity in memory only.
    pub fn generate(comment: &str) -> Result<Identity, Error> {
        let comment = clean_comment(comment);
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        let mut name = rcgen::DistinguishedName::new();
        name.push(
            rcgen::DnType::CommonName,
            if comment.is_empty() { "rsh" } else { &comment },
        );
        params.distinguished_name = name;
        let cert = params.self_signed(&key_pair)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        Identity::new(key, cert.der().clone(), comment).map_err(Error::Rustls)
    }

    /// Checks that rustls can sign with `key` and that it is the key of `cert`.
    fn new(
        key: PrivateKeyDer<'static>,
        cert: CertificateDer<'static>,
        comment: String,
    ) -> Result<Identity, rustls::Error> {
        let certified = CertifiedKey::new(
            vec![cert.clone()],
            provider().key_provider.load_private_key(key.clone_key())?,
        );
        certified.keys_match()?;
        let fingerprint =
            Fingerprint::of_cert_der(&cert).map_err(|e| rustls::Error::General(e.to_string()))?;
        Ok(Identity {
            key,
            cert,
            fingerprint,
            comment,
        })
    }

    /// Parses the identity file format written by [`Identity::create`].
    fn from_pem(text: &[u8]) -> Result<Identity, String> {
        let key = PrivateKeyDer::from_pem_slice(text)
            .map_err(|e| format!("no usable private key: {e}"))?;
        let cert = CertificateDer::from_pem_slice(text)
            .map_err(|e| format!("no usable certificate: {e}"))?;
        let comment = String::from_utf8_lossy(text)
            .lines()
            .find_map(|line| line.strip_prefix(COMMENT_HEADER))
            .map(|c| c.trim().to_owned())
            .unwrap_or_default();
        Identity::new(key, cert, comment).map_err(|e| e.to_string())
    }

    /// The identity file's contents: the comment, the private key (PKCS#8)
    /// and the certificate.
    fn to_pem(&self) -> String {
        let key = pem_block("PRIVATE KEY", self.key.secret_der());
        let cert = pem_block("CERTIFICATE", &self.cert);
        format!(
            "# rsh identity; this file holds a private key: keep it mode 0600\n\
             {COMMENT_HEADER}{}\n\
             # fingerprint: {}\n\
             {key}{cert}",
            self.comment, self.fingerprint
        )
    }

    /// The fingerprint peers know this identity by.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The comment given when the identity was created (may be empty).
    pub fn comment(&self) -> &str {
        &self.comment
    }

    /// The DER of the self-signed certificate.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The DER of the private key (PKCS#8).
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    /// The certificate and key, ready for rustls.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, Error> {
        Ok(Arc::new(CertifiedKey::from_der(
            vec![self.cert.clone()],
            self.key.clone_key(),
            &provider(),
        )?))
    }

    /// The `authorized_keys` / `known_hosts` spelling of this identity:
    /// `SHA256:<base64> comment`.
    pub fn authorized_keys_line(&self) -> String {
        if self.comment.is_empty() {
            self.fingerprint.to_string()
        } else {
            format!("{} {}", self.fingerprint, self.comment)
        }
    }
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            key: self.key.clone_key(),
            cert: self.cert.clone(),
            fingerprint: self.fingerprint,
            comment: self.comment.clone(),
        }
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the private key.
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .field("comment", &self.comment)
            .finish_non_exhaustive()
    }
}

/// The crypto provider used everywhere in this crate: ring.
/// ring, with AES-128-GCM preferred: with AES-NI it is the fastest TLS 1.3
/// suite, and 128-bit keys are ample for a session key.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|suite| match suite.suite() {
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => 0,
            rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => 1,
            _ => 2,
        });
    Arc::new(provider)
}

/// A comment that fits on one line.
fn clean_comment(comment: &str) -> String {
    comment
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A PEM block with 64-character lines.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_with_mode_0600_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_rsh");
        let created = Identity::load_or_create(&path, "alice@laptop").expect("create");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(created.comment(), "alice@laptop");

        let loaded = Identity::load_or_create(&path, "ignored").expect("load");
        assert_eq!(loaded.fingerprint(), created.fingerprint());
        assert_eq!(loaded.comment(), "alice@laptop");
        assert_eq!(loaded.cert_der(), created.cert_der());
        assert_eq!(
            Fingerprint::of_cert_der(loaded.cert_der()).expect("fingerprint"),
            loaded.fingerprint()
        );

        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("-----BEGIN PRIVATE KEY-----"));
        assert!(text.contains("-----BEGIN CERTIFICATE-----"));
        assert!(text.contains(&created.fingerprint().to_string()));
    }

    #[test]
    fn refuses_unprotected_key_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_rsh");
        Identity::load_or_create(&path, "c").expect("create");
        for mode in [0o644, 0o640, 0o604, 0o620] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            match Identity::load_or_create(&path, "c") {
                Err(Error::UnprotectedKeyFile { mode: m, .. }) => assert_eq!(m, mode),
                other => panic!("mode {mode:o}: expected UnprotectedKeyFile, got {other:?}"),
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).expect("chmod");
        Identity::load(&path).expect("0400 is fine");
    }

    #[test]
    fn missing_parent_directory_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("no-such-dir").join("id_rsh");
        assert!(matches!(
            Identity::load_or_create(&path, "c"),
            Err(Error::Io { .. })
        ));
    }

    #[test]
    fn malformed_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_rsh");
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .expect("open");
        f.write_all(b"garbage\n").expect("write");
        assert!(matches!(
            Identity::load_or_create(&path, "c"),
            Err(Error::MalformedKey { .. })
        ));
    }

    #[test]
    fn key_and_certificate_must_match() {
        let a = Identity::generate("a").expect("a");
        let b = Identity::generate("b").expect("b");
        let mismatched = format!(
            "{}{}",
            pem_block("PRIVATE KEY", a.key.secret_der()),
            pem_block("CERTIFICATE", b.cert_der())
        );
        assert!(Identity::from_pem(mismatched.as_bytes()).is_err());
    }

    #[test]
    fn comment_is_one_line() {
        let id = Identity::generate(" two\nlines ").expect("generate");
        assert_eq!(id.comment(), "two lines");
        let again = Identity::from_pem(id.to_pem().as_bytes()).expect("parse");
        assert_eq!(again.comment(), "two lines");
        assert_eq!(again.fingerprint(), id.fingerprint());
        assert_eq!(
            id.authorized_keys_line(),
            format!("{} two lines", id.fingerprint())
        );
        assert!(!format!("{id:?}").contains("PRIVATE"));
    }
}
