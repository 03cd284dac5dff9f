//! Small state files that must survive a crash whole: commit files, reader cursors, stats.
//!
//! Two kinds. A stage's commit and cursor are stored often, through a [`CheckpointFile`]: two
//! slots in one file, overwritten in place, one device flush a store ([`slotted`] says why and
//! how), with a twin copy to fall back on. Advisory files (stats) are replaced whole with
//! [`store_json`]. [`load_or_backup`] reads either kind, and the single-JSON commit files of
//! earlier versions.
//!
//! Easy to get wrong: durability order. New content is flushed to the device *before* anything
//! refers to it: a replaced file's temp file before the rename, and the directory after it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

mod slotted;
pub use self::slotted::CheckpointFile;

/// Why a checkpoint file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading failed for a reason other than the file being absent.
    #[error("cannot read checkpoint {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The file exists but is not a valid checkpoint (empty, garbage, wrong shape).
    #[error("checkpoint {} is corrupt", .path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the decoder said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file has a format version this build does not understand.
    #[error("checkpoint {} has unknown format version {version} (this build reads {expected})", .path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
        /// The version this build writes.
        expected: u32,
    },
    /// Writing, syncing or renaming failed; the previous checkpoint is still in place.
    #[error("cannot write checkpoint {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// How durable a write must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the temp file before rename and the directory after: survives power loss.
    Fsync,
    /// Rename only: survives a process crash (the page cache holds the data), which is what
    /// an emptyDir on a node that keeps running needs. Also right for advisory files (stats).
    PageCache,
}

impl Durability {
    /// The durability an `--fsync` flag asks for.
    pub fn from_fsync_flag(fsync: bool) -> Self {
        if fsync {
            Durability::Fsync
        } else {
            Durability::PageCache
        }
    }
}

/// Replaces `path` with `bytes` atomically.
///
/// # Errors
/// [`CheckpointError::Write`] when any step fails; `path` then still holds its old content.
pub fn write_atomic(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> Result<(), CheckpointError> {
    replace_file(path, bytes, durability)?;
    sync_dir_of(path, durability)
}

/// Writes `bytes` to a temp file (synced when asked) and renames it over `path`; the
/// directory entry is not synced.
fn replace_file(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), CheckpointError> {
    let wrap = |source| CheckpointError::Write {
        path: path.to_owned(),
        source,
    };
    let tmp = temp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(wrap)?;
    file.write_all(bytes).map_err(wrap)?;
    if durability == Durability::Fsync {
        file.sync_data().map_err(wrap)?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(wrap)
}

/// Makes renames in `path`'s directory durable, when asked.
fn sync_dir_of(path: &Path, durability: Durability) -> Result<(), CheckpointError> {
    if durability == Durability::Fsync {
        sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(|source| {
            CheckpointError::Write {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

fn json_line<T: Serialize>(value: &T) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(value).expect("checkpoint types serialise infallibly");
    bytes.push(b'\n');
    bytes
}

/// Serialises `value` as JSON and replaces `path` with it atomically.
///
/// # Errors
/// As [`write_atomic`].
pub fn store_json<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), CheckpointError> {
    write_atomic(path, &json_line(value), durability)
}

/// A stats file a stage refreshes on a timer: `{"updated_at": …, <the report's fields>}`,
/// written only when the report changed, so `updated_at` says when it last did. Rewriting an
/// unchanged file every few seconds cost an idle stage a file created and renamed, and woke
/// every watcher of the directory (the next stage's) for nothing.
#[derive(Debug)]
pub struct StatsFile {
    path: PathBuf,
    /// The xxh3 of the report last written.
    last: Option<u64>,
}

impl StatsFile {
    /// The stats file at `path`; nothing is written until [`StatsFile::refresh`].
    pub fn new(path: PathBuf) -> Self {
        Self { path, last: None }
    }

    /// Writes `report` (a struct or map), stamped now, unless it is what was written last.
    ///
    /// # Errors
    /// As [`write_atomic`]; the next refresh tries again.
    pub fn refresh<T: Serialize>(&mut self, report: &T) -> Result<(), CheckpointError> {
        let body = serde_json::to_vec(report).expect("stats serialise infallibly");
        let hash = xxhash_rust::xxh3::xxh3_64(&body);
        if self.last == Some(hash) {
            return Ok(());
        }
        let fields = body
            .strip_prefix(b"{")
            .filter(|rest| *rest != b"}")
            .map_or(&b"}"[..], |rest| rest);
        let comma = if fields == b"}" { "" } else { "," };
        let mut line = format!(
            "{{\"updated_at\":\"{}\"{comma}",
            crate::time::timestamp_now()
        )
        .into_bytes();
        line.extend_from_slice(fields);
        line.push(b'\n');
        write_atomic(&self.path, &line, Durability::PageCache)?;
        self.last = Some(hash);
        Ok(())
    }
}

/// Where a checkpoint's twin copy is kept: `commit.json` → `commit.json.backup`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".backup");
    path.with_file_name(name)
}

impl CheckpointError {
    /// Whether writing failed because the volume is full or a quota is exhausted: the same
    /// store can be tried again once space returns.
    pub fn is_out_of_space(&self) -> bool {
        matches!(self, CheckpointError::Write { source, .. } if matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ))
    }
}

/// A checkpoint as loaded: the file, or its backup copy when the file is corrupt.
#[derive(Debug)]
pub enum Loaded<T> {
    /// The file.
    Current(T),
    /// The file was corrupt; this is its backup twin (the same version, or one ahead).
    Backup {
        /// The backup's content.
        value: T,
        /// What was wrong with the file.
        error: CheckpointError,
    },
}

impl<T> Loaded<T> {
    /// The value, wherever it came from.
    pub fn into_value(self) -> T {
        match self {
            Loaded::Current(v) | Loaded::Backup { value: v, .. } => v,
        }
    }
}

/// How a checkpoint's JSON (a slot's payload, or a whole single-JSON file) becomes a value.
pub type Decode<T> = fn(&[u8]) -> Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Loads a checkpoint, falling back to its twin copy when the file is corrupt (empty, garbage,
/// NUL-filled, no whole slot). Reads the two-slot files of [`CheckpointFile`] and the single
/// JSON files of earlier versions and of [`store_json`].
///
/// # Errors
/// The file's error when it is unreadable, or corrupt with no usable twin.
pub fn load_or_backup<T: DeserializeOwned>(
    path: &Path,
) -> Result<Option<Loaded<T>>, CheckpointError> {
    load_or_backup_with(path, decode_json)
}

/// As [`load_or_backup`], with `decode` instead of a whole `serde_json` decode: for a reader
/// that needs a few of the fields (a slot's checksum has vouched for the bytes already).
///
/// # Errors
/// As [`load_or_backup`].
pub fn load_or_backup_with<T>(
    path: &Path,
    decode: Decode<T>,
) -> Result<Option<Loaded<T>>, CheckpointError> {
    or_backup(path, load_with(path, decode), decode)
}

/// `loaded` from the file at `path`, or its twin's value when the file was corrupt.
fn or_backup<T>(
    path: &Path,
    loaded: Result<Option<T>, CheckpointError>,
    decode: Decode<T>,
) -> Result<Option<Loaded<T>>, CheckpointError> {
    match loaded {
        Ok(value) => Ok(value.map(Loaded::Current)),
        Err(error @ CheckpointError::Corrupt { .. }) => match load_with(&backup_path(path), decode)
        {
            Ok(Some(value)) => Ok(Some(Loaded::Backup { value, error })),
            _ => Err(error),
        },
        Err(error) => Err(error),
    }
}

/// Reads a checkpoint (the newest whole slot of a two-slot file, or a single JSON file);
/// `Ok(None)` when the file does not exist.
///
/// # Errors
/// [`CheckpointError::Read`] for I/O errors, [`CheckpointError::Corrupt`] when the content does
/// not decode as `T` (a zero-length file included).
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, CheckpointError> {
    load_with(path, decode_json)
}

fn decode_json<T: DeserializeOwned>(
    json: &[u8],
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    Ok(serde_json::from_slice(json)?)
}

/// [`load`] with the JSON decoded by `decode`.
fn load_with<T>(path: &Path, decode: Decode<T>) -> Result<Option<T>, CheckpointError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(CheckpointError::Read {
                path: path.to_owned(),
                source,
            })
        }
    };
    decode_file(path, &bytes, decode).map(Some)
}

/// A checkpoint file's bytes decoded: the newest whole slot of a two-slot file, or the whole
/// of a single JSON file.
fn decode_file<T>(path: &Path, bytes: &[u8], decode: Decode<T>) -> Result<T, CheckpointError> {
    let json = match slotted::is_slotted(bytes) {
        true => slotted::payload(path, bytes)?,
        false => bytes,
    };
    decode(json).map_err(|source| CheckpointError::Corrupt {
        path: path.to_owned(),
        source,
    })
}

/// A checkpoint read again and again, as a journal's commit file is by the next stage at
/// every batch: the file is kept open and read in place into one buffer, so a read is two
/// system calls (`fstat`, `pread`) where [`load_or_backup_with`] makes five (it opens, sizes,
/// reads twice and closes) and allocates. A file replaced since it was opened (a
/// [`CheckpointFile`] that moved to larger or smaller slots, a single JSON file stored again)
/// has no links left, which the `fstat` shows: it is opened again by its path.
#[derive(Debug)]
pub struct CheckpointReader {
    path: PathBuf,
    open: Option<File>,
    bytes: Vec<u8>,
}

impl CheckpointReader {
    /// A reader of the checkpoint at `path` (which need not exist yet).
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            open: None,
            bytes: Vec::new(),
        }
    }

    /// The checkpoint file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// As [`load_or_backup_with`]: the file's newest value, its twin's when the file is
    /// corrupt, `None` when there is no file.
    ///
    /// # Errors
    /// As [`load_or_backup_with`].
    pub fn load_or_backup_with<T>(
        &mut self,
        decode: Decode<T>,
    ) -> Result<Option<Loaded<T>>, CheckpointError> {
        let read = self.read().map_err(|source| CheckpointError::Read {
            path: self.path.clone(),
            source,
        })?;
        let loaded = match read {
            true => decode_file(&self.path, &self.bytes, decode).map(Some),
            false => Ok(None),
        };
        // A corrupt file (rare: torn or damaged) falls back to its twin, read the plain way.
        or_backup(&self.path, loaded, decode)
    }

    /// Reads the whole file into `bytes`; `false` when it does not exist.
    fn read(&mut self) -> io::Result<bool> {
        let mut kept = None;
        if let Some(file) = self.open.take() {
            kept = still_linked(&file)?.map(|len| (file, len));
        }
        let (file, len) = match kept {
            Some(kept) => kept,
            None => match self.open_again()? {
                Some(opened) => opened,
                None => return Ok(false),
            },
        };
        self.bytes
            .resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
        let mut filled = 0;
        // A file cut shorter between the `fstat` and here reads as far as it goes.
        while filled < self.bytes.len() {
            match file.read_at(&mut self.bytes[filled..], filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.bytes.truncate(filled);
        self.open = Some(file);
        Ok(true)
    }

    /// Opens the file by its path: the file and its length, `None` when there is none.
    fn open_again(&self) -> io::Result<Option<(File, u64)>> {
        let file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        Ok(Some((file, len)))
    }
}

/// The open file's length, or `None` when its path no longer leads to it (renamed over or
/// deleted: no links left).
fn still_linked(file: &File) -> io::Result<Option<u64>> {
    let metadata = file.metadata()?;
    Ok((metadata.nlink() > 0).then_some(metadata.len()))
}

/// Checks a decoded checkpoint's `version` field against the one this build writes.
///
/// # Errors
/// [`CheckpointError::Version`] when they differ.
pub fn check_version(path: &Path, version: u32, expected: u32) -> Result<(), CheckpointError> {
    if version == expected {
        Ok(())
    } else {
        Err(CheckpointError::Version {
            path: path.to_owned(),
            version,
            expected,
        })
    }
}

/// fsyncs a directory so that a rename or a new file inside it is durable.
///
/// # Errors
/// The I/O error from opening or syncing the directory.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct State {
        version: u32,
        offset: u64,
    }

    #[test]
    fn a_stats_file_is_written_again_only_when_its_report_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stats.json");
        let mut stats = StatsFile::new(path.clone());
        let inode = || std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        stats
            .refresh(&State {
                version: 1,
                offset: 5,
            })
            .unwrap();
        let written: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["offset"], 5);
        assert!(written["updated_at"].is_string(), "{written}");
        let first = inode();
        stats
            .refresh(&State {
                version: 1,
                offset: 5,
            })
            .unwrap();
        assert_eq!(inode(), first, "the same report is not written again");
        stats
            .refresh(&State {
                version: 1,
                offset: 6,
            })
            .unwrap();
        assert_ne!(inode(), first);
        let written: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["offset"], 6);
        StatsFile::new(path.clone())
            .refresh(&serde_json::json!({}))
            .unwrap();
        let written: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(written.as_object().unwrap().len(), 1, "{written}");
    }

    #[test]
    fn stores_and_loads_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        assert_eq!(load::<State>(&path).unwrap(), None);
        for offset in [1, 2] {
            store_json(&path, &State { version: 1, offset }, Durability::Fsync).unwrap();
        }
        assert_eq!(
            load::<State>(&path).unwrap(),
            Some(State {
                version: 1,
                offset: 2
            })
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["commit.json"]);
    }

    #[test]
    fn empty_or_garbage_files_are_corrupt_and_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        for content in [&b""[..], b"\0\0\0\0", b"{\"version\":1,"] {
            fs::write(&path, content).unwrap();
            let err = load::<State>(&path).unwrap_err();
            assert!(matches!(err, CheckpointError::Corrupt { .. }));
            assert!(err.to_string().contains("commit.json is corrupt"), "{err}");
        }
    }

    fn state(offset: u64) -> State {
        State { version: 1, offset }
    }

    fn stored(path: &Path, offsets: impl IntoIterator<Item = u64>) -> CheckpointFile {
        let mut file = CheckpointFile::new(path.to_owned());
        for offset in offsets {
            file.store(&state(offset), Durability::Fsync).unwrap();
        }
        file
    }

    fn loaded(path: &Path) -> Loaded<State> {
        load_or_backup::<State>(path).unwrap().unwrap()
    }

    #[test]
    fn a_checkpoint_file_is_overwritten_in_place_and_reads_back_its_latest_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        let mut file = stored(&path, [1]);
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        for offset in 2..=5 {
            file.store(&state(offset), Durability::Fsync).unwrap();
            assert!(matches!(loaded(&path), Loaded::Current(s) if s.offset == offset));
        }
        let metadata = fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&metadata),
            inode,
            "no new file"
        );
        assert_eq!(metadata.len(), 8192, "two 4 KiB slots");
        assert_eq!(
            fs::read(&path).unwrap(),
            fs::read(backup_path(&path)).unwrap()
        );
        let text = fs::read_to_string(&path).unwrap();
        let values: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&text)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            values.len(),
            4,
            "both slots read as JSON with plain tools: {text}"
        );
        // A new writer (a restarted stage) goes on from what is on disk.
        stored(&path, [6]);
        assert_eq!(loaded(&path).into_value(), state(6));
    }

    #[test]
    fn a_kept_open_reader_follows_stores_in_place_replacements_and_removals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        let mut reader = CheckpointReader::new(path.clone());
        let mut read = || {
            reader
                .load_or_backup_with::<State>(|json| Ok(serde_json::from_slice(json)?))
                .unwrap()
                .map(|loaded| loaded.into_value().offset)
        };
        assert_eq!(read(), None, "no file yet");
        let mut file = stored(&path, [1]);
        assert_eq!(read(), Some(1));
        for offset in 2..=4 {
            file.store(&state(offset), Durability::PageCache).unwrap();
            assert_eq!(read(), Some(offset), "a store in place");
        }
        // Replaced by a rename (a checkpoint moving to other slots, a single JSON file).
        store_json(&path, &state(9), Durability::PageCache).unwrap();
        assert_eq!(read(), Some(9), "the file renamed over the open one");
        fs::remove_file(&path).unwrap();
        fs::remove_file(backup_path(&path)).ok();
        assert_eq!(read(), None, "removed");
        stored(&path, [11]);
        assert_eq!(read(), Some(11), "made again");
        // Damaged: the twin's value, as `load_or_backup` gives.
        let mut damaged = fs::read(&path).unwrap();
        damaged.iter_mut().for_each(|byte| *byte = 0);
        fs::write(&path, damaged).unwrap();
        assert_eq!(read(), Some(11), "from the twin");
    }

    #[test]
    fn a_torn_store_leaves_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        stored(&path, [1, 2, 3]);
        // Store 3 went to slot 1 (bytes 4096..); tear it as a crash in its write would.
        let mut bytes = fs::read(&path).unwrap();
        bytes[4096 + 30..4096 + 40].fill(b'#');
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(loaded(&path), Loaded::Current(s) if s.offset == 2));
        // The next store takes the torn slot's turn and is read back.
        stored(&path, [4]);
        assert_eq!(loaded(&path).into_value(), state(4));
    }

    #[test]
    fn a_damaged_file_falls_back_to_its_twin_of_the_same_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        for garbage in [&b""[..], b"\0\0\0\0", b"garbage", b"{\"slot\":{\"seq\":9"] {
            stored(&path, [1, 2]);
            fs::write(&path, garbage).unwrap();
            match loaded(&path) {
                Loaded::Backup { value, error } => {
                    assert_eq!(value.offset, 2, "the latest version, nothing to redo");
                    assert!(error.to_string().contains("commit.json is corrupt"));
                }
                Loaded::Current(_) => panic!("a corrupt file was accepted"),
            }
            // The owner's next store makes the file whole again.
            stored(&path, [3]);
            assert!(matches!(loaded(&path), Loaded::Current(s) if s.offset == 3));
        }
        fs::write(&path, b"garbage").unwrap();
        fs::remove_file(backup_path(&path)).unwrap();
        assert!(load_or_backup::<State>(&path).is_err(), "no fallback left");
    }

    #[test]
    fn a_twin_left_ahead_by_a_crash_is_aligned_by_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        stored(&path, [1]);
        let at_one = fs::read(&path).unwrap();
        stored(&path, [2]);
        // A crash after the twin's write of store 2 and before the file's.
        fs::write(&path, &at_one).unwrap();
        let mut owner = CheckpointFile::new(path.clone());
        assert_eq!(loaded(&path).into_value(), state(1));
        owner.store(&state(3), Durability::Fsync).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            fs::read(backup_path(&path)).unwrap()
        );
        fs::write(&path, b"garbage").unwrap();
        assert_eq!(loaded(&path).into_value(), state(3));
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Big {
        names: Vec<String>,
    }

    /// A checkpoint holding `n` file names: its size grows with `n`.
    fn big(n: usize) -> Big {
        Big {
            names: (0..n).map(|i| format!("file-{i:05}.log")).collect(),
        }
    }

    #[test]
    fn a_checkpoint_that_outgrows_its_slots_moves_to_larger_ones_with_both_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        let mut file = CheckpointFile::new(path.clone());
        file.store(&big(10), Durability::Fsync).unwrap();
        file.store(&big(1000), Durability::Fsync).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 * 32768);
        assert_eq!(load::<Big>(&path).unwrap().unwrap(), big(1000));
        // Store 2 (the growth) is in slot 0; tear it: store 1, kept in slot 1, remains.
        let mut bytes = fs::read(&path).unwrap();
        bytes[100] = b'#';
        fs::write(&path, &bytes).unwrap();
        assert_eq!(load::<Big>(&path).unwrap().unwrap(), big(10));
    }

    #[test]
    fn a_checkpoint_that_shrinks_moves_to_smaller_slots_once_both_versions_fit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        let mut file = CheckpointFile::new(path.clone());
        file.store(&big(5000), Durability::Fsync).unwrap();
        let large = fs::metadata(&path).unwrap().len();
        assert!(large >= 2 * 65536, "{large}");
        file.store(&big(3), Durability::Fsync).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            large,
            "the version before still needs the large slots"
        );
        file.store(&big(2), Durability::Fsync).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 * 4096);
        assert_eq!(load::<Big>(&path).unwrap().unwrap(), big(2));
        assert!(
            fs::read(&path).unwrap() == fs::read(backup_path(&path)).unwrap(),
            "the twin moved too"
        );
        // Store 3 (the move) is in slot 1, store 2 in slot 0 with it; tear store 3: 2 remains.
        let mut bytes = fs::read(&path).unwrap();
        bytes[4096 + 30] = b'#';
        fs::write(&path, &bytes).unwrap();
        assert_eq!(load::<Big>(&path).unwrap().unwrap(), big(3));
    }

    #[test]
    fn a_single_json_checkpoint_of_the_first_format_loads_and_is_converted_by_the_next_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        store_json(&path, &state(7), Durability::Fsync).unwrap();
        store_json(&backup_path(&path), &state(7), Durability::Fsync).unwrap();
        assert!(matches!(loaded(&path), Loaded::Current(s) if s.offset == 7));
        fs::write(&path, b"").unwrap();
        assert!(matches!(loaded(&path), Loaded::Backup { value, .. } if value.offset == 7));
        store_json(&path, &state(7), Durability::Fsync).unwrap();
        stored(&path, [8]);
        assert!(slotted::is_slotted(&fs::read(&path).unwrap()));
        assert!(slotted::is_slotted(&fs::read(backup_path(&path)).unwrap()));
        assert_eq!(loaded(&path).into_value(), state(8));
    }

    #[test]
    fn unknown_versions_are_refused() {
        let err = check_version(Path::new("c.json"), 7, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "checkpoint c.json has unknown format version 7 (this build reads 1)"
        );
    }
}
