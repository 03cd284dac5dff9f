//! Tests of the rules engine: the shipped default rules on a realistic line of each demo-app
//! file, the generic steps on small rule sets, and every kind of config error.

use std::error::Error as _;
use std::path::Path;

use serde_json::{json, Value};

use super::{RuleSet, RulesError, PUSHED_FIELD};
use sidecar_record::Fields;

/// The rules file the processor ships.
const DEFAULT_RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../processor/rules/default.yaml"
);

fn default_rules() -> RuleSet {
    RuleSet::load(Path::new(DEFAULT_RULES)).unwrap_or_else(|error| panic!("{error:#?}"))
}

fn yaml(text: &str) -> RuleSet {
    RuleSet::from_yaml_str(text, "rules.yaml").unwrap_or_else(|error| panic!("{error}"))
}

/// A record as the processor hands it over: just the line.
fn record(line: &str) -> Fields {
    let mut record = Fields::new();
    record.insert("line".to_owned(), Value::String(line.to_owned()));
    record
}

/// Applies `rules` to a record of `line` from `source` and returns the result.
fn enrich(rules: &RuleSet, source: &str, line: &str) -> Value {
    let mut record = record(line);
    rules.apply(source, &mut record);
    Value::Object(record.into_map())
}

fn yaml_error(text: &str) -> RulesError {
    match RuleSet::from_yaml_str(text, "rules.yaml") {
        Ok(_) => panic!("rules were accepted:\n{text}"),
        Err(error) => error,
    }
}

/// The error and its causes, as `{:#}` would print them.
fn chain(error: &RulesError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// --- The default rules, one realistic line per demo-app file. ---

#[test]
fn access_request_gets_endpoint_without_query_and_default_level() {
    let line = r#"2026-11-22 10:30:45,123 - {"type":"request","request_id":"5f0c1a52-8c1e-4c47-9a51-0d7f3e8b2a10","method":"GET","path":"/users?page=2","remote_addr":"10.0.0.7:53412","user_agent":"curl/8.5.0"}"#;
    assert_eq!(
        enrich(&default_rules(), "/logs/access.log", line),
        json!({
            "timestamp": "2026-11-22 10:30:45,123",
            "type": "request",
            "request_id": "5f0c1a52-8c1e-4c47-9a51-0d7f3e8b2a10",
            "method": "GET",
            "path": "/users?page=2",
            "remote_addr": "10.0.0.7:53412",
            "user_agent": "curl/8.5.0",
            "endpoint": "/users",
            "log_category": "access",
            "log_level": "INFO",
        })
    );
}

#[test]
fn access_response_5xx_is_server_error_at_error_level() {
    let line = r#"2026-11-22 10:30:45,135 - {"type":"response","request_id":"5f0c1a52-8c1e-4c47-9a51-0d7f3e8b2a10","method":"GET","path":"/users","query":"page=2&limit=10","remote_addr":"10.0.0.7:53412","user_agent":"curl/8.5.0","status_code":500,"content_length":61,"processing_time_ms":1204.37}"#;
    assert_eq!(
        enrich(&default_rules(), "access.log", line),
        json!({
            "timestamp": "2026-11-22 10:30:45,135",
            "type": "response",
            "request_id": "5f0c1a52-8c1e-4c47-9a51-0d7f3e8b2a10",
            "method": "GET",
            "path": "/users",
            "query": "page=2&limit=10",
            "remote_addr": "10.0.0.7:53412",
            "user_agent": "curl/8.5.0",
            "status_code": 500,
            "content_length": 61,
            "processing_time_ms": 1204.37,
            "endpoint": "/users",
            "status_category": "server_error",
            "log_category": "access",
            "log_level": "ERROR",
        })
    );
}

#[test]
fn access_status_classes_map_to_category_and_level() {
    let rules = default_rules();
    for (status, category, level) in [
        (json!(200), "success", "INFO"),
        (json!(201), "success", "INFO"),
        (json!(302), "redirect", "INFO"),
        (json!(404), "client_error", "WARNING"),
        (json!("429"), "client_error", "WARNING"),
        (json!(503), "server_error", "ERROR"),
    ] {
        let line = format!(
            r#"2026-11-22 10:30:46,001 - {{"type":"response","method":"POST","path":"/orders?x=1","status_code":{status}}}"#
        );
        let out = enrich(&rules, "access-2.log", &line);
        assert_eq!(out["status_category"], category, "status {status}");
        assert_eq!(out["log_level"], level, "status {status}");
        assert_eq!(out["endpoint"], "/orders", "status {status}");
    }
}

/// An error.log line of the web-api: text layout, logger `web-api`.
fn error_log(message: &str) -> Value {
    let line = format!("2026-11-22 10:31:02,481 - web-api - ERROR - {message}");
    enrich(&default_rules(), "/logs/error.log", &line)
}

#[test]
fn error_log_timeout() {
    let message =
        "Database connection timeout while listing users (request_id=9b2e7c44-1d0f-4e8a-b3c5-6a7d8e9f0a1b)";
    assert_eq!(
        error_log(message),
        json!({
            "timestamp": "2026-11-22 10:31:02,481",
            "logger": "web-api",
            "message": message,
            "severity": "high",
            "error_type": "timeout",
            "log_category": "error",
            "log_level": "ERROR",
            "matched_alerts": ["WebApiErrorBurst"],
        })
    );
}

#[test]
fn error_log_validation() {
    let message = "Validation failed for POST /users: invalid JSON body (request_id=0c7d2f8e-5a41-4b96-8e0f-3d2c1b0a9f8e)";
    assert_eq!(
        error_log(message),
        json!({
            "timestamp": "2026-11-22 10:31:02,481",
            "logger": "web-api",
            "message": message,
            "severity": "high",
            "error_type": "validation",
            "log_category": "error",
            "log_level": "ERROR",
            "matched_alerts": ["WebApiErrorBurst"],
        })
    );
}

#[test]
fn error_log_conflict_409_is_unknown_error_type() {
    let message = "Conflict on POST /users: Email already exists: alice@example.com (request_id=7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918)";
    assert_eq!(
        error_log(message),
        json!({
            "timestamp": "2026-11-22 10:31:02,481",
            "logger": "web-api",
            "message": message,
            "severity": "high",
            "error_type": "unknown",
            "log_category": "error",
            "log_level": "ERROR",
            "matched_alerts": ["WebApiErrorBurst"],
        })
    );
}

#[test]
fn error_log_json_layout_keeps_a_payload_error_type() {
    let line = r#"2026-11-22 10:31:05,002 - {"error":"Invalid email address","error_type":"input","status_code":422}"#;
    assert_eq!(
        enrich(&default_rules(), "error.log", line),
        json!({
            "timestamp": "2026-11-22 10:31:05,002",
            "error": "Invalid email address",
            "error_type": "input",
            "status_code": 422,
            "severity": "high",
            "log_category": "error",
            "log_level": "ERROR",
            "matched_alerts": ["WebApiErrorBurst"],
        })
    );
}

#[test]
fn error_type_checks_timeout_before_connection() {
    let rules = default_rules();
    for (message, error_type) in [
        ("Database connection timeout", "timeout"),
        (
            "Connection reset by upstream cache while fetching user 7",
            "connection",
        ),
        ("invalid payload: missing field 'name'", "validation"),
        ("Schema validation failed", "validation"),
        ("Disk full", "unknown"),
    ] {
        let line = format!("2026-11-22 10:31:08,000 - errors - CRITICAL - {message}");
        let out = enrich(&rules, "app.err", &line);
        assert_eq!(out["error_type"], error_type, "{message}");
        assert_eq!(out["log_level"], "ERROR", "{message}");
    }
}

#[test]
fn application_warning_in_text_layout() {
    let line = "2026-11-22 10:32:10,007 - application - WARNING - User 4242 not found";
    assert_eq!(
        enrich(&default_rules(), "application.log", line),
        json!({
            "timestamp": "2026-11-22 10:32:10,007",
            "logger": "application",
            "component": "application",
            "message": "User 4242 not found",
            "log_category": "application",
            "log_level": "WARNING",
        })
    );
}

#[test]
fn application_layout_level_wins_over_keywords() {
    let line =
        "2026-11-22 10:32:11,210 - web-api.users - INFO - Created user 43 after 1 failed attempt";
    assert_eq!(
        enrich(&default_rules(), "application.log", line),
        json!({
            "timestamp": "2026-11-22 10:32:11,210",
            "logger": "web-api.users",
            "component": "web-api.users",
            "message": "Created user 43 after 1 failed attempt",
            "log_category": "application",
            "log_level": "INFO",
        })
    );
}

#[test]
fn application_plain_text_gets_level_from_keywords() {
    let line = "Deprecated setting DB_POOL_SIZE, use DATABASE_POOL_SIZE";
    assert_eq!(
        enrich(&default_rules(), "application.log", line),
        json!({
            "message": "Deprecated setting DB_POOL_SIZE, use DATABASE_POOL_SIZE",
            "component": "application",
            "log_category": "application",
            "log_level": "WARNING",
        })
    );
}

#[test]
fn application_keywords_choose_level_in_order() {
    let rules = default_rules();
    for (message, level) in [
        ("Unhandled exception in worker thread", "ERROR"),
        ("Payment failed for order 17", "ERROR"),
        ("warn: cache nearly full", "WARNING"),
        ("Debug snapshot written", "DEBUG"),
        ("trace id=abc", "DEBUG"),
        ("Starting background scheduler", "INFO"),
    ] {
        let line = format!("2026-11-22 10:33:00,000 - {message}");
        let out = enrich(&rules, "app-main.log", &line);
        assert_eq!(out["log_level"], level, "{message}");
        assert_eq!(out["message"], message);
        assert_eq!(out["timestamp"], "2026-11-22 10:33:00,000");
        assert!(out.get("line").is_none(), "{out}");
    }
}

fn database(line_json: &str, source: &str) -> Value {
    let line = format!("2026-11-22 10:34:00,500 - {line_json}");
    enrich(&default_rules(), source, &line)
}

#[test]
fn database_query_completed_slow() {
    assert_eq!(
        database(
            r#"{"event":"query_completed","query_id":"q-000123","operation":"SELECT","table":"orders","execution_time_ms":1532.8,"rows_affected":17,"connection_id":3}"#,
            "database-queries.log"
        ),
        json!({
            "timestamp": "2026-11-22 10:34:00,500",
            "event": "query_completed",
            "query_id": "q-000123",
            "operation": "SELECT",
            "table": "orders",
            "execution_time_ms": 1532.8,
            "rows_affected": 17,
            "connection_id": 3,
            "performance_category": "slow",
            "log_category": "database",
            "log_level": "INFO",
        })
    );
}

#[test]
fn database_query_completed_very_slow_is_warning() {
    assert_eq!(
        database(
            r#"{"event":"query_completed","query_id":"q-000124","operation":"SELECT","table":"events","execution_time_ms":7201.4,"rows_affected":1,"connection_id":5}"#,
            "database-queries.log"
        ),
        json!({
            "timestamp": "2026-11-22 10:34:00,500",
            "event": "query_completed",
            "query_id": "q-000124",
            "operation": "SELECT",
            "table": "events",
            "execution_time_ms": 7201.4,
            "rows_affected": 1,
            "connection_id": 5,
            "performance_category": "very_slow",
            "log_category": "database",
            "log_level": "WARNING",
        })
    );
}

#[test]
fn database_query_completed_fast_and_normal() {
    assert_eq!(
        database(
            r#"{"event":"query_completed","query_id":"q-000125","operation":"INSERT","table":"users","execution_time_ms":12.5,"rows_affected":1,"connection_id":1}"#,
            "database-queries.log"
        ),
        json!({
            "timestamp": "2026-11-22 10:34:00,500",
            "event": "query_completed",
            "query_id": "q-000125",
            "operation": "INSERT",
            "table": "users",
            "execution_time_ms": 12.5,
            "rows_affected": 1,
            "connection_id": 1,
            "performance_category": "fast",
            "log_category": "database",
            "log_level": "INFO",
        })
    );
    let normal = database(
        r#"{"event":"query_metrics","query_id":"q-000126","execution_time_ms":250,"rows_affected":1,"rows_scanned":900,"cache_hit":false}"#,
        "database-performance.log",
    );
    assert_eq!(normal["performance_category"], "normal");
    assert_eq!(normal["log_level"], "INFO");
}

#[test]
fn database_query_failed_is_error_even_when_slow() {
    assert_eq!(
        database(
            r#"{"event":"query_failed","query_id":"q-000127","operation":"UPDATE","table":"accounts","execution_time_ms":6120.0,"error":"canceling statement due to statement timeout","connection_id":7}"#,
            "database-queries.log"
        ),
        json!({
            "timestamp": "2026-11-22 10:34:00,500",
            "event": "query_failed",
            "query_id": "q-000127",
            "operation": "UPDATE",
            "table": "accounts",
            "execution_time_ms": 6120.0,
            "error": "canceling statement due to statement timeout",
            "connection_id": 7,
            "performance_category": "very_slow",
            "log_category": "database",
            "log_level": "ERROR",
        })
    );
}

#[test]
fn database_pool_status_has_no_performance_category() {
    assert_eq!(
        database(
            r#"{"event":"pool_status","active_connections":4,"idle_connections":6,"max_connections":10,"wait_queue":0}"#,
            "/logs/database-performance.log"
        ),
        json!({
            "timestamp": "2026-11-22 10:34:00,500",
            "event": "pool_status",
            "active_connections": 4,
            "idle_connections": 6,
            "max_connections": 10,
            "wait_queue": 0,
            "log_category": "database",
            "log_level": "INFO",
        })
    );
}

#[test]
fn job_execution_completed_and_failed() {
    let rules = default_rules();
    let completed = r#"2026-11-22 10:35:12,044 - {"event":"job_completed","job_id":"job-000042","job_type":"email_notification","worker_id":2,"status":"completed","duration_ms":5321}"#;
    assert_eq!(
        enrich(&rules, "job-execution.log", completed),
        json!({
            "timestamp": "2026-11-22 10:35:12,044",
            "event": "job_completed",
            "job_id": "job-000042",
            "job_type": "email_notification",
            "worker_id": 2,
            "status": "completed",
            "duration_ms": 5321,
            "log_category": "job",
            "log_level": "INFO",
        })
    );
    let failed = r#"2026-11-22 10:35:13,871 - {"event":"job_failed","job_id":"job-000043","job_type":"report_generation","worker_id":1,"status":"failed","error":"Query timeout while aggregating report data","duration_ms":30412}"#;
    assert_eq!(
        enrich(&rules, "job-execution.log", failed),
        json!({
            "timestamp": "2026-11-22 10:35:13,871",
            "event": "job_failed",
            "job_id": "job-000043",
            "job_type": "report_generation",
            "worker_id": 1,
            "status": "failed",
            "error": "Query timeout while aggregating report data",
            "duration_ms": 30412,
            "log_category": "job",
            "log_level": "ERROR",
        })
    );
    let error = r#"2026-11-22 10:35:14,000 - {"event":"job_failed","job_id":"job-000044","status":"ERROR"}"#;
    assert_eq!(
        enrich(&rules, "job-execution.log", error)["log_level"],
        "ERROR"
    );
    let step = r#"2026-11-22 10:35:14,100 - {"event":"job_step","job_id":"job-000045","step":1,"step_name":"validate","progress_percent":25,"status":"running"}"#;
    assert_eq!(
        enrich(&rules, "job-execution.log", step)["log_level"],
        "INFO"
    );
}

#[test]
fn job_metrics() {
    let line = r#"2026-11-22 10:36:00,000 - {"event":"job_metrics","job_id":"job-000042","job_type":"email_notification","duration_ms":5321,"memory_mb":48.5,"cpu_percent":12.25}"#;
    assert_eq!(
        enrich(&default_rules(), "job-metrics.log", line),
        json!({
            "timestamp": "2026-11-22 10:36:00,000",
            "event": "job_metrics",
            "job_id": "job-000042",
            "job_type": "email_notification",
            "duration_ms": 5321,
            "memory_mb": 48.5,
            "cpu_percent": 12.25,
            "log_category": "job",
            "log_level": "INFO",
        })
    );
}

// --- Default rules: the edges. ---

#[test]
fn unmatched_source_gets_unknown_category_and_default_level() {
    let line = r#"2026-11-22 10:37:00,000 - {"event":"cache_flush","keys":12}"#;
    assert_eq!(
        enrich(&default_rules(), "/logs/other.log", line),
        json!({
            "timestamp": "2026-11-22 10:37:00,000",
            "event": "cache_flush",
            "keys": 12,
            "log_category": "unknown",
            "log_level": "INFO",
        })
    );
    let rules = default_rules();
    assert!(rules.rules_for("/logs/other.log").is_empty());
    assert!(!rules.rules_for("/logs/access.log").is_empty());
}

#[test]
fn malformed_json_remainder_keeps_line_and_sets_processing_error() {
    let line = r#"2026-11-22 10:30:45,123 - {"type":"response","status_code":500"#;
    let mut out = record(line);
    default_rules().apply("access.log", &mut out);
    let error = out
        .remove("processing_error")
        .expect("a processing_error is set");
    let error = error.as_str().expect("processing_error is a string");
    assert!(
        error.starts_with("common[2] (json): cannot decode `rest` as JSON: EOF while parsing"),
        "{error}"
    );
    assert_eq!(
        Value::Object(out.into_map()),
        json!({
            "line": line,
            "timestamp": "2026-11-22 10:30:45,123",
            "log_category": "access",
            "log_level": "INFO",
        })
    );
}

#[test]
fn too_long_line_is_kept_whole_flagged_and_categorised() {
    let rules = default_rules();
    let line = format!(
        r#"2026-11-22 10:30:45,123 - {{"type":"request","path":"/{}"}}"#,
        "a".repeat(70_000)
    );
    assert_eq!(
        enrich(&rules, "access.log", &line),
        json!({
            "line": line,
            "line_too_long": true,
            "log_category": "access",
            "log_level": "INFO",
        })
    );
    assert_eq!(
        enrich(&rules, "error.log", &line),
        json!({
            "line": line,
            "line_too_long": true,
            "severity": "high",
            "error_type": "unknown",
            "log_category": "error",
            "log_level": "ERROR",
            "matched_alerts": ["WebApiErrorBurst"],
        })
    );
}

#[test]
fn processor_fields_survive_and_colliding_payload_keys_are_kept_aside() {
    let mut out = record(
        r#"2026-11-22 10:30:45,123 - {"id":"spoofed","timestamp":"1700000000","method":"GET","path":"/"}"#,
    );
    out.insert("id".to_owned(), json!("c0ffee:42"));
    out.insert("source_file".to_owned(), json!("access.log"));
    default_rules().apply("access.log", &mut out);
    assert_eq!(
        Value::Object(out.into_map()),
        json!({
            "id": "c0ffee:42",
            "source_file": "access.log",
            "timestamp": "2026-11-22 10:30:45,123",
            "json_id": "spoofed",
            "json_timestamp": "1700000000",
            "method": "GET",
            "path": "/",
            "endpoint": "/",
            "log_category": "access",
            "log_level": "INFO",
        })
    );
}

#[test]
fn json_payload_level_is_normalised_into_log_level() {
    let line = r#"2026-11-22 10:30:45,123 - {"level":"warning","msg":"slow"}"#;
    let out = enrich(&default_rules(), "other.log", line);
    assert_eq!(out["log_level"], "WARNING");
    assert!(out.get("level").is_none(), "{out}");
}

#[test]
fn apply_never_panics_on_odd_records() {
    let rules = default_rules();
    let mut no_line = Fields::new();
    rules.apply("access.log", &mut no_line);
    assert_eq!(
        Value::Object(no_line.into_map()),
        json!({"log_category": "access", "log_level": "INFO"})
    );

    let mut number_line = Fields::new();
    number_line.insert("line".to_owned(), json!(7));
    rules.apply("", &mut number_line);
    assert_eq!(
        Value::Object(number_line.into_map()),
        json!({"message": 7, "log_category": "unknown", "log_level": "INFO"})
    );

    for line in [
        "",
        " - ",
        "2026-11-22 10:30:45,123 - ",
        "2026-11-22 10:30:45,123 - {",
        "\u{0}\u{fffd}",
    ] {
        let out = enrich(&rules, "app.log", line);
        assert_eq!(out["log_category"], "application", "{line:?}");
    }
}

// --- Generic steps and matching, on small rule sets. ---

#[test]
fn every_matching_rule_runs_in_order_and_the_last_category_wins() {
    let rules = yaml(
        r#"
version: 1
default_level: NOTICE
rules:
  - name: first
    files: ["*.log"]
    category: any-log
    steps:
      - set: {field: trail, value: [first]}
  - name: second
    files_regex: '^web-'
    category: web
    steps:
      - set: {field: trail, value: [first, second]}
  - name: third
    files: ["web-*.log"]
    steps:
      - set: {field: third, value: {nested: true}}
"#,
    );
    assert_eq!(
        enrich(&rules, "/logs/web-1.log", "x"),
        json!({
            "line": "x",
            "trail": ["first", "second"],
            "third": {"nested": true},
            "log_category": "web",
            "log_level": "NOTICE",
        })
    );
    let matched = rules.rules_for("web-1.log");
    let mut again = record("x");
    rules.apply_matched(&matched, &mut again);
    assert_eq!(
        Value::Object(again.into_map()),
        enrich(&rules, "web-1.log", "x")
    );
    assert_eq!(
        enrich(&rules, "web-1.txt", "x")["log_category"],
        "web",
        "files_regex alone matches"
    );
    assert_eq!(
        rules.rule_names().collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
}

#[test]
fn step_errors_accumulate_and_later_steps_still_run() {
    let rules = yaml(
        r#"
version: 1
common:
  - regex: {field: line, pattern: '^(?P<a>\d+)$', on_mismatch: error}
  - json: {field: line}
  - set: {field: after, value: 1}
"#,
    );
    assert_eq!(
        enrich(&rules, "x.log", "[1, 2]"),
        json!({
            "line": "[1, 2]",
            "processing_error": "common[0] (regex): `line` does not match the pattern; \
                                 common[1] (json): `line` holds a JSON array, not an object",
            "after": 1,
            "log_category": "unknown",
            "log_level": "INFO",
        })
    );
}

#[test]
fn a_json_payload_merges_as_an_object_would_whatever_its_key_order_and_repeats() {
    let rules = yaml(
        r#"
version: 1
common:
  - set: {field: id, value: kept}
  - json: {field: line}
"#,
    );
    // Members merge in key order, as from a map: `id` (taken) goes to `json_id` first, so the
    // payload's own `json_id`, though first in the text, is then the one pushed aside. Of the
    // two `b`, the later wins.
    let line = r#"{"json_id":2,"b":1,"id":"x","b":{"c":[1,2.5,null]},"a":true}"#;
    assert_eq!(
        enrich(&rules, "x.log", line),
        json!({
            "line": line,
            "id": "kept",
            "json_id": "x",
            "json_json_id": 2,
            "a": true,
            "b": {"c": [1, 2.5, null]},
            "log_category": "unknown",
            "log_level": "INFO",
        })
    );
    // Members that repeat without colliding with a field: the later wins.
    let line = r#"{"z":0,"b":1,"a":2,"b":3}"#;
    assert_eq!(
        enrich(&rules, "x.log", line),
        json!({
            "line": line,
            "id": "kept",
            "z": 0,
            "a": 2,
            "b": 3,
            "log_category": "unknown",
            "log_level": "INFO",
        })
    );
    let overwriting = yaml(
        r#"
version: 1
common:
  - set: {field: id, value: kept}
  - json: {field: line, overwrite: true}
"#,
    );
    let line = r#"{"id":1,"b":1,"id":2,"b":3}"#;
    assert_eq!(
        enrich(&overwriting, "x.log", line),
        json!({"line": line, "id": 2, "b": 3, "log_category": "unknown", "log_level": "INFO"})
    );
    for (text, kind) in [
        ("null", "null"),
        ("true", "boolean"),
        ("-3", "number"),
        ("1.5", "number"),
        (r#""s""#, "string"),
        ("[{}]", "array"),
    ] {
        let out = enrich(&rules, "x.log", text);
        assert_eq!(
            out["processing_error"],
            format!("common[1] (json): `line` holds a JSON {kind}, not an object"),
            "{text}"
        );
    }
    let out = enrich(&rules, "x.log", r#"{"a":1} x"#);
    assert!(
        out["processing_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot decode `line` as JSON: trailing characters")),
        "{out}"
    );
    assert!(
        out.get("a").is_none(),
        "nothing merged from a bad payload: {out}"
    );
}

#[test]
fn conditions_cover_every_test() {
    let rules = yaml(
        r#"
version: 1
common:
  - derive:
      field: out
      from: v
      cases:
        - {when: {exists: false}, value: absent}
        - {when: {range: [10, 20]}, value: teens}
        - {when: {gt: 100, lte: 200}, value: hundreds}
        - {when: {equals: [Yes, "on"], case_insensitive: true}, value: truthy}
        - {when: {equals: [true, 7.5, yes]}, value: exact}
        - {when: {keywords: [boom, Crash]}, value: keyword}
        - {when: {matches: '^v\d+$'}, value: version}
        - {when: {any: [{lt: -5}, {field: w, exists: true}]}, value: any}
        - {when: {not: {gte: 0}}, value: negative-or-text}
      default: other
"#,
    );
    let derive = |v: Option<Value>, w: Option<Value>| {
        let mut record = Fields::new();
        if let Some(v) = v {
            record.insert("v".to_owned(), v);
        }
        if let Some(w) = w {
            record.insert("w".to_owned(), w);
        }
        rules.apply("x", &mut record);
        record["out"].clone()
    };
    assert_eq!(derive(None, None), "absent");
    assert_eq!(derive(Some(Value::Null), None), "absent");
    assert_eq!(derive(Some(json!(10)), None), "teens");
    assert_eq!(derive(Some(json!("19.5")), None), "teens");
    assert_eq!(derive(Some(json!(20)), None), "other");
    assert_eq!(derive(Some(json!(200)), None), "hundreds");
    assert_eq!(derive(Some(json!("ON")), None), "truthy");
    assert_eq!(
        derive(Some(json!("yes")), None),
        "truthy",
        "YAML `Yes` stays a word"
    );
    assert_eq!(derive(Some(json!("true")), None), "exact");
    assert_eq!(derive(Some(json!(true)), None), "exact");
    assert_eq!(derive(Some(json!(7.5)), None), "exact");
    assert_eq!(derive(Some(json!("Kernel CRASHED")), None), "keyword");
    assert_eq!(derive(Some(json!("v12")), None), "version");
    assert_eq!(derive(Some(json!(-9)), None), "any");
    assert_eq!(derive(Some(json!(5)), Some(json!(0))), "any");
    assert_eq!(derive(Some(json!("text")), None), "negative-or-text");
    assert_eq!(derive(Some(json!(-1)), None), "negative-or-text");
    assert_eq!(derive(Some(json!(50)), None), "other");
    assert_eq!(derive(Some(json!({"a": 1})), None), "negative-or-text");
}

#[test]
fn set_rename_remove_case_steps_and_only_if_missing() {
    let rules = yaml(
        r#"
version: 1
common:
  - set: {field: kept, value: new, only_if_missing: true}
  - set: {field: fresh, value: 3, only_if_missing: true}
  - rename: {from: lvl, to: log_level}
  - rename: {from: who, to: user, keep_source: true}
  - rename: {from: a, to: kept, only_if_missing: true}
  - lowercase: {field: log_level}
  - uppercase: {field: name}
  - remove: {fields: [junk, not_there]}
  - set: {field: skipped, value: 1, when: {field: user, equals: [nobody]}}
  - set: {field: ran, value: 1, when: {field: user, equals: [bob]}}
"#,
    );
    let mut out = Fields::new();
    for (key, value) in [
        ("kept", json!("old")),
        ("lvl", json!("WARN")),
        ("who", json!("bob")),
        ("a", json!("stays")),
        ("name", json!("straße")),
        ("junk", json!(1)),
    ] {
        out.insert(key.to_owned(), value);
    }
    rules.apply("x.log", &mut out);
    assert_eq!(
        Value::Object(out.into_map()),
        json!({
            "kept": "old",
            "fresh": 3,
            "log_level": "warn",
            "who": "bob",
            "user": "bob",
            "a": "stays",
            "name": "STRASSE",
            "ran": 1,
            "log_category": "unknown",
        })
    );
}

#[test]
fn regex_and_json_options() {
    let rules = yaml(
        r#"
version: 1
common:
  - regex: {field: line, pattern: '^(?P<line>\w+)(?: (?P<extra>.*))?$'}
  - json: {field: payload, into: data, remove_source: true}
  - json: {field: other, overwrite: true}
  - regex: {field: path, pattern: '^(?P<dir>/\w+)', remove_source: true}
"#,
    );
    let mut out = record("first");
    out.insert("payload".to_owned(), json!(r#" {"a": [1, 2]}"#));
    out.insert("other".to_owned(), json!(r#"{"line": "replaced"}"#));
    out.insert("path".to_owned(), json!("/api/v1"));
    rules.apply("x", &mut out);
    assert_eq!(
        Value::Object(out.into_map()),
        json!({
            "line": "replaced",
            "data": {"a": [1, 2]},
            "other": r#"{"line": "replaced"}"#,
            "dir": "/api",
            "log_category": "unknown",
            "log_level": "INFO",
        })
    );
    // A group named like its source replaces the source only when it takes part.
    let rules =
        yaml("version: 1\ncommon:\n  - regex: {field: line, pattern: '^(?:x(?P<line>\\d+))?'}\n");
    assert_eq!(enrich(&rules, "x", "x42")["line"], "42");
    assert_eq!(enrich(&rules, "x", "y42")["line"], "y42");
}

#[test]
fn memo_is_bounded_and_rules_set_is_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<RuleSet>();
    let rules = default_rules();
    for i in 0..(super::MEMO_MAX_SOURCES + 10) {
        let mut out = Fields::new();
        rules.apply(&format!("job-{i}.log"), &mut out);
        assert_eq!(out["log_category"], "job");
    }
    let memo = rules.memo.lock();
    assert!(memo.len() <= super::MEMO_MAX_SOURCES, "{}", memo.len());
}

// --- Loading and config errors. ---

#[test]
fn toml_rules_load_like_the_equivalent_yaml() {
    let toml_text = r#"
version = 1
max_line_bytes = 1000

[[common]]
regex = { field = "line", pattern = '^(?P<timestamp>\S+ \S+) - (?P<rest>.*)$', remove_source = true }

[[common]]
json = { field = "rest", remove_source = true, when_starts_with = "{" }

[[rules]]
name = "job"
files = ["job-*.log"]
category = "job"

[[rules.steps]]
derive = { field = "log_level", from = "status", cases = [ { when = { equals = ["failed"] }, value = "ERROR" } ] }
"#;
    let yaml_text = r#"
version: 1
max_line_bytes: 1000
common:
  - regex: {field: line, pattern: '^(?P<timestamp>\S+ \S+) - (?P<rest>.*)$', remove_source: true}
  - json: {field: rest, remove_source: true, when_starts_with: "{"}
rules:
  - name: job
    files: ["job-*.log"]
    category: job
    steps:
      - derive: {field: log_level, from: status, cases: [{when: {equals: [failed]}, value: ERROR}]}
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let toml_path = dir.path().join("rules.toml");
    std::fs::write(&toml_path, toml_text).expect("write rules.toml");
    let from_toml = RuleSet::load(&toml_path).unwrap_or_else(|error| panic!("{error}"));
    let from_yaml = yaml(yaml_text);
    let line = r#"2026-11-22 10:35:13,871 - {"job_id":"job-1","status":"failed"}"#;
    let expected = json!({
        "timestamp": "2026-11-22 10:35:13,871",
        "job_id": "job-1",
        "status": "failed",
        "log_category": "job",
        "log_level": "ERROR",
    });
    assert_eq!(enrich(&from_toml, "job-x.log", line), expected);
    assert_eq!(enrich(&from_yaml, "job-x.log", line), expected);
    assert_eq!(from_toml.origin(), toml_path.display().to_string());
}

#[test]
fn toml_errors_carry_file_line_and_column() {
    let error = RuleSet::from_toml_str(
        "version = 1\n[[rules]]\nname = \"a\"\nfiles = [\"a.log\"]\ncolour = \"red\"\n",
        "rules.toml",
    )
    .expect_err("unknown key is rejected");
    assert!(matches!(error, RulesError::Parse { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("rules.toml:5:1: unknown field `colour`"),
        "{error}"
    );
}

#[test]
fn load_names_the_file_when_it_cannot_be_read_or_has_no_known_extension() {
    let error =
        RuleSet::load(Path::new("/nonexistent/rules.yaml")).expect_err("missing file is rejected");
    assert!(matches!(error, RulesError::Read { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "cannot read rules file /nonexistent/rules.yaml"
    );

    let error =
        RuleSet::load(Path::new("/etc/rules.json")).expect_err("json extension is rejected");
    assert!(
        matches!(error, RulesError::UnknownFormat { .. }),
        "{error:?}"
    );
    assert!(error
        .to_string()
        .starts_with("rules file /etc/rules.json: unknown format"));
}

#[test]
fn unknown_key_is_reported_with_line_and_column() {
    let error =
        yaml_error("version: 1\nrules:\n  - name: a\n    colour: red\n    files: [a.log]\n");
    assert!(matches!(error, RulesError::Parse { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "rules.yaml:4:5: unknown field `colour`, expected one of name, files, files_regex, \
         category, steps, multiline"
    );
    let error = yaml_error("version: 1\ncommon:\n  - set: {field: a, value: 1, typo: 2}\n");
    assert!(
        error
            .to_string()
            .starts_with("rules.yaml:3:31: unknown field `typo`"),
        "{error}"
    );
    let error = yaml_error("version: 1\ncommon:\n  - sett: {field: a}\n");
    assert!(
        error
            .to_string()
            .starts_with("rules.yaml:3:5: unknown variant `sett`"),
        "{error}"
    );
}

#[test]
fn yaml_syntax_error_has_line_number() {
    let error = yaml_error("version: 1\nrules:\n  - name: a\n   files: [\n");
    assert!(
        matches!(
            error,
            RulesError::Parse {
                position: Some((4, _)),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().starts_with("rules.yaml:4:"), "{error}");
}

#[test]
fn bad_regex_names_rule_and_field() {
    let error = yaml_error(
        "version: 1\nrules:\n  - name: access\n    files: [a.log]\n    steps:\n      - set: {field: a, value: 1}\n      - regex: {field: line, pattern: '(?P<x>'}\n",
    );
    assert!(matches!(error, RulesError::Regex { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        r#"rules.yaml: rule 1 ("access"): steps[1].regex.pattern: invalid regex"#
    );
    assert!(
        chain(&error).contains("unclosed group"),
        "{}",
        chain(&error)
    );

    let error = yaml_error(
        "version: 1\nrules:\n  - name: a\n    files: [a.log]\n  - name: b\n    files_regex: '['\n",
    );
    assert_eq!(
        error.to_string(),
        r#"rules.yaml: rule 2 ("b"): files_regex: invalid regex"#
    );

    let error = yaml_error(
        "version: 1\ncommon:\n  - derive: {field: a, from: b, cases: [{when: {matches: ')'}, value: 1}]}\n",
    );
    assert_eq!(
        error.to_string(),
        "rules.yaml: common[0].derive.cases[0].when.matches: invalid regex"
    );

    let error =
        yaml_error("version: 1\ncommon:\n  - regex: {field: line, pattern: '\\w{1000}{1000}'}\n");
    assert!(
        matches!(error, RulesError::Regex { .. }),
        "size limit applies: {error:?}"
    );
}

#[test]
fn bad_glob_names_rule_and_field() {
    let error = yaml_error(
        "version: 1\nrules:\n  - name: access\n    files: ['access*.log', 'access[.log']\n",
    );
    assert!(matches!(error, RulesError::Glob { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        r#"rules.yaml: rule 1 ("access"): files[1]: invalid glob"#
    );
    let error = yaml_error("version: 1\nrules:\n  - name: access\n    files: ['/logs/*.log']\n");
    assert!(matches!(error, RulesError::Invalid { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with(r#"rules.yaml: rule 1 ("access"): files[0]: "/logs/*.log": globs match the file name only"#),
        "{error}"
    );
}

#[test]
fn missing_and_duplicate_names_are_rejected() {
    let error =
        yaml_error("version: 1\nrules:\n  - name: a\n    files: [a.log]\n  - files: [b.log]\n");
    assert!(matches!(error, RulesError::MissingName { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "rules.yaml: rule 2: name: missing: every rule needs a unique name"
    );
    let error = yaml_error(
        "version: 1\nrules:\n  - name: a\n    files: [a.log]\n  - name: a\n    files: [b.log]\n",
    );
    assert!(
        matches!(error, RulesError::DuplicateName { first: 1, .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        r#"rules.yaml: rule 2 ("a"): name: "a" is already the name of rule 1"#
    );
}

#[test]
fn version_must_be_one() {
    let error = yaml_error("version: 2\nrules: []\nnew_feature: true\n");
    assert!(
        matches!(error, RulesError::Version { found: Some(2), .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "rules.yaml: version: unsupported version 2; this build reads version 1"
    );
    let error = yaml_error("rules: []\n");
    assert_eq!(
        error.to_string(),
        "rules.yaml: version: missing; add `version: 1`"
    );
    let error = yaml_error("");
    assert!(
        matches!(error, RulesError::Version { found: None, .. }),
        "{error:?}"
    );
}

#[test]
fn invalid_values_name_the_field() {
    for (text, message) in [
        (
            "version: 1\nmax_line_bytes: 0\n",
            "rules.yaml: max_line_bytes: must be at least 1",
        ),
        (
            "version: 1\nrules:\n  - name: a\n",
            r#"rules.yaml: rule 1 ("a"): files: matches no file: give `files` globs, `files_regex`, or both"#,
        ),
        (
            "version: 1\nrules:\n  - name: a\n    files: [a.log]\n    steps:\n      - derive: {field: x, from: y, cases: [{when: {range: [5, 1]}, value: 1}]}\n",
            r#"rules.yaml: rule 1 ("a"): steps[0].derive.cases[0].when.range: [5, 1] is not a range: need finite low < high"#,
        ),
        (
            "version: 1\ncommon:\n  - derive: {field: x, cases: [{when: {gt: 1}, value: 1}]}\n",
            "rules.yaml: common[0].derive.cases[0].when.gt: no field to test: set `from` on the derive step or `field` in this condition",
        ),
        (
            "version: 1\ncommon:\n  - set: {field: x, value: 1, when: {exists: true}}\n",
            "rules.yaml: common[0].set.when.exists: no field to test: add `field:` to this condition",
        ),
        (
            "version: 1\ncommon:\n  - set: {field: x, value: 1, when: {field: y}}\n",
            "rules.yaml: common[0].set.when: tests nothing: give at least one of exists, gt, gte, lt, lte, range, equals, keywords, matches, all, any, not",
        ),
        (
            "version: 1\ncommon:\n  - remove: {fields: []}\n",
            "rules.yaml: common[0].remove.fields: must list at least one field",
        ),
        (
            "version: 1\ncommon:\n  - rename: {from: a, to: a}\n",
            "rules.yaml: common[0].rename.to: is the same field as `from`",
        ),
        (
            "version: 1\ncommon:\n  - derive: {field: x, from: y, cases: [{when: {keywords: [a, '']}, value: 1}]}\n",
            "rules.yaml: common[0].derive.cases[0].when.keywords[1]: an empty keyword would match everything",
        ),
        (
            "version: 1\ncommon:\n  - derive: {field: x, from: y, cases: [{when: {equals: []}, value: 1}]}\n",
            "rules.yaml: common[0].derive.cases[0].when.equals: must list at least one value",
        ),
        (
            "version: 1\ncommon:\n  - set: {field: '', value: 1}\n",
            "rules.yaml: common[0].set.field: must not be empty",
        ),
    ] {
        let error = yaml_error(text);
        assert!(matches!(error, RulesError::Invalid { .. }), "{error:?}");
        assert_eq!(error.to_string(), message);
    }
}

// --- Issue #5: the actions operators use, each on a small rule set. ---

use super::{Joiner, Outcome, Verdict};

/// Applies `rules` and returns the verdict's drop reason, if any, with the record.
fn verdict(rules: &RuleSet, source: &str, record: &mut Fields) -> Option<String> {
    match rules.apply(source, record) {
        Verdict::Keep => None,
        Verdict::Drop(reason) => Some(reason.to_owned()),
    }
}

#[test]
fn logfmt_parses_pairs_quotes_and_flags() {
    let rules = yaml(
        "version: 1\ncommon:\n  - logfmt: {field: line, remove_source: true}\n  - logfmt: {field: kv, into: kv_fields, pair_separator: ';', value_separator: ':'}\n",
    );
    let out = enrich(
        &rules,
        "a.log",
        r#"level=warn msg="disk \"almost\" full" path=/var dry_run free=12%"#,
    );
    assert_eq!(out["level"], "warn");
    assert_eq!(out["msg"], "disk \"almost\" full");
    assert_eq!(out["path"], "/var");
    assert_eq!(out["dry_run"], true);
    assert_eq!(out["free"], "12%");
    assert!(out.get("line").is_none());

    let mut record = record("x");
    record.insert("kv", json!("a:1;;b:two"));
    rules.apply("a.log", &mut record);
    assert_eq!(record["kv_fields"], json!({"a": "1", "b": "two"}));
}

#[test]
fn timestamp_step_normalises_with_timezone_and_reports_misfits() {
    let rules = yaml(
        "version: 1\ncommon:\n  - timestamp: {field: asctime, layouts: [python], timezone: '+01:00', keep_original: time_text}\n  - timestamp: {field: epoch, target: at, layouts: [epoch_millis]}\n",
    );
    let mut r = record("x");
    r.insert("asctime", json!("2026-11-22 11:30:45,123"));
    r.insert("epoch", json!(1795343445123u64));
    rules.apply("a.log", &mut r);
    assert_eq!(r["timestamp"], "2026-11-22T10:30:45.123Z");
    assert_eq!(r["time_text"], "2026-11-22 11:30:45,123");
    assert_eq!(r["at"], "2026-11-22T10:30:45.123Z");

    let mut r = record("x");
    r.insert("asctime", json!("yesterday"));
    rules.apply("a.log", &mut r);
    assert!(r.get("timestamp").is_none());
    assert!(r["processing_error"]
        .as_str()
        .unwrap()
        .contains("`asctime` (\"yesterday\") is in none of the layouts"));
}

#[test]
fn convert_types_fields_and_keeps_what_does_not_convert() {
    let rules = yaml(
        "version: 1\ncommon:\n  - convert: {fields: {a: int, b: float, c: bool, d: string, e: timestamp, f: int}}\n",
    );
    let mut r = record("x");
    for (k, v) in [
        ("a", json!("42")),
        ("b", json!("2.5")),
        ("c", json!("yes")),
        ("d", json!(7)),
        ("e", json!("22/Nov/2026:10:30:45 +0000")),
        ("f", json!("4x")),
    ] {
        r.insert(k, v);
    }
    rules.apply("a.log", &mut r);
    assert_eq!(
        (&r["a"], &r["b"], &r["c"], &r["d"], &r["e"], &r["f"]),
        (
            &json!(42),
            &json!(2.5),
            &json!(true),
            &json!("7"),
            &json!("2026-11-22T10:30:45.000Z"),
            &json!("4x")
        )
    );
    assert!(r["processing_error"]
        .as_str()
        .unwrap()
        .contains("cannot convert `f` (\"4x\") to int"));
}

#[test]
fn set_from_env_and_templates_and_keep_only() {
    std::env::set_var("RULES_TEST_REGION", "eu-1");
    std::env::set_var("POD_NAME", "web-7f9");
    let rules = yaml(
        "version: 1\ncommon:\n  - set: {field: region, env: RULES_TEST_REGION}\n  - set: {field: nothing, env: RULES_TEST_NOT_SET}\n  - set: {field: where, template: '{{pod}}/{{source_file}}:{{n}} {{env.RULES_TEST_REGION}}'}\n  - keep: {fields: [region, where, nothing]}\n",
    );
    let mut r = record("x");
    r.insert("id", json!("1-0"));
    r.insert("source_file", json!("a.log"));
    r.insert("n", json!(3));
    r.insert("noise", json!(true));
    rules.apply("a.log", &mut r);
    assert_eq!(
        Value::Object(r.into_map()),
        json!({
            "id": "1-0",
            "source_file": "a.log",
            "region": "eu-1",
            "where": "web-7f9/a.log:3 eu-1",
            "log_category": "unknown",
            "log_level": "INFO",
        })
    );
}

#[test]
fn filter_sample_and_rate_limit_drop_with_their_reasons() {
    let rules = yaml(
        "version: 1\nrules:\n  - name: web\n    files: ['web*.log']\n    steps:\n      - filter: {drop: {field: path, equals: [/healthz]}, reason: health_checks}\n      - filter: {keep: {field: level, exists: true}}\n      - sample: {field: level, one_in_by_value: {DEBUG: 4}}\n  - name: burst\n    files: [burst.log]\n    steps:\n      - rate_limit: {records_per_second: 0.001, burst: 3}\n",
    );
    let mut r = record("x");
    r.insert("path", json!("/healthz"));
    r.insert("level", json!("INFO"));
    assert_eq!(
        verdict(&rules, "web.log", &mut r).as_deref(),
        Some("health_checks")
    );
    let mut r = record("x");
    assert_eq!(
        verdict(&rules, "web.log", &mut r).as_deref(),
        Some("filtered")
    );

    // 1 in 4 DEBUG records by id: the same ids give the same choice every time.
    let kept = |rules: &RuleSet| -> Vec<usize> {
        (0..400)
            .filter(|i| {
                let mut r = record("x");
                r.insert("id", json!(format!("00ab-{}", i * 100)));
                r.insert("level", json!("DEBUG"));
                verdict(rules, "web.log", &mut r).is_none()
            })
            .collect()
    };
    let first = kept(&rules);
    assert!((60..140).contains(&first.len()), "{}", first.len());
    assert_eq!(first, kept(&rules));
    let mut info = record("x");
    info.insert("level", json!("INFO"));
    assert_eq!(verdict(&rules, "web.log", &mut info), None);

    // A burst of 3, then (at 1 per 1000 s) nothing more: per source file.
    let passed = (0..10)
        .filter(|_| verdict(&rules, "burst.log", &mut record("x")).is_none())
        .count();
    assert_eq!(passed, 3);
    assert_eq!(
        verdict(&rules, "burst.log", &mut record("x")).as_deref(),
        Some("rate_limited")
    );
}

#[test]
fn categorize_by_file_name_first_match_wins_and_rule_category_wins_over_it() {
    let rules = yaml(
        "version: 1\nunknown_category: uncategorized\ncategorize:\n  - {category: server, files: ['server-*']}\n  - {category: client, files: ['client-*']}\n  - {category: monitoring, files: ['*monitor*']}\n  - {category: error, files: ['*.err']}\n  - {category: slurm, files: ['slurm-*']}\nrules:\n  - name: special\n    files: [server-special.log]\n    category: special\n",
    );
    for (file, category) in [
        ("server-1.log", "server"),
        ("client-eu.log", "client"),
        ("server-monitor.log", "server"),
        ("disk-monitor.log", "monitoring"),
        ("db.err", "error"),
        ("slurm-1234.out", "slurm"),
        ("server-special.log", "special"),
        ("other.txt", "uncategorized"),
    ] {
        assert_eq!(
            enrich(&rules, file, "x")["log_category"],
            category,
            "{file}"
        );
    }
}

#[test]
fn redact_masks_chosen_fields_or_every_field() {
    let rules = yaml(
        "version: 1\nrules:\n  - name: some\n    files: [some.log]\n    steps:\n      - redact: {fields: [line], builtins: [email], mask: '***'}\n  - name: all\n    files: [all.log]\n    steps:\n      - redact: {builtins: [bearer_token], patterns: ['ssn=\\d{3}-\\d{2}-\\d{4}']}\n",
    );
    let mut r = record("mail a@b.io");
    r.insert("other", json!("c@d.io"));
    rules.apply("some.log", &mut r);
    assert_eq!(
        (&r["line"], &r["other"]),
        (&json!("mail ***"), &json!("c@d.io"))
    );
    let mut r = record("Authorization: Bearer abc.def");
    r.insert("note", json!("ssn=123-45-6789 ok"));
    rules.apply("all.log", &mut r);
    assert_eq!(r["line"], "Authorization: Bearer [REDACTED]");
    assert_eq!(r["note"], "[REDACTED] ok");
}

#[test]
fn multiline_presets_join_stack_traces_and_keep_the_first_id() {
    let rules = yaml(
        "version: 1\nrules:\n  - {name: py, files: [py.log], multiline: {preset: python}}\n  - {name: java, files: [java.log], multiline: {preset: java}}\n  - {name: go, files: [go.log], multiline: {preset: go}}\n  - {name: start, files: [s.log], multiline: {start: '^\\d{4}-'}}\n  - {name: indent, files: [i.log], multiline: {indented: true, max_lines: 3}}\n",
    );
    let run = |source: &str, lines: &[&str]| -> Vec<String> {
        let lines: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        rules
            .process_lines(source, &lines, false)
            .into_iter()
            .map(|(outcome, _)| match outcome {
                Outcome::Kept(r) => format!(
                    "{}|{}|{}",
                    r["id"].as_str().unwrap(),
                    r["line"].as_str().unwrap(),
                    r.get("stack_trace").and_then(Value::as_str).unwrap_or("-")
                ),
                Outcome::Dropped(reason) => reason,
            })
            .collect()
    };
    assert_eq!(
        run(
            "py.log",
            &[
                "2026-11-22 10:00:00,000 - app - ERROR - boom",
                "Traceback (most recent call last):",
                "  File \"x.py\", line 1, in <module>",
                "    f()",
                "ValueError: bad",
                "2026-11-22 10:00:01,000 - app - INFO - next",
            ]
        ),
        vec![
            "test-0|2026-11-22 10:00:00,000 - app - ERROR - boom|Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\n    f()\nValueError: bad".to_owned(),
            "test-139|2026-11-22 10:00:01,000 - app - INFO - next|-".to_owned(),
        ]
    );
    assert_eq!(
        run(
            "java.log",
            &[
                "ERROR request failed",
                "java.lang.IllegalStateException: x",
                "\tat a.B.c(B.java:1)",
                "Caused by: java.io.IOException: y",
                "\t... 3 more",
                "INFO ok",
            ]
        )
        .len(),
        3,
        "the exception line itself starts no group in Java's preset: it follows ERROR"
    );
    let go = run(
        "go.log",
        &[
            "panic: runtime error",
            "",
            "goroutine 1 [running]:",
            "main.main()",
            "\t/src/main.go:12 +0x1d",
            "exit status 2",
            "level=info msg=next",
        ],
    );
    assert_eq!(go.len(), 2, "{go:?}");
    assert!(go[0].starts_with("test-0|panic: runtime error|\ngoroutine 1"));
    assert!(go[0].ends_with("exit status 2"));
    assert_eq!(run("s.log", &["2026-1 a", "b", "c", "2026-2 d"]).len(), 2);
    // max_lines: 3 cuts a long indented block into records of at most three lines.
    assert_eq!(run("i.log", &["a", " 1", " 2", " 3", " 4"]).len(), 2);
}

/// Issue 14: a preset composes with the prefix parsing. The first line is parsed as any other
/// line (timestamp, logger, level from the layout, not from words of the trace) and the trace
/// is kept verbatim in a field of its own; `into: line` still gives the whole text in `line`.
#[test]
fn a_joined_trace_keeps_its_first_line_parsable_and_the_trace_apart() {
    let rules = yaml(
        "version: 1\ncommon:\n  - regex: {field: line, pattern: '^(?P<timestamp>\\S+ \\S+) - (?P<logger>\\S+) - (?P<log_level>[A-Z]+) - (?P<message>.*)$', remove_source: true}\nrules:\n  - {name: py, files: [py.log], multiline: {preset: python}}\n  - {name: whole, files: [whole.log], multiline: {preset: python, into: line}}\n  - {name: mine, files: [mine.log], multiline: {indented: true, into: frames}}\n",
    );
    let lines: Vec<String> = [
        "2026-11-22 10:00:00,000 - app - ERROR - Unhandled error",
        "Traceback (most recent call last):",
        "  File \"/srv/app.py\", line 12, in handle",
        "    return compute(x)",
        "",
        "During handling of the above exception, another exception occurred:",
        "KeyError: 'x'",
    ]
    .iter()
    .map(|l| l.to_string())
    .collect();
    let out = rules.process_lines("py.log", &lines, false);
    assert_eq!(out.len(), 1);
    let Outcome::Kept(r) = &out[0].0 else {
        panic!("dropped")
    };
    assert_eq!(r["timestamp"], "2026-11-22 10:00:00,000");
    assert_eq!(r["logger"], "app");
    assert_eq!(r["log_level"], "ERROR");
    assert_eq!(r["message"], "Unhandled error");
    assert_eq!(r["stack_trace"], lines[1..].join("\n"));
    assert!(
        r.get("line").is_none() && r.get("processing_error").is_none(),
        "{r:?}"
    );

    let out = rules.process_lines("whole.log", &lines, false);
    let Outcome::Kept(r) = &out[0].0 else {
        panic!("dropped")
    };
    assert_eq!(r["line"], lines.join("\n"), "into: line joins as before");
    assert!(r.get("stack_trace").is_none());

    let indented: Vec<String> = ["head", " a", " b"].iter().map(|l| l.to_string()).collect();
    let out = rules.process_lines("mine.log", &indented, false);
    let Outcome::Kept(r) = &out[0].0 else {
        panic!("dropped")
    };
    assert_eq!(
        (&r["line"], &r["frames"]),
        (&json!("head"), &json!(" a\n b"))
    );

    let bad = RuleSet::from_yaml_str(
        "version: 1\nrules:\n  - {name: a, files: [a.log], multiline: {indented: true, into: id}}\n",
        "r.yaml",
    )
    .expect_err("into: id");
    assert_eq!(
        bad.to_string(),
        r#"r.yaml: rule 1 ("a"): multiline.into: must name a field other than id and source_file"#
    );
}

#[test]
fn a_joiner_holds_one_group_per_source_and_times_out() {
    let rules = yaml("version: 1\nrules:\n  - {name: py, files: ['*.log'], multiline: {indented: true, flush_after_ms: 100}}\n");
    let mut joiner = Joiner::<u32>::new();
    let mut out = Vec::new();
    let t0 = std::time::Instant::now();
    for (key, offset, line, mark) in [
        ("a", 0, "A1", 1),
        ("b", 0, "B1", 2),
        ("a", 3, " A2", 3),
        ("b", 3, "B2", 4),
    ] {
        let mut r = record(line);
        r.insert("id", json!(format!("{key}-{offset}")));
        r.insert("source_file", json!(format!("{key}.log")));
        joiner.push(&rules, r, mark, t0, &mut |r| {
            out.push((
                r["source_file"].as_str().unwrap().to_owned(),
                r["line"].clone(),
            ))
        });
    }
    assert_eq!(out, vec![("b.log".to_owned(), json!("B1"))]);
    let pending: Vec<(String, u64, u32)> = joiner
        .pending()
        .map(|p| (p.key.to_owned(), p.offset, *p.mark))
        .collect();
    assert_eq!(pending, vec![("a".into(), 0, 1), ("b".into(), 3, 4)]);
    joiner.flush_idle(t0 + std::time::Duration::from_millis(50), &mut |_| {
        panic!("too early")
    });
    joiner.flush_idle(t0 + std::time::Duration::from_millis(100), &mut |r| {
        out.push(("".into(), r["line"].clone()))
    });
    assert!(joiner.is_empty());
    assert_eq!(out[1].1, json!("A1"));
}

/// Issue 11: a pushed record's service is not a file name. With rules that match every name
/// (a `*` glob with a category, a step and multiline joining), a pushed record gets none of
/// them: no joining, no rule's steps, the unknown category; the same record tailed gets all.
#[test]
fn a_pushed_record_matches_no_rule_whatever_its_service() {
    let rules = yaml("version: 1\nrules:\n  - {name: all, files: ['*'], files_regex: '.', category: file, multiline: {indented: true}, steps: [{set: {field: from_rule, value: true}}]}\n");
    let mut joiner = Joiner::<u32>::new();
    let mut out = Vec::new();
    for (offset, line) in [(0, "first"), (6, " indented")] {
        let mut r = record(line);
        r.insert("id", json!(format!("k-{offset}")));
        r.insert("source_file", json!("access.log"));
        r.insert(PUSHED_FIELD, json!(true));
        joiner.push(&rules, r, 0, std::time::Instant::now(), &mut |r| {
            out.push(r)
        });
    }
    assert_eq!(out.len(), 2, "pushed records are never joined");
    for mut r in out {
        let matched = rules.rules_for_record(&r);
        assert!(matched.is_empty());
        assert_eq!(rules.apply_matched(&matched, &mut r), Verdict::Keep);
        assert_eq!(r["log_category"], "unknown");
        assert!(r.get("from_rule").is_none(), "{r:?}");
    }
    let mut tailed = record("first");
    tailed.insert("source_file", json!("access.log"));
    let matched = rules.rules_for_record(&tailed);
    rules.apply_matched(&matched, &mut tailed);
    assert_eq!(
        (&tailed["log_category"], &tailed["from_rule"]),
        (&json!("file"), &json!(true))
    );
}

#[test]
fn check_reports_every_error_with_its_line() {
    let text = "version: 1\nmax_line_bytes: 0\ncategorize:\n  - {category: '', files: ['a[']}\nrules:\n  - name: a\n    files: [a.log]\n    multiline: {preset: python, indented: true}\n    steps:\n      - sample: {one_in: 0}\n      - redact: {fields: [line]}\n      - set: {field: x, value: 1, env: Y}\ntests:\n  - {name: t, source: a.log, line: x}\n";
    let errors = RuleSet::check_yaml_str(text, "r.yaml").expect_err("invalid");
    let messages: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
    let expected = [
        "r.yaml:2: max_line_bytes: must be at least 1",
        r#"r.yaml:10: rule 1 ("a"): steps[0].sample.one_in: must be at least 1 (1 keeps every record)"#,
        r#"r.yaml:11: rule 1 ("a"): steps[1].redact: give `builtins`, `patterns`, or both"#,
        r#"r.yaml:12: rule 1 ("a"): steps[2].set.value: give exactly one of value, env, template"#,
        r#"r.yaml:8: rule 1 ("a"): multiline: give exactly one of preset, start, continuation, indented: true"#,
        "r.yaml:4: categorize[0].category: must not be empty",
        "r.yaml:4: categorize[0].files[0]: invalid glob",
        "r.yaml:14: tests[0].expect: give exactly one of `expect: {fields}`, `expect_records: [{fields}, …]`, `dropped: true` or `dropped: <reason>`",
    ];
    assert_eq!(messages, expected);
}
