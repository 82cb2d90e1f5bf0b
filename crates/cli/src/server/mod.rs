//! `rsh-server`'s command line: the daemon's `main`, over the `rsh-server`
//! library.
//!
//! - `settings`: every setting, declared once (flags, config file keys,
//!   defaults, `--check-config`, what SIGHUP reloads);
//! - `config_file`: reading `$RSH_HOME/rsh-server.toml` into the settings;
//! - `reload`: SIGHUP re-reads it, SIGTERM/SIGINT/SIGQUIT stop;
//! - `notify`: readiness for systemd (`Type=notify`);
//! - `logging`: the log subscriber, text for terminals and the journal,
//!   or JSON.
//!
//! Log events here keep the target they had when this code was the library's
//! `rsh_server::cli` (see `LOG_TARGET`), so that filters written as
//! `RUST_LOG=rsh_server=debug` or `log-level = "rsh_server=debug"` go on
//! selecting them.

mod config_file;
mod logging;
mod notify;
mod reload;
mod settings;

use self::config_file::ConfigSource;
use self::reload::Signals;
use self::settings::Settings;
use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};
use rsh_config::{Endpoint, ReadyFile, RshHome};
use rsh_server::{Listener, Server, TlsSetup};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The target of this module's log events (see the module's documentation).
const LOG_TARGET: &str = "rsh_server::cli";

/// The `rsh-server` command line as clap builds it, for man pages and
/// shell completions (`cargo xtask dist`).
pub fn command() -> clap::Command {
    Settings::command()
}

/// Parses the command line, runs the daemon until a signal stops it, and
/// returns the process exit code.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Settings::from_arg_matches(&matches) {
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
    let settings = match source.load() {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("rsh-server: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    if settings.check_config {
        return check_config(&source, &settings);
    }
    logging::init(settings.log_format, &settings.log_filter());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("rsh-server: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(serve(settings, source));
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
            target: LOG_TARGET,
            path = %path.display(),
            "no keys in authorized_keys yet: no TCP client can log in until keys are added"
        ),
        Ok(set) => tracing::debug!(target: LOG_TARGET, keys = set.len(), "authorized_keys read"),
        Err(err) => {
            return Err(anyhow::anyhow!("{err}"))
                .with_context(|| format!("cannot use {}", path.display()))
        }
    }
    Ok(keys)
}

async fn serve(settings: Settings, source: ConfigSource) -> anyhow::Result<()> {
    let home = RshHome::from_env()?;
    if settings.fingerprint {
        println!("{}", host_key(&home)?.fingerprint());
        return Ok(());
    }
    rsh_sys::raise_fd_limit();
    if !rsh_sys::is_executable(&settings.shell) {
        anyhow::bail!(
            "--shell {}: not an executable file",
            settings.shell.display()
        );
    }
    let config = settings.server_config()?;
    let mut endpoints = settings.listen.clone();
    if endpoints.is_empty() {
        home.ensure()?;
        endpoints.push(Endpoint::Unix(home.socket_path()));
    }
    // RSH_HOME holds the config file (which names the shell), the keys and
    // the default socket: a home others can write is fatal whatever the
    // server listens on, as they could plant any of them.
    if home.dir().exists() {
        rsh_tls::trust::check_trusted_dir(home.dir(), own_uid())
            .with_context(|| format!("cannot use {} as RSH_HOME", home.dir().display()))?;
    }
    if let Some(path) = &settings.ready_file {
        remove_ready_file(path).await?;
    }
    let mut fingerprint = None;
    let tls = if endpoints.iter().any(|e| matches!(e, Endpoint::Tcp { .. })) {
        let identity = host_key(&home)?;
        tracing::info!(target: LOG_TARGET, fingerprint = %identity.fingerprint(), "host key");
        fingerprint = Some(identity.fingerprint().to_string());
        let authorized_keys = authorized_keys(&home).await?;
        Some(TlsSetup::new(
            &identity,
            authorized_keys,
            &settings.preauth_limits(),
        )?)
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

    if !rsh_server::process_group::become_subreaper() {
        tracing::debug!(
            target: LOG_TARGET,
            "not a subreaper: init reaps commands' background processes"
        );
    }
    let shutdown = CancellationToken::new();
    // Installed here, not in the spawned task, so that a supervisor told
    // "ready" can already stop or reload the server.
    let signals = Signals::install().context("cannot install signal handlers")?;
    let (updates_tx, updates) = tokio::sync::watch::channel(Arc::new(config.clone()));
    let running = settings.clone();
    let reload_home = home.clone();
    tokio::spawn(signals.run(shutdown.clone(), move || {
        let source = source.clone();
        let running = running.clone();
        let home = reload_home.clone();
        let updates_tx = updates_tx.clone();
        async move { reload::reload(source, &running, &home, &updates_tx).await }
    }));
    if let Some(path) = &settings.ready_file {
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
    notify::notify_logged(&format!("READY=1\nSTATUS=listening on {}", shown.join(" ")));
    Server::new(config, listeners)
        .with_updates(updates)
        .run(shutdown)
        .await;
    if let Some(path) = &settings.ready_file {
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

/// `--check-config`: validates everything a start would and prints the
/// effective settings as a config file would say them (like `sshd -T`).
fn check_config(source: &ConfigSource, settings: &Settings) -> ExitCode {
    let checked = settings.server_config().and_then(|_| {
        if rsh_sys::is_executable(&settings.shell) {
            Ok(())
        } else {
            anyhow::bail!("shell {}: not an executable file", settings.shell.display())
        }
    });
    if let Err(err) = checked {
        eprintln!("rsh-server: {err:#}");
        return ExitCode::FAILURE;
    }
    // What a start would use where the settings leave it to the server.
    let mut shown = settings.clone();
    if shown.listen.is_empty() {
        shown.listen = RshHome::from_env()
            .iter()
            .map(|home| Endpoint::Unix(home.socket_path()))
            .collect();
    }
    shown.log_level = Some(settings.log_filter());
    let found = if source.file_exists() {
        ""
    } else {
        " (not found)"
    };
    println!(
        "# effective settings: command line over {}{found}",
        source.path.display()
    );
    for line in shown.toml_lines() {
        println!("{line}");
    }
    ExitCode::SUCCESS
}
