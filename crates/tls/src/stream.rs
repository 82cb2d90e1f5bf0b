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

use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::kernel::KernelConnection;
use rustls::pki_types::CertificateDer;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, UnbufferedStatus};
use rustls::{AlertDescription, ConnectionTrafficSecrets, ExtractedSecrets, SupportedCipherSuite};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// Largest plaintext of one record (RFC 8446 §5.1).
const MAX_PLAINTEXT: usize = 16 * 1024;
/// Largest TLSInnerPlaintext: the content and its type byte, padding
/// included (RFC 8446 §5.2).
const MAX_INNER_PLAINTEXT: usize = MAX_PLAINTEXT + 1;
/// Largest post-handshake message body taken (a NewSessionTicket; rustls's
/// limit for a handshake message).
const MAX_HANDSHAKE_MESSAGE: usize = 0xffff;
/// KeyUpdates taken in a row without application data in between: rustls's
/// (and BoringSSL's) cap. Each costs a key derivation.
const MAX_KEY_UPDATES_IN_A_ROW: u32 = 32;
/// Record header: type, legacy version, length.
const HEADER: usize = 5;
/// AEAD tag of every suite rustls offers.
const TAG: usize = 16;
/// Largest ciphertext of one record (RFC 8446 §5.2: plaintext + 256).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 256;
/// Received bytes read per system call, at most: many records at once.
const READ_BUFFER: usize = 256 * 1024;
/// The read buffer of a connection that has not yet filled it: what idle
/// and interactive connections keep (grown as soon as a record does not fit).
const READ_BUFFER_START: usize = 4 * 1024;
/// Encrypted bytes held before a write waits for the socket.
const WRITE_BUFFER: usize = 512 * 1024;
/// Handshake messages are small here (one certificate each way); rustls's
/// own limit for a buffered handshake message is 64 KiB.
const HANDSHAKE_BUFFER_MAX: usize = 64 * 1024 + MAX_CIPHERTEXT;

const CONTENT_ALERT: u8 = 21;
const CONTENT_HANDSHAKE: u8 = 22;
const CONTENT_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_NEW_SESSION_TICKET: u8 = 4;
const HANDSHAKE_KEY_UPDATE: u8 = 24;

/// What the handshake learned about the peer, kept after rustls's
/// connection is reduced to its key schedule.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's certificate chain.
    pub certificates: Vec<CertificateDer<'static>>,
    /// The ALPN protocol both sides agreed on.
    pub alpn_protocol: Option<Vec<u8>>,
}

enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
    /// Traffic secrets given by the caller (tests and fuzzing): the next
    /// generation is derived here, as RFC 8446 §7.2 says.
    Fixed(FixedSecrets),
}

/// TLS_AES_128_GCM_SHA256 traffic secrets of both directions, and the side
/// this end plays.
struct FixedSecrets {
    side: rustls::Side,
    tx: [u8; 32],
    rx: [u8; 32],
}

/// HKDF-Expand-Label with SHA-256 and an empty context (RFC 8446 §7.1).
fn expand_label(secret: &[u8; 32], label: &[u8], out: &mut [u8]) {
    struct Len(usize);
    impl ring::hkdf::KeyType for Len {
        fn len(&self) -> usize {
            self.0
        }
    }
    let prk = ring::hkdf::Prk::new_less_safe(ring::hkdf::HKDF_SHA256, secret);
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(b"tls13 ".len() + label.len()) as u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    // Only fails for lengths over 255 hashes; ours are 12, 16 and 32 bytes.
    if let Ok(okm) = prk.expand(&info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

impl FixedSecrets {
    fn key(secret: &[u8; 32]) -> io::Result<RecordKey> {
        let mut key = [0u8; 16];
        let mut iv = [0u8; ring::aead::NONCE_LEN];
        expand_label(secret, b"key", &mut key);
        expand_label(secret, b"iv", &mut iv);
        RecordKey::from_parts(&ring::aead::AES_128_GCM, &key, iv, 0)
    }

    fn next(secret: &mut [u8; 32]) {
        let current = *secret;
        expand_label(&current, b"traffic upd", secret);
    }
}

impl Kernel {
    fn next_tx_key(&mut self) -> io::Result<RecordKey> {
        match self {
            Kernel::Client(conn) => RecordKey::new(conn.update_tx_secret().map_err(invalid)?),
            Kernel::Server(conn) => RecordKey::new(conn.update_tx_secret().map_err(invalid)?),
            Kernel::Fixed(fixed) => {
                FixedSecrets::next(&mut fixed.tx);
                FixedSecrets::key(&fixed.tx)
            }
        }
    }

    fn next_rx_key(&mut self) -> io::Result<RecordKey> {
        match self {
            Kernel::Client(conn) => RecordKey::new(conn.update_rx_secret().map_err(invalid)?),
            Kernel::Server(conn) => RecordKey::new(conn.update_rx_secret().map_err(invalid)?),
            Kernel::Fixed(fixed) => {
                FixedSecrets::next(&mut fixed.rx);
                FixedSecrets::key(&fixed.rx)
            }
        }
    }

    /// The confidentiality limit of the negotiated cipher.
    fn confidentiality_limit(&self) -> io::Result<u64> {
        let suite = match self {
            Kernel::Client(conn) => conn.negotiated_cipher_suite(),
            Kernel::Server(conn) => conn.negotiated_cipher_suite(),
            Kernel::Fixed(_) => return Ok(1 << 23),
        };
        match suite {
            SupportedCipherSuite::Tls13(suite) => Ok(suite.common.confidentiality_limit),
            #[allow(unreachable_patterns)]
            _ => Err(io::Error::other("TLS 1.3 is required")),
        }
    }

    /// Which side of the connection this end is.
    fn side(&self) -> rustls::Side {
        match self {
            Kernel::Client(_) => rustls::Side::Client,
            Kernel::Server(_) => rustls::Side::Server,
            Kernel::Fixed(fixed) => fixed.side,
        }
    }
}

/// One direction's key and record counter.
struct RecordKey {
    key: ring::aead::LessSafeKey,
    iv: [u8; ring::aead::NONCE_LEN],
    seq: u64,
}

impl RecordKey {
    fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Self> {
        let (algorithm, key, iv): (_, AeadKey, Iv) = match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { key, iv } => (&ring::aead::AES_128_GCM, key, iv),
            ConnectionTrafficSecrets::Aes256Gcm { key, iv } => (&ring::aead::AES_256_GCM, key, iv),
            ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => {
                (&ring::aead::CHACHA20_POLY1305, key, iv)
            }
            _ => return Err(io::Error::other("unsupported TLS cipher suite")),
        };
        let iv: [u8; ring::aead::NONCE_LEN] = iv
            .as_ref()
            .try_into()
            .map_err(|_| io::Error::other("bad TLS traffic IV"))?;
        Self::from_parts(algorithm, key.as_ref(), iv, seq)
    }

    fn from_parts(
        algorithm: &'static ring::aead::Algorithm,
        key: &[u8],
        iv: [u8; ring::aead::NONCE_LEN],
        seq: u64,
    ) -> io::Result<Self> {
        let key = ring::aead::UnboundKey::new(algorithm, key)
            .map_err(|_| io::Error::other("bad TLS traffic key"))?;
        Ok(RecordKey {
            key: ring::aead::LessSafeKey::new(key),
            iv,
            seq,
        })
    }

    /// The per-record nonce (RFC 8446 §5.3), and the counter moved on.
    fn next_nonce(&mut self) -> ring::aead::Nonce {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        ring::aead::Nonce::assume_unique_for_key(nonce)
    }
}

/// Both directions' keys, and the confidentiality limit of their cipher.
struct Keys {
    tx: RecordKey,
    rx: RecordKey,
    limit: u64,
}

impl Keys {
    fn new(secrets: ExtractedSecrets, kernel: &Kernel) -> io::Result<Self> {
        Ok(Keys {
            tx: RecordKey::new(secrets.tx)?,
            rx: RecordKey::new(secrets.rx)?,
            limit: kernel.confidentiality_limit()?,
        })
    }
}

fn record_header(len: usize) -> [u8; HEADER] {
    let len = (len as u16).to_be_bytes();
    [CONTENT_APPLICATION_DATA, 3, 3, len[0], len[1]]
}

fn invalid(err: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

/// Why a received record ends the stream: the fatal alert answered (none
/// when the peer's own alert ended it), the error reported, and a reason
/// for the log.
struct Refusal {
    alert: Option<AlertDescription>,
    error: rustls::Error,
    reason: &'static str,
}

/// The peer broke RFC 8446: `alert` is what TLS names for it.
fn refuse(alert: AlertDescription, reason: &'static str) -> Refusal {
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
fn log_refusal(alert: AlertDescription, reason: &'static str) {
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

/// A TLS 1.3 connection over `IO` after its handshake (see the module
/// documentation).
pub struct TlsStream<IO> {
    io: IO,
    kernel: Kernel,
    peer: PeerInfo,
    tx: RecordKey,
    rx: RecordKey,
    /// Our key is replaced once it has sealed this many records.
    rekey_after: u64,
    /// The peer asked for a KeyUpdate of ours: it goes before our next record.
    key_update_owed: bool,
    /// Received bytes: `rbuf[plain]` decrypted data not yet handed out, then
    /// `rbuf[next..end]` records not yet opened.
    rbuf: Vec<u8>,
    plain: std::ops::Range<usize>,
    next: usize,
    end: usize,
    /// The peer sent close_notify.
    read_closed: bool,
    /// A post-handshake message not yet whole (RFC 8446 §5.1 lets one span
    /// records).
    handshake: Vec<u8>,
    /// KeyUpdates received since the last application data.
    key_updates_in_a_row: u32,
    /// A record was refused (or the peer's alert ended the stream): every
    /// later read fails with this.
    failed: Option<rustls::Error>,
    /// Sealed records not yet written: `wbuf[written..]`.
    wbuf: Vec<u8>,
    written: usize,
    /// We sent close_notify.
    write_closed: bool,
}

impl<IO> std::fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").finish_non_exhaustive()
    }
}

impl<IO> TlsStream<IO> {
    /// The transport.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The transport, mutably (not to read or write it: the records would
    /// no longer line up).
    pub fn get_mut(&mut self) -> &mut IO {
        &mut self.io
    }

    /// What the handshake learned about the peer.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Replaces our key after `records` sealed records instead of a quarter
    /// of the cipher's confidentiality limit (for tests of key updates).
    #[doc(hidden)]
    pub fn set_rekey_after(&mut self, records: u64) {
        self.rekey_after = records.max(1);
    }

    /// A stream over `io` whose handshake is taken as done, with fixed
    /// TLS_AES_128_GCM_SHA256 traffic secrets: `tx_secret` seals what this
    /// end sends, `rx_secret` opens what it receives. For tests and fuzzing
    /// only (no peer is authenticated).
    ///
    /// # Errors
    /// None in practice (the keys are derived from the secrets).
    #[doc(hidden)]
    pub fn with_fixed_secrets(
        io: IO,
        side: rustls::Side,
        tx_secret: [u8; 32],
        rx_secret: [u8; 32],
    ) -> io::Result<Self> {
        let kernel = Kernel::Fixed(FixedSecrets {
            side,
            tx: tx_secret,
            rx: rx_secret,
        });
        let keys = Keys {
            tx: FixedSecrets::key(&tx_secret)?,
            rx: FixedSecrets::key(&rx_secret)?,
            limit: kernel.confidentiality_limit()?,
        };
        let peer = PeerInfo {
            certificates: Vec::new(),
            alpn_protocol: None,
        };
        Ok(TlsStream::new(io, keys, kernel, peer, &[], &[]))
    }

    /// One record sealed with our current key around `inner`, a whole
    /// TLSInnerPlaintext (content, content type, padding) of at most 65,519
    /// bytes, as a hostile or unusual peer would send it; it is returned, not
    /// sent. For tests and fuzzing.
    #[doc(hidden)]
    pub fn seal_inner_plaintext(&mut self, inner: &[u8]) -> Vec<u8> {
        let inner = &inner[..inner.len().min(usize::from(u16::MAX) - TAG)];
        let header = record_header(inner.len() + TAG);
        let mut record = header.to_vec();
        record.extend_from_slice(inner);
        let nonce = self.tx.next_nonce();
        if let Ok(tag) = self.tx.key.seal_in_place_separate_tag(
            nonce,
            ring::aead::Aad::from(header),
            &mut record[HEADER..],
        ) {
            record.extend_from_slice(tag.as_ref());
        }
        record
    }

    /// Moves our sending key to its next generation, as after a KeyUpdate
    /// sealed with [`TlsStream::seal_inner_plaintext`]. For tests and fuzzing.
    ///
    /// # Errors
    /// The key schedule failed.
    #[doc(hidden)]
    pub fn next_tx_key(&mut self) -> io::Result<()> {
        self.tx = self.kernel.next_tx_key()?;
        Ok(())
    }

    /// `plaintext` came with the end of the handshake, before `leftover`:
    /// records rustls did not get to.
    fn new(
        io: IO,
        keys: Keys,
        kernel: Kernel,
        peer: PeerInfo,
        plaintext: &[u8],
        leftover: &[u8],
    ) -> Self {
        let mut rbuf = plaintext.to_vec();
        rbuf.extend_from_slice(leftover);
        rbuf.resize(rbuf.len().max(READ_BUFFER_START), 0);
        TlsStream {
            io,
            tx: keys.tx,
            rx: keys.rx,
            kernel,
            peer,
            // Well before the limit, as rustls does: a key that has sealed
            // this much is replaced (every 2^22 records, 64 GiB, for
            // AES-GCM under ring).
            rekey_after: (keys.limit / 4).max(1),
            key_update_owed: false,
            rbuf,
            plain: 0..plaintext.len(),
            next: plaintext.len(),
            end: plaintext.len() + leftover.len(),
            read_closed: false,
            handshake: Vec::new(),
            key_updates_in_a_row: 0,
            failed: None,
            // Grows with what is written at once, up to a bit over
            // WRITE_BUFFER (and twice that while the socket lags).
            wbuf: Vec::new(),
            written: 0,
            write_closed: false,
        }
    }

    /// Opens the next whole record in `rbuf[next..end]`, if there is one.
    /// Returns whether one was consumed.
    fn open_record(&mut self) -> Result<bool, Refusal> {
        let available = &self.rbuf[self.next..self.end];
        if available.len() < HEADER {
            return Ok(false);
        }
        let header: [u8; HEADER] = [
            available[0],
            available[1],
            available[2],
            available[3],
            available[4],
        ];
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if header[0] != CONTENT_APPLICATION_DATA {
            return Err(refuse(
                AlertDescription::UnexpectedMessage,
                "unprotected record after the handshake",
            ));
        }
        // Refused from the header, before the bytes are waited for.
        if len > MAX_CIPHERTEXT {
            return Err(refuse(
                AlertDescription::RecordOverflow,
                "record longer than 2^14 + 256 bytes",
            ));
        }
        if len > MAX_INNER_PLAINTEXT + TAG {
            return Err(refuse(
                AlertDescription::RecordOverflow,
                "inner plaintext longer than 2^14 + 1 bytes",
            ));
        }
        if len < TAG + 1 {
            return Err(refuse(
                AlertDescription::BadRecordMac,
                "record too short to be authenticated",
            ));
        }
        if available.len() < HEADER + len {
            return Ok(false);
        }
        let start = self.next + HEADER;
        self.next = start + len;
        let nonce = self.rx.next_nonce();
        let plaintext = self
            .rx
            .key
            .open_in_place(
                nonce,
                ring::aead::Aad::from(header),
                &mut self.rbuf[start..start + len],
            )
            .map_err(|_| refuse(AlertDescription::BadRecordMac, "record failed to decrypt"))?;
        // TLSInnerPlaintext: content, content type, zero padding.
        let Some(type_at) = plaintext.iter().rposition(|&byte| byte != 0) else {
            return Err(refuse(
                AlertDescription::UnexpectedMessage,
                "record without a content type",
            ));
        };
        let content_type = plaintext[type_at];
        let content = start..start + type_at;
        if !self.handshake.is_empty() && content_type != CONTENT_HANDSHAKE {
            // RFC 8446 §5.1: no other record in the middle of a message.
            return Err(refuse(
                AlertDescription::UnexpectedMessage,
                "record inside a fragmented handshake message",
            ));
        }
        match content_type {
            CONTENT_APPLICATION_DATA => {
                self.key_updates_in_a_row = 0;
                self.plain = content;
            }
            CONTENT_ALERT => {
                let alert = &self.rbuf[content];
                let [_level, description] = alert else {
                    return Err(refuse(AlertDescription::DecodeError, "malformed alert"));
                };
                let description = AlertDescription::from(*description);
                if description == AlertDescription::CloseNotify {
                    self.read_closed = true;
                } else {
                    return Err(Refusal {
                        alert: None,
                        error: rustls::Error::AlertReceived(description),
                        reason: "alert received",
                    });
                }
            }
            CONTENT_HANDSHAKE if content.is_empty() => {
                // RFC 8446 §5.1: never sent, so nothing to wait for.
                return Err(refuse(
                    AlertDescription::DecodeError,
                    "zero-length handshake fragment",
                ));
            }
            CONTENT_HANDSHAKE => self.handshake_messages(content)?,
            _ => {
                return Err(refuse(
                    AlertDescription::UnexpectedMessage,
                    "unexpected record type",
                ))
            }
        }
        Ok(true)
    }

    /// Post-handshake messages: those whole once `range` (a handshake
    /// record's content) is added to what earlier records began.
    fn handshake_messages(&mut self, range: std::ops::Range<usize>) -> Result<(), Refusal> {
        self.handshake.extend_from_slice(&self.rbuf[range]);
        let mut at = 0;
        while let [kind, a, b, c, ..] = self.handshake[at..] {
            let len = u32::from_be_bytes([0, a, b, c]) as usize;
            // Judged from the message header, before its body is waited for.
            match kind {
                HANDSHAKE_KEY_UPDATE if len != 1 => {
                    return Err(refuse(AlertDescription::DecodeError, "malformed KeyUpdate"))
                }
                HANDSHAKE_KEY_UPDATE => {}
                HANDSHAKE_NEW_SESSION_TICKET if self.kernel.side() == rustls::Side::Server => {
                    return Err(refuse(
                        AlertDescription::UnexpectedMessage,
                        "NewSessionTicket from a client",
                    ))
                }
                HANDSHAKE_NEW_SESSION_TICKET if len > MAX_HANDSHAKE_MESSAGE => {
                    return Err(refuse(
                        AlertDescription::DecodeError,
                        "handshake message too large",
                    ))
                }
                // Resumption is disabled on both sides: nothing to keep.
                HANDSHAKE_NEW_SESSION_TICKET => {}
                _ => {
                    return Err(refuse(
                        AlertDescription::UnexpectedMessage,
                        "unexpected handshake message",
                    ))
                }
            }
            let Some(body) = self.handshake.get(at + 4..at + 4 + len) else {
                break;
            };
            if kind == HANDSHAKE_KEY_UPDATE {
                let request = match body {
                    [0] => false,
                    [1] => true,
                    _ => {
                        return Err(refuse(
                            AlertDescription::IllegalParameter,
                            "KeyUpdate neither requested nor not",
                        ))
                    }
                };
                if at + 4 + len != self.handshake.len() {
                    // RFC 8446 §5.1: a key change ends its record.
                    return Err(refuse(
                        AlertDescription::UnexpectedMessage,
                        "data after a KeyUpdate",
                    ));
                }
                self.key_updates_in_a_row += 1;
                if self.key_updates_in_a_row > MAX_KEY_UPDATES_IN_A_ROW {
                    return Err(refuse(
                        AlertDescription::UnexpectedMessage,
                        "too many KeyUpdates without data",
                    ));
                }
                self.rx = self.kernel.next_rx_key().map_err(|_| Refusal {
                    alert: Some(AlertDescription::InternalError),
                    error: rustls::Error::General("TLS key update failed".into()),
                    reason: "key update failed",
                })?;
                self.key_update_owed |= request;
            }
            at += 4 + len;
        }
        self.handshake.drain(..at);
        if self.handshake.is_empty() && self.handshake.capacity() > 4096 {
            self.handshake = Vec::new();
        }
        Ok(())
    }

    /// Ends the stream for good after `refusal`: the fatal alert goes out
    /// (encrypted, as every record after the handshake) as far as the socket
    /// takes it now (a flush or shutdown sends the rest), and the refusal
    /// is logged, rate-limited.
    fn fail(&mut self, refusal: Refusal, cx: &mut Context<'_>) -> io::Error
    where
        IO: AsyncWrite + Unpin,
    {
        if let Some(alert) = refusal.alert {
            log_refusal(alert, refusal.reason);
            if !self.write_closed {
                self.write_closed = true;
                if self
                    .seal_record(CONTENT_ALERT, &[&[2, u8::from(alert)]])
                    .is_ok()
                {
                    let _ = self.poll_drain(cx);
                }
            }
        }
        self.failed = Some(refusal.error.clone());
        invalid(refusal.error)
    }

    /// Bytes held for records and messages not yet handed out: bounded
    /// whatever the peer sends. For tests and fuzzing.
    #[doc(hidden)]
    pub fn buffered(&self) -> usize {
        self.rbuf.len() + self.handshake.len()
    }

    /// The most [`TlsStream::buffered`] can be.
    #[doc(hidden)]
    pub const MAX_BUFFERED: usize =
        READ_BUFFER + HEADER + MAX_CIPHERTEXT + 4 + MAX_HANDSHAKE_MESSAGE + MAX_PLAINTEXT;

    /// Appends one sealed record of `content_type` holding the plaintext
    /// gathered from `pieces` (at most [`MAX_PLAINTEXT`] bytes in all).
    fn seal_record(&mut self, content_type: u8, pieces: &[&[u8]]) -> io::Result<()> {
        let len: usize = pieces.iter().map(|piece| piece.len()).sum();
        let start = self.wbuf.len();
        self.wbuf.extend_from_slice(&record_header(len + 1 + TAG));
        for piece in pieces {
            self.wbuf.extend_from_slice(piece);
        }
        self.wbuf.push(content_type);
        let header: [u8; HEADER] = record_header(len + 1 + TAG);
        let nonce = self.tx.next_nonce();
        let tag = self
            .tx
            .key
            .seal_in_place_separate_tag(
                nonce,
                ring::aead::Aad::from(header),
                &mut self.wbuf[start + HEADER..],
            )
            .map_err(|_| io::Error::other("TLS encryption failed"))?;
        self.wbuf.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// Sends a KeyUpdate under the current key and moves to the next one,
    /// if the peer asked for one or ours has sealed enough.
    fn update_key_if_due(&mut self) -> io::Result<()> {
        if !self.key_update_owed && self.tx.seq < self.rekey_after {
            return Ok(());
        }
        // update_not_requested: we only move our own key on.
        self.seal_record(CONTENT_HANDSHAKE, &[&[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0]])?;
        self.tx = self.kernel.next_tx_key()?;
        self.key_update_owed = false;
        Ok(())
    }

    /// Seals as much of `bufs` as the write buffer takes; returns how many
    /// bytes that was.
    fn seal_data(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut taken = 0;
        let mut slices = bufs
            .iter()
            .map(|buf| &buf[..])
            .filter(|buf| !buf.is_empty());
        let mut current: &[u8] = &[];
        let mut pieces: Vec<&[u8]> = Vec::new();
        while self.wbuf.len() - self.written < WRITE_BUFFER {
            // One record's worth of plaintext, across slices.
            pieces.clear();
            let mut len = 0;
            while len < MAX_PLAINTEXT {
                if current.is_empty() {
                    match slices.next() {
                        Some(next) => current = next,
                        None => break,
                    }
                }
                let take = current.len().min(MAX_PLAINTEXT - len);
                pieces.push(&current[..take]);
                current = &current[take..];
                len += take;
            }
            if len == 0 {
                break;
            }
            self.update_key_if_due()?;
            self.seal_record(CONTENT_APPLICATION_DATA, &pieces)?;
            taken += len;
        }
        Ok(taken)
    }
}

impl<IO: AsyncWrite + Unpin> TlsStream<IO> {
    /// Writes sealed records until none are left (`Ready`) or the socket is
    /// full (`Pending`).
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.wbuf.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.wbuf[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.wbuf.clear();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_write_slices(
        &mut self,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if bufs.iter().all(|buf| buf.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        // Full: what is sealed must go first (partly is enough).
        if self.wbuf.len() - self.written >= WRITE_BUFFER
            && self.poll_drain(cx)?.is_pending()
            && self.wbuf.len() - self.written >= WRITE_BUFFER
        {
            return Poll::Pending;
        }
        if self.written >= WRITE_BUFFER {
            // Keep the buffer bounded when the socket never takes all of it:
            // the written part goes (a move of less than what was written).
            self.wbuf.drain(..self.written);
            self.written = 0;
        }
        let taken = self.seal_data(bufs)?;
        // Start the write now; what the socket does not take yet goes on
        // the next write or flush.
        if let Poll::Ready(Err(err)) = self.poll_drain(cx) {
            return Poll::Ready(Err(err));
        }
        Poll::Ready(Ok(taken))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(error) = &this.failed {
            return Poll::Ready(Err(invalid(error.clone())));
        }
        let mut filled = false;
        loop {
            if !this.plain.is_empty() {
                let n = this.plain.len().min(buf.remaining());
                buf.put_slice(&this.rbuf[this.plain.start..this.plain.start + n]);
                this.plain.start += n;
                filled = true;
                if buf.remaining() == 0 {
                    return Poll::Ready(Ok(()));
                }
            }
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match this.open_record() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(refusal) => {
                    let error = this.fail(refusal, cx);
                    // What came before the refused record is the peer's.
                    return Poll::Ready(if filled { Ok(()) } else { Err(error) });
                }
            }
            if filled {
                // Hand out what was opened; the rest of the records waits.
                return Poll::Ready(Ok(()));
            }
            // Need more bytes: make room for at least one whole record.
            if this.next == this.end {
                this.next = 0;
                this.end = 0;
            } else if this.rbuf.len() - this.next < HEADER + MAX_CIPHERTEXT + 1 {
                this.rbuf.copy_within(this.next..this.end, 0);
                this.end -= this.next;
                this.next = 0;
            }
            if this.end == this.rbuf.len() {
                // A record bigger than the small start buffer.
                this.rbuf.resize(READ_BUFFER, 0);
            }
            let mut room = ReadBuf::new(&mut this.rbuf[this.end..]);
            ready!(Pin::new(&mut this.io).poll_read(cx, &mut room))?;
            let n = room.filled().len();
            if n == room.capacity() && this.rbuf.len() < READ_BUFFER {
                // Bulk data: read more records per system call from now on.
                this.rbuf.resize(READ_BUFFER, 0);
            }
            if n == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed connection without sending TLS close_notify",
                )));
            }
            this.end += n;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_write_slices(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            // close_notify: warning level, description 0.
            this.seal_record(CONTENT_ALERT, &[&[1, 0]])?;
            this.write_closed = true;
        }
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Why a handshake failed, with the transport back (to let the peer read
/// an alert before closing, say).
pub struct HandshakeError<IO> {
    /// The failure: a rustls error inside an `InvalidData` error, or the
    /// transport's.
    pub error: io::Error,
    /// The transport.
    pub io: IO,
}

impl<IO> std::fmt::Debug for HandshakeError<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

/// The two unbuffered connection types, driven alike.
trait Handshaking {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data>;
    fn common(&self) -> &rustls::CommonState;
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error>;
}

impl Handshaking for UnbufferedClientConnection {
    type Data = ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &rustls::CommonState {
        self
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection()
            .map(|(secrets, conn)| (secrets, Kernel::Client(conn)))
    }
}

impl Handshaking for UnbufferedServerConnection {
    type Data = ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn common(&self) -> &rustls::CommonState {
        self
    }
    fn into_kernel(self) -> Result<(ExtractedSecrets, Kernel), rustls::Error> {
        self.dangerous_into_kernel_connection()
            .map(|(secrets, conn)| (secrets, Kernel::Server(conn)))
    }
}

/// Runs the client side of the handshake over `io` (the config must have
/// `enable_secret_extraction`, as [`crate::client_config`]'s has).
///
/// # Errors
/// The handshake failed; the transport comes back with the error.
pub async fn connect<IO>(
    config: std::sync::Arc<rustls::ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    io: IO,
) -> Result<TlsStream<IO>, HandshakeError<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match UnbufferedClientConnection::new(config, name) {
        Ok(conn) => handshake(conn, io).await,
        Err(err) => Err(HandshakeError {
            error: invalid(err),
            io,
        }),
    }
}

/// Runs the server side of the handshake over `io` (the config must have
/// `enable_secret_extraction`, as [`crate::server_config`]'s has).
///
/// # Errors
/// The handshake failed (after the alert, if any, was sent); the transport
/// comes back with the error.
pub async fn accept<IO>(
    config: std::sync::Arc<rustls::ServerConfig>,
    io: IO,
) -> Result<TlsStream<IO>, HandshakeError<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    match UnbufferedServerConnection::new(config) {
        Ok(conn) => handshake(conn, io).await,
        Err(err) => Err(HandshakeError {
            error: invalid(err),
            io,
        }),
    }
}

/// One step of the handshake, decided while rustls borrows the buffers.
enum Step {
    Again,
    Read,
    Write,
    Done,
    Failed(io::Error),
}

async fn handshake<C, IO>(mut conn: C, mut io: IO) -> Result<TlsStream<IO>, HandshakeError<IO>>
where
    C: Handshaking,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut incoming = vec![0u8; MAX_CIPHERTEXT + HEADER];
    let mut used = 0;
    let mut outgoing: Vec<u8> = Vec::new();
    let mut sent = 0;
    let mut early: Vec<u8> = Vec::new();
    // A failure is reported once the alert rustls queued for it is sent.
    let mut failed: Option<io::Error> = None;
    loop {
        let UnbufferedStatus { discard, state } = conn.process(&mut incoming[..used]);
        let step = match state {
            Err(err) => match failed.take() {
                // Once more, for the alert rustls queued for it.
                None => {
                    failed = Some(invalid(err));
                    Step::Again
                }
                Some(first) => Step::Failed(first),
            },
            Ok(ConnectionState::EncodeTlsData(mut data)) => loop {
                match data.encode(&mut outgoing[sent..]) {
                    Ok(n) => {
                        sent += n;
                        break Step::Write;
                    }
                    Err(EncodeError::InsufficientSize(size)) => {
                        outgoing.resize(sent + size.required_size, 0);
                    }
                    Err(err) => break Step::Failed(io::Error::other(err.to_string())),
                }
            },
            Ok(ConnectionState::TransmitTlsData(data)) => {
                // Written below, before the next step; rustls only needs to
                // know that it will be.
                data.done();
                Step::Write
            }
            // After a failure, only the alert is of interest.
            Ok(_) if failed.is_some() => Step::Write,
            Ok(ConnectionState::BlockedHandshake) => Step::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Step::Done,
            Ok(ConnectionState::ReadTraffic(mut data)) => {
                // The peer's first data, in the same read as its Finished
                // (the client's greeting, on the server): kept for the
                // stream's first read.
                let mut step = Step::Again;
                while let Some(record) = data.next_record() {
                    match record {
                        Ok(record)
                            if early.len() + record.payload.len() <= HANDSHAKE_BUFFER_MAX =>
                        {
                            early.extend_from_slice(record.payload);
                        }
                        Ok(_) => {
                            step = Step::Failed(invalid(rustls::Error::General(
                                "too much data during the handshake".into(),
                            )));
                            break;
                        }
                        Err(err) => {
                            step = Step::Failed(invalid(err));
                            break;
                        }
                    }
                }
                step
            }
            Ok(ConnectionState::ReadEarlyData(_)) => Step::Failed(invalid(rustls::Error::General(
                "0-RTT data is not accepted".into(),
            ))),
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                Step::Failed(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ))
            }
            Ok(_) => Step::Failed(io::Error::other("unexpected TLS handshake state")),
        };
        incoming.copy_within(discard..used, 0);
        used -= discard;
        match step {
            Step::Again => {}
            Step::Write => {
                if let Err(error) = write_out(&mut io, &outgoing[..sent]).await {
                    return Err(HandshakeError {
                        error: failed.take().unwrap_or(error),
                        io,
                    });
                }
                outgoing.clear();
                sent = 0;
                if let Some(error) = failed.take() {
                    // The alert rustls queued for the failure is out (asking
                    // rustls for more would make it fail again on the same
                    // bytes).
                    return Err(HandshakeError { error, io });
                }
            }
            Step::Read => {
                if let Some(error) = failed.take() {
                    // The alert (if any) is out.
                    return Err(HandshakeError { error, io });
                }
                if used == incoming.len() {
                    if incoming.len() >= HANDSHAKE_BUFFER_MAX {
                        return Err(HandshakeError {
                            error: invalid(rustls::Error::General(
                                "handshake message too large".into(),
                            )),
                            io,
                        });
                    }
                    incoming.resize((incoming.len() * 2).min(HANDSHAKE_BUFFER_MAX), 0);
                }
                match io.read(&mut incoming[used..]).await {
                    Ok(0) => {
                        return Err(HandshakeError {
                            error: io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                "tls handshake eof",
                            ),
                            io,
                        })
                    }
                    Ok(n) => used += n,
                    Err(error) => return Err(HandshakeError { error, io }),
                }
            }
            Step::Failed(error) => return Err(HandshakeError { error, io }),
            Step::Done => {
                if let Some(error) = failed.take() {
                    return Err(HandshakeError { error, io });
                }
                let common = conn.common();
                let peer = PeerInfo {
                    certificates: common
                        .peer_certificates()
                        .map(|certs| certs.iter().map(|cert| cert.clone().into_owned()).collect())
                        .unwrap_or_default(),
                    alpn_protocol: common.alpn_protocol().map(<[u8]>::to_vec),
                };
                let built = conn
                    .into_kernel()
                    .map_err(invalid)
                    .and_then(|(secrets, kernel)| {
                        Keys::new(secrets, &kernel).map(|keys| (keys, kernel))
                    });
                return match built {
                    Ok((keys, kernel)) => Ok(TlsStream::new(
                        io,
                        keys,
                        kernel,
                        peer,
                        &early,
                        &incoming[..used],
                    )),
                    Err(error) => Err(HandshakeError { error, io }),
                };
            }
        }
    }
}

async fn write_out<IO: AsyncWrite + Unpin>(io: &mut IO, bytes: &[u8]) -> io::Result<()> {
    io.write_all(bytes).await?;
    io.flush().await
}
