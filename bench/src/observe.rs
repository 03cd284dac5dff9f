//! What the benchmark reads of the stages' on-disk state, from the outside: commit files,
//! reader cursors, journal sizes and the file sink's output.
//!
//! Easy to get wrong: a file being written. Commit and cursor files are read the way the stages
//! read them (the newest whole slot of the two); one that is missing or has no whole slot yet
//! reads as "no progress", never as an error.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};
use serde_json::Value;

/// A position in a journal: (segment, offset).
pub type Position = (u64, u64);

/// A journal's `commit.json`: how many records it holds and where it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitInfo {
    /// Records committed over the journal's life.
    pub records: u64,
    /// The committed end.
    pub end: Position,
}

/// Reads `<dir>/commit.json`; `None` while there is none.
pub fn commit(dir: &Path) -> Option<CommitInfo> {
    let value = read_checkpoint(&dir.join("commit.json"))?;
    Some(CommitInfo {
        records: value.get("records")?.as_u64()?,
        end: position(value.get("end")?)?,
    })
}

/// Reads `<dir>/readers/<reader>.json`, the reader's consumed position; `None` while there is
/// none.
pub fn cursor(dir: &Path, reader: &str) -> Option<Position> {
    let value = read_checkpoint(&dir.join("readers").join(format!("{reader}.json")))?;
    position(value.get("position")?)
}

fn position(value: &Value) -> Option<Position> {
    Some((
        value.get("segment")?.as_u64()?,
        value.get("offset")?.as_u64()?,
    ))
}

fn read_checkpoint(path: &Path) -> Option<Value> {
    sidecar_core::checkpoint::load(path).ok().flatten()
}

/// The bytes of a journal's segment files (`segment-*.ndjson`) now on disk.
///
/// # Errors
/// When the directory cannot be listed.
pub fn journal_bytes(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("segment-") && name.ends_with(".ndjson") {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

/// Lines per stream in a file sink's directory: `<stream>.<seq>.ndjson` and
/// `<stream>.<seq>.ndjson.gz` (read through `gzip -dc`), by stream (the source file's name).
///
/// # Errors
/// When a file cannot be read or decompressed.
pub fn count_output(dir: &Path) -> anyhow::Result<(BTreeMap<String, u64>, usize)> {
    let mut counts = BTreeMap::new();
    let mut files = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (stem, gz) = if let Some(stem) = name.strip_suffix(".ndjson.gz") {
            (stem, true)
        } else if let Some(stem) = name.strip_suffix(".ndjson") {
            (stem, false)
        } else {
            continue;
        };
        // `<stream>.<seq>`: the stream is everything before the last dot.
        let stream = stem
            .rsplit_once('.')
            .map_or(stem, |(stream, _)| stream)
            .to_owned();
        let lines = if gz {
            let mut child = Command::new("gzip")
                .arg("-dc")
                .arg(&path)
                .stdout(Stdio::piped())
                .spawn()
                .context("running gzip -dc (is gzip installed?)")?;
            let lines = count_newlines(child.stdout.take().expect("stdout was piped"))?;
            if !child.wait()?.success() {
                bail!("gzip -dc {} failed", path.display());
            }
            lines
        } else {
            count_newlines(
                File::open(&path).with_context(|| format!("opening {}", path.display()))?,
            )?
        };
        *counts.entry(stream).or_default() += lines;
        files += 1;
    }
    Ok((counts, files))
}

fn count_newlines(mut input: impl Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut lines = 0;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(lines),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
    }
}
