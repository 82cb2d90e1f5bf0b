//! RFC 8446's record limits and content types, and what happens to a
//! record that breaks them: the fatal alert TLS names for it and one
//! rate-limited log line.

use rustls::AlertDescription;
use std::io;

/// Largest plaintext of one record (RFC 8446 §5.1).
pub(super) const MAX_PLAINTEXT: usize = 16 * 1024;
/// Largest TLSInnerPlaintext: the content and its type byte, padding
/// included (RFC 8446 §5.2).
pub(super) const MAX_INNER_PLAINTEXT: usize = MAX_PLAINTEXT + 1;
/// Largest post-handshake message body taken (a NewSessionTicket; rustls's
/// limit for a handshake message).
pub(super) const MAX_HANDSHAKE_MESSAGE: usize = 0xffff;
/// KeyUpdates taken in a row without application data in between: rustls's
/// (and BoringSSL's) cap. Each costs a key derivation.
pub(super) const MAX_KEY_UPDATES_IN_A_ROW: u32 = 32;
/// Record header: type, legacy version, length.
pub(super) const HEADER: usize = 5;
/// AEAD tag of every suite rustls offers.
pub(super) const TAG: usize = 16;
/// Largest ciphertext of one record (RFC 8446 §5.2: plaintext + 256).
pub(super) const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Received bytes read per system call, at most: many records at once.
pub(super) const READ_BUFFER: usize = 256 * 1024;
/// The read buffer of a connection that has not yet filled it: what idle
/// and interactive connections keep (grown as soon as a record does not fit).
pub(super) const READ_BUFFER_START: usize = 4 * 1024;
/// Encrypted bytes held before a write waits for the socket.
pub(super) const WRITE_BUFFER: usize = 512 * 1024;
/// Handshake messages are small here (one certificate each way); rustls's
/// own limit for a buffered handshake message is 64 KiB.
pub(super) const HANDSHAKE_BUFFER_MAX: usize = 64 * 1024 + MAX_CIPHERTEXT;

pub(super) const CONTENT_ALERT: u8 = 21;
pub(super) const CONTENT_HANDSHAKE: u8 = 22;
pub(super) const CONTENT_APPLICATION_DATA: u8 = 23;
pub(super) const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
pub(super) const HANDSHAKE_KEY_UPDATE: u8 = 24;

pub(super) fn record_header(len: usize) -> [u8; HEADER] {
    let len = (len as u16).to_be_bytes();
    [CONTENT_APPLICATION_DATA, 3, 3, len[0], len[1]]
}

pub(super) fn invalid(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// Why a received record ends the stream: the fatal alert answered (none
/// when the peer's own alert ended it), the error reported, and a reason
/// for the log.
pub(super) struct Refusal {
    pub(super) alert: Option<AlertDescription>,
    pub(super) error: rustls::Error,
    pub(super) reason: &'static str,
}

/// The peer broke RFC 8446: `alert` is what TLS names for it.
pub(super) fn refuse(alert: AlertDescription, reason: &'static str) -> Refusal {
    let error = match alert {
        AlertDescription::BadRecordMac => rustls::Error::DecryptError,
        AlertDescription::RecordOverflow => rustls::Error::PeerSentOversizedRecord,
        _ => rustls::Error::General(format!("TLS peer misbehaved: {reason}")),
    };
    Refusal {
        alert: Some(alert),
        error,
        reason,
    }
}

/// Lines about refused records let through per [`REFUSAL_LOG_INTERVAL`],
/// over all connections: a flood of hostile peers costs a few lines.
pub const REFUSAL_LOG_BURST: u32 = 10;
/// See [`REFUSAL_LOG_BURST`].
pub const REFUSAL_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// The window of the refusal log limit (tokio's clock, so that tests can
/// stop it).
struct RefusalLog {
    window_start: Option<tokio::time::Instant>,
    used: u32,
    suppressed: u64,
}

static REFUSAL_LOG: std::sync::Mutex<RefusalLog> = std::sync::Mutex::new(RefusalLog {
    window_start: None,
    used: 0,
    suppressed: 0,
});

/// Logs a refused record at WARN, unless this interval's lines are used up
/// (then it is counted, and the next line says how many were not logged).
pub(super) fn log_refusal(alert: AlertDescription, reason: &'static str) {
    let now = tokio::time::Instant::now();
    let suppressed = {
        let mut log = REFUSAL_LOG
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = log
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= REFUSAL_LOG_INTERVAL);
        if fresh {
            log.window_start = Some(now);
            log.used = 0;
        }
        if log.used < REFUSAL_LOG_BURST {
            log.used += 1;
            Some(std::mem::take(&mut log.suppressed))
        } else {
            log.suppressed += 1;
            None
        }
    };
    if let Some(suppressed) = suppressed {
        tracing::warn!(
            ?alert,
            reason,
            suppressed,
            "refused a TLS record from the peer; answered with a fatal alert"
        );
    }
}
