//! What a delivered item's cursor costs: read from history and encoded as a
//! transport writes it, untagged (the in-memory engine) and tagged under a
//! cursor key with the message's identity (what the Redis engine's nodes
//! issue), in the same run.
//!
//! `cargo bench -p comet-core --bench cursor`

use comet_core::{
    engine::{Attachment, ChannelLog, CursorKey, Engine, EngineFuture, PublishFuture, Resume},
    ChannelName, HistoryPolicy, Hub, IdempotencyKey, MemoryEngine, Payload, Position, Start,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::sync::Arc;

/// The in-memory engine, with a cursor key as the Redis engine has one.
struct Keyed(MemoryEngine, CursorKey);

impl Engine for Keyed {
    fn publish(&self, c: &ChannelName, p: Payload, k: Option<&IdempotencyKey>) -> PublishFuture {
        self.0.publish(c, p, k)
    }
    fn attach(&self, c: &ChannelName, from: Option<Resume>) -> EngineFuture<Attachment> {
        self.0.attach(c, from)
    }
    fn head(&self, c: &ChannelName) -> EngineFuture<Position> {
        self.0.head(c)
    }
    fn existing(&self, c: &ChannelName) -> Option<Arc<ChannelLog>> {
        self.0.existing(c)
    }
    fn channel_count(&self) -> usize {
        self.0.channel_count()
    }
    fn wake_all(&self) {
        self.0.wake_all()
    }
    fn cursor_key(&self) -> Option<CursorKey> {
        Some(self.1)
    }
}

const MESSAGES: usize = 1000;

fn cursors(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let history = HistoryPolicy {
        max_messages: MESSAGES,
        max_age: None,
    };
    let memory = || MemoryEngine::new(history, comet_core::DEFAULT_IDLE_TTL);
    let hubs: [(&str, Hub); 2] = [
        (
            "untagged",
            Hub::builder().engine(Arc::new(memory())).build(),
        ),
        (
            "tagged",
            Hub::builder()
                .engine(Arc::new(Keyed(memory(), CursorKey::random())))
                .build(),
        ),
    ];
    let mut group = c.benchmark_group("1000 items read, each cursor encoded");
    for (name, hub) in hubs {
        runtime.block_on(async {
            for n in 0..MESSAGES {
                hub.publish("c", n.to_string()).await.unwrap();
            }
        });
        group.bench_function(BenchmarkId::new("cursor", name), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut sub = hub.subscribe(["c"], Start::oldest()).await.unwrap();
                    let mut bytes = 0;
                    while let Some(item) = sub.try_next() {
                        bytes += item.cursor().encode().len();
                    }
                    bytes
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, cursors);
criterion_main!(benches);
