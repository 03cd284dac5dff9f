//! Steps: compiled from the file once, then run on each record in place.
//!
//! A step never fails the record: what goes wrong is appended to `processing_error` and the
//! next step runs. The one thing easy to get wrong is keeping data when a step fails: a JSON
//! step that cannot decode leaves its source field where it was, and a payload key that
//! collides with an existing field does not replace it unless the step says `overwrite`.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Map, Number, Value};

use super::condition::Condition;
use super::pattern::FieldPattern;
use super::redact::Redactor;
use super::spec::{FieldType, OnMismatch, StepSpec, TimestampLayout};
use super::timestamp::{self, Zone};
use super::{build_regex, present, push_error, RulesError, Scope, REGEX_SIZE_LIMIT_BYTES};

/// Fields a `keep:` step never removes: the record's identity and what went wrong with it.
const ALWAYS_KEPT: [&str; 4] = ["id", "source_file", "collected_at", "processing_error"];

/// Drop reason of a `sample:` step, as the drop metric's `reason` label.
pub(super) const SAMPLED: &str = "sampled";
/// Drop reason of a `rate_limit:` step.
pub(super) const RATE_LIMITED: &str = "rate_limited";
/// Drop reason of a `filter:` step without its own `reason`.
pub(super) const FILTERED: &str = "filtered";

/// What running a step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StepResult<'a> {
    /// Its `when` did not hold (or the line was too long to parse): nothing done.
    Skipped,
    /// It ran.
    Ran,
    /// It dropped the record, for this reason.
    Drop(&'a str),
}

/// The value a `set:` step writes.
#[derive(Debug)]
enum SetValue {
    /// A fixed value (also an environment variable, read at load).
    Static(Value),
    /// An environment variable that was not set at load: the step does nothing.
    Unset,
    /// Text with `{{field}}` placeholders filled from the record.
    Template(Vec<TemplatePart>),
}

/// A piece of a template.
#[derive(Debug)]
enum TemplatePart {
    /// Text as written (pod variables and `env.` are resolved at load into this).
    Text(String),
    /// The text of a record field; empty when absent.
    Field(String),
}

/// A token bucket per source file, for `rate_limit:`.
#[derive(Debug, Default)]
struct Buckets(parking_lot::Mutex<HashMap<Box<str>, Bucket>>);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Prefix under which a `json` step without `overwrite` keeps a payload key that the record
/// already has, so neither value is lost.
const CONFLICT_PREFIX: &str = "json_";

/// A compiled step.
#[derive(Debug)]
pub(super) struct Step {
    /// Names the step in `processing_error`: `common[0] (regex)`, `rule "access" steps[1] (json)`.
    label: String,
    /// Run only when this holds.
    when: Option<Condition>,
    /// What the step does.
    action: Action,
}

/// What a step does.
#[derive(Debug)]
enum Action {
    Regex {
        field: String,
        regex: FieldPattern,
        /// Capture group index and name, for the named groups.
        groups: Vec<(usize, String)>,
        /// Index of the group named like `field`, if any: when it takes part in a match, its
        /// text replaces the field's value.
        source_group: Option<usize>,
        on_mismatch: OnMismatch,
        remove_source: bool,
    },
    Json {
        field: String,
        into: Option<String>,
        remove_source: bool,
        when_starts_with: Option<String>,
        overwrite: bool,
    },
    Set {
        field: String,
        value: SetValue,
        only_if_missing: bool,
    },
    Rename {
        from: String,
        to: String,
        only_if_missing: bool,
        keep_source: bool,
    },
    Remove {
        fields: Vec<String>,
    },
    Derive {
        field: String,
        cases: Vec<(Condition, Value)>,
        default: Option<Value>,
        only_if_missing: bool,
    },
    Lowercase {
        field: String,
    },
    Uppercase {
        field: String,
    },
    Logfmt {
        field: String,
        into: Option<String>,
        remove_source: bool,
        pair_separator: char,
        value_separator: char,
        overwrite: bool,
    },
    Timestamp {
        field: String,
        target: String,
        layouts: Vec<TimestampLayout>,
        zone: Zone,
        keep_original: Option<String>,
        on_mismatch: OnMismatch,
    },
    Convert {
        fields: Vec<(String, FieldType)>,
    },
    Keep {
        fields: Vec<String>,
    },
    Filter {
        condition: Condition,
        /// true: `keep:` (drop unless it holds); false: `drop:`.
        keep: bool,
        reason: String,
    },
    Sample {
        one_in: u64,
        /// With a field: the rate per value of it (`one_in` applies to none).
        by_value: Option<(String, Vec<(String, u64)>)>,
    },
    RateLimit {
        per_second: f64,
        burst: f64,
        buckets: Buckets,
    },
    Redact(Redactor),
}

impl Step {
    /// Compiles one step. `path` is where it sits in the file (`common[2]`, `steps[0]`) and
    /// `label` how `processing_error` names it.
    ///
    /// # Errors
    /// Empty field names, bad regexes, bad conditions, an empty `fields` or `cases` list,
    /// a rename onto itself.
    pub(super) fn compile(
        spec: StepSpec,
        scope: &Scope<'_>,
        path: &str,
        label: String,
    ) -> Result<Step, RulesError> {
        let kind = spec.kind();
        let at = |key: &str| format!("{path}.{kind}.{key}");
        let field_name = |key: &str, name: String| -> Result<String, RulesError> {
            if name.is_empty() {
                Err(scope.invalid(at(key), "must not be empty"))
            } else {
                Ok(name)
            }
        };
        let when_of = |when: Option<_>| {
            when.map(|spec| {
                Condition::compile(
                    spec,
                    None,
                    scope,
                    &at("when"),
                    "add `field:` to this condition",
                )
            })
            .transpose()
        };

        let (when, action) = match spec {
            StepSpec::Regex(s) => {
                let field = field_name("field", s.field)?;
                let regex = FieldPattern::new(
                    build_regex(&s.pattern, scope, &at("pattern"))?,
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
                let action = Action::Regex {
                    field,
                    regex,
                    groups,
                    source_group,
                    on_mismatch: s.on_mismatch,
                    remove_source: s.remove_source,
                };
                (when_of(s.when)?, action)
            }
            StepSpec::Json(s) => {
                let into = s.into.map(|into| field_name("into", into)).transpose()?;
                let action = Action::Json {
                    field: field_name("field", s.field)?,
                    into,
                    remove_source: s.remove_source,
                    when_starts_with: s.when_starts_with,
                    overwrite: s.overwrite,
                };
                (when_of(s.when)?, action)
            }
            StepSpec::Set(s) => {
                let value = match (s.value, s.env, s.template) {
                    (Some(value), None, None) => SetValue::Static(value),
                    (None, Some(name), None) => match std::env::var(&name) {
                        Ok(text) => SetValue::Static(Value::String(text)),
                        Err(_) => SetValue::Unset,
                    },
                    (None, None, Some(template)) => SetValue::Template(
                        compile_template(&template)
                            .map_err(|reason| scope.invalid(at("template"), reason))?,
                    ),
                    _ => {
                        return Err(
                            scope.invalid(at("value"), "give exactly one of value, env, template")
                        )
                    }
                };
                let action = Action::Set {
                    field: field_name("field", s.field)?,
                    value,
                    only_if_missing: s.only_if_missing,
                };
                (when_of(s.when)?, action)
            }
            StepSpec::Rename(s) => {
                let from = field_name("from", s.from)?;
                let to = field_name("to", s.to)?;
                if from == to {
                    return Err(scope.invalid(at("to"), "is the same field as `from`"));
                }
                let action = Action::Rename {
                    from,
                    to,
                    only_if_missing: s.only_if_missing,
                    keep_source: s.keep_source,
                };
                (when_of(s.when)?, action)
            }
            StepSpec::Remove(s) => {
                if s.fields.is_empty() {
                    return Err(scope.invalid(at("fields"), "must list at least one field"));
                }
                let fields = s
                    .fields
                    .into_iter()
                    .enumerate()
                    .map(|(i, name)| field_name(&format!("fields[{i}]"), name))
                    .collect::<Result<Vec<_>, _>>()?;
                (when_of(s.when)?, Action::Remove { fields })
            }
            StepSpec::Derive(s) => {
                let field = field_name("field", s.field)?;
                let from = s.from.map(|from| field_name("from", from)).transpose()?;
                if s.cases.is_empty() {
                    return Err(scope.invalid(at("cases"), "must list at least one case"));
                }
                let cases = s
                    .cases
                    .into_iter()
                    .enumerate()
                    .map(|(i, case)| {
                        let condition = Condition::compile(
                            case.when,
                            from.as_deref(),
                            scope,
                            &at(&format!("cases[{i}].when")),
                            "set `from` on the derive step or `field` in this condition",
                        )?;
                        Ok((condition, case.value))
                    })
                    .collect::<Result<Vec<_>, RulesError>>()?;
                let action = Action::Derive {
                    field,
                    cases,
                    default: s.default,
                    only_if_missing: s.only_if_missing,
                };
                (when_of(s.when)?, action)
            }
            StepSpec::Lowercase(s) => {
                let field = field_name("field", s.field)?;
                (when_of(s.when)?, Action::Lowercase { field })
            }
            StepSpec::Uppercase(s) => {
                let field = field_name("field", s.field)?;
                (when_of(s.when)?, Action::Uppercase { field })
            }
            StepSpec::Logfmt(s) => {
                if s.pair_separator == s.value_separator {
                    return Err(
                        scope.invalid(at("value_separator"), "must differ from pair_separator")
                    );
                }
                let into = s.into.map(|into| field_name("into", into)).transpose()?;
                let action = Action::Logfmt {
                    field: field_name("field", s.field)?,
                    into,
                    remove_source: s.remove_source,
                    pair_separator: s.pair_separator,
                    value_separator: s.value_separator,
                    overwrite: s.overwrite,
                };
                (when_of(s.when)?, action)
            }
            StepSpec::Timestamp(s) => {
                if s.layouts.is_empty() {
                    return Err(scope.invalid(at("layouts"), "must list at least one layout"));
                }
                let zone = match s.timezone.as_deref() {
                    None => Zone::Utc,
                    Some(text) => {
                        Zone::parse(text).map_err(|reason| scope.invalid(at("timezone"), reason))?
                    }
                };
                let keep_original = s
                    .keep_original
                    .map(|name| field_name("keep_original", name))
                    .transpose()?;
                let action = Action::Timestamp {
                    field: field_name("field", s.field)?,
                    target: field_name("target", s.target)?,
                    layouts: s.layouts,
                    zone,
                    keep_original,
                    on_mismatch: s.on_mismatch,
                };
                (when_of(s.when)?, action)
            }
            StepSpec::Convert(s) => {
                if s.fields.is_empty() {
                    return Err(scope.invalid(at("fields"), "must name at least one field"));
                }
                if s.fields.keys().any(String::is_empty) {
                    return Err(scope.invalid(at("fields"), "a field name must not be empty"));
                }
                let fields = s.fields.into_iter().collect();
                (when_of(s.when)?, Action::Convert { fields })
            }
            StepSpec::Keep(s) => {
                if s.fields.is_empty() {
                    return Err(scope.invalid(at("fields"), "must list at least one field"));
                }
                let fields = s
                    .fields
                    .into_iter()
                    .enumerate()
                    .map(|(i, name)| field_name(&format!("fields[{i}]"), name))
                    .collect::<Result<Vec<_>, _>>()?;
                (when_of(s.when)?, Action::Keep { fields })
            }
            StepSpec::Filter(s) => {
                let (spec, keep, key) = match (s.drop, s.keep) {
                    (Some(drop), None) => (drop, false, "drop"),
                    (None, Some(keep)) => (keep, true, "keep"),
                    _ => {
                        return Err(
                            scope.invalid(path_kind(path, kind), "give exactly one of drop, keep")
                        )
                    }
                };
                let condition = Condition::compile(
                    spec,
                    None,
                    scope,
                    &at(key),
                    "add `field:` to this condition",
                )?;
                let reason = match s.reason {
                    Some(reason) if reason.is_empty() => {
                        return Err(scope.invalid(at("reason"), "must not be empty"))
                    }
                    Some(reason) => reason,
                    None => FILTERED.to_owned(),
                };
                (
                    None,
                    Action::Filter {
                        condition,
                        keep,
                        reason,
                    },
                )
            }
            StepSpec::Sample(s) => {
                let (one_in, by_value) = match (s.one_in, s.field) {
                    (Some(n), None) if s.one_in_by_value.is_empty() => (n, None),
                    (None, Some(field)) if !s.one_in_by_value.is_empty() => {
                        let field = field_name("field", field)?;
                        (
                            1,
                            Some((field, s.one_in_by_value.into_iter().collect::<Vec<_>>())),
                        )
                    }
                    _ => {
                        return Err(scope.invalid(
                            path_kind(path, kind),
                            "give `one_in: N`, or `field` with `one_in_by_value: {value: N}`",
                        ))
                    }
                };
                let zero = one_in == 0
                    || by_value
                        .as_ref()
                        .is_some_and(|(_, rates)| rates.iter().any(|(_, n)| *n == 0));
                if zero {
                    return Err(
                        scope.invalid(at("one_in"), "must be at least 1 (1 keeps every record)")
                    );
                }
                (when_of(s.when)?, Action::Sample { one_in, by_value })
            }
            StepSpec::RateLimit(s) => {
                let per_second = s.records_per_second;
                if !(per_second.is_finite() && per_second > 0.0) {
                    return Err(
                        scope.invalid(at("records_per_second"), "must be a positive number")
                    );
                }
                let burst = s.burst.unwrap_or(per_second.max(1.0));
                if !(burst.is_finite() && burst >= 1.0) {
                    return Err(scope.invalid(at("burst"), "must be at least 1"));
                }
                let action = Action::RateLimit {
                    per_second,
                    burst,
                    buckets: Buckets::default(),
                };
                (when_of(s.when)?, action)
            }
            StepSpec::Redact(s) => {
                if s.builtins.is_empty() && s.patterns.is_empty() {
                    return Err(scope.invalid(
                        path_kind(path, kind),
                        "give `builtins`, `patterns`, or both",
                    ));
                }
                let fields = s
                    .fields
                    .into_iter()
                    .enumerate()
                    .map(|(i, name)| field_name(&format!("fields[{i}]"), name))
                    .collect::<Result<Vec<_>, _>>()?;
                let custom = s
                    .patterns
                    .iter()
                    .enumerate()
                    .map(|(i, pattern)| build_regex(pattern, scope, &at(&format!("patterns[{i}]"))))
                    .collect::<Result<Vec<_>, _>>()?;
                let builtins_at = at("builtins");
                let redactor =
                    Redactor::new(fields, &s.builtins, custom, s.mask, &mut |pattern: &str| {
                        build_regex(pattern, scope, &builtins_at)
                    })?;
                (when_of(s.when)?, Action::Redact(redactor))
            }
        };
        Ok(Step {
            label,
            when,
            action,
        })
    }

    /// The step's label, as `processing_error` and `explain` name it.
    pub(super) fn label(&self) -> &str {
        &self.label
    }

    /// Runs the step on a record of `source`. Parsing steps (regex, json, logfmt) are
    /// skipped when `line_too_long`.
    pub(super) fn apply(
        &self,
        source: &str,
        record: &mut Map<String, Value>,
        line_too_long: bool,
    ) -> StepResult<'_> {
        let parses = matches!(
            self.action,
            Action::Regex { .. } | Action::Json { .. } | Action::Logfmt { .. }
        );
        if line_too_long && parses {
            return StepResult::Skipped;
        }
        if let Some(when) = &self.when {
            if !when.holds(record) {
                return StepResult::Skipped;
            }
        }
        match self.act(source, record) {
            Some(reason) => StepResult::Drop(reason),
            None => StepResult::Ran,
        }
    }

    /// Does what the step does; `Some(reason)` when it drops the record.
    fn act(&self, source: &str, record: &mut Map<String, Value>) -> Option<&str> {
        match &self.action {
            Action::Regex {
                field,
                regex,
                groups,
                source_group,
                on_mismatch,
                remove_source,
            } => {
                // Take the text out of its slot so the captures can be inserted while it is
                // read; it goes back below. No copy of the text is made.
                let text = match record.get_mut(field) {
                    None => return None,
                    Some(Value::String(text)) => std::mem::take(text),
                    Some(_) => {
                        if *on_mismatch == OnMismatch::Error {
                            let message = format!("{}: `{field}` is not a string", self.label);
                            push_error(record, message);
                        }
                        return None;
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
                } else {
                    if let Some(slot) = record.get_mut(field) {
                        *slot = Value::String(text);
                    }
                }
                if !matched && *on_mismatch == OnMismatch::Error {
                    let message = format!("{}: `{field}` does not match the pattern", self.label);
                    push_error(record, message);
                }
            }
            Action::Json {
                field,
                into,
                remove_source,
                when_starts_with,
                overwrite,
            } => {
                let Some(Value::String(text)) = record.get(field) else {
                    return None;
                };
                if let Some(prefix) = when_starts_with {
                    if !text.trim_start().starts_with(prefix.as_str()) {
                        return None;
                    }
                }
                let object = match serde_json::from_str::<Value>(text) {
                    Ok(Value::Object(object)) => object,
                    Ok(other) => {
                        let kind = json_kind(&other);
                        let message = format!(
                            "{}: `{field}` holds a JSON {kind}, not an object",
                            self.label
                        );
                        push_error(record, message);
                        return None;
                    }
                    Err(error) => {
                        let message =
                            format!("{}: cannot decode `{field}` as JSON: {error}", self.label);
                        push_error(record, message);
                        return None;
                    }
                };
                let source = remove_source.then_some(field.as_str());
                place_parsed(record, object, source, into.as_deref(), *overwrite);
            }
            Action::Set {
                field,
                value,
                only_if_missing,
            } => {
                if *only_if_missing && present(record, field).is_some() {
                    return None;
                }
                let value = match value {
                    SetValue::Static(value) => value.clone(),
                    SetValue::Unset => return None,
                    SetValue::Template(parts) => Value::String(fill_template(parts, record)),
                };
                record.insert(field.clone(), value);
            }
            Action::Rename {
                from,
                to,
                only_if_missing,
                keep_source,
            } => {
                if !record.contains_key(from) || (*only_if_missing && present(record, to).is_some())
                {
                    return None;
                }
                let value = if *keep_source {
                    record.get(from).cloned()
                } else {
                    record.remove(from)
                };
                if let Some(value) = value {
                    record.insert(to.clone(), value);
                }
            }
            Action::Remove { fields } => {
                for field in fields {
                    record.remove(field);
                }
            }
            Action::Derive {
                field,
                cases,
                default,
                only_if_missing,
            } => {
                if *only_if_missing && present(record, field).is_some() {
                    return None;
                }
                let chosen = cases
                    .iter()
                    .find(|(condition, _)| condition.holds(record))
                    .map(|(_, value)| value)
                    .or(default.as_ref());
                if let Some(value) = chosen {
                    record.insert(field.clone(), value.clone());
                }
            }
            Action::Lowercase { field } => {
                if let Some(Value::String(text)) = record.get_mut(field) {
                    if text.is_ascii() {
                        text.make_ascii_lowercase();
                    } else {
                        *text = text.to_lowercase();
                    }
                }
            }
            Action::Uppercase { field } => {
                if let Some(Value::String(text)) = record.get_mut(field) {
                    if text.is_ascii() {
                        text.make_ascii_uppercase();
                    } else {
                        *text = text.to_uppercase();
                    }
                }
            }
            Action::Logfmt {
                field,
                into,
                remove_source,
                pair_separator,
                value_separator,
                overwrite,
            } => {
                let Some(Value::String(text)) = record.get(field) else {
                    return None;
                };
                let pairs = parse_logfmt(text, *pair_separator, *value_separator);
                if pairs.is_empty() {
                    return None;
                }
                let source = remove_source.then_some(field.as_str());
                place_parsed(record, pairs, source, into.as_deref(), *overwrite);
            }
            Action::Timestamp {
                field,
                target,
                layouts,
                zone,
                keep_original,
                on_mismatch,
            } => {
                let value = present(record, field)?;
                match timestamp::normalise(value, layouts, *zone) {
                    Some(normalised) => {
                        if let Some(keep) = keep_original {
                            let original = value.clone();
                            record.insert(keep.clone(), original);
                        }
                        record.insert(target.clone(), Value::String(normalised));
                    }
                    None if *on_mismatch == OnMismatch::Error => {
                        let message = format!(
                            "{}: `{field}` ({value}) is in none of the layouts",
                            self.label
                        );
                        push_error(record, message);
                    }
                    None => {}
                }
            }
            Action::Convert { fields } => {
                for (field, to) in fields {
                    let Some(value) = record.get_mut(field) else {
                        continue;
                    };
                    if value.is_null() {
                        continue;
                    }
                    match convert(value, *to) {
                        Some(converted) => *value = converted,
                        None => {
                            let message = format!(
                                "{}: cannot convert `{field}` ({value}) to {}",
                                self.label,
                                type_name(*to)
                            );
                            push_error(record, message);
                        }
                    }
                }
            }
            Action::Keep { fields } => {
                record.retain(|key, _| {
                    ALWAYS_KEPT.contains(&key.as_str()) || fields.iter().any(|f| f == key)
                });
            }
            Action::Filter {
                condition,
                keep,
                reason,
            } => {
                if condition.holds(record) != *keep {
                    return Some(reason);
                }
            }
            Action::Sample { one_in, by_value } => {
                let n = match by_value {
                    None => *one_in,
                    Some((field, rates)) => {
                        let Some(Value::String(value)) = present(record, field) else {
                            return None;
                        };
                        match rates.iter().find(|(v, _)| v == value) {
                            Some((_, n)) => *n,
                            None => return None,
                        }
                    }
                };
                if n > 1 && !sampled_in(record, n) {
                    return Some(SAMPLED);
                }
            }
            Action::RateLimit {
                per_second,
                burst,
                buckets,
            } => {
                if !buckets.take(source, *per_second, *burst, Instant::now()) {
                    return Some(RATE_LIMITED);
                }
            }
            Action::Redact(redactor) => {
                redactor.apply(record);
            }
        }
        None
    }
}

/// Merges a decoded payload into the record. Without `overwrite`, a key the record already has
/// keeps its value and the payload's goes to `json_<key>`: payload keys come from the data, so
/// a line must not be able to replace fields such as `id` or `timestamp` unnoticed.
/// Where a parse step's fields go: under `into`, or merged into the record; the parsed
/// `source` field is removed first when the step says so.
fn place_parsed(
    record: &mut Map<String, Value>,
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

fn merge(record: &mut Map<String, Value>, object: Map<String, Value>, overwrite: bool) {
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

/// `path.kind`, where an error about the whole step points.
fn path_kind(path: &str, kind: &str) -> String {
    format!("{path}.{kind}")
}

/// Environment variables the Downward API gives the processor container, by the template
/// names that read them.
pub(super) const POD_VARIABLES: [(&str, &str); 5] = [
    ("pod", "POD_NAME"),
    ("namespace", "POD_NAMESPACE"),
    ("node", "NODE_NAME"),
    ("pod_ip", "POD_IP"),
    ("service_account", "POD_SERVICE_ACCOUNT"),
];

/// Splits a template into text and field parts; pod variables and `env.NAME` become text now.
fn compile_template(template: &str) -> Result<Vec<TemplatePart>, String> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        text.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| format!("{template:?}: `{{{{` without `}}}}`"))?;
        let name = after[..close].trim();
        if name.is_empty() {
            return Err(format!("{template:?}: empty `{{{{}}}}`"));
        }
        if let Some(var) = name.strip_prefix("env.") {
            text.push_str(&std::env::var(var).unwrap_or_default());
        } else if let Some((_, var)) = POD_VARIABLES.iter().find(|(n, _)| *n == name) {
            text.push_str(&std::env::var(var).unwrap_or_default());
        } else {
            if !text.is_empty() {
                parts.push(TemplatePart::Text(std::mem::take(&mut text)));
            }
            parts.push(TemplatePart::Field(name.to_owned()));
        }
        rest = &after[close + 2..];
    }
    text.push_str(rest);
    if !text.is_empty() || parts.is_empty() {
        parts.push(TemplatePart::Text(text));
    }
    Ok(parts)
}

/// A template with the record's fields filled in.
fn fill_template(parts: &[TemplatePart], record: &Map<String, Value>) -> String {
    let mut out = String::new();
    for part in parts {
        match part {
            TemplatePart::Text(text) => out.push_str(text),
            TemplatePart::Field(field) => match present(record, field) {
                Some(Value::String(text)) => out.push_str(text),
                Some(other) => out.push_str(&other.to_string()),
                None => {}
            },
        }
    }
    out
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

/// The value converted, or `None` when it does not read as that type.
fn convert(value: &Value, to: FieldType) -> Option<Value> {
    match to {
        FieldType::Int => match value {
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(value.clone()),
            Value::Number(n) => whole(n.as_f64()?),
            Value::String(s) => {
                let s = s.trim();
                s.parse::<i64>()
                    .ok()
                    .map(Value::from)
                    .or_else(|| whole(s.parse::<f64>().ok()?))
            }
            Value::Bool(b) => Some(Value::from(i64::from(*b))),
            _ => None,
        },
        FieldType::Float => match value {
            Value::Number(n) => Number::from_f64(n.as_f64()?).map(Value::Number),
            Value::String(s) => Number::from_f64(s.trim().parse::<f64>().ok()?).map(Value::Number),
            _ => None,
        },
        FieldType::Bool => match value {
            Value::Bool(_) => Some(value.clone()),
            Value::Number(n) => match n.as_f64()? {
                0.0 => Some(Value::Bool(false)),
                1.0 => Some(Value::Bool(true)),
                _ => None,
            },
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Some(Value::Bool(true)),
                "false" | "no" | "off" | "0" => Some(Value::Bool(false)),
                _ => None,
            },
            _ => None,
        },
        FieldType::String => match value {
            Value::String(_) => Some(value.clone()),
            Value::Number(_) | Value::Bool(_) => Some(Value::String(value.to_string())),
            _ => None,
        },
        FieldType::Timestamp => {
            timestamp::normalise(value, &[TimestampLayout::Auto], Zone::Utc).map(Value::String)
        }
    }
}

/// A float without a fraction, as an integer.
fn whole(x: f64) -> Option<Value> {
    (x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15).then(|| Value::from(x as i64))
}

/// The config name of a type, for messages.
fn type_name(to: FieldType) -> &'static str {
    match to {
        FieldType::Int => "int",
        FieldType::Float => "float",
        FieldType::Bool => "bool",
        FieldType::String => "string",
        FieldType::Timestamp => "timestamp",
    }
}

/// Whether a record is in the kept 1-in-`n`: decided by a hash of its id, so the same record
/// is kept or dropped the same way after a restart (no repeats, no gaps in what was kept).
fn sampled_in(record: &Map<String, Value>, n: u64) -> bool {
    let key = match record.get("id").or_else(|| record.get("line")) {
        Some(Value::String(text)) => text.as_str(),
        _ => "",
    };
    xxhash_rust::xxh3::xxh3_64(key.as_bytes()).is_multiple_of(n)
}

impl Buckets {
    /// Takes one token from `source`'s bucket; false when it is empty.
    fn take(&self, source: &str, per_second: f64, burst: f64, now: Instant) -> bool {
        // The processor applies rules on one thread; the lock is never contended.
        let mut buckets = self.0.lock();
        let bucket = match buckets.get_mut(source) {
            Some(bucket) => bucket,
            None => buckets.entry(source.into()).or_insert(Bucket {
                tokens: burst,
                at: now,
            }),
        };
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refill).min(burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
