//! The splunk_hec sink on the real binaries. (Issue #16.)
//!
//! Splunk cannot run here, so [`FakeServer`] stands in for its HTTP Event Collector and checks
//! the documented wire format: `POST /services/collector/event` with `Authorization: Splunk
//! <token>`, a body of concatenated event objects (`time` in epoch seconds, `index`, `source`,
//! `sourcetype`, `host`, `event`), `{"text":"Success","code":0,"ackId":N}` replies, the
//! `X-Splunk-Request-Channel` header, `POST /services/collector/ack` with `{"acks":[…]}`
//! answered `{"acks":{"N":true}}`, and refusals naming the event HEC stopped at
//! (`invalid-event-number`). Like Splunk, the stand-in treats events as indexed only once it
//! has acknowledged them, and forgets acknowledgements it has reported.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use e2e_tests::fake_http::{FakeServer, Request, Response};
use e2e_tests::{dead_letters, exactly_once, metric, wait_until, Pod, Writer};
use serde_json::{json, Value};

const TOKEN: &str = "11111111-2222-3333-4444-555555555555";

/// What the stand-in HEC has taken.
#[derive(Default)]
struct Hec {
    next_ack: u64,
    /// Events of requests taken under an ackId, not yet acknowledged, and how often they were
    /// asked about.
    pending: HashMap<u64, (Vec<Value>, u32)>,
    /// Events indexed (acknowledged, or taken when acknowledgement is off).
    indexed: Vec<Value>,
    /// Event requests seen, and ack polls answered `false` while acknowledgements were held.
    event_requests: usize,
    held_polls: usize,
    /// The channel every request named.
    channels: BTreeSet<String>,
}

/// Checks one event against the format HEC documents and the sink's templates.
fn check_event(event: &Value) {
    let record = &event["event"];
    assert!(record.is_object(), "event is the record: {event}");
    let time = event["time"].as_f64().expect("time in epoch seconds");
    assert!(time > 1.7e9, "{event}");
    assert_eq!(event["source"], record["source_file"], "{event}");
    assert_eq!(event["sourcetype"], "_json");
    assert_eq!(
        event["index"],
        format!("logs-{}", record["log_level"].as_str().unwrap()),
        "{event}"
    );
}

/// The records the stand-in pretends belong to an index that does not exist.
fn in_missing_index(event: &Value) -> bool {
    event["event"]["seq"].as_u64().unwrap() % 100 == 7
}

fn start_hec(
    use_ack: bool,
    hold_acks: Arc<AtomicBool>,
    lose_ack: Option<u64>,
) -> (FakeServer, Arc<Mutex<Hec>>) {
    let hec: Arc<Mutex<Hec>> = Arc::default();
    let state = Arc::clone(&hec);
    let server = FakeServer::start(move |req: &Request| {
        assert_eq!(
            req.header("authorization"),
            Some(format!("Splunk {TOKEN}").as_str()),
            "the token from the secret file"
        );
        let mut hec = state.lock().unwrap();
        if use_ack {
            let channel = req
                .header("x-splunk-request-channel")
                .expect("a channel with indexer acknowledgement");
            assert_eq!(channel.len(), 36, "a GUID: {channel}");
            hec.channels.insert(channel.to_owned());
        }
        if req.path.starts_with("/services/collector/ack") {
            let asked: Value = serde_json::from_slice(&req.body).unwrap();
            let mut acks = serde_json::Map::new();
            for id in asked["acks"].as_array().expect("acks: [ids]") {
                let id = id.as_u64().unwrap();
                let held = hold_acks.load(Ordering::SeqCst) || Some(id) == lose_ack;
                let done = match hec.pending.get_mut(&id) {
                    Some((_, polls)) if !held => {
                        // Indexed by the second time it is asked about.
                        *polls += 1;
                        *polls >= 2
                    }
                    _ => false,
                };
                if held {
                    hec.held_polls += 1;
                }
                if done {
                    let (events, _) = hec.pending.remove(&id).unwrap();
                    hec.indexed.extend(events);
                }
                acks.insert(id.to_string(), Value::Bool(done));
            }
            return Some(Response::json(200, json!({ "acks": acks })));
        }
        assert_eq!(req.path, "/services/collector/event");
        hec.event_requests += 1;
        let events = req.lines();
        assert!(!events.is_empty());
        for event in &events {
            check_event(event);
        }
        // An index that does not exist: HEC stops at that event and names it (the
        // acknowledgement test has no such index).
        if let Some(at) = events
            .iter()
            .position(in_missing_index)
            .filter(|_| !use_ack)
        {
            hec.indexed.extend_from_slice(&events[..at]);
            return Some(Response::json(
                400,
                json!({"text": "Incorrect index", "code": 7, "invalid-event-number": at}),
            ));
        }
        if !use_ack {
            hec.indexed.extend(events);
            return Some(Response::json(200, json!({"text": "Success", "code": 0})));
        }
        let id = hec.next_ack;
        hec.next_ack += 1;
        hec.pending.insert(id, (events, 0));
        Some(Response::json(
            200,
            json!({"text": "Success", "code": 0, "ackId": id}),
        ))
    });
    (server, hec)
}

fn configure(pod: &Pod, server: &FakeServer, extra: &str) {
    std::fs::write(pod.path("hec-token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        pod.path("forwarder.yaml"),
        format!(
            "report:\n  interval: 1s\nsinks:\n  - type: splunk_hec\n    name: splunk\n    url: {}\n    auth: {{splunk: {{token_file: {}}}}}\n    index: 'logs-{{log_level}}'\n    sourcetype: _json\n    gzip: true\n    batch: {{max_records: 50}}\n    retry: {{initial_backoff: 50ms, max_backoff: 300ms}}\n{extra}",
            server.url(),
            pod.path("hec-token").display()
        ),
    )
    .unwrap();
}

fn indexed(hec: &Mutex<Hec>) -> Vec<Value> {
    hec.lock()
        .unwrap()
        .indexed
        .iter()
        .map(|e| e["event"].clone())
        .collect()
}

/// With `indexer_ack`, the forwarder counts events as delivered only once HEC acknowledges
/// them: nothing while acknowledgements are held, a request whose acknowledgement never comes
/// is sent again after the timeout, and in the end every line is indexed exactly once.
#[test]
fn with_indexer_ack_only_acknowledged_events_count_as_delivered() {
    let mut pod = Pod::new();
    let hold = Arc::new(AtomicBool::new(true));
    let (server, hec) = start_hec(true, Arc::clone(&hold), Some(1));
    configure(
        &pod,
        &server,
        "    indexer_ack: {timeout: 2s, poll_interval: 100ms}\n",
    );
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(300);
    let stages = pod.start_all();
    let forwarder = &stages[2];
    let sent = || {
        metric(
            forwarder.port,
            "forwarder_sink_sent_records_total{sink=\"splunk\"}",
        )
    };
    server.wait_for("acknowledgement polls while held", || {
        hec.lock().unwrap().held_polls >= 3
    });
    assert_eq!(
        sent(),
        0.0,
        "nothing counts as delivered before HEC acknowledges it"
    );
    assert!(indexed(&hec).is_empty());
    hold.store(false, Ordering::SeqCst);
    app.write(200);
    server.wait_for("500 indexed lines", || {
        let events = indexed(&hec);
        events
            .iter()
            .filter_map(|e| e["seq"].as_u64())
            .collect::<BTreeSet<_>>()
            .len()
            >= 500
    });
    assert!(wait_until(Duration::from_secs(10), || sent() >= 500.0));
    let events = indexed(&hec);
    let problems = exactly_once(&events, &[("access", 500)]);
    assert!(problems.is_empty(), "{problems}");
    let hec = hec.lock().unwrap();
    assert_eq!(hec.channels.len(), 1, "one channel per start");
    assert!(
        !hec.pending.contains_key(&0),
        "the first request was acknowledged once the hold ended"
    );
    assert!(
        hec.pending.contains_key(&1),
        "the request whose acknowledgement never came stays unacknowledged"
    );
    assert!(
        metric(
            forwarder.port,
            "forwarder_sink_retries_total{sink=\"splunk\"}"
        ) >= 1.0,
        "the unacknowledged request was sent again"
    );
    let log = std::fs::read_to_string(&forwarder.log).unwrap();
    assert!(log.contains("did not acknowledge"), "{log}");
    assert!(!log.contains(TOKEN), "the token never reaches the log");
}

/// An event HEC refuses for good (an index that does not exist) is dead-lettered; the events
/// before it in the request are not sent again and the ones after it are.
#[test]
fn an_event_hec_refuses_is_dead_lettered_and_its_neighbours_arrive_once() {
    let mut pod = Pod::new();
    let (server, hec) = start_hec(false, Arc::default(), None);
    configure(&pod, &server, "");
    let mut app = Writer::open(pod.path("logs/access.log"), "access");
    app.write(500);
    let stages = pod.start_all();
    let refused: BTreeSet<u64> = (0..500).filter(|s| s % 100 == 7).collect();
    let good = 500 - refused.len();
    server.wait_for("the good lines and the dead letters", || {
        indexed(&hec).len() >= good && dead_letters(&pod, "splunk").len() >= refused.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let events = indexed(&hec);
    let seqs: Vec<u64> = events.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let distinct: BTreeSet<u64> = seqs.iter().copied().collect();
    assert_eq!(seqs.len(), distinct.len(), "no event indexed twice");
    let expected: BTreeSet<u64> = (0..500).filter(|s| !refused.contains(s)).collect();
    assert_eq!(distinct, expected, "every other line, once");
    let letters = dead_letters(&pod, "splunk");
    let dead: BTreeSet<u64> = letters
        .iter()
        .map(|l| l["record"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(dead, refused);
    assert_eq!(letters.len(), refused.len(), "each once");
    for letter in &letters {
        assert_eq!(letter["status"], 400);
        assert_eq!(letter["reason"], "HEC code 7: Incorrect index");
    }
    let forwarder = &stages[2];
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_dead_lettered_records_total{sink=\"splunk\"}"
        ),
        refused.len() as f64
    );
}
