//! How connections and commands end (§2.2, §4.2, §10): handshake and
//! frame timeouts, the shutdown grace and the version-3 shutdown notice.

use super::*;

/// A peer that connects and never greets is dropped after the handshake
/// timeout, with time paused so the test does not wait for it.
#[tokio::test(start_paused = true)]
async fn a_silent_peer_is_dropped_after_the_handshake_timeout() {
    let (mut client, server_end) = tokio::io::duplex(PIPE);
    let shutdown = CancellationToken::new();
    let _cancel = CancelOnDrop(shutdown.clone());
    let started = tokio::time::Instant::now();
    let server = tokio::spawn(serve_connection(
        server_end,
        "silent",
        Arc::new(ServerConfig {
            handshake_timeout: Duration::from_secs(10),
            ..config()
        }),
        shutdown,
    ));
    // The server greets first, then waits for ours, which never comes.
    let mut hello = [0u8; HELLO_LEN];
    client
        .read_exact(&mut hello)
        .await
        .expect("server greeting");
    let mut rest = Vec::new();
    // Virtual time: a server that never timed out would fail here at once,
    // not hang the test.
    tokio::time::timeout(Duration::from_secs(3600), client.read_to_end(&mut rest))
        .await
        .expect("the server closes the connection after the timeout")
        .expect("read to the end");
    assert!(rest.is_empty(), "nothing after the greeting: {rest:?}");
    server.await.expect("the server task did not panic");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10),
        "dropped after {waited:?}, before the timeout"
    );
}

/// A frame whose first bytes arrive and whose rest never does ends the
/// connection after the frame timeout, with an Error saying why; time is
/// paused, so the test does not wait for it.
#[tokio::test(start_paused = true)]
async fn a_half_sent_frame_ends_the_connection_after_the_frame_timeout() {
    let mut peer = connect(ServerConfig {
        // Under STEP, the bound on each of the test's own reads.
        frame_timeout: Duration::from_secs(10),
        ..config()
    })
    .await;
    let started = tokio::time::Instant::now();
    // Three bytes of a frame header, then nothing.
    peer.frames
        .get_mut()
        .write_all(&[0, 0, 0])
        .await
        .expect("a partial header");
    let (kind, message) = peer.closed_with_error().await;
    assert_eq!(kind, ErrorKind::ProtocolViolation, "{message}");
    assert!(message.contains("half-received"), "{message}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10),
        "closed after {waited:?}, before the frame timeout"
    );
    tokio::time::timeout(STEP, peer.server)
        .await
        .expect("the connection ends")
        .expect("the server task did not panic");
}

/// Shutdown: a command still running when the shutdown grace is over is
/// ended and its end reported, then the connection closes. Time is paused:
/// the command is a real process, so paused time only makes the grace run
/// out as soon as the runtime idles, which is what this test wants (`sleep`
/// would not finish within any grace); its reads are bounded in real time
/// instead ([`on_paused_clock`]). A command that finishes within the
/// grace needs real time: see `core`'s graceful shutdown test.
#[test]
fn a_command_still_running_after_the_shutdown_grace_is_ended() {
    on_paused_clock(Duration::from_secs(120), || async {
        let mut peer = connect(ServerConfig {
            shutdown_grace: Duration::from_secs(10),
            ..config()
        })
        .await;
        peer.step = None;
        peer.send(exec(1, 64 * 1024, "echo started; exec sleep 1000"))
            .await;
        // Started: its first output is here.
        assert_eq!(&peer.first_stdout(1).await[..], b"started\n");
        let started = tokio::time::Instant::now();
        peer._shutdown.0.cancel();
        let outcome = peer.run_to_exit(1, &mut Vec::new()).await;
        assert!(
            matches!(outcome.status, Some(ExitStatus::Signal(_))),
            "{outcome:?}"
        );
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10),
            "ended after {waited:?}, within the shutdown grace"
        );
        // Nothing runs any more: the connection is drained and closed.
        assert_eq!(peer.next().await, None);
        peer.server.await.expect("the server task did not panic");
    });
}

/// Runs `echo started; exec sleep 1000` on channel 1 of a connection
/// speaking `version`, cancels the server's shutdown once it has started,
/// and returns every frame up to and including the command's Exit (its
/// window grants aside). With `probe`, an Exec on channel 2 is sent as
/// soon as the shutdown notice is read.
async fn frames_of_a_shutdown(version: u16, probe: bool) -> (Peer, Vec<Frame>) {
    let mut peer = connect_speaking(
        ServerConfig {
            shutdown_grace: Duration::from_secs(10),
            ..config()
        },
        version,
    )
    .await;
    peer.step = None;
    peer.send(exec(1, 64 * 1024, "echo started; exec sleep 1000"))
        .await;
    assert_eq!(&peer.first_stdout(1).await[..], b"started\n");
    peer._shutdown.0.cancel();
    let mut seen = Vec::new();
    loop {
        let frame = peer.next().await.expect("frames up to the command's Exit");
        match &frame {
            Frame::WindowAdjust { .. } => continue,
            Frame::Error {
                channel: CONNECTION_CHANNEL,
                ..
            } if probe => peer.send(exec(2, 1024, "true")).await,
            _ => {}
        }
        let exit = matches!(frame, Frame::Exit { channel: 1, .. });
        seen.push(frame);
        if exit {
            return (peer, seen);
        }
    }
}

/// §5.10, §10: from version 3 on, a server that begins to shut down tells
/// each connection so (an Error on channel 0, kind `ShuttingDown`) before
/// it ends any command, and goes on serving it: the notice is not fatal.
#[test]
fn a_version_3_peer_is_told_of_a_shutdown_before_its_command_is_ended() {
    on_paused_clock(Duration::from_secs(120), || async {
        let (mut peer, seen) = frames_of_a_shutdown(3, true).await;
        assert!(
            matches!(
                seen.first(),
                Some(Frame::Error {
                    channel: CONNECTION_CHANNEL,
                    kind: ErrorKind::ShuttingDown,
                    ..
                })
            ),
            "the notice comes first: {seen:?}"
        );
        // The connection went on: the Exec sent after the notice was read
        // and refused, and the running command's end was reported.
        assert!(
            seen.iter().any(|frame| matches!(
                frame,
                Frame::Error {
                    channel: 2,
                    kind: ErrorKind::ShuttingDown,
                    ..
                }
            )),
            "{seen:?}"
        );
        assert!(
            matches!(
                seen.last(),
                Some(Frame::Exit {
                    status: ExitStatus::Signal(_),
                    ..
                })
            ),
            "{seen:?}"
        );
        let notices = seen
            .iter()
            .filter(|frame| matches!(frame, Frame::Error { channel: 0, .. }))
            .count();
        assert_eq!(notices, 1, "{seen:?}");
        assert_eq!(peer.next().await, None);
        peer.server.await.expect("the server task did not panic");
    });
}

/// Versions 1 and 2 take an Error on channel 0 as the end of the
/// connection: their peers are never sent the shutdown notice.
#[test]
fn an_older_peer_is_not_sent_the_shutdown_notice() {
    for version in [1, 2] {
        on_paused_clock(Duration::from_secs(120), move || async move {
            let (mut peer, seen) = frames_of_a_shutdown(version, false).await;
            assert!(
                !seen
                    .iter()
                    .any(|frame| matches!(frame, Frame::Error { .. })),
                "version {version}: {seen:?}"
            );
            assert_eq!(peer.next().await, None, "version {version}");
            peer.server.await.expect("the server task did not panic");
        });
    }
}

/// Cancels the server's shutdown and returns once the server has seen it:
/// an Exec it reads after that is refused with `ShuttingDown`. An Exec it
/// read before (the cancellation and the frame race) starts a command,
/// which is fine: it is ended with the connection. Channel ids from `from`
/// up are used.
async fn start_shutdown(peer: &mut Peer, from: u32) {
    peer._shutdown.0.cancel();
    for channel in from..from + 32 {
        peer.send(exec(channel, 1024, "cat")).await;
        loop {
            match peer.next().await.expect("an answer to the Exec") {
                Frame::Error {
                    channel: c,
                    kind: ErrorKind::ShuttingDown,
                    ..
                } if c == channel => return,
                Frame::WindowAdjust { channel: c, .. } if c == channel => break,
                Frame::WindowAdjust { .. } => {}
                other => panic!("unexpected while shutting down: {other:?}"),
            }
        }
    }
    panic!("the server never refused an Exec with ShuttingDown");
}

/// §6, §9.1: during a shutdown an Exec on a channel still in use is a
/// protocol violation as at any other time, not a `ShuttingDown` refusal
/// (which the running command's Exit would then follow on the same id).
#[tokio::test]
async fn during_shutdown_an_exec_on_a_channel_in_use_is_still_a_violation() {
    let mut peer = connect(ServerConfig {
        // The running command outlives the test unless the connection ends.
        shutdown_grace: Duration::from_secs(600),
        ..config()
    })
    .await;
    peer.start_cat(5).await;
    start_shutdown(&mut peer, 10).await;
    peer.send(exec(5, 1024, "echo twice")).await;
    let (kind, message) = peer.closed_with_error().await;
    assert_eq!(kind, ErrorKind::ProtocolViolation, "{message}");
    assert!(message.contains("channel 5"), "{message}");
    peer.close_and_wait().await;
}

/// §6, §9.1: channel 0 is reserved, during a shutdown too.
#[tokio::test]
async fn during_shutdown_an_exec_on_channel_0_is_still_a_violation() {
    let mut peer = connect(ServerConfig {
        shutdown_grace: Duration::from_secs(600),
        ..config()
    })
    .await;
    // A running command keeps the draining connection open.
    peer.start_cat(5).await;
    start_shutdown(&mut peer, 10).await;
    peer.send(exec(0, 1024, "echo never")).await;
    let (kind, message) = peer.closed_with_error().await;
    assert_eq!(kind, ErrorKind::ProtocolViolation, "{message}");
    assert!(message.contains("channel 0"), "{message}");
    peer.close_and_wait().await;
}

/// A command ended by its timeout may still write as it goes (a TERM
/// trap's last words): that output reaches the client before the Exit, and
/// the trap is not killed by a SIGPIPE from pipes the server stopped
/// reading.
#[tokio::test]
async fn a_timed_out_command_s_last_words_reach_the_client() {
    let mut peer = connect(config()).await;
    peer.send(Frame::Exec(Exec {
        channel: 1,
        window: 64 * 1024,
        command: b"trap 'echo last words >&2; exit 9' TERM; sleep 100 & wait".to_vec(),
        timeout: Some(Duration::from_millis(300)),
        ..Exec::default()
    }))
    .await;
    let outcome = peer.run_to_exit(1, &mut Vec::new()).await;
    assert_eq!(outcome.status, Some(ExitStatus::TimedOut), "{outcome:?}");
    assert_eq!(outcome.stderr, b"last words\n", "{outcome:?}");
    peer.close_and_wait().await;
}

/// The same at a shutdown: the command's cleanup output arrives, and the
/// status is the shell's own exit, not a SIGPIPE.
#[tokio::test]
async fn a_command_s_last_words_at_a_shutdown_reach_the_client() {
    let mut peer = connect(ServerConfig {
        shutdown_grace: Duration::from_millis(200),
        ..config()
    })
    .await;
    peer.send(exec(
        1,
        64 * 1024,
        "trap 'echo last words >&2; exit 9' TERM; echo started; sleep 100 & wait",
    ))
    .await;
    peer.first_stdout(1).await;
    peer._shutdown.0.cancel();
    let outcome = peer.run_to_exit(1, &mut Vec::new()).await;
    assert_eq!(outcome.stderr, b"last words\n", "{outcome:?}");
    assert_eq!(outcome.status, Some(ExitStatus::Code(9)), "{outcome:?}");
}
