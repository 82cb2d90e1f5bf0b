//! One client connection: the greeting, then frames in and frames out.
//!
//! The reading side (this task) routes frames to the connection's commands;
//! a writer task owns the write half and batches outgoing frames into as few
//! writes as it can. A malformed frame, a window overrun or any other protocol
//! violation ends the connection with a logged reason; a client that goes
//! away ends its commands' process groups.

use crate::budget::StdinBudget;
use crate::channel::Channels;
use crate::command::{self, CommandContext};
use crate::frame_deadline::{BoundedFrames, ReadError};
use crate::log_limit::LogLimiter;
use crate::peer::ConnectionInfo;
use crate::reaper::Reaper;
use crate::{login, ServerConfig};
use futures::StreamExt;
use rsh_proto::io::GreetError;
use rsh_proto::{Codec, CodecError, ErrorKind, Exec, Frame, CONNECTION_CHANNEL};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, info_span, warn, Instrument};

/// Frames queued for the writer, per connection.
const OUTGOING_QUEUE: usize = 64;
/// Read blocks for big stdin frames (see `Codec::with_read_block`): four
/// full data frames (and their headers) each. Only a connection that
/// receives bulk stdin takes any.
const READ_BLOCK: usize = 4 * (rsh_proto::MAX_DATA_LEN + 64);
/// How long queued frames (an error, exits) may take to reach a client
/// whose connection is ending.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// Refusals logged per connection per interval; the rest are counted and
/// reported with the next line that gets through.
const REFUSALS_LOGGED: u32 = 5;
const REFUSALS_INTERVAL: Duration = Duration::from_secs(10);
/// Lines a client's reports (Error frames) and unknown Signal frames may
/// each write per connection per interval; the rest are counted, reported
/// with the next line that gets through and in one line when the
/// connection ends.
const PEER_LINES_LOGGED: u32 = 10;
const PEER_LINES_INTERVAL: Duration = Duration::from_secs(10);

/// A deadline that never comes, for a connection without probes (tokio
/// timers cannot hold `Duration::MAX`).
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
/// How long the shutdown notice may wait for room in a full outgoing queue
/// (a client not reading) before the connection's commands are ended
/// without it ahead of their Exits.
const NOTICE_LIMIT: Duration = Duration::from_secs(2);
/// The text of the shutdown notice (§10 of docs/PROTOCOL.md).
const SHUTDOWN_NOTICE: &str = "server shutting down";

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The greeting exchange failed.
    #[error(transparent)]
    Greet(#[from] GreetError),
    /// A frame could not be decoded.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The peer broke a protocol rule.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The peer started a frame and did not finish it in time.
    #[error("a frame stayed half-received for more than {0:?}")]
    HalfFrame(Duration),
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// What the server shares with every connection.
#[derive(Debug)]
pub(crate) struct ServerContext {
    pub config: Arc<ServerConfig>,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub reaper: Reaper,
    pub stdin_budget: StdinBudget,
    /// Settings reloaded on SIGHUP (see `Server::with_updates`).
    pub updates: Option<tokio::sync::watch::Receiver<Arc<ServerConfig>>>,
}

impl Clone for ServerContext {
    /// The accept loops clone the context for each new connection; taking
    /// the latest reloaded settings here is what makes a reload apply to new
    /// connections while running ones keep the settings they started with.
    fn clone(&self) -> Self {
        let config = match &self.updates {
            Some(updates) => updates.borrow().clone(),
            None => self.config.clone(),
        };
        ServerContext {
            config,
            shutdown: self.shutdown.clone(),
            tracker: self.tracker.clone(),
            reaper: self.reaper.clone(),
            stdin_budget: self.stdin_budget.clone(),
            updates: self.updates.clone(),
        }
    }
}

/// Serves one connection to its end. Errors are logged here, in the
/// connection's span. `peer` says where the client is, for the sessions'
/// `RSH_CONNECTION`.
pub(crate) async fn serve<S>(mut stream: S, ctx: ServerContext, peer: ConnectionInfo)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Every frame after the greeting is read and written in the negotiated
    // version: a version-1 client gets exactly version 1.
    let version = match rsh_proto::io::greet(&mut stream, ctx.config.handshake_timeout).await {
        Ok(version) => version,
        Err(err) => {
            warn!(cause = %err, "handshake failed; closing");
            return;
        }
    };
    let codec = Codec::new().with_version(version);
    debug!(version, "handshake done");
    let (read_half, write_half) = tokio::io::split(stream);
    let (frames_tx, frames_rx) = mpsc::channel(OUTGOING_QUEUE);
    let client_gone = CancellationToken::new();
    let abort_writer = CancellationToken::new();
    let writer = tokio::spawn(
        write_frames(
            write_half,
            frames_rx,
            codec.clone(),
            client_gone.clone(),
            abort_writer.clone(),
        )
        .in_current_span(),
    );

    let mut conn = Connection {
        commands_shutdown: CancellationToken::new(),
        ctx: ctx.clone(),
        peer: Arc::new(peer),
        version,
        frames: frames_tx,
        client_gone: client_gone.clone(),
        channels: Channels::new(),
        refusals: LogLimiter::new(REFUSALS_INTERVAL, REFUSALS_LOGGED),
        client_errors: LogLimiter::new(PEER_LINES_INTERVAL, PEER_LINES_LOGGED),
        unknown_signals: LogLimiter::new(PEER_LINES_INTERVAL, PEER_LINES_LOGGED),
    };
    let frames = BoundedFrames::new(
        FramedRead::new(read_half, codec.with_read_block(READ_BLOCK)),
        ctx.config.frame_timeout,
    );
    let end = conn.read_frames(frames).await;
    match &end {
        End::ClientClosed => debug!("client closed the connection"),
        End::ClientNotResponding { unanswered } => warn!(
            reason = "client-alive",
            unanswered,
            interval = ?ctx.config.client_alive_interval.unwrap_or_default(),
            "client not responding to probes; closing connection"
        ),
        End::ShutdownDrained => debug!("shutdown: connection drained"),
        End::Failed(err) => {
            warn!(cause = %err, "closing connection");
            if !matches!(err, ConnectionError::Io(_)) {
                let _ = conn.frames.try_send(Frame::Error {
                    channel: CONNECTION_CHANNEL,
                    kind: ErrorKind::ProtocolViolation,
                    message: err.to_string(),
                });
            }
        }
    }
    if !matches!(end, End::ShutdownDrained) {
        client_gone.cancel();
    }
    // A connection that ended before it saw the shutdown never passed it on.
    if ctx.shutdown.is_cancelled() {
        conn.commands_shutdown.cancel();
    }
    conn.log_suppressed();
    drop(conn);
    if tokio::time::timeout(FINAL_FLUSH, writer).await.is_err() {
        abort_writer.cancel();
    }
}

enum End {
    ClientClosed,
    /// The client left this many Pings in a row unanswered.
    ClientNotResponding {
        unanswered: u32,
    },
    ShutdownDrained,
    Failed(ConnectionError),
}

/// The reading side of a connection: routes frames to its channels.
struct Connection {
    ctx: ServerContext,
    /// Where the client is.
    peer: Arc<ConnectionInfo>,
    /// The protocol version the greeting negotiated.
    version: u16,
    frames: mpsc::Sender<Frame>,
    client_gone: CancellationToken,
    /// The server's shutdown as this connection's commands see it:
    /// cancelled only once a version-3 client's shutdown notice is queued,
    /// so that it goes out before any command's Exit.
    commands_shutdown: CancellationToken,
    /// Which channels are open (see [`Channels`]).
    channels: Channels,
    /// Keeps a client that sends refused requests in a loop from writing a
    /// log line for each.
    refusals: LogLimiter,
    /// Likewise for the Error frames a client sends.
    client_errors: LogLimiter,
    /// Likewise for Signal frames naming no signal this host has.
    unknown_signals: LogLimiter,
}

impl Connection {
    async fn read_frames<R>(&mut self, mut frames: BoundedFrames<R>) -> End
    where
        R: AsyncRead + Unpin,
    {
        let mut shutting_down = false;
        // sshd's ClientAlive: only a version-3 client knows Ping.
        let alive = self
            .ctx
            .config
            .client_alive_interval
            .filter(|interval| self.version >= 3 && !interval.is_zero());
        let interval = alive.unwrap_or(FAR_FUTURE).min(FAR_FUTURE);
        // Probes sent since the client was last heard from.
        let mut unanswered: u32 = 0;
        let probe_due = tokio::time::sleep(interval);
        tokio::pin!(probe_due);
        loop {
            if shutting_down && self.channels.is_empty() {
                return End::ShutdownDrained;
            }
            tokio::select! {
                () = &mut probe_due, if alive.is_some() => {
                    if unanswered >= self.ctx.config.client_alive_count_max {
                        return End::ClientNotResponding { unanswered };
                    }
                    unanswered += 1;
                    // A full queue means the client is not reading: the
                    // probe would prove nothing, and the count goes on.
                    let _ = self.frames.try_send(Frame::Ping {
                        cookie: u64::from(unanswered),
                    });
                    probe_due.as_mut().reset(tokio::time::Instant::now() + interval);
                }
                frame = frames.next() => match frame {
                    None => return End::ClientClosed,
                    Some(Err(ReadError::Codec(CodecError::Io(err)))) => {
                        debug!(cause = %err, "connection read failed");
                        return End::ClientClosed;
                    }
                    Some(Err(ReadError::Codec(err))) => return End::Failed(err.into()),
                    Some(Err(ReadError::HalfFrame(limit))) => {
                        return End::Failed(ConnectionError::HalfFrame(limit))
                    }
                    Some(Ok(frame)) => {
                        // Any frame is a sign of life, as in sshd.
                        if alive.is_some() {
                            unanswered = 0;
                            probe_due.as_mut().reset(tokio::time::Instant::now() + interval);
                        }
                        self.channels.drain_ended();
                        if let Err(err) = self.dispatch(frame, shutting_down).await {
                            return End::Failed(err);
                        }
                    }
                },
                () = self.channels.next_ended() => {}
                () = self.ctx.shutdown.cancelled(), if !shutting_down => {
                    shutting_down = true;
                    self.announce_shutdown();
                }
                () = self.client_gone.cancelled() => return End::ClientClosed,
            }
        }
    }

    /// Passes the server's shutdown on to this connection's commands (the
    /// grace starts), a version-3 client being told first: one Error on
    /// channel 0, kind `ShuttingDown`, a notice the client keeps reading
    /// after. Older clients would take it for the connection's end.
    fn announce_shutdown(&self) {
        if self.version < 3 {
            self.commands_shutdown.cancel();
            return;
        }
        debug!("shutdown: telling the client");
        let notice = Frame::Error {
            channel: CONNECTION_CHANNEL,
            kind: ErrorKind::ShuttingDown,
            message: SHUTDOWN_NOTICE.into(),
        };
        match self.frames.try_send(notice) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {
                self.commands_shutdown.cancel();
            }
            // The client is not reading: the commands' end waits for room
            // for the notice, not for ever.
            Err(mpsc::error::TrySendError::Full(notice)) => {
                let frames = self.frames.clone();
                let commands_shutdown = self.commands_shutdown.clone();
                self.ctx.tracker.spawn(
                    async move {
                        let _ = tokio::time::timeout(NOTICE_LIMIT, frames.send(notice)).await;
                        commands_shutdown.cancel();
                    }
                    .in_current_span(),
                );
            }
        }
    }

    async fn refuse(&mut self, channel: u32, kind: ErrorKind, message: String) {
        // The field is `reason`, not `message`, which is the event's own
        // ("refusing command") in JSON logs.
        let reason = crate::logging::PeerText(message.as_bytes());
        match self.refusals.check(tokio::time::Instant::now()) {
            Some(0) => info!(channel, ?kind, ?reason, "refusing command"),
            Some(suppressed) => info!(
                channel,
                ?kind,
                ?reason,
                suppressed,
                "refusing command ({suppressed} more refusals on this connection were not logged)"
            ),
            None => debug!(channel, ?kind, ?reason, "refusing command"),
        }
        let _ = self
            .frames
            .send(Frame::Error {
                channel,
                kind,
                message,
            })
            .await;
    }

    /// Logs an Error frame from the client, within its budget. The text is
    /// the peer's: escaped, so that a newline cannot forge a log line.
    fn client_error(&mut self, channel: u32, kind: ErrorKind, message: &str) {
        // Not `message`, which is the event's own.
        let text = crate::logging::PeerText(message.as_bytes());
        match self.client_errors.check(tokio::time::Instant::now()) {
            Some(0) => warn!(channel, ?kind, ?text, "client reported an error"),
            Some(suppressed) => warn!(
                channel,
                ?kind,
                ?text,
                suppressed,
                "client reported an error ({suppressed} more on this connection were not logged)"
            ),
            None => debug!(channel, ?kind, ?text, "client reported an error"),
        }
    }

    /// Logs a Signal frame naming no signal this host has (it is ignored),
    /// within its budget.
    fn unknown_signal(&mut self, channel: u32, number: u8) {
        match self.unknown_signals.check(tokio::time::Instant::now()) {
            Some(0) => warn!(channel, number, "ignoring request for an unknown signal"),
            Some(suppressed) => warn!(
                channel,
                number,
                suppressed,
                "ignoring request for an unknown signal ({suppressed} more on this connection were not logged)"
            ),
            None => debug!(channel, number, "ignoring request for an unknown signal"),
        }
    }

    /// At the connection's end, one line for what its limiters held back
    /// since the last line they let through, if anything.
    fn log_suppressed(&mut self) {
        let refusals = self.refusals.take_suppressed();
        let client_errors = self.client_errors.take_suppressed();
        let unknown_signals = self.unknown_signals.take_suppressed();
        if refusals + client_errors + unknown_signals > 0 {
            info!(
                refusals,
                client_errors,
                unknown_signals,
                "log lines suppressed on this connection since the last logged"
            );
        }
    }

    async fn dispatch(&mut self, frame: Frame, shutting_down: bool) -> Result<(), ConnectionError> {
        match frame {
            Frame::Exec(exec) => self.exec(exec, shutting_down).await,
            Frame::Stdin { channel, data } => self.channels.stdin(channel, data).map_err(|_| {
                ConnectionError::Protocol(format!(
                    "stdin on channel {channel} exceeds the granted window"
                ))
            }),
            Frame::StdinEnd { channel } => {
                self.channels.stdin_end(channel);
                Ok(())
            }
            Frame::Signal { channel, signal } => {
                if nix::sys::signal::Signal::try_from(i32::from(signal)).is_ok() {
                    self.channels.signal(channel, signal);
                } else {
                    self.unknown_signal(channel, signal);
                }
                Ok(())
            }
            Frame::WindowAdjust { channel, increment } => {
                self.channels.window_adjust(channel, increment);
                Ok(())
            }
            Frame::Error {
                channel,
                kind,
                message,
            } => {
                self.client_error(channel, kind, &message);
                Ok(())
            }
            Frame::Resize { channel, size } => {
                self.channels.resize(channel, size);
                Ok(())
            }
            // Answered whether or not this server probes its clients. A
            // full queue means the client is not reading its output; it
            // gets no Pong then (its own count decides what that means).
            Frame::Ping { cookie } => {
                if self.frames.try_send(Frame::Pong { cookie }).is_err() {
                    debug!("outgoing queue full; ping not answered");
                }
                Ok(())
            }
            // The answer to our probe; receiving it already counted as life.
            Frame::Pong { .. } => Ok(()),
            Frame::Unknown {
                channel,
                frame_type,
                ..
            } => {
                // Version 2's extension range: skipped, by the protocol's rule.
                debug!(channel, frame_type, "skipping an unknown extension frame");
                Ok(())
            }
            other @ (Frame::Stdout { .. } | Frame::Stderr { .. } | Frame::Exit { .. }) => {
                Err(ConnectionError::Protocol(format!(
                    "client sent a server-only {:?} frame",
                    other.frame_type()
                )))
            }
        }
    }

    async fn exec(&mut self, exec: Exec, shutting_down: bool) -> Result<(), ConnectionError> {
        let channel = exec.channel;
        // Both are client bugs that would make later frames ambiguous, so
        // they close the connection during a shutdown too: a refusal on a
        // channel in use would be followed by the running command's Exit.
        if channel == CONNECTION_CHANNEL {
            return Err(ConnectionError::Protocol(
                "exec on channel 0, which is reserved".into(),
            ));
        }
        if self.channels.is_open(channel) {
            return Err(ConnectionError::Protocol(format!(
                "exec on channel {channel}, which is still running a command"
            )));
        }
        if shutting_down {
            self.refuse(
                channel,
                ErrorKind::ShuttingDown,
                "server is shutting down".into(),
            )
            .await;
            return Ok(());
        }
        if self.channels.len() >= self.ctx.config.max_channels_per_connection {
            self.refuse(
                channel,
                ErrorKind::TooManyChannels,
                format!(
                    "at most {} commands at once per connection",
                    self.ctx.config.max_channels_per_connection
                ),
            )
            .await;
            return Ok(());
        }
        if let Err(reason) = validate(&exec) {
            self.refuse(channel, ErrorKind::BadRequest, reason.into())
                .await;
            return Ok(());
        }
        if let Err((kind, message)) = login::check(&exec).await {
            self.refuse(channel, kind, message).await;
            return Ok(());
        }

        let (inputs, end) = self.channels.open(
            channel,
            exec.window,
            exec.pty.as_ref().map(|pty| pty.size),
            self.frames.clone(),
        );
        let command_ctx = CommandContext {
            config: self.ctx.config.clone(),
            frames: self.frames.clone(),
            client_gone: self.client_gone.clone(),
            shutdown: self.commands_shutdown.clone(),
            tracker: self.ctx.tracker.clone(),
            reaper: self.ctx.reaper.clone(),
            stdin_budget: self.ctx.stdin_budget.clone(),
            connection: self.peer.clone(),
        };
        let span = info_span!(
            "cmd",
            channel,
            proto = self.version,
            // Quoted in text logs: a newline cannot forge a log line.
            command = ?crate::logging::PeerText(&exec.command),
            pid = tracing::field::Empty,
            // Only for what version 2 adds: a login shell, a terminal.
            login_shell = tracing::field::Empty,
            term = tracing::field::Empty,
            tty = tracing::field::Empty,
        );
        if exec.login_shell {
            span.record("login_shell", true);
        }
        if let Some(pty) = &exec.pty {
            span.record(
                "term",
                tracing::field::debug(crate::logging::PeerText(&pty.term)),
            );
        }
        self.ctx
            .tracker
            .spawn(command::run(exec, inputs, command_ctx, end).instrument(span));
        Ok(())
    }
}

fn validate(exec: &Exec) -> Result<(), &'static str> {
    if exec.login_shell {
        if !exec.command.is_empty() {
            return Err("a login shell request carries no command");
        }
    } else if exec.command.iter().all(u8::is_ascii_whitespace) {
        return Err("empty command");
    }
    if exec.command.contains(&0) {
        return Err("command contains a NUL byte");
    }
    if exec
        .cwd
        .as_ref()
        .is_some_and(|cwd| cwd.is_empty() || cwd.contains(&0))
    {
        return Err("working directory is empty or contains a NUL byte");
    }
    for (key, value) in &exec.env {
        if key.is_empty() || key.contains(&b'=') || key.contains(&0) || value.contains(&0) {
            return Err("environment variable name or value is invalid");
        }
    }
    if exec
        .user
        .as_ref()
        .is_some_and(|user| user.is_empty() || user.contains(&0))
    {
        return Err("user name is empty or contains a NUL byte");
    }
    if exec.pty.as_ref().is_some_and(|pty| pty.term.contains(&0)) {
        return Err("terminal type contains a NUL byte");
    }
    Ok(())
}

/// Runs the shared frame writer; a write failure means the client is gone.
async fn write_frames<W>(
    write_half: W,
    frames: mpsc::Receiver<Frame>,
    codec: Codec,
    client_gone: CancellationToken,
    abort: CancellationToken,
) where
    W: AsyncWrite + Unpin,
{
    if let Err(err) = rsh_proto::io::write_frames(write_half, frames, codec, abort).await {
        debug!(cause = %err, "connection write failed");
        client_gone.cancel();
    }
}
