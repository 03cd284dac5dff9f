//! The elasticsearch sink (OpenSearch speaks the same): the `_bulk` API with one `index`
//! action per record, `_id` = the record id, index names from a date pattern.
//!
//! Easy to get wrong: a 200 reply is not a success. `_bulk` answers 200 with `errors: true`
//! when some items failed; every item's status is read. Items refused for now (429, 5xx) are
//! sent again alone; items refused for good (a mapping error: 400) are dead-lettered. Because
//! `_id` is the record id, sending an item twice (a retry, a restart after kill -9) overwrites
//! the same document instead of adding one.

use std::borrow::Cow;
use std::collections::BTreeMap;

use reqwest::Url;
use serde::de::IgnoredAny;
use serde::Deserialize;

use super::dead_letter::DeadLetterSpec;
use super::network::{
    excerpt, is_retryable, EndpointSpec, HttpEndpointFields, ItemResults, NetworkSink, NoOtherKeys,
    Protocol,
};
use super::{OutRecord, SinkError};

/// `type: elasticsearch` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
pub struct ElasticsearchSpec {
    /// Unique name (default `elasticsearch`).
    #[serde(default = "default_name")]
    pub name: String,
    /// Index name; `%Y`, `%m`, `%d`, `%H` take the record's `collected_at` (UTC) date
    /// (default `logs-%Y.%m.%d`).
    #[serde(default = "default_index")]
    pub index: String,
    /// `url`, `headers`, `gzip`, `auth`, `tls`, `timeouts`, `retry`, `batch`.
    #[serde(flatten)]
    pub endpoint: HttpEndpointFields,
    /// Refuses any other key.
    #[serde(flatten)]
    pub _no_other_keys: NoOtherKeys,
}

fn default_name() -> String {
    "elasticsearch".into()
}
fn default_index() -> String {
    "logs-%Y.%m.%d".into()
}

impl ElasticsearchSpec {
    /// The shared network settings.
    pub fn endpoint_spec(&self) -> EndpointSpec<'_> {
        self.endpoint.spec(&self.name)
    }

    /// Checks the index pattern.
    ///
    /// # Errors
    /// A message saying what is wrong with it.
    pub fn validate_index(&self) -> Result<(), String> {
        IndexPattern::parse(&self.index).map(|_| ())
    }

    /// Builds the sink.
    ///
    /// # Errors
    /// When the client or the dead-letter journal cannot be set up.
    pub fn build(&self, dead_letter: &DeadLetterSpec) -> Result<Box<dyn super::Sink>, SinkError> {
        let setup = |message: String| SinkError::Setup {
            sink: self.name.clone(),
            source: message.into(),
        };
        let url = Url::parse(&format!(
            "{}/_bulk",
            self.endpoint.url.trim_end_matches('/')
        ))
        .map_err(|e| setup(e.to_string()))?;
        let protocol = BulkProtocol {
            url,
            index: IndexPattern::parse(&self.index).map_err(setup)?,
        };
        Ok(Box::new(NetworkSink::new(
            &self.endpoint_spec(),
            protocol,
            dead_letter,
        )?))
    }
}

/// An index name pattern, parsed once.
#[derive(Debug, Clone)]
struct IndexPattern {
    parts: Vec<IndexPart>,
    /// The last `YYYY-MM-DDTHH` prefix seen and the name it gave: consecutive records share
    /// a date, so the name is built once per hour of data, not per record.
    cache: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum IndexPart {
    Text(String),
    /// A byte range of `YYYY-MM-DDTHH`.
    Date(std::ops::Range<usize>),
}

impl IndexPattern {
    fn parse(pattern: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let range = match chars.next() {
                Some('Y') => 0..4,
                Some('m') => 5..7,
                Some('d') => 8..10,
                Some('H') => 11..13,
                Some('%') => {
                    text.push('%');
                    continue;
                }
                other => {
                    return Err(format!(
                        "unknown date field %{} (use %Y, %m, %d, %H)",
                        other.map(String::from).unwrap_or_default()
                    ))
                }
            };
            if !text.is_empty() {
                parts.push(IndexPart::Text(std::mem::take(&mut text)));
            }
            parts.push(IndexPart::Date(range));
        }
        if !text.is_empty() {
            parts.push(IndexPart::Text(text));
        }
        // Elasticsearch's rules for index names (docs: "Create index API", path parameters).
        let sample = Self {
            parts: parts.clone(),
            cache: None,
        }
        .render("2026-01-01T00");
        if sample.is_empty() || sample.len() > 255 {
            return Err("must give a name of 1 to 255 bytes".into());
        }
        if sample.starts_with(['-', '_', '+']) || sample == "." || sample == ".." {
            return Err("must not start with -, _ or + (nor be . or ..)".into());
        }
        if sample.chars().any(|c| {
            c.is_uppercase()
                || matches!(
                    c,
                    '\\' | '/' | '*' | '?' | '"' | '<' | '>' | '|' | ' ' | ',' | '#' | ':'
                )
        }) {
            return Err("must be lowercase without \\ / * ? \" < > | space , # or :".into());
        }
        Ok(Self { parts, cache: None })
    }

    fn render(&self, date: &str) -> String {
        let mut name = String::new();
        for part in &self.parts {
            match part {
                IndexPart::Text(t) => name.push_str(t),
                IndexPart::Date(range) => name.push_str(&date[range.clone()]),
            }
        }
        name
    }

    /// The index for a record collected at `collected_at` (RFC 3339 UTC).
    fn index_for(&mut self, collected_at: Option<&str>) -> &str {
        let hour = match collected_at {
            Some(t) if t.len() >= 13 && t.is_char_boundary(13) && t.as_bytes()[10] == b'T' => {
                Cow::Borrowed(&t[..13])
            }
            // No usable time: the record is filed under the hour it is sent.
            _ => Cow::Owned(crate::record::timestamp_now()[..13].to_owned()),
        };
        if self.cache.as_ref().is_none_or(|(h, _)| *h != hour) {
            let name = self.render(&hour);
            self.cache = Some((hour.into_owned(), name));
        }
        &self.cache.as_ref().expect("the cache was just filled").1
    }
}

/// The two fields the bulk action line needs, borrowed from the record.
#[derive(Debug, Default, Deserialize)]
struct Keys<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    collected_at: Option<Cow<'a, str>>,
}

/// The `_bulk` protocol.
#[derive(Debug)]
struct BulkProtocol {
    url: Url,
    index: IndexPattern,
}

impl BulkProtocol {
    fn encode_records(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
        for record in records {
            let keys: Keys<'_> = serde_json::from_slice(record.raw).unwrap_or_default();
            let index = self.index.index_for(keys.collected_at.as_deref());
            body.extend_from_slice(b"{\"index\":{\"_index\":");
            serde_json::to_writer(&mut *body, index).expect("writing to a Vec cannot fail");
            if let Some(id) = &keys.id {
                body.extend_from_slice(b",\"_id\":");
                serde_json::to_writer(&mut *body, id).expect("writing to a Vec cannot fail");
            }
            body.extend_from_slice(b"}}\n");
            body.extend_from_slice(record.raw);
            body.push(b'\n');
        }
    }
}

/// The parts of a `_bulk` reply we read.
#[derive(Debug, Deserialize)]
struct BulkReply {
    errors: bool,
    #[serde(default)]
    items: Vec<BTreeMap<String, BulkItem>>,
}

/// Only checks `errors`, skipping the items: the common, all-good case.
#[derive(Debug, Deserialize)]
struct BulkSummary {
    errors: bool,
    #[serde(default, rename = "items")]
    _items: IgnoredAny,
}

#[derive(Debug, Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn item_reason(item: &BulkItem) -> String {
    match &item.error {
        Some(serde_json::Value::Object(e)) => {
            let kind = e.get("type").and_then(|v| v.as_str()).unwrap_or("error");
            let reason = e.get("reason").and_then(|v| v.as_str()).unwrap_or("");
            format!("{kind}: {reason}")
        }
        Some(other) => other.to_string(),
        None => format!("status {}", item.status),
    }
}

/// Sorts the items of a bulk reply into retried and refused, by position.
fn read_bulk_reply(reply: &[u8], count: usize) -> Result<ItemResults, String> {
    let summary: BulkSummary = serde_json::from_slice(reply)
        .map_err(|e| format!("unreadable _bulk reply ({e}): {}", excerpt(reply)))?;
    if !summary.errors {
        return Ok(ItemResults::default());
    }
    let reply: BulkReply = serde_json::from_slice(reply)
        .map_err(|e| format!("unreadable _bulk reply ({e}): {}", excerpt(reply)))?;
    debug_assert!(reply.errors);
    if reply.items.len() != count {
        return Err(format!(
            "_bulk reply has {} items for {count} actions",
            reply.items.len()
        ));
    }
    let mut results = ItemResults::default();
    for (i, item) in reply.items.iter().enumerate() {
        let Some(item) = item.values().next() else {
            return Err(format!("_bulk reply item {i} is empty"));
        };
        match item.status {
            200..=299 => {}
            s if is_retryable(s) => results.retry.push((i, item_reason(item))),
            s => results.refused.push((i, s, item_reason(item))),
        }
    }
    Ok(results)
}

impl Protocol for BulkProtocol {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn url(&self) -> &Url {
        &self.url
    }

    fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
        self.encode_records(records, body);
    }

    fn accepted(&mut self, reply: &[u8], count: usize) -> Result<ItemResults, String> {
        read_bulk_reply(reply, count)
    }

    fn record_bytes(&self, record: &OutRecord<'_>) -> usize {
        // The action line: index name, id and the framing.
        record.raw.len() + 96
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_patterns_take_the_collection_date() {
        let mut p = IndexPattern::parse("logs-%Y.%m.%d").unwrap();
        assert_eq!(
            p.index_for(Some("2026-11-22T10:30:45.123Z")),
            "logs-2026.11.22"
        );
        assert_eq!(
            p.index_for(Some("2026-12-01T00:00:00.000Z")),
            "logs-2026.12.01"
        );
        let mut p = IndexPattern::parse("app-%Y%m%d-%H%%").unwrap();
        assert_eq!(
            p.index_for(Some("2026-11-22T10:30:45.123Z")),
            "app-20261122-10%"
        );
        let today = &crate::record::timestamp_now()[..4];
        let mut p = IndexPattern::parse("logs-%Y").unwrap();
        assert_eq!(p.index_for(None), format!("logs-{today}"));
        assert_eq!(p.index_for(Some("garbage")), format!("logs-{today}"));
    }

    #[test]
    fn bad_index_patterns_say_why() {
        assert!(IndexPattern::parse("logs-%Q").unwrap_err().contains("%Q"));
        assert!(IndexPattern::parse("Logs")
            .unwrap_err()
            .contains("lowercase"));
        assert!(IndexPattern::parse("_x")
            .unwrap_err()
            .contains("must not start"));
        assert!(IndexPattern::parse("a b").is_err());
        assert!(IndexPattern::parse("").is_err());
    }

    #[test]
    fn bulk_bodies_pair_an_index_action_with_each_record() {
        let mut protocol = BulkProtocol {
            url: Url::parse("http://es:9200/_bulk").unwrap(),
            index: IndexPattern::parse("logs-%Y.%m.%d").unwrap(),
        };
        let raws: [&[u8]; 2] = [
            br#"{"id":"00ab-10","collected_at":"2026-11-22T10:30:45.123Z","n":1}"#,
            b"not json",
        ];
        let records: Vec<OutRecord<'_>> = raws.iter().map(|r| OutRecord::decode(r)).collect();
        let refs: Vec<&OutRecord<'_>> = records.iter().collect();
        let mut body = Vec::new();
        protocol.encode(&refs, &mut body);
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[0],
            r#"{"index":{"_index":"logs-2026.11.22","_id":"00ab-10"}}"#
        );
        assert_eq!(lines[1].as_bytes(), raws[0]);
        assert!(lines[2].starts_with(r#"{"index":{"_index":"logs-"#) && !lines[2].contains("_id"));
        assert!(text.ends_with('\n'), "the bulk API needs the final newline");
    }

    #[test]
    fn bulk_replies_are_read_item_by_item() {
        assert!(read_bulk_reply(
            br#"{"took":3,"errors":false,"items":[{"index":{"status":201}}]}"#,
            1
        )
        .unwrap()
        .retry
        .is_empty());
        let reply = br#"{"took":3,"errors":true,"items":[
            {"index":{"_id":"a","status":201}},
            {"index":{"_id":"b","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}},
            {"index":{"_id":"c","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [n]"}}},
            {"index":{"_id":"d","status":503,"error":{"type":"unavailable_shards_exception","reason":"primary shard is not active"}}}
        ]}"#;
        let r = read_bulk_reply(reply, 4).unwrap();
        assert_eq!(
            r.retry.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(r.refused.len(), 1);
        assert_eq!(r.refused[0].0, 2);
        assert_eq!(r.refused[0].1, 400);
        assert_eq!(
            r.refused[0].2,
            "mapper_parsing_exception: failed to parse field [n]"
        );
        assert!(read_bulk_reply(reply, 5)
            .unwrap_err()
            .contains("4 items for 5"));
        assert!(read_bulk_reply(b"<html>", 1)
            .unwrap_err()
            .contains("unreadable"));
    }
}
