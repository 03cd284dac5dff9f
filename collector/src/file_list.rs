//! The collector's input position as committed. With many files tracked, the list of them all
//! is written now and then to a file of its own (a base, `files-<generation>.json`), and each
//! commit names its base and carries only the files that changed since: a node's thousand
//! quiet files would otherwise be serialised, written and flushed at every commit, whatever
//! few files the lines came from.
//!
//! Easy to get wrong: a base is written whole (temp file, flush, rename, directory flush)
//! before the commit that names it, and is removed only once a later base has been followed by
//! a commit: the last durable commit always finds its base. On start, the bases the commit does
//! not name are removed (older ones, and one written just before a crash and never named).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use sidecar_common::checkpoint::{self, Durability};
use sidecar_source::{PendingLine, SavedFile, TailPosition};
use tracing::warn;

/// Maps and sets looked into for each file at every commit: foldhash, not SipHash.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// How a base's file name starts, in the collected journal's directory.
const BASE_PREFIX: &str = "files-";
/// The format of a base file.
const FILE_LIST_VERSION: u32 = 1;
/// With fewer files tracked every commit carries them all and no base is written: the
/// commit is small anyway.
const BASE_MIN_FILES: usize = 64;
/// A commit names the base while at most this share of the files (1/N) changed since it.
const DELTA_MAX_SHARE: usize = 4;
/// A new base is written at most this often; meanwhile a commit with more changes than a delta
/// takes carries every file (all files busy: a base per commit would only add flushes).
const REBASE_EVERY: Duration = Duration::from_secs(1);

/// The collector's commit input: every tracked file, or the files changed since a base.
///
/// A commit of the format before bases (every file under `files`) reads as the first kind. A
/// collector older than this one refuses a commit that names a base (it has no `files`)
/// instead of taking the changed files for all of them.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CommittedPosition {
    /// Every tracked file, when the commit names no base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    files: Option<Vec<SavedFile>>,
    /// The base this commit builds on and what changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    since_base: Option<SinceBase>,
    /// As [`TailPosition::saved_at_ms`].
    #[serde(default)]
    saved_at_ms: u64,
    /// As [`TailPosition::finished`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    finished: Vec<SavedFile>,
    /// As [`TailPosition::pending`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pending: BTreeMap<String, Vec<PendingLine>>,
}

/// What changed since a base.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SinceBase {
    /// The base's generation: its file is `files-<generation>.json`.
    generation: u64,
    /// Files not in the base, or whose saved state differs from the base's.
    changed: Vec<SavedFile>,
    /// Files of the base no longer tracked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    removed: Vec<FileId>,
}

/// A tracked file's identity across a base and its commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct FileId {
    dev: u64,
    ino: u64,
    source_id: u64,
}

impl FileId {
    fn of(file: &SavedFile) -> Self {
        Self {
            dev: file.dev,
            ino: file.ino,
            source_id: file.source_id,
        }
    }
}

/// What a base file holds.
#[derive(Debug, Serialize, Deserialize)]
struct FileList {
    /// [`FILE_LIST_VERSION`].
    version: u32,
    /// Every tracked file when the base was written.
    files: Vec<SavedFile>,
}

/// The base in memory: what a commit's files are compared with.
struct Base {
    generation: u64,
    files: HashMap<FileId, SavedFile>,
}

impl Base {
    fn new(generation: u64, files: &[SavedFile]) -> Self {
        Self {
            generation,
            files: files.iter().map(|f| (FileId::of(f), f.clone())).collect(),
        }
    }
}

/// Turns the tailer's position into commit inputs, writing a new base when the changes
/// outgrow a delta; and, on start, a committed input back into the tailer's position.
pub struct FileBook {
    dir: PathBuf,
    durability: Durability,
    base: Option<Base>,
    next_generation: u64,
    rebased_at: Option<Instant>,
    /// The ids of one commit's files, kept to reuse its allocation.
    seen: HashSet<FileId>,
}

impl FileBook {
    /// The book of the journal in `dir`, and the tailer's position that `committed` (the
    /// journal's last commit input) stands for.
    ///
    /// # Errors
    /// When the commit names a base whose file is missing or unreadable.
    pub fn open(
        dir: &Path,
        durability: Durability,
        committed: Option<CommittedPosition>,
    ) -> anyhow::Result<(Self, Option<TailPosition>)> {
        let newest = stored_bases(dir)?.iter().map(|(g, _)| *g).max();
        let mut book = Self {
            dir: dir.to_owned(),
            durability,
            base: None,
            next_generation: newest.map_or(1, |g| g + 1),
            rebased_at: None,
            seen: HashSet::default(),
        };
        let named = (committed.as_ref())
            .and_then(|c| c.since_base.as_ref())
            .map(|since| since.generation);
        book.remove_bases_but(&[named]);
        let Some(committed) = committed else {
            return Ok((book, None));
        };
        let files = match (committed.files, committed.since_base) {
            (Some(files), _) => files,
            (None, None) => Vec::new(),
            (None, Some(since)) => {
                let list = book.load_base(since.generation)?;
                book.base = Some(Base::new(since.generation, &list.files));
                apply(list.files, since)
            }
        };
        let position = TailPosition {
            files,
            saved_at_ms: committed.saved_at_ms,
            finished: committed.finished,
            pending: committed.pending,
        };
        Ok((book, Some(position)))
    }

    /// The commit input for `position`: the files changed since the base when they are few,
    /// else, at most every [`REBASE_EVERY`], a new base (durable when this returns) and a
    /// commit naming it, else every file.
    pub fn commit_input(&mut self, position: TailPosition) -> CommittedPosition {
        let TailPosition {
            files,
            saved_at_ms,
            finished,
            pending,
        } = position;
        let mut input = CommittedPosition {
            files: None,
            since_base: None,
            saved_at_ms,
            finished,
            pending,
        };
        if files.len() < BASE_MIN_FILES {
            input.files = Some(files);
            return input;
        }
        let files = match self.since_base(files) {
            Ok(since) => {
                input.since_base = Some(since);
                return input;
            }
            Err(files) => files,
        };
        if self.rebase_due() {
            match self.rebase(&files) {
                Ok(generation) => {
                    input.since_base = Some(SinceBase {
                        generation,
                        changed: Vec::new(),
                        removed: Vec::new(),
                    });
                    return input;
                }
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        "Cannot write the list of files; this commit carries every file instead."
                    );
                }
            }
        }
        input.files = Some(files);
        input
    }

    /// The files changed since the base, or all of `files` back when there is no base, a
    /// file appears twice, or too many changed for a delta.
    fn since_base(&mut self, files: Vec<SavedFile>) -> Result<SinceBase, Vec<SavedFile>> {
        let Some(base) = &self.base else {
            return Err(files);
        };
        self.seen.clear();
        let mut changes = 0;
        for file in &files {
            let id = FileId::of(file);
            if !self.seen.insert(id) {
                return Err(files);
            }
            changes += usize::from(base.files.get(&id) != Some(file));
        }
        let removed = base.files.keys().filter(|id| !self.seen.contains(id));
        changes += removed.clone().count();
        if changes > files.len() / DELTA_MAX_SHARE {
            return Err(files);
        }
        let removed = removed.copied().collect();
        let changed = (files.into_iter())
            .filter(|f| base.files.get(&FileId::of(f)) != Some(f))
            .collect();
        Ok(SinceBase {
            generation: base.generation,
            changed,
            removed,
        })
    }

    fn rebase_due(&self) -> bool {
        self.rebased_at
            .is_none_or(|at| at.elapsed() >= REBASE_EVERY)
    }

    /// Writes `files` as a new base and keeps it; returns its generation. Bases older than
    /// the one it replaces are removed: the last commit names that one or none.
    fn rebase(&mut self, files: &[SavedFile]) -> anyhow::Result<u64> {
        self.rebased_at = Some(Instant::now());
        let base = Base::new(self.next_generation, files);
        if base.files.len() != files.len() {
            anyhow::bail!("two tracked files have the same identity");
        }
        let list = FileList {
            version: FILE_LIST_VERSION,
            files: files.to_vec(),
        };
        let path = base_path(&self.dir, base.generation);
        checkpoint::store_json(&path, &list, self.durability)
            .with_context(|| format!("writing {}", path.display()))?;
        self.next_generation += 1;
        let replaced = self.base.as_ref().map(|b| b.generation);
        self.remove_bases_but(&[replaced, Some(base.generation)]);
        self.base = Some(base);
        Ok(self.next_generation - 1)
    }

    fn load_base(&self, generation: u64) -> anyhow::Result<FileList> {
        let path = base_path(&self.dir, generation);
        let list = checkpoint::load::<FileList>(&path)
            .context("reading the list of files the collected journal's commit builds on")?
            .with_context(|| format!("{}: the list of files the collected journal's commit builds on is missing (removed by hand?); restore it, or remove commit.json too to read every file again from its start", path.display()))?;
        checkpoint::check_version(&path, list.version, FILE_LIST_VERSION)?;
        Ok(list)
    }

    /// Removes the base files (and temp files of interrupted writes) of every generation not
    /// in `keep`. A failure is logged: a stale base costs only its space.
    fn remove_bases_but(&self, keep: &[Option<u64>]) {
        let stored = match stored_bases(&self.dir) {
            Ok(stored) => stored,
            Err(e) => {
                warn!(
                    error = format!("{e:#}"),
                    "Cannot list old lists of files to remove them."
                );
                return;
            }
        };
        for (generation, path) in stored {
            if keep.contains(&Some(generation)) {
                continue;
            }
            if let Err(e) = fs::remove_file(&path) {
                warn!(path = %path.display(), error = %e, "Cannot remove an old list of files.");
            }
        }
    }
}

fn base_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{BASE_PREFIX}{generation:012}.json"))
}

/// The base files in `dir` with their generations, temp files of interrupted writes included.
fn stored_bases(dir: &Path) -> anyhow::Result<Vec<(u64, PathBuf)>> {
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    let mut stored = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(BASE_PREFIX)) else {
            continue;
        };
        let digits = rest.trim_end_matches(".tmp").trim_end_matches(".json");
        if let Ok(generation) = digits.parse::<u64>() {
            stored.push((generation, entry.path()));
        }
    }
    Ok(stored)
}

/// The base's files with the changes applied: in the base's order, changed files in place,
/// removed ones dropped, new ones after.
fn apply(base: Vec<SavedFile>, since: SinceBase) -> Vec<SavedFile> {
    let removed: HashSet<FileId> = since.removed.into_iter().collect();
    let index: HashMap<FileId, usize> = (since.changed.iter().enumerate())
        .map(|(i, f)| (FileId::of(f), i))
        .collect();
    let mut changed: Vec<Option<SavedFile>> = since.changed.into_iter().map(Some).collect();
    let mut files: Vec<SavedFile> = (base.into_iter())
        .filter(|f| !removed.contains(&FileId::of(f)))
        .map(|f| match index.get(&FileId::of(&f)) {
            Some(&i) => changed[i].take().unwrap_or(f),
            None => f,
        })
        .collect();
    files.extend(changed.into_iter().flatten());
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use sidecar_source::LogFormat;

    fn file(i: u64, offset: u64) -> SavedFile {
        SavedFile {
            source: format!("app-{i}.log").into(),
            path: PathBuf::from(format!("/logs/app-{i}.log")).into(),
            dev: 1,
            ino: 1000 + i,
            source_id: 7_000 + i,
            offset,
            head_len: offset.min(1024),
            head_hash: i,
            tail_hash: offset,
            drained: false,
            copy: false,
            unseen_since_ms: None,
            format: LogFormat::Raw,
        }
    }

    fn position(files: Vec<SavedFile>) -> TailPosition {
        TailPosition {
            files,
            saved_at_ms: 1_700_000_000_000,
            ..TailPosition::default()
        }
    }

    /// What the journal does with a commit input: JSON on disk, read back on start.
    fn through_disk(input: &CommittedPosition) -> CommittedPosition {
        serde_json::from_slice(&serde_json::to_vec(input).unwrap()).unwrap()
    }

    /// The position a collector restarted on a copy of `dir` as it is now resumes at.
    fn restored(dir: &Path, input: &CommittedPosition) -> TailPosition {
        let copy = tempfile::tempdir().unwrap();
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
        }
        let (_, position) = FileBook::open(
            copy.path(),
            Durability::PageCache,
            Some(through_disk(input)),
        )
        .unwrap();
        position.unwrap()
    }

    fn book(dir: &Path) -> FileBook {
        FileBook::open(dir, Durability::PageCache, None).unwrap().0
    }

    #[test]
    fn with_many_files_a_commit_carries_those_changed_since_the_list_and_restores_them_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = book(dir.path());
        let first: Vec<SavedFile> = (0..200).map(|i| file(i, 100)).collect();
        let input = book.commit_input(position(first.clone()));
        assert!(input.files.is_none(), "the first commit writes the list");
        assert!(base_path(dir.path(), 1).exists());
        assert_eq!(restored(dir.path(), &input), position(first.clone()));

        // Three files grew, one is gone, one is new.
        let mut now = first.clone();
        for i in [3, 50, 199] {
            now[i].offset += 80;
        }
        now.remove(10);
        now.push(file(500, 0));
        let input = book.commit_input(position(now.clone()));
        let since = input.since_base.as_ref().unwrap();
        assert_eq!(since.changed.len(), 4);
        assert_eq!(since.removed, vec![FileId::of(&first[10])]);
        assert!(serde_json::to_vec(&input).unwrap().len() < 2048);
        assert_eq!(restored(dir.path(), &input), position(now));
    }

    #[test]
    fn few_files_are_committed_whole_and_no_list_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = book(dir.path());
        let files: Vec<SavedFile> = (0..10).map(|i| file(i, 5)).collect();
        let input = book.commit_input(position(files.clone()));
        assert_eq!(input.files.as_deref(), Some(&files[..]));
        assert!(stored_bases(dir.path()).unwrap().is_empty());
        assert_eq!(restored(dir.path(), &input), position(files));
    }

    #[test]
    fn when_most_files_changed_a_commit_carries_them_all_until_a_new_list_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = book(dir.path());
        let files: Vec<SavedFile> = (0..100).map(|i| file(i, 5)).collect();
        book.commit_input(position(files.clone()));
        let busy: Vec<SavedFile> = (0..100).map(|i| file(i, 500)).collect();
        let input = book.commit_input(position(busy.clone()));
        assert_eq!(
            input.files.as_deref(),
            Some(&busy[..]),
            "a list per commit would only add a flush"
        );
        assert_eq!(restored(dir.path(), &input), position(busy.clone()));
        book.rebased_at = None;
        let input = book.commit_input(position(busy.clone()));
        assert_eq!(input.since_base.as_ref().unwrap().generation, 2);
        assert_eq!(restored(dir.path(), &input), position(busy));
    }

    #[test]
    fn a_commit_finds_its_list_after_a_newer_one_was_written_but_never_committed() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = book(dir.path());
        let files: Vec<SavedFile> = (0..100).map(|i| file(i, 5)).collect();
        book.commit_input(position(files.clone()));
        let mut grown = files.clone();
        grown[7].offset = 9;
        let committed = book.commit_input(position(grown.clone()));
        assert_eq!(committed.since_base.as_ref().unwrap().generation, 1);
        // A new list is written, and the collector is killed before the commit naming it.
        book.rebased_at = None;
        let all: Vec<SavedFile> = (0..100).map(|i| file(i, 70)).collect();
        let lost = book.commit_input(position(all));
        assert_eq!(lost.since_base.as_ref().unwrap().generation, 2);

        let (mut book, position_after) = FileBook::open(
            dir.path(),
            Durability::PageCache,
            Some(through_disk(&committed)),
        )
        .unwrap();
        assert_eq!(position_after, Some(position(grown.clone())));
        assert!(
            !base_path(dir.path(), 2).exists(),
            "the list never named is removed"
        );
        // The restarted collector's next list is a new generation; the one its last commit
        // names stays until a commit names the new one.
        book.rebased_at = None;
        let moved: Vec<SavedFile> = (0..100).map(|i| file(i, 900)).collect();
        let input = book.commit_input(position(moved.clone()));
        assert_eq!(input.since_base.as_ref().unwrap().generation, 3);
        assert_eq!(restored(dir.path(), &committed), position(grown));
        assert_eq!(restored(dir.path(), &input), position(moved));
    }

    #[test]
    fn a_commit_naming_a_list_that_is_gone_is_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = book(dir.path());
        let input = book.commit_input(position((0..100).map(|i| file(i, 5)).collect()));
        fs::remove_file(base_path(dir.path(), 1)).unwrap();
        let error = FileBook::open(dir.path(), Durability::PageCache, Some(input))
            .err()
            .unwrap();
        let message = format!("{error:#}");
        assert!(
            message.contains("files-000000000001.json") && message.contains("missing"),
            "{message}"
        );
    }

    #[test]
    fn a_commit_of_the_format_before_file_lists_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let saved = file(1, 42);
        let old = serde_json::json!({
            "files": [saved],
            "saved_at_ms": 5,
        });
        let input: CommittedPosition = serde_json::from_value(old).unwrap();
        let (_, position) = FileBook::open(dir.path(), Durability::PageCache, Some(input)).unwrap();
        let position = position.unwrap();
        assert_eq!(position.files, vec![file(1, 42)]);
        assert_eq!(position.saved_at_ms, 5);
    }
}
