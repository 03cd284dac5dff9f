//! Flags shared by the demo binaries, with `DEMO_*` environment fallbacks, and their tracing.
//!
//! The one thing easy to get wrong: `--rate` switches an app from real work (durations slept,
//! requests served) to synthetic generation (durations simulated, lines written at that rate);
//! everything else means the same in both modes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;

/// Where the pod spec mounts the shared `emptyDir` the sidecars tail.
pub const DEFAULT_LOG_DIR: &str = "/logs";

/// Where the web API listens: all interfaces, the container port the manifests expose.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// Where the traffic generator finds the web API when both run on one machine.
pub const DEFAULT_TARGET: &str = "http://127.0.0.1:8080";

/// Flags every log-writing app takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Directory the log files are appended to; created if missing.
    #[arg(long, env = "DEMO_LOG_DIR", default_value = DEFAULT_LOG_DIR)]
    pub log_dir: PathBuf,

    /// Write synthetic lines at this many lines per second (durations simulated, not slept).
    /// Without it the app does real, slept work at a demo pace.
    #[arg(long, env = "DEMO_RATE", value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: Option<u32>,

    /// Seed for the random generator, for deterministic output; random when unset.
    #[arg(long, env = "DEMO_SEED")]
    pub seed: Option<u64>,

    /// Stop after this many seconds.
    #[arg(long, env = "DEMO_DURATION_SECS")]
    pub duration_secs: Option<u64>,

    /// Stop after writing this many lines in total across the app's files.
    #[arg(long, env = "DEMO_MAX_LINES")]
    pub max_lines: Option<u64>,
}

impl CommonArgs {
    /// Common flags for `log_dir` with everything else unset.
    pub fn new(log_dir: impl Into<PathBuf>) -> Self {
        CommonArgs {
            log_dir: log_dir.into(),
            rate: None,
            seed: None,
            duration_secs: None,
            max_lines: None,
        }
    }

    /// The app's random generator: seeded from `--seed`, else from the OS.
    pub fn rng(&self) -> SmallRng {
        seeded_rng(self.seed)
    }

    /// `--duration-secs` as a duration.
    pub fn duration(&self) -> Option<Duration> {
        self.duration_secs.map(Duration::from_secs)
    }
}

/// Flags of the web API.
#[derive(Debug, Clone, clap::Args)]
pub struct WebApiArgs {
    /// Flags shared with the other apps.
    #[command(flatten)]
    pub common: CommonArgs,

    /// Address the HTTP server listens on.
    #[arg(long, env = "DEMO_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
}

/// Flags of the traffic generator.
#[derive(Debug, Clone, clap::Args)]
pub struct TrafficArgs {
    /// Base URL of the web API.
    #[arg(long, env = "DEMO_TARGET", default_value = DEFAULT_TARGET)]
    pub target: String,

    /// Requests started per second.
    #[arg(long, env = "DEMO_REQUESTS_PER_SEC", default_value_t = 5.0)]
    pub requests_per_sec: f64,

    /// Seed for the request mix; random when unset.
    #[arg(long, env = "DEMO_SEED")]
    pub seed: Option<u64>,

    /// Stop after this many seconds.
    #[arg(long, env = "DEMO_DURATION_SECS")]
    pub duration_secs: Option<u64>,

    /// Every this many seconds, a burst of bad requests (invalid JSON bodies) makes the web
    /// API log a run of errors, which sets off the default rules' `WebApiErrorBurst` alert;
    /// 0 turns bursts off.
    #[arg(long, env = "DEMO_ERROR_BURST_EVERY_SECS", default_value_t = 300)]
    pub error_burst_every_secs: u64,

    /// How long each burst lasts, in seconds (less than the period).
    #[arg(long, env = "DEMO_ERROR_BURST_SECS", default_value_t = 20)]
    pub error_burst_secs: u64,

    /// Bad requests per second during a burst, on top of the usual mix.
    #[arg(long, env = "DEMO_ERROR_BURST_PER_SEC", default_value_t = 10.0)]
    pub error_burst_per_sec: f64,
}

/// A small fast generator: from `seed` when given, else from the OS.
pub fn seeded_rng(seed: Option<u64>) -> SmallRng {
    match seed {
        Some(seed) => SmallRng::seed_from_u64(seed),
        None => SmallRng::from_os_rng(),
    }
}

/// Prints one plain line on stdout, as many apps do besides their log files (a banner, a
/// status): a container's stdout is what a node-level shipper reads from the runtime's files.
pub fn announce(app: &str, what: &str) {
    println!("{app}: {what}");
}

/// Sends the binary's own diagnostics (not the demo logs) to stderr, filtered by `RUST_LOG`
/// (default `info`). Does nothing if a subscriber is already set.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _already_set = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, not in `kubectl logs`.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
