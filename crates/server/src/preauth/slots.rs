//! Admission of TCP connections before authentication: who may hold TLS
//! handshake state, who waits, and who has shown it is stalled.
//!
//! Under a burst of real clients every handshake is slow (the server's CPU
//! is the bottleneck), so age says nothing about a handshake. What a
//! stalled peer (slowloris) shows is that the server is waiting on it and it
//! does not deliver. A real client writes each TLS record in one piece, so
//! a record left half-sent for [`PreAuthLimits::stall`] (a trickle, however
//! fast its bytes come) means the peer is stalled; so does no answer at all
//! for [`PreAuthLimits::stall`] × [`UNANSWERED_FACTOR`] after the server's
//! last flight (more generous: under a burst a real client may wait for a
//! CPU before it answers). Only such handshakes are ever dropped to make
//! room, and only when someone is waiting for the place; newcomers wait in
//! line (FIFO) for a handshake place instead of pushing anyone out.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Bounds on what unauthenticated TCP peers may hold.
#[derive(Debug, Clone)]
pub struct PreAuthLimits {
    /// TLS handshakes in progress at once (sshd's MaxStartups).
    pub max_startups: usize,
    /// Connections waiting for their first byte; beyond this the one silent
    /// longest is dropped.
    pub max_silent: usize,
    /// Connections that have spoken and wait for a handshake place; beyond
    /// this a newcomer is turned away.
    pub max_queued: usize,
    /// How long a TLS record may stay half-received before the handshake
    /// counts as stalled and may be dropped for a connection that waits.
    pub stall: Duration,
}

/// A handshake that has sent nothing for `stall` × this since the server's
/// last flight (or its last complete record) counts as stalled too.
pub const UNANSWERED_FACTOR: u32 = 3;

impl Default for PreAuthLimits {
    fn default() -> Self {
        PreAuthLimits {
            max_startups: 64,
            max_silent: 1024,
            max_queued: 4096,
            stall: Duration::from_secs(2),
        }
    }
}

/// How a handshake is progressing: when the peer last made progress (the
/// last complete TLS record it sent, or the last bytes we sent it, after
/// which the ball is in its court), and since when a record of it has been
/// half-received.
#[derive(Debug)]
pub struct Progress {
    state: Mutex<ProgressState>,
}

#[derive(Debug)]
struct ProgressState {
    first_byte: Instant,
    last: Instant,
    partial_since: Option<Instant>,
    seen_record: bool,
    records: RecordScan,
}

impl Progress {
    /// Progress as of `first_byte`, when the peer's first byte was seen.
    pub(crate) fn new(first_byte: Instant) -> Arc<Self> {
        Arc::new(Progress {
            state: Mutex::new(ProgressState {
                first_byte,
                last: first_byte,
                partial_since: None,
                seen_record: false,
                records: RecordScan::default(),
            }),
        })
    }

    /// When the handshake counts as stalled if nothing changes.
    pub(crate) fn stalled_at(&self, stall: Duration) -> Instant {
        let state = self.lock();
        match state.partial_since {
            Some(since) => since + stall,
            None => state.last + stall * UNANSWERED_FACTOR,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ProgressState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn received(&self, bytes: &[u8]) {
        let mut state = self.lock();
        let now = Instant::now();
        if state.records.feed(bytes) {
            state.last = now;
            state.partial_since = None;
            state.seen_record = true;
        }
        if state.records.partial() {
            // The first record was begun by the first byte, maybe long
            // before we read it (while waiting in line).
            let began = if state.seen_record {
                now
            } else {
                state.first_byte
            };
            state.partial_since.get_or_insert(began);
        } else {
            state.partial_since = None;
        }
    }

    fn sent(&self) {
        self.lock().last = Instant::now();
    }
}

/// Follows TLS record framing (5-byte header with a 16-bit length) in
/// received bytes, to tell complete records from a trickle.
#[derive(Debug, Default)]
struct RecordScan {
    header: [u8; 5],
    have: usize,
    remaining: usize,
}

impl RecordScan {
    /// Whether a record has begun and not ended.
    fn partial(&self) -> bool {
        self.have > 0 || self.remaining > 0
    }

    /// Consumes `data`; `true` if at least one record was completed.
    fn feed(&mut self, mut data: &[u8]) -> bool {
        let mut completed = false;
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(data.len());
                self.remaining -= n;
                data = &data[n..];
                completed |= self.remaining == 0;
            } else {
                let n = (self.header.len() - self.have).min(data.len());
                self.header[self.have..self.have + n].copy_from_slice(&data[..n]);
                self.have += n;
                data = &data[n..];
                if self.have == self.header.len() {
                    self.have = 0;
                    self.remaining =
                        usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                    completed |= self.remaining == 0;
                }
            }
        }
        completed
    }
}

/// A byte stream that reports progress (see [`Progress`]).
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    /// `None` once authenticated: from then on a plain pass-through.
    progress: Option<Arc<Progress>>,
}

impl<S> Watched<S> {
    pub(crate) fn new(inner: S, progress: Arc<Progress>) -> Self {
        Watched {
            inner,
            progress: Some(progress),
        }
    }

    /// Stops watching (the handshake is over).
    pub(crate) fn retire(&mut self) {
        self.progress = None;
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(progress)) = (&result, &this.progress) {
            progress.received(&buf.filled()[before..]);
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(1..)), Some(progress)) = (&result, &this.progress) {
            progress.sent();
        }
        result
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let (Poll::Ready(Ok(1..)), Some(progress)) = (&result, &this.progress) {
            progress.sent();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The handshake places: a fair (FIFO) line for them, and the rule that
/// lets a stalled holder be dropped while someone waits.
#[derive(Debug)]
pub(crate) struct HandshakeSlots {
    places: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_queued: usize,
    stall: Duration,
}

/// Why no handshake place was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPlace {
    /// The line is full; the newcomer is turned away.
    QueueFull,
}

impl HandshakeSlots {
    pub(crate) fn new(limits: &PreAuthLimits) -> Self {
        HandshakeSlots {
            places: Arc::new(Semaphore::new(limits.max_startups.max(1))),
            waiting: AtomicUsize::new(0),
            max_queued: limits.max_queued.max(1),
            stall: limits.stall,
        }
    }

    /// Waits in line for a handshake place (the caller bounds the wait).
    pub(crate) async fn acquire(&self) -> Result<OwnedSemaphorePermit, NoPlace> {
        if let Ok(permit) = self.places.clone().try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _in_line = InLine(&self.waiting);
        if queued >= self.max_queued {
            return Err(NoPlace::QueueFull);
        }
        // The semaphore is never closed.
        self.places
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| NoPlace::QueueFull)
    }

    /// Resolves once the handshake watched by `progress` has stalled while
    /// someone waits for a place: the holder should then give it up.
    pub(crate) async fn stalled(&self, progress: &Progress) {
        // Checked a few times per stall period: bounded work per holder.
        let tick = (self.stall / 4).max(Duration::from_millis(10));
        loop {
            let now = Instant::now();
            let due = progress.stalled_at(self.stall);
            if now >= due && self.waiting.load(Ordering::Acquire) > 0 {
                return;
            }
            tokio::time::sleep_until(due.max(now + tick)).await;
        }
    }
}

/// A place in the line for handshake places; leaving it (drop) counts.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_scan_sees_whole_records_not_trickles() {
        let mut scan = RecordScan::default();
        // A ClientHello header announcing 4 bytes, trickled one at a time.
        let record = [0x16, 0x03, 0x01, 0x00, 0x04, 1, 2, 3, 4];
        let completions: Vec<bool> = record.iter().map(|b| scan.feed(&[*b])).collect();
        assert_eq!(completions.iter().filter(|c| **c).count(), 1);
        assert!(completions[8], "completed by the last byte");
        // Two records and the start of a third in one read.
        let mut two = record.to_vec();
        two.extend_from_slice(&record);
        two.extend_from_slice(&record[..3]);
        assert!(scan.feed(&two));
        assert!(!scan.feed(&record[3..8]));
        assert!(scan.feed(&record[8..]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_holder_yields_only_when_someone_waits() {
        let limits = PreAuthLimits {
            max_startups: 1,
            stall: Duration::from_secs(2),
            ..PreAuthLimits::default()
        };
        let slots = Arc::new(HandshakeSlots::new(&limits));
        let held = slots.acquire().await.expect("a free place");
        let progress = Progress::new(Instant::now());
        // Half a record: a trickle.
        progress.received(&[0x16, 0x03]);
        // Nobody waits: a stalled holder keeps its place.
        let alone = tokio::time::timeout(Duration::from_secs(60), slots.stalled(&progress)).await;
        assert!(alone.is_err(), "nobody waits, so nobody is pushed out");
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire().await.map(drop) }
        });
        tokio::task::yield_now().await;
        // The trickle began long ago: it yields at once.
        let started = Instant::now();
        slots.stalled(&progress).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
        // The record completes: waiting for an answer is allowed longer.
        progress.received(&[0x01, 0x00, 0x00]);
        let started = Instant::now();
        slots.stalled(&progress).await;
        assert_eq!(started.elapsed(), Duration::from_secs(6));
        // A new record begun now gets the short allowance from now.
        progress.received(&[0x16]);
        let started = Instant::now();
        slots.stalled(&progress).await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        drop(held);
        assert_eq!(waiter.await.expect("join"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_line_is_bounded() {
        let limits = PreAuthLimits {
            max_startups: 1,
            max_queued: 2,
            ..PreAuthLimits::default()
        };
        let slots = Arc::new(HandshakeSlots::new(&limits));
        let _held = slots.acquire().await.expect("a free place");
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move { slots.acquire().await.map(drop) })
            })
            .collect();
        tokio::task::yield_now().await;
        assert_eq!(slots.acquire().await.map(drop), Err(NoPlace::QueueFull));
        for waiter in waiters {
            waiter.abort();
        }
    }
}
