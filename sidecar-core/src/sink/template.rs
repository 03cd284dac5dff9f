//! Templates over record fields: literal text with `{field}` placeholders, filled per record.
//! The nats sink's subject and the splunk_hec sink's index, source, sourcetype and host are
//! such templates; each sink decides what a value may contain (see [`Template::render`]).
//!
//! Easy to get wrong: cost. Most templates name `source_file` or `log_level`, which every
//! record's routing fields already hold; only a template naming another field decodes the
//! record's fields, once per record however many placeholders name them.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::OutRecord;

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Text kept as written.
    Literal(String),
    /// A record field's value: a top-level name or a dotted path into objects
    /// (`kubernetes.namespace`).
    Field(String),
}

impl Template {
    /// Parses `text`.
    ///
    /// # Errors
    /// An unclosed or empty placeholder, or one that is not a field name, said for people.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(at) if rest.as_bytes()[at] == b'}' => {
                    return Err(format!("{text:?}: '}}' without '{{'"));
                }
                Some(at) => {
                    if at > 0 {
                        parts.push(Part::Literal(rest[..at].to_owned()));
                    }
                    let after = &rest[at + 1..];
                    let end = after
                        .find('}')
                        .ok_or_else(|| format!("{text:?}: '{{' without '}}'"))?;
                    let name = &after[..end];
                    if !is_field_path(name) {
                        return Err(format!(
                            "{text:?}: placeholder {{{name}}} must name a record field (letters, digits, '_', '-', and '.' between names)"
                        ));
                    }
                    parts.push(Part::Field(name.to_owned()));
                    rest = &after[end + 1..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_owned()));
                    rest = "";
                }
            }
        }
        Ok(Self { parts })
    }

    /// The template's pieces in order.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// Fills the template for `record`: literal text as written, each field's value passed to
    /// `push_value` (`None` when the field is missing or not a string, number or bool) so the
    /// caller decides what a value may hold.
    pub fn render(
        &self,
        record: &OutRecord<'_>,
        out: &mut String,
        mut push_value: impl FnMut(&mut String, Option<&str>),
    ) {
        let mut fields: Option<Map<String, Value>> = None;
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Field(path) => {
                    let value = field_value(record, path, &mut fields);
                    push_value(out, value.as_deref());
                }
            }
        }
    }
}

fn is_field_path(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|segment| {
            !segment.is_empty()
                && segment
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// A field's value as text; the record's fields are decoded into `fields` the first time a
/// placeholder needs them.
fn field_value<'r>(
    record: &'r OutRecord<'_>,
    path: &str,
    fields: &mut Option<Map<String, Value>>,
) -> Option<Cow<'r, str>> {
    match path {
        // The routing fields, decoded already.
        "source_file" => return record.meta.source_file.as_deref().map(Cow::Borrowed),
        "log_level" => return record.meta.log_level.as_deref().map(Cow::Borrowed),
        _ => {}
    }
    let fields = fields.get_or_insert_with(|| record.fields());
    let mut segments = path.split('.');
    let mut value = fields.get(segments.next()?)?;
    for segment in segments {
        value = value.as_object()?.get(segment)?;
    }
    match value {
        Value::String(s) => Some(Cow::Owned(s.clone())),
        Value::Number(_) | Value::Bool(_) => Some(Cow::Owned(value.to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, raw: &str) -> String {
        let mut out = String::new();
        Template::parse(template).unwrap().render(
            &OutRecord::decode(raw.as_bytes()),
            &mut out,
            |out, value| out.push_str(value.unwrap_or("<none>")),
        );
        out
    }

    #[test]
    fn placeholders_take_top_level_and_nested_values() {
        let raw = r#"{"source_file":"access.log","log_level":"WARN","n":7,"ok":true,"o":{},
            "kubernetes":{"namespace":"shop","labels":{"app":"web"}}}"#;
        assert_eq!(render("{source_file}:{log_level}", raw), "access.log:WARN");
        assert_eq!(render("n={n} ok={ok}", raw), "n=7 ok=true");
        assert_eq!(
            render("{kubernetes.namespace}/{kubernetes.labels.app}", raw),
            "shop/web"
        );
        assert_eq!(
            render("{o} {missing} {kubernetes.nothing.deeper}", raw),
            "<none> <none> <none>"
        );
        assert_eq!(render("plain", raw), "plain");
        assert_eq!(render("{source_file}", "not json"), "<none>");
    }

    #[test]
    fn bad_placeholders_are_refused_with_the_reason() {
        for bad in [
            "{", "}", "a{", "a}", "{}", "{a b}", "{.a}", "{a.}", "{a..b}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Template::parse("x{a}{b.c}").unwrap().parts(),
            &[
                Part::Literal("x".into()),
                Part::Field("a".into()),
                Part::Field("b.c".into())
            ]
        );
    }
}
