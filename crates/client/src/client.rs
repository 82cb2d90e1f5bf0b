//! The top layer of the client library: [`Client`], one connection to a
//! server (over a Unix socket, or TCP through [`crate::tls`]), and
//! [`ExecRequest`], what to run on it. Built on [`crate::connection`] (the
//! shared state and its tasks) and [`crate::command`] (one running command).

use crate::command::Output;
use crate::command::RemoteCommand;
use crate::connection::{self, OpenHandle, ServerAlive, Shared, OUTPUT_WINDOW};
use crate::error::ClientError;
use crate::tls::{self, Handshake};
use rsh_proto::{Exec, Frame, PtyRequest, PtySize, Window};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

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
    /// one it runs as ([`ErrorKind::WrongUser`](rsh_proto::ErrorKind::WrongUser)). Needs protocol version 2.
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

/// A connection to an rsh server. Clones share it; it closes when the last
/// clone and the last [`RemoteCommand`] from it are dropped (the server then
/// ends any command still running).
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    open: Arc<OpenHandle>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to a server's Unix socket, if the server on it runs as our
    /// own user or root (checked with the socket's peer credentials before
    /// anything is sent).
    ///
    /// # Errors
    /// [`ClientError::Connect`], [`ClientError::ForeignServer`] or
    /// [`ClientError::Greeting`].
    pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        Client::connect_unix_probing(path.as_ref(), None).await
    }

    async fn connect_unix_probing(
        path: &Path,
        alive: Option<ServerAlive>,
    ) -> Result<Client, ClientError> {
        let endpoint = || format!("unix:{}", path.display());
        let stream =
            tokio::net::UnixStream::connect(path)
                .await
                .map_err(|err| ClientError::Connect {
                    endpoint: endpoint(),
                    reason: match err.kind() {
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                            format!("{err} (is rsh-server running?)")
                        }
                        _ => err.to_string(),
                    },
                    source: Some(err),
                })?;
        // Whoever can create the path can listen there: a socket outside
        // RSH_HOME may belong to another user, who would get our command
        // and stdin and answer with output of their choosing.
        let server = stream.peer_cred().map_err(|err| ClientError::Connect {
            endpoint: endpoint(),
            reason: format!("cannot learn which user serves the socket: {err}"),
            source: Some(err),
        })?;
        let own = nix::unistd::geteuid().as_raw();
        if server.uid() != own && server.uid() != 0 {
            return Err(ClientError::ForeignServer {
                endpoint: endpoint(),
                uid: server.uid(),
                own,
            });
        }
        Client::over_probing(stream, alive).await
    }

    /// Connects to `endpoint`: a Unix socket, or TCP with TLS (our key from
    /// `options.home`, the server's checked against `known_hosts`).
    ///
    /// With `options.keepalive` set and a server that speaks protocol
    /// version 3, the server is also probed after that long without a frame
    /// from it, and given up after `options.keepalive_count` unanswered
    /// probes (ssh's `ServerAliveInterval`, `ServerAliveCountMax`).
    ///
    /// # Errors
    /// Any [`ClientError`] about connecting, keys or the greeting.
    pub async fn connect(
        endpoint: &rsh_config::Endpoint,
        options: &tls::ConnectOptions,
    ) -> Result<Client, ClientError> {
        let alive = |server: String| {
            options.keepalive.map(|interval| ServerAlive {
                interval,
                count_max: options.keepalive_count,
                server,
            })
        };
        match endpoint {
            rsh_config::Endpoint::Unix(path) => {
                Client::connect_unix_probing(path, alive(endpoint.to_string())).await
            }
            rsh_config::Endpoint::Tcp { host, port } => {
                Client::connect_tls(host, *port, options, alive(host.clone())).await
            }
        }
    }

    /// TCP with TLS: the handshake (retried once after the user accepted a
    /// new host key), then the greeting inside TLS.
    async fn connect_tls(
        host: &str,
        port: u16,
        options: &tls::ConnectOptions,
        alive: Option<ServerAlive>,
    ) -> Result<Client, ClientError> {
        for _ in 0..2 {
            let auth = match tls::handshake(host, port, options).await? {
                Handshake::Authenticated(auth) => auth,
                Handshake::HostKeyRecorded => continue,
            };
            let tls::Authenticated {
                stream,
                server_key,
                client_key_line,
            } = *auth;
            tracing::debug!(%server_key, "TLS handshake done");
            return Client::over_probing(stream, alive)
                .await
                .map_err(|err| match err {
                    ClientError::NotAuthorized { .. } => ClientError::NotAuthorized {
                        key: client_key_line,
                    },
                    other => other,
                });
        }
        Err(ClientError::Tls {
            message: "the host key just recorded was not recognised".to_owned(),
            source: None,
        })
    }

    /// Speaks rsh over an already-connected (and, for TCP, authenticated)
    /// byte stream.
    ///
    /// # Errors
    /// [`ClientError::Greeting`].
    pub async fn over<S>(stream: S) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Client::over_probing(stream, None).await
    }

    /// As [`Client::over`], probing the server as `alive` says (on a
    /// version-3 connection; an older server is never probed).
    ///
    /// # Errors
    /// [`ClientError::Greeting`].
    pub async fn over_probing<S>(
        stream: S,
        alive: Option<ServerAlive>,
    ) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (shared, open) = connection::start(stream, alive).await?;
        Ok(Client { shared, open })
    }

    /// The protocol version the greeting negotiated with the server: the
    /// highest both speak (1 with a version-1 server).
    pub fn protocol_version(&self) -> u16 {
        self.shared.version
    }

    /// Starts a command. Its stdin stays open until
    /// [`StdinWriter::close`](crate::command::StdinWriter::close) (or [`RemoteCommand::close_stdin`]).
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
        let channel = self.shared.open_channel(events_tx, stdin_window.clone())?;
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
        if let Err(err) = self.shared.send(Frame::Exec(exec)).await {
            self.shared.forget_channel(channel);
            return Err(err);
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

    /// Whether the server has said it is shutting down (version 3 on; an
    /// older server never says so): its commands are then ended after its
    /// shutdown grace, as a kill would end them. For telling a command that
    /// was killed from one that a server's shutdown ended.
    pub fn server_is_leaving(&self) -> bool {
        self.shared
            .server_leaving
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}
