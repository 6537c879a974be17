//! Where a channel lives in Redis: two keys and a pub/sub channel, all
//! hash-tagged with the channel's name so that they share one Cluster slot.
//!
//! - `<prefix>:{<name>}:meta2`, a hash: `epoch` (decimal `u64`), and, for
//!   the channel's first epoch since it had no keys, `born` (Redis's clock
//!   when it began, ms). Made by the first publish, never by a read: a
//!   channel without it is in the void (epoch 0). Where the log is gone on
//!   purpose (a new epoch), `last` says after which offset the log starts
//!   again; on Redis 6, which cannot number stream entries, `last` is
//!   always the newest offset. `x` and `a` say when the publish script last
//!   refreshed the keys' TTL and trimmed by age;
//! - `<prefix>:{<name>}:log2`, a stream whose entry IDs are `0-<offset>`
//!   (so that Redis 7 numbers each entry itself, `XADD 0-*`, and its last
//!   ID is the newest offset), with fields `h`, the header
//!   `<time>\n<identity>\n<kind>\n<event>` (publish time in Unix ms by the
//!   publishing node's clock, the identity each publish draws, `j` JSON or
//!   `t` text, the event or nothing), and `d` (payload);
//! - `<prefix>:{<name>}`, the pub/sub channel every publish announces on;
//! - `<prefix>:{<name>}:idem:<key>`, a string `<epoch> <offset> <time ms> <identity>`
//!   for each idempotency key a publish carried, while it is remembered.
//!
//! Presence and occupancy (see `presence.rs`), each node's share of a
//! channel written with an expiry time (Redis's clock, Unix ms) that the
//! node refreshes, and ignored (then swept) once past it:
//!
//! - `<prefix>:{<name>}:nodes`, a hash: node id to `<expiry> <subscribers>
//!   <occupied>` (the node's live subscriptions to the channel, and `1`
//!   while it holds the channel occupied, grace windows included);
//! - `<prefix>:{<name>}:users`, a sorted set: each present user, scored by
//!   the latest expiry of its shares (so expired users are a range);
//! - `<prefix>:{<name>}:shares`, a hash: user to its shares, space-separated
//!   triples `<node id> <expiry> <connections>`;
//! - `<prefix>:{<name>}:info`, a hash: user to its info (JSON), if any.
//!
//! They expire (twice the share TTL after the last write) once no node
//! writes them.
//!
//! Beside them, `<prefix>:cursor-key` (on a Redis Cluster
//! `<prefix>:{cursor-key}`) holds the key that tags cursors, and
//! `<prefix>:control` is the pub/sub channel (no key) on which orders to
//! live subscriptions go to every node (`Hub::disconnect` and the like; see
//! `control.rs`, and `wire.rs` for their form). A clear of a channel's
//! history writes no key of its own: it moves the channel's meta to a new
//! epoch and deletes its log (see `scripts/new_epoch.lua`).
//!
//! Channel names cannot hold `{` or `}`, so the tag is always the name.
//!
//! The `2` is the layout: the first one (`:meta` with `last` on every
//! publish, `:log` with IDs `<offset>-0`) is neither read nor written, so
//! that nodes of both layouts never number one channel's messages
//! together; its keys expire. A channel resumes in the new layout with one
//! gap, as a new epoch.

use comet_core::ChannelName;

/// The Redis names of one channel.
#[derive(Debug, Clone)]
pub(crate) struct ChannelKeys {
    channel: ChannelName,
    pub(crate) meta: String,
    pub(crate) log: String,
    pub(crate) pubsub: String,
}

impl ChannelKeys {
    pub(crate) fn new(prefix: &str, channel: &ChannelName) -> Self {
        let pubsub = format!("{prefix}:{{{}}}", channel.as_str());
        Self {
            channel: channel.clone(),
            meta: format!("{pubsub}:meta2"),
            log: format!("{pubsub}:log2"),
            pubsub,
        }
    }

    /// The channel they belong to.
    pub(crate) fn channel(&self) -> &ChannelName {
        &self.channel
    }

    /// The key remembering a publish's idempotency key (in the channel's
    /// slot, as the publish script that reads it needs).
    pub(crate) fn idempotency(&self, key: &comet_core::IdempotencyKey) -> String {
        format!("{}:idem:{}", self.pubsub, key.as_str())
    }
}

/// The Redis names of one channel's presence and occupancy, and the
/// pub/sub channel join and leave are announced on.
#[derive(Debug, Clone)]
pub(crate) struct PresenceKeys {
    pub(crate) nodes: String,
    pub(crate) users: String,
    pub(crate) shares: String,
    pub(crate) info: String,
    pub(crate) pubsub: String,
}

impl PresenceKeys {
    pub(crate) fn new(prefix: &str, channel: &ChannelName) -> Self {
        let pubsub = format!("{prefix}:{{{}}}", channel.as_str());
        Self {
            nodes: format!("{pubsub}:nodes"),
            users: format!("{pubsub}:users"),
            shares: format!("{pubsub}:shares"),
            info: format!("{pubsub}:info"),
            pubsub,
        }
    }

    /// The four keys, in the order the presence scripts take them.
    pub(crate) fn all(&self) -> [&str; 4] {
        [&self.nodes, &self.users, &self.shares, &self.info]
    }
}

/// The key that holds the cursor key (beside it, the previous one, under
/// `<this>:previous`): on a Redis Cluster hash-tagged, so that the two are
/// in one slot, as the script that reads them needs.
pub(crate) fn cursor_key(prefix: &str, cluster: bool) -> String {
    if cluster {
        format!("{prefix}:{{cursor-key}}")
    } else {
        format!("{prefix}:cursor-key")
    }
}

/// The pub/sub channel that carries orders to every node.
pub(crate) fn control(prefix: &str) -> String {
    format!("{prefix}:control")
}

/// The channel a pub/sub channel name belongs to, if it is one of ours.
pub(crate) fn channel_of(prefix: &str, pubsub: &str) -> Option<ChannelName> {
    let name = pubsub
        .strip_prefix(prefix)?
        .strip_prefix(":{")?
        .strip_suffix('}')?;
    ChannelName::new(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_the_channel_hash_tag_and_round_trip() {
        let name = ChannelName::new("room/a:b").unwrap();
        let keys = ChannelKeys::new("comet", &name);
        assert_eq!(keys.meta, "comet:{room/a:b}:meta2");
        assert_eq!(keys.log, "comet:{room/a:b}:log2");
        assert_eq!(keys.pubsub, "comet:{room/a:b}");
        assert_eq!(channel_of("comet", &keys.pubsub), Some(name.clone()));
        assert_eq!(channel_of("comet", "other:{x}"), None);
        assert_eq!(channel_of("comet", "comet:{bad name}"), None);
        let presence = PresenceKeys::new("comet", &name);
        assert_eq!(presence.nodes, "comet:{room/a:b}:nodes");
        assert_eq!(presence.pubsub, keys.pubsub);
        // No channel's: its name has no braces.
        assert_eq!(control("comet"), "comet:control");
        assert_eq!(channel_of("comet", &control("comet")), None);
    }
}
