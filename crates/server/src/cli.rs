//! `rsh-server`'s command line: the daemon's `main`, kept in the library so
//! the root package's thin binary (and `cargo install --path .`) can run it.

use crate::ready::ReadyFile;
use crate::{Listener, PreAuthLimits, Server, ServerConfig, TlsSetup};
use anyhow::Context;
use clap::Parser;
use rsh_config::{Endpoint, RshHome};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

/// Run commands for rsh clients and stream their output back.
///
/// Each command runs as `SHELL -c COMMAND` in its own process group; its
/// stdout and stderr are streamed back as they are produced, then its exit
/// status. The Unix socket admits only this user's processes (file mode 0600
/// and peer credentials).
///
/// A TCP endpoint (HOST:PORT, [IPV6]:PORT) speaks only TLS 1.3 with both
/// ends authenticated by keys: the host key (created on first start) and the
/// client keys listed in authorized_keys (re-read on every connection).
///
/// Files live in RSH_HOME (default ~/.rsh, created with mode 0700): rsh.sock,
/// host_key, authorized_keys. Like sshd's StrictModes, the keys are used only
/// if they, RSH_HOME and every directory above it are owned by this user or
/// root and not writable by group or others (a sticky directory such as /tmp
/// is fine above RSH_HOME); otherwise the server refuses to start, or, if the
/// file changes later, refuses the connection and logs why. SIGINT, SIGTERM or SIGHUP stops accepting, gives
/// running commands the shutdown grace, ends the rest, removes the socket and
/// exits 0.
#[derive(Debug, Parser)]
#[command(name = "rsh-server", version)]
struct Args {
    /// Endpoint to listen on: unix:PATH, HOST[:PORT] or [IPV6][:PORT]
    /// (TCP port 7022 by default). Repeat for several.
    /// Default: unix:$RSH_HOME/rsh.sock.
    #[arg(short, long = "listen", value_name = "ADDR")]
    listen: Vec<Endpoint>,

    /// Print the host key's fingerprint (creating the key if needed) and exit.
    #[arg(long)]
    fingerprint: bool,

    /// Seconds a TCP client has to complete the TLS handshake and greeting.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    handshake_timeout: f64,

    /// TLS handshakes in progress at once (like sshd's MaxStartups); more
    /// wait in line for a place. A handshake that has stalled (no progress
    /// for 2 s) gives its place up to one that waits; honest ones are never
    /// pushed out. Silent connections do not count.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_startups: usize,

    /// TCP connections that have not sent a byte yet; beyond this the one
    /// silent longest is dropped, so a flood of silent connections cannot
    /// lock users out.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_silent: usize,

    /// TCP connections waiting in line for a handshake place; beyond this a
    /// newcomer is turned away.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_queued: usize,

    /// Seconds without traffic before TCP keepalive probes start on a
    /// client connection (then every 5 s; 3 unanswered close it), so a
    /// client that vanished without closing is noticed. 0 turns it off.
    #[arg(long, value_name = "SECS", default_value_t = 15.0)]
    keepalive: f64,

    /// Seconds a frame may stay half-received: once its first byte has
    /// arrived, the rest must follow within this, or the connection is
    /// closed.
    #[arg(long, value_name = "SECS", default_value_t = 30.0)]
    frame_timeout: f64,

    /// Shell that runs each command as `SHELL -c COMMAND`.
    #[arg(long, value_name = "PATH", default_value = "/bin/sh")]
    shell: PathBuf,

    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,

    /// Commands running at once on one connection.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_commands: usize,

    /// Seconds running commands may go on after SIGINT, SIGTERM or SIGHUP.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    shutdown_grace: f64,

    /// Seconds between SIGTERM and SIGKILL when a command's group is ended.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    kill_grace: f64,

    /// Seconds of idle output after a command's shell exits before the
    /// background processes still holding its pipes are ended.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    linger: f64,

    /// Once listening, write the bound endpoints, the host key fingerprint
    /// and the pid to PATH, for scripts and supervisors.
    ///
    /// The file appears atomically (written beside PATH, then renamed) once
    /// every listener is bound and the server handles signals, and is removed
    /// when the server exits cleanly; a stale PATH is removed at start. One
    /// `KEY VALUE` a line; `#` lines are comments; ignore unknown keys:
    ///
    ///   pid 4242
    ///   endpoint unix /home/me/.rsh/rsh.sock
    ///   endpoint tcp 127.0.0.1:40123
    ///   fingerprint SHA256:...
    ///
    /// One `endpoint` line per --listen, in order, with the real port when 0
    /// was asked; `fingerprint` (as --fingerprint prints it) only when TCP is
    /// served.
    #[arg(
        long,
        value_name = "PATH",
        verbatim_doc_comment,
        help = "Once listening, write the bound endpoints, the host key fingerprint and the pid to PATH (format: --help)"
    )]
    ready_file: Option<PathBuf>,

    /// Stdin bytes all clients together may have buffered in the server.
    ///
    /// Counts stdin window granted to clients and bytes received but not yet
    /// read by their commands. Under load a command's stdin window is granted
    /// later or smaller.
    #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
    stdin_budget: u64,

    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{name} must be a finite number of seconds >= 0"))
}

fn positive_seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    let duration = seconds(value, name)?;
    if duration.is_zero() {
        anyhow::bail!("--{name} must be more than 0 seconds");
    }
    Ok(duration)
}

/// Parses the command line, runs the daemon until a signal stops it, and
/// returns the process exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rsh-server: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(serve(args));
    // A trust-file read stuck in the kernel (a hung NFS mount) holds a
    // blocking-pool thread; do not wait for it to exit.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rsh-server: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn own_uid() -> u32 {
    rsh_tls::trust::effective_uid()
}

/// The host key, created on first use. Served over TCP, it must be
/// trusted: it and RSH_HOME safe from other users (see `rsh_tls::trust`).
fn host_key(home: &RshHome) -> anyhow::Result<rsh_tls::Identity> {
    home.ensure()?;
    let path = home.host_key_path();
    rsh_tls::trust::check_trusted_dir(home.dir(), own_uid())
        .with_context(|| format!("cannot use {} for keys", home.dir().display()))?;
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned());
    let identity = rsh_tls::Identity::load_or_create(&path, &format!("rsh-server@{hostname}"))
        .with_context(|| format!("cannot load the host key {}", path.display()))?;
    rsh_tls::trust::check_trusted_path(&path, own_uid())
        .with_context(|| format!("cannot use the host key {}", path.display()))?;
    Ok(identity)
}

/// authorized_keys, read once now so that an untrusted file stops the
/// server at start; it is read again (off the runtime) for every handshake.
async fn authorized_keys(home: &RshHome) -> anyhow::Result<Arc<rsh_tls::AuthorizedKeysFile>> {
    let path = home.authorized_keys_path();
    let keys = rsh_tls::AuthorizedKeysFile::new(path.clone());
    let loaded = {
        let keys = keys.clone();
        tokio::task::spawn_blocking(move || keys.load_blocking()).await?
    };
    match loaded {
        Ok(set) if set.is_empty() => tracing::warn!(
            path = %path.display(),
            "no keys in authorized_keys yet: no TCP client can log in until keys are added"
        ),
        Ok(set) => debug!(keys = set.len(), "authorized_keys read"),
        Err(err) => {
            return Err(anyhow::anyhow!("{err}"))
                .with_context(|| format!("cannot use {}", path.display()))
        }
    }
    Ok(keys)
}

fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Lifts the soft open-files limit to the hard one: each connection and each
/// command's pipes take descriptors, and 1024 is too few for a busy server.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_err() {
            tracing::debug!(soft, hard, "cannot raise the open-files limit");
        }
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let home = RshHome::from_env()?;
    if args.fingerprint {
        println!("{}", host_key(&home)?.fingerprint());
        return Ok(());
    }
    raise_fd_limit();
    if !is_executable(&args.shell) {
        anyhow::bail!("--shell {}: not an executable file", args.shell.display());
    }
    let config = ServerConfig {
        shell: args.shell,
        max_connections: args.max_connections.max(1),
        max_channels_per_connection: args.max_commands.max(1),
        kill_grace: seconds(args.kill_grace, "kill-grace")?,
        shutdown_grace: seconds(args.shutdown_grace, "shutdown-grace")?,
        linger: seconds(args.linger, "linger")?.max(Duration::from_millis(10)),
        handshake_timeout: positive_seconds(args.handshake_timeout, "handshake-timeout")?,
        stdin_budget: args.stdin_budget.max(1),
        keepalive: Some(seconds(args.keepalive, "keepalive")?).filter(|idle| !idle.is_zero()),
        frame_timeout: positive_seconds(args.frame_timeout, "frame-timeout")?,
        ..ServerConfig::default()
    };
    let mut endpoints = args.listen;
    if endpoints.is_empty() {
        home.ensure()?;
        endpoints.push(Endpoint::Unix(home.socket_path()));
        // The socket is safe anyway (mode 0600, peer credentials checked),
        // but a home others can write is worth knowing about.
        if let Err(err) = rsh_tls::trust::check_trusted_dir(home.dir(), own_uid()) {
            tracing::warn!(cause = %err, "RSH_HOME is not safe for keys");
        }
    }
    if let Some(path) = &args.ready_file {
        remove_ready_file(path).await?;
    }
    let mut fingerprint = None;
    let tls = if endpoints.iter().any(|e| matches!(e, Endpoint::Tcp { .. })) {
        let identity = host_key(&home)?;
        info!(fingerprint = %identity.fingerprint(), "host key");
        fingerprint = Some(identity.fingerprint().to_string());
        let authorized_keys = authorized_keys(&home).await?;
        let limits = PreAuthLimits {
            max_startups: args.max_startups,
            max_silent: args.max_silent,
            max_queued: args.max_queued,
            ..PreAuthLimits::default()
        };
        Some(TlsSetup::new(&identity, authorized_keys, &limits)?)
    } else {
        None
    };
    let mut listeners = Vec::new();
    for endpoint in &endpoints {
        listeners.push(
            Listener::bind(endpoint, tls.as_ref())
                .with_context(|| format!("cannot listen on {endpoint}"))?,
        );
    }

    if !crate::process_group::become_subreaper() {
        tracing::debug!("not a subreaper: init reaps commands' background processes");
    }
    let shutdown = CancellationToken::new();
    // Installed here, not in the spawned task, so that a supervisor told
    // "ready" can already stop the server with SIGTERM.
    let signals = install_signal_handlers();
    tokio::spawn(wait_for_signal(signals, shutdown.clone()));
    if let Some(path) = &args.ready_file {
        let ready = ReadyFile {
            pid: std::process::id(),
            endpoints: listeners.iter().map(Listener::endpoint).collect(),
            fingerprint,
        };
        let path = path.clone();
        tokio::task::spawn_blocking(move || ready.write_atomically(&path))
            .await
            .context("writing the ready file failed")??;
    }
    Server::new(config, listeners).run(shutdown).await;
    if let Some(path) = &args.ready_file {
        remove_ready_file(path).await?;
    }
    Ok(())
}

/// Removes a ready file, if there is one.
async fn remove_ready_file(path: &std::path::Path) -> anyhow::Result<()> {
    match tokio::fs::remove_file(path).await {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            Err(err).with_context(|| format!("cannot remove the ready file {}", path.display()))
        }
        _ => Ok(()),
    }
}

type Signals = (
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
    tokio::signal::unix::Signal,
);

fn install_signal_handlers() -> Option<Signals> {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(int), Ok(hup)) => Some((term, int, hup)),
        _ => None,
    }
}

async fn wait_for_signal(signals: Option<Signals>, shutdown: CancellationToken) {
    let Some((mut term, mut int, mut hup)) = signals else {
        error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    // SIGHUP too: a daemon started from a terminal that closes should end
    // its commands cleanly, not vanish and leave them running.
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
        _ = hup.recv() => info!("SIGHUP received"),
    }
    shutdown.cancel();
}
