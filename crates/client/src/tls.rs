//! Connecting over TCP: TLS 1.3, our key presented, the server's key checked
//! against `known_hosts` the way ssh checks host keys.

use crate::client::{Client, ClientError};
use rsh_config::RshHome;
use rsh_tls::rustls::pki_types::ServerName;
use rsh_tls::{Fingerprint, Identity, KnownHosts};
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

/// How to connect over TCP.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Where our key (`id`) and `known_hosts` live.
    pub home: RshHome,
    /// What to do with an unknown host key.
    pub host_keys: HostKeyPolicy,
    /// Limit for the TCP connect and the TLS handshake.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Strict host key checking, 10 s connect timeout.
    pub fn new(home: RshHome) -> Self {
        ConnectOptions {
            home,
            host_keys: HostKeyPolicy::Strict,
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// `user@host`, the default comment of a new client key.
pub fn default_comment() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|user| user.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "user".to_owned());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{user}@{host}")
}

/// Our identity, `$RSH_HOME/id`, created (mode 0600) on first use.
///
/// # Errors
/// [`ClientError::Keys`] if it cannot be created or read.
pub fn client_identity(home: &RshHome) -> Result<Identity, ClientError> {
    home.ensure()
        .map_err(|err| ClientError::Keys(err.to_string()))?;
    let path = home.identity_path();
    Identity::load_or_create(&path, &default_comment())
        .map_err(|err| ClientError::Keys(format!("{}: {err}", path.display())))
}

pub(crate) async fn connect_tls(
    host: &str,
    port: u16,
    options: &ConnectOptions,
) -> Result<Client, ClientError> {
    match attempt(host, port, options).await? {
        Attempt::Connected(client) => Ok(client),
        // The user took their time comparing fingerprints; the server's
        // greeting timer has not waited. Connect again, now pinned.
        Attempt::HostKeyRecorded => match attempt(host, port, options).await? {
            Attempt::Connected(client) => Ok(client),
            Attempt::HostKeyRecorded => Err(ClientError::Tls(
                "the host key just recorded was not recognised".to_owned(),
            )),
        },
    }
}

enum Attempt {
    Connected(Client),
    HostKeyRecorded,
}

async fn attempt(host: &str, port: u16, options: &ConnectOptions) -> Result<Attempt, ClientError> {
    let host_port = rsh_tls::host_port(host, port);
    let identity = crate::keycache::identity(&options.home)?;
    let known_hosts_path = options.home.known_hosts_path();
    let known = crate::keycache::known_hosts(&known_hosts_path)
        .map_err(|err| ClientError::Keys(format!("{}: {err}", known_hosts_path.display())))?;
    let pinned = known.lookup(&host_port);
    let (config, presented) = rsh_tls::client_config(&identity, pinned)
        .map_err(|err| ClientError::Tls(err.to_string()))?;
    let connect_err = |reason: String| ClientError::Connect {
        endpoint: host_port.clone(),
        reason,
    };
    let handshake = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|err| connect_err(err.to_string()))?;
        let _ = tcp.set_nodelay(true);
        // Server names are not checked (keys are pinned), but rustls wants one.
        let name =
            ServerName::try_from("rsh.invalid").map_err(|err| ClientError::Tls(err.to_string()))?;
        tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|err| match (pinned, presented.get()) {
                (Some(expected), Some(seen)) if expected != seen => ClientError::HostKeyChanged {
                    host_port: host_port.clone(),
                    expected: expected.to_string(),
                    presented: seen.to_string(),
                    known_hosts: known_hosts_path.display().to_string(),
                },
                _ => ClientError::Tls(format!("TLS handshake with {host_port} failed: {err}")),
            })
    };
    let mut stream = tokio::time::timeout(options.connect_timeout, handshake)
        .await
        .map_err(|_| connect_err(format!("timed out after {:?}", options.connect_timeout)))??;
    // rustls's default 64 KiB of buffered records splits each stdin chunk
    // into several writes.
    stream.get_mut().1.set_buffer_limit(Some(1024 * 1024));

    if pinned.is_none() {
        let seen = rsh_tls::peer_fingerprint(stream.get_ref().1)
            .map_err(|err| ClientError::Tls(err.to_string()))?;
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
        KnownHosts::append(&known_hosts_path, &host_port, &seen)
            .map_err(|err| ClientError::Keys(format!("{}: {err}", known_hosts_path.display())))?;
        tracing::info!(%host_port, fingerprint = %seen, "host key added to known_hosts");
        if asked {
            return Ok(Attempt::HostKeyRecorded);
        }
    }

    let client = Client::over(stream).await.map_err(|err| match err {
        ClientError::NotAuthorized { .. } => ClientError::NotAuthorized {
            key: identity.authorized_keys_line(),
        },
        other => other,
    })?;
    Ok(Attempt::Connected(client))
}
