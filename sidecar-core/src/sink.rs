//! Sinks: where the forwarder delivers processed records.
//!
//! A sink receives a batch and returns only once the batch is safely delivered (durable on
//! disk, printed, or acknowledged by a server). The forwarder then commits the journal
//! position together with every sink's [`Sink::state`], so a sink that keeps files can cut them
//! back to exactly the committed state on restart. Network sinks ([`http`], [`loki`],
//! [`elasticsearch`], [`clickhouse`], [`splunk`], [`otlp`]) share [`network`]: acknowledged
//! requests, retries, and the [`dead_letter`] journal for what a server refuses for good.
//!
//! Easy to get wrong: retries. A failed `send` may have delivered part of the batch; the sink
//! must make the retry of the same batch (and a restart from the last commit) idempotent.

pub mod alerts;
mod batch_metrics;
pub mod clickhouse;
pub mod dead_letter;
pub mod elasticsearch;
pub mod file;
pub mod http;
pub mod loki;
pub mod nats;
pub mod network;
pub mod otlp;
mod owed;
pub mod redis;
pub mod report;
mod runtime;
pub mod splunk;
pub mod syslog;
pub mod template;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::checkpoint::Durability;
use crate::config::{ByteSize, ConfigError, FieldError, HumanDuration};

/// One processed record: its exact journal bytes and the few fields sinks route and count by.
#[derive(Debug)]
pub struct OutRecord<'a> {
    /// The NDJSON line as the processor committed it (without the newline).
    pub raw: &'a [u8],
    meta: RecordMeta<'a>,
    decoded: bool,
}

/// The fields every sink needs, decoded without copying (the rest of the record is skipped).
/// `BorrowCow`: serde alone copies a `Cow` inside an `Option`; this borrows it from the line
/// unless the string has escapes, so a record costs no allocation here.
#[serde_with::serde_as]
#[derive(Debug, Default, Deserialize)]
struct RecordMeta<'a> {
    #[serde_as(as = "Option<serde_with::BorrowCow>")]
    #[serde(borrow, default)]
    source_file: Option<Cow<'a, str>>,
    #[serde_as(as = "Option<serde_with::BorrowCow>")]
    #[serde(borrow, default)]
    log_level: Option<Cow<'a, str>>,
    #[serde(default)]
    processing_error: Option<IgnoredAny>,
    #[serde_as(as = "Option<serde_with::BorrowCow>")]
    #[serde(borrow, default)]
    collected_at: Option<Cow<'a, str>>,
    /// Absent from most records, so no allocation for them.
    #[serde_as(as = "Option<Vec<serde_with::BorrowCow>>")]
    #[serde(borrow, default)]
    matched_alerts: Option<Vec<Cow<'a, str>>>,
}

impl<'a> OutRecord<'a> {
    /// Decodes the routing fields of `raw`. A line that is not a JSON object is still a record
    /// (shipped raw), with `is_decoded` false.
    pub fn decode(raw: &'a [u8]) -> Self {
        // One vectorised UTF-8 check of the whole line, then sonic-rs, which skips the fields
        // it is not asked for with SIMD: serde_json (`from_slice`) reading the 20-odd keys of a
        // record byte by byte and checking each string's UTF-8 on its own was a third of the
        // forwarder (BENCHMARKS.md, "Routing fields"). Same verdicts: see the tests.
        let meta = simdutf8::basic::from_utf8(raw)
            .ok()
            .and_then(|text| sonic_rs::from_str::<RecordMeta<'a>>(text).ok());
        match meta {
            Some(meta) => Self {
                raw,
                meta,
                decoded: true,
            },
            None => Self {
                raw,
                meta: RecordMeta::default(),
                decoded: false,
            },
        }
    }

    /// Whether the line decoded as a JSON object.
    pub fn is_decoded(&self) -> bool {
        self.decoded
    }

    /// The source file name, or `unknown`.
    pub fn source_file(&self) -> &str {
        self.meta.source_file.as_deref().unwrap_or("unknown")
    }

    /// The level the rules gave, if any.
    pub fn log_level(&self) -> Option<&str> {
        self.meta.log_level.as_deref()
    }

    /// When the collector read the line (RFC 3339), if the record says.
    pub fn collected_at(&self) -> Option<&str> {
        self.meta.collected_at.as_deref()
    }

    /// Whether the processor tagged the record as meeting alert `name`'s condition.
    pub fn matched_alert(&self, name: &str) -> bool {
        self.meta
            .matched_alerts
            .as_ref()
            .is_some_and(|names| names.iter().any(|n| n == name))
    }

    /// Whether the record carries a `processing_error` or did not decode.
    pub fn failed(&self) -> bool {
        !self.decoded || self.meta.processing_error.is_some()
    }

    /// Every field, decoded on demand (empty when the line is not a JSON object). For sinks
    /// that look inside a few records only; sinks that ship records whole use `raw`.
    pub fn fields(&self) -> Map<String, Value> {
        serde_json::from_slice(self.raw).unwrap_or_default()
    }
}

/// Why a sink could not take a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Writing a file failed (disk full, permissions); retried.
    #[error("sink {sink}: cannot write {}", .path.display())]
    Io {
        /// The sink's name.
        sink: String,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A sink could not start (client, certificates, credentials).
    #[error("sink {sink}: cannot start")]
    Setup {
        /// The sink's name.
        sink: String,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A server did not take (all of) the batch for now; the rest is sent again later.
    #[error("sink {sink}: {owed} records not delivered to {url} yet: {reason}")]
    Unavailable {
        /// The sink's name.
        sink: String,
        /// The endpoint, without credentials.
        url: String,
        /// Records of the batch still owed.
        owed: usize,
        /// Why (a status and the server's words, a timeout, a connection error).
        reason: String,
    },
    /// Refused records could not be written to the dead-letter journal; retried.
    #[error("sink {sink}: cannot write the dead-letter journal in {}", .dir.display())]
    DeadLetter {
        /// The sink's name.
        sink: String,
        /// The journal's directory.
        dir: PathBuf,
        /// The journal error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A destination for processed records.
pub trait Sink: Send {
    /// The sink's configured name (unique), used in logs, metrics and the checkpoint.
    fn name(&self) -> &str;

    /// Delivers `batch`, returning only once it is acknowledged, or written where
    /// [`Sink::sync`] makes it durable before the commit.
    ///
    /// # Errors
    /// When delivery failed; the same batch is offered again later.
    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError>;

    /// The state to commit with the journal position after a successful `send`.
    fn state(&self) -> Value;

    /// Makes what was sent since the last commit durable; called just before the commit that
    /// records it. Default: nothing to do (`send` returns once the batch is acknowledged).
    ///
    /// # Errors
    /// When it cannot be made durable. The commit does not happen and the forwarder stops: on
    /// restart the sink goes back to its committed state and the batches are sent again.
    fn sync(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Called once the commit that includes the last `send` is durable.
    fn committed(&mut self) {}

    /// How long the commit of a batch this sink took may wait for later batches, so that
    /// one commit (one `sync`, one checkpoint store) covers several. Only a sink that is exact
    /// when batches since its last commit are sent again after a crash may wait: the file sink
    /// cuts its files back to the committed lengths; a network sink commits every batch (the
    /// default, zero), so a crash re-sends at most one.
    fn commit_within(&self) -> Duration {
        Duration::ZERO
    }

    /// Called on every turn of the forwarder loop, including idle ones.
    fn tick(&mut self) {}

    /// How soon `tick` has work to do when no record comes (an idle loop waits no longer).
    /// Default: never on its own.
    fn tick_due_in(&self) -> Option<Duration> {
        None
    }

    /// Called once at shutdown, after the final commit.
    fn close(&mut self) {}

    /// After a failed `send`: how long to wait before offering the batch again, when the sink
    /// knows better than the forwarder's own backoff (a server's `Retry-After`, its own
    /// backoff with jitter). Default: no opinion.
    fn retry_delay(&self) -> Option<Duration> {
        None
    }

    /// Input bytes a batch read for this sink should be allowed to hold, when the sink cuts
    /// its requests bigger than the forwarder's batches (ClickHouse asks for few, large
    /// inserts). Its lane reads the largest of its sinks'. Default: no wish.
    fn batch_bytes(&self) -> usize {
        0
    }

    /// How long to let records gather after a wake-up before reading a batch for this sink
    /// (its lane waits for the longest of its sinks'). Default: none beyond the forwarder's.
    fn linger(&self) -> Duration {
        Duration::ZERO
    }

    /// A token that ends the sink's requests in flight at once, fired when the shutdown
    /// grace period is nearly spent. Default: none (the sink never blocks for long).
    fn cancel_handle(&self) -> Option<crate::signal::CancellationToken> {
        None
    }
}

/// The forwarder's config file (`forwarder.yaml`, mounted from a ConfigMap).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwarderFile {
    /// The periodic report on stdout.
    #[serde(default)]
    pub report: report::ReportSpec,
    /// Further sinks.
    #[serde(default)]
    pub sinks: Vec<SinkSpec>,
    /// Whether sinks advance together (default) or each at its own pace.
    #[serde(default)]
    pub delivery: Delivery,
    /// Where records a server refused for good are kept.
    #[serde(default)]
    pub dead_letter: dead_letter::DeadLetterSpec,
    /// Alert rules to evaluate and where their alerts go.
    #[serde(default)]
    pub alerts: Option<alerts::AlertsSpec>,
}

/// How the positions of several sinks relate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// One position for all sinks: a batch is committed once every sink took it, so a sink
    /// that is down holds the others back (they never run ahead of it).
    #[default]
    AllOrNothing,
    /// One position per sink: a sink that is down falls behind while the others go on; it
    /// catches up from the journal when it is back (the journal keeps what it still needs).
    Decoupled,
}

/// One sink in the config file, chosen by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkSpec {
    /// NDJSON files, one per source or one for all, closed files gzipped.
    File {
        /// Unique name (default `file`).
        #[serde(default = "default_file_name")]
        name: String,
        /// Where the files go.
        directory: PathBuf,
        /// One file per source file (default) or one for all.
        #[serde(default = "default_true")]
        per_source: bool,
        /// A file is closed and a new one started past this size (default 64 MiB).
        #[serde(default = "default_max_file_bytes")]
        max_file_bytes: ByteSize,
        /// gzip closed files (default true).
        #[serde(default = "default_true")]
        compress_closed: bool,
        /// Keep at most this many closed files per source, deleting the oldest (default: keep
        /// all; the volume's `sizeLimit` bounds them).
        #[serde(default)]
        max_closed_files: Option<u64>,
        /// Records are in the files at once; their commit (the fsync of the files and the
        /// forwarder's checkpoint) may wait this long to cover later batches too (default 1s).
        #[serde(default = "default_file_commit_interval")]
        commit_interval: HumanDuration,
    },
    /// `PUBLISH` to a channel and/or `XADD` to a stream (see [`redis::RedisSpec`]).
    Redis(redis::RedisSpec),
    /// RFC 5424 messages over TCP or UDP (see [`syslog::SyslogSpec`]).
    Syslog(syslog::SyslogSpec),
    /// JetStream publishes, exactly once into the stream (see [`nats::NatsSpec`]).
    Nats(nats::NatsSpec),
    /// NDJSON or JSON-array batches POSTed to a URL.
    Http(http::HttpSpec),
    /// Grafana Loki's push API.
    Loki(loki::LokiSpec),
    /// Elasticsearch or OpenSearch `_bulk`.
    Elasticsearch(elasticsearch::ElasticsearchSpec),
    /// ClickHouse `INSERT … FORMAT JSONEachRow` over HTTP (see [`clickhouse::ClickHouseSpec`]).
    Clickhouse(clickhouse::ClickHouseSpec),
    /// OTLP/HTTP logs, protobuf or JSON (see [`otlp::OtlpSpec`]).
    Otlp(otlp::OtlpSpec),
    /// Splunk's HTTP Event Collector (see [`splunk::SplunkHecSpec`]).
    SplunkHec(splunk::SplunkHecSpec),
}

impl SinkSpec {
    /// The sink's unique name.
    pub fn name(&self) -> &str {
        match self {
            SinkSpec::File { name, .. } => name,
            SinkSpec::Http(s) => &s.name,
            SinkSpec::Loki(s) => &s.name,
            SinkSpec::Elasticsearch(s) => &s.name,
            SinkSpec::Clickhouse(s) => &s.name,
            SinkSpec::SplunkHec(s) => &s.name,
            SinkSpec::Otlp(s) => &s.name,
            SinkSpec::Redis(s) => &s.name,
            SinkSpec::Syslog(s) => &s.name,
            SinkSpec::Nats(s) => &s.name,
        }
    }

    /// Checks what the types cannot; the error names the field under the sink.
    fn validate(&self) -> Result<(), FieldError> {
        match self {
            SinkSpec::File {
                max_file_bytes,
                max_closed_files,
                commit_interval,
                ..
            } => {
                if commit_interval.0 > MAX_FILE_COMMIT_INTERVAL {
                    return Err(FieldError::new(
                        "commit_interval",
                        "must be at most 60s: the processed journal's space is freed only by commits",
                    ));
                }
                if max_file_bytes.0 < 1024 {
                    return Err(FieldError::new("max_file_bytes", "must be at least 1KiB"));
                }
                if *max_closed_files == Some(0) {
                    return Err(FieldError::new(
                        "max_closed_files",
                        "must be at least 1 (leave it out to keep every file)",
                    ));
                }
                Ok(())
            }
            SinkSpec::Http(s) => s.endpoint_spec().validate(),
            SinkSpec::Loki(s) => {
                s.endpoint_spec().validate()?;
                s.validate_labels()
            }
            SinkSpec::Elasticsearch(s) => {
                s.endpoint_spec().validate()?;
                s.validate_index().map_err(|m| FieldError::new("index", m))
            }
            SinkSpec::Clickhouse(s) => s.validate(),
            SinkSpec::SplunkHec(s) => s.validate(),
            SinkSpec::Otlp(s) => s.validate(),
            SinkSpec::Redis(s) => s.validate(),
            SinkSpec::Syslog(s) => s.validate(),
            SinkSpec::Nats(s) => s.validate(),
        }
    }
}

fn default_file_name() -> String {
    "file".into()
}
fn default_true() -> bool {
    true
}
fn default_max_file_bytes() -> ByteSize {
    ByteSize(64 << 20)
}
/// The longest a file sink's commit may wait (`commit_interval`).
const MAX_FILE_COMMIT_INTERVAL: Duration = Duration::from_secs(60);

fn default_file_commit_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

impl ForwarderFile {
    /// Loads and checks the config file.
    ///
    /// # Errors
    /// When it cannot be read or parsed, or a value is not acceptable; the message names the
    /// file and the field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let file: Self = crate::config::load_file(path)?;
        file.validate(path)?;
        Ok(file)
    }

    /// Checks values the types cannot.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the field.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check().map_err(|e| e.in_file(path))
    }

    fn check(&self) -> Result<(), FieldError> {
        if self.report.interval.0 < Duration::from_secs(1) {
            return Err(FieldError::new("report.interval", "must be at least 1s"));
        }
        for (name, url) in &self.report.sidecars {
            if !matches!(reqwest::Url::parse(url), Ok(u) if u.scheme() == "http" || u.scheme() == "https")
            {
                return Err(FieldError::new(
                    format!("report.sidecars.{name}"),
                    format!("{url:?} is not an http:// or https:// URL of a /metrics endpoint"),
                ));
            }
        }
        if let Some(spec) = &self.alerts {
            spec.validate().map_err(|e| e.under("alerts"))?;
        }
        let mut names = vec![report::REPORT_SINK_NAME, alerts::ALERTS_SINK_NAME];
        for (i, sink) in self.sinks.iter().enumerate() {
            let name = sink.name();
            if names.contains(&name) {
                return Err(FieldError::new(
                    format!("sinks[{i}].name"),
                    format!(
                        "{name:?} is used twice (names must be unique; \"report\" and \"alerts\" are taken)"
                    ),
                ));
            }
            sink.validate()
                .map_err(|e| e.under(&format!("sinks[{i}]")))?;
            names.push(name);
        }
        Ok(())
    }

    /// The default when no file is mounted: the report every 60 s and no other sink.
    pub fn report_only() -> Self {
        Self {
            report: report::ReportSpec::default(),
            sinks: Vec::new(),
            delivery: Delivery::default(),
            dead_letter: dead_letter::DeadLetterSpec::default(),
            alerts: None,
        }
    }
}

/// Builds the sinks of `file`, each restored from its committed state.
///
/// # Errors
/// When a sink cannot restore its state (e.g. its directory is not writable).
pub fn build(
    file: &ForwarderFile,
    saved: &Map<String, Value>,
    durability: Durability,
) -> Result<Vec<Box<dyn Sink>>, SinkError> {
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if file.report.enabled {
        sinks.push(Box::new(report::ReportSink::new(
            &file.report,
            saved.get(report::REPORT_SINK_NAME),
        )));
    }
    for spec in &file.sinks {
        match spec {
            SinkSpec::File {
                name,
                directory,
                per_source,
                max_file_bytes,
                compress_closed,
                max_closed_files,
                commit_interval,
            } => sinks.push(Box::new(file::FileSink::open(
                file::FileSinkOptions {
                    name: name.clone(),
                    directory: directory.clone(),
                    per_source: *per_source,
                    max_file_bytes: max_file_bytes.0,
                    compress_closed: *compress_closed,
                    max_closed_files: *max_closed_files,
                    commit_interval: commit_interval.0,
                    durability,
                },
                saved.get(name),
            )?)),
            SinkSpec::Redis(spec) => sinks.push(Box::new(redis::RedisSink::open(
                spec.clone(),
                saved.get(&spec.name),
            )?)),
            SinkSpec::Syslog(spec) => sinks.push(Box::new(syslog::SyslogSink::open(
                spec.clone(),
                saved.get(&spec.name),
            )?)),
            SinkSpec::Nats(spec) => sinks.push(Box::new(nats::NatsSink::open(
                spec.clone(),
                &file.dead_letter,
            )?)),
            SinkSpec::Http(s) => sinks.push(s.build(&file.dead_letter)?),
            SinkSpec::Loki(s) => sinks.push(s.build(&file.dead_letter)?),
            SinkSpec::Elasticsearch(s) => sinks.push(s.build(&file.dead_letter)?),
            SinkSpec::Clickhouse(s) => sinks.push(s.build(&file.dead_letter)?),
            SinkSpec::SplunkHec(s) => sinks.push(s.build(&file.dead_letter)?),
            SinkSpec::Otlp(s) => sinks.push(s.build(&file.dead_letter)?),
        }
    }
    if let Some(spec) = &file.alerts {
        sinks.push(Box::new(
            spec.build(&file.dead_letter, saved.get(alerts::ALERTS_SINK_NAME))?,
        ));
    }
    Ok(sinks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `OutRecord::decode` must agree with: serde_json's reading of the same line.
    fn serde_json_verdict(raw: &[u8]) -> Option<(Option<String>, Option<String>, bool)> {
        let meta: RecordMeta<'_> = serde_json::from_slice(raw).ok()?;
        Some((
            meta.source_file.map(Cow::into_owned),
            meta.log_level.map(Cow::into_owned),
            meta.processing_error.is_some(),
        ))
    }

    #[test]
    fn routing_fields_decode_as_serde_json_reads_them() {
        let lines: &[&[u8]] = &[
            br#"{"a":{"b":[1,{"c":"}"}],"d":null},"log_level":"WARN","source_file":"x.log"}"#,
            br#"{"source_file":"we\"ird\u00e9.log","processing_error":"bad","z":-1.5e3}"#,
            br#"{"collected_at":"t","matched_alerts":["a","b"],"source_file":"s"}"#,
            br#"{ "source_file" : "spaced.log" , "n" : true }"#,
            br#"{}"#,
            // Not a record: each is delivered raw and counted as undecodable.
            br#"{"source_file":"x.log"} trailing"#,
            br#"{"n":tru,"source_file":"x.log"}"#,
            br#"{"n":"unterminated,"source_file":"x.log"}"#,
            br#"{"source_file":"x.log","source_file":"y.log"}"#,
            br#"{"source_file":5}"#,
            br#"["source_file","x.log"]"#,
            b"{\"source_file\":\"\xff.log\"}",
            b"{\"n\":\"\xff\",\"source_file\":\"x.log\"}",
            b"plain text",
            b"",
        ];
        for raw in lines {
            let record = OutRecord::decode(raw);
            let ours = record.is_decoded().then(|| {
                (
                    record.meta.source_file.as_deref().map(str::to_owned),
                    record.log_level().map(str::to_owned),
                    record.meta.processing_error.is_some(),
                )
            });
            // Stricter in one way: a line that is not UTF-8 is not JSON (RFC 8259), though
            // serde_json lets such bytes pass in a string it skips.
            let expected = serde_json_verdict(raw).filter(|_| std::str::from_utf8(raw).is_ok());
            assert_eq!(ours, expected, "{}", String::from_utf8_lossy(raw));
        }
        let record =
            OutRecord::decode(br#"{"collected_at":"t","matched_alerts":["a"],"source_file":"s"}"#);
        assert_eq!(record.collected_at(), Some("t"));
        assert!(record.matched_alert("a") && !record.matched_alert("b"));
        assert!(matches!(record.meta.source_file, Some(Cow::Borrowed("s"))));
    }

    #[test]
    fn config_errors_name_the_file_and_field() {
        let path = Path::new("forwarder.yaml");
        let parse = |text: &str| -> Result<ForwarderFile, ConfigError> {
            let f: ForwarderFile = crate::config::parse_text(text, path)?;
            f.validate(path)?;
            Ok(f)
        };
        let err = parse("sinks:\n  - type: carrier_pigeon\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("forwarder.yaml: ") && err.contains("carrier_pigeon"),
            "{err}"
        );
        let err = parse("sinks:\n  - type: file\n    directory: /x\n    max_file_bytes: 10\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "forwarder.yaml: sinks[0].max_file_bytes: must be at least 1KiB"
        );
        let err =
            parse("sinks:\n  - {type: file, directory: /a}\n  - {type: file, directory: /b}\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("sinks[1].name: \"file\" is used twice"),
            "{err}"
        );
        let err = parse("sinks:\n  - type: file\n    directory: /x\n    max_closed_files: 0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("forwarder.yaml: sinks[0].max_closed_files: must be at least 1"),
            "{err}"
        );
        let err = parse("report:\n  interval: 10ms\n")
            .unwrap_err()
            .to_string();
        assert_eq!(err, "forwarder.yaml: report.interval: must be at least 1s");
        let err = parse("report:\n  sidecars:\n    collector: '127.0.0.1:9101'\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "forwarder.yaml: report.sidecars.collector: \"127.0.0.1:9101\" is not an http://"
            ),
            "{err}"
        );
        for kind in ["http", "loki", "elasticsearch"] {
            let ok = parse(&format!(
                "sinks:\n  - type: {kind}\n    url: 'http://x:1'\n    gzip: true\n    \
                 headers: {{X-A: b}}\n    timeouts: {{connect: 2s}}\n    batch: {{max_records: 7}}\n"
            ))
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
            assert_eq!(ok.sinks[0].name(), kind);
            let err = parse(&format!(
                "sinks:\n  - type: {kind}\n    url: 'http://x:1'\n    timeout: {{connect: 2s}}\n"
            ))
            .unwrap_err()
            .to_string();
            assert!(err.contains("unknown field `timeout`"), "{kind}: {err}");
        }
        let err = parse("sinks:\n  - {type: http, url: 'ftp://x'}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "forwarder.yaml: sinks[0].url: scheme \"ftp\" is not http or https"
        );
        let err =
            parse("sinks:\n  - {type: elasticsearch, url: 'http://es:9200', index: 'Logs-%Y'}\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with("forwarder.yaml: sinks[0].index: must be lowercase"),
            "{err}"
        );
        let err = parse("sinks:\n  - {type: loki, url: 'http://loki:3100', label_fields: [id]}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("forwarder.yaml: sinks[0].label_fields: "),
            "{err}"
        );
        let err = parse("sinks:\n  - type: http\n    url: http://x\n    auth: {bearer: {token_file: /a, token_env: B}}\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("forwarder.yaml: sinks[0].auth.bearer: set exactly one"),
            "{err}"
        );
        let err = parse("sinks:\n  - {type: http, url: 'http://x', batch: {max_records: 0}}\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "forwarder.yaml: sinks[0].batch.max_records: must be at least 1"
        );
        let err = parse("sinks:\n  - {type: http, url: 'http://x', gzipp: true}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gzipp"), "{err}");
        let err =
            parse("sinks:\n  - {type: http, url: 'http://x'}\n  - {type: http, url: 'http://y'}\n")
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("sinks[1].name: \"http\" is used twice"),
            "{err}"
        );
        let ok = parse(
            "delivery: decoupled\ndead_letter: {directory: /dl, max_bytes: 1MiB}\nsinks:\n  - type: elasticsearch\n    url: https://es:9200\n    gzip: true\n    auth: {basic: {username: elastic, password_env: ES_PASSWORD}}\n    tls: {ca_file: /ca.pem}\n    batch: {max_records: 500, max_bytes: 5MiB}\n    retry: {initial_backoff: 100ms, max_backoff: 10s}\n    timeouts: {connect: 2s, request: 20s}\n  - type: loki\n    url: http://loki:3100\n    tenant_id: team-a\n    static_labels: {namespace: shop}\n    structured_fields: metadata\n  - type: http\n    url: http://vector:8080/logs\n    format: json_array\n    headers: {X-Source: sidecar}\n",
        )
        .unwrap();
        assert_eq!(ok.delivery, Delivery::Decoupled);
        assert_eq!(ok.sinks.len(), 3);
        assert_eq!(ok.sinks[0].name(), "elasticsearch");
        let ok = parse("report:\n  interval: 5s\nsinks:\n  - type: file\n    directory: /out\n    max_file_bytes: 1MiB\n").unwrap();
        assert_eq!(ok.report.interval.0, Duration::from_secs(5));
    }
}
