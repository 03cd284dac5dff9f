//! The processor: reads the collected journal, enriches each line by the rules of its source
//! file, and commits the processed records to its own journal.
//!
//! Easy to get wrong: the input position. Where the processor stood in the collected journal
//! is saved in the same atomic commit as the records it produced, never separately; the cursor
//! it publishes for the collector's retention is a copy written only after that commit.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sidecar_common::checkpoint::{Durability, StatsFile};
use sidecar_common::config::{ByteSize, HumanDuration};
use sidecar_common::signal::{self, Background, DirWatcher, Wakeup};
use sidecar_common::telemetry::{self, Health};
use sidecar_journal::{
    self as journal, Cursor, CursorFile, JournalOptions, JournalReader, JournalWriter, Position,
};
use sidecar_record::{encode, field, timestamp_now, CollectedRecord, DecodeError, Fields};
use sidecar_rules::{split_id, Joiner, RuleSet, Verdict};
use tracing::{debug, info, warn};

pub mod kubernetes;
pub mod tools;

pub use tools::Tool;

use kubernetes::{
    ApiMetrics, ApiSettings, MetadataConfig, NodeMetadata, NodeSettings, PodMetadata,
};
use sidecar_common::mounted::FileWatch;

/// The name this stage publishes its cursor under in the collected journal.
pub const READER_NAME: &str = "processor";
/// The name the forwarder publishes its cursor under in the processed journal.
pub const DOWNSTREAM_READER: &str = "forwarder";
const STATS_FILE: &str = "processing_stats.json";
/// Collected journal read per batch at most. A batch's buffer, records and output keep the
/// room of the largest batch for good: through a backlog, 4 MiB made the peak RSS 8 MiB
/// higher than 1 MiB does, and cost system time to fault those pages in (BENCHMARKS.md, "One
/// mebibyte per batch").
const BATCH_MAX_BYTES: usize = 1 << 20;

/// Command line: the stage's flags, or a tool subcommand (`validate`, `test`, `explain`).
#[derive(Debug, Parser)]
#[command(
    name = "processor",
    version,
    about = "Enriches collected log lines by per-file rules.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// A tool to run instead of the stage.
    #[command(subcommand)]
    pub tool: Option<Tool>,
    /// The stage's flags, when no tool is given.
    #[command(flatten)]
    pub stage: StageArgs,
}

/// The stage's flags; each also reads an environment variable.
#[derive(Debug, Args)]
pub struct StageArgs {
    /// The rules file (YAML, or TOML by its .toml extension), mounted from a ConfigMap.
    #[arg(
        long,
        env = "PROCESSOR_RULES",
        default_value = "/etc/log-processor/rules.yaml"
    )]
    pub rules: PathBuf,
    /// The collected journal to read.
    #[arg(long, env = "PROCESSOR_INPUT_DIR", default_value = "/collected-logs")]
    pub input_dir: PathBuf,
    /// Where the processed journal (and its commit) lives.
    #[arg(long, env = "PROCESSOR_JOURNAL_DIR", default_value = "/processed-logs")]
    pub journal_dir: PathBuf,
    /// Address for GET /healthz and GET /metrics.
    #[arg(long, env = "PROCESSOR_LISTEN", default_value = "0.0.0.0:9102")]
    pub listen: SocketAddr,
    /// Time allowed to commit and exit after SIGTERM; keep it below the pod's grace period.
    #[arg(long, env = "PROCESSOR_GRACE_PERIOD", default_value = "8s")]
    pub grace_period: HumanDuration,
    /// How long to let writes gather after a wake before a batch is read and committed. The
    /// default 0s takes each upstream commit as it comes: the collector's linger already gathers
    /// lines into batches, and a second wait here only adds latency. Longer means fewer, larger
    /// commits (one fsync each) when the upstream stage commits more often than wanted.
    #[arg(long, env = "PROCESSOR_LINGER", default_value = "0s", value_parser = HumanDuration::parse_linger)]
    pub linger: HumanDuration,
    /// Pause when the forwarder lags by more than this.
    #[arg(long, env = "PROCESSOR_MAX_UNCONSUMED", default_value = "128MiB")]
    pub max_unconsumed: ByteSize,
    /// Keep consumed journal segments up to this total size ...
    #[arg(long, env = "PROCESSOR_RETENTION_BYTES", default_value = "32MiB")]
    pub retention_bytes: ByteSize,
    /// ... and this age.
    #[arg(long, env = "PROCESSOR_RETENTION_AGE", default_value = "1h")]
    pub retention_age: HumanDuration,
    /// fsync every commit (survives a node crash); false leaves it to the page cache.
    #[arg(long, env = "PROCESSOR_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Log filter, e.g. info or debug.
    #[arg(long, env = "PROCESSOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "PROCESSOR_LOG_JSON")]
    pub log_json: bool,
    /// Add pod metadata to every record under `kubernetes`: `off`; `downward` (the Downward
    /// API: POD_NAME, POD_NAMESPACE, NODE_NAME, POD_IP, POD_SERVICE_ACCOUNT and the
    /// labels/annotations files in --podinfo-dir); `api` (the Downward API plus the pod as
    /// the API server has it: labels, annotations, container images, owner chain, kept fresh
    /// by a watch; needs POD_NAME and a service account allowed to get/list/watch pods); or
    /// `node` (a DaemonSet over the kubelet's /var/log/pods: each record's pod, told by its
    /// source_file `<namespace>_<pod>_<uid>/<container>/<file>`, as namespace, pod_name,
    /// pod_uid, container_name, node_name, and from a watch of the node's pods: labels,
    /// annotations, container_image, owner, owner_chain; needs NODE_NAME and a ClusterRole
    /// allowed to get/list/watch pods; a deleted pod's metadata stays for 5 minutes).
    #[arg(long, env = "PROCESSOR_KUBERNETES_METADATA", default_value = "off")]
    pub kubernetes_metadata: MetadataSource,
    /// Where the downwardAPI volume with `labels` and `annotations` is mounted.
    #[arg(long, env = "PROCESSOR_PODINFO_DIR", default_value = "/etc/podinfo")]
    pub podinfo_dir: PathBuf,
    /// With `--kubernetes-metadata api` or `node`: the API server's plain-HTTP address without
    /// credentials, such as `kubectl proxy`'s http://127.0.0.1:8001. Unset: the in-cluster
    /// address and the mounted service account token.
    #[arg(long, env = "PROCESSOR_KUBERNETES_API_URL")]
    pub kubernetes_api_url: Option<String>,
}

/// Where pod metadata comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetadataSource {
    /// No `kubernetes` object.
    Off,
    /// The Downward API (environment and volume); needs no API access.
    Downward,
    /// The Downward API, plus the pod read and watched on the API server.
    Api,
    /// Per record, the pod its kubelet log path names, plus the node's pods watched on the
    /// API server.
    Node,
}

/// Checked runtime settings of the processor.
#[derive(Debug)]
pub struct ProcessorConfig {
    /// The compiled rules (shared: a reload swaps them).
    pub rules: Arc<RuleSet>,
    /// The collected journal.
    pub input_dir: PathBuf,
    /// The processed journal.
    pub journal_dir: PathBuf,
    /// How the processed journal is written and kept.
    pub journal: JournalOptions,
    /// Health and metrics address.
    pub listen: SocketAddr,
    /// Shutdown budget.
    pub grace: Duration,
    /// Input bytes per batch at most (default [`BATCH_MAX_BYTES`]).
    pub batch_max_bytes: usize,
    /// How long to let the collector's commits gather after a wake (default 10 ms).
    pub linger: Duration,
    /// The periodic check that backs up inotify (default 1 s).
    pub poll_interval: Duration,
    /// The rules file, watched for changes (hot reload); `None`: the rules never change.
    pub rules_path: Option<PathBuf>,
    /// Where pod metadata comes from, when records get the own pod's.
    pub pod_metadata: Option<MetadataConfig>,
    /// The node mode's settings, when records get the metadata of the pod each came from.
    pub node_metadata: Option<NodeSettings>,
}

impl StageArgs {
    /// Loads the rules and checks the flags.
    ///
    /// # Errors
    /// A message naming the file, rule and field, or the flag, and what is wrong.
    pub fn into_config(self) -> anyhow::Result<ProcessorConfig> {
        let rules = load_rules(&self.rules)?;
        let pod_metadata = self.metadata_config()?;
        let node_metadata = self.node_settings()?;
        Ok(ProcessorConfig {
            rules: Arc::new(rules),
            input_dir: self.input_dir,
            journal_dir: self.journal_dir,
            journal: JournalOptions {
                durability: Durability::from_fsync_flag(self.fsync),
                max_unconsumed_bytes: self.max_unconsumed.0,
                retention_max_bytes: self.retention_bytes.0,
                retention_max_age: self.retention_age.0,
                readers: vec![DOWNSTREAM_READER.to_owned()],
                ..JournalOptions::default()
            },
            listen: self.listen,
            grace: self.grace_period.0,
            batch_max_bytes: BATCH_MAX_BYTES,
            linger: self.linger.0,
            poll_interval: Duration::from_secs(1),
            rules_path: Some(self.rules),
            pod_metadata,
            node_metadata,
        })
    }

    fn metadata_config(&self) -> anyhow::Result<Option<MetadataConfig>> {
        let api = match self.kubernetes_metadata {
            MetadataSource::Off | MetadataSource::Node => return Ok(None),
            MetadataSource::Downward => None,
            MetadataSource::Api => Some(self.api_settings()?),
        };
        Ok(Some(MetadataConfig {
            podinfo_dir: self.podinfo_dir.clone(),
            api,
        }))
    }

    fn api_settings(&self) -> anyhow::Result<ApiSettings> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let pod_name = env("POD_NAME").context(
            "--kubernetes-metadata api: POD_NAME is not set; give it the pod's name from the Downward API (env valueFrom fieldRef metadata.name)",
        )?;
        Ok(ApiSettings {
            url: self.api_url()?,
            pod_name,
            namespace: env("POD_NAMESPACE"),
        })
    }

    fn node_settings(&self) -> anyhow::Result<Option<NodeSettings>> {
        if self.kubernetes_metadata != MetadataSource::Node {
            return Ok(None);
        }
        let node_name = std::env::var("NODE_NAME").ok().filter(|v| !v.is_empty()).context(
            "--kubernetes-metadata node: NODE_NAME is not set; give it the node's name from the Downward API (env valueFrom fieldRef spec.nodeName)",
        )?;
        Ok(Some(NodeSettings {
            url: self.api_url()?,
            node_name,
        }))
    }

    fn api_url(&self) -> anyhow::Result<Option<http::Uri>> {
        self.kubernetes_api_url
            .as_deref()
            .map(|url| {
                url.parse::<http::Uri>()
                    .with_context(|| format!("--kubernetes-api-url {url:?}: not a URL"))
            })
            .transpose()
    }
}

/// Loads and compiles the rules file.
///
/// # Errors
/// Every error in the file, one per line, each with its line, rule and field.
pub fn load_rules(path: &Path) -> anyhow::Result<RuleSet> {
    RuleSet::check_file(path).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(tools::describe).collect();
        anyhow::anyhow!("{}", lines.join("\n"))
    })
}

/// Where the processor stood in the collected journal: its commit's input position.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProcessorInput {
    /// Resume reading here. Everything before it is in the processed journal, except what
    /// `replay` says: it never passes the first line of a multiline record still waiting.
    pub position: Position,
    /// Set when records were waiting for continuation lines at the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay: Option<Replay>,
}

/// What to do with the records between `position` and `end` after a restart: they were read
/// before, and only those of waiting multiline records are processed again; the others are
/// already in the processed journal.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replay {
    /// Where reading stood at the commit.
    pub end: Position,
    /// Source key (the record id before its last `-`) → offset of the waiting record's first
    /// line: records of that key from that offset on are processed again.
    pub pending: BTreeMap<String, u64>,
}

impl Replay {
    /// Whether the record with `id` is processed again.
    fn redo(&self, id: Option<&str>) -> bool {
        id.and_then(split_id).is_some_and(|(key, offset)| {
            self.pending.get(key).is_some_and(|&first| offset >= first)
        })
    }
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    records: Family<Vec<(String, String)>, Counter>,
    errors: Family<Vec<(String, String)>, Counter>,
    dropped: Family<Vec<(String, String)>, Counter>,
    reloads: Family<Vec<(String, String)>, Counter>,
    rules_valid: Gauge,
}

/// Runs the processor until `shutdown` resolves, then commits and returns.
///
/// # Errors
/// When a journal cannot be opened, read or written, or the listen address is taken.
pub async fn run(
    config: ProcessorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let metrics = Metrics::default();
    registry.register(
        "processor_records",
        "Records processed, per source file and level",
        metrics.records.clone(),
    );
    registry.register(
        "processor_errors",
        "Records kept with a processing_error, per source file",
        metrics.errors.clone(),
    );
    registry.register(
        "processor_dropped",
        "Records dropped by a filter, sample or rate_limit step, per source file and reason",
        metrics.dropped.clone(),
    );
    registry.register(
        "processor_rules_reloads",
        "Reloads of the rules file after it changed, by result (applied, rejected)",
        metrics.reloads.clone(),
    );
    registry.register(
        "processor_rules_valid",
        "1 while the rules file on disk is the one in force, 0 after it was rejected",
        metrics.rules_valid.clone(),
    );
    metrics.rules_valid.set(1);
    let background = Background::default();
    let api_view = watch_pod_api(&config, &mut registry, &background).await;
    let node = watch_node_api(&config, &mut registry, &background).await;
    let (journal, input) =
        JournalWriter::<ProcessorInput>::open(&config.journal_dir, config.journal.clone())
            .with_context(|| {
                format!(
                    "opening the processed journal in {}",
                    config.journal_dir.display()
                )
            })?;
    journal.metrics().register("processor", &mut registry);
    let health = Health::new(Duration::from_secs(60));
    let bound = telemetry::serve(config.listen, registry, health.clone(), &background).await?;
    let input = input.unwrap_or_default();
    let start = input.position;
    info!(listen = %bound, rules = config.rules.origin(), input = %config.input_dir.display(), segment = start.segment, offset = start.offset, replay = input.replay.is_some(), "Processor started.");
    let wakeup = Wakeup::new();
    let loop_wakeup = wakeup.clone();
    let result = signal::run_stage("processor", wakeup, config.grace, shutdown, move || {
        let reader = JournalReader::new(&config.input_dir, start)
            .releasing_read_pages(config.journal.durability);
        let cursor = CursorPublisher::start(&config.input_dir, reader.position());
        let stage = Stage {
            config: &config,
            rules: Arc::clone(&config.rules),
            rules_watch: config.rules_path.as_deref().map(FileWatch::new),
            pod: config
                .pod_metadata
                .as_ref()
                .map(|metadata| PodMetadata::load(metadata, api_view)),
            node,
            journal,
            reader,
            joiner: Joiner::new(),
            replay: input.replay,
            metrics: &metrics,
            wakeup: &loop_wakeup,
            stats: ProcessingStats::default(),
            stats_file: StatsFile::new(config.journal_dir.join(STATS_FILE)),
            buf: Vec::new(),
            warned_behind: false,
            cursor,
            metrics_exported_at: Instant::now(),
        };
        process(stage, &loop_wakeup, &health)
    })
    .await;
    background.stop(signal::BACKGROUND_STOP).await;
    result
}

/// Starts the pod watch when the API path is on, and gives it a moment to answer so the first
/// records carry its metadata.
async fn watch_pod_api(
    config: &ProcessorConfig,
    registry: &mut Registry,
    background: &Background,
) -> Option<tokio::sync::watch::Receiver<kubernetes::ApiView>> {
    let settings = config.pod_metadata.as_ref()?.api.clone()?;
    let metrics = ApiMetrics::default();
    metrics.register(registry);
    let mut view = kubernetes::api::spawn(settings, metrics, background);
    kubernetes::api::first_answer(&mut view, kubernetes::api::FIRST_ANSWER_WAIT).await;
    Some(view)
}

/// Starts the watch of the node's pods in node mode, and gives it a moment to answer so the
/// first records carry their pods' metadata.
async fn watch_node_api(
    config: &ProcessorConfig,
    registry: &mut Registry,
    background: &Background,
) -> Option<NodeMetadata> {
    let settings = config.node_metadata.clone()?;
    let metrics = kubernetes::NodeMetrics::default();
    metrics.register(registry);
    let node_name = settings.node_name.clone();
    let mut view = kubernetes::node::spawn(settings, metrics.clone(), background);
    kubernetes::node::first_answer(&mut view, kubernetes::api::FIRST_ANSWER_WAIT).await;
    Some(NodeMetadata::new(node_name, view, &metrics))
}

fn process(mut stage: Stage<'_>, wakeup: &Wakeup, health: &Health) -> anyhow::Result<()> {
    let config = stage.config;
    let mut watcher =
        DirWatcher::start_for_file([config.input_dir.as_path()], wakeup, journal::COMMIT_FILE);
    let mut watching = config.input_dir.is_dir();
    let rules_touched = Arc::new(AtomicBool::new(false));
    let rules_watcher = stage.rules_dir().map(|dir| {
        let touched = Arc::clone(&rules_touched);
        DirWatcher::start_with([dir.as_path()], wakeup, move |_| {
            touched.store(true, Ordering::Relaxed);
        })
    });
    let mut stats_at = Instant::now();
    let mut checked_at = Instant::now();
    while !wakeup.is_stopping() {
        health.beat();
        stage.cursor.flush_if_due();
        stage.export_metrics_if_due();
        if !watching && config.input_dir.is_dir() {
            watching = watcher.add(&config.input_dir);
        }
        if rules_touched.swap(false, Ordering::Relaxed)
            || checked_at.elapsed() >= config.poll_interval
        {
            // Between batches: a new rule set applies to whole batches only.
            stage.reload_if_changed();
            checked_at = Instant::now();
        }
        let backpressured = stage.journal.is_backpressured();
        let more = !backpressured && stage.process_available()?;
        if stats_at.elapsed() >= Duration::from_secs(5) {
            stage.stats.write(&mut stage.stats_file, &stage.journal);
            stats_at = Instant::now();
        }
        if more {
            continue;
        }
        // Every input watched (the commit file, the rules directory): their events wake the
        // loop, and an idle processor turns every 10 s, not every second (BENCHMARKS.md, "Idle").
        let quiet = !backpressured
            && watching
            && watcher.is_complete()
            && rules_watcher.as_ref().is_none_or(DirWatcher::is_complete);
        let wait = idle_wait(
            signal::backstop_wait(config.poll_interval, quiet),
            (!backpressured)
                .then(|| stage.joiner.next_deadline())
                .flatten(),
            [stage.cursor.due_in(), stage.metrics_due_in()]
                .into_iter()
                .flatten()
                .min(),
        );
        if wakeup.wait(wait) || wakeup.sleep(config.linger) {
            break;
        }
    }
    // The collector stops before us (native sidecar order), so what it committed is final:
    // carry it into our journal before exiting, within the grace period. Waiting multiline
    // records are complete now too.
    // Up to what it committed when we were told to stop: if it still runs (a restart of this
    // stage alone), chasing its new commits could outlast the grace period.
    let stop_at = stage.reader.committed_end()?;
    while stop_at.is_some_and(|end| stage.reader.position() < end) && stage.process_available()? {
        health.beat();
    }
    stage.finish()?;
    stage.cursor.flush();
    stage.stats.export(stage.metrics);
    stage.stats.write(&mut stage.stats_file, &stage.journal);
    Ok(())
}

/// How long the loop may wait for input: until the periodic check, a waiting multiline
/// record's deadline (it must be let go on time even when no input comes) or a held-back
/// publication (the cursor, the metrics), whichever is first.
///
/// Easy to get wrong: while the journal is backpressured the loop passes no deadline, since
/// a record let go then could not be written: a deadline already past would make every wait
/// return at once and the loop spin until the forwarder catches up.
fn idle_wait(
    poll_interval: Duration,
    multiline_deadline: Option<Instant>,
    publication_due_in: Option<Duration>,
) -> Duration {
    let until_deadline = multiline_deadline.map_or(Duration::MAX, |deadline| {
        deadline.saturating_duration_since(Instant::now())
    });
    poll_interval
        .min(until_deadline)
        .min(publication_due_in.unwrap_or(Duration::MAX))
}

struct Stage<'a> {
    config: &'a ProcessorConfig,
    rules: Arc<RuleSet>,
    rules_watch: Option<FileWatch>,
    pod: Option<PodMetadata>,
    node: Option<NodeMetadata>,
    journal: JournalWriter<ProcessorInput>,
    reader: JournalReader,
    joiner: Joiner<Position>,
    replay: Option<Replay>,
    metrics: &'a Metrics,
    wakeup: &'a Wakeup,
    stats: ProcessingStats,
    stats_file: StatsFile,
    buf: Vec<u8>,
    warned_behind: bool,
    cursor: CursorPublisher,
    /// When the counts were last added to the metrics (see [`METRICS_EVERY`]).
    metrics_exported_at: Instant,
}

/// Where finished records go: the rules, then the journal or the drop count.
struct Output<'a> {
    rules: &'a RuleSet,
    shared: &'a SharedFields,
    /// `shared`'s fields, listed once for the batch.
    extras: Vec<(&'a str, &'a [u8])>,
    /// In node mode, where each record's own `kubernetes` object comes from.
    node: Option<&'a mut NodeMetadata>,
    journal: &'a mut JournalWriter<ProcessorInput>,
    stats: &'a mut ProcessingStats,
    emitted: usize,
    /// A finished record's emptied field list, for the next record to fill: two allocations
    /// a record fewer.
    spare: Option<Fields>,
}

impl Output<'_> {
    /// An empty field list for a new record.
    fn empty_record(&mut self) -> Fields {
        self.spare
            .take()
            .unwrap_or_else(|| Fields::with_capacity(COMMON_FIELD_COUNT))
    }

    fn recycle(&mut self, mut record: Fields) {
        record.clear();
        self.spare = Some(record);
    }

    fn finish(&mut self, mut record: Fields) {
        self.emitted += 1;
        let matched = self.rules.rules_for_record(&record);
        match self.rules.apply_matched(&matched, &mut record) {
            Verdict::Keep => {
                self.stats.count(&record);
                match self.node.as_deref_mut() {
                    None => {
                        let extras = &self.extras;
                        self.journal
                            .push_with(|out| encode::write_fields_with(out, &record, extras));
                    }
                    Some(node) => {
                        let source = record
                            .get(field::SOURCE_FILE)
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        // In key order, as `SharedFields::all` lists them.
                        let extras = [
                            (kubernetes::FIELD, node.encoded(source)),
                            self.shared.processed_at(),
                        ];
                        self.journal
                            .push_with(|out| encode::write_fields_with(out, &record, &extras));
                    }
                }
            }
            Verdict::Drop(reason) => self.stats.count_drop(matched.source(), reason),
        }
        self.recycle(record);
    }

    /// A record that skips the rules (an undecodable journal line).
    fn keep_raw(&mut self, record: Fields) {
        self.emitted += 1;
        self.stats.count(&record);
        let extras = [self.shared.processed_at()];
        self.journal
            .push_with(|out| encode::write_fields_with(out, &record, &extras));
        self.recycle(record);
    }
}

/// The fields every record of a batch gets, encoded once for the batch: `processed_at`, and
/// the pod's metadata when the processor adds it.
struct SharedFields {
    processed_at: Vec<u8>,
    pod: Option<Vec<u8>>,
}

impl SharedFields {
    fn new(processed_at: &str, pod: Option<&Value>) -> Self {
        let mut at = Vec::with_capacity(32);
        encode::write_str(&mut at, processed_at);
        Self {
            processed_at: at,
            pod: pod.map(|pod| {
                let mut json = Vec::new();
                encode::write_value(&mut json, pod);
                json
            }),
        }
    }

    fn processed_at(&self) -> (&str, &[u8]) {
        (field::PROCESSED_AT, &self.processed_at)
    }

    /// The fields in key order (`kubernetes` < `processed_at`), as `write_object_with` wants.
    fn all(&self) -> Vec<(&str, &[u8])> {
        let mut fields = Vec::with_capacity(2);
        if let Some(pod) = &self.pod {
            fields.push((kubernetes::FIELD, pod.as_slice()));
        }
        fields.push(self.processed_at());
        fields
    }
}

impl Stage<'_> {
    /// Processes and commits one batch of what the collector committed, and lets go of
    /// multiline records that waited long enough. Returns whether more input is waiting.
    fn process_available(&mut self) -> anyhow::Result<bool> {
        let start = self.reader.position();
        let mut read = 0;
        let mut end = None;
        if let Some(committed) = self.reader.committed_end()? {
            if committed < start {
                if !std::mem::replace(&mut self.warned_behind, true) {
                    warn!(committed = ?committed, ours = ?start, "The collected journal ends before our committed position (was its volume replaced?); waiting for it to pass us.");
                }
            } else {
                end = Some(committed);
                read = self.reader.read_batch(
                    committed,
                    self.config.batch_max_bytes,
                    &mut self.buf,
                )?;
            }
        }
        let processed_at = timestamp_now();
        let now = Instant::now();
        let Stage {
            rules,
            pod,
            node,
            journal,
            joiner,
            replay,
            stats,
            buf,
            ..
        } = self;
        if let Some(node) = node.as_mut() {
            // Per batch, not per poll interval: a new pod's first lines should find it.
            if node.refresh() {
                debug!("The node's pods changed; new records carry their new metadata.");
            }
        }
        let shared = SharedFields::new(&processed_at, pod.as_ref().map(PodMetadata::object));
        let mut output = Output {
            rules,
            shared: &shared,
            extras: shared.all(),
            node: node.as_mut(),
            journal,
            stats,
            emitted: 0,
            spare: None,
        };
        for (at, line) in journal::records_with_offsets(&buf[..read]) {
            let position = self.reader.position_in_batch(at);
            let collected = CollectedRecord::decode(line);
            if let Some(replaying) = replay.as_ref().filter(|r| position < r.end) {
                let id = collected.as_ref().ok().map(|c| c.id.as_ref());
                if !replaying.redo(id) {
                    continue;
                }
            }
            match collected {
                Ok(collected) => joiner.push(
                    rules,
                    collected_fields(collected, output.empty_record()),
                    position,
                    now,
                    &mut |record| output.finish(record),
                ),
                Err(e) => output.keep_raw(undecodable(line, &e)),
            }
        }
        joiner.flush_idle(now, &mut |record| output.finish(record));
        let emitted = output.emitted;
        if replay
            .as_ref()
            .is_some_and(|r| self.reader.position() >= r.end)
        {
            *replay = None;
        }
        if replay.is_some() {
            // Still inside the replayed range: its records are not all seen yet, so no commit
            // could say which of them are done. Commit once past it.
            return Ok(true);
        }
        if read > 0 || emitted > 0 {
            self.export_metrics_if_due();
            self.commit()?;
        }
        Ok(end.is_some_and(|end| self.reader.position() < end))
    }

    /// Commits what was pushed, with an input position that never passes a waiting record.
    fn commit(&mut self) -> anyhow::Result<()> {
        let read_to = self.reader.position();
        let position = self
            .joiner
            .pending()
            .map(|pending| *pending.mark)
            .min()
            .map_or(read_to, |first| first.min(read_to));
        let replay = (!self.joiner.is_empty()).then(|| Replay {
            end: read_to,
            pending: self
                .joiner
                .pending()
                .map(|pending| (pending.key.to_owned(), pending.offset))
                .collect(),
        });
        if !self
            .journal
            .commit_when_space(&ProcessorInput { position, replay }, self.wakeup)
            .context("committing to the processed journal")?
        {
            anyhow::bail!("stopped while the processed journal's volume was full: the last commit stands and the rest is processed again on restart");
        }
        self.cursor.offer(position);
        Ok(())
    }

    /// At shutdown: lets go of every waiting record and commits.
    fn finish(&mut self) -> anyhow::Result<()> {
        if self.joiner.is_empty() {
            return Ok(());
        }
        let processed_at = timestamp_now();
        let shared = SharedFields::new(&processed_at, self.pod.as_ref().map(PodMetadata::object));
        let mut output = Output {
            rules: &self.rules,
            shared: &shared,
            extras: shared.all(),
            node: self.node.as_mut(),
            journal: &mut self.journal,
            stats: &mut self.stats,
            emitted: 0,
            spare: None,
        };
        self.joiner.flush_all(&mut |record| output.finish(record));
        self.stats.export(self.metrics);
        self.commit()
    }

    /// Adds the counts to the metrics if the last export is [`METRICS_EVERY`] old.
    fn export_metrics_if_due(&mut self) {
        if self.metrics_due_in().is_some_and(|due| due.is_zero()) {
            self.stats.export(self.metrics);
            self.metrics_exported_at = Instant::now();
        }
    }

    /// How long until counts not yet in the metrics are due there, if any wait.
    fn metrics_due_in(&self) -> Option<Duration> {
        self.stats
            .has_unexported()
            .then(|| METRICS_EVERY.saturating_sub(self.metrics_exported_at.elapsed()))
    }

    /// The directory holding the rules file (a ConfigMap's mount), when rules are reloaded.
    fn rules_dir(&self) -> Option<PathBuf> {
        let path = self.rules_watch.as_ref()?.path();
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        Some(dir.unwrap_or(Path::new(".")).to_owned())
    }

    /// Swaps in the rules file if it changed and is valid; keeps the old rules otherwise.
    fn reload_if_changed(&mut self) {
        if let Some(pod) = &mut self.pod {
            if pod.refresh() {
                info!("The pod metadata changed; new records carry the new version.");
            }
        }
        let Some(watch) = &mut self.rules_watch else {
            return;
        };
        if !watch.changed() {
            return;
        }
        let result = |name: &str| vec![("result".to_owned(), name.to_owned())];
        match load_rules(watch.path()) {
            Ok(rules) => {
                info!(
                    rules = rules.origin(),
                    "The rules file changed; the new rules apply from the next batch on."
                );
                self.rules = Arc::new(rules);
                self.metrics.reloads.get_or_create(&result("applied")).inc();
                self.metrics.rules_valid.set(1);
            }
            Err(e) => {
                warn!(rules = %watch.path().display(), errors = %e, "The changed rules file is invalid; keeping the rules in force.");
                self.metrics
                    .reloads
                    .get_or_create(&result("rejected"))
                    .inc();
                self.metrics.rules_valid.set(0);
            }
        }
    }
}

/// How often, at most, the counts are added to the metrics while batches keep coming. Each
/// export looks up a labelled counter per source and level, building the label list for each;
/// at a batch every 10 ms that was about 2 % of the processor (BENCHMARKS.md, "metrics every
/// 250 ms"). A scrape sees counts at most this much older than the journal.
const METRICS_EVERY: Duration = Duration::from_millis(250);

/// How often, at most, the cursor is published while batches keep coming.
const CURSOR_EVERY: Duration = Duration::from_millis(250);

/// Tells the collector how far we consumed, after our own commit made it true. The collector
/// uses it only to delete consumed segments and for its unconsumed-bytes cap, both far coarser
/// than a batch, so while batches keep coming it is published at most every
/// [`CURSOR_EVERY`]: at a commit every few milliseconds, publishing each one (a file replaced in
/// the collector's volume) was a tenth of the processor's CPU. Our own commit file, not this,
/// is where we resume.
struct CursorPublisher {
    file: CursorFile,
    pending: Option<Position>,
    published_at: Instant,
}

impl CursorPublisher {
    /// Publishes `position` at once.
    fn start(input_dir: &Path, position: Position) -> Self {
        let mut publisher = Self {
            file: CursorFile::new(input_dir, READER_NAME),
            pending: Some(position),
            published_at: Instant::now(),
        };
        publisher.flush();
        publisher
    }

    /// Publishes `position` now if the last one is old enough, else soon.
    fn offer(&mut self, position: Position) {
        self.pending = Some(position);
        self.flush_if_due();
    }

    /// How long until a pending position is due, if one waits.
    fn due_in(&self) -> Option<Duration> {
        self.pending
            .map(|_| CURSOR_EVERY.saturating_sub(self.published_at.elapsed()))
    }

    fn flush_if_due(&mut self) {
        if self.due_in().is_some_and(|due| due.is_zero()) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let Some(position) = self.pending.take() else {
            return;
        };
        self.published_at = Instant::now();
        if let Err(e) = self
            .file
            .store(&Cursor::new(position, ()), Durability::PageCache)
        {
            warn!(error = %e, "Cannot publish the processor's cursor; the collector keeps its segments longer.");
        }
    }
}

/// Room for the fields a processed record usually ends with (the collected ones, the parsed
/// payload's, the derived ones), so the list grows once at most.
const COMMON_FIELD_COUNT: usize = 24;

/// The fields a collected line starts with, before any rule, put in `record` (empty).
fn collected_fields(collected: CollectedRecord<'_>, mut record: Fields) -> Fields {
    debug_assert!(record.is_empty());
    record.insert(field::name::ID, collected.id.into_owned().into());
    record.insert(
        field::name::SOURCE_FILE,
        collected.source.into_owned().into(),
    );
    record.insert(
        field::name::COLLECTED_AT,
        collected.collected_at.into_owned().into(),
    );
    record.insert(field::name::LINE, collected.line.into_owned().into());
    for (flag, set) in [
        ("partial", collected.partial),
        ("split", collected.split),
        ("invalid_utf8", collected.invalid_utf8),
        // Marks the source as a pushed service, not a file: the rules choose by it.
        (field::PUSHED, collected.pushed),
        (field::MALFORMED, collected.malformed),
    ] {
        if set {
            record.insert(flag, true.into());
        }
    }
    if let Some(stream) = collected.stream {
        record.insert(field::STREAM, stream.as_str().into());
    }
    if let Some(logged_at) = collected.logged_at {
        record.insert(field::LOGGED_AT, logged_at.into_owned().into());
    }
    if let Some(raw) = collected.line_base64 {
        record.insert("line_base64", raw.into());
    }
    record
}

/// Turns one collected journal line into a processed record, without multiline joining. A
/// line that does not decode is kept with its text and a `processing_error`, never dropped;
/// `None` when the rules drop the record.
pub fn enrich(rules: &RuleSet, line: &[u8], processed_at: &str) -> Option<Map<String, Value>> {
    enrich_fields(rules, line, processed_at).map(Fields::into_map)
}

/// As [`enrich`], the record's fields as the stage holds them (in insertion order;
/// `encode::write_fields_with` writes them in key order).
pub fn enrich_fields(rules: &RuleSet, line: &[u8], processed_at: &str) -> Option<Fields> {
    let mut record = match CollectedRecord::decode(line) {
        Ok(collected) => {
            let mut record = collected_fields(collected, Fields::with_capacity(COMMON_FIELD_COUNT));
            let matched = rules.rules_for_record(&record);
            if let Verdict::Drop(_) = rules.apply_matched(&matched, &mut record) {
                return None;
            }
            record
        }
        Err(e) => undecodable(line, &e),
    };
    record.insert(field::PROCESSED_AT, processed_at.into());
    Some(record)
}

/// The record of a journal line that does not decode: it has no source file to choose rules
/// by, so it skips them.
fn undecodable(line: &[u8], error: &DecodeError) -> Fields {
    let mut record = Fields::new();
    record.insert(field::SOURCE_FILE, "unknown".into());
    record.insert(
        field::LINE,
        String::from_utf8_lossy(line).into_owned().into(),
    );
    record.insert(
        field::PROCESSING_ERROR,
        format!("undecodable collected record: {error}").into(),
    );
    record.insert(field::LOG_CATEGORY, "unknown".into());
    record.insert(field::LOG_LEVEL, "INFO".into());
    record
}

/// The maps counts are kept in: foldhash, because SipHash on three keys per record was a tenth
/// of what the counting cost (before the [`Tally`]).
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Counts per source file, written to `processing_stats.json` every few seconds.
#[derive(Debug, Default, Serialize)]
pub struct ProcessingStats {
    records: u64,
    processing_errors: u64,
    /// Records the rules dropped, by reason.
    dropped: HashMap<String, u64>,
    /// Drops not yet in the metrics: source → reason → count.
    #[serde(skip)]
    unexported_drops: HashMap<String, HashMap<String, u64>>,
    sources: HashMap<String, SourceStats>,
    #[serde(skip)]
    unexported: HashMap<String, SourceStats>,
    #[serde(skip)]
    tally: Tally,
}

/// What a kept record is counted by.
struct RecordKind<'a> {
    source: &'a str,
    level: &'a str,
    category: &'a str,
    failed: bool,
}

/// Records counted since the counts by source were last brought up to date, by kind.
///
/// A batch holds few kinds of record (a source's records share their category and have a
/// handful of levels), so counting one is a comparison with the kind counted last, where
/// bumping the counts themselves took five hash lookups per record.
#[derive(Debug, Default)]
struct Tally {
    rows: Vec<TallyRow>,
    /// The row counted into last.
    last: usize,
}

#[derive(Debug)]
struct TallyRow {
    source: String,
    level: String,
    category: String,
    failed: bool,
    records: u64,
}

/// Kinds a tally holds before it is folded into the counts: the search for a kind is linear.
const TALLY_MAX_KINDS: usize = 64;

impl TallyRow {
    fn is(&self, kind: &RecordKind<'_>) -> bool {
        self.failed == kind.failed
            && self.level == kind.level
            && self.category == kind.category
            && self.source == kind.source
    }
}

impl Tally {
    /// Counts a record of `kind`; returns whether the tally is full and should be folded.
    fn add(&mut self, kind: &RecordKind<'_>) -> bool {
        if let Some(row) = self.rows.get_mut(self.last).filter(|row| row.is(kind)) {
            row.records += 1;
            return false;
        }
        match self.rows.iter().position(|row| row.is(kind)) {
            Some(i) => {
                self.rows[i].records += 1;
                self.last = i;
            }
            None => {
                self.last = self.rows.len();
                self.rows.push(TallyRow {
                    source: kind.source.to_owned(),
                    level: kind.level.to_owned(),
                    category: kind.category.to_owned(),
                    failed: kind.failed,
                    records: 1,
                });
            }
        }
        self.rows.len() >= TALLY_MAX_KINDS
    }
}

#[derive(Debug, Default, Serialize)]
struct SourceStats {
    records: u64,
    processing_errors: u64,
    levels: HashMap<String, u64>,
    categories: HashMap<String, u64>,
}

impl ProcessingStats {
    fn count_drop(&mut self, source: &str, reason: &str) {
        add_count(&mut self.dropped, reason, 1);
        let by_reason = match self.unexported_drops.get_mut(source) {
            Some(by_reason) => by_reason,
            None => self.unexported_drops.entry(source.to_owned()).or_default(),
        };
        add_count(by_reason, reason, 1);
    }

    fn count(&mut self, record: &Fields) {
        let text = |key| record.get(key).and_then(Value::as_str).unwrap_or("unknown");
        let kind = RecordKind {
            source: text(field::SOURCE_FILE),
            level: text(field::LOG_LEVEL),
            category: text(field::LOG_CATEGORY),
            failed: record.contains_key(field::PROCESSING_ERROR),
        };
        if self.tally.add(&kind) {
            self.fold_tally();
        }
    }

    /// Adds the tally's records to the counts by source, level and category.
    fn fold_tally(&mut self) {
        for row in self.tally.rows.drain(..) {
            let (n, failed) = (row.records, u64::from(row.failed) * row.records);
            self.records += n;
            self.processing_errors += failed;
            let stats = match self.sources.get_mut(&row.source) {
                Some(s) => s,
                None => self.sources.entry(row.source.clone()).or_default(),
            };
            stats.records += n;
            stats.processing_errors += failed;
            add_count(&mut stats.levels, &row.level, n);
            add_count(&mut stats.categories, &row.category, n);
            let unexported = match self.unexported.get_mut(&row.source) {
                Some(u) => u,
                None => self.unexported.entry(row.source).or_default(),
            };
            unexported.records += n;
            unexported.processing_errors += failed;
            add_count(&mut unexported.levels, &row.level, n);
        }
        self.tally.last = 0;
    }

    /// Whether some counts are not in the metrics yet.
    fn has_unexported(&self) -> bool {
        !self.tally.rows.is_empty()
            || !self.unexported.is_empty()
            || !self.unexported_drops.is_empty()
    }

    /// Adds what was counted since the last call to the metrics: at most every
    /// [`METRICS_EVERY`], because a metric lookup per record (or per batch) would cost more than
    /// the records' enrichment.
    fn export(&mut self, metrics: &Metrics) {
        self.fold_tally();
        for (source, by_reason) in self.unexported_drops.drain() {
            for (reason, n) in by_reason {
                metrics
                    .dropped
                    .get_or_create(&vec![
                        ("source".into(), source.clone()),
                        ("reason".into(), reason),
                    ])
                    .inc_by(n);
            }
        }
        for (source, counts) in self.unexported.drain() {
            for (level, n) in counts.levels {
                metrics
                    .records
                    .get_or_create(&vec![
                        ("source".into(), source.clone()),
                        ("level".into(), level),
                    ])
                    .inc_by(n);
            }
            if counts.processing_errors > 0 {
                metrics
                    .errors
                    .get_or_create(&vec![("source".into(), source)])
                    .inc_by(counts.processing_errors);
            }
        }
    }

    fn write(&mut self, file: &mut StatsFile, journal: &JournalWriter<ProcessorInput>) {
        self.fold_tally();
        #[derive(Serialize)]
        struct Report<'a> {
            records_committed: u64,
            unconsumed_bytes: u64,
            since_start: &'a ProcessingStats,
        }
        let report = Report {
            records_committed: journal.committed_records(),
            unconsumed_bytes: journal.unconsumed_bytes(),
            since_start: self,
        };
        if let Err(e) = file.refresh(&report) {
            warn!(error = %e, "Cannot refresh the stats file.");
        }
    }
}

fn add_count(counts: &mut HashMap<String, u64>, key: &str, n: u64) {
    match counts.get_mut(key) {
        Some(count) => *count += n,
        None => {
            counts.insert(key.to_owned(), n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_wait_is_the_earliest_of_poll_deadline_and_cursor() {
        let poll = Duration::from_secs(1);
        assert_eq!(idle_wait(poll, None, None), poll);
        let past = Instant::now() - Duration::from_secs(1);
        assert_eq!(idle_wait(poll, Some(past), None), Duration::ZERO);
        let soon = idle_wait(
            poll,
            Some(Instant::now() + Duration::from_millis(300)),
            None,
        );
        assert!(soon <= Duration::from_millis(300) && soon > Duration::from_millis(200));
        let cursor = Duration::from_millis(50);
        assert_eq!(idle_wait(poll, None, Some(cursor)), cursor);
    }

    #[test]
    fn a_commit_without_replay_still_loads_and_replay_redoes_only_waiting_records() {
        let old: ProcessorInput =
            serde_json::from_str(r#"{"position":{"segment":2,"offset":40}}"#).unwrap();
        assert_eq!((old.position.segment, old.replay), (2, None));
        let replay = Replay {
            end: Position {
                segment: 2,
                offset: 900,
            },
            pending: BTreeMap::from([("00ab".to_owned(), 120)]),
        };
        assert!(replay.redo(Some("00ab-120")) && replay.redo(Some("00ab-300")));
        assert!(
            !replay.redo(Some("00ab-60")),
            "delivered before the waiting record"
        );
        assert!(
            !replay.redo(Some("00cd-500")),
            "another file's record was delivered"
        );
        assert!(
            !replay.redo(None),
            "an undecodable line was delivered as it was"
        );
        let text = serde_json::to_string(&ProcessorInput {
            position: Position {
                segment: 2,
                offset: 40,
            },
            replay: Some(replay),
        })
        .unwrap();
        assert!(text.contains(r#""pending":{"00ab":120}"#), "{text}");
    }

    fn default_rules() -> RuleSet {
        RuleSet::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules/default.yaml"
        )))
        .unwrap()
    }

    #[test]
    fn records_are_counted_by_source_level_and_category_however_many_kinds_a_batch_holds() {
        let mut stats = ProcessingStats::default();
        let record = |source: String, level: &str, failed: bool| {
            let mut record = Fields::new();
            record.insert(field::SOURCE_FILE, source.into());
            record.insert(field::LOG_LEVEL, level.into());
            record.insert(field::LOG_CATEGORY, "access".into());
            if failed {
                record.insert(field::PROCESSING_ERROR, "bad".into());
            }
            record
        };
        // More kinds than a tally holds, each counted more than once, interleaved.
        for round in 0..3 {
            for i in 0..2 * TALLY_MAX_KINDS {
                let level = if i % 2 == 0 { "INFO" } else { "ERROR" };
                stats.count(&record(format!("f{}.log", i % 70), level, round == 2));
            }
        }
        stats.count(&Fields::new());
        let metrics = Metrics::default();
        stats.export(&metrics);
        assert_eq!(stats.records, 3 * 2 * TALLY_MAX_KINDS as u64 + 1);
        assert_eq!(stats.processing_errors, 2 * TALLY_MAX_KINDS as u64);
        let f0 = &stats.sources["f0.log"];
        // f0.log: i = 0 and 70 in each round, both even: INFO.
        assert_eq!((f0.records, f0.processing_errors), (6, 2));
        assert_eq!(f0.levels["INFO"], 6);
        assert_eq!(f0.categories["access"], 6);
        let f1 = &stats.sources["f1.log"];
        assert_eq!((f1.records, f1.levels["ERROR"]), (6, 6));
        assert_eq!(stats.sources["unknown"].levels["unknown"], 1);
        assert!(stats.tally.rows.is_empty() && stats.unexported.is_empty());
        let exported = metrics
            .records
            .get_or_create(&vec![
                ("source".into(), "f0.log".into()),
                ("level".into(), "INFO".into()),
            ])
            .get();
        assert_eq!(exported, 6);
    }

    #[test]
    fn a_collected_line_becomes_an_enriched_record_with_its_id() {
        let line = br#"{"id":"00000000000000ab-10","source":"access.log","offset":10,"collected_at":"2026-11-22T10:00:00.000Z","line":"2026-11-22 10:30:45,123 - {\"type\":\"response\",\"method\":\"GET\",\"path\":\"/users?page=2\",\"status_code\":503}"}"#;
        let record = enrich(&default_rules(), line, "now").expect("the default rules drop nothing");
        assert_eq!(record["id"], "00000000000000ab-10");
        assert_eq!(record["source_file"], "access.log");
        assert_eq!(record["collected_at"], "2026-11-22T10:00:00.000Z");
        assert_eq!(record["processed_at"], "now");
        assert_eq!(record["log_category"], "access");
        assert_eq!(record["status_category"], "server_error");
        assert_eq!(record["endpoint"], "/users");
    }

    /// Issue 11: a pushed record named like a watched file is not that file's. The same line
    /// as the tailed access.log record above, pushed as service `access.log`, runs only the
    /// common steps: no access rule, no category, and it says it was pushed.
    #[test]
    fn a_pushed_record_named_like_a_file_runs_none_of_that_files_rules() {
        let line = r#"{"id":"00000000000000ab-10","source":"access.log","offset":10,"collected_at":"2026-11-22T10:00:00.000Z","line":"2026-11-22 10:30:45,123 - {\"type\":\"response\",\"path\":\"/users?page=2\",\"status_code\":503}","pushed":true}"#;
        let rules = default_rules();
        let record =
            enrich(&rules, line.as_bytes(), "now").expect("the default rules drop nothing");
        assert_eq!(record["pushed"], true);
        assert_eq!(record["source_file"], "access.log");
        assert_eq!(
            record["status_code"], 503,
            "the common steps still parse it"
        );
        assert_eq!(record["log_category"], "unknown");
        assert_eq!(record["log_level"], "INFO");
        assert!(record.get("endpoint").is_none() && record.get("status_category").is_none());
        // The memo keeps the two apart in both orders.
        let tailed = line.replace(r#","pushed":true"#, "");
        let record =
            enrich(&rules, tailed.as_bytes(), "now").expect("the default rules drop nothing");
        assert_eq!(record["log_category"], "access");
        assert!(record.get("pushed").is_none());
        let record =
            enrich(&rules, line.as_bytes(), "now").expect("the default rules drop nothing");
        assert_eq!(record["log_category"], "unknown");
    }

    #[test]
    fn an_undecodable_collected_line_is_kept_with_an_error() {
        let record =
            enrich(&default_rules(), b"{not json", "now").expect("the default rules drop nothing");
        assert_eq!(record["line"], "{not json");
        assert!(record["processing_error"]
            .as_str()
            .unwrap()
            .starts_with("undecodable collected record"));
    }

    /// A journal written before the v2 record format is processed exactly as one written now:
    /// the same line in either format gives the same record.
    #[test]
    fn v1_and_v2_collected_records_give_the_same_processed_record() {
        use sidecar_record::{CollectedRecordOut, LineFlags, RecordId};
        let rules = default_rules();
        let id = RecordId {
            source_id: 0xab,
            offset: 10,
        };
        for (bytes, v1) in [
            (
                &b"2026-11-22 10:30:45,123 - {\"path\":\"/users?page=2\",\"status_code\":503}"[..],
                r#"{"id":"00000000000000ab-10","source":"access.log","offset":10,"collected_at":"2026-11-22T10:00:00.000Z","line":"2026-11-22 10:30:45,123 - {\"path\":\"/users?page=2\",\"status_code\":503}","partial":true}"#,
            ),
            (
                b"a\xff",
                r#"{"id":"00000000000000ab-10","source":"access.log","offset":10,"collected_at":"2026-11-22T10:00:00.000Z","line":"a\ufffd","partial":true,"invalid_utf8":true,"line_base64":"Yf8="}"#,
            ),
        ] {
            let flags = LineFlags {
                partial: true,
                split: false,
                ..LineFlags::default()
            };
            let mut v2 = Vec::new();
            CollectedRecordOut::new(id, "access.log", "2026-11-22T10:00:00.000Z", bytes, flags)
                .write(&mut v2);
            assert_eq!(
                enrich(&rules, &v2, "now"),
                enrich(&rules, v1.as_bytes(), "now"),
                "{}",
                String::from_utf8_lossy(&v2)
            );
        }
    }

    #[test]
    fn a_container_line_gets_its_stream_and_runtime_time_and_rules_can_match_on_them() {
        use sidecar_record::{CollectedRecordOut, ContainerOrigin, LineFlags, RecordId, Stream};
        let rules = RuleSet::from_yaml_str(
            "version: 1\nrules:\n  - name: errors\n    files: ['*.log']\n    steps:\n      - set: {field: log_level, value: ERROR, when: {field: stream, equals: [stderr]}}\n",
            "inline.yaml",
        )
        .unwrap();
        let id = RecordId {
            source_id: 1,
            offset: 0,
        };
        for (stream, level) in [(Stream::Stderr, "ERROR"), (Stream::Stdout, "INFO")] {
            let origin = ContainerOrigin {
                stream,
                logged_at: "2026-12-06T10:30:45.123456789Z",
            };
            let mut v2 = Vec::new();
            CollectedRecordOut::new(id, "app.log", "t", b"hello", LineFlags::default())
                .from_container(origin)
                .write(&mut v2);
            let record = enrich(&rules, &v2, "now").unwrap();
            assert_eq!(record["stream"], stream.as_str());
            assert_eq!(record["logged_at"], origin.logged_at);
            assert_eq!(record["log_level"], level);
        }
    }

    #[test]
    fn invalid_utf8_flags_travel_on() {
        let line = br#"{"id":"1-0","source":"x.log","offset":0,"collected_at":"t","line":"a\ufffd","invalid_utf8":true,"line_base64":"Yf8="}"#;
        let record = enrich(&default_rules(), line, "now").expect("the default rules drop nothing");
        assert_eq!(record["invalid_utf8"], true);
        assert_eq!(record["line_base64"], "Yf8=");
    }
}
