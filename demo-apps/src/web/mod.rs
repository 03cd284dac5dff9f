//! The web-api app: an HTTP user service logging to `access.log` (JSON layout, one record per
//! request and one per response), `error.log` and `application.log` (text layout).
//!
//! [`api`] holds what each route does, [`http`] serves it with axum, and [`SyntheticTraffic`]
//! replays the traffic generator's mix through the same [`api::Api`] without HTTP for `--rate`.
//!
//! The one thing easy to get wrong: a request and its response are two records, and other
//! requests' records may come between them; readers join them on `request_id`.

pub mod api;
pub mod http;

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Serialize, Serializer};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{interval, interval_at, sleep, Instant, MissedTickBehavior};

use crate::cli::WebApiArgs;
use crate::clock::{Every, SimClock};
use crate::heartbeat::Heartbeat;
use crate::logfile::{Batch, Level, LogFiles};
use crate::simulation::{self, Simulation};
use crate::traffic::{plan_request, Route};
use api::Api;

/// Index of `access.log` in [`FILE_NAMES`].
pub const ACCESS_LOG: usize = 0;
/// Index of `error.log` in [`FILE_NAMES`].
pub const ERROR_LOG: usize = 1;
/// Index of `application.log` in [`FILE_NAMES`].
pub const APPLICATION_LOG: usize = 2;
/// The app's log files, in file-index order.
pub const FILE_NAMES: [&str; 3] = ["access.log", "error.log", "application.log"];

/// Logger name of `error.log` lines.
pub const ERROR_LOGGER: &str = "web-api";
/// Logger name of `application.log` lines.
pub const APP_LOGGER: &str = "application";

/// Requests slower than this get a `Slow request` warning, in milliseconds.
pub const SLOW_REQUEST_MS: f64 = 500.0;

/// How often the health check line is written, in (simulated, with `--rate`) time.
pub const HEALTH_CHECK_PERIOD: Duration = Duration::from_secs(30);

/// How often buffered lines are flushed, so tailers see them promptly.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// How long in-flight requests and the synthetic writer get to finish after shutdown; well
/// under Kubernetes' default `terminationGracePeriodSeconds` of 30 s.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Users the synthetic store may grow to before it is reset to the seed users, so a long
/// load test does not grow memory without bound.
const MAX_SIMULATED_USERS: usize = 1_000;

/// A request id, written like a UUID: `9f1c2a4e-…`, 32 hex digits in groups of 8-4-4-4-12.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u128);

impl RequestId {
    /// A random id.
    pub fn random(rng: &mut impl Rng) -> Self {
        RequestId(rng.random())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format!("{:032x}", self.0);
        write!(
            f,
            "{}-{}-{}-{}-{}",
            &hex[..8],
            &hex[8..12],
            &hex[12..16],
            &hex[16..20],
            &hex[20..]
        )
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// What `access.log` says about a request, on both its records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestInfo {
    /// The request's id, also sent back as `x-request-id`.
    pub request_id: RequestId,
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query string without `?`; empty when none.
    pub query: String,
    /// Client address and port.
    pub remote_addr: String,
    /// `User-Agent` header, `-` when absent.
    pub user_agent: String,
}

impl RequestInfo {
    /// The `{"type":"request",…}` record.
    pub fn request_record(&self) -> AccessRecord<'_> {
        AccessRecord::new("request", self)
    }

    /// The `{"type":"response",…}` record; `processing_time_ms` is rounded to 0.01.
    pub fn response_record(
        &self,
        status_code: u16,
        content_length: u64,
        processing_time_ms: f64,
    ) -> AccessRecord<'_> {
        AccessRecord {
            status_code: Some(status_code),
            content_length: Some(content_length),
            processing_time_ms: Some((processing_time_ms * 100.0).round() / 100.0),
            ..AccessRecord::new("response", self)
        }
    }
}

/// One `access.log` record; the response fields are left out of request records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccessRecord<'a> {
    /// `request` or `response`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Joins a request to its response.
    pub request_id: RequestId,
    /// HTTP method.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// Raw query string; empty when none.
    pub query: &'a str,
    /// Client address and port.
    pub remote_addr: &'a str,
    /// `User-Agent` header.
    pub user_agent: &'a str,
    /// HTTP status (responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// Body length in bytes (responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    /// Time from request to response, in milliseconds (responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub processing_time_ms: Option<f64>,
}

impl<'a> AccessRecord<'a> {
    fn new(kind: &'static str, info: &'a RequestInfo) -> Self {
        AccessRecord {
            kind,
            request_id: info.request_id,
            method: &info.method,
            path: &info.path,
            query: &info.query,
            remote_addr: &info.remote_addr,
            user_agent: &info.user_agent,
            status_code: None,
            content_length: None,
            processing_time_ms: None,
        }
    }
}

/// Writes `Slow request: GET /simulate-load took 812 ms` when the request took longer than
/// [`SLOW_REQUEST_MS`].
pub fn log_slow_request(info: &RequestInfo, processing_time_ms: f64, out: &mut Batch) {
    if processing_time_ms > SLOW_REQUEST_MS {
        out.push_text(
            APPLICATION_LOG,
            APP_LOGGER,
            Level::Warning,
            format_args!(
                "Slow request: {} {} took {processing_time_ms:.0} ms",
                info.method, info.path
            ),
        );
    }
}

/// Synthetic web traffic: the traffic generator's request mix, about twenty requests per
/// simulated second, answered by an in-memory [`Api`] and logged as the server would.
#[derive(Debug)]
pub struct SyntheticTraffic {
    api: Api,
    clock: SimClock,
    health_check: Every,
}

impl SyntheticTraffic {
    /// A fresh simulation with the seed users.
    pub fn new() -> Self {
        SyntheticTraffic {
            api: Api::seeded(),
            clock: SimClock::new(),
            health_check: Every::new(HEALTH_CHECK_PERIOD.as_millis() as u64),
        }
    }
}

impl Default for SyntheticTraffic {
    fn default() -> Self {
        SyntheticTraffic::new()
    }
}

impl Simulation for SyntheticTraffic {
    fn step<R: Rng>(&mut self, rng: &mut R, out: &mut Batch) {
        self.clock.advance(rng.random_range(5..95));
        let uptime_secs = self.clock.now_ms() / 1000;
        if self.health_check.due(self.clock.now_ms()) {
            self.api.log_health_check(uptime_secs, out);
        }
        let planned = plan_request(rng);
        let info = RequestInfo {
            request_id: RequestId::random(rng),
            method: planned.method.to_owned(),
            path: planned.path.clone(),
            query: planned.query.clone(),
            remote_addr: format!(
                "10.{}.{}.{}:{}",
                rng.random_range(0..=255),
                rng.random_range(0..=255),
                rng.random_range(1..=254),
                rng.random_range(32_768..61_000)
            ),
            user_agent: planned.user_agent.to_owned(),
        };
        out.push_json(ACCESS_LOG, &info.request_record());
        let id = info.request_id;
        let reply = match planned.route {
            Route::Health => self.api.health(uptime_secs),
            Route::ListUsers => self.api.list_users(rng, &info.query, id, out),
            Route::GetUser => self.api.get_user(rng, planned.path_id(), id, out),
            Route::CreateUser => {
                let body = planned.body.as_deref().unwrap_or_default();
                self.api.create_user(rng, body.as_bytes(), id, out)
            }
            Route::SimulateLoad => self.api.simulate_load(rng, id, out),
        };
        let processing_time_ms =
            (reply.delay_ms + u64::from(reply.work_units)) as f64 + rng.random_range(0.1..2.0);
        out.push_json(
            ACCESS_LOG,
            &info.response_record(reply.status, reply.content_length(), processing_time_ms),
        );
        log_slow_request(&info, processing_time_ms, out);
        if self.api.user_count() > MAX_SIMULATED_USERS {
            self.api = Api::seeded();
        }
    }
}

/// Serves the web API on `args.listen` until `shutdown`, `--duration-secs` or `--max-lines`,
/// logging every request; with `--rate`, also writes [`SyntheticTraffic`] at that many lines
/// per second into the same files. Writes the health check line every 30 s.
///
/// # Errors
///
/// When the log files cannot be opened or written, or the address cannot be bound.
pub async fn run(args: WebApiArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let common = &args.common;
    let files = Arc::new(Mutex::new(
        LogFiles::open(&common.log_dir, &FILE_NAMES)?.with_max_lines(common.max_lines),
    ));
    let mut rng = common.rng();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let state = Arc::new(http::WebState::new(
        Api::seeded(),
        SmallRng::from_rng(&mut rng),
        Arc::clone(&files),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        // An error means the sender is gone, which also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };

    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    let app = http::router(Arc::clone(&state));
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stopped(stop_rx.clone()));
    tasks.spawn(async move { server.await.context("serving HTTP") });
    if let Some(rate) = common.rate {
        let synthetic = simulation::run_in_background(
            SyntheticTraffic::new(),
            SmallRng::from_rng(&mut rng),
            Arc::clone(&files),
            Some(rate),
            None,
            // web-api is probed over HTTP instead.
            Heartbeat::disabled(),
            stopped(stop_rx.clone()),
        );
        tasks.spawn(async move { synthetic.await.map(drop).context("writing synthetic lines") });
    }
    tracing::info!(
        listen = %args.listen,
        log_dir = %common.log_dir.display(),
        rate = ?common.rate,
        "Web API started."
    );
    crate::cli::announce(
        "web-api",
        &format!(
            "listening on {}, logging to {}",
            args.listen,
            common.log_dir.display()
        ),
    );

    let mut flush = interval(FLUSH_INTERVAL);
    flush.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut health = interval_at(Instant::now() + HEALTH_CHECK_PERIOD, HEALTH_CHECK_PERIOD);
    let deadline = sleep(common.duration().unwrap_or(Duration::MAX / 4));
    tokio::pin!(shutdown, deadline);
    let mut failure = None;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = &mut deadline => break,
            _ = health.tick() => state.log_health_check(),
            _ = flush.tick() => {
                let mut files = files.lock();
                if let Err(error) = files.flush() {
                    failure = Some(anyhow::Error::from(error));
                    break;
                }
                if files.is_exhausted() {
                    break;
                }
            }
            Some(ended) = tasks.join_next() => {
                // Both tasks run until told to stop, except that the synthetic writer ends once
                // the line budget is used up; anything else ending early is a failure.
                match ended {
                    Ok(Ok(())) if files.lock().is_exhausted() => {}
                    Ok(Ok(())) => failure = Some(anyhow::anyhow!("a web API task ended unexpectedly")),
                    Ok(Err(error)) => failure = Some(error),
                    Err(panic) => std::panic::resume_unwind(panic.into_panic()),
                }
                break;
            }
        }
    }

    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(ended) = tasks.join_next().await {
            match ended {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    failure.get_or_insert(error);
                }
                Err(panic) => std::panic::resume_unwind(panic.into_panic()),
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("Requests still running after the grace period were cut off.");
        tasks.shutdown().await;
    }
    files.lock().flush()?;
    let lines = files.lock().lines_written();
    tracing::info!(
        lines,
        drained = drained.is_ok(),
        "Web API stopped; logs flushed."
    );
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_look_like_uuids() {
        let id = RequestId(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(id.to_string(), "01234567-89ab-cdef-0011-223344556677");
        assert_eq!(RequestId(1).to_string().len(), 36);
    }

    #[test]
    fn access_records_have_the_documented_fields_in_order() {
        let info = RequestInfo {
            request_id: RequestId(1),
            method: "GET".to_owned(),
            path: "/users".to_owned(),
            query: "page=2&limit=10".to_owned(),
            remote_addr: "127.0.0.1:53412".to_owned(),
            user_agent: "curl/8.5.0".to_owned(),
        };
        let request = serde_json::to_string(&info.request_record()).unwrap();
        assert_eq!(
            request,
            r#"{"type":"request","request_id":"00000000-0000-0000-0000-000000000001","method":"GET","path":"/users","query":"page=2&limit=10","remote_addr":"127.0.0.1:53412","user_agent":"curl/8.5.0"}"#
        );
        let response = serde_json::to_string(&info.response_record(200, 512, 12.3449)).unwrap();
        assert!(response.starts_with(r#"{"type":"response","#));
        assert!(response.ends_with(
            r#""user_agent":"curl/8.5.0","status_code":200,"content_length":512,"processing_time_ms":12.34}"#
        ));
    }

    #[test]
    fn slow_requests_are_warned_about() {
        let info = RequestInfo {
            request_id: RequestId(1),
            method: "GET".to_owned(),
            path: "/simulate-load".to_owned(),
            query: String::new(),
            remote_addr: "-".to_owned(),
            user_agent: "-".to_owned(),
        };
        let mut out = Batch::new();
        log_slow_request(&info, 499.0, &mut out);
        assert!(out.is_empty());
        log_slow_request(&info, 812.4, &mut out);
        let line = out.lines().next().unwrap().1;
        assert!(line
            .ends_with(" - application - WARNING - Slow request: GET /simulate-load took 812 ms"));
    }
}
