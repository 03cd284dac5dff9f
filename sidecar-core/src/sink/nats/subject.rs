//! The subject template of the nats sink: a [`Template`] whose values become subject tokens,
//! and whether a stream's subjects capture what it makes.
//!
//! Easy to get wrong: a field's value must stay one subject token. `.` would split it, `*` and
//! `>` are wildcards a publish may not use, and whitespace ends the subject on the wire; each
//! becomes `_`, as does an empty, missing or non-scalar value, so every record gets a valid
//! subject and a value can never reach a subject outside the template's shape.

use std::borrow::Cow;

use super::super::template::{Part, Template};
use super::super::OutRecord;
use serde::Deserialize;

/// A parsed `subject:` template.
#[derive(Debug, Clone)]
pub struct SubjectTemplate {
    template: Template,
}

/// How much of what a template makes a stream's subjects capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Coverage {
    /// No subject the template makes is captured.
    None,
    /// Some are, depending on the field values.
    Partial,
    /// Every one is.
    Full,
}

/// Only the id, borrowed; every other field is skipped.
#[derive(Deserialize)]
struct RecordId<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
}

impl SubjectTemplate {
    /// Parses `text`.
    ///
    /// # Errors
    /// What is wrong, for people: an unclosed or empty placeholder, an empty token, a
    /// wildcard or whitespace in the literal text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let template = Template::parse(text)?;
        let parts = template.parts();
        for part in parts {
            if let Part::Literal(s) = part {
                if let Some(c) = s
                    .chars()
                    .find(|&c| c == '*' || c == '>' || c.is_whitespace() || c.is_control())
                {
                    return Err(format!(
                        "{text:?}: {c:?} is not allowed in a subject one publishes to"
                    ));
                }
            }
        }
        let template = Self { template };
        if template.shape().iter().any(|t| t.as_deref() == Some("")) {
            return Err(format!(
                "{text:?}: every '.'-separated token must be non-empty"
            ));
        }
        Ok(template)
    }

    /// The template's tokens: `Some(literal)` or `None` for a token a field's value is in.
    fn shape(&self) -> Vec<Option<String>> {
        let mut shape: Vec<Option<String>> = vec![Some(String::new())];
        for part in self.template.parts() {
            match part {
                Part::Field(_) => *shape.last_mut().expect("one token at least") = None,
                Part::Literal(s) => {
                    for (i, piece) in s.split('.').enumerate() {
                        if i > 0 {
                            shape.push(Some(String::new()));
                        }
                        if let Some(Some(token)) = shape.last_mut() {
                            token.push_str(piece);
                        }
                    }
                }
            }
        }
        shape
    }

    /// How much of what the template makes `subjects` (a stream's filters) capture.
    pub fn coverage(&self, subjects: &[String]) -> Coverage {
        let shape = self.shape();
        subjects
            .iter()
            .map(|filter| covers(filter, &shape))
            .max()
            .unwrap_or(Coverage::None)
    }

    /// The subject of `record`, and its id (`None` when the record has none).
    pub fn render(&self, record: &OutRecord<'_>) -> (String, Option<String>) {
        let id = serde_json::from_slice::<RecordId<'_>>(record.raw)
            .ok()
            .and_then(|r| r.id)
            .filter(|id| !id.is_empty())
            .map(Cow::into_owned);
        let mut subject = String::with_capacity(64);
        self.template
            .render(record, &mut subject, |subject, value| {
                push_token(subject, value.unwrap_or(""));
            });
        (subject, id)
    }
}

/// Appends `value` as (part of) one subject token.
fn push_token(subject: &mut String, value: &str) {
    if value.is_empty() {
        subject.push('_');
        return;
    }
    subject.extend(value.chars().map(|c| {
        if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        }
    }));
}

/// Whether `filter` (a stream subject, maybe with `*` and `>`) matches the subjects of
/// `shape`; a token holding a field's value matches a literal only sometimes.
fn covers(filter: &str, shape: &[Option<String>]) -> Coverage {
    let mut result = Coverage::Full;
    let filter: Vec<&str> = filter.split('.').collect();
    for (i, f) in filter.iter().enumerate() {
        if *f == ">" {
            return if shape.len() > i {
                result
            } else {
                Coverage::None
            };
        }
        let Some(token) = shape.get(i) else {
            return Coverage::None;
        };
        match (f, token) {
            (&"*", _) => {}
            (f, Some(literal)) if literal == f => {}
            (_, Some(_)) => return Coverage::None,
            (_, None) => result = Coverage::Partial,
        }
    }
    if shape.len() == filter.len() {
        result
    } else {
        Coverage::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, raw: &str) -> (String, Option<String>) {
        SubjectTemplate::parse(template)
            .unwrap()
            .render(&OutRecord::decode(raw.as_bytes()))
    }

    #[test]
    fn field_values_become_one_valid_token() {
        let raw = r#"{"id":"f1-42","source_file":"access.log","log_level":"ERROR","app":"web api>*","n":7,"e":"","o":{}}"#;
        assert_eq!(
            render("logs.{source_file}", raw),
            ("logs.access_log".into(), Some("f1-42".into()))
        );
        assert_eq!(
            render("logs.{log_level}.{app}", raw).0,
            "logs.ERROR.web_api__"
        );
        assert_eq!(render("a.{n}.{e}.{o}.{missing}", raw).0, "a.7._._._");
        assert_eq!(render("pod-{source_file}.x", raw).0, "pod-access_log.x");
        assert_eq!(render("logs", raw).0, "logs");
        assert_eq!(
            render("logs.{source_file}", "not json"),
            ("logs._".into(), None)
        );
        assert_eq!(render("logs", r#"{"id":""}"#).1, None);
    }

    #[test]
    fn bad_templates_are_refused() {
        for bad in [
            "",
            "logs.{",
            "logs.}",
            "logs.{}",
            "logs.{a b}",
            "logs..x",
            ".logs",
            "logs.",
            "logs.*",
            "logs.>",
            "lo gs",
            "logs.{a}.",
        ] {
            assert!(SubjectTemplate::parse(bad).is_err(), "{bad:?}");
        }
        assert!(SubjectTemplate::parse("logs.{a}{b}.c").is_ok());
    }

    #[test]
    fn coverage_follows_the_stream_filters() {
        let t = |s: &str| SubjectTemplate::parse(s).unwrap();
        let subjects = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(t("logs").coverage(&subjects(&["logs"])), Coverage::Full);
        assert_eq!(
            t("logs.{a}").coverage(&subjects(&["logs.>"])),
            Coverage::Full
        );
        assert_eq!(
            t("logs.{a}").coverage(&subjects(&["logs.*"])),
            Coverage::Full
        );
        assert_eq!(
            t("logs.{a}.x").coverage(&subjects(&["logs.*"])),
            Coverage::None
        );
        assert_eq!(t("logs.{a}").coverage(&subjects(&["logs"])), Coverage::None);
        assert_eq!(t("logs").coverage(&subjects(&["logs.>"])), Coverage::None);
        assert_eq!(
            t("logs.{a}").coverage(&subjects(&["other", "logs.error"])),
            Coverage::Partial
        );
        assert_eq!(
            t("app.{a}").coverage(&subjects(&["logs.>"])),
            Coverage::None
        );
        assert_eq!(t("x").coverage(&subjects(&[">"])), Coverage::Full);
    }
}
