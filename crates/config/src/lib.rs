//! What rsh's server and client agree on outside the wire format: where
//! `RSH_HOME` is and what lives in it, and how endpoint addresses are written.
//!
//! Modules: [`ssh_config`] reads the client's `$RSH_HOME/config` (ssh_config
//! syntax) and resolves a destination; [`dest`] parses the client's DEST
//! argument; [`ready`] is the server's `--ready-file`, written by the server
//! and read by supervisors (the test harness, benchmarks).
//!
//! `RSH_HOME` is to rsh what `~/.ssh` is to ssh: `$RSH_HOME` if set, otherwise
//! `~/.rsh`, created with mode 0700. It holds the default Unix socket
//! (`rsh.sock`), the keys and the trust files. The server uses the keys only
//! if the directory and every one above it are safe from other users (see
//! `rsh_tls::trust`, which checks it, as sshd's StrictModes does).
#![deny(missing_docs)]

use std::fmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub mod dest;
pub mod ready;
pub mod ssh_config;

pub use dest::{reconcile_port, Dest, Target};
pub use ready::{ReadyFile, ReadyFileError};
pub use ssh_config::{ClientConfig, ConfigFileError, Overrides, Resolved};

/// Environment variable that overrides the rsh home directory.
pub const RSH_HOME_ENV: &str = "RSH_HOME";
/// TCP port used when an address names none.
pub const DEFAULT_TCP_PORT: u16 = 7022;

/// Errors finding or preparing `RSH_HOME`, or parsing an address.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Neither `RSH_HOME` nor `HOME` is set.
    #[error("cannot find the rsh home: set RSH_HOME or HOME")]
    NoHome,
    /// The directory could not be created or inspected.
    #[error("cannot prepare {path}: {cause}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: std::io::Error,
    },
    /// An address that is neither `unix:PATH` nor `HOST[:PORT]`.
    #[error("invalid address {addr:?}: {reason}")]
    BadAddress {
        /// What was given.
        addr: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `-p` and the port written in DEST differ.
    #[error("port {flag} from -p disagrees with port {dest} in DEST")]
    PortConflict {
        /// The port given with `-p`.
        flag: u16,
        /// The port written in DEST.
        dest: u16,
    },
}

/// The files under an rsh home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RshHome {
    dir: PathBuf,
}

impl RshHome {
    /// The home named by the environment: `$RSH_HOME`, else `$HOME/.rsh`.
    /// Nothing is created; see [`RshHome::ensure`].
    ///
    /// # Errors
    /// [`ConfigError::NoHome`] if neither variable is set.
    pub fn from_env() -> Result<Self, ConfigError> {
        if let Some(dir) = std::env::var_os(RSH_HOME_ENV).filter(|v| !v.is_empty()) {
            return Ok(RshHome::at(dir));
        }
        let home = std::env::var_os("HOME")
            .filter(|v| !v.is_empty())
            .ok_or(ConfigError::NoHome)?;
        Ok(RshHome::at(Path::new(&home).join(".rsh")))
    }

    /// A home at an explicit directory.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        RshHome { dir: dir.into() }
    }

    /// Creates the directory (mode 0700) if it is missing. An existing
    /// directory keeps its mode, as ssh leaves `~/.ssh` alone.
    ///
    /// # Errors
    /// [`ConfigError::Io`] if it cannot be created.
    pub fn ensure(&self) -> Result<&Self, ConfigError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|source| ConfigError::Io {
                path: self.dir.clone(),
                cause: source,
            })?;
        Ok(self)
    }

    /// The directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The server's default Unix socket, `rsh.sock`.
    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("rsh.sock")
    }

    /// The server's host key, `host_key`.
    pub fn host_key_path(&self) -> PathBuf {
        self.dir.join("host_key")
    }

    /// The client's identity, `id`.
    pub fn identity_path(&self) -> PathBuf {
        self.dir.join("id")
    }

    /// Client keys the server accepts, `authorized_keys`.
    pub fn authorized_keys_path(&self) -> PathBuf {
        self.dir.join("authorized_keys")
    }

    /// Host keys the client has pinned, `known_hosts`.
    pub fn known_hosts_path(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// The client's configuration file, `config` (ssh_config syntax; see
    /// [`ssh_config`]).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config")
    }
}

/// Where a server listens or a client connects.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// A Unix socket path, written `unix:PATH`.
    Unix(PathBuf),
    /// A TCP host and port, written `HOST[:PORT]` or `[IPV6][:PORT]`.
    Tcp {
        /// Host name or IP address (IPv6 without brackets).
        host: String,
        /// Port.
        port: u16,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = ConfigError;

    fn from_str(addr: &str) -> Result<Self, ConfigError> {
        let bad = |reason| ConfigError::BadAddress {
            addr: addr.to_owned(),
            reason,
        };
        if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        if addr.is_empty() {
            return Err(bad("empty address"));
        }
        let parse_port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| bad("port is not a number 0-65535"))
        };
        if let Some(rest) = addr.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address inside [...]"));
            }
            let port = match after {
                "" => DEFAULT_TCP_PORT,
                _ => parse_port(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                )?,
            };
            return Ok(Endpoint::Tcp {
                host: host.to_owned(),
                port,
            });
        }
        if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            // A bare IPv6 address: no port can follow without brackets.
            return Ok(Endpoint::Tcp {
                host: addr.to_owned(),
                port: DEFAULT_TCP_PORT,
            });
        }
        let (host, port) = match addr.rsplit_once(':') {
            Some((host, port)) => (host, parse_port(port)?),
            None => (addr, DEFAULT_TCP_PORT),
        };
        if host.is_empty() || host.contains(['/', ' ', ':']) {
            return Err(bad("not a host name or address"));
        }
        Ok(Endpoint::Tcp {
            host: host.to_owned(),
            port,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn ep(s: &str) -> Endpoint {
        s.parse().expect("valid address")
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(ep("unix:/tmp/x.sock"), Endpoint::Unix("/tmp/x.sock".into()));
        assert_eq!(
            ep("example.org"),
            Endpoint::Tcp {
                host: "example.org".into(),
                port: 7022
            }
        );
        assert_eq!(
            ep("127.0.0.1:99"),
            Endpoint::Tcp {
                host: "127.0.0.1".into(),
                port: 99
            }
        );
        assert_eq!(
            ep("[::1]:7000"),
            Endpoint::Tcp {
                host: "::1".into(),
                port: 7000
            }
        );
        assert_eq!(ep("[::1]").to_string(), "[::1]:7022");
        assert_eq!(ep("::1").to_string(), "[::1]:7022");
        for bad in [
            "",
            "unix:",
            "host:port",
            "[::1",
            "[nope]:1",
            "h:70000",
            "[::1]x",
        ] {
            assert!(bad.parse::<Endpoint>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn ensure_creates_0700() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = RshHome::at(tmp.path().join("h"));
        home.ensure().expect("create");
        let mode = std::fs::metadata(home.dir())
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(home.socket_path(), tmp.path().join("h/rsh.sock"));
    }
}
