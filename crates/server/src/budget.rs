//! The server-wide stdin budget: how many stdin bytes all connections
//! together may have in flight towards the server (granted to clients as
//! window, or received and not yet written to a command's pipe).
//!
//! A channel's stdin window is granted out of this budget and its bytes
//! return to it as they are written to the command's stdin, or when the
//! channel ends. Grants cannot be taken back (a window never shrinks), so
//! the budget is shared in two ways that together keep any connection or
//! channel from starving the others:
//!
//! - **A fair share.** A channel is topped up only to an equal share of the
//!   budget among the channels that hold a lease (never above its window):
//!   the more channels, the smaller each one's grants, and a channel above
//!   its share is not topped up until it is back under it.
//! - **A floor.** Every channel may hold [`FLOOR`] bytes (at most its
//!   window) beyond the budget, granted at once whatever the budget holds.
//!   So a channel never waits for another to give bytes back: idle channels
//!   that took the whole budget early delay nobody's stdin, and the stdin
//!   held is at most the budget plus the floor per open channel (less than
//!   what each command's own stdin pipe holds).

use rsh_proto::Window;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Stdin bytes each channel may hold beyond the budget.
pub(crate) const FLOOR: u64 = 32 * 1024;

/// The shared budget; cheap to clone.
#[derive(Debug, Clone)]
pub struct StdinBudget {
    free: Arc<Window>,
    /// What the budget started with.
    total: u64,
    /// Channels holding a lease, among which the budget is shared.
    channels: Arc<AtomicU64>,
}

impl StdinBudget {
    /// A budget of `total` bytes (at least 1).
    pub fn new(total: u64) -> Self {
        let total = total.max(1);
        StdinBudget {
            free: Arc::new(Window::new(total)),
            total,
            channels: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes of the budget currently held by channels (floors not counted).
    #[cfg(test)]
    pub fn in_use(&self) -> u64 {
        self.total.saturating_sub(self.free.available())
    }

    /// What a channel with a stdin window of `window` may hold now: an
    /// equal share of the budget among the channels holding a lease, at
    /// least the floor, at most the window.
    pub(crate) fn share(&self, window: u64) -> u64 {
        let channels = self.channels.load(Ordering::Relaxed).max(1);
        window.min((self.total / channels).max(FLOOR))
    }

    /// Takes up to `max` bytes; the caller adds them to its [`Lease`]. With
    /// `wait`, waits until at least one is free; without, takes what is free
    /// now, possibly nothing. Cancel-safe: nothing is taken unless it
    /// returns.
    pub(crate) async fn take(&self, max: u64, wait: bool) -> u64 {
        if max == 0 {
            return 0;
        }
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        if wait {
            self.free.reserve(max).await.unwrap_or(0) as u64
        } else {
            use futures::FutureExt;
            self.free.reserve(max).now_or_never().flatten().unwrap_or(0) as u64
        }
    }

    /// A lease holding nothing yet, for a channel with a stdin window of
    /// `window`; it counts as one of the channels sharing the budget until
    /// dropped, and what it holds returns then.
    pub(crate) fn lease(&self, window: u64) -> Lease {
        self.channels.fetch_add(1, Ordering::Relaxed);
        Lease {
            budget: self.clone(),
            held: 0,
            floor: window.min(FLOOR),
            floor_held: 0,
        }
    }
}

/// The part of the budget one channel holds, and its floor.
#[derive(Debug)]
pub(crate) struct Lease {
    budget: StdinBudget,
    /// Bytes taken from the budget.
    held: u64,
    /// Bytes this channel may hold beyond the budget.
    floor: u64,
    /// Of those, the bytes it holds.
    floor_held: u64,
}

impl Lease {
    /// Takes up to `bytes` of the floor, at once; returns how many.
    pub fn take_floor(&mut self, bytes: u64) -> u64 {
        let taken = bytes.min(self.floor_free());
        self.floor_held += taken;
        taken
    }

    /// What of the floor is not held now.
    pub fn floor_free(&self) -> u64 {
        self.floor - self.floor_held
    }

    /// Records `bytes` taken with [`StdinBudget::take`].
    pub fn add(&mut self, bytes: u64) {
        self.held += bytes;
    }

    /// Gives `bytes` back (they left the server): to the budget first, where
    /// other channels can use them, then to the floor.
    pub fn give_back(&mut self, bytes: u64) {
        let to_budget = bytes.min(self.held);
        self.held -= to_budget;
        self.budget.free.release(to_budget);
        self.floor_held -= (bytes - to_budget).min(self.floor_held);
    }

    /// Bytes this lease holds, budget and floor.
    pub fn held(&self) -> u64 {
        self.held + self.floor_held
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.free.release(self.held);
        self.budget.channels.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_share_the_budget_and_return_it() {
        let budget = StdinBudget::new(10);
        let mut a = budget.lease(0);
        a.add(budget.take(8, true).await);
        let mut b = budget.lease(0);
        let taken = budget.take(8, true).await;
        assert_eq!(taken, 2);
        b.add(taken);
        assert_eq!(budget.in_use(), 10);
        a.give_back(3);
        assert_eq!(budget.in_use(), 7);
        drop(a);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }

    #[tokio::test]
    async fn the_share_shrinks_with_the_channels_and_the_floor_is_beyond_the_budget() {
        let budget = StdinBudget::new(4 * FLOOR);
        let window = 8 * FLOOR;
        let mut a = budget.lease(window);
        assert_eq!(budget.share(window), 4 * FLOOR);
        a.add(budget.take(4 * FLOOR, true).await);
        let mut b = budget.lease(window);
        assert_eq!(budget.share(window), 2 * FLOOR);
        // The budget is gone, the floor is still there, at once.
        assert_eq!(budget.take(FLOOR, false).await, 0);
        assert_eq!(b.take_floor(2 * FLOOR), FLOOR);
        assert_eq!(b.held(), FLOOR);
        b.give_back(FLOOR);
        assert_eq!(b.floor_free(), FLOOR);
        let _more: Vec<Lease> = (0..6).map(|_| budget.lease(window)).collect();
        assert_eq!(budget.share(window), FLOOR);
        // Bytes go back to the budget before the floor.
        a.take_floor(FLOOR);
        a.give_back(4 * FLOOR);
        assert_eq!(budget.in_use(), 0);
        assert_eq!(a.held(), FLOOR);
    }
}
