//! The server-wide stdin budget: how many stdin bytes all connections
//! together may have in flight towards the server (granted to clients as
//! window, or received and not yet written to a command's pipe).
//!
//! A channel's stdin window is granted out of this budget and its bytes
//! return to it as they are written to the command's stdin, or when the
//! channel ends. Under load a channel is granted less than its full window,
//! or nothing until another channel gives bytes back: commands that do not
//! read their stdin can hold at most the budget, whatever the number of
//! channels and connections.

use rsh_proto::Window;
use std::sync::Arc;

/// The shared budget; cheap to clone.
#[derive(Debug, Clone)]
pub struct StdinBudget {
    free: Arc<Window>,
    /// What the budget started with (for [`StdinBudget::in_use`]).
    #[cfg(test)]
    total: u64,
}

impl StdinBudget {
    /// A budget of `total` bytes (at least 1).
    pub fn new(total: u64) -> Self {
        let total = total.max(1);
        StdinBudget {
            free: Arc::new(Window::new(total)),
            #[cfg(test)]
            total,
        }
    }

    /// Bytes currently held by channels.
    #[cfg(test)]
    pub fn in_use(&self) -> u64 {
        self.total.saturating_sub(self.free.available())
    }

    /// Takes up to `max` bytes, waiting until at least one is free; the
    /// caller adds them to its [`Lease`]. Cancel-safe: nothing is taken
    /// unless it returns.
    pub(crate) async fn take(&self, max: u64) -> u64 {
        let max = usize::try_from(max).unwrap_or(usize::MAX);
        self.free.reserve(max).await.unwrap_or(0) as u64
    }

    /// A lease holding nothing yet; what it holds returns on drop.
    pub(crate) fn lease(&self) -> Lease {
        Lease {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// The part of the budget one channel holds.
#[derive(Debug)]
pub(crate) struct Lease {
    budget: StdinBudget,
    held: u64,
}

impl Lease {
    /// Records `bytes` taken with [`StdinBudget::take`].
    pub fn add(&mut self, bytes: u64) {
        self.held += bytes;
    }

    /// Gives `bytes` back (they left the server).
    pub fn give_back(&mut self, bytes: u64) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.budget.free.release(bytes);
    }

    /// Bytes this lease holds.
    pub fn held(&self) -> u64 {
        self.held
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.budget.free.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn leases_share_the_budget_and_return_it() {
        let budget = StdinBudget::new(10);
        let mut a = budget.lease();
        a.add(budget.take(8).await);
        let mut b = budget.lease();
        let taken = budget.take(8).await;
        assert_eq!(taken, 2);
        b.add(taken);
        assert_eq!(budget.in_use(), 10);
        a.give_back(3);
        assert_eq!(budget.in_use(), 7);
        drop(a);
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }
}
