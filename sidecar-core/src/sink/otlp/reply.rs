//! What an OTLP server's 2xx reply says: `ExportLogsServiceResponse`, whose `partial_success`
//! counts the records it rejected.
//!
//! Easy to get wrong: int64 in OTLP/JSON. The Collector (Go's protojson) writes
//! `rejectedLogRecords` as a JSON string, `"3"`; opentelemetry-proto's serde reads only a
//! number there, so a real Collector's partial success would not be understood. The JSON reply
//! is read here by a small struct that takes both, and both field spellings protojson accepts
//! (lowerCamelCase and the proto names). The protobuf reply is read with the published
//! definitions.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use prost::Message as _;
use serde::{Deserialize, Deserializer};

use super::Encoding;

/// The server's `partial_success`: how many records it rejected (0: a warning only) and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct PartialSuccess {
    /// `rejected_log_records`.
    pub rejected: i64,
    /// `error_message` (may be empty).
    pub message: String,
}

/// `ExportLogsServiceResponse` in OTLP/JSON, as far as the sink reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct JsonResponse {
    #[serde(alias = "partial_success")]
    partial_success: Option<JsonPartialSuccess>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct JsonPartialSuccess {
    #[serde(alias = "rejected_log_records", deserialize_with = "int64")]
    rejected_log_records: i64,
    #[serde(alias = "error_message")]
    error_message: String,
}

/// An OTLP/JSON int64: a string of digits (as the spec writes it) or a plain number.
fn int64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int64 {
        Number(i64),
        Text(String),
    }
    match Int64::deserialize(deserializer)? {
        Int64::Number(n) => Ok(n),
        Int64::Text(text) => text.trim().parse().map_err(serde::de::Error::custom),
    }
}

/// Reads one encoding of the response.
type Reader = fn(&[u8]) -> Result<Option<PartialSuccess>, String>;

fn read_json(body: &[u8]) -> Result<Option<PartialSuccess>, String> {
    let response: JsonResponse = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(response.partial_success.map(|p| PartialSuccess {
        rejected: p.rejected_log_records,
        message: p.error_message,
    }))
}

fn read_protobuf(body: &[u8]) -> Result<Option<PartialSuccess>, String> {
    let response = ExportLogsServiceResponse::decode(body).map_err(|e| e.to_string())?;
    Ok(response.partial_success.map(|p| PartialSuccess {
        rejected: p.rejected_log_records,
        message: p.error_message,
    }))
}

/// Reads a 2xx reply body: `None` when it reports full success (an empty body, no
/// `partial_success`, or one with 0 rejected and no message, which the spec says means the
/// same). The server answers in the encoding it was sent (OTLP/HTTP: "the same Content-Type
/// in the response as it received in the request"); the other one is tried too, for a server
/// or proxy that does not.
///
/// # Errors
/// When the body is neither encoding's message, with both decoders' words.
pub(super) fn read_reply(body: &[u8], sent: Encoding) -> Result<Option<PartialSuccess>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let (first, second): (Reader, Reader) = match sent {
        Encoding::Protobuf => (read_protobuf, read_json),
        Encoding::Json => (read_json, read_protobuf),
    };
    let partial = first(body).or_else(|e1| second(body).map_err(|e2| format!("{e1}; {e2}")))?;
    Ok(partial.filter(|p| p.rejected != 0 || !p.message.is_empty()))
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess;

    use super::*;

    fn protobuf(rejected: i64, message: &str) -> Vec<u8> {
        ExportLogsServiceResponse {
            partial_success: Some(ExportLogsPartialSuccess {
                rejected_log_records: rejected,
                error_message: message.into(),
            }),
        }
        .encode_to_vec()
    }

    fn partial(rejected: i64, message: &str) -> Option<PartialSuccess> {
        Some(PartialSuccess {
            rejected,
            message: message.into(),
        })
    }

    #[test]
    fn empty_and_default_replies_are_full_success() {
        for sent in [Encoding::Protobuf, Encoding::Json] {
            assert_eq!(read_reply(b"", sent), Ok(None));
            assert_eq!(read_reply(b" \n", sent), Ok(None));
            assert_eq!(read_reply(b"{}", sent), Ok(None));
            assert_eq!(read_reply(br#"{"partialSuccess":{}}"#, sent), Ok(None));
            let default = ExportLogsServiceResponse::default().encode_to_vec();
            assert_eq!(read_reply(&default, sent), Ok(None));
            assert_eq!(read_reply(&protobuf(0, ""), sent), Ok(None));
        }
    }

    #[test]
    fn protobuf_partial_success_is_read() {
        let body = protobuf(3, "3 records too large");
        assert_eq!(
            read_reply(&body, Encoding::Protobuf),
            Ok(partial(3, "3 records too large"))
        );
        // A server that answers protobuf to JSON is understood too.
        assert_eq!(
            read_reply(&body, Encoding::Json),
            Ok(partial(3, "3 records too large"))
        );
        assert_eq!(
            read_reply(&protobuf(0, "slow down"), Encoding::Protobuf),
            Ok(partial(0, "slow down")),
            "a warning"
        );
    }

    #[test]
    fn json_partial_success_takes_int64_as_string_or_number() {
        for body in [
            r#"{"partialSuccess":{"rejectedLogRecords":"5","errorMessage":"bad"}}"#,
            r#"{"partialSuccess":{"rejectedLogRecords":5,"errorMessage":"bad"}}"#,
            r#"{"partial_success":{"rejected_log_records":"5","error_message":"bad"},"x":1}"#,
        ] {
            assert_eq!(
                read_reply(body.as_bytes(), Encoding::Json),
                Ok(partial(5, "bad")),
                "{body}"
            );
        }
        let err = read_reply(b"<html>ok</html>", Encoding::Json).unwrap_err();
        assert!(err.contains(';'), "both decoders' words: {err}");
    }
}
