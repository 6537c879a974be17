//! Real-time server push over plain HTTP (Comet) for existing Rust web apps.
//!
//! This facade re-exports [`comet_core`] (hub, channels, cursors) at its root
//! and each adapter behind a feature: `tower` (axum and other tower servers)
//! and `warp`; and the Redis engine, for several nodes sharing one set of
//! channels, behind `redis`.

#![forbid(unsafe_code)]

pub use comet_core::*;

/// The Tower layer (feature `tower`).
#[cfg(feature = "tower")]
pub use comet_tower as tower;

/// warp filters (feature `warp`).
#[cfg(feature = "warp")]
pub use comet_warp as warp;

/// The Redis engine (feature `redis`).
#[cfg(feature = "redis")]
pub use comet_redis as redis;
