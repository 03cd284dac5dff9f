//! Steps that write, move, remove or retype fields: `set`, `rename`, `remove`, `keep`,
//! `lowercase`, `uppercase` and `convert`.

use serde_json::{Number, Value};
use sidecar_record::{FieldName, Fields};

use super::{Compile, Run};
use crate::spec::{
    CaseSpec, ConvertSpec, FieldType, KeepSpec, RemoveSpec, RenameSpec, SetSpec, TimestampLayout,
};
use crate::timestamp::{self, Zone};
use crate::{present, push_error, RulesError};

/// Fields a `keep:` step never removes: the record's identity and what went wrong with it.
const ALWAYS_KEPT: [&str; 4] = ["id", "source_file", "collected_at", "processing_error"];

/// `set:` a field gets a value.
#[derive(Debug)]
pub(super) struct Set {
    field: FieldName,
    value: SetValue,
    only_if_missing: bool,
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

impl Set {
    pub(super) fn compile(s: SetSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        let value = match (s.value, s.env, s.template) {
            (Some(value), None, None) => SetValue::Static(value),
            (None, Some(name), None) => match std::env::var(&name) {
                Ok(text) => SetValue::Static(Value::String(text)),
                Err(_) => SetValue::Unset,
            },
            (None, None, Some(template)) => SetValue::Template(
                compile_template(&template).map_err(|reason| c.invalid("template", reason))?,
            ),
            _ => return Err(c.invalid("value", "give exactly one of value, env, template")),
        };
        Ok(Self {
            field: c.field("field", s.field)?,
            value,
            only_if_missing: s.only_if_missing,
        })
    }

    pub(super) fn apply(&self, record: &mut Fields) {
        if self.only_if_missing && present(record, &self.field).is_some() {
            return;
        }
        let value = match &self.value {
            SetValue::Static(value) => value.clone(),
            SetValue::Unset => return,
            SetValue::Template(parts) => Value::String(fill_template(parts, record)),
        };
        record.insert(self.field.clone(), value);
    }
}

/// `rename:` a field moves (or is copied) to another name.
#[derive(Debug)]
pub(super) struct Rename {
    from: FieldName,
    to: FieldName,
    only_if_missing: bool,
    keep_source: bool,
}

impl Rename {
    pub(super) fn compile(s: RenameSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        let from = c.field("from", s.from)?;
        let to = c.field("to", s.to)?;
        if from == to {
            return Err(c.invalid("to", "is the same field as `from`"));
        }
        Ok(Self {
            from,
            to,
            only_if_missing: s.only_if_missing,
            keep_source: s.keep_source,
        })
    }

    pub(super) fn apply(&self, record: &mut Fields) {
        let Self {
            from,
            to,
            only_if_missing,
            keep_source,
        } = self;
        if !record.contains_key(from) || (*only_if_missing && present(record, to).is_some()) {
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
}

/// `remove:` the fields listed go.
#[derive(Debug)]
pub(super) struct Remove {
    fields: Vec<String>,
}

impl Remove {
    pub(super) fn compile(s: RemoveSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        if s.fields.is_empty() {
            return Err(c.invalid("fields", "must list at least one field"));
        }
        Ok(Self {
            fields: c.fields(s.fields)?,
        })
    }

    pub(super) fn apply(&self, record: &mut Fields) {
        for field in &self.fields {
            record.remove(field);
        }
    }
}

/// `keep:` every field not listed goes (the record's identity and errors stay).
#[derive(Debug)]
pub(super) struct Keep {
    fields: Vec<String>,
}

impl Keep {
    pub(super) fn compile(s: KeepSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        if s.fields.is_empty() {
            return Err(c.invalid("fields", "must list at least one field"));
        }
        Ok(Self {
            fields: c.fields(s.fields)?,
        })
    }

    pub(super) fn apply(&self, record: &mut Fields) {
        record.retain(|key, _| ALWAYS_KEPT.contains(&key) || self.fields.iter().any(|f| f == key));
    }
}

/// `lowercase:` and `uppercase:` a string field changes case; other values are left alone.
#[derive(Debug)]
pub(super) struct Case {
    field: FieldName,
    upper: bool,
}

impl Case {
    pub(super) fn compile(
        s: CaseSpec,
        upper: bool,
        c: &Compile<'_, '_>,
    ) -> Result<Self, RulesError> {
        Ok(Self {
            field: c.field("field", s.field)?,
            upper,
        })
    }

    pub(super) fn apply(&self, record: &mut Fields) {
        let Some(Value::String(text)) = record.get_mut(&self.field) else {
            return;
        };
        match (text.is_ascii(), self.upper) {
            (true, true) => text.make_ascii_uppercase(),
            (true, false) => text.make_ascii_lowercase(),
            (false, true) => *text = text.to_uppercase(),
            (false, false) => *text = text.to_lowercase(),
        }
    }
}

/// `convert:` fields change type; a value that does not read as the type is left with an error.
#[derive(Debug)]
pub(super) struct Convert {
    fields: Vec<(String, FieldType)>,
}

impl Convert {
    pub(super) fn compile(s: ConvertSpec, c: &Compile<'_, '_>) -> Result<Self, RulesError> {
        if s.fields.is_empty() {
            return Err(c.invalid("fields", "must name at least one field"));
        }
        if s.fields.keys().any(String::is_empty) {
            return Err(c.invalid("fields", "a field name must not be empty"));
        }
        Ok(Self {
            fields: s.fields.into_iter().collect(),
        })
    }

    pub(super) fn apply(&self, run: &Run<'_>, record: &mut Fields) {
        for (field, to) in &self.fields {
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
                        run.label,
                        type_name(*to)
                    );
                    push_error(record, message);
                }
            }
        }
    }
}

/// Environment variables the Downward API gives the processor container, by the template
/// names that read them.
const POD_VARIABLES: [(&str, &str); 5] = [
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
fn fill_template(parts: &[TemplatePart], record: &Fields) -> String {
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
