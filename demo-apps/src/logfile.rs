//! The log directory and its files: Python-logging line layouts and append-only buffered writers.
//!
//! Two layouts, both opening with Python logging's `asctime` (local time,
//! `2026-11-22 10:30:45,123`):
//!
//! - JSON: `<timestamp> - {"event":"…",…}`
//! - text: `<timestamp> - <logger> - <LEVEL> - <message>`
//!
//! The one thing easy to get wrong: a sidecar tails these files while they grow and must never
//! see half a line. Every line goes into the `BufWriter` in one `write_all` together with its
//! newline, so the buffer only ever holds whole lines and any flush, explicit or because the
//! buffer filled up, ends at a line boundary.

use parking_lot::Mutex;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Local};
use serde::Serialize;

/// Python logging's default `asctime` layout: local time, a comma, then milliseconds.
pub const TIMESTAMP_FORMAT: &str = "%Y-%m-%d %H:%M:%S,%3f";

/// Length in bytes of a formatted timestamp such as `2026-11-22 10:30:45,123`.
pub const TIMESTAMP_LEN: usize = 23;

/// What separates the timestamp from the rest of a line, and the fields of the text layout.
pub const SEPARATOR: &str = " - ";

/// Buffer size per file: large enough that a busy batch costs one `write` per file, small enough
/// that seven files stay well under a megabyte.
const WRITE_BUFFER_BYTES: usize = 64 * 1024;

/// Longest user-supplied value copied into a text-layout message, in characters.
const MAX_QUOTED_CHARS: usize = 80;

/// Severity of a text-layout line, named as Python logging names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// `DEBUG`: detail for developers.
    Debug,
    /// `INFO`: normal operation.
    Info,
    /// `WARNING`: unexpected but handled.
    Warning,
    /// `ERROR`: a request or operation failed.
    Error,
}

impl Level {
    /// The level as it appears in a line: `DEBUG`, `INFO`, `WARNING` or `ERROR`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Formats `time` as Python logging's `asctime`, e.g. `2026-11-22 10:30:45,123`.
pub fn timestamp(time: DateTime<Local>) -> String {
    time.format(TIMESTAMP_FORMAT).to_string()
}

/// One JSON-layout line without its newline: `<timestamp> - <record as one-line JSON>`.
pub fn json_line<T: Serialize>(timestamp: &str, record: &T) -> String {
    let mut line = Vec::with_capacity(256);
    write_json_line(&mut line, timestamp, record);
    line.pop();
    String::from_utf8(line).expect("serde_json and the timestamp write only UTF-8")
}

/// One text-layout line without its newline: `<timestamp> - <logger> - <LEVEL> - <message>`.
pub fn text_line(timestamp: &str, logger: &str, level: Level, message: &str) -> String {
    format!("{timestamp}{SEPARATOR}{logger}{SEPARATOR}{level}{SEPARATOR}{message}")
}

/// Makes a user-supplied value safe to put inside a text-layout message: control characters
/// (which would split the line) become `?`, and long values are cut to 80 characters.
pub fn printable(value: &str) -> String {
    let mut out: String = value
        .chars()
        .take(MAX_QUOTED_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().nth(MAX_QUOTED_CHARS).is_some() {
        out.push('…');
    }
    out
}

fn write_json_line<T: Serialize>(out: &mut Vec<u8>, timestamp: &str, record: &T) {
    out.extend_from_slice(timestamp.as_bytes());
    out.extend_from_slice(SEPARATOR.as_bytes());
    serde_json::to_writer(&mut *out, record)
        .expect("log records are structs of strings, numbers and bools, which always serialise");
    out.push(b'\n');
}

/// Lines formatted for the files of one app, kept in the order they were produced.
///
/// Generators append to a batch; [`LogFiles::write`] then copies each line to its file. Lines
/// are addressed by the index of their file in the app's file list (e.g. [`crate::web::ACCESS_LOG`]).
/// After warm-up a reused batch allocates nothing per line.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    /// All lines, each ending in `\n`.
    text: Vec<u8>,
    /// Per line: the file index and the end offset in `text` (exclusive, after the newline).
    lines: Vec<(usize, usize)>,
    /// The timestamp put on lines appended from now on.
    stamp: String,
}

impl Batch {
    /// An empty batch stamped with the current local time.
    pub fn new() -> Self {
        let mut batch = Batch::default();
        batch.stamp_now();
        batch
    }

    /// Stamps lines appended from now on with `time`.
    pub fn stamp(&mut self, time: DateTime<Local>) {
        use std::fmt::Write as _;
        self.stamp.clear();
        write!(self.stamp, "{}", time.format(TIMESTAMP_FORMAT))
            .expect("writing to a String cannot fail");
    }

    /// Stamps lines appended from now on with the current local time.
    pub fn stamp_now(&mut self) {
        self.stamp(Local::now());
    }

    /// Appends a JSON-layout line for `file`.
    pub fn push_json<T: Serialize>(&mut self, file: usize, record: &T) {
        write_json_line(&mut self.text, &self.stamp, record);
        self.lines.push((file, self.text.len()));
    }

    /// Appends a text-layout line for `file`. `message` must not contain a newline; pass
    /// user-supplied values through [`printable`].
    pub fn push_text(
        &mut self,
        file: usize,
        logger: &str,
        level: Level,
        message: fmt::Arguments<'_>,
    ) {
        writeln!(
            self.text,
            "{}{SEPARATOR}{logger}{SEPARATOR}{level}{SEPARATOR}{message}",
            self.stamp
        )
        .expect("writing to a Vec cannot fail");
        self.lines.push((file, self.text.len()));
    }

    /// Appends an ERROR text-layout line followed by `traceback` (its lines joined with `\n`,
    /// no final newline), as Python's `logger.exception` writes them. They are one entry: one
    /// `write_all`, so a reader never sees half a trace, and one unit of the line budget, as
    /// they are one log record.
    pub fn push_exception(
        &mut self,
        file: usize,
        logger: &str,
        message: fmt::Arguments<'_>,
        traceback: &str,
    ) {
        let level = Level::Error;
        writeln!(
            self.text,
            "{}{SEPARATOR}{logger}{SEPARATOR}{level}{SEPARATOR}{message}\n{traceback}",
            self.stamp
        )
        .expect("writing to a Vec cannot fail");
        self.lines.push((file, self.text.len()));
    }

    /// Number of lines in the batch.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the batch holds no line.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Drops every line, keeping the allocations and the timestamp.
    pub fn clear(&mut self) {
        self.text.clear();
        self.lines.clear();
    }

    /// Keeps only the first `len` lines.
    pub fn truncate(&mut self, len: usize) {
        if len < self.lines.len() {
            self.lines.truncate(len);
            let end = self.lines.last().map_or(0, |&(_, end)| end);
            self.text.truncate(end);
        }
    }

    /// The lines in order, each with its file index, without the final newline (a line from
    /// [`Batch::push_exception`] holds its traceback's lines).
    pub fn lines(&self) -> impl Iterator<Item = (usize, &str)> + '_ {
        self.raw_lines()
            .map(|(file, line)| (file, &line[..line.len() - 1]))
            .map(|(file, line)| {
                let line = std::str::from_utf8(line).expect("batches hold only UTF-8 lines");
                (file, line)
            })
    }

    /// The lines in order, each with its file index, including the newline.
    fn raw_lines(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        let mut start = 0;
        self.lines.iter().map(move |&(file, end)| {
            let line = &self.text[start..end];
            start = end;
            (file, line)
        })
    }
}

/// Failure to create, open or write a log file.
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    /// The log directory could not be created.
    #[error("cannot create log directory {}", .path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A log file could not be opened for appending.
    #[error("cannot open log file {}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing or flushing a log file failed.
    #[error("cannot write log file {}", .path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The log files of one app, opened for appending, each behind a `BufWriter`.
///
/// Optionally holds a line budget (`--max-lines`), counted in log records (a traceback goes with
/// its line): once that many were written, further lines are dropped and [`LogFiles::is_exhausted`] turns true so the app can stop.
#[derive(Debug)]
pub struct LogFiles {
    files: Vec<LogFile>,
    max_lines: Option<u64>,
    lines_written: u64,
}

#[derive(Debug)]
struct LogFile {
    path: PathBuf,
    writer: BufWriter<File>,
}

impl LogFiles {
    /// Creates `dir` if missing and opens (creating if missing) each of `names` inside it in
    /// append mode. Line file indexes follow the order of `names`.
    ///
    /// # Errors
    ///
    /// [`LogFileError::CreateDir`] or [`LogFileError::Open`], naming the path.
    pub fn open(dir: &Path, names: &[&str]) -> Result<Self, LogFileError> {
        fs::create_dir_all(dir).map_err(|source| LogFileError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let files = names
            .iter()
            .map(|name| {
                let path = dir.join(name);
                // O_APPEND: every write lands at the current end even if another process (or a
                // second instance) appends too, and a truncation by logrotate is respected.
                match OpenOptions::new().append(true).create(true).open(&path) {
                    Ok(file) => Ok(LogFile {
                        writer: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
                        path,
                    }),
                    Err(source) => Err(LogFileError::Open { path, source }),
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(LogFiles {
            files,
            max_lines: None,
            lines_written: 0,
        })
    }

    /// Stops writing after `max_lines` lines in total across the files (`None`: no limit).
    pub fn with_max_lines(mut self, max_lines: Option<u64>) -> Self {
        self.max_lines = max_lines;
        self
    }

    /// Copies the lines of `batch` into the files' buffers, up to the line budget, and returns
    /// how many were taken. Buffers are flushed by [`LogFiles::flush`], or earlier (still at a
    /// line boundary) when one fills up.
    ///
    /// # Errors
    ///
    /// [`LogFileError::Write`] when a full buffer could not be written out.
    pub fn write(&mut self, batch: &Batch) -> Result<usize, LogFileError> {
        let room = self
            .max_lines
            .map_or(u64::MAX, |max| max - self.lines_written);
        let take = batch.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        for (index, line) in batch.raw_lines().take(take) {
            let file = &mut self.files[index];
            file.writer
                .write_all(line)
                .map_err(|source| LogFileError::Write {
                    path: file.path.clone(),
                    source,
                })?;
        }
        self.lines_written += take as u64;
        Ok(take)
    }

    /// Writes out every buffered line.
    ///
    /// # Errors
    ///
    /// [`LogFileError::Write`] naming the first file that failed.
    pub fn flush(&mut self) -> Result<(), LogFileError> {
        for file in &mut self.files {
            file.writer.flush().map_err(|source| LogFileError::Write {
                path: file.path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Lines written since opening.
    pub fn lines_written(&self) -> u64 {
        self.lines_written
    }

    /// Whether the line budget is used up.
    pub fn is_exhausted(&self) -> bool {
        self.max_lines.is_some_and(|max| self.lines_written >= max)
    }

    /// Path of the file with index `file`.
    ///
    /// # Panics
    ///
    /// If `file` is not an index into the names given to [`LogFiles::open`].
    pub fn path(&self, file: usize) -> &Path {
        &self.files[file].path
    }
}

/// Formats lines with `build`, stamped with the current time, and writes them to the shared
/// `files`; returns how many were written (fewer once the line budget runs out). The lock is
/// held only for the copy into the buffers.
///
/// # Errors
///
/// When a full buffer could not be written out.
pub fn append(
    files: &Mutex<LogFiles>,
    build: impl FnOnce(&mut Batch),
) -> Result<usize, LogFileError> {
    let mut batch = Batch::new();
    build(&mut batch);
    files.lock().write(&batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn fixed_time() -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2026, 11, 22, 10, 30, 45)
            .unwrap()
            .checked_add_signed(chrono::TimeDelta::milliseconds(123))
            .unwrap()
    }

    #[test]
    fn timestamp_matches_python_asctime() {
        let stamp = timestamp(fixed_time());
        assert_eq!(stamp, "2026-11-22 10:30:45,123");
        assert_eq!(stamp.len(), TIMESTAMP_LEN);
    }

    #[test]
    fn layouts_join_fields_with_dashes() {
        #[derive(Serialize)]
        struct Record {
            event: &'static str,
            n: u32,
        }
        let stamp = timestamp(fixed_time());
        assert_eq!(
            json_line(&stamp, &Record { event: "x", n: 1 }),
            r#"2026-11-22 10:30:45,123 - {"event":"x","n":1}"#
        );
        assert_eq!(
            text_line(&stamp, "web-api", Level::Warning, "User 42 not found"),
            "2026-11-22 10:30:45,123 - web-api - WARNING - User 42 not found"
        );
    }

    #[test]
    fn printable_removes_newlines_and_cuts_long_values() {
        assert_eq!(printable("a\nb\tc"), "a?b?c");
        let long = "x".repeat(100);
        assert_eq!(printable(&long).chars().count(), MAX_QUOTED_CHARS + 1);
    }

    #[test]
    fn batch_keeps_order_and_truncates_whole_lines() {
        let mut batch = Batch::new();
        batch.stamp(fixed_time());
        batch.push_text(0, "app", Level::Info, format_args!("one"));
        batch.push_json(1, &serde_json::json!({"n": 2}));
        batch.push_text(0, "app", Level::Error, format_args!("three"));
        let lines: Vec<_> = batch.lines().collect();
        assert_eq!(
            lines,
            [
                (0, "2026-11-22 10:30:45,123 - app - INFO - one"),
                (1, r#"2026-11-22 10:30:45,123 - {"n":2}"#),
                (0, "2026-11-22 10:30:45,123 - app - ERROR - three"),
            ]
        );
        batch.truncate(1);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch.lines().count(), 1);
        batch.push_text(1, "app", Level::Debug, format_args!("four"));
        assert_eq!(
            batch.lines().nth(1),
            Some((1, "2026-11-22 10:30:45,123 - app - DEBUG - four"))
        );
    }

    #[test]
    fn an_exception_and_its_traceback_are_one_entry() {
        let mut batch = Batch::new();
        batch.stamp(fixed_time());
        batch.push_exception(
            0,
            "web-api",
            format_args!("boom"),
            "Traceback (most recent call last):\n  File \"a.py\", line 1, in f\n    g()\nValueError: x",
        );
        batch.push_text(0, "web-api", Level::Info, format_args!("next"));
        let lines: Vec<_> = batch.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].1,
            "2026-11-22 10:30:45,123 - web-api - ERROR - boom\nTraceback (most recent call last):\n  File \"a.py\", line 1, in f\n    g()\nValueError: x"
        );
    }

    #[test]
    fn files_append_and_respect_the_line_budget() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("nested/logs");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::write(logs.join("a.log"), "existing\n").unwrap();

        let mut files = LogFiles::open(&logs, &["a.log", "b.log"])
            .unwrap()
            .with_max_lines(Some(3));
        let mut batch = Batch::new();
        for n in 0..4 {
            batch.push_text(n % 2, "app", Level::Info, format_args!("line {n}"));
        }
        assert_eq!(files.write(&batch).unwrap(), 3);
        assert!(files.is_exhausted());
        assert_eq!(files.write(&batch).unwrap(), 0);
        files.flush().unwrap();

        let a = std::fs::read_to_string(logs.join("a.log")).unwrap();
        let b = std::fs::read_to_string(logs.join("b.log")).unwrap();
        assert_eq!(a.lines().count(), 3, "{a}");
        assert!(a.starts_with("existing\n"));
        assert!(a.ends_with("line 2\n"));
        assert_eq!(b.lines().count(), 1);
        assert_eq!(files.lines_written(), 3);
    }
}
