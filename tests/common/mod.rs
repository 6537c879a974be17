//! The fixtures of the end-to-end tests, one module per fixture; each topic
//! file's tests call their own fixture's hub, mounts and helpers.

// Each test binary uses only some of these fixtures, so the rest is dead code there.
#![allow(dead_code)]

pub mod basics;
pub mod protocol;
pub mod transports;
