//! Per-source counts of a journal for `/sources`, `/stats` and `forwarder top`, kept up to
//! date by following the journal.
//!
//! Easy to get wrong: what "total" means. The index sees what the journal still holds when it
//! starts (retention decides how far back) and everything committed after; the counts say so
//! in `since`, rather than pretending to cover the whole history.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::scan::{seek_since, Follower};
use super::{journal_time, level_label, RecordView};
use crate::journal::records as lines;
use crate::journal::JournalError;

/// At most this many sources are tracked by name (names come from file names, so the set is
/// small in practice); records of further sources count under [`OTHER_SOURCES`].
pub const MAX_SOURCES: usize = 1000;
/// The name under which sources past [`MAX_SOURCES`] are counted.
pub const OTHER_SOURCES: &str = "(other)";
/// The window of the rates.
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// What the index knows about one source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourceStats {
    /// The source file name.
    pub name: String,
    /// Records seen.
    pub records: u64,
    /// Bytes of those records in the journal.
    pub bytes: u64,
    /// `collected_at` of the first record seen.
    pub first_at: String,
    /// `collected_at` of the last record seen.
    pub last_at: String,
    /// The category of the last record (`log_category`).
    pub category: String,
    /// Records per level.
    pub levels: BTreeMap<String, u64>,
    /// Records per category.
    pub categories: BTreeMap<String, u64>,
    /// Records at ERROR or above.
    pub errors: u64,
    /// Records per second over the last minute (by `collected_at`).
    pub rate_per_s: f64,
    #[serde(skip)]
    recent: VecDeque<(String, u64)>,
}

impl SourceStats {
    fn add(&mut self, view: &RecordView<'_>, bytes: u64) {
        let at = view.collected_at.as_deref().unwrap_or("");
        self.records += 1;
        self.bytes += bytes;
        if self.first_at.is_empty() {
            self.first_at = at.to_owned();
        }
        if self.last_at.as_str() != at {
            at.clone_into(&mut self.last_at);
        }
        let category = view.log_category.as_deref().unwrap_or("unknown");
        if self.category != category {
            category.clone_into(&mut self.category);
        }
        *self.categories.entry(category.to_owned()).or_default() += 1;
        let level = view.level();
        *self
            .levels
            .entry(level_label(level).to_owned())
            .or_default() += 1;
        if level >= super::Level::Error {
            self.errors += 1;
        }
        // Per-second buckets keyed by the time's text up to the second.
        let second = at.get(..19).unwrap_or(at);
        match self.recent.back_mut() {
            Some((s, n)) if s.as_str() == second => *n += 1,
            _ => self.recent.push_back((second.to_owned(), 1)),
        }
    }

    fn refresh_rate(&mut self, window_start: &str, window_s: f64) {
        while self
            .recent
            .front()
            .is_some_and(|(s, _)| s.as_str() < window_start)
        {
            self.recent.pop_front();
        }
        let n: u64 = self.recent.iter().map(|(_, n)| n).sum();
        self.rate_per_s = n as f64 / window_s;
    }
}

/// Counts of a journal by source, level and category, updated by [`SourceIndex::update`].
pub struct SourceIndex {
    follower: Follower,
    sources: BTreeMap<String, SourceStats>,
    since: String,
    records: u64,
}

/// A copy of the index's counts at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IndexSnapshot {
    /// The counts cover records collected since this time (the oldest retained record).
    pub since: String,
    /// Records counted.
    pub records: u64,
    /// Per source, by name.
    pub sources: Vec<SourceStats>,
    /// Records per level over all sources.
    pub levels: BTreeMap<String, u64>,
    /// Records per category over all sources.
    pub categories: BTreeMap<String, u64>,
    /// Records per second over the last minute, all sources.
    pub rate_per_s: f64,
}

impl SourceIndex {
    /// An index of the journal at `dir`, starting from the oldest segment still there.
    ///
    /// # Errors
    /// When the directory exists but cannot be listed.
    pub fn open(dir: &Path) -> Result<Self, JournalError> {
        let start = if dir.is_dir() {
            seek_since(dir, None)?
        } else {
            Default::default()
        };
        Ok(Self {
            follower: Follower::new(dir, start),
            sources: BTreeMap::new(),
            since: String::new(),
            records: 0,
        })
    }

    /// Reads what was committed since the last update, at most about `max_bytes` (so one call
    /// stays short); returns whether it reached the committed end.
    ///
    /// # Errors
    /// When the journal cannot be read.
    pub fn update(&mut self, max_bytes: usize) -> Result<bool, JournalError> {
        let mut read = 0;
        while read < max_bytes {
            let batch = self.follower.read_committed(4 << 20)?;
            if batch.is_empty() {
                return Ok(true);
            }
            read += batch.len();
            for line in lines(batch) {
                let view = RecordView::decode(line);
                if self.since.is_empty() {
                    if let Some(at) = &view.collected_at {
                        self.since = at.to_string();
                    }
                }
                self.records += 1;
                let name = view.source_file.as_deref().unwrap_or("");
                let key = if self.sources.contains_key(name) || self.sources.len() < MAX_SOURCES {
                    name
                } else {
                    OTHER_SOURCES
                };
                if !self.sources.contains_key(key) {
                    self.sources.insert(
                        key.to_owned(),
                        SourceStats {
                            name: key.to_owned(),
                            ..SourceStats::default()
                        },
                    );
                }
                let stats = self.sources.get_mut(key).expect("inserted above");
                stats.add(&view, line.len() as u64 + 1);
            }
        }
        Ok(false)
    }

    /// Whether a record of `source` was seen.
    pub fn knows(&self, source: &str) -> bool {
        self.sources.contains_key(source)
    }

    /// Whether a record of category `category` was seen.
    pub fn knows_category(&self, category: &str) -> bool {
        self.sources
            .values()
            .any(|s| s.categories.contains_key(category))
    }

    /// The categories seen, sorted.
    pub fn category_names(&self) -> Vec<String> {
        let names: std::collections::BTreeSet<&String> = self
            .sources
            .values()
            .flat_map(|s| s.categories.keys())
            .collect();
        names.into_iter().cloned().collect()
    }

    /// The names of the sources seen, sorted.
    pub fn names(&self) -> Vec<String> {
        self.sources.keys().cloned().collect()
    }

    /// The counts now, with rates over the minute before `now`, or over the time since the
    /// oldest record when that is shorter: a pod up for 25 s has not had a minute to fill.
    pub fn snapshot(&mut self, now: SystemTime) -> IndexSnapshot {
        let window_start = journal_time(now - RATE_WINDOW);
        let window_start = &window_start[..19];
        let window_s = humantime::parse_rfc3339(&self.since)
            .ok()
            .and_then(|first| now.duration_since(first).ok())
            .map_or(RATE_WINDOW, |up| {
                up.clamp(Duration::from_secs(1), RATE_WINDOW)
            })
            .as_secs_f64();
        let mut snapshot = IndexSnapshot {
            since: self.since.clone(),
            records: self.records,
            ..IndexSnapshot::default()
        };
        for stats in self.sources.values_mut() {
            stats.refresh_rate(window_start, window_s);
            snapshot.rate_per_s += stats.rate_per_s;
            for (level, n) in &stats.levels {
                *snapshot.levels.entry(level.clone()).or_default() += n;
            }
            for (category, n) in &stats.categories {
                *snapshot.categories.entry(category.clone()).or_default() += n;
            }
            snapshot.sources.push(stats.clone());
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::Durability;
    use crate::journal::{JournalOptions, JournalWriter};
    use serde_json::json;

    fn journal_in(dir: &Path) -> JournalWriter<u32> {
        let options = JournalOptions {
            durability: Durability::PageCache,
            ..JournalOptions::default()
        };
        JournalWriter::open(dir, options).unwrap().0
    }

    #[test]
    fn counts_per_source_level_and_category_with_recent_rates() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = journal_in(dir.path());
        let now = SystemTime::now();
        let recent = journal_time(now - Duration::from_secs(5));
        for (source, level, at) in [
            ("a.log", "ERROR", "2020-01-01T00:00:00.000Z"),
            ("a.log", "INFO", recent.as_str()),
            ("b.log", "WARNING", recent.as_str()),
        ] {
            w.push(&json!({"source_file": source, "log_level": level, "collected_at": at, "log_category": "access"}));
        }
        w.commit(&1).unwrap();
        let mut index = SourceIndex::open(dir.path()).unwrap();
        assert!(index.update(usize::MAX).unwrap());
        assert!(index.knows("a.log") && !index.knows("c.log"));
        let s = index.snapshot(now);
        assert_eq!(s.records, 3);
        assert_eq!(s.since, "2020-01-01T00:00:00.000Z");
        let a = &s.sources[0];
        assert_eq!((a.name.as_str(), a.records, a.errors), ("a.log", 2, 1));
        assert_eq!(a.first_at, "2020-01-01T00:00:00.000Z");
        assert!((a.rate_per_s - 1.0 / 60.0).abs() < 1e-9, "{}", a.rate_per_s);
        assert_eq!(s.levels["WARNING"], 1);
        assert_eq!(s.categories["access"], 3);
    }

    #[test]
    fn a_journal_younger_than_a_minute_rates_over_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = journal_in(dir.path());
        let now = SystemTime::now();
        let first = journal_time(now - Duration::from_secs(20));
        for _ in 0..50 {
            w.push(&json!({"source_file": "a.log", "collected_at": first}));
        }
        w.commit(&1).unwrap();
        let mut index = SourceIndex::open(dir.path()).unwrap();
        index.update(usize::MAX).unwrap();
        let rate = index.snapshot(now).sources[0].rate_per_s;
        // 50 records in the 20 s the journal has existed, not spread over a minute.
        assert!((rate - 2.5).abs() < 0.01, "{rate}");
    }
}
