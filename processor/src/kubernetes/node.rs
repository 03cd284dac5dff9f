//! Node mode: the processor runs once per node (a DaemonSet) over the kubelet's container logs
//! `/var/log/pods/<namespace>_<pod-name>_<pod-uid>/<container>/<n>.log`, and each record gets
//! the metadata of the pod its line came from, told by its `source_file` (that path relative
//! to `/var/log/pods`), plus what the API server says of that pod, found by its UID.
//!
//! The API side is one watch of the pods on this node (field selector `spec.nodeName`) across
//! all namespaces, kept in a map UID → pod published to the stage through a `tokio::sync::watch`
//! channel, as the own-pod path publishes its one pod. The stage side encodes the `kubernetes`
//! object once per source and reuses the bytes for every record of that source until the map
//! changes.
//!
//! Easy to get wrong: deletion. A pod's last lines are often processed after the API server
//! deleted it (the kubelet keeps its log files a while, and the collector and processor lag a
//! little), so a deleted pod stays in the map for [`DELETED_RETENTION`] before it is forgotten.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt as _;
use kube::{Api, Client};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{Map, Value};
use sidecar_common::signal::Background;
use sidecar_record::encode;
use tokio::sync::watch;
use tracing::{debug, warn};

use super::api::{self, ApiMetrics, ApiPod, Outage};

/// How long a deleted pod's metadata stays available: 5 minutes covers the lag of the
/// collector and processor behind the kubelet's last lines many times over, and the kubelet
/// keeps a deleted pod's log files for about that long too before its garbage collection.
pub const DELETED_RETENTION: Duration = Duration::from_secs(300);

/// At most this many deleted pods are kept, oldest forgotten first: the kubelet runs at most
/// 110 pods by default (`--max-pods`), so even a node churning through short jobs stays far
/// below it in five minutes; the bound only guards memory against a runaway.
pub const MAX_DELETED: usize = 1024;

/// The encoded objects kept per source at most; beyond that the cache starts over. A node
/// has a few hundred container log files, so this is only reached when sources are not
/// kubelet paths at all (pushed services, odd names), and starting over costs one encode each.
pub const MAX_CACHED_SOURCES: usize = 4096;

/// Sources not of the kubelet's form that are warned of one by one; beyond this they are
/// only counted, so odd names cannot grow memory or flood the log.
const MAX_WARNED_SOURCES: usize = 1024;

/// How often deleted pods past their retention are looked for.
const EXPIRY_CHECK: Duration = Duration::from_secs(15);

/// Where to find the API server and which node is ours.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// An explicit API address (plain HTTP, no credentials), e.g. `kubectl proxy`'s; `None`:
    /// the in-cluster address and service account token.
    pub url: Option<http::Uri>,
    /// The node's name (Downward API `spec.nodeName`), from `NODE_NAME`.
    pub node_name: String,
}

/// The pod and container a kubelet log's source name says it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourcePod<'a> {
    /// The pod's namespace.
    pub namespace: &'a str,
    /// The pod's name.
    pub pod_name: &'a str,
    /// The pod's `metadata.uid`.
    pub pod_uid: &'a str,
    /// The container's name.
    pub container: &'a str,
}

impl<'a> SourcePod<'a> {
    /// Reads `<namespace>_<pod-name>_<pod-uid>/<container>/<file>`; `None` for anything else.
    ///
    /// Namespaces and pod names are DNS labels and subdomains, and UIDs are hex and dashes, so
    /// none holds a `_`: the namespace ends at the first one and the UID starts after the last.
    /// The file name is not looked at: a rotated file keeps the source name of the file it was.
    pub fn parse(source: &'a str) -> Option<SourcePod<'a>> {
        let mut parts = source.split('/');
        let (pod_dir, container, file) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || [pod_dir, container, file]
                .iter()
                .any(|part| part.is_empty() || *part == "." || *part == "..")
        {
            return None;
        }
        let (namespace, rest) = pod_dir.split_once('_')?;
        let (pod_name, pod_uid) = rest.rsplit_once('_')?;
        if namespace.is_empty() || pod_name.is_empty() || pod_uid.is_empty() {
            return None;
        }
        Some(SourcePod {
            namespace,
            pod_name,
            pod_uid,
            container,
        })
    }
}

/// The pods on the node as the API server has them, by UID, with deleted ones kept a while.
#[derive(Debug, Default)]
pub struct NodePods {
    pods: std::collections::HashMap<String, Entry>,
    /// Deleted pods by deletion time, oldest first. An entry whose pod came back or was
    /// deleted again later is stale and skipped when it comes up.
    deleted: VecDeque<(Instant, String)>,
    /// The UIDs seen since a (re-)list began, until it is done.
    relisted: Option<HashSet<String>>,
}

#[derive(Debug)]
struct Entry {
    pod: Arc<ApiPod>,
    deleted_at: Option<Instant>,
}

impl NodePods {
    /// The pod with `uid`, deleted ones within their retention included.
    pub fn get(&self, uid: &str) -> Option<&Arc<ApiPod>> {
        self.pods.get(uid).map(|entry| &entry.pod)
    }

    /// How many pods are known, deleted ones within their retention included.
    pub fn len(&self) -> usize {
        self.pods.len()
    }

    /// Whether no pod is known.
    pub fn is_empty(&self) -> bool {
        self.pods.is_empty()
    }

    /// Takes in a new or changed pod; returns whether what records carry changed.
    pub fn apply(&mut self, pod: ApiPod) -> bool {
        let Some(uid) = pod.uid.clone() else {
            return false;
        };
        if let Some(seen) = &mut self.relisted {
            seen.insert(uid.clone());
        }
        match self.pods.get_mut(&uid) {
            Some(entry) => {
                entry.deleted_at = None;
                if *entry.pod == pod {
                    return false;
                }
                entry.pod = Arc::new(pod);
            }
            None => {
                self.pods.insert(
                    uid,
                    Entry {
                        pod: Arc::new(pod),
                        deleted_at: None,
                    },
                );
            }
        }
        true
    }

    /// Takes in a pod's deletion (its last version), keeping it for [`DELETED_RETENTION`].
    pub fn delete(&mut self, pod: ApiPod, now: Instant) -> bool {
        let Some(uid) = pod.uid.clone() else {
            return false;
        };
        let changed = self.apply(pod);
        self.mark_deleted(&uid, now) || changed
    }

    /// A (re-)list begins: the pods it does not show are deleted once it is done.
    pub fn relist_started(&mut self) {
        self.relisted = Some(HashSet::new());
    }

    /// The (re-)list is done: pods it did not show went away while no watch was open, and are
    /// kept for [`DELETED_RETENTION`] like any deleted pod.
    pub fn relist_done(&mut self, now: Instant) -> bool {
        let Some(seen) = self.relisted.take() else {
            return false;
        };
        let gone: Vec<String> = self
            .pods
            .iter()
            .filter(|(uid, entry)| entry.deleted_at.is_none() && !seen.contains(*uid))
            .map(|(uid, _)| uid.clone())
            .collect();
        let mut changed = false;
        for uid in gone {
            changed |= self.mark_deleted(&uid, now);
        }
        changed
    }

    /// Forgets deleted pods past their retention; returns whether any was forgotten.
    pub fn expire(&mut self, now: Instant) -> bool {
        let mut changed = false;
        while let Some(&(at, _)) = self.deleted.front() {
            if now.saturating_duration_since(at) < DELETED_RETENTION {
                break;
            }
            let (at, uid) = self.deleted.pop_front().expect("the front was just seen");
            changed |= self.forget(&uid, at);
        }
        changed
    }

    /// Marks `uid` deleted at `now`; returns whether that made a pod be forgotten (the bound).
    fn mark_deleted(&mut self, uid: &str, now: Instant) -> bool {
        let Some(entry) = self.pods.get_mut(uid) else {
            return false;
        };
        if entry.deleted_at.is_some() {
            return false;
        }
        entry.deleted_at = Some(now);
        self.deleted.push_back((now, uid.to_owned()));
        let mut changed = false;
        while self.deleted.len() > MAX_DELETED {
            let (at, uid) = self.deleted.pop_front().expect("longer than the bound");
            changed |= self.forget(&uid, at);
        }
        changed
    }

    /// Removes `uid` if it is still the pod deleted at `at`.
    fn forget(&mut self, uid: &str, at: Instant) -> bool {
        if self
            .pods
            .get(uid)
            .is_some_and(|entry| entry.deleted_at == Some(at))
        {
            self.pods.remove(uid);
            return true;
        }
        false
    }
}

/// What the stage reads: the node's pods, and whether the API has answered at all.
#[derive(Debug, Default)]
pub struct NodeView {
    /// The pods by UID; kept through an outage.
    pub pods: NodePods,
    /// Set at the first answer, good or bad.
    pub answered: bool,
}

/// Node mode's metrics: the API path's, plus the pods known and the records whose source is
/// not a kubelet pod log.
#[derive(Debug, Clone, Default)]
pub struct NodeMetrics {
    /// `processor_kubernetes_api_*`, as in the own-pod path.
    pub api: ApiMetrics,
    pods: Gauge,
    unparsed: Counter,
}

impl NodeMetrics {
    /// Registers the families under `processor_kubernetes_*`.
    pub fn register(&self, registry: &mut Registry) {
        self.api.register(registry);
        registry.register(
            "processor_kubernetes_node_pods",
            "Pods on this node known from the Kubernetes API, deleted ones still kept for their last lines included",
            self.pods.clone(),
        );
        registry.register(
            "processor_kubernetes_unparsed_sources",
            "Records whose source_file is not <namespace>_<pod>_<uid>/<container>/<file>: they carry only node_name",
            self.unparsed.clone(),
        );
    }
}

/// Starts watching the node's pods in a background task on the current runtime; the receiver
/// sees each change. Never fails: without credentials or a reachable server the map stays
/// empty, with one warning and the metrics saying why.
pub fn spawn(
    settings: NodeSettings,
    metrics: NodeMetrics,
    background: &Background,
) -> watch::Receiver<NodeView> {
    let (sender, receiver) = watch::channel(NodeView::default());
    background.spawn(async move {
        let mut outage = Outage::default();
        let client = match api::client(settings.url.as_ref()) {
            Ok(client) => client,
            Err(e) => {
                metrics.api.count_error("no_credentials");
                unavailable(&mut outage, &settings, "no_credentials", &e.to_string());
                mark_answered(&sender);
                return;
            }
        };
        watch_node(client, &settings, &metrics, &sender, &mut outage).await;
    });
    receiver
}

/// Waits until the API's first answer (or `wait` passes).
pub async fn first_answer(receiver: &mut watch::Receiver<NodeView>, wait: Duration) {
    let _ = tokio::time::timeout(wait, receiver.wait_for(|view| view.answered)).await;
}

async fn watch_node(
    client: Client,
    settings: &NodeSettings,
    metrics: &NodeMetrics,
    sender: &watch::Sender<NodeView>,
    outage: &mut Outage,
) {
    let pods: Api<Pod> = Api::all(client);
    let selector = format!("spec.nodeName={}", settings.node_name);
    let mut expiry = tokio::time::interval(EXPIRY_CHECK);
    expiry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut warned_empty = false;
    loop {
        let mut events =
            watcher::watcher(pods.clone(), watcher::Config::default().fields(&selector))
                .default_backoff()
                .boxed();
        loop {
            let event = tokio::select! {
                event = events.next() => match event {
                    Some(event) => event,
                    None => break,
                },
                _ = expiry.tick() => {
                    let now = Instant::now();
                    update(sender, metrics, |pods| pods.expire(now));
                    continue;
                }
            };
            match event {
                Ok(Event::Init) => {
                    sender.send_if_modified(|view| {
                        view.pods.relist_started();
                        false
                    });
                }
                Ok(Event::InitApply(pod) | Event::Apply(pod)) => {
                    answers(outage, metrics);
                    metrics.api.updates.inc();
                    update(sender, metrics, |pods| pods.apply(ApiPod::from_pod(&pod)));
                }
                Ok(Event::InitDone) => {
                    answers(outage, metrics);
                    let now = Instant::now();
                    update(sender, metrics, |pods| pods.relist_done(now));
                    mark_answered(sender);
                    // Our own pod runs on this node, so an empty list means a wrong NODE_NAME.
                    if !std::mem::replace(&mut warned_empty, true)
                        && sender.borrow().pods.is_empty()
                    {
                        warn!(node = settings.node_name, "The Kubernetes API lists no pod on this node; is NODE_NAME the node's name (fieldRef spec.nodeName)? Records carry only what their source path says.");
                    }
                }
                Ok(Event::Delete(pod)) => {
                    metrics.api.updates.inc();
                    let now = Instant::now();
                    update(sender, metrics, |pods| {
                        pods.delete(ApiPod::from_pod(&pod), now)
                    });
                }
                Err(e) => {
                    let reason = api::reason_of(&e);
                    metrics.api.count_error(reason);
                    if reason != "gone" {
                        metrics.api.up.set(0);
                        unavailable(outage, settings, reason, &e.to_string());
                        mark_answered(sender);
                        continue;
                    }
                    // As in the own-pod path: the map stays valid while the pods are listed
                    // again, and a watch refused at its start needs a fresh watcher.
                    debug!(error = %e, "The node's pod watch expired (410 Gone); listing again.");
                    if matches!(e, watcher::Error::WatchStartFailed(_)) {
                        break;
                    }
                }
            }
        }
    }
}

fn answers(outage: &mut Outage, metrics: &NodeMetrics) {
    outage.end("pods' metadata");
    metrics.api.up.set(1);
}

/// Changes the map, waking the stage only when what records carry changed.
fn update(
    sender: &watch::Sender<NodeView>,
    metrics: &NodeMetrics,
    change: impl FnOnce(&mut NodePods) -> bool,
) {
    sender.send_if_modified(|view| {
        let changed = change(&mut view.pods);
        metrics.pods.set(view.pods.len() as i64);
        changed
    });
}

/// Records that the API answered, waking the stage only the first time.
fn mark_answered(sender: &watch::Sender<NodeView>) {
    sender.send_if_modified(|view| !std::mem::replace(&mut view.answered, true));
}

/// Starts or continues an outage of the node's pod watch, warning once.
fn unavailable(outage: &mut Outage, settings: &NodeSettings, reason: &str, detail: &str) {
    if outage.begin(reason, detail) {
        warn!(
            node = settings.node_name,
            reason,
            error = detail,
            "Cannot list the node's pods from the Kubernetes API; records carry what their source path says (and the last pods seen, if any) until it answers. Retrying with backoff; this is said once."
        );
    }
}

/// A map looked into for every record: foldhash, as the stage's own counting maps.
type SourceMap<V> = std::collections::HashMap<String, V, foldhash::fast::RandomState>;

/// The stage's side: each source's `kubernetes` object, encoded once and reused for every
/// record of that source until the node's pods change.
#[derive(Debug)]
pub struct NodeMetadata {
    node_name: String,
    api: watch::Receiver<NodeView>,
    cache: SourceMap<Encoded>,
    warned: HashSet<String>,
    unparsed: Counter,
}

#[derive(Debug)]
struct Encoded {
    json: Box<[u8]>,
    parsed: bool,
}

impl NodeMetadata {
    /// Metadata for records on `node_name`, from the pods `api` publishes.
    pub fn new(node_name: String, api: watch::Receiver<NodeView>, metrics: &NodeMetrics) -> Self {
        NodeMetadata {
            node_name,
            api,
            cache: SourceMap::default(),
            warned: HashSet::new(),
            unparsed: metrics.unparsed.clone(),
        }
    }

    /// Takes in a change of the node's pods, if there was one: the objects are encoded anew
    /// from the next record on. Returns whether there was one.
    pub fn refresh(&mut self) -> bool {
        if !self.api.has_changed().unwrap_or(false) {
            return false;
        }
        self.api.mark_unchanged();
        self.cache.clear();
        true
    }

    /// The encoded `kubernetes` object of a record from `source`.
    pub fn encoded(&mut self, source: &str) -> &[u8] {
        // Two lookups on a hit rather than one: returning the hit and inserting on a miss in
        // one `match` is what the borrow checker refuses, and a miss is rare.
        if !self.cache.contains_key(source) {
            let encoded = self.encode(source);
            if self.cache.len() >= MAX_CACHED_SOURCES {
                self.cache.clear();
            }
            self.cache.insert(source.to_owned(), encoded);
        }
        let encoded = &self.cache[source];
        if !encoded.parsed {
            self.unparsed.inc();
        }
        &encoded.json
    }

    fn encode(&mut self, source: &str) -> Encoded {
        let mut object = Map::new();
        let at = SourcePod::parse(source);
        match &at {
            Some(at) => self.insert_pod(&mut object, at),
            None => {
                if self.warned.len() < MAX_WARNED_SOURCES && self.warned.insert(source.to_owned()) {
                    warn!(source, "A record's source_file is not a kubelet pod log path (<namespace>_<pod>_<uid>/<container>/<file>); its records carry only node_name. Said once per source.");
                }
            }
        }
        object.insert("node_name".into(), self.node_name.clone().into());
        let mut json = Vec::new();
        encode::write_value(&mut json, &Value::Object(object));
        Encoded {
            json: json.into_boxed_slice(),
            parsed: at.is_some(),
        }
    }

    fn insert_pod(&self, object: &mut Map<String, Value>, at: &SourcePod<'_>) {
        object.insert("namespace".into(), at.namespace.into());
        object.insert("pod_name".into(), at.pod_name.into());
        object.insert("pod_uid".into(), at.pod_uid.into());
        object.insert("container_name".into(), at.container.into());
        let view = self.api.borrow();
        let Some(pod) = view.pods.get(at.pod_uid) else {
            return;
        };
        object.insert("labels".into(), api::string_map(&pod.labels));
        object.insert("annotations".into(), api::string_map(&pod.annotations));
        if let Some(image) = pod.images.get(at.container) {
            object.insert("container_image".into(), image.clone().into());
        }
        pod.insert_owners(object);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;
    use crate::kubernetes::api::Owner;

    const SOURCE: &str = "default_web-7c9d5-x2p4q_0f3c1a2b-1111-2222-3333-444455556666/web/0.log";
    const UID: &str = "0f3c1a2b-1111-2222-3333-444455556666";

    #[test]
    fn a_kubelet_pod_log_path_names_its_pod_and_container() {
        assert_eq!(
            SourcePod::parse(SOURCE),
            Some(SourcePod {
                namespace: "default",
                pod_name: "web-7c9d5-x2p4q",
                pod_uid: UID,
                container: "web",
            })
        );
        // A rotated file keeps its source name, but any file name is taken as it is.
        let rotated = SourcePod::parse("kube-system_coredns-5d78c_a-b/coredns/1.log.20260101-1");
        assert_eq!(rotated.map(|at| at.container), Some("coredns"));
    }

    #[test]
    fn other_source_names_are_not_pod_logs() {
        for odd in [
            "app.log",
            "default_web_uid",
            "default_web_uid/web",
            "default_web/web/0.log",
            "defaultwebuid/web/0.log",
            "_web_uid/web/0.log",
            "default__uid/web/0.log",
            "default_web_/web/0.log",
            "default_web_uid//0.log",
            "default_web_uid/web/",
            "default_web_uid/../0.log",
            "default_web_uid/web/..",
            "../default_web_uid/web/0.log",
            "/default_web_uid/web/0.log",
            "default_web_uid/web/0.log/more",
            "",
        ] {
            assert_eq!(SourcePod::parse(odd), None, "{odd:?}");
        }
    }

    fn pod(uid: &str, tier: &str) -> ApiPod {
        ApiPod {
            uid: Some(uid.into()),
            labels: BTreeMap::from([("tier".to_owned(), tier.to_owned())]),
            annotations: BTreeMap::from([("team".to_owned(), "logs".to_owned())]),
            images: BTreeMap::from([
                ("web".to_owned(), "demo/web:1".to_owned()),
                ("init".to_owned(), "demo/init:1".to_owned()),
            ]),
            owners: vec![Owner {
                kind: "StatefulSet".into(),
                name: "web".into(),
            }],
        }
    }

    #[test]
    fn a_deleted_pod_is_kept_for_its_retention_then_forgotten() {
        let start = Instant::now();
        let mut pods = NodePods::default();
        assert!(pods.apply(pod("a", "x")));
        assert!(!pods.apply(pod("a", "x")), "the same version is no change");
        assert!(
            !pods.delete(pod("a", "x"), start),
            "deleting changes nothing carried"
        );
        assert!(pods.get("a").is_some());
        assert!(!pods.expire(start + DELETED_RETENTION - Duration::from_secs(1)));
        assert!(pods.get("a").is_some(), "still within its retention");
        assert!(pods.expire(start + DELETED_RETENTION));
        assert!(pods.get("a").is_none());
        assert!(pods.is_empty());
    }

    #[test]
    fn a_relist_keeps_pods_it_no_longer_shows_for_their_retention() {
        let start = Instant::now();
        let mut pods = NodePods::default();
        pods.relist_started();
        pods.apply(pod("a", "x"));
        pods.apply(pod("b", "x"));
        assert!(!pods.relist_done(start));
        // The watch expired; the new list no longer has `b` and changed `a`.
        pods.relist_started();
        assert!(pods.apply(pod("a", "y")));
        assert!(!pods.relist_done(start));
        assert_eq!(pods.get("a").unwrap().labels["tier"], "y");
        assert!(pods.get("b").is_some(), "gone from the list, kept a while");
        assert!(pods.expire(start + DELETED_RETENTION));
        assert!(pods.get("b").is_none() && pods.get("a").is_some());
    }

    #[test]
    fn deleted_pods_are_bounded_oldest_first() {
        let start = Instant::now();
        let mut pods = NodePods::default();
        for n in 0..=MAX_DELETED {
            let uid = n.to_string();
            pods.apply(pod(&uid, "x"));
            let forgot = pods.delete(pod(&uid, "x"), start + Duration::from_millis(n as u64));
            assert_eq!(forgot, n == MAX_DELETED, "pod {n}");
        }
        assert_eq!(pods.len(), MAX_DELETED);
        assert!(pods.get("0").is_none() && pods.get("1").is_some());
    }

    #[test]
    fn a_pod_seen_again_after_its_deletion_is_not_forgotten_by_the_stale_deletion() {
        let start = Instant::now();
        let mut pods = NodePods::default();
        pods.apply(pod("a", "x"));
        pods.delete(pod("a", "x"), start);
        pods.apply(pod("a", "x"));
        assert!(!pods.expire(start + DELETED_RETENTION * 2));
        assert!(pods.get("a").is_some());
    }

    fn object(metadata: &mut NodeMetadata, source: &str) -> Value {
        serde_json::from_slice(metadata.encoded(source)).unwrap()
    }

    #[test]
    fn objects_come_from_the_source_and_the_pod_and_are_encoded_anew_after_a_change() {
        let (sender, receiver) = watch::channel(NodeView::default());
        let metrics = NodeMetrics::default();
        let mut metadata = NodeMetadata::new("node-1".into(), receiver, &metrics);
        assert_eq!(
            object(&mut metadata, SOURCE),
            json!({
                "namespace": "default", "pod_name": "web-7c9d5-x2p4q", "pod_uid": UID,
                "container_name": "web", "node_name": "node-1",
            })
        );
        sender.send_modify(|view| {
            view.pods.apply(pod(UID, "edge"));
        });
        assert_eq!(
            object(&mut metadata, SOURCE)["labels"],
            json!(null),
            "the cached bytes stand until the stage refreshes, between batches"
        );
        assert!(metadata.refresh());
        assert!(!metadata.refresh(), "one change is taken in once");
        assert_eq!(
            object(&mut metadata, SOURCE),
            json!({
                "namespace": "default", "pod_name": "web-7c9d5-x2p4q", "pod_uid": UID,
                "container_name": "web", "node_name": "node-1",
                "labels": {"tier": "edge"}, "annotations": {"team": "logs"},
                "container_image": "demo/web:1",
                "owner": {"kind": "StatefulSet", "name": "web"},
                "owner_chain": [{"kind": "StatefulSet", "name": "web"}],
            })
        );
        let init = SOURCE.replace("/web/", "/init/");
        assert_eq!(
            object(&mut metadata, &init)["container_image"],
            "demo/init:1"
        );
        assert_eq!(metrics.unparsed.get(), 0);
        assert_eq!(
            object(&mut metadata, "app.log"),
            json!({"node_name": "node-1"})
        );
        assert_eq!(
            object(&mut metadata, "app.log"),
            json!({"node_name": "node-1"})
        );
        assert_eq!(metrics.unparsed.get(), 2, "counted per record");
        assert_eq!(metadata.warned.len(), 1, "warned of once");
    }

    #[test]
    fn the_cache_starts_over_beyond_its_bound() {
        let (_sender, receiver) = watch::channel(NodeView::default());
        let mut metadata = NodeMetadata::new("n".into(), receiver, &NodeMetrics::default());
        for n in 0..=MAX_CACHED_SOURCES {
            metadata.encoded(&format!("ns_pod_{n}/c/0.log"));
        }
        assert_eq!(metadata.cache.len(), 1);
    }
}
