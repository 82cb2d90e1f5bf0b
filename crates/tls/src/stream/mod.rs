//! A TLS 1.3 stream whose records are sealed and opened in buffers it owns.
//!
//! rustls runs the handshake (its unbuffered API, so that it can hand the
//! session over); after that rustls keeps only the key schedule (a
//! [`KernelConnection`], the API meant for kTLS) and this stream does the
//! record layer itself with ring's AEADs, the same primitives rustls uses:
//!
//! - Received records are read from the socket in large reads (many records
//!   per system call) and decrypted in place; the plaintext is copied once,
//!   into the caller's buffer. rustls's buffered connection reads at most
//!   one record's worth per call and copies every record's plaintext into a
//!   fresh `Vec` before the caller copies it again.
//! - Sent data is gathered (vectored writes too) into full 16 KiB records,
//!   encrypted in place in one reused buffer and written with as few system
//!   calls as the socket allows.
//!
//! What the record layer handles after the handshake (RFC 8446): application
//! data; `close_notify` (end of stream) and any other alert (an error, as
//! rustls reports it: `rustls::Error::AlertReceived` inside an
//! `InvalidData` I/O error); `KeyUpdate` both ways (the peer's is applied,
//! at most 32 in a row without application data, as rustls allows; if it
//! asks for ours, ours goes before our next record; ours is sent on our own
//! before a key reaches a fraction of its cipher's confidentiality limit);
//! `NewSessionTicket` from a server is ignored (resumption is disabled on
//! both sides). A handshake message may span records.
//!
//! Anything else ends the stream for good, answered with the fatal alert
//! RFC 8446 names for it, encrypted like every record after the handshake:
//! `record_overflow` for a ciphertext over 2^14 + 256 bytes or an inner
//! plaintext (content, type and padding) over 2^14 + 1; `bad_record_mac`
//! for a record that does not decrypt; `decode_error` for a zero-length
//! handshake fragment, a malformed alert or KeyUpdate, a handshake message
//! over 64 KiB; `illegal_parameter` for a KeyUpdate value other than 0 or
//! 1; `unexpected_message` for an unprotected record, a record without a
//! content type or of an unknown one, a NewSessionTicket from a client, any
//! other handshake message, data after a KeyUpdate in its record, a record
//! of another type between the fragments of a handshake message, and the
//! 33rd KeyUpdate in a row. Every later read and write fails. Each refusal
//! is logged at WARN, at most [`REFUSAL_LOG_BURST`] lines per
//! [`REFUSAL_LOG_INTERVAL`] over all connections.
//!
//! The same secrets could be handed to the kernel (kTLS) where it has the
//! `tls` ULP; these machines' kernels do not, so this is the only path.

//!
//! The parts, each using only those after it: `handshake` (rustls drives
//! it, then hands over the secrets), `conn` (the stream: reading, opening,
//! sealing, writing), `keys` (the record keys and the key schedule behind
//! them), `record` (RFC 8446's limits and content types, and the refusal
//! of a broken record with its alert and rate-limited log line).

mod conn;
mod handshake;
mod keys;
mod record;

pub use conn::{PeerInfo, TlsStream};
pub use handshake::{accept, connect, HandshakeError};
pub use record::{REFUSAL_LOG_BURST, REFUSAL_LOG_INTERVAL};
