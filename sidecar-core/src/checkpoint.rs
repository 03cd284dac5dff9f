//! Small state files that must survive a crash whole: commit files, reader cursors, stats.
//!
//! Easy to get wrong: durability order. The new content is written to a temp file and fsynced
//! *before* the rename, and the directory is fsynced after it, so a crash leaves the old file or
//! the new one, never half of one, and never a rename that the disk forgot.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
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
    fs::rename(&tmp, path).map_err(wrap)?;
    if durability == Durability::Fsync {
        sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(wrap)?;
    }
    Ok(())
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
    let mut bytes = serde_json::to_vec(value).expect("checkpoint types serialise infallibly");
    bytes.push(b'\n');
    write_atomic(path, &bytes, durability)
}

/// Where a checkpoint's previous version is kept: `commit.json` → `commit.json.prev`.
pub fn previous_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".prev");
    path.with_file_name(name)
}

/// As [`store_json`], keeping the replaced version as `<name>.prev`, so that a current file
/// found corrupt later can fall back to the one before it. The very first version is kept as its
/// own previous one (a copy), so there is always a fallback once anything was stored.
///
/// # Errors
/// As [`write_atomic`].
pub fn store_json_keeping_previous<T: Serialize>(
    path: &Path,
    value: &T,
    durability: Durability,
) -> Result<(), CheckpointError> {
    let previous = previous_path(path);
    if path.exists() {
        link_replacing(path, &previous)?;
    } else {
        // A copy, not a link: a link would share the first file's bytes and its damage.
        store_json(&previous, value, durability)?;
    }
    // The directory fsync in store_json makes the link durable together with the rename.
    store_json(path, value, durability)
}

/// Makes `link` another name of `target`, replacing `link` atomically: a crash leaves either
/// the old or the new `link`, never none.
fn link_replacing(target: &Path, link: &Path) -> Result<(), CheckpointError> {
    let staging = temp_path(link);
    let wrap = |source| CheckpointError::Write {
        path: link.to_owned(),
        source,
    };
    match fs::remove_file(&staging) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(wrap(e)),
        _ => {}
    }
    fs::hard_link(target, &staging).map_err(wrap)?;
    fs::rename(&staging, link).map_err(wrap)
}

/// A checkpoint as loaded: the current version, or the previous one when the current is corrupt.
#[derive(Debug)]
pub enum Loaded<T> {
    /// The current file.
    Current(T),
    /// The current file was corrupt; this is the version before it.
    Previous {
        /// The previous version.
        value: T,
        /// What was wrong with the current file.
        error: CheckpointError,
    },
}

impl<T> Loaded<T> {
    /// The value, wherever it came from.
    pub fn into_value(self) -> T {
        match self {
            Loaded::Current(v) | Loaded::Previous { value: v, .. } => v,
        }
    }
}

/// Loads a checkpoint written by [`store_json_keeping_previous`], falling back to its previous
/// version when the current one is corrupt (empty, garbage, NUL-filled).
///
/// # Errors
/// The current file's error when it is unreadable, or corrupt with no usable previous version.
pub fn load_json_or_previous<T: DeserializeOwned>(
    path: &Path,
) -> Result<Option<Loaded<T>>, CheckpointError> {
    match load_json(path) {
        Ok(value) => Ok(value.map(Loaded::Current)),
        Err(error @ CheckpointError::Corrupt { .. }) => match load_json(&previous_path(path)) {
            Ok(Some(value)) => Ok(Some(Loaded::Previous { value, error })),
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
    fn a_corrupt_checkpoint_falls_back_to_the_previous_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        for offset in [1, 2] {
            store_json_keeping_previous(&path, &State { version: 1, offset }, Durability::Fsync)
                .unwrap();
        }
        for garbage in [&b""[..], b"\0\0\0\0", b"garbage"] {
            fs::write(&path, garbage).unwrap();
            match load_json_or_previous::<State>(&path).unwrap().unwrap() {
                Loaded::Previous { value, error } => {
                    assert_eq!(value.offset, 1);
                    assert!(error.to_string().contains("commit.json is corrupt"));
                }
                Loaded::Current(_) => panic!("a corrupt file was accepted"),
            }
        }
        fs::remove_file(previous_path(&path)).unwrap();
        assert!(
            load_json_or_previous::<State>(&path).is_err(),
            "no fallback left: an error"
        );
    }

    #[test]
    fn the_first_version_is_its_own_fallback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("commit.json");
        store_json_keeping_previous(
            &path,
            &State {
                version: 1,
                offset: 7,
            },
            Durability::Fsync,
        )
        .unwrap();
        fs::write(&path, b"").unwrap();
        let loaded = load_json_or_previous::<State>(&path).unwrap().unwrap();
        assert!(matches!(
            loaded,
            Loaded::Previous {
                value: State { offset: 7, .. },
                ..
            }
        ));
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
