//! SHA-256 key fingerprints, printed like `ssh-keygen -l`.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::Error;

const PREFIX: &str = "SHA256:";

/// The SHA-256 digest of a public key (the DER of a certificate's
/// SubjectPublicKeyInfo), so that re-issuing a certificate for the same key
/// keeps the fingerprint.
///
/// Displays and parses as `SHA256:<base64, standard alphabet, no padding>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER SubjectPublicKeyInfo.
    pub fn of_spki_der(spki: &[u8]) -> Fingerprint {
        Fingerprint(Sha256::digest(spki).into())
    }

    /// The fingerprint of the public key in a DER X.509 certificate.
    pub fn of_cert_der(cert: &[u8]) -> Result<Fingerprint, Error> {
        let der = CertificateDer::from(cert);
        let parsed = webpki::EndEntityCert::try_from(&der)
            .map_err(|e| Error::BadCertificate(e.to_string()))?;
        Ok(Fingerprint::of_spki_der(
            parsed.subject_public_key_info().as_ref(),
        ))
    }

    /// The 32 digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A fingerprint from its 32 digest bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Fingerprint {
        Fingerprint(bytes)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", STANDARD_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Fingerprint, Error> {
        let bad = || Error::BadFingerprint(s.to_owned());
        let b64 = s.strip_prefix(PREFIX).ok_or_else(bad)?;
        // The engine refuses padding and non-canonical trailing bits, so only
        // the exact form that Display writes is accepted.
        let bytes = STANDARD_NO_PAD.decode(b64).map_err(|_| bad())?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Fingerprint(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_parse_round_trip() {
        let fp = Fingerprint::of_spki_der(b"some key");
        let s = fp.to_string();
        assert!(s.starts_with("SHA256:"));
        assert_eq!(s.len(), 7 + 43);
        assert!(!s.contains('='));
        assert_eq!(s.parse::<Fingerprint>().ok(), Some(fp));
        assert_eq!(format!("{fp:?}"), s);
    }

    #[test]
    fn known_value() {
        // sha256("") = e3b0c442...; base64 of it, without padding.
        let fp = Fingerprint::of_spki_der(b"");
        assert_eq!(
            fp.to_string(),
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
        );
    }

    #[test]
    fn rejects_other_forms() {
        let good = Fingerprint::of_spki_der(b"k").to_string();
        let b64 = &good[7..];
        for bad in [
            String::new(),
            b64.to_owned(),
            format!("sha256:{b64}"),
            format!("MD5:{b64}"),
            format!("{good}="),
            format!("{good} "),
            format!(" {good}"),
            format!("SHA256:{}", &b64[..42]),
            format!("{good}A"),
            // URL-safe alphabet is not ssh's.
            "SHA256:47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU".to_owned(),
            // Non-canonical last character (trailing bits set).
            "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV".to_owned(),
        ] {
            assert!(bad.parse::<Fingerprint>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn reissued_certificate_keeps_fingerprint() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let first = rcgen::CertificateParams::new(vec!["a".to_owned()])
            .and_then(|p| p.self_signed(&key))
            .expect("first cert");
        let mut params = rcgen::CertificateParams::new(vec!["b".to_owned()]).expect("params");
        params.serial_number = Some(rcgen::SerialNumber::from(7u64));
        let second = params.self_signed(&key).expect("second cert");
        assert_ne!(first.der(), second.der());
        let fp = Fingerprint::of_cert_der(first.der()).expect("fp");
        assert_eq!(Fingerprint::of_cert_der(second.der()).expect("fp"), fp);
        assert_eq!(
            Fingerprint::of_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&key)),
            fp
        );
        let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("key");
        let third = rcgen::CertificateParams::new(vec!["a".to_owned()])
            .and_then(|p| p.self_signed(&other))
            .expect("third cert");
        assert_ne!(Fingerprint::of_cert_der(third.der()).expect("fp"), fp);
    }

    #[test]
    fn bad_cert_is_an_error() {
        assert!(matches!(
            Fingerprint::of_cert_der(b"not a certificate"),
            Err(Error::BadCertificate(_))
        ));
    }
}
