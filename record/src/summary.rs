//! One readable summary of a processed record, shared by the forwarder's report and the text
//! form of `forwarder logs` and the query API, so that the same record reads the same way in
//! both: its message when it has one, `GET /users -> 200 2.19ms` for an access record,
//! `job_completed job_type=cleanup …` for an event record.

use serde_json::{Map, Value};

use super::field;

/// What a record's summary says and which of its fields it shows.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The text.
    pub text: String,
    /// The fields the text shows, which a fuller rendering need not repeat.
    pub shown: Vec<&'static str>,
}

/// The details an event record's summary shows after its event name, in this order.
const EVENT_DETAILS: [&str; 7] = [
    "job_type",
    "operation",
    "table",
    "status",
    "execution_time_ms",
    "progress_percent",
    "error",
];

/// The summary of `record`, or `None` when it has neither a message, nor a request, nor an
/// event.
pub fn summarize(record: &Map<String, Value>) -> Option<Summary> {
    let text = |key: &str| record.get(key).and_then(Value::as_str);
    if let Some(message) = text(field::MESSAGE) {
        return Some(Summary {
            text: message.to_owned(),
            shown: vec![field::MESSAGE],
        });
    }
    if let (Some(method), Some(path)) = (text("method"), text("path")) {
        let mut shown = vec!["method", "path"];
        let mut line = format!("{method} {path}");
        if let Some(status) = record.get("status_code") {
            line.push_str(&format!(" -> {}", plain(status)));
            shown.push("status_code");
            if let Some(ms) = record.get("processing_time_ms") {
                line.push_str(&format!(" {}ms", plain(ms)));
                shown.push("processing_time_ms");
            }
        }
        return Some(Summary { text: line, shown });
    }
    let (name_key, event) = match (text("event"), text("type")) {
        (Some(event), _) => ("event", event),
        (None, Some(kind)) => ("type", kind),
        (None, None) => return None,
    };
    let mut shown = vec![name_key];
    let mut line = event.to_owned();
    for key in EVENT_DETAILS {
        if let Some(value) = record.get(key) {
            line.push_str(&format!(" {key}={}", plain(value)));
            shown.push(key);
        }
    }
    Some(Summary { text: line, shown })
}

/// A value as a person writes it: strings without quotes, the rest as JSON.
fn plain(value: &Value) -> String {
    value
        .as_str()
        .map_or_else(|| value.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary_of(json: &str) -> Option<String> {
        let Value::Object(record) = serde_json::from_str(json).unwrap() else {
            unreachable!()
        };
        summarize(&record).map(|s| s.text)
    }

    #[test]
    fn messages_requests_and_events_read_as_a_person_would_write_them() {
        assert_eq!(
            summary_of(r#"{"message":"User 42 not found","method":"GET","path":"/x"}"#).unwrap(),
            "User 42 not found"
        );
        assert_eq!(
            summary_of(
                r#"{"method":"GET","path":"/users","status_code":200,"processing_time_ms":2.19}"#
            )
            .unwrap(),
            "GET /users -> 200 2.19ms"
        );
        assert_eq!(
            summary_of(r#"{"method":"POST","path":"/users","type":"request"}"#).unwrap(),
            "POST /users"
        );
        assert_eq!(
            summary_of(r#"{"event":"job_completed","job_type":"cleanup","status":"completed"}"#)
                .unwrap(),
            "job_completed job_type=cleanup status=completed"
        );
        assert_eq!(summary_of(r#"{"seq":1}"#), None);
    }
}
