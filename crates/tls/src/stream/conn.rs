//! The stream after the handshake: records read in large reads and
//! opened in place, data sealed into full records in one reused buffer.

use super::keys::*;
use super::record::*;
use rustls::pki_types::CertificateDer;
use rustls::AlertDescription;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the handshake learned about the peer, kept after rustls's
/// connection is reduced to its key schedule.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// The peer's certificate chain.
    pub certificates: Vec<CertificateDer<'static>>,
    /// The ALPN protocol both sides agreed on.
    pub alpn_protocol: Option<Vec<u8>>,
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
    pub(super) fn new(
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
