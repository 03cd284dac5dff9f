//! Upgrading in place: a collected journal written in the v1 record format (one JSON object per
//! line, what collectors before the v2 format wrote) with records the processor has not read
//! yet is carried on by the new binaries, record for record, and the new collector appends v2
//! records behind the old ones in the same segment.
//!
//! The v1 journal is made the way an old collector made it: the real collector tails the file
//! and commits, then the test rewrites each committed record into the v1 layout and moves the
//! commit's end to match (the collector's own input position, the file offsets, is unchanged,
//! as it was in v1). The v1 layout is spelled out in docs/journal-format.md.

use std::fs;
use std::path::Path;
use std::time::Duration;

use e2e_tests::*;
use serde_json::Value;
use sidecar_core::journal::{self, JournalReader, Position};
use sidecar_core::record::CollectedRecord;

/// Rewrites every record from `from` on in the collected journal at `dir` (a single segment)
/// into the v1 layout, and moves the commit's end (and its backup twin) to the new length.
/// Returns the offset where the rewritten part ends.
fn rewrite_as_v1(dir: &Path, from: u64) -> u64 {
    let segments = journal::list_segments(dir).unwrap();
    assert_eq!(segments, [0], "the test keeps the journal in one segment");
    let path = journal::segment_path(dir, 0);
    let bytes = fs::read(&path).unwrap();
    let end = JournalReader::new(dir, Position::default())
        .committed_end()
        .unwrap()
        .expect("the collector committed");
    assert_eq!(end.offset, bytes.len() as u64, "nothing uncommitted");
    let mut out = bytes[..from as usize].to_vec();
    let mut converted = 0;
    for record in journal::records(&bytes[from as usize..]) {
        let collected = CollectedRecord::decode(record).unwrap();
        assert_eq!(record[0], b'2', "the collector writes v2 records");
        serde_json::to_writer(&mut out, &collected.to_json()).unwrap();
        out.push(b'\n');
        converted += 1;
    }
    assert!(converted > 0, "nothing to rewrite after offset {from}");
    fs::write(&path, &out).unwrap();
    // The commit file as the v1 collector wrote it: one JSON object, and its twin the same;
    // its segments hold no commit markers (the rewrite dropped them).
    let mut commit = e2e_tests::checkpoint(&dir.join("commit.json"));
    commit["version"] = 1.into();
    commit["end"]["offset"] = out.len().into();
    for name in ["commit.json", "commit.json.backup"] {
        fs::write(dir.join(name), serde_json::to_vec(&commit).unwrap()).unwrap();
    }
    out.len() as u64
}

/// The collected journal as `processor journal-cat` prints it.
fn journal_cat(pod: &Pod) -> Vec<Value> {
    stdout_of(
        std::process::Command::new(bin("processor"))
            .args(["journal-cat", "--dir"])
            .arg(pod.path("collected")),
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[test]
fn a_v1_journal_with_unread_records_is_carried_on_by_the_new_binaries() {
    let mut pod = Pod::new();
    let mut app = Writer::open(pod.path("logs/app.log"), "app.log");
    let collected = pod.path("collected");

    // An old collector collects 300 lines; an old processor and forwarder deliver them.
    app.write(300);
    let collector = pod.start(StageKind::Collector);
    assert!(wait_until(Duration::from_secs(20), || {
        committed_records(&collected) == 300
    }));
    collector.terminate(Duration::from_secs(10));
    let consumed = rewrite_as_v1(&collected, 0);
    let processor = pod.start(StageKind::Processor);
    let forwarder = pod.start(StageKind::Forwarder);
    pod.wait_delivered(300, Duration::from_secs(30));
    processor.terminate(Duration::from_secs(10));
    forwarder.terminate(Duration::from_secs(10));
    let commit = processor_commit(&pod);
    assert_eq!(
        commit["input"]["position"]["offset"], consumed,
        "the processor read the whole v1 part: {commit}"
    );

    // The old collector collects 200 more lines that nobody reads before the upgrade.
    app.write(200);
    let collector = pod.start(StageKind::Collector);
    assert!(wait_until(Duration::from_secs(20), || {
        committed_records(&collected) == 500
    }));
    collector.terminate(Duration::from_secs(10));
    rewrite_as_v1(&collected, consumed);

    // The new binaries: the 200 unread v1 records, then 250 lines collected as v2.
    let _stages = pod.start_all();
    app.write(250);
    let delivered = pod.wait_delivered(750, Duration::from_secs(60));
    let problems = exactly_once(&delivered, &[("app.log", 750)]);
    assert!(problems.is_empty(), "{problems}");

    // Old and new records are processed alike: the same fields, parsed the same way.
    let fields = |r: &Value| {
        let mut keys: Vec<String> = r.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    let by_seq = |seq: u64| delivered.iter().find(|r| r["seq"] == seq).unwrap();
    assert_eq!(fields(by_seq(400)), fields(by_seq(600)));
    for seq in [0, 400, 600] {
        let r = by_seq(seq);
        assert_eq!(r["source_file"], "app.log", "{r}");
        assert_eq!(r["log_level"], "INFO", "{r}");
        assert!(r["id"].as_str().unwrap().contains('-'), "{r}");
    }

    // One command reads the mixed journal, whatever each record's version.
    let records = journal_cat(&pod);
    assert_eq!(records.len(), 750);
    assert_eq!(
        records
            .iter()
            .map(|r| r["source"].as_str())
            .collect::<Vec<_>>(),
        vec![Some("app.log"); 750]
    );
    let raw = fs::read(journal::segment_path(&collected, 0)).unwrap();
    let (v1, v2) = journal::records(&raw).fold((0, 0), |(v1, v2), r| match r[0] {
        b'{' => (v1 + 1, v2),
        _ => (v1, v2 + 1),
    });
    assert_eq!((v1, v2), (500, 250), "500 old records, then 250 new ones");
}

/// Committed records in a collected journal, from its commit file.
fn committed_records(dir: &Path) -> u64 {
    e2e_tests::checkpoint(&dir.join("commit.json"))["records"]
        .as_u64()
        .unwrap_or(0)
}
