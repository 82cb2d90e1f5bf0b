//! Binding endpoints and accepting connections.
//!
//! The Unix socket is guarded twice: its file has mode 0600 inside the 0700
//! `RSH_HOME`, and every accepted peer's credentials are checked, so only the
//! server's own user gets in.
//!
//! A TCP endpoint speaks only TLS 1.3 with both ends authenticated by pinned
//! keys (see `rsh-tls`). Before authentication a connection is cheap and
//! bounded (see [`crate::preauth`]): it first waits, holding no TLS state,
//! for its first byte (at most `max_silent` do, the one silent longest is
//! dropped first); then it waits in line, still holding no TLS state, for
//! one of `max_startups` handshake places (like sshd's MaxStartups); a
//! handshake gives its place up early only if it has stalled while others
//! wait. The whole pre-auth phase must finish within the handshake timeout.
//! So a burst of real clients queues instead of failing, and floods of
//! silent or trickling connections recycle themselves instead of taking the
//! places authorized clients need. What is closed before authentication is
//! logged as one summary line per interval, not a line per connection.
//! Only after login does a connection take one of `max_connections`.

use crate::connection::{self, ServerContext};
use crate::log_limit::Tally;
use crate::preauth::{HandshakeSlots, NoPlace, PreAuthLimits, Progress, Watched};
use rsh_config::Endpoint;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, warn, Instrument};

/// Why an endpoint could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    /// Another server answers on this socket.
    #[error("{0}: another rsh-server is already running on this socket")]
    AlreadyRunning(PathBuf),
    /// The path exists and is something other than a socket.
    #[error("{0}: exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A TCP endpoint was asked for without TLS set up.
    #[error("{0}: TCP needs TLS keys (rsh never serves TCP without authentication)")]
    TcpWithoutTls(String),
    /// The host name did not resolve.
    #[error("{0}: cannot resolve the host")]
    Unresolved(String),
    /// The OS refused.
    #[error("{cause}")]
    Io {
        /// The endpoint.
        path: String,
        /// The cause.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: std::io::Error,
    },
}

/// A bound endpoint, ready to accept.
#[derive(Debug)]
pub enum Listener {
    /// A Unix socket; its file is removed when the listener is dropped.
    Unix(UnixSocket),
    /// A TCP socket serving TLS with mutual key authentication.
    Tls(TlsListener),
}

/// What a TLS listener needs: the acceptor (host key, client verifier) and
/// the pre-auth limits.
#[derive(Clone)]
pub struct TlsSetup {
    config: Arc<rsh_tls::rustls::ServerConfig>,
    authorized_keys: Arc<rsh_tls::AuthorizedKeysFile>,
    handshakes: Arc<HandshakeSlots>,
    silent: Arc<EvictingPool>,
    closed: Arc<std::sync::Mutex<Tally>>,
}

impl std::fmt::Debug for TlsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSetup")
            .field("authorized_keys", &self.authorized_keys.path())
            .finish_non_exhaustive()
    }
}

impl TlsSetup {
    /// TLS with `host_key` as the server's identity, admitting the client
    /// keys listed in `authorized_keys` (re-read off the runtime before every
    /// handshake, and trusted only as `rsh_tls::trust` allows), with
    /// unauthenticated connections bounded by `limits`.
    ///
    /// # Errors
    /// If rustls refuses the key.
    pub fn new(
        host_key: &rsh_tls::Identity,
        authorized_keys: Arc<rsh_tls::AuthorizedKeysFile>,
        limits: &PreAuthLimits,
    ) -> Result<Self, rsh_tls::Error> {
        let config = rsh_tls::server_config(host_key, authorized_keys.clone())?;
        Ok(TlsSetup {
            config,
            authorized_keys,
            handshakes: Arc::new(HandshakeSlots::new(limits)),
            silent: Arc::new(EvictingPool::new(limits.max_silent)),
            closed: Arc::new(std::sync::Mutex::new(Tally::new(
                SUMMARY_INTERVAL,
                INDIVIDUAL_LINES,
            ))),
        })
    }

    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.closed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a pre-auth close; `true` if it may also get its own line.
    fn note(&self, reason: &'static str, peer: IpAddr) -> bool {
        self.tally()
            .record(reason, peer, tokio::time::Instant::now())
    }

    /// Counts a pre-auth close, logging it on its own line only while the
    /// per-source and overall budgets allow.
    fn closed(&self, reason: &'static str, peer: IpAddr, message: &str) {
        if self.note(reason, peer) {
            info!(reason, "{message} (more like it are counted, not logged)");
        }
    }

    /// Logs what was closed before authentication since the last summary.
    fn log_summary(&self) {
        let summary = self.tally().take_summary(SUMMARY_TOP_SOURCES);
        if let Some(summary) = summary {
            info!(
                closed = summary.total,
                reasons = %summary.counts,
                sources = summary.distinct_sources,
                top_sources = %summary.top_sources,
                "pre-auth summary: connections closed before authentication in the last {SUMMARY_INTERVAL:?}"
            );
        }
    }
}

/// How often the pre-auth summary is logged.
const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Pre-auth closes logged on their own line per interval (one per source).
const INDIVIDUAL_LINES: u32 = 10;
/// Sources named in the pre-auth summary.
const SUMMARY_TOP_SOURCES: usize = 5;

/// A listening TCP socket whose connections must pass TLS authentication.
#[derive(Debug)]
pub struct TlsListener {
    listener: TcpListener,
    local: SocketAddr,
    tls: TlsSetup,
}

impl Listener {
    /// Binds an endpoint. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// See [`ListenerError`].
    pub fn bind(endpoint: &Endpoint, tls: Option<&TlsSetup>) -> Result<Self, ListenerError> {
        match (endpoint, tls) {
            (Endpoint::Unix(path), _) => UnixSocket::bind(path).map(Listener::Unix),
            (Endpoint::Tcp { host, port }, Some(tls)) => {
                TlsListener::bind(host, *port, tls.clone()).map(Listener::Tls)
            }
            (Endpoint::Tcp { .. }, None) => Err(ListenerError::TcpWithoutTls(endpoint.to_string())),
        }
    }

    /// The endpoint actually bound (with the real port when 0 was asked).
    pub fn endpoint(&self) -> Endpoint {
        match self {
            Listener::Unix(socket) => Endpoint::Unix(socket.path.clone()),
            Listener::Tls(tls) => Endpoint::Tcp {
                host: tls.local.ip().to_string(),
                port: tls.local.port(),
            },
        }
    }

    pub(crate) async fn accept_loop(&self, ctx: ServerContext, limit: Arc<Semaphore>) {
        match self {
            Listener::Unix(socket) => socket.accept_loop(ctx, limit).await,
            Listener::Tls(tls) => tls.accept_loop(ctx, limit).await,
        }
    }
}

/// Takes a connection permit if `limit` is given (backpressure: at the
/// limit we stop accepting and clients wait in the backlog), then the next
/// connection. Accept errors
/// (out of descriptors...) back off and retry. `None` at shutdown.
async fn next_connection<T, F, Fut>(
    ctx: &ServerContext,
    limit: Option<&Arc<Semaphore>>,
    backoff: &mut Duration,
    mut accept: F,
) -> Option<(Option<OwnedSemaphorePermit>, T)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    loop {
        let permit = match limit {
            Some(limit) => tokio::select! {
                permit = limit.clone().acquire_owned() => Some(permit.ok()?),
                () = ctx.shutdown.cancelled() => return None,
            },
            None => None,
        };
        let accepted = tokio::select! {
            accepted = accept() => accepted,
            () = ctx.shutdown.cancelled() => return None,
        };
        match accepted {
            Ok(connection) => {
                *backoff = Duration::from_millis(10);
                return Some((permit, connection));
            }
            Err(err) => {
                drop(permit);
                if !back_off(ctx, backoff, &err).await {
                    return None;
                }
            }
        }
    }
}

/// Sleeps after a failed accept (out of descriptors...), doubling up to 1 s;
/// `false` at shutdown.
async fn back_off(ctx: &ServerContext, backoff: &mut Duration, err: &std::io::Error) -> bool {
    error!(cause = %err, "accept failed");
    let keep_going = tokio::select! {
        () = tokio::time::sleep(*backoff) => true,
        () = ctx.shutdown.cancelled() => false,
    };
    *backoff = (*backoff * 2).min(Duration::from_secs(1));
    keep_going
}

/// Pending connections the kernel may queue (capped by net.core.somaxconn).
const LISTEN_BACKLOG: u32 = 4096;

/// How long a refused TLS peer gets to read our alert before we close.
const ALERT_LINGER: Duration = Duration::from_secs(1);

impl TlsListener {
    fn bind(host: &str, port: u16, tls: TlsSetup) -> Result<Self, ListenerError> {
        let shown = rsh_config::Endpoint::Tcp {
            host: host.to_owned(),
            port,
        }
        .to_string();
        let io_err = |source| ListenerError::Io {
            path: shown.clone(),
            cause: source,
        };
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(io_err)?
            .next()
            .ok_or_else(|| ListenerError::Unresolved(shown.clone()))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(io_err)?;
        socket.set_reuseaddr(true).map_err(io_err)?;
        socket.bind(addr).map_err(io_err)?;
        // A deep backlog: a burst of clients waits in the kernel, not refused.
        let listener = socket.listen(LISTEN_BACKLOG).map_err(io_err)?;
        let local = listener.local_addr().map_err(io_err)?;
        Ok(TlsListener {
            listener,
            local,
            tls,
        })
    }

    /// Unlike the Unix socket, no connection permit is taken before
    /// `accept`: an unauthenticated stranger must not hold a place a local
    /// or authorized user needs. Strangers are bounded by the silent pool and
    /// the handshake slots instead; the permit is taken after login.
    async fn accept_loop(&self, ctx: ServerContext, limit: Arc<Semaphore>) {
        let mut backoff = Duration::from_millis(10);
        ctx.tracker
            .spawn(summarize_preauth(self.tls.clone(), ctx.shutdown.clone()));
        while let Some((_, (tcp, addr))) =
            next_connection(&ctx, None, &mut backoff, || self.listener.accept()).await
        {
            let _ = tcp.set_nodelay(true);
            if let Some(idle) = ctx.config.keepalive {
                if let Err(err) = set_keepalive(&tcp, idle) {
                    debug!(cause = %err, "cannot enable TCP keepalive");
                }
            }
            let span = info_span!("conn", peer = %addr, user = tracing::field::Empty);
            // For the sessions' RSH_CONNECTION: the address this client
            // reached (the listener's may be a wildcard).
            let info = crate::peer::ConnectionInfo::Tcp {
                client: addr,
                server: tcp.local_addr().unwrap_or(self.local),
            };
            let ctx = ctx.clone();
            let tls = self.tls.clone();
            let limit = limit.clone();
            ctx.tracker.clone().spawn(
                async move {
                    let shutdown = ctx.shutdown.clone();
                    let authenticated = tokio::select! {
                        authenticated = authenticate(tcp, addr.ip(), &tls, ctx.config.handshake_timeout) => authenticated,
                        () = shutdown.cancelled() => None,
                    };
                    let Some((stream, user)) = authenticated else {
                        return;
                    };
                    tracing::Span::current().record("user", user.as_str());
                    let permit = tokio::select! {
                        permit = limit.clone().acquire_owned() => permit.ok(),
                        () = shutdown.cancelled() => None,
                    };
                    if permit.is_some() {
                        info!("connected");
                        connection::serve(stream, ctx, info).await;
                        debug!("disconnected");
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

/// Why a connection was closed before authentication; counted in the
/// pre-auth summary.
mod reason {
    pub const SILENT_TIMEOUT: &str = "silent_timeout";
    pub const SILENT_EVICTED: &str = "silent_evicted";
    pub const CLOSED_EARLY: &str = "closed_by_peer";
    pub const QUEUE_FULL: &str = "queue_full";
    pub const STALLED: &str = "stalled";
    pub const HANDSHAKE_TIMEOUT: &str = "handshake_timeout";
    pub const HANDSHAKE_FAILED: &str = "handshake_failed";
}

/// Logs the pre-auth summary every interval, and once more at shutdown.
async fn summarize_preauth(tls: TlsSetup, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(SUMMARY_INTERVAL);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => tls.log_summary(),
            () = shutdown.cancelled() => break,
        }
    }
    tls.log_summary();
}

/// Keepalive probes after `idle` without traffic, then every
/// [`KEEPALIVE_INTERVAL`]; the connection fails after
/// [`KEEPALIVE_PROBES`] unanswered ones. A peer that vanished without FIN
/// or RST (host gone, network cut) is then noticed and its commands ended.
pub(crate) fn set_keepalive(tcp: &TcpStream, idle: Duration) -> nix::Result<()> {
    rsh_sys::Keepalive {
        idle,
        interval: KEEPALIVE_INTERVAL.min(idle),
        count: KEEPALIVE_PROBES,
        user_timeout: false,
    }
    .apply(tcp)
}

/// Between unanswered keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered keepalive probes before the connection fails.
pub const KEEPALIVE_PROBES: u32 = 3;

/// The pre-auth phase of a TCP connection: first byte, a place in line for
/// a handshake slot, TLS handshake with the client's key checked against
/// authorized_keys. Returns the stream and who it is, or `None` (counted
/// in the pre-auth summary) if it did not get in.
async fn authenticate(
    tcp: TcpStream,
    peer: IpAddr,
    tls: &TlsSetup,
    timeout: Duration,
) -> Option<(rsh_tls::stream::TlsStream<Watched<TcpStream>>, String)> {
    let deadline = tokio::time::Instant::now() + timeout;
    // Holding no TLS state while the peer is silent. (`peek` waits for a
    // byte; `readable` may wake spuriously on a fresh socket.) When the pool
    // of silent connections is full, the one silent longest is dropped: a
    // real client speaks in its first round trip.
    {
        let seat = tls.silent.enter();
        let mut first = [0u8; 1];
        tokio::select! {
            first_byte = tokio::time::timeout_at(deadline, tcp.peek(&mut first)) => match first_byte {
                Err(_) => {
                    tls.closed(reason::SILENT_TIMEOUT, peer, "no TLS handshake started in time; closing");
                    return None;
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    // Port scanners and health checks: counted, never a line.
                    tls.tally().count(reason::CLOSED_EARLY, peer);
                    debug!("closed before the TLS handshake");
                    return None;
                }
                Ok(Ok(_)) => {}
            },
            () = seat.evicted() => {
                tls.closed(reason::SILENT_EVICTED, peer, "too many silent connections; closing the one silent longest");
                return None;
            }
        }
    }
    let progress = Progress::new(tokio::time::Instant::now());
    // In line (FIFO) for one of `max_startups` handshake places, holding no
    // TLS state: under a burst everyone waits a little, nobody is pushed out.
    let place = match tokio::time::timeout_at(deadline, tls.handshakes.acquire()).await {
        Err(_) => {
            tls.closed(
                reason::HANDSHAKE_TIMEOUT,
                peer,
                "no handshake place free in time; closing",
            );
            return None;
        }
        Ok(Err(NoPlace::QueueFull)) => {
            tls.closed(
                reason::QUEUE_FULL,
                peer,
                "too many connections waiting for a handshake place; closing the newcomer",
            );
            return None;
        }
        Ok(Ok(place)) => place,
    };
    // The verifier only looks at the latest read of authorized_keys: read it
    // now, off the runtime (a FIFO or a hung NFS mount must not stall a
    // worker). An unusable file still goes to the handshake, whose verifier
    // refuses the key with `access_denied` and logs why.
    if tokio::time::timeout_at(deadline, tls.authorized_keys.refresh())
        .await
        .is_err()
    {
        warn!(
            path = %tls.authorized_keys.path().display(),
            "reading authorized_keys did not finish in time; closing"
        );
        return None;
    }
    let handshake =
        rsh_tls::stream::accept(tls.config.clone(), Watched::new(tcp, progress.clone()));
    // A place is given up early only by a handshake that has shown it is
    // stalled (a record left half-sent, or no answer to our flight, for a
    // while), and only while someone waits for it.
    let outcome = tokio::select! {
        // The handshake first: it reads what the peer sent while it waited
        // in line, so a whole ClientHello counts before the stall check.
        biased;
        outcome = tokio::time::timeout_at(deadline, handshake) => outcome,
        () = tls.handshakes.stalled(&progress) => {
            tls.closed(reason::STALLED, peer, "TLS handshake stalled while others wait; closing");
            return None;
        }
    };
    let mut stream = match outcome {
        Err(_) => {
            tls.closed(
                reason::HANDSHAKE_TIMEOUT,
                peer,
                "TLS handshake did not finish in time; closing",
            );
            return None;
        }
        Ok(Err(rsh_tls::stream::HandshakeError {
            error: err,
            io: tcp,
        })) => {
            drop(place);
            if tls.note(reason::HANDSHAKE_FAILED, peer) {
                warn!(reason = reason::HANDSHAKE_FAILED, cause = %err, "TLS handshake failed; closing (more like it are counted, not logged)");
            }
            linger_for_alert(tcp).await;
            return None;
        }
        Ok(Ok(stream)) => stream,
    };
    drop(place);
    stream.get_mut().retire();
    if stream.peer().alpn_protocol.as_deref() != Some(rsh_tls::ALPN_PROTOCOL) {
        warn!("peer did not negotiate ALPN rsh/1; closing");
        return None;
    }
    let fingerprint = match rsh_tls::peer_fingerprint_of_certs(&stream.peer().certificates) {
        Ok(fingerprint) => fingerprint,
        Err(err) => {
            warn!(cause = %err, "authenticated peer without a usable key; closing");
            return None;
        }
    };
    // The read the verifier just used: no file access here.
    let comment = tls
        .authorized_keys
        .current()
        .and_then(|keys| keys.ok())
        .and_then(|keys| keys.lookup(&fingerprint).map(|key| key.comment.clone()))
        .unwrap_or_default();
    let user = if comment.is_empty() {
        fingerprint.to_string()
    } else {
        format!("{fingerprint} {comment}")
    };
    Some((stream, user))
}

/// Connections that have not sent a byte yet, oldest first. A flood of
/// them recycles itself: each newcomer beyond the cap evicts the one silent
/// longest, so a client that speaks at once (every real one) always gets
/// its turn.
#[derive(Debug)]
struct EvictingPool {
    cap: usize,
    inner: std::sync::Mutex<SeatQueue>,
}

#[derive(Debug, Default)]
struct SeatQueue {
    next_id: u64,
    waiting: std::collections::VecDeque<(u64, CancellationToken)>,
}

/// A place in the silent pool; leaving it (drop) frees the place.
struct Seat<'a> {
    pool: &'a EvictingPool,
    id: u64,
    evicted: CancellationToken,
}

impl EvictingPool {
    fn new(cap: usize) -> Self {
        EvictingPool {
            cap: cap.max(1),
            inner: std::sync::Mutex::new(SeatQueue::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeatQueue> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn enter(&self) -> Seat<'_> {
        let evicted = CancellationToken::new();
        let mut queue = self.lock();
        while queue.waiting.len() >= self.cap {
            match queue.waiting.pop_front() {
                Some((_, oldest)) => oldest.cancel(),
                None => break,
            }
        }
        queue.next_id += 1;
        let id = queue.next_id;
        queue.waiting.push_back((id, evicted.clone()));
        Seat {
            pool: self,
            id,
            evicted,
        }
    }
}

impl Seat<'_> {
    async fn evicted(&self) {
        self.evicted.cancelled().await;
    }
}

impl Drop for Seat<'_> {
    fn drop(&mut self) {
        let mut queue = self.pool.lock();
        // Most seats leave young, near the back.
        if let Some(index) = queue.waiting.iter().rposition(|(id, _)| *id == self.id) {
            queue.waiting.remove(index);
        }
    }
}

/// Lets a refused peer read the alert we sent: closing with its bytes unread
/// would reset the connection and lose the alert.
async fn linger_for_alert<S: tokio::io::AsyncRead + Unpin>(mut tcp: S) {
    let _ = tokio::time::timeout(ALERT_LINGER, async {
        let mut sink = [0u8; 4096];
        // Bounded by the timeout; ends at the peer's close.
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A listening Unix socket that removes its file on drop, if the file is
/// still its own.
#[derive(Debug)]
pub struct UnixSocket {
    listener: UnixListener,
    path: PathBuf,
    file_id: (u64, u64),
}

impl UnixSocket {
    fn bind(path: &Path) -> Result<Self, ListenerError> {
        let io_err = |source| ListenerError::Io {
            path: path.display().to_string(),
            cause: source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ListenerError::NotASocket(path.to_owned()))
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ListenerError::AlreadyRunning(path.to_owned())),
                Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                    info!(path = %path.display(), "replacing stale socket");
                    std::fs::remove_file(path).map_err(io_err)?;
                }
                Err(err) => return Err(io_err(err)),
            },
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(io_err(err)),
        }
        let listener = bind_unix_listener(path).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        let meta = std::fs::metadata(path).map_err(io_err)?;
        Ok(UnixSocket {
            listener,
            path: path.to_owned(),
            file_id: (meta.dev(), meta.ino()),
        })
    }

    async fn accept_loop(&self, ctx: ServerContext, limit: Arc<Semaphore>) {
        let own_uid = nix::unistd::geteuid().as_raw();
        // The only user let in is ourselves: look the name up once.
        let own_name = user_name(own_uid);
        let mut backoff = Duration::from_millis(10);
        while let Some((permit, (stream, _))) =
            next_connection(&ctx, Some(&limit), &mut backoff, || self.listener.accept()).await
        {
            let cred = match stream.peer_cred() {
                Ok(cred) => cred,
                Err(err) => {
                    warn!(cause = %err, "cannot read peer credentials; closing");
                    continue;
                }
            };
            let pid = cred.pid().map_or_else(|| "?".to_owned(), |p| p.to_string());
            let addr = format!("unix:uid={},pid={pid}", cred.uid());
            if cred.uid() != own_uid {
                warn!(peer = %addr, "refusing a peer of another user");
                continue;
            }
            let span = info_span!("conn", peer = %addr, user = %own_name);
            let info = crate::peer::ConnectionInfo::Unix {
                uid: cred.uid(),
                pid: cred.pid(),
                socket: self.path.clone(),
            };
            let ctx = ctx.clone();
            ctx.tracker.clone().spawn(
                async move {
                    info!("connected");
                    connection::serve(stream, ctx, info).await;
                    debug!("disconnected");
                    drop(permit);
                }
                .instrument(span),
            );
        }
    }
}

/// Binds with a deep backlog (std's is 128): a burst of local clients would
/// otherwise see EAGAIN from `connect`.
fn bind_unix_listener(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &UnixAddr::new(path)?)?;
    // -1: as deep as net.core.somaxconn allows.
    listen(&fd, Backlog::MAXALLOWABLE)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

impl Drop for UnixSocket {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .map(|meta| (meta.dev(), meta.ino()) == self.file_id)
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}
