//! Pod metadata from the API server: the own pod's labels, annotations, container images and
//! owner chain, kept fresh by a watch in a background task, and handed to the stage loop
//! through a `tokio::sync::watch` channel that it polls between batches.
//!
//! kube's watcher does the list-then-watch dance: it lists the pod (one object, by field
//! selector), watches from the list's resourceVersion, and lists again when the server answers
//! 410 Gone. What is done here: reduce each version of the pod to what records carry, and turn
//! failures into one warning and a metric instead of a log line per retry.
//!
//! Easy to get wrong: records must never wait for the API. The stage reads whatever was last
//! published; when the API never answered it carries the Downward API's view only, and after an
//! outage it keeps the last view the API gave (the cache) until the watch is back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Map, Value};
use sidecar_common::signal::Background;
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// How long the stage waits at start for the API's first answer, so the first records carry
/// the full metadata when the API is there; an unreachable or forbidden API answers sooner.
pub const FIRST_ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Where to find the API server and which pod is ours.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// An explicit API address (plain HTTP, no credentials), e.g. `kubectl proxy`'s; `None`:
    /// the in-cluster address and service account token.
    pub url: Option<http::Uri>,
    /// The pod's name (Downward API `metadata.name`).
    pub pod_name: String,
    /// The pod's namespace; `None`: the service account's namespace.
    pub namespace: Option<String>,
}

/// What the API server says of the pod, reduced to what records carry.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ApiPod {
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    pub annotations: BTreeMap<String, String>,
    /// Container name → image, init containers (native sidecars) included.
    pub images: BTreeMap<String, String>,
    /// The controlling owner, then its owner as far as it can be told: nearest first.
    pub owners: Vec<Owner>,
}

/// One link of the owner chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// `Deployment`, `ReplicaSet`, `StatefulSet`, ...
    pub kind: String,
    /// Its name.
    pub name: String,
}

impl ApiPod {
    /// The parts of `pod` records carry.
    pub fn from_pod(pod: &Pod) -> ApiPod {
        let metadata = &pod.metadata;
        let labels = metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let containers = spec
            .map(|spec| spec.containers.iter())
            .into_iter()
            .flatten()
            .chain(
                spec.and_then(|s| s.init_containers.as_ref())
                    .into_iter()
                    .flatten(),
            );
        ApiPod {
            uid: metadata.uid.clone(),
            annotations: metadata.annotations.clone().unwrap_or_default(),
            images: containers.filter_map(image_of).collect(),
            owners: owner_chain(pod, &labels),
            labels,
        }
    }

    /// The object's fields: `pod_uid`, `labels`, `annotations`, `container_images`, `owner`
    /// (the top of the chain) and `owner_chain` (nearest first).
    pub fn fields(&self) -> Map<String, Value> {
        let mut object = Map::new();
        if let Some(uid) = &self.uid {
            object.insert("pod_uid".into(), uid.clone().into());
        }
        object.insert("labels".into(), string_map(&self.labels));
        object.insert("annotations".into(), string_map(&self.annotations));
        object.insert("container_images".into(), string_map(&self.images));
        self.insert_owners(&mut object);
        object
    }

    /// Adds `owner` (the top of the chain) and `owner_chain` (nearest first) when the pod has
    /// an owner: the one shape both the own-pod and the node paths give.
    pub fn insert_owners(&self, object: &mut Map<String, Value>) {
        if let Some(top) = self.owners.last() {
            object.insert("owner".into(), top.to_json());
            let chain = self.owners.iter().map(Owner::to_json).collect();
            object.insert("owner_chain".into(), Value::Array(chain));
        }
    }
}

impl Owner {
    fn to_json(&self) -> Value {
        json!({"kind": self.kind, "name": self.name})
    }
}

fn image_of(container: &Container) -> Option<(String, String)> {
    Some((container.name.clone(), container.image.clone()?))
}

pub(super) fn string_map(map: &BTreeMap<String, String>) -> Value {
    Value::Object(
        map.iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The pod's controller and, for a ReplicaSet made by a Deployment, the Deployment.
///
/// The Deployment is told from the ReplicaSet's name, which the Deployment controller makes
/// as `<deployment>-<pod-template-hash>` and the pod carries as its `pod-template-hash`
/// label. That needs no permission beyond reading pods; a ReplicaSet whose name does not end
/// in the pod's hash (one made by hand) is the top of the chain.
fn owner_chain(pod: &Pod, labels: &BTreeMap<String, String>) -> Vec<Owner> {
    let references = pod.metadata.owner_references.as_deref().unwrap_or_default();
    let Some(controller) = references
        .iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| references.first())
    else {
        return Vec::new();
    };
    let mut chain = vec![Owner {
        kind: controller.kind.clone(),
        name: controller.name.clone(),
    }];
    if controller.kind == "ReplicaSet" {
        let deployment = labels
            .get("pod-template-hash")
            .and_then(|hash| controller.name.strip_suffix(hash.as_str()))
            .and_then(|rest| rest.strip_suffix('-'))
            .filter(|name| !name.is_empty());
        if let Some(name) = deployment {
            chain.push(Owner {
                kind: "Deployment".into(),
                name: name.to_owned(),
            });
        }
    }
    chain
}

/// What the stage reads: the last pod the API gave, and whether the API has answered at all
/// (with the pod or with an error).
#[derive(Debug, Clone, Default)]
pub struct ApiView {
    /// The cached pod; kept through an outage.
    pub pod: Option<Arc<ApiPod>>,
    /// Set at the first answer, good or bad.
    pub answered: bool,
}

/// The API path's metrics.
#[derive(Debug, Clone, Default)]
pub struct ApiMetrics {
    pub(super) up: Gauge,
    errors: Family<Vec<(String, String)>, Counter>,
    pub(super) updates: Counter,
}

impl ApiMetrics {
    /// Registers the families under `processor_kubernetes_api_*`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "processor_kubernetes_api_up",
            "1 while the pod watch on the Kubernetes API works, 0 while records fall back to the Downward API or the last pod seen",
            self.up.clone(),
        );
        registry.register(
            "processor_kubernetes_api_errors",
            "Failed Kubernetes API requests by reason (forbidden, unauthorized, unreachable, not_found, gone, no_credentials, other)",
            self.errors.clone(),
        );
        registry.register(
            "processor_kubernetes_api_updates",
            "Versions of the pod received from the Kubernetes API",
            self.updates.clone(),
        );
    }

    pub(super) fn count_error(&self, reason: &str) {
        self.errors
            .get_or_create(&vec![("reason".to_owned(), reason.to_owned())])
            .inc();
    }
}

/// Starts watching the pod in a background task on the current runtime; the receiver sees
/// each new view. Never fails: without credentials or a reachable server the view stays
/// empty, with one warning and the metrics saying why.
pub fn spawn(
    settings: ApiSettings,
    metrics: ApiMetrics,
    background: &Background,
) -> watch::Receiver<ApiView> {
    let (sender, receiver) = watch::channel(ApiView::default());
    background.spawn(async move {
        let mut outage = Outage::default();
        let client = match client(settings.url.as_ref()) {
            Ok(client) => client,
            Err(e) => {
                metrics.count_error("no_credentials");
                unavailable(&mut outage, &settings, "no_credentials", &e.to_string());
                mark_answered(&sender);
                return;
            }
        };
        watch_pod(client, &settings, &metrics, &sender, &mut outage).await;
    });
    receiver
}

/// Waits until the API's first answer (or `wait` passes).
pub async fn first_answer(receiver: &mut watch::Receiver<ApiView>, wait: Duration) {
    let _ = tokio::time::timeout(wait, receiver.wait_for(|view| view.answered)).await;
}

/// A client for `url` (plain HTTP, no credentials), or the in-cluster address and token.
pub(super) fn client(url: Option<&http::Uri>) -> anyhow::Result<Client> {
    let config = match url {
        Some(url) => kube::Config::new(url.clone()),
        None => kube::Config::incluster().map_err(|e| {
            anyhow::anyhow!("no in-cluster API access (is a service account token mounted?): {e}")
        })?,
    };
    Ok(Client::try_from(config)?)
}

fn namespace_of<'a>(settings: &'a ApiSettings, client: &'a Client) -> &'a str {
    settings
        .namespace
        .as_deref()
        .unwrap_or_else(|| client.default_namespace())
}

async fn watch_pod(
    client: Client,
    settings: &ApiSettings,
    metrics: &ApiMetrics,
    sender: &watch::Sender<ApiView>,
    outage: &mut Outage,
) {
    let namespace = namespace_of(settings, &client).to_owned();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let selector = format!("metadata.name={}", settings.pod_name);
    loop {
        let mut events =
            watcher::watcher(pods.clone(), watcher::Config::default().fields(&selector))
                .default_backoff()
                .boxed();
        // Whether the current (re-)list has shown our pod yet.
        let mut listed = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Init) => listed = false,
                Ok(Event::InitApply(pod) | Event::Apply(pod)) => {
                    listed = true;
                    outage.end("pod metadata");
                    metrics.up.set(1);
                    metrics.updates.inc();
                    publish(sender, ApiPod::from_pod(&pod));
                }
                Ok(Event::InitDone) if !listed => {
                    metrics.up.set(0);
                    metrics.count_error("not_found");
                    let detail =
                        format!("no pod {:?} in namespace {namespace:?}", settings.pod_name);
                    unavailable(outage, settings, "not_found", &detail);
                    mark_answered(sender);
                }
                Ok(Event::InitDone) => {}
                Ok(Event::Delete(_)) => {
                    // Our own pod is going away: its last view stays right until we exit.
                    debug!("The API server reports the pod deleted; keeping its last metadata.");
                }
                Err(e) => {
                    let reason = reason_of(&e);
                    metrics.count_error(reason);
                    if reason != "gone" {
                        metrics.up.set(0);
                        unavailable(outage, settings, reason, &e.to_string());
                        mark_answered(sender);
                        continue;
                    }
                    // The cached view stays valid while the pod is listed again. A 410 inside
                    // the watch stream makes kube's watcher list again; one refusing to start
                    // the watch would have it retry the same version forever, so start over.
                    debug!(error = %e, "The pod watch expired (410 Gone); listing again.");
                    if matches!(e, watcher::Error::WatchStartFailed(_)) {
                        break;
                    }
                }
            }
        }
    }
}

/// Records that the API answered (with an error), waking the stage only the first time: the
/// view itself does not change.
fn mark_answered(sender: &watch::Sender<ApiView>) {
    sender.send_if_modified(|view| !std::mem::replace(&mut view.answered, true));
}

/// Hands a new version of the pod to the stage, waking it only when something it carries
/// changed.
fn publish(sender: &watch::Sender<ApiView>, pod: ApiPod) {
    sender.send_if_modified(|view| {
        let changed = view.pod.as_deref() != Some(&pod) || !view.answered;
        view.pod = Some(Arc::new(pod));
        view.answered = true;
        changed
    });
}

/// A short, stable name for why a watch request failed.
pub(super) fn reason_of(error: &watcher::Error) -> &'static str {
    let code = match error {
        watcher::Error::WatchError(status) => Some(status.code),
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(status) => Some(status.code),
            kube::Error::HyperError(_) | kube::Error::Service(_) => return "unreachable",
            _ => None,
        },
        watcher::Error::NoResourceVersion => None,
    };
    match code {
        Some(401) => "unauthorized",
        Some(403) => "forbidden",
        Some(404) => "not_found",
        Some(410) => "gone",
        _ => "other",
    }
}

/// Says once that API metadata is unavailable, and once that it is back.
#[derive(Debug, Default)]
pub(super) struct Outage {
    since: Option<std::time::Instant>,
}

impl Outage {
    /// Notes a failure; returns whether it starts an outage, which the caller then warns of
    /// (once, in its own words). A failure during an outage is logged at debug only.
    pub(super) fn begin(&mut self, reason: &str, detail: &str) -> bool {
        if self.since.is_some() {
            debug!(
                reason,
                error = detail,
                "The Kubernetes API is still unavailable."
            );
            return false;
        }
        self.since = Some(std::time::Instant::now());
        true
    }

    /// Notes an answer; says, with `what` records carry again, that the API is back.
    pub(super) fn end(&mut self, what: &str) {
        if let Some(since) = self.since.take() {
            info!(
                down_s = since.elapsed().as_secs(),
                "The Kubernetes API answers again; records carry its {what}."
            );
        }
    }
}

/// Starts or continues an outage of the own-pod watch, warning once.
fn unavailable(outage: &mut Outage, settings: &ApiSettings, reason: &str, detail: &str) {
    if outage.begin(reason, detail) {
        warn!(
            pod = settings.pod_name,
            reason,
            error = detail,
            "Cannot read the pod from the Kubernetes API; records carry the Downward API metadata (and the last pod seen, if any) until it answers. Retrying with backoff; this is said once."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod(owner_kind: &str, owner_name: &str, hash: Option<&str>) -> Pod {
        let mut labels = BTreeMap::from([("app".to_owned(), "web".to_owned())]);
        if let Some(hash) = hash {
            labels.insert("pod-template-hash".into(), hash.into());
        }
        Pod {
            metadata: ObjectMeta {
                name: Some("web-7c9d5-x2p4q".into()),
                uid: Some("1234".into()),
                labels: Some(labels),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: owner_kind.into(),
                    name: owner_name.into(),
                    uid: "rs-uid".into(),
                    controller: Some(true),
                    block_owner_deletion: None,
                }]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "web".into(),
                    image: Some("demo/web:1".into()),
                    ..Container::default()
                }],
                init_containers: Some(vec![Container {
                    name: "log-processor".into(),
                    image: Some("sidecars:0.1".into()),
                    ..Container::default()
                }]),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    #[test]
    fn a_replicaset_named_after_the_pod_template_hash_leads_to_its_deployment() {
        let fields = ApiPod::from_pod(&pod("ReplicaSet", "web-7c9d5", Some("7c9d5"))).fields();
        assert_eq!(
            fields["owner"],
            json!({"kind": "Deployment", "name": "web"})
        );
        assert_eq!(
            fields["owner_chain"],
            json!([{"kind": "ReplicaSet", "name": "web-7c9d5"}, {"kind": "Deployment", "name": "web"}])
        );
        assert_eq!(
            fields["container_images"],
            json!({"web": "demo/web:1", "log-processor": "sidecars:0.1"})
        );
        assert_eq!(fields["pod_uid"], "1234");
    }

    #[test]
    fn other_owners_are_the_top_of_the_chain() {
        let by_hand = ApiPod::from_pod(&pod("ReplicaSet", "web-manual", Some("7c9d5"))).fields();
        assert_eq!(
            by_hand["owner"],
            json!({"kind": "ReplicaSet", "name": "web-manual"})
        );
        let stateful = ApiPod::from_pod(&pod("StatefulSet", "db", None)).fields();
        assert_eq!(
            stateful["owner"],
            json!({"kind": "StatefulSet", "name": "db"})
        );
        assert_eq!(stateful["owner_chain"].as_array().unwrap().len(), 1);
    }
}
