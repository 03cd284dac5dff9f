//! Stack traces under the default rules on real processes (issue 14): a Python traceback, as
//! `logger.exception` writes it, reaches the sink as one record of its log line, with that
//! line's parsed fields and level and the trace whole in `stack_trace`, exactly once, whether
//! the processor is killed with SIGKILL between its lines, stopped with SIGTERM while the
//! trace waits for more, or left idle.

use std::fs;
use std::time::Duration;

use e2e_tests::{append, processor_holds_open_past, wait_until, Pod, StageKind};
use serde_json::Value;

const HEAD: &str = "2026-11-22 10:31:07,311 - web-api - ERROR - Database connection timeout while listing users (request_id=7a1c0e42)";
const TRACE: [&str; 6] = [
    "Traceback (most recent call last):",
    "  File \"/app/web_api/handlers.py\", line 88, in list_users",
    "    rows = db.fetch_page(page, limit)",
    "  File \"/app/web_api/db.py\", line 41, in fetch_page",
    "    return self.pool.execute(query, timeout=30)",
    "TimeoutError: database did not answer within 30s",
];
const NEXT: &str = "2026-11-22 10:31:08,002 - web-api - ERROR - Validation failed for GET /users: page must be a positive integer, got '0' (request_id=7a1c0e43)";

/// `lines`, each with its newline: one write, as one logging call makes.
fn text(lines: &[&str]) -> String {
    lines.iter().map(|line| format!("{line}\n")).collect()
}

/// A pod with the default rules, whose traces wait `flush_after_ms` for more lines.
fn pod_with_flush_after(flush_after_ms: Option<u64>) -> Pod {
    let pod = Pod::new();
    if let Some(ms) = flush_after_ms {
        let path = pod.path("rules.yaml");
        let rules = fs::read_to_string(&path).unwrap();
        let preset = "multiline: {preset: python}";
        assert!(
            rules.contains(preset),
            "the default rules join Python traces"
        );
        let rules = rules.replace(
            preset,
            &format!("multiline: {{preset: python, flush_after_ms: {ms}}}"),
        );
        fs::write(path, rules).unwrap();
    }
    pod
}

/// Waits until the processor holds the trace open, read up to `last` (a line just written).
fn wait_held_open(pod: &Pod, last: &str) {
    assert!(
        wait_until(Duration::from_secs(15), || processor_holds_open_past(
            pod, last
        )),
        "the processor never held the trace open past {last:?}"
    );
}

/// The error.log records delivered, after waiting for `n` of them.
fn delivered_errors(pod: &Pod, n: usize) -> Vec<Value> {
    let mut records = Vec::new();
    let ok = wait_until(Duration::from_secs(30), || {
        records = pod
            .delivered()
            .into_iter()
            .filter(|r| {
                r["source_file"]
                    .as_str()
                    .is_some_and(|s| s.ends_with("error.log"))
            })
            .collect();
        records.len() >= n
    });
    assert!(
        ok,
        "only {} of {n} records delivered: {records:?}",
        records.len()
    );
    // Time for a duplicate to show up before the caller counts.
    std::thread::sleep(Duration::from_millis(500));
    pod.delivered()
        .into_iter()
        .filter(|r| {
            r["source_file"]
                .as_str()
                .is_some_and(|s| s.ends_with("error.log"))
        })
        .collect()
}

/// The trace's record: its log line parsed as any line is, the trace whole and apart.
fn assert_trace_record(record: &Value) {
    assert_eq!(record["timestamp"], "2026-11-22 10:31:07,311", "{record}");
    assert_eq!(record["logger"], "web-api", "{record}");
    assert_eq!(
        record["message"],
        "Database connection timeout while listing users (request_id=7a1c0e42)"
    );
    assert_eq!(record["log_level"], "ERROR");
    assert_eq!(record["log_category"], "error");
    assert_eq!(record["error_type"], "timeout");
    assert_eq!(record["stack_trace"], TRACE.join("\n"), "{record}");
    assert!(
        record.get("line").is_none() && record.get("processing_error").is_none(),
        "{record}"
    );
    let id = record["id"].as_str().unwrap();
    assert!(
        id.ends_with("-0"),
        "the record keeps its first line's id: {id}"
    );
}

/// The trace's lines straddle two kill -9 of the processor: part of it is read, the processor
/// dies, the rest is written, the restarted processor reads it and dies again with the trace
/// still open. The third processor delivers it once and whole when the next log line ends it
/// (and the next line when it is stopped).
#[test]
fn a_trace_straddling_kill_9_arrives_once_and_whole() {
    let mut pod = pod_with_flush_after(Some(60_000));
    let _collector = pod.start(StageKind::Collector);
    let processor = pod.start(StageKind::Processor);
    let _forwarder = pod.start(StageKind::Forwarder);

    append(
        &pod,
        "error.log",
        &text(&[HEAD, TRACE[0], TRACE[1], TRACE[2]]),
    );
    wait_held_open(&pod, TRACE[2]);
    processor.kill9();
    append(&pod, "error.log", &text(&TRACE[3..]));
    let processor = pod.start(StageKind::Processor);
    wait_held_open(&pod, TRACE[5]);
    processor.kill9();
    let processor = pod.start(StageKind::Processor);
    append(&pod, "error.log", &text(&[NEXT]));
    // The next line now waits in turn; a stop lets it go.
    wait_held_open(&pod, NEXT);
    let (status, _) = processor.terminate(Duration::from_secs(15));
    assert!(status.success());

    let records = delivered_errors(&pod, 2);
    assert_eq!(
        records.len(),
        2,
        "the trace and the next line, once each: {records:?}"
    );
    assert_trace_record(&records[0]);
    assert_eq!(records[1]["error_type"], "validation");
    assert!(records[1].get("stack_trace").is_none());
}

/// SIGTERM while the trace waits for more lines: the processor lets it go whole before it
/// exits, and its successor does not deliver it again.
#[test]
fn an_open_trace_is_flushed_whole_on_sigterm_and_not_repeated() {
    let mut pod = pod_with_flush_after(Some(60_000));
    let _collector = pod.start(StageKind::Collector);
    let processor = pod.start(StageKind::Processor);
    let _forwarder = pod.start(StageKind::Forwarder);

    let mut lines = vec![HEAD];
    lines.extend(TRACE);
    append(&pod, "error.log", &text(&lines));
    wait_held_open(&pod, TRACE[5]);
    let (status, _) = processor.terminate(Duration::from_secs(15));
    assert!(status.success());
    let records = delivered_errors(&pod, 1);
    assert_eq!(records.len(), 1);
    assert_trace_record(&records[0]);

    let processor = pod.start(StageKind::Processor);
    append(&pod, "error.log", &text(&[NEXT]));
    wait_held_open(&pod, NEXT);
    let (status, _) = processor.terminate(Duration::from_secs(15));
    assert!(status.success());
    let records = delivered_errors(&pod, 2);
    assert_eq!(
        records.len(),
        2,
        "the trace is not delivered again: {records:?}"
    );
    assert_trace_record(&records[0]);
}

/// With the default rules as shipped, a trace no line follows is let go after the idle
/// timeout (one second), whole.
#[test]
fn an_open_trace_is_flushed_after_the_idle_timeout() {
    let mut pod = pod_with_flush_after(None);
    let _stages = pod.start_all();
    let mut lines = vec![HEAD];
    lines.extend(TRACE);
    append(&pod, "error.log", &text(&lines));
    let records = delivered_errors(&pod, 1);
    assert_eq!(records.len(), 1);
    assert_trace_record(&records[0]);
}
