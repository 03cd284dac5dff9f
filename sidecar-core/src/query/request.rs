//! A logs request as the API and the CLI take it: parameters by name (`source`, `tail`,
//! `since`, …), checked once into a [`LogsRequest`], then run against a journal directory.
//!
//! Easy to get wrong: the two front ends must agree. The CLI turns its flags into the same
//! named parameters the HTTP API reads, so both accept and refuse exactly the same things, with
//! the same messages.

use std::path::Path;
use std::time::SystemTime;

use super::scan::{self, seek_since, Follower};
use super::{
    parse_count, parse_time, Filter, KubernetesName, Level, Output, ParamError, RecordView,
};
use crate::journal::records as lines;
use crate::journal::{JournalError, Position};

/// Every parameter `GET /logs` knows: `source`, `container`, `pod` and `namespace` take
/// several names (repeated, or comma-separated) and keep records of any of them; `stream` is
/// `stdout` or `stderr`; `container`, `pod` and `namespace` compare the processor's
/// `kubernetes.container_name`, `.pod_name` and `.namespace`, so a record without that member
/// is left out once the parameter is given.
pub const PARAMETERS: [&str; 15] = [
    "source",
    "stream",
    "container",
    "pod",
    "namespace",
    "tail",
    "since",
    "until",
    "follow",
    "grep",
    "level",
    "category",
    "fields",
    "timestamps",
    "format",
];

/// A checked logs request.
#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    /// Which records.
    pub filter: Filter,
    /// How they are written.
    pub output: Output,
    /// Only the last N matching records (then the follow, if any).
    pub tail: Option<usize>,
    /// Keep streaming records as they are committed.
    pub follow: bool,
}

impl LogsRequest {
    /// Checks named parameters (repeated `source`s add up; `source=a,b` also works; the same
    /// for `container`, `pod` and `namespace`).
    ///
    /// # Errors
    /// The first parameter that is unknown or whose value is not acceptable.
    pub fn from_params(params: &[(String, String)], now: SystemTime) -> Result<Self, ParamError> {
        let mut request = Self::default();
        for (name, value) in params {
            match name.as_str() {
                "source" => request.filter.sources.extend(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                ),
                "tail" => request.tail = Some(parse_count(name, value)?),
                "since" => {
                    request.filter.since = Some(super::journal_time(parse_time(name, value, now)?))
                }
                "until" => {
                    request.filter.until = Some(super::journal_time(parse_time(name, value, now)?))
                }
                "follow" => request.follow = parse_bool(name, value)?,
                "timestamps" => request.output.timestamps = parse_bool(name, value)?,
                "grep" => request.filter.grep = Some(Filter::compile_grep(name, value)?),
                "level" => request.filter.min_level = Some(Level::from_param(name, value)?),
                "category" => request.filter.category = Some(value.clone()),
                "stream" => request.filter.stream = Some(Filter::parse_stream(name, value)?),
                "container" => request.filter.containers.extend(Filter::parse_names(
                    name,
                    KubernetesName::Container,
                    value,
                )?),
                "pod" => request.filter.pods.extend(Filter::parse_names(
                    name,
                    KubernetesName::Pod,
                    value,
                )?),
                "namespace" => request.filter.namespaces.extend(Filter::parse_names(
                    name,
                    KubernetesName::Namespace,
                    value,
                )?),
                "fields" => request.output.fields = Output::parse_fields(name, value)?,
                "format" => {
                    request.output.text = match value.as_str() {
                        "text" => true,
                        "json" | "ndjson" => false,
                        other => {
                            return Err(ParamError::new(
                                name,
                                format!("unknown format {other:?} (use json or text)"),
                            ))
                        }
                    }
                }
                other => {
                    return Err(ParamError::new(
                        other,
                        format!("unknown parameter (known: {})", PARAMETERS.join(", ")),
                    ))
                }
            }
        }
        if let (Some(since), Some(until)) = (&request.filter.since, &request.filter.until) {
            if until < since {
                return Err(ParamError::new(
                    "until",
                    format!("{until} is before since ({since})"),
                ));
            }
        }
        Ok(request)
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ParamError> {
    match value {
        "" | "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        other => Err(ParamError::new(
            name,
            format!("must be true or false, got {other:?}"),
        )),
    }
}

/// How a finished (non-follow part of a) query ended.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryEnd {
    /// The committed end when the query ran: a follow continues from here.
    pub end: Position,
    /// Records written.
    pub records: u64,
    /// Whether records were left out because the output reached its size limit.
    pub truncated: bool,
    /// Bytes read from segment files.
    pub bytes_read: u64,
}

/// Knobs of running a query.
#[derive(Debug, Clone, Copy)]
pub struct QueryLimits {
    /// Read step when reading backwards (see [`scan::DEFAULT_CHUNK_BYTES`]).
    pub chunk_bytes: usize,
    /// The formatted output stops before this many bytes (the newest records are kept for a
    /// tail, the oldest for a window).
    pub max_output_bytes: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self {
            chunk_bytes: scan::DEFAULT_CHUNK_BYTES,
            max_output_bytes: usize::MAX,
        }
    }
}

/// Where a query's formatted records go.
pub trait QueryOutput {
    /// Takes one formatted record (newline-ended). Returns false to stop the query (the
    /// reader is gone).
    fn record(&mut self, formatted: &[u8]) -> bool;
}

impl QueryOutput for Vec<u8> {
    fn record(&mut self, formatted: &[u8]) -> bool {
        self.extend_from_slice(formatted);
        true
    }
}

/// Runs the non-follow part of `request` on the journal at `dir`, handing formatted records
/// to `out` in journal order. Memory stays bounded by `limits.max_output_bytes` for a tail
/// (whose records are found newest first) and by one record otherwise.
///
/// # Errors
/// When the journal cannot be read.
pub fn run(
    dir: &Path,
    request: &LogsRequest,
    limits: QueryLimits,
    out: &mut dyn QueryOutput,
) -> Result<QueryEnd, JournalError> {
    if let Some(n) = request.tail {
        return run_tail(dir, request, n, limits, out);
    }
    let Some(end) = scan::committed_end(dir)? else {
        return Ok(QueryEnd::default());
    };
    let mut follower = Follower::new(dir, seek_since(dir, request.filter.since.as_deref())?);
    let mut result = QueryEnd {
        end,
        ..QueryEnd::default()
    };
    let mut one = Vec::new();
    let mut written = 0;
    loop {
        let batch = follower.read_to(end, 1 << 20)?;
        if batch.is_empty() {
            return Ok(result);
        }
        result.bytes_read += batch.len() as u64;
        for line in lines(batch) {
            let view = RecordView::decode(line);
            if is_past_until(&request.filter, &view) {
                return Ok(result);
            }
            if !request.filter.matches_view(&view, line) {
                continue;
            }
            one.clear();
            request.output.write(line, &mut one);
            if written + one.len() > limits.max_output_bytes {
                result.truncated = true;
                return Ok(result);
            }
            written += one.len();
            result.records += 1;
            if !out.record(&one) {
                return Ok(result);
            }
        }
    }
}

fn run_tail(
    dir: &Path,
    request: &LogsRequest,
    n: usize,
    limits: QueryLimits,
    out: &mut dyn QueryOutput,
) -> Result<QueryEnd, JournalError> {
    // Formatted while found (newest first), so the size limit counts what is sent and keeps
    // the end of the tail.
    let tail = scan::tail_with(
        dir,
        &request.filter,
        n,
        limits.chunk_bytes,
        limits.max_output_bytes,
        &mut |line| {
            let mut one = Vec::new();
            request.output.write(line, &mut one);
            one
        },
    )?;
    for one in &tail.lines {
        if !out.record(one) {
            break;
        }
    }
    Ok(QueryEnd {
        end: tail.end,
        records: tail.lines.len() as u64,
        truncated: tail.cut,
        bytes_read: tail.bytes_read,
    })
}

/// Whether a record lies after the filter's `until`: the journal is in collection order, so
/// nothing after it can match either.
pub fn is_past_until(filter: &Filter, view: &RecordView<'_>) -> bool {
    match (&filter.until, &view.collected_at) {
        (Some(until), Some(at)) => at.as_ref() > until.as_str(),
        _ => false,
    }
}

/// Records reach the processed journal a moment after their `collected_at`; a follow with an
/// `until` waits this long past it for stragglers before it ends.
const UNTIL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether a follow bounded by `until` can end: the bound (plus [`UNTIL_GRACE`]) is past.
fn until_has_passed(filter: &Filter, now: SystemTime) -> bool {
    filter
        .until
        .as_ref()
        .is_some_and(|until| super::journal_time(now - UNTIL_GRACE) > *until)
}

/// One step of a follow: formats what was committed since the last step into `out`. Returns
/// false once the follow is over (a record past `until` was reached, or `until` has passed).
///
/// # Errors
/// When the journal cannot be read.
pub fn follow_step(
    follower: &mut Follower,
    request: &LogsRequest,
    max_bytes: usize,
    out: &mut Vec<u8>,
) -> Result<bool, JournalError> {
    let batch = follower.read_committed(max_bytes)?;
    if batch.is_empty() {
        return Ok(!until_has_passed(&request.filter, SystemTime::now()));
    }
    for line in lines(batch) {
        let view = RecordView::decode(line);
        if is_past_until(&request.filter, &view) {
            return Ok(false);
        }
        if request.filter.matches_view(&view, line) {
            request.output.write(line, out);
        }
    }
    Ok(true)
}

/// Where a follow starts after the non-follow part: the committed end it saw (tail), or the
/// seek position for a window (the whole window is then streamed by the follow itself).
///
/// # Errors
/// When the journal directory cannot be listed.
pub fn follow_start(
    dir: &Path,
    request: &LogsRequest,
    tail_end: Option<Position>,
) -> Result<Position, JournalError> {
    match tail_end {
        Some(end) => Ok(end),
        None => seek_since(dir, request.filter.since.as_deref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parameters_are_checked_by_name() {
        let now = SystemTime::now();
        let r = LogsRequest::from_params(
            &params(&[
                ("source", "a.log,b.log"),
                ("source", "c.log"),
                ("tail", "20"),
                ("follow", "true"),
                ("level", "warning"),
                ("format", "text"),
                ("timestamps", ""),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(r.filter.sources, ["a.log", "b.log", "c.log"]);
        assert_eq!(r.tail, Some(20));
        assert!(r.follow && r.output.text && r.output.timestamps);
        for (name, value) in [
            ("tail", "-3"),
            ("since", "soon"),
            ("grep", "("),
            ("level", "loud"),
            ("follow", "maybe"),
            ("format", "xml"),
            ("stream", "stdin"),
            ("colour", "red"),
        ] {
            let e = LogsRequest::from_params(&params(&[(name, value)]), now).unwrap_err();
            assert_eq!(e.parameter, name, "{e}");
        }
        let e = LogsRequest::from_params(&params(&[("since", "1h"), ("until", "2h")]), now)
            .unwrap_err();
        assert_eq!(e.parameter, "until");
    }

    #[test]
    fn a_stream_keeps_only_what_containers_wrote_to_it_and_timestamps_show_the_runtime_time() {
        let now = SystemTime::now();
        let stderr = LogsRequest::from_params(
            &params(&[
                ("stream", "stderr"),
                ("format", "text"),
                ("timestamps", "true"),
            ]),
            now,
        )
        .unwrap();
        let err = br#"{"source_file":"app","stream":"stderr","logged_at":"2026-12-06T10:30:45.123456789Z","collected_at":"2026-12-06T10:30:46.000Z","message":"boom"}"#;
        let out_line = br#"{"source_file":"app","stream":"stdout","message":"fine"}"#;
        let file_line = br#"{"source_file":"a.log","message":"plain"}"#;
        assert!(stderr.filter.matches(err));
        assert!(!stderr.filter.matches(out_line) && !stderr.filter.matches(file_line));
        let mut text = Vec::new();
        stderr.output.write(err, &mut text);
        assert_eq!(
            String::from_utf8(text).unwrap(),
            "2026-12-06T10:30:45.123456789Z app INFO    boom\n"
        );
    }

    #[test]
    fn containers_pods_and_namespaces_add_up_like_sources() {
        let now = SystemTime::now();
        let r = LogsRequest::from_params(
            &params(&[
                ("container", "web,db"),
                ("container", "worker"),
                ("pod", "shop-7d9f"),
                ("namespace", "shop"),
                ("stream", "stderr"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(r.filter.containers, ["web", "db", "worker"]);
        assert_eq!(r.filter.pods, ["shop-7d9f"]);
        assert_eq!(r.filter.namespaces, ["shop"]);
        for (name, value) in [("container", "Web"), ("pod", ""), ("namespace", "a,,b")] {
            let e = LogsRequest::from_params(&params(&[(name, value)]), now).unwrap_err();
            assert_eq!(e.parameter, name, "{e}");
        }
        let e = LogsRequest::from_params(&params(&[("container", "web_1")]), now).unwrap_err();
        assert_eq!(
            e.to_string(),
            "container: \"web_1\" is not a Kubernetes container name (lowercase letters, digits and '-', at most 63 characters)"
        );
    }

    #[test]
    fn a_follow_with_an_until_in_the_past_ends() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let past = LogsRequest::from_params(&params(&[("until", "1m")]), now).unwrap();
        let open =
            LogsRequest::from_params(&params(&[("until", "2099-01-01T00:00:00Z")]), now).unwrap();
        let mut follower = Follower::new(dir.path(), Position::default());
        let mut out = Vec::new();
        assert!(!follow_step(&mut follower, &past, 1024, &mut out).unwrap());
        assert!(follow_step(&mut follower, &open, 1024, &mut out).unwrap());
    }
}
