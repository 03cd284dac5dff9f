//! Sources: the application's log files, tailed line by line with their identity tracked.
//!
//! A file is known by (device, inode) plus a fingerprint of its first bytes (up to 1 KiB,
//! growing with the file); a checkpoint adds a hash of the bytes just before the saved offset.
//! Together they catch rename rotation (same identity, new path), copytruncate (same inode, new
//! content) and inode reuse, also while the collector was down.
//!
//! Easy to get wrong: the offset. It only ever moves past bytes that were handed on as records,
//! so a line is complete, partial (after an idle timeout) or split (over the length limit) —
//! and each of those exactly once. An incomplete last line is left for the next read.

#![warn(missing_docs)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use xxhash_rust::xxh3::xxh3_64;

use sidecar_common::signal::{backstop_wait, WatchEvent, WatchKind, WATCHED_BACKSTOP_FACTOR};
use sidecar_record::{CollectedRecordOut, ContainerOrigin, LineFlags, RecordId};

pub mod container;
mod spec;

pub use container::LogFormat;
pub use container::PendingLine;
use spec::file_name_of;
pub use spec::{DirListing, SourceSpec, WatchedDir};

/// How many leading bytes identify a file. 1 KiB covers the first lines of any log, which
/// carry timestamps, so two files rarely share it; the fingerprint grows with the file up to it.
const HEAD_BYTES: u64 = 1024;
/// How many bytes before the saved offset are hashed into the checkpoint.
const TAIL_BYTES: u64 = 256;
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
/// Rotated files with these endings are compressed (logrotate's `compress`): not lines.
const COMPRESSED_SUFFIXES: [&str; 7] = [".gz", ".bz2", ".xz", ".zst", ".lz4", ".zip", ".Z"];

/// Why a source specification is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A pattern is not a valid glob, or has wildcards outside its file-name part.
    #[error("{what} pattern {pattern:?}: {message}")]
    Pattern {
        /// `watch` or `exclude`.
        what: &'static str,
        /// The pattern as given.
        pattern: String,
        /// What is wrong.
        message: String,
    },
}

/// How files are read.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Lines longer than this are split into pieces of this size, each flagged `split`
    /// (default 1 MiB).
    pub max_line_bytes: usize,
    /// A file that left its path (rotated or deleted) is closed once read to its end and idle
    /// for this long (default 5 s: long enough for a writer to finish its last lines).
    pub rotated_close_after: Duration,
    /// An incomplete last line is emitted, flagged `partial`, after the file stayed idle this
    /// long; `None` waits for its newline forever (default 60 s).
    pub partial_line_timeout: Option<Duration>,
    /// How many bytes one read call asks for (default 256 KiB).
    pub read_chunk_bytes: usize,
}

impl Default for TailOptions {
    fn default() -> Self {
        Self {
            max_line_bytes: 1 << 20,
            rotated_close_after: Duration::from_secs(5),
            partial_line_timeout: Some(Duration::from_secs(60)),
            read_chunk_bytes: 256 << 10,
        }
    }
}

/// A tracked file as saved in the collector's commit: enough to find it again and to prove it
/// is the same file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedFile {
    /// The name records carry (the file name when first seen).
    pub source: Arc<str>,
    /// Where the file was last seen.
    pub path: Arc<Path>,
    /// Device number.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// The identity of this file generation, part of every record id.
    pub source_id: u64,
    /// Everything before this byte was handed on.
    pub offset: u64,
    /// How many leading bytes `head_hash` covers.
    pub head_len: u64,
    /// xxh3 of the first `head_len` bytes.
    pub head_hash: u64,
    /// xxh3 of the `min(offset, 256)` bytes before `offset`.
    pub tail_hash: u64,
    /// The file had left its path (rotated) and was read to its end when the position was
    /// taken: if it is gone after a restart, nothing of it was lost.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drained: bool,
    /// The file is a rotated copy (found by content, or rotated while the collector was
    /// down), not a file the app writes: if it changes, it was written over, not appended to.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub copy: bool,
    /// Truncated and not yet known by a first line: copies made after this time (ms since
    /// the epoch) may hold generations never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unseen_since_ms: Option<u64>,
    /// The format the file's lines are read in (`auto` decided by the first line).
    #[serde(default, skip_serializing_if = "is_raw")]
    pub format: LogFormat,
}

fn is_raw(format: &LogFormat) -> bool {
    *format == LogFormat::Raw
}

/// The tailer's whole position: the collector's input position in its journal commit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailPosition {
    /// Every file being read, including rotated ones not yet finished.
    pub files: Vec<SavedFile>,
    /// When this position was taken (ms since the epoch): files rotated away after it, that
    /// the collector never saw, are recognised by being modified later.
    #[serde(default)]
    pub saved_at_ms: u64,
    /// Rotated files read to their end and closed, the most recent [`FINISHED_REMEMBERED`]:
    /// after a restart they are not mistaken for files rotated while the collector was down.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub finished: Vec<SavedFile>,
    /// Per source, pieces of a container's lines read before the files' offsets and waiting
    /// for their last piece (which may come in the source's next file, after a rotation).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<String, Vec<PendingLine>>,
}

/// While some directories are not watched, they are listed this often at most: soon enough
/// to see a rotation, not on every turn of a busy loop.
pub const UNWATCHED_LISTING_EVERY: Duration = Duration::from_millis(100);

/// How many finished rotated files a position remembers.
pub const FINISHED_REMEMBERED: usize = 64;

/// Metrics of the tailer, labelled by source file name.
#[derive(Debug, Clone, Default)]
pub struct SourceMetrics {
    lines: Family<Vec<(String, String)>, Counter>,
    bytes: Family<Vec<(String, String)>, Counter>,
    events: Family<Vec<(String, String)>, Counter>,
    unread_bytes: Family<Vec<(String, String)>, Counter>,
    open_files: Gauge,
    unwatched_dirs: Gauge,
}

impl SourceMetrics {
    /// Registers the metrics under `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "collector_lines",
            "Lines handed on, per source file",
            self.lines.clone(),
        );
        registry.register(
            "collector_bytes",
            "Bytes read, per source file",
            self.bytes.clone(),
        );
        registry.register(
            "collector_file_events",
            "Rotations, truncations, copies found, split, partial, malformed and invalid UTF-8 lines, unreadable files, per source file",
            self.events.clone(),
        );
        registry.register(
            "collector_unread_bytes",
            "Bytes a file was seen to hold that could not be read: truncated with no copy found, per source file",
            self.unread_bytes.clone(),
        );
        registry.register(
            "collector_open_files",
            "Files held open, rotated ones included",
            self.open_files.clone(),
        );
        registry.register(
            "collector_unwatched_dirs",
            "Log directories without a file watch (the inotify limits reached?), listed on every loop instead",
            self.unwatched_dirs.clone(),
        );
    }

    fn unread_bytes_of(&self, source: &str) -> Counter {
        self.unread_bytes
            .get_or_create(&vec![("source".into(), source.into())])
            .clone()
    }

    fn count_event(&self, source: &str, event: &str) {
        self.events
            .get_or_create(&vec![
                ("source".into(), source.into()),
                ("event".into(), event.into()),
            ])
            .inc();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
}

impl FileKey {
    fn of(meta: &fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A file that has not grown for this long is looked at (a `stat`) only every
/// [`QUIET_LOOK_EVERY`] while other files keep the read loop turning: on a node tailing
/// hundreds of files of which a few are busy, a `stat` of every file at every read was most of
/// the collector's CPU (BENCHMARKS.md, "Many quiet files"). A rescan (and so the drain at
/// shutdown) and the reads just before and after a wait for events look at every file
/// ([`Tailer::look_at_every_file`]), so only a quiet file beside busy ones waits.
const QUIET_AFTER: Duration = Duration::from_secs(1);
/// See [`QUIET_AFTER`]: the most a quiet file's new line waits for a look while others are busy.
const QUIET_LOOK_EVERY: Duration = Duration::from_millis(200);

#[derive(Debug)]
struct TrackedFile {
    key: FileKey,
    file: File,
    /// Shared with every position saved, which then costs no copy.
    path: Arc<Path>,
    source: Arc<str>,
    source_id: u64,
    offset: u64,
    head_len: u64,
    head_hash: u64,
    tail: Option<(u64, u64)>,
    /// The size at the last look: bytes past the offset are known to exist.
    size_seen: u64,
    /// The mtime seen at the last read, to notice writes that did not change the size.
    modified: Option<SystemTime>,
    detached_since: Option<Instant>,
    last_growth: Instant,
    /// When a read last looked at the file (`None`: look at the next read).
    looked_at: Option<Instant>,
    incomplete_since: Option<Instant>,
    /// A rotated copy, not a file the app writes (see [`SavedFile::copy`]).
    copy: bool,
    /// Since a truncation: copies made after this mtime may hold generations of the file that
    /// were never read (copied and truncated again before the collector looked). Cleared by
    /// the look at the directory that the read giving the new generation its first bytes makes.
    unseen_since: Option<SystemTime>,
    /// A rotated copy whose content was replaced (a new copy written over it): never read
    /// again, closed at the end of the read.
    rewritten: bool,
    /// How its lines are written; `auto` until its first line is read.
    format: LogFormat,
    /// While the file is read, its source's lines in pieces, lent by the tailer (which keeps
    /// them per source between reads); empty otherwise.
    pending: Vec<PendingLine>,
}

/// What one [`Tailer::read`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOutcome {
    /// Records handed on.
    pub records: u64,
    /// Source bytes consumed.
    pub bytes: u64,
    /// The budget ran out before every file was read to its end.
    pub more: bool,
}

/// A file opened the moment it appeared, before the tailer's next rescan.
type EarlyOpen = (PathBuf, String, File);

/// Tails the files of a [`SourceSpec`], handing complete lines to a callback.
pub struct Tailer {
    spec: SourceSpec,
    early_tx: mpsc::Sender<EarlyOpen>,
    early_rx: mpsc::Receiver<EarlyOpen>,
    /// Set by the watch handler when a directory's entries may have changed (a file created,
    /// renamed, removed, its permissions changed, or events lost); see [`Tailer::rescan_when_due`].
    listing_stale: Arc<AtomicBool>,
    /// Whether every directory is watched, so that `listing_stale` can be trusted.
    listing_watched: bool,
    /// What [`Tailer::watch_dirs`] returns: from the last listing.
    watch_dirs: Vec<PathBuf>,
    watch_dirs_changed: bool,
    last_rescan: Option<Instant>,
    options: TailOptions,
    files: Vec<TrackedFile>,
    finished: VecDeque<SavedFile>,
    /// By source, a container's lines read in part (see [`container`]): kept per source, not
    /// per file, since a line the runtime was writing when the kubelet rotated the file ends
    /// in the next one.
    pending: BTreeMap<String, Vec<PendingLine>>,
    /// Inodes of files found truncated or rewritten at a restart, with the time of the last
    /// commit: their new generation may have been copied away since (see `unseen_since`).
    regenerated: HashMap<FileKey, SystemTime>,
    unreadable: HashSet<PathBuf>,
    buf: Vec<u8>,
    next_file: usize,
    changed: bool,
    generation: u64,
    metrics: SourceMetrics,
}

impl ReadOutcome {
    fn add(&mut self, file: &FileOutcome) {
        self.records += file.records;
        self.bytes += file.bytes;
        self.more |= file.more;
    }
}

impl Tailer {
    /// A tailer that resumes from `position` (the last commit) when given.
    pub fn new(
        spec: SourceSpec,
        options: TailOptions,
        position: Option<TailPosition>,
        metrics: SourceMetrics,
    ) -> Self {
        let (early_tx, early_rx) = mpsc::channel();
        let mut tailer = Self {
            spec,
            early_tx,
            early_rx,
            listing_stale: Arc::new(AtomicBool::new(true)),
            listing_watched: false,
            watch_dirs: Vec::new(),
            watch_dirs_changed: false,
            last_rescan: None,
            options,
            files: Vec::new(),
            finished: VecDeque::new(),
            pending: BTreeMap::new(),
            regenerated: HashMap::new(),
            unreadable: HashSet::new(),
            buf: Vec::new(),
            next_file: 0,
            changed: false,
            generation: 0,
            metrics,
        };
        tailer.list_dirs();
        // Restored at once, so that position() is the saved one until files are read again.
        if let Some(saved) = position {
            tailer.restore(saved);
        }
        tailer
    }

    /// The directories to watch for changes, as the last listing found them: those holding
    /// watched files, and those above them where new ones appear (a new pod's).
    pub fn watch_dirs(&self) -> &[PathBuf] {
        &self.watch_dirs
    }

    /// Whether [`Tailer::watch_dirs`] changed since the last call.
    pub fn take_watch_dirs_changed(&mut self) -> bool {
        std::mem::take(&mut self.watch_dirs_changed)
    }

    /// Has the next [`Tailer::rescan_when_due`] list the directories: a watch was just added
    /// to one, and a file made there before the watch was in place would wait for the periodic
    /// listing otherwise.
    pub fn request_rescan(&self) {
        self.listing_stale.store(true, Ordering::Release);
    }

    /// A handler for file-watch events that opens a watched file the moment it is created or
    /// renamed into place. Holding its descriptor lets the tailer read a file that is rotated
    /// away again before the next rescan (two rotations in a row), which a listing alone would
    /// never see under a watched name.
    ///
    /// It also notes events that may change a directory's entries, for
    /// [`Tailer::rescan_when_due`]: appends to a file do not, everything else does.
    pub fn early_opener(&self) -> impl Fn(&WatchEvent) + Send + 'static {
        let spec = self.spec.clone();
        let tx = self.early_tx.clone();
        let listing_stale = Arc::clone(&self.listing_stale);
        move |event: &WatchEvent| {
            if event.kind != WatchKind::Appended {
                listing_stale.store(true, Ordering::Release);
            }
            if event.kind != WatchKind::Created {
                return;
            }
            let path = &event.path;
            let Some(source) = spec.source_of(path) else {
                return;
            };
            let regular = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
            if let (true, Ok(file)) = (regular, File::open(path)) {
                let _ = tx.send((path.clone(), source, file));
            }
        }
    }

    /// How many files are open.
    pub fn open_files(&self) -> usize {
        self.files.len()
    }

    /// Says how many of [`Tailer::watch_dirs`] are not under a file watch whose events reach
    /// [`Tailer::early_opener`]'s handler. Until none is, [`Tailer::rescan_when_due`] lists
    /// often ([`UNWATCHED_LISTING_EVERY`]).
    pub fn set_unwatched_dirs(&mut self, count: usize) {
        self.listing_watched = count == 0;
        self.metrics.unwatched_dirs.set(count as i64);
    }

    /// Lists the directories ([`Tailer::rescan`]) when their entries may have changed since the
    /// last listing, and otherwise every `interval` × [`WATCHED_BACKSTOP_FACTOR`] while every
    /// directory is watched, or every [`UNWATCHED_LISTING_EVERY`] while some are not.
    ///
    /// At thousands of lines a second the loop turns ~100 times a second; a turn caused by
    /// appends cannot have changed the listing (appends are found by reading the open files),
    /// and a watched directory says when its entries change, so the timed listing is only a
    /// backstop. On a node it lists hundreds of pod directories, and each listing of a watched
    /// directory is itself three inotify events to filter out.
    pub fn rescan_when_due(&mut self, interval: Duration) {
        let stale = self.listing_stale.swap(false, Ordering::Acquire);
        let every = if self.listing_watched {
            interval * WATCHED_BACKSTOP_FACTOR
        } else {
            UNWATCHED_LISTING_EVERY.min(interval)
        };
        let due = self.last_rescan.is_none_or(|at| at.elapsed() >= every);
        if stale || due {
            self.rescan();
        }
    }

    /// How long a loop with nothing to read may wait for the directory watch's events before
    /// it reads every file anyway: `interval` × [`WATCHED_BACKSTOP_FACTOR`] while every
    /// directory is watched and no file waits on a timer, else `interval`. A timer is what a
    /// file rotated away needs (its appends are reported under its old directory only while it
    /// stays there, and it is closed a while after its end), a file holding an incomplete line
    /// or a container line in pieces (each waits out a timeout), and a file truncated and not
    /// yet known by its first line. On a node of 1,000 quiet files, a look at each every
    /// second was 1,000 `statx` a second for nothing.
    pub fn quiet_wait(&self, interval: Duration) -> Duration {
        let timers = self.pending.values().any(|lines| !lines.is_empty())
            || self.files.iter().any(|f| {
                f.detached_since.is_some()
                    || f.incomplete_since.is_some()
                    || f.unseen_since.is_some()
                    || !f.pending.is_empty()
            });
        backstop_wait(interval, self.listing_watched && !timers)
    }

    /// Whether the position changed without records (a file closed, a truncation seen) since
    /// the last call, so it needs committing anyway.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Lists the directories the spec names now, notes them for the watch, and reports a root
    /// that cannot be listed (once, until it can).
    fn list_dirs(&mut self) -> DirListing {
        let listing = self.spec.list_dirs();
        for (dir, e) in &listing.unreadable {
            if self.unreadable.insert(dir.clone()) {
                warn!(dir = %dir.display(), error = %e, "Cannot list the log directory; will retry.");
            }
        }
        for parent in &listing.parents {
            if !listing.unreadable.iter().any(|(dir, _)| dir == parent) {
                self.unreadable.remove(parent);
            }
        }
        let dirs = listing.dirs.iter().map(|d| &d.path).chain(&listing.parents);
        if !dirs.clone().eq(self.watch_dirs.iter()) {
            self.watch_dirs = dirs.cloned().collect();
            self.watch_dirs_changed = true;
        }
        listing
    }

    /// Makes the next read look at every file, quiet ones included (see [`QUIET_AFTER`]):
    /// for the read before a loop waits for inotify's events (what a quiet file got before
    /// the watch was back must not wait for the event after it) and the read after such a
    /// wait (the event may be that file's).
    pub fn look_at_every_file(&mut self) {
        for f in &mut self.files {
            f.looked_at = None;
        }
    }

    /// Lists the watched directories: picks up new files, notices rotated and deleted ones.
    pub fn rescan(&mut self) {
        self.last_rescan = Some(Instant::now());
        self.look_at_every_file();
        while let Ok((path, name, file)) = self.early_rx.try_recv() {
            if let Ok(meta) = file.metadata() {
                let key = FileKey::of(&meta);
                if !self.files.iter().any(|f| f.key == key) {
                    self.track(file, &path, &name, key, meta.len());
                }
            }
        }
        let mut seen: HashSet<FileKey> = HashSet::with_capacity(self.files.len());
        let listing = self.list_dirs();
        for dir in &listing.dirs {
            let entries = match fs::read_dir(&dir.path) {
                Ok(entries) => entries,
                Err(e) => {
                    if dir.prefix.is_empty() && self.unreadable.insert(dir.path.clone()) {
                        warn!(dir = %dir.path.display(), error = %e, "Cannot list the log directory; will retry.");
                    }
                    continue;
                }
            };
            self.unreadable.remove(&dir.path);
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let path = entry.path();
                if !self.spec.matches_in(dir, &path, name) {
                    continue;
                }
                // Symlinks are never followed: they could lead outside the directory.
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                if !meta.file_type().is_file() {
                    continue;
                }
                let key = FileKey::of(&meta);
                seen.insert(key);
                if let Some(tracked) = self.files.iter_mut().find(|f| f.key == key) {
                    if *tracked.path != *path || tracked.detached_since.is_some() {
                        tracked.path = path.into();
                        tracked.detached_since = None;
                        self.changed = true;
                    }
                } else {
                    self.start_file(&path, &format!("{}{name}", dir.prefix), key);
                }
            }
        }
        for index in 0..self.files.len() {
            if self.files[index].unseen_since.is_some() {
                self.adopt_unseen_generations(index);
            }
        }
        let now = Instant::now();
        for tracked in &mut self.files {
            if tracked.detached_since.is_none() && !seen.contains(&tracked.key) {
                info!(source = %tracked.source, path = %tracked.path.display(), offset = tracked.offset, "File left its path (rotated or deleted); reading it to its end.");
                self.metrics.count_event(&tracked.source, "rotated");
                tracked.detached_since = Some(now);
            }
        }
        self.metrics.open_files.set(self.files.len() as i64);
    }

    fn start_file(&mut self, path: &Path, name: &str, key: FileKey) {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                if self.unreadable.insert(path.to_owned()) {
                    warn!(path = %path.display(), error = %e, "Cannot open log file; will retry.");
                    self.metrics.count_event(name, "unreadable");
                }
                return;
            }
        };
        if self.unreadable.remove(path) {
            info!(path = %path.display(), "Log file is readable now.");
        }
        let Ok(meta) = file.metadata() else { return };
        if FileKey::of(&meta) != key {
            return; // Replaced between listing and opening: the next rescan sees the new one.
        }
        self.track(file, path, name, key, meta.len());
    }

    fn track(&mut self, file: File, path: &Path, name: &str, key: FileKey, size: u64) {
        let source_id = self.new_source_id(key);
        let mut tracked = TrackedFile {
            key,
            file,
            path: path.into(),
            source: name.into(),
            source_id,
            offset: 0,
            head_len: 0,
            head_hash: xxh3_64(b""),
            tail: None,
            size_seen: size,
            modified: None,
            detached_since: None,
            last_growth: Instant::now(),
            looked_at: None,
            incomplete_since: None,
            copy: false,
            unseen_since: None,
            rewritten: false,
            format: self.spec.format_of(path, name),
            pending: Vec::new(),
        };
        refresh_head(&mut tracked, size);
        tracked.unseen_since = self.regenerated.remove(&key);
        info!(source = name, path = %path.display(), bytes = size, "Tailing new file from its start.");
        self.files.push(tracked);
        self.changed = true;
    }

    fn new_source_id(&mut self, key: FileKey) -> u64 {
        self.generation += 1;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&key.dev.to_le_bytes());
        seed[8..16].copy_from_slice(&key.ino.to_le_bytes());
        seed[16..24].copy_from_slice(&nanos.to_le_bytes());
        seed[24..].copy_from_slice(&self.generation.to_le_bytes());
        xxh3_64(&seed)
    }

    fn restore(&mut self, saved: TailPosition) {
        self.pending = saved.pending;
        let saved_at = UNIX_EPOCH + Duration::from_millis(saved.saved_at_ms);
        let known: Vec<SavedFile> = (saved.files.iter().chain(&saved.finished))
            .cloned()
            .collect();
        // First every file still at its inode, so that a copy found next is never one of them.
        let mut changed = Vec::new();
        for file in saved.files {
            match find_by_inode(&file) {
                Ok(Some(found)) => {
                    self.resume(&file, found, "Resuming file at its committed offset.")
                }
                Ok(None) => changed.push(file),
                Err(e) => {
                    warn!(source = %file.source, path = %file.path.display(), error = %e, "Cannot check a saved file; treating it as gone.");
                    self.changed = true;
                }
            }
        }
        let saved_at_or_now = if saved.saved_at_ms > 0 {
            saved_at
        } else {
            SystemTime::now()
        };
        for file in changed {
            let key = FileKey {
                dev: file.dev,
                ino: file.ino,
            };
            self.regenerated.insert(key, saved_at_or_now);
            self.find_gone_file(file);
        }
        for file in saved.finished {
            // A rotated file read to its end and closed: still finished unless it grew since.
            let tracked = |f: &TrackedFile| {
                f.source_id == file.source_id || (f.key.dev, f.key.ino) == (file.dev, file.ino)
            };
            if self.files.iter().any(tracked) {
                continue;
            }
            if let Ok(Some((opened, path, meta))) = find_by_inode(&file) {
                if meta.len() > file.offset {
                    info!(source = %file.source, path = %path.display(), offset = file.offset, "A finished rotated file grew; reading its new lines.");
                    let format = self.restored_format(&file);
                    self.files
                        .push(resumed(&file, opened, path, &meta, true, format));
                } else {
                    self.finished.push_back(file);
                }
            }
        }
        if saved.saved_at_ms > 0 {
            self.adopt_rotated_while_down(&known, saved_at);
        }
    }

    /// The format to go on reading a saved file in: the one its glob names now, or, for
    /// `auto`, the one its first line decided.
    fn restored_format(&self, saved: &SavedFile) -> LogFormat {
        match self.spec.format_of(&saved.path, &saved.source) {
            LogFormat::Auto if saved.offset > 0 => saved.format,
            format => format,
        }
    }

    /// Resumes a saved file found on disk at its committed offset. Found at another path it
    /// was rotated while the collector was down; the rescan re-attaches it if that path is
    /// watched.
    fn resume(&mut self, saved: &SavedFile, (file, path, meta): Found, message: &str) {
        let detached = *path != *saved.path;
        let format = self.restored_format(saved);
        let mut tracked = resumed(saved, file, path, &meta, detached, format);
        // Found by content elsewhere: a copy, whatever the file it continues was.
        tracked.copy |= FileKey::of(&meta)
            != (FileKey {
                dev: saved.dev,
                ino: saved.ino,
            });
        info!(source = %saved.source, path = %tracked.path.display(), offset = saved.offset, "{message}");
        self.files.push(tracked);
    }

    /// A file being read is no longer at its inode with the content that was read: truncated
    /// (copytruncate) or written over while the collector was down, or rotated and deleted.
    /// Its copy, found by content, is read from the committed offset; a rotated file that had
    /// been read to its end is simply gone.
    fn find_gone_file(&mut self, file: SavedFile) {
        self.changed = true;
        let tracked: HashSet<FileKey> = self.files.iter().map(|f| f.key).collect();
        match find_copy(&file, |key| tracked.contains(&key)) {
            Ok(Some(Copy::Continues(opened, path, meta))) => {
                self.metrics
                    .count_event(&file.source, "copytruncate_copy_found");
                let found = (opened, path, meta);
                self.resume(&file, found, "File was truncated while the collector was down (copytruncate); reading its copy from the committed offset.");
            }
            Ok(Some(Copy::ReadPast(path))) => {
                info!(source = %file.source, path = %file.path.display(), copy = %path.display(), offset = file.offset, "File was truncated while the collector was down; its copy holds nothing unread.");
            }
            _ if file.drained => {
                info!(source = %file.source, path = %file.path.display(), offset = file.offset, "A rotated file that had been read to its end is gone; nothing of it was lost.");
            }
            _ => {
                warn!(source = %file.source, path = %file.path.display(), offset = file.offset, "A file being read is gone or was replaced while the collector was down, and no copy of it was found; lines written after the committed offset could not be read.");
                self.metrics.count_event(&file.source, "lost_while_down");
            }
        }
    }

    /// Remembers a closed rotated file, so that a restart does not take it for one rotated
    /// while the collector was down and read it again.
    fn remember_finished(&mut self, file: SavedFile) {
        if file.offset == 0 {
            return; // Nothing was read of it: nothing to mistake it for after a restart.
        }
        if self.finished.len() == FINISHED_REMEMBERED {
            self.finished.pop_front();
        }
        self.finished.push_back(file);
    }

    /// Finds files rotated away while the collector was down that it never saw: named like a
    /// watched file plus a suffix (`access.log.1`, `access.log-2026…`), not matched by the
    /// watch globs, unknown, modified after the last commit, and not a copy of what the
    /// watched file holds now (being made by a copytruncate as the collector starts: found by
    /// content once the file is truncated). One that holds what was read of a saved file of
    /// that source (a copy) is read from that file's offset, or skipped when that file is
    /// already followed or was read past it; any other is read from the start. All are closed
    /// once read.
    fn adopt_rotated_while_down(&mut self, known: &[SavedFile], saved_at: SystemTime) {
        let listing = self.list_dirs();
        for dir in &listing.dirs {
            // The sources of this directory, by file name.
            let sources: HashSet<&str> = known
                .iter()
                .filter_map(|f| f.source.strip_prefix(dir.prefix.as_str()))
                .filter(|name| !name.contains('/'))
                .collect();
            if sources.is_empty() {
                continue;
            }
            let Ok(entries) = fs::read_dir(&dir.path) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if self.spec.matches_in(dir, &path, name) {
                    continue;
                }
                let Some(base) = rotated_name_of(name, sources.iter().copied()) else {
                    continue;
                };
                let source = format!("{}{base}", dir.prefix);
                let Ok(meta) = fs::symlink_metadata(&path) else {
                    continue;
                };
                let key = FileKey::of(&meta);
                let after_commit = meta.modified().is_ok_and(|m| m > saved_at);
                if !meta.file_type().is_file() || !after_commit {
                    continue;
                }
                let Ok(file) = File::open(&path) else {
                    continue;
                };
                if self.is_known(key, &file) {
                    continue;
                }
                let size = file.metadata().map_or(meta.len(), |m| m.len());
                let live = File::open(dir.path.join(base));
                if live.is_ok_and(|live| holds_live_content(&file, size, &live).is_ok_and(|h| h)) {
                    info!(source = %source, path = %path.display(), "A copy of what the file holds now (being made by a copytruncate?); it is found by content once the file is truncated.");
                    continue;
                }
                let copy_of = known
                    .iter()
                    .filter(|saved| *saved.source == *source)
                    .find_map(|saved| match likeness(&file, size, saved) {
                        Ok(Likeness::Other) | Err(_) => None,
                        Ok(likeness) => Some((saved, likeness)),
                    });
                match copy_of {
                    Some((saved, Likeness::Continues))
                        if !self.files.iter().any(|f| f.source_id == saved.source_id) =>
                    {
                        self.metrics.count_event(&source, "copytruncate_copy_found");
                        let saved = saved.clone();
                        self.resume(&saved, (file, path, meta), "Found a copy of a file rotated while the collector was down; reading it from the committed offset.");
                    }
                    Some(_) => {
                        info!(source = %source, path = %path.display(), "A file rotated while the collector was down is a copy of lines already read or being read; not reading it again.");
                    }
                    None => {
                        warn!(source = %source, path = %path.display(), "Found a file rotated away while the collector was down; reading it from its start.");
                        self.metrics.count_event(&source, "rotated_while_down");
                        self.track(file, &path, &source, key, size);
                        if let Some(tracked) = self.files.last_mut() {
                            tracked.detached_since = Some(Instant::now());
                            tracked.copy = true;
                        }
                    }
                }
            }
        }
    }

    /// Reads new complete lines from every file, handing each as a record to `emit`, until
    /// about `budget_bytes` were read. `collected_at` stamps the records.
    pub fn read(
        &mut self,
        budget_bytes: u64,
        collected_at: &str,
        emit: &mut dyn FnMut(&CollectedRecordOut<'_>),
    ) -> ReadOutcome {
        let mut outcome = ReadOutcome::default();
        let count = self.files.len();
        let chunk = self
            .options
            .read_chunk_bytes
            .max(self.options.max_line_bytes + 1);
        if self.buf.len() < chunk {
            self.buf.resize(chunk, 0);
        }
        // Start at a different file each call so one busy file cannot starve the others; but a
        // rotated file before the rest, so a line it ends in pieces is whole before the pieces
        // that finish it in the file that replaced it.
        let (rotated, live): (Vec<usize>, Vec<usize>) = (0..count)
            .map(|step| (self.next_file + step) % count)
            .partition(|&index| self.files[index].detached_since.is_some());
        let now = Instant::now();
        for index in rotated.into_iter().chain(live) {
            if outcome.bytes >= budget_bytes {
                outcome.more = true;
                self.next_file = index;
                break;
            }
            let f = &self.files[index];
            if f.may_wait(now) && !self.pending.contains_key(&*f.source) {
                continue;
            }
            self.files[index].looked_at = Some(now);
            let file_outcome =
                self.read_one(index, budget_bytes - outcome.bytes, collected_at, emit);
            outcome.add(&file_outcome);
            let mut copies = Vec::new();
            if file_outcome.truncated {
                self.changed = true;
                copies.extend(self.follow_truncation(index));
                let budget = budget_bytes.saturating_sub(outcome.bytes);
                outcome.add(&self.read_one(index, budget, collected_at, emit));
            }
            let f = &self.files[index];
            if file_outcome.truncated || (f.unseen_since.is_some() && f.head_len > 0) {
                copies.extend(self.adopt_unseen_generations(index));
            }
            for copy in copies {
                let budget = budget_bytes.saturating_sub(outcome.bytes);
                outcome.add(&self.read_one(copy, budget, collected_at, emit));
            }
        }
        self.close_finished_files(collected_at, emit, &mut outcome);
        outcome
    }

    fn read_one(
        &mut self,
        index: usize,
        budget: u64,
        collected_at: &str,
        emit: &mut dyn FnMut(&CollectedRecordOut<'_>),
    ) -> FileOutcome {
        let f = &mut self.files[index];
        if f.format != LogFormat::Raw {
            f.pending = self.pending.remove(&*f.source).unwrap_or_default();
        }
        let outcome = read_file(
            f,
            &mut self.buf,
            &self.options,
            budget,
            collected_at,
            emit,
            &self.metrics,
        );
        if !f.pending.is_empty() {
            self.pending
                .insert(f.source.to_string(), std::mem::take(&mut f.pending));
        }
        outcome
    }

    /// A file shrank below its offset or its first bytes changed. A rotated copy that changes
    /// was written over (`cp app.log app.log.1` onto an old copy): its new content is another
    /// file's, so it is dropped, not read again. A file the app writes was truncated
    /// (copytruncate): its copy is looked for by content in the same directory and read from
    /// the offset reached, under the same source id, so the lines not yet read when it was
    /// copied are not lost and record ids continue. The file itself is then read again from 0
    /// as a new generation. Returns the index of the copy found, to be read next.
    fn follow_truncation(&mut self, index: usize) -> Option<usize> {
        let f = &mut self.files[index];
        if f.copy {
            info!(source = %f.source, path = %f.path.display(), offset = f.offset, "A rotated file was written over (a new copy in its place?); it is not read again.");
            self.metrics.count_event(&f.source, "rewritten_in_place");
            f.rewritten = true;
            return None;
        }
        let read = saved_file(f);
        let unread = f.size_seen.saturating_sub(f.offset);
        // Copies made since the last write seen may hold generations never read.
        f.unseen_since = f.modified.or_else(|| Some(SystemTime::now()));
        let live: HashSet<FileKey> = (self.files.iter())
            .filter(|t| t.detached_since.is_none())
            .map(|t| t.key)
            .collect();
        let found = find_copy(&read, |key| live.contains(&key));
        let mut copy_found = None;
        match found {
            Ok(Some(Copy::Continues(file, path, meta))) => {
                info!(source = %read.source, path = %read.path.display(), copy = %path.display(), offset = read.offset, "File was truncated (copytruncate); reading the rest of its copy from the offset reached, then the file from its start.");
                self.metrics
                    .count_event(&read.source, "copytruncate_copy_found");
                let key = FileKey::of(&meta);
                // An older copy this one was written over is gone: stop reading it.
                for old in self.files.iter_mut().filter(|t| t.key == key) {
                    old.rewritten = true;
                }
                let mut copy = resumed(&read, file, path, &meta, true, read.format);
                copy.copy = true;
                self.files.push(copy);
                copy_found = Some(self.files.len() - 1);
            }
            Ok(Some(Copy::ReadPast(path))) => {
                info!(source = %read.source, path = %read.path.display(), copy = %path.display(), offset = read.offset, "File was truncated (copytruncate); its copy holds nothing unread. Reading the file from its start.");
            }
            Ok(None) | Err(_) if unread > 0 => {
                warn!(source = %read.source, path = %read.path.display(), offset = read.offset, unread_bytes = unread, "File was truncated before its end was read, and no copy of it was found in its directory; the unread bytes are lost. Reading it from its start.");
                self.metrics
                    .count_event(&read.source, "truncated_without_copy");
                self.metrics.unread_bytes_of(&read.source).inc_by(unread);
            }
            Ok(None) | Err(_) => {
                info!(source = %read.source, path = %read.path.display(), offset = read.offset, "File was truncated after everything in it was read; reading it from its start.");
            }
        }
        self.metrics.count_event(&read.source, "truncated");
        let source_id = self.new_source_id(self.files[index].key);
        let f = &mut self.files[index];
        f.source_id = source_id;
        f.offset = 0;
        f.head_len = 0;
        f.head_hash = xxh3_64(b"");
        f.tail = None;
        f.size_seen = 0;
        f.incomplete_since = None;
        copy_found
    }

    /// After a truncation, looks for copies of generations of the file that were never read:
    /// files named like it plus a suffix, unknown, modified since the truncated generation was
    /// last seen, and neither a copy of what was read nor of what the file holds now (a copy
    /// logrotate is still writing has only a few of the first bytes). Several copytruncates
    /// between two looks (the collector paused by backpressure, or busy) leave such copies.
    /// They are read from the start. Looked for at the truncation, at every rescan while the new
    /// generation is empty, and last by the read that gives it its first bytes, long before
    /// that generation is copied in turn. Returns the indexes of the copies adopted.
    fn adopt_unseen_generations(&mut self, index: usize) -> Vec<usize> {
        let f = &mut self.files[index];
        let Some(since) = f.unseen_since else {
            return Vec::new();
        };
        if f.head_len > 0 {
            f.unseen_since = None; // This look sees every copy made before that first line.
        }
        let current = saved_file(f);
        let Some(dir) = current.path.parent().map(Path::to_owned) else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if rotated_name_of(name, [file_name_of(&current.source)]).is_none()
                || self.spec.source_of(&path).is_some()
            {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            let key = FileKey::of(&meta);
            if !meta.file_type().is_file() || meta.modified().map_or(true, |m| m < since) {
                continue;
            }
            let Ok(file) = File::open(&path) else {
                continue;
            };
            if self.is_known(key, &file) {
                continue;
            }
            let size = file.metadata().map_or(meta.len(), |m| m.len());
            let live = &self.files[index].file;
            if holds_live_content(&file, size, live).is_ok_and(|held| held) {
                continue; // A copy of the generation being read: found by content once truncated.
            }
            if likeness(&file, size, &current).is_ok_and(|l| l == Likeness::Other) {
                found.push((meta.modified().ok(), file, path, key, size));
            }
        }
        found.sort_by_key(|(modified, ..)| *modified);
        let mut adopted = Vec::new();
        for (_, file, path, key, size) in found {
            warn!(source = %current.source, path = %path.display(), "Found a copy of a generation of a file that was copied and truncated before it was read; reading it from its start.");
            self.metrics
                .count_event(&current.source, "unseen_generation_copy_found");
            self.track(file, &path, &current.source, key, size);
            if let Some(copy) = self.files.last_mut() {
                copy.detached_since = Some(Instant::now());
                copy.copy = true;
            }
            adopted.push(self.files.len() - 1);
        }
        adopted
    }

    /// Whether a file is being read, or was finished recently and still holds what was read
    /// (a finished file's inode may have been freed and reused by a new file).
    fn is_known(&self, key: FileKey, file: &File) -> bool {
        self.files.iter().any(|f| f.key == key && !f.rewritten)
            || (self.finished.iter()).any(|f| {
                (f.dev, f.ino) == (key.dev, key.ino)
                    && hash_range(file, 0, f.head_len).is_ok_and(|h| h == f.head_hash)
            })
    }

    fn close_finished_files(
        &mut self,
        collected_at: &str,
        emit: &mut dyn FnMut(&CollectedRecordOut<'_>),
        outcome: &mut ReadOutcome,
    ) {
        let close_after = self.options.rotated_close_after;
        let mut index = 0;
        while index < self.files.len() {
            if self.files[index].rewritten {
                self.files.swap_remove(index);
                self.changed = true;
                continue;
            }
            let tracked = &mut self.files[index];
            if tracked.detached_since.is_some() && tracked.last_growth.elapsed() >= close_after {
                let size = tracked.file.metadata().map_or(tracked.offset, |m| m.len());
                if size > tracked.offset {
                    // The unterminated rest of a file nobody will write again.
                    let emitted = emit_partial(
                        tracked,
                        &mut self.buf,
                        size,
                        collected_at,
                        emit,
                        &self.metrics,
                    );
                    outcome.records += emitted.records;
                    outcome.bytes += emitted.bytes;
                }
                let source = tracked.source.clone();
                let last_of_source =
                    !(self.files.iter().enumerate()).any(|(i, f)| i != index && f.source == source);
                let mut pending = match last_of_source {
                    true => self.pending.remove(&*source).unwrap_or_default(),
                    false => Vec::new(),
                };
                let tracked = &mut self.files[index];
                for line in container::unfinished(&mut pending) {
                    // No file of the source is left to hold the last piece the runtime never
                    // wrote; what it wrote goes on, flagged.
                    let (id, source, flags) = (line.id, &tracked.source, line.flags());
                    let record =
                        CollectedRecordOut::new(id, source, collected_at, &line.text, flags)
                            .from_container(line.origin());
                    emit(&record);
                    outcome.records += 1;
                }
                info!(source = %tracked.source, path = %tracked.path.display(), offset = tracked.offset, "Finished a rotated or deleted file; closing it.");
                let mut closed = self.files.swap_remove(index);
                let saved = saved_file(&mut closed);
                self.remember_finished(saved);
                self.changed = true;
                continue;
            }
            index += 1;
        }
        self.metrics.open_files.set(self.files.len() as i64);
    }

    /// The position to commit: every open file with its offset and fingerprints.
    pub fn position(&mut self) -> TailPosition {
        TailPosition {
            files: (self.files.iter_mut())
                .filter(|f| !f.rewritten)
                .map(saved_file)
                .collect(),
            saved_at_ms: epoch_ms(SystemTime::now()),
            finished: self.finished.iter().cloned().collect(),
            pending: (self.pending.iter())
                .filter(|(_, lines)| !lines.is_empty())
                .map(|(source, lines)| (source.clone(), lines.clone()))
                .collect(),
        }
    }
}

impl TrackedFile {
    /// Whether a read at `now` may pass this file by: it is live, quiet for [`QUIET_AFTER`],
    /// holds no incomplete line or unfinished truncation, and was looked at within
    /// [`QUIET_LOOK_EVERY`]. (A container runtime's line in pieces waits in the tailer: the
    /// caller checks that.)
    fn may_wait(&self, now: Instant) -> bool {
        self.detached_since.is_none()
            && self.incomplete_since.is_none()
            && self.unseen_since.is_none()
            && now.saturating_duration_since(self.last_growth) >= QUIET_AFTER
            && (self.looked_at)
                .is_some_and(|at| now.saturating_duration_since(at) < QUIET_LOOK_EVERY)
    }
}

/// What the position keeps of a tracked file.
fn saved_file(f: &mut TrackedFile) -> SavedFile {
    SavedFile {
        source: f.source.clone(),
        path: f.path.clone(),
        dev: f.key.dev,
        ino: f.key.ino,
        source_id: f.source_id,
        offset: f.offset,
        head_len: f.head_len,
        head_hash: f.head_hash,
        tail_hash: tail_hash(f),
        drained: f.detached_since.is_some() && f.offset >= f.size_seen,
        copy: f.copy,
        unseen_since_ms: f.unseen_since.map(epoch_ms),
        format: f.format,
    }
}

fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The hash of the bytes before the file's offset, computed once per offset.
fn tail_hash(f: &mut TrackedFile) -> u64 {
    if let Some((at, hash)) = f.tail {
        if at == f.offset {
            return hash;
        }
    }
    let hash = hash_range(&f.file, f.offset.saturating_sub(TAIL_BYTES), f.offset).unwrap_or(0);
    f.tail = Some((f.offset, hash));
    hash
}

fn hash_range(file: &File, from: u64, to: u64) -> io::Result<u64> {
    let mut bytes = vec![0u8; (to - from) as usize];
    file.read_exact_at(&mut bytes, from)?;
    Ok(xxh3_64(&bytes))
}

/// A tracked file resumed at a saved offset, keeping its source id.
fn resumed(
    saved: &SavedFile,
    file: File,
    path: PathBuf,
    meta: &fs::Metadata,
    detached: bool,
    format: LogFormat,
) -> TrackedFile {
    TrackedFile {
        key: FileKey::of(meta),
        file,
        path: path.into(),
        source: saved.source.clone(),
        source_id: saved.source_id,
        offset: saved.offset,
        head_len: saved.head_len,
        head_hash: saved.head_hash,
        tail: Some((saved.offset, saved.tail_hash)),
        size_seen: meta.len(),
        modified: None,
        detached_since: detached.then(Instant::now),
        last_growth: Instant::now(),
        looked_at: None,
        incomplete_since: None,
        copy: saved.copy,
        unseen_since: saved
            .unseen_since_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
        rewritten: false,
        format,
        pending: Vec::new(),
    }
}

/// The source a rotated file's name belongs to: the source's name plus a suffix after `.` or
/// `-` (`access.log.1`, `access.log-20261205`), not compressed (`.gz` …: not lines).
fn rotated_name_of<'s>(name: &str, sources: impl IntoIterator<Item = &'s str>) -> Option<&'s str> {
    if COMPRESSED_SUFFIXES.iter().any(|c| name.ends_with(c)) {
        return None;
    }
    sources.into_iter().find(|s| {
        name.len() > s.len() + 1
            && name.starts_with(s)
            && matches!(name.as_bytes()[s.len()], b'.' | b'-')
    })
}

/// An open file found on disk, with its path and metadata.
type Found = (File, PathBuf, fs::Metadata);

/// Finds a saved file again by its inode: at its path, or anywhere in its directory (renamed
/// while the collector was down), and proves by its fingerprints that it still holds what was
/// read. `None` when the inode is gone or holds other content now.
fn find_by_inode(saved: &SavedFile) -> io::Result<Option<Found>> {
    let wanted = FileKey {
        dev: saved.dev,
        ino: saved.ino,
    };
    let mut candidates = vec![saved.path.to_path_buf()];
    if let Some(dir) = saved.path.parent() {
        if let Ok(entries) = fs::read_dir(dir) {
            candidates.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| **p != *saved.path),
            );
        }
    }
    for path in candidates {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_file() || FileKey::of(&meta) != wanted {
            continue;
        }
        // Nothing was read of it, so its fingerprint matches any file: elsewhere, only a name
        // rotation gives it (`app.log.1`) says it is the same file moved, not a reused inode.
        let rotated_name = || {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            rotated_name_of(name, [&*saved.source]).is_some()
        };
        if saved.head_len == 0 && *path != *saved.path && !rotated_name() {
            return Ok(None);
        }
        let file = File::open(&path)?;
        let meta = file.metadata()?;
        let same = meta.len() >= saved.offset
            && meta.len() >= saved.head_len
            && hash_range(&file, 0, saved.head_len)? == saved.head_hash
            && hash_range(&file, saved.offset.saturating_sub(TAIL_BYTES), saved.offset)?
                == saved.tail_hash;
        return Ok(same.then_some((file, path, meta)));
    }
    Ok(None)
}

/// How a file's content relates to what was read of a known one.
#[derive(Debug, PartialEq, Eq)]
enum Likeness {
    /// Same first bytes and the same bytes before the offset: it holds what was read, and
    /// whatever follows the offset was not read yet.
    Continues,
    /// Same first bytes but shorter than the offset: everything in it was read already.
    ReadPast,
    /// Another file.
    Other,
}

fn likeness(file: &File, size: u64, read: &SavedFile) -> io::Result<Likeness> {
    // An empty fingerprint matches anything, so it proves nothing.
    if read.head_len == 0 || size < read.head_len {
        return Ok(Likeness::Other);
    }
    if hash_range(file, 0, read.head_len)? != read.head_hash {
        return Ok(Likeness::Other);
    }
    if size < read.offset {
        return Ok(Likeness::ReadPast);
    }
    let tail = hash_range(file, read.offset.saturating_sub(TAIL_BYTES), read.offset)?;
    Ok(if tail == read.tail_hash {
        Likeness::Continues
    } else {
        Likeness::Other
    })
}

/// Whether `candidate`'s first `size` bytes are what `live` holds now, judged by the first
/// bytes and the bytes before `size`: a copy of the live file's current generation, finished or
/// still being written. logrotate copies before it truncates, so a copy being written is always
/// of what the file holds; judged by its few first bytes it would look like another file.
fn holds_live_content(candidate: &File, size: u64, live: &File) -> io::Result<bool> {
    if live.metadata()?.len() < size {
        return Ok(false);
    }
    let head = size.min(HEAD_BYTES);
    let tail_from = size.saturating_sub(TAIL_BYTES).max(head);
    Ok(
        hash_range(candidate, 0, head)? == hash_range(live, 0, head)?
            && hash_range(candidate, tail_from, size)? == hash_range(live, tail_from, size)?,
    )
}

/// The copy of a truncated file, found by content.
enum Copy {
    /// It holds lines past the offset reached: read them from there.
    Continues(File, PathBuf, fs::Metadata),
    /// It ends before the offset reached: nothing in it is unread.
    ReadPast(PathBuf),
}

/// Looks in `read`'s directory for a copy of it (copytruncate): a regular file, not `read`'s
/// own inode nor one `skip` names, whose first bytes and bytes before the offset are the ones
/// that were read. A copy that continues is preferred to one that was read past.
fn find_copy(read: &SavedFile, skip: impl Fn(FileKey) -> bool) -> io::Result<Option<Copy>> {
    let own = FileKey {
        dev: read.dev,
        ino: read.ino,
    };
    let Some(dir) = read.path.parent() else {
        return Ok(None);
    };
    let mut read_past = None;
    for entry in fs::read_dir(dir)?.flatten() {
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let key = FileKey::of(&meta);
        if !meta.file_type().is_file() || key == own || skip(key) || meta.len() < read.head_len {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        match likeness(&file, meta.len(), read) {
            Ok(Likeness::Continues) => return Ok(Some(Copy::Continues(file, path, meta))),
            Ok(Likeness::ReadPast) => read_past = Some(path),
            Ok(Likeness::Other) | Err(_) => {}
        }
    }
    Ok(read_past.map(Copy::ReadPast))
}

/// Recomputes the head fingerprint while it is shorter than [`HEAD_BYTES`] and the file grew.
fn refresh_head(f: &mut TrackedFile, size: u64) {
    let len = size.min(HEAD_BYTES);
    if len > f.head_len {
        if let Ok(hash) = hash_range(&f.file, 0, len) {
            f.head_len = len;
            f.head_hash = hash;
        }
    }
}

/// Whether the file's first bytes are still those we fingerprinted.
fn head_unchanged(f: &TrackedFile, size: u64) -> bool {
    if f.head_len == 0 {
        return true;
    }
    size >= f.head_len && hash_range(&f.file, 0, f.head_len).is_ok_and(|h| h == f.head_hash)
}

struct FileOutcome {
    records: u64,
    bytes: u64,
    more: bool,
    /// Nothing was read: the file shrank below its offset or its first bytes changed.
    truncated: bool,
}

fn read_file(
    f: &mut TrackedFile,
    buf: &mut [u8],
    options: &TailOptions,
    budget: u64,
    collected_at: &str,
    emit: &mut dyn FnMut(&CollectedRecordOut<'_>),
    metrics: &SourceMetrics,
) -> FileOutcome {
    let mut outcome = FileOutcome {
        records: 0,
        bytes: 0,
        more: false,
        truncated: false,
    };
    if f.rewritten {
        return outcome;
    }
    let Ok(meta) = f.file.metadata() else {
        return outcome;
    };
    let size = meta.len();
    let modified = meta.modified().ok();
    let written = modified != f.modified;
    // A write that left the size where it was can still be a truncate-and-rewrite to the
    // same length: any write re-checks the first bytes.
    if size < f.offset || (written && !head_unchanged(f, size)) {
        // Left for the tailer, which can look for the copy; the mtime is taken again then.
        outcome.truncated = true;
        return outcome;
    }
    f.modified = modified;
    f.size_seen = size;
    if size == f.offset && !written && f.incomplete_since.is_none() {
        return outcome;
    }
    refresh_head(f, size);
    let mut read_bytes = 0u64;
    let mut lines = 0u64;
    // How far the file reached at the last read: the end of what it returned, which a read
    // short of the buffer shows to be the file's end then (no second stat per read).
    let mut size_now = size;
    loop {
        if outcome.bytes >= budget {
            outcome.more = true;
            break;
        }
        let n = match f.file.read_at(buf, f.offset) {
            Ok(n) => n,
            Err(e) => {
                warn!(source = %f.source, error = %e, "Read failed; will retry.");
                break;
            }
        };
        if n == 0 {
            break;
        }
        f.last_growth = Instant::now();
        size_now = size_now.max(f.offset + n as u64);
        let at_eof = n < buf.len();
        let mut data = &buf[..n];
        let mut base = f.offset;
        if base == 0 && data.starts_with(UTF8_BOM) {
            data = &data[UTF8_BOM.len()..];
            base = UTF8_BOM.len() as u64;
        }
        let consumed_before = base - f.offset;
        let (consumed, emitted) = split_lines(
            data,
            base,
            f,
            options.max_line_bytes,
            collected_at,
            emit,
            metrics,
        );
        let total = consumed_before + consumed;
        f.offset += total;
        if total > 0 {
            remember_tail(f, &buf[..total as usize]);
        }
        outcome.bytes += total;
        read_bytes += total;
        lines += emitted;
        if total > 0 {
            f.incomplete_since = None;
        }
        if at_eof || total == 0 {
            break;
        }
    }
    outcome.records = lines;
    if read_bytes > 0 {
        let label = vec![("source".to_owned(), f.source.to_string())];
        metrics.lines.get_or_create(&label).inc_by(lines);
        metrics.bytes.get_or_create(&label).inc_by(read_bytes);
    }
    f.size_seen = f.size_seen.max(size_now);
    if size_now > f.offset && !outcome.more {
        // An incomplete last line: wait for its newline, or emit it once after the timeout.
        let since = *f.incomplete_since.get_or_insert_with(Instant::now);
        if options
            .partial_line_timeout
            .is_some_and(|t| since.elapsed() >= t)
        {
            let emitted = emit_partial(f, buf, size_now, collected_at, emit, metrics);
            outcome.records += emitted.records;
            outcome.bytes += emitted.bytes;
        }
    }
    outcome
}

struct Emitted {
    records: u64,
    bytes: u64,
}

/// Emits the bytes from the offset to `size` as one partial line (in pieces if over-long).
fn emit_partial(
    f: &mut TrackedFile,
    buf: &mut [u8],
    size: u64,
    collected_at: &str,
    emit: &mut dyn FnMut(&CollectedRecordOut<'_>),
    metrics: &SourceMetrics,
) -> Emitted {
    let mut emitted = Emitted {
        records: 0,
        bytes: 0,
    };
    while f.offset < size {
        let want = ((size - f.offset) as usize).min(buf.len());
        let Ok(n) = f.file.read_at(&mut buf[..want], f.offset) else {
            break;
        };
        if n == 0 {
            break;
        }
        let last = f.offset + n as u64 >= size;
        let nuls = leading_nuls(&buf[..n]);
        if nuls == n {
            f.offset += n as u64; // Preallocated or hole bytes with no line in them.
            emitted.bytes += n as u64;
            continue;
        }
        let line = trim_cr(&buf[nuls..n]);
        let id = RecordId {
            source_id: f.source_id,
            offset: f.offset + nuls as u64,
        };
        let flags = LineFlags {
            partial: last,
            split: !last,
            // A container runtime's line cut short: kept whole as written, not parsed.
            malformed: f.format.is_container(),
        };
        emit(&CollectedRecordOut::new(
            id,
            &f.source,
            collected_at,
            line,
            flags,
        ));
        f.offset += n as u64;
        emitted.records += 1;
        emitted.bytes += n as u64;
    }
    metrics.count_event(&f.source, "partial_line");
    f.incomplete_since = None;
    remember_tail(f, &[]);
    emitted
}

/// Hashes the bytes before the new offset while they are at hand (`read` holds the bytes just
/// consumed, ending at the offset): once a file is truncated they are only in its copy, and
/// the copy is recognised by this hash.
fn remember_tail(f: &mut TrackedFile, read: &[u8]) {
    let want = f.offset.min(TAIL_BYTES) as usize;
    let hash = if read.len() >= want {
        xxh3_64(&read[read.len() - want..])
    } else {
        hash_range(&f.file, f.offset - want as u64, f.offset).unwrap_or(0)
    };
    f.tail = Some((f.offset, hash));
}

/// Emits every complete line in `data` (which starts at file offset `base`), splitting lines
/// over `max_line_bytes`. Returns the bytes consumed (through the last newline, plus split
/// pieces of an over-long unterminated tail) and the records emitted.
fn split_lines(
    data: &[u8],
    base: u64,
    f: &mut TrackedFile,
    max_line_bytes: usize,
    collected_at: &str,
    emit: &mut dyn FnMut(&CollectedRecordOut<'_>),
    metrics: &SourceMetrics,
) -> (u64, u64) {
    let mut start = 0usize;
    let mut records = 0u64;
    let mut format = f.format;
    let mut pending = std::mem::take(&mut f.pending);
    let file: &TrackedFile = f;
    let id_at = |at: u64| RecordId {
        source_id: file.source_id,
        offset: at,
    };
    let mut emit_record =
        |piece: &[u8], id: RecordId, flags: LineFlags, origin: Option<ContainerOrigin<'_>>| {
            let mut record = CollectedRecordOut::new(id, &file.source, collected_at, piece, flags);
            if let Some(origin) = origin {
                record = record.from_container(origin);
            }
            if simdutf8::basic::from_utf8(piece).is_err() {
                metrics.count_event(&file.source, "invalid_utf8");
            }
            emit(&record);
            records += 1;
        };
    let split = LineFlags {
        split: true,
        ..LineFlags::default()
    };
    for newline in memchr::memchr_iter(b'\n', data) {
        let mut line_start = start + leading_nuls(&data[start..newline]);
        if line_start > start {
            // A writer without O_APPEND that kept its offset after a truncation leaves a hole
            // of NUL bytes before its next line: padding, not content.
            metrics.count_event(&file.source, "nul_padding_skipped");
            if line_start == newline {
                start = newline + 1;
                continue;
            }
        }
        while newline - line_start > max_line_bytes {
            metrics.count_event(&file.source, "split_line");
            let malformed = format.is_container();
            let flags = LineFlags { malformed, ..split };
            let piece = &data[line_start..line_start + max_line_bytes];
            emit_record(piece, id_at(base + line_start as u64), flags, None);
            line_start += max_line_bytes;
        }
        let line = &data[line_start..newline];
        let at = base + line_start as u64;
        if format == LogFormat::Auto {
            format = format.resolve(line);
        }
        if !format.is_container() {
            emit_record(trim_cr(line), id_at(at), LineFlags::default(), None);
        } else if let Some(piece) = container::parse(format, line) {
            if let Some(joined) = container::join(&mut pending, piece, id_at(at), max_line_bytes) {
                emit_record(
                    &joined.text,
                    joined.id,
                    joined.flags(),
                    Some(joined.origin()),
                );
            }
        } else {
            metrics.count_event(&file.source, "malformed_line");
            let flags = LineFlags {
                malformed: true,
                ..LineFlags::default()
            };
            emit_record(line, id_at(at), flags, None);
        }
        start = newline + 1;
    }
    // An unterminated tail that is already over the limit cannot become a shorter line.
    while data.len() - start > max_line_bytes {
        metrics.count_event(&file.source, "split_line");
        let flags = LineFlags {
            malformed: format.is_container(),
            ..split
        };
        let piece = &data[start..start + max_line_bytes];
        emit_record(piece, id_at(base + start as u64), flags, None);
        start += max_line_bytes;
    }
    f.format = format;
    f.pending = pending;
    (start as u64, records)
}

fn leading_nuls(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|&&b| b == 0).count()
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests;
