//! The splunk_hec sink: batches of events to Splunk's HTTP Event Collector
//! (`/services/collector/event`), `Authorization: Splunk <token>` from a mounted Secret, index,
//! source, sourcetype and host per record from templates, and optionally the indexer
//! acknowledgement: the forwarder's position then advances only over events Splunk says it has
//! indexed.
//!
//! Easy to get wrong: what a refusal covers. HEC reads a batch in order and stops at the first
//! event it cannot take, naming it (`invalid-event-number`, counted from 0): the events before
//! it are in, so they must not be sent again, the named one is refused (dead-lettered when the
//! refusal is for good) and the ones after it were never read. A refusal that names the token,
//! the channel or the acknowledgement setting concerns every request alike and is retried, not
//! dead-lettered, like a 401. With acknowledgements, a 200 only means "queued": the events count
//! as delivered once `/services/collector/ack` says `true` for the request's `ackId`; a request
//! not acknowledged within the timeout is sent again, and may then be indexed twice (HEC has no
//! idempotency key).

use std::time::{Duration, Instant};

use reqwest::Url;
use serde::Deserialize;
use tracing::{error, warn};

use super::dead_letter::DeadLetterSpec;
use super::network::{
    Confirmations, Endpoint, EndpointSpec, HttpEndpointFields, ItemResults, NetworkSink,
    NoOtherKeys, Protocol, Reply,
};
use super::template::Template;
use super::{OutRecord, SinkError};
use crate::config::{FieldError, HumanDuration};

/// The header naming the acknowledgement channel.
const CHANNEL_HEADER: &str = "X-Splunk-Request-Channel";

/// `type: splunk_hec` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
pub struct SplunkHecSpec {
    /// Unique name (default `splunk_hec`).
    #[serde(default = "default_name")]
    pub name: String,
    /// The index of each event, a template (default: the token's default index).
    #[serde(default)]
    pub index: Option<String>,
    /// The source of each event, a template (default `{source_file}`).
    #[serde(default = "default_source")]
    pub source: String,
    /// The sourcetype of each event, a template (default: the token's, often `_json`).
    #[serde(default)]
    pub sourcetype: Option<String>,
    /// The host of each event, a template (default: the address the request came from).
    #[serde(default)]
    pub host: Option<String>,
    /// Wait for Splunk's indexer acknowledgement before the position advances (the token
    /// must have it enabled).
    #[serde(default)]
    pub indexer_ack: Option<IndexerAckSpec>,
    /// `url`, `headers`, `gzip`, `auth`, `tls`, `timeouts`, `retry`, `batch`.
    #[serde(flatten)]
    pub endpoint: HttpEndpointFields,
    /// Refuses any other key.
    #[serde(flatten)]
    pub _no_other_keys: NoOtherKeys,
}

/// `indexer_ack:` of the splunk_hec sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexerAckSpec {
    /// How long to wait for a request's acknowledgement before sending it again (default
    /// 300 s: Splunk acknowledges once the events are indexed, which can take minutes when
    /// its queues are full).
    #[serde(default = "default_ack_timeout")]
    pub timeout: HumanDuration,
    /// How often to ask (default 1 s).
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
}

fn default_name() -> String {
    "splunk_hec".into()
}
fn default_source() -> String {
    "{source_file}".into()
}
fn default_ack_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

impl SplunkHecSpec {
    /// The shared network settings.
    pub fn endpoint_spec(&self) -> EndpointSpec<'_> {
        self.endpoint.spec(&self.name)
    }

    /// Checks the templates, the token and the acknowledgement settings.
    ///
    /// # Errors
    /// The field and what is wrong with it.
    pub fn validate(&self) -> Result<(), FieldError> {
        self.endpoint_spec().validate()?;
        self.templates()?;
        if self.endpoint.auth.is_none() {
            return Err(FieldError::new(
                "auth",
                "HEC needs a token: auth: {splunk: {token_file: /path/to/token}}",
            ));
        }
        if let Some(ack) = &self.indexer_ack {
            if ack.poll_interval.0.is_zero() || ack.timeout.0 < ack.poll_interval.0 {
                return Err(FieldError::new(
                    "indexer_ack",
                    "poll_interval must be above 0 and timeout at least poll_interval",
                ));
            }
        }
        Ok(())
    }

    fn templates(&self) -> Result<Templates, FieldError> {
        let parse = |field: &'static str, text: Option<&String>| {
            text.map(|t| Template::parse(t).map_err(|m| FieldError::new(field, m)))
                .transpose()
        };
        Ok(Templates {
            index: parse("index", self.index.as_ref())?,
            source: parse("source", Some(&self.source))?,
            sourcetype: parse("sourcetype", self.sourcetype.as_ref())?,
            host: parse("host", self.host.as_ref())?,
        })
    }

    /// Builds the sink: a new acknowledgement channel per start (what was not acknowledged
    /// before a restart is sent again from the committed position).
    ///
    /// # Errors
    /// When the client or the dead-letter journal cannot be set up.
    pub fn build(&self, dead_letter: &DeadLetterSpec) -> Result<Box<dyn super::Sink>, SinkError> {
        let setup = |message: String| SinkError::Setup {
            sink: self.name.clone(),
            source: message.into(),
        };
        let base = self
            .endpoint
            .url
            .trim_end_matches('/')
            .trim_end_matches("/services/collector/event")
            .trim_end_matches("/services/collector");
        let url = Url::parse(&format!("{base}/services/collector/event"))
            .map_err(|e| setup(format!("url: {e}")))?;
        let mut spec = self.endpoint_spec();
        let ack = match &self.indexer_ack {
            Some(ack) => {
                spec.headers
                    .insert(CHANNEL_HEADER.into(), uuid::Uuid::new_v4().to_string());
                Some(Acknowledgement {
                    url: Url::parse(&format!("{base}/services/collector/ack"))
                        .map_err(|e| setup(format!("url: {e}")))?,
                    timeout: ack.timeout.0,
                    poll_interval: ack.poll_interval.0,
                })
            }
            None => None,
        };
        let protocol = HecProtocol {
            sink: self.name.clone(),
            url,
            templates: self.templates().map_err(|e| setup(e.to_string()))?,
            ack,
            value: String::new(),
        };
        Ok(Box::new(NetworkSink::new(&spec, protocol, dead_letter)?))
    }
}

/// The per-event metadata templates.
#[derive(Debug)]
struct Templates {
    index: Option<Template>,
    source: Option<Template>,
    sourcetype: Option<Template>,
    host: Option<Template>,
}

/// Where and how to ask for acknowledgements.
#[derive(Debug)]
struct Acknowledgement {
    url: Url,
    timeout: Duration,
    poll_interval: Duration,
}

/// The event endpoint's protocol.
#[derive(Debug)]
struct HecProtocol {
    sink: String,
    url: Url,
    templates: Templates,
    ack: Option<Acknowledgement>,
    /// A template's value, reused between records.
    value: String,
}

impl HecProtocol {
    fn encode_event(&mut self, record: &OutRecord<'_>, body: &mut Vec<u8>) {
        body.push(b'{');
        if let Some(time) = record.collected_at().and_then(epoch_seconds) {
            body.extend_from_slice(b"\"time\":");
            body.extend_from_slice(time.as_bytes());
            body.push(b',');
        }
        for (key, template) in [
            ("index", &self.templates.index),
            ("source", &self.templates.source),
            ("sourcetype", &self.templates.sourcetype),
            ("host", &self.templates.host),
        ] {
            let Some(template) = template else { continue };
            self.value.clear();
            template.render(record, &mut self.value, |out, value| {
                out.push_str(value.unwrap_or(""));
            });
            // An empty value leaves the choice to the token's default.
            if !self.value.is_empty() {
                body.push(b'"');
                body.extend_from_slice(key.as_bytes());
                body.extend_from_slice(b"\":");
                serde_json::to_writer(&mut *body, &self.value)
                    .expect("writing to a Vec cannot fail");
                body.push(b',');
            }
        }
        body.extend_from_slice(b"\"event\":");
        if record.is_decoded() {
            body.extend_from_slice(record.raw);
        } else {
            let text = String::from_utf8_lossy(record.raw);
            serde_json::to_writer(&mut *body, &text).expect("writing to a Vec cannot fail");
        }
        body.extend_from_slice(b"}\n");
    }

    /// Reads an `/ack` reply, moving what it confirms out of `pending`.
    fn take_acks(reply: &[u8], pending: &mut Vec<u64>, confirmed: &mut Vec<u64>) -> bool {
        let Ok(reply) = serde_json::from_slice::<AckReply>(reply) else {
            return false;
        };
        pending.retain(|id| {
            let done = reply.acks.get(&id.to_string()).copied().unwrap_or(false);
            if done {
                confirmed.push(*id);
            }
            !done
        });
        true
    }
}

/// `collected_at` (RFC 3339) as HEC's `time`: seconds since the epoch with milliseconds
/// (none before 1970: HEC then stamps the event with its arrival).
fn epoch_seconds(stamp: &str) -> Option<String> {
    let millis = chrono::DateTime::parse_from_rfc3339(stamp)
        .ok()?
        .timestamp_millis();
    (millis >= 0).then(|| format!("{}.{:03}", millis / 1000, millis % 1000))
}

/// HEC's answer to an event request, success or error.
#[derive(Debug, Deserialize)]
struct HecReply {
    #[serde(default)]
    text: String,
    code: u32,
    #[serde(default, rename = "ackId")]
    ack_id: Option<u64>,
    #[serde(default, rename = "invalid-event-number")]
    invalid_event: Option<usize>,
}

/// HEC's answer to `/services/collector/ack`.
#[derive(Debug, Deserialize)]
struct AckReply {
    acks: std::collections::HashMap<String, bool>,
}

/// HEC codes that concern the token, the channel or the acknowledgement setting: every request
/// alike, so retried until an operator fixes them (Splunk docs, "Troubleshoot HTTP Event
/// Collector", status codes).
fn is_setup_code(code: u32) -> bool {
    matches!(code, 1 | 2 | 3 | 4 | 10 | 11 | 14 | 16)
}

/// The HEC error object in a reply's text (`HTTP 503: {…}` or the body itself).
fn hec_error(reason: &str) -> Option<HecReply> {
    serde_json::from_str(&reason[reason.find('{')?..]).ok()
}

impl HecProtocol {
    /// What an error reply means for a request of `count` records.
    fn review_error(&self, status: Option<u16>, reply: Reply, count: usize) -> Reply {
        let (Reply::Refused { reason, .. } | Reply::Unavailable { reason, .. }) = &reply else {
            return reply;
        };
        let Some(e) = hec_error(reason) else {
            return reply;
        };
        let what = format!("HEC code {}: {}", e.code, e.text);
        if is_setup_code(e.code) {
            error!(sink = %self.sink, code = e.code, reason = %e.text, "Splunk refused the request because of the token, channel or acknowledgement settings; records stay in the journal and are retried until this is fixed.");
            return Reply::Unavailable {
                reason: what,
                retry_after: None,
            };
        }
        let Some(stopped_at) = e.invalid_event.filter(|&n| n < count) else {
            return reply;
        };
        let mut items = ItemResults::default();
        match status {
            Some(status) => {
                items.refused.push((stopped_at, status, what.clone()));
                items.retry.extend(
                    (stopped_at + 1..count)
                        .map(|i| (i, format!("after the event Splunk refused ({what})"))),
                );
            }
            None => items
                .retry
                .extend((stopped_at..count).map(|i| (i, what.clone()))),
        }
        Reply::Partial(items)
    }
}

impl Protocol for HecProtocol {
    fn content_type(&self) -> &'static str {
        "application/json"
    }

    fn url(&self) -> &Url {
        &self.url
    }

    fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
        for record in records {
            self.encode_event(record, body);
        }
    }

    fn record_bytes(&self, record: &OutRecord<'_>) -> usize {
        // time, index, source, sourcetype, host and the framing.
        record.raw.len() + 160
    }

    fn review(&mut self, reply: Reply, count: usize) -> Reply {
        match reply {
            Reply::Refused { status, .. } => self.review_error(Some(status), reply, count),
            Reply::Unavailable { .. } => self.review_error(None, reply, count),
            other => other,
        }
    }

    fn accepted(&mut self, reply: &[u8], _count: usize) -> Result<ItemResults, String> {
        if self.ack.is_none() {
            return Ok(ItemResults::default());
        }
        let ack_id = serde_json::from_slice::<HecReply>(reply)
            .ok()
            .and_then(|r| r.ack_id)
            .ok_or_else(|| {
                format!(
                    "Splunk took the events without an ackId although indexer_ack is configured (is indexer acknowledgement enabled for the token?): {}",
                    super::network::excerpt(reply)
                )
            })?;
        Ok(ItemResults {
            awaiting: Some(ack_id),
            ..ItemResults::default()
        })
    }

    fn confirm(&mut self, endpoint: &mut Endpoint, ids: &[u64]) -> Confirmations {
        let Some(ack) = &self.ack else {
            return Confirmations {
                confirmed: ids.to_vec(),
                reason: String::new(),
            };
        };
        let deadline = Instant::now() + ack.timeout;
        let mut pending = ids.to_vec();
        let mut confirmed = Vec::with_capacity(ids.len());
        let mut last_failure = None;
        while !pending.is_empty() {
            if Instant::now() + ack.poll_interval > deadline {
                let reason = format!(
                    "Splunk did not acknowledge {} of {} requests within {}{}",
                    pending.len(),
                    ids.len(),
                    humantime::format_duration(ack.timeout),
                    last_failure
                        .map(|f| format!(" (last ack request: {f})"))
                        .unwrap_or_default()
                );
                warn!(sink = %self.sink, unacknowledged = pending.len(), "{reason}; sending those events again.");
                return Confirmations { confirmed, reason };
            }
            if !endpoint.pause(ack.poll_interval) {
                return Confirmations {
                    confirmed,
                    reason: "shutting down before Splunk acknowledged the events".into(),
                };
            }
            let body = serde_json::to_vec(&serde_json::json!({ "acks": pending }))
                .expect("a list of numbers serialises");
            match endpoint.post(&ack.url, "application/json", body) {
                Reply::Accepted(reply) => {
                    if !Self::take_acks(&reply, &mut pending, &mut confirmed) {
                        last_failure = Some(format!(
                            "unreadable reply {}",
                            super::network::excerpt(&reply)
                        ));
                    }
                }
                Reply::Refused { status, reason } => {
                    last_failure = Some(format!("HTTP {status}: {reason}"));
                }
                Reply::Unavailable { reason, .. } => last_failure = Some(reason),
                Reply::Partial(_) => {}
            }
        }
        Confirmations {
            confirmed,
            reason: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protocol(spec: &str) -> HecProtocol {
        let spec: SplunkHecSpec = serde_saphyr::from_str(spec).unwrap();
        HecProtocol {
            sink: "t".into(),
            url: Url::parse("http://splunk:8088/services/collector/event").unwrap(),
            templates: spec.templates().unwrap(),
            ack: None,
            value: String::new(),
        }
    }

    fn events(p: &mut HecProtocol, raws: &[&str]) -> Vec<serde_json::Value> {
        let records: Vec<OutRecord<'_>> = raws
            .iter()
            .map(|r| OutRecord::decode(r.as_bytes()))
            .collect();
        let refs: Vec<&OutRecord<'_>> = records.iter().collect();
        let mut body = Vec::new();
        p.encode(&refs, &mut body);
        String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn events_carry_the_record_with_metadata_from_the_templates() {
        let mut p = protocol(
            "url: http://splunk:8088\nindex: 'k8s-{kubernetes.namespace}'\nsourcetype: _json\nhost: '{kubernetes.pod_name}'\n",
        );
        let raw = r#"{"id":"a-1","source_file":"access.log","collected_at":"2026-11-22T10:30:45.123Z","kubernetes":{"namespace":"shop","pod_name":"web-1"}}"#;
        let got = events(&mut p, &[raw, "not json", r#"{"id":"a-2"}"#]);
        assert_eq!(
            got[0],
            serde_json::json!({
                "time": 1795343445.123, "index": "k8s-shop", "source": "access.log",
                "sourcetype": "_json", "host": "web-1",
                "event": serde_json::from_str::<serde_json::Value>(raw).unwrap(),
            })
        );
        assert_eq!(
            got[1],
            serde_json::json!({"index": "k8s-", "sourcetype": "_json", "event": "not json"})
        );
        assert_eq!(
            got[2],
            serde_json::json!({"index": "k8s-", "sourcetype": "_json", "event": {"id": "a-2"}}),
            "missing values leave the key to the token's default"
        );
        assert_eq!(epoch_seconds("1970-01-01T00:00:01.002Z").unwrap(), "1.002");
        assert_eq!(epoch_seconds("1969-12-31T23:59:59.900Z"), None);
    }

    #[test]
    fn a_refusal_naming_an_event_keeps_the_ones_before_and_resends_the_ones_after() {
        let mut p = protocol("url: http://splunk:8088\n");
        let reply = p.review(
            Reply::Refused {
                status: 400,
                reason: r#"{"text":"Incorrect index","code":7,"invalid-event-number":2}"#.into(),
            },
            5,
        );
        let Reply::Partial(items) = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(
            items.refused,
            vec![(2, 400, "HEC code 7: Incorrect index".to_owned())]
        );
        assert_eq!(
            items.retry.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![3, 4]
        );
        let busy = p.review(
            Reply::Unavailable {
                reason: r#"HTTP 503: {"text":"Server is busy","code":9,"invalid-event-number":1}"#
                    .into(),
                retry_after: None,
            },
            3,
        );
        let Reply::Partial(items) = busy else {
            panic!("{busy:?}")
        };
        assert!(items.refused.is_empty());
        assert_eq!(
            items.retry.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn token_and_channel_refusals_are_retried_and_others_keep_the_shared_rules() {
        let mut p = protocol("url: http://splunk:8088\n");
        let reply = p.review(
            Reply::Refused {
                status: 400,
                reason: r#"{"text":"Data channel is missing","code":10}"#.into(),
            },
            2,
        );
        assert!(
            matches!(&reply, Reply::Unavailable { reason, .. } if reason == "HEC code 10: Data channel is missing"),
            "{reply:?}"
        );
        let reply = p.review(
            Reply::Refused {
                status: 400,
                reason: "<html>proxy error</html>".into(),
            },
            2,
        );
        assert!(matches!(reply, Reply::Refused { status: 400, .. }));
    }

    #[test]
    fn acks_move_from_pending_to_confirmed() {
        let mut pending = vec![3, 4, 5];
        let mut confirmed = Vec::new();
        assert!(HecProtocol::take_acks(
            br#"{"acks":{"3":true,"4":false,"5":true}}"#,
            &mut pending,
            &mut confirmed
        ));
        assert_eq!((pending, confirmed), (vec![4], vec![3, 5]));
        assert!(!HecProtocol::take_acks(b"nope", &mut vec![1], &mut vec![]));
    }

    #[test]
    fn settings_are_checked_with_the_field_named() {
        let check = |yaml: &str| {
            serde_saphyr::from_str::<SplunkHecSpec>(yaml)
                .map_err(|e| e.to_string())
                .and_then(|s| s.validate().map_err(|e| e.to_string()))
        };
        let token = "auth: {splunk: {token_file: /t}}\n";
        assert!(check(&format!("url: http://s:8088\n{token}")).is_ok());
        assert!(check("url: http://s:8088\n")
            .unwrap_err()
            .contains("HEC needs a token"));
        assert!(check(&format!("url: http://s:8088\n{token}index: '{{a'\n"))
            .unwrap_err()
            .contains("index"));
        assert!(check(&format!(
            "url: http://s:8088\n{token}indexer_ack: {{timeout: 1s, poll_interval: 2s}}\n"
        ))
        .unwrap_err()
        .contains("indexer_ack"));
        assert!(check(&format!("url: http://s:8088\n{token}acks: true\n")).is_err());
    }
}
