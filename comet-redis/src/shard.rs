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

/// The number of hash slots, as Redis Cluster has them.
pub(crate) const SLOTS: u16 = 16_384;

/// Maps each channel to the index of the shard that holds it.
#[derive(Debug, Clone)]
pub(crate) struct ShardMap {
    shards: usize,
}

impl ShardMap {
    /// A map over `shards` standalone primaries (at least one).
    pub(crate) fn fixed(shards: usize) -> Self {
        Self {
            shards: shards.max(1),
        }
    }

    /// The shard that holds `channel`.
    pub(crate) fn shard_of(&self, channel: &ChannelName) -> usize {
        if self.shards == 1 {
            return 0;
        }
        jump(mix(u64::from(slot(channel.as_str()))), self.shards)
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
    }

    #[test]
    fn one_shard_holds_everything() {
        let map = ShardMap::fixed(1);
        assert_eq!(map.shard_of(&ChannelName::new("a").unwrap()), 0);
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
