//! Pod metadata from the Kubernetes API, end to end: the real collector, processor and
//! forwarder on real files, with the processor reading its own pod from an API server.
//!
//! No cluster runs on these machines, so the API server here is an in-test HTTP server (axum)
//! that speaks the documented wire protocol of the core/v1 pods API as far as a pod watch uses
//! it, serving k8s-openapi `Pod` objects serialized as the API server sends them:
//! - list: `GET /api/v1/namespaces/{ns}/pods?fieldSelector=metadata.name%3D{pod}` → a `PodList`
//!   with `metadata.resourceVersion`;
//! - watch: the same path with `watch=true&resourceVersion=N` → newline-delimited
//!   `{"type":"MODIFIED","object":Pod}` events for changes after N, kept open; for a version
//!   the server no longer has, an `{"type":"ERROR","object":Status}` event with code 410
//!   (reason Expired), the way the API server's watch cache answers;
//! - a `Status` with code 403 (reason Forbidden) for every request while the service account
//!   may not read pods.
//!
//! The processor never GETs the pod by name: the list by field selector is that GET, and also
//! gives the resourceVersion to watch from.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use e2e_tests::{bin, free_port, http_get, wait_until, Pod as TestPod, StageKind};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const NAMESPACE: &str = "demo";
const POD_NAME: &str = "web-7c9d5-x2p4q";

/// What the fake API server holds and what it saw.
#[derive(Default)]
struct ApiState {
    pod: Pod,
    /// The current resourceVersion (one counter for the whole "cluster").
    version: u64,
    /// Watches from a version below this get 410 Gone.
    oldest_watchable: u64,
    /// Answer every request with 403.
    forbidden: bool,
    lists: usize,
    /// The resourceVersion each watch started from.
    watch_versions: Vec<u64>,
    /// Open watch streams.
    watchers: Vec<mpsc::UnboundedSender<String>>,
}

impl ApiState {
    fn bump(&mut self) {
        self.version += 1;
        self.pod.metadata.resource_version = Some(self.version.to_string());
    }

    fn event(&self, kind: &str) -> String {
        format!("{}\n", json!({"type": kind, "object": self.pod}))
    }
}

struct FakeApiServer {
    state: Arc<Mutex<ApiState>>,
    port: u16,
    _runtime: tokio::runtime::Runtime,
}

impl FakeApiServer {
    fn start(pod: Pod, forbidden: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut state = ApiState {
            pod,
            forbidden,
            ..ApiState::default()
        };
        state.bump();
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route("/api/v1/namespaces/{namespace}/pods", get(list_or_watch))
            .with_state(Arc::clone(&state));
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeApiServer {
            state,
            port,
            _runtime: runtime,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Changes the pod and sends the new version to every open watch.
    fn update(&self, change: impl FnOnce(&mut Pod)) {
        let mut state = self.state.lock().unwrap();
        change(&mut state.pod);
        state.bump();
        let event = state.event("MODIFIED");
        state
            .watchers
            .retain(|watch| watch.send(event.clone()).is_ok());
    }

    /// Ends every open watch with 410 Gone and forgets the versions they knew, then changes
    /// the pod while no watch is open: only a new list can show the change.
    fn expire_watches_then_update(&self, change: impl FnOnce(&mut Pod)) {
        let mut state = self.state.lock().unwrap();
        let gone = format!("{}\n", json!({"type": "ERROR", "object": gone_status()}));
        for watch in state.watchers.drain(..) {
            let _ = watch.send(gone.clone());
        }
        change(&mut state.pod);
        state.bump();
        state.oldest_watchable = state.version;
    }

    fn set_forbidden(&self, forbidden: bool) {
        self.state.lock().unwrap().forbidden = forbidden;
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    })
}

fn gone_status() -> Value {
    status(410, "Expired", "too old resource version")
}

fn forbidden() -> Response {
    let body = status(
        403,
        "Forbidden",
        "pods is forbidden: User \"system:serviceaccount:demo:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"demo\"",
    );
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

/// Whether `pod` passes a `fieldSelector` of the form `metadata.name=NAME` (the only one the
/// processor sends).
fn selected(pod: &Pod, namespace: &str, query: &HashMap<String, String>) -> bool {
    let name_matches = match query.get("fieldSelector") {
        Some(selector) => selector.strip_prefix("metadata.name=") == pod.metadata.name.as_deref(),
        None => true,
    };
    namespace == NAMESPACE && name_matches
}

async fn list_or_watch(
    State(state): State<Arc<Mutex<ApiState>>>,
    UrlPath(namespace): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut state = state.lock().unwrap();
    if state.forbidden {
        return forbidden();
    }
    if !matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        state.lists += 1;
        let items: Vec<&Pod> = Some(&state.pod)
            .filter(|pod| selected(pod, &namespace, &query))
            .into_iter()
            .collect();
        let list = json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": state.version.to_string()},
            "items": items,
        });
        return axum::Json(list).into_response();
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    state.watch_versions.push(from);
    let (sender, receiver) = mpsc::unbounded_channel();
    if from < state.oldest_watchable {
        let _ = sender.send(format!(
            "{}\n",
            json!({"type": "ERROR", "object": gone_status()})
        ));
    } else {
        if from < state.version && selected(&state.pod, &namespace, &query) {
            let _ = sender.send(state.event("MODIFIED"));
        }
        state.watchers.push(sender);
    }
    let events = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        Some((Ok::<_, Infallible>(line), receiver))
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(events),
    )
        .into_response()
}

/// The pod a Deployment `web` made through its ReplicaSet `web-7c9d5`, with the log
/// processor as a native sidecar (an init container).
fn web_pod(tier: &str) -> Pod {
    let labels = [
        ("app", "web"),
        ("pod-template-hash", "7c9d5"),
        ("tier", tier),
    ];
    let container = |name: &str, image: &str| Container {
        name: name.into(),
        image: Some(image.into()),
        ..Container::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(POD_NAME.into()),
            namespace: Some(NAMESPACE.into()),
            uid: Some("0d1f5c3e-uid".into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            annotations: Some(BTreeMap::from([("team".into(), "logs".into())])),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "web-7c9d5".into(),
                uid: "rs-uid".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![container("web", "demo/web:1.4")],
            init_containers: Some(vec![container("log-processor", "log-sidecars:0.1")]),
            ..PodSpec::default()
        }),
        status: None,
    }
}

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
    let server = FakeApiServer::start(web_pod("edge"), false);
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

    server.update(|pod| set_tier(pod, "api"));
    assert!(
        wait_for_metadata(&pod, |k| k["labels"]["tier"] == "api"),
        "a MODIFIED event did not reach the records"
    );

    let lists_before = server.state.lock().unwrap().lists;
    server.expire_watches_then_update(|pod| set_tier(pod, "relisted"));
    assert!(
        wait_for_metadata(&pod, |k| k["labels"]["tier"] == "relisted"),
        "the change made while the watch was expired did not arrive through a new list"
    );
    let processor = &stages[1];
    let resumed = wait_until(Duration::from_secs(10), || {
        let state = server.state.lock().unwrap();
        state.watch_versions.last() == Some(&state.version) && !state.watchers.is_empty()
    });
    let state = server.state.lock().unwrap();
    assert!(state.lists > lists_before, "no list after 410 Gone");
    assert!(
        resumed,
        "the watch did not resume from the new list's version: watched from {:?}, at {}",
        state.watch_versions, state.version
    );
    drop(state);
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
    let server = FakeApiServer::start(web_pod("edge"), true);
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
    let server = FakeApiServer::start(web_pod("edge"), false);
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
