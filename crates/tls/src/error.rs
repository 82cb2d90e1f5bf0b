//! The crate's error type.

use std::path::PathBuf;

use crate::Fingerprint;

/// Everything that can go wrong with keys, trust files and TLS configs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading, writing or creating a file failed.
    #[error("{path}: {cause}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What the OS said.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: std::io::Error,
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

    /// A trust file, or a directory on its path, that someone other than
    /// the server's user or root could change (like sshd's StrictModes):
    /// whoever can write it can let themselves in, so it is not trusted.
    #[error("{0}: refusing to trust it")]
    Untrusted(#[from] crate::trust::UntrustedPath),

    /// A trust file larger than rsh reads.
    #[error("{path}: larger than {max} bytes; not read")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: u64,
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

    /// The server presented none of the keys pinned for it.
    #[error(
        "server key mismatch: expected {}, server presented {presented}",
        crate::known_hosts::one_of(expected)
    )]
    ServerKeyMismatch {
        /// The pinned fingerprints (known_hosts may list several).
        expected: Vec<Fingerprint>,
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
            cause: source,
        }
    }
}
