//! Flow-control windows: how many data bytes a sender may still put on a
//! channel before the receiver grants more.
//!
//! Both directions use the same rule (see `docs/PROTOCOL.md`, "Flow
//! control"): the receiver grants bytes with `WindowAdjust` frames as its
//! consumer drains them, and the sender never sends data it has no credit
//! for. A [`Window`] is the sender's side of that ledger.

use std::sync::Mutex;
use tokio::sync::Notify;

/// The sender's credit on one channel, shared by the tasks that send on it.
#[derive(Debug, Default)]
pub struct Window {
    state: Mutex<State>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    available: u64,
    closed: bool,
}

impl Window {
    /// A window holding `initial` bytes of credit.
    pub fn new(initial: u64) -> Self {
        Window {
            state: Mutex::new(State {
                available: initial,
                closed: false,
            }),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counter torn.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds credit (a `WindowAdjust` arrived) and wakes waiting senders.
    pub fn grant(&self, bytes: u64) {
        let mut state = self.lock();
        state.available = state.available.saturating_add(bytes);
        drop(state);
        self.changed.notify_waiters();
    }

    /// Takes up to `max` bytes of credit, waiting until at least one is
    /// available. Returns `None` once the window is closed.
    pub async fn reserve(&self, max: usize) -> Option<usize> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Register before checking, so a grant between the check and the
            // await still wakes us.
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                if state.closed {
                    return None;
                }
                if state.available > 0 {
                    let take = state.available.min(max as u64);
                    state.available -= take;
                    return Some(take as usize);
                }
            }
            notified.await;
        }
    }

    /// Takes exactly `bytes` of credit if that much is available now.
    pub fn try_consume(&self, bytes: u64) -> bool {
        let mut state = self.lock();
        if state.available >= bytes {
            state.available -= bytes;
            true
        } else {
            false
        }
    }

    /// Returns credit reserved but not used.
    pub fn release(&self, bytes: u64) {
        if bytes > 0 {
            self.grant(bytes);
        }
    }

    /// Credit available now.
    pub fn available(&self) -> u64 {
        self.lock().available
    }

    /// Closes the window: pending and future [`Window::reserve`] calls
    /// return `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn reserve_waits_for_grant() {
        let window = Arc::new(Window::new(0));
        let waiter = tokio::spawn({
            let window = window.clone();
            async move { window.reserve(10).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        window.grant(4);
        assert_eq!(waiter.await.expect("task"), Some(4));
        assert_eq!(window.available(), 0);
    }

    #[tokio::test]
    async fn close_wakes_waiters() {
        let window = Arc::new(Window::new(0));
        let waiter = tokio::spawn({
            let window = window.clone();
            async move { window.reserve(10).await }
        });
        tokio::task::yield_now().await;
        window.close();
        assert_eq!(waiter.await.expect("task"), None);
    }

    #[test]
    fn consume_is_exact() {
        let window = Window::new(5);
        assert!(!window.try_consume(6));
        assert!(window.try_consume(5));
        window.release(2);
        assert_eq!(window.available(), 2);
    }
}
