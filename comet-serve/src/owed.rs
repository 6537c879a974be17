//! Answers owed first: a publish wakes every long poll waiting on it at
//! once, and each answered client sends its next poll at once. Were those
//! new requests served as they arrive, the last of 1,000 answers would wait
//! behind most of the new polls; an event loop such as nginx's answers the
//! whole wake-up first. Here, a held request whose app future was woken
//! counts as owed until its task polls it, and a connection about to serve
//! a new request waits (briefly, bounded) until nothing is owed. This holds
//! whatever the runtime's settings (tokio's `event_interval` decides how
//! often it reads new I/O, and it is not the app's to tune here).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    task::{Wake, Waker},
    time::Duration,
};
use tokio::sync::Notify;

/// The longest a new request waits for answers owed: a bound, so that a
/// server under a steady rain of wake-ups still reads new requests.
const MAX_WAIT: Duration = Duration::from_millis(20);

/// The answers owed on one server.
#[derive(Debug, Default)]
pub(crate) struct Owed {
    count: AtomicUsize,
    paid: Notify,
}

impl Owed {
    /// Returns once nothing is owed, or after [`MAX_WAIT`].
    pub(crate) async fn settled(&self) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        let _ = tokio::time::timeout(MAX_WAIT, async {
            loop {
                let paid = self.paid.notified();
                let mut paid = std::pin::pin!(paid);
                paid.as_mut().enable();
                if self.count.load(Ordering::Acquire) == 0 {
                    return;
                }
                paid.await;
            }
        })
        .await;
    }

    fn owe(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    fn pay(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.paid.notify_waiters();
        }
    }
}

/// The waker a held request's app future is polled with: its wake counts
/// as an answer owed, until the connection's task polls the future again
/// ([`Held::polling`]) or drops it.
pub(crate) struct Held {
    state: Arc<HeldWaker>,
    waker: Waker,
}

struct HeldWaker {
    task: Waker,
    woken: AtomicBool,
    owed: Arc<Owed>,
}

impl Wake for HeldWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            self.owed.owe();
        }
        self.task.wake_by_ref();
    }
}

impl Held {
    /// For a future polled by the task `task` wakes.
    pub(crate) fn new(owed: Arc<Owed>, task: &Waker) -> Self {
        let state = Arc::new(HeldWaker {
            task: task.clone(),
            woken: AtomicBool::new(false),
            owed,
        });
        let waker = Waker::from(state.clone());
        Self { state, waker }
    }

    /// Whether this wakes the task `task` wakes.
    pub(crate) fn wakes(&self, task: &Waker) -> bool {
        self.state.task.will_wake(task)
    }

    /// About to poll the future: a wake before now is paid; returns the
    /// waker to poll it with.
    pub(crate) fn polling(&self) -> &Waker {
        if self.state.woken.swap(false, Ordering::AcqRel) {
            self.state.owed.pay();
        }
        &self.waker
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Dropped woken but unpolled (its client went away): paid all the same.
        if self.state.woken.swap(false, Ordering::AcqRel) {
            self.state.owed.pay();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_is_owed_until_polled_or_dropped() {
        let owed = Arc::new(Owed::default());
        let held = Held::new(owed.clone(), futures_noop());
        held.polling().wake_by_ref();
        held.polling().wake_by_ref();
        assert_eq!(
            owed.count.load(Ordering::Acquire),
            1,
            "one wake is owed once"
        );
        let settled = tokio::spawn({
            let owed = owed.clone();
            async move { owed.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!settled.is_finished());
        let _ = held.polling();
        assert_eq!(owed.count.load(Ordering::Acquire), 0);
        tokio::time::timeout(Duration::from_secs(5), settled)
            .await
            .expect("paid: the waiter goes on at once")
            .unwrap();
        held.polling().wake_by_ref();
        drop(held);
        assert_eq!(owed.count.load(Ordering::Acquire), 0, "dropped: paid");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_what_is_owed_is_bounded() {
        let owed = Arc::new(Owed::default());
        let held = Held::new(owed.clone(), futures_noop());
        held.polling().wake_by_ref();
        let started = tokio::time::Instant::now();
        owed.settled().await;
        assert_eq!(started.elapsed(), MAX_WAIT);
        drop(held);
    }

    fn futures_noop() -> &'static Waker {
        struct Noop;
        impl Wake for Noop {
            fn wake(self: Arc<Self>) {}
        }
        static NOOP: std::sync::OnceLock<Waker> = std::sync::OnceLock::new();
        NOOP.get_or_init(|| Waker::from(Arc::new(Noop)))
    }
}
