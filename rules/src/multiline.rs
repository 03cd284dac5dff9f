//! Multiline: joining continuation lines (a stack trace) into the record of the line before.
//!
//! A [`Joiner`] holds, per source, the one record still waiting for more lines. The easy
//! thing to get wrong is the commit: a waiting record is not output yet, so whoever commits
//! input positions must not commit past its first line. [`Joiner::pending`] says where each
//! waiting record started, and the merged record keeps its first line's id.
//!
//! The first line stays alone in `line` and the continuation lines go to a field of their own
//! (`stack_trace` unless `into:` says otherwise): the steps that parse a line's prefix then
//! see the first line exactly as they see any other, instead of a text their `$` cannot match.

use sidecar_record::Fields;
use std::time::{Duration, Instant};

use regex::Regex;
use serde_json::Value;

use super::spec::{MultilinePreset, MultilineSpec};
use super::{RuleSet, ID_FIELD, LINE_FIELD, SOURCE_FILE_FIELD};

/// A record id's source key and offset: `8f3c2a19d4e5b601-10472` → (`8f3c2a19d4e5b601`,
/// 10472). The key names the file generation, so a rotated file's lines never join the new
/// file's.
pub fn split_id(id: &str) -> Option<(&str, u64)> {
    let (key, offset) = id.rsplit_once('-')?;
    Some((key, offset.parse().ok()?))
}

/// Continuation lines of a Python traceback: indented frames and code, the `Traceback` header,
/// chained-exception notes, blank lines, and the final `SomeError: message`.
const PYTHON: &str = r"^(?:[ \t]|$|Traceback \(most recent call last\):|During handling of the above exception|The above exception was the direct cause|[A-Za-z_][A-Za-z0-9_.]*(?:Error|Exception|Exit|Interrupt|Warning|Iteration)(?::|$))";
/// Continuation lines of a Java stack trace: indented `at …` frames, `... N more`,
/// `Caused by:` and `Suppressed:`.
const JAVA: &str = r"^(?:[ \t]|Caused by:|Suppressed:|\.\.\. \d+ )";
/// Continuation lines of a Go panic: blank lines, `goroutine N [state]:`, function lines
/// `pkg.fn(...)`, indented file lines, `created by`, `exit status N`, `[signal …`.
const GO: &str = r"^(?:[ \t]|$|goroutine \d+ \[|created by |[A-Za-z0-9_./\-*()]+\(.*\)$|exit status \d+|\[signal )";

/// How a rule decides whether a line continues the record before it.
#[derive(Debug)]
enum Kind {
    /// Lines matching start a record; all others continue.
    Start(Regex),
    /// Lines matching continue; all others start a record.
    Continuation(Regex),
}

/// A compiled `multiline:` setting.
#[derive(Debug)]
pub(crate) struct Multiline {
    kind: Kind,
    flush_after: Duration,
    max_lines: usize,
    max_bytes: usize,
    /// Where continuation lines go; `None`: appended to `line`.
    into: Option<String>,
    /// How `explain` describes it.
    description: String,
}

impl Multiline {
    /// Compiles `spec`; `build` is the size-limited regex builder naming the field. `Err` with
    /// (field, reason) for a spec that names no way, or several ways, to find continuations.
    pub(super) fn compile<E>(
        spec: MultilineSpec,
        build: &mut dyn FnMut(&str, &str) -> Result<Regex, E>,
        invalid: &mut dyn FnMut(&str, &str) -> E,
    ) -> Result<Multiline, E> {
        let given = [
            spec.preset.is_some(),
            spec.start.is_some(),
            spec.continuation.is_some(),
            spec.indented,
        ]
        .iter()
        .filter(|&&b| b)
        .count();
        if given != 1 {
            return Err(invalid(
                "multiline",
                "give exactly one of preset, start, continuation, indented: true",
            ));
        }
        if spec.max_lines < 2 {
            return Err(invalid("multiline.max_lines", "must be at least 2"));
        }
        if spec.max_bytes == 0 {
            return Err(invalid("multiline.max_bytes", "must be at least 1"));
        }
        if spec.into.is_empty() || spec.into == ID_FIELD || spec.into == SOURCE_FILE_FIELD {
            return Err(invalid(
                "multiline.into",
                "must name a field other than id and source_file",
            ));
        }
        let into = (spec.into != LINE_FIELD).then_some(spec.into);
        let (kind, description) = if let Some(preset) = spec.preset {
            let (pattern, name) = match preset {
                MultilinePreset::Python => (PYTHON, "python"),
                MultilinePreset::Java => (JAVA, "java"),
                MultilinePreset::Go => (GO, "go"),
            };
            (
                Kind::Continuation(build(pattern, "multiline.preset")?),
                format!("preset {name}"),
            )
        } else if let Some(start) = spec.start {
            let regex = build(&start, "multiline.start")?;
            (Kind::Start(regex), format!("start {start:?}"))
        } else if let Some(continuation) = spec.continuation {
            let regex = build(&continuation, "multiline.continuation")?;
            (
                Kind::Continuation(regex),
                format!("continuation {continuation:?}"),
            )
        } else {
            (
                Kind::Continuation(build(r"^[ \t]", "multiline.indented")?),
                "indented lines".to_owned(),
            )
        };
        let description = match &into {
            Some(field) => format!("{description}, continuation lines into `{field}`"),
            None => format!("{description}, continuation lines appended to `line`"),
        };
        Ok(Multiline {
            kind,
            flush_after: Duration::from_millis(spec.flush_after_ms),
            max_lines: spec.max_lines,
            max_bytes: spec.max_bytes,
            into,
            description,
        })
    }

    /// Whether `line` continues the record before it.
    fn continues(&self, line: &str) -> bool {
        match &self.kind {
            Kind::Start(regex) => !regex.is_match(line),
            Kind::Continuation(regex) => regex.is_match(line),
        }
    }

    /// How `explain` describes the setting.
    pub(crate) fn description(&self) -> &str {
        &self.description
    }
}

/// A record waiting for continuation lines.
#[derive(Debug)]
struct Group<M> {
    /// The group's key (the source file generation).
    key: String,
    /// The first line's record, its `line` growing.
    record: Fields,
    /// The first line's offset in its source.
    first_offset: u64,
    /// The caller's mark of the first line (its input position).
    mark: M,
    lines: usize,
    bytes: usize,
    /// When it is let go without another line.
    deadline: Instant,
}

/// Where a waiting record started: for the caller's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingStart<'a, M> {
    /// The group key given to [`Joiner::push`].
    pub key: &'a str,
    /// The first line's offset in its source.
    pub offset: u64,
    /// The mark given with the first line.
    pub mark: &'a M,
}

/// Joins continuation lines per source. `M` is what the caller needs to know about a line's
/// place in its input (the processor: its journal position).
#[derive(Debug)]
pub struct Joiner<M> {
    /// Few sources write at once, so a list beats a map and keeps output order stable.
    groups: Vec<Group<M>>,
}

impl<M> Default for Joiner<M> {
    fn default() -> Self {
        Self { groups: Vec::new() }
    }
}

impl<M> Joiner<M> {
    /// An empty joiner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next record (with `id` and `source_file`, as the processor builds it).
    /// Records whose rules have no `multiline`, or whose id is not `<key>-<offset>`, pass
    /// through to `emit` at once; others join their file's waiting record or start one,
    /// emitting the record they end.
    pub fn push(
        &mut self,
        rules: &RuleSet,
        mut record: Fields,
        mark: M,
        now: Instant,
        emit: &mut dyn FnMut(Fields),
    ) {
        let id = match record.get(ID_FIELD) {
            Some(Value::String(id)) => split_id(id),
            _ => None,
        };
        let multiline = match record.get(SOURCE_FILE_FIELD) {
            // A pushed record is whole (one JSON object) and has no file whose rules could
            // ask for joining.
            Some(Value::String(source)) if !super::is_pushed(&record) => {
                rules.multiline_for(source)
            }
            _ => None,
        };
        let (Some((key, offset)), Some(multiline)) = (id, multiline) else {
            let open = id.and_then(|(key, _)| self.groups.iter().position(|g| g.key == key));
            if let Some(index) = open {
                emit(self.groups.remove(index).record);
            }
            emit(record);
            return;
        };
        let open = self.groups.iter().position(|group| group.key == key);
        let line = match record.get(LINE_FIELD) {
            Some(Value::String(line)) => line.as_str(),
            _ => "",
        };
        // The ended group's key is reused: a file whose every line starts a record (most lines
        // of most logs) then costs no allocation here.
        let mut spare_key = None;
        if let Some(index) = open {
            let group = &mut self.groups[index];
            let fits = group.lines < multiline.max_lines
                && group.bytes + 1 + line.len() <= multiline.max_bytes;
            if fits && multiline.continues(line) {
                group.lines += 1;
                group.bytes += 1 + line.len();
                group.deadline = now + multiline.flush_after;
                match &multiline.into {
                    None => {
                        if let Some(Value::String(text)) = group.record.get_mut(LINE_FIELD) {
                            text.push('\n');
                            text.push_str(line);
                        }
                    }
                    Some(field) => {
                        let line = match record.remove(LINE_FIELD) {
                            Some(Value::String(line)) => line,
                            _ => String::new(),
                        };
                        match group.record.get_mut(field.as_str()) {
                            // From the second continuation on; whatever the first line's
                            // record held under that name gives way to the first one.
                            Some(Value::String(text)) if group.lines > 2 => {
                                text.push('\n');
                                text.push_str(&line);
                            }
                            _ => {
                                group.record.insert(field.as_str(), Value::String(line));
                            }
                        }
                    }
                }
                return;
            }
            let ended = self.groups.remove(index);
            spare_key = Some(ended.key);
            emit(ended.record);
        }
        let bytes = line.len();
        let key = spare_key.unwrap_or_else(|| key.to_owned());
        self.groups.push(Group {
            key,
            record,
            first_offset: offset,
            mark,
            lines: 1,
            bytes,
            deadline: now + multiline.flush_after,
        });
    }

    /// Emits every waiting record whose flush timeout passed.
    pub fn flush_idle(&mut self, now: Instant, emit: &mut dyn FnMut(Fields)) {
        let mut index = 0;
        while index < self.groups.len() {
            if self.groups[index].deadline <= now {
                emit(self.groups.remove(index).record);
            } else {
                index += 1;
            }
        }
    }

    /// Emits every waiting record (at shutdown, or at the end of a test case).
    pub fn flush_all(&mut self, emit: &mut dyn FnMut(Fields)) {
        for group in self.groups.drain(..) {
            emit(group.record);
        }
    }

    /// When the next waiting record times out, if any waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.groups.iter().map(|group| group.deadline).min()
    }

    /// Whether no record waits.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// Where each waiting record started.
    pub fn pending(&self) -> impl Iterator<Item = PendingStart<'_, M>> {
        self.groups.iter().map(|group| PendingStart {
            key: &group.key,
            offset: group.first_offset,
            mark: &group.mark,
        })
    }
}
