//! The file sink: NDJSON files, one per source file or one for all, rolled by size, closed
//! files gzipped off the delivery path ([`closed`]).
//!
//! Exactly once by the journal protocol: every file's committed length is part of the
//! forwarder's checkpoint. On start (and before a retried batch) each file is cut back to that
//! length and files started after the commit are removed, so a crash or a failed write never
//! leaves a record twice or half a record.
//!
//! Because of that cut, a batch is in the files as soon as it is sent, and its fsync waits for
//! the commit ([`Sink::sync`]), which may cover several batches (`commit_interval`): at a
//! steady 10,000 lines/s, an fsync per file per batch was half of the forwarder's CPU.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::warn;

mod closed;
use closed::ClosedFiles;

use super::{OutRecord, Sink, SinkError};
use crate::checkpoint::{sync_dir, Durability};

const ALL_RECORDS: &str = "all";

/// Settings of a file sink.
#[derive(Debug, Clone)]
pub struct FileSinkOptions {
    /// The sink's name.
    pub name: String,
    /// Where the files go.
    pub directory: PathBuf,
    /// One file per source file, or one (`all`) for everything.
    pub per_source: bool,
    /// Start a new file past this size.
    pub max_file_bytes: u64,
    /// gzip files once closed.
    pub compress_closed: bool,
    /// Keep at most this many closed files per stream, deleting the oldest once a roll is
    /// committed; `None` keeps them all.
    pub max_closed_files: Option<u64>,
    /// Whether the files are fsynced before each commit.
    pub durability: Durability,
    /// How long a commit may wait to cover later batches too.
    pub commit_interval: std::time::Duration,
}

/// Committed state of one output stream: which file number is open and how long it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct StreamState {
    seq: u64,
    len: u64,
}

/// NDJSON files with exactly-once content.
pub struct FileSink {
    options: FileSinkOptions,
    /// Committed state per stream (the file name stem: a source file name or `all`).
    committed: BTreeMap<String, StreamState>,
    /// State after the last successful send, committed next.
    pending: BTreeMap<String, StreamState>,
    open: BTreeMap<String, File>,
    /// Files closed by a roll, compressed once the roll is committed.
    closed: Vec<PathBuf>,
    /// Compresses and prunes closed files in the background.
    closed_files: ClosedFiles,
    /// A send failed: files may hold bytes past `pending`, cut before the next write.
    dirty: bool,
    /// Written since the last sync: the streams whose open file got bytes, the files closed by
    /// a roll meanwhile, and whether a file was created (its directory entry needs a sync).
    unsynced: Unsynced,
}

#[derive(Default)]
struct Unsynced {
    streams: Vec<String>,
    rolled: Vec<(PathBuf, File)>,
    created: bool,
}

impl FileSink {
    /// Opens the sink, cutting its files back to the committed `saved` state.
    ///
    /// # Errors
    /// When the directory cannot be created or listed, or a file cannot be cut back.
    pub fn open(options: FileSinkOptions, saved: Option<&Value>) -> Result<Self, SinkError> {
        let committed: BTreeMap<String, StreamState> = saved
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or_default();
        let name = options.name.clone();
        let io = |path: &Path, source| SinkError::Io {
            sink: name.clone(),
            path: path.to_owned(),
            source,
        };
        fs::create_dir_all(&options.directory).map_err(|e| io(&options.directory, e))?;
        let closed_files =
            ClosedFiles::start(&name, &options.directory).map_err(|e| io(&options.directory, e))?;
        let mut sink = Self {
            pending: committed.clone(),
            committed,
            open: BTreeMap::new(),
            closed: Vec::new(),
            closed_files,
            dirty: false,
            unsynced: Unsynced::default(),
            options,
        };
        sink.recover().map_err(|(path, e)| io(&path, e))?;
        Ok(sink)
    }

    /// Brings the directory to the committed state (cut open files, remove files started
    /// after the commit), then finishes compressing closed files.
    fn recover(&mut self) -> Result<(), (PathBuf, io::Error)> {
        self.reconcile(&self.committed.clone())?;
        let dir = self.options.directory.clone();
        for entry in fs::read_dir(&dir).map_err(|e| (dir.clone(), e))?.flatten() {
            let path = entry.path();
            let Some((stem, seq, false)) = parse_file_name(&path) else {
                continue;
            };
            if self.committed.get(&stem).is_some_and(|s| seq < s.seq) {
                if gz_path(&path).exists() {
                    fs::remove_file(&path).map_err(|e| (path.clone(), e))?;
                } else if self.options.compress_closed {
                    self.closed.push(path);
                }
            }
        }
        self.compress_closed();
        Ok(())
    }

    /// Cuts every file back to `truth`: the open file of a stream to its length; files of
    /// later numbers or unknown streams removed.
    fn reconcile(&self, truth: &BTreeMap<String, StreamState>) -> Result<(), (PathBuf, io::Error)> {
        let dir = &self.options.directory;
        for entry in fs::read_dir(dir).map_err(|e| (dir.clone(), e))?.flatten() {
            let path = entry.path();
            let Some((stem, seq, gz)) = parse_file_name(&path) else {
                continue;
            };
            match truth.get(&stem) {
                Some(s) if seq == s.seq && !gz => {
                    let file = OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|e| (path.clone(), e))?;
                    let len = file.metadata().map_err(|e| (path.clone(), e))?.len();
                    if len > s.len {
                        warn!(sink = %self.options.name, file = %path.display(), extra_bytes = len - s.len, "Cutting records written after the last commit; they are delivered again.");
                        file.set_len(s.len).map_err(|e| (path.clone(), e))?;
                    }
                }
                Some(s) if seq < s.seq || (seq == s.seq && gz) => {}
                _ => {
                    warn!(sink = %self.options.name, file = %path.display(), "Removing a file started after the last commit; its records are delivered again.");
                    fs::remove_file(&path).map_err(|e| (path.clone(), e))?;
                }
            }
        }
        Ok(())
    }

    fn stream_of<'r>(&self, record: &'r OutRecord<'_>) -> &'r str {
        if self.options.per_source {
            record.source_file()
        } else {
            ALL_RECORDS
        }
    }

    fn path_of(&self, stream: &str, seq: u64) -> PathBuf {
        self.options
            .directory
            .join(format!("{}.{seq:06}.ndjson", sanitize(stream)))
    }

    fn try_send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), (PathBuf, io::Error)> {
        if self.dirty {
            self.reconcile(&self.pending.clone())?;
            self.dirty = false;
        }
        // Group by stream so each file gets one buffered write and one fsync per batch.
        let mut groups: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
        for record in batch {
            groups
                .entry(self.stream_of(record))
                .or_default()
                .push(record.raw);
        }
        let mut created = false;
        for (stream, lines) in groups {
            let mut state = self.pending.get(stream).copied().unwrap_or_default();
            if state.len >= self.options.max_file_bytes {
                let closing = self.path_of(stream, state.seq);
                if let Some(file) = self.open.remove(stream) {
                    self.unsynced.rolled.push((closing.clone(), file));
                }
                self.closed.push(closing);
                state = StreamState {
                    seq: state.seq + 1,
                    len: 0,
                };
            }
            let path = self.path_of(stream, state.seq);
            let file = match self.open.entry(stream.to_owned()) {
                std::collections::btree_map::Entry::Occupied(open) => open.into_mut(),
                std::collections::btree_map::Entry::Vacant(slot) => {
                    let file = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&path)
                        .map_err(|e| (path.clone(), e))?;
                    created |= state.len == 0;
                    slot.insert(file)
                }
            };
            let mut writer = BufWriter::with_capacity(256 << 10, &*file);
            let mut written = 0u64;
            for line in lines {
                writer.write_all(line).map_err(|e| (path.clone(), e))?;
                writer.write_all(b"\n").map_err(|e| (path.clone(), e))?;
                written += line.len() as u64 + 1;
            }
            writer.flush().map_err(|e| (path.clone(), e))?;
            drop(writer);
            state.len += written;
            self.pending.insert(stream.to_owned(), state);
            if !self.unsynced.streams.iter().any(|s| s == stream) {
                self.unsynced.streams.push(stream.to_owned());
            }
        }
        self.unsynced.created |= created;
        Ok(())
    }

    /// fsyncs what was written since the last sync: the open files written to, the files a
    /// roll closed meanwhile, and the directory when a file was created.
    fn try_sync(&mut self) -> Result<(), (PathBuf, io::Error)> {
        let unsynced = std::mem::take(&mut self.unsynced);
        if self.options.durability != Durability::Fsync {
            return Ok(());
        }
        for (path, file) in &unsynced.rolled {
            file.sync_data().map_err(|e| (path.clone(), e))?;
        }
        for stream in &unsynced.streams {
            let Some(state) = self.pending.get(stream) else {
                continue; // Only a failed attempt wrote there; its bytes are cut, not kept.
            };
            let path = self.path_of(stream, state.seq);
            let synced = match self.open.get(stream) {
                Some(file) => file.sync_data(),
                // A failed send let go of the open files; what earlier sends wrote is there.
                None => File::open(&path).and_then(|file| file.sync_data()),
            };
            synced.map_err(|e| (path, e))?;
        }
        if unsynced.created {
            sync_dir(&self.options.directory).map_err(|e| (self.options.directory.clone(), e))?;
        }
        Ok(())
    }

    /// Hands the closed files of committed rolls to the background worker.
    fn compress_closed(&mut self) {
        for path in std::mem::take(&mut self.closed) {
            self.closed_files.compress(path);
        }
    }

    /// Queues the deletion of closed files beyond the newest `keep` of each stream. Run after
    /// a roll only, so a commit without one costs no directory listing.
    fn delete_oldest_closed(&self, keep: u64) {
        let open = self
            .committed
            .iter()
            .map(|(stream, state)| (sanitize(stream), state.seq))
            .collect();
        self.closed_files.prune(open, keep);
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.options.name
    }

    fn send(&mut self, batch: &[OutRecord<'_>]) -> Result<(), SinkError> {
        let before = self.pending.clone();
        let closed_before = self.closed.len();
        self.try_send(batch).map_err(|(path, source)| {
            // Undo what this attempt did; the bytes it wrote are cut before the retry.
            self.pending = before;
            self.closed.truncate(closed_before);
            self.open.clear();
            self.dirty = true;
            SinkError::Io {
                sink: self.options.name.clone(),
                path,
                source,
            }
        })
    }

    fn state(&self) -> Value {
        serde_json::to_value(&self.pending).expect("file sink state serialises")
    }

    fn sync(&mut self) -> Result<(), SinkError> {
        self.try_sync().map_err(|(path, source)| SinkError::Io {
            sink: self.options.name.clone(),
            path,
            source,
        })
    }

    fn commit_within(&self) -> std::time::Duration {
        self.options.commit_interval
    }

    fn committed(&mut self) {
        self.committed = self.pending.clone();
        let rolled = !self.closed.is_empty();
        if self.options.compress_closed {
            self.compress_closed();
        } else {
            self.closed.clear();
        }
        if let (true, Some(keep)) = (rolled, self.options.max_closed_files) {
            self.delete_oldest_closed(keep);
        }
    }
}

impl FileSink {
    #[cfg(test)]
    fn file_text(&self, stream: &str) -> String {
        let state = self.pending.get(stream).copied().unwrap_or_default();
        fs::read_to_string(self.path_of(stream, state.seq)).unwrap_or_default()
    }
}

fn sanitize(stream: &str) -> String {
    stream
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `access.log.000003.ndjson[.gz]` → (`access.log`, 3, gz?)
fn parse_file_name(path: &Path) -> Option<(String, u64, bool)> {
    let name = path.file_name()?.to_str()?;
    let (name, gz) = match name.strip_suffix(".gz") {
        Some(n) => (n, true),
        None => (name, false),
    };
    let name = name.strip_suffix(".ndjson")?;
    let (stem, seq) = name.rsplit_once('.')?;
    if seq.len() != 6 {
        return None;
    }
    Some((stem.to_owned(), seq.parse().ok()?, gz))
}

fn gz_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn options(dir: &Path, max_file_bytes: u64) -> FileSinkOptions {
        FileSinkOptions {
            name: "archive".into(),
            directory: dir.to_owned(),
            per_source: true,
            max_file_bytes,
            compress_closed: true,
            max_closed_files: None,
            durability: Durability::Fsync,
            commit_interval: std::time::Duration::ZERO,
        }
    }

    fn batch(lines: &[String]) -> Vec<OutRecord<'_>> {
        lines
            .iter()
            .map(|l| OutRecord::decode(l.as_bytes()))
            .collect()
    }

    fn lines(source: &str, range: std::ops::Range<u32>) -> Vec<String> {
        range
            .map(|n| format!(r#"{{"source_file":"{source}","n":{n}}}"#))
            .collect()
    }

    #[test]
    fn records_go_to_one_file_per_source() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::open(options(dir.path(), 1 << 20), None).unwrap();
        let mut input = lines("a.log", 0..2);
        input.extend(lines("b.log", 0..1));
        sink.send(&batch(&input)).unwrap();
        sink.committed();
        assert_eq!(
            sink.file_text("a.log"),
            format!("{}\n{}\n", input[0], input[1])
        );
        assert_eq!(sink.file_text("b.log"), format!("{}\n", input[2]));
    }

    #[test]
    fn a_restart_cuts_what_was_sent_after_the_last_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::open(options(dir.path(), 1 << 20), None).unwrap();
        let first = lines("a.log", 0..3);
        sink.send(&batch(&first)).unwrap();
        let saved = sink.state();
        sink.committed();
        sink.send(&batch(&lines("a.log", 3..6))).unwrap();
        sink.send(&batch(&lines("new.log", 0..1))).unwrap();
        // Crash before the commit: restart from `saved`.
        drop(sink);
        let sink = FileSink::open(options(dir.path(), 1 << 20), Some(&saved)).unwrap();
        assert_eq!(
            sink.file_text("a.log"),
            first.iter().map(|l| format!("{l}\n")).collect::<String>()
        );
        assert!(!dir.path().join("new.log.000000.ndjson").exists());
    }

    fn sorted_names(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_roll_by_size_and_closed_ones_are_gzipped_after_the_commit() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::open(options(dir.path(), 50), None).unwrap();
        let all = lines("a.log", 0..6);
        for chunk in all.chunks(2) {
            sink.send(&batch(chunk)).unwrap();
            sink.committed();
        }
        sink.closed_files.finish_queued();
        let names = sorted_names(dir.path());
        assert_eq!(
            names,
            [
                "a.log.000000.ndjson.gz",
                "a.log.000001.ndjson.gz",
                "a.log.000002.ndjson"
            ]
        );
        let mut text = String::new();
        flate2::read::GzDecoder::new(
            File::open(dir.path().join("a.log.000000.ndjson.gz")).unwrap(),
        )
        .read_to_string(&mut text)
        .unwrap();
        assert_eq!(text, format!("{}\n{}\n", all[0], all[1]));
    }

    #[test]
    fn only_the_newest_closed_files_are_kept_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let options = FileSinkOptions {
            max_closed_files: Some(1),
            ..options(dir.path(), 50)
        };
        let mut sink = FileSink::open(options, None).unwrap();
        for chunk in lines("a.log", 0..8).chunks(2) {
            sink.send(&batch(chunk)).unwrap();
            sink.committed();
        }
        sink.closed_files.finish_queued();
        let names = sorted_names(dir.path());
        assert_eq!(names, ["a.log.000002.ndjson.gz", "a.log.000003.ndjson"]);
    }

    #[test]
    fn closed_files_still_queued_at_shutdown_are_compressed_on_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::open(options(dir.path(), 50), None).unwrap();
        for chunk in lines("a.log", 0..40).chunks(2) {
            sink.send(&batch(chunk)).unwrap();
        }
        let saved = sink.state();
        sink.sync().unwrap();
        sink.committed(); // queues 19 closed files at once
        drop(sink); // waits for the one under way only
        let names = sorted_names(dir.path());
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        let mut sink = FileSink::open(options(dir.path(), 50), Some(&saved)).unwrap();
        sink.closed_files.finish_queued();
        let names = sorted_names(dir.path());
        let plain: Vec<_> = names.iter().filter(|n| n.ends_with(".ndjson")).collect();
        assert_eq!(plain, ["a.log.000019.ndjson"], "{names:?}");
        assert_eq!(names.len(), 20, "{names:?}");
    }

    #[test]
    fn a_leftover_closed_file_is_compressed_on_start() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.log.000000.ndjson"), "x\n").unwrap();
        let saved = serde_json::json!({"a.log": {"seq": 1, "len": 0}});
        let mut sink = FileSink::open(options(dir.path(), 50), Some(&saved)).unwrap();
        sink.closed_files.finish_queued();
        assert!(dir.path().join("a.log.000000.ndjson.gz").exists());
        assert!(!dir.path().join("a.log.000000.ndjson").exists());
    }

    #[test]
    fn a_retried_batch_after_a_failed_write_is_not_written_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::open(options(dir.path(), 1 << 20), None).unwrap();
        let first = lines("a.log", 0..2);
        sink.send(&batch(&first)).unwrap();
        sink.committed();
        // A failed attempt that left part of its bytes behind:
        let second = lines("a.log", 2..4);
        fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("a.log.000000.ndjson"))
            .unwrap()
            .write_all(b"{\"half")
            .unwrap();
        fs::write(dir.path().join("b.log.000000.ndjson"), "orphan\n").unwrap();
        sink.dirty = true;
        sink.send(&batch(&second)).unwrap();
        let expected: String = first
            .iter()
            .chain(&second)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(sink.file_text("a.log"), expected);
        assert!(!dir.path().join("b.log.000000.ndjson").exists());
    }

    #[test]
    fn batches_between_commits_are_in_the_files_at_once_and_one_sync_covers_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::open(options(dir.path(), 50), None).unwrap();
        let all = lines("a.log", 0..6);
        let mut sent = String::new();
        for chunk in all.chunks(2) {
            // Rolls to a new file each time: the closed ones are synced at the commit too.
            sink.send(&batch(chunk)).unwrap();
            sent.extend(chunk.iter().map(|l| format!("{l}\n")));
        }
        sink.send(&batch(&lines("b.log", 0..1))).unwrap();
        // A failed attempt let go of the open files; the sync finds them by name.
        sink.open.clear();
        sink.sync().unwrap();
        assert!(sink.unsynced.streams.is_empty() && sink.unsynced.rolled.is_empty());
        let saved = sink.state();
        sink.committed();
        sink.closed_files.finish_queued();
        drop(sink);
        let mut sink = FileSink::open(options(dir.path(), 50), Some(&saved)).unwrap();
        let mut text = String::new();
        for seq in 0..3 {
            let path = dir.path().join(format!("a.log.{seq:06}.ndjson"));
            let plain = fs::read_to_string(&path);
            text += &plain.unwrap_or_else(|_| {
                let mut gz = flate2::read::GzDecoder::new(File::open(gz_path(&path)).unwrap());
                let mut s = String::new();
                gz.read_to_string(&mut s).unwrap();
                s
            });
        }
        assert_eq!(text, sent);
        assert_eq!(
            sink.file_text("b.log"),
            format!("{}\n", lines("b.log", 0..1)[0])
        );
        sink.sync().unwrap();
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(
            parse_file_name(Path::new("/x/access.log.000003.ndjson.gz")),
            Some(("access.log".into(), 3, true))
        );
        assert_eq!(parse_file_name(Path::new("/x/notes.txt")), None);
        assert_eq!(sanitize("../etc/passwd"), ".._etc_passwd");
    }
}
