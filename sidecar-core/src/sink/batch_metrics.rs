//! The metrics every batch-at-a-time sink (redis, syslog) keeps, one family each labelled
//! `sink`, named `forwarder_<protocol>_…` so each protocol's series stay apart.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

/// The families of one protocol's sinks.
pub(crate) struct BatchFamilies {
    protocol: &'static str,
    records: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    batches: Family<Labels, Counter>,
    failures: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
}

impl BatchFamilies {
    /// Empty families for `protocol` (`redis`, `syslog`).
    pub(crate) fn new(protocol: &'static str) -> Self {
        Self {
            protocol,
            records: Family::default(),
            bytes: Family::default(),
            batches: Family::default(),
            failures: Family::default(),
            // 100 µs to ~3 s per batch: loopback to a distant, busy server.
            duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0001, 2.0, 15))
            }),
        }
    }

    /// Registers the families in `registry`; `bytes_help` says what the protocol counts as bytes.
    pub(crate) fn register(&self, registry: &mut Registry, bytes_help: &str) {
        let p = self.protocol;
        registry.register(
            format!("forwarder_{p}_sent_records"),
            format!("Records a {p} sink delivered"),
            self.records.clone(),
        );
        registry.register(
            format!("forwarder_{p}_sent_bytes"),
            bytes_help,
            self.bytes.clone(),
        );
        registry.register(
            format!("forwarder_{p}_batches"),
            format!("Batches a {p} sink delivered"),
            self.batches.clone(),
        );
        registry.register(
            format!("forwarder_{p}_failures"),
            format!("Failed attempts of a {p} sink (each batch is retried)"),
            self.failures.clone(),
        );
        registry.register(
            format!("forwarder_{p}_batch_duration_seconds"),
            format!("Time a {p} sink took to deliver a batch"),
            self.duration.clone(),
        );
    }

    /// The handles of the sink called `name`.
    pub(crate) fn for_sink(&self, name: &str) -> BatchMetrics {
        let label = vec![("sink".to_owned(), name.to_owned())];
        BatchMetrics {
            records: self.records.get_or_create(&label).clone(),
            bytes: self.bytes.get_or_create(&label).clone(),
            batches: self.batches.get_or_create(&label).clone(),
            failures: self.failures.get_or_create(&label).clone(),
            duration: self.duration.get_or_create(&label).clone(),
        }
    }
}

/// The metric handles of one sink.
pub(crate) struct BatchMetrics {
    pub(crate) records: Counter,
    pub(crate) bytes: Counter,
    pub(crate) batches: Counter,
    pub(crate) failures: Counter,
    pub(crate) duration: Histogram,
}
