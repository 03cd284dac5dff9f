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
