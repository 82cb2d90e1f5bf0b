//! Signals as daemons use them: SIGHUP reloads, SIGTERM and SIGINT stop.
//!
//! The loop here owns the signal streams for the server's life. A SIGHUP
//! runs the reload the caller passes (`cli` re-reads the config file and
//! checks authorized_keys) between `RELOADING=1` and `READY=1` to systemd;
//! running connections and commands are untouched. SIGTERM or SIGINT tells
//! systemd `STOPPING=1` and cancels the shutdown token: the server stops
//! accepting, gives running commands the shutdown grace, then ends them.
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
}

impl Signals {
    /// Installs handlers for SIGTERM, SIGINT and SIGHUP (replacing their
    /// default action, which would end the process at once).
    ///
    /// # Errors
    /// The runtime could not register a handler.
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// Handles signals until SIGTERM or SIGINT (then cancels `shutdown`) or
    /// until `shutdown` is cancelled by someone else. `reload` runs for each
    /// SIGHUP, one at a time.
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
