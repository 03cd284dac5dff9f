//! The network sinks (http, Loki, Elasticsearch) on the real binaries. (Issue #4.)
//!
//! No Loki or Elasticsearch can run here, so [`FakeServer`] stands in for them: a small HTTP/1.1
//! server in the test that checks the documented wire format field by field (the `_bulk`
//! NDJSON action/document pairs and its per-item reply; Loki's push JSON with string labels,
//! nanosecond string timestamps in order per stream, `X-Scope-OrgID`) and fails on demand:
//! 503 for a while, 429 with `Retry-After`, 400 for some records, bulk replies with
//! `errors: true` on some items, and a server that accepts and never answers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::fake_http::{read_request, FakeServer, Request, Response};
use e2e_tests::{
    dead_letters, exactly_once, make_certificates, metric, outage, unix_millis, wait_until,
    write_secret_version, Pod, StageKind, Writer,
};
use serde_json::{json, Value};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Writes the forwarder's config: the given sinks (YAML list items), and optionally the
/// file sink `archive` as the reference of what was read from the journal.
fn configure(pod: &Pod, extra: &str, sinks: &str, with_archive: bool) {
    let mut text = format!("report:\n  interval: 1s\n{extra}sinks:\n{sinks}");
    if with_archive {
        text.push_str(&format!(
            "  - type: file\n    name: archive\n    directory: {}\n",
            pod.path("out").display()
        ));
    }
    std::fs::write(pod.path("forwarder.yaml"), text).unwrap();
}

/// Records in the requests the server accepted, as JSON.
fn received(server: &FakeServer) -> Vec<Value> {
    server.accepted().iter().flat_map(Request::lines).collect()
}

/// What a `_bulk` request holds: (action, document) pairs.
fn bulk_pairs(request: &Request) -> Vec<(Value, Value)> {
    let lines = request.lines();
    assert!(
        lines.len().is_multiple_of(2) && request.body.ends_with(b"\n"),
        "a _bulk body is action/document line pairs ending in a newline"
    );
    lines
        .chunks(2)
        .map(|p| (p[0].clone(), p[1].clone()))
        .collect()
}

/// Checks one action line against its document, as the `_bulk` API documents them.
fn check_bulk_action(action: &Value, doc: &Value) -> String {
    let index = &action["index"];
    assert_eq!(action.as_object().unwrap().len(), 1, "one action: {action}");
    let id = index["_id"].as_str().expect("_id is set");
    assert_eq!(Some(id), doc["id"].as_str(), "_id is the record id");
    let date = &doc["collected_at"].as_str().unwrap()[..10].replace('-', ".");
    assert_eq!(index["_index"], format!("logs-{date}"), "{action}");
    id.to_owned()
}

fn bulk_reply(items: Vec<Value>) -> Response {
    let errors = items
        .iter()
        .any(|i| i["index"]["status"].as_u64() != Some(201));
    Response::json(200, json!({"took": 1, "errors": errors, "items": items}))
}

fn seq_of(r: &Value) -> u64 {
    r["seq"].as_u64().unwrap()
}

#[test]
fn http_sink_rides_out_a_503_outage_and_honours_retry_after() {
    let mut pod = Pod::new();
    let secret = pod.path("token");
    std::fs::write(&secret, "s3cr3t-t0ken\n").unwrap();
    let outage = outage();
    let started = Instant::now();
    let mut answered_429 = false;
    let server = FakeServer::start(move |req| {
        assert_eq!(req.path, "/ingest");
        assert_eq!(req.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(req.header("content-encoding"), Some("gzip"));
        assert_eq!(req.header("authorization"), Some("Bearer s3cr3t-t0ken"));
        assert_eq!(req.header("x-team"), Some("shop"));
        if started.elapsed() < outage {
            return Some(Response::status(503));
        }
        if !std::mem::replace(&mut answered_429, true) {
            let mut r = Response::status(429);
            r.headers.push(("Retry-After", "2".into()));
            return Some(r);
        }
        Some(Response::status(200))
    });
    configure(
        &pod,
        "",
        &format!(
            "  - type: http\n    url: {}/ingest\n    gzip: true\n    headers: {{X-Team: shop}}\n    auth: {{bearer: {{token_file: {}}}}}\n    retry: {{initial_backoff: 100ms, max_backoff: 400ms}}\n    batch: {{max_records: 100}}\n",
            server.url(),
            secret.display()
        ),
        false,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(500);
    let stages = pod.start_all();
    server.wait_for("500 records", || received(&server).len() >= 500);
    std::thread::sleep(Duration::from_millis(300));
    let records = received(&server);
    // Refused requests delivered nothing, so nothing repeats: each line exactly once.
    let problems = exactly_once(&records, &[("access", 500)]);
    assert!(problems.is_empty(), "{problems}");
    let requests = server.requests();
    let i429 = requests
        .iter()
        .position(|r| r.at.duration_since(started) >= outage)
        .unwrap();
    let waited = requests[i429 + 1].at.duration_since(requests[i429].at);
    assert!(
        waited >= Duration::from_millis(1900),
        "Retry-After: 2 was honoured ({waited:?})"
    );
    let forwarder = &stages[2];
    assert!(
        metric(
            forwarder.port,
            "forwarder_sink_retries_total{sink=\"http\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_sent_records_total{sink=\"http\"}"
        ),
        500.0
    );
    assert!(
        metric(
            forwarder.port,
            "forwarder_sink_request_duration_seconds_count{sink=\"http\"}"
        ) >= 7.0
    );
    let log = std::fs::read_to_string(&forwarder.log).unwrap();
    assert!(log.contains("HTTP 503"), "{log}");
    assert!(!log.contains("s3cr3t"), "the token never reaches the log");
}

/// A rotated Secret: once the kubelet swaps in a new token, requests carry it without a
/// restart; the requests refused (401) in between are retried, so nothing is lost or repeated.
#[test]
fn a_rotated_token_file_is_picked_up_without_a_restart() {
    let mut pod = Pod::new();
    let secret_dir = pod.path("secret");
    write_secret_version(&secret_dir, "2026_11_23_01_00_00.1", "old-token\n");
    let accepted_token = Arc::new(Mutex::new("Bearer old-token".to_owned()));
    let server = FakeServer::start({
        let accepted_token = Arc::clone(&accepted_token);
        move |req| {
            let ok = req.header("authorization") == Some(accepted_token.lock().unwrap().as_str());
            Some(Response::status(if ok { 200 } else { 401 }))
        }
    });
    configure(
        &pod,
        "",
        &format!(
            "  - type: http\n    url: {}/ingest\n    auth: {{bearer: {{token_file: {}}}}}\n    retry: {{initial_backoff: 100ms, max_backoff: 400ms}}\n",
            server.url(),
            secret_dir.join("token").display()
        ),
        false,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(200);
    let stages = pod.start_all();
    server.wait_for("the first 200 records", || received(&server).len() >= 200);

    // The server stops taking the old token before the new one is mounted, as when a
    // credential is revoked first: the sink is refused until it reads the new file.
    *accepted_token.lock().unwrap() = "Bearer new-token".to_owned();
    write_secret_version(&secret_dir, "2026_11_23_02_00_00.2", "new-token\n");
    app.write(200);
    server.wait_for("all 400 records", || received(&server).len() >= 400);
    std::thread::sleep(Duration::from_millis(300));
    let problems = exactly_once(&received(&server), &[("access", 400)]);
    assert!(problems.is_empty(), "{problems}");
    let forwarder = &stages[2];
    let log = std::fs::read_to_string(&forwarder.log).unwrap();
    assert!(
        log.contains("The secret file changed; requests carry the new credentials."),
        "{log}"
    );
    assert!(!log.contains("new-token") && !log.contains("old-token"));
    for stage in stages {
        stage.terminate(Duration::from_secs(15));
    }
}

#[test]
fn records_the_server_refuses_are_dead_lettered_and_the_rest_delivered() {
    let mut pod = Pod::new();
    let bad = |r: &Value| seq_of(r) % 40 == 7;
    let server = FakeServer::start(move |req| {
        let records = req.lines();
        if records.iter().any(bad) {
            return Some(Response::json(400, json!({"error": "field seq rejected"})));
        }
        Some(Response::status(204))
    });
    configure(
        &pod,
        "",
        &format!(
            "  - type: http\n    url: {}/\n    batch: {{max_records: 64}}\n",
            server.url()
        ),
        false,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(400);
    let stages = pod.start_all();
    let expected_bad: BTreeSet<u64> = (0..400).filter(|s| s % 40 == 7).collect();
    server.wait_for("good records and dead letters", || {
        received(&server).len() >= 400 - expected_bad.len()
            && dead_letters(&pod, "http").len() >= expected_bad.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    // Delivered: every good record once (refused requests were split until each refusal
    // named one record), none of the bad ones.
    let good = received(&server);
    assert_eq!(good.len(), 400 - expected_bad.len());
    assert!(!good.iter().any(bad));
    let good: BTreeSet<u64> = good.iter().map(seq_of).collect();
    assert_eq!(good.len(), 400 - expected_bad.len());
    let letters = dead_letters(&pod, "http");
    let dead: BTreeSet<u64> = letters.iter().map(|l| seq_of(&l["record"])).collect();
    assert_eq!(dead, expected_bad, "exactly the refused records");
    assert_eq!(letters.len(), expected_bad.len(), "each once");
    for l in &letters {
        assert_eq!(l["sink"], "http");
        assert_eq!(l["status"], 400);
        assert!(
            l["reason"].as_str().unwrap().contains("field seq rejected"),
            "{l}"
        );
        assert!(l["record"]["id"].is_string());
    }
    let forwarder = stages.into_iter().nth(2).unwrap();
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_dead_lettered_records_total{sink=\"http\"}"
        ),
        expected_bad.len() as f64
    );
    let log = forwarder.log.clone();
    forwarder.terminate(Duration::from_secs(15));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.contains(&format!(
            "dead-lettered (refused by the server, kept in the dead-letter journal): http {}",
            expected_bad.len()
        )),
        "the report shows the dead letters:\n{log}"
    );
}

#[test]
fn elasticsearch_bulk_items_that_fail_are_retried_alone_and_refused_ones_dead_lettered() {
    let mut pod = Pod::new();
    let attempts: Arc<Mutex<BTreeMap<String, u32>>> = Arc::default();
    let seen = attempts.clone();
    let server = FakeServer::start(move |req| {
        assert_eq!(req.path, "/_bulk");
        assert_eq!(req.header("content-type"), Some("application/x-ndjson"));
        assert_eq!(
            req.header("authorization"),
            Some("Basic ZWxhc3RpYzpwYXNzLXdvcmQ="),
            "elastic:pass-word"
        );
        let mut items = Vec::new();
        for (action, doc) in bulk_pairs(req) {
            let id = check_bulk_action(&action, &doc);
            let n = {
                let mut seen = seen.lock().unwrap();
                let n = seen.entry(id.clone()).or_default();
                *n += 1;
                *n
            };
            let seq = seq_of(&doc);
            let status = if seq % 50 == 13 {
                400
            } else if seq % 10 == 3 && n == 1 {
                429
            } else {
                201
            };
            let mut item =
                json!({"_index": action["index"]["_index"], "_id": id, "status": status});
            if status == 400 {
                item["error"] = json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [seq]"});
            } else if status == 429 {
                item["error"] =
                    json!({"type": "es_rejected_execution_exception", "reason": "queue is full"});
            }
            items.push(json!({ "index": item }));
        }
        Some(bulk_reply(items))
    });
    std::fs::write(pod.path("es-password"), "pass-word\n").unwrap();
    configure(
        &pod,
        "",
        &format!(
            "  - type: elasticsearch\n    url: {}\n    gzip: true\n    auth: {{basic: {{username: elastic, password_file: {}}}}}\n    retry: {{initial_backoff: 50ms, max_backoff: 200ms}}\n",
            server.url(),
            pod.path("es-password").display()
        ),
        false,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(300);
    let _stages = pod.start_all();
    let refused: BTreeSet<u64> = (0..300).filter(|s| s % 50 == 13).collect();
    server.wait_for("300 ids and the dead letters", || {
        attempts.lock().unwrap().len() >= 300
            && dead_letters(&pod, "elasticsearch").len() >= refused.len()
    });
    std::thread::sleep(Duration::from_millis(500));
    // Which seq had which id: from the documents the server saw.
    let mut seq_by_id = BTreeMap::new();
    for req in server.requests() {
        for (_, doc) in bulk_pairs(&req) {
            seq_by_id.insert(doc["id"].as_str().unwrap().to_owned(), seq_of(&doc));
        }
    }
    let attempts = attempts.lock().unwrap().clone();
    for (id, n) in &attempts {
        let seq = seq_by_id[id];
        let expected = if seq % 10 == 3 && seq % 50 != 13 {
            2
        } else {
            1
        };
        assert_eq!(
            *n, expected,
            "seq {seq}: only items refused with 429 are sent again"
        );
    }
    let dead: BTreeSet<u64> = dead_letters(&pod, "elasticsearch")
        .iter()
        .map(|l| {
            assert_eq!(l["status"], 400);
            assert_eq!(
                l["reason"],
                "mapper_parsing_exception: failed to parse field [seq]"
            );
            seq_of(&l["record"])
        })
        .collect();
    assert_eq!(dead, refused);
}

#[test]
fn loki_pushes_labelled_streams_with_ordered_nanosecond_entries() {
    let mut pod = Pod::new();
    let server = FakeServer::start(|req| {
        assert_eq!(req.path, "/loki/api/v1/push");
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(req.header("x-scope-orgid"), Some("team-a"));
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        for stream in body["streams"].as_array().unwrap() {
            let labels = stream["stream"].as_object().unwrap();
            assert!(
                labels.values().all(Value::is_string),
                "label values are strings"
            );
            assert_eq!(labels["namespace"], "shop");
            let mut last = 0i128;
            for entry in stream["values"].as_array().unwrap() {
                let e = entry.as_array().unwrap();
                assert_eq!(e.len(), 2, "[timestamp, line]");
                let ns: i128 = e[0]
                    .as_str()
                    .expect("timestamp is a string")
                    .parse()
                    .unwrap();
                assert!(ns > 1_700_000_000_000_000_000, "nanoseconds: {ns}");
                assert!(ns >= last, "entries in order within a stream");
                last = ns;
                let line: Value = serde_json::from_str(e[1].as_str().unwrap()).unwrap();
                assert_eq!(labels["source_file"], line["source_file"]);
                assert_eq!(labels["log_level"], line["log_level"]);
                let collected = line["collected_at"].as_str().unwrap();
                assert_eq!(
                    &e[0].as_str().unwrap()[..10],
                    &format!("{}", unix_millis(collected) / 1000)
                );
            }
        }
        Some(Response::status(204))
    });
    configure(
        &pod,
        "",
        &format!(
            "  - type: loki\n    url: {}\n    tenant_id: team-a\n    label_fields: [source_file, log_level]\n    static_labels: {{namespace: shop}}\n",
            server.url()
        ),
        false,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(200);
    let _stages = pod.start_all();
    let lines = || -> Vec<Value> {
        server
            .requests()
            .iter()
            .flat_map(|r| {
                let body: Value = serde_json::from_slice(&r.body).unwrap();
                body["streams"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|s| s["values"].as_array().unwrap().clone())
                    .map(|e| serde_json::from_str::<Value>(e[1].as_str().unwrap()).unwrap())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    server.wait_for("200 lines", || lines().len() >= 200);
    let problems = exactly_once(&lines(), &[("access", 200)]);
    assert!(problems.is_empty(), "{problems}");
    // The access log's levels differ by status code: several streams, one per level.
    let levels: BTreeSet<String> = lines()
        .iter()
        .map(|l| l["log_level"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(levels.len(), 3, "{levels:?}");
}

#[test]
fn a_server_that_never_answers_times_out_is_retried_and_does_not_hold_shutdown() {
    let mut pod = Pod::new();
    let mut hung = 0;
    let server = FakeServer::start(move |_| {
        hung += 1;
        (hung > 2).then(|| Response::status(200))
    });
    configure(
        &pod,
        "",
        &format!(
            "  - type: http\n    url: {}\n    timeouts: {{connect: 1s, request: 1s}}\n    retry: {{initial_backoff: 50ms, max_backoff: 100ms}}\n",
            server.url()
        ),
        false,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(100);
    let stages = pod.start_all();
    server.wait_for("100 records", || received(&server).len() >= 100);
    std::thread::sleep(Duration::from_millis(300));
    let requests = server.requests();
    assert_eq!(requests[0].status, None);
    assert_eq!(requests[1].status, None);
    assert!(
        requests[1].at.duration_since(requests[0].at) >= Duration::from_millis(1000),
        "the first request was given up after its 1s timeout"
    );
    // The batch of the unanswered requests was sent again and taken: each line once.
    assert_eq!(
        requests[1].body, requests[0].body,
        "the same batch is retried"
    );
    let problems = exactly_once(&received(&server), &[("access", 100)]);
    assert!(problems.is_empty(), "{problems}");
    let forwarder = &stages[2];
    let log = std::fs::read_to_string(&forwarder.log).unwrap();
    assert!(log.contains("timed out"), "{log}");
    drop(stages);

    // Now a server that never answers at all, and a SIGTERM: the exit stays within the
    // grace period (2 s here), leaving the batch uncommitted for the next start.
    let mut pod = Pod::new();
    let server = FakeServer::start(|_| None);
    configure(
        &pod,
        "",
        &format!("  - type: http\n    url: {}\n", server.url()),
        false,
    );
    pod.extra_args.insert(
        StageKind::Forwarder,
        vec!["--grace-period".into(), "2s".into()],
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(10);
    let mut stages = pod.start_all();
    assert!(wait_until(TIMEOUT, || !server.requests().is_empty()));
    let forwarder = stages.pop().unwrap();
    let (_, took) = forwarder.terminate(Duration::from_secs(10));
    assert!(took < Duration::from_secs(4), "exit took {took:?}");
}

#[test]
fn after_an_outage_and_a_kill_9_mid_batch_the_ids_received_equal_the_ids_sent() {
    let mut pod = Pod::new();
    let outage = outage();
    let started = Instant::now();
    let server = FakeServer::start(move |req| {
        if started.elapsed() < outage {
            return Some(Response::status(503));
        }
        // A slow cluster: the forwarder is killed while requests are in flight.
        std::thread::sleep(Duration::from_millis(30));
        let items = bulk_pairs(req)
            .iter()
            .map(|(a, d)| {
                let id = check_bulk_action(a, d);
                json!({"index": {"_id": id, "status": 201}})
            })
            .collect();
        Some(bulk_reply(items))
    });
    configure(
        &pod,
        "delivery: decoupled\n",
        &format!(
            "  - type: elasticsearch\n    url: {}\n    batch: {{max_records: 40}}\n    retry: {{initial_backoff: 50ms, max_backoff: 200ms}}\n",
            server.url()
        ),
        true,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(1500);
    let mut stages = pod.start_all();
    // Indexed documents: what the server accepted (a reply cut off by the kill included).
    let docs = |server: &FakeServer| -> usize {
        server.accepted().iter().map(|r| bulk_pairs(r).len()).sum()
    };
    server.wait_for("300 documents", || docs(&server) >= 300);
    stages.pop().unwrap().kill9();
    app.write(500);
    stages.push(pod.start(StageKind::Forwarder));
    let _ = pod.wait_delivered(2000, TIMEOUT);
    server.wait_for("2000 ids", || {
        let ids: BTreeSet<String> = server
            .requests()
            .iter()
            .flat_map(bulk_pairs)
            .map(|(a, _)| a["index"]["_id"].as_str().unwrap().to_owned())
            .collect();
        ids.len() >= 2000
    });
    // What was sent: the journal's records, as the exactly-once file sink holds them.
    let sent = pod.delivered();
    let problems = exactly_once(&sent, &[("access", 2000)]);
    assert!(problems.is_empty(), "{problems}");
    let sent_ids: BTreeSet<String> = sent
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    let mut by_id: BTreeMap<String, Value> = BTreeMap::new();
    for (action, doc) in server.accepted().iter().flat_map(bulk_pairs) {
        let id = action["index"]["_id"].as_str().unwrap().to_owned();
        // A repeat after the kill carries the very same document: it collapses on _id.
        if let Some(before) = by_id.insert(id, doc.clone()) {
            assert_eq!(before, doc);
        }
    }
    let received_ids: BTreeSet<String> = by_id.keys().cloned().collect();
    assert_eq!(received_ids, sent_ids);
}

#[test]
fn decoupled_sinks_keep_going_while_one_is_down_and_it_catches_up() {
    let mut pod = Pod::new();
    let down = Arc::new(AtomicBool::new(true));
    let is_down = down.clone();
    let server = FakeServer::start(move |_| {
        Some(Response::status(if is_down.load(Ordering::Relaxed) {
            503
        } else {
            200
        }))
    });
    configure(
        &pod,
        "delivery: decoupled\n",
        &format!(
            "  - type: http\n    url: {}\n    retry: {{initial_backoff: 50ms, max_backoff: 200ms}}\n",
            server.url()
        ),
        true,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(300);
    let mut stages = pod.start_all();
    // The file sink gets everything while the http sink is down.
    let records = pod.wait_delivered(300, TIMEOUT);
    assert!(exactly_once(&records, &[("access", 300)]).is_empty());
    assert!(received(&server).is_empty());
    assert!(!server.requests().is_empty(), "the http sink kept trying");
    // The checkpoint: per-sink positions, the cursor at the slowest (the http sink's). The
    // file sink's lane commits within its commit_interval (1 s) of delivering; until then its
    // position is the start, where the checkpoint begins every sink.
    let mut cursor = Value::Null;
    assert!(wait_until(Duration::from_secs(10), || {
        cursor = e2e_tests::checkpoint(&pod.path("processed/readers/forwarder.json"));
        cursor["state"]["positions"]["archive"]["offset"].as_u64() > Some(0)
    }));
    let positions = &cursor["state"]["positions"];
    assert_eq!(cursor["position"], positions["http"], "{cursor}");
    assert_ne!(positions["archive"], positions["http"], "{cursor}");
    // A restart while it is still down keeps both where they were.
    stages.pop().unwrap().terminate(Duration::from_secs(15));
    app.write(100);
    stages.push(pod.start(StageKind::Forwarder));
    let records = pod.wait_delivered(400, TIMEOUT);
    assert!(exactly_once(&records, &[("access", 400)]).is_empty());
    down.store(false, Ordering::Relaxed);
    server.wait_for("400 records", || received(&server).len() >= 400);
    std::thread::sleep(Duration::from_millis(300));
    let problems = exactly_once(&received(&server), &[("access", 400)]);
    assert!(problems.is_empty(), "{problems}");
    assert!(exactly_once(&pod.delivered(), &[("access", 400)]).is_empty());
}

#[test]
fn switching_back_to_all_or_nothing_catches_the_lagging_sink_up_without_repeats() {
    let mut pod = Pod::new();
    let down = Arc::new(AtomicBool::new(true));
    let is_down = down.clone();
    let server = FakeServer::start(move |_| {
        Some(Response::status(if is_down.load(Ordering::Relaxed) {
            503
        } else {
            200
        }))
    });
    let sink = format!(
        "  - type: http\n    url: {}\n    retry: {{initial_backoff: 50ms, max_backoff: 200ms}}\n",
        server.url()
    );
    configure(&pod, "delivery: decoupled\n", &sink, true);
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(200);
    let mut stages = pod.start_all();
    pod.wait_delivered(200, TIMEOUT);
    stages.pop().unwrap().terminate(Duration::from_secs(15));
    // The http sink is 200 records behind the file sink; one position for both from now on.
    configure(&pod, "delivery: all_or_nothing\n", &sink, true);
    down.store(false, Ordering::Relaxed);
    app.write(100);
    stages.push(pod.start(StageKind::Forwarder));
    let records = pod.wait_delivered(300, TIMEOUT);
    let problems = exactly_once(&records, &[("access", 300)]);
    assert!(problems.is_empty(), "file sink: {problems}");
    server.wait_for("300 records", || received(&server).len() >= 300);
    std::thread::sleep(Duration::from_millis(300));
    let problems = exactly_once(&received(&server), &[("access", 300)]);
    assert!(problems.is_empty(), "http sink: {problems}");
    let log = std::fs::read_to_string(&stages[2].log).unwrap();
    assert!(log.contains("catching it up alone first"), "{log}");
}

#[test]
fn a_trickle_of_lines_is_gathered_into_few_requests_by_the_linger() {
    let mut pod = Pod::new();
    let server = FakeServer::start(|_| Some(Response::status(200)));
    configure(
        &pod,
        "",
        &format!(
            "  - type: http\n    url: {}\n    batch: {{linger: 500ms}}\n",
            server.url()
        ),
        false,
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    let _stages = pod.start_all();
    // 40 lines, one every 25 ms: without a linger, about one request per line.
    for _ in 0..40 {
        app.write(1);
        std::thread::sleep(Duration::from_millis(25));
    }
    server.wait_for("40 records", || received(&server).len() >= 40);
    let problems = exactly_once(&received(&server), &[("access", 40)]);
    assert!(problems.is_empty(), "{problems}");
    let requests = server.requests().len();
    assert!(requests <= 8, "{requests} requests for 40 lines over 1 s");
}

/// An HTTPS receiver (rustls) that requires a client certificate from the test CA and
/// answers 200 to every request; returns its port and the records it received.
fn start_tls_server(dir: &Path) -> (u16, Arc<Mutex<Vec<Value>>>) {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let records: Arc<Mutex<Vec<Value>>> = Arc::default();
    let got = records.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let (config, got) = (config.clone(), got.clone());
            std::thread::spawn(move || {
                let connection = rustls::ServerConnection::new(config).unwrap();
                let mut tls = BufReader::new(rustls::StreamOwned::new(connection, stream));
                let never = AtomicBool::new(false);
                while let Some(request) = read_request(&mut tls, &never) {
                    got.lock().unwrap().extend(request.lines());
                    let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
                    if tls.get_mut().write_all(reply).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, records)
}

#[test]
fn https_with_a_private_ca_and_a_client_certificate() {
    let mut pod = Pod::new();
    let certs = pod.path("certs");
    make_certificates(&certs);
    let (port, records) = start_tls_server(&certs);
    let sink = |tls: &str| {
        format!(
            "  - type: http\n    url: https://127.0.0.1:{port}/ingest\n    gzip: true\n    retry: {{initial_backoff: 50ms, max_backoff: 200ms}}\n{tls}"
        )
    };
    // Without our CA the server's certificate is refused: retried, nothing delivered.
    configure(&pod, "", &sink(""), false);
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(50);
    let mut stages = pod.start_all();
    let log = stages[2].log.clone();
    assert!(wait_until(TIMEOUT, || std::fs::read_to_string(&log)
        .unwrap()
        .contains("UnknownIssuer")));
    assert!(records.lock().unwrap().is_empty());
    stages.pop().unwrap().terminate(Duration::from_secs(15));
    // With the CA and a client certificate from it: everything arrives once.
    let c = |f: &str| certs.join(f).display().to_string();
    configure(
        &pod,
        "",
        &sink(&format!(
            "    tls: {{ca_file: {}, client_cert_file: {}, client_key_file: {}}}\n",
            c("ca.pem"),
            c("client.pem"),
            c("client.key")
        )),
        false,
    );
    stages.push(pod.start(StageKind::Forwarder));
    assert!(wait_until(TIMEOUT, || records.lock().unwrap().len() >= 50));
    std::thread::sleep(Duration::from_millis(300));
    let problems = exactly_once(&records.lock().unwrap(), &[("access", 50)]);
    assert!(problems.is_empty(), "{problems}");
}

/// The default rules' `WebApiErrorBurst` (120 ERROR lines in error.log within a minute),
/// delivered to a webhook at `url`.
fn configure_alert_webhook(pod: &Pod, url: &str) {
    configure(
        pod,
        &format!(
            "alerts:\n  rules_file: {}\n  webhook:\n    url: {url}/hook\n    retry: {{initial_backoff: 100ms, max_backoff: 500ms}}\n",
            pod.path("rules.yaml").display()
        ),
        "",
        true,
    );
    let burst: String = (0..130)
        .map(|i| format!("2026-11-22 10:31:02,481 - web-api - ERROR - Database connection timeout (request_id=r{i})\n"))
        .collect();
    e2e_tests::append(pod, "error.log", &burst);
}

#[test]
fn an_alert_rides_out_a_webhook_outage_and_arrives_in_the_webhook_format() {
    let mut pod = Pod::new();
    let mut answered = 0;
    let server = FakeServer::start(move |_| {
        answered += 1;
        Some(Response::status(if answered <= 2 { 503 } else { 200 }))
    });
    configure_alert_webhook(&pod, &server.url());
    let _stages = pod.start_all();
    server.wait_for("the alert after the outage", || {
        !server.accepted().is_empty()
    });
    let requests = server.requests();
    assert!(requests.len() >= 3, "two 503s, then the same alert again");
    // The retry sends the same alert (only `endsAt`, a resend horizon from now, moves).
    let alerts = |r: &Request| -> Vec<(Value, Value)> {
        let hook: Value = serde_json::from_slice(&r.body).unwrap();
        let list = hook["alerts"].as_array().unwrap().clone();
        list.into_iter()
            .map(|a| (a["labels"].clone(), a["startsAt"].clone()))
            .collect()
    };
    assert_eq!(alerts(&requests[0]), alerts(&requests[2]));
    let hook: Value = serde_json::from_slice(&server.accepted()[0].body).unwrap();
    assert_eq!(hook["status"], "firing");
    assert_eq!(hook["sender"], "log-forwarder");
    let alert = &hook["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["alertname"], "WebApiErrorBurst");
    assert_eq!(alert["labels"]["source_file"], "error.log");
    assert_eq!(
        alert["annotations"]["summary"],
        "120 errors within 1m in error.log"
    );
    assert!(
        alert["startsAt"].as_str().unwrap().ends_with('Z'),
        "{alert}"
    );
    assert_eq!(requests[0].path, "/hook");
    assert_eq!(requests[0].header("content-type"), Some("application/json"));
}

#[test]
fn an_alert_the_webhook_refuses_for_good_is_dead_lettered_and_records_go_on() {
    let mut pod = Pod::new();
    let server = FakeServer::start(|_| Some(Response::json(400, json!({"error": "bad alert"}))));
    configure_alert_webhook(&pod, &server.url());
    let _stages = pod.start_all();
    // The alerts sink's dead-letter journal; each entry names the target that refused it.
    server.wait_for("the dead-lettered alert", || {
        !dead_letters(&pod, "alerts").is_empty()
    });
    let letter = &dead_letters(&pod, "alerts")[0];
    assert_eq!(letter["sink"], "alerts-webhook");
    assert_eq!(letter["status"], 400);
    assert_eq!(letter["record"]["rule"], "WebApiErrorBurst");
    assert!(
        letter["reason"].as_str().unwrap().contains("bad alert"),
        "{letter}"
    );
    // The records that fired it were committed and delivered all the same.
    pod.wait_delivered(130, TIMEOUT);
}
