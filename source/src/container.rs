//! Files a container runtime writes from a container's stdout and stderr: their two formats,
//! and the joining of a line the runtime wrote in pieces.
//!
//! - **CRI** (containerd, CRI-O): `<RFC 3339 nano time> <stdout|stderr> <P|F> <text>`. A line
//!   longer than the runtime's buffer is written as `P` (partial) pieces and a final `F`.
//! - **docker json-file**: `{"log":"<text>\n","stream":"stdout","time":"<RFC 3339 nano>"}`. A
//!   line over 16 KiB is written in pieces whose `log` lacks the trailing newline.
//!
//! Pieces of one stream are joined into one record whose id is that of its first piece; pieces
//! of the other stream may come between, and the last pieces may be in the file that replaced
//! a rotated one. Easy to get wrong: exactly once across a restart. The tailer's offset moves
//! past a piece as soon as it is read, so the pieces not yet joined travel in the commit with
//! it ([`PendingLine`]): a restart between a `P` and its `F` neither repeats the piece nor cuts
//! the line.

use serde::{Deserialize, Serialize};
use sidecar_record::{ContainerOrigin, LineFlags, RecordId, Stream};

/// How a watched file's lines are written: chosen per `--watch` glob by a prefix
/// (`cri:/var/log/containers/*.log`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Each line is a record, as the app wrote it.
    #[default]
    Raw,
    /// The CRI log format of containerd and CRI-O.
    Cri,
    /// docker's json-file format.
    Docker,
    /// Whichever of the three the file's first line is in, decided once per file.
    Auto,
}

impl LogFormat {
    /// The format a `--watch` prefix names.
    pub fn from_prefix(prefix: &str) -> Option<Self> {
        match prefix {
            "raw" => Some(Self::Raw),
            "cri" => Some(Self::Cri),
            "docker" => Some(Self::Docker),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }

    /// Whether lines need parsing (not `raw`).
    pub fn is_container(self) -> bool {
        self != Self::Raw
    }

    /// For `auto`, the format `first_line` is in; other formats stay what they are.
    pub fn resolve(self, first_line: &[u8]) -> Self {
        match self {
            Self::Auto if parse_docker(first_line).is_some() => Self::Docker,
            Self::Auto if parse_cri(first_line).is_some() => Self::Cri,
            Self::Auto => Self::Raw,
            other => other,
        }
    }
}

/// One line of a container runtime's file, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece<'a> {
    /// The runtime's time.
    pub time: std::borrow::Cow<'a, str>,
    /// stdout or stderr.
    pub stream: Stream,
    /// More pieces of the same line follow.
    pub partial: bool,
    /// The text of this piece, without any newline.
    pub text: std::borrow::Cow<'a, [u8]>,
}

/// Parses `line` in `format` (`cri` or `docker`); `None` when it is not in that format.
pub fn parse(format: LogFormat, line: &[u8]) -> Option<Piece<'_>> {
    match format {
        LogFormat::Cri => parse_cri(line),
        LogFormat::Docker => parse_docker(line),
        LogFormat::Raw | LogFormat::Auto => None,
    }
}

/// A CRI line: time, stream and tag separated by single spaces, then the text (possibly
/// empty). The tag is `P` or `F`, optionally followed by `:`-separated tags of later versions.
pub fn parse_cri(line: &[u8]) -> Option<Piece<'_>> {
    let mut parts = line.splitn(4, |&b| b == b' ');
    let time = parts.next()?;
    let stream = Stream::from_name(parts.next()?)?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or_default();
    if !time.first().is_some_and(u8::is_ascii_digit) {
        return None;
    }
    let partial = match tag.split(|&b| b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    Some(Piece {
        time: std::borrow::Cow::Borrowed(std::str::from_utf8(time).ok()?),
        stream,
        partial,
        text: std::borrow::Cow::Borrowed(text),
    })
}

#[derive(Deserialize)]
struct DockerLine<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    stream: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    time: std::borrow::Cow<'a, str>,
}

/// A docker json-file line: a piece is partial when its `log` does not end with a newline.
pub fn parse_docker(line: &[u8]) -> Option<Piece<'_>> {
    if !line.starts_with(b"{") {
        return None;
    }
    let parsed: DockerLine<'_> = serde_json::from_slice(line).ok()?;
    let stream = Stream::from_name(parsed.stream.as_bytes())?;
    let partial = !parsed.log.ends_with('\n');
    let text = match parsed.log {
        std::borrow::Cow::Borrowed(log) => {
            std::borrow::Cow::Borrowed(log.strip_suffix('\n').unwrap_or(log).as_bytes())
        }
        std::borrow::Cow::Owned(mut log) => {
            if !partial {
                log.pop();
            }
            std::borrow::Cow::Owned(log.into_bytes())
        }
    };
    Some(Piece {
        time: parsed.time,
        stream,
        partial,
        text,
    })
}

/// The pieces of one stream's line read so far, waiting for the final piece. Saved in the
/// collector's commit with the file's offset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingLine {
    /// The stream the pieces are on.
    pub stream: Stream,
    /// The identity of the file the first piece is in.
    pub source_id: u64,
    /// The offset of the first piece's line: with `source_id`, the joined record's id.
    pub offset: u64,
    /// The runtime's time of the first piece.
    pub logged_at: String,
    /// The text so far, base64 (exact whatever the bytes).
    #[serde(with = "base64_bytes")]
    pub text: Vec<u8>,
}

impl PendingLine {
    fn id(&self) -> RecordId {
        RecordId {
            source_id: self.source_id,
            offset: self.offset,
        }
    }
}

mod base64_bytes {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// A whole line, ready to become a record.
#[derive(Debug, PartialEq, Eq)]
pub struct Joined<'a> {
    /// The first piece's id.
    pub id: RecordId,
    /// The stream.
    pub stream: Stream,
    /// The runtime's time of the first piece.
    pub logged_at: std::borrow::Cow<'a, str>,
    /// The whole text.
    pub text: std::borrow::Cow<'a, [u8]>,
    /// The pieces passed the line limit: this is one part, the rest follows.
    pub split: bool,
    /// The pieces were never finished (the file was closed first).
    pub partial: bool,
}

impl Joined<'_> {
    /// The record's flags: `split` or `partial` as the joining ended.
    pub fn flags(&self) -> LineFlags {
        LineFlags {
            split: self.split,
            partial: self.partial,
            ..LineFlags::default()
        }
    }

    /// The stream and the runtime's time the record carries.
    pub fn origin(&self) -> ContainerOrigin<'_> {
        ContainerOrigin {
            stream: self.stream,
            logged_at: &self.logged_at,
        }
    }
}

/// Adds `piece`, the line with id `id`, to the lines waiting in `pending`, and returns the
/// line it finishes, if any. A line whose pieces pass `max_bytes` is handed on in parts flagged
/// `split` rather than held without bound.
pub fn join<'a>(
    pending: &mut Vec<PendingLine>,
    piece: Piece<'a>,
    id: RecordId,
    max_bytes: usize,
) -> Option<Joined<'a>> {
    let waiting = pending.iter().position(|p| p.stream == piece.stream);
    match (waiting, piece.partial) {
        (None, false) => Some(Joined {
            id,
            stream: piece.stream,
            logged_at: piece.time,
            text: piece.text,
            split: false,
            partial: false,
        }),
        (None, true) => {
            pending.push(PendingLine {
                stream: piece.stream,
                source_id: id.source_id,
                offset: id.offset,
                logged_at: piece.time.into_owned(),
                text: piece.text.into_owned(),
            });
            None
        }
        (Some(at), partial) => {
            pending[at].text.extend_from_slice(&piece.text);
            if partial && pending[at].text.len() < max_bytes {
                return None;
            }
            let line = pending.swap_remove(at);
            Some(Joined {
                id: line.id(),
                stream: line.stream,
                logged_at: std::borrow::Cow::Owned(line.logged_at),
                text: std::borrow::Cow::Owned(line.text),
                split: partial,
                partial: false,
            })
        }
    }
}

/// The lines still waiting when their file is closed, handed on as they are, flagged partial.
pub fn unfinished(pending: &mut Vec<PendingLine>) -> impl Iterator<Item = Joined<'static>> + '_ {
    pending.drain(..).map(|line| Joined {
        id: line.id(),
        stream: line.stream,
        logged_at: std::borrow::Cow::Owned(line.logged_at),
        text: std::borrow::Cow::Owned(line.text),
        split: false,
        partial: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cri_lines_parse_with_their_stream_tag_and_text() {
        let piece = parse_cri(b"2026-12-06T10:30:45.123456789Z stderr F oops: a b").unwrap();
        assert_eq!(piece.stream, Stream::Stderr);
        assert!(!piece.partial);
        assert_eq!(&*piece.text, b"oops: a b");
        assert_eq!(piece.time, "2026-12-06T10:30:45.123456789Z");
        assert!(
            parse_cri(b"2026-12-06T10:30:45Z stdout P part")
                .unwrap()
                .partial
        );
        assert!(
            !parse_cri(b"2026-12-06T10:30:45Z stdout F:x y")
                .unwrap()
                .partial
        );
        assert_eq!(
            &*parse_cri(b"2026-12-06T10:30:45Z stdout F").unwrap().text,
            b""
        );
        assert_eq!(
            &*parse_cri(b"2026-12-06T10:30:45Z stdout F ").unwrap().text,
            b""
        );
        for bad in [
            &b"hello world"[..],
            b"2026-12-06T10:30:45Z stdin F x",
            b"2026-12-06T10:30:45Z stdout X x",
            b"now stdout F x",
            b"",
        ] {
            assert_eq!(parse_cri(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn docker_lines_parse_and_a_log_without_its_newline_is_a_piece() {
        let piece = parse_docker(
            br#"{"log":"a \"b\"\n","stream":"stdout","time":"2026-12-06T10:30:45.1Z"}"#,
        )
        .unwrap();
        assert_eq!((&*piece.text, piece.partial), (&b"a \"b\""[..], false));
        let piece = parse_docker(br#"{"log":"abc","stream":"stderr","time":"t"}"#).unwrap();
        assert_eq!(
            (&*piece.text, piece.partial, piece.stream),
            (&b"abc"[..], true, Stream::Stderr)
        );
        assert_eq!(
            parse_docker(br#"{"log":"x\n","stream":"other","time":"t"}"#),
            None
        );
        assert_eq!(parse_docker(b"{not json"), None);
    }

    #[test]
    fn auto_takes_the_format_of_the_first_line() {
        let cri = b"2026-12-06T10:30:45Z stdout F x";
        let docker = br#"{"log":"x\n","stream":"stdout","time":"t"}"#;
        assert_eq!(LogFormat::Auto.resolve(cri), LogFormat::Cri);
        assert_eq!(LogFormat::Auto.resolve(docker), LogFormat::Docker);
        assert_eq!(LogFormat::Auto.resolve(b"plain"), LogFormat::Raw);
        assert_eq!(LogFormat::Cri.resolve(b"plain"), LogFormat::Cri);
    }

    fn id(offset: u64) -> RecordId {
        RecordId {
            source_id: 7,
            offset,
        }
    }

    fn cri(stream: &str, tag: &str, text: &str) -> Vec<u8> {
        format!("2026-12-06T10:30:45.{}Z {stream} {tag} {text}", text.len()).into_bytes()
    }

    #[test]
    fn pieces_of_a_stream_join_across_the_other_stream_and_a_saved_position() {
        let mut pending = Vec::new();
        let mut lines = Vec::new();
        let input = [
            cri("stdout", "P", "hel"),
            cri("stderr", "F", "boom"),
            cri("stdout", "P", "lo "),
            cri("stdout", "F", "world"),
        ];
        for (offset, line) in input.iter().enumerate() {
            // Saved and restored between every two lines, as a restart would.
            let saved = serde_json::to_string(&pending).unwrap();
            pending = serde_json::from_str(&saved).unwrap();
            let piece = parse_cri(line).unwrap();
            if let Some(joined) = join(&mut pending, piece, id(offset as u64 * 100), 1 << 20) {
                lines.push((joined.id.offset, joined.stream, joined.text.into_owned()));
            }
        }
        assert_eq!(
            lines,
            vec![
                (100, Stream::Stderr, b"boom".to_vec()),
                (0, Stream::Stdout, b"hello world".to_vec()),
            ]
        );
        assert!(pending.is_empty());
    }

    #[test]
    fn pieces_past_the_limit_are_handed_on_in_split_parts_and_unfinished_ones_at_close() {
        let mut pending = Vec::new();
        let a = cri("stdout", "P", "aaaa");
        assert_eq!(join(&mut pending, parse_cri(&a).unwrap(), id(0), 6), None);
        let b = cri("stdout", "P", "bbbb");
        let joined = join(&mut pending, parse_cri(&b).unwrap(), id(40), 6).unwrap();
        assert_eq!(
            (&*joined.text, joined.split, joined.id),
            (&b"aaaabbbb"[..], true, id(0))
        );
        let c = cri("stdout", "P", "cc");
        assert_eq!(join(&mut pending, parse_cri(&c).unwrap(), id(80), 6), None);
        let rest: Vec<_> = unfinished(&mut pending).collect();
        assert_eq!(rest.len(), 1);
        assert!(rest[0].partial && rest[0].id == id(80) && &*rest[0].text == b"cc");
    }
}
