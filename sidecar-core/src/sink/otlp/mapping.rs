//! A request's records as one `ExportLogsServiceRequest`: each record a `LogRecord`, its pod
//! metadata a `Resource` in the OpenTelemetry semantic conventions, one `ResourceLogs` per
//! distinct resource.
//!
//! Easy to get wrong: which fields a LogRecord already carries. `message` is the body,
//! `log_level` the severity, `timestamp` and `collected_at` the two times, `kubernetes` the
//! resource; sending them again as attributes would double every record's size for nothing. A
//! field is consumed only when it was read: a `timestamp` that is not RFC 3339 stays an
//! attribute, so nothing the record said is lost.

use std::collections::HashMap;
use std::fmt;

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Kind;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::record::field;
use crate::sink::OutRecord;

/// The instrumentation scope every record is sent under: this program, at this version.
pub(super) const SCOPE_NAME: &str = "log-sidecars";

/// A string attribute value.
pub(super) fn string_value(text: impl Into<String>) -> AnyValue {
    AnyValue {
        value: Some(Kind::StringValue(text.into())),
    }
}

/// A key and a value, as OTLP writes attributes.
pub(super) fn key_value(key: impl Into<String>, value: AnyValue) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(value),
        key_strindex: 0,
    }
}

/// A JSON value read straight into an `AnyValue`, without a `serde_json::Value` in between:
/// strings, integers (those past `i64::MAX` as doubles), doubles and bools as themselves,
/// objects as kvlists, arrays as arrays, `null` as the empty value.
struct Any(AnyValue);

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

fn any(kind: Kind) -> Any {
    Any(AnyValue { value: Some(kind) })
}

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E>(self, v: &str) -> Result<Any, E> {
        Ok(any(Kind::StringValue(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Any, E> {
        Ok(any(Kind::StringValue(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Any, E> {
        Ok(any(Kind::IntValue(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Any, E> {
        // OTLP integers are signed 64-bit; a larger one keeps its magnitude as a double.
        Ok(any(match i64::try_from(v) {
            Ok(v) => Kind::IntValue(v),
            Err(_) => Kind::DoubleValue(v as f64),
        }))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Any, E> {
        Ok(any(Kind::DoubleValue(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Any, E> {
        Ok(any(Kind::BoolValue(v)))
    }
    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any(AnyValue { value: None }))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(Any(value)) = seq.next_element()? {
            values.push(value);
        }
        Ok(any(Kind::ArrayValue(ArrayValue { values })))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Any, A::Error> {
        let mut values = Vec::with_capacity(map.size_hint().unwrap_or(0));
        while let Some((key, Any(value))) = map.next_entry::<String, Any>()? {
            values.push(key_value(key, value));
        }
        Ok(any(Kind::KvlistValue(KeyValueList { values })))
    }
}

/// A `serde_json::Value` (pod metadata, read once per distinct resource) as an `AnyValue`.
fn any_from_json(value: &Value) -> AnyValue {
    Any::deserialize(value).map_or(AnyValue { value: None }, |Any(v)| v)
}

/// A record's fields, sorted by where they go while the JSON is read once.
#[derive(Default)]
struct Parts<'a> {
    message: Option<AnyValue>,
    line: Option<AnyValue>,
    log_level: Option<AnyValue>,
    timestamp: Option<AnyValue>,
    logged_at: Option<AnyValue>,
    collected_at: Option<AnyValue>,
    /// The pod metadata as written, compared byte for byte to tell resources apart.
    kubernetes: Option<&'a RawValue>,
    attributes: Vec<KeyValue>,
}

/// Attribute names of the semantic conventions for fields every record has
/// (`log.record.uid`, `log.file.name`, `log.iostream`: the log attributes registry).
fn attribute_name(key: String) -> String {
    match key.as_str() {
        field::ID => "log.record.uid".into(),
        field::SOURCE_FILE => "log.file.name".into(),
        field::STREAM => "log.iostream".into(),
        _ => key,
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Parts<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PartsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for PartsVisitor<'a> {
            type Value = Parts<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a record (a JSON object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parts<'a>, A::Error> {
                let mut parts = Parts {
                    attributes: Vec::with_capacity(map.size_hint().unwrap_or(16)),
                    ..Parts::default()
                };
                while let Some(key) = map.next_key::<String>()? {
                    let slot = match key.as_str() {
                        "kubernetes" => {
                            parts.kubernetes = Some(map.next_value()?);
                            continue;
                        }
                        field::MESSAGE => &mut parts.message,
                        field::LINE => &mut parts.line,
                        field::LOG_LEVEL => &mut parts.log_level,
                        field::TIMESTAMP => &mut parts.timestamp,
                        field::LOGGED_AT => &mut parts.logged_at,
                        field::COLLECTED_AT => &mut parts.collected_at,
                        _ => {
                            let Any(value) = map.next_value()?;
                            parts.attributes.push(key_value(attribute_name(key), value));
                            continue;
                        }
                    };
                    *slot = Some(map.next_value::<Any>()?.0);
                }
                Ok(parts)
            }
        }
        deserializer.deserialize_map(PartsVisitor(std::marker::PhantomData))
    }
}

/// OTLP's severity number for a level name, case-insensitively (the Log Data Model's ranges:
/// TRACE 1, DEBUG 5, INFO 9, WARN 13, ERROR 17, FATAL 21); an unknown name is UNSPECIFIED and
/// keeps its text.
pub(super) fn severity_number(level: &str) -> SeverityNumber {
    const NAMES: [(&str, SeverityNumber); 8] = [
        ("TRACE", SeverityNumber::Trace),
        ("DEBUG", SeverityNumber::Debug),
        ("INFO", SeverityNumber::Info),
        ("WARN", SeverityNumber::Warn),
        ("WARNING", SeverityNumber::Warn),
        ("ERROR", SeverityNumber::Error),
        ("FATAL", SeverityNumber::Fatal),
        ("CRITICAL", SeverityNumber::Fatal),
    ];
    let level = level.trim();
    NAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(level))
        .map_or(SeverityNumber::Unspecified, |(_, number)| *number)
}

/// Nanoseconds since the epoch of an RFC 3339 string value; `None` for anything else (and
/// for times before 1970, which OTLP's unsigned field cannot hold).
fn unix_nanos(value: &AnyValue) -> Option<u64> {
    let Some(Kind::StringValue(text)) = &value.value else {
        return None;
    };
    let time = chrono::DateTime::parse_from_rfc3339(text.trim()).ok()?;
    u64::try_from(time.timestamp_nanos_opt()?).ok()
}

/// Now, in nanoseconds since the epoch: the observed time of a record that does not say when
/// it was collected (OTLP asks that the observed time be always set).
pub(super) fn now_nanos() -> u64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

impl Parts<'_> {
    /// Takes `value` as a time when it reads as one; otherwise keeps it as attribute `key`.
    fn time_or_attribute(&mut self, key: &str, value: Option<AnyValue>) -> Option<u64> {
        let value = value?;
        let nanos = unix_nanos(&value);
        if nanos.is_none() {
            self.attributes.push(key_value(key, value));
        }
        nanos
    }

    fn into_log_record(mut self, now: u64) -> LogRecord {
        let (severity_number, severity_text) = match self.log_level.take() {
            Some(AnyValue {
                value: Some(Kind::StringValue(text)),
            }) => (severity_number(&text), text),
            other => {
                if let Some(value) = other {
                    self.attributes.push(key_value(field::LOG_LEVEL, value));
                }
                (SeverityNumber::Unspecified, String::new())
            }
        };
        // The message is the body; the raw line stands in when the rules found no message
        // (a line that failed to parse keeps only `line`).
        let body = match (self.message.take(), self.line.take()) {
            (Some(message), line) => {
                if let Some(line) = line {
                    self.attributes.push(key_value(field::LINE, line));
                }
                Some(message)
            }
            (None, line) => line,
        };
        // The application's time when it said one, else the container runtime's.
        let (timestamp, logged_at) = (self.timestamp.take(), self.logged_at.take());
        let mut time = self.time_or_attribute(field::TIMESTAMP, timestamp);
        match (time, logged_at) {
            (None, logged_at) => time = self.time_or_attribute(field::LOGGED_AT, logged_at),
            (Some(_), Some(logged_at)) => {
                self.attributes.push(key_value(field::LOGGED_AT, logged_at));
            }
            (Some(_), None) => {}
        }
        let collected_at = self.collected_at.take();
        let observed = self.time_or_attribute(field::COLLECTED_AT, collected_at);
        LogRecord {
            time_unix_nano: time.unwrap_or(0),
            observed_time_unix_nano: observed.unwrap_or(now),
            severity_number: severity_number as i32,
            severity_text,
            body,
            attributes: self.attributes,
            ..LogRecord::default()
        }
    }
}

/// A record as a LogRecord, with the raw bytes of its pod metadata (if any) to find its
/// resource by. A line that is not a JSON object is the body as it is. The record is parsed
/// here whatever [`OutRecord::is_decoded`] says: that one fails also for a JSON object whose
/// routing fields have other types (`"log_level": 3`), which is still a record of fields.
fn log_record<'a>(record: &OutRecord<'a>, now: u64) -> (LogRecord, Option<&'a [u8]>) {
    match serde_json::from_slice::<Parts<'a>>(record.raw).ok() {
        Some(mut parts) => {
            let kubernetes = parts.kubernetes.take().map(|raw| raw.get().as_bytes());
            (parts.into_log_record(now), kubernetes)
        }
        None => (
            LogRecord {
                observed_time_unix_nano: now,
                body: Some(string_value(String::from_utf8_lossy(record.raw))),
                ..LogRecord::default()
            },
            None,
        ),
    }
}

/// The semantic conventions' attribute for the name of a pod owner of `kind`.
fn owner_attribute(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Deployment" => "k8s.deployment.name",
        "ReplicaSet" => "k8s.replicaset.name",
        "DaemonSet" => "k8s.daemonset.name",
        "StatefulSet" => "k8s.statefulset.name",
        "Job" => "k8s.job.name",
        "CronJob" => "k8s.cronjob.name",
        _ => return None,
    })
}

/// Adds the owners in `owners` (`{"kind","name"}` objects) as `k8s.<kind>.name`; returns
/// whether each one had a kind the conventions name.
fn add_owners<'v>(
    owners: impl IntoIterator<Item = &'v Value>,
    attributes: &mut Vec<KeyValue>,
) -> bool {
    let mut all_known = true;
    for owner in owners {
        let kind = owner.get("kind").and_then(Value::as_str).unwrap_or("");
        match (
            owner_attribute(kind),
            owner.get("name").and_then(Value::as_str),
        ) {
            (Some(key), Some(name)) => {
                if !attributes.iter().any(|a| a.key == key) {
                    attributes.push(key_value(key, string_value(name)));
                }
            }
            _ => all_known = false,
        }
    }
    all_known
}

/// `registry/org/app:1.4@sha256:…` as `container.image.name` (`registry/org/app`),
/// `container.image.tags` (`["1.4"]`) and `container.image.repo_digests` (the name with the
/// digest), as the container semantic conventions split an image reference.
fn add_image(image: &str, attributes: &mut Vec<KeyValue>) {
    let (reference, digest) = match image.split_once('@') {
        Some((reference, digest)) => (reference, Some(digest)),
        None => (image, None),
    };
    // A ':' after the last '/' starts the tag; one before it is a registry's port.
    let name_starts = reference.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match reference[name_starts..].rfind(':') {
        Some(i) => (
            &reference[..name_starts + i],
            Some(&reference[name_starts + i + 1..]),
        ),
        None => (reference, None),
    };
    attributes.push(key_value("container.image.name", string_value(name)));
    let list = |text: String| AnyValue {
        value: Some(Kind::ArrayValue(ArrayValue {
            values: vec![string_value(text)],
        })),
    };
    if let Some(tag) = tag {
        attributes.push(key_value("container.image.tags", list(tag.to_owned())));
    }
    if let Some(digest) = digest {
        attributes.push(key_value(
            "container.image.repo_digests",
            list(format!("{name}@{digest}")),
        ));
    }
}

/// The resource of a record's `kubernetes` object, in the OpenTelemetry Kubernetes semantic
/// conventions; a key they do not name is kept as `kubernetes.<key>`, so nothing is lost.
/// Then the sink's static attributes, which win over the record's on the same key.
pub(super) fn resource(kubernetes: Option<&[u8]>, fixed: &[KeyValue]) -> Resource {
    let mut attributes = Vec::new();
    let object = match kubernetes.and_then(|raw| serde_json::from_slice::<Value>(raw).ok()) {
        Some(Value::Object(object)) => object,
        // Not pod metadata as the processor writes it (a rule set it to something else):
        // kept as it is.
        Some(other) if !other.is_null() => {
            attributes.push(key_value("kubernetes", any_from_json(&other)));
            Map::new()
        }
        _ => Map::new(),
    };
    let owners_known = add_owners(
        object
            .get("owner_chain")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(object.get("owner")),
        &mut attributes,
    );
    for (key, value) in &object {
        let named = match key.as_str() {
            "namespace" => Some("k8s.namespace.name"),
            "pod_name" => Some("k8s.pod.name"),
            "pod_uid" => Some("k8s.pod.uid"),
            "container_name" => Some("k8s.container.name"),
            "node_name" => Some("k8s.node.name"),
            // Not in the conventions; the name the OpenTelemetry Collector's k8sattributes
            // processor gives it.
            "pod_ip" => Some("k8s.pod.ip"),
            _ => None,
        };
        match (key.as_str(), value) {
            (_, Value::String(text)) if named.is_some() => {
                let key = named.expect("matched as Some");
                attributes.push(key_value(key, string_value(text.as_str())));
            }
            ("container_image", Value::String(image)) => add_image(image, &mut attributes),
            ("labels" | "annotations", Value::Object(map)) => {
                let prefix = if key == "labels" {
                    "k8s.pod.label."
                } else {
                    "k8s.pod.annotation."
                };
                for (name, value) in map {
                    attributes.push(key_value(format!("{prefix}{name}"), any_from_json(value)));
                }
            }
            ("owner" | "owner_chain", _) if owners_known => {}
            _ => attributes.push(key_value(format!("kubernetes.{key}"), any_from_json(value))),
        }
    }
    for fixed in fixed {
        attributes.retain(|a| a.key != fixed.key);
        attributes.push(fixed.clone());
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// The request for `records`: one ResourceLogs per distinct pod metadata, in the order each
/// first appears, each with one ScopeLogs holding its records in their order.
/// `now` is the observed time of records that do not say when they were collected.
pub(super) fn export_request(
    records: &[&OutRecord<'_>],
    fixed: &[KeyValue],
    now: u64,
) -> ExportLogsServiceRequest {
    let mut resource_logs: Vec<ResourceLogs> = Vec::new();
    // Consecutive records nearly always share their pod metadata: compare with the last
    // record's bytes first, and hash only when they differ.
    let mut last: Option<(&[u8], usize)> = None;
    let mut seen: HashMap<&[u8], usize> = HashMap::new();
    for record in records {
        let (log, kubernetes) = log_record(record, now);
        let key = kubernetes.unwrap_or(b"");
        let index = match last {
            Some((bytes, index)) if bytes == key => index,
            _ => *seen.entry(key).or_insert_with(|| {
                resource_logs.push(ResourceLogs {
                    resource: Some(resource(kubernetes, fixed)),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(InstrumentationScope {
                            name: SCOPE_NAME.into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..InstrumentationScope::default()
                        }),
                        ..ScopeLogs::default()
                    }],
                    ..ResourceLogs::default()
                });
                resource_logs.len() - 1
            }),
        };
        last = Some((key, index));
        resource_logs[index].scope_logs[0].log_records.push(log);
    }
    ExportLogsServiceRequest { resource_logs }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The attributes as `key → JSON-ish text`, for comparing.
    fn attributes(list: &[KeyValue]) -> Vec<(String, String)> {
        list.iter()
            .map(|kv| (kv.key.clone(), show(kv.value.as_ref().unwrap())))
            .collect()
    }

    fn show(value: &AnyValue) -> String {
        match &value.value {
            None => "null".into(),
            Some(Kind::StringValue(s)) => format!("{s:?}"),
            Some(Kind::IntValue(i)) => format!("int {i}"),
            Some(Kind::DoubleValue(d)) => format!("double {d}"),
            Some(Kind::BoolValue(b)) => format!("{b}"),
            Some(Kind::ArrayValue(a)) => {
                let items: Vec<String> = a.values.iter().map(show).collect();
                format!("[{}]", items.join(", "))
            }
            Some(Kind::KvlistValue(l)) => {
                let items: Vec<String> = l
                    .values
                    .iter()
                    .map(|kv| format!("{}: {}", kv.key, show(kv.value.as_ref().unwrap())))
                    .collect();
                format!("{{{}}}", items.join(", "))
            }
            Some(other) => format!("{other:?}"),
        }
    }

    fn map_one(raw: &[u8]) -> (LogRecord, Option<Vec<u8>>) {
        let record = OutRecord::decode(raw);
        let (log, k) = log_record(&record, 42);
        (log, k.map(<[u8]>::to_vec))
    }

    fn get<'a>(list: &'a [(String, String)], key: &str) -> Option<&'a str> {
        list.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn severity_comes_from_the_level_name_in_any_case() {
        for (name, number) in [
            ("TRACE", 1),
            ("debug", 5),
            ("Info", 9),
            ("WARN", 13),
            ("warning", 13),
            ("ERROR", 17),
            ("fatal", 21),
            ("CRITICAL", 21),
            (" error ", 17),
            ("NOTICE", 0),
            ("", 0),
        ] {
            assert_eq!(severity_number(name) as i32, number, "{name:?}");
        }
        let (log, _) = map_one(br#"{"log_level":"Verbose","message":"m"}"#);
        assert_eq!(log.severity_number, 0);
        assert_eq!(
            log.severity_text, "Verbose",
            "an unknown level keeps its text"
        );
        let (log, _) = map_one(br#"{"log_level":"warning","message":"m"}"#);
        assert_eq!(
            (log.severity_number, log.severity_text.as_str()),
            (13, "warning")
        );
        // Not a string: no severity, and the value stays an attribute.
        let (log, _) = map_one(br#"{"log_level":3,"message":"m"}"#);
        assert_eq!(log.severity_number, 0);
        assert_eq!(
            get(&attributes(&log.attributes), "log_level"),
            Some("int 3")
        );
    }

    #[test]
    fn fields_become_the_body_times_and_typed_attributes() {
        let raw = br#"{"id":"00ab-10","source_file":"access.log","collected_at":"2026-11-22T10:30:45.123Z","timestamp":"2026-11-22T10:30:44.5+01:00","log_level":"ERROR","log_category":"api","message":"say \"hi\"","stream":"stderr","status_code":503,"ratio":0.25,"ok":false,"big":18446744073709551615,"gone":null,"tags":["a",1],"user":{"id":7,"name":"x"}}"#;
        let (log, kubernetes) = map_one(raw);
        assert_eq!(kubernetes, None);
        assert_eq!(log.body, Some(string_value("say \"hi\"")));
        assert_eq!(log.severity_number, SeverityNumber::Error as i32);
        assert_eq!(log.severity_text, "ERROR");
        assert_eq!(log.time_unix_nano, 1_795_339_844_500_000_000);
        assert_eq!(log.observed_time_unix_nano, 1_795_343_445_123_000_000);
        assert_eq!(
            attributes(&log.attributes),
            [
                ("log.record.uid", "\"00ab-10\""),
                ("log.file.name", "\"access.log\""),
                ("log_category", "\"api\""),
                ("log.iostream", "\"stderr\""),
                ("status_code", "int 503"),
                ("ratio", "double 0.25"),
                ("ok", "false"),
                ("big", "double 18446744073709552000"),
                ("gone", "null"),
                ("tags", "[\"a\", int 1]"),
                ("user", "{id: int 7, name: \"x\"}"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn unreadable_times_stay_attributes_and_the_runtime_time_stands_in() {
        // No readable timestamp: the container runtime's time is the event time.
        let (log, _) = map_one(
            br#"{"timestamp":"22/Nov/2026:10:30:45","logged_at":"2026-11-22T10:30:45.000000001Z","collected_at":"yesterday","line":"raw"}"#,
        );
        assert_eq!(log.time_unix_nano, 1_795_343_445_000_000_001);
        assert_eq!(
            log.observed_time_unix_nano, 42,
            "now, when collected_at is unreadable"
        );
        assert_eq!(
            log.body,
            Some(string_value("raw")),
            "the line when no message"
        );
        let attrs = attributes(&log.attributes);
        assert_eq!(get(&attrs, "timestamp"), Some("\"22/Nov/2026:10:30:45\""));
        assert_eq!(get(&attrs, "collected_at"), Some("\"yesterday\""));
        assert_eq!(get(&attrs, "logged_at"), None, "consumed as the time");
        // A readable timestamp wins, and logged_at stays; with a message, line stays too.
        let (log, _) = map_one(
            br#"{"timestamp":"2026-11-22T10:30:45Z","logged_at":"2026-11-22T10:30:46Z","message":"m","line":"l"}"#,
        );
        assert_eq!(log.time_unix_nano, 1_795_343_445_000_000_000);
        let attrs = attributes(&log.attributes);
        assert_eq!(get(&attrs, "logged_at"), Some("\"2026-11-22T10:30:46Z\""));
        assert_eq!(get(&attrs, "line"), Some("\"l\""));
        // Nothing: unknown event time, observed now.
        let (log, _) = map_one(br#"{"message":"m"}"#);
        assert_eq!((log.time_unix_nano, log.observed_time_unix_nano), (0, 42));
    }

    #[test]
    fn a_line_that_is_not_json_is_the_body() {
        let (log, kubernetes) = map_one(b"plain text \xff");
        assert_eq!(log.body, Some(string_value("plain text \u{fffd}")));
        assert!(log.attributes.is_empty());
        assert_eq!(log.observed_time_unix_nano, 42);
        assert_eq!(kubernetes, None);
        // JSON, but not an object.
        let (log, _) = map_one(b"[1,2]");
        assert_eq!(log.body, Some(string_value("[1,2]")));
    }

    #[test]
    fn pod_metadata_becomes_resource_attributes_in_the_k8s_conventions() {
        let api = br#"{"pod_name":"web-7c9d5-x2p4q","namespace":"demo","node_name":"node-1","pod_ip":"10.1.2.3","service_account":"log-sidecars","pod_uid":"0d1f-uid","labels":{"app":"web","pod-template-hash":"7c9d5"},"annotations":{"team":"logs"},"container_images":{"web":"demo/web:1.4"},"owner":{"kind":"Deployment","name":"web"},"owner_chain":[{"kind":"ReplicaSet","name":"web-7c9d5"},{"kind":"Deployment","name":"web"}]}"#;
        let fixed = [
            key_value("service.name", string_value("shop")),
            key_value("k8s.node.name", string_value("from-config")),
        ];
        let r = resource(Some(api), &fixed);
        let attrs = attributes(&r.attributes);
        for (key, value) in [
            ("k8s.replicaset.name", "\"web-7c9d5\""),
            ("k8s.deployment.name", "\"web\""),
            ("k8s.pod.annotation.team", "\"logs\""),
            ("kubernetes.container_images", "{web: \"demo/web:1.4\"}"),
            ("k8s.pod.label.app", "\"web\""),
            ("k8s.pod.label.pod-template-hash", "\"7c9d5\""),
            ("k8s.namespace.name", "\"demo\""),
            ("k8s.pod.ip", "\"10.1.2.3\""),
            ("k8s.pod.name", "\"web-7c9d5-x2p4q\""),
            ("k8s.pod.uid", "\"0d1f-uid\""),
            ("kubernetes.service_account", "\"log-sidecars\""),
            ("service.name", "\"shop\""),
            ("k8s.node.name", "\"from-config\""),
        ] {
            assert_eq!(get(&attrs, key), Some(value), "{key}: {attrs:?}");
        }
        assert_eq!(attrs.len(), 13, "{attrs:?}");
        let keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
        assert!(!keys.contains(&"kubernetes.owner"), "owners all mapped");

        // Node mode: the record's own container and image; an owner kind without a name in
        // the conventions keeps the original fields.
        let node = br#"{"namespace":"shop","pod_name":"db-0","pod_uid":"u","container_name":"db","node_name":"n","container_image":"registry.local:5000/team/db:15.2@sha256:abc","owner":{"kind":"Rollout","name":"db"},"owner_chain":[{"kind":"Rollout","name":"db"}]}"#;
        let attrs = attributes(&resource(Some(node), &[]).attributes);
        for (key, value) in [
            ("k8s.container.name", "\"db\""),
            ("container.image.name", "\"registry.local:5000/team/db\""),
            ("container.image.tags", "[\"15.2\"]"),
            (
                "container.image.repo_digests",
                "[\"registry.local:5000/team/db@sha256:abc\"]",
            ),
            ("kubernetes.owner", "{kind: \"Rollout\", name: \"db\"}"),
        ] {
            assert_eq!(get(&attrs, key), Some(value), "{key}: {attrs:?}");
        }
        let mut plain = Vec::new();
        add_image("localhost:5000/app", &mut plain);
        assert_eq!(
            attributes(&plain),
            [(
                "container.image.name".to_owned(),
                "\"localhost:5000/app\"".to_owned()
            )],
            "a registry port is not a tag"
        );
        // No metadata, or null: the static attributes only; something else is kept.
        assert_eq!(resource(None, &fixed).attributes, fixed);
        assert_eq!(resource(Some(b"null"), &fixed).attributes, fixed);
        let odd = attributes(&resource(Some(br#""n/a""#), &[]).attributes);
        assert_eq!(odd, [("kubernetes".to_owned(), "\"n/a\"".to_owned())]);
    }

    #[test]
    fn records_are_grouped_by_resource_in_first_seen_order() {
        let a = br#"{"id":"1","message":"a1","kubernetes":{"pod_name":"a"}}"#;
        let b = br#"{"id":"2","message":"b1","kubernetes":{"pod_name":"b"}}"#;
        let a2 = br#"{"id":"3","message":"a2","kubernetes":{"pod_name":"a"}}"#;
        let none = br#"{"id":"4","message":"n"}"#;
        let raw = b"not json";
        let records: Vec<OutRecord<'_>> = [&a[..], &a2[..], &b[..], &a[..], &none[..], &raw[..]]
            .iter()
            .map(|r| OutRecord::decode(r))
            .collect();
        let refs: Vec<&OutRecord<'_>> = records.iter().collect();
        let request = export_request(&refs, &[], 42);
        /// A resource's attributes and its records' bodies.
        type Group = (Vec<(String, String)>, Vec<String>);
        let groups: Vec<Group> = request
            .resource_logs
            .iter()
            .map(|rl| {
                assert_eq!(rl.scope_logs.len(), 1);
                let scope = rl.scope_logs[0].scope.as_ref().unwrap();
                assert_eq!(scope.name, "log-sidecars");
                assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
                let bodies = rl.scope_logs[0]
                    .log_records
                    .iter()
                    .map(|l| show(l.body.as_ref().unwrap()))
                    .collect();
                (
                    attributes(&rl.resource.as_ref().unwrap().attributes),
                    bodies,
                )
            })
            .collect();
        let pod = |name: &str| vec![("k8s.pod.name".to_owned(), format!("{name:?}"))];
        assert_eq!(
            groups,
            vec![
                (
                    pod("a"),
                    vec!["\"a1\"".into(), "\"a2\"".into(), "\"a1\"".into()]
                ),
                (pod("b"), vec!["\"b1\"".into()]),
                (vec![], vec!["\"n\"".into(), "\"not json\"".into()]),
            ]
        );
    }
}
