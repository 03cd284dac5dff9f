//! The rules file as written: serde structs that mirror the YAML/TOML schema one to one.
//!
//! Nothing here is checked beyond its shape; `compile` turns these into the runtime types and
//! rejects what serde cannot see (bad regexes and globs, empty lists, inverted ranges). Every
//! struct denies unknown keys, so a typo is an error with a line number, not a silently ignored
//! option.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The only rules file version this build reads.
pub(super) const SUPPORTED_VERSION: u64 = 1;

/// First pass over a file: only `version`, ignoring every other key, so a file written for a
/// later version is reported as such rather than as a list of unknown keys.
#[derive(Debug, Deserialize)]
pub(super) struct VersionProbe {
    /// The `version` key, if the file has one.
    pub(super) version: Option<u64>,
}

/// A whole rules file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RulesFileSpec {
    /// Schema version; must be [`SUPPORTED_VERSION`].
    pub(super) version: u64,
    /// `log_level` of a record no step gave one.
    #[serde(default = "default_level")]
    pub(super) default_level: String,
    /// `log_category` of a record whose source file no rule matched.
    #[serde(default = "default_unknown_category")]
    pub(super) unknown_category: String,
    /// Longest `line`, in bytes, that regex and JSON steps still parse.
    #[serde(default = "default_max_line_bytes")]
    pub(super) max_line_bytes: usize,
    /// Steps run on every record before any rule's steps.
    #[serde(default)]
    pub(super) common: Vec<StepSpec>,
    /// Per-file rules, applied in this order.
    #[serde(default)]
    pub(super) rules: Vec<RuleSpec>,
    /// Categories by file name, first match wins; used when no matching rule has a `category`.
    #[serde(default)]
    pub(super) categorize: Vec<CategorySpec>,
    /// Test cases that `processor test` runs against these rules.
    #[serde(default)]
    pub(super) tests: Vec<TestSpec>,
    /// Alert rules, evaluated by the forwarder on the records these rules produce.
    #[serde(default)]
    pub(super) alerts: Vec<super::alert::AlertSpec>,
}

/// One entry of `categorize:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CategorySpec {
    /// The category given.
    pub(super) category: String,
    /// Globs on the file name.
    pub(super) files: Vec<String>,
}

/// One test case: lines of a source file and what the rules must make of them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TestSpec {
    /// Names the case in the report.
    pub(super) name: String,
    /// The source file name the lines come from.
    pub(super) source: String,
    /// One input line ...
    pub(super) line: Option<String>,
    /// ... or several (joined by multiline rules, or one record each).
    pub(super) lines: Option<Vec<String>>,
    /// The fields the one output record must have (others may be present).
    pub(super) expect: Option<serde_json::Map<String, Value>>,
    /// The fields of each output record, in order, when there are several.
    pub(super) expect_records: Option<Vec<serde_json::Map<String, Value>>>,
    /// Fields the output record(s) must not have.
    #[serde(default)]
    pub(super) absent: Vec<String>,
    /// Fields the output record(s) must have, whatever their value.
    #[serde(default)]
    pub(super) present: Vec<String>,
    /// Every record is dropped: `true`, or the drop reason expected.
    pub(super) dropped: Option<Value>,
}

/// Python's logging calls a record without another level INFO; so do we.
fn default_level() -> String {
    "INFO".to_owned()
}

/// A plain word that sorts and filters well in every sink.
fn default_unknown_category() -> String {
    "unknown".to_owned()
}

/// 64 KiB: far above any real log line of the demo apps, far below what would make one record
/// a memory or latency problem (regex and JSON work is linear in the line's length).
fn default_max_line_bytes() -> usize {
    64 * 1024
}

/// One rule: which files it applies to and what it does to their records.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RuleSpec {
    /// Unique name, used in error messages and `processing_error`. Optional for serde only, so
    /// that a missing name is reported with the rule's number.
    pub(super) name: Option<String>,
    /// Globs on the source file's name (not its directory).
    #[serde(default)]
    pub(super) files: Vec<String>,
    /// A regex on the source file's name.
    pub(super) files_regex: Option<String>,
    /// `log_category` of records from matching files.
    pub(super) category: Option<String>,
    /// Steps run, in order, on every record of a matching file.
    #[serde(default)]
    pub(super) steps: Vec<StepSpec>,
    /// Joins continuation lines into one record before any step runs.
    pub(super) multiline: Option<MultilineSpec>,
}

/// `multiline:` of a rule: which lines continue the record before them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct MultilineSpec {
    /// A ready-made continuation pattern for a stack-trace layout.
    pub(super) preset: Option<MultilinePreset>,
    /// A regex: a line matching it starts a record, every other line continues one.
    pub(super) start: Option<String>,
    /// A regex: a line matching it continues the record, every other line starts one.
    pub(super) continuation: Option<String>,
    /// Lines starting with a space or tab continue the record.
    #[serde(default)]
    pub(super) indented: bool,
    /// The field continuation lines go to (default `stack_trace`); `line` appends them to the
    /// first line instead.
    #[serde(default = "default_multiline_into")]
    pub(super) into: String,
    /// A record waiting for more lines is let go after this long without one (default 1000).
    #[serde(default = "default_flush_after_ms")]
    pub(super) flush_after_ms: u64,
    /// At most this many lines per record (default 500); the next line starts a new one.
    #[serde(default = "default_max_lines")]
    pub(super) max_lines: usize,
    /// At most this many bytes per record (default 256 KiB).
    #[serde(default = "default_max_bytes")]
    pub(super) max_bytes: usize,
}

/// The first line stays alone in `line`, so the steps parse it as they parse any other line.
fn default_multiline_into() -> String {
    "stack_trace".to_owned()
}

/// 1 s: a stack trace is written in one go, so a second without a line means it ended, and
/// a record waits no longer than that before it moves on.
fn default_flush_after_ms() -> u64 {
    1000
}

/// 500 lines: deeper than the deepest real stack trace (Java's default is 1024 frames, but
/// those are cut with `... N more`), small enough to bound a runaway group.
fn default_max_lines() -> usize {
    500
}

/// 256 KiB: far above a real stack trace, and a bound on the memory one group holds.
fn default_max_bytes() -> usize {
    256 * 1024
}

/// Stack-trace layouts with a ready-made continuation pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum MultilinePreset {
    /// `Traceback (most recent call last):`, indented frames, the final `ValueError: …`.
    Python,
    /// `\tat com.x.Y.z(Y.java:1)`, `Caused by: …`, `... 12 more`.
    Java,
    /// `goroutine 1 [running]:`, `main.main()`, `\t/src/main.go:12 +0x1d`, blank lines.
    Go,
}

/// One step: a single-key map naming the kind of step.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum StepSpec {
    /// Named captures of a regex become string fields.
    Regex(RegexSpec),
    /// A field holding a JSON object is decoded and merged.
    Json(JsonSpec),
    /// A field gets a fixed value.
    Set(SetSpec),
    /// A field is moved (or copied) to another name.
    Rename(RenameSpec),
    /// Fields are removed.
    Remove(RemoveSpec),
    /// A field's value is chosen by the first matching case.
    Derive(DeriveSpec),
    /// A string field is lowercased.
    Lowercase(CaseSpec),
    /// A string field is uppercased.
    Uppercase(CaseSpec),
    /// `key=value` pairs (logfmt) become fields.
    Logfmt(LogfmtSpec),
    /// A timestamp in a known layout becomes RFC 3339 UTC.
    Timestamp(TimestampSpec),
    /// Fields are converted to another type.
    Convert(ConvertSpec),
    /// Every field not listed is removed.
    Keep(KeepSpec),
    /// The record is dropped or kept by a condition.
    Filter(FilterSpec),
    /// One record in N is kept, chosen by record id.
    Sample(SampleSpec),
    /// Records of a source beyond a rate are dropped.
    RateLimit(RateLimitSpec),
    /// Secrets and personal data are masked.
    Redact(RedactSpec),
}

impl StepSpec {
    /// The step's key in the file, for error paths.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            StepSpec::Regex(_) => "regex",
            StepSpec::Json(_) => "json",
            StepSpec::Set(_) => "set",
            StepSpec::Rename(_) => "rename",
            StepSpec::Remove(_) => "remove",
            StepSpec::Derive(_) => "derive",
            StepSpec::Lowercase(_) => "lowercase",
            StepSpec::Uppercase(_) => "uppercase",
            StepSpec::Logfmt(_) => "logfmt",
            StepSpec::Timestamp(_) => "timestamp",
            StepSpec::Convert(_) => "convert",
            StepSpec::Keep(_) => "keep",
            StepSpec::Filter(_) => "filter",
            StepSpec::Sample(_) => "sample",
            StepSpec::RateLimit(_) => "rate_limit",
            StepSpec::Redact(_) => "redact",
        }
    }

    /// Takes the step's `when:` out, leaving the kind's own keys (a `filter` has none: its
    /// condition is what it does).
    pub(super) fn take_when(&mut self) -> Option<ConditionSpec> {
        match self {
            StepSpec::Regex(s) => s.when.take(),
            StepSpec::Json(s) => s.when.take(),
            StepSpec::Set(s) => s.when.take(),
            StepSpec::Rename(s) => s.when.take(),
            StepSpec::Remove(s) => s.when.take(),
            StepSpec::Derive(s) => s.when.take(),
            StepSpec::Lowercase(s) | StepSpec::Uppercase(s) => s.when.take(),
            StepSpec::Logfmt(s) => s.when.take(),
            StepSpec::Timestamp(s) => s.when.take(),
            StepSpec::Convert(s) => s.when.take(),
            StepSpec::Keep(s) => s.when.take(),
            StepSpec::Filter(_) => None,
            StepSpec::Sample(s) => s.when.take(),
            StepSpec::RateLimit(s) => s.when.take(),
            StepSpec::Redact(s) => s.when.take(),
        }
    }
}

/// What a regex step does when its field does not match.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum OnMismatch {
    /// Leave the record as it is: the usual case for optional layouts.
    #[default]
    Skip,
    /// Add a `processing_error`.
    Error,
}

/// `regex:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RegexSpec {
    /// Field to match; a non-string value never matches.
    pub(super) field: String,
    /// The regex; its named groups name the fields it sets.
    pub(super) pattern: String,
    /// Default `skip`.
    #[serde(default)]
    pub(super) on_mismatch: OnMismatch,
    /// Remove `field` after a match. Default false.
    #[serde(default)]
    pub(super) remove_source: bool,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// `json:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JsonSpec {
    /// Field holding the JSON text.
    pub(super) field: String,
    /// Put the object under this key instead of merging its keys into the record.
    pub(super) into: Option<String>,
    /// Remove `field` after a successful decode. Default false.
    #[serde(default)]
    pub(super) remove_source: bool,
    /// Decode only when the text (after leading whitespace) starts with this.
    pub(super) when_starts_with: Option<String>,
    /// Let the payload's keys replace fields the record already has. Default false: the
    /// payload's value is then kept under `json_<key>`.
    #[serde(default)]
    pub(super) overwrite: bool,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// `set:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SetSpec {
    /// Field to set.
    pub(super) field: String,
    /// Any JSON value ...
    pub(super) value: Option<Value>,
    /// ... or the value of this environment variable, read when the rules load ...
    pub(super) env: Option<String>,
    /// ... or a template: `{{pod}}`, `{{namespace}}`, `{{node}}`, `{{pod_ip}}`,
    /// `{{service_account}}`, `{{env.NAME}}`, or `{{field}}` for a field of the record.
    pub(super) template: Option<String>,
    /// Leave a present field alone. Default false.
    #[serde(default)]
    pub(super) only_if_missing: bool,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// `rename:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RenameSpec {
    /// Field to move.
    pub(super) from: String,
    /// Its new name.
    pub(super) to: String,
    /// Do nothing when `to` is present. Default false.
    #[serde(default)]
    pub(super) only_if_missing: bool,
    /// Copy instead of move. Default false.
    #[serde(default)]
    pub(super) keep_source: bool,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// `remove:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveSpec {
    /// Fields to remove; absent ones are ignored.
    pub(super) fields: Vec<String>,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// `derive:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DeriveSpec {
    /// Field to set.
    pub(super) field: String,
    /// Field the cases test unless a case names its own `field`.
    pub(super) from: Option<String>,
    /// Tried in order; the first that holds gives the value.
    pub(super) cases: Vec<CaseSpecEntry>,
    /// Value when no case holds; without it the field is left untouched.
    pub(super) default: Option<Value>,
    /// Leave a present field alone. Default false.
    #[serde(default)]
    pub(super) only_if_missing: bool,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// One case of a `derive:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseSpecEntry {
    /// Condition on the step's `from` field (or the case's own `field`).
    pub(super) when: ConditionSpec,
    /// Value the derived field gets.
    pub(super) value: Value,
}

/// `lowercase:` and `uppercase:` steps.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CaseSpec {
    /// String field to change; other values are left alone.
    pub(super) field: String,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// A condition: every test given holds (AND).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConditionSpec {
    /// Field the tests look at; inherited by nested conditions and, in `derive`, from `from`.
    pub(super) field: Option<String>,
    /// The field is present (not absent, not null) or, with false, is not.
    pub(super) exists: Option<bool>,
    /// Numeric value (or numeric string) greater than this.
    pub(super) gt: Option<f64>,
    /// Numeric value at least this.
    pub(super) gte: Option<f64>,
    /// Numeric value less than this.
    pub(super) lt: Option<f64>,
    /// Numeric value at most this.
    pub(super) lte: Option<f64>,
    /// `[low, high]`: low inclusive, high exclusive.
    pub(super) range: Option<[f64; 2]>,
    /// The value's text equals one of these scalars.
    pub(super) equals: Option<Vec<ScalarText>>,
    /// `equals` ignores case. Default false.
    pub(super) case_insensitive: Option<bool>,
    /// The value's text contains one of these, ignoring case.
    pub(super) keywords: Option<Vec<String>>,
    /// The value's text matches this regex (unanchored).
    pub(super) matches: Option<String>,
    /// Every nested condition holds.
    pub(super) all: Option<Vec<ConditionSpec>>,
    /// At least one nested condition holds.
    pub(super) any: Option<Vec<ConditionSpec>>,
    /// The nested condition does not hold.
    pub(super) not: Option<Box<ConditionSpec>>,
}

/// A scalar of an `equals:` list, as text. YAML scalars are taken as written, so `yes`, `on`
/// and `1.50` stay those words instead of turning into booleans or `1.5`; TOML's typed
/// numbers and booleans are written the way JSON writes them.
#[derive(Debug)]
pub(super) struct ScalarText(pub(super) String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ScalarText, D::Error> {
        struct TextVisitor;

        impl Visitor<'_> for TextVisitor {
            type Value = ScalarText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<ScalarText, E> {
                Ok(ScalarText(v))
            }

            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ScalarText, E> {
                Ok(ScalarText(v.to_string()))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ScalarText, E> {
                Ok(ScalarText(Value::from(v).to_string()))
            }
        }

        // `deserialize_str` rather than `deserialize_any`: a YAML deserializer then hands over
        // the scalar's text instead of its resolved type.
        deserializer.deserialize_str(TextVisitor)
    }
}

/// `logfmt:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogfmtSpec {
    /// Field holding the text.
    pub(super) field: String,
    /// Put the pairs under this key instead of merging them into the record.
    pub(super) into: Option<String>,
    /// Remove `field` after at least one pair was found. Default false.
    #[serde(default)]
    pub(super) remove_source: bool,
    /// Between pairs (default a space; any run of it counts as one).
    #[serde(default = "default_pair_separator")]
    pub(super) pair_separator: char,
    /// Between a key and its value (default `=`).
    #[serde(default = "default_value_separator")]
    pub(super) value_separator: char,
    /// Let pairs replace fields the record already has. Default false.
    #[serde(default)]
    pub(super) overwrite: bool,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

fn default_pair_separator() -> char {
    ' '
}

fn default_value_separator() -> char {
    '='
}

/// A timestamp layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum TimestampLayout {
    /// Every layout below, tried in this order.
    Auto,
    /// Python logging's asctime: `2026-11-22 10:30:45,123` (also with `.` or no fraction).
    Python,
    /// RFC 3339 / ISO 8601 with an offset: `2026-11-22T10:30:45.123Z`; without one the
    /// step's timezone applies.
    Rfc3339,
    /// nginx and Apache access logs (common log format): `22/Nov/2026:10:30:45 +0000`.
    Clf,
    /// Apache error log: `Sun Nov 22 10:30:45.123456 2026`.
    ApacheError,
    /// Seconds since the Unix epoch, a number or numeric string, with a fraction or not.
    EpochSeconds,
    /// Milliseconds since the Unix epoch.
    EpochMillis,
}

/// `timestamp:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TimestampSpec {
    /// Field holding the time.
    pub(super) field: String,
    /// Field the RFC 3339 UTC result goes to (default `timestamp`).
    #[serde(default = "default_timestamp_target")]
    pub(super) target: String,
    /// Layouts to try, in order (default `[auto]`).
    #[serde(default = "default_layouts")]
    pub(super) layouts: Vec<TimestampLayout>,
    /// Timezone of times written without one: `UTC` (default), `local`, or `+02:00`.
    pub(super) timezone: Option<String>,
    /// Keep the original text under this field.
    pub(super) keep_original: Option<String>,
    /// What happens when no layout fits (default `error`).
    #[serde(default = "default_on_error")]
    pub(super) on_mismatch: OnMismatch,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

fn default_timestamp_target() -> String {
    "timestamp".to_owned()
}

fn default_layouts() -> Vec<TimestampLayout> {
    vec![TimestampLayout::Auto]
}

fn default_on_error() -> OnMismatch {
    OnMismatch::Error
}

/// A type a `convert:` step converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum FieldType {
    /// A whole number (`"42"`, `42.0`).
    Int,
    /// A number.
    Float,
    /// `true`/`false`, `yes`/`no`, `1`/`0`, `on`/`off`.
    Bool,
    /// Text.
    String,
    /// RFC 3339 UTC, from any timestamp layout.
    Timestamp,
}

/// `convert:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ConvertSpec {
    /// Field name → type.
    pub(super) fields: std::collections::BTreeMap<String, FieldType>,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// `keep:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeepSpec {
    /// Fields kept; `id`, `source_file`, `collected_at` and `processing_error` always are.
    pub(super) fields: Vec<String>,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// `filter:` step: exactly one of `drop` and `keep`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FilterSpec {
    /// Drop the record when this holds.
    pub(super) drop: Option<ConditionSpec>,
    /// Drop the record unless this holds.
    pub(super) keep: Option<ConditionSpec>,
    /// The `reason` label of the drop metric (default `filtered`).
    pub(super) reason: Option<String>,
}

/// `sample:` step: `one_in`, or `field` with `one_in_by_value`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SampleSpec {
    /// Keep one record in this many.
    pub(super) one_in: Option<u64>,
    /// Field whose value picks the rate from `one_in_by_value`.
    pub(super) field: Option<String>,
    /// Value → keep one in this many; other values are all kept.
    #[serde(default)]
    pub(super) one_in_by_value: std::collections::BTreeMap<String, u64>,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// `rate_limit:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitSpec {
    /// Records per second each source file may pass, on average.
    pub(super) records_per_second: f64,
    /// How many may pass at once after a quiet spell (default one second's worth).
    pub(super) burst: Option<f64>,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

/// A built-in redaction pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RedactBuiltin {
    /// `someone@example.com`.
    Email,
    /// `Bearer eyJhbGciOi…` (the token; the word stays).
    BearerToken,
    /// `https://user:password@host` (the credentials).
    BasicAuthUrl,
    /// AWS access key ids (`AKIA…`) and `aws_secret_access_key=…` values.
    AwsKey,
    /// 13–19 digit card numbers that pass the Luhn check.
    CreditCard,
}

/// `redact:` step.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RedactSpec {
    /// Fields to mask in (default: every string field).
    #[serde(default)]
    pub(super) fields: Vec<String>,
    /// Built-in patterns.
    #[serde(default)]
    pub(super) builtins: Vec<RedactBuiltin>,
    /// Regexes of your own; the whole match is masked.
    #[serde(default)]
    pub(super) patterns: Vec<String>,
    /// What a match is replaced with (default `[REDACTED]`).
    #[serde(default = "default_mask")]
    pub(super) mask: String,
    /// Run only when this holds.
    pub(super) when: Option<ConditionSpec>,
}

fn default_mask() -> String {
    "[REDACTED]".to_owned()
}
