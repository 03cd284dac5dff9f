//! The otlp sink: OTLP/HTTP logs, `POST <url>/v1/logs` with an `ExportLogsServiceRequest` in
//! protobuf (default) or OTLP/JSON, built from the published definitions (opentelemetry-proto,
//! encoded by prost or by the crate's serde). Each record is a `LogRecord` (`mapping.rs` says
//! which field goes where); the pod metadata is the resource, in the OpenTelemetry Kubernetes
//! semantic conventions; batching, gzip, retries and dead letters are the shared network
//! sink's.
//!
//! Easy to get wrong: a partial success. An OTLP server may answer 2xx and say in the body that
//! it rejected N of the request's records, without saying which. Dropping N records cannot be
//! done (which ones?), and sending the request again would repeat the ones it took. So every
//! record of that request goes to the dead-letter journal, with the server's count and message
//! as the reason, and `forwarder_sink_otlp_rejected_records_total` counts the N: the journal
//! then also holds records the server did take, which an operator replaying it must expect.

mod mapping;
mod reply;

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message as _;
use reqwest::Url;
use serde::Deserialize;
use tracing::warn;

use super::dead_letter::DeadLetterSpec;
use super::network::{
    EndpointSpec, HttpEndpointFields, ItemResults, NetworkSink, NoOtherKeys, Protocol,
};
use super::{OutRecord, SinkError};
use crate::config::FieldError;
use mapping::{export_request, key_value, now_nanos, string_value};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use reply::{read_reply, PartialSuccess};

/// `type: otlp` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
pub struct OtlpSpec {
    /// Unique name (default `otlp`).
    #[serde(default = "default_name")]
    pub name: String,
    /// `protobuf` (default, `application/x-protobuf`) or `json` (`application/json`, OTLP/JSON).
    #[serde(default)]
    pub encoding: Encoding,
    /// Resource attributes added to every record's resource, e.g. `service.name` or
    /// `k8s.cluster.name`; they win over the ones taken from the record's pod metadata.
    /// Values are strings (quote a version such as `'1.20'`, which YAML reads as 1.2).
    #[serde(default)]
    pub resource: BTreeMap<String, String>,
    /// `url` (the OTLP/HTTP base, e.g. `http://otel-collector:4318`; `/v1/logs` is appended
    /// unless it is there), `headers`, `gzip`, `auth`, `tls`, `timeouts`, `retry`, `batch`.
    #[serde(flatten)]
    pub endpoint: HttpEndpointFields,
    /// Refuses any other key.
    #[serde(flatten)]
    pub _no_other_keys: NoOtherKeys,
}

fn default_name() -> String {
    "otlp".into()
}

/// The body encoding of OTLP/HTTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Binary protobuf, `application/x-protobuf`: smaller, and what every OTLP receiver takes.
    #[default]
    Protobuf,
    /// OTLP/JSON, `application/json`: the protobuf JSON mapping with OTLP's rules (hex ids,
    /// enums as integers, 64-bit integers as strings).
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

impl OtlpSpec {
    /// The shared network settings.
    pub fn endpoint_spec(&self) -> EndpointSpec<'_> {
        self.endpoint.spec(&self.name)
    }

    /// Checks the endpoint and the resource attributes.
    ///
    /// # Errors
    /// The field and what is wrong with it.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.endpoint_spec().validate()?;
        logs_url(&self.endpoint.url).map_err(|m| FieldError::new("url", m))?;
        for key in self.resource.keys() {
            if key.trim().is_empty() {
                return Err(FieldError::new(
                    "resource",
                    "an attribute key is empty (keys such as service.name or k8s.cluster.name)",
                ));
            }
        }
        Ok(())
    }

    /// Builds the sink.
    ///
    /// # Errors
    /// When the client or the dead-letter journal cannot be set up.
    pub fn build(&self, dead_letter: &DeadLetterSpec) -> Result<Box<dyn super::Sink>, SinkError> {
        let url = logs_url(&self.endpoint.url).map_err(|message| SinkError::Setup {
            sink: self.name.clone(),
            source: format!("url: {message}").into(),
        })?;
        let protocol = LogsProtocol {
            url,
            encoding: self.encoding,
            resource: self
                .resource
                .iter()
                .map(|(key, value)| key_value(key.clone(), string_value(value.clone())))
                .collect(),
            sink: self.name.clone(),
            rejected: REJECTED.get_or_create(&sink_label(&self.name)).clone(),
            last_warning: None,
            warned_unreadable: false,
        };
        Ok(Box::new(NetworkSink::new(
            &self.endpoint_spec(),
            protocol,
            dead_letter,
        )?))
    }
}

/// `<url>/v1/logs`, the OTLP/HTTP logs path, unless the URL already ends with it (a receiver
/// behind a proxy path, or a URL copied from an exporter's `logs_endpoint`); a query is kept.
fn logs_url(base: &str) -> Result<Url, String> {
    let mut url = Url::parse(base).map_err(|e| format!("not a URL: {e}"))?;
    let path = url.path().trim_end_matches('/');
    let path = if path.ends_with("/v1/logs") {
        path.to_owned()
    } else {
        format!("{path}/v1/logs")
    };
    url.set_path(&path);
    Ok(url)
}

static REJECTED: LazyLock<Family<Vec<(String, String)>, Counter>> = LazyLock::new(Family::default);

fn sink_label(sink: &str) -> Vec<(String, String)> {
    vec![("sink".to_owned(), sink.to_owned())]
}

/// Registers `forwarder_sink_otlp_rejected_records_total{sink}`.
pub fn register_metrics(registry: &mut Registry) {
    registry.register(
        "forwarder_sink_otlp_rejected_records",
        "Records an OTLP server said it rejected in a partial success (the whole request then goes to the dead-letter journal, as the server does not say which)",
        REJECTED.clone(),
    );
}

/// How often the same partial-success warning (0 rejected, a message) is logged again.
const WARNING_LOG_EVERY: Duration = Duration::from_secs(60);

/// OTLP/HTTP logs export.
#[derive(Debug)]
struct LogsProtocol {
    url: Url,
    encoding: Encoding,
    /// The `resource:` attributes of the config.
    resource: Vec<KeyValue>,
    sink: String,
    rejected: Counter,
    /// The last warning logged and when, so a server that warns on every request is logged
    /// once a minute.
    last_warning: Option<(String, Instant)>,
    warned_unreadable: bool,
}

impl LogsProtocol {
    /// What a partial success means for the request's `count` records (see the module docs).
    fn partial_success(&mut self, partial: PartialSuccess, count: usize) -> ItemResults {
        if partial.rejected <= 0 {
            self.warn_once_a_minute(&partial.message);
            return ItemResults::default();
        }
        let rejected = usize::try_from(partial.rejected).unwrap_or(usize::MAX);
        self.rejected.inc_by(rejected.min(count) as u64);
        let reason = format!(
            "partial success: the server rejected {} of {count} records: {}",
            partial.rejected, partial.message
        );
        // 200: the status the records came back with; the dead-letter entry's reason says
        // what the body said.
        ItemResults {
            refused: (0..count).map(|i| (i, 200, reason.clone())).collect(),
            ..ItemResults::default()
        }
    }

    fn warn_once_a_minute(&mut self, message: &str) {
        let repeat = self
            .last_warning
            .as_ref()
            .is_some_and(|(last, at)| last == message && at.elapsed() < WARNING_LOG_EVERY);
        if !repeat {
            warn!(sink = %self.sink, message, "The OTLP server took every record but sent a warning.");
            self.last_warning = Some((message.to_owned(), Instant::now()));
        }
    }
}

impl Protocol for LogsProtocol {
    fn content_type(&self) -> &'static str {
        self.encoding.content_type()
    }

    fn url(&self) -> &Url {
        &self.url
    }

    fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
        let request = export_request(records, &self.resource, now_nanos());
        match self.encoding {
            Encoding::Protobuf => {
                body.reserve(request.encoded_len());
                request
                    .encode(body)
                    .expect("a Vec grows to any message's size");
            }
            Encoding::Json => serde_json::to_writer(&mut *body, &request)
                .expect("an OTLP message has string keys only, and a Vec takes any write"),
        }
    }

    /// A reply that is neither encoding's response is taken as success: the 2xx status says
    /// the records were taken, and sending them again would repeat them forever.
    fn accepted(&mut self, reply: &[u8], count: usize) -> Result<ItemResults, String> {
        match read_reply(reply, self.encoding) {
            Ok(None) => Ok(ItemResults::default()),
            Ok(Some(partial)) => Ok(self.partial_success(partial, count)),
            Err(e) => {
                if !std::mem::replace(&mut self.warned_unreadable, true) {
                    warn!(sink = %self.sink, error = %e, body = %super::network::excerpt(reply), "The OTLP server answered 2xx with a body that is no ExportLogsServiceResponse; taking the records as delivered (logged once).");
                }
                Ok(ItemResults::default())
            }
        }
    }

    fn record_bytes(&self, record: &OutRecord<'_>) -> usize {
        // Estimates for cutting requests by `batch.max_bytes`: protobuf repeats each key once
        // with a few bytes of framing per field; OTLP/JSON wraps every value in
        // `{"key":…,"value":{"stringValue":…}}`, about twice the record.
        match self.encoding {
            Encoding::Protobuf => record.raw.len() + 64,
            Encoding::Json => 2 * record.raw.len() + 256,
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::{
        ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
    };
    use serde_json::Value;

    use super::*;
    use crate::sink::{ForwarderFile, SinkSpec};

    fn parse(text: &str) -> Result<ForwarderFile, String> {
        let path = std::path::Path::new("forwarder.yaml");
        let f: ForwarderFile = crate::config::parse_text(text, path).map_err(|e| e.to_string())?;
        f.validate(path).map_err(|e| e.to_string())?;
        Ok(f)
    }

    fn spec(text: &str) -> OtlpSpec {
        match parse(text).unwrap().sinks.remove(0) {
            SinkSpec::Otlp(s) => s,
            other => panic!("not an otlp sink: {other:?}"),
        }
    }

    fn protocol(encoding: Encoding, sink: &str) -> LogsProtocol {
        LogsProtocol {
            url: logs_url("http://collector:4318").unwrap(),
            encoding,
            resource: vec![key_value("service.name", string_value("shop"))],
            sink: sink.into(),
            rejected: REJECTED.get_or_create(&sink_label(sink)).clone(),
            last_warning: None,
            warned_unreadable: false,
        }
    }

    #[test]
    fn the_logs_path_is_appended_once() {
        for (base, want) in [
            ("http://c:4318", "http://c:4318/v1/logs"),
            ("http://c:4318/", "http://c:4318/v1/logs"),
            ("https://gw.example/otlp", "https://gw.example/otlp/v1/logs"),
            (
                "https://gw.example/otlp/v1/logs",
                "https://gw.example/otlp/v1/logs",
            ),
            ("http://c:4318/v1/logs/", "http://c:4318/v1/logs"),
            (
                "http://c:4318/x?tenant=a",
                "http://c:4318/x/v1/logs?tenant=a",
            ),
        ] {
            assert_eq!(logs_url(base).unwrap().as_str(), want, "{base}");
        }
        assert!(logs_url("not a url").is_err());
    }

    #[test]
    fn config_is_checked_at_load_naming_the_field() {
        let s = spec("sinks:\n  - {type: otlp, url: 'http://c:4318'}\n");
        assert_eq!(s.name, "otlp");
        assert_eq!(s.encoding, Encoding::Protobuf);
        assert!(s.resource.is_empty());
        let s = spec(
            "sinks:\n  - type: otlp\n    name: traces-backend\n    url: https://c:4318\n    encoding: json\n    gzip: true\n    resource: {service.name: shop, k8s.cluster.name: prod, service.version: '1.20'}\n    batch: {max_records: 500}\n",
        );
        assert_eq!(s.resource["service.version"], "1.20");
        assert_eq!(s.name, "traces-backend");
        assert_eq!(s.encoding, Encoding::Json);
        assert!(s.endpoint.gzip);
        assert_eq!(s.resource["k8s.cluster.name"], "prod");
        assert_eq!(s.endpoint_spec().batch.max_records, 500);

        let err =
            parse("sinks:\n  - {type: otlp, url: 'http://c:4318', encoding: xml}\n").unwrap_err();
        assert!(err.contains("xml") && err.contains("protobuf"), "{err}");
        let err = parse("sinks:\n  - {type: otlp, url: 'http://c:4318', resource: {'': x}}\n")
            .unwrap_err();
        assert!(
            err.starts_with("forwarder.yaml: sinks[0].resource: an attribute key is empty"),
            "{err}"
        );
        // Values are strings: a YAML number must be quoted, or `1.20` would be sent as 1.2.
        let err = parse("sinks:\n  - {type: otlp, url: 'http://c:4318', resource: {v: 1.20}}\n")
            .unwrap_err();
        assert!(err.contains("expected a string"), "{err}");
        let err =
            parse("sinks:\n  - {type: otlp, url: 'http://c:4318', encodng: json}\n").unwrap_err();
        assert!(err.contains("unknown field `encodng`"), "{err}");
        let err = parse("sinks:\n  - {type: otlp, url: 'ftp://c'}\n").unwrap_err();
        assert_eq!(
            err,
            "forwarder.yaml: sinks[0].url: scheme \"ftp\" is not http or https"
        );
        let err = parse("sinks:\n  - {type: otlp}\n").unwrap_err();
        assert!(err.contains("url"), "{err}");
    }

    fn two_records() -> Vec<OutRecord<'static>> {
        [
            &br#"{"id":"a-1","source_file":"app.log","log_level":"INFO","message":"one","n":5,"kubernetes":{"pod_name":"p"}}"#[..],
            &b"raw line"[..],
        ]
        .into_iter()
        .map(OutRecord::decode)
        .collect()
    }

    #[test]
    fn protobuf_bodies_decode_with_the_published_definitions() {
        let records = two_records();
        let refs: Vec<&OutRecord<'_>> = records.iter().collect();
        let mut p = protocol(Encoding::Protobuf, "otlp-unit-pb");
        assert_eq!(p.content_type(), "application/x-protobuf");
        assert_eq!(p.url().as_str(), "http://collector:4318/v1/logs");
        let mut body = Vec::new();
        p.encode(&refs, &mut body);
        let request = ExportLogsServiceRequest::decode(&body[..]).unwrap();
        // The raw line does not say when it was collected: its observed time is the clock's.
        let now = request.resource_logs[1].scope_logs[0].log_records[0].observed_time_unix_nano;
        assert_eq!(request, export_request(&refs, &p.resource, now));
        assert_eq!(request.resource_logs.len(), 2, "a pod, and no metadata");
        let log = &request.resource_logs[0].scope_logs[0].log_records[0];
        assert_eq!(log.severity_number, 9);
        assert_eq!(log.attributes[0].key, "log.record.uid");
        let resource = request.resource_logs[1].resource.as_ref().unwrap();
        assert_eq!(
            resource.attributes, p.resource,
            "the static attributes alone"
        );
    }

    #[test]
    fn json_bodies_follow_the_otlp_json_rules() {
        let raw = br#"{"id":"a-1","collected_at":"2026-11-22T10:30:45.123Z","timestamp":"2026-11-22T10:30:45Z","log_level":"WARNING","message":"one","n":5,"big":9007199254740993,"x":null}"#;
        let records = [OutRecord::decode(raw)];
        let refs: Vec<&OutRecord<'_>> = records.iter().collect();
        let mut p = protocol(Encoding::Json, "otlp-unit-json");
        assert_eq!(p.content_type(), "application/json");
        let mut body = Vec::new();
        p.encode(&refs, &mut body);
        let json: Value = serde_json::from_slice(&body).unwrap();
        let rl = &json["resourceLogs"][0];
        assert_eq!(
            rl["resource"]["attributes"][0],
            serde_json::json!({"key": "service.name", "value": {"stringValue": "shop"}})
        );
        assert_eq!(rl["scopeLogs"][0]["scope"]["name"], "log-sidecars");
        let log = &rl["scopeLogs"][0]["logRecords"][0];
        // 64-bit integers as strings, enums as integers, ids as (empty) hex strings.
        assert_eq!(log["timeUnixNano"], "1795343445000000000");
        assert_eq!(log["observedTimeUnixNano"], "1795343445123000000");
        assert_eq!(log["severityNumber"], 13);
        assert_eq!(log["severityText"], "WARNING");
        assert_eq!(log["body"], serde_json::json!({"stringValue": "one"}));
        assert_eq!(log["traceId"], "");
        assert_eq!(log["spanId"], "");
        let attrs = log["attributes"].as_array().unwrap();
        assert_eq!(
            attrs[1],
            serde_json::json!({"key": "n", "value": {"intValue": "5"}})
        );
        assert_eq!(
            attrs[2],
            serde_json::json!({"key": "big", "value": {"intValue": "9007199254740993"}}),
            "beyond a double's precision, kept exact"
        );
        assert_eq!(
            attrs[3],
            serde_json::json!({"key": "x", "value": {}}),
            "null is the empty AnyValue"
        );
        // And the crate reads its own JSON back to the same message.
        let back: ExportLogsServiceRequest = serde_json::from_slice(&body).unwrap();
        let again = export_request(&refs, &p.resource, 0);
        assert_eq!(back, again);
    }

    #[test]
    fn a_partial_success_dead_letters_the_whole_request_and_counts_the_rejected() {
        let mut p = protocol(Encoding::Protobuf, "otlp-unit-partial");
        let reply = ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "2 records too old".into(),
            }),
        }
        .encode_to_vec();
        let items = p.accepted(&reply, 5).unwrap();
        assert!(items.retry.is_empty());
        assert_eq!(
            items.refused.iter().map(|(i, _, _)| *i).collect::<Vec<_>>(),
            [0, 1, 2, 3, 4]
        );
        let (_, status, reason) = &items.refused[0];
        assert_eq!(*status, 200);
        assert_eq!(
            reason,
            "partial success: the server rejected 2 of 5 records: 2 records too old"
        );
        assert_eq!(p.rejected.get(), 2);
        // More rejected than sent: counted as what was sent.
        let reply = br#"{"partialSuccess":{"rejectedLogRecords":"9","errorMessage":""}}"#;
        let items = p.accepted(reply, 3).unwrap();
        assert_eq!(items.refused.len(), 3);
        assert_eq!(p.rejected.get(), 5);
        // A warning, an empty reply, an unreadable one: all taken.
        let warning = br#"{"partialSuccess":{"errorMessage":"deprecated field"}}"#;
        for body in [&warning[..], b"", b"<html>OK</html>"] {
            let items = p.accepted(body, 4).unwrap();
            assert!(items.refused.is_empty() && items.retry.is_empty());
        }
        assert_eq!(p.rejected.get(), 5);
        assert!(p.warned_unreadable);
        assert_eq!(p.last_warning.as_ref().unwrap().0, "deprecated field");
    }
}
