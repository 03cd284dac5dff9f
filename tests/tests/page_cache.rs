//! The journals' page cache: a pod pays for what its journals hold in memory (page cache is
//! charged to its memory cgroup), so what the next stage has read is handed back to the
//! kernel rather than kept until retention deletes its segment. Residency is what
//! util-linux's `fincore` reports for each segment file.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e_tests::*;

/// What a reader leaves cached behind its position: the journal's release lag (1 MiB), one
/// release step (256 KiB), and the folio the released range ends inside (the page cache
/// holds a file in folios of up to 2 MiB on x86-64).
const MOST_LEFT_CACHED: u64 = (1 << 20) + (256 << 10) + (2 << 20);

#[test]
fn what_the_next_stage_has_read_leaves_the_page_cache() {
    let fincore = require_program("fincore");
    let mut pod = Pod::new();
    let mut app = Writer::open(pod.path("logs/app.log"), "app.log");
    let _stages = pod.start_all();
    // Past one 16 MiB segment in the processed journal: a segment read to its end is
    // released whole.
    for _ in 0..60 {
        app.write(1_000);
    }
    let delivered = pod.wait_delivered(60_000, Duration::from_secs(180));
    let problems = exactly_once(&delivered, &[("app.log", 60_000)]);
    assert!(problems.is_empty(), "{problems}");
    for journal in ["collected", "processed"] {
        let (size, cached) = segments_size_and_cached(&fincore, &pod.path(journal));
        assert!(
            size > 3 * MOST_LEFT_CACHED,
            "{journal}: {size} bytes of segments, too few to tell"
        );
        assert!(
            cached <= MOST_LEFT_CACHED,
            "{journal}: {cached} of its {size} bytes still cached after the next stage read them all"
        );
    }
}

/// The bytes of `dir`'s segment files, and how many of them the page cache holds.
fn segments_size_and_cached(fincore: &Path, dir: &Path) -> (u64, u64) {
    let segments: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with("segment-"))
        })
        .collect();
    assert!(!segments.is_empty(), "no segments in {}", dir.display());
    stdout_of(
        Command::new(fincore)
            .args(["--bytes", "--noheadings", "--raw", "--output", "RES,SIZE"])
            .args(&segments),
    )
    .lines()
    .map(|line| {
        let (cached, size) = line.split_once(' ').expect("RES SIZE");
        (size.parse::<u64>().unwrap(), cached.parse::<u64>().unwrap())
    })
    .fold((0, 0), |(size, cached), (s, c)| (size + s, cached + c))
}
