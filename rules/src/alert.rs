//! Alert rules: the `alerts:` list of a rules file, compiled and checked with the rest of it.
//!
//! The processor only tags: a record that meets an alert's `when:` gets the alert's name in
//! [`MATCHED_ALERTS_FIELD`] (nothing is added to a record no alert matches). Counting, windows,
//! firing and delivery happen in the forwarder (`sidecar_core::alerts`), which reads the same file
//! and needs from each record no more than that tag, its source and its collection time.

use sidecar_record::Fields;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use globset::{GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_json::Value;

use super::condition::Condition;
use super::spec::ConditionSpec;
use super::{build_glob, RulesError, Scope};
use sidecar_common::config::HumanDuration;

/// Field listing the names of the alert rules whose `when:` the record meets.
pub const MATCHED_ALERTS_FIELD: &str = "matched_alerts";

/// Most matches a `rate` alert may ask for: its window keeps that many times per group.
pub const MAX_COUNT: u32 = 100_000;

/// Labels the forwarder sets itself; a rule may not set them through `labels` or `group_by`.
const RESERVED_LABELS: [&str; 2] = ["alertname", "severity"];

/// The places an annotation fills from the alert itself, not from the record.
const ALERT_VALUES: [&str; 5] = ["rule", "count", "window", "absent_for", "source_file"];

/// How long a `pattern` alert keeps firing after its last match, unless `window` says.
const DEFAULT_PATTERN_WINDOW: Duration = Duration::from_secs(300);

/// One entry of `alerts:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AlertSpec {
    name: Option<String>,
    kind: AlertKindSpec,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    when: Option<ConditionSpec>,
    #[serde(default)]
    count: Option<u32>,
    #[serde(default)]
    window: Option<HumanDuration>,
    #[serde(default, rename = "for")]
    hold: Option<HumanDuration>,
    #[serde(default)]
    absent_for: Option<HumanDuration>,
    #[serde(default)]
    group_by: Vec<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    summary: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AlertKindSpec {
    Pattern,
    Rate,
    Absence,
}

/// What makes an alert fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertKind {
    /// At least `count` matching records within `window`, holding for `hold`; `pattern` is
    /// the case `count: 1` (fires on a match, resolves `window` after the last one).
    Rate {
        /// Matches needed.
        count: u32,
        /// How far back they count.
        window: Duration,
        /// How long the condition must hold before the alert fires (`for:`).
        hold: Duration,
    },
    /// No matching record from a source for `after`.
    Absence {
        /// The quiet time that fires it.
        after: Duration,
    },
}

/// A compiled alert rule.
#[derive(Debug)]
pub struct AlertRule {
    name: String,
    kind: AlertKind,
    files: Option<GlobSet>,
    /// Names written in `files` without glob characters: sources an absence alert watches
    /// from the start, before they ever wrote.
    literal_files: Vec<String>,
    when: Option<Condition>,
    group_by: Vec<String>,
    severity: String,
    labels: BTreeMap<String, String>,
    summary: Template,
    description: Option<Template>,
}

impl AlertRule {
    /// The rule's unique name (the `alertname` label).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What fires it.
    pub fn kind(&self) -> AlertKind {
        self.kind
    }

    /// Whether it watches records of `source_file` (the part after the last `/`); without
    /// `files` it watches every source.
    pub fn watches(&self, source_file: &str) -> bool {
        let name = source_file.rsplit('/').next().unwrap_or(source_file);
        self.files.as_ref().is_none_or(|globs| globs.is_match(name))
    }

    /// Whether it watches every source (no `files`), pushed records included.
    pub fn watches_every_source(&self) -> bool {
        self.files.is_none()
    }

    /// Whether the processor tags matching records (the rule has a `when:`); without one,
    /// every record of a watched source matches.
    pub fn has_condition(&self) -> bool {
        self.when.is_some()
    }

    /// Whether `record` meets the rule's `when:` (true without one).
    pub fn holds(&self, record: &Fields) -> bool {
        self.when.as_ref().is_none_or(|when| when.holds(record))
    }

    /// Sources named literally in `files`, watched from the start by an absence alert.
    pub fn literal_files(&self) -> &[String] {
        &self.literal_files
    }

    /// Fields whose values split the alert into one per distinct combination.
    pub fn group_by(&self) -> &[String] {
        &self.group_by
    }

    /// The `severity` label.
    pub fn severity(&self) -> &str {
        &self.severity
    }

    /// The rule's own labels.
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }

    /// Whether the annotations read fields of the record that fired the alert (so the
    /// forwarder decodes that record).
    pub fn reads_record(&self) -> bool {
        self.summary.reads_fields()
            || self
                .description
                .as_ref()
                .is_some_and(Template::reads_fields)
    }

    /// The `summary` and (if any) `description` annotations, filled from `values` (the
    /// alert's own: `count`, `window`, …) and then the record's fields.
    pub fn annotations(
        &self,
        values: &BTreeMap<&str, String>,
        record: &Fields,
    ) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        out.insert("summary".to_owned(), self.summary.render(values, record));
        if let Some(description) = &self.description {
            out.insert("description".to_owned(), description.render(values, record));
        }
        out
    }

    /// Compiles entry `index` of `alerts:`.
    pub(super) fn compile(
        spec: AlertSpec,
        index: usize,
        scope: &Scope<'_>,
    ) -> Result<AlertRule, RulesError> {
        let at = |field: &str| format!("alerts[{index}].{field}");
        let invalid = |field: &str, reason: String| scope.invalid(at(field), reason);
        let kind = compile_kind(&spec, &invalid)?;
        let name = match spec.name {
            Some(name) if !name.trim().is_empty() => name,
            _ => return Err(invalid("name", "is required and must not be empty".into())),
        };
        let files = if spec.files.is_empty() {
            None
        } else {
            let mut globs = GlobSetBuilder::new();
            for (i, pattern) in spec.files.iter().enumerate() {
                globs.add(build_glob(pattern, scope, &at(&format!("files[{i}]")))?);
            }
            Some(globs.build().map_err(|source| RulesError::Glob {
                at: scope.place(at("files")),
                source: Box::new(source),
            })?)
        };
        let literal_files = spec
            .files
            .iter()
            .filter(|f| !f.contains(['*', '?', '[', '{']))
            .cloned()
            .collect();
        let when = spec
            .when
            .map(|when| {
                Condition::compile(
                    when,
                    None,
                    scope,
                    &at("when"),
                    "give `field:` in the condition",
                )
            })
            .transpose()?;
        if matches!(spec.kind, AlertKindSpec::Pattern) && when.is_none() {
            return Err(invalid(
                "when",
                "a pattern alert needs a condition (without one every record would fire it)".into(),
            ));
        }
        for (i, field) in spec.group_by.iter().enumerate() {
            check_label_name(field).map_err(|reason| invalid(&format!("group_by[{i}]"), reason))?;
        }
        if matches!(spec.kind, AlertKindSpec::Absence) && !spec.group_by.is_empty() {
            return Err(invalid(
                "group_by",
                "an absence alert is kept per source file; leave group_by out".into(),
            ));
        }
        for key in spec.labels.keys() {
            check_label_name(key).map_err(|reason| invalid(&format!("labels.{key}"), reason))?;
        }
        let severity = spec.severity.unwrap_or_else(|| "warning".to_owned());
        if severity.trim().is_empty() {
            return Err(invalid("severity", "must not be empty".into()));
        }
        let summary = match spec.summary {
            Some(text) => Template::parse(&text).map_err(|reason| invalid("summary", reason))?,
            None => Template::parse(&default_summary(&name, kind)).expect("default summary parses"),
        };
        let description = spec
            .description
            .map(|text| Template::parse(&text).map_err(|reason| invalid("description", reason)))
            .transpose()?;
        Ok(AlertRule {
            name,
            kind,
            files,
            literal_files,
            when,
            group_by: spec.group_by,
            severity,
            labels: spec.labels,
            summary,
            description,
        })
    }
}

/// The kind with its numbers, checking that each kind gets the keys it uses and no other.
fn compile_kind(
    spec: &AlertSpec,
    invalid: &impl Fn(&str, String) -> RulesError,
) -> Result<AlertKind, RulesError> {
    let at_least_a_second = |field: &str, value: Option<HumanDuration>| match value {
        Some(HumanDuration(d)) if d < Duration::from_secs(1) => Err(invalid(
            field,
            format!("{} is too short: at least 1s", HumanDuration(d)),
        )),
        other => Ok(other.map(|d| d.0)),
    };
    let not_for = |field: &str, present: bool, kind: &str, hint: &str| {
        if present {
            Err(invalid(
                field,
                format!("does not apply to a {kind} alert{hint}"),
            ))
        } else {
            Ok(())
        }
    };
    let window = at_least_a_second("window", spec.window)?;
    let hold = spec.hold.map_or(Duration::ZERO, |d| d.0);
    match spec.kind {
        AlertKindSpec::Pattern => {
            not_for(
                "count",
                spec.count.is_some(),
                "pattern",
                " (it fires on one match; use kind: rate to count)",
            )?;
            not_for("absent_for", spec.absent_for.is_some(), "pattern", "")?;
            Ok(AlertKind::Rate {
                count: 1,
                window: window.unwrap_or(DEFAULT_PATTERN_WINDOW),
                hold,
            })
        }
        AlertKindSpec::Rate => {
            not_for("absent_for", spec.absent_for.is_some(), "rate", "")?;
            let count = match spec.count {
                Some(count) if (1..=MAX_COUNT).contains(&count) => count,
                Some(count) => {
                    return Err(invalid(
                        "count",
                        format!("{count} is out of range: 1 to {MAX_COUNT}"),
                    ))
                }
                None => return Err(invalid("count", "is required for a rate alert".into())),
            };
            let Some(window) = window else {
                return Err(invalid(
                    "window",
                    "is required for a rate alert (e.g. 1m)".into(),
                ));
            };
            Ok(AlertKind::Rate {
                count,
                window,
                hold,
            })
        }
        AlertKindSpec::Absence => {
            not_for("count", spec.count.is_some(), "absence", "")?;
            not_for(
                "window",
                spec.window.is_some(),
                "absence",
                " (use absent_for)",
            )?;
            not_for("for", spec.hold.is_some(), "absence", " (use absent_for)")?;
            match at_least_a_second("absent_for", spec.absent_for)? {
                Some(after) => Ok(AlertKind::Absence { after }),
                None => Err(invalid(
                    "absent_for",
                    "is required for an absence alert (e.g. 2m)".into(),
                )),
            }
        }
    }
}

/// Labels become Alertmanager (Prometheus) labels: `[a-zA-Z_][a-zA-Z0-9_]*`, and not one the
/// forwarder sets.
fn check_label_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!(
            "{name:?} is not a label name: letters, digits and _, not starting with a digit"
        ));
    }
    if RESERVED_LABELS.contains(&name) {
        return Err(format!(
            "{name:?} is set by the forwarder; use the rule's name or `severity`"
        ));
    }
    Ok(())
}

fn default_summary(name: &str, kind: AlertKind) -> String {
    match kind {
        AlertKind::Rate { count: 1, .. } => format!("{name}: {{source_file}}: {{message}}"),
        AlertKind::Rate { .. } => {
            format!("{name}: {{count}} matching records within {{window}} from {{source_file}}")
        }
        AlertKind::Absence { .. } => {
            format!("{name}: no record from {{source_file}} for {{absent_for}}")
        }
    }
}

/// An annotation text with `{name}` places, filled from the alert's values or the record's
/// fields; `{{` and `}}` are literal braces.
#[derive(Debug, Clone)]
struct Template(Vec<Piece>);

#[derive(Debug, Clone)]
enum Piece {
    Text(String),
    Field(String),
}

impl Template {
    fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed || name.trim().is_empty() || name.contains('{') {
                        return Err(format!(
                            "{text:?}: a place is `{{field}}` with a field name (write {{{{ for a brace)"
                        ));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(name.trim().to_owned()));
                }
                '}' => {
                    return Err(format!(
                        "{text:?}: a `}}` without its `{{` (write }}}} for a brace)"
                    ))
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// Whether a place names a record field rather than one of the alert's own values.
    fn reads_fields(&self) -> bool {
        self.0.iter().any(
            |piece| matches!(piece, Piece::Field(name) if !ALERT_VALUES.contains(&name.as_str())),
        )
    }

    /// The text; a place neither in `values` nor in `record` shows as `-`.
    fn render(&self, values: &BTreeMap<&str, String>, record: &Fields) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Field(name) => match (values.get(name.as_str()), record.get(name)) {
                    (Some(value), _) => out.push_str(value),
                    (None, Some(Value::String(text))) => out.push_str(text),
                    (None, Some(Value::Null) | None) => out.push('-'),
                    (None, Some(other)) => {
                        let _ = write!(out, "{other}");
                    }
                },
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RuleSet;

    fn compile(alerts: &str) -> Result<RuleSet, String> {
        RuleSet::from_yaml_str(&format!("version: 1\nalerts:\n{alerts}"), "rules.yaml")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_kind_compiles_with_its_keys_and_defaults() {
        let rules = compile(
            "  - {name: Errors, kind: rate, files: [error.log], when: {field: log_level, equals: [ERROR]}, count: 5, window: 30s, group_by: [source_file]}\n  - {name: Panic, kind: pattern, when: {field: message, keywords: [panic]}}\n  - {name: Quiet, kind: absence, files: [worker.log, 'app-*.log'], absent_for: 2m}\n",
        )
        .unwrap();
        let alerts = rules.alerts();
        assert_eq!(
            alerts[0].kind(),
            AlertKind::Rate {
                count: 5,
                window: Duration::from_secs(30),
                hold: Duration::ZERO
            }
        );
        assert_eq!(
            alerts[1].kind(),
            AlertKind::Rate {
                count: 1,
                window: DEFAULT_PATTERN_WINDOW,
                hold: Duration::ZERO
            }
        );
        assert_eq!(
            alerts[2].kind(),
            AlertKind::Absence {
                after: Duration::from_secs(120)
            }
        );
        assert_eq!(alerts[2].literal_files(), ["worker.log"]);
        assert!(alerts[2].watches("/logs/app-1.log") && !alerts[2].watches("error.log"));
        assert!(alerts[1].watches("anything.log"));
        assert_eq!(alerts[1].severity(), "warning");
    }

    #[test]
    fn mistakes_name_the_alert_and_field() {
        for (yaml, expected) in [
            ("  - {name: A, kind: rate, window: 1m}\n", "alerts[0].count: is required"),
            ("  - {name: A, kind: rate, count: 0, window: 1m}\n", "alerts[0].count: 0 is out of range"),
            ("  - {name: A, kind: rate, count: 2}\n", "alerts[0].window: is required"),
            ("  - {name: A, kind: pattern}\n", "alerts[0].when: a pattern alert needs a condition"),
            ("  - {name: A, kind: pattern, when: {field: x, exists: true}, count: 3}\n", "alerts[0].count: does not apply to a pattern alert"),
            ("  - {name: A, kind: absence}\n", "alerts[0].absent_for: is required"),
            ("  - {name: A, kind: absence, absent_for: 1m, group_by: [x]}\n", "alerts[0].group_by: an absence alert"),
            ("  - {name: A, kind: rate, count: 2, window: 10ms}\n", "alerts[0].window: 10ms is too short"),
            ("  - {name: A, kind: rate, count: 2, window: 1m, group_by: [source-file]}\n", "alerts[0].group_by[0]: \"source-file\" is not a label name"),
            ("  - {name: A, kind: rate, count: 2, window: 1m, labels: {severity: x}}\n", "alerts[0].labels.severity: \"severity\" is set by the forwarder"),
            ("  - {name: A, kind: rate, count: 2, window: 1m, summary: 'a {b'}\n", "alerts[0].summary: "),
            ("  - {name: A, kind: rate, count: 2, window: 1m}\n  - {name: A, kind: rate, count: 2, window: 1m}\n", "alerts[1].name: \"A\" is used twice"),
            ("  - {kind: rate, count: 2, window: 1m}\n", "alerts[0].name: is required"),
            ("  - {name: A, kind: rate, count: 2, window: 1m, when: {matches: x}}\n", "alerts[0].when.matches: no field to test"),
        ] {
            let err = compile(yaml).unwrap_err();
            assert!(err.contains(expected), "{yaml}: {err}");
            assert!(err.starts_with("rules.yaml"), "{err}");
        }
    }

    #[test]
    fn templates_fill_values_then_fields_and_keep_escaped_braces() {
        let template =
            Template::parse("{count} in {window} from {source_file} {{x}} {missing} {status}")
                .unwrap();
        let values = BTreeMap::from([("count", "5".to_owned()), ("window", "30s".to_owned())]);
        let record: serde_json::Map<String, Value> =
            serde_json::from_str(r#"{"source_file":"error.log","status":500}"#).unwrap();
        let record = Fields::from(record);
        assert_eq!(
            template.render(&values, &record),
            "5 in 30s from error.log {x} - 500"
        );
        assert!(Template::parse("a } b").is_err());
        assert!(Template::parse("a {} b").is_err());
    }
}
