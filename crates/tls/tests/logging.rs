//! The server's log lines for malformed authorized_keys lines and refused
//! keys. Kept in a test binary of its own: tracing's per-callsite interest
//! cache is process-wide, so a thread-local subscriber can miss events while
//! other tests run in parallel without one.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rsh_tls::rustls::pki_types::ServerName;
use rsh_tls::rustls::{ClientConfig, ServerConfig};
use rsh_tls::{client_config, AuthorizedKeysFile, Identity};
use tokio::io::{AsyncReadExt, DuplexStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

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

async fn handshake(
    server: Server,
    client: Arc<ClientConfig>,
) -> (
    io::Result<server::TlsStream<DuplexStream>>,
    io::Result<client::TlsStream<DuplexStream>>,
) {
    let _ = server.keys.refresh().await;
    let server = server.config;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let name = ServerName::try_from("ignored.invalid").expect("server name");
    let both = async {
        tokio::join!(
            TlsAcceptor::from(server).accept(server_io),
            TlsConnector::from(client).connect(name, client_io)
        )
    };
    tokio::time::timeout(Duration::from_secs(20), both)
        .await
        .expect("handshake timed out")
}

async fn client_error(client: io::Result<client::TlsStream<DuplexStream>>) {
    if let Ok(mut stream) = client {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf))
            .await
            .expect("read timed out");
        assert!(read.is_err(), "refused client could read");
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

/// Collects what a tracing subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(Arc<std::sync::Mutex<Vec<u8>>>);

impl io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

#[tokio::test]
async fn refusals_and_malformed_lines_are_logged() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("authorized_keys");
    let server_id = identity("server");
    let client_id = identity("client");
    let stranger = identity("stranger");
    std::fs::write(&ak, "# keys\nSHA256:garbage bob\n").expect("write");
    authorize(&ak, &client_id);
    let server_cfg = server_config(&server_id, ak.clone()).expect("server config");
    let (client_cfg, _) = client_config(&client_id, None).expect("client config");
    let (stranger_cfg, _) = client_config(&stranger, None).expect("stranger config");

    for _ in 0..2 {
        let (s, c) = handshake(server_cfg.clone(), client_cfg.clone()).await;
        s.expect("server handshake");
        c.expect("client handshake");
    }
    let (s, c) = handshake(server_cfg.clone(), stranger_cfg).await;
    assert!(s.is_err());
    client_error(c).await;

    let text = logs.text();
    println!("{text}");
    // Each version of the file is complained about once.
    assert_eq!(
        text.matches("skipping malformed authorized_keys line")
            .count(),
        1,
        "{text}"
    );
    assert!(text.contains("line=2"), "{text}");
    assert!(text.contains(&ak.display().to_string()), "{text}");
    assert!(text.contains("client key not in authorized_keys"), "{text}");
    assert!(
        text.contains(&format!("fingerprint={}", stranger.fingerprint())),
        "{text}"
    );
}
