//! The collector's ingest endpoint on real processes (issue 6): auth, content types, body
//! limit, line-numbered errors; a 200 means committed (kill -9 right after the answer and the
//! records are in the journal); ids never repeat across restarts; ingested records reach the
//! forwarder's query API as a source named after their service.

mod query_http;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use e2e_tests::{free_port, http_get, wait_until, Pod, StageKind};
use query_http::{get, request, Response};
use serde_json::Value;
use sidecar_core::journal::{JournalReader, Position};

fn post(port: u16, headers: &[(&str, &str)], body: &str) -> Response {
    request(port, "POST", "/logs", headers, body.as_bytes())
}

/// Every record committed to the collected journal.
fn collected(dir: &Path) -> Vec<Value> {
    let mut reader = JournalReader::new(dir, Position::default());
    let end = reader.committed_end().unwrap().unwrap_or_default();
    let mut buf = Vec::new();
    let mut records = Vec::new();
    while reader.read_batch(end, 1 << 20, &mut buf).unwrap() > 0 {
        for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            records.push(serde_json::from_slice(line).unwrap());
        }
    }
    records
}

#[test]
fn ingested_records_are_committed_before_the_answer_and_reach_the_query_api() {
    let mut pod = Pod::new();
    let port = free_port();
    std::fs::write(pod.path("token"), "s3cret\n").unwrap();
    pod.extra_args.insert(
        StageKind::Collector,
        vec![
            "--ingest-listen".into(),
            format!("127.0.0.1:{port}"),
            "--ingest-max-body".into(),
            "4KiB".into(),
            "--ingest-token-file".into(),
            pod.path("token").display().to_string(),
        ],
    );
    let collector = pod.start(StageKind::Collector);
    let json = ("Content-Type", "application/json");
    let ndjson = ("Content-Type", "application/x-ndjson; charset=utf-8");
    let auth = ("Authorization", "Bearer s3cret");

    // Refusals, each with a JSON error.
    let r = post(port, &[json], r#"{"service":"billing"}"#);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = post(port, &[json, ("Authorization", "Bearer nope")], "{}");
    assert_eq!(r.status, 401);
    let r = post(port, &[("Content-Type", "text/plain"), auth], "{}");
    assert_eq!(r.status, 415, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("application/x-ndjson"));
    let r = post(port, &[auth], "{}");
    assert_eq!(r.status, 415, "a missing content type is refused too");
    let big = format!(r#"{{"message":"{}"}}"#, "x".repeat(5000));
    let r = post(port, &[json, auth], &big);
    assert_eq!(r.status, 413, "{}", r.body);
    let r = post(port, &[ndjson, auth], "{\"a\":1}\n{\"a\":2}\n{\"a\":\n");
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().starts_with("line 3: "),
        "{}",
        r.body
    );
    let r = post(port, &[ndjson, auth], "{}\n[1]\n");
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .starts_with("line 2: expected a JSON object"));
    let r = post(port, &[json, auth], r#"{"service":"../../etc"}"#);
    assert_eq!(r.status, 400);
    assert!(
        collected(&pod.path("collected")).is_empty(),
        "nothing refused was kept"
    );

    // Accepted: a batch, answered with the ids after the commit; then kill -9 at once.
    let batch = concat!(
        r#"{"service":"billing","level":"error","message":"card declined","amount":12}"#,
        "\n",
        r#"{"service":"billing","message":"retry ok","timestamp":"2026-11-22T10:30:45.123Z"}"#,
        "\n",
        r#"{"message":"who am i"}"#,
        "\n"
    );
    let r = post(port, &[ndjson, auth], batch);
    assert_eq!(r.status, 200, "{}", r.body);
    collector.kill9();
    let answer = r.json();
    assert_eq!(answer["accepted"], 3);
    let ids: Vec<String> = answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let records = collected(&pod.path("collected"));
    assert_eq!(records.len(), 3, "{records:?}");
    for (record, id) in records.iter().zip(&ids) {
        assert_eq!(record["id"], id.as_str());
    }
    assert_eq!(records[0]["source"], "billing");
    assert_eq!(records[2]["source"], "unknown");
    assert!(records[1]["line"]
        .as_str()
        .unwrap()
        .starts_with("2026-11-22 10:30:45,123 - {"));

    // After the restart, ids go on and never repeat; the service keeps its source id.
    let collector2 = pod.start(StageKind::Collector);
    let r = post(
        port,
        &[json, auth],
        r#"{"service":"billing","message":"after restart"}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let new_id = r.json()["ids"][0].as_str().unwrap().to_owned();
    assert!(!ids.contains(&new_id));
    assert_eq!(new_id.split('-').next(), ids[0].split('-').next());
    let all: HashSet<String> = collected(&pod.path("collected"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(all.len(), 4);

    // Concurrent clients: every acknowledged record is in the journal exactly once, also
    // after a kill -9 right after the last answer.
    let acked: Vec<String> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..8)
            .map(|client| {
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    for request in 0..10 {
                        let body: String = (0..20)
                            .map(|i| {
                                format!(
                                    "{{\"service\":\"load-{client}\",\"message\":\"r{request}-{i}\"}}\n"
                                )
                            })
                            .collect();
                        let r = post(port, &[ndjson, auth], &body);
                        assert_eq!(r.status, 200, "{}", r.body);
                        for id in r.json()["ids"].as_array().unwrap() {
                            ids.push(id.as_str().unwrap().to_owned());
                        }
                    }
                    ids
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    collector2.kill9();
    assert_eq!(acked.len(), 8 * 10 * 20);
    let mut in_journal: std::collections::HashMap<String, u32> = Default::default();
    for record in collected(&pod.path("collected")) {
        *in_journal
            .entry(record["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &acked {
        assert_eq!(in_journal.get(id), Some(&1), "acknowledged {id}");
    }
    assert_eq!(in_journal.len(), 4 + acked.len());
    let collector3 = pod.start(StageKind::Collector);

    // Through the pipeline: the service is a source of the query API.
    let _processor = pod.start(StageKind::Processor);
    let forwarder = pod.start(StageKind::Forwarder);
    let api = forwarder.api_port;
    let mut billing = Vec::new();
    assert!(wait_until(Duration::from_secs(60), || {
        let r = get(api, "/logs/billing?limit=10");
        billing = if r.status == 200 {
            r.json().as_array().unwrap().clone()
        } else {
            Vec::new()
        };
        billing.len() == 3
    }));
    assert_eq!(billing[0]["message"], "card declined");
    assert_eq!(billing[0]["log_level"], "ERROR");
    assert_eq!(billing[0]["amount"], 12);
    assert_eq!(billing[1]["timestamp"], "2026-11-22 10:30:45,123");
    assert_eq!(billing[2]["message"], "after restart");
    let unknown = get(api, "/logs/unknown?limit=10").json();
    assert_eq!(unknown[0]["message"], "who am i");
    // The collector's metrics count what was ingested.
    let r = post(
        port,
        &[json, auth],
        r#"{"service":"billing","message":"counted"}"#,
    );
    assert_eq!(r.status, 200);
    let (_, metrics) = http_get(collector3.port, "/metrics").unwrap();
    assert!(
        metrics.contains("collector_ingest_records_total 1"),
        "{metrics}"
    );
}

#[test]
fn a_request_refused_under_backpressure_leaves_nothing_behind() {
    let mut pod = Pod::new();
    let port = free_port();
    // No processor consumes the journal, so past 1 KiB the collector pauses.
    pod.extra_args.insert(
        StageKind::Collector,
        vec![
            "--ingest-listen".into(),
            format!("127.0.0.1:{port}"),
            "--ingest-ack-timeout".into(),
            "1s".into(),
            "--max-unconsumed".into(),
            "1KiB".into(),
        ],
    );
    let _collector = pod.start(StageKind::Collector);
    let json = ("Content-Type", "application/json");
    let filler = format!(r#"{{"service":"a","message":"{}"}}"#, "x".repeat(2000));
    assert_eq!(post(port, &[json], &filler).status, 200);
    // The collector re-checks its readers' lag every 250 ms.
    std::thread::sleep(Duration::from_millis(600));
    let refused = post(port, &[json], r#"{"service":"b","message":"refused"}"#);
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(refused.json()["error"]
        .as_str()
        .unwrap()
        .contains("none were kept"));
    // The processor catches up, the pause ends, and the refused request stays refused.
    let _processor = pod.start(StageKind::Processor);
    // A client retries on 503 until the pause ends; only the accepted attempt is kept.
    assert!(wait_until(Duration::from_secs(20), || {
        post(port, &[json], r#"{"service":"c","message":"later"}"#).status == 200
    }));
    let sources: Vec<String> = collected(&pod.path("collected"))
        .iter()
        .map(|r| r["source"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sources, ["a", "c"]);
}
