//! rustls configs that authenticate both ends by pinned key fingerprints.

use std::sync::{Arc, Mutex, MutexGuard};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::NoServerSessionStorage;
use rustls::{
    CertificateError, ClientConfig, CommonState, DigitallySignedStruct, DistinguishedName,
    OtherError, ServerConfig, SignatureScheme,
};

use crate::identity::provider;
use crate::{AuthorizedKeysFile, Error, Fingerprint, Identity};

/// The ALPN protocol both ends ask for.
pub const ALPN_PROTOCOL: &[u8] = b"rsh/1";

/// Where a client config records the fingerprint the server presented
/// during the handshake (also when it was refused for not matching the
/// pinned one), so the caller can check it against known_hosts or show it
/// to the user.
///
/// The slot holds the fingerprint of the latest handshake made with the
/// config it came with: use one config per connection, or read the slot
/// right after each handshake (or use [`peer_fingerprint`] on the
/// connection instead).
#[derive(Clone, Debug, Default)]
pub struct ServerKeySlot(Arc<Mutex<Option<Fingerprint>>>);

impl ServerKeySlot {
    /// The fingerprint of the server key seen in the last handshake.
    pub fn get(&self) -> Option<Fingerprint> {
        *self.lock()
    }

    fn set(&self, fingerprint: Fingerprint) {
        *self.lock() = Some(fingerprint);
    }

    fn lock(&self) -> MutexGuard<'_, Option<Fingerprint>> {
        // The guarded value is always consistent, even after a panic.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A server config for `identity`: TLS 1.3 only, no session resumption,
/// ALPN [`ALPN_PROTOCOL`], and a client certificate required whose key must
/// be listed in the `authorized_keys` file.
///
/// The verifier never touches the disk (it runs on the async runtime, inside
/// the handshake): it uses the latest read of the file. Call
/// [`AuthorizedKeysFile::refresh`] before each handshake so that adding or
/// removing a line takes effect for the next connection. A missing file, a
/// file never read, or one that is not trusted lets nobody in.
/// An unknown client key makes the handshake fail with
/// `invalid peer certificate: ApplicationVerificationFailure` on the server
/// side and the `access_denied` alert sent to the client.
pub fn server_config(
    identity: &Identity,
    authorized_keys: Arc<AuthorizedKeysFile>,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let verifier = Arc::new(AuthorizedKeysVerifier {
        keys: authorized_keys,
        algorithms: provider.signature_verification_algorithms,
        refusals: Mutex::new(RefusalLog::default()),
        unusable: Mutex::new(RefusalLog::default()),
    });
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![identity.cert_der().clone()],
            identity.private_key_der(),
        )?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    // Every connection must go through the client key check.
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    // The record layer is ours after the handshake (crate::stream).
    config.enable_secret_extraction = true;
    Ok(Arc::new(config))
}

/// A client config presenting `identity`: TLS 1.3 only, no session
/// resumption, no SNI, ALPN [`ALPN_PROTOCOL`]. Server names are not checked;
/// the server's key fingerprint is recorded in the returned
/// [`ServerKeySlot`]. If `pinned` names keys (an `Option` or all the
/// known_hosts entries for the host), a server key that is any of them is
/// accepted, as ssh does, and any other is refused with
/// [`Error::ServerKeyMismatch`] (wrapped in a rustls
/// `CertificateError::Other`). With nothing pinned every server key is
/// accepted: check the slot after the handshake, before sending anything.
pub fn client_config(
    identity: &Identity,
    pinned: impl IntoIterator<Item = Fingerprint>,
) -> Result<(Arc<ClientConfig>, ServerKeySlot), Error> {
    let provider = provider();
    let slot = ServerKeySlot::default();
    let verifier = Arc::new(PinnedServerVerifier {
        pinned: pinned.into_iter().collect(),
        slot: slot.clone(),
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(
            vec![identity.cert_der().clone()],
            identity.private_key_der(),
        )?;
    config.alpn_protocols = vec![ALPN_PROTOCOL.to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_sni = false;
    // The record layer is ours after the handshake (crate::stream).
    config.enable_secret_extraction = true;
    Ok((Arc::new(config), slot))
}

/// The fingerprint of the peer's key on an established connection (a
/// `rustls::ServerConnection` or `ClientConnection` derefs to
/// [`CommonState`]).
pub fn peer_fingerprint(conn: &CommonState) -> Result<Fingerprint, Error> {
    peer_fingerprint_of_certs(conn.peer_certificates().unwrap_or_default())
}

/// The fingerprint of the first (end-entity) certificate of a peer's chain.
pub fn peer_fingerprint_of_certs(certs: &[CertificateDer<'_>]) -> Result<Fingerprint, Error> {
    let cert = certs.first().ok_or(Error::NoPeerCertificate)?;
    Fingerprint::of_cert_der(cert)
}

fn fingerprint_for_tls(cert: &CertificateDer<'_>) -> Result<Fingerprint, rustls::Error> {
    Fingerprint::of_cert_der(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))
}

/// Accepts client keys listed in an authorized_keys file.
#[derive(Debug)]
struct AuthorizedKeysVerifier {
    keys: Arc<AuthorizedKeysFile>,
    algorithms: WebPkiSupportedAlgorithms,
    /// Refused keys logged in the current window, and refusals not logged:
    /// a stranger reconnecting in a loop must not write a line each time.
    refusals: Mutex<RefusalLog>,
    /// Likewise for handshakes refused because authorized_keys cannot be
    /// used (made unusable at run time, every stranger's handshake said so).
    unusable: Mutex<RefusalLog>,
}

/// The log state, even if a thread panicked holding it (it is only counts).
fn lock(log: &Mutex<RefusalLog>) -> std::sync::MutexGuard<'_, RefusalLog> {
    log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// At most [`REFUSALS_LOGGED`] refused keys are logged per
/// [`REFUSALS_WINDOW`]; the next line logged says how many were not.
#[derive(Debug, Default)]
struct RefusalLog {
    window_start: Option<std::time::Instant>,
    logged: u32,
    suppressed: u64,
}

const REFUSALS_LOGGED: u32 = 10;
const REFUSALS_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);

impl RefusalLog {
    /// `Some(suppressed so far)` if this refusal may be logged.
    fn check(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        let fresh = match self.window_start {
            None => true,
            Some(start) => now.duration_since(start) >= REFUSALS_WINDOW,
        };
        if fresh {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < REFUSALS_LOGGED {
            self.logged += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

impl ClientCertVerifier for AuthorizedKeysVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let fingerprint = fingerprint_for_tls(end_entity)?;
        let refuse =
            || rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure);
        let keys = match self.keys.current() {
            Some(Ok(keys)) => keys,
            Some(Err(e)) => {
                match lock(&self.unusable).check() {
                    Some(0) => {
                        tracing::error!(error = %e, "cannot use authorized_keys; refusing client")
                    }
                    Some(suppressed) => tracing::error!(
                        error = %e,
                        suppressed,
                        "cannot use authorized_keys; refusing client ({suppressed} more refusals were not logged)"
                    ),
                    None => {
                        tracing::debug!(error = %e, "cannot use authorized_keys; refusing client")
                    }
                }
                return Err(refuse());
            }
            None => {
                if lock(&self.unusable).check().is_some() {
                    tracing::error!(
                        path = %self.keys.path().display(),
                        "authorized_keys was never read; refusing client"
                    );
                }
                return Err(refuse());
            }
        };
        match keys.lookup(&fingerprint) {
            Some(key) => {
                tracing::debug!(%fingerprint, comment = %key.comment, "client key authorized");
                Ok(ClientCertVerified::assertion())
            }
            None => {
                let allowed = lock(&self.refusals).check();
                match allowed {
                    Some(0) => tracing::warn!(%fingerprint, "client key not in authorized_keys"),
                    Some(suppressed) => tracing::warn!(
                        %fingerprint,
                        suppressed,
                        "client key not in authorized_keys ({suppressed} more refusals were not logged)"
                    ),
                    None => tracing::debug!(%fingerprint, "client key not in authorized_keys"),
                }
                // Sent to the client as the access_denied alert.
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::ApplicationVerificationFailure,
                ))
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: only TLS 1.3 is enabled.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Accepts any of the server keys pinned for the host, or any key on first
/// contact.
#[derive(Debug)]
struct PinnedServerVerifier {
    pinned: Vec<Fingerprint>,
    slot: ServerKeySlot,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = fingerprint_for_tls(end_entity)?;
        self.slot.set(presented);
        if self.pinned.is_empty() || self.pinned.contains(&presented) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(Error::ServerKeyMismatch {
                    expected: self.pinned.clone(),
                    presented,
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: only TLS 1.3 is enabled.
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
