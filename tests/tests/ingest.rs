//! The collector's ingest endpoint on real processes (issue 6): auth, content types, body
//! limit, line-numbered errors; a 200 means committed (kill -9 right after the answer and the
//! records are in the journal); ids never repeat across restarts; ingested records reach the
//! forwarder's query API as a source named after their service.
//!
//! Issue 11: the record limit, bounded memory under the worst requests the limits allow (peak
//! RSS read from VmHWM), gzip bodies, the compact answer, and pushed records kept apart from
//! the files the collector watches.

mod query_http;

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use e2e_tests::{free_port, http_get, wait_until, Pod, StageKind};
use query_http::{get, request, Response};
use serde_json::Value;
use sidecar_core::journal::{self, JournalReader, Position};
use sidecar_core::record::CollectedRecord;

fn post(port: u16, headers: &[(&str, &str)], body: &str) -> Response {
    request(port, "POST", "/logs", headers, body.as_bytes())
}

/// As `post`, asking for every id in the answer.
fn post_for_ids(port: u16, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request(port, "POST", "/logs?ids=true", headers, body)
}

/// The ids of an answer to `post_for_ids`.
fn ids_of(response: &Response) -> Vec<String> {
    response.json()["ids"]
        .as_array()
        .unwrap_or_else(|| panic!("no ids: {}", response.body))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

/// Every record committed to the collected journal, as JSON (see docs/journal-format.md).
fn collected(dir: &Path) -> Vec<Value> {
    committed(dir, |record| {
        CollectedRecord::decode(record).unwrap().to_json()
    })
}

/// Every record committed to the processed journal.
fn processed(dir: &Path) -> Vec<Value> {
    committed(dir, |record| serde_json::from_slice(record).unwrap())
}

fn committed(dir: &Path, decode: impl Fn(&[u8]) -> Value) -> Vec<Value> {
    let mut reader = JournalReader::new(dir, Position::default());
    let end = reader.committed_end().unwrap().unwrap_or_default();
    let mut buf = Vec::new();
    let mut records = Vec::new();
    while reader.read_batch(end, 1 << 20, &mut buf).unwrap() > 0 {
        records.extend(journal::records(&buf).map(&decode));
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
    let r = post_for_ids(port, &[ndjson, auth], batch.as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    collector.kill9();
    let answer = r.json();
    assert_eq!(answer["accepted"], 3);
    let ids = ids_of(&r);
    assert_eq!(answer["first_id"], ids[0].as_str());
    assert_eq!(answer["last_id"], ids[2].as_str());
    let records = collected(&pod.path("collected"));
    assert_eq!(records.len(), 3, "{records:?}");
    for (record, id) in records.iter().zip(&ids) {
        assert_eq!(record["id"], id.as_str());
    }
    assert_eq!(records[0]["source"], "billing");
    assert!(
        records.iter().all(|r| r["pushed"] == true),
        "pushed records say so: {records:?}"
    );
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
    let answer = r.json();
    assert!(
        answer.get("ids").is_none(),
        "ids only on request: {}",
        r.body
    );
    assert_eq!(answer["first_id"], answer["last_id"]);
    let new_id = answer["first_id"].as_str().unwrap().to_owned();
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
                        let r = post_for_ids(port, &[ndjson, auth], body.as_bytes());
                        assert_eq!(r.status, 200, "{}", r.body);
                        ids.extend(ids_of(&r));
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

/// The peak resident memory of a process (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kib * 1024
}

/// A collector with the ingest endpoint on `port` and otherwise its default limits.
fn ingest_pod(port: u16, extra: &[&str]) -> Pod {
    let mut pod = Pod::new();
    let mut args = vec!["--ingest-listen".to_owned(), format!("127.0.0.1:{port}")];
    args.extend(extra.iter().map(|&a| a.to_owned()));
    pod.extra_args.insert(StageKind::Collector, args);
    pod
}

const NDJSON: (&str, &str) = ("Content-Type", "application/x-ndjson");

/// Issue 11: one 1 MiB body of `{}` lines was accepted as 349,525 records, took the collector
/// from 7 MB to 398 MB of RSS, answered 12.5 MB and wrote 64 MB of journal. Now the record
/// limit refuses it (in either layout) with a message naming the flag, the peak RSS stays
/// small, nothing is kept, and an accepted request is answered in a few bytes.
#[test]
fn a_mebibyte_of_empty_objects_is_refused_at_the_record_limit() {
    let port = free_port();
    let mut pod = ingest_pod(port, &[]);
    let collector = pod.start(StageKind::Collector);
    let before = peak_rss(collector.pid());
    let ndjson = "{}\n".repeat((1 << 20) / 3);
    let r = post(port, &[NDJSON], &ndjson);
    assert_eq!(r.status, 413, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("more than 10000 records") && error.contains("--ingest-max-records"),
        "{error}"
    );
    let array = format!("[{}{{}}]", "{},".repeat((1 << 20) / 3 - 1));
    let r = post(port, &[("Content-Type", "application/json")], &array);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(collected(&pod.path("collected")).is_empty());
    let peak = peak_rss(collector.pid());
    assert!(
        peak < before + (8 << 20),
        "refusing grew the collector from {before} to {peak} bytes"
    );

    // At the limit: accepted, answered with a count and two ids.
    let r = post(port, &[NDJSON], &"{}\n".repeat(10_000));
    assert_eq!(r.status, 200, "{}", r.body);
    let answer = r.json();
    assert_eq!(answer["accepted"], 10_000);
    assert!(answer.get("ids").is_none());
    assert!(r.body.len() < 200, "{}", r.body);
    let records = collected(&pod.path("collected"));
    assert_eq!(records.len(), 10_000);
    assert_eq!(records[0]["id"], answer["first_id"]);
    assert_eq!(records[9_999]["id"], answer["last_id"]);
    eprintln!(
        "peak RSS: {before} at start, {peak} after the refused 1 MiB bodies, {} after 10,000 records",
        peak_rss(collector.pid())
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Issue 11: `Content-Encoding: gzip` (what HTTP shippers send) is decoded, up to
/// `--ingest-max-body` decoded bytes, so a gzip bomb gets 413; other encodings get 415 naming
/// the encoding.
#[test]
fn gzip_bodies_are_accepted_up_to_the_body_limit_and_other_encodings_are_refused() {
    let port = free_port();
    let mut pod = ingest_pod(port, &["--ingest-max-body", "64KiB"]);
    let _collector = pod.start(StageKind::Collector);
    let body = concat!(
        r#"{"service":"billing","message":"zipped 1"}"#,
        "\n",
        r#"{"service":"billing","message":"zipped 2"}"#,
        "\n"
    );
    let gzipped = ("Content-Encoding", "gzip");
    let r = request(
        port,
        "POST",
        "/logs",
        &[NDJSON, gzipped],
        &gzip(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["accepted"], 2);
    let records = collected(&pod.path("collected"));
    let lines: Vec<&str> = records
        .iter()
        .map(|r| r["line"].as_str().unwrap())
        .collect();
    assert!(
        lines[0].ends_with(r#"{"message":"zipped 1","service":"billing"}"#),
        "{lines:?}"
    );
    assert!(
        lines[1].ends_with(r#"{"message":"zipped 2","service":"billing"}"#),
        "{lines:?}"
    );

    // 4 MiB of records in well under 64 KiB of gzip.
    let bomb = gzip(
        format!("{{\"message\":\"{}\"}}\n", "a".repeat(1000))
            .repeat(4096)
            .as_bytes(),
    );
    assert!(bomb.len() < 64 << 10, "{}", bomb.len());
    let r = request(port, "POST", "/logs", &[NDJSON, gzipped], &bomb);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("decodes to more than 65536 bytes"));
    let r = request(
        port,
        "POST",
        "/logs",
        &[NDJSON, gzipped],
        b"{\"not\":\"gzip\"}",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let r = request(
        port,
        "POST",
        "/logs",
        &[NDJSON, ("Content-Encoding", "br")],
        b"{}",
    );
    assert_eq!(r.status, 415, "{}", r.body);
    assert!(
        r.json()["error"].as_str().unwrap().contains("\"br\""),
        "{}",
        r.body
    );
    assert_eq!(
        collected(&pod.path("collected")).len(),
        2,
        "nothing refused was kept"
    );
}

/// Issue 11: a pushed record could claim a watched file's name (`service: "access.log"`) and
/// go through that file's rules. A service the `--watch` globs match is refused naming the
/// field; other pushed records are marked `pushed` in both journals, and the processor runs
/// no file's rules on them, while the real access.log keeps its own.
#[test]
fn a_pushed_record_cannot_take_a_watched_files_name_and_is_marked_pushed() {
    let port = free_port();
    let mut pod = ingest_pod(port, &[]);
    let line =
        r#"2026-11-22 10:30:45,123 - {"type":"response","path":"/users?page=2","status_code":503}"#;
    std::fs::write(pod.path("logs/access.log"), format!("{line}\n")).unwrap();
    let _collector = pod.start(StageKind::Collector);
    let json = ("Content-Type", "application/json");
    let r = post(
        port,
        &[json],
        r#"{"service":"access.log","type":"response","path":"/x","status_code":503}"#,
    );
    assert_eq!(r.status, 400, "{}", r.body);
    let error = r.json()["error"].as_str().unwrap().to_owned();
    assert!(
        error.starts_with("line 1: service \"access.log\"") && error.contains("*.log"),
        "{error}"
    );
    let r = post(
        port,
        &[json],
        r#"{"service":"access","type":"response","path":"/x","status_code":503}"#,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let _processor = pod.start(StageKind::Processor);
    let mut records = Vec::new();
    assert!(wait_until(Duration::from_secs(20), || {
        records = processed(&pod.path("processed"));
        records.len() == 2
    }));
    let by_source = |source: &str| {
        records
            .iter()
            .find(|r| r["source_file"] == source)
            .unwrap_or_else(|| panic!("no {source}: {records:?}"))
    };
    let tailed = by_source("access.log");
    assert_eq!(tailed["log_category"], "access");
    assert_eq!(tailed["endpoint"], "/users");
    assert!(tailed.get("pushed").is_none());
    let pushed = by_source("access");
    assert_eq!(pushed["pushed"], true);
    assert_eq!(pushed["status_code"], 503, "the common steps parse it");
    assert_eq!(pushed["log_category"], "unknown");
    assert!(pushed.get("endpoint").is_none());
}

/// What the parallel test allows the collector's peak RSS, with the default limits
/// (`--ingest-max-body` 1 MiB, `--ingest-max-records` 10,000, `--ingest-max-inflight` 16 MiB).
/// The README states it; the pod's limit is 64 Mi.
const PEAK_RSS_BOUND: u64 = 48 << 20;

/// Issue 11: the worst request the default limits allow (1 MiB of 10,000 records whose quotes
/// double when the record becomes a journal line, every id asked for), sent by 8 clients at
/// once, 3 times each. The collector's peak RSS stays under [`PEAK_RSS_BOUND`], and every
/// acknowledged record is in the collected journal exactly once: a 503 (busy) kept nothing,
/// and the client's retry is the only copy.
#[test]
fn the_worst_requests_in_parallel_stay_under_the_memory_bound_and_lose_nothing() {
    let port = free_port();
    let mut pod = ingest_pod(port, &[]);
    let collector = pod.start(StageKind::Collector);
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 3;
    let worst = |client: usize, request: usize| -> String {
        let body: String = (0..10_000)
            .map(|i| {
                let head =
                    format!("{{\"service\":\"load-{client}\",\"n\":\"{request}-{i}\",\"q\":\"");
                // Escaped quotes: 2 bytes here, 4 in the journal line.
                let quotes = "\\\"".repeat((104 - head.len() - 3) / 2);
                format!("{head}{quotes}\"}}\n")
            })
            .collect();
        assert!(body.len() <= 1 << 20, "{}", body.len());
        assert!(body.len() > 1_000_000, "{}", body.len());
        body
    };
    let (acked, busy): (Vec<String>, usize) = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                scope.spawn(move || {
                    let mut ids = Vec::new();
                    let mut busy = 0;
                    for request in 0..REQUESTS {
                        let body = worst(client, request);
                        loop {
                            let r = post_for_ids(port, &[NDJSON], body.as_bytes());
                            if r.status == 503 {
                                assert_eq!(r.header("retry-after"), Some("1"), "{}", r.body);
                                busy += 1;
                                std::thread::sleep(Duration::from_millis(100));
                                continue;
                            }
                            assert_eq!(r.status, 200, "{}", r.body);
                            ids.extend(ids_of(&r));
                            break;
                        }
                    }
                    (ids, busy)
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).fold(
            (Vec::new(), 0),
            |(mut all, busy), (ids, b)| {
                all.extend(ids);
                (all, busy + b)
            },
        )
    });
    let peak = peak_rss(collector.pid());
    collector.kill9();
    eprintln!(
        "{} records acknowledged, {busy} answers 503, peak RSS {:.1} MiB",
        acked.len(),
        peak as f64 / f64::from(1 << 20)
    );
    assert_eq!(acked.len(), CLIENTS * REQUESTS * 10_000);
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak RSS {peak} bytes is over the bound of {PEAK_RSS_BOUND}"
    );
    let mut in_journal: std::collections::HashMap<String, u32> = Default::default();
    for record in collected(&pod.path("collected")) {
        *in_journal
            .entry(record["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    for id in &acked {
        assert_eq!(in_journal.get(id), Some(&1), "acknowledged {id}");
    }
    assert_eq!(
        in_journal.len(),
        acked.len(),
        "only acknowledged records were kept"
    );
}
