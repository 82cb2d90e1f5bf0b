//! The pool of TCP connections that have not sent a byte yet: holding no
//! TLS state, and evicting the one silent longest when full.

use tokio_util::sync::CancellationToken;

/// Connections that have not sent a byte yet, oldest first. A flood of
/// them recycles itself: each newcomer beyond the cap evicts the one silent
/// longest, so a client that speaks at once (every real one) always gets
/// its turn.
#[derive(Debug)]
pub(crate) struct EvictingPool {
    cap: usize,
    inner: std::sync::Mutex<SeatQueue>,
}

#[derive(Debug, Default)]
struct SeatQueue {
    next_id: u64,
    waiting: std::collections::VecDeque<(u64, CancellationToken)>,
}

/// A place in the silent pool; leaving it (drop) frees the place.
pub(crate) struct Seat<'a> {
    pool: &'a EvictingPool,
    id: u64,
    evicted: CancellationToken,
}

impl EvictingPool {
    pub(crate) fn new(cap: usize) -> Self {
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

    pub(crate) fn enter(&self) -> Seat<'_> {
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
    pub(crate) async fn evicted(&self) {
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
