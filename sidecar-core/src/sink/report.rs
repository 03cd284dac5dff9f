//! The report sink: a periodic summary on stdout, for `kubectl logs <pod> -c log-forwarder`.
//!
//! Easy to get wrong: the totals. They are committed with the forwarder's position, so after a
//! restart they continue from the last commit and count every record exactly once.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{OutRecord, Sink, SinkError};

mod footprint;
use crate::config::HumanDuration;
use crate::record::{field, timestamp_now};
use footprint::Footprint;

/// The report's name in the checkpoint.
pub const REPORT_SINK_NAME: &str = "report";
const LEVELS: [&str; 4] = ["ERROR", "WARNING", "INFO", "DEBUG"];

/// `report:` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportSpec {
    /// Whether to print reports (default true).
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// How often (default 60 s).
    #[serde(default = "default_interval")]
    pub interval: HumanDuration,
    /// How many of the latest records to show (default 5).
    #[serde(default = "default_latest")]
    pub latest_records: usize,
    /// The other sidecars' `/metrics` URLs (name → URL), scraped for their CPU and memory
    /// (default: the collector on 127.0.0.1:9101 and the processor on 127.0.0.1:9102, the
    /// pod's loopback); `{}` shows the forwarder's own only.
    #[serde(default = "default_sidecars")]
    pub sidecars: BTreeMap<String, String>,
}

fn default_enabled() -> bool {
    true
}
fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_latest() -> usize {
    5
}
fn default_sidecars() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("collector".into(), "http://127.0.0.1:9101/metrics".into()),
        ("processor".into(), "http://127.0.0.1:9102/metrics".into()),
    ])
}

impl Default for ReportSpec {
    fn default() -> Self {
        Self {
            enabled: default_enabled(),
            interval: default_interval(),
            latest_records: default_latest(),
            sidecars: default_sidecars(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Counts {
    records: u64,
    processing_errors: u64,
    levels: BTreeMap<String, u64>,
}

impl Counts {
    fn add(&mut self, level: &str, failed: bool) {
        self.records += 1;
        self.processing_errors += u64::from(failed);
        match self.levels.get_mut(level) {
            Some(n) => *n += 1,
            None => {
                self.levels.insert(level.to_owned(), 1);
            }
        }
    }

    fn level(&self, level: &str) -> u64 {
        self.levels.get(level).copied().unwrap_or(0)
    }
}

/// What the report commits: totals per source since the journal began.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ReportState {
    totals: BTreeMap<String, Counts>,
}

/// Prints a summary of what went through every `interval`.
pub struct ReportSink {
    spec: ReportSpec,
    state: ReportState,
    interval: BTreeMap<String, Counts>,
    /// The latest records as they came (raw lines): summarised when a report shows them, not
    /// as each batch passes (decoding whole records at every batch cost a fifth of the
    /// forwarder at 10,000 lines/s: BENCHMARKS.md, "The report's latest records").
    latest: VecDeque<Latest>,
    last_report: Instant,
    started: Instant,
    footprint: Footprint,
}

impl ReportSink {
    /// A report sink continuing from `saved` totals.
    pub fn new(spec: &ReportSpec, saved: Option<&Value>) -> Self {
        let state = saved
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        Self {
            spec: spec.clone(),
            state,
            interval: BTreeMap::new(),
            latest: VecDeque::new(),
            last_report: Instant::now(),
            started: Instant::now(),
            footprint: Footprint::start(spec.sidecars.clone(), spec.interval.0),
        }
    }

    /// The report text for the current interval, and resets the interval.
    pub fn render(&mut self, title: &str) -> String {
        let elapsed = self.last_report.elapsed().max(Duration::from_millis(1));
        self.last_report = Instant::now();
        let seconds = elapsed.as_secs_f64();
        let new: u64 = self.interval.values().map(|c| c.records).sum();
        let total: u64 = self.state.totals.values().map(|c| c.records).sum();
        let errors: u64 = self.interval.values().map(|c| c.level("ERROR")).sum();
        let failed: u64 = self.interval.values().map(|c| c.processing_errors).sum();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "=== log-forwarder {title} {} (last {:.0}s, up {}s) ===",
            timestamp_now(),
            seconds,
            self.started.elapsed().as_secs()
        );
        let _ = writeln!(
            out,
            "records: {new} new ({:.1}/s), {total} total; ERROR-level: {errors}; processing errors: {failed}",
            new as f64 / seconds
        );
        let _ = writeln!(
            out,
            "{:<28} {:>8} {:>10} {:>8} {:>7} {:>7} {:>7} {:>7}",
            "SOURCE", "NEW", "TOTAL", "RATE/s", "ERROR", "WARNING", "INFO", "DEBUG"
        );
        for (source, totals) in &self.state.totals {
            let now = self.interval.get(source).cloned().unwrap_or_default();
            let _ = write!(
                out,
                "{:<28} {:>8} {:>10} {:>8.1}",
                truncate(source, 28),
                now.records,
                totals.records,
                now.records as f64 / seconds
            );
            for level in LEVELS {
                let _ = write!(out, " {:>7}", now.level(level));
            }
            out.push('\n');
        }
        let _ = writeln!(out, "{}", self.footprint.line());
        for line in crate::alerts::report_lines() {
            let _ = writeln!(out, "{line}");
        }
        let dead: Vec<String> = super::dead_letter::totals()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(sink, n)| format!("{sink} {n}"))
            .collect();
        if !dead.is_empty() {
            let _ = writeln!(
                out,
                "dead-lettered (refused by the server, kept in the dead-letter journal): {}",
                dead.join(", ")
            );
        }
        if !self.latest.is_empty() {
            let _ = writeln!(out, "latest records:");
            // Batches interleave sources, so arrival order is not time order.
            let mut lines: Vec<String> = self.latest.iter().map(Latest::summary).collect();
            lines.sort_by_cached_key(|line| time_order(line));
            for line in lines {
                let _ = writeln!(out, "  {line}");
            }
        }
        self.interval.clear();
        out
    }

    fn print(&mut self, title: &str) {
        let text = self.render(title);
        let mut stdout = std::io::stdout().lock();
        // A closed stdout must not stop delivery; the report is best effort by nature.
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }
}

impl Sink for ReportSink {
    fn name(&self) -> &str {
        REPORT_SINK_NAME
    }

    /// No limit of its own: its totals are committed state, so after a crash the batches since
    /// the commit are counted again from the committed totals, once.
    fn commit_within(&self) -> Duration {
        Duration::MAX
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        for record in batch {
            let source = record.source_file();
            let level = record.log_level().unwrap_or("INFO");
            let failed = record.failed();
            for counts in [&mut self.interval, &mut self.state.totals] {
                match counts.get_mut(source) {
                    Some(c) => c.add(level, failed),
                    None => counts
                        .entry(source.to_owned())
                        .or_default()
                        .add(level, failed),
                }
            }
        }
        let keep = self.spec.latest_records;
        for record in batch.iter().rev().take(keep).rev() {
            self.latest.push_back(Latest::of(record));
        }
        while self.latest.len() > keep {
            self.latest.pop_front();
        }
        Ok(())
    }

    fn state(&self) -> Value {
        serde_json::to_value(&self.state).expect("report state serialises")
    }

    fn tick(&mut self) {
        if self.last_report.elapsed() >= self.spec.interval.0 {
            self.print("report");
        }
    }

    fn tick_due_in(&self) -> Option<Duration> {
        Some(
            self.spec
                .interval
                .0
                .saturating_sub(self.last_report.elapsed()),
        )
    }

    fn close(&mut self) {
        self.print("final report");
    }
}

/// One of the latest records, kept until a report shows it.
enum Latest {
    /// The line as it came.
    Raw(Vec<u8>),
    /// A line too long to keep whole (up to the collector's 1 MiB): its summary at once.
    Summary(String),
}

impl Latest {
    /// Lines longer than this are summarised when they pass, so the kept ones stay small.
    const MAX_RAW: usize = 4096;

    fn of(record: &OutRecord<'_>) -> Self {
        if record.raw.len() <= Self::MAX_RAW {
            Latest::Raw(record.raw.to_vec())
        } else {
            Latest::Summary(summarize(record))
        }
    }

    fn summary(&self) -> String {
        match self {
            Latest::Raw(raw) => summarize(&OutRecord::decode(raw)),
            Latest::Summary(summary) => summary.clone(),
        }
    }
}

/// One compact human line for a record: time, level, source, and its summary
/// ([`crate::record::summary`], the same as `forwarder logs` shows).
pub fn summarize(record: &OutRecord<'_>) -> String {
    let f = record.fields();
    let text = |key: &str| f.get(key).and_then(Value::as_str);
    let time = text(field::TIMESTAMP)
        .or_else(|| text(field::COLLECTED_AT))
        .unwrap_or("-");
    let level = text(field::LOG_LEVEL).unwrap_or("-");
    let source = text(field::SOURCE_FILE).unwrap_or("-");
    let summary = match crate::record::summary::summarize(&f) {
        Some(summary) => summary.text,
        None => String::from_utf8_lossy(record.raw).into_owned(),
    };
    format!(
        "{time} {level:<7} {:<24} {}",
        truncate(source, 24),
        truncate(summary.trim_end(), 160)
    )
}

/// A key that sorts the report's lines by their time, whichever of the two layouts it is in
/// (`2026-11-22 10:30:45,123` from an app, `2026-11-22T10:30:45.123Z` from the collector).
fn time_order(line: &str) -> String {
    line.chars()
        .take(23)
        .map(|c| match c {
            'T' => ' ',
            ',' => '.',
            c => c,
        })
        .collect()
}

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(json: &str) -> OutRecord<'_> {
        OutRecord::decode(json.as_bytes())
    }

    #[test]
    fn reports_count_per_source_and_level_and_keep_totals() {
        let mut sink = ReportSink::new(&ReportSpec::default(), None);
        let lines = [
            r#"{"source_file":"access.log","log_level":"INFO","method":"GET","path":"/users","status_code":200,"processing_time_ms":3.5,"timestamp":"2026-11-22 10:30:45,123"}"#,
            r#"{"source_file":"error.log","log_level":"ERROR","message":"Database connection timeout","timestamp":"2026-11-22 10:30:46,000"}"#,
            r#"{"source_file":"error.log","log_level":"ERROR","message":"x","processing_error":"bad"}"#,
        ];
        let batch: Vec<_> = lines.iter().map(|l| record(l)).collect();
        sink.send(&batch).unwrap();
        let text = sink.render("report");
        assert!(text.contains("records: 3 new"), "{text}");
        assert!(
            text.contains("ERROR-level: 2; processing errors: 1"),
            "{text}"
        );
        let error_row = text.lines().find(|l| l.starts_with("error.log")).unwrap();
        assert_eq!(
            error_row.split_whitespace().collect::<Vec<_>>(),
            [
                "error.log",
                "2",
                "2",
                error_row.split_whitespace().nth(3).unwrap(),
                "2",
                "0",
                "0",
                "0"
            ]
        );
        assert!(text.contains("GET /users -> 200 3.5ms"), "{text}");
        assert!(text.contains("Database connection timeout"), "{text}");
        // The next interval starts empty; totals carry over, also through the committed state.
        let restored = ReportSink::new(&ReportSpec::default(), Some(&sink.state()));
        assert_eq!(restored.state.totals["error.log"].records, 2);
        let text = sink.render("report");
        assert!(
            text.contains("records: 0 new") && text.contains("3 total"),
            "{text}"
        );
    }

    #[test]
    fn only_the_latest_records_are_kept() {
        let spec = ReportSpec {
            latest_records: 2,
            ..ReportSpec::default()
        };
        let mut sink = ReportSink::new(&spec, None);
        let lines: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"source_file":"a.log","message":"m{i}"}}"#))
            .collect();
        let batch: Vec<_> = lines.iter().map(|l| record(l)).collect();
        sink.send(&batch).unwrap();
        let latest: Vec<_> = sink
            .latest
            .iter()
            .map(Latest::summary)
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
            .collect();
        assert_eq!(latest, ["m3", "m4"]);
    }

    #[test]
    fn a_long_latest_record_is_shown_as_a_short_one_is() {
        let mut sink = ReportSink::new(&ReportSpec::default(), None);
        let long = format!(
            r#"{{"source_file":"a.log","message":"{}"}}"#,
            "x".repeat(10_000)
        );
        let short = r#"{"source_file":"a.log","message":"short"}"#;
        sink.send(&[record(&long), record(short)]).unwrap();
        assert!(
            matches!(sink.latest[0], Latest::Summary(_)),
            "not kept whole"
        );
        let text = sink.render("report");
        let shown: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "latest records:")
            .skip(1)
            .collect();
        assert_eq!(shown.len(), 2, "{text}");
        assert!(shown.iter().any(|l| l.ends_with("short")), "{text}");
        assert!(shown.iter().all(|l| l.len() < 300), "{text}");
    }

    #[test]
    fn the_latest_records_are_shown_in_time_order() {
        let mut sink = ReportSink::new(&ReportSpec::default(), None);
        let lines = [
            r#"{"source_file":"b.log","message":"second","timestamp":"2026-11-22 10:30:46,000"}"#,
            r#"{"source_file":"a.log","message":"third","collected_at":"2026-11-22T10:30:47.000Z"}"#,
            r#"{"source_file":"a.log","message":"first","timestamp":"2026-11-22 10:30:45,500"}"#,
        ];
        let batch: Vec<_> = lines.iter().map(|l| record(l)).collect();
        sink.send(&batch).unwrap();
        let text = sink.render("report");
        let shown: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "latest records:")
            .skip(1)
            .map(|l| l.rsplit(' ').next().unwrap())
            .collect();
        assert_eq!(shown, ["first", "second", "third"], "{text}");
    }
}
