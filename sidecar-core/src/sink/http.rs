//! The http sink: POSTs batches of records as NDJSON (or one JSON array) to a URL, for
//! collectors that take plain JSON over HTTP (Vector, Fluent Bit, Logstash, a webhook).
//!
//! Easy to get wrong: the body is the records' journal bytes, written as they are. A record
//! is never re-encoded on the way out, so what the server receives is exactly what the
//! processor committed, and a batch costs two copies (into the body, into gzip), not a parse.

use reqwest::Url;
use serde::Deserialize;

use super::dead_letter::DeadLetterSpec;
use super::network::{EndpointSpec, HttpEndpointFields, NetworkSink, NoOtherKeys, Protocol};
use super::{OutRecord, SinkError};

/// `type: http` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSpec {
    /// Unique name (default `http`).
    #[serde(default = "default_name")]
    pub name: String,
    /// `ndjson` (default, `application/x-ndjson`) or `json_array` (`application/json`).
    #[serde(default)]
    pub format: HttpFormat,
    /// `url`, `headers`, `gzip`, `auth`, `tls`, `timeouts`, `retry`, `batch`.
    #[serde(flatten)]
    pub endpoint: HttpEndpointFields,
    /// Refuses any other key.
    #[serde(flatten)]
    pub _no_other_keys: NoOtherKeys,
}

fn default_name() -> String {
    "http".into()
}

/// How the records of one request are framed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    /// One record per line.
    #[default]
    Ndjson,
    /// `[record,record,…]`.
    JsonArray,
}

impl HttpSpec {
    /// The shared network settings.
    pub fn endpoint_spec(&self) -> EndpointSpec<'_> {
        self.endpoint.spec(&self.name)
    }

    /// Builds the sink.
    ///
    /// # Errors
    /// When the client or the dead-letter journal cannot be set up.
    pub fn build(&self, dead_letter: &DeadLetterSpec) -> Result<Box<dyn super::Sink>, SinkError> {
        let url = Url::parse(&self.endpoint.url).map_err(|e| SinkError::Setup {
            sink: self.name.clone(),
            source: Box::new(e),
        })?;
        let protocol = HttpProtocol {
            url,
            format: self.format,
        };
        Ok(Box::new(NetworkSink::new(
            &self.endpoint_spec(),
            protocol,
            dead_letter,
        )?))
    }
}

/// Plain JSON over HTTP.
#[derive(Debug)]
pub struct HttpProtocol {
    url: Url,
    format: HttpFormat,
}

impl Protocol for HttpProtocol {
    fn content_type(&self) -> &'static str {
        match self.format {
            HttpFormat::Ndjson => "application/x-ndjson",
            HttpFormat::JsonArray => "application/json",
        }
    }

    fn url(&self) -> &Url {
        &self.url
    }

    fn encode(&mut self, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
        encode(self.format, records, body);
    }
}

fn encode(format: HttpFormat, records: &[&OutRecord<'_>], body: &mut Vec<u8>) {
    match format {
        HttpFormat::Ndjson => {
            for record in records {
                body.extend_from_slice(record.raw);
                body.push(b'\n');
            }
        }
        HttpFormat::JsonArray => {
            body.push(b'[');
            for (i, record) in records.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                if record.is_decoded() {
                    body.extend_from_slice(record.raw);
                } else {
                    // A line that is not JSON would break the array: send it as a string.
                    let text = String::from_utf8_lossy(record.raw);
                    serde_json::to_writer(&mut *body, &text).expect("writing to a Vec cannot fail");
                }
            }
            body.push(b']');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_carry_the_records_unchanged() {
        let raws: [&[u8]; 3] = [
            br#"{"id":"a-1","n":1}"#,
            br#"{"id":"a-2"}"#,
            b"plain \"text\"",
        ];
        let records: Vec<OutRecord<'_>> = raws.iter().map(|r| OutRecord::decode(r)).collect();
        let refs: Vec<&OutRecord<'_>> = records.iter().collect();
        let mut body = Vec::new();
        encode(HttpFormat::Ndjson, &refs, &mut body);
        assert_eq!(
            body,
            b"{\"id\":\"a-1\",\"n\":1}\n{\"id\":\"a-2\"}\nplain \"text\"\n"
        );
        body.clear();
        encode(HttpFormat::JsonArray, &refs, &mut body);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            parsed,
            serde_json::json!([{"id":"a-1","n":1},{"id":"a-2"},"plain \"text\""])
        );
    }
}
