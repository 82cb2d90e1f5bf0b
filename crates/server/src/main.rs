//! `rsh-server`: the rsh daemon.

use anyhow::Context;
use clap::Parser;
use rsh_config::{Endpoint, RshHome};
use rsh_server::{Listener, Server, ServerConfig};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

/// Run commands for rsh clients and stream their output back.
///
/// Each command runs as `SHELL -c COMMAND` in its own process group; its
/// stdout and stderr are streamed back as they are produced, then its exit
/// status. The Unix socket admits only this user's processes (file mode 0600
/// and peer credentials).
///
/// Files live in RSH_HOME (default ~/.rsh, created with mode 0700).
/// SIGINT or SIGTERM stops accepting, gives running commands the shutdown
/// grace, ends the rest, removes the socket and exits 0.
#[derive(Debug, Parser)]
#[command(name = "rsh-server", version)]
struct Args {
    /// Endpoint to listen on: unix:PATH. Repeat for several.
    /// Default: unix:$RSH_HOME/rsh.sock.
    #[arg(short, long = "listen", value_name = "ADDR")]
    listen: Vec<Endpoint>,

    /// Shell that runs each command as `SHELL -c COMMAND`.
    #[arg(long, value_name = "PATH", default_value = "/bin/sh")]
    shell: PathBuf,

    /// Connections served at once; more wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,

    /// Commands running at once on one connection.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_commands: usize,

    /// Seconds running commands may go on after SIGINT/SIGTERM.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    shutdown_grace: f64,

    /// Seconds between SIGTERM and SIGKILL when a command's group is ended.
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    kill_grace: f64,

    /// Seconds of idle output after a command's shell exits before the
    /// background processes still holding its pipes are ended.
    #[arg(long, value_name = "SECS", default_value_t = 2.0)]
    linger: f64,

    /// More logging (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

fn seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{name} must be a number of seconds >= 0"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rsh-server: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!("{err:#}");
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

async fn serve(args: Args) -> anyhow::Result<()> {
    let config = ServerConfig {
        shell: args.shell,
        max_connections: args.max_connections.max(1),
        max_channels_per_connection: args.max_commands.max(1),
        kill_grace: seconds(args.kill_grace, "kill-grace")?,
        shutdown_grace: seconds(args.shutdown_grace, "shutdown-grace")?,
        linger: seconds(args.linger, "linger")?.max(Duration::from_millis(10)),
        ..ServerConfig::default()
    };
    let mut endpoints = args.listen;
    if endpoints.is_empty() {
        let home = RshHome::from_env()?;
        home.ensure()?;
        endpoints.push(Endpoint::Unix(home.socket_path()));
    }
    let mut listeners = Vec::new();
    for endpoint in &endpoints {
        listeners.push(
            Listener::bind(endpoint).with_context(|| format!("cannot listen on {endpoint}"))?,
        );
    }

    if !rsh_server::process_group::become_subreaper() {
        tracing::debug!("not a subreaper: init reaps commands' background processes");
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    Server::new(config, listeners).run(shutdown).await;
    Ok(())
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        error!("cannot install signal handlers; stop the server with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
    shutdown.cancel();
}
