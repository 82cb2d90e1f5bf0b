//! The pre-auth phase of a TCP connection: everything between `accept` and
//! a peer whose key is authorized.
//!
//! Before authentication a connection is cheap and bounded: it first waits,
//! holding no TLS state, for its first byte (at most `max_silent` do, the
//! one silent longest is dropped first: [`silent`]); then it waits in line,
//! still holding no TLS state, for one of `max_startups` handshake places
//! (like sshd's MaxStartups); a handshake gives its place up early only if
//! it has stalled while others wait ([`slots`]). The whole pre-auth phase
//! must finish within the handshake timeout. So a burst of real clients
//! queues instead of failing, and floods of silent or trickling connections
//! recycle themselves instead of taking the places authorized clients need.
//! What is closed before authentication is logged as one summary line per
//! interval ([`summarize`]), not a line per connection.

mod silent;
mod slots;

pub use slots::PreAuthLimits;

use crate::log_limit::Tally;
use silent::EvictingPool;
use slots::{HandshakeSlots, NoPlace, Progress, Watched};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

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
pub(crate) async fn summarize(tls: TlsSetup, shutdown: CancellationToken) {
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

/// The pre-auth phase of a TCP connection: first byte, a place in line for
/// a handshake slot, TLS handshake with the client's key checked against
/// authorized_keys. Returns the stream and who it is, or `None` (counted
/// in the pre-auth summary) if it did not get in.
pub(crate) async fn authenticate(
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

/// How long a refused TLS peer gets to read our alert before we close.
const ALERT_LINGER: Duration = Duration::from_secs(1);
