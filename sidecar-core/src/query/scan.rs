//! Finding records in a journal for a query: the last N (reading segments backwards in
//! chunks), a window from a time on (seeking to the segment that holds it), and a follow of
//! new commits that survives segment rotation and retention.
//!
//! Easy to get wrong: retention deletes consumed segments under a query at any moment. A
//! missing segment is not an error here: the tail stops (what is older is gone too), and a
//! forward read skips to the oldest segment still there and counts the gap.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::journal::{
    is_marker, list_segments, records as lines, segment_path, JournalError, JournalReader, Position,
};

use super::{Filter, RecordView};

/// Bytes read per step when reading backwards (default 64 KiB): large enough for few reads,
/// small enough that `tail=10` on a huge journal reads almost nothing.
pub const DEFAULT_CHUNK_BYTES: usize = 64 << 10;

/// The committed end of the journal at `dir`; `None` before its first commit (or when there
/// is no journal there yet).
///
/// # Errors
/// When the commit file exists but cannot be read.
pub fn committed_end(dir: &Path) -> Result<Option<Position>, JournalError> {
    JournalReader::new(dir, Position::default()).committed_end()
}

/// The last records that pass a filter, oldest first, and where the journal ended.
#[derive(Debug, Default)]
pub struct Tail {
    /// Matching lines (without newline; or as transformed by [`tail_with`]), oldest first.
    pub lines: Vec<Vec<u8>>,
    /// The committed end the tail was taken at: a follow continues from here.
    pub end: Position,
    /// Bytes read from segment files.
    pub bytes_read: u64,
    /// Whether fewer than N lines were kept because they reached the byte limit.
    pub cut: bool,
}

/// Reads the journal at `dir` backwards from its committed end in chunks of `chunk_bytes`
/// until `n` lines pass `filter`, the kept lines reach `max_bytes`, a record older than the
/// filter's `since` is reached, or the oldest segment is read.
///
/// # Errors
/// When the commit file or a segment cannot be read (a deleted segment is not an error).
pub fn tail(
    dir: &Path,
    filter: &Filter,
    n: usize,
    chunk_bytes: usize,
    max_bytes: usize,
) -> Result<Tail, JournalError> {
    tail_with(dir, filter, n, chunk_bytes, max_bytes, &mut |line| {
        line.to_vec()
    })
}

/// As [`tail`], keeping `transform(line)` (e.g. the formatted record) instead of each line,
/// and counting its size against `max_bytes`.
///
/// # Errors
/// As [`tail`].
pub fn tail_with(
    dir: &Path,
    filter: &Filter,
    n: usize,
    chunk_bytes: usize,
    max_bytes: usize,
    transform: &mut dyn FnMut(&[u8]) -> Vec<u8>,
) -> Result<Tail, JournalError> {
    let Some(end) = committed_end(dir)? else {
        return Ok(Tail::default());
    };
    let mut tail = Tail {
        end,
        ..Tail::default()
    };
    if n == 0 {
        return Ok(tail);
    }
    let segments = list_segments(dir).map_err(|source| JournalError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut found = Vec::new();
    let mut kept_bytes = 0;
    for &segment in segments.iter().rev().filter(|&&s| s <= end.segment) {
        let mut backwards = match BackwardLines::open(dir, segment, end, chunk_bytes.max(1))? {
            Some(b) => b,
            None => break, // Deleted by retention: everything older is gone too.
        };
        while let Some(line) = backwards.next_line(&mut tail.bytes_read)? {
            let view = RecordView::decode(&line);
            if let (Some(since), Some(at)) = (&filter.since, &view.collected_at) {
                if at.as_ref() < since.as_str() {
                    // The journal is in collection order: nothing earlier can match.
                    found.reverse();
                    tail.lines = found;
                    return Ok(tail);
                }
            }
            if filter.matches_view(&view, &line) {
                let kept = transform(&line);
                kept_bytes += kept.len();
                if kept_bytes > max_bytes {
                    tail.cut = true;
                    found.reverse();
                    tail.lines = found;
                    return Ok(tail);
                }
                found.push(kept);
                if found.len() == n {
                    found.reverse();
                    tail.lines = found;
                    return Ok(tail);
                }
            }
        }
    }
    found.reverse();
    tail.lines = found;
    Ok(tail)
}

/// Whether the journal holds a record of `source`, looking backwards from its end: instant
/// for a source that logged lately; only a source that is not there costs a full read.
///
/// # Errors
/// As [`tail`].
pub fn has_source(dir: &Path, source: &str, chunk_bytes: usize) -> Result<bool, JournalError> {
    let filter = Filter {
        sources: vec![source.to_owned()],
        ..Filter::default()
    };
    Ok(!tail(dir, &filter, 1, chunk_bytes, usize::MAX)?
        .lines
        .is_empty())
}

/// Whether the journal holds a record of the container named `container`
/// (`kubernetes.container_name`), looking backwards from its end, as [`has_source`] does. For
/// an error's hint: a container runtime's files are all named `0.log`, so someone who names a
/// container where a source goes gets told which flag they meant.
///
/// # Errors
/// As [`tail`].
pub fn has_container(
    dir: &Path,
    container: &str,
    chunk_bytes: usize,
) -> Result<bool, JournalError> {
    let filter = Filter {
        containers: vec![container.to_owned()],
        ..Filter::default()
    };
    Ok(!tail(dir, &filter, 1, chunk_bytes, usize::MAX)?
        .lines
        .is_empty())
}

/// Whole lines of one segment, last first, read in chunks from its end.
struct BackwardLines {
    path: PathBuf,
    file: File,
    /// Bytes of the segment before this offset are not read yet.
    unread: u64,
    chunk_bytes: usize,
    /// Read bytes not yet returned: complete lines after a possibly incomplete first one.
    pending: Vec<u8>,
}

impl BackwardLines {
    fn open(
        dir: &Path,
        segment: u64,
        end: Position,
        chunk_bytes: usize,
    ) -> Result<Option<Self>, JournalError> {
        let path = segment_path(dir, segment);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(JournalError::Io { path, source }),
        };
        let limit = if segment == end.segment {
            end.offset
        } else {
            file.metadata()
                .map_err(|source| JournalError::Io {
                    path: path.clone(),
                    source,
                })?
                .len()
        };
        Ok(Some(Self {
            path,
            file,
            unread: limit,
            chunk_bytes,
            pending: Vec::new(),
        }))
    }

    /// The next line going backwards, without its newline; `None` at the segment's start.
    fn next_line(&mut self, bytes_read: &mut u64) -> Result<Option<Vec<u8>>, JournalError> {
        loop {
            // Strip the newline that ends the pending bytes (every record ends with one).
            if self.pending.last() == Some(&b'\n') {
                self.pending.pop();
            }
            if let Some(i) = memchr::memrchr(b'\n', &self.pending) {
                let line = self.pending.split_off(i + 1);
                if !line.is_empty() && !is_marker(&line) {
                    return Ok(Some(line));
                }
                continue;
            }
            if self.unread == 0 {
                // The first line of the segment is whole: nothing precedes it.
                let first = std::mem::take(&mut self.pending);
                if first.is_empty() || is_marker(&first) {
                    return Ok(None);
                }
                return Ok(Some(first));
            }
            self.read_chunk(bytes_read)?;
        }
    }

    /// Prepends the chunk before the pending bytes.
    fn read_chunk(&mut self, bytes_read: &mut u64) -> Result<(), JournalError> {
        let want = (self.chunk_bytes as u64).min(self.unread) as usize;
        let start = self.unread - want as u64;
        let mut chunk = vec![0; want + self.pending.len()];
        self.file
            .read_exact_at(&mut chunk[..want], start)
            .map_err(|source| JournalError::Io {
                path: self.path.clone(),
                source,
            })?;
        chunk[want..].copy_from_slice(&self.pending);
        self.pending = chunk;
        self.unread = start;
        *bytes_read += want as u64;
        Ok(())
    }
}

/// Where a forward read of records collected at or after `since` should start: the start of
/// the last segment whose first record is older than `since` (or the oldest segment). Reads
/// one line per segment.
///
/// # Errors
/// When the directory cannot be listed.
pub fn seek_since(dir: &Path, since: Option<&str>) -> Result<Position, JournalError> {
    let segments = list_segments(dir).map_err(|source| JournalError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let Some(&oldest) = segments.first() else {
        return Ok(Position::default());
    };
    let mut start = oldest;
    if let Some(since) = since {
        for &segment in &segments {
            match first_collected_at(&segment_path(dir, segment)) {
                Some(at) if at.as_str() < since => start = segment,
                Some(_) => break,
                None => continue,
            }
        }
    }
    Ok(Position {
        segment: start,
        offset: 0,
    })
}

fn first_collected_at(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let mut buf = vec![0; 4096];
    let mut filled = 0;
    loop {
        let n = file.read_at(&mut buf[filled..], filled as u64).ok()?;
        if n == 0 {
            return None;
        }
        filled += n;
        // The first whole record: a segment may start with commit markers (commits of no
        // records).
        let whole_lines = memchr::memrchr(b'\n', &buf[..filled]).map_or(&[][..], |i| &buf[..i]);
        if let Some(record) = lines(whole_lines).next() {
            let view = RecordView::decode(record);
            return view.collected_at.map(|c| c.into_owned());
        }
        if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Reads committed records forward from a position, as far as the journal is committed, again
/// and again: the engine of a follow. Holds no cursor, so the pipeline never waits for it.
pub struct Follower {
    reader: JournalReader,
    buf: Vec<u8>,
    skipped_segments: u64,
}

impl Follower {
    /// A follower of the journal at `dir` from `position`.
    pub fn new(dir: &Path, position: Position) -> Self {
        Self {
            reader: JournalReader::new(dir, position),
            buf: Vec::new(),
            skipped_segments: 0,
        }
    }

    /// Where the next read starts.
    pub fn position(&self) -> Position {
        self.reader.position()
    }

    /// Segments deleted by retention before this follower read them (their records were
    /// skipped).
    pub fn skipped_segments(&self) -> u64 {
        self.skipped_segments
    }

    /// The next batch of committed whole lines (NDJSON, about `max_bytes`), up to `end`; empty
    /// when the follower has reached `end`.
    ///
    /// # Errors
    /// When a segment cannot be read for another reason than its deletion.
    pub fn read_to(&mut self, end: Position, max_bytes: usize) -> Result<&[u8], JournalError> {
        loop {
            if self.reader.position() >= end {
                self.buf.clear();
                return Ok(&self.buf);
            }
            match self.reader.read_batch(end, max_bytes, &mut self.buf) {
                Ok(_) => return Ok(&self.buf),
                Err(JournalError::MissingSegment { .. }) => self.skip_deleted()?,
                Err(e) => return Err(e),
            }
        }
    }

    /// The next batch up to the journal's current committed end (see [`Follower::read_to`]).
    ///
    /// # Errors
    /// As [`Follower::read_to`], or when the commit file cannot be read.
    pub fn read_committed(&mut self, max_bytes: usize) -> Result<&[u8], JournalError> {
        let Some(end) = self.reader.committed_end()? else {
            self.buf.clear();
            return Ok(&self.buf);
        };
        if end < self.reader.position() {
            // The journal was replaced (a new volume): start over at its beginning.
            let start = seek_since(self.reader.dir(), None)?;
            self.reader = JournalReader::new(self.reader.dir(), start);
        }
        self.read_to(end, max_bytes)
    }

    /// The segment we were about to read was deleted: go on at the oldest one still there.
    fn skip_deleted(&mut self) -> Result<(), JournalError> {
        let dir = self.reader.dir().to_owned();
        let at = self.reader.position().segment;
        let segments = list_segments(&dir).map_err(|source| JournalError::Io {
            path: dir.clone(),
            source,
        })?;
        let next =
            segments
                .into_iter()
                .find(|&s| s > at)
                .ok_or_else(|| JournalError::MissingSegment {
                    path: segment_path(&dir, at),
                })?;
        self.skipped_segments += next - at;
        tracing::debug!(
            from = at,
            to = next,
            "Query follower skipped segments deleted by retention."
        );
        self.reader = JournalReader::new(
            &dir,
            Position {
                segment: next,
                offset: 0,
            },
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Durability;
    use crate::journal::{records as lines, Cursor, JournalOptions, JournalWriter};
    use serde_json::json;

    fn writer(dir: &Path, segment_max_bytes: u64) -> JournalWriter<u64> {
        let options = JournalOptions {
            segment_max_bytes,
            durability: Durability::PageCache,
            retention_max_bytes: 0,
            readers: vec!["next".into()],
            ..JournalOptions::default()
        };
        JournalWriter::open(dir, options).unwrap().0
    }

    fn write(w: &mut JournalWriter<u64>, range: std::ops::Range<u64>, at: &str) {
        for n in range.clone() {
            w.push(&json!({
                "n": n, "source_file": if n % 2 == 0 { "even.log" } else { "odd.log" },
                "collected_at": at, "log_level": if n % 10 == 0 { "ERROR" } else { "INFO" },
                "message": format!("record {n}"),
            }));
        }
        w.commit(&range.end).unwrap();
    }

    fn numbers(lines: &[Vec<u8>]) -> Vec<u64> {
        lines
            .iter()
            .map(|l| {
                serde_json::from_slice::<serde_json::Value>(l).unwrap()["n"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[test]
    fn tail_reads_only_the_end_of_a_large_journal() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 64 << 10);
        for batch in 0..100 {
            write(
                &mut w,
                batch * 100..batch * 100 + 100,
                "2026-11-22T10:00:00.000Z",
            );
        }
        let t = tail(dir.path(), &Filter::default(), 10, 4096, usize::MAX).unwrap();
        assert!(has_source(dir.path(), "odd.log", 4096).unwrap());
        assert!(!has_source(dir.path(), "none.log", 4096).unwrap());
        assert_eq!(numbers(&t.lines), (9990..10000).collect::<Vec<_>>());
        assert!(
            t.bytes_read <= 4096,
            "read {} bytes for 10 records",
            t.bytes_read
        );
        assert_eq!(t.end, w.end());
        // A filter that matches sparsely reads further back, still across segments.
        let f = Filter {
            sources: vec!["odd.log".into()],
            min_level: Some(crate::query::Level::Error),
            ..Filter::default()
        };
        assert!(
            tail(dir.path(), &f, 5, 4096, usize::MAX)
                .unwrap()
                .lines
                .is_empty(),
            "odd n are never n%10==0"
        );
        let f = Filter {
            min_level: Some(crate::query::Level::Error),
            ..Filter::default()
        };
        let t = tail(dir.path(), &f, 300, 1000, usize::MAX).unwrap();
        assert_eq!(
            numbers(&t.lines),
            (7000..10000).step_by(10).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_tail_by_container_skips_other_containers_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        for n in 0..30u64 {
            let container = ["web", "db", "worker"][n as usize % 3];
            w.push(&json!({
                "n": n, "source_file": "0.log", "stream": "stderr", "message": "x",
                "kubernetes": {"namespace": "shop", "pod_name": "shop-0", "container_name": container},
            }));
        }
        w.push(&json!({"n": 30, "source_file": "access.log", "message": "no pod"}));
        w.commit(&31).unwrap();
        let f = Filter {
            containers: vec!["web".into()],
            ..Filter::default()
        };
        let t = tail(dir.path(), &f, 3, 256, usize::MAX).unwrap();
        assert_eq!(numbers(&t.lines), [21, 24, 27]);
        assert!(has_container(dir.path(), "db", 256).unwrap());
        assert!(!has_container(dir.path(), "access.log", 256).unwrap());
    }

    #[test]
    fn tail_keeps_at_most_max_bytes_of_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        write(&mut w, 0..50, "2026-11-22T10:00:00.000Z");
        let t = tail(dir.path(), &Filter::default(), 50, 4096, 1000).unwrap();
        assert!(t.cut);
        let kept = numbers(&t.lines);
        assert!(!kept.is_empty() && kept.len() < 50);
        assert_eq!(kept.last(), Some(&49));
        assert!(t.lines.iter().map(Vec::len).sum::<usize>() <= 1000);
    }

    #[test]
    fn tail_with_chunks_smaller_than_a_record_still_returns_whole_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 1 << 20);
        write(&mut w, 0..50, "2026-11-22T10:00:00.000Z");
        let t = tail(dir.path(), &Filter::default(), 50, 7, usize::MAX).unwrap();
        assert_eq!(numbers(&t.lines), (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn tail_stops_at_since_and_seek_skips_older_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 500);
        write(&mut w, 0..20, "2026-11-22T09:00:00.000Z");
        write(&mut w, 20..40, "2026-11-22T10:00:00.000Z");
        write(&mut w, 40..60, "2026-11-22T11:00:00.000Z");
        let f = Filter {
            since: Some("2026-11-22T10:00:00.000Z".into()),
            until: Some("2026-11-22T10:30:00.000Z".into()),
            ..Filter::default()
        };
        assert_eq!(
            numbers(&tail(dir.path(), &f, 100, 256, usize::MAX).unwrap().lines),
            (20..40).collect::<Vec<_>>()
        );
        let f = Filter {
            since: Some("2026-11-22T10:30:00.000Z".into()),
            ..Filter::default()
        };
        let start = seek_since(dir.path(), f.since.as_deref()).unwrap();
        assert_eq!(start.segment, 1, "older segments are skipped: {start:?}");
        let mut follower = Follower::new(dir.path(), start);
        let mut seen = Vec::new();
        loop {
            let batch = follower.read_committed(1024).unwrap();
            if batch.is_empty() {
                break;
            }
            seen.extend(lines(batch).filter(|l| f.matches(l)).map(<[u8]>::to_vec));
        }
        assert_eq!(numbers(&seen), (40..60).collect::<Vec<_>>());
    }

    #[test]
    fn a_follower_survives_rotation_and_deletion_of_segments() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = writer(dir.path(), 300);
        write(&mut w, 0..5, "2026-11-22T10:00:00.000Z");
        let mut follower = Follower::new(dir.path(), Position::default());
        let first = numbers(
            &lines(follower.read_committed(64).unwrap())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>(),
        );
        assert!(!first.is_empty());
        // Many rolls, then the downstream reader consumes everything and retention deletes
        // the old segments before the follower reads them.
        for batch in 1..20 {
            write(&mut w, batch * 5..batch * 5 + 5, "2026-11-22T10:00:00.000Z");
        }
        Cursor::new(w.end(), ())
            .store(dir.path(), "next", Durability::PageCache)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        w.housekeeping();
        assert!(
            list_segments(dir.path()).unwrap()[0] > 1,
            "retention deleted segments"
        );
        let mut seen = Vec::new();
        loop {
            let batch = follower.read_committed(1 << 20).unwrap();
            if batch.is_empty() {
                break;
            }
            seen.extend(numbers(
                &lines(batch).map(<[u8]>::to_vec).collect::<Vec<_>>(),
            ));
        }
        assert!(follower.skipped_segments() > 0);
        assert_eq!(seen.last(), Some(&99), "the follower reached the end");
        write(&mut w, 100..103, "2026-11-22T10:00:00.000Z");
        let batch = follower.read_committed(1 << 20).unwrap();
        assert_eq!(
            numbers(&lines(batch).map(<[u8]>::to_vec).collect::<Vec<_>>()),
            vec![100, 101, 102]
        );
    }
}
