//! The otlp sink on the real binaries. (Issue #16.)
//!
//! No OpenTelemetry Collector can run here, so [`FakeServer`] stands in for an OTLP/HTTP
//! receiver: it takes `POST /v1/logs` and decodes each body with the published protobuf
//! definitions of opentelemetry-proto (prost for protobuf, the crate's serde for OTLP/JSON),
//! checking the content type and the OTLP/JSON encoding rules on the way. The file sink
//! `archive` receives the same records and is the reference: each record the processor
//! committed must arrive once as a LogRecord whose body, severity, times, attributes and
//! resource say what the record says. The processor reads its pod from the in-test API server
//! of `e2e_tests::kube_api`, so the resource carries real pod metadata.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e_tests::fake_http::{FakeServer, Request, Response};
use e2e_tests::kube_api::{web_pod, FakeApiServer};
use e2e_tests::{
    dead_letters, exactly_once, http_get, outage, unix_millis, wait_until, Pod, StageKind, Writer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Kind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use serde_json::{json, Map, Value};

const TIMEOUT: Duration = Duration::from_secs(60);
const NAMESPACE: &str = "demo";
const POD_NAME: &str = "web-7c9d5-x2p4q";

/// One LogRecord as received, with its resource's attributes.
#[derive(Debug, Clone)]
struct Received {
    resource: BTreeMap<String, Value>,
    scope: (String, String),
    log: LogRecord,
}

impl Received {
    fn attributes(&self) -> Map<String, Value> {
        attributes(&self.log.attributes)
    }

    /// The record as JSON enough for `exactly_once`: its attributes (`file`, `seq`).
    fn as_record(&self) -> Value {
        Value::Object(self.attributes())
    }
}

/// An `AnyValue` as the JSON value it came from.
fn json_of(value: &AnyValue) -> Value {
    match &value.value {
        None => Value::Null,
        Some(Kind::StringValue(s)) => json!(s),
        Some(Kind::BoolValue(b)) => json!(b),
        Some(Kind::IntValue(i)) => json!(i),
        Some(Kind::DoubleValue(d)) => json!(d),
        Some(Kind::ArrayValue(a)) => Value::Array(a.values.iter().map(json_of).collect()),
        Some(Kind::KvlistValue(l)) => Value::Object(attributes(&l.values)),
        Some(other) => panic!("a record never holds {other:?}"),
    }
}

fn attributes(list: &[KeyValue]) -> Map<String, Value> {
    let mut map = Map::new();
    for kv in list {
        let value = json_of(kv.value.as_ref().expect("every attribute has a value"));
        assert!(
            map.insert(kv.key.clone(), value).is_none(),
            "attribute keys are unique: {}",
            kv.key
        );
    }
    map
}

/// The LogRecords of a request, checking the structure every request must have.
fn log_records(request: &ExportLogsServiceRequest) -> Vec<Received> {
    let mut out = Vec::new();
    for rl in &request.resource_logs {
        let resource = attributes(&rl.resource.as_ref().expect("a resource").attributes);
        assert_eq!(rl.scope_logs.len(), 1, "one scope per resource");
        let scope = rl.scope_logs[0].scope.as_ref().expect("a scope");
        assert!(!rl.scope_logs[0].log_records.is_empty());
        for log in &rl.scope_logs[0].log_records {
            out.push(Received {
                resource: resource.clone().into_iter().collect(),
                scope: (scope.name.clone(), scope.version.clone()),
                log: log.clone(),
            });
        }
    }
    out
}

/// Decodes a protobuf request body with the published definitions.
fn decode_protobuf(request: &Request) -> ExportLogsServiceRequest {
    assert_eq!(request.path, "/otlp/v1/logs");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf")
    );
    ExportLogsServiceRequest::decode(&request.body[..]).expect("the body is protobuf")
}

/// Decodes an OTLP/JSON request body, checking the encoding rules the spec sets beyond the
/// protobuf JSON mapping: lowerCamelCase names, 64-bit integers as strings, enums as numbers.
fn decode_json(request: &Request) -> ExportLogsServiceRequest {
    assert_eq!(request.path, "/otlp/v1/logs");
    assert_eq!(request.header("content-type"), Some("application/json"));
    let json: Value = serde_json::from_slice(&request.body).expect("the body is JSON");
    for rl in json["resourceLogs"].as_array().expect("resourceLogs") {
        for log in rl["scopeLogs"][0]["logRecords"]
            .as_array()
            .expect("logRecords")
        {
            let observed = log["observedTimeUnixNano"].as_str().expect("a string");
            assert!(observed.parse::<u64>().unwrap() > 0, "{log}");
            assert!(log["timeUnixNano"].is_string(), "{log}");
            assert!(log["severityNumber"].is_u64(), "{log}");
            let seq = log["attributes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["key"] == "seq")
                .expect("a seq attribute");
            assert!(seq["value"]["intValue"].is_string(), "{seq}");
        }
    }
    serde_json::from_value(json).expect("the crate's serde reads OTLP/JSON")
}

/// Every LogRecord in the requests the server answered with 2xx.
fn received(
    server: &FakeServer,
    decode: fn(&Request) -> ExportLogsServiceRequest,
) -> Vec<Received> {
    server
        .accepted()
        .iter()
        .flat_map(|r| log_records(&decode(r)))
        .collect()
}

fn protobuf_reply(response: &ExportLogsServiceResponse) -> Response {
    Response {
        status: 200,
        headers: vec![("Content-Type", "application/x-protobuf".into())],
        body: response.encode_to_vec(),
    }
}

/// Writes the forwarder's config: the otlp sink (with `extra` keys) and the file sink
/// `archive`, the reference of what was read from the journal.
fn configure(pod: &Pod, server: &FakeServer, extra: &str) {
    std::fs::write(
        pod.path("forwarder.yaml"),
        format!(
            "report:\n  interval: 1s\nsinks:\n  - type: otlp\n    url: {}/otlp\n    resource: {{service.name: shop, k8s.cluster.name: test}}\n    retry: {{initial_backoff: 100ms, max_backoff: 400ms}}\n    batch: {{max_records: 100, linger: 20ms}}\n{extra}  - type: file\n    name: archive\n    directory: {}\n",
            server.url(),
            pod.path("out").display()
        ),
    )
    .unwrap();
}

fn metric(port: u16, name: &str) -> f64 {
    let (_, body) = http_get(port, "/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An application logging JSON lines with a message and a level, `file: app`.
fn write_app_lines(pod: &Pod, from: u64, to: u64) {
    let levels = ["debug", "info", "warning", "error"];
    let mut text = String::new();
    for seq in from..to {
        text.push_str(&format!(
            "2026-11-22 10:30:45,123 - {{\"file\":\"app\",\"seq\":{seq},\"message\":\"hello {seq} \\\"quoted\\\"\",\"level\":\"{}\",\"ratio\":0.5,\"tags\":[\"a\",{seq}],\"user\":{{\"id\":{seq}}}}}\n",
            levels[(seq % 4) as usize]
        ));
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(pod.path("logs/app.log"))
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

/// Checks one LogRecord against the record the archive holds: body, severity, times,
/// attributes and, when `kubernetes` metadata is there, the resource.
fn check_log(got: &Received, record: &Value) {
    let id = record["id"].as_str().unwrap();
    let log = &got.log;
    assert_eq!(
        got.scope,
        (
            "log-sidecars".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned()
        )
    );
    // The body is the message; access lines (JSON without one) have none.
    let body = log.body.as_ref().map(json_of);
    assert_eq!(body.as_ref(), record.get("message"), "{id}: body");
    let level = record["log_level"].as_str().unwrap();
    assert_eq!(log.severity_text, level, "{id}");
    let number = match level {
        "DEBUG" => 5,
        "INFO" => 9,
        "WARNING" => 13,
        "ERROR" => 17,
        other => panic!("{id}: level {other}"),
    };
    assert_eq!(log.severity_number, number, "{id}: severity of {level}");
    assert_eq!(
        log.observed_time_unix_nano,
        u64::try_from(unix_millis(record["collected_at"].as_str().unwrap())).unwrap() * 1_000_000,
        "{id}: observed time is collected_at"
    );
    // The demo layout's timestamp (`2026-11-22 10:30:45,123`) is not RFC 3339: no event time,
    // and the text stays an attribute.
    assert_eq!(log.time_unix_nano, 0, "{id}");
    let mut want = record.as_object().unwrap().clone();
    for consumed in ["message", "log_level", "collected_at", "kubernetes"] {
        want.remove(consumed);
    }
    for (from, to) in [("id", "log.record.uid"), ("source_file", "log.file.name")] {
        let value = want.remove(from).unwrap();
        want.insert(to.into(), value);
    }
    assert_eq!(got.attributes(), want, "{id}: attributes");

    let mut resource = BTreeMap::from([
        ("service.name".to_owned(), json!("shop")),
        ("k8s.cluster.name".to_owned(), json!("test")),
    ]);
    if let Some(k) = record.get("kubernetes") {
        for (key, field) in [
            ("k8s.namespace.name", "namespace"),
            ("k8s.pod.name", "pod_name"),
            ("k8s.pod.uid", "pod_uid"),
            ("k8s.node.name", "node_name"),
        ] {
            if let Some(value) = k.get(field) {
                resource.insert(key.into(), value.clone());
            }
        }
        for (name, value) in k["labels"].as_object().into_iter().flatten() {
            resource.insert(format!("k8s.pod.label.{name}"), value.clone());
        }
        for (name, value) in k["annotations"].as_object().into_iter().flatten() {
            resource.insert(format!("k8s.pod.annotation.{name}"), value.clone());
        }
        for owner in k["owner_chain"].as_array().into_iter().flatten() {
            let key = match owner["kind"].as_str().unwrap() {
                "ReplicaSet" => "k8s.replicaset.name",
                "Deployment" => "k8s.deployment.name",
                other => panic!("owner kind {other}"),
            };
            resource.insert(key.into(), owner["name"].clone());
        }
        if let Some(images) = k.get("container_images") {
            resource.insert("kubernetes.container_images".into(), images.clone());
        }
    }
    assert_eq!(got.resource, resource, "{id}: resource");
}

/// Checks every archived record against its LogRecord (found by `log.record.uid`).
fn check_all(records: &[Value], received: &[Received]) {
    let by_id: HashMap<&str, &Received> = received
        .iter()
        .map(|r| {
            let Some(Kind::StringValue(id)) = r
                .log
                .attributes
                .iter()
                .find(|a| a.key == "log.record.uid")
                .and_then(|a| a.value.as_ref()?.value.as_ref())
            else {
                panic!("every LogRecord has log.record.uid: {r:?}")
            };
            (id.as_str(), r)
        })
        .collect();
    for record in records {
        let id = record["id"].as_str().unwrap();
        check_log(
            by_id.get(id).unwrap_or_else(|| panic!("{id} not received")),
            record,
        );
    }
}

#[test]
fn every_line_arrives_once_as_a_log_record_with_its_pod_as_the_resource() {
    let api = FakeApiServer::start(vec![web_pod(POD_NAME, NAMESPACE, "frontend")], false);
    let mut pod = Pod::new();
    pod.extra_args.insert(
        StageKind::Processor,
        [
            "--kubernetes-metadata",
            "api",
            "--kubernetes-api-url",
            &api.url(),
        ]
        .map(str::to_owned)
        .to_vec(),
    );
    pod.extra_env.insert(
        StageKind::Processor,
        [
            ("POD_NAME", POD_NAME),
            ("POD_NAMESPACE", NAMESPACE),
            ("NODE_NAME", "node-1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .to_vec(),
    );
    let server = FakeServer::start(|req| {
        decode_protobuf(req);
        Some(protobuf_reply(&ExportLogsServiceResponse::default()))
    });
    configure(&pod, &server, "");
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(300);
    write_app_lines(&pod, 0, 100);
    let stages = pod.start_all();
    server.wait_for("400 log records", || {
        received(&server, decode_protobuf).len() >= 400
    });
    // A label changes: the records after it carry another resource.
    api.update(POD_NAME, |p| {
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("tier".into(), "canary".into());
    });
    let mut next = 100;
    let relabelled = wait_until(TIMEOUT, || {
        write_app_lines(&pod, next, next + 10);
        next += 10;
        std::thread::sleep(Duration::from_millis(300));
        received(&server, decode_protobuf)
            .iter()
            .any(|r| r.resource.get("k8s.pod.label.tier") == Some(&json!("canary")))
    });
    assert!(relabelled, "the new label reached the resource");
    let records = pod.wait_delivered(300 + next as usize, TIMEOUT);
    server.wait_for("every record", || {
        received(&server, decode_protobuf).len() >= records.len()
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = received(&server, decode_protobuf);
    let as_records: Vec<Value> = got.iter().map(Received::as_record).collect();
    let access_lines: Vec<Value> = as_records
        .iter()
        .filter(|r| r["file"] == "access")
        .cloned()
        .collect();
    let app_lines: Vec<Value> = as_records
        .iter()
        .filter(|r| r["file"] == "app")
        .cloned()
        .collect();
    let problems = exactly_once(&access_lines, &[("access", 300)]);
    assert!(problems.is_empty(), "access: {problems}");
    let problems = exactly_once(&app_lines, &[("app", next)]);
    assert!(problems.is_empty(), "app: {problems}");
    assert_eq!(got.len(), records.len());
    check_all(&records, &got);
    // Every severity was seen, and the metadata was the API's (uid, owners) throughout.
    let severities: BTreeSet<i32> = got.iter().map(|r| r.log.severity_number).collect();
    assert_eq!(severities, BTreeSet::from([5, 9, 13, 17]));
    let tiers: BTreeSet<&str> = got
        .iter()
        .filter_map(|r| r.resource.get("k8s.pod.label.tier")?.as_str())
        .collect();
    assert_eq!(tiers, BTreeSet::from(["frontend", "canary"]));
    for r in &got {
        assert_eq!(r.resource["k8s.deployment.name"], "web", "{:?}", r.resource);
        assert_eq!(r.resource["k8s.replicaset.name"], "web-7c9d5");
        assert_eq!(r.resource["k8s.pod.uid"], "0d1f5c3e-uid");
    }
    // Records of one pod version share one ResourceLogs per request.
    for request in server.accepted() {
        let decoded = decode_protobuf(&request);
        let tiers: Vec<_> = decoded
            .resource_logs
            .iter()
            .map(|rl| {
                let resource = attributes(&rl.resource.as_ref().unwrap().attributes);
                resource["k8s.pod.label.tier"].as_str().unwrap().to_owned()
            })
            .collect();
        let distinct: BTreeSet<_> = tiers.iter().collect();
        assert_eq!(tiers.len(), distinct.len(), "one ResourceLogs per resource");
    }
    let forwarder = &stages[2];
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_sent_records_total{sink=\"otlp\"}"
        ),
        records.len() as f64
    );
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_otlp_rejected_records_total{sink=\"otlp\"}"
        ),
        0.0
    );
}

#[test]
fn json_encoding_with_gzip_follows_the_otlp_json_rules() {
    let mut pod = Pod::new();
    let server = FakeServer::start(|req| {
        assert_eq!(req.header("content-encoding"), Some("gzip"));
        decode_json(req);
        Some(Response::json(200, json!({})))
    });
    configure(&pod, &server, "    encoding: json\n    gzip: true\n");
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(200);
    write_app_lines(&pod, 0, 100);
    let stages = pod.start_all();
    server.wait_for("300 log records", || {
        received(&server, decode_json).len() >= 300
    });
    let records = pod.wait_delivered(300, TIMEOUT);
    std::thread::sleep(Duration::from_millis(300));
    let got = received(&server, decode_json);
    let as_records: Vec<Value> = got.iter().map(Received::as_record).collect();
    let problems = exactly_once(&as_records, &[("access", 200), ("app", 100)]);
    assert!(problems.is_empty(), "{problems}");
    check_all(&records, &got);
    let forwarder = &stages[2];
    assert!(
        metric(
            forwarder.port,
            "forwarder_sink_sent_bytes_total{sink=\"otlp\"}"
        ) > 0.0
    );
}

#[test]
fn a_503_outage_is_ridden_out_with_no_loss_or_repeat() {
    let mut pod = Pod::new();
    let outage = outage();
    let started = Instant::now();
    let server = FakeServer::start(move |req| {
        decode_protobuf(req);
        if started.elapsed() < outage {
            return Some(Response::status(503));
        }
        Some(Response::status(200))
    });
    configure(&pod, &server, "");
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(500);
    let stages = pod.start_all();
    server.wait_for("500 log records", || {
        received(&server, decode_protobuf).len() >= 500
    });
    std::thread::sleep(Duration::from_millis(300));
    let got: Vec<Value> = received(&server, decode_protobuf)
        .iter()
        .map(Received::as_record)
        .collect();
    let problems = exactly_once(&got, &[("access", 500)]);
    assert!(problems.is_empty(), "{problems}");
    let refused = server
        .requests()
        .iter()
        .filter(|r| r.status == Some(503))
        .count();
    assert!(
        refused >= 2,
        "the outage was seen ({refused} requests refused)"
    );
    let forwarder = &stages[2];
    assert!(
        metric(
            forwarder.port,
            "forwarder_sink_retries_total{sink=\"otlp\"}"
        ) >= 2.0
    );
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_dead_lettered_records_total{sink=\"otlp\"}"
        ),
        0.0
    );
    let log = std::fs::read_to_string(&forwarder.log).unwrap();
    assert!(log.contains("HTTP 503"), "{log}");
}

#[test]
fn a_partial_success_keeps_the_whole_request_in_the_dead_letter_journal() {
    let mut pod = Pod::new();
    // The ids of the request answered with a partial success (the one holding seq 137).
    let partial: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = partial.clone();
    let server = FakeServer::start(move |req| {
        let logs = log_records(&decode_protobuf(req));
        let mut ids = Vec::new();
        let mut has_137 = false;
        for r in &logs {
            let a = r.attributes();
            ids.push(a["log.record.uid"].as_str().unwrap().to_owned());
            has_137 |= a["seq"] == 137;
        }
        let mut partial = seen.lock().unwrap();
        if has_137 && partial.is_empty() {
            *partial = ids;
            return Some(protobuf_reply(&ExportLogsServiceResponse {
                partial_success: Some(ExportLogsPartialSuccess {
                    rejected_log_records: 1,
                    error_message: "log record 137 is too old".into(),
                }),
            }));
        }
        Some(protobuf_reply(&ExportLogsServiceResponse::default()))
    });
    configure(&pod, &server, "");
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    access.write(400);
    let stages = pod.start_all();
    server.wait_for("400 log records and the dead letters", || {
        let partial = partial.lock().unwrap().len();
        received(&server, decode_protobuf).len() >= 400
            && partial > 0
            && dead_letters(&pod, "otlp").len() >= partial
    });
    std::thread::sleep(Duration::from_millis(300));
    // Nothing is sent twice: the partly rejected request is not retried.
    let got: Vec<Value> = received(&server, decode_protobuf)
        .iter()
        .map(Received::as_record)
        .collect();
    let problems = exactly_once(&got, &[("access", 400)]);
    assert!(problems.is_empty(), "{problems}");
    // Every record of that request is in the dead-letter journal, once, with the reason.
    let partial = partial.lock().unwrap().clone();
    assert!(
        partial.len() > 1 && partial.len() <= 100,
        "{}",
        partial.len()
    );
    let letters = dead_letters(&pod, "otlp");
    let dead: Vec<String> = letters
        .iter()
        .map(|l| l["record"]["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(dead, partial, "the request's records, in order");
    let reason = format!(
        "partial success: the server rejected 1 of {} records: log record 137 is too old",
        partial.len()
    );
    for l in &letters {
        assert_eq!(l["sink"], "otlp");
        assert_eq!(l["status"], 200);
        assert_eq!(l["reason"], reason.as_str());
    }
    let forwarder = &stages[2];
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_otlp_rejected_records_total{sink=\"otlp\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_dead_lettered_records_total{sink=\"otlp\"}"
        ),
        partial.len() as f64
    );
    assert_eq!(
        metric(
            forwarder.port,
            "forwarder_sink_sent_records_total{sink=\"otlp\"}"
        ),
        (400 - partial.len()) as f64
    );
}
