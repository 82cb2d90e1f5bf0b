//! Signals as daemons use them: SIGHUP reloads, SIGTERM, SIGINT and SIGQUIT
//! stop (SIGQUIT as sshd treats it).
//!
//! The loop here owns the signal streams for the server's life. A SIGHUP
//! runs the reload the caller passes ([`reload`]: re-read the config file
//! and check authorized_keys) between `RELOADING=1` and `READY=1` to systemd;
//! running connections and commands are untouched. SIGTERM, SIGINT or
//! SIGQUIT tells systemd `STOPPING=1` and cancels the shutdown token: the
//! server stops accepting, gives running commands the shutdown grace, then
//! ends them.
//!
//! Handling all four also gives every command the default action for them:
//! exec resets a handled signal to its default, but an *ignored* one stays
//! ignored. A server started from a script (`rsh-server &` ignores SIGINT
//! and SIGQUIT) or under `nohup` (SIGHUP) would otherwise pass that on to
//! every shell it runs, and `Ctrl-\` on a remote terminal would not quit.
//!
//! Every signal is logged. Signals that arrive while a reload is running
//! are queued by tokio and handled after it, in order of kind, not arrival.

use super::config_file::ConfigSource;
use super::notify;
use super::settings::Settings;
use rsh_config::RshHome;
use rsh_server::ServerConfig;
use std::future::Future;
use std::sync::Arc;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// The target of the signal loop's log events, as when it was the library's
/// (see the `server` module's documentation).
const LOG_TARGET: &str = "rsh_server::reload";

/// The server's signal handlers, installed before it reports ready so that
/// a supervisor told "ready" can already stop or reload it.
#[derive(Debug)]
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
    hup: Signal,
    quit: Signal,
}

impl Signals {
    /// Installs handlers for SIGTERM, SIGINT, SIGHUP and SIGQUIT (replacing
    /// their default action, which would end the process at once, or an
    /// inherited "ignore", which commands would inherit in turn).
    ///
    /// # Errors
    /// The runtime could not register a handler.
    pub(crate) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// Handles signals until SIGTERM, SIGINT or SIGQUIT (then cancels
    /// `shutdown`) or until `shutdown` is cancelled by someone else.
    /// `reload` runs for each SIGHUP, one at a time.
    pub(crate) async fn run<F, Fut>(mut self, shutdown: CancellationToken, mut reload: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            tokio::select! {
                _ = self.term.recv() => {
                    info!(target: LOG_TARGET, "SIGTERM received; stopping");
                    break;
                }
                _ = self.int.recv() => {
                    info!(target: LOG_TARGET, "SIGINT received; stopping");
                    break;
                }
                _ = self.quit.recv() => {
                    info!(target: LOG_TARGET, "SIGQUIT received; stopping");
                    break;
                }
                _ = self.hup.recv() => {
                    info!(target: LOG_TARGET, "SIGHUP received; reloading");
                    notify::notify_logged(&notify::reloading());
                    reload().await;
                    notify::notify_logged(notify::READY);
                }
                () = shutdown.cancelled() => return,
            }
        }
        notify::notify_logged(notify::STOPPING);
        shutdown.cancel();
    }
}

/// SIGHUP: re-reads the config file under the start's command line and
/// hands new connections the new settings. A bad file keeps the current
/// settings (and says why); settings that need a restart are named.
pub(crate) async fn reload(
    source: ConfigSource,
    running: &Settings,
    home: &RshHome,
    updates: &watch::Sender<Arc<ServerConfig>>,
) {
    let path = source.path.clone();
    // Reading the file and checking the shell touch the file system: off
    // the runtime's threads.
    let loaded = tokio::task::spawn_blocking(move || {
        let settings = source.load()?;
        let config = settings.server_config()?;
        if !rsh_sys::is_executable(&config.shell) {
            anyhow::bail!("shell {}: not an executable file", config.shell.display());
        }
        Ok((config, settings))
    })
    .await
    .map_err(anyhow::Error::from)
    .and_then(|loaded| loaded);
    let settings = match loaded {
        Ok((config, settings)) => {
            updates.send_replace(Arc::new(config));
            settings
        }
        Err(err) => {
            error!(
                target: super::LOG_TARGET,
                cause = format!("{err:#}"),
                "reload refused; settings unchanged"
            );
            return;
        }
    };
    info!(target: super::LOG_TARGET, config = %path.display(), "reloaded");
    for setting in settings.restart_only_changes(running) {
        warn!(
            target: super::LOG_TARGET,
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
                warn!(
                    target: super::LOG_TARGET,
                    line = warning.line,
                    reason = %warning.message,
                    "authorized_keys: line skipped"
                );
            }
            info!(target: super::LOG_TARGET, keys = keys.len(), "authorized_keys checked");
        }
        Ok(Err(err)) => {
            error!(target: super::LOG_TARGET, cause = %err, "authorized_keys cannot be used; TCP logins will fail")
        }
        Err(err) => {
            error!(target: super::LOG_TARGET, cause = %err, "checking authorized_keys failed")
        }
    }
}
