//! The log-writing binaries run as deployed: paced synthetic output that stops at
//! `--max-lines` or `--duration-secs`, and live output that is flushed on SIGTERM.

mod common;

use std::time::{Duration, Instant};

use common::{json_record, read_lines, sigterm, spawn, wait_exit};

#[test]
fn database_client_stops_after_max_lines() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = spawn(
        env!("CARGO_BIN_EXE_database-client"),
        &[
            "--log-dir",
            dir.path().join("new/dir").to_str().unwrap(),
            "--rate",
            "20000",
            "--max-lines",
            "2000",
            "--seed",
            "3",
        ],
    );
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let queries = read_lines(&dir.path().join("new/dir"), "database-queries.log");
    let performance = read_lines(&dir.path().join("new/dir"), "database-performance.log");
    assert_eq!(queries.len() + performance.len(), 2_000);
    // 2000 lines at 20 000 lines/s: a tenth of a second of pacing, plus process start-up.
    assert!(started.elapsed() >= Duration::from_millis(90));
    for line in queries.iter().chain(&performance) {
        json_record(line);
    }
}

#[test]
fn web_api_synthetic_load_stops_after_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port().to_string();
    let mut child = spawn(
        env!("CARGO_BIN_EXE_web-api"),
        &[
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--log-dir",
            dir.path().to_str().unwrap(),
            "--rate",
            "4000",
            "--duration-secs",
            "1",
        ],
    );
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let total: usize = ["access.log", "error.log", "application.log"]
        .iter()
        .map(|name| read_lines(dir.path(), name).len())
        .sum();
    // One second at 4000 lines/s; generous bounds for a loaded test machine.
    assert!((2_000..=6_000).contains(&total), "{total} lines");
}

#[test]
fn background_worker_live_mode_flushes_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = spawn(
        env!("CARGO_BIN_EXE_background-worker"),
        &["--log-dir", dir.path().to_str().unwrap(), "--seed", "5"],
    );
    // The first job is queued and started at once; wait until the files show it.
    let started = Instant::now();
    while read_lines(dir.path(), "job-execution.log").len() < 2 {
        assert!(started.elapsed() < Duration::from_secs(15), "no job lines");
        std::thread::sleep(Duration::from_millis(50));
    }
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
    let execution = read_lines(dir.path(), "job-execution.log");
    let events: Vec<_> = execution
        .iter()
        .map(|line| json_record(line)["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(events[..2], ["job_queued", "job_started"]);
}
