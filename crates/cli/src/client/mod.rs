//! `rsh-client`'s command line: ssh's (`rsh-client [OPTIONS] DEST [COMMAND
//! [ARG...]]`), so that people and the tools that drive ssh (rsync, git,
//! GNU parallel, pdsh, Ansible) can use it where they use ssh. The root
//! package's binary is a thin `main` over [`main`].
//!
//! Parsing follows ssh: options may come before and after DEST; the first
//! word after DEST that is not an option starts the command, and it and every
//! word after it are the command, joined with single spaces for the remote
//! shell (so quoting works as with ssh); `--` ends the options.
//!
//! The pieces, each by job: `args` (the clap definition), `plan` (what to
//! run where: DEST and the config file resolved, one host or a fleet, a pty
//! or not), `stdio` (our stdin forwarded, the remote output written),
//! `interactive` (a terminal session on a remote pty), `fleet` (one command
//! on many hosts), and `exit` (the exit codes both paths share).

mod args;
mod exit;
mod fleet;
mod interactive;
mod plan;
mod stdio;

use args::Args;
use clap::Parser;
use exit::fail;
use rsh_client::{client_identity, create_identity_at, Client, ExecRequest};
use rsh_config::RshHome;
use std::io::IsTerminal;
use std::process::ExitCode;

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

/// The `rsh-client` command line as clap builds it, for man pages and
/// shell completions (`cargo xtask dist`).
pub fn command() -> clap::Command {
    <Args as clap::CommandFactory>::command()
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
    let options = match plan::fleet_options(args, home) {
        Ok(options) => options,
        Err(err) => return fail(&format!("{err:#}")),
    };
    // The user is per host (user@, -l, User), applied by the fleet.
    let template = match plan::request_template(args, None) {
        Ok(template) => template,
        Err(err) => return fail(&format!("{err:#}")),
    };
    fleet::run(&args.fleet, template.with(&command), options).await
}

async fn run(args: Args) -> ExitCode {
    let home = match RshHome::from_env() {
        Ok(home) => home,
        Err(err) => return fail(&err.to_string()),
    };
    if args.fingerprint {
        // An explicit request for a key: the one place a key is created
        // at a path other than the default.
        let identity = match &args.identity {
            Some(path) => create_identity_at(&home, path),
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
        return match plan::forget_host(&home, host, args.port) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => fail(&format!("{err:#}")),
        };
    }
    if args.fleet.is_active() {
        return run_fleet(&args, home).await;
    }
    let plan = match plan::plan(&args, &home) {
        Ok(plan) => plan,
        Err(err) => return fail(&format!("{err:#}")),
    };
    if args.print_config {
        return plan::print_config(&plan);
    }
    let template = match plan::request_template(&args, plan.user.clone()) {
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
                plan::local_command_hint(&args, &plan.endpoint, command.is_none(), &err)
            ))
        }
    };
    tracing::info!(version = client.protocol_version(), "connected");
    let stdin_tty = std::io::stdin().is_terminal();
    let stdin = if args.null_stdin || stdio::stdin_is_dev_null() {
        stdio::LocalInput::Closed
    } else {
        stdio::LocalInput::Open
    };
    let on_pty = plan::wants_pty(&args, command.is_none(), stdin_tty);
    let result = if on_pty {
        let request = match &command {
            Some(command) => ExecRequest::new(command.as_str()),
            None => ExecRequest::login_shell(),
        };
        let escape = plan::escape_char(&args, stdin_tty);
        let host = plan.resolved.host.clone();
        interactive::terminal_session(&client, template.apply(request), escape, &host, args.quiet)
            .await
    } else {
        stdio::enlarge_pipes();
        stdio::blocking_stdio();
        match &command {
            Some(command) => stdio::one_shot(&client, template.with(command), stdin).await,
            None => stdio::remote_shell(&client, &template, stdin).await,
        }
    };
    let code = result.unwrap_or_else(exit::Failure::exit_code);
    // After the server's shutdown notice, say that the server ended the
    // connection, as ssh does, whatever the command's status (a TERM trap
    // may exit with its own code); the exit code is unchanged. A terminal
    // session says it before its own "closed." line.
    if !on_pty && client.server_is_leaving() {
        exit::closed_by_remote_host(&plan.resolved.host);
    }
    code
}
