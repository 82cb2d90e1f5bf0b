//! rsh-tls's own record layer (`rsh_tls::stream`) against itself and
//! against rustls's buffered connections (tokio-rustls), over in-memory
//! pipes: bytes arrive exactly as sent both ways, in any write pattern,
//! across key updates either side starts, and the end of the stream and a
//! refused client key are reported as before. Records that break RFC 8446's
//! rules end the stream for good and the peer reads the alert TLS names for
//! them.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::time::Duration;

use rsh_tls::rustls::pki_types::ServerName;
use rsh_tls::rustls::{self, ClientConfig, ServerConfig};
use rsh_tls::stream::{accept, connect, TlsStream};
use rsh_tls::{client_config, AuthorizedKeysFile, Identity};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};

/// A guard against a hang, not a measure of speed: nothing here takes more
/// than a fraction of it even in a debug build on a loaded machine.
const LIMIT: Duration = Duration::from_secs(120);

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
    // One byte at a time costs a record per byte: enough of them to cross
    // several full records' worth and the start buffer, not megabytes.
    exchange(&mut server, &mut client, 64 * 1024 + 17, &[1]).await;
    for sizes in [
        &[7usize, 16 * 1024, 16 * 1024 + 1, 3][..],
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

// Records that break the rules, sent by a peer that holds the keys: a stream
// of ours with fixed secrets stands in for it.

const CLIENT_SECRET: [u8; 32] = [0x11; 32];
const SERVER_SECRET: [u8; 32] = [0x22; 32];
const APPLICATION_DATA: u8 = 23;
const HANDSHAKE: u8 = 22;
const ALERT: u8 = 21;

/// Our stream on `side` and the peer that talks to it, over a pipe.
fn fixed_pair(side: rustls::Side) -> (TlsStream<DuplexStream>, TlsStream<DuplexStream>) {
    let (ours_io, peer_io) = tokio::io::duplex(256 * 1024);
    let (ours_tx, ours_rx) = match side {
        rustls::Side::Server => (SERVER_SECRET, CLIENT_SECRET),
        rustls::Side::Client => (CLIENT_SECRET, SERVER_SECRET),
    };
    let peer_side = match side {
        rustls::Side::Server => rustls::Side::Client,
        rustls::Side::Client => rustls::Side::Server,
    };
    let ours = TlsStream::with_fixed_secrets(ours_io, side, ours_tx, ours_rx).expect("ours");
    let peer = TlsStream::with_fixed_secrets(peer_io, peer_side, ours_rx, ours_tx).expect("peer");
    (ours, peer)
}

/// A TLSInnerPlaintext: content, its type, `padding` zeros.
fn inner(content: &[u8], content_type: u8, padding: usize) -> Vec<u8> {
    let mut inner = content.to_vec();
    inner.push(content_type);
    inner.resize(inner.len() + padding, 0);
    inner
}

fn key_update(request: bool) -> Vec<u8> {
    inner(&[24, 0, 0, 1, u8::from(request)], HANDSHAKE, 0)
}

/// The rustls error inside an I/O error from a TLS stream.
fn tls_error(err: &io::Error) -> Option<&rustls::Error> {
    err.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// The peer sends `records` (then data and a clean end it must never get
/// to); our stream refuses them for good, and the peer reads `alert`.
async fn refused_with(
    mut ours: TlsStream<DuplexStream>,
    mut peer: TlsStream<DuplexStream>,
    records: Vec<u8>,
    alert: rustls::AlertDescription,
) {
    let after = peer.seal_inner_plaintext(&inner(b"after", APPLICATION_DATA, 0));
    let io = peer.get_mut();
    io.write_all(&records).await.expect("send records");
    io.write_all(&after).await.expect("send data");
    let mut got = Vec::new();
    let err = tokio::time::timeout(LIMIT, ours.read_to_end(&mut got))
        .await
        .expect("read timed out")
        .expect_err("the records are refused");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err:?}");
    assert!(got.is_empty(), "data after a refused record was read");
    // Fatal: the stream stays failed, reading and writing.
    let mut buf = [0u8; 16];
    ours.read(&mut buf).await.expect_err("still refused");
    ours.write_all(b"more")
        .await
        .expect_err("no writing after a fatal alert");
    let _ = ours.shutdown().await;
    drop(ours);
    let err = tokio::time::timeout(LIMIT, peer.read(&mut buf))
        .await
        .expect("peer read timed out")
        .expect_err("the peer reads an alert");
    assert!(
        matches!(tls_error(&err), Some(rustls::Error::AlertReceived(got)) if *got == alert),
        "expected the peer to read {alert:?}, got {err:?}"
    );
}

/// The peer sends `records`, then data and close_notify: all of it arrives.
async fn accepted(
    mut ours: TlsStream<DuplexStream>,
    mut peer: TlsStream<DuplexStream>,
    records: Vec<u8>,
) {
    let after = peer.seal_inner_plaintext(&inner(b"after", APPLICATION_DATA, 0));
    let close = peer.seal_inner_plaintext(&inner(&[1, 0], ALERT, 0));
    let io = peer.get_mut();
    let send = async {
        io.write_all(&records).await?;
        io.write_all(&after).await?;
        io.write_all(&close).await
    };
    let mut got = Vec::new();
    let (sent, read) = tokio::time::timeout(LIMIT, async {
        tokio::join!(send, ours.read_to_end(&mut got))
    })
    .await
    .expect("timed out");
    sent.expect("send");
    read.expect("the records are accepted");
    assert!(got.ends_with(b"after"), "got {} bytes", got.len());
}

#[tokio::test]
async fn an_inner_plaintext_of_the_largest_size_is_accepted() {
    let (ours, mut peer) = fixed_pair(rustls::Side::Server);
    // 2^14 bytes of content and the content type: 2^14 + 1.
    let record = peer.seal_inner_plaintext(&inner(&[7; 16 * 1024], APPLICATION_DATA, 0));
    accepted(ours, peer, record).await;
}

#[tokio::test]
async fn an_inner_plaintext_padded_past_the_limit_is_a_record_overflow() {
    for (content, padding) in [(16 * 1024, 1), (1, 16 * 1024), (1, 16 * 1024 + 238)] {
        let (ours, mut peer) = fixed_pair(rustls::Side::Server);
        let record =
            peer.seal_inner_plaintext(&inner(&vec![7; content], APPLICATION_DATA, padding));
        refused_with(ours, peer, record, rustls::AlertDescription::RecordOverflow).await;
    }
}

#[tokio::test]
async fn a_ciphertext_longer_than_the_limit_is_a_record_overflow() {
    let (ours, peer) = fixed_pair(rustls::Side::Server);
    // 2^14 + 257 bytes announced: refused before they arrive.
    let len = (16 * 1024 + 257u16).to_be_bytes();
    let header = vec![APPLICATION_DATA, 3, 3, len[0], len[1]];
    refused_with(ours, peer, header, rustls::AlertDescription::RecordOverflow).await;
}

#[tokio::test]
async fn a_record_that_does_not_decrypt_is_a_bad_record_mac() {
    let (ours, mut peer) = fixed_pair(rustls::Side::Server);
    let mut record = peer.seal_inner_plaintext(&inner(b"hello", APPLICATION_DATA, 0));
    record[7] ^= 0x40;
    refused_with(ours, peer, record, rustls::AlertDescription::BadRecordMac).await;
}

#[tokio::test]
async fn a_zero_length_handshake_fragment_is_refused() {
    let (ours, mut peer) = fixed_pair(rustls::Side::Server);
    let mut records = Vec::new();
    for _ in 0..3 {
        records.extend(peer.seal_inner_plaintext(&inner(&[], HANDSHAKE, 0)));
    }
    refused_with(ours, peer, records, rustls::AlertDescription::DecodeError).await;
}

#[tokio::test]
async fn a_client_that_sends_a_new_session_ticket_is_refused() {
    let (ours, mut peer) = fixed_pair(rustls::Side::Server);
    let ticket = new_session_ticket();
    let record = peer.seal_inner_plaintext(&inner(&ticket, HANDSHAKE, 0));
    refused_with(
        ours,
        peer,
        record,
        rustls::AlertDescription::UnexpectedMessage,
    )
    .await;
}

/// A NewSessionTicket message of a few hundred bytes.
fn new_session_ticket() -> Vec<u8> {
    let ticket = [0x5a; 300];
    let mut body = Vec::new();
    body.extend_from_slice(&7200u32.to_be_bytes()); // lifetime
    body.extend_from_slice(&[1, 2, 3, 4]); // age_add
    body.extend_from_slice(&[4, 9, 9, 9, 9]); // nonce
    body.extend_from_slice(&(ticket.len() as u16).to_be_bytes());
    body.extend_from_slice(&ticket);
    body.extend_from_slice(&[0, 0]); // extensions
    let len = (body.len() as u32).to_be_bytes();
    let mut message = vec![4, len[1], len[2], len[3]];
    message.extend(body);
    message
}

#[tokio::test]
async fn a_new_session_ticket_split_over_records_reaches_the_client_whole() {
    let (ours, mut peer) = fixed_pair(rustls::Side::Client);
    let ticket = new_session_ticket();
    let mut records = Vec::new();
    // Cut in the header, in the body, and a second whole ticket after it.
    records.extend(peer.seal_inner_plaintext(&inner(&ticket[..2], HANDSHAKE, 0)));
    records.extend(peer.seal_inner_plaintext(&inner(&ticket[2..100], HANDSHAKE, 3)));
    let mut rest = ticket[100..].to_vec();
    rest.extend_from_slice(&ticket);
    records.extend(peer.seal_inner_plaintext(&inner(&rest, HANDSHAKE, 0)));
    accepted(ours, peer, records).await;
}

#[tokio::test]
async fn key_updates_are_capped_between_data_as_rustls_caps_them() {
    // 32 in a row are taken, and data starts the count again.
    let (ours, mut peer) = fixed_pair(rustls::Side::Server);
    let mut records = Vec::new();
    for round in 0..3 {
        for _ in 0..32 {
            records.extend(peer.seal_inner_plaintext(&key_update(round == 1)));
            peer.next_tx_key().expect("key");
        }
        records.extend(peer.seal_inner_plaintext(&inner(b"x", APPLICATION_DATA, 0)));
    }
    accepted(ours, peer, records).await;

    // The 33rd in a row is refused.
    let (ours, mut peer) = fixed_pair(rustls::Side::Server);
    let mut records = Vec::new();
    for _ in 0..33 {
        records.extend(peer.seal_inner_plaintext(&key_update(false)));
        peer.next_tx_key().expect("key");
    }
    refused_with(
        ours,
        peer,
        records,
        rustls::AlertDescription::UnexpectedMessage,
    )
    .await;
}

#[tokio::test]
async fn records_of_the_wrong_kind_are_unexpected_messages() {
    for content in [
        inner(b"data", 99, 0),               // no such content type
        vec![0; 3],                          // padding only: no content type
        inner(&[20, 0, 0, 0], HANDSHAKE, 0), // Finished after the handshake
    ] {
        let (ours, mut peer) = fixed_pair(rustls::Side::Server);
        let record = peer.seal_inner_plaintext(&content);
        refused_with(
            ours,
            peer,
            record,
            rustls::AlertDescription::UnexpectedMessage,
        )
        .await;
    }
}

#[tokio::test]
async fn a_malformed_alert_is_a_decode_error() {
    let (ours, mut peer) = fixed_pair(rustls::Side::Server);
    let record = peer.seal_inner_plaintext(&inner(&[2, 40, 0], ALERT, 0));
    refused_with(ours, peer, record, rustls::AlertDescription::DecodeError).await;
}

/// A rustls client reads the alert our server answers a broken record with.
#[tokio::test]
async fn a_rustls_client_reads_the_alert_for_a_broken_record() {
    let oversized = (16 * 1024 + 300u16).to_be_bytes();
    for (raw, alert) in [
        (
            vec![
                APPLICATION_DATA,
                3,
                3,
                0,
                20,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                11,
                12,
                13,
                14,
                15,
                16,
                17,
                18,
                19,
                20,
            ],
            rustls::AlertDescription::BadRecordMac,
        ),
        (
            vec![APPLICATION_DATA, 3, 3, oversized[0], oversized[1]],
            rustls::AlertDescription::RecordOverflow,
        ),
        (
            vec![HANDSHAKE, 3, 3, 0, 4, 24, 0, 0, 0],
            rustls::AlertDescription::UnexpectedMessage,
        ),
    ] {
        let (server, client, _dir) = configs(true).await;
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let connector = tokio_rustls::TlsConnector::from(client);
        let (s, c) = tokio::time::timeout(LIMIT, async {
            tokio::join!(
                accept(server, server_io),
                connector.connect(name(), client_io)
            )
        })
        .await
        .expect("handshake timed out");
        let (mut ours, mut theirs) = (s.expect("our server"), c.expect("rustls client"));
        theirs.get_mut().0.write_all(&raw).await.expect("send");
        let mut buf = [0u8; 16];
        ours.read(&mut buf).await.expect_err("refused");
        drop(ours);
        let err = tokio::time::timeout(LIMIT, theirs.read(&mut buf))
            .await
            .expect("read timed out")
            .expect_err("rustls reads an alert");
        assert!(
            matches!(tls_error(&err), Some(rustls::Error::AlertReceived(got)) if *got == alert),
            "expected {alert:?}, got {err:?}"
        );
    }
}
