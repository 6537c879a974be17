//! What comet reports through the [`metrics`] crate's facade: subscribers by
//! transport, publishes and their latency, deliveries, gaps by cause, and
//! error answers by code.
//!
//! Nothing is recorded unless the app installs a recorder (such as
//! `metrics-exporter-prometheus`); until then each report is a check of the
//! facade's global recorder, and the hot paths report in batches (a
//! subscription adds its deliveries when it has caught up) or sampled (the
//! publish latency), so that with no recorder they add little to a publish
//! to the memory engine, where timing every publish added several times as
//! much (`bench/MEASUREMENTS.md` has the figures, from `cargo bench -p
//! comet-core --bench fanout`). [`describe`] gives each metric its help
//! text and unit, for exporters that show them.
//! [`Hub::stats`](crate::Hub::stats) stays, for apps without a recorder.

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, Key, Label, Level,
    Metadata, Unit,
};

/// Gauge, label `transport`: subscriptions being served over HTTP, by
/// transport (`sse`, `stream`, `iframe`, `poll`, `jsonp`, or a custom
/// transport's name). Subscriptions an app drives itself with
/// [`Hub::subscribe`](crate::Hub::subscribe) are not in it (`hub.stats()`
/// counts every subscription).
pub const SUBSCRIBERS: &str = "comet_subscribers";
/// Counter: messages published.
pub const PUBLISHES: &str = "comet_publishes_total";
/// Histogram, in seconds: how long a publish took to be stored by the
/// engine (a Redis round trip, on the Redis engine). Sampled: the first
/// publish on each thread and then one in [`PUBLISH_SAMPLE`] are timed,
/// since reading the clock twice would cost a publish to the memory engine
/// a quarter of its time.
pub const PUBLISH_DURATION: &str = "comet_publish_duration_seconds";
/// Counter: items (messages and gaps) handed to subscriptions.
pub const DELIVERIES: &str = "comet_deliveries_total";
/// Counter, label `cause`: gaps handed to subscriptions. `history`: the
/// history no longer held the messages (the count is known); `reset`: the
/// channel started a new epoch, or the cursor was ahead of it (unknown count).
pub const GAPS: &str = "comet_gaps_total";
/// Counter, label `code`: error answers, by the protocol's error code
/// (`bad_cursor`, `too_many_subscribers`, `unavailable`, ...).
pub const ERRORS: &str = "comet_errors_total";

/// Gives each metric its help text and unit, in the installed recorder.
/// Call it once, after installing the recorder.
pub fn describe() {
    describe_gauge!(SUBSCRIBERS, "Subscriptions being served, by transport.");
    describe_counter!(PUBLISHES, "Messages published.");
    describe_histogram!(
        PUBLISH_DURATION,
        Unit::Seconds,
        "Time for the engine to store a published message."
    );
    describe_counter!(
        DELIVERIES,
        "Items (messages and gaps) handed to subscriptions."
    );
    describe_counter!(GAPS, "Gaps handed to subscriptions, by cause.");
    describe_counter!(ERRORS, "Error answers, by protocol error code.");
}

/// One publish in this many (on each thread) is timed for [`PUBLISH_DURATION`].
pub const PUBLISH_SAMPLE: u32 = 16;

/// Counts a publish, and times one in [`PUBLISH_SAMPLE`].
pub(crate) struct PublishTimer(Option<std::time::Instant>);

impl PublishTimer {
    pub(crate) fn start() -> Self {
        thread_local!(static PUBLISHES_HERE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) });
        let n = PUBLISHES_HERE.with(|n| {
            let next = n.get().wrapping_add(1);
            n.set(next);
            next
        });
        // The first on each thread, then one in PUBLISH_SAMPLE.
        Self((n % PUBLISH_SAMPLE == 1).then(std::time::Instant::now))
    }

    /// The publish was stored.
    pub(crate) fn published(self) {
        counter!(PUBLISHES).increment(1);
        if let Some(started) = self.0 {
            metrics::histogram!(PUBLISH_DURATION).record(started.elapsed().as_secs_f64());
        }
    }
}

pub(crate) fn delivered(items: u64) {
    counter!(DELIVERIES).increment(items);
}

pub(crate) fn gap(missed: Option<u64>) {
    let cause = if missed.is_some() { "history" } else { "reset" };
    counter!(GAPS, "cause" => cause).increment(1);
}

/// Counts an error answer under its code (adapters: every error response).
pub fn error(code: &'static str) {
    counter!(ERRORS, "code" => code).increment(1);
}

/// Counts one subscription in [`SUBSCRIBERS`] for as long as it lives
/// (adapters: one per subscribe request served).
pub struct SubscriberGauge(metrics::Gauge);

/// The gauge's keys for the built-in transports, built at compile time:
/// every subscribe registers its gauge, and these cost no allocation.
static BUILTIN_KEYS: [(&str, Key); 5] = [
    ("sse", Key::from_static_parts(SUBSCRIBERS, &SSE)),
    ("stream", Key::from_static_parts(SUBSCRIBERS, &STREAM)),
    ("iframe", Key::from_static_parts(SUBSCRIBERS, &IFRAME)),
    ("poll", Key::from_static_parts(SUBSCRIBERS, &POLL)),
    ("jsonp", Key::from_static_parts(SUBSCRIBERS, &JSONP)),
];
static SSE: [Label; 1] = [Label::from_static_parts("transport", "sse")];
static STREAM: [Label; 1] = [Label::from_static_parts("transport", "stream")];
static IFRAME: [Label; 1] = [Label::from_static_parts("transport", "iframe")];
static POLL: [Label; 1] = [Label::from_static_parts("transport", "poll")];
static JSONP: [Label; 1] = [Label::from_static_parts("transport", "jsonp")];

static METADATA: Metadata<'static> = Metadata::new(module_path!(), Level::INFO, None);

impl SubscriberGauge {
    /// Counts one more subscriber of `transport` (its `transport=` name).
    pub fn new(transport: &str) -> Self {
        let gauge = match BUILTIN_KEYS.iter().find(|(name, _)| *name == transport) {
            Some((_, key)) => metrics::with_recorder(|r| r.register_gauge(key, &METADATA)),
            None => gauge!(SUBSCRIBERS, "transport" => transport.to_owned()),
        };
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for SubscriberGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
