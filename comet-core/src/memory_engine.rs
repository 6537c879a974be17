//! The default engine: all history in this process's memory.

use crate::{
    engine::{Attachment, ChannelLog, Engine, EngineFuture, PublishFuture, Resume},
    idempotency::{Remembered, DEFAULT_IDEMPOTENCY_WINDOW},
    ChannelName, HistoryPolicy, IdempotencyKey, Payload, Position,
};
use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, RwLock,
    },
    time::Duration,
};
use tokio::time::Instant;

/// How long an unused, empty channel keeps its epoch (see
/// [`HubBuilder::idle_ttl`](crate::HubBuilder::idle_ttl)).
pub const DEFAULT_IDLE_TTL: Duration = Duration::from_secs(60);

/// Picks the history policy of a channel by its name.
pub type HistoryPolicyFn = Arc<dyn Fn(&ChannelName) -> HistoryPolicy + Send + Sync>;

/// Keeps every channel's history in memory; one process, no backplane.
///
/// Idle channels (no subscriber, no history, unused for the idle TTL) are
/// swept lazily by publishes and subscribes, at most once per second, so a
/// stream of short-lived channel names cannot grow memory without bound and no
/// background task is needed.
pub struct MemoryEngine {
    channels: RwLock<HashMap<ChannelName, Arc<ChannelLog>>>,
    policy: HistoryPolicyFn,
    idle_ttl: Duration,
    started: Instant,
    /// Milliseconds after `started` when the next sweep is due.
    next_sweep_ms: AtomicU64,
    /// Idempotency keys of recent publishes.
    remembered: Remembered,
}

/// The most idempotency keys the in-memory engine remembers at once.
const REMEMBERED_KEYS: usize = 100_000;

const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl MemoryEngine {
    /// An engine giving every channel `policy`, and dropping channels idle for
    /// `idle_ttl`.
    pub fn new(policy: HistoryPolicy, idle_ttl: Duration) -> Self {
        Self::with_policy_fn(Arc::new(move |_| policy), idle_ttl)
    }

    /// An engine asking `policy` for each new channel's history policy.
    pub fn with_policy_fn(policy: HistoryPolicyFn, idle_ttl: Duration) -> Self {
        Self {
            channels: RwLock::default(),
            policy,
            idle_ttl,
            started: Instant::now(),
            next_sweep_ms: AtomicU64::new(SWEEP_EVERY.as_millis() as u64),
            remembered: Remembered::new(DEFAULT_IDEMPOTENCY_WINDOW, REMEMBERED_KEYS),
        }
    }

    /// Drops every idle channel now; returns how many were dropped.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let before = channels.len();
        channels.retain(|_, log| !log.is_idle(now, self.idle_ttl));
        before - channels.len()
    }

    fn maybe_sweep(&self) {
        let elapsed = self.started.elapsed().as_millis() as u64;
        let due = self.next_sweep_ms.load(Ordering::Relaxed);
        if elapsed >= due
            && self
                .next_sweep_ms
                .compare_exchange(
                    due,
                    elapsed + SWEEP_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let dropped = self.sweep();
            if dropped > 0 {
                tracing::debug!(dropped, "dropped idle channels");
            }
        }
    }

    /// Runs `f` on the log of `channel` while holding the registry lock, so a
    /// concurrent sweep can neither drop the log in between nor miss what `f` did.
    fn with_log<T>(&self, channel: &ChannelName, f: impl FnOnce(&Arc<ChannelLog>) -> T) -> T {
        self.maybe_sweep();
        {
            let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
            if let Some(log) = channels.get(channel) {
                return f(log);
            }
        }
        let mut channels = self.channels.write().unwrap_or_else(|e| e.into_inner());
        let log = channels
            .entry(channel.clone())
            .or_insert_with(|| Arc::new(ChannelLog::new(channel.clone(), (self.policy)(channel))));
        f(log)
    }

    /// The log of `channel`, created if needed, without subscribing.
    pub fn log(&self, channel: &ChannelName) -> Arc<ChannelLog> {
        self.with_log(channel, |log| {
            log.touch();
            log.clone()
        })
    }
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self::new(HistoryPolicy::default(), DEFAULT_IDLE_TTL)
    }
}

impl Engine for MemoryEngine {
    fn publish(
        &self,
        channel: &ChannelName,
        payload: Payload,
        idempotency_key: Option<&IdempotencyKey>,
    ) -> PublishFuture {
        let append = || {
            let message = self.with_log(channel, |log| log.append(payload));
            Position::new(channel, message.epoch(), message.offset())
                .with_identity(message.identity())
        };
        let position = match idempotency_key {
            Some(key) => self.remembered.get_or_publish(channel, key, append),
            None => append(),
        };
        Box::pin(std::future::ready(Ok(position)))
    }

    fn attach(&self, channel: &ChannelName, _from: Option<Resume>) -> EngineFuture<Attachment> {
        let attachment = self.with_log(channel, |log| log.attach());
        Box::pin(std::future::ready(Ok(attachment)))
    }

    fn head(&self, channel: &ChannelName) -> EngineFuture<Position> {
        Box::pin(std::future::ready(Ok(self.log(channel).head())))
    }

    fn existing(&self, channel: &ChannelName) -> Option<Arc<ChannelLog>> {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        channels.get(channel).cloned()
    }

    fn channel_count(&self) -> usize {
        self.channels
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn clear(&self, channel: &ChannelName) -> EngineFuture<()> {
        if let Some(log) = self.existing(channel) {
            // A new epoch, empty: nothing of the old history is served again.
            let _ = log.restart(crate::epoch::random_epoch(), 0, std::iter::empty());
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn wake_all(&self) {
        let channels = self.channels.read().unwrap_or_else(|e| e.into_inner());
        for log in channels.values() {
            log.wake();
        }
    }

    // No cursor key: one process has no other node whose cursors it must
    // verify, and a restarted process must take its old cursors (with one
    // gap, for the new epoch), not refuse them as forged.
}

impl fmt::Debug for MemoryEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryEngine")
            .field("channels", &self.channel_count())
            .field("idle_ttl", &self.idle_ttl)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_channels_are_dropped_and_come_back_with_a_new_epoch() {
        let engine = MemoryEngine::new(
            HistoryPolicy {
                max_messages: 10,
                max_age: Some(Duration::from_secs(10)),
            },
            Duration::from_secs(5),
        );
        // A million short-lived names, in miniature: each used once.
        for i in 0..1000 {
            engine.log(&ChannelName::new(&format!("tmp{i}")).unwrap());
        }
        let kept = ChannelName::new("kept").unwrap();
        let attached = engine.attach(&kept, None).await.unwrap();
        let with_history = ChannelName::new("history").unwrap();
        let epoch = engine.log(&with_history).epoch();
        engine
            .publish(&with_history, Payload::text("x"), None)
            .await
            .unwrap();
        assert_eq!(engine.channel_count(), 1002);

        tokio::time::advance(Duration::from_secs(6)).await;
        // The sweep runs lazily, from the next use.
        engine.log(&kept);
        assert_eq!(
            engine.channel_count(),
            2,
            "subscribed and non-empty channels stay"
        );
        assert_eq!(engine.log(&with_history).epoch(), epoch);

        tokio::time::advance(Duration::from_secs(11)).await;
        drop(attached);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(engine.sweep(), 2);
        assert_eq!(engine.channel_count(), 0);
        assert_ne!(
            engine.log(&with_history).epoch(),
            epoch,
            "a new history, a new epoch"
        );
    }
}
