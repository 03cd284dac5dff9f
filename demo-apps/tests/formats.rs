//! Every app writes each of its files in the documented layout, with the documented fields per
//! record type, in roughly the documented proportions; and the same seed gives the same lines.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use common::{assert_fields, body, json_record, read_lines, text_record, traceback};
use demo_apps::simulation::{demo_lines, write_lines, App};
use serde_json::{Map, Value};

const SEED: u64 = 42;

/// Writes `n` lines of `app` into a fresh directory and returns it with the line count check
/// done.
fn generate(app: App, n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_lines(app, dir.path(), SEED, n).unwrap();
    let total: usize = app
        .file_names()
        .iter()
        .map(|name| read_lines(dir.path(), name).len())
        .sum();
    assert_eq!(total as u64, n, "{} wrote exactly n lines", app.name());
    dir
}

fn json_lines(dir: &Path, name: &str) -> Vec<Map<String, Value>> {
    let lines = read_lines(dir, name);
    assert!(!lines.is_empty(), "{name} has lines");
    lines.iter().map(|line| json_record(line)).collect()
}

fn text_lines(dir: &Path, name: &str, logger: &str) -> Vec<(String, String)> {
    let lines = read_lines(dir, name);
    assert!(!lines.is_empty(), "{name} has lines");
    lines
        .iter()
        .map(|line| {
            let (found, level, message) = text_record(line);
            assert_eq!(found, logger, "{line}");
            (level, message)
        })
        .collect()
}

fn percent(part: usize, whole: usize) -> f64 {
    assert!(whole > 0);
    part as f64 * 100.0 / whole as f64
}

#[test]
fn web_api_files_follow_their_layouts() {
    let dir = generate(App::WebApi, 30_000);
    let access = json_lines(dir.path(), "access.log");

    let request_fields = [
        "type",
        "request_id",
        "method",
        "path",
        "query",
        "remote_addr",
        "user_agent",
    ];
    let mut status_by_id = HashMap::new();
    let mut requests = HashSet::new();
    let mut list_users = 0;
    let mut list_users_500 = 0;
    for record in &access {
        assert_fields(record, &request_fields);
        match record["type"].as_str().unwrap() {
            "request" => {
                assert!(!record.contains_key("status_code"));
                assert!(requests.insert(record["request_id"].as_str().unwrap().to_owned()));
            }
            "response" => {
                assert_fields(
                    record,
                    &["status_code", "content_length", "processing_time_ms"],
                );
                let id = record["request_id"].as_str().unwrap().to_owned();
                assert!(
                    requests.contains(&id),
                    "response without request: {record:?}"
                );
                let status = record["status_code"].as_u64().unwrap();
                if record["method"] == "GET" && record["path"] == "/users" {
                    list_users += 1;
                    list_users_500 += usize::from(status == 500);
                }
                status_by_id.insert(id, status);
            }
            other => panic!("unknown type {other}"),
        }
    }
    assert!(
        status_by_id.len() + 1 >= requests.len(),
        "every request but the last answered"
    );
    let list_failures = percent(list_users_500, list_users);
    assert!(
        (5.0..15.0).contains(&list_failures),
        "GET /users 500s: {list_failures:.1}%"
    );

    // Each error line names a request whose response carries the matching status.
    let errors = text_lines(dir.path(), "error.log", "web-api");
    let mut kinds = HashSet::new();
    for (level, message) in &errors {
        assert_eq!(level, "ERROR");
        let id = message
            .rsplit_once("(request_id=")
            .and_then(|(_, rest)| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("no request id: {message}"));
        let Some(&status) = status_by_id.get(id) else {
            continue; // The last request may be cut off by the line budget.
        };
        let (kind, expected) = if message.starts_with("Validation failed for ") {
            ("validation", 400)
        } else if message.starts_with("Conflict on POST /users: Email already exists: ") {
            ("conflict", 409)
        } else if message.starts_with("Database connection timeout while listing users") {
            ("timeout", 500)
        } else if message.starts_with("Connection reset by upstream cache") {
            ("cache", status) // Served from the database anyway.
        } else {
            panic!("unexpected error line: {message}")
        };
        assert_eq!(status, expected, "{message}");
        kinds.insert(kind);
    }
    assert_eq!(kinds.len(), 4, "all error kinds occur: {kinds:?}");

    // Timeouts and cache resets carry a traceback, as `logger.exception` writes it.
    let mut traces = 0;
    for record in read_lines(dir.path(), "error.log") {
        let (_, _, message) = text_record(&record);
        let exception = message.starts_with("Database connection timeout")
            || message.starts_with("Connection reset by upstream cache");
        let Some(trace) = traceback(&record) else {
            assert!(!exception, "no traceback: {record}");
            continue;
        };
        assert!(exception, "a traceback on a handled error: {record}");
        let lines: Vec<&str> = trace.lines().collect();
        assert_eq!(lines[0], "Traceback (most recent call last):");
        assert!(lines[1].starts_with("  File \"") && lines[2].starts_with("    "));
        let last = lines.last().unwrap();
        assert!(
            last.starts_with("TimeoutError: ") || last.starts_with("ConnectionResetError: "),
            "{last}"
        );
        traces += 1;
    }
    assert!(traces > 0, "error.log has tracebacks");

    let application = text_lines(dir.path(), "application.log", "application");
    let levels: HashSet<_> = application
        .iter()
        .map(|(level, _)| level.as_str())
        .collect();
    assert_eq!(levels, HashSet::from(["DEBUG", "INFO", "WARNING"]));
    let has = |prefix: &str| application.iter().any(|(_, m)| m.starts_with(prefix));
    assert!(has("Listed ") && has("Created user ") && has("Cache lookup for user "));
    assert!(has("Slow request: GET /simulate-load took ") && has("Health check passed: "));
    assert!(application
        .iter()
        .any(|(level, m)| level == "WARNING" && m.ends_with(" not found")));
}

#[test]
fn database_files_follow_their_layouts() {
    let dir = generate(App::DatabaseClient, 40_000);
    let queries = json_lines(dir.path(), "database-queries.log");
    let common = ["event", "query_id", "operation", "table"];
    let operations = ["SELECT", "INSERT", "UPDATE", "DELETE"];
    let tables = ["users", "orders", "products", "transactions", "logs"];

    let mut started = HashSet::new();
    let mut finished = 0;
    let mut failed = 0;
    let mut slow = 0;
    let mut above_5s = 0;
    for record in &queries {
        assert_fields(record, &common);
        assert!(operations.contains(&record["operation"].as_str().unwrap()));
        assert!(tables.contains(&record["table"].as_str().unwrap()));
        let id = record["query_id"].as_str().unwrap();
        assert!(id.starts_with("q-") && id.len() >= 8, "{id}");
        match record["event"].as_str().unwrap() {
            "query_started" => {
                assert_fields(record, &["sql", "connection_id"]);
                assert!(started.insert(id.to_owned()));
            }
            event @ ("query_completed" | "query_failed") => {
                assert!(started.contains(id), "{id} finished before it started");
                assert_fields(record, &["execution_time_ms", "connection_id"]);
                if event == "query_completed" {
                    assert_fields(record, &["rows_affected"]);
                } else {
                    assert_fields(record, &["error"]);
                    failed += 1;
                }
                let ms = record["execution_time_ms"].as_f64().unwrap();
                slow += usize::from(ms >= 1_000.0);
                above_5s += usize::from(ms > 5_000.0);
                finished += 1;
            }
            other => panic!("unknown event {other}"),
        }
    }
    assert!(finished >= 10_000, "{finished} queries");
    let slow_percent = percent(slow, finished);
    assert!(
        (5.0..15.0).contains(&slow_percent),
        "slow: {slow_percent:.1}%"
    );
    assert!(above_5s > 0);
    let failed_percent = percent(failed, finished);
    assert!(
        (3.0..7.0).contains(&failed_percent),
        "failed: {failed_percent:.1}%"
    );

    let performance = json_lines(dir.path(), "database-performance.log");
    let mut metrics = 0usize;
    let mut pool_status = 0;
    for record in &performance {
        match record["event"].as_str().unwrap() {
            "query_metrics" => {
                assert_fields(
                    record,
                    &[
                        "query_id",
                        "operation",
                        "table",
                        "execution_time_ms",
                        "rows_affected",
                        "rows_scanned",
                        "cache_hit",
                    ],
                );
                assert!(record["cache_hit"].is_boolean());
                metrics += 1;
            }
            "pool_status" => {
                assert_fields(
                    record,
                    &[
                        "active_connections",
                        "idle_connections",
                        "max_connections",
                        "wait_queue",
                    ],
                );
                let active = record["active_connections"].as_u64().unwrap();
                let idle = record["idle_connections"].as_u64().unwrap();
                assert_eq!(active + idle, record["max_connections"].as_u64().unwrap());
                pool_status += 1;
            }
            other => panic!("unknown event {other}"),
        }
    }
    assert!(
        metrics.abs_diff(finished) <= 1,
        "one metrics record per finished query"
    );
    // About ten queries per simulated second, a pool status every ten.
    let expected = finished / 100;
    assert!(
        pool_status >= expected / 2 && pool_status <= expected * 2,
        "{pool_status} pool_status for {finished} queries"
    );
}

#[test]
fn worker_files_follow_their_layouts() {
    let dir = generate(App::BackgroundWorker, 30_000);
    let execution = json_lines(dir.path(), "job-execution.log");
    let job_types = [
        "email_notification",
        "data_backup",
        "report_generation",
        "image_processing",
        "data_sync",
        "cleanup",
    ];

    let mut steps: HashMap<String, Vec<u64>> = HashMap::new();
    let mut completed = 0;
    let mut failed = 0;
    for record in &execution {
        assert_fields(record, &["event", "job_id", "job_type", "status"]);
        assert!(job_types.contains(&record["job_type"].as_str().unwrap()));
        let id = record["job_id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("job-"));
        let status = record["status"].as_str().unwrap();
        match record["event"].as_str().unwrap() {
            "job_queued" => {
                assert_fields(record, &["priority"]);
                assert_eq!(status, "queued");
                assert!(steps.insert(id, Vec::new()).is_none());
            }
            "job_started" => {
                assert_fields(record, &["worker_id"]);
                assert_eq!(status, "running");
                assert!(steps.contains_key(&id), "{id} started before queued");
            }
            "job_step" => {
                assert_fields(
                    record,
                    &["worker_id", "step", "step_name", "progress_percent"],
                );
                let step = record["step"].as_u64().unwrap();
                assert_eq!(record["progress_percent"].as_u64().unwrap(), step * 25);
                if step == 1 {
                    assert_eq!(record["step_name"], "validate");
                }
                steps.get_mut(&id).unwrap().push(step);
            }
            "job_completed" => {
                assert_fields(record, &["worker_id", "duration_ms"]);
                assert_eq!(status, "completed");
                assert_eq!(steps[&id], [1, 2, 3, 4]);
                completed += 1;
            }
            "job_failed" => {
                assert_fields(record, &["worker_id", "error", "duration_ms"]);
                assert_eq!(status, "failed");
                assert!(steps[&id].len() < 4);
                failed += 1;
            }
            other => panic!("unknown event {other}"),
        }
    }
    let failed_percent = percent(failed, completed + failed);
    assert!(
        (4.0..12.0).contains(&failed_percent),
        "failed: {failed_percent:.1}%"
    );

    let metrics = json_lines(dir.path(), "job-metrics.log");
    let mut job_metrics = 0usize;
    let mut workers = HashSet::new();
    for record in &metrics {
        match record["event"].as_str().unwrap() {
            "job_metrics" => {
                assert_fields(
                    record,
                    &[
                        "job_id",
                        "job_type",
                        "duration_ms",
                        "memory_mb",
                        "cpu_percent",
                    ],
                );
                job_metrics += 1;
            }
            "worker_metrics" => {
                assert_fields(
                    record,
                    &[
                        "worker_id",
                        "jobs_processed",
                        "jobs_failed",
                        "queue_depth",
                        "avg_duration_ms",
                    ],
                );
                workers.insert(record["worker_id"].as_u64().unwrap());
            }
            other => panic!("unknown event {other}"),
        }
    }
    assert!(job_metrics.abs_diff(completed + failed) <= 1);
    assert_eq!(workers, HashSet::from([1, 2, 3]));
}

/// Strips the timestamp so runs at different times compare equal.
fn without_timestamps(dir: &Path, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .flat_map(|name| read_lines(dir, name))
        .map(|line| body(&line).to_owned())
        .collect()
}

#[test]
fn same_seed_gives_the_same_lines() {
    for app in App::ALL {
        let runs: Vec<_> = [SEED, SEED, SEED + 1]
            .into_iter()
            .map(|seed| {
                let dir = tempfile::tempdir().unwrap();
                write_lines(app, dir.path(), seed, 5_000).unwrap();
                without_timestamps(dir.path(), app.file_names())
            })
            .collect();
        assert_eq!(runs[0], runs[1], "{}: same seed", app.name());
        assert_ne!(runs[0], runs[2], "{}: different seed", app.name());
    }
}

#[test]
fn demo_lines_match_the_files() {
    for app in App::ALL {
        let dir = tempfile::tempdir().unwrap();
        write_lines(app, dir.path(), SEED, 3_000).unwrap();
        for name in app.file_names() {
            let written = without_timestamps(dir.path(), &[name]);
            let demo: Vec<_> = demo_lines(name, SEED, 20)
                .unwrap()
                .iter()
                .map(|line| body(line).to_owned())
                .collect();
            assert_eq!(demo.len(), 20, "{name}");
            assert_eq!(demo[..], written[..20], "{name}");
        }
    }
}
