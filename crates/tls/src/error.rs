//! The crate's error type.

use std::path::PathBuf;

use crate::Fingerprint;

/// Everything that can go wrong with keys, trust files and TLS configs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or creating a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },

    /// A private key file that others than its owner may read or write,
    /// refused like ssh's "UNPROTECTED PRIVATE KEY FILE".
    #[error(
        "UNPROTECTED PRIVATE KEY FILE: permissions {mode:04o} for '{path}' are too open; \
         it must not be accessible by others (chmod 600 '{path}')"
    )]
    UnprotectedKeyFile {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A trust file others may write: anyone who can write it can let
    /// themselves in, so it is not trusted (like sshd's StrictModes).
    #[error(
        "permissions {mode:04o} for '{path}' are too open: group or others may write it, \
         so its keys are not trusted (chmod go-w '{path}')"
    )]
    WritableByOthers {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// A key file that does not hold a usable key and matching certificate.
    #[error("{path}: malformed identity file: {reason}")]
    MalformedKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Text that is not a fingerprint of the form `SHA256:<base64>`.
    #[error("bad fingerprint {0:?}: expected SHA256:<43 base64 characters>")]
    BadFingerprint(String),

    /// A certificate that cannot be parsed.
    #[error("bad certificate: {0}")]
    BadCertificate(String),

    /// The peer presented no certificate.
    #[error("the peer presented no certificate")]
    NoPeerCertificate,

    /// A `host:port` that cannot be written to known_hosts.
    #[error("bad host:port {0:?}: expected host:port, with IPv6 addresses as [addr]:port")]
    BadHostPort(String),

    /// The server presented another key than the one pinned for it.
    #[error("server key mismatch: expected {expected}, server presented {presented}")]
    ServerKeyMismatch {
        /// The pinned fingerprint.
        expected: Fingerprint,
        /// The fingerprint the server presented.
        presented: Fingerprint,
    },

    /// Generating a key or certificate failed.
    #[error("key generation failed: {0}")]
    KeyGen(#[from] rcgen::Error),

    /// rustls refused a config or a key.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
