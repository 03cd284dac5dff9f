//! Commit-file decoding: a journal whose commit file holds any bytes opens (falling back or
//! starting over, as the README says) or fails with an error; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sidecar_core::journal::{JournalOptions, JournalWriter};
use sidecar_core::source::TailPosition;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let segment = sidecar_core::journal::segment_path(dir.path(), 0);
    std::fs::write(segment, b"{\"a\":1}\n{\"a\":2}\n{\"a\"").unwrap();
    std::fs::write(dir.path().join("commit.json"), data).unwrap();
    let _ = JournalWriter::<TailPosition>::open(dir.path(), JournalOptions::default());
    let _ = sidecar_core::checkpoint::load::<TailPosition>(&dir.path().join("commit.json"));
});
