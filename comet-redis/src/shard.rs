//! Which Redis holds a channel: the shard map.
//!
//! Every channel goes first to its hash slot, as Redis Cluster computes it
//! (CRC16 of the hash tag, which for comet's keys is the channel's name,
//! modulo 16,384), then from the slot to a shard. With a static list of
//! primaries, the slot picks its shard by jump consistent hashing (Lamping
//! and Veach, 2014): every node that lists the same primaries in the same
//! order agrees on each channel's shard with no coordination, and a list
//! grown by one primary at its end moves only about 1/(n + 1) of the slots,
//! each channel moved starting over in its new shard (its subscribers get
//! one gap, from the epoch). One path below: a shard is an index into the
//! engine's shards, whatever filled the map.

use comet_core::ChannelName;
use std::sync::RwLock;

/// The number of hash slots, as Redis Cluster has them.
pub(crate) const SLOTS: u16 = 16_384;

/// Maps each channel to the index of the shard that holds it.
#[derive(Debug)]
pub(crate) enum ShardMap {
    /// A static list of this many standalone primaries.
    Fixed(usize),
    /// A Redis Cluster: each slot's shard, as last learned (`UNKNOWN` for a
    /// slot no primary serves yet), changed as slots move.
    Slots(RwLock<Vec<u16>>),
}

/// A slot no known shard serves.
pub(crate) const UNKNOWN: u16 = u16::MAX;

impl ShardMap {
    /// A map over `shards` standalone primaries (at least one).
    pub(crate) fn fixed(shards: usize) -> Self {
        Self::Fixed(shards.max(1))
    }

    /// A map of a Redis Cluster's slots, none known yet.
    pub(crate) fn slots() -> Self {
        Self::Slots(RwLock::new(vec![UNKNOWN; usize::from(SLOTS)]))
    }

    /// The shard that holds `channel` (`None` in a cluster whose slot no
    /// known primary serves).
    pub(crate) fn shard_of(&self, channel: &ChannelName) -> Option<usize> {
        self.shard_of_slot(slot(channel.as_str()))
    }

    /// The shard that serves `slot`.
    pub(crate) fn shard_of_slot(&self, slot: u16) -> Option<usize> {
        match self {
            Self::Fixed(1) => Some(0),
            Self::Fixed(shards) => Some(jump(mix(u64::from(slot)), *shards)),
            Self::Slots(slots) => {
                let slots = slots.read().unwrap_or_else(|e| e.into_inner());
                let shard = slots[usize::from(slot % SLOTS)];
                (shard != UNKNOWN).then_some(usize::from(shard))
            }
        }
    }

    /// Sets the shard of every slot in `ranges` (a cluster's, as learned);
    /// the slots whose shard changed.
    pub(crate) fn assign(&self, ranges: &[(u16, u16, usize)]) -> Vec<u16> {
        let Self::Slots(slots) = self else {
            return Vec::new();
        };
        let mut slots = slots.write().unwrap_or_else(|e| e.into_inner());
        let mut fresh = vec![UNKNOWN; usize::from(SLOTS)];
        for &(first, last, shard) in ranges {
            for slot in first..=last.min(SLOTS - 1) {
                fresh[usize::from(slot)] = u16::try_from(shard).unwrap_or(UNKNOWN);
            }
        }
        let changed = (0..SLOTS)
            .filter(|&slot| slots[usize::from(slot)] != fresh[usize::from(slot)])
            .collect();
        *slots = fresh;
        changed
    }
}

/// The hash slot of a channel's keys: CRC16 (XMODEM) of the name, which is
/// every key's hash tag (names cannot hold braces), modulo 16,384.
pub(crate) fn slot(name: &str) -> u16 {
    let mut crc: u16 = 0;
    for &byte in name.as_bytes() {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % SLOTS
}

/// The hash slot of any key: of its hash tag (the part between the first
/// `{` and the next `}`, if not empty), else of the whole key.
pub(crate) fn key_slot(key: &str) -> u16 {
    let tagged = key.find('{').and_then(|open| {
        let rest = &key[open + 1..];
        rest.find('}')
            .filter(|&close| close > 0)
            .map(|close| &rest[..close])
    });
    slot(tagged.unwrap_or(key))
}

/// Spreads a small key (a slot) over 64 bits before jump hashing, which
/// wants its keys well mixed (splitmix64's finalizer).
fn mix(mut key: u64) -> u64 {
    key = (key ^ (key >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    key = (key ^ (key >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    key ^ (key >> 31)
}

/// Jump consistent hash: the bucket in `0..buckets` of `key`.
fn jump(mut key: u64, buckets: usize) -> usize {
    let buckets = buckets as i64;
    let (mut bucket, mut next) = (-1_i64, 0_i64);
    while next < buckets {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let step = f64::from(1_u32 << 31) / ((key >> 33) + 1) as f64;
        next = ((bucket + 1) as f64 * step) as i64;
    }
    bucket as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_redis_clusters() {
        // From the Redis Cluster specification, and `CLUSTER KEYSLOT`.
        assert_eq!(slot("123456789"), 0x31c3);
        assert_eq!(slot("foo"), 12_182);
        assert_eq!(slot("bar"), 5_061);
        assert_eq!(slot(""), 0);
        assert_eq!(key_slot("comet:{foo}:meta2"), slot("foo"));
        assert_eq!(key_slot("comet:{}:x"), slot("comet:{}:x"));
        assert_eq!(key_slot("plain"), slot("plain"));
    }

    #[test]
    fn one_shard_holds_everything() {
        let map = ShardMap::fixed(1);
        assert_eq!(map.shard_of(&ChannelName::new("a").unwrap()), Some(0));
    }

    #[test]
    fn slots_spread_evenly_and_a_new_shard_moves_only_its_share() {
        for shards in 2..=8_usize {
            let mut counts = vec![0_usize; shards];
            let mut moved = 0;
            for slot in 0..SLOTS {
                let here = jump(mix(u64::from(slot)), shards);
                counts[here] += 1;
                let there = jump(mix(u64::from(slot)), shards + 1);
                if there != here {
                    // A slot only ever moves to the new shard.
                    assert_eq!(there, shards);
                    moved += 1;
                }
            }
            let fair = f64::from(SLOTS) / shards as f64;
            for count in counts {
                assert!(
                    (count as f64 - fair).abs() < fair * 0.1,
                    "{shards}: {count}"
                );
            }
            let share = f64::from(SLOTS) / (shards + 1) as f64;
            assert!((f64::from(moved) - share).abs() < share * 0.1, "{moved}");
        }
    }
}

#[cfg(test)]
mod slot_map_tests {
    use super::*;

    #[test]
    fn a_cluster_map_knows_what_it_was_told_and_says_what_moved() {
        let map = ShardMap::slots();
        assert_eq!(map.shard_of_slot(5), None);
        let moved = map.assign(&[(0, 8_191, 0), (8_192, 16_383, 1)]);
        assert_eq!(moved.len(), usize::from(SLOTS));
        assert_eq!(map.shard_of_slot(5), Some(0));
        assert_eq!(map.shard_of_slot(9_000), Some(1));
        let moved = map.assign(&[(0, 8_190, 0), (8_191, 16_383, 1)]);
        assert_eq!(moved, [8_191]);
        assert_eq!(map.shard_of_slot(8_191), Some(1));
    }
}
