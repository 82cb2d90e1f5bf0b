//! Protocol rules (docs/PROTOCOL.md §6-§9) against the server library
//! in-process: each test plays the client over `tokio::io::duplex`, frame by
//! frame, and serves the other end with [`rsh_server::serve_connection`], as
//! mini-redis's `tests/server.rs` does. Windows, refusals and violations are
//! about bytes on the wire, so they are tested here where every frame is
//! visible; what a user does stays in `core` and `tls` with the real binaries.
//!
//! Commands still run as real `sh -c` children of the test process. The
//! helpers are here; the tests are in `channels`, `flow` and `ending`.

mod channels;
mod ending;
mod flow;

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
    /// Starts `cat` on `channel` (a command that runs until its stdin ends)
    /// and waits until it has started: its stdin window is granted.
    async fn start_cat(&mut self, channel: u32) {
        self.send(exec(channel, 1024, "cat")).await;
        let first = self.next().await.expect("a frame");
        assert!(
            matches!(first, Frame::WindowAdjust { channel: c, .. } if c == channel),
            "the command started: {first:?}"
        );
    }

    /// Waits for the first output of `channel` (its window grants aside)
    /// and returns it: the command has started.
    async fn first_stdout(&mut self, channel: u32) -> Bytes {
        loop {
            match self.next().await.expect("the command's output") {
                Frame::Stdout { channel: c, data } if c == channel => return data,
                Frame::WindowAdjust { channel: c, .. } if c == channel => continue,
                other => panic!("unexpected frame {other:?}"),
            }
        }
    }

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
