//! What the demos run on: jemalloc, and tokio's multi-threaded runtime with
//! I/O polled less often while tasks are ready to run. Both are choices an
//! app makes in its `main`, not comet's; these are the ones that suit a push
//! server, measured with `bench/compare.sh`.
//!
//! **The allocator.** Most of what a held connection costs is hyper's two
//! 8 KiB buffers, of which only a few hundred bytes are ever written, so
//! what counts is how many pages a connection writes to. hyper reads the
//! request into one buffer, and axum still holds the request (which points
//! into that buffer) when hyper reads again, so hyper moves to a fresh
//! buffer, which a held connection never writes, and the first goes back to
//! the allocator for the next connection. jemalloc keeps 8 KiB blocks
//! page-aligned in slabs of their own, so that unwritten buffer costs no
//! memory; glibc's malloc puts other allocations on its pages. With 10,000
//! idle SSE subscribers: 11.3 KB resident per connection with glibc, 8.6 to
//! 9.8 KB with jemalloc (one worker thread to two).
//!
//! **The event interval.** A publish makes every waiting subscriber's task
//! ready at once. With tokio's default `event_interval` (61), a worker stops
//! every 61 tasks to poll for I/O, and the long polls that answered
//! subscribers re-issue are read and parsed in between the answers still
//! owed to the others, so the last subscriber also waits for the first ones'
//! next requests. An event loop such as nginx's answers a whole wake-up
//! before it reads more. Polling I/O every 1,024 tasks gets close to that:
//! with 1,000 long-poll subscribers on one core, the last answer to a
//! publish comes in 21 to 23 ms rather than 27 to 29 ms. The price is that
//! new requests wait a little longer under load: with 100 SSE subscribers
//! and publishers sending as fast as they are answered, one core delivers
//! about 8% fewer messages (800,000 a second rather than 870,000; fan-out
//! is unchanged). A comet task's poll is short (a frame written to a
//! buffer), so 1,024 of them still pick up new I/O within milliseconds.

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tasks a worker runs between polls for new I/O and timers (tokio: 61).
pub const EVENT_INTERVAL: u32 = 1024;

/// A multi-threaded runtime with I/O, timers and [`EVENT_INTERVAL`].
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .event_interval(EVENT_INTERVAL)
        .build()
}
