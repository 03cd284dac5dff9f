//! One query across pods: `forwarder logs --selector app=web` and `GET /logs?selector=app=web`
//! find the pods through the Kubernetes API, ask each pod's query API the same question, and
//! merge the answers, each line marked with its pod (`source_pod`).
//!
//! Easy to get wrong: one pod must not decide the answer. A pod that does not answer, refuses
//! or answers too much is reported beside the lines of the others, never a failure of the
//! whole query; and what one query may hold is bounded twice, by the number of pods and by the
//! bytes read from each.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::{Map, Value};
use sidecar_core::query::Output;
use tokio::sync::mpsc;

/// The container port name the forwarder's query API has in the manifests.
const API_PORT_NAME: &str = "forwarder-api";
/// The query API's port when the pod does not name it.
const DEFAULT_API_PORT: i32 = 9104;
/// How long a pod may take to answer before it counts as not answering (a follow's stream
/// then goes on as long as the pod sends).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to look for pods and how much one query may hold.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The Kubernetes label selector, e.g. `app=logging-demo`.
    pub selector: String,
    /// The namespace to look in.
    pub namespace: String,
    /// The API server (plain HTTP, no credentials); `None`: the in-cluster address and token.
    pub api_server: Option<http::Uri>,
    /// Pods asked at most (the first by name); the rest are reported as left out.
    pub max_pods: usize,
    /// Bytes read from one pod at most; a pod's answer is cut there (and said so).
    pub max_bytes_per_pod: usize,
    /// The bearer token the pods' APIs want.
    pub token: Option<String>,
}

/// A pod's query API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodApi {
    /// The pod's name.
    pub name: String,
    /// `http://ip:port`.
    pub url: String,
}

/// The pods a selection finds.
#[derive(Debug, Default)]
pub struct Found {
    /// Running pods with an address, by name, at most `max_pods`.
    pub pods: Vec<PodApi>,
    /// Pods matched but not asked: over `max_pods`, or not running with an address yet.
    pub left_out: Vec<(String, String)>,
}

/// Lists the pods `selection` names.
///
/// # Errors
/// When the Kubernetes API cannot be reached or refuses the list (a bad selector, no rights).
pub async fn find_pods(selection: &Selection) -> anyhow::Result<Found> {
    let config = match &selection.api_server {
        Some(url) => kube::Config::new(url.clone()),
        None => kube::Config::incluster().map_err(|e| {
            anyhow::anyhow!("no in-cluster Kubernetes API access to find the pods (is a service account token mounted?): {e}")
        })?,
    };
    let client = kube::Client::try_from(config)?;
    let pods: Api<Pod> = Api::namespaced(client, &selection.namespace);
    let list = pods
        .list(&ListParams::default().labels(&selection.selector))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "listing pods {:?} in namespace {}: {e}",
                selection.selector,
                selection.namespace
            )
        })?;
    let mut found = Found::default();
    let mut items = list.items;
    items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for pod in items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        match api_of(&pod) {
            Ok(url) if found.pods.len() < selection.max_pods => {
                found.pods.push(PodApi { name, url });
            }
            Ok(_) => found.left_out.push((
                name,
                format!("over the limit of {} pods", selection.max_pods),
            )),
            Err(why) => found.left_out.push((name, why)),
        }
    }
    Ok(found)
}

/// A running pod's query API address, or why it has none.
fn api_of(pod: &Pod) -> Result<String, String> {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if phase != "Running" {
        return Err(format!("not running ({phase})"));
    }
    let ip = status
        .and_then(|s| s.pod_ip.as_deref())
        .ok_or("no pod IP yet")?;
    let port = pod
        .spec
        .iter()
        .flat_map(|spec| {
            spec.init_containers
                .iter()
                .flatten()
                .chain(&spec.containers)
        })
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(API_PORT_NAME))
        .map_or(DEFAULT_API_PORT, |p| p.container_port);
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    Ok(format!("http://{host}:{port}"))
}

/// What the pods' answers bring.
#[derive(Debug)]
pub enum Event {
    /// One record (a JSON line, no newline) of a pod.
    Record {
        /// The pod.
        pod: Arc<str>,
        /// The record as the pod sent it.
        raw: Vec<u8>,
    },
    /// A pod that did not answer, refused, or whose answer was cut.
    Problem {
        /// The pod.
        pod: Arc<str>,
        /// What happened.
        reason: String,
    },
    /// A pod's answer ended.
    Done,
}

/// The parameters a pod is asked with: the caller's, less what is applied after the merge
/// (`format`, `fields`, `timestamps`) and the selector itself (a pod must not fan out again).
pub fn pod_params(params: &[(String, String)]) -> Vec<(String, String)> {
    params
        .iter()
        .filter(|(name, _)| {
            !matches!(
                name.as_str(),
                "format" | "fields" | "timestamps" | "selector" | "selector_namespace"
            )
        })
        .cloned()
        .chain([("format".to_owned(), "json".to_owned())])
        .collect()
}

/// Asks every pod at once; the answers arrive on the returned channel (one `Done` per pod).
pub fn ask_pods(
    pods: &[PodApi],
    params: Vec<(String, String)>,
    selection: &Selection,
) -> mpsc::Receiver<Event> {
    let (sender, receiver) = mpsc::channel(1024);
    let client = reqwest::Client::builder()
        .connect_timeout(ANSWER_TIMEOUT)
        .build()
        .unwrap_or_default();
    let params = Arc::new(params);
    for pod in pods {
        let (client, sender, params) = (client.clone(), sender.clone(), Arc::clone(&params));
        let (token, max_bytes) = (selection.token.clone(), selection.max_bytes_per_pod);
        let pod = pod.clone();
        tokio::spawn(async move {
            let name: Arc<str> = Arc::from(pod.name.as_str());
            if let Err(reason) = ask_pod(
                &client,
                &pod,
                &params,
                token.as_deref(),
                max_bytes,
                &name,
                &sender,
            )
            .await
            {
                let _ = sender.send(Event::Problem { pod: name, reason }).await;
            }
            let _ = sender.send(Event::Done).await;
        });
    }
    receiver
}

async fn ask_pod(
    client: &reqwest::Client,
    pod: &PodApi,
    params: &[(String, String)],
    token: Option<&str>,
    max_bytes: usize,
    name: &Arc<str>,
    sender: &mpsc::Sender<Event>,
) -> Result<(), String> {
    let mut request = client.get(format!("{}/logs", pod.url)).query(params);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = tokio::time::timeout(ANSWER_TIMEOUT, request.send())
        .await
        .map_err(|_| format!("{} did not answer within {ANSWER_TIMEOUT:?}", pod.url))?
        .map_err(|e| {
            format!(
                "{}: {}",
                pod.url,
                crate::logs_cli::describe_request_error(&e)
            )
        })?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        return Err(format!("{} answered {status}: {message}", pod.url));
    }
    let mut pending: Vec<u8> = Vec::new();
    let mut read = 0usize;
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading from {}: {e}", pod.url))?
    {
        read += chunk.len();
        pending.extend_from_slice(&chunk);
        while let Some(end) = memchr::memchr(b'\n', &pending) {
            let rest = pending.split_off(end + 1);
            let mut line = std::mem::replace(&mut pending, rest);
            line.pop();
            let event = Event::Record {
                pod: Arc::clone(name),
                raw: line,
            };
            if sender.send(event).await.is_err() {
                return Ok(());
            }
        }
        if read > max_bytes {
            return Err(format!(
                "answer cut after {read} bytes (the limit per pod); narrow the query"
            ));
        }
    }
    Ok(())
}

/// A pod's record marked with the pod's name (`source_pod`), written by `output`; a text
/// line starts with `[pod]`.
pub fn write_marked(output: &Output, pod: &str, raw: &[u8], out: &mut Vec<u8>) {
    let marked = match serde_json::from_slice::<Map<String, Value>>(raw) {
        Ok(mut record) => {
            record.insert("source_pod".into(), Value::from(pod));
            serde_json::to_vec(&record).expect("a JSON map serialises")
        }
        Err(_) => raw.to_vec(),
    };
    if output.text {
        out.push(b'[');
        out.extend_from_slice(pod.as_bytes());
        out.extend_from_slice(b"] ");
    } else if !output.fields.is_empty() && !output.fields.iter().any(|f| f == "source_pod") {
        // Picked fields keep the pod's mark.
        let mut output = output.clone();
        output.fields.push("source_pod".into());
        output.write(&marked, out);
        return;
    }
    output.write(&marked, out);
}

/// The time a record is merged by: when it was collected (RFC 3339 UTC, which sorts as text).
fn merge_key(raw: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Key {
        #[serde(default)]
        collected_at: String,
    }
    serde_json::from_slice::<Key>(raw)
        .map(|k| k.collected_at)
        .unwrap_or_default()
}

/// Merges the pods' records by collection time (a pod's own order kept for equal times) and
/// keeps the last `tail` of them.
pub fn merge(
    mut records: Vec<(Arc<str>, Vec<u8>)>,
    tail: Option<usize>,
) -> Vec<(Arc<str>, Vec<u8>)> {
    records.sort_by_cached_key(|(_, raw)| merge_key(raw));
    if let Some(n) = tail {
        let skip = records.len().saturating_sub(n);
        records.drain(..skip);
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_merge_by_collection_time_and_keep_the_last_tail() {
        let r = |pod: &str, t: &str, n: u32| {
            (
                Arc::from(pod),
                format!(r#"{{"collected_at":"{t}","n":{n}}}"#).into_bytes(),
            )
        };
        let merged = merge(
            vec![
                r("a", "2026-12-06T10:00:02.000Z", 1),
                r("a", "2026-12-06T10:00:04.000Z", 2),
                r("b", "2026-12-06T10:00:01.000Z", 3),
                r("b", "2026-12-06T10:00:03.000Z", 4),
            ],
            Some(3),
        );
        let order: Vec<String> = merged
            .iter()
            .map(|(pod, raw)| format!("{pod}{}", String::from_utf8_lossy(&raw[raw.len() - 2..])))
            .collect();
        assert_eq!(order, ["a1}", "b4}", "a2}"]);
    }

    #[test]
    fn lines_carry_their_pod_in_either_form() {
        let mut out = Vec::new();
        let json = Output::default();
        write_marked(&json, "web-1", br#"{"message":"hi"}"#, &mut out);
        assert_eq!(out, b"{\"message\":\"hi\",\"source_pod\":\"web-1\"}\n");
        out.clear();
        let text = Output {
            text: true,
            ..Output::default()
        };
        write_marked(
            &text,
            "web-1",
            br#"{"source_file":"a.log","message":"hi"}"#,
            &mut out,
        );
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("[web-1] "), "{line}");
        assert!(line.contains("hi"), "{line}");
    }

    #[test]
    fn pods_are_asked_in_json_without_the_selector() {
        let params = vec![
            ("selector".to_owned(), "app=web".to_owned()),
            ("tail".to_owned(), "5".to_owned()),
            ("format".to_owned(), "text".to_owned()),
            ("fields".to_owned(), "message".to_owned()),
        ];
        assert_eq!(
            pod_params(&params),
            vec![
                ("tail".to_owned(), "5".to_owned()),
                ("format".to_owned(), "json".to_owned())
            ]
        );
    }
}
