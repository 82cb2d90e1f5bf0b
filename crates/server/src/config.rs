use std::path::PathBuf;
use std::time::Duration;

/// Tunables of a server; [`Default`] gives the daemon's defaults.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Shell that runs each command as `SHELL -c COMMAND`.
    pub shell: PathBuf,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Commands running at once on one connection.
    pub max_channels_per_connection: usize,
    /// Between SIGTERM and SIGKILL when a command's group is ended.
    pub kill_grace: Duration,
    /// How long running commands may go on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// After a command's shell exits, how long output may stay idle (pipes
    /// held open by a background process) before the rest of the group is
    /// ended and the exit status sent.
    pub linger: Duration,
    /// Stdin window granted to the client per command, in bytes, as the
    /// stdin budget allows.
    pub stdin_window: u32,
    /// Stdin bytes all connections together may have in flight to the
    /// server (granted as window or buffered, not yet written to a pipe).
    pub stdin_budget: u64,
    /// Largest output chunk read from a pipe and sent in one frame.
    pub chunk_size: usize,
    /// Time a peer has to send its greeting.
    pub handshake_timeout: Duration,
    /// TCP keepalive: probes start after this long without traffic (`None`:
    /// off), so a peer that vanished without closing is noticed.
    pub keepalive: Option<Duration>,
    /// Once the first byte of a frame has arrived, how long the rest may
    /// take; a connection left with half a frame longer is closed.
    pub frame_timeout: Duration,
    /// sshd's `ClientAliveInterval`: after this long without a frame from a
    /// version-3 client, send it a Ping (`None`: never).
    pub client_alive_interval: Option<Duration>,
    /// sshd's `ClientAliveCountMax`: Pings left unanswered before the
    /// connection is closed and its commands ended.
    pub client_alive_count_max: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            shell: PathBuf::from("/bin/sh"),
            max_connections: 4096,
            max_channels_per_connection: 64,
            kill_grace: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            linger: Duration::from_secs(2),
            stdin_window: 1024 * 1024,
            stdin_budget: 64 * 1024 * 1024,
            chunk_size: rsh_proto::MAX_DATA_LEN,
            handshake_timeout: Duration::from_secs(10),
            keepalive: Some(Duration::from_secs(15)),
            frame_timeout: Duration::from_secs(30),
            client_alive_interval: None,
            client_alive_count_max: 3,
        }
    }
}
