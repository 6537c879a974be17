//! What the demos run on. By default, what `#[tokio::main]` builds: the
//! system allocator and tokio's multi-threaded runtime as it comes, as an
//! app would. With the `bench-runtime` feature, which the benchmark scripts
//! turn on: jemalloc, and tokio polling for I/O every 1,024 tasks rather than
//! 61. Both are the app's choices, not comet's; these suit a push server.
//! The README's performance section has the figures (`bench/compare.sh`).
//!
//! **jemalloc.** A held connection is mostly hyper's two 8 KiB buffers, and
//! only pages written count. Behind axum, hyper moves each connection to a
//! fresh read buffer after the request (axum still holds the request, which
//! points into the first), and a held connection never writes it. jemalloc
//! keeps 8 KiB blocks page-aligned in slabs of their own, so that buffer
//! costs no memory; glibc's malloc puts other allocations on its pages.
//!
//! **The event interval.** A publish makes every waiting subscriber's task
//! ready at once. Polling I/O every 61 tasks, a worker reads the long polls
//! that the first answers bring back in between the answers still owed, so
//! the last subscriber waits for those too; an event loop such as nginx's
//! answers the whole wake-up first. Every 1,024 tasks comes close to that.
//! The price: new requests wait longer under load (a comet task's poll is
//! short, so still milliseconds), and publishers sending flat out get
//! about 8% fewer messages through on one core.

#[cfg(all(feature = "bench-runtime", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tasks a worker runs between polls for new I/O and timers (tokio: 61),
/// with `bench-runtime`.
#[cfg(feature = "bench-runtime")]
pub const EVENT_INTERVAL: u32 = 1024;

/// A multi-threaded runtime with I/O and timers (and, with `bench-runtime`,
/// [`EVENT_INTERVAL`]).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    #[cfg(feature = "bench-runtime")]
    builder.event_interval(EVENT_INTERVAL);
    builder.build()
}
