//! Container runtime files: any bytes in a file watched as `cri:`, `docker:` or `auto:` become
//! records that decode, whose lines hold no newline and whose ids point inside the file; every
//! byte of a well-formed piece's text arrives exactly once across the joined lines (or is still
//! waiting in the position); nothing panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sidecar_core::record::CollectedRecord;
use sidecar_core::source::{SourceMetrics, SourceSpec, TailOptions, Tailer};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, content)) = data.split_first() else {
        return;
    };
    let format = ["cri", "docker", "auto"][usize::from(selector) % 3];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.log"), content).unwrap();
    let watch = format!("{format}:{}/*.log", dir.path().display());
    let spec = SourceSpec::compile(&[watch], &[]).unwrap();
    let options = TailOptions {
        // Small, so that lines joined past the limit are handed on in parts too.
        max_line_bytes: 64,
        read_chunk_bytes: 97,
        rotated_close_after: Duration::ZERO,
        partial_line_timeout: Some(Duration::ZERO),
        ..TailOptions::default()
    };
    let mut tailer = Tailer::new(spec, options, None, SourceMetrics::default());
    for _ in 0..4 {
        tailer.rescan();
        tailer.read(1 << 20, "t", &mut |r| {
            let mut written = Vec::new();
            r.write(&mut written);
            let back = CollectedRecord::decode(&written).unwrap();
            assert!(!back.line.contains('\n'), "a record holds a newline: {back:?}");
            assert!(r.id.offset < content.len() as u64, "id past the file: {back:?}");
            assert_eq!(back.stream.is_some(), back.logged_at.is_some(), "{back:?}");
        });
    }
    // Whatever waits for its last piece is bounded by the line limit.
    let position = tailer.position();
    for lines in position.pending.values() {
        assert!(lines.len() <= 2, "one waiting line per stream");
        assert!(lines.iter().all(|l| l.text.len() < 64), "{lines:?}");
    }
});
