//! Real TLS handshakes between configs of this crate, over in-memory pipes.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rsh_tls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use rsh_tls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rsh_tls::rustls::{self, ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};
use rsh_tls::{client_config, peer_fingerprint, AuthorizedKeysFile, Fingerprint, Identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

type Handshakes = (
    io::Result<server::TlsStream<DuplexStream>>,
    io::Result<client::TlsStream<DuplexStream>>,
);

/// A server config and the authorized_keys file it checks, refreshed (off
/// the runtime) before each handshake, as the server does.
#[derive(Clone)]
struct Server {
    config: Arc<ServerConfig>,
    keys: Arc<AuthorizedKeysFile>,
}

fn server_config(
    id: &Identity,
    authorized_keys: std::path::PathBuf,
) -> Result<Server, rsh_tls::Error> {
    let keys = AuthorizedKeysFile::new(authorized_keys);
    Ok(Server {
        config: rsh_tls::server_config(id, keys.clone())?,
        keys,
    })
}

/// Runs both ends of a handshake over a duplex pipe.
async fn handshake(server: Server, client: Arc<ClientConfig>) -> Handshakes {
    let _ = server.keys.refresh().await;
    let server = server.config;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = TlsAcceptor::from(server);
    let connector = TlsConnector::from(client);
    let name = ServerName::try_from("ignored.invalid").expect("server name");
    let both = async {
        tokio::join!(
            acceptor.accept(server_io),
            connector.connect(name, client_io)
        )
    };
    tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .expect("handshake timed out")
}

/// What the client gets: an error from the handshake itself, or else from
/// its first read (in TLS 1.3 the client finishes its side of the handshake
/// before the server has judged the client certificate).
async fn client_error(client: io::Result<client::TlsStream<DuplexStream>>) -> io::Error {
    match client {
        Err(e) => {
            println!("client failed during the handshake: {e}");
            e
        }
        Ok(mut stream) => {
            println!("client handshake succeeded; the error comes on the first read");
            let mut buf = [0u8; 16];
            match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
                .await
                .expect("read timed out")
            {
                Err(e) => e,
                Ok(n) => panic!("client read {n} bytes from a server that refused it"),
            }
        }
    }
}

fn identity(comment: &str) -> Identity {
    Identity::generate(comment).expect("generate identity")
}

fn authorize(path: &Path, id: &Identity) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open authorized_keys");
    writeln!(f, "{}", id.authorized_keys_line()).expect("write authorized_keys");
}

#[tokio::test]
async fn authorized_client_connects_and_both_see_fingerprints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let client_id = identity("client");
    std::fs::write(&ak, "# keys\n\nnot a key\n").expect("write");
    authorize(&ak, &client_id);

    let server_cfg = server_config(&server_id, ak).expect("server config");
    let (client_cfg, slot) =
        client_config(&client_id, Some(server_id.fingerprint())).expect("client config");
    let (s, c) = handshake(server_cfg, client_cfg).await;
    let mut s = s.expect("server handshake");
    let mut c = c.expect("client handshake");

    assert_eq!(
        peer_fingerprint(s.get_ref().1).expect("client fp"),
        client_id.fingerprint()
    );
    assert_eq!(
        peer_fingerprint(c.get_ref().1).expect("server fp"),
        server_id.fingerprint()
    );
    assert_eq!(slot.get(), Some(server_id.fingerprint()));
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(rsh_tls::ALPN_PROTOCOL));
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );

    c.write_all(b"ping").await.expect("client write");
    c.flush().await.expect("client flush");
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.expect("server read");
    assert_eq!(&buf, b"ping");
    s.write_all(b"pong").await.expect("server write");
    s.flush().await.expect("server flush");
    c.read_exact(&mut buf).await.expect("client read");
    assert_eq!(&buf, b"pong");
}

#[tokio::test]
async fn first_contact_without_pin_records_server_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let client_id = identity("client");
    authorize(&ak, &client_id);

    let server_cfg = server_config(&server_id, ak).expect("server config");
    let (client_cfg, slot) = client_config(&client_id, None).expect("client config");
    assert_eq!(slot.get(), None);
    let (s, c) = handshake(server_cfg, client_cfg).await;
    s.expect("server handshake");
    c.expect("client handshake");
    assert_eq!(slot.get(), Some(server_id.fingerprint()));
}

#[tokio::test]
async fn unknown_client_key_is_refused_with_access_denied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let client_id = identity("client");
    authorize(&ak, &identity("someone else"));

    let server_cfg = server_config(&server_id, ak).expect("server config");
    let (client_cfg, _slot) =
        client_config(&client_id, Some(server_id.fingerprint())).expect("client config");
    let (s, c) = handshake(server_cfg, client_cfg).await;
    let server_err = s.expect_err("server must refuse");
    assert!(
        server_err
            .to_string()
            .contains("ApplicationVerificationFailure"),
        "server error: {server_err}"
    );
    let client_err = client_error(c).await;
    assert!(
        client_err.to_string().contains("AccessDenied"),
        "client error: {client_err}"
    );
    println!("server: {server_err}\nclient: {client_err}");
}

#[tokio::test]
async fn missing_authorized_keys_refuses_everyone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_id = identity("server");
    let client_id = identity("client");
    let server_cfg =
        server_config(&server_id, dir.path().join("no_such_file")).expect("server config");
    let (client_cfg, _) = client_config(&client_id, None).expect("client config");
    let (s, c) = handshake(server_cfg, client_cfg).await;
    assert!(s.is_err());
    let client_err = client_error(c).await;
    assert!(
        client_err.to_string().contains("AccessDenied"),
        "{client_err}"
    );
}

#[tokio::test]
async fn authorized_keys_is_reread_for_each_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let client_id = identity("client");
    let server_cfg = server_config(&server_id, ak.clone()).expect("server config");
    let (client_cfg, _) =
        client_config(&client_id, Some(server_id.fingerprint())).expect("client config");

    let (s, c) = handshake(server_cfg.clone(), client_cfg.clone()).await;
    assert!(s.is_err(), "no authorized_keys yet");
    client_error(c).await;

    authorize(&ak, &client_id);
    let (s, c) = handshake(server_cfg.clone(), client_cfg.clone()).await;
    s.expect("server accepts the newly authorized key");
    c.expect("client handshake");

    // Removing the line takes effect just as fast (no session resumption).
    std::fs::write(&ak, "# revoked\n").expect("rewrite");
    let (s, c) = handshake(server_cfg, client_cfg).await;
    assert!(s.is_err(), "revoked key must be refused");
    client_error(c).await;
}

#[tokio::test]
async fn wrong_pinned_server_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let client_id = identity("client");
    authorize(&ak, &client_id);
    let expected = identity("the real server").fingerprint();

    let server_cfg = server_config(&server_id, ak).expect("server config");
    let (client_cfg, slot) = client_config(&client_id, Some(expected)).expect("client config");
    let (s, c) = handshake(server_cfg, client_cfg).await;
    let client_err = c.expect_err("client must refuse");
    let msg = client_err.to_string();
    assert!(msg.contains("ServerKeyMismatch"), "client error: {msg}");
    assert!(msg.contains(&server_id.fingerprint().to_string()), "{msg}");
    // The slot tells what the server presented, for a proper warning.
    assert_eq!(slot.get(), Some(server_id.fingerprint()));
    let server_err = s.expect_err("server sees the client's alert");
    println!("server: {server_err}\nclient: {msg}");
}

/// A server verifier for hand-made clients that accepts any key.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

fn plain_client_builder(
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(algorithms)))
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let server_cfg = server_config(&server_id, ak).expect("server config");
    let client_cfg = plain_client_builder(&[&rustls::version::TLS13]).with_no_client_auth();
    let (s, c) = handshake(server_cfg, Arc::new(client_cfg)).await;
    let server_err = s.expect_err("server must refuse");
    assert!(
        server_err.to_string().contains("no certificates"),
        "server error: {server_err}"
    );
    let client_err = client_error(c).await;
    println!("server: {server_err}\nclient: {client_err}");
}

#[tokio::test]
async fn tls12_client_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let client_id = identity("client");
    authorize(&ak, &client_id);
    let server_cfg = server_config(&server_id, ak).expect("server config");
    let client_cfg = plain_client_builder(&[&rustls::version::TLS12])
        .with_client_auth_cert(
            vec![client_id.cert_der().clone()],
            client_id.private_key_der(),
        )
        .expect("client cert");
    let (s, c) = handshake(server_cfg, Arc::new(client_cfg)).await;
    let server_err = s.expect_err("server must refuse TLS 1.2");
    let client_err = c.expect_err("client handshake must fail");
    println!("server: {server_err}\nclient: {client_err}");
    assert!(
        client_err.to_string().contains("ProtocolVersion"),
        "client error: {client_err}"
    );
}

#[test]
fn identity_file_round_trip_gives_same_fingerprint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("id");
    let a = Identity::load_or_create(&path, "me@host").expect("create");
    let b = Identity::load_or_create(&path, "other").expect("load");
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_eq!(b.comment(), "me@host");
    let shown: Fingerprint = a.fingerprint().to_string().parse().expect("parse");
    assert_eq!(shown, a.fingerprint());
}

/// A host listed with its old and its new key (known_hosts during a key
/// change): the server presenting either is accepted, as ssh does.
#[tokio::test]
async fn any_pinned_key_is_accepted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let client_id = identity("client");
    authorize(&ak, &client_id);
    let server_cfg = server_config(&server_id, ak).expect("server config");
    let old = identity("old server key").fingerprint();
    let (client_cfg, _) =
        client_config(&client_id, [old, server_id.fingerprint()]).expect("client config");
    let (s, c) = handshake(server_cfg.clone(), client_cfg).await;
    s.expect("server handshake");
    c.expect("client handshake");
    let other = identity("another").fingerprint();
    let (client_cfg, _) = client_config(&client_id, [old, other]).expect("client config");
    let (_, c) = handshake(server_cfg, client_cfg).await;
    let msg = client_error(c).await.to_string();
    assert!(msg.contains("ServerKeyMismatch"), "client error: {msg}");
}
