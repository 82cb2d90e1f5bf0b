//! The connection: greeting, the reader task that routes frames to commands,
//! and the writer task.

use crate::command::{ChannelEvent, RemoteCommand};
use bytes::Bytes;
use futures::StreamExt;
use rsh_proto::io::GreetError;
use rsh_proto::{
    Codec, CodecError, ErrorKind, Exec, ExitStatus, Frame, PtyRequest, PtySize, Window,
    CONNECTION_CHANNEL,
};
use std::collections::HashMap;
use std::path::Path;
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
/// Read buffer growth step: four full data frames per allocation.
const READ_BLOCK: usize = 4 * rsh_proto::MAX_DATA_LEN;
/// Frames queued for the writer.
const OUTGOING_QUEUE: usize = 64;

/// What can go wrong talking to a server.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the server.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// Where we tried.
        endpoint: String,
        /// Why it failed.
        reason: String,
    },
    /// The greeting failed (not an rsh server, another protocol version...).
    #[error("{0}")]
    Greeting(String),
    /// The server does not accept our key.
    #[error("not authorized: the server's authorized_keys does not list this client's key; add this line to it: {key}")]
    NotAuthorized {
        /// Our key, as an authorized_keys line.
        key: String,
    },
    /// The server's key is not in known_hosts and the policy refused it.
    #[error("host key verification failed: {host_port} is not in known_hosts (it presented {fingerprint}); compare with `rsh-server --fingerprint` on the server, then rerun with --accept-new to trust it")]
    UnknownHost {
        /// `host:port`.
        host_port: String,
        /// The key the server presented.
        fingerprint: String,
    },
    /// The user declined an unknown host key.
    #[error("host key verification failed: {0} was not accepted")]
    HostKeyNotAccepted(String),
    /// The server's key differs from the pinned one: refused, always.
    #[error("WARNING: REMOTE HOST KEY HAS CHANGED for {host_port}! known_hosts pins {expected} but the server presented {presented}. Someone could be intercepting the connection, or the host key was replaced. Nothing was run. If the change is expected, remove the line for {host_port} from {known_hosts}")]
    HostKeyChanged {
        /// `host:port`.
        host_port: String,
        /// The pinned key.
        expected: String,
        /// The key the server presented.
        presented: String,
        /// The known_hosts file.
        known_hosts: String,
    },
    /// TLS failed.
    #[error("{0}")]
    Tls(String),
    /// Our key or known_hosts could not be read or written.
    #[error("{0}")]
    Keys(String),
    /// The server refused the command.
    #[error("server refused the command: {message}")]
    Refused {
        /// Machine-readable kind.
        kind: ErrorKind,
        /// The server's reason.
        message: String,
    },
    /// The request (command, directory, environment) does not fit in a frame.
    #[error("command too long: the request takes {len} bytes, more than the protocol's {max}-byte frame")]
    RequestTooLarge {
        /// Encoded size of the request.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request needs a newer protocol version than the server speaks
    /// (a pty, a login shell or a user name from a version-1 server).
    #[error(
        "the server speaks rsh protocol version {version}, which has no {what}; upgrade rsh-server"
    )]
    Unsupported {
        /// What the request needed.
        what: &'static str,
        /// The version the connection speaks.
        version: u16,
    },
    /// The command has ended and takes no more stdin.
    #[error("the command has ended; its stdin is closed")]
    StdinClosed,
    /// The connection broke or the server broke the protocol.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
}

impl From<GreetError> for ClientError {
    fn from(err: GreetError) -> Self {
        use rsh_tls::rustls::{AlertDescription, Error as TlsError};
        if let GreetError::Io(io) = &err {
            // A TLS 1.3 server refuses a client key after our side of the
            // handshake is done, so the refusal arrives as an alert here.
            let alert = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<TlsError>());
            if let Some(TlsError::AlertReceived(
                AlertDescription::AccessDenied | AlertDescription::CertificateRequired,
            )) = alert
            {
                return ClientError::NotAuthorized { key: String::new() };
            }
            // Over TLS 1.3 our side of the handshake ends before the server
            // has checked our key (or given up on us): a server that drops us
            // then is seen here.
            if crate::tls::closed_by_peer(io) {
                return ClientError::Greeting(format!(
                    "connection failed during the greeting: {}",
                    crate::tls::CLOSED_BEFORE_AUTH
                ));
            }
        }
        ClientError::Greeting(err.to_string())
    }
}

/// A command to run, with its options.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    command: Vec<u8>,
    cwd: Option<Vec<u8>>,
    env: Vec<(Vec<u8>, Vec<u8>)>,
    timeout: Option<Duration>,
    login_shell: bool,
    user: Option<Vec<u8>>,
    pty: Option<PtyRequest>,
}

impl ExecRequest {
    /// A command line, run remotely as `sh -c COMMAND`.
    pub fn new(command: impl Into<Vec<u8>>) -> Self {
        ExecRequest {
            command: command.into(),
            ..Self::default()
        }
    }

    /// The remote user's login shell instead of a command (needs protocol
    /// version 2). With [`ExecRequest::pty`] it is a terminal session; without,
    /// the shell reads its commands from stdin.
    pub fn login_shell() -> Self {
        ExecRequest {
            login_shell: true,
            ..Self::default()
        }
    }

    /// Runs it on a pseudo-terminal of type `term` (the remote `TERM`) and
    /// this size; its stdout and stderr then arrive as one stream, as
    /// [`crate::Event::Stdout`]. Needs protocol version 2.
    pub fn pty(mut self, term: impl Into<Vec<u8>>, size: PtySize) -> Self {
        self.pty = Some(PtyRequest {
            term: term.into(),
            size,
        });
        self
    }

    /// Asks to run as this user; the server refuses any user other than the
    /// one it runs as ([`ErrorKind::WrongUser`]). Needs protocol version 2.
    pub fn user(mut self, name: impl Into<Vec<u8>>) -> Self {
        self.user = Some(name.into());
        self
    }

    /// What of this request a version-1 server cannot do, if anything.
    fn needs_version_2(&self) -> Option<&'static str> {
        if self.pty.is_some() {
            Some("terminal sessions (pty)")
        } else if self.login_shell {
            Some("login shells")
        } else if self.user.is_some() {
            Some("user names (it runs commands as its own user)")
        } else {
            None
        }
    }

    /// Runs it in this directory.
    pub fn cwd(mut self, dir: impl Into<Vec<u8>>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Sets an environment variable for it.
    pub fn env(mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Kills its process group after this long.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
}

impl From<&str> for ExecRequest {
    fn from(command: &str) -> Self {
        ExecRequest::new(command)
    }
}

impl From<String> for ExecRequest {
    fn from(command: String) -> Self {
        ExecRequest::new(command)
    }
}

/// Everything a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// All of its stdout.
    pub stdout: Vec<u8>,
    /// All of its stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// The client's side of one channel, as the reader task sees it.
pub(crate) struct ChannelEntry {
    pub events: mpsc::UnboundedSender<ChannelEvent>,
    pub stdin_window: Arc<Window>,
    /// Output bytes the server may still send; more is a protocol violation.
    pub output_allowed: u64,
}

pub(crate) struct Shared {
    /// The protocol version the greeting negotiated.
    pub version: u16,
    pub frames: mpsc::Sender<Frame>,
    pub channels: Mutex<HashMap<u32, ChannelEntry>>,
    next_channel: Mutex<u32>,
    /// Why the connection ended, once it has.
    pub lost: Mutex<Option<String>>,
    pub closed: CancellationToken,
}

impl Shared {
    pub fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<u32, ChannelEntry>> {
        self.channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn lost_reason(&self) -> String {
        self.lost
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned())
    }
}

/// A connection to an rsh server. Clones share it; it closes when the last
/// clone and the last [`RemoteCommand`] from it are dropped (the server then
/// ends any command still running).
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    open: Arc<OpenHandle>,
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

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to a server's Unix socket.
    ///
    /// # Errors
    /// [`ClientError::Connect`] or [`ClientError::Greeting`].
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref();
        let stream =
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|err| ClientError::Connect {
                    endpoint: format!("unix:{}", path.display()),
                    reason: match err.kind() {
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                            format!("{err} (is rsh-server running?)")
                        }
                        _ => err.to_string(),
                    },
                })?;
        Client::over(stream).await
    }

    /// Connects to `endpoint`: a Unix socket, or TCP with TLS (our key from
    /// `options.home`, the server's checked against `known_hosts`).
    ///
    /// # Errors
    /// Any [`ClientError`] about connecting, keys or the greeting.
    pub async fn connect(
        endpoint: &rsh_config::Endpoint,
        options: &crate::ConnectOptions,
    ) -> Result<Client, ClientError> {
        match endpoint {
            rsh_config::Endpoint::Unix(path) => Client::connect_unix(path).await,
            rsh_config::Endpoint::Tcp { host, port } => {
                crate::tls::connect_tls(host, *port, options).await
            }
        }
    }

    /// Speaks rsh over an already-connected (and, for TCP, authenticated)
    /// byte stream.
    ///
    /// # Errors
    /// [`ClientError::Greeting`].
    pub async fn over<S>(mut stream: S) -> Result<Client, ClientError>
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
        });
        tokio::spawn({
            let shared = shared.clone();
            async move {
                let abort = shared.closed.clone();
                if let Err(err) =
                    rsh_proto::io::write_frames(write_half, frames_rx, codec, abort).await
                {
                    connection_lost(&shared, format!("write failed: {err}"));
                }
            }
        });
        tokio::spawn(read_frames(
            FramedRead::new(read_half, codec.with_read_block(READ_BLOCK)),
            shared.clone(),
        ));
        let open = Arc::new(OpenHandle(shared.closed.clone()));
        Ok(Client { shared, open })
    }

    /// The protocol version the greeting negotiated with the server: the
    /// highest both speak (1 with a version-1 server).
    pub fn protocol_version(&self) -> u16 {
        self.shared.version
    }

    /// Starts a command. Its stdin stays open until
    /// [`StdinWriter::close`] (or [`RemoteCommand::close_stdin`]).
    ///
    /// # Errors
    /// [`ClientError::ConnectionLost`] if the connection is gone,
    /// [`ClientError::Unsupported`] if the request needs a newer protocol
    /// version than the server's. A refusal by the server arrives from
    /// [`RemoteCommand::next_event`].
    pub async fn exec(
        &self,
        request: impl Into<ExecRequest>,
    ) -> Result<RemoteCommand, ClientError> {
        let request = request.into();
        if self.shared.version < 2 {
            if let Some(what) = request.needs_version_2() {
                return Err(ClientError::Unsupported {
                    what,
                    version: self.shared.version,
                });
            }
        }
        // Checked here, not by the codec at send time: an oversized frame
        // there would end the whole connection, not just this request.
        let len = 64
            + request.command.len()
            + request.cwd.as_ref().map_or(0, Vec::len)
            + request
                .env
                .iter()
                .map(|(k, v)| 8 + k.len() + v.len())
                .sum::<usize>()
            + request.user.as_ref().map_or(0, Vec::len)
            + request.pty.as_ref().map_or(0, |pty| pty.term.len());
        if len > rsh_proto::MAX_FRAME_LEN {
            return Err(ClientError::RequestTooLarge {
                len,
                max: rsh_proto::MAX_FRAME_LEN,
            });
        }
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let stdin_window = Arc::new(Window::new(0));
        let channel = {
            let mut channels = self.shared.channels();
            if self.shared.closed.is_cancelled() {
                return Err(ClientError::ConnectionLost(self.shared.lost_reason()));
            }
            let mut next = self
                .shared
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
                    events: events_tx,
                    stdin_window: stdin_window.clone(),
                    output_allowed: u64::from(OUTPUT_WINDOW),
                },
            );
            *next
        };
        let exec = Exec {
            channel,
            window: OUTPUT_WINDOW,
            command: request.command,
            cwd: request.cwd,
            env: request.env,
            timeout: request.timeout,
            login_shell: request.login_shell,
            user: request.user,
            pty: request.pty,
        };
        if self.shared.frames.send(Frame::Exec(exec)).await.is_err() {
            self.shared.channels().remove(&channel);
            return Err(ClientError::ConnectionLost(self.shared.lost_reason()));
        }
        Ok(RemoteCommand::new(
            channel,
            self.shared.clone(),
            self.open.clone(),
            events_rx,
            stdin_window,
        ))
    }

    /// Runs a command with empty stdin and collects its whole output.
    ///
    /// # Errors
    /// As [`Client::exec`] and [`RemoteCommand::next_event`].
    pub async fn run(&self, request: impl Into<ExecRequest>) -> Result<Output, ClientError> {
        let command = self.exec(request).await?;
        command.close_stdin().await?;
        command.collect().await
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.is_cancelled()
    }
}

fn connection_lost(shared: &Shared, reason: String) {
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
    let reason = shared.lost_reason();
    for (_, entry) in shared.channels().drain() {
        entry.stdin_window.close();
        let _ = entry.events.send(ChannelEvent::Lost(reason.clone()));
    }
}

/// Routes the server's frames to the commands; ends the connection on the
/// first malformed or unexpected one.
async fn read_frames<R>(mut frames: FramedRead<R, Codec>, shared: Arc<Shared>)
where
    R: AsyncRead + Unpin,
{
    let reason = loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            () = shared.closed.cancelled() => break "connection closed".to_owned(),
        };
        match frame {
            None => break "server closed the connection".to_owned(),
            Some(Err(CodecError::Io(err))) => break err.to_string(),
            Some(Err(err)) => break format!("bad frame from server: {err}"),
            Some(Ok(frame)) => {
                if let Err(reason) = route(&shared, frame) {
                    break reason;
                }
            }
        }
    };
    connection_lost(&shared, reason);
}

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
