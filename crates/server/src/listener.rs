//! Binding endpoints and accepting connections.
//!
//! The Unix socket is guarded twice: its file has mode 0600 inside the 0700
//! `RSH_HOME`, and every accepted peer's credentials are checked, so only the
//! server's own user gets in.
//!
//! A TCP endpoint speaks only TLS 1.3 with both ends authenticated by pinned
//! keys (see `rsh-tls`). What happens before authentication (the silent
//! pool, the line for handshake places, the handshake, the summary of what
//! was closed) is [`crate::preauth`]'s; only after login does a connection
//! take one of `max_connections`. Accept errors back off instead of ending
//! the loop.

use crate::connection::{self, ServerContext};
use crate::log_limit::LogLimiter;
use crate::peer::ConnectionInfo;
use crate::preauth::{self, TlsSetup};
use rsh_config::Endpoint;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Refused connections from other users logged per interval on a Unix
/// socket; the rest are counted and the next line let through says how many.
const STRANGERS_LOGGED: u32 = 10;
const STRANGERS_INTERVAL: Duration = Duration::from_secs(10);

/// Why an endpoint could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// Another server answers on this socket.
    #[error("{0}: another rsh-server is already running on this socket")]
    AlreadyRunning(PathBuf),
    /// The path exists and is something other than a socket.
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A TCP endpoint was asked for without TLS set up.
    #[error("{0}: TCP needs TLS keys (rsh never serves TCP without authentication)")]
    TcpWithoutTls(String),
    /// The host name did not resolve.
    #[error("{0}: cannot resolve the host")]
    Unresolved(String),
    /// The OS refused.
    #[error("{cause}")]
    Io {
        /// The endpoint.
        path: String,
        /// The cause.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: std::io::Error,
    },
}

/// A bound endpoint, ready to accept.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket; its file is removed when the listener is dropped.
    Unix(UnixSocket),
    /// A TCP socket serving TLS with mutual key authentication.
    Tls(TlsListener),
}

/// A listening TCP socket whose connections must pass TLS authentication.
#[derive(Debug)]
pub struct TlsListener {
    listener: TcpListener,
    local: SocketAddr,
    tls: TlsSetup,
}

impl Listener {
    /// Binds an endpoint. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// See [`ListenerError`].
    pub fn bind(endpoint: &Endpoint, tls: Option<&TlsSetup>) -> Result<Self, ListenerError> {
        match (endpoint, tls) {
            (Endpoint::Unix(path), _) => UnixSocket::bind(path).map(Listener::Unix),
            (Endpoint::Tcp { host, port }, Some(tls)) => {
                TlsListener::bind(host, *port, tls.clone()).map(Listener::Tls)
            }
            (Endpoint::Tcp { .. }, None) => Err(ListenerError::TcpWithoutTls(endpoint.to_string())),
        }
    }

    /// The endpoint actually bound (with the real port when 0 was asked).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Listener::Unix(socket) => Endpoint::Unix(socket.path.clone()),
            Listener::Tls(tls) => Endpoint::Tcp {
                host: tls.local.ip().to_string(),
                port: tls.local.port(),
            },
        }
    }

    pub(crate) async fn accept_loop(&self, ctx: ServerContext, limit: Arc<Semaphore>) {
        match self {
            Listener::Unix(socket) => socket.accept_loop(ctx, limit).await,
            Listener::Tls(tls) => tls.accept_loop(ctx, limit).await,
        }
    }
}

/// Takes a connection permit if `limit` is given (backpressure: at the
/// limit we stop accepting and clients wait in the backlog), then the next
/// connection. Accept errors
/// (out of descriptors...) back off and retry. `None` at shutdown.
async fn next_connection<T, F, Fut>(
    ctx: &ServerContext,
    limit: Option<&Arc<Semaphore>>,
    backoff: &mut Duration,
    mut accept: F,
) -> Option<(Option<OwnedSemaphorePermit>, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    loop {
        let permit = match limit {
            Some(limit) => tokio::select! {
                permit = limit.clone().acquire_owned() => Some(permit.ok()?),
                () = ctx.shutdown.cancelled() => return None,
            },
            None => None,
        };
        let accepted = tokio::select! {
            accepted = accept() => accepted,
            () = ctx.shutdown.cancelled() => return None,
        };
        match accepted {
            Ok(connection) => {
                *backoff = Duration::from_millis(10);
                return Some((permit, connection));
            }
            Err(err) => {
                drop(permit);
                if !back_off(ctx, backoff, &err).await {
                    return None;
                }
            }
        }
    }
}

/// Sleeps after a failed accept (out of descriptors...), doubling up to 1 s;
/// `false` at shutdown.
async fn back_off(ctx: &ServerContext, backoff: &mut Duration, err: &std::io::Error) -> bool {
    error!(cause = %err, "accept failed");
    let keep_going = tokio::select! {
        () = tokio::time::sleep(*backoff) => true,
        () = ctx.shutdown.cancelled() => false,
    };
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
    keep_going
}

/// Pending connections the kernel may queue (capped by net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

impl TlsListener {
    fn bind(host: &str, port: u16, tls: TlsSetup) -> Result<Self, ListenerError> {
        let shown = rsh_config::Endpoint::Tcp {
            host: host.to_owned(),
            port,
        }
        .to_string();
        let io_err = |source| ListenerError::Io {
            path: shown.clone(),
            cause: source,
        };
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(io_err)?
            .next()
            .ok_or_else(|| ListenerError::Unresolved(shown.clone()))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io_err)?;
        socket.set_reuseaddr(true).map_err(io_err)?;
        socket.bind(addr).map_err(io_err)?;
        // A deep backlog: a burst of clients waits in the kernel, not refused.
        let listener = socket.listen(LISTEN_BACKLOG).map_err(io_err)?;
        let local = listener.local_addr().map_err(io_err)?;
        Ok(TlsListener {
            listener,
            local,
            tls,
        })
    }

    /// Unlike the Unix socket, no connection permit is taken before
    /// `accept`: an unauthenticated stranger must not hold a place a local
    /// or authorized user needs. Strangers are bounded by the silent pool and
    /// the handshake slots instead; the permit is taken after login.
    async fn accept_loop(&self, ctx: ServerContext, limit: Arc<Semaphore>) {
        let mut backoff = Duration::from_millis(10);
        ctx.tracker
            .spawn(preauth::summarize(self.tls.clone(), ctx.shutdown.clone()));
        while let Some((_, (tcp, addr))) =
            next_connection(&ctx, None, &mut backoff, || self.listener.accept()).await
        {
            let _ = tcp.set_nodelay(true);
            if let Some(idle) = ctx.config.keepalive {
                if let Err(err) = set_keepalive(&tcp, idle) {
                    debug!(cause = %err, "cannot enable TCP keepalive");
                }
            }
            let span = info_span!("conn", peer = %addr, user = tracing::field::Empty);
            // For the sessions' RSH_CONNECTION: the address this client
            // reached (the listener's may be a wildcard).
            let info = ConnectionInfo::Tcp {
                client: addr,
                server: tcp.local_addr().unwrap_or(self.local),
            };
            let ctx = ctx.clone();
            let tls = self.tls.clone();
            let limit = limit.clone();
            ctx.tracker.clone().spawn(
                async move {
                    let shutdown = ctx.shutdown.clone();
                    let authenticated = tokio::select! {
                        authenticated = preauth::authenticate(tcp, addr.ip(), &tls, ctx.config.handshake_timeout) => authenticated,
                        () = shutdown.cancelled() => None,
                    };
                    let Some((stream, user)) = authenticated else {
                        return;
                    };
                    tracing::Span::current().record("user", user.as_str());
                    let permit = tokio::select! {
                        permit = limit.clone().acquire_owned() => permit.ok(),
                        () = shutdown.cancelled() => None,
                    };
                    if permit.is_some() {
                        info!("connected");
                        connection::serve(stream, ctx, info).await;
                        debug!("disconnected");
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

/// Keepalive probes after `idle` without traffic, then every
/// [`KEEPALIVE_INTERVAL`]; the connection fails after
/// [`KEEPALIVE_PROBES`] unanswered ones. A peer that vanished without FIN
/// or RST (host gone, network cut) is then noticed and its commands ended.
pub(crate) fn set_keepalive(tcp: &TcpStream, idle: Duration) -> nix::Result<()> {
    rsh_sys::Keepalive {
        idle,
        interval: KEEPALIVE_INTERVAL.min(idle),
        count: KEEPALIVE_PROBES,
        user_timeout: false,
    }
    .apply(tcp)
}

/// Between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered keepalive probes before the connection fails.
pub const KEEPALIVE_PROBES: u32 = 3;

/// A listening Unix socket that removes its file on drop, if the file is
/// still its own.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    file_id: (u64, u64),
}

impl UnixSocket {
    fn bind(path: &Path) -> Result<Self, ListenerError> {
        let io_err = |source| ListenerError::Io {
            path: path.display().to_string(),
            cause: source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ListenerError::NotASocket(path.to_owned()))
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ListenerError::AlreadyRunning(path.to_owned())),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    info!(path = %path.display(), "replacing stale socket");
                    std::fs::remove_file(path).map_err(io_err)?;
                }
                Err(err) => return Err(io_err(err)),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(err)),
        }
        let listener = bind_unix_listener(path).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        let meta = std::fs::metadata(path).map_err(io_err)?;
        Ok(UnixSocket {
            listener,
            path: path.to_owned(),
            file_id: (meta.dev(), meta.ino()),
        })
    }

    async fn accept_loop(&self, ctx: ServerContext, limit: Arc<Semaphore>) {
        let own_uid = nix::unistd::geteuid().as_raw();
        // The only user let in is ourselves: look the name up once.
        let own_name = user_name(own_uid);
        let mut backoff = Duration::from_millis(10);
        let mut strangers = LogLimiter::new(STRANGERS_INTERVAL, STRANGERS_LOGGED);
        while let Some((permit, (stream, _))) =
            next_connection(&ctx, Some(&limit), &mut backoff, || self.listener.accept()).await
        {
            let cred = match stream.peer_cred() {
                Ok(cred) => cred,
                Err(err) => {
                    warn!(cause = %err, "cannot read peer credentials; closing");
                    continue;
                }
            };
            let pid = cred.pid().map_or_else(|| "?".to_owned(), |p| p.to_string());
            let addr = format!("unix:uid={},pid={pid}", cred.uid());
            if cred.uid() != own_uid {
                // Another user can connect in a loop: a burst of lines,
                // then a count with the next one let through.
                match strangers.check(tokio::time::Instant::now()) {
                    Some(0) => warn!(peer = %addr, "refusing a peer of another user"),
                    Some(suppressed) => warn!(
                        peer = %addr,
                        suppressed,
                        "refusing a peer of another user ({suppressed} more were not logged)"
                    ),
                    None => debug!(peer = %addr, "refusing a peer of another user"),
                }
                continue;
            }
            let span = info_span!("conn", peer = %addr, user = %own_name);
            let info = ConnectionInfo::Unix {
                uid: cred.uid(),
                pid: cred.pid(),
                socket: self.path.clone(),
            };
            let ctx = ctx.clone();
            ctx.tracker.clone().spawn(
                async move {
                    info!("connected");
                    connection::serve(stream, ctx, info).await;
                    debug!("disconnected");
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

/// Binds with a deep backlog (std's is 128): a burst of local clients would
/// otherwise see EAGAIN from `connect`.
fn bind_unix_listener(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
    // -1: as deep as net.core.somaxconn allows.
    listen(&fd, Backlog::MAXALLOWABLE)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|meta| (meta.dev(), meta.ino()) == self.file_id)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}
