//! The dead-letter journal: records a server refused for good (a 4xx that retrying cannot
//! change), kept in the forwarder's volume instead of dropped.
//!
//! One journal per network sink, `<directory>/<sink>/`, in the same format as the stage
//! journals (segments + `commit.json`), so a replay tool reads it like any other (and `jq` the
//! segments' lines but the `#` commit markers). Each entry holds the record unchanged plus the
//! sink, the status and the server's reason.
//!
//! Easy to get wrong: order. The entries are committed (fsynced) before the sink reports the
//! batch as done, so the forwarder's commit never passes a refused record that is not kept.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use parking_lot::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{OutRecord, SinkError};
use crate::config::{ByteSize, HumanDuration};
use crate::journal::{JournalOptions, JournalWriter};
use crate::record::timestamp_now;

/// `dead_letter:` in the forwarder's config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterSpec {
    /// Where the journals go (default: `dead-letter/` in the forwarder's input volume, which
    /// the forwarder owns and which survives restarts of the container).
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Each sink's dead letters are kept up to this size (default 64 MiB) ...
    #[serde(default = "default_max_bytes")]
    pub max_bytes: ByteSize,
    /// ... and this age (default 7 days); older whole segments are deleted.
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
}

impl Default for DeadLetterSpec {
    fn default() -> Self {
        Self {
            directory: None,
            max_bytes: default_max_bytes(),
            max_age: default_max_age(),
        }
    }
}

fn default_max_bytes() -> ByteSize {
    ByteSize(64 << 20)
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}

/// Where dead letters go when no directory is configured and no default was filled in.
pub const FALLBACK_DIR: &str = "dead-letter";

/// One dead letter, as written to the journal.
#[derive(Debug, Serialize)]
struct Entry<'a> {
    sink: &'a str,
    status: u16,
    reason: &'a str,
    dead_lettered_at: &'a str,
    /// The record exactly as the forwarder read it, when it is JSON ...
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<&'a RawValue>,
    /// ... else its text.
    #[serde(skip_serializing_if = "Option::is_none")]
    record_text: Option<std::borrow::Cow<'a, str>>,
}

/// Dead letters kept over each journal's life, per sink, for the report.
static TOTALS: LazyLock<Mutex<BTreeMap<String, u64>>> = LazyLock::new(Default::default);

/// Dead letters kept so far per sink (over the journals' life, as committed on disk).
pub fn totals() -> BTreeMap<String, u64> {
    TOTALS.lock().clone()
}

/// A sink's dead-letter journal.
pub struct DeadLetter {
    dir: PathBuf,
    writer: Option<JournalWriter<()>>,
    options: JournalOptions,
    sink: String,
}

impl DeadLetter {
    /// Prepares the journal of `sink`; the directory is created on the first dead letter, so
    /// a healthy sink leaves nothing behind.
    ///
    /// # Errors
    /// When an existing journal cannot be opened.
    pub fn open(sink: &str, spec: &DeadLetterSpec) -> Result<Self, SinkError> {
        let dir = spec
            .directory
            .clone()
            .unwrap_or_else(|| PathBuf::from(FALLBACK_DIR))
            .join(sink);
        let options = JournalOptions {
            segment_max_bytes: (spec.max_bytes.0 / 4).clamp(64 << 10, 16 << 20),
            retention_max_bytes: spec.max_bytes.0,
            retention_max_age: spec.max_age.0,
            // Nobody consumes it: retention alone decides, and nothing ever backpressures.
            max_unconsumed_bytes: u64::MAX,
            ..JournalOptions::default()
        };
        let mut letter = Self {
            dir,
            writer: None,
            options,
            sink: sink.to_owned(),
        };
        if letter.dir.join(crate::journal::COMMIT_FILE).exists() {
            letter.writer()?;
        }
        Ok(letter)
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn writer(&mut self) -> Result<&mut JournalWriter<()>, SinkError> {
        let writer =
            match self.writer.take() {
                Some(writer) => writer,
                None => {
                    let (writer, _) = JournalWriter::open(&self.dir, self.options.clone())
                        .map_err(|e| SinkError::DeadLetter {
                            sink: self.sink.clone(),
                            dir: self.dir.clone(),
                            source: Box::new(e),
                        })?;
                    TOTALS
                        .lock()
                        .insert(self.sink.clone(), writer.committed_records());
                    writer
                }
            };
        Ok(self.writer.insert(writer))
    }

    /// Appends and commits (fsync) one entry per refused record: `(position in batch,
    /// status, reason)`.
    ///
    /// # Errors
    /// When the journal cannot be written; nothing of this call is then committed.
    pub fn keep(
        &mut self,
        sink: &str,
        batch: &[OutRecord<'_>],
        refused: &[(usize, u16, String)],
    ) -> Result<(), SinkError> {
        let now = timestamp_now();
        let dir = self.dir.clone();
        let writer = self.writer()?;
        for (i, status, reason) in refused {
            let raw = batch[*i].raw;
            let record: Option<&RawValue> = serde_json::from_slice(raw).ok();
            writer.push(&Entry {
                sink,
                status: *status,
                reason,
                dead_lettered_at: &now,
                record,
                record_text: record.is_none().then(|| String::from_utf8_lossy(raw)),
            });
        }
        let result = writer.commit(&());
        let committed = writer.committed_records();
        match result {
            Ok(()) => {
                writer.housekeeping();
                TOTALS.lock().insert(sink.to_owned(), committed);
                Ok(())
            }
            Err(e) => {
                // A failed commit poisons the writer; reopen (cutting back) next time.
                self.writer = None;
                Err(SinkError::DeadLetter {
                    sink: sink.to_owned(),
                    dir,
                    source: Box::new(e),
                })
            }
        }
    }
}

/// One entry as read back (for tests and tools).
#[derive(Debug, Deserialize)]
pub struct DeadLetterEntry {
    /// The sink that could not deliver it.
    pub sink: String,
    /// The HTTP status of the refusal.
    pub status: u16,
    /// The server's reason (the start of its reply).
    pub reason: String,
    /// When it was kept (RFC 3339).
    pub dead_lettered_at: String,
    /// The record, when it was JSON.
    #[serde(default)]
    pub record: Option<serde_json::Value>,
    /// The record's text otherwise.
    #[serde(default)]
    pub record_text: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{JournalReader, Position};

    #[test]
    fn refused_records_are_kept_with_status_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let spec = DeadLetterSpec {
            directory: Some(dir.path().to_owned()),
            ..DeadLetterSpec::default()
        };
        let mut letter = DeadLetter::open("dl-test", &spec).unwrap();
        assert!(
            !dir.path().join("dl-test").exists(),
            "created on first use only"
        );
        let raws: [&[u8]; 3] = [br#"{"id":"a","n":1}"#, b"not json", br#"{"id":"c"}"#];
        let batch: Vec<OutRecord<'_>> = raws.iter().map(|r| OutRecord::decode(r)).collect();
        letter
            .keep(
                "dl-test",
                &batch,
                &[
                    (0, 400, "mapper_parsing_exception".into()),
                    (1, 413, "too big".into()),
                ],
            )
            .unwrap();
        assert_eq!(totals().get("dl-test"), Some(&2));

        let mut reader = JournalReader::new(&dir.path().join("dl-test"), Position::default());
        let end = reader.committed_end().unwrap().unwrap();
        let mut buf = Vec::new();
        reader.read_batch(end, 1 << 20, &mut buf).unwrap();
        let entries: Vec<DeadLetterEntry> = crate::journal::records(&buf)
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].sink, "dl-test");
        assert_eq!(entries[0].status, 400);
        assert_eq!(entries[0].reason, "mapper_parsing_exception");
        assert_eq!(entries[0].record.as_ref().unwrap()["n"], 1);
        assert_eq!(entries[1].record_text.as_deref(), Some("not json"));

        // Reopened (a restart), the totals continue from what is on disk.
        drop(letter);
        TOTALS.lock().clear();
        let _letter = DeadLetter::open("dl-test", &spec).unwrap();
        assert_eq!(totals().get("dl-test"), Some(&2));
    }
}
