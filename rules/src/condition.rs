//! Conditions: the `when:` of a step and of a `derive` case, compiled once.
//!
//! The easy thing to get wrong is an absent field: every test on it fails except
//! `exists: false`, so `gt: 5` on a record without the field is false, and `not: {gt: 5}` on
//! it is true. A JSON null counts as absent everywhere in the rules engine.

use sidecar_record::Fields;
use std::borrow::Cow;

use regex::Regex;
use serde_json::Value;

use super::spec::{ConditionSpec, ScalarText};
use super::{build_regex, present, RulesError, Scope};

/// A compiled condition.
#[derive(Debug)]
pub(super) enum Condition {
    /// Every one holds (also how the several keys of one `when:` combine).
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// The inner one does not hold.
    Not(Box<Condition>),
    /// One test on one field.
    Test {
        /// Field looked at.
        field: String,
        /// What must be true of its value.
        test: Test,
    },
}

/// A test on one field's value.
#[derive(Debug)]
pub(super) enum Test {
    /// Present (true) or absent (false).
    Exists(bool),
    /// Numeric comparison with a bound.
    Compare(Comparison, f64),
    /// `low <= value < high`.
    Range(f64, f64),
    /// Text equal to one of these.
    Equals(Vec<String>),
    /// Text equal to one of the listed values ignoring case: `(?i)^(?:a|b)$`.
    EqualsIgnoringCase(Regex),
    /// Text containing one of the keywords ignoring case: `(?i)a|b`.
    Keywords(Regex),
    /// Text matching a user regex.
    Matches(Regex),
}

/// The numeric comparisons.
#[derive(Debug, Clone, Copy)]
pub(super) enum Comparison {
    /// `gt`
    Greater,
    /// `gte`
    GreaterOrEqual,
    /// `lt`
    Less,
    /// `lte`
    LessOrEqual,
}

impl Condition {
    /// Compiles `spec`, found at `path` (e.g. `steps[2].derive.cases[0].when`). Tests without
    /// their own `field` use `inherited`; `no_field_hint` says where a field could come from.
    ///
    /// # Errors
    /// A condition that tests nothing, a test without a field, an empty list, an inverted or
    /// non-finite bound, a bad regex, or `case_insensitive` without `equals`.
    pub(super) fn compile(
        spec: ConditionSpec,
        inherited: Option<&str>,
        scope: &Scope<'_>,
        path: &str,
        no_field_hint: &str,
    ) -> Result<Condition, RulesError> {
        let ConditionSpec {
            field,
            exists,
            gt,
            gte,
            lt,
            lte,
            range,
            equals,
            case_insensitive,
            keywords,
            matches,
            all,
            any,
            not,
        } = spec;
        if let Some(name) = &field {
            if name.is_empty() {
                return Err(scope.invalid(format!("{path}.field"), "must not be empty"));
            }
        }
        let field = field.as_deref().or(inherited);
        let mut parts = Vec::new();
        let mut test = |key: &str, test: Test| match field {
            Some(field) => {
                parts.push(Condition::Test {
                    field: field.to_owned(),
                    test,
                });
                Ok(())
            }
            None => Err(scope.invalid(
                format!("{path}.{key}"),
                format!("no field to test: {no_field_hint}"),
            )),
        };

        if let Some(want) = exists {
            test("exists", Test::Exists(want))?;
        }
        for (key, bound, comparison) in [
            ("gt", gt, Comparison::Greater),
            ("gte", gte, Comparison::GreaterOrEqual),
            ("lt", lt, Comparison::Less),
            ("lte", lte, Comparison::LessOrEqual),
        ] {
            if let Some(bound) = bound {
                if !bound.is_finite() {
                    return Err(scope.invalid(format!("{path}.{key}"), "must be a finite number"));
                }
                test(key, Test::Compare(comparison, bound))?;
            }
        }
        if let Some([low, high]) = range {
            if !(low.is_finite() && high.is_finite() && low < high) {
                return Err(scope.invalid(
                    format!("{path}.range"),
                    format!("[{low}, {high}] is not a range: need finite low < high"),
                ));
            }
            test("range", Test::Range(low, high))?;
        }
        match (equals, case_insensitive) {
            (Some(values), ignore_case) => {
                if values.is_empty() {
                    return Err(
                        scope.invalid(format!("{path}.equals"), "must list at least one value")
                    );
                }
                let texts: Vec<String> = values.into_iter().map(|ScalarText(text)| text).collect();
                if ignore_case == Some(true) {
                    let alternatives: Vec<String> =
                        texts.iter().map(|text| regex::escape(text)).collect();
                    let pattern = format!("(?i)^(?:{})$", alternatives.join("|"));
                    let regex = build_regex(&pattern, scope, &format!("{path}.equals"))?;
                    test("equals", Test::EqualsIgnoringCase(regex))?;
                } else {
                    test("equals", Test::Equals(texts))?;
                }
            }
            (None, Some(_)) => {
                return Err(scope.invalid(
                    format!("{path}.case_insensitive"),
                    "applies only to `equals` (use `(?i)` in `matches`; `keywords` always ignore case)",
                ));
            }
            (None, None) => {}
        }
        if let Some(words) = keywords {
            let key = format!("{path}.keywords");
            if words.is_empty() {
                return Err(scope.invalid(key, "must list at least one keyword"));
            }
            if let Some(i) = words.iter().position(String::is_empty) {
                return Err(scope.invalid(
                    format!("{key}[{i}]"),
                    "an empty keyword would match everything",
                ));
            }
            let alternatives: Vec<String> = words.iter().map(|word| regex::escape(word)).collect();
            let pattern = format!("(?i){}", alternatives.join("|"));
            test(
                "keywords",
                Test::Keywords(build_regex(&pattern, scope, &key)?),
            )?;
        }
        if let Some(pattern) = matches {
            let regex = build_regex(&pattern, scope, &format!("{path}.matches"))?;
            test("matches", Test::Matches(regex))?;
        }

        for (key, nested) in [("all", all), ("any", any)] {
            let Some(nested) = nested else { continue };
            if nested.is_empty() {
                return Err(
                    scope.invalid(format!("{path}.{key}"), "must list at least one condition")
                );
            }
            let compiled = nested
                .into_iter()
                .enumerate()
                .map(|(i, spec)| {
                    Condition::compile(
                        spec,
                        field,
                        scope,
                        &format!("{path}.{key}[{i}]"),
                        no_field_hint,
                    )
                })
                .collect::<Result<Vec<_>, _>>()?;
            parts.push(if key == "all" {
                Condition::All(compiled)
            } else {
                Condition::Any(compiled)
            });
        }
        if let Some(nested) = not {
            let inner =
                Condition::compile(*nested, field, scope, &format!("{path}.not"), no_field_hint)?;
            parts.push(Condition::Not(Box::new(inner)));
        }

        match parts.len() {
            0 => Err(scope.invalid(
                path.to_owned(),
                "tests nothing: give at least one of exists, gt, gte, lt, lte, range, equals, \
                 keywords, matches, all, any, not",
            )),
            1 => Ok(parts.pop().expect("parts has exactly one element")),
            _ => Ok(Condition::All(parts)),
        }
    }

    /// Whether the condition holds for `record`.
    pub(super) fn holds(&self, record: &Fields) -> bool {
        match self {
            Condition::All(parts) => parts.iter().all(|part| part.holds(record)),
            Condition::Any(parts) => parts.iter().any(|part| part.holds(record)),
            Condition::Not(inner) => !inner.holds(record),
            Condition::Test { field, test } => test.holds(present(record, field)),
        }
    }
}

impl Test {
    /// Whether the test holds for a field's value (`None`: absent or null).
    fn holds(&self, value: Option<&Value>) -> bool {
        let Some(value) = value else {
            return matches!(self, Test::Exists(false));
        };
        match self {
            Test::Exists(want) => *want,
            Test::Compare(comparison, bound) => number(value).is_some_and(|n| match comparison {
                Comparison::Greater => n > *bound,
                Comparison::GreaterOrEqual => n >= *bound,
                Comparison::Less => n < *bound,
                Comparison::LessOrEqual => n <= *bound,
            }),
            Test::Range(low, high) => number(value).is_some_and(|n| *low <= n && n < *high),
            Test::Equals(texts) => text(value).is_some_and(|t| texts.iter().any(|x| *x == *t)),
            Test::EqualsIgnoringCase(regex) | Test::Keywords(regex) | Test::Matches(regex) => {
                text(value).is_some_and(|t| regex.is_match(&t))
            }
        }
    }
}

/// A value as a number: JSON numbers, and strings that parse as one (`"500"`, `" 12.5 "`).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    }
}

/// A scalar value as text, borrowed for strings (the common case, so no allocation). Arrays
/// and objects have no text and match no text test.
fn text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Bool(true) => Some(Cow::Borrowed("true")),
        Value::Bool(false) => Some(Cow::Borrowed("false")),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}
