//! Answers owed first: a publish wakes every long poll waiting on it at
//! once, and each answered client sends its next poll at once. Were those
//! new requests served as they arrive, the last of 1,000 answers would wait
//! behind most of the new polls; an event loop such as nginx's answers the
//! whole wake-up first. Here, a held request whose app future was woken
//! counts as owed until its task polls it, and a connection about to read
//! or serve a new request waits until nothing is owed, 20 ms at most in
//! all from its first wait, counted by one watchdog timer for every wait
//! (not a timer each).
//! This holds whatever the runtime's settings (tokio's `event_interval`
//! decides how often it reads new I/O, and it is not the app's to tune
//! here).

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering},
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
    /// Whether a watchdog is counting [`MAX_WAIT`] down for the waits now
    /// registered. One timer for every wait, not one each: when a publish
    /// answers a thousand polls, each answered connection starts to wait
    /// while the others are still being answered, and a timer of its own
    /// (a clock read, a lock, an insert into tokio's wheel) would be paid in
    /// that time.
    watching: AtomicBool,
    /// How many times a watchdog let every wait go (only ever compared).
    released: AtomicUsize,
}

/// Where a request is in its waits on answers owed (before it is read, and
/// again before it is served): [`MAX_WAIT`] at most in all, counted from
/// its first wait (on a busy runtime, the watchdog's own turn to run comes
/// on top).
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    /// How many watchdogs had fired when the request first waited. The
    /// watchdog it waited under was armed by then, for [`MAX_WAIT`] from
    /// its arming: once one more has fired, the request has waited its time.
    since: Option<usize>,
}

impl Owed {
    /// Returns once nothing is owed, or when the watchdog armed by the
    /// first of the current waits fires; at once if this request's time to
    /// wait has passed.
    pub(crate) async fn settled(self: &Arc<Self>, waiting: &mut Waiting) {
        if self.count.load(Ordering::Acquire) == 0 {
            return;
        }
        loop {
            let paid = self.paid.notified();
            let mut paid = std::pin::pin!(paid);
            paid.as_mut().enable();
            if self.count.load(Ordering::Acquire) == 0 {
                return;
            }
            // Registered before the watchdog is looked at: one that fires
            // after this look lets this wait go too.
            let released = self.released.load(Ordering::Acquire);
            if *waiting.since.get_or_insert(released) != released {
                return;
            }
            if !self.watching.swap(true, Ordering::AcqRel) {
                // The deadline is set now, not when the watchdog's task
                // first runs (on a busy runtime, behind every task queued).
                let deadline = tokio::time::Instant::now() + MAX_WAIT;
                let release = Release(Arc::clone(self));
                tokio::spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    drop(release);
                });
            }
            paid.await;
        }
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

/// A watchdog's work, done when it is dropped: when its time is up, or if
/// its task never gets to run it (the runtime shutting down), so that the
/// next wait arms a new one rather than waiting, unbounded, on this one.
struct Release(Arc<Owed>);

impl Drop for Release {
    fn drop(&mut self) {
        let owed = &self.0;
        owed.released.fetch_add(1, Ordering::AcqRel);
        owed.watching.store(false, Ordering::Release);
        owed.paid.notify_waiters();
    }
}

/// The waker a held request's app future is polled with: its wake counts
/// as an answer owed, until the connection's task polls the future again
/// ([`Held::polling`]) or drops it.
pub(crate) struct Held {
    state: Arc<HeldWaker>,
    waker: Waker,
}

/// A held request's state: `IDLE` (polled since its last wake), `WOKEN`
/// (owed), `RETIRED` (its future is gone; copies of the waker that the app
/// left registered somewhere may still wake it, and owe nothing).
const IDLE: u8 = 0;
const WOKEN: u8 = 1;
const RETIRED: u8 = 2;

struct HeldWaker {
    task: Waker,
    state: AtomicU8,
    owed: Arc<Owed>,
}

impl Wake for HeldWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Owed before it is marked, so that a poll paying it meanwhile
        // never takes the count below what is owed.
        self.owed.owe();
        let marked = self
            .state
            .compare_exchange(IDLE, WOKEN, Ordering::AcqRel, Ordering::Acquire);
        if marked.is_err() {
            // Owed already, or retired: nothing more is owed.
            self.owed.pay();
        }
        self.task.wake_by_ref();
    }
}

impl Held {
    /// For a future polled by the task `task` wakes.
    pub(crate) fn new(owed: Arc<Owed>, task: &Waker) -> Self {
        let state = Arc::new(HeldWaker {
            task: task.clone(),
            state: AtomicU8::new(IDLE),
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
        let paid =
            self.state
                .state
                .compare_exchange(WOKEN, IDLE, Ordering::AcqRel, Ordering::Acquire);
        if paid.is_ok() {
            self.state.owed.pay();
        }
        &self.waker
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Dropped woken but unpolled (its client went away): paid all the
        // same; later wakes of copies left behind owe nothing.
        if self.state.state.swap(RETIRED, Ordering::AcqRel) == WOKEN {
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
            async move { settle(&owed, &mut Waiting::default()).await }
        });
        tokio::task::yield_now().await;
        assert!(!settled.is_finished());
        let _ = held.polling();
        assert_eq!(owed.count.load(Ordering::Acquire), 0);
        tokio::time::timeout(Duration::from_secs(5), settled)
            .await
            .expect("paid: the waiter goes on at once")
            .unwrap();
        let left_behind = held.polling().clone();
        left_behind.wake_by_ref();
        drop(held);
        assert_eq!(owed.count.load(Ordering::Acquire), 0, "dropped: paid");
        left_behind.wake_by_ref();
        assert_eq!(
            owed.count.load(Ordering::Acquire),
            0,
            "a copy of the waker left behind owes nothing once its future is gone"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_what_is_owed_is_bounded() {
        let owed = Arc::new(Owed::default());
        let held = Held::new(owed.clone(), futures_noop());
        held.polling().wake_by_ref();
        let started = tokio::time::Instant::now();
        let mut waiting = Waiting::default();
        settle(&owed, &mut waiting).await;
        assert_eq!(started.elapsed(), MAX_WAIT);
        // A request that waited its time does not wait again.
        settle(&owed, &mut waiting).await;
        assert_eq!(started.elapsed(), MAX_WAIT);
        // Another does, and a new watchdog bounds it.
        settle(&owed, &mut Waiting::default()).await;
        assert_eq!(started.elapsed(), 2 * MAX_WAIT);
        drop(held);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waits_its_time_once_over_both_its_waits() {
        let owed = Arc::new(Owed::default());
        let first = Held::new(owed.clone(), futures_noop());
        first.polling().wake_by_ref();
        let started = tokio::time::Instant::now();
        let paying = tokio::spawn(async move {
            tokio::time::sleep(MAX_WAIT / 2).await;
            let _ = first.polling();
            first
        });
        let mut waiting = Waiting::default();
        settle(&owed, &mut waiting).await;
        assert_eq!(started.elapsed(), MAX_WAIT / 2, "paid: goes on at once");
        let first = paying.await.unwrap();
        let second = Held::new(owed.clone(), futures_noop());
        second.polling().wake_by_ref();
        settle(&owed, &mut waiting).await;
        assert_eq!(
            started.elapsed(),
            MAX_WAIT,
            "the second wait ends when the first's time is up, not a whole wait later"
        );
        drop((first, second));
    }

    #[tokio::test(start_paused = true)]
    async fn one_watchdog_bounds_every_wait_registered_under_it() {
        let owed = Arc::new(Owed::default());
        let held = Held::new(owed.clone(), futures_noop());
        held.polling().wake_by_ref();
        let started = tokio::time::Instant::now();
        let first = tokio::spawn({
            let owed = owed.clone();
            async move { settle(&owed, &mut Waiting::default()).await }
        });
        tokio::time::sleep(MAX_WAIT / 2).await;
        let second = tokio::spawn({
            let owed = owed.clone();
            async move { settle(&owed, &mut Waiting::default()).await }
        });
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(
            started.elapsed(),
            MAX_WAIT,
            "the later wait goes when the watchdog armed by the first fires"
        );
        drop(held);
    }

    /// A wait on `owed`, failing the test rather than hanging it.
    async fn settle(owed: &Arc<Owed>, waiting: &mut Waiting) {
        tokio::time::timeout(10 * MAX_WAIT, owed.settled(waiting))
            .await
            .expect("a wait on answers owed is bounded");
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
