//! Commit markers: a journal whose segments hold any bytes, with or without a commit file,
//! opens at the last marker whose batch is whole (or fails with an error); it never panics,
//! and what it then commits is never past the bytes on disk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecar_core::journal::{records, JournalOptions, JournalReader, JournalWriter, Position};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    // The first byte splits the input into two segments, so that markers across a roll are
    // tried too.
    let (split, bytes) = data
        .split_first()
        .map_or((0, data), |(s, rest)| (*s as usize, rest));
    let (first, second) = bytes.split_at(split.min(bytes.len()));
    let segment = |n| sidecar_core::journal::segment_path(dir.path(), n);
    std::fs::write(segment(0), first).unwrap();
    if !second.is_empty() {
        std::fs::write(segment(1), second).unwrap();
    }
    let Ok((writer, _)) =
        JournalWriter::<serde_json::Value>::open(dir.path(), JournalOptions::default())
    else {
        return;
    };
    let end = writer.end();
    let mut reader = JournalReader::new(dir.path(), Position::default());
    let mut buf = Vec::new();
    while reader.read_batch(end, 1 << 16, &mut buf).unwrap_or(0) > 0 {
        assert!(records(&buf).all(|r| r.first() != Some(&b'#')));
    }
});
