//! A collected line as it sits in the collected journal, written by the collector and read by
//! the processor. The format is versioned per record (docs/journal-format.md):
//!
//! - **v2** (written today): a short text header, a tab, then the line's exact bytes:
//!   `2 <id> <collected_at> <flags> [<logged_at>] <source as a JSON string>\t<line bytes>`,
//!   `logged_at` (the container runtime's time) only on a container's line, whose flags name
//!   its stream (`o` stdout, `e` stderr). The line is
//!   stored raw, so writing it costs a copy and reading it costs nothing, whatever it holds
//!   (quotes, backslashes, bytes that are not UTF-8). `cut -f2- segment-*` prints the lines.
//! - **v1** (written before): one JSON object, `{"id":…,"source":…,"offset":…,
//!   "collected_at":…,"line":…}` with optional flags. Still read, so a journal written by an
//!   older collector is carried on record for record after an upgrade.
//!
//! A record's first byte tells the versions apart: `{` is v1, `2` is v2.
//!
//! Easy to get wrong: the header must never hold a tab or a newline, or the line would be cut
//! wrongly. Every header field is ASCII without spaces except the source, which is written as
//! a JSON string (control characters escaped) and comes last.

use std::borrow::Cow;
use std::fmt;

use base64::Engine as _;
use serde::Deserialize;

use super::{encode, ContainerOrigin, LineFlags, RecordId, Stream};

/// The first byte of a v2 record.
const V2_TAG: u8 = b'2';

/// Why a collected journal record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

fn invalid(reason: impl Into<String>) -> DecodeError {
    DecodeError(reason.into())
}

/// A line the collector is about to write into its journal, borrowing everything.
#[derive(Debug)]
pub struct CollectedRecordOut<'a> {
    /// See [`RecordId`].
    pub id: RecordId,
    /// The source file's name (or, for a pushed record, the service's).
    pub source: &'a str,
    /// When it was read.
    pub collected_at: &'a str,
    /// The line's exact bytes, without its newline.
    pub bytes: &'a [u8],
    /// What the collector knows about the line beyond its bytes.
    pub flags: LineFlags,
    /// Set for a record an app pushed to the collector's ingest endpoint (no file behind it):
    /// the processor runs no file's rules on it.
    pub pushed: bool,
    /// Set for a line a container runtime wrote (CRI or docker json-file).
    pub container: Option<ContainerOrigin<'a>>,
}

impl<'a> CollectedRecordOut<'a> {
    /// The record of `bytes` (without its newline or carriage return).
    pub fn new(
        id: RecordId,
        source: &'a str,
        collected_at: &'a str,
        bytes: &'a [u8],
        flags: LineFlags,
    ) -> Self {
        Self {
            id,
            source,
            collected_at,
            bytes,
            flags,
            pushed: false,
            container: None,
        }
    }

    /// Marks the record as a container runtime's line, of this stream and time.
    #[must_use]
    pub fn from_container(mut self, origin: ContainerOrigin<'a>) -> Self {
        self.container = Some(origin);
        self
    }

    /// Marks the record as pushed to the ingest endpoint rather than read from a file.
    #[must_use]
    pub fn mark_pushed(mut self) -> Self {
        self.pushed = true;
        self
    }

    /// Appends the record in the v2 format, without its newline.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.reserve(self.bytes.len() + self.source.len() + 64);
        out.extend_from_slice(&[V2_TAG, b' ']);
        encode::write_hex16(out, self.id.source_id);
        out.push(b'-');
        encode::write_u64(out, self.id.offset);
        out.push(b' ');
        push_header_token(out, self.collected_at);
        out.push(b' ');
        let flags_at = out.len();
        let stream = self.container.map(|c| c.stream);
        for (set, letter) in [
            (self.flags.partial, b'p'),
            (self.flags.split, b's'),
            (self.pushed, b'u'),
            (self.flags.malformed, b'm'),
            (stream == Some(Stream::Stdout), b'o'),
            (stream == Some(Stream::Stderr), b'e'),
        ] {
            if set {
                out.push(letter);
            }
        }
        if out.len() == flags_at {
            out.push(b'-');
        }
        out.push(b' ');
        if let Some(container) = &self.container {
            push_header_token(out, container.logged_at);
            out.push(b' ');
        }
        encode::write_str(out, self.source);
        out.push(b'\t');
        out.extend_from_slice(self.bytes);
    }
}

/// Appends a header token; anything that would break the header (a space, tab or newline,
/// which a timestamp never holds) becomes `_`.
fn push_header_token(out: &mut Vec<u8>, token: &str) {
    out.extend(token.bytes().map(|b| {
        if matches!(b, b' ' | b'\t' | b'\n') {
            b'_'
        } else {
            b
        }
    }));
}

/// A collected line as the processor reads it back: borrowed from the journal's bytes
/// wherever it can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedRecord<'a> {
    /// See [`RecordId`], in its printed form.
    pub id: Cow<'a, str>,
    /// The source file's name.
    pub source: Cow<'a, str>,
    /// When it was read.
    pub collected_at: Cow<'a, str>,
    /// The text (lossy when the bytes are not UTF-8).
    pub line: Cow<'a, str>,
    /// The exact bytes, base64, when they are not valid UTF-8.
    pub line_base64: Option<String>,
    /// A partial last line.
    pub partial: bool,
    /// A piece of an over-long line.
    pub split: bool,
    /// The bytes are not valid UTF-8.
    pub invalid_utf8: bool,
    /// Pushed to the ingest endpoint, not read from a file.
    pub pushed: bool,
    /// A container runtime's line that was not in its file's format.
    pub malformed: bool,
    /// The container stream, on a container runtime's line.
    pub stream: Option<Stream>,
    /// The container runtime's time, on a container runtime's line.
    pub logged_at: Option<Cow<'a, str>>,
}

impl<'a> CollectedRecord<'a> {
    /// Decodes one journal record (without its newline), of either format version.
    ///
    /// # Errors
    /// When the bytes are neither a v1 nor a v2 record.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            Some(&V2_TAG) => decode_v2(bytes),
            Some(b'{') => decode_v1(bytes),
            Some(other) => Err(invalid(format!(
                "a collected record starts with `2` (format v2) or `{{` (v1), not byte 0x{other:02x}"
            ))),
            None => Err(invalid("an empty collected record")),
        }
    }

    /// The same record, owning its strings.
    pub fn into_owned(self) -> CollectedRecord<'static> {
        CollectedRecord {
            id: Cow::Owned(self.id.into_owned()),
            source: Cow::Owned(self.source.into_owned()),
            collected_at: Cow::Owned(self.collected_at.into_owned()),
            line: Cow::Owned(self.line.into_owned()),
            line_base64: self.line_base64,
            partial: self.partial,
            split: self.split,
            invalid_utf8: self.invalid_utf8,
            pushed: self.pushed,
            malformed: self.malformed,
            stream: self.stream,
            logged_at: self.logged_at.map(|t| Cow::Owned(t.into_owned())),
        }
    }

    /// The record as a JSON object in the v1 layout (flags only when set): what
    /// `processor journal-cat` prints and what tests compare.
    pub fn to_json(&self) -> serde_json::Value {
        let mut object = serde_json::Map::new();
        object.insert("id".into(), self.id.as_ref().into());
        object.insert("source".into(), self.source.as_ref().into());
        if let Some(offset) = self
            .id
            .rsplit('-')
            .next()
            .and_then(|o| o.parse::<u64>().ok())
        {
            object.insert("offset".into(), offset.into());
        }
        object.insert("collected_at".into(), self.collected_at.as_ref().into());
        object.insert("line".into(), self.line.as_ref().into());
        for (name, set) in [
            ("partial", self.partial),
            ("split", self.split),
            ("invalid_utf8", self.invalid_utf8),
            ("pushed", self.pushed),
            ("malformed", self.malformed),
        ] {
            if set {
                object.insert(name.into(), true.into());
            }
        }
        if let Some(stream) = self.stream {
            object.insert("stream".into(), stream.as_str().into());
        }
        if let Some(logged_at) = &self.logged_at {
            object.insert("logged_at".into(), logged_at.as_ref().into());
        }
        if let Some(raw) = &self.line_base64 {
            object.insert("line_base64".into(), raw.as_str().into());
        }
        serde_json::Value::Object(object)
    }
}

fn decode_v2(bytes: &[u8]) -> Result<CollectedRecord<'_>, DecodeError> {
    let tab = memchr::memchr(b'\t', bytes)
        .ok_or_else(|| invalid("a v2 collected record has no tab between header and line"))?;
    // One check of the whole record: nearly every line is UTF-8, and the header always is.
    let (header, line) = match simdutf8::basic::from_utf8(bytes) {
        Ok(text) => (&text[..tab], Ok(&text[tab + 1..])),
        Err(_) => (
            std::str::from_utf8(&bytes[..tab])
                .map_err(|_| invalid("a v2 collected record's header is not UTF-8"))?,
            Err(&bytes[tab + 1..]),
        ),
    };
    // The source comes last and may hold spaces; logged_at, when there, comes before it.
    let mut rest = header;
    let mut next = |name: &str| {
        let (field, after) = split_at_space(rest).unwrap_or((rest, ""));
        rest = after;
        Some(field)
            .filter(|f| !f.is_empty())
            .ok_or_else(|| invalid(format!("a v2 collected record's header lacks its {name}")))
    };
    let _tag = next("version")?;
    let id = next("id")?;
    let collected_at = next("collected_at")?;
    let flags = Flags::parse(next("flags")?)?;
    let stream = flags.stream;
    if rest.is_empty() {
        return Err(invalid("a v2 collected record's header lacks its source"));
    }
    let (logged_at, source) = match stream {
        Some(_) => split_at_space(rest)
            .filter(|(at, _)| !at.is_empty())
            .map(|(at, source)| (Some(at), source))
            .ok_or_else(|| invalid("a v2 collected record of a stream lacks its logged_at"))?,
        None => (None, rest),
    };
    let source = decode_source(source)?;
    if !is_record_id(id) {
        return Err(invalid(format!(
            "a v2 collected record's id `{id}` is not <16 hex digits>-<offset>"
        )));
    }
    let (line, line_base64) = match line {
        Ok(text) => (Cow::Borrowed(text), None),
        Err(line) => (
            String::from_utf8_lossy(line),
            Some(base64::engine::general_purpose::STANDARD.encode(line)),
        ),
    };
    Ok(CollectedRecord {
        id: Cow::Borrowed(id),
        source,
        collected_at: Cow::Borrowed(collected_at),
        invalid_utf8: line_base64.is_some(),
        line,
        line_base64,
        partial: flags.partial,
        split: flags.split,
        pushed: flags.pushed,
        malformed: flags.malformed,
        stream,
        logged_at: logged_at.map(Cow::Borrowed),
    })
}

/// The text before the first space and the text after it.
fn split_at_space(text: &str) -> Option<(&str, &str)> {
    let at = memchr::memchr(b' ', text.as_bytes())?;
    Some((&text[..at], &text[at + 1..]))
}

/// A v2 header's flags, read in one pass.
#[derive(Default)]
struct Flags {
    partial: bool,
    split: bool,
    pushed: bool,
    malformed: bool,
    stream: Option<Stream>,
}

impl Flags {
    fn parse(text: &str) -> Result<Self, DecodeError> {
        let mut flags = Flags::default();
        let (mut stdout, mut stderr) = (false, false);
        for byte in text.bytes() {
            match byte {
                b'p' => flags.partial = true,
                b's' => flags.split = true,
                b'u' => flags.pushed = true,
                b'm' => flags.malformed = true,
                b'o' => stdout = true,
                b'e' => stderr = true,
                b'-' => {}
                _ => {
                    let known = |c: &char| matches!(c, 'p' | 's' | 'u' | 'm' | 'o' | 'e' | '-');
                    let unknown = text.chars().find(|c| !known(c)).unwrap_or_default();
                    return Err(invalid(format!(
                        "a v2 collected record's flags `{text}` hold the unknown flag `{unknown}`"
                    )));
                }
            }
        }
        flags.stream = match (stdout, stderr) {
            (true, true) => {
                return Err(invalid(format!(
                    "a v2 collected record's flags `{text}` name both streams"
                )))
            }
            (true, false) => Some(Stream::Stdout),
            (false, true) => Some(Stream::Stderr),
            (false, false) => None,
        };
        Ok(flags)
    }
}

/// The source, a JSON string: borrowed when it has no escapes, as nearly every file name.
fn decode_source(json: &str) -> Result<Cow<'_, str>, DecodeError> {
    let plain = json
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .filter(|inner| memchr::memchr2(b'\\', b'"', inner.as_bytes()).is_none());
    match plain {
        Some(inner) => Ok(Cow::Borrowed(inner)),
        None => serde_json::from_str::<String>(json)
            .map(Cow::Owned)
            .map_err(|e| {
                invalid(format!(
                    "a v2 collected record's source is not a JSON string: {e}"
                ))
            }),
    }
}

/// `<16 hex digits>-<offset in decimal>`. The digits are checked without stopping at the
/// first bad one: an id is nearly always good, and a loop with an exit per byte is not
/// vectorised (the early-exit version was 1 % of the processor).
fn is_record_id(id: &str) -> bool {
    let Some((hex, rest)) = id.as_bytes().split_first_chunk::<16>() else {
        return false;
    };
    let Some((b'-', offset)) = rest.split_first() else {
        return false;
    };
    let hex_digits = hex.iter().fold(true, |all, b| all & b.is_ascii_hexdigit());
    let decimal_digits = offset.iter().fold(true, |all, b| all & b.is_ascii_digit());
    hex_digits && decimal_digits && !offset.is_empty()
}

/// The v1 layout, read with serde (borrowing strings without escapes).
#[derive(Deserialize)]
struct V1<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    source: Cow<'a, str>,
    #[serde(borrow)]
    collected_at: Cow<'a, str>,
    #[serde(borrow)]
    line: Cow<'a, str>,
    #[serde(default)]
    partial: bool,
    #[serde(default)]
    split: bool,
    #[serde(default)]
    invalid_utf8: bool,
    #[serde(default)]
    line_base64: Option<String>,
    /// Absent in journals written before the flag existed, which held no pushed records.
    #[serde(default)]
    pushed: bool,
}

fn decode_v1(bytes: &[u8]) -> Result<CollectedRecord<'_>, DecodeError> {
    let v1: V1<'_> = serde_json::from_slice(bytes)
        .map_err(|e| invalid(format!("a v1 collected record does not decode: {e}")))?;
    Ok(CollectedRecord {
        id: v1.id,
        source: v1.source,
        collected_at: v1.collected_at,
        line: v1.line,
        line_base64: v1.line_base64,
        partial: v1.partial,
        split: v1.split,
        invalid_utf8: v1.invalid_utf8,
        pushed: v1.pushed,
        malformed: false,
        stream: None,
        logged_at: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(record: &CollectedRecordOut<'_>) -> Vec<u8> {
        let mut out = Vec::new();
        record.write(&mut out);
        out
    }

    const ID: RecordId = RecordId {
        source_id: 0x8f3c_2a19_d4e5_b601,
        offset: 10_472,
    };

    #[test]
    fn a_collected_record_is_a_header_a_tab_and_the_raw_line() {
        let plain = CollectedRecordOut::new(
            ID,
            "access.log",
            "2026-11-22T10:30:45.123Z",
            b"GET /a \"q\"\t\\",
            LineFlags::default(),
        );
        assert_eq!(
            written(&plain),
            b"2 8f3c2a19d4e5b601-10472 2026-11-22T10:30:45.123Z - \"access.log\"\tGET /a \"q\"\t\\"
        );
        let flagged = CollectedRecordOut::new(
            ID,
            "odd name\t.log",
            "t",
            b"\xff",
            LineFlags {
                partial: true,
                split: true,
                ..LineFlags::default()
            },
        )
        .mark_pushed();
        assert_eq!(
            written(&flagged),
            b"2 8f3c2a19d4e5b601-10472 t psu \"odd name\\t.log\"\t\xff"
        );
    }

    #[test]
    fn v2_records_decode_borrowed_with_their_flags() {
        let bytes = written(&CollectedRecordOut::new(
            ID,
            "a.log",
            "t",
            "héllo \"x\"".as_bytes(),
            LineFlags::default(),
        ));
        let back = CollectedRecord::decode(&bytes).unwrap();
        assert!(matches!(back.line, Cow::Borrowed("héllo \"x\"")));
        assert!(matches!(back.source, Cow::Borrowed("a.log")));
        assert_eq!(back.id, "8f3c2a19d4e5b601-10472");
        assert!(!back.partial && !back.split && !back.pushed && !back.invalid_utf8);
    }

    #[test]
    fn invalid_utf8_keeps_the_exact_bytes() {
        let bytes = b"ok \xff\xfe end";
        let record = written(&CollectedRecordOut::new(
            ID,
            "a.log",
            "t",
            bytes,
            LineFlags::default(),
        ));
        let back = CollectedRecord::decode(&record).unwrap();
        assert!(back.invalid_utf8);
        assert_eq!(back.line, "ok \u{fffd}\u{fffd} end");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(back.line_base64.unwrap())
            .unwrap();
        assert_eq!(raw, bytes);
    }

    #[test]
    fn v1_records_still_decode_with_and_without_the_pushed_flag() {
        let old = br#"{"id":"0000000000000001-0","source":"a.log","offset":0,"collected_at":"t","line":"x \"y\"","partial":true}"#;
        let back = CollectedRecord::decode(old).unwrap();
        assert_eq!(
            (back.id.as_ref(), back.source.as_ref(), back.line.as_ref()),
            ("0000000000000001-0", "a.log", "x \"y\"")
        );
        assert!(back.partial && !back.pushed);
        let pushed = br#"{"id":"0000000000000001-0","source":"svc","offset":0,"collected_at":"t","line":"x","pushed":true}"#;
        assert!(CollectedRecord::decode(pushed).unwrap().pushed);
        let invalid = br#"{"id":"1-0","source":"x.log","offset":0,"collected_at":"t","line":"a\ufffd","invalid_utf8":true,"line_base64":"Yf8="}"#;
        let back = CollectedRecord::decode(invalid).unwrap();
        assert_eq!(back.line_base64.as_deref(), Some("Yf8="));
    }

    #[test]
    fn a_container_line_keeps_its_stream_and_the_runtime_time() {
        for (stream, malformed) in [(Stream::Stdout, false), (Stream::Stderr, true)] {
            let flags = LineFlags {
                malformed,
                ..LineFlags::default()
            };
            let origin = ContainerOrigin {
                stream,
                logged_at: "2026-12-06T10:30:45.123456789Z",
            };
            let out = CollectedRecordOut::new(ID, "my pod.log", "t", b"a\tb c", flags)
                .from_container(origin);
            let bytes = written(&out);
            let back = CollectedRecord::decode(&bytes).unwrap();
            assert_eq!(back.stream, Some(stream));
            assert_eq!(back.logged_at.as_deref(), Some(origin.logged_at));
            assert_eq!(
                (back.source.as_ref(), back.line.as_ref()),
                ("my pod.log", "a\tb c")
            );
            assert_eq!(back.malformed, malformed);
            let json = back.to_json();
            assert_eq!(json["stream"], stream.as_str());
        }
        let plain = written(&CollectedRecordOut::new(
            ID,
            "a b.log",
            "t",
            b"x",
            LineFlags::default(),
        ));
        let back = CollectedRecord::decode(&plain).unwrap();
        assert_eq!((back.stream, back.logged_at), (None, None));
        assert_eq!(back.source, "a b.log");
    }

    #[test]
    fn broken_records_are_refused_with_the_reason() {
        for (bytes, reason) in [
            (&b""[..], "empty"),
            (b"x", "not byte 0x78"),
            (b"2 0000000000000001-0 t - \"a\"", "no tab"),
            (b"2 0000000000000001-0 t -\tline", "lacks its source"),
            (b"2 zz-0 t - \"a\"\tline", "is not <16 hex digits>"),
            (b"2 0000000000000001-0 t q \"a\"\tline", "unknown flag `q`"),
            (b"2 0000000000000001-0 t - a\tline", "not a JSON string"),
            (
                b"2 0000000000000001-0 t oe x \"a\"\tline",
                "name both streams",
            ),
            (
                b"2 0000000000000001-0 t o \"a\"\tline",
                "lacks its logged_at",
            ),
            (b"{\"id\":1}", "v1 collected record does not decode"),
        ] {
            let error = CollectedRecord::decode(bytes).unwrap_err().to_string();
            assert!(error.contains(reason), "{error:?} lacks {reason:?}");
        }
    }

    #[test]
    fn an_id_is_sixteen_hex_digits_a_dash_and_a_decimal_offset() {
        for good in [
            "0123456789abcdef-0",
            "0123456789ABCDEF-18446744073709551615",
        ] {
            assert!(is_record_id(good), "{good}");
        }
        for bad in [
            "",
            "0123456789abcdef",
            "0123456789abcdef-",
            "0123456789abcde-0",
            "0123456789abcdef0-0",
            "0123456789abcdeg-0",
            "0123456789abcdef_0",
            "0123456789abcdef-1x",
            "0123456789abcdef--1",
            "0123456789abcdef-\u{e9}",
            "\u{e9}123456789abcde-0",
        ] {
            assert!(!is_record_id(bad), "{bad}");
        }
    }

    #[test]
    fn a_line_that_is_not_utf8_is_kept_lossy_with_its_bytes_in_base64() {
        let record = CollectedRecord::decode(b"2 0000000000000001-0 t - \"a\"\tab\xffc").unwrap();
        assert_eq!(record.line, "ab\u{fffd}c");
        assert!(record.invalid_utf8);
        assert_eq!(record.line_base64.as_deref(), Some("YWL/Yw=="));
        assert_eq!(record.id, "0000000000000001-0");
        let broken_header = CollectedRecord::decode(b"2 0000000000000001-0 \xff - \"a\"\tab");
        assert!(broken_header
            .unwrap_err()
            .to_string()
            .contains("header is not UTF-8"));
    }

    #[test]
    fn v1_and_v2_give_the_same_json_for_the_same_line() {
        let v2 = written(&CollectedRecordOut::new(
            ID,
            "a.log",
            "t",
            b"x",
            LineFlags {
                partial: true,
                split: false,
                ..LineFlags::default()
            },
        ));
        let v1 = br#"{"id":"8f3c2a19d4e5b601-10472","source":"a.log","offset":10472,"collected_at":"t","line":"x","partial":true}"#;
        assert_eq!(
            CollectedRecord::decode(&v2).unwrap().to_json(),
            CollectedRecord::decode(v1).unwrap().to_json()
        );
    }

    proptest! {
        #[test]
        fn any_line_and_source_round_trip(
            line in proptest::collection::vec(any::<u8>().prop_filter("no newline", |b| *b != b'\n'), 0..200),
            source in "\\PC{0,20}|[\\t \"\\\\a-z]{1,10}",
            source_id in any::<u64>(),
            offset in any::<u64>(),
            partial in any::<bool>(),
            split in any::<bool>(),
            pushed in any::<bool>(),
        ) {
            let id = RecordId { source_id, offset };
            let mut out = CollectedRecordOut::new(id, &source, "2026-11-22T10:30:45.123Z", &line, LineFlags { partial, split, ..LineFlags::default() });
            out.pushed = pushed;
            let bytes = written(&out);
            prop_assert!(!bytes.contains(&b'\n'));
            let back = CollectedRecord::decode(&bytes).unwrap();
            prop_assert_eq!(back.id.as_ref(), id.to_string());
            prop_assert_eq!(back.source.as_ref(), source.as_str());
            prop_assert_eq!((back.partial, back.split, back.pushed), (partial, split, pushed));
            let lossy = String::from_utf8_lossy(&line);
            prop_assert_eq!(back.line.as_ref(), lossy.as_ref());
            let exact = match &back.line_base64 {
                Some(raw) => base64::engine::general_purpose::STANDARD.decode(raw).unwrap(),
                None => back.line.as_bytes().to_vec(),
            };
            prop_assert_eq!(exact, line);
        }
    }
}
