//! Commit markers: each commit written into the segment it covers, after its batch.
//!
//! A commit used to be made durable twice: the segment flushed, then the commit file flushed.
//! With a marker line after each batch, one flush of the segment makes the batch and its commit
//! durable together, and the commit file is written to the page cache only, for readers. A
//! power loss can then leave the commit file behind (or torn): the writer finds the commits it
//! made in the markers when it opens.
//!
//! Easy to get wrong: the flush does not order the blocks it writes, so a marker can reach the
//! disk while part of its batch did not. A marker therefore carries the xxh3 of the batch bytes
//! before it and of its own JSON, and one that does not match ends the committed journal.
//!
//! A marker line: `#commit <xxh3 of the JSON, 16 hex> {"from":…,"batch_xxh3":…,"records":…,
//! "committed_at":…,"input":…}`. No record starts with `#`, so readers tell markers from
//! records by their first byte and skip them.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tracing::warn;
use xxhash_rust::xxh3::xxh3_64;

use crate::{io_err, list_segments, segment_path, JournalError, Position};

const PREFIX: &[u8] = b"#commit ";
const HASH_DIGITS: usize = 16;

/// Whether a journal line is a commit marker rather than a record.
pub fn is_marker(line: &[u8]) -> bool {
    line.first() == Some(&b'#')
}

/// A commit as a marker holds it. Its end is where the marker line ends.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Marker<I> {
    /// Where the batch this marker commits begins (in the marker's segment).
    pub from: Position,
    /// xxh3-64 of the batch's bytes, from `from` to the marker, in hex.
    pub batch_xxh3: String,
    /// Records committed in total, over the journal's life.
    pub records: u64,
    /// When the commit was made (RFC 3339).
    pub committed_at: String,
    /// Where the writing stage's input stood.
    pub input: I,
}

/// Appends the marker line for the batch that fills `buffer` (written from `from`).
pub(crate) fn append<I: Serialize>(
    buffer: &mut Vec<u8>,
    from: Position,
    records: u64,
    committed_at: &str,
    input: &I,
) {
    let batch_xxh3 = format!("{:016x}", xxh3_64(buffer));
    buffer.extend_from_slice(PREFIX);
    let hash_at = buffer.len();
    buffer.extend_from_slice(&[b'0'; HASH_DIGITS]);
    buffer.push(b' ');
    let json_at = buffer.len();
    let marker = Marker {
        from,
        batch_xxh3,
        records,
        committed_at: committed_at.to_owned(),
        input,
    };
    serde_json::to_writer(&mut *buffer, &marker).expect("commit inputs serialise infallibly");
    let hash = format!("{:016x}", xxh3_64(&buffer[json_at..]));
    buffer[hash_at..hash_at + HASH_DIGITS].copy_from_slice(hash.as_bytes());
    buffer.push(b'\n');
}

/// The marker of a line that is one and whole (its own hash matches), else `None`.
fn decode<I: DeserializeOwned>(line: &[u8]) -> Option<Marker<I>> {
    let rest = line.strip_prefix(PREFIX)?;
    let (hash, json) = (rest.get(..HASH_DIGITS)?, rest.get(HASH_DIGITS + 1..)?);
    if format!("{:016x}", xxh3_64(json)).as_bytes() != hash {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// The newest commit the markers hold: its end and marker.
pub(crate) struct Found<I> {
    pub end: Position,
    pub marker: Marker<I>,
}

/// Follows the markers from `start` (the end of a commit known good), or from the oldest
/// segment's first valid marker when there is none, to the last one whose batch is whole.
/// Each batch must begin where the previous commit ended, or at the start of the next segment
/// once the previous one was committed to its end.
///
/// # Errors
/// When a segment cannot be listed or read.
pub(crate) fn last_commit<I: DeserializeOwned>(
    dir: &Path,
    start: Option<Position>,
) -> Result<Option<Found<I>>, JournalError> {
    let segments = list_segments(dir).map_err(io_err(dir))?;
    let mut found = None;
    let mut expect = start;
    for segment in segments
        .into_iter()
        .filter(|&s| start.is_none_or(|p| s >= p.segment))
    {
        let read_from = match expect {
            Some(p) if p.segment == segment => p.offset,
            _ => 0,
        };
        let path = segment_path(dir, segment);
        let bytes = read_segment_from(&path, read_from)?;
        if let Some(p) = expect.filter(|p| p.segment < segment) {
            if p.segment + 1 != segment {
                break;
            }
            expect = Some(Position { segment, offset: 0 });
        }
        let mut line_start = 0;
        for line_end in memchr::memchr_iter(b'\n', &bytes) {
            let line = &bytes[line_start..line_end];
            let at = line_start;
            line_start = line_end + 1;
            if !is_marker(line) {
                continue;
            }
            let whole_marker = decode::<I>(line).and_then(|m| {
                let begins = m.from.offset.checked_sub(read_from)? as usize;
                let whole = m.from.segment == segment
                    && expect.is_none_or(|e| e == m.from)
                    && begins <= at
                    && format!("{:016x}", xxh3_64(&bytes[begins..at])) == m.batch_xxh3;
                whole.then_some(m)
            });
            let Some(marker) = whole_marker else {
                warn!(segment = %path.display(), offset = read_from + at as u64, "A commit marker is torn or does not match its batch: the journal's commits end before it.");
                return Ok(found);
            };
            let end = Position {
                segment,
                offset: read_from + line_start as u64,
            };
            expect = Some(end);
            found = Some(Found { end, marker });
        }
        let committed_to_its_end = expect.is_some_and(|e| {
            e == Position {
                segment,
                offset: read_from + bytes.len() as u64,
            }
        });
        if expect.is_some() && !committed_to_its_end {
            break;
        }
    }
    Ok(found)
}

fn read_segment_from(path: &Path, offset: u64) -> Result<Vec<u8>, JournalError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    let mut bytes = Vec::new();
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(offset)).map_err(io_err(path))?;
    file.read_to_end(&mut bytes).map_err(io_err(path))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    use crate::{records, JournalOptions, JournalReader, JournalWriter, Position};
    use sidecar_common::checkpoint::Durability;

    /// Whatever part of the segments a power loss damaged (bytes zeroed or flipped, a tail
    /// lost), with the commit file gone, the writer opens at a commit it made: the records
    /// before it are whole and its input names exactly that many.
    #[test]
    fn damaged_segments_open_at_a_commit_that_was_made() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut checked = 0;
        let options = JournalOptions {
            segment_max_bytes: 300,
            durability: Durability::PageCache,
            ..JournalOptions::default()
        };
        for round in 0..300 {
            let dir = tempfile::tempdir().unwrap();
            let (mut w, _) = JournalWriter::<u64>::open(dir.path(), options.clone()).unwrap();
            let mut n = 0u64;
            for _ in 0..rng.random_range(1..12) {
                for _ in 0..rng.random_range(0..4) {
                    w.push(&serde_json::json!({ "n": n }));
                    n += 1;
                }
                w.commit(&n).unwrap();
            }
            drop(w);
            let segments = crate::list_segments(dir.path()).unwrap();
            let victim =
                crate::segment_path(dir.path(), segments[rng.random_range(0..segments.len())]);
            let mut bytes = std::fs::read(&victim).unwrap();
            if !bytes.is_empty() {
                let len = bytes.len();
                let at = rng.random_range(0..len);
                match rng.random_range(0..3) {
                    0 => bytes[at] ^= 1 << rng.random_range(0..8),
                    1 => bytes[at..(at + 64).min(len)].fill(0),
                    _ => bytes.truncate(at),
                }
            }
            std::fs::write(&victim, &bytes).unwrap();
            for name in [crate::COMMIT_FILE, "commit.json.backup"] {
                std::fs::remove_file(dir.path().join(name)).ok();
            }
            let Ok((w, input)) = JournalWriter::<u64>::open(dir.path(), options.clone()) else {
                continue; // A segment cut short before a later one: refused with an error.
            };
            let Some(input) = input else {
                continue; // No whole commit left: every complete record kept, input restarted.
            };
            let mut reader = JournalReader::new(dir.path(), Position::default());
            let mut got = Vec::new();
            let mut buf = Vec::new();
            while reader.read_batch(w.end(), 1 << 16, &mut buf).unwrap() > 0 {
                got.extend(records(&buf).map(|r| {
                    let v: serde_json::Value = serde_json::from_slice(r).unwrap();
                    v["n"].as_u64().unwrap()
                }));
            }
            let expected: Vec<u64> = (0..input).collect();
            assert_eq!(got, expected, "round {round}");
            assert_eq!(w.committed_records(), input, "round {round}");
            checked += 1;
        }
        assert!(checked > 150, "only {checked} of 300 rounds kept a commit");
    }
}
