//! The record: one log line and what the stages learn about it.
//!
//! The collector writes a [`CollectedRecord`] per line into its journal; the processor turns it
//! into a processed record (a JSON object whose well-known keys are in [`field`]), and the
//! forwarder ships that. Every record carries its [`RecordId`] unchanged from the collector to
//! the sinks, where it is the idempotency key.
//!
//! Easy to get wrong: a line is bytes, not text. A line that is not UTF-8 keeps its exact bytes
//! in `line_base64` (lossless) next to a readable lossy `line`, and is flagged, never dropped.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use base64::Engine as _;
use serde::{Deserialize, Serialize, Serializer};

pub mod encode;
pub mod summary;

/// Names of the fields a processed record carries.
pub mod field {
    /// The stable record id (see [`super::RecordId`]).
    pub const ID: &str = "id";
    /// The source file's name (basename) the line was read from.
    pub const SOURCE_FILE: &str = "source_file";
    /// When the collector read the line (RFC 3339, UTC, milliseconds).
    pub const COLLECTED_AT: &str = "collected_at";
    /// When the processor enriched the record (RFC 3339, UTC, milliseconds).
    pub const PROCESSED_AT: &str = "processed_at";
    /// The category the rules gave the record (`unknown` when none matched).
    pub const LOG_CATEGORY: &str = "log_category";
    /// The level: DEBUG, INFO, WARNING or ERROR.
    pub const LOG_LEVEL: &str = "log_level";
    /// The human message, when the line has one.
    pub const MESSAGE: &str = "message";
    /// The application's own timestamp, when the line has one.
    pub const TIMESTAMP: &str = "timestamp";
    /// The raw line, kept when it could not be parsed.
    pub const LINE: &str = "line";
    /// Why parsing failed; the record is kept with its raw line.
    pub const PROCESSING_ERROR: &str = "processing_error";
    /// `true` on a record an app pushed to the collector's ingest endpoint: its `source_file`
    /// names a service, not a file, and no file's rules ran on it.
    pub const PUSHED: &str = "pushed";
}

/// The id of a record: the source file's identity and the line's byte offset in it.
///
/// Printed as 16 hex digits of the source id, a dash, and the decimal offset:
/// `8f3c2a19d4e5b601-10472`. The source id is fixed when the collector first sees a file
/// (and again after a truncation), and persisted, so the id of a line never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The identity of the file generation the line came from.
    pub source_id: u64,
    /// The byte offset of the line's first byte in that file.
    pub offset: u64,
}

impl fmt::Display for RecordId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}-{}", self.source_id, self.offset)
    }
}

impl Serialize for RecordId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // collect_str writes through serde_json's formatter: no String per record.
        serializer.collect_str(self)
    }
}

/// What the collector knows about a line beyond its text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LineFlags {
    /// The file ended without a newline and stayed idle (or was closed): the bytes so far were
    /// emitted once, and what follows later starts a new line.
    pub partial: bool,
    /// The line was longer than the limit; this record is one piece, the rest follows in the
    /// next record (whose offset is this one's plus its length).
    pub split: bool,
}

/// A collected line as the collector writes it into its journal (borrowed, no copies), with
/// [`CollectedRecordOut::write_json`].
#[derive(Debug)]
pub struct CollectedRecordOut<'a> {
    /// See [`RecordId`].
    pub id: RecordId,
    /// The source file's name.
    pub source: &'a str,
    /// The line's byte offset in the source file.
    pub offset: u64,
    /// When it was read.
    pub collected_at: &'a str,
    /// The text (lossy when the bytes are not UTF-8).
    pub line: Cow<'a, str>,
    /// Set for a partial last line.
    pub partial: bool,
    /// Set for a piece of an over-long line.
    pub split: bool,
    /// Set when the bytes are not valid UTF-8.
    pub invalid_utf8: bool,
    /// The exact bytes, base64, when they are not valid UTF-8.
    pub line_base64: Option<String>,
    /// Set for a record an app pushed to the collector's ingest endpoint (no file behind it):
    /// the processor runs no file's rules on it. Written only when set, so tailed records
    /// stay byte-for-byte what they were.
    pub pushed: bool,
}

impl<'a> CollectedRecordOut<'a> {
    /// Builds the record for `bytes` (without its newline or carriage return).
    pub fn new(
        id: RecordId,
        source: &'a str,
        collected_at: &'a str,
        bytes: &'a [u8],
        flags: LineFlags,
    ) -> Self {
        let (line, line_base64) = match simdutf8::basic::from_utf8(bytes) {
            Ok(text) => (Cow::Borrowed(text), None),
            Err(_) => (
                String::from_utf8_lossy(bytes),
                Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            ),
        };
        Self {
            id,
            source,
            offset: id.offset,
            collected_at,
            invalid_utf8: line_base64.is_some(),
            line,
            partial: flags.partial,
            split: flags.split,
            line_base64,
            pushed: false,
        }
    }

    /// Appends the record as one JSON object (no newline), the keys in the order above and the
    /// flags only when set: what `serde_json` would write for it, without its cost per record.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"id\":\"");
        encode::write_hex16(out, self.id.source_id);
        out.push(b'-');
        encode::write_u64(out, self.id.offset);
        out.extend_from_slice(b"\",\"source\":");
        encode::write_str(out, self.source);
        out.extend_from_slice(b",\"offset\":");
        encode::write_u64(out, self.offset);
        out.extend_from_slice(b",\"collected_at\":");
        encode::write_str(out, self.collected_at);
        out.extend_from_slice(b",\"line\":");
        encode::write_str(out, &self.line);
        for (set, key) in [
            (self.partial, &b",\"partial\":true"[..]),
            (self.split, b",\"split\":true"),
            (self.invalid_utf8, b",\"invalid_utf8\":true"),
        ] {
            if set {
                out.extend_from_slice(key);
            }
        }
        if let Some(raw) = &self.line_base64 {
            out.extend_from_slice(b",\"line_base64\":");
            encode::write_str(out, raw);
        }
        if self.pushed {
            out.extend_from_slice(b",\"pushed\":true");
        }
        out.push(b'}');
    }

    /// Marks the record as pushed to the ingest endpoint rather than read from a file.
    #[must_use]
    pub fn mark_pushed(mut self) -> Self {
        self.pushed = true;
        self
    }
}

/// A collected line as the processor reads it back.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CollectedRecord {
    /// See [`RecordId`], in its printed form.
    pub id: String,
    /// The source file's name.
    pub source: String,
    /// The line's byte offset in the source file.
    pub offset: u64,
    /// When it was read.
    pub collected_at: String,
    /// The text (lossy when the bytes are not UTF-8).
    pub line: String,
    /// A partial last line.
    #[serde(default)]
    pub partial: bool,
    /// A piece of an over-long line.
    #[serde(default)]
    pub split: bool,
    /// The bytes are not valid UTF-8.
    #[serde(default)]
    pub invalid_utf8: bool,
    /// The exact bytes when they are not valid UTF-8.
    #[serde(default)]
    pub line_base64: Option<String>,
    /// Pushed to the ingest endpoint, not read from a file. Absent in journals written before
    /// the flag existed, which held no pushed records the processor could tell apart.
    #[serde(default)]
    pub pushed: bool,
}

/// Now, as RFC 3339 UTC with milliseconds: `2026-11-22T10:30:45.123Z`.
pub fn timestamp_now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// For `deserialize_with` on a record field read without decoding the whole record: a string
/// (borrowed when it has no escapes), or `None` for any other JSON value, which is skipped. An
/// app's JSON may put an object where a string is expected; that must not fail the record.
pub fn string_or_absent<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct StringOrAbsent;
    impl<'de> serde::de::Visitor<'de> for StringOrAbsent {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(v)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v.to_owned())))
        }
        fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(v)))
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            Ok(None)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            while map
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            Ok(None)
        }
    }
    deserializer.deserialize_any(StringOrAbsent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(record: &CollectedRecordOut<'_>) -> String {
        let mut out = Vec::new();
        record.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_collected_record_is_written_in_the_journal_format_of_every_version_so_far() {
        let id = RecordId {
            source_id: 0x8f3c_2a19_d4e5_b601,
            offset: 10_472,
        };
        let plain = CollectedRecordOut::new(
            id,
            "access.log",
            "2026-11-22T10:30:45.123Z",
            b"GET /a \"q\"\t\\",
            LineFlags::default(),
        );
        assert_eq!(
            json(&plain),
            r#"{"id":"8f3c2a19d4e5b601-10472","source":"access.log","offset":10472,"collected_at":"2026-11-22T10:30:45.123Z","line":"GET /a \"q\"\t\\"}"#
        );
        let flagged = CollectedRecordOut::new(
            id,
            "a.log",
            "t",
            b"\xff",
            LineFlags {
                partial: true,
                split: true,
            },
        )
        .mark_pushed();
        assert_eq!(
            json(&flagged),
            r#"{"id":"8f3c2a19d4e5b601-10472","source":"a.log","offset":10472,"collected_at":"t","line":"�","partial":true,"split":true,"invalid_utf8":true,"line_base64":"/w==","pushed":true}"#
        );
    }

    #[test]
    fn ids_print_as_hex_source_and_decimal_offset() {
        let id = RecordId {
            source_id: 0xabc,
            offset: 42,
        };
        assert_eq!(id.to_string(), "0000000000000abc-42");
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"0000000000000abc-42\""
        );
    }

    #[test]
    fn utf8_lines_round_trip_without_extra_fields() {
        let id = RecordId {
            source_id: 1,
            offset: 7,
        };
        let out = CollectedRecordOut::new(
            id,
            "a.log",
            "t",
            "héllo \"x\"".as_bytes(),
            LineFlags::default(),
        );
        let json = json(&out);
        assert!(
            !json.contains("invalid_utf8") && !json.contains("partial"),
            "{json}"
        );
        let back: CollectedRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.line, "héllo \"x\"");
        assert_eq!((back.offset, back.source.as_str()), (7, "a.log"));
    }

    #[test]
    fn invalid_utf8_keeps_the_exact_bytes() {
        let bytes = b"ok \xff\xfe end";
        let id = RecordId {
            source_id: 1,
            offset: 0,
        };
        let json = json(&CollectedRecordOut::new(
            id,
            "a.log",
            "t",
            bytes,
            LineFlags::default(),
        ));
        let back: CollectedRecord = serde_json::from_str(&json).unwrap();
        assert!(back.invalid_utf8);
        assert_eq!(back.line, "ok \u{fffd}\u{fffd} end");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(back.line_base64.unwrap())
            .unwrap();
        assert_eq!(raw, bytes);
    }

    #[test]
    fn the_pushed_mark_is_written_only_when_set_and_old_records_still_decode() {
        let id = RecordId {
            source_id: 1,
            offset: 0,
        };
        let plain = CollectedRecordOut::new(id, "a.log", "t", b"x", LineFlags::default());
        let written = json(&plain);
        assert!(!written.contains("pushed"), "{written}");
        let pushed = json(&plain.mark_pushed());
        assert!(pushed.contains("\"pushed\":true"), "{pushed}");
        assert!(
            serde_json::from_str::<CollectedRecord>(&pushed)
                .unwrap()
                .pushed
        );
        // A line as journals before the flag held it.
        let old = r#"{"id":"0000000000000001-0","source":"a.log","offset":0,"collected_at":"t","line":"x"}"#;
        assert!(!serde_json::from_str::<CollectedRecord>(old).unwrap().pushed);
    }

    #[test]
    fn flags_are_written_only_when_set() {
        let id = RecordId {
            source_id: 1,
            offset: 0,
        };
        let flags = LineFlags {
            partial: true,
            split: false,
        };
        let json = json(&CollectedRecordOut::new(id, "a", "t", b"x", flags));
        assert!(
            json.contains("\"partial\":true") && !json.contains("split"),
            "{json}"
        );
    }
}
