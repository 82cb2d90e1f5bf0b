//! The bottom layer of the client: one connection's shared state (its
//! negotiated version, the open channels, why it ended), the writer task that
//! sends frames, and the reader task that routes the server's frames to the
//! channels. It knows frames and channels, not commands or TLS: the layers
//! above (one command, the client) build on [`Shared`].

use crate::error::{ClientError, SharedCause};
use bytes::Bytes;
use futures::StreamExt;
use rsh_proto::{Codec, CodecError, ErrorKind, ExitStatus, Frame, Window, CONNECTION_CHANNEL};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

/// Output window granted to the server per command.
pub(crate) const OUTPUT_WINDOW: u32 = 2 * 1024 * 1024;
/// Time the server has to greet us.
const GREETING_TIMEOUT: Duration = Duration::from_secs(10);
/// Recycled read blocks (see `Codec::with_read_block`): four full data
/// frames (and their headers) each.
const READ_BLOCK: usize = 4 * (rsh_proto::MAX_DATA_LEN + 64);
/// Frames queued for the writer.
const OUTGOING_QUEUE: usize = 64;

/// ssh's `ServerAliveInterval` and `ServerAliveCountMax` as protocol
/// probes: after `interval` with nothing from the server, a Ping; after
/// `count_max` of them unanswered, the connection is given up. Only on a
/// version-3 connection (an older server would take a Ping for garbage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAlive {
    /// Silence from the server after which a probe is sent.
    pub interval: Duration,
    /// Probes left unanswered before the connection is given up.
    pub count_max: u32,
    /// How the server is named in the message when it is given up.
    pub server: String,
}

/// What the reader task hands a command.
#[derive(Debug)]
pub(crate) enum ChannelEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(ExitStatus),
    Refused { kind: ErrorKind, message: String },
    Lost(Lost),
}

/// The client's side of one channel, as the reader task sees it.
pub(crate) struct ChannelEntry {
    pub events: mpsc::UnboundedSender<ChannelEvent>,
    pub stdin_window: Arc<Window>,
    /// Output bytes the server may still send; more is a protocol violation.
    pub output_allowed: u64,
}

/// One connection's state, shared by its tasks, its `Client` handles and its
/// commands.
pub(crate) struct Shared {
    /// The protocol version the greeting negotiated.
    pub version: u16,
    /// To the writer task.
    pub frames: mpsc::Sender<Frame>,
    /// The open channels, by id.
    pub channels: Mutex<HashMap<u32, ChannelEntry>>,
    next_channel: Mutex<u32>,
    /// Why the connection ended, once it has.
    pub lost: Mutex<Option<Lost>>,
    /// Cancelled when the connection ends (or its last handle is dropped).
    pub closed: CancellationToken,
    /// Set when the server announced its shutdown (version 3's notice: an
    /// Error on channel 0, kind `ShuttingDown`).
    pub server_leaving: AtomicBool,
}

impl Shared {
    /// The open channels (a poisoned lock is still usable: entries are
    /// always left consistent).
    pub fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<u32, ChannelEntry>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Why the connection ended.
    pub fn lost(&self) -> Lost {
        self.lost
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .unwrap_or_else(|| Lost::new("connection closed", None))
    }

    /// Why the connection ended, as an error for a command.
    pub fn lost_error(&self) -> ClientError {
        self.lost().into_error()
    }

    /// Removes a channel that never started (its Exec could not be sent).
    pub fn forget_channel(&self, channel: u32) {
        self.channels().remove(&channel);
    }

    /// Registers a new channel whose events go to `events`; returns its id.
    ///
    /// # Errors
    /// [`ClientError::ConnectionLost`] if the connection has ended.
    pub fn open_channel(
        &self,
        events: mpsc::UnboundedSender<ChannelEvent>,
        stdin_window: Arc<Window>,
    ) -> Result<u32, ClientError> {
        let mut channels = self.channels();
        if self.closed.is_cancelled() {
            return Err(self.lost_error());
        }
        let mut next = self
            .next_channel
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Ids count up; skip 0 and any still in use after wrapping.
        loop {
            *next = next.wrapping_add(1);
            if *next != CONNECTION_CHANNEL && !channels.contains_key(&*next) {
                break;
            }
        }
        channels.insert(
            *next,
            ChannelEntry {
                events,
                stdin_window: stdin_window.clone(),
                output_allowed: u64::from(OUTPUT_WINDOW),
            },
        );
        Ok(*next)
    }

    /// Queues a frame for the writer task.
    ///
    /// # Errors
    /// [`ClientError::ConnectionLost`] if the connection has ended.
    pub async fn send(&self, frame: Frame) -> Result<(), ClientError> {
        self.frames.send(frame).await.map_err(|_| self.lost_error())
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

/// Held by every `Client` clone and every `RemoteCommand`; when the last one
/// goes, the connection is closed (the tasks that serve it hold only the
/// shared state, so they cannot keep it open on their own).
#[derive(Debug)]
pub(crate) struct OpenHandle(CancellationToken);

impl Drop for OpenHandle {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Greets the server over `stream` and starts the reader and writer tasks.
/// The returned handle keeps the connection open; the tasks hold only the
/// shared state.
///
/// # Errors
/// [`ClientError::Greeting`].
pub(crate) async fn start<S>(
    mut stream: S,
    alive: Option<ServerAlive>,
) -> Result<(Arc<Shared>, Arc<OpenHandle>), ClientError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let version = rsh_proto::io::greet(&mut stream, GREETING_TIMEOUT).await?;
    let codec = Codec::new().with_version(version);
    let (read_half, write_half) = tokio::io::split(stream);
    let (frames_tx, frames_rx) = mpsc::channel(OUTGOING_QUEUE);
    let shared = Arc::new(Shared {
        version,
        frames: frames_tx,
        channels: Mutex::new(HashMap::new()),
        next_channel: Mutex::new(0),
        lost: Mutex::new(None),
        closed: CancellationToken::new(),
        server_leaving: AtomicBool::new(false),
    });
    tokio::spawn({
        let shared = shared.clone();
        let codec = codec.clone();
        async move {
            let abort = shared.closed.clone();
            if let Err(err) = rsh_proto::io::write_frames(write_half, frames_rx, codec, abort).await
            {
                connection_lost(
                    &shared,
                    Lost::new(format!("write failed: {err}"), Some(Arc::new(err))),
                );
            }
        }
    });
    // Probes exist from version 3 on; an older server is never sent one.
    let alive = alive.filter(|alive| version >= 3 && !alive.interval.is_zero());
    tokio::spawn(read_frames(
        FramedRead::new(read_half, codec.with_read_block(READ_BLOCK)),
        shared.clone(),
        alive,
    ));
    let open = Arc::new(OpenHandle(shared.closed.clone()));
    Ok((shared, open))
}

/// Why a connection ended: the words, and the error behind them (shared by
/// every command on the connection, hence the `Arc`).
#[derive(Debug, Clone)]
pub(crate) struct Lost {
    reason: String,
    cause: Option<SharedCause>,
}

impl Lost {
    fn new(reason: impl Into<String>, cause: Option<SharedCause>) -> Lost {
        Lost {
            reason: reason.into(),
            cause,
        }
    }

    /// The error a command reports for it.
    pub fn into_error(self) -> ClientError {
        ClientError::ConnectionLost {
            reason: self.reason,
            source: self.cause,
        }
    }
}

fn connection_lost(shared: &Shared, reason: Lost) {
    {
        let mut lost = shared
            .lost
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if lost.is_none() {
            *lost = Some(reason);
        }
    }
    shared.closed.cancel();
    let reason = shared.lost();
    for (_, entry) in shared.channels().drain() {
        entry.stdin_window.close();
        let _ = entry.events.send(ChannelEvent::Lost(reason.clone()));
    }
}

/// Routes the server's frames to the commands; ends the connection on the
/// first malformed or unexpected one, or when `alive`'s probes go
/// unanswered.
async fn read_frames<R>(
    mut frames: FramedRead<R, Codec>,
    shared: Arc<Shared>,
    alive: Option<ServerAlive>,
) where
    R: AsyncRead + Unpin,
{
    let interval = alive.as_ref().map_or(Duration::MAX, |alive| alive.interval);
    // Probes sent since the server was last heard from.
    let mut unanswered: u32 = 0;
    let probe_due = tokio::time::sleep(interval.min(FAR_FUTURE));
    tokio::pin!(probe_due);
    let reason = loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            () = &mut probe_due, if alive.is_some() => {
                if let Some(alive) = &alive {
                    if unanswered >= alive.count_max {
                        break Lost::new(
                            format!("Timeout, server {} not responding.", alive.server),
                            None,
                        );
                    }
                }
                unanswered += 1;
                // A full queue means the writer is stuck: the probe would
                // prove nothing, and the count goes on regardless.
                let _ = shared.frames.try_send(Frame::Ping {
                    cookie: u64::from(unanswered),
                });
                probe_due.as_mut().reset(tokio::time::Instant::now() + interval);
                continue;
            }
            () = shared.closed.cancelled() => break Lost::new("connection closed", None),
        };
        match frame {
            None => break Lost::new("server closed the connection", None),
            Some(Err(CodecError::Io(err))) => {
                break Lost::new(err.to_string(), Some(Arc::new(err)));
            }
            Some(Err(err)) => {
                break Lost::new(format!("bad frame from server: {err}"), Some(Arc::new(err)))
            }
            Some(Ok(frame)) => {
                // Any frame is a sign of life, as in ssh.
                if alive.is_some() {
                    unanswered = 0;
                    probe_due
                        .as_mut()
                        .reset(tokio::time::Instant::now() + interval);
                }
                if let Err(reason) = route(&shared, frame) {
                    break Lost::new(reason, None);
                }
            }
        }
    };
    connection_lost(&shared, reason);
}

/// A deadline that never comes, for a connection without probes (tokio
/// timers cannot hold `Duration::MAX`).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn route(shared: &Shared, frame: Frame) -> Result<(), String> {
    let mut channels = shared.channels();
    match frame {
        Frame::Stdout { channel, data } => {
            deliver_output(shared, &mut channels, channel, data, false)
        }
        Frame::Stderr { channel, data } => {
            deliver_output(shared, &mut channels, channel, data, true)
        }
        Frame::WindowAdjust { channel, increment } => {
            if let Some(entry) = channels.get(&channel) {
                entry.stdin_window.grant(u64::from(increment));
            }
            Ok(())
        }
        Frame::Exit { channel, status } => {
            let entry = channels
                .remove(&channel)
                .ok_or_else(|| format!("server sent an exit for unknown channel {channel}"))?;
            entry.stdin_window.close();
            let _ = entry.events.send(ChannelEvent::Exit(status));
            Ok(())
        }
        // From version 3 on, the server's shutdown notice: its commands get
        // the grace, their Exits follow, then the connection closes.
        Frame::Error {
            channel: CONNECTION_CHANNEL,
            kind: ErrorKind::ShuttingDown,
            ..
        } if shared.version >= 3 => {
            shared.server_leaving.store(true, Ordering::Relaxed);
            Ok(())
        }
        Frame::Error {
            channel: CONNECTION_CHANNEL,
            message,
            ..
        } => Err(format!("server error: {message}")),
        Frame::Error {
            channel,
            kind,
            message,
        } => {
            if let Some(entry) = channels.remove(&channel) {
                entry.stdin_window.close();
                let _ = entry.events.send(ChannelEvent::Refused { kind, message });
            }
            Ok(())
        }
        // Version 2's extension range: skipped, by the protocol's rule.
        Frame::Unknown { .. } => Ok(()),
        // The server's probe: answered even with our own probes off.
        Frame::Ping { cookie } => {
            let pong = Frame::Pong { cookie };
            if let Err(mpsc::error::TrySendError::Full(pong)) = shared.frames.try_send(pong) {
                let frames = shared.frames.clone();
                tokio::spawn(async move {
                    let _ = frames.send(pong).await;
                });
            }
            Ok(())
        }
        // The answer to our probe; receiving it already counted as life.
        Frame::Pong { .. } => Ok(()),
        other @ (Frame::Exec(_)
        | Frame::Stdin { .. }
        | Frame::StdinEnd { .. }
        | Frame::Signal { .. }
        | Frame::Resize { .. }) => Err(format!(
            "server sent a client-only {:?} frame",
            other.frame_type()
        )),
    }
}

fn deliver_output(
    shared: &Shared,
    channels: &mut HashMap<u32, ChannelEntry>,
    channel: u32,
    data: Bytes,
    stderr: bool,
) -> Result<(), String> {
    let entry = channels
        .get_mut(&channel)
        .ok_or_else(|| format!("server sent output for unknown channel {channel}"))?;
    let len = data.len() as u64;
    if len > entry.output_allowed {
        return Err(format!(
            "server overran the output window on channel {channel}"
        ));
    }
    entry.output_allowed -= len;
    let event = if stderr {
        ChannelEvent::Stderr(data)
    } else {
        ChannelEvent::Stdout(data)
    };
    if entry.events.send(event).is_err() {
        // The handle was dropped: discard the bytes and give the window back
        // so the remote command is not stalled forever.
        entry.output_allowed += len;
        let frames = shared.frames.clone();
        tokio::spawn(async move {
            let _ = frames
                .send(Frame::WindowAdjust {
                    channel,
                    increment: len as u32,
                })
                .await;
        });
    }
    Ok(())
}
