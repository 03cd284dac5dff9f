//! The whole pipeline on real processes and real files: numbered lines go in, the file sink
//! must hold each exactly once, enriched as the default rules say — through rotation,
//! copytruncate, SIGTERM restarts and kill -9 of every stage. (Issue #2.)

use std::time::Duration;

use e2e_tests::{
    append, checkpoint, collected_lines, collector_committed_records, exactly_once, http_get,
    processor_commit, wait_until, Pod, StageKind, Writer,
};
use serde_json::Value;

const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

#[test]
fn every_line_arrives_once_enriched_through_rename_rotation_and_copytruncate() {
    let mut pod = Pod::new();
    let mut access = Writer::open(pod.path("logs/access.log"), "access");
    let mut jobs = Writer::open(pod.path("logs/job-execution.log"), "job");
    let mut db = Writer::open(pod.path("logs/database-queries.log"), "db");
    access.write(500);
    let _stages = pod.start_all();
    jobs.write(300);
    db.write(200);
    // Rename rotation while the app keeps writing through its old descriptor for a moment.
    access.rotate_rename(".1");
    access.write(100);
    access.reopen();
    access.write(400);
    // A second rotation 50 ms later, well inside the collector's 1 s rescan: the new file is
    // found by its create event. (Rotations microseconds apart are issue #3's torture case.)
    std::thread::sleep(Duration::from_millis(50));
    access.rotate_rename(".2");
    access.reopen();
    access.write(100);
    // copytruncate: safe only once the collector has read the file, as with any shipper.
    pod.wait_delivered(1100 + 300 + 200, DELIVERY_TIMEOUT);
    jobs.copytruncate(".1");
    jobs.write(250);
    db.write(50);
    let records = pod.wait_delivered(1100 + 550 + 250, DELIVERY_TIMEOUT);
    let problems = exactly_once(&records, &[("access", 1100), ("job", 550), ("db", 250)]);
    assert!(problems.is_empty(), "{problems}");

    for r in &records {
        assert!(
            r["id"].as_str().is_some_and(|id| id.contains('-')),
            "record id: {r}"
        );
        assert!(
            r["collected_at"].is_string() && r["processed_at"].is_string(),
            "{r}"
        );
        assert_eq!(r["timestamp"], "2026-11-22 10:30:45,123", "{r}");
        let seq = r["seq"].as_u64().unwrap();
        match r["file"].as_str().unwrap() {
            "access" => {
                assert_eq!(
                    r["source_file"], "access.log",
                    "rotated lines keep their source: {r}"
                );
                assert_eq!(r["log_category"], "access");
                assert_eq!(r["endpoint"], "/users");
                let (category, level) = [
                    ("success", "INFO"),
                    ("client_error", "WARNING"),
                    ("server_error", "ERROR"),
                ][(seq % 3) as usize];
                assert_eq!(r["status_category"], category, "{r}");
                assert_eq!(r["log_level"], level, "{r}");
            }
            "job" => {
                assert_eq!(r["log_category"], "job");
                assert_eq!(
                    r["log_level"],
                    if seq % 10 == 0 { "ERROR" } else { "INFO" },
                    "{r}"
                );
            }
            "db" => {
                assert_eq!(r["log_category"], "database");
                let ms = seq % 7000;
                let category = match ms {
                    5001.. => "very_slow",
                    1001..=5000 => "slow",
                    101..=1000 => "normal",
                    _ => "fast",
                };
                assert_eq!(r["performance_category"], category, "{r}");
            }
            other => panic!("unexpected file {other}"),
        }
    }
    let ids: std::collections::HashSet<&str> =
        records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), records.len(), "record ids are unique");
}

/// Writes `rounds` batches into three files while `disturb` is called between some of them.
fn run_under_load(
    pod: &mut Pod,
    rounds: u64,
    mut disturb: impl FnMut(&mut Pod, u64),
) -> Vec<(&'static str, u64)> {
    let mut writers = [
        Writer::open(pod.path("logs/access.log"), "access"),
        Writer::open(pod.path("logs/job-metrics.log"), "job"),
        Writer::open(pod.path("logs/database-performance.log"), "db"),
    ];
    for round in 0..rounds {
        for w in &mut writers {
            w.write(200);
        }
        if round == rounds / 2 {
            writers[0].rotate_rename(".1");
            writers[0].reopen();
        }
        disturb(pod, round);
        std::thread::sleep(Duration::from_millis(20));
    }
    vec![
        ("access", writers[0].next),
        ("job", writers[1].next),
        ("db", writers[2].next),
    ]
}

#[test]
fn sigterm_and_restart_of_each_stage_mid_stream_keeps_exactly_once() {
    let mut pod = Pod::new();
    let mut stages: Vec<_> = pod.start_all().into_iter().map(Some).collect();
    let expected = run_under_load(&mut pod, 60, |pod, round| {
        if round % 15 == 7 {
            let index = (round / 15) as usize % 3;
            let stage = stages[index].take().unwrap();
            let kind = stage.kind;
            let (status, took) = stage.terminate(Duration::from_secs(10));
            assert!(
                status.success(),
                "{} exited with {status} on SIGTERM",
                kind.binary()
            );
            assert!(
                took < Duration::from_secs(8),
                "{} took {took:?} to drain",
                kind.binary()
            );
            stages[index] = Some(pod.start(kind));
        }
    });
    let total = expected.iter().map(|(_, n)| *n as usize).sum();
    let records = pod.wait_delivered(total, DELIVERY_TIMEOUT);
    let problems = exactly_once(&records, &expected);
    assert!(problems.is_empty(), "{problems}");
}

#[test]
fn kill_9_of_each_stage_mid_stream_keeps_exactly_once() {
    kill_each_stage_under_load(Pod::new(), 60);
}

/// Writes for `rounds` rounds while kill -9 takes each stage down in turn (every 10th round)
/// and starts it again; then every line must arrive exactly once.
fn kill_each_stage_under_load(mut pod: Pod, rounds: u64) {
    let mut stages: Vec<_> = pod.start_all().into_iter().map(Some).collect();
    let expected = run_under_load(&mut pod, rounds, |pod, round| {
        if round % 10 == 5 {
            let index = (round / 10) as usize % 3;
            let stage = stages[index].take().unwrap();
            let kind = stage.kind;
            stage.kill9();
            stages[index] = Some(pod.start(kind));
        }
    });
    let total = expected.iter().map(|(_, n)| *n as usize).sum();
    let records = pod.wait_delivered(total, DELIVERY_TIMEOUT);
    let problems = exactly_once(&records, &expected);
    assert!(problems.is_empty(), "{problems}");
}

/// The file sink's records are in its files as soon as they are delivered; their commit (the
/// fsync and the forwarder's checkpoint) waits up to `commit_interval`. A kill -9 before that
/// commit loses nothing and repeats nothing (the files are cut back to the last commit and the
/// batches sent again), and SIGTERM commits whatever was delivered.
#[test]
fn file_sink_records_show_before_their_deferred_commit_and_stay_exact_through_kill_9() {
    let mut pod = Pod::new();
    let config = std::fs::read_to_string(pod.path("forwarder.yaml")).unwrap();
    std::fs::write(
        pod.path("forwarder.yaml"),
        config + "    commit_interval: 60s\n",
    )
    .unwrap();
    let cursor_file = pod.path("processed/readers/forwarder.json");
    let delivered_to = || checkpoint(&cursor_file)["position"].clone();
    let mut w = Writer::open(pod.path("logs/access.log"), "access");
    w.write(200);
    let mut stages = pod.start_all();
    pod.wait_delivered(200, DELIVERY_TIMEOUT);
    assert_eq!(
        delivered_to(),
        Value::Null,
        "delivered within the minute: not committed yet"
    );

    let forwarder = stages.pop().unwrap();
    forwarder.kill9();
    w.write(100);
    let forwarder = pod.start(StageKind::Forwarder);
    let records = pod.wait_delivered(300, DELIVERY_TIMEOUT);
    let problems = exactly_once(&records, &[("access", 300)]);
    assert!(problems.is_empty(), "{problems}");

    forwarder.terminate(Duration::from_secs(10));
    assert_eq!(
        delivered_to(),
        processor_commit(&pod)["end"],
        "SIGTERM commits what was delivered"
    );
    assert_eq!(pod.delivered_count(), 300);
}

#[test]
fn stages_resume_from_their_commits_after_all_were_down() {
    let mut pod = Pod::new();
    let mut w = Writer::open(pod.path("logs/access.log"), "access");
    w.write(300);
    let stages = pod.start_all();
    pod.wait_delivered(300, DELIVERY_TIMEOUT);
    for stage in stages {
        stage.terminate(Duration::from_secs(10));
    }
    // Written while every sidecar was down, including a rotation.
    w.write(100);
    w.rotate_rename(".1");
    w.reopen();
    w.write(100);
    let _stages = pod.start_all();
    let records = pod.wait_delivered(500, DELIVERY_TIMEOUT);
    let problems = exactly_once(&records, &[("access", 500)]);
    assert!(problems.is_empty(), "{problems}");
}

#[test]
fn health_metrics_and_stats_files_are_served() {
    let mut pod = Pod::new();
    let mut w = Writer::open(pod.path("logs/access.log"), "access");
    w.write(10);
    let stages = pod.start_all();
    pod.wait_delivered(10, DELIVERY_TIMEOUT);
    for stage in &stages {
        let (status, body) = http_get(stage.port, "/healthz").unwrap();
        assert_eq!(
            (status, body.trim()),
            (200, "ok"),
            "{}",
            stage.kind.binary()
        );
    }
    let metric = |port, name: &str| {
        let (_, body) = http_get(port, "/metrics").unwrap();
        body.lines()
            .filter(|l| l.starts_with(name))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum::<f64>()
    };
    assert_eq!(
        metric(
            stages[0].port,
            "collector_lines_total{source=\"access.log\"}"
        ),
        10.0
    );
    // The processor adds its counts to the metrics at most every 250 ms.
    wait_until(Duration::from_secs(10), || {
        metric(stages[1].port, "processor_records_total") == 10.0
    });
    assert_eq!(metric(stages[1].port, "processor_records_total"), 10.0);
    assert_eq!(
        metric(stages[2].port, "forwarder_records_total{sink=\"archive\"}"),
        10.0
    );
    assert!(wait_until(Duration::from_secs(10), || pod
        .path("collected/collection_stats.json")
        .exists()));
    let stats: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(pod.path("collected/collection_stats.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(stats["files"]["files"][0]["source"], "access.log");
    assert!(wait_until(Duration::from_secs(10), || pod
        .path("processed/processing_stats.json")
        .exists()));
    // The report on stdout shows the source and its counts.
    let forwarder = stages.into_iter().nth(2).unwrap();
    let log = forwarder.log.clone();
    forwarder.terminate(Duration::from_secs(10));
    let report = std::fs::read_to_string(log).unwrap();
    assert!(
        report.contains("=== log-forwarder final report"),
        "{report}"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("access.log") && l.split_whitespace().nth(2) == Some("10")),
        "{report}"
    );
}

#[test]
fn bad_configs_exit_non_zero_naming_file_and_field() {
    let pod = Pod::new();
    let run = |binary: &str, args: &[&str]| {
        let out = std::process::Command::new(e2e_tests::bin(binary))
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{binary} {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let rules = pod.path("bad-rules.yaml");
    std::fs::write(&rules, "version: 1\nrules:\n  - name: access\n    files: ['access*.log']\n    steps:\n      - regex: {field: line, pattern: '(unclosed'}\n").unwrap();
    let err = run(
        "processor",
        &[
            "--rules",
            rules.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ],
    );
    assert!(
        err.contains("bad-rules.yaml") && err.contains("\"access\"") && err.contains("pattern"),
        "{err}"
    );
    let fwd = pod.path("bad-forwarder.yaml");
    std::fs::write(
        &fwd,
        "sinks:\n  - type: file\n    directory: /tmp/x\n    max_file_bytes: 12 parsecs\n",
    )
    .unwrap();
    let err = run(
        "forwarder",
        &["--config", fwd.to_str().unwrap(), "--listen", "127.0.0.1:0"],
    );
    assert!(
        err.contains("bad-forwarder.yaml") && err.contains("parsecs"),
        "{err}"
    );
    let err = run(
        "collector",
        &["--watch", "logs/*/app.log", "--listen", "127.0.0.1:0"],
    );
    assert!(
        err.contains("logs/*/app.log") && err.contains("must be absolute"),
        "{err}"
    );
    let err = run("collector", &["--grace-period", "soon"]);
    assert!(
        err.contains("--grace-period") && err.contains("soon"),
        "{err}"
    );
    for binary in ["collector", "processor", "forwarder"] {
        let err = run(binary, &["--linger", "5s"]);
        assert!(
            err.contains("--linger") && err.contains("5s is longer than 1s"),
            "{binary}: {err}"
        );
        let err = run(binary, &["--fsync", "maybe"]);
        assert!(
            err.contains("--fsync") && err.contains("maybe"),
            "{binary}: {err}"
        );
    }
}

#[test]
fn every_stage_without_fsync_still_delivers_every_line_once_across_restarts() {
    let mut pod = Pod::new();
    for kind in StageKind::ALL {
        pod.extra_args
            .insert(kind, vec!["--fsync".into(), "false".into()]);
    }
    kill_each_stage_under_load(pod, 30);
}

#[test]
fn the_processor_waits_for_a_collector_that_starts_later() {
    let mut pod = Pod::new();
    let _downstream = [
        pod.start(StageKind::Forwarder),
        pod.start(StageKind::Processor),
    ];
    let mut w = Writer::open(pod.path("logs/access.log"), "access");
    w.write(50);
    let _collector = pod.start(StageKind::Collector);
    let records = pod.wait_delivered(50, DELIVERY_TIMEOUT);
    assert!(exactly_once(&records, &[("access", 50)]).is_empty());
}

#[test]
fn a_pod_shutdown_in_sidecar_order_delivers_every_line_before_the_last_exit() {
    // Native sidecars stop after the apps, collector first and forwarder last, each after the
    // one before it exited. Every line the apps wrote must be in the sink when the forwarder
    // exits: the volumes go away with the pod.
    let mut pod = Pod::new();
    let stages = pod.start_all();
    let mut w = Writer::open(pod.path("logs/access.log"), "access");
    for _ in 0..10 {
        w.write(1000);
    }
    for stage in stages {
        let kind = stage.kind;
        let (status, took) = stage.terminate(Duration::from_secs(10));
        assert!(
            status.success() && took < Duration::from_secs(8),
            "{}: {status} after {took:?}",
            kind.binary()
        );
    }
    let records = pod.delivered();
    let problems = exactly_once(&records, &[("access", 10_000)]);
    assert!(problems.is_empty(), "{problems}");
}

#[test]
fn a_processor_paused_by_an_unread_journal_waits_without_spinning() {
    let mut pod = Pod::new();
    pod.extra_args.insert(
        StageKind::Processor,
        vec!["--max-unconsumed".into(), "16KiB".into()],
    );
    let stages = [
        pod.start(StageKind::Collector),
        pod.start(StageKind::Processor),
    ];
    // No forwarder reads the processed journal, so the processor pauses past 16 KiB. The last
    // application.log line waits for continuation lines (a traceback's); its multiline
    // deadline passes while the processor is paused.
    let text: String = (0..500)
        .map(|i| format!("2026-11-22 10:30:45,123 - app - INFO - request {i} done\n"))
        .collect();
    e2e_tests::append(&pod, "application.log", &text);
    let mut last = Value::Null;
    let paused = wait_until(Duration::from_secs(30), || {
        let commit = e2e_tests::processor_commit(&pod);
        let still = !commit.is_null() && commit == last;
        last = commit;
        std::thread::sleep(Duration::from_millis(500));
        still
    });
    assert!(paused, "the processor never committed or never paused");
    std::thread::sleep(Duration::from_secs(2));
    let pid = stages[1].pid().to_string();
    let cpu_s = || sidecar_core::telemetry::cpu_seconds_of(&pid).expect("the processor runs");
    let before = cpu_s();
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_s() - before;
    // A spinning loop uses all of the 2 s; a waiting one next to none.
    assert!(
        used < 0.5,
        "the paused processor used {used:.2} CPU-s in 2 s"
    );
}

#[test]
fn a_trickle_of_lines_is_gathered_into_one_commit_and_kept_through_sigterm_and_kill_9() {
    let mut pod = Pod::new();
    pod.extra_args.insert(
        StageKind::Collector,
        ["--commit-min-bytes", "64KiB", "--commit-max-wait", "1s"]
            .map(String::from)
            .to_vec(),
    );
    // The file exists before the collector starts: a file it finds is committed at once
    // (with the line it may already hold), which is not what this test is about.
    append(&pod, "app.log", "");
    let collector = pod.start(StageKind::Collector);
    std::thread::sleep(Duration::from_millis(300));
    // Ten lines, one every 20 ms: far less than the 64 KiB a commit is worth, so all ten wait
    // for the first one's 1 s and are committed together, not one commit each.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..10 {
        append(&pod, "app.log", &format!("trickle {i}\n"));
        std::thread::sleep(Duration::from_millis(20));
        seen.insert(collector_committed_records(&pod));
    }
    // One read per look: with two, a commit landing between them ended the wait unseen.
    let all_in = wait_until(Duration::from_secs(10), || {
        let committed = collector_committed_records(&pod);
        seen.insert(committed);
        committed == 10
    });
    assert!(all_in, "not all ten lines committed: {seen:?}");
    assert_eq!(
        seen,
        [0, 10].into(),
        "the commits of the trickle held these record counts"
    );

    // Lines read but not yet committed when SIGTERM comes are committed before the exit.
    for i in 10..13 {
        append(&pod, "app.log", &format!("trickle {i}\n"));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        collector_committed_records(&pod),
        10,
        "committed before their time"
    );
    collector.terminate(Duration::from_secs(10));
    assert_eq!(collector_committed_records(&pod), 13);

    // ... and after kill -9 they are read again from the last commit, once.
    let collector = pod.start(StageKind::Collector);
    for i in 13..16 {
        append(&pod, "app.log", &format!("trickle {i}\n"));
    }
    std::thread::sleep(Duration::from_millis(200));
    collector.kill9();
    assert_eq!(
        collector_committed_records(&pod),
        13,
        "committed before their time"
    );
    let _collector = pod.start(StageKind::Collector);
    assert!(wait_until(
        Duration::from_secs(10),
        || collector_committed_records(&pod) == 16
    ));
    let expected: Vec<String> = (0..16).map(|i| format!("trickle {i}")).collect();
    assert_eq!(collected_lines(&pod), expected);
}

/// With many files (a node's pods, most of them quiet) the collector's commit names a list of
/// every file, written now and then, and carries only the files that changed since; after a
/// kill -9 every file resumes exactly where its last commit left it.
#[test]
fn with_many_files_a_commit_carries_the_busy_ones_and_every_file_resumes_after_kill_9() {
    let mut pod = Pod::new();
    for i in 0..100 {
        append(
            &pod,
            &format!("pod-{i:03}.log"),
            &format!("pod {i} line 0\n"),
        );
    }
    let collector = pod.start(StageKind::Collector);
    assert!(wait_until(Duration::from_secs(10), || {
        collector_committed_records(&pod) == 100
    }));
    // Past the second a new list may wait, lines come to two files only.
    std::thread::sleep(Duration::from_millis(1200));
    for n in 1..=20 {
        append(&pod, "pod-007.log", &format!("pod 7 line {n}\n"));
        append(&pod, "pod-042.log", &format!("pod 42 line {n}\n"));
        std::thread::sleep(Duration::from_millis(30));
    }
    assert!(wait_until(Duration::from_secs(10), || {
        collector_committed_records(&pod) == 140
    }));
    let commit_path = pod.path("collected/commit.json");
    let input = &checkpoint(&commit_path)["input"];
    assert!(
        input["files"].is_null(),
        "the commit lists every file: {input}"
    );
    let changed: Vec<&str> = input["since_base"]["changed"]
        .as_array()
        .unwrap_or_else(|| panic!("the commit names no list: {input}"))
        .iter()
        .map(|f| f["source"].as_str().unwrap())
        .collect();
    assert!(
        changed
            .iter()
            .all(|s| ["pod-007.log", "pod-042.log"].contains(s)),
        "{changed:?}"
    );
    let lists: Vec<_> = std::fs::read_dir(pod.path("collected"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("files-"))
        .collect();
    assert!((1..=2).contains(&lists.len()), "{lists:?}");
    assert!(
        std::fs::metadata(&commit_path).unwrap().len() <= 2 * 4096,
        "the commit file went back to small slots"
    );

    // Lines to quiet files, busy ones and a new one, with a kill -9 in the middle.
    let mut expected: Vec<String> = (0..100).map(|i| format!("pod {i} line 0")).collect();
    expected.extend((1..=20).flat_map(|n| [format!("pod 7 line {n}"), format!("pod 42 line {n}")]));
    for round in 0..10 {
        write_round(&pod, &mut expected, round);
        std::thread::sleep(Duration::from_millis(15));
    }
    collector.kill9();
    for round in 10..15 {
        write_round(&pod, &mut expected, round);
    }
    let _collector = pod.start(StageKind::Collector);
    for round in 15..20 {
        write_round(&pod, &mut expected, round);
        std::thread::sleep(Duration::from_millis(15));
    }
    let total = expected.len() as u64;
    assert!(wait_until(Duration::from_secs(10), || {
        collector_committed_records(&pod) == total
    }));
    let mut lines = collected_lines(&pod);
    lines.sort();
    expected.sort();
    assert_eq!(lines, expected, "every line once, none repeated");
}

/// Appends one line to three quiet files, a busy one and a new one, remembering them.
fn write_round(pod: &Pod, expected: &mut Vec<String>, round: usize) {
    for i in [3, 7, 42, 99] {
        let line = format!("pod {i} round {round}");
        append(pod, &format!("pod-{i:03}.log"), &format!("{line}\n"));
        expected.push(line);
    }
    let line = format!("new round {round}");
    append(pod, "pod-new.log", &format!("{line}\n"));
    expected.push(line);
}

/// A collector with nothing to read waits for the directory watch's events (its timed look at
/// every file is then 10 s apart): a line appended after a quiet spell is read at once, not at
/// the next timed look.
#[test]
fn an_idle_collector_is_woken_by_an_append_not_by_its_timer() {
    let mut pod = Pod::new();
    append(&pod, "app.log", "first\n");
    let _collector = pod.start(StageKind::Collector);
    assert!(wait_until(Duration::from_secs(10), || {
        collector_committed_records(&pod) == 1
    }));
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(2500));
        let appended = std::time::Instant::now();
        append(&pod, "app.log", &format!("after a quiet spell {i}\n"));
        assert!(wait_until(Duration::from_secs(15), || {
            collector_committed_records(&pod) == 2 + i
        }));
        // Far below the 10 s a timed look would take: only the watch's event explains it.
        assert!(
            appended.elapsed() < Duration::from_secs(4),
            "line {i} committed {:?} after its append",
            appended.elapsed()
        );
    }
}

/// Idle, the processor and the forwarder wait on their input's commit file for up to 10 s
/// (the timed turn is a backstop): a line after a quiet spell must still pass both at once,
/// and the report, due every second here, must still print every second.
#[test]
fn an_idle_pipeline_is_woken_by_commits_and_reports_on_time() {
    let mut pod = Pod::new();
    append(&pod, "app.log", "first\n");
    let _collector = pod.start(StageKind::Collector);
    let _processor = pod.start(StageKind::Processor);
    let forwarder = pod.start(StageKind::Forwarder);
    pod.wait_delivered(1, Duration::from_secs(30));
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(2500));
        let appended = std::time::Instant::now();
        append(&pod, "app.log", &format!("after a quiet spell {i}\n"));
        pod.wait_delivered(2 + i, Duration::from_secs(30));
        // Far below the 10 s a timed turn of any stage would take.
        assert!(
            appended.elapsed() < Duration::from_secs(4),
            "line {i} delivered {:?} after its append",
            appended.elapsed()
        );
    }
    let reports = || {
        std::fs::read_to_string(&forwarder.log)
            .unwrap_or_default()
            .matches("=== log-forwarder report ")
            .count()
    };
    let before = reports();
    std::thread::sleep(Duration::from_millis(4500));
    assert!(
        reports() >= before + 3,
        "reports due every second: {} in 4.5 s of quiet",
        reports() - before
    );
}
