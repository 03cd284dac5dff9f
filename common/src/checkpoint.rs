//! Small state files that must survive a crash whole: commit files, reader cursors, stats.
//!
//! Easy to get wrong: durability order. The new content is written to a temp file and fsynced
//! *before* the rename, and the directory is fsynced after it, so a crash leaves the old file or
//! the new one, never half of one, and never a rename that the disk forgot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

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
        source: serde_json::Error,
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

/// Rewrites `path` in place (created when missing), for a backup twin: unlike a replace it
/// makes no new inode, no rename and frees no old one, which at a commit every few milliseconds
/// was a third of what a commit cost besides its fsyncs. A crash in the middle leaves the twin
/// torn, never the file it backs: a torn twin does not parse, is never used, and is rewritten
/// at the owner's next start ([`align_backup`]).
fn overwrite_in_place(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let wrap = |source| CheckpointError::Write {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(wrap)?;
    file.write_all_at(bytes, 0).map_err(wrap)?;
    file.set_len(bytes.len() as u64).map_err(wrap)
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

/// Where a checkpoint's backup copy is kept: `commit.json` → `commit.json.backup`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".backup");
    path.with_file_name(name)
}

/// As [`store_json`], with a twin copy in `<name>.backup` written just before it, so that a
/// file found corrupt later (a bad sector, a stray write) can be replaced by its twin and nothing
/// is redone. The twin is a copy, not a hard link (which would share the damage), and is left
/// to the page cache. Written first, it is the same version as the file or — after a crash
/// between the two renames — one ahead of it, describing a commit whose data was already made
/// durable; the owner brings it back in line at start with [`align_backup`]. It is never
/// behind, so falling back to it never loses what a reader was given.
///
/// # Errors
/// As [`write_atomic`], for either file; the file then still holds its previous version.
pub fn store_json_with_backup<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), CheckpointError> {
    let bytes = json_line(value);
    overwrite_in_place(&backup_path(path), &bytes)?;
    replace_file(path, &bytes, durability)?;
    // One directory sync covers both renames.
    sync_dir_of(path, durability)
}

/// Makes the backup twin of a sound checkpoint file hold the same bytes again. Called by the
/// file's owner (the one process that writes it) at start, before it acts on the file, so that
/// a twin left one version ahead by a crash cannot later stand in for the file.
///
/// # Errors
/// When the backup cannot be written.
pub fn align_backup(path: &Path) -> Result<(), CheckpointError> {
    let Ok(current) = fs::read(path) else {
        return Ok(());
    };
    let backup = backup_path(path);
    if serde_json::from_slice::<serde::de::IgnoredAny>(&current).is_err()
        || fs::read(&backup).is_ok_and(|b| b == current)
    {
        return Ok(());
    }
    replace_file(&backup, &current, Durability::PageCache)
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

/// Loads a checkpoint written by [`store_json_with_backup`], falling back to the backup copy
/// when the file is corrupt (empty, garbage, NUL-filled).
///
/// # Errors
/// The file's error when it is unreadable, or corrupt with no usable backup.
pub fn load_json_or_backup<T: DeserializeOwned>(
    path: &Path,
) -> Result<Option<Loaded<T>>, CheckpointError> {
    match load_json(path) {
        Ok(value) => Ok(value.map(Loaded::Current)),
        Err(error @ CheckpointError::Corrupt { .. }) => match load_json(&backup_path(path)) {
            Ok(Some(value)) => Ok(Some(Loaded::Backup { value, error })),
            _ => Err(error),
        },
        Err(error) => Err(error),
    }
}

/// Reads a JSON checkpoint; `Ok(None)` when the file does not exist.
///
/// # Errors
/// [`CheckpointError::Read`] for I/O errors, [`CheckpointError::Corrupt`] when the content does
/// not decode as `T` (a zero-length file included).
pub fn load_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, CheckpointError> {
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
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| CheckpointError::Corrupt {
            path: path.to_owned(),
            source,
        })
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
    fn stores_and_loads_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        assert_eq!(load_json::<State>(&path).unwrap(), None);
        for offset in [1, 2] {
            store_json(&path, &State { version: 1, offset }, Durability::Fsync).unwrap();
        }
        assert_eq!(
            load_json::<State>(&path).unwrap(),
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
            let err = load_json::<State>(&path).unwrap_err();
            assert!(matches!(err, CheckpointError::Corrupt { .. }));
            assert!(err.to_string().contains("commit.json is corrupt"), "{err}");
        }
    }

    #[test]
    fn a_corrupt_checkpoint_is_replaced_by_its_backup_of_the_same_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        for offset in [1, 2] {
            store_json_with_backup(&path, &State { version: 1, offset }, Durability::Fsync)
                .unwrap();
        }
        for garbage in [&b""[..], b"\0\0\0\0", b"garbage"] {
            fs::write(&path, garbage).unwrap();
            match load_json_or_backup::<State>(&path).unwrap().unwrap() {
                Loaded::Backup { value, error } => {
                    assert_eq!(value.offset, 2, "the latest version, nothing to redo");
                    assert!(error.to_string().contains("commit.json is corrupt"));
                }
                Loaded::Current(_) => panic!("a corrupt file was accepted"),
            }
        }
        fs::remove_file(backup_path(&path)).unwrap();
        assert!(
            load_json_or_backup::<State>(&path).is_err(),
            "no fallback left: an error"
        );
    }

    #[test]
    fn a_backup_left_ahead_by_a_crash_is_aligned_by_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        store_json_with_backup(
            &path,
            &State {
                version: 1,
                offset: 1,
            },
            Durability::Fsync,
        )
        .unwrap();
        // A crash between the two renames of the next store: the twin is one ahead.
        store_json(
            &backup_path(&path),
            &State {
                version: 1,
                offset: 2,
            },
            Durability::Fsync,
        )
        .unwrap();
        align_backup(&path).unwrap();
        fs::write(&path, b"garbage").unwrap();
        let loaded = load_json_or_backup::<State>(&path).unwrap().unwrap();
        assert_eq!(
            loaded.into_value().offset,
            1,
            "the twin matches the file again"
        );
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
