//! Who is subscribed: presence (the users on a channel, with join and
//! leave), occupancy (a channel's first subscriber and its last one gone),
//! and the hooks an app observes them by.
//!
//! Each node keeps its own view in a tracker (`presence/tracker.rs`): which
//! of its subscriptions belong to whom, and for how long a user or a channel
//! lingers after its last subscription ends (the grace window, which keeps a
//! chain of long polls or a reconnecting stream one presence). The tracker
//! tells the engine's [`PresenceStore`] what changed on this node, a batch
//! per channel at most every [`COALESCE`]; the store works out what changed
//! across every node and carries join and leave to every node's subscribers.
//! An engine without a store (the in-memory one) is one node: its view is
//! everyone's.

pub(crate) mod tracker;

use crate::{
    engine::EngineFuture, message::Encodings, ChannelName, Cursor, EncodingSlot, Identity,
    Subscription,
};
use bytes::Bytes;
use std::{fmt, sync::Arc, time::Duration};

/// How long a user stays present, and a channel occupied, after its last
/// subscription ends, unless the subscriber says otherwise
/// ([`Subscriber::grace`](crate::Subscriber::grace)): long enough for a
/// stream to reconnect.
pub const DEFAULT_PRESENCE_GRACE: Duration = Duration::from_secs(5);

/// The most users a presence list names by default
/// ([`HubBuilder::max_presence_listed`](crate::HubBuilder::max_presence_listed));
/// past it, only counts.
pub const DEFAULT_MAX_PRESENCE_LISTED: usize = 1000;

/// Changes on a node are batched per channel and sent at most this often:
/// a channel whose users come and go wakes its subscribers for presence at
/// most ten times a second, however many come and go.
pub const COALESCE: Duration = Duration::from_millis(100);

/// Whether a user came or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceKind {
    /// The user's first subscription to the channel, on any node.
    Join,
    /// The user's last subscription ended, on every node, and its grace
    /// window passed.
    Leave,
}

impl PresenceKind {
    /// `join` or `leave`, as the wire names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Join => "join",
            Self::Leave => "leave",
        }
    }
}

/// A user joined or left a channel: delivered to the subscribers that asked
/// for presence events ([`Subscriber::presence_events`](crate::Subscriber::presence_events)),
/// never stored in history, never given a cursor offset.
///
/// Like a [`Message`](crate::Message), one event is shared by every
/// subscriber, and encoded once per wire format ([`encoded`](Self::encoded)).
pub struct PresenceEvent {
    channel: ChannelName,
    kind: PresenceKind,
    identity: Identity,
    encodings: Encodings,
}

impl PresenceEvent {
    /// `identity` joined or left `channel`.
    pub fn new(channel: ChannelName, kind: PresenceKind, identity: Identity) -> Self {
        Self {
            channel,
            kind,
            identity,
            encodings: Encodings::default(),
        }
    }

    /// The channel.
    pub fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// Join or leave.
    pub fn kind(&self) -> PresenceKind {
        self.kind
    }

    /// Who.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The event's encoding in `slot` (one wire format's), computed by
    /// `encode` the first time it is asked for and shared by every later
    /// caller, as [`Message::encoded`](crate::Message::encoded) is.
    pub fn encoded(
        &self,
        slot: &EncodingSlot,
        encode: impl FnOnce(&PresenceEvent) -> Bytes,
    ) -> Bytes {
        self.encodings.get(slot, || encode(self))
    }
}

impl fmt::Debug for PresenceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PresenceEvent")
            .field("channel", &self.channel)
            .field("kind", &self.kind)
            .field("identity", &self.identity)
            .finish()
    }
}

/// One user present on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Who, with the info of their latest subscription.
    pub identity: Identity,
    /// Their live subscriptions to the channel, on every node. 0 while they
    /// linger in their grace window.
    pub connections: usize,
}

/// The users on a channel, across every node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Presence {
    /// Distinct users present.
    pub users: usize,
    /// Their live subscriptions.
    pub connections: usize,
    /// The users, at most [`HubBuilder::max_presence_listed`](crate::HubBuilder::max_presence_listed)
    /// of them (in no particular order): past it, only the counts.
    pub members: Vec<Member>,
}

impl Presence {
    /// A presence of these members, listing at most `max` of them.
    pub fn from_members(mut members: Vec<Member>, max: usize) -> Self {
        let users = members.len();
        let connections = members.iter().map(|m| m.connections).sum();
        members.truncate(max);
        Self {
            users,
            connections,
            members,
        }
    }
}

/// What a channel looks like across every node; see [`Hub::channel_info`](crate::Hub::channel_info).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// The channel.
    pub channel: ChannelName,
    /// At its newest message: subscribing with it delivers what comes next.
    pub cursor: Cursor,
    /// Live subscriptions, on every node.
    pub subscribers: usize,
    /// Who is there, if the channel has presence.
    pub presence: Option<Presence>,
}

/// Something that happened to the hub's subscriptions, for the app to
/// observe ([`HubBuilder::on_event`](crate::HubBuilder::on_event)).
///
/// Hooks run inline, on the task that caused the event: keep them short,
/// and spawn anything that awaits.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum HubEvent<'a> {
    /// A subscription started on this node (each long poll is one).
    Subscribed(&'a Subscription),
    /// A subscription ended on this node.
    Unsubscribed(&'a Subscription),
    /// A channel got its first subscriber, counting every node. Reported
    /// once, by the node that saw it.
    Occupied {
        /// The channel.
        channel: &'a ChannelName,
    },
    /// A channel's last subscriber, on every node, is gone, and its grace
    /// window passed. Reported once.
    Vacated {
        /// The channel.
        channel: &'a ChannelName,
    },
    /// A user joined a channel that has presence. Reported once.
    Joined {
        /// The channel.
        channel: &'a ChannelName,
        /// Who.
        identity: &'a Identity,
    },
    /// A user left a channel that has presence. Reported once.
    Left {
        /// The channel.
        channel: &'a ChannelName,
        /// Who.
        identity: &'a Identity,
    },
}

/// The app's hook; see [`HubBuilder::on_event`](crate::HubBuilder::on_event).
pub(crate) type Hook = Arc<dyn Fn(&HubEvent<'_>) + Send + Sync>;

/// Chooses which channels have presence, by name.
pub type PresenceFn = Arc<dyn Fn(&ChannelName) -> bool + Send + Sync>;

/// What changed across every node, as a [`PresenceStore`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The channel's first subscriber, on any node.
    Occupied,
    /// The channel's last subscriber is gone, on every node.
    Vacated,
    /// A user's first subscription, on any node.
    Joined(Identity),
    /// A user's last subscription is gone, on every node.
    Left(Identity),
}

/// One user's state on this node, as the tracker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserUpdate {
    /// Present here with this many live subscriptions (0 while lingering).
    Present {
        /// Who, with their latest info.
        identity: Identity,
        /// Live subscriptions on this node.
        connections: usize,
    },
    /// Gone from this node (their grace window passed).
    Gone(Identity),
}

/// What changed on this node for one channel since the last report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeUpdate {
    /// The channel became occupied (`Some(true)`) or vacated on this node.
    pub occupied: Option<bool>,
    /// Users whose state here changed (channels with presence only).
    pub users: Vec<UserUpdate>,
}

/// Where transitions are reported that no call of this node caused (another
/// node's users expired after it crashed, say): the channel and what changed.
pub type Observer = Arc<dyn Fn(&ChannelName, &[Transition]) + Send + Sync>;

/// Presence and occupancy shared by several nodes, kept by an engine with a
/// backplane ([`Engine::presence_store`](crate::engine::Engine::presence_store)).
///
/// The hub reports what changed on its node; the store keeps each node's
/// share (expiring a node that stops refreshing it), decides what changed
/// across every node, answers reads, and delivers join and leave to every
/// node's logs ([`ChannelLog::announce`](crate::engine::ChannelLog::announce)).
pub trait PresenceStore: Send + Sync + 'static {
    /// This node's changes to `channel`; resolves to what they changed
    /// across every node (each transition is reported by one node only).
    fn update(&self, channel: &ChannelName, update: NodeUpdate) -> EngineFuture<Vec<Transition>>;

    /// The users on `channel` across every node, listing at most `max`.
    fn presence(&self, channel: &ChannelName, max: usize) -> EngineFuture<Presence>;

    /// Live subscriptions to `channel` on every node (each node's share may
    /// be a refresh interval old).
    fn subscriber_count(&self, channel: &ChannelName) -> EngineFuture<usize>;

    /// Reports, from now on, transitions found without a call of this
    /// node's (expiries) to `observer`.
    fn observe(&self, observer: Observer);
}
