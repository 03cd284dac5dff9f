//! The query: which processed records an operator asked for, and how to show them.
//!
//! A [`Filter`] is built once from the parameters (sources, time bounds, minimum level,
//! category, stream, container, pod, namespace, a regex on the message) and then tested
//! against raw journal lines; [`scan`] finds
//! the lines (the last N by reading segments backwards, a time window by seeking to it, or a
//! follow from the committed end), [`index`] keeps per-source counts for `/sources` and
//! `/stats`. Queries read the journal files themselves and never publish a cursor, so a slow
//! or stuck client can neither hold back retention nor slow the pipeline.
//!
//! Easy to get wrong: time bounds compare `collected_at`, which the collector stamps per batch
//! in one fixed format (RFC 3339, UTC, milliseconds), so a bound is turned into that same text
//! once and compared as a string: the journal is in `collected_at` order, which is what lets a
//! tail stop early and a `since` seek skip whole segments. Likewise, the pod metadata sits in a
//! nested `kubernetes` object that a filter on container, pod or namespace needs and no other
//! does: it is kept as raw text and parsed only when such a filter is set.

pub mod index;
pub mod request;
pub mod scan;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use regex::Regex;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::record::{field, string_or_absent, Stream};

/// The hint every bad time parameter carries.
pub const TIME_HINT: &str = "use 30s, 5m, 1h, 7d or RFC 3339";
/// Regexes from query parameters are compiled with this size limit (1 MiB), so a hostile
/// pattern cannot make the server build a huge automaton.
const GREP_SIZE_LIMIT: usize = 1 << 20;

/// A query parameter that is not acceptable; `parameter` names it as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{parameter}: {message}")]
pub struct ParamError {
    /// The parameter (`tail`, `since`, `grep`, …).
    pub parameter: String,
    /// What is wrong with its value.
    pub message: String,
}

impl ParamError {
    /// An error about `parameter`.
    pub fn new(parameter: &str, message: impl Into<String>) -> Self {
        Self {
            parameter: parameter.to_owned(),
            message: message.into(),
        }
    }
}

/// Severity, ordered: a minimum level keeps its own and every more severe one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// TRACE.
    Trace,
    /// DEBUG.
    Debug,
    /// INFO (also the level of records whose level is missing or unknown).
    Info,
    /// WARNING or WARN.
    Warning,
    /// ERROR.
    Error,
    /// CRITICAL or FATAL.
    Critical,
}

impl Level {
    /// Parses a level name in any case; `None` when it is not one.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "TRACE" => Self::Trace,
            "DEBUG" => Self::Debug,
            "INFO" => Self::Info,
            "WARNING" | "WARN" => Self::Warning,
            "ERROR" | "ERR" => Self::Error,
            "CRITICAL" | "FATAL" => Self::Critical,
            _ => return None,
        })
    }

    /// The level of a record's `log_level` field: INFO when missing or unknown, as the
    /// processor's default rules give records without a level.
    pub fn of_record(text: Option<&str>) -> Self {
        text.and_then(Self::parse).unwrap_or(Self::Info)
    }

    /// A level parameter, checked.
    ///
    /// # Errors
    /// When `text` names no level.
    pub fn from_param(parameter: &str, text: &str) -> Result<Self, ParamError> {
        Self::parse(text).ok_or_else(|| {
            ParamError::new(
                parameter,
                format!("unknown level {text:?} (use DEBUG, INFO, WARNING, ERROR or CRITICAL)"),
            )
        })
    }
}

/// Parses a time parameter: a duration back from `now` (`30s`, `5m`, `1h`, `7d`) or an RFC 3339
/// time (`2026-11-22T10:30:00Z`; without an offset it is read as UTC).
///
/// # Errors
/// When `text` is neither, with [`TIME_HINT`] in the message.
pub fn parse_time(parameter: &str, text: &str, now: SystemTime) -> Result<SystemTime, ParamError> {
    let text = text.trim();
    let bad = || {
        ParamError::new(
            parameter,
            format!("cannot read {text:?} as a time ({TIME_HINT})"),
        )
    };
    if text.is_empty() {
        return Err(bad());
    }
    if text.as_bytes()[0].is_ascii_digit() && text.contains('-') {
        if let Ok(t) = humantime::parse_rfc3339_weak(text) {
            return Ok(t);
        }
        if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
            return Ok(SystemTime::from(t));
        }
        return Err(bad());
    }
    let ago: Duration = humantime::parse_duration(text).map_err(|_| bad())?;
    now.checked_sub(ago).ok_or_else(bad)
}

/// A time in the journal's `collected_at` format, for string comparison.
pub fn journal_time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The routing fields of a processed record, borrowed from its line where possible. A field
/// that is not a string (an app may send `"message": {…}`) reads as absent rather than making
/// the whole record unreadable.
#[derive(Debug, Default, Deserialize)]
pub struct RecordView<'a> {
    /// `source_file`.
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub source_file: Option<Cow<'a, str>>,
    /// `collected_at`.
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub collected_at: Option<Cow<'a, str>>,
    /// `log_level`.
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub log_level: Option<Cow<'a, str>>,
    /// `log_category`.
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub log_category: Option<Cow<'a, str>>,
    /// `message`.
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub message: Option<Cow<'a, str>>,
    /// `line` (kept when the processor could not parse it).
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub line: Option<Cow<'a, str>>,
    /// `stream` (a container's stdout or stderr).
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub stream: Option<Cow<'a, str>>,
    /// `kubernetes`, the pod metadata the processor adds, as written: skipping a nested object
    /// costs the parser the same whether it is kept or not, and only a filter on container,
    /// pod or namespace pays for reading its members ([`RecordView::kubernetes`]).
    #[serde(borrow, default)]
    pub kubernetes: Option<&'a RawValue>,
}

/// The members of a record's `kubernetes` object a query selects by. A member that is missing
/// or not a string reads as absent, as the top-level fields do.
#[derive(Debug, Default, Deserialize)]
pub struct KubernetesView<'a> {
    /// `kubernetes.namespace`.
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub namespace: Option<Cow<'a, str>>,
    /// `kubernetes.pod_name`.
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub pod_name: Option<Cow<'a, str>>,
    /// `kubernetes.container_name` (only in node mode: a sidecar pod's records come from
    /// files, not from one container).
    #[serde(borrow, default, deserialize_with = "string_or_absent")]
    pub container_name: Option<Cow<'a, str>>,
}

impl<'a> RecordView<'a> {
    /// Decodes the routing fields of one NDJSON line; a line that is not a JSON object gives
    /// an empty view (no source, INFO), so it is still shown rather than hidden.
    pub fn decode(raw: &'a [u8]) -> Self {
        serde_json::from_slice(raw).unwrap_or_default()
    }

    /// The record's level.
    pub fn level(&self) -> Level {
        Level::of_record(self.log_level.as_deref())
    }

    /// Parses the record's `kubernetes` object; empty when there is none or it is not an
    /// object.
    pub fn kubernetes(&self) -> KubernetesView<'a> {
        self.kubernetes
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }
}

/// Which Kubernetes name a `container`, `pod` or `namespace` parameter holds, for its check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KubernetesName {
    /// A container name: a DNS label.
    Container,
    /// A pod name: a DNS subdomain.
    Pod,
    /// A namespace: a DNS label.
    Namespace,
}

impl KubernetesName {
    fn noun(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Pod => "pod",
            Self::Namespace => "namespace",
        }
    }

    /// Whether `name` is one Kubernetes accepts for this kind of object: containers and
    /// namespaces are RFC 1123 labels (at most 63 characters), pods RFC 1123 subdomains (at
    /// most 253), per https://kubernetes.io/docs/concepts/overview/working-with-objects/names/.
    fn is_valid(self, name: &str) -> bool {
        fn is_label(label: &str) -> bool {
            let bytes = label.as_bytes();
            (1..=63).contains(&bytes.len())
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
                && bytes[0] != b'-'
                && bytes[bytes.len() - 1] != b'-'
        }
        match self {
            Self::Container | Self::Namespace => is_label(name),
            Self::Pod => name.len() <= 253 && name.split('.').all(is_label),
        }
    }

    fn rule(self) -> &'static str {
        match self {
            Self::Container | Self::Namespace => {
                "lowercase letters, digits and '-', at most 63 characters"
            }
            Self::Pod => "lowercase letters, digits, '-' and '.', at most 253 characters",
        }
    }
}

/// Which records a query wants. Build it with [`Filter::default`] and set the fields.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Source file names; empty: every source.
    pub sources: Vec<String>,
    /// Records collected at or after this time (journal format, see [`journal_time`]).
    pub since: Option<String>,
    /// Records collected at or before this time (journal format).
    pub until: Option<String>,
    /// Records at this level or more severe.
    pub min_level: Option<Level>,
    /// Records of this category (`log_category`).
    pub category: Option<String>,
    /// Records whose message (else raw line, else whole record) matches.
    pub grep: Option<Regex>,
    /// Records a container wrote to this stream.
    pub stream: Option<Stream>,
    /// Records of these containers (`kubernetes.container_name`); empty: any, also none.
    pub containers: Vec<String>,
    /// Records of these pods (`kubernetes.pod_name`); empty: any, also none.
    pub pods: Vec<String>,
    /// Records of these namespaces (`kubernetes.namespace`); empty: any, also none.
    pub namespaces: Vec<String>,
}

impl Filter {
    /// Compiles a `grep` parameter.
    ///
    /// # Errors
    /// When the pattern is not a valid regex or too large.
    pub fn compile_grep(parameter: &str, pattern: &str) -> Result<Regex, ParamError> {
        regex::RegexBuilder::new(pattern)
            .size_limit(GREP_SIZE_LIMIT)
            .build()
            .map_err(|e| {
                let detail = e.to_string();
                let last = detail.lines().last().unwrap_or("invalid").trim();
                let last = last.strip_prefix("error: ").unwrap_or(last);
                ParamError::new(parameter, format!("invalid regex {pattern:?}: {last}"))
            })
    }

    /// Whether the raw record line passes every condition.
    pub fn matches(&self, raw: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        let view = RecordView::decode(raw);
        self.matches_view(&view, raw)
    }

    /// As [`Filter::matches`] on an already decoded view of `raw`.
    pub fn matches_view(&self, view: &RecordView<'_>, raw: &[u8]) -> bool {
        if !self.sources.is_empty() {
            let source = view.source_file.as_deref().unwrap_or("");
            if !self.sources.iter().any(|s| s == source) {
                return false;
            }
        }
        if let Some(since) = &self.since {
            if view.collected_at.as_deref().unwrap_or("") < since.as_str() {
                return false;
            }
        }
        if let Some(until) = &self.until {
            if view.collected_at.as_deref().unwrap_or("") > until.as_str() {
                return false;
            }
        }
        if let Some(min) = self.min_level {
            if view.level() < min {
                return false;
            }
        }
        if let Some(category) = &self.category {
            if view.log_category.as_deref() != Some(category.as_str()) {
                return false;
            }
        }
        if let Some(stream) = self.stream {
            if view.stream.as_deref() != Some(stream.as_str()) {
                return false;
            }
        }
        if self.selects_kubernetes() {
            let kubernetes = view.kubernetes();
            if !is_one_of(&self.containers, kubernetes.container_name.as_deref())
                || !is_one_of(&self.pods, kubernetes.pod_name.as_deref())
                || !is_one_of(&self.namespaces, kubernetes.namespace.as_deref())
            {
                return false;
            }
        }
        if let Some(grep) = &self.grep {
            let text = match (&view.message, &view.line) {
                (Some(m), _) => Cow::Borrowed(m.as_ref()),
                (None, Some(l)) => Cow::Borrowed(l.as_ref()),
                (None, None) => String::from_utf8_lossy(raw),
            };
            if !grep.is_match(&text) {
                return false;
            }
        }
        true
    }

    fn is_empty(&self) -> bool {
        self.sources.is_empty()
            && self.since.is_none()
            && self.until.is_none()
            && self.min_level.is_none()
            && self.category.is_none()
            && self.grep.is_none()
            && self.stream.is_none()
            && !self.selects_kubernetes()
    }

    fn selects_kubernetes(&self) -> bool {
        !(self.containers.is_empty() && self.pods.is_empty() && self.namespaces.is_empty())
    }

    /// Parses a `container`, `pod` or `namespace` parameter: one name or several,
    /// comma-separated, each checked against the Kubernetes rules for that kind of name, so a
    /// typo (`Web`, `web,`) is refused instead of silently matching nothing.
    ///
    /// # Errors
    /// When a name is empty or not one Kubernetes would accept.
    pub fn parse_names(
        parameter: &str,
        kind: KubernetesName,
        text: &str,
    ) -> Result<Vec<String>, ParamError> {
        let noun = kind.noun();
        text.split(',')
            .map(str::trim)
            .map(|name| {
                if name.is_empty() {
                    Err(ParamError::new(
                        parameter,
                        format!("empty {noun} name in {text:?}"),
                    ))
                } else if !kind.is_valid(name) {
                    Err(ParamError::new(
                        parameter,
                        format!("{name:?} is not a Kubernetes {noun} name ({})", kind.rule()),
                    ))
                } else {
                    Ok(name.to_owned())
                }
            })
            .collect()
    }

    /// Parses a `stream` parameter.
    ///
    /// # Errors
    /// When it is neither `stdout` nor `stderr`.
    pub fn parse_stream(parameter: &str, text: &str) -> Result<Stream, ParamError> {
        Stream::from_name(text.trim().as_bytes()).ok_or_else(|| {
            ParamError::new(
                parameter,
                format!("unknown stream {text:?} (use stdout or stderr)"),
            )
        })
    }
}

/// How matching records are written out.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Human lines instead of NDJSON.
    pub text: bool,
    /// In text mode, start each line with the record's time: the container runtime's
    /// (`logged_at`) on a container's line, else `collected_at`.
    pub timestamps: bool,
    /// Keep only these fields (NDJSON) or show only these (text); empty: all.
    pub fields: Vec<String>,
}

/// Fields the text form shows in its fixed columns, not again as `key=value`.
const TEXT_COLUMNS: [&str; 10] = [
    field::ID,
    field::SOURCE_FILE,
    field::COLLECTED_AT,
    field::PROCESSED_AT,
    field::LOG_LEVEL,
    field::LOG_CATEGORY,
    field::MESSAGE,
    field::TIMESTAMP,
    field::STREAM,
    field::LOGGED_AT,
];

impl Output {
    /// Parses a `fields` parameter: comma-separated names.
    ///
    /// # Errors
    /// When a name is empty.
    pub fn parse_fields(parameter: &str, text: &str) -> Result<Vec<String>, ParamError> {
        let fields: Vec<String> = text.split(',').map(|f| f.trim().to_owned()).collect();
        if fields.iter().any(String::is_empty) {
            return Err(ParamError::new(
                parameter,
                format!("empty field name in {text:?} (use e.g. fields=collected_at,message)"),
            ));
        }
        Ok(fields)
    }

    /// Appends one record (a raw journal line without its newline) to `out`, newline-ended.
    pub fn write(&self, raw: &[u8], out: &mut Vec<u8>) {
        if !self.text && self.fields.is_empty() {
            out.extend_from_slice(raw);
            out.push(b'\n');
            return;
        }
        let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(raw) else {
            // Not a JSON object: shown as it is in either form.
            out.extend_from_slice(raw);
            out.push(b'\n');
            return;
        };
        let record = if self.fields.is_empty() {
            record
        } else {
            self.project(record)
        };
        if self.text {
            out.extend_from_slice(self.text_line(&record).as_bytes());
        } else {
            serde_json::to_writer(&mut *out, &record).expect("a JSON map serialises");
        }
        out.push(b'\n');
    }

    fn project(&self, mut record: Map<String, Value>) -> Map<String, Value> {
        let mut picked = Map::new();
        for name in &self.fields {
            if let Some(value) = record.remove(name) {
                picked.insert(name.clone(), value);
            }
        }
        picked
    }

    /// `[collected_at ]source LEVEL message key=value…`, like a terminal log line.
    fn text_line(&self, record: &Map<String, Value>) -> String {
        let str_of = |k: &str| record.get(k).and_then(Value::as_str);
        let mut line = String::new();
        if self.timestamps {
            if let Some(t) = str_of(field::LOGGED_AT).or_else(|| str_of(field::COLLECTED_AT)) {
                line.push_str(t);
                line.push(' ');
            }
        }
        if self.fields.is_empty() {
            let level = Level::of_record(str_of(field::LOG_LEVEL));
            let level_name = str_of(field::LOG_LEVEL).unwrap_or("INFO");
            let _ = write!(
                line,
                "{} {:<7} ",
                str_of(field::SOURCE_FILE).unwrap_or("-"),
                if Level::parse(level_name).is_some() {
                    level_name
                } else {
                    level_label(level)
                }
            );
        }
        // The same summary the report shows, first; the other fields follow as key=value.
        let summary = self
            .fields
            .is_empty()
            .then(|| crate::record::summary::summarize(record))
            .flatten();
        if let Some(summary) = &summary {
            line.push_str(&summary.text);
        }
        let shown = summary.as_ref().map_or(&[][..], |s| &s.shown[..]);
        for (key, value) in record {
            if self.fields.is_empty()
                && (TEXT_COLUMNS.contains(&key.as_str()) || shown.contains(&key.as_str()))
            {
                continue;
            }
            if !line.is_empty() && !line.ends_with(' ') {
                line.push(' ');
            }
            match value {
                Value::String(s) if !s.contains(char::is_whitespace) && !s.is_empty() => {
                    let _ = write!(line, "{key}={s}");
                }
                other => {
                    let _ = write!(line, "{key}={other}");
                }
            }
        }
        line.truncate(line.trim_end().len());
        line
    }
}

/// Whether `value` is one of `names`; no names: anything (also no value) is.
fn is_one_of(names: &[String], value: Option<&str>) -> bool {
    names.is_empty() || value.is_some_and(|v| names.iter().any(|n| n == v))
}

/// The names a "known: …" part of an error lists, or `none yet`.
pub fn known_list(names: &[String]) -> String {
    if names.is_empty() {
        "none yet".to_owned()
    } else {
        names.join(", ")
    }
}

/// The canonical name of a level.
pub fn level_label(level: Level) -> &'static str {
    match level {
        Level::Trace => "TRACE",
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Warning => "WARNING",
        Level::Error => "ERROR",
        Level::Critical => "CRITICAL",
    }
}

/// A `tail` parameter: a non-negative whole number.
///
/// # Errors
/// When `text` is negative or not a number.
pub fn parse_count(parameter: &str, text: &str) -> Result<usize, ParamError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(ParamError::new(
            parameter,
            format!("must not be negative, got {text}"),
        ));
    }
    text.parse()
        .map_err(|_| ParamError::new(parameter, format!("must be a whole number, got {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(source: &str, at: &str, level: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "id": "1-0", "source_file": source, "collected_at": at, "log_level": level,
            "log_category": "access", "message": message, "status_code": 503,
        }))
        .unwrap()
    }

    #[test]
    fn a_field_that_is_not_a_string_does_not_hide_the_record() {
        let raw = br#"{"source_file":"billing","message":{"code":7,"list":[1,"x"]},"log_level":null,"collected_at":"t\u00e9"}"#;
        let view = RecordView::decode(raw);
        assert_eq!(view.source_file.as_deref(), Some("billing"));
        assert_eq!(view.message, None);
        assert_eq!(view.level(), Level::Info);
        assert_eq!(view.collected_at.as_deref(), Some("t\u{e9}"));
    }

    #[test]
    fn levels_order_and_parse_leniently() {
        assert!(Level::Warning > Level::Info);
        assert_eq!(Level::parse("warn"), Some(Level::Warning));
        assert_eq!(Level::of_record(Some("weird")), Level::Info);
        assert!(Level::from_param("level", "loud").is_err());
    }

    #[test]
    fn times_are_relative_durations_or_rfc3339() {
        let now = humantime::parse_rfc3339("2026-11-22T10:00:00Z").unwrap();
        let t = parse_time("since", "5m", now).unwrap();
        assert_eq!(journal_time(t), "2026-11-22T09:55:00.000Z");
        let t = parse_time("since", "7d", now).unwrap();
        assert_eq!(journal_time(t), "2026-11-15T10:00:00.000Z");
        let t = parse_time("since", "2026-11-22T10:30:00+02:00", now).unwrap();
        assert_eq!(journal_time(t), "2026-11-22T08:30:00.000Z");
        let t = parse_time("since", "2026-11-22T10:30:00", now).unwrap();
        assert_eq!(journal_time(t), "2026-11-22T10:30:00.000Z");
        let e = parse_time("since", "yesterday", now).unwrap_err();
        assert_eq!(e.parameter, "since");
        assert!(e.message.contains(TIME_HINT), "{e}");
    }

    #[test]
    fn counts_reject_negatives_and_words() {
        assert_eq!(parse_count("tail", "20").unwrap(), 20);
        assert!(parse_count("tail", "-1")
            .unwrap_err()
            .message
            .contains("negative"));
        assert!(parse_count("tail", "ten").is_err());
    }

    #[test]
    fn a_filter_checks_every_condition() {
        let line = rec(
            "access.log",
            "2026-11-22T10:00:00.000Z",
            "WARNING",
            "GET /x -> 404",
        );
        let mut f = Filter::default();
        assert!(f.matches(&line));
        f.sources = vec!["access.log".into()];
        f.min_level = Some(Level::Warning);
        f.category = Some("access".into());
        f.grep = Some(Filter::compile_grep("grep", "-> 4[0-9]{2}").unwrap());
        f.since = Some("2026-11-22T09:00:00.000Z".into());
        f.until = Some("2026-11-22T10:00:00.000Z".into());
        assert!(f.matches(&line));
        for change in [
            |f: &mut Filter| f.sources = vec!["error.log".into()],
            |f: &mut Filter| f.min_level = Some(Level::Error),
            |f: &mut Filter| f.category = Some("job".into()),
            |f: &mut Filter| f.grep = Some(Regex::new("-> 5").unwrap()),
            |f: &mut Filter| f.since = Some("2026-11-22T10:00:00.001Z".into()),
            |f: &mut Filter| f.until = Some("2026-11-22T09:59:59.999Z".into()),
        ] {
            let mut g = f.clone();
            change(&mut g);
            assert!(!g.matches(&line), "{g:?}");
        }
        assert!(Filter::compile_grep("grep", "(unclosed")
            .unwrap_err()
            .to_string()
            .starts_with("grep: invalid regex"));
    }

    fn container_line(container: &str, pod: &str, stream: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "source_file": "0.log", "stream": stream, "message": message,
            "kubernetes": {
                "namespace": "shop", "pod_name": pod, "pod_uid": "0c6f-11", "container_name": container,
                "node_name": "node-1", "labels": {"app": "shop"},
            },
        }))
        .unwrap()
    }

    #[test]
    fn containers_pods_and_namespaces_select_by_the_kubernetes_object() {
        let web_err = container_line("web", "shop-7d9f", "stderr", "boom");
        let web_out = container_line("web", "shop-7d9f", "stdout", "fine");
        let db_err = container_line("db", "shop-db-0", "stderr", "slow query");
        let file_line = rec("access.log", "2026-11-22T10:00:00.000Z", "INFO", "GET /");
        let sidecar_pod = br#"{"source_file":"access.log","kubernetes":{"namespace":"shop","pod_name":"shop-7d9f"}}"#;

        let web = Filter {
            containers: vec!["web".into()],
            ..Filter::default()
        };
        assert!(web.matches(&web_err) && web.matches(&web_out));
        assert!(!web.matches(&db_err));
        // No kubernetes object, or one without container_name: a set filter leaves it out.
        assert!(!web.matches(&file_line) && !web.matches(sidecar_pod));

        let either = Filter {
            containers: vec!["db".into(), "web".into()],
            ..Filter::default()
        };
        assert!(either.matches(&web_err) && either.matches(&db_err));
        assert!(!either.matches(&file_line));

        let web_stderr = Filter {
            stream: Some(Stream::Stderr),
            ..web.clone()
        };
        assert!(web_stderr.matches(&web_err));
        assert!(!web_stderr.matches(&web_out) && !web_stderr.matches(&db_err));

        let pod = Filter {
            pods: vec!["shop-7d9f".into()],
            namespaces: vec!["shop".into()],
            ..Filter::default()
        };
        assert!(pod.matches(&web_err) && pod.matches(sidecar_pod));
        assert!(!pod.matches(&db_err) && !pod.matches(&file_line));
        let elsewhere = Filter {
            namespaces: vec!["kube-system".into()],
            ..Filter::default()
        };
        assert!(!elsewhere.matches(&web_err));

        // A kubernetes member that is not an object, or a name that is not a string, reads as
        // absent and hides nothing from a query without these filters.
        for odd in [
            &br#"{"source_file":"a.log","kubernetes":"old"}"#[..],
            br#"{"source_file":"a.log","kubernetes":{"container_name":7}}"#,
            br#"{"source_file":"a.log","kubernetes":null}"#,
        ] {
            assert!(!web.matches(odd), "{}", String::from_utf8_lossy(odd));
            assert!(Filter::default().matches(odd));
            assert_eq!(
                RecordView::decode(odd).source_file.as_deref(),
                Some("a.log")
            );
        }
        let escaped = br#"{"kubernetes":{"container_name":"w\u0065b"}}"#;
        assert!(web.matches(escaped));
    }

    #[test]
    fn kubernetes_names_are_checked_and_split_on_commas() {
        assert_eq!(
            Filter::parse_names("container", KubernetesName::Container, "web, db").unwrap(),
            ["web", "db"]
        );
        assert_eq!(
            Filter::parse_names("pod", KubernetesName::Pod, "shop-7d9f.x").unwrap(),
            ["shop-7d9f.x"]
        );
        for (kind, bad) in [
            (KubernetesName::Container, "Web"),
            (KubernetesName::Container, "web,"),
            (KubernetesName::Container, ""),
            (KubernetesName::Container, "-web"),
            (KubernetesName::Container, "a.b"),
            (KubernetesName::Namespace, "kube_system"),
            (KubernetesName::Pod, "shop..x"),
        ] {
            let e = Filter::parse_names("p", kind, bad).unwrap_err();
            assert_eq!(e.parameter, "p");
            assert!(e.message.contains(kind.noun()), "{e}");
        }
        assert!(
            Filter::parse_names("container", KubernetesName::Container, &"a".repeat(64)).is_err()
        );
    }

    #[test]
    fn an_access_record_reads_as_the_report_shows_it() {
        let line = br#"{"collected_at":"t","endpoint":"/users","id":"x-1","log_level":"INFO","method":"GET","path":"/users","processing_time_ms":2.19,"request_id":"req-1","source_file":"access.log","status_code":200}"#;
        let mut out = Vec::new();
        Output {
            text: true,
            ..Output::default()
        }
        .write(line, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "access.log INFO    GET /users -> 200 2.19ms endpoint=/users request_id=req-1\n"
        );
    }

    #[test]
    fn output_projects_fields_and_writes_text_lines() {
        let line = rec("access.log", "2026-11-22T10:00:00.000Z", "ERROR", "boom");
        let mut out = Vec::new();
        Output {
            fields: vec!["message".into(), "status_code".into()],
            ..Output::default()
        }
        .write(&line, &mut out);
        assert_eq!(out, b"{\"message\":\"boom\",\"status_code\":503}\n");
        out.clear();
        Output {
            text: true,
            timestamps: true,
            ..Output::default()
        }
        .write(&line, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-11-22T10:00:00.000Z access.log ERROR   boom status_code=503\n"
        );
    }
}
