//! Steps that parse a field into more fields: `regex`, `json` and `logfmt`. A parse that fails
//! leaves its source field where it was.

use serde_json::{Map, Value};
use sidecar_record::{key_cmp, FieldName, Fields};

use super::{Compile, Run};
use crate::pattern::FieldPattern;
use crate::spec::{JsonSpec, LogfmtSpec, OnMismatch, RegexSpec};
use crate::{build_regex, push_error, RulesError, REGEX_SIZE_LIMIT_BYTES};

/// Prefix under which a `json` step without `overwrite` keeps a payload key that the record
/// already has, so neither value is lost.
const CONFLICT_PREFIX: &str = "json_";

/// `regex:` named captures become string fields.
#[derive(Debug)]
pub(super) struct Regex {
    field: FieldName,
    regex: FieldPattern,
    /// Capture group index and name, for the named groups.
    groups: Vec<(usize, FieldName)>,
    /// Index of the group named like `field`, if any: when it takes part in a match, its
    /// text replaces the field's value.
    source_group: Option<usize>,
    on_mismatch: OnMismatch,
    remove_source: bool,
}

impl Regex {
    pub(super) fn compile(s: RegexSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        let field = c.field("field", s.field)?;
        let regex = FieldPattern::new(
            build_regex(&s.pattern, c.scope, &c.at("pattern"))?,
            REGEX_SIZE_LIMIT_BYTES,
        );
        let groups: Vec<(usize, FieldName)> = regex
            .regex()
            .capture_names()
            .enumerate()
            .filter_map(|(i, name)| name.map(|name| (i, FieldName::from(name))))
            .collect();
        let source_group = groups
            .iter()
            .find(|(_, name)| *name == field)
            .map(|(index, _)| *index);
        Ok(Self {
            field,
            regex,
            groups,
            source_group,
            on_mismatch: s.on_mismatch,
            remove_source: s.remove_source,
        })
    }

    pub(super) fn apply(&self, run: &Run<'_>, record: &mut Fields) {
        let Self {
            field,
            regex,
            groups,
            source_group,
            on_mismatch,
            remove_source,
        } = self;
        // Take the text out of its slot so the captures can be inserted while it is read; it
        // goes back below. No copy of the text is made.
        let text = match record.get_mut(field) {
            None => return,
            Some(Value::String(text)) => std::mem::take(text),
            Some(_) => {
                if *on_mismatch == OnMismatch::Error {
                    let message = format!("{}: `{field}` is not a string", run.label);
                    push_error(record, message);
                }
                return;
            }
        };
        let (matched, source_written) = regex.with_captures(&text, |found| {
            let Some(captures) = found else {
                return (false, false);
            };
            for (index, name) in groups {
                if let Some(group) = captures.get(*index) {
                    record.insert(name.clone(), Value::String(group.to_owned()));
                }
            }
            let written = source_group.is_some_and(|i| captures.get(i).is_some());
            (true, written)
        });
        if source_written {
            // The capture named like the field is its new value.
        } else if matched && *remove_source {
            record.remove(field);
        } else if let Some(slot) = record.get_mut(field) {
            *slot = Value::String(text);
        }
        if !matched && *on_mismatch == OnMismatch::Error {
            let message = format!("{}: `{field}` does not match the pattern", run.label);
            push_error(record, message);
        }
    }
}

/// `json:` a field holding a JSON object is decoded and merged (or put under `into`).
#[derive(Debug)]
pub(super) struct Json {
    field: FieldName,
    into: Option<FieldName>,
    remove_source: bool,
    when_starts_with: Option<String>,
    overwrite: bool,
}

impl Json {
    pub(super) fn compile(s: JsonSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        let into = s.into.map(|into| c.field("into", into)).transpose()?;
        Ok(Self {
            field: c.field("field", s.field)?,
            into,
            remove_source: s.remove_source,
            when_starts_with: s.when_starts_with,
            overwrite: s.overwrite,
        })
    }

    pub(super) fn apply(&self, run: &Run<'_>, record: &mut Fields) {
        let Self {
            field,
            into,
            remove_source,
            when_starts_with,
            overwrite,
        } = self;
        let Some(Value::String(text)) = record.get(field) else {
            return;
        };
        if let Some(prefix) = when_starts_with {
            if !text.trim_start().starts_with(prefix.as_str()) {
                return;
            }
        }
        let members = match Members::decode(text) {
            Ok(Members::Object(members)) => members,
            Ok(Members::Not(kind)) => {
                let message = format!(
                    "{}: `{field}` holds a JSON {kind}, not an object",
                    run.label
                );
                push_error(record, message);
                return;
            }
            Err(error) => {
                let message = format!("{}: cannot decode `{field}` as JSON: {error}", run.label);
                push_error(record, message);
                return;
            }
        };
        let source = remove_source.then_some(field.as_str());
        place_parsed(record, members, source, into.as_deref(), *overwrite);
    }
}

/// A `json` step's payload decoded: an object's members, or the kind of the value that is not
/// an object.
///
/// The members come as a list in key order, not as a `Map`: a payload is merged into the
/// record and dropped, and building and freeing a tree of its keys for that cost about 3 % of
/// the processor's CPU (BENCHMARKS.md). Keys are decoded straight into field names, inline up
/// to 24 bytes: no allocation per key.
enum Members {
    Object(Vec<(FieldName, Value)>),
    Not(&'static str),
}

impl Members {
    /// Decodes `text`, which must hold one JSON value and nothing after it.
    fn decode(text: &str) -> serde_json::Result<Self> {
        let mut decoder = serde_json::Deserializer::from_str(text);
        let decoded = serde::Deserializer::deserialize_any(&mut decoder, MembersVisitor)?;
        decoder.end()?;
        Ok(match decoded {
            Self::Object(mut members) => {
                // In key order, the later of equal keys kept: what a `Map` holds.
                members.sort_by(|a, b| key_cmp(&a.0, &b.0));
                if members.windows(2).any(|pair| pair[0].0 == pair[1].0) {
                    members.reverse();
                    members.dedup_by(|a, b| a.0 == b.0);
                    members.reverse();
                }
                Self::Object(members)
            }
            not => not,
        })
    }
}

struct MembersVisitor;

impl<'de> serde::de::Visitor<'de> for MembersVisitor {
    type Value = Members;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(member) = map.next_entry::<FieldName, Value>()? {
            members.push(member);
        }
        Ok(Members::Object(members))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Members, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(Members::Not("array"))
    }

    fn visit_unit<E>(self) -> Result<Members, E> {
        Ok(Members::Not("null"))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Members, E> {
        Ok(Members::Not("boolean"))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Members, E> {
        Ok(Members::Not("number"))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Members, E> {
        Ok(Members::Not("number"))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Members, E> {
        Ok(Members::Not("number"))
    }

    fn visit_str<E>(self, _: &str) -> Result<Members, E> {
        Ok(Members::Not("string"))
    }
}

/// `logfmt:` `key=value` pairs become fields.
#[derive(Debug)]
pub(super) struct Logfmt {
    field: FieldName,
    into: Option<FieldName>,
    remove_source: bool,
    pair_separator: char,
    value_separator: char,
    overwrite: bool,
}

impl Logfmt {
    pub(super) fn compile(s: LogfmtSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        if s.pair_separator == s.value_separator {
            return Err(c.invalid("value_separator", "must differ from pair_separator"));
        }
        let into = s.into.map(|into| c.field("into", into)).transpose()?;
        Ok(Self {
            field: c.field("field", s.field)?,
            into,
            remove_source: s.remove_source,
            pair_separator: s.pair_separator,
            value_separator: s.value_separator,
            overwrite: s.overwrite,
        })
    }

    pub(super) fn apply(&self, record: &mut Fields) {
        let Some(Value::String(text)) = record.get(&self.field) else {
            return;
        };
        let pairs = parse_logfmt(text, self.pair_separator, self.value_separator);
        if pairs.is_empty() {
            return;
        }
        let source = self.remove_source.then_some(self.field.as_str());
        place_parsed(record, pairs, source, self.into.as_deref(), self.overwrite);
    }
}

/// Where a parse step's fields go: under `into`, or merged into the record; the parsed
/// `source` field is removed first when the step says so.
fn place_parsed<K: AsRef<str> + Into<FieldName>>(
    record: &mut Fields,
    parsed: impl IntoIterator<Item = (K, Value)>,
    source: Option<&str>,
    into: Option<&str>,
    overwrite: bool,
) {
    if let Some(source) = source {
        record.remove(source);
    }
    match into {
        Some(into) => {
            let object = parsed
                .into_iter()
                .map(|(key, value)| (key.as_ref().to_owned(), value))
                .collect();
            record.insert(into, Value::Object(object));
        }
        None => merge(record, parsed, overwrite),
    }
}

/// Merges a decoded payload, in key order, into the record. Without `overwrite`, a key the
/// record already has keeps its value and the payload's goes to `json_<key>`: payload keys come
/// from the data, so a line must not be able to replace fields such as `id` or `timestamp`
/// unnoticed.
fn merge<K: AsRef<str> + Into<FieldName>>(
    record: &mut Fields,
    members: impl IntoIterator<Item = (K, Value)>,
    overwrite: bool,
) {
    for (key, value) in members {
        if overwrite {
            record.insert(key, value);
        } else if let Err((key, value)) = record.insert_if_absent(key, value) {
            record.insert(format!("{CONFLICT_PREFIX}{}", key.as_ref()), value);
        }
    }
}

/// `key=value key2="quoted value"` pairs; a word without a separator is a `true` flag, as in
/// logfmt. Values stay text: a `convert:` step types them.
fn parse_logfmt(text: &str, pair_separator: char, value_separator: char) -> Map<String, Value> {
    let mut pairs = Map::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|&(_, c)| c == pair_separator).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key_end = text.len();
        let mut has_value = false;
        while let Some(&(i, c)) = chars.peek() {
            if c == value_separator {
                key_end = i;
                has_value = true;
                chars.next();
                break;
            }
            if c == pair_separator {
                key_end = i;
                break;
            }
            chars.next();
        }
        let key = &text[start..key_end];
        let value = if !has_value {
            Value::Bool(true)
        } else if chars.next_if(|&(_, c)| c == '"').is_some() {
            let mut value = String::new();
            while let Some((_, c)) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, 't')) => value.push('\t'),
                        Some((_, other)) => value.push(other),
                        None => {}
                    },
                    other => value.push(other),
                }
            }
            Value::String(value)
        } else {
            let value_start = chars.peek().map_or(text.len(), |&(i, _)| i);
            let mut value_end = text.len();
            while let Some(&(i, c)) = chars.peek() {
                if c == pair_separator {
                    value_end = i;
                    break;
                }
                chars.next();
            }
            Value::String(text[value_start..value_end].to_owned())
        };
        if !key.is_empty() {
            pairs.insert(key.to_owned(), value);
        }
    }
    pairs
}
