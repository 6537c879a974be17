//! The key that tags cursors: as a node holds it (a [`SharedKey`], which
//! the backplane sets from Redis) and as Redis stores it (32 hex digits at
//! `<prefix>:cursor-key`).

use comet_core::engine::CursorKey;
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Mutex,
};

/// A cursor key as 32 hex digits.
pub(crate) fn hex(key: CursorKey) -> String {
    key.to_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// A cursor key that every request reads (each cursor a node issues is
/// tagged under it) and that changes rarely: read without a lock, as a
/// sequence lock over its two words.
#[derive(Default)]
pub(crate) struct SharedKey {
    /// Even when stable, odd while written; 0 while there is no key.
    sequence: AtomicU64,
    words: [AtomicU64; 2],
    /// One writer at a time (the node's task, or a first publish before it
    /// connected).
    writer: Mutex<()>,
}

impl SharedKey {
    pub(crate) fn get(&self) -> Option<CursorKey> {
        loop {
            let before = self.sequence.load(Ordering::Acquire);
            if before == 0 {
                return None;
            }
            if before % 2 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let words = [
                self.words[0].load(Ordering::Acquire),
                self.words[1].load(Ordering::Acquire),
            ];
            if self.sequence.load(Ordering::Acquire) == before {
                let mut bytes = [0u8; 16];
                bytes[..8].copy_from_slice(&words[0].to_le_bytes());
                bytes[8..].copy_from_slice(&words[1].to_le_bytes());
                return Some(CursorKey::from_bytes(bytes));
            }
        }
    }

    pub(crate) fn set(&self, key: CursorKey) {
        let _writing = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if self.get() == Some(key) {
            return;
        }
        let bytes = key.to_bytes();
        let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
        self.sequence.fetch_add(1, Ordering::AcqRel);
        self.words[0].store(word(0), Ordering::Release);
        self.words[1].store(word(1), Ordering::Release);
        self.sequence.fetch_add(1, Ordering::AcqRel);
    }
}

/// A cursor key from 32 hex digits.
pub(crate) fn parse_key(hex: &str) -> Option<CursorKey> {
    if hex.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(CursorKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        sync::{atomic::AtomicBool, Arc},
        time::Duration,
    };

    #[test]
    fn a_shared_key_is_never_read_torn_while_it_changes() {
        let keys = [CursorKey::random(), CursorKey::random()];
        let shared = Arc::new(SharedKey::default());
        assert_eq!(shared.get(), None);
        shared.set(keys[0]);
        let reads = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (shared, stop, reads) = (shared.clone(), stop.clone(), reads.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let key = shared.get().expect("set");
                        assert!(keys.contains(&key), "a torn key");
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        // Keys change under the readers until they read many times (bounded
        // in time, on a busy machine too).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut i = 0;
        while reads.load(Ordering::Relaxed) < 100_000 && std::time::Instant::now() < deadline {
            shared.set(keys[i % 2]);
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader.join().expect("no torn key");
        }
        assert!(reads.load(Ordering::Relaxed) >= 100_000);
    }
}
