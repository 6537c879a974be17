//! What each subscriber received, and the report over all of them.

use hdrhistogram::Histogram;
use std::sync::{
    atomic::{AtomicU64, Ordering},
    Arc, Mutex,
};

/// Publish-to-receipt latencies, in microseconds, of every subscriber of a
/// run: one histogram they all record into.
///
/// A histogram each (172 KB of counters) put every record on a cold page of
/// its own, a TLB and cache miss per delivery on the generator's core. With
/// 10,000 SSE subscribers that made the generator the bound of a fan-out:
/// three servers that spent 82, 114 and 146 ms of CPU per message all took
/// 137 to 141 ms to reach the last subscriber (pinned).
///
/// Subscribers share it by cloning; a report adds each distinct one once
/// ([`Latencies::same`]).
#[derive(Clone, Default)]
pub struct Latencies(Arc<Recorded>);

struct Recorded {
    /// Every latency, and those of messages published from `steady_from`
    /// on (ns since the run began): latency once a warm-up is over.
    histograms: Mutex<(Histogram<u64>, Histogram<u64>)>,
    steady_from: AtomicU64,
}

impl Default for Recorded {
    fn default() -> Self {
        let histogram = || Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        Self {
            histograms: Mutex::new((histogram(), histogram())),
            steady_from: AtomicU64::new(u64::MAX),
        }
    }
}

impl Latencies {
    fn record(&self, published_ns: u64, micros: u64) {
        let steady = published_ns >= self.0.steady_from.load(Ordering::Relaxed);
        let mut histograms = self.lock();
        histograms.0.saturating_record(micros.max(1));
        if steady {
            histograms.1.saturating_record(micros.max(1));
        }
    }

    /// Latencies of messages published from `ns` (since the run began) on
    /// are also kept apart, as [`steady`](Self::steady).
    pub fn steady_from(&self, ns: u64) {
        self.0.steady_from.store(ns, Ordering::Relaxed);
    }

    /// Every latency recorded so far.
    pub fn all(&self) -> Histogram<u64> {
        self.lock().0.clone()
    }

    /// Those after the warm-up set by [`steady_from`](Self::steady_from).
    pub fn steady(&self) -> Histogram<u64> {
        self.lock().1.clone()
    }

    /// Whether `self` and `other` are one record (clones of each other).
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Histogram<u64>, Histogram<u64>)> {
        // A panic while recording leaves counts, not a broken invariant.
        self.0
            .histograms
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One subscriber's deliveries.
pub struct Received {
    /// Messages expected (0: unknown until publishing ends).
    expected: u64,
    seen: Vec<u64>,
    pub unique: u64,
    pub duplicates: u64,
    /// Where this subscriber's latencies go, with every other's.
    latencies: Latencies,
    /// When the last new message arrived (ns since the run began).
    pub last_at: u64,
    /// Per message, when a known number are expected: (published, received)
    /// in ns since the run began, indexed by `seq`.
    pub arrivals: Vec<(u64, u64)>,
    progress: Arc<AtomicU64>,
}

impl Received {
    pub fn new(expected: u64, latencies: Latencies, progress: Arc<AtomicU64>) -> Self {
        Self {
            expected,
            seen: Vec::new(),
            unique: 0,
            duplicates: 0,
            latencies,
            last_at: 0,
            arrivals: Vec::new(),
            progress,
        }
    }

    pub fn record(&mut self, seq: u64, published_ns: u64, now_ns: u64) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & (1 << bit) != 0 {
            self.duplicates += 1;
            return;
        }
        self.seen[word] |= 1 << bit;
        self.unique += 1;
        self.last_at = now_ns;
        if seq < self.expected {
            if self.arrivals.len() <= seq as usize {
                self.arrivals.resize(seq as usize + 1, (0, 0));
            }
            self.arrivals[seq as usize] = (published_ns, now_ns);
        }
        let micros = now_ns.saturating_sub(published_ns) / 1000;
        self.latencies.record(published_ns, micros);
        self.progress.fetch_add(1, Ordering::Relaxed);
    }

    /// Where this subscriber's latencies are recorded.
    pub fn latencies(&self) -> &Latencies {
        &self.latencies
    }

    /// True once every expected message arrived.
    pub fn done(&self) -> bool {
        self.expected > 0 && self.unique >= self.expected
    }
}

/// The median over messages of the time from a message's publish until
/// every subscriber had it, in ms, from each message's (published at, last
/// received at); `None` without messages.
pub fn median_completion_ms(completed: &[(u64, u64)]) -> Option<f64> {
    let mut spans: Vec<u64> = completed
        .iter()
        .map(|(published, last)| last.saturating_sub(*published))
        .collect();
    spans.sort_unstable();
    let n = spans.len();
    (n > 0).then(|| (spans[(n - 1) / 2] + spans[n / 2]) as f64 / 2.0 / 1e6)
}

/// The whole run.
#[derive(Default)]
pub struct Report {
    pub scenario: String,
    pub transport: String,
    pub subscribers: usize,
    /// Over HTTP/2 (h2c) rather than HTTP/1.1.
    pub http2: bool,
    /// Subscriber connections (over HTTP/1.1, one per subscriber).
    pub connections: usize,
    pub connected: usize,
    pub failed: usize,
    pub published: u64,
    pub expected: u64,
    pub delivered: u64,
    pub duplicated: u64,
    pub latency: Option<Histogram<u64>>,
    /// Seconds from the first publish to the last delivery.
    pub delivery_span: f64,
    /// Milliseconds from the last publish to the moment every subscriber had everything.
    pub last_ms: Option<f64>,
    /// The median over messages of the milliseconds from a message's
    /// publish until every subscriber had it (fanout and follow, no loss).
    pub median_all_ms: Option<f64>,
    /// Seconds from the first publish until the last was answered.
    pub publish_secs: f64,
    pub rss_per_connection: Option<f64>,
    /// With `--pid`, outside `idle`: the server's CPU time (every thread,
    /// user and system) from just before the first publish until the
    /// drain ended, per message published. Steadier than a latency on a
    /// shared machine, and what a fan-out costs the server's core.
    pub server_cpu_ms_per_message: Option<f64>,
    pub connect_secs: f64,
}

impl Report {
    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.delivered)
    }

    pub fn deliveries_per_second(&self) -> f64 {
        if self.delivery_span > 0.0 {
            self.delivered as f64 / self.delivery_span
        } else {
            0.0
        }
    }

    pub fn publishes_per_second(&self) -> f64 {
        if self.publish_secs > 0.0 {
            self.published as f64 / self.publish_secs
        } else {
            0.0
        }
    }

    fn ms(&self, quantile: f64) -> f64 {
        self.latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0.0, |h| h.value_at_quantile(quantile) as f64 / 1000.0)
    }

    pub fn human(&self) -> String {
        let mut out = format!(
            "scenario {} over {} on {}: {} subscribers on {} connections ({} connected, {} failed) in {:.2} s\n",
            self.scenario,
            self.transport,
            if self.http2 { "HTTP/2" } else { "HTTP/1.1" },
            self.subscribers,
            self.connections,
            self.connected,
            self.failed,
            self.connect_secs
        );
        if let Some(rss) = self.rss_per_connection {
            let per = if self.http2 { "stream" } else { "connection" };
            out += &format!("server memory per {per}: {rss:.0} bytes\n");
        }
        if self.published > 0 {
            out += &format!(
                "published {}; delivered {}/{}; lost {}; duplicated {}\n\
                 latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}\n\
                 deliveries per second: {:.0}; publishes per second: {:.0}\n",
                self.published,
                self.delivered,
                self.expected,
                self.lost(),
                self.duplicated,
                self.ms(0.5),
                self.ms(0.9),
                self.ms(0.99),
                self.ms(1.0),
                self.deliveries_per_second(),
                self.publishes_per_second(),
            );
            match self.last_ms {
                Some(ms) => {
                    out += &format!(
                        "every subscriber had the last message {ms:.1} ms after it was published\n"
                    )
                }
                None => out += "not every subscriber had every message before the drain ended\n",
            }
            if let Some(ms) = self.median_all_ms {
                out += &format!(
                    "median over messages of the time until every subscriber had it: {ms:.1} ms\n"
                );
            }
            if let Some(ms) = self.server_cpu_ms_per_message {
                out += &format!("server CPU per message: {ms:.2} ms\n");
            }
        }
        out
    }

    /// The report as one JSON object (what `bench/compare.sh` reads).
    pub fn json(&self) -> String {
        serde_json::json!({
            "scenario": self.scenario,
            "transport": self.transport,
            "subscribers": self.subscribers,
            "http2": self.http2,
            "connections": self.connections,
            "connected": self.connected,
            "failed": self.failed,
            "published": self.published,
            "expected": self.expected,
            "delivered": self.delivered,
            "lost": self.lost(),
            "duplicated": self.duplicated,
            "p50_ms": self.ms(0.5),
            "p90_ms": self.ms(0.9),
            "p99_ms": self.ms(0.99),
            "max_ms": self.ms(1.0),
            "deliveries_per_s": self.deliveries_per_second(),
            "last_ms": self.last_ms,
            "median_all_ms": self.median_all_ms,
            "publishes_per_s": self.publishes_per_second(),
            "rss_per_conn": self.rss_per_connection,
            "server_cpu_ms_per_msg": self.server_cpu_ms_per_message,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn median_over_messages_of_the_last_arrival() {
        assert_eq!(super::median_completion_ms(&[]), None);
        // Spans of 3, 1 and 2 ms: the median is 2.
        let odd = [(0, 3_000_000), (10, 1_000_010), (5, 2_000_005)];
        assert_eq!(super::median_completion_ms(&odd), Some(2.0));
        let even = [(0, 1_000_000), (0, 4_000_000)];
        assert_eq!(super::median_completion_ms(&even), Some(2.5));
    }

    #[test]
    fn subscribers_record_into_one_histogram() {
        use super::{Latencies, Received};
        let progress = std::sync::Arc::default();
        let shared = Latencies::default();
        let mut one = Received::new(2, shared.clone(), std::sync::Arc::clone(&progress));
        let mut two = Received::new(2, shared.clone(), std::sync::Arc::clone(&progress));
        // From 10 ms on, latencies also count as steady.
        shared.steady_from(10_000_000);
        one.record(0, 0, 3_000_000);
        one.record(0, 0, 3_000_000); // a duplicate: not recorded again
        one.record(1, 10_000_000, 11_000_000);
        two.record(0, 0, 5_000_000);
        let all = shared.all();
        assert_eq!(all.len(), 3);
        assert_eq!(shared.steady().len(), 1);
        assert_eq!(all.value_at_quantile(1.0) / 1000, 5); // ms, within 0.1%
        assert_eq!(one.duplicates, 1);
        assert_eq!(progress.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert!(one.latencies().same(two.latencies()));
        assert!(!shared.same(&Latencies::default()));
    }
}
