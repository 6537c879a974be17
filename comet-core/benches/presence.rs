//! What join and leave cost on a channel with 10,000 subscribers that asked
//! for presence events, beside a message to the same subscribers in the
//! same run: CPU time of the process (user + system, from /proc) and wall
//! time until every subscriber has the item.
//!
//! `cargo bench -p comet-core --bench presence` (Linux: it reads /proc).
//!
//! Rounds:
//! - `message`: one publish; `burst of 100 messages`: 100 publishes at once;
//! - `join, one at a time`: a user subscribes, every subscriber gets the
//!   join; `leave, one at a time`: one of them leaves (grace 0), every
//!   subscriber gets the leave;
//! - `burst of 100 joins`: 100 users subscribe at once; every subscriber
//!   gets the 100 joins (batched by the tracker: one wake-up carries them).

use comet_core::{Hub, Identity, Item, Payload, Start, Subscriber};
use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::sync::Notify;
use tokio_stream::StreamExt;

const SUBSCRIBERS: usize = 10_000;
const ROUNDS: usize = 20;

/// Items still to be delivered in this round, and who to tell when none are.
struct Round {
    remaining: AtomicUsize,
    done: Notify,
}

impl Round {
    fn expect(&self, items: usize) {
        self.remaining.store(items, Ordering::Release);
    }
    fn delivered(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// CPU time of this process so far (user + system), from /proc/self/stat.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("Linux /proc");
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    // utime and stime are fields 14 and 15 of the line (11 and 12 after the name).
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

async fn measure<F, Fut>(name: &str, round: &Round, per_round: usize, mut go: F) -> Duration
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (cpu0, wall0) = (cpu(), Instant::now());
    let mut waits = Duration::ZERO;
    for i in 0..ROUNDS {
        round.expect(per_round * SUBSCRIBERS);
        let done = round.done.notified();
        let started = Instant::now();
        go(i).await;
        tokio::time::timeout(Duration::from_secs(30), done)
            .await
            .expect("every subscriber got the round's items");
        waits += started.elapsed();
    }
    let cpu_per_round = (cpu() - cpu0) / ROUNDS as u32;
    println!(
        "{name:<32} cpu {:>7.2} ms a round, wall {:>7.2} ms a round (until the last subscriber), {:.2} s in all",
        cpu_per_round.as_secs_f64() * 1e3,
        (waits / ROUNDS as u32).as_secs_f64() * 1e3,
        wall0.elapsed().as_secs_f64()
    );
    cpu_per_round
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists; nothing to list
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let hub = Hub::builder().presence(true).build();
        let round = Arc::new(Round {
            remaining: AtomicUsize::new(usize::MAX),
            done: Notify::new(),
        });
        for _ in 0..SUBSCRIBERS {
            let mut sub = hub
                .subscribe_as(
                    Subscriber::anonymous().presence_events(true),
                    ["room"],
                    Start::head(),
                )
                .await
                .unwrap();
            let round = round.clone();
            tokio::spawn(async move {
                while let Some(item) = sub.next().await {
                    if matches!(item, Item::Message { .. } | Item::Presence { .. }) {
                        round.delivered();
                    }
                }
            });
        }
        // Let the subscribers take their lists and wait.
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!("{SUBSCRIBERS} subscribers with presence events, {ROUNDS} rounds each");

        measure("message", &round, 1, |_| {
            let hub = hub.clone();
            async move {
                hub.publish("room", Payload::text("hello")).await.unwrap();
            }
        })
        .await;

        // The same, 100 ms later: what an idle wait as long as a batch
        // window costs the process (joins wait for their batch).
        let late_message = measure("message, 100 ms later", &round, 1, |_| {
            let hub = hub.clone();
            async move {
                tokio::time::sleep(comet_core::COALESCE).await;
                hub.publish("room", Payload::text("hello")).await.unwrap();
            }
        })
        .await;

        let messages = measure("burst of 100 messages", &round, 100, |_| {
            let hub = hub.clone();
            async move {
                for _ in 0..100 {
                    hub.publish("room", Payload::text("hello")).await.unwrap();
                }
            }
        })
        .await;

        let joined = Arc::new(std::sync::Mutex::new(Vec::new()));
        let join = measure("join, one at a time", &round, 1, |i| {
            let (hub, joined) = (hub.clone(), joined.clone());
            async move {
                let who = Subscriber::from(Identity::new(format!("u{i}")).unwrap())
                    .grace(Duration::ZERO);
                let sub = hub.subscribe_as(who, ["room"], Start::head()).await.unwrap();
                joined.lock().unwrap().push(sub);
            }
        })
        .await;
        let leave = measure("leave, one at a time", &round, 1, |_| {
            let left = joined.lock().unwrap().pop();
            async move { drop(left) }
        })
        .await;

        let burst = measure("burst of 100 joins", &round, 100, |i| {
            let hub = hub.clone();
            async move {
                let mut subs = Vec::new();
                for j in 0..100 {
                    let who = Identity::new(format!("b{i}-{j}")).unwrap();
                    subs.push(hub.subscribe_as(who, ["room"], Start::head()).await.unwrap());
                }
                std::mem::forget(subs); // they stay: no leaves in this round
            }
        })
        .await;

        println!(
            "ratios: a join {:.2}x a message 100 ms later, a leave {:.2}x; a burst of 100 joins {:.2}x a burst of 100 messages",
            join.as_secs_f64() / late_message.as_secs_f64(),
            leave.as_secs_f64() / late_message.as_secs_f64(),
            burst.as_secs_f64() / messages.as_secs_f64(),
        );
    });
}
