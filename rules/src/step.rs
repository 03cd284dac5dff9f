//! Steps: compiled from the file once, then run on each record in place.
//!
//! A step never fails the record: what goes wrong is appended to `processing_error` and the
//! next step runs. The one thing easy to get wrong is keeping data when a step fails: a JSON
//! step that cannot decode leaves its source field where it was, and a payload key that
//! collides with an existing field does not replace it unless the step says `overwrite`.
//!
//! Each kind of step keeps its compile and apply side by side, grouped by what they do:
//! [`parse`] (regex, json, logfmt), [`fields`] (set, rename, remove, keep, lowercase,
//! uppercase, convert), [`derive`], [`timestamp`], [`drop`] (filter, sample, rate_limit), and
//! redact in `crate::redact`. This file compiles a step's `when:` and dispatches.

use sidecar_record::{FieldName, Fields};

use super::condition::Condition;
use super::redact::Redactor;
use super::spec::{ConditionSpec, StepSpec};
use super::{RulesError, Scope};

mod derive;
mod drop;
mod fields;
mod parse;
mod timestamp;

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

/// What a step does: one compiled kind.
#[derive(Debug)]
enum Action {
    Regex(parse::Regex),
    Json(parse::Json),
    Logfmt(parse::Logfmt),
    Set(fields::Set),
    Rename(fields::Rename),
    Remove(fields::Remove),
    Keep(fields::Keep),
    Case(fields::Case),
    Convert(fields::Convert),
    Derive(derive::Derive),
    Timestamp(timestamp::Timestamp),
    Filter(drop::Filter),
    Sample(drop::Sample),
    RateLimit(drop::RateLimit),
    Redact(Redactor),
}

/// Where a step is being compiled: what its errors name.
pub(super) struct Compile<'a, 's> {
    /// The file and rule.
    pub(super) scope: &'a Scope<'s>,
    /// Where the step sits in the file: `common[2]`, `steps[0]`.
    path: &'a str,
    /// The step's kind, as written: `regex`, `json`.
    kind: &'static str,
}

impl Compile<'_, '_> {
    /// The path of one of the step's keys: `steps[0].regex.pattern`.
    pub(super) fn at(&self, key: &str) -> String {
        format!("{}.{}.{key}", self.path, self.kind)
    }

    /// An error about one of the step's keys.
    pub(super) fn invalid(&self, key: &str, reason: impl Into<String>) -> RulesError {
        self.scope.invalid(self.at(key), reason)
    }

    /// An error about the step as a whole (keys that go together).
    pub(super) fn invalid_step(&self, reason: &str) -> RulesError {
        self.scope
            .invalid(format!("{}.{}", self.path, self.kind), reason)
    }

    /// A field name given under `key`, which must not be empty.
    pub(super) fn field(&self, key: &str, name: String) -> Result<FieldName, RulesError> {
        if name.is_empty() {
            Err(self.invalid(key, "must not be empty"))
        } else {
            Ok(name.into())
        }
    }

    /// The field names of a `fields:` list, none of them empty.
    pub(super) fn fields(&self, names: Vec<String>) -> Result<Vec<String>, RulesError> {
        names
            .into_iter()
            .enumerate()
            .map(|(i, name)| self.field(&format!("fields[{i}]"), name).map(String::from))
            .collect()
    }

    /// The step's `when:`.
    fn when(&self, when: Option<ConditionSpec>) -> Result<Option<Condition>, RulesError> {
        when.map(|spec| {
            Condition::compile(
                spec,
                None,
                self.scope,
                &self.at("when"),
                "add `field:` to this condition",
            )
        })
        .transpose()
    }
}

/// What a running step may need besides the record.
pub(super) struct Run<'a> {
    /// The step's label, for `processing_error`.
    label: &'a str,
    /// The record's source file (rate limits count per file).
    source: &'a str,
}

impl Step {
    /// Compiles one step. `path` is where it sits in the file (`common[2]`, `steps[0]`) and
    /// `label` how `processing_error` names it.
    ///
    /// # Errors
    /// Empty field names, bad regexes, bad conditions, an empty `fields` or `cases` list,
    /// a rename onto itself.
    pub(super) fn compile(
        mut spec: StepSpec,
        scope: &Scope<'_>,
        path: &str,
        label: String,
    ) -> Result<Step, RulesError> {
        let c = Compile {
            scope,
            path,
            kind: spec.kind(),
        };
        let when = spec.take_when();
        // The kind's own keys are checked first, then its `when:`.
        let action = match spec {
            StepSpec::Regex(s) => Action::Regex(parse::Regex::compile(s, &c)?),
            StepSpec::Json(s) => Action::Json(parse::Json::compile(s, &c)?),
            StepSpec::Logfmt(s) => Action::Logfmt(parse::Logfmt::compile(s, &c)?),
            StepSpec::Set(s) => Action::Set(fields::Set::compile(s, &c)?),
            StepSpec::Rename(s) => Action::Rename(fields::Rename::compile(s, &c)?),
            StepSpec::Remove(s) => Action::Remove(fields::Remove::compile(s, &c)?),
            StepSpec::Keep(s) => Action::Keep(fields::Keep::compile(s, &c)?),
            StepSpec::Lowercase(s) => Action::Case(fields::Case::compile(s, false, &c)?),
            StepSpec::Uppercase(s) => Action::Case(fields::Case::compile(s, true, &c)?),
            StepSpec::Convert(s) => Action::Convert(fields::Convert::compile(s, &c)?),
            StepSpec::Derive(s) => Action::Derive(derive::Derive::compile(s, &c)?),
            StepSpec::Timestamp(s) => Action::Timestamp(timestamp::Timestamp::compile(s, &c)?),
            StepSpec::Filter(s) => Action::Filter(drop::Filter::compile(s, &c)?),
            StepSpec::Sample(s) => Action::Sample(drop::Sample::compile(s, &c)?),
            StepSpec::RateLimit(s) => Action::RateLimit(drop::RateLimit::compile(s, &c)?),
            StepSpec::Redact(s) => Action::Redact(Redactor::compile(s, &c)?),
        };
        Ok(Step {
            label,
            when: c.when(when)?,
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
        record: &mut Fields,
        line_too_long: bool,
    ) -> StepResult<'_> {
        let parses = matches!(
            self.action,
            Action::Regex(_) | Action::Json(_) | Action::Logfmt(_)
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
    fn act(&self, source: &str, record: &mut Fields) -> Option<&str> {
        let run = Run {
            label: &self.label,
            source,
        };
        match &self.action {
            Action::Regex(step) => step.apply(&run, record),
            Action::Json(step) => step.apply(&run, record),
            Action::Logfmt(step) => step.apply(record),
            Action::Set(step) => step.apply(record),
            Action::Rename(step) => step.apply(record),
            Action::Remove(step) => step.apply(record),
            Action::Keep(step) => step.apply(record),
            Action::Case(step) => step.apply(record),
            Action::Convert(step) => step.apply(&run, record),
            Action::Derive(step) => step.apply(record),
            Action::Timestamp(step) => step.apply(&run, record),
            Action::Redact(redactor) => {
                redactor.apply(record);
            }
            Action::Filter(step) => return step.apply(record),
            Action::Sample(step) => return step.apply(record),
            Action::RateLimit(step) => return step.apply(&run),
        }
        None
    }
}
