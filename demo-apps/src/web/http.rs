//! The web API over HTTP: axum routes around [`Api`], and the middleware that writes
//! `access.log`.
//!
//! The one thing easy to get wrong: the request record must be written when the request
//! arrives, not with the response, so a slow or hanging request still shows up in the log;
//! and the `parking_lot::Mutex`es here are never held across an `.await`.

use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use axum::body::{Bytes, HttpBody};
use axum::extract::{ConnectInfo, Path, RawQuery, Request, State};
use axum::http::header::USER_AGENT;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use rand::rngs::SmallRng;

use super::api::{busy_work, Api, Reply};
use super::{log_slow_request, RequestId, RequestInfo, ACCESS_LOG};
use crate::logfile::{Batch, LogFiles};

/// Response header carrying the request id, so clients can find their request in the logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What the handlers share: the API with its random generator, and the log files.
#[derive(Debug)]
pub struct WebState {
    core: Mutex<Core>,
    files: Arc<Mutex<LogFiles>>,
    started: Instant,
}

#[derive(Debug)]
struct Core {
    api: Api,
    rng: SmallRng,
}

impl WebState {
    /// State serving `api`, drawing failures and ids from `rng`, logging to `files`.
    pub fn new(api: Api, rng: SmallRng, files: Arc<Mutex<LogFiles>>) -> Self {
        WebState {
            core: Mutex::new(Core { api, rng }),
            files,
            started: Instant::now(),
        }
    }

    /// Writes the periodic `Health check passed` line.
    pub fn log_health_check(&self) {
        let uptime_secs = self.started.elapsed().as_secs();
        let mut batch = Batch::new();
        self.core().api.log_health_check(uptime_secs, &mut batch);
        self.write(&batch);
    }

    fn core(&self) -> parking_lot::MutexGuard<'_, Core> {
        self.core.lock()
    }

    /// Runs one route of the API and writes the lines it produced.
    fn call(&self, route: impl FnOnce(&mut Api, &mut SmallRng, &mut Batch) -> Reply) -> Reply {
        let mut batch = Batch::new();
        let reply = {
            let core = &mut *self.core();
            route(&mut core.api, &mut core.rng, &mut batch)
        };
        self.write(&batch);
        reply
    }

    fn write(&self, batch: &Batch) {
        if let Err(error) = self.files.lock().write(batch) {
            tracing::error!(error = %error, "Log lines lost.");
        }
    }
}

/// The web API's routes, with every request (unknown routes too) logged to `access.log`.
pub fn router(state: Arc<WebState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user))
        .route("/simulate-load", get(simulate_load))
        .layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            access_log,
        ))
        .with_state(state)
}

async fn access_log(
    State(state): State<Arc<WebState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let request_id = RequestId::random(&mut state.core().rng);
    let remote_addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "-".to_owned(), |ConnectInfo(addr)| addr.to_string());
    let user_agent = request
        .headers()
        .get(USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("-");
    let info = RequestInfo {
        request_id,
        method: request.method().to_string(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().unwrap_or_default().to_owned(),
        remote_addr,
        user_agent: user_agent.to_owned(),
    };
    let mut batch = Batch::new();
    batch.push_json(ACCESS_LOG, &info.request_record());
    state.write(&batch);

    request.extensions_mut().insert(request_id);
    let mut response = next.run(request).await;

    let processing_time_ms = started.elapsed().as_secs_f64() * 1000.0;
    let content_length = response.body().size_hint().exact().unwrap_or(0);
    batch.clear();
    batch.stamp_now();
    batch.push_json(
        ACCESS_LOG,
        &info.response_record(
            response.status().as_u16(),
            content_length,
            processing_time_ms,
        ),
    );
    log_slow_request(&info, processing_time_ms, &mut batch);
    state.write(&batch);
    let header = HeaderValue::from_str(&request_id.to_string())
        .expect("a request id is hex digits and dashes");
    response.headers_mut().insert(REQUEST_ID_HEADER, header);
    response
}

async fn health(State(state): State<Arc<WebState>>) -> Response {
    let uptime_secs = state.started.elapsed().as_secs();
    let reply = state.call(|api, _, _| api.health(uptime_secs));
    respond(reply).await
}

async fn list_users(
    State(state): State<Arc<WebState>>,
    Extension(request_id): Extension<RequestId>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let reply = state.call(|api, rng, out| api.list_users(rng, &query, request_id, out));
    respond(reply).await
}

async fn get_user(
    State(state): State<Arc<WebState>>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
) -> Response {
    let reply = state.call(|api, rng, out| api.get_user(rng, &id, request_id, out));
    respond(reply).await
}

async fn create_user(
    State(state): State<Arc<WebState>>,
    Extension(request_id): Extension<RequestId>,
    body: Bytes,
) -> Response {
    let reply = state.call(|api, rng, out| api.create_user(rng, &body, request_id, out));
    respond(reply).await
}

async fn simulate_load(
    State(state): State<Arc<WebState>>,
    Extension(request_id): Extension<RequestId>,
) -> Response {
    let reply = state.call(|api, rng, out| api.simulate_load(rng, request_id, out));
    let units = reply.work_units;
    // CPU work off the async workers, as a real handler should.
    let _checksum = tokio::task::spawn_blocking(move || busy_work(units)).await;
    respond(reply).await
}

/// Waits out the reply's latency, then sends it.
async fn respond(reply: Reply) -> Response {
    tokio::time::sleep(Duration::from_millis(reply.delay_ms)).await;
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(reply.body)).into_response()
}
