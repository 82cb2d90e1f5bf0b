//! What can go wrong talking to a server: the one error type of the client
//! library, shared by every layer.

use rsh_proto::io::GreetError;
use rsh_proto::ErrorKind;

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
