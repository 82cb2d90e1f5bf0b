//! What can go wrong talking to a server: the one error type of the client
//! library, shared by every layer.
//!
//! Errors that come from the OS or from TLS keep that error as their
//! [`source`](std::error::Error::source), so a caller can look at the cause
//! (an [`std::io::ErrorKind`], a rustls alert) and not only at our words.

use rsh_proto::io::GreetError;
use rsh_proto::ErrorKind;

/// The cause of a key or TLS failure: an [`std::io::Error`], an
/// [`rsh_tls::Error`] or a rustls error.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The cause of a lost connection, shared by every command that was on it.
pub type SharedCause = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong talking to a server.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not reach the server.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// Where we tried.
        endpoint: String,
        /// Why it failed, as the user reads it (the cause's words, and a
        /// hint when there is one).
        reason: String,
        /// The OS's error, when there is one (none for a timeout).
        #[source]
        source: Option<std::io::Error>,
    },
    /// The greeting failed (not an rsh server, another protocol version...).
    #[error("{message}")]
    Greeting {
        /// What failed, as the user reads it.
        message: String,
        /// The greeting's error.
        #[source]
        source: GreetError,
    },
    /// The server refused our key. Why (not listed, or its
    /// authorized_keys not trusted) is in the server's log only: TLS gives
    /// the client one alert for all of them.
    #[error("not authorized: the server refused this client's key (its log says why); if the key is not in its authorized_keys yet, add this line there: {key}")]
    NotAuthorized {
        /// Our key, as an authorized_keys line.
        key: String,
    },
    /// The Unix socket is served by another user (neither ours nor root):
    /// anyone may create a socket where the path leads (in /tmp, say), so
    /// nothing is sent to it, as ssh sends nothing to an unknown host.
    #[error("refusing {endpoint}: the server on it runs as uid {uid}, not as this user (uid {own}) or root; another user may be posing as rsh-server, so nothing was sent")]
    ForeignServer {
        /// `unix:PATH`.
        endpoint: String,
        /// The user the socket's server runs as (SO_PEERCRED).
        uid: u32,
        /// Our own (effective) user.
        own: u32,
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
    #[error("{message}")]
    Tls {
        /// What failed, as the user reads it.
        message: String,
        /// The TLS (or I/O) error, when there is one.
        #[source]
        source: Option<Cause>,
    },
    /// Our key or known_hosts could not be read or written.
    #[error("{message}")]
    Keys {
        /// What failed, as the user reads it (the file is named).
        message: String,
        /// The I/O or key-format error.
        #[source]
        source: Cause,
    },
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
    #[error("connection lost: {reason}")]
    ConnectionLost {
        /// Why, as the user reads it.
        reason: String,
        /// The I/O or framing error that ended the connection, when there
        /// is one; every command of the connection shares it.
        #[source]
        source: Option<SharedCause>,
    },
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
            if closed_by_peer(io) {
                return ClientError::Greeting {
                    message: format!(
                        "connection failed during the greeting: {}",
                        CLOSED_BEFORE_AUTH
                    ),
                    source: err,
                };
            }
        }
        ClientError::Greeting {
            message: err.to_string(),
            source: err,
        }
    }
}

/// Why a handshake that the server cut short failed, as the user sees it.
pub(crate) const CLOSED_BEFORE_AUTH: &str =
    "the server closed the connection before authentication (it may be busy, or refusing this client)";

/// Whether an I/O error means the peer closed or reset the connection.
pub(crate) fn closed_by_peer(err: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        err.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}

impl ClientError {
    /// A lost connection (or a local failure that ends the session as
    /// one), for a `reason` with no error behind it.
    pub fn connection_lost(reason: impl Into<String>) -> ClientError {
        ClientError::ConnectionLost {
            reason: reason.into(),
            source: None,
        }
    }

    /// A TLS failure with its cause.
    pub(crate) fn tls(message: impl Into<String>, source: impl Into<Cause>) -> ClientError {
        ClientError::Tls {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// A key or known_hosts failure with its cause.
    pub(crate) fn keys(message: impl Into<String>, source: impl Into<Cause>) -> ClientError {
        ClientError::Keys {
            message: message.into(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn an_io_caused_error_keeps_its_cause() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let err = ClientError::Connect {
            endpoint: "unix:/nowhere".to_owned(),
            reason: refused.to_string(),
            source: Some(refused),
        };
        let cause = err.source().expect("a source");
        let io = cause
            .downcast_ref::<std::io::Error>()
            .expect("the io::Error");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);

        let err = ClientError::keys(
            "/nowhere/id: permission denied",
            std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        );
        assert!(err
            .source()
            .is_some_and(|cause| cause.is::<std::io::Error>()));
    }
}
