//! The forwarder's read-only query API on its own port: `GET /logs` (NDJSON or text, with a
//! follow mode), `GET /logs/{source}`, `GET /sources`, `GET /stats`, `/healthz`, `/metrics`.
//!
//! Easy to get wrong: a follower must never slow the pipeline. Every request reads the
//! processed journal's files itself on a blocking thread and publishes no cursor, so retention
//! and the forwarder's own reading ignore it; a slow client only fills its own socket, which
//! pauses its own reads. The number of followers and the size of other answers are capped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use clap::Args;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};
use sidecar_core::access::{self, Access, AccessFlags, Tokens};
use sidecar_core::config::ByteSize;
use sidecar_core::journal::{Cursor, JournalError, Position, COMMIT_FILE};
use sidecar_core::query::index::{IndexSnapshot, SourceIndex};
use sidecar_core::query::request::{self, LogsRequest, QueryLimits};
use sidecar_core::query::scan::{self, Follower};
use sidecar_core::query::ParamError;
use sidecar_core::signal::{Background, DirWatcher, Wakeup};

use crate::fanout::{self, Event, Selection};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tracing::{info, warn};

use crate::viewer;

/// How often a follower re-checks the commit when no file event woke it: the fallback for a
/// lost inotify event, and the bound on how long a disconnected follower lingers.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Non-follow answers built at once: each holds up to `--api-max-response` in memory, and the
/// forwarder's container is small (128 MiB in the manifests). Further queries wait their turn.
const MAX_CONCURRENT_QUERIES: usize = 4;
/// Bytes a follower reads per step: one step's output is at most about this much.
const FOLLOW_STEP_BYTES: usize = 1 << 20;

/// Flags of the query API (part of the forwarder's flags).
#[derive(Debug, Clone, Args)]
pub struct ApiFlags {
    /// Address of the read-only query API (GET /logs, /sources, /stats); "off" disables it.
    /// Default 0.0.0.0:9104 with --api-tokens-file or --api-anonymous, 127.0.0.1:9104
    /// (loopback: port-forward and exec only) without.
    #[arg(long, env = "FORWARDER_API_LISTEN")]
    pub api_listen: Option<String>,
    /// File of bearer tokens, one per line (a mounted Secret; re-read when it changes):
    /// every request but /healthz and the viewer's page then needs
    /// `Authorization: Bearer <token>`.
    #[arg(long, env = "FORWARDER_API_TOKENS_FILE", value_name = "FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// Serve the query API without a token on an address other than loopback.
    #[arg(long, env = "FORWARDER_API_ANONYMOUS")]
    pub api_anonymous: bool,
    /// Origins (scheme://host[:port], comma-separated) whose pages may call the query API from
    /// a browser (CORS). None by default.
    #[arg(
        long = "api-cors-origin",
        env = "FORWARDER_API_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGIN"
    )]
    pub api_cors_origins: Vec<String>,
    /// At most this many `follow=true` streams at once; more get 429.
    #[arg(long, env = "FORWARDER_API_MAX_FOLLOWERS", default_value_t = 8)]
    pub api_max_followers: usize,
    /// Answers to non-follow queries stop at this size (marked X-Logs-Truncated). At most
    /// four are built at once, so the API's memory stays within four times this.
    #[arg(long, env = "FORWARDER_API_MAX_RESPONSE", default_value = "4MiB")]
    pub api_max_response: ByteSize,
    /// The Kubernetes API server `/logs?selector=` lists pods from (plain HTTP, no
    /// credentials, for tests); default: the in-cluster address and service account.
    #[arg(long, env = "FORWARDER_KUBERNETES_API", hide = true)]
    pub kubernetes_api: Option<String>,
    /// Read step when reading the journal backwards for `tail`.
    #[arg(
        long,
        env = "FORWARDER_API_CHUNK",
        default_value = "64KiB",
        hide = true
    )]
    pub api_chunk: ByteSize,
}

impl ApiFlags {
    /// The listen address, or `None` when the API is off.
    ///
    /// # Errors
    /// When the address is neither "off" nor a socket address, or is off loopback without a
    /// token or `--api-anonymous`.
    pub fn listen(&self) -> anyhow::Result<Option<SocketAddr>> {
        let has_tokens = self.api_tokens_file.is_some();
        let addr = match self.api_listen.as_deref().map(str::trim) {
            Some("off" | "") => return Ok(None),
            Some(text) => text.parse().map_err(|e| {
                anyhow::anyhow!(
                    "--api-listen: {text:?} is not an address like 0.0.0.0:9104 or off: {e}"
                )
            })?,
            None if has_tokens || self.api_anonymous => SocketAddr::from(([0, 0, 0, 0], 9104)),
            None => SocketAddr::from(([127, 0, 0, 1], 9104)),
        };
        access::check_listen(addr, has_tokens, self.api_anonymous, ACCESS_FLAGS)?;
        self.cors_origins()?;
        Ok(Some(addr))
    }

    /// The CORS origins as header values.
    ///
    /// # Errors
    /// An origin that is not `http(s)://host[:port]`.
    fn cors_origins(&self) -> anyhow::Result<Vec<HeaderValue>> {
        self.api_cors_origins
            .iter()
            .map(|origin| {
                let origin = origin.trim();
                let host = origin
                    .strip_prefix("https://")
                    .or_else(|| origin.strip_prefix("http://"));
                match host {
                    Some(host) if !host.is_empty() && !host.contains(['/', '?', '#']) => {
                        HeaderValue::from_str(origin).map_err(|e| anyhow::anyhow!("{e}"))
                    }
                    _ => Err(anyhow::anyhow!("not scheme://host[:port]")),
                }
                .map_err(|e| anyhow::anyhow!("--api-cors-origin: {origin:?}: {e}"))
            })
            .collect()
    }
}

/// The query API's access flags, for messages.
const ACCESS_FLAGS: AccessFlags = AccessFlags {
    listen: "--api-listen",
    tokens_file: "--api-tokens-file",
    anonymous: "--api-anonymous",
};

/// Paths served without a token: the health check, and the viewer's page and assets, which
/// hold no logs (the page asks for a token when the API wants one).
fn is_public(path: &str) -> bool {
    path == "/healthz" || path == "/" || path.starts_with("/viewer/")
}

/// Metrics of the query API.
#[derive(Debug, Clone, Default)]
pub struct ApiMetrics {
    requests: Family<Vec<(String, String)>, Counter>,
    bytes_read: Counter,
    followers: Gauge,
    rejected_followers: Counter,
    unauthorized: Counter,
}

impl ApiMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "forwarder_query_requests",
            "Query API requests, per endpoint and status",
            self.requests.clone(),
        );
        registry.register(
            "forwarder_query_bytes_read",
            "Journal bytes read to answer queries",
            self.bytes_read.clone(),
        );
        registry.register(
            "forwarder_query_followers",
            "Follow streams open now",
            self.followers.clone(),
        );
        registry.register(
            "forwarder_query_rejected_followers",
            "Follow requests refused because the maximum was reached",
            self.rejected_followers.clone(),
        );
        registry.register(
            "forwarder_query_unauthorized_requests",
            "Requests refused for a missing or wrong bearer token",
            self.unauthorized.clone(),
        );
    }

    fn count(&self, endpoint: &str, status: StatusCode) {
        self.requests
            .get_or_create(&vec![
                ("endpoint".to_owned(), endpoint.to_owned()),
                ("status".to_owned(), status.as_u16().to_string()),
            ])
            .inc();
    }
}

#[derive(Clone)]
struct ApiState {
    dir: Arc<PathBuf>,
    index: Arc<Mutex<SourceIndex>>,
    followers: Arc<Semaphore>,
    max_followers: usize,
    queries: Arc<Semaphore>,
    limits: QueryLimits,
    metrics: ApiMetrics,
    registry: Arc<Registry>,
    commits: watch::Receiver<u64>,
    fan_out: Arc<FanOutSettings>,
}

/// What `/logs?selector=` needs besides the request.
#[derive(Debug)]
struct FanOutSettings {
    api_server: Option<http::Uri>,
    /// The pods' APIs want the same tokens as this one: the first is sent.
    tokens_file: Option<PathBuf>,
}

/// Binds `listen` and serves the query API on the journal at `dir` in background tasks.
/// Returns the bound address.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    flags: &ApiFlags,
    dir: &Path,
    metrics: ApiMetrics,
    background: &Background,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} for the query API: {e}"))?;
    let bound = listener.local_addr()?;
    let access = Arc::new(Access {
        tokens: flags
            .api_tokens_file
            .as_deref()
            .map(|path| Tokens::load(ACCESS_FLAGS.tokens_file, path))
            .transpose()?,
        public: is_public,
        refused: metrics.unauthorized.clone(),
    });
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let (tx, commits) = watch::channel(0u64);
    // A commit (a write of commit.json) wakes the followers at once. Only the commit file is
    // watched: a watch on the whole directory woke this thread for every segment write as well,
    // two or three times per commit at a steady rate, with or without followers.
    let watcher = DirWatcher::start_for_file_with([dir], &Wakeup::new(), COMMIT_FILE, move |_| {
        tx.send_modify(|n| *n = n.wrapping_add(1));
    });
    let state = ApiState {
        dir: Arc::new(dir.to_owned()),
        index: Arc::new(Mutex::new(SourceIndex::open(dir)?)),
        followers: Arc::new(Semaphore::new(flags.api_max_followers)),
        max_followers: flags.api_max_followers,
        queries: Arc::new(Semaphore::new(MAX_CONCURRENT_QUERIES)),
        limits: QueryLimits {
            chunk_bytes: flags.api_chunk.0.max(1) as usize,
            max_output_bytes: flags.api_max_response.0 as usize,
        },
        metrics,
        registry: Arc::new(registry),
        commits,
        fan_out: Arc::new(FanOutSettings {
            api_server: flags
                .kubernetes_api
                .as_deref()
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--kubernetes-api: {e}"))?,
            tokens_file: flags.api_tokens_file.clone(),
        }),
    };
    let app = Router::new()
        .route(
            "/",
            get(
                |State(state): State<ApiState>, headers: HeaderMap| async move {
                    let response = viewer::index(&headers, &state.dir);
                    state.metrics.count("index", response.status());
                    response
                },
            ),
        )
        .route("/viewer/{asset}", get(viewer::asset))
        .route("/logs", get(logs))
        .route("/logs/{source}", get(source_logs))
        .route("/sources", get(sources))
        .route("/stats", get(stats))
        .route("/alerts", get(alerts))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics_text))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&access),
            access::require_token,
        ));
    // Outside the token check: a browser's preflight carries no token.
    let app = match cors_layer(flags)? {
        Some(cors) => app.layer(cors),
        None => app,
    };
    background.spawn_graceful(|stopping| async move {
        let _watcher = watcher;
        let server = axum::serve(listener, app).with_graceful_shutdown(stopping);
        if let Err(e) = server.await {
            tracing::error!(error = %e, "The query API server stopped.");
        }
    });
    match (&access.tokens, flags.api_anonymous) {
        (Some(_), _) => {
            info!(listen = %bound, journal = %dir.display(), "Query API started; requests need a bearer token from --api-tokens-file.");
        }
        (None, true) if !bound.ip().is_loopback() => {
            warn!(listen = %bound, journal = %dir.display(), "Query API started without a token (--api-anonymous): anyone who reaches this address reads every log line.");
        }
        (None, _) => {
            info!(listen = %bound, journal = %dir.display(), "Query API started on loopback without a token; give --api-tokens-file to serve it to other pods.");
        }
    }
    Ok(bound)
}

/// The CORS layer for the configured origins; `None` when there are none.
fn cors_layer(flags: &ApiFlags) -> anyhow::Result<Option<tower_http::cors::CorsLayer>> {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let origins = flags.cors_origins()?;
    if origins.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([axum::http::Method::GET])
            .allow_headers([header::AUTHORIZATION, header::ACCEPT])
            .expose_headers([
                header::HeaderName::from_static("x-logs-records"),
                header::HeaderName::from_static("x-logs-bytes-read"),
                header::HeaderName::from_static("x-logs-truncated"),
            ]),
    ))
}

/// Catches the index up with the journal. Only requests do this, so the index costs nothing
/// while nobody asks (the first request reads the retained journal once).
async fn update_index(state: &ApiState) -> anyhow::Result<()> {
    let index = state.index.clone();
    tokio::task::spawn_blocking(move || {
        let mut index = index.lock();
        index.update(usize::MAX)
    })
    .await??;
    Ok(())
}

/// An error answer: `{"error": …, "parameter": …}`.
fn error(status: StatusCode, parameter: Option<&str>, message: impl Into<String>) -> Response {
    let mut body = json!({ "error": message.into(), "status": status.as_u16() });
    if let Some(p) = parameter {
        body["parameter"] = Value::from(p);
    }
    (status, axum::Json(body)).into_response()
}

fn param_error(e: &ParamError) -> Response {
    error(StatusCode::BAD_REQUEST, Some(&e.parameter), e.to_string())
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string())
}

/// Splits a query string into decoded (name, value) pairs.
pub fn parse_query(raw: &str) -> Vec<(String, String)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| (bytes[at] as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(i + 1), hex(i + 2)) {
                (Some(hi), Some(lo)) => {
                    out.push((hi * 16 + lo) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Catches the index up and checks that every named source was seen. With `container_hint`,
/// an unknown source that names a container says to use `container=` (a container runtime's
/// files are all `0.log`, so a container's name is what people type).
async fn check_sources(
    state: &ApiState,
    sources: &[String],
    container_hint: bool,
) -> Result<(), Response> {
    if sources.is_empty() {
        // Nothing to check: do not wait for the index, which a first `/stats` may hold while
        // it reads the whole retained journal.
        return Ok(());
    }
    let unseen: Vec<String> = {
        let index = state.index.lock();
        sources
            .iter()
            .filter(|s| !index.knows(s))
            .cloned()
            .collect()
    };
    if unseen.is_empty() {
        return Ok(());
    }
    // Most named sources logged lately: a backward look finds them at once, where catching
    // the index up could mean reading the whole retained journal.
    let dir = state.dir.clone();
    let chunk = state.limits.chunk_bytes;
    let missing = tokio::task::spawn_blocking(move || {
        let mut missing = Vec::new();
        for source in unseen {
            if !scan::has_source(&dir, &source, chunk)? {
                missing.push(source);
            }
        }
        Ok::<_, JournalError>(missing)
    })
    .await
    .map_err(internal)?
    .map_err(internal)?;
    if missing.is_empty() {
        return Ok(());
    }
    update_index(state).await.map_err(internal)?;
    let (unknown, mut message) = {
        let index = state.index.lock();
        let Some(unknown) = missing.into_iter().find(|s| !index.knows(s)) else {
            return Ok(());
        };
        let known = index.names();
        let message = format!(
            "source: unknown source {unknown:?} (known: {})",
            sidecar_core::query::known_list(&known)
        );
        (unknown, message)
    };
    if container_hint {
        let dir = state.dir.clone();
        let chunk = state.limits.chunk_bytes;
        let name = unknown.clone();
        let is_container =
            tokio::task::spawn_blocking(move || scan::has_container(&dir, &name, chunk))
                .await
                .map_err(internal)?
                .map_err(internal)?;
        if is_container {
            message.push_str(&format!(
                "; {unknown:?} is a container: use container={unknown}"
            ));
        }
    }
    Err(error(StatusCode::NOT_FOUND, Some("source"), message))
}

/// A category no retained record has is an error that lists the known ones, as an unknown
/// source is.
async fn check_category(state: &ApiState, category: &str) -> Result<(), Response> {
    update_index(state).await.map_err(internal)?;
    let index = state.index.lock();
    if index.knows_category(category) {
        return Ok(());
    }
    let known = index.category_names();
    Err(error(
        StatusCode::NOT_FOUND,
        Some("category"),
        format!(
            "category: unknown category {category:?} (known: {})",
            sidecar_core::query::known_list(&known)
        ),
    ))
}

async fn logs(State(state): State<ApiState>, RawQuery(raw): RawQuery) -> Response {
    let response = logs_response(&state, raw.as_deref().unwrap_or("")).await;
    state.metrics.count("logs", response.status());
    response
}

async fn logs_response(state: &ApiState, raw: &str) -> Response {
    let mut params = parse_query(raw);
    let selector = take_param(&mut params, "selector");
    let selector_namespace = take_param(&mut params, "selector_namespace");
    if let Some(selector) = selector {
        return fan_out_response(state, selector, selector_namespace, params).await;
    }
    let request = match LogsRequest::from_params(&params, SystemTime::now()) {
        Ok(r) => r,
        Err(e) => return param_error(&e),
    };
    let container_hint = request.filter.containers.is_empty();
    if let Err(response) = check_sources(state, &request.filter.sources, container_hint).await {
        return response;
    }
    if let Some(category) = &request.filter.category {
        if let Err(response) = check_category(state, category).await {
            return response;
        }
    }
    let content_type = if request.output.text {
        "text/plain; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    if !request.follow {
        let Ok(_turn) = state.queries.acquire().await else {
            return internal("the query limiter is closed");
        };
        let dir = state.dir.clone();
        let limits = state.limits;
        let req = request.clone();
        let ran = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            request::run(&dir, &req, limits, &mut out).map(|end| (end, out))
        })
        .await;
        let (end, body) = match ran {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => return internal(e),
            Err(e) => return internal(e),
        };
        state.metrics.bytes_read.inc_by(end.bytes_read);
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert("x-logs-records", HeaderValue::from(end.records));
        headers.insert("x-logs-bytes-read", HeaderValue::from(end.bytes_read));
        if end.truncated {
            headers.insert("x-logs-truncated", HeaderValue::from_static("true"));
        }
        return response;
    }
    let Some(permit) = FollowerPermit::take(state) else {
        return too_many_followers(state);
    };
    let stream = follow_stream(state.clone(), request, permit).await;
    match stream {
        Ok(body) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response(),
        Err(e) => internal(e),
    }
}

/// One open follow: its reader, its request and its place among the followers.
struct FollowState {
    follower: Option<Follower>,
    request: Arc<LogsRequest>,
    commits: watch::Receiver<u64>,
    first: Option<Vec<u8>>,
    _permit: FollowerPermit,
}

/// Holds a follower's slot; the gauge goes down when the client is gone and the body dropped.
struct FollowerPermit {
    _permit: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl FollowerPermit {
    /// One of the `--api-max-followers` places, counted in the followers gauge while held;
    /// `None` when none is free (answer [`too_many_followers`]).
    fn take(state: &ApiState) -> Option<Self> {
        let permit = state.followers.clone().try_acquire_owned().ok()?;
        state.metrics.followers.inc();
        Some(Self {
            _permit: permit,
            gauge: state.metrics.followers.clone(),
        })
    }
}

/// The 429 for a follow past `--api-max-followers`.
fn too_many_followers(state: &ApiState) -> Response {
    state.metrics.rejected_followers.inc();
    error(
        StatusCode::TOO_MANY_REQUESTS,
        Some("follow"),
        format!(
            "follow: too many followers (at most {} at once); try again later",
            state.max_followers
        ),
    )
}

impl Drop for FollowerPermit {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

async fn follow_stream(
    state: ApiState,
    request: LogsRequest,
    permit: FollowerPermit,
) -> anyhow::Result<Body> {
    let dir = state.dir.clone();
    let limits = state.limits;
    let req = request.clone();
    // The tail part first, then the follow from where it ended.
    let (first, start) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut out = Vec::new();
        let tail_end = match req.tail {
            Some(_) => Some(request::run(&dir, &req, limits, &mut out)?.end),
            None => None,
        };
        Ok((out, request::follow_start(&dir, &req, tail_end)?))
    })
    .await??;
    let follow = FollowState {
        follower: Some(Follower::new(&state.dir, start)),
        request: Arc::new(request),
        commits: state.commits.clone(),
        first: Some(first),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(follow, next_chunk);
    Ok(Body::from_stream(stream))
}

/// The next piece of a follow stream: waits for a commit, reads it, formats what matches.
async fn next_chunk(
    mut follow: FollowState,
) -> Option<(Result<Bytes, std::io::Error>, FollowState)> {
    if let Some(first) = follow.first.take().filter(|f| !f.is_empty()) {
        return Some((Ok(Bytes::from(first)), follow));
    }
    loop {
        let mut follower = follow.follower.take()?;
        let request = follow.request.clone();
        let stepped = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let before = follower.position();
            let going = request::follow_step(&mut follower, &request, FOLLOW_STEP_BYTES, &mut out);
            let moved = follower.position() != before;
            (follower, going, out, moved)
        })
        .await;
        let Ok((follower, going, out, moved)) = stepped else {
            return None;
        };
        let going = match going {
            Ok(g) => g,
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "A follow stream ended on a journal error."
                );
                return None;
            }
        };
        follow.follower = going.then_some(follower);
        if !out.is_empty() {
            return Some((Ok(Bytes::from(out)), follow));
        }
        follow.follower.as_ref()?;
        if moved {
            continue; // Read records that did not match: read on without waiting.
        }
        let _ = tokio::time::timeout(FOLLOW_POLL, follow.commits.changed()).await;
    }
}

/// Removes parameter `name` from `params`, returning its (last) value.
fn take_param(params: &mut Vec<(String, String)>, name: &str) -> Option<String> {
    let mut value = None;
    params.retain(|(n, v)| {
        if n == name {
            value = Some(v.clone());
        }
        n != name
    });
    value
}

/// Pods asked at most by one `/logs?selector=` (the first by name; the rest are named in
/// `X-Logs-Left-Out`).
const FAN_OUT_MAX_PODS: usize = 20;

/// `/logs?selector=…`: the same request to every pod the selector finds, merged by time (a
/// follow streams each pod's lines as they come), each line marked with `source_pod`. Pods
/// that do not answer are named in `X-Logs-Missing-Pods` (a follow: in a line of their own).
async fn fan_out_response(
    state: &ApiState,
    selector: String,
    namespace: Option<String>,
    params: Vec<(String, String)>,
) -> Response {
    let request = match LogsRequest::from_params(&params, SystemTime::now()) {
        Ok(r) => r,
        Err(e) => return param_error(&e),
    };
    let namespace = match crate::logs_cli::selector_namespace(namespace.as_deref()) {
        Ok(ns) => ns,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                Some("selector_namespace"),
                "selector_namespace: this forwarder does not know its namespace (no POD_NAMESPACE); give it",
            )
        }
    };
    let token = state
        .fan_out
        .tokens_file
        .as_deref()
        .and_then(|path| access::first_token(path).ok().flatten());
    let mut selection = Selection {
        selector,
        namespace,
        api_server: state.fan_out.api_server.clone(),
        max_pods: FAN_OUT_MAX_PODS,
        max_bytes_per_pod: state.limits.max_output_bytes,
        token,
    };
    let found = match fanout::find_pods(&selection).await {
        Ok(found) => found,
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                Some("selector"),
                format!("selector: {e:#}"),
            )
        }
    };
    // The pods' answers together stay within one answer's size, as any query's does.
    selection.max_bytes_per_pod = state.limits.max_output_bytes / found.pods.len().max(1);
    let content_type = if request.output.text {
        "text/plain; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    let events = fanout::ask_pods(&found.pods, fanout::pod_params(&params), &selection);
    let pods = header_list(found.pods.iter().map(|p| p.name.clone()));
    let left_out = header_list(found.left_out.iter().map(|(p, why)| format!("{p}: {why}")));
    if request.follow {
        let Some(permit) = FollowerPermit::take(state) else {
            return too_many_followers(state);
        };
        let stream = futures_util::stream::unfold(
            (events, found.pods.len(), Arc::new(request.output), permit),
            |(mut events, mut open, output, permit)| async move {
                loop {
                    if open == 0 {
                        return None;
                    }
                    let mut out = Vec::new();
                    match events.recv().await? {
                        Event::Record { pod, raw } => {
                            fanout::write_marked(&output, &pod, &raw, &mut out)
                        }
                        Event::Problem { pod, reason } => {
                            let problem =
                                serde_json::json!({"source_pod": &*pod, "fanout_error": reason});
                            out.extend_from_slice(problem.to_string().as_bytes());
                            out.push(b'\n');
                        }
                        Event::Done => {
                            open -= 1;
                            continue;
                        }
                    }
                    return Some((
                        Ok::<_, std::io::Error>(Bytes::from(out)),
                        (events, open, output, permit),
                    ));
                }
            },
        );
        let mut response = (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            Body::from_stream(stream),
        )
            .into_response();
        set_pod_headers(response.headers_mut(), pods, left_out, None);
        return response;
    }
    let Ok(_turn) = state.queries.acquire().await else {
        return internal("the query limiter is closed");
    };
    let (mut events, mut open) = (events, found.pods.len());
    let (mut records, mut missing) = (Vec::new(), Vec::new());
    while open > 0 {
        match events.recv().await {
            Some(Event::Record { pod, raw }) => records.push((pod, raw)),
            Some(Event::Problem { pod, reason }) => missing.push(format!("{pod}: {reason}")),
            Some(Event::Done) => open -= 1,
            None => break,
        }
    }
    let mut body = Vec::new();
    for (pod, raw) in fanout::merge(records, request.tail) {
        fanout::write_marked(&request.output, &pod, &raw, &mut body);
    }
    let mut response =
        (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response();
    set_pod_headers(
        response.headers_mut(),
        pods,
        left_out,
        Some(header_list(missing.into_iter())),
    );
    response
}

/// Names joined for a header (`; `), reduced to what a header value may hold.
fn header_list(items: impl Iterator<Item = String>) -> HeaderValue {
    let text: String = items
        .collect::<Vec<_>>()
        .join("; ")
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(4096)
        .collect();
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn set_pod_headers(
    headers: &mut HeaderMap,
    pods: HeaderValue,
    left_out: HeaderValue,
    missing: Option<HeaderValue>,
) {
    headers.insert("x-logs-pods", pods);
    if !left_out.is_empty() {
        headers.insert("x-logs-left-out", left_out);
    }
    if let Some(missing) = missing.filter(|m| !m.is_empty()) {
        headers.insert("x-logs-missing-pods", missing);
    }
}

async fn source_logs(
    State(state): State<ApiState>,
    UrlPath(source): UrlPath<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let response = source_logs_response(&state, source, raw.as_deref().unwrap_or("")).await;
    state.metrics.count("logs_source", response.status());
    response
}

async fn source_logs_response(state: &ApiState, source: String, raw: &str) -> Response {
    let mut limit = 100;
    for (name, value) in parse_query(raw) {
        match name.as_str() {
            "limit" => match sidecar_core::query::parse_count("limit", &value) {
                Ok(n) => limit = n,
                Err(e) => return param_error(&e),
            },
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    Some(other),
                    format!("{other}: unknown parameter (known: limit)"),
                )
            }
        }
    }
    if let Err(response) = check_sources(state, std::slice::from_ref(&source), true).await {
        return response;
    }
    let Ok(_turn) = state.queries.acquire().await else {
        return internal("the query limiter is closed");
    };
    let dir = state.dir.clone();
    let limits = state.limits;
    let filter = sidecar_core::query::Filter {
        sources: vec![source],
        ..Default::default()
    };
    let ran = tokio::task::spawn_blocking(move || {
        scan::tail(
            &dir,
            &filter,
            limit,
            limits.chunk_bytes,
            limits.max_output_bytes,
        )
    })
    .await;
    let tail = match ran {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return internal(e),
        Err(e) => return internal(e),
    };
    state.metrics.bytes_read.inc_by(tail.bytes_read);
    // Newest first against the size limit, so a cut keeps the latest records.
    let mut size = 0;
    let kept = tail
        .lines
        .iter()
        .rev()
        .take_while(|l| {
            size += l.len() + 1;
            size <= state.limits.max_output_bytes
        })
        .count();
    let records: Vec<Value> = tail.lines[tail.lines.len() - kept..]
        .iter()
        .map(|l| {
            serde_json::from_slice(l)
                .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(l).into_owned()))
        })
        .collect();
    let mut response = axum::Json(records).into_response();
    if kept < tail.lines.len() || tail.cut {
        response
            .headers_mut()
            .insert("x-logs-truncated", HeaderValue::from_static("true"));
    }
    response
}

/// The index brought up to the journal's end, as it stands now.
async fn fresh_snapshot(state: &ApiState) -> Result<IndexSnapshot, Response> {
    update_index(state).await.map_err(internal)?;
    Ok(state.index.lock().snapshot(SystemTime::now()))
}

async fn sources(State(state): State<ApiState>) -> Response {
    let snapshot = match fresh_snapshot(&state).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let list: Vec<Value> = snapshot
        .sources
        .iter()
        .map(|s| {
            json!({
                "name": s.name, "records": s.records, "bytes": s.bytes, "first_at": s.first_at,
                "last_at": s.last_at, "category": s.category,
            })
        })
        .collect();
    state.metrics.count("sources", StatusCode::OK);
    axum::Json(json!({ "since": snapshot.since, "sources": list })).into_response()
}

async fn stats(State(state): State<ApiState>) -> Response {
    let snapshot = match fresh_snapshot(&state).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let dir = state.dir.clone();
    let pipeline = tokio::task::spawn_blocking(move || forwarder_progress(&dir))
        .await
        .unwrap_or(Value::Null);
    state.metrics.count("stats", StatusCode::OK);
    axum::Json(stats_body(snapshot, pipeline)).into_response()
}

/// `GET /alerts`: the alerts firing now and the latest resolved, as the forwarder's alert
/// evaluation sees them (`enabled` false when the config has no `alerts:`).
async fn alerts(State(state): State<ApiState>) -> Response {
    state.metrics.count("alerts", StatusCode::OK);
    axum::Json(alerts_body(&sidecar_core::alerts::board())).into_response()
}

/// The `/alerts` document.
pub fn alerts_body(board: &sidecar_core::alerts::Board) -> Value {
    let show = |n: &sidecar_core::alerts::Notification| {
        json!({
            "status": n.status(),
            "labels": n.labels,
            "annotations": n.annotations,
            "startsAt": sidecar_core::alerts::format_ms(n.starts_ms),
            "endsAt": n.resolved_ms.map(sidecar_core::alerts::format_ms),
        })
    };
    json!({
        "enabled": board.enabled,
        "firing": board.firing.iter().map(show).collect::<Vec<_>>(),
        "resolved": board.resolved.iter().rev().map(show).collect::<Vec<_>>(),
    })
}

/// The `/stats` document: the index's counts and the forwarder's progress.
pub fn stats_body(snapshot: IndexSnapshot, progress: Value) -> Value {
    json!({
        "since": snapshot.since,
        "records": snapshot.records,
        "rate_per_s": snapshot.rate_per_s,
        "levels": snapshot.levels,
        "categories": snapshot.categories,
        "sources": snapshot.sources,
        "forwarder": progress,
    })
}

/// The forwarder's own progress as its cursor says: position, lag behind the committed end,
/// and each sink's committed state.
pub fn forwarder_progress(dir: &Path) -> Value {
    let end = scan::committed_end(dir).ok().flatten().unwrap_or_default();
    let cursor = match Cursor::<Value>::load(dir, crate::READER_NAME) {
        Ok(c) => c,
        Err(e) => return json!({ "error": e.to_string() }),
    };
    let (position, updated_at, state) = match cursor {
        Some(c) => (c.position, c.updated_at, c.state),
        None => (Position::default(), String::new(), Value::Null),
    };
    json!({
        "committed_end": end,
        "position": position,
        "lag_bytes": sidecar_core::journal::bytes_between(dir, position, end),
        "updated_at": updated_at,
        "sinks": state.get("sinks").cloned().unwrap_or(Value::Null),
    })
}

async fn metrics_text(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    sidecar_core::telemetry::metrics_response(&state.registry, &headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> ApiFlags {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            api: ApiFlags,
        }
        let mut argv = vec!["forwarder"];
        argv.extend_from_slice(args);
        <Cli as clap::Parser>::try_parse_from(argv).unwrap().api
    }

    #[test]
    fn the_api_listens_on_loopback_unless_a_token_or_anonymous_access_says_otherwise() {
        let listen = |args: &[&str]| flags(args).listen().map_err(|e| e.to_string());
        assert_eq!(
            listen(&[]).unwrap(),
            Some("127.0.0.1:9104".parse().unwrap())
        );
        assert_eq!(
            listen(&["--api-tokens-file", "/t"]).unwrap(),
            Some("0.0.0.0:9104".parse().unwrap())
        );
        assert_eq!(
            listen(&["--api-anonymous"]).unwrap(),
            Some("0.0.0.0:9104".parse().unwrap())
        );
        assert_eq!(listen(&["--api-listen", "off"]).unwrap(), None);
        assert!(listen(&["--api-listen", "0.0.0.0:1"])
            .unwrap_err()
            .contains("--api-tokens-file"));
        assert!(listen(&["--api-cors-origin", "https://a.example,http://b:8080"]).is_ok());
        for bad in ["a.example", "https://a.example/path", "ftp://x"] {
            assert!(
                listen(&["--api-cors-origin", bad])
                    .unwrap_err()
                    .starts_with("--api-cors-origin"),
                "{bad}"
            );
        }
    }

    #[test]
    fn query_strings_decode_repeated_and_escaped_parameters() {
        assert_eq!(
            parse_query("source=a.log&source=b.log&grep=GET%20%2Fusers+x&follow&x=%zz%4"),
            vec![
                ("source".to_owned(), "a.log".to_owned()),
                ("source".to_owned(), "b.log".to_owned()),
                ("grep".to_owned(), "GET /users x".to_owned()),
                ("follow".to_owned(), String::new()),
                ("x".to_owned(), "%zz%4".to_owned()),
            ]
        );
    }
}
