//! The processor: reads the collected journal, enriches each line by the rules of its source
//! file, and commits the processed records to its own journal.
//!
//! Easy to get wrong: the input position. Where the processor stood in the collected journal
//! is saved in the same atomic commit as the records it produced, never separately; the cursor
//! it publishes for the collector's retention is a copy written only after that commit.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sidecar_core::checkpoint::{self, Durability};
use sidecar_core::config::{ByteSize, HumanDuration};
use sidecar_core::journal::{Cursor, JournalOptions, JournalReader, JournalWriter, Position};
use sidecar_core::record::{field, timestamp_now, CollectedRecord};
use sidecar_core::rules::RuleSet;
use sidecar_core::signal::{self, DirWatcher, Wakeup};
use sidecar_core::telemetry::{self, Health};
use tracing::{info, warn};

pub mod tools;

pub use tools::Tool;

/// The name this stage publishes its cursor under in the collected journal.
pub const READER_NAME: &str = "processor";
/// The name the forwarder publishes its cursor under in the processed journal.
pub const DOWNSTREAM_READER: &str = "forwarder";
const STATS_FILE: &str = "processing_stats.json";

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
}

/// Checked runtime settings of the processor.
#[derive(Debug)]
pub struct ProcessorConfig {
    /// The compiled rules.
    pub rules: RuleSet,
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
    /// Input bytes per batch at most (default 4 MiB).
    pub batch_max_bytes: usize,
    /// How long to let the collector's commits gather after a wake (default 10 ms).
    pub linger: Duration,
    /// The periodic check that backs up inotify (default 1 s).
    pub poll_interval: Duration,
}

impl StageArgs {
    /// Loads the rules and checks the flags.
    ///
    /// # Errors
    /// A message naming the file, rule and field, or the flag, and what is wrong.
    pub fn into_config(self) -> anyhow::Result<ProcessorConfig> {
        let rules = load_rules(&self.rules)?;
        Ok(ProcessorConfig {
            rules,
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
            batch_max_bytes: 4 << 20,
            linger: Duration::from_millis(10),
            poll_interval: Duration::from_secs(1),
        })
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
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcessorInput {
    /// Everything before this position of the collected journal is in the processed journal.
    pub position: Position,
}

#[derive(Debug, Clone, Default)]
struct Metrics {
    records: Family<Vec<(String, String)>, Counter>,
    errors: Family<Vec<(String, String)>, Counter>,
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
    let bound = telemetry::serve(config.listen, registry, health.clone()).await?;
    let start = input.unwrap_or_default().position;
    info!(listen = %bound, rules = config.rules.origin(), input = %config.input_dir.display(), segment = start.segment, offset = start.offset, "Processor started.");
    let wakeup = Wakeup::new();
    let loop_wakeup = wakeup.clone();
    signal::run_stage("processor", wakeup, config.grace, shutdown, move || {
        let reader = JournalReader::new(&config.input_dir, start);
        process(&config, journal, reader, &metrics, &loop_wakeup, &health)
    })
    .await
}

fn process(
    config: &ProcessorConfig,
    journal: JournalWriter<ProcessorInput>,
    reader: JournalReader,
    metrics: &Metrics,
    wakeup: &Wakeup,
    health: &Health,
) -> anyhow::Result<()> {
    let mut watcher = DirWatcher::start([config.input_dir.as_path()], wakeup);
    let mut watching = config.input_dir.is_dir();
    let mut stage = Stage {
        config,
        journal,
        reader,
        metrics,
        stats: ProcessingStats::default(),
        buf: Vec::new(),
        warned_behind: false,
    };
    let mut stats_at = Instant::now();
    publish_cursor(&config.input_dir, stage.reader.position());
    while !wakeup.is_stopping() {
        health.beat();
        if !watching && config.input_dir.is_dir() {
            watching = watcher.add(&config.input_dir);
        }
        let more = !stage.journal.is_backpressured() && stage.process_available()?;
        if stats_at.elapsed() >= Duration::from_secs(5) {
            stage.stats.write(&config.journal_dir, &stage.journal);
            stats_at = Instant::now();
        }
        if more {
            continue;
        }
        if wakeup.wait(config.poll_interval) || wakeup.sleep(config.linger) {
            break;
        }
    }
    // The collector stops before us (native sidecar order), so what it committed is final:
    // carry it into our journal before exiting, within the grace period.
    while stage.process_available()? {
        health.beat();
    }
    stage.stats.write(&config.journal_dir, &stage.journal);
    Ok(())
}

struct Stage<'a> {
    config: &'a ProcessorConfig,
    journal: JournalWriter<ProcessorInput>,
    reader: JournalReader,
    metrics: &'a Metrics,
    stats: ProcessingStats,
    buf: Vec<u8>,
    warned_behind: bool,
}

impl Stage<'_> {
    /// Processes and commits one batch of what the collector committed. Returns whether more
    /// is waiting.
    fn process_available(&mut self) -> anyhow::Result<bool> {
        let Some(end) = self.reader.committed_end()? else {
            return Ok(false);
        };
        if end < self.reader.position() {
            if !std::mem::replace(&mut self.warned_behind, true) {
                warn!(committed = ?end, ours = ?self.reader.position(), "The collected journal ends before our committed position (was its volume replaced?); waiting for it to pass us.");
            }
            return Ok(false);
        }
        if self
            .reader
            .read_batch(end, self.config.batch_max_bytes, &mut self.buf)?
            > 0
        {
            process_batch(
                &self.config.rules,
                &self.buf,
                &mut self.journal,
                &mut self.stats,
                self.metrics,
            );
            let position = self.reader.position();
            self.journal
                .commit(&ProcessorInput { position })
                .context("committing to the processed journal")?;
            publish_cursor(&self.config.input_dir, position);
        }
        Ok(self.reader.position() < end)
    }
}

/// Tells the collector how far we consumed, after our own commit made it true.
fn publish_cursor(input_dir: &Path, position: Position) {
    if let Err(e) = Cursor::new(position, ()).store(input_dir, READER_NAME, Durability::PageCache) {
        warn!(error = %e, "Cannot publish the processor's cursor; the collector keeps its segments longer.");
    }
}

/// Enriches every collected record in `batch` (NDJSON) into `journal`'s pending batch.
fn process_batch(
    rules: &RuleSet,
    batch: &[u8],
    journal: &mut JournalWriter<ProcessorInput>,
    stats: &mut ProcessingStats,
    metrics: &Metrics,
) {
    let processed_at = timestamp_now();
    for line in batch.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let record = enrich(rules, line, &processed_at);
        stats.count(&record);
        journal.push(&record);
    }
    stats.export(metrics);
}

/// Turns one collected journal line into a processed record. A line that does not decode is
/// kept with its text and a `processing_error`, never dropped.
pub fn enrich(rules: &RuleSet, line: &[u8], processed_at: &str) -> Map<String, Value> {
    let mut record = Map::new();
    match serde_json::from_slice::<CollectedRecord>(line) {
        Ok(collected) => {
            record.insert(field::ID.into(), collected.id.into());
            record.insert(field::SOURCE_FILE.into(), collected.source.clone().into());
            record.insert(field::COLLECTED_AT.into(), collected.collected_at.into());
            record.insert(field::LINE.into(), collected.line.into());
            for (flag, set) in [
                ("partial", collected.partial),
                ("split", collected.split),
                ("invalid_utf8", collected.invalid_utf8),
            ] {
                if set {
                    record.insert(flag.into(), true.into());
                }
            }
            if let Some(raw) = collected.line_base64 {
                record.insert("line_base64".into(), raw.into());
            }
            rules.apply(&collected.source, &mut record);
        }
        Err(e) => {
            record.insert(field::SOURCE_FILE.into(), "unknown".into());
            record.insert(
                field::LINE.into(),
                String::from_utf8_lossy(line).into_owned().into(),
            );
            record.insert(
                field::PROCESSING_ERROR.into(),
                format!("undecodable collected record: {e}").into(),
            );
            record.insert(field::LOG_CATEGORY.into(), "unknown".into());
            record.insert(field::LOG_LEVEL.into(), "INFO".into());
        }
    }
    record.insert(field::PROCESSED_AT.into(), processed_at.into());
    record
}

/// Counts per source file, written to `processing_stats.json` every few seconds.
#[derive(Debug, Default, Serialize)]
pub struct ProcessingStats {
    records: u64,
    processing_errors: u64,
    sources: HashMap<String, SourceStats>,
    #[serde(skip)]
    unexported: HashMap<String, SourceStats>,
}

#[derive(Debug, Default, Serialize)]
struct SourceStats {
    records: u64,
    processing_errors: u64,
    levels: HashMap<String, u64>,
    categories: HashMap<String, u64>,
}

impl ProcessingStats {
    fn count(&mut self, record: &Map<String, Value>) {
        let text = |key| record.get(key).and_then(Value::as_str).unwrap_or("unknown");
        let (source, level, category) = (
            text(field::SOURCE_FILE),
            text(field::LOG_LEVEL),
            text(field::LOG_CATEGORY),
        );
        let failed = record.contains_key(field::PROCESSING_ERROR);
        self.records += 1;
        self.processing_errors += u64::from(failed);
        let stats = match self.sources.get_mut(source) {
            Some(s) => s,
            None => self.sources.entry(source.to_owned()).or_default(),
        };
        stats.records += 1;
        stats.processing_errors += u64::from(failed);
        bump(&mut stats.levels, level);
        bump(&mut stats.categories, category);
        let unexported = match self.unexported.get_mut(source) {
            Some(u) => u,
            None => self.unexported.entry(source.to_owned()).or_default(),
        };
        unexported.records += 1;
        unexported.processing_errors += u64::from(failed);
        bump(&mut unexported.levels, level);
    }

    /// Adds what was counted since the last call to the metrics: once per batch, because a
    /// metric lookup per record would cost more than the record's enrichment.
    fn export(&mut self, metrics: &Metrics) {
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

    fn write(&self, dir: &Path, journal: &JournalWriter<ProcessorInput>) {
        #[derive(Serialize)]
        struct File<'a> {
            updated_at: String,
            records_committed: u64,
            unconsumed_bytes: u64,
            since_start: &'a ProcessingStats,
        }
        let file = File {
            updated_at: timestamp_now(),
            records_committed: journal.committed_records(),
            unconsumed_bytes: journal.unconsumed_bytes(),
            since_start: self,
        };
        if let Err(e) = checkpoint::store_json(&dir.join(STATS_FILE), &file, Durability::PageCache)
        {
            warn!(error = %e, "Cannot refresh the stats file.");
        }
    }
}

fn bump(counts: &mut HashMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_rules() -> RuleSet {
        RuleSet::load(Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/rules/default.yaml"
        )))
        .unwrap()
    }

    #[test]
    fn a_collected_line_becomes_an_enriched_record_with_its_id() {
        let line = br#"{"id":"00000000000000ab-10","source":"access.log","offset":10,"collected_at":"2026-11-22T10:00:00.000Z","line":"2026-11-22 10:30:45,123 - {\"type\":\"response\",\"method\":\"GET\",\"path\":\"/users?page=2\",\"status_code\":503}"}"#;
        let record = enrich(&default_rules(), line, "now");
        assert_eq!(record["id"], "00000000000000ab-10");
        assert_eq!(record["source_file"], "access.log");
        assert_eq!(record["collected_at"], "2026-11-22T10:00:00.000Z");
        assert_eq!(record["processed_at"], "now");
        assert_eq!(record["log_category"], "access");
        assert_eq!(record["status_category"], "server_error");
        assert_eq!(record["endpoint"], "/users");
    }

    #[test]
    fn an_undecodable_collected_line_is_kept_with_an_error() {
        let record = enrich(&default_rules(), b"{not json", "now");
        assert_eq!(record["line"], "{not json");
        assert!(record["processing_error"]
            .as_str()
            .unwrap()
            .starts_with("undecodable collected record"));
    }

    #[test]
    fn invalid_utf8_flags_travel_on() {
        let line = br#"{"id":"1-0","source":"x.log","offset":0,"collected_at":"t","line":"a\ufffd","invalid_utf8":true,"line_base64":"Yf8="}"#;
        let record = enrich(&default_rules(), line, "now");
        assert_eq!(record["invalid_utf8"], true);
        assert_eq!(record["line_base64"], "Yf8=");
    }
}
