//! The collector's commit input: a journal whose commit file and file list (the base a commit
//! may name, `files-<generation>.json`) hold any bytes opens, falls back, or fails with an
//! error naming the file; restoring the tailer's position from it never panics.
#![no_main]

use collector::file_list::{CommittedPosition, FileBook};
use libfuzzer_sys::fuzz_target;
use sidecar_core::checkpoint::Durability;
use sidecar_core::journal::{JournalOptions, JournalWriter};

fuzz_target!(|data: &[u8]| {
    // The first byte says how much of the rest is the commit file; the remainder is the list.
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (commit, list) = rest.split_at(usize::from(split).min(rest.len()));
    let dir = tempfile::tempdir().unwrap();
    let segment = sidecar_core::journal::segment_path(dir.path(), 0);
    std::fs::write(segment, b"a\tline\n").unwrap();
    std::fs::write(dir.path().join("commit.json"), commit).unwrap();
    std::fs::write(dir.path().join("files-000000000001.json"), list).unwrap();
    let options = JournalOptions {
        durability: Durability::PageCache,
        ..JournalOptions::default()
    };
    if let Ok((_, committed)) = JournalWriter::<CommittedPosition>::open(dir.path(), options) {
        let _ = FileBook::open(dir.path(), Durability::PageCache, committed);
    }
});
