//! `rsh-client`'s command line: run commands on an rsh server, like
//! `ssh HOST CMD`. The binary's `main`, kept in the library so the root
//! package's thin binary (and `cargo install --path .`) can run it.

use crate::{
    client_identity, signal, Client, ClientError, ConnectOptions, Event, ExecRequest, ExitStatus,
    Fingerprint, HostKeyPolicy, RemoteCommand,
};
use anyhow::Context;
use bytes::BufMut;
use clap::Parser;
use rsh_config::{Endpoint, RshHome};
use rsh_proto::io::ChunkBuffers;
use std::io::{IsTerminal, Write};
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

/// Run commands on an rsh server.
///
/// With -c, runs one command like `ssh HOST CMD`: remote stdout to stdout,
/// stderr to stderr, byte for byte; local stdin is forwarded (or closed at
/// once when it is a terminal); Ctrl-C sends SIGINT to the remote command
/// (a third Ctrl-C disconnects, which ends it); the exit code is the remote
/// one (128+N if it died of signal N, 124 if it timed out, 255 if rsh itself
/// failed).
///
/// Without -c, on a terminal: an interactive prompt, each line run remotely;
/// `exit` or Ctrl-D quits. Without -c, stdin not a terminal: each line of
/// stdin is a command, run in turn; the exit code is the last command's.
///
/// Over TCP the connection is TLS 1.3 with this client's key ($RSH_HOME/id,
/// created on first use; see --fingerprint) and the server's key checked
/// against $RSH_HOME/known_hosts: an unknown host is asked about on a
/// terminal and refused in batch use unless --accept-new; a changed host key
/// is always refused.
#[derive(Debug, Parser)]
#[command(name = "rsh-client", version)]
struct Args {
    /// Server to connect to: unix:PATH, HOST[:PORT] or [IPV6][:PORT] (TCP
    /// port 7022 by default). Default: unix:$RSH_HOME/rsh.sock.
    #[arg(value_name = "DEST")]
    dest: Option<Endpoint>,

    /// Print this client's key as an authorized_keys line
    /// (`SHA256:... user@host`), creating the key if needed, and exit.
    #[arg(long)]
    fingerprint: bool,

    /// Trust and record the key of a host not yet in known_hosts. A key that
    /// differs from a recorded one is still refused.
    #[arg(long)]
    accept_new: bool,

    /// Run this command and exit with its status.
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    command: Option<String>,

    /// Run remote commands in this directory.
    #[arg(short = 'C', long = "cwd", value_name = "DIR")]
    cwd: Option<String>,

    /// Set an environment variable for remote commands. Repeatable.
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(String, String)>,

    /// Kill a remote command (its whole process group) after this many seconds.
    #[arg(short = 't', long = "timeout", value_name = "SECS")]
    timeout: Option<f64>,

    #[command(flatten)]
    fleet: crate::fleet::FleetArgs,
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

async fn run(args: Args) -> ExitCode {
    let template = match request_template(&args) {
        Ok(template) => template,
        Err(err) => return fail(&format!("{err:#}")),
    };
    if args.fingerprint {
        return match RshHome::from_env()
            .map_err(|err| err.to_string())
            .and_then(|home| client_identity(&home).map_err(|err| err.to_string()))
        {
            Ok(identity) => {
                println!("{}", identity.authorized_keys_line());
                ExitCode::SUCCESS
            }
            Err(err) => fail(&err),
        };
    }
    if args.fleet.is_active() {
        let request = args
            .command
            .as_deref()
            .map(|command| template.with(command));
        let dest = args.dest.is_some();
        return crate::fleet::main(&args.fleet, request, dest, args.accept_new).await;
    }
    let client = match connect(args.dest.as_ref(), args.accept_new).await {
        Ok(client) => client,
        Err(err) => return fail(&format!("{err:#}")),
    };
    let result = match &args.command {
        Some(command) => {
            enlarge_pipes();
            let forward_stdin = !std::io::stdin().is_terminal() && !stdin_is_dev_null();
            one_shot(&client, template.with(command), forward_stdin).await
        }
        None if std::io::stdin().is_terminal() => interactive(&client, &template).await,
        None => script(&client, &template).await,
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
}

impl Template {
    fn with(&self, command: &str) -> ExecRequest {
        let mut request = ExecRequest::new(command);
        if let Some(cwd) = &self.cwd {
            request = request.cwd(cwd.as_str());
        }
        for (key, value) in &self.env {
            request = request.env(key.as_str(), value.as_str());
        }
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        request
    }
}

fn request_template(args: &Args) -> anyhow::Result<Template> {
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
    })
}

async fn connect(dest: Option<&Endpoint>, accept_new: bool) -> anyhow::Result<Client> {
    let home = RshHome::from_env()?;
    let endpoint = match dest {
        Some(endpoint) => endpoint.clone(),
        None => Endpoint::Unix(home.socket_path()),
    };
    let mut options = ConnectOptions::new(home);
    options.host_keys = if accept_new {
        HostKeyPolicy::AcceptNew
    } else if std::io::stdin().is_terminal() {
        HostKeyPolicy::Ask(Arc::new(ask_about_host))
    } else {
        HostKeyPolicy::Strict
    };
    Ok(Client::connect(&endpoint, &options).await?)
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

async fn one_shot(
    client: &Client,
    request: ExecRequest,
    forward_stdin: bool,
) -> Result<ExitCode, Failure> {
    let command = client.exec(request).await?;
    let forwarder = if forward_stdin {
        let stdin = command.stdin();
        Some(tokio::spawn(async move {
            let mut local = tokio::io::stdin();
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
        }))
    } else {
        command.close_stdin().await?;
        None
    };
    let status = stream_output(command).await;
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    Ok(exit_code(&status?))
}

/// Writes the command's output to ours as it arrives, forwarding Ctrl-C as
/// SIGINT, until it exits.
async fn stream_output(mut command: RemoteCommand) -> Result<ExitStatus, Failure> {
    let interrupts = tokio::spawn({
        let signaller = command.signaller();
        async move {
            // Each Ctrl-C goes to the remote command; a third one in a row
            // means the user wants out even if the command ignores SIGINT:
            // disconnecting makes the server end its whole process group.
            let mut presses = 0;
            while tokio::signal::ctrl_c().await.is_ok() {
                presses += 1;
                if presses == DISCONNECT_AFTER_INTERRUPTS {
                    eprintln!("rsh-client: interrupted {presses} times; disconnecting");
                    std::process::exit(130);
                }
                if signaller.send(signal::INT).await.is_err() {
                    break;
                }
            }
        }
    });
    let result = async {
        let mut stdout = RawStdout::new();
        let mut stderr = std::io::stderr();
        loop {
            match command.next_event().await? {
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

async fn interactive(client: &Client, template: &Template) -> Result<ExitCode, Failure> {
    use rustyline::error::ReadlineError;
    // The prompt goes to the terminal even when stdout is redirected; only
    // the commands' output goes to stdout.
    let config = rustyline::Config::builder()
        .behavior(rustyline::Behavior::PreferTerm)
        .build();
    let mut editor = rustyline::DefaultEditor::with_config(config).map_err(|err| {
        Failure::Rsh(ClientError::ConnectionLost(format!(
            "cannot open the terminal: {err}"
        )))
    })?;
    let mut last = ExitCode::SUCCESS;
    let mut last_code = 0u8;
    loop {
        let prompt = if last_code == 0 {
            "rsh$ ".to_owned()
        } else {
            format!("[{last_code}] rsh$ ")
        };
        let (returned, line) = tokio::task::spawn_blocking(move || {
            let line = editor.readline(&prompt);
            (editor, line)
        })
        .await
        .map_err(|err| {
            Failure::Rsh(ClientError::ConnectionLost(format!(
                "line editor failed: {err}"
            )))
        })?;
        editor = returned;
        match line {
            Ok(line) => {
                let trimmed = line.trim();
                if trimmed.is_empty() {
                    continue;
                }
                if trimmed == "exit" {
                    break;
                }
                let _ = editor.add_history_entry(trimmed);
                let command = client.exec(template.with(&line)).await?;
                command.close_stdin().await?;
                let status = match stream_output(command).await {
                    Ok(status) => status,
                    Err(Failure::Rsh(ClientError::Refused { message, .. })) => {
                        eprintln!("rsh-client: {message}");
                        last_code = EXIT_RSH_FAILURE;
                        last = ExitCode::from(EXIT_RSH_FAILURE);
                        continue;
                    }
                    Err(other) => return Err(other),
                };
                last_code = status_byte(&status);
                last = exit_code(&status);
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(err) => {
                return Err(Failure::Rsh(ClientError::ConnectionLost(format!(
                    "cannot read the terminal: {err}"
                ))))
            }
        }
    }
    Ok(last)
}

fn status_byte(status: &ExitStatus) -> u8 {
    match status {
        ExitStatus::Code(code) => (*code & 0xff) as u8,
        ExitStatus::Signal(signal) => 128u8.saturating_add(*signal),
        ExitStatus::TimedOut => EXIT_TIMED_OUT,
        ExitStatus::FailedToStart(_) => EXIT_RSH_FAILURE,
    }
}

async fn script(client: &Client, template: &Template) -> Result<ExitCode, Failure> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut last = ExitCode::SUCCESS;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(err) => {
                return Err(Failure::Rsh(ClientError::ConnectionLost(format!(
                    "cannot read stdin: {err}"
                ))))
            }
        };
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if trimmed == "exit" {
            break;
        }
        let command = client.exec(template.with(&line)).await?;
        command.close_stdin().await?;
        last = exit_code(&stream_output(command).await?);
    }
    Ok(last)
}
