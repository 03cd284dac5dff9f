//! A power loss after a stage's commit flushed its segment but before the page cache wrote the
//! commit file back: the commit files are older than the journals' commit markers. No test can
//! cut a machine's power, so the test makes the same disk state: the commit files (and their
//! twins) of an earlier moment are put back over the newer ones while the stages are down,
//! everything else (segments, the forwarder's flushed checkpoint, the sink's files) as the
//! stages left it. The restarted stages resume from their markers: nothing delivered again.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use e2e_tests::*;

const COMMIT_FILES: [&str; 4] = [
    "collected/commit.json",
    "collected/commit.json.backup",
    "processed/commit.json",
    "processed/commit.json.backup",
];

#[test]
fn commit_files_left_behind_are_made_good_by_the_journal_markers() {
    let mut pod = Pod::new();
    let mut app = Writer::open(pod.path("logs/app.log"), "app.log");
    let stages = pod.start_all();
    app.write(300);
    pod.wait_delivered(300, Duration::from_secs(30));
    let earlier: Vec<(PathBuf, Vec<u8>)> = COMMIT_FILES
        .iter()
        .map(|name| pod.path(name))
        .map(|path| (path.clone(), fs::read(&path).unwrap()))
        .collect();
    app.write(200);
    pod.wait_delivered(500, Duration::from_secs(30));
    for stage in stages {
        stage.terminate(Duration::from_secs(10));
    }
    for (path, bytes) in &earlier {
        assert_ne!(
            &fs::read(path).unwrap(),
            bytes,
            "{} moved on",
            path.display()
        );
        fs::write(path, bytes).unwrap();
    }

    let _stages = pod.start_all();
    app.write(250);
    let delivered = pod.wait_delivered(750, Duration::from_secs(60));
    let problems = exactly_once(&delivered, &[("app.log", 750)]);
    assert!(problems.is_empty(), "{problems}");
    assert_eq!(
        collected_lines(&pod).len(),
        750,
        "the collected journal holds each line once"
    );
}
