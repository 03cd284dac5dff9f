//! The processor's rules engine: a rules file (YAML or TOML) compiled once into a [`RuleSet`]
//! that enriches each record in place: parsed fields, `log_category`, `log_level`.
//!
//! The one thing easy to get wrong: a record is never dropped by mistake and a line is never
//! lost. Only `filter`, `sample` and `rate_limit` steps drop, returning [`Verdict::Drop`] with
//! a reason the caller counts. A step that fails appends to `processing_error` and the others
//! still run; a JSON step that cannot decode leaves its source where it was; lines longer than
//! `max_line_bytes` skip every parsing step and are flagged `line_too_long`.
//!
//! `docs/rules.md` is the full reference; the outline is below. Beyond it: `categorize:`
//! (category by file-name globs), `tests:` ([`RuleSet::run_tests`]), a rule's `multiline:`
//! ([`Joiner`]), and the steps `logfmt`, `timestamp`, `convert`, `keep`, `filter`, `sample`,
//! `rate_limit` and `redact`. [`RuleSet::check_file`] reports every error with its line;
//! [`RuleSet::explain`] traces each step.
//!
//! # The rules file
//!
//! ```yaml
//! version: 1                 # required; the only version this build reads
//! default_level: INFO        # log_level of a record no step gave one (default INFO)
//! unknown_category: unknown  # log_category when no rule matched the file (default "unknown")
//! max_line_bytes: 65536      # longer lines are kept whole and not parsed (default 64 KiB)
//! common:                    # steps run on every record, before any rule's steps
//!   - regex: {field: line, pattern: '^(?P<timestamp>\S+ \S+) - (?P<rest>.*)$'}
//! rules:                     # every rule whose files match runs, in file order
//!   - name: access           # required, unique
//!     files: ["access*.log"] # globs on the file name (not its directory); and/or
//!     files_regex: '^access' # a regex on the file name
//!     category: access       # log_category; the last matching rule that has one wins
//!     steps:
//!       - json: {field: rest, remove_source: true, when_starts_with: "{"}
//! ```
//!
//! Steps, each a single-key map; every step takes an optional `when:` condition:
//!
//! - `regex: {field, pattern, on_mismatch: skip|error, remove_source: false}`: named groups
//!   that take part in the match become string fields (replacing existing ones).
//! - `json: {field, into: null, remove_source: false, when_starts_with: null, overwrite: false}`:
//!   decodes a JSON object and merges its keys, or puts it under `into`. Without `overwrite` a
//!   key the record already has keeps its value and the payload's goes to `json_<key>`.
//! - `set: {field, value, only_if_missing: false}`; `rename: {from, to, only_if_missing: false,
//!   keep_source: false}`; `remove: {fields: [..]}`; `lowercase: {field}`; `uppercase: {field}`.
//! - `derive: {field, from, cases: [{when, value}], default, only_if_missing: false}`: the
//!   first case that holds gives the value, else `default`, else the field is left alone.
//!
//! Conditions AND every key given: `exists`, `gt`/`gte`/`lt`/`lte` (numbers or numeric
//! strings), `range: [low, high]` (high exclusive), `equals: [..]` (text compare, with
//! `case_insensitive`), `keywords: [..]` (case-insensitive substrings), `matches: regex`, and
//! the nested `all: [..]`, `any: [..]`, `not: {..}`. The field is `field:`, else the enclosing
//! condition's, else (in `derive` cases) the step's `from`. An absent or null field fails every
//! test except `exists: false`.
//!
//! # Rule matching
//!
//! [`RuleSet::apply`] remembers which rules match each source name it has seen (a small map
//! behind a mutex, cleared if it ever holds [`MEMO_MAX_SOURCES`] names). A caller that already
//! keeps per-file state can instead call [`RuleSet::rules_for`] once per file and pass the
//! [`MatchedRules`] to [`RuleSet::apply_matched`], which takes no lock.

#![warn(missing_docs)]

mod alert;
mod condition;
mod explain;
mod locate;
mod multiline;
mod pattern;
mod redact;
mod spec;
mod step;
mod testcase;
#[cfg(test)]
mod tests;
mod timestamp;

pub use self::alert::{AlertKind, AlertRule, MATCHED_ALERTS_FIELD};
pub use self::explain::{Explanation, StepTrace};
pub use self::multiline::{split_id, Joiner, PendingStart};
pub use self::testcase::{Outcome, TestCase, TestFailure, TestReport};

use sidecar_record::{field, Fields};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use parking_lot::Mutex;
use regex::{Regex, RegexBuilder};
use serde_json::Value;

use self::multiline::Multiline;
use self::spec::{RulesFileSpec, VersionProbe, SUPPORTED_VERSION};
use self::step::{Step, StepResult};

/// The memo of rules per source file, looked up for every record: foldhash, not SipHash.
type MemoMap = HashMap<Box<str>, MatchedRules, foldhash::fast::RandomState>;

/// Field holding the source file's name, which chooses the rules.
pub const SOURCE_FILE_FIELD: &str = "source_file";
/// Field holding the record id: `<source key>-<offset>`.
pub const ID_FIELD: &str = "id";
/// Field holding the raw line, as the collector read it.
pub const LINE_FIELD: &str = "line";
/// Field the engine sets to the category of the last matching rule.
pub const LOG_CATEGORY_FIELD: &str = "log_category";
/// Field holding the level; the engine sets `default_level` when no step did.
pub const LOG_LEVEL_FIELD: &str = "log_level";
/// Field collecting what went wrong, messages joined with `"; "`.
pub const PROCESSING_ERROR_FIELD: &str = "processing_error";
/// Field set to `true` when the line was too long to parse.
pub const LINE_TOO_LONG_FIELD: &str = "line_too_long";
/// Field set to `true` on a record pushed to the collector's ingest endpoint: its source is a
/// service, not a file, so no rule's `files`, `files_regex` or `categorize:` glob applies.
pub const PUSHED_FIELD: &str = sidecar_record::field::PUSHED;

/// Compiled size limit of each regex in a rules file: 1 MiB is ample for log patterns and
/// stops a pattern such as `\w{1000}{1000}` from taking the process's memory.
pub const REGEX_SIZE_LIMIT_BYTES: usize = 1024 * 1024;

/// Most source names [`RuleSet::apply`] remembers. A pod writes a handful of files; the cap
/// only keeps a directory of ever-new names (one file per hour, say) from growing the map.
pub const MEMO_MAX_SOURCES: usize = 1024;

/// A rules file, compiled: regexes built, globs in one set, everything checked. Immutable and
/// `Send + Sync`; share it behind an `Arc`.
#[derive(Debug)]
pub struct RuleSet {
    /// The file it came from, for messages.
    origin: String,
    /// `log_level` when no step set one.
    default_level: Value,
    /// `log_category` when no rule with a category matched.
    unknown_category: String,
    /// Lines longer than this skip regex and JSON steps.
    max_line_bytes: usize,
    /// Steps run on every record first.
    common: Vec<Step>,
    /// The rules, in file order.
    rules: Vec<Rule>,
    /// Every rule's globs.
    globs: GlobSet,
    /// For each glob in `globs`, the index of its rule.
    glob_rules: Vec<usize>,
    /// `categorize:` globs, one set; entry `i` gives `categories[category_of_glob[i]]`.
    category_globs: GlobSet,
    /// For each glob in `category_globs`, the index of its category.
    category_of_glob: Vec<usize>,
    /// The `categorize:` categories, first match wins.
    categories: Vec<String>,
    /// The file's test cases, for `processor test`.
    tests: Vec<TestCase>,
    /// Whether any rule has `multiline`.
    joins_lines: bool,
    /// The `alerts:`, in file order.
    alerts: Vec<AlertRule>,
    /// Source name → matching rules; see [`MEMO_MAX_SOURCES`].
    memo: Mutex<MemoMap>,
    /// The same for pushed records' services, kept apart: a service named like a file must
    /// not pick up that file's rules from the memo.
    pushed_memo: Mutex<MemoMap>,
}

/// What the rules decided about a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// It goes on, enriched.
    Keep,
    /// It is dropped, for this reason (a `filter:` step's `reason`, `sampled`,
    /// `rate_limited`): the drop metric's `reason` label.
    Drop(&'a str),
}

/// One compiled rule.
#[derive(Debug)]
struct Rule {
    /// Its unique name.
    name: String,
    /// Regex on the file name, besides the globs in [`RuleSet::globs`].
    files_regex: Option<Regex>,
    /// `log_category` it gives.
    category: Option<String>,
    /// Its steps, in order.
    steps: Vec<Step>,
    /// How its files' continuation lines are joined.
    multiline: Option<Multiline>,
}

/// The rules that match one source file, from [`RuleSet::rules_for`]. Cheap to clone. Use it
/// only with the rule set that made it: rules it names that another set lacks are skipped.
#[derive(Debug, Clone)]
pub struct MatchedRules(Arc<Matched>);

/// What [`MatchedRules`] shares.
#[derive(Debug)]
struct Matched {
    /// The source file name the rules were chosen for (rate limits count per source).
    source: Box<str>,
    /// Indexes into [`RuleSet::rules`], ascending.
    rules: Box<[usize]>,
    /// Index of the last matching rule with a category.
    category: Option<usize>,
    /// The `categorize:` category when no matching rule has one.
    categorized: Option<usize>,
    /// Index of the first matching rule with `multiline`.
    multiline: Option<usize>,
    /// Indexes into [`RuleSet::alerts`] of the alerts with a `when:` that watch this source.
    alerts: Box<[usize]>,
}

impl MatchedRules {
    /// Whether no rule matched the file: its records get only the common steps.
    pub fn is_empty(&self) -> bool {
        self.0.rules.is_empty()
    }

    /// The source file name they were chosen for.
    pub fn source(&self) -> &str {
        &self.0.source
    }
}

impl RuleSet {
    /// Loads a rules file: YAML for `.yaml`/`.yml`, TOML for `.toml`.
    ///
    /// # Errors
    /// The first of the errors [`RuleSet::check_file`] finds.
    pub fn load(path: &Path) -> Result<RuleSet, RulesError> {
        RuleSet::check_file(path).map_err(first_error)
    }

    /// Loads a rules file and reports every error found in it, each with its line where it
    /// can be found (YAML): what `processor validate` prints.
    ///
    /// # Errors
    /// The file cannot be read or has another extension; it does not parse (one error: the
    /// parser stops there); or every compile error of [`RuleSet::from_yaml_str`].
    pub fn check_file(path: &Path) -> Result<RuleSet, Vec<RulesError>> {
        let extension = path
            .extension()
            .and_then(OsStr::to_str)
            .map(str::to_ascii_lowercase);
        let yaml = match extension.as_deref() {
            Some("yaml" | "yml") => true,
            Some("toml") => false,
            _ => {
                return Err(vec![RulesError::UnknownFormat {
                    path: path.to_owned(),
                }])
            }
        };
        let text = std::fs::read_to_string(path).map_err(|source| {
            vec![RulesError::Read {
                path: path.to_owned(),
                source,
            }]
        })?;
        let origin = path.display().to_string();
        if yaml {
            RuleSet::check_yaml_str(&text, &origin)
        } else {
            RuleSet::compile_toml(&text, &origin)
        }
    }

    /// As [`RuleSet::check_file`] for YAML text: every error, with lines.
    ///
    /// # Errors
    /// See [`RuleSet::check_file`].
    pub fn check_yaml_str(text: &str, origin: &str) -> Result<RuleSet, Vec<RulesError>> {
        RuleSet::compile_yaml(text, origin).map_err(|mut errors| {
            for error in &mut errors {
                if let Some(place) = error.place_mut() {
                    place.line = locate::line_of(text, place);
                }
            }
            errors
        })
    }

    /// Compiles YAML rules; `origin` names them in errors (usually the file's path).
    ///
    /// # Errors
    /// [`RulesError::Parse`] for YAML that is malformed or does not fit the schema (unknown
    /// keys included), with line and column; [`RulesError::Version`]; and the compile errors:
    /// [`RulesError::Regex`], [`RulesError::Glob`], [`RulesError::MissingName`],
    /// [`RulesError::DuplicateName`], [`RulesError::Invalid`].
    pub fn from_yaml_str(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        RuleSet::compile_yaml(text, origin).map_err(first_error)
    }

    fn compile_yaml(text: &str, origin: &str) -> Result<RuleSet, Vec<RulesError>> {
        let parse_error = |error: serde_saphyr::Error| {
            let error = error.without_snippet();
            let position = error
                .location()
                .filter(|location| location.line() > 0)
                .map(|location| (location.line(), location.column()));
            let mut message = error.to_string();
            // The plain message ends with the position, which the error shows up front.
            if let Some((line, column)) = position {
                let suffix = format!(" at line {line}, column {column}");
                if let Some(stripped) = message.strip_suffix(&suffix) {
                    message.truncate(stripped.len());
                }
            }
            RulesError::Parse {
                origin: origin.to_owned(),
                position,
                message,
            }
        };
        let probe: VersionProbe = serde_saphyr::from_str(text).map_err(|e| vec![parse_error(e)])?;
        check_version(probe.version, origin).map_err(|e| vec![e])?;
        let spec: RulesFileSpec = serde_saphyr::from_str(text).map_err(|e| vec![parse_error(e)])?;
        compile(spec, origin)
    }

    /// Compiles TOML rules of the same schema; `origin` names them in errors.
    ///
    /// # Errors
    /// As [`RuleSet::from_yaml_str`].
    pub fn from_toml_str(text: &str, origin: &str) -> Result<RuleSet, RulesError> {
        RuleSet::compile_toml(text, origin).map_err(first_error)
    }

    fn compile_toml(text: &str, origin: &str) -> Result<RuleSet, Vec<RulesError>> {
        let parse_error = |error: toml::de::Error| RulesError::Parse {
            origin: origin.to_owned(),
            position: error.span().map(|span| line_column(text, span.start)),
            message: error.message().trim_end().to_owned(),
        };
        let probe: VersionProbe = toml::from_str(text).map_err(|e| vec![parse_error(e)])?;
        check_version(probe.version, origin).map_err(|e| vec![e])?;
        let spec: RulesFileSpec = toml::from_str(text).map_err(|e| vec![parse_error(e)])?;
        compile(spec, origin)
    }

    /// Where the rules came from, as given to the loader.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The rules' names, in file order.
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|rule| rule.name.as_str())
    }

    /// The rules whose `files` or `files_regex` match the file name of `source_file` (the part
    /// after the last `/`). Computed afresh on each call; [`RuleSet::apply`] memoises it.
    pub fn rules_for(&self, source_file: &str) -> MatchedRules {
        let name = source_file.rsplit('/').next().unwrap_or(source_file);
        let mut hit = vec![false; self.rules.len()];
        for glob in self.globs.matches(name) {
            if let Some(&rule) = self.glob_rules.get(glob) {
                hit[rule] = true;
            }
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if rule
                .files_regex
                .as_ref()
                .is_some_and(|regex| regex.is_match(name))
            {
                hit[index] = true;
            }
        }
        let rules: Box<[usize]> = (0..hit.len()).filter(|&index| hit[index]).collect();
        let category = rules
            .iter()
            .rev()
            .copied()
            .find(|&index| self.rules[index].category.is_some());
        let categorized = self
            .category_globs
            .matches(name)
            .into_iter()
            .filter_map(|glob| self.category_of_glob.get(glob).copied())
            .min();
        let multiline = rules
            .iter()
            .copied()
            .find(|&index| self.rules[index].multiline.is_some());
        let alerts = self.alerts_with_condition(|alert| alert.watches(source_file));
        MatchedRules(Arc::new(Matched {
            source: source_file.into(),
            rules,
            category,
            categorized,
            multiline,
            alerts,
        }))
    }

    /// How continuation lines of `source_file` are joined: the `multiline` of the first
    /// matching rule that has one.
    pub(crate) fn multiline_for(&self, source_file: &str) -> Option<&Multiline> {
        // Most rule sets join nothing: spare them the lookup on every record.
        if !self.joins_lines {
            return None;
        }
        let matched = self.memoised_rules_for(source_file);
        let index = matched.0.multiline?;
        self.rules.get(index)?.multiline.as_ref()
    }

    /// The file's test cases.
    pub fn tests(&self) -> &[TestCase] {
        &self.tests
    }

    /// Enriches one record of `source_file` in place: the common steps, then the steps of every
    /// matching rule in file order, then `log_category` and (if still absent) `log_level`.
    /// Never panics; failures go to `processing_error`. A `filter`, `sample` or `rate_limit`
    /// step may drop the record: the steps after it do not run.
    pub fn apply(&self, source_file: &str, record: &mut Fields) -> Verdict<'_> {
        let matched = self.memoised_rules_for(source_file);
        self.apply_matched(&matched, record)
    }

    /// As [`RuleSet::apply`], with the rules already looked up by [`RuleSet::rules_for`].
    pub fn apply_matched(&self, matched: &MatchedRules, record: &mut Fields) -> Verdict<'_> {
        self.run(matched, record, None)
    }

    /// [`RuleSet::rules_for`] the record's `source_file`, remembered per name: no allocation
    /// once a name was seen. A record marked [`PUSHED_FIELD`] gets [`RuleSet::rules_for_pushed`].
    pub fn rules_for_record(&self, record: &Fields) -> MatchedRules {
        let source = match record.get(SOURCE_FILE_FIELD) {
            Some(Value::String(source)) => source.as_str(),
            _ => "",
        };
        if is_pushed(record) {
            return self.memoised(&self.pushed_memo, source, Self::rules_for_pushed);
        }
        self.memoised_rules_for(source)
    }

    /// The rules of records an app pushed as `service`: none. Rules select files by name, and
    /// a pushed record has no file; were its service matched against the globs, an app could
    /// send `service: "access.log"` and have its records parsed, categorised and sampled as
    /// that file's. Pushed records get the common steps and `unknown_category`.
    pub fn rules_for_pushed(&self, service: &str) -> MatchedRules {
        MatchedRules(Arc::new(Matched {
            source: service.into(),
            rules: Box::new([]),
            category: None,
            categorized: None,
            multiline: None,
            // As rules, alerts that name files do not see pushed records; alerts on every
            // source do.
            alerts: self.alerts_with_condition(|alert| alert.watches_every_source()),
        }))
    }

    /// The steps, with an optional trace of each for `explain`.
    fn run(
        &self,
        matched: &MatchedRules,
        record: &mut Fields,
        mut trace: Option<&mut Vec<StepTrace>>,
    ) -> Verdict<'_> {
        let too_long = matches!(
            record.get(LINE_FIELD),
            Some(Value::String(line)) if line.len() > self.max_line_bytes
        );
        if too_long {
            record.insert(LINE_TOO_LONG_FIELD, Value::Bool(true));
        }
        let rule_steps = matched
            .0
            .rules
            .iter()
            .filter_map(|&index| self.rules.get(index))
            .flat_map(|rule| &rule.steps);
        let source_file = matched.source();
        for step in self.common.iter().chain(rule_steps) {
            let result = match trace.as_deref_mut() {
                None => step.apply(source_file, record, too_long),
                Some(trace) => {
                    let before = record.clone();
                    let result = step.apply(source_file, record, too_long);
                    trace.push(StepTrace::new(step.label(), result, &before, record));
                    result
                }
            };
            if let StepResult::Drop(reason) = result {
                return Verdict::Drop(reason);
            }
        }
        record.insert(
            field::name::LOG_CATEGORY,
            Value::String(self.category_of(matched).to_owned()),
        );
        if present(record, LOG_LEVEL_FIELD).is_none() {
            record.insert(field::name::LOG_LEVEL, self.default_level.clone());
        }
        self.tag_matched_alerts(matched, record);
        Verdict::Keep
    }

    /// The alert rules, in file order.
    pub fn alerts(&self) -> &[AlertRule] {
        &self.alerts
    }

    /// Indexes of the alerts with a `when:` for which `watches` holds.
    fn alerts_with_condition(&self, watches: impl Fn(&AlertRule) -> bool) -> Box<[usize]> {
        (0..self.alerts.len())
            .filter(|&i| self.alerts[i].has_condition() && watches(&self.alerts[i]))
            .collect()
    }

    /// Lists in [`MATCHED_ALERTS_FIELD`] the alerts whose `when:` the finished record meets;
    /// a record no alert matches is left as it is (no allocation).
    fn tag_matched_alerts(&self, matched: &MatchedRules, record: &mut Fields) {
        let mut names = Vec::new();
        for alert in matched.0.alerts.iter().filter_map(|&i| self.alerts.get(i)) {
            if alert.holds(record) {
                names.push(Value::String(alert.name().to_owned()));
            }
        }
        if !names.is_empty() {
            record.insert(MATCHED_ALERTS_FIELD, Value::Array(names));
        }
    }

    /// The category a file's records get: the last matching rule's `category`, else the first
    /// `categorize:` entry whose globs match, else `unknown_category`.
    fn category_of(&self, matched: &MatchedRules) -> &str {
        matched
            .0
            .category
            .and_then(|index| self.rules.get(index))
            .and_then(|rule| rule.category.as_deref())
            .or_else(|| {
                matched
                    .0
                    .categorized
                    .and_then(|index| self.categories.get(index))
                    .map(String::as_str)
            })
            .unwrap_or(&self.unknown_category)
    }

    /// [`RuleSet::rules_for`], remembered per source name.
    fn memoised_rules_for(&self, source_file: &str) -> MatchedRules {
        self.memoised(&self.memo, source_file, Self::rules_for)
    }

    /// `compute(source_file)`, remembered in `memo`.
    fn memoised(
        &self,
        memo: &Mutex<MemoMap>,
        source_file: &str,
        compute: fn(&Self, &str) -> MatchedRules,
    ) -> MatchedRules {
        let mut memo = memo.lock();
        if let Some(matched) = memo.get(source_file) {
            return matched.clone();
        }
        let matched = compute(self, source_file);
        if memo.len() >= MEMO_MAX_SOURCES {
            memo.clear();
        }
        memo.insert(source_file.into(), matched.clone());
        matched
    }
}

/// Why a rules file was rejected. Each message names the file and, where there is one, the
/// rule (`rule 3 ("access")`, counted from 1) and the field path (`steps[1].regex.pattern`,
/// indexes counted from 0 as in the file's lists).
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    /// The file could not be read.
    #[error("cannot read rules file {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file's extension names no format this module reads.
    #[error("rules file {}: unknown format: name it .yaml, .yml or .toml", .path.display())]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
    /// YAML or TOML that is malformed or does not fit the schema.
    #[error("{origin}{}: {message}", position_suffix(.position))]
    Parse {
        /// The file.
        origin: String,
        /// Line and column, from 1, where known.
        position: Option<(u64, u64)>,
        /// The parser's message, without the position.
        message: String,
    },
    /// `version` is missing or not one this build reads.
    #[error("{origin}: version: {}", version_problem(.found))]
    Version {
        /// The file.
        origin: String,
        /// The version found, if any.
        found: Option<u64>,
    },
    /// A regex does not compile (or exceeds [`REGEX_SIZE_LIMIT_BYTES`]).
    #[error("{at}: invalid regex")]
    Regex {
        /// Where (boxed: it keeps every `Result` of the compiler small).
        at: Box<Place>,
        /// Why.
        #[source]
        source: regex::Error,
    },
    /// A glob does not compile.
    #[error("{at}: invalid glob")]
    Glob {
        /// Where (boxed: it keeps every `Result` of the compiler small).
        at: Box<Place>,
        /// Why (boxed: it is the largest cause and would make every `Result` bigger).
        #[source]
        source: Box<globset::Error>,
    },
    /// A rule has no name (or an empty one).
    #[error("{at}: missing: every rule needs a unique name")]
    MissingName {
        /// Where (boxed: it keeps every `Result` of the compiler small).
        at: Box<Place>,
    },
    /// Two rules have the same name.
    #[error("{at}: \"{name}\" is already the name of rule {first}")]
    DuplicateName {
        /// Where: the second rule.
        at: Box<Place>,
        /// The name.
        name: String,
        /// The number of the rule that has it first, from 1.
        first: usize,
    },
    /// A value serde accepted but the engine cannot use: empty lists and names, inverted
    /// ranges, a condition that tests nothing, a rule that matches no file.
    #[error("{at}: {reason}")]
    Invalid {
        /// Where (boxed: it keeps every `Result` of the compiler small).
        at: Box<Place>,
        /// What is wrong with it.
        reason: String,
    },
}

impl RulesError {
    /// Where in the file it is, for errors found while compiling.
    fn place_mut(&mut self) -> Option<&mut Place> {
        match self {
            RulesError::Regex { at, .. }
            | RulesError::Glob { at, .. }
            | RulesError::MissingName { at }
            | RulesError::DuplicateName { at, .. }
            | RulesError::Invalid { at, .. } => Some(&mut **at),
            RulesError::Read { .. }
            | RulesError::UnknownFormat { .. }
            | RulesError::Parse { .. }
            | RulesError::Version { .. } => None,
        }
    }
}

/// The first of a non-empty list of errors.
fn first_error(errors: Vec<RulesError>) -> RulesError {
    errors
        .into_iter()
        .next()
        .expect("a failed compile reports at least one error")
}

/// Where in a rules file something is wrong. Displays as
/// `rules.yaml: rule 3 ("access"): steps[1].regex.pattern`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The file.
    pub origin: String,
    /// The rule's number, from 1; `None` for top-level keys and `common`.
    pub rule_number: Option<usize>,
    /// The rule's name, when it has one.
    pub rule_name: Option<String>,
    /// Path of the field within the rule (or the file): `steps[1].regex.pattern`.
    pub field: String,
    /// The line (from 1) the field is on, where [`RuleSet::check_file`] found it.
    pub line: Option<u64>,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(number) = self.rule_number {
            write!(f, ": rule {number}")?;
            if let Some(name) = &self.rule_name {
                write!(f, " ({name:?})")?;
            }
        }
        write!(f, ": {}", self.field)
    }
}

/// `:line:column`, or nothing when the position is unknown.
fn position_suffix(position: &Option<(u64, u64)>) -> String {
    match position {
        Some((line, column)) => format!(":{line}:{column}"),
        None => String::new(),
    }
}

/// The `Version` error's detail.
fn version_problem(found: &Option<u64>) -> String {
    match found {
        Some(version) => {
            format!("unsupported version {version}; this build reads version {SUPPORTED_VERSION}")
        }
        None => format!("missing; add `version: {SUPPORTED_VERSION}`"),
    }
}

/// Line and column (from 1, column in characters) of a byte offset in `text`.
fn line_column(text: &str, offset: usize) -> (u64, u64) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line as u64, column as u64)
}

/// Rejects a missing or unsupported `version`.
fn check_version(found: Option<u64>, origin: &str) -> Result<(), RulesError> {
    if found == Some(SUPPORTED_VERSION) {
        Ok(())
    } else {
        Err(RulesError::Version {
            origin: origin.to_owned(),
            found,
        })
    }
}

/// What compile errors are about: the file and, inside a rule, the rule.
struct Scope<'a> {
    /// The file.
    origin: &'a str,
    /// The rule's number (from 1) and name.
    rule: Option<(usize, Option<&'a str>)>,
}

impl Scope<'_> {
    /// The place of `field` in this scope.
    fn place(&self, field: impl Into<String>) -> Box<Place> {
        Box::new(Place {
            origin: self.origin.to_owned(),
            rule_number: self.rule.map(|(number, _)| number),
            rule_name: self.rule.and_then(|(_, name)| name.map(str::to_owned)),
            field: field.into(),
            line: None,
        })
    }

    /// A [`RulesError::Invalid`] for `field` in this scope.
    fn invalid(&self, field: impl Into<String>, reason: impl Into<String>) -> RulesError {
        RulesError::Invalid {
            at: self.place(field),
            reason: reason.into(),
        }
    }
}

/// Compiles a regex from the rules file with the size limit.
fn build_regex(pattern: &str, scope: &Scope<'_>, field: &str) -> Result<Regex, RulesError> {
    RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT_BYTES)
        .build()
        .map_err(|source| RulesError::Regex {
            at: scope.place(field),
            source,
        })
}

/// A field's value unless it is absent or null: "present" everywhere in the rules.
/// Whether the record was pushed to the ingest endpoint (see [`PUSHED_FIELD`]).
pub(crate) fn is_pushed(record: &Fields) -> bool {
    matches!(record.get(PUSHED_FIELD), Some(Value::Bool(true)))
}

fn present<'a>(record: &'a Fields, field: &str) -> Option<&'a Value> {
    record.get(field).filter(|value| !value.is_null())
}

/// Appends `message` to the record's `processing_error`.
fn push_error(record: &mut Fields, message: String) {
    match record.get_mut(PROCESSING_ERROR_FIELD) {
        Some(Value::String(existing)) => {
            existing.push_str("; ");
            existing.push_str(&message);
        }
        Some(other) if !other.is_null() => {
            *other = Value::String(format!("{other}; {message}"));
        }
        _ => {
            record.insert(PROCESSING_ERROR_FIELD, Value::String(message));
        }
    }
}

/// Collects compile errors, so `validate` can show all of them at once.
#[derive(Default)]
struct Errors(Vec<RulesError>);

impl Errors {
    /// The value, or `None` with its error kept.
    fn keep<T>(&mut self, result: Result<T, RulesError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => {
                self.0.push(error);
                None
            }
        }
    }
}

/// Turns the checked-for-shape file into a rule set, or every error found in it.
fn compile(spec: RulesFileSpec, origin: &str) -> Result<RuleSet, Vec<RulesError>> {
    let mut errors = Errors::default();
    if let Err(error) = check_version(Some(spec.version), origin) {
        return Err(vec![error]);
    }
    let file = Scope { origin, rule: None };
    if spec.max_line_bytes == 0 {
        errors
            .0
            .push(file.invalid("max_line_bytes", "must be at least 1"));
    }
    if spec.default_level.is_empty() {
        errors
            .0
            .push(file.invalid("default_level", "must not be empty"));
    }
    if spec.unknown_category.is_empty() {
        errors
            .0
            .push(file.invalid("unknown_category", "must not be empty"));
    }

    let mut common = Vec::with_capacity(spec.common.len());
    for (index, step) in spec.common.into_iter().enumerate() {
        let label = format!("common[{index}] ({})", step.kind());
        if let Some(step) = errors.keep(Step::compile(
            step,
            &file,
            &format!("common[{index}]"),
            label,
        )) {
            common.push(step);
        }
    }

    let mut rules = Vec::with_capacity(spec.rules.len());
    let mut first_by_name: HashMap<String, usize> = HashMap::new();
    let mut globs = GlobSetBuilder::new();
    let mut glob_rules = Vec::new();
    for (index, rule) in spec.rules.into_iter().enumerate() {
        let number = index + 1;
        let name = match rule.name {
            Some(name) if !name.is_empty() => name,
            _ => {
                let at = Scope {
                    origin,
                    rule: Some((number, None)),
                };
                errors.0.push(RulesError::MissingName {
                    at: at.place("name"),
                });
                format!("#{number}")
            }
        };
        let scope = Scope {
            origin,
            rule: Some((number, Some(&name))),
        };
        if let Some(&first) = first_by_name.get(&name) {
            errors.0.push(RulesError::DuplicateName {
                at: scope.place("name"),
                name: name.clone(),
                first,
            });
        }

        if rule.files.is_empty() && rule.files_regex.is_none() {
            errors.0.push(scope.invalid(
                "files",
                "matches no file: give `files` globs, `files_regex`, or both",
            ));
        }
        for (glob_index, pattern) in rule.files.iter().enumerate() {
            if let Some(glob) =
                errors.keep(build_glob(pattern, &scope, &format!("files[{glob_index}]")))
            {
                globs.add(glob);
                glob_rules.push(rules.len());
            }
        }
        let files_regex = rule
            .files_regex
            .as_deref()
            .and_then(|pattern| errors.keep(build_regex(pattern, &scope, "files_regex")));
        if rule.category.as_deref() == Some("") {
            errors
                .0
                .push(scope.invalid("category", "must not be empty; leave it out instead"));
        }
        let mut steps = Vec::with_capacity(rule.steps.len());
        for (step_index, step) in rule.steps.into_iter().enumerate() {
            let label = format!("rule {name:?} steps[{step_index}] ({})", step.kind());
            if let Some(step) = errors.keep(Step::compile(
                step,
                &scope,
                &format!("steps[{step_index}]"),
                label,
            )) {
                steps.push(step);
            }
        }
        let multiline = rule.multiline.and_then(|spec| {
            errors.keep(Multiline::compile(
                spec,
                &mut |pattern, field| build_regex(pattern, &scope, field),
                &mut |field, reason| scope.invalid(field, reason),
            ))
        });

        first_by_name.entry(name.clone()).or_insert(number);
        rules.push(Rule {
            name,
            files_regex,
            category: rule.category,
            steps,
            multiline,
        });
    }
    let globs = errors.keep(globs.build().map_err(|source| RulesError::Glob {
        at: file.place("rules[].files"),
        source: Box::new(source),
    }));

    let mut category_globs = GlobSetBuilder::new();
    let mut category_of_glob = Vec::new();
    let mut categories = Vec::with_capacity(spec.categorize.len());
    for (index, entry) in spec.categorize.into_iter().enumerate() {
        if entry.category.is_empty() {
            errors
                .0
                .push(file.invalid(format!("categorize[{index}].category"), "must not be empty"));
        }
        if entry.files.is_empty() {
            errors.0.push(file.invalid(
                format!("categorize[{index}].files"),
                "must list at least one glob",
            ));
        }
        for (glob_index, pattern) in entry.files.iter().enumerate() {
            let field = format!("categorize[{index}].files[{glob_index}]");
            if let Some(glob) = errors.keep(build_glob(pattern, &file, &field)) {
                category_globs.add(glob);
                category_of_glob.push(index);
            }
        }
        categories.push(entry.category);
    }
    let category_globs = errors.keep(category_globs.build().map_err(|source| RulesError::Glob {
        at: file.place("categorize[].files"),
        source: Box::new(source),
    }));

    let mut tests = Vec::with_capacity(spec.tests.len());
    for (index, test) in spec.tests.into_iter().enumerate() {
        if let Some(test) = errors.keep(TestCase::compile(test, index, &file)) {
            tests.push(test);
        }
    }

    let mut alerts: Vec<AlertRule> = Vec::with_capacity(spec.alerts.len());
    for (index, alert) in spec.alerts.into_iter().enumerate() {
        let Some(alert) = errors.keep(AlertRule::compile(alert, index, &file)) else {
            continue;
        };
        if alerts.iter().any(|a| a.name() == alert.name()) {
            errors.0.push(file.invalid(
                format!("alerts[{index}].name"),
                format!(
                    "{:?} is used twice (alert names must be unique)",
                    alert.name()
                ),
            ));
            continue;
        }
        alerts.push(alert);
    }

    let joins_lines = rules.iter().any(|rule| rule.multiline.is_some());
    match (errors.0.is_empty(), globs, category_globs) {
        (true, Some(globs), Some(category_globs)) => Ok(RuleSet {
            origin: origin.to_owned(),
            default_level: Value::String(spec.default_level),
            unknown_category: spec.unknown_category,
            max_line_bytes: spec.max_line_bytes,
            common,
            rules,
            globs,
            glob_rules,
            category_globs,
            category_of_glob,
            categories,
            tests,
            joins_lines,
            alerts,
            memo: Mutex::new(MemoMap::default()),
            pushed_memo: Mutex::new(MemoMap::default()),
        }),
        _ => Err(errors.0),
    }
}

/// Compiles a file-name glob; globs with a `/` are rejected, since only the name is matched.
fn build_glob(pattern: &str, scope: &Scope<'_>, field: &str) -> Result<globset::Glob, RulesError> {
    if pattern.contains('/') {
        return Err(scope.invalid(
            field,
            format!("{pattern:?}: globs match the file name only; drop the directory"),
        ));
    }
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|source| RulesError::Glob {
            at: scope.place(field),
            source: Box::new(source),
        })
}
