//! Files the kubelet mounts (ConfigMaps, Secrets, downwardAPI volumes), watched for changes
//! the way the kubelet makes them: such a volume is a directory of symlinks
//! (`rules.yaml → ..data/rules.yaml`, `..data → ..2026_11_22_10_00_00.123`), and an update
//! swaps the `..data` link atomically.
//!
//! Easy to get wrong: watching the file's own inode or mtime through the link. After the swap
//! the path resolves to a new file in a new directory, so the signature here is taken from the
//! resolved path *and* its metadata: any of them changing means "read it again".

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What identifies one version of a file behind its symlinks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    resolved: PathBuf,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Signature {
    /// The signature of the file at `path` now; `None` when it cannot be resolved or stat'ed
    /// (mid-swap, or removed).
    pub fn of(path: &Path) -> Option<Signature> {
        use std::os::unix::fs::MetadataExt as _;
        let resolved = std::fs::canonicalize(path).ok()?;
        let metadata = std::fs::metadata(&resolved).ok()?;
        Some(Signature {
            resolved,
            inode: metadata.ino(),
            len: metadata.len(),
            modified: metadata.modified().ok(),
        })
    }
}

/// Notices when a file changed since the last look.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    last: Option<Signature>,
}

impl FileWatch {
    /// Watches `path`, taking its current version as seen.
    pub fn new(path: &Path) -> FileWatch {
        FileWatch {
            path: path.to_owned(),
            last: Signature::of(path),
        }
    }

    /// The watched path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file changed since the last call (or since `new`). A file that vanished
    /// is not a change: a ConfigMap update never leaves the path dangling for longer than a
    /// rename, and a removed ConfigMap keeps the old rules.
    pub fn changed(&mut self) -> bool {
        let now = Signature::of(&self.path);
        if now.is_none() || now == self.last {
            return false;
        }
        self.last = now;
        true
    }
}
