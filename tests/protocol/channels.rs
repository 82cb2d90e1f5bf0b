//! Channels (§6, §9): Execs and their refusals, violations, frames for
//! unknown channels, pty sessions and login shells.

use super::*;

#[tokio::test]
async fn v1_exec_round_trip() {
    let mut peer = connect(config()).await;
    peer.send(exec(
        1,
        1 << 20,
        "read line; echo \"out:$line\"; echo err >&2; exit 3",
    ))
    .await;
    let mut others = Vec::new();
    // Stdin only once the server granted a window (§6.1).
    let first = peer.next().await.expect("a frame");
    let Frame::WindowAdjust {
        channel: 1,
        increment,
    } = first
    else {
        panic!("expected the initial stdin grant, got {first:?}");
    };
    assert!(increment >= 6, "stdin window {increment}");
    peer.send(Frame::Stdin {
        channel: 1,
        data: Bytes::from_static(b"hello\n"),
    })
    .await;
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let outcome = peer.run_to_exit(1, &mut others).await;
    assert_eq!(outcome.stdout, b"out:hello\n");
    assert_eq!(outcome.stderr, b"err\n");
    assert_eq!(outcome.status, Some(ExitStatus::Code(3)));
    assert!(others.is_empty(), "frames on other channels: {others:?}");
    // The id may be reused at once (§6), on the same connection.
    peer.send(exec(1, 1 << 20, "echo again")).await;
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let outcome = peer.run_to_exit(1, &mut others).await;
    assert_eq!(outcome.stdout, b"again\n");
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
    peer.close_and_wait().await;
}

#[tokio::test]
async fn exec_on_channel_0_is_a_violation() {
    let mut peer = connect(config()).await;
    peer.send(exec(0, 1024, "echo never")).await;
    let (kind, message) = peer.closed_with_error().await;
    assert_eq!(kind, ErrorKind::ProtocolViolation, "{message}");
    assert!(message.contains("channel 0"), "{message}");
    peer.close_and_wait().await;
}

#[tokio::test]
async fn exec_on_a_running_channel_is_a_violation() {
    let mut peer = connect(config()).await;
    // `cat` runs until its stdin ends, which this client never sends.
    peer.start_cat(5).await;
    peer.send(exec(5, 1024, "echo twice")).await;
    let (kind, message) = peer.closed_with_error().await;
    assert_eq!(kind, ErrorKind::ProtocolViolation, "{message}");
    assert!(message.contains("channel 5"), "{message}");
    // Ending the connection ends `cat`: the server task finishes.
    peer.close_and_wait().await;
}

#[tokio::test]
async fn more_than_max_commands_is_refused_and_the_connection_stays_usable() {
    let mut peer = connect(ServerConfig {
        max_channels_per_connection: 2,
        ..config()
    })
    .await;
    let mut others = Vec::new();
    for channel in [1, 2] {
        peer.send(exec(channel, 1024, "cat")).await;
        let frame = peer.next().await.expect("a frame");
        assert!(
            matches!(frame, Frame::WindowAdjust { channel: c, .. } if c == channel),
            "channel {channel} started: {frame:?}"
        );
    }
    peer.send(exec(3, 1024, "echo third")).await;
    let refusal = peer.next().await.expect("a frame");
    let Frame::Error {
        channel: 3,
        kind: ErrorKind::TooManyChannels,
        ..
    } = refusal
    else {
        panic!("expected TooManyChannels on channel 3, got {refusal:?}");
    };
    // One ends; then a new command runs on the same connection.
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let outcome = peer.run_to_exit(1, &mut others).await;
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
    peer.send(exec(3, 1024, "echo third")).await;
    peer.send(Frame::StdinEnd { channel: 3 }).await;
    let outcome = peer.run_to_exit(3, &mut others).await;
    assert_eq!(outcome.stdout, b"third\n");
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
    assert!(others.is_empty(), "frames on other channels: {others:?}");
    peer.close_and_wait().await;
}

#[tokio::test]
async fn frames_for_an_unknown_channel_are_dropped_and_server_frames_are_a_violation() {
    let mut peer = connect(config()).await;
    // §6.1: a channel that ended (or never was) may still get these in a race.
    for frame in [
        Frame::Stdin {
            channel: 9,
            data: Bytes::from_static(b"late"),
        },
        Frame::StdinEnd { channel: 9 },
        Frame::Signal {
            channel: 9,
            signal: rsh_proto::signal::INT,
        },
        Frame::WindowAdjust {
            channel: 9,
            increment: 10,
        },
    ] {
        peer.send(frame).await;
    }
    peer.send(exec(1, 1024, "echo still serving")).await;
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let mut others = Vec::new();
    let outcome = peer.run_to_exit(1, &mut others).await;
    assert_eq!(outcome.stdout, b"still serving\n");
    assert!(
        others.is_empty(),
        "nothing answers the dropped frames: {others:?}"
    );
    // Output goes server → client only.
    peer.send(Frame::Stdout {
        channel: 1,
        data: Bytes::from_static(b"x"),
    })
    .await;
    let (kind, message) = peer.closed_with_error().await;
    assert_eq!(kind, ErrorKind::ProtocolViolation, "{message}");
    peer.close_and_wait().await;
}

/// §9.4: on a pty StdinEnd changes nothing: the window is still granted and
/// later input is still typed, so Ctrl-D still ends the program.
#[tokio::test]
async fn stdin_end_on_a_pty_changes_nothing() {
    let mut peer = connect_speaking(config(), 2).await;
    peer.send(Frame::Exec(Exec {
        channel: 1,
        window: 1 << 20,
        command: b"cat".to_vec(),
        pty: Some(rsh_proto::PtyRequest {
            term: b"dumb".to_vec(),
            size: rsh_proto::PtySize {
                cols: 80,
                rows: 24,
                ..rsh_proto::PtySize::default()
            },
        }),
        ..Exec::default()
    }))
    .await;
    // Right away, as a client with nothing to send on pipes would.
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let mut echoed = Vec::new();
    loop {
        match peer.next().await.expect("the stdin grant") {
            Frame::WindowAdjust { channel: 1, .. } => break,
            Frame::Stdout { channel: 1, data } => {
                echoed.extend_from_slice(&data);
                peer.grant(1, data.len()).await;
            }
            other => panic!("unexpected before the grant: {other:?}"),
        }
    }
    peer.send(Frame::Stdin {
        channel: 1,
        data: Bytes::from_static(b"typed\n"),
    })
    .await;
    // Bounded: each read is; the echo and cat's copy are a few frames.
    while echoed.windows(5).filter(|w| w == b"typed").count() < 2 {
        match peer.next().await.expect("the echo") {
            Frame::Stdout { channel: 1, data } => {
                echoed.extend_from_slice(&data);
                peer.grant(1, data.len()).await;
            }
            Frame::WindowAdjust { channel: 1, .. } => {}
            other => panic!("unexpected while typing: {other:?}"),
        }
    }
    // Ctrl-D at the start of a line: end of input for cat.
    peer.send(Frame::Stdin {
        channel: 1,
        data: Bytes::from_static(b"\x04"),
    })
    .await;
    let outcome = peer.run_to_exit(1, &mut Vec::new()).await;
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)), "{outcome:?}");
    peer.close_and_wait().await;
}

/// §6's table: Resize and extension frames on a channel the server does not
/// know are dropped silently, as is a Resize of a channel without a pty.
#[tokio::test]
async fn resize_and_extension_frames_on_an_unknown_channel_are_dropped() {
    let mut peer = connect_speaking(config(), 2).await;
    let size = rsh_proto::PtySize {
        cols: 100,
        rows: 30,
        ..rsh_proto::PtySize::default()
    };
    peer.send(Frame::Resize { channel: 9, size }).await;
    peer.send(Frame::Unknown {
        channel: 9,
        frame_type: 0x80,
        payload: Bytes::from_static(b"ext"),
    })
    .await;
    peer.send(exec(1, 1024, "read line; echo \"got:$line\""))
        .await;
    // On a running command without a pty.
    peer.send(Frame::Resize { channel: 1, size }).await;
    peer.send(Frame::Unknown {
        channel: 1,
        frame_type: 0xff,
        payload: Bytes::new(),
    })
    .await;
    let first = peer.next().await.expect("a frame");
    assert!(
        matches!(first, Frame::WindowAdjust { channel: 1, .. }),
        "the command started: {first:?}"
    );
    peer.send(Frame::Stdin {
        channel: 1,
        data: Bytes::from_static(b"x\n"),
    })
    .await;
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let mut others = Vec::new();
    let outcome = peer.run_to_exit(1, &mut others).await;
    assert_eq!(outcome.stdout, b"got:x\n");
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)));
    assert!(
        others.is_empty(),
        "nothing answers the dropped frames: {others:?}"
    );
    peer.close_and_wait().await;
}

/// §9.5: a login shell on pipes starts in the Exec's cwd, as a command does.
#[tokio::test]
async fn a_login_shell_on_pipes_starts_in_the_exec_cwd() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let dir_path = dir.path().canonicalize().expect("the temp dir's path");
    let mut peer = connect_speaking(config(), 2).await;
    peer.send(Frame::Exec(Exec {
        channel: 1,
        window: 1 << 20,
        login_shell: true,
        cwd: Some(dir_path.as_os_str().as_encoded_bytes().to_vec()),
        ..Exec::default()
    }))
    .await;
    let first = peer.next().await.expect("a frame");
    assert!(
        matches!(first, Frame::WindowAdjust { channel: 1, .. }),
        "the shell started: {first:?}"
    );
    peer.send(Frame::Stdin {
        channel: 1,
        data: Bytes::from_static(b"echo \"cwd:$(pwd -P)\"\n"),
    })
    .await;
    peer.send(Frame::StdinEnd { channel: 1 }).await;
    let outcome = peer.run_to_exit(1, &mut Vec::new()).await;
    let expected = format!("cwd:{}\n", dir_path.display());
    assert!(
        String::from_utf8_lossy(&outcome.stdout).contains(&expected),
        "{outcome:?}"
    );
    assert_eq!(outcome.status, Some(ExitStatus::Code(0)), "{outcome:?}");
    peer.close_and_wait().await;
}
