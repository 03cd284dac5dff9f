//! Alerts end to end: error lines through the real collector, processor and forwarder, alerts
//! delivered to a real Alertmanager (Debian's `prometheus-alertmanager`, which
//! scripts/install-test-deps.sh installs), through a kill -9 of the forwarder.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use e2e_tests::{append, free_port, http_get, require_program, wait_until, Pod, StageKind};
use serde_json::Value;

/// A real Alertmanager on 127.0.0.1, stopped on drop.
struct Alertmanager {
    child: Child,
    port: u16,
}

impl Alertmanager {
    fn start(dir: &Path) -> Self {
        let program = require_program("prometheus-alertmanager");
        fs::create_dir_all(dir).unwrap();
        let config = dir.join("alertmanager.yml");
        // No receiver sends anywhere: the test reads what Alertmanager holds over its API.
        fs::write(
            &config,
            "route: {receiver: none, group_by: [alertname], group_wait: 1s, group_interval: 5s, repeat_interval: 1h}\nreceivers:\n  - name: none\n",
        )
        .unwrap();
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(fs::File::create(dir.join("alertmanager.log")).unwrap())
            .spawn()
            .unwrap();
        let mut am = Self { child, port };
        let ready = wait_until(Duration::from_secs(20), || {
            matches!(http_get(port, "/-/ready"), Ok((200, _)))
        });
        if !ready {
            let _ = am.child.kill();
            panic!(
                "Alertmanager did not become ready; its log:\n{}",
                fs::read_to_string(dir.join("alertmanager.log")).unwrap_or_default()
            );
        }
        am
    }

    /// The alerts Alertmanager shows for `alertname` (active ones, as its API lists them).
    fn alerts(&self, alertname: &str) -> Vec<Value> {
        let path = format!("/api/v2/alerts?filter=alertname%3D%22{alertname}%22");
        match http_get(self.port, &path) {
            Ok((200, body)) => serde_json::from_str(&body).unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pod's rules file with `alerts` in place of the default rules' alerts.
fn replace_alerts(pod: &Pod, alerts: &str) {
    let rules = pod.path("rules.yaml");
    let text = fs::read_to_string(&rules).unwrap();
    let start = text
        .find("\nalerts:\n")
        .expect("the default rules have alerts")
        + 1;
    let body = start + "alerts:\n".len();
    // The list ends at the next top-level key.
    let end = text[body..]
        .match_indices('\n')
        .map(|(i, _)| body + i + 1)
        .find(|&line| text[line..].starts_with(|c: char| c.is_ascii_alphabetic()))
        .unwrap_or(text.len());
    let replaced = format!("{}alerts:\n{alerts}{}", &text[..start], &text[end..]);
    fs::write(&rules, replaced).unwrap();
}

/// Puts `alerts` in the pod's rules file and points the forwarder's alerts at `am`.
fn configure(pod: &Pod, am: &Alertmanager, alerts: &str) {
    let rules = pod.path("rules.yaml");
    replace_alerts(pod, alerts);
    let mut forwarder = fs::read_to_string(pod.path("forwarder.yaml")).unwrap();
    forwarder.push_str(&format!(
        "alerts:\n  rules_file: {}\n  resend_interval: 2s\n  generator_url: http://log-forwarder.test/alerts\n  alertmanager:\n    url: http://127.0.0.1:{}\n",
        rules.display(),
        am.port
    ));
    fs::write(pod.path("forwarder.yaml"), forwarder).unwrap();
}

fn error_lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("2026-11-22 10:31:02,481 - web-api - ERROR - Database connection timeout after 30s (request_id=r{i})\n"))
        .collect()
}

/// The forwarder's `GET /alerts`.
fn forwarder_alerts(api_port: u16) -> Value {
    match http_get(api_port, "/alerts") {
        Ok((200, body)) => serde_json::from_str(&body).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

#[test]
fn an_error_burst_fires_one_alert_in_alertmanager_through_a_kill_and_resolves() {
    let mut pod = Pod::new();
    let am = Alertmanager::start(&pod.path("alertmanager"));
    configure(
        &pod,
        &am,
        "  - name: ErrorBurst\n    kind: rate\n    files: [error.log]\n    when: {field: log_level, equals: [ERROR]}\n    count: 5\n    window: 6s\n    group_by: [source_file]\n    severity: critical\n    labels: {team: shop}\n    summary: '{count} errors in {window} from {source_file}'\n    description: 'latest: {message}'\n",
    );
    append(&pod, "error.log", &error_lines(3));
    let mut stages = pod.start_all();
    append(&pod, "error.log", &error_lines(7));

    assert!(
        wait_until(Duration::from_secs(30), || am.alerts("ErrorBurst").len()
            == 1),
        "Alertmanager never showed the alert; forwarder log:\n{}",
        fs::read_to_string(&stages[2].log).unwrap_or_default()
    );
    let alert = am.alerts("ErrorBurst").remove(0);
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "ErrorBurst");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["team"], "shop");
    assert_eq!(labels["source_file"], "error.log");
    assert_eq!(
        alert["annotations"]["summary"],
        "5 errors in 6s from error.log"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .starts_with("latest: Database connection timeout"),
        "{alert}"
    );
    assert_eq!(alert["generatorURL"], "http://log-forwarder.test/alerts");
    let (fingerprint, starts_at) = (alert["fingerprint"].clone(), alert["startsAt"].clone());
    let api_port = stages[2].api_port;
    assert_eq!(
        forwarder_alerts(api_port)["firing"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // kill -9 and start again: the state comes back from the checkpoint; the alert is sent
    // again (every 2s) as the same alert, never as a second one.
    stages.pop().unwrap().kill9();
    let forwarder = pod.start(StageKind::Forwarder);
    std::thread::sleep(Duration::from_secs(3));
    let after = am.alerts("ErrorBurst");
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["fingerprint"], fingerprint);
    assert_eq!(after[0]["startsAt"], starts_at, "a second alert began");

    // No more errors: once the window has passed, the alert resolves.
    let resolved = wait_until(Duration::from_secs(30), || {
        forwarder_alerts(forwarder.api_port)["resolved"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    assert!(
        resolved,
        "the alert never resolved; forwarder log:\n{}",
        fs::read_to_string(&forwarder.log).unwrap_or_default()
    );
    assert!(
        wait_until(Duration::from_secs(10), || am
            .alerts("ErrorBurst")
            .is_empty()),
        "Alertmanager still shows the alert active: {:?}",
        am.alerts("ErrorBurst")
    );
    let board = forwarder_alerts(forwarder.api_port);
    assert_eq!(board["firing"], Value::Array(vec![]), "{board}");
    assert_eq!(board["resolved"][0]["startsAt"], starts_at, "{board}");
    let log = forwarder.log.clone();
    let (status, _) = forwarder.terminate(Duration::from_secs(10));
    assert!(status.success());
    let report = fs::read_to_string(log).unwrap();
    assert!(
        report.contains("RESOLVED ErrorBurst{source_file=\"error.log\",team=\"shop\"}"),
        "{report}"
    );
}

#[test]
fn a_quiet_source_fires_an_absence_alert_that_resolves_when_it_writes_again() {
    let mut pod = Pod::new();
    let am = Alertmanager::start(&pod.path("alertmanager"));
    configure(
        &pod,
        &am,
        "  - name: WorkerQuiet\n    kind: absence\n    files: [worker.log]\n    absent_for: 4s\n",
    );
    append(
        &pod,
        "worker.log",
        "2026-11-22 10:31:02,481 - worker - INFO - job started\n",
    );
    let stages = pod.start_all();
    let api_port = stages[2].api_port;
    // Writing every second keeps it quiet...
    for _ in 0..5 {
        std::thread::sleep(Duration::from_secs(1));
        append(
            &pod,
            "worker.log",
            "2026-11-22 10:31:03,000 - worker - INFO - job step\n",
        );
    }
    assert!(
        am.alerts("WorkerQuiet").is_empty(),
        "fired while the worker wrote"
    );
    // ...then it stops.
    assert!(
        wait_until(Duration::from_secs(20), || am.alerts("WorkerQuiet").len()
            == 1),
        "no absence alert; forwarder log:\n{}",
        fs::read_to_string(&stages[2].log).unwrap_or_default()
    );
    let alert = am.alerts("WorkerQuiet").remove(0);
    assert_eq!(alert["labels"]["source_file"], "worker.log");
    assert_eq!(
        alert["annotations"]["summary"],
        "WorkerQuiet: no record from worker.log for 4s"
    );
    append(
        &pod,
        "worker.log",
        "2026-11-22 10:32:00,000 - worker - INFO - job resumed\n",
    );
    assert!(
        wait_until(Duration::from_secs(20), || am
            .alerts("WorkerQuiet")
            .is_empty()),
        "still firing after the worker wrote again"
    );
    assert_eq!(
        forwarder_alerts(api_port)["resolved"][0]["labels"]["alertname"],
        "WorkerQuiet"
    );
}

#[test]
fn a_mistake_in_an_alert_rule_stops_the_forwarder_naming_the_file_and_field() {
    let pod = Pod::new();
    let rules = pod.path("rules.yaml");
    replace_alerts(&pod, "  - {name: Broken, kind: rate, window: 1m}\n");
    fs::write(
        pod.path("forwarder.yaml"),
        format!("alerts:\n  rules_file: {}\n", rules.display()),
    )
    .unwrap();
    let output = Command::new(e2e_tests::bin("forwarder"))
        .args(["--config"])
        .arg(pod.path("forwarder.yaml"))
        .args(["--input-dir"])
        .arg(pod.path("processed"))
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("alerts.rules_file") && stderr.contains("alerts[0].count: is required"),
        "{stderr}"
    );
}
