//! Line splitting: any bytes in a log file become records whose lines hold no newline, whose
//! offsets only grow and stay inside the file, and nothing panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use sidecar_core::record::CollectedRecord;
use sidecar_core::source::{SourceMetrics, SourceSpec, TailOptions, Tailer};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.log"), data).unwrap();
    let spec = SourceSpec::compile(&[format!("{}/*.log", dir.path().display())], &[]).unwrap();
    let options = TailOptions {
        // Small, so that splitting over-long lines is exercised too.
        max_line_bytes: 64,
        read_chunk_bytes: 97,
        rotated_close_after: Duration::ZERO,
        partial_line_timeout: Some(Duration::ZERO),
        ..TailOptions::default()
    };
    let mut tailer = Tailer::new(spec, options, None, SourceMetrics::default());
    let mut records: Vec<(u64, CollectedRecord<'static>)> = Vec::new();
    for _ in 0..4 {
        tailer.rescan();
        tailer.read(1 << 20, "t", &mut |r| {
            let mut written = Vec::new();
            r.write(&mut written);
            let back = CollectedRecord::decode(&written).unwrap().into_owned();
            records.push((r.id.offset, back));
        });
    }
    let mut last = None;
    for (offset, r) in &records {
        assert!(!r.line.contains('\n'), "a record holds a newline: {r:?}");
        assert!(*offset < data.len() as u64, "offset past the file: {r:?}");
        assert!(last.is_none_or(|l| *offset > l), "offsets go back: {r:?}");
        last = Some(*offset);
    }
});
