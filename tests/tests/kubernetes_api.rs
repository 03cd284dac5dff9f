//! Pod metadata from the Kubernetes API, end to end: the real collector, processor and
//! forwarder on real files, with the processor reading its own pod from an API server; and the
//! processor in node mode, adding to each record the metadata of the pod its line came from.
//!
//! No cluster runs on these machines: the API server is the in-test one of
//! `e2e_tests::kube_api`, which speaks the pods API's list and watch wire protocol (its doc
//! comment says how far). The processor never GETs a pod by name: the list by field selector is
//! that GET, and also gives the resourceVersion to watch from.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_tests::kube_api::{web_pod, FakeApiServer};
use e2e_tests::{bin, free_port, http_get, wait_until, Pod as TestPod, StageKind};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{json, Value};
use sidecar_core::journal::{self, JournalOptions, JournalReader, JournalWriter, Position};
use sidecar_core::record::{CollectedRecordOut, LineFlags, RecordId};

const NAMESPACE: &str = "demo";
const POD_NAME: &str = "web-7c9d5-x2p4q";

fn set_tier(pod: &mut Pod, tier: &str) {
    pod.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("tier".into(), tier.into());
}

/// A pod layout whose processor reads its metadata from `api_url` (`None`: in-cluster), with
/// a downwardAPI volume saying `tier="downward"`.
fn pod_with_api(api_url: Option<&str>) -> TestPod {
    let mut pod = TestPod::new();
    let podinfo = pod.path("podinfo");
    fs::create_dir(&podinfo).unwrap();
    fs::write(podinfo.join("labels"), "app=\"web\"\ntier=\"downward\"\n").unwrap();
    let mut args = vec![
        "--kubernetes-metadata".into(),
        "api".into(),
        "--podinfo-dir".into(),
        podinfo.display().to_string(),
    ];
    if let Some(url) = api_url {
        args.extend(["--kubernetes-api-url".into(), url.to_owned()]);
    }
    pod.extra_args.insert(StageKind::Processor, args);
    let env = [
        ("POD_NAME", POD_NAME),
        ("POD_NAMESPACE", NAMESPACE),
        ("NODE_NAME", "node-1"),
    ];
    pod.extra_env.insert(
        StageKind::Processor,
        env.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec(),
    );
    pod
}

fn append(pod: &TestPod, text: &str) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(pod.path("logs/app.log"))
        .unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// The `kubernetes` object of the first record delivered.
fn first_metadata(pod: &TestPod) -> Value {
    append(pod, "INFO first\n");
    let records = pod.wait_delivered(1, Duration::from_secs(15));
    records[0]["kubernetes"].clone()
}

/// Appends a line now and then until the newest delivered record's `kubernetes` object
/// satisfies `check`.
fn wait_for_metadata(pod: &TestPod, check: impl Fn(&Value) -> bool) -> bool {
    wait_until(Duration::from_secs(30), || {
        append(pod, "INFO tick\n");
        std::thread::sleep(Duration::from_millis(300));
        pod.delivered()
            .last()
            .is_some_and(|record| check(&record["kubernetes"]))
    })
}

fn metric(port: u16, line_start: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics").ok()?;
    body.lines()
        .find_map(|line| line.strip_prefix(line_start))
        .and_then(|value| value.trim().parse().ok())
}

/// Warning lines in a stage's log, whoever wrote them (kube's own included).
fn warnings_in(stage_log: &std::path::Path) -> usize {
    fs::read_to_string(stage_log)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(" WARN "))
        .count()
}

/// Records carry what the API server says of the pod (its labels win over the volume's),
/// with container images and the owner chain up to the Deployment; a change arrives through
/// the watch; after the watch expires (410 Gone) the processor lists again, sees the change
/// made meanwhile, and watches on from the new list's resourceVersion.
#[test]
fn api_metadata_follows_the_watch_and_a_relist_after_410_gone() {
    let server = FakeApiServer::start(vec![web_pod(POD_NAME, NAMESPACE, "edge")], false);
    let mut pod = pod_with_api(Some(&server.url()));
    let stages = pod.start_all();
    assert_eq!(
        first_metadata(&pod),
        json!({
            "pod_name": POD_NAME,
            "namespace": NAMESPACE,
            "node_name": "node-1",
            "pod_uid": "0d1f5c3e-uid",
            "labels": {"app": "web", "pod-template-hash": "7c9d5", "tier": "edge"},
            "annotations": {"team": "logs"},
            "container_images": {"web": "demo/web:1.4", "log-processor": "log-sidecars:0.1"},
            "owner": {"kind": "Deployment", "name": "web"},
            "owner_chain": [
                {"kind": "ReplicaSet", "name": "web-7c9d5"},
                {"kind": "Deployment", "name": "web"},
            ],
        })
    );

    server.update(POD_NAME, |pod| set_tier(pod, "api"));
    assert!(
        wait_for_metadata(&pod, |k| k["labels"]["tier"] == "api"),
        "a MODIFIED event did not reach the records"
    );

    let lists_before = server.seen().lists;
    server.expire_watches_then_update(POD_NAME, |pod| set_tier(pod, "relisted"));
    assert!(
        wait_for_metadata(&pod, |k| k["labels"]["tier"] == "relisted"),
        "the change made while the watch was expired did not arrive through a new list"
    );
    let processor = &stages[1];
    let resumed = wait_until(Duration::from_secs(10), || {
        let seen = server.seen();
        seen.watch_versions.last() == Some(&seen.version) && seen.open_watches > 0
    });
    let seen = server.seen();
    assert!(seen.lists > lists_before, "no list after 410 Gone");
    assert!(
        resumed,
        "the watch did not resume from the new list's version: watched from {:?}, at {}",
        seen.watch_versions, seen.version
    );
    assert!(metric(
        processor.port,
        "processor_kubernetes_api_errors_total{reason=\"gone\"}"
    )
    .is_some_and(|n| n >= 1.0));
    assert_eq!(
        metric(processor.port, "processor_kubernetes_api_up"),
        Some(1.0)
    );
    assert_eq!(
        warnings_in(&processor.log),
        0,
        "410 Gone is routine, not an outage"
    );
    for stage in stages {
        stage.terminate(Duration::from_secs(15));
    }
}

/// A service account that may not read pods: records keep flowing with the Downward API's
/// metadata, one warning says so however often the watch retries, the metrics count the
/// refusals; once access is granted, the API's metadata arrives without a restart.
#[test]
fn a_forbidden_api_falls_back_to_the_downward_api_with_one_warning() {
    let server = FakeApiServer::start(vec![web_pod(POD_NAME, NAMESPACE, "edge")], true);
    let mut pod = pod_with_api(Some(&server.url()));
    let stages = pod.start_all();
    let processor = &stages[1];
    assert_eq!(
        first_metadata(&pod),
        json!({
            "pod_name": POD_NAME,
            "namespace": NAMESPACE,
            "node_name": "node-1",
            "labels": {"app": "web", "tier": "downward"},
        })
    );
    let retried = wait_until(Duration::from_secs(20), || {
        metric(
            processor.port,
            "processor_kubernetes_api_errors_total{reason=\"forbidden\"}",
        )
        .is_some_and(|n| n >= 3.0)
    });
    assert!(retried, "the watch did not retry the forbidden requests");
    assert_eq!(
        metric(processor.port, "processor_kubernetes_api_up"),
        Some(0.0)
    );
    assert_eq!(warnings_in(&processor.log), 1);
    let log = fs::read_to_string(&processor.log).unwrap();
    assert!(
        !log.contains("The pod metadata changed"),
        "a refused retry is not a change: {log}"
    );

    server.set_forbidden(false);
    assert!(
        wait_for_metadata(&pod, |k| k["labels"]["tier"] == "edge"
            && k["owner"]["name"] == "web"),
        "the API's metadata did not arrive once access was granted"
    );
    assert_eq!(
        metric(processor.port, "processor_kubernetes_api_up"),
        Some(1.0)
    );
    let log = fs::read_to_string(&processor.log).unwrap();
    assert!(log.contains("The Kubernetes API answers again"), "{log}");
    for stage in stages {
        stage.terminate(Duration::from_secs(15));
    }
}

/// No API server at the address: records flow with the Downward API's metadata and the
/// metric names the reason.
#[test]
fn an_unreachable_api_falls_back_to_the_downward_api() {
    let mut pod = pod_with_api(Some(&format!("http://127.0.0.1:{}", free_port())));
    let stages = pod.start_all();
    let processor = &stages[1];
    let metadata = first_metadata(&pod);
    assert_eq!(metadata["labels"]["tier"], "downward");
    assert!(metadata.get("container_images").is_none());
    assert!(metric(
        processor.port,
        "processor_kubernetes_api_errors_total{reason=\"unreachable\"}"
    )
    .is_some_and(|n| n >= 1.0));
    assert_eq!(warnings_in(&processor.log), 1);
    for stage in stages {
        stage.terminate(Duration::from_secs(15));
    }
}

/// Outside a cluster, or in a pod without a mounted token, there is no in-cluster address or
/// credential: the same fallback, with the reason `no_credentials`.
#[test]
fn without_in_cluster_credentials_records_keep_the_downward_metadata() {
    let mut pod = pod_with_api(None);
    assert!(std::env::var_os("KUBERNETES_SERVICE_HOST").is_none());
    let stages = pod.start_all();
    let processor = &stages[1];
    assert_eq!(first_metadata(&pod)["labels"]["tier"], "downward");
    assert_eq!(
        metric(
            processor.port,
            "processor_kubernetes_api_errors_total{reason=\"no_credentials\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(processor.port, "processor_kubernetes_api_up"),
        Some(0.0)
    );
    assert_eq!(warnings_in(&processor.log), 1);
    for stage in stages {
        stage.terminate(Duration::from_secs(15));
    }
}

/// A pod name the API server does not know (a wrong POD_NAME): the warning names the pod and
/// namespace, and records keep the Downward API's metadata.
#[test]
fn a_pod_the_api_does_not_know_is_named_in_the_warning() {
    let server = FakeApiServer::start(vec![web_pod(POD_NAME, NAMESPACE, "edge")], false);
    let mut pod = pod_with_api(Some(&server.url()));
    for (name, value) in pod.extra_env.get_mut(&StageKind::Processor).unwrap() {
        if name == "POD_NAME" {
            *value = "web-gone".into();
        }
    }
    let stages = pod.start_all();
    let processor = &stages[1];
    assert_eq!(first_metadata(&pod)["labels"]["tier"], "downward");
    assert!(metric(
        processor.port,
        "processor_kubernetes_api_errors_total{reason=\"not_found\"}"
    )
    .is_some_and(|n| n >= 1.0));
    let log = fs::read_to_string(&processor.log).unwrap();
    assert!(
        log.contains(r#"no pod \"web-gone\" in namespace \"demo\""#),
        "{log}"
    );
    for stage in stages {
        stage.terminate(Duration::from_secs(15));
    }
}

/// The API path needs the pod's name; without it the processor refuses to start and says
/// which variable to set and where it comes from.
#[test]
fn the_api_path_without_pod_name_is_refused_at_start() {
    let pod = TestPod::new();
    let out = Command::new(bin("processor"))
        .arg("--rules")
        .arg(pod.path("rules.yaml"))
        .arg("--input-dir")
        .arg(pod.path("collected"))
        .arg("--journal-dir")
        .arg(pod.path("processed"))
        .args(["--kubernetes-metadata", "api"])
        .env_remove("POD_NAME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("POD_NAME is not set") && stderr.contains("metadata.name"),
        "{stderr}"
    );
}

const WEB_UID: &str = "0d1f5c3e-uid";
const DB_UID: &str = "7a2e90b4-1111-2222-3333-444455556666";

/// A StatefulSet's pod on `node` with one container `postgres`.
fn db_pod(node: &str, namespace: &str, name: &str, uid: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            uid: Some(uid.into()),
            labels: Some(BTreeMap::from([("app".into(), "db".into())])),
            annotations: Some(BTreeMap::from([("backup".into(), "nightly".into())])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: "db".into(),
                uid: "sts-uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "postgres".into(),
                image: Some("postgres:16".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// Stands in for the collector of a node-mode DaemonSet: commits collected records whose
/// sources are named as the collector names the kubelet's `/var/log/pods` files (the path
/// relative to it). The real collector does so only when it watches
/// `/var/log/pods/*/*/*.log`, and directory wildcards are not in the collector yet.
struct NodeCollector {
    journal: JournalWriter<u64>,
    /// Per source: its source id and the next offset.
    sources: BTreeMap<String, (u64, u64)>,
    commits: u64,
}

impl NodeCollector {
    fn open(pod: &TestPod) -> Self {
        let (journal, _) = JournalWriter::open(&pod.path("collected"), JournalOptions::default())
            .expect("the collected journal opens");
        NodeCollector {
            journal,
            sources: BTreeMap::new(),
            commits: 0,
        }
    }

    /// Commits one line of `source`; returns the record's id.
    fn write(&mut self, source: &str, text: &str) -> String {
        let next_id = self.sources.len() as u64 + 1;
        let (source_id, offset) = self
            .sources
            .entry(source.to_owned())
            .or_insert((next_id, 0));
        let id = RecordId {
            source_id: *source_id,
            offset: *offset,
        };
        let line = format!("2026-11-22 10:30:45,123 - INFO {text}");
        *offset += line.len() as u64 + 1;
        self.journal.push_with(|out| {
            CollectedRecordOut::new(
                id,
                source,
                "2026-11-22T10:30:45.200Z",
                line.as_bytes(),
                LineFlags::default(),
            )
            .write(out)
        });
        self.commits += 1;
        self.journal.commit(&self.commits).unwrap();
        id.to_string()
    }
}

/// Every record the processor committed to its journal, in order.
fn processed(pod: &TestPod) -> Vec<Value> {
    let dir = pod.path("processed");
    let mut reader = JournalReader::new(&dir, Position::default());
    let Some(end) = reader.committed_end().unwrap() else {
        return Vec::new();
    };
    let mut records = Vec::new();
    let mut buf = Vec::new();
    while reader.read_batch(end, 1 << 20, &mut buf).unwrap() > 0 {
        for record in journal::records(&buf) {
            records.push(serde_json::from_slice(record).unwrap());
        }
    }
    records
}

/// The `kubernetes` objects of the records with `ids`, once all are processed.
fn processed_metadata(pod: &TestPod, ids: &[String]) -> Vec<Value> {
    let mut found = Vec::new();
    let all = wait_until(Duration::from_secs(15), || {
        let records = processed(pod);
        found = ids
            .iter()
            .filter_map(|id| records.iter().find(|r| r["id"] == id.as_str()))
            .map(|r| r["kubernetes"].clone())
            .collect();
        found.len() == ids.len()
    });
    assert!(
        all,
        "only {} of {} records were processed",
        found.len(),
        ids.len()
    );
    found
}

/// Writes a line of `source` now and then until its record's `kubernetes` object satisfies
/// `check`.
fn wait_for_source(
    pod: &TestPod,
    collector: &mut NodeCollector,
    source: &str,
    check: impl Fn(&Value) -> bool,
) -> bool {
    wait_until(Duration::from_secs(20), || {
        let id = collector.write(source, "tick");
        check(&processed_metadata(pod, &[id])[0])
    })
}

/// Node mode: each record carries the pod its source path names (namespace, pod, UID,
/// container) and what one watch of the node's pods says of it (labels, annotations, the
/// container's image, init containers included, and the owner chain); a change, a new pod and
/// a deletion arrive through the watch, and a deleted pod's last lines keep its metadata. Only
/// this node's pods are ever asked for; a source that is no kubelet path gets the node name
/// only, is counted, and is warned of once.
#[test]
fn node_mode_gives_each_record_the_metadata_of_its_own_pod() {
    let mut web = web_pod(POD_NAME, NAMESPACE, "edge");
    web.spec.as_mut().unwrap().node_name = Some("node-1".into());
    let server = FakeApiServer::start(
        vec![
            web,
            db_pod("node-1", "data", "db-0", DB_UID),
            db_pod("node-2", "data", "db-1", "far-uid"),
        ],
        false,
    );
    let mut pod = TestPod::new();
    pod.extra_args.insert(
        StageKind::Processor,
        vec![
            "--kubernetes-metadata".into(),
            "node".into(),
            "--kubernetes-api-url".into(),
            server.url(),
        ],
    );
    pod.extra_env.insert(
        StageKind::Processor,
        vec![("NODE_NAME".into(), "node-1".into())],
    );
    let mut collector = NodeCollector::open(&pod);
    let processor = pod.start(StageKind::Processor);

    let web_source = format!("{NAMESPACE}_{POD_NAME}_{WEB_UID}/web/0.log");
    let db_source = format!("data_db-0_{DB_UID}/postgres/0.log");
    let ids = [
        collector.write(&web_source, "web"),
        collector.write(
            &format!("{NAMESPACE}_{POD_NAME}_{WEB_UID}/log-processor/0.log"),
            "init",
        ),
        collector.write(&db_source, "db"),
        collector.write("data_db-1_far-uid/postgres/0.log", "elsewhere"),
        collector.write("plain.txt", "not a pod log"),
        collector.write("plain.txt", "still not"),
    ];
    let metadata = processed_metadata(&pod, &ids);
    assert_eq!(
        metadata[0],
        json!({
            "namespace": NAMESPACE,
            "pod_name": POD_NAME,
            "pod_uid": WEB_UID,
            "container_name": "web",
            "node_name": "node-1",
            "labels": {"app": "web", "pod-template-hash": "7c9d5", "tier": "edge"},
            "annotations": {"team": "logs"},
            "container_image": "demo/web:1.4",
            "owner": {"kind": "Deployment", "name": "web"},
            "owner_chain": [
                {"kind": "ReplicaSet", "name": "web-7c9d5"},
                {"kind": "Deployment", "name": "web"},
            ],
        })
    );
    assert_eq!(metadata[1]["container_name"], "log-processor");
    assert_eq!(metadata[1]["container_image"], "log-sidecars:0.1");
    let db = json!({
        "namespace": "data",
        "pod_name": "db-0",
        "pod_uid": DB_UID,
        "container_name": "postgres",
        "node_name": "node-1",
        "labels": {"app": "db"},
        "annotations": {"backup": "nightly"},
        "container_image": "postgres:16",
        "owner": {"kind": "StatefulSet", "name": "db"},
        "owner_chain": [{"kind": "StatefulSet", "name": "db"}],
    });
    assert_eq!(metadata[2], db);
    assert_eq!(
        metadata[3],
        json!({
            "namespace": "data", "pod_name": "db-1", "pod_uid": "far-uid",
            "container_name": "postgres", "node_name": "node-1",
        }),
        "a pod on another node is never known"
    );
    assert_eq!(metadata[4], json!({"node_name": "node-1"}));
    assert_eq!(metadata[5], json!({"node_name": "node-1"}));
    assert_eq!(
        metric(
            processor.port,
            "processor_kubernetes_unparsed_sources_total"
        ),
        Some(2.0)
    );
    let log = fs::read_to_string(&processor.log).unwrap();
    assert_eq!(
        log.matches("is not a kubelet pod log path").count(),
        1,
        "{log}"
    );

    server.update(POD_NAME, |pod| set_tier(pod, "api"));
    assert!(
        wait_for_source(&pod, &mut collector, &web_source, |k| k["labels"]["tier"]
            == "api"),
        "a MODIFIED event did not reach the records"
    );
    server.add(db_pod("node-1", "data", "db-2", "new-uid"));
    assert!(
        wait_for_source(
            &pod,
            &mut collector,
            "data_db-2_new-uid/postgres/0.log",
            |k| k["owner"]["name"] == "db"
        ),
        "an ADDED pod did not reach the records"
    );

    let updates = |port| metric(port, "processor_kubernetes_api_updates_total").unwrap_or(0.0);
    let before = updates(processor.port);
    server.delete("db-0");
    assert!(
        wait_until(Duration::from_secs(10), || updates(processor.port) > before),
        "the deletion did not reach the processor"
    );
    let id = collector.write(&db_source, "last words");
    assert_eq!(
        processed_metadata(&pod, &[id])[0],
        db,
        "a deleted pod's last lines keep its metadata"
    );

    let seen = server.seen();
    assert!(
        seen.paths.iter().all(|path| path == "/api/v1/pods"),
        "{:?}",
        seen.paths
    );
    assert!(
        seen.field_selectors
            .iter()
            .all(|selector| selector == "spec.nodeName=node-1"),
        "{:?}",
        seen.field_selectors
    );
    assert!(seen.lists >= 1 && !seen.watch_versions.is_empty());
    assert_eq!(
        metric(processor.port, "processor_kubernetes_api_up"),
        Some(1.0)
    );
    assert_eq!(warnings_in(&processor.log), 1, "only the unparsed source's");
    let (status, _) = processor.terminate(Duration::from_secs(15));
    assert!(status.success());
}

/// Node mode needs the node's name; without it the processor refuses to start and says which
/// variable to set and where it comes from.
#[test]
fn node_mode_without_node_name_is_refused_at_start() {
    let pod = TestPod::new();
    let out = Command::new(bin("processor"))
        .arg("--rules")
        .arg(pod.path("rules.yaml"))
        .arg("--input-dir")
        .arg(pod.path("collected"))
        .arg("--journal-dir")
        .arg(pod.path("processed"))
        .args(["--kubernetes-metadata", "node"])
        .env_remove("NODE_NAME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("NODE_NAME is not set") && stderr.contains("spec.nodeName"),
        "{stderr}"
    );
}
