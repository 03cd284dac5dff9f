//! `processor explain`: which rules match a file, what each step did to a line, and the
//! record that came out.
//!
//! Easy to get wrong: explaining something other than what runs. The trace is taken by the
//! same [`RuleSet::run`] the processor uses, with a hook per step; the hook clones the record
//! before each step to say what changed, which only `explain` pays for.

use sidecar_record::Fields;
use std::fmt;

use serde_json::Value;

use super::step::StepResult;
use super::testcase::Outcome;
use super::RuleSet;

/// What one step did.
#[derive(Debug, Clone)]
pub struct StepTrace {
    /// The step, as `processing_error` names it: `rule "access" steps[1] (derive)`.
    pub label: String,
    /// `skipped`, `ran` or `dropped (<reason>)`.
    pub result: String,
    /// The fields it set, changed or removed.
    pub changes: Vec<String>,
}

impl StepTrace {
    /// Compares the record before and after the step.
    pub(super) fn new(
        label: &str,
        result: StepResult<'_>,
        before: &Fields,
        after: &Fields,
    ) -> StepTrace {
        let result = match result {
            StepResult::Skipped => "skipped (its `when` did not hold)".to_owned(),
            StepResult::Ran => "ran".to_owned(),
            StepResult::Drop(reason) => format!("dropped the record ({reason})"),
        };
        let mut changes = Vec::new();
        for (key, value) in in_key_order(after) {
            match before.get(key) {
                None => changes.push(format!("set {key} = {}", short(value))),
                Some(old) if old != value => {
                    changes.push(format!("{key}: {} → {}", short(old), short(value)))
                }
                Some(_) => {}
            }
        }
        for (key, _) in in_key_order(before)
            .into_iter()
            .filter(|(key, _)| !after.contains_key(key))
        {
            changes.push(format!("removed {key}"));
        }
        let result = if result == "ran" && changes.is_empty() {
            "ran, changed nothing".to_owned()
        } else {
            result
        };
        StepTrace {
            label: label.to_owned(),
            result,
            changes,
        }
    }
}

/// A value for one line of output: long text is cut.
fn short(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Everything `explain` says about one record.
#[derive(Debug, Clone)]
pub struct Explanation {
    /// The source file name.
    pub source: String,
    /// Names of the matching rules, in the order their steps run.
    pub rules: Vec<String>,
    /// How continuation lines are joined, if they are.
    pub multiline: Option<String>,
    /// Each step, in order, up to a drop.
    pub steps: Vec<StepTrace>,
    /// The record, or the drop.
    pub outcome: Outcome,
}

impl RuleSet {
    /// Explains what the rules make of `lines` from `source` (several lines may join into one
    /// record, or give several records).
    pub fn explain(&self, source: &str, lines: &[String]) -> Vec<Explanation> {
        let matched = self.memoised_rules_for(source);
        let rules: Vec<String> = matched
            .0
            .rules
            .iter()
            .filter_map(|&index| self.rules.get(index))
            .map(|rule| rule.name.clone())
            .collect();
        let multiline = self
            .multiline_for(source)
            .map(|multiline| multiline.description().to_owned());
        self.process_lines(source, lines, true)
            .into_iter()
            .map(|(outcome, steps)| Explanation {
                source: source.to_owned(),
                rules: rules.clone(),
                multiline: multiline.clone(),
                steps,
                outcome,
            })
            .collect()
    }
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "source: {}", self.source)?;
        if self.rules.is_empty() {
            writeln!(f, "rules: none match this file name (only `common` runs)")?;
        } else {
            writeln!(f, "rules: {}", self.rules.join(", "))?;
        }
        if let Some(multiline) = &self.multiline {
            writeln!(f, "multiline: {multiline}")?;
        }
        writeln!(f, "steps:")?;
        for step in &self.steps {
            writeln!(f, "  {}: {}", step.label, step.result)?;
            for change in &step.changes {
                writeln!(f, "      {change}")?;
            }
        }
        match &self.outcome {
            Outcome::Kept(record) => {
                let text = serde_json::to_string_pretty(&Value::Object(record.clone()))
                    .map_err(|_| fmt::Error)?;
                writeln!(f, "record:\n{text}")
            }
            Outcome::Dropped(reason) => writeln!(f, "dropped: {reason}"),
        }
    }
}

/// The fields in key order, as a person reads a change list.
fn in_key_order(fields: &Fields) -> Vec<(&str, &Value)> {
    let mut pairs: Vec<(&str, &Value)> = fields.iter().collect();
    pairs.sort_unstable_by_key(|(key, _)| *key);
    pairs
}
