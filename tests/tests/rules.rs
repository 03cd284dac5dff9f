//! The processor's rules as operators use them (issue #5): the `validate`, `test` and
//! `explain` tools of the real binary, multiline records across a kill -9, and hot reload of a
//! rules file mounted the way the kubelet mounts a ConfigMap.

use std::path::Path;
use std::process::{Command, Output};

use e2e_tests::bin;

fn processor(args: &[&str]) -> Output {
    Command::new(bin("processor"))
        .args(args)
        .env_remove("PROCESSOR_RULES")
        .output()
        .expect("the processor binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn default_rules() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../processor/rules/default.yaml")
        .display()
        .to_string()
}

#[test]
fn the_default_rules_pass_their_own_tests() {
    let out = processor(&["test", "--rules", &default_rules()]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    let passed: usize = stdout
        .rsplit(": ")
        .next()
        .and_then(|tail| tail.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        passed >= 7,
        "one test per demo log format at least: {stdout}"
    );
}

#[test]
fn a_failing_rules_test_prints_a_diff_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(
        &path,
        r#"version: 1
rules:
  - name: web
    files: ["web*.log"]
    category: web
    steps:
      - logfmt: {field: line, remove_source: true}
      - convert: {fields: {status: int}}
      - filter: {drop: {field: path, equals: [/healthz]}, reason: health_checks}
tests:
  - name: status is typed
    source: web.log
    line: "method=GET path=/users status=200"
    expect: {status: 200, log_category: web}
  - name: wrong on purpose
    source: web.log
    line: "method=GET path=/users status=503"
    expect: {status: 500, log_category: web}
  - name: health checks are dropped
    source: web.log
    line: "method=GET path=/healthz status=200"
    dropped: health_checks
"#,
    )
    .unwrap();
    let out = processor(&["test", "--rules", path.to_str().unwrap()]);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL wrong on purpose (tests[1])"),
        "{stdout}"
    );
    assert!(
        stdout.contains("record 1: status: expected 500, got 503"),
        "{stdout}"
    );
    assert!(stdout.contains("2 passed, 1 failed"), "{stdout}");
}

#[test]
fn validate_lists_every_error_with_line_rule_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yaml");
    std::fs::write(
        &path,
        "version: 1\nrules:\n  - name: access\n    files: [access.log]\n    steps:\n      - regex:\n          field: line\n          pattern: '^(?P<ts>\\d+'\n  - name: jobs\n    files: ['job[.log']\n",
    )
    .unwrap();
    let out = processor(&["validate", "--rules", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path.display().to_string();
    assert!(
        stderr.contains(&format!(
            "{file}:8: rule 1 (\"access\"): steps[0].regex.pattern: invalid regex"
        )),
        "{stderr}"
    );
    // The regex error shows the pattern with a caret under the position.
    assert!(stderr.contains("^(?P<ts>\\d+\n"), "{stderr}");
    assert!(stderr.contains("unclosed group"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{file}:10: rule 2 (\"jobs\"): files[0]: invalid glob"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("2 error(s)"), "{stderr}");

    std::fs::write(
        &path,
        "version: 1\nrules:\n  - name: a\n    files: [a.log]\n    colour: red\n",
    )
    .unwrap();
    let out = processor(&["validate", "--rules", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains(&format!("{file}:5:5: unknown field `colour`")),
        "{}",
        text(&out.stderr)
    );

    let out = processor(&["validate", "--rules", &default_rules()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(": OK ("));
}

#[test]
fn explain_shows_the_matching_rule_each_step_and_the_record() {
    let out = processor(&[
        "explain",
        "--rules",
        &default_rules(),
        "--source",
        "access.log",
        r#"2026-11-22 10:30:45,135 - {"type":"response","method":"GET","path":"/users?page=2","status_code":503}"#,
    ]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("rules: access\n"), "{stdout}");
    assert!(
        stdout.contains(
            "rule \"access\" steps[1] (derive): ran\n      set status_category = \"server_error\""
        ),
        "{stdout}"
    );
    assert!(stdout.contains("\"log_level\": \"ERROR\""), "{stdout}");
}

use std::fs;
use std::time::Duration;

use e2e_tests::{
    append, collected_position, http_get, processor_commit, wait_until, Pod, StageKind,
};
use serde_json::Value;

/// The four lines of Python trace `i`, newline-terminated.
fn trace(i: usize) -> [String; 4] {
    [
        format!(
            "2026-11-22 10:00:{:02},000 - app - ERROR - request {i} failed\n",
            i % 60
        ),
        "Traceback (most recent call last):\n".to_owned(),
        format!("  File \"/srv/app.py\", line {i}, in handle\n"),
        format!("ValueError: bad input {i}\n"),
    ]
}

/// A stack trace is one record, delivered once with the id of its first line, although the
/// processor is killed with SIGKILL again and again, once while a trace waits half-written:
/// its commit never passes the waiting lines, so the restart neither loses nor repeats them.
#[test]
fn multiline_traces_survive_kill_9_whole_and_once() {
    let mut pod = Pod::new();
    fs::write(
        pod.path("rules.yaml"),
        "version: 1\nrules:\n  - name: app\n    files: [app.log]\n    category: app\n    multiline: {preset: python, flush_after_ms: 5000}\n",
    )
    .unwrap();
    let collector = pod.start(StageKind::Collector);
    let mut processor = pod.start(StageKind::Processor);
    let forwarder = pod.start(StageKind::Forwarder);

    let mut header_offsets = Vec::new();
    let mut written = 0u64;
    for i in 0..30 {
        let lines = trace(i);
        header_offsets.push(written);
        let text = lines.concat();
        written += text.len() as u64;
        append(&pod, "app.log", &text);
        append(&pod, "other.log", &format!("other {i}\n"));
        if i % 6 == 5 {
            std::thread::sleep(Duration::from_millis(150));
            processor.kill9();
            processor = pod.start(StageKind::Processor);
        }
    }

    // Trace 30 half written: the processor holds it, and commits without passing it.
    let lines = trace(30);
    header_offsets.push(written);
    append(&pod, "app.log", &lines[..2].concat());
    let header = lines[0].trim_end();
    let mut header_at = None;
    let waiting = wait_until(Duration::from_secs(10), || {
        header_at = header_at.or_else(|| collected_position(&pod, header));
        let Some(at) = header_at else { return false };
        let end = &processor_commit(&pod)["input"]["replay"]["end"];
        end.is_object()
            && (
                end["segment"].as_u64().unwrap(),
                end["offset"].as_u64().unwrap(),
            ) > at
    });
    assert!(
        waiting,
        "the processor never committed past the waiting trace's lines: {}",
        processor_commit(&pod)
    );
    let commit = processor_commit(&pod);
    let (segment, offset) = header_at.expect("the header was collected");
    let position = &commit["input"]["position"];
    assert!(
        (
            position["segment"].as_u64().unwrap(),
            position["offset"].as_u64().unwrap()
        ) <= (segment, offset),
        "the commit {commit} passed the waiting trace's first line at {segment}/{offset}"
    );
    // Lines of another file after the waiting trace reach the sink: on restart they are read
    // again (the commit did not pass the trace) but must not be delivered again.
    for k in 0..5 {
        append(&pod, "other.log", &format!("late {k}\n"));
    }
    let late_delivered = wait_until(Duration::from_secs(10), || {
        pod.delivered().iter().any(|r| r["line"] == "late 4")
    });
    assert!(late_delivered);
    processor.kill9();
    append(&pod, "app.log", &lines[2..].concat());
    written += lines.concat().len() as u64;
    // Trace 31 ends trace 30; it is let go at shutdown.
    header_offsets.push(written);
    append(&pod, "app.log", &trace(31).concat());
    let processor = pod.start(StageKind::Processor);

    pod.wait_delivered(31 + 35, Duration::from_secs(30));
    for stage in [collector, processor, forwarder] {
        let (status, _) = stage.terminate(Duration::from_secs(15));
        assert!(status.success());
    }
    let (records, others): (Vec<Value>, Vec<Value>) = pod
        .delivered()
        .into_iter()
        .partition(|r| r["source_file"] == "app.log");
    let mut other_lines: Vec<&str> = others.iter().map(|r| r["line"].as_str().unwrap()).collect();
    other_lines.sort();
    let mut expected_others: Vec<String> = (0..30).map(|i| format!("other {i}")).collect();
    expected_others.extend((0..5).map(|k| format!("late {k}")));
    expected_others.sort();
    assert_eq!(other_lines, expected_others, "other.log: every line once");
    assert_eq!(
        records.len(),
        32,
        "one record per trace, none lost or repeated"
    );
    for (i, record) in records.iter().enumerate() {
        // Issue 14: the first line stays alone in `line`, the trace is in `stack_trace`.
        let lines = trace(i);
        assert_eq!(
            (
                record["line"].as_str().unwrap(),
                record["stack_trace"].as_str().unwrap()
            ),
            (lines[0].trim_end(), lines[1..].concat().trim_end()),
            "trace {i} arrives whole"
        );
        let id = record["id"].as_str().unwrap();
        assert!(
            id.ends_with(&format!("-{}", header_offsets[i])),
            "trace {i} keeps its first line's id: {id}"
        );
        assert_eq!(record["log_category"], "app");
    }
}

/// Rules version `n`: app.log records get `rules_version: n`.
fn versioned_rules(n: u32) -> String {
    format!(
        "version: 1\nrules:\n  - name: app\n    files: [app.log]\n    steps:\n      - set: {{field: rules_version, value: {n}}}\n"
    )
}

/// Lays out `dir` as the kubelet lays out a ConfigMap volume and swaps `..data` to a new
/// timestamped directory holding `rules`, the way an update does.
fn configmap_update(dir: &Path, version: u32, rules: &str) {
    let data = dir.join(format!("..2026_11_22_10_00_0{version}.000000001"));
    fs::create_dir(&data).unwrap();
    fs::write(data.join("rules.yaml"), rules).unwrap();
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(data.file_name().unwrap(), &tmp).unwrap();
    fs::rename(&tmp, dir.join("..data")).unwrap();
}

/// Hot reload: the rules file is a ConfigMap mount (`rules.yaml → ..data/rules.yaml`,
/// `..data → ..<timestamp>`), updated by swapping `..data`. A valid update applies from a
/// batch on, never in the middle of one; an invalid one keeps the rules in force, logs the
/// errors and shows in the metrics.
#[test]
fn rules_reload_on_a_configmap_symlink_swap_and_invalid_ones_are_rejected() {
    let mut pod = Pod::new();
    let root = pod.dir.path().to_owned();
    fs::remove_file(root.join("rules.yaml")).unwrap();
    configmap_update(&root, 1, &versioned_rules(1));
    std::os::unix::fs::symlink("..data/rules.yaml", root.join("rules.yaml")).unwrap();
    let collector = pod.start(StageKind::Collector);
    let processor = pod.start(StageKind::Processor);
    let forwarder = pod.start(StageKind::Forwarder);

    let mut lines = 0;
    let mut write_line = |pod: &Pod| {
        lines += 1;
        append(pod, "app.log", &format!("line {lines}\n"));
        lines
    };
    let versions = |pod: &Pod| -> Vec<u64> {
        pod.delivered()
            .iter()
            .map(|r| r["rules_version"].as_u64().unwrap_or(0))
            .collect()
    };
    let n = write_line(&pod);
    pod.wait_delivered(n, Duration::from_secs(10));
    assert_eq!(versions(&pod), vec![1]);

    configmap_update(&root, 2, &versioned_rules(2));
    let reloaded = wait_until(Duration::from_secs(15), || {
        let n = write_line(&pod);
        pod.wait_delivered(n, Duration::from_secs(10));
        versions(&pod).last() == Some(&2)
    });
    assert!(reloaded, "v2 never applied: {:?}", versions(&pod));
    let seen = versions(&pod);
    let first_v2 = seen.iter().position(|&v| v == 2).unwrap();
    assert!(
        seen[..first_v2].iter().all(|&v| v == 1) && seen[first_v2..].iter().all(|&v| v == 2),
        "{seen:?}"
    );

    // An invalid update: the old rules stay, the errors are logged, the metrics say so.
    configmap_update(&root, 3, "version: 1\nrules:\n  - name: app\n    files: [app.log]\n    steps:\n      - regex: {field: line, pattern: '(oops'}\n");
    let rejected = wait_until(Duration::from_secs(10), || {
        http_get(processor.port, "/metrics").is_ok_and(|(_, body)| {
            body.contains("processor_rules_reloads_total{result=\"rejected\"} 1")
        })
    });
    assert!(rejected, "{:?}", http_get(processor.port, "/metrics"));
    let (_, metrics) = http_get(processor.port, "/metrics").unwrap();
    assert!(metrics.contains("processor_rules_valid 0"), "{metrics}");
    let n = write_line(&pod);
    pod.wait_delivered(n, Duration::from_secs(10));
    assert_eq!(versions(&pod).last(), Some(&2), "the rules in force stay");
    let log = fs::read_to_string(&processor.log).unwrap();
    assert!(
        log.contains("steps[0].regex.pattern: invalid regex")
            && log.contains("keeping the rules in force"),
        "{log}"
    );

    configmap_update(&root, 4, &versioned_rules(4));
    let fixed = wait_until(Duration::from_secs(10), || {
        http_get(processor.port, "/metrics")
            .is_ok_and(|(_, body)| body.contains("processor_rules_valid 1"))
    });
    assert!(fixed);
    for stage in [collector, processor, forwarder] {
        stage.terminate(Duration::from_secs(15));
    }
}

/// Pod metadata without API access: the Downward API's environment and its labels and
/// annotations files (in the kubelet's `key="value"` format, refreshed in place) become a
/// `kubernetes` object on every record. Dropped records are counted by reason.
#[test]
fn downward_api_metadata_is_added_and_drops_are_counted_by_reason() {
    let mut pod = Pod::new();
    fs::write(
        pod.path("rules.yaml"),
        "version: 1\nrules:\n  - name: app\n    files: [app.log]\n    steps:\n      - filter: {drop: {field: line, matches: '^DEBUG'}, reason: debug_noise}\n",
    )
    .unwrap();
    let podinfo = pod.path("podinfo");
    fs::create_dir(&podinfo).unwrap();
    fs::write(
        podinfo.join("labels"),
        "app.kubernetes.io/name=\"logging-demo\"\ntier=\"web \\\"edge\\\"\"\n",
    )
    .unwrap();
    fs::write(podinfo.join("annotations"), "team=\"logs\"\n").unwrap();
    let env = [
        ("POD_NAME", "logging-demo-7c9d-x2p4q"),
        ("POD_NAMESPACE", "logging-demo"),
        ("NODE_NAME", "node-1"),
        ("POD_IP", "10.1.2.3"),
        ("POD_SERVICE_ACCOUNT", "log-sidecars"),
    ];
    pod.extra_env.insert(
        StageKind::Processor,
        env.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec(),
    );
    pod.extra_args.insert(
        StageKind::Processor,
        vec![
            "--kubernetes-metadata".into(),
            "downward".into(),
            "--podinfo-dir".into(),
            podinfo.display().to_string(),
        ],
    );
    let stages = pod.start_all();
    append(
        &pod,
        "app.log",
        "INFO one\nDEBUG two\nDEBUG three\nINFO four\n",
    );
    let records = pod.wait_delivered(2, Duration::from_secs(15));
    assert_eq!(records.len(), 2);
    assert_eq!(
        records[0]["kubernetes"],
        serde_json::json!({
            "pod_name": "logging-demo-7c9d-x2p4q",
            "namespace": "logging-demo",
            "node_name": "node-1",
            "pod_ip": "10.1.2.3",
            "service_account": "log-sidecars",
            "labels": {"app.kubernetes.io/name": "logging-demo", "tier": "web \"edge\""},
            "annotations": {"team": "logs"},
        })
    );
    // The processor adds its counts to the metrics at most every 250 ms.
    let dropped = "processor_dropped_total{source=\"app.log\",reason=\"debug_noise\"} 2";
    let metrics = || http_get(stages[1].port, "/metrics").unwrap().1;
    wait_until(Duration::from_secs(10), || metrics().contains(dropped));
    let metrics = metrics();
    assert!(metrics.contains(dropped), "{metrics}");

    // The kubelet updates the volume by swapping files; new records carry the new labels.
    let tmp = podinfo.join("labels.tmp");
    fs::write(
        &tmp,
        "app.kubernetes.io/name=\"logging-demo\"\ntier=\"api\"\n",
    )
    .unwrap();
    fs::rename(&tmp, podinfo.join("labels")).unwrap();
    let updated = wait_until(Duration::from_secs(15), || {
        append(&pod, "app.log", "INFO more\n");
        std::thread::sleep(Duration::from_millis(300));
        pod.delivered()
            .last()
            .is_some_and(|r| r["kubernetes"]["labels"]["tier"] == "api")
    });
    assert!(updated);
    for stage in stages {
        stage.terminate(Duration::from_secs(15));
    }
}

/// The stage itself refuses an invalid rules file at startup with every error and its line,
/// as `validate` does, and exits non-zero before touching any journal.
#[test]
fn the_stage_refuses_invalid_rules_listing_every_error() {
    let pod = Pod::new();
    fs::write(
        pod.path("rules.yaml"),
        "version: 1\nmax_line_bytes: 0\nrules:\n  - name: a\n    files: [a.log]\n    steps:\n      - sample: {one_in: 0}\n",
    )
    .unwrap();
    let rules = pod.path("rules.yaml").display().to_string();
    let out = Command::new(bin("processor"))
        .args(["--rules", &rules, "--input-dir"])
        .arg(pod.path("collected"))
        .arg("--journal-dir")
        .arg(pod.path("processed"))
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("PROCESSOR_RULES")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("{rules}:2: max_line_bytes: must be at least 1")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{rules}:7: rule 1 (\"a\"): steps[0].sample.one_in: must be at least 1"
        )),
        "{stderr}"
    );
    assert!(!pod.path("processed/commit.json").exists());
}
