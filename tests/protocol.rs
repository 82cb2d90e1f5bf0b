//! Protocol rules (docs/PROTOCOL.md §6-§9) against the server library
//! in-process: each test plays the client over `tokio::io::duplex`, frame by
//! frame, and serves the other end with [`rsh_server::serve_connection`], as
//! mini-redis's `tests/server.rs` does. Windows, refusals and violations are
//! about bytes on the wire, so they are tested here where every frame is
//! visible; what a user does stays in `core` and `tls` with the real binaries.
//!
//! Commands still run as real `sh -c` children of the test process.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rsh_proto::{Codec, ErrorKind, Exec, ExitStatus, Frame, Hello, CONNECTION_CHANNEL, HELLO_LEN};
use rsh_server::{serve_connection, ServerConfig};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

/// Upper bound for any single wait (real time; the paused-time test never
/// waits on it).
const STEP: Duration = Duration::from_secs(20);
/// Bytes the in-memory pipe holds in each direction.
const PIPE: usize = 64 * 1024;

fn config() -> ServerConfig {
    ServerConfig {
        kill_grace: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(1),
        linger: Duration::from_millis(100),
        ..ServerConfig::default()
    }
}

/// The client end of an in-process connection, greeted as version 1.
struct Peer {
    frames: Framed<DuplexStream, Codec>,
    server: JoinHandle<()>,
    _shutdown: CancelOnDrop,
    /// The bound on each of the test's reads, on the runtime's clock; `None`
    /// on a paused clock while a real process runs (see [`on_paused_clock`]).
    step: Option<Duration>,
}

/// Cancels the server's shutdown token on drop, so a failing test leaves no
/// command running behind it.
struct CancelOnDrop(CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Serves one duplex stream with `config` and returns the client end, after
/// the greeting exchange (the client speaks version 1).
async fn connect(config: ServerConfig) -> Peer {
    connect_speaking(config, 1).await
}

/// [`connect`], the client speaking protocol `version`.
async fn connect_speaking(config: ServerConfig, version: u16) -> Peer {
    let (mut client, server_end) = tokio::io::duplex(PIPE);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_connection(
        server_end,
        "duplex",
        Arc::new(config),
        shutdown.clone(),
    ));
    client
        .write_all(&Hello::only(version).encode())
        .await
        .expect("send the greeting");
    let mut hello = [0u8; HELLO_LEN];
    tokio::time::timeout(STEP, client.read_exact(&mut hello))
        .await
        .expect("the server greets in time")
        .expect("read the server's greeting");
    Hello::decode(&hello).expect("the server's greeting has the magic");
    Peer {
        frames: Framed::new(client, Codec::new().with_version(version)),
        server,
        _shutdown: CancelOnDrop(shutdown),
        step: Some(STEP),
    }
}

/// Runs `test` on a current-thread runtime whose clock starts paused, on a
/// thread of its own, bounded by `limit` of real time. A paused clock jumps
/// to the next timer whenever the runtime idles, also while a real process
/// is starting or dying, so such a test must not bound its own reads with
/// the runtime's timers (they would fire first): the bound is this one.
fn on_paused_clock<F>(limit: Duration, test: impl FnOnce() -> F + Send + 'static)
where
    F: std::future::Future<Output = ()> + 'static,
{
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        runtime.block_on(test());
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(limit) {
        Ok(()) => thread.join().expect("the test's thread"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("the test did not finish within {limit:?} of real time")
        }
    }
}

fn exec(channel: u32, window: u32, command: &str) -> Frame {
    Frame::Exec(Exec {
        channel,
        window,
        command: command.as_bytes().to_vec(),
        ..Exec::default()
    })
}

/// What one command produced.
#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// The server's stdin grants on the channel, in order.
    stdin_grants: Vec<u32>,
    status: Option<ExitStatus>,
}

impl Peer {
    async fn send(&mut self, frame: Frame) {
        tokio::time::timeout(STEP, self.frames.send(frame))
            .await
            .expect("send in time")
            .expect("send a frame");
    }

    /// The next frame; `None` once the server has closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        let next = match self.step {
            Some(step) => tokio::time::timeout(step, self.frames.next())
                .await
                .expect("a frame or the end in time"),
            None => self.frames.next().await,
        };
        match next {
            Some(Ok(frame)) => Some(frame),
            Some(Err(err)) => panic!("undecodable frame from the server: {err}"),
            None => None,
        }
    }

    /// Reads until `channel`'s Exit, handing back every output byte as soon
    /// as it arrives (a client that grants back exactly what it consumed).
    /// Frames of other channels are returned in `others`.
    async fn run_to_exit(&mut self, channel: u32, others: &mut Vec<Frame>) -> Outcome {
        let mut outcome = Outcome::default();
        while outcome.status.is_none() {
            let frame = self.next().await.unwrap_or_else(|| {
                panic!("connection closed before channel {channel} exited: {outcome:?}")
            });
            match frame {
                Frame::Stdout { channel: c, data } if c == channel => {
                    outcome.stdout.extend_from_slice(&data);
                    self.grant(channel, data.len()).await;
                }
                Frame::Stderr { channel: c, data } if c == channel => {
                    outcome.stderr.extend_from_slice(&data);
                    self.grant(channel, data.len()).await;
                }
                Frame::WindowAdjust {
                    channel: c,
                    increment,
                } if c == channel => outcome.stdin_grants.push(increment),
                Frame::Exit { channel: c, status } if c == channel => outcome.status = Some(status),
                other => others.push(other),
            }
        }
        outcome
    }

    async fn grant(&mut self, channel: u32, consumed: usize) {
        let increment = u32::try_from(consumed).expect("a data frame fits a u32");
        self.send(Frame::WindowAdjust { channel, increment }).await;
    }

    /// Reads to the end of the connection and returns the connection-level
    /// Error the server sent before closing, skipping frames before it.
    async fn closed_with_error(&mut self) -> (ErrorKind, String) {
        let mut error = None;
        // Bounded: each frame read is bounded, and the server queues at most
        // what a few running commands produce before it closes.
        for _ in 0..10_000 {
            match self.next().await {
                Some(Frame::Error {
                    channel: CONNECTION_CHANNEL,
                    kind,
                    message,
                }) => error = Some((kind, message)),
                Some(_) => {}
                None => return error.expect("an Error on channel 0 before the close"),
            }
        }
        panic!("the server kept sending instead of closing the connection");
    }

    /// Closes the client end (the client's EOF) and waits for the server
    /// task: the connection is over and every command it started reaped.
    async fn close_and_wait(self) {
        let Peer {
            frames,
            server,
            _shutdown,
            ..
        } = self;
        drop(frames);
        tokio::time::timeout(STEP, server)
            .await
            .expect("the connection ends in time")
            .expect("the server task did not panic");
    }
}

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
    peer.send(exec(5, 1024, "cat")).await;
    let first = peer.next().await.expect("a frame");
    assert!(
        matches!(first, Frame::WindowAdjust { channel: 5, .. }),
        "the command started: {first:?}"
    );
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
        loop {
            match peer.next().await.expect("the command's output") {
                Frame::Stdout { channel: 1, data } => {
                    assert_eq!(&data[..], b"started\n");
                    break;
                }
                Frame::WindowAdjust { channel: 1, .. } => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
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
    loop {
        match peer.next().await.expect("the command's output") {
            Frame::Stdout { channel: 1, data } => {
                assert_eq!(&data[..], b"started\n");
                break;
            }
            Frame::WindowAdjust { channel: 1, .. } => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
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
    peer.send(exec(5, 1024, "cat")).await;
    let first = peer.next().await.expect("a frame");
    assert!(
        matches!(first, Frame::WindowAdjust { channel: 5, .. }),
        "the command started: {first:?}"
    );
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
    peer.send(exec(5, 1024, "cat")).await;
    let first = peer.next().await.expect("a frame");
    assert!(
        matches!(first, Frame::WindowAdjust { channel: 5, .. }),
        "the command started: {first:?}"
    );
    start_shutdown(&mut peer, 10).await;
    peer.send(exec(0, 1024, "echo never")).await;
    let (kind, message) = peer.closed_with_error().await;
    assert_eq!(kind, ErrorKind::ProtocolViolation, "{message}");
    assert!(message.contains("channel 0"), "{message}");
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
