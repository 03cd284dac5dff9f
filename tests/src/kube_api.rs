//! An in-test Kubernetes API server for the processor's pod metadata paths.
//!
//! No cluster runs on these machines, so this HTTP server (axum) stands in for the API server:
//! it speaks the documented wire protocol of the core/v1 pods API as far as kube's watcher uses
//! it, serving k8s-openapi `Pod` objects serialized as the API server sends them:
//! - list: `GET /api/v1/namespaces/{ns}/pods` (one namespace) or `GET /api/v1/pods` (all
//!   namespaces), with a `fieldSelector` of `metadata.name`, `metadata.namespace` and
//!   `spec.nodeName` terms (`=` or `==`, comma-separated) and a `labelSelector` of equality terms
//!   (`k=v`, `k==v`, `k!=v`) → a `PodList` with
//!   `metadata.resourceVersion`; any other field is refused with 400, as the API server does;
//! - watch: the same paths with `watch=true&resourceVersion=N` → newline-delimited
//!   `{"type":"ADDED"|"MODIFIED"|"DELETED","object":Pod}` events for changes after N, kept
//!   open; for a version the server no longer has, an `{"type":"ERROR","object":Status}` event
//!   with code 410 (reason Expired), the way the API server's watch cache answers;
//! - a `Status` with code 403 (reason Forbidden) for every request while the service account
//!   may not read pods.
//!
//! Easy to get wrong: which watch sees which change. Each open watch remembers its namespace
//! and selector, and gets only the events of pods that pass them, as a real watch does.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A running in-test API server holding some pods; dropped, it stops.
pub struct FakeApiServer {
    state: Arc<Mutex<ApiState>>,
    port: u16,
    _runtime: tokio::runtime::Runtime,
}

/// What the server saw, for assertions.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// List requests answered (forbidden ones not counted).
    pub lists: usize,
    /// The current resourceVersion (one counter for the whole "cluster").
    pub version: u64,
    /// The resourceVersion each watch started from.
    pub watch_versions: Vec<u64>,
    /// Each list or watch request's `fieldSelector` (empty when it had none), in order.
    pub field_selectors: Vec<String>,
    /// Each request's path, in order.
    pub paths: Vec<String>,
    /// Watches open (or closed by the client but not yet noticed by a send).
    pub open_watches: usize,
}

#[derive(Default)]
struct ApiState {
    pods: Vec<Pod>,
    /// Deleted pods with the version of their deletion, for watches from before it.
    deleted: Vec<(u64, Pod)>,
    /// Watches from a version below this get 410 Gone.
    oldest_watchable: u64,
    /// Answer every request with 403.
    forbidden: bool,
    seen: Seen,
    watchers: Vec<Watcher>,
}

/// An open watch stream and what it asked for.
struct Watcher {
    filter: Filter,
    sender: mpsc::UnboundedSender<String>,
}

/// A request's namespace (none: all), field selector terms and label selector terms.
#[derive(Clone)]
struct Filter {
    namespace: Option<String>,
    terms: Vec<(String, String)>,
    /// `(label, value, equal)`: `key=value` / `key==value` (equal) or `key!=value`.
    labels: Vec<(String, String, bool)>,
}

/// Equality-based label selector terms, as the API server reads them (set-based ones are
/// refused here: the sidecars send none).
fn parse_label_selector(selector: &str) -> Result<Vec<(String, String, bool)>, String> {
    selector
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|term| {
            let (key, value, equal) = if let Some((k, v)) = term.split_once("!=") {
                (k, v, false)
            } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (k, v, true)
            } else {
                return Err(format!("unable to parse requirement: {term:?}"));
            };
            let valid = |s: &str| {
                s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
            };
            if key.trim().is_empty() || !valid(key.trim()) || !valid(value.trim()) {
                return Err(format!("unable to parse requirement: {term:?}"));
            }
            Ok((key.trim().to_owned(), value.trim().to_owned(), equal))
        })
        .collect()
}

impl Filter {
    fn parse(
        namespace: Option<String>,
        selector: Option<&str>,
        label_selector: Option<&str>,
    ) -> Result<Filter, String> {
        let labels = parse_label_selector(label_selector.unwrap_or_default())?;
        let mut terms = Vec::new();
        for term in selector
            .unwrap_or_default()
            .split(',')
            .filter(|t| !t.is_empty())
        {
            let (field, value) = term
                .split_once("==")
                .or_else(|| term.split_once('='))
                .ok_or_else(|| format!("invalid field selector term {term:?}"))?;
            if !matches!(
                field,
                "metadata.name" | "metadata.namespace" | "spec.nodeName"
            ) {
                return Err(format!(
                    "field label not supported: {field}: \"{field}\" is not a known field selector"
                ));
            }
            terms.push((field.to_owned(), value.to_owned()));
        }
        Ok(Filter {
            namespace,
            terms,
            labels,
        })
    }

    fn passes(&self, pod: &Pod) -> bool {
        let namespace = pod.metadata.namespace.as_deref();
        self.namespace
            .as_deref()
            .is_none_or(|wanted| namespace == Some(wanted))
            && self.terms.iter().all(|(field, value)| {
                let actual = match field.as_str() {
                    "metadata.name" => pod.metadata.name.as_deref(),
                    "metadata.namespace" => namespace,
                    _ => pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
                };
                actual == Some(value.as_str())
            })
            && self.labels.iter().all(|(key, value, equal)| {
                let actual = pod.metadata.labels.as_ref().and_then(|l| l.get(key));
                (actual == Some(value)) == *equal
            })
    }
}

impl ApiState {
    fn bump(&mut self, at: usize) {
        self.seen.version += 1;
        self.pods[at].metadata.resource_version = Some(self.seen.version.to_string());
    }

    fn position(&self, name: &str) -> usize {
        self.pods
            .iter()
            .position(|pod| pod.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no pod {name:?} on the fake API server"))
    }

    /// Sends `pod`'s event to the watches it passes.
    fn notify(&mut self, kind: &str, pod: &Pod) {
        let line = event(kind, pod);
        self.watchers
            .retain(|watch| !watch.filter.passes(pod) || watch.sender.send(line.clone()).is_ok());
    }
}

fn event(kind: &str, pod: &Pod) -> String {
    format!("{}\n", json!({"type": kind, "object": pod}))
}

/// A pod a Deployment `web` made through its ReplicaSet `web-7c9d5`, with the log
/// processor as a native sidecar (an init container).
pub fn web_pod(name: &str, namespace: &str, tier: &str) -> Pod {
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
            name: Some(name.into()),
            namespace: Some(namespace.into()),
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

impl FakeApiServer {
    /// Serves `pods` (each with its namespace and, for node watches, `spec.nodeName` set);
    /// `forbidden`: every request is refused until [`FakeApiServer::set_forbidden`] says
    /// otherwise.
    pub fn start(pods: Vec<Pod>, forbidden: bool) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let mut state = ApiState {
            pods,
            forbidden,
            ..ApiState::default()
        };
        for at in 0..state.pods.len() {
            state.bump(at);
        }
        let state = Arc::new(Mutex::new(state));
        let app = Router::new()
            .route("/api/v1/namespaces/{namespace}/pods", get(namespaced))
            .route("/api/v1/pods", get(all_namespaces))
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

    /// The address to give `--kubernetes-api-url`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the server saw so far.
    pub fn seen(&self) -> Seen {
        let state = self.state.lock().unwrap();
        Seen {
            open_watches: state.watchers.len(),
            ..state.seen.clone()
        }
    }

    /// Changes the pod named `name` and sends the new version to every open watch it passes.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut Pod)) {
        let mut state = self.state.lock().unwrap();
        let at = state.position(name);
        change(&mut state.pods[at]);
        state.bump(at);
        let pod = state.pods[at].clone();
        state.notify("MODIFIED", &pod);
    }

    /// Adds a pod and sends it to every open watch it passes.
    pub fn add(&self, pod: Pod) {
        let mut state = self.state.lock().unwrap();
        state.pods.push(pod);
        let at = state.pods.len() - 1;
        state.bump(at);
        let pod = state.pods[at].clone();
        state.notify("ADDED", &pod);
    }

    /// Deletes the pod named `name`, telling every open watch it passes.
    pub fn delete(&self, name: &str) {
        let mut state = self.state.lock().unwrap();
        let at = state.position(name);
        state.bump(at);
        let pod = state.pods.remove(at);
        let version = state.seen.version;
        state.deleted.push((version, pod.clone()));
        state.notify("DELETED", &pod);
    }

    /// Ends every open watch with 410 Gone and forgets the versions they knew, then changes
    /// the pod named `name` while no watch is open: only a new list can show the change.
    pub fn expire_watches_then_update(&self, name: &str, change: impl FnOnce(&mut Pod)) {
        let mut state = self.state.lock().unwrap();
        let gone = format!("{}\n", json!({"type": "ERROR", "object": gone_status()}));
        for watch in state.watchers.drain(..) {
            let _ = watch.sender.send(gone.clone());
        }
        let at = state.position(name);
        change(&mut state.pods[at]);
        state.bump(at);
        state.oldest_watchable = state.seen.version;
    }

    /// Refuses (or stops refusing) every request with 403.
    pub fn set_forbidden(&self, forbidden: bool) {
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

fn forbidden(namespace: Option<&str>) -> Response {
    let scope = match namespace {
        Some(namespace) => format!("in the namespace \"{namespace}\""),
        None => "at the cluster scope".to_owned(),
    };
    let body = status(
        403,
        "Forbidden",
        &format!("pods is forbidden: User \"system:serviceaccount:demo:default\" cannot list resource \"pods\" in API group \"\" {scope}"),
    );
    (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
}

async fn namespaced(
    State(state): State<Arc<Mutex<ApiState>>>,
    UrlPath(namespace): UrlPath<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let path = format!("/api/v1/namespaces/{namespace}/pods");
    list_or_watch(&state, path, Some(namespace), &query)
}

async fn all_namespaces(
    State(state): State<Arc<Mutex<ApiState>>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    list_or_watch(&state, "/api/v1/pods".into(), None, &query)
}

fn list_or_watch(
    state: &Mutex<ApiState>,
    path: String,
    namespace: Option<String>,
    query: &HashMap<String, String>,
) -> Response {
    let mut state = state.lock().unwrap();
    let selector = query.get("fieldSelector");
    state.seen.paths.push(path);
    state
        .seen
        .field_selectors
        .push(selector.cloned().unwrap_or_default());
    if state.forbidden {
        return forbidden(namespace.as_deref());
    }
    let filter = match Filter::parse(
        namespace,
        selector.map(String::as_str),
        query.get("labelSelector").map(String::as_str),
    ) {
        Ok(filter) => filter,
        Err(message) => {
            let body = status(400, "BadRequest", &message);
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    if !matches!(query.get("watch").map(String::as_str), Some("true" | "1")) {
        state.seen.lists += 1;
        let items: Vec<&Pod> = state.pods.iter().filter(|p| filter.passes(p)).collect();
        let list = json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": state.seen.version.to_string()},
            "items": items,
        });
        return axum::Json(list).into_response();
    }
    let from: u64 = query
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    state.seen.watch_versions.push(from);
    let (sender, receiver) = mpsc::unbounded_channel();
    if from < state.oldest_watchable {
        let _ = sender.send(format!(
            "{}\n",
            json!({"type": "ERROR", "object": gone_status()})
        ));
    } else {
        // What changed after `from`, in version order, as the watch cache replays it.
        let version_of = |pod: &Pod| -> u64 {
            pod.metadata
                .resource_version
                .as_deref()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let mut missed: Vec<(u64, String)> = state
            .pods
            .iter()
            .filter(|pod| version_of(pod) > from && filter.passes(pod))
            .map(|pod| (version_of(pod), event("MODIFIED", pod)))
            .chain(
                state
                    .deleted
                    .iter()
                    .filter(|(version, pod)| *version > from && filter.passes(pod))
                    .map(|(version, pod)| (*version, event("DELETED", pod))),
            )
            .collect();
        missed.sort_by_key(|(version, _)| *version);
        for (_, line) in missed {
            let _ = sender.send(line);
        }
        state.watchers.push(Watcher { filter, sender });
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
