//! The greeting both peers send before any frame.

/// The four magic bytes that open every rsh connection: `R` `S` `H` `\0`.
pub const MAGIC: [u8; 4] = *b"RSH\0";

/// The protocol version this crate speaks.
pub const VERSION: u16 = 1;

/// Length of the greeting on the wire.
pub const HELLO_LEN: usize = 8;

/// The greeting: magic, a big-endian `u16` version and two reserved bytes
/// (sent as zero, ignored on receipt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the sender speaks.
    pub version: u16,
}

/// Why a greeting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The peer is not speaking rsh at all (wrong port, plaintext on a TLS port...).
    #[error("peer is not an rsh endpoint (bad magic \"{}\")", .0.escape_ascii())]
    BadMagic([u8; 4]),
    /// The peer speaks rsh, but another version.
    #[error("protocol version mismatch: peer speaks version {peer}, we speak version {ours}")]
    VersionMismatch {
        /// The version the peer announced.
        peer: u16,
        /// The version we speak.
        ours: u16,
    },
}

impl Hello {
    /// The greeting for the version this crate speaks.
    pub const fn current() -> Self {
        Hello { version: VERSION }
    }

    /// The greeting's wire bytes.
    pub fn encode(self) -> [u8; HELLO_LEN] {
        let v = self.version.to_be_bytes();
        [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], 0, 0]
    }

    /// Parses a greeting; checks the magic only (see [`Hello::check_version`]).
    ///
    /// # Errors
    /// [`HelloError::BadMagic`] when the first four bytes are not [`MAGIC`].
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Self, HelloError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(HelloError::BadMagic(magic));
        }
        Ok(Hello {
            version: u16::from_be_bytes([bytes[4], bytes[5]]),
        })
    }

    /// Checks that the peer's greeting names the version we speak.
    ///
    /// # Errors
    /// [`HelloError::VersionMismatch`] otherwise.
    pub fn check_version(self) -> Result<(), HelloError> {
        if self.version == VERSION {
            Ok(())
        } else {
            Err(HelloError::VersionMismatch {
                peer: self.version,
                ours: VERSION,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        assert_eq!(Hello::current().encode(), *b"RSH\0\x00\x01\x00\x00");
    }

    #[test]
    fn round_trip_and_checks() {
        let h = Hello::decode(&Hello { version: 7 }.encode()).expect("magic is right");
        assert_eq!(h.version, 7);
        assert_eq!(
            h.check_version(),
            Err(HelloError::VersionMismatch { peer: 7, ours: 1 })
        );
        assert!(Hello::decode(b"GET / HT").is_err());
        assert_eq!(
            Hello::decode(&Hello::current().encode()).map(|h| h.check_version()),
            Ok(Ok(()))
        );
    }
}
