//! The client's DEST argument, as ssh users write it: `[user@]host[:port]`,
//! `[user@][ipv6][:port]`, a bare IPv6 address, `unix:PATH`
//! (`user@unix:PATH` too), or a `Host` alias of the config file (a host
//! without a port; the caller resolves it with
//! [`crate::ssh_config::ClientConfig::resolve`]).
//!
//! Unlike [`crate::Endpoint`], the port stays optional: a port written in
//! DEST, one given with `-p` and one from the config file are different
//! things, and [`reconcile_port`] refuses a DEST and a `-p` that disagree.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::{ConfigError, Endpoint};

/// Where DEST points.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// A Unix socket path (`unix:PATH`).
    Unix(PathBuf),
    /// A host name, address or config alias, and a port if DEST had one.
    Host {
        /// Name, alias or IP address (IPv6 without brackets).
        host: String,
        /// The port written in DEST.
        port: Option<u16>,
    },
}

/// A parsed DEST.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Dest {
    /// The user before `@`, if any.
    pub user: Option<String>,
    /// The rest.
    pub target: Target,
}

impl Dest {
    /// The host (or alias) to look up in the config file; `None` for a Unix
    /// socket.
    pub fn host(&self) -> Option<&str> {
        match &self.target {
            Target::Host { host, .. } => Some(host),
            Target::Unix(_) => None,
        }
    }

    /// The port written in DEST.
    pub fn port(&self) -> Option<u16> {
        match self.target {
            Target::Host { port, .. } => port,
            Target::Unix(_) => None,
        }
    }

    /// The endpoint to connect to: `host` (the resolved `HostName`, or the
    /// DEST host when `None`) and `port` (resolved, else
    /// [`crate::DEFAULT_TCP_PORT`]). A Unix DEST ignores both.
    pub fn endpoint(&self, host: Option<&str>, port: Option<u16>) -> Endpoint {
        match &self.target {
            Target::Unix(path) => Endpoint::Unix(path.clone()),
            Target::Host { host: own, .. } => Endpoint::Tcp {
                host: host.unwrap_or(own).to_owned(),
                port: port.unwrap_or(crate::DEFAULT_TCP_PORT),
            },
        }
    }
}

impl fmt::Display for Dest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match &self.target {
            Target::Unix(path) => write!(f, "unix:{}", path.display()),
            Target::Host { host, port } => {
                let v6 = host.contains(':');
                match (v6, port) {
                    (true, Some(port)) => write!(f, "[{host}]:{port}"),
                    (true, None) => write!(f, "[{host}]"),
                    (false, Some(port)) => write!(f, "{host}:{port}"),
                    (false, None) => f.write_str(host),
                }
            }
        }
    }
}

impl FromStr for Dest {
    type Err = ConfigError;

    fn from_str(dest: &str) -> Result<Self, ConfigError> {
        let bad = |reason| ConfigError::BadAddress {
            addr: dest.to_owned(),
            reason,
        };
        // `unix:` first: a socket path may hold an `@`.
        let (user, rest) = if dest.starts_with("unix:") {
            (None, dest)
        } else if let Some((user, _)) = dest.split_once("@unix:") {
            (Some(user), &dest[user.len() + 1..])
        } else {
            // The last `@`, as ssh: user names may contain one.
            match dest.rsplit_once('@') {
                Some((user, host)) => (Some(user), host),
                None => (None, dest),
            }
        };
        if user.is_some_and(str::is_empty) {
            return Err(bad("empty user name before '@'"));
        }
        let user = user.map(str::to_owned);
        if let Some(path) = rest.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("unix: needs a socket path"));
            }
            return Ok(Dest {
                user,
                target: Target::Unix(PathBuf::from(path)),
            });
        }
        let parse_port = |p: &str| match p.parse::<u16>() {
            Ok(port) if port != 0 => Ok(port),
            _ => Err(bad("port is not a number 1-65535")),
        };
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(|| bad("missing ']'"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("not an IPv6 address inside [...]"));
            }
            let port = match after {
                "" => None,
                _ => Some(parse_port(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' after ']'"))?,
                )?),
            };
            (host, port)
        } else if rest.parse::<std::net::Ipv6Addr>().is_ok() {
            // A bare IPv6 address: no port can follow without brackets.
            (rest, None)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(parse_port(port)?)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        if host.starts_with('-') {
            // As ssh: a host that reads as an option is an injection attempt.
            return Err(bad("a host name cannot start with '-'"));
        }
        if host.contains(|c: char| c == '/' || c.is_whitespace() || c == '@')
            || (host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err())
        {
            return Err(bad("not a host name, address or alias"));
        }
        Ok(Dest {
            user,
            target: Target::Host {
                host: host.to_owned(),
                port,
            },
        })
    }
}

/// The port to use given `-p` (`flag`) and the port written in DEST: either
/// one, or both when they agree.
///
/// # Errors
/// [`ConfigError::PortConflict`] when both are given and differ.
pub fn reconcile_port(flag: Option<u16>, dest: Option<u16>) -> Result<Option<u16>, ConfigError> {
    match (flag, dest) {
        (Some(flag), Some(dest)) if flag != dest => Err(ConfigError::PortConflict { flag, dest }),
        (flag, dest) => Ok(flag.or(dest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(s: &str) -> Dest {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn host(user: Option<&str>, host: &str, port: Option<u16>) -> Dest {
        Dest {
            user: user.map(str::to_owned),
            target: Target::Host {
                host: host.to_owned(),
                port,
            },
        }
    }

    #[test]
    fn parses_every_form() {
        assert_eq!(dest("web1"), host(None, "web1", None));
        assert_eq!(dest("alice@web1"), host(Some("alice"), "web1", None));
        assert_eq!(dest("web1:2222"), host(None, "web1", Some(2222)));
        assert_eq!(
            dest("alice@10.0.0.1:22"),
            host(Some("alice"), "10.0.0.1", Some(22))
        );
        assert_eq!(dest("[::1]:7000"), host(None, "::1", Some(7000)));
        assert_eq!(dest("bob@[fe80::1]"), host(Some("bob"), "fe80::1", None));
        assert_eq!(dest("::1"), host(None, "::1", None));
        assert_eq!(
            dest("a@b@host"),
            host(Some("a@b"), "host", None),
            "the last @ splits, as ssh"
        );
        assert_eq!(
            dest("unix:/tmp/a@b.sock"),
            Dest {
                user: None,
                target: Target::Unix("/tmp/a@b.sock".into())
            }
        );
        assert_eq!(
            dest("carol@unix:/run/rsh.sock"),
            Dest {
                user: Some("carol".into()),
                target: Target::Unix("/run/rsh.sock".into())
            }
        );
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "@host",
            "unix:",
            "u@unix:",
            "host:",
            "host:0",
            "host:http",
            "host:70000",
            "[::1",
            "[nope]:1",
            "[::1]x",
            "a b",
            "a/b",
            "a:b:c",
            "user@",
            "-oProxyCommand=x",
            "u@-x:22",
        ] {
            assert!(bad.parse::<Dest>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "web1",
            "alice@web1:2222",
            "[::1]:7000",
            "[::1]",
            "unix:/tmp/x.sock",
            "u@unix:/tmp/x",
        ] {
            assert_eq!(dest(s).to_string(), s);
            assert_eq!(dest(&dest(s).to_string()), dest(s));
        }
    }

    #[test]
    fn endpoint_uses_resolved_values() {
        assert_eq!(
            dest("alias").endpoint(Some("10.1.1.1"), Some(9)),
            Endpoint::Tcp {
                host: "10.1.1.1".into(),
                port: 9
            }
        );
        assert_eq!(dest("[::1]").endpoint(None, None).to_string(), "[::1]:7022");
        assert_eq!(
            dest("unix:/s").endpoint(Some("x"), Some(1)),
            Endpoint::Unix("/s".into())
        );
    }

    #[test]
    fn port_flag_and_dest_must_agree() {
        assert_eq!(reconcile_port(None, None).ok(), Some(None));
        assert_eq!(reconcile_port(Some(22), None).ok(), Some(Some(22)));
        assert_eq!(reconcile_port(None, Some(2222)).ok(), Some(Some(2222)));
        assert_eq!(reconcile_port(Some(22), Some(22)).ok(), Some(Some(22)));
        let err = reconcile_port(Some(22), Some(2222)).expect_err("disagree");
        assert_eq!(
            err.to_string(),
            "port 22 from -p disagrees with port 2222 in DEST"
        );
    }
}
