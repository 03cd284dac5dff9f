//! The record: one log line and what the stages learn about it.
//!
//! The collector writes a [`CollectedRecordOut`] per line into its journal (format in
//! `collected.rs` and docs/journal-format.md); the processor reads it back as a
//! [`CollectedRecord`] and turns it into a processed record (a JSON object whose well-known keys are in [`field`]), and the
//! forwarder ships that. Every record carries its [`RecordId`] unchanged from the collector to
//! the sinks, where it is the idempotency key.
//!
//! Easy to get wrong: a line is bytes, not text. The collected journal keeps its exact bytes; a
//! processed record of a line that is not UTF-8 keeps them in `line_base64` (lossless) next to a
//! readable lossy `line`, and is flagged, never dropped.

#![warn(missing_docs)]

use std::borrow::Cow;
use std::fmt;

use serde::{Serialize, Serializer};

mod collected;
pub mod encode;
mod fields;
pub mod summary;

pub use collected::{CollectedRecord, CollectedRecordOut, DecodeError};
pub use fields::{key_cmp, FieldName, Fields};
/// When a record was collected or processed: the one clock every stage writes.
pub use sidecar_common::time::timestamp_now;

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
    /// `stdout` or `stderr`, on a line a container runtime wrote (CRI or docker json-file).
    pub const STREAM: &str = "stream";
    /// When the container runtime received the line (its own RFC 3339 time, as written).
    pub const LOGGED_AT: &str = "logged_at";
    /// `true` on a line of a container runtime's file that is not in the file's format: kept
    /// whole, as written, in `line`.
    pub const MALFORMED: &str = "malformed";

    /// The names every processed record gets, as [`FieldName`](crate::FieldName)s built at
    /// compile time: inserting with one copies it, where a `&str` is made a name afresh for
    /// every record (see [`Fields::insert`](crate::Fields::insert)).
    pub mod name {
        use crate::FieldName;

        /// [`super::ID`].
        pub const ID: FieldName = FieldName::const_new(super::ID);
        /// [`super::SOURCE_FILE`].
        pub const SOURCE_FILE: FieldName = FieldName::const_new(super::SOURCE_FILE);
        /// [`super::COLLECTED_AT`].
        pub const COLLECTED_AT: FieldName = FieldName::const_new(super::COLLECTED_AT);
        /// [`super::LINE`].
        pub const LINE: FieldName = FieldName::const_new(super::LINE);
        /// [`super::LOG_CATEGORY`].
        pub const LOG_CATEGORY: FieldName = FieldName::const_new(super::LOG_CATEGORY);
        /// [`super::LOG_LEVEL`].
        pub const LOG_LEVEL: FieldName = FieldName::const_new(super::LOG_LEVEL);
    }
}

/// Which of a container's output streams a line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    /// The stream named `name` (`stdout` or `stderr`).
    pub fn from_name(name: &[u8]) -> Option<Self> {
        match name {
            b"stdout" => Some(Stream::Stdout),
            b"stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// Where a container runtime's line came from: its stream and the runtime's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerOrigin<'a> {
    /// stdout or stderr.
    pub stream: Stream,
    /// The runtime's time of the line (of its first piece when it was written in pieces).
    pub logged_at: &'a str,
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
    /// The line is in a container runtime's file but not in its format: kept as written.
    pub malformed: bool,
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
}
