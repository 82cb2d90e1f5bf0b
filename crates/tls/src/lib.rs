//! rsh keys and trust, the ssh way, on TLS 1.3.
//!
//! Both ends of an rsh connection hold an [`Identity`]: a private key and a
//! self-signed certificate for it, kept in a single PEM file with mode 0600.
//! Nobody checks names or certificate authorities: a peer is known by the
//! SHA-256 [`Fingerprint`] of its public key, shown as `SHA256:<base64>`
//! like `ssh-keygen -l` shows key fingerprints.
//!
//! * The server accepts a client only if the client's fingerprint is listed
//!   in its [`AuthorizedKeys`] file, which it re-reads, off the async
//!   runtime, for every handshake ([`AuthorizedKeysFile`], [`server_config`]),
//!   and trusts only if nobody but the server's user or root can change it
//!   ([`trust`], like sshd's StrictModes).
//! * The client pins the server's fingerprint found in its [`KnownHosts`]
//!   file, or, on first contact, records the presented fingerprint in a
//!   [`ServerKeySlot`] so that the caller can ask the user and remember it
//!   (see [`client_config`]).
//!
//! * [`stream`] runs the handshake with rustls and then the TLS 1.3 record
//!   layer itself, in buffers it owns (the connections' hot path).
//!
//! Only TLS 1.3 is offered or accepted, session resumption is disabled (so
//! every connection is checked against the current authorized_keys), and
//! both sides ask for the ALPN protocol [`ALPN_PROTOCOL`].

#![deny(missing_docs)]

mod authorized_keys;
mod config;
mod error;
mod fingerprint;
mod identity;
mod known_hosts;
mod lines;
pub mod stream;
pub mod trust;

pub use authorized_keys::{AuthorizedKey, AuthorizedKeys, AuthorizedKeysFile, LoadedKeys};
pub use config::{
    client_config, peer_fingerprint, peer_fingerprint_of_certs, server_config, ServerKeySlot,
    ALPN_PROTOCOL,
};
pub use error::Error;
pub use fingerprint::Fingerprint;
pub use identity::Identity;
pub use known_hosts::{host_port, HostKeyStatus, KnownHost, KnownHosts};
pub use lines::LineWarning;

/// The rustls version this crate builds its configs with, re-exported so
/// that callers name the very same types.
pub use rustls;
