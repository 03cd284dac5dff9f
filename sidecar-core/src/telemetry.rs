//! What a stage tells the outside: its own logs (tracing), `/healthz` and `/metrics` over HTTP.
//!
//! Easy to get wrong: health must mean the stage loop is alive, not just that the HTTP server
//! answers. The loop calls [`Health::beat`] on every turn; `/healthz` fails when beats stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Starts logging to stderr at `level` (a level such as `info`, or a filter such as
/// `info,sidecar_core=debug`), as text or as JSON lines.
///
/// # Errors
/// When `level` is not a valid filter.
pub fn init(level: &str, json: bool) -> anyhow::Result<()> {
    let mut filter =
        EnvFilter::try_new(level).map_err(|e| anyhow::anyhow!("--log-level {level:?}: {e}"))?;
    if !level.contains("kube") {
        // kube's watcher warns at every retry of a forbidden watch; the processor says it
        // once itself (and keeps a metric), so only kube's errors get through by default.
        filter = filter.add_directive("kube_runtime=error".parse()?);
    }
    // Colours only on a terminal: `kubectl logs` and log files would show the escape codes.
    let builder = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    }
    .map_err(|e| anyhow::anyhow!("cannot start logging: {e}"))
}

/// Turns a binary's result into its exit code, printing an error as one line per cause
/// (`collector: error: --watch: watch pattern "/x/*": ...`), without a backtrace.
pub fn exit_code(binary: &str, result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{binary}: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The liveness of a stage loop.
#[derive(Debug, Clone)]
pub struct Health {
    last_beat_ms: Arc<AtomicU64>,
    stale_after: Duration,
}

impl Health {
    /// A health that turns bad when no beat came for `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        let health = Self {
            last_beat_ms: Arc::new(AtomicU64::new(0)),
            stale_after,
        };
        health.beat();
        health
    }

    /// Records that the loop is alive.
    pub fn beat(&self) {
        self.last_beat_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether the loop beat recently enough.
    pub fn is_alive(&self) -> bool {
        now_ms().saturating_sub(self.last_beat_ms.load(Ordering::Relaxed))
            <= self.stale_after.as_millis() as u64
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[derive(Clone)]
struct ServerState {
    registry: Arc<Registry>,
    health: Health,
}

/// Binds `listen` now (so a port in use fails the start) and serves `/healthz` and
/// `/metrics` (Prometheus text format) in a background task until the runtime ends.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    registry: Registry,
    health: Health,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} for /healthz and /metrics: {e}"))?;
    let bound = listener.local_addr()?;
    let state = ServerState {
        registry: Arc::new(registry),
        health,
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "The health and metrics server stopped.");
        }
    });
    Ok(bound)
}

async fn healthz(State(state): State<ServerState>) -> impl IntoResponse {
    if state.health.is_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "stage loop is not making progress\n",
        )
    }
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    openmetrics(&state.registry).map_err(|_| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode metrics\n",
        )
    })
}

/// `registry` as a `GET /metrics` answer in the OpenMetrics text format.
///
/// # Errors
/// When a metric cannot be encoded.
pub fn openmetrics(registry: &Registry) -> Result<impl IntoResponse, std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_goes_stale_without_beats() {
        let health = Health::new(Duration::ZERO);
        health.last_beat_ms.store(now_ms() - 10, Ordering::Relaxed);
        assert!(!health.is_alive());
        let health = Health::new(Duration::from_secs(60));
        assert!(health.is_alive());
    }
}
