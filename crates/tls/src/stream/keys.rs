//! The record keys of both directions and the key schedule behind them
//! (rustls's kernel connection, or fixed secrets for tests and fuzzing).

use super::record::*;
use rustls::client::ClientConnectionData;
use rustls::crypto::cipher::{AeadKey, Iv};
use rustls::kernel::KernelConnection;
use rustls::server::ServerConnectionData;
use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, SupportedCipherSuite};
use std::io::{self};

pub(super) enum Kernel {
    Client(KernelConnection<ClientConnectionData>),
    Server(KernelConnection<ServerConnectionData>),
    /// Traffic secrets given by the caller (tests and fuzzing): the next
    /// generation is derived here, as RFC 8446 §7.2 says.
    Fixed(FixedSecrets),
}

/// TLS_AES_128_GCM_SHA256 traffic secrets of both directions, and the side
/// this end plays.
pub(super) struct FixedSecrets {
    pub(super) side: rustls::Side,
    pub(super) tx: [u8; 32],
    pub(super) rx: [u8; 32],
}

/// HKDF-Expand-Label with SHA-256 and an empty context (RFC 8446 §7.1).
pub(super) fn expand_label(secret: &[u8; 32], label: &[u8], out: &mut [u8]) {
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
    pub(super) fn key(secret: &[u8; 32]) -> io::Result<RecordKey> {
        let mut key = [0u8; 16];
        let mut iv = [0u8; ring::aead::NONCE_LEN];
        expand_label(secret, b"key", &mut key);
        expand_label(secret, b"iv", &mut iv);
        RecordKey::from_parts(&ring::aead::AES_128_GCM, &key, iv, 0)
    }

    pub(super) fn next(secret: &mut [u8; 32]) {
        let current = *secret;
        expand_label(&current, b"traffic upd", secret);
    }
}

impl Kernel {
    pub(super) fn next_tx_key(&mut self) -> io::Result<RecordKey> {
        match self {
            Kernel::Client(conn) => RecordKey::new(conn.update_tx_secret().map_err(invalid)?),
            Kernel::Server(conn) => RecordKey::new(conn.update_tx_secret().map_err(invalid)?),
            Kernel::Fixed(fixed) => {
                FixedSecrets::next(&mut fixed.tx);
                FixedSecrets::key(&fixed.tx)
            }
        }
    }

    pub(super) fn next_rx_key(&mut self) -> io::Result<RecordKey> {
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
    pub(super) fn confidentiality_limit(&self) -> io::Result<u64> {
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
    pub(super) fn side(&self) -> rustls::Side {
        match self {
            Kernel::Client(_) => rustls::Side::Client,
            Kernel::Server(_) => rustls::Side::Server,
            Kernel::Fixed(fixed) => fixed.side,
        }
    }
}

/// One direction's key and record counter.
pub(super) struct RecordKey {
    pub(super) key: ring::aead::LessSafeKey,
    pub(super) iv: [u8; ring::aead::NONCE_LEN],
    pub(super) seq: u64,
}

impl RecordKey {
    pub(super) fn new((seq, secrets): (u64, ConnectionTrafficSecrets)) -> io::Result<Self> {
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

    pub(super) fn from_parts(
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
    pub(super) fn next_nonce(&mut self) -> ring::aead::Nonce {
        let mut nonce = self.iv;
        for (byte, seq) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *byte ^= seq;
        }
        self.seq += 1;
        ring::aead::Nonce::assume_unique_for_key(nonce)
    }
}

/// Both directions' keys, and the confidentiality limit of their cipher.
pub(super) struct Keys {
    pub(super) tx: RecordKey,
    pub(super) rx: RecordKey,
    pub(super) limit: u64,
}

impl Keys {
    pub(super) fn new(secrets: ExtractedSecrets, kernel: &Kernel) -> io::Result<Self> {
        Ok(Keys {
            tx: RecordKey::new(secrets.tx)?,
            rx: RecordKey::new(secrets.rx)?,
            limit: kernel.confidentiality_limit()?,
        })
    }
}
