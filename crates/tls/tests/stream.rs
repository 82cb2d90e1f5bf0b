//! rsh-tls's own record layer (`rsh_tls::stream`) against itself and
//! against rustls's buffered connections (tokio-rustls), over in-memory
//! pipes: bytes arrive exactly as sent both ways, in any write pattern,
//! across key updates either side starts, and the end of the stream and a
//! refused client key are reported as before.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use rsh_tls::rustls::pki_types::ServerName;
use rsh_tls::rustls::{self, ClientConfig, ServerConfig};
use rsh_tls::stream::{accept, connect, TlsStream};
use rsh_tls::{client_config, AuthorizedKeysFile, Identity};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

const LIMIT: Duration = Duration::from_secs(30);

/// Server and client configs; the client's key is authorized if `trusted`.
async fn configs(trusted: bool) -> (Arc<ServerConfig>, Arc<ClientConfig>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_id = Identity::generate("server").expect("server identity");
    let client_id = Identity::generate("client").expect("client identity");
    let path = dir.path().join("authorized_keys");
    let listed = if trusted {
        client_id.authorized_keys_line()
    } else {
        Identity::generate("someone else")
            .expect("identity")
            .authorized_keys_line()
    };
    std::fs::write(&path, format!("{listed}\n")).expect("write authorized_keys");
    let keys = AuthorizedKeysFile::new(path);
    let _ = keys.refresh().await;
    let server = rsh_tls::server_config(&server_id, keys).expect("server config");
    let (client, _) = client_config(&client_id, Some(server_id.fingerprint())).expect("client");
    (server, client, dir)
}

fn name() -> ServerName<'static> {
    ServerName::try_from("rsh.invalid").expect("server name")
}

/// Both ends of this crate's stream over a duplex pipe.
async fn ours_both() -> (TlsStream<DuplexStream>, TlsStream<DuplexStream>) {
    let (server, client, _dir) = configs(true).await;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (s, c) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            accept(server, server_io),
            connect(client, name(), client_io)
        )
    })
    .await
    .expect("handshake timed out");
    (s.expect("server handshake"), c.expect("client handshake"))
}

/// Deterministic bytes that differ at every offset of a long stream.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ (i >> 8) as u8 ^ seed)
        .collect()
}

/// Writes `data` in pieces of the given sizes (in turn), some of them as
/// vectored writes of three slices, then flushes.
async fn write_in_pieces<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8], sizes: &[usize]) {
    let mut at = 0;
    let mut turn = 0;
    while at < data.len() {
        let size = sizes[turn % sizes.len()].clamp(1, data.len() - at);
        let piece = &data[at..at + size];
        if turn % 3 == 0 && piece.len() >= 3 {
            let third = piece.len() / 3;
            let slices = [
                IoSlice::new(&piece[..third]),
                IoSlice::new(&piece[third..2 * third]),
                IoSlice::new(&piece[2 * third..]),
            ];
            let n = w.write_vectored(&slices).await.expect("write_vectored");
            at += n;
        } else {
            w.write_all(piece).await.expect("write");
            at += size;
        }
        turn += 1;
    }
    w.flush().await.expect("flush");
}

async fn read_exactly<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    r.read_exact(&mut got).await.expect("read");
    got
}

/// Sends `len` bytes each way at once and checks them.
async fn exchange<A, B>(a: &mut A, b: &mut B, len: usize, sizes: &[usize])
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let to_b = pattern(len, 1);
    let to_a = pattern(len, 2);
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let (got_b, got_a, (), ()) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            read_exactly(&mut br, len),
            read_exactly(&mut ar, len),
            write_in_pieces(&mut aw, &to_b, sizes),
            write_in_pieces(&mut bw, &to_a, sizes),
        )
    })
    .await
    .expect("exchange timed out");
    assert!(got_b == to_b, "bytes a -> b differ");
    assert!(got_a == to_a, "bytes b -> a differ");
}

#[tokio::test]
async fn bytes_arrive_exactly_both_ways_in_any_write_pattern() {
    let (mut server, mut client) = ours_both().await;
    for sizes in [
        &[1usize][..],
        &[7, 16 * 1024, 16 * 1024 + 1, 3],
        &[300_000, 9, 256 * 1024 + 9],
        &[1024 * 1024],
    ] {
        exchange(&mut server, &mut client, 2 * 1024 * 1024 + 17, sizes).await;
    }
}

#[tokio::test]
async fn keys_are_replaced_by_either_side_and_data_goes_on() {
    let (mut server, mut client) = ours_both().await;
    // A new key every few records, each way: many KeyUpdates in flight.
    server.set_rekey_after(3);
    client.set_rekey_after(5);
    exchange(&mut server, &mut client, 1024 * 1024, &[10_000, 40_000, 1]).await;
}

#[tokio::test]
async fn shutdown_is_the_end_of_the_stream_for_the_peer() {
    let (mut server, mut client) = ours_both().await;
    client.write_all(b"last words").await.expect("write");
    client.shutdown().await.expect("shutdown");
    let mut got = Vec::new();
    tokio::time::timeout(LIMIT, server.read_to_end(&mut got))
        .await
        .expect("read timed out")
        .expect("clean end of stream");
    assert_eq!(got, b"last words");
}

#[tokio::test]
async fn a_refused_client_reads_the_access_denied_alert() {
    let (server, client, _dir) = configs(false).await;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let (s, c) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            accept(server, server_io),
            connect(client, name(), client_io)
        )
    })
    .await
    .expect("handshake timed out");
    assert!(s.is_err(), "the server must refuse the key");
    // TLS 1.3: the client's side was done before the server judged its key.
    let err = match c {
        Err(failed) => failed.error,
        Ok(mut stream) => {
            let mut buf = [0u8; 8];
            tokio::time::timeout(LIMIT, stream.read(&mut buf))
                .await
                .expect("read timed out")
                .expect_err("a refused client reads an error")
        }
    };
    let alert = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    assert!(
        matches!(
            alert,
            Some(rustls::Error::AlertReceived(
                rustls::AlertDescription::AccessDenied
                    | rustls::AlertDescription::CertificateRequired
            ))
        ),
        "got {err:?}"
    );
}

#[tokio::test]
async fn our_client_and_a_rustls_server_interoperate_across_key_updates() {
    let (server, client, _dir) = configs(true).await;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let acceptor = tokio_rustls::TlsAcceptor::from(server);
    let (s, c) = tokio::time::timeout(LIMIT, async {
        tokio::join!(
            acceptor.accept(server_io),
            connect(client, name(), client_io)
        )
    })
    .await
    .expect("handshake timed out");
    let (mut theirs, mut ours) = (s.expect("rustls server"), c.expect("our client"));
    exchange(&mut theirs, &mut ours, 300_000, &[5000, 70_000]).await;
    // rustls asks for our key to change too.
    theirs
        .get_mut()
        .1
        .refresh_traffic_keys()
        .expect("key update");
    exchange(&mut theirs, &mut ours, 300_000, &[16 * 1024, 1]).await;
    ours.set_rekey_after(2);
    exchange(&mut theirs, &mut ours, 300_000, &[33_000]).await;
    ours.shutdown().await.expect("shutdown");
    let mut rest = Vec::new();
    tokio::time::timeout(LIMIT, theirs.read_to_end(&mut rest))
        .await
        .expect("read timed out")
        .expect("rustls sees a clean close_notify");
    assert!(rest.is_empty());
}

#[tokio::test]
async fn a_rustls_client_and_our_server_interoperate_across_key_updates() {
    let (server, client, _dir) = configs(true).await;
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let connector = tokio_rustls::TlsConnector::from(client);
    let (s, c) = tokio::time::timeout(LIMIT, async {
        tokio::join!(accept(server, server_io), async {
            // As an rsh client does: data right after its Finished, so it
            // may reach the server in the same read.
            let mut stream = connector.connect(name(), client_io).await?;
            stream.write_all(b"greeting").await?;
            stream.flush().await?;
            Ok::<_, io::Error>(stream)
        })
    })
    .await
    .expect("handshake timed out");
    let (mut ours, mut theirs) = (s.expect("our server"), c.expect("rustls client"));
    assert_eq!(read_exactly(&mut ours, 8).await, b"greeting");
    exchange(&mut ours, &mut theirs, 300_000, &[100, 200_000]).await;
    theirs
        .get_mut()
        .1
        .refresh_traffic_keys()
        .expect("key update");
    ours.set_rekey_after(3);
    exchange(&mut ours, &mut theirs, 300_000, &[16 * 1024 - 1]).await;
}
