//! Where a connection's client is: the one fact about the peer that the
//! commands it starts are told (`RSH_CONNECTION`, as sshd's
//! `SSH_CONNECTION`). The listeners fill it in; the sessions read it.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

/// Where the client is, for `RSH_CONNECTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionInfo {
    /// A TCP (TLS) connection.
    Tcp {
        /// The client's address.
        client: SocketAddr,
        /// The server's address the client connected to.
        server: SocketAddr,
    },
    /// A connection on the Unix socket.
    Unix {
        /// The peer's uid (the server's own: others are refused).
        uid: u32,
        /// The peer's pid, if the kernel told.
        pid: Option<i32>,
        /// The socket's path.
        socket: PathBuf,
    },
    /// A stream handed to `serve_connection` by an embedding (a
    /// test over an in-memory pipe, say): only the name it gave the peer
    /// is known.
    Embedded {
        /// The peer's name, as the embedding gave it.
        peer: String,
    },
}

impl ConnectionInfo {
    /// The value of `RSH_CONNECTION`: four space-separated fields, as
    /// sshd's `SSH_CONNECTION`.
    ///
    /// - TCP: `CLIENT-IP CLIENT-PORT SERVER-IP SERVER-PORT`
    ///   (`192.0.2.7 50122 192.0.2.1 7022`; IPv6 without brackets).
    /// - Unix socket: `unix:uid=UID,pid=PID 0 unix:SOCKET-PATH 0` (the peer
    ///   as the server's logs name it; `pid=?` if unknown). The ports are 0,
    ///   so scripts that split the value into four fields and treat the
    ///   second and fourth as numbers keep working; the `unix:` prefix tells
    ///   it is not an IP address.
    /// - Embedded: `embedded:PEER 0 embedded: 0`, with any whitespace in the
    ///   peer's name replaced by `_` (four fields still).
    pub fn to_env(&self) -> OsString {
        match self {
            ConnectionInfo::Tcp { client, server } => format!(
                "{} {} {} {}",
                client.ip(),
                client.port(),
                server.ip(),
                server.port()
            )
            .into(),
            ConnectionInfo::Unix { uid, pid, socket } => {
                let pid = pid.map_or_else(|| "?".to_owned(), |pid| pid.to_string());
                let mut value = format!("unix:uid={uid},pid={pid} 0 unix:").into_bytes();
                value.extend_from_slice(socket.as_os_str().as_bytes());
                value.extend_from_slice(b" 0");
                OsString::from_vec(value)
            }
            ConnectionInfo::Embedded { peer } => {
                let peer: String = peer
                    .chars()
                    .map(|c| if c.is_whitespace() { '_' } else { c })
                    .collect();
                format!("embedded:{peer} 0 embedded: 0").into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsh_connection_for_the_unix_socket_has_four_fields() {
        let info = ConnectionInfo::Unix {
            uid: 1000,
            pid: Some(4242),
            socket: PathBuf::from("/run/user/1000/rsh.sock"),
        };
        assert_eq!(
            info.to_env(),
            OsString::from("unix:uid=1000,pid=4242 0 unix:/run/user/1000/rsh.sock 0")
        );
        let v6 = ConnectionInfo::Tcp {
            client: "[::1]:50122".parse().expect("address"),
            server: "[::1]:7022".parse().expect("address"),
        };
        assert_eq!(v6.to_env(), OsString::from("::1 50122 ::1 7022"));
        // Four fields whatever name an embedding gave its peer.
        let embedded = ConnectionInfo::Embedded {
            peer: "test peer\t1".into(),
        };
        assert_eq!(
            embedded.to_env(),
            OsString::from("embedded:test_peer_1 0 embedded: 0")
        );
    }
}
