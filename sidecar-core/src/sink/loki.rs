//! The loki sink: Grafana Loki's push API (`POST /loki/api/v1/push`, JSON body), one stream
//! per distinct label set, timestamps in nanoseconds, entries in time order within a stream.
//!
//! Easy to get wrong: labels. Every distinct label set is a stream Loki indexes, so labels
//! must be few and low-cardinality (namespace, pod, container, source_file, log_level); the
//! rest of the record travels in the line or as structured metadata, never as labels.

use crate::config::FieldError;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write as _;

use reqwest::Url;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::dead_letter::DeadLetterSpec;
use super::network::{EndpointSpec, HttpEndpointFields, NetworkSink, NoOtherKeys, Protocol};
use super::{OutRecord, SinkError};
use crate::record::field;

/// `type: loki` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
pub struct LokiSpec {
    /// Unique name (default `loki`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Record fields that become stream labels when present (default `source_file`,
    /// `log_level`, `log_category`). Keep them low-cardinality.
    #[serde(default = "default_label_fields")]
    pub label_fields: Vec<String>,
    /// Labels with fixed values on every stream, e.g. `namespace`, `pod`, `container`;
    /// a value `${VAR}` is read from the environment at start (the Downward API).
    #[serde(default)]
    pub static_labels: BTreeMap<String, String>,
    /// `line` (default): the whole record as JSON is the log line. `metadata`: the line is the
    /// record's `message` (or its raw `line`), and the other fields are structured metadata
    /// (Loki 3 with `allow_structured_metadata`).
    #[serde(default)]
    pub structured_fields: StructuredFields,
    /// Sent as `X-Scope-OrgID`, for a multi-tenant Loki.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// `url`, `headers`, `gzip`, `auth`, `tls`, `timeouts`, `retry`, `batch`.
    #[serde(flatten)]
    pub endpoint: HttpEndpointFields,
    /// Refuses any other key.
    #[serde(flatten)]
    pub _no_other_keys: NoOtherKeys,
}

/// Where a record's fields go in Loki.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StructuredFields {
    /// The JSON record is the line (query with `| json`).
    #[default]
    Line,
    /// The message is the line; other fields are structured metadata.
    Metadata,
}

fn default_name() -> String {
    "loki".into()
}
fn default_label_fields() -> Vec<String> {
    vec![
        field::SOURCE_FILE.into(),
        field::LOG_LEVEL.into(),
        field::LOG_CATEGORY.into(),
    ]
}

/// Whether `name` is a valid Loki (Prometheus) label name.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with("__")
}

impl LokiSpec {
    /// The shared network settings; the tenant goes in as a header.
    pub fn endpoint_spec(&self) -> EndpointSpec<'_> {
        let mut spec = self.endpoint.spec(&self.name);
        if let Some(tenant) = &self.tenant_id {
            spec.headers.insert("X-Scope-OrgID".into(), tenant.clone());
        }
        spec
    }

    /// Checks label names.
    ///
    /// # Errors
    /// `(field, message)` naming the bad label.
    pub fn validate_labels(&self) -> Result<(), FieldError> {
        for name in &self.label_fields {
            if !is_label_name(name) {
                return Err(FieldError::new(
                    "label_fields",
                    format!("{name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                ));
            }
            if name == field::ID {
                return Err(FieldError::new(
                    "label_fields",
                    "\"id\" is unique per record: as a label it would make one stream per record",
                ));
            }
        }
        for name in self.static_labels.keys() {
            if !is_label_name(name) {
                return Err(FieldError::new(
                    "static_labels",
                    format!("{name:?} is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
                ));
            }
        }
        for (i, name) in self.label_fields.iter().enumerate() {
            if self.static_labels.contains_key(name) || self.label_fields[..i].contains(name) {
                return Err(FieldError::new(
                    "label_fields",
                    format!("{name:?} is named twice (label_fields and static_labels together)"),
                ));
            }
        }
        if self.static_labels.is_empty() && self.label_fields.is_empty() {
            return Err(FieldError::new(
                "label_fields",
                "Loki needs at least one label: set label_fields or static_labels",
            ));
        }
        Ok(())
    }

    /// Builds the sink.
    ///
    /// # Errors
    /// When the client or the dead-letter journal cannot be set up, or a `${VAR}` of a
    /// static label is unset.
    pub fn build(&self, dead_letter: &DeadLetterSpec) -> Result<Box<dyn super::Sink>, SinkError> {
        let setup = |message: String| SinkError::Setup {
            sink: self.name.clone(),
            source: message.into(),
        };
        let url = Url::parse(&format!(
            "{}/loki/api/v1/push",
            self.endpoint.url.trim_end_matches('/')
        ))
        .map_err(|e| setup(e.to_string()))?;
        let mut static_labels = Vec::new();
        for (name, value) in &self.static_labels {
            let value = match value.strip_prefix("${").and_then(|v| v.strip_suffix('}')) {
                Some(var) => std::env::var(var).map_err(|_| {
                    setup(format!(
                        "static_labels.{name}: environment variable {var} is not set"
                    ))
                })?,
                None => value.clone(),
            };
            static_labels.push((name.clone(), value));
        }
        let protocol = PushProtocol {
            url,
            label_fields: self.label_fields.clone(),
            static_labels,
            structured_fields: self.structured_fields,
        };
        Ok(Box::new(NetworkSink::new(
            &self.endpoint_spec(),
            protocol,
            dead_letter,
        )?))
    }
}

/// The push API's JSON protocol.
#[derive(Debug)]
struct PushProtocol {
    url: Url,
    label_fields: Vec<String>,
    static_labels: Vec<(String, String)>,
    structured_fields: StructuredFields,
}

/// One entry of a stream: `[ns, line]` or `[ns, line, {metadata}]`.
type Entry = (i64, String, Option<Map<String, Value>>);

/// A scalar field as a label or metadata value (objects and arrays are left out).
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Nanoseconds since the epoch of `collected_at`, or now when absent or unreadable.
fn timestamp_ns(fields: &Map<String, Value>) -> i64 {
    fields
        .get(field::COLLECTED_AT)
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|t| t.timestamp_nanos_opt())
        .unwrap_or_else(|| {
            chrono::Utc::now()
                .timestamp_nanos_opt()
                .expect("now fits in i64 nanoseconds until 2262")
        })
}

impl PushProtocol {
    fn entry(&self, record: &OutRecord<'_>, fields: &mut Map<String, Value>) -> Entry {
        let ns = timestamp_ns(fields);
        match self.structured_fields {
            StructuredFields::Line => (ns, String::from_utf8_lossy(record.raw).into_owned(), None),
            StructuredFields::Metadata => {
                let line = [field::MESSAGE, field::LINE]
                    .iter()
                    .find_map(|k| fields.remove(*k).and_then(|v| as_text(&v)))
                    .unwrap_or_else(|| String::from_utf8_lossy(record.raw).into_owned());
                let metadata: Map<String, Value> = fields
                    .iter()
                    .filter(|(k, _)| !self.label_fields.contains(k))
                    .filter_map(|(k, v)| Some((k.clone(), Value::String(as_text(v)?))))
                    .collect();
                (ns, line, Some(metadata))
            }
        }
    }

    fn streams(&self, records: &[&OutRecord<'_>]) -> BTreeMap<Vec<(String, String)>, Vec<Entry>> {
        let mut streams: BTreeMap<Vec<(String, String)>, Vec<Entry>> = BTreeMap::new();
        for record in records {
            let mut fields = record.fields();
            let mut labels = self.static_labels.clone();
            for name in &self.label_fields {
                if let Some(value) = fields.get(name).and_then(as_text) {
                    labels.push((name.clone(), value));
                }
            }
            if labels.is_empty() {
                labels.push((field::SOURCE_FILE.into(), "unknown".into()));
            }
            labels.sort();
            let entry = self.entry(record, &mut fields);
            streams.entry(labels).or_default().push(entry);
        }
        for entries in streams.values_mut() {
            // Loki wants each stream in time order; stable, so equal stamps keep journal order.
            entries.sort_by_key(|e| e.0);
        }
        streams
    }
}

/// A string borrowed from the record's bytes when it has no escapes (serde's own `Cow`
/// always copies).
struct Text<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// A scalar JSON value as label text: strings unquoted, numbers and booleans as written.
fn scalar_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'"' => serde_json::from_str::<Text<'_>>(text).ok().map(|t| t.0),
        b'{' | b'[' | b'n' => None,
        _ => Some(Cow::Borrowed(text)),
    }
}

/// The values of the label fields, in `label_fields` order (`None`: absent or not a scalar).
type LabelValues<'a> = Vec<Option<Cow<'a, str>>>;

/// The label fields (in `label_fields` order) and `collected_at` of one record, read without
/// decoding the rest of it.
struct Picked<'a> {
    labels: LabelValues<'a>,
    collected_at: Option<Cow<'a, str>>,
}

/// Reads a record's object keeping only the named fields.
struct Picker<'p> {
    names: &'p [String],
}

impl<'de> DeserializeSeed<'de> for Picker<'_> {
    type Value = Picked<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Picked<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Picker<'_> {
    type Value = Picked<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Picked<'de>, A::Error> {
        let mut picked = Picked {
            labels: vec![None; self.names.len()],
            collected_at: None,
        };
        while let Some(key) = map.next_key::<Text<'de>>()? {
            let key = key.0;
            let wanted = self.names.iter().position(|n| *n == key);
            if wanted.is_none() && key != field::COLLECTED_AT {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let raw: &'de RawValue = map.next_value()?;
            let text = scalar_text(raw);
            match wanted {
                Some(i) => picked.labels[i] = text,
                None => picked.collected_at = text,
            }
        }
        Ok(picked)
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now()
        .timestamp_nanos_opt()
        .expect("now fits in i64 nanoseconds until 2262")
}

impl PushProtocol {
    /// The whole-record-as-line body, written straight from the journal bytes: per record only
    /// the label fields and `collected_at` are read, and the line is the record escaped once.
    fn encode_lines(&self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
        let mut streams: BTreeMap<LabelValues<'_>, Vec<(i64, usize)>> = BTreeMap::new();
        for (i, record) in records.iter().enumerate() {
            let mut de = serde_json::Deserializer::from_slice(record.raw);
            let picked = Picker {
                names: &self.label_fields,
            }
            .deserialize(&mut de)
            .unwrap_or_else(|_| Picked {
                labels: vec![None; self.label_fields.len()],
                collected_at: None,
            });
            let ns = picked
                .collected_at
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .and_then(|t| t.timestamp_nanos_opt())
                .unwrap_or_else(now_ns);
            streams.entry(picked.labels).or_default().push((ns, i));
        }
        let write = |body: &mut Vec<u8>, text: &str| {
            serde_json::to_writer(&mut *body, text).expect("writing to a Vec cannot fail");
        };
        body.extend_from_slice(b"{\"streams\":[");
        for (n, (labels, mut entries)) in streams.into_iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"stream\":{");
            let present = labels
                .iter()
                .zip(&self.label_fields)
                .filter_map(|(value, name)| Some((name.as_str(), value.as_deref()?)));
            let mut any = false;
            for (k, (name, value)) in self
                .static_labels
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .chain(present)
                .enumerate()
            {
                if k > 0 {
                    body.push(b',');
                }
                write(body, name);
                body.push(b':');
                write(body, value);
                any = true;
            }
            if !any {
                // Loki refuses a stream without labels.
                body.extend_from_slice(b"\"source_file\":\"unknown\"");
            }
            body.extend_from_slice(b"},\"values\":[");
            // Loki wants each stream in time order; stable, so equal stamps keep journal order.
            entries.sort_by_key(|e| e.0);
            for (k, (ns, i)) in entries.into_iter().enumerate() {
                if k > 0 {
                    body.push(b',');
                }
                write!(body, "[\"{ns}\",").expect("writing to a Vec cannot fail");
                write(body, &String::from_utf8_lossy(records[i].raw));
                body.push(b']');
            }
            body.extend_from_slice(b"]}");
        }
        body.extend_from_slice(b"]}");
    }
}

impl Protocol for PushProtocol {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn url(&self) -> &Url {
        &self.url
    }

    fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
        if self.structured_fields == StructuredFields::Line {
            return self.encode_lines(records, body);
        }
        let streams: Vec<Value> = self
            .streams(records)
            .into_iter()
            .map(|(labels, entries)| {
                let stream: Map<String, Value> = labels
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                let values: Vec<Value> = entries
                    .into_iter()
                    .map(|(ns, line, metadata)| {
                        let mut entry = vec![Value::String(ns.to_string()), Value::String(line)];
                        if let Some(m) = metadata {
                            entry.push(Value::Object(m));
                        }
                        Value::Array(entry)
                    })
                    .collect();
                serde_json::json!({ "stream": stream, "values": values })
            })
            .collect();
        serde_json::to_writer(&mut *body, &serde_json::json!({ "streams": streams }))
            .expect("writing to a Vec cannot fail");
    }

    fn record_bytes(&self, record: &OutRecord<'_>) -> usize {
        // Quoting the JSON line escapes its quotes; plus the timestamp and framing.
        record.raw.len() * 5 / 4 + 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(structured: StructuredFields) -> PushProtocol {
        PushProtocol {
            url: Url::parse("http://loki:3100/loki/api/v1/push").unwrap(),
            label_fields: vec!["source_file".into(), "log_level".into()],
            static_labels: vec![("namespace".into(), "shop".into())],
            structured_fields: structured,
        }
    }

    fn push(p: &mut PushProtocol, raws: &[&[u8]]) -> Value {
        let records: Vec<OutRecord<'_>> = raws.iter().map(|r| OutRecord::decode(r)).collect();
        let refs: Vec<&OutRecord<'_>> = records.iter().collect();
        let mut body = Vec::new();
        p.encode(&refs, &mut body);
        serde_json::from_slice(&body).unwrap()
    }

    #[test]
    fn records_group_into_labelled_streams_in_time_order() {
        let raws: [&[u8]; 3] = [
            br#"{"id":"1","source_file":"a.log","log_level":"INFO","collected_at":"2026-11-22T10:00:00.002Z"}"#,
            br#"{"id":"2","source_file":"a.log","log_level":"ERROR","collected_at":"2026-11-22T10:00:00.001Z"}"#,
            br#"{"id":"3","source_file":"a.log","log_level":"INFO","collected_at":"2026-11-22T10:00:00.001Z"}"#,
        ];
        let body = push(&mut protocol(StructuredFields::Line), &raws);
        let streams = body["streams"].as_array().unwrap();
        assert_eq!(streams.len(), 2);
        let info = streams
            .iter()
            .find(|s| s["stream"]["log_level"] == "INFO")
            .unwrap();
        assert_eq!(
            info["stream"],
            serde_json::json!({"namespace":"shop","source_file":"a.log","log_level":"INFO"})
        );
        let values = info["values"].as_array().unwrap();
        assert_eq!(values[0][0], "1795341600001000000");
        assert_eq!(values[1][0], "1795341600002000000");
        assert_eq!(values[0][1].as_str().unwrap().as_bytes(), raws[2]);
        assert_eq!(values[0].as_array().unwrap().len(), 2);
    }

    #[test]
    fn metadata_mode_puts_the_message_in_the_line() {
        let raws: [&[u8]; 1] = [
            br#"{"id":"1","source_file":"a.log","log_level":"INFO","message":"hello","status_code":200,"nested":{"x":1}}"#,
        ];
        let body = push(&mut protocol(StructuredFields::Metadata), &raws);
        let entry = &body["streams"][0]["values"][0];
        assert_eq!(entry[1], "hello");
        assert_eq!(entry[2], serde_json::json!({"id":"1","status_code":"200"}));
    }

    #[test]
    fn escaped_and_odd_fields_are_labelled_like_the_full_decode() {
        let raws: [&[u8]; 4] = [
            br#"{"source_file":"a\"b.log","log_level":3,"collected_at":"2026-11-22T10:00:00Z"}"#,
            br#"{"source_file":{"x":1},"log_level":true}"#,
            br#"{"log_level":null,"source_file":"c.log","collected_at":"soon"}"#,
            b"not json",
        ];
        let body = push(&mut protocol(StructuredFields::Line), &raws);
        let mut labels: Vec<Value> = body["streams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stream"].clone())
            .collect();
        labels.sort_by_key(|l| l.to_string());
        let mut expected = vec![
            serde_json::json!({"namespace":"shop"}),
            serde_json::json!({"namespace":"shop","log_level":"true"}),
            serde_json::json!({"namespace":"shop","source_file":"a\"b.log","log_level":"3"}),
            serde_json::json!({"namespace":"shop","source_file":"c.log"}),
        ];
        expected.sort_by_key(|l| l.to_string());
        assert_eq!(labels, expected);
        let lines: Vec<&str> = body["streams"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["values"].as_array().unwrap())
            .map(|e| e[1].as_str().unwrap())
            .collect();
        assert!(lines.contains(&"not json"));
    }

    #[test]
    fn label_names_are_checked() {
        assert!(is_label_name("log_level") && is_label_name("_x1"));
        assert!(!is_label_name("1x") && !is_label_name("a-b") && !is_label_name("__name"));
    }
}
