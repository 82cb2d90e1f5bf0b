//! Flow control (§7): output and stdin windows, their grants, and the
//! stdin budget shared between connections.

use super::*;

#[tokio::test]
async fn stdin_beyond_the_window_is_a_violation() {
    let mut peer = connect(ServerConfig {
        stdin_window: 16,
        ..config()
    })
    .await;
    peer.send(exec(1, 1024, "cat >/dev/null")).await;
    let first = peer.next().await.expect("a frame");
    assert_eq!(
        first,
        Frame::WindowAdjust {
            channel: 1,
            increment: 16
        }
    );
    peer.send(Frame::Stdin {
        channel: 1,
        data: Bytes::from(vec![b'x'; 17]),
    })
    .await;
    let (kind, message) = peer.closed_with_error().await;
    assert_eq!(kind, ErrorKind::ProtocolViolation, "{message}");
    assert!(message.contains("window"), "{message}");
    peer.close_and_wait().await;
}

#[tokio::test]
async fn a_one_byte_window_still_delivers_all_output() {
    let mut peer = connect(config()).await;
    // Both streams, stderr first and alone for a while: they share the one
    // window, so an idle stream must not hold the credit the other needs.
    peer.send(exec(
        1,
        1,
        "printf 'to stderr' >&2; sleep 0.1; printf 'to stdout'; printf ' and back' >&2",
    ))
    .await;
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let mut others = Vec::new();
    let outcome = peer.run_to_exit(1, &mut others).await;
    assert_eq!(outcome.stdout, b"to stdout");
    assert_eq!(outcome.stderr, b"to stderr and back");
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
    peer.close_and_wait().await;
}

/// Stdout and stderr share the output window (§7): the idle stdout must not
/// hold the credit stderr needs.
#[tokio::test]
async fn stderr_only_output_with_a_small_window_is_delivered() {
    let mut peer = connect(config()).await;
    peer.send(exec(1, 4096, "head -c 100000 /dev/zero >&2"))
        .await;
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let mut others = Vec::new();
    let outcome = peer.run_to_exit(1, &mut others).await;
    assert_eq!(outcome.stderr.len(), 100_000);
    assert!(outcome.stdout.is_empty());
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
    peer.close_and_wait().await;
}

/// Typing: one-byte Stdin frames, each echoed back before the next is sent,
/// as keystrokes in a terminal session are. The server tops the stdin window
/// up only once half of it is used (as ssh does), so the keystrokes cost no
/// WindowAdjust each: one frame on the wire per key each way, not two.
#[tokio::test]
async fn typed_bytes_cost_no_window_adjust_each() {
    let mut peer = connect(config()).await;
    peer.send(exec(1, 1024 * 1024, "cat")).await;
    let mut grants = Vec::new();
    let mut granted = 0u64;
    const KEYS: usize = 50;
    for key in 0..KEYS {
        // The initial grant may come before or after the first echo.
        while granted == 0 {
            match peer.next().await.expect("the initial grant") {
                Frame::WindowAdjust {
                    channel: 1,
                    increment,
                } => {
                    granted += u64::from(increment);
                    grants.push(increment);
                }
                other => panic!("unexpected before the grant: {other:?}"),
            }
        }
        peer.send(Frame::Stdin {
            channel: 1,
            data: Bytes::from_static(b"k"),
        })
        .await;
        let echoed = loop {
            match peer.next().await.expect("the echo") {
                Frame::Stdout { channel: 1, data } => break data,
                Frame::WindowAdjust {
                    channel: 1,
                    increment,
                } => grants.push(increment),
                other => panic!("unexpected while typing: {other:?}"),
            }
        };
        assert_eq!(&echoed[..], b"k", "key {key}");
        peer.grant(1, echoed.len()).await;
    }
    assert_eq!(
        grants.len(),
        1,
        "grants while typing {KEYS} keys: {grants:?}"
    );
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let outcome = peer.run_to_exit(1, &mut Vec::new()).await;
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
    peer.close_and_wait().await;
}

/// A window used up by more than half is topped up again, in a grant that
/// restores the whole window, so a client that sends all it may keeps going.
#[tokio::test]
async fn a_half_used_stdin_window_is_topped_up_in_full() {
    let mut peer = connect(ServerConfig {
        stdin_window: 16,
        ..config()
    })
    .await;
    peer.send(exec(1, 1024, "cat")).await;
    let mut sent = 0usize;
    let mut credit = 0u64;
    let mut echoed = Vec::new();
    let mut grants = Vec::new();
    // 64 bytes through a 16-byte window: only possible with top-ups.
    while echoed.len() < 64 {
        if credit > 0 && sent < 64 {
            let len = credit.min(64 - sent as u64) as usize;
            peer.send(Frame::Stdin {
                channel: 1,
                data: Bytes::from(vec![b'x'; len]),
            })
            .await;
            sent += len;
            credit -= len as u64;
            continue;
        }
        match peer.next().await.expect("a frame") {
            Frame::WindowAdjust {
                channel: 1,
                increment,
            } => {
                credit += u64::from(increment);
                grants.push(increment);
            }
            Frame::Stdout { channel: 1, data } => {
                echoed.extend_from_slice(&data);
                peer.grant(1, data.len()).await;
            }
            other => panic!("unexpected: {other:?}"),
        }
    }
    assert_eq!(echoed, vec![b'x'; 64]);
    // The first grant is the window; each top-up restores at least half.
    assert_eq!(grants.first(), Some(&16), "{grants:?}");
    assert!(grants.iter().all(|&g| g >= 8), "{grants:?}");
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let outcome = peer.run_to_exit(1, &mut Vec::new()).await;
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
    peer.close_and_wait().await;
}

/// A connection to an in-process [`rsh_server::Server`] on a Unix socket,
/// greeted as version 1: connections of one server share its stdin budget,
/// which `serve_connection` gives each connection on its own.
async fn connect_unix(path: &std::path::Path) -> Framed<tokio::net::UnixStream, Codec> {
    let mut stream = tokio::time::timeout(STEP, tokio::net::UnixStream::connect(path))
        .await
        .expect("connect in time")
        .expect("connect to the server's socket");
    stream
        .write_all(&Hello::only(1).encode())
        .await
        .expect("send the greeting");
    let mut hello = [0u8; HELLO_LEN];
    tokio::time::timeout(STEP, stream.read_exact(&mut hello))
        .await
        .expect("the server greets in time")
        .expect("read the server's greeting");
    Framed::new(stream, Codec::new().with_version(1))
}

async fn next_frame<S>(frames: &mut Framed<S, Codec>) -> Frame
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(STEP, frames.next())
        .await
        .expect("a frame in time")
    {
        Some(Ok(frame)) => frame,
        other => panic!("the connection ended: {other:?}"),
    }
}

/// §7: one connection whose 64 commands never read their stdin cannot hold
/// the whole stdin budget: a command on another connection still gets a
/// window at once, and its stdin through.
#[tokio::test]
async fn idle_commands_on_one_connection_do_not_starve_another_of_stdin_window() {
    const BUDGET: u64 = 64 * 1024;
    let dir = tempfile::tempdir().expect("a temp dir");
    let socket = dir.path().join("rsh.sock");
    let listener = rsh_server::Listener::bind(&rsh_config::Endpoint::Unix(socket.clone()), None)
        .expect("bind the socket");
    let shutdown = CancellationToken::new();
    let _cancel = CancelOnDrop(shutdown.clone());
    let server = tokio::spawn(
        rsh_server::Server::new(
            ServerConfig {
                stdin_budget: BUDGET,
                ..config()
            },
            vec![listener],
        )
        .run(shutdown.clone()),
    );

    let mut hog = connect_unix(&socket).await;
    for channel in 1..=64 {
        let frame = exec(channel, 1024, "exec sleep 1000");
        tokio::time::timeout(STEP, hog.send(frame))
            .await
            .expect("send in time")
            .expect("send an Exec");
    }
    // The idle commands have taken what they can.
    let mut granted = 0u64;
    while granted < BUDGET {
        match next_frame(&mut hog).await {
            Frame::WindowAdjust { increment, .. } => granted += u64::from(increment),
            other => panic!("unexpected on the idle connection: {other:?}"),
        }
    }

    let mut other = connect_unix(&socket).await;
    tokio::time::timeout(STEP, other.send(exec(1, 1024, "cat")))
        .await
        .expect("send in time")
        .expect("send the Exec");
    let window = match next_frame(&mut other).await {
        Frame::WindowAdjust {
            channel: 1,
            increment,
        } => increment,
        other => panic!("expected a stdin window, got {other:?}"),
    };
    assert!(window >= 6, "window {window}");
    for frame in [
        Frame::Stdin {
            channel: 1,
            data: Bytes::from_static(b"hello\n"),
        },
        Frame::StdinEnd { channel: 1 },
    ] {
        tokio::time::timeout(STEP, other.send(frame))
            .await
            .expect("send in time")
            .expect("send stdin");
    }
    let mut stdout = Vec::new();
    let status = loop {
        match next_frame(&mut other).await {
            Frame::Stdout { channel: 1, data } => stdout.extend_from_slice(&data),
            Frame::WindowAdjust { channel: 1, .. } => {}
            Frame::Exit { channel: 1, status } => break status,
            other => panic!("unexpected: {other:?}"),
        }
    };
    assert_eq!(stdout, b"hello\n");
    assert_eq!(status, ExitStatus::Code(0));
    drop(hog);
    drop(other);
    shutdown.cancel();
    tokio::time::timeout(STEP, server)
        .await
        .expect("the server ends in time")
        .expect("the server task did not panic");
}
