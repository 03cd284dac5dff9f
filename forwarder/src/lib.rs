//! The forwarder: reads the processed journal and delivers every record to its sinks — the
//! periodic report on stdout, files, HTTP, Loki, Elasticsearch — then commits its position.
//!
//! Easy to get wrong: the commit. A sink's position advances only after it took the batch, and
//! every sink's position and state are committed together in one atomic file (the forwarder's
//! cursor in the processed journal), so a restart neither skips nor repeats a record for the
//! file sink, and network sinks resend at most the batches they were working on. A lane whose
//! sinks all allow it ([`Sink::commit_within`]: the file sink, which cuts its files back to the
//! commit on start) commits several delivered batches at once; before the commit each sink
//! makes them durable ([`Sink::sync`]).
//!
//! Delivery is organised in lanes: a lane reads the journal and offers each batch to its
//! sinks until all took it. `all_or_nothing` runs one lane with every sink; `decoupled` runs
//! one lane (thread) per sink, so a sink that is down only holds back itself. The cursor
//! published for the journal's retention is the slowest sink's position, so no segment a sink
//! still needs is deleted.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sidecar_core::backoff::Backoff;
use sidecar_core::checkpoint::Durability;
use sidecar_core::config::HumanDuration;
use sidecar_core::journal::{Cursor, CursorFile, JournalReader, Position, COMMIT_FILE};
use sidecar_core::signal::{self, Background, DirWatcher, Wakeup};
use sidecar_core::sink::{self, Delivery, ForwarderFile, OutRecord, Sink};
use sidecar_core::telemetry::{self, Health};
use tracing::{info, warn};

pub mod api;
pub mod commands;
pub mod fanout;
pub mod logs_cli;
pub mod top;
pub mod viewer;

/// The name this stage's cursor (its checkpoint) has in the processed journal.
pub const READER_NAME: &str = "forwarder";
const DEFAULT_CONFIG: &str = "/etc/log-forwarder/forwarder.yaml";
/// Processed journal read per batch at most, unless a sink asks for more: the buffer and the
/// decoded records keep the room of the largest batch (4 MiB put 4 MiB more in the peak RSS
/// at 10,000 lines/s; BENCHMARKS.md, "One mebibyte per batch").
const BATCH_MAX_BYTES: usize = 1 << 20;

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
    /// How long to let writes gather after a wake before a batch is read and committed. The
    /// default 0s takes each upstream commit as it comes: the collector's linger already gathers
    /// lines into batches, and a second wait here only adds latency. Longer means fewer, larger
    /// commits (one fsync each) when the upstream stage commits more often than wanted.
    #[arg(long, env = "FORWARDER_LINGER", default_value = "0s", value_parser = HumanDuration::parse_linger)]
    pub linger: HumanDuration,
    /// fsync the checkpoint and the file sinks' writes at every commit (survives a node
    /// crash); false leaves both to the page cache, which survives a container crash.
    #[arg(long, env = "FORWARDER_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
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
    /// Input bytes per batch at most (default [`BATCH_MAX_BYTES`]), unless a sink of the lane
    /// cuts its requests bigger ([`Sink::batch_bytes`]).
    pub batch_max_bytes: usize,
    /// How long to let the processor's commits gather after a wake (default 10 ms).
    pub linger: Duration,
    /// Whether commits (the checkpoint, the file sinks' writes) are fsynced.
    pub durability: Durability,
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
        let mut file = match &self.config {
            Some(path) => ForwarderFile::load(path)?,
            None if std::path::Path::new(DEFAULT_CONFIG).exists() => {
                ForwarderFile::load(std::path::Path::new(DEFAULT_CONFIG))?
            }
            None => ForwarderFile::report_only(),
        };
        if file.dead_letter.directory.is_none() {
            // The forwarder's own corner of the processed volume: it survives restarts.
            file.dead_letter.directory = Some(self.input_dir.join("dead-letter"));
        }
        let api_listen = self.api.listen()?;
        Ok(ForwarderConfig {
            api_listen,
            api: self.api,
            file,
            input_dir: self.input_dir,
            listen: self.listen,
            grace: self.grace_period.0,
            batch_max_bytes: BATCH_MAX_BYTES,
            linger: self.linger.0,
            durability: Durability::from_fsync_flag(self.fsync),
            poll_interval: Duration::from_secs(1),
        })
    }
}

/// The forwarder's committed state beside its position: each sink's state and position.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ForwarderState {
    /// Sink name → the state it committed.
    pub sinks: Map<String, Value>,
    /// Sink name → how far it has delivered. The cursor's own position is the smallest of
    /// these; a sink missing here (new, or a checkpoint from before positions were kept per
    /// sink) starts at the cursor's position.
    #[serde(default)]
    pub positions: BTreeMap<String, Position>,
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
    sink::network::register_metrics(&mut registry);
    sink::clickhouse::register_metrics(&mut registry);
    sink::otlp::register_metrics(&mut registry);
    sink::redis::register_metrics(&mut registry);
    sink::nats::register_metrics(&mut registry);
    sink::syslog::register_metrics(&mut registry);
    sidecar_core::alerts::register_metrics(&mut registry);
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
    let sinks =
        sink::build(&config.file, &state.sinks, config.durability).context("starting the sinks")?;
    let health = Health::new(Duration::from_secs(60));
    let api_metrics = api::ApiMetrics::default();
    api_metrics.register(&mut registry);
    let background = Background::default();
    let bound = telemetry::serve(config.listen, registry, health.clone(), &background).await?;
    if let Some(listen) = config.api_listen {
        api::serve(
            listen,
            &config.api,
            &config.input_dir,
            api_metrics,
            &background,
        )
        .await?;
    }
    let names: Vec<&str> = sinks.iter().map(|s| s.name()).collect();
    info!(listen = %bound, input = %config.input_dir.display(), sinks = ?names, delivery = ?config.file.delivery, segment = position.segment, offset = position.offset, "Forwarder started.");
    let shutdown = cancel_requests_late(shutdown, &sinks, config.grace, background.clone());
    let checkpoint = Checkpoint::new(&sinks, position, state, &config.input_dir);
    let wakeup = Wakeup::new();
    let loop_wakeup = wakeup.clone();
    let result = signal::run_stage("forwarder", wakeup, config.grace, shutdown, move || {
        let shared = Shared {
            config: &config,
            metrics: &metrics,
            health: &health,
            checkpoint: Mutex::new(checkpoint),
        };
        match config.file.delivery {
            Delivery::AllOrNothing => forward_together(&shared, sinks, &loop_wakeup),
            Delivery::Decoupled => forward_decoupled(&shared, sinks, &loop_wakeup),
        }
    })
    .await;
    background.stop(signal::BACKGROUND_STOP).await;
    result
}

/// Resolves with `shutdown`; a quarter of the grace period before it ends, requests still in
/// flight are abandoned, so a server that accepts and never answers cannot hold the exit past
/// the grace period (its batch stays uncommitted and is sent again after the restart).
fn cancel_requests_late(
    shutdown: impl Future<Output = ()>,
    sinks: &[Box<dyn Sink>],
    grace: Duration,
    background: Background,
) -> impl Future<Output = ()> {
    let cancels: Vec<_> = sinks.iter().filter_map(|s| s.cancel_handle()).collect();
    async move {
        shutdown.await;
        if !cancels.is_empty() {
            background.spawn(async move {
                tokio::time::sleep(grace.mul_f64(0.75)).await;
                for cancel in cancels {
                    cancel.cancel();
                }
            });
        }
    }
}

/// What every lane shares.
struct Shared<'a> {
    config: &'a ForwarderConfig,
    metrics: &'a Metrics,
    health: &'a Health,
    checkpoint: Mutex<Checkpoint>,
}

/// The one checkpoint file and its content, updated by each lane under the lock.
struct Checkpoint {
    state: ForwarderState,
    file: CursorFile,
}

impl Checkpoint {
    fn new(
        sinks: &[Box<dyn Sink>],
        position: Position,
        saved: ForwarderState,
        input_dir: &Path,
    ) -> Self {
        let positions = sinks
            .iter()
            .map(|s| {
                let name = s.name().to_owned();
                let at = saved.positions.get(&name).copied().unwrap_or(position);
                (name, at)
            })
            .collect();
        // Only configured sinks: a removed sink must not hold the journal back forever.
        let states = saved
            .sinks
            .into_iter()
            .filter(|(name, _)| sinks.iter().any(|s| s.name() == name))
            .collect();
        Self {
            state: ForwarderState {
                sinks: states,
                positions,
            },
            file: CursorFile::new(input_dir, READER_NAME),
        }
    }

    fn position_of(&self, sink: &str) -> Position {
        self.state.positions.get(sink).copied().unwrap_or_default()
    }

    /// The slowest sink's position: what the journal may not delete before.
    fn slowest(&self, fallback: Position) -> Position {
        self.state
            .positions
            .values()
            .copied()
            .min()
            .unwrap_or(fallback)
    }
}

/// `all_or_nothing`: one lane with every sink. Sinks behind the others (after a switch from
/// `decoupled`) first catch up alone, so each sees every record exactly once.
fn forward_together(
    shared: &Shared<'_>,
    sinks: Vec<Box<dyn Sink>>,
    wakeup: &Wakeup,
) -> anyhow::Result<()> {
    let positions: Vec<Position> = {
        let checkpoint = shared.checkpoint.lock();
        sinks
            .iter()
            .map(|s| checkpoint.position_of(s.name()))
            .collect()
    };
    let front = positions.iter().copied().max().unwrap_or_default();
    let mut together = Vec::new();
    for (sink, position) in sinks.into_iter().zip(positions) {
        if position == front {
            together.push(sink);
            continue;
        }
        info!(sink = sink.name(), from = ?position, to = ?front, "Sink is behind the others; catching it up alone first.");
        let mut lane = Lane::new(shared, vec![sink], position, wakeup);
        if !lane.catch_up(front)? {
            return Ok(()); // Stopped while catching up: its commit stands.
        }
        together.extend(lane.sinks);
    }
    Lane::new(shared, together, front, wakeup).run()
}

/// `decoupled`: one lane (thread) per sink, each with its own wake-ups; this thread waits for
/// the stop and passes it on.
fn forward_decoupled(
    shared: &Shared<'_>,
    sinks: Vec<Box<dyn Sink>>,
    wakeup: &Wakeup,
) -> anyhow::Result<()> {
    let lanes: Vec<(Box<dyn Sink>, Wakeup, Position)> = {
        let checkpoint = shared.checkpoint.lock();
        sinks
            .into_iter()
            .map(|s| {
                let at = checkpoint.position_of(s.name());
                (s, Wakeup::new(), at)
            })
            .collect()
    };
    let lane_wakeups: Vec<Wakeup> = lanes.iter().map(|(_, w, _)| w.clone()).collect();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let mut result = Ok(());
        for (sink, lane_wakeup, at) in lanes {
            let name = format!("lane-{}", sink.name());
            let spawned =
                std::thread::Builder::new()
                    .name(name.clone())
                    .spawn_scoped(scope, move || {
                        let result = Lane::new(shared, vec![sink], at, &lane_wakeup).run();
                        wakeup.wake(); // A lane that ended stops the others at once.
                        result
                    });
            match spawned {
                Ok(handle) => handles.push(handle),
                Err(e) => {
                    // Out of threads or memory: stop the lanes already running, cleanly.
                    result = Err(anyhow::Error::new(e).context(format!("starting thread {name}")));
                    break;
                }
            }
        }
        // A lane that ends wakes this thread; the timed turn is a backstop.
        while result.is_ok()
            && !wakeup.wait(signal::backstop_wait(shared.config.poll_interval, true))
        {
            if handles.iter().any(|h| h.is_finished()) {
                break; // A lane failed: stop the others and report it.
            }
        }
        for lane_wakeup in &lane_wakeups {
            lane_wakeup.stop();
        }
        for handle in handles {
            let joined = handle
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a delivery lane panicked")));
            if result.is_ok() {
                result = joined;
            }
        }
        result
    })
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

/// How long a lane's commit waits for later batches when none of its sinks sets a limit (the
/// report alone).
const UNLIMITED_COMMIT_WAIT: Duration = Duration::from_secs(1);
/// A lane commits once it delivered this much input since its last commit, however soon:
/// the processor pauses when too much of its journal is unconsumed (`--max-unconsumed`).
const COMMIT_AFTER_BYTES: usize = 16 << 20;

/// A reader of the processed journal and the sinks it delivers to together.
struct Lane<'a, 's> {
    shared: &'s Shared<'a>,
    reader: JournalReader,
    sinks: Vec<Box<dyn Sink>>,
    wakeup: &'s Wakeup,
    buf: Vec<u8>,
    warned_behind: bool,
    /// The longest linger of the forwarder and of the lane's sinks.
    linger: Duration,
    /// Input bytes per batch at most: the forwarder's, or more if a sink asks for it.
    batch_max_bytes: usize,
    /// How long a delivered batch's commit may wait for later ones: the shortest any of the
    /// lane's sinks allows ([`Sink::commit_within`]).
    commit_within: Duration,
    /// Delivered and not yet committed, if anything.
    uncommitted: Option<Uncommitted>,
}

/// What a lane delivered since its last commit.
#[derive(Debug, Clone, Copy)]
struct Uncommitted {
    /// The position after the last batch every sink of the lane took.
    position: Position,
    /// When the first of those batches was delivered.
    since: Instant,
    /// Input bytes delivered.
    bytes: usize,
}

impl<'a, 's> Lane<'a, 's> {
    fn new(
        shared: &'s Shared<'a>,
        sinks: Vec<Box<dyn Sink>>,
        position: Position,
        wakeup: &'s Wakeup,
    ) -> Self {
        let linger = sinks
            .iter()
            .map(|s| s.linger())
            .fold(shared.config.linger, Duration::max);
        let batch_max_bytes = sinks
            .iter()
            .map(|s| s.batch_bytes())
            .fold(shared.config.batch_max_bytes, usize::max);
        let commit_within = match sinks.iter().map(|s| s.commit_within()).min() {
            Some(Duration::MAX) | None => UNLIMITED_COMMIT_WAIT,
            Some(shortest) => shortest,
        };
        Self {
            reader: input_reader(shared.config, position),
            shared,
            linger,
            batch_max_bytes,
            commit_within,
            uncommitted: None,
            sinks,
            wakeup,
            buf: Vec::new(),
            warned_behind: false,
        }
    }

    /// Delivers until stopped, then drains what the processor committed and closes the sinks.
    fn run(mut self) -> anyhow::Result<()> {
        let config = self.shared.config;
        let mut watcher =
            DirWatcher::start_for_file([config.input_dir.as_path()], self.wakeup, COMMIT_FILE);
        let mut watching = config.input_dir.is_dir();
        while !self.wakeup.is_stopping() {
            self.shared.health.beat();
            if !watching && config.input_dir.is_dir() {
                watching = watcher.add(&config.input_dir);
            }
            let more = self.forward_available(None)? == Progress::More;
            self.commit_if_due()?;
            self.tick();
            if more {
                continue;
            }
            // The commit file watched: its events wake the lane, and an idle forwarder turns
            // every 10 s or when a sink's timer is due, not every second (BENCHMARKS.md, "Idle").
            let quiet = watching && watcher.is_complete();
            let wait = [self.commit_due_in(), self.tick_due_in()]
                .into_iter()
                .flatten()
                .fold(
                    signal::backstop_wait(config.poll_interval, quiet),
                    Duration::min,
                );
            if self.wakeup.wait(wait) || self.wakeup.sleep(self.linger) {
                break;
            }
        }
        // The processor stops before us (native sidecar order), so what it committed is final:
        // deliver it before exiting, within the grace period. Only up to what it had committed
        // when the signal came: a processor still running must not keep us chasing.
        if let Some(stop_at) = self.reader.committed_end()? {
            loop {
                self.shared.health.beat();
                match self.forward_available(Some(stop_at))? {
                    Progress::More => continue,
                    Progress::Done => break,
                    // A sink is down: what every sink took is committed, the rest is not.
                    Progress::Interrupted => return self.commit_delivered(),
                }
            }
        }
        self.commit_delivered()?;
        for sink in &mut self.sinks {
            sink.close();
        }
        Ok(())
    }

    /// Delivers up to `front` (a position other sinks reached). Returns false when stopped
    /// first.
    fn catch_up(&mut self, front: Position) -> anyhow::Result<bool> {
        while self.reader.position() < front {
            self.shared.health.beat();
            match self.forward_available(Some(front))? {
                Progress::Interrupted => {
                    self.commit_delivered()?;
                    return Ok(false);
                }
                Progress::Done if self.reader.position() < front => {
                    anyhow::bail!(
                        "the processed journal ends at {:?}, before {front:?} that other sinks already reached",
                        self.reader.position()
                    )
                }
                _ => self.tick(),
            }
        }
        // The lane's sinks join another lane, which knows nothing of this one's deliveries.
        self.commit_delivered()?;
        Ok(true)
    }

    /// Delivers and commits one batch of what the processor committed (up to `limit`).
    fn forward_available(&mut self, limit: Option<Position>) -> anyhow::Result<Progress> {
        let Some(mut end) = self.reader.committed_end()? else {
            return Ok(Progress::Done);
        };
        if end < self.reader.position() {
            if !std::mem::replace(&mut self.warned_behind, true) {
                warn!(committed = ?end, ours = ?self.reader.position(), "The processed journal ends before our committed position (was its volume replaced?); waiting for it to pass us.");
            }
            return Ok(Progress::Done);
        }
        if let Some(limit) = limit {
            end = end.min(limit);
        }
        let start = self.reader.position();
        let read = self
            .reader
            .read_batch(end, self.batch_max_bytes, &mut self.buf)?;
        if read > 0 {
            let batch = decode_batch(&self.buf, self.shared.metrics);
            if !deliver(
                &mut self.sinks,
                &batch,
                self.shared.metrics,
                self.wakeup,
                self.shared.health,
            ) {
                // Not every sink took it: it is read again, or a later batch that gets through
                // (the drain at shutdown) would commit a position past it.
                self.reader = input_reader(self.shared.config, start);
                return Ok(Progress::Interrupted);
            }
            let before = self.uncommitted;
            let delivered = Uncommitted {
                position: self.reader.position(),
                since: before.map_or_else(Instant::now, |u| u.since),
                bytes: before.map_or(0, |u| u.bytes) + read,
            };
            self.uncommitted = Some(delivered);
            if delivered.bytes >= COMMIT_AFTER_BYTES {
                self.commit_delivered()?;
            } else {
                self.commit_if_due()?;
            }
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

    /// How soon a sink's `tick` has work; `None` when none has any on its own.
    fn tick_due_in(&self) -> Option<Duration> {
        self.sinks.iter().filter_map(|s| s.tick_due_in()).min()
    }

    /// How long until what was delivered must be committed; `None` when nothing waits.
    fn commit_due_in(&self) -> Option<Duration> {
        let uncommitted = self.uncommitted?;
        Some(
            self.commit_within
                .saturating_sub(uncommitted.since.elapsed()),
        )
    }

    /// Commits what was delivered once it waited as long as the lane's sinks allow.
    fn commit_if_due(&mut self) -> anyhow::Result<()> {
        if self.commit_due_in().is_some_and(|due| due.is_zero()) {
            self.commit_delivered()?;
        }
        Ok(())
    }

    /// Commits what was delivered, if anything: each sink makes it durable, then the
    /// checkpoint records this lane's sinks' position and state.
    fn commit_delivered(&mut self) -> anyhow::Result<()> {
        let Some(delivered) = self.uncommitted.take() else {
            return Ok(());
        };
        for sink in &mut self.sinks {
            sink.sync().with_context(|| {
                format!("making sink {} durable before the commit", sink.name())
            })?;
        }
        self.commit(delivered.position)
    }

    /// Records this lane's sinks' `position` and state in the checkpoint and stores it whole.
    /// The lock is held across the store so that stores never overtake each other.
    fn commit(&mut self, position: Position) -> anyhow::Result<()> {
        {
            let mut guard = self.shared.checkpoint.lock();
            let checkpoint = &mut *guard;
            for sink in &self.sinks {
                let name = sink.name().to_owned();
                checkpoint.state.positions.insert(name.clone(), position);
                checkpoint.state.sinks.insert(name, sink.state());
            }
            let slowest = checkpoint.slowest(position);
            let cursor = Cursor::new(slowest, &checkpoint.state);
            let durability = self.shared.config.durability;
            store_when_space(&cursor, &mut checkpoint.file, durability, self.wakeup)?;
        }
        for sink in &mut self.sinks {
            sink.committed();
        }
        Ok(())
    }
}

/// The reader of the processed journal from `position`; its reads are the delivery's, so it
/// hands back the page cache of what it read (the query API reads a released range from disk).
fn input_reader(config: &ForwarderConfig, position: Position) -> JournalReader {
    JournalReader::new(&config.input_dir, position).releasing_read_pages(config.durability)
}

/// Stores the checkpoint, waiting out a full volume (the sinks keep what they were given; the
/// checkpoint is only late).
fn store_when_space(
    cursor: &Cursor<&ForwarderState>,
    file: &mut CursorFile,
    durability: Durability,
    wakeup: &Wakeup,
) -> anyhow::Result<()> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match file.store(cursor, durability) {
            Ok(()) => return Ok(()),
            Err(error) if error.is_out_of_space() => {
                let delay = backoff.next_delay();
                warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "The processed volume is full; retrying the forwarder checkpoint until space returns.");
                if wakeup.sleep(delay) {
                    anyhow::bail!("stopped while the processed volume was full: the last checkpoint stands and the batch is delivered again on restart");
                }
            }
            Err(error) => return Err(error).context("committing the forwarder checkpoint"),
        }
    }
}

/// Decodes each NDJSON line's routing fields; a line that is not a JSON object is delivered
/// raw and counted.
fn decode_batch<'a>(buf: &'a [u8], metrics: &Metrics) -> Vec<OutRecord<'a>> {
    sidecar_core::journal::records(buf)
        .map(|raw| {
            let record = OutRecord::decode(raw);
            if !record.is_decoded() {
                metrics.undecodable.inc();
            }
            record
        })
        .collect()
}

/// Offers the batch to every sink until each has taken it, waiting between rounds as long as
/// the failed sinks ask (their backoff or the server's `Retry-After`), else with our own
/// backoff. Returns false when asked to stop before every sink took it.
fn deliver(
    sinks: &mut [Box<dyn Sink>],
    batch: &[OutRecord<'_>],
    metrics: &Metrics,
    wakeup: &Wakeup,
    health: &Health,
) -> bool {
    let mut delivered = vec![false; sinks.len()];
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
    loop {
        let own_delay = backoff.next_delay();
        let mut wait: Option<Duration> = None;
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
                    let delay = sink.retry_delay().unwrap_or(own_delay);
                    wait = Some(wait.map_or(delay, |w| w.min(delay)));
                    warn!(
                        sink = sink.name(),
                        error = format!("{e:#}"),
                        retry_in_ms = delay.as_millis() as u64,
                        "Delivery failed; retrying."
                    );
                }
            }
        }
        let Some(wait) = wait else {
            return true;
        };
        // Sinks that took the batch keep ticking (the report keeps printing) meanwhile.
        for (sink, done) in sinks.iter_mut().zip(&delivered) {
            if *done {
                sink.tick();
            }
        }
        if sleep_alive(wakeup, health, wait) {
            return false;
        }
    }
}

/// Sleeps `duration` unless stopped (returns true then), beating health every few seconds:
/// waiting out a long `Retry-After` is the loop working, not hanging.
fn sleep_alive(wakeup: &Wakeup, health: &Health, duration: Duration) -> bool {
    let until = std::time::Instant::now() + duration;
    loop {
        health.beat();
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return false;
        }
        if wakeup.sleep(left.min(Duration::from_secs(5))) {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Named(&'static str);

    impl Sink for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn send(&mut self, _: &[OutRecord<'_>]) -> Result<(), sink::SinkError> {
            Ok(())
        }
        fn state(&self) -> Value {
            Value::Null
        }
    }

    fn at(segment: u64, offset: u64) -> Position {
        Position { segment, offset }
    }

    #[test]
    fn the_checkpoint_keeps_configured_sinks_and_publishes_the_slowest() {
        let saved: ForwarderState = serde_json::from_value(serde_json::json!({
            "sinks": {"archive": {"x": 1}, "removed": {"y": 2}},
            "positions": {
                "archive": {"segment": 3, "offset": 10},
                "removed": {"segment": 0, "offset": 0},
            },
        }))
        .unwrap();
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Named("archive")), Box::new(Named("es"))];
        let checkpoint = Checkpoint::new(&sinks, at(2, 500), saved, Path::new("unused"));
        assert_eq!(checkpoint.position_of("archive"), at(3, 10));
        // A new sink starts at the published (slowest) position.
        assert_eq!(checkpoint.position_of("es"), at(2, 500));
        // A removed sink no longer holds the journal back, and its state is dropped.
        assert_eq!(checkpoint.slowest(at(9, 9)), at(2, 500));
        assert!(!checkpoint.state.sinks.contains_key("removed"));
        assert!(!checkpoint.state.positions.contains_key("removed"));
        assert_eq!(checkpoint.state.sinks["archive"]["x"], 1);
    }

    /// Refuses its first batch, asking the forwarder to stop at that moment (SIGTERM while a
    /// sink is down), and takes everything after.
    struct DownAtTheStop {
        wakeup: Wakeup,
        refused: bool,
        took: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for DownAtTheStop {
        fn name(&self) -> &str {
            "archive"
        }
        fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), sink::SinkError> {
            if !std::mem::replace(&mut self.refused, true) {
                self.wakeup.stop();
                return Err(sink::SinkError::Io {
                    sink: "archive".into(),
                    path: "down".into(),
                    source: std::io::Error::other("down"),
                });
            }
            let raw = batch
                .iter()
                .map(|r| String::from_utf8_lossy(r.raw).into_owned());
            self.took.lock().extend(raw);
            Ok(())
        }
        fn state(&self) -> Value {
            Value::Null
        }
    }

    /// A processed journal in a temporary directory with records committed, and what a lane
    /// reading it needs besides its sinks.
    struct Fixture {
        dir: tempfile::TempDir,
        journal_end: Position,
        config: ForwarderConfig,
        metrics: Metrics,
        health: Health,
    }

    impl Fixture {
        fn with_records(records: impl IntoIterator<Item = Value>) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let (mut journal, _) = sidecar_core::journal::JournalWriter::<Value>::open(
                dir.path(),
                sidecar_core::journal::JournalOptions::default(),
            )
            .unwrap();
            for record in records {
                journal.push(&record);
            }
            journal.commit(&Value::Null).unwrap();
            let config = Cli::try_parse_from([
                "forwarder",
                "--input-dir",
                dir.path().to_str().unwrap(),
                "--listen",
                "127.0.0.1:0",
                "--api-listen",
                "off",
            ])
            .unwrap()
            .into_config()
            .unwrap();
            Self {
                journal_end: journal.end(),
                dir,
                config,
                metrics: Metrics::default(),
                health: Health::new(Duration::from_secs(60)),
            }
        }

        fn shared(&self, sinks: &[Box<dyn Sink>]) -> Shared<'_> {
            Shared {
                config: &self.config,
                metrics: &self.metrics,
                health: &self.health,
                checkpoint: Mutex::new(Checkpoint::new(
                    sinks,
                    Position::default(),
                    ForwarderState::default(),
                    self.dir.path(),
                )),
            }
        }
    }

    #[test]
    fn a_batch_refused_when_the_stop_came_is_delivered_by_the_drain_not_skipped() {
        let fixture = Fixture::with_records(
            (0..3).map(|n| serde_json::json!({"source_file": "a.log", "n": n})),
        );
        let wakeup = Wakeup::new();
        let took = Arc::new(Mutex::new(Vec::new()));
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(DownAtTheStop {
            wakeup: wakeup.clone(),
            refused: false,
            took: Arc::clone(&took),
        })];
        let shared = fixture.shared(&sinks);
        Lane::new(&shared, sinks, Position::default(), &wakeup)
            .run()
            .unwrap();
        let took = took.lock();
        assert_eq!(took.len(), 3, "{took:?}");
        let saved = Cursor::<ForwarderState>::load(fixture.dir.path(), READER_NAME)
            .unwrap()
            .unwrap();
        assert_eq!(saved.position, fixture.journal_end);
    }

    /// Counts the records of each batch it is sent; asks for batches of `wants` bytes.
    struct BatchSizes {
        wants: usize,
        batches: Arc<Mutex<Vec<usize>>>,
    }

    impl Sink for BatchSizes {
        fn name(&self) -> &str {
            "sizes"
        }
        fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), sink::SinkError> {
            self.batches.lock().push(batch.len());
            Ok(())
        }
        fn state(&self) -> Value {
            Value::Null
        }
        fn batch_bytes(&self) -> usize {
            self.wants
        }
    }

    /// The records of the first batch a lane reads from 3,000 committed records of ~1 KB,
    /// delivered to a sink that asks for batches of `wants` bytes.
    fn first_batch_with_a_sink_wanting(wants: usize) -> usize {
        let message = "x".repeat(1000);
        let fixture = Fixture::with_records(
            (0..3000)
                .map(|n| serde_json::json!({"source_file": "a.log", "n": n, "message": message})),
        );
        let batches = Arc::new(Mutex::new(Vec::new()));
        let sinks: Vec<Box<dyn Sink>> = vec![
            Box::new(Named("report")),
            Box::new(BatchSizes {
                wants,
                batches: Arc::clone(&batches),
            }),
        ];
        let shared = fixture.shared(&sinks);
        let wakeup = Wakeup::new();
        let mut lane = Lane::new(&shared, sinks, Position::default(), &wakeup);
        lane.forward_available(None).unwrap();
        let first = batches.lock()[0];
        first
    }

    #[test]
    fn a_batch_is_a_mebibyte_unless_a_sink_cuts_its_requests_bigger() {
        let default = first_batch_with_a_sink_wanting(0);
        assert!((900..=1100).contains(&default), "{default} records");
        assert_eq!(first_batch_with_a_sink_wanting(4 << 20), 3000);
    }

    #[test]
    fn a_checkpoint_from_before_per_sink_positions_still_loads() {
        let old: ForwarderState =
            serde_json::from_value(serde_json::json!({"sinks": {"report": {}}})).unwrap();
        let sinks: Vec<Box<dyn Sink>> = vec![Box::new(Named("report"))];
        let checkpoint = Checkpoint::new(&sinks, at(1, 42), old, Path::new("unused"));
        assert_eq!(checkpoint.position_of("report"), at(1, 42));
    }
}
