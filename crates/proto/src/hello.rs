//! The greeting both peers send before any frame, and the version
//! negotiation it carries.
//!
//! A greeting announces the range of versions its sender speaks: the lowest
//! in bytes 4–5 (the only field a version-1 peer reads) and the highest in
//! bytes 6–7 (reserved in version 1: sent as zero, ignored on receipt). Both
//! sides send at once, so each learns the other's range without a round trip
//! and both pick the same version: the highest one both speak.

/// The four magic bytes that open every rsh connection: `R` `S` `H` `\0`.
pub const MAGIC: [u8; 4] = *b"RSH\0";

/// The highest protocol version this crate speaks.
pub const VERSION: u16 = 3;

/// The lowest protocol version this crate still speaks.
pub const MIN_VERSION: u16 = 1;

/// Length of the greeting on the wire.
pub const HELLO_LEN: usize = 8;

/// The greeting: magic, the lowest and the highest version the sender
/// speaks (big-endian `u16` each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    /// Lowest version the sender speaks. A version-1 peer reads only this
    /// field and closes unless it is 1, which is why a peer that still
    /// speaks version 1 must put 1 here.
    pub version: u16,
    /// Highest version the sender speaks. On the wire a value below
    /// [`Hello::version`] (version-1 peers send 0) means `version`.
    pub max_version: u16,
}

/// Why a greeting was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The peer is not speaking rsh at all (wrong port, plaintext on a TLS port...).
    #[error("peer is not an rsh endpoint (bad magic \"{}\")", .0.escape_ascii())]
    BadMagic([u8; 4]),
    /// The peer speaks rsh, but no version we speak.
    #[error("protocol version mismatch: peer speaks {}, we speak {}", range(*.peer), range(*.ours))]
    VersionMismatch {
        /// The versions the peer announced (lowest, highest).
        peer: (u16, u16),
        /// The versions we speak (lowest, highest).
        ours: (u16, u16),
    },
}

fn range((low, high): (u16, u16)) -> String {
    if low == high {
        format!("version {low}")
    } else {
        format!("versions {low} to {high}")
    }
}

impl Hello {
    /// The greeting for every version this crate speaks.
    pub const fn current() -> Self {
        Hello {
            version: MIN_VERSION,
            max_version: VERSION,
        }
    }

    /// A greeting for exactly one version (a test peer, an old peer).
    pub const fn only(version: u16) -> Self {
        Hello {
            version,
            max_version: version,
        }
    }

    /// The greeting's wire bytes.
    pub fn encode(self) -> [u8; HELLO_LEN] {
        let v = self.version.to_be_bytes();
        let max = self.max_version.to_be_bytes();
        [
            MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1], max[0], max[1],
        ]
    }

    /// Parses a greeting; checks the magic only (see [`Hello::negotiate`]).
    ///
    /// # Errors
    /// [`HelloError::BadMagic`] when the first four bytes are not [`MAGIC`].
    pub fn decode(bytes: &[u8; HELLO_LEN]) -> Result<Self, HelloError> {
        let magic = [bytes[0], bytes[1], bytes[2], bytes[3]];
        if magic != MAGIC {
            return Err(HelloError::BadMagic(magic));
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        let max_version = u16::from_be_bytes([bytes[6], bytes[7]]).max(version);
        Ok(Hello {
            version,
            max_version,
        })
    }

    /// The version both sides speak after exchanging `self` (ours) and
    /// `peer`: the highest version in both ranges. Both sides compute the
    /// same answer from the same two greetings.
    ///
    /// # Errors
    /// [`HelloError::VersionMismatch`] when the ranges do not overlap.
    pub fn negotiate(self, peer: Hello) -> Result<u16, HelloError> {
        let ours_max = self.max_version.max(self.version);
        let peer_max = peer.max_version.max(peer.version);
        let agreed = ours_max.min(peer_max);
        if agreed < self.version.max(peer.version) {
            return Err(HelloError::VersionMismatch {
                peer: (peer.version, peer_max),
                ours: (self.version, ours_max),
            });
        }
        Ok(agreed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes() {
        // Lowest 1 (what a version-1 peer checks), highest 3.
        assert_eq!(Hello::current().encode(), *b"RSH\0\x00\x01\x00\x03");
        // What a version-1 peer sends: reserved bytes zero.
        assert_eq!(
            Hello::decode(b"RSH\0\x00\x01\x00\x00"),
            Ok(Hello::only(1)),
            "a zero maximum means the version field"
        );
    }

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let v1 = Hello::decode(b"RSH\0\x00\x01\x00\x00").expect("v1 greeting");
        assert_eq!(Hello::current().negotiate(v1), Ok(1));
        assert_eq!(v1.negotiate(Hello::current()), Ok(1));
        assert_eq!(Hello::current().negotiate(Hello::current()), Ok(3));
        // A version-2 peer (1..=2) gets version 2.
        let v2 = Hello::decode(b"RSH\0\x00\x01\x00\x02").expect("v2 greeting");
        assert_eq!(Hello::current().negotiate(v2), Ok(2));
        assert_eq!(v2.negotiate(Hello::current()), Ok(2));
        // A future peer that speaks 1..=5: we both speak 3.
        let future = Hello {
            version: 1,
            max_version: 5,
        };
        assert_eq!(Hello::current().negotiate(future), Ok(3));
        // A future peer that dropped versions 1 and 2.
        let err = Hello::current()
            .negotiate(Hello::only(9))
            .expect_err("no common version");
        assert_eq!(
            err,
            HelloError::VersionMismatch {
                peer: (9, 9),
                ours: (1, 3)
            }
        );
        assert_eq!(
            err.to_string(),
            "protocol version mismatch: peer speaks version 9, we speak versions 1 to 3"
        );
        assert!(Hello::current().negotiate(Hello::only(0)).is_err());
    }

    #[test]
    fn round_trip_and_bad_magic() {
        let h = Hello::decode(&Hello::only(7).encode()).expect("magic is right");
        assert_eq!(h, Hello::only(7));
        assert!(Hello::decode(b"GET / HT").is_err());
        assert_eq!(
            Hello::decode(&Hello::current().encode()),
            Ok(Hello::current())
        );
    }
}
