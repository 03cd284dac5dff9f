//! Test cases written in the rules file (`tests:`), which `processor test` runs: lines of a
//! source file in, the fields of the records out (or a drop).
//!
//! Easy to get wrong: running them differently from the processor. Lines go through the same
//! multiline [`Joiner`] and the same [`RuleSet::apply`], so a test that passes here passes in
//! the pod; only the record ids are synthetic (`test-<offset>`), which matters for `sample:`.

use sidecar_record::Fields;
use std::fmt;
use std::time::Instant;

use serde_json::{Map, Value};

use super::explain::StepTrace;
use super::multiline::Joiner;
use super::spec::TestSpec;
use super::{RuleSet, RulesError, Scope, Verdict, LINE_FIELD};

/// A test case from the rules file, checked.
#[derive(Debug, Clone)]
pub struct TestCase {
    /// Its name.
    pub name: String,
    /// The source file name the lines come from.
    pub source: String,
    /// The input lines.
    pub lines: Vec<String>,
    /// Its place in the file's `tests:` list, from 0.
    pub index: usize,
    expect: Expectation,
    absent: Vec<String>,
    present: Vec<String>,
}

/// What a test case expects.
#[derive(Debug, Clone)]
enum Expectation {
    /// These records, in order; each lists fields it must have.
    Records(Vec<Map<String, Value>>),
    /// Every record dropped, optionally for this reason.
    Dropped(Option<String>),
}

/// What the rules made of one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Kept, enriched.
    Kept(Map<String, Value>),
    /// Dropped, for this reason.
    Dropped(String),
}

/// A test case that failed, with what differed.
#[derive(Debug, Clone)]
pub struct TestFailure {
    /// The case's name.
    pub name: String,
    /// Its place in `tests:`, from 0.
    pub index: usize,
    /// One line per difference.
    pub problems: Vec<String>,
    /// What the rules made of the lines.
    pub actual: Vec<Outcome>,
}

/// The result of every test case in a file.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    /// How many passed.
    pub passed: usize,
    /// Those that failed.
    pub failures: Vec<TestFailure>,
}

impl TestCase {
    /// Checks a test case's shape.
    pub(super) fn compile(
        spec: TestSpec,
        index: usize,
        scope: &Scope<'_>,
    ) -> Result<TestCase, RulesError> {
        let at = |key: &str| format!("tests[{index}].{key}");
        if spec.name.is_empty() {
            return Err(scope.invalid(at("name"), "must not be empty"));
        }
        if spec.source.is_empty() || spec.source.contains('/') {
            return Err(scope.invalid(at("source"), "must be a file name such as access.log"));
        }
        let lines = match (spec.line, spec.lines) {
            (Some(line), None) => vec![line],
            (None, Some(lines)) if !lines.is_empty() => lines,
            _ => {
                return Err(
                    scope.invalid(at("line"), "give `line: '…'` or a non-empty `lines: […]`")
                )
            }
        };
        let expect = match (spec.expect, spec.expect_records, spec.dropped) {
            (Some(one), None, None) => Expectation::Records(vec![one]),
            (None, Some(records), None) if !records.is_empty() => Expectation::Records(records),
            (None, None, Some(Value::Bool(true))) => Expectation::Dropped(None),
            (None, None, Some(Value::String(reason))) => Expectation::Dropped(Some(reason)),
            _ => {
                return Err(scope.invalid(
                    at("expect"),
                    "give exactly one of `expect: {fields}`, `expect_records: [{fields}, …]`, \
                     `dropped: true` or `dropped: <reason>`",
                ))
            }
        };
        Ok(TestCase {
            name: spec.name,
            source: spec.source,
            lines,
            index,
            expect,
            absent: spec.absent,
            present: spec.present,
        })
    }

    /// Runs the case; `None` when it passed.
    fn run(&self, rules: &RuleSet) -> Option<TestFailure> {
        let actual: Vec<Outcome> = rules
            .process_lines(&self.source, &self.lines, false)
            .into_iter()
            .map(|(outcome, _)| outcome)
            .collect();
        let mut problems = Vec::new();
        match &self.expect {
            Expectation::Dropped(reason) => {
                for (i, outcome) in actual.iter().enumerate() {
                    match (outcome, reason) {
                        (Outcome::Kept(_), _) => {
                            problems.push(format!("record {}: expected a drop, got kept", i + 1))
                        }
                        (Outcome::Dropped(got), Some(want)) if got != want => problems.push(
                            format!("record {}: dropped as {got:?}, expected {want:?}", i + 1),
                        ),
                        _ => {}
                    }
                }
            }
            Expectation::Records(expected) => {
                if expected.len() != actual.len() {
                    problems.push(format!(
                        "expected {} record(s), got {}",
                        expected.len(),
                        actual.len()
                    ));
                }
                for (i, (want, got)) in expected.iter().zip(&actual).enumerate() {
                    let record = match got {
                        Outcome::Kept(record) => record,
                        Outcome::Dropped(reason) => {
                            problems.push(format!("record {}: dropped ({reason})", i + 1));
                            continue;
                        }
                    };
                    for (key, value) in want {
                        match record.get(key) {
                            Some(actual) if same(actual, value) => {}
                            Some(actual) => problems.push(format!(
                                "record {}: {key}: expected {value}, got {actual}",
                                i + 1
                            )),
                            None => problems.push(format!(
                                "record {}: {key}: expected {value}, got nothing",
                                i + 1
                            )),
                        }
                    }
                }
            }
        }
        for (i, outcome) in actual.iter().enumerate() {
            if let Outcome::Kept(record) = outcome {
                for key in self.present.iter().filter(|key| !record.contains_key(*key)) {
                    problems.push(format!(
                        "record {}: {key}: expected present, got nothing",
                        i + 1
                    ));
                }
                for key in &self.absent {
                    if let Some(value) = record.get(key) {
                        problems.push(format!(
                            "record {}: {key}: expected absent, got {value}",
                            i + 1
                        ));
                    }
                }
            }
        }
        (!problems.is_empty()).then(|| TestFailure {
            name: self.name.clone(),
            index: self.index,
            problems,
            actual,
        })
    }
}

/// Equal as JSON, with numbers compared by value (`500` and `500.0` are the same).
fn same(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => actual == expected,
    }
}

impl RuleSet {
    /// Runs every test case of the file.
    pub fn run_tests(&self) -> TestReport {
        let mut report = TestReport::default();
        for case in &self.tests {
            match case.run(self) {
                None => report.passed += 1,
                Some(failure) => report.failures.push(failure),
            }
        }
        report
    }

    /// Lines of `source` through the joiner and the rules, as the processor would take them;
    /// with `trace`, each record's step trace too.
    pub(super) fn process_lines(
        &self,
        source: &str,
        lines: &[String],
        trace: bool,
    ) -> Vec<(Outcome, Vec<StepTrace>)> {
        let mut joined = Vec::new();
        let mut joiner = Joiner::<()>::new();
        let now = Instant::now();
        let mut offset = 0u64;
        for line in lines {
            let mut record = Fields::new();
            record.insert("id", Value::String(format!("test-{offset}")));
            record.insert("source_file", Value::String(source.to_owned()));
            record.insert(LINE_FIELD, Value::String(line.clone()));
            joiner.push(self, record, (), now, &mut |r| joined.push(r));
            offset += line.len() as u64 + 1;
        }
        joiner.flush_all(&mut |r| joined.push(r));
        let matched = self.memoised_rules_for(source);
        joined
            .into_iter()
            .map(|mut record| {
                let mut steps = Vec::new();
                let verdict = self.run(&matched, &mut record, trace.then_some(&mut steps));
                let outcome = match verdict {
                    Verdict::Keep => Outcome::Kept(record.into_map()),
                    Verdict::Drop(reason) => Outcome::Dropped(reason.to_owned()),
                };
                (outcome, steps)
            })
            .collect()
    }
}

impl fmt::Display for TestFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "FAIL {} (tests[{}])", self.name, self.index)?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        for (i, outcome) in self.actual.iter().enumerate() {
            match outcome {
                Outcome::Kept(record) => {
                    writeln!(f, "  + record {}: {}", i + 1, Value::Object(record.clone()))?
                }
                Outcome::Dropped(reason) => {
                    writeln!(f, "  + record {}: dropped ({reason})", i + 1)?
                }
            }
        }
        Ok(())
    }
}
