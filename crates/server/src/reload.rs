//! Signals as daemons use them: SIGHUP reloads, SIGTERM, SIGINT and SIGQUIT
//! stop (SIGQUIT as sshd treats it).
//!
//! The loop here owns the signal streams for the server's life. A SIGHUP
//! runs the reload the caller passes (`cli` re-reads the config file and
//! checks authorized_keys) between `RELOADING=1` and `READY=1` to systemd;
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

use crate::notify;
use std::future::Future;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// The server's signal handlers, installed before it reports ready so that
/// a supervisor told "ready" can already stop or reload it.
#[derive(Debug)]
pub struct Signals {
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
    pub fn install() -> std::io::Result<Signals> {
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
    pub async fn run<F, Fut>(mut self, shutdown: CancellationToken, mut reload: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = ()>,
    {
        loop {
            tokio::select! {
                _ = self.term.recv() => {
                    info!("SIGTERM received; stopping");
                    break;
                }
                _ = self.int.recv() => {
                    info!("SIGINT received; stopping");
                    break;
                }
                _ = self.quit.recv() => {
                    info!("SIGQUIT received; stopping");
                    break;
                }
                _ = self.hup.recv() => {
                    info!("SIGHUP received; reloading");
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
