//! Which files to tail: `--watch` globs and `--exclude` globs, and the directories they name.
//!
//! A pattern is a literal root directory, then optionally directory levels with wildcards,
//! then a file-name glob: `/logs/*.log` (files in one directory) or
//! `cri:/var/log/pods/*/*/*.log` (the kubelet's `<namespace>_<pod>_<uid>/<container>/0.log`).
//! A file's source name is its path below the root: the file name for `/logs/*.log`
//! (`access.log`), and `default_web-7c9d5_0f3c…/web/0.log` for the kubelet's tree, where every
//! file is called `0.log`.
//!
//! Easy to get wrong: the directories of a wildcard pattern come and go (a pod starts, a pod is
//! deleted), so they are found by listing, at every rescan; a file is matched against the
//! patterns by its path alone, so a file opened from a watch event needs no listing.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};

use crate::container::LogFormat;
use crate::SourceError;

/// Which files to tail: `--watch` patterns (with their formats) and excludes.
#[derive(Debug, Clone)]
pub struct SourceSpec {
    patterns: Vec<WatchPattern>,
    exclude: GlobSet,
}

/// One `--watch` pattern.
#[derive(Debug, Clone)]
struct WatchPattern {
    /// The literal directory the pattern starts from.
    root: PathBuf,
    /// One glob per directory level below `root`; empty when the files are in `root` itself.
    levels: Vec<GlobMatcher>,
    /// The file-name glob.
    name: GlobMatcher,
    format: LogFormat,
}

/// A directory whose files may be watched files, as found by [`SourceSpec::list_dirs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedDir {
    /// The directory.
    pub path: PathBuf,
    /// What the source names of its files start with: empty for a literal directory, the
    /// directory's path below the root and a `/` for a wildcard one.
    pub prefix: String,
    /// The patterns naming it, by index.
    patterns: Vec<usize>,
}

/// What one listing of the watched directories found.
#[derive(Debug, Default)]
pub struct DirListing {
    /// Directories holding watched files.
    pub dirs: Vec<WatchedDir>,
    /// Directories above them that a wildcard level lists: watching them shows new
    /// directories (a new pod's) as they appear.
    pub parents: Vec<PathBuf>,
    /// Directories that could not be listed, with why.
    pub unreadable: Vec<(PathBuf, io::Error)>,
    /// Where each of `dirs` is, and which `parents` are in: hundreds of pods are listed on
    /// every rescan.
    dir_index: HashMap<PathBuf, usize>,
    parent_set: HashSet<PathBuf>,
}

impl SourceSpec {
    /// Compiles `include` globs (e.g. `/logs/*.log`, `cri:/var/log/pods/*/*/*.log`; a prefix
    /// `raw:` (the default), `cri:`, `docker:` or `auto:` names the lines' format) and
    /// `exclude` globs (matched against the full path and against the source name).
    ///
    /// # Errors
    /// [`SourceError::Pattern`] naming the pattern when it does not compile, has no file-name
    /// part, uses `**` or `..`, or is relative with wildcards in its directory part.
    pub fn compile(include: &[String], exclude: &[String]) -> Result<Self, SourceError> {
        let patterns = include
            .iter()
            .map(|pattern| WatchPattern::compile(pattern))
            .collect::<Result<Vec<_>, _>>()?;
        if patterns.is_empty() {
            return Err(SourceError::Pattern {
                what: "watch",
                pattern: String::new(),
                message: "at least one pattern is needed, e.g. /logs/*.log".into(),
            });
        }
        let mut excludes = GlobSetBuilder::new();
        for pattern in exclude {
            excludes.add(compile_glob("exclude", pattern, pattern)?);
        }
        let exclude = excludes.build().map_err(|e| SourceError::Pattern {
            what: "exclude",
            pattern: String::new(),
            message: e.to_string(),
        })?;
        Ok(Self { patterns, exclude })
    }

    /// Lists the directories the patterns name now: literal ones as they are (listed later,
    /// and reported then if missing), wildcard levels by reading each level. Symlinked
    /// directories are not followed: they could lead outside the tree.
    pub fn list_dirs(&self) -> DirListing {
        let mut listing = DirListing::default();
        for (index, pattern) in self.patterns.iter().enumerate() {
            pattern.list_into(index, &mut listing);
        }
        listing
    }

    /// The source name of the file at `path` when it is a watched file (and not excluded).
    pub fn source_of(&self, path: &Path) -> Option<String> {
        let name = path.file_name()?.to_str()?;
        let dir = path.parent()?;
        let prefix = self
            .patterns
            .iter()
            .filter(|p| p.name.is_match(name))
            .find_map(|p| p.prefix_of(dir))?;
        let source = format!("{prefix}{name}");
        (!self.is_excluded(path, &source)).then_some(source)
    }

    /// Whether a file called `name` in the listed directory `dir` is a watched file.
    pub(crate) fn matches_in(&self, dir: &WatchedDir, path: &Path, name: &str) -> bool {
        dir.patterns
            .iter()
            .any(|&i| self.patterns[i].name.is_match(name))
            && !self.is_excluded(path, &format!("{}{name}", dir.prefix))
    }

    /// The format of the file at `path` whose source is named `source` (its own name, or for
    /// a rotated copy the name of the file it was): that of the first pattern naming the
    /// file's directory whose file-name glob matches the source's file name.
    pub fn format_of(&self, path: &Path, source: &str) -> LogFormat {
        let dir = path.parent().unwrap_or(Path::new("."));
        let name = file_name_of(source);
        self.patterns
            .iter()
            .find(|p| p.name.is_match(name) && p.prefix_of(dir).is_some())
            .map_or_else(LogFormat::default, |p| p.format)
    }

    fn is_excluded(&self, path: &Path, source: &str) -> bool {
        self.exclude.is_match(path)
            || self.exclude.is_match(source)
            || self.exclude.is_match(file_name_of(source))
    }
}

/// The file-name part of a source name.
pub(crate) fn file_name_of(source: &str) -> &str {
    source.rsplit('/').next().unwrap_or(source)
}

impl WatchPattern {
    fn compile(pattern: &str) -> Result<Self, SourceError> {
        let (format, glob) = split_format(pattern);
        let err = |message: &str| SourceError::Pattern {
            what: "watch",
            pattern: pattern.to_owned(),
            message: message.to_owned(),
        };
        let path = Path::new(glob);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|_| !glob.ends_with('/'))
            .ok_or_else(|| err("has no file-name part (e.g. /logs/*.log)"))?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut root = PathBuf::new();
        let mut levels = Vec::new();
        for component in dir.components() {
            let text = component.as_os_str().to_str().unwrap_or_default();
            if component == Component::ParentDir && !levels.is_empty() {
                return Err(err("`..` cannot follow a wildcard directory"));
            }
            if text.contains("**") || name.contains("**") {
                return Err(err(
                    "`**` is not supported: give one `*` per directory level (e.g. /var/log/pods/*/*/*.log)",
                ));
            }
            if levels.is_empty() && !has_wildcard(text) {
                root.push(component);
            } else {
                levels.push(level_glob(pattern, text)?);
            }
        }
        if !levels.is_empty() && !root.is_absolute() {
            return Err(err(
                "a pattern with wildcards in its directory part must be absolute",
            ));
        }
        Ok(Self {
            root,
            levels,
            name: compile_glob("watch", pattern, name)?.compile_matcher(),
            format,
        })
    }

    /// What the source names of files in `dir` start with, when `dir` is one of the
    /// pattern's directories.
    fn prefix_of(&self, dir: &Path) -> Option<String> {
        if self.levels.is_empty() {
            return (dir == self.root).then(String::new);
        }
        let below = dir.strip_prefix(&self.root).ok()?;
        let mut prefix = String::new();
        let mut count = 0;
        for (component, level) in below.components().zip(&self.levels) {
            let Component::Normal(text) = component else {
                return None;
            };
            let text = text.to_str()?;
            if !level.is_match(text) {
                return None;
            }
            prefix.push_str(text);
            prefix.push('/');
            count += 1;
        }
        (count == self.levels.len() && below.components().count() == count).then_some(prefix)
    }

    fn list_into(&self, index: usize, listing: &mut DirListing) {
        let mut current = vec![WatchedDir {
            path: self.root.clone(),
            prefix: String::new(),
            patterns: vec![index],
        }];
        for level in &self.levels {
            let mut next = Vec::new();
            for dir in &current {
                if listing.parent_set.insert(dir.path.clone()) {
                    listing.parents.push(dir.path.clone());
                }
                let entries = match fs::read_dir(&dir.path) {
                    Ok(entries) => entries,
                    Err(e) => {
                        // A level below the root vanishing (a pod deleted) is ordinary.
                        if dir.prefix.is_empty() {
                            listing.unreadable.push((dir.path.clone(), e));
                        }
                        continue;
                    }
                };
                for entry in entries.flatten() {
                    let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                    let name = entry.file_name();
                    let Some(name) = name.to_str() else { continue };
                    if is_dir && level.is_match(name) {
                        next.push(WatchedDir {
                            path: entry.path(),
                            prefix: format!("{}{name}/", dir.prefix),
                            patterns: vec![index],
                        });
                    }
                }
            }
            current = next;
        }
        for dir in current {
            match listing.dir_index.get(&dir.path) {
                Some(&known) => listing.dirs[known].patterns.push(index),
                None => {
                    listing
                        .dir_index
                        .insert(dir.path.clone(), listing.dirs.len());
                    listing.dirs.push(dir);
                }
            }
        }
    }
}

fn has_wildcard(text: &str) -> bool {
    text.contains(['*', '?', '[', '{'])
}

/// A glob for one directory level: its `*` never crosses a `/` (there is none to cross, but
/// the intent is stated).
fn level_glob(pattern: &str, level: &str) -> Result<GlobMatcher, SourceError> {
    GlobBuilder::new(level)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| SourceError::Pattern {
            what: "watch",
            pattern: pattern.to_owned(),
            message: e.kind().to_string(),
        })
}

/// A `--watch` pattern's format prefix (`cri:`…) and the glob after it; no known prefix is
/// `raw` and the whole pattern.
fn split_format(pattern: &str) -> (LogFormat, &str) {
    pattern
        .split_once(':')
        .and_then(|(prefix, glob)| Some((LogFormat::from_prefix(prefix)?, glob)))
        .unwrap_or((LogFormat::Raw, pattern))
}

fn compile_glob(what: &'static str, pattern: &str, glob: &str) -> Result<Glob, SourceError> {
    Glob::new(glob).map_err(|e| SourceError::Pattern {
        what,
        pattern: pattern.to_owned(),
        message: e.kind().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(include: &[&str]) -> SourceSpec {
        let include: Vec<String> = include.iter().map(|s| (*s).to_owned()).collect();
        SourceSpec::compile(&include, &[]).unwrap()
    }

    #[test]
    fn a_literal_directory_names_sources_by_file_name() {
        let s = spec(&["/logs/*.log"]);
        assert_eq!(
            s.source_of(Path::new("/logs/access.log")).as_deref(),
            Some("access.log")
        );
        assert_eq!(s.source_of(Path::new("/logs/access.log.1")), None);
        assert_eq!(s.source_of(Path::new("/logs/sub/access.log")), None);
        assert_eq!(s.source_of(Path::new("/other/access.log")), None);
    }

    #[test]
    fn wildcard_directories_name_sources_by_the_path_below_the_root() {
        let s = spec(&["cri:/var/log/pods/*/*/*.log"]);
        let path = Path::new("/var/log/pods/default_web-1_0f3c/web/0.log");
        assert_eq!(
            s.source_of(path).as_deref(),
            Some("default_web-1_0f3c/web/0.log")
        );
        assert_eq!(
            s.format_of(path, "default_web-1_0f3c/web/0.log"),
            LogFormat::Cri
        );
        // A rotated copy keeps its source's name and so its format.
        assert_eq!(
            s.format_of(
                Path::new("/var/log/pods/default_web-1_0f3c/web/0.log.20261206-040000"),
                "default_web-1_0f3c/web/0.log"
            ),
            LogFormat::Cri
        );
        assert_eq!(s.source_of(Path::new("/var/log/pods/a/0.log")), None);
        assert_eq!(s.source_of(Path::new("/var/log/pods/a/b/c/0.log")), None);
        assert_eq!(s.source_of(Path::new("/var/log/pods/a/b/0.log.gz")), None);
    }

    #[test]
    fn excludes_match_the_source_name_and_the_file_name() {
        let include = vec!["/var/log/pods/*/*/*.log".to_owned()];
        let s = SourceSpec::compile(&include, &["kube-system_*".to_owned()]).unwrap();
        assert_eq!(
            s.source_of(Path::new("/var/log/pods/kube-system_dns-1_u/dns/0.log")),
            None
        );
        assert!(s
            .source_of(Path::new("/var/log/pods/default_web-1_u/web/0.log"))
            .is_some());
    }

    #[test]
    fn patterns_that_cannot_work_are_refused_with_the_reason() {
        let refused = |p: &str| {
            SourceSpec::compile(&[p.to_owned()], &[])
                .unwrap_err()
                .to_string()
        };
        assert!(refused("/var/log/**/*.log").contains("`**` is not supported"));
        assert!(refused("logs/*/x.log").contains("must be absolute"));
        assert!(refused("/logs/").contains("no file-name part"));
        assert!(refused("/logs/*/../x.log").contains("`..`"));
    }

    #[test]
    fn listing_finds_the_directories_of_each_level_and_skips_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("pods");
        fs::create_dir_all(root.join("ns_a_1/web")).unwrap();
        fs::create_dir_all(root.join("ns_b_2/db")).unwrap();
        fs::write(root.join("ns_c_3"), b"a file, not a pod").unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("ns_d_4")).unwrap();
        let s = spec(&[&format!("cri:{}/*/*/*.log", root.display())]);
        let listing = s.list_dirs();
        let mut prefixes: Vec<&str> = listing.dirs.iter().map(|d| d.prefix.as_str()).collect();
        prefixes.sort_unstable();
        assert_eq!(prefixes, ["ns_a_1/web/", "ns_b_2/db/"]);
        assert!(listing.parents.contains(&root));
        assert!(listing.parents.contains(&root.join("ns_a_1")));
        assert!(listing.unreadable.is_empty());
        let missing = spec(&["/nonexistent-root-xyz/*/*.log"]).list_dirs();
        assert_eq!(missing.unreadable.len(), 1);
    }
}
