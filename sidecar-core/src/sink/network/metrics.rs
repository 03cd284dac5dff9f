//! The network sinks' metrics, labelled `sink`.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Per-sink metrics of the network sinks, labelled `sink`.
#[derive(Debug)]
pub(super) struct NetworkMetrics {
    records: Family<Vec<(String, String)>, Counter>,
    bytes: Family<Vec<(String, String)>, Counter>,
    requests: Family<Vec<(String, String)>, Counter>,
    retries: Family<Vec<(String, String)>, Counter>,
    failures: Family<Vec<(String, String)>, Counter>,
    dead_lettered: Family<Vec<(String, String)>, Counter>,
    latency: Family<Vec<(String, String)>, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 1 ms to ~33 s: loopback to a far, slow cluster.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

pub(super) static METRICS: LazyLock<NetworkMetrics> = LazyLock::new(|| NetworkMetrics {
    records: Family::default(),
    bytes: Family::default(),
    requests: Family::default(),
    retries: Family::default(),
    failures: Family::default(),
    dead_lettered: Family::default(),
    latency: Family::new_with_constructor(latency_histogram),
});

/// Registers the network sinks' metrics (one family each, labelled by sink) in `registry`.
pub fn register_metrics(registry: &mut Registry) {
    let m = &*METRICS;
    registry.register(
        "forwarder_sink_sent_records",
        "Records a network sink's server accepted",
        m.records.clone(),
    );
    registry.register(
        "forwarder_sink_sent_bytes",
        "Request body bytes sent by a network sink (after gzip)",
        m.bytes.clone(),
    );
    registry.register(
        "forwarder_sink_requests",
        "Requests a network sink made",
        m.requests.clone(),
    );
    registry.register(
        "forwarder_sink_retries",
        "Requests or bulk items scheduled again after a retryable failure",
        m.retries.clone(),
    );
    registry.register(
        "forwarder_sink_request_failures",
        "Requests that failed (connection, timeout, or a status other than 2xx)",
        m.failures.clone(),
    );
    registry.register(
        "forwarder_sink_dead_lettered_records",
        "Records a server refused for good, kept in the dead-letter journal",
        m.dead_lettered.clone(),
    );
    registry.register(
        "forwarder_sink_request_duration_seconds",
        "Time from sending a request to its complete reply",
        m.latency.clone(),
    );
}

/// Counter handles of one sink.
pub(super) struct SinkMetrics {
    pub(super) records: Counter,
    pub(super) bytes: Counter,
    pub(super) requests: Counter,
    pub(super) retries: Counter,
    pub(super) failures: Counter,
    pub(super) dead_lettered: Counter,
    pub(super) latency: Histogram,
}

impl SinkMetrics {
    pub(super) fn for_sink(name: &str) -> Self {
        let label = vec![("sink".to_owned(), name.to_owned())];
        let m = &*METRICS;
        Self {
            records: m.records.get_or_create(&label).clone(),
            bytes: m.bytes.get_or_create(&label).clone(),
            requests: m.requests.get_or_create(&label).clone(),
            retries: m.retries.get_or_create(&label).clone(),
            failures: m.failures.get_or_create(&label).clone(),
            dead_lettered: m.dead_lettered.get_or_create(&label).clone(),
            latency: m.latency.get_or_create(&label).clone(),
        }
    }
}
