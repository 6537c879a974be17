//! Where a channel lives in Redis: two keys and a pub/sub channel, all
//! hash-tagged with the channel's name so that they share one Cluster slot.
//!
//! - `<prefix>:{<name>}:meta`, a hash: `epoch` (decimal `u64`), `last`
//!   (the newest offset of that epoch) and, for the channel's first epoch
//!   since it had no keys, `born` (Redis's clock when it began, ms). Made by
//!   the first publish, never by a read: a channel without it is in the void
//!   (epoch 0);
//! - `<prefix>:{<name>}:log`, a stream whose entry IDs are `<offset>-0`,
//!   with fields `k` (kind: `j` JSON, `t` text), `e` (event, empty for
//!   none), `d` (payload) and `t` (publish time, Unix milliseconds);
//! - `<prefix>:{<name>}`, the pub/sub channel every publish announces on;
//! - `<prefix>:{<name>}:idem:<key>`, a string `<epoch> <offset> <time ms> <identity>`
//!   for each idempotency key a publish carried, while it is remembered.
//!
//! Beside them, `<prefix>:cursor-key` holds the key that tags cursors.
//!
//! Channel names cannot hold `{` or `}`, so the tag is always the name.

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
            meta: format!("{pubsub}:meta"),
            log: format!("{pubsub}:log"),
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
        assert_eq!(keys.meta, "comet:{room/a:b}:meta");
        assert_eq!(keys.log, "comet:{room/a:b}:log");
        assert_eq!(keys.pubsub, "comet:{room/a:b}");
        assert_eq!(channel_of("comet", &keys.pubsub), Some(name));
        assert_eq!(channel_of("comet", "other:{x}"), None);
        assert_eq!(channel_of("comet", "comet:{bad name}"), None);
    }
}
