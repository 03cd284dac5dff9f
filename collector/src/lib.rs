//! The collector: tails the application's log files and commits complete lines, with their
//! file offsets, into the collected journal.
//!
//! Easy to get wrong: the tailer's offsets are the journal's input position. They are saved in
//! the same atomic commit as the records they produced, never separately, so a restart resumes
//! exactly after the last committed line. (With many files the commit names a list of them
//! written before it, and carries only the files changed since: see [`file_list`].)

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;
use serde::Serialize;
use sidecar_common::checkpoint::{Durability, StatsFile};
use sidecar_common::config::{ByteSize, HumanDuration};
use sidecar_common::signal::{self, Background, DirWatcher, Wakeup};
use sidecar_common::telemetry::{self, Health};
use sidecar_journal::{JournalOptions, JournalWriter};
use sidecar_record::timestamp_now;
use sidecar_source::{
    PendingLine, ReadOutcome, SavedFile, SourceMetrics, SourceSpec, TailOptions, Tailer,
};
use tracing::info;

use crate::file_list::{CommittedPosition, FileBook};

pub mod file_list;
pub mod ingest;

/// The name the processor publishes its cursor under in the collected journal.
pub const DOWNSTREAM_READER: &str = "processor";
const STATS_FILE: &str = "collection_stats.json";
/// Log bytes read per commit at most. The read buffer and the journal's write buffer keep the
/// room of the largest commit: through a backlog, 4 MiB made the peak RSS 14.6 MiB, 1 MiB
/// makes it 10, with fewer pages to fault in (BENCHMARKS.md, "One mebibyte per batch").
const BATCH_MAX_BYTES: u64 = 1 << 20;

/// Command-line flags; each also reads an environment variable.
#[derive(Debug, Parser)]
#[command(
    name = "collector",
    version,
    about = "Tails log files into the collected journal."
)]
pub struct Cli {
    /// Globs of files to tail, comma-separated, each optionally prefixed with its lines'
    /// format (`raw:` default, `cri:`, `docker:`, `auto:`). Wildcards may stand for whole
    /// directory levels of an absolute pattern (`cri:/var/log/pods/*/*/*.log`, node mode);
    /// a file's source name is then its path below the literal part, else its file name.
    #[arg(
        long,
        env = "COLLECTOR_WATCH",
        value_delimiter = ',',
        default_value = "/logs/*.log"
    )]
    pub watch: Vec<String>,
    /// Globs to leave out, matched against the full path, the source name and the file name.
    #[arg(long, env = "COLLECTOR_EXCLUDE", value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Where the collected journal (and its commit, which holds the file offsets) lives.
    #[arg(long, env = "COLLECTOR_JOURNAL_DIR", default_value = "/collected-logs")]
    pub journal_dir: PathBuf,
    /// Address for GET /healthz and GET /metrics.
    #[arg(long, env = "COLLECTOR_LISTEN", default_value = "0.0.0.0:9101")]
    pub listen: SocketAddr,
    /// Time allowed to commit and exit after SIGTERM; keep it below the pod's grace period.
    #[arg(long, env = "COLLECTOR_GRACE_PERIOD", default_value = "8s")]
    pub grace_period: HumanDuration,
    /// How long to let writes gather after a wake before the files are read: longer means
    /// fewer reads, shorter less latency (when lines are committed: --commit-min-bytes).
    #[arg(long, env = "COLLECTOR_LINGER", default_value = "10ms", value_parser = HumanDuration::parse_linger)]
    pub linger: HumanDuration,
    /// A read that leaves fewer lines than this (in journal bytes) waiting is not committed
    /// yet: the next reads add to it, up to --commit-max-wait. A commit costs about what a
    /// hundred records do (a device flush, a wake of each stage downstream), so a trickle
    /// of lines committed one by one cost more than a flood. 0 commits every read.
    #[arg(long, env = "COLLECTOR_COMMIT_MIN_BYTES", default_value = "8KiB")]
    pub commit_min_bytes: ByteSize,
    /// The longest a line read waits for others before it is committed (at most 1s).
    #[arg(long, env = "COLLECTOR_COMMIT_MAX_WAIT", default_value = "100ms", value_parser = HumanDuration::parse_linger)]
    pub commit_max_wait: HumanDuration,
    /// Lines longer than this are split into flagged pieces.
    #[arg(long, env = "COLLECTOR_MAX_LINE_BYTES", default_value = "1MiB")]
    pub max_line_bytes: ByteSize,
    /// Emit an unterminated last line, flagged partial, after the file was idle this long
    /// ("off" waits for the newline forever).
    #[arg(long, env = "COLLECTOR_PARTIAL_LINE_TIMEOUT", default_value = "60s")]
    pub partial_line_timeout: String,
    /// A rotated or deleted file is closed once read to its end and idle this long.
    #[arg(long, env = "COLLECTOR_ROTATED_CLOSE_AFTER", default_value = "5s")]
    pub rotated_close_after: HumanDuration,
    /// Pause reading when the processor lags by more than this.
    #[arg(long, env = "COLLECTOR_MAX_UNCONSUMED", default_value = "128MiB")]
    pub max_unconsumed: ByteSize,
    /// Keep consumed journal segments up to this total size ...
    #[arg(long, env = "COLLECTOR_RETENTION_BYTES", default_value = "32MiB")]
    pub retention_bytes: ByteSize,
    /// ... and this age.
    #[arg(long, env = "COLLECTOR_RETENTION_AGE", default_value = "1h")]
    pub retention_age: HumanDuration,
    /// fsync every commit (survives a node crash); false leaves it to the page cache, which
    /// survives a container crash.
    #[arg(long, env = "COLLECTOR_FSYNC", default_value_t = true, action = clap::ArgAction::Set)]
    pub fsync: bool,
    /// Log filter, e.g. info or debug.
    #[arg(long, env = "COLLECTOR_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "COLLECTOR_LOG_JSON")]
    pub log_json: bool,
    /// Serve POST /logs (JSON or NDJSON records) on this address, e.g. 0.0.0.0:9105; off when
    /// not given.
    #[arg(long, env = "COLLECTOR_INGEST_LISTEN")]
    pub ingest_listen: Option<SocketAddr>,
    /// Larger ingest bodies are refused with 413; a gzip body's decoded size is held to it too.
    #[arg(long, env = "COLLECTOR_INGEST_MAX_BODY", default_value = "1MiB")]
    pub ingest_max_body: ByteSize,
    /// Ingest requests with more records are refused with 413.
    #[arg(long, env = "COLLECTOR_INGEST_MAX_RECORDS", default_value_t = ingest::DEFAULT_MAX_RECORDS)]
    pub ingest_max_records: u64,
    /// Memory all ingest requests being read, prepared or waiting for their commit may hold;
    /// past it a request waits up to 2 s, then gets 503 with Retry-After.
    #[arg(long, env = "COLLECTOR_INGEST_MAX_INFLIGHT", default_value = "16MiB")]
    pub ingest_max_inflight: ByteSize,
    /// File of bearer tokens, one per line (a mounted Secret; re-read when it changes): ingest
    /// requests then need `Authorization: Bearer <one of them>`. Without it, --ingest-listen
    /// must be a loopback address unless --ingest-anonymous is given.
    #[arg(long, env = "COLLECTOR_INGEST_TOKEN_FILE")]
    pub ingest_token_file: Option<PathBuf>,
    /// Accept ingest requests without a token on an address other than loopback.
    #[arg(long, env = "COLLECTOR_INGEST_ANONYMOUS")]
    pub ingest_anonymous: bool,
    /// An ingest request whose records the journal did not take this long (backpressure) is
    /// answered 503 and its records dropped.
    #[arg(long, env = "COLLECTOR_INGEST_ACK_TIMEOUT", default_value = "30s")]
    pub ingest_ack_timeout: HumanDuration,
}

/// Checked runtime settings of the collector.
#[derive(Debug, Clone)]
pub struct CollectorConfig {
    /// Which files to tail.
    pub spec: SourceSpec,
    /// How to read them.
    pub tail: TailOptions,
    /// The output journal.
    pub journal_dir: PathBuf,
    /// How the journal is written and kept.
    pub journal: JournalOptions,
    /// Health and metrics address.
    pub listen: SocketAddr,
    /// Shutdown budget.
    pub grace: Duration,
    /// Bytes read per commit at most (default [`BATCH_MAX_BYTES`]): bounds memory and commit
    /// latency.
    pub batch_max_bytes: u64,
    /// How long to let writes gather after a wake before reading (default 10 ms): one read
    /// then carries many lines, and the app's writes wake nobody meanwhile.
    pub linger: Duration,
    /// When lines read are committed.
    pub commit: CommitPolicy,
    /// The slow periodic rescan that backs up inotify (default 1 s).
    pub rescan_interval: Duration,
    /// The ingest endpoint, when enabled.
    pub ingest: Option<ingest::IngestOptions>,
}

impl Cli {
    /// Checks the flags and builds the runtime config.
    ///
    /// # Errors
    /// A message naming the flag and what is wrong.
    pub fn into_config(self) -> anyhow::Result<CollectorConfig> {
        let spec = SourceSpec::compile(&self.watch, &self.exclude).context("--watch/--exclude")?;
        let partial_line_timeout = match self.partial_line_timeout.trim() {
            "off" | "never" | "0" => None,
            text => Some(
                text.parse::<HumanDuration>()
                    .map_err(|e| anyhow::anyhow!("--partial-line-timeout: {e}"))?
                    .0,
            ),
        };
        anyhow::ensure!(
            self.max_line_bytes.0 >= 64,
            "--max-line-bytes: must be at least 64 bytes, got {}",
            self.max_line_bytes
        );
        let batch_max_bytes = BATCH_MAX_BYTES;
        anyhow::ensure!(
            self.commit_min_bytes.0 <= batch_max_bytes / 2,
            "--commit-min-bytes: must be at most {} (half a batch), got {}",
            ByteSize(batch_max_bytes / 2),
            self.commit_min_bytes
        );
        let ingest = match self.ingest_listen {
            Some(listen) => {
                let limits = ingest::IngestLimits::try_new(
                    self.ingest_max_body,
                    self.ingest_max_records,
                    self.ingest_max_inflight,
                )?;
                let watched = ingest::WatchedNames::compile(&self.watch)?;
                Some(ingest::IngestOptions {
                    ack_timeout: self.ingest_ack_timeout.0,
                    ..ingest::IngestOptions::load(
                        listen,
                        limits,
                        self.ingest_token_file.as_deref(),
                        self.ingest_anonymous,
                        watched,
                    )?
                })
            }
            None => None,
        };
        Ok(CollectorConfig {
            ingest,
            spec,
            tail: TailOptions {
                max_line_bytes: self.max_line_bytes.0 as usize,
                rotated_close_after: self.rotated_close_after.0,
                partial_line_timeout,
                ..TailOptions::default()
            },
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
            batch_max_bytes,
            linger: self.linger.0,
            commit: CommitPolicy {
                min_bytes: self.commit_min_bytes.0 as usize,
                max_wait: self.commit_max_wait.0,
            },
            rescan_interval: Duration::from_secs(1),
        })
    }
}

/// Runs the collector until `shutdown` resolves, then commits and returns.
///
/// # Errors
/// When the journal cannot be opened or written, or the listen address is taken.
pub async fn run(
    config: CollectorConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut registry = Registry::default();
    let source_metrics = SourceMetrics::default();
    source_metrics.register(&mut registry);
    let (journal, committed) =
        JournalWriter::<CommittedPosition>::open(&config.journal_dir, config.journal.clone())
            .with_context(|| {
                format!(
                    "opening the collected journal in {}",
                    config.journal_dir.display()
                )
            })?;
    let (book, position) =
        FileBook::open(&config.journal_dir, config.journal.durability, committed)?;
    journal.metrics().register("collector", &mut registry);
    let wakeup = Wakeup::new();
    let background = Background::default();
    let inbox = match &config.ingest {
        Some(options) => {
            let metrics = ingest::IngestMetrics::default();
            metrics.register(&mut registry);
            let dir = &config.journal_dir;
            Some(
                ingest::serve(options.clone(), dir, wakeup.clone(), metrics, &background)
                    .await?
                    .0,
            )
        }
        None => None,
    };
    let health = Health::new(Duration::from_secs(60));
    let bound = telemetry::serve(config.listen, registry, health.clone(), &background).await?;
    info!(listen = %bound, journal = %config.journal_dir.display(), resumed = position.is_some(), "Collector started.");
    let tailer = Tailer::new(
        config.spec.clone(),
        config.tail.clone(),
        position,
        source_metrics,
    );
    let loop_wakeup = wakeup.clone();
    let result = signal::run_stage("collector", wakeup, config.grace, shutdown, move || {
        collect(
            &config,
            (journal, book),
            tailer,
            inbox,
            &loop_wakeup,
            &health,
        )
    })
    .await;
    background.stop(signal::BACKGROUND_STOP).await;
    result
}

/// What `collection_stats.json` reports, refreshed every few seconds when it changed.
#[derive(Debug, Serialize)]
struct CollectionStats<'a> {
    records_committed: u64,
    unconsumed_bytes: u64,
    backpressured: bool,
    files: FilesReport<'a>,
}

/// The files of a [`sidecar_source::TailPosition`] without the time it was taken, which
/// changes at every look: the stats file is rewritten only when what it reports changed.
#[derive(Debug, Serialize)]
struct FilesReport<'a> {
    files: &'a [SavedFile],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    finished: &'a [SavedFile],
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pending: &'a BTreeMap<String, Vec<PendingLine>>,
}

fn collect(
    config: &CollectorConfig,
    (mut journal, mut book): (JournalWriter<CommittedPosition>, FileBook),
    mut tailer: Tailer,
    mut inbox: Option<ingest::Inbox>,
    wakeup: &Wakeup,
    health: &Health,
) -> anyhow::Result<()> {
    let dirs = tailer.watch_dirs().iter().map(PathBuf::as_path);
    let mut watcher = DirWatcher::start_with(dirs, wakeup, tailer.early_opener());
    tailer.set_unwatched_dirs(watcher.unwatched());
    let mut stats_at = Instant::now();
    let mut stats_file = StatsFile::new(config.journal_dir.join(STATS_FILE));
    let mut backpressured = false;
    let mut batch = Batch::new(config.commit.clone());
    while !wakeup.is_stopping() {
        health.beat();
        tailer.rescan_when_due(config.rescan_interval);
        follow_dirs(&mut watcher, &mut tailer);
        backpressured = journal.is_backpressured();
        let mut ingest_waiting = false;
        if let (Some(inbox), false) = (inbox.as_mut(), backpressured) {
            ingest_waiting = inbox.take(&mut journal, &timestamp_now())?;
        }
        // A client waits for the commit of what it pushed: no gathering then.
        let commit_now = inbox.as_ref().is_some_and(ingest::Inbox::awaits_commit);
        let read = if backpressured {
            ReadOutcome::default()
        } else {
            read(config, &mut journal, &mut tailer)
        };
        let changed = tailer.take_changed();
        let pending = (journal.pending_records(), journal.pending_bytes());
        if batch.is_due(Instant::now(), pending, changed || commit_now) {
            commit((&mut journal, &mut book), &mut tailer, &mut batch, wakeup)?;
            if let Some(inbox) = inbox.as_mut() {
                inbox.committed();
            }
        }
        if stats_at.elapsed() >= Duration::from_secs(5) {
            write_stats(&mut stats_file, &journal, &mut tailer, backpressured);
            stats_at = Instant::now();
        }
        if read.more || ingest_waiting {
            continue;
        }
        if read.bytes > 0 {
            // Lines are coming in: the loop comes back after its linger for the next ones
            // anyway, so appends meanwhile need not wake the watch thread (one wake-up per
            // write of the app).
            watcher.follow_appends(false);
            let next_read =
                batch.next_read_in(Instant::now(), config.linger, journal.pending_bytes());
            if wakeup.sleep(next_read) {
                break;
            }
            continue;
        }
        if !watcher.follows_appends() {
            // Quiet again: follow appends, then read once more, so that lines appended before
            // the watch was back are not left until the next one.
            watcher.follow_appends(true);
            tailer.look_at_every_file();
            continue;
        }
        let wait = if backpressured {
            Duration::from_millis(200)
        } else {
            tailer.quiet_wait(config.rescan_interval)
        };
        if wakeup.wait(batch.wait_at_most(Instant::now(), wait)) || wakeup.sleep(config.linger) {
            break;
        }
        // Woken from a quiet wait: no file is busy, so the next read looks at each.
        tailer.look_at_every_file();
    }
    // In the pod the apps stop before the sidecars, so what the files hold now is final: read
    // it to the end once and commit it before exiting, within the grace period.
    tailer.rescan();
    loop {
        let read = read(config, &mut journal, &mut tailer);
        if tailer.take_changed() || journal.pending_records() > 0 {
            commit((&mut journal, &mut book), &mut tailer, &mut batch, wakeup)?;
        }
        health.beat();
        if !read.more {
            break;
        }
    }
    write_stats(&mut stats_file, &journal, &mut tailer, backpressured);
    Ok(())
}

/// When lines read are committed: a commit has a fixed cost (a device flush, a wake of
/// each stage downstream, about what a hundred records cost), so the lines of a trickle are
/// gathered over several reads into one commit, for `max_wait` at most.
#[derive(Debug, Clone)]
pub struct CommitPolicy {
    /// Pending journal bytes that are worth a commit at once.
    pub min_bytes: usize,
    /// The longest the first pending line waits.
    pub max_wait: Duration,
}

/// The pending batch's age, against the [`CommitPolicy`].
struct Batch {
    policy: CommitPolicy,
    /// When the first line of the pending batch was read.
    pending_since: Option<Instant>,
}

impl Batch {
    fn new(policy: CommitPolicy) -> Self {
        Self {
            policy,
            pending_since: None,
        }
    }

    /// Whether to commit the pending (records, bytes) at `now`: a batch worth its cost or old
    /// enough, or `anyway` (an input position that changed without lines, a client that
    /// waits).
    fn is_due(&mut self, now: Instant, (records, bytes): (u64, usize), anyway: bool) -> bool {
        if records == 0 {
            self.pending_since = None;
            return anyway;
        }
        let since = *self.pending_since.get_or_insert(now);
        anyway || bytes >= self.policy.min_bytes || now - since >= self.policy.max_wait
    }

    /// `wait`, or less when pending lines are due sooner.
    fn wait_at_most(&self, now: Instant, wait: Duration) -> Duration {
        self.pending_since.map_or(wait, |since| {
            wait.min(self.policy.max_wait.saturating_sub(now - since))
        })
    }

    /// How long the loop may sleep before the next read while lines keep coming: `linger`,
    /// or, while a pending batch grows, until it is worth a commit at the pace it grew so far
    /// (a trickle of lines is then read twice or three times a commit, not every `linger`),
    /// never past its `max_wait`.
    fn next_read_in(&self, now: Instant, linger: Duration, pending_bytes: usize) -> Duration {
        let Some(since) = self.pending_since else {
            return linger;
        };
        let age = now - since;
        let missing = self.policy.min_bytes.saturating_sub(pending_bytes);
        let to_fill = age.mul_f64(missing as f64 / pending_bytes.max(1) as f64);
        linger
            .max(to_fill)
            .min(self.policy.max_wait.saturating_sub(age))
    }

    fn committed(&mut self) {
        self.pending_since = None;
    }
}

/// Keeps the watch on the directories the tailer lists: with wildcard directories they come
/// and go (a pod's, in node mode).
fn follow_dirs(watcher: &mut DirWatcher, tailer: &mut Tailer) {
    if !tailer.take_watch_dirs_changed() {
        return;
    }
    let change = watcher.watch_exactly(tailer.watch_dirs());
    tailer.set_unwatched_dirs(watcher.unwatched());
    if change.added > 0 {
        tailer.request_rescan();
    }
}

/// Reads lines from the files into the journal's pending batch, as many as keep it within
/// one batch's bytes.
fn read(
    config: &CollectorConfig,
    journal: &mut JournalWriter<CommittedPosition>,
    tailer: &mut Tailer,
) -> ReadOutcome {
    let budget = config
        .batch_max_bytes
        .saturating_sub(journal.pending_bytes() as u64)
        .max(1);
    let collected_at = timestamp_now();
    tailer.read(budget, &collected_at, &mut |record| {
        journal.push_with(|out| record.write(out))
    })
}

/// Commits the pending batch with the offsets the tailer reached.
fn commit(
    (journal, book): (&mut JournalWriter<CommittedPosition>, &mut FileBook),
    tailer: &mut Tailer,
    batch: &mut Batch,
    wakeup: &Wakeup,
) -> anyhow::Result<()> {
    let input = book.commit_input(tailer.position());
    if !journal
        .commit_when_space(&input, wakeup)
        .context("committing to the collected journal")?
    {
        anyhow::bail!("stopped while the collected journal's volume was full: the last commit stands and the rest is read again on restart");
    }
    batch.committed();
    Ok(())
}

fn write_stats(
    file: &mut StatsFile,
    journal: &JournalWriter<CommittedPosition>,
    tailer: &mut Tailer,
    backpressured: bool,
) {
    let files = tailer.position();
    let stats = CollectionStats {
        records_committed: journal.committed_records(),
        unconsumed_bytes: journal.unconsumed_bytes(),
        backpressured,
        files: FilesReport {
            files: &files.files,
            finished: &files.finished,
            pending: &files.pending,
        },
    };
    if let Err(e) = file.refresh(&stats) {
        tracing::warn!(error = %e, "Cannot refresh the stats file.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn batch() -> Batch {
        Batch::new(CommitPolicy {
            min_bytes: 8192,
            max_wait: 100 * MS,
        })
    }

    #[test]
    fn a_small_batch_waits_for_more_until_its_max_wait_and_a_full_one_goes_at_once() {
        let start = Instant::now();
        let mut batch = batch();
        assert!(!batch.is_due(start, (0, 0), false), "nothing to commit");
        assert!(
            batch.is_due(start, (0, 0), true),
            "a changed position alone"
        );
        assert!(!batch.is_due(start, (2, 600), false));
        assert!(!batch.is_due(start + 99 * MS, (3, 900), false));
        assert!(
            batch.is_due(start + 100 * MS, (3, 900), false),
            "waited long enough"
        );
        batch.committed();
        assert!(
            batch.is_due(start + 100 * MS, (30, 9000), false),
            "worth a commit"
        );
        batch.committed();
        assert!(batch.is_due(start, (1, 300), true), "a client waits");
    }

    #[test]
    fn a_trickle_is_read_again_when_its_batch_would_be_worth_a_commit_or_due() {
        let start = Instant::now();
        let linger = 10 * MS;
        let mut batch = batch();
        assert_eq!(batch.next_read_in(start, linger, 0), linger, "no batch yet");
        batch.is_due(start, (1, 300), false);
        assert_eq!(
            batch.next_read_in(start, linger, 300),
            linger,
            "no pace known yet"
        );
        // 4 KiB in 10 ms: the other 4 KiB take about 10 ms more.
        let in_10ms = batch.next_read_in(start + 10 * MS, linger, 4096);
        assert!((10 * MS..=11 * MS).contains(&in_10ms), "{in_10ms:?}");
        // 600 bytes in 10 ms: 8 KiB would take longer than the batch may wait (90 ms more).
        assert_eq!(batch.next_read_in(start + 10 * MS, linger, 600), 90 * MS);
        assert_eq!(
            batch.wait_at_most(start + 10 * MS, Duration::from_secs(1)),
            90 * MS
        );
        assert_eq!(
            batch.next_read_in(start + 150 * MS, linger, 600),
            Duration::ZERO
        );
    }
}
