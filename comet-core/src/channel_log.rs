//! One channel's bounded history and its wake-up signal.
//!
//! Every subscriber reads the same `VecDeque<Arc<Message>>` at its own
//! offset: there is no queue per subscriber, so an idle subscriber costs a
//! position and a waiter, and a slow one can never make the hub hold more than
//! the history bound. A subscriber whose position has been evicted is told so
//! with a gap instead.

use crate::{message::Message, ChannelName, Payload, Position};
use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, RwLock, RwLockReadGuard, RwLockWriteGuard,
    },
    time::Duration,
};
use tokio::{
    sync::{futures::OwnedNotified, Notify},
    time::Instant,
};

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// The most messages kept (at least 1).
    pub max_messages: usize,
    /// Messages older than this are dropped; `None` keeps them until evicted
    /// by count.
    pub max_age: Option<Duration>,
}

impl Default for HistoryPolicy {
    /// 1,000 messages, 15 minutes: enough for a client to ride out a network
    /// drop or a redeploy without a gap.
    fn default() -> Self {
        Self {
            max_messages: 1000,
            max_age: Some(Duration::from_secs(15 * 60)),
        }
    }
}

/// Where a subscription without a cursor position starts in a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Since {
    /// Only messages published after subscribing.
    #[default]
    Head,
    /// Every message the history still holds.
    Oldest,
    /// The last `n` messages (fewer if history holds fewer).
    Last(u64),
}

/// What reading after a position found.
#[derive(Debug)]
pub enum Read {
    /// The next message.
    Message(Arc<Message>),
    /// Messages after the position are gone; continue from `resume`.
    Gap {
        /// How many were lost, or `None` when unknown (another epoch).
        missed: Option<u64>,
        /// The position to continue from: just before the oldest retained.
        resume: Position,
    },
    /// Nothing after the position yet.
    Nothing,
}

/// A channel's history, its epoch, its subscribers and its wake-up signal.
///
/// Engines create and feed these; subscriptions read them.
#[derive(Debug)]
pub struct ChannelLog {
    name: ChannelName,
    epoch: u64,
    policy: HistoryPolicy,
    state: RwLock<LogState>,
    notify: Arc<Notify>,
    subscribers: AtomicUsize,
    /// A copy of `LogState::last_offset`, stored (under the write lock) before
    /// waiters are woken: readers that are caught up learn so without locking.
    published: AtomicU64,
    /// When the log was created: `last_active` counts from here, on the same
    /// clock as every later instant of this log (tokio's, so paused-time tests
    /// see it advance).
    created: Instant,
    /// When the channel last had a publish, a subscriber leave, or a look
    /// (nanoseconds after `created`); atomic so that leaving takes no lock.
    last_active: AtomicU64,
}

/// Channels with more subscribers than this are woken from a spawned task,
/// so a publish costs the same whatever the fan-out (PROTOCOL: publish cost
/// stays flat); smaller ones are woken inline, one task hop sooner.
const INLINE_WAKE_LIMIT: usize = 32;

#[derive(Debug)]
struct LogState {
    messages: VecDeque<Arc<Message>>,
    /// The offset of the last message ever published in this epoch.
    last_offset: u64,
}

impl ChannelLog {
    /// A fresh history with a new random epoch.
    pub fn new(name: ChannelName, policy: HistoryPolicy) -> Self {
        Self {
            name,
            epoch: crate::epoch::random_epoch(),
            policy: HistoryPolicy {
                max_messages: policy.max_messages.max(1),
                ..policy
            },
            state: RwLock::new(LogState {
                messages: VecDeque::new(),
                last_offset: 0,
            }),
            notify: Arc::new(Notify::new()),
            subscribers: AtomicUsize::new(0),
            published: AtomicU64::new(0),
            created: Instant::now(),
            last_active: AtomicU64::new(0),
        }
    }

    /// The channel's name.
    pub fn name(&self) -> &ChannelName {
        &self.name
    }

    /// The epoch of this history.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Subscriptions currently attached.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Appends a message (with its next offset) and wakes every waiter.
    /// The payload's event name must already be validated.
    pub fn append(&self, payload: Payload) -> Arc<Message> {
        let message = {
            let mut state = self.write();
            let offset = state.last_offset + 1;
            let message = Arc::new(Message::new(
                self.name.clone(),
                self.epoch,
                offset,
                payload.kind,
                payload.event.map(String::into_boxed_str),
                payload.data,
            ));
            state.last_offset = offset;
            self.published.store(offset, Ordering::Release);
            self.last_active
                .store(self.stamp(message.published_at), Ordering::Relaxed);
            state.messages.push_back(message.clone());
            while state.messages.len() > self.policy.max_messages {
                state.messages.pop_front();
            }
            self.trim_expired(&mut state, message.published_at);
            message
        };
        self.wake_waiters();
        message
    }

    fn wake_waiters(&self) {
        if self.subscriber_count() > INLINE_WAKE_LIMIT {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                // Waiters armed before the append are woken all the same,
                // just by another task.
                let notify = self.notify.clone();
                runtime.spawn(async move { notify.notify_waiters() });
                return;
            }
        }
        self.notify.notify_waiters();
    }

    /// The position of the newest message (offset 0 before the first).
    pub fn head(&self) -> Position {
        Position::new(&self.name, self.epoch, self.read().last_offset)
    }

    /// Where a subscription starts: at `from` if given (clamped to the head,
    /// so a forged cursor cannot skip messages still to come), else by `since`.
    pub fn start(&self, from: Option<Position>, since: Since) -> Position {
        let state = self.live_state();
        let offset = match from {
            Some(p) if p.epoch == self.epoch => p.offset.min(state.last_offset),
            // Another epoch: kept as is, so the first read reports the gap.
            Some(p) => return p,
            None => match since {
                Since::Head => state.last_offset,
                Since::Oldest => state.last_offset - state.messages.len() as u64,
                Since::Last(n) => state.last_offset - (state.messages.len() as u64).min(n),
            },
        };
        Position::new(&self.name, self.epoch, offset)
    }

    /// The message after `position`, a gap, or nothing yet.
    pub fn read_after(&self, position: Position) -> Read {
        // Fast path for a caught-up reader: no lock. A publish that this load
        // misses comes after the reader's waiter was armed, so it wakes it.
        if position.epoch == self.epoch && position.offset >= self.published.load(Ordering::Acquire)
        {
            return Read::Nothing;
        }
        let state = self.live_state();
        let retained = state.messages.len() as u64;
        let oldest_before = state.last_offset - retained;
        if position.epoch != self.epoch {
            return Read::Gap {
                missed: None,
                resume: Position::new(&self.name, self.epoch, oldest_before),
            };
        }
        if position.offset >= state.last_offset {
            return Read::Nothing;
        }
        if position.offset < oldest_before {
            return Read::Gap {
                missed: Some(oldest_before - position.offset),
                resume: Position::new(&self.name, self.epoch, oldest_before),
            };
        }
        let index = (position.offset - oldest_before) as usize;
        Read::Message(state.messages[index].clone())
    }

    /// Wakes every waiter without appending (they re-check and find nothing
    /// new unless something else changed, such as a shutdown).
    pub fn wake(&self) {
        self.notify.notify_waiters();
    }

    /// A waiter that completes on the next append after this call, even if it
    /// is first polled later: create it *before* reading to lose no wake-up.
    pub fn waiter(&self) -> OwnedNotified {
        self.notify.clone().notified_owned()
    }

    pub(crate) fn attach(&self) {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn detach(&self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    /// Nanoseconds from the log's creation to `at`.
    fn stamp(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.created).as_nanos() as u64
    }

    /// Marks the channel as recently used, postponing its removal when idle.
    pub fn touch(&self) {
        self.last_active
            .store(self.stamp(Instant::now()), Ordering::Relaxed);
    }

    /// True when nothing refers to it: no subscribers, no history, and no
    /// activity for `idle_ttl`. Such a channel may be dropped; its next use
    /// starts a new epoch.
    pub fn is_idle(&self, now: Instant, idle_ttl: Duration) -> bool {
        if self.subscriber_count() > 0 {
            return false;
        }
        let mut state = self.write();
        self.trim_expired(&mut state, now);
        let last_active = self.last_active.load(Ordering::Relaxed);
        state.messages.is_empty()
            && Duration::from_nanos(self.stamp(now).saturating_sub(last_active)) >= idle_ttl
    }

    /// A read guard over a history with no expired message at its front.
    fn live_state(&self) -> RwLockReadGuard<'_, LogState> {
        let state = self.read();
        let Some(max_age) = self.policy.max_age else {
            return state;
        };
        match state.messages.front() {
            Some(m) if expired(m, max_age, Instant::now()) => {
                drop(state);
                self.trim_expired(&mut self.write(), Instant::now());
                self.read()
            }
            _ => state,
        }
    }

    fn trim_expired(&self, state: &mut LogState, now: Instant) {
        if let Some(max_age) = self.policy.max_age {
            while state
                .messages
                .front()
                .is_some_and(|m| expired(m, max_age, now))
            {
                state.messages.pop_front();
            }
        }
    }

    // A panic while holding the lock cannot leave `LogState` half-updated
    // (every mutation is a single push/pop/assignment), so poisoning is ignored.
    fn read(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether `message` is older than `max_age` (never, for ages past `Instant`'s range).
fn expired(message: &Message, max_age: Duration, now: Instant) -> bool {
    message
        .published_at
        .checked_add(max_age)
        .is_some_and(|deadline| deadline <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(max_messages: usize) -> ChannelLog {
        ChannelLog::new(
            ChannelName::new("c").unwrap(),
            HistoryPolicy {
                max_messages,
                max_age: None,
            },
        )
    }

    fn offsets_after(log: &ChannelLog, mut at: Position) -> Vec<String> {
        let mut out = vec![];
        loop {
            match log.read_after(at) {
                Read::Message(m) => {
                    out.push(m.offset().to_string());
                    at.offset = m.offset();
                }
                Read::Gap { missed, resume } => {
                    out.push(format!("gap:{missed:?}"));
                    at = resume;
                }
                Read::Nothing => return out,
            }
        }
    }

    #[test]
    fn offsets_count_from_one_and_history_is_bounded() {
        let log = log(3);
        for i in 1..=5 {
            assert_eq!(log.append(Payload::text(i.to_string())).offset(), i);
        }
        assert_eq!(log.head().offset, 5);
        // Messages 1 and 2 are gone: a gap of exactly what was missed.
        let at = Position::new(log.name(), log.epoch(), 1);
        assert_eq!(offsets_after(&log, at), ["gap:Some(1)", "3", "4", "5"]);
        let at = Position::new(log.name(), log.epoch(), 2);
        assert_eq!(offsets_after(&log, at), ["3", "4", "5"]);
        let at = Position::new(log.name(), log.epoch(), 0);
        assert_eq!(offsets_after(&log, at), ["gap:Some(2)", "3", "4", "5"]);
    }

    #[test]
    fn another_epoch_is_an_unknown_gap_then_the_oldest() {
        let log = log(10);
        log.append(Payload::text("a"));
        let at = Position::new(log.name(), log.epoch().wrapping_add(1), 1);
        assert_eq!(offsets_after(&log, at), ["gap:None", "1"]);
    }

    #[test]
    fn start_policies() {
        let log = log(3);
        let none = log.start(None, Since::Oldest);
        assert_eq!(none.offset, 0, "empty history starts at 0");
        for _ in 0..5 {
            log.append(Payload::text("x"));
        }
        assert_eq!(log.start(None, Since::Head).offset, 5);
        assert_eq!(log.start(None, Since::Oldest).offset, 2);
        assert_eq!(log.start(None, Since::Last(1)).offset, 4);
        assert_eq!(log.start(None, Since::Last(99)).offset, 2);
        let forged = Position::new(log.name(), log.epoch(), 1_000);
        assert_eq!(log.start(Some(forged), Since::Head).offset, 5, "clamped");
        let other = Position::new(log.name(), 42, 3);
        assert_eq!(log.start(Some(other), Since::Head), other);
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_expires_messages_into_a_gap() {
        let log = ChannelLog::new(
            ChannelName::new("c").unwrap(),
            HistoryPolicy {
                max_messages: 10,
                max_age: Some(Duration::from_secs(60)),
            },
        );
        log.append(Payload::text("old"));
        tokio::time::advance(Duration::from_secs(61)).await;
        log.append(Payload::text("new"));
        let at = Position::new(log.name(), log.epoch(), 0);
        assert_eq!(offsets_after(&log, at), ["gap:Some(1)", "2"]);
        tokio::time::advance(Duration::from_secs(61)).await;
        // Expired without any publish: readers still see it gone.
        let at = Position::new(log.name(), log.epoch(), 0);
        assert_eq!(offsets_after(&log, at), ["gap:Some(2)"]);
        assert_eq!(log.start(None, Since::Oldest).offset, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idleness() {
        let log = log(10);
        let ttl = Duration::from_secs(5);
        assert!(!log.is_idle(Instant::now(), ttl), "just created");
        tokio::time::advance(ttl).await;
        assert!(log.is_idle(Instant::now(), ttl));
        log.attach();
        assert!(!log.is_idle(Instant::now() + ttl, ttl), "has a subscriber");
        log.detach();
        log.append(Payload::text("x"));
        assert!(!log.is_idle(Instant::now() + ttl * 100, ttl), "has history");
    }
}
