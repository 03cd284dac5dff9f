//! The heartbeat as the manifests' exec probes use it: the running app keeps its file fresh,
//! `--check-heartbeat` says so with exit 0, and once the app's loop stops (SIGSTOP, the way a
//! hung process looks from outside) the same check fails with a line naming the file.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{spawn, wait_exit};

const DATABASE_CLIENT: &str = env!("CARGO_BIN_EXE_database-client");

/// Runs `binary --check-heartbeat <file> --max-age <max_age>`, as the kubelet's exec probe does.
fn check(binary: &str, file: &Path, max_age: &str) -> Output {
    Command::new(binary)
        .args([
            "--check-heartbeat",
            file.to_str().unwrap(),
            "--max-age",
            max_age,
        ])
        .output()
        .unwrap_or_else(|error| panic!("running {binary}: {error}"))
}

/// Repeats the check until `done` accepts its output; panics after `limit`.
fn check_until(
    binary: &str,
    file: &Path,
    max_age: &str,
    limit: Duration,
    done: impl Fn(&Output) -> bool,
) -> Output {
    let started = Instant::now();
    loop {
        let output = check(binary, file, max_age);
        if done(&output) {
            return output;
        }
        assert!(
            started.elapsed() < limit,
            "after {limit:?}, still: {output:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} failed");
}

#[test]
fn the_check_passes_while_the_app_runs_and_fails_once_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let file = dir.path().join("heartbeat/database-client");

    let before = check(DATABASE_CLIENT, &file, "30s");
    assert_eq!(before.status.code(), Some(1), "{before:?}");
    let message = String::from_utf8(before.stderr).unwrap();
    assert!(message.contains("does not exist"), "{message}");

    let mut child = spawn(
        DATABASE_CLIENT,
        &[
            "--log-dir",
            logs.to_str().unwrap(),
            "--heartbeat-file",
            file.to_str().unwrap(),
        ],
    );
    // A max age well above the one-second beat: only a stuck app could miss it.
    let alive = check_until(
        DATABASE_CLIENT,
        &file,
        "10s",
        Duration::from_secs(20),
        |o| o.status.success(),
    );
    let message = String::from_utf8(alive.stdout).unwrap();
    assert!(message.contains(file.to_str().unwrap()), "{message}");
    // The heartbeat is not a log file: nothing of it lands where the collector looks.
    assert!(!std::fs::read_dir(&logs).unwrap().any(|entry| entry
        .unwrap()
        .file_name()
        .to_string_lossy()
        .contains("heartbeat")));

    // Frozen, the app still exists but its loop makes no progress.
    signal(child.id(), "STOP");
    let stale = check_until(DATABASE_CLIENT, &file, "1s", Duration::from_secs(20), |o| {
        !o.status.success()
    });
    assert_eq!(stale.status.code(), Some(1), "{stale:?}");
    let message = String::from_utf8(stale.stderr).unwrap();
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(
        message.contains(&format!("heartbeat file {} is stale", file.display())),
        "{message}"
    );

    child.kill().unwrap();
    wait_exit(&mut child, Duration::from_secs(10));
    // Dead stays stale.
    let dead = check(DATABASE_CLIENT, &file, "1s");
    assert_eq!(dead.status.code(), Some(1), "{dead:?}");
}

#[test]
fn the_synthetic_mode_beats_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("beat");
    let binary = env!("CARGO_BIN_EXE_background-worker");
    let mut child = spawn(
        binary,
        &[
            "--log-dir",
            dir.path().join("logs").to_str().unwrap(),
            "--rate",
            "100",
            "--heartbeat-file",
            file.to_str().unwrap(),
        ],
    );
    check_until(binary, &file, "10s", Duration::from_secs(20), |o| {
        o.status.success()
    });
    common::sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

/// In the pod the traffic generator usually starts before web-api is up; waiting for it is
/// progress, not a hang.
#[test]
fn the_traffic_generator_beats_while_it_waits_for_the_web_api() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("beat");
    let binary = env!("CARGO_BIN_EXE_traffic-generator");
    let target = format!("http://127.0.0.1:{}", common::free_port());
    let mut child = spawn(
        binary,
        &[
            "--target",
            &target,
            "--heartbeat-file",
            file.to_str().unwrap(),
        ],
    );
    check_until(binary, &file, "10s", Duration::from_secs(20), |o| {
        o.status.success()
    });
    common::sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

#[test]
fn max_age_without_a_check_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_traffic-generator"))
        // --duration-secs: should the flag be accepted after all, the test still ends.
        .args(["--max-age", "5s", "--duration-secs", "1"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let message = String::from_utf8(output.stderr).unwrap();
    assert!(message.contains("--check-heartbeat"), "{message}");
}
