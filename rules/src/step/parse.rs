//! Steps that parse a field into more fields: `regex`, `json` and `logfmt`. A parse that fails
//! leaves its source field where it was.

use serde_json::{Map, Value};
use sidecar_record::Fields;

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
    field: String,
    regex: FieldPattern,
    /// Capture group index and name, for the named groups.
    groups: Vec<(usize, String)>,
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
        let groups: Vec<(usize, String)> = regex
            .regex()
            .capture_names()
            .enumerate()
            .filter_map(|(i, name)| name.map(|name| (i, name.to_owned())))
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
        let (matched, source_written) = match regex.captures(&text) {
            Some(captures) => {
                for (index, name) in groups {
                    if let Some(group) = captures.get(*index) {
                        let value = Value::String(group.to_owned());
                        record.insert(name.clone(), value);
                    }
                }
                let written = source_group.is_some_and(|i| captures.get(i).is_some());
                (true, written)
            }
            None => (false, false),
        };
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
    field: String,
    into: Option<String>,
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
        let object = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(other) => {
                let kind = json_kind(&other);
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
        place_parsed(record, object, source, into.as_deref(), *overwrite);
    }
}

/// `logfmt:` `key=value` pairs become fields.
#[derive(Debug)]
pub(super) struct Logfmt {
    field: String,
    into: Option<String>,
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
fn place_parsed(
    record: &mut Fields,
    parsed: Map<String, Value>,
    source: Option<&str>,
    into: Option<&str>,
    overwrite: bool,
) {
    if let Some(source) = source {
        record.remove(source);
    }
    match into {
        Some(into) => {
            record.insert(into.to_owned(), Value::Object(parsed));
        }
        None => merge(record, parsed, overwrite),
    }
}

/// Merges a decoded payload into the record. Without `overwrite`, a key the record already has
/// keeps its value and the payload's goes to `json_<key>`: payload keys come from the data, so
/// a line must not be able to replace fields such as `id` or `timestamp` unnoticed.
fn merge(record: &mut Fields, object: Map<String, Value>, overwrite: bool) {
    for (key, value) in object {
        if overwrite || !record.contains_key(&key) {
            record.insert(key, value);
        } else {
            record.insert(format!("{CONFLICT_PREFIX}{key}"), value);
        }
    }
}

/// The JSON type of a non-object value, for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
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
