//! Connecting over TCP: TLS 1.3, our key presented, the server's key checked
//! against `known_hosts` the way ssh checks host keys. It hands back an
//! authenticated stream and the server's key; speaking rsh over it is the
//! caller's (the client layer above).

use crate::error::{closed_by_peer, ClientError, CLOSED_BEFORE_AUTH};
use crate::keycache;
use rsh_config::RshHome;
use rsh_tls::rustls::pki_types::ServerName;
use rsh_tls::stream::TlsStream;
use rsh_tls::{Fingerprint, KnownHosts};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Asked about an unknown host: gets `host:port` and its key, says yes or no.
pub type HostKeyPrompt = Arc<dyn Fn(&str, &Fingerprint) -> bool + Send + Sync>;

/// What to do with a server whose key is not in `known_hosts` yet. A key
/// that differs from the pinned one is always refused, whatever the policy.
#[derive(Clone)]
pub enum HostKeyPolicy {
    /// Refuse it (batch use).
    Strict,
    /// Record it in `known_hosts` and go on (`--accept-new`).
    AcceptNew,
    /// Ask: the callback gets `host:port` and the key, and says yes or no;
    /// yes records it.
    Ask(HostKeyPrompt),
}

impl std::fmt::Debug for HostKeyPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HostKeyPolicy::Strict => "Strict",
            HostKeyPolicy::AcceptNew => "AcceptNew",
            HostKeyPolicy::Ask(_) => "Ask",
        })
    }
}

/// Told `host:port` and the key when a host key is recorded in
/// `known_hosts` (the command line prints ssh's "Permanently added" note).
pub type HostKeyNotice = Arc<dyn Fn(&str, &Fingerprint) + Send + Sync>;

/// Which IP versions a host name may resolve to (ssh's `-4` and `-6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    /// IPv4 or IPv6, in the resolver's order.
    #[default]
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

/// How to connect over TCP.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Where our key (`id`) and `known_hosts` live.
    pub home: RshHome,
    /// Our key file, when not `$RSH_HOME/id` (ssh's `-i`, `IdentityFile`);
    /// it must exist: only the default key is created on first use.
    pub identity: Option<PathBuf>,
    /// What to do with an unknown host key.
    pub host_keys: HostKeyPolicy,
    /// Called when a host key is recorded in `known_hosts`.
    pub host_key_added: Option<HostKeyNotice>,
    /// Limit for the TCP connect and the TLS handshake.
    pub connect_timeout: Duration,
    /// TCP keepalive (ssh's `ServerAliveInterval`): probes start after this
    /// long without traffic and repeat at this interval; `None`: off.
    pub keepalive: Option<Duration>,
    /// Unanswered keepalive probes after which the connection fails (ssh's
    /// `ServerAliveCountMax`); also bounds how long sent data may stay
    /// unacknowledged (`TCP_USER_TIMEOUT`, interval × count).
    pub keepalive_count: u32,
    /// Which IP versions to connect over.
    pub family: AddressFamily,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("home", &self.home)
            .field("identity", &self.identity)
            .field("host_keys", &self.host_keys)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .field("keepalive_count", &self.keepalive_count)
            .field("family", &self.family)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Strict host key checking, 10 s connect timeout, keepalive probes
    /// after 15 s idle (3 unanswered end the connection).
    pub fn new(home: RshHome) -> Self {
        ConnectOptions {
            home,
            identity: None,
            host_keys: HostKeyPolicy::Strict,
            host_key_added: None,
            connect_timeout: Duration::from_secs(10),
            keepalive: Some(Duration::from_secs(15)),
            keepalive_count: 3,
            family: AddressFamily::Any,
        }
    }

    /// The key file this connection presents.
    pub fn identity_path(&self) -> PathBuf {
        self.identity
            .clone()
            .unwrap_or_else(|| self.home.identity_path())
    }
}

/// Keepalive probes after `interval` idle, every `interval`, `count`
/// unanswered fail the connection; unacknowledged data fails it after the
/// same time (keepalive alone does not probe while data is outstanding).
fn set_keepalive(tcp: &TcpStream, interval: Duration, count: u32) -> nix::Result<()> {
    rsh_sys::Keepalive {
        idle: interval,
        interval,
        count,
        user_timeout: true,
    }
    .apply(tcp)
}

/// Connects to the first address of `host` (of the wanted family) that
/// answers, as ssh tries each address in turn.
async fn tcp_connect(host: &str, port: u16, family: AddressFamily) -> std::io::Result<TcpStream> {
    let addrs = tokio::net::lookup_host((host, port)).await?;
    let mut last = None;
    for addr in addrs.filter(|addr| match family {
        AddressFamily::Any => true,
        AddressFamily::V4 => addr.is_ipv4(),
        AddressFamily::V6 => addr.is_ipv6(),
    }) {
        match TcpStream::connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            match family {
                AddressFamily::V4 => "no IPv4 address for this host",
                AddressFamily::V6 => "no IPv6 address for this host",
                AddressFamily::Any => "no address for this host",
            },
        )
    }))
}

/// A TLS connection whose both ends are authenticated at the TLS layer,
/// ready for the rsh greeting.
pub(crate) struct Authenticated {
    /// The TLS stream.
    pub stream: TlsStream<TcpStream>,
    /// The server's key, as pinned in known_hosts.
    pub server_key: Fingerprint,
    /// Our key as an authorized_keys line: a server that refuses it does so
    /// during the greeting, and the error then tells the user what to add.
    pub client_key_line: String,
}

/// How one handshake ended.
pub(crate) enum Handshake {
    /// Connected to a server with a known (or just accepted) key.
    Authenticated(Box<Authenticated>),
    /// The user was asked about an unknown key, said yes, and it was
    /// recorded; connect again (the server's greeting timer has not waited).
    HostKeyRecorded,
}

/// Connects to `host:port` over TCP and runs the TLS handshake: our key
/// presented, the server's checked against known_hosts (an unknown one is
/// handled by `options.host_keys`).
///
/// # Errors
/// [`ClientError::Connect`], [`ClientError::Tls`], [`ClientError::Keys`] and
/// the host key errors.
pub(crate) async fn handshake(
    host: &str,
    port: u16,
    options: &ConnectOptions,
) -> Result<Handshake, ClientError> {
    let host_port = rsh_tls::host_port(host, port);
    let identity = keycache::identity(&options.home, &options.identity_path())?;
    let known_hosts_path = options.home.known_hosts_path();
    let known = keycache::known_hosts(&known_hosts_path)
        .map_err(|err| ClientError::keys(format!("{}: {err}", known_hosts_path.display()), err))?;
    // Every key listed for the host counts (ssh does the same).
    let pinned = known.fingerprints(&host_port);
    let (config, presented) = rsh_tls::client_config(&identity, pinned.iter().copied())
        .map_err(|err| ClientError::tls(err.to_string(), err))?;
    let connect_err = |reason: String, source: Option<std::io::Error>| ClientError::Connect {
        endpoint: host_port.clone(),
        reason,
        source,
    };
    let handshake = async {
        let tcp = tcp_connect(host, port, options.family)
            .await
            .map_err(|err| connect_err(err.to_string(), Some(err)))?;
        let _ = tcp.set_nodelay(true);
        if let Some(interval) = options.keepalive {
            if let Err(err) = set_keepalive(&tcp, interval, options.keepalive_count) {
                tracing::debug!(cause = %err, "cannot enable TCP keepalive");
            }
        }
        // Server names are not checked (keys are pinned), but rustls wants one.
        let name = ServerName::try_from("rsh.invalid")
            .map_err(|err| ClientError::tls(err.to_string(), err))?;
        rsh_tls::stream::connect(config, name, tcp)
            .await
            .map_err(|failed| failed.error)
            .map_err(|err| match presented.get() {
                Some(seen) if !pinned.is_empty() && !pinned.contains(&seen) => {
                    ClientError::HostKeyChanged {
                        host_port: host_port.clone(),
                        expected: pinned
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" or "),
                        presented: seen.to_string(),
                        known_hosts: known_hosts_path.display().to_string(),
                    }
                }
                // A server that drops us before authentication (busy, or
                // its pre-auth limits) just closes: say so, not "eof".
                _ if closed_by_peer(&err) => connect_err(CLOSED_BEFORE_AUTH.to_owned(), Some(err)),
                _ => ClientError::tls(format!("TLS handshake with {host_port} failed: {err}"), err),
            })
    };
    let stream = tokio::time::timeout(options.connect_timeout, handshake)
        .await
        .map_err(|_| {
            connect_err(
                format!("timed out after {:?}", options.connect_timeout),
                None,
            )
        })??;

    if pinned.is_empty() {
        let seen = rsh_tls::peer_fingerprint_of_certs(&stream.peer().certificates)
            .map_err(|err| ClientError::tls(err.to_string(), err))?;
        let asked = match &options.host_keys {
            HostKeyPolicy::Strict => {
                return Err(ClientError::UnknownHost {
                    host_port,
                    fingerprint: seen.to_string(),
                })
            }
            HostKeyPolicy::AcceptNew => false,
            HostKeyPolicy::Ask(ask) => {
                // The prompt reads the terminal: on a blocking thread, so the
                // runtime (one thread in rsh-client) is not stopped meanwhile.
                let (ask, asked_about) = (ask.clone(), host_port.clone());
                let yes = tokio::task::spawn_blocking(move || ask(&asked_about, &seen))
                    .await
                    .unwrap_or(false);
                if !yes {
                    return Err(ClientError::HostKeyNotAccepted(host_port));
                }
                true
            }
        };
        KnownHosts::append(&known_hosts_path, &host_port, &seen).map_err(|err| {
            ClientError::keys(format!("{}: {err}", known_hosts_path.display()), err)
        })?;
        tracing::info!(%host_port, fingerprint = %seen, "host key added to known_hosts");
        if let Some(notice) = &options.host_key_added {
            notice(&host_port, &seen);
        }
        if asked {
            return Ok(Handshake::HostKeyRecorded);
        }
    }

    let server_key = rsh_tls::peer_fingerprint_of_certs(&stream.peer().certificates)
        .map_err(|err| ClientError::tls(err.to_string(), err))?;
    Ok(Handshake::Authenticated(Box::new(Authenticated {
        stream,
        server_key,
        client_key_line: identity.authorized_keys_line(),
    })))
}
