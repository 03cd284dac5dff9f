//! What a stage tells the outside: its own logs (tracing), `/healthz` and `/metrics` over HTTP.
//!
//! Easy to get wrong: health must mean the stage loop is alive, not just that the HTTP server
//! answers. The loop calls [`Health::beat`] on every turn; `/healthz` fails when beats stop.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::signal::Background;

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
/// `/metrics` (Prometheus text format) as one of the stage's `background` tasks, until it stops.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    listen: SocketAddr,
    registry: Registry,
    health: Health,
    background: &Background,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen} for /healthz and /metrics: {e}"))?;
    let bound = listener.local_addr()?;
    let mut registry = registry;
    registry.register_collector(Box::new(ProcessMetrics::new()));
    let state = ServerState {
        registry: Arc::new(registry),
        health,
    };
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state);
    background.spawn_graceful(|stopping| async move {
        let server = axum::serve(listener, app).with_graceful_shutdown(stopping);
        if let Err(e) = server.await {
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

async fn metrics(State(state): State<ServerState>, headers: HeaderMap) -> Response {
    metrics_response(&state.registry, &headers)
}

/// The OpenMetrics media type, which a scraper asks for in `Accept` when it reads it.
const OPENMETRICS: &str = "application/openmetrics-text";

/// `registry` as a `GET /metrics` answer: OpenMetrics text when the request's `Accept` asks for
/// it (Prometheus does, first), else the Prometheus text format 0.0.4 that every other scraper
/// and `promtool check metrics` read.
pub fn metrics_response(registry: &Registry, headers: &HeaderMap) -> Response {
    let mut body = String::new();
    if prometheus_client::encoding::text::encode(&mut body, registry).is_err() {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode metrics\n",
        )
            .into_response();
    }
    let wants_openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|accept| accept.contains(OPENMETRICS));
    if wants_openmetrics {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    } else {
        let content_type = "text/plain; version=0.0.4; charset=utf-8";
        let text = openmetrics_to_prometheus_text(&body);
        ([(header::CONTENT_TYPE, content_type)], text).into_response()
    }
}

/// Rewrites OpenMetrics text as the Prometheus text format. The samples are the same; what
/// differs is the metadata: a counter family `x` has samples `x_total`, which the older format
/// names in its HELP and TYPE lines; `info` families are gauges named `x_info`; `unknown` is
/// `untyped`; `# UNIT` and `# EOF` do not exist there.
fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // HELP comes before TYPE, and only TYPE says how the name changes.
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(held) = help.take() {
                push_help(&mut out, held.0, held.1);
            }
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" if !name.ends_with("_total") => (format!("{name}_total"), kind),
                "info" => (format!("{name}_info"), "gauge"),
                "unknown" => (name.to_owned(), "untyped"),
                _ => (name.to_owned(), kind),
            };
            if let Some((_, text)) = help.take() {
                push_help(&mut out, &name, text);
            }
            out.push_str("# TYPE ");
            out.push_str(&name);
            out.push(' ');
            out.push_str(kind);
            out.push('\n');
            continue;
        }
        if let Some(held) = help.take() {
            push_help(&mut out, held.0, held.1);
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(held) = help.take() {
        push_help(&mut out, held.0, held.1);
    }
    out
}

fn push_help(out: &mut String, name: &str, text: &str) {
    out.push_str("# HELP ");
    out.push_str(name);
    out.push(' ');
    out.push_str(text);
    out.push('\n');
}

/// The standard process metrics (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_virtual_memory_bytes`, `process_open_fds`, `process_max_fds`,
/// `process_start_time_seconds`), read from `/proc/self` at each scrape: what a sidecar costs
/// the pod, in the names dashboards already use.
#[derive(Debug)]
struct ProcessMetrics {
    boot_time_s: Option<f64>,
}

/// Linux's USER_HZ, the unit of `/proc/<pid>/stat`'s times: 100 on every architecture's
/// user-space ABI (it is not the kernel's configured tick rate).
const USER_HZ: f64 = 100.0;

impl ProcessMetrics {
    fn new() -> Self {
        let boot_time_s = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            stat.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse().ok())
        });
        Self { boot_time_s }
    }
}

impl prometheus_client::collector::Collector for ProcessMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let Some(stat) = ProcStat::read("self") else {
            return Ok(());
        };
        let cpu = ConstCounter::new(stat.cpu_seconds());
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                status_kib("VmRSS:").map(|kib| kib * 1024.0),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                status_kib("VmSize:").map(|kib| kib * 1024.0),
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                std::fs::read_dir("/proc/self/fd")
                    .ok()
                    .map(|d| d.count() as f64),
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max_open_files(),
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                self.boot_time_s
                    .map(|boot| boot + stat.start_ticks as f64 / USER_HZ),
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

/// This process's CPU seconds (user + system) and resident bytes, from `/proc/self`.
pub fn own_usage() -> Option<(f64, f64)> {
    let cpu = cpu_seconds_of("self")?;
    let rss = status_kib("VmRSS:")? * 1024.0;
    Some((cpu, rss))
}

/// CPU seconds (user + system) of process `pid` so far (`self`: this one), from
/// `/proc/<pid>/stat`.
pub fn cpu_seconds_of(pid: &str) -> Option<f64> {
    ProcStat::read(pid).map(|stat| stat.cpu_seconds())
}

/// The fields of `/proc/<pid>/stat` the process metrics use, in clock ticks.
struct ProcStat {
    utime: u64,
    stime: u64,
    start_ticks: u64,
}

impl ProcStat {
    /// User plus system time, in seconds.
    fn cpu_seconds(&self) -> f64 {
        (self.utime + self.stime) as f64 / USER_HZ
    }

    fn read(pid: &str) -> Option<Self> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count from the
        // last `)`. Fields after it start at field 3 (state).
        let after = text.get(text.rfind(')')? + 2..)?;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Self {
            utime: field(14)?,
            stime: field(15)?,
            start_ticks: field(22)?,
        })
    }
}

/// A `kB` line of `/proc/self/status` (`VmRSS:`, `VmSize:`), in KiB.
fn status_kib(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn max_open_files() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_becomes_the_prometheus_text_format() {
        let open = "# HELP a_lines Lines.\n# TYPE a_lines counter\n# UNIT a_lines lines\na_lines_total{s=\"x\"} 2\n\
                    # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
                    # HELP a_build Build.\n# TYPE a_build info\na_build_info{v=\"1\"} 1\n\
                    # HELP a_seen_total Seen.\n# TYPE a_seen_total counter\na_seen_total 3\n\
                    # HELP a_odd Odd.\n# TYPE a_odd unknown\na_odd 4\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(open),
            "# HELP a_lines_total Lines.\n# TYPE a_lines_total counter\na_lines_total{s=\"x\"} 2\n\
             # HELP a_up Up.\n# TYPE a_up gauge\na_up 1\n\
             # HELP a_build_info Build.\n# TYPE a_build_info gauge\na_build_info{v=\"1\"} 1\n\
             # HELP a_seen_total Seen.\n# TYPE a_seen_total counter\na_seen_total 3\n\
             # HELP a_odd Odd.\n# TYPE a_odd untyped\na_odd 4\n"
        );
    }

    #[test]
    fn process_metrics_are_read_from_proc() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessMetrics::new()));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing in {text}");
        }
    }

    #[test]
    fn health_goes_stale_without_beats() {
        let health = Health::new(Duration::ZERO);
        health.last_beat_ms.store(now_ms() - 10, Ordering::Relaxed);
        assert!(!health.is_alive());
        let health = Health::new(Duration::from_secs(60));
        assert!(health.is_alive());
    }
}
