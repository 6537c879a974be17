//! Publish cost, and fan-out of one message to many waiting subscribers, side
//! by side with `tokio::sync::broadcast` doing the same fan-out in the same run.
//!
//! `cargo bench -p comet-core --bench fanout`

use comet_core::{Hub, Payload, Start};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{runtime::Runtime, sync::Notify};
use tokio_stream::StreamExt;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Counts deliveries of one round and signals when every subscriber has one.
struct Round {
    remaining: AtomicUsize,
    done: Notify,
}

impl Round {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            remaining: AtomicUsize::new(0),
            done: Notify::new(),
        })
    }
    fn delivered(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// A hub with `n` subscriptions to "bench", each a task awaiting its next
/// item and counting it in the returned round.
fn waiting_subscribers(rt: &Runtime, n: usize) -> (Hub, Arc<Round>) {
    let hub = Hub::new();
    let round = Round::new();
    for _ in 0..n {
        let mut sub = rt
            .block_on(hub.subscribe(["bench"], Start::head()))
            .unwrap();
        let round = round.clone();
        rt.spawn(async move {
            while sub.next().await.is_some() {
                round.delivered();
            }
        });
    }
    (hub, round)
}

fn publish(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish");
    for subscribers in [0usize, 1_000] {
        let hub = Hub::new();
        let subs: Vec<_> = (0..subscribers)
            .map(|_| {
                rt.block_on(hub.subscribe(["bench"], Start::head()))
                    .unwrap()
            })
            .collect();
        group.bench_function(
            BenchmarkId::new("unpolled_subscriptions", subscribers),
            |b| {
                b.to_async(&rt)
                    .iter(|| async { hub.publish("bench", Payload::text("hello")).await.unwrap() })
            },
        );
        drop(subs);
    }
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("fanout");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(8));
    for n in [1_000usize, 10_000] {
        // comet: n subscriptions, each a task awaiting the next item.
        let (hub, round) = waiting_subscribers(&rt, n);
        group.bench_function(BenchmarkId::new("comet_hub", n), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (hub, round) = (hub.clone(), round.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        round.remaining.store(n, Ordering::Release);
                        let done = round.done.notified();
                        hub.publish("bench", Payload::text("hello")).await.unwrap();
                        done.await;
                    }
                    start.elapsed()
                }
            })
        });

        // broadcast: n receivers, each a task awaiting recv().
        let (tx, _) = tokio::sync::broadcast::channel::<Arc<str>>(1024);
        let round = Round::new();
        for _ in 0..n {
            let mut rx = tx.subscribe();
            let round = round.clone();
            rt.spawn(async move {
                while rx.recv().await.is_ok() {
                    round.delivered();
                }
            });
        }
        group.bench_function(BenchmarkId::new("tokio_broadcast", n), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (tx, round) = (tx.clone(), round.clone());
                async move {
                    let start = Instant::now();
                    for _ in 0..iters {
                        round.remaining.store(n, Ordering::Release);
                        let done = round.done.notified();
                        tx.send(Arc::from("hello")).unwrap();
                        done.await;
                    }
                    start.elapsed()
                }
            })
        });
    }
    group.finish();
}

/// The publisher's own cost (time until `publish` returns) with many
/// subscribers *waiting*: it must not grow with them.
fn publish_to_waiting(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("publish_to_waiting");
    group.sample_size(30);
    for n in [0usize, 10_000] {
        let (hub, round) = waiting_subscribers(&rt, n);
        group.bench_function(BenchmarkId::new("subscribers", n), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (hub, round) = (hub.clone(), round.clone());
                async move {
                    let mut publishing = Duration::ZERO;
                    for _ in 0..iters {
                        round.remaining.store(n, Ordering::Release);
                        let done = round.done.notified();
                        let start = Instant::now();
                        hub.publish("bench", Payload::text("hello")).await.unwrap();
                        publishing += start.elapsed();
                        // Let every subscriber catch up (and wait again) before the next.
                        if n > 0 {
                            done.await;
                        }
                    }
                    publishing
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, publish, publish_to_waiting, fanout);
criterion_main!(benches);
