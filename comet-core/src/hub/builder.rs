//! The hub's builder: its limits, history and engine.

use super::{Hub, HubShared};
use crate::{
    engine::Engine,
    memory_engine::{HistoryPolicyFn, DEFAULT_IDLE_TTL},
    presence::{tracker::Tracker, Hook, HubEvent, PresenceFn, DEFAULT_MAX_PRESENCE_LISTED},
    subscription::SubscriberState,
    ChannelName, HistoryPolicy, MemoryEngine,
};
use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize},
        Arc,
    },
    time::Duration,
};

/// Default limit of channels in one subscription.
pub const DEFAULT_MAX_CHANNELS_PER_SUBSCRIPTION: usize = 32;
/// Default limit of a payload's size in bytes.
pub const DEFAULT_MAX_PAYLOAD_BYTES: usize = 64 * 1024;
/// Default window over which clients spread their reconnects after a shutdown.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(5);

/// Configures a [`Hub`].
#[must_use]
pub struct HubBuilder {
    history: HistoryPolicy,
    history_fn: Option<HistoryPolicyFn>,
    idle_ttl: Duration,
    max_channels: usize,
    max_held_channels: usize,
    max_payload: usize,
    max_subscribers: usize,
    max_channel_subscribers: usize,
    max_presence_listed: usize,
    reconnect_window: Duration,
    presence: Option<PresenceFn>,
    hook: Option<Hook>,
    engine: Option<Arc<dyn Engine>>,
}

impl Default for HubBuilder {
    fn default() -> Self {
        Self {
            history: HistoryPolicy::default(),
            history_fn: None,
            idle_ttl: DEFAULT_IDLE_TTL,
            max_channels: DEFAULT_MAX_CHANNELS_PER_SUBSCRIPTION,
            max_held_channels: usize::MAX,
            max_payload: DEFAULT_MAX_PAYLOAD_BYTES,
            max_subscribers: usize::MAX,
            max_channel_subscribers: usize::MAX,
            max_presence_listed: DEFAULT_MAX_PRESENCE_LISTED,
            reconnect_window: DEFAULT_RECONNECT_WINDOW,
            presence: None,
            hook: None,
            engine: None,
        }
    }
}

impl HubBuilder {
    /// The history every channel keeps (default: 1,000 messages, 15 minutes).
    pub fn history(mut self, policy: HistoryPolicy) -> Self {
        self.history = policy;
        self
    }

    /// Chooses a channel's history by its name, overriding [`history`](Self::history).
    ///
    /// ```
    /// use comet_push::{Hub, HistoryPolicy};
    /// let hub = Hub::builder()
    ///     .history_for(|name| match name.as_str().starts_with("ticker/") {
    ///         true => HistoryPolicy { max_messages: 10, max_age: None },
    ///         false => HistoryPolicy::default(),
    ///     })
    ///     .build();
    /// ```
    pub fn history_for<F>(mut self, policy: F) -> Self
    where
        F: Fn(&ChannelName) -> HistoryPolicy + Send + Sync + 'static,
    {
        self.history_fn = Some(Arc::new(policy));
        self
    }

    /// How long a channel with no subscribers and no history is kept (and so
    /// keeps its epoch) before it is dropped. Default: 60 s.
    pub fn idle_ttl(mut self, ttl: Duration) -> Self {
        self.idle_ttl = ttl;
        self
    }

    /// The most channels one subscription may name (default 32).
    pub fn max_channels_per_subscription(mut self, max: usize) -> Self {
        self.max_channels = max.max(1);
        self
    }

    /// The most channels held at once (default: no limit). A publish or
    /// subscribe that would make one more fails (idle channels are swept
    /// first to make room): [`PublishError::ChannelLimit`] and
    /// [`SubscribeError::ChannelLimit`], a 429 `channel_limit` on the wire. Bounds the memory a
    /// flood of distinct channel names can take to this many histories.
    ///
    /// [`PublishError::ChannelLimit`]: super::PublishError::ChannelLimit
    /// [`SubscribeError::ChannelLimit`]: super::SubscribeError::ChannelLimit
    pub fn max_channels(mut self, max: usize) -> Self {
        self.max_held_channels = max;
        self
    }

    /// The largest payload accepted, in bytes (default 64 KiB).
    pub fn max_payload_bytes(mut self, max: usize) -> Self {
        self.max_payload = max;
        self
    }

    /// The most live subscriptions on the hub (default: no limit). Past it,
    /// subscribing fails with [`SubscribeError::TooManySubscribers`] (a 429).
    ///
    /// [`SubscribeError::TooManySubscribers`]: super::SubscribeError::TooManySubscribers
    pub fn max_subscribers(mut self, max: usize) -> Self {
        self.max_subscribers = max;
        self
    }

    /// The most live subscriptions to any one channel (default: no limit).
    pub fn max_subscribers_per_channel(mut self, max: usize) -> Self {
        self.max_channel_subscribers = max;
        self
    }

    /// Gives every channel presence (`true`) or none (the default); see
    /// [`presence_for`](Self::presence_for).
    pub fn presence(self, on: bool) -> Self {
        self.presence_for(move |_| on)
    }

    /// Chooses which channels have presence, by name: the users of their
    /// identified subscriptions are listed ([`Hub::presence`]) and their
    /// joins and leaves delivered to subscribers that ask
    /// ([`Subscriber::presence_events`](crate::Subscriber::presence_events)).
    /// Each costs a little on every subscribe and unsubscribe, and on Redis
    /// a write per batch, so turn it on where it is shown.
    ///
    /// ```
    /// use comet_push::Hub;
    /// let hub = Hub::builder()
    ///     .presence_for(|name| name.as_str().starts_with("room/"))
    ///     .build();
    /// ```
    pub fn presence_for<F>(mut self, on: F) -> Self
    where
        F: Fn(&ChannelName) -> bool + Send + Sync + 'static,
    {
        self.presence = Some(Arc::new(on));
        self
    }

    /// The window over which clients spread their reconnects after
    /// [`Hub::shutdown`](crate::Hub::shutdown) (default 5 s): each
    /// subscription ends with an [`EndReason::Shutdown`](crate::EndReason::Shutdown)
    /// that suggests it, and comet.js waits a random part of it before it
    /// resumes, so that a rolling deploy does not send every client of a
    /// node to the others in the same instant. Zero: at once.
    pub fn reconnect_window(mut self, window: Duration) -> Self {
        self.reconnect_window = window;
        self
    }

    /// The most users a presence list names (default 1,000); past it,
    /// [`Presence`](crate::Presence) has the counts and this many members.
    pub fn max_presence_listed(mut self, max: usize) -> Self {
        self.max_presence_listed = max;
        self
    }

    /// Calls `hook` with each [`HubEvent`]: subscriptions starting and
    /// ending on this node, channels occupied and vacated, users joining
    /// and leaving (those three once across every node that shares the
    /// engine). The hook runs inline: keep it short, spawn what awaits.
    ///
    /// ```
    /// use comet_push::{Hub, HubEvent};
    /// let hub = Hub::builder()
    ///     .on_event(|event| match event {
    ///         HubEvent::Occupied { channel } => tracing::info!(%channel, "first subscriber"),
    ///         HubEvent::Vacated { channel } => tracing::info!(%channel, "last one gone"),
    ///         _ => {}
    ///     })
    ///     .build();
    /// ```
    pub fn on_event<F>(mut self, hook: F) -> Self
    where
        F: Fn(&HubEvent<'_>) + Send + Sync + 'static,
    {
        self.hook = Some(Arc::new(hook));
        self
    }

    /// Uses `engine` instead of the in-memory one (history settings then
    /// belong to that engine). Several hubs may share one engine: they see the
    /// same channels, and each shuts down on its own.
    pub fn engine(mut self, engine: Arc<dyn Engine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        let hub = self.build_hub();
        if let Some(bus) = hub.shared.engine.control_bus() {
            // Orders from any node reach this hub's subscriptions while it lives.
            let shared = Arc::downgrade(&hub.shared);
            bus.listen(Arc::new(move |control| {
                if let Some(shared) = shared.upgrade() {
                    super::apply(&shared.state, &shared.engine, control);
                }
            }));
        }
        hub
    }

    fn build_hub(self) -> Hub {
        let (engine, memory): (Arc<dyn Engine>, _) = match self.engine {
            Some(engine) => (engine, None),
            None => {
                let history = self.history;
                let policy = self
                    .history_fn
                    .unwrap_or_else(|| Arc::new(move |_| history));
                let memory = Arc::new(MemoryEngine::with_policy_fn(policy, self.idle_ttl));
                (memory.clone(), Some(memory))
            }
        };
        Hub {
            shared: Arc::new(HubShared {
                engine: engine.clone(),
                memory,
                max_channels: self.max_channels,
                max_held_channels: self.max_held_channels,
                started: tokio::time::Instant::now(),
                next_limit_sweep_ms: AtomicU64::new(0),
                max_payload: self.max_payload,
                max_subscribers: self.max_subscribers,
                max_channel_subscribers: self.max_channel_subscribers,
                max_presence_listed: self.max_presence_listed,
                state: Arc::new(SubscriberState {
                    subscribers: AtomicUsize::new(0),
                    delivered: AtomicU64::new(0),
                    shutting_down: AtomicBool::new(false),
                    reconnect_window: self.reconnect_window,
                    tracker: Tracker::new(engine.clone(), self.presence, self.hook),
                    registry: Default::default(),
                    engine: engine.clone(),
                }),
                published: AtomicU64::new(0),
            }),
        }
    }
}
