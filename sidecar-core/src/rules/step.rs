//! Steps: compiled from the file once, then run on each record in place.
//!
//! A step never fails the record: what goes wrong is appended to `processing_error` and the
//! next step runs. The one thing easy to get wrong is keeping data when a step fails: a JSON
//! step that cannot decode leaves its source field where it was, and a payload key that
//! collides with an existing field does not replace it unless the step says `overwrite`.

use regex::Regex;
use serde_json::{Map, Value};

use super::condition::Condition;
use super::spec::{OnMismatch, StepSpec};
use super::{build_regex, present, push_error, RulesError, Scope};

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
        regex: Regex,
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
        value: Value,
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
                let regex = build_regex(&s.pattern, scope, &at("pattern"))?;
                let groups: Vec<(usize, String)> = regex
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
                let action = Action::Set {
                    field: field_name("field", s.field)?,
                    value: s.value,
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
        };
        Ok(Step {
            label,
            when,
            action,
        })
    }

    /// Runs the step on `record`. Regex and JSON steps are skipped when `line_too_long`.
    pub(super) fn apply(&self, record: &mut Map<String, Value>, line_too_long: bool) {
        if line_too_long && matches!(self.action, Action::Regex { .. } | Action::Json { .. }) {
            return;
        }
        if let Some(when) = &self.when {
            if !when.holds(record) {
                return;
            }
        }
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
                    None => return,
                    Some(Value::String(text)) => std::mem::take(text),
                    Some(_) => {
                        if *on_mismatch == OnMismatch::Error {
                            let message = format!("{}: `{field}` is not a string", self.label);
                            push_error(record, message);
                        }
                        return;
                    }
                };
                let (matched, source_written) = match regex.captures(&text) {
                    Some(captures) => {
                        for (index, name) in groups {
                            if let Some(group) = captures.get(*index) {
                                let value = Value::String(group.as_str().to_owned());
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
                            self.label
                        );
                        push_error(record, message);
                        return;
                    }
                    Err(error) => {
                        let message =
                            format!("{}: cannot decode `{field}` as JSON: {error}", self.label);
                        push_error(record, message);
                        return;
                    }
                };
                if *remove_source {
                    record.remove(field);
                }
                match into {
                    Some(into) => {
                        record.insert(into.clone(), Value::Object(object));
                    }
                    None => merge(record, object, *overwrite),
                }
            }
            Action::Set {
                field,
                value,
                only_if_missing,
            } => {
                if !(*only_if_missing && present(record, field).is_some()) {
                    record.insert(field.clone(), value.clone());
                }
            }
            Action::Rename {
                from,
                to,
                only_if_missing,
                keep_source,
            } => {
                if !record.contains_key(from) || (*only_if_missing && present(record, to).is_some())
                {
                    return;
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
                    return;
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
        }
    }
}

/// Merges a decoded payload into the record. Without `overwrite`, a key the record already has
/// keeps its value and the payload's goes to `json_<key>`: payload keys come from the data, so
/// a line must not be able to replace fields such as `id` or `timestamp` unnoticed.
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
