//! Binding endpoints and accepting connections.
//!
//! The Unix socket is guarded twice: its file has mode 0600 inside the 0700
//! `RSH_HOME`, and every accepted peer's credentials are checked, so only the
//! server's own user gets in.

use crate::connection::{self, Peer, ServerContext};
use rsh_config::Endpoint;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tracing::{error, info, info_span, warn, Instrument};

/// Why an endpoint could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// Another server answers on this socket.
    #[error("{0}: another rsh-server is already running on this socket")]
    AlreadyRunning(PathBuf),
    /// The path exists and is something other than a socket.
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// TCP endpoints are not served by this build.
    #[error("{0}: TCP listening is not available (rsh serves TCP only over TLS)")]
    TcpUnsupported(String),
    /// The OS refused.
    #[error("{path}: {source}")]
    Io {
        /// The endpoint.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A bound endpoint, ready to accept.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket; its file is removed when the listener is dropped.
    Unix(UnixSocket),
}

impl Listener {
    /// Binds an endpoint. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// See [`ListenerError`].
    pub fn bind(endpoint: &Endpoint) -> Result<Self, ListenerError> {
        match endpoint {
            Endpoint::Unix(path) => UnixSocket::bind(path).map(Listener::Unix),
            Endpoint::Tcp { .. } => Err(ListenerError::TcpUnsupported(endpoint.to_string())),
        }
    }

    /// The endpoint actually bound.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Listener::Unix(socket) => Endpoint::Unix(socket.path.clone()),
        }
    }

    pub(crate) async fn accept_loop(&self, ctx: ServerContext, limit: Arc<Semaphore>) {
        match self {
            Listener::Unix(socket) => socket.accept_loop(ctx, limit).await,
        }
    }
}

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
            source,
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
        let listener = UnixListener::bind(path).map_err(io_err)?;
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
        let mut backoff = Duration::from_millis(10);
        loop {
            let permit = tokio::select! {
                permit = limit.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                () = ctx.shutdown.cancelled() => return,
            };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = ctx.shutdown.cancelled() => return,
            };
            let stream = match accepted {
                Ok((stream, _)) => {
                    backoff = Duration::from_millis(10);
                    stream
                }
                Err(err) => {
                    // Out of descriptors and the like: back off, keep serving.
                    error!(cause = %err, "accept failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = ctx.shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
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
                warn!(peer = %addr, "refusing a peer of another user");
                continue;
            }
            let peer = Peer {
                addr,
                user: user_name(cred.uid()),
            };
            let span = info_span!("conn", peer = %peer.addr, user = %peer.user);
            let ctx = ctx.clone();
            ctx.tracker.clone().spawn(
                async move {
                    info!("connected");
                    connection::serve(stream, ctx).await;
                    info!("disconnected");
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
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
