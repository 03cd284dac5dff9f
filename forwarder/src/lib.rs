//! The forwarder: reads the processed journal and delivers every record to its sinks — the
//! periodic report on stdout and any configured files — then commits its position.
//!
//! Easy to get wrong: the commit. The position advances only after every sink took the batch,
//! and it is committed together with each sink's state in one atomic file (the forwarder's
//! cursor in the processed journal), so a restart neither skips nor repeats a record.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sidecar_core::checkpoint::Durability;
use sidecar_core::config::HumanDuration;
use sidecar_core::journal::{Cursor, JournalReader, Position};
use sidecar_core::signal::{self, DirWatcher, Wakeup};
use sidecar_core::sink::{self, ForwarderFile, OutRecord, Sink};
use sidecar_core::telemetry::{self, Health};
use tracing::{info, warn};

pub mod api;
pub mod commands;
pub mod logs_cli;
pub mod top;

/// The name this stage's cursor (its checkpoint) has in the processed journal.
pub const READER_NAME: &str = "forwarder";
const DEFAULT_CONFIG: &str = "/etc/log-forwarder/forwarder.yaml";

/// Command-line flags; each also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "forwarder",
    version,
    about = "Ships processed records to sinks and prints reports."
)]
pub struct Cli {
    /// The sinks and report settings (YAML, or TOML by its .toml extension). Without this flag,
    /// /etc/log-forwarder/forwarder.yaml is used when it exists, else a report every 60 s.
    #[arg(long, env = "FORWARDER_CONFIG")]
    pub config: Option<PathBuf>,
    /// The processed journal to read; the forwarder's checkpoint is kept there too.
    #[arg(long, env = "FORWARDER_INPUT_DIR", default_value = "/processed-logs")]
    pub input_dir: PathBuf,
    /// Address for GET /healthz and GET /metrics.
    #[arg(long, env = "FORWARDER_LISTEN", default_value = "0.0.0.0:9103")]
    pub listen: SocketAddr,
    /// Time allowed to deliver, commit and exit after SIGTERM; keep it below the pod's grace
    /// period.
    #[arg(long, env = "FORWARDER_GRACE_PERIOD", default_value = "8s")]
    pub grace_period: HumanDuration,
    /// Log filter, e.g. info or debug.
    #[arg(long, env = "FORWARDER_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "FORWARDER_LOG_JSON")]
    pub log_json: bool,
    /// The query API.
    #[command(flatten)]
    pub api: api::ApiFlags,
    /// `logs` or `top`; without one, the forwarder stage runs.
    #[command(subcommand)]
    pub command: Option<commands::Command>,
}

/// Checked runtime settings of the forwarder.
#[derive(Debug)]
pub struct ForwarderConfig {
    /// Sinks and report settings.
    pub file: ForwarderFile,
    /// The processed journal.
    pub input_dir: PathBuf,
    /// Health and metrics address.
    pub listen: SocketAddr,
    /// Shutdown budget.
    pub grace: Duration,
    /// Input bytes per batch at most (default 4 MiB).
    pub batch_max_bytes: usize,
    /// How long to let the processor's commits gather after a wake (default 10 ms).
    pub linger: Duration,
    /// The periodic check that backs up inotify and drives reports (default 1 s).
    pub poll_interval: Duration,
    /// The query API's address, `None` when it is off.
    pub api_listen: Option<SocketAddr>,
    /// The query API's limits.
    pub api: api::ApiFlags,
}

impl Cli {
    /// Loads the config file and checks the flags.
    ///
    /// # Errors
    /// A message naming the file and field, or the flag, and what is wrong.
    pub fn into_config(self) -> anyhow::Result<ForwarderConfig> {
        let file = match &self.config {
            Some(path) => ForwarderFile::load(path)?,
            None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
                ForwarderFile::load(std::path::Path::new(DEFAULT_CONFIG))?
            }
            None => ForwarderFile::report_only(),
        };
        let api_listen = self.api.listen()?;
        Ok(ForwarderConfig {
            api_listen,
            api: self.api,
            file,
            input_dir: self.input_dir,
            listen: self.listen,
            grace: self.grace_period.0,
            batch_max_bytes: 4 << 20,
            linger: Duration::from_millis(10),
            poll_interval: Duration::from_secs(1),
        })
    }
}

/// The forwarder's committed state beside its position: each sink's state by name.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ForwarderState {
    /// Sink name → the state it committed.
    pub sinks: Map<String, Value>,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    records: Family<Vec<(String, String)>, Counter>,
    failures: Family<Vec<(String, String)>, Counter>,
    undecodable: Counter,
}

/// Runs the forwarder until `shutdown` resolves, then delivers, commits and returns.
///
/// # Errors
/// When the checkpoint or the journal cannot be read, a sink cannot start, or the listen
/// address is taken.
pub async fn run(
    config: ForwarderConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::default();
    registry.register(
        "forwarder_records",
        "Records delivered, per sink",
        metrics.records.clone(),
    );
    registry.register(
        "forwarder_sink_failures",
        "Failed deliveries (retried), per sink",
        metrics.failures.clone(),
    );
    registry.register(
        "forwarder_undecodable_records",
        "Journal lines that were not JSON (delivered raw)",
        metrics.undecodable.clone(),
    );
    let cursor =
        Cursor::<ForwarderState>::load(&config.input_dir, READER_NAME).with_context(|| {
            format!(
                "reading the forwarder checkpoint in {}",
                config.input_dir.display()
            )
        })?;
    let (position, state) = match cursor {
        Some(c) => (c.position, c.state),
        None => (Position::default(), ForwarderState::default()),
    };
    let sinks = sink::build(&config.file, &state.sinks).context("starting the sinks")?;
    let health = Health::new(Duration::from_secs(60));
    let api_metrics = api::ApiMetrics::default();
    api_metrics.register(&mut registry);
    let bound = telemetry::serve(config.listen, registry, health.clone()).await?;
    if let Some(listen) = config.api_listen {
        api::serve(listen, &config.api, &config.input_dir, api_metrics).await?;
    }
    let names: Vec<&str> = sinks.iter().map(|s| s.name()).collect();
    info!(listen = %bound, input = %config.input_dir.display(), sinks = ?names, segment = position.segment, offset = position.offset, "Forwarder started.");
    let wakeup = Wakeup::new();
    let loop_wakeup = wakeup.clone();
    signal::run_stage("forwarder", wakeup, config.grace, shutdown, move || {
        let reader = JournalReader::new(&config.input_dir, position);
        forward(&config, reader, sinks, &metrics, &loop_wakeup, &health)
    })
    .await
}

fn forward(
    config: &ForwarderConfig,
    reader: JournalReader,
    sinks: Vec<Box<dyn Sink>>,
    metrics: &Metrics,
    wakeup: &Wakeup,
    health: &Health,
) -> anyhow::Result<()> {
    let mut watcher = DirWatcher::start([config.input_dir.as_path()], wakeup);
    let mut watching = config.input_dir.is_dir();
    let mut stage = Stage {
        config,
        reader,
        sinks,
        metrics,
        wakeup,
        buf: Vec::new(),
        warned_behind: false,
    };
    while !wakeup.is_stopping() {
        health.beat();
        if !watching && config.input_dir.is_dir() {
            watching = watcher.add(&config.input_dir);
        }
        let more = stage.forward_available()? == Progress::More;
        stage.tick();
        if more {
            continue;
        }
        if wakeup.wait(config.poll_interval) || wakeup.sleep(config.linger) {
            break;
        }
    }
    // The processor stops before us (native sidecar order), so what it committed is final:
    // deliver it before exiting, within the grace period.
    loop {
        health.beat();
        match stage.forward_available()? {
            Progress::More => continue,
            Progress::Done => break,
            Progress::Interrupted => return Ok(()), // A sink is down: the last commit stands.
        }
    }
    for sink in &mut stage.sinks {
        sink.close();
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Everything committed upstream is delivered (or nothing was there).
    Done,
    /// More is waiting.
    More,
    /// Stopping while a sink was still refusing the batch; it was not committed.
    Interrupted,
}

struct Stage<'a> {
    config: &'a ForwarderConfig,
    reader: JournalReader,
    sinks: Vec<Box<dyn Sink>>,
    metrics: &'a Metrics,
    wakeup: &'a Wakeup,
    buf: Vec<u8>,
    warned_behind: bool,
}

impl Stage<'_> {
    /// Delivers and commits one batch of what the processor committed.
    fn forward_available(&mut self) -> anyhow::Result<Progress> {
        let Some(end) = self.reader.committed_end()? else {
            return Ok(Progress::Done);
        };
        if end < self.reader.position() {
            if !std::mem::replace(&mut self.warned_behind, true) {
                warn!(committed = ?end, ours = ?self.reader.position(), "The processed journal ends before our committed position (was its volume replaced?); waiting for it to pass us.");
            }
            return Ok(Progress::Done);
        }
        if self
            .reader
            .read_batch(end, self.config.batch_max_bytes, &mut self.buf)?
            > 0
        {
            let batch = decode_batch(&self.buf, self.metrics);
            if !deliver(&mut self.sinks, &batch, self.metrics, self.wakeup) {
                return Ok(Progress::Interrupted);
            }
            commit(self.config, &mut self.sinks, self.reader.position())?;
        }
        Ok(if self.reader.position() < end {
            Progress::More
        } else {
            Progress::Done
        })
    }

    fn tick(&mut self) {
        for sink in &mut self.sinks {
            sink.tick();
        }
    }
}

/// Decodes each NDJSON line's routing fields; a line that is not a JSON object is delivered
/// raw and counted.
fn decode_batch<'a>(buf: &'a [u8], metrics: &Metrics) -> Vec<OutRecord<'a>> {
    buf.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|raw| {
            let record = OutRecord::decode(raw);
            if !record.is_decoded() {
                metrics.undecodable.inc();
            }
            record
        })
        .collect()
}

/// Offers the batch to every sink until each has taken it, backing off between attempts.
/// Returns false when asked to stop before every sink took it.
fn deliver(
    sinks: &mut [Box<dyn Sink>],
    batch: &[OutRecord<'_>],
    metrics: &Metrics,
    wakeup: &Wakeup,
) -> bool {
    let mut delivered = vec![false; sinks.len()];
    let mut backoff = Duration::from_millis(200);
    loop {
        for (sink, done) in sinks.iter_mut().zip(delivered.iter_mut()) {
            if *done {
                continue;
            }
            let label = vec![("sink".to_owned(), sink.name().to_owned())];
            match sink.send(batch) {
                Ok(()) => {
                    *done = true;
                    metrics
                        .records
                        .get_or_create(&label)
                        .inc_by(batch.len() as u64);
                }
                Err(e) => {
                    metrics.failures.get_or_create(&label).inc();
                    warn!(
                        sink = sink.name(),
                        error = format!("{e:#}"),
                        retry_in_ms = backoff.as_millis() as u64,
                        "Delivery failed; retrying the same batch."
                    );
                }
            }
        }
        if delivered.iter().all(|d| *d) {
            return true;
        }
        if wakeup.sleep(backoff) {
            return false;
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

fn commit(
    config: &ForwarderConfig,
    sinks: &mut [Box<dyn Sink>],
    position: Position,
) -> anyhow::Result<()> {
    let state = ForwarderState {
        sinks: sinks
            .iter()
            .map(|s| (s.name().to_owned(), s.state()))
            .collect(),
    };
    Cursor::new(position, state)
        .store(&config.input_dir, READER_NAME, Durability::Fsync)
        .context("committing the forwarder checkpoint")?;
    for sink in sinks {
        sink.committed();
    }
    Ok(())
}
