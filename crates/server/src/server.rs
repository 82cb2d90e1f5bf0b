use crate::budget::StdinBudget;
use crate::connection::ServerContext;
use crate::reaper::Reaper;
use crate::{Listener, ServerConfig};
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, info_span, Instrument};

/// A server over already-bound listeners.
#[derive(Debug)]
pub struct Server {
    config: Arc<ServerConfig>,
    listeners: Vec<Listener>,
    stdin_budget: StdinBudget,
    updates: Option<watch::Receiver<Arc<ServerConfig>>>,
}

impl Server {
    /// A server that will accept on `listeners`.
    pub fn new(config: ServerConfig, listeners: Vec<Listener>) -> Self {
        Server {
            stdin_budget: StdinBudget::new(config.stdin_budget),
            config: Arc::new(config),
            listeners,
            updates: None,
        }
    }

    /// Settings to follow while running (a reload on SIGHUP): each new
    /// connection takes the latest value; running connections and their
    /// commands keep the settings they started with. `max_connections` is
    /// sized once, at [`Server::run`].
    pub fn with_updates(mut self, updates: watch::Receiver<Arc<ServerConfig>>) -> Self {
        self.updates = Some(updates);
        self
    }

    /// Serves until `shutdown` is cancelled, then lets running commands
    /// finish within the shutdown grace, ends the rest, and returns once every
    /// process is reaped. Socket files are removed on return.
    pub async fn run(self, shutdown: CancellationToken) {
        let ctx = ServerContext {
            config: self.config.clone(),
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
            reaper: Reaper::start(),
            stdin_budget: self.stdin_budget.clone(),
            updates: self.updates.clone(),
        };
        let limit = Arc::new(Semaphore::new(self.config.max_connections));
        for listener in &self.listeners {
            info!(endpoint = %listener.endpoint(), "listening");
        }
        futures::future::join_all(
            self.listeners
                .iter()
                .map(|listener| listener.accept_loop(ctx.clone(), limit.clone())),
        )
        .await;
        info!("shutting down: no longer accepting");
        ctx.tracker.close();
        ctx.tracker.wait().await;
        ctx.reaper.stop();
        info!("shutdown complete");
        drop(self.listeners);
    }
}

/// Serves one already-connected stream as the daemon serves an authenticated
/// connection: the greeting, then frames, until the peer closes, breaks the
/// protocol or `shutdown` is cancelled (then running commands get the
/// shutdown grace, as in [`Server::run`]). Returns once the connection has
/// ended and every command it started is reaped.
///
/// No authentication happens here: the caller has already decided who the
/// peer is (tests over [`tokio::io::duplex`], an embedding that authenticates
/// by other means). `peer` names it in the connection's log span and in its
/// sessions' `RSH_CONNECTION`.
pub async fn serve_connection<S>(
    stream: S,
    peer: &str,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Its own reaper and stdin budget: this connection is all it serves.
    let ctx = ServerContext {
        stdin_budget: StdinBudget::new(config.stdin_budget),
        config,
        shutdown,
        tracker: TaskTracker::new(),
        reaper: Reaper::start(),
        updates: None,
    };
    let tracker = ctx.tracker.clone();
    let reaper = ctx.reaper.clone();
    let info = crate::peer::ConnectionInfo::Embedded {
        peer: peer.to_owned(),
    };
    crate::connection::serve(stream, ctx, info)
        .instrument(info_span!("conn", peer = %peer))
        .await;
    tracker.close();
    tracker.wait().await;
    reaper.stop();
}
