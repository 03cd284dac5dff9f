//! Pod metadata, added to records as a `kubernetes` object, in one of two shapes.
//!
//! The processor as a sidecar of the pod whose logs it reads: one object shared by every
//! record, always what the Downward API gives (environment and volume), and with
//! `--kubernetes-metadata api` what the API server says of the pod (labels, annotations,
//! container images, owner chain), which then wins for labels and annotations.
//!
//! The processor in node mode (`--kubernetes-metadata node`, a DaemonSet over the kubelet's
//! `/var/log/pods`): one object per source file, taken from the source's path
//! (`<namespace>_<pod>_<uid>/<container>/<file>`) and from the API server's view of the pods on
//! the node ([`node`]).
//!
//! Easy to get wrong: which pod. In node mode the processor's own Downward API describes the
//! DaemonSet's pod, not the record's, so only `NODE_NAME` is taken from it.

pub mod api;
mod downward;
pub mod node;

use std::path::PathBuf;

use serde_json::Value;
use tokio::sync::watch;

pub use api::{ApiMetrics, ApiSettings, ApiView};
use downward::DownwardVolume;
pub use node::{NodeMetadata, NodeMetrics, NodeSettings};

/// The record field the metadata goes under.
pub const FIELD: &str = "kubernetes";

/// Where pod metadata comes from, checked at load.
#[derive(Debug, Clone)]
pub struct MetadataConfig {
    /// The downwardAPI volume with `labels` and `annotations`.
    pub podinfo_dir: PathBuf,
    /// The API server path, when enabled.
    pub api: Option<ApiSettings>,
}

/// The pod's metadata, kept fresh from the downwardAPI volume and the API watch.
#[derive(Debug)]
pub struct PodMetadata {
    object: Value,
    volume: DownwardVolume,
    api: Option<watch::Receiver<ApiView>>,
}

impl PodMetadata {
    /// Reads the Downward API now; `api` is the watch's channel when the API path is on.
    pub fn load(config: &MetadataConfig, api: Option<watch::Receiver<ApiView>>) -> PodMetadata {
        let mut metadata = PodMetadata {
            object: Value::Null,
            volume: DownwardVolume::new(&config.podinfo_dir),
            api,
        };
        metadata.object = metadata.read();
        metadata
    }

    /// The `kubernetes` object.
    pub fn object(&self) -> &Value {
        &self.object
    }

    /// Takes in a new version from the volume or the API; returns whether there was one.
    pub fn refresh(&mut self) -> bool {
        let volume = self.volume.changed();
        let api = self
            .api
            .as_mut()
            .is_some_and(|api| api.has_changed().unwrap_or(false));
        if volume || api {
            self.object = self.read();
            return true;
        }
        false
    }

    fn read(&mut self) -> Value {
        let mut object = downward::environment();
        object.extend(self.volume.read());
        let pod = self
            .api
            .as_mut()
            .and_then(|api| api.borrow_and_update().pod.clone());
        if let Some(pod) = pod {
            object.extend(pod.fields());
        }
        Value::Object(object)
    }
}
