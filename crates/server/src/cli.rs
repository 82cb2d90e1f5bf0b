//! `rsh-server`'s command line: the daemon's `main`, kept in the library so
//! the root package's thin binary (and `cargo install --path .`) can run it.

use crate::config_file::{self, FileConfig};
use crate::logging::{self, LogFormat};
use crate::ready::ReadyFile;
use crate::reload::Signals;
use crate::{Listener, PreAuthLimits, Server, ServerConfig, TlsSetup};
use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
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
/// host_key, authorized_keys, and the optional config file rsh-server.toml
/// (every option below, by its long name; options given here win). Like
/// sshd's StrictModes, the keys are used only if they, RSH_HOME and every
/// directory above it are owned by this user or root and not writable by
/// group or others (a sticky directory such as /tmp is fine above RSH_HOME);
/// otherwise the server refuses to start, or, if the file changes later,
/// refuses the connection and logs why.
///
/// SIGHUP reloads: the config file is re-read and new connections get its
/// settings (running ones keep theirs); listen addresses, connection limits,
/// the host key and logging need a restart. SIGINT, SIGTERM or SIGQUIT stops
/// accepting, gives running commands the shutdown grace, ends the rest,
/// removes the socket and exits 0. Under systemd (Type=notify) the server
/// reports ready, reloading and stopping.
#[derive(Debug, Clone, Parser)]
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

    /// Seconds running commands may go on after SIGINT or SIGTERM.
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

    /// Log lines as text (no colours unless a terminal, no timestamp in the
    /// journal) or as one JSON object each, for log shippers.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Config file [default: $RSH_HOME/rsh-server.toml, if it exists].
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,

    /// Check the config file and options, print the effective settings and
    /// exit: 0 if all is well, 1 with the file and line of the first error.
    #[arg(long)]
    check_config: bool,

    /// The config file's log-level (no flag: -v and RUST_LOG cover it).
    #[arg(skip)]
    file_log_level: Option<String>,
}

/// The `rsh-server` command line as clap builds it, for man pages and
/// shell completions (`cargo xtask dist`).
pub fn command() -> clap::Command {
    Args::command()
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
    let matches = command().get_matches();
    let cli = match Args::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    let source = match ConfigSource::new(cli, matches) {
        Ok(source) => source,
        Err(err) => {
            eprintln!("rsh-server: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    // Read before the runtime starts, so blocking here is fine.
    let args = match source.load() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("rsh-server: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    if args.check_config {
        return check_config(&source, &args);
    }
    logging::init(args.log_format, &log_level(&args));
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rsh-server: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(serve(args, source));
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

async fn serve(args: Args, source: ConfigSource) -> anyhow::Result<()> {
    let home = RshHome::from_env()?;
    if args.fingerprint {
        println!("{}", host_key(&home)?.fingerprint());
        return Ok(());
    }
    rsh_sys::raise_fd_limit();
    if !rsh_sys::is_executable(&args.shell) {
        anyhow::bail!("--shell {}: not an executable file", args.shell.display());
    }
    let config = server_config(&args)?;
    let mut endpoints = args.listen.clone();
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
    // "ready" can already stop or reload the server.
    let signals = Signals::install().context("cannot install signal handlers")?;
    let (updates_tx, updates) = tokio::sync::watch::channel(std::sync::Arc::new(config.clone()));
    let running = args.clone();
    let reload_home = home.clone();
    tokio::spawn(signals.run(shutdown.clone(), move || {
        let source = source.clone();
        let running = running.clone();
        let home = reload_home.clone();
        let updates_tx = updates_tx.clone();
        async move { reload(source, &running, &home, &updates_tx).await }
    }));
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
    let shown: Vec<String> = listeners.iter().map(|l| l.endpoint().to_string()).collect();
    crate::notify::notify_logged(&format!("READY=1\nSTATUS=listening on {}", shown.join(" ")));
    Server::new(config, listeners)
        .with_updates(updates)
        .run(shutdown)
        .await;
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

/// Where the settings come from: the command line as given at start and the
/// config file it names (or the default one). Kept for SIGHUP, which
/// re-reads the file under the same command line.
#[derive(Debug, Clone)]
struct ConfigSource {
    cli: Args,
    matches: clap::ArgMatches,
    path: PathBuf,
    /// Named with --config: a missing file is an error, not "no file".
    required: bool,
}

impl ConfigSource {
    fn new(cli: Args, matches: clap::ArgMatches) -> anyhow::Result<ConfigSource> {
        let (path, required) = match &cli.config {
            Some(path) => (path.clone(), true),
            None => (
                RshHome::from_env()?.dir().join(config_file::FILE_NAME),
                false,
            ),
        };
        Ok(ConfigSource {
            cli,
            matches,
            path,
            required,
        })
    }

    /// The effective settings: the command line over the file over the
    /// defaults. Blocking (reads the file).
    fn load(&self) -> anyhow::Result<Args> {
        let file = FileConfig::load(&self.path, self.required)?.unwrap_or_default();
        Ok(self.cli.with_file(&self.matches, &file))
    }

    fn file_exists(&self) -> bool {
        self.path.exists()
    }
}

impl Args {
    /// These arguments with `file`'s settings wherever the command line
    /// left the default.
    fn with_file(&self, matches: &clap::ArgMatches, file: &FileConfig) -> Args {
        let mut args = self.clone();
        macro_rules! overlay {
            ($($field:ident),* $(,)?) => {$(
                if !config_file::given(matches, stringify!($field)) {
                    if let Some(value) = &file.$field {
                        args.$field = value.clone();
                    }
                }
            )*};
        }
        overlay!(
            listen,
            handshake_timeout,
            max_startups,
            max_silent,
            max_queued,
            keepalive,
            frame_timeout,
            stdin_budget,
            shell,
            max_connections,
            max_commands,
            shutdown_grace,
            kill_grace,
            linger,
            log_format,
        );
        if !config_file::given(matches, "ready_file") && file.ready_file.is_some() {
            args.ready_file.clone_from(&file.ready_file);
        }
        args.file_log_level.clone_from(&file.log_level);
        args
    }
}

/// The default log filter: -v wins, then the file's log-level, then info.
fn log_level(args: &Args) -> String {
    match args.verbose {
        0 => args
            .file_log_level
            .clone()
            .unwrap_or_else(|| "info".to_owned()),
        1 => "debug".to_owned(),
        _ => "trace".to_owned(),
    }
}

/// The server's tunables from the effective settings.
fn server_config(args: &Args) -> anyhow::Result<ServerConfig> {
    Ok(ServerConfig {
        shell: args.shell.clone(),
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
    })
}

/// `--check-config`: validates everything a start would and prints the
/// effective settings as a config file would say them (like `sshd -T`).
fn check_config(source: &ConfigSource, args: &Args) -> ExitCode {
    let checked = server_config(args).and_then(|_| {
        if rsh_sys::is_executable(&args.shell) {
            Ok(())
        } else {
            anyhow::bail!("shell {}: not an executable file", args.shell.display())
        }
    });
    if let Err(err) = checked {
        eprintln!("rsh-server: {err:#}");
        return ExitCode::FAILURE;
    }
    let home = RshHome::from_env().ok();
    let listen: Vec<String> = if args.listen.is_empty() {
        home.iter()
            .map(|home| Endpoint::Unix(home.socket_path()).to_string())
            .collect()
    } else {
        args.listen.iter().map(ToString::to_string).collect()
    };
    let quote = |s: &str| config_file::toml_string(s);
    let path = |p: &std::path::Path| quote(&p.display().to_string());
    let found = if source.file_exists() {
        ""
    } else {
        " (not found)"
    };
    println!(
        "# effective settings: command line over {}{found}",
        source.path.display()
    );
    let listen: Vec<String> = listen.iter().map(|e| quote(e)).collect();
    println!("listen = [{}]", listen.join(", "));
    println!("shell = {}", path(&args.shell));
    println!("handshake-timeout = {}", args.handshake_timeout);
    println!("max-startups = {}", args.max_startups);
    println!("max-silent = {}", args.max_silent);
    println!("max-queued = {}", args.max_queued);
    println!("keepalive = {}", args.keepalive);
    println!("frame-timeout = {}", args.frame_timeout);
    println!("stdin-budget = {}", args.stdin_budget);
    println!("max-connections = {}", args.max_connections);
    println!("max-commands = {}", args.max_commands);
    println!("shutdown-grace = {}", args.shutdown_grace);
    println!("kill-grace = {}", args.kill_grace);
    println!("linger = {}", args.linger);
    if let Some(ready_file) = &args.ready_file {
        println!("ready-file = {}", path(ready_file));
    }
    println!("log-format = {}", quote(args.log_format.name()));
    println!("log-level = {}", quote(&log_level(args)));
    ExitCode::SUCCESS
}

/// SIGHUP: re-reads the config file under the start's command line and
/// hands new connections the new settings. A bad file keeps the current
/// settings (and says why); settings that need a restart are named.
async fn reload(
    source: ConfigSource,
    running: &Args,
    home: &RshHome,
    updates: &tokio::sync::watch::Sender<std::sync::Arc<ServerConfig>>,
) {
    let path = source.path.clone();
    // Reading the file and checking the shell touch the file system: off
    // the runtime's threads.
    let loaded = tokio::task::spawn_blocking(move || {
        let args = source.load()?;
        let config = server_config(&args)?;
        if !rsh_sys::is_executable(&config.shell) {
            anyhow::bail!("shell {}: not an executable file", config.shell.display());
        }
        Ok((config, args))
    })
    .await
    .map_err(anyhow::Error::from)
    .and_then(|loaded| loaded);
    let args = match loaded {
        Ok((config, args)) => {
            updates.send_replace(std::sync::Arc::new(config));
            args
        }
        Err(err) => {
            error!(
                cause = format!("{err:#}"),
                "reload refused; settings unchanged"
            );
            return;
        }
    };
    info!(config = %path.display(), "reloaded");
    let restart_only = [
        ("listen", args.listen != running.listen),
        (
            "max-connections",
            args.max_connections != running.max_connections,
        ),
        ("max-startups", args.max_startups != running.max_startups),
        ("max-silent", args.max_silent != running.max_silent),
        ("max-queued", args.max_queued != running.max_queued),
        ("stdin-budget", args.stdin_budget != running.stdin_budget),
        ("ready-file", args.ready_file != running.ready_file),
        ("log-format", args.log_format != running.log_format),
        ("log-level", args.file_log_level != running.file_log_level),
    ];
    for (setting, _) in restart_only.iter().filter(|(_, changed)| *changed) {
        tracing::warn!(
            setting,
            "changed in the config file; takes effect at the next restart"
        );
    }
    // authorized_keys is read at every TLS handshake already; checking it
    // now puts a broken edit in the log at reload time, not at the next
    // client's failed login.
    let keys = home.authorized_keys_path();
    let checked = tokio::task::spawn_blocking(move || rsh_tls::AuthorizedKeys::load(&keys)).await;
    match checked {
        Ok(Ok((keys, warnings))) => {
            for warning in warnings {
                tracing::warn!(line = warning.line, reason = %warning.message, "authorized_keys: line skipped");
            }
            info!(keys = keys.len(), "authorized_keys checked");
        }
        Ok(Err(err)) => {
            error!(cause = %err, "authorized_keys cannot be used; TCP logins will fail")
        }
        Err(err) => error!(cause = %err, "checking authorized_keys failed"),
    }
}
