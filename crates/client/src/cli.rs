//! `rsh-client`'s command line: ssh's (`rsh-client [OPTIONS] DEST [COMMAND
//! [ARG...]]`), so that people and the tools that drive ssh (rsync, git,
//! GNU parallel, pdsh, Ansible) can use it where they use ssh. The binary's
//! `main`, kept in the library so the root package's thin binary (and
//! `cargo install --path .`) can run it.
//!
//! Parsing follows ssh: options may come before and after DEST; the first
//! word after DEST that is not an option starts the command, and it and every
//! word after it are the command, joined with single spaces for the remote
//! shell (so quoting works as with ssh); `--` ends the options.

use crate::{
    client_identity, identity_at, signal, AddressFamily, Client, ClientError, ConnectOptions,
    ErrorKind, Event, ExecRequest, ExitStatus, Fingerprint, HostKeyPolicy, RemoteCommand,
    StdinWriter,
};
use anyhow::Context;
use bytes::BufMut;
use clap::Parser;
use rsh_config::dest::{reconcile_port, Dest, Target};
use rsh_config::ssh_config::{ClientConfig, Overrides, Resolved, StrictHostKeyChecking};
use rsh_config::{Endpoint, RshHome};
use rsh_proto::io::ChunkBuffers;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// Exit code for a failure of rsh itself (connection, protocol), as ssh uses.
const EXIT_RSH_FAILURE: u8 = 255;
/// Exit code when the remote command ran past --timeout (as timeout(1) uses).
const EXIT_TIMED_OUT: u8 = 124;
/// Ctrl-C presses after which the client gives up on the remote command.
const DISCONNECT_AFTER_INTERRUPTS: u32 = 3;
/// Exit code when our stdout is a closed pipe (as if killed by SIGPIPE).
const EXIT_BROKEN_PIPE: u8 = 128 + 13;
/// "No connect timeout" (`ConnectTimeout 0` / `none`): long enough to mean
/// never, short enough for tokio's timer.
const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Run commands on an rsh server, as ssh does.
///
/// `rsh-client DEST COMMAND...` runs one command like `ssh HOST CMD`: the
/// words after DEST are joined with spaces and run by the remote shell;
/// remote stdout to stdout, stderr to stderr, byte for byte; local stdin is
/// forwarded (typed lines too, when it is a terminal; end them with Ctrl-D);
/// Ctrl-C sends SIGINT to the remote command (a third Ctrl-C
/// disconnects, which ends it); the exit code is the remote one (128+N if it
/// died of signal N, 124 if it timed out, 255 if rsh itself failed, with the
/// reason on one line). `-c COMMAND` is the same as one command word.
///
/// Without a command, on a terminal: a terminal session with the remote
/// user's login shell on a pty, as `ssh HOST` (escapes after a newline: `~.`
/// disconnects, `~^Z` suspends, `~?` lists them; see -e). -t asks for a pty
/// for a command too (-tt even when stdin is not a terminal), -T never.
/// Without a command, stdin not a terminal: one remote shell reads stdin as
/// its script, so `cd`, variables and `exit` carry from line to line.
///
/// DEST is [USER@]HOST[:PORT], [USER@][IPV6][:PORT], unix:PATH, or a Host
/// alias of the config file ($RSH_HOME/config, ssh_config syntax: HostName,
/// Port, User, IdentityFile, ConnectTimeout, ServerAliveInterval,
/// ServerAliveCountMax, StrictHostKeyChecking, BatchMode). Without DEST:
/// the local server, unix:$RSH_HOME/rsh.sock.
///
/// Over TCP the connection is TLS 1.3 with this client's key ($RSH_HOME/id,
/// created on first use; see --fingerprint and -i) and the server's key
/// checked against $RSH_HOME/known_hosts: an unknown host is asked about on a
/// terminal and refused in batch use unless --accept-new (or
/// StrictHostKeyChecking=accept-new); a changed host key is always refused.
///
/// ssh's -x, -a, -C and -2, and -o options that do not apply to rsh
/// (SendEnv, ControlMaster, ControlPath, Compression, ...), are accepted and
/// ignored (noted at -v).
#[derive(Debug, Parser)]
#[command(name = "rsh-client", version)]
pub struct Args {
    /// Server to connect to: [USER@]HOST[:PORT], [USER@][IPV6][:PORT],
    /// unix:PATH or a config Host alias (TCP port 7022 by default). Default:
    /// unix:$RSH_HOME/rsh.sock.
    #[arg(value_name = "DEST")]
    dest: Option<String>,

    /// Command to run, as ssh: the words are joined with single spaces and
    /// run by the remote shell.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    words: Vec<String>,

    /// Run this command and exit with its status (the same as COMMAND).
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    command: Option<String>,

    /// Port to connect to (must agree with a port written in DEST).
    #[arg(short = 'p', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,

    /// User to log in as; the server refuses any user but the one it runs as.
    #[arg(short = 'l', value_name = "USER")]
    login: Option<String>,

    /// This client's key file, instead of $RSH_HOME/id (created if missing).
    #[arg(short = 'i', value_name = "IDENTITY")]
    identity: Option<PathBuf>,

    /// Config file, instead of $RSH_HOME/config.
    #[arg(short = 'F', value_name = "CONFIG")]
    config: Option<PathBuf>,

    /// A config file option, as `Key=Value` (for example
    /// `-o ConnectTimeout=5`). Repeatable; the first value given wins.
    #[arg(short = 'o', value_name = "KEY=VALUE")]
    options: Vec<String>,

    /// Print the configuration resolved for DEST (as `ssh -G`) and exit.
    #[arg(short = 'G')]
    print_config: bool,

    /// Log what the client does to stderr; -vv and -vvv say more.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    verbose: u8,

    /// Quiet: no warnings or notes, only errors.
    #[arg(short = 'q')]
    quiet: bool,

    /// Read stdin from /dev/null: the remote command gets end of file at once.
    #[arg(short = 'n')]
    null_stdin: bool,

    /// Connect over IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    ipv4: bool,

    /// Connect over IPv6 only.
    #[arg(short = '6')]
    ipv6: bool,

    /// Ask for a terminal (pty) for the command; -tt even when stdin is not a
    /// terminal.
    #[arg(short = 't', action = clap::ArgAction::Count)]
    tty: u8,

    /// Never ask for a terminal (pty); wins over -t.
    #[arg(short = 'T')]
    no_tty: bool,

    /// Escape character for terminal sessions (default `~`), `^X` for a
    /// control character, or `none`.
    #[arg(short = 'e', value_name = "CHAR", value_parser = parse_escape)]
    escape: Option<EscapeChar>,

    /// ssh's no-ops: X11 and agent forwarding off, compression, protocol 2.
    #[arg(short = 'x', hide = true)]
    _no_x11: bool,
    #[arg(short = 'a', hide = true)]
    _no_agent: bool,
    #[arg(short = 'C', hide = true)]
    _compress: bool,
    #[arg(short = '2', hide = true)]
    _protocol2: bool,

    /// Print this client's key as an authorized_keys line
    /// (`SHA256:... user@host`), creating the key if needed, and exit.
    #[arg(long)]
    fingerprint: bool,

    /// Trust and record the key of a host not yet in known_hosts. A key that
    /// differs from a recorded one is still refused.
    #[arg(long)]
    accept_new: bool,

    /// Remove HOST[:PORT]'s key from known_hosts (as `ssh-keygen -R`) and exit.
    #[arg(long, value_name = "HOST[:PORT]")]
    forget_host: Option<String>,

    /// Run remote commands in this directory.
    #[arg(long = "cwd", value_name = "DIR")]
    cwd: Option<String>,

    /// Set an environment variable for remote commands. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// Kill a remote command (its whole process group) after this many seconds.
    #[arg(long = "timeout", value_name = "SECS")]
    timeout: Option<f64>,

    #[command(flatten)]
    fleet: crate::fleet::FleetArgs,
}

/// The argument of `-e`: a character, or none.
#[derive(Debug, Clone, Copy)]
pub struct EscapeChar(pub Option<u8>);

fn parse_escape(arg: &str) -> Result<EscapeChar, String> {
    crate::escape::parse_escape_char(arg).map(EscapeChar)
}

fn parse_env(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".to_owned()),
    }
}

/// Parses the command line, runs the client, and returns the process exit
/// code (the remote command's, or 255 when rsh itself failed).
pub fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    // One thread: a client drives one connection; a pool would only add startup cost.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&format!("cannot start the runtime: {err}")),
    };
    let code = runtime.block_on(run(args));
    // Do not wait for a blocked read of our stdin.
    runtime.shutdown_background();
    code
}

/// `-v`: the client's own log on stderr (info, then debug, then trace).
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => return,
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

/// `rsh-client true` (as `rsh-client -c true` reads) takes `true` for a
/// host, as ssh would; rsh's local default makes that an easy slip, so a
/// bare word that is no host name gets a pointer to `-c`.
fn local_command_hint(
    args: &Args,
    endpoint: &Endpoint,
    no_command: bool,
    err: &ClientError,
) -> String {
    let Some(dest) = args.dest.as_deref() else {
        return String::new();
    };
    // Not a config alias (its HostName is the user's choice) nor a name
    // with a domain, user or port: those are meant as hosts.
    let bare = !dest.contains(['.', ':', '@', '[', '/'])
        && matches!(endpoint, Endpoint::Tcp { host, .. } if host == dest);
    let unresolved = matches!(err, ClientError::Connect { reason, .. }
        if reason.contains("failed to lookup address"));
    if no_command && bare && unresolved {
        format!(" (no host {dest:?}; to run it on the local server: rsh-client -c '{dest}')")
    } else {
        String::new()
    }
}

fn fail(reason: &str) -> ExitCode {
    eprintln!("rsh-client: {reason}");
    ExitCode::from(EXIT_RSH_FAILURE)
}

/// When our stdin or stdout is a pipe, let it hold 1 MiB: big chunks then
/// move without waking the other end several times over (64 KiB is Linux's
/// default). Best effort, up to /proc/sys/fs/pipe-max-size.
fn enlarge_pipes() {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fcntl, FcntlArg};
        use std::os::fd::AsRawFd;
        for fd in [std::io::stdin().as_raw_fd(), std::io::stdout().as_raw_fd()] {
            let is_pipe = nix::sys::stat::fstat(fd)
                .map(|stat| stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFIFO)
                .unwrap_or(false);
            if is_pipe {
                let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(1024 * 1024));
            }
        }
    }
}

/// Puts our stdin and stdout back in blocking mode. rsync hands its remote
/// shell a stdout (and other tools may hand a stdin) with O_NONBLOCK set, as
/// ssh copes with; our writes to stdout and tokio's reads of stdin are
/// blocking ones, which would fail with EAGAIN mid-stream (stdout: the run
/// aborts; stdin: it would look like end of file).
fn blocking_stdio() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    for fd in [std::io::stdin().as_raw_fd(), std::io::stdout().as_raw_fd()] {
        let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) else {
            continue;
        };
        let flags = OFlag::from_bits_truncate(flags);
        if flags.contains(OFlag::O_NONBLOCK) {
            tracing::debug!(fd, "clearing O_NONBLOCK on our stdio");
            let _ = fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK));
        }
    }
}

/// Whether stdin is /dev/null: nothing to forward, so the remote stdin is
/// closed at once instead of starting a reader thread to learn that.
fn stdin_is_dev_null() -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(stdin), Ok(null)) = (
        nix::sys::stat::fstat(std::io::stdin().as_raw_fd()),
        nix::sys::stat::stat("/dev/null"),
    ) else {
        return false;
    };
    let is_char = |mode: nix::libc::mode_t| mode & nix::libc::S_IFMT == nix::libc::S_IFCHR;
    is_char(stdin.st_mode) && is_char(null.st_mode) && stdin.st_rdev == null.st_rdev
}

/// Where to connect and how, from DEST, the options and the config file.
struct Plan {
    endpoint: Endpoint,
    /// The user asked for (`-l`, `user@`, `User`), sent to the server.
    user: Option<String>,
    resolved: Resolved,
    options: ConnectOptions,
}

/// Resolves DEST with the command line and the config file, as ssh does.
fn plan(args: &Args, home: &RshHome) -> anyhow::Result<Plan> {
    let dest: Option<Dest> = args
        .dest
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("bad DEST")?;
    let mut overrides = Overrides::new();
    for option in &args.options {
        overrides.option(option)?;
    }
    let unix = !matches!(
        &dest,
        Some(Dest {
            target: Target::Host { .. },
            ..
        })
    );
    if args.port.is_some() && unix {
        anyhow::bail!("-p applies to TCP destinations; a Unix socket has no port");
    }
    let port = reconcile_port(args.port, dest.as_ref().and_then(Dest::port))?;
    if let Some(port) = port {
        overrides.port(port);
    }
    // As ssh: -l wins over the user written in DEST.
    if let Some(user) = args
        .login
        .as_ref()
        .or(dest.as_ref().and_then(|d| d.user.as_ref()))
    {
        overrides.user(user.as_str());
    }
    if let Some(identity) = &args.identity {
        overrides.identity_file(identity.to_string_lossy().replace('%', "%%"));
    }
    let config = match &args.config {
        Some(path) => ClientConfig::load_relative_to(path, home.dir())?,
        None => ClientConfig::load_if_exists(home.config_path())?,
    };
    let alias = match dest.as_ref().map(|d| &d.target) {
        None => format!("unix:{}", home.socket_path().display()),
        Some(Target::Unix(path)) => format!("unix:{}", path.display()),
        Some(Target::Host { host, .. }) => host.clone(),
    };
    let resolved = config.resolve(&alias, &overrides);
    for ignored in &resolved.ignored {
        tracing::info!(
            option = %ignored.keyword,
            value = %ignored.value,
            origin = %ignored.origin,
            "ssh option ignored: it does not apply to rsh"
        );
    }
    let endpoint = match &dest {
        None => Endpoint::Unix(home.socket_path()),
        Some(dest) => dest.endpoint(Some(&resolved.hostname), resolved.port),
    };
    let mut options = ConnectOptions::new(home.clone());
    options.identity = resolved.identity_file.clone();
    if let Some(timeout) = resolved.connect_timeout {
        options.connect_timeout = if timeout.is_zero() {
            NO_TIMEOUT
        } else {
            timeout
        };
    }
    if let Some(interval) = resolved.server_alive_interval {
        options.keepalive = (!interval.is_zero()).then_some(interval);
    }
    if let Some(count) = resolved.server_alive_count_max {
        options.keepalive_count = count;
    }
    options.family = if args.ipv4 {
        AddressFamily::V4
    } else if args.ipv6 {
        AddressFamily::V6
    } else {
        AddressFamily::Any
    };
    let batch = resolved.batch_mode.unwrap_or(false);
    options.host_keys = if args.accept_new {
        HostKeyPolicy::AcceptNew
    } else {
        match resolved
            .strict_host_key_checking
            .unwrap_or(StrictHostKeyChecking::Ask)
        {
            StrictHostKeyChecking::Yes => HostKeyPolicy::Strict,
            StrictHostKeyChecking::AcceptNew => HostKeyPolicy::AcceptNew,
            StrictHostKeyChecking::Ask if !batch && std::io::stdin().is_terminal() => {
                HostKeyPolicy::Ask(Arc::new(ask_about_host))
            }
            StrictHostKeyChecking::Ask => HostKeyPolicy::Strict,
        }
    };
    if !args.quiet {
        options.host_key_added = Some(Arc::new(|host_port: &str, fingerprint: &Fingerprint| {
            eprintln!(
                "Warning: Permanently added '{host_port}' ({fingerprint}) to the list of known hosts."
            );
        }));
    }
    Ok(Plan {
        endpoint,
        user: resolved.user.clone(),
        resolved,
        options,
    })
}

/// `-G`: the resolved configuration, as `ssh -G` prints it, with the local
/// user and the default identity filled in.
fn print_config(plan: &Plan) -> ExitCode {
    let mut resolved = plan.resolved.clone();
    if resolved.user.is_none() {
        resolved.user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|user| user.name);
    }
    if resolved.identity_file.is_none() {
        resolved.identity_file = Some(plan.options.identity_path());
    }
    // rsh's defaults, not ssh's, so what is printed is what applies.
    resolved.connect_timeout = Some(plan.options.connect_timeout).filter(|t| *t != NO_TIMEOUT);
    resolved.server_alive_interval = Some(plan.options.keepalive.unwrap_or_default());
    resolved.server_alive_count_max = Some(plan.options.keepalive_count);
    let mut out = std::io::stdout().lock();
    let written = resolved
        .print_like_ssh_g(&mut out)
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_BROKEN_PIPE)
        }
        Err(err) => fail(&format!("cannot write to stdout: {err}")),
    }
}

/// `--forget-host HOST[:PORT]`: drops the host's lines from known_hosts,
/// keeping the old file as `known_hosts.old`, as `ssh-keygen -R` does.
fn forget_host(home: &RshHome, host: &str, flag_port: Option<u16>) -> anyhow::Result<()> {
    let host_port = match host.parse::<Dest>()?.target {
        // `-p PORT` names the port as it does for a connection (it was
        // ignored, and the default port's entry looked for instead).
        Target::Host { host, port } => rsh_tls::host_port(
            &host,
            reconcile_port(flag_port, port)?.unwrap_or(rsh_config::DEFAULT_TCP_PORT),
        ),
        Target::Unix(_) => anyhow::bail!("a Unix socket has no host key"),
    };
    let path = home.known_hosts_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("{host_port} not found in {}", path.display())
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut kept = String::with_capacity(text.len());
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.eq_ignore_ascii_case(&host_port) {
            found.push(number + 1);
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if found.is_empty() {
        anyhow::bail!("{host_port} not found in {}", path.display());
    }
    for line in &found {
        println!("# Host {host_port} found: line {line}");
    }
    let old = path.with_extension("old");
    let new = path.with_extension("new");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&new)
            .with_context(|| format!("cannot write {}", new.display()))?;
        file.write_all(kept.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", new.display()))?;
    }
    std::fs::copy(&path, &old).with_context(|| format!("cannot write {}", old.display()))?;
    std::fs::rename(&new, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    println!("{} updated.", path.display());
    println!("Original contents retained as {}", old.display());
    Ok(())
}

/// `-H`/`--hosts-file`: the command on every host, through the fleet
/// scheduler. There is no DEST: every word after the options is the
/// command (quote it, or put `--` before it, when it has options of its own).
async fn run_fleet(args: &Args, home: RshHome) -> ExitCode {
    let mut words: Vec<String> = args.dest.iter().cloned().collect();
    words.extend(args.words.iter().cloned());
    let command = match (&args.command, words.is_empty()) {
        (Some(_), false) => {
            return fail("give the command either with -c or after the options, not both")
        }
        (Some(command), true) => command.clone(),
        (None, false) => words.join(" "),
        (None, true) => return fail("-H/--hosts-file need a command to run"),
    };
    let options = match fleet_options(args, home) {
        Ok(options) => options,
        Err(err) => return fail(&format!("{err:#}")),
    };
    // The user is per host (user@, -l, User), applied by the fleet.
    let template = match request_template(args, None) {
        Ok(template) => template,
        Err(err) => return fail(&format!("{err:#}")),
    };
    crate::fleet::run(&args.fleet, template.with(&command), options).await
}

/// The fleet's settings from the same options one host takes.
fn fleet_options(args: &Args, home: RshHome) -> anyhow::Result<crate::fleet::FleetOptions> {
    let mut overrides = Overrides::new();
    for option in &args.options {
        overrides.option(option)?;
    }
    if let Some(port) = args.port {
        overrides.port(port);
    }
    if let Some(user) = &args.login {
        overrides.user(user.as_str());
    }
    let config = match &args.config {
        Some(path) => ClientConfig::load_relative_to(path, home.dir())?,
        None => ClientConfig::load_if_exists(home.config_path())?,
    };
    let forward_stdin = !args.null_stdin && !std::io::stdin().is_terminal() && !stdin_is_dev_null();
    Ok(crate::fleet::FleetOptions {
        home,
        config,
        overrides,
        accept_new: args.accept_new,
        connect_timeout: Duration::from_secs(10),
        forward_stdin,
        quiet: args.quiet,
    })
}

async fn run(args: Args) -> ExitCode {
    let home = match RshHome::from_env() {
        Ok(home) => home,
        Err(err) => return fail(&err.to_string()),
    };
    if args.fingerprint {
        let identity = match &args.identity {
            Some(path) => identity_at(&home, path),
            None => client_identity(&home),
        };
        return match identity {
            Ok(identity) => {
                println!("{}", identity.authorized_keys_line());
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err.to_string()),
        };
    }
    if let Some(host) = &args.forget_host {
        return match forget_host(&home, host, args.port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(&format!("{err:#}")),
        };
    }
    if args.fleet.is_active() {
        return run_fleet(&args, home).await;
    }
    let plan = match plan(&args, &home) {
        Ok(plan) => plan,
        Err(err) => return fail(&format!("{err:#}")),
    };
    if args.print_config {
        return print_config(&plan);
    }
    let template = match request_template(&args, plan.user.clone()) {
        Ok(template) => template,
        Err(err) => return fail(&format!("{err:#}")),
    };
    let command = match (&args.command, args.words.is_empty()) {
        (Some(_), false) => return fail("give the command either with -c or after DEST, not both"),
        (Some(command), true) => Some(command.clone()),
        // As ssh: the words are joined with single spaces for the remote shell.
        (None, false) => Some(args.words.join(" ")),
        (None, true) => None,
    };
    tracing::info!(endpoint = %plan.endpoint, "connecting");
    let client = match Client::connect(&plan.endpoint, &plan.options).await {
        Ok(client) => client,
        Err(err) => {
            return fail(&format!(
                "{err}{}",
                local_command_hint(&args, &plan.endpoint, command.is_none(), &err)
            ))
        }
    };
    tracing::info!(version = client.protocol_version(), "connected");
    let stdin_tty = std::io::stdin().is_terminal();
    // As ssh: a pty by default only for a login shell on a terminal; -t asks
    // for one (if stdin is a terminal), -tt insists, -T never.
    let want_pty = !args.no_tty && (args.tty > 0 || command.is_none());
    let pty = want_pty && (stdin_tty || args.tty > 1);
    if args.tty == 1 && !args.no_tty && !stdin_tty && !args.quiet {
        eprintln!("Pseudo-terminal will not be allocated because stdin is not a terminal.");
    }
    let stdin = if args.null_stdin || stdin_is_dev_null() {
        LocalInput::Closed
    } else {
        LocalInput::Open
    };
    let result = if pty {
        let request = match &command {
            Some(command) => ExecRequest::new(command.as_str()),
            None => ExecRequest::login_shell(),
        };
        let escape = if stdin_tty {
            args.escape.map_or(Some(b'~'), |escape| escape.0)
        } else {
            // Escapes are for a person at a keyboard, not for piped bytes.
            None
        };
        let host = plan.resolved.host.clone();
        terminal_session(&client, template.apply(request), escape, &host, args.quiet).await
    } else {
        enlarge_pipes();
        blocking_stdio();
        match &command {
            Some(command) => one_shot(&client, template.with(command), stdin).await,
            None => remote_shell(&client, &template, stdin).await,
        }
    };
    match result {
        Ok(code) => code,
        Err(Failure::BrokenPipe) => ExitCode::from(EXIT_BROKEN_PIPE),
        Err(Failure::Rsh(err)) => fail(&err.to_string()),
    }
}

/// The options every command of this session gets.
struct Template {
    cwd: Option<String>,
    env: Vec<(String, String)>,
    timeout: Option<Duration>,
    user: Option<String>,
}

impl Template {
    fn with(&self, command: &str) -> ExecRequest {
        self.apply(ExecRequest::new(command))
    }

    fn apply(&self, mut request: ExecRequest) -> ExecRequest {
        if let Some(cwd) = &self.cwd {
            request = request.cwd(cwd.as_str());
        }
        for (key, value) in &self.env {
            request = request.env(key.as_str(), value.as_str());
        }
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        if let Some(user) = &self.user {
            request = request.user(user.as_str());
        }
        request
    }
}

fn request_template(args: &Args, user: Option<String>) -> anyhow::Result<Template> {
    let timeout = args
        .timeout
        .map(|secs| {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|limit| !limit.is_zero())
                .context("--timeout must be a finite number of seconds > 0")
        })
        .transpose()?;
    Ok(Template {
        cwd: args.cwd.clone(),
        env: args.env.clone(),
        timeout,
        user,
    })
}

/// Asks on the terminal whether to trust an unknown host key, as ssh does.
fn ask_about_host(host_port: &str, fingerprint: &Fingerprint) -> bool {
    eprintln!("The authenticity of host '{host_port}' can't be established.");
    eprintln!("Its key fingerprint is {fingerprint}.");
    eprintln!("Compare it with `rsh-server --fingerprint` run on that host.");
    loop {
        eprint!("Are you sure you want to continue connecting (yes/no)? ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        match std::io::stdin().read_line(&mut answer) {
            Ok(0) | Err(_) => return false,
            Ok(_) => match answer.trim() {
                "yes" => return true,
                "no" => return false,
                _ => eprintln!("Please type 'yes' or 'no'."),
            },
        }
    }
}

/// Why a session ended other than with a command's status.
enum Failure {
    /// Our stdout is a closed pipe.
    BrokenPipe,
    /// rsh itself failed.
    Rsh(ClientError),
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        Failure::Rsh(err)
    }
}

fn exit_code(status: &ExitStatus) -> ExitCode {
    match status {
        ExitStatus::Code(code) => ExitCode::from((*code & 0xff) as u8),
        ExitStatus::Signal(signal) => ExitCode::from(128u8.saturating_add(*signal)),
        ExitStatus::TimedOut => {
            eprintln!("rsh-client: remote command timed out");
            ExitCode::from(EXIT_TIMED_OUT)
        }
        ExitStatus::FailedToStart(reason) => {
            eprintln!("rsh-client: remote command failed to start: {reason}");
            ExitCode::from(EXIT_RSH_FAILURE)
        }
    }
}

/// Whether the remote command gets our stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocalInput {
    /// Forwarded until its end (typed lines too when it is a terminal).
    Open,
    /// `-n` or /dev/null: the remote stdin ends at once.
    Closed,
}

/// Our stdin as an async reader: a terminal through its own non-blocking
/// file (no thread left blocked on it when we exit), else tokio's stdin.
fn local_reader() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    terminal_reader(crate::terminal::Tty::input)
}

/// [`local_reader`] for a session that keeps our terminal in raw mode.
fn raw_local_reader() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    terminal_reader(crate::terminal::Tty::raw_input)
}

fn terminal_reader(
    open: fn(std::io::Stdin) -> std::io::Result<crate::terminal::Tty>,
) -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    if std::io::stdin().is_terminal() {
        if let Ok(tty) = open(std::io::stdin()) {
            return Box::new(tty);
        }
    }
    Box::new(tokio::io::stdin())
}

/// Feeds `local` (after `first`, a chunk already read) to the remote stdin,
/// then ends it.
async fn forward_stdin(
    mut local: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    stdin: StdinWriter,
    first: Option<bytes::Bytes>,
) {
    if let Some(first) = first {
        if stdin.write(first).await.is_err() {
            return;
        }
    }
    // Three 1 MiB blocks cover the 1 MiB window plus the one filling.
    let mut buffers = ChunkBuffers::new(1024 * 1024, 3);
    loop {
        let buf = buffers.room(crate::MAX_STDIN_CHUNK);
        match local.read_buf(&mut buf.limit(crate::MAX_STDIN_CHUNK)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let chunk = buf.split().freeze();
                if stdin.write(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stdin.close().await;
}

/// Reads in flight from a piped stdin: enough to keep the reading thread
/// one chunk ahead of the connection.
const STDIN_AHEAD: usize = 2;

/// Feeds our stdin (a pipe or a file, not a terminal) to the remote stdin,
/// then ends it. A thread reads it with blocking reads straight into
/// recycled blocks, so each chunk is read once and sent as it is: tokio's
/// stdin would read into its own buffer on a blocking-pool thread, then copy.
async fn forward_piped_stdin(stdin: StdinWriter) {
    let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel::<bytes::Bytes>(STDIN_AHEAD);
    let reader = std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || read_stdin_chunks(&chunks_tx));
    if reader.is_err() {
        // No thread to be had: tokio's reader does the same, slower.
        return forward_stdin(local_reader(), stdin, None).await;
    }
    while let Some(chunk) = chunks.recv().await {
        if stdin.write(chunk).await.is_err() {
            // The reading thread stops at its next chunk (the channel is
            // closed) or stays blocked until we exit, as tokio's would.
            return;
        }
    }
    let _ = stdin.close().await;
}

/// The reading thread of [`forward_piped_stdin`]: chunks until end of file
/// (or an error, taken as the end, as before), or until nobody listens.
fn read_stdin_chunks(chunks: &tokio::sync::mpsc::Sender<bytes::Bytes>) {
    use std::io::Read;
    use std::os::fd::AsFd;
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return;
    };
    let mut file = std::fs::File::from(fd);
    // The remote window (1 MiB), the chunks queued here and the one filling.
    let mut buffers = ChunkBuffers::new(1024 * 1024, 4);
    loop {
        let buf = buffers.room(crate::MAX_STDIN_CHUNK);
        let start = buf.len();
        buf.resize(start + crate::MAX_STDIN_CHUNK, 0);
        let n = match file.read(&mut buf[start..]) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {
                buf.truncate(start);
                continue;
            }
            Err(_) => 0,
        };
        buf.truncate(start + n);
        if n == 0 {
            return;
        }
        if chunks.blocking_send(buf.split().freeze()).is_err() {
            return;
        }
    }
}

async fn one_shot(
    client: &Client,
    request: ExecRequest,
    input: LocalInput,
) -> Result<ExitCode, Failure> {
    let command = client.exec(request).await?;
    let forwarder = match input {
        LocalInput::Open if !std::io::stdin().is_terminal() => {
            Some(tokio::spawn(forward_piped_stdin(command.stdin())))
        }
        LocalInput::Open => Some(tokio::spawn(forward_stdin(
            local_reader(),
            command.stdin(),
            None,
        ))),
        LocalInput::Closed => {
            command.close_stdin().await?;
            None
        }
    };
    let status = stream_output(command, Vec::new()).await;
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    Ok(exit_code(&status?))
}

/// `rsh-client DEST < script`: one remote shell reads the whole script, so
/// `cd`, variables and `exit` carry through it, as with ssh. The login shell
/// (protocol version 2), or `sh` from a server that cannot start one.
async fn remote_shell(
    client: &Client,
    template: &Template,
    input: LocalInput,
) -> Result<ExitCode, Failure> {
    let fallback = || template.with("exec sh");
    let mut command = match client
        .exec(template.apply(ExecRequest::login_shell()))
        .await
    {
        Ok(command) => command,
        Err(ClientError::Unsupported { .. }) => return one_shot(client, fallback(), input).await,
        Err(err) => return Err(err.into()),
    };
    let mut local = local_reader();
    let first = match input {
        LocalInput::Closed => None,
        LocalInput::Open => {
            let mut buf = bytes::BytesMut::with_capacity(crate::MAX_STDIN_CHUNK);
            match local.read_buf(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(buf.freeze()),
            }
        }
    };
    // The server grants stdin credit once the shell has started, and refuses
    // a login shell it cannot start before that: until the first chunk is
    // taken, a refusal as unsupported means "try `sh`", with nothing lost.
    let stdin = command.stdin();
    let mut pending = Vec::new();
    let nothing_to_resend = first.is_none();
    let started = {
        let send_first = async {
            match first.clone() {
                Some(chunk) => stdin.write(chunk).await,
                None => {
                    // Ending stdin says nothing about the shell: wait for
                    // its first event instead.
                    let _ = stdin.close().await;
                    std::future::pending().await
                }
            }
        };
        tokio::pin!(send_first);
        loop {
            tokio::select! {
                biased;
                event = command.next_event() => match event {
                    Err(ClientError::Refused { kind: ErrorKind::Unsupported, message }) => {
                        tracing::info!(%message, "no login shell from this server; running sh");
                        break false;
                    }
                    Err(err) => return Err(err.into()),
                    Ok(Some(event)) => {
                        let exited = matches!(event, Event::Exit(_));
                        pending.push(event);
                        if exited || nothing_to_resend {
                            break true;
                        }
                    }
                    Ok(None) => break true,
                },
                _ = &mut send_first => break true,
            }
        }
    };
    if !started {
        let command = client.exec(fallback()).await?;
        let forwarder = match (input, first) {
            (LocalInput::Open, Some(first)) => Some(tokio::spawn(forward_stdin(
                local,
                command.stdin(),
                Some(first),
            ))),
            _ => {
                command.close_stdin().await?;
                None
            }
        };
        let status = stream_output(command, Vec::new()).await;
        if let Some(forwarder) = forwarder {
            forwarder.abort();
        }
        return Ok(exit_code(&status?));
    }
    let forwarder = (input == LocalInput::Open && first.is_some())
        .then(|| tokio::spawn(forward_stdin(local, command.stdin(), None)));
    let status = stream_output(command, pending).await;
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    Ok(exit_code(&status?))
}

/// A session on a remote pty: our terminal in raw mode (when stdin is one),
/// keys and output byte for byte, SIGWINCH sent as a resize, escapes.
async fn terminal_session(
    client: &Client,
    request: ExecRequest,
    escape: Option<u8>,
    host: &str,
    quiet: bool,
) -> Result<ExitCode, Failure> {
    use crate::session::{self, CommandInput, Local, LocalSignals, NoTerminal, SessionEnd};
    let term = std::env::var("TERM").unwrap_or_else(|_| "dumb".to_owned());
    let size = crate::terminal::local_window_size().unwrap_or(crate::terminal::WindowSize {
        cols: 80,
        rows: 24,
        ..Default::default()
    });
    let command = client
        .exec(request.pty(term.into_bytes(), session::pty_size(size)))
        .await?;
    let remote_input = CommandInput::of(&command);
    let signals = LocalSignals::install().map_err(|err| {
        Failure::Rsh(ClientError::ConnectionLost(format!(
            "cannot catch signals: {err}"
        )))
    })?;
    let output: Box<dyn tokio::io::AsyncWrite + Unpin + Send> = if std::io::stdout().is_terminal() {
        match crate::terminal::TtyOutput::open(std::io::stdout()) {
            Ok(tty) => Box::new(tty),
            Err(_) => Box::new(tokio::io::stdout()),
        }
    } else {
        Box::new(tokio::io::stdout())
    };
    let local = Local {
        // Raw mode is entered below whenever stdin is a terminal.
        input: raw_local_reader(),
        output,
        messages: tokio::io::stderr(),
    };
    let filter = crate::escape::EscapeFilter::new(escape);
    let end = if std::io::stdin().is_terminal() {
        let raw = crate::terminal::RawMode::enter(std::io::stdin()).map_err(|err| {
            Failure::Rsh(ClientError::ConnectionLost(format!(
                "cannot set the terminal to raw mode: {err}"
            )))
        })?;
        let end = session::run(local, &raw, signals, filter, &remote_input, command).await;
        // Before any message: the terminal is sane again when it is printed.
        drop(raw);
        end
    } else {
        session::run(local, &NoTerminal, signals, filter, &remote_input, command).await
    };
    let closed = || {
        if !quiet && std::io::stdin().is_terminal() {
            eprintln!("Connection to {host} closed.");
        }
    };
    match end {
        SessionEnd::Exited(status) => {
            closed();
            Ok(exit_code(&status))
        }
        SessionEnd::Disconnected => {
            closed();
            Ok(ExitCode::from(EXIT_RSH_FAILURE))
        }
        SessionEnd::Signalled(number) => Ok(killed_by_signal(number)),
        SessionEnd::ConnectionLost(reason) => Ok(fail(&reason)),
        SessionEnd::LocalOutput(err) => Ok(fail(&format!("cannot write to the terminal: {err}"))),
    }
}

/// A local fatal signal ends the client as modern ssh does: 255, with
/// "Killed by signal N." (the remote side is hung up).
fn killed_by_signal(number: i32) -> ExitCode {
    eprintln!("Killed by signal {number}.");
    ExitCode::from(EXIT_RSH_FAILURE)
}

/// Writes the command's output to ours as it arrives, forwarding Ctrl-C as
/// SIGINT, until it exits.
async fn stream_output(
    mut command: RemoteCommand,
    pending: Vec<Event>,
) -> Result<ExitStatus, Failure> {
    // The handlers are in place before any output is shown, so a signal
    // sent by someone who saw it is caught.
    use tokio::signal::unix::{signal as catch, SignalKind};
    let caught = (
        catch(SignalKind::interrupt()),
        catch(SignalKind::terminate()),
        catch(SignalKind::hangup()),
    );
    let interrupts = tokio::spawn({
        let signaller = command.signaller();
        async move {
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = caught else {
                return;
            };
            // Each Ctrl-C goes to the remote command; a third one in a row
            // means the user wants out even if the command ignores SIGINT:
            // disconnecting makes the server end its whole process group.
            let mut presses = 0;
            loop {
                tokio::select! {
                    pressed = int.recv() => {
                        if pressed.is_none() {
                            return;
                        }
                    }
                    Some(()) = term.recv() => {
                        let _ = killed_by_signal(nix::libc::SIGTERM);
                        std::process::exit(i32::from(EXIT_RSH_FAILURE));
                    }
                    Some(()) = hup.recv() => {
                        let _ = killed_by_signal(nix::libc::SIGHUP);
                        std::process::exit(i32::from(EXIT_RSH_FAILURE));
                    }
                }
                presses += 1;
                if presses == DISCONNECT_AFTER_INTERRUPTS {
                    eprintln!("rsh-client: interrupted {presses} times; disconnecting");
                    std::process::exit(130);
                }
                if signaller.send(signal::INT).await.is_err() {
                    return;
                }
            }
        }
    });
    let result = async {
        let mut stdout = RawStdout::new();
        let mut stderr = std::io::stderr();
        let mut pending = pending.into_iter();
        loop {
            let event = match pending.next() {
                Some(event) => Some(event),
                None => command.next_event().await?,
            };
            match event {
                Some(Event::Stdout(data)) => write_out(&mut stdout, &data)?,
                Some(Event::Stderr(data)) => {
                    // A closed stderr is not worth failing the command for.
                    let _ = stderr.write_all(&data).and_then(|()| stderr.flush());
                }
                Some(Event::Exit(status)) => return Ok(status),
                None => {
                    return Err(Failure::Rsh(ClientError::ConnectionLost(
                        "command ended without a status".to_owned(),
                    )))
                }
            }
        }
    }
    .await;
    interrupts.abort();
    result
}

/// Our stdout, written without `std::io::Stdout`'s line buffering: that
/// would scan every chunk of binary output for newlines for nothing.
enum RawStdout {
    File(std::fs::File),
    Std(std::io::Stdout),
}

impl RawStdout {
    fn new() -> Self {
        use std::os::fd::AsFd;
        match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => RawStdout::File(std::fs::File::from(fd)),
            Err(_) => RawStdout::Std(std::io::stdout()),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            RawStdout::File(file) => file.write_all(data),
            RawStdout::Std(stdout) => {
                let mut out = stdout.lock();
                out.write_all(data).and_then(|()| out.flush())
            }
        }
    }
}

fn write_out(stdout: &mut RawStdout, data: &[u8]) -> Result<(), Failure> {
    match stdout.write_all(data) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::BrokenPipe),
        Err(err) => Err(Failure::Rsh(ClientError::ConnectionLost(format!(
            "cannot write to stdout: {err}"
        )))),
    }
}

/// The `rsh-client` command line as clap builds it, for man pages and
/// shell completions (`cargo xtask dist`).
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// `rsh-client true` read as `rsh-client -c true`: the unknown host gets
    /// a pointer to -c; a real host name, an alias or a command does not.
    /// (Checked here, not end to end: that would need a DNS lookup.)
    #[test]
    fn a_bare_word_that_is_no_host_points_to_dash_c() {
        let unresolved = ClientError::Connect {
            endpoint: "true:7022".to_owned(),
            reason: "failed to lookup address information: Name or service not known".to_owned(),
        };
        let hint = |argv: &[&str], host: &str, err: &ClientError| {
            let args = Args::try_parse_from(argv).expect("parse");
            let endpoint = Endpoint::Tcp {
                host: host.to_owned(),
                port: 7022,
            };
            local_command_hint(&args, &endpoint, args.words.is_empty(), err)
        };
        assert_eq!(
            hint(&["rsh-client", "true"], "true", &unresolved),
            " (no host \"true\"; to run it on the local server: rsh-client -c 'true')"
        );
        assert_eq!(hint(&["rsh-client", "true", "x"], "true", &unresolved), "");
        assert_eq!(
            hint(&["rsh-client", "a.example"], "a.example", &unresolved),
            ""
        );
        assert_eq!(
            hint(&["rsh-client", "web"], "web1.example", &unresolved),
            ""
        );
        let refused = ClientError::Connect {
            endpoint: "web:7022".to_owned(),
            reason: "Connection refused (os error 111)".to_owned(),
        };
        assert_eq!(hint(&["rsh-client", "web"], "web", &refused), "");
    }

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("rsh-client").chain(args.iter().copied()))
            .unwrap_or_else(|err| panic!("{args:?}: {err}"))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn options_before_and_after_dest_then_the_command_verbatim() {
        // pdsh's ssh mode.
        let args = parse(&["-2", "-a", "-x", "-lroot", "web1", "uptime", "-p"]);
        assert_eq!(args.login.as_deref(), Some("root"));
        assert_eq!(args.dest.as_deref(), Some("web1"));
        assert_eq!(args.words, ["uptime", "-p"]);
        // As ssh, options may follow DEST until the command starts.
        let args = parse(&["web1", "-p", "2222", "-v", "ls", "-l", "--", "-x"]);
        assert_eq!(args.port, Some(2222));
        assert_eq!(args.verbose, 1);
        assert_eq!(args.words, ["ls", "-l", "--", "-x"]);
        // Ansible's shape.
        let args = parse(&["-o", "BatchMode=yes", "-n", "--", "web1", "echo hi"]);
        assert!(args.null_stdin);
        assert_eq!(args.words, ["echo hi"]);
        // git's probe.
        let args = parse(&["-G", "-o", "SendEnv=GIT_PROTOCOL", "web1"]);
        assert!(args.print_config);
        assert_eq!(args.options, ["SendEnv=GIT_PROTOCOL"]);
        // The one-shot flag with no DEST, as before.
        let args = parse(&["-c", "uname -a"]);
        assert_eq!(args.dest, None);
        assert_eq!(args.command.as_deref(), Some("uname -a"));
    }

    #[test]
    fn ssh_letters_mean_what_they_mean_to_ssh() {
        let args = parse(&["-tt", "-e", "^]", "-C", "web1"]);
        assert_eq!(args.tty, 2);
        assert_eq!(args.escape.map(|e| e.0), Some(Some(0x1d)));
        assert_eq!(args.cwd, None, "-C is compression (ignored), not --cwd");
        let args = parse(&["-e", "none", "-T", "web1"]);
        assert_eq!(args.escape.map(|e| e.0), Some(None));
        assert!(args.no_tty);
        let args = parse(&["--timeout", "2", "--cwd", "/tmp", "--env", "A=b", "web1"]);
        assert_eq!(args.timeout, Some(2.0));
        assert_eq!(args.env, [("A".to_owned(), "b".to_owned())]);
        assert!(Args::try_parse_from(["rsh-client", "-e", "ab", "web1"]).is_err());
        assert!(Args::try_parse_from(["rsh-client", "-p", "0", "web1"]).is_err());
    }
}
