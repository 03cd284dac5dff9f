//! A stand-in Kubernetes API for the idle measurement with `--kubernetes-metadata api`: the
//! core/v1 pods list (one pod) and a watch that sends the pod, with a new label value, as a
//! `MODIFIED` event at a fixed interval, far more often than a real pod changes. No cluster
//! runs here; this speaks the list and watch wire format the processor uses, nothing more.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};

/// The pod's name and namespace, for the processor's POD_NAME and POD_NAMESPACE.
pub const POD_NAME: &str = "bench-7c9d5-x2p4q";
pub const NAMESPACE: &str = "bench";

/// The running server; it stops when dropped.
pub struct PodApi {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _runtime: tokio::runtime::Runtime,
}

impl PodApi {
    /// Serves on a free loopback port; each watch gets a `MODIFIED` event every `update_every`.
    pub fn start(update_every: Duration) -> anyhow::Result<PodApi> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let url = format!("http://{}", listener.local_addr()?);
        let app = Router::new()
            .route(
                &format!("/api/v1/namespaces/{NAMESPACE}/pods"),
                get(list_or_watch),
            )
            .with_state(update_every);
        runtime.spawn(async move { axum::serve(listener, app).await });
        Ok(PodApi {
            url,
            _runtime: runtime,
        })
    }
}

fn pod(version: u64) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": POD_NAME, "namespace": NAMESPACE, "uid": "bench-uid",
            "resourceVersion": version.to_string(),
            "labels": {"app": "bench", "pod-template-hash": "7c9d5", "version": version.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                 "name": "bench-7c9d5", "uid": "rs", "controller": true}],
        },
        "spec": {"containers": [{"name": "app", "image": "bench/app:1"}]},
    })
}

async fn list_or_watch(
    State(update_every): State<Duration>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if query.get("watch").map(String::as_str) != Some("true") {
        let list = json!({
            "apiVersion": "v1", "kind": "PodList",
            "metadata": {"resourceVersion": "1"}, "items": [pod(1)],
        });
        return axum::Json(list).into_response();
    }
    let events = futures_util::stream::unfold(1u64, move |version| async move {
        tokio::time::sleep(update_every).await;
        let version = version + 1;
        let line = format!("{}\n", json!({"type": "MODIFIED", "object": pod(version)}));
        Some((Ok::<_, Infallible>(line), version))
    });
    Body::from_stream(events).into_response()
}
