//! The journal: how one stage hands records to the next.
//!
//! A journal is a directory of numbered NDJSON segment files plus one `commit.json`. Each
//! commit says how far the journal is committed and where the writing stage's own input stood
//! when that output was produced: in a marker line after its batch in the segment (what makes
//! it durable), and in the commit file (what readers read). Readers never read past the
//! committed end; each reader publishes how far it has consumed in `readers/<name>.json`, which
//! is what retention and backpressure go by.
//!
//! Easy to get wrong: the order of a commit. A batch is appended with its commit marker
//! after it and fsynced *before* the commit file is written; after a crash the writer cuts the
//! journal back to the last commit (the commit file's, or a later marker's when a power loss
//! left the file behind) and resumes its input from that commit's input position, so nothing
//! is lost or repeated.

#![warn(missing_docs)]

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::marker::PhantomData;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};
use tracing::{debug, error, info, warn};

use sidecar_common::backoff::Backoff;
use sidecar_common::checkpoint::{
    self, CheckpointError, CheckpointFile, CheckpointReader, Durability, Loaded,
};
use sidecar_common::signal::Wakeup;
use sidecar_common::time::timestamp_now;

mod marker;

pub use marker::is_marker;

/// The commit file's name inside a journal directory.
pub const COMMIT_FILE: &str = "commit.json";
/// The directory inside a journal where readers publish their cursors.
pub const READERS_DIR: &str = "readers";
/// The on-disk format version of cursor files.
pub const FORMAT_VERSION: u32 = 1;
/// The on-disk format version of the commit file: 2 since segments hold commit markers (a
/// stage that does not skip them refuses the journal by this version rather than read them
/// as records).
pub const COMMIT_VERSION: u32 = 2;

const SEGMENT_PREFIX: &str = "segment-";
const SEGMENT_SUFFIX: &str = ".ndjson";
/// How often the writer re-reads reader cursors for retention and backpressure: often enough
/// to resume within a blink after the reader catches up, rare enough to cost nothing.
const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(250);

/// Why a journal operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// An I/O error on a journal file.
    #[error("journal I/O on {}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The commit file or a cursor could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A segment is shorter than the commit says: data the commit promised is gone.
    #[error("journal segment {} holds {len} bytes but the commit says {committed}", .path.display())]
    ShortSegment {
        /// The segment.
        path: PathBuf,
        /// Its length on disk.
        len: u64,
        /// The committed length.
        committed: u64,
    },
    /// A segment a reader needs is missing.
    #[error("journal segment {} is missing", .path.display())]
    MissingSegment {
        /// The segment.
        path: PathBuf,
    },
    /// An earlier write failed; the writer must be reopened (the process restarted) so it
    /// recovers from what is on disk.
    #[error("journal {} is unusable after an earlier write failure", .dir.display())]
    Poisoned {
        /// The journal directory.
        dir: PathBuf,
    },
}

impl JournalError {
    /// Whether the error is a full disk or an exhausted quota: the writer stays usable and the
    /// same commit can be tried again once space returns.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            JournalError::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
            ),
            JournalError::Checkpoint(error) => error.is_out_of_space(),
            _ => false,
        }
    }
}

/// Appends the `len` bytes of `file` at `offset` to `out`, read into the vector's spare room:
/// resizing it with zeros first and reading over them wrote every batch's bytes twice (up to
/// a mebibyte of `memset` a batch, 2 % of the forwarder at 10,000 lines/s). `read_to_end`
/// reads a `File` into the spare room without zeroing it; the seek is one cheap system call
/// more than a positional read.
fn append_exact_at(mut file: &File, offset: u64, len: usize, out: &mut Vec<u8>) -> io::Result<()> {
    out.reserve(len);
    file.seek(io::SeekFrom::Start(offset))?;
    let read = file.take(len as u64).read_to_end(out)?;
    if read < len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "the segment ends {} bytes before what was committed",
                len - read
            ),
        ));
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A place in a journal: a segment number and a byte offset in it.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// The segment number.
    pub segment: u64,
    /// The byte offset inside the segment (always at a record boundary).
    pub offset: u64,
}

/// The content of `commit.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Commit<I> {
    /// Format version, [`COMMIT_VERSION`] (1 for commits written before markers).
    pub version: u32,
    /// The committed end of the journal.
    pub end: Position,
    /// How many records were committed in total, over the journal's life.
    pub records: u64,
    /// When this commit was made (RFC 3339).
    pub committed_at: String,
    /// Where the writing stage's input stood when this output was produced.
    pub input: I,
}

/// A reader's published position, `readers/<name>.json`, with optional state of its own.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cursor<S> {
    /// Format version, [`FORMAT_VERSION`].
    pub version: u32,
    /// Everything before this position is consumed.
    pub position: Position,
    /// When this cursor was written (RFC 3339).
    pub updated_at: String,
    /// Reader-specific state committed together with the position.
    pub state: S,
}

impl<S> Cursor<S> {
    /// A cursor at `position` with `state`, stamped now.
    pub fn new(position: Position, state: S) -> Self {
        Self {
            version: FORMAT_VERSION,
            position,
            updated_at: timestamp_now(),
            state,
        }
    }

    /// The path of `reader`'s cursor in the journal at `dir`.
    pub fn path(dir: &Path, reader: &str) -> PathBuf {
        dir.join(READERS_DIR).join(format!("{reader}.json"))
    }
}

impl<S: DeserializeOwned> Cursor<S> {
    /// Loads `reader`'s cursor from the journal at `dir`; `None` if it has none yet.
    ///
    /// # Errors
    /// When the cursor exists but cannot be read or decoded, or has another version.
    pub fn load(dir: &Path, reader: &str) -> Result<Option<Self>, CheckpointError> {
        let path = Self::path(dir, reader);
        let cursor = match checkpoint::load_or_backup::<Self>(&path)? {
            Some(Loaded::Backup { value, error }) => {
                error!(error = %error, "A reader checkpoint is corrupt; using its backup copy.");
                Some(value)
            }
            other => other.map(Loaded::into_value),
        };
        if let Some(c) = &cursor {
            checkpoint::check_version(&path, c.version, FORMAT_VERSION)?;
        }
        Ok(cursor)
    }
}

impl<S: Serialize> Cursor<S> {
    /// Publishes this cursor once, opening its file for this store only; a reader that
    /// publishes often keeps a [`CursorFile`] instead.
    ///
    /// # Errors
    /// When the file cannot be written; the previous cursor then stands.
    pub fn store(
        &self,
        dir: &Path,
        reader: &str,
        durability: Durability,
    ) -> Result<(), JournalError> {
        CursorFile::new(dir, reader).store(self, durability)
    }
}

/// Where a reader publishes its cursor, kept open for the reader's life: each store
/// overwrites the file in place ([`CheckpointFile`]).
#[derive(Debug)]
pub struct CursorFile {
    dir: PathBuf,
    file: CheckpointFile,
}

impl CursorFile {
    /// `reader`'s cursor file in the journal at `dir`; nothing is touched until a store.
    pub fn new(dir: &Path, reader: &str) -> Self {
        Self {
            dir: dir.join(READERS_DIR),
            file: CheckpointFile::new(Cursor::<()>::path(dir, reader)),
        }
    }

    /// Publishes `cursor`.
    ///
    /// # Errors
    /// When the file cannot be written; the previous cursor then stands.
    pub fn store<S: Serialize>(
        &mut self,
        cursor: &Cursor<S>,
        durability: Durability,
    ) -> Result<(), JournalError> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        self.file.store(cursor, durability)?;
        Ok(())
    }
}

/// How a journal is written and kept.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// A new segment starts once the current one reaches this size. Default 16 MiB: small
    /// enough that retention frees space in useful steps, large enough that rolls are rare.
    pub segment_max_bytes: u64,
    /// Whether each commit is fsynced (default) or left to the page cache.
    pub durability: Durability,
    /// Consumed segments are kept while the journal is under this size (default 64 MiB), so
    /// recent history stays readable after it was forwarded.
    pub retention_max_bytes: u64,
    /// ... and while they are younger than this (default 1 h).
    pub retention_max_age: Duration,
    /// The writer pauses when readers lag by more than this many bytes (default 256 MiB);
    /// the sources upstream are then the buffer.
    pub max_unconsumed_bytes: u64,
    /// The readers whose cursors must pass a segment before it may be deleted. A named
    /// reader that has not published a cursor yet holds everything.
    pub readers: Vec<String>,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            segment_max_bytes: 16 << 20,
            durability: Durability::Fsync,
            retention_max_bytes: 64 << 20,
            retention_max_age: Duration::from_secs(3600),
            max_unconsumed_bytes: 256 << 20,
            readers: Vec::new(),
        }
    }
}

/// Metrics of a journal writer.
#[derive(Debug, Clone, Default)]
pub struct JournalMetrics {
    commits: Counter,
    records: Counter,
    bytes: Counter,
    unconsumed_bytes: Gauge,
    backpressured: Gauge,
    out_of_space: Gauge,
}

impl JournalMetrics {
    /// Registers the metrics under `registry` with the stage's `prefix` (e.g. `collector`).
    pub fn register(&self, prefix: &str, registry: &mut Registry) {
        registry.register(
            format!("{prefix}_journal_commits"),
            "Batches committed to the output journal",
            self.commits.clone(),
        );
        registry.register(
            format!("{prefix}_journal_records"),
            "Records committed to the output journal",
            self.records.clone(),
        );
        registry.register(
            format!("{prefix}_journal_bytes"),
            "Bytes committed to the output journal",
            self.bytes.clone(),
        );
        registry.register(
            format!("{prefix}_journal_unconsumed_bytes"),
            "Committed bytes the slowest reader has not consumed yet",
            self.unconsumed_bytes.clone(),
        );
        registry.register(
            format!("{prefix}_journal_backpressured"),
            "1 while the writer pauses because readers lag past the cap",
            self.backpressured.clone(),
        );
        registry.register(
            format!("{prefix}_journal_out_of_space"),
            "1 while commits wait for space on the journal's volume",
            self.out_of_space.clone(),
        );
    }
}

/// Appends batches of records to a journal and commits them with the input position.
pub struct JournalWriter<I> {
    metrics: JournalMetrics,
    dir: PathBuf,
    options: JournalOptions,
    segment: File,
    /// `commit.json`, stored in place.
    commit_file: CheckpointFile,
    end: Position,
    records: u64,
    buffer: Vec<u8>,
    buffered_records: u64,
    poisoned: bool,
    housekeeping_at: Option<Instant>,
    unconsumed_bytes: u64,
    _input: PhantomData<fn() -> I>,
}

impl<I: Serialize + DeserializeOwned> JournalWriter<I> {
    /// Opens (or creates) the journal at `dir`, cutting it back to its committed end.
    /// Returns the writer and the input position of the last commit, if any.
    ///
    /// # Errors
    /// When the directory or commit file cannot be read or written, the commit file is
    /// corrupt, or a segment is shorter than committed.
    pub fn open(dir: &Path, options: JournalOptions) -> Result<(Self, Option<I>), JournalError> {
        fs::create_dir_all(dir.join(READERS_DIR)).map_err(io_err(dir))?;
        let commit_path = dir.join(COMMIT_FILE);
        let (commit, mut recovery) = match checkpoint::load_or_backup::<Commit<I>>(&commit_path) {
            Ok(None) => (None, Recovery::None),
            Ok(Some(Loaded::Current(c))) => (Some(c), Recovery::None),
            Ok(Some(Loaded::Backup { value, error })) => {
                error!(error = %error, "The journal's commit file is corrupt; using its backup copy.");
                (Some(value), Recovery::FromBackup)
            }
            Err(error @ CheckpointError::Corrupt { .. }) => {
                // Refusing to start would crash-loop the pod; repeating records loses nothing.
                error!(error = %error, "The journal's commit file and its backup are both unusable; keeping every complete record and reading the input again from its start, so its records repeat.");
                (None, Recovery::FromNothing)
            }
            Err(error) => return Err(error.into()),
        };
        if let Some(c) = &commit {
            check_commit_version(&commit_path, c.version)?;
        }
        let (mut end, mut records, mut input) = match commit {
            Some(c) => (c.end, c.records, Some(c.input)),
            None => (Position::default(), 0, None),
        };
        let markers_from = match recovery {
            Recovery::FromNothing => None,
            _ => Some(end),
        };
        if let Some(found) = marker::last_commit::<I>(dir, markers_from)? {
            if found.end > end {
                warn!(commit_file_end = ?end, marker_end = ?found.end, "The commit file is behind the journal's last commit marker (lost or torn in a power loss); resuming from the marker.");
                end = found.end;
                records = found.marker.records;
                input = Some(found.marker.input);
                recovery = Recovery::FromMarker;
            }
        }
        match recovery {
            Recovery::None | Recovery::FromBackup | Recovery::FromMarker => {
                end = keep_consumed_records(dir, end, &options.readers);
            }
            Recovery::FromNothing => end = keep_complete_records(dir, end)?,
        }
        remove_uncommitted_segments(dir, end.segment)?;
        let segment = open_segment_at(dir, end)?;
        let mut writer = Self {
            metrics: JournalMetrics::default(),
            dir: dir.to_owned(),
            options,
            segment,
            commit_file: CheckpointFile::new(commit_path),
            end,
            records,
            buffer: Vec::with_capacity(1 << 20),
            buffered_records: 0,
            poisoned: false,
            housekeeping_at: None,
            unconsumed_bytes: 0,
            _input: PhantomData,
        };
        if let (Recovery::FromBackup | Recovery::FromNothing | Recovery::FromMarker, Some(input)) =
            (recovery, &input)
        {
            // Replace the corrupt or stale file at once, so readers see the records kept.
            writer.commit(input)?;
        }
        Ok((writer, input))
    }

    /// Adds one record (serialised as one JSON line) to the pending batch.
    pub fn push<T: Serialize>(&mut self, record: &T) {
        serde_json::to_writer(&mut self.buffer, record).expect("record types serialise infallibly");
        self.buffer.push(b'\n');
        self.buffered_records += 1;
    }

    /// Adds one record that writes its own line (no newline, not starting with `#`, which
    /// marks a commit) into the pending batch: the hot paths, whose records are written
    /// without serde.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.buffer.len();
        write(&mut self.buffer);
        debug_assert!(
            !is_marker(&self.buffer[start..]),
            "a record must not start with '#'"
        );
        self.buffer.push(b'\n');
        self.buffered_records += 1;
    }

    /// Bytes waiting in the pending batch.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Records waiting in the pending batch.
    pub fn pending_records(&self) -> u64 {
        self.buffered_records
    }

    /// The committed end.
    pub fn end(&self) -> Position {
        self.end
    }

    /// Records committed over the journal's life.
    pub fn committed_records(&self) -> u64 {
        self.records
    }

    /// Appends the pending batch, makes it durable, then commits it with `input`.
    ///
    /// # Errors
    /// Any I/O failure. The on-disk commit then still names the previous end and input. When
    /// the disk is full ([`JournalError::is_out_of_space`]) the uncommitted bytes are cut off
    /// again and the batch stays pending, so the same commit can be retried; after any other
    /// failure the writer refuses further use: reopen it (restart) to recover from disk.
    pub fn commit(&mut self, input: &I) -> Result<(), JournalError> {
        if self.poisoned {
            return Err(JournalError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        let result = self.try_commit(input);
        if let Err(error) = &result {
            self.poisoned = !(error.is_out_of_space() && self.cut_back_to_committed_end());
        }
        result
    }

    /// As [`JournalWriter::commit`], but a full disk is waited out: the commit is retried with
    /// backoff until it succeeds. Returns false when `wakeup` stops the stage first (the last
    /// commit then stands and the batch is redone on restart).
    ///
    /// # Errors
    /// Any failure other than a full disk.
    pub fn commit_when_space(&mut self, input: &I, wakeup: &Wakeup) -> Result<bool, JournalError> {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            match self.commit(input) {
                Ok(()) => {
                    self.metrics.out_of_space.set(0);
                    return Ok(true);
                }
                Err(error) if error.is_out_of_space() => {
                    if self.metrics.out_of_space.set(1) == 0 {
                        error!(error = %error, dir = %self.dir.display(), "The journal's volume is full; holding the batch and retrying the commit until space returns. Nothing is committed (or lost) meanwhile.");
                    }
                    if wakeup.sleep(backoff.next_delay()) {
                        return Ok(false);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// After a failed commit, cuts the current segment back to the committed end so the
    /// pending batch can be written again. Returns whether that worked.
    fn cut_back_to_committed_end(&mut self) -> bool {
        self.segment.set_len(self.end.offset).is_ok()
    }

    fn try_commit(&mut self, input: &I) -> Result<(), JournalError> {
        // A commit of no records stays with the records it follows, not alone in a segment.
        if !self.buffer.is_empty() && self.end.offset >= self.options.segment_max_bytes {
            self.roll_segment()?;
        }
        let records = self.records + self.buffered_records;
        let committed_at = timestamp_now();
        let batch_len = self.buffer.len();
        marker::append(&mut self.buffer, self.end, records, &committed_at, input);
        let written = self.write_buffer();
        let end = Position {
            segment: self.end.segment,
            offset: self.end.offset + self.buffer.len() as u64,
        };
        self.buffer.truncate(batch_len);
        written?;
        let commit = Commit {
            version: COMMIT_VERSION,
            end,
            records,
            committed_at,
            input,
        };
        // The marker's flush made the commit durable: the file is for readers, who read the
        // page cache, and a power loss that leaves it behind is made good by the markers.
        self.commit_file.store(&commit, Durability::PageCache)?;
        self.metrics.commits.inc();
        self.metrics.records.inc_by(self.buffered_records);
        self.metrics.bytes.inc_by(end.offset - self.end.offset);
        self.end = end;
        self.records = records;
        self.buffer.clear();
        self.buffered_records = 0;
        Ok(())
    }

    /// Appends the buffer (a batch and its marker) to the segment and flushes it: the one
    /// device flush of a commit.
    fn write_buffer(&mut self) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, self.end.segment);
        self.segment
            .write_all(&self.buffer)
            .map_err(io_err(&path))?;
        if self.options.durability == Durability::Fsync {
            self.segment.sync_data().map_err(io_err(&path))?;
        }
        Ok(())
    }

    fn roll_segment(&mut self) -> Result<(), JournalError> {
        let next = Position {
            segment: self.end.segment + 1,
            offset: 0,
        };
        self.segment = open_segment_at(&self.dir, next)?;
        // The new segment's name must outlive a power loss as its markers do.
        if self.options.durability == Durability::Fsync {
            checkpoint::sync_dir(&self.dir).map_err(io_err(&self.dir))?;
        }
        self.end = next;
        self.housekeeping_at = None;
        Ok(())
    }

    /// The writer's metrics, to register with the stage's registry.
    pub fn metrics(&self) -> &JournalMetrics {
        &self.metrics
    }

    /// Whether readers lag by more than `max_unconsumed_bytes`, so the writer should pause.
    /// Re-reads the cursors (and applies retention) at most every 250 ms.
    pub fn is_backpressured(&mut self) -> bool {
        self.housekeeping();
        let paused = self.unconsumed_bytes > self.options.max_unconsumed_bytes;
        self.metrics.backpressured.set(i64::from(paused));
        paused
    }

    /// Bytes committed but not yet consumed by the slowest reader, as of the last check.
    pub fn unconsumed_bytes(&self) -> u64 {
        self.unconsumed_bytes
    }

    /// Re-reads reader cursors, updates the unconsumed size and deletes segments that every
    /// reader has consumed and that fall outside the retention window. Cheap when called
    /// often: it does its work at most every 250 ms.
    pub fn housekeeping(&mut self) {
        if self
            .housekeeping_at
            .is_some_and(|t| t.elapsed() < HOUSEKEEPING_INTERVAL)
        {
            return;
        }
        self.housekeeping_at = Some(Instant::now());
        let consumed = self.slowest_reader();
        let segments = match list_segments(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "Cannot list journal segments; skipping retention this time.");
                return;
            }
        };
        let mut unconsumed = 0;
        let mut sizes = Vec::with_capacity(segments.len());
        for &segment in &segments {
            let len = if segment == self.end.segment {
                self.end.offset
            } else {
                fs::metadata(segment_path(&self.dir, segment)).map_or(0, |m| m.len())
            };
            if segment > consumed.segment {
                unconsumed += len;
            } else if segment == consumed.segment {
                unconsumed += len.saturating_sub(consumed.offset);
            }
            sizes.push((segment, len));
        }
        self.unconsumed_bytes = unconsumed;
        self.metrics.unconsumed_bytes.set(unconsumed as i64);
        self.apply_retention(&sizes, consumed);
    }

    fn slowest_reader(&self) -> Position {
        let mut slowest = self.end;
        for reader in &self.options.readers {
            let position = match Cursor::<IgnoredAny>::load(&self.dir, reader) {
                Ok(Some(cursor)) => cursor.position,
                Ok(None) => Position::default(),
                Err(e) => {
                    warn!(reader = %reader, error = %e, "Reader cursor unreadable; keeping all segments for it.");
                    Position::default()
                }
            };
            slowest = slowest.min(position);
        }
        slowest
    }

    fn apply_retention(&self, sizes: &[(u64, u64)], consumed: Position) {
        let mut kept_bytes: u64 = sizes.iter().map(|(_, len)| len).sum();
        for &(segment, len) in sizes {
            // Only whole segments that every reader has left behind, never the live one.
            if segment >= consumed.segment || segment >= self.end.segment {
                break;
            }
            let path = segment_path(&self.dir, segment);
            let too_old = fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > self.options.retention_max_age);
            if kept_bytes <= self.options.retention_max_bytes && !too_old {
                break;
            }
            match fs::remove_file(&path) {
                Ok(()) => {
                    kept_bytes -= len;
                    info!(segment = %path.display(), bytes = len, "Deleted a consumed journal segment outside retention.");
                }
                Err(e) => {
                    warn!(segment = %path.display(), error = %e, "Cannot delete a consumed journal segment.")
                }
            }
        }
    }
}

/// Reads committed records from a journal, from a given position on.
pub struct JournalReader {
    dir: PathBuf,
    position: Position,
    open: Option<(u64, File)>,
    /// Where each segment's bytes start in the last batch: (batch offset, journal position).
    batch_starts: Vec<(usize, Position)>,
    /// How far the page cache of what was read has been handed back, when this reader does.
    released: Option<Position>,
    /// The commit file, kept open: it is read at every batch.
    commit: CheckpointReader,
}

/// How far behind its position a releasing reader leaves the page cache alone. The pages the
/// writer added last may still sit in its CPU's batch of pages waiting for the LRU, and a
/// page the kernel cannot drop at once makes it drain every CPU's batch and try again (a
/// round of cross-CPU work per call); a mebibyte back, they have long left it.
const RELEASE_LAG: u64 = 1 << 20;
/// The least a releasing reader hands back at a time: one system call per quarter mebibyte
/// read, not one per batch.
const RELEASE_STEP: u64 = 256 << 10;

impl JournalReader {
    /// A reader of the journal at `dir` starting at `position`.
    pub fn new(dir: &Path, position: Position) -> Self {
        Self {
            dir: dir.to_owned(),
            position,
            open: None,
            batch_starts: Vec::new(),
            released: None,
            commit: CheckpointReader::new(dir.join(COMMIT_FILE)),
        }
    }

    /// This reader hands the page cache of what it has read back to the kernel, a mebibyte
    /// behind its position: for the reader whose reads are the journal's consumption (the
    /// next stage), so that a journal costs the pod's memory what is unread, not what
    /// retention keeps. Page cache is charged to the pod's memory cgroup, and pages a reader
    /// touched twice count as active, in the working set the kubelet evicts by. A later read
    /// of a released range (a restart, a query) reads the disk.
    ///
    /// Only with [`Durability::Fsync`], the stages' one `--fsync` setting: with commits left
    /// to the page cache the pages may still be dirty, which the kernel cannot drop; trying
    /// starts their writeback early and drains every CPU's page batches at each call.
    #[must_use]
    pub fn releasing_read_pages(mut self, durability: Durability) -> Self {
        if durability == Durability::Fsync {
            self.released = Some(Position {
                segment: self.position.segment,
                offset: 0,
            });
        }
        self
    }

    /// The journal position of the byte at `at` in the last batch `read_batch` filled: with
    /// the record offsets of [`records_with_offsets`], where each record starts.
    pub fn position_in_batch(&self, at: usize) -> Position {
        let (base, start) = self
            .batch_starts
            .iter()
            .rev()
            .find(|(base, _)| *base <= at)
            .copied()
            .unwrap_or((0, self.position));
        Position {
            segment: start.segment,
            offset: start.offset + (at - base) as u64,
        }
    }

    /// The journal directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the next read starts: everything before it was returned by `read_batch`.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The writer's committed end, or `None` when it has not committed yet.
    ///
    /// # Errors
    /// When the commit file exists but cannot be read or decoded.
    pub fn committed_end(&mut self) -> Result<Option<Position>, JournalError> {
        // A corrupt commit falls back to the one before it: an earlier end, so never too far.
        let commit = self.commit.load_or_backup_with(decode_commit_end)?;
        let Some((version, end)) = commit.map(Loaded::into_value) else {
            return Ok(None);
        };
        check_commit_version(self.commit.path(), version)?;
        Ok(Some(end))
    }

    /// Fills `out` with whole records (NDJSON lines) from the current position up to `end`,
    /// about `max_bytes` at most (more only when a single record is larger), and advances the
    /// position past them. Returns the number of bytes read (0: nothing new).
    ///
    /// # Errors
    /// When a segment is missing or unreadable.
    pub fn read_batch(
        &mut self,
        end: Position,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, JournalError> {
        out.clear();
        self.batch_starts.clear();
        let mut budget = max_bytes.max(1);
        while self.position < end && out.len() < budget {
            let limit = self.segment_limit(end)?;
            if self.position.offset >= limit {
                // A sealed segment read to its end: the next one starts at 0.
                self.position = Position {
                    segment: self.position.segment + 1,
                    offset: 0,
                };
                self.open = None;
                continue;
            }
            let want = (limit - self.position.offset).min((budget - out.len()) as u64) as usize;
            let start = out.len();
            let path = segment_path(&self.dir, self.position.segment);
            let offset = self.position.offset;
            append_exact_at(self.segment_file()?, offset, want, out).map_err(io_err(&path))?;
            let reached_limit = self.position.offset + want as u64 == limit;
            let kept = if reached_limit {
                want
            } else {
                match memchr::memrchr(b'\n', &out[start..]) {
                    Some(i) => i + 1,
                    None if start > 0 => 0,
                    None => {
                        // One record larger than the budget: read on until its end.
                        out.truncate(start);
                        budget = budget.saturating_mul(2);
                        continue;
                    }
                }
            };
            out.truncate(start + kept);
            if kept > 0
                && self
                    .batch_starts
                    .last()
                    .is_none_or(|(_, p)| p.segment != self.position.segment)
            {
                self.batch_starts.push((start, self.position));
            }
            self.position.offset += kept as u64;
            if kept < want {
                break;
            }
        }
        self.release_read_pages();
        Ok(out.len())
    }

    /// Hands back the page cache of what was read up to [`RELEASE_LAG`] behind the position:
    /// earlier segments whole once the position is that far into a later one, the current
    /// one from its start. A hint: a failure changes nothing but memory, so it is ignored.
    fn release_read_pages(&mut self) {
        let Some(released) = self.released else {
            return;
        };
        let Some(upto) = self.position.offset.checked_sub(RELEASE_LAG) else {
            return;
        };
        if released.segment < self.position.segment {
            for segment in released.segment..self.position.segment {
                // Gone already (retention) is as good as released.
                if let Ok(file) = File::open(segment_path(&self.dir, segment)) {
                    release_pages(&file, None);
                }
            }
        } else if upto < released.offset + RELEASE_STEP {
            return;
        }
        match &self.open {
            Some((segment, file)) if *segment == self.position.segment => {
                release_pages(file, NonZeroU64::new(upto));
            }
            _ => {}
        }
        self.released = Some(Position {
            segment: self.position.segment,
            offset: upto,
        });
    }

    /// How far the current segment may be read: the committed offset in the last segment,
    /// the whole file in sealed ones.
    fn segment_limit(&mut self, end: Position) -> Result<u64, JournalError> {
        if self.position.segment == end.segment {
            return Ok(end.offset);
        }
        let path = segment_path(&self.dir, self.position.segment);
        let file = self.segment_file()?;
        Ok(file.metadata().map_err(io_err(&path))?.len())
    }

    fn segment_file(&mut self) -> Result<&File, JournalError> {
        let segment = self.position.segment;
        let open = match self.open.take() {
            Some(open) if open.0 == segment => open,
            _ => {
                let path = segment_path(&self.dir, segment);
                let file = File::open(&path).map_err(|source| match source.kind() {
                    io::ErrorKind::NotFound => JournalError::MissingSegment { path: path.clone() },
                    _ => JournalError::Io {
                        path: path.clone(),
                        source,
                    },
                })?;
                (segment, file)
            }
        };
        Ok(&self.open.insert(open).1)
    }
}

/// Asks the kernel to drop the clean cached pages of `file`'s first `len` bytes (all of it
/// when `None`). The folio a range ends inside is kept, and the page cache holds a file's
/// pages in folios of up to 2 MiB (x86-64), so up to that much before `len` stays until a
/// later call reaches past it.
fn release_pages(file: &File, len: Option<NonZeroU64>) {
    if let Err(e) = rustix::fs::fadvise(file, 0, len, rustix::fs::Advice::DontNeed) {
        debug!(error = %e, "Could not release the page cache of a read journal segment.");
    }
}

/// Commits of version 1 (before markers) read as they are: their segments hold no markers.
fn check_commit_version(path: &Path, version: u32) -> Result<(), CheckpointError> {
    match version {
        1 => Ok(()),
        _ => checkpoint::check_version(path, version, COMMIT_VERSION),
    }
}

/// A commit's `version` and `end`, read without parsing the writer's input after them: a
/// collector's input lists every file it tails (256 KiB for a thousand files), and skipping
/// it with `serde_json` at every batch was a fifth of the processor (BENCHMARKS.md, "Many
/// quiet files"). `sonic_rs::get` stops at the key it looks for. The slot's checksum has
/// vouched for the bytes.
fn decode_commit_end(
    json: &[u8],
) -> Result<(u32, Position), Box<dyn std::error::Error + Send + Sync>> {
    let field = |name: &str| sonic_rs::get(json, &[name]);
    let version = sonic_rs::from_str(field("version")?.as_raw_str())?;
    let end = sonic_rs::from_str(field("end")?.as_raw_str())?;
    Ok((version, end))
}

/// Committed bytes between `from` and `end` in the journal at `dir`: how far a reader at
/// `from` lags. Segments that are gone count as empty.
pub fn bytes_between(dir: &Path, from: Position, end: Position) -> u64 {
    if from >= end {
        return 0;
    }
    if from.segment == end.segment {
        return end.offset - from.offset;
    }
    let mut bytes = end.offset;
    for segment in from.segment..end.segment {
        let len = fs::metadata(segment_path(dir, segment)).map_or(0, |m| m.len());
        bytes += if segment == from.segment {
            len.saturating_sub(from.offset)
        } else {
            len
        };
    }
    bytes
}

/// The records of a batch as [`JournalReader::read_batch`] fills it: each non-empty line that
/// is not a commit marker, with the batch offset of its first byte.
pub fn records_with_offsets(batch: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let ends = memchr::memchr_iter(b'\n', batch).chain(std::iter::once(batch.len()));
    let mut start = 0;
    ends.filter_map(move |end| {
        let at = start;
        start = end + 1;
        let line = &batch[at..end];
        (!line.is_empty() && !is_marker(line)).then_some((at, line))
    })
}

/// The records of a batch: its non-empty lines.
pub fn records(batch: &[u8]) -> impl Iterator<Item = &[u8]> {
    records_with_offsets(batch).map(|(_, record)| record)
}

/// The path of segment `n` in the journal at `dir`.
pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{SEGMENT_PREFIX}{n:012}{SEGMENT_SUFFIX}"))
}

/// The segment numbers present in `dir`, ascending.
///
/// # Errors
/// When the directory cannot be listed.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix(SEGMENT_PREFIX)
            .and_then(|rest| rest.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|digits| digits.parse().ok())
        {
            segments.push(n);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// How a writer's open found its commit.
#[derive(Debug, Clone, Copy)]
enum Recovery {
    /// The commit file was fine (or absent: a new journal).
    None,
    /// The commit file was corrupt; its backup copy stands in.
    FromBackup,
    /// Both were corrupt.
    FromNothing,
    /// A commit marker in the segments is newer than the commit file (or stands in for it).
    FromMarker,
}

/// At open, before cutting what is past the commit. Records past the commit's end were never
/// committed and no reader has seen them, so they are cut and produced again: the commit (or
/// its twin, the same version or one ahead) is never behind a reader. As a defence against one
/// found behind all the same (a power loss that kept a reader's cursor but not the commit it
/// read), records a reader's cursor has passed are kept rather than pulled from under it.
fn keep_consumed_records(dir: &Path, end: Position, readers: &[String]) -> Position {
    let consumed = readers
        .iter()
        .filter_map(|reader| Cursor::<IgnoredAny>::load(dir, reader).ok().flatten())
        .map(|cursor| cursor.position)
        .max()
        .unwrap_or_default();
    if consumed > end {
        warn!(commit_end = ?end, consumed = ?consumed, "The commit is behind what a reader consumed: keeping those records, so the last batch's records repeat.");
        consumed
    } else {
        end
    }
}

/// After losing both the commit file and its backup: a reader may already have read (or be
/// reading) any committed record. Cutting back would pull them from under the reader, so every
/// complete record on disk is kept as committed; the input then starts again, and repeats
/// records, but none is lost.
fn keep_complete_records(dir: &Path, end: Position) -> Result<Position, JournalError> {
    let Some(&last) = list_segments(dir).map_err(io_err(dir))?.last() else {
        return Ok(end);
    };
    let path = segment_path(dir, last);
    let bytes = fs::read(&path).map_err(io_err(&path))?;
    let complete = memchr::memrchr(b'\n', &bytes).map_or(0, |i| i as u64 + 1);
    let kept = Position {
        segment: last,
        offset: complete,
    }
    .max(end);
    warn!(keeping = ?kept, "Keeping every complete record in the journal.");
    Ok(kept)
}

fn remove_uncommitted_segments(dir: &Path, committed_segment: u64) -> Result<(), JournalError> {
    for segment in list_segments(dir).map_err(io_err(dir))? {
        if segment > committed_segment {
            let path = segment_path(dir, segment);
            warn!(segment = %path.display(), "Removing a segment written after the last commit; its records are produced again.");
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
    }
    Ok(())
}

/// Opens segment `at.segment` for appending at `at.offset`, creating it when `at.offset` is 0
/// and cutting off anything past `at.offset` (uncommitted bytes from before a crash).
fn open_segment_at(dir: &Path, at: Position) -> Result<File, JournalError> {
    let path = segment_path(dir, at.segment);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_err(&path))?;
    let len = file.metadata().map_err(io_err(&path))?.len();
    if len < at.offset {
        return Err(JournalError::ShortSegment {
            path,
            len,
            committed: at.offset,
        });
    }
    if len > at.offset {
        warn!(segment = %path.display(), uncommitted_bytes = len - at.offset, "Cutting uncommitted bytes off the journal; their records are produced again.");
        file.set_len(at.offset).map_err(io_err(&path))?;
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts(segment_max_bytes: u64) -> JournalOptions {
        JournalOptions {
            segment_max_bytes,
            durability: Durability::PageCache,
            ..JournalOptions::default()
        }
    }

    fn read_all(dir: &Path, from: Position) -> (Vec<String>, Position) {
        let mut reader = JournalReader::new(dir, from);
        let end = reader.committed_end().unwrap().unwrap_or_default();
        let mut lines = Vec::new();
        let mut buf = Vec::new();
        while reader.read_batch(end, 64, &mut buf).unwrap() > 0 {
            assert_eq!(buf.last(), Some(&b'\n'), "batches end on a record boundary");
            lines.extend(records(&buf).map(|r| String::from_utf8(r.to_vec()).unwrap()));
        }
        (lines, reader.position())
    }

    #[test]
    fn a_read_appends_exactly_the_bytes_asked_for_or_fails_on_a_short_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        fs::write(&path, b"0123456789").unwrap();
        let file = File::open(&path).unwrap();
        let mut out = b"kept".to_vec();
        append_exact_at(&file, 2, 5, &mut out).unwrap();
        assert_eq!(out, b"kept23456");
        append_exact_at(&file, 0, 1, &mut out).unwrap();
        assert_eq!(
            out, b"kept234560",
            "the position read from is the offset given"
        );
        let short = append_exact_at(&file, 8, 5, &mut out).unwrap_err();
        assert_eq!(short.kind(), io::ErrorKind::UnexpectedEof);
        assert!(short.to_string().contains("3 bytes before"), "{short}");
    }

    #[test]
    fn a_batch_splits_into_its_records_with_their_offsets() {
        let batch = b"{\"a\":1}\n\n{\"b\":2}\n{\"c\":3}";
        let got: Vec<(usize, &[u8])> = records_with_offsets(batch).collect();
        assert_eq!(
            got,
            [
                (0, &b"{\"a\":1}"[..]),
                (9, b"{\"b\":2}"),
                (17, b"{\"c\":3}")
            ]
        );
        assert_eq!(records(b"").count(), 0);
        assert_eq!(records(b"\n\n").count(), 0);
    }

    /// Every record of a batch that spans segments is placed where it starts: resuming a
    /// reader there returns that record first.
    #[test]
    fn a_record_in_a_batch_knows_its_journal_position_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = JournalWriter::<u64>::open(dir.path(), opts(100)).unwrap();
        for batch in 0..6u64 {
            for i in 0..3 {
                w.push(&json!({"batch": batch, "i": i}));
            }
            w.commit(&batch).unwrap();
        }
        assert!(list_segments(dir.path()).unwrap().len() > 2);
        let start = Position {
            segment: 0,
            offset: 18,
        };
        let mut reader = JournalReader::new(dir.path(), start);
        let mut buf = Vec::new();
        let read = reader.read_batch(w.end(), 1 << 20, &mut buf).unwrap();
        let mut seen = 0;
        for (at, record) in records_with_offsets(&buf[..read]) {
            let position = reader.position_in_batch(at);
            let mut again = JournalReader::new(dir.path(), position);
            let mut first = Vec::new();
            again.read_batch(w.end(), 1, &mut first).unwrap();
            assert_eq!(records(&first).next(), Some(record), "at {position:?}");
            seen += 1;
        }
        assert_eq!(seen, 17, "all but the first record, from offset 18 on");
        assert_eq!(
            bytes_between(dir.path(), start, w.end()),
            read as u64,
            "the batch holds every byte between the two"
        );
        assert_eq!(bytes_between(dir.path(), w.end(), start), 0);
    }

    #[test]
    fn bytes_between_counts_whole_segments_between_and_gone_ones_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        for (segment, len) in [(3u64, 100usize), (4, 50), (5, 70)] {
            fs::write(segment_path(dir.path(), segment), vec![b'x'; len]).unwrap();
        }
        let at = |segment, offset| Position { segment, offset };
        assert_eq!(
            bytes_between(dir.path(), at(3, 40), at(5, 30)),
            60 + 50 + 30
        );
        assert_eq!(bytes_between(dir.path(), at(5, 10), at(5, 30)), 20);
        assert_eq!(bytes_between(dir.path(), at(5, 30), at(5, 30)), 0);
        assert_eq!(
            bytes_between(dir.path(), at(1, 0), at(3, 10)),
            10,
            "1 and 2 are gone"
        );
    }

    #[test]
    fn committed_batches_are_read_back_across_segments() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, input) = JournalWriter::<u64>::open(dir.path(), opts(100)).unwrap();
        assert_eq!(input, None);
        for batch in 0..5u64 {
            for i in 0..4 {
                w.push(&json!({"batch": batch, "i": i}));
            }
            w.commit(&batch).unwrap();
        }
        assert!(
            list_segments(dir.path()).unwrap().len() > 1,
            "small segments roll"
        );
        let (lines, end) = read_all(dir.path(), Position::default());
        assert_eq!(lines.len(), 20);
        assert_eq!(lines[19], r#"{"batch":4,"i":3}"#);
        assert_eq!(end, w.end());
        // Resuming from the middle returns exactly the rest.
        let (rest, _) = read_all(
            dir.path(),
            Position {
                segment: 0,
                offset: lines[0].len() as u64 + 1,
            },
        );
        assert_eq!(rest, lines[1..]);
    }

    #[test]
    fn reopening_cuts_uncommitted_bytes_and_segments_and_returns_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = JournalWriter::<String>::open(dir.path(), opts(1 << 20)).unwrap();
        w.push(&json!({"n": 1}));
        w.commit(&"input-1".to_owned()).unwrap();
        drop(w);
        // A crash after appending but before the commit replaced commit.json:
        let seg = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(b"{\"n\":2}\n{\"n\":3,\"torn").unwrap();
        fs::write(segment_path(dir.path(), 1), b"{\"n\":4}\n").unwrap();
        let (w, input) = JournalWriter::<String>::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(input.as_deref(), Some("input-1"));
        let kept = fs::read(&seg).unwrap();
        assert_eq!(records(&kept).collect::<Vec<_>>(), [b"{\"n\":1}"]);
        assert!(kept.ends_with(b"}\n") && is_marker(kept.split(|&b| b == b'\n').nth(1).unwrap()));
        assert!(!segment_path(dir.path(), 1).exists());
        assert_eq!(w.committed_records(), 1);
    }

    #[test]
    fn readers_never_see_uncommitted_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        w.push(&json!({"n": 1}));
        w.commit(&1).unwrap();
        w.push(&json!({"n": 2}));
        // Appended by a commit that has not happened: invisible.
        let (lines, _) = read_all(dir.path(), Position::default());
        assert_eq!(lines, vec![r#"{"n":1}"#]);
    }

    #[test]
    fn a_reader_takes_the_end_of_a_commit_whose_input_is_large_or_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        // An input like a collector's on a node: hundreds of files, 100 KiB of JSON.
        let files: Vec<serde_json::Value> = (0..1000)
            .map(|i| json!({"source": format!("pod-{i}/app/0.log"), "offset": i, "end": 1}))
            .collect();
        let (mut w, _) =
            JournalWriter::<serde_json::Value>::open(dir.path(), opts(1 << 20)).unwrap();
        w.push(&json!({"n": 1}));
        w.commit(&json!({ "files": files })).unwrap();
        let mut reader = JournalReader::new(dir.path(), Position::default());
        assert_eq!(reader.committed_end().unwrap(), Some(w.end()));
        // Key order is the writer's choice; an `end` inside the input is not the commit's.
        let json = br#"{"input":{"end":{"segment":9,"offset":9}},"end":{"segment":0,"offset":8},"version":1}"#;
        let (version, end) = decode_commit_end(json).unwrap();
        assert_eq!(
            (version, end),
            (
                1,
                Position {
                    segment: 0,
                    offset: 8
                }
            )
        );
        assert!(decode_commit_end(br#"{"version":1,"input":{}}"#).is_err());
        // A commit of a newer version is refused by name, as before.
        let newer = br#"{"version":3,"end":{"segment":0,"offset":8},"records":1,"committed_at":"","input":null}"#;
        fs::write(dir.path().join(COMMIT_FILE), newer).unwrap();
        fs::remove_file(dir.path().join("commit.json.backup")).ok();
        let err = reader.committed_end().unwrap_err().to_string();
        assert!(err.contains("version"), "{err}");
    }

    #[test]
    fn a_record_larger_than_the_batch_budget_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        let big = "x".repeat(1000);
        w.push(&json!({"big": big}));
        w.push(&json!({"n": 2}));
        w.commit(&1).unwrap();
        let (lines, _) = read_all(dir.path(), Position::default());
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains(&big));
    }

    #[test]
    fn retention_deletes_only_consumed_segments_beyond_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            retention_max_bytes: 0,
            readers: vec!["next".into()],
            ..opts(50)
        };
        let (mut w, _) = JournalWriter::<u32>::open(dir.path(), options).unwrap();
        for n in 0..10 {
            w.push(&json!({"n": n, "pad": "0123456789012345678901234567890123456789"}));
            w.commit(&n).unwrap();
        }
        let before = list_segments(dir.path()).unwrap();
        assert_eq!(before.len(), 10);
        w.housekeeping();
        assert_eq!(
            list_segments(dir.path()).unwrap(),
            before,
            "no cursor yet: nothing goes"
        );
        assert!(w.unconsumed_bytes() > 500);
        Cursor::new(
            Position {
                segment: 4,
                offset: 0,
            },
            (),
        )
        .store(dir.path(), "next", Durability::PageCache)
        .unwrap();
        w.housekeeping_at = None;
        w.housekeeping();
        assert_eq!(
            list_segments(dir.path()).unwrap(),
            (4..10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn writer_pauses_when_readers_lag_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let options = JournalOptions {
            max_unconsumed_bytes: 100,
            readers: vec!["next".into()],
            ..opts(1 << 20)
        };
        let (mut w, _) = JournalWriter::<u32>::open(dir.path(), options).unwrap();
        for n in 0..10 {
            w.push(&json!({"n": n, "pad": "0123456789"}));
        }
        w.commit(&0).unwrap();
        assert!(w.is_backpressured());
        Cursor::new(w.end(), ())
            .store(dir.path(), "next", Durability::PageCache)
            .unwrap();
        w.housekeeping_at = None;
        assert!(!w.is_backpressured());
        assert_eq!(w.unconsumed_bytes(), 0);
    }

    /// Three committed records, an uncommitted fourth and a torn fifth; returns the committed
    /// end and commit 2's bytes.
    fn three_commits_and_a_torn_record(dir: &Path) -> (Position, Vec<u8>) {
        let (mut w, _) = JournalWriter::<u32>::open(dir, opts(1 << 20)).unwrap();
        let mut second = Vec::new();
        for n in 1..=3 {
            w.push(&json!({ "n": n }));
            w.commit(&n).unwrap();
            if n == 2 {
                second = fs::read(dir.join(COMMIT_FILE)).unwrap();
            }
        }
        let ends = w.end();
        drop(w);
        let mut f = OpenOptions::new()
            .append(true)
            .open(segment_path(dir, 0))
            .unwrap();
        f.write_all(b"{\"n\":4}\n{\"n\":5,\"to").unwrap();
        (ends, second)
    }

    #[test]
    fn a_corrupt_commit_is_replaced_by_its_backup_and_nothing_is_redone() {
        let dir = tempfile::tempdir().unwrap();
        let (ends, _) = three_commits_and_a_torn_record(dir.path());
        fs::write(dir.path().join(COMMIT_FILE), b"\0\0\0").unwrap();
        let opened = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        assert_resumed_at(dir.path(), opened, 3, ends);
    }

    /// The writer `opened` at the commit whose input is `n` (the commit of record `n`: the
    /// uncommitted ones cut), and wrote the commit file again at once, with a commit of no
    /// records after the one at `ends`, which readers see.
    fn assert_resumed_at(
        dir: &Path,
        opened: (JournalWriter<u32>, Option<u32>),
        n: u32,
        ends: Position,
    ) {
        let (w, input) = opened;
        assert_eq!(input, Some(n), "the input of the last commit");
        assert_eq!(w.committed_records(), u64::from(n));
        let (lines, read_to) = read_all(dir, Position::default());
        assert_eq!(lines.len(), n as usize, "the uncommitted records are cut");
        assert!(read_to > ends && read_to == w.end());
    }

    #[test]
    fn a_backup_one_version_behind_keeps_what_readers_consumed() {
        let dir = tempfile::tempdir().unwrap();
        let (ends, second) = three_commits_and_a_torn_record(dir.path());
        // As after a crash between writing the commit file and its backup.
        fs::write(dir.path().join("commit.json.backup"), second).unwrap();
        fs::write(dir.path().join(COMMIT_FILE), b"garbage").unwrap();
        Cursor::new(ends, ())
            .store(dir.path(), "next", Durability::PageCache)
            .unwrap();
        let options = JournalOptions {
            readers: vec!["next".into()],
            ..opts(1 << 20)
        };
        // The backup names commit 2; the marker after record 3 names commit 3.
        let opened = JournalWriter::<u32>::open(dir.path(), options).unwrap();
        assert_resumed_at(dir.path(), opened, 3, ends);
    }

    #[test]
    fn a_corrupt_commit_without_a_backup_resumes_from_the_last_marker() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _) = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        w.push(&1u32);
        w.push(&2u32);
        w.commit(&2).unwrap();
        let ends = w.end();
        drop(w);
        for name in [COMMIT_FILE, "commit.json.backup"] {
            fs::write(dir.path().join(name), b"").unwrap();
        }
        // The markers hold the last commit: nothing repeats.
        let opened = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        assert_resumed_at(dir.path(), opened, 2, ends);
    }

    #[test]
    fn a_journal_without_markers_or_commits_keeps_its_records_and_restarts_the_input() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            segment_path(dir.path(), 0),
            b"{\"n\":1}\n{\"n\":2}\n{\"n\":3,\"torn",
        )
        .unwrap();
        fs::write(dir.path().join(COMMIT_FILE), b"").unwrap();
        let (w, input) = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(input, None, "the input starts again");
        assert_eq!(w.end().offset, 16, "no whole record is dropped");
    }

    /// The commit file as it stood after `commits` of three batches, restored over a newer one:
    /// a power loss that kept the segment's flushed markers but not the file's later writes.
    fn commit_file_left_behind(dir: &Path, segment_max_bytes: u64, commits: u32) -> Position {
        let (mut w, _) = JournalWriter::<u32>::open(dir, opts(segment_max_bytes)).unwrap();
        let mut old = Vec::new();
        for n in 1..=3 {
            w.push(&json!({ "n": n, "pad": "0123456789" }));
            w.commit(&n).unwrap();
            if n == commits {
                old = fs::read(dir.join(COMMIT_FILE)).unwrap();
            }
        }
        let end = w.end();
        drop(w);
        fs::write(dir.join(COMMIT_FILE), &old).unwrap();
        fs::write(dir.join("commit.json.backup"), &old).unwrap();
        end
    }

    #[test]
    fn a_commit_file_left_behind_is_made_good_by_the_markers() {
        for segment_max_bytes in [1 << 20, 10] {
            let dir = tempfile::tempdir().unwrap();
            let end = commit_file_left_behind(dir.path(), segment_max_bytes, 1);
            let mut reader = JournalReader::new(dir.path(), Position::default());
            assert!(reader.committed_end().unwrap() < Some(end));
            let (w, input) =
                JournalWriter::<u32>::open(dir.path(), opts(segment_max_bytes)).unwrap();
            assert_eq!(input, Some(3), "segments of {segment_max_bytes} bytes");
            assert_eq!(w.committed_records(), 3);
            assert_eq!(read_all(dir.path(), Position::default()).0.len(), 3);
            assert!(
                reader.committed_end().unwrap() >= Some(end),
                "readers see it at once"
            );
        }
    }

    /// Rewrites segment 0 as `damage` leaves its bytes.
    fn damage_first_segment(dir: &Path, damage: impl FnOnce(&mut Vec<u8>)) {
        let path = segment_path(dir, 0);
        let mut bytes = fs::read(&path).unwrap();
        damage(&mut bytes);
        fs::write(&path, &bytes).unwrap();
    }

    #[test]
    fn a_marker_whose_batch_did_not_reach_the_disk_ends_the_commits_before_it() {
        let dir = tempfile::tempdir().unwrap();
        commit_file_left_behind(dir.path(), 1 << 20, 1);
        // Record 2's bytes lost (zeros), its marker and the next on disk.
        damage_first_segment(dir.path(), |bytes| {
            let at = memchr::memmem::find(bytes, b"{\"n\":2").unwrap();
            bytes[at..at + 6].fill(0);
        });
        let (w, input) = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(input, Some(1));
        assert_eq!(w.committed_records(), 1);
        assert_eq!(read_all(dir.path(), Position::default()).0.len(), 1);
    }

    #[test]
    fn a_torn_marker_ends_the_commits_before_it() {
        let dir = tempfile::tempdir().unwrap();
        commit_file_left_behind(dir.path(), 1 << 20, 1);
        damage_first_segment(dir.path(), |bytes| {
            let last_marker = memchr::memmem::rfind(bytes, b"#commit ").unwrap();
            let digit = last_marker + bytes[last_marker..].len() - 3;
            bytes[digit] ^= 1;
        });
        let (_, input) = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(
            input,
            Some(2),
            "commit 3's marker does not match its own hash"
        );
    }

    #[test]
    fn a_journal_written_before_markers_opens_at_its_commit() {
        let dir = tempfile::tempdir().unwrap();
        let committed = b"{\"n\":1}\n{\"n\":2}\n";
        let mut segment = committed.to_vec();
        segment.extend_from_slice(b"{\"n\":3}\n");
        fs::write(segment_path(dir.path(), 0), &segment).unwrap();
        let commit = json!({"version": 1, "end": {"segment": 0, "offset": committed.len()},
            "records": 2, "committed_at": "2026-12-01T00:00:00.000Z", "input": 7});
        fs::write(dir.path().join(COMMIT_FILE), commit.to_string()).unwrap();
        let (mut w, input) = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(input, Some(7));
        assert_eq!(
            read_all(dir.path(), Position::default()).0.len(),
            2,
            "the uncommitted one is cut"
        );
        w.push(&json!({"n": 4}));
        w.commit(&8).unwrap();
        drop(w);
        let (_, input) = JournalWriter::<u32>::open(dir.path(), opts(1 << 20)).unwrap();
        assert_eq!(input, Some(8));
        let (lines, _) = read_all(dir.path(), Position::default());
        assert_eq!(lines, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":4}"#]);
    }
}
