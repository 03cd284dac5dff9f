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
    /// Any JSON value.
    pub(super) value: Value,
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
